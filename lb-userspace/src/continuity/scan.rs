//! Finding this node's exceptions: the flows of its flow table whose backend is no longer the
//! one the current ring gives them (docs/datapath.md §4, flow continuity). Those are the flows
//! another node would send elsewhere if the routers moved them there; every other flow lands
//! on the same backend whichever node gets it.
//!
//! The rule is the program's own: an entry counts only if the program would honour it (intact,
//! its backend active or draining, same generation), and the ring slot comes from
//! `lb_common::hash::flow_hash` with the VIP's source affinity, as the program computes it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use lb_common::addr::from_words;
use lb_common::hash::{flow_hash, ports_word, ring_slot};
use lb_common::values::{Backend, VIP_F_SRC_AFFINITY};
use lb_common::{FlowKey, FlowSlot};

use crate::model::VipId;
use crate::reconcile::RingSlots;

/// The applied maps as the scan needs them (from `Reconciler::applied_rings`).
#[derive(Clone, Debug, Default)]
pub struct AppliedRings {
    /// `LbConfig::hash_seed` as applied.
    pub seed: u32,
    /// VIP index -> the VIP and its ring.
    pub vips: HashMap<u32, (VipId, RingSlots)>,
    /// Backend id -> its VIP, address and map entry.
    pub backends: HashMap<u32, (VipId, IpAddr, Backend)>,
}

/// Exceptions grouped by VIP and backend address (the wire's grouping), each group's flows in
/// table order.
pub type Exceptions = BTreeMap<(VipId, IpAddr), Vec<FlowKey>>;

impl AppliedRings {
    /// The VIP and backend address an exception names, if `slot` is one.
    pub fn exception(&self, slot: &FlowSlot) -> Option<(VipId, IpAddr)> {
        if !slot.sealed() {
            return None;
        }
        let (vip, addr, backend) = self.backends.get(&slot.backend_id)?;
        if !slot.entry().honoured_by(backend) {
            return None;
        }
        let (ring_vip, ring) = self.vips.get(&backend.vip_index)?;
        if ring_vip != vip {
            return None;
        }
        let k = &slot.key;
        let affinity = u32::from(backend.vip_flags) & VIP_F_SRC_AFFINITY != 0;
        let ports = ports_word(k.sport, k.dport);
        let hash = flow_hash(
            self.seed, affinity, k.family, &k.src, &k.dst, ports, k.proto,
        );
        (ring.get(ring_slot(hash)) != slot.backend_id).then_some((*vip, *addr))
    }

    /// Every exception among `slots`, grouped.
    pub fn exceptions<'a>(&self, slots: impl IntoIterator<Item = &'a FlowSlot>) -> Exceptions {
        let mut out = Exceptions::new();
        for s in slots {
            if let Some(group) = self.exception(s) {
                out.entry(group).or_default().push(s.key);
            }
        }
        out
    }
}

/// The client address and ports of a flow key, host order (what the wire carries).
pub fn client_of(key: &FlowKey) -> Option<(IpAddr, u16, u16)> {
    let client = from_words(key.family, &key.src)?;
    Some((client, u16::from_be(key.sport), u16::from_be(key.dport)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use lb_common::addr::{FAMILY_V4, to_words};
    use lb_common::limits::RING_SIZE;
    use lb_common::values::{BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING};
    use lb_common::{FlowEntry, FlowKey};

    use super::*;
    use crate::model::Proto;

    const SEED: u32 = 0x786c_6221;

    fn vip() -> VipId {
        VipId {
            addr: "203.0.113.10".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        }
    }

    fn backend(state: u8, generation: u32) -> Backend {
        Backend {
            state,
            family: FAMILY_V4,
            vip_index: 3,
            generation,
            ..Default::default()
        }
    }

    /// A ring that gives every slot to backend 1, except the slots of `moved`, given to 2.
    fn view(moved: &[FlowKey], b1: Backend) -> AppliedRings {
        let mut slots = vec![1; RING_SIZE as usize];
        let mut v = AppliedRings {
            seed: SEED,
            ..Default::default()
        };
        for k in moved {
            let h = flow_hash(
                SEED,
                false,
                k.family,
                &k.src,
                &k.dst,
                ports_word(k.sport, k.dport),
                k.proto,
            );
            slots[ring_slot(h) as usize] = 2;
        }
        v.vips.insert(3, (vip(), RingSlots::of(slots)));
        v.backends
            .insert(1, (vip(), "198.51.100.1".parse().unwrap(), b1));
        v.backends.insert(
            2,
            (
                vip(),
                "198.51.100.2".parse().unwrap(),
                backend(BACKEND_ACTIVE, 8),
            ),
        );
        v
    }

    fn key(n: u8) -> FlowKey {
        FlowKey {
            src: to_words(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))).1,
            dst: to_words(vip().addr).1,
            sport: (40_000 + u16::from(n)).to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    fn slot(k: &FlowKey, backend_id: u32, generation: u32) -> FlowSlot {
        let mut s = FlowSlot::default();
        s.write(
            k,
            k.entropy(SEED),
            FlowEntry {
                backend_id,
                generation,
            },
        );
        s
    }

    #[test]
    fn a_flow_whose_ring_slot_moved_is_an_exception_and_no_other() {
        let (stays, moved) = (key(1), key(2));
        let v = view(&[moved], backend(BACKEND_ACTIVE, 7));
        let slots = [slot(&stays, 1, 7), slot(&moved, 1, 7), slot(&key(3), 2, 8)];
        let got = v.exceptions(&slots);
        let want: Exceptions = [((vip(), "198.51.100.1".parse().unwrap()), vec![moved])].into();
        // key(3) sits on backend 2 while the ring gives it 1: also an exception.
        let mut want = want;
        want.insert((vip(), "198.51.100.2".parse().unwrap()), vec![key(3)]);
        assert_eq!(got, want);
    }

    #[test]
    fn entries_the_program_would_not_honour_are_no_exceptions() {
        let moved = key(2);
        let draining = view(&[moved], backend(BACKEND_DRAINING, 7));
        assert!(
            draining.exception(&slot(&moved, 1, 7)).is_some(),
            "draining keeps flows"
        );
        let down = view(&[moved], backend(BACKEND_DOWN, 7));
        assert_eq!(down.exception(&slot(&moved, 1, 7)), None, "down backend");
        let v = view(&[moved], backend(BACKEND_ACTIVE, 7));
        assert_eq!(v.exception(&slot(&moved, 1, 6)), None, "older generation");
        assert_eq!(v.exception(&slot(&moved, 9, 7)), None, "unknown backend id");
        let mut torn = slot(&moved, 1, 7);
        torn.generation = 99;
        assert_eq!(v.exception(&torn), None, "torn slot");
        assert_eq!(v.exception(&FlowSlot::default()), None, "empty slot");
    }

    #[test]
    fn client_of_returns_host_order_ports() {
        let (client, sport, dport) = client_of(&key(5)).unwrap();
        assert_eq!(client, "192.0.2.5".parse::<IpAddr>().unwrap());
        assert_eq!((sport, dport), (40_005, 80));
    }
}
