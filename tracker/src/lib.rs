//! The meshtv tracker as a sans-IO state machine: it registers channels, admits viewers,
//! hands each viewer a parent per stripe and a few mesh partners, and repairs the trees
//! when peers leave, go silent or are caught sending bad pieces.
//!
//! **Architecture Invariant:** this crate is sans-IO. No sockets, tokio, threads, clocks,
//! file I/O or global randomness: the driver passes time in and seeds the RNG. The real
//! tracker process and the simulator run this same code.

pub mod assignment;
pub mod capacity;
pub mod chandelier;
pub mod optimizer;
pub mod rendezvous;
pub mod reports;
pub mod tracker;

pub use tracker::{Tracker, TrackerConfig, TrackerSnapshot};
