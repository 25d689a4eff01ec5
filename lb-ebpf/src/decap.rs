//! The backend-side program: strips xlb's encapsulation (IPIP, IP6IP6, IPv4-in-IPv6, GUE) from
//! packets sent by a configured LB source address and hands the inner packet to the stack, so
//! backends need no kernel tunnel module. Everything else passes untouched.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    addr::{PROTO_IPIP, PROTO_IPV6, PROTO_UDP},
    stats::DecapCounter,
    values::{CONFIG_F_READY, DecapConfig},
};

use crate::{
    frame,
    hdr::*,
    maps::{DECAP_CONFIG, DECAP_STATS},
    parse::{self, L2},
    rewrite, stats,
};

/// What the outer headers say.
struct Tunnel {
    /// Bytes of outer IP (+ UDP) header to strip.
    overhead: usize,
    /// EtherType of the inner packet.
    inner_proto: u16,
    gue: bool,
}

pub fn decap(ctx: &XdpContext) -> u32 {
    let (action, counter) = process(ctx);
    stats::bump(&DECAP_STATS, counter as usize);
    action
}

#[inline(always)]
fn process(ctx: &XdpContext) -> (u32, DecapCounter) {
    const PASS: u32 = xdp_action::XDP_PASS;
    let cfg = match DECAP_CONFIG.get(0) {
        Some(c) if c.flags & CONFIG_F_READY != 0 => *c,
        _ => return (PASS, DecapCounter::PassNotReady),
    };
    let (Some(l2), Some(macs)) = (parse::ethernet(ctx), parse::macs(ctx)) else {
        return (PASS, DecapCounter::Pass);
    };
    let tunnel = match l2.proto {
        ETH_P_IP => outer_v4(ctx, &cfg, &l2),
        ETH_P_IPV6 => outer_v6(ctx, &cfg, &l2),
        _ => Err(DecapCounter::Pass),
    };
    let tunnel = match tunnel {
        Ok(t) => t,
        Err(c) => return (PASS, c),
    };
    let stripped = frame::adjust_head(ctx, tunnel.overhead as i32)
        .and_then(|()| rewrite::write_l2(ctx, &l2, macs.dst, macs.src, tunnel.inner_proto));
    if let Err(e) = stripped {
        return (xdp_action::XDP_DROP, e.decap_counter());
    }
    let counter = if tunnel.gue {
        DecapCounter::DecapGue
    } else {
        DecapCounter::DecapIpip
    };
    (PASS, counter)
}

/// The inner family of GUE variant 1 is the IP version nibble of the payload.
#[inline(always)]
fn gue_inner(ctx: &XdpContext, udp_off: usize, gue_port: u16) -> Result<u16, DecapCounter> {
    let udp: UdpHdr = frame::read(ctx, udp_off).ok_or(DecapCounter::Pass)?;
    if gue_port == 0 || udp.dport != gue_port {
        return Err(DecapCounter::Pass);
    }
    let first: u8 = frame::read(ctx, udp_off + UDP_LEN).ok_or(DecapCounter::Pass)?;
    match first >> 4 {
        4 => Ok(ETH_P_IP),
        6 => Ok(ETH_P_IPV6),
        _ => Err(DecapCounter::Pass),
    }
}

#[inline(always)]
fn tunnel_for(
    ctx: &XdpContext,
    proto: u8,
    ip_len: usize,
    l2: &L2,
    gue_port: u16,
) -> Result<Tunnel, DecapCounter> {
    match proto {
        PROTO_IPIP => Ok(Tunnel {
            overhead: ip_len,
            inner_proto: ETH_P_IP,
            gue: false,
        }),
        PROTO_IPV6 => Ok(Tunnel {
            overhead: ip_len,
            inner_proto: ETH_P_IPV6,
            gue: false,
        }),
        PROTO_UDP => Ok(Tunnel {
            overhead: ip_len + UDP_LEN,
            inner_proto: gue_inner(ctx, l2.len + ip_len, gue_port)?,
            gue: true,
        }),
        _ => Err(DecapCounter::Pass),
    }
}

#[inline(always)]
fn outer_v4(ctx: &XdpContext, cfg: &DecapConfig, l2: &L2) -> Result<Tunnel, DecapCounter> {
    let ip: Ipv4Hdr = frame::read(ctx, l2.len).ok_or(DecapCounter::Pass)?;
    if !matches!(ip.proto, PROTO_IPIP | PROTO_IPV6 | PROTO_UDP) {
        return Err(DecapCounter::Pass);
    }
    let ihl = (ip.ver_ihl & 0x0f) as usize * 4;
    // The header (options included) must lie in the frame before it can be stripped.
    if ip.ver_ihl >> 4 != 4 || ihl < IPV4_LEN || !frame::holds(ctx, l2.len + ihl) {
        return Err(DecapCounter::Pass);
    }
    let tunnel = tunnel_for(ctx, ip.proto, ihl, l2, cfg.gue_port)?;
    if ip.src != cfg.lb_v4 || cfg.lb_v4 == 0 {
        return Err(DecapCounter::PassNotFromLb);
    }
    if u16::from_be(ip.frag_off) & (IPV4_MF | IPV4_OFFSET_MASK) != 0 {
        return Err(DecapCounter::PassOuterFragment);
    }
    Ok(tunnel)
}

#[inline(always)]
fn outer_v6(ctx: &XdpContext, cfg: &DecapConfig, l2: &L2) -> Result<Tunnel, DecapCounter> {
    let ip: Ipv6Hdr = frame::read(ctx, l2.len).ok_or(DecapCounter::Pass)?;
    // Not an IPv6 header, whatever the EtherType says: not xlb's tunnel (found by the fuzzer).
    if u32::from_be(ip.vtc_flow) >> 28 != 6 {
        return Err(DecapCounter::Pass);
    }
    let tunnel = tunnel_for(ctx, ip.next_hdr, IPV6_LEN, l2, cfg.gue_port)?;
    let src = ip.src;
    if src != cfg.lb_v6 || cfg.lb_v6 == [0; 4] {
        return Err(DecapCounter::PassNotFromLb);
    }
    Ok(tunnel)
}
