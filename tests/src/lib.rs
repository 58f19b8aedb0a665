//! Support for end-to-end tests: real `meshtv` processes on loopback, driven the way a
//! user drives them, observed through their stdout lines and HTTP stats.
//!
//! Every wait is bounded by a deadline and every process is stopped when its handle is
//! dropped, so a failing test leaves nothing running.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `meshtv` binary the test command built (`cargo build -p meshtv`).
pub fn meshtv_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MESHTV_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/meshtv");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p meshtv` (scripts/test does)",
        bin.display()
    );
    bin
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

pub fn sample_video() -> PathBuf {
    let p = repo_root().join("assets/sample.mp4");
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// Runs `meshtv ARGS` to completion (bounded), for commands expected to fail fast.
pub fn run_meshtv(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(meshtv_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshtv");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("meshtv {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A running `meshtv` process, stopped when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String]) -> Proc {
        let mut child = Command::new(meshtv_bin())
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { name: name.into(), child, lines }
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}: no line starting with {prefix:?} within {timeout:?}", self.name);
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].trim().to_string(),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!("{} exited ({status:?}) before printing {prefix:?}", self.name);
                }
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A viewer process and the HTTP address of its gateway.
pub struct Viewer {
    pub proc: Proc,
    pub http: String,
}

impl Viewer {
    pub fn stats(&self) -> Option<Value> {
        http_get(&format!("http://{}/api/stats", self.http)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    pub fn playlist_url(&self, channel: &str) -> String {
        format!("http://{}/live/{channel}/index.m3u8", self.http)
    }
}

/// A swarm on loopback: tracker, broadcaster (dumping what it produced, serving its
/// figures over HTTP), viewers.
pub struct Swarm {
    pub tracker_addr: String,
    pub channel: String,
    pub dump: tempfile::TempDir,
    pub viewers: Vec<Viewer>,
    pub broadcaster: Proc,
    /// The broadcaster's `/api/stats` URL (`meshtv broadcast --http`).
    pub broadcaster_stats: String,
    pub tracker: Proc,
}

impl Swarm {
    pub fn start(channel: &str) -> Swarm {
        let mut tracker = Proc::spawn("tracker", &["tracker".into(), "--listen".into(), "127.0.0.1:0".into()]);
        let tracker_addr = tracker.expect_line("tracker listening on ", Duration::from_secs(20));
        let dump = tempfile::tempdir().expect("tempdir");
        let mut broadcaster = Proc::spawn(
            "broadcaster",
            &[
                "broadcast".into(),
                "--tracker".into(),
                tracker_addr.clone(),
                "--channel".into(),
                channel.into(),
                "--loop".into(),
                "--dump-dir".into(),
                dump.path().display().to_string(),
                "--http".into(),
                "127.0.0.1:0".into(),
                sample_video().display().to_string(),
            ],
        );
        let broadcaster_stats = broadcaster.expect_line("stats: ", Duration::from_secs(30));
        broadcaster.expect_line("broadcasting", Duration::from_secs(30));
        Swarm {
            tracker_addr,
            channel: channel.into(),
            dump,
            viewers: Vec::new(),
            broadcaster,
            broadcaster_stats,
            tracker,
        }
    }

    /// The broadcaster's figures: `wire_bytes_sent`, `media_bytes_sent`, `viewers_connected`.
    pub fn source_stats(&self) -> Option<Value> {
        http_get(&self.broadcaster_stats).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Savings as DESIGN.md defines it, from the broadcaster's wire bytes and the media
    /// bytes the viewers' players played: `(savings, wire, delivered)`.
    pub fn savings(&self) -> (Option<f64>, u64, u64) {
        let delivered: u64 = self.viewers.iter().filter_map(|v| v.stats()).map(|s| num(&s, "bytes_played")).sum();
        let wire = num(&self.source_stats().expect("broadcaster stats"), "wire_bytes_sent");
        (meshtv_proto::metrics::savings(wire, delivered), wire, delivered)
    }

    pub fn add_viewer(&mut self, extra: &[&str]) -> usize {
        let n = self.viewers.len() + 1;
        let mut args: Vec<String> =
            vec!["watch".into(), "--tracker".into(), self.tracker_addr.clone(), "--http".into(), "127.0.0.1:0".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(self.channel.clone());
        let mut proc = Proc::spawn(&format!("viewer {n}"), &args);
        let url = proc.expect_line("player: ", Duration::from_secs(30));
        let http = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        self.viewers.push(Viewer { proc, http });
        n - 1
    }

    /// What the broadcaster produced for segment `seq`.
    pub fn produced(&self, seq: u64) -> Option<Vec<u8>> {
        std::fs::read(self.dump.path().join(format!("{seq}.ts"))).ok()
    }
}

pub fn http_get(url: &str) -> Result<Vec<u8>, String> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

/// Polls `f` every 100 ms until it returns Some, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Segment numbers listed in an HLS media playlist.
pub fn playlist_segments(text: &str) -> Vec<u64> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.trim().strip_suffix(".ts")?.parse().ok()).collect()
}

pub fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}
