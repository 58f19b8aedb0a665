//! Identifiers of nodes and channels.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node of the swarm: a viewer, a source or a tracker. The driver picks it (the
/// simulator numbers nodes; the real driver draws it at random from its seed).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The tracker's well-known id: a peer talks to "the tracker", whatever its address.
    pub const TRACKER: NodeId = NodeId(0);
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{:x}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A channel, derived from its broadcaster's public key and its name, so that a name
/// cannot be taken over by another key without the id changing.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    pub fn derive(broadcaster_key: &[u8; 32], name: &str) -> ChannelId {
        let mut h = blake3::Hasher::new();
        h.update(b"meshtv channel v1\0");
        h.update(broadcaster_key);
        h.update(name.as_bytes());
        ChannelId(*h.finalize().as_bytes())
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ch:{}", hex::encode(&self.0[..6]))
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
