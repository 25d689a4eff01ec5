//! The checks of what is deployed: the pin directory and the agent.

use std::fmt::Write as _;
use std::path::Path;

use lb_common::limits::MAP_LAYOUT_VERSION;

use crate::cli::doctor::facts::{AgentFacts, AgentState, PinFacts};
use crate::cli::doctor::report::{Check, Status};
use crate::model::Config;
use crate::paths::DEFAULT_CONFIG;
use crate::paths::{BPFFS_ROOT, DEFAULT_API_SOCKET, DEFAULT_PIN_DIR};

pub fn judge_pin_dir(p: &PinFacts, cfg: Option<&Config>) -> Check {
    let dir = p.dir.display();
    if let Some(e) = &p.read_error {
        return Check::new(
            "pin_dir",
            None,
            Status::Warn,
            format!("cannot read {dir}: {e}"),
        )
        .fix("run doctor as root to see the pinned deployment");
    }
    if !p.exists {
        return Check::new(
            "pin_dir",
            None,
            Status::Ok,
            format!("{dir} does not exist: no deployment pinned, the agent creates it"),
        );
    }
    if p.on_bpffs == Some(false) {
        return Check::new(
            "pin_dir",
            None,
            Status::Fail,
            format!("{dir} exists but is not on a bpf file system: nothing can be pinned there"),
        )
        .fix(format!(
            "mount bpffs (mount -t bpf bpf {BPFFS_ROOT}) and keep pin-dir below it"
        ));
    }
    let other: Vec<u32> = p
        .versions
        .iter()
        .copied()
        .filter(|v| *v != MAP_LAYOUT_VERSION)
        .collect();
    if let Some(found) = other.first() {
        return Check::new(
            "pin_dir",
            None,
            Status::Fail,
            format!(
                "{dir} holds maps of layout v{found}, but this xlb uses layout \
                 v{MAP_LAYOUT_VERSION}: the agent refuses to start on it"
            ),
        )
        .fix(format!(
            "detach the old deployment with the xlb that created it: xlb stop --detach --pin-dir {dir}"
        ))
        .fix(format!(
            "or, if nothing runs from it any more: rm -r {dir} (unpinning detaches its XDP links and stops that forwarding)"
        ));
    }
    let links = if p.links.is_empty() {
        "no XDP link".to_string()
    } else {
        format!("XDP links on {}", p.links.join(", "))
    };
    let has_maps = p.versions.contains(&MAP_LAYOUT_VERSION);
    let state = format!(
        "{dir}: {} and {links}",
        if has_maps {
            format!("maps of layout v{MAP_LAYOUT_VERSION} (ours)")
        } else {
            "no maps".to_string()
        }
    );
    if let Some(cfg) = cfg {
        let stray: Vec<&str> = p
            .links
            .iter()
            .filter(|l| !cfg.interfaces.iter().any(|i| &i.name == *l))
            .map(String::as_str)
            .collect();
        if !stray.is_empty() {
            return Check::new(
                "pin_dir",
                None,
                Status::Warn,
                format!(
                    "{state}; {} not in the config's interfaces: xlb stays attached there until \
                     the whole deployment is detached",
                    stray.join(", ")
                ),
            )
            .fix(
                "to take xlb off them: xlb stop --detach (stops forwarding everywhere), then \
                 start the agent with the new config",
            );
        }
    }
    let tail = if has_maps || !p.links.is_empty() {
        ": a pinned deployment, the next agent adopts it (flows kept)"
    } else {
        ""
    };
    Check::new("pin_dir", None, Status::Ok, format!("{state}{tail}"))
}

pub fn judge_agent(
    a: &AgentFacts,
    pin: &PinFacts,
    cfg: Option<&Config>,
    config_path: Option<&Path>,
) -> Check {
    let sock = a.socket.display();
    let mut stop = "xlb stop --detach".to_string();
    if a.socket != Path::new(DEFAULT_API_SOCKET) {
        let _ = write!(stop, " --socket {sock}");
    }
    if pin.dir != Path::new(DEFAULT_PIN_DIR) {
        let _ = write!(stop, " --pin-dir {}", pin.dir.display());
    }
    let run = format!(
        "xlb run --config {}",
        config_path.unwrap_or(Path::new(DEFAULT_CONFIG)).display()
    );
    match &a.state {
        AgentState::Answered {
            pin_dir,
            interfaces,
        } => {
            let base = format!(
                "an agent answers on {sock} (pin dir {}, interfaces {})",
                pin_dir.display(),
                interfaces.join(", ")
            );
            match cfg {
                Some(c) if &c.pin_dir != pin_dir => Check::new(
                    "agent",
                    None,
                    Status::Warn,
                    format!(
                        "{base}, but the config's pin-dir is {}: it runs another deployment",
                        c.pin_dir.display()
                    ),
                )
                .fix("compare `xlb status` with the config; two deployments on one interface cannot both attach"),
                _ => Check::new("agent", None, Status::Ok, base),
            }
        }
        AgentState::NotRunning if !pin.links.is_empty() => Check::new(
            "agent",
            None,
            Status::Warn,
            format!(
                "no agent on {sock}, but XDP links are pinned ({}): forwarding runs on the last \
                 state, and nothing applies health changes, reloads or neighbour changes",
                pin.links.join(", ")
            ),
        )
        .fix(format!(
            "start the agent: systemctl start xlb (or {run}); it adopts the pinned maps"
        ))
        .fix(format!("or, to stop forwarding: {stop}")),
        AgentState::NotRunning => Check::new(
            "agent",
            None,
            Status::Ok,
            format!("no agent on {sock} yet (start it: systemctl start xlb, or {run})"),
        ),
        AgentState::PermissionDenied => Check::new(
            "agent",
            None,
            Status::Warn,
            format!("permission denied on {sock}: cannot tell whether an agent runs"),
        )
        .fix("run doctor as root (the socket is 0600 in a 0700 directory)"),
        AgentState::Error(e) => Check::new("agent", None, Status::Warn, format!("{sock}: {e}"))
            .fix("check `systemctl status xlb` and `journalctl -u xlb`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::fixtures::*;

    #[test]
    fn pin_dir() {
        let mut p = PinFacts {
            dir: "/sys/fs/bpf/xlb".into(),
            ..PinFacts::default()
        };
        let c = judge_pin_dir(&p, None);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("no deployment pinned"));
        p.exists = true;
        p.on_bpffs = Some(true);
        p.versions = vec![MAP_LAYOUT_VERSION];
        p.links = vec!["eth0".into()];
        let c = judge_pin_dir(&p, None);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains("the next agent adopts it"),
            "{}",
            c.message
        );
        // Another layout version.
        let old = PinFacts {
            versions: vec![MAP_LAYOUT_VERSION + 1],
            ..p.clone()
        };
        let c = judge_pin_dir(&old, None);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.message
                .contains(&format!("layout v{}", MAP_LAYOUT_VERSION + 1))
        );
        assert_fix(&c, "xlb stop --detach --pin-dir /sys/fs/bpf/xlb");
        assert_fix(&c, "rm -r /sys/fs/bpf/xlb");
        // Not on bpffs.
        let tmp = PinFacts {
            on_bpffs: Some(false),
            ..p.clone()
        };
        assert_eq!(judge_pin_dir(&tmp, None).status, Status::Fail);
        // A link on an interface the config no longer lists.
        let cfg = validated(CONFIG).config;
        let stray = PinFacts {
            links: vec!["eth0".into(), "eth1".into()],
            ..p.clone()
        };
        let c = judge_pin_dir(&stray, Some(&cfg));
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("eth1 not in the config"));
        assert_eq!(judge_pin_dir(&p, Some(&cfg)).status, Status::Ok);
        let unreadable = PinFacts {
            read_error: Some("Permission denied (os error 13)".into()),
            ..p
        };
        assert_eq!(judge_pin_dir(&unreadable, None).status, Status::Warn);
    }

    #[test]
    fn agent() {
        let pin = PinFacts::default();
        let a = |state| AgentFacts {
            socket: DEFAULT_API_SOCKET.into(),
            state,
        };
        assert_eq!(
            judge_agent(&a(AgentState::NotRunning), &pin, None, None).status,
            Status::Ok
        );
        let pinned = PinFacts {
            dir: DEFAULT_PIN_DIR.into(),
            links: vec!["eth0".into()],
            ..PinFacts::default()
        };
        let c = judge_agent(&a(AgentState::NotRunning), &pinned, None, None);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("forwarding runs on the last state"));
        assert_fix(
            &c,
            "systemctl start xlb (or xlb run --config /etc/xlb/xlb.toml)",
        );
        assert!(
            c.fix
                .iter()
                .any(|f| f == "or, to stop forwarding: xlb stop --detach")
        );
        // Non-default places are spelled out.
        let custom = AgentFacts {
            socket: "/run/xlb-b/xlb.sock".into(),
            state: AgentState::NotRunning,
        };
        let custom_pin = PinFacts {
            dir: "/sys/fs/bpf/xlb-b".into(),
            ..pinned.clone()
        };
        let c = judge_agent(
            &custom,
            &custom_pin,
            None,
            Some(Path::new("/etc/xlb/b.toml")),
        );
        assert_fix(&c, "xlb run --config /etc/xlb/b.toml");
        assert_fix(
            &c,
            "xlb stop --detach --socket /run/xlb-b/xlb.sock --pin-dir /sys/fs/bpf/xlb-b",
        );
        let answered = a(AgentState::Answered {
            pin_dir: "/sys/fs/bpf/xlb".into(),
            interfaces: vec!["eth0".into()],
        });
        assert_eq!(
            judge_agent(&answered, &pinned, None, None).status,
            Status::Ok
        );
        let cfg = validated(CONFIG).config;
        assert_eq!(
            judge_agent(&answered, &pinned, Some(&cfg), None).status,
            Status::Ok
        );
        let elsewhere = a(AgentState::Answered {
            pin_dir: "/sys/fs/bpf/other".into(),
            interfaces: vec!["eth0".into()],
        });
        assert_eq!(
            judge_agent(&elsewhere, &pinned, Some(&cfg), None).status,
            Status::Warn
        );
        let c = judge_agent(&a(AgentState::PermissionDenied), &pin, None, None);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "run doctor as root");
    }
}
