//! The wire messages between peers, sources and trackers. One enum, so that one codec,
//! one transport and one simulator carry every conversation.

use crate::ids::{ChannelId, NodeId};
use crate::limits;
use crate::media::{ChannelDescriptor, SignedHeader};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A peer as the tracker introduces it: who, and where to dial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Source,
    Viewer,
}

/// Why the tracker turned a request down; the peer shows it to its user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    UnknownChannel,
    NameTaken,
    BadDescriptor(String),
}

/// What a peer reports in its heartbeat (the tracker's view of the swarm).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    pub bytes_uploaded: u64,
    pub stalls: u32,
    pub buffer_ms: u64,
}

/// Bitmap of the pieces of one segment a peer holds (bit i = piece i).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceMap(pub Vec<u8>);

impl PieceMap {
    pub fn with_len(pieces: usize) -> PieceMap {
        PieceMap(vec![0; pieces.div_ceil(8)])
    }
    pub fn full(pieces: usize) -> PieceMap {
        let mut m = PieceMap::with_len(pieces);
        for i in 0..pieces {
            m.set(i);
        }
        m
    }
    pub fn set(&mut self, i: usize) {
        if let Some(b) = self.0.get_mut(i / 8) {
            *b |= 1 << (i % 8);
        }
    }
    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    // --- peer → tracker -------------------------------------------------------------
    /// A source registers its channel. `addr` is where viewers can dial it.
    Announce {
        descriptor: ChannelDescriptor,
        addr: SocketAddr,
        upload_bps: u64,
    },
    /// A viewer joins a channel by name.
    Join {
        channel: String,
        addr: SocketAddr,
        upload_bps: u64,
    },
    /// Liveness and the peer's counters; silent peers are expired.
    Heartbeat {
        report: PeerReport,
    },
    /// A peer accuses another of sending a piece that failed its hash.
    BadPeer {
        peer: NodeId,
    },
    Leave,

    // --- tracker → peer -------------------------------------------------------------
    /// Accepted a Join: the channel, and its source for urgent fallback.
    Welcome {
        descriptor: ChannelDescriptor,
        source: PeerInfo,
        live_edge: Option<u64>,
    },
    /// Accepted an Announce.
    Registered {
        channel: ChannelId,
    },
    Reject {
        reason: RejectReason,
    },
    /// The peer's parent for each stripe (None: none free yet) and its mesh partners.
    Assign {
        parents: Vec<Option<PeerInfo>>,
        partners: Vec<PeerInfo>,
    },

    // --- peer ↔ peer ----------------------------------------------------------------
    /// Push me these stripes (bit s = stripe s) from segment `from_seq` on; 0 unsubscribes.
    Subscribe {
        channel: ChannelId,
        stripes: u32,
        from_seq: u64,
    },
    /// I am your partner: exchange piece maps with me.
    Partner {
        channel: ChannelId,
    },
    Header(SignedHeader),
    GetHeader {
        seq: u64,
    },
    Have {
        seq: u64,
        pieces: PieceMap,
    },
    Request {
        seq: u64,
        index: u16,
        urgent: bool,
    },
    Piece {
        seq: u64,
        index: u16,
        data: Bytes,
    },
    /// Answer to a Request the peer cannot serve, so the asker retries elsewhere at once.
    NoPiece {
        seq: u64,
        index: u16,
    },
}

impl Msg {
    /// Checks bounds that serde alone cannot: string lengths, list lengths, descriptors.
    pub fn validate(&self) -> Result<(), &'static str> {
        match self {
            Msg::Announce { descriptor, .. } | Msg::Welcome { descriptor, .. } => descriptor.validate(),
            Msg::Join { channel, .. } => {
                if channel.is_empty() || channel.len() > limits::CHANNEL_NAME_BYTES_MAX {
                    Err("channel name length out of bounds")
                } else {
                    Ok(())
                }
            }
            Msg::Reject { reason: RejectReason::BadDescriptor(s) } if s.len() > limits::REASON_BYTES_MAX => {
                Err("reason too long")
            }
            Msg::Assign { parents, partners } => {
                if parents.len() > limits::STRIPES_MAX || partners.len() > limits::PARTNERS_MAX {
                    Err("assignment too large")
                } else {
                    Ok(())
                }
            }
            Msg::Header(h) => h.header.validate(),
            Msg::Have { pieces, .. } => {
                if pieces.0.len() > limits::PIECES_PER_SEGMENT_MAX.div_ceil(8) {
                    Err("piece map too large")
                } else {
                    Ok(())
                }
            }
            Msg::Piece { data, index, .. } => {
                if data.len() > limits::PIECE_BYTES_MAX || *index as usize >= limits::PIECES_PER_SEGMENT_MAX {
                    Err("piece out of bounds")
                } else {
                    Ok(())
                }
            }
            Msg::Request { index, .. } | Msg::NoPiece { index, .. } => {
                if *index as usize >= limits::PIECES_PER_SEGMENT_MAX {
                    Err("piece index out of bounds")
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// True for messages that carry media (counted as media bytes, not control).
    pub fn is_media(&self) -> bool {
        matches!(self, Msg::Piece { .. })
    }
}
