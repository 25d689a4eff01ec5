//! Test kit of the XDP datapath: packet builders, a loaded-program fixture with typed map
//! setters, and expected outputs built from docs/datapath.md. Used by the datapath suite
//! (`integration-tests/tests/datapath/`) and by the per-packet benchmark, so it is ordinary (not `#[cfg(test)]`) code; it needs root with
//! CAP_BPF only when a [`Datapath`] is created. [`testbed`] builds the namespace testbed of the
//! end-to-end tests, `cargo xtask testbed` and `cargo xtask demo` (root).

pub mod csum;
pub mod datapath;
pub mod expect;
pub mod fuzz;
pub mod model;
pub mod netns;
pub mod packet;
pub mod testbed;
pub mod world;

pub use datapath::Datapath;
pub use packet::{Ext, L4, Packet};
