//! Global counters by reason.

/// Index into `GlobalStats::counters`. Every packet the program sees bumps exactly one of the
/// verdict counters (`Pass*`, `Tx`, `Icmp*`, `Drop*`); the `Flow*` and `Fragment` counters add
/// detail on forwarded packets.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not VIP traffic: passed to the kernel untouched.
    Pass = 0,
    /// The agent has not written a configuration yet: passed.
    PassNotReady = 1,
    /// Too short or malformed before its destination could be read: passed (the kernel drops it).
    PassMalformed = 2,
    /// VIP without a backend, configured to pass (`VIP_F_NO_BACKEND_PASS`).
    PassNoBackend = 3,
    /// Forwarded to a backend (XDP_TX).
    Tx = 4,
    /// Backend taken from the flow table.
    FlowHit = 5,
    /// No flow-table entry: backend taken from the ring and remembered.
    FlowMiss = 6,
    /// Flow-table entry pointed at a backend that is gone or down: re-hashed.
    FlowRehash = 7,
    /// TCP SYN: ring choice taken regardless of the flow table.
    FlowSyn = 8,
    /// The flow table refused an insert (the packet was still forwarded).
    FlowInsertFailed = 9,
    /// Fragment of a VIP datagram, hashed on addresses only.
    Fragment = 10,
    /// ICMP echo request to a VIP answered.
    IcmpEchoReply = 11,
    /// ICMP frag-needed / packet-too-big about a VIP flow, forwarded to its backend.
    IcmpErrorForwarded = 12,
    /// Packet too big to encapsulate: ICMP frag-needed / packet-too-big sent back.
    IcmpTooBigSent = 13,
    /// Packet for a VIP address cut short inside its L4 or ICMP header.
    DropTruncated = 14,
    /// Invalid IPv4 header length / total length or IPv6 payload length.
    DropBadHeader = 15,
    /// More IPv6 extension headers than the parser walks.
    DropTooManyExtHeaders = 16,
    /// The VIP has no backend (empty ring slot).
    DropNoBackend = 17,
    /// A ring slot names a backend entry that is empty or belongs to another VIP.
    DropBadBackend = 18,
    /// Unknown mode, or an address family combination the mode cannot carry.
    DropUnsupported = 19,
    /// `bpf_xdp_adjust_head`/`adjust_tail` refused to resize the frame.
    DropAdjustFailed = 20,
    /// Too big to encapsulate, and the ICMP error budget is spent.
    DropTooBigRateLimited = 21,
    /// A header to write did not fit in the frame (after any resize succeeded): a program bug.
    DropWriteFailed = 22,
    /// No flow-table entry, but a peer node's exception named the flow's backend (flow
    /// continuity, docs/datapath.md §4): that backend is taken and remembered.
    FlowPeer = 23,
    /// A packet to a VIP address from a source no host can have (docs/datapath.md §2): the
    /// unspecified, loopback, multicast or broadcast range, an IPv4-mapped IPv6 address, or a
    /// VIP address of this load balancer.
    DropMartian = 24,
    /// An ICMP error to a VIP address whose quoted packet cannot name a VIP flow: the other IP
    /// version, cut short, a bad IPv4 header length, or sent by another address than the one
    /// the error is addressed to.
    DropBadIcmpQuote = 25,
    /// A new flow-table entry took the slot of another flow (its set was full): that flow, if
    /// it sends again, takes the ring's choice (docs/datapath.md §4 "Eviction").
    FlowEvicted = 26,
    /// A UDP flow silent for longer than the idle timeout (`agent.udp-idle-timeout`): its entry
    /// was set aside and the ring chose again (docs/datapath.md §4 "UDP idle timeout").
    FlowExpired = 27,
}

/// Slots in `GlobalStats` (room to add counters without a layout change).
pub const COUNTER_SLOTS: usize = 32;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 28] = [
        Counter::Pass,
        Counter::PassNotReady,
        Counter::PassMalformed,
        Counter::PassNoBackend,
        Counter::Tx,
        Counter::FlowHit,
        Counter::FlowMiss,
        Counter::FlowRehash,
        Counter::FlowSyn,
        Counter::FlowInsertFailed,
        Counter::Fragment,
        Counter::IcmpEchoReply,
        Counter::IcmpErrorForwarded,
        Counter::IcmpTooBigSent,
        Counter::DropTruncated,
        Counter::DropBadHeader,
        Counter::DropTooManyExtHeaders,
        Counter::DropNoBackend,
        Counter::DropBadBackend,
        Counter::DropUnsupported,
        Counter::DropAdjustFailed,
        Counter::DropTooBigRateLimited,
        Counter::DropWriteFailed,
        Counter::FlowPeer,
        Counter::DropMartian,
        Counter::DropBadIcmpQuote,
        Counter::FlowEvicted,
        Counter::FlowExpired,
    ];

    /// Stable snake_case name (metrics labels, CLI, JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Pass => "pass",
            Counter::PassNotReady => "pass_not_ready",
            Counter::PassMalformed => "pass_malformed",
            Counter::PassNoBackend => "pass_no_backend",
            Counter::Tx => "tx",
            Counter::FlowHit => "flow_hit",
            Counter::FlowMiss => "flow_miss",
            Counter::FlowRehash => "flow_rehash",
            Counter::FlowSyn => "flow_syn",
            Counter::FlowInsertFailed => "flow_insert_failed",
            Counter::Fragment => "fragment",
            Counter::IcmpEchoReply => "icmp_echo_reply",
            Counter::IcmpErrorForwarded => "icmp_error_forwarded",
            Counter::IcmpTooBigSent => "icmp_too_big_sent",
            Counter::DropTruncated => "drop_truncated",
            Counter::DropBadHeader => "drop_bad_header",
            Counter::DropTooManyExtHeaders => "drop_too_many_ext_headers",
            Counter::DropNoBackend => "drop_no_backend",
            Counter::DropBadBackend => "drop_bad_backend",
            Counter::DropUnsupported => "drop_unsupported",
            Counter::DropAdjustFailed => "drop_adjust_failed",
            Counter::DropTooBigRateLimited => "drop_too_big_rate_limited",
            Counter::DropWriteFailed => "drop_write_failed",
            Counter::FlowPeer => "flow_peer",
            Counter::DropMartian => "drop_martian",
            Counter::DropBadIcmpQuote => "drop_bad_icmp_quote",
            Counter::FlowEvicted => "flow_evicted",
            Counter::FlowExpired => "flow_expired",
        }
    }

    /// Whether this counter is a drop verdict.
    pub const fn is_drop(self) -> bool {
        let i = self as u32;
        (i >= Counter::DropTruncated as u32 && i <= Counter::DropWriteFailed as u32)
            || i == Counter::DropMartian as u32
            || i == Counter::DropBadIcmpQuote as u32
    }

    /// Whether this counter is a verdict counter: every packet bumps exactly one of these, so
    /// their sum is the number of packets the program has seen (docs/datapath.md).
    pub const fn is_verdict(self) -> bool {
        matches!(
            self,
            Counter::Pass
                | Counter::PassNotReady
                | Counter::PassMalformed
                | Counter::PassNoBackend
                | Counter::Tx
                | Counter::IcmpEchoReply
                | Counter::IcmpTooBigSent
        ) || self.is_drop()
    }
}
const _: () = assert!(Counter::ALL.len() <= COUNTER_SLOTS);

/// The single entry of a per-CPU stats map (`STATS`, `DECAP_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalStats {
    pub counters: [u64; COUNTER_SLOTS],
}
const _: () = assert!(size_of::<GlobalStats>() == 8 * COUNTER_SLOTS);

impl Default for GlobalStats {
    fn default() -> Self {
        Self {
            counters: [0; COUNTER_SLOTS],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_names_are_unique() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for a in Counter::ALL {
            for b in Counter::ALL {
                if a != b {
                    assert_ne!(a.name(), b.name());
                }
            }
        }
        assert!(Counter::DropTooBigRateLimited.is_drop());
        for (i, c) in DecapCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert!(Counter::DropWriteFailed.is_drop());
        assert!(!Counter::IcmpTooBigSent.is_drop());
        assert!(!Counter::FlowPeer.is_drop());
        assert!(Counter::DropMartian.is_drop());
        assert!(Counter::DropBadIcmpQuote.is_drop());
        assert!(!Counter::FlowEvicted.is_verdict() && !Counter::FlowExpired.is_verdict());
    }

    #[test]
    fn verdict_counters_are_the_passes_tx_answers_and_drops() {
        let mut verdicts = [""; 18];
        let mut n = 0;
        for c in Counter::ALL.iter().filter(|c| c.is_verdict()) {
            verdicts[n] = c.name();
            n += 1;
        }
        assert_eq!(n, 18);
        assert_eq!(
            verdicts,
            [
                "pass",
                "pass_not_ready",
                "pass_malformed",
                "pass_no_backend",
                "tx",
                "icmp_echo_reply",
                "icmp_too_big_sent",
                "drop_truncated",
                "drop_bad_header",
                "drop_too_many_ext_headers",
                "drop_no_backend",
                "drop_bad_backend",
                "drop_unsupported",
                "drop_adjust_failed",
                "drop_too_big_rate_limited",
                "drop_write_failed",
                "drop_martian",
                "drop_bad_icmp_quote",
            ]
        );
    }
}

/// Counters of the backend-side decap program (`DECAP_STATS`, same `GlobalStats` layout).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    /// Not tunnelled traffic: passed untouched.
    Pass = 0,
    /// No configuration written yet: passed untouched.
    PassNotReady = 1,
    /// Tunnelled, but not from a configured LB source address: passed untouched.
    PassNotFromLb = 2,
    /// Tunnelled from an LB, but the outer packet is a fragment: passed untouched.
    PassOuterFragment = 3,
    /// IPIP / IP6IP6 / IPv4-in-IPv6 stripped and passed to the stack.
    DecapIpip = 4,
    /// GUE stripped and passed to the stack.
    DecapGue = 5,
    /// `bpf_xdp_adjust_head` refused to move the frame's start.
    DropAdjustFailed = 6,
    /// The inner Ethernet header did not fit in the frame after the move: a program bug.
    DropWriteFailed = 7,
}

impl DecapCounter {
    /// Every counter, in index order.
    pub const ALL: [DecapCounter; 8] = [
        DecapCounter::Pass,
        DecapCounter::PassNotReady,
        DecapCounter::PassNotFromLb,
        DecapCounter::PassOuterFragment,
        DecapCounter::DecapIpip,
        DecapCounter::DecapGue,
        DecapCounter::DropAdjustFailed,
        DecapCounter::DropWriteFailed,
    ];

    /// Stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            DecapCounter::Pass => "pass",
            DecapCounter::PassNotReady => "pass_not_ready",
            DecapCounter::PassNotFromLb => "pass_not_from_lb",
            DecapCounter::PassOuterFragment => "pass_outer_fragment",
            DecapCounter::DecapIpip => "decap_ipip",
            DecapCounter::DecapGue => "decap_gue",
            DecapCounter::DropAdjustFailed => "drop_adjust_failed",
            DecapCounter::DropWriteFailed => "drop_write_failed",
        }
    }
}
