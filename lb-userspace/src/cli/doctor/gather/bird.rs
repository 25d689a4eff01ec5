//! BIRD's facts, through its own client: `birdc -s <socket>` (`show status`, `show protocols
//! all`, the routes learned with the agent's route protocol), and the agent's VIP routes in the
//! kernel table, read through the [`RouteTable`] the agent writes them with. Every `birdc` call
//! is bounded: a stopped or wedged BIRD accepts the connection and never answers, and doctor
//! must not hang on it.

use std::io;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use super::birdc;
use crate::cli::doctor::facts::{BirdExpectation, BirdFacts, BirdState, BirdView};
use crate::netlink::{NetlinkError, RouteTable};

/// The client of BIRD 2 (Debian package `bird2`).
pub const BIRDC: &str = "birdc";
/// How long one `birdc` call may take by default.
pub const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks BIRD and the kernel what [`BirdExpectation`] expects. Needs a tokio runtime.
pub async fn gather_bird(expect: &BirdExpectation) -> BirdFacts {
    BirdFacts {
        state: read_bird(expect).await,
        kernel_routes: read_table(expect.table, expect.protocol),
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

/// The destinations of the agent's routes in table `table` (host routes with protocol
/// `protocol`), both families, sorted.
fn read_table(table: u32, protocol: u8) -> Result<Vec<IpAddr>, String> {
    let err = |e: NetlinkError| format!("cannot list the routes of table {table}: {e}");
    let mut t = RouteTable::open(table, protocol).map_err(err)?;
    let mut out: Vec<IpAddr> = t
        .list()
        .map_err(err)?
        .into_iter()
        .filter(|r| t.is_ours(r))
        .map(|r| r.dst)
        .collect();
    out.sort();
    Ok(out)
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
}
