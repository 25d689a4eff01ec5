//! xlb agent and CLI.

pub mod maglev;
