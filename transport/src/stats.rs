//! Transport counters, shared lock-free between the event loop, the connection tasks and
//! whoever reports them (the stats API, the demo). Media means `Msg::Piece` frames; control
//! is every other frame, so `overhead` (DESIGN.md) is `control / media` of these counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one driver. Bytes are frame bytes on the QUIC streams (length prefix
/// included), not UDP bytes: QUIC's own overhead is not ours to optimise.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub media_bytes_sent: AtomicU64,
    pub media_bytes_recv: AtomicU64,
    pub control_bytes_sent: AtomicU64,
    pub control_bytes_recv: AtomicU64,
    /// UDP payload bytes of the QUIC datagrams this node's socket sent, direct or framed
    /// for a relay (header included): what quinn's `udp_tx.bytes` counts, summed over
    /// every connection this node ever had, closed ones included. Handshakes,
    /// retransmissions, acks and packet headers are in it; STUN and punch probes (a few
    /// dozen bytes each) and datagrams relayed for others are not. What this node cost
    /// the network, e.g. the source's side of `savings` (DESIGN.md).
    pub udp_bytes_sent: AtomicU64,
    /// Dials started on a core's request (and the tracker dial).
    pub dials_started: AtomicU64,
    /// Connections that came up, in either direction.
    pub connections_opened: AtomicU64,
    /// Dials that did not come up, and inbound handshakes that failed.
    pub connections_failed: AtomicU64,
    /// Connections that came up and later ended.
    pub connections_closed: AtomicU64,
    /// Outgoing messages that were not carried: no connection, a full queue, too large.
    pub messages_dropped: AtomicU64,
    /// Datagrams that were neither QUIC nor STUN, punch or relay traffic we expected
    /// (malformed, unsolicited, spoofed): dropped with a log line.
    pub datagrams_dropped: AtomicU64,
    pub stun_answered: AtomicU64,
    pub punches_sent: AtomicU64,
    pub punches_received: AtomicU64,
    /// Connections that came up directly and through a relay.
    pub connections_direct: AtomicU64,
    pub connections_relayed: AtomicU64,
    /// This node's datagrams sent through a relay (frame bytes).
    pub relay_bytes_sent: AtomicU64,
    /// As a relay: bytes forwarded for others, and datagrams refused by the bandwidth limits.
    pub relay_bytes_forwarded: AtomicU64,
    pub relay_datagrams_limited: AtomicU64,
    /// The connections up now, per node (see [`ConnectionStats`]).
    pub connections: std::sync::Mutex<std::collections::BTreeMap<meshtv_proto::NodeId, ConnectionStats>>,
}

/// One connection as it came up: how, after how many attempts and how long.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionStats {
    pub peer: String,
    /// "direct" or "relay".
    pub path: &'static str,
    /// The peer's address, or the relay's for a relayed connection.
    pub remote: std::net::SocketAddr,
    /// This node opened it.
    pub outbound: bool,
    /// Ways tried before it came up (a direct attempt, then the relay).
    pub attempts: u32,
    /// From the moment this node wanted the connection (its core dialed, or the tracker
    /// introduced the peer) to the connection being up; `None` for connections it did not ask for.
    pub connect_ms: Option<u64>,
}

/// A copy of the counters at one moment, for reports and assertions.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub media_bytes_sent: u64,
    pub media_bytes_recv: u64,
    pub control_bytes_sent: u64,
    pub control_bytes_recv: u64,
    pub udp_bytes_sent: u64,
    pub dials_started: u64,
    pub connections_opened: u64,
    pub connections_failed: u64,
    pub connections_closed: u64,
    pub messages_dropped: u64,
    pub datagrams_dropped: u64,
    pub stun_answered: u64,
    pub punches_sent: u64,
    pub punches_received: u64,
    pub connections_direct: u64,
    pub connections_relayed: u64,
    pub relay_bytes_sent: u64,
    pub relay_bytes_forwarded: u64,
    pub relay_datagrams_limited: u64,
}

impl StatsSnapshot {
    /// Connections up right now.
    pub fn connections_open(&self) -> u64 {
        self.connections_opened.saturating_sub(self.connections_closed)
    }
}

impl TransportStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            media_bytes_sent: get(&self.media_bytes_sent),
            media_bytes_recv: get(&self.media_bytes_recv),
            control_bytes_sent: get(&self.control_bytes_sent),
            control_bytes_recv: get(&self.control_bytes_recv),
            udp_bytes_sent: get(&self.udp_bytes_sent),
            dials_started: get(&self.dials_started),
            connections_opened: get(&self.connections_opened),
            connections_failed: get(&self.connections_failed),
            connections_closed: get(&self.connections_closed),
            messages_dropped: get(&self.messages_dropped),
            datagrams_dropped: get(&self.datagrams_dropped),
            stun_answered: get(&self.stun_answered),
            punches_sent: get(&self.punches_sent),
            punches_received: get(&self.punches_received),
            connections_direct: get(&self.connections_direct),
            connections_relayed: get(&self.connections_relayed),
            relay_bytes_sent: get(&self.relay_bytes_sent),
            relay_bytes_forwarded: get(&self.relay_bytes_forwarded),
            relay_datagrams_limited: get(&self.relay_datagrams_limited),
        }
    }

    /// The connections up now, one per node (its newest).
    pub fn connections(&self) -> Vec<ConnectionStats> {
        self.connections.lock().map(|c| c.values().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn count_sent(&self, media: bool, bytes: usize) {
        let c = if media { &self.media_bytes_sent } else { &self.control_bytes_sent };
        bump(c, bytes as u64);
    }

    pub(crate) fn count_recv(&self, media: bool, bytes: usize) {
        let c = if media { &self.media_bytes_recv } else { &self.control_bytes_recv };
        bump(c, bytes as u64);
    }
}

/// Adds to a counter. Relaxed: counters order nothing, they are only read as figures.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
