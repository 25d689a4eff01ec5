//! Helpers shared by the testbed tests (`e2e.rs`, `agent.rs`).

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use lb_common::FlowEntry;
use lb_userspace::{
    api::{BackendStatus, StatusReport},
    maps::{AyaStore, MapStore},
    model::VipId,
};
use xlb_testkit::{
    Packet,
    testbed::{Options, Testbed, VipSpec},
};

pub fn xlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xlb-under-test"))
}

/// A testbed with 3 backends and an agent running `vips` (plus `agent_extra` keys of
/// `[agent]`), every backend active.
pub fn testbed_with_agent(tag: &str, agent_extra: &str, vips: &[VipSpec]) -> Testbed {
    let mut tb = Testbed::up(&Options::for_test(tag, 3));
    let config = tb.write_file("xlb.toml", &tb.config(agent_extra, vips));
    tb.start_agent(xlb(), &config);
    tb.wait_all_active(Duration::from_secs(15));
    tb
}

/// Runs `xlb ARGS` (from the root namespace: the API socket and the pins are paths).
pub fn xlb_cli(args: &[&str]) -> Output {
    Command::new(xlb())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running xlb {args:?}: {e}"))
}

/// `xlb ARGS`, which must succeed; its stdout.
pub fn xlb_ok(args: &[&str]) -> String {
    let out = xlb_cli(args);
    assert!(
        out.status.success(),
        "xlb {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `xlb VERB VIP ADDR EXTRA --socket S` (drain, set-weight, ...) against the testbed's agent,
/// which must succeed; its stdout.
pub fn backend_cli(tb: &Testbed, verb: &str, vip: &VipId, addr: IpAddr, extra: &[&str]) -> String {
    let (vip, addr) = (vip.to_string(), addr.to_string());
    let socket = tb.api_socket().display().to_string();
    let mut args = vec![verb, &vip, &addr];
    args.extend_from_slice(extra);
    args.extend(["--socket", &socket]);
    xlb_ok(&args)
}

/// `xlb inspect --pin-dir P ARGS --json`, parsed.
pub fn inspect(tb: &Testbed, args: &[&str]) -> serde_json::Value {
    let pin = tb.pin_dir().display().to_string();
    let mut all = vec!["inspect", "--pin-dir", &pin];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&xlb_ok(&all)).expect("inspect JSON")
}

/// The `xlb inspect vips` row of `vip`.
pub fn vip_row(tb: &Testbed, vip: &VipId) -> serde_json::Value {
    let v = inspect(tb, &["vips"]);
    v["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["vip"] == vip.to_string())
        .unwrap_or_else(|| panic!("{vip} not in `xlb inspect vips`: {v}"))
        .clone()
}

pub fn backend_status<'a>(r: &'a StatusReport, vip: &VipId, addr: IpAddr) -> &'a BackendStatus {
    r.vips
        .iter()
        .find(|v| v.id == *vip)
        .unwrap_or_else(|| panic!("{vip} not in status"))
        .backends
        .iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("{addr} not a backend of {vip}"))
}

/// The pinned maps of the testbed's agent.
pub fn store(tb: &Testbed) -> AyaStore {
    AyaStore::from_pin_dir(&tb.maps_dir()).expect("open the pinned maps")
}

/// The flow-table entry of a client flow to `vip`.
pub fn flow_entry(store: &AyaStore, client: IpAddr, sport: u16, vip: &VipId) -> Option<FlowEntry> {
    let (c, v) = (client.to_string(), vip.addr.to_string());
    let pkt = match vip.proto {
        lb_userspace::model::Proto::Tcp => Packet::tcp(&c, sport, &v, vip.port, 0),
        lb_userspace::model::Proto::Udp => Packet::udp(&c, sport, &v, vip.port),
    };
    store.flow(&pkt.flow_key()).expect("flow lookup")
}

/// The VIP index of `vip` in the maps.
pub fn vip_index(r: &StatusReport, vip: &VipId) -> u32 {
    r.vips
        .iter()
        .find(|v| v.id == *vip)
        .and_then(|v| v.index)
        .unwrap_or_else(|| panic!("{vip} has no index"))
}
