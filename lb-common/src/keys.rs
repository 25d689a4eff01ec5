//! Map keys.

use crate::addr::AddrWords;

/// Key of the VIP map.
///
/// Three kinds of entries share the map (the agent writes all of them):
/// - `(addr, port, proto)`: a VIP. `port == 0` is an "all ports" VIP, looked up when the exact
///   port misses (only if `LbConfig::flags` has `CONFIG_F_ANY_PORT_VIPS`).
/// - `(addr, 0, proto)` with `VIP_F_FRAG_ONLY`: the VIP that receives fragments of `proto` sent to
///   `addr` when that address has no all-ports VIP (fragments carry no port to look up).
/// - `(addr, 0, 0)`: the address entry, present for every VIP address. It carries
///   `VIP_F_ICMP_ECHO` when echo requests to the address are answered, and tells the program that
///   a malformed packet to this address is VIP traffic (dropped and counted, not passed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    /// See [`crate::addr`].
    pub addr: AddrWords,
    /// Destination port in network byte order; 0 for all-ports, fragment and address entries.
    pub port: u16,
    /// IP protocol (TCP/UDP), or 0 for the address entry.
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
}
const _: () = assert!(size_of::<VipKey>() == 20);

impl VipKey {
    /// The key of `(addr, port, proto)`, `port` in host order (the key holds it in network
    /// order). Port 0 with a protocol: an all-ports VIP or a fragment alias; port 0 and proto 0:
    /// the address entry.
    pub fn of(addr: core::net::IpAddr, port: u16, proto: u8) -> Self {
        let (family, addr) = crate::addr::to_words(addr);
        Self {
            addr,
            port: port.to_be(),
            proto,
            family,
        }
    }
}

/// Key of the flow table: the packet's 5-tuple as it arrived (client -> VIP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub src: AddrWords,
    pub dst: AddrWords,
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

impl FlowKey {
    /// The flow's `hash::flow_entropy`: its flow-table set and tag, and the entropy of its
    /// outer headers.
    #[inline(always)]
    pub const fn entropy(&self, seed: u32) -> u32 {
        let ports = crate::hash::ports_word(self.sport, self.dport);
        crate::hash::flow_entropy(seed, &self.src, &self.dst, ports, self.proto)
    }

    /// Equality as ten word compares without branches (a derived `==` may become a call in
    /// the program, and compares field by field).
    #[inline(always)]
    pub fn same(&self, other: &FlowKey) -> bool {
        const WORDS: usize = size_of::<FlowKey>() / 4;
        // SAFETY: `FlowKey` is `repr(C)`, 40 bytes, 4-aligned, without implicit padding: every
        // byte is a field's, so it reads as ten initialized words.
        let (a, b) = unsafe {
            (
                &*(self as *const FlowKey as *const [u32; WORDS]),
                &*(other as *const FlowKey as *const [u32; WORDS]),
            )
        };
        let mut diff = 0;
        let mut i = 0;
        while i < WORDS {
            diff |= a[i] ^ b[i];
            i += 1;
        }
        diff == 0
    }
}
