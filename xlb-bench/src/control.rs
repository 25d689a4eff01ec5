//! Control-plane figures: Maglev build time and disruption, reconcile time of a health change,
//! reload time of a large config (against the in-memory `FakeStore` and against real maps), and
//! the memory of a process holding a 1M-entry flow table.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb_common::limits::RING_SIZE;
pub use xlb_bench_data::control::{MaglevPoint, MemoryReport, Report, StoreFigures, Timing};

use super::{
    fixture::{Fixture, VipSpec, config_text, net_info, validate},
    packet::v4_backends,
    sys,
};
use lb_userspace::{
    loader::{self, LoadOptions},
    maglev::{self, MaglevBackend},
    maps::{AyaStore, FakeStore, MapStore},
    model::Proto,
    reconcile::{Overrides, Reconciler},
};
use xlb_testkit::packet::ip;

fn timing(mut samples: Vec<Duration>) -> Timing {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Timing {
        reps: samples.len() as u32,
        median_ms: ms(samples[samples.len() / 2]),
        min_ms: ms(samples[0]),
        max_ms: ms(samples[samples.len() - 1]),
    }
}

fn time_reps(reps: u32, mut f: impl FnMut()) -> Timing {
    f(); // warm-up
    timing(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

pub fn maglev_backends(n: u32) -> Vec<MaglevBackend> {
    (1..=n)
        .map(|i| MaglevBackend {
            id: i,
            addr: SocketAddr::new(
                ip(&format!("2001:db8:be::{:x}:{:x}", i >> 16, i & 0xffff)),
                80,
            ),
            weight: 100,
        })
        .collect()
}

pub fn maglev(counts: &[u32], reps: u32) -> anyhow::Result<Vec<MaglevPoint>> {
    let mut out = Vec::new();
    for &n in counts {
        let backends = maglev_backends(n);
        let build = time_reps(reps, || {
            std::hint::black_box(maglev::build_table(&backends, RING_SIZE).expect("build"));
        });
        let table = maglev::build_table(&backends, RING_SIZE)?;
        let failed = backends[(n / 2) as usize].id;
        let survivors: Vec<MaglevBackend> = backends
            .iter()
            .copied()
            .filter(|b| b.id != failed)
            .collect();
        let after = maglev::build_table(&survivors, RING_SIZE)?;
        let changed = maglev::diff(&table, &after);
        let own = table.iter().filter(|&&id| id == failed).count() as u32;
        let changed_n = changed.len() as u32;
        eprintln!(
            "  maglev {n:>5} backends: build {:.3} ms, {changed_n} slots rewritten on 1 failure \
             (ideal {own})",
            build.median_ms
        );
        out.push(MaglevPoint {
            backends: n,
            table_size: RING_SIZE,
            build,
            slots_changed_on_failure: changed_n,
            slots_moved_between_survivors: changed_n - own,
            changed_fraction: f64::from(changed_n) / f64::from(RING_SIZE),
            ideal_fraction: 1.0 / f64::from(n),
            max_imbalance: maglev::imbalance(&table, &backends).unwrap_or(0.0),
        });
    }
    Ok(out)
}

pub fn big_config(vips: u32, per_vip: u32) -> Vec<VipSpec> {
    (0..vips)
        .map(|i| VipSpec {
            addr: ip(&format!("203.0.113.{}", 1 + i)),
            port: 80,
            proto: Proto::Tcp,
            mode: "ipip",
            affinity: false,
            backends: v4_backends(per_vip),
        })
        .collect()
}

/// The 100 x 100 config as text; `tweak` gives the first backend of the first VIP weight 50.
fn big_text(opts: &LoadOptions, vips: u32, per_vip: u32, tweak: bool) -> String {
    let text = config_text(opts, &big_config(vips, per_vip));
    if tweak {
        text.replacen(
            "[[vip.backend]]\naddress = \"192.0.2.100\"\n",
            "[[vip.backend]]\naddress = \"192.0.2.100\"\nweight = 50\n",
            1,
        )
    } else {
        text
    }
}

fn store_figures<S: MapStore>(
    name: &'static str,
    store: S,
    opts: &LoadOptions,
    vips: u32,
    per_vip: u32,
    reps: u32,
) -> anyhow::Result<StoreFigures> {
    let text = big_text(opts, vips, per_vip, false);
    let tweaked = big_text(opts, vips, per_vip, true);
    let cfg = validate(&text)?;
    let net = net_info(&cfg);
    let mut rec = Reconciler::adopt(store)?;
    let t = Instant::now();
    rec.apply(&cfg, &Overrides::default(), &net)?;
    let initial_apply = timing(vec![t.elapsed()]);

    let victim: (lb_userspace::model::VipId, IpAddr) =
        (cfg.vips[0].id, cfg.vips[0].backends[50].addr);
    let mut samples = Vec::new();
    let mut slots = 0;
    for k in 0..reps * 2 {
        let mut o = Overrides::default();
        if k % 2 == 0 {
            o.down.insert(victim);
        }
        let r = rec.apply(&cfg, &o, &net)?;
        slots = slots.max(r.ring_slots_written);
        samples.push(r.duration);
    }
    let health_change_apply = timing(samples);

    let mut unchanged = Vec::new();
    let mut weight = Vec::new();
    for k in 0..reps {
        let t = Instant::now();
        let c = validate(&text)?;
        rec.apply(&c, &Overrides::default(), &net)?;
        unchanged.push(t.elapsed());
        let t = Instant::now();
        let c = validate(if k % 2 == 0 { &tweaked } else { &text })?;
        rec.apply(&c, &Overrides::default(), &net)?;
        weight.push(t.elapsed());
    }
    let f = StoreFigures {
        store: name.into(),
        vips,
        backends_per_vip: per_vip,
        initial_apply,
        health_change_apply,
        health_change_ring_slots: slots,
        reload_unchanged: timing(unchanged),
        reload_one_weight: timing(weight),
    };
    eprintln!(
        "  {name}: initial apply {:.1} ms, health change {:.3} ms ({} slots), reload {:.1} ms \
         (unchanged) / {:.1} ms (one weight)",
        f.initial_apply.median_ms,
        f.health_change_apply.median_ms,
        f.health_change_ring_slots,
        f.reload_unchanged.median_ms,
        f.reload_one_weight.median_ms
    );
    Ok(f)
}

pub fn run(reps: u32) -> anyhow::Result<Report> {
    let maglev = maglev(&[10, 100, 1000], reps.max(20))?;
    let (vips, per_vip) = (100, 100);
    // max-backends must exceed 100 x 100 (id 0 is reserved).
    let opts = LoadOptions {
        max_vips: 128,
        max_backends: 16_384,
        flow_table_size: 1024,
        peer_flows: lb_common::limits::PEER_FLOWS_OFF,
    };
    let text = big_text(&opts, vips, per_vip, false);
    let validate_t = time_reps(reps, || {
        std::hint::black_box(validate(&text).expect("valid"));
    });
    eprintln!(
        "  validate 100x100 config ({} bytes): {:.1} ms",
        text.len(),
        validate_t.median_ms
    );
    let fake = store_figures(
        "FakeStore (in memory)",
        FakeStore::new(opts.max_vips, opts.max_backends),
        &opts,
        vips,
        per_vip,
        reps,
    )?;
    let mut ebpf = loader::load(&opts)?;
    let real = store_figures(
        "AyaStore (kernel maps)",
        AyaStore::from_ebpf(&mut ebpf)?,
        &opts,
        vips,
        per_vip,
        reps,
    )?;
    Ok(Report {
        maglev,
        validate: validate_t,
        config_bytes: text.len(),
        stores: vec![fake, real],
    })
}

/// Loads the program with the default sizes (1M-entry flow table), fills `flows` entries, and
/// reads this process's RSS and the kernel's accounting of its maps.
pub fn memory(flows: u64) -> anyhow::Result<MemoryReport> {
    let opts = LoadOptions::default();
    let vip = big_config(1, 16).remove(0);
    let mut fx = Fixture::new(opts, std::slice::from_ref(&vip))?;
    let rss_after_load = sys::rss("self");
    let t = Instant::now();
    fx.fill_flows(&vip.id(), 0..flows)?;
    let fill_seconds = t.elapsed().as_secs_f64();
    let rss_after_fill = sys::rss("self");
    let flows_resident = fx.flow_count();
    let maps = sys::map_memory("self");
    let memlock_total_bytes = maps.iter().map(|m| m.memlock_bytes).sum();
    Ok(MemoryReport {
        flow_table_size: opts.flow_table_size,
        flows_inserted: flows,
        flows_resident,
        rss_after_load,
        rss_after_fill,
        maps,
        memlock_total_bytes,
        fill_seconds,
    })
}
