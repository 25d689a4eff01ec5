//! The address plan of the namespace testbeds: one L2 segment, 198.51.100.0/24 and
//! 2001:db8:51::/64 (LB .2, client .100, backends .11 up), and one VIP per forwarding mode,
//! 203.0.113.10-12 and 2001:db8:113::10-12. Documentation ranges only.
//!
//! `xlb_testkit::testbed` builds its topology from it, and `cargo xtask bench` its own
//! benchmark topology. It has no dependencies: xtask must compile before the eBPF toolchain
//! is set up, and xlb-testkit links lb-userspace, whose build script builds the eBPF object.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The LB's address on the segment (also the tunnels' outer source).
pub const LB_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const LB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 2);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 0x100);
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
/// Port of the backends' HTTP servers (and of the TCP VIPs).
pub const HTTP_PORT: u16 = 80;
/// Port of the backends' UDP responders (and of the UDP VIPs).
pub const UDP_PORT: u16 = 9000;
/// Backends at most (addresses .11 up).
pub const MAX_BACKENDS: usize = 50;

// The routed testbed of several LB nodes (xlb_testkit::testbed::cluster): the client on a link
// of its own behind a router, the router and the LB nodes on the segment above, BGP between them.

/// LB nodes at most (segment addresses .2 up to .9).
pub const MAX_LBS: usize = 8;
/// The router's address on the LB segment.
pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 1);
/// The router's and the client's addresses on the client link (192.0.2.0/24, 2001:db8:2::/64).
pub const ROUTER_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const ROUTER_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const ROUTED_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const ROUTED_CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100);
/// Private ASNs: the router's, and the one all LB nodes share.
pub const ROUTER_AS: u32 = 64512;
pub const NODE_AS: u32 = 64513;

/// Addresses of LB node `i` (0-based) on the segment: node 0 is [`LB_V4`] / [`LB_V6`].
pub fn lb_addrs(i: usize) -> (Ipv4Addr, Ipv6Addr) {
    assert!(i < MAX_LBS);
    let host = 2 + i as u16;
    (
        Ipv4Addr::new(198, 51, 100, host as u8),
        Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, host),
    )
}

/// MAC of LB node `i`: node 0 has [`LB_MAC`].
pub fn lb_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, 0x02 + i as u8]
}

/// The forwarding modes, each with its own VIP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Ipip,
    Gue,
    DsrL2,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Ipip, Mode::Gue, Mode::DsrL2];

    /// The config's name of the mode.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Ipip => "ipip",
            Mode::Gue => "gue",
            Mode::DsrL2 => "dsr-l2",
        }
    }

    const fn host(self) -> u8 {
        match self {
            Mode::Ipip => 10,
            Mode::Gue => 11,
            Mode::DsrL2 => 12,
        }
    }

    /// The mode's VIP address: 203.0.113.10-12 / 2001:db8:113::10-12.
    pub fn vip(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0x113,
                0,
                0,
                0,
                0,
                u16::from_str_radix(&self.host().to_string(), 16).unwrap(),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, self.host()))
        }
    }
}

/// Every VIP address of the testbed (the backends own them all on `lo`).
pub fn all_vips() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Mode::ALL.iter().map(|m| m.vip(false)).collect();
    v.extend(Mode::ALL.iter().map(|m| m.vip(true)));
    v
}

/// Addresses of backend `i` (0-based): 198.51.100.(11+i), 2001:db8:51::(11+i).
pub fn backend_addrs(i: usize) -> (Ipv4Addr, Ipv6Addr) {
    assert!(i < MAX_BACKENDS);
    let host = 11 + i as u16;
    (
        Ipv4Addr::new(198, 51, 100, host as u8),
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x51,
            0,
            0,
            0,
            0,
            u16::from_str_radix(&host.to_string(), 16).unwrap(),
        ),
    )
}

pub fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, (i + 1) as u8]
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documentation_range(a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => {
                let o = a.octets();
                matches!(
                    (o[0], o[1], o[2]),
                    (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
                )
            }
            IpAddr::V6(a) => a.segments()[..2] == [0x2001, 0xdb8],
        }
    }

    #[test]
    fn every_address_is_from_the_documentation_ranges() {
        let mut all: Vec<IpAddr> = vec![
            LB_V4.into(),
            LB_V6.into(),
            CLIENT_V4.into(),
            CLIENT_V6.into(),
            ROUTER_V4.into(),
            ROUTER_V6.into(),
            ROUTER_CLIENT_V4.into(),
            ROUTER_CLIENT_V6.into(),
            ROUTED_CLIENT_V4.into(),
            ROUTED_CLIENT_V6.into(),
        ];
        for i in 1..MAX_LBS {
            let (v4, v6) = lb_addrs(i);
            all.extend([IpAddr::from(v4), v6.into()]);
        }
        assert_eq!(lb_addrs(0), (LB_V4, LB_V6));
        assert_eq!(lb_mac(0), LB_MAC);
        all.extend(all_vips());
        for i in 0..MAX_BACKENDS {
            let (v4, v6) = backend_addrs(i);
            all.extend([IpAddr::from(v4), v6.into()]);
        }
        for a in &all {
            assert!(documentation_range(*a), "{a}");
        }
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "addresses collide");
        assert_eq!(Mode::Gue.vip(true).to_string(), "2001:db8:113::11");
        assert_eq!(backend_addrs(2).1.to_string(), "2001:db8:51::13");
    }
}
