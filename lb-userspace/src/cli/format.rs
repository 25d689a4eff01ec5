//! Plain-text tables and argument parsers shared by the CLI commands.
//!
//! Tables follow `ipvsadm -L -n`: one header line, numeric values, columns separated by two
//! spaces and padded to the widest cell (never truncated), no colours, no trailing spaces.

use std::net::SocketAddr;
use std::time::Duration;

use crate::model::{Proto, VipId};

/// How a column's cells are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table rendered once all rows are known (widths = widest cell of each column).
pub struct Table {
    headers: Vec<&'static str>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `columns`: header and alignment of each column.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            headers: columns.iter().map(|c| c.0).collect(),
            aligns: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    /// Column widths: the widest of the header and every cell.
    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in w.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        w
    }

    /// Header line and rows, each ending with a newline.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut s = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        s.push_str(&render_row(&header, &widths, &self.aligns));
        s.push('\n');
        for row in &self.rows {
            s.push_str(&render_row(row, &widths, &self.aligns));
            s.push('\n');
        }
        s
    }
}

/// One line of a table (no newline). A cell wider than its column widens that line only.
pub fn render_row(cells: &[String], widths: &[usize], aligns: &[Align]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let w = widths.get(i).copied().unwrap_or(0);
        match aligns.get(i).copied().unwrap_or(Align::Left) {
            Align::Left => line.push_str(&format!("{cell:<w$}")),
            Align::Right => line.push_str(&format!("{cell:>w$}")),
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// A percentage with two decimals (`25.00`).
pub fn pct(part: f64, whole: f64) -> f64 {
    if whole == 0.0 {
        0.0
    } else {
        part * 100.0 / whole
    }
}

/// `-` for an absent value.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A rate per second with one decimal.
pub fn rate(delta: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s <= 0.0 { 0.0 } else { delta as f64 / s }
}

const VIP_FORMAT: &str = "expected PROTO/ADDR:PORT, e.g. tcp/203.0.113.10:80, \
                          udp/[2001:db8::10]:53, or tcp/203.0.113.10:* for an all-ports VIP";

/// Parses a VIP argument: `tcp/203.0.113.10:80`, `udp/[2001:db8::10]:53`, port `*` (or 0) for
/// an all-ports VIP (`VipId`'s own syntax), with a hint for the protocol-last form.
pub fn parse_vip(s: &str) -> Result<VipId, String> {
    if let Some((rest, proto)) = s.rsplit_once('/')
        && parse_proto(proto).is_ok()
    {
        return Err(format!(
            "invalid VIP `{s}`: write the protocol first: `{proto}/{rest}`; {VIP_FORMAT}"
        ));
    }
    s.parse::<VipId>().map_err(|e| format!("{e}; {VIP_FORMAT}"))
}

/// `tcp` / `udp` (any case), or the protocol numbers 6 / 17.
pub fn parse_proto(s: &str) -> Result<Proto, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" | "6" => Ok(Proto::Tcp),
        "udp" | "17" => Ok(Proto::Udp),
        _ => Err(format!("unknown protocol `{s}` (tcp or udp)")),
    }
}

/// `SRC:PORT` / `[V6]:PORT` of `explain`.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "invalid endpoint `{s}`: expected ADDR:PORT, e.g. 198.51.100.7:40000 or [2001:db8::7]:40000"
        )
    })
}

/// An interval: `2` or `0.5` (seconds), `1.5s`, `500ms`. Must be positive.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid interval `{s}`: expected seconds (`2`, `0.5`, `1s`) or `500ms`");
    let secs = if let Some(ms) = s.strip_suffix("ms") {
        ms.trim().parse::<f64>().map_err(|_| bad())? / 1000.0
    } else {
        s.strip_suffix('s')
            .unwrap_or(s)
            .trim()
            .parse::<f64>()
            .map_err(|_| bad())?
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "invalid interval `{s}`: must be above 0 and at most a day"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_never_truncates() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("X", Align::Left),
        ]);
        t.push(vec!["a".into(), "12345".into(), "-".into()]);
        t.push(vec!["longer-name".into(), "7".into(), "".into()]);
        assert_eq!(
            t.render(),
            "NAME             N  X\n\
             a            12345  -\n\
             longer-name      7\n"
        );
    }

    #[test]
    fn vip_forms() {
        let v = parse_vip("tcp/203.0.113.10:80").unwrap();
        assert_eq!(v.to_string(), "tcp/203.0.113.10:80");
        let v = parse_vip("UDP/[2001:db8::10]:53").unwrap();
        assert_eq!(v.to_string(), "udp/[2001:db8::10]:53");
        assert_eq!(parse_vip("tcp/203.0.113.10:*").unwrap().port, 0);
        assert_eq!(parse_vip("tcp/203.0.113.10:0").unwrap().port, 0);
        for (bad, why) in [
            (
                "203.0.113.10:80/tcp",
                "write the protocol first: `tcp/203.0.113.10:80`",
            ),
            ("tcp/203.0.113.10", "missing the port"),
            ("icmp/203.0.113.10:80", "protocol must be tcp or udp"),
            ("tcp/203.0.113.10:http", "port must be 0..=65535"),
            ("tcp/2001:db8::10:53", "needs brackets"),
            ("tcp/[2001:db8::10:53", "unclosed ["),
        ] {
            let e = parse_vip(bad).unwrap_err();
            assert!(
                e.contains(why) && e.contains("tcp/203.0.113.10:80"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("-1").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
