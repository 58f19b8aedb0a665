//! The production driver: runs any sans-IO core ([`meshtv_proto::Node`]) over real QUIC,
//! with tokio and quinn. One UDP socket and one QUIC endpoint per node, serving and dialing;
//! control messages on one bidirectional stream per connection, each piece on its own
//! prioritised unidirectional stream so that older segments go out first.
//!
//! The same socket carries STUN (a tracker answers it; a peer classifies its NAT with it),
//! punch packets and relay frames beside QUIC (`socket`). NAT traversal follows the
//! tracker core's rendezvous plans (`Msg::Introduce`, carried out by `punch`): the driver
//! acts on the plans it carries, it does not make them.
//!
//! This crate is the only place in meshtv with sockets and clocks: the cores get time,
//! messages and timer firings from here, and hand back an [`Outbox`](meshtv_proto::Outbox).
//!
//! **Architecture Invariant:** the driver carries out what cores ask and makes no protocol
//! decision. It never invents, reorders or retries core messages; it only reports what
//! happened to connections (`on_disconnect`) and drops, with a count, what it cannot carry.
//! Everything it holds is bounded: queues per connection, messages waiting for a dial,
//! frames read from the network.

mod clock;
mod connection;
mod discover;
mod driver;
mod endpoint;
pub mod framing;
mod impair;
mod links;
mod punch;
mod socket;
mod stats;
mod stun;
mod timers;
pub mod tls;

pub use clock::now;
pub use driver::{Command, Driver, DriverConfig};
pub use endpoint::client_config;
pub use socket::RelayLimits;
pub use stats::{ConnectionStats, StatsSnapshot, TransportStats};
