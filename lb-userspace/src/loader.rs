//! Loading the embedded eBPF object.
//!
//! The object is built by `build.rs` (aya-build) and embedded in the binary. The functions here
//! size the maps, load the object and one of its XDP programs into the kernel, and stop there:
//! none attaches anything. [`load`] creates fresh, unpinned maps (the datapath tests use it:
//! `BPF_PROG_TEST_RUN` needs a loaded, unattached program); [`load_pinned`] reuses the maps
//! pinned in a directory, or creates and pins them, which is what the agent runs on. Attaching
//! through pinned links, and whether pinned maps can be adopted, are `pinning`'s job.

use std::io;
use std::path::Path;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::MapError,
    programs::{ProgramError, Xdp},
};
use lb_common::{flows, limits, map_names};

/// The eBPF object built by `build.rs`; empty when built with `AYA_BUILD_SKIP=1`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-ebpf"));

/// The maps of the LB program that are pinned for hitless restarts (all of them: the decap
/// program's maps belong to backend hosts).
pub const PINNED_MAPS: [&str; 11] = [
    map_names::VIPS,
    map_names::RING,
    map_names::BACKENDS,
    map_names::FLOWS,
    map_names::CONFIG,
    map_names::STATS,
    map_names::VIP_STATS,
    map_names::BACKEND_STATS,
    map_names::ADDR_FILTER,
    map_names::ICMP_BUCKET,
    map_names::PEER_FLOWS,
];

/// Map sizes chosen at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// VIP index space: the ring map holds `max_vips * RING_SIZE` slots.
    pub max_vips: u32,
    /// Backend ids `0..max_backends` (id 0 is "no backend").
    pub max_backends: u32,
    /// Flow-table capacity in flows, rounded up to a power of two of at least
    /// `lb_common::flows::FLOW_WAYS` (the table is `flow_sets(flow_table_size)` sets).
    pub flow_table_size: u32,
    /// Capacity of the peer-exception table in flows (`flow_sets` of it sets): the config's
    /// `continuity.max-exceptions`, or `limits::PEER_FLOWS_OFF` without continuity.
    pub peer_flows: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_vips: limits::DEFAULT_MAX_VIPS,
            max_backends: limits::DEFAULT_MAX_BACKENDS,
            flow_table_size: limits::DEFAULT_FLOW_TABLE_SIZE,
            peer_flows: limits::PEER_FLOWS_OFF,
        }
    }
}

/// Why the program could not be loaded, phrased as what the operator has to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the embedded eBPF object is empty: this binary was built with AYA_BUILD_SKIP=1; \
         rebuild without AYA_BUILD_SKIP (needs the nightly toolchain and bpf-linker: \
         `cargo xtask setup`)"
    )]
    EmptyObject,
    #[error("invalid load options: {0}")]
    InvalidOptions(String),
    #[error(
        "the kernel refused to load xlb ({what}: {source}): run as root, or give the process \
         CAP_BPF + CAP_NET_ADMIN (and CAP_PERFMON on some kernels)"
    )]
    PermissionDenied {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the kernel verifier rejected program `{program}` ({source}); this is a bug in lb-ebpf \
         or a kernel too old for it. Verifier log:\n{verifier_log}"
    )]
    Verifier {
        program: &'static str,
        #[source]
        source: io::Error,
        verifier_log: String,
    },
    #[error(
        "program `{0}` is not in the embedded eBPF object: lb-ebpf and lb-userspace are out of \
         sync; rebuild both"
    )]
    MissingProgram(&'static str),
    #[error("loading the eBPF object: {0}")]
    Object(#[source] EbpfError),
    #[error("loading program `{program}`: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
}

fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM))
}

impl LoadError {
    fn from_ebpf(e: EbpfError) -> Self {
        let denied = match &e {
            EbpfError::MapError(MapError::CreateError { name, io_error }) => {
                is_permission(io_error).then(|| (format!("creating map {name}"), io_error))
            }
            EbpfError::BtfError(aya::BtfError::LoadError { io_error, .. }) => {
                is_permission(io_error).then(|| ("loading BTF".to_string(), io_error))
            }
            _ => None,
        };
        match denied {
            Some((what, io_error)) => LoadError::PermissionDenied {
                what,
                source: io::Error::from_raw_os_error(io_error.raw_os_error().unwrap_or(0)),
            },
            None => LoadError::Object(e),
        }
    }

    fn from_program(program: &'static str, e: ProgramError) -> Self {
        match e {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                if is_permission(&io_error) {
                    LoadError::PermissionDenied {
                        what: format!("loading program {program}"),
                        source: io_error,
                    }
                } else {
                    LoadError::Verifier {
                        program,
                        source: io_error,
                        verifier_log: verifier_log.to_string(),
                    }
                }
            }
            ProgramError::SyscallError(err) if is_permission(&err.io_error) => {
                LoadError::PermissionDenied {
                    what: format!("{} for program {program}", err.call),
                    source: err.io_error,
                }
            }
            source => LoadError::Program { program, source },
        }
    }
}

/// Loads the embedded object with the map sizes of `opts`, and loads (does not attach) the XDP
/// program [`map_names::PROG_LB`].
pub fn load(opts: &LoadOptions) -> Result<Ebpf, LoadError> {
    load_object(EBPF_OBJECT, opts, None)
}

/// [`load`] on maps pinned in `maps_dir`: a map already pinned there is reused as is (contents
/// and size: check them first with `pinning::adopt_sizes`), a missing one is created and pinned.
pub fn load_pinned(opts: &LoadOptions, maps_dir: &Path) -> Result<Ebpf, LoadError> {
    load_object(EBPF_OBJECT, opts, Some(maps_dir))
}

/// The backend-side decap program ([`map_names::PROG_DECAP`]), its two maps pinned in
/// `maps_dir` when given. The LB program's maps in the same object are created at their smallest: a
/// backend host has no use for a 128 MiB ring.
pub fn load_decap(maps_dir: Option<&Path>) -> Result<Ebpf, LoadError> {
    let opts = LoadOptions {
        max_vips: 1,
        max_backends: 2,
        flow_table_size: 1024,
        peer_flows: limits::PEER_FLOWS_OFF,
    };
    load_with(
        EBPF_OBJECT,
        &opts,
        maps_dir.map(|d| (d, &[map_names::DECAP_CONFIG, map_names::DECAP_STATS][..])),
        map_names::PROG_DECAP,
    )
}

/// One of the auxiliary programs ([`map_names::PROG_PASS`], [`map_names::PROG_REFLECT`]),
/// with the LB maps of the object at their smallest and nothing pinned.
pub fn load_aux(program: &'static str) -> Result<Ebpf, LoadError> {
    let opts = LoadOptions {
        max_vips: 1,
        max_backends: 2,
        flow_table_size: 1024,
        peer_flows: limits::PEER_FLOWS_OFF,
    };
    load_with(EBPF_OBJECT, &opts, None, program)
}

/// [`load`] for another object (tests of the error paths, other builds).
pub fn load_object(
    object: &[u8],
    opts: &LoadOptions,
    maps_dir: Option<&Path>,
) -> Result<Ebpf, LoadError> {
    load_with(
        object,
        opts,
        maps_dir.map(|d| (d, &PINNED_MAPS[..])),
        map_names::PROG_LB,
    )
}

fn load_with(
    object: &[u8],
    opts: &LoadOptions,
    pins: Option<(&Path, &[&'static str])>,
    program_name: &'static str,
) -> Result<Ebpf, LoadError> {
    if object.is_empty() {
        return Err(LoadError::EmptyObject);
    }
    let sizes = limits::ring_entries(opts.max_vips).zip(limits::vip_map_entries(opts.max_vips));
    let (ring, vip_entries) = sizes.filter(|_| opts.max_vips > 0).ok_or_else(|| {
        LoadError::InvalidOptions(format!(
            "max_vips {} must be in 1..={}",
            opts.max_vips,
            u32::MAX / limits::RING_SIZE
        ))
    })?;
    if opts.max_backends < 2 || opts.flow_table_size == 0 {
        return Err(LoadError::InvalidOptions(format!(
            "max_backends {} must be >= 2 (id 0 is reserved) and flow_table_size {} > 0",
            opts.max_backends, opts.flow_table_size
        )));
    }
    let flow_set_mask = flows::flow_sets(opts.flow_table_size) - 1;
    let peer_set_mask = flows::flow_sets(opts.peer_flows.max(1)) - 1;
    let mut loader = EbpfLoader::new();
    loader
        .override_global(map_names::FLOW_SET_MASK, &flow_set_mask, true)
        .override_global(map_names::PEER_SET_MASK, &peer_set_mask, true)
        .map_max_entries(map_names::PEER_FLOWS, peer_set_mask + 1)
        .map_max_entries(map_names::RING, ring)
        .map_max_entries(map_names::VIPS, vip_entries)
        .map_max_entries(map_names::VIP_STATS, opts.max_vips)
        .map_max_entries(map_names::BACKENDS, opts.max_backends)
        .map_max_entries(map_names::BACKEND_STATS, opts.max_backends)
        .map_max_entries(map_names::FLOWS, flow_set_mask + 1);
    if let Some((dir, names)) = pins {
        for name in names {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(object).map_err(LoadError::from_ebpf)?;
    let program: &mut Xdp = ebpf
        .program_mut(program_name)
        .ok_or(LoadError::MissingProgram(program_name))?
        .try_into()
        .map_err(|e| LoadError::from_program(program_name, e))?;
    program
        .load()
        .map_err(|e| LoadError::from_program(program_name, e))?;
    Ok(ebpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_says_how_to_fix_it() {
        let err = load_object(&[], &LoadOptions::default(), None).unwrap_err();
        assert!(matches!(err, LoadError::EmptyObject));
        assert!(err.to_string().contains("rebuild without AYA_BUILD_SKIP"));
    }

    #[test]
    fn zero_vips_is_refused_before_touching_the_kernel() {
        let opts = LoadOptions {
            max_vips: 0,
            ..LoadOptions::default()
        };
        let err = load_object(&[1], &opts, None).unwrap_err();
        assert!(matches!(err, LoadError::InvalidOptions(_)), "{err}");
    }
}
