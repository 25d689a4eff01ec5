//! Parsing of `birdc -v` output (pure). With `-v`, birdc prints BIRD's reply codes: every line
//! starts with a four-digit code and `-` (more follows) or ` ` (last line), or with five spaces
//! (a continuation of the previous code). 0xxx acknowledge, 1xxx are table rows, 2xxx table
//! headings, 8xxx runtime errors and 9xxx parse errors. Reading the codes instead of guessing from
//! the text is what tells an error from an empty answer.

use std::net::IpAddr;

use thiserror::Error;

use crate::cli::doctor::facts::{BgpDetail, BirdChannel, BirdProtocol, BirdRoute};

/// One line of a reply: its code (inherited from the line above for continuations) and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyLine {
    pub code: u16,
    /// Whether the line carried its code (the first line of a block) or continued one.
    pub coded: bool,
    pub text: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BirdcParseError {
    /// BIRD answered with an error code.
    #[error("BIRD answered {code}: {text}")]
    Reply { code: u16, text: String },
    #[error("unexpected birdc output line {line:?}")]
    Malformed { line: String },
    #[error("no {what} in birdc output")]
    Missing { what: &'static str },
}

/// Splits `birdc -v` output into coded lines; the first BIRD error code becomes an `Err`.
pub fn parse_reply(output: &str) -> Result<Vec<ReplyLine>, BirdcParseError> {
    let mut lines = Vec::new();
    let mut code = None;
    for line in output.lines() {
        let b = line.as_bytes();
        let (c, coded, text) = if b.len() >= 5
            && b[..4].iter().all(u8::is_ascii_digit)
            && (b[4] == b'-' || b[4] == b' ')
        {
            (line[..4].parse().ok(), true, &line[5..])
        } else if let Some(rest) = line.strip_prefix("     ") {
            (code, false, rest)
        } else if line.is_empty() {
            continue;
        } else {
            return Err(BirdcParseError::Malformed { line: line.into() });
        };
        let Some(c) = c else {
            return Err(BirdcParseError::Malformed { line: line.into() });
        };
        if c >= 8000 {
            return Err(BirdcParseError::Reply {
                code: c,
                text: text.trim().to_string(),
            });
        }
        code = Some(c);
        lines.push(ReplyLine {
            code: c,
            coded,
            text: text.to_string(),
        });
    }
    Ok(lines)
}

/// `show status`: the version (`BIRD 2.0.12`) and the daemon's state line.
pub fn parse_status(output: &str) -> Result<(String, String), BirdcParseError> {
    let lines = parse_reply(output)?;
    let version = lines
        .iter()
        .find(|l| l.code == 1000)
        .map(|l| l.text.trim().to_string())
        .ok_or(BirdcParseError::Missing {
            what: "version (code 1000)",
        })?;
    // 0013 up and running, 0018 reconfiguring, 0023/0024 graceful restart or shutdown...
    let status = lines
        .iter()
        .rev()
        .find(|l| l.code > 1 && l.code < 1000)
        .map(|l| l.text.trim().to_string())
        .ok_or(BirdcParseError::Missing {
            what: "daemon status",
        })?;
    Ok((version, status))
}

/// `show protocols all`: each protocol's row (code 1002) and its details (code 1006).
pub fn parse_protocols(output: &str) -> Result<Vec<BirdProtocol>, BirdcParseError> {
    let mut out: Vec<BirdProtocol> = Vec::new();
    for l in parse_reply(output)? {
        match l.code {
            1002 => out.push(parse_protocol_row(&l.text)?),
            1006 => {
                let Some(p) = out.last_mut() else {
                    return Err(BirdcParseError::Malformed { line: l.text });
                };
                parse_detail_line(p, &l.text);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `Name Proto Table State Since Info`: the first four never hold spaces; the Info column is
/// what follows the time (two tokens when `timeformat protocol` prints date and time).
fn parse_protocol_row(text: &str) -> Result<BirdProtocol, BirdcParseError> {
    let malformed = || BirdcParseError::Malformed { line: text.into() };
    let mut rest = text.trim();
    let mut next = || -> Option<String> {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (tok, tail) = t.split_at(end);
        rest = tail;
        (!tok.is_empty()).then(|| tok.to_string())
    };
    let name = next().ok_or_else(malformed)?;
    let proto = next().ok_or_else(malformed)?;
    let _table = next().ok_or_else(malformed)?;
    let state = next().ok_or_else(malformed)?;
    let mut since = next().ok_or_else(malformed)?;
    let t = rest.trim_start();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    if is_clock(&t[..end]) {
        since = format!("{since} {}", &t[..end]);
        rest = &t[end..];
    }
    Ok(BirdProtocol {
        name,
        proto,
        state,
        since,
        info: squeeze(rest),
        ..BirdProtocol::default()
    })
}

/// `14:12:31` or `14:12:31.483`.
fn is_clock(tok: &str) -> bool {
    let hms = tok.split('.').next().unwrap_or("");
    let parts: Vec<&str> = hms.split(':').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Runs of blanks become one space (BIRD pads the BGP state before the last error).
fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_detail_line(p: &mut BirdProtocol, text: &str) {
    let line = text.trim();
    if let Some(family) = line.strip_prefix("Channel ") {
        p.channels.push(BirdChannel {
            family: family.trim().to_string(),
            ..BirdChannel::default()
        });
        return;
    }
    let Some((key, value)) = line.split_once(':') else {
        return;
    };
    let value = value.trim();
    if let Some(ch) = p.channels.last_mut() {
        match key {
            "State" => ch.state = value.to_string(),
            "Routes" => {
                // `1 imported, 0 exported, 1 preferred` (a filtered count may come in between).
                for part in value.split(',') {
                    let mut w = part.split_whitespace();
                    let n = w.next().and_then(|n| n.parse().ok());
                    match w.next() {
                        Some("imported") => ch.imported = n,
                        Some("exported") => ch.exported = n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        return;
    }
    if key == "BGP state" {
        p.bgp = Some(BgpDetail {
            state: value.to_string(),
            ..BgpDetail::default()
        });
        return;
    }
    let Some(bgp) = p.bgp.as_mut() else { return };
    match key {
        "Neighbor address" => bgp.neighbor_address = Some(value.to_string()),
        "Neighbor AS" => bgp.neighbor_as = value.parse().ok(),
        "Local AS" => bgp.local_as = value.parse().ok(),
        "Last error" => bgp.last_error = Some(value.to_string()),
        _ => {}
    }
}

/// `show route [table all] ...` without `all`: each route's network and protocol. A network
/// with several routes prints the network once, the further routes with a blank first column;
/// attribute lines (`dev lo`, `via ...`) start with a tab.
pub fn parse_routes(output: &str) -> Result<Vec<BirdRoute>, BirdcParseError> {
    let mut out = Vec::new();
    let mut net: Option<(IpAddr, u8)> = None;
    for l in parse_reply(output)? {
        if l.code != 1007 || l.text.starts_with('\t') {
            continue;
        }
        let text = l.text.trim();
        if text.is_empty() || text.starts_with("Table ") {
            continue;
        }
        let first = text.split_whitespace().next().unwrap_or("");
        if let Some(n) = parse_prefix(first) {
            net = Some(n);
        } else if !l.text.starts_with(' ') {
            return Err(BirdcParseError::Malformed { line: l.text });
        }
        let (Some((addr, prefix_len)), Some(protocol)) = (net, bracketed_protocol(text)) else {
            return Err(BirdcParseError::Malformed { line: l.text });
        };
        out.push(BirdRoute {
            addr,
            prefix_len,
            protocol,
        });
    }
    Ok(out)
}

fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    Some((addr.parse().ok()?, len.parse().ok()?))
}

/// `unicast [kern_xlb4 14:12:31.515] * (10)` -> `kern_xlb4`.
fn bracketed_protocol(text: &str) -> Option<String> {
    let inner = &text[text.find('[')? + 1..];
    inner
        .split(|c: char| c.is_whitespace() || c == ']')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::fixtures::*;

    #[test]
    fn status() {
        assert_eq!(
            parse_status(BIRD_STATUS).unwrap(),
            ("BIRD 2.0.12".into(), "Daemon is up and running".into())
        );
        assert_eq!(
            parse_status("0001 BIRD 2.0.12 ready.\n"),
            Err(BirdcParseError::Missing {
                what: "version (code 1000)"
            })
        );
    }

    #[test]
    fn error_codes_are_errors() {
        let out = "0001 BIRD 2.0.12 ready.\n9001 syntax error, unexpected CF_SYM_UNDEFINED\n";
        assert_eq!(
            parse_reply(out),
            Err(BirdcParseError::Reply {
                code: 9001,
                text: "syntax error, unexpected CF_SYM_UNDEFINED".into()
            })
        );
        assert!(matches!(
            parse_protocols("0001 BIRD 2.0.12 ready.\n8003 No protocols match\n"),
            Err(BirdcParseError::Reply { code: 8003, .. })
        ));
        assert!(matches!(
            parse_reply("Unable to connect to server control socket\n"),
            Err(BirdcParseError::Malformed { .. })
        ));
    }

    #[test]
    fn protocols_healthy() {
        let p = parse_protocols(BIRD_PROTOCOLS).unwrap();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["device1", "kern_xlb4", "kern_xlb6", "router1", "router2"]
        );
        let k4 = &p[1];
        assert!(k4.is_kernel());
        assert_eq!(k4.state, "up");
        assert_eq!(k4.since, "14:12:31.483");
        assert_eq!(k4.info, "");
        assert_eq!(
            k4.channels,
            [BirdChannel {
                family: "ipv4".into(),
                state: "UP".into(),
                imported: Some(1),
                exported: Some(0),
            }]
        );
        let r1 = &p[3];
        assert!(r1.is_bgp());
        assert_eq!(r1.info, "Established");
        assert_eq!(
            r1.bgp,
            Some(BgpDetail {
                state: "Established".into(),
                neighbor_address: Some("198.51.100.1".into()),
                neighbor_as: Some(64512),
                local_as: Some(64513),
                last_error: None,
            })
        );
        assert_eq!(r1.channels.len(), 2);
        assert_eq!(r1.channels[1].family, "ipv6");
        assert_eq!(r1.channels[1].exported, Some(1));
        let r2 = &p[4];
        assert_eq!(r2.state, "start");
        assert_eq!(r2.info, "Active Socket: No route to host");
        let bgp = r2.bgp.as_ref().unwrap();
        assert_eq!(bgp.state, "Active");
        assert_eq!(bgp.last_error.as_deref(), Some("Socket: No route to host"));
        assert_eq!(r2.channels[0].state, "DOWN");
        assert_eq!(r2.channels[0].imported, None);
    }

    #[test]
    fn protocols_broken() {
        let p = parse_protocols(BIRD_PROTOCOLS_BROKEN).unwrap();
        let k = p.iter().find(|p| p.name == "kern_main4").unwrap();
        assert_eq!(k.channels[0].imported, Some(0));
        let r1 = p.iter().find(|p| p.name == "router1").unwrap();
        let bgp = r1.bgp.as_ref().unwrap();
        assert_eq!(bgp.state, "Idle");
        assert_eq!(bgp.neighbor_as, Some(64999));
        assert_eq!(bgp.last_error.as_deref(), Some("BGP Error: Bad peer AS"));

        let p = parse_protocols(BIRD_PROTOCOLS_PEER_SHUTDOWN).unwrap();
        let r1 = p.iter().find(|p| p.name == "router1").unwrap();
        assert_eq!(
            r1.bgp.as_ref().unwrap().last_error.as_deref(),
            Some("Received: Administrative shutdown")
        );

        let p = parse_protocols(BIRD_PROTOCOLS_DISABLED).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].state, "down");
        assert_eq!(p[0].bgp.as_ref().unwrap().state, "Down");
        assert_eq!(p[0].bgp.as_ref().unwrap().last_error, None);

        let p = parse_protocols(BIRD_PROTOCOLS_EMPTY).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].proto, "Device");
    }

    #[test]
    fn protocol_row_with_date_and_time() {
        let row = "router1    BGP        ---        start  2026-12-04 14:12:31  Active        BGP Error: Hold timer expired";
        let p = parse_protocol_row(row).unwrap();
        assert_eq!(p.since, "2026-12-04 14:12:31");
        assert_eq!(p.info, "Active BGP Error: Hold timer expired");
        assert!(parse_protocol_row("router1 BGP").is_err());
    }

    #[test]
    fn routes() {
        let r = parse_routes(BIRD_ROUTES).unwrap();
        assert_eq!(
            r,
            [
                BirdRoute {
                    addr: "203.0.113.10".parse().unwrap(),
                    prefix_len: 32,
                    protocol: "kern_xlb4".into()
                },
                BirdRoute {
                    addr: "2001:db8:10::53".parse().unwrap(),
                    prefix_len: 128,
                    protocol: "kern_xlb6".into()
                },
            ]
        );
        assert_eq!(parse_routes(BIRD_ROUTES_EMPTY).unwrap(), []);
        // A second route for the same network leaves the network column blank.
        let two = concat!(
            "0001 BIRD 2.0.12 ready.\n",
            "1007-Table master4:\n",
            "     203.0.113.10/32      unicast [kern_a 14:12:31.515] * (10)\n",
            "     \tdev lo\n",
            "                          unicast [kern_b 14:12:32.000] (10)\n",
            "     \tdev lo\n",
        );
        let r = parse_routes(two).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].protocol, "kern_b");
        assert_eq!(r[1].addr, r[0].addr);
        assert!(parse_routes("0001 x\n1007-Table master4:\n     garbage line\n").is_err());
    }
}
