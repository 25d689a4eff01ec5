//! Durations as the file writes them (`interval`, `timeout`): one or more spans of a decimal
//! number and a unit, `ms`, `s`, `m` or `h` (`"500ms"`, `"1.5s"`, `"1m 30s"`).
//!
//! humantime does the parsing (in integer nanoseconds, so `"0.1s"` is exactly 100 ms) and the
//! printing. It also takes spellings the file format never had (`2 s`, `2sec`, `1d`, a bare
//! `0`); [`parse_duration`] keeps rejecting those, so a file stays as readable as the examples
//! and a config accepted here is accepted by every xlb version that documents the same format.

use std::time::Duration;

/// Units a config may use: what `examples/xlb.toml` documents.
const UNITS: [&str; 4] = ["ms", "s", "m", "h"];

/// `"500ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`, `"1m 30s"`: spans of a decimal number and a unit
/// (ms, s, m, h) written together, separated by spaces.
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let s = s.trim();
    let d = humantime::parse_duration(s).map_err(reason)?;
    check_spelling(s)?;
    Ok(d)
}

/// `Duration` the way the file can write it: `500ms`, `2s`, `1s 500ms`, `2m`, `1h`.
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// humantime's error, in the terms of the file format.
fn reason(e: humantime::DurationError) -> &'static str {
    use humantime::DurationError as E;
    match e {
        E::Empty => "it is empty",
        E::UnknownUnit { unit, .. } if unit.is_empty() => "it has no unit",
        E::UnknownUnit { .. } => "the unit must be ms, s, m or h",
        E::NumberExpected(_) | E::InvalidCharacter(_) => "the number must look like 2 or 1.5",
        E::NumberOverflow => "the number is too long, or finer than a nanosecond",
    }
}

/// What humantime accepts beyond the file format: a unit outside [`UNITS`] (`2sec`, `1d`), a
/// number apart from its unit (`2 s`), or none at all (`0`).
fn check_spelling(s: &str) -> Result<(), &'static str> {
    let mut words = s.split_whitespace().peekable();
    while let Some(word) = words.next() {
        if !word.ends_with(char::is_alphabetic) {
            return Err(if words.peek().is_some() {
                "write each number and its unit together, as in 2s"
            } else {
                "it has no unit"
            });
        }
        if word
            .split(|c: char| !c.is_alphabetic())
            .any(|unit| !unit.is_empty() && !UNITS.contains(&unit))
        {
            return Err("the unit must be ms, s, m or h");
        }
    }
    Ok(())
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
        // humantime's printing: several spans rather than a decimal fraction.
        for (d, s) in [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1s 500ms"),
            (Duration::from_secs(120), "2m"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(fmt_duration(d), s);
        }
    }

    #[test]
    fn several_spans_add_up() {
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m 2.5s"), Ok(Duration::from_millis(62_500)));
    }

    #[test]
    fn what_humantime_alone_would_accept_is_rejected_with_a_reason() {
        for (s, why) in [
            ("2 s", "write each number and its unit together, as in 2s"),
            (
                "1m 30 s",
                "write each number and its unit together, as in 2s",
            ),
            ("0", "it has no unit"),
            ("2sec", "the unit must be ms, s, m or h"),
            ("1d", "the unit must be ms, s, m or h"),
            ("1m 5us", "the unit must be ms, s, m or h"),
            ("5µs", "the unit must be ms, s, m or h"),
        ] {
            assert!(humantime::parse_duration(s).is_ok(), "{s:?}");
            assert_eq!(parse_duration(s), Err(why), "{s:?}");
        }
    }

    #[test]
    fn every_printed_duration_parses_back() {
        for ms in [
            1, 100, 999, 1000, 1500, 59_999, 60_000, 61_500, 3_600_000, 3_661_001,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&fmt_duration(d)), Ok(d), "{ms} ms");
        }
    }
}
