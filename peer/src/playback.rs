//! The viewer's playhead, modelled in the core so that startup time, stalls, continuity
//! and live delay are measured the same way in the simulator and in a real viewer (the
//! real player pulls the same segments from the gateway, in the same order).
//!
//! Playback starts when `start_segments` consecutive segments from the start segment are
//! complete. From then on segment `k` is due when segment `k-1` has played out; if it is
//! not complete by then, the player stalls until it is.

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
}

/// Most live-delay samples kept (about an hour of 2 s segments).
const DELAY_SAMPLES_MAX: usize = 2048;

impl Playback {
    pub fn new(joined_at: Time, start_segments: usize) -> Playback {
        Playback { joined_at, start_segments, ..Playback::default() }
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
            let last_needed = self.start_seq.map_or(seq, |s| s + self.start_segments.max(1) as u64 - 1);
            (now.max(self.joined_at + self.start_budget), last_needed.min(seq))
        }
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
        let first = if self.started() {
            Some(self.next_seq)
        } else {
            self.start_seq.map(|s| s + self.start_segments.max(1) as u64 - 1)
        };
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
        let start_segments = self.start_segments.max(1);
        if !self.started() {
            let Some(start) = self.start_seq else { return };
            let ready = (start..start + start_segments as u64)
                .map(|s| seg(s).and_then(|st| st.complete_at))
                .collect::<Option<Vec<_>>>();
            let Some(ready) = ready else { return };
            let at = ready.into_iter().max().unwrap_or(now).max(self.joined_at);
            self.started_at = Some(at);
            self.next_seq = start;
            self.next_due = at;
        }
        // Bounded: at most one step per segment that is due by `now`.
        loop {
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
            if self.live_delays_ms.len() < DELAY_SAMPLES_MAX {
                self.live_delays_ms.push(play_at.as_millis().saturating_sub(st.created_ms));
            }
            self.next_due = play_at + Duration::from_millis(st.duration_ms as u64);
            self.next_seq += 1;
        }
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
