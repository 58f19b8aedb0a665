//! meshtv's media ingest: it opens what the broadcaster points it at (a file, or a live
//! feed arriving over RTMP, SRT or UDP), checks that the stream can be played by HLS
//! players without re-encoding, and remuxes it into self-contained, keyframe-aligned
//! MPEG-TS segments that the source peer signs and splits into pieces. Nothing is decoded
//! or re-encoded: the broadcaster's picture quality is what the viewers get, and ingest
//! costs almost no CPU.
//!
//! **Architecture Invariant:** this is the only meshtv crate that links FFmpeg (through
//! `ffmpeg-next`). Everything else sees segments as opaque bytes plus a duration, so the
//! sans-IO cores and the simulator build and run without any native media library.
//!
//! It is a driver crate: [`ingest`] blocks its thread, sleeps to pace a file as a live
//! channel and reads the wall clock. Run it on a dedicated thread.
//!
//! FFmpeg's own log output is silenced (failures reach the caller as [`MediaError`]); set
//! `MESHTV_FFMPEG_LOG` to `error`, `warning`, `info`, `verbose` or `debug` to see it when
//! diagnosing an input.

mod continuity;
mod ingest;
mod input;
mod segmenter;

use std::time::Duration;

/// What the broadcaster learned about its input before going live: enough to fill the
/// channel descriptor (the bitrate sizes the swarm's upload slots) and to tell the user
/// what they are about to stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    /// FFmpeg's short codec name: `h264` or `hevc` (anything else is refused by [`probe`]).
    pub video_codec: String,
    /// `aac`, `mp3` or `ac3`; `None` when the input has no audio or only audio that HLS
    /// players cannot play, which ingest leaves out.
    pub audio_codec: Option<String>,
    pub width: u32,
    pub height: u32,
    /// The container's bitrate, or the sum of the streams' declared bitrates. Never 0: a
    /// live feed often declares none, and then this is 2 Mbps, a typical 720p stream, so
    /// that slot sizing starts from a sensible guess rather than a division by zero.
    pub bitrate_bps: u64,
    /// Length of a file in milliseconds; `None` for a live feed.
    pub duration_ms: Option<u64>,
}

/// What to ingest and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// A file path, or a URL FFmpeg opens. `rtmp://` and `srt://` URLs are opened as
    /// listeners (so OBS or another encoder can publish to them); `udp://` is read as is,
    /// typically an MPEG-TS feed.
    pub input: String,
    /// Replay a file forever, keeping timestamps increasing across each restart, so that a
    /// short file can stand in for a 24/7 live channel. Ignored for URL inputs.
    pub looped: bool,
    /// Pace a file at its own speed, as if it were a live feed; without it a file is read
    /// as fast as the disk allows. Ignored for URL inputs: a live feed paces itself.
    pub realtime: bool,
    /// Target segment length: a segment is cut at the first video keyframe at or after
    /// this much media time since the segment's start, so segments are never shorter
    /// than the target (except a file's last one) and as long as the input's keyframe
    /// interval requires.
    pub segment_duration: Duration,
}

/// One keyframe-aligned slice of the stream, ready to be signed and split into pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSegment {
    /// Position in the stream, from 0, without gaps.
    pub seq: u64,
    /// Media time this segment covers: from its first keyframe to the next segment's
    /// first keyframe (for the last segment of a file, to the end of its last frame). The
    /// gateway writes it as the segment's `#EXTINF`.
    pub duration_ms: u32,
    /// A complete MPEG-TS file (PAT, PMT, then H.264/HEVC in Annex B with its parameter
    /// sets, and ADTS AAC / MP3 / AC3), starting with a video keyframe, so a player can
    /// start with this segment without anything received before it. Timestamps and each
    /// PID's continuity counters continue from the previous segment, so the segments
    /// read one after the other are one valid MPEG-TS stream.
    pub data: Vec<u8>,
}

/// Why an input cannot be probed or ingested. Each message is one line meant for the
/// broadcaster who typed the command, so it names the input and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The input could not be opened: a missing file, a file that is not media, an
    /// unreachable or malformed URL, a port already in use...
    #[error("cannot open input {input:?}: {reason}")]
    OpenInput { input: String, reason: String },
    /// The input opened but carries no video stream (audio only, or data only).
    #[error("input {input:?} has no video stream; meshtv streams video, so an audio-only input cannot be broadcast")]
    NoVideo { input: String },
    /// The video codec cannot be carried to HLS players without re-encoding.
    #[error(
        "input {input:?} has {codec} video, which HLS players cannot play: meshtv does not re-encode and supports h264 or hevc video (audio: aac, mp3 or ac3); convert it first, e.g. ffmpeg -i INPUT -c:v libx264 -c:a aac OUTPUT.mp4"
    )]
    UnsupportedVideoCodec { input: String, codec: String },
    /// Reading the input failed part-way (a truncated file, a dropped connection...).
    #[error("reading input {input:?} failed: {reason}")]
    Read { input: String, reason: String },
    /// The input ended (or a looped file replayed) without a single video keyframe, so
    /// not one playable segment could be made.
    #[error("input {input:?} has no video keyframe, so no playable segment can be made from it")]
    NoKeyframe { input: String },
    /// A segment grew past what the swarm accepts because the input sends keyframes too
    /// rarely.
    #[error(
        "segment {seq} grew past {max_bytes} bytes without a video keyframe; set the encoder's keyframe interval close to the segment duration (e.g. 2 s)"
    )]
    SegmentTooLarge { seq: u64, max_bytes: usize },
    /// FFmpeg's MPEG-TS muxer refused the stream.
    #[error("cannot write MPEG-TS segment {seq}: {reason}")]
    Mux { seq: u64, reason: String },
}

/// Opens `input` and reports what it carries, refusing what [`ingest`] would refuse, so
/// the broadcaster learns about a bad input before announcing a channel.
///
/// For an `rtmp://` or `srt://` URL this listens and waits for the encoder to connect.
/// A live input stays open for 30 s afterwards and the next [`ingest`] of the same URL
/// continues on it, so the encoder (OBS publishes once) is not disconnected in between.
pub fn probe(input: &str) -> Result<InputInfo, MediaError> {
    ingest::probe(input)
}

/// Reads the input and hands each finished segment to `on_segment`, in order.
///
/// Blocking: runs until the input ends (a file that is not looped, or a live feed whose
/// encoder disconnects), `stop` becomes true, or `on_segment` returns false; all three
/// return `Ok(())`. At the end of the input the last, possibly short, segment is
/// delivered; when stopped, the segment in progress is dropped. `stop` is also checked
/// while waiting for a live encoder to connect or for data to arrive.
pub fn ingest(
    opts: &IngestOptions,
    stop: &std::sync::atomic::AtomicBool,
    on_segment: impl FnMut(MediaSegment) -> bool,
) -> Result<(), MediaError> {
    ingest::run(opts, stop, on_segment)
}
