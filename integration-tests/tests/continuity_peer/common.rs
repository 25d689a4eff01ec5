//! What both suites share: the agents' configs, the exceptions a peer sends, the library's
//! sender run from a test namespace, and the measurements (metrics here; API latency, RSS and
//! CPU from the test kit's `testbed::probe`).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::MapData;
use lb_common::map_names;
use lb_userspace::api::StatusReport;
use lb_userspace::continuity::channel::{ChannelMonitor, PeerKey, Sender, SenderConfig, SyncSet};
use lb_userspace::continuity::status::ContinuityStatus;
use lb_userspace::continuity::wire::{ExceptionGroup, FlowRef, VipRef};
use lb_userspace::maps::mmap::FlowTable;
use xlb_testkit::netns::enter_named;
use xlb_testkit::testbed::peers::{PeerBed, PeerNode};
use xlb_testkit::testbed::{Mode, VipSpec};

pub const CONTINUITY_PORT: u16 = 7946;
pub const METRICS_PORT: u16 = 9464;
/// The group's key (any text of at least 32 bytes), and one that is not.
pub const KEY: &str = "continuity-test-key-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const WRONG_KEY: &str = "continuity-test-key-ffffffffffffffffffffffffffffffff";

pub fn xlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xlb-under-test"))
}

/// The VIP every node serves: ipip, TCP port 80, every backend of the bed, no health check
/// (the backends run no server; they are up as long as they answer ARP).
pub fn vip() -> Vec<VipSpec> {
    vec![VipSpec::tcp(Mode::Ipip, false).health("")]
}

/// `text` with its only `from` replaced by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in the config:\n{text}"
    );
    text.replace(from, to)
}

/// Node `i`'s config: a flow table of 262,144 entries (room for 100k flows with a low load),
/// metrics on the loopback of the node's namespace, and `continuity` appended.
pub fn node_config(bed: &PeerBed, i: usize, vips: &[VipSpec], continuity: &str) -> String {
    let text = bed.node_config(i, "", vips);
    let text = replace_once(&text, "flow-table-size = 65536", "flow-table-size = 262144");
    let text = replace_once(
        &text,
        "metrics-listen = \"off\"",
        &format!("metrics-listen = \"127.0.0.1:{METRICS_PORT}\""),
    );
    format!("{text}\n{continuity}")
}

/// A `[continuity]` section.
pub fn continuity_section(listen: SocketAddr, peers: &[SocketAddr], key: &Path) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[continuity]\nlisten = \"{listen}\"\npeers = [{}]\nkey-file = \"{}\"\nrefresh = \"1s\"\n",
        peers.join(", "),
        key.display()
    )
}

/// The continuity part of a status (the agent runs with `[continuity]`).
pub fn continuity(r: &StatusReport) -> &ContinuityStatus {
    r.continuity
        .as_deref()
        .expect("no continuity in the status")
}

/// A full set of `n` exceptions (n <= 60,000) of the bed's VIP on `backend`, as a peer sends it.
pub fn exception_set(sync_id: u64, backend: &IpAddr, n: u16) -> Arc<SyncSet> {
    let v = vip()[0].id();
    let flows = (0..n)
        .map(|i| FlowRef {
            client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + (i % 200) as u8)),
            client_port: 1024 + i,
            dst_port: v.port,
        })
        .collect();
    let group = ExceptionGroup {
        vip: VipRef {
            addr: v.addr,
            port: v.port,
            proto: v.proto.number(),
        },
        backend: *backend,
        flows,
    };
    let (set, skipped) = SyncSet::encode(sync_id, &[group]);
    assert_eq!(skipped, 0);
    Arc::new(set)
}

/// Intact entries of the pinned peer-exception table under `maps`.
pub fn peer_map_count(maps: &Path) -> usize {
    let map = MapData::from_pin(maps.join(map_names::PEER_FLOWS)).expect("pinned peer table");
    FlowTable::named(map_names::PEER_FLOWS, map)
        .expect("peer table mapping")
        .count()
}

/// Runs `body` on a current-thread runtime in the namespace `ns` and returns its output.
pub fn run_in<T, F, Fut>(ns: &str, body: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    enter_named(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
    })
}

/// The library's sender (as an agent runs it) to `to`, offering `set`, for at most `limit`;
/// with `until_acked`, it stops as soon as the set is acknowledged. Returns its counters.
pub async fn run_sender(
    key: PeerKey,
    to: SocketAddr,
    node: String,
    set: Arc<SyncSet>,
    limit: Duration,
    until_acked: bool,
) -> Arc<ChannelMonitor> {
    let monitor = Arc::new(ChannelMonitor::new(&[to]));
    let sender = Sender::new(SenderConfig::new(to, node, None, key), Arc::clone(&monitor))
        .expect("the monitor knows the peer");
    let (tx, rx) = tokio::sync::watch::channel(Some(set));
    let run = sender.run(rx);
    tokio::pin!(run);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            () = &mut run => break,
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                if until_acked && monitor.peers()[0].last_acked.is_some() {
                    break;
                }
            }
        }
    }
    drop(tx);
    monitor
}

/// Polls `done` every 10 ms; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The agent's rejection counters (status), and what a test expects them to become.
pub struct Rejections {
    base: BTreeMap<String, u64>,
    /// At least this many more, per reason.
    exact: BTreeMap<String, u64>,
    /// Beyond those, this many more (in any reason), inclusive range.
    any: (u64, u64),
}

fn rejection_counts(n: &PeerNode) -> BTreeMap<String, u64> {
    continuity(&n.status()).rejected.iter().cloned().collect()
}

impl Rejections {
    pub fn read(n: &PeerNode) -> Self {
        Self {
            base: rejection_counts(n),
            exact: BTreeMap::new(),
            any: (0, 0),
        }
    }

    pub fn add(&mut self, reason: &str, n: u64) {
        *self.exact.entry(reason.to_owned()).or_default() += n;
    }

    pub fn add_any(&mut self, n: u64) {
        self.add_any_range(n, n);
    }

    pub fn add_any_range(&mut self, lo: u64, hi: u64) {
        self.any.0 += lo;
        self.any.1 += hi;
    }

    /// Changes since [`Rejections::read`], by reason.
    fn deltas(&self, now: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        now.iter()
            .map(|(r, n)| (r.clone(), n - self.base.get(r).copied().unwrap_or(0)))
            .filter(|(_, d)| *d > 0)
            .collect()
    }

    fn holds(&self, deltas: &BTreeMap<String, u64>) -> (bool, bool) {
        let each = self
            .exact
            .iter()
            .all(|(r, n)| deltas.get(r).copied().unwrap_or(0) >= *n);
        let total: u64 = deltas.values().sum();
        let want: u64 = self.exact.values().sum();
        (
            each && total >= want + self.any.0,
            total <= want + self.any.1,
        )
    }

    /// Waits (at most 5 s) until every expected rejection is counted, then checks that no
    /// more were (after 200 ms more, for stragglers).
    pub fn wait(&self, n: &PeerNode, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let deltas = self.deltas(&rejection_counts(n));
            let (reached, not_over) = self.holds(&deltas);
            assert!(
                not_over,
                "{what}: more rejections than expected: {deltas:?}, expected {:?} and {:?} more",
                self.exact, self.any
            );
            if reached {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: rejections {deltas:?}, expected {:?} and {:?} more",
                self.exact,
                self.any
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let deltas = self.deltas(&rejection_counts(n));
        assert!(
            self.holds(&deltas).1,
            "{what}: more rejections than expected: {deltas:?}, expected {:?} and {:?} more",
            self.exact,
            self.any
        );
    }
}

pub use xlb_testkit::testbed::probe::{
    ApiProbe, cpu_time, metric, percentile, rss_kib, scrape_metrics,
};

/// The `/metrics` text of the agent in namespace `ns`.
pub fn metrics(ns: &str) -> String {
    scrape_metrics(ns, SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)))
}
