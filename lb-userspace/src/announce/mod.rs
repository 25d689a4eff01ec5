//! Announcing the VIPs to routers: one route per VIP address in a kernel routing table, which
//! a BGP speaker on the host (BIRD's `kernel` protocol with `learn`) exports.
//!
//! - [`decision`]: pure: is a VIP (an address) ready for traffic on this node, and if not, why.
//! - [`holddown`]: pure: a route changes state at most once per hold-down.
//! - [`speaker`]: the [`Speaker`] seam (announce, withdraw, list) with the kernel-table
//!   implementation and an in-memory fake.
//! - [`announcer`]: the above together: the routes the agent keeps, their adoption at start,
//!   drain, and what `xlb status` and the metrics show.
//! - [`bird_watch`]: doctor's BIRD checks, run by the agent for `xlb status`.

pub mod announcer;
pub mod bird_watch;
pub mod decision;
pub mod holddown;
mod render;
pub mod speaker;

pub use announcer::{AddressStatus, AnnounceStatus, Announcer, DrainState};
pub use bird_watch::BirdProblem;
pub use decision::{Decision, NodeInputs, VipInputs, WithdrawReason, decide, decide_address};
pub use holddown::{HoldDown, Step};
pub use speaker::{FakeSpeaker, KernelTable, Listing, SharedFake, Speaker, SpeakerError};
