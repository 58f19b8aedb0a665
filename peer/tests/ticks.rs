//! How often a viewer ticks: every `tick` while it has something to decide or send, and
//! further apart, up to five ticks, while every missing piece is left to its parent's push.

mod common;

use common::{assign, segments, welcomed, SOURCE};
use meshtv_peer::Peer;
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use std::time::Duration;

const VIEWER: NodeId = NodeId(100);
const TICK: TimerId = TimerId(1);
const MS: fn(u64) -> Duration = Duration::from_millis;

/// When the handler that filled `out` set the tick to fire next, if it did.
fn next_tick(out: &Outbox) -> Option<Time> {
    out.timers.iter().rev().find(|(_, id)| *id == TICK).map(|(at, _)| *at)
}

/// A viewer with the source as parent on every stripe and segments 0 and 1 whole at
/// `t0` (it starts playing at its next tick), and segment 2 still to come.
fn with_two_segments(t0: Time) -> (Peer, std::vec::IntoIter<(Msg, Vec<Msg>)>) {
    let b = Broadcaster::from_seed(9);
    let mut segs = segments(&b, VIEWER, 3).into_iter();
    let mut out = Outbox::default();
    let mut p = welcomed(&b, VIEWER, t0, &mut out);
    p.on_message(t0, NodeId::TRACKER, assign(SOURCE, &[]), &mut out);
    for (header, pieces) in segs.by_ref().take(2) {
        p.on_message(t0, SOURCE, header, &mut out);
        for m in pieces {
            p.on_message(t0, SOURCE, m, &mut out);
        }
    }
    (p, segs)
}

#[test]
fn a_viewer_waiting_only_on_pushes_ticks_less_often_and_wakes_for_what_it_must_send() {
    let t0 = Time::from_millis(10_000);
    let (mut p, mut segs) = with_two_segments(t0);
    let mut out = Outbox::default();
    p.on_timer(t0 + MS(100), TICK, &mut out);
    assert!(p.playback().started());
    // Nothing missing: quiet for five ticks (the first announcement went out with this
    // tick, the next is due 600 ms later).
    assert_eq!(next_tick(&out), Some(t0 + MS(600)));
    // Segment 2's header: its pieces are left to the parent's push for 800 ms, so the
    // tick is not brought forward.
    let (header, mut pieces) = segs.next().unwrap();
    let mut out = Outbox::default();
    p.on_message(t0 + MS(200), SOURCE, header, &mut out);
    assert_eq!(next_tick(&out), None);
    // A piece of segment 2 from someone other than its parent: the parent must hear to
    // skip it, at the next tick, which comes back to one tick from now.
    let t = t0 + MS(350);
    let mut out = Outbox::default();
    p.on_message(t, NodeId(60), pieces.remove(0), &mut out);
    assert_eq!(next_tick(&out), Some(t + MS(100)));
    let mut out = Outbox::default();
    p.on_timer(t + MS(100), TICK, &mut out);
    assert!(out.sends.iter().any(|(to, m)| *to == SOURCE && matches!(m, Msg::Skip { seq: 2, .. })));
    assert_eq!(next_tick(&out), Some(t0 + MS(700)), "quiet again until the announcement");
    // After it, quiet until the push wait of segment 2 runs out (header + 800 ms).
    let mut out = Outbox::default();
    p.on_timer(t0 + MS(700), TICK, &mut out);
    assert_eq!(next_tick(&out), Some(t0 + MS(1000)));
    // A new parent wakes the tick.
    let mut out = Outbox::default();
    p.on_message(t0 + MS(750), NodeId::TRACKER, assign(NodeId(50), &[]), &mut out);
    assert_eq!(next_tick(&out), Some(t0 + MS(850)));
}

#[test]
fn a_quiet_viewer_still_ticks_within_five_ticks() {
    let t0 = Time::from_millis(10_000);
    let (mut p, _) = with_two_segments(t0);
    // Nothing missing at all: the tick waits for the announcement and heartbeat rhythm,
    // never longer than five ticks.
    let mut now = t0 + MS(100);
    for _ in 0..40 {
        let mut out = Outbox::default();
        p.on_timer(now, TICK, &mut out);
        let next = next_tick(&out).expect("the tick is always re-armed");
        assert!(next > now && next <= now + MS(500), "at {now:?}: next {next:?}");
        now = next;
    }
    assert!(now > t0 + MS(4000), "forty ticks cover more than forty tenths of a second");
}
