//! Scale curves: per-packet cost against the number of VIPs, backends per VIP and flow-table
//! occupancy (up to a full table under a SYN flood). Each point uses the method of
//! [`runner::measure`]; the curve's baseline is its first point (and the reflector, measured in
//! the same process, for reference).

use std::net::IpAddr;

use super::{
    fixture::{Aux, Fixture, VipSpec, counter_delta},
    packet::{CLIENT_PORT, CLIENT_V4, Params, v4_backends, v6_backends},
    runner::{self, ACTIVE_FLOWS, Cycle, Fixed, Frames, V4Flows, active_flow, scrambled},
};
use lb_common::map_names::PROG_REFLECT;
use lb_userspace::{loader::LoadOptions, model::Proto};
use xlb_testkit::packet::{Packet, TCP_ACK, TCP_SYN, ip};

pub use xlb_bench_data::scale::{Curve, Point, Report};

fn point(fx: &Fixture, x: u64, frames: &mut dyn Frames, p: &Params) -> anyhow::Result<Point> {
    let before = fx.counters()?;
    let m = runner::measure(fx.prog(), frames, p.warmup, p.iterations, p.runs)?;
    let after = fx.counters()?;
    eprintln!("    x = {x:>8}: {:>8.1} ns", m.ns);
    Ok(Point {
        x,
        resident: None,
        m,
        counters: counter_delta(&before, &after),
    })
}

fn vip_n(i: u32, backends: Vec<IpAddr>) -> VipSpec {
    VipSpec {
        addr: ip(&format!("203.0.113.{}", 1 + i % 250)),
        port: 80 + (i / 250) as u16,
        proto: Proto::Tcp,
        mode: "ipip",
        affinity: false,
        backends,
    }
}

pub const VIP_COUNTS: [u32; 6] = [1, 4, 16, 64, 256, 512];
pub const BACKEND_COUNTS: [u32; 6] = [2, 16, 64, 256, 1024, 4096];
pub const OCCUPANCY: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

pub fn run(p: &Params) -> anyhow::Result<Report> {
    let opts = LoadOptions::default();
    let reflect_prog = Aux::new(PROG_REFLECT)?;
    let probe = Packet::tcp(CLIENT_V4, CLIENT_PORT, "203.0.113.1", 80, TCP_ACK).frame();
    let reflect = runner::measure(
        reflect_prog.prog(),
        &mut Fixed(probe),
        p.warmup,
        p.iterations,
        p.runs,
    )?;
    eprintln!("  reflector: {:.1} ns", reflect.ns);

    // VIPs: N VIPs of 2 backends; packets round-robin over one established flow per VIP.
    eprintln!("  curve: VIPs");
    let mut fx = Fixture::new(opts, &[])?;
    let mut vips_curve = Vec::new();
    for &n in &VIP_COUNTS {
        let vips: Vec<VipSpec> = (0..n).map(|i| vip_n(i, v4_backends(2))).collect();
        fx.apply(&vips)?;
        let frames = vips
            .iter()
            .map(|v| {
                Packet::tcp(CLIENT_V4, CLIENT_PORT, &v.addr.to_string(), v.port, TCP_ACK).frame()
            })
            .collect();
        let mut p2 = *p;
        p2.warmup = p.warmup.max(u64::from(n) * 4);
        vips_curve.push(point(&fx, u64::from(n), &mut Cycle(frames), &p2)?);
    }
    drop(fx);

    // Backends per VIP: one VIP (IPv4, ipip to IPv6 backends, so 4096 distinct addresses fit
    // the documentation prefix); new flows (SYN from distinct clients: ring pick + insert) and
    // established hits: 65,536 resident flows spread over the backends, 4096 of them carrying
    // the packets (as many as the largest pool has backends, so the 4096 point touches them all).
    eprintln!("  curve: backends per VIP");
    let mut fx = Fixture::new(opts, &[])?;
    let mut syn_curve = Vec::new();
    let mut hit_curve = Vec::new();
    let syn = Packet::tcp(CLIENT_V4, CLIENT_PORT, "203.0.113.10", 80, TCP_SYN).frame();
    let ack = Packet::tcp(CLIENT_V4, CLIENT_PORT, "203.0.113.10", 80, TCP_ACK).frame();
    let spread: u64 = 1 << 16;
    let pool = |n: u32| VipSpec {
        addr: ip("203.0.113.10"),
        port: 80,
        proto: Proto::Tcp,
        mode: "ipip",
        affinity: false,
        backends: v6_backends(n),
    };
    // Unmeasured: fill the flow table with SYNs first, so every point meets it in the same
    // state (full: each insert evicts).
    fx.apply(&[pool(BACKEND_COUNTS[0])])?;
    let mut warm = V4Flows::new(syn.clone(), |i| (1u64 << 22) + i);
    for i in 0..fx.flow_capacity() {
        runner::run_once(fx.prog(), warm.frame(i))?;
    }
    for &n in &BACKEND_COUNTS {
        let vip = pool(n);
        fx.apply(std::slice::from_ref(&vip))?;
        fx.fill_flows(&vip.id(), 0..spread)?;
        hit_curve.push(point(
            &fx,
            u64::from(n),
            &mut V4Flows::new(ack.clone(), move |i| active_flow(i, spread, 4096)),
            p,
        )?);
        let base = (1u64 << 23) + u64::from(n) * (1 << 18);
        syn_curve.push(point(
            &fx,
            u64::from(n),
            &mut V4Flows::new(syn.clone(), move |i| base + i),
            p,
        )?);
    }
    drop(fx);

    // Flow-table occupancy: established hits over the same ACTIVE_FLOWS as the table fills from
    // 1k to 1M entries.
    eprintln!("  curve: flow-table occupancy");
    let vip = VipSpec {
        addr: ip("203.0.113.10"),
        port: 80,
        proto: Proto::Tcp,
        mode: "ipip",
        affinity: false,
        backends: v4_backends(16),
    };
    let mut fx = Fixture::new(opts, std::slice::from_ref(&vip))?;
    let mut occ_curve = Vec::new();
    let mut filled = 0u64;
    for &n in &OCCUPANCY {
        fx.fill_flows(&vip.id(), filled..n)?;
        filled = n;
        let resident = fx.flow_count();
        let mut pt = point(
            &fx,
            n,
            &mut V4Flows::new(ack.clone(), move |i| active_flow(i, n, ACTIVE_FLOWS)),
            p,
        )?;
        pt.resident = Some(resident);
        eprintln!(
            "      ({resident} entries resident before, {} after)",
            fx.flow_count()
        );
        occ_curve.push(pt);
    }
    // Fill to capacity, then flood with SYNs from random clients (each insert evicts).
    let cap = u64::from(opts.flow_table_size);
    fx.fill_flows(&vip.id(), filled..cap)?;
    // Two sets of 1,000 flows of the fill: the active ones (one packet each now, and the hits
    // after the flood) and as many idle ones (no packet), resident before and after the flood.
    let step = cap / ACTIVE_FLOWS;
    let active = move || (0..ACTIVE_FLOWS).map(move |j| j * step);
    let idle = move || (0..ACTIVE_FLOWS).map(move |j| j * step + step / 2);
    let mut marking = V4Flows::new(ack.clone(), |k| k);
    for k in active() {
        runner::run_once(fx.prog(), marking.frame(k))?;
    }
    let active_before_flood = fx.resident(&vip.id(), active())?;
    let idle_before_flood = fx.resident(&vip.id(), idle())?;
    let before = fx.counters()?;
    let flood_base = 1u64 << 23;
    let syn_flood_full = runner::measure(
        fx.prog(),
        &mut V4Flows::new(syn.clone(), move |i| {
            flood_base + scrambled(i) % (runner::DISTINCT_CLIENTS - flood_base)
        }),
        p.warmup,
        p.iterations,
        p.runs,
    )?;
    let after = fx.counters()?;
    let active_after_flood = fx.resident(&vip.id(), active())?;
    let idle_after_flood = fx.resident(&vip.id(), idle())?;
    eprintln!(
        "    SYN flood, full table: {:.1} ns; of {ACTIVE_FLOWS} flows resident before -> after: \
         with a packet {active_before_flood} -> {active_after_flood}, idle \
         {idle_before_flood} -> {idle_after_flood}",
        syn_flood_full.ns
    );
    // Established hits right after the flood, over those flows (the ones the flood evicted
    // are inserted again by their first packet, during the warm-up).
    let before_hits = fx.counters()?;
    let hit_after_flood = runner::measure(
        fx.prog(),
        &mut V4Flows::new(ack, move |i| active_flow(i, cap, ACTIVE_FLOWS)),
        p.warmup,
        p.iterations,
        p.runs,
    )?;
    let after_hits = fx.counters()?;
    eprintln!("    hits after the flood: {:.1} ns", hit_after_flood.ns);

    Ok(Report {
        params: *p,
        reflect,
        curves: vec![
            Curve {
                name: "vips".into(),
                label: "established hit, packets round-robin over N VIPs".into(),
                x_label: "VIPs".into(),
                points: vips_curve,
            },
            Curve {
                name: "backends_syn".into(),
                label: "new flow (SYN), one VIP with N backends".into(),
                x_label: "backends per VIP".into(),
                points: syn_curve,
            },
            Curve {
                name: "backends_hit".into(),
                label: "established hit, 4,096 of 65,536 resident flows active, one VIP with N backends".into(),
                x_label: "backends per VIP".into(),
                points: hit_curve,
            },
            Curve {
                name: "occupancy".into(),
                label: "established hit, 1,000 active flows, N resident flows".into(),
                x_label: "flow-table entries".into(),
                points: occ_curve,
            },
        ],
        syn_flood_full,
        active_before_flood,
        active_after_flood,
        idle_before_flood,
        idle_after_flood,
        hit_after_flood,
        flood_counters: counter_delta(&before, &after),
        hit_after_flood_counters: counter_delta(&before_hits, &after_hits),
    })
}
