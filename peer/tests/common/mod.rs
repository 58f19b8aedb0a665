//! What the peer's integration tests share: a channel, an address, a source's segments
//! and a welcomed viewer.
// Each test file compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use meshtv_peer::{Peer, PeerConfig, PeerRole};
use meshtv_proto::media::{ChannelDescriptor, Container};
use meshtv_proto::msg::PeerInfo;
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{ChannelId, Msg, Node, NodeId, Outbox, PieceAck, Time};
use std::net::SocketAddr;

pub const PIECE_BYTES: u32 = 16 * 1024;

/// A 400 kbit/s live channel in four stripes, 2 s segments of 16 KiB pieces.
pub fn descriptor(b: &Broadcaster) -> ChannelDescriptor {
    ChannelDescriptor {
        id: ChannelId::derive(&b.public_key(), "live"),
        name: "live".into(),
        broadcaster_key: b.public_key(),
        container: Container::MpegTs,
        live: true,
        stripes: 4,
        piece_bytes: PIECE_BYTES,
        segment_duration_ms_target: 2000,
        bitrate_bps: 400_000,
    }
}

pub fn addr() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

/// The source of the tests' channel.
pub const SOURCE: NodeId = NodeId(1);

/// The header and pieces of segments `0..n`, as the source pushes them to child `to`.
pub fn segments(b: &Broadcaster, to: NodeId, n: u64) -> Vec<(Msg, Vec<Msg>)> {
    let cfg = PeerConfig::new(SOURCE, addr(), PeerRole::Source { descriptor: descriptor(b), secret: b.secret() });
    let mut src = Peer::new(cfg);
    let mut out = Outbox::default();
    src.on_start(Time::ZERO, &mut out);
    let channel = descriptor(b).id;
    src.on_message(Time::ZERO, to, Msg::Subscribe { channel, stripes: 0b1111, from_seq: 0 }, &mut out);
    let mut found = Vec::new();
    for seq in 0..n {
        let mut out = Outbox::default();
        let now = Time::from_millis(seq * 2000);
        src.publish(now, seq, 2000, &vec![7u8; 8 * PIECE_BYTES as usize], &mut out);
        ack_all(&mut src, now, &mut out, 0);
        let mut msgs = out.sends.into_iter().filter(|(t, _)| *t == to).map(|(_, m)| m);
        let header = msgs.next().expect("a header first");
        assert!(matches!(header, Msg::Header(_)));
        found.push((header, msgs.collect()));
    }
    found
}

/// The tracker's assignment: `parent` on every stripe, and `partners` for the mesh.
pub fn assign(parent: NodeId, partners: &[NodeId]) -> Msg {
    let info = |id: NodeId| PeerInfo { id, addr: addr() };
    Msg::Assign { parents: vec![Some(info(parent)); 4], partners: partners.iter().map(|&id| info(id)).collect() }
}

/// Viewer `id` welcomed into the channel at `t0`.
pub fn welcomed(b: &Broadcaster, id: NodeId, t0: Time, out: &mut Outbox) -> Peer {
    welcomed_with(b, id, t0, out, |_| {})
}

/// The same, its default config changed by `tweak` first.
pub fn welcomed_with(
    b: &Broadcaster,
    id: NodeId,
    t0: Time,
    out: &mut Outbox,
    tweak: impl FnOnce(&mut PeerConfig),
) -> Peer {
    let mut cfg = PeerConfig::new(id, addr(), PeerRole::Viewer { channel: "live".into() });
    tweak(&mut cfg);
    let mut p = Peer::new(cfg);
    p.on_start(t0, out);
    let source = PeerInfo { id: SOURCE, addr: addr() };
    p.on_message(
        t0,
        NodeId::TRACKER,
        Msg::Welcome { descriptor: Box::new(descriptor(b)), source, live_edge: None },
        out,
    );
    p
}

/// Acknowledges, at `now`, every piece `p` sent in `out` from `from` on, and those its
/// acknowledgements release in turn, as a driver with an instant link would: a sender
/// hands its transport only what its uplink takes soon (see `meshtv_peer::uplink`), so a
/// test that wants everything sent acknowledges what went. Returns where `out` ends.
pub fn ack_all(p: &mut Peer, now: Time, out: &mut Outbox, from: usize) -> usize {
    let mut done = from;
    while done < out.sends.len() {
        let (to, msg) = &out.sends[done];
        done += 1;
        if let Msg::Piece { seq, index, .. } = msg {
            let (to, seq, index) = (*to, *seq, *index);
            let ack = PieceAck { to, seq, index, delivered: true, rtt: std::time::Duration::ZERO };
            p.on_piece_acked(now, ack, out);
        }
    }
    done
}

/// An uplink of a fixed rate under a peer: pieces leave one after another in the order
/// the peer sent them and are acknowledged as they finish (no propagation delay), as a
/// driver would report them.
pub struct Link {
    pub bps: u64,
    /// Pieces sent and not acknowledged: (when it finishes, to, seq, index).
    wire: std::collections::VecDeque<(Time, NodeId, u64, u16)>,
    free_at: Time,
    seen: usize,
}

impl Link {
    pub fn new(bps: u64) -> Link {
        Link { bps, wire: Default::default(), free_at: Time::ZERO, seen: 0 }
    }

    /// Puts on the wire the pieces `p` sent into `out` since the last call (at `now`).
    pub fn take(&mut self, now: Time, out: &Outbox) {
        for (to, msg) in &out.sends[self.seen..] {
            if let Msg::Piece { seq, index, data } = msg {
                let start = self.free_at.max(now);
                let secs = data.len() as f64 * 8.0 / self.bps as f64;
                self.free_at = start + std::time::Duration::from_secs_f64(secs);
                self.wire.push_back((self.free_at, *to, *seq, *index));
            }
        }
        self.seen = out.sends.len();
    }

    /// Acknowledges to `p` every piece finished by `now`, taking what that releases.
    pub fn ack_until(&mut self, p: &mut Peer, now: Time, out: &mut Outbox) {
        self.take(now, out);
        while let Some(&(at, to, seq, index)) = self.wire.front().filter(|w| w.0 <= now) {
            self.wire.pop_front();
            let ack = PieceAck { to, seq, index, delivered: true, rtt: std::time::Duration::ZERO };
            p.on_piece_acked(at, ack, out);
            self.take(at, out);
        }
    }
}
