//! Making a channel's segments one continuous MPEG-TS stream.
//!
//! Each segment comes from a fresh muxer (see `segmenter`), so on its own every PID's
//! continuity counter starts again at 0 and the first packets are SDT, PAT, PMT. A player
//! that reads the playlist's segments as one stream (FFmpeg's and mpv's HLS demuxers, VLC)
//! then sees a counter jump at every boundary and reports a corrupt packet or a TS
//! discontinuity. [`Continuity::apply`] fixes both, before the source signs the segment:
//! it moves the PAT and the PMT to the front, and shifts each PID's counters so that they
//! go on from where the previous segment left them. Within a segment the muxer's own
//! counters are kept as they are (only shifted), so anything the muxer meant by them
//! (a repeated packet, an adaptation-only packet keeping its counter) still holds.
//!
//! Pure and allocation-free on the bytes: it is tested on synthetic packets.

/// Every MPEG-TS packet is this long and starts with [`SYNC`].
pub(crate) const PACKET: usize = 188;
const SYNC: u8 = 0x47;
const PID_PAT: u16 = 0;
const PID_SDT: u16 = 0x11;
const PID_NULL: u16 = 0x1fff;
const PIDS: usize = 0x2000;

/// Why a segment's bytes are not a stream of MPEG-TS packets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TsError {
    #[error("{0} bytes is not a whole number of 188-byte MPEG-TS packets")]
    Length(usize),
    #[error("MPEG-TS packet {0} does not start with the sync byte")]
    Sync(usize),
}

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// Whether the packet carries a payload (adaptation_field_control 01 or 11): only those
/// advance the continuity counter (ISO/IEC 13818-1, 2.4.3.3).
fn has_payload(p: &[u8]) -> bool {
    p[3] & 0x10 != 0
}

fn check(data: &[u8]) -> Result<(), TsError> {
    if data.len() % PACKET != 0 {
        return Err(TsError::Length(data.len()));
    }
    match data.chunks_exact(PACKET).position(|p| p[0] != SYNC) {
        Some(i) => Err(TsError::Sync(i)),
        None => Ok(()),
    }
}

/// Continuity counters of one channel, carried from segment to segment.
pub(crate) struct Continuity {
    /// Per PID: the counter the next payload-carrying packet must have; `None` until the
    /// PID has been seen.
    next: Box<[Option<u8>; PIDS]>,
}

impl Default for Continuity {
    fn default() -> Self {
        Continuity { next: Box::new([None; PIDS]) }
    }
}

impl Continuity {
    /// Rewrites `segment` (a complete MPEG-TS segment, in order) in place: PAT and PMT
    /// first, and every PID's continuity counters continuing the previous segments'.
    /// On error the bytes are left untouched.
    pub(crate) fn apply(&mut self, segment: &mut [u8]) -> Result<(), TsError> {
        check(segment)?;
        tables_first(segment);
        // Per PID, the shift (mod 16) applied to this segment's counters, fixed at the
        // PID's first packet here.
        let mut shift: Box<[Option<u8>; PIDS]> = Box::new([None; PIDS]);
        for p in segment.chunks_exact_mut(PACKET) {
            let pid = usize::from(pid(p));
            if pid == usize::from(PID_NULL) {
                continue; // null packets' counters mean nothing
            }
            let cc = p[3] & 0x0f;
            let payload = has_payload(p);
            let shift = *shift[pid].get_or_insert_with(|| match self.next[pid] {
                // A payload packet takes the expected counter; an adaptation-only one
                // repeats the last counter sent.
                Some(next) => next.wrapping_sub(u8::from(!payload)).wrapping_sub(cc) & 0x0f,
                None => 0,
            });
            let new = cc.wrapping_add(shift) & 0x0f;
            p[3] = (p[3] & 0xf0) | new;
            self.next[pid] = Some(new.wrapping_add(u8::from(payload)) & 0x0f);
        }
        Ok(())
    }
}

/// FFmpeg's muxer opens a stream with SDT, PAT, PMT; HLS wants the PAT and the PMT as
/// the first two packets of a segment (RFC 8216, 3.2). Moves the leading SDT packets to
/// just after the PMT (the packet following the first PAT). Anything else is left as is.
fn tables_first(segment: &mut [u8]) {
    let packets = segment.len() / PACKET;
    let lead = (0..packets).take_while(|&i| pid(&segment[i * PACKET..]) == PID_SDT).count();
    if lead == 0 || lead + 2 > packets || pid(&segment[lead * PACKET..]) != PID_PAT {
        return;
    }
    segment[..(lead + 2) * PACKET].rotate_left(lead * PACKET);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `pid` with counter `cc`; `payload` false makes it adaptation-only.
    fn packet(pid: u16, cc: u8, payload: bool) -> [u8; PACKET] {
        let mut p = [0xffu8; PACKET];
        p[0] = SYNC;
        p[1] = (pid >> 8) as u8 & 0x1f;
        p[2] = pid as u8;
        p[3] = if payload { 0x10 } else { 0x20 } | (cc & 0x0f);
        p
    }

    /// A segment as a fresh muxer writes it: SDT, PAT, PMT, then `video` video packets
    /// (the first adaptation-only, a PCR) and `audio` audio packets, each PID from 0.
    fn fresh_segment(video: usize, audio: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (pid, n) in [(PID_SDT, 1), (PID_PAT, 1), (0x1000, 1)] {
            for i in 0..n {
                out.extend_from_slice(&packet(pid, i as u8, true));
            }
        }
        // FFmpeg's counters start at 15 so that the first payload packet is 0; a PCR-only
        // packet before it repeats the last one.
        out.extend_from_slice(&packet(0x100, 15, false));
        for i in 0..video.max(audio) {
            if i < video {
                out.extend_from_slice(&packet(0x100, i as u8, true));
            }
            if i < audio {
                out.extend_from_slice(&packet(0x101, i as u8, true));
            }
        }
        out.extend_from_slice(&packet(PID_NULL, 7, true));
        out
    }

    /// Checks the counters of every PID across `segments`, read one after the other as a
    /// player reads a playlist; returns the number of packets checked.
    fn assert_continuous(segments: &[Vec<u8>]) -> usize {
        let mut last: std::collections::HashMap<u16, u8> = Default::default();
        let mut checked = 0;
        for (s, seg) in segments.iter().enumerate() {
            for (i, p) in seg.chunks_exact(PACKET).enumerate() {
                let (pid, cc) = (pid(p), p[3] & 0x0f);
                if pid == PID_NULL {
                    continue;
                }
                if let Some(&prev) = last.get(&pid) {
                    let want = if has_payload(p) { (prev + 1) & 0x0f } else { prev };
                    assert_eq!(cc, want, "segment {s} packet {i} pid {pid:#x}");
                    checked += 1;
                }
                last.insert(pid, cc);
            }
        }
        checked
    }

    #[test]
    fn counters_continue_across_segments_for_every_pid() {
        let mut cc = Continuity::default();
        // Lengths that leave each PID at a different counter, including wrap-arounds.
        let mut segments = vec![fresh_segment(21, 5), fresh_segment(3, 17), fresh_segment(40, 0), fresh_segment(1, 2)];
        for seg in &mut segments {
            cc.apply(seg).expect("valid segment");
        }
        // Every packet but the null ones and each PID's very first was checked.
        let checked = assert_continuous(&segments);
        let total: usize = segments.iter().map(|s| s.len() / PACKET).sum();
        assert_eq!(checked, total - segments.len() - 5);
        // Before the rewrite the same segments are not continuous.
        let raw = vec![fresh_segment(21, 5), fresh_segment(3, 17)];
        assert!(std::panic::catch_unwind(|| assert_continuous(&raw)).is_err());
    }

    #[test]
    fn the_first_segment_keeps_its_counters_and_a_new_pid_starts_where_it_is() {
        let mut cc = Continuity::default();
        let mut first = fresh_segment(4, 0);
        let before = first.clone();
        cc.apply(&mut first).expect("valid");
        let pids = |d: &[u8]| d.chunks_exact(PACKET).map(|p| (pid(p), p[3])).collect::<Vec<_>>();
        let mut a = pids(&before);
        let mut b = pids(&first);
        a.sort();
        b.sort();
        assert_eq!(a, b, "only the order of the tables changes");
        // Audio appears only in the second segment: its counters are its own.
        let mut second = fresh_segment(2, 3);
        cc.apply(&mut second).expect("valid");
        let audio: Vec<u8> = second.chunks_exact(PACKET).filter(|p| pid(p) == 0x101).map(|p| p[3] & 0x0f).collect();
        assert_eq!(audio, vec![0, 1, 2]);
        assert_continuous(&[first, second]);
    }

    #[test]
    fn pat_and_pmt_come_first() {
        let mut cc = Continuity::default();
        for _ in 0..3 {
            let mut seg = fresh_segment(3, 3);
            cc.apply(&mut seg).expect("valid");
            let order: Vec<u16> = seg.chunks_exact(PACKET).take(3).map(pid).collect();
            assert_eq!(order, vec![PID_PAT, 0x1000, PID_SDT]);
        }
        // Already in order, or too short to hold PAT and PMT after the SDT: untouched.
        let mut ordered: Vec<u8> =
            [packet(PID_PAT, 0, true), packet(0x1000, 0, true), packet(PID_SDT, 0, true)].concat();
        let copy = ordered.clone();
        tables_first(&mut ordered);
        assert_eq!(ordered, copy);
        let mut short: Vec<u8> = [packet(PID_SDT, 0, true), packet(PID_PAT, 0, true)].concat();
        let copy = short.clone();
        tables_first(&mut short);
        assert_eq!(short, copy);
    }

    #[test]
    fn adaptation_only_and_repeated_packets_keep_their_meaning() {
        let mut cc = Continuity::default();
        let mut a: Vec<u8> = [packet(0x100, 0, true), packet(0x100, 1, true)].concat();
        // Starts with an adaptation-only packet (repeats the last counter), then a packet
        // sent twice (same counter), as the standard allows.
        let mut b: Vec<u8> =
            [packet(0x100, 9, false), packet(0x100, 10, true), packet(0x100, 10, true), packet(0x100, 11, true)]
                .concat();
        cc.apply(&mut a).expect("valid");
        cc.apply(&mut b).expect("valid");
        let got: Vec<u8> = b.chunks_exact(PACKET).map(|p| p[3] & 0x0f).collect();
        assert_eq!(got, vec![1, 2, 2, 3]);
    }

    #[test]
    fn what_is_not_mpeg_ts_is_refused_untouched() {
        let mut cc = Continuity::default();
        let mut odd = vec![SYNC; PACKET + 1];
        assert_eq!(cc.apply(&mut odd), Err(TsError::Length(PACKET + 1)));
        let mut bad = fresh_segment(2, 2);
        bad[3 * PACKET] = 0;
        let copy = bad.clone();
        assert_eq!(cc.apply(&mut bad), Err(TsError::Sync(3)));
        assert_eq!(bad, copy);
        let mut empty: Vec<u8> = Vec::new();
        assert_eq!(cc.apply(&mut empty), Ok(()));
    }
}
