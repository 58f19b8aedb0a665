//! The HLS media playlist, written from the segments the peer holds.
//!
//! A pure function of its input so the exact text players see can be unit-tested
//! without a server.

use std::fmt::Write as _;

/// How many segments a live playlist lists when the caller has no better idea: three
/// for hls.js' `liveSyncDurationCount` plus room for a late refresh.
pub const LIVE_WINDOW_DEFAULT: usize = 6;

/// A jump in the source's clock between two consecutive segments larger than this,
/// beyond the later segment's own duration, means the stream did not simply go on (an
/// input that paused, a source that restarted): the playlist marks a discontinuity.
pub const DISCONTINUITY_GAP_MS: u64 = 10_000;

/// One complete, verified segment as the gateway lists it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PlaylistEntry {
    pub seq: u64,
    pub duration_ms: u32,
    /// When the source finished the segment, in milliseconds since the Unix epoch (the
    /// signed header's `created_ms`), if known. Gives `#EXT-X-PROGRAM-DATE-TIME` (the
    /// segment's start: this minus its duration) and reveals discontinuities.
    pub created_ms: Option<u64>,
}

impl PlaylistEntry {
    /// Wall-clock start of the segment's media, in ms since the epoch.
    fn start_ms(&self) -> Option<u64> {
        self.created_ms.map(|c| c.saturating_sub(u64::from(self.duration_ms)))
    }
}

/// Whether `cur`, following `prev` in sequence, starts a discontinuity: the source's
/// clock went backwards between them, or jumped well beyond `cur`'s duration.
pub fn starts_discontinuity(prev: &PlaylistEntry, cur: &PlaylistEntry) -> bool {
    match (prev.created_ms, cur.created_ms) {
        (Some(a), Some(b)) => b < a || b - a > u64::from(cur.duration_ms).saturating_add(DISCONTINUITY_GAP_MS),
        _ => false,
    }
}

/// The sequence numbers of segments that start a discontinuity, remembered across
/// playlist requests so that `#EXT-X-DISCONTINUITY-SEQUENCE` keeps counting the ones that
/// slid out of the window (and out of the peer's buffer). Bounded: the oldest are only
/// counted once more than [`DiscontinuityLog::KEPT`] are known.
#[derive(Debug, Default)]
pub struct DiscontinuityLog {
    seqs: std::collections::BTreeSet<u64>,
    forgotten: u64,
}

impl DiscontinuityLog {
    const KEPT: usize = 1024;

    /// Records the discontinuities among `entries` (consecutive pairs only).
    pub fn note(&mut self, entries: &[PlaylistEntry]) {
        for w in entries.windows(2) {
            if w[0].seq.checked_add(1) == Some(w[1].seq) && starts_discontinuity(&w[0], &w[1]) {
                self.seqs.insert(w[1].seq);
            }
        }
        while self.seqs.len() > Self::KEPT {
            self.seqs.pop_first();
            self.forgotten += 1;
        }
    }

    /// Discontinuities that start at or before `seq`.
    pub fn up_to(&self, seq: u64) -> u64 {
        self.forgotten + self.seqs.range(..=seq).count() as u64
    }

    /// Whether a discontinuity starts at `seq`.
    pub fn starts_at(&self, seq: u64) -> bool {
        self.seqs.contains(&seq)
    }
}

/// The HLS media playlist text.
///
/// Live (`live == true`): a sliding window of the last `window` entries (at least one),
/// without ENDLIST, so players keep refreshing it. On-demand (`live == false`): every
/// entry and `#EXT-X-ENDLIST`, so players know the video ends there and may seek in it.
///
/// HLS numbers segments implicitly (MEDIA-SEQUENCE plus position), so a gap in `seq`
/// would make players misnumber everything after it. The trait promises contiguous
/// entries; should a gap slip through anyway, only the contiguous run that players
/// need is listed: the newest one for live, the one from the start for on-demand.
///
/// Each segment whose creation time is known gets `#EXT-X-PROGRAM-DATE-TIME` (its start
/// on the source's clock), and one that [`starts_discontinuity`] gets
/// `#EXT-X-DISCONTINUITY`. This function sees only `entries`; [`media_playlist_with`]
/// takes a [`DiscontinuityLog`] that remembers discontinuities across requests.
pub fn media_playlist(entries: &[PlaylistEntry], window: usize, live: bool) -> String {
    let mut log = DiscontinuityLog::default();
    log.note(entries);
    media_playlist_with(entries, window, live, &log)
}

/// [`media_playlist`] with the discontinuities of `log` (which the caller has updated with
/// `entries`): `#EXT-X-DISCONTINUITY` before each listed segment that starts one, and
/// `#EXT-X-DISCONTINUITY-SEQUENCE` counting those before the first listed segment.
pub fn media_playlist_with(entries: &[PlaylistEntry], window: usize, live: bool, log: &DiscontinuityLog) -> String {
    let listed = if live { newest_run(entries, window.max(1)) } else { oldest_run(entries) };

    // TARGETDURATION must be at least every EXTINF rounded; the ceiling always is.
    let max_ms = listed.iter().map(|e| u64::from(e.duration_ms)).max().unwrap_or(0);
    let target_s = max_ms.div_ceil(1000).max(1);
    let first = listed.first().map_or(0, |e| e.seq);
    // Discontinuities that started before the first listed segment (one that starts at
    // the first listed segment itself keeps its tag there).
    let before = first.checked_sub(1).map_or(0, |s| log.up_to(s));

    let mut text = String::with_capacity(96 + listed.len() * 72);
    text.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
    // Writing into a String cannot fail.
    let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target_s}");
    let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{first}");
    if before > 0 {
        let _ = writeln!(text, "#EXT-X-DISCONTINUITY-SEQUENCE:{before}");
    }
    for e in listed {
        if log.starts_at(e.seq) {
            text.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(start) = e.start_ms() {
            let _ = writeln!(text, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_ms(start));
        }
        let _ = writeln!(text, "#EXTINF:{}.{:03},", e.duration_ms / 1000, e.duration_ms % 1000);
        let _ = writeln!(text, "{}.ts", e.seq);
    }
    if !live {
        text.push_str("#EXT-X-ENDLIST\n");
    }
    text
}

/// `ms` since the Unix epoch as an ISO 8601 UTC date-time with milliseconds, the form
/// `#EXT-X-PROGRAM-DATE-TIME` takes: `2024-02-29T23:59:59.999Z`.
pub fn iso8601_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days, on unsigned days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// The last at most `window` entries that follow each other without a gap.
fn newest_run(entries: &[PlaylistEntry], window: usize) -> &[PlaylistEntry] {
    let tail = &entries[entries.len().saturating_sub(window)..];
    let start = tail.windows(2).rposition(|w| w[0].seq.checked_add(1) != Some(w[1].seq)).map_or(0, |i| i + 1);
    &tail[start..]
}

/// The entries from the first one up to the first gap.
fn oldest_run(entries: &[PlaylistEntry]) -> &[PlaylistEntry] {
    let end =
        entries.windows(2).position(|w| w[0].seq.checked_add(1) != Some(w[1].seq)).map_or(entries.len(), |i| i + 1);
    &entries[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(seqs: impl IntoIterator<Item = u64>, duration_ms: u32) -> Vec<PlaylistEntry> {
        seqs.into_iter().map(|seq| PlaylistEntry { seq, duration_ms, created_ms: None }).collect()
    }

    #[test]
    fn live_lists_a_sliding_window_without_endlist() {
        let mut list = entries(0..10, 2000);
        list[8].duration_ms = 2040;
        list[9].duration_ms = 1960;
        let text = media_playlist(&list, 3, true);
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXTINF:2.000,\n7.ts\n#EXTINF:2.040,\n8.ts\n#EXTINF:1.960,\n9.ts\n"
        );
    }

    #[test]
    fn live_with_fewer_entries_than_the_window_lists_them_all() {
        let text = media_playlist(&entries(40..42, 2000), LIVE_WINDOW_DEFAULT, true);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:40\n"));
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"));
        assert_eq!(text.matches("#EXTINF").count(), 2);
        assert!(!text.contains("ENDLIST"));
    }

    #[test]
    fn on_demand_lists_everything_and_ends() {
        let text = media_playlist(&entries(0..8, 4000), 3, false);
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert_eq!(text.matches("#EXTINF:4.000,\n").count(), 8);
        assert!(text.contains("\n7.ts\n"));
        assert!(text.ends_with("7.ts\n#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn target_duration_is_the_ceiling_of_the_longest_segment() {
        let list = vec![
            PlaylistEntry { seq: 0, duration_ms: 2001, created_ms: None },
            PlaylistEntry { seq: 1, duration_ms: 999, created_ms: None },
        ];
        let text = media_playlist(&list, 6, true);
        assert!(text.contains("#EXT-X-TARGETDURATION:3\n"));
        assert!(text.contains("#EXTINF:0.999,\n"));
    }

    #[test]
    fn a_gap_never_reaches_the_player() {
        let mut list = entries(0..3, 2000);
        list.extend(entries(5..7, 2000));
        let live = media_playlist(&list, 6, true);
        assert!(live.contains("#EXT-X-MEDIA-SEQUENCE:5\n"));
        assert_eq!(live.matches("#EXTINF").count(), 2);
        let vod = media_playlist(&list, 6, false);
        assert!(vod.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert_eq!(vod.matches("#EXTINF").count(), 3);
    }

    #[test]
    fn edge_cases_stay_well_formed() {
        let empty = media_playlist(&[], 6, true);
        assert_eq!(empty, "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n");
        let zero_window = media_playlist(&entries(0..3, 2000), 0, true);
        assert_eq!(zero_window.matches("#EXTINF").count(), 1);
        let top = media_playlist(&entries([u64::MAX - 1, u64::MAX], 2000), 6, true);
        assert!(top.contains(&format!("{}.ts\n", u64::MAX)));
    }

    /// Entries created every `duration_ms` from `t0`, as a live source makes them.
    fn timed(seqs: std::ops::Range<u64>, duration_ms: u32, t0: u64) -> Vec<PlaylistEntry> {
        seqs.map(|seq| PlaylistEntry { seq, duration_ms, created_ms: Some(t0 + (seq + 1) * u64::from(duration_ms)) })
            .collect()
    }

    #[test]
    fn dates_are_iso_8601_utc() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(iso8601_ms(1_709_251_200_123), "2024-03-01T00:00:00.123Z");
        assert_eq!(iso8601_ms(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        // Far future stays well-formed rather than panicking.
        assert!(iso8601_ms(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn every_segment_carries_its_program_date_time() {
        // 2024-03-01T00:00:00.000Z; segment 0 finished 2 s later, so it started at t0.
        let t0 = 1_709_251_200_000;
        let text = media_playlist(&timed(0..3, 2000, t0), 6, true);
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PROGRAM-DATE-TIME:2024-03-01T00:00:00.000Z\n#EXTINF:2.000,\n0.ts\n\
             #EXT-X-PROGRAM-DATE-TIME:2024-03-01T00:00:02.000Z\n#EXTINF:2.000,\n1.ts\n\
             #EXT-X-PROGRAM-DATE-TIME:2024-03-01T00:00:04.000Z\n#EXTINF:2.000,\n2.ts\n"
        );
        assert!(!text.contains("DISCONTINUITY"));
    }

    #[test]
    fn a_jump_of_the_source_clock_is_a_discontinuity_counted_after_it_slides_out() {
        let t0 = 1_709_251_200_000;
        let mut list = timed(0..4, 2000, t0);
        // The input paused a minute before segment 4; segment 6's clock went backwards.
        list.extend(timed(4..6, 2000, t0 + 60_000));
        list.push(PlaylistEntry { seq: 6, duration_ms: 2000, created_ms: Some(t0 + 1000) });
        let mut log = DiscontinuityLog::default();
        log.note(&list);
        let text = media_playlist_with(&list, 6, true, &log);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("DISCONTINUITY-SEQUENCE"), "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 2, "{text}");
        assert!(text
            .contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2024-03-01T00:01:08.000Z\n#EXTINF:2.000,\n4.ts"));
        // Later the buffer no longer holds 0..5: the log still counts what slid out.
        let later: Vec<PlaylistEntry> = list[5..].to_vec();
        log.note(&later);
        let text = media_playlist_with(&later, 1, true, &log);
        // Segment 6 keeps its tag as the first listed, so it is still the second one.
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:6\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-DISCONTINUITY\n"),
            "{text}"
        );
        // Normal jitter in when segments are finished is no discontinuity.
        let mut jitter = timed(0..3, 2000, t0);
        jitter[1].created_ms = jitter[1].created_ms.map(|c| c + 1500);
        assert!(!media_playlist(&jitter, 6, true).contains("DISCONTINUITY"));
    }
}
