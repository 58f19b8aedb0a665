//! The whole viewing path in a real browser: ffmpeg makes MPEG-TS segments, a fake live
//! view releases them one per segment duration through `serve()`, and headless Chromium
//! opens the player page and must play at least 5 s of video (player/tests/play.mjs).
//!
//! Needs ffmpeg, Chromium at /usr/bin/chromium (or $CHROMIUM), node, and `npm ci` in
//! player/ (scripts/install-deps does all of it). Missing tools fail the test: a browser
//! check that skips itself proves nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meshtv_gateway::{serve, PlaylistEntry, SwarmView};

const CHANNEL: &str = "test pattern";
const SECONDS_OF_VIDEO: u32 = 30;

/// A live channel played back from segments made beforehand: `released` of them are out.
struct FakeLive {
    segments: Vec<(PlaylistEntry, Bytes)>,
    released: AtomicUsize,
}

impl FakeLive {
    fn out(&self) -> &[(PlaylistEntry, Bytes)] {
        let n = self.released.load(Ordering::Acquire).min(self.segments.len());
        &self.segments[..n]
    }
}

impl SwarmView for FakeLive {
    fn channel(&self) -> String {
        CHANNEL.to_string()
    }
    fn playlist(&self) -> Vec<PlaylistEntry> {
        self.out().iter().map(|(e, _)| *e).collect()
    }
    fn segment(&self, seq: u64) -> Option<Bytes> {
        self.out().iter().find(|(e, _)| e.seq == seq).map(|(_, b)| b.clone())
    }
    fn stats(&self) -> serde_json::Value {
        let bytes: usize = self.out().iter().map(|(_, b)| b.len()).sum();
        serde_json::json!({
            "bytes_from_peers": bytes * 9 / 10,
            "bytes_from_source": bytes / 10,
            "partners": 5,
            "buffer_s": 6.0,
            "stalls": 0,
            "startup_s": 1.8,
        })
    }
}

fn require_tool(program: &str, arg: &str, what: &str) {
    let ran = std::process::Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        matches!(ran, Ok(s) if s.success()),
        "{program} is required for the browser test ({what}); run scripts/install-deps"
    );
}

fn player_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../player")
}

/// Encodes a test pattern with sound into 2 s MPEG-TS segments; returns them in order.
fn make_segments(dir: &Path) -> Vec<(PlaylistEntry, Bytes)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create segment dir");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &SECONDS_OF_VIDEO.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"])
        .args(["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "96k"])
        .args(["-f", "hls", "-hls_time", "2", "-hls_list_size", "0", "-hls_segment_filename"])
        .arg(dir.join("%d.ts"))
        .arg(dir.join("index.m3u8"))
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed to make test segments");

    let index = std::fs::read_to_string(dir.join("index.m3u8")).expect("read ffmpeg's playlist");
    let mut segments = Vec::new();
    let mut duration_ms = None;
    for line in index.lines() {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let secs: f64 = rest.trim_end_matches(',').split(',').next().unwrap_or("").parse().expect("EXTINF");
            duration_ms = Some((secs * 1000.0).round() as u32);
        } else if !line.starts_with('#') && !line.is_empty() {
            let seq = segments.len() as u64;
            let data = std::fs::read(dir.join(line)).expect("read segment");
            let duration_ms = duration_ms.take().expect("EXTINF before segment");
            segments.push((PlaylistEntry { seq, duration_ms, created_ms: None }, Bytes::from(data)));
        }
    }
    assert!(segments.len() >= 10, "expected about {} segments, got {}", SECONDS_OF_VIDEO / 2, segments.len());
    segments
}

/// Serves `segments` as a fresh live channel and has play.mjs watch the page; returns
/// play.mjs' report after checking that it played.
async fn watch(segments: &[(PlaylistEntry, Bytes)], chromium: &str, without_hlsjs: bool) -> serde_json::Value {
    let step = Duration::from_millis(u64::from(segments[0].0.duration_ms));
    let view = Arc::new(FakeLive { segments: segments.to_vec(), released: AtomicUsize::new(0) });

    // Nothing is out at first, so the page meets the 503 "buffering" answer before playing.
    let feeder = {
        let view = view.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
            loop {
                ticks.tick().await;
                if view.released.fetch_add(1, Ordering::AcqRel) >= view.segments.len() {
                    break;
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, view.clone(), async move {
        let _ = stopped.await;
    }));

    let mut node = tokio::process::Command::new("node");
    node.arg(player_dir().join("tests/play.mjs")).arg(format!("http://{addr}/")).args(["60", "5"]);
    node.env("CHROMIUM", chromium).kill_on_drop(true);
    if without_hlsjs {
        node.env("PLAY_WITHOUT_HLSJS", "1").env_remove("PLAY_SCREENSHOT");
    }
    let output = node.output().await.expect("run node");

    let _ = stop.send(());
    feeder.abort();
    server.await.expect("server task").expect("serve");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("play.mjs: {stdout}");
    let line = stdout.lines().last().unwrap_or("");
    let report: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("play.mjs printed no JSON ({e}); stdout: {stdout}\nstderr: {stderr}"));
    assert_eq!(report["ok"], true, "the page did not play: {report}\nstderr: {stderr}");
    assert!(output.status.success(), "play.mjs exited with {}", output.status);
    assert!(report["advanced_s"].as_f64().unwrap_or(0.0) >= 5.0, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_page() {
    require_tool("ffmpeg", "-version", "it makes the test segments");
    require_tool("node", "--version", "it runs player/tests/play.mjs");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "Chromium is required for the browser test at {chromium}; run scripts/install-deps"
    );
    for module in ["playwright-core", "hls.js"] {
        assert!(
            player_dir().join("node_modules").join(module).is_dir(),
            "player/node_modules/{module} is missing: run `npm ci` in player/ (then rebuild, so the gateway embeds hls.js)"
        );
    }

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gateway-browser-{}", std::process::id()));
    let segments = make_segments(&dir);
    let _ = std::fs::remove_dir_all(&dir);

    // The two ways the page plays, one after the other so they do not share the 2 cores.
    let with_hlsjs = watch(&segments, &chromium, false).await;
    assert_eq!(with_hlsjs["engine"], "hls.js", "{with_hlsjs}");
    let native = watch(&segments, &chromium, true).await;
    assert_eq!(native["engine"], "native", "{native}");
}
