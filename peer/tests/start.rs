//! Where a viewer starts playing: near the live edge while it can get there, and with what
//! it gathered once the swarm has shown it cannot. Without a start delay (the first two
//! tests), the newest segments; with one (the default), one segment behind, kept until it
//! would play later than the delay, and past that while it is still the one further along
//! (for at most a second).

mod common;

use common::{segments, welcomed_with};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use std::time::Duration;

const VIEWER: NodeId = NodeId(100);

/// The signed headers of segments `0..n`, as the source pushes them to a child.
fn headers(b: &Broadcaster, n: u64) -> Vec<Msg> {
    segments(b, VIEWER, n).into_iter().map(|(h, _)| h).collect()
}

/// A viewer that hears of segment 0 at once and of segments 1..=3 only `later`: where does
/// it plan to start?
fn start_after_news(later: Duration) -> Option<u64> {
    let b = Broadcaster::from_seed(9);
    let hs = headers(&b, 4);
    assert_eq!(hs.len(), 4);
    let t0 = Time::from_millis(10_000);
    let mut out = Outbox::default();
    let mut p = welcomed_with(&b, VIEWER, t0, &mut out, |c| c.start_delay = None);
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

#[test]
fn a_start_segment_half_here_is_kept_while_the_edge_is_one_segment_beyond_a_jump() {
    let b = Broadcaster::from_seed(9);
    let mut segs = segments(&b, VIEWER, 5).into_iter();
    let t0 = Time::from_millis(10_000);
    let mut out = Outbox::default();
    let mut p = welcomed_with(&b, VIEWER, t0, &mut out, |c| c.start_delay = None);
    let (header, pieces) = segs.next().unwrap();
    p.on_message(t0, NodeId(1), header, &mut out);
    for m in pieces.into_iter().take(4) {
        p.on_message(t0, NodeId(1), m, &mut out);
    }
    // Segments 1..=3 are announced: without half of segment 0 here, the start would move
    // to 2 (see above); with it, it stays.
    let t = t0 + Duration::from_millis(1000);
    for (header, _) in segs.by_ref().take(3) {
        p.on_message(t, NodeId(1), header, &mut out);
    }
    p.on_timer(t, TimerId(1), &mut out);
    assert_eq!(p.playback().start_seq, Some(0));
    // One more, and it would start two segments further behind than a jump: it moves.
    let (header, _) = segs.next().unwrap();
    p.on_message(t, NodeId(1), header, &mut out);
    p.on_timer(t + Duration::from_millis(100), TimerId(1), &mut out);
    assert_eq!(p.playback().start_seq, Some(3));
}

#[test]
fn with_a_start_delay_a_viewer_starts_one_behind_and_moves_on_only_once_that_is_late() {
    // Segment `s` is created at `2 s * s`.
    let b = Broadcaster::from_seed(9);
    let segs = segments(&b, VIEWER, 5);
    let (header, pieces): (Vec<Msg>, Vec<Vec<Msg>>) = segs.into_iter().unzip();
    for half_of_2_here in [false, true] {
        let t0 = Time::from_millis(7_000);
        let mut out = Outbox::default();
        let mut p = welcomed_with(&b, VIEWER, t0, &mut out, |c| c.start_delay = Some(Duration::from_millis(4500)));
        // The first header heard of is the newest, 3: the start is the one before.
        p.on_message(t0, NodeId(1), header[3].clone(), &mut out);
        assert_eq!(p.playback().start_seq, Some(2));
        p.on_message(t0, NodeId(1), header[2].clone(), &mut out);
        if half_of_2_here {
            for m in pieces[2].iter().take(4) {
                p.on_message(t0, NodeId(1), m.clone(), &mut out);
            }
        }
        // A newer segment comes, but 2 would still play within 4.5 s of its creation
        // (at 4 s): it is kept.
        let t = Time::from_millis(8_400);
        p.on_message(t, NodeId(1), header[4].clone(), &mut out);
        p.on_timer(t, TimerId(1), &mut out);
        assert_eq!(p.playback().start_seq, Some(2));
        // Past 8.5 s it would play later than that: it is given up for 3, unless half
        // of it is here.
        p.on_timer(Time::from_millis(8_600), TimerId(1), &mut out);
        assert_eq!(p.playback().start_seq, Some(if half_of_2_here { 2 } else { 3 }));
    }
}

#[test]
fn a_start_segment_whose_header_never_comes_is_given_up_once_the_next_one_says_it_is_late() {
    let b = Broadcaster::from_seed(9);
    let hs = headers(&b, 4);
    let t0 = Time::from_millis(7_000);
    let mut out = Outbox::default();
    let mut p = welcomed_with(&b, VIEWER, t0, &mut out, |c| c.start_delay = Some(Duration::from_millis(4500)));
    // It hears of 3 (created at 6 s) and 4 later, never of 2, its start.
    p.on_message(t0, NodeId(1), hs[3].clone(), &mut out);
    assert_eq!(p.playback().start_seq, Some(2));
    p.on_timer(Time::from_millis(8_400), TimerId(1), &mut out);
    assert_eq!(p.playback().start_seq, Some(2), "2 (created at 4 s, by 3's header) is not late yet");
    let late = Time::from_millis(8_600);
    p.on_message(late, NodeId(1), segments(&b, VIEWER, 5).swap_remove(4).0, &mut out);
    p.on_timer(late, TimerId(1), &mut out);
    assert_eq!(p.playback().start_seq, Some(3));
}

#[test]
fn a_late_start_segment_still_coming_is_kept_until_the_next_overtakes_it_or_a_second_passes() {
    // Segment `s` is created at `2 s * s` and has 8 pieces; with a 4.5 s delay, segment 2
    // is late from 8.5 s.
    let b = Broadcaster::from_seed(9);
    let (header, pieces): (Vec<Msg>, Vec<Vec<Msg>>) = segments(&b, VIEWER, 5).into_iter().unzip();
    assert_eq!(pieces[2].len(), 8);
    for next_overtakes in [false, true] {
        let t0 = Time::from_millis(7_000);
        let mut out = Outbox::default();
        let mut p = welcomed_with(&b, VIEWER, t0, &mut out, |c| c.start_delay = Some(Duration::from_millis(4500)));
        for h in [&header[3], &header[2], &header[4]] {
            p.on_message(t0, NodeId(1), h.clone(), &mut out);
        }
        assert_eq!(p.playback().start_seq, Some(2));
        // A quarter of 2 is here, none of 3: late, but still the one further along.
        for m in pieces[2].iter().take(2) {
            p.on_message(t0, NodeId(1), m.clone(), &mut out);
        }
        p.on_timer(Time::from_millis(8_600), TimerId(1), &mut out);
        assert_eq!(p.playback().start_seq, Some(2), "kept past its delay while 3 has less of itself here");
        if next_overtakes {
            let t = Time::from_millis(8_800);
            for m in pieces[3].iter().take(3) {
                p.on_message(t, NodeId(1), m.clone(), &mut out);
            }
            p.on_timer(t, TimerId(1), &mut out);
            assert_eq!(p.playback().start_seq, Some(3), "3 overtook it");
        } else {
            p.on_timer(Time::from_millis(9_400), TimerId(1), &mut out);
            assert_eq!(p.playback().start_seq, Some(2));
            // A second past its delay it is given up whatever the next one holds.
            p.on_timer(Time::from_millis(9_600), TimerId(1), &mut out);
            assert_eq!(p.playback().start_seq, Some(3));
        }
    }
}
