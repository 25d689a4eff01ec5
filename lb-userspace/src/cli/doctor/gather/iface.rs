//! An interface's facts: its state and XDP attachment (through [`crate::netlink`], in the calling
//! thread's network namespace), its driver (the ethtool ioctl, same namespace), its rp_filter,
//! and, when allowed, the native-XDP probe.

use std::fmt::Write as _;
use std::io;

use lb_common::map_names;

use super::host::read_sysctl_u8;
use crate::cli::doctor::facts::{AttachedXdp, IfaceFacts, LinkFacts, Probe};
use crate::loader;
use crate::netlink::{Netlink, NetlinkError};

/// Reads interface `name`. `probe` says whether the native-XDP probe may run, or why not; it
/// runs only on an interface that exists and has no XDP program. The config's and the pin
/// directory's facts (`configured_mode`, `pinned_link`) are left for the caller.
pub(super) async fn read_iface(
    netlink: Result<&Netlink, &String>,
    name: String,
    probe: Result<(), &str>,
) -> IfaceFacts {
    let link = match netlink {
        Ok(nl) => read_link(nl, &name).await,
        Err(e) => Err(e.clone()),
    };
    let (link, xdp) = match link {
        Ok((l, x)) => (Ok(l), x),
        Err(e) => (Err(e), None),
    };
    let probe = if link.is_err() {
        Probe::NotRun("interface not found".into())
    } else if xdp.is_some() {
        Probe::NotRun("an XDP program is attached".into())
    } else if let Err(why) = probe {
        Probe::NotRun(why.into())
    } else {
        // Look again right before touching it: never replace a program.
        match netlink {
            Ok(nl) => match read_link(nl, &name).await {
                Ok((_, None)) => probe_native(&name),
                _ => Probe::NotRun("an XDP program appeared".into()),
            },
            Err(e) => Probe::NotRun(e.clone()),
        }
    };
    IfaceFacts {
        driver: read_driver(&name),
        rp_filter: read_sysctl_u8(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter")),
        pinned_link: false,
        configured_mode: None,
        name,
        link,
        xdp,
        probe,
    }
}

/// The link's MTU and state and its XDP attachment (`IFLA_XDP`), like `ip -d link show`.
async fn read_link(
    netlink: &Netlink,
    name: &str,
) -> Result<(LinkFacts, Option<AttachedXdp>), String> {
    let status = netlink.link_status(name).await.map_err(|e| match e {
        NetlinkError::InterfaceNotFound { .. } => {
            format!("no interface {name} in this network namespace")
        }
        e => e.to_string(),
    })?;
    let facts = LinkFacts {
        mtu: status.mtu,
        up: status.up,
        carrier: status.carrier,
    };
    let xdp = status.xdp.map(|x| AttachedXdp {
        mode: x.mode,
        prog_id: x.prog_id,
        prog_name: program_name(x.prog_id),
    });
    Ok((facts, xdp))
}

/// The name of a loaded program (needs CAP_SYS_ADMIN to walk the program ids).
fn program_name(id: u32) -> Option<String> {
    if id == 0 {
        return None;
    }
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}

/// Attaches `xlb_pass` in driver mode and detaches it again.
fn probe_native(iface: &str) -> Probe {
    let mut ebpf = match loader::load_aux(map_names::PROG_PASS) {
        Ok(e) => e,
        Err(e) => return Probe::NotRun(format!("cannot load the probe program: {e}")),
    };
    let program: &mut aya::programs::Xdp = match ebpf
        .program_mut(map_names::PROG_PASS)
        .and_then(|p| p.try_into().ok())
    {
        Some(p) => p,
        None => return Probe::NotRun("the probe program is missing from the object".into()),
    };
    match program.attach(iface, aya::programs::XdpMode::Driver) {
        Ok(id) => {
            // Dropping `ebpf` would detach too; say it explicitly.
            let _ = program.detach(id);
            Probe::Native
        }
        Err(e) => Probe::Failed(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

/// The driver, as `ethtool -i` names it. For a device without a driver name of its own the
/// kernel answers with its parent device's driver, which is what `/sys/class/net/<if>/device/
/// driver` links to; sysfs is not read, because it shows the namespace it was mounted in.
fn read_driver(iface: &str) -> Option<String> {
    ethtool_driver(iface).ok().filter(|d| !d.is_empty())
}

fn ethtool_driver(iface: &str) -> io::Result<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is valid for both plain-data structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (&mut info as *mut DrvInfo).cast(),
        _pad: [0; 16],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live ethtool_drvinfo.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
