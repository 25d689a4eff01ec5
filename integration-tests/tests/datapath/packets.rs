//! Non-VIP traffic, header parsing (VLAN, IPv4 options, IPv6 extension headers), malformed and
//! truncated frames, forwarding in every mode and family, the outer TTL.

use super::*;

#[test]
fn not_ready_config_passes_everything() {
    let vip = tcp_vip4(MODE_IPIP, true);
    let pkt = Packet::tcp(CLIENT4, 40000, VIP4, 80, TCP_SYN);
    let mut not_ready = base_config();
    not_ready.flags = CONFIG_F_ANY_PORT_VIPS; // everything but READY
    run_table(vec![
        case(
            "no config written (zeroed entry)",
            Box::new({
                let vip = vip.clone();
                move |dp: &mut Datapath| vip.install(dp)
            }),
            pkt.frame(),
            Expect::pass(Counter::PassNotReady),
        ),
        case(
            "config without CONFIG_F_READY",
            setup(not_ready, &[vip.clone()]),
            pkt.frame(),
            Expect::pass(Counter::PassNotReady),
        ),
        case(
            "not ready: even a runt frame passes as not ready",
            setup(not_ready, &[vip]),
            pkt.frame()[..20].to_vec(),
            Expect::pass(Counter::PassNotReady),
        ),
    ]);
}

#[test]
fn non_vip_traffic_passes_untouched() {
    let cfg = base_config();
    let v4 = tcp_vip4(MODE_IPIP, true);
    let v6 = Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 1, false);
    let w = || setup(cfg, &[v4.clone(), v6.clone()]);
    // A non-VIP address whose pre-filter bit is set, as a hash collision with a VIP address
    // would leave it: the program must look it up and pass it (documentation range only).
    const COLLIDE: &str = "192.0.2.98";
    let collision = {
        let (v4, v6) = (v4.clone(), v6.clone());
        move || -> Setup {
            let inner = setup(cfg, &[v4.clone(), v6.clone()]);
            Box::new(move |dp: &mut Datapath| {
                inner(dp);
                dp.set_filter_bit(ip(COLLIDE));
            })
        }
    };
    let mut arp = packet::eth_header([0xff; 6], packet::CLIENT_MAC, None, packet::ETH_P_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    let mut qinq = Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_SYN).vlan(100).frame();
    // A second tag: outer 0x8100 then another 0x8100 as the inner EtherType.
    qinq.splice(16..16, [0x81, 0x00, 0x00, 0x65]);
    let cfg2 = LbConfig {
        flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
        ..cfg
    };
    let fo = v4.clone();
    let frag_only: Setup = Box::new(move |dp: &mut Datapath| {
        dp.set_config(cfg2);
        fo.install(dp);
        dp.add_frag_alias(ip(VIP4), PROTO_TCP, MODE_IPIP, 0, 0);
    });
    // The agent's fragment aliases `(address, 0, proto)` for addresses without an all-ports VIP
    // (where `CONFIG_F_ANY_PORT_VIPS` may well be off): a whole TCP/UDP packet to port 0 finds
    // the alias by its exact port, and must still not be taken for VIP traffic.
    let aliases = {
        let (v4, v6) = (v4.clone(), v6.clone());
        move |cfg: LbConfig| -> Setup {
            let (v4, v6) = (v4.clone(), v6.clone());
            Box::new(move |dp: &mut Datapath| {
                dp.set_config(cfg);
                v4.install(dp);
                v6.install(dp);
                dp.add_frag_alias(ip(VIP4), PROTO_TCP, MODE_IPIP, 0, 0);
                dp.add_frag_alias(ip(VIP4), PROTO_UDP, MODE_IPIP, 0, 0);
                dp.add_frag_alias(ip(VIP6), PROTO_TCP, MODE_GUE, 0, 1);
            })
        }
    };
    let pass = || Expect::pass(Counter::Pass).vip(0, TrafficStats::new(0, 0, 0, 0));
    let pass_both = || pass().vip(1, TrafficStats::new(0, 0, 0, 0));
    run_table(vec![
        case(
            "port 0, tcp SYN v4 to a frag-only alias (exact-port lookup)",
            aliases(cfg),
            Packet::tcp(CLIENT4, 1000, VIP4, 0, TCP_SYN).frame(),
            pass_both(),
        ),
        case(
            "port 0, tcp ACK v4 to a frag-only alias (flow-table miss first)",
            aliases(cfg),
            Packet::tcp(CLIENT4, 1000, VIP4, 0, TCP_ACK).frame(),
            pass_both(),
        ),
        case(
            "port 0, udp v4 to a frag-only alias",
            aliases(cfg),
            Packet::udp(CLIENT4, 1000, VIP4, 0).frame(),
            pass_both(),
        ),
        case(
            "port 0, tcp SYN v6 to a frag-only alias",
            aliases(cfg),
            Packet::tcp(CLIENT6, 1000, VIP6, 0, TCP_SYN).frame(),
            pass_both(),
        ),
        case(
            "port 0, tcp SYN v4 to a frag-only alias, all-ports lookup on",
            aliases(cfg2),
            Packet::tcp(CLIENT4, 1000, VIP4, 0, TCP_SYN).frame(),
            pass_both(),
        ),
        case(
            "tcp v4 to another address",
            w(),
            Packet::tcp(CLIENT4, 1000, OTHER4, 80, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "tcp v6 to another address",
            w(),
            Packet::tcp(CLIENT6, 1000, OTHER6, 443, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "udp v4 to another address with vlan",
            w(),
            Packet::udp(CLIENT4, 53, OTHER4, 53).vlan(7).frame(),
            pass(),
        ),
        case(
            "pre-filter collision, not a VIP address",
            collision(),
            Packet::tcp(CLIENT4, 1000, COLLIDE, 80, TCP_SYN).frame(),
            pass(),
        ),
        case("ARP", w(), arp, pass()),
        case("second 802.1Q tag", w(), qinq, pass()),
        case(
            "VIP address, GRE",
            w(),
            Packet::raw(CLIENT4, VIP4, 47).payload_len(20).frame(),
            pass(),
        ),
        case(
            "VIP address, tcp to a port without VIP",
            w(),
            Packet::tcp(CLIENT4, 1000, VIP4, 81, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "VIP address, udp to a tcp-only VIP port",
            w(),
            Packet::udp(CLIENT4, 1000, VIP4, 80).frame(),
            pass(),
        ),
        case(
            "v6 VIP address, udp to a tcp-only port",
            w(),
            Packet::udp(CLIENT6, 1000, VIP6, 443).frame(),
            pass(),
        ),
        case(
            "frag-only alias is not a VIP for whole packets (any-port lookup)",
            frag_only,
            Packet::tcp(CLIENT4, 1000, VIP4, 81, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "VIP address, icmp timestamp",
            w(),
            Packet::icmp(CLIENT4, VIP4, 13, 0).frame(),
            pass(),
        ),
        case(
            "VIP address, icmp echo reply",
            w(),
            Packet::icmp(CLIENT4, VIP4, 0, 0).frame(),
            pass(),
        ),
        case(
            "VIP address, icmp dest-unreach other code",
            w(),
            Packet::icmp(ROUTER4, VIP4, 3, 1).frame(),
            pass(),
        ),
        case(
            "v6 VIP address, icmpv6 dest-unreach",
            w(),
            Packet::icmp(ROUTER6, VIP6, 1, 0).frame(),
            pass(),
        ),
        case(
            "echo request to another address",
            w(),
            Packet::echo(CLIENT4, OTHER4).frame(),
            pass(),
        ),
    ]);
}

#[test]
fn malformed_ip_headers() {
    let cfg = base_config();
    let v4 = tcp_vip4(MODE_IPIP, true);
    let v6 = Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 1, false);
    let w = || setup(cfg, &[v4.clone(), v6.clone()]);
    let good4 = Packet::tcp(CLIENT4, 1000, VIP4, 80, TCP_SYN).frame();
    let good6 = Packet::tcp(CLIENT6, 1000, VIP6, 443, TCP_SYN).frame();
    let other4 = Packet::tcp(CLIENT4, 1000, OTHER4, 80, TCP_SYN).frame();
    let patch4 = |f: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = f.to_vec();
        edit(&mut f);
        packet::fix_ipv4_checksum(&mut f, 14);
        f
    };
    let bad = |c| {
        Expect::drop(c)
            .vip(0, TrafficStats::new(0, 0, 0, 0))
            .vip(1, TrafficStats::new(0, 0, 0, 0))
    };
    let mut cases = vec![
        case(
            "v4 version 5",
            w(),
            patch4(&good4, &|f| f[14] = 0x55),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 IHL 4",
            w(),
            patch4(&good4, &|f| f[14] = 0x44),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 total length < IHL*4",
            w(),
            patch4(&good4, &|f| packet::put_u16(f, 16, 19)),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 total length > bytes present",
            w(),
            patch4(&good4, &|f| {
                let l = u16::from_be_bytes([f[16], f[17]]);
                packet::put_u16(f, 16, l + 1)
            }),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 IHL*4 > total length (options beyond the packet)",
            w(),
            patch4(
                &Packet::tcp(CLIENT4, 1000, VIP4, 80, TCP_SYN)
                    .payload_len(0)
                    .frame(),
                &|f| f[14] = 0x4f,
            ),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v6 payload length 0 (jumbogram)",
            w(),
            {
                let mut f = good6.clone();
                packet::put_u16(&mut f, 18, 0);
                f
            },
            bad(Counter::DropBadHeader),
        ),
        case(
            "v6 payload length > bytes present",
            w(),
            {
                let mut f = good6.clone();
                let l = u16::from_be_bytes([f[18], f[19]]);
                packet::put_u16(&mut f, 18, l + 1);
                f
            },
            bad(Counter::DropBadHeader),
        ),
        case(
            "bad v4 header to a non-VIP address passes",
            w(),
            patch4(&other4, &|f| f[14] = 0x44),
            Expect::pass(Counter::Pass),
        ),
    ];
    // Ethernet padding is fine on PASS too.
    cases.push(case(
        "non-VIP with ethernet padding",
        w(),
        Packet::tcp(CLIENT4, 1000, OTHER4, 80, TCP_SYN)
            .padding(12)
            .frame(),
        Expect::pass(Counter::Pass),
    ));
    run_table(cases);
}

// ------------------------------------------------------------------------------------------------
// Sections 4 and 5: forwarding in every mode.

#[test]
fn forwarding_every_mode_family_and_protocol() {
    let cfg = base_config();
    let mut cases = Vec::new();
    for (mode, mname) in MODES {
        for v4 in [true, false] {
            // Backend families the mode can carry for this VIP family.
            let backend_families: &[bool] = match (mode, v4) {
                (MODE_DSR_L2, true) => &[true],
                (MODE_DSR_L2, false) => &[false],
                (_, true) => &[true, false],
                (_, false) => &[false],
            };
            for &bv4 in backend_families {
                for (proto, pname) in [(PROTO_TCP, "tcp"), (PROTO_UDP, "udp")] {
                    let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
                    let vip = Vip::new(vaddr, 8080, proto, mode, 2, bv4);
                    let name = format!(
                        "{mname} {} VIP, {} backend, {pname}",
                        if v4 { "v4" } else { "v6" },
                        if bv4 { "v4" } else { "v6" }
                    );
                    let (pkt, flow) = if proto == PROTO_TCP {
                        (
                            Packet::tcp(client, 40001, vaddr, 8080, TCP_SYN),
                            Counter::FlowSyn,
                        )
                    } else {
                        (Packet::udp(client, 40001, vaddr, 8080), Counter::FlowMiss)
                    };
                    cases.push(case(
                        name.clone(),
                        setup(cfg, &[vip.clone()]),
                        pkt.frame(),
                        fwd(&cfg, &vip, &pkt, flow),
                    ));
                    // A non-SYN TCP segment / another UDP flow: flow-table miss.
                    let pkt2 = if proto == PROTO_TCP {
                        Packet::tcp(client, 50123, vaddr, 8080, TCP_ACK | TCP_PSH)
                    } else {
                        Packet::udp(client, 50123, vaddr, 8080).payload_len(300)
                    };
                    cases.push(case(
                        format!("{name}, second flow, flow-table miss"),
                        setup(cfg, &[vip.clone()]),
                        pkt2.frame(),
                        fwd(&cfg, &vip, &pkt2, Counter::FlowMiss),
                    ));
                }
            }
        }
    }
    run_table(cases);
}

#[test]
fn outer_ttl_is_configured_not_copied() {
    // The outer header is xlb's: its TTL / hop limit is `LbConfig::outer_ttl` whatever the
    // inner packet carries (0 and 1 included); the inner packet keeps its own. dsr-l2 adds no
    // header, so the frame keeps the client's TTL.
    let default = base_config();
    assert_eq!(default.outer_ttl, world::OUTER_TTL);
    let custom = LbConfig {
        outer_ttl: 17,
        ..default
    };
    let mut cases = Vec::new();
    for cfg in [default, custom] {
        for (mode, mname) in MODES {
            for (v4, bv4) in [(true, true), (true, false), (false, false)] {
                if mode == MODE_DSR_L2 && v4 != bv4 {
                    continue;
                }
                let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
                let vip = Vip::new(vaddr, 8080, PROTO_UDP, mode, 2, bv4);
                for inner_ttl in [0u8, 1] {
                    let pkt = Packet::udp(client, 40001, vaddr, 8080).ttl(inner_ttl);
                    let exp = fwd(&cfg, &vip, &pkt, Counter::FlowMiss);
                    cases.push(case(
                        format!(
                            "{mname} {} VIP, {} backend, inner TTL {inner_ttl}, outer-ttl {}",
                            fam(v4),
                            fam(bv4),
                            cfg.outer_ttl
                        ),
                        setup(cfg, &[vip.clone()]),
                        pkt.frame(),
                        exp,
                    ));
                }
            }
        }
    }
    // The expectations are built from the spec; spell the rule out once on the bytes too.
    let vip = Vip::new(VIP4, 8080, PROTO_UDP, MODE_IPIP, 2, true);
    let pkt = Packet::udp(CLIENT4, 40001, VIP4, 8080).ttl(0);
    let Expect {
        output: Out::Exact(out),
        ..
    } = fwd(&custom, &vip, &pkt, Counter::FlowMiss)
    else {
        unreachable!("forwarding has exact output")
    };
    assert_eq!(
        (out[14 + 8], out[14 + 20 + 8]),
        (17, 0),
        "outer TTL, inner TTL"
    );
    run_table(cases);
}

#[test]
fn header_variants_vlan_options_padding() {
    let cfg = base_config();
    let mut cases = Vec::new();
    for (mode, mname) in MODES {
        for bv4 in [true, false] {
            if mode == MODE_DSR_L2 && !bv4 {
                continue;
            }
            let vip4 = tcp_vip4(mode, bv4);
            let v = |p: Packet| p;
            let variants: Vec<(&str, Packet)> = vec![
                (
                    "vlan",
                    v(Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_SYN).vlan(0x2064)),
                ),
                (
                    "ipv4 options",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .options(vec![0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]),
                ),
                (
                    "40 bytes of ipv4 options + vlan",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .options({
                            let mut o = vec![0x01; 39];
                            o.push(0);
                            o
                        })
                        .vlan(5),
                ),
                (
                    "ethernet padding removed",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .payload_len(0)
                        .padding(6),
                ),
                (
                    "DF clear, tos, ttl, id copied",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .df(false)
                        .tos(0xb8)
                        .ttl(3)
                        .ip_id(0xbeef),
                ),
                (
                    "udp with vlan",
                    Packet::udp(CLIENT4, 5353, VIP4, 80).vlan(0xf00d),
                ),
            ];
            for (vname, pkt) in variants {
                let mut vip = vip4.clone();
                if pkt.proto() == PROTO_UDP {
                    vip.proto = PROTO_UDP;
                }
                let flow = if pkt.proto() == PROTO_TCP
                    && matches!(pkt.l4, packet::L4::Tcp { flags, .. } if flags == TCP_SYN)
                {
                    Counter::FlowSyn
                } else {
                    Counter::FlowMiss
                };
                cases.push(case(
                    format!(
                        "{mname} v4 VIP, {} backend: {vname}",
                        if bv4 { "v4" } else { "v6" }
                    ),
                    setup(cfg, &[vip.clone()]),
                    pkt.frame(),
                    fwd(&cfg, &vip, &pkt, flow),
                ));
            }
        }
        // IPv6 with a tag and padding.
        let bv4 = false;
        let vip6 = Vip::new(VIP6, 443, PROTO_TCP, mode, 3, bv4);
        for (vname, pkt) in [
            (
                "vlan",
                Packet::tcp(CLIENT6, 999, VIP6, 443, TCP_ACK).vlan(42),
            ),
            (
                "padding + traffic class",
                Packet::tcp(CLIENT6, 999, VIP6, 443, TCP_ACK)
                    .payload_len(0)
                    .tos(0x2e)
                    .padding(4),
            ),
        ] {
            cases.push(case(
                format!("{mname} v6 VIP: {vname}"),
                setup(cfg, &[vip6.clone()]),
                pkt.frame(),
                fwd(&cfg, &vip6, &pkt, Counter::FlowMiss),
            ));
        }
    }
    run_table(cases);
}

#[test]
fn ipv6_extension_headers() {
    let cfg = base_config();
    let vip = Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 1, false);
    let all = [
        Ext::HopByHop(0),
        Ext::DestOpts(1),
        Ext::Routing(2),
        Ext::Ah(4),
        Ext::DestOpts(0),
    ];
    let mut cases = Vec::new();
    for n in 1..=4 {
        let mut pkt = Packet::tcp(CLIENT6, 2000 + n as u16, VIP6, 443, TCP_ACK);
        for e in &all[..n] {
            pkt = pkt.ext(e.clone());
        }
        cases.push(case(
            format!("{n} extension header(s) walked"),
            setup(cfg, &[vip.clone()]),
            pkt.frame(),
            fwd(&cfg, &vip, &pkt, Counter::FlowMiss),
        ));
    }
    let mut five = Packet::tcp(CLIENT6, 2005, VIP6, 443, TCP_ACK);
    for e in &all {
        five = five.ext(e.clone());
    }
    cases.push(case(
        "5 extension headers: dropped",
        setup(cfg, &[vip.clone()]),
        five.frame(),
        Expect::drop(Counter::DropTooManyExtHeaders),
    ));
    let mut five_other = Packet::tcp(CLIENT6, 2005, OTHER6, 443, TCP_ACK);
    for e in &all {
        five_other = five_other.ext(e.clone());
    }
    cases.push(case(
        "5 extension headers to another address: passed",
        setup(cfg, &[vip.clone()]),
        five_other.frame(),
        Expect::pass(Counter::Pass),
    ));
    let ah = Packet::udp(CLIENT6, 7, VIP6, 443).ext(Ext::Ah(1));
    let uvip = Vip {
        proto: PROTO_UDP,
        ..vip.clone()
    };
    cases.push(case(
        "AH with minimum length, udp",
        setup(cfg, &[uvip.clone()]),
        ah.frame(),
        fwd(&cfg, &uvip, &ah, Counter::FlowMiss),
    ));
    run_table(cases);
}

// ------------------------------------------------------------------------------------------------
// Truncation at every header boundary.

/// A case of a table that shares one program instance: for packets that change no map state
/// besides the counters (passes and header drops), loading one program per case would only cost
/// time.
type SharedCase = (String, Vec<u8>, Expect);

fn run_shared(setup: Setup, cases: Vec<SharedCase>) {
    let total = cases.len();
    eprintln!("{total} cases on one program instance");
    let mut dp = Datapath::new();
    setup(&mut dp);
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(name, frame, exp)| {
            check(&mut dp, &frame, &exp)
                .err()
                .map(|r| format!("case `{name}`:\n{r}"))
        })
        .collect();
    if !failures.is_empty() {
        panic!(
            "{} of {total} cases failed:\n\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// For each prefix length of `pkt`'s frame: the raw cut (length fields unchanged) and, past the
/// fixed IP header, the consistent cut (IP length field agreeing with the cut).
fn truncation_cases(
    label: &str,
    pkt: &Packet,
    cases: &mut Vec<SharedCase>,
    errno_cases: &mut Vec<(String, Vec<u8>)>,
) {
    let frame = pkt.frame();
    let l2 = pkt.l2_len();
    let fixed = if pkt.is_v4() { 20 } else { 40 };
    let hl = pkt.ip_header_len();
    let l4_min = match pkt.proto() {
        PROTO_TCP => 20,
        _ => 8, // UDP, ICMP
    };
    let end_of_l4 = l2 + hl + l4_min;
    for len in 0..frame.len() {
        let cut = frame[..len].to_vec();
        if len < 14 {
            errno_cases.push((format!("{label}: raw cut at {len}"), cut));
            continue;
        }
        if len <= end_of_l4 {
            let exp = if len < l2 + fixed {
                Expect::pass(Counter::PassMalformed)
            } else {
                // The IP length field claims more than is present.
                Expect::drop(Counter::DropBadHeader)
            };
            cases.push((format!("{label}: raw cut at {len}"), cut, exp));
        }
        if len >= l2 + fixed && len < end_of_l4 {
            let f = packet::truncate_consistently(&frame, l2, len);
            let ip_len = len - l2;
            // v4: IHL*4 > total length; v6: payload length 0 is a jumbogram.
            let bad_header = if pkt.is_v4() {
                ip_len < hl
            } else {
                ip_len == 40
            };
            let exp = if bad_header {
                Expect::drop(Counter::DropBadHeader)
            } else {
                Expect::drop(Counter::DropTruncated)
            };
            cases.push((format!("{label}: consistent cut at {len}"), f, exp));
        }
    }
}

#[test]
fn truncation_at_every_header_boundary() {
    let vips = [
        tcp_vip4(MODE_IPIP, true),
        Vip::new(VIP4, 53, PROTO_UDP, MODE_GUE, 1, true),
        Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 2, false),
    ];
    let mut cases = Vec::new();
    let mut errno = Vec::new();
    for (label, pkt) in [
        (
            "v4 tcp, vlan, options",
            Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_ACK)
                .vlan(9)
                .options(vec![1, 1, 1, 0])
                .payload_len(0),
        ),
        ("v4 udp", Packet::udp(CLIENT4, 1, VIP4, 53).payload_len(0)),
        (
            "v6 tcp, 2 ext headers",
            Packet::tcp(CLIENT6, 1, VIP6, 443, TCP_ACK)
                .ext(Ext::HopByHop(0))
                .ext(Ext::DestOpts(1))
                .payload_len(0),
        ),
        ("v4 echo", Packet::echo(CLIENT4, VIP4).payload_len(0)),
        (
            "v6 echo, vlan",
            Packet::echo(CLIENT6, VIP6).vlan(1).payload_len(0),
        ),
    ] {
        truncation_cases(label, &pkt, &mut cases, &mut errno);
    }
    // The kernel refuses XDP test runs shorter than an Ethernet header (ETH_HLEN) with EINVAL.
    let dp = Datapath::new();
    for (name, f) in &errno {
        match dp.try_run(f) {
            Err(e) => assert_eq!(run_errno(&e), Some(libc::EINVAL), "{name}: {e}"),
            Ok(r) => panic!("{name}: the kernel ran a {}-byte frame: {r:?}", f.len()),
        }
    }
    run_shared(setup_no_ring(base_config(), &vips), cases);
}

#[test]
fn kernel_test_run_limits() {
    let cfg = base_config();
    let vip = tcp_vip4(MODE_IPIP, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    // Zero-length: refused by BPF_PROG_TEST_RUN (size < ETH_HLEN), never reaches the program.
    let e = dp.try_run(&[]).expect_err("empty frame");
    assert_eq!(run_errno(&e), Some(libc::EINVAL), "{e}");
    assert_eq!(dp.counters(), [0; COUNTER_SLOTS]);
    // 14 bytes: the smallest frame the kernel runs; no IP header: PassMalformed.
    let (v, out) = dp.run(&Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_SYN).frame()[..14]);
    assert_eq!((v, out.len()), (XDP_PASS, 14));
    // A 9000-byte frame (jumbo). Kernel behaviour (6.18, net/bpf/test_run.c): the linear XDP
    // buffer holds at most PAGE_SIZE - XDP_PACKET_HEADROOM - sizeof(skb_shared_info) bytes; the
    // rest of a larger `data_in` goes into fragments (a multi-buffer xdp_buff), and the run is
    // accepted even though the program is not declared `xdp.frags`. The program only sees the
    // linear part, so the IPv4 total length exceeds the bytes present: DropBadHeader, and
    // data_out returns all 9000 bytes (linear part + fragments) untouched.
    let big = Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_ACK).payload_len(9000 - 54);
    let frame = big.frame();
    assert_eq!(frame.len(), 9000);
    step(
        &mut dp,
        "9000-byte frame",
        &frame,
        &Expect::drop(Counter::DropBadHeader).vip(0, TrafficStats::new(0, 0, 0, 0)),
    );
    // The largest frame the kernel keeps linear is forwarded end to end; one byte more is split
    // and dropped as above.
    let frame_of = |len: usize| Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_ACK).payload_len(len - 54);
    let largest = (1500..=4096usize)
        .rev()
        .find(|&len| dp.run(&frame_of(len).frame()).0 == XDP_TX)
        .expect("some frame of 1500..4096 bytes is forwarded");
    assert!(
        largest >= 3000,
        "linear XDP test frames should reach 3000 bytes, got {largest}"
    );
    let p = frame_of(largest);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    step(
        &mut dp,
        "largest linear frame",
        &p.frame(),
        &fwd(&cfg, &vip, &p, Counter::FlowMiss),
    );
    let p1 = frame_of(largest + 1);
    step(
        &mut dp,
        "one byte more: fragments",
        &p1.frame(),
        &Expect::drop(Counter::DropBadHeader),
    );
    eprintln!("largest linear XDP test frame: {largest} bytes");
}

// ------------------------------------------------------------------------------------------------
// Section 3: fragments.
