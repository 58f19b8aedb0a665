//! Map interest (`Msg::Interest`): a viewer its stripe parents feed in time asks its
//! partners to stop announcing to it, and asks for their maps again the moment a piece is
//! overdue; a partner told so sends it no Haves, then every map at once when asked again.

mod common;

use common::{assign, segments, welcomed, SOURCE};
use meshtv_peer::Peer;
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use std::time::Duration;

const VIEWER: NodeId = NodeId(100);
const P1: NodeId = NodeId(61);
const P2: NodeId = NodeId(62);
const TICK: TimerId = TimerId(1);
const MS: fn(u64) -> Duration = Duration::from_millis;

/// The Interest messages in `out`, by receiver.
fn interests(out: &Outbox) -> Vec<(NodeId, Option<u64>)> {
    let mut found: Vec<_> = out
        .sends
        .iter()
        .filter_map(|(to, m)| match m {
            Msg::Interest { from_seq } => Some((*to, *from_seq)),
            _ => None,
        })
        .collect();
    found.sort();
    found
}

/// Segments of the Haves sent to `to` in `out`.
fn haves_to(out: &Outbox, to: NodeId) -> Vec<u64> {
    out.sends
        .iter()
        .filter_map(|(t, m)| match m {
            Msg::Have { seq, .. } if *t == to => Some(*seq),
            _ => None,
        })
        .collect()
}

/// Delivers segment `seq`'s header and pieces (all, or none) at `at`.
fn deliver(p: &mut Peer, segs: &[(Msg, Vec<Msg>)], seq: usize, at: Time, pieces: bool, out: &mut Outbox) {
    let (header, ps) = &segs[seq];
    p.on_message(at, SOURCE, header.clone(), out);
    if pieces {
        for m in ps {
            p.on_message(at, SOURCE, m.clone(), out);
        }
    }
}

#[test]
fn a_viewer_its_parents_feed_asks_its_partners_to_stop_announcing_and_asks_again_when_a_push_is_overdue() {
    let b = Broadcaster::from_seed(5);
    // On the source's clock: segment k is made at 2k s and reaches the viewer at once.
    let t0 = Time::ZERO;
    let segs = segments(&b, VIEWER, 8);
    let mut out = Outbox::default();
    let mut p = welcomed(&b, VIEWER, t0, &mut out);
    p.on_message(t0, NodeId::TRACKER, assign(SOURCE, &[P1, P2]), &mut out);
    let mut asked_quiet_at = None;
    let mut quiet: Vec<(NodeId, Option<u64>)> = Vec::new();
    for k in 0..100u64 {
        let now = t0 + MS(100 * k);
        let mut out = Outbox::default();
        if k % 20 == 0 {
            deliver(&mut p, &segs, (k / 20) as usize, now, true, &mut out);
        }
        p.on_timer(now + MS(50), TICK, &mut out);
        let sent = interests(&out);
        if !sent.is_empty() {
            assert!(asked_quiet_at.is_none(), "asked twice: {sent:?}");
            asked_quiet_at = Some(now + MS(50));
            quiet = sent;
        }
    }
    // It starts at 4.25 s (the start delay) and is fed from then on: after the 4 s of
    // `quiet_maps_after` it asks each partner and the parent (whose maps it keeps), once.
    let started = p.playback().started_at.expect("playing");
    let at = asked_quiet_at.expect("partners asked to stop announcing");
    assert!(at >= started + MS(4000) && at <= started + MS(4200), "started {started:?}, asked at {at:?}");
    assert_eq!(quiet, vec![(SOURCE, None), (P1, None), (P2, None)]);
    let stats = p.stats(t0 + MS(10_000));
    assert!(stats.maps_quiet);
    assert_eq!(stats.decisions.push_late, 0, "{:?}", stats.decisions);
    assert!(stats.decisions.fed >= 40, "{:?}", stats.decisions);
    // Segment 5's header comes, its pieces do not: once their push wait (800 ms) is over
    // the viewer asks every partner for its maps from the segment it wants on, and does
    // not pull on that tick (its maps of the partners are stale).
    let header_at = t0 + MS(10_000);
    let mut out = Outbox::default();
    deliver(&mut p, &segs, 5, header_at, false, &mut out);
    let mut asked_again = None;
    for k in 1..=12u64 {
        let now = header_at + MS(100 * k);
        let mut out = Outbox::default();
        p.on_timer(now, TICK, &mut out);
        let sent = interests(&out);
        if !sent.is_empty() {
            assert!(sent.iter().all(|(_, from)| from.is_some_and(|s| s <= 5)), "{sent:?}");
            assert_eq!(sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(), vec![SOURCE, P1, P2]);
            assert!(!out.sends.iter().any(|(_, m)| matches!(m, Msg::Request { .. })), "pulled on stale maps");
            asked_again = Some(now);
            break;
        }
    }
    let at = asked_again.expect("partners asked for their maps again");
    assert!(at >= header_at + MS(800) && at <= header_at + MS(900), "asked again at {at:?}");
    // The stats say why: a push came late.
    let after = p.stats(at);
    assert!(!after.maps_quiet);
    assert_eq!(after.decisions.push_late, 1, "{:?}", after.decisions);
}

#[test]
fn a_partner_that_said_its_parents_feed_it_hears_no_haves_until_it_asks_again_and_then_every_map() {
    let b = Broadcaster::from_seed(6);
    let t0 = Time::from_millis(10_000);
    let segs = segments(&b, VIEWER, 4);
    let mut out = Outbox::default();
    let mut p = welcomed(&b, VIEWER, t0, &mut out);
    p.on_message(t0, NodeId::TRACKER, assign(SOURCE, &[P1, P2]), &mut out);
    deliver(&mut p, &segs, 0, t0, true, &mut out);
    let mut out = Outbox::default();
    p.on_timer(t0 + MS(100), TICK, &mut out);
    assert_eq!(haves_to(&out, P1), vec![0]);
    assert_eq!(haves_to(&out, P2), vec![0]);
    // P1's parents feed it.
    p.on_message(t0 + MS(200), P1, Msg::Interest { from_seq: None }, &mut out);
    let mut out = Outbox::default();
    deliver(&mut p, &segs, 1, t0 + MS(2000), true, &mut out);
    p.on_timer(t0 + MS(2100), TICK, &mut out);
    assert_eq!(haves_to(&out, P1), Vec::<u64>::new(), "told nothing while fed");
    assert_eq!(haves_to(&out, P2), vec![1]);
    // P1 is missing pieces again: it gets every map it was not told of at once, from the
    // segment it asked from, and the announcements from then on.
    let mut out = Outbox::default();
    p.on_message(t0 + MS(2200), P1, Msg::Interest { from_seq: Some(1) }, &mut out);
    assert_eq!(haves_to(&out, P1), vec![1]);
    let mut out = Outbox::default();
    deliver(&mut p, &segs, 2, t0 + MS(4000), true, &mut out);
    p.on_timer(t0 + MS(4100), TICK, &mut out);
    assert_eq!(haves_to(&out, P1), vec![2]);
    assert_eq!(haves_to(&out, P2), vec![2]);
}
