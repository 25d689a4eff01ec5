//! Pinning, attaching and adopting: what makes restarts hitless.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/xlb`):
//! - `maps-v<MAP_LAYOUT_VERSION>/<MAP NAME>`: every map of the LB program;
//! - `link-<interface>`: the XDP link of each interface.
//!
//! Both outlive the agent: stopping or killing it (even `kill -9`) leaves the program attached
//! and the maps in place, so forwarding goes on. A restarted agent loads the program again on
//! the *same* maps (aya's `map_pin_path` reuses a pinned map), swaps it into the pinned link
//! atomically (`bpf_link_update`), and reconciles the maps it found: the flow table survives.
//! A pin directory of another layout version is refused: a different layout would be read
//! as garbage by one side or the other.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    maps::MapInfo,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    flows::{flow_capacity, flow_sets},
    limits::{ADDR_FILTER_WORDS, MAP_LAYOUT_VERSION, RING_SIZE, RING_SLOTS_PER_ENTRY},
    map_names,
};
use tracing::{info, warn};

use crate::loader::LoadOptions;
use crate::model;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{dir} holds maps of layout v{found}, but this xlb uses layout v{MAP_LAYOUT_VERSION}: \
         detach the old deployment first (`xlb stop --detach` with the xlb that created it), \
         or remove {dir} if nothing runs from it"
    )]
    LayoutMismatch { dir: PathBuf, found: u32 },
    #[error(
        "pinned map {path} does not match this xlb ({detail}): the pin directory belongs to an \
         incompatible build; detach it (`xlb stop --detach`) and start again"
    )]
    MapMismatch { path: PathBuf, detail: String },
    #[error(
        "{path} is not on a BPF filesystem: mount one (`mount -t bpf bpf /sys/fs/bpf`) or set \
         pin-dir to a directory under a bpffs mount"
    )]
    NotBpffs { path: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("interface {iface}: {what}: {detail}")]
    Attach {
        iface: String,
        what: &'static str,
        detail: String,
    },
}

/// Directory of the pinned maps of this layout version.
pub fn maps_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(format!("maps-v{MAP_LAYOUT_VERSION}"))
}

/// Path of the pinned XDP link of an interface.
pub fn link_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link-{iface}"))
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError {
    let path = path.to_path_buf();
    move |source| PinError::Io { what, path, source }
}

/// Creates the pin directory (on bpffs) and checks that no other layout version lives there.
pub fn prepare(pin_dir: &Path) -> Result<(), PinError> {
    let parent = pin_dir.parent().unwrap_or(pin_dir);
    if !is_bpffs(parent)? {
        return Err(PinError::NotBpffs {
            path: parent.to_path_buf(),
        });
    }
    fs::create_dir_all(pin_dir).map_err(io_err("creating", pin_dir))?;
    for entry in fs::read_dir(pin_dir).map_err(io_err("reading", pin_dir))? {
        let entry = entry.map_err(io_err("reading", pin_dir))?;
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|n| n.strip_prefix("maps-v"))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        if version != MAP_LAYOUT_VERSION {
            return Err(PinError::LayoutMismatch {
                dir: pin_dir.to_path_buf(),
                found: version,
            });
        }
    }
    let maps = maps_dir(pin_dir);
    fs::create_dir_all(&maps).map_err(io_err("creating", &maps))?;
    Ok(())
}

fn is_bpffs(path: &Path) -> Result<bool, PinError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| PinError::Io {
        what: "checking",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(PinError::Io {
            what: "checking",
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// `(name, key size, value size)` of every map the LB program pins.
fn expected_maps() -> [(&'static str, u32, u32); 11] {
    use lb_common::{stats::GlobalStats, values::*, *};
    use map_names::*;
    let s = |n: usize| n as u32;
    [
        (VIPS, s(size_of::<VipKey>()), s(size_of::<VipMeta>())),
        (RING, 4, 4 * RING_SLOTS_PER_ENTRY),
        (BACKENDS, 4, s(size_of::<Backend>())),
        (FLOWS, 4, s(size_of::<FlowSet>())),
        (CONFIG, 4, s(size_of::<LbConfig>())),
        (STATS, 4, s(size_of::<GlobalStats>())),
        (VIP_STATS, 4, s(size_of::<TrafficStats>())),
        (BACKEND_STATS, 4, s(size_of::<TrafficStats>())),
        (ADDR_FILTER, 4, 8),
        (ICMP_BUCKET, 4, s(size_of::<IcmpBucket>())),
        (PEER_FLOWS, 4, s(size_of::<FlowSet>())),
    ]
}

/// Checks the maps already pinned in `pin_dir` and returns the load options to use: the pinned
/// sizes win over the config's (a pinned map cannot be resized; reconcile refuses a config that
/// does not fit, and the operator is told how to resize).
pub fn adopt_sizes(pin_dir: &Path, wanted: &LoadOptions) -> Result<LoadOptions, PinError> {
    let dir = maps_dir(pin_dir);
    let mut opts = *wanted;
    for (name, key, value) in expected_maps() {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(|e| PinError::Io {
            what: "opening pinned map",
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        if info.key_size() != key || info.value_size() != value {
            return Err(PinError::MapMismatch {
                path,
                detail: format!(
                    "key {} B, value {} B; expected key {key} B, value {value} B",
                    info.key_size(),
                    info.value_size()
                ),
            });
        }
        let entries = info.max_entries();
        let (field, pinned) = match name {
            // Soft state that peers send again every refresh: a table of another size is
            // replaced instead of kept, so turning continuity on or resizing it needs no
            // detach. The running program keeps the old table until the new one is attached.
            map_names::PEER_FLOWS if entries != flow_sets(wanted.peer_flows.max(1)) => {
                info!(
                    pinned = flow_capacity(entries),
                    configured = wanted.peer_flows,
                    "replacing the pinned peer-exception table (continuity.max-exceptions changed)"
                );
                fs::remove_file(&path).map_err(io_err("unpinning the peer table", &path))?;
                continue;
            }
            map_names::RING => ("max-vips", entries * RING_SLOTS_PER_ENTRY / RING_SIZE),
            map_names::BACKENDS => ("max-backends", entries),
            map_names::FLOWS => ("flow-table-size", flow_capacity(entries)),
            map_names::ADDR_FILTER if entries != ADDR_FILTER_WORDS => {
                return Err(PinError::MapMismatch {
                    path,
                    detail: format!("{entries} entries; expected {ADDR_FILTER_WORDS}"),
                });
            }
            _ => continue,
        };
        let slot = match field {
            "max-vips" => &mut opts.max_vips,
            "max-backends" => &mut opts.max_backends,
            _ => &mut opts.flow_table_size,
        };
        // A configured flow-table size is the table it rounds up to.
        let configured = match field {
            "flow-table-size" => flow_capacity(flow_sets(*slot)),
            _ => *slot,
        };
        if configured != pinned {
            warn!(
                field,
                configured = *slot,
                pinned,
                "pinned maps keep their size; to resize, detach (`xlb stop --detach`) and restart"
            );
            *slot = pinned;
        }
    }
    Ok(opts)
}

/// Attaches the LB program to `iface` through a pinned link: a link pinned by a previous agent
/// gets the new program swapped in atomically (no packet sees a detached interface); otherwise
/// a new link is created and pinned. Returns the mode actually used.
pub fn attach(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    iface: &str,
    mode: model::XdpMode,
) -> Result<model::XdpMode, PinError> {
    attach_program(ebpf, map_names::PROG_LB, pin_dir, iface, mode)
}

/// [`attach`] for any XDP program of the object (the decap program on backend hosts).
pub fn attach_program(
    ebpf: &mut Ebpf,
    program_name: &str,
    pin_dir: &Path,
    iface: &str,
    mode: model::XdpMode,
) -> Result<model::XdpMode, PinError> {
    let err = |what: &'static str, detail: String| PinError::Attach {
        iface: iface.to_string(),
        what,
        detail,
    };
    let program: &mut Xdp = ebpf
        .program_mut(program_name)
        .ok_or_else(|| err("program", "not loaded".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err("program", e.to_string()))?;
    let path = link_path(pin_dir, iface);
    if path.exists() {
        let pinned =
            PinnedLink::from_pin(&path).map_err(|e| err("opening pinned link", e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e: LinkError| err("pinned link", e.to_string()))?;
        let id = program
            .attach_to_link(link)
            .map_err(|e| err("replacing the program of the pinned link", e.to_string()))?;
        // Release our handle: closing a bpf_link fd drops only our reference; the pin keeps
        // the link (and the program in it) alive. Keeping the fd open would keep the link alive
        // after a later unpin, defeating `detach`.
        let link = program
            .take_link(id)
            .map_err(|e| err("taking link", e.to_string()))?;
        drop(link);
        info!(iface, path = %path.display(), "adopted pinned XDP link, program replaced");
        return Ok(mode);
    }
    let tries: &[(model::XdpMode, XdpMode)] = match mode {
        model::XdpMode::Native => &[(model::XdpMode::Native, XdpMode::Driver)],
        model::XdpMode::Generic => &[(model::XdpMode::Generic, XdpMode::Skb)],
        model::XdpMode::Auto => &[
            (model::XdpMode::Native, XdpMode::Driver),
            (model::XdpMode::Generic, XdpMode::Skb),
        ],
    };
    let mut last = String::new();
    for (used, flags) in tries {
        match program.attach(iface, *flags) {
            Ok(id) => {
                if *used == model::XdpMode::Generic && mode == model::XdpMode::Auto {
                    warn!(
                        iface,
                        error = %last,
                        "native XDP unavailable, using generic (skb) mode: much slower; check the driver"
                    );
                }
                let link = program
                    .take_link(id)
                    .map_err(|e| err("taking link", e.to_string()))?;
                let fd = FdLink::try_from(link).map_err(|e| {
                    err(
                        "pinning link",
                        format!(
                            "{e} (the kernel attached through netlink, which cannot be pinned)"
                        ),
                    )
                })?;
                fd.pin(&path)
                    .map_err(|e| err("pinning link", e.to_string()))?;
                info!(iface, mode = ?used, path = %path.display(), "attached and pinned XDP link");
                return Ok(*used);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(err("attaching", last))
}

/// Really detaches: unpins the links (dropping the last reference detaches the program) and
/// the maps, then removes the directories. Missing pins are fine (idempotent).
pub fn detach(pin_dir: &Path) -> Result<(), PinError> {
    if !pin_dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(pin_dir).map_err(io_err("reading", pin_dir))? {
        let entry = entry.map_err(io_err("reading", pin_dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("link-") {
            fs::remove_file(&path).map_err(io_err("unpinning", &path))?;
            info!(path = %path.display(), "unpinned XDP link (detached)");
        } else if name.starts_with("maps-v") {
            fs::remove_dir_all(&path).map_err(io_err("unpinning", &path))?;
        }
    }
    fs::remove_dir(pin_dir).map_err(io_err("removing", pin_dir))?;
    Ok(())
}

/// Interfaces with a pinned link in `pin_dir`.
pub fn pinned_interfaces(pin_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(pin_dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("link-"))
                .map(str::to_string)
        })
        .collect();
    out.sort();
    out
}
