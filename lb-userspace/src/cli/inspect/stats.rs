//! `xlb inspect stats`: the global counters, once or, with `--watch`, the ones that moved in
//! each sample.
//!
//! JSON: `{"counters": [{index, name, total}]}`; with `--watch`, one line per sample `{sample,
//! time_s, elapsed_s, counters: [{index, name, total, delta, per_s}]}` (moved counters only).

use std::io::Write;
use std::time::Duration;

use lb_common::stats::{Counter, GlobalStats};
use serde::Serialize;

use super::common::{delta, write_json};
use super::{Pacer, StatsArgs};
use crate::cli::format::{Align, Table, rate, render_row};
use crate::maps::MapStore;

#[derive(Serialize)]
struct StatsJson {
    counters: Vec<CounterJson>,
}

#[derive(Serialize)]
struct CounterJson {
    index: u32,
    name: &'static str,
    total: u64,
}

#[derive(Serialize)]
struct SampleJson {
    sample: u64,
    time_s: f64,
    elapsed_s: f64,
    counters: Vec<MovedJson>,
}

#[derive(Serialize)]
struct MovedJson {
    index: u32,
    name: &'static str,
    total: u64,
    delta: u64,
    per_s: f64,
}

pub(super) fn stats<S: MapStore>(
    store: &S,
    a: &StatsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let g = store.global_stats()?;
    let counters: Vec<CounterJson> = Counter::ALL
        .iter()
        .map(|c| CounterJson {
            index: *c as u32,
            name: c.name(),
            total: g.counters[*c as usize],
        })
        .collect();
    if a.output.json {
        return write_json(out, &StatsJson { counters });
    }
    let mut t = Table::new(&[
        ("INDEX", Align::Right),
        ("REASON", Align::Left),
        ("COUNT", Align::Right),
    ]);
    for c in counters {
        t.push(vec![
            c.index.to_string(),
            c.name.into(),
            c.total.to_string(),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

/// Fixed widths of the streamed watch table (a wider cell widens its own line only).
const WATCH_COLUMNS: [(&str, Align, usize); 6] = [
    ("SAMPLE", Align::Right, 6),
    ("TIME", Align::Right, 9),
    ("REASON", Align::Left, 25),
    ("TOTAL", Align::Right, 14),
    ("DELTA", Align::Right, 10),
    ("PER_S", Align::Right, 12),
];

pub(super) fn stats_watch<S: MapStore>(
    store: &S,
    a: &StatsArgs,
    out: &mut dyn Write,
    pacer: &mut dyn Pacer,
) -> anyhow::Result<()> {
    let widths: Vec<usize> = WATCH_COLUMNS.iter().map(|c| c.2).collect();
    let aligns: Vec<Align> = WATCH_COLUMNS.iter().map(|c| c.1).collect();
    if !a.output.json {
        let header: Vec<String> = WATCH_COLUMNS.iter().map(|c| c.0.to_string()).collect();
        writeln!(out, "{}", render_row(&header, &widths, &aligns))?;
        out.flush()?;
    }
    let mut prev: GlobalStats = store.global_stats()?;
    let mut time = Duration::ZERO;
    let mut sample = 0u64;
    while a.count.is_none_or(|n| sample < n) {
        let Some(elapsed) = pacer.wait(a.interval) else {
            break;
        };
        let cur = store.global_stats()?;
        sample += 1;
        time += elapsed;
        let moved: Vec<MovedJson> = Counter::ALL
            .iter()
            .filter_map(|c| {
                let i = *c as usize;
                let d = delta(prev.counters[i], cur.counters[i]);
                (d > 0).then(|| MovedJson {
                    index: *c as u32,
                    name: c.name(),
                    total: cur.counters[i],
                    delta: d,
                    per_s: rate(d, elapsed),
                })
            })
            .collect();
        if a.output.json {
            let doc = SampleJson {
                sample,
                time_s: time.as_secs_f64(),
                elapsed_s: elapsed.as_secs_f64(),
                counters: moved,
            };
            serde_json::to_writer(&mut *out, &doc)?;
            writeln!(out)?;
        } else {
            for m in moved {
                let row = vec![
                    sample.to_string(),
                    format!("{:.3}", time.as_secs_f64()),
                    m.name.to_string(),
                    m.total.to_string(),
                    m.delta.to_string(),
                    format!("{:.1}", m.per_s),
                ];
                writeln!(out, "{}", render_row(&row, &widths, &aligns))?;
            }
        }
        out.flush()?;
        prev = cur;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use lb_common::stats::Counter;
    use serde_json::Value;

    use crate::cli::inspect::test_support::{
        Script, json, lines, row, run_args, run_script, world,
    };
    use crate::maps::FakeStore;

    #[test]
    fn stats_lists_every_counter() {
        let w = world();
        w.borrow_mut().global.counters[Counter::Tx as usize] = 42;
        let text = run_args(&w, &["stats"]);
        assert_eq!(lines(&text).len(), 1 + Counter::ALL.len());
        assert_eq!(row(&text, &["4"]), ["4", "tx", "42"]);
        assert_eq!(
            row(&text, &["21"]),
            ["21", "drop_too_big_rate_limited", "0"]
        );
        let v = json(&w, &["stats"]);
        assert_eq!(
            v["counters"][4],
            serde_json::json!({"index": 4, "name": "tx", "total": 42})
        );
    }

    #[test]
    fn stats_watch_prints_moved_counters_with_rates() {
        let w = world();
        let set = |s: &mut FakeStore, c: Counter, v: u64| s.global.counters[c as usize] = v;
        {
            let mut s = w.borrow_mut();
            set(&mut s, Counter::Pass, 50);
            set(&mut s, Counter::Tx, 1_000);
            set(&mut s, Counter::FlowHit, 900);
        }
        let step = move |s: &mut FakeStore, call: usize| match call {
            1 => {
                set(s, Counter::Tx, 1_200);
                set(s, Counter::FlowHit, 1_050);
                set(s, Counter::FlowMiss, 50);
            }
            2 => set(s, Counter::DropNoBackend, 4),
            _ => panic!("--count 2 takes two samples"),
        };
        let text = run_script(
            &w,
            &["stats", "--watch", "--interval", "2", "--count", "2"],
            &mut Script::new(&w, step),
        );
        assert_eq!(
            text,
            concat!(
                "SAMPLE       TIME  REASON                              TOTAL       DELTA         PER_S\n",
                "     1      2.000  tx                                   1200         200         100.0\n",
                "     1      2.000  flow_hit                             1050         150          75.0\n",
                "     1      2.000  flow_miss                              50          50          25.0\n",
                "     2      4.000  drop_no_backend                         4           4           2.0\n",
            )
        );
        let out = run_script(
            &w,
            &["stats", "--watch", "--count", "1", "--json"],
            &mut Script::new(&w, move |s, _| set(s, Counter::Tx, 1_210)),
        );
        let samples: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(samples.len(), 1);
        assert_eq!(
            samples[0],
            serde_json::json!({
                "sample": 1, "time_s": 2.0, "elapsed_s": 2.0,
                "counters": [{"index": 4, "name": "tx", "total": 1210, "delta": 10, "per_s": 5.0}]
            })
        );
    }
}
