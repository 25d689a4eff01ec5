//! Process and machine facts for the benchmarks: CPU pinning, memory readings.

use std::fs;

pub use xlb_bench_data::sys::{Machine, MapMemory, ProcMemory, Rss};

/// Pins the calling thread to `cpu`. `BPF_PROG_TEST_RUN` runs the program on the calling
/// thread's CPU, so a pinned thread measures one core and is not migrated mid-run.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and
    // sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes of it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        anyhow::bail!(
            "sched_setaffinity(cpu {cpu}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Online CPUs of the machine (not of this thread's affinity mask, which
/// `available_parallelism` would report once the thread is pinned).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

pub fn rss(pid: &str) -> Rss {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        shmem_kib: field("RssShmem:"),
    }
}

/// Every BPF map fd of process `pid` (`/proc/<pid>/fdinfo/*` with a `map_type:` line), one
/// entry per map id (a map open through several fds counts once).
pub fn map_memory(pid: &str) -> Vec<MapMemory> {
    let mut out: Vec<MapMemory> = Vec::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let m = MapMemory {
            map_id: field("map_id:") as u32,
            map_type: field("map_type:") as u32,
            max_entries: field("max_entries:"),
            key_size: field("key_size:"),
            value_size: field("value_size:"),
            memlock_bytes: field("memlock:"),
        };
        if !out.iter().any(|o| o.map_id == m.map_id) {
            out.push(m);
        }
    }
    out.sort_by_key(|m| m.map_id);
    out
}

pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Machine {
        cpu_model,
        cpus: online_cpus(),
        kernel,
        mem_total_kib,
    }
}
