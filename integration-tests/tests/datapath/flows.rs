//! The all-ports fallback, no-backend and bad-backend cases, the flow table (sets, eviction, torn
//! slots, sharing across CPUs, stickiness), source affinity and the per-VIP/backend counters.

use super::*;

#[test]
fn all_ports_vip_fallback() {
    let cfg = base_config();
    let any = LbConfig {
        flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
        ..cfg
    };
    let all = Vip::new(VIP4, 0, PROTO_TCP, MODE_IPIP, 0, true);
    let exact = Vip::new(VIP4, 80, PROTO_TCP, MODE_GUE, 1, true);
    let p1234 = Packet::tcp(CLIENT4, 999, VIP4, 1234, TCP_SYN);
    let p80 = Packet::tcp(CLIENT4, 999, VIP4, 80, TCP_SYN);
    let p0 = Packet::tcp(CLIENT4, 999, VIP4, 0, TCP_SYN);
    let all6 = Vip::new(VIP6, 0, PROTO_UDP, MODE_DSR_L2, 2, false);
    let p6 = Packet::udp(CLIENT6, 999, VIP6, 7);
    run_table(vec![
        case(
            "exact miss, all-ports VIP hit",
            setup(any, &[all.clone(), exact.clone()]),
            p1234.frame(),
            fwd(&any, &all, &p1234, Counter::FlowSyn),
        ),
        case(
            "exact port wins over all-ports",
            setup(any, &[all.clone(), exact.clone()]),
            p80.frame(),
            fwd(&any, &exact, &p80, Counter::FlowSyn).vip(0, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "port 0 to an all-ports VIP: the VIP",
            setup(any, &[all.clone(), exact.clone()]),
            p0.frame(),
            fwd(&any, &all, &p0, Counter::FlowSyn),
        ),
        case(
            "all-ports VIP without CONFIG_F_ANY_PORT_VIPS: pass",
            setup(cfg, &[all.clone()]),
            p1234.frame(),
            Expect::pass(Counter::Pass),
        ),
        case(
            "v6 all-ports udp dsr",
            setup(any, &[all6.clone()]),
            p6.frame(),
            fwd(&any, &all6, &p6, Counter::FlowMiss),
        ),
    ]);
}

#[test]
fn no_backend_bad_backend_unsupported() {
    let cfg = base_config();
    let vip = tcp_vip4(MODE_IPIP, true);
    let pkt = Packet::tcp(CLIENT4, 2222, VIP4, 80, TCP_SYN);
    let slot = ring_slot(pkt.hash(cfg.hash_seed, false));
    let with = |f: Box<dyn Fn(&mut Datapath)>| -> Setup {
        let vip = vip.clone();
        Box::new(move |dp: &mut Datapath| {
            setup(cfg, &[vip.clone()])(dp);
            f(dp)
        })
    };
    let nopass = Vip {
        flags: VIP_F_NO_BACKEND_PASS,
        ..vip.clone()
    };
    let v6_v4b_ipip = Vip::new(VIP6, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let v6_v4b_gue = Vip::new(VIP6, 80, PROTO_TCP, MODE_GUE, 0, true);
    let p6 = Packet::tcp(CLIENT6, 2222, VIP6, 80, TCP_SYN);
    run_table(vec![
        case(
            "empty ring slot: drop",
            with(Box::new(move |dp| dp.set_slot(0, slot, 0))),
            pkt.frame(),
            Expect::drop_vip(Counter::DropNoBackend, 0),
        ),
        case(
            "empty ring slot with VIP_F_NO_BACKEND_PASS: pass",
            {
                let nopass = nopass.clone();
                Box::new(move |dp: &mut Datapath| {
                    setup(cfg, &[nopass.clone()])(dp);
                    dp.fill_ring(0, |_| 0);
                })
            },
            pkt.frame(),
            Expect::pass(Counter::PassNoBackend).vip(0, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "ring slot names an empty backend entry",
            with(Box::new(move |dp| dp.set_slot(0, slot, 40))),
            pkt.frame(),
            Expect::drop_vip(Counter::DropBadBackend, 0).backend(40, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "ring slot names another VIP's backend",
            with(Box::new(move |dp| {
                dp.set_backend(41, world::backend(41, true, 5));
                dp.set_slot(0, slot, 41);
            })),
            pkt.frame(),
            Expect::drop_vip(Counter::DropBadBackend, 0).backend(41, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "unknown mode 0",
            setup(
                cfg,
                &[Vip {
                    mode: 0,
                    ..vip.clone()
                }],
            ),
            pkt.frame(),
            dropped_after_pick(Counter::DropUnsupported, &vip, &pkt, Counter::FlowSyn),
        ),
        case(
            "unknown mode 9",
            setup(
                cfg,
                &[Vip {
                    mode: 9,
                    ..vip.clone()
                }],
            ),
            pkt.frame(),
            dropped_after_pick(Counter::DropUnsupported, &vip, &pkt, Counter::FlowSyn),
        ),
        case(
            "ipip: v6 VIP, v4 backend",
            setup(cfg, &[v6_v4b_ipip.clone()]),
            p6.frame(),
            dropped_after_pick(
                Counter::DropUnsupported,
                &v6_v4b_ipip,
                &p6,
                Counter::FlowSyn,
            ),
        ),
        case(
            "gue: v6 VIP, v4 backend",
            setup(cfg, &[v6_v4b_gue.clone()]),
            p6.frame(),
            dropped_after_pick(Counter::DropUnsupported, &v6_v4b_gue, &p6, Counter::FlowSyn),
        ),
    ]);
}

/// `n` client ports of CLIENT4 whose flows to VIP4:80 share one flow-table set.
fn same_set_flows(dp: &mut Datapath, n: usize) -> Vec<Packet> {
    let first = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_ACK);
    let (set, _, _) = dp.flow_set_of(&first.flow_key());
    let mut out = vec![first];
    let mut port = 40002;
    while out.len() < n {
        let p = Packet::tcp(CLIENT4, port, VIP4, 80, TCP_ACK);
        if dp.flow_set_of(&p.flow_key()).0 == set {
            out.push(p);
        }
        port = port
            .checked_add(1)
            .expect("enough client ports share a set");
    }
    out
}

fn with_flags(p: &Packet, flags: u8) -> Packet {
    let (sport, dport) = p.ports();
    Packet::tcp(CLIENT4, sport, VIP4, dport, flags)
}

/// The flow table's sets (docs/datapath.md §4): a SYN's entry starts unused, the flow's next
/// packet marks it used, and a new flow in a full set evicts an unused entry, never one that
/// is carrying traffic. Flows that share a set each go where their own entry says.
#[test]
fn flow_table_sets_evict_unused_entries_first() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let flows = same_set_flows(&mut dp, FLOW_WAYS + 1);
    let choice = |p: &Packet| vip.pool.choose(p.hash(cfg.hash_seed, false));
    let used = |dp: &mut Datapath, p: &Packet| {
        let (_, set, tag) = dp.flow_set_of(&p.flow_key());
        set.ways
            .iter()
            .find(|s| s.keyed(&p.flow_key(), tag))
            .map(|s| s.used)
    };
    // Fill the set: four SYNs.
    for p in &flows[..FLOW_WAYS] {
        let syn = with_flags(p, TCP_SYN);
        step(
            &mut dp,
            "SYN",
            &syn.frame(),
            &fwd_to(&cfg, &vip, &syn, choice(p), Counter::FlowSyn),
        );
        assert_eq!(used(&mut dp, p), Some(0), "a new entry starts unused");
    }
    // The first three send a second packet: hits, now used.
    for p in &flows[..FLOW_WAYS - 1] {
        step(
            &mut dp,
            "second packet",
            &p.frame(),
            &fwd_to(&cfg, &vip, p, choice(p), Counter::FlowHit),
        );
        assert_eq!(used(&mut dp, p), Some(1), "a hit marks the entry used");
    }
    // Pin the used flows to backends other than their ring choices, so a lost entry shows.
    let pinned: Vec<u32> = flows[..FLOW_WAYS - 1]
        .iter()
        .map(|p| {
            let other = *vip.pool.ids.iter().find(|&&i| i != choice(p)).unwrap();
            dp.set_flow_entry(&p.flow_key(), other);
            // Rewriting an entry resets its mark; mark it again as its traffic would.
            let f = p.frame();
            step(
                &mut dp,
                "pinned",
                &f,
                &fwd_to(&cfg, &vip, p, other, Counter::FlowHit),
            );
            other
        })
        .collect();
    // A fifth flow: the set is full, and the one entry that never saw a second packet goes.
    let new = with_flags(&flows[FLOW_WAYS], TCP_SYN);
    step(
        &mut dp,
        "new flow in a full set",
        &new.frame(),
        &fwd_to(&cfg, &vip, &new, choice(&new), Counter::FlowSyn).also(Counter::FlowEvicted, 1),
    );
    assert_eq!(dp.flow_entry(&flows[FLOW_WAYS - 1].flow_key()), None);
    assert!(dp.flow_entry(&new.flow_key()).is_some());
    for (p, id) in flows[..FLOW_WAYS - 1].iter().zip(pinned) {
        step(
            &mut dp,
            "used flow kept its entry",
            &p.frame(),
            &fwd_to(&cfg, &vip, p, id, Counter::FlowHit),
        );
    }
    let total = dp.flow_set_of(&new.flow_key()).1;
    assert!(total.ways.iter().all(|s| s.sealed()), "four intact entries");
}

/// An idle stamp `ticks` before now that is not 0 (0 marks an unstamped entry).
fn stamp_ago(ticks: u16) -> u16 {
    match idle_now().wrapping_sub(ticks) {
        0 => u16::MAX,
        t => t,
    }
}

/// UDP idle timeout (docs/datapath.md §4 "UDP idle timeout"): a UDP flow's entry is stamped
/// with the idle clock; one silent for longer than the timeout is set aside (`flow_expired`)
/// and the ring chooses again, while a fresh or unstamped one is honoured. TCP entries never
/// expire, and a timeout of 0 turns expiry off.
#[test]
fn udp_idle_timeout() {
    let mut cfg = base_config();
    let clock = idle_clock();
    assert_eq!(
        cfg.idle_shift, clock.shift,
        "base_config runs the host's idle clock"
    );
    cfg.udp_idle_ticks = clock.ticks(std::time::Duration::from_secs(30));
    let limit = cfg.udp_idle_ticks;
    assert!(
        (28..=57).contains(&limit),
        "30 s in ticks of 0.5 to 1.07 s: {limit}"
    );
    let uvip = Vip::new(VIP4, 53, PROTO_UDP, MODE_GUE, 0, true);
    let tvip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 1, true);
    let mut dp = Datapath::new();
    setup(cfg, &[uvip.clone(), tvip.clone()])(&mut dp);
    let u = Packet::udp(CLIENT4, 5353, VIP4, 53);
    let key = u.flow_key();
    let ring = uvip.pool.choose(u.hash(cfg.hash_seed, false));
    let other = *uvip.pool.ids.iter().find(|&&i| i != ring).unwrap();
    let near = |seen: u16| idle_now().wrapping_sub(seen) <= 1;

    step(
        &mut dp,
        "udp miss",
        &u.frame(),
        &fwd_to(&cfg, &uvip, &u, ring, Counter::FlowMiss),
    );
    let seen = dp.flow_seen(&key);
    assert!(
        near(seen),
        "a new UDP entry carries the idle clock's tick, got {seen}"
    );

    // Pinned elsewhere, silent for just under the timeout: honoured.
    dp.set_flow_entry(&key, other);
    assert!(dp.set_flow_seen(&key, stamp_ago(limit - 1)));
    step(
        &mut dp,
        "udp idle for less than the timeout: hit",
        &u.frame(),
        &fwd_to(&cfg, &uvip, &u, other, Counter::FlowHit),
    );
    assert!(near(dp.flow_seen(&key)), "a hit restamps the entry");

    // Silent for longer than the timeout: the ring decides and the entry is rewritten.
    assert!(dp.set_flow_seen(&key, stamp_ago(limit + 2)));
    step(
        &mut dp,
        "udp idle past the timeout: expired",
        &u.frame(),
        &fwd_to(&cfg, &uvip, &u, ring, Counter::FlowExpired),
    );
    assert_eq!(dp.flow_entry(&key).map(|e| e.backend_id), Some(ring));
    assert!(near(dp.flow_seen(&key)), "the new entry is stamped");

    // An unstamped entry (written by the agent, or before the timeout was set) is honoured and
    // stamped by its first packet.
    dp.set_flow_entry(&key, other);
    assert_eq!(dp.flow_seen(&key), 0);
    step(
        &mut dp,
        "unstamped udp entry: hit",
        &u.frame(),
        &fwd_to(&cfg, &uvip, &u, other, Counter::FlowHit),
    );
    assert!(near(dp.flow_seen(&key)));

    // TCP entries never expire, whatever their stamp.
    let t = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_ACK);
    let tring = tvip.pool.choose(t.hash(cfg.hash_seed, false));
    let tother = *tvip.pool.ids.iter().find(|&&i| i != tring).unwrap();
    dp.set_flow_entry(&t.flow_key(), tother);
    assert!(dp.set_flow_seen(&t.flow_key(), stamp_ago(limit + 2)));
    step(
        &mut dp,
        "tcp entry with an old stamp: hit",
        &t.frame(),
        &fwd_to(&cfg, &tvip, &t, tother, Counter::FlowHit),
    );

    // Timeout off: an old UDP stamp is honoured.
    let off = LbConfig {
        udp_idle_ticks: 0,
        ..cfg
    };
    dp.set_config(off);
    dp.set_flow_entry(&key, other);
    assert!(dp.set_flow_seen(&key, stamp_ago(limit + 2)));
    step(
        &mut dp,
        "udp timeout off: old stamp is a hit",
        &u.frame(),
        &fwd_to(&off, &uvip, &u, other, Counter::FlowHit),
    );
}

/// A slot whose fields do not match its seal (two CPUs wrote it at once) is no hit: the flow
/// takes the ring's choice, which overwrites the same slot.
#[test]
fn flow_table_torn_slot_is_a_miss() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let ack = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_ACK);
    let key = ack.flow_key();
    let a = vip.pool.choose(ack.hash(cfg.hash_seed, false));
    let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
    dp.set_flow_entry(&key, b);
    let f = ack.frame();
    step(
        &mut dp,
        "pinned",
        &f,
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowHit),
    );
    // Another writer's backend id under this writer's seal.
    let (index, mut set, tag) = dp.flow_set_of(&key);
    let slot = set
        .ways
        .iter_mut()
        .find(|s| s.keyed(&key, tag))
        .expect("the flow's slot");
    slot.backend_id = a;
    dp.write_flow_set(index, &set);
    assert_eq!(dp.flow_entry(&key), None, "a torn slot is no entry");
    step(
        &mut dp,
        "torn slot: the ring decides",
        &f,
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowMiss),
    );
    assert_eq!(dp.flow_entry(&key).map(|e| e.backend_id), Some(a));
    let (_, set, _) = dp.flow_set_of(&key);
    assert_eq!(
        set.ways.iter().filter(|s| s.key == key).count(),
        1,
        "the flow's own slot was rewritten"
    );
}

/// One flow table for all CPUs: a flow whose packets arrive on different CPUs (no RSS, as on
/// a veth) keeps the backend its first packet got, even after the ring changed.
#[test]
fn flow_table_is_shared_by_every_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "this test needs two CPUs (found {cpus})");
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let syn = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_SYN);
    let ack = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_ACK);
    let a = vip.pool.choose(syn.hash(cfg.hash_seed, false));
    {
        let _pin = PinCpu::to(0);
        step(
            &mut dp,
            "SYN on CPU 0",
            &syn.frame(),
            &fwd_to(&cfg, &vip, &syn, a, Counter::FlowSyn),
        );
    }
    // The ring now sends the flow elsewhere; its entry still decides.
    let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
    dp.fill_ring(vip.index, |_| b);
    let _pin = PinCpu::to(1);
    step(
        &mut dp,
        "ACK on CPU 1",
        &ack.frame(),
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowHit),
    );
}

#[test]
fn flow_table_stickiness() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let other_vip = Vip::new(VIP4, 81, PROTO_TCP, MODE_IPIP, 1, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone(), other_vip.clone()])(&mut dp);
    let ack = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_ACK);
    let syn = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_SYN);
    let synack_like = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_SYN | TCP_ACK);
    let fin = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_FIN | TCP_ACK);
    let key = ack.flow_key();
    let hash = ack.hash(cfg.hash_seed, false);
    let slot = ring_slot(hash);
    let a = vip.pool.choose(hash);
    let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
    let entry = |dp: &mut Datapath| dp.flow_entry(&key).map(|e| e.backend_id);
    let f = |p: &Packet| p.frame();

    assert_eq!(entry(&mut dp), None);
    step(
        &mut dp,
        "miss: ring choice inserted",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowMiss),
    );
    assert_eq!(entry(&mut dp), Some(a));
    step(
        &mut dp,
        "hit",
        &f(&fin),
        &fwd_to(&cfg, &vip, &fin, a, Counter::FlowHit),
    );

    dp.set_slot(vip.index, slot, b);
    step(
        &mut dp,
        "ring changed: non-SYN keeps its backend",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowHit),
    );
    step(
        &mut dp,
        "SYN|ACK is not a SYN: keeps its backend",
        &f(&synack_like),
        &fwd_to(&cfg, &vip, &synack_like, a, Counter::FlowHit),
    );
    step(
        &mut dp,
        "SYN takes the new ring choice",
        &f(&syn),
        &fwd_to(&cfg, &vip, &syn, b, Counter::FlowSyn),
    );
    assert_eq!(entry(&mut dp), Some(b), "SYN rewrites the entry");
    step(
        &mut dp,
        "after SYN the flow sticks to the new backend",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowHit),
    );

    // Entry -> a again; a DRAINING keeps it.
    dp.set_flow_entry(&key, a);
    let mut draining = vip.pool.backend(a);
    draining.state = BACKEND_DRAINING;
    dp.set_backend(a, draining);
    let mut exp = fwd_to(&cfg, &vip, &ack, a, Counter::FlowHit);
    if let Out::Exact(o) = &mut exp.output {
        *o = expect::forwarded(
            &f(&ack),
            &cfg,
            &draining,
            vip.mode,
            ack.entropy(cfg.hash_seed),
        );
    }
    step(&mut dp, "DRAINING backend keeps its flows", &f(&ack), &exp);
    assert_eq!(entry(&mut dp), Some(a));

    // a DOWN: re-hash to the ring (b), entry overwritten.
    let mut down = vip.pool.backend(a);
    down.state = BACKEND_DOWN;
    dp.set_backend(a, down);
    step(
        &mut dp,
        "DOWN backend: re-hash",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowRehash),
    );
    assert_eq!(entry(&mut dp), Some(b), "re-hash overwrites the entry");

    // Entry written for a previous holder of the id (the id was reallocated since, here to
    // another VIP: its generation moved on): re-hash, never a forward to the new holder.
    let foreign = other_vip.pool.ids[0];
    let current = dp.backend(foreign).generation;
    dp.set_flow_entry_generation(&key, foreign, current.wrapping_add(1000));
    step(
        &mut dp,
        "entry of a recycled backend id (stale generation): re-hash",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowRehash)
            .backend(foreign, TrafficStats::new(0, 0, 0, 0)),
    );
    assert_eq!(entry(&mut dp), Some(b));

    // Entry names an empty backend id: re-hash.
    dp.set_flow_entry(&key, 60);
    step(
        &mut dp,
        "entry names an empty backend: re-hash",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowRehash),
    );

    // UDP flows stick too (no SYN concept).
    let uvip = Vip::new(VIP6, 53, PROTO_UDP, MODE_GUE, 2, false);
    uvip.install(&mut dp);
    let u = Packet::udp(CLIENT6, 5353, VIP6, 53);
    let uh = u.hash(cfg.hash_seed, false);
    let ua = uvip.pool.choose(uh);
    let ub = *uvip.pool.ids.iter().find(|&&i| i != ua).unwrap();
    step(
        &mut dp,
        "udp miss",
        &f(&u),
        &fwd_to(&cfg, &uvip, &u, ua, Counter::FlowMiss),
    );
    dp.fill_ring(uvip.index, |_| ub);
    step(
        &mut dp,
        "udp hit after ring change",
        &f(&u),
        &fwd_to(&cfg, &uvip, &u, ua, Counter::FlowHit),
    );
    assert_eq!(dp.flow_entry(&u.flow_key()).map(|e| e.backend_id), Some(ua));
}

#[test]
fn source_affinity() {
    let cfg = base_config();
    let mut cases = Vec::new();
    for (v4, mode) in [(true, MODE_GUE), (false, MODE_IPIP), (true, MODE_DSR_L2)] {
        let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
        let vip = Vip::new(vaddr, 443, PROTO_TCP, mode, 4, v4).flags(VIP_F_SRC_AFFINITY);
        let mut dp = Datapath::new();
        setup(cfg, &[vip.clone()])(&mut dp);
        let (_, w) = lb_common::addr::to_words(ip(client));
        let h = if v4 {
            lb_common::hash::src_hash_v4(cfg.hash_seed, w[0])
        } else {
            lb_common::hash::src_hash_v6(cfg.hash_seed, &w)
        };
        let slot = ring_slot(h);
        let id = vip.pool.owner(slot);
        assert_eq!(dp.slot(vip.index, slot), id);
        for sport in [1000u16, 2000, 3000, 65535] {
            let p = Packet::tcp(client, sport, vaddr, 443, TCP_SYN);
            assert_eq!(p.hash(cfg.hash_seed, true), h);
            step(
                &mut dp,
                &format!("{} sport {sport}", fam(v4)),
                &p.frame(),
                &{
                    let mut e = fwd_to(&cfg, &vip, &p, id, Counter::FlowSyn);
                    // Stats accumulate across the steps: check only the global counters here.
                    e.vips.clear();
                    e.backends.clear();
                    e
                },
            );
            assert_eq!(dp.flow_entry(&p.flow_key()).map(|e| e.backend_id), Some(id));
        }
        // A different client lands elsewhere by its own source hash.
        let other = if v4 {
            "198.51.100.200"
        } else {
            "2001:db8:c::200"
        };
        let p = Packet::tcp(other, 1000, vaddr, 443, TCP_ACK);
        cases.push(case(
            format!("{} other client, source hash", fam(v4)),
            setup(cfg, &[vip.clone()]),
            p.frame(),
            fwd(&cfg, &vip, &p, Counter::FlowMiss),
        ));
    }
    run_table(cases);
}

#[test]
fn stats_accumulate_per_vip_and_backend() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_UDP, MODE_GUE, 3, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let mut per_backend = std::collections::HashMap::<u32, TrafficStats>::new();
    let mut total = TrafficStats::default();
    for i in 0..40u16 {
        let p = Packet::udp(CLIENT4, 10_000 + i, VIP4, 80).payload_len(usize::from(i));
        let id = vip.pool.choose(p.hash(cfg.hash_seed, false));
        let (v, _) = dp.run(&p.frame());
        assert_eq!(v, XDP_TX);
        let len = accounted_bytes(&p.frame());
        for s in [per_backend.entry(id).or_default(), &mut total] {
            s.packets += 1;
            s.bytes += len;
            s.new_flows += 1;
        }
    }
    assert_eq!(dp.vip_stats(3), total);
    for (id, s) in &per_backend {
        assert_eq!(dp.backend_stats(*id), *s, "backend {id}");
    }
    assert!(
        per_backend.len() > 1,
        "40 flows spread over several backends"
    );
    let c = dp.counters();
    assert_eq!(c[Counter::Tx as usize], 40);
    assert_eq!(c[Counter::FlowMiss as usize], 40);
    assert_eq!(dp.flow_count(), 40);
}
