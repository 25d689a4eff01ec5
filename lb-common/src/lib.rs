//! The kernel/user ABI of xlb.
//!
//! Everything the XDP program and the agent exchange through BPF maps is defined here, once:
//! keys, values, sizes, counter indices, and the flow hash both sides must compute identically.
//! Every type is `#[repr(C)]` with explicit padding and a size assertion, and holds no `bool`,
//! `Option` or enum, so any bit pattern the other side writes is a valid value.
#![no_std]

pub mod addr;
pub mod flows;
pub mod hash;
pub mod keys;
pub mod limits;
pub mod map_names;
pub mod stats;
pub mod values;

#[cfg(feature = "user")]
mod pod;

pub use flows::{FlowSet, FlowSlot};
pub use keys::{FlowKey, VipKey};
pub use values::{Backend, FlowEntry, LbConfig, TrafficStats, VipMeta};
