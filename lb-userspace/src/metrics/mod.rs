//! Prometheus / OpenMetrics exposition of the agent and the XDP program's counters.
//!
//! # Where the numbers come from
//!
//! - **BPF counters** (per-CPU, cumulative since the counter's slot was allocated) are read from
//!   the maps *at scrape time* by a collector over a [`SharedStore`]: nothing is copied on a
//!   timer, so a scrape always sees the kernel's current sums. Give the exporter its own
//!   read-only store (`AyaStore::from_pin_dir`); the reconciler keeps the writing one. A VIP
//!   index or backend id is zeroed when it is (re)allocated, so a series restarts from 0 when
//!   its VIP or backend is re-added, which Prometheus treats as a counter reset.
//! - **Agent values** (labels for VIP indices and backend ids, health, ring shares, reloads,
//!   ring rebuilds, ring digests, probe latencies) come from an [`AgentMetrics`] handle the
//!   agent updates: [`AgentMetrics::set_topology`] and [`AgentMetrics::set_ring_digests`] after
//!   every apply, [`AgentMetrics::record_apply`],
//!   [`AgentMetrics::record_reload`], [`AgentMetrics::set_health`],
//!   [`AgentMetrics::record_probe`].
//!
//! # Metrics
//!
//! Labels: `vip` is the VIP's identity as printed everywhere (`tcp/203.0.113.10:80`,
//! `udp/[2001:db8::1]:*`), `backend` the backend's address (`198.51.100.1`).
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `xlb_vip_packets_total` | counter | vip | packets forwarded (or echo-answered) for the VIP |
//! | `xlb_vip_bytes_total` | counter | vip | their bytes, as received (L2 frame length) |
//! | `xlb_vip_new_flows_total` | counter | vip | flows that took a ring choice (flow-table misses, SYNs, re-hashes) |
//! | `xlb_vip_drops_total` | counter | vip | packets to the VIP that were dropped |
//! | `xlb_backend_packets_total` | counter | vip, backend | packets forwarded to the backend |
//! | `xlb_backend_bytes_total` | counter | vip, backend | their bytes |
//! | `xlb_backend_new_flows_total` | counter | vip, backend | new flows the ring gave the backend |
//! | `xlb_backend_health` | gauge | vip, backend | damped health-check verdict: **1 = up, 0 = down**; no series until the first verdict |
//! | `xlb_backend_state` | gauge | vip, backend | the backend map entry's state, read from the map: **0 = empty, 1 = active (in the ring), 2 = draining (out of the ring, flows kept), 3 = down (out of the ring, flows re-hash)** |
//! | `xlb_backend_ring_slots` | gauge | vip, backend | Maglev ring slots the backend owns (of 65537), as of the agent's last apply |
//! | `xlb_vip_ring_info` | gauge | vip, digest | always 1; `digest` is the VIP's ring digest as of the agent's last apply, the same as `xlb inspect ring --digest` prints (`crate::ring_digest`): equal across nodes that agree on config and health |
//! | `xlb_packets_total` | counter | reason | every global counter of the program, `reason` = `lb_common::stats::Counter::name()`: verdicts (`pass*`, `tx`, `icmp_*`, `drop_*`) and detail counters (`flow_*`, `fragment`). Drops are the `drop_*` reasons: `sum(xlb_packets_total{reason=~"drop_.*"})` |
//! | `xlb_flow_table_entries` | gauge | | flow-table occupancy, see below |
//! | `xlb_flow_table_walk_capped` | gauge | | 1 when the last occupancy walk stopped at its cap (the entries gauge is then a lower bound) |
//! | `xlb_flow_table_capacity` | gauge | | flow-table size (max entries) from the config |
//! | `xlb_ring_rebuilds_total` | counter | | VIP rings rewritten by applies (one per VIP whose ring changed) |
//! | `xlb_ring_rebuild_duration_seconds` | histogram | | duration of each apply that rewrote at least one ring (the whole apply: plan, Maglev builds and map writes) |
//! | `xlb_config_reloads_total` | counter | result = `ok` \| `error` | config reload requests and their outcome |
//! | `xlb_interface_events_total` | counter | interface, event = `down` \| `up` \| `xdp_detached` \| `xdp_attached` | changes of the XDP interface, counted (and logged) once each: down means administratively down or without carrier; `xdp_detached` means the program is gone (restart the agent); no series before the first |
//! | `xlb_health_check_duration_seconds` | histogram | vip, backend | duration of every probe, successful or not (a timed-out probe lands in the bucket of its timeout) |
//! | `xlb_health_checks_total` | counter | vip, backend, result = `ok` \| `fail` | probes and their raw (undamped) outcome |
//! | `xlb_vip_announced` | gauge | vip | with `[announce]`: 1 when this node's route for the VIP's address is in place |
//! | `xlb_vip_withdrawn_reason` | gauge | vip, reason | 1 for why the VIP is not ready here: `not-attached`, `draining`, `not-programmed`, `too-few-backends` |
//! | `xlb_node_draining` | gauge | | 1 while the node is drained (`xlb drain-node`) |
//! | `xlb_route_changes_total` | counter | action = `announce` \| `withdraw` | routes written and removed |
//! | `xlb_speaker_errors_total` | counter | | failed route updates |
//! | `xlb_continuity_own_exceptions` | gauge | | with `[continuity]`: flows of this node's flow table that no longer follow the ring, at the last scan |
//! | `xlb_continuity_held_exceptions` | gauge | | peers' exceptions held in the peer table |
//! | `xlb_continuity_exceptions_{sent,received,applied,expired}_total` | counter | | exceptions sent to peers (every full set counts), received, installed, lapsed |
//! | `xlb_continuity_exceptions_refused_total` | counter | reason = `unknown` \| `mismatch` \| `full` | received exceptions not installed |
//! | `xlb_continuity_rejected_total` | counter | reason | channel messages or connections refused (bad tag, replay, malformed, oversized, unknown peer, ...); none changed a map |
//! | `xlb_continuity_{sent,received}_bytes_total` | counter | | bytes on the continuity channel |
//! | `xlb_continuity_peer_connected` | gauge | peer | 1 while this node's connection to the peer is up |
//! | `xlb_netlink_events_total` | counter | kind = `link` \| `neigh` \| `route` \| `overrun` | kernel notifications received; a burst of them is coalesced into one re-resolution, so a flood shows here and in `xlb_net_resolutions_total`, never in the log |
//! | `xlb_net_resolutions_total` | counter | | re-resolutions of the XDP interface and the backends' next hops (after notifications, and every few seconds) |
//! | `xlb_bird_problems` | gauge | | with `[announce]`: BIRD checks (`bird`, `bird_kernel`, `bgp`, as `xlb doctor` runs them) not OK at the last run, every 10 s |
//! | `xlb_scrape_map_errors` | gauge | | map reads that failed during this scrape (their series are missing from it) |
//!
//! # Flow-table occupancy
//!
//! The flow table keeps no element count: counting means reading every set of it (through its
//! memory mapping; 64 MiB at the default size). The collector walks at most [`FlowWalk::max_entries`]
//! entries (default 65536) and at most once per [`FlowWalk::min_interval`] (default 30 s),
//! serving the cached count in between. Past the cap, `xlb_flow_table_entries` is the cap and
//! `xlb_flow_table_walk_capped` is 1.
//!
//! # Endpoint
//!
//! [`MetricsServer`] answers `GET /metrics` (and `HEAD`) on the address it is given (the config
//! layer keeps that on loopback by default); any other path is 404, another method on
//! `/metrics` 405. The format is negotiated:
//! a scraper that accepts `application/openmetrics-text` gets OpenMetrics 1.0, anything else
//! (curl, older Prometheus) the Prometheus text format 0.0.4.
//!
//! # Files
//!
//! - `agent.rs`: [`AgentMetrics`], the values the agent records;
//! - `collector.rs`: the BPF counters, read from the maps at scrape time;
//! - `exporter.rs`: [`Exporter`], the registry of both and the negotiated text [`Format`];
//! - `server.rs`: [`MetricsServer`], the HTTP endpoint (hyper).

mod agent;
mod announce;
mod continuity;
pub use continuity::ContinuityTotals;
mod collector;
mod exporter;
mod server;

use std::sync::{Mutex, MutexGuard};

pub use agent::{AgentMetrics, NETLINK_EVENT_KINDS};
pub use collector::{FlowWalk, SharedStore};
pub use exporter::{Exporter, Format, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
pub use server::{MetricsServer, serve};

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
