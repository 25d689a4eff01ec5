//! ICMP: echo replies for VIPs, relaying PMTU errors to the backend owning the flow, and
//! frag-needed / packet-too-big replies for packets too big to encapsulate.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::XdpContext};
use lb_common::{
    FlowKey, LbConfig,
    addr::{FAMILY_V4, PROTO_ICMP, PROTO_ICMPV6},
    hash::ports_word,
    limits::ICMP_QUOTE_LEN,
    stats::Counter,
    values::VIP_F_ICMP_ECHO,
};

use crate::{
    csum,
    frame::{self, Failed},
    hdr::*,
    lookup::{self, FlowUse},
    maps::ICMP_BUCKET,
    parse::{self, L2, Packet},
    rewrite::{self, Mtu, Target},
    stats::{self, Verdict},
};

/// ICMP / ICMPv6 to a possible VIP address (docs/datapath.md §3, ICMP). Out of line: a BPF
/// subprogram keeps the TCP/UDP fast path short.
#[inline(never)]
pub fn handle(ctx: &XdpContext, cfg: &LbConfig, l2: &L2, pkt: &Packet) -> Verdict {
    let hdr = match parse::icmp(ctx, pkt) {
        Ok(h) => h,
        Err(reason) => return lookup::malformed(pkt, reason),
    };
    let v4 = pkt.family == FAMILY_V4;
    let (echo, pmtu) = if v4 {
        (
            hdr.kind == ICMP_ECHO_REQUEST,
            hdr.kind == ICMP_DEST_UNREACH && hdr.code == ICMP_FRAG_NEEDED,
        )
    } else {
        (
            hdr.kind == ICMPV6_ECHO_REQUEST,
            hdr.kind == ICMPV6_PACKET_TOO_BIG,
        )
    };
    if echo && hdr.code == 0 {
        return match lookup::address_entry(pkt.family, &pkt.dst) {
            Some(entry) if entry.flags & VIP_F_ICMP_ECHO != 0 => {
                let bytes = (pkt.l3_off + pkt.l3_len) as u64;
                let v = echo_reply(ctx, l2, pkt, &hdr);
                if v.is_tx() {
                    stats::answered(entry.index, bytes);
                }
                v
            }
            _ => Verdict::pass(Counter::Pass),
        };
    }
    if pmtu {
        return relay_error(ctx, cfg, l2, pkt);
    }
    Verdict::pass(Counter::Pass)
}

/// An ICMP error about a VIP flow goes where that flow's packets go.
#[inline(always)]
fn relay_error(ctx: &XdpContext, cfg: &LbConfig, l2: &L2, pkt: &Packet) -> Verdict {
    let q = match parse::icmp_quote(ctx, pkt) {
        Ok(q) => q,
        Err(reason) => return lookup::malformed(pkt, reason),
    };
    let Some(vip) = lookup::vip(cfg, pkt.family, &q.vip, q.vip_port, q.proto) else {
        return Verdict::pass(Counter::Pass);
    };
    let hash = lookup::ring_hash(
        cfg,
        &vip,
        pkt.family,
        &q.client,
        &q.vip,
        ports_word(q.client_port, q.vip_port),
        q.proto,
    );
    let key = FlowKey {
        src: q.client,
        dst: q.vip,
        sport: q.client_port,
        dport: q.vip_port,
        proto: q.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    let entropy = key.entropy(cfg.hash_seed);
    let choice = match lookup::choose(cfg, &vip, &key, hash, entropy, FlowUse::ReadOnly) {
        Ok(c) => c,
        Err(v) => return v,
    };
    let to = Target {
        vip: &vip,
        choice: &choice,
        entropy,
        mtu: Mtu::Ignore,
    };
    let v = rewrite::forward(ctx, cfg, l2, pkt, &to);
    if v.is_tx() {
        return v.with_detail(Counter::IcmpErrorForwarded);
    }
    v
}

#[inline(always)]
fn word(hi: u8, lo: u8) -> u16 {
    u16::from_ne_bytes([hi, lo])
}

/// Turns an echo request into its reply in place.
#[inline(always)]
fn echo_reply(ctx: &XdpContext, l2: &L2, pkt: &Packet, hdr: &IcmpHdr) -> Verdict {
    match rewrite_echo(ctx, l2, pkt, hdr) {
        Ok(()) => Verdict::tx(Counter::IcmpEchoReply),
        Err(e) => Verdict::drop(e.counter()),
    }
}

#[inline(always)]
fn rewrite_echo(ctx: &XdpContext, l2: &L2, pkt: &Packet, hdr: &IcmpHdr) -> Result<(), Failed> {
    // The frame held them when it was parsed; only a bug makes these reads fail.
    let macs = parse::macs(ctx).ok_or(Failed::Write)?;
    // Bytes after the IP packet are not the reply's (its lengths must match the frame).
    rewrite::trim_padding(ctx, pkt)?;
    rewrite::write_l2(ctx, l2, macs.src, macs.dst, l2.proto)?;
    if pkt.family == FAMILY_V4 {
        let mut ip: Ipv4Hdr = frame::read(ctx, pkt.l3_off).ok_or(Failed::Write)?;
        ip.check = csum::replace16(ip.check, word(ip.ttl, ip.proto), word(REPLY_TTL, ip.proto));
        ip.ttl = REPLY_TTL;
        // Fields of a packed struct cannot be borrowed, so no `mem::swap`.
        (ip.src, ip.dst) = (ip.dst, ip.src);
        frame::write(ctx, pkt.l3_off, ip)?;
    } else {
        let mut ip: Ipv6Hdr = frame::read(ctx, pkt.l3_off).ok_or(Failed::Write)?;
        ip.hop_limit = REPLY_TTL;
        // Fields of a packed struct cannot be borrowed, so no `mem::swap`.
        (ip.src, ip.dst) = (ip.dst, ip.src);
        frame::write(ctx, pkt.l3_off, ip)?;
    }
    let reply = if pkt.family == FAMILY_V4 {
        ICMP_ECHO_REPLY
    } else {
        ICMPV6_ECHO_REPLY
    };
    let mut out = *hdr;
    out.kind = reply;
    out.check = csum::replace16(hdr.check, word(hdr.kind, hdr.code), word(reply, hdr.code));
    // One's-complement zero has two forms; the update gives 0x0000 where an all-zero ICMPv4
    // message (id, sequence and data 0) needs 0xffff. 0xffff verifies for every other message
    // too (docs/datapath.md §6).
    if out.check == 0 {
        out.check = 0xffff;
    }
    frame::write(ctx, pkt.l4_off, out)
}

/// Takes a token from this CPU's bucket of generated ICMP errors.
#[inline(always)]
fn take_token(cfg: &LbConfig) -> bool {
    let Some(b) = ICMP_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: helper without arguments; per-CPU entry, no concurrent writer on this CPU.
    let now = unsafe { bpf_ktime_get_ns() };
    let b = unsafe { &mut *b };
    let elapsed = now.wrapping_sub(b.last_ns);
    let burst = cfg.icmp_burst as u64;
    if elapsed >= 1_000_000_000 {
        b.tokens = burst;
        b.last_ns = now;
    } else {
        let add = elapsed * cfg.icmp_rate as u64 / 1_000_000_000;
        if add > 0 {
            b.tokens = core::cmp::min(b.tokens + add, burst);
            b.last_ns = now;
        }
    }
    if b.tokens == 0 {
        return false;
    }
    b.tokens -= 1;
    true
}

/// Answers a packet too big to encapsulate with frag-needed / packet-too-big, quoting its first
/// `ICMP_QUOTE_LEN` bytes (docs/datapath.md §5, "Too big"). Out of line (slow path).
#[inline(never)]
pub fn too_big(
    ctx: &XdpContext,
    cfg: &LbConfig,
    l2: &L2,
    pkt: &Packet,
    overhead: usize,
) -> Verdict {
    if pkt.l3_len < ICMP_QUOTE_LEN {
        return Verdict::drop(Counter::DropTruncated);
    }
    if !take_token(cfg) {
        return Verdict::drop(Counter::DropTooBigRateLimited);
    }
    match write_too_big(ctx, cfg, l2, pkt, overhead) {
        Ok(()) => Verdict::tx(Counter::IcmpTooBigSent),
        Err(e) => Verdict::drop(e.counter()),
    }
}

/// Cuts the frame to the quote, puts the ICMP error's headers in front of it.
#[inline(always)]
fn write_too_big(
    ctx: &XdpContext,
    cfg: &LbConfig,
    l2: &L2,
    pkt: &Packet,
    overhead: usize,
) -> Result<(), Failed> {
    // The frame held them when it was parsed; only a bug makes this read fail.
    let macs = parse::macs(ctx).ok_or(Failed::Write)?;
    let mtu = cfg.mtu as u32 - overhead as u32;
    let v4 = pkt.family == FAMILY_V4;
    let ip_len = if v4 { IPV4_LEN } else { IPV6_LEN };
    let want = l2.len + ICMP_QUOTE_LEN;
    frame::adjust_tail(ctx, want as i32 - frame::len(ctx) as i32)?;
    frame::adjust_head(ctx, -((ip_len + ICMP_LEN) as i32))?;
    let eth_proto = if v4 { ETH_P_IP } else { ETH_P_IPV6 };
    rewrite::write_l2(ctx, l2, macs.src, macs.dst, eth_proto)?;
    let icmp_off = l2.len + ip_len;
    let quote_sum = frame::sum::<ICMP_QUOTE_LEN>(ctx, icmp_off + ICMP_LEN).ok_or(Failed::Write)?;
    let icmp_len = (ICMP_LEN + ICMP_QUOTE_LEN) as u16;
    let mut icmp = if v4 {
        IcmpHdr {
            kind: ICMP_DEST_UNREACH,
            code: ICMP_FRAG_NEEDED,
            check: 0,
            rest: [0, (mtu as u16).to_be()],
        }
    } else {
        IcmpHdr {
            kind: ICMPV6_PACKET_TOO_BIG,
            code: 0,
            check: 0,
            rest: [((mtu >> 16) as u16).to_be(), (mtu as u16).to_be()],
        }
    };
    if v4 {
        let mut ip = Ipv4Hdr {
            ver_ihl: 0x45,
            tos: 0,
            tot_len: (IPV4_LEN as u16 + icmp_len).to_be(),
            id: 0,
            frag_off: 0,
            ttl: REPLY_TTL,
            proto: PROTO_ICMP,
            check: 0,
            src: pkt.dst[0],
            dst: pkt.src[0],
        };
        ip.check = csum::fold(csum::sum_words(&ip));
        icmp.check = csum::fold(csum::sum_words(&icmp) + quote_sum);
        frame::write(ctx, l2.len, ip)?;
    } else {
        let ip = Ipv6Hdr {
            vtc_flow: (6u32 << 28).to_be(),
            payload_len: icmp_len.to_be(),
            next_hdr: PROTO_ICMPV6,
            hop_limit: REPLY_TTL,
            src: pkt.dst,
            dst: pkt.src,
        };
        let pseudo = csum::sum_addr(&pkt.src)
            + csum::sum_addr(&pkt.dst)
            + icmp_len.to_be() as u64
            + (PROTO_ICMPV6 as u16).to_be() as u64;
        icmp.check = csum::fold(pseudo + csum::sum_words(&icmp) + quote_sum);
        frame::write(ctx, l2.len, ip)?;
    }
    frame::write(ctx, icmp_off, icmp)
}
