//! Differential fuzzing of the XDP program against the reference model (`crate::model`):
//! `cargo xtask fuzz --time N` and the bounded run in `cargo xtask test` drive [`run::run`].
//! Every run prints its seed; the same seed replays the same frames in the same worlds.

pub mod decap;
pub mod frames;
pub mod invariants;
pub mod mutate;
pub mod run;
pub mod world;

pub use run::{Options, Report, run};
