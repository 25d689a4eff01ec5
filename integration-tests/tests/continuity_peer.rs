//! Flow continuity between agents (issue 12) on the light peer testbed
//! (`xlb_testkit::testbed::peers`): LB nodes and plain hosts on one segment, no traffic
//! through the LBs.
//!
//! - `hostile`: a hostile peer talks raw TCP to an agent's continuity listener from a host
//!   that *is* a configured peer (so it passes the address check) and from one that is not:
//!   wrong key, recorded and replayed frames, truncated, oversized and garbage frames, a flood.
//!   Each is counted under its reason, nothing reaches the peer table (status and the pinned
//!   map), the API answers within 100 ms throughout and memory stays bounded. The same
//!   exceptions sent with the right key are installed at the end, so the "nothing written"
//!   checks can fail.
//! - `converge`: 100,000 exceptions on one agent (flows written into its pinned flow table on a
//!   backend that a drain then takes out of the ring) reach the other agent's peer table; the
//!   time, the sender's CPU and the bytes on the wire per 1k exceptions are printed.
//!
//! Needs root and bpffs (`cargo xtask setup`); fails loudly rather than skip. Every loop is
//! bounded in count and time. The figures are a release build's:
//! `cargo test --release -p integration-tests --test continuity_peer -- --nocapture
//! --test-threads=1` (a debug build's agents are held to looser bounds).

// A test crate's root resolves modules beside it, in tests/: point them at its own folder.
#[path = "continuity_peer/common.rs"]
mod common;
#[path = "continuity_peer/converge.rs"]
mod converge;
#[path = "continuity_peer/hostile.rs"]
mod hostile;
