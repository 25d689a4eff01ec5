//! Flow continuity across LB nodes (docs/datapath.md §4): each agent finds the flows of its
//! flow table that no longer follow the ring (`scan`), sends them to its peers, and installs
//! the peers' in the table the program consults on a flow-table miss (`table`).

pub mod scan;
pub mod status;
pub mod table;
