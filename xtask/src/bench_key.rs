//! The key figures of the bench report: one typed row per figure, shown as the table at the
//! top of `report.md` and listed under `key` in `report.json`.

use serde::Serialize;

/// A figure's judgement against its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "MISS")]
    Miss,
    /// No target: the figure is shown, not judged.
    #[serde(rename = "-")]
    None,
}

impl Outcome {
    pub fn of(ok: bool) -> Self {
        if ok { Self::Pass } else { Self::Miss }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Miss => "MISS",
            Self::None => "-",
        }
    }
}

/// The report section a figure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Section {
    #[serde(rename = "per-packet")]
    PerPacket,
    #[serde(rename = "control")]
    Control,
    #[serde(rename = "e2e")]
    E2e,
    #[serde(rename = "scale")]
    Scale,
    #[serde(rename = "failover")]
    Failover,
    #[serde(rename = "reliability")]
    Reliability,
}

impl Section {
    fn as_str(self) -> &'static str {
        match self {
            Self::PerPacket => "per-packet",
            Self::Control => "control",
            Self::E2e => "e2e",
            Self::Scale => "scale",
            Self::Failover => "failover",
            Self::Reliability => "reliability",
        }
    }
}

/// One key figure; `report.json` holds its section and name beside the figure's own fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyFigure {
    pub section: Section,
    pub name: String,
    #[serde(flatten)]
    pub figure: Figure,
}

/// The figure itself, by kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Figure {
    /// A per-packet scenario against the reflector of the same run.
    PerPacket {
        ns: f64,
        mpps: f64,
        ratio_to_reflector: f64,
        /// `None` when the reflector - no-op gap is too small for a net ratio to mean anything.
        net_ratio_to_reflector: Option<f64>,
        baseline_reflect_ns: f64,
        baseline_pass_ns: f64,
        spread: f64,
        target: Option<f64>,
        result: Outcome,
    },
    MaglevBuild {
        ms: f64,
        target_ms: f64,
        result: Outcome,
    },
    /// A control-plane timing without a target (median, milliseconds).
    Timing { ms: f64 },
    Memory {
        rss_mib: f64,
        anon_mib: f64,
        memlock_mib: f64,
    },
    /// A scale curve's highest point over its lowest.
    Flatness {
        highest_over_lowest: f64,
        target: f64,
        result: Outcome,
    },
    SynFlood {
        ns: f64,
        ratio_to_first_occupancy_point: f64,
        hit_after_flood_ns: f64,
        active_resident_before: usize,
        active_resident_after: usize,
        idle_resident_before: usize,
        idle_resident_after: usize,
    },
    /// xlb over another path: keep-alive requests/s, connections/s and iperf3; judged on
    /// requests/s against `target`, or shown next to the best reachable `bound`.
    PathRatio {
        ratio: f64,
        conn_ratio: f64,
        iperf_ratio: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        bound: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<f64>,
        result: Outcome,
    },
    /// One failover phase: connections that survived and failed, the longest gap; judged on
    /// no failure (and, for node loss, the gap under BFD detection + 1 s).
    Failover {
        survived: usize,
        failed: usize,
        gap_p100_ms: f64,
        result: Outcome,
    },
    /// A packet rate of xlb against the reflector's on the same link.
    Rate {
        xlb_pps: f64,
        reflect_pps: f64,
        ratio: f64,
    },
    /// A count whose target is zero (failed requests, mismatches), out of a total.
    Zero {
        count: u64,
        of: u64,
        result: Outcome,
    },
    /// Packets that came in against the packets counted.
    Accounting {
        packets: u64,
        counted: u64,
        result: Outcome,
    },
    /// Answer times against a bound for every call.
    Latency {
        p50_ms: f64,
        p99_ms: f64,
        max_ms: f64,
        target_ms: f64,
        result: Outcome,
    },
    /// A process's resident set before, at most and after, against a bound.
    RssGrowth {
        before_mib: f64,
        max_mib: f64,
        after_mib: f64,
        bound_mib: f64,
        result: Outcome,
    },
}

/// `name value` with three decimals, `name null` for a figure JSON cannot hold (NaN).
fn field(name: &str, v: f64) -> String {
    if v.is_finite() {
        format!("{name} {v:.3}")
    } else {
        format!("{name} null")
    }
}

fn fields(list: &[(&str, f64)]) -> String {
    list.iter()
        .map(|(n, v)| field(n, *v))
        .collect::<Vec<_>>()
        .join(", ")
}

impl KeyFigure {
    pub fn new(section: Section, name: impl Into<String>, figure: Figure) -> Self {
        Self {
            section,
            name: name.into(),
            figure,
        }
    }

    /// The figure's judgement ("-" when it has no target).
    pub fn outcome(&self) -> Outcome {
        match &self.figure {
            Figure::PerPacket { result, .. }
            | Figure::MaglevBuild { result, .. }
            | Figure::Flatness { result, .. }
            | Figure::PathRatio { result, .. }
            | Figure::Failover { result, .. }
            | Figure::Zero { result, .. }
            | Figure::Accounting { result, .. }
            | Figure::Latency { result, .. }
            | Figure::RssGrowth { result, .. } => *result,
            _ => Outcome::None,
        }
    }

    /// The value and baseline/target cells of the key table. Figures other than per-packet
    /// list their fields by name, in name order.
    fn cells(&self) -> (String, String) {
        let no_target = String::new;
        let target = |t: f64| format!("target {t}");
        match &self.figure {
            Figure::PerPacket {
                ns,
                mpps,
                ratio_to_reflector,
                net_ratio_to_reflector,
                baseline_reflect_ns,
                target,
                ..
            } => (
                format!(
                    "{ns:.1} ns, {mpps:.2} Mpps, **{ratio_to_reflector:.2}×** reflector (net {})",
                    net_ratio_to_reflector.map_or("n/a".into(), |n| format!("{n:.1}×"))
                ),
                format!(
                    "reflector {baseline_reflect_ns:.1} ns{}",
                    target.map_or(String::new(), |t| format!("; target ≤ {t}×"))
                ),
            ),
            Figure::MaglevBuild { ms, target_ms, .. } => (
                fields(&[("ms", *ms), ("target_ms", *target_ms)]),
                no_target(),
            ),
            Figure::Timing { ms } => (field("ms", *ms), no_target()),
            Figure::Memory {
                rss_mib,
                anon_mib,
                memlock_mib,
            } => (
                fields(&[
                    ("anon_mib", *anon_mib),
                    ("memlock_mib", *memlock_mib),
                    ("rss_mib", *rss_mib),
                ]),
                no_target(),
            ),
            Figure::Flatness {
                highest_over_lowest,
                target: t,
                ..
            } => (
                field("highest_over_lowest", *highest_over_lowest),
                target(*t),
            ),
            Figure::SynFlood {
                ns,
                ratio_to_first_occupancy_point,
                hit_after_flood_ns,
                active_resident_before,
                active_resident_after,
                idle_resident_before,
                idle_resident_after,
            } => (
                fields(&[
                    ("active_resident_after", *active_resident_after as f64),
                    ("active_resident_before", *active_resident_before as f64),
                    ("hit_after_flood_ns", *hit_after_flood_ns),
                    ("idle_resident_after", *idle_resident_after as f64),
                    ("idle_resident_before", *idle_resident_before as f64),
                    ("ns", *ns),
                    (
                        "ratio_to_first_occupancy_point",
                        *ratio_to_first_occupancy_point,
                    ),
                ]),
                no_target(),
            ),
            Figure::PathRatio {
                ratio,
                conn_ratio,
                iperf_ratio,
                bound,
                target: t,
                ..
            } => {
                let mut list = Vec::new();
                if let Some(b) = bound {
                    list.push(("bound", *b));
                }
                list.extend([
                    ("conn_ratio", *conn_ratio),
                    ("iperf_ratio", *iperf_ratio),
                    ("ratio", *ratio),
                ]);
                (fields(&list), t.map_or_else(no_target, target))
            }
            Figure::Failover {
                survived,
                failed,
                gap_p100_ms,
                ..
            } => (
                fields(&[
                    ("failed", *failed as f64),
                    ("gap_p100_ms", *gap_p100_ms),
                    ("survived", *survived as f64),
                ]),
                no_target(),
            ),
            Figure::Rate {
                xlb_pps,
                reflect_pps,
                ratio,
            } => (
                fields(&[
                    ("ratio", *ratio),
                    ("reflect_pps", *reflect_pps),
                    ("xlb_pps", *xlb_pps),
                ]),
                no_target(),
            ),
            Figure::Zero { count, of, .. } => (
                fields(&[("count", *count as f64), ("of", *of as f64)]),
                target(0.0),
            ),
            Figure::Accounting {
                packets, counted, ..
            } => (
                fields(&[("counted", *counted as f64), ("packets", *packets as f64)]),
                "counted = packets".into(),
            ),
            Figure::Latency {
                p50_ms,
                p99_ms,
                max_ms,
                target_ms,
                ..
            } => (
                fields(&[
                    ("max_ms", *max_ms),
                    ("p50_ms", *p50_ms),
                    ("p99_ms", *p99_ms),
                ]),
                format!("max < {target_ms} ms"),
            ),
            Figure::RssGrowth {
                before_mib,
                max_mib,
                after_mib,
                bound_mib,
                ..
            } => (
                fields(&[
                    ("after_mib", *after_mib),
                    ("before_mib", *before_mib),
                    ("max_mib", *max_mib),
                ]),
                format!("max, after ≤ {bound_mib:.1} MiB"),
            ),
        }
    }

    /// The figure's row of the key table in `report.md`.
    pub fn row(&self) -> String {
        let (value, base) = self.cells();
        format!(
            "| {} | {} | {value} | {base} | {} |",
            self.section.as_str(),
            self.name,
            self.outcome().as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_list_fields_in_name_order_and_targets_apart() {
        let k = KeyFigure::new(
            Section::E2e,
            "xlb/haproxy requests/s",
            Figure::PathRatio {
                ratio: 2.0,
                conn_ratio: 1.5,
                iperf_ratio: 1.25,
                bound: Some(2.5),
                target: None,
                result: Outcome::None,
            },
        );
        assert_eq!(
            k.row(),
            "| e2e | xlb/haproxy requests/s | bound 2.500, conn_ratio 1.500, iperf_ratio 1.250, \
             ratio 2.000 |  | - |"
        );
        let json = serde_json::to_value(&k).unwrap();
        assert_eq!(json["section"], "e2e");
        assert_eq!(json["result"], "-");
        assert!(json.get("target").is_none());
        let k = KeyFigure::new(
            Section::Scale,
            "vips",
            Figure::Flatness {
                highest_over_lowest: 1.3,
                target: 1.2,
                result: Outcome::Miss,
            },
        );
        assert_eq!(
            k.row(),
            "| scale | vips | highest_over_lowest 1.300 | target 1.2 | MISS |"
        );
    }
}
