//! Per-packet scenarios: the two baselines (`xlb_pass`, `xlb_reflect`) and the LB's paths, all
//! measured with the same method ([`runner::measure`]) on the same pinned CPU.

use std::collections::HashMap;
use std::net::IpAddr;

use lb_common::{addr, hash::addr_filter_bit};

use super::{
    fixture::{Aux, Fixture, VipSpec, counter_delta},
    runner::{self, ACTIVE_FLOWS, Fixed, Frames, Measurement, V4Flows, active_flow, scrambled},
};
use lb_common::map_names::{PROG_PASS, PROG_REFLECT};
use lb_userspace::{loader::LoadOptions, model::Proto};
use xlb_testkit::packet::{Packet, TCP_ACK, TCP_SYN, ip};

pub use xlb_bench_data::packet::{Params, Report, Scenario};

/// XDP verdicts.
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The map sizes of `o`, as the report shows them.
fn load_options(o: LoadOptions) -> xlb_bench_data::packet::LoadOptions {
    xlb_bench_data::packet::LoadOptions {
        max_vips: o.max_vips,
        max_backends: o.max_backends,
        flow_table_size: o.flow_table_size,
    }
}

pub const VIP_V4: &str = "203.0.113.10";
pub const VIP_GUE: &str = "203.0.113.11";
pub const VIP_DSR: &str = "203.0.113.12";
pub const VIP_AFF: &str = "203.0.113.13";
pub const VIP_V6: &str = "2001:db8:10::10";
/// Client of the single-flow scenarios (port below the range of `runner::client_of`).
pub const CLIENT_V4: &str = "198.51.100.7";
pub const CLIENT_V6: &str = "2001:db8:c1::7";
pub const CLIENT_PORT: u16 = 999;

pub fn v4_backends(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| ip(&format!("192.0.2.{}", 100 + i)))
        .collect()
}

pub fn v6_backends(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            ip(&format!(
                "2001:db8:be::{:x}:{:x}",
                (i + 1) >> 16,
                (i + 1) & 0xffff
            ))
        })
        .collect()
}

/// The VIPs of the per-packet scenarios: one per path, 16 backends each.
pub fn scenario_vips() -> Vec<VipSpec> {
    let v = |a: &str, port, proto, mode, affinity, backends| VipSpec {
        addr: ip(a),
        port,
        proto,
        mode,
        affinity,
        backends,
    };
    vec![
        v(VIP_V4, 80, Proto::Tcp, "ipip", false, v4_backends(16)),
        v(VIP_V4, 53, Proto::Udp, "ipip", false, v4_backends(16)),
        v(VIP_V6, 80, Proto::Tcp, "ipip", false, v6_backends(16)),
        v(VIP_GUE, 80, Proto::Tcp, "gue", false, v4_backends(16)),
        v(VIP_DSR, 80, Proto::Tcp, "dsr-l2", false, v4_backends(16)),
        v(VIP_AFF, 80, Proto::Tcp, "ipip", true, v4_backends(16)),
    ]
}

/// A destination in the VIP range whose address pre-filter bit no VIP sets: the cheapest pass.
pub fn non_vip_addr(vips: &[VipSpec]) -> IpAddr {
    let bits: Vec<u32> = vips
        .iter()
        .map(|v| addr_filter_bit(&addr::to_words(v.addr).1))
        .collect();
    (100..=254)
        .map(|x| ip(&format!("203.0.113.{x}")))
        .find(|a| !bits.contains(&addr_filter_bit(&addr::to_words(*a).1)))
        .expect("a free pre-filter bit")
}

fn tcp(src: &str, dst: &str, flags: u8) -> Packet {
    Packet::tcp(src, CLIENT_PORT, dst, 80, flags)
}

/// The ICMP frag-needed a router would send the VIP about the VIP's reply to the client.
pub fn pmtu_frame() -> Vec<u8> {
    let reply = Packet::tcp(VIP_V4, 80, CLIENT_V4, CLIENT_PORT, TCP_ACK).payload_len(1400);
    let mut quoted = reply.ip_bytes();
    quoted.truncate(64);
    Packet::too_big("192.0.2.254", VIP_V4, 1400, quoted).frame()
}

/// Measures one scenario and records which counters moved.
pub fn scenario(
    fx: &Fixture,
    name: &'static str,
    label: &'static str,
    expected_verdict: u32,
    frames: &mut dyn Frames,
    p: &Params,
) -> anyhow::Result<Scenario> {
    let before = fx.counters()?;
    let m = measured(fx.prog(), name, frames, p)?;
    Ok(Scenario {
        counters: counter_delta(&before, &fx.counters()?),
        ..row(name, label, expected_verdict, m)
    })
}

/// Measures `prog` on `frames` with the method of every per-packet row, and logs it.
fn measured(
    prog: &aya::programs::Xdp,
    name: &str,
    frames: &mut dyn Frames,
    p: &Params,
) -> anyhow::Result<Measurement> {
    let m = runner::measure(prog, frames, p.warmup, p.iterations, p.runs)?;
    log_measurement(name, &m);
    Ok(m)
}

/// The progress line of one measured scenario.
fn log_measurement(name: &str, m: &Measurement) {
    eprintln!(
        "  {name:<22} {:>8.1} ns  ({:.2} Mpps, spread {:.1}%)",
        m.ns,
        m.mpps(),
        m.spread * 100.0
    );
}

fn row(name: &str, label: &str, expected_verdict: u32, m: Measurement) -> Scenario {
    Scenario {
        name: name.into(),
        label: label.into(),
        expected_verdict,
        m,
        counters: HashMap::new(),
    }
}

/// How a one-frame scenario is timed.
enum Method {
    /// One BPF_PROG_TEST_RUN call per packet, as every other row ([`measured`]).
    Calls,
    /// The kernel's repeat loop: the program runs again on its own output.
    RepeatLoop,
}

/// `prog` timed on `frame` alone.
fn one_frame(
    prog: &aya::programs::Xdp,
    method: Method,
    name: &'static str,
    label: &'static str,
    expected_verdict: u32,
    frame: &[u8],
    p: &Params,
) -> anyhow::Result<Scenario> {
    let m = match method {
        Method::Calls => measured(prog, name, &mut Fixed(frame.to_vec()), p)?,
        Method::RepeatLoop => {
            let repeat = p.iterations.min(u64::from(u32::MAX)) as u32;
            let m = runner::measure_repeat(prog, frame, repeat, p.runs)?;
            eprintln!("  {name:<22} {:>8.2} ns  (repeat loop)", m.ns);
            m
        }
    };
    Ok(row(name, label, expected_verdict, m))
}

/// Every per-packet scenario, or those named in `only` (the baselines always run: the ratios
/// need them). The caller pins the thread to `p.cpu` first.
pub fn run(p: &Params, only: &[String]) -> anyhow::Result<Report> {
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let opts = LoadOptions::default();
    let vips = scenario_vips();
    let mut fx = Fixture::new(opts, &vips)?;
    let pass = Aux::new(PROG_PASS)?;
    let reflect = Aux::new(PROG_REFLECT)?;

    let hit_v4 = tcp(CLIENT_V4, VIP_V4, TCP_ACK).frame();
    let mut out = vec![one_frame(
        pass.prog(),
        Method::Calls,
        "baseline_pass",
        "xlb_pass (XDP_PASS no-op)",
        XDP_PASS,
        &hit_v4,
        p,
    )?];
    out.push(one_frame(
        reflect.prog(),
        Method::Calls,
        "baseline_reflect",
        "xlb_reflect (MAC swap + XDP_TX)",
        XDP_TX,
        &hit_v4,
        p,
    )?);
    // The single-flow scenarios: one fixed frame each, measured in this order.
    let non_vip = non_vip_addr(&vips).to_string();
    let fixed: [(&'static str, &'static str, u32, Vec<u8>); 8] = [
        (
            "v4_tcp_hit",
            "IPv4 TCP established (flow-table hit), ipip",
            XDP_TX,
            hit_v4.clone(),
        ),
        (
            "v6_tcp_hit",
            "IPv6 TCP established (flow-table hit), ipip",
            XDP_TX,
            tcp(CLIENT_V6, VIP_V6, TCP_ACK).frame(),
        ),
        (
            "v4_udp_hit",
            "IPv4 UDP (flow-table hit), ipip",
            XDP_TX,
            Packet::udp(CLIENT_V4, CLIENT_PORT, VIP_V4, 53).frame(),
        ),
        (
            "gue_hit",
            "IPv4 TCP established, GUE",
            XDP_TX,
            tcp(CLIENT_V4, VIP_GUE, TCP_ACK).frame(),
        ),
        (
            "dsr_hit",
            "IPv4 TCP established, dsr-l2",
            XDP_TX,
            tcp(CLIENT_V4, VIP_DSR, TCP_ACK).frame(),
        ),
        (
            "affinity_hit",
            "IPv4 TCP established, source affinity",
            XDP_TX,
            tcp(CLIENT_V4, VIP_AFF, TCP_ACK).frame(),
        ),
        (
            "non_vip_pass",
            "non-VIP destination (pre-filter miss, XDP_PASS)",
            XDP_PASS,
            tcp(CLIENT_V4, &non_vip, TCP_ACK).frame(),
        ),
        (
            "icmp_pmtu_relay",
            "ICMP frag-needed relayed to the flow's backend",
            XDP_TX,
            pmtu_frame(),
        ),
    ];
    for (name, label, verdict, frame) in fixed {
        if want(name) {
            out.push(scenario(&fx, name, label, verdict, &mut Fixed(frame), p)?);
        }
    }
    // New flows: SYNs from distinct clients (ring lookup + flow insert; once the table's sets
    // are full, every insert also evicts).
    let syn = Packet::tcp(CLIENT_V4, CLIENT_PORT, VIP_V4, 80, TCP_SYN).frame();
    let offset = 1 << 23;
    if want("v4_tcp_new") {
        out.push(scenario(
            &fx,
            "v4_tcp_new",
            "IPv4 TCP new flows (SYN, distinct clients: ring + insert)",
            XDP_TX,
            &mut V4Flows::new(syn, move |i| offset + scrambled(i) % (1 << 22)),
            p,
        )?);
    }
    // Flow-table misses: ACKs of flows the table does not hold (a flow moved here from
    // another node), each flow new (ring + insert). Without and with flow continuity, which
    // adds a peer-table lookup to every miss (docs/datapath.md §4): the A/B of that lookup.
    let ack = Packet::tcp(CLIENT_V4, CLIENT_PORT, VIP_V4, 80, TCP_ACK).frame();
    for (name, label, continuity, base) in [
        (
            "v4_tcp_miss",
            "IPv4 TCP flow-table miss (ACK, distinct clients: ring + insert)",
            false,
            3u64 << 22,
        ),
        (
            "v4_tcp_miss_peers",
            "IPv4 TCP flow-table miss with continuity on (+ peer-table lookup)",
            true,
            7u64 << 21,
        ),
    ] {
        if want(name) {
            if continuity {
                fx.apply_with_continuity(&vips)?;
            }
            // Sequential indices: every packet a flow not seen before (2M per scenario).
            out.push(scenario(
                &fx,
                name,
                label,
                XDP_TX,
                &mut V4Flows::new(ack.clone(), move |i| base + i % (1 << 21)),
                p,
            )?);
            if continuity {
                fx.apply(&vips)?;
            }
        }
    }
    // 1M resident flows. The traffic: established packets of ACTIVE_FLOWS of them (the target
    // row), then every packet a different resident flow (all cache-cold; context, no target).
    let (mut resident_after_fill, mut table_entries_after_fill) = (None, None);
    if want("v4_tcp_hit_1m") || want("v4_tcp_hit_1m_all") {
        let vip = vips[0].id();
        eprintln!("  filling {} flows ...", p.resident);
        fx.fill_flows(&vip, 0..p.resident)?;
        let count = fx.resident(&vip, 0..p.resident)?;
        let entries = fx.flow_count();
        eprintln!("  {count} of them resident; {entries} entries in the table");
        resident_after_fill = Some(count);
        table_entries_after_fill = Some(entries);
        let resident = p.resident;
        if want("v4_tcp_hit_1m") {
            out.push(scenario(
                &fx,
                "v4_tcp_hit_1m",
                "IPv4 TCP established, 1M flows resident, 1,000 of them active",
                XDP_TX,
                &mut V4Flows::new(hit_v4.clone(), move |i| {
                    active_flow(i, resident, ACTIVE_FLOWS)
                }),
                p,
            )?);
        }
        if want("v4_tcp_hit_1m_all") {
            out.push(scenario(
                &fx,
                "v4_tcp_hit_1m_all",
                "IPv4 TCP established, 1M flows resident, all active (random order)",
                XDP_TX,
                &mut V4Flows::new(hit_v4.clone(), move |i| scrambled(i) % resident),
                p,
            )?);
        }
    }

    // The repeat loop for programs that redo the same work on their own output.
    let dsr = tcp(CLIENT_V4, VIP_DSR, TCP_ACK).frame();
    let nonvip_frame = tcp(CLIENT_V4, &non_vip, TCP_ACK).frame();
    let repeat_method = vec![
        one_frame(
            pass.prog(),
            Method::RepeatLoop,
            "baseline_pass",
            "xlb_pass",
            XDP_PASS,
            &hit_v4,
            p,
        )?,
        one_frame(
            reflect.prog(),
            Method::RepeatLoop,
            "baseline_reflect",
            "xlb_reflect",
            XDP_TX,
            &hit_v4,
            p,
        )?,
        one_frame(
            fx.prog(),
            Method::RepeatLoop,
            "dsr_hit",
            "dsr-l2 hit (output re-parses identically)",
            XDP_TX,
            &dsr,
            p,
        )?,
        one_frame(
            fx.prog(),
            Method::RepeatLoop,
            "non_vip_pass",
            "non-VIP pass",
            XDP_PASS,
            &nonvip_frame,
            p,
        )?,
    ];
    Ok(Report {
        params: *p,
        load_options: load_options(opts),
        scenarios: out,
        repeat_method,
        resident_after_fill,
        table_entries_after_fill,
    })
}
