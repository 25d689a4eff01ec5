//! Durations as the file writes them (`interval`, `timeout`).

use std::time::Duration;

/// `"500ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`: a decimal number and one unit (ms, s, m, h).
/// Computed in integer nanoseconds, so `"0.1s"` is exactly 100 ms.
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let s = s.trim();
    let unit_at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or("it has no unit")?;
    let (num, unit) = s.split_at(unit_at);
    let unit_ns: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err("the unit must be ms, s, m or h"),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err("the number must look like 2 or 1.5");
    }
    if int.len() > 12 || frac.len() > 9 {
        return Err("the number is too long");
    }
    let int: u128 = int
        .parse()
        .map_err(|_| "the number must look like 2 or 1.5")?;
    let mut ns = int * unit_ns;
    if !frac.is_empty() {
        let f: u128 = frac
            .parse()
            .map_err(|_| "the number must look like 2 or 1.5")?;
        ns += f * unit_ns / 10u128.pow(frac.len() as u32);
    }
    u64::try_from(ns)
        .map(Duration::from_nanos)
        .map_err(|_| "it is too long")
}

/// `Duration` the way the file writes it: `500ms`, `2s`, `1.5s`, `1m`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns != 0 && ns.is_multiple_of(60_000_000_000) {
        format!("{}m", ns / 60_000_000_000)
    } else if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) && ns < 1_000_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{d:?}")
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_parsing() {
        for (s, d) in [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            (" 3s ", Duration::from_secs(3)),
            ("0ms", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for s in [
            "", "2", "s", "1.s", ".5s", "1..5s", "1.2.3s", "-1s", "2 s", "2sec", "1d", "1e3ms",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
        for (d, s) in [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(120), "2m"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(fmt_duration(d), s);
        }
    }
}
