//! XDP live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): the kernel runs the program on frames
//! it builds itself and really transmits what the program returns `XDP_TX` for, out of the
//! interface given as the ingress. Run inside a namespace the caller created, on a veth whose
//! peer has `xlb_pass` attached (a veth delivers XDP frames only to a peer with an XDP program).
//!
//! The kernel recycles the frame pages without copying the input back in, so a program that
//! rewrites bytes in place sees its own output on the next use of a page. The LB is measured on
//! a dsr-l2 VIP, whose rewrite (destination/source MAC) re-parses identically; an encapsulating
//! path would, from the second use of a page, see a tunnel packet instead.

use std::time::Instant;

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
pub use xlb_bench_data::live::{Generated, LiveProgram, LiveRun, Report};

use super::{
    fixture::{Aux, Fixture, VipSpec, counter_delta},
    packet::{CLIENT_PORT, CLIENT_V4, VIP_DSR, v4_backends},
    runner::run_once,
};
use lb_common::map_names::PROG_REFLECT;
use lb_userspace::{loader::LoadOptions, model::Proto};
use xlb_testkit::packet::{Packet, TCP_ACK, ip};

fn ctx_for(ifindex: u32, len: usize) -> Vec<u8> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }
    [0u32, len as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect()
}

fn live(
    prog: &Xdp,
    name: &'static str,
    frame: &[u8],
    ifindex: u32,
    frames: u32,
    batch: u32,
    runs: u32,
) -> anyhow::Result<LiveProgram> {
    let ctx = ctx_for(ifindex, frame.len());
    let mut out = Vec::new();
    for r in 0..=runs {
        let t = Instant::now();
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(batch),
            ..TestRunOptions::default()
        })?;
        let wall = t.elapsed().as_secs_f64();
        if r == 0 {
            continue; // warm-up (page pool, peer NAPI)
        }
        out.push(LiveRun {
            frames,
            kernel_ns_per_frame: res.duration.as_nanos() as f64,
            wall_seconds: wall,
            pps: f64::from(frames) / wall,
        });
    }
    let mut pps: Vec<f64> = out.iter().map(|r| r.pps).collect();
    pps.sort_by(f64::total_cmp);
    let mut kns: Vec<f64> = out.iter().map(|r| r.kernel_ns_per_frame).collect();
    kns.sort_by(f64::total_cmp);
    let p = LiveProgram {
        program: name.into(),
        pps: pps[pps.len() / 2],
        kernel_ns_per_frame: kns[kns.len() / 2],
        runs: out,
    };
    eprintln!(
        "  live {name}: {:.2} Mpps ({:.1} ns/frame in the kernel)",
        p.pps / 1e6,
        p.kernel_ns_per_frame
    );
    Ok(p)
}

pub fn run(ifname: &str, frames: u32, batch: u32, runs: u32) -> anyhow::Result<Report> {
    let ifindex = ifindex_of(ifname)?;
    let opts = LoadOptions {
        max_vips: 4,
        max_backends: 64,
        flow_table_size: 1 << 16,
        peer_flows: lb_common::limits::PEER_FLOWS_OFF,
    };
    let vip = VipSpec {
        addr: ip(VIP_DSR),
        port: 80,
        proto: Proto::Tcp,
        mode: "dsr-l2",
        affinity: false,
        backends: v4_backends(4),
    };
    let fx = Fixture::new(opts, std::slice::from_ref(&vip))?;
    let frame = Packet::tcp(CLIENT_V4, CLIENT_PORT, VIP_DSR, 80, TCP_ACK).frame();
    run_once(fx.prog(), &frame)?; // establishes the flow
    // Both programs see the same frames on the same interface: only the program differs.
    let measure =
        |prog: &Xdp, name: &'static str| live(prog, name, &frame, ifindex, frames, batch, runs);
    let before = fx.counters()?;
    let xlb = measure(fx.prog(), "xlb (dsr-l2 hit)")?;
    let after = fx.counters()?;
    let reflect = measure(Aux::new(PROG_REFLECT)?.prog(), "xlb_reflect")?;
    Ok(Report {
        ifname: ifname.to_string(),
        ifindex,
        batch,
        xlb,
        reflect,
        xlb_counters: counter_delta(&before, &after),
    })
}

/// A traffic generator on the same mechanism (what xdp-trafficgen does): `xlb_reflect` run in
/// live-frames mode with `ifname` as the ingress, on a frame whose MACs are given swapped, so
/// every frame leaves `ifname` as `src_mac -> dst_mac`. Sends UDP `src:sport -> dst:dport`
/// for `seconds`; returns the frames sent.
pub fn generate(
    ifname: &str,
    seconds: f64,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: &str,
    dst: &str,
    dport: u16,
) -> anyhow::Result<u64> {
    let ifindex = ifindex_of(ifname)?;
    let aux = Aux::new(PROG_REFLECT)?;
    let frame = Packet::udp(src, 40_000, dst, dport)
        .macs(src_mac, dst_mac)
        .frame();
    let ctx = ctx_for(ifindex, frame.len());
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        aux.prog().test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&ctx),
            repeat: 100_000,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::default()
        })?;
        sent += 100_000;
    }
    Ok(sent)
}

fn ifindex_of(ifname: &str) -> anyhow::Result<u32> {
    lb_userspace::netlink::interface_index(ifname)?
        .ok_or_else(|| anyhow::anyhow!("no interface {ifname} in this namespace"))
}
