//! Opening an input (file or live URL) and choosing the streams to carry.

use crate::MediaError;
use ffmpeg::{codec, format, media, Dictionary};
use ffmpeg_next as ffmpeg;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// Video codecs HLS players decode from MPEG-TS.
const VIDEO_CODECS: [codec::Id; 2] = [codec::Id::H264, codec::Id::HEVC];
/// Audio codecs HLS players decode from MPEG-TS; other audio is left out, not refused.
const AUDIO_CODECS: [codec::Id; 3] = [codec::Id::AAC, codec::Id::MP3, codec::Id::AC3];

/// Initialises FFmpeg once per process: networking (for URL inputs) and a log level that
/// keeps FFmpeg's chatter off the broadcaster's terminal unless `MESHTV_FFMPEG_LOG` asks
/// for it.
pub(crate) fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // ffmpeg::init only registers devices and error strings; it cannot fail in practice,
        // and a failure would only affect device inputs, which meshtv does not use.
        let _ = ffmpeg::init();
        format::network::init();
        let level = match std::env::var("MESHTV_FFMPEG_LOG").as_deref() {
            Ok("quiet") => ffmpeg::log::Level::Quiet,
            Ok("error") => ffmpeg::log::Level::Error,
            Ok("warning") => ffmpeg::log::Level::Warning,
            Ok("info") => ffmpeg::log::Level::Info,
            Ok("verbose") => ffmpeg::log::Level::Verbose,
            Ok("debug") => ffmpeg::log::Level::Debug,
            Ok("trace") => ffmpeg::log::Level::Trace,
            // Joining a live feed mid-stream makes FFmpeg log decoder errors while it
            // probes; they are expected, and real failures reach the caller as MediaError.
            _ => ffmpeg::log::Level::Fatal,
        };
        ffmpeg::log::set_level(level);
    });
}

/// Where the input comes from, which decides how it is opened, paced and looped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    /// A live feed: never paced (it paces itself), never looped.
    Live,
}

impl Kind {
    pub(crate) fn of(input: &str) -> Kind {
        match input.split_once("://") {
            Some((scheme, _)) if !scheme.eq_ignore_ascii_case("file") => Kind::Live,
            _ => Kind::File,
        }
    }
}

/// Options that make FFmpeg wait for an encoder to publish instead of dialing out: OBS
/// and most encoders push to a server, and the broadcaster's machine is that server.
fn open_options(input: &str) -> Dictionary<'static> {
    let mut opts = Dictionary::new();
    let scheme = input.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    match scheme.as_str() {
        "rtmp" => opts.set("listen", "1"),
        "srt" => opts.set("mode", "listener"),
        // A consumer that falls behind for a moment must lose old datagrams, not the feed.
        "udp" => opts.set("overrun_nonfatal", "1"),
        _ => {}
    }
    opts
}

/// The caller's stop flag, readable from FFmpeg's interrupt callback.
///
/// FFmpeg keeps the callback for the lifetime of the input context and wants it
/// `'static`, while [`crate::ingest`] borrows its flag. The callback therefore holds a raw
/// pointer plus a shared `alive` switch that [`StopLink`] turns off when it is dropped;
/// the pointer is only dereferenced while `alive` is on, i.e. while the borrow is valid.
struct StopPtr {
    flag: *const AtomicBool,
    alive: Arc<AtomicBool>,
}

// SAFETY: the pointee is an AtomicBool (Sync) and is only read while `alive` is true,
// which `StopLink` guarantees happens within the borrow it was created from.
unsafe impl Send for StopPtr {}

impl StopPtr {
    fn stopped(&self) -> bool {
        // SAFETY: see the type's documentation; `alive` is cleared before the borrow ends.
        self.alive.load(Ordering::SeqCst) && unsafe { (*self.flag).load(Ordering::Relaxed) }
    }
}

/// Ties interrupt callbacks to a borrowed stop flag for as long as this value lives.
pub(crate) struct StopLink<'a> {
    flag: &'a AtomicBool,
    alive: Arc<AtomicBool>,
}

impl<'a> StopLink<'a> {
    pub(crate) fn new(flag: &'a AtomicBool) -> Self {
        StopLink { flag, alive: Arc::new(AtomicBool::new(true)) }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    fn ptr(&self) -> StopPtr {
        StopPtr { flag: self.flag as *const AtomicBool, alive: self.alive.clone() }
    }
}

impl Drop for StopLink<'_> {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
    }
}

/// Which stop flag an input's interrupt callback consults. FFmpeg's protocols copy the
/// callback when they connect, so it cannot be replaced later; instead the callback reads
/// this slot, and a probed live input can be re-pointed at the flag of the ingest that
/// adopts it.
type StopSlot = Arc<Mutex<Option<StopPtr>>>;

/// An open input with its interrupt slot.
pub(crate) struct Opened {
    pub ctx: format::context::Input,
    slot: StopSlot,
}

impl Opened {
    fn watch(&self, link: Option<&StopLink<'_>>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = link.map(StopLink::ptr);
    }
}

/// How long a live input opened by `probe` waits for `ingest` to adopt it.
const PARKED_FOR: Duration = Duration::from_secs(30);

/// A live input `probe` opened, kept for the next `ingest` of the same URL, so that an
/// encoder publishing to an rtmp/srt listener is not disconnected between the two calls.
struct Parked {
    input: String,
    opened: Opened,
    at: Instant,
}

/// Parked inputs, one per URL: a process may broadcast several channels.
static PARKED: Mutex<Vec<Parked>> = Mutex::new(Vec::new());

fn parked() -> std::sync::MutexGuard<'static, Vec<Parked>> {
    PARKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a probed live input for [`take_parked`], replacing an older one of the same URL
/// and closing any nobody adopted in time.
pub(crate) fn park(input: &str, opened: Opened) {
    opened.watch(None);
    let closed: Vec<Parked>;
    {
        let mut all = parked();
        let (keep, stale): (Vec<Parked>, Vec<Parked>) =
            std::mem::take(&mut *all).into_iter().partition(|p| p.input != input && p.at.elapsed() <= PARKED_FOR);
        *all = keep;
        all.push(Parked { input: input.to_string(), opened, at: Instant::now() });
        closed = stale;
    }
    drop(closed); // closing connections can take a moment: not under the lock
}

/// The live input a recent `probe` of `input` left open, now watching `link`.
fn take_parked(input: &str, link: &StopLink<'_>) -> Option<Opened> {
    let found = {
        let mut all = parked();
        let i = all.iter().position(|p| p.input == input)?;
        all.swap_remove(i)
    };
    if found.at.elapsed() > PARKED_FOR {
        return None; // closed: the encoder reconnects to the fresh listener
    }
    found.opened.watch(Some(link));
    Some(found.opened)
}

/// Opens `input`, listening for rtmp/srt, and reads enough of it to know its streams.
/// `stop` (if any) aborts a wait for an encoder or for data; with `stop`, a live input
/// parked by `probe` is adopted instead of opening a new one.
pub(crate) fn open(input: &str, stop: Option<&StopLink<'_>>) -> Result<Opened, MediaError> {
    init();
    if let Some(opened) = stop.and_then(|link| take_parked(input, link)) {
        return Ok(opened);
    }
    let fail = |reason: String| MediaError::OpenInput { input: input.to_string(), reason };
    if input.is_empty() {
        return Err(fail("no input given".into()));
    }
    if input.contains('\0') {
        // FFmpeg takes C strings; ffmpeg-next would panic on an interior NUL.
        return Err(fail("the name contains a NUL byte".into()));
    }
    let slot: StopSlot = Arc::new(Mutex::new(stop.map(StopLink::ptr)));
    let callback = {
        let slot = slot.clone();
        move || slot.lock().ok().and_then(|s| s.as_ref().map(StopPtr::stopped)).unwrap_or(false)
    };
    match format::input_with_interrupt_and_dictionary(input, callback, open_options(input)) {
        Ok(ctx) => Ok(Opened { ctx, slot }),
        Err(ffmpeg::Error::Exit) => Err(fail("stopped while waiting for the input".into())),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// The streams ingest carries: one video stream, and at most one audio stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Selected {
    pub video: usize,
    pub audio: Option<usize>,
}

/// Picks the video stream (refusing codecs HLS cannot play) and a playable audio stream,
/// warning about audio that has to be left out.
pub(crate) fn select(ictx: &format::context::Input, input: &str) -> Result<Selected, MediaError> {
    // Cover art in music files shows up as a one-frame video stream; it is not video.
    let is_picture = |s: &ffmpeg::Stream| s.disposition().contains(format::stream::Disposition::ATTACHED_PIC);
    let best_video = ictx.streams().best(media::Type::Video).filter(|s| !is_picture(s)).map(|s| s.index());
    let videos: Vec<(usize, codec::Id)> = ictx
        .streams()
        .filter(|s| s.parameters().medium() == media::Type::Video && !is_picture(s))
        .map(|s| (s.index(), s.parameters().id()))
        .collect();
    if videos.is_empty() {
        return Err(MediaError::NoVideo { input: input.to_string() });
    }
    let supported = |id: &codec::Id| VIDEO_CODECS.contains(id);
    let video = videos
        .iter()
        .find(|(i, id)| Some(*i) == best_video && supported(id))
        .or_else(|| videos.iter().find(|(_, id)| supported(id)))
        .map(|(i, _)| *i);
    let Some(video) = video else {
        let codec =
            best_video.and_then(|b| videos.iter().find(|(i, _)| *i == b)).unwrap_or(&videos[0]).1.name().to_string();
        return Err(MediaError::UnsupportedVideoCodec { input: input.to_string(), codec });
    };

    let best_audio = ictx.streams().best(media::Type::Audio).map(|s| s.index());
    let audios: Vec<(usize, codec::Id)> = ictx
        .streams()
        .filter(|s| s.parameters().medium() == media::Type::Audio)
        .map(|s| (s.index(), s.parameters().id()))
        .collect();
    let playable = |id: &codec::Id| AUDIO_CODECS.contains(id);
    let audio = audios
        .iter()
        .find(|(i, id)| Some(*i) == best_audio && playable(id))
        .or_else(|| audios.iter().find(|(_, id)| playable(id)))
        .map(|(i, _)| *i);
    if audio.is_none() {
        if let Some((_, id)) = audios.first() {
            tracing::warn!(
                input,
                codec = id.name(),
                "audio codec {} is not playable by HLS players (aac, mp3 or ac3 are); streaming video without sound",
                id.name()
            );
        }
    }
    Ok(Selected { video, audio })
}

/// Video frame size from the stream's codec parameters.
pub(crate) fn dimensions(params: &codec::Parameters) -> (u32, u32) {
    // SAFETY: `params` wraps a valid AVCodecParameters for as long as it lives; these are
    // plain integer fields.
    let (w, h) = unsafe { ((*params.as_ptr()).width, (*params.as_ptr()).height) };
    (w.max(0) as u32, h.max(0) as u32)
}

/// A copy of a stream's codec parameters, owned (not tied to the input's lifetime) and
/// with the container's codec tag cleared: MP4's `avc1` tag means nothing in MPEG-TS and
/// the TS muxer refuses a tag it does not know.
pub(crate) fn owned_parameters(stream: &ffmpeg::Stream) -> codec::Parameters {
    let mut params = codec::Parameters::new();
    params.clone_from(&stream.parameters());
    // SAFETY: `params` owns its AVCodecParameters; codec_tag is a plain integer field.
    unsafe { (*params.as_mut_ptr()).codec_tag = 0 };
    params
}

/// How many frames a video decoder holds back for reordering (B-frames): the distance
/// between a frame's decode and presentation timestamps at the start of the stream.
pub(crate) fn video_delay(params: &codec::Parameters) -> u32 {
    // SAFETY: as in `dimensions`.
    unsafe { (*params.as_ptr()).video_delay.max(0) as u32 }
}

/// Start time of the input in microseconds, if the demuxer knows it.
pub(crate) fn start_time_us(ictx: &format::context::Input) -> Option<i64> {
    // SAFETY: reading a plain integer field of the live format context.
    let t = unsafe { (*ictx.as_ptr()).start_time };
    (t != ffmpeg::ffi::AV_NOPTS_VALUE).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(Kind::of("assets/sample.mp4"), Kind::File);
        assert_eq!(Kind::of("file:///tmp/a.mp4"), Kind::File);
        assert_eq!(Kind::of("udp://127.0.0.1:1234"), Kind::Live);
        assert_eq!(Kind::of("RTMP://0.0.0.0/live/x"), Kind::Live);
    }

    #[test]
    fn listener_options() {
        assert_eq!(open_options("rtmp://0.0.0.0:1935/live/a").get("listen"), Some("1"));
        assert_eq!(open_options("srt://0.0.0.0:9000").get("mode"), Some("listener"));
        assert_eq!(open_options("udp://127.0.0.1:1234").get("overrun_nonfatal"), Some("1"));
        assert!(open_options("a.mp4").iter().next().is_none());
    }
}
