//! `xlb run`: the agent. It owns every map write (through the reconciler) and reacts to:
//! health transitions, kernel neighbour/route changes, API calls, SIGHUP (reload) and
//! SIGINT/SIGTERM (stop, leaving forwarding running unless told to detach).
//!
//! Start-up order: validate the config (no side effects) -> claim the API socket (refuses when
//! another agent runs) -> prepare the pin directory -> load the program on the pinned maps ->
//! attach through pinned links -> adopt and reconcile the maps -> start probes, API, metrics.
//!
//! The decisions (what the maps should hold after an API call, a reload, a health transition)
//! live in [`state`], [`handlers`] and [`reload`], generic over the `MapStore` seam so unit
//! tests drive them against the in-memory store; [`startup`], [`event_loop`], [`neighbours`]
//! and [`shutdown`] do the real I/O around them.

mod announce;
mod continuity;
mod event_loop;
#[cfg(test)]
mod fuzz;
mod handlers;
mod link_watch;
mod neighbour_book;
mod neighbours;
mod reload;
mod shutdown;
mod startup;
mod state;

pub use shutdown::stop;
pub use startup::run;
