//! The model every meshtv component shares: identifiers, virtual time, the channel /
//! segment / piece model, the wire messages and their codec, and broadcaster signatures.
//!
//! **Architecture Invariant:** this crate is sans-IO. It has no sockets, tokio, threads,
//! clocks, file I/O or global randomness: time and seeds come in from the driver. Every
//! decoder returns `Result` and bounds what it accepts, because its input comes from the
//! network.

pub mod codec;
pub mod ids;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod msg;
pub mod nat;
pub mod node;
pub mod sign;
pub mod time;
pub mod verify;

pub use ids::{ChannelId, NodeId};
pub use media::{ChannelDescriptor, SegmentHeader, SignedHeader};
pub use msg::Msg;
pub use node::{Node, Outbox, PieceAck, TimerId};
pub use time::Time;
