//! The checks of BIRD, which announces the VIPs to the routers: that it runs and answers
//! (`bird`), that a kernel protocol learns the agent's routing table (`bird_kernel`), and that
//! its BGP sessions are established (`bgp`, one per session).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::cli::doctor::facts::{
    BgpDetail, BirdExpectation, BirdFacts, BirdProtocol, BirdRoute, BirdState, BirdView,
};
use crate::cli::doctor::report::{Check, Status};

/// BIRD's state when it runs normally (`show status`).
const UP_AND_RUNNING: &str = "Daemon is up and running";

/// Every BIRD check, in order.
pub fn judge_bird(f: &BirdFacts) -> Vec<Check> {
    let view = match &f.state {
        BirdState::Running(view) => view,
        other => return vec![judge_daemon_down(&f.expect, other)],
    };
    let sock = f.expect.socket.display();
    let mut checks = vec![if view.status == UP_AND_RUNNING {
        Check::new(
            "bird",
            None,
            Status::Ok,
            format!("{} answers on {sock}: {}", view.version, view.status),
        )
    } else {
        Check::new(
            "bird",
            None,
            Status::Warn,
            format!("{} answers on {sock}, but: {}", view.version, view.status),
        )
        .fix("run doctor again in a moment; if it stays so, see `journalctl -u bird`")
    }];
    let protocols = match &view.protocols {
        Ok(p) => p,
        Err(e) => {
            checks.push(
                Check::new(
                    "bgp",
                    None,
                    Status::Warn,
                    format!("cannot read BIRD's protocols: {e}"),
                )
                .fix(format!("look by hand: birdc -s {sock} show protocols all")),
            );
            return checks;
        }
    };
    checks.push(judge_bird_kernel(f, view, protocols));
    checks.extend(judge_bgp(protocols, view.learned.as_deref().unwrap_or(&[])));
    checks
}

fn judge_daemon_down(e: &BirdExpectation, state: &BirdState) -> Check {
    let sock = e.socket.display();
    let not_run = "the import and BGP checks need it";
    let start = "start it: systemctl enable --now bird (`journalctl -u bird` says why it stopped)";
    match state {
        BirdState::NotInstalled => Check::new(
            "bird",
            None,
            Status::Fail,
            format!(
                "birdc not found: BIRD 2 is not installed, and nothing announces the VIPs to the \
                 routers ({not_run})"
            ),
        )
        .fix("apt-get install bird2 (Debian, Ubuntu; other distributions: the BIRD 2 package)")
        .fix("configure it after the example in dist/bird/ and start it: systemctl enable --now bird"),
        BirdState::SocketMissing => Check::new(
            "bird",
            None,
            Status::Fail,
            format!(
                "no BIRD control socket at {sock}: BIRD is not running, or listens elsewhere \
                 ({not_run})"
            ),
        )
        .fix(start)
        .fix("if BIRD runs with another socket (bird -s PATH), set bird-socket in [announce] to it"),
        BirdState::PermissionDenied => Check::new(
            "bird",
            None,
            Status::Warn,
            format!("permission denied on {sock}: cannot ask BIRD ({not_run})"),
        )
        .fix("run doctor as root, or as a member of BIRD's group (Debian: bird; the socket is 0660)"),
        BirdState::Refused => Check::new(
            "bird",
            None,
            Status::Fail,
            format!(
                "{sock} exists but nothing accepts on it: BIRD ended without removing it \
                 ({not_run})"
            ),
        )
        .fix("start it again: systemctl restart bird (`journalctl -u bird` says why it ended)"),
        BirdState::Stuck => Check::new(
            "bird",
            None,
            Status::Fail,
            format!(
                "BIRD did not answer on {sock} within {} s: stopped, overloaded or wedged \
                 ({not_run})",
                e.timeout.as_secs_f32()
            ),
        )
        .fix("look at it: systemctl status bird; ps -o pid,stat,time -C bird (state T = stopped)")
        .fix(
            "restart it: systemctl restart bird (its BGP sessions drop: the routers move this \
             node's traffic to the other nodes until they are back)",
        ),
        BirdState::Error(msg) => Check::new(
            "bird",
            None,
            Status::Fail,
            format!("cannot ask BIRD on {sock}: {msg} ({not_run})"),
        )
        .fix(format!("try by hand: birdc -s {sock} show status")),
        BirdState::Running(_) => unreachable!("judged by judge_bird"),
    }
}

/// The config BIRD needs to learn the agent's routes of one family.
pub fn kernel_protocol_snippet(table: u32, v6: bool) -> String {
    let (name, family) = if v6 {
        ("kern_xlb6", "ipv6")
    } else {
        ("kern_xlb4", "ipv4")
    };
    format!(
        "protocol kernel {name} {{ kernel table {table}; learn; {family} {{ import all; \
         export none; }}; }}"
    )
}

fn judge_bird_kernel(f: &BirdFacts, view: &BirdView, protocols: &[BirdProtocol]) -> Check {
    let e = &f.expect;
    let t = e.table;
    let kernels: Vec<&BirdProtocol> = protocols.iter().filter(|p| p.is_kernel()).collect();
    let listed = kernels
        .iter()
        .map(|k| format!("{} ({})", k.name, k.state))
        .collect::<Vec<_>>()
        .join(", ");
    let with_snippets = |mut c: Check, v4: bool, v6: bool| {
        for (wanted, is_v6) in [(v4, false), (v6, true)] {
            if wanted {
                c = c.fix(format!(
                    "add to bird.conf: {}",
                    kernel_protocol_snippet(t, is_v6)
                ));
            }
        }
        c.fix("then: birdc configure (BIRD keeps its sessions while it reloads)")
    };
    let in_table = match &f.kernel_routes {
        Ok(r) => r,
        Err(err) => {
            return Check::new("bird_kernel", None, Status::Warn, err.clone()).fix(format!(
                "look by hand: ip route show table {t} proto {}",
                e.protocol
            ));
        }
    };
    let want_v4 = in_table.iter().chain(&e.vips).any(IpAddr::is_ipv4) || e.vips.is_empty();
    let want_v6 = in_table.iter().chain(&e.vips).any(IpAddr::is_ipv6);
    if kernels.is_empty() {
        let c = Check::new(
            "bird_kernel",
            None,
            Status::Fail,
            format!(
                "BIRD has no kernel protocol: it cannot learn the VIP routes the agent writes \
                 into kernel table {t}, so it announces none"
            ),
        );
        return with_snippets(c, want_v4, want_v6);
    }
    let learned = match &view.learned {
        Ok(r) => r,
        Err(err) => {
            return Check::new(
                "bird_kernel",
                None,
                Status::Warn,
                format!("cannot read the routes BIRD learned: {err}"),
            )
            .fix(format!(
                "look by hand: birdc -s {} show route table all where krt_source = {}",
                e.socket.display(),
                e.protocol
            ));
        }
    };
    let in_bird: BTreeSet<IpAddr> = learned
        .iter()
        .filter(|r| r.prefix_len == if r.addr.is_ipv4() { 32 } else { 128 })
        .map(|r| r.addr)
        .collect();
    let missing: Vec<IpAddr> = in_table
        .iter()
        .copied()
        .filter(|a| !in_bird.contains(a))
        .collect();
    if !missing.is_empty() {
        let names = join(&missing);
        let c = Check::new(
            "bird_kernel",
            None,
            Status::Fail,
            format!(
                "VIP route(s) {names} in kernel table {t} (proto {}) are not in BIRD: no kernel \
                 protocol with `learn` imports table {t} (BIRD's kernel protocols: {listed})",
                e.protocol
            ),
        );
        let c = with_snippets(
            c,
            missing.iter().any(IpAddr::is_ipv4),
            missing.iter().any(IpAddr::is_ipv6),
        );
        return c.fix(
            "if such a protocol exists: it must be up (birdc show protocols), have `learn`, \
             `kernel table` the table above and an import filter that accepts the routes",
        );
    }
    let up: Vec<&str> = kernels
        .iter()
        .filter(|k| k.state == "up")
        .map(|k| k.name.as_str())
        .collect();
    let withdrawn: Vec<IpAddr> = e
        .vips
        .iter()
        .copied()
        .filter(|a| !in_table.contains(a))
        .collect();
    let withdrawn = if withdrawn.is_empty() {
        String::new()
    } else {
        format!(
            "; not announced by the agent now: {} (`xlb status` says why)",
            join(&withdrawn)
        )
    };
    if in_table.is_empty() {
        let status = if up.is_empty() {
            Status::Fail
        } else {
            Status::Skip
        };
        let c = Check::new(
            "bird_kernel",
            None,
            status,
            format!(
                "kernel table {t} holds no VIP route yet, so BIRD's import of it cannot be \
                 verified (BIRD's kernel protocols: {listed}){withdrawn}"
            ),
        );
        return if up.is_empty() {
            with_snippets(c, want_v4, want_v6)
        } else {
            c.fix("run doctor again once `xlb status` shows a VIP announced")
        };
    }
    let by: BTreeSet<&str> = learned.iter().map(|r| r.protocol.as_str()).collect();
    Check::new(
        "bird_kernel",
        None,
        Status::Ok,
        format!(
            "BIRD learned all {} VIP route(s) of kernel table {t} (through {}){withdrawn}",
            in_table.len(),
            by.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn judge_bgp(protocols: &[BirdProtocol], learned: &[BirdRoute]) -> Vec<Check> {
    let sessions: Vec<&BirdProtocol> = protocols.iter().filter(|p| p.is_bgp()).collect();
    if sessions.is_empty() {
        return vec![
            Check::new(
                "bgp",
                None,
                Status::Fail,
                "BIRD has no BGP protocol: the VIP routes reach no router".into(),
            )
            .fix(
                "add one per router to bird.conf (addresses and ASNs yours): protocol bgp \
                 router1 { local as 64513; neighbor 192.0.2.254 as 64512; bfd; ipv4 { import \
                 none; export where proto = \"kern_xlb4\"; next hop self; }; }",
            )
            .fix("then: birdc configure; the example in dist/bird/ explains each line"),
        ];
    }
    let any_up = sessions.iter().any(|s| established(s));
    sessions
        .into_iter()
        .map(|s| judge_session(s, any_up, learned))
        .collect()
}

fn established(p: &BirdProtocol) -> bool {
    p.bgp.as_ref().is_some_and(|b| b.state == "Established")
}

fn judge_session(p: &BirdProtocol, any_up: bool, learned: &[BirdRoute]) -> Check {
    let none = BgpDetail::default();
    let b = p.bgp.as_ref().unwrap_or(&none);
    let addr = b.neighbor_address.as_deref().unwrap_or("(unknown)");
    let asn = |a: Option<u32>| a.map_or_else(|| "?".into(), |a| a.to_string());
    let peer = format!("neighbor {addr} AS {}", asn(b.neighbor_as));
    if established(p) {
        // An established session that sends no VIP route: its export filter drops them.
        let dry: Vec<&str> = p
            .channels
            .iter()
            .filter(|c| c.state == "UP" && c.exported == Some(0))
            .filter(|c| {
                learned
                    .iter()
                    .any(|r| r.addr.is_ipv6() == (c.family == "ipv6"))
            })
            .map(|c| c.family.as_str())
            .collect();
        if !dry.is_empty() {
            return Check::new(
                "bgp",
                Some(&p.name),
                Status::Warn,
                format!(
                    "established with {peer} since {}, but exports no route over {}: its \
                     export filter drops the VIP routes",
                    p.since,
                    dry.join(", ")
                ),
            )
            .fix(format!(
                "in protocol bgp {} {{ ... }}: export where proto = \"<the kernel protocol>\"; \
                 next hop self;",
                p.name
            ));
        }
        return Check::new(
            "bgp",
            Some(&p.name),
            Status::Ok,
            format!("established with {peer} since {}", p.since),
        );
    }
    let state = if b.state.is_empty() {
        p.state.as_str()
    } else {
        b.state.as_str()
    };
    let error = b
        .last_error
        .as_deref()
        .map_or_else(String::new, |e| format!(", last error: {e}"));
    let impact = if any_up {
        "another session is up, so the VIPs still reach the network, with less redundancy"
    } else {
        "no session is up: no router sends this node any VIP traffic"
    };
    let mut c = Check::new(
        "bgp",
        Some(&p.name),
        if any_up { Status::Warn } else { Status::Fail },
        format!(
            "not established with {peer}: {state} since {}{error} ({impact})",
            p.since
        ),
    );
    let err = b.last_error.as_deref().unwrap_or("");
    if p.state == "down" && b.state == "Down" {
        c = c.fix(format!("it is disabled: birdc enable {}", p.name));
    } else if err.contains("Bad peer AS") {
        c = c.fix(format!(
            "the router answers with another AS than {}: fix `neighbor {addr} as` here or the \
             router's `local as`",
            asn(b.neighbor_as)
        ));
    } else if err.contains("Administrative shutdown") {
        c = c.fix("the router shut the session down: look at it there (birdc show protocols)");
    }
    c.fix(format!(
        "address: {addr} must be reachable from here (ping {addr}) and the router must have \
         this node's address as its neighbor"
    ))
    .fix(format!(
        "ASN: this side is local AS {}, expects the router as AS {}; the router's config must \
         say the same, reversed",
        asn(b.local_as),
        asn(b.neighbor_as)
    ))
    .fix("BFD: where configured, birdc show bfd sessions must show the router Up (BFD down tears the session down)")
    .fix(format!(
        "firewall: TCP port 179 both ways between this node and {addr} (nft list ruleset)"
    ))
    .fix("BIRD's log: journalctl -u bird")
}

fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::fixtures::*;

    fn find<'a>(checks: &'a [Check], check: &str, subject: Option<&str>) -> &'a Check {
        checks
            .iter()
            .find(|c| c.check == check && c.subject.as_deref() == subject)
            .unwrap_or_else(|| panic!("no {check} {subject:?} in {checks:#?}"))
    }

    #[test]
    fn healthy_bird() {
        let c = judge_bird(&bird_healthy());
        assert_eq!(c.len(), 4, "{c:#?}");
        let bird = find(&c, "bird", None);
        assert_eq!(bird.status, Status::Ok);
        assert!(
            bird.message
                .contains("BIRD 2.0.12 answers on /run/bird/bird.ctl")
        );
        let k = find(&c, "bird_kernel", None);
        assert_eq!(k.status, Status::Ok, "{k:#?}");
        assert!(
            k.message
                .contains("all 2 VIP route(s) of kernel table 200 (through kern_xlb4, kern_xlb6)")
        );
        assert_eq!(find(&c, "bgp", Some("router1")).status, Status::Ok);
        // router2 never came up, but router1 carries the VIPs.
        let r2 = find(&c, "bgp", Some("router2"));
        assert_eq!(r2.status, Status::Warn);
        assert!(
            r2.message
                .contains("neighbor 198.51.100.9 AS 64512: Active")
        );
        assert!(r2.message.contains("last error: Socket: No route to host"));
        assert_fix(r2, "ping 198.51.100.9");
        assert_fix(r2, "TCP port 179");
        assert_fix(r2, "birdc show bfd sessions");
        assert_fix(r2, "local AS 64513, expects the router as AS 64512");
    }

    #[test]
    fn daemon_down() {
        let at = |state| {
            let mut f = bird_healthy();
            f.state = state;
            let c = judge_bird(&f);
            assert_eq!(c.len(), 1);
            c.into_iter().next().unwrap()
        };
        let c = at(BirdState::NotInstalled);
        assert_eq!(c.status, Status::Fail);
        assert_fix(&c, "apt-get install bird2");
        let c = at(BirdState::SocketMissing);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.message
                .contains("no BIRD control socket at /run/bird/bird.ctl")
        );
        assert_fix(&c, "systemctl enable --now bird");
        assert_fix(&c, "bird-socket");
        let c = at(BirdState::PermissionDenied);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "run doctor as root");
        assert_fix(&at(BirdState::Refused), "systemctl restart bird");
        let c = at(BirdState::Stuck);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("within 5 s"), "{}", c.message);
        let c = at(BirdState::Error("BIRD answered 8003: x".into()));
        assert_eq!(c.status, Status::Fail);
        assert_fix(&c, "birdc -s /run/bird/bird.ctl show status");
    }

    #[test]
    fn not_running_normally() {
        let mut f = bird_healthy();
        if let BirdState::Running(v) = &mut f.state {
            v.status = "Reconfiguration in progress".into();
        }
        let c = judge_bird(&f);
        assert_eq!(find(&c, "bird", None).status, Status::Warn);
    }

    #[test]
    fn no_kernel_protocol_and_no_bgp() {
        let f = bird_facts(BIRD_PROTOCOLS_EMPTY, BIRD_ROUTES_EMPTY, &["203.0.113.10"]);
        let c = judge_bird(&f);
        let k = find(&c, "bird_kernel", None);
        assert_eq!(k.status, Status::Fail);
        assert!(k.message.contains("no kernel protocol"));
        // Both families: the config has VIPs of both.
        assert_fix(k, &kernel_protocol_snippet(200, false));
        assert_fix(k, &kernel_protocol_snippet(200, true));
        assert_fix(k, "birdc configure");
        let b = find(&c, "bgp", None);
        assert_eq!(b.status, Status::Fail);
        assert!(b.message.contains("no BGP protocol"));
        assert_fix(b, "next hop self");
        assert_eq!(
            kernel_protocol_snippet(200, false),
            "protocol kernel kern_xlb4 { kernel table 200; learn; ipv4 { import all; export none; }; }"
        );
    }

    #[test]
    fn route_in_table_but_not_in_bird() {
        // The broken BIRD learns only the main table, with nothing imported.
        let f = bird_facts(BIRD_PROTOCOLS_BROKEN, BIRD_ROUTES_EMPTY, &["203.0.113.10"]);
        let c = judge_bird(&f);
        let k = find(&c, "bird_kernel", None);
        assert_eq!(k.status, Status::Fail);
        assert!(
            k.message
                .contains("203.0.113.10 in kernel table 200 (proto 200) are not in BIRD"),
            "{}",
            k.message
        );
        assert!(k.message.contains("kern_main4 (up)"));
        assert_fix(k, &kernel_protocol_snippet(200, false));
        assert!(!has_fix(k, &kernel_protocol_snippet(200, true)));
        // Its only session is refused: nothing reaches the routers.
        let r1 = find(&c, "bgp", Some("router1"));
        assert_eq!(r1.status, Status::Fail);
        assert!(r1.message.contains("Idle"), "{}", r1.message);
        assert!(r1.message.contains("last error: BGP Error: Bad peer AS"));
        assert!(r1.message.contains("no session is up"));
        assert_fix(r1, "answers with another AS than 64999");
        // Half learned: the missing one is named.
        let f = bird_facts(
            BIRD_PROTOCOLS,
            BIRD_ROUTES,
            &["203.0.113.10", "203.0.113.11", "2001:db8:10::53"],
        );
        let k = find(&judge_bird(&f), "bird_kernel", None).clone();
        assert_eq!(k.status, Status::Fail);
        assert!(
            k.message.contains("route(s) 203.0.113.11 in"),
            "{}",
            k.message
        );
    }

    #[test]
    fn empty_table_cannot_be_verified() {
        let f = bird_facts(BIRD_PROTOCOLS, BIRD_ROUTES_EMPTY, &[]);
        let k = find(&judge_bird(&f), "bird_kernel", None).clone();
        assert_eq!(k.status, Status::Skip);
        assert!(
            k.message
                .contains("not announced by the agent now: 203.0.113.10, 2001:db8:10::53"),
            "{}",
            k.message
        );
        // With every kernel protocol down it cannot work either way.
        let mut f = bird_facts(BIRD_PROTOCOLS, BIRD_ROUTES_EMPTY, &[]);
        if let BirdState::Running(v) = &mut f.state {
            for p in v.protocols.as_mut().unwrap() {
                p.state = "down".into();
            }
        }
        assert_eq!(
            find(&judge_bird(&f), "bird_kernel", None).status,
            Status::Fail
        );
        // A half-withdrawn deployment is fine, and says so.
        let f = bird_facts(
            BIRD_PROTOCOLS,
            BIRD_ROUTES,
            &["203.0.113.10", "2001:db8:10::53"],
        );
        let mut f2 = f.clone();
        f2.expect.vips.push("203.0.113.99".parse().unwrap());
        let k = find(&judge_bird(&f2), "bird_kernel", None).clone();
        assert_eq!(k.status, Status::Ok);
        assert!(
            k.message
                .contains("not announced by the agent now: 203.0.113.99")
        );
    }

    #[test]
    fn sessions_down() {
        let f = bird_facts(BIRD_PROTOCOLS_PEER_SHUTDOWN, BIRD_ROUTES, &["203.0.113.10"]);
        let r1 = find(&judge_bird(&f), "bgp", Some("router1")).clone();
        assert_eq!(r1.status, Status::Fail);
        assert!(
            r1.message
                .contains("last error: Received: Administrative shutdown")
        );
        assert_fix(&r1, "the router shut the session down");
        let f = bird_facts(BIRD_PROTOCOLS_DISABLED, BIRD_ROUTES, &["203.0.113.10"]);
        let c = judge_bird(&f);
        let r2 = find(&c, "bgp", Some("router2"));
        assert_eq!(r2.status, Status::Fail);
        assert_fix(r2, "birdc enable router2");
    }

    #[test]
    fn established_but_exporting_nothing() {
        let mut f = bird_healthy();
        if let BirdState::Running(v) = &mut f.state {
            let r1 = v
                .protocols
                .as_mut()
                .unwrap()
                .iter_mut()
                .find(|p| p.name == "router1")
                .unwrap();
            r1.channels[0].exported = Some(0);
        }
        let c = judge_bird(&f);
        let r1 = find(&c, "bgp", Some("router1"));
        assert_eq!(r1.status, Status::Warn);
        assert!(
            r1.message.contains("exports no route over ipv4"),
            "{}",
            r1.message
        );
    }

    #[test]
    fn in_the_report() {
        let f = crate::cli::doctor::HostFacts {
            bird: Some(bird_healthy()),
            ..healthy()
        };
        let text = crate::cli::doctor::judge(&f).render_text();
        assert!(
            text.contains("OK    bgp router1: established with neighbor 198.51.100.1 AS 64512"),
            "{text}"
        );
        assert!(
            text.contains("WARN  bgp router2: not established"),
            "{text}"
        );
    }
}
