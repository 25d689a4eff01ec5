//! `xlb doctor`: preflight of a load-balancer host. Every check ends OK, WARN, FAIL or SKIP
//! (could not be judged: nothing to judge, or a fact could not be read), and anything not OK
//! comes with the concrete fix.
//!
//! Two halves, so that the judging is testable without root:
//! - [`gather`] reads the host into a [`HostFacts`]: `/proc`, rtnetlink and the ethtool ioctl
//!   (both asked of the calling thread's network namespace, so `nsenter --net=...` is judged
//!   right), the pin directory, the API socket. As root, on an interface without an XDP
//!   program, it also *probes* native XDP: it attaches the `xlb_pass` program (passes
//!   everything) in driver mode and detaches it at once. That is the truest answer, but on some
//!   physical NICs (mlx5, i40e, ixgbe...) attaching and detaching XDP reconfigures the queues
//!   and drops traffic for a moment: `--no-probe` skips it. An interface that already has an
//!   XDP program is never touched.
//! - BIRD, when [`DoctorOptions::bird`] names what to expect: its client `birdc` (each call
//!   bounded by a timeout) and the agent's routing table (rtnetlink); see `gather/bird.rs`.
//! - [`judge`] is a pure function of the facts: one `judge_*` per check, then
//!   [`backend_setup`], the settings to check on each backend.
//!
//! Files: `facts` (what is gathered), `gather/` (reading it), `judge/` (facts -> checks with
//! their fix), `backend_setup` (advice per forwarding mode), `report` (the report and its text).
//!
//! # JSON (`--json`)
//!
//! Stable field names; fields may be added, never renamed or removed:
//!
//! ```text
//! {"version": 1,
//!  "checks": [{"check": "kernel", "subject": null, "status": "ok", "message": "...", "fix": []}, ...],
//!  "backend_setup": [{"mode": "ipip", "steps": ["..."]}, ...],
//!  "summary": {"ok": 8, "warn": 1, "fail": 0, "skip": 1}}
//! ```
//!
//! `check` is one of `kernel`, `bpffs`, `capabilities`, `memlock`, `config`, `link`, `xdp`,
//! `mtu`, `rp_filter`, `pin_dir`, `agent`, and, when BIRD is checked, `bird`, `bird_kernel`,
//! `bgp`; `subject` is the interface for `link`, `xdp`, `mtu` and `rp_filter`, the BGP
//! protocol's name for `bgp` (null when there is none), else null; `status` is `ok` | `warn` | `fail` | `skip`. The exit code is
//! non-zero when any check is `fail`.

mod backend_setup;
mod facts;
#[cfg(test)]
mod fixtures;
mod gather;
mod judge;
mod report;

pub use backend_setup::backend_setup;
pub use facts::{
    AgentFacts, AgentState, AttachMode, AttachedXdp, BgpDetail, BirdChannel, BirdExpectation,
    BirdFacts, BirdProtocol, BirdRoute, BirdState, BirdView, CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON,
    CAP_SYS_ADMIN, Caps, ConfigFacts, Encap, HostFacts, IfaceFacts, LinkFacts, PinFacts, Probe,
};
pub use gather::{
    AGENT_TIMEOUT, BIRDC, BIRDC_TIMEOUT, DoctorOptions, bird_expectation, birdc, encaps_of, gather,
    gather_bird, mount_fstype, parse_status,
};
pub use judge::{
    CLIENT_MTU, MEMCG_KERNEL, MIN_KERNEL, MIN_KERNEL_WHY, NATIVE_XDP_DRIVERS,
    driver_has_native_xdp, judge, judge_agent, judge_bird, judge_bpffs, judge_caps, judge_config,
    judge_kernel, judge_link, judge_memlock, judge_mtu, judge_pin_dir, judge_rp_filter, judge_xdp,
    kernel_protocol_snippet, parse_kernel,
};
pub use report::{BackendSetup, Check, REPORT_VERSION, Report, Status, Summary};
