//! Bad command-line input gets one clear line on stderr and a non-zero exit.

use meshtv_tests::*;
use std::time::Duration;

fn one_error_line(args: &[&str], expect: &str) {
    let out = run_meshtv(args, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("meshtv: error:")).collect();
    assert!(!out.status.success(), "meshtv {args:?} succeeded: {stderr}");
    assert_eq!(errors.len(), 1, "meshtv {args:?} should print one error line, got: {stderr}");
    assert!(errors[0].contains(expect), "meshtv {args:?}: expected {expect:?} in {:?}", errors[0]);
    assert!(!stderr.contains("panicked"), "meshtv {args:?} panicked: {stderr}");
}

#[test]
fn tracker_unreachable() {
    // A UDP port with nothing behind it: bind one, learn its number, close it.
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    one_error_line(
        &["watch", "--tracker", &format!("127.0.0.1:{port}"), "--http", "127.0.0.1:0", "news"],
        "tracker unreachable",
    );
}

#[test]
fn missing_input_file() {
    one_error_line(&["broadcast", "--channel", "x", "/nonexistent/video.mp4"], "/nonexistent/video.mp4");
}

#[test]
fn input_that_is_not_media() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.mp4");
    std::fs::write(&f, b"this is not a video").unwrap();
    one_error_line(&["broadcast", "--channel", "x", f.to_str().unwrap()], "notes.mp4");
}

#[test]
fn busy_http_port() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    one_error_line(&["watch", "--http", &addr, "news"], "port busy");
}

#[test]
fn unknown_channel_and_busy_tracker_port() {
    let mut tracker = Proc::spawn("tracker", &["tracker".into(), "--listen".into(), "127.0.0.1:0".into()]);
    let addr = tracker.expect_line("tracker listening on ", Duration::from_secs(20));
    // A channel that is not live is waited for (tests/tests/late_channel.rs), within
    // `--duration` when one is given.
    let watch = ["watch", "--tracker", &addr, "--http", "127.0.0.1:0", "--duration", "2", "nosuchchannel"];
    one_error_line(&watch, "nosuchchannel");
    one_error_line(&["tracker", "--listen", &addr], &addr);
}

#[test]
fn bad_flag_values() {
    one_error_line(&["demo", "--viewers", "0"], "--viewers");
    one_error_line(&["broadcast", "--channel", "x", "--segment-secs", "100", "whatever.mp4"], "--segment-secs");
}
