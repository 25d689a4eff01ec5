//! Host routes in one routing table, tagged with one route protocol number: what the agent
//! writes for a BGP speaker to learn (`ip route add ADDR/32 dev lo table T proto P scope
//! link`), removes, and lists back at start; `xlb doctor` lists them too, to compare with
//! what BIRD learned.
//!
//! Synchronous on purpose: a route request is one datagram and its acknowledgement, made
//! from the agent's event loop like a map write (and a dump is answered at once, so doctor
//! can make it from async code). The socket belongs to the network namespace of the thread
//! that opens it, like every socket of this module.

use std::io;
use std::net::IpAddr;

use netlink_packet_route::{
    RouteNetlinkMessage,
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{NetlinkError, Result, family, interface_index, ip_of_route_address};

/// One route found in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRoute {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub protocol: u8,
}

impl TableRoute {
    /// A host route (/32, /128): the only kind this module writes.
    pub fn is_host(&self) -> bool {
        self.prefix_len == if self.dst.is_ipv4() { 32 } else { 128 }
    }
}

/// Routes of table `table` with protocol `protocol`, through a netlink route socket.
#[derive(Debug)]
pub struct RouteTable {
    socket: Socket,
    seq: u32,
    table: u32,
    protocol: u8,
    lo: u32,
}

impl RouteTable {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn open(table: u32, protocol: u8) -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        let lo = interface_index("lo")
            .map_err(NetlinkError::Socket)?
            .ok_or_else(|| NetlinkError::InterfaceNotFound { name: "lo".into() })?;
        Ok(Self {
            socket,
            seq: 0,
            table,
            protocol,
            lo,
        })
    }

    pub fn table(&self) -> u32 {
        self.table
    }

    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Adds (or replaces) the host route of `addr`.
    pub fn add(&mut self, addr: IpAddr) -> Result<()> {
        let msg = self.host_route(addr);
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            "route add",
        )
    }

    /// Deletes the host route of `addr` if this table holds one with our protocol (the kernel
    /// matches the protocol of a delete request, so another program's route stays).
    pub fn delete(&mut self, addr: IpAddr) -> Result<()> {
        let msg = self.host_route(addr);
        match self.ack(RouteNetlinkMessage::DelRoute(msg), 0, "route del") {
            Err(NetlinkError::Request { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Every route of the table, whatever its protocol.
    pub fn list(&mut self) -> Result<Vec<TableRoute>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = netlink_packet_route::AddressFamily::Unspec;
        let seq = self.send(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP, "route dump")?;
        let mut out = Vec::new();
        loop {
            for m in self.receive("route dump")? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NetlinkError::Request {
                            op: "route dump",
                            source: e.to_io(),
                        });
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                        if let Some(route) = self.in_table(&r) {
                            out.push(route);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Whether `r` is a route this module writes: a host route with our protocol. Routes of the
    /// table that are not are someone else's.
    pub fn is_ours(&self, r: &TableRoute) -> bool {
        r.protocol == self.protocol && r.is_host()
    }

    /// `r` as a [`TableRoute`] if it is in our table.
    fn in_table(&self, r: &RouteMessage) -> Option<TableRoute> {
        table_route(r, self.table)
    }

    fn host_route(&self, addr: IpAddr) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(addr);
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        // Tables above 255 only fit the attribute; the header then says "unspecified".
        msg.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.header.protocol = RouteProtocol::from(self.protocol);
        // As `ip route add` picks them: link scope for an IPv4 route without gateway, universe
        // for IPv6 (which has no link-scoped unicast routes).
        msg.header.scope = if addr.is_ipv4() {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        msg.attributes.push(RouteAttribute::Table(self.table));
        msg.attributes.push(RouteAttribute::Oif(self.lo));
        msg
    }

    /// Sends a request and waits for its acknowledgement.
    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &'static str) -> Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK, op)?;
        loop {
            for m in self.receive(op)? {
                if m.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(e) = m.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(NetlinkError::Request {
                            op,
                            source: e.to_io(),
                        }),
                    };
                }
            }
        }
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &'static str) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| NetlinkError::Request { op, source })?;
        Ok(self.seq)
    }

    /// The messages of one datagram.
    fn receive(&mut self, op: &'static str) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        let (buf, _) = self
            .socket
            .recv_from_full()
            .map_err(|source| NetlinkError::Request { op, source })?;
        split_datagram(&buf, op)
    }
}

/// `r` as a [`TableRoute`] if it is in table `table`; a route without a destination is the
/// default route of its family, and one of another family (or none) is not ours to list.
pub fn table_route(r: &RouteMessage, table: u32) -> Option<TableRoute> {
    if route_table(r) != table {
        return None;
    }
    let dst = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => ip_of_route_address(d),
            _ => None,
        })
        .or(match r.header.address_family {
            netlink_packet_route::AddressFamily::Inet => {
                Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
            }
            netlink_packet_route::AddressFamily::Inet6 => {
                Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
            }
            _ => None,
        })?;
    Some(TableRoute {
        dst,
        prefix_len: r.header.destination_prefix_length,
        protocol: r.header.protocol.into(),
    })
}

/// The messages of one datagram from the kernel, each `nlmsg_len` long and 4-byte aligned; a
/// length field that runs past the datagram ends the walk. A message the netlink crate cannot
/// read is an error carrying its reason.
pub fn split_datagram(
    buf: &[u8],
    op: &'static str,
) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || len > buf.len() - at {
            break;
        }
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..at + len]).map_err(
            |e| NetlinkError::Unexpected {
                op,
                detail: e.to_string(),
            },
        )?;
        out.push(msg);
        // Messages are 4-byte aligned.
        at = at.saturating_add(len.next_multiple_of(4));
    }
    if out.is_empty() {
        return Err(NetlinkError::Request {
            op,
            source: io::Error::other("empty netlink answer"),
        });
    }
    Ok(out)
}

/// The table id of `r`: `RTA_TABLE` when present (needed above 255), else the header's.
fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(r.header.table.into())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use rtnetlink::RouteMessageBuilder;

    use super::*;

    #[test]
    fn host_routes_are_built_like_ip_route_add() {
        let Ok(t) = RouteTable::open(1000, 200) else {
            // Opening a route socket needs no privilege; an error here is a real failure.
            panic!("cannot open a route socket");
        };
        let v4 = t.host_route("203.0.113.10".parse().unwrap());
        assert_eq!(v4.header.destination_prefix_length, 32);
        assert_eq!(v4.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert_eq!(u8::from(v4.header.protocol), 200);
        assert_eq!(v4.header.scope, RouteScope::Link);
        assert!(v4.attributes.contains(&RouteAttribute::Table(1000)));
        let v6 = t.host_route("2001:db8::10".parse().unwrap());
        assert_eq!(v6.header.destination_prefix_length, 128);
        assert_eq!(v6.header.scope, RouteScope::Universe);
        let ours = t.in_table(&v6).unwrap();
        assert!(ours.is_host());
        assert_eq!(ours.protocol, 200);
        let mut other = v6.clone();
        other
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Table(_)));
        other.attributes.push(RouteAttribute::Table(254));
        assert_eq!(t.in_table(&other), None);
    }

    /// What doctor reads of the table: the id from the header or, above 255, from the
    /// attribute, and only host routes as ours.
    #[test]
    fn host_routes_of_the_table() {
        let t = RouteTable::open(200, RouteProtocol::Static.into()).expect("a route socket");
        let ours = |r: &RouteMessage| t.in_table(r).filter(|r| t.is_ours(r)).map(|r| r.dst);
        let mut r = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(203, 0, 113, 10), 32)
            .table_id(200)
            .build();
        assert_eq!(route_table(&r), 200);
        assert_eq!(ours(&r), Some("203.0.113.10".parse().unwrap()));
        r.header.destination_prefix_length = 24;
        assert_eq!(ours(&r), None);
        let big = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix("2001:db8::1".parse().unwrap(), 128)
            .table_id(100_000)
            .build();
        assert_eq!(route_table(&big), 100_000);
    }
}
