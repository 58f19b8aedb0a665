//! The HLS media playlist, written from the segments the peer holds.
//!
//! A pure function of its input so the exact text players see can be unit-tested
//! without a server.

use std::fmt::Write as _;

/// How many segments a live playlist lists when the caller has no better idea: three
/// for hls.js' `liveSyncDurationCount` plus room for a late refresh.
pub const LIVE_WINDOW_DEFAULT: usize = 6;

/// One complete, verified segment as the gateway lists it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PlaylistEntry {
    pub seq: u64,
    pub duration_ms: u32,
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
pub fn media_playlist(entries: &[PlaylistEntry], window: usize, live: bool) -> String {
    let listed = if live { newest_run(entries, window.max(1)) } else { oldest_run(entries) };

    // TARGETDURATION must be at least every EXTINF rounded; the ceiling always is.
    let max_ms = listed.iter().map(|e| u64::from(e.duration_ms)).max().unwrap_or(0);
    let target_s = max_ms.div_ceil(1000).max(1);
    let first = listed.first().map_or(0, |e| e.seq);

    let mut text = String::with_capacity(96 + listed.len() * 32);
    text.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
    // Writing into a String cannot fail.
    let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target_s}");
    let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{first}");
    for e in listed {
        let _ = writeln!(text, "#EXTINF:{}.{:03},", e.duration_ms / 1000, e.duration_ms % 1000);
        let _ = writeln!(text, "{}.ts", e.seq);
    }
    if !live {
        text.push_str("#EXT-X-ENDLIST\n");
    }
    text
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
        seqs.into_iter().map(|seq| PlaylistEntry { seq, duration_ms }).collect()
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
        let list = vec![PlaylistEntry { seq: 0, duration_ms: 2001 }, PlaylistEntry { seq: 1, duration_ms: 999 }];
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
}
