//! `xlb inspect backends`: backends with their map state, ring share, counters and rates.
//!
//! JSON: `{"interval_s": f64|null, "backends": [{vip, vip_index, addr, id, state, weight, slots,
//! share_pct, packets, bytes, new_flows, packets_per_s, bytes_per_s}]}`; `vip` is null for a
//! backend whose VIP index has no VIP entry, rates are null with `--no-rates`.

use std::collections::{BTreeMap, btree_map::Entry};
use std::io::Write;
use std::net::IpAddr;

use lb_common::{Backend, TrafficStats};
use serde::Serialize;

use super::common::{delta, share, write_json};
use super::snapshot::{Snapshot, backend_addr, state_name};
use super::{BackendsArgs, Pacer};
use crate::cli::format::{Align, Table, opt, rate};
use crate::maps::MapStore;

#[derive(Serialize)]
struct BackendsJson {
    interval_s: Option<f64>,
    backends: Vec<BackendRowJson>,
}

#[derive(Serialize)]
struct BackendRowJson {
    vip: Option<String>,
    vip_index: u32,
    addr: Option<IpAddr>,
    id: u32,
    state: String,
    /// Effective weight as the agent recorded it in the backend entry.
    weight: u32,
    slots: u32,
    share_pct: f64,
    packets: u64,
    bytes: u64,
    new_flows: u64,
    packets_per_s: Option<f64>,
    bytes_per_s: Option<f64>,
}

pub(super) fn backends<S: MapStore>(
    store: &S,
    a: &BackendsArgs,
    out: &mut dyn Write,
    pacer: &mut dyn Pacer,
) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let selected: Vec<(u32, Backend)> = match &a.vip {
        Some(id) => {
            let v = snap.vip(id)?;
            snap.backends_of(v.meta.index)
                .map(|(id, b)| (id, *b))
                .collect()
        }
        None => snap.backends.iter().map(|(id, b)| (*id, *b)).collect(),
    };
    let read = |sel: &[(u32, Backend)]| -> anyhow::Result<Vec<TrafficStats>> {
        Ok(sel
            .iter()
            .map(|(id, _)| store.backend_stats(*id))
            .collect::<Result<_, _>>()?)
    };
    let first = read(&selected)?;
    let (last, elapsed) = if a.no_rates {
        (first.clone(), None)
    } else {
        match pacer.wait(a.interval) {
            Some(e) => (read(&selected)?, Some(e)),
            None => (first.clone(), None),
        }
    };
    let mut slot_counts: BTreeMap<u32, BTreeMap<u32, u32>> = BTreeMap::new();
    let mut rows = Vec::new();
    for (i, (id, b)) in selected.iter().enumerate() {
        if let Entry::Vacant(e) = slot_counts.entry(b.vip_index) {
            e.insert(if snap.vip_by_index(b.vip_index).is_some() {
                crate::maglev::slot_counts(&store.ring(b.vip_index)?)
            } else {
                BTreeMap::new()
            });
        }
        let slots = slot_counts[&b.vip_index].get(id).copied().unwrap_or(0);
        let (s0, s1) = (first[i], last[i]);
        rows.push(BackendRowJson {
            vip: snap.vip_by_index(b.vip_index).map(|v| v.id.to_string()),
            vip_index: b.vip_index,
            addr: backend_addr(b),
            id: *id,
            state: state_name(b.state),
            weight: b.weight,
            slots,
            share_pct: share(slots),
            packets: s1.packets,
            bytes: s1.bytes,
            new_flows: s1.new_flows,
            packets_per_s: elapsed.map(|e| rate(delta(s0.packets, s1.packets), e)),
            bytes_per_s: elapsed.map(|e| rate(delta(s0.bytes, s1.bytes), e)),
        });
    }
    rows.sort_by(|x, y| {
        let vip_of = |r: &BackendRowJson| snap.vip_by_index(r.vip_index).map(|v| v.id);
        (vip_of(x), x.vip_index, x.addr, x.id).cmp(&(vip_of(y), y.vip_index, y.addr, y.id))
    });
    if a.output.json {
        return write_json(
            out,
            &BackendsJson {
                interval_s: elapsed.map(|e| e.as_secs_f64()),
                backends: rows,
            },
        );
    }
    use Align::{Left as L, Right as R};
    let mut cols = vec![
        ("VIP", L),
        ("BACKEND", L),
        ("ID", R),
        ("STATE", L),
        ("WEIGHT", R),
        ("SLOTS", R),
        ("SHARE%", R),
        ("PACKETS", R),
        ("BYTES", R),
        ("NEWFLOWS", R),
    ];
    if elapsed.is_some() {
        cols.extend([("PKT/S", R), ("BYTES/S", R)]);
    }
    let mut t = Table::new(&cols);
    for r in rows {
        let mut row = vec![
            r.vip.unwrap_or_else(|| format!("index:{}", r.vip_index)),
            opt(r.addr),
            r.id.to_string(),
            r.state,
            r.weight.to_string(),
            r.slots.to_string(),
            format!("{:.2}", r.share_pct),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.new_flows.to_string(),
        ];
        if let (Some(p), Some(b)) = (r.packets_per_s, r.bytes_per_s) {
            row.extend([format!("{p:.1}"), format!("{b:.1}")]);
        }
        t.push(row);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use lb_common::{TrafficStats, limits::RING_SIZE};

    use crate::cli::inspect::test_support::{
        Script, id_of, json, lines, row, run_args, run_script, world,
    };
    use crate::maglev::slot_counts;
    use crate::maps::MapStore;

    #[test]
    fn backends_show_ring_share_and_rates_from_two_samples() {
        let w = world();
        let b1 = id_of(&w, "198.51.100.1");
        w.borrow_mut()
            .backend_stats
            .insert(b1, TrafficStats::new(100, 15_000, 10, 0));
        // Between the two reads (2 s apart): +1000 packets, +150000 bytes.
        let mut pacer = Script::new(&w, |s, call| {
            assert_eq!(call, 1, "backends takes exactly two samples");
            s.backend_stats
                .insert(b1, TrafficStats::new(1_100, 165_000, 30, 0));
        });
        let text = run_script(&w, &["backends", "tcp/203.0.113.10:80"], &mut pacer);
        let ls = lines(&text);
        assert_eq!(
            ls[0].split_whitespace().collect::<Vec<_>>(),
            [
                "VIP", "BACKEND", "ID", "STATE", "WEIGHT", "SLOTS", "SHARE%", "PACKETS", "BYTES",
                "NEWFLOWS", "PKT/S", "BYTES/S"
            ]
        );
        assert_eq!(ls.len(), 1 + 4, "{text}");
        let ring = w.borrow().ring(1).unwrap();
        let counts = slot_counts(&ring);
        let mut total_share = 0.0;
        for (i, addr) in [
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.4",
        ]
        .iter()
        .enumerate()
        {
            let id = id_of(&w, addr);
            let slots = counts[&id];
            let share = format!("{:.2}", f64::from(slots) * 100.0 / f64::from(RING_SIZE));
            let r = row(&text, &["tcp/203.0.113.10:80", addr]);
            assert_eq!(
                r[2..7],
                [&id.to_string(), "active", "1", &slots.to_string(), &share],
                "{i}"
            );
            total_share += share.parse::<f64>().unwrap();
        }
        assert!((total_share - 100.0).abs() < 0.05, "{total_share}");
        let r = row(&text, &["tcp/203.0.113.10:80", "198.51.100.1"]);
        assert_eq!(r[7..], ["1100", "165000", "30", "500.0", "75000.0"]);
        let r = row(&text, &["tcp/203.0.113.10:80", "198.51.100.2"]);
        assert_eq!(r[7..], ["0", "0", "0", "0.0", "0.0"]);

        // All VIPs: drained and down backends hold no slots.
        let text = run_args(&w, &["backends", "--no-rates"]);
        assert_eq!(lines(&text).len(), 1 + 10);
        assert!(!lines(&text)[0].contains("PKT/S"));
        let r = row(&text, &["tcp/203.0.113.20:443", "198.51.100.21"]);
        assert_eq!(r[2..7], ["7", "draining", "0", "0", "0.00"]);
        let r = row(&text, &["tcp/203.0.113.20:443", "198.51.100.22"]);
        assert_eq!(r[2..7], ["8", "down", "1", "0", "0.00"]);

        let v = json(&w, &["backends", "tcp/203.0.113.20:443"]);
        assert_eq!(v["interval_s"], 2.0);
        let bs = v["backends"].as_array().unwrap();
        assert_eq!(bs.len(), 4);
        let b = &bs[2];
        for f in [
            "vip",
            "vip_index",
            "addr",
            "id",
            "state",
            "slots",
            "share_pct",
            "packets",
            "bytes",
            "new_flows",
            "packets_per_s",
            "bytes_per_s",
        ] {
            assert!(b.get(f).is_some(), "{f} missing: {b}");
        }
        assert_eq!(b["vip"], "tcp/203.0.113.20:443");
        assert_eq!(b["addr"], "198.51.100.23");
        assert_eq!(b["state"], "active");
        let share = b["share_pct"].as_f64().unwrap() + bs[3]["share_pct"].as_f64().unwrap();
        assert!((share - 100.0).abs() < 1e-9);
        let v = json(&w, &["backends", "--no-rates"]);
        assert!(v["interval_s"].is_null() && v["backends"][0]["packets_per_s"].is_null());
    }
}
