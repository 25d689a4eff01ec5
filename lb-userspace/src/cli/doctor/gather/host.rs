//! The host's facts: kernel release, credentials, memlock limit, sysctls, the bpffs mount.

use std::fs;

use crate::cli::doctor::facts::Caps;
use crate::paths::BPFFS_ROOT;

pub(super) fn read_kernel_release() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

pub(super) fn read_caps() -> Option<Caps> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_status(&status)
}

/// `Uid:` (effective, the second field) and `CapEff:` of a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> Option<Caps> {
    let mut euid = None;
    let mut effective = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            euid = v.split_whitespace().nth(1).and_then(|u| u.parse().ok());
        } else if let Some(v) = line.strip_prefix("CapEff:") {
            effective = u64::from_str_radix(v.trim(), 16).ok();
        }
    }
    Some(Caps {
        euid: euid?,
        effective: effective?,
    })
}

pub(super) fn read_memlock() -> Option<Option<u64>> {
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    Some((r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur))
}

pub(super) fn read_sysctl_u8(path: &str) -> Option<u8> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(super) fn read_bpffs_fstype() -> Option<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_fstype(&text, BPFFS_ROOT)
}

/// The file-system type of the topmost mount at `mount_point` in a `mountinfo` text.
pub fn mount_fstype(mountinfo: &str, mount_point: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(mount_point))
        .filter_map(|l| {
            let (_, post) = l.split_once(" - ")?;
            post.split(' ').next().map(str::to_string)
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_topmost_mount_wins() {
        let text = "\
24 1 0:22 / /sys rw - sysfs sysfs rw
30 24 0:26 / /sys/fs/bpf rw,nosuid - tmpfs tmpfs rw
31 30 0:27 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw,mode=700
";
        assert_eq!(mount_fstype(text, "/sys/fs/bpf").as_deref(), Some("bpf"));
        assert_eq!(mount_fstype(text, "/sys").as_deref(), Some("sysfs"));
        assert_eq!(mount_fstype(text, "/run"), None);
    }

    #[test]
    fn status_parsing() {
        let text = "Name:\txlb\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                    CapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(
            parse_status(text),
            Some(Caps {
                euid: 0,
                effective: 0x1ff_ffff_ffff
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }
}
