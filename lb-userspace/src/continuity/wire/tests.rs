use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

fn tcp_vip(addr: IpAddr, port: u16) -> VipRef {
    VipRef {
        addr,
        port,
        proto: 6,
    }
}

fn flows_v4(n: u32, dst_port: u16) -> Vec<FlowRef> {
    (0..n)
        .map(|i| FlowRef {
            client: IpAddr::V4(Ipv4Addr::from(0xc633_6400u32.wrapping_add(i / 60_000))),
            client_port: 1024 + (i % 60_000) as u16,
            dst_port,
        })
        .collect()
}

fn sample_groups() -> Vec<ExceptionGroup> {
    vec![
        // IPv4 VIP with a port, IPv4 backend.
        ExceptionGroup {
            vip: tcp_vip(v4(192, 0, 2, 1), 443),
            backend: v4(10, 0, 0, 7),
            flows: flows_v4(3, 443),
        },
        // All-ports UDP VIP: destination ports vary.
        ExceptionGroup {
            vip: VipRef {
                addr: v4(192, 0, 2, 2),
                port: 0,
                proto: 17,
            },
            backend: v4(10, 0, 0, 8),
            flows: vec![
                FlowRef {
                    client: v4(198, 51, 100, 1),
                    client_port: 5000,
                    dst_port: 53,
                },
                FlowRef {
                    client: v4(198, 51, 100, 2),
                    client_port: 5001,
                    dst_port: 8080,
                },
            ],
        },
        // IPv6 VIP, IPv4 backend (cross-family).
        ExceptionGroup {
            vip: tcp_vip(v6(1), 80),
            backend: v4(10, 0, 0, 9),
            flows: vec![FlowRef {
                client: v6(0xbeef),
                client_port: 40000,
                dst_port: 80,
            }],
        },
        // IPv4 VIP, IPv6 backend.
        ExceptionGroup {
            vip: tcp_vip(v4(192, 0, 2, 3), 0),
            backend: v6(0x10),
            flows: flows_v4(2, 22),
        },
    ]
}

fn sync(groups: Vec<ExceptionGroup>) -> Message {
    Message::Sync {
        sync_id: 0x0102_0304_0506_0708,
        part: 3,
        last: true,
        groups,
    }
}

fn round_trip(message: &Message) {
    let payload = message.encode().expect("encodes");
    let back = Message::decode(message.kind() as u8, &payload).expect("decodes");
    assert_eq!(&back, message);
}

#[test]
fn every_message_round_trips() {
    round_trip(&Message::Hello {
        node: "198.51.100.12:7946".into(),
        nonce: [7; NONCE_LEN],
    });
    round_trip(&Message::Hello {
        node: "[2001:db8::1]:7946".into(),
        nonce: [0; NONCE_LEN],
    });
    round_trip(&Message::Hello {
        node: "x".repeat(MAX_NODE_LEN),
        nonce: [0xff; NONCE_LEN],
    });
    round_trip(&Message::Ack {
        sync_id: u64::MAX,
        part: 9,
        applied: 100,
        rejected: 2,
    });
    round_trip(&sync(sample_groups()));
    round_trip(&sync(Vec::new()));
    for group in sample_groups() {
        round_trip(&sync(vec![group]));
    }
}

#[test]
fn layout_is_the_documented_one() {
    let message = Message::Sync {
        sync_id: 1,
        part: 2,
        last: true,
        groups: vec![ExceptionGroup {
            vip: tcp_vip(v4(192, 0, 2, 1), 443),
            backend: v6(5),
            flows: vec![FlowRef {
                client: v4(198, 51, 100, 7),
                client_port: 0x1234,
                dst_port: 443,
            }],
        }],
    };
    let mut want = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 1];
    want.extend_from_slice(&[4, 192, 0, 2, 1, 0x01, 0xbb, 6, 6]);
    want.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5).octets());
    want.extend_from_slice(&[0, 0, 0, 1, 198, 51, 100, 7, 0x12, 0x34, 0x01, 0xbb]);
    assert_eq!(message.encode().unwrap(), want);
    assert_eq!(
        want.len(),
        SYNC_HEADER_LEN + group_header_len(false, true) + flow_record_len(false)
    );
    assert_eq!(flow_record_len(false), 8);
    assert_eq!(flow_record_len(true), 20);
    let ack = Message::Ack {
        sync_id: 1,
        part: 2,
        applied: 3,
        rejected: 4,
    };
    assert_eq!(ack.encode().unwrap().len(), ACK_LEN);
}

#[test]
fn encoding_refuses_what_the_wire_cannot_carry() {
    let mut bad_family = sample_groups()[0].clone();
    bad_family.flows[0].client = v6(1);
    assert!(matches!(
        sync(vec![bad_family]).encode(),
        Err(EncodeError::ClientFamily { .. })
    ));
    let mut bad_port = sample_groups()[0].clone();
    bad_port.flows[0].dst_port = 80;
    assert_eq!(
        sync(vec![bad_port]).encode(),
        Err(EncodeError::DstPortMismatch {
            vip_port: 443,
            dst_port: 80
        })
    );
    let mut bad_proto = sample_groups()[0].clone();
    bad_proto.vip.proto = 1;
    assert_eq!(
        sync(vec![bad_proto]).encode(),
        Err(EncodeError::BadProto(1))
    );
    let mut empty = sample_groups()[0].clone();
    empty.flows.clear();
    assert_eq!(sync(vec![empty]).encode(), Err(EncodeError::EmptyGroup));
    let long = Message::Hello {
        node: "x".repeat(MAX_NODE_LEN + 1),
        nonce: [0; NONCE_LEN],
    };
    assert_eq!(
        long.encode(),
        Err(EncodeError::NodeNameTooLong(MAX_NODE_LEN + 1))
    );
}

/// Decodes every part and checks numbering, flags, sizes; returns the groups, consecutive
/// pieces of one split group merged back.
fn reassemble(encoded: &EncodedSync, sync_id: u64, max: usize) -> Vec<ExceptionGroup> {
    let n = encoded.parts.len();
    assert!(n >= 1);
    let mut out: Vec<ExceptionGroup> = Vec::new();
    for (i, part) in encoded.parts.iter().enumerate() {
        assert!(
            part.payload.len() <= max,
            "part {i} is {} bytes",
            part.payload.len()
        );
        let Message::Sync {
            sync_id: id,
            part: number,
            last,
            groups,
        } = Message::decode(Kind::Sync as u8, &part.payload).expect("part decodes")
        else {
            panic!("not a sync");
        };
        assert_eq!(id, sync_id);
        assert_eq!(number as usize, i);
        assert_eq!(last, i + 1 == n);
        let flows: usize = groups.iter().map(|g| g.flows.len()).sum();
        assert_eq!(flows, part.flows as usize);
        for (j, group) in groups.into_iter().enumerate() {
            // Only a part's first group can continue the previous part's last one.
            match out.last_mut() {
                Some(prev) if j == 0 && prev.vip == group.vip && prev.backend == group.backend => {
                    prev.flows.extend(group.flows)
                }
                _ => out.push(group),
            }
        }
    }
    out
}

#[test]
fn a_big_set_splits_under_the_limit_and_reassembles() {
    let groups = vec![
        ExceptionGroup {
            vip: tcp_vip(v4(192, 0, 2, 1), 443),
            backend: v4(10, 0, 0, 1),
            flows: flows_v4(100_000, 443),
        },
        ExceptionGroup {
            vip: tcp_vip(v4(192, 0, 2, 1), 443),
            backend: v4(10, 0, 0, 2),
            flows: flows_v4(70_000, 443),
        },
        sample_groups()[2].clone(),
    ];
    let encoded = encode_sync(42, &groups, MAX_PAYLOAD);
    assert_eq!(encoded.flows, 170_001);
    assert_eq!(encoded.skipped_flows, 0);
    assert_eq!(encoded.parts.len(), 2);
    assert_eq!(reassemble(&encoded, 42, MAX_PAYLOAD), groups);
    // Framing excluded, the bytes are the headers plus 8 per IPv4 flow. The first group fits in
    // part 0, the second is split (its header repeated in part 1), the IPv6 one is in part 1.
    let groups_headers = 3 * group_header_len(false, false) + group_header_len(true, false);
    assert_eq!(
        encoded.payload_bytes(),
        2 * SYNC_HEADER_LEN + groups_headers + 170_000 * 8 + 20
    );
}

#[test]
fn small_parts_split_every_group_and_stay_under_the_limit() {
    let groups = sample_groups();
    for max in [MIN_PART_PAYLOAD, MIN_PART_PAYLOAD + 7, 120, 200, 1000] {
        let encoded = encode_sync(7, &groups, max);
        assert_eq!(reassemble(&encoded, 7, max), groups, "max {max}");
    }
    // Below the minimum, the minimum is used: every part still makes progress.
    let encoded = encode_sync(7, &groups, 1);
    assert_eq!(reassemble(&encoded, 7, MIN_PART_PAYLOAD), groups);
}

#[test]
fn an_empty_set_is_one_empty_last_part() {
    let encoded = encode_sync(9, &[], MAX_PAYLOAD);
    assert_eq!(encoded.parts.len(), 1);
    assert_eq!(encoded.parts[0].payload.len(), SYNC_HEADER_LEN);
    assert_eq!(
        Message::decode(2, &encoded.parts[0].payload).unwrap(),
        Message::Sync {
            sync_id: 9,
            part: 0,
            last: true,
            groups: Vec::new()
        }
    );
    // Groups without flows vanish rather than being sent as (refused) empty groups.
    let mut empty = sample_groups()[0].clone();
    empty.flows.clear();
    let encoded = encode_sync(9, &[empty], MAX_PAYLOAD);
    assert_eq!(encoded.parts.len(), 1);
    assert_eq!(encoded.skipped_flows, 0);
}

#[test]
fn flows_the_wire_cannot_carry_are_skipped_and_counted() {
    let mut groups = sample_groups();
    groups[0].flows[1].client = v6(3);
    groups[1].vip.proto = 132;
    let encoded = encode_sync(1, &groups, MAX_PAYLOAD);
    assert_eq!(encoded.skipped_flows, 3);
    assert!(matches!(
        encoded.first_skip,
        Some(EncodeError::ClientFamily { .. })
    ));
    let back = reassemble(&encoded, 1, MAX_PAYLOAD);
    assert_eq!(back.len(), 3);
    assert_eq!(back[0].flows.len(), 2);
}

fn valid_sync_payload() -> Vec<u8> {
    sync(sample_groups()).encode().unwrap()
}

/// Offset of the first group's header in [`valid_sync_payload`].
const G: usize = SYNC_HEADER_LEN;

#[test]
fn decoder_names_each_defect() {
    assert_eq!(Message::decode(9, &[]), Err(WireError::UnknownKind(9)));

    let mut p = valid_sync_payload();
    p[G] = 5;
    assert_eq!(
        Message::decode(2, &p),
        Err(WireError::UnknownFamily {
            what: "VIP",
            family: 5
        })
    );

    let mut p = valid_sync_payload();
    p[G + 7] = 1; // protocol
    assert_eq!(Message::decode(2, &p), Err(WireError::BadProto(1)));

    let mut p = valid_sync_payload();
    p[G + 8] = 0; // backend family
    assert!(matches!(
        Message::decode(2, &p),
        Err(WireError::UnknownFamily {
            what: "backend",
            ..
        })
    ));

    let mut p = valid_sync_payload();
    p[G + 13..G + 17].copy_from_slice(&0u32.to_be_bytes()); // flow count
    assert_eq!(Message::decode(2, &p), Err(WireError::EmptyGroup));

    let mut p = valid_sync_payload();
    p[12] = 0x03;
    assert_eq!(Message::decode(2, &p), Err(WireError::UnknownFlags(3)));

    let mut p = valid_sync_payload();
    p[14] = 1;
    assert!(matches!(
        Message::decode(2, &p),
        Err(WireError::Reserved { .. })
    ));

    let mut p = valid_sync_payload();
    p[G + 17 + 6..G + 17 + 8].copy_from_slice(&80u16.to_be_bytes()); // first dst port
    assert_eq!(
        Message::decode(2, &p),
        Err(WireError::DstPortMismatch {
            vip_port: 443,
            dst_port: 80
        })
    );

    let mut p = valid_sync_payload();
    p.push(0);
    assert_eq!(
        Message::decode(2, &p),
        Err(WireError::TrailingBytes {
            what: "sync part",
            extra: 1
        })
    );

    // One group fewer declared than present: the last group's bytes trail.
    let mut p = valid_sync_payload();
    p[16..20].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(
        Message::decode(2, &p),
        Err(WireError::TrailingBytes { .. })
    ));

    let ack = Message::Ack {
        sync_id: 1,
        part: 0,
        applied: 0,
        rejected: 0,
    };
    let mut p = ack.encode().unwrap();
    p.push(0);
    assert!(matches!(
        Message::decode(3, &p),
        Err(WireError::TrailingBytes { what: "ack", .. })
    ));
}

#[test]
fn decoder_checks_node_names() {
    let mut p = vec![65];
    p.extend_from_slice(&[b'a'; 65]);
    p.extend_from_slice(&[0; NONCE_LEN]);
    assert_eq!(Message::decode(1, &p), Err(WireError::NodeNameTooLong(65)));

    let mut p = vec![2, 0xff, 0xfe];
    p.extend_from_slice(&[0; NONCE_LEN]);
    assert_eq!(Message::decode(1, &p), Err(WireError::NodeNameNotUtf8));

    // A declared name longer than the bytes present.
    assert!(matches!(
        Message::decode(1, &[10, b'a']),
        Err(WireError::Truncated {
            what: "node name",
            need: 10,
            remaining: 1
        })
    ));
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    // 4 billion groups declared in a 20-byte payload: refused from the count alone (were it
    // trusted, `with_capacity` would ask for hundreds of GiB and abort the process).
    let mut p = Vec::new();
    put_sync_header(&mut p, 1, 0, true, u32::MAX);
    assert!(matches!(
        Message::decode(2, &p),
        Err(WireError::CountTooLarge {
            what: "group",
            count: u32::MAX,
            ..
        })
    ));

    let mut p = valid_sync_payload();
    p[16..20].copy_from_slice(&1u32.to_be_bytes());
    p[G + 13..G + 17].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Message::decode(2, &p),
        Err(WireError::CountTooLarge {
            what: "flow",
            count: u32::MAX,
            ..
        })
    ));

    // One flow more than the bytes hold.
    let mut p = valid_sync_payload();
    p[16..20].copy_from_slice(&1u32.to_be_bytes());
    p.truncate(G + 17 + 3 * 8);
    p[G + 13..G + 17].copy_from_slice(&4u32.to_be_bytes());
    assert!(matches!(
        Message::decode(2, &p),
        Err(WireError::CountTooLarge {
            what: "flow",
            count: 4,
            need: 32,
            remaining: 24
        })
    ));
}

#[test]
fn every_truncation_is_an_error() {
    let messages = [
        sync(sample_groups()),
        Message::Hello {
            node: "198.51.100.12:7946".into(),
            nonce: [1; NONCE_LEN],
        },
        Message::Ack {
            sync_id: 1,
            part: 2,
            applied: 3,
            rejected: 4,
        },
    ];
    for message in messages {
        let payload = message.encode().unwrap();
        for cut in 0..payload.len() {
            assert!(
                Message::decode(message.kind() as u8, &payload[..cut]).is_err(),
                "{:?} cut at {cut} decoded",
                message.kind()
            );
        }
    }
}

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

/// Groups that the wire can carry: clients of the VIP's family, destination ports matching
/// the VIP port unless all-ports.
fn arb_group() -> impl Strategy<Value = ExceptionGroup> {
    (
        arb_addr(),
        prop_oneof![Just(0u16), any::<u16>()],
        prop_oneof![Just(6u8), Just(17u8)],
        arb_addr(),
        prop::collection::vec((any::<[u8; 16]>(), any::<u16>(), any::<u16>()), 1..20),
    )
        .prop_map(|(addr, port, proto, backend, raw)| {
            let flows = raw
                .into_iter()
                .map(|(bytes, client_port, dst)| FlowRef {
                    client: if addr.is_ipv6() {
                        IpAddr::V6(Ipv6Addr::from(bytes))
                    } else {
                        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
                    },
                    client_port,
                    dst_port: if port == 0 { dst } else { port },
                })
                .collect();
            ExceptionGroup {
                vip: VipRef { addr, port, proto },
                backend,
                flows,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(kind in 0u8..5, bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode(kind, &bytes);
    }

    #[test]
    fn random_sync_parts_never_panic(tail in prop::collection::vec(any::<u8>(), 0..300), groups in 0u32..4) {
        // A valid header in front so the group decoder, not the header check, sees the noise.
        let mut p = Vec::new();
        put_sync_header(&mut p, 1, 0, true, groups);
        p.extend_from_slice(&tail);
        let _ = Message::decode(2, &p);
    }

    #[test]
    fn arbitrary_sets_round_trip(groups in prop::collection::vec(arb_group(), 0..6), max in MIN_PART_PAYLOAD..400) {
        let encoded = encode_sync(3, &groups, max);
        prop_assert_eq!(encoded.skipped_flows, 0);
        prop_assert_eq!(reassemble_merged(&encoded, max), merge(groups));
    }
}

/// Like [`reassemble`], with adjacent groups of the same VIP and backend merged, as two such
/// groups in the input are indistinguishable from one split group.
fn reassemble_merged(encoded: &EncodedSync, max: usize) -> Vec<ExceptionGroup> {
    let mut all = Vec::new();
    for part in &encoded.parts {
        assert!(part.payload.len() <= max);
        let Ok(Message::Sync { groups, .. }) = Message::decode(2, &part.payload) else {
            panic!("part does not decode");
        };
        all.extend(groups);
    }
    merge(all)
}

fn merge(groups: Vec<ExceptionGroup>) -> Vec<ExceptionGroup> {
    let mut out: Vec<ExceptionGroup> = Vec::new();
    for group in groups {
        match out.last_mut() {
            Some(prev) if prev.vip == group.vip && prev.backend == group.backend => {
                prev.flows.extend(group.flows)
            }
            _ => out.push(group),
        }
    }
    out
}
