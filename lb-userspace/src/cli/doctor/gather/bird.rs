//! BIRD's facts, through its own client: `birdc -s <socket>` (`show status`, `show protocols
//! all`, the routes learned with the agent's route protocol), and the agent's VIP routes in the
//! kernel table, through rtnetlink. Every `birdc` call is bounded: a stopped or wedged BIRD
//! accepts the connection and never answers, and doctor must not hang on it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Stdio;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::RouteMessageBuilder;

use super::birdc;
use crate::cli::doctor::facts::{BirdExpectation, BirdFacts, BirdState, BirdView};

/// The client of BIRD 2 (Debian package `bird2`).
pub const BIRDC: &str = "birdc";
/// How long one `birdc` call may take by default.
pub const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks BIRD and the kernel what [`BirdExpectation`] expects. Needs a tokio runtime.
pub async fn gather_bird(expect: &BirdExpectation) -> BirdFacts {
    BirdFacts {
        state: read_bird(expect).await,
        kernel_routes: read_table(expect.table, expect.protocol).await,
        expect: expect.clone(),
    }
}

async fn read_bird(expect: &BirdExpectation) -> BirdState {
    let status = match run(expect, &["show", "status"]).await {
        Ok(out) => out,
        Err(state) => return state,
    };
    let (version, status) = match birdc::parse_status(&status) {
        Ok(v) => v,
        Err(e) => return BirdState::Error(format!("`birdc show status`: {e}")),
    };
    let protocols = match run(expect, &["show", "protocols", "all"]).await {
        Ok(out) => birdc::parse_protocols(&out).map_err(|e| e.to_string()),
        Err(state) => Err(describe(&state)),
    };
    // Every table (`table all`): the kernel protocol may feed a table other than master4/6.
    let filter = format!("krt_source = {}", expect.protocol);
    let learned = match run(expect, &["show", "route", "table", "all", "where", &filter]).await {
        Ok(out) => birdc::parse_routes(&out).map_err(|e| e.to_string()),
        Err(state) => Err(describe(&state)),
    };
    BirdState::Running(BirdView {
        version,
        status,
        protocols,
        learned,
    })
}

/// One `birdc -v -s SOCKET COMMAND...`: its standard output, or why BIRD could not be asked.
async fn run(expect: &BirdExpectation, command: &[&str]) -> Result<String, BirdState> {
    let mut cmd = tokio::process::Command::new(BIRDC);
    cmd.arg("-v")
        .arg("-s")
        .arg(&expect.socket)
        .args(command)
        // birdc's messages carry strerror(): keep them in English, they are matched below.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(expect.timeout, cmd.output()).await {
        Err(_) => return Err(BirdState::Stuck),
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Err(BirdState::NotInstalled),
        Ok(Err(e)) => return Err(BirdState::Error(format!("cannot run {BIRDC}: {e}"))),
        Ok(Ok(o)) => o,
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(classify_failure(&stderr, &stdout))
}

/// What a failed `birdc` means, from its message (`Unable to connect to server control socket
/// (PATH): ERROR`) or from BIRD's own error reply.
fn classify_failure(stderr: &str, stdout: &str) -> BirdState {
    if stderr.contains("Unable to connect") {
        if stderr.contains("No such file or directory") {
            return BirdState::SocketMissing;
        }
        if stderr.contains("Permission denied") {
            return BirdState::PermissionDenied;
        }
        if stderr.contains("Connection refused") {
            return BirdState::Refused;
        }
    }
    if let Err(e) = birdc::parse_reply(stdout) {
        return BirdState::Error(e.to_string());
    }
    let msg = stderr.trim();
    BirdState::Error(if msg.is_empty() {
        "birdc failed without a message".into()
    } else {
        msg.to_string()
    })
}

fn describe(state: &BirdState) -> String {
    match state {
        BirdState::Stuck => "birdc did not answer in time".into(),
        BirdState::Error(e) => e.clone(),
        other => format!("{other:?}"),
    }
}

/// The destinations of table `table`'s routes with protocol `protocol`, both families. A dump
/// returns every table; the filtering is ours.
async fn read_table(table: u32, protocol: u8) -> Result<Vec<IpAddr>, String> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("cannot open netlink: {e}"))?;
    let driver = tokio::spawn(conn);
    let mut out = Vec::new();
    let requests = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    let mut result = Ok(());
    for msg in requests {
        let mut routes = handle.route().get(msg).execute();
        loop {
            match routes.try_next().await {
                Ok(Some(r)) => {
                    if route_table(&r) == table
                        && u8::from(r.header.protocol) == protocol
                        && let Some(dst) = destination(&r)
                    {
                        out.push(dst);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    result = Err(format!("cannot list the routes of table {table}: {e}"));
                    break;
                }
            }
        }
    }
    driver.abort();
    result.map(|()| {
        out.sort();
        out
    })
}

/// The table id: `RTA_TABLE` when present (needed above 255), else the header's.
fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// The destination of a host route (/32, /128); other prefixes are not the agent's.
fn destination(r: &RouteMessage) -> Option<IpAddr> {
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })?;
    let host_len = if dst.is_ipv4() { 32 } else { 128 };
    (r.header.destination_prefix_length == host_len).then_some(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures() {
        let err = |m: &str| classify_failure(m, "");
        assert_eq!(
            err(
                "Unable to connect to server control socket (/run/bird/bird.ctl): No such file or directory\n"
            ),
            BirdState::SocketMissing
        );
        assert_eq!(
            err(
                "Unable to connect to server control socket (/run/bird/bird.ctl): Permission denied\n"
            ),
            BirdState::PermissionDenied
        );
        assert_eq!(
            err(
                "Unable to connect to server control socket (/run/bird/bird.ctl): Connection refused\n"
            ),
            BirdState::Refused
        );
        assert_eq!(
            classify_failure("", "0001 BIRD 2.0.12 ready.\n8003 No protocols match\n"),
            BirdState::Error("BIRD answered 8003: No protocols match".into())
        );
        assert_eq!(
            err(""),
            BirdState::Error("birdc failed without a message".into())
        );
    }

    #[test]
    fn host_routes_of_the_table() {
        let mut r = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(203, 0, 113, 10), 32)
            .table_id(200)
            .build();
        assert_eq!(route_table(&r), 200);
        assert_eq!(destination(&r), Some("203.0.113.10".parse().unwrap()));
        r.header.destination_prefix_length = 24;
        assert_eq!(destination(&r), None);
        let big = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix("2001:db8::1".parse().unwrap(), 128)
            .table_id(100_000)
            .build();
        assert_eq!(route_table(&big), 100_000);
    }
}
