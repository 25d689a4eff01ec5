//! Rewrite: MAC rewrite for dsr-l2, IPIP / IP6IP6 / IPv4-in-IPv6 and GUE encapsulation.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    LbConfig, VipMeta,
    addr::{FAMILY_V4, FAMILY_V6, PROTO_IPIP, PROTO_IPV6, PROTO_UDP},
    stats::Counter,
    values::{MODE_DSR_L2, MODE_GUE, MODE_IPIP},
};

use crate::{
    csum,
    frame::{self, Failed},
    hdr::*,
    lookup::Choice,
    parse::{L2, Packet},
    stats::{self, Verdict},
};

/// Outer headers a mode adds for a backend of `backend_family`.
#[derive(Clone, Copy)]
pub struct Encap {
    /// 0 (dsr-l2), or the outer IP family.
    pub outer_family: u8,
    pub gue: bool,
    /// Bytes added in front of the inner IP packet.
    pub overhead: usize,
}

#[inline(always)]
fn encap_for(mode: u8, inner_family: u8, backend_family: u8) -> Option<Encap> {
    let gue = match mode {
        MODE_DSR_L2 => {
            return Some(Encap {
                outer_family: 0,
                gue: false,
                overhead: 0,
            });
        }
        MODE_IPIP => false,
        MODE_GUE => true,
        _ => return None,
    };
    let ip_len = match backend_family {
        // An IPv6 packet cannot ride in an IPv4 tunnel to a v4-only backend path we control.
        FAMILY_V4 if inner_family == FAMILY_V4 => IPV4_LEN,
        FAMILY_V6 => IPV6_LEN,
        _ => return None,
    };
    Some(Encap {
        outer_family: backend_family,
        gue,
        overhead: ip_len + if gue { UDP_LEN } else { 0 },
    })
}

/// Writes the L2 header at the head of the frame, keeping an 802.1Q tag.
#[inline(always)]
pub fn write_l2(
    ctx: &XdpContext,
    l2: &L2,
    dst: [u8; 6],
    src: [u8; 6],
    proto: u16,
) -> Result<(), Failed> {
    let tagged = l2.len != ETH_LEN;
    let eth = EthHdr {
        dst,
        src,
        proto: if tagged { ETH_P_8021Q } else { proto }.to_be(),
    };
    frame::write(ctx, 0, eth)?;
    if tagged {
        let tag = VlanHdr {
            tci: l2.vlan_tci,
            proto: proto.to_be(),
        };
        return frame::write(ctx, ETH_LEN, tag);
    }
    Ok(())
}

/// Removes bytes after the IP packet (Ethernet padding of short frames).
#[inline(always)]
pub fn trim_padding(ctx: &XdpContext, pkt: &Packet) -> Result<(), Failed> {
    let want = pkt.l3_off + pkt.l3_len;
    if frame::holds(ctx, want + 1) {
        return frame::adjust_tail(ctx, want as i32 - frame::len(ctx) as i32);
    }
    Ok(())
}

/// Whether a forwarded packet is held to `LbConfig::mtu`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mtu {
    /// Data packets: one too big to encapsulate is answered with ICMP (`Verdict::too_big`).
    Check,
    /// Relayed ICMP errors, which must never trigger ICMP errors of their own.
    Ignore,
}

/// Where a packet goes and what its outer headers carry (docs/datapath.md §5).
pub struct Target<'a> {
    pub vip: &'a VipMeta,
    pub choice: &'a Choice,
    /// `flow_entropy` of the flow the packet belongs to (for a relayed ICMP error, the flow it
    /// quotes; ports 0 for fragments): GUE and IPv6 outer headers carry it.
    pub entropy: u32,
    pub mtu: Mtu,
}

/// Sends the packet to `to.choice`'s backend (docs/datapath.md §5).
#[inline(always)]
pub fn forward(ctx: &XdpContext, cfg: &LbConfig, l2: &L2, pkt: &Packet, to: &Target) -> Verdict {
    let vip = to.vip;
    let Some(encap) = encap_for(vip.mode, pkt.family, to.choice.backend.family) else {
        return stats::vip_drop(vip.index, Verdict::drop(Counter::DropUnsupported));
    };
    if to.mtu == Mtu::Check
        && encap.overhead != 0
        && cfg.mtu != 0
        && pkt.l3_len + encap.overhead > cfg.mtu as usize
    {
        return stats::vip_drop(vip.index, Verdict::too_big(encap.overhead));
    }
    let bytes = (pkt.l3_off + pkt.l3_len) as u64;
    if let Err(e) = encapsulate(ctx, cfg, l2, pkt, to, encap) {
        return stats::vip_drop(vip.index, Verdict::drop(e.counter()));
    }
    stats::forwarded(vip.index, to.choice.id, bytes, to.choice.new_flow);
    Verdict::tx(Counter::Tx)
}

/// Trims the padding, makes room for `encap` and writes the new headers.
#[inline(always)]
fn encapsulate(
    ctx: &XdpContext,
    cfg: &LbConfig,
    l2: &L2,
    pkt: &Packet,
    to: &Target,
    encap: Encap,
) -> Result<(), Failed> {
    trim_padding(ctx, pkt)?;
    if encap.overhead != 0 {
        frame::adjust_head(ctx, -(encap.overhead as i32))?;
    }
    let mac = to.choice.backend.mac;
    match encap.outer_family {
        FAMILY_V4 => {
            write_l2(ctx, l2, mac, cfg.src_mac, ETH_P_IP)?;
            write_outer_v4(ctx, cfg, l2, pkt, to, encap)
        }
        FAMILY_V6 => {
            write_l2(ctx, l2, mac, cfg.src_mac, ETH_P_IPV6)?;
            write_outer_v6(ctx, cfg, l2, pkt, to, encap)
        }
        _ => write_l2(ctx, l2, mac, cfg.src_mac, l2.proto),
    }
}

#[inline(always)]
fn inner_proto(pkt: &Packet) -> u8 {
    if pkt.family == FAMILY_V4 {
        PROTO_IPIP
    } else {
        PROTO_IPV6
    }
}

#[inline(always)]
fn write_outer_v4(
    ctx: &XdpContext,
    cfg: &LbConfig,
    l2: &L2,
    pkt: &Packet,
    to: &Target,
    encap: Encap,
) -> Result<(), Failed> {
    let mut ip = Ipv4Hdr {
        ver_ihl: 0x45,
        tos: pkt.tos,
        tot_len: ((pkt.l3_len + encap.overhead) as u16).to_be(),
        id: pkt.ip_id,
        frag_off: if pkt.df { IPV4_DF.to_be() } else { 0 },
        ttl: cfg.outer_ttl,
        proto: if encap.gue {
            PROTO_UDP
        } else {
            inner_proto(pkt)
        },
        check: 0,
        src: cfg.src_v4,
        dst: to.choice.backend.addr[0],
    };
    ip.check = csum::fold(csum::sum_words(&ip));
    frame::write(ctx, l2.len, ip)?;
    if encap.gue {
        return write_gue(ctx, cfg, l2.len + IPV4_LEN, pkt, to.entropy);
    }
    Ok(())
}

#[inline(always)]
fn write_outer_v6(
    ctx: &XdpContext,
    cfg: &LbConfig,
    l2: &L2,
    pkt: &Packet,
    to: &Target,
    encap: Encap,
) -> Result<(), Failed> {
    let vtc = (6u32 << 28) | ((pkt.tos as u32) << 20) | (to.entropy & 0x000f_ffff);
    let ip = Ipv6Hdr {
        vtc_flow: vtc.to_be(),
        payload_len: ((pkt.l3_len + encap.overhead - IPV6_LEN) as u16).to_be(),
        next_hdr: if encap.gue {
            PROTO_UDP
        } else {
            inner_proto(pkt)
        },
        hop_limit: cfg.outer_ttl,
        src: cfg.src_v6,
        dst: to.choice.backend.addr,
    };
    frame::write(ctx, l2.len, ip)?;
    if encap.gue {
        return write_gue(ctx, cfg, l2.len + IPV6_LEN, pkt, to.entropy);
    }
    Ok(())
}

/// GUE variant 1: a UDP header directly followed by the inner IP packet. The source port
/// carries the flow's entropy for ECMP in the fabric; checksum 0 (RFC 6935 for IPv6 tunnels).
#[inline(always)]
fn write_gue(
    ctx: &XdpContext,
    cfg: &LbConfig,
    off: usize,
    pkt: &Packet,
    entropy: u32,
) -> Result<(), Failed> {
    let udp = UdpHdr {
        sport: (0xc000u16 | (entropy & 0x3fff) as u16).to_be(),
        dport: cfg.gue_port,
        len: ((pkt.l3_len + UDP_LEN) as u16).to_be(),
        check: 0,
    };
    frame::write(ctx, off, udp)
}
