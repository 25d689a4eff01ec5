//! `xlb inspect explain`: which backend a flow goes to and which rule decided, replayed from
//! the maps the way the datapath decides (docs/datapath.md §3-§5).
//!
//! JSON: `{flow: {proto, src, dst}, config_ready, vip, vip_lookup, vip_index, mode, flags, seed,
//! hash_input, hash, slot, ring_backend, flow_entry, rule, backend, verdict, counter, reason,
//! syn_note}`; backends are `{id, addr, state, vip_index}`, `flow_entry` is `{backend_id,
//! backend, valid, invalid_reason}`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use anyhow::bail;
use lb_common::{
    Backend, FlowKey,
    addr::{FAMILY_V4, FAMILY_V6, is_martian_source, to_words},
    hash::{flow_hash, ports_word, ring_slot},
    stats::Counter,
    values::{
        BACKEND_EMPTY, CONFIG_F_ANY_PORT_VIPS, CONFIG_F_PEER_FLOWS, CONFIG_F_READY, MODE_DSR_L2,
        MODE_GUE, MODE_IPIP, VIP_F_NO_BACKEND_PASS, VIP_F_SRC_AFFINITY,
    },
};
use serde::Serialize;

use super::ExplainArgs;
use super::common::{flags_text, write_json};
use super::snapshot::{Snapshot, backend_addr, mode_name, state_name};
use crate::cli::format::opt;
use crate::maps::MapStore;
use crate::model::Proto;

#[derive(Serialize)]
struct ExplainJson {
    flow: FlowTupleJson,
    config_ready: bool,
    vip: Option<String>,
    /// `exact_port` or `all_ports`.
    vip_lookup: Option<&'static str>,
    vip_index: Option<u32>,
    mode: Option<String>,
    flags: Vec<String>,
    seed: u32,
    /// `5-tuple` or `source address`.
    hash_input: Option<&'static str>,
    hash: Option<u32>,
    slot: Option<u32>,
    ring_backend: Option<BackendRefJson>,
    flow_entry: Option<FlowEntryJson>,
    /// `not_ready`, `not_a_vip`, `flow_hit`, `flow_rehash`, `flow_miss`, `flow_syn`,
    /// `flow_peer`.
    rule: &'static str,
    backend: Option<BackendRefJson>,
    /// `XDP_TX`, `XDP_PASS`, `XDP_DROP`.
    verdict: &'static str,
    /// The `stats` counter this packet bumps (besides `tx` for forwarded packets).
    counter: &'static str,
    reason: String,
    syn_note: Option<String>,
}

#[derive(Serialize)]
struct FlowTupleJson {
    proto: &'static str,
    src: SocketAddr,
    dst: SocketAddr,
}

#[derive(Serialize, Clone, PartialEq)]
struct BackendRefJson {
    id: u32,
    addr: Option<IpAddr>,
    state: String,
    vip_index: u32,
}

#[derive(Serialize)]
struct FlowEntryJson {
    backend_id: u32,
    backend: Option<BackendRefJson>,
    valid: bool,
    invalid_reason: Option<String>,
}

fn backend_ref(id: u32, b: &Backend) -> BackendRefJson {
    BackendRefJson {
        id,
        addr: backend_addr(b),
        state: state_name(b.state),
        vip_index: b.vip_index,
    }
}

fn describe(b: &BackendRefJson) -> String {
    match b.addr {
        Some(addr) => format!("backend {} {addr} ({})", b.id, b.state),
        None => format!("backend {} ({})", b.id, b.state),
    }
}

/// Outcome of the ring choice (docs/datapath.md §4).
enum RingChoice {
    Backend(BackendRefJson, Backend),
    NoBackend,
    BadBackend(u32, Backend),
}

pub(super) fn explain<S: MapStore>(
    store: &S,
    a: &ExplainArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (sfam, src) = to_words(a.src.ip());
    let (dfam, dst) = to_words(a.dst.ip());
    if sfam != dfam {
        bail!("source and destination must be of the same address family");
    }
    let config = store.config()?;
    let mut doc = ExplainJson {
        flow: FlowTupleJson {
            proto: a.proto.name(),
            src: a.src,
            dst: a.dst,
        },
        config_ready: config.flags & CONFIG_F_READY != 0,
        vip: None,
        vip_lookup: None,
        vip_index: None,
        mode: None,
        flags: Vec::new(),
        seed: config.hash_seed,
        hash_input: None,
        hash: None,
        slot: None,
        ring_backend: None,
        flow_entry: None,
        rule: "not_ready",
        backend: None,
        verdict: "XDP_PASS",
        counter: Counter::PassNotReady.name(),
        reason: String::new(),
        syn_note: None,
    };
    if !doc.config_ready {
        doc.reason = "the agent has not written a complete configuration (CONFIG_F_READY unset): \
                      every packet passes"
            .into();
        return explain_out(out, a, &doc);
    }
    let snap = Snapshot::read(store)?;
    if snap.is_vip_address(a.dst.ip())
        && (is_martian_source(sfam, &src) || snap.is_vip_address(a.src.ip()))
    {
        doc.rule = "martian_source";
        doc.verdict = "XDP_DROP";
        doc.counter = Counter::DropMartian.name();
        doc.reason = format!(
            "{} is no host's address (unspecified, loopback, multicast, broadcast, IPv4-mapped \
             or a VIP address of this LB): packets from it to a VIP address are dropped",
            a.src.ip()
        );
        return explain_out(out, a, &doc);
    }
    let Some((v, all_ports)) = snap.lookup(a.dst.ip(), a.dst.port(), a.proto) else {
        doc.rule = "not_a_vip";
        doc.counter = Counter::Pass.name();
        let any = config.flags & CONFIG_F_ANY_PORT_VIPS != 0;
        doc.reason = format!(
            "no VIP {}/{}{}",
            a.proto.name(),
            a.dst,
            if any {
                " and no all-ports VIP on that address"
            } else {
                " (all-ports lookup off: no all-ports VIP configured)"
            }
        );
        return explain_out(out, a, &doc);
    };
    let index = v.meta.index;
    doc.vip = Some(v.id.to_string());
    doc.vip_lookup = Some(if all_ports { "all_ports" } else { "exact_port" });
    doc.vip_index = Some(index);
    doc.mode = Some(mode_name(v.meta.mode));
    doc.flags = snap.flags(v);

    // Hash and ring choice.
    let seed = config.hash_seed;
    let affinity = v.meta.flags & VIP_F_SRC_AFFINITY != 0;
    let hash = flow_hash(
        seed,
        affinity,
        dfam,
        &src,
        &dst,
        ports_word(a.src.port().to_be(), a.dst.port().to_be()),
        a.proto.number(),
    );
    let slot = ring_slot(hash);
    doc.hash_input = Some(if affinity {
        "source address"
    } else {
        "5-tuple"
    });
    doc.hash = Some(hash);
    doc.slot = Some(slot);
    let ring = store.ring(index)?;
    let ring_id = ring.get(slot as usize).copied().unwrap_or(0);
    let choice = if ring_id == 0 {
        RingChoice::NoBackend
    } else {
        let b = store.backend(ring_id).unwrap_or_default();
        if b.state == BACKEND_EMPTY || b.vip_index != index {
            RingChoice::BadBackend(ring_id, b)
        } else {
            RingChoice::Backend(backend_ref(ring_id, &b), b)
        }
    };
    doc.ring_backend = match &choice {
        RingChoice::Backend(r, _) => Some(r.clone()),
        RingChoice::BadBackend(id, b) => Some(backend_ref(*id, b)),
        RingChoice::NoBackend => None,
    };

    // Flow table.
    let tcp_syn = a.syn && a.proto == Proto::Tcp;
    let mut picked: Option<(BackendRefJson, Backend)> = None;
    let key = FlowKey {
        src,
        dst,
        sport: a.src.port().to_be(),
        dport: a.dst.port().to_be(),
        proto: a.proto.number(),
        family: dfam,
        _pad: [0; 2],
    };
    if tcp_syn {
        doc.rule = "flow_syn";
        doc.reason = "TCP SYN: the ring choice is taken whatever the flow table holds".into();
    } else {
        match store.flow(&key)? {
            None => {
                doc.rule = "flow_miss";
                doc.reason = "no flow-table entry: new flow, ring choice (then remembered)".into();
            }
            Some(e) => {
                let b = store.backend(e.backend_id).ok();
                let invalid = match b {
                    None => Some(format!("backend id {} out of range", e.backend_id)),
                    Some(b) if b.state == BACKEND_EMPTY => {
                        Some("backend entry empty, backend removed".to_string())
                    }
                    Some(b) if !b.accepts_existing_flows() => {
                        Some(format!("backend {}", state_name(b.state)))
                    }
                    Some(b) if !e.honoured_by(&b) => Some(format!(
                        "backend id recycled (entry generation {}, backend now {})",
                        e.generation, b.generation
                    )),
                    Some(_) => None,
                };
                let bref = b.map(|b| backend_ref(e.backend_id, &b));
                doc.flow_entry = Some(FlowEntryJson {
                    backend_id: e.backend_id,
                    backend: bref.clone(),
                    valid: invalid.is_none(),
                    invalid_reason: invalid.clone(),
                });
                match (invalid, bref, b) {
                    (None, Some(r), Some(b)) => {
                        doc.rule = "flow_hit";
                        doc.reason = format!(
                            "flow-table entry honoured (backend {}, still this VIP's): the flow \
                             stays on its backend",
                            r.state
                        );
                        picked = Some((r, b));
                    }
                    (why, _, _) => {
                        doc.rule = "flow_rehash";
                        doc.reason = format!(
                            "flow-table entry not honoured ({}): re-hashed to the ring choice, \
                             entry overwritten",
                            why.unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
    // Flow continuity: before the ring, a flow the table does not honour takes a peer's
    // exception (docs/datapath.md §4).
    if picked.is_none() && !tcp_syn && config.flags & CONFIG_F_PEER_FLOWS != 0 {
        let held = store.peer_flow(&key)?;
        let b = held.and_then(|e| store.backend(e.backend_id).ok().map(|b| (e, b)));
        if let Some((e, b)) = b
            && e.honoured_by(&b)
            && b.vip_index == v.meta.index
        {
            let r = backend_ref(e.backend_id, &b);
            doc.rule = "flow_peer";
            doc.reason = format!(
                "{}; but a peer node keeps this flow on {} (its exception, flow continuity): \
                 that backend is taken and remembered",
                doc.reason.split(':').next().unwrap_or_default(),
                describe(&r)
            );
            picked = Some((r, b));
        }
    }
    if picked.is_none() {
        match &choice {
            RingChoice::Backend(r, b) => picked = Some((r.clone(), *b)),
            RingChoice::NoBackend => {
                let pass = v.meta.flags & VIP_F_NO_BACKEND_PASS != 0;
                doc.verdict = if pass { "XDP_PASS" } else { "XDP_DROP" };
                doc.counter = if pass {
                    Counter::PassNoBackend.name()
                } else {
                    Counter::DropNoBackend.name()
                };
                doc.reason += &format!("; ring slot {slot} is empty: the VIP has no backend");
            }
            RingChoice::BadBackend(id, b) => {
                doc.verdict = "XDP_DROP";
                doc.counter = Counter::DropBadBackend.name();
                doc.reason += &format!(
                    "; ring slot {slot} names backend {id}, which is {}",
                    if b.state == BACKEND_EMPTY {
                        "empty".to_string()
                    } else {
                        format!("VIP index {}'s", b.vip_index)
                    }
                );
            }
        }
    }
    if let Some((r, b)) = picked {
        // docs/datapath.md §5: an IPv4 outer header cannot carry an IPv6 VIP.
        let tunnel = v.meta.mode == MODE_IPIP || v.meta.mode == MODE_GUE;
        if !matches!(v.meta.mode, MODE_IPIP | MODE_GUE | MODE_DSR_L2)
            || (tunnel && b.family == FAMILY_V4 && dfam == FAMILY_V6)
        {
            doc.verdict = "XDP_DROP";
            doc.counter = Counter::DropUnsupported.name();
            doc.reason += &format!(
                "; mode {} cannot carry this flow to {}",
                mode_name(v.meta.mode),
                opt(r.addr)
            );
        } else {
            doc.verdict = "XDP_TX";
            doc.counter = match doc.rule {
                "flow_hit" => Counter::FlowHit.name(),
                "flow_rehash" => Counter::FlowRehash.name(),
                "flow_syn" => Counter::FlowSyn.name(),
                "flow_peer" => Counter::FlowPeer.name(),
                _ => Counter::FlowMiss.name(),
            };
        }
        doc.backend = Some(r);
    }
    if a.proto == Proto::Tcp && !tcp_syn {
        let ring_desc = match &doc.ring_backend {
            Some(r) if matches!(choice, RingChoice::Backend(..)) => describe(r),
            _ => "no usable backend (see ring)".into(),
        };
        let same = doc.backend.is_some() && doc.backend == doc.ring_backend;
        doc.syn_note = Some(format!(
            "a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: {}{}",
            ring_desc,
            if same { " (the same)" } else { "" }
        ));
    }
    explain_out(out, a, &doc)
}

fn explain_out(out: &mut dyn Write, a: &ExplainArgs, doc: &ExplainJson) -> anyhow::Result<()> {
    if a.output.json {
        return write_json(out, doc);
    }
    let mut lines: Vec<(&str, String)> = vec![(
        "flow",
        format!("{} {} -> {}", doc.flow.proto, doc.flow.src, doc.flow.dst),
    )];
    if let (Some(vip), Some(lookup)) = (&doc.vip, doc.vip_lookup) {
        lines.push((
            "vip",
            format!(
                "{vip} index {} mode {} flags {} ({} match)",
                opt(doc.vip_index),
                opt(doc.mode.clone()),
                flags_text(&doc.flags),
                lookup.replace('_', " ")
            ),
        ));
    }
    if let (Some(hash), Some(input)) = (doc.hash, doc.hash_input) {
        lines.push((
            "hash",
            format!("{hash:#010x} ({input}, seed {:#010x})", doc.seed),
        ));
    }
    if let Some(slot) = doc.slot {
        let target = match &doc.ring_backend {
            Some(r) => describe(r),
            None => "0 (empty)".into(),
        };
        lines.push(("ring", format!("slot {slot} -> {target}")));
    }
    if let Some(e) = &doc.flow_entry {
        let b = e.backend.as_ref().map_or_else(
            || format!("backend {} (out of range)", e.backend_id),
            describe,
        );
        let validity = match &e.invalid_reason {
            None => "valid".to_string(),
            Some(why) => format!("not valid: {why}"),
        };
        lines.push(("flow-table", format!("hit: {b}, {validity}")));
    } else if doc.rule == "flow_miss" {
        lines.push(("flow-table", "miss".into()));
    }
    lines.push(("rule", format!("{}: {}", doc.rule, doc.reason)));
    let verdict = match (doc.rule, &doc.backend, doc.verdict) {
        ("not_a_vip", _, _) => "not a VIP: XDP_PASS".to_string(),
        (_, Some(b), "XDP_TX") => format!("XDP_TX to {}", describe(b)),
        (_, _, v) => v.to_string(),
    };
    lines.push(("verdict", format!("{verdict}; counter {}", doc.counter)));
    if let Some(n) = &doc.syn_note {
        lines.push(("note", n.clone()));
    }
    let w = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    for (k, v) in lines {
        writeln!(out, "{k:<w$}  {v}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use lb_common::{
        FlowEntry,
        addr::to_words,
        hash::{flow_hash_v4, flow_hash_v6, ports_word, ring_slot, src_hash_v4},
        values::{BACKEND_DOWN, BACKEND_DRAINING, BACKEND_EMPTY, CONFIG_F_PEER_FLOWS},
    };

    use crate::cli::inspect::run;
    use crate::cli::inspect::snapshot::backend_addr;
    use crate::cli::inspect::test_support::{
        Shared, applied, flow_key, json, parse, pin, row, run_args, world, world_config,
        world_overrides,
    };
    use crate::maps::{FakeStore, MapStore};
    use crate::model::Proto;
    use crate::reconcile::{Overrides, Reconciler};
    use crate::test_fixtures::{SEED, config, net, vip};

    fn v4(s: &str) -> u32 {
        let (_, w) = to_words(s.parse().unwrap());
        w[0]
    }

    fn web_hash(src: &str, sport: u16) -> u32 {
        flow_hash_v4(
            SEED,
            v4(src),
            v4("203.0.113.10"),
            ports_word(sport.to_be(), 80u16.to_be()),
            Proto::Tcp.number(),
        )
    }

    #[test]
    fn explain_ring_choice_for_a_new_flow() {
        let w = world();
        let slot = ring_slot(web_hash("198.51.100.7", 40_000));
        let id = w.borrow().ring(1).unwrap()[slot as usize];
        let addr = backend_addr(&w.borrow().backends[id as usize]).unwrap();
        let args = ["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        tcp 198.51.100.7:40000 -> 203.0.113.10:80\n",
                "vip         tcp/203.0.113.10:80 index 1 mode ipip flags icmp-echo,fragments (exact port match)\n",
                "hash        0xc252daf9 (5-tuple, seed 0x00000007)\n",
                "ring        slot 6311 -> backend 6 198.51.100.4 (active)\n",
                "flow-table  miss\n",
                "rule        flow_miss: no flow-table entry: new flow, ring choice (then remembered)\n",
                "verdict     XDP_TX to backend 6 198.51.100.4 (active); counter flow_miss\n",
                "note        a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: backend 6 198.51.100.4 (active) (the same)\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["rule"], "flow_miss");
        assert_eq!(v["slot"], slot);
        assert_eq!(v["hash"], web_hash("198.51.100.7", 40_000));
        assert_eq!(v["hash_input"], "5-tuple");
        assert_eq!(v["backend"]["id"], id);
        assert_eq!(v["backend"]["addr"], addr.to_string());
        assert_eq!(v["ring_backend"], v["backend"]);
        assert_eq!(v["verdict"], "XDP_TX");
        assert_eq!(v["counter"], "flow_miss");
        assert!(v["flow_entry"].is_null());
        for f in [
            "flow",
            "config_ready",
            "vip",
            "vip_lookup",
            "vip_index",
            "mode",
            "flags",
            "seed",
            "reason",
            "syn_note",
        ] {
            assert!(v.get(f).is_some(), "{f}");
        }
    }

    #[test]
    fn explain_flow_table_hit_and_syn() {
        let w = world();
        let slot = ring_slot(web_hash("198.51.100.7", 40_000));
        let ring_id = w.borrow().ring(1).unwrap()[slot as usize];
        // Pin the flow to another active backend of the VIP.
        let pinned = if ring_id == 3 { 4 } else { 3 };
        pin(
            &w,
            "198.51.100.7:40000",
            "203.0.113.10:80",
            Proto::Tcp,
            pinned,
        );
        let args = ["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        tcp 198.51.100.7:40000 -> 203.0.113.10:80\n",
                "vip         tcp/203.0.113.10:80 index 1 mode ipip flags icmp-echo,fragments (exact port match)\n",
                "hash        0xc252daf9 (5-tuple, seed 0x00000007)\n",
                "ring        slot 6311 -> backend 6 198.51.100.4 (active)\n",
                "flow-table  hit: backend 3 198.51.100.1 (active), valid\n",
                "rule        flow_hit: flow-table entry honoured (backend active, still this VIP's): the flow stays on its backend\n",
                "verdict     XDP_TX to backend 3 198.51.100.1 (active); counter flow_hit\n",
                "note        a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: backend 6 198.51.100.4 (active)\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["rule"], "flow_hit");
        assert_eq!(v["counter"], "flow_hit");
        assert_eq!(v["backend"]["id"], pinned);
        assert_eq!(v["ring_backend"]["id"], ring_id);
        assert_eq!(v["flow_entry"]["valid"], true);
        // Draining keeps the flow.
        w.borrow_mut().backends[pinned as usize].state = BACKEND_DRAINING;
        let v = json(&w, &args);
        assert_eq!(
            (v["rule"].as_str(), v["backend"]["id"].as_u64()),
            (Some("flow_hit"), Some(u64::from(pinned)))
        );
        // A SYN ignores the entry.
        let mut syn = args.to_vec();
        syn.push("--syn");
        let v = json(&w, &syn);
        assert_eq!(v["rule"], "flow_syn");
        assert_eq!(v["counter"], "flow_syn");
        assert_eq!(v["backend"]["id"], ring_id);
        assert!(v["flow_entry"].is_null() && v["syn_note"].is_null());
    }

    #[test]
    fn explain_says_when_a_flow_follows_a_peers_exception() {
        let w = world();
        let slot = ring_slot(web_hash("198.51.100.7", 40_000));
        let ring_id = w.borrow().ring(1).unwrap()[slot as usize];
        let peer_id = if ring_id == 3 { 4 } else { 3 };
        let key = flow_key("198.51.100.7:40000", "203.0.113.10:80", Proto::Tcp);
        let generation = w.borrow().backends[peer_id as usize].generation;
        w.borrow_mut().peer_flows.insert(
            key,
            FlowEntry {
                backend_id: peer_id,
                generation,
            },
        );
        let args = ["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"];
        // Continuity off: the program never reads the peer table.
        let v = json(&w, &args);
        assert_eq!(
            (v["rule"].as_str(), v["backend"]["id"].as_u64()),
            (Some("flow_miss"), Some(u64::from(ring_id)))
        );
        w.borrow_mut().config.flags |= CONFIG_F_PEER_FLOWS;
        let v = json(&w, &args);
        assert_eq!(v["rule"], "flow_peer");
        assert_eq!(v["counter"], "flow_peer");
        assert_eq!(v["backend"]["id"], peer_id);
        assert_eq!(v["ring_backend"]["id"], ring_id);
        let text = run_args(&w, &args);
        assert!(
            text.contains(&format!(
                "flow_peer: no flow-table entry; but a peer node keeps this flow on backend \
                 {peer_id} "
            )) && text.contains("counter flow_peer"),
            "{text}"
        );
        // An exception the program would not honour (the backend is down here) is ignored.
        w.borrow_mut().backends[peer_id as usize].state = BACKEND_DOWN;
        assert_eq!(json(&w, &args)["rule"], "flow_miss");
    }

    #[test]
    fn explain_rehashes_a_flow_pinned_to_a_removed_backend() {
        let w = world();
        let slot = ring_slot(web_hash("198.51.100.7", 40_000));
        let gone = w.borrow().ring(1).unwrap()[slot as usize];
        let gone_addr = backend_addr(&w.borrow().backends[gone as usize]).unwrap();
        pin(
            &w,
            "198.51.100.7:40000",
            "203.0.113.10:80",
            Proto::Tcp,
            gone,
        );
        // The backend leaves the config: its entry is emptied, its slots move.
        let mut cfg = world_config();
        cfg.vips[1].backends.retain(|b| b.addr != gone_addr);
        let mut r = Reconciler::adopt(Shared(&w)).unwrap();
        r.apply(&cfg, &world_overrides(&cfg), &net(&cfg)).unwrap();
        drop(r);
        assert_eq!(w.borrow().backends[gone as usize].state, BACKEND_EMPTY);
        let now = w.borrow().ring(1).unwrap()[slot as usize];
        assert_ne!(now, gone);
        let args = ["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        tcp 198.51.100.7:40000 -> 203.0.113.10:80\n",
                "vip         tcp/203.0.113.10:80 index 1 mode ipip flags icmp-echo,fragments (exact port match)\n",
                "hash        0xc252daf9 (5-tuple, seed 0x00000007)\n",
                "ring        slot 6311 -> backend 4 198.51.100.2 (active)\n",
                "flow-table  hit: backend 6 (empty), not valid: backend entry empty, backend removed\n",
                "rule        flow_rehash: flow-table entry not honoured (backend entry empty, backend removed): re-hashed to the ring choice, entry overwritten\n",
                "verdict     XDP_TX to backend 4 198.51.100.2 (active); counter flow_rehash\n",
                "note        a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: backend 4 198.51.100.2 (active) (the same)\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["rule"], "flow_rehash");
        assert_eq!(v["counter"], "flow_rehash");
        assert_eq!(v["flow_entry"]["backend_id"], gone);
        assert_eq!(v["flow_entry"]["valid"], false);
        assert_eq!(v["backend"]["id"], now);
        assert_eq!(v["verdict"], "XDP_TX");
    }

    #[test]
    fn explain_source_affinity_hashes_the_client_address() {
        let w = world();
        let slot = ring_slot(src_hash_v4(SEED, v4("198.51.100.7")));
        let id = w.borrow().ring(2).unwrap()[slot as usize];
        assert!(id == 9 || id == 10, "only 9 and 10 are in the ring: {id}");
        for sport in ["40000", "50123"] {
            let src = format!("198.51.100.7:{sport}");
            let args = ["explain", src.as_str(), "203.0.113.20:443", "tcp"];
            let v = json(&w, &args);
            assert_eq!(v["hash_input"], "source address");
            assert_eq!(v["slot"], slot);
            assert_eq!(v["backend"]["id"], id);
            assert_eq!(v["flags"], serde_json::json!(["src-affinity", "fragments"]));
            let text = run_args(&w, &args);
            assert!(
                text.contains(&format!("ring        slot {slot} -> backend {id} ")),
                "{text}"
            );
            assert!(text.contains("(source address, seed 0x00000007)"), "{text}");
        }
    }

    #[test]
    fn explain_all_ports_vip() {
        let w = world();
        let args = ["explain", "192.0.2.50:5000", "203.0.113.10:5353", "udp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        udp 192.0.2.50:5000 -> 203.0.113.10:5353\n",
                "vip         udp/203.0.113.10:* index 0 mode ipip flags no-backend-pass,icmp-echo,fragments (all ports match)\n",
                "hash        0x80da8115 (5-tuple, seed 0x00000007)\n",
                "ring        slot 59 -> backend 1 198.51.100.11 (active)\n",
                "flow-table  miss\n",
                "rule        flow_miss: no flow-table entry: new flow, ring choice (then remembered)\n",
                "verdict     XDP_TX to backend 1 198.51.100.11 (active); counter flow_miss\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["vip"], "udp/203.0.113.10:*");
        assert_eq!(v["vip_lookup"], "all_ports");
        let h = flow_hash_v4(
            SEED,
            v4("192.0.2.50"),
            v4("203.0.113.10"),
            ports_word(5000u16.to_be(), 5353u16.to_be()),
            Proto::Udp.number(),
        );
        assert_eq!(v["slot"], ring_slot(h));
        assert!(v["syn_note"].is_null());
    }

    #[test]
    fn explain_non_vip_destinations_pass() {
        let w = world();
        for dst in ["203.0.113.99:80", "203.0.113.10:81"] {
            let args = ["explain", "198.51.100.7:40000", dst, "tcp"];
            let text = run_args(&w, &args);
            assert!(
                text.contains("not a VIP: XDP_PASS; counter pass\n"),
                "{text}"
            );
            let v = json(&w, &args);
            assert_eq!(v["rule"], "not_a_vip");
            assert_eq!(v["verdict"], "XDP_PASS");
            assert!(v["vip"].is_null() && v["backend"].is_null());
        }
        let text = run_args(
            &w,
            &["explain", "198.51.100.7:40000", "203.0.113.99:80", "tcp"],
        );
        assert_eq!(
            text,
            concat!(
                "flow     tcp 198.51.100.7:40000 -> 203.0.113.99:80\n",
                "rule     not_a_vip: no VIP tcp/203.0.113.99:80 and no all-ports VIP on that address\n",
                "verdict  not a VIP: XDP_PASS; counter pass\n",
            )
        );
        // Before the agent's first complete write, everything passes.
        let empty = RefCell::new(FakeStore::new(8, 64));
        let v = json(
            &empty,
            &["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"],
        );
        assert_eq!(
            (v["rule"].as_str(), v["counter"].as_str()),
            (Some("not_ready"), Some("pass_not_ready"))
        );
    }

    #[test]
    fn explain_martian_sources_are_dropped() {
        let w = world();
        for src in ["127.0.0.1:40000", "224.0.0.9:40000", "203.0.113.10:40000"] {
            let v = json(&w, &["explain", src, "203.0.113.10:80", "tcp"]);
            assert_eq!(
                (
                    v["rule"].as_str(),
                    v["verdict"].as_str(),
                    v["counter"].as_str()
                ),
                (
                    Some("martian_source"),
                    Some("XDP_DROP"),
                    Some("drop_martian")
                ),
                "{src}"
            );
        }
        // Only packets to a VIP address are the program's business.
        let v = json(
            &w,
            &["explain", "127.0.0.1:40000", "203.0.113.99:80", "tcp"],
        );
        assert_eq!(v["rule"], "not_a_vip");
    }

    #[test]
    fn ipv6_vips_and_flows() {
        let cfg = config(vec![vip(
            "2001:db8::10",
            443,
            Proto::Tcp,
            &[("2001:db8:1::1", 1), ("2001:db8:1::2", 1)],
        )]);
        let cell = applied(&cfg, &Overrides::default());
        let text = run_args(&cell, &["vips"]);
        assert_eq!(row(&text, &["tcp/[2001:db8::10]:443"])[1..3], ["0", "ipip"]);
        let (_, src) = to_words("2001:db8:2::7".parse().unwrap());
        let (_, dst) = to_words("2001:db8::10".parse().unwrap());
        let h = flow_hash_v6(
            SEED,
            &src,
            &dst,
            ports_word(40000u16.to_be(), 443u16.to_be()),
            6,
        );
        let id = cell.borrow().ring(0).unwrap()[ring_slot(h) as usize];
        let args = [
            "explain",
            "[2001:db8:2::7]:40000",
            "[2001:db8::10]:443",
            "tcp",
        ];
        let v = json(&cell, &args);
        assert_eq!(v["vip"], "tcp/[2001:db8::10]:443");
        assert_eq!(v["slot"], ring_slot(h));
        assert_eq!(v["backend"]["id"], id);
        pin(
            &cell,
            "[2001:db8:2::7]:40000",
            "[2001:db8::10]:443",
            Proto::Tcp,
            id,
        );
        let text = run_args(&cell, &["flows", "--vip", "tcp/[2001:db8::10]:443"]);
        assert_eq!(
            row(&text, &["tcp"])[1..4],
            [
                "[2001:db8:2::7]:40000",
                "[2001:db8::10]:443",
                "tcp/[2001:db8::10]:443"
            ]
        );
        let cmd = parse(&["explain", "198.51.100.7:1", "[2001:db8::10]:443", "tcp"]).unwrap();
        let err = run(&Shared(&cell), &cmd, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("same address family"), "{err}");
    }
}
