//! The unit tests' world: a `MapStore` the tests and the reconciler share, a scripted
//! [`Pacer`], argument parsing as the binary does it, and the VIPs most tests inspect.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use lb_common::{
    Backend, FlowEntry, FlowKey, LbConfig, TrafficStats, VipKey, VipMeta, addr::to_words,
    stats::GlobalStats,
};
use serde_json::Value;

use super::{InspectCmd, Pacer, run_with};
use crate::maps::{FakeStore, MapStore, Result as MapResult};
use crate::model::{Config, ForwardMode, NoBackend, Proto};
use crate::reconcile::{Overrides, Reconciler};
use crate::test_fixtures::{config, net, vip};

/// A `MapStore` over a shared `FakeStore`, so a test pacer can change counters between the
/// samples of one `run_with` call, and the reconciler can fill the same store.
pub(super) struct Shared<'a>(pub(super) &'a RefCell<FakeStore>);

impl MapStore for Shared<'_> {
    fn max_vips(&self) -> u32 {
        self.0.borrow().max_vips()
    }
    fn max_backends(&self) -> u32 {
        self.0.borrow().max_backends()
    }
    fn config(&self) -> MapResult<LbConfig> {
        self.0.borrow().config()
    }
    fn set_config(&mut self, cfg: &LbConfig) -> MapResult<()> {
        self.0.borrow_mut().set_config(cfg)
    }
    fn vips(&self) -> MapResult<Vec<(VipKey, VipMeta)>> {
        self.0.borrow().vips()
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> MapResult<()> {
        self.0.borrow_mut().set_vip(key, meta)
    }
    fn remove_vip(&mut self, key: &VipKey) -> MapResult<()> {
        self.0.borrow_mut().remove_vip(key)
    }
    fn backend(&self, id: u32) -> MapResult<Backend> {
        self.0.borrow().backend(id)
    }
    fn set_backend(&mut self, id: u32, backend: &Backend) -> MapResult<()> {
        self.0.borrow_mut().set_backend(id, backend)
    }
    fn ring(&self, vip_index: u32) -> MapResult<Vec<u32>> {
        self.0.borrow().ring(vip_index)
    }
    fn set_ring_slots(&mut self, vip_index: u32, slots: &[(u32, u32)]) -> MapResult<()> {
        self.0.borrow_mut().set_ring_slots(vip_index, slots)
    }
    fn filter_words(&self) -> MapResult<Vec<u64>> {
        self.0.borrow().filter_words()
    }
    fn set_filter_word(&mut self, index: u32, word: u64) -> MapResult<()> {
        self.0.borrow_mut().set_filter_word(index, word)
    }
    fn global_stats(&self) -> MapResult<GlobalStats> {
        self.0.borrow().global_stats()
    }
    fn vip_stats(&self, vip_index: u32) -> MapResult<TrafficStats> {
        self.0.borrow().vip_stats(vip_index)
    }
    fn backend_stats(&self, id: u32) -> MapResult<TrafficStats> {
        self.0.borrow().backend_stats(id)
    }
    fn clear_vip_stats(&mut self, vip_index: u32) -> MapResult<()> {
        self.0.borrow_mut().clear_vip_stats(vip_index)
    }
    fn clear_backend_stats(&mut self, id: u32) -> MapResult<()> {
        self.0.borrow_mut().clear_backend_stats(id)
    }
    fn flows(&self, limit: usize) -> MapResult<Vec<(FlowKey, FlowEntry)>> {
        self.0.borrow().flows(limit)
    }
    fn flow_origin(&self, key: &FlowKey) -> MapResult<Option<u8>> {
        self.0.borrow().flow_origin(key)
    }
    fn peer_flows(&self, limit: usize) -> MapResult<Vec<(FlowKey, FlowEntry)>> {
        self.0.borrow().peer_flows(limit)
    }
    fn peer_flow(&self, key: &FlowKey) -> MapResult<Option<FlowEntry>> {
        self.0.borrow().peer_flow(key)
    }
    fn flow(&self, key: &FlowKey) -> MapResult<Option<FlowEntry>> {
        self.0.borrow().flow(key)
    }
}

/// Returns `elapsed` at every wait, after letting `step` change the store (call number
/// from 1).
pub(super) struct Script<'a> {
    store: &'a RefCell<FakeStore>,
    step: Step<'a>,
    calls: usize,
    elapsed: Duration,
}

pub(super) type Step<'a> = Box<dyn FnMut(&mut FakeStore, usize) + 'a>;

impl<'a> Script<'a> {
    pub(super) fn new(
        store: &'a RefCell<FakeStore>,
        step: impl FnMut(&mut FakeStore, usize) + 'a,
    ) -> Self {
        Self {
            store,
            step: Box::new(step),
            calls: 0,
            elapsed: Duration::from_secs(2),
        }
    }
}

impl Pacer for Script<'_> {
    fn wait(&mut self, _: Duration) -> Option<Duration> {
        self.calls += 1;
        (self.step)(&mut self.store.borrow_mut(), self.calls);
        Some(self.elapsed)
    }
}

#[derive(Parser)]
pub(super) struct TestCli {
    #[command(subcommand)]
    cmd: InspectCmd,
}

pub(super) fn parse(args: &[&str]) -> Result<InspectCmd, clap::Error> {
    TestCli::try_parse_from(std::iter::once("inspect").chain(args.iter().copied())).map(|c| c.cmd)
}

pub(super) fn run_script(
    store: &RefCell<FakeStore>,
    args: &[&str],
    pacer: &mut dyn Pacer,
) -> String {
    let cmd = parse(args).unwrap();
    let mut out = Vec::new();
    run_with(&Shared(store), &cmd, &mut out, pacer).unwrap();
    String::from_utf8(out).unwrap()
}

/// Runs a command whose waits change nothing.
pub(super) fn run_args(store: &RefCell<FakeStore>, args: &[&str]) -> String {
    run_script(store, args, &mut Script::new(store, |_, _| {}))
}

pub(super) fn json(store: &RefCell<FakeStore>, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = run_args(store, &args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The VIPs of most tests, as the reconciler writes them:
/// - index 0: `udp/203.0.113.10:*` (all ports, no-backend pass): backends 1, 2;
/// - index 1: `tcp/203.0.113.10:80` (echo on the address): backends 3..=6;
/// - index 2: `tcp/203.0.113.20:443` (gue, source affinity): backends 7 (drained),
///   8 (down), 9, 10.
pub(super) fn world_config() -> Config {
    let mut dns = vip(
        "203.0.113.10",
        0,
        Proto::Udp,
        &[("198.51.100.11", 1), ("198.51.100.12", 1)],
    );
    dns.no_backend = NoBackend::Pass;
    let mut web = vip(
        "203.0.113.10",
        80,
        Proto::Tcp,
        &[
            ("198.51.100.1", 1),
            ("198.51.100.2", 1),
            ("198.51.100.3", 1),
            ("198.51.100.4", 1),
        ],
    );
    web.icmp_echo = true;
    let mut tls = vip(
        "203.0.113.20",
        443,
        Proto::Tcp,
        &[
            ("198.51.100.21", 0),
            ("198.51.100.22", 1),
            ("198.51.100.23", 1),
            ("198.51.100.24", 1),
        ],
    );
    tls.mode = ForwardMode::Gue;
    tls.src_affinity = true;
    config(vec![dns, web, tls])
}

pub(super) fn world_overrides(cfg: &Config) -> Overrides {
    let mut o = Overrides::default();
    o.down
        .insert((cfg.vips[2].id, "198.51.100.22".parse().unwrap()));
    o
}

pub(super) fn world() -> RefCell<FakeStore> {
    let cfg = world_config();
    applied(&cfg, &world_overrides(&cfg))
}

/// A fresh 8-VIP, 64-backend store holding `cfg` as the reconciler writes it, every backend
/// resolved.
pub(super) fn applied(cfg: &Config, overrides: &Overrides) -> RefCell<FakeStore> {
    let cell = RefCell::new(FakeStore::new(8, 64));
    let mut r = Reconciler::adopt(Shared(&cell)).unwrap();
    r.apply(cfg, overrides, &net(cfg)).unwrap();
    drop(r);
    cell
}

pub(super) fn id_of(store: &RefCell<FakeStore>, addr: &str) -> u32 {
    let (_, w) = to_words(addr.parse().unwrap());
    let s = store.borrow();
    (1..64)
        .find(|id| s.backends[*id as usize].addr == w && s.backends[*id as usize].state != 0)
        .unwrap()
}

pub(super) fn flow_key(src: &str, dst: &str, proto: Proto) -> FlowKey {
    let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let (family, s) = to_words(src.ip());
    let (_, d) = to_words(dst.ip());
    FlowKey {
        src: s,
        dst: d,
        sport: src.port().to_be(),
        dport: dst.port().to_be(),
        proto: proto.number(),
        family,
        _pad: [0; 2],
    }
}

pub(super) fn pin(store: &RefCell<FakeStore>, src: &str, dst: &str, proto: Proto, backend_id: u32) {
    let generation = store.borrow().backends[backend_id as usize].generation;
    store.borrow_mut().flows.insert(
        flow_key(src, dst, proto),
        FlowEntry {
            backend_id,
            generation,
        },
    );
}

pub(super) fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// The data row of a table whose first columns match `prefix` (split on whitespace).
pub(super) fn row<'t>(text: &'t str, prefix: &[&str]) -> Vec<&'t str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() >= prefix.len() && cells[..prefix.len()] == *prefix)
        .unwrap_or_else(|| panic!("no row {prefix:?} in\n{text}"))
}

mod tests {
    use super::{id_of, world};
    use crate::cli::format::parse_vip;

    #[test]
    fn the_world_is_what_the_tests_assume() {
        let w = world();
        let s = w.borrow();
        let index = |v: &str| {
            let id = parse_vip(v).unwrap();
            s.vips[&id.map_key()].index
        };
        assert_eq!(index("udp/203.0.113.10:*"), 0);
        assert_eq!(index("tcp/203.0.113.10:80"), 1);
        assert_eq!(index("tcp/203.0.113.20:443"), 2);
        drop(s);
        assert_eq!(id_of(&w, "198.51.100.11"), 1);
        assert_eq!(id_of(&w, "198.51.100.1"), 3);
        assert_eq!(id_of(&w, "198.51.100.21"), 7);
        assert_eq!(id_of(&w, "198.51.100.24"), 10);
    }
}
