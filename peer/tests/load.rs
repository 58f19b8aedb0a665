//! How a peer keeps its uplink and its partner list in bounds when a swarm is large: it
//! declines pulls it could not answer in time, and a parent it no longer has stops being
//! a partner it announces to.

mod common;

use common::{addr, assign, descriptor, Link, PIECE_BYTES};
use meshtv_peer::{Peer, PeerConfig, PeerRole};
use meshtv_proto::msg::PeerInfo;
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use std::time::Duration;

/// A source holding segment 0 (8 pieces), its uplink capped at `uplink_bps`.
fn source(uplink_bps: Option<u64>) -> Peer {
    let b = Broadcaster::from_seed(9);
    let mut cfg =
        PeerConfig::new(NodeId(1), addr(), PeerRole::Source { descriptor: descriptor(&b), secret: b.secret() });
    cfg.uplink_cap_bps = uplink_bps;
    cfg.serve_horizon = Duration::from_secs(1);
    let mut p = Peer::new(cfg);
    let mut out = Outbox::default();
    p.on_start(Time::from_millis(1000), &mut out);
    p.publish(Time::from_millis(2000), 0, 2000, &vec![7u8; 8 * PIECE_BYTES as usize], &mut out);
    p
}

/// Asks `p` for every piece of segment 0 from three viewers at `now`: (accepted, declined),
/// with what it sent in `all`. An accepted request is answered at once or queued on the
/// uplink (nothing sent yet).
fn ask_all(p: &mut Peer, now: Time, all: &mut Outbox) -> (usize, usize) {
    let (mut accepted, mut declined) = (0, 0);
    for index in 0..8u16 {
        for asker in 0..3 {
            let mut out = Outbox::default();
            p.on_message(now, NodeId(100 + asker), Msg::Request { seq: 0, index, urgent: true }, &mut out);
            match out.sends.first().map(|(_, m)| m) {
                Some(Msg::Piece { .. }) | None => accepted += 1,
                Some(Msg::NoPiece { .. }) => declined += 1,
                other => panic!("unexpected answer {other:?}"),
            }
            all.sends.extend(out.sends);
        }
    }
    (accepted, declined)
}

#[test]
fn a_busy_uplink_declines_pulls_it_could_not_answer_in_time() {
    // 1 Mbit/s and a 1 s horizon: 1 Mbit may be in flight or wait, i.e. 8 pieces of
    // 128 kbit (the 9th would make it 1.05 Mbit). The other 16 requests are declined at
    // once, so their askers turn elsewhere instead of waiting for a late answer.
    let mut p = source(Some(1_000_000));
    let now = Time::from_millis(2000);
    let mut out = Outbox::default();
    let (accepted, declined) = ask_all(&mut p, now, &mut out);
    assert_eq!((accepted, declined), (8, 16));
    // The accepted ones leave as the uplink acknowledges what it carried: all eight
    // within the second, two at once and six as the link drained.
    let mut link = Link::new(1_000_000);
    for ms in (10..=1100).step_by(10) {
        link.ack_until(&mut p, now + Duration::from_millis(ms), &mut out);
    }
    let sent = out.sends.iter().filter(|(_, m)| matches!(m, Msg::Piece { .. })).count();
    assert_eq!(sent, 8, "every accepted request answered");
    // Once it has drained: answered again.
    let mut out = Outbox::default();
    p.on_message(now + Duration::from_secs(2), NodeId(200), Msg::Request { seq: 0, index: 0, urgent: true }, &mut out);
    assert!(matches!(out.sends.first(), Some((_, Msg::Piece { .. }))));
    // A source with no cap starts as carefully (it has measured nothing yet).
    let mut open = source(None);
    assert_eq!(ask_all(&mut open, now, &mut Outbox::default()), (8, 16));
}

#[test]
fn a_replaced_parent_stops_being_a_partner() {
    let b = Broadcaster::from_seed(9);
    let mut cfg = PeerConfig::new(NodeId(100), addr(), PeerRole::Viewer { channel: "live".into() });
    cfg.upload_bps = 4_000_000;
    let mut p = Peer::new(cfg);
    let now = Time::from_millis(1000);
    let mut out = Outbox::default();
    p.on_start(now, &mut out);
    let info = |id: u64| PeerInfo { id: NodeId(id), addr: addr() };
    let source = info(1);
    p.on_message(
        now,
        NodeId::TRACKER,
        Msg::Welcome { descriptor: Box::new(descriptor(&b)), source, live_edge: None },
        &mut out,
    );
    // Parent 2 in every stripe, one mesh partner (3).
    p.on_message(now, NodeId::TRACKER, assign(NodeId(2), &[NodeId(3)]), &mut out);
    assert_eq!(p.stats(now).partners, 2, "the parent and the mesh partner");
    // The optimizer moves every stripe to parent 4: 2 is no longer a partner, 3 stays.
    p.on_message(now, NodeId::TRACKER, assign(NodeId(4), &[]), &mut out);
    assert_eq!(p.stats(now).partners, 2, "parent 4 and mesh partner 3, not parent 2");
    // Five re-assignments later the list has not grown.
    for parent in [5, 6, 7, 8, 9] {
        p.on_message(now, NodeId::TRACKER, assign(NodeId(parent), &[]), &mut out);
    }
    assert_eq!(p.stats(now).partners, 2);
    // A parent that is also a mesh partner stays one when it stops feeding us.
    p.on_message(now, NodeId::TRACKER, assign(NodeId(3), &[]), &mut out);
    p.on_message(now, NodeId::TRACKER, assign(NodeId(10), &[]), &mut out);
    assert_eq!(p.stats(now).partners, 2, "parent 10 and mesh partner 3");
}

#[test]
fn requests_in_flight_are_bounded_in_bytes_not_in_pieces() {
    // A viewer that has nobody but the source, with 48 16 KiB pieces due now: the
    // source may have 512 KiB in flight from it, i.e. 32 of these small pieces (a bound of
    // eight requests would leave a small-piece stream crawling at start).
    let b = Broadcaster::from_seed(9);
    // Without a start delay both start segments are due at once (with one, only the first).
    let mut cfg = PeerConfig::new(NodeId(100), addr(), PeerRole::Viewer { channel: "live".into() });
    cfg.start_delay = None;
    let mut p = Peer::new(cfg);
    let t0 = Time::from_millis(1000);
    let mut out = Outbox::default();
    p.on_start(t0, &mut out);
    let source = PeerInfo { id: NodeId(1), addr: addr() };
    p.on_message(
        t0,
        NodeId::TRACKER,
        Msg::Welcome { descriptor: Box::new(descriptor(&b)), source, live_edge: None },
        &mut out,
    );
    let mut src = self::source(None);
    let channel = descriptor(&b).id;
    src.on_message(t0, NodeId(100), Msg::Subscribe { channel, stripes: 0b1111, from_seq: 0 }, &mut out);
    let mut headers = Outbox::default();
    // The two start segments: 40 pieces and 8.
    for (seq, pieces) in [(1, 40), (2, 8)] {
        src.publish(t0, seq, 2000, &vec![7u8; pieces * PIECE_BYTES as usize], &mut headers);
    }
    for (to, m) in headers.sends {
        if to == NodeId(100) && matches!(m, Msg::Header(_)) {
            p.on_message(t0, NodeId(1), m, &mut out);
        }
    }
    // Past the start budget: every missing piece is due, and only the source has them.
    let mut out = Outbox::default();
    p.on_timer(t0 + Duration::from_secs(3), TimerId(1), &mut out);
    let asked = out.sends.iter().filter(|(to, m)| *to == NodeId(1) && matches!(m, Msg::Request { .. })).count();
    assert_eq!(asked, (512 << 10) / PIECE_BYTES as usize);
}

#[test]
fn strangers_cannot_grow_the_mesh_without_bound() {
    // A viewer in the channel; 500 peers it never heard of ask to be its partners.
    let b = Broadcaster::from_seed(9);
    let mut p = Peer::new(PeerConfig::new(NodeId(100), addr(), PeerRole::Viewer { channel: "live".into() }));
    let now = Time::from_millis(1000);
    let mut out = Outbox::default();
    p.on_start(now, &mut out);
    let source = PeerInfo { id: NodeId(1), addr: addr() };
    let welcome = Msg::Welcome { descriptor: Box::new(descriptor(&b)), source, live_edge: None };
    p.on_message(now, NodeId::TRACKER, welcome, &mut out);
    let channel = descriptor(&b).id;
    for stranger in 1000..1500 {
        p.on_message(now, NodeId(stranger), Msg::Partner { channel }, &mut out);
    }
    let partners = p.stats(now).partners;
    assert_eq!(partners, 2 * meshtv_proto::limits::PARTNERS_MAX, "the mesh stops at its bound");
}
