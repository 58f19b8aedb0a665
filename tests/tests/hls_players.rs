//! What an ordinary HLS player makes of a viewer's stream: FFmpeg, started the moment
//! `meshtv watch` prints the playlist URL (before the viewer has a segment to list),
//! must get the playlist rather than an error, decode at least 10 s, and never report a
//! corrupt packet or a discontinuity across the segments' boundaries.

use meshtv_tests::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Media FFmpeg is asked to read from the live playlist.
const READ_S: &str = "20";

#[test]
fn ffmpeg_started_before_the_first_segment_decodes_the_stream_cleanly() {
    let mut swarm = Swarm::start("hls");
    swarm.add_viewer(&[]);
    let viewer = &swarm.viewers[0];
    let url = viewer.playlist_url("hls");
    // The viewer has not started playing, so its playlist is still empty: FFmpeg's first
    // request is one the gateway must hold until the first segment is ready.
    let before_first_segment = viewer.stats().is_some_and(|s| !s["startup_s"].is_number());

    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "warning", "-i", &url, "-t", READ_S])
        .args(["-progress", "pipe:1", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg must be installed (scripts/install-deps installs it)");
    let mut stdout = ffmpeg.stdout.take().expect("stdout");
    let mut stderr = ffmpeg.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = ffmpeg.try_wait().expect("wait for ffmpeg") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = ffmpeg.kill();
            let _ = ffmpeg.wait();
            panic!("ffmpeg did not finish reading {READ_S} s of {url} within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let progress = out.join().expect("stdout reader");
    let log = err.join().expect("stderr reader");

    // `-progress` reports out_time_us=N lines; the last one is how far FFmpeg decoded.
    let decoded_s = progress
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .find_map(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0) as f64
        / 1e6;
    eprintln!("hls: ffmpeg decoded {decoded_s:.1} s (started before the first segment: {before_first_segment})");
    assert!(status.success(), "ffmpeg failed on {url} ({status}):\n{log}");
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("corrupt") || l.contains("discontinuity")
        })
        .collect();
    assert!(complaints.is_empty(), "ffmpeg reported {} problems on {url}:\n{log}", complaints.len());
    assert!(decoded_s >= 10.0, "ffmpeg decoded only {decoded_s:.1} s of {url}:\n{log}");
    assert!(
        before_first_segment,
        "the viewer was already playing when ffmpeg started, so the playlist wait was not exercised"
    );
}
