//! A viewer that opens its player before the channel is live waits for it (issue 22):
//! `watch` says so, asks the tracker again, and plays once the broadcaster starts.

use meshtv_tests::{http_get, playlist_segments, sample_video, wait_for, Proc};
use std::time::Duration;

#[test]
fn a_viewer_started_before_its_channel_plays_once_the_channel_starts() {
    let mut tracker = Proc::spawn("tracker", &["tracker".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let tracker_addr = tracker.expect_line("tracker listening on ", Duration::from_secs(20));
    let watch = ["watch", "--tracker", &tracker_addr, "--http", "127.0.0.1:0", "late"];
    let mut viewer = Proc::spawn("viewer", &watch.map(String::from));
    let waiting = viewer.expect_line("waiting: ", Duration::from_secs(20));
    assert!(waiting.contains("'late' is not live"), "{waiting}");
    // Still waiting, not gone, a few rejoins later (a span of behaviour, not readiness).
    std::thread::sleep(Duration::from_secs(3));
    assert!(viewer.is_running(), "the viewer gave up on a channel that is not live yet");
    let broadcast = ["broadcast", "--tracker", &tracker_addr, "--channel", "late", "--loop"];
    let mut args: Vec<String> = broadcast.map(String::from).to_vec();
    args.push(sample_video().display().to_string());
    let mut broadcaster = Proc::spawn("broadcaster", &args);
    broadcaster.expect_line("broadcasting", Duration::from_secs(30));
    let player = viewer.expect_line("player: ", Duration::from_secs(30));
    let http = player.trim_start_matches("http://").trim_end_matches('/').to_string();
    let url = format!("http://{http}/live/late/index.m3u8");
    let listed = wait_for("two segments in the late viewer's playlist", Duration::from_secs(40), || {
        let text = String::from_utf8(http_get(&url).ok()?).ok()?;
        let segments = playlist_segments(&text);
        (segments.len() >= 2).then_some(segments)
    });
    assert!(listed.len() >= 2, "{listed:?}");
}
