//! Facts about the machine and about a process's memory.

use serde::{Deserialize, Serialize};

/// `VmRSS` and `VmHWM` of `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rss {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// The process's own memory (heap, stacks).
    pub anon_kib: u64,
    /// File-backed and shared mappings: includes the memory-mapped ring and flow maps, which
    /// are kernel (BPF map) memory shown in this process's RSS because they are mapped (the
    /// kernel maps every page of a BPF array at mmap time).
    pub file_kib: u64,
    pub shmem_kib: u64,
}

/// One BPF map held open by a process, as its fdinfo describes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MapMemory {
    pub map_id: u32,
    pub map_type: u32,
    pub max_entries: u64,
    pub key_size: u64,
    pub value_size: u64,
    /// `memlock:` of fdinfo: the kernel's accounting of the map's memory, in bytes.
    pub memlock_bytes: u64,
}

/// The machine, for the report header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    pub mem_total_kib: u64,
}

/// `xlb-bench proc-memory`: another process's RSS and the kernel memory of its BPF maps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcMemory {
    pub pid: String,
    pub rss: Rss,
    pub memlock_total_bytes: u64,
    pub maps: Vec<MapMemory>,
}
