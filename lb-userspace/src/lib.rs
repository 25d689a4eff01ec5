//! xlb agent and CLI.

pub mod config;
pub mod maglev;
pub mod maps;
pub mod model;
pub mod reconcile;
