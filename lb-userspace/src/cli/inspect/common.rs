//! Output helpers used by several subcommands.

use std::io::Write;

use lb_common::limits::RING_SIZE;
use serde::Serialize;

use crate::cli::format::pct;

/// The FLAGS cell of a table: the flags comma-separated, or `-` for none.
pub(super) fn flags_text(flags: &[String]) -> String {
    if flags.is_empty() {
        "-".into()
    } else {
        flags.join(",")
    }
}

/// One pretty-printed JSON document and a newline.
pub(super) fn write_json<T: Serialize>(out: &mut dyn Write, v: &T) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Percentage of a VIP's Maglev ring that `slots` slots make.
pub(super) fn share(slots: u32) -> f64 {
    pct(f64::from(slots), f64::from(RING_SIZE))
}

/// Counter increase; a counter that went down was reset (new maps), so its value is the increase.
pub(super) fn delta(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}
