//! `xlb inspect ring`: one VIP's Maglev ring, its shares per backend against the expected
//! shares, and its imbalance.
//!
//! JSON: `{vip, vip_index, ring_size, empty_slots, empty_share_pct, active_backends, imbalance,
//! backends: [{addr, id, state, slots, share_pct, expected_share_pct}]}`.
//!
//! `--digest` JSON: `{vips: [{vip, vip_index, digest}]}`, sorted by VIP.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;

use lb_common::{
    limits::RING_SIZE,
    values::{BACKEND_ACTIVE, BACKEND_EMPTY},
};
use serde::Serialize;

use super::RingArgs;
use super::common::{share, write_json};
use super::snapshot::{Snapshot, backend_addr, state_name};
use crate::cli::format::{Align, Table, opt};
use crate::maps::MapStore;
use crate::ring_digest::{SlotOwner, ring_digest};

#[derive(Serialize)]
struct DigestsJson {
    vips: Vec<DigestJson>,
}

#[derive(Serialize)]
struct DigestJson {
    vip: String,
    vip_index: u32,
    digest: String,
}

/// `--digest`: one line per VIP. Slot owners come from the backend map through the same rule
/// the agent uses ([`SlotOwner::of`]), so both print the same digest for the same maps.
fn digests<S: MapStore>(store: &S, a: &RingArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let vips = match &a.vip {
        Some(id) => vec![snap.vip(id)?],
        None => snap.vips.iter().collect(),
    };
    let mut rows = Vec::new();
    for v in vips {
        let index = v.meta.index;
        let ring = store.ring(index)?;
        let d = ring_digest(snap.config.hash_seed, &ring, |id| {
            let entry = match snap.backends.get(&id) {
                Some(b) => Some(*b),
                None => store.backend(id).ok(),
            };
            SlotOwner::of(id, index, entry.as_ref())
        });
        rows.push(DigestJson {
            vip: v.id.to_string(),
            vip_index: index,
            digest: d.to_string(),
        });
    }
    if a.output.json {
        return write_json(out, &DigestsJson { vips: rows });
    }
    for r in rows {
        writeln!(out, "{} {}", r.vip, r.digest)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct RingJson {
    vip: String,
    vip_index: u32,
    ring_size: u32,
    empty_slots: u32,
    empty_share_pct: f64,
    active_backends: u32,
    imbalance: Option<f64>,
    backends: Vec<RingRowJson>,
}

#[derive(Serialize)]
struct RingRowJson {
    addr: Option<IpAddr>,
    id: u32,
    state: String,
    slots: u32,
    share_pct: f64,
    expected_share_pct: f64,
}

pub(super) fn ring<S: MapStore>(
    store: &S,
    a: &RingArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if a.digest {
        return digests(store, a, out);
    }
    let Some(vip) = &a.vip else {
        anyhow::bail!("a VIP is required without --digest");
    };
    let snap = Snapshot::read(store)?;
    let v = snap.vip(vip)?;
    let index = v.meta.index;
    let counts = crate::maglev::slot_counts(&store.ring(index)?);
    let empty = counts.get(&0).copied().unwrap_or(0);
    // The VIP's backends, plus any id its ring names that is not one of them (the datapath
    // drops those packets: DropBadBackend).
    let mut ids: BTreeSet<u32> = snap.backends_of(index).map(|(id, _)| id).collect();
    ids.extend(counts.keys().copied().filter(|id| *id != 0));
    let active = snap
        .backends_of(index)
        .filter(|(_, b)| b.state == BACKEND_ACTIVE)
        .count() as u32;
    // Expected shares follow the weights the agent recorded; entries without one (written by
    // something else) count as equal.
    let active_weight: u64 = snap
        .backends_of(index)
        .filter(|(_, b)| b.state == BACKEND_ACTIVE)
        .map(|(_, b)| u64::from(b.weight))
        .sum();
    let mut rows = Vec::new();
    for id in ids {
        let b = match snap.backends.get(&id) {
            Some(b) => *b,
            None => store.backend(id).unwrap_or_default(),
        };
        let state = if b.state != BACKEND_EMPTY && b.vip_index != index {
            format!("other-vip({})", b.vip_index)
        } else {
            state_name(b.state)
        };
        let slots = counts.get(&id).copied().unwrap_or(0);
        let expected = if b.state != BACKEND_ACTIVE || b.vip_index != index {
            0.0
        } else if active_weight == 0 {
            100.0 / f64::from(active)
        } else {
            100.0 * f64::from(b.weight) / active_weight as f64
        };
        rows.push(RingRowJson {
            addr: backend_addr(&b),
            id,
            state,
            slots,
            share_pct: share(slots),
            expected_share_pct: expected,
        });
    }
    rows.sort_by_key(|r| (r.addr, r.id));
    let holders: Vec<u32> = rows.iter().map(|r| r.slots).filter(|s| *s > 0).collect();
    let imbalance = (!holders.is_empty()).then(|| {
        let max = f64::from(*holders.iter().max().expect("non-empty"));
        let mean = f64::from(holders.iter().sum::<u32>()) / holders.len() as f64;
        max / mean
    });
    let doc = RingJson {
        vip: v.id.to_string(),
        vip_index: index,
        ring_size: RING_SIZE,
        empty_slots: empty,
        empty_share_pct: share(empty),
        active_backends: active,
        imbalance,
        backends: rows,
    };
    if a.output.json {
        return write_json(out, &doc);
    }
    writeln!(
        out,
        "{}  index {}  ring_size {}  empty_slots {} ({:.2}%)  active_backends {}  imbalance {}",
        doc.vip,
        doc.vip_index,
        doc.ring_size,
        doc.empty_slots,
        doc.empty_share_pct,
        doc.active_backends,
        opt(doc.imbalance.map(|i| format!("{i:.4}")))
    )?;
    use Align::{Left as L, Right as R};
    let mut t = Table::new(&[
        ("BACKEND", L),
        ("ID", R),
        ("STATE", L),
        ("SLOTS", R),
        ("SHARE%", R),
        ("EXPECTED%", R),
    ]);
    for r in doc.backends {
        t.push(vec![
            opt(r.addr),
            r.id.to_string(),
            r.state,
            r.slots.to_string(),
            format!("{:.2}", r.share_pct),
            format!("{:.2}", r.expected_share_pct),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use lb_common::{
        Backend, VipMeta,
        addr::to_words,
        limits::RING_SIZE,
        values::{BACKEND_ACTIVE, BACKEND_DOWN, CONFIG_F_READY, MODE_IPIP},
    };
    use serde_json::Value;

    use crate::cli::format::parse_vip;
    use crate::cli::inspect::test_support::{Shared, applied, json, run_args, world};
    use crate::maps::FakeStore;
    use crate::model::Proto;
    use crate::reconcile::{Overrides, Reconciler};
    use crate::test_fixtures::{SEED, config, net, vip};

    /// A VIP at index 3 with a hand-made ring: 30000 / 20000 / 15000 slots, 537 empty, and a
    /// down backend.
    fn lopsided() -> RefCell<FakeStore> {
        let mut s = FakeStore::new(4, 16);
        s.config.flags = CONFIG_F_READY;
        s.config.hash_seed = SEED;
        let id = parse_vip("tcp/192.0.2.10:80").unwrap();
        s.vips.insert(
            id.map_key(),
            VipMeta {
                index: 3,
                flags: 0,
                mode: MODE_IPIP,
                _pad: [0; 3],
            },
        );
        for (i, state) in [BACKEND_ACTIVE, BACKEND_ACTIVE, BACKEND_ACTIVE, BACKEND_DOWN]
            .into_iter()
            .enumerate()
        {
            let (family, addr) = to_words(format!("192.0.2.{}", 101 + i).parse().unwrap());
            s.backends[i + 1] = Backend {
                addr,
                family,
                state,
                vip_index: 3,
                ..Backend::default()
            };
        }
        let mut ring = vec![1u32; 30_000];
        ring.extend(std::iter::repeat_n(2, 20_000));
        ring.extend(std::iter::repeat_n(3, 15_000));
        ring.extend(std::iter::repeat_n(0, 537));
        assert_eq!(ring.len(), RING_SIZE as usize);
        s.rings.insert(3, ring);
        RefCell::new(s)
    }

    /// One field of every backend of a JSON answer.
    fn column<T>(v: &Value, key: &str, get: impl Fn(&Value) -> Option<T>) -> Vec<T> {
        let backends = v["backends"].as_array().unwrap();
        backends.iter().map(|b| get(&b[key]).unwrap()).collect()
    }

    #[test]
    fn ring_and_backends_use_the_recorded_weights() {
        let cfg = config(vec![vip(
            "192.0.2.10",
            80,
            Proto::Tcp,
            &[("198.51.100.1", 100), ("198.51.100.2", 300)],
        )]);
        let cell = applied(&cfg, &Overrides::default());
        let v = json(&cell, &["ring", "tcp/192.0.2.10:80"]);
        let expected = column(&v, "expected_share_pct", Value::as_f64);
        assert_eq!(expected, vec![25.0, 75.0]);
        // And the ring follows them (Maglev: within 1% of the weight share).
        let share = v["backends"][1]["share_pct"].as_f64().unwrap();
        assert!((share - 75.0).abs() < 0.75, "{share}");
        let b = json(&cell, &["backends", "--no-rates"]);
        let weights = column(&b, "weight", Value::as_u64);
        assert_eq!(weights, vec![100, 300]);
    }

    #[test]
    fn digest_lines_match_the_agents_digests_for_the_same_maps() {
        let cell = RefCell::new(FakeStore::new(8, 64));
        let cfg = config(vec![
            vip(
                "192.0.2.10",
                80,
                Proto::Tcp,
                &[("198.51.100.1", 100), ("198.51.100.2", 300)],
            ),
            vip("192.0.2.11", 53, Proto::Udp, &[("198.51.100.3", 1)]),
        ]);
        let mut r = Reconciler::adopt(Shared(&cell)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        let mut over = Overrides::default();
        over.down
            .insert((cfg.vips[0].id, "198.51.100.2".parse().unwrap()));
        r.apply(&cfg, &over, &net(&cfg)).unwrap();
        let agent = r.ring_digests();
        drop(r);
        let expected: String = agent
            .iter()
            .map(|(vip, d)| format!("{vip} {d}\n"))
            .collect();
        assert_eq!(agent.len(), 2);
        assert_eq!(run_args(&cell, &["ring", "--digest"]), expected);
        let one = run_args(&cell, &["ring", "--digest", "udp/192.0.2.11:53"]);
        assert_eq!(
            one,
            format!("udp/192.0.2.11:53 {}\n", agent[&cfg.vips[1].id])
        );
        let v = json(&cell, &["ring", "--digest"]);
        assert_eq!(v["vips"][0]["vip"], "tcp/192.0.2.10:80");
        assert_eq!(v["vips"][0]["digest"], agent[&cfg.vips[0].id].to_string());
        // A slot naming an empty backend entry is not the same ring.
        let free = (1..64u32)
            .find(|&id| cell.borrow().backends[id as usize] == Backend::default())
            .unwrap();
        let mut ring = cell.borrow().rings[&0].clone();
        ring[0] = free;
        cell.borrow_mut().rings.insert(0, ring);
        assert_ne!(run_args(&cell, &["ring", "--digest"]), expected);
    }

    #[test]
    fn ring_reports_shares_expected_shares_and_imbalance() {
        let s = lopsided();
        let text = run_args(&s, &["ring", "tcp/192.0.2.10:80"]);
        assert_eq!(
            text,
            concat!(
                "tcp/192.0.2.10:80  index 3  ring_size 65537  empty_slots 537 (0.82%)  active_backends 3  imbalance 1.3846\n",
                "BACKEND      ID  STATE   SLOTS  SHARE%  EXPECTED%\n",
                "192.0.2.101   1  active  30000   45.78      33.33\n",
                "192.0.2.102   2  active  20000   30.52      33.33\n",
                "192.0.2.103   3  active  15000   22.89      33.33\n",
                "192.0.2.104   4  down        0    0.00       0.00\n",
            )
        );
        let v = json(&s, &["ring", "tcp/192.0.2.10:80"]);
        assert_eq!(v["vip"], "tcp/192.0.2.10:80");
        assert_eq!(v["vip_index"], 3);
        assert_eq!(v["ring_size"], 65537);
        assert_eq!(v["empty_slots"], 537);
        assert_eq!(v["active_backends"], 3);
        let imbalance = v["imbalance"].as_f64().unwrap();
        assert!((imbalance - 30_000.0 / (65_000.0 / 3.0)).abs() < 1e-12);
        let b = &v["backends"][0];
        assert_eq!(b["addr"], "192.0.2.101");
        assert_eq!(b["id"], 1);
        assert_eq!(b["slots"], 30000);
        assert!((b["share_pct"].as_f64().unwrap() - 3_000_000.0 / 65537.0).abs() < 1e-9);
        assert!((b["expected_share_pct"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(v["backends"][3]["expected_share_pct"], 0.0);

        // A Maglev ring of equal weights is balanced within a slot or so.
        let w = world();
        let v = json(&w, &["ring", "tcp/203.0.113.10:80"]);
        assert_eq!(v["empty_slots"], 0);
        assert_eq!(v["active_backends"], 4);
        assert!(v["imbalance"].as_f64().unwrap() < 1.001, "{v}");
    }
}
