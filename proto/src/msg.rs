//! The wire messages between peers, sources and trackers. One enum, so that one codec,
//! one transport and one simulator carry every conversation.

use crate::ids::{ChannelId, NodeId};
use crate::limits;
use crate::media::{ChannelDescriptor, SignedHeader};
use crate::nat::Reachability;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::sync::Arc;

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
    /// Pushes its children declined (`Msg::Skip`) before the piece even reached it: they
    /// were asked of it, and it was not its uplink that made them late.
    pub bytes_excused: u64,
    pub stalls: u32,
    pub buffer_ms: u64,
    /// Bytes of verified pieces received from each sender since the previous heartbeat,
    /// most first, at most `limits::REPORT_SENDERS_MAX`: the tracker measures a parent's
    /// upload by what its receivers got, not by what it says it sent.
    pub received: Vec<(NodeId, u64)>,
}

/// A peer's NAT as its driver measured it with STUN against the tracker's two addresses
/// (RFC 5780's tests), on the socket its QUIC traffic uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatReport {
    pub reachability: Reachability,
    /// False when the tracker offered no second address: `reachability` is then the worst
    /// case for a NAT (a symmetric one), not a measurement.
    pub classified: bool,
    /// Where the tracker saw the peer: the external address of its first mapping.
    pub reflexive: SocketAddr,
    /// The address the peer's socket is bound to (reachable on a shared LAN).
    pub local: SocketAddr,
    /// Sequential allocators: the port step between consecutive new mappings, and the port
    /// the next new mapping gets (after the STUN tests). Otherwise 0 and the reflexive port.
    pub port_step: u16,
    pub next_port: u16,
}

impl NatReport {
    /// The usual name of the NAT ("full-cone", "symmetric-sequential", …), as logs, the
    /// stats API and the NAT lab say it.
    pub fn kind(&self) -> String {
        use crate::nat::{Allocation as A, Filtering as F, Mapping as M};
        let name = match self.reachability {
            Reachability::Open => "open",
            Reachability::Blocked => "blocked",
            Reachability::Nat(t) => match (t.mapping, t.filtering, t.allocation) {
                (M::EndpointIndependent, F::EndpointIndependent, _) => "full-cone",
                (M::EndpointIndependent, F::AddressDependent, _) => "restricted-cone",
                (M::EndpointIndependent, F::AddressAndPortDependent, _) => "port-restricted-cone",
                (_, _, A::Sequential) => "symmetric-sequential",
                (_, _, A::Random) => "symmetric",
                (_, _, A::PortPreserving) => "symmetric-preserving",
            },
        };
        if self.classified {
            name.to_string()
        } else {
            format!("{name} (assumed: the tracker has no second STUN address)")
        }
    }
}

/// Where a peer expects its packets to a new peer to come from, for the tracker to aim the
/// other side's punches (ICE's candidates, in short).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub local: SocketAddr,
    /// The reflexive address (endpoint-independent mapping), or the predicted external
    /// address of the next new mapping (sequential allocation).
    pub external: SocketAddr,
}

/// The tracker's decision, for one side of a pair, of how the two connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Both sides' punch packets carry it; a punch with another token is dropped.
    pub token: u64,
    /// Where to send punch packets (and dial, for the dialer), in order. Empty together
    /// with no relay and no dial: the other side cannot be reached.
    pub targets: Vec<SocketAddr>,
    /// This side opens the QUIC connection (the other side only punches and accepts).
    pub dial: bool,
    /// Punch first and dial the address a punch proved; false: dial `targets[0]` at once.
    pub punch: bool,
    /// How long to try directly before falling back to the relay (0: relay at once).
    pub direct_ms: u32,
    /// The relay the dialer goes through when the direct attempt fails or is hopeless
    /// (`NodeId::TRACKER`: the tracker that made the plan).
    pub relay: Option<NodeId>,
}

impl Plan {
    /// Nobody to connect to: the driver fails the connection at once.
    pub fn unreachable() -> Plan {
        Plan { token: 0, targets: Vec::new(), dial: false, punch: false, direct_ms: 0, relay: None }
    }
}

/// Bytes of a piece map held inline: segments of up to 128 pieces need no allocation.
const PIECE_MAP_INLINE_BYTES: usize = 16;

/// Bitmap of the pieces of one segment a peer holds (bit i = piece i).
///
/// Held inline up to 128 pieces: every announcement clones one and every scheduling tick
/// reads each partner's, so a heap block per map was an allocation per message and a
/// cache miss per lookup in 10^4-peer simulations. On the wire it is a length-prefixed
/// byte sequence, as a `Vec<u8>` is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceMap(SmallVec<[u8; PIECE_MAP_INLINE_BYTES]>);

impl PieceMap {
    pub fn with_len(pieces: usize) -> PieceMap {
        PieceMap(smallvec::smallvec![0; pieces.div_ceil(8)])
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
    /// Whether all of a segment's `pieces` are here.
    pub fn is_full(&self, pieces: usize) -> bool {
        (0..pieces).all(|i| self.get(i))
    }
    /// The first `pieces` pieces not in the map, in order.
    pub fn missing(&self, pieces: usize) -> impl Iterator<Item = usize> + '_ {
        (0..pieces).filter(|&i| !self.get(i))
    }
    /// Whether `other` holds one of the first `pieces` pieces that this map lacks, a byte
    /// at a time.
    pub fn lacks_any_of(&self, other: &PieceMap, pieces: usize) -> bool {
        (0..pieces.div_ceil(8)).any(|i| {
            let mask = if (i + 1) * 8 <= pieces { 0xff } else { (1u8 << (pieces % 8)) - 1 };
            let (ours, theirs) = (self.0.get(i).copied().unwrap_or(0), other.0.get(i).copied().unwrap_or(0));
            theirs & !ours & mask != 0
        })
    }
    /// Whether this map holds every piece `other` does and is at least as long (then a
    /// union that held `other` and takes this one in is as if `other` had never been in it).
    pub fn covers(&self, other: &PieceMap) -> bool {
        self.0.len() >= other.0.len() && self.0.iter().zip(&other.0).all(|(ours, theirs)| theirs & !ours == 0)
    }
    /// Adds every piece `other` has (the map grows to the longer of the two).
    pub fn union_with(&mut self, other: &PieceMap) {
        self.0.resize(self.0.len().max(other.0.len()), 0);
        for (m, b) in self.0.iter_mut().zip(&other.0) {
            *m |= b;
        }
    }
}

/// Everything nodes say to each other. Large, rare payloads are boxed so that a `Msg`
/// stays small: every message is moved through outboxes and the simulator's event queue
/// (168 bytes unboxed, 72 now; boxing changes nothing on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    // --- peer → tracker -------------------------------------------------------------
    /// A source registers its channel. `addr` is where viewers can dial it.
    Announce {
        descriptor: Box<ChannelDescriptor>,
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
        report: Box<PeerReport>,
    },
    /// A peer accuses another of sending a piece that failed its hash.
    BadPeer {
        peer: NodeId,
    },
    Leave,
    // --- tracker → peer -------------------------------------------------------------
    /// Accepted a Join: the channel, and its source for urgent fallback.
    Welcome {
        descriptor: Box<ChannelDescriptor>,
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
    /// Shared, not boxed: a header is forwarded to every child and kept in every
    /// buffer, so a clone is a count, not a copy (the wire format is the header's own).
    Header(Arc<SignedHeader>),
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

    // --- NAT traversal (appended, so that older variants keep their wire numbers) -----
    /// The peer's NAT, measured by its driver (sent once, after Join or Announce).
    NatReport {
        report: Box<NatReport>,
    },
    /// Rendezvous: connect me to `peer` (`answer` false), or my answer to an introduction
    /// (`answer` true); `offer` says where my packets toward it will come from.
    Rendezvous {
        peer: NodeId,
        offer: Box<Offer>,
        answer: bool,
    },
    /// Rendezvous: how to connect to `peer`. With `reply`, the peer answers with its own
    /// `Rendezvous { answer: true }` so that the other side's plan can be made.
    Introduce {
        peer: NodeId,
        plan: Box<Plan>,
        reply: bool,
    },
    // --- appended -----------------------------------------------------------------------
    /// Do not send me these pieces of segment `seq`, I have them or get them elsewhere.
    /// Child → parent when the push was late: the parent drops them from its push queue,
    /// so a late tree does not spend its uplink on pieces that would arrive as
    /// duplicates. Peer → a node it asked for a piece that came first from someone else:
    /// that node drops the answer if it is still queued.
    Skip {
        seq: u64,
        pieces: PieceMap,
    },
    /// Whether I want your piece maps. `None`: my trees feed me, stop announcing to me
    /// (Haves were nearly half of a fed swarm's messages, a hundred for each pull).
    /// `Some(seq)`: I am missing pieces again, send me your maps from segment `seq` on now,
    /// and your announcements from then on.
    Interest {
        from_seq: Option<u64>,
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
            Msg::Have { pieces, .. } | Msg::Skip { pieces, .. } => {
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
            Msg::Heartbeat { report } if report.received.len() > limits::REPORT_SENDERS_MAX => {
                Err("too many senders in a report")
            }
            Msg::Introduce { plan, .. } if plan.targets.len() > limits::PUNCH_TARGETS_MAX => {
                Err("too many punch targets")
            }
            _ => Ok(()),
        }
    }

    /// The variant's name, for counting messages by kind.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Announce { .. } => "Announce",
            Msg::Join { .. } => "Join",
            Msg::Heartbeat { .. } => "Heartbeat",
            Msg::BadPeer { .. } => "BadPeer",
            Msg::Leave => "Leave",
            Msg::Welcome { .. } => "Welcome",
            Msg::Registered { .. } => "Registered",
            Msg::Reject { .. } => "Reject",
            Msg::Assign { .. } => "Assign",
            Msg::Subscribe { .. } => "Subscribe",
            Msg::Partner { .. } => "Partner",
            Msg::Header(_) => "Header",
            Msg::GetHeader { .. } => "GetHeader",
            Msg::Have { .. } => "Have",
            Msg::Request { .. } => "Request",
            Msg::Piece { .. } => "Piece",
            Msg::NoPiece { .. } => "NoPiece",
            Msg::NatReport { .. } => "NatReport",
            Msg::Rendezvous { .. } => "Rendezvous",
            Msg::Introduce { .. } => "Introduce",
            Msg::Skip { .. } => "Skip",
            Msg::Interest { .. } => "Interest",
        }
    }

    /// True for messages that carry media (counted as media bytes, not control).
    pub fn is_media(&self) -> bool {
        matches!(self, Msg::Piece { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_stays_small() {
        // A piece (sequence, index, shared bytes) is the most common message; nothing
        // larger than a join should be stored inline.
        assert!(std::mem::size_of::<Msg>() <= 72, "Msg is {} bytes", std::mem::size_of::<Msg>());
    }

    #[test]
    fn a_piece_map_goes_on_the_wire_as_a_byte_vector_does() {
        // Short maps are held inline and long ones on the heap; both must keep the
        // encoding peers already speak, and long ones must survive the round trip.
        for pieces in [0, 5, 8, 13, 128, 129, 1000] {
            let map = PieceMap::full(pieces);
            let bytes: Vec<u8> = (0..pieces.div_ceil(8))
                .map(|b| if (b + 1) * 8 <= pieces { 0xff } else { (1u8 << (pieces % 8)) - 1 })
                .collect();
            let wire = postcard::to_stdvec(&map).unwrap();
            assert_eq!(wire, postcard::to_stdvec(&bytes).unwrap(), "{pieces} pieces");
            let back: PieceMap = postcard::from_bytes(&wire).unwrap();
            assert_eq!(back, map);
            assert!(back.is_full(pieces) && !back.get(pieces));
        }
    }

    #[test]
    fn missing_pieces_and_what_another_map_could_fill() {
        let mut ours = PieceMap::with_len(13);
        for i in [0, 2, 9, 12] {
            ours.set(i);
        }
        let missing: Vec<usize> = ours.missing(13).collect();
        assert_eq!(missing, [1, 3, 4, 5, 6, 7, 8, 10, 11]);
        let mut theirs = PieceMap::with_len(13);
        for i in [0, 9, 12] {
            theirs.set(i);
        }
        assert!(!ours.lacks_any_of(&theirs, 13), "they hold nothing we lack");
        theirs.set(11);
        assert!(ours.lacks_any_of(&theirs, 13));
        assert!(!ours.lacks_any_of(&theirs, 11), "piece 11 is beyond the first 11");
        // Bits past the segment's pieces (a map of the wrong length) count for nothing.
        let mut long = PieceMap::with_len(16);
        long.set(14);
        assert!(!ours.lacks_any_of(&long, 13));
        assert!(ours.lacks_any_of(&PieceMap::full(16), 13));
        assert!(!PieceMap::full(13).lacks_any_of(&PieceMap::full(16), 13));
        assert!(theirs.covers(&theirs) && PieceMap::full(13).covers(&ours) && !ours.covers(&theirs));
        assert!(!ours.covers(&long) && long.covers(&PieceMap::with_len(13)));
    }
}
