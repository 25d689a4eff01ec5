//! Health probes and the health monitor against real sockets. Each test runs in a private
//! network namespace of its own (only `lo`), so it needs root: it fails loudly, never skips.

// A test crate's root resolves modules beside it, in tests/: point them at its own folder.
#[path = "health_probe/monitor.rs"]
mod monitor;
#[path = "health_probe/netns.rs"]
mod netns;
#[path = "health_probe/probe.rs"]
mod probe;
