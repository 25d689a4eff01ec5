//! Links, routes and neighbours through rtnetlink: what the agent needs to fill `Backend.mac`
//! and `LbConfig.src_mac`/`mtu`, and a feed of changes that tells it when to fill them again.
//!
//! The XDP program sends every forwarded frame back out of the interface it arrived on
//! (`XDP_TX`), so per backend it needs the Ethernet address of the next hop: the backend itself
//! when it is on-link, else the gateway of the kernel's route to it (ipip/gue), or the backend's
//! own address (dsr-l2, which requires it on-link: check [`NextHop::gateway`] is `None`).
//! [`Netlink::resolve`] asks the kernel exactly what `ip route get` and `ip neigh get` would say
//! and, when the neighbour is not known yet, has the kernel resolve it (see [`Netlink::resolve`]).
//!
//! Sockets belong to the network namespace of the thread that creates them: create the
//! [`Netlink`] handle (and any [`NetWatch`]) on the namespace you mean to manage.
//!
//! Recommended use: subscribe with [`Netlink::watch`] *before* the first resolution so no change
//! between the two is missed, then re-resolve every backend on any [`NetEvent`]. Events are
//! deliberately coarse: a change anywhere in the link, neighbour or route tables means "look
//! again", which is simple and cannot miss a case.

use std::{
    io,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::stream::{StreamExt, TryStreamExt};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage, LinkXdp, XdpAttached},
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    sys::AsyncSocket,
};
use tokio::{sync::mpsc, task::JoinHandle};

mod neighbour;
mod table;
pub(crate) use neighbour::{NeighbourEntry, neighbour_entry};
pub use neighbour::{non_unicast_mac, usable_state};
pub use table::{RouteTable, TableRoute, split_datagram, table_route};

/// How long [`Netlink::resolve`] waits for a missing neighbour by default. The kernel sends
/// `mcast_solicit` (default 3) probes `retrans_time` (default 1 s) apart before it gives up.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

/// Errors of the netlink layer. Messages name the object and the command that shows it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    #[error("netlink needs a tokio runtime: create the Netlink handle from inside one")]
    NoRuntime,
    #[error("cannot open a netlink route socket: {0}")]
    Socket(#[source] io::Error),
    #[error("interface {name} not found: check `ip link`")]
    InterfaceNotFound { name: String },
    #[error("interface with index {index} not found: check `ip link`")]
    InterfaceIndexNotFound { index: u32 },
    #[error("interface {name} is not an Ethernet interface ({detail}): XDP forwarding needs one")]
    NotEthernet { name: String, detail: String },
    #[error("no route to {dst} ({source}): check `ip route get {dst}`")]
    NoRoute {
        dst: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "{dst} is not reachable through a unicast route (the kernel's route is of type {kind}): \
         check `ip route get {dst}`"
    )]
    NotUnicast { dst: IpAddr, kind: String },
    #[error("the kernel's route to {dst} names no output interface: check `ip route get {dst}`")]
    NoOutputInterface { dst: IpAddr },
    #[error(
        "next hop {neighbour} (toward {dst}) on interface index {ifindex} did not answer \
         address resolution within {waited:?}: is it up and on-link? check \
         `ip neigh show {neighbour}`"
    )]
    Unresolved {
        dst: IpAddr,
        neighbour: IpAddr,
        ifindex: u32,
        waited: Duration,
    },
    #[error(
        "next hop {neighbour} (toward {dst}) has link-layer address {}, which is {what} \
         address: forwarded frames cannot be sent to it; fix the entry (`ip neigh show \
         {neighbour}`)",
        neighbour::fmt_mac(mac)
    )]
    BadNeighbourMac {
        dst: IpAddr,
        neighbour: IpAddr,
        mac: [u8; 6],
        /// "the all-zero", "a multicast", "the broadcast".
        what: &'static str,
    },
    #[error("netlink {op} request failed: {source}")]
    Request {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("unexpected netlink answer to {op}: {detail}")]
    Unexpected { op: &'static str, detail: String },
}

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// An interface, as `ip link show NAME` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Its Ethernet address: the source MAC of forwarded frames (`LbConfig.src_mac`).
    pub mac: [u8; 6],
    /// L3 MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`): up *and* carrier means frames can leave.
    pub carrier: bool,
}

/// Where the kernel sends packets for one destination (`ip route get DST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Output interface. `XDP_TX` leaves by the ingress interface, so the agent should check it
    /// is the interface the program is attached to.
    pub ifindex: u32,
    /// The gateway, or `None` when the destination is on-link.
    pub gateway: Option<IpAddr>,
    /// Whose link-layer address the frame needs: the gateway, else the destination itself.
    pub neighbour_addr: IpAddr,
    /// The source address the kernel would pick (`src` of `ip route get`), if it names one.
    pub source: Option<IpAddr>,
}

/// A next hop together with its link-layer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub next_hop: NextHop,
    pub mac: [u8; 6],
}

/// A change in the kernel's tables; coarse on purpose (re-resolve on any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// An interface appeared, disappeared or changed (state, MTU, address...).
    Link,
    /// An IPv4/IPv6 neighbour entry changed.
    Neigh,
    /// An IPv4/IPv6 route changed.
    Route,
    /// The kernel dropped notifications (socket buffer overrun): anything may have changed.
    Overrun,
}

impl NetEvent {
    /// Every kind, in [`NetEvent::index`] order.
    pub const ALL: [NetEvent; 4] = [
        NetEvent::Link,
        NetEvent::Neigh,
        NetEvent::Route,
        NetEvent::Overrun,
    ];

    const fn index(self) -> usize {
        match self {
            NetEvent::Link => 0,
            NetEvent::Neigh => 1,
            NetEvent::Route => 2,
            NetEvent::Overrun => 3,
        }
    }

    /// Its metrics label (`metrics::NETLINK_EVENT_KINDS`).
    pub const fn kind(self) -> &'static str {
        match self {
            NetEvent::Link => "link",
            NetEvent::Neigh => "neigh",
            NetEvent::Route => "route",
            NetEvent::Overrun => "overrun",
        }
    }
}

/// Aborts a spawned task when the last owner goes away.
#[derive(Debug)]
struct TaskGuard(Vec<JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// An rtnetlink connection. Cheap to clone; the connection closes with the last clone.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
    resolve_timeout: Duration,
    _conn: Arc<TaskGuard>,
}

impl Netlink {
    /// Opens a route netlink socket in the calling thread's network namespace and spawns its
    /// driver on the current tokio runtime.
    pub fn new() -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        // `_unsolicited` is dropped: this socket joins no group, and the driver discards
        // anything unsolicited once nobody listens.
        let task = runtime.spawn(conn);
        Ok(Netlink {
            handle,
            resolve_timeout: DEFAULT_RESOLVE_TIMEOUT,
            _conn: Arc::new(TaskGuard(vec![task])),
        })
    }

    /// How long [`Netlink::resolve`] waits for a neighbour that is not known yet.
    pub fn with_resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }

    /// The Ethernet interface called `name` (see [`Netlink::link_status`] for any interface).
    pub async fn link_by_name(&self, name: &str) -> Result<Link> {
        link_from_message(&self.link_message_by_name(name).await?)
    }

    /// [`Netlink::link_by_name`] and whether an XDP program is attached to it, from one request
    /// (each neighbour resolution asks both).
    pub async fn link_with_xdp(&self, name: &str) -> Result<(Link, bool)> {
        let msg = self.link_message_by_name(name).await?;
        let attached = link_status_from_message(&msg).xdp.is_some();
        Ok((link_from_message(&msg)?, attached))
    }

    /// The interface with index `index`.
    pub async fn link_by_index(&self, index: u32) -> Result<Link> {
        let not_found = || NetlinkError::InterfaceIndexNotFound { index };
        if index == 0 {
            return Err(not_found());
        }
        let request = self.handle.link().get().match_index(index).execute();
        match first(request, "link get").await {
            Ok(Some(msg)) => link_from_message(&msg),
            Ok(None) => Err(not_found()),
            Err(e) if is_errno(&e, &[libc::ENODEV, libc::ENOENT]) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// The kernel's own answer to `ip route get DST`: an `RTM_GETROUTE` carrying `RTA_DST`
    /// (not a dump), so policy rules, multipath selection and every table count exactly as they
    /// do for the kernel's own packets.
    pub async fn next_hop(&self, dst: IpAddr) -> Result<NextHop> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        let request = self.handle.route().get(msg).execute();
        match first(request, "route get").await {
            Ok(Some(route)) => next_hop_from_route(dst, &route),
            Ok(None) => Err(NetlinkError::Unexpected {
                op: "route get",
                detail: format!("no route message for {dst}"),
            }),
            // An errno answer is the kernel's "no route" (ENETUNREACH, EHOSTUNREACH...).
            Err(NetlinkError::Request { source, .. }) if source.raw_os_error().is_some() => {
                Err(NetlinkError::NoRoute { dst, source })
            }
            Err(e) => Err(e),
        }
    }

    /// The link-layer address of `addr` on `ifindex`, if the neighbour table holds a usable
    /// entry (see [`usable_state`]). `RTM_GETNEIGH` for one entry (Linux >= 4.20), not a dump.
    pub async fn neighbour_mac(&self, ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
        Ok(self
            .neighbour(ifindex, addr)
            .await?
            .and_then(|entry| entry.usable_mac().ok().flatten()))
    }

    /// [`Netlink::resolve`], keeping only the address.
    pub async fn resolve_mac(&self, dst: IpAddr) -> Result<[u8; 6]> {
        Ok(self.resolve(dst).await?.mac)
    }

    /// Next hop toward `dst` and its link-layer address, resolving it if the kernel does not
    /// know it yet (waiting at most the resolve timeout, 3 s by default).
    ///
    /// Resolution is triggered the way `ip neigh replace ADDR dev DEV use` does it: an
    /// `RTM_NEWNEIGH` with `NTF_USE` (and `NLM_F_CREATE`), which makes the kernel create the
    /// entry if needed and run `neigh_event_send()` on it, exactly as if a packet were queued
    /// for that neighbour: it sends an ARP request / neighbour solicitation for that one
    /// address, with the kernel's own retries, and leaves any existing entry's state and address
    /// alone. Chosen over the "send a UDP datagram to port 9 through SO_BINDTODEVICE" trick
    /// because that one needs a source address on the interface, can be dropped by an output
    /// firewall or steered elsewhere by policy routing (then nothing is resolved), and puts a
    /// real datagram on the wire to a host that did not ask for it; `NTF_USE` sends nothing but
    /// the ARP/ND probe, and only to the neighbour being resolved. It needs CAP_NET_ADMIN,
    /// which the agent has anyway.
    ///
    /// For IPv6 the kernel sends its solicitation from the interface's link-local address and
    /// holds it back while that is tentative (DAD, the first second or two after the link comes
    /// up); it retries every `retrans_time`, which the wait covers.
    ///
    /// Then the entry is polled (20 ms, doubling to 200 ms). If the kernel gives up first (entry
    /// FAILED or gone), the trigger is repeated, at most once a second.
    pub async fn resolve(&self, dst: IpAddr) -> Result<Resolution> {
        let next_hop = self.next_hop(dst).await?;
        let (ifindex, neighbour) = (next_hop.ifindex, next_hop.neighbour_addr);
        let start = Instant::now();
        let deadline = start + self.resolve_timeout;
        let mut last_trigger: Option<Instant> = None;
        let mut pause = Duration::from_millis(20);
        loop {
            let entry = self.neighbour(ifindex, neighbour).await?;
            match entry.as_ref().map(NeighbourEntry::usable_mac) {
                Some(Ok(Some(mac))) => return Ok(Resolution { next_hop, mac }),
                // Waiting would not change it: the kernel holds this address for it.
                Some(Err(what)) => {
                    return Err(NetlinkError::BadNeighbourMac {
                        dst,
                        neighbour,
                        mac: entry.and_then(|e| e.mac).unwrap_or_default(),
                        what,
                    });
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NetlinkError::Unresolved {
                    dst,
                    neighbour,
                    ifindex,
                    waited: now - start,
                });
            }
            // Trigger on the first miss; again only if the kernel has given up (FAILED or the
            // entry vanished) and a second has passed, so probes are never sent faster than
            // the kernel itself would.
            let given_up = entry
                .as_ref()
                .is_none_or(|e| matches!(e.state, NeighbourState::Failed | NeighbourState::None));
            let due =
                last_trigger.is_none_or(|t| given_up && t.elapsed() >= Duration::from_secs(1));
            if due {
                self.probe_neighbour(ifindex, neighbour).await?;
                last_trigger = Some(Instant::now());
            }
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Asks the kernel to resolve `addr` on `ifindex`, or to re-confirm it, as
    /// [`Netlink::resolve`] describes; returns at once. A STALE entry goes to DELAY and then to
    /// a unicast probe, so a periodic call lets the agent notice a neighbour whose address
    /// changed silently (forwarded frames bypass the kernel's neighbour machinery, so nothing
    /// else would re-confirm it); the change then shows up as a [`NetEvent::Neigh`].
    pub async fn probe_neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, addr)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            // REPLACE rather than EXCL, so an existing (INCOMPLETE/FAILED/STALE) entry is not an
            // EEXIST error; with NTF_USE the kernel does not update the entry either way.
            .replace()
            .execute()
            .await
            .map_err(|e| request_error("neighbour use", e))
    }

    /// One neighbour entry, whatever its state.
    async fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<Option<NeighbourEntry>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(addr);
        msg.header.ifindex = ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(match addr {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut handle = self.handle.clone();
        let mut response = handle
            .request(req)
            .map_err(|e| request_error("neighbour get", e))?;
        let mut found = None;
        while let Some(message) = response.next().await {
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                    found = Some(neighbour_entry(&n));
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    let err = e.to_io();
                    if err.raw_os_error() == Some(libc::ENOENT) {
                        return Ok(None);
                    }
                    return Err(NetlinkError::Request {
                        op: "neighbour get",
                        source: err,
                    });
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Subscribes to link, neighbour and IPv4/IPv6 route changes (`RTNLGRP_LINK`,
    /// `RTNLGRP_NEIGH`, `RTNLGRP_IPV4_ROUTE`, `RTNLGRP_IPV6_ROUTE`) on a socket of its own.
    pub fn watch(&self) -> Result<NetWatch> {
        NetWatch::new()
    }
}

/// A feed of [`NetEvent`]s. Dropping it closes the subscription.
#[derive(Debug)]
pub struct NetWatch {
    events: mpsc::Receiver<NetEvent>,
    /// Notifications received since the last [`NetWatch::take_counts`], by
    /// [`NetEvent::index`]: also those the full queue left out.
    counts: Arc<[AtomicU64; 4]>,
    _tasks: TaskGuard,
}

/// Queued events beyond this are dropped: the queue is not empty, so the consumer will look
/// again after the change anyway (events carry no detail that could be lost).
const WATCH_QUEUE: usize = 64;

impl NetWatch {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ];
        let (mut conn, _handle, mut messages) =
            rtnetlink::new_multicast_connection(&groups).map_err(NetlinkError::Socket)?;
        // A bigger buffer makes overruns (and the resulting Overrun event) rarer on busy hosts;
        // the kernel caps it at net.core.rmem_max, which is fine.
        let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(1 << 20);
        let (tx, events) = mpsc::channel(WATCH_QUEUE);
        let counts: Arc<[AtomicU64; 4]> = Arc::default();
        let counted = Arc::clone(&counts);
        let driver = runtime.spawn(conn);
        let forwarder = runtime.spawn(async move {
            while let Some((message, _)) = messages.next().await {
                let Some(event) = classify(&message) else {
                    continue;
                };
                counted[event.index()].fetch_add(1, Ordering::Relaxed);
                match tx.try_send(event) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            // The driver ended (socket error): closing `tx` tells the consumer.
        });
        Ok(NetWatch {
            events,
            counts,
            _tasks: TaskGuard(vec![driver, forwarder]),
        })
    }

    /// The next change. `None` means the subscription died (netlink socket error): open a new
    /// one with [`Netlink::watch`] and re-resolve everything.
    pub async fn recv(&mut self) -> Option<NetEvent> {
        self.events.recv().await
    }

    /// A change that is already queued, if any.
    pub fn try_recv(&mut self) -> Option<NetEvent> {
        self.events.try_recv().ok()
    }

    /// Notifications received since the last call, by kind (those a burst coalesced too).
    pub fn take_counts(&self) -> impl Iterator<Item = (NetEvent, u64)> + '_ {
        NetEvent::ALL
            .into_iter()
            .map(|e| (e, self.counts[e.index()].swap(0, Ordering::Relaxed)))
    }
}

/// Which event a notification is, if it is one we report. Neighbour messages of other families
/// (bridge FDB entries share `RTNLGRP_NEIGH`) are not.
pub fn classify(message: &NetlinkMessage<RouteNetlinkMessage>) -> Option<NetEvent> {
    match &message.payload {
        NetlinkPayload::Overrun(_) => Some(NetEvent::Overrun),
        NetlinkPayload::InnerMessage(inner) => match inner {
            RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_) => {
                Some(NetEvent::Link)
            }
            RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
                matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6)
                    .then_some(NetEvent::Neigh)
            }
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => {
                Some(NetEvent::Route)
            }
            _ => None,
        },
        _ => None,
    }
}

/// Reads a [`Link`] out of an `RTM_NEWLINK` answer.
pub fn link_from_message(msg: &LinkMessage) -> Result<Link> {
    let status = link_status_from_message(msg);
    let address = msg.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(a) => Some(a.as_slice()),
        _ => None,
    });
    let not_ethernet = |detail: String| NetlinkError::NotEthernet {
        name: status.name.clone(),
        detail,
    };
    // Loopback also reports a 6-byte (all-zero) address: check the type first.
    if msg.header.link_layer_type != LinkLayerType::Ether {
        return Err(not_ethernet(format!(
            "link type {:?}",
            msg.header.link_layer_type
        )));
    }
    let address = address.unwrap_or_default();
    let mac = <[u8; 6]>::try_from(address)
        .map_err(|_| not_ethernet(format!("link-layer address of {} bytes", address.len())))?;
    Ok(Link {
        index: status.index,
        name: status.name,
        mac,
        mtu: status.mtu,
        up: status.up,
        carrier: status.carrier,
    })
}

/// Reads a [`NextHop`] out of the kernel's answer to `RTM_GETROUTE` for `dst`.
pub fn next_hop_from_route(dst: IpAddr, route: &RouteMessage) -> Result<NextHop> {
    if route.header.kind != RouteType::Unicast {
        return Err(NetlinkError::NotUnicast {
            dst,
            kind: format!("{:?}", route.header.kind).to_lowercase(),
        });
    }
    let mut ifindex = None;
    let mut gateway = None;
    let mut source = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(a) => gateway = ip_of_route_address(a),
            // An IPv4 route through an IPv6 gateway (RFC 5549, `via inet6 ADDR`).
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::PrefSource(a) => source = ip_of_route_address(a),
            _ => {}
        }
    }
    let ifindex = ifindex
        .filter(|&i| i != 0)
        .ok_or(NetlinkError::NoOutputInterface { dst })?;
    Ok(NextHop {
        ifindex,
        gateway,
        neighbour_addr: gateway.unwrap_or(dst),
        source,
    })
}

fn ip_of_route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The first message of a request's answer.
async fn first<T>(
    stream: impl futures_util::Stream<Item = Result<T, rtnetlink::Error>>,
    op: &'static str,
) -> Result<Option<T>> {
    let mut stream = std::pin::pin!(stream);
    stream.try_next().await.map_err(|e| request_error(op, e))
}

fn request_error(op: &'static str, e: rtnetlink::Error) -> NetlinkError {
    let source = match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    };
    NetlinkError::Request { op, source }
}

fn is_errno(e: &NetlinkError, codes: &[i32]) -> bool {
    matches!(e, NetlinkError::Request { source, .. }
        if source.raw_os_error().is_some_and(|c| codes.contains(&c)))
}

/// Any interface, Ethernet or not (loopback, tunnels), as `ip -d link show NAME` reports it:
/// enough to judge whether it can carry xlb, before the agent insists on an Ethernet [`Link`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub index: u32,
    pub name: String,
    /// L3 MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// The XDP program attached to it (`IFLA_XDP`), if any.
    pub xdp: Option<XdpAttachment>,
}

/// An XDP program attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    pub mode: XdpAttachMode,
    /// `IFLA_XDP_PROG_ID`; 0 when the kernel names none (it does not with several modes at
    /// once, where each mode reports its own program).
    pub prog_id: u32,
}

/// How an XDP program is attached (`IFLA_XDP_ATTACHED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// In the driver (`XDP_ATTACHED_DRV`).
    Native,
    /// On the skb path (`XDP_ATTACHED_SKB`).
    Generic,
    /// In the NIC (`XDP_ATTACHED_HW`).
    Offload,
    /// Several of the above at once, or a mode this build does not know.
    Multiple,
}

impl Netlink {
    /// The interface called `name`, whatever its type, with its XDP attachment. Asked of the
    /// socket's network namespace, like every request here: unlike `/sys/class/net`, which shows
    /// the namespace sysfs was mounted in, this is right under `nsenter --net=...`.
    pub async fn link_status(&self, name: &str) -> Result<LinkStatus> {
        Ok(link_status_from_message(
            &self.link_message_by_name(name).await?,
        ))
    }

    async fn link_message_by_name(&self, name: &str) -> Result<LinkMessage> {
        let not_found = || NetlinkError::InterfaceNotFound {
            name: name.to_owned(),
        };
        // The kernel rejects such names with EINVAL; no interface can carry one.
        if name.is_empty() || name.len() > IFNAME_MAX {
            return Err(not_found());
        }
        let request = self.handle.link().get().match_name(name).execute();
        match first(request, "link get").await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(not_found()),
            Err(e) if is_errno(&e, &[libc::ENODEV, libc::ENOENT]) => Err(not_found()),
            Err(e) => Err(e),
        }
    }
}

/// Reads a [`LinkStatus`] out of an `RTM_NEWLINK` answer.
pub fn link_status_from_message(msg: &LinkMessage) -> LinkStatus {
    let mut status = LinkStatus {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        xdp: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => status.name = n.clone(),
            LinkAttribute::Mtu(m) => status.mtu = *m,
            LinkAttribute::Xdp(xdp) => status.xdp = xdp_attachment(xdp),
            _ => {}
        }
    }
    status
}

fn xdp_attachment(attrs: &[LinkXdp]) -> Option<XdpAttachment> {
    let mut mode = None;
    let mut prog_id = 0;
    for attr in attrs {
        match attr {
            LinkXdp::Attached(a) => {
                mode = match a {
                    XdpAttached::None => None,
                    XdpAttached::Driver => Some(XdpAttachMode::Native),
                    XdpAttached::SocketBuffer => Some(XdpAttachMode::Generic),
                    XdpAttached::Hardware => Some(XdpAttachMode::Offload),
                    _ => Some(XdpAttachMode::Multiple),
                }
            }
            LinkXdp::ProgId(id) => prog_id = *id,
            _ => {}
        }
    }
    mode.map(|mode| XdpAttachment { mode, prog_id })
}

#[cfg(test)]
mod tests;

/// The index of interface `name` in the calling thread's network namespace, `None` if there is
/// no such interface. Synchronous and without a runtime, for config validation: it answers for
/// the namespace xlb runs in (under `nsenter --net=...` too), where `/sys/class/net` shows the
/// namespace of whoever mounted sysfs.
pub fn interface_index(name: &str) -> io::Result<Option<u32>> {
    // A NUL byte cannot be part of an interface name.
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index != 0 {
        return Ok(Some(index));
    }
    let err = io::Error::last_os_error();
    // ENODEV: no such interface (also what it says for names longer than IFNAMSIZ - 1).
    if err.raw_os_error() == Some(libc::ENODEV) {
        Ok(None)
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod interface_index_tests {
    use super::interface_index;

    #[test]
    fn loopback_exists_and_made_up_names_do_not() {
        assert!(interface_index("lo").unwrap().is_some_and(|i| i > 0));
        for name in ["xlb-nosuch0", "", "a/b", "averyveryverylongname", "e\0th0"] {
            assert_eq!(interface_index(name).unwrap(), None, "{name:?}");
        }
    }
}
