//! xlb's XDP programs. The load balancer reads top to bottom:
//! parse -> classify (VIP?) -> choose (flow table, then Maglev ring) -> rewrite/encapsulate ->
//! account -> verdict. The exact behaviour is specified in docs/datapath.md.
#![no_std]
#![no_main]

mod aux;
mod csum;
mod decap;
mod frame;
mod hdr;
mod icmp;
mod lookup;
mod maps;
mod parse;
mod rewrite;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    FlowKey, LbConfig, VipMeta,
    addr::{FAMILY_V4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    hash::ports_word,
    stats::Counter,
    values::CONFIG_F_READY,
};

use crate::{
    hdr::{ETH_P_IP, ETH_P_IPV6, TCP_FLAG_ACK, TCP_FLAG_SYN},
    lookup::{Choice, Established, FlowUse, malformed},
    maps::CONFIG,
    parse::{L2, Packet},
    rewrite::{Mtu, Target},
    stats::Verdict,
};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    let verdict = process(&ctx);
    verdict.count();
    let counter = verdict.counter_index();
    if counter == Counter::DropAdjustFailed as u32 || counter == Counter::DropWriteFailed as u32 {
        log_rewrite_failed(&ctx, counter);
    }
    verdict.action()
}

/// The one thing the program logs (through aya-log, forwarded by the agent into its log): a
/// frame that could not be rewritten, which the counter alone would not explain. Never on a
/// normal packet's path; out of line.
#[inline(never)]
fn log_rewrite_failed(ctx: &XdpContext, counter: u32) {
    if counter == Counter::DropAdjustFailed as u32 {
        aya_log_ebpf::warn!(
            ctx,
            "bpf_xdp_adjust_head/tail refused to resize a frame, packet dropped: does the \
             driver reserve XDP headroom?"
        );
    } else {
        aya_log_ebpf::warn!(
            ctx,
            "a rewritten header did not fit in the frame, packet dropped: a bug in xlb's \
             program, please report it"
        );
    }
}

/// Backend hosts: strips xlb's encapsulation (see `decap`).
#[xdp]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    decap::decap(&ctx)
}

/// Testbed peers: see `aux`.
#[xdp]
pub fn xlb_pass(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// Benchmark baseline: see `aux`.
#[xdp]
pub fn xlb_reflect(ctx: XdpContext) -> u32 {
    aux::reflect(&ctx)
}

#[inline(always)]
fn process(ctx: &XdpContext) -> Verdict {
    let cfg = match CONFIG.get(0) {
        Some(c) if c.flags & CONFIG_F_READY != 0 => c,
        _ => return Verdict::pass(Counter::PassNotReady),
    };
    let Some(l2) = parse::ethernet(ctx) else {
        return Verdict::pass(Counter::PassMalformed);
    };
    if l2.proto != ETH_P_IP && l2.proto != ETH_P_IPV6 {
        return Verdict::pass(Counter::Pass);
    }
    let Some(mut pkt) = parse::ip_fixed(ctx, &l2) else {
        return Verdict::pass(Counter::PassMalformed);
    };
    if !lookup::maybe_vip_address(&pkt.dst) {
        return Verdict::pass(Counter::Pass);
    }
    if let Err(reason) = parse::ip_rest(ctx, &mut pkt) {
        return malformed(&pkt, reason);
    }
    if lookup::martian_source(&pkt) {
        return malformed(&pkt, Counter::DropMartian);
    }
    let icmp = if pkt.family == FAMILY_V4 {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    let verdict = match pkt.proto {
        _ if pkt.frag => fragment(ctx, cfg, &l2, &pkt),
        PROTO_TCP | PROTO_UDP => tcp_udp(ctx, cfg, &l2, &pkt),
        p if p == icmp => return icmp::handle(ctx, cfg, &l2, &pkt),
        _ => return Verdict::pass(Counter::Pass),
    };
    match verdict.too_big_overhead() {
        // The reply (or its rate-limit drop) keeps the flow-table outcome of the packet.
        Some(overhead) => icmp::too_big(ctx, cfg, &l2, &pkt, overhead).keep_detail(verdict),
        None => verdict,
    }
}

/// A subprogram, like the slow paths: LLVM spills generously on BPF, and separate frames keep
/// every call chain under the verifier's 512-byte stack.
#[inline(never)]
fn tcp_udp(ctx: &XdpContext, cfg: &LbConfig, l2: &L2, pkt: &Packet) -> Verdict {
    let l4 = match parse::l4(ctx, pkt) {
        Ok(l4) => l4,
        Err(reason) => return malformed(pkt, reason),
    };
    let key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: l4.sport,
        dport: l4.dport,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    let syn =
        pkt.proto == PROTO_TCP && l4.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
    // Selects the flow's flow-table set and goes into GUE / IPv6 outer headers.
    let entropy = key.entropy(cfg.hash_seed);
    // Established flows first: a hit carries its VIP's index, mode and flags in the backend
    // entry, so the VIP lookup (a hash lookup) is skipped for most packets.
    let flow_use = if syn {
        FlowUse::Syn
    } else {
        match lookup::established(cfg, &key, entropy) {
            Established::Hit(id, backend) => {
                let vip = VipMeta {
                    index: backend.vip_index,
                    flags: backend.vip_flags as u32,
                    mode: backend.mode,
                    _pad: [0; 3],
                };
                let choice = lookup::Choice {
                    id,
                    backend,
                    new_flow: false,
                    counter: Some(Counter::FlowHit),
                };
                return send(ctx, cfg, l2, pkt, &vip, &choice, entropy);
            }
            Established::Stale => FlowUse::Rehash,
            Established::Expired => FlowUse::Expired,
            Established::Miss => FlowUse::Miss,
        }
    };
    let Some(vip) = lookup::vip(cfg, pkt.family, &pkt.dst, l4.dport, pkt.proto) else {
        return Verdict::pass(Counter::Pass);
    };
    let ports = ports_word(l4.sport, l4.dport);
    let hash = lookup::ring_hash(cfg, &vip, pkt.family, &pkt.src, &pkt.dst, ports, pkt.proto);
    match lookup::choose(cfg, &vip, &key, hash, entropy, flow_use) {
        Ok(choice) => send(ctx, cfg, l2, pkt, &vip, &choice, entropy),
        Err(v) => v,
    }
}

/// Forwards a data packet to its chosen backend, held to the MTU, counting the choice's own
/// counter (hit, miss, SYN, rehash, fragment) beside the verdict's. Inlined: a thin fold of
/// the three places that send, not a call on the per-packet path.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    cfg: &LbConfig,
    l2: &L2,
    pkt: &Packet,
    vip: &VipMeta,
    choice: &Choice,
    entropy: u32,
) -> Verdict {
    let to = Target {
        vip,
        choice,
        entropy,
        mtu: Mtu::Check,
    };
    rewrite::forward(ctx, cfg, l2, pkt, &to).with_detail_opt(choice.counter)
}

/// Fragments carry no ports past the first one, so every fragment of a VIP datagram is hashed
/// on addresses and protocol alone and takes the ring's choice (docs/datapath.md §3).
/// Out of line (slow path).
#[inline(never)]
fn fragment(ctx: &XdpContext, cfg: &LbConfig, l2: &L2, pkt: &Packet) -> Verdict {
    // Only TCP and UDP VIPs exist: without this, a fragment of protocol 0 would find the
    // address entry `(dst, 0, 0)` and be taken for a VIP (found by the differential fuzzer).
    if pkt.proto != PROTO_TCP && pkt.proto != PROTO_UDP {
        return Verdict::pass(Counter::Pass);
    }
    let Some(vip) = lookup::fragment_vip(pkt.family, &pkt.dst, pkt.proto) else {
        return Verdict::pass(Counter::Pass);
    };
    let hash = lookup::ring_hash(cfg, &vip, pkt.family, &pkt.src, &pkt.dst, 0, pkt.proto);
    // Not a flow-table key (fragments are never remembered): the entropy's input, ports 0.
    let flow = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: 0,
        dport: 0,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    let entropy = flow.entropy(cfg.hash_seed);
    match lookup::choose(cfg, &vip, &flow, hash, entropy, FlowUse::RingOnly) {
        Ok(choice) => send(ctx, cfg, l2, pkt, &vip, &choice, entropy),
        Err(v) => v,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
