//! xlb agent and CLI.
