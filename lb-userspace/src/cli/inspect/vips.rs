//! `xlb inspect vips`: every VIP with its mode, flags, backend counts and traffic counters.
//!
//! JSON: `{"vips": [{vip, proto, addr, port, index, mode, flags, backends: {active, draining,
//! down}, packets, bytes, new_flows, drops}]}`. `vip` is `tcp/203.0.113.10:80` (port `*` = all
//! ports, `port` 0); `flags` is a list of `src-affinity`, `no-backend-pass`, `icmp-echo` (of the
//! address), `fragments` (receives the address's fragments of its protocol), `0x..` (unknown
//! bits).

use std::io::Write;
use std::net::IpAddr;

use lb_common::values::{BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING};
use serde::Serialize;

use super::VipsArgs;
use super::common::{flags_text, write_json};
use super::snapshot::{Snapshot, mode_name};
use crate::cli::format::{Align, Table};
use crate::maps::MapStore;

#[derive(Serialize)]
struct VipsJson {
    vips: Vec<VipJson>,
}

#[derive(Serialize, Default)]
struct StateCounts {
    active: u32,
    draining: u32,
    down: u32,
}

#[derive(Serialize)]
struct VipJson {
    vip: String,
    proto: &'static str,
    addr: IpAddr,
    port: u16,
    index: u32,
    mode: String,
    flags: Vec<String>,
    backends: StateCounts,
    packets: u64,
    bytes: u64,
    new_flows: u64,
    drops: u64,
}

pub(super) fn vips<S: MapStore>(
    store: &S,
    a: &VipsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let mut rows = Vec::new();
    for v in &snap.vips {
        let mut counts = StateCounts::default();
        for (_, b) in snap.backends_of(v.meta.index) {
            match b.state {
                BACKEND_ACTIVE => counts.active += 1,
                BACKEND_DRAINING => counts.draining += 1,
                BACKEND_DOWN => counts.down += 1,
                _ => {}
            }
        }
        let s = store.vip_stats(v.meta.index)?;
        rows.push(VipJson {
            vip: v.id.to_string(),
            proto: v.id.proto.name(),
            addr: v.id.addr,
            port: v.id.port,
            index: v.meta.index,
            mode: mode_name(v.meta.mode),
            flags: snap.flags(v),
            backends: counts,
            packets: s.packets,
            bytes: s.bytes,
            new_flows: s.new_flows,
            drops: s.drops,
        });
    }
    if a.output.json {
        return write_json(out, &VipsJson { vips: rows });
    }
    use Align::{Left as L, Right as R};
    let mut t = Table::new(&[
        ("VIP", L),
        ("INDEX", R),
        ("MODE", L),
        ("FLAGS", L),
        ("ACTIVE", R),
        ("DRAINING", R),
        ("DOWN", R),
        ("PACKETS", R),
        ("BYTES", R),
        ("NEWFLOWS", R),
        ("DROPS", R),
    ]);
    for r in rows {
        t.push(vec![
            r.vip,
            r.index.to_string(),
            r.mode,
            flags_text(&r.flags),
            r.backends.active.to_string(),
            r.backends.draining.to_string(),
            r.backends.down.to_string(),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.new_flows.to_string(),
            r.drops.to_string(),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use lb_common::TrafficStats;

    use crate::cli::inspect::test_support::{json, run_args, world};

    #[test]
    fn vips_table_golden() {
        let w = world();
        {
            let mut s = w.borrow_mut();
            s.vip_stats.insert(0, TrafficStats::new(12, 1_200, 3, 0));
            s.vip_stats
                .insert(1, TrafficStats::new(1_234_567, 987_654_321, 4_321, 17));
            s.vip_stats.insert(2, TrafficStats::new(5, 400, 5, 2));
        }
        let text = run_args(&w, &["vips"]);
        assert_eq!(
            text,
            concat!(
                "VIP                   INDEX  MODE  FLAGS                                ACTIVE  DRAINING  DOWN  PACKETS      BYTES  NEWFLOWS  DROPS\n",
                "udp/203.0.113.10:*        0  ipip  no-backend-pass,icmp-echo,fragments       2         0     0       12       1200         3      0\n",
                "tcp/203.0.113.10:80       1  ipip  icmp-echo,fragments                       4         0     0  1234567  987654321      4321     17\n",
                "tcp/203.0.113.20:443      2  gue   src-affinity,fragments                    2         1     1        5        400         5      2\n",
            )
        );
    }

    #[test]
    fn vips_json_has_the_documented_fields() {
        let w = world();
        w.borrow_mut()
            .vip_stats
            .insert(1, TrafficStats::new(10, 1000, 2, 1));
        let v = json(&w, &["vips"]);
        let vips = v["vips"].as_array().unwrap();
        assert_eq!(vips.len(), 3);
        let web = &vips[1];
        assert_eq!(web["vip"], "tcp/203.0.113.10:80");
        assert_eq!(web["proto"], "tcp");
        assert_eq!(web["addr"], "203.0.113.10");
        assert_eq!(web["port"], 80);
        assert_eq!(web["index"], 1);
        assert_eq!(web["mode"], "ipip");
        assert_eq!(web["flags"], serde_json::json!(["icmp-echo", "fragments"]));
        assert_eq!(
            web["backends"],
            serde_json::json!({"active": 4, "draining": 0, "down": 0})
        );
        for (f, want) in [
            ("packets", 10),
            ("bytes", 1000),
            ("new_flows", 2),
            ("drops", 1),
        ] {
            assert_eq!(web[f], want, "{f}");
        }
        assert_eq!(vips[0]["port"], 0);
        assert_eq!(vips[0]["vip"], "udp/203.0.113.10:*");
        assert_eq!(vips[2]["mode"], "gue");
        assert_eq!(
            vips[2]["backends"],
            serde_json::json!({"active": 2, "draining": 1, "down": 1})
        );
    }
}
