//! Unit tests of the message readers and the watch's classification.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_route::route::RouteType;
use rtnetlink::packet_core::NetlinkHeader;

use super::*;

#[test]
fn every_event_kind_has_its_metrics_series() {
    for e in [
        NetEvent::Link,
        NetEvent::Neigh,
        NetEvent::Route,
        NetEvent::Overrun,
    ] {
        assert!(
            crate::metrics::NETLINK_EVENT_KINDS.contains(&e.kind()),
            "{e:?}"
        );
    }
}

fn route(kind: RouteType, attrs: Vec<RouteAttribute>) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.kind = kind;
    r.attributes = attrs;
    r
}

const V4_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const V4_GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

#[test]
fn next_hop_via_gateway() {
    let r = route(
        RouteType::Unicast,
        vec![
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(198, 51, 100, 7))),
            RouteAttribute::Oif(4),
            RouteAttribute::Gateway(RouteAddress::Inet(V4_GW)),
            RouteAttribute::PrefSource(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 1))),
        ],
    );
    let hop = next_hop_from_route(V4_DST, &r).unwrap();
    assert_eq!(
        hop,
        NextHop {
            ifindex: 4,
            gateway: Some(V4_GW.into()),
            neighbour_addr: V4_GW.into(),
            source: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
        }
    );
}

#[test]
fn next_hop_on_link_is_the_destination() {
    let r = route(RouteType::Unicast, vec![RouteAttribute::Oif(7)]);
    let hop = next_hop_from_route(V4_DST, &r).unwrap();
    assert_eq!(hop.ifindex, 7);
    assert_eq!(hop.gateway, None);
    assert_eq!(hop.neighbour_addr, V4_DST);
}

#[test]
fn next_hop_v4_via_v6_gateway() {
    let gw = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    let r = route(
        RouteType::Unicast,
        vec![
            RouteAttribute::Oif(3),
            RouteAttribute::Via(RouteVia::Inet6(gw)),
        ],
    );
    let hop = next_hop_from_route(V4_DST, &r).unwrap();
    assert_eq!(hop.neighbour_addr, IpAddr::V6(gw));
}

#[test]
fn local_and_blackhole_routes_are_refused() {
    let local = route(RouteType::Local, vec![RouteAttribute::Oif(1)]);
    let err = next_hop_from_route(V4_DST, &local).unwrap_err();
    assert!(matches!(err, NetlinkError::NotUnicast { ref kind, .. } if kind == "local"));
    assert!(
        err.to_string().contains("ip route get 198.51.100.7"),
        "{err}"
    );
    let hole = route(RouteType::BlackHole, vec![]);
    assert!(matches!(
        next_hop_from_route(V4_DST, &hole),
        Err(NetlinkError::NotUnicast { .. })
    ));
}

#[test]
fn route_without_interface_is_an_error() {
    let r = route(RouteType::Unicast, vec![]);
    assert!(matches!(
        next_hop_from_route(V4_DST, &r),
        Err(NetlinkError::NoOutputInterface { .. })
    ));
}

#[test]
fn link_message_parsing() {
    let mut m = LinkMessage::default();
    m.header.index = 5;
    m.header.link_layer_type = LinkLayerType::Ether;
    m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
    m.attributes = vec![
        LinkAttribute::IfName("xlb0".into()),
        LinkAttribute::Address(vec![2, 0, 0x5e, 0, 0x53, 1]),
        LinkAttribute::Mtu(1400),
    ];
    let link = link_from_message(&m).unwrap();
    assert_eq!(
        link,
        Link {
            index: 5,
            name: "xlb0".into(),
            mac: [2, 0, 0x5e, 0, 0x53, 1],
            mtu: 1400,
            up: true,
            carrier: true,
        }
    );
    m.attributes = vec![LinkAttribute::IfName("eth0".into())];
    let err = link_from_message(&m).unwrap_err();
    assert!(
        err.to_string().contains("link-layer address of 0 bytes"),
        "{err}"
    );
    m.header.link_layer_type = LinkLayerType::None;
    m.attributes = vec![LinkAttribute::IfName("tun0".into())];
    let err = link_from_message(&m).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("interface tun0 is not an Ethernet interface (link type None)"),
        "{err}"
    );
}

#[test]
fn link_status_of_any_interface_with_its_xdp_program() {
    let mut m = LinkMessage::default();
    (m.header.index, m.header.link_layer_type) = (1, LinkLayerType::Loopback);
    m.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
    let xdp = |attached, prog| LinkAttribute::Xdp(vec![LinkXdp::Attached(attached), prog]);
    m.attributes = vec![
        LinkAttribute::IfName("lo".into()),
        LinkAttribute::Mtu(65536),
        xdp(XdpAttached::SocketBuffer, LinkXdp::ProgId(42)),
    ];
    let status = link_status_from_message(&m);
    let generic = XdpAttachment {
        mode: XdpAttachMode::Generic,
        prog_id: 42,
    };
    assert_eq!((status.index, status.name.as_str()), (1, "lo"));
    assert_eq!((status.mtu, status.up, status.carrier), (65536, true, true));
    assert_eq!(status.xdp, Some(generic));
    let mut mode_of = |attached, prog| {
        m.attributes = vec![xdp(attached, prog)];
        link_status_from_message(&m)
            .xdp
            .map(|x| (x.mode, x.prog_id))
    };
    assert_eq!(mode_of(XdpAttached::None, LinkXdp::ProgId(0)), None);
    let native = mode_of(XdpAttached::Driver, LinkXdp::ProgId(7));
    assert_eq!(native, Some((XdpAttachMode::Native, 7)));
    let hw = mode_of(XdpAttached::Hardware, LinkXdp::ProgId(8));
    assert_eq!(hw, Some((XdpAttachMode::Offload, 8)));
    // Several modes at once name no single program.
    let multi = mode_of(XdpAttached::Multiple, LinkXdp::DrvProgId(3));
    assert_eq!(multi, Some((XdpAttachMode::Multiple, 0)));
}

#[test]
fn interface_not_found_message() {
    let err = NetlinkError::InterfaceNotFound {
        name: "eth9".into(),
    };
    assert_eq!(err.to_string(), "interface eth9 not found: check `ip link`");
}

fn notification(inner: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
    NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(inner),
    )
}

#[test]
fn classify_notifications() {
    let neigh = |family| {
        let mut n = NeighbourMessage::default();
        n.header.family = family;
        RouteNetlinkMessage::NewNeighbour(n)
    };
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::NewLink(
            LinkMessage::default()
        ))),
        Some(NetEvent::Link)
    );
    assert_eq!(
        classify(&notification(neigh(AddressFamily::Inet6))),
        Some(NetEvent::Neigh)
    );
    assert_eq!(classify(&notification(neigh(AddressFamily::Bridge))), None);
    assert_eq!(
        classify(&notification(RouteNetlinkMessage::DelRoute(
            RouteMessage::default()
        ))),
        Some(NetEvent::Route)
    );
    let overrun = NetlinkMessage::<RouteNetlinkMessage>::new(
        NetlinkHeader::default(),
        NetlinkPayload::Overrun(Vec::new()),
    );
    assert_eq!(classify(&overrun), Some(NetEvent::Overrun));
}

#[tokio::test]
async fn new_outside_a_runtime_is_an_error() {
    // Inside a runtime it works without privileges (opening a route socket needs none).
    assert!(Netlink::new().is_ok());
    let outside = std::thread::spawn(|| Netlink::new().map(|_| ()))
        .join()
        .unwrap();
    assert!(matches!(outside, Err(NetlinkError::NoRuntime)));
}
