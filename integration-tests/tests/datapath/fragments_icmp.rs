//! Fragments, ICMP echo, ICMP errors (PMTU) relayed along their flow, too-big replies and their
//! rate limit.

use super::*;

#[test]
fn fragments_hash_on_addresses_and_reach_one_backend() {
    let cfg = base_config();
    let any_port = LbConfig {
        flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
        ..cfg
    };
    // An all-ports UDP VIP, and a frag-only alias for TCP to VIP index 1.
    let allports = Vip::new(VIP4, 0, PROTO_UDP, MODE_IPIP, 0, true);
    let tcp80 = Vip::new(VIP4, 80, PROTO_TCP, MODE_GUE, 1, true);
    let v6all = Vip::new(VIP6, 0, PROTO_UDP, MODE_GUE, 2, false);
    let v6aff = Vip::new(VIP6, 0, PROTO_TCP, MODE_IPIP, 3, false).flags(VIP_F_SRC_AFFINITY);
    let world = {
        let vips = [
            allports.clone(),
            tcp80.clone(),
            v6all.clone(),
            v6aff.clone(),
        ];
        move || -> Setup {
            let vips = vips.clone();
            Box::new(move |dp: &mut Datapath| {
                setup(any_port, &vips)(dp);
                dp.add_frag_alias(ip(VIP4), PROTO_TCP, MODE_GUE, 0, 1);
            })
        }
    };
    let frag_fwd = |vip: &Vip, pkt: &Packet| {
        let hash = pkt.hash(cfg.hash_seed, vip.affinity());
        let id = vip.pool.choose(hash);
        let mut e = fwd_to(&any_port, vip, pkt, id, Counter::Fragment);
        e.vips[0].1.new_flows = 0;
        e.backends[0].1.new_flows = 0;
        e
    };
    let udp_first = Packet::udp(CLIENT4, 5000, VIP4, 9999)
        .payload_len(64)
        .frag_v4(0, true);
    let udp_mid = Packet::raw(CLIENT4, VIP4, PROTO_UDP)
        .payload_len(64)
        .frag_v4(9, true);
    let udp_last = Packet::raw(CLIENT4, VIP4, PROTO_UDP)
        .payload_len(20)
        .frag_v4(18, false);
    let tcp_first = Packet::tcp(CLIENT4, 5000, VIP4, 80, TCP_ACK).frag_v4(0, true);
    let tcp_mid = Packet::raw(CLIENT4, VIP4, PROTO_TCP)
        .payload_len(48)
        .frag_v4(6, true);
    let v6_first = Packet::udp(CLIENT6, 5000, VIP6, 53)
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
            id: 77,
        })
        .payload_len(64);
    let v6_mid = Packet::raw(CLIENT6, VIP6, PROTO_UDP)
        .ext(Ext::Fragment {
            offset: 9,
            more: false,
            id: 77,
        })
        .payload_len(16);
    let v6_aff = Packet::tcp(CLIENT6, 5000, VIP6, 22, TCP_SYN)
        .ext(Ext::HopByHop(0))
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
            id: 78,
        });
    // Same datagram, same backend: the first fragment (with ports) hashes like the others.
    for (a, b) in [
        (&udp_first, &udp_mid),
        (&udp_first, &udp_last),
        (&tcp_first, &tcp_mid),
        (&v6_first, &v6_mid),
    ] {
        assert_eq!(
            a.hash(world::SEED, false),
            b.hash(world::SEED, false),
            "test bug: fragment hashes differ"
        );
    }
    let mut cases = vec![
        case(
            "v4 udp first fragment (MF)",
            world(),
            udp_first.frame(),
            frag_fwd(&allports, &udp_first),
        ),
        case(
            "v4 udp middle fragment",
            world(),
            udp_mid.frame(),
            frag_fwd(&allports, &udp_mid),
        ),
        case(
            "v4 udp last fragment (offset, no MF)",
            world(),
            udp_last.frame(),
            frag_fwd(&allports, &udp_last),
        ),
        case(
            "v4 tcp first fragment via frag-only alias",
            world(),
            tcp_first.frame(),
            frag_fwd(&tcp80, &tcp_first),
        ),
        case(
            "v4 tcp middle fragment via frag-only alias",
            world(),
            tcp_mid.frame(),
            frag_fwd(&tcp80, &tcp_mid),
        ),
        case(
            "v6 fragment header, first",
            world(),
            v6_first.frame(),
            frag_fwd(&v6all, &v6_first),
        ),
        case(
            "v6 fragment header, last",
            world(),
            v6_mid.frame(),
            frag_fwd(&v6all, &v6_mid),
        ),
        case(
            "v6 fragment after hop-by-hop, source affinity",
            world(),
            v6_aff.frame(),
            frag_fwd(&v6aff, &v6_aff),
        ),
        case(
            "v4 fragment, no VIP for the protocol: pass",
            world(),
            Packet::raw(CLIENT4, VIP4, 132)
                .payload_len(16)
                .frag_v4(3, true)
                .frame(),
            Expect::pass(Counter::Pass),
        ),
        case(
            "v6 fragment, no VIP for the protocol: pass",
            world(),
            Packet::raw(CLIENT6, VIP6, PROTO_ICMPV6)
                .ext(Ext::Fragment {
                    offset: 3,
                    more: true,
                    id: 1,
                })
                .payload_len(16)
                .frame(),
            Expect::pass(Counter::Pass),
        ),
    ];
    // Fragments do not need the any-port flag: the (dst, 0, proto) lookup is their own.
    let no_flag = {
        let v = allports.clone();
        Box::new(move |dp: &mut Datapath| setup(cfg, &[v.clone()])(dp)) as Setup
    };
    let mut e = frag_fwd(&allports, &udp_mid);
    if let Out::Exact(o) = &mut e.output {
        *o = expect::forwarded(
            &udp_mid.frame(),
            &cfg,
            &allports
                .pool
                .backend(allports.pool.choose(udp_mid.hash(world::SEED, false))),
            MODE_IPIP,
            udp_mid.entropy(world::SEED),
        );
    }
    cases.push(case(
        "v4 fragment without CONFIG_F_ANY_PORT_VIPS",
        no_flag,
        udp_mid.frame(),
        e,
    ));
    run_table(cases);
}

// ------------------------------------------------------------------------------------------------
// Section 3: ICMP echo, PMTU errors; section 5: too big.

#[test]
fn icmp_echo() {
    let cfg = base_config();
    let echo_on = |addr: &'static str, index: u32| -> Setup {
        Box::new(move |dp: &mut Datapath| {
            dp.set_config(cfg);
            dp.set_address(ip(addr), VIP_F_ICMP_ECHO, index);
        })
    };
    let echo_off = |addr: &'static str| -> Setup {
        let vip = Vip::new(addr, 80, PROTO_TCP, MODE_IPIP, 0, addr.contains('.'));
        setup(cfg, &[vip])
    };
    let reply = |pkt: &Packet, index: u32| {
        let f = pkt.frame();
        Expect::new(XDP_TX, &[(Counter::IcmpEchoReply, 1)])
            .output(expect::echo_reply(&f))
            .vip(index, TrafficStats::new(1, accounted_bytes(&f), 0, 0))
    };
    let p4 = Packet::echo(CLIENT4, VIP4);
    let p4x = Packet::echo(CLIENT4, VIP4)
        .vlan(12)
        .options(vec![0x07, 0x07, 0x04, 0, 0, 0, 0, 0])
        .payload_len(56)
        .padding(5);
    let p6 = Packet::echo(CLIENT6, VIP6);
    let p6x = Packet::echo(CLIENT6, VIP6)
        .vlan(3)
        .payload_len(1000)
        .ttl(1)
        .padding(2);
    run_table(vec![
        case(
            "v4 echo, flag on",
            echo_on(VIP4, 5),
            p4.frame(),
            reply(&p4, 5),
        ),
        case(
            "v4 echo, vlan, options, padding",
            echo_on(VIP4, 5),
            p4x.frame(),
            reply(&p4x, 5),
        ),
        case(
            "v6 echo, flag on",
            echo_on(VIP6, 6),
            p6.frame(),
            reply(&p6, 6),
        ),
        case(
            "v6 echo, vlan, hop limit 1, padding",
            echo_on(VIP6, 6),
            p6x.frame(),
            reply(&p6x, 6),
        ),
        case(
            "v4 echo, flag off",
            echo_off(VIP4),
            p4.frame(),
            Expect::pass(Counter::Pass).vip(0, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "v6 echo, flag off",
            echo_off(VIP6),
            p6.frame(),
            Expect::pass(Counter::Pass),
        ),
        case(
            "v4 echo with code 1: not an echo request",
            echo_on(VIP4, 5),
            Packet::icmp(CLIENT4, VIP4, 8, 1).frame(),
            Expect::pass(Counter::Pass),
        ),
    ]);
}

/// The ICMP error a router sends to the VIP about a VIP -> client packet of `flow` (a client ->
/// VIP packet).
fn pmtu_error(flow: &Packet, mtu: u32) -> Packet {
    let (sport, dport) = flow.ports();
    let (vip, client) = (flow.dst.to_string(), flow.src.to_string());
    let reverse = match flow.proto() {
        PROTO_TCP => Packet::tcp(&vip, dport, &client, sport, TCP_ACK),
        _ => Packet::udp(&vip, dport, &client, sport),
    }
    .payload_len(1400);
    let q = reverse.ip_bytes();
    let (router, quoted) = if flow.is_v4() {
        (ROUTER4, q[..28].to_vec())
    } else {
        (ROUTER6, q[..200].to_vec())
    };
    Packet::too_big(router, &vip, mtu, quoted).ttl(250)
}

/// The ICMP error `icmp` about `flow` relayed to backend `id`: the outer headers carry the
/// entropy of the flow it quotes.
fn icmp_forwarded(cfg: &LbConfig, vip: &Vip, icmp: &Packet, flow: &Packet, id: u32) -> Expect {
    let f = icmp.frame();
    let entropy = flow.entropy(cfg.hash_seed);
    let out = expect::forwarded(&f, cfg, &vip.pool.backend(id), vip.mode, entropy);
    let len = accounted_bytes(&f);
    Expect::new(
        XDP_TX,
        &[(Counter::Tx, 1), (Counter::IcmpErrorForwarded, 1)],
    )
    .output(out)
    .vip(vip.index, TrafficStats::new(1, len, 0, 0))
    .backend(id, TrafficStats::new(1, len, 0, 0))
}

#[test]
fn icmp_pmtu_errors_follow_the_flow() {
    let cfg = base_config();
    let small_mtu = LbConfig { mtu: 100, ..cfg }; // forwarding of ICMP errors skips the MTU check
    let mut cases = Vec::new();
    for (mode, mname) in MODES {
        for (v4, bv4) in [(true, true), (true, false), (false, false)] {
            if mode == MODE_DSR_L2 && v4 != bv4 {
                continue;
            }
            let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
            let vip = Vip::new(vaddr, 443, PROTO_TCP, mode, 1, bv4);
            let flow = Packet::tcp(client, 33333, vaddr, 443, TCP_ACK);
            let icmp = pmtu_error(&flow, 1400);
            let hash = flow.hash(cfg.hash_seed, false);
            let id = vip.pool.choose(hash);
            let name = format!("{mname} {}→{} ring choice", fam(v4), fam(bv4));
            cases.push(case(
                name.clone(),
                setup(small_mtu, &[vip.clone()]),
                icmp.frame(),
                icmp_forwarded(&small_mtu, &vip, &icmp, &flow, id),
            ));
        }
    }
    // Source affinity: the ICMP error hashes the client (quoted destination) alone.
    let aff = Vip::new(VIP4, 443, PROTO_UDP, MODE_GUE, 2, true).flags(VIP_F_SRC_AFFINITY);
    let flow = Packet::udp(CLIENT4, 4242, VIP4, 443);
    let icmp = pmtu_error(&flow, 1300);
    let hash = flow.hash(cfg.hash_seed, true);
    cases.push(case(
        "source affinity",
        setup(cfg, &[aff.clone()]),
        icmp.frame(),
        icmp_forwarded(&cfg, &aff, &icmp, &flow, aff.pool.choose(hash)),
    ));
    // Any-port VIP reached through the fallback.
    let anyport = Vip::new(VIP6, 0, PROTO_UDP, MODE_IPIP, 3, false);
    let flow = Packet::udp(CLIENT6, 4242, VIP6, 5555);
    let icmp = pmtu_error(&flow, 1280);
    let hash = flow.hash(cfg.hash_seed, false);
    cases.push(case(
        "all-ports VIP",
        setup(
            LbConfig {
                flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
                ..cfg
            },
            &[anyport.clone()],
        ),
        icmp.frame(),
        icmp_forwarded(&cfg, &anyport, &icmp, &flow, anyport.pool.choose(hash)),
    ));
    // Malformed / foreign quotes.
    let vip = Vip::new(VIP4, 443, PROTO_TCP, MODE_IPIP, 1, true);
    let flow = Packet::tcp(CLIENT4, 33333, VIP4, 443, TCP_ACK);
    let mut short = pmtu_error(&flow, 1400);
    if let packet::L4::TooBig { quoted, .. } = &mut short.l4 {
        quoted.truncate(23); // IPv4 header + 3 bytes: ports incomplete
    }
    cases.push(case(
        "quote without full ports: dropped",
        setup(cfg, &[vip.clone()]),
        short.frame(),
        Expect::drop(Counter::DropBadIcmpQuote),
    ));
    let mut bad_ihl = pmtu_error(&flow, 1400);
    if let packet::L4::TooBig { quoted, .. } = &mut bad_ihl.l4 {
        quoted[0] = 0x43;
    }
    cases.push(case(
        "quote with IHL 3: dropped",
        setup(cfg, &[vip.clone()]),
        bad_ihl.frame(),
        Expect::drop(Counter::DropBadIcmpQuote),
    ));
    let foreign = pmtu_error(&Packet::tcp(CLIENT4, 33333, VIP4, 444, TCP_ACK), 1400);
    cases.push(case(
        "quote of a flow to no VIP port: pass",
        setup(cfg, &[vip.clone()]),
        foreign.frame(),
        Expect::pass(Counter::Pass),
    ));
    let flow6 = Packet::tcp(CLIENT6, 1, VIP6, 443, TCP_ACK);
    let mut short6 = pmtu_error(&flow6, 1280);
    if let packet::L4::TooBig { quoted, .. } = &mut short6.l4 {
        quoted.truncate(42);
    }
    let vip6 = Vip::new(VIP6, 443, PROTO_TCP, MODE_IPIP, 1, false);
    cases.push(case(
        "v6 quote without full ports: dropped",
        setup(cfg, &[vip6.clone()]),
        short6.frame(),
        Expect::drop(Counter::DropBadIcmpQuote),
    ));
    // The quote must be of the error's own IP version, and sent by the address the error is
    // addressed to (docs/datapath.md §3): anything else names no VIP flow.
    let v6_bytes = Packet::tcp(VIP6, 443, CLIENT6, 1, TCP_ACK).ip_bytes();
    cases.push(case(
        "v4 error quoting an IPv6 packet: dropped",
        setup(cfg, &[vip.clone()]),
        Packet::too_big(ROUTER4, VIP4, 1400, v6_bytes[..48].to_vec()).frame(),
        Expect::drop(Counter::DropBadIcmpQuote),
    ));
    let v4_bytes = Packet::tcp(VIP4, 443, CLIENT4, 33333, TCP_ACK).ip_bytes();
    cases.push(case(
        "v6 error quoting an IPv4 packet: dropped",
        setup(cfg, &[vip6.clone()]),
        Packet::too_big(ROUTER6, VIP6, 1280, v4_bytes).frame(),
        Expect::drop(Counter::DropBadIcmpQuote),
    ));
    let other_src = Packet::tcp("192.0.2.11", 443, CLIENT4, 33333, TCP_ACK).ip_bytes();
    cases.push(case(
        "quote sent by another address than the error's destination: dropped",
        setup(cfg, &[vip.clone()]),
        Packet::too_big(ROUTER4, VIP4, 1400, other_src[..28].to_vec()).frame(),
        Expect::drop(Counter::DropBadIcmpQuote),
    ));
    let echo_reply = Packet::icmp(VIP4, CLIENT4, 0, 0).ip_bytes();
    cases.push(case(
        "quote of an ICMP packet (no ports): pass",
        setup(cfg, &[vip.clone()]),
        Packet::too_big(ROUTER4, VIP4, 1400, echo_reply).frame(),
        Expect::pass(Counter::Pass),
    ));
    // The quote ends with the error's IP packet: Ethernet padding is not part of it.
    let mut padded = pmtu_error(&flow, 1400);
    if let packet::L4::TooBig { quoted, .. } = &mut padded.l4 {
        quoted.truncate(22);
    }
    cases.push(case(
        "quote whose ports lie in the Ethernet padding: dropped",
        setup(cfg, &[vip.clone()]),
        padded.padding(16).frame(),
        Expect::drop(Counter::DropBadIcmpQuote),
    ));
    run_table(cases);
}

#[test]
fn icmp_pmtu_error_uses_the_flow_table() {
    for v4 in [true, false] {
        let cfg = base_config();
        let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
        let vip = Vip::new(vaddr, 443, PROTO_TCP, MODE_GUE, 1, v4);
        let mut dp = Datapath::new();
        setup(cfg, &[vip.clone()])(&mut dp);
        let flow = Packet::tcp(client, 33333, vaddr, 443, TCP_ACK);
        let hash = flow.hash(cfg.hash_seed, false);
        let a = vip.pool.choose(hash);
        step(
            &mut dp,
            "flow starts (miss)",
            &flow.frame(),
            &fwd(&cfg, &vip, &flow, Counter::FlowMiss),
        );
        assert_eq!(
            dp.flow_entry(&flow.flow_key()).map(|e| e.backend_id),
            Some(a)
        );
        // The ring moves every slot to another backend; the flow table still says `a`.
        let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
        dp.fill_ring(vip.index, |_| b);
        let icmp = pmtu_error(&flow, 1400);
        step(
            &mut dp,
            "ICMP error follows the flow entry",
            &icmp.frame(),
            &icmp_forwarded(&cfg, &vip, &icmp, &flow, a),
        );
        // An invalid entry (backend down): ring choice, and the entry is left alone.
        let mut down = vip.pool.backend(a);
        down.state = BACKEND_DOWN;
        dp.set_backend(a, down);
        step(
            &mut dp,
            "ICMP error, entry's backend down: ring",
            &icmp.frame(),
            &icmp_forwarded(&cfg, &vip, &icmp, &flow, b),
        );
        assert_eq!(
            dp.flow_entry(&flow.flow_key()).map(|e| e.backend_id),
            Some(a),
            "ICMP never writes the flow table"
        );
        // No entry at all for another client: ring choice, nothing inserted.
        let other = Packet::tcp(client, 44444, vaddr, 443, TCP_ACK);
        let icmp2 = pmtu_error(&other, 1400);
        step(
            &mut dp,
            "ICMP error without entry",
            &icmp2.frame(),
            &icmp_forwarded(&cfg, &vip, &icmp2, &other, b),
        );
        assert_eq!(dp.flow_entry(&other.flow_key()), None, "ICMP never inserts");
    }
}

#[test]
fn too_big_replies() {
    let cfg = LbConfig {
        mtu: 1500,
        ..base_config()
    };
    let mut cases = Vec::new();
    for (mode, mname) in [(MODE_IPIP, "ipip"), (MODE_GUE, "gue")] {
        for (v4, bv4) in [(true, true), (true, false), (false, false)] {
            let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
            let vip = Vip::new(vaddr, 443, PROTO_TCP, mode, 1, bv4);
            let oh = overhead(mode, bv4);
            let hdrs = if v4 { 20 + 20 } else { 40 + 20 };
            // Largest L3 that still fits: forwarded.
            let fits = Packet::tcp(client, 1111, vaddr, 443, TCP_ACK).payload_len(1500 - oh - hdrs);
            let name = format!("{mname} {}→{}", fam(v4), fam(bv4));
            cases.push(case(
                format!("{name}: L3 + overhead == mtu is forwarded"),
                setup(cfg, &[vip.clone()]),
                fits.frame(),
                fwd(&cfg, &vip, &fits, Counter::FlowMiss),
            ));
            for vlan in [None, Some(77)] {
                let mut big = Packet::tcp(client, 1111, vaddr, 443, TCP_ACK)
                    .payload_len(1500 - oh - hdrs + 1);
                if let Some(t) = vlan {
                    big = big.vlan(t);
                }
                let f = big.frame();
                let id = vip.pool.choose(big.hash(cfg.hash_seed, false));
                cases.push(case(
                    format!("{name}: one byte over the mtu, vlan {vlan:?}: too big reply"),
                    setup(cfg, &[vip.clone()]),
                    f.clone(),
                    Expect::new(
                        XDP_TX,
                        &[(Counter::IcmpTooBigSent, 1), (Counter::FlowMiss, 1)],
                    )
                    .output(expect::too_big_reply(&f, 1500, oh))
                    .vip(1, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 1))
                    .backend(id, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 0)),
                ));
            }
        }
    }
    // DSR adds nothing: a packet of exactly the MTU is forwarded.
    let dsr = Vip::new(VIP4, 443, PROTO_TCP, MODE_DSR_L2, 1, true);
    let full = Packet::tcp(CLIENT4, 1, VIP4, 443, TCP_ACK).payload_len(1460);
    cases.push(case(
        "dsr: L3 == mtu forwarded",
        setup(cfg, &[dsr.clone()]),
        full.frame(),
        fwd(&cfg, &dsr, &full, Counter::FlowMiss),
    ));
    // mtu 0 disables the check.
    let ipip = Vip::new(VIP4, 443, PROTO_TCP, MODE_IPIP, 1, true);
    let huge = Packet::tcp(CLIENT4, 1, VIP4, 443, TCP_ACK).payload_len(2500);
    cases.push(case(
        "mtu 0: no check",
        setup(base_config(), &[ipip.clone()]),
        huge.frame(),
        fwd(&base_config(), &ipip, &huge, Counter::FlowMiss),
    ));
    run_table(cases);
}

#[test]
fn too_big_replies_are_rate_limited() {
    let _pin = PinCpu::to(0);
    let cfg = LbConfig {
        mtu: 1500,
        icmp_rate: 1,
        icmp_burst: 1,
        ..base_config()
    };
    let vip = Vip::new(VIP6, 443, PROTO_UDP, MODE_GUE, 1, false);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    dp.reset_icmp_bucket();
    let big = Packet::udp(CLIENT6, 1, VIP6, 443).payload_len(1500);
    let f = big.frame();
    let id = vip.pool.choose(big.hash(cfg.hash_seed, false));
    step(
        &mut dp,
        "first too-big: answered",
        &f,
        &Expect::new(
            XDP_TX,
            &[(Counter::IcmpTooBigSent, 1), (Counter::FlowMiss, 1)],
        )
        .output(expect::too_big_reply(&f, 1500, 48))
        .vip(1, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 1))
        .backend(id, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 0)),
    );
    step(
        &mut dp,
        "second too-big within the second: rate limited",
        &f,
        &Expect::new(
            XDP_DROP,
            &[(Counter::DropTooBigRateLimited, 1), (Counter::FlowHit, 1)],
        )
        .vip(1, TrafficStats::new(0, 0, 0, 1))
        .backend(id, TrafficStats::new(0, 0, 0, 0)),
    );
}

// ------------------------------------------------------------------------------------------------
// Sections 3 and 4: VIP lookup and backend choice.
