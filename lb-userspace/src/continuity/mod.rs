//! Flow continuity across LB nodes (docs/datapath.md §4, docs/continuity.md).
//!
//! Nodes behind ECMP share identical Maglev rings, but each keeps flows that predate a backend
//! change on their old backend through its own flow table. Those "exceptions" would break if
//! the routers moved the flow to another node, so each agent finds them ([`scan`], on the
//! [`scanner`] thread), sends them to its peers ([`channel`], in the [`wire`] format), and
//! installs the peers' where the datapath looks on a flow-table miss ([`table`]). [`node`]
//! runs all of it in the agent; [`status`] is its part of `xlb status`.

pub mod channel;
pub mod node;
pub mod scan;
pub mod scanner;
pub mod status;
pub mod table;
pub mod wire;
