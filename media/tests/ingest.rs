//! End-to-end tests of probe and ingest against real media: the sample asset, small inputs
//! made with the ffmpeg CLI, and a live UDP feed. Every segment is checked by decoding it
//! with ffprobe, so these tests need the `ffmpeg` and `ffprobe` binaries and fail (never
//! skip) without them.

use meshtv_media::{ingest, probe, IngestOptions, MediaError, MediaSegment};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICKS: i64 = 90_000;

fn sample() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/sample.mp4");
    assert!(p.exists(), "{} is missing: run assets/make-sample.sh", p.display());
    p.to_string_lossy().into_owned()
}

/// Runs an ffmpeg tool and returns (stdout, stderr); panics if the tool cannot be run.
fn run(tool: &str, args: &[&str]) -> (String, String, bool) {
    let out = Command::new(tool).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run `{tool}` ({e}); these tests need the ffmpeg CLI tools: apt install ffmpeg")
    });
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Makes a small test input with the ffmpeg CLI.
fn make(dir: &Path, name: &str, args: &[&str]) -> String {
    let path = dir.join(name);
    let path_s = path.to_string_lossy().into_owned();
    let mut all = vec!["-hide_banner", "-loglevel", "error", "-y"];
    all.extend_from_slice(args);
    all.push(&path_s);
    let (_, err, ok) = run("ffmpeg", &all);
    assert!(ok, "ffmpeg could not make {name}: {err}");
    path_s
}

fn opts(input: &str, looped: bool, realtime: bool) -> IngestOptions {
    IngestOptions { input: input.to_string(), looped, realtime, segment_duration: Duration::from_secs(2) }
}

/// Ingests until the end, or until `limit` segments were delivered.
fn collect(opts: &IngestOptions, limit: Option<usize>) -> Result<Vec<MediaSegment>, MediaError> {
    let stop = AtomicBool::new(false);
    let mut segs = Vec::new();
    ingest(opts, &stop, |s| {
        segs.push(s);
        limit.map_or(true, |l| segs.len() < l)
    })?;
    Ok(segs)
}

fn write_ts(dir: &Path, name: &str, data: &[u8]) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, data).expect("write segment");
    p.to_string_lossy().into_owned()
}

/// Parses ffprobe's `-of compact=p=0` output (`key=value|key=value` lines).
fn records(out: &str) -> Vec<std::collections::HashMap<String, String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split('|').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Pkt {
    video: bool,
    pts: i64,
    dts: i64,
    duration: i64,
    key: bool,
}

/// The packets of an MPEG-TS file as ffprobe demuxes them, in file order.
fn packets(path: &str) -> Vec<Pkt> {
    let (out, err, ok) = run(
        "ffprobe",
        &["-v", "error", "-show_entries", "packet=codec_type,pts,dts,duration,flags", "-of", "compact=p=0", path],
    );
    assert!(ok && err.is_empty(), "ffprobe cannot demux {path}: {err}");
    records(&out)
        .into_iter()
        .map(|r| {
            let num = |k: &str| r.get(k).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {k} in {r:?}"));
            Pkt {
                video: r.get("codec_type").map(String::as_str) == Some("video"),
                pts: num("pts"),
                dts: num("dts"),
                duration: num("duration"),
                key: r.get("flags").is_some_and(|f| f.starts_with('K')),
            }
        })
        .collect()
}

/// Decodes every frame of a file with ffprobe; any decoder error fails the test.
/// Returns (media_type, pict_type) per frame in presentation order.
fn decode(path: &str) -> Vec<(String, String)> {
    let (out, err, ok) =
        run("ffprobe", &["-v", "error", "-show_entries", "frame=media_type,pict_type", "-of", "compact=p=0", path]);
    assert!(ok && err.is_empty(), "decoding {path} failed: {err}");
    records(&out)
        .into_iter()
        .map(|r| (r.get("media_type").cloned().unwrap_or_default(), r.get("pict_type").cloned().unwrap_or_default()))
        .collect()
}

fn stream_codecs(path: &str) -> Vec<String> {
    let (out, err, ok) =
        run("ffprobe", &["-v", "error", "-show_entries", "stream=index,codec_name", "-of", "csv=p=0", path]);
    assert!(ok, "ffprobe failed on {path}: {err}");
    // MPEG-TS lists its streams twice (under the program and on their own).
    let mut seen = std::collections::BTreeMap::new();
    for line in out.lines() {
        if let Some((index, codec)) = line.trim().split_once(',') {
            seen.insert(index.parse::<u32>().unwrap_or(u32::MAX), codec.to_string());
        }
    }
    seen.into_values().collect()
}

/// Checks what every segment must be: MPEG-TS that decodes on its own without errors and
/// whose first video frame is a keyframe. Returns the first video pts of each segment.
fn check_segments(dir: &Path, segs: &[MediaSegment], frames_per_segment: Option<usize>) -> Vec<i64> {
    let mut starts = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.seq, i as u64, "segments are numbered from 0 without gaps");
        assert!(!s.data.is_empty() && s.data.len() % 188 == 0 && s.data[0] == 0x47, "segment {i} is not MPEG-TS");
        let path = write_ts(dir, &format!("{i:03}.ts"), &s.data);
        let pkts = packets(&path);
        let first_video = pkts.iter().find(|p| p.video).unwrap_or_else(|| panic!("segment {i} has no video"));
        assert!(first_video.key, "segment {i} does not start with a keyframe");
        starts.push(first_video.pts);
        let frames = decode(&path);
        let video: Vec<_> = frames.iter().filter(|(m, _)| m == "video").collect();
        assert_eq!(
            video.first().map(|(_, t)| t.as_str()),
            Some("I"),
            "segment {i}: first decoded frame is not an I frame"
        );
        if let Some(n) = frames_per_segment {
            assert_eq!(video.len(), n, "segment {i}: every video frame must decode");
        }
    }
    starts
}

#[test]
fn probe_describes_the_sample() {
    let info = probe(&sample()).expect("probe sample");
    assert_eq!(info.video_codec, "h264");
    assert_eq!(info.audio_codec.as_deref(), Some("aac"));
    assert_eq!((info.width, info.height), (1280, 720));
    assert!((1_800_000..3_000_000).contains(&info.bitrate_bps), "bitrate {}", info.bitrate_bps);
    assert_eq!(info.duration_ms, Some(16_000));
}

#[test]
fn sample_becomes_keyframe_aligned_self_contained_segments() {
    let dir = tempfile::tempdir().unwrap();
    let segs = collect(&opts(&sample(), false, false), None).expect("ingest sample");
    assert_eq!(segs.len(), 8, "16 s with a keyframe every 2 s makes 8 segments of 2 s");
    let total: u32 = segs.iter().map(|s| s.duration_ms).sum();
    assert!((15_900..=16_100).contains(&total), "durations sum to {total} ms");
    for s in &segs {
        assert!((1_900..=2_100).contains(&s.duration_ms), "segment {} lasts {} ms", s.seq, s.duration_ms);
    }
    // 25 fps, 2 s: all 50 frames of each GOP decode from the segment alone.
    let starts = check_segments(dir.path(), &segs, Some(50));
    for (k, w) in starts.windows(2).enumerate() {
        assert_eq!(
            w[1] - w[0],
            segs[k].duration_ms as i64 * TICKS / 1000,
            "segment {k}'s duration matches its timestamps"
        );
    }
    assert_eq!(stream_codecs(&write_ts(dir.path(), "one.ts", &segs[3].data)), ["h264", "aac"]);
    // MPEG-TS carries H.264 in Annex B: start codes, and the SPS/PPS in every segment (the
    // MP4 input has them once, in its header, and length-prefixed NAL units).
    for s in &segs {
        for nal in [[0, 0, 1, 0x67], [0, 0, 1, 0x68], [0, 0, 1, 0x65]] {
            assert!(s.data.windows(4).any(|w| w == nal), "segment {} lacks Annex B NAL {nal:x?}", s.seq);
        }
    }
}

#[test]
fn looped_ingest_keeps_timestamps_continuous_across_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    // 12 segments = the whole file (8) plus 4 from the second pass.
    let segs = collect(&opts(&sample(), true, false), Some(12)).expect("looped ingest");
    assert_eq!(segs.len(), 12, "a looped file does not end; ingest stopped when asked");
    let starts = check_segments(dir.path(), &segs, Some(50));
    for (k, w) in starts.windows(2).enumerate() {
        assert!(w[1] > w[0], "segment starts must increase: {starts:?}");
        assert_eq!(w[1] - w[0], 2 * TICKS, "segment {} starts 2 s after segment {k}: {starts:?}", k + 1);
    }
    assert_eq!(starts[8] - starts[0], 16 * TICKS, "the second pass starts exactly one file length later");

    // Played back to back, the segments are one seamless stream: every video frame one
    // frame (40 ms = 3600 ticks) after the previous, and audio without gaps or overlaps.
    let all: Vec<u8> = segs.iter().flat_map(|s| s.data.iter().copied()).collect();
    let path = write_ts(dir.path(), "all.ts", &all);
    let pkts = packets(&path);
    let video: Vec<&Pkt> = pkts.iter().filter(|p| p.video).collect();
    assert_eq!(video.len(), 600);
    for w in video.windows(2) {
        assert_eq!(w[1].dts - w[0].dts, 3600, "video dts jumps from {} to {}", w[0].dts, w[1].dts);
    }
    let mut audio: Vec<&Pkt> = pkts.iter().filter(|p| !p.video).collect();
    audio.sort_by_key(|p| p.pts);
    for w in audio.windows(2) {
        assert_eq!(w[1].pts, w[0].pts + w[0].duration, "audio gap or overlap at {}", w[0].pts);
    }
    let frames = decode(&path);
    assert_eq!(frames.iter().filter(|(m, _)| m == "video").count(), 600);

    // And an HLS client (FFmpeg's) plays the playlist of these segments through without
    // a decoding error or a lost frame.
    let mut m3u8 = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n");
    for s in &segs {
        m3u8 += &format!("#EXTINF:{:.3},\n{:03}.ts\n", s.duration_ms as f64 / 1000.0, s.seq);
    }
    m3u8 += "#EXT-X-ENDLIST\n";
    let playlist = dir.path().join("live.m3u8");
    std::fs::write(&playlist, m3u8).unwrap();
    let frames = decode(&playlist.to_string_lossy());
    assert_eq!(frames.iter().filter(|(m, _)| m == "video").count(), 600);
}

/// The PID and continuity counter of every MPEG-TS packet (null packets left out).
fn ts_counters(data: &[u8]) -> Vec<(u16, u8, bool)> {
    assert_eq!(data.len() % 188, 0, "whole 188-byte packets");
    data.chunks_exact(188)
        .map(|p| {
            assert_eq!(p[0], 0x47, "sync byte");
            ((u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]), p[3] & 0x0f, p[3] & 0x10 != 0)
        })
        .filter(|(pid, _, _)| *pid != 0x1fff)
        .collect()
}

#[test]
fn segments_read_back_to_back_are_one_valid_transport_stream() {
    let dir = tempfile::tempdir().unwrap();
    // Across the loop: the whole file (8 segments) and 3 from the second pass.
    let segs = collect(&opts(&sample(), true, false), Some(11)).expect("looped ingest");
    let mut last: std::collections::HashMap<u16, u8> = Default::default();
    for s in &segs {
        let packets = ts_counters(&s.data);
        // HLS: the first two packets of a segment are a PAT and a PMT.
        assert_eq!(packets[0].0, 0, "segment {} starts with a PAT", s.seq);
        assert_eq!(packets[1].0, 0x1000, "segment {} has the PMT second", s.seq);
        for (i, &(pid, cc, payload)) in packets.iter().enumerate() {
            if let Some(&prev) = last.get(&pid) {
                let want = if payload { (prev + 1) & 0x0f } else { prev };
                assert_eq!(cc, want, "segment {} packet {i}: pid {pid:#x} counter {cc} after {prev}", s.seq);
            }
            last.insert(pid, cc);
        }
    }
    // Video, audio, PAT, PMT, SDT all went through every boundary.
    assert!(last.len() >= 5, "{last:?}");

    // FFmpeg's HLS demuxer reads the segments as one stream and says nothing about it.
    let mut m3u8 = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n");
    for s in &segs {
        write_ts(dir.path(), &format!("{}.ts", s.seq), &s.data);
        m3u8 += &format!("#EXTINF:{:.3},\n{}.ts\n", s.duration_ms as f64 / 1000.0, s.seq);
    }
    m3u8 += "#EXT-X-ENDLIST\n";
    let playlist = dir.path().join("index.m3u8");
    std::fs::write(&playlist, m3u8).unwrap();
    let playlist = playlist.to_string_lossy().into_owned();
    let (_, err, ok) =
        run("ffmpeg", &["-hide_banner", "-nostdin", "-v", "warning", "-i", &playlist, "-f", "null", "-"]);
    assert!(ok, "ffmpeg failed: {err}");
    let lower = err.to_lowercase();
    assert!(!lower.contains("corrupt") && !lower.contains("discontinuity"), "ffmpeg complained:\n{err}");
}

#[test]
fn stop_flag_ends_ingest() {
    let stop = AtomicBool::new(false);
    let mut n = 0;
    ingest(&opts(&sample(), true, false), &stop, |_| {
        n += 1;
        if n == 3 {
            stop.store(true, Ordering::Relaxed);
        }
        true
    })
    .expect("stopped ingest returns Ok");
    assert_eq!(n, 3, "no segment is delivered after stop");

    let stopped = AtomicBool::new(true);
    let mut any = false;
    ingest(&opts(&sample(), true, false), &stopped, |_| {
        any = true;
        true
    })
    .expect("ingest stopped before it starts");
    assert!(!any);
}

#[test]
fn realtime_paces_a_file_at_its_own_speed() {
    let t0 = Instant::now();
    let segs = collect(&opts(&sample(), false, true), Some(1)).expect("paced ingest");
    let elapsed = t0.elapsed();
    assert_eq!(segs.len(), 1);
    // The first segment is complete when the keyframe at 2.0 s is read, which pacing
    // holds back until 2 s after the first packet.
    assert!(elapsed >= Duration::from_millis(1_950), "first segment after {elapsed:?}, expected about 2 s");

    let t0 = Instant::now();
    collect(&opts(&sample(), false, false), None).expect("unpaced ingest");
    assert!(t0.elapsed() < Duration::from_secs(12), "unpaced ingest of a 16 s file took {:?}", t0.elapsed());
}

fn assert_one_line(e: &MediaError) -> String {
    let msg = e.to_string();
    assert!(!msg.is_empty() && !msg.contains('\n'), "error message must be one line: {msg:?}");
    msg
}

/// Probe and ingest must refuse `input` the same way, without delivering anything.
fn refused(input: &str) -> (MediaError, String) {
    let e = probe(input).expect_err("probe must refuse this input");
    let msg = assert_one_line(&e);
    let stop = AtomicBool::new(false);
    let mut delivered = 0;
    let e2 = ingest(&opts(input, false, false), &stop, |_| {
        delivered += 1;
        true
    })
    .expect_err("ingest must refuse this input");
    assert_eq!(delivered, 0);
    assert_eq!(std::mem::discriminant(&e), std::mem::discriminant(&e2), "probe: {e}; ingest: {e2}");
    (e, msg)
}

#[test]
fn missing_file_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.mp4").to_string_lossy().into_owned();
    let (e, msg) = refused(&path);
    assert!(matches!(e, MediaError::OpenInput { .. }), "{e:?}");
    assert!(msg.contains(&path) && msg.contains("No such file"), "{msg}");
}

#[test]
fn non_media_file_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.mp4");
    std::fs::write(&path, "this is a shopping list, not a video\n".repeat(200)).unwrap();
    let (e, msg) = refused(&path.to_string_lossy());
    assert!(matches!(e, MediaError::OpenInput { .. }), "{e:?}");
    assert!(msg.contains("notes.mp4") && msg.contains("Invalid data"), "{msg}");
}

#[test]
fn audio_only_file_has_no_video() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(dir.path(), "tone.m4a", &["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"]);
    let (e, msg) = refused(&path);
    assert!(matches!(e, MediaError::NoVideo { .. }), "{e:?}");
    assert!(msg.contains("no video"), "{msg}");
}

#[test]
fn cover_art_is_not_video() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(
        dir.path(),
        "song.mp3",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=duration=1",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=64x64:d=0.04",
            "-map",
            "0:a",
            "-map",
            "1:v",
            "-c:a",
            "libmp3lame",
            "-c:v",
            "mjpeg",
            "-frames:v",
            "1",
            "-disposition:v",
            "attached_pic",
            "-id3v2_version",
            "3",
        ],
    );
    let (e, _) = refused(&path);
    assert!(matches!(e, MediaError::NoVideo { .. }), "{e:?}");
}

#[test]
fn video_codecs_hls_cannot_play_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=1"];
    for (name, codec, expected) in [("v.mp4", "mpeg4", "mpeg4"), ("v.webm", "libvpx-vp9", "vp9")] {
        let mut args = src.to_vec();
        args.extend(["-c:v", codec]);
        let path = make(dir.path(), name, &args);
        let (e, msg) = refused(&path);
        match &e {
            MediaError::UnsupportedVideoCodec { codec, .. } => assert_eq!(codec, expected),
            other => panic!("{name}: expected UnsupportedVideoCodec, got {other:?}"),
        }
        assert!(msg.contains(expected) && msg.contains("h264") && msg.contains("hevc"), "{msg}");
        assert!(msg.contains("aac") && msg.contains("mp3") && msg.contains("ac3"), "{msg}");
    }
}

#[test]
fn odd_names_are_errors_not_panics() {
    for input in ["", "a\0b.mp4"] {
        let (e, _) = refused(input);
        assert!(matches!(e, MediaError::OpenInput { .. }), "{e:?}");
    }
}

#[test]
fn damaged_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sample()).unwrap();
    // Truncated: the index (moov, at the front) promises more than the file holds.
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    // Garbage in the middle of the media data.
    let mut mangled = bytes.clone();
    let mut x: u32 = 12345;
    for b in &mut mangled[bytes.len() / 2..bytes.len() / 2 + 200_000] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let bad = dir.path().join("mangled.mp4");
    std::fs::write(&bad, &mangled).unwrap();
    // Random bytes in an MPEG-TS costume.
    let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let ts = dir.path().join("noise.ts");
    std::fs::write(&ts, noise).unwrap();

    for path in [&cut, &bad, &ts] {
        let path = path.to_string_lossy().into_owned();
        let _ = probe(&path);
        match collect(&opts(&path, false, false), None) {
            Ok(segs) => {
                for s in &segs {
                    assert!(s.data.len() % 188 == 0, "{path}: segment {} is not whole TS packets", s.seq);
                }
            }
            Err(e) => {
                assert_one_line(&e);
            }
        }
    }
    // The truncated file still yields the segments it holds, each decodable.
    if let Ok(segs) = collect(&opts(&cut.to_string_lossy(), false, false), None) {
        assert!(!segs.is_empty());
        check_segments(dir.path(), &segs[..segs.len() - 1], Some(50));
    }
}

#[test]
fn unplayable_audio_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = make(
        dir.path(),
        "pcm.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=4",
            "-c:v",
            "libx264",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "pcm_s16le",
        ],
    );
    let info = probe(&path).expect("video with odd audio is accepted");
    assert_eq!(info.video_codec, "h264");
    assert_eq!(info.audio_codec, None);
    let segs = collect(&opts(&path, false, false), None).expect("ingest");
    assert_eq!(segs.len(), 2);
    let dir2 = tempfile::tempdir().unwrap();
    check_segments(dir2.path(), &segs, Some(50));
    assert_eq!(stream_codecs(&write_ts(dir.path(), "s.ts", &segs[0].data)), ["h264"]);
}

#[test]
fn hevc_and_mpegts_inputs_are_remuxed() {
    let dir = tempfile::tempdir().unwrap();
    let hevc = make(
        dir.path(),
        "hevc.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=4",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=4",
            // Closed GOPs: with x265's default open GOPs the frames that lead a keyframe
            // refer to the previous segment, so a segment would not decode fully alone.
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=50:min-keyint=50:scenecut=0:open-gop=0:log-level=error",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "ac3",
        ],
    );
    let info = probe(&hevc).expect("probe hevc");
    assert_eq!((info.video_codec.as_str(), info.audio_codec.as_deref()), ("hevc", Some("ac3")));
    let segs = collect(&opts(&hevc, false, false), None).expect("ingest hevc");
    assert_eq!(segs.len(), 2);
    check_segments(dir.path(), &segs, Some(50));

    // An MPEG-TS file (already Annex B, as a UDP feed would be) goes through unchanged.
    let ts = make(dir.path(), "sample.ts", &["-i", &sample(), "-c", "copy", "-f", "mpegts"]);
    let segs = collect(&opts(&ts, false, false), None).expect("ingest ts");
    assert_eq!(segs.len(), 8);
    check_segments(dir.path(), &segs, Some(50));
}

/// A free UDP port on loopback (bound then released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free TCP port on loopback (bound then released).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

type Live = Result<(Option<meshtv_media::InputInfo>, Vec<MediaSegment>), MediaError>;

/// Runs (probe and) ingest on its own thread, so the test can bound how long it waits.
fn ingest_in_thread(
    input: String,
    probe_first: bool,
    stop: Arc<AtomicBool>,
    limit: usize,
) -> std::sync::mpsc::Receiver<Live> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let run = || -> Live {
            let info = if probe_first { Some(probe(&input)?) } else { None };
            let mut segs = Vec::new();
            ingest(&opts(&input, false, false), &stop, |s| {
                segs.push(s);
                segs.len() < limit
            })?;
            Ok((info, segs))
        };
        let _ = tx.send(run());
    });
    rx
}

#[test]
fn stop_interrupts_a_live_input_that_sends_nothing() {
    for url in [format!("udp://127.0.0.1:{}", free_udp_port()), format!("rtmp://127.0.0.1:{}/live/x", free_tcp_port())]
    {
        let stop = Arc::new(AtomicBool::new(false));
        let rx = ingest_in_thread(url.clone(), false, stop.clone(), usize::MAX);
        // Whether the flag is raised before or during the wait, ingest must come back.
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let r = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{url}: ingest ignored stop"));
        assert!(r.expect("stopped ingest is Ok").1.is_empty());
    }
}

#[test]
fn live_udp_feed_is_segmented() {
    let port = free_udp_port();
    let url = format!("udp://127.0.0.1:{port}");
    let stop = Arc::new(AtomicBool::new(false));
    let rx = ingest_in_thread(url.clone(), true, stop.clone(), 3);
    // The feed runs at twice real time; probe and ingest join wherever it is, and ingest
    // starts at the first keyframe it sees.
    let mut sender = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-readrate", "2", "-stream_loop", "-1", "-i", &sample()])
        .args(["-c", "copy", "-f", "mpegts", &format!("{url}?pkt_size=1316")])
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot run ffmpeg: these tests need the ffmpeg CLI (apt install ffmpeg)");
    let r = rx.recv_timeout(Duration::from_secs(60));
    let _ = sender.kill();
    let _ = sender.wait();
    stop.store(true, Ordering::Relaxed);
    let (info, segs) = r.expect("live ingest produced nothing in 60 s").expect("live ingest");
    let info = info.expect("probed");
    assert_eq!((info.video_codec.as_str(), info.audio_codec.as_deref(), info.duration_ms), ("h264", Some("aac"), None));
    // MPEG-TS declares no video bitrate: the 2 Mbps fallback, not the audio's 128 kbps.
    assert_eq!(info.bitrate_bps, 2_000_000);
    assert_eq!(segs.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let starts = check_segments(dir.path(), &segs, Some(50));
    for w in starts.windows(2) {
        assert_eq!(w[1] - w[0], 2 * TICKS, "{starts:?}");
    }
}

#[test]
fn probed_rtmp_publisher_is_handed_to_ingest() {
    let url = format!("rtmp://127.0.0.1:{}/live/test", free_tcp_port());
    let (tx, rx) = std::sync::mpsc::channel();
    let listen = url.clone();
    std::thread::spawn(move || {
        let r = probe(&listen).and_then(|info| {
            let stop = AtomicBool::new(false);
            let mut segs = Vec::new();
            ingest(&opts(&listen, false, false), &stop, |s| {
                segs.push(s);
                true
            })
            .map(|()| (info, segs))
        });
        let _ = tx.send(r);
    });
    // The encoder publishes once, as OBS would, and never reconnects: ingest gets the
    // stream only if probe handed the connection over. It is retried only while the
    // listener is not up yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, err, ok) = run(
            "ffmpeg",
            &[
                "-hide_banner",
                "-loglevel",
                "error",
                "-readrate",
                "4",
                "-i",
                &sample(),
                "-t",
                "7",
                "-c",
                "copy",
                "-f",
                "flv",
                &url,
            ],
        );
        if ok {
            break;
        }
        assert!(err.contains("Connection refused"), "publishing failed: {err}");
        assert!(Instant::now() < deadline, "the rtmp listener never came up");
    }
    let (info, segs) =
        rx.recv_timeout(Duration::from_secs(30)).expect("ingest did not end with the publisher").expect("rtmp");
    assert_eq!((info.video_codec.as_str(), info.width, info.height, info.duration_ms), ("h264", 1280, 720, None));
    assert!((1_500_000..3_000_000).contains(&info.bitrate_bps), "bitrate {}", info.bitrate_bps);
    // 7 s published: three full segments, then what was left when the encoder hung up.
    assert!(segs.len() >= 4, "{} segments", segs.len());
    assert!(segs[..3].iter().all(|s| s.duration_ms == 2000));
    let dir = tempfile::tempdir().unwrap();
    check_segments(dir.path(), &segs[..3], Some(50));
    check_segments(dir.path(), &segs, None);
}
