//! Rules against hostile input (docs/datapath.md §2-§3): martian sources, TCP and UDP headers
//! that lie about their own length. Cases the differential fuzzer (`cargo xtask fuzz`) found
//! are added here by name.

use super::*;

const UDP_VIP_PORT: u16 = 53;

fn vips() -> (Vip, Vip, Vip, Vip) {
    (
        tcp_vip4(MODE_IPIP, true),
        Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 1, false),
        Vip::new(VIP4, UDP_VIP_PORT, PROTO_UDP, MODE_IPIP, 2, true),
        Vip::new(VIP6, UDP_VIP_PORT, PROTO_UDP, MODE_IPIP, 3, false),
    )
}

/// A drop before the VIP (port) is known: counted globally, charged to no VIP.
fn dropped(c: Counter) -> Expect {
    let mut e = Expect::drop(c);
    for i in 0..4 {
        e = e.vip(i, TrafficStats::new(0, 0, 0, 0));
    }
    e
}

#[test]
fn martian_sources_to_a_vip_are_dropped() {
    let cfg = base_config();
    let (t4, t6, u4, u6) = vips();
    let all = [t4.clone(), t6.clone(), u4.clone(), u6.clone()];
    let w = || setup(cfg, &all);
    let mut cases = Vec::new();
    for src in [
        "0.0.0.0",
        "0.9.9.9",
        "127.0.0.1",
        "224.0.0.5",
        "239.255.255.250",
        "255.255.255.255",
        VIP4,
    ] {
        cases.push(case(
            format!("v4 SYN from {src}"),
            w(),
            Packet::tcp(src, 1000, VIP4, 80, TCP_SYN).frame(),
            dropped(Counter::DropMartian),
        ));
        cases.push(case(
            format!("v4 UDP from {src}"),
            w(),
            Packet::udp(src, 1000, VIP4, UDP_VIP_PORT).frame(),
            dropped(Counter::DropMartian),
        ));
    }
    for src in [
        "::",
        "::1",
        "ff02::1",
        "ff05::1:3",
        "::ffff:198.51.100.7",
        VIP6,
    ] {
        cases.push(case(
            format!("v6 SYN from {src}"),
            w(),
            Packet::tcp(src, 1000, VIP6, 443, TCP_SYN).frame(),
            dropped(Counter::DropMartian),
        ));
    }
    // Every kind of packet to a VIP address, not only TCP/UDP to a VIP port.
    cases.push(case(
        "echo request from a multicast source",
        w(),
        Packet::echo("224.1.2.3", VIP4).frame(),
        dropped(Counter::DropMartian),
    ));
    cases.push(case(
        "fragment from loopback",
        w(),
        Packet::udp("127.0.0.2", 1000, VIP4, UDP_VIP_PORT)
            .frag_v4(0, true)
            .frame(),
        dropped(Counter::DropMartian),
    ));
    cases.push(case(
        "another protocol from 0.0.0.0",
        w(),
        Packet::raw("0.0.0.0", VIP4, 47).payload(vec![0; 8]).frame(),
        dropped(Counter::DropMartian),
    ));
    // A VIP address of the other VIP as source (one LB, two addresses).
    let second = Vip::new("192.0.2.11", 80, PROTO_TCP, MODE_IPIP, 4, true);
    cases.push(case(
        "source is another VIP address of this LB",
        setup(cfg, &[t4.clone(), second]),
        Packet::tcp("192.0.2.11", 1000, VIP4, 80, TCP_SYN).frame(),
        dropped(Counter::DropMartian),
    ));
    // Not VIP traffic: the kernel decides.
    cases.push(case(
        "martian source to a non-VIP address passes",
        w(),
        Packet::tcp("127.0.0.1", 1000, OTHER4, 80, TCP_SYN).frame(),
        Expect::pass(Counter::Pass),
    ));
    // The edges of the ranges are ordinary sources.
    for src in ["1.0.0.0", "126.255.255.255", "223.255.255.255", "240.0.0.1"] {
        let pkt = Packet::tcp(src, 1000, VIP4, 80, TCP_SYN);
        cases.push(case(
            format!("v4 SYN from {src} is forwarded"),
            w(),
            pkt.frame(),
            fwd(&cfg, &t4, &pkt, Counter::FlowSyn),
        ));
    }
    for src in ["::2", "fe80::1", "::fffe:198.51.100.7"] {
        let pkt = Packet::tcp(src, 1000, VIP6, 443, TCP_SYN);
        cases.push(case(
            format!("v6 SYN from {src} is forwarded"),
            w(),
            pkt.frame(),
            fwd(&cfg, &t6, &pkt, Counter::FlowSyn),
        ));
    }
    run_table(cases);
}

/// Offset of the L4 header in a frame of `pkt` (no VLAN, no options or extension headers).
fn l4_off(v4: bool) -> usize {
    14 + if v4 { 20 } else { 40 }
}

#[test]
fn tcp_data_offset_and_udp_length_must_fit_the_packet() {
    let cfg = base_config();
    let (t4, t6, u4, u6) = vips();
    let all = [t4.clone(), t6.clone(), u4.clone(), u6.clone()];
    let w = || setup(cfg, &all);
    let mut cases = Vec::new();
    for v4 in [true, false] {
        let (vaddr, client, tvip, uvip, tport) = if v4 {
            (VIP4, CLIENT4, &t4, &u4, 80)
        } else {
            (VIP6, CLIENT6, &t6, &u6, 443)
        };
        let l4 = l4_off(v4);
        let tcp = Packet::tcp(client, 1000, vaddr, tport, TCP_ACK).payload_len(8);
        let with_doff = |doff: u8| {
            let mut f = tcp.frame();
            f[l4 + 12] = (doff << 4) | (f[l4 + 12] & 0x0f);
            f
        };
        for doff in [0u8, 4] {
            cases.push(case(
                format!("{} TCP data offset {doff} (< 5)", fam(v4)),
                w(),
                with_doff(doff),
                dropped(Counter::DropBadHeader),
            ));
        }
        // 28 bytes of segment: a data offset of 8 (32 bytes) runs past it, 7 ends on it.
        cases.push(case(
            format!("{} TCP data offset beyond the segment", fam(v4)),
            w(),
            with_doff(8),
            dropped(Counter::DropBadHeader),
        ));
        let mut fits = tcp.frame();
        fits[l4 + 12] = (7 << 4) | (fits[l4 + 12] & 0x0f);
        let mut exp = fwd(&cfg, tvip, &tcp, Counter::FlowMiss);
        exp.output = match exp.output {
            Out::Exact(mut o) => {
                // The inner packet is forwarded byte for byte: the same data offset.
                let at = o.len() - tcp.ip_bytes().len() + (l4 - 14) + 12;
                o[at] = fits[l4 + 12];
                Out::Exact(o)
            }
            other => other,
        };
        cases.push(case(
            format!("{} TCP data offset ending on the segment's end", fam(v4)),
            w(),
            fits,
            exp,
        ));

        let udp = Packet::udp(client, 1000, vaddr, UDP_VIP_PORT).payload_len(20);
        let with_len = |len: u16| {
            let mut f = udp.frame();
            packet::put_u16(&mut f, l4 + 4, len);
            f
        };
        for (what, len) in [
            ("0", 0u16),
            ("7 (< header)", 7),
            ("8 (< payload)", 8),
            ("payload - 1", 27),
            ("payload + 1", 29),
            ("65535", 65535),
        ] {
            cases.push(case(
                format!("{} UDP length {what}", fam(v4)),
                w(),
                with_len(len),
                dropped(Counter::DropBadHeader),
            ));
        }
        cases.push(case(
            format!("{} UDP length equal to the payload is forwarded", fam(v4)),
            w(),
            with_len(28),
            fwd(&cfg, uvip, &udp, Counter::FlowMiss),
        ));
    }
    run_table(cases);
}

// ------------------------------------------------------------------------------------------------
// Found by the differential fuzzer (`cargo xtask fuzz`, xlb_testkit::fuzz), one case each.

#[test]
fn fuzzer_findings() {
    let cfg = base_config();
    let (t4, t6, u4, u6) = vips();
    let all = [t4.clone(), t6.clone(), u4.clone(), u6.clone()];
    let w = || setup(cfg, &all);
    let zero_echo = Packet::echo_with(CLIENT4, VIP4, 0, 0).payload_len(0);
    run_table(vec![
        // A fragment of protocol 0 looked up `(dst, 0, 0)`, found the address entry, took it
        // for a VIP of mode 0 and dropped the packet as `DropUnsupported` (seed
        // 0x786c625f66757a7a, frame 172). Only TCP and UDP fragments can be VIP traffic.
        case(
            "v4 fragment of protocol 0 to a VIP address passes",
            w(),
            Packet::raw(CLIENT4, VIP4, 0)
                .payload_len(16)
                .frag_v4(3, true)
                .frame(),
            Expect::pass(Counter::Pass),
        ),
        case(
            "v6 fragment of next header 0 to a VIP address passes",
            w(),
            Packet::raw(CLIENT6, VIP6, 0)
                .payload_len(16)
                .ext(Ext::Fragment {
                    offset: 2,
                    more: true,
                    id: 7,
                })
                .frame(),
            Expect::pass(Counter::Pass),
        ),
        // The echo reply's checksum, updated incrementally, came out 0x0000 for an all-zero
        // ICMPv4 message (identifier, sequence and data 0), whose only valid checksum is
        // 0xffff (seed 0x1a9837b47eaacc71, frame 997521; docs/datapath.md §6).
        case(
            "v4 echo with identifier, sequence and data 0: reply checksum 0xffff",
            Box::new(move |dp: &mut Datapath| {
                dp.set_config(cfg);
                dp.set_address(ip(VIP4), VIP_F_ICMP_ECHO, 5);
            }),
            zero_echo.frame(),
            Expect::new(XDP_TX, &[(Counter::IcmpEchoReply, 1)])
                .output(expect::echo_reply(&zero_echo.frame()))
                .vip(
                    5,
                    TrafficStats::new(1, accounted_bytes(&zero_echo.frame()), 0, 0),
                ),
        ),
    ]);
}
