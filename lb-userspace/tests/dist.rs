//! The shipped deployment files agree where a mismatch would only show on a real node: the
//! Kubernetes example (dist/k8s/xlb-daemonset.yaml) grants the agent exactly the capabilities of
//! dist/xlb.service, runs it on the host's network and bpffs, and gives its SIGTERM teardown the
//! time it takes. Plain text reading, no YAML library: the test checks the few lines it names and
//! fails with the line it could not find.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use lb_userspace::config::DEFAULT_WITHDRAW_GRACE;

/// What the agent's teardown may take after the withdraw grace: stopping the probes, then closing
/// the API, each bounded by `TEARDOWN_LIMIT` (5 s) in lb-userspace/src/agent/shutdown.rs.
const TEARDOWN_BOUND: Duration = Duration::from_secs(10);

fn read(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capabilities of systemd's `key=` line, without the `CAP_` prefix Kubernetes leaves off.
fn unit_caps(unit: &str, key: &str) -> BTreeSet<String> {
    let value = unit
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("dist/xlb.service: no {key}="));
    value
        .split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{key}: {c} without CAP_"))
                .to_string()
        })
        .collect()
}

/// The lines of the container named `name`: from its `- name:` line to the next line indented no
/// deeper than that dash (comments and blank lines do not end it).
fn container<'a>(yaml: &'a str, name: &str) -> Vec<&'a str> {
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != format!("- name: {name}"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no container `- name: {name}`"));
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(lines.take_while(|l| {
            let t = l.trim_start();
            t.is_empty() || t.starts_with('#') || l.len() - t.len() > indent
        }))
        .collect()
}

/// The items of the flow-style list `key: [A, B]` among `lines`.
fn flow_list(lines: &[&str], key: &str) -> BTreeSet<String> {
    let value = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no `{key}: [...]` line"));
    value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or_else(|| panic!("`{key}: {value}` is not a one-line [A, B] list"))
        .split(',')
        .map(|c| c.trim().to_string())
        .collect()
}

/// The value of the first `key: value` line.
fn scalar<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no `{key}:` line"))
}

#[test]
fn daemonset_grants_the_agent_the_units_capabilities() {
    let unit = read("dist/xlb.service");
    let yaml = read("dist/k8s/xlb-daemonset.yaml");
    let bounding = unit_caps(&unit, "CapabilityBoundingSet");
    assert_eq!(bounding, unit_caps(&unit, "AmbientCapabilities"));
    let agent = container(&yaml, "xlb");
    assert_eq!(
        flow_list(&agent, "add"),
        bounding,
        "capabilities.add of the xlb container vs. dist/xlb.service's CapabilityBoundingSet"
    );
    assert_eq!(
        flow_list(&agent, "drop"),
        BTreeSet::from(["ALL".to_string()])
    );
    // BIRD's container is not the agent's: it must not have picked up the agent's lines.
    assert!(!container(&yaml, "bird").iter().any(|l| l.contains("BPF")));
}

#[test]
fn daemonset_uses_the_hosts_network_and_bpffs() {
    let yaml = read("dist/k8s/xlb-daemonset.yaml");
    assert_eq!(scalar(&yaml, "kind"), "DaemonSet");
    assert_eq!(scalar(&yaml, "hostNetwork"), "true");
    // Pins on the host's bpffs outlive the pod: the next pod adopts the running program.
    assert_eq!(scalar(&yaml, "path"), "/sys/fs/bpf");
    assert!(
        container(&yaml, "xlb")
            .iter()
            .any(|l| l.trim() == "mountPath: /sys/fs/bpf"),
        "the xlb container does not mount /sys/fs/bpf"
    );
    assert_eq!(scalar(&yaml, "maxUnavailable"), "1");
}

#[test]
fn daemonset_waits_for_the_agents_teardown() {
    let yaml = read("dist/k8s/xlb-daemonset.yaml");
    let grace: u64 = scalar(&yaml, "terminationGracePeriodSeconds")
        .parse()
        .expect("a number of seconds");
    let needed = DEFAULT_WITHDRAW_GRACE + TEARDOWN_BOUND;
    assert!(
        Duration::from_secs(grace) > needed,
        "terminationGracePeriodSeconds {grace} s: the agent may take {needed:?} to stop"
    );
}
