//! Two trivial programs that are not part of forwarding:
//! - `xlb_pass`: XDP_PASS. On veth, a frame sent with XDP_TX reaches the peer only if the peer
//!   has an XDP program attached; the testbed attaches this one to the LB's peer.
//! - `xlb_reflect`: swaps the MACs and bounces the frame (XDP_TX): the floor any XDP forwarder
//!   pays, the benchmarks' baseline.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use crate::frame;

pub fn reflect(ctx: &XdpContext) -> u32 {
    if frame::swap_macs(ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_DROP
    }
}
