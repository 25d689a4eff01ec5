//! `xlb inspect flows`: flow-table entries with their VIP, backend, whether the datapath still
//! honours them, and where their backend came from (`ring`, or `peer`: a peer's exception,
//! flow continuity). `--peers` lists the peer-exception table instead (origin `held`).
//!
//! JSON: `{"limit": n, "more": bool, "flows": [{proto, src, dst, vip, backend_id, backend,
//! backend_state, valid, origin}]}`; `more` = more entries matched than printed.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use lb_common::{Backend, addr::from_words, flows::ORIGIN_PEER, values::BACKEND_EMPTY};
use serde::Serialize;

use super::FlowsArgs;
use super::common::write_json;
use super::snapshot::{Snapshot, backend_addr, proto_of, state_name};
use crate::cli::format::{Align, Table, opt};
use crate::maps::MapStore;

#[derive(Serialize)]
struct FlowsJson {
    limit: usize,
    more: bool,
    flows: Vec<FlowJson>,
}

#[derive(Serialize)]
struct FlowJson {
    proto: String,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    vip: Option<String>,
    backend_id: u32,
    backend: Option<IpAddr>,
    backend_state: String,
    valid: bool,
    /// `ring`, `peer` (flow-table entry taken from a peer's exception) or `held` (an entry of
    /// the peer-exception table, `--peers`).
    origin: &'static str,
}

/// A protocol number as printed: `tcp`, `udp`, or the number.
fn proto_name(number: u8) -> String {
    proto_of(number).map_or_else(|| number.to_string(), |p| p.name().to_string())
}

pub(super) fn flows<S: MapStore>(
    store: &S,
    a: &FlowsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let filtered = a.vip.is_some() || a.backend.is_some();
    if let Some(id) = &a.vip {
        snap.vip(id)?;
    }
    let limit = if filtered {
        usize::MAX
    } else {
        a.limit.saturating_add(1)
    };
    let raw = if a.peers {
        store.peer_flows(limit)?
    } else {
        store.flows(limit)?
    };
    let mut rows = Vec::new();
    for (k, e) in raw {
        let src = from_words(k.family, &k.src).map(|ip| SocketAddr::new(ip, u16::from_be(k.sport)));
        let dst = from_words(k.family, &k.dst).map(|ip| SocketAddr::new(ip, u16::from_be(k.dport)));
        let vip = match (dst, proto_of(k.proto)) {
            (Some(d), Some(p)) => snap.lookup(d.ip(), d.port(), p).map(|(v, _)| v),
            _ => None,
        };
        let b = match snap.backends.get(&e.backend_id) {
            Some(b) => *b,
            None => Backend::default(),
        };
        let valid = e.honoured_by(&b);
        let origin = if a.peers {
            "held"
        } else {
            match store.flow_origin(&k)? {
                Some(ORIGIN_PEER) => "peer",
                _ => "ring",
            }
        };
        if a.vip.is_some() && a.vip != vip.map(|v| v.id) {
            continue;
        }
        if a.backend.is_some() && a.backend != backend_addr(&b) {
            continue;
        }
        rows.push((
            (k.proto, dst, src),
            FlowJson {
                proto: proto_name(k.proto),
                src,
                dst,
                vip: vip.map(|v| v.id.to_string()),
                backend_id: e.backend_id,
                backend: backend_addr(&b),
                backend_state: if b.state != BACKEND_EMPTY
                    && vip.is_some_and(|v| v.meta.index != b.vip_index)
                {
                    format!("other-vip({})", b.vip_index)
                } else {
                    state_name(b.state)
                },
                valid,
                origin,
            },
        ));
    }
    rows.sort_by_key(|r| r.0);
    let more = rows.len() > a.limit;
    rows.truncate(a.limit);
    let flows: Vec<FlowJson> = rows.into_iter().map(|r| r.1).collect();
    if a.output.json {
        return write_json(
            out,
            &FlowsJson {
                limit: a.limit,
                more,
                flows,
            },
        );
    }
    use Align::{Left as L, Right as R};
    let mut t = Table::new(&[
        ("PROTO", L),
        ("SOURCE", L),
        ("DESTINATION", L),
        ("VIP", L),
        ("BACKEND", L),
        ("ID", R),
        ("STATE", L),
        ("VALID", L),
        ("ORIGIN", L),
    ]);
    for f in flows {
        t.push(vec![
            f.proto,
            opt(f.src),
            opt(f.dst),
            opt(f.vip),
            opt(f.backend),
            f.backend_id.to_string(),
            f.backend_state,
            if f.valid { "yes" } else { "no" }.into(),
            f.origin.into(),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use crate::cli::inspect::test_support::{flow_key, json, lines, pin, row, run_args, world};
    use crate::maps::FakeStore;
    use crate::model::Proto;

    fn pinned_world() -> RefCell<FakeStore> {
        let w = world();
        for i in 0..10u32 {
            let src = format!("198.51.100.{}:{}", 100 + i, 40_000 + i);
            pin(&w, &src, "203.0.113.10:80", Proto::Tcp, 3 + i % 4);
        }
        pin(&w, "192.0.2.50:5000", "203.0.113.10:5353", Proto::Udp, 1);
        pin(&w, "192.0.2.51:5000", "203.0.113.10:53", Proto::Udp, 2);
        pin(&w, "192.0.2.60:41000", "203.0.113.20:443", Proto::Tcp, 8);
        w
    }

    #[test]
    fn flows_filter_by_vip_backend_and_limit() {
        let w = pinned_world();
        let text = run_args(&w, &["flows"]);
        assert_eq!(lines(&text).len(), 1 + 13, "{text}");
        assert_eq!(
            lines(&text)[0].split_whitespace().collect::<Vec<_>>(),
            [
                "PROTO",
                "SOURCE",
                "DESTINATION",
                "VIP",
                "BACKEND",
                "ID",
                "STATE",
                "VALID",
                "ORIGIN"
            ]
        );

        let text = run_args(&w, &["flows", "--vip", "tcp/203.0.113.10:80"]);
        assert_eq!(lines(&text).len(), 1 + 10);
        assert!(
            lines(&text)[1..]
                .iter()
                .all(|l| l.contains(" tcp/203.0.113.10:80 "))
        );
        assert_eq!(
            row(&text, &["tcp", "198.51.100.105:40005"]),
            [
                "tcp",
                "198.51.100.105:40005",
                "203.0.113.10:80",
                "tcp/203.0.113.10:80",
                "198.51.100.2",
                "4",
                "active",
                "yes",
                "ring"
            ]
        );

        // All-ports VIP: both UDP flows, whatever their port.
        let text = run_args(&w, &["flows", "--vip", "udp/203.0.113.10:*"]);
        assert_eq!(lines(&text).len(), 1 + 2);
        assert_eq!(
            row(&text, &["udp", "192.0.2.50:5000"])[2..5],
            ["203.0.113.10:5353", "udp/203.0.113.10:*", "198.51.100.11"]
        );

        // backend 198.51.100.1 = id 3: flows 0, 4, 8.
        let text = run_args(&w, &["flows", "--backend", "198.51.100.1"]);
        assert_eq!(lines(&text).len(), 1 + 3);
        for src in [
            "198.51.100.100:40000",
            "198.51.100.104:40004",
            "198.51.100.108:40008",
        ] {
            assert_eq!(row(&text, &["tcp", src])[4..6], ["198.51.100.1", "3"]);
        }
        let text = run_args(
            &w,
            &[
                "flows",
                "--vip",
                "tcp/203.0.113.10:80",
                "--backend",
                "198.51.100.1",
                "--limit",
                "2",
            ],
        );
        assert_eq!(lines(&text).len(), 1 + 2);

        // A flow pinned to a down backend will re-hash.
        let text = run_args(&w, &["flows", "--backend", "198.51.100.22"]);
        assert_eq!(
            row(&text, &["tcp", "192.0.2.60:41000"])[5..],
            ["8", "down", "no", "ring"]
        );

        let text = run_args(&w, &["flows", "--limit", "5"]);
        assert_eq!(lines(&text).len(), 1 + 5);
        let v = json(&w, &["flows", "--limit", "5"]);
        assert_eq!(v["limit"], 5);
        assert_eq!(v["more"], true);
        assert_eq!(v["flows"].as_array().unwrap().len(), 5);
        let v = json(&w, &["flows", "--vip", "udp/203.0.113.10:*"]);
        assert_eq!(v["more"], false);
        // Sorted by protocol, destination, source: port 53 before 5353.
        assert_eq!(v["flows"][0]["dst"], "203.0.113.10:53");
        let f = &v["flows"][1];
        assert_eq!(
            *f,
            serde_json::json!({
                "proto": "udp", "src": "192.0.2.50:5000", "dst": "203.0.113.10:5353",
                "vip": "udp/203.0.113.10:*", "backend_id": 1, "backend": "198.51.100.11",
                "backend_state": "active", "valid": true, "origin": "ring"
            })
        );
    }

    #[test]
    fn flows_taken_from_peers_are_marked_and_the_peer_table_listed() {
        let w = pinned_world();
        let key = flow_key("192.0.2.50:5000", "203.0.113.10:5353", Proto::Udp);
        w.borrow_mut()
            .flow_origins
            .insert(key, lb_common::flows::ORIGIN_PEER);
        let text = run_args(&w, &["flows", "--vip", "udp/203.0.113.10:*"]);
        assert_eq!(
            row(&text, &["udp", "192.0.2.50:5000"]).last(),
            Some(&"peer")
        );
        assert_eq!(
            row(&text, &["udp", "192.0.2.51:5000"]).last(),
            Some(&"ring")
        );

        let held = w.borrow().flows[&key];
        w.borrow_mut().peer_flows.insert(key, held);
        let text = run_args(&w, &["flows", "--peers"]);
        assert_eq!(lines(&text).len(), 1 + 1, "{text}");
        assert_eq!(
            row(&text, &["udp", "192.0.2.50:5000"])[3..],
            [
                "udp/203.0.113.10:*",
                "198.51.100.11",
                "1",
                "active",
                "yes",
                "held"
            ]
        );
        assert_eq!(
            json(&w, &["flows", "--peers"])["flows"][0]["origin"],
            "held"
        );
    }
}
