//! xlb agent and CLI.

pub mod config;
pub mod health;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod model;
pub mod netlink;
pub mod reconcile;
pub mod testkit;
