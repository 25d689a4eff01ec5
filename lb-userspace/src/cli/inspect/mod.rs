//! `xlb inspect`: reads the BPF maps directly (pinned under bpffs), so it works while the agent
//! is down, restarting, or wedged. Read-only: nothing here writes a map.
//!
//! Text output is `ipvsadm -L -n` style: numeric addresses, one header line, aligned columns,
//! nothing truncated or coloured. `--json` prints one JSON document (`stats --watch`: one JSON
//! object per line and sample). JSON field names are stable; fields may be added, never renamed
//! or removed. Each subcommand's file documents its JSON document.
//!
//! This file holds the arguments and the dispatch; each subcommand has its own file, which
//! reads the maps through [`snapshot`] (decoded once) and, for `backends` and `stats --watch`,
//! waits on a [`Pacer`].
//!
//! States: `active`, `draining`, `down`, `empty`, `unknown(N)`. Modes: `ipip`, `gue`, `dsr-l2`,
//! `unknown(N)`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::format::{parse_endpoint, parse_interval, parse_proto, parse_vip};
use crate::maps::MapStore;
use crate::model::{Proto, VipId};

mod backends;
mod common;
mod explain;
mod flows;
mod pacer;
mod ring;
mod snapshot;
mod stats;
#[cfg(test)]
mod test_support;
mod vips;

pub use pacer::{Pacer, RealPacer};

/// Inspect the BPF maps directly; works with the agent down.
///
/// VIPs are written PROTO/ADDR:PORT: tcp/203.0.113.10:80, udp/[2001:db8::10]:53, and
/// tcp/203.0.113.10:* for an all-ports VIP (the form `xlb` prints everywhere).
///
/// Each backend entry records its effective weight; health-check results are not in the maps:
/// inspect shows each backend's map state (active = in the ring, draining = out of the ring but
/// keeps its flows, down = failed its check or unreachable: out of the ring and its flows
/// re-hash) and its actual ring share. Ask the agent (`xlb status`) for probe results.
#[derive(Clone, Debug, Subcommand)]
pub enum InspectCmd {
    /// Every VIP: index, mode, flags, backend counts by state, and traffic counters.
    ///
    /// Columns: VIP INDEX MODE FLAGS ACTIVE DRAINING DOWN PACKETS BYTES NEWFLOWS DROPS. FLAGS is
    /// a comma list of src-affinity, no-backend-pass, icmp-echo (answered for the address),
    /// fragments (this VIP receives the address's fragments of its protocol), or `-`.
    /// Address entries and fragment aliases of the VIP map are folded into these flags.
    Vips(VipsArgs),
    /// Backends (of one VIP or all): map state, ring share, counters and rates.
    ///
    /// Columns: VIP BACKEND ID STATE WEIGHT SLOTS SHARE% PACKETS BYTES NEWFLOWS PKT/S BYTES/S.
    /// Rates come from two reads --interval apart (--no-rates: one read, no rate columns).
    /// WEIGHT is the effective weight the agent recorded; health results are not in the maps:
    /// STATE is the map state and SHARE% the backend's actual share of the VIP's Maglev ring.
    Backends(BackendsArgs),
    /// One VIP's Maglev ring: slots and share per backend, expected share, imbalance.
    ///
    /// First line: VIP, index, ring size, empty slots (packets hashing there are dropped, or
    /// passed with no-backend-pass), active backends, imbalance (largest share / mean share of
    /// the backends holding slots; 1.0000 is perfect). Then the table BACKEND ID STATE SLOTS
    /// SHARE% EXPECTED%. EXPECTED% is each active backend's share of the active backends' total
    /// weight (the agent records the effective weight in each backend entry).
    ///
    /// With --digest: one line per VIP (or only the VIP given), `VIP DIGEST`, sorted by VIP,
    /// no header. The digest (16 hex digits) names each slot's backend by address, never by
    /// the node-local id, and covers the ring size and hash seed: nodes with the same config
    /// and health view print the same lines (docs/operations.md, "Comparing rings across
    /// nodes"). The agent exports the same value as the `xlb_vip_ring_info` metric.
    Ring(RingArgs),
    /// Flow-table entries: 5-tuple, VIP, backend and whether the entry is still honoured.
    ///
    /// Columns: PROTO SOURCE DESTINATION VIP BACKEND ID STATE VALID. Entries outlive their
    /// connections until a new flow needs their slot (docs/datapath.md §4). VALID = no means
    /// the next packet of the flow re-hashes (backend down, removed, or its id reallocated
    /// since). Sorted by protocol, destination, then source.
    Flows(FlowsArgs),
    /// Global packet counters by reason (one per verdict or flow-table outcome).
    ///
    /// Columns: INDEX REASON COUNT, every counter. With --watch: SAMPLE TIME REASON TOTAL DELTA
    /// PER_S, every --interval, only the counters that moved (a quiet sample prints no line),
    /// until Ctrl-C or --count samples.
    Stats(StatsArgs),
    /// Which backend a flow goes to, and which rule decided.
    ///
    /// Example: xlb inspect explain 198.51.100.7:40000 203.0.113.10:80 tcp. Follows the
    /// datapath: VIP lookup (exact port, then all ports if any all-ports VIP exists), flow-table
    /// entry (honoured if its backend is active or draining and still the allocation the entry
    /// was written for), else
    /// the ring slot of the flow hash (source address only with src-affinity). A TCP SYN (SYN
    /// set, ACK clear) always takes the ring choice; --syn explains that case. Fragments,
    /// ICMP and the MTU check are not covered.
    Explain(ExplainArgs),
}

/// Output options shared by every subcommand.
#[derive(Clone, Debug, Default, Args)]
pub struct OutputArgs {
    /// Print JSON with stable field names instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct VipsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct BackendsArgs {
    /// Only this VIP's backends (PROTO/ADDR:PORT).
    #[arg(value_parser = parse_vip, value_name = "VIP")]
    pub vip: Option<VipId>,
    /// Time between the two reads the rates come from (seconds, or e.g. 500ms).
    #[arg(long, value_parser = parse_interval, default_value = "1s", value_name = "DURATION")]
    pub interval: Duration,
    /// One read, no rate columns (returns at once).
    #[arg(long)]
    pub no_rates: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct RingArgs {
    /// The VIP (PROTO/ADDR:PORT); optional with --digest (then every VIP).
    #[arg(value_parser = parse_vip, value_name = "VIP", required_unless_present = "digest")]
    pub vip: Option<VipId>,
    /// Print each VIP's ring digest instead of the table.
    #[arg(long)]
    pub digest: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct FlowsArgs {
    /// Only flows of this VIP (PROTO/ADDR:PORT; an all-ports VIP matches all its ports).
    #[arg(long, value_parser = parse_vip, value_name = "VIP")]
    pub vip: Option<VipId>,
    /// Only flows pinned to this backend address.
    #[arg(long, value_name = "ADDR")]
    pub backend: Option<IpAddr>,
    /// Print at most this many flows. Without a filter: the first N entries in map order (then
    /// sorted); with a filter the whole table is scanned.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    /// List the peer-exception table instead (flow continuity: flows that peer nodes keep on
    /// another backend than the ring gives, honoured here on a flow-table miss).
    #[arg(long)]
    pub peers: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct StatsArgs {
    /// Print the counters that moved, with rates, every --interval until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Time between samples in watch mode (seconds, or e.g. 500ms).
    #[arg(long, value_parser = parse_interval, default_value = "1s", value_name = "DURATION")]
    pub interval: Duration,
    /// Stop after this many samples.
    #[arg(long, requires = "watch", value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct ExplainArgs {
    /// Client address and port, e.g. 198.51.100.7:40000 or [2001:db8::7]:40000.
    #[arg(value_parser = parse_endpoint, value_name = "SRC:PORT")]
    pub src: SocketAddr,
    /// Destination (VIP) address and port.
    #[arg(value_parser = parse_endpoint, value_name = "DST:PORT")]
    pub dst: SocketAddr,
    /// tcp or udp.
    #[arg(value_parser = parse_proto, value_name = "PROTO")]
    pub proto: Proto,
    /// Explain a TCP SYN (SYN set, ACK clear): the flow table is not consulted.
    #[arg(long)]
    pub syn: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs one inspect command against `store`, writing to `out`. `stats --watch` runs until
/// Ctrl-C or `--count` samples.
pub fn run<S: MapStore>(store: &S, cmd: &InspectCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let watch = matches!(cmd, InspectCmd::Stats(a) if a.watch);
    run_with(store, cmd, out, &mut RealPacer::new(watch))
}

/// [`run`] with an injected [`Pacer`].
pub fn run_with<S: MapStore>(
    store: &S,
    cmd: &InspectCmd,
    out: &mut dyn Write,
    pacer: &mut dyn Pacer,
) -> anyhow::Result<()> {
    match cmd {
        InspectCmd::Vips(a) => vips::vips(store, a, out),
        InspectCmd::Backends(a) => backends::backends(store, a, out, pacer),
        InspectCmd::Ring(a) => ring::ring(store, a, out),
        InspectCmd::Flows(a) => flows::flows(store, a, out),
        InspectCmd::Stats(a) if a.watch => stats::stats_watch(store, a, out, pacer),
        InspectCmd::Stats(a) => stats::stats(store, a, out),
        InspectCmd::Explain(a) => explain::explain(store, a, out),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::InspectCmd;
    use super::test_support::{TestCli, parse};

    #[test]
    fn arguments_and_help() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
        let e = parse(&["ring", "203.0.113.10:80/tcp"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("write the protocol first: `tcp/203.0.113.10:80`"),
            "{e}"
        );
        let e = parse(&["explain", "198.51.100.7:1", "203.0.113.10:80", "icmp"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown protocol `icmp` (tcp or udp)"),
            "{e}"
        );
        assert!(
            parse(&["stats", "--count", "3"]).is_err(),
            "--count needs --watch"
        );
        let InspectCmd::Flows(f) = parse(&["flows"]).unwrap() else {
            panic!()
        };
        assert_eq!(f.limit, 100);
        let InspectCmd::Backends(b) = parse(&["backends"]).unwrap() else {
            panic!()
        };
        assert_eq!(b.interval, Duration::from_secs(1));
        let mut cmd = TestCli::command();
        let help = cmd
            .find_subcommand_mut("backends")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("health results are not in the maps"),
            "{help}"
        );
    }
}
