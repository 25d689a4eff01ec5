//! Nodes that agree on config and health must agree on every ring digest, however they got
//! there: three reconcilers on in-memory maps, fed the same backends in different orders, with
//! backend ids made to differ, then the same changes applied in different interleavings.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::maps::{FakeStore, MapStore};
use crate::model::{BackendSpec, Config, Proto, VipId};
use crate::reconcile::{Overrides, Reconciler};
use crate::ring_digest::RingDigest;
use crate::test_fixtures::{config, net, vip};

/// One node: what its agent would hand the reconciler.
struct Node {
    cfg: Config,
    over: Overrides,
    r: Reconciler<FakeStore>,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Down(usize, &'static str),
    Up(usize, &'static str),
    Weight(usize, &'static str, u32),
    Add(usize, &'static str, u32),
    Remove(usize, &'static str),
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Op {
    fn vip(self) -> usize {
        match self {
            Op::Down(v, _)
            | Op::Up(v, _)
            | Op::Weight(v, _, _)
            | Op::Add(v, _, _)
            | Op::Remove(v, _) => v,
        }
    }
}

impl Node {
    /// The shared config with each VIP's backends in the order `order` gives.
    fn new(order: &[usize]) -> Node {
        let mut cfg = shared_config();
        for v in &mut cfg.vips {
            let sorted = v.backends.clone();
            v.backends = order.iter().map(|&i| sorted[i].clone()).collect();
        }
        let mut n = Node {
            cfg,
            over: Overrides::default(),
            r: Reconciler::adopt(FakeStore::new(8, 64)).unwrap(),
        };
        n.apply();
        n
    }

    fn vip(&self, i: usize) -> VipId {
        shared_config().vips[i].id
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Down(v, a) => {
                self.over.down.insert((self.vip(v), ip(a)));
            }
            Op::Up(v, a) => {
                self.over.down.remove(&(self.vip(v), ip(a)));
            }
            Op::Weight(v, a, w) => {
                self.over.weights.insert((self.vip(v), ip(a)), w);
            }
            Op::Add(v, a, w) => self.cfg.vips[v].backends.push(BackendSpec {
                addr: ip(a),
                weight: w,
                check_port: None,
            }),
            Op::Remove(v, a) => {
                self.cfg.vips[v].backends.retain(|b| b.addr != ip(a));
                self.over.weights.remove(&(self.vip(v), ip(a)));
            }
        }
    }

    fn apply(&mut self) {
        // Every backend reachable, as the fixture's `net` gives it (the neighbour view is part
        // of the health view the nodes share).
        let n = net(&self.cfg);
        self.r.apply(&self.cfg, &self.over, &n).unwrap();
    }

    fn digests(&self) -> BTreeMap<VipId, RingDigest> {
        self.r.ring_digests()
    }

    fn id_of(&self, addr: &str) -> u32 {
        self.r
            .backends()
            .iter()
            .find(|b| b.addr == ip(addr))
            .unwrap()
            .id
    }
}

fn shared_config() -> Config {
    config(vec![
        vip(
            "203.0.113.10",
            80,
            Proto::Tcp,
            &[
                ("198.51.100.1", 100),
                ("198.51.100.2", 100),
                ("198.51.100.3", 50),
                ("198.51.100.4", 100),
            ],
        ),
        vip(
            "2001:db8::10",
            53,
            Proto::Udp,
            &[
                ("2001:db8::1:1", 1),
                ("2001:db8::1:2", 1),
                ("2001:db8::1:3", 2),
                ("2001:db8::1:4", 1),
            ],
        ),
    ])
}

#[test]
fn three_nodes_agree_on_every_digest_whatever_the_order_and_ids() {
    let mut nodes = [
        Node::new(&[0, 1, 2, 3]),
        Node::new(&[3, 1, 0, 2]),
        Node::new(&[2, 3, 1, 0]),
    ];
    // Node 1 saw a backend come and go first: every id it hands out after is shifted.
    nodes[1].run(Op::Add(0, "198.51.100.9", 1));
    nodes[1].apply();
    nodes[1].run(Op::Remove(0, "198.51.100.9"));
    nodes[1].apply();
    // Node 2 saw two come and go, one per VIP.
    nodes[2].run(Op::Add(1, "2001:db8::1:9", 1));
    nodes[2].run(Op::Add(0, "198.51.100.8", 1));
    nodes[2].apply();
    nodes[2].run(Op::Remove(1, "2001:db8::1:9"));
    nodes[2].run(Op::Remove(0, "198.51.100.8"));
    nodes[2].apply();

    let steps: Vec<Vec<Op>> = vec![
        vec![],
        vec![
            Op::Down(0, "198.51.100.2"),
            Op::Weight(1, "2001:db8::1:3", 5),
        ],
        vec![
            Op::Add(0, "198.51.100.5", 100),
            Op::Weight(0, "198.51.100.1", 0),
            Op::Down(1, "2001:db8::1:1"),
        ],
        vec![Op::Remove(0, "198.51.100.3"), Op::Up(0, "198.51.100.2")],
        vec![
            Op::Add(0, "198.51.100.3", 50),
            Op::Remove(1, "2001:db8::1:4"),
            Op::Weight(0, "198.51.100.1", 100),
        ],
        vec![Op::Up(1, "2001:db8::1:1"), Op::Add(1, "2001:db8::1:4", 1)],
    ];
    let mut seen: Vec<BTreeMap<VipId, RingDigest>> = Vec::new();
    for (s, ops) in steps.iter().enumerate() {
        // Node 0 one op and one apply at a time, node 1 the same in reverse order, node 2 all
        // ops then a single apply: the ops of a step commute, so all must end equal.
        for &op in ops {
            nodes[0].run(op);
            nodes[0].apply();
        }
        for &op in ops.iter().rev() {
            nodes[1].run(op);
            nodes[1].apply();
        }
        for &op in ops {
            nodes[2].run(op);
        }
        nodes[2].apply();
        let d = nodes[0].digests();
        assert_eq!(d.len(), 2, "step {s}");
        assert_eq!(nodes[1].digests(), d, "step {s}: node 1");
        assert_eq!(nodes[2].digests(), d, "step {s}: node 2");
        // Every op here changes its VIP's ring: the digest of a touched VIP changes, the
        // other's stays.
        if let Some(prev) = seen.last() {
            for (i, v) in shared_config().vips.iter().enumerate() {
                let touched = ops.iter().any(|op| op.vip() == i);
                assert_eq!(prev[&v.id] != d[&v.id], touched, "step {s}: {}", v.id);
            }
        }
        seen.push(d);
    }
    // The ids really differ between nodes, and so do the raw rings; the digests do not.
    assert_ne!(
        nodes[0].id_of("198.51.100.1"),
        nodes[1].id_of("198.51.100.1")
    );
    let index = |n: &Node| n.r.vip_index(&n.vip(0)).unwrap();
    assert_ne!(
        nodes[0].r.store().ring(index(&nodes[0])).unwrap(),
        nodes[1].r.store().ring(index(&nodes[1])).unwrap()
    );
}
