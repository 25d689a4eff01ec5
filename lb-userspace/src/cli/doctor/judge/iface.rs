//! The checks of each interface: link state, XDP support and attachment, MTU headroom for the
//! encapsulation, rp_filter.

use lb_common::map_names;

use crate::cli::doctor::facts::{AttachMode, Encap, IfaceFacts, Probe};
use crate::cli::doctor::report::{Check, Status};
use crate::model::{Config, ForwardMode, NoBackend, XdpMode};

/// The largest packet a client is assumed to send: the Internet's and Ethernet's 1500, or the
/// interface's MTU when that is smaller.
pub const CLIENT_MTU: u32 = 1500;

/// Drivers with native (driver-mode) XDP in mainline Linux, as `ethtool -i` names them. Not
/// exhaustive: an unknown driver is a warning, and as root the probe gives the real answer.
pub const NATIVE_XDP_DRIVERS: &[&str] = &[
    "atlantic",
    "bnxt_en",
    "bond",
    "cpsw",
    "dpaa2-eth",
    "ena",
    "enetc",
    "fec",
    "gve",
    "hv_netvsc",
    "i40e",
    "ice",
    "idpf",
    "igb",
    "igc",
    "ixgbe",
    "ixgbevf",
    "mlx4_core",
    "mlx4_en",
    "mlx5_core",
    "mvneta",
    "mvpp2",
    "netsec",
    "nfp",
    "qede",
    "sfc",
    "stmmac",
    "thunder-nicvf",
    "tun",
    "veth",
    "virtio_net",
    "xen-netfront",
];

fn attach_mode_name(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Native => "native (driver)",
        AttachMode::Generic => "generic (skb)",
        AttachMode::Offload => "offloaded",
        AttachMode::Multiple => "several modes",
    }
}

pub fn judge_link(i: &IfaceFacts) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    match &i.link {
        Err(e) => Check::new(
            "link",
            subject,
            Status::Fail,
            format!("{name}: {e}"),
        )
        .fix("check `ip link` in the agent's network namespace (names are case-sensitive)"),
        Ok(l) if !l.up => Check::new(
            "link",
            subject,
            Status::Warn,
            format!("{name} is administratively down: nothing arrives, nothing leaves"),
        )
        .fix(format!("ip link set dev {name} up")),
        Ok(l) if !l.carrier => Check::new(
            "link",
            subject,
            Status::Warn,
            format!("{name} is up but has no carrier (cable, switch port, or veth peer down)"),
        )
        .fix(format!(
            "check the cabling / switch port, or bring the peer up; `ip link show {name}` shows NO-CARRIER"
        )),
        Ok(l) => Check::new(
            "link",
            subject,
            Status::Ok,
            format!("{name} is up with carrier, MTU {}", l.mtu),
        ),
    }
}

/// The driver name is one of [`NATIVE_XDP_DRIVERS`].
pub fn driver_has_native_xdp(driver: &str) -> bool {
    NATIVE_XDP_DRIVERS.contains(&driver)
}

const VETH_NOTE: &str = " (veth: frames sent back with XDP_TX are delivered only if the peer \
     has an XDP program of its own, e.g. xlb_pass, or GRO enabled)";

pub fn judge_xdp(i: &IfaceFacts) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    if i.link.is_err() {
        return Check::new("xdp", subject, Status::Skip, format!("{name} not found"));
    }
    let driver = i.driver.as_deref();
    let driver_text = driver.map_or("an unknown driver".to_string(), |d| format!("driver {d}"));
    let veth = if driver == Some("veth") {
        VETH_NOTE
    } else {
        ""
    };
    let wants_native = i.configured_mode == Some(XdpMode::Native);
    if let Some(x) = &i.xdp {
        let prog = x
            .prog_name
            .as_deref()
            .map_or(format!("id {}", x.prog_id), |n| {
                format!("{n:?} (id {})", x.prog_id)
            });
        let is_xlb = x.prog_name.as_deref() == Some(map_names::PROG_LB)
            || (x.prog_name.is_none() && i.pinned_link);
        if !is_xlb {
            return Check::new(
                "xdp",
                subject,
                Status::Warn,
                format!(
                    "{name} already runs XDP program {prog} in {} mode, not xlb's pinned link: \
                     an interface takes one XDP program, so the agent's attach fails while it \
                     is there (doctor did not probe native mode, to leave it alone)",
                    attach_mode_name(x.mode)
                ),
            )
            .fix(format!(
                "if it is stale, remove it: ip link set dev {name} xdp off (or `xlb decap detach` / `xlb stop --detach` if it is an xlb program pinned elsewhere)"
            ));
        }
        return match x.mode {
            AttachMode::Generic => Check::new(
                "xdp",
                subject,
                Status::Warn,
                format!(
                    "xlb's program {prog} runs on {name} in generic (skb) mode: the kernel allocates an skb \
                     for every packet first, several times slower than native ({driver_text})"
                ),
            )
            .fix(format!(
                "if the driver supports native XDP: set xdp-mode = \"native\" for {name}, then `xlb stop --detach` and start the agent (a pinned link keeps its mode across restarts)"
            )),
            mode => Check::new(
                "xdp",
                subject,
                Status::Ok,
                format!(
                    "xlb's program {prog} attached to {name} in {} mode{veth}",
                    attach_mode_name(mode)
                ),
            ),
        };
    }
    match &i.probe {
        Probe::Native => Check::new(
            "xdp",
            subject,
            Status::Ok,
            format!(
                "native XDP works on {name} ({driver_text}): xlb_pass attached in driver mode and \
                 detached again{veth}"
            ),
        ),
        Probe::Failed(e) => {
            let (status, consequence) = if wants_native {
                (
                    Status::Fail,
                    "the config asks for xdp-mode = \"native\", so the agent will fail to attach",
                )
            } else {
                (
                    Status::Warn,
                    "xdp-mode \"auto\" falls back to generic (skb) mode: it works, several times slower",
                )
            };
            Check::new(
                "xdp",
                subject,
                status,
                format!(
                    "{name} ({driver_text}) refused native XDP ({e}): {consequence}"
                ),
            )
            .fix(format!(
                "native XDP needs driver support (list in docs/operations.md); check `ethtool -i {name}`, the kernel version, and the driver's XDP constraints (MTU, channels: `ethtool -l {name}`)"
            ))
            .fix(format!(
                "or accept generic mode explicitly: interfaces = [{{ name = \"{name}\", xdp-mode = \"generic\" }}]"
            ))
        }
        Probe::NotRun(why) => match driver {
            Some(d) if driver_has_native_xdp(d) => Check::new(
                "xdp",
                subject,
                Status::Ok,
                format!(
                    "driver {d} supports native XDP (not probed: {why}){veth}"
                ),
            ),
            _ => Check::new(
                "xdp",
                subject,
                Status::Warn,
                format!(
                    "{driver_text} is not known to support native XDP (not probed: {why}): \
                     generic mode works, several times slower{}",
                    if wants_native {
                        "; the config asks for xdp-mode = \"native\", which then fails"
                    } else {
                        ""
                    }
                ),
            )
            .fix(format!(
                "run `xlb doctor --iface {name}` as root: it attaches a pass-through program in native mode and detaches it, which is the real test"
            )),
        },
    }
}

/// The packet-too-big arithmetic for one interface. The largest client packet is
/// `min(interface MTU, CLIENT_MTU)`; the LB forwards it if it fits the egress MTU (the config's
/// `mtu`, else the interface's) after encapsulation.
pub fn judge_mtu(
    i: &IfaceFacts,
    config_mtu: Option<u16>,
    encaps: &[Encap],
    from_mode: bool,
) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    let Ok(link) = &i.link else {
        return Check::new("mtu", subject, Status::Skip, format!("{name} not found"));
    };
    let Some(worst) = encaps.iter().max_by_key(|e| (e.overhead(), e.inner_v6)) else {
        return Check::new(
            "mtu",
            subject,
            Status::Skip,
            "no forwarding mode known: give --mode ipip|gue|dsr-l2 or --config".into(),
        );
    };
    let overhead = worst.overhead();
    let client = link.mtu.min(CLIENT_MTU);
    let egress = config_mtu.map_or(link.mtu, u32::from);
    let egress_src = match config_mtu {
        Some(m) => format!("agent.mtu = {m}"),
        None => format!("{name}'s MTU {} (agent.mtu unset)", link.mtu),
    };
    let need = client + overhead;
    let caveat = if from_mode && worst.mode != ForwardMode::DsrL2 {
        " (assuming IPv4 backends; IPv6 backends add 20 more: give --config for the exact set)"
    } else {
        ""
    };
    if egress < need {
        // MSS that fits: egress - overhead - inner IP and TCP headers.
        let inner = if worst.inner_v6 { 60 } else { 40 };
        let mss = egress.saturating_sub(overhead + inner);
        let family = if worst.inner_v6 {
            "ip6tables"
        } else {
            "iptables"
        };
        return Check::new(
            "mtu",
            subject,
            Status::Warn,
            format!(
                "clients' full-size packets ({client} bytes) become {need} bytes with {}{caveat}, \
                 more than the egress MTU {egress} ({egress_src}): the LB answers them with ICMP \
                 too-big, which costs a round trip per connection and black-holes clients whose \
                 path drops ICMP",
                worst.describe()
            ),
        )
        .fix(format!(
            "raise the MTU between the LB and the backends by {overhead}: ip link set dev {name} mtu {need} (and the switches' and backends' interfaces), then set agent.mtu = {need} or leave it unset"
        ))
        .fix(format!(
            "or clamp the TCP MSS on each backend so clients never send more: {family} -t mangle -A OUTPUT -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {mss} (UDP services must keep their datagrams under {} bytes themselves)",
            egress - overhead
        ));
    }
    if egress > link.mtu {
        return Check::new(
            "mtu",
            subject,
            Status::Warn,
            format!(
                "agent.mtu = {egress} is above {name}'s MTU {}: encapsulated frames of up to \
                 {egress} bytes leave {name} with XDP_TX, and a NIC, veth peer or switch set \
                 for {} drops them silently",
                link.mtu, link.mtu
            ),
        )
        .fix(format!(
            "raise {name}'s MTU to match (ip link set dev {name} mtu {egress}) and make sure the path to the backends carries it, or lower agent.mtu to {}",
            link.mtu
        ));
    }
    Check::new(
        "mtu",
        subject,
        Status::Ok,
        format!(
            "clients' full-size packets ({client} bytes) fit the egress MTU {egress} \
             ({egress_src}) after {}{caveat}",
            worst.describe()
        ),
    )
}

pub fn judge_rp_filter(i: &IfaceFacts, all: Option<u8>, cfg: Option<&Config>) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    if i.link.is_err() {
        return Check::new(
            "rp_filter",
            subject,
            Status::Skip,
            format!("{name} not found"),
        );
    }
    let (Some(all), Some(own)) = (all, i.rp_filter) else {
        return Check::new(
            "rp_filter",
            subject,
            Status::Skip,
            format!("cannot read net.ipv4.conf.{{all,{name}}}.rp_filter (no IPv4?)"),
        );
    };
    // The kernel uses the larger of the two.
    let effective = all.max(own);
    let what = match effective {
        0 => "off",
        1 => "strict",
        _ => "loose",
    };
    let base = format!(
        "rp_filter {effective} ({what}; all={all}, {name}={own}): packets forwarded by XDP \
         never reach it, it applies only to what the program passes to this host's stack"
    );
    let pass_vips: Vec<String> = cfg
        .map(|c| {
            c.vips
                .iter()
                .filter(|v| v.no_backend == NoBackend::Pass && v.id.addr.is_ipv4())
                .map(|v| v.id.to_string())
                .collect()
        })
        .unwrap_or_default();
    if effective == 1 && !pass_vips.is_empty() {
        return Check::new(
            "rp_filter",
            subject,
            Status::Warn,
            format!(
                "{base}; {} pass(es) packets to this host when no backend is up, and strict \
                 mode drops them when the route back to the client is not via {name}",
                pass_vips.join(", ")
            ),
        )
        .fix(format!(
            "use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{name}.rp_filter=2 (persist in /etc/sysctl.d/)"
        ));
    }
    Check::new("rp_filter", subject, Status::Ok, base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::facts::{AttachedXdp, LinkFacts};
    use crate::cli::doctor::fixtures::*;

    #[test]
    fn link() {
        assert_eq!(judge_link(&iface()).status, Status::Ok);
        let missing = IfaceFacts {
            link: Err("no interface eth9 in this network namespace".into()),
            ..iface()
        };
        let c = judge_link(&missing);
        assert_eq!(c.status, Status::Fail);
        assert_fix(&c, "ip link");
        let down = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 1500,
                up: false,
                carrier: false,
            }),
            ..iface()
        };
        let c = judge_link(&down);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "ip link set dev eth0 up");
        let no_carrier = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 1500,
                up: true,
                carrier: false,
            }),
            ..iface()
        };
        assert_eq!(judge_link(&no_carrier).status, Status::Warn);
    }

    #[test]
    fn xdp_probe_results() {
        let ok = judge_xdp(&iface());
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.contains("xlb_pass attached in driver mode"));
        let failed = IfaceFacts {
            probe: Probe::Failed("Operation not supported (os error 95)".into()),
            driver: Some("r8169".into()),
            ..iface()
        };
        let c = judge_xdp(&failed);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("falls back to generic"));
        assert_fix(&c, "xdp-mode = \"generic\"");
        // The config insists on native: the agent would fail.
        let insists = IfaceFacts {
            configured_mode: Some(XdpMode::Native),
            ..failed
        };
        assert_eq!(judge_xdp(&insists).status, Status::Fail);
    }

    #[test]
    fn xdp_driver_list_without_probe() {
        let known = IfaceFacts {
            probe: Probe::NotRun("needs root".into()),
            driver: Some("mlx5_core".into()),
            ..iface()
        };
        let c = judge_xdp(&known);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("not probed: needs root"));
        let unknown = IfaceFacts {
            driver: Some("r8169".into()),
            ..known.clone()
        };
        let c = judge_xdp(&unknown);
        assert_eq!(
            c.status,
            Status::Warn,
            "unknown driver is a warning, not a failure"
        );
        assert!(c.message.contains("generic mode works"));
        assert_fix(&c, "xlb doctor --iface eth0");
        let no_driver = IfaceFacts {
            driver: None,
            ..known.clone()
        };
        assert_eq!(judge_xdp(&no_driver).status, Status::Warn);
        let veth = IfaceFacts {
            driver: Some("veth".into()),
            ..known
        };
        assert!(judge_xdp(&veth).message.contains("peer"));
        for d in [
            "veth",
            "virtio_net",
            "ixgbe",
            "i40e",
            "ice",
            "mlx5_core",
            "mlx4_en",
            "bnxt_en",
        ] {
            assert!(driver_has_native_xdp(d), "{d}");
        }
        assert!(!driver_has_native_xdp("e1000"));
    }

    #[test]
    fn xdp_existing_program_is_left_alone() {
        let other = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Native,
                prog_id: 42,
                prog_name: Some("firewall".into()),
            }),
            probe: Probe::NotRun("an XDP program is attached".into()),
            ..iface()
        };
        let c = judge_xdp(&other);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("\"firewall\" (id 42)"), "{}", c.message);
        assert_fix(&c, "ip link set dev eth0 xdp off");
        let ours = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Native,
                prog_id: 7,
                prog_name: Some("xlb".into()),
            }),
            ..other.clone()
        };
        assert_eq!(judge_xdp(&ours).status, Status::Ok);
        // Name unreadable, but our pin dir holds the interface's link: ours.
        let pinned = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Native,
                prog_id: 7,
                prog_name: None,
            }),
            pinned_link: true,
            ..other.clone()
        };
        assert_eq!(judge_xdp(&pinned).status, Status::Ok);
        let generic = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Generic,
                prog_id: 7,
                prog_name: Some("xlb".into()),
            }),
            ..other
        };
        let c = judge_xdp(&generic);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "xlb stop --detach");
    }

    #[test]
    fn mtu_too_small_for_ipip() {
        let c = judge_mtu(&iface(), None, &[ipip_v4()], true);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.message.contains("1500 bytes) become 1520"),
            "{}",
            c.message
        );
        assert!(c.message.contains("ICMP too-big"));
        assert!(c.message.contains("assuming IPv4 backends"));
        assert_fix(&c, "ip link set dev eth0 mtu 1520");
        assert_fix(&c, "--set-mss 1440");
        // IPv6 VIP over GUE to IPv6 backends: 48 bytes, inner headers 60.
        let v6 = Encap {
            mode: ForwardMode::Gue,
            inner_v6: true,
            outer_v6: true,
        };
        let c = judge_mtu(&iface(), None, &[ipip_v4(), v6], false);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "mtu 1548");
        assert_fix(&c, "ip6tables -t mangle");
        assert_fix(&c, "--set-mss 1392");
        assert!(!c.message.contains("assuming"));
    }

    #[test]
    fn mtu_ok_paths() {
        // dsr-l2 adds nothing.
        let dsr = Encap {
            mode: ForwardMode::DsrL2,
            inner_v6: false,
            outer_v6: false,
        };
        assert_eq!(judge_mtu(&iface(), None, &[dsr], true).status, Status::Ok);
        // Jumbo frames toward the backends, clients at 1500.
        let jumbo = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 9000,
                up: true,
                carrier: true,
            }),
            ..iface()
        };
        let c = judge_mtu(&jumbo, None, &[ipip_v4()], true);
        assert_eq!(c.status, Status::Ok, "{c:#?}");
        assert!(c.message.contains("(1500 bytes) fit the egress MTU 9000"));
        // Interface raised by the overhead.
        let raised = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 1520,
                up: true,
                carrier: true,
            }),
            ..iface()
        };
        assert_eq!(
            judge_mtu(&raised, None, &[ipip_v4()], true).status,
            Status::Ok
        );
        // Nothing known about the modes.
        assert_eq!(judge_mtu(&iface(), None, &[], false).status, Status::Skip);
    }

    #[test]
    fn mtu_config_above_interface() {
        let c = judge_mtu(&iface(), Some(1520), &[ipip_v4()], true);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("above eth0's MTU 1500"), "{}", c.message);
        assert_fix(&c, "ip link set dev eth0 mtu 1520");
    }

    #[test]
    fn rp_filter() {
        let ok = judge_rp_filter(&iface(), Some(0), None);
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.contains("never reach it"));
        // Strict, but no VIP passes traffic to the stack: informational.
        let strict = IfaceFacts {
            rp_filter: Some(1),
            ..iface()
        };
        assert_eq!(judge_rp_filter(&strict, Some(0), None).status, Status::Ok);
        // The kernel takes the max of all and the interface.
        let c = judge_rp_filter(&iface(), Some(1), None);
        assert!(c.message.contains("rp_filter 1 (strict"), "{}", c.message);
        // A no-backend = "pass" VIP is handed to the stack: strict can drop it.
        let cfg = validated(CONFIG).config;
        let c = judge_rp_filter(&strict, Some(0), Some(&cfg));
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("tcp/203.0.113.10:80"));
        assert_fix(&c, "net.ipv4.conf.eth0.rp_filter=2");
        assert_eq!(judge_rp_filter(&strict, None, None).status, Status::Skip);
    }
}
