//! The bench report's charts, drawn as SVG with plotters: per-packet cost (`per_packet.svg`),
//! the end-to-end paths (`e2e.svg`) and the scale curves (`scale_vips.svg`,
//! `scale_backends.svg`, `scale_occupancy.svg`). SVG text is written as `<text>` elements the
//! viewer renders, so no font file or font library is needed here.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use xlb_bench_data::{e2e, packet, run::Results, scale};

use crate::bench_report::FLAT;

const FONT: &str = "sans-serif";
const BASELINE: RGBColor = RGBColor(128, 128, 128);
const XLB: RGBColor = RGBColor(31, 119, 180);
const HAPROXY: RGBColor = RGBColor(255, 127, 14);
const FLOOD: RGBColor = RGBColor(214, 39, 40);
/// Colours of the curves of one scale chart, in order.
const CURVES: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(44, 160, 44)];

/// Which scale chart curve `name` is drawn in: the two backends curves share one.
pub fn scale_group(name: &str) -> &str {
    if name.starts_with("backends") {
        "backends"
    } else {
        name
    }
}

/// Draws the charts of the stages in `results` into `out`; returns the file names written.
pub fn write(results: &Results, out: &Path) -> Result<Vec<String>> {
    let mut written = Vec::new();
    if let Some(p) = &results.packet {
        per_packet(p, &out.join("per_packet.svg"))?;
        written.push("per_packet.svg".to_string());
    }
    if let Some(e) = &results.e2e {
        end_to_end(e, &out.join("e2e.svg"))?;
        written.push("e2e.svg".to_string());
    }
    if let Some(s) = &results.scale {
        for group in ["backends", "occupancy", "vips"] {
            let name = format!("scale_{group}.svg");
            scale_chart(s, group, &out.join(&name))?;
            written.push(name);
        }
    }
    written.sort();
    Ok(written)
}

/// plotters' errors borrow nothing but are generic over the backend's; one message here.
fn draw_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// Horizontal bars, one per scenario (top to bottom in the report's order), labelled with the
/// time and the ratio to the reflector.
fn per_packet(r: &packet::Report, path: &Path) -> Result<()> {
    let refl = r.scenario("baseline_reflect").map_or(f64::NAN, |s| s.m.ns);
    let n = r.scenarios.len();
    let max = r.scenarios.iter().map(|s| s.m.ns).fold(0.0, f64::max);
    let height = 80 + 28 * n as u32;
    let root = SVGBackend::new(path, (880, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "xlb per-packet cost; ratio to the reflector in brackets",
            (FONT, 15),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(150)
        .build_cartesian_2d(0.0..(max * 1.35).max(1.0), (0..n).into_segmented())
        .map_err(draw_err)?;
    // Row i from the top is segment n - 1 - i (plotters counts upwards).
    let row = |i: usize| n - 1 - i;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(k) if *k < n => r.scenarios[row(*k)].name.clone(),
            _ => String::new(),
        })
        .x_desc("ns per packet (single-packet BPF_PROG_TEST_RUN, median of runs)")
        .label_style((FONT, 11))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(r.scenarios.iter().enumerate().map(|(i, s)| {
            let colour = if s.name.starts_with("baseline") {
                BASELINE
            } else {
                XLB
            };
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row(i))),
                    (s.m.ns, SegmentValue::Exact(row(i) + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))
        .map_err(draw_err)?;
    let label = TextStyle::from((FONT, 11)).pos(Pos::new(HPos::Left, VPos::Center));
    chart
        .draw_series(r.scenarios.iter().enumerate().map(|(i, s)| {
            Text::new(
                format!(" {:.0} ns ({:.2}x)", s.m.ns, s.m.ns / refl),
                (s.m.ns, SegmentValue::CenterOf(row(i))),
                label.clone(),
            )
        }))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Three panels (requests/s with keep-alive, connections/s, iperf3), one bar per path.
fn end_to_end(r: &e2e::Report, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (1000, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let panels = root.split_evenly((1, 3));
    type Get = fn(&e2e::HttpSuite) -> f64;
    let figures: [(&str, Get); 3] = [
        ("requests/s (keep-alive)", |p| p.keepalive.requests_per_s),
        ("connections/s", |p| p.connection_close.requests_per_s),
        ("iperf3 Gbit/s", |p| p.iperf3.gbit_per_s),
    ];
    let paths = r.paths();
    for (area, (title, get)) in panels.iter().zip(figures) {
        let values: Vec<f64> = paths.iter().map(|(_, p)| get(p)).collect();
        let top = values.iter().copied().fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 14))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d((0..paths.len()).into_segmented(), 0.0..top.max(1e-9))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(paths.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) if *k < paths.len() => paths[*k].0.to_string(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| format!("{v:.3}"))
            .label_style((FONT, 11))
            .draw()
            .map_err(draw_err)?;
        let colours = [BASELINE, XLB, HAPROXY];
        chart
            .draw_series(values.iter().enumerate().map(|(k, v)| {
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(k), 0.0),
                        (SegmentValue::Exact(k + 1), *v),
                    ],
                    colours[k].filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(draw_err)?;
        let label = TextStyle::from((FONT, 11)).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart
            .draw_series(values.iter().enumerate().map(|(k, v)| {
                Text::new(
                    format!("{v:.3}"),
                    (SegmentValue::CenterOf(k), *v),
                    label.clone(),
                )
            }))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// The curves of one group against a logarithmic x axis (base 10 for occupancy, 2 for the
/// others), each with the band from its lowest point to `FLAT` times it; the reflector (and
/// for occupancy the SYN flood into the full table) as horizontal lines.
fn scale_chart(r: &scale::Report, group: &str, path: &Path) -> Result<()> {
    let curves: Vec<&scale::Curve> = r
        .curves
        .iter()
        .filter(|c| scale_group(&c.name) == group && !c.points.is_empty())
        .collect();
    let base: f64 = if group == "occupancy" { 10.0 } else { 2.0 };
    // x is drawn as log_base(x): the axis labels turn it back into x.
    let lx = |x: u64| (x.max(1) as f64).log(base);
    let xs = curves.iter().flat_map(|c| c.points.iter().map(|p| lx(p.x)));
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (x_lo, x_hi) = if x_lo.is_finite() {
        (x_lo - 0.2, x_hi + 0.2)
    } else {
        (0.0, 1.0)
    };
    let flood = (group == "occupancy").then_some(r.syn_flood_full.ns);
    let y_top = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.m.ns * FLAT))
        .chain([r.reflect.ns])
        .chain(flood)
        .fold(1.0, f64::max)
        * 1.1;
    let x_label = curves.first().map_or(group, |c| c.x_label.as_str());
    let root = SVGBackend::new(path, (770, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "xlb per-packet cost vs {x_label} (band: lowest point +{:.0}%)",
                (FLAT - 1.0) * 100.0
            ),
            (FONT, 14),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo..x_hi, 0.0..y_top)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("ns per packet (BPF_PROG_TEST_RUN)")
        .x_label_formatter(&|v| format!("{}", base.powf(*v).round()))
        .label_style((FONT, 11))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(draw_err)?;
    for (i, c) in curves.iter().enumerate() {
        let colour = CURVES[i % CURVES.len()];
        let lowest = c
            .points
            .iter()
            .map(|p| p.m.ns)
            .fold(f64::INFINITY, f64::min);
        let (first, last) = (lx(c.points[0].x), lx(c.points[c.points.len() - 1].x));
        chart
            .draw_series([Rectangle::new(
                [(first, lowest), (last, lowest * FLAT)],
                colour.mix(0.12).filled(),
            )])
            .map_err(draw_err)?;
        let points: Vec<(f64, f64)> = c.points.iter().map(|p| (lx(p.x), p.m.ns)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(draw_err)?
            .label(c.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
            .map_err(draw_err)?;
    }
    let mut hline = |y: f64, colour: RGBColor, label: &str| -> Result<()> {
        chart
            .draw_series(LineSeries::new(
                [(x_lo, y), (x_hi, y)],
                colour.stroke_width(1),
            ))
            .map_err(draw_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
        Ok(())
    };
    if let Some(ns) = flood {
        hline(ns, FLOOD, "SYN flood, full table")?;
    }
    hline(r.reflect.ns, BASELINE, "reflector (baseline)")?;
    chart
        .configure_series_labels()
        .label_font((FONT, 10))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}
