//! The ingest loop: read packets, move them onto one continuous output timeline (across
//! loop passes), pace files in real time, and feed the segmenter.

use crate::input::{self, Kind, StopLink};
use crate::segmenter::{Segmenter, Timed, TICK, TICKS_PER_SEC};
use crate::{IngestOptions, InputInfo, MediaError, MediaSegment};
use ffmpeg::{Packet, Rational, Rescale};
use ffmpeg_next as ffmpeg;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Bitrate assumed when the input declares none (typical for a live feed): 2 Mbps.
const FALLBACK_BITRATE_BPS: u64 = 2_000_000;

/// Where the output timeline starts: the input's start is mapped to 10 s. Starting above
/// zero keeps the decode timestamps of frames that precede their presentation (B-frames,
/// audio priming) positive, so the MPEG-TS muxer never shifts or wraps them.
const TIMELINE_START: i64 = 10 * TICKS_PER_SEC;

/// Consecutive failed reads tolerated before the input is declared unreadable.
const MAX_FRUITLESS_READS: u32 = 10_000;

/// Video frame duration assumed when neither the packets nor the stream say (25 fps).
const DEFAULT_FRAME_TICKS: i64 = TICKS_PER_SEC / 25;

pub(crate) fn probe(input: &str) -> Result<InputInfo, MediaError> {
    let opened = input::open(input, None)?;
    let info = describe(&opened.ctx, input)?;
    if Kind::of(input) == Kind::Live {
        // Keep the encoder's connection (and what it already sent) for the ingest that
        // normally follows, instead of making it reconnect.
        input::park(input, opened);
    }
    Ok(info)
}

fn describe(ictx: &ffmpeg::format::context::Input, input: &str) -> Result<InputInfo, MediaError> {
    let sel = input::select(ictx, input)?;
    let stream = |i: usize| ictx.stream(i);
    let video = stream(sel.video).ok_or_else(|| MediaError::NoVideo { input: input.to_string() })?;
    let vparams = video.parameters();
    let (width, height) = input::dimensions(&vparams);
    let audio_codec = sel.audio.and_then(stream).map(|s| s.parameters().id().name().to_string());

    // The container's figure if it has one (MP4, FLV from OBS); else the streams' own,
    // but only when the video's is known: an MPEG-TS feed often declares just its audio,
    // and 128 kbps would badly undersize the swarm's upload slots.
    let declared = ictx.bit_rate();
    let video_declared = vparams.bit_rate();
    let carried = [Some(sel.video), sel.audio].into_iter().flatten().filter_map(stream);
    let streams_sum: i64 = carried.map(|s| s.parameters().bit_rate().max(0)).sum();
    let bitrate_bps = if declared > 0 {
        declared as u64
    } else if video_declared > 0 {
        streams_sum as u64
    } else {
        FALLBACK_BITRATE_BPS
    };

    let duration_ms = match Kind::of(input) {
        // Container duration is in AV_TIME_BASE (microseconds); live feeds have none.
        Kind::File if ictx.duration() > 0 => Some(ictx.duration() as u64 / 1000),
        _ => None,
    };
    Ok(InputInfo { video_codec: vparams.id().name().to_string(), audio_codec, width, height, bitrate_bps, duration_ms })
}

/// Sleeps so that a packet is not handled before its timestamp, measured from the first
/// packet, has passed on the wall clock: a file then behaves like a live feed.
#[derive(Default)]
struct Pacer {
    origin: Option<(Instant, i64)>,
}

impl Pacer {
    /// Returns false if `stop` was raised while waiting.
    fn wait_for(&mut self, ts: i64, link: &StopLink<'_>) -> bool {
        let (t0, ts0) = *self.origin.get_or_insert((Instant::now(), ts));
        let ahead_ticks = ts.saturating_sub(ts0).max(0) as u64;
        let ahead = Duration::from_micros(ahead_ticks.saturating_mul(100) / 9).min(Duration::from_secs(86_400 * 365));
        let due = t0 + ahead;
        loop {
            if link.stopped() {
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            // Short slices, so that `stop` is honoured promptly.
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }
}

fn to_ticks(d: Duration) -> i64 {
    i64::try_from(d.as_micros().saturating_mul(9) / 100).unwrap_or(i64::MAX)
}

fn valid(tb: Rational) -> bool {
    tb.numerator() > 0 && tb.denominator() > 0
}

pub(crate) fn run(
    opts: &IngestOptions,
    stop: &AtomicBool,
    mut on_segment: impl FnMut(MediaSegment) -> bool,
) -> Result<(), MediaError> {
    let name = opts.input.as_str();
    let link = StopLink::new(stop);
    let kind = Kind::of(name);
    let looped = opts.looped && kind == Kind::File;
    if opts.looped && kind == Kind::Live {
        tracing::warn!(input = name, "looping applies to files; a live input is ingested once");
    }
    let paced = opts.realtime && kind == Kind::File;
    let target = to_ticks(opts.segment_duration);

    let mut segmenter: Option<Segmenter> = None;
    // Added to every input timestamp (in ticks) so that the output starts at
    // TIMELINE_START; fixed on the first pass.
    let mut shift: Option<i64> = None;
    // Added on top of `shift` for the current loop pass: the length of the passes before.
    let mut pass_offset: i64 = 0;
    let mut pacer = Pacer::default();

    loop {
        if link.stopped() {
            return Ok(());
        }
        let mut ictx = match input::open(name, Some(&link)) {
            Err(_) if link.stopped() => return Ok(()),
            r => r?.ctx,
        };
        let sel = input::select(&ictx, name)?;

        // Input stream index -> (output index, input time base). Video is output 0.
        let mut map: Vec<Option<(usize, Rational)>> = vec![None; ictx.nb_streams() as usize];
        let mut params = Vec::new();
        let mut frame_ticks = DEFAULT_FRAME_TICKS;
        let mut video_delay = 0i64;
        for (out_index, in_index) in std::iter::once(sel.video).chain(sel.audio).enumerate() {
            let Some(stream) = ictx.stream(in_index) else { continue };
            if out_index == 0 {
                let rate = stream.avg_frame_rate();
                let rate = if valid(rate) { rate } else { stream.rate() };
                if valid(rate) {
                    frame_ticks = (TICKS_PER_SEC * rate.denominator() as i64 / rate.numerator() as i64).max(1);
                }
                video_delay = input::video_delay(&stream.parameters()) as i64;
            }
            if valid(stream.time_base()) {
                map[in_index] = Some((params.len(), stream.time_base()));
                params.push(input::owned_parameters(&stream));
            }
        }
        if map.get(sel.video).copied().flatten().is_none() {
            return Err(MediaError::Read {
                input: name.into(),
                reason: "the video stream has no valid time base".into(),
            });
        }
        let seg = segmenter.get_or_insert_with(|| Segmenter::new(target, frame_ticks));
        seg.set_params(params);
        if shift.is_none() {
            shift = input::start_time_us(&ictx)
                .map(|t| TIMELINE_START.saturating_sub(t.rescale(Rational(1, 1_000_000), TICK)));
        }

        // Extent of this pass's video, in input ticks: the length a looped pass adds.
        let mut video_span: Option<(i64, i64)> = None;
        // Where the next video frame's dts would fall, for demuxers that leave some dts
        // out (Matroska does for the first frames of a stream with B-frames).
        let mut next_video_dts: Option<i64> = None;
        // Reads in a row that returned nothing, so a demuxer stuck on garbage cannot spin
        // this thread forever.
        let mut fruitless = 0u32;
        loop {
            if link.stopped() {
                return Ok(());
            }
            let mut packet = Packet::empty();
            match packet.read(&mut ictx) {
                Ok(()) => fruitless = 0,
                Err(ffmpeg::Error::Eof) => break,
                // A corrupt packet: the demuxer resyncs on the next read.
                Err(ffmpeg::Error::InvalidData) if fruitless < MAX_FRUITLESS_READS => {
                    fruitless += 1;
                    continue;
                }
                Err(ffmpeg::Error::Other { errno })
                    if errno == ffmpeg::error::EAGAIN && fruitless < MAX_FRUITLESS_READS =>
                {
                    fruitless += 1;
                    continue;
                }
                Err(_) if link.stopped() => return Ok(()),
                // An encoder that stops publishing usually surfaces as an I/O error rather
                // than a clean end of stream: for a live feed that is its end.
                Err(e) if kind == Kind::Live && seg.started() => {
                    tracing::info!(input = name, "live input ended: {e}");
                    break;
                }
                Err(e) => return Err(MediaError::Read { input: name.into(), reason: e.to_string() }),
            }
            let Some((out_index, tb)) = map.get(packet.stream()).copied().flatten() else { continue };
            let Some(pts) = packet.pts().or(packet.dts()) else {
                tracing::debug!(input = name, "dropping a packet without timestamps");
                continue;
            };
            let pts = pts.rescale(tb, TICK);
            let duration = if packet.duration() > 0 { packet.duration().rescale(tb, TICK) } else { 0 };
            let given_dts = packet.dts().map(|d| d.rescale(tb, TICK));
            let key = packet.is_key();
            let dts = if out_index == 0 {
                // Predict a missing dts as FFmpeg's own remuxer does: one frame after the
                // previous frame's, starting `video_delay` frames before the first pts.
                let dts = given_dts
                    .or(next_video_dts)
                    .unwrap_or_else(|| pts.saturating_sub(video_delay.saturating_mul(frame_ticks)))
                    .min(pts);
                let step = if duration > 0 { duration } else { frame_ticks };
                next_video_dts = Some(dts.saturating_add(step));
                video_span = Some(match video_span {
                    None => (pts, pts.saturating_add(step)),
                    Some((a, b)) => (a.min(pts), b.max(pts.saturating_add(step))),
                });
                dts
            } else {
                given_dts.unwrap_or(pts)
            };
            let offset = shift.get_or_insert(TIMELINE_START.saturating_sub(dts)).saturating_add(pass_offset);
            let (pts, dts) = (pts.saturating_add(offset), dts.saturating_add(offset));
            if paced && !pacer.wait_for(dts, &link) {
                return Ok(());
            }
            if let Some(segment) = seg.push(Timed { packet, out_index, pts, dts, duration, key })? {
                if !on_segment(segment) {
                    return Ok(());
                }
            }
        }
        drop(ictx);

        if !looped {
            return match seg.finish()? {
                Some(segment) => {
                    on_segment(segment);
                    Ok(())
                }
                None if !seg.started() => Err(MediaError::NoKeyframe { input: name.into() }),
                None => Ok(()),
            };
        }
        // A pass without any keyframe would loop forever without producing anything.
        match video_span {
            Some((a, b)) if seg.started() && b > a => pass_offset = pass_offset.saturating_add(b - a),
            _ => return Err(MediaError::NoKeyframe { input: name.into() }),
        }
    }
}
