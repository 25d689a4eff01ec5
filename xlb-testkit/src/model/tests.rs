//! The model on its own (no kernel): a few rules of each section, so a change to the model is
//! checked before it is compared with the program.

use std::collections::HashMap;

use lb_common::{
    Backend, FlowEntry, FlowKey, LbConfig, VipKey, VipMeta,
    addr::{PROTO_TCP, PROTO_UDP},
    limits::RING_SIZE,
    stats::Counter,
    values::{MODE_IPIP, VIP_F_ICMP_ECHO},
};

use super::{Maps, XDP_DROP, XDP_PASS, XDP_TX, decide};
use crate::{
    expect,
    packet::{Packet, TCP_ACK, TCP_SYN, ip},
    world::{backend, base_config},
};

struct Fake {
    cfg: LbConfig,
    entries: HashMap<VipKey, VipMeta>,
    backends: Vec<Backend>,
    flows: HashMap<FlowKey, FlowEntry>,
    seen: HashMap<FlowKey, u16>,
    now: u16,
    full: bool,
}

impl Maps for Fake {
    fn config(&self) -> LbConfig {
        self.cfg
    }
    fn vip_entry(&self, key: &VipKey) -> Option<VipMeta> {
        self.entries.get(key).copied()
    }
    fn backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(id as usize).copied()
    }
    fn ring(&self, index: u32, slot: u32) -> u32 {
        assert!(slot < RING_SIZE);
        if index == 0 { 1 } else { 0 }
    }
    fn flow(&self, key: &FlowKey) -> Option<FlowEntry> {
        self.flows.get(key).copied()
    }
    fn flow_seen(&self, key: &FlowKey) -> u16 {
        self.seen.get(key).copied().unwrap_or(0)
    }
    fn flow_evicts(&self, key: &FlowKey) -> bool {
        self.full && !self.flows.contains_key(key)
    }
    fn idle_now(&self) -> u16 {
        self.now
    }
    fn peer(&self, _: &FlowKey) -> Option<FlowEntry> {
        None
    }
    fn icmp_token(&self) -> bool {
        true
    }
}

const VIP: &str = "192.0.2.10";

fn fake() -> Fake {
    let meta = VipMeta {
        index: 0,
        flags: 0,
        mode: MODE_IPIP,
        _pad: [0; 3],
    };
    let mut entries = HashMap::new();
    entries.insert(VipKey::of(ip(VIP), 80, PROTO_TCP), meta);
    entries.insert(VipKey::of(ip(VIP), 53, PROTO_UDP), meta);
    entries.insert(
        VipKey::of(ip(VIP), 0, 0),
        VipMeta {
            flags: VIP_F_ICMP_ECHO,
            mode: 0,
            ..meta
        },
    );
    let mut b = backend(1, true, 0);
    b.mode = MODE_IPIP;
    Fake {
        cfg: base_config(),
        entries,
        backends: vec![Backend::default(), b],
        flows: HashMap::new(),
        seen: HashMap::new(),
        now: 1000,
        full: false,
    }
}

#[test]
fn a_syn_to_a_vip_is_encapsulated_and_remembered() {
    let m = fake();
    let p = Packet::tcp("198.51.100.7", 40000, VIP, 80, TCP_SYN);
    let f = p.frame();
    let o = decide(&m, &f);
    assert_eq!(
        (o.verdict, o.counter, o.detail),
        (XDP_TX, Counter::Tx, Some(Counter::FlowSyn))
    );
    let entropy = p.entropy(m.cfg.hash_seed);
    assert_eq!(
        o.output,
        Some(expect::forwarded(
            &f,
            &m.cfg,
            &m.backends[1],
            MODE_IPIP,
            entropy
        ))
    );
    let w = o.flow_write.expect("a SYN writes its flow");
    assert_eq!((w.key, w.entry.backend_id), (p.flow_key(), 1));
}

#[test]
fn a_honoured_entry_is_a_hit_and_a_stale_one_is_rehashed() {
    let mut m = fake();
    let p = Packet::tcp("198.51.100.7", 40000, VIP, 80, TCP_ACK);
    m.flows.insert(
        p.flow_key(),
        FlowEntry {
            backend_id: 1,
            generation: 1,
        },
    );
    let o = decide(&m, &p.frame());
    assert_eq!((o.detail, o.flow_write), (Some(Counter::FlowHit), None));
    m.flows.insert(
        p.flow_key(),
        FlowEntry {
            backend_id: 1,
            generation: 9,
        },
    );
    let o = decide(&m, &p.frame());
    assert_eq!(o.detail, Some(Counter::FlowRehash));
}

#[test]
fn hostile_inputs_get_the_documented_verdicts() {
    let m = fake();
    let cases = [
        (
            Packet::tcp("127.0.0.1", 1, VIP, 80, TCP_SYN).frame(),
            XDP_DROP,
            Counter::DropMartian,
        ),
        (
            Packet::tcp(VIP, 1, VIP, 80, TCP_SYN).frame(),
            XDP_DROP,
            Counter::DropMartian,
        ),
        (
            Packet::tcp("198.51.100.7", 1, "192.0.2.99", 80, TCP_SYN).frame(),
            XDP_PASS,
            Counter::Pass,
        ),
        (
            Packet::udp("198.51.100.7", 1, VIP, 80).frame(),
            XDP_PASS,
            Counter::Pass,
        ),
        (
            Packet::echo("198.51.100.7", VIP).frame(),
            XDP_TX,
            Counter::IcmpEchoReply,
        ),
        (
            Packet::raw("198.51.100.7", VIP, 0).frag_v4(1, true).frame(),
            XDP_PASS,
            Counter::Pass,
        ),
        (
            Packet::too_big(
                "203.0.113.1",
                VIP,
                1400,
                Packet::tcp("2001:db8::10", 80, "2001:db8::7", 1, TCP_ACK).ip_bytes(),
            )
            .frame(),
            XDP_DROP,
            Counter::DropBadIcmpQuote,
        ),
        (
            Packet::tcp("198.51.100.7", 1, VIP, 80, TCP_SYN).frame()[..20].to_vec(),
            XDP_PASS,
            Counter::PassMalformed,
        ),
    ];
    for (i, (f, verdict, counter)) in cases.into_iter().enumerate() {
        let o = decide(&m, &f);
        assert_eq!((o.verdict, o.counter), (verdict, counter), "case {i}");
    }
    let mut bad_udp = Packet::udp("198.51.100.7", 1, VIP, 80).frame();
    bad_udp[14 + 20 + 5] ^= 1;
    assert_eq!(decide(&m, &bad_udp).counter, Counter::DropBadHeader);
}

#[test]
fn a_udp_flow_idle_past_the_timeout_follows_the_ring_again() {
    let mut m = fake();
    m.cfg.udp_idle_ticks = 28;
    let p = Packet::udp("198.51.100.7", 40000, VIP, 53);
    let key = p.flow_key();
    let entry = FlowEntry {
        backend_id: 1,
        generation: 1,
    };
    m.flows.insert(key, entry);
    for (seen, detail) in [
        (1000 - 28, Counter::FlowHit),
        (1000 - 29, Counter::FlowExpired),
        // Unstamped (written by the agent or an older program): a hit, stamped by it.
        (0, Counter::FlowHit),
    ] {
        m.seen.insert(key, seen);
        let o = decide(&m, &p.frame());
        assert_eq!(o.detail, Some(detail), "stamp {seen}");
        assert_eq!(o.flow_write.is_some(), detail == Counter::FlowExpired);
    }
    // No timeout configured: never expires. TCP: never expires.
    m.seen.insert(key, 1);
    m.cfg.udp_idle_ticks = 0;
    assert_eq!(decide(&m, &p.frame()).detail, Some(Counter::FlowHit));
    m.cfg.udp_idle_ticks = 28;
    let t = Packet::tcp("198.51.100.7", 40000, VIP, 80, TCP_ACK);
    m.flows.insert(t.flow_key(), entry);
    m.seen.insert(t.flow_key(), 1);
    assert_eq!(decide(&m, &t.frame()).detail, Some(Counter::FlowHit));
}

#[test]
fn a_write_into_a_full_set_counts_the_eviction() {
    let mut m = fake();
    m.full = true;
    let o = decide(
        &m,
        &Packet::tcp("198.51.100.7", 1, VIP, 80, TCP_SYN).frame(),
    );
    assert_eq!(
        o.counters(),
        vec![Counter::Tx, Counter::FlowSyn, Counter::FlowEvicted]
    );
    // A hit writes nothing and evicts nothing.
    let p = Packet::tcp("198.51.100.7", 2, VIP, 80, TCP_ACK);
    m.flows.insert(
        p.flow_key(),
        FlowEntry {
            backend_id: 1,
            generation: 1,
        },
    );
    assert_eq!(
        decide(&m, &p.frame()).counters(),
        vec![Counter::Tx, Counter::FlowHit]
    );
}
