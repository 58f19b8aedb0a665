//! A parent keeps its pushes in its own queue, handing its transport only what its uplink
//! takes soon (see `meshtv_peer::uplink`), so that a child that
//! got a piece elsewhere can still cancel it (`Msg::Skip`), and answers pulls only after
//! its pushes: in a tight swarm (simulated, 2,000 viewers at 1.5x the bitrate) pushes of
//! pieces the child already had were a third of all upload.

mod common;

use common::{ack_all, addr, descriptor, Link, PIECE_BYTES};
use meshtv_peer::{Peer, PeerConfig, PeerRole};
use meshtv_proto::msg::{PeerInfo, PieceMap};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use std::time::Duration;

const SOURCE: NodeId = NodeId(1);
const TICK: TimerId = TimerId(1);

/// A source that may upload `uplink_bps` at most (it starts at the lower of that and
/// `uplink::INITIAL_BPS`, 1 Mbit/s, until it measured more).
fn source(b: &Broadcaster, uplink_bps: u64) -> Peer {
    let mut cfg = PeerConfig::new(SOURCE, addr(), PeerRole::Source { descriptor: descriptor(b), secret: b.secret() });
    cfg.uplink_cap_bps = Some(uplink_bps);
    // Room for a pull answer behind the queued pushes at the initial 1 Mbit/s.
    cfg.serve_horizon = Duration::from_secs(2);
    let mut p = Peer::new(cfg);
    p.on_start(Time::ZERO, &mut Outbox::default());
    p
}

fn subscribe(p: &mut Peer, b: &Broadcaster, child: NodeId) {
    let channel = descriptor(b).id;
    p.on_message(Time::ZERO, child, Msg::Subscribe { channel, stripes: 0b1111, from_seq: 0 }, &mut Outbox::default());
}

/// Publishes segment 0 (8 pieces) at `now`.
fn publish(p: &mut Peer, now: Time, out: &mut Outbox) {
    p.publish(now, 0, 2000, &vec![7u8; 8 * PIECE_BYTES as usize], out);
}

/// A source with `uplink_bps` and `children` subscribed to every stripe, having published
/// segment 0 at `t0`; with what it sent then.
fn publishing(b: &Broadcaster, uplink_bps: u64, children: &[NodeId], t0: Time) -> (Peer, Outbox) {
    let mut p = source(b, uplink_bps);
    for &c in children {
        subscribe(&mut p, b, c);
    }
    let mut out = Outbox::default();
    publish(&mut p, t0, &mut out);
    (p, out)
}

/// The pieces sent, in order: (to, index).
fn pieces(out: &Outbox) -> Vec<(NodeId, u16)> {
    out.sends
        .iter()
        .filter_map(|(to, m)| match m {
            Msg::Piece { index, .. } => Some((*to, *index)),
            _ => None,
        })
        .collect()
}

/// Ticks `p` every 100 ms for `secs` after `from`, on an uplink of `bps` that
/// acknowledges what it carried.
fn run(p: &mut Peer, bps: u64, from: Time, secs: u64, out: &mut Outbox) {
    let mut link = Link::new(bps);
    link.take(from, out);
    for ms in (10..=secs * 1000).step_by(10) {
        let now = from + Duration::from_millis(ms);
        link.ack_until(p, now, out);
        if ms % 100 == 0 {
            p.on_timer(now, TICK, out);
        }
    }
}

#[test]
fn a_child_that_gets_the_pieces_elsewhere_is_not_pushed_them() {
    let b = Broadcaster::from_seed(9);
    // 1 Mbit/s: a 128 kbit piece takes 131 ms, so about one piece is on the wire at a time
    // and the other fifteen pushes wait in the peer.
    let (a, c) = (NodeId(100), NodeId(101));
    let t0 = Time::from_millis(1000);
    let (mut p, mut out) = publishing(&b, 1_000_000, &[a, c], t0);
    assert_eq!(pieces(&out), vec![(a, 0), (c, 0)], "two pushes go at once, the rest wait");
    // Child c has the rest from elsewhere.
    let all = PieceMap::full(8);
    p.on_message(t0, c, Msg::Skip { seq: 0, pieces: all }, &mut out);
    run(&mut p, 1_000_000, t0, 3, &mut out);
    let sent = pieces(&out);
    assert_eq!(sent.iter().filter(|(to, _)| *to == a).count(), 8, "a gets every piece");
    assert_eq!(sent.iter().filter(|(to, _)| *to == c).count(), 1, "c only the one already sent");
    assert_eq!(p.stats(t0).pushes_dropped, 7);
    // Without the skip both get all eight: the queue itself loses nothing.
    let (mut p, mut out) = publishing(&b, 1_000_000, &[a, c], t0);
    run(&mut p, 1_000_000, t0, 3, &mut out);
    assert_eq!(pieces(&out).len(), 16);
}

#[test]
fn pull_answers_wait_behind_the_pushes() {
    let b = Broadcaster::from_seed(9);
    let (child, asker) = (NodeId(100), NodeId(200));
    let t0 = Time::from_millis(1000);
    let (mut p, mut out) = publishing(&b, 2_000_000, &[child], t0);
    let pushed_at_once = pieces(&out).len();
    assert!(pushed_at_once < 8, "some pushes wait");
    // Asked while pushes wait: accepted (nothing declined), but sent after them.
    p.on_message(t0, asker, Msg::Request { seq: 0, index: 3, urgent: true }, &mut out);
    assert!(!out.sends.iter().any(|(_, m)| matches!(m, Msg::NoPiece { .. })));
    // The child skips the last piece while the answer waits: the answer still goes.
    let mut last = PieceMap::with_len(8);
    last.set(7);
    p.on_message(t0, child, Msg::Skip { seq: 0, pieces: last }, &mut out);
    run(&mut p, 2_000_000, t0, 2, &mut out);
    let sent = pieces(&out);
    assert_eq!(sent.len(), 8);
    assert_eq!(sent.last(), Some(&(asker, 3)), "the answer leaves after the seven pushes: {sent:?}");
    assert!(!out.sends.iter().any(|(_, m)| matches!(m, Msg::NoPiece { .. })));
}

/// The header and pieces of segment 0 as a source pushes them to a child.
fn segment_zero(b: &Broadcaster, to: NodeId) -> (Msg, Vec<Msg>) {
    let mut src =
        Peer::new(PeerConfig::new(SOURCE, addr(), PeerRole::Source { descriptor: descriptor(b), secret: b.secret() }));
    src.on_start(Time::ZERO, &mut Outbox::default());
    subscribe(&mut src, b, to);
    let mut out = Outbox::default();
    publish(&mut src, Time::from_millis(1000), &mut out);
    ack_all(&mut src, Time::from_millis(1000), &mut out, 0);
    let mut msgs = out.sends.into_iter().filter(|(t, _)| *t == to).map(|(_, m)| m);
    let header = msgs.next().expect("a header first");
    assert!(matches!(header, Msg::Header(_)));
    (header, msgs.collect())
}

/// A viewer, welcomed into the channel.
fn viewer(b: &Broadcaster, id: NodeId, out: &mut Outbox) -> Peer {
    let cfg = PeerConfig::new(id, addr(), PeerRole::Viewer { channel: "live".into() });
    let mut p = Peer::new(cfg);
    p.on_start(Time::ZERO, out);
    let source = PeerInfo { id: SOURCE, addr: addr() };
    p.on_message(
        Time::ZERO,
        NodeId::TRACKER,
        Msg::Welcome { descriptor: Box::new(descriptor(b)), source, live_edge: None },
        out,
    );
    p
}

/// Viewer `me` with `parent` on every stripe and `partner` as its mesh partner, and the
/// header and pieces of segment 0 as the source sends them to it.
fn assigned(b: &Broadcaster, me: NodeId, parent: NodeId, partner: NodeId) -> (Peer, Msg, Vec<Msg>, Outbox) {
    let (header, pieces_of_0) = segment_zero(b, me);
    let mut out = Outbox::default();
    let mut p = viewer(b, me, &mut out);
    let info = |id| PeerInfo { id, addr: addr() };
    let assign = Msg::Assign { parents: vec![Some(info(parent)); 4], partners: vec![info(partner)] };
    p.on_message(Time::ZERO, NodeId::TRACKER, assign, &mut out);
    (p, header, pieces_of_0, out)
}

/// The skips sent: (to, segment, pieces).
fn skips(out: &Outbox) -> Vec<(NodeId, u64, Vec<usize>)> {
    out.sends
        .iter()
        .filter_map(|(to, m)| match m {
            Msg::Skip { seq, pieces } => Some((*to, *seq, (0..8).filter(|&i| pieces.get(i)).collect())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_skip_that_comes_before_the_piece_is_excused_not_held_against_the_parent() {
    let b = Broadcaster::from_seed(9);
    let (parent, child) = (NodeId(50), NodeId(100));
    let (header, pieces_of_0) = segment_zero(&b, parent);
    let mut out = Outbox::default();
    let mut p = viewer(&b, parent, &mut out);
    subscribe(&mut p, &b, child);
    let t = Time::from_millis(1100);
    p.on_message(t, SOURCE, header, &mut out);
    // The child got piece 0 elsewhere before its parent had it.
    let mut map = PieceMap::with_len(8);
    map.set(0);
    p.on_message(t, child, Msg::Skip { seq: 0, pieces: map }, &mut out);
    let mut out = Outbox::default();
    for m in pieces_of_0.into_iter().take(2) {
        p.on_message(t, SOURCE, m, &mut out);
    }
    assert_eq!(pieces(&out), vec![(child, 1)], "piece 0 is not pushed, piece 1 is");
    assert_eq!(p.stats(t).bytes_excused, PIECE_BYTES as u64);
    // The tracker hears of it with the next heartbeat, to judge the parent's upload.
    let mut out = Outbox::default();
    p.on_timer(t + Duration::from_secs(1), TICK, &mut out);
    let excused = out.sends.iter().find_map(|(to, m)| match m {
        Msg::Heartbeat { report } if *to == NodeId::TRACKER => Some(report.bytes_excused),
        _ => None,
    });
    assert_eq!(excused, Some(PIECE_BYTES as u64));
}

#[test]
fn a_piece_from_elsewhere_is_skipped_at_the_parent_with_the_next_tick() {
    let b = Broadcaster::from_seed(9);
    let (me, parent, partner) = (NodeId(100), NodeId(50), NodeId(60));
    let (mut p, header, pieces_of_0, mut out) = assigned(&b, me, parent, partner);
    let t = Time::from_millis(1100);
    p.on_message(t, parent, header, &mut out);
    let mut pieces_of_0 = pieces_of_0.into_iter();
    // Piece 0 from the parent, piece 1 from a partner (its push was late).
    p.on_message(t, parent, pieces_of_0.next().unwrap(), &mut out);
    p.on_message(t, partner, pieces_of_0.next().unwrap(), &mut out);
    let mut out = Outbox::default();
    p.on_timer(t + Duration::from_millis(100), TICK, &mut out);
    let skips = skips(&out);
    assert_eq!(skips, vec![(parent, 0, vec![1])]);
}

#[test]
fn an_answer_still_queued_is_dropped_when_the_asker_skips_it() {
    let b = Broadcaster::from_seed(9);
    let (child, asker) = (NodeId(100), NodeId(200));
    let t0 = Time::from_millis(1000);
    let (mut p, mut out) = publishing(&b, 2_000_000, &[child], t0);
    p.on_message(t0, asker, Msg::Request { seq: 0, index: 3, urgent: true }, &mut out);
    // The asker got piece 3 from someone else while its answer waited behind the pushes.
    let mut map = PieceMap::with_len(8);
    map.set(3);
    p.on_message(t0, asker, Msg::Skip { seq: 0, pieces: map }, &mut out);
    run(&mut p, 2_000_000, t0, 2, &mut out);
    let sent = pieces(&out);
    assert_eq!(sent.len(), 8, "the child gets its eight pushes: {sent:?}");
    assert!(sent.iter().all(|(to, _)| *to == child), "nothing goes to the asker: {sent:?}");
}

#[test]
fn a_piece_that_came_while_asked_of_a_partner_is_skipped_there() {
    let b = Broadcaster::from_seed(9);
    let (me, parent, partner) = (NodeId(100), NodeId(50), NodeId(60));
    let (mut p, header, pieces_of_0, mut out) = assigned(&b, me, parent, partner);
    let t = Time::from_millis(1100);
    p.on_message(t, parent, header, &mut out);
    p.on_message(t, partner, Msg::Have { seq: 0, pieces: PieceMap::full(8) }, &mut out);
    // Before playback, start pieces are asked of the partner at once.
    let mut out = Outbox::default();
    p.on_timer(t + Duration::from_millis(100), TICK, &mut out);
    let asked: Vec<u16> = out
        .sends
        .iter()
        .filter_map(|(to, m)| match m {
            Msg::Request { index, .. } if *to == partner => Some(*index),
            _ => None,
        })
        .collect();
    assert!(asked.contains(&0) && asked.contains(&1), "asked of the partner: {asked:?}");
    // The parent's pushes of pieces 0 and 1 win the race.
    let t = t + Duration::from_millis(150);
    for m in pieces_of_0.into_iter().take(2) {
        p.on_message(t, parent, m, &mut out);
    }
    let mut out = Outbox::default();
    p.on_timer(t + Duration::from_millis(100), TICK, &mut out);
    let skips = skips(&out);
    assert_eq!(skips, vec![(partner, 0, vec![0, 1])]);
}

#[test]
fn a_new_parent_hears_what_the_child_holds_before_the_subscription() {
    let b = Broadcaster::from_seed(9);
    let (me, old_parent, new_parent, partner) = (NodeId(100), NodeId(50), NodeId(51), NodeId(60));
    let (mut p, header, pieces_of_0, mut out) = assigned(&b, me, old_parent, partner);
    let t = Time::from_millis(1100);
    p.on_message(t, old_parent, header, &mut out);
    for m in pieces_of_0.into_iter().take(3) {
        p.on_message(t, old_parent, m, &mut out);
    }
    // The tracker moves every stripe to a new parent.
    let mut out = Outbox::default();
    let info = |id| PeerInfo { id, addr: addr() };
    let assign = Msg::Assign { parents: vec![Some(info(new_parent)); 4], partners: vec![info(partner)] };
    p.on_message(t, NodeId::TRACKER, assign, &mut out);
    let to_new: Vec<&Msg> = out.sends.iter().filter(|(to, _)| *to == new_parent).map(|(_, m)| m).collect();
    assert!(
        matches!(to_new.as_slice(), [Msg::Skip { seq: 0, .. }, Msg::Subscribe { from_seq: 0, .. }]),
        "a Skip, then the Subscribe: {to_new:?}"
    );
    assert_eq!(skips(&out), vec![(new_parent, 0, vec![0, 1, 2])]);
}

#[test]
fn a_subscriber_is_not_caught_up_on_what_it_listed() {
    let b = Broadcaster::from_seed(9);
    let child = NodeId(100);
    let t0 = Time::from_millis(1000);
    let (mut p, _) = publishing(&b, 100_000_000, &[], t0);
    let mut map = PieceMap::with_len(8);
    for i in [0, 1, 2, 5] {
        map.set(i);
    }
    let channel = descriptor(&b).id;
    let mut out = Outbox::default();
    p.on_message(t0, child, Msg::Skip { seq: 0, pieces: map }, &mut out);
    p.on_message(t0, child, Msg::Subscribe { channel, stripes: 0b1111, from_seq: 0 }, &mut out);
    run(&mut p, 100_000_000, t0, 1, &mut out);
    let sent: Vec<u16> = pieces(&out).into_iter().map(|(_, i)| i).collect();
    assert_eq!(sent, vec![3, 4, 6, 7], "only the pieces the child lacks");
    // Without the list, all eight.
    let (mut p, _) = publishing(&b, 100_000_000, &[], t0);
    let mut out = Outbox::default();
    p.on_message(t0, child, Msg::Subscribe { channel, stripes: 0b1111, from_seq: 0 }, &mut out);
    run(&mut p, 100_000_000, t0, 1, &mut out);
    assert_eq!(pieces(&out).len(), 8);
}
