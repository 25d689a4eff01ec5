//! What the kernel answers over netlink: datagrams of route, neighbour and link messages with
//! random attributes, then damaged, and random bytes, through the datagram split and every
//! function that reads a message. None panics; every error has a message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use proptest::prelude::*;
use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

use super::{check_message, fuzz};
use crate::netlink::{
    classify, link_from_message, link_status_from_message, neighbour_entry, next_hop_from_route,
    split_datagram, table_route,
};

fn route_address() -> impl Strategy<Value = RouteAddress> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| RouteAddress::Inet(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| RouteAddress::Inet6(Ipv6Addr::from(b))),
    ]
}

fn route() -> impl Strategy<Value = RouteNetlinkMessage> {
    let attr = prop_oneof![
        any::<u32>().prop_map(RouteAttribute::Oif),
        any::<u32>().prop_map(RouteAttribute::Table),
        route_address().prop_map(RouteAttribute::Destination),
        route_address().prop_map(RouteAttribute::Gateway),
        route_address().prop_map(RouteAttribute::PrefSource),
        any::<[u8; 16]>().prop_map(|b| RouteAttribute::Via(RouteVia::Inet6(Ipv6Addr::from(b)))),
        any::<[u8; 4]>().prop_map(|b| RouteAttribute::Via(RouteVia::Inet(Ipv4Addr::from(b)))),
    ];
    (
        prop::collection::vec(attr, 0..6),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(attributes, kind, prefix, table)| {
            let mut r = RouteMessage::default();
            r.header.kind = RouteType::from(kind);
            r.header.destination_prefix_length = prefix;
            r.header.table = table;
            r.attributes = attributes;
            RouteNetlinkMessage::NewRoute(r)
        })
}

fn neighbour() -> impl Strategy<Value = RouteNetlinkMessage> {
    (
        prop::collection::vec(any::<u8>(), 0..9),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(lla, state, dest)| {
            let mut n = NeighbourMessage::default();
            n.header.state = NeighbourState::from(state);
            n.attributes.push(NeighbourAttribute::LinkLayerAddress(lla));
            if dest {
                n.attributes.push(NeighbourAttribute::Destination(
                    IpAddr::from([198, 51, 100, 1]).into(),
                ));
            }
            RouteNetlinkMessage::NewNeighbour(n)
        })
}

fn link() -> impl Strategy<Value = RouteNetlinkMessage> {
    let attr = prop_oneof![
        "\\PC{0,20}".prop_map(LinkAttribute::IfName),
        prop::collection::vec(any::<u8>(), 0..9).prop_map(LinkAttribute::Address),
        any::<u32>().prop_map(LinkAttribute::Mtu),
    ];
    (prop::collection::vec(attr, 0..5), any::<u32>()).prop_map(|(attributes, index)| {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.attributes = attributes;
        RouteNetlinkMessage::NewLink(l)
    })
}

fn datagram() -> impl Strategy<Value = Vec<u8>> {
    let message = prop_oneof![route(), neighbour(), link()].prop_map(|inner| {
        let mut m = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    });
    let flips = prop::collection::vec((any::<usize>(), any::<u8>()), 0..4);
    prop_oneof![
        (prop::collection::vec(message, 1..4), flips).prop_map(|(ms, flips)| {
            let mut buf = ms.concat();
            let n = buf.len();
            for (i, x) in flips {
                buf[i % n] ^= x;
            }
            buf
        }),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn fuzz_netlink_datagrams() {
    fuzz("netlink_datagrams", 800, datagram(), |buf| {
        let messages = match split_datagram(&buf, "fuzz") {
            Ok(m) => m,
            Err(e) => return check_message(&e.to_string(), ""),
        };
        for m in &messages {
            let _ = classify(m);
            let NetlinkPayload::InnerMessage(inner) = &m.payload else {
                continue;
            };
            match inner {
                RouteNetlinkMessage::NewRoute(r) => {
                    let _ = table_route(r, 200);
                    for dst in [
                        IpAddr::from([198, 51, 100, 7]),
                        "2001:db8::7".parse().unwrap(),
                    ] {
                        if let Err(e) = next_hop_from_route(dst, r) {
                            check_message(&e.to_string(), "")?;
                        }
                    }
                }
                RouteNetlinkMessage::NewNeighbour(n) => {
                    let _ = neighbour_entry(n).usable_mac();
                }
                RouteNetlinkMessage::NewLink(l) => {
                    let _ = link_status_from_message(l);
                    if let Err(e) = link_from_message(l) {
                        check_message(&e.to_string(), "")?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    });
}
