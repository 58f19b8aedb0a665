//! The tracker and peer cores together in a tiny in-memory swarm: instant links with a
//! fixed one-way latency, no bandwidth limits; a piece's sender hears it was delivered one
//! latency after it arrived, as a driver tells it (`Node::on_piece_acked`). Checks that a live channel reaches every
//! viewer through the stripe trees, that playback never stalls, and that a peer sending
//! corrupt pieces is cut off without a bad byte reaching anyone's buffer.

use meshtv_peer::{Fault, Peer, PeerConfig, PeerRole};
use meshtv_proto::media::{ChannelDescriptor, Container};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{ChannelId, Msg, Node, NodeId, Outbox, PieceAck, Time, TimerId};
use meshtv_tracker::{Tracker, TrackerConfig};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

enum Ev {
    Msg(NodeId, Msg),
    Timer(TimerId),
    /// A piece this node sent to the peer was acknowledged.
    Acked(NodeId, u64, u16),
}

enum Core {
    Tracker(Box<Tracker>),
    Peer(Box<Peer>),
}

impl Core {
    fn node(&mut self) -> &mut dyn Node {
        match self {
            Core::Tracker(t) => t.as_mut(),
            Core::Peer(p) => p.as_mut(),
        }
    }
}

struct Swarm {
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<(Time, u64, NodeId)>>,
    events: BTreeMap<u64, Ev>,
    nodes: BTreeMap<NodeId, Core>,
    latency: Duration,
}

impl Swarm {
    fn push(&mut self, at: Time, to: NodeId, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, to)));
        self.events.insert(self.seq, ev);
    }

    fn apply(&mut self, from: NodeId, out: Outbox) {
        for (to, msg) in out.sends {
            if self.nodes.contains_key(&to) {
                if let Msg::Piece { seq, index, .. } = &msg {
                    self.push(self.now + 2 * self.latency, from, Ev::Acked(to, *seq, *index));
                }
                self.push(self.now + self.latency, to, Ev::Msg(from, msg));
            }
        }
        for (at, id) in out.timers {
            self.push(at, from, Ev::Timer(id));
        }
    }

    fn add(&mut self, id: NodeId, mut core: Core) {
        let mut out = Outbox::default();
        core.node().on_start(self.now, &mut out);
        self.nodes.insert(id, core);
        self.apply(id, out);
    }

    fn run_until(&mut self, end: Time) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > end {
                break;
            }
            let Reverse((at, key, to)) = self.queue.pop().unwrap();
            let ev = self.events.remove(&key).unwrap();
            self.now = at;
            let Some(core) = self.nodes.get_mut(&to) else { continue };
            let mut out = Outbox::default();
            match ev {
                Ev::Msg(from, msg) => core.node().on_message(at, from, msg, &mut out),
                Ev::Timer(id) => core.node().on_timer(at, id, &mut out),
                Ev::Acked(to, seq, index) => {
                    let ack = PieceAck { to, seq, index, delivered: true, rtt: 2 * self.latency };
                    core.node().on_piece_acked(at, ack, &mut out)
                }
            }
            self.apply(to, out);
        }
        self.now = end;
    }

    fn peer(&mut self, id: NodeId) -> &mut Peer {
        match self.nodes.get_mut(&id) {
            Some(Core::Peer(p)) => p,
            _ => panic!("{id} is not a peer"),
        }
    }
}

fn segment_bytes(seq: u64) -> Vec<u8> {
    (0..100_000u32).map(|i| (i as u64 * 31 + seq * 7) as u8).collect()
}

fn swarm(viewers: u64, corrupt: Option<NodeId>) -> Swarm {
    let mut s = Swarm {
        now: Time::from_millis(1_000),
        seq: 0,
        queue: BinaryHeap::new(),
        events: BTreeMap::new(),
        nodes: BTreeMap::new(),
        latency: Duration::from_millis(20),
    };
    s.add(NodeId::TRACKER, Core::Tracker(Box::new(Tracker::new(TrackerConfig::default()))));
    let b = Broadcaster::from_seed(9);
    let descriptor = ChannelDescriptor {
        id: ChannelId::derive(&b.public_key(), "live"),
        name: "live".into(),
        broadcaster_key: b.public_key(),
        container: Container::MpegTs,
        live: true,
        stripes: 4,
        piece_bytes: 16 * 1024,
        segment_duration_ms_target: 2000,
        bitrate_bps: 400_000,
    };
    let addr = "127.0.0.1:1".parse().unwrap();
    let mut src = PeerConfig::new(NodeId(1), addr, PeerRole::Source { descriptor, secret: b.secret() });
    src.upload_bps = 2 * 400_000;
    s.add(NodeId(1), Core::Peer(Box::new(Peer::new(src))));
    s.run_until(Time::from_millis(1_100));
    for v in 0..viewers {
        let id = NodeId(100 + v);
        let mut cfg = PeerConfig::new(id, addr, PeerRole::Viewer { channel: "live".into() });
        cfg.upload_bps = 4_000_000;
        if Some(id) == corrupt {
            cfg.fault = Some(Fault::CorruptUploads);
        }
        s.add(id, Core::Peer(Box::new(Peer::new(cfg))));
    }
    s
}

fn broadcast(s: &mut Swarm, segments: u64) {
    for seq in 0..segments {
        let at = Time::from_millis(2_000 + seq * 2_000);
        s.run_until(at);
        let mut out = Outbox::default();
        let data = segment_bytes(seq);
        s.peer(NodeId(1)).publish(at, seq, 2000, &data, &mut out);
        s.apply(NodeId(1), out);
    }
    s.run_until(Time::from_millis(2_000 + segments * 2_000 + 6_000));
}

#[test]
fn every_viewer_plays_without_stalls_and_most_bytes_come_from_peers() {
    let mut s = swarm(8, None);
    broadcast(&mut s, 15);
    let now = s.now;
    let (mut from_source, mut played) = (0, 0);
    for v in 0..8 {
        let p = s.peer(NodeId(100 + v));
        let st = p.stats(now);
        assert!(st.segments_played >= 12, "viewer {v} played {} segments", st.segments_played);
        assert_eq!(st.stalls, 0, "viewer {v} stalled: {st:?}");
        for (seq, _) in p.playable() {
            assert_eq!(p.segment(seq).unwrap(), segment_bytes(seq), "viewer {v} segment {seq}");
        }
        from_source += st.bytes_from_source;
        played += st.bytes_played;
    }
    let savings = meshtv_proto::metrics::savings(from_source, played).unwrap();
    assert!(savings > 0.5, "savings {savings}");
}

#[test]
fn a_peer_sending_corrupt_pieces_is_dropped_and_nobody_plays_a_bad_byte() {
    let bad = NodeId(100);
    let mut s = swarm(8, Some(bad));
    broadcast(&mut s, 15);
    let now = s.now;
    let mut dropped = 0;
    for v in 1..8 {
        let p = s.peer(NodeId(100 + v));
        let st = p.stats(now);
        dropped += st.peers_dropped;
        assert!(st.segments_played >= 12, "viewer {v}: {st:?}");
        for (seq, _) in p.playable() {
            assert_eq!(p.segment(seq).unwrap(), segment_bytes(seq));
        }
    }
    assert!(dropped > 0, "nobody noticed the corrupt peer");
}

#[test]
fn viewers_whose_parents_vanish_without_a_word_keep_playing() {
    let mut s = swarm(8, None);
    // Broadcast 20 segments; after the 5th, the two viewers that uploaded most vanish
    // (no goodbye, no disconnect: the tracker only learns it when their heartbeats stop).
    let mut killed = Vec::new();
    for seq in 0..20u64 {
        let at = Time::from_millis(2_000 + seq * 2_000);
        s.run_until(at);
        if seq == 5 {
            let now = s.now;
            let mut up: Vec<(u64, NodeId)> =
                (0..8).map(|v| NodeId(100 + v)).map(|id| (s.peer(id).stats(now).bytes_uploaded, id)).collect();
            up.sort();
            for &(_, id) in up.iter().rev().take(2) {
                s.nodes.remove(&id);
                killed.push(id);
            }
        }
        let mut out = Outbox::default();
        s.peer(NodeId(1)).publish(at, seq, 2000, &segment_bytes(seq), &mut out);
        s.apply(NodeId(1), out);
    }
    s.run_until(Time::from_millis(2_000 + 20 * 2_000 + 4_000));
    let now = s.now;
    for v in 0..8 {
        let id = NodeId(100 + v);
        if killed.contains(&id) {
            continue;
        }
        let st = s.peer(id).stats(now);
        assert!(st.stall_ms_max <= 2000, "{id} stalled {} ms: {st:?}", st.stall_ms_max);
        assert!(st.segments_played >= 17, "{id} played {}: {st:?}", st.segments_played);
    }
}
