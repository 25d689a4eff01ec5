//! The testbed: a client, an LB and N backends in network namespaces of their own, on one L2
//! segment (a bridge in a "switch" namespace), documentation-range addresses only. The single
//! source of the topology: the end-to-end tests build it in-process, `cargo xtask testbed` and
//! `cargo xtask demo` through xlb-testkit's `xlb-testbed` binary.
//!
//! ```text
//!   client ns            switch ns (bridge br0)             LB ns
//!   eth0 .100 ---- client [            ] lb (xlb_pass) ---- eth0 .2   (xlb agent, XDP)
//!                         [            ] b1 ---- backend-1 ns eth0 .11  (decap XDP, VIPs on lo)
//!                         [            ] b2 ---- backend-2 ns eth0 .12
//! ```
//!
//! Segment 198.51.100.0/24 and 2001:db8:51::/64; the VIPs (203.0.113.10-12, 2001:db8:113::10-12,
//! one address per forwarding mode) are routed by the client via the LB, and owned by every
//! backend on `lo`. Each backend runs `backend.py`: HTTP on port 80 and a UDP responder on 9000,
//! both answering with the backend's name. Replies go from the backends straight to the client.
//!
//! Everything created is recorded in [`Resources`] *before* it is used, and removed by
//! [`Resources::teardown`]: on drop of the [`Testbed`] (also when a test panics), or later from
//! the state file when the testbed was [`Testbed::persist`]ed (`cargo xtask testbed down`).
//! Pins live under a bpffs directory of the testbed's own (`/sys/fs/bpf/<prefix>`), never the
//! default `/sys/fs/bpf/xlb`. Needs root; every failure panics with its reason.
//!
//! The parts: [`plan`] (addresses, names, VIP specs), [`resources`] (namespaces, links, pins,
//! processes, their removal and the state file), [`agent`] (the `xlb run` under test: its
//! config, start, stop and status), [`traffic`] (clients, load and packet capture),
//! [`sessions`] (long-lived connections), [`flood`] (a SYN flood from spoofed sources) and
//! [`probe`] (the agent's API answer time, memory and CPU).

pub mod agent;
pub mod bird;
pub mod cluster;
pub mod continuity;
pub mod continuity_scenarios;
pub mod failover;
pub mod flood;
pub mod load_faults;
pub mod peers;
pub mod plan;
pub mod probe;
pub mod resources;
pub mod sessions;
pub mod traffic;

pub use agent::*;
pub use cluster::{Cluster, ClusterOptions, LbNode};
pub use failover::failover_vip_note;
pub use plan::*;
pub use resources::*;
pub use traffic::*;

use std::fs;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Child;

use crate::netns::Netns;

pub struct Backend {
    /// `backend-1`, ...: what its servers answer.
    pub name: String,
    /// Removed by the testbed's teardown, not on drop.
    pub ns: ManuallyDrop<Netns>,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub mac: [u8; 6],
    /// Its server process, while it runs.
    server: Option<Child>,
}

impl Backend {
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 { self.v6.into() } else { self.v4.into() }
    }
}

pub struct Testbed {
    pub prefix: String,
    /// The namespaces are removed by the teardown (or left by [`Testbed::persist`]), never by
    /// their own drop.
    pub switch: ManuallyDrop<Netns>,
    pub client: ManuallyDrop<Netns>,
    pub lb: ManuallyDrop<Netns>,
    pub backends: Vec<Backend>,
    pub work_dir: PathBuf,
    pub pin_root: PathBuf,
    python: PathBuf,
    res: Resources,
    /// The running agent, if any.
    agent: Option<Child>,
    /// Agents started so far (names their logs).
    agents_started: u32,
    /// Set by [`Testbed::persist`]: drop leaves everything in place.
    persisted: bool,
}

/// The last `n` lines of a file (for panic messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Testbed {
    /// The backend whose name is `name`.
    pub fn backend_index(&self, name: &str) -> usize {
        self.backends
            .iter()
            .position(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend {name:?}"))
    }
}
