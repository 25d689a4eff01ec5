//! Flow continuity's part of `xlb status`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuityStatus {
    pub listen: SocketAddr,
    /// This node's exceptions at the last scan (flows that no longer follow the ring).
    pub own_exceptions: u64,
    /// Milliseconds since that scan, and how long it took.
    pub last_scan_ago_ms: Option<u64>,
    pub last_scan_took_ms: u64,
    /// Peers' exceptions held in the peer table.
    pub held: u64,
    /// Of those, the ones whose backend is not up here yet (not in the map until it is).
    #[serde(default)]
    pub pending: u64,
    /// Capacity of the peer table.
    pub capacity: u64,
    pub peers: Vec<PeerStatus>,
    /// Messages refused since start, by reason (only reasons that happened).
    pub rejected: Vec<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub addr: SocketAddr,
    /// Our connection to it is up (we can send our exceptions).
    pub connected: bool,
    /// Milliseconds since we last sent it a message / received one from it.
    pub last_sent_ago_ms: Option<u64>,
    pub last_received_ago_ms: Option<u64>,
    /// Exceptions in the last full set it acknowledged, and in total sent since start.
    pub acked_sync: Option<u64>,
    pub exceptions_sent: u64,
    /// Its exceptions we hold now, and received in total since start.
    pub held: u64,
    pub exceptions_received: u64,
}

fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 10_000 => format!("{ms}ms ago"),
        Some(ms) => format!("{}s ago", ms / 1000),
    }
}

impl ContinuityStatus {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "continuity: listening on {}; own exceptions {} (scan {}, took {}ms); peer \
             exceptions held {}/{} ({} waiting for their backend)",
            self.listen,
            self.own_exceptions,
            ago(self.last_scan_ago_ms),
            self.last_scan_took_ms,
            self.held,
            self.capacity,
            self.pending
        );
        for p in &self.peers {
            let _ = writeln!(
                out,
                "  peer {:<24} {:<12} sent {} ({} exceptions total, last acked sync {}), \
                 received {} ({} held, {} total)",
                p.addr.to_string(),
                if p.connected {
                    "connected"
                } else {
                    "DISCONNECTED"
                },
                ago(p.last_sent_ago_ms),
                p.exceptions_sent,
                p.acked_sync
                    .map_or_else(|| "none".into(), |s| s.to_string()),
                ago(p.last_received_ago_ms),
                p.held,
                p.exceptions_received,
            );
        }
        if !self.rejected.is_empty() {
            let list: Vec<String> = self
                .rejected
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            let _ = writeln!(out, "  rejected messages: {}", list.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_peers_and_rejections() {
        let s = ContinuityStatus {
            listen: "198.51.100.11:7946".parse().unwrap(),
            own_exceptions: 12,
            last_scan_ago_ms: Some(300),
            last_scan_took_ms: 4,
            held: 30,
            pending: 2,
            capacity: 262_144,
            peers: vec![PeerStatus {
                addr: "198.51.100.12:7946".parse().unwrap(),
                connected: false,
                last_sent_ago_ms: None,
                last_received_ago_ms: Some(25_000),
                acked_sync: None,
                exceptions_sent: 0,
                held: 30,
                exceptions_received: 30,
            }],
            rejected: vec![("bad_tag".into(), 3)],
        };
        let text = s.render();
        assert!(text.contains("own exceptions 12"), "{text}");
        assert!(text.contains("held 30/262144 (2 waiting"), "{text}");
        assert!(
            text.contains("198.51.100.12:7946") && text.contains("DISCONNECTED"),
            "{text}"
        );
        assert!(text.contains("received 25s ago"), "{text}");
        assert!(text.contains("rejected messages: bad_tag 3"), "{text}");
    }
}
