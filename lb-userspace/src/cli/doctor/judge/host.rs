//! The host's checks: kernel version, bpffs, capabilities, memlock, the config.

use crate::cli::doctor::facts::{Caps, ConfigFacts, missing_caps};
use crate::cli::doctor::report::{Check, Status};
use crate::paths::BPFFS_ROOT;
use crate::paths::DEFAULT_CONFIG;

/// The oldest kernel this build runs on, and why.
pub const MIN_KERNEL: (u32, u32) = (5, 9);
pub const MIN_KERNEL_WHY: &str = "XDP through bpf_link (5.9: pinnable attachments, hence \
     hitless restarts), the mmapable ring map (5.5), CAP_BPF (5.8)";
/// From this kernel on, BPF memory is charged to the memory cgroup, not RLIMIT_MEMLOCK.
pub const MEMCG_KERNEL: (u32, u32) = (5, 11);

/// `major.minor` of a kernel release string (`6.1.0-18-amd64` -> (6, 1)).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn judge_kernel(release: Option<&str>) -> Check {
    let (min_major, min_minor) = MIN_KERNEL;
    let Some(release) = release else {
        return Check::new(
            "kernel",
            None,
            Status::Warn,
            "cannot read /proc/sys/kernel/osrelease".into(),
        )
        .fix(format!(
            "check `uname -r` is at least {min_major}.{min_minor}"
        ));
    };
    match parse_kernel(release) {
        None => Check::new(
            "kernel",
            None,
            Status::Warn,
            format!("cannot parse the kernel release {release:?}"),
        )
        .fix(format!(
            "make sure the kernel is at least {min_major}.{min_minor}: {MIN_KERNEL_WHY}"
        )),
        Some(v) if v < MIN_KERNEL => Check::new(
            "kernel",
            None,
            Status::Fail,
            format!(
                "{release} is older than {min_major}.{min_minor}, which this build needs: \
                 {MIN_KERNEL_WHY}"
            ),
        )
        .fix(format!(
            "upgrade to Linux {min_major}.{min_minor} or newer (e.g. Debian 12's 6.1)"
        )),
        Some(_) => Check::new(
            "kernel",
            None,
            Status::Ok,
            format!("{release} (this build needs {min_major}.{min_minor}: {MIN_KERNEL_WHY})"),
        ),
    }
}

pub fn judge_bpffs(fstype: Option<&str>) -> Check {
    let mount = format!("mount -t bpf bpf {BPFFS_ROOT}");
    let fstab = format!(
        "make it permanent: add `bpf {BPFFS_ROOT} bpf defaults 0 0` to /etc/fstab (systemd \
         distributions usually mount it already; dist/xlb.service has \
         RequiresMountsFor={BPFFS_ROOT})"
    );
    match fstype {
        Some("bpf") => Check::new(
            "bpffs",
            None,
            Status::Ok,
            format!("bpf file system mounted at {BPFFS_ROOT}"),
        ),
        Some(other) => Check::new(
            "bpffs",
            None,
            Status::Fail,
            format!(
                "{BPFFS_ROOT} is a {other} mount, not bpf: pins (maps and XDP links that keep \
                 forwarding across agent restarts) cannot be created"
            ),
        )
        .fix(mount)
        .fix(fstab),
        None => Check::new(
            "bpffs",
            None,
            Status::Fail,
            format!(
                "no bpf file system at {BPFFS_ROOT}: the agent pins its maps and XDP links \
                 there (that is what keeps forwarding across restarts) and refuses to start \
                 without it"
            ),
        )
        .fix(mount)
        .fix(fstab),
    }
}

pub fn judge_caps(caps: Option<Caps>) -> Check {
    let Some(caps) = caps else {
        return Check::new(
            "capabilities",
            None,
            Status::Warn,
            "cannot read CapEff from /proc/self/status".into(),
        )
        .fix("run the agent as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON");
    };
    let (fatal, degrading) = missing_caps(caps);
    let grant = |names: &[&str]| {
        [
            "run as root (the agent, and this doctor, under sudo)".to_string(),
            format!(
                "or grant the binary the capabilities: setcap {}+ep /usr/local/bin/xlb (a \
                 non-root user also needs write access to the pin directory and the API \
                 socket's directory)",
                names
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "under systemd, dist/xlb.service sets AmbientCapabilities=CAP_BPF CAP_NET_ADMIN \
             CAP_PERFMON ..."
                .to_string(),
        ]
    };
    let all = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"];
    let who = if caps.euid == 0 {
        "root".to_string()
    } else {
        format!("uid {}", caps.euid)
    };
    if !fatal.is_empty() {
        let mut c = Check::new(
            "capabilities",
            None,
            Status::Fail,
            format!(
                "this process ({who}, CapEff {:#x}) lacks {}: the agent could not load the XDP \
                 program or attach it (checked for this process: run doctor the way the agent \
                 runs)",
                caps.effective,
                fatal.join(", ")
            ),
        );
        c.fix.extend(grant(&all));
        return c;
    }
    if !degrading.is_empty() {
        let mut c = Check::new(
            "capabilities",
            None,
            Status::Warn,
            format!(
                "this process ({who}) has CAP_BPF and CAP_NET_ADMIN but not CAP_PERFMON (or \
                 CAP_SYS_ADMIN): the verifier then applies the unprivileged rules (no pointer \
                 leaks, Spectre v1 sanitation) and may reject or slow the program"
            ),
        );
        c.fix.extend(grant(&all));
        return c;
    }
    Check::new(
        "capabilities",
        None,
        Status::Ok,
        format!("{who}: CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON effective"),
    )
}

pub fn judge_memlock(release: Option<&str>, memlock: Option<Option<u64>>) -> Check {
    let (maj, min) = MEMCG_KERNEL;
    if release
        .and_then(parse_kernel)
        .is_some_and(|v| v >= MEMCG_KERNEL)
    {
        return Check::new(
            "memlock",
            None,
            Status::Ok,
            format!(
                "kernel {maj}.{min}+ charges BPF maps to the memory cgroup: RLIMIT_MEMLOCK does \
                 not apply"
            ),
        );
    }
    match memlock {
        Some(None) => Check::new(
            "memlock",
            None,
            Status::Ok,
            "RLIMIT_MEMLOCK is unlimited".into(),
        ),
        Some(Some(bytes)) => Check::new(
            "memlock",
            None,
            Status::Warn,
            format!(
                "RLIMIT_MEMLOCK is {} KiB and kernels before {maj}.{min} charge BPF maps to it: \
                 the default maps (a 128 MiB ring alone) will not load",
                bytes / 1024
            ),
        )
        .fix("raise it for the agent: LimitMEMLOCK=infinity (dist/xlb.service has it), or `ulimit -l unlimited` in the shell that starts it"),
        None => Check::new(
            "memlock",
            None,
            Status::Skip,
            "cannot read RLIMIT_MEMLOCK".into(),
        ),
    }
}

pub fn judge_config(c: &ConfigFacts) -> Check {
    match c {
        ConfigFacts::NotGiven => Check::new(
            "config",
            None,
            Status::Skip,
            format!("no config given and {DEFAULT_CONFIG} does not exist"),
        )
        .fix("give the agent's config: xlb doctor --config /path/to/xlb.toml"),
        ConfigFacts::Invalid { path, error } => {
            let mut check = Check::new(
                "config",
                None,
                Status::Fail,
                format!(
                    "{} does not validate; the agent would refuse it",
                    path.display()
                ),
            );
            for line in error.lines().map(str::trim).filter(|l| !l.is_empty()) {
                check.fix.push(line.trim_start_matches("- ").to_string());
            }
            check.fix(format!(
                "then check again: xlb check-config {}",
                path.display()
            ))
        }
        ConfigFacts::Valid { path, validated } => {
            let cfg = &validated.config;
            let backends: usize = cfg.vips.iter().map(|v| v.backends.len()).sum();
            let what = format!(
                "{}: valid ({} VIPs, {backends} backends)",
                path.display(),
                cfg.vips.len()
            );
            if validated.warnings.is_empty() {
                Check::new("config", None, Status::Ok, what)
            } else {
                let mut check = Check::new(
                    "config",
                    None,
                    Status::Warn,
                    format!("{what}, with {} warnings", validated.warnings.len()),
                );
                check.fix = validated.warnings.iter().map(|w| w.to_string()).collect();
                check
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::facts::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN};
    use crate::cli::doctor::fixtures::*;

    #[test]
    fn kernel() {
        let ok = judge_kernel(Some("6.18.44-fc-v669"));
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.contains("needs 5.9"), "{}", ok.message);
        assert!(ok.fix.is_empty());
        assert_eq!(judge_kernel(Some("5.9.0")).status, Status::Ok);
        let old = judge_kernel(Some("5.4.0-150-generic"));
        assert_eq!(old.status, Status::Fail);
        assert!(old.message.contains("bpf_link"), "{}", old.message);
        assert_fix(&old, "upgrade to Linux 5.9 or newer");
        assert_eq!(judge_kernel(Some("4.19.0")).status, Status::Fail);
        assert_eq!(judge_kernel(Some("weird")).status, Status::Warn);
        assert_eq!(judge_kernel(None).status, Status::Warn);
        assert_eq!(parse_kernel("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("5.10"), Some((5, 10)));
    }

    #[test]
    fn bpffs() {
        assert_eq!(judge_bpffs(Some("bpf")).status, Status::Ok);
        let none = judge_bpffs(None);
        assert_eq!(none.status, Status::Fail);
        assert_fix(&none, "mount -t bpf bpf /sys/fs/bpf");
        assert_fix(&none, "bpf /sys/fs/bpf bpf defaults 0 0");
        let tmpfs = judge_bpffs(Some("tmpfs"));
        assert_eq!(tmpfs.status, Status::Fail);
        assert!(tmpfs.message.contains("tmpfs"));
    }

    #[test]
    fn capabilities() {
        let ok = judge_caps(Some(root()));
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.starts_with("root"));
        // Unprivileged user: nothing.
        let none = judge_caps(Some(Caps {
            euid: 1000,
            effective: 0,
        }));
        assert_eq!(none.status, Status::Fail);
        assert!(
            none.message.contains("lacks CAP_BPF, CAP_NET_ADMIN"),
            "{}",
            none.message
        );
        assert_fix(
            &none,
            "setcap cap_bpf,cap_net_admin,cap_perfmon+ep /usr/local/bin/xlb",
        );
        assert_fix(&none, "AmbientCapabilities=");
        // BPF + NET_ADMIN without PERFMON: works with restrictions.
        let partial = Caps {
            euid: 998,
            effective: (1 << CAP_BPF) | (1 << CAP_NET_ADMIN),
        };
        let warn = judge_caps(Some(partial));
        assert_eq!(warn.status, Status::Warn);
        assert!(warn.message.contains("not CAP_PERFMON"));
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
        let sys_admin = Caps {
            euid: 998,
            effective: (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN),
        };
        assert_eq!(judge_caps(Some(sys_admin)).status, Status::Ok);
        // Without CAP_NET_ADMIN nothing attaches.
        let no_net = Caps {
            euid: 0,
            effective: (1 << CAP_BPF) | (1 << CAP_PERFMON),
        };
        let fail = judge_caps(Some(no_net));
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.message.contains("lacks CAP_NET_ADMIN"));
        assert_eq!(judge_caps(None).status, Status::Warn);
    }

    #[test]
    fn memlock() {
        assert_eq!(
            judge_memlock(Some("6.1.0"), Some(Some(65536))).status,
            Status::Ok
        );
        let old = judge_memlock(Some("5.10.0"), Some(Some(64 << 10)));
        assert_eq!(old.status, Status::Warn);
        assert!(old.message.contains("64 KiB"));
        assert_fix(&old, "LimitMEMLOCK=infinity");
        assert_eq!(judge_memlock(Some("5.10.0"), Some(None)).status, Status::Ok);
        assert_eq!(judge_memlock(Some("5.10.0"), None).status, Status::Skip);
    }

    #[test]
    fn config_check() {
        assert_eq!(judge_config(&ConfigFacts::NotGiven).status, Status::Skip);
        let ok = judge_config(&valid(CONFIG));
        assert_eq!(ok.status, Status::Ok, "{ok:#?}");
        assert!(ok.message.contains("3 VIPs, 3 backends"));
        let bad = judge_config(&ConfigFacts::Invalid {
            path: "/etc/xlb/xlb.toml".into(),
            error: "2 configuration errors:\n  - agent.mtu: 100 is out of range: use 576..=9216\n  - vip[0].port: missing"
                .into(),
        });
        assert_eq!(bad.status, Status::Fail);
        assert_fix(&bad, "agent.mtu: 100 is out of range: use 576..=9216");
        assert_fix(&bad, "xlb check-config /etc/xlb/xlb.toml");
        // A VIP without health check is a warning of validation.
        let warned = valid(
            "[agent]\ninterfaces = [\"eth0\"]\n[[vip]]\naddress = \"203.0.113.10\"\nport = 80\n\
             protocol = \"tcp\"\nmode = \"dsr-l2\"\n",
        );
        let w = judge_config(&warned);
        assert_eq!(w.status, Status::Warn, "{w:#?}");
        assert!(!w.fix.is_empty());
    }
}
