//! Where a viewer starts playing: near the live edge while it can get there, and with what
//! it gathered once the swarm has shown it cannot.

mod common;

use common::{addr, descriptor, PIECE_BYTES};
use meshtv_peer::{Peer, PeerConfig, PeerRole};
use meshtv_proto::msg::PeerInfo;
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use std::time::Duration;

const VIEWER: NodeId = NodeId(100);

/// The signed headers of segments `0..n`, as the source pushes them to a child.
fn headers(b: &Broadcaster, n: u64) -> Vec<Msg> {
    let cfg = PeerConfig::new(NodeId(1), addr(), PeerRole::Source { descriptor: descriptor(b), secret: b.secret() });
    let mut src = Peer::new(cfg);
    let mut out = Outbox::default();
    src.on_start(Time::ZERO, &mut out);
    let channel = descriptor(b).id;
    src.on_message(Time::ZERO, VIEWER, Msg::Subscribe { channel, stripes: 0b1111, from_seq: 0 }, &mut out);
    let mut found = Vec::new();
    for seq in 0..n {
        let mut out = Outbox::default();
        src.publish(Time::from_millis(seq * 2000), seq, 2000, &vec![7u8; 8 * PIECE_BYTES as usize], &mut out);
        found.extend(
            out.sends.into_iter().filter(|(to, m)| *to == VIEWER && matches!(m, Msg::Header(_))).map(|(_, m)| m),
        );
    }
    found
}

/// A viewer that hears of segment 0 at once and of segments 1..=3 only `later`: where does
/// it plan to start?
fn start_after_news(later: Duration) -> Option<u64> {
    let b = Broadcaster::from_seed(9);
    let hs = headers(&b, 4);
    assert_eq!(hs.len(), 4);
    let mut p = Peer::new(PeerConfig::new(VIEWER, addr(), PeerRole::Viewer { channel: "live".into() }));
    let t0 = Time::from_millis(10_000);
    let mut out = Outbox::default();
    p.on_start(t0, &mut out);
    let source = PeerInfo { id: NodeId(1), addr: addr() };
    p.on_message(t0, NodeId::TRACKER, Msg::Welcome { descriptor: descriptor(&b), source, live_edge: None }, &mut out);
    let mut hs = hs.into_iter();
    p.on_message(t0, NodeId(1), hs.next().unwrap(), &mut out);
    assert_eq!(p.playback().start_seq, Some(0));
    let t = t0 + later;
    for h in hs {
        p.on_message(t, NodeId(1), h, &mut out);
    }
    p.on_timer(t, TimerId(1), &mut out);
    p.playback().start_seq
}

#[test]
fn a_start_segment_left_behind_is_given_up_only_while_the_start_budget_lasts() {
    // Within the start budget (2.2 s, doubled): three newer segments exist, the start
    // moves up to the newest two.
    assert_eq!(start_after_news(Duration::from_millis(1000)), Some(2));
    // Past it the swarm has brought this viewer less than the stream's rate: it keeps
    // what it started gathering rather than throw it away for segments it would also
    // fall behind on.
    assert_eq!(start_after_news(Duration::from_millis(5000)), Some(0));
}
