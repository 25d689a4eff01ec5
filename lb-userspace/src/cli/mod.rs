//! Command-line front ends that work on the maps directly (no agent needed).
//!
//! `xlb inspect …` ([`inspect`]): the binary parses [`InspectCmd`], opens the pinned maps
//! (`maps::AyaStore::from_pin_dir`) and calls [`inspect::run`].
//!
//! `xlb doctor` ([`doctor`]): preflight checks of an LB host, gathered facts judged by pure
//! functions.

pub mod doctor;
mod format;
pub mod inspect;

pub use inspect::{InspectCmd, Pacer, RealPacer, run, run_with};
