//! Flow continuity (docs/datapath.md §4): a flow the flow table does not hold takes a peer's
//! exception when `CONFIG_F_PEER_FLOWS` is set and the exception's backend is honoured here;
//! a SYN, a fragment, a stale or foreign exception, or the flag off: the ring.

use lb_common::flows::{ORIGIN_PEER, ORIGIN_RING};

use super::*;

fn peers_on() -> LbConfig {
    let cfg = base_config();
    LbConfig {
        flags: cfg.flags | CONFIG_F_PEER_FLOWS,
        ..cfg
    }
}

/// The VIP, an ACK of one of its flows, the ring's backend for it and another one.
fn world(cfg: &LbConfig) -> (Vip, Packet, u32, u32) {
    let vip = tcp_vip4(MODE_IPIP, true);
    let ack = Packet::tcp(CLIENT4, 40_123, VIP4, 80, TCP_ACK);
    let ring = vip.pool.choose(ack.hash(cfg.hash_seed, false));
    let other = *vip.pool.ids.iter().find(|&&i| i != ring).unwrap();
    (vip, ack, ring, other)
}

#[test]
fn a_peer_exception_decides_a_miss_and_is_remembered() {
    let cfg = peers_on();
    let (vip, ack, ring, other) = world(&cfg);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let key = ack.flow_key();
    let generation = dp.backend(other).generation;
    dp.set_peer_flow(&key, other, generation);
    let f = ack.frame();
    // Not a new flow: the connection exists, it reached this node only now.
    let first = fwd_to(&cfg, &vip, &ack, other, Counter::FlowPeer);
    step(&mut dp, "miss: the peer's backend", &f, &first);
    assert_eq!(dp.flow_entry(&key).map(|e| e.backend_id), Some(other));
    assert_eq!(dp.flow_origin(&key), Some(ORIGIN_PEER));
    step(
        &mut dp,
        "then a flow-table hit",
        &f,
        &fwd_to(&cfg, &vip, &ack, other, Counter::FlowHit),
    );
    // A new connection on the same 5-tuple starts on the ring, exception or not.
    let syn = Packet::tcp(CLIENT4, 40_123, VIP4, 80, TCP_SYN);
    step(
        &mut dp,
        "SYN: the ring",
        &syn.frame(),
        &fwd_to(&cfg, &vip, &syn, ring, Counter::FlowSyn),
    );
    assert_eq!(dp.flow_origin(&key), Some(ORIGIN_RING));
}

/// A case's config and the (backend id, generation) its exception names.
type Pick = Box<dyn Fn(&mut Datapath) -> (u32, u32)>;

#[test]
fn exceptions_that_do_not_apply_leave_the_ring_in_charge() {
    let on = peers_on();
    let (vip, ack, ring, other) = world(&on);
    let key = ack.flow_key();
    let frame = ack.frame();
    let foreign = Vip::new(VIP6, 80, PROTO_TCP, MODE_IPIP, 1, true);
    let foreign_id = foreign.pool.ids[0];
    let cases: Vec<(&str, LbConfig, Pick)> = vec![
        (
            "continuity off: the table is not read",
            base_config(),
            Box::new(move |dp: &mut Datapath| (other, dp.backend(other).generation)),
        ),
        (
            "an exception of an older generation of the backend",
            on,
            Box::new(move |dp: &mut Datapath| {
                (other, dp.backend(other).generation.wrapping_sub(1))
            }),
        ),
        (
            "an exception naming another VIP's backend",
            on,
            Box::new(move |dp: &mut Datapath| (foreign_id, dp.backend(foreign_id).generation)),
        ),
    ];
    for (name, cfg, pick) in cases {
        let mut dp = Datapath::new();
        setup(cfg, &[vip.clone(), foreign.clone()])(&mut dp);
        let (id, generation) = pick(&mut dp);
        dp.set_peer_flow(&key, id, generation);
        step(
            &mut dp,
            name,
            &frame,
            &fwd_to(&cfg, &vip, &ack, ring, Counter::FlowMiss),
        );
        assert_eq!(dp.flow_origin(&key), Some(ORIGIN_RING), "{name}");
    }
    // A down backend: the exception is not honoured either.
    let mut dp = Datapath::new();
    setup(on, &[vip.clone()])(&mut dp);
    let mut b = dp.backend(other);
    dp.set_peer_flow(&key, other, b.generation);
    b.state = BACKEND_DOWN;
    dp.set_backend(other, b);
    step(
        &mut dp,
        "an exception to a down backend",
        &frame,
        &fwd_to(&on, &vip, &ack, ring, Counter::FlowMiss),
    );
}
