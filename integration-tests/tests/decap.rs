//! The backend-side decap program (BPF_PROG_TEST_RUN): what the LB program sends, the decap
//! program turns back into the client's packet, byte for byte; anything else passes untouched.
//!
//! Needs root with CAP_BPF: fails loudly rather than skip.

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use lb_common::{
    addr::PROTO_TCP,
    map_names,
    stats::{DecapCounter, GlobalStats},
    values::{DecapConfig, MODE_GUE, MODE_IPIP},
};
use lb_userspace::{
    decap::{DecapOptions, decap_config},
    loader,
    maps::sum_global,
    model::XdpMode,
};
use xlb_testkit::{
    Datapath, Packet,
    datapath::run_named,
    packet::{TCP_ACK, ip},
    world,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

struct Decap {
    ebpf: Ebpf,
}

impl Decap {
    fn new(lb_v4: &str, lb_v6: &str, gue_port: u16) -> Decap {
        let mut ebpf = loader::load_decap(None)
            .unwrap_or_else(|e| panic!("decap tests need root with CAP_BPF: {e}"));
        let opts = DecapOptions {
            iface: "unused".into(),
            lb_src_v4: Some(lb_v4.parse().unwrap()),
            lb_src_v6: Some(lb_v6.parse().unwrap()),
            gue_port,
            pin_dir: "/unused".into(),
            mode: XdpMode::Auto,
        };
        let mut cfg: Array<&mut MapData, DecapConfig> =
            Array::try_from(ebpf.map_mut(map_names::DECAP_CONFIG).unwrap()).unwrap();
        cfg.set(0, decap_config(&opts), 0).unwrap();
        Decap { ebpf }
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        run_named(&mut self.ebpf, map_names::PROG_DECAP, frame)
    }

    fn counter(&mut self, c: DecapCounter) -> u64 {
        let map: PerCpuArray<&MapData, GlobalStats> =
            PerCpuArray::try_from(self.ebpf.map(map_names::DECAP_STATS).unwrap()).unwrap();
        sum_global(map.get(&0, 0).unwrap().iter().copied()).counters[c as usize]
    }
}

/// The LB program with one VIP whose ring holds one backend.
fn lb(vip: &str, mode: u8, backend_v4: bool) -> Datapath {
    let mut dp = Datapath::new();
    dp.set_ready_config(world::base_config());
    dp.add_vip(ip(vip), 80, PROTO_TCP, mode, 0, 0);
    dp.set_backend(1, world::backend(1, backend_v4, 0));
    dp.fill_ring(0, |_| 1);
    dp
}

fn ethertype(frame: &[u8], vlan: bool) -> u16 {
    let at = if vlan { 16 } else { 12 };
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

#[test]
fn decap_restores_what_the_lb_encapsulated() {
    let cases = [
        (
            "ipip v4",
            "192.0.2.10",
            "198.51.100.7",
            MODE_IPIP,
            true,
            false,
        ),
        (
            "ipip v4 in v6",
            "192.0.2.10",
            "198.51.100.7",
            MODE_IPIP,
            false,
            false,
        ),
        (
            "ipip v6",
            "2001:db8::10",
            "2001:db8:c::7",
            MODE_IPIP,
            false,
            false,
        ),
        (
            "gue v4",
            "192.0.2.10",
            "198.51.100.7",
            MODE_GUE,
            true,
            false,
        ),
        (
            "gue v6",
            "2001:db8::10",
            "2001:db8:c::7",
            MODE_GUE,
            false,
            false,
        ),
        (
            "gue v4 vlan",
            "192.0.2.10",
            "198.51.100.7",
            MODE_GUE,
            true,
            true,
        ),
        (
            "ipip v6 vlan",
            "2001:db8::10",
            "2001:db8:c::7",
            MODE_IPIP,
            false,
            true,
        ),
    ];
    for (name, vip, client, mode, backend_v4, vlan) in cases {
        let dp = lb(vip, mode, backend_v4);
        let mut pkt = Packet::tcp(client, 40000, vip, 80, TCP_ACK).payload_len(100);
        if vlan {
            pkt = pkt.vlan(42);
        }
        let (v, encapsulated) = dp.run(&pkt.frame());
        assert_eq!(v, XDP_TX, "{name}: LB forwards");

        let mut decap = Decap::new(world::SRC_V4, world::SRC_V6, world::GUE_PORT);
        let (v, out) = decap.run(&encapsulated);
        assert_eq!(v, XDP_PASS, "{name}: decap passes to the stack");
        let l2 = if vlan { 18 } else { 14 };
        assert_eq!(
            &out[l2..],
            &pkt.ip_bytes()[..],
            "{name}: inner packet byte-identical"
        );
        assert_eq!(&out[..12], &encapsulated[..12], "{name}: MACs kept");
        let want = if vip.contains(':') { 0x86dd } else { 0x0800 };
        assert_eq!(ethertype(&out, vlan), want, "{name}: inner EtherType");
        if vlan {
            assert_eq!(&out[12..16], &encapsulated[12..16], "{name}: tag kept");
        }
        let counter = if mode == MODE_GUE {
            DecapCounter::DecapGue
        } else {
            DecapCounter::DecapIpip
        };
        assert_eq!(decap.counter(counter), 1, "{name}: counted");
    }
}

#[test]
fn decap_leaves_everything_else_alone() {
    // Encapsulated by another source than the configured LB: untouched.
    let dp = lb("192.0.2.10", MODE_IPIP, true);
    let pkt = Packet::tcp("198.51.100.7", 40000, "192.0.2.10", 80, TCP_ACK);
    let (_, from_lb) = dp.run(&pkt.frame());
    let mut other_lb = Decap::new("192.0.2.77", "2001:db8::77", world::GUE_PORT);
    let (v, out) = other_lb.run(&from_lb);
    assert_eq!((v, &out), (XDP_PASS, &from_lb));
    assert_eq!(other_lb.counter(DecapCounter::PassNotFromLb), 1);

    let mut decap = Decap::new(world::SRC_V4, world::SRC_V6, world::GUE_PORT);
    // Ordinary traffic to the backend.
    let plain = Packet::tcp("198.51.100.7", 40000, "203.0.113.101", 22, TCP_ACK).frame();
    assert_eq!(decap.run(&plain), (XDP_PASS, plain.clone()));
    assert_eq!(decap.counter(DecapCounter::Pass), 1);

    // GUE-looking UDP to another port.
    let dp = lb("192.0.2.10", MODE_GUE, true);
    let (_, gue) = dp.run(&pkt.frame());
    let mut wrong_port = Decap::new(world::SRC_V4, world::SRC_V6, world::GUE_PORT + 1);
    assert_eq!(wrong_port.run(&gue), (XDP_PASS, gue.clone()));
    assert_eq!(wrong_port.counter(DecapCounter::Pass), 1);

    // An outer fragment cannot be decapsulated in XDP: passed as it is.
    let mut frag = from_lb.clone();
    frag[14 + 6] |= 0x20; // MF
    let sum = {
        frag[14 + 10] = 0;
        frag[14 + 11] = 0;
        xlb_testkit::csum::checksum(&frag[14..34])
    };
    frag[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(decap.run(&frag), (XDP_PASS, frag.clone()));
    assert_eq!(decap.counter(DecapCounter::PassOuterFragment), 1);
}

/// Found by the differential fuzzer (`cargo xtask fuzz`): tunnels from the LB's own address
/// whose outer header is no header of its EtherType's family, or does not fit in the frame.
#[test]
fn decap_fuzzer_findings() {
    let mut decap = Decap::new(world::SRC_V4, world::SRC_V6, world::GUE_PORT);
    // An IPv6 EtherType over a header whose version is not 6 was stripped as a tunnel.
    let dp = lb("2001:db8::10", MODE_IPIP, false);
    let pkt = Packet::tcp("2001:db8:c::7", 40000, "2001:db8::10", 80, TCP_ACK);
    let (_, tunnel) = dp.run(&pkt.frame());
    let mut not_v6 = tunnel.clone();
    not_v6[14] = 0xd0 | (not_v6[14] & 0x0f);
    assert_eq!(decap.run(&not_v6), (XDP_PASS, not_v6.clone()));
    assert_eq!(decap.counter(DecapCounter::Pass), 1);
    // An IPv4 outer header whose IHL runs past the frame: not stripped (the move would leave
    // less than an Ethernet header, a drop).
    let dp = lb("192.0.2.10", MODE_IPIP, true);
    let pkt = Packet::tcp("198.51.100.7", 40000, "192.0.2.10", 80, TCP_ACK).payload_len(0);
    let (_, tunnel) = dp.run(&pkt.frame());
    let mut short = tunnel[..14 + 24].to_vec();
    short[14] = 0x4f;
    xlb_testkit::packet::fix_ipv4_checksum(&mut short, 14);
    assert_eq!(decap.run(&short), (XDP_PASS, short.clone()));
    assert_eq!(decap.counter(DecapCounter::Pass), 2);
}
