//! A live channel through a swarm of real `meshtv` processes on loopback.
//!
//! One swarm of 8 viewers runs for over 30 s; while it runs, ffprobe decodes a viewer's
//! HLS stream and headless Chromium plays another viewer's page. At the end every viewer
//! must have played without a stall, served exactly the bytes the broadcaster produced,
//! and most bytes must have come from peers.

use meshtv_tests::*;
use std::process::Command;
use std::time::{Duration, Instant};

const VIEWERS: usize = 8;
const RUN: Duration = Duration::from_secs(32);

fn ffprobe_decodes(url: &str) -> f64 {
    // Decode (not just parse) at least 10 s of media from the live playlist.
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-read_intervals", "%+12", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames,avg_frame_rate", "-of", "json", url])
        .output()
        .expect("ffprobe must be installed (scripts/install-deps installs ffmpeg)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "ffprobe failed on {url}: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    let frames: f64 = s["nb_read_frames"].as_str().and_then(|x| x.parse().ok()).expect("frame count");
    let rate = s["avg_frame_rate"].as_str().unwrap_or("25/1");
    let (n, d) = rate.split_once('/').unwrap_or((rate, "1"));
    let fps = n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap().max(1.0);
    frames / fps
}

fn chromium_plays(page: &str) -> serde_json::Value {
    let script = repo_root().join("player/tests/play.mjs");
    let out = Command::new("node")
        .arg(&script)
        .args([page, "60", "5"])
        .current_dir(repo_root().join("player"))
        .output()
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|_| panic!("play.mjs printed no JSON: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "chromium did not play {page}: {v}");
    v
}

#[test]
fn eight_viewers_play_the_broadcast_without_stalls_mostly_from_peers() {
    let mut swarm = Swarm::start("e2e");
    for _ in 0..VIEWERS {
        swarm.add_viewer(&[]);
    }
    let started = Instant::now();
    for (i, v) in swarm.viewers.iter().enumerate() {
        wait_for(&format!("viewer {} to start playing", i + 1), Duration::from_secs(30), || {
            v.stats().filter(|s| s["startup_s"].is_number())
        });
    }

    // While the swarm runs: ffprobe decodes viewer 1's stream, Chromium plays viewer 2's page.
    let hls = swarm.viewers[0].playlist_url("e2e");
    let page = format!("http://{}/", swarm.viewers[1].http);
    let probe = std::thread::spawn(move || ffprobe_decodes(&hls));
    let browser = std::thread::spawn(move || chromium_plays(&page));
    let decoded_s = probe.join().expect("ffprobe thread");
    assert!(decoded_s >= 10.0, "ffprobe decoded only {decoded_s:.1} s");
    let played = browser.join().expect("browser thread");
    assert!(played["advanced_s"].as_f64().unwrap_or(0.0) >= 5.0, "{played}");

    while started.elapsed() < RUN {
        for v in swarm.viewers.iter_mut() {
            assert!(v.proc.is_running(), "{} exited", v.proc.name);
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    let (mut from_source, mut compared) = (0u64, 0usize);
    for v in &swarm.viewers {
        let s = v.stats().expect("stats");
        assert_eq!(num(&s, "stalls"), 0, "{} stalled: {s}", v.proc.name);
        assert!(num(&s, "segments_played") >= 8, "{} played too little: {s}", v.proc.name);
        from_source += num(&s, "bytes_from_source");
        let text = String::from_utf8(http_get(&v.playlist_url("e2e")).expect("playlist")).expect("utf8");
        let segs = playlist_segments(&text);
        assert!(segs.len() >= 3, "{}: short playlist {text}", v.proc.name);
        for seq in segs {
            let served = http_get(&format!("http://{}/live/e2e/{seq}.ts", v.http)).expect("segment");
            let produced = swarm.produced(seq).expect("broadcaster dumped the segment");
            assert!(served == produced, "{} served different bytes for segment {seq}", v.proc.name);
            compared += 1;
        }
    }
    assert!(compared >= VIEWERS * 3);
    // Savings from what the broadcaster put on the wire, never from the viewers' counters:
    // its UDP bytes include every piece the viewers say came from it, and more.
    let (savings, wire, delivered) = swarm.savings();
    let savings = savings.expect("bytes delivered");
    eprintln!(
        "e2e: savings {savings:.3}, source wire {wire} B (viewers' bytes_from_source {from_source} B), \
         delivered {delivered} B, {compared} segments compared"
    );
    assert!(wire > from_source, "the source's wire bytes {wire} below what viewers got from it {from_source}");
    assert!(savings > 0.5, "savings {savings:.3}");
}

#[test]
fn killing_two_of_eight_viewers_does_not_stall_the_rest() {
    let mut swarm = Swarm::start("churn");
    for _ in 0..VIEWERS {
        swarm.add_viewer(&[]);
    }
    for (i, v) in swarm.viewers.iter().enumerate() {
        wait_for(&format!("viewer {} to start playing", i + 1), Duration::from_secs(30), || {
            v.stats().filter(|s| s["startup_s"].is_number())
        });
    }
    // Kill the two viewers that upload the most: the ones whose loss hurts.
    let mut uploads: Vec<(u64, usize)> = swarm
        .viewers
        .iter()
        .enumerate()
        .map(|(i, v)| (v.stats().map_or(0, |s| num(&s, "bytes_uploaded")), i))
        .collect();
    uploads.sort();
    let victims: Vec<usize> = uploads.iter().rev().take(2).map(|(_, i)| *i).collect();
    for &i in &victims {
        swarm.viewers[i].proc.kill();
    }
    let killed_at = Instant::now();
    let before: Vec<u64> = swarm.viewers.iter().map(|v| v.stats().map_or(0, |s| num(&s, "segments_played"))).collect();
    while killed_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
    }
    for (i, v) in swarm.viewers.iter().enumerate() {
        if victims.contains(&i) {
            continue;
        }
        let s = v.stats().expect("stats");
        assert!(num(&s, "stall_ms_max") <= 2000, "{} stalled over 2 s: {s}", v.proc.name);
        assert!(num(&s, "segments_played") >= before[i] + 7, "{} stopped playing: {s}", v.proc.name);
    }
}

#[test]
fn a_viewer_uploading_corrupt_pieces_is_dropped_and_no_bad_byte_is_served() {
    let mut swarm = Swarm::start("evil");
    // The corrupting viewer joins first so that it takes slots high in the trees.
    swarm.add_viewer(&["--fault", "corrupt-uploads"]);
    for _ in 0..5 {
        swarm.add_viewer(&[]);
    }
    let honest = &swarm.viewers[1..];
    for v in honest {
        // On a loaded machine a start can take longer; say what the viewer saw if it never comes.
        let started = std::time::Instant::now();
        while !v.stats().is_some_and(|s| s["startup_s"].is_number()) {
            assert!(started.elapsed() < Duration::from_secs(60), "{} never started: {:?}", v.proc.name, v.stats());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let dropped = wait_for("an honest viewer to drop the corrupting peer", Duration::from_secs(30), || {
        let d: u64 = honest.iter().filter_map(|v| v.stats()).map(|s| num(&s, "peers_dropped")).sum();
        (d > 0).then_some(d)
    });
    std::thread::sleep(Duration::from_secs(6));
    for v in honest {
        let s = v.stats().expect("stats");
        assert!(num(&s, "segments_played") >= 3, "{}: {s}", v.proc.name);
        let text = String::from_utf8(http_get(&v.playlist_url("evil")).expect("playlist")).expect("utf8");
        for seq in playlist_segments(&text) {
            let served = http_get(&format!("http://{}/live/evil/{seq}.ts", v.http)).expect("segment");
            assert!(served == swarm.produced(seq).expect("dumped"), "{} served a bad segment {seq}", v.proc.name);
        }
    }
    eprintln!("evil: corrupting peer dropped {dropped} times");
}
