//! The meshtv peer as a sans-IO state machine: a viewer that joins a channel through the
//! tracker, takes a parent per stripe, forwards verified pieces to its children as soon
//! as they arrive, swaps piece maps with mesh partners and pulls what is missing by
//! deadline, falling back to the source for what is late; or the source that signs and
//! pushes segments.
//!
//! **Architecture Invariant:** this crate is sans-IO. No sockets, tokio, threads, clocks,
//! file I/O or global randomness: the driver passes time in, carries out the
//! [`meshtv_proto::Outbox`], and seeds the peer's RNG. The simulator and the real
//! transport run this same code.

pub mod buffer;
pub mod config;
pub mod peer;
pub mod playback;
pub mod scheduler;
pub mod stats;
pub mod traversal;
pub mod uplink;

pub use config::{Fault, PeerConfig, PeerRole};
pub use peer::Peer;
pub use stats::PeerStats;
