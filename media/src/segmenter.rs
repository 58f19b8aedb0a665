//! Cutting the packet stream into self-contained MPEG-TS segments.
//!
//! Every segment gets a fresh MPEG-TS muxer writing into memory, so it starts with its
//! own PAT/PMT and (through the muxer's automatic `h264_mp4toannexb` / `hevc_mp4toannexb`
//! bitstream filter) with the parameter sets before its first keyframe: a player can
//! start at any segment. Timestamps are not reset per segment; they run on across
//! segments so consecutive segments play as one continuous stream; `continuity` puts the
//! PAT and PMT first and carries each PID's continuity counter on from the previous
//! segment, so that a player reading them back to back sees one valid transport stream.

use crate::continuity::Continuity;
use crate::MediaError;
use ffmpeg::format::context::{Output, StreamIo};
use ffmpeg::{codec, format, Packet, Rational, Rescale};
use ffmpeg_next as ffmpeg;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// All segment timestamps are handled in MPEG-TS's 90 kHz clock.
pub(crate) const TICKS_PER_SEC: i64 = 90_000;
pub(crate) const TICK: Rational = Rational(1, TICKS_PER_SEC as i32);

/// The largest segment the swarm accepts (meshtv-proto's `limits::SEGMENT_BYTES_MAX`).
/// Checked here so that a too-long GOP fails with advice instead of a rejected header.
pub(crate) const SEGMENT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Whole milliseconds of a tick count. Segment durations are differences of these, so
/// their sum is the exact stream length, without per-segment rounding drift.
fn ms(ticks: i64) -> i64 {
    ticks.div_euclid(TICKS_PER_SEC / 1000)
}

/// A packet with its timestamps already on the output timeline (90 kHz ticks).
pub(crate) struct Timed {
    pub packet: Packet,
    /// 0 = video, 1 = audio.
    pub out_index: usize,
    pub pts: i64,
    pub dts: i64,
    /// 0 when unknown.
    pub duration: i64,
    pub key: bool,
}

/// Collects the muxer's output in memory.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Open {
    out: Output,
    buf: SharedBuf,
    /// Output time base of each stream, set by the muxer in write_header.
    time_bases: Vec<Rational>,
    /// pts of the keyframe the segment starts with.
    start: i64,
    /// End (pts + duration) of the latest video frame, for the last segment's duration.
    video_end: i64,
    warned_long: bool,
}

pub(crate) struct Segmenter {
    target: i64,
    /// Codec parameters of the output streams: video first, then audio if any.
    params: Vec<codec::Parameters>,
    /// Fallback video frame duration in ticks, for inputs whose packets carry none.
    frame_ticks: i64,
    current: Option<Open>,
    seq: u64,
    /// Last dts written per output stream, to drop packets that would go backwards
    /// (which the muxer rejects) instead of failing the whole ingest.
    last_dts: Vec<Option<i64>>,
    /// Continuity counters carried across segments (and loop passes).
    continuity: Continuity,
}

impl Segmenter {
    pub(crate) fn new(target_ticks: i64, frame_ticks: i64) -> Self {
        Segmenter {
            target: target_ticks.max(0),
            params: Vec::new(),
            frame_ticks: frame_ticks.max(1),
            current: None,
            seq: 0,
            last_dts: Vec::new(),
            continuity: Continuity::default(),
        }
    }

    /// Sets the codec parameters used for segments opened from now on (video first, then
    /// audio if any); called for every pass, as a looped file is reopened each time.
    pub(crate) fn set_params(&mut self, params: Vec<codec::Parameters>) {
        self.last_dts.resize(params.len(), None);
        self.params = params;
    }

    /// True once the first keyframe has started a segment.
    pub(crate) fn started(&self) -> bool {
        self.current.is_some() || self.seq > 0
    }

    /// Feeds one packet; returns the segment it completed, if any.
    pub(crate) fn push(&mut self, p: Timed) -> Result<Option<crate::MediaSegment>, MediaError> {
        let mut done = None;
        if p.out_index == 0 && p.key {
            let cut = match &self.current {
                None => true,
                Some(open) => p.pts.saturating_sub(open.start) >= self.target,
            };
            if cut {
                if let Some(open) = self.current.take() {
                    done = Some(self.close(open, p.pts)?);
                }
                self.current = Some(self.open(p.pts)?);
            }
        }
        let Some(open) = self.current.as_mut() else {
            // Before the first keyframe (a live feed joined mid-GOP): nothing decodable yet.
            return Ok(done);
        };
        let (mut pts, mut dts) = (p.pts, p.dts);
        if let Some(last) = self.last_dts.get(p.out_index).copied().flatten() {
            if dts <= last {
                if p.out_index != 0 {
                    // Audio overlapping what was already sent (the priming frame of a
                    // looped file's next pass, a glitch in a feed): the previous wins.
                    tracing::debug!(stream = p.out_index, dts, last, "dropping audio packet whose dts goes backwards");
                    return Ok(done);
                }
                // A video frame cannot be dropped without breaking the frames that refer to
                // it, so nudge its timestamps forward instead.
                tracing::debug!(dts, last, "moving a video frame whose dts goes backwards");
                dts = last.saturating_add(1);
                pts = pts.max(dts);
            }
        }
        let Some(&tb) = open.time_bases.get(p.out_index) else {
            return Ok(done);
        };
        let mut packet = p.packet;
        packet.set_pts(Some(pts.rescale(TICK, tb)));
        packet.set_dts(Some(dts.rescale(TICK, tb)));
        packet.set_duration(p.duration.rescale(TICK, tb));
        packet.set_position(-1);
        packet.set_stream(p.out_index);
        let seq = self.seq;
        match packet.write_interleaved(&mut open.out) {
            Ok(()) => {}
            // One damaged packet (cut short, garbled NAL sizes) must not end a broadcast:
            // the players conceal it and the next keyframe repairs the picture.
            Err(ffmpeg::Error::InvalidData) => {
                tracing::warn!(seq, stream = p.out_index, "skipping a damaged packet");
                return Ok(done);
            }
            Err(e) => return Err(MediaError::Mux { seq, reason: e.to_string() }),
        }
        if let Some(last) = self.last_dts.get_mut(p.out_index) {
            *last = Some(dts);
        }
        if p.out_index == 0 {
            let dur = if p.duration > 0 { p.duration } else { self.frame_ticks };
            open.video_end = open.video_end.max(pts.saturating_add(dur));
        }
        if !open.warned_long && pts.saturating_sub(open.start) > self.target.saturating_mul(2).max(TICKS_PER_SEC) {
            open.warned_long = true;
            tracing::warn!(
                seq,
                target_ms = ms(self.target),
                "no keyframe for twice the segment duration: segments will be long; set the encoder's keyframe interval to the segment duration"
            );
        }
        if open.buf.len() > SEGMENT_BYTES_MAX {
            return Err(MediaError::SegmentTooLarge { seq, max_bytes: SEGMENT_BYTES_MAX });
        }
        Ok(done)
    }

    /// Ends the input: completes the segment in progress, lasting to its last frame's end.
    pub(crate) fn finish(&mut self) -> Result<Option<crate::MediaSegment>, MediaError> {
        match self.current.take() {
            Some(open) => {
                let end = open.video_end.max(open.start);
                self.close(open, end).map(Some)
            }
            None => Ok(None),
        }
    }

    fn open(&mut self, start: i64) -> Result<Open, MediaError> {
        let seq = self.seq;
        let mux = |e: ffmpeg::Error| MediaError::Mux { seq, reason: e.to_string() };
        let buf = SharedBuf::default();
        let io = StreamIo::from_write(buf.clone()).map_err(mux)?;
        let mut out = format::output_to_stream(io, None, Some("mpegts")).map_err(mux)?;
        for params in &self.params {
            let mut stream = out.add_stream(ffmpeg::encoder::find(codec::Id::None)).map_err(mux)?;
            stream.set_parameters(params.clone());
        }
        out.write_header().map_err(mux)?;
        let time_bases = out.streams().map(|s| s.time_base()).collect();
        Ok(Open { out, buf, time_bases, start, video_end: start, warned_long: false })
    }

    fn close(&mut self, mut open: Open, end: i64) -> Result<crate::MediaSegment, MediaError> {
        let seq = self.seq;
        open.out.write_trailer().map_err(|e| MediaError::Mux { seq, reason: e.to_string() })?;
        let buf = open.buf.clone();
        drop(open.out); // flushes the last buffered bytes into `buf`
        let mut data = buf.take();
        self.continuity.apply(&mut data).map_err(|e| MediaError::Mux { seq, reason: e.to_string() })?;
        let duration = ms(end).saturating_sub(ms(open.start)).clamp(0, u32::MAX as i64) as u32;
        self.seq += 1;
        Ok(crate::MediaSegment { seq, duration_ms: duration, data })
    }
}
