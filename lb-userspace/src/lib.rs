//! xlb agent and CLI.

pub mod maglev;
pub mod model;
