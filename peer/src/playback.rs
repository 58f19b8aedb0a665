//! The viewer's playhead, modelled in the core so that startup time, stalls, continuity
//! and live delay are measured the same way in the simulator and in a real viewer (the
//! real player pulls the same segments from the gateway, in the same order).
//!
//! Playback starts when `start_segments` consecutive segments from the start segment are
//! complete. From then on segment `k` is due when segment `k-1` has played out; if it is
//! not complete by then, the player stalls until it is.
//!
//! With a start delay, a player whose start segment is complete need not wait for the
//! others once it would already play that far behind the source: it starts then, with
//! one segment in hand. The delay is a floor as much as a shortcut: a player that started
//! nearer the source than the swarm delivers would fetch every segment from the source
//! for the rest of its session.
//!
//! A player that fell further behind the source than it needs to catches up the way live
//! players do (hls.js' `maxLiveSyncPlaybackRate`, dash.js' catch-up): while the segment it
//! plays is more than a target delay behind the source and the next one is already
//! complete, the rest of the segment plays faster. A viewer otherwise keeps, for its whole
//! session, the delay it started with, and in a young crowd that is the delay of a swarm
//! still building its trees.

use meshtv_proto::Time;
use std::time::Duration;

/// What the playhead needs to know about a segment.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegmentState {
    pub duration_ms: u32,
    pub size_bytes: u32,
    pub created_ms: u64,
    pub complete_at: Option<Time>,
}

#[derive(Debug, Default, Clone)]
pub struct Playback {
    pub joined_at: Time,
    /// First segment to play; chosen from the first header the viewer sees.
    pub start_seq: Option<u64>,
    /// Complete segments needed before playback starts.
    pub start_segments: usize,
    /// Once the start segment is complete, playback starts without the other start
    /// segments as soon as it would play this far behind the source, and not before that
    /// unless they are all here (see the module's doc).
    pub start_delay: Option<Duration>,
    /// Before playback, the start segments count as due this long after joining (not at
    /// once): the swarm gets a moment to bring them before the source is asked.
    pub start_budget: Duration,
    pub started_at: Option<Time>,
    /// The next segment to play and when it is due.
    pub next_seq: u64,
    pub next_due: Time,
    pub stalled_since: Option<Time>,
    pub stalls: u32,
    pub stalled_ms: u64,
    pub stall_ms_max: u64,
    pub played_segments: u64,
    pub played_bytes: u64,
    pub on_time_segments: u64,
    /// Live delay of each played segment (creation at the source → playback), ms; bounded.
    pub live_delays_ms: Vec<u64>,
    /// How the player catches up; `None`: it never does.
    pub catch_up: Option<CatchUp>,
    /// When the segment now playing (`next_seq - 1`) started, and its live delay then.
    playing_since: Time,
    playing_delay_ms: u64,
    /// Whether the segment now playing was already sped up.
    sped: bool,
    /// Media time saved by playing faster, ms.
    pub caught_up_ms: u64,
}

/// Faster playback for a player that is behind: see the module's doc.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct CatchUp {
    /// Segments that play more than this behind the source may be sped up.
    pub above: Duration,
    /// Playback rate while catching up (above 1).
    pub rate: f64,
}

/// Most live-delay samples kept (about an hour of 2 s segments).
const DELAY_SAMPLES_MAX: usize = 2048;

impl Playback {
    pub fn new(joined_at: Time, start_segments: usize) -> Playback {
        Playback { joined_at, start_segments, ..Playback::default() }
    }

    /// The same, starting as `start_delay` says.
    pub fn with_start_delay(mut self, start_delay: Option<Duration>) -> Playback {
        self.start_delay = start_delay;
        self
    }

    /// The same, catching up as `catch_up` says.
    pub fn with_catch_up(mut self, catch_up: Option<CatchUp>) -> Playback {
        self.catch_up = catch_up.filter(|c| c.rate > 1.0);
        self
    }

    pub fn started(&self) -> bool {
        self.started_at.is_some()
    }

    pub fn startup(&self) -> Option<Duration> {
        self.started_at.map(|t| t.since(self.joined_at))
    }

    /// Watch time so far: from the start of playback to `now`.
    pub fn watch_ms(&self, now: Time) -> u64 {
        self.started_at.map_or(0, |t| now.since(t).as_millis() as u64)
    }

    /// Segment the playhead is waiting for, or the start segment before playback.
    pub fn wanted_from(&self) -> Option<u64> {
        if self.started() {
            Some(self.next_seq)
        } else {
            self.start_seq
        }
    }

    /// The time segment `seq` is due, estimating durations of segments not yet known
    /// with `default_ms`. Before playback starts, `now` stands for the start.
    pub fn due(&self, seq: u64, now: Time, default_ms: u32, seg: impl Fn(u64) -> Option<SegmentState>) -> Time {
        let (mut at, from) = self.anchor(now, seq);
        for s in from..seq {
            let ms = seg(s).map_or(default_ms, |st| st.duration_ms);
            at = at + Duration::from_millis(ms as u64);
        }
        at
    }

    /// The segment from which due times are counted, and its due time. Before playback
    /// the segments it needs to start are all due at the end of the start budget (or now,
    /// once it is spent): nothing plays until they are in, so they are as urgent as a
    /// stall.
    fn anchor(&self, now: Time, seq: u64) -> (Time, u64) {
        if self.started() {
            (self.next_due.max(self.stalled_since.map_or(Time::ZERO, |_| now)), self.next_seq)
        } else {
            let last_needed = self.start_seq.map_or(seq, |s| s + self.start_needed() - 1);
            (now.max(self.joined_at + self.start_budget), last_needed.min(seq))
        }
    }

    /// Start segments as urgent as a stall: all of them, or with a start delay only the
    /// first (the others are due as it plays out, which is when a start by the delay
    /// needs them).
    fn start_needed(&self) -> u64 {
        if self.start_delay.is_some() {
            1
        } else {
            self.start_segments.max(1) as u64
        }
    }

    /// When playback can start at `start`, if it can yet: see the module's doc.
    fn start_time(&self, start: u64, seg: &impl Fn(u64) -> Option<SegmentState>) -> Option<Time> {
        let all = (start..start + self.start_segments.max(1) as u64)
            .try_fold(Time::ZERO, |latest, s| Some(latest.max(seg(s)?.complete_at?)));
        let at = match self.start_delay {
            None => all?,
            Some(delay) => {
                let first = seg(start)?;
                let done = first.complete_at?;
                let by_delay = done.max(Time::from_millis(first.created_ms) + delay);
                all.map_or(by_delay, |all| all.min(by_delay))
            }
        };
        Some(at.max(self.joined_at))
    }

    /// [`Playback::due`] of each of `seqs` (ascending), in one pass over the segments
    /// between them rather than one pass per segment.
    pub fn due_each(
        &self,
        seqs: &[u64],
        now: Time,
        default_ms: u32,
        seg: impl Fn(u64) -> Option<SegmentState>,
    ) -> Vec<Time> {
        let mut out = Vec::with_capacity(seqs.len());
        // `due` sums durations from a fixed first segment; a running sum is the same thing
        // from there on, but not before it (where `due` does not sum at all).
        let first =
            if self.started() { Some(self.next_seq) } else { self.start_seq.map(|s| s + self.start_needed() - 1) };
        let mut cursor: Option<(u64, Time)> = None;
        for &seq in seqs {
            let at = match cursor {
                Some((from, at)) if from <= seq && first.is_some_and(|f| from >= f) => {
                    let mut at = at;
                    for s in from..seq {
                        at = at + Duration::from_millis(seg(s).map_or(default_ms, |st| st.duration_ms) as u64);
                    }
                    at
                }
                _ => self.due(seq, now, default_ms, &seg),
            };
            cursor = Some((seq, at));
            out.push(at);
        }
        out
    }

    /// Advances the playhead to `now`. `seg(seq)` describes the buffer's segments.
    pub fn advance(&mut self, now: Time, seg: impl Fn(u64) -> Option<SegmentState>) {
        if !self.started() {
            let Some(start) = self.start_seq else { return };
            // Later than `now` only when waiting for the start delay.
            let Some(at) = self.start_time(start, &seg).filter(|&at| at <= now) else { return };
            self.started_at = Some(at);
            self.next_seq = start;
            self.next_due = at;
        }
        // Bounded: at most one step per segment that is due by `now`.
        loop {
            self.catch_up(&seg);
            let Some(st) = seg(self.next_seq) else {
                if now > self.next_due && self.stalled_since.is_none() {
                    self.stalled_since = Some(self.next_due);
                }
                return;
            };
            let Some(done) = st.complete_at else {
                if now > self.next_due && self.stalled_since.is_none() {
                    self.stalled_since = Some(self.next_due);
                }
                return;
            };
            if self.next_due > now {
                return;
            }
            let play_at = if done > self.next_due {
                let stall = done.since(self.next_due).as_millis() as u64;
                self.stalls += 1;
                self.stalled_ms += stall;
                self.stall_ms_max = self.stall_ms_max.max(stall);
                done
            } else {
                self.on_time_segments += 1;
                self.next_due
            };
            if play_at > now {
                return;
            }
            self.stalled_since = None;
            self.played_segments += 1;
            self.played_bytes += st.size_bytes as u64;
            let delay_ms = play_at.as_millis().saturating_sub(st.created_ms);
            if self.live_delays_ms.len() < DELAY_SAMPLES_MAX {
                self.live_delays_ms.push(delay_ms);
            }
            self.next_due = play_at + Duration::from_millis(st.duration_ms as u64);
            self.next_seq += 1;
            (self.playing_since, self.playing_delay_ms, self.sped) = (play_at, delay_ms, false);
        }
    }

    /// Speeds up the rest of the segment now playing if it plays more than the target
    /// behind the source and the next one came before it ends: from then on (or from its
    /// start, if the next one was already here) it plays at the catch-up rate. Only what
    /// the player knew at that moment decides, so a real player can do the same.
    fn catch_up(&mut self, seg: &impl Fn(u64) -> Option<SegmentState>) {
        let Some(c) = self.catch_up else { return };
        if self.sped || self.played_segments == 0 || self.playing_delay_ms <= c.above.as_millis() as u64 {
            return;
        }
        let Some(here) = seg(self.next_seq).and_then(|n| n.complete_at) else { return };
        if here >= self.next_due {
            return;
        }
        let from = here.max(self.playing_since);
        let left = self.next_due.since(from);
        let faster = Duration::from_secs_f64(left.as_secs_f64() / c.rate);
        self.next_due = from + faster;
        self.caught_up_ms += (left - faster).as_millis() as u64;
        self.sped = true;
    }

    /// Buffered media ahead of the playhead, in ms (complete consecutive segments).
    pub fn buffer_ms(&self, now: Time, seg: impl Fn(u64) -> Option<SegmentState>) -> u64 {
        let Some(mut s) = self.wanted_from() else { return 0 };
        let mut ms = 0u64;
        while let Some(st) = seg(s).filter(|st| st.complete_at.is_some()) {
            ms += st.duration_ms as u64;
            s += 1;
        }
        if self.started() {
            // Part of the current segment has already played.
            let elapsed_in_due = now.since(self.next_due).as_millis() as u64;
            if self.stalled_since.is_none() && now < self.next_due {
                ms += self.next_due.since(now).as_millis() as u64;
            } else {
                ms = ms.saturating_sub(elapsed_in_due.min(ms));
            }
        }
        ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn seg(complete_ms: u64) -> SegmentState {
        SegmentState {
            duration_ms: 2000,
            size_bytes: 100,
            created_ms: 0,
            complete_at: Some(Time::from_millis(complete_ms)),
        }
    }

    #[test]
    fn starts_when_enough_is_buffered_then_plays_on_time() {
        let mut segs = BTreeMap::new();
        let mut p = Playback::new(Time::from_millis(0), 2);
        p.start_seq = Some(10);
        segs.insert(10, seg(500));
        p.advance(Time::from_millis(600), |s| segs.get(&s).copied());
        assert!(!p.started());
        segs.insert(11, seg(900));
        p.advance(Time::from_millis(1000), |s| segs.get(&s).copied());
        assert_eq!(p.startup(), Some(Duration::from_millis(900)));
        assert_eq!(p.played_segments, 1);
        segs.insert(12, seg(2000));
        p.advance(Time::from_millis(5000), |s| segs.get(&s).copied());
        assert_eq!(p.played_segments, 3);
        assert_eq!(p.stalls, 0);
        assert_eq!(p.on_time_segments, 3);
        assert_eq!(p.next_seq, 13);
        assert_eq!(p.next_due, Time::from_millis(6900));
    }

    #[test]
    fn with_a_start_delay_one_segment_starts_once_that_far_behind_unless_all_are_here() {
        let created = |seq: u64, complete_ms: u64| SegmentState { created_ms: seq * 2000, ..seg(complete_ms) };
        let delayed = || {
            let mut p = Playback::new(Time::from_millis(21_000), 2).with_start_delay(Some(Duration::from_millis(4500)));
            p.start_seq = Some(10);
            p
        };
        // Segment 10 (created at 20 s) here at 22 s, 11 never: playback starts at 24.5 s,
        // 4.5 s behind the source, not before.
        let mut segs = BTreeMap::new();
        segs.insert(10, created(10, 22_000));
        let mut p = delayed();
        p.advance(Time::from_millis(24_400), |s| segs.get(&s).copied());
        assert!(!p.started());
        p.advance(Time::from_millis(24_600), |s| segs.get(&s).copied());
        assert_eq!(p.startup(), Some(Duration::from_millis(3500)));
        assert_eq!(p.live_delays_ms, vec![4500]);
        // Both start segments here before that: it starts when the second came, as
        // without a start delay.
        segs.insert(11, created(11, 23_000));
        let mut p = delayed();
        p.advance(Time::from_millis(23_100), |s| segs.get(&s).copied());
        assert_eq!(p.startup(), Some(Duration::from_millis(2000)));
        // Without a start delay, the lone segment never starts playback.
        segs.remove(&11);
        let mut p = delayed().with_start_delay(None);
        p.advance(Time::from_millis(30_000), |s| segs.get(&s).copied());
        assert!(!p.started());
    }

    #[test]
    fn due_each_equals_due_one_by_one() {
        let mut segs = BTreeMap::new();
        for (s, ms) in [(10u64, 2000u32), (11, 1500), (13, 2500), (14, 1000)] {
            segs.insert(s, SegmentState { duration_ms: ms, ..seg(0) });
        }
        let mut p = Playback::new(Time::ZERO, 1);
        p.start_seq = Some(10);
        for started in [false, true] {
            if started {
                p.advance(Time::from_millis(100), |s| segs.get(&s).copied());
                assert!(p.started());
            }
            let seqs = [10, 11, 13, 14, 16];
            let each = p.due_each(&seqs, Time::from_millis(700), 2000, |s| segs.get(&s).copied());
            let one: Vec<Time> =
                seqs.iter().map(|&q| p.due(q, Time::from_millis(700), 2000, |s| segs.get(&s).copied())).collect();
            assert_eq!(each, one);
        }
    }

    #[test]
    fn before_playback_every_segment_needed_to_start_is_due_now() {
        let segs: BTreeMap<u64, SegmentState> = BTreeMap::new();
        let mut p = Playback::new(Time::ZERO, 2);
        p.start_seq = Some(5);
        let now = Time::from_millis(3000);
        let due = |q| p.due(q, now, 2000, |s| segs.get(&s).copied());
        assert_eq!(due(5), now);
        assert_eq!(due(6), now, "the second start segment is as urgent as the first");
        assert_eq!(due(7), now + Duration::from_millis(2000));
    }

    /// A player that starts segment 0 (created at `created_ms`, 2 s long) at 7 s, with
    /// segment 1 complete at `next_at_ms` (if at all), looked at again at `now_ms`.
    fn behind(
        catch_up: Option<CatchUp>,
        created_ms: u64,
        next_at_ms: Option<u64>,
        now_ms: u64,
    ) -> (Playback, BTreeMap<u64, SegmentState>) {
        let mut segs = BTreeMap::new();
        let mut p = Playback::new(Time::ZERO, 1).with_catch_up(catch_up);
        p.start_seq = Some(0);
        segs.insert(0, SegmentState { created_ms, ..seg(7000) });
        p.advance(Time::from_millis(7000), |s| segs.get(&s).copied());
        if let Some(at) = next_at_ms {
            segs.insert(1, SegmentState { created_ms: created_ms + 2000, ..seg(at) });
        }
        p.advance(Time::from_millis(now_ms), |s| segs.get(&s).copied());
        (p, segs)
    }

    const CATCH_UP: Option<CatchUp> = Some(CatchUp { above: Duration::from_secs(5), rate: 1.25 });

    #[test]
    fn a_player_behind_its_target_plays_faster_once_the_next_segment_is_here() {
        // Segment 1 already here when segment 0 starts, 7 s behind the source: all of
        // segment 0 at 1.25x.
        let (p, _) = behind(CATCH_UP, 0, Some(7000), 7000);
        assert_eq!((p.next_due, p.caught_up_ms), (Time::from_millis(8600), 400));
        // Segment 1 comes 1 s into segment 0: only the second second is faster.
        let (mut p, segs) = behind(CATCH_UP, 0, Some(8000), 8100);
        assert_eq!((p.next_due, p.caught_up_ms), (Time::from_millis(8800), 200));
        // So segment 1 plays 6.8 s behind the source instead of 7 s.
        p.advance(Time::from_millis(8800), |s| segs.get(&s).copied());
        assert_eq!(p.live_delays_ms, vec![7000, 6800]);
        assert_eq!(p.stalls, 0);
    }

    #[test]
    fn no_catch_up_within_the_target_without_the_next_segment_or_when_off() {
        let at_rate = |(p, _): (Playback, _)| (p.next_due, p.caught_up_ms);
        let unchanged = (Time::from_millis(9000), 0);
        // 4 s behind the source: within the 5 s target.
        assert_eq!(at_rate(behind(CATCH_UP, 3000, Some(7000), 7000)), unchanged);
        // Segment 1 not here yet, near the end of segment 0.
        assert_eq!(at_rate(behind(CATCH_UP, 0, None, 8900)), unchanged);
        assert_eq!(at_rate(behind(None, 0, Some(7000), 7000)), unchanged);
        let one = Some(CatchUp { rate: 1.0, ..CATCH_UP.unwrap() });
        assert_eq!(at_rate(behind(one, 0, Some(7000), 7000)), unchanged);
    }

    #[test]
    fn a_late_segment_is_a_stall_of_exactly_its_lateness() {
        let mut segs = BTreeMap::new();
        let mut p = Playback::new(Time::ZERO, 1);
        p.start_seq = Some(0);
        segs.insert(0, seg(0));
        p.advance(Time::from_millis(100), |s| segs.get(&s).copied());
        // Segment 1 is due at 2000 but arrives at 2700.
        p.advance(Time::from_millis(2500), |s| segs.get(&s).copied());
        assert_eq!(p.stalled_since, Some(Time::from_millis(2000)));
        segs.insert(1, seg(2700));
        p.advance(Time::from_millis(2800), |s| segs.get(&s).copied());
        assert_eq!((p.stalls, p.stalled_ms, p.stall_ms_max), (1, 700, 700));
        assert_eq!(p.played_segments, 2);
        assert_eq!(p.next_due, Time::from_millis(4700));
        assert_eq!(p.stalled_since, None);
    }
}
