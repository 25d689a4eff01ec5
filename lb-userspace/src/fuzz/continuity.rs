//! Peer messages: valid Sync/Hello/Ack payloads with bytes flipped, fields set to extremes,
//! cut or extended, and random bytes. The decoder never panics, every refusal has a message,
//! and whatever it accepts encodes back to the very same bytes (one encoding per message, so
//! nothing a peer sends is read two ways).

use std::net::IpAddr;

use proptest::prelude::*;

use super::{check_message, fuzz};
use crate::continuity::wire::{
    ExceptionGroup, FlowRef, MIN_PART_PAYLOAD, Message, VipRef, encode_sync,
};

fn addr(v6: bool) -> impl Strategy<Value = IpAddr> {
    if v6 {
        any::<[u8; 16]>().prop_map(IpAddr::from).boxed()
    } else {
        any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
    }
}

fn group() -> impl Strategy<Value = ExceptionGroup> {
    (any::<bool>(), any::<bool>(), any::<u16>(), any::<bool>()).prop_flat_map(
        |(v6, backend_v6, port, udp)| {
            let flow =
                (addr(v6), any::<u16>(), any::<u16>()).prop_map(move |(client, cp, dp)| FlowRef {
                    client,
                    client_port: cp,
                    dst_port: if port == 0 { dp } else { port },
                });
            (
                addr(v6),
                addr(backend_v6),
                prop::collection::vec(flow, 1..6),
            )
                .prop_map(move |(vip, backend, flows)| ExceptionGroup {
                    vip: VipRef {
                        addr: vip,
                        port,
                        proto: if udp { 17 } else { 6 },
                    },
                    backend,
                    flows,
                })
        },
    )
}

#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    /// A big-endian u32 at the offset set to 0, 1, or u32::MAX (counts and lengths).
    Word(usize, u32),
    Cut(usize),
    Extend(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        (
            any::<usize>(),
            prop::sample::select(vec![0, 1, 0x7fff_ffff, u32::MAX])
        )
            .prop_map(|(i, w)| Damage::Word(i, w)),
        any::<usize>().prop_map(Damage::Cut),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Damage::Extend),
    ]
}

fn damaged(mut p: Vec<u8>, d: &[Damage]) -> Vec<u8> {
    for d in d {
        let n = p.len().max(1);
        match d {
            Damage::Flip(i, x) => {
                if let Some(b) = p.get_mut(i % n) {
                    *b ^= x;
                }
            }
            Damage::Word(i, w) => {
                let at = i % n;
                if at + 4 <= p.len() {
                    p[at..at + 4].copy_from_slice(&w.to_be_bytes());
                }
            }
            Damage::Cut(i) => p.truncate(i % n),
            Damage::Extend(tail) => p.extend_from_slice(tail),
        }
    }
    p
}

fn valid_payload() -> impl Strategy<Value = (u8, Vec<u8>)> {
    prop_oneof![
        (
            any::<u64>(),
            prop::collection::vec(group(), 0..4),
            MIN_PART_PAYLOAD..600,
            any::<usize>()
        )
            .prop_map(|(id, groups, max, pick)| {
                let parts = encode_sync(id, &groups, max).parts;
                (2, parts[pick % parts.len()].payload.clone())
            }),
        ("[0-9.:a-f\\[\\]]{0,64}", any::<[u8; 16]>())
            .prop_map(|(node, nonce)| { (1, Message::Hello { node, nonce }.encode().unwrap()) }),
        any::<(u64, u32, u32, u32)>().prop_map(|(sync_id, part, applied, rejected)| {
            let ack = Message::Ack {
                sync_id,
                part,
                applied,
                rejected,
            };
            (3, ack.encode().unwrap())
        }),
    ]
}

#[test]
fn fuzz_continuity_decode() {
    let strategy = prop_oneof![
        (valid_payload(), prop::collection::vec(damage(), 0..3))
            .prop_map(|((kind, p), d)| (kind, damaged(p, &d))),
        (0u8..6, prop::collection::vec(any::<u8>(), 0..400)),
    ];
    fuzz("continuity_decode", 1500, strategy, |(kind, payload)| {
        match Message::decode(kind, &payload) {
            Ok(m) => {
                let again = m.encode();
                prop_assert_eq!(again.as_ref(), Ok(&payload), "{:?}", m);
            }
            Err(e) => check_message(&e.to_string(), "")?,
        }
        Ok(())
    });
}
