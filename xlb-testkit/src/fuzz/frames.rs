//! Frames for the fuzzer: valid ones of every protocol, family and mode (TCP, UDP, ICMP echo,
//! PMTU errors quoting VIP flows with hostile quotes, other protocols, VLAN tags, IPv4 options,
//! IPv6 extension headers, fragments), then mutations of them (`mutate`).

use lb_common::addr::PROTO_TCP;
use rand::{RngExt, rngs::SmallRng};

use super::world::{OTHER4, OTHER6, World};
use crate::packet::{Ext, L4, Packet, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

/// Clients the generator reuses, so flows come back and hit the flow table.
const CLIENTS: u32 = 24;
const CLIENT_PORTS: u16 = 8;

fn client(rng: &mut SmallRng, v4: bool) -> String {
    let n = rng.random_range(0..CLIENTS);
    match (v4, rng.random_range(0..40)) {
        // Now and then a martian source, or one of the VIP addresses itself.
        (true, 0) => [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
        ][rng.random_range(0..5)]
        .to_string(),
        (false, 0) => [
            "::",
            "::1",
            "ff02::1",
            "::ffff:198.51.100.1",
            "2001:db8::10",
        ][rng.random_range(0..5)]
        .to_string(),
        (true, _) => format!("198.51.100.{}", n + 1),
        (false, _) => format!("2001:db8:c::{:x}", n + 1),
    }
}

fn client_port(rng: &mut SmallRng) -> u16 {
    if rng.random_bool(0.9) {
        40000 + rng.random_range(0..CLIENT_PORTS)
    } else {
        rng.random()
    }
}

/// A destination: a VIP (address and port of one of the world's VIPs, or another port), or
/// another address.
fn destination(rng: &mut SmallRng, world: &World, v4: bool) -> (String, u16, Option<u8>) {
    let vips: Vec<_> = world
        .vips
        .iter()
        .filter(|v| v.addr.is_ipv4() == v4)
        .collect();
    if rng.random_bool(0.08) || vips.is_empty() {
        let other = if v4 { OTHER4 } else { OTHER6 };
        return (other.to_string(), rng.random(), None);
    }
    let v = vips[rng.random_range(0..vips.len())];
    let port = if v.port == 0 || rng.random_bool(0.1) {
        if rng.random_bool(0.5) {
            rng.random()
        } else {
            0
        }
    } else {
        v.port
    };
    (v.addr.to_string(), port, Some(v.proto))
}

fn tcp_flags(rng: &mut SmallRng) -> u8 {
    match rng.random_range(0..8) {
        0 | 1 => TCP_SYN,
        2 => TCP_SYN | TCP_ACK,
        3 => TCP_FIN | TCP_ACK,
        4 => TCP_RST,
        5 => rng.random(),
        _ => TCP_ACK | TCP_PSH,
    }
}

fn payload_len(rng: &mut SmallRng) -> usize {
    match rng.random_range(0..10) {
        0 => 0,
        1..=5 => rng.random_range(1..64),
        6 | 7 => rng.random_range(64..1400),
        // Around the MTU (1500 with 20-48 bytes of encapsulation).
        _ => rng.random_range(1400..1600),
    }
}

fn decorate(rng: &mut SmallRng, mut p: Packet) -> Packet {
    p.tos = rng.random();
    p.ttl = rng.random();
    p.ip_id = rng.random();
    p.df = rng.random_bool(0.5);
    p.flow_label = rng.random_range(0..1 << 20);
    if rng.random_bool(0.1) {
        p = p.vlan(rng.random_range(0..4096));
    }
    if p.is_v4() {
        if rng.random_bool(0.1) {
            let words = rng.random_range(1..=10);
            let mut opts = vec![1u8; words * 4]; // NOPs
            opts[0] = rng.random();
            p = p.options(opts);
        }
        if rng.random_bool(0.05) {
            p = p.frag_v4(rng.random_range(0..8), rng.random_bool(0.5));
        }
    } else if rng.random_bool(0.15) {
        for _ in 0..rng.random_range(1..=5) {
            let ext = match rng.random_range(0..6) {
                0 => Ext::HopByHop(rng.random_range(0..3)),
                1 => Ext::Routing(rng.random_range(0..3)),
                2 => Ext::DestOpts(rng.random_range(0..3)),
                3 => Ext::Ah(rng.random_range(1..4)),
                _ if rng.random_bool(0.3) => Ext::Fragment {
                    offset: rng.random_range(0..4),
                    more: rng.random_bool(0.5),
                    id: rng.random(),
                },
                _ => Ext::DestOpts(0),
            };
            p = p.ext(ext);
        }
    }
    if rng.random_bool(0.1) {
        p = p.padding(rng.random_range(1..40));
    }
    p
}

/// The IP bytes of a packet the VIP sent to a client, quoted by an ICMP error, possibly made
/// hostile: the other IP version, cut short, another sender, another protocol.
fn quote(rng: &mut SmallRng, v4: bool, vip: &str, vport: u16) -> Vec<u8> {
    let c = client(rng, v4);
    let cport = client_port(rng);
    let reply = match rng.random_range(0..10) {
        0 => {
            // The other version.
            let (a, b) = if v4 {
                ("2001:db8::10", "2001:db8:c::1")
            } else {
                ("192.0.2.10", "198.51.100.1")
            };
            Packet::tcp(a, vport, b, cport, TCP_ACK)
        }
        1 => {
            let other = if v4 { "192.0.2.11" } else { "2001:db8::11" };
            Packet::tcp(other, vport, &c, cport, TCP_ACK)
        }
        2 => Packet::icmp(vip, &c, 0, 0),
        3 | 4 => Packet::udp(vip, vport, &c, cport),
        _ => Packet::tcp(vip, vport, &c, cport, TCP_ACK),
    }
    .payload_len(rng.random_range(0..200));
    let bytes = reply.ip_bytes();
    let keep = match rng.random_range(0..6) {
        0 => rng.random_range(0..=bytes.len()),
        _ => bytes
            .len()
            .min(if v4 { 28 } else { 48 } + rng.random_range(0..100)),
    };
    bytes[..keep].to_vec()
}

/// One well-formed frame (before mutation).
pub fn frame(rng: &mut SmallRng, world: &World) -> Packet {
    let v4 = rng.random_bool(0.5);
    let (dst, port, proto) = destination(rng, world, v4);
    let src = client(rng, v4);
    let p = match rng.random_range(0..20) {
        0 | 1 => {
            let mut e = Packet::echo(&src, &dst);
            if rng.random_bool(0.1)
                && let L4::Echo { .. } = e.l4
            {
                e = Packet::icmp(&src, &dst, if v4 { 8 } else { 128 }, rng.random());
            }
            e.payload_len(payload_len(rng).min(200))
        }
        2 | 3 => {
            let router = if v4 { "203.0.113.1" } else { "2001:db8:ff::1" };
            let mtu = rng.random_range(500..1500);
            let q = quote(rng, v4, &dst, port);
            let mut e = Packet::too_big(router, &dst, mtu, q);
            if rng.random_bool(0.05) {
                e = Packet::icmp(router, &dst, rng.random(), rng.random());
            }
            e
        }
        4 => Packet::raw(&src, &dst, [47u8, 50, 132, 0][rng.random_range(0..4)])
            .payload_len(rng.random_range(0..100)),
        _ => {
            let tcp = match proto {
                Some(p) if rng.random_bool(0.9) => p == PROTO_TCP,
                _ => rng.random_bool(0.5),
            };
            let sport = client_port(rng);
            let pkt = if tcp {
                Packet::tcp(&src, sport, &dst, port, tcp_flags(rng))
            } else {
                Packet::udp(&src, sport, &dst, port)
            };
            pkt.payload_len(payload_len(rng))
        }
    };
    decorate(rng, p)
}
