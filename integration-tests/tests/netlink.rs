//! `lb_userspace::netlink` against a real kernel, inside two network namespaces this test
//! creates (and removes, even on panic): `A` holds the handle under test, `B` plays the
//! neighbour / gateway, joined by a veth pair. Only documentation addresses are used and
//! nothing in the root namespace is touched.
//!
//! Needs root (to create namespaces): fails loudly rather than skip.

use std::{net::IpAddr, time::Duration};

use lb_userspace::netlink::{NetEvent, NetWatch, Netlink, NetlinkError};
use xlb_testkit::netns::Netns;
use xlb_testkit::testbed::ip_in;

const VETH_A: &str = "xlbt-a";
const VETH_B: &str = "xlbt-b";
const MAC_A: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
const MAC_B: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x02];
const MTU_A: u32 = 1400;

fn mac_str(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn ip(addr: &str) -> IpAddr {
    addr.parse().unwrap()
}

/// Two namespaces joined by a veth pair:
/// A: xlbt-a 192.0.2.1/24 2001:db8::1/64, routes 198.51.100.0/24 via 192.0.2.2 and
///    2001:db8:1::/64 via 2001:db8::2;  B: xlbt-b 192.0.2.2/24 2001:db8::2/64.
struct Bed {
    // Field order is drop order: B goes with A's veth anyway.
    a: Netns,
    _b: Netns,
}

impl Bed {
    fn new() -> Bed {
        let a = Netns::new("nl");
        let b = Netns::new("nl");
        let (ma, mb, mtu) = (mac_str(MAC_A), mac_str(MAC_B), MTU_A.to_string());
        // No duplicate address detection on interfaces created from here on (B's veth takes
        // B's defaults when it moves there), link-local addresses included: the kernel sources
        // the neighbour solicitations it originates from the link-local address and holds them
        // back while that is tentative; and B must answer at once.
        a.sysctl("net/ipv6/conf/default/accept_dad", "0");
        b.sysctl("net/ipv6/conf/default/accept_dad", "0");
        a.ip(&[
            "link", "add", VETH_A, "address", &ma, "mtu", &mtu, "type", "veth", "peer", "name",
            VETH_B, "address", &mb, "netns", &b.name,
        ]);
        // Up before addressing: an IPv6 address added to a link that is down joins its
        // solicited-node group only once the link's addrconf work runs after it comes up, and
        // B ignores solicitations until then (the first probe would be lost, costing 1 s).
        a.ip(&["link", "set", VETH_A, "up"]);
        b.ip(&["link", "set", VETH_B, "up"]);
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", VETH_A]);
        a.ip(&["addr", "add", "2001:db8::1/64", "dev", VETH_A, "nodad"]);
        b.ip(&["addr", "add", "192.0.2.2/24", "dev", VETH_B]);
        b.ip(&["addr", "add", "2001:db8::2/64", "dev", VETH_B, "nodad"]);
        a.ip(&[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "192.0.2.2",
            "dev",
            VETH_A,
        ]);
        a.ip(&[
            "-6",
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            "2001:db8::2",
            "dev",
            VETH_A,
        ]);
        Bed { a, _b: b }
    }

    /// Empties A's neighbour cache, so resolution has to start from nothing.
    fn flush_neighbours(&self) {
        self.a.ip(&["neigh", "flush", "dev", VETH_A]);
        self.a.ip(&["-6", "neigh", "flush", "dev", VETH_A]);
    }

    /// A bed whose A starts with an empty neighbour cache, and the index of A's veth.
    fn flushed() -> (Bed, u32) {
        let bed = Bed::new();
        bed.flush_neighbours();
        let index = bed.a.ifindex(VETH_A);
        (bed, index)
    }
}

/// A handle in A, once A's cache is seen not to hold `addr`: what the test resolves next is
/// resolved from nothing.
async fn handle_without(index: u32, addr: &str) -> Netlink {
    let nl = Netlink::new().unwrap();
    assert_eq!(nl.neighbour_mac(index, ip(addr)).await.unwrap(), None);
    nl
}

#[test]
fn link_by_name_reports_index_mac_mtu_and_state() {
    let bed = Bed::new();
    let index = bed.a.ifindex(VETH_A);
    bed.a.run(move || async move {
        let nl = Netlink::new().unwrap();
        let link = nl.link_by_name(VETH_A).await.unwrap();
        assert_eq!(link.index, index);
        assert_eq!(link.name, VETH_A);
        assert_eq!(link.mac, MAC_A);
        assert_eq!(link.mtu, MTU_A);
        assert!(link.up);
        assert!(link.carrier);
        assert_eq!(nl.link_by_index(index).await.unwrap(), link);
    });
}

#[test]
fn unknown_interface_is_a_clear_error() {
    let bed = Bed::new();
    bed.a.run(|| async {
        let nl = Netlink::new().unwrap();
        let err = nl.link_by_name("eth9").await.unwrap_err();
        assert!(
            matches!(err, NetlinkError::InterfaceNotFound { .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "interface eth9 not found: check `ip link`");
        // Longer than IFNAMSIZ: cannot exist either.
        let err = nl
            .link_by_name("an-interface-name-too-long")
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetlinkError::InterfaceNotFound { .. }),
            "{err:?}"
        );
        // Loopback reports a 6-byte address too, but is no Ethernet interface.
        let err = nl.link_by_name("lo").await.unwrap_err();
        assert!(matches!(err, NetlinkError::NotEthernet { .. }), "{err:?}");
        let err = nl.link_by_index(999_999).await.unwrap_err();
        assert!(
            matches!(err, NetlinkError::InterfaceIndexNotFound { .. }),
            "{err:?}"
        );
    });
}

#[test]
fn next_hop_follows_the_kernels_routes() {
    let bed = Bed::new();
    let index = bed.a.ifindex(VETH_A);
    bed.a.run(move || async move {
        let nl = Netlink::new().unwrap();

        let hop = nl.next_hop(ip("198.51.100.7")).await.unwrap();
        assert_eq!(hop.ifindex, index);
        assert_eq!(hop.gateway, Some(ip("192.0.2.2")));
        assert_eq!(hop.neighbour_addr, ip("192.0.2.2"));
        assert_eq!(hop.source, Some(ip("192.0.2.1")));

        let hop = nl.next_hop(ip("192.0.2.2")).await.unwrap();
        assert_eq!(hop.ifindex, index);
        assert_eq!(hop.gateway, None);
        assert_eq!(hop.neighbour_addr, ip("192.0.2.2"));

        let hop = nl.next_hop(ip("2001:db8:1::5")).await.unwrap();
        assert_eq!(hop.ifindex, index);
        assert_eq!(hop.gateway, Some(ip("2001:db8::2")));
        assert_eq!(hop.neighbour_addr, ip("2001:db8::2"));

        let hop = nl.next_hop(ip("2001:db8::2")).await.unwrap();
        assert_eq!(hop.ifindex, index);
        assert_eq!(hop.gateway, None);
        assert_eq!(hop.neighbour_addr, ip("2001:db8::2"));

        // No default route in A: nothing else is reachable.
        let err = nl.next_hop(ip("203.0.113.9")).await.unwrap_err();
        assert!(matches!(err, NetlinkError::NoRoute { .. }), "{err:?}");
        assert!(
            err.to_string().contains("ip route get 203.0.113.9"),
            "{err}"
        );
        let err = nl.next_hop(ip("2001:db8:2::9")).await.unwrap_err();
        assert!(matches!(err, NetlinkError::NoRoute { .. }), "{err:?}");

        // A's own address is delivered locally, never forwarded.
        let err = nl.next_hop(ip("192.0.2.1")).await.unwrap_err();
        assert!(matches!(err, NetlinkError::NotUnicast { .. }), "{err:?}");
    });
}

#[test]
fn resolve_mac_v4_from_an_empty_cache() {
    let (bed, index) = Bed::flushed();
    bed.a.run(move || async move {
        let nl = handle_without(index, "192.0.2.2").await;

        assert_eq!(nl.resolve_mac(ip("192.0.2.2")).await.unwrap(), MAC_B);
        assert_eq!(
            nl.neighbour_mac(index, ip("192.0.2.2")).await.unwrap(),
            Some(MAC_B)
        );
        // Behind the gateway: the gateway's address, now cached.
        let res = nl.resolve(ip("198.51.100.7")).await.unwrap();
        assert_eq!(res.mac, MAC_B);
        assert_eq!(res.next_hop.gateway, Some(ip("192.0.2.2")));
    });
}

#[test]
fn resolve_mac_v6_on_link_and_via_gateway() {
    let (bed, index) = Bed::flushed();
    bed.a.run(move || async move {
        let nl = handle_without(index, "2001:db8::2").await;
        // Through the gateway first, from an empty cache: resolves 2001:db8::2.
        let res = nl.resolve(ip("2001:db8:1::5")).await.unwrap();
        assert_eq!(res.mac, MAC_B);
        assert_eq!(res.next_hop.neighbour_addr, ip("2001:db8::2"));
        assert_eq!(nl.resolve_mac(ip("2001:db8::2")).await.unwrap(), MAC_B);
    });
    // And on-link from an empty cache.
    bed.flush_neighbours();
    bed.a.run(|| async {
        let nl = Netlink::new().unwrap();
        assert_eq!(nl.resolve_mac(ip("2001:db8::2")).await.unwrap(), MAC_B);
    });
}

#[test]
fn resolve_mac_gives_up_on_an_absent_neighbour() {
    let bed = Bed::new();
    bed.a.run(|| async {
        let nl = Netlink::new()
            .unwrap()
            .with_resolve_timeout(Duration::from_millis(600));
        // Nobody holds 192.0.2.99 on the segment.
        let started = std::time::Instant::now();
        let err = nl.resolve_mac(ip("192.0.2.99")).await.unwrap_err();
        assert!(matches!(err, NetlinkError::Unresolved { .. }), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(
            text.contains("192.0.2.99") && text.contains("ip neigh show"),
            "{text}"
        );
    });
}

#[test]
fn neighbour_mac_counts_only_usable_states() {
    let bed = Bed::new();
    let index = bed.a.ifindex(VETH_A);
    for (addr, state) in [("192.0.2.50", "permanent"), ("192.0.2.51", "stale")] {
        bed.a.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            "02:00:5e:10:00:50",
            "dev",
            VETH_A,
            "nud",
            state,
        ]);
    }
    bed.a.ip(&[
        "neigh",
        "replace",
        "192.0.2.52",
        "dev",
        VETH_A,
        "nud",
        "incomplete",
    ]);
    bed.a.run(move || async move {
        let nl = Netlink::new().unwrap();
        let want = Some([0x02, 0x00, 0x5e, 0x10, 0x00, 0x50]);
        assert_eq!(
            nl.neighbour_mac(index, ip("192.0.2.50")).await.unwrap(),
            want
        );
        assert_eq!(
            nl.neighbour_mac(index, ip("192.0.2.51")).await.unwrap(),
            want
        );
        assert_eq!(
            nl.neighbour_mac(index, ip("192.0.2.52")).await.unwrap(),
            None
        );
        assert_eq!(
            nl.neighbour_mac(index, ip("192.0.2.53")).await.unwrap(),
            None
        );
    });
}

/// Waits (bounded) for `want`, skipping other events.
async fn expect_event(watch: &mut NetWatch, want: NetEvent) {
    let wait = async {
        loop {
            match watch.recv().await {
                Some(e) if e == want => return,
                Some(_) => {}
                None => panic!("watch closed while waiting for {want:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), wait)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} event within 3 s"));
}

#[test]
fn watch_reports_neighbour_route_and_link_changes() {
    let bed = Bed::new();
    let ns = bed.a.name.clone();
    bed.a.run(move || async move {
        let nl = Netlink::new().unwrap();
        let mut watch = nl.watch().unwrap();
        // `ip` runs in its own process: the commands below target namespace A by name.
        let ip_a = |args: &[&str]| ip_in(&ns, args);

        ip_a(&[
            "neigh",
            "replace",
            "192.0.2.77",
            "lladdr",
            "02:00:5e:10:00:77",
            "dev",
            VETH_A,
        ]);
        expect_event(&mut watch, NetEvent::Neigh).await;

        ip_a(&[
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            "192.0.2.2",
            "dev",
            VETH_A,
        ]);
        expect_event(&mut watch, NetEvent::Route).await;

        ip_a(&[
            "-6",
            "route",
            "add",
            "2001:db8:2::/64",
            "via",
            "2001:db8::2",
            "dev",
            VETH_A,
        ]);
        expect_event(&mut watch, NetEvent::Route).await;

        ip_a(&["link", "set", VETH_A, "mtu", "1300"]);
        expect_event(&mut watch, NetEvent::Link).await;

        // Every notification was counted, those a full queue would have left out too.
        let counts: std::collections::BTreeMap<&str, u64> =
            watch.take_counts().map(|(e, n)| (e.kind(), n)).collect();
        for kind in ["neigh", "route", "link"] {
            assert!(
                counts[kind] >= 1,
                "no {kind} notification counted: {counts:?}"
            );
        }
        assert!(counts["route"] >= 2, "{counts:?}");
        assert!(
            watch.take_counts().all(|(_, n)| n == 0),
            "the counts start again from zero"
        );
    });
}
