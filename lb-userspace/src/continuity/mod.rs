//! Flow continuity across nodes (issue 12).
//!
//! Nodes behind ECMP share identical Maglev rings, but each keeps flows that predate a backend
//! change on their old backend through its own flow table. Those "exceptions" would break if
//! the routers moved the flow to another node, so each agent sends its exceptions to its peers
//! and receivers install them where the datapath looks on a flow-table miss.
//!
//! [`wire`] is the byte format of the messages and frames; [`channel`] is the authenticated,
//! replay-protected TCP channel that carries them.

pub mod channel;
pub mod wire;
