//! The ring digest: a short fingerprint of one VIP's Maglev ring that operators compare across
//! nodes (`xlb inspect ring --digest`, the `xlb_vip_ring_info` metric). Nodes with the same
//! config and the same health view must show the same digest for each VIP, so it names each
//! slot's backend by its identity, never by the backend id: ids are handed out by each agent in
//! the order it saw backends come and go, and differ between nodes that agree on the ring.
//!
//! # Definition (version 1)
//!
//! SHA-256 over, in order:
//! 1. the 8 bytes `xlb-rng1` (the format's version: a change here must change every digest);
//! 2. the ring size, u32 big-endian;
//! 3. the flow-hash seed (`hash-seed`), u32 big-endian: two nodes with equal rings but different
//!    seeds send the same flow to different backends, so the seed belongs to what is compared;
//! 4. each slot in slot order: `0x00` for no backend; `0x04` and the 4 address bytes for an
//!    IPv4 backend; `0x06` and the 16 address bytes for an IPv6 one; `0xff` for an id that
//!    names no backend of this VIP (an empty entry, or another VIP's; the datapath drops those
//!    packets). Backends have no port of their own (they receive on the VIP's port), so the
//!    address is the whole identity, as it is for Maglev's permutation.
//!
//! Printed as the first [`DIGEST_HEX_LEN`] lowercase hex digits (64 bits): enough that two
//! different rings sharing a digest is not a practical concern, short enough to compare by eye.

use std::fmt;
use std::net::IpAddr;

use lb_common::{Backend, addr::from_words, values::BACKEND_EMPTY};
use sha2::{Digest, Sha256};

use crate::maglev::NO_BACKEND;

/// Hex digits printed: the first 8 bytes of the SHA-256.
pub const DIGEST_HEX_LEN: usize = 16;

const VERSION_TAG: &[u8; 8] = b"xlb-rng1";
const TAG_NONE: u8 = 0x00;
const TAG_V4: u8 = 0x04;
const TAG_V6: u8 = 0x06;
const TAG_DANGLING: u8 = 0xff;

/// A ring's digest, shown as [`DIGEST_HEX_LEN`] hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RingDigest([u8; DIGEST_HEX_LEN / 2]);

impl fmt::Display for RingDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Who a ring slot sends its flows to, as the digest names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotOwner {
    /// Slot value [`NO_BACKEND`].
    None,
    /// A backend of the VIP, by address.
    Backend(IpAddr),
    /// An id whose entry is empty or belongs to another VIP.
    Dangling,
}

impl SlotOwner {
    /// The owner of a slot holding `id` in the ring of VIP index `vip_index`, given the backend
    /// map entry at `id` (`None` when it cannot be read). The agent and `xlb inspect` both
    /// decide through here, so they agree on every map content.
    pub fn of(id: u32, vip_index: u32, entry: Option<&Backend>) -> Self {
        if id == NO_BACKEND {
            return Self::None;
        }
        match entry {
            Some(b) if b.state != BACKEND_EMPTY && b.vip_index == vip_index => {
                from_words(b.family, &b.addr).map_or(Self::Dangling, Self::Backend)
            }
            _ => Self::Dangling,
        }
    }

    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Self::None => out.push(TAG_NONE),
            Self::Dangling => out.push(TAG_DANGLING),
            Self::Backend(IpAddr::V4(a)) => {
                out.push(TAG_V4);
                out.extend_from_slice(&a.octets());
            }
            Self::Backend(IpAddr::V6(a)) => {
                out.push(TAG_V6);
                out.extend_from_slice(&a.octets());
            }
        }
    }
}

/// The digest of `ring` (one backend id per slot) under flow-hash seed `seed`, `owner` naming
/// each id's backend (see [`SlotOwner::of`]). `owner` is asked once per distinct id.
pub fn ring_digest(seed: u32, ring: &[u32], mut owner: impl FnMut(u32) -> SlotOwner) -> RingDigest {
    // Each distinct id is encoded once; a slot then costs a binary search over the few distinct
    // ids and a copy, which keeps a ring change cheap even in an unoptimised build.
    let mut ids = ring.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let encoded: Vec<Vec<u8>> = ids
        .iter()
        .map(|&id| {
            let mut b = Vec::with_capacity(17);
            owner(id).encode(&mut b);
            b
        })
        .collect();
    let mut hasher = Sha256::new();
    hasher.update(VERSION_TAG);
    // Ring sizes are far below 2^32 (maglev::MAX_TABLE_SIZE).
    hasher.update((ring.len() as u32).to_be_bytes());
    hasher.update(seed.to_be_bytes());
    let mut buf = Vec::with_capacity(ring.len() * 5);
    for id in ring {
        let at = ids
            .binary_search(id)
            .expect("every slot's id is among the distinct ids");
        buf.extend_from_slice(&encoded[at]);
    }
    hasher.update(&buf);
    let full = hasher.finalize();
    let mut short = [0u8; DIGEST_HEX_LEN / 2];
    short.copy_from_slice(&full[..DIGEST_HEX_LEN / 2]);
    RingDigest(short)
}

#[cfg(test)]
mod consistency;

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::{addr::to_words, values::BACKEND_ACTIVE};

    fn entry(addr: &str, vip_index: u32) -> Backend {
        let (family, addr) = to_words(addr.parse().unwrap());
        Backend {
            addr,
            family,
            state: BACKEND_ACTIVE,
            vip_index,
            ..Backend::default()
        }
    }

    fn by_addr(map: &[(u32, &str)]) -> impl FnMut(u32) -> SlotOwner {
        let map: Vec<(u32, IpAddr)> = map.iter().map(|(i, a)| (*i, a.parse().unwrap())).collect();
        move |id| {
            map.iter()
                .find(|(i, _)| *i == id)
                .map_or(SlotOwner::None, |(_, a)| SlotOwner::Backend(*a))
        }
    }

    // Golden value from an independent computation of the definition above (Python's hashlib
    // over the bytes written out by hand): b"xlb-rng1", size 5, seed 7, then slots
    // [192.0.2.1, 192.0.2.1, none, 2001:db8::2, dangling].
    #[test]
    fn golden_digest() {
        let ring = [1, 1, 0, 2, 9];
        let d = ring_digest(7, &ring, |id| match id {
            0 => SlotOwner::None,
            1 => SlotOwner::Backend("192.0.2.1".parse().unwrap()),
            2 => SlotOwner::Backend("2001:db8::2".parse().unwrap()),
            _ => SlotOwner::Dangling,
        });
        assert_eq!(d.to_string(), "2df8a27f893e3a36");
        assert_eq!(d.to_string().len(), DIGEST_HEX_LEN);
    }

    #[test]
    fn ids_do_not_matter_identities_do() {
        let a = ring_digest(
            1,
            &[1, 2, 1, 0],
            by_addr(&[(1, "192.0.2.1"), (2, "192.0.2.2")]),
        );
        let renumbered = ring_digest(
            1,
            &[7, 3, 7, 0],
            by_addr(&[(7, "192.0.2.1"), (3, "192.0.2.2")]),
        );
        assert_eq!(a, renumbered);
        let swapped = ring_digest(
            1,
            &[1, 2, 1, 0],
            by_addr(&[(2, "192.0.2.1"), (1, "192.0.2.2")]),
        );
        assert_ne!(a, swapped);
        let other_seed = ring_digest(
            2,
            &[1, 2, 1, 0],
            by_addr(&[(1, "192.0.2.1"), (2, "192.0.2.2")]),
        );
        assert_ne!(a, other_seed);
        let longer = ring_digest(
            1,
            &[1, 2, 1, 0, 0],
            by_addr(&[(1, "192.0.2.1"), (2, "192.0.2.2")]),
        );
        assert_ne!(a, longer);
    }

    #[test]
    fn owner_of_a_slot() {
        let b = entry("198.51.100.1", 3);
        assert_eq!(SlotOwner::of(0, 3, Some(&b)), SlotOwner::None);
        assert_eq!(
            SlotOwner::of(5, 3, Some(&b)),
            SlotOwner::Backend("198.51.100.1".parse().unwrap())
        );
        assert_eq!(SlotOwner::of(5, 4, Some(&b)), SlotOwner::Dangling);
        assert_eq!(
            SlotOwner::of(5, 3, Some(&Backend::default())),
            SlotOwner::Dangling
        );
        assert_eq!(SlotOwner::of(5, 3, None), SlotOwner::Dangling);
        // A dangling id, an empty slot and a backend all digest differently.
        let d = |o: SlotOwner| ring_digest(0, &[1], |_| o);
        assert_ne!(d(SlotOwner::None), d(SlotOwner::Dangling));
        assert_ne!(
            d(SlotOwner::None),
            d(SlotOwner::Backend("0.0.0.0".parse().unwrap()))
        );
    }
}
