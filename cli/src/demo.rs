//! `meshtv demo`: a whole swarm on this machine, each role in its own process, exactly
//! as a user would run them by hand: a tracker, a broadcaster looping the sample video,
//! and N viewers with their own players' gateways.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Number of viewers.
    #[arg(long, default_value_t = 5)]
    pub viewers: u32,
    /// HTTP port of viewer 1's gateway; viewer k uses the port after viewer k-1's.
    #[arg(long, default_value_t = 8080)]
    pub http_base: u16,
    /// Stop after this many seconds and print a JSON summary as the last line of stdout.
    #[arg(long)]
    pub duration: Option<f64>,
    /// The video to loop live (default: the bundled sample).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Passed to the broadcaster: full copies of the stream it uploads.
    #[arg(long, default_value_t = 1)]
    pub max_copies: u32,
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped, so an
/// interrupted demo leaves nothing behind.
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(name: &str, args: &[String]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("locating the meshtv binary")?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc { name: name.to_string(), child, lines })
    }

    /// Waits for a stdout line starting with `prefix`; fails if the process exits first.
    fn expect_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line.starts_with(prefix) => return Ok(line[prefix.len()..].trim().to_string()),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait()? {
                        bail!("{} exited ({status}) before it was ready", self.name);
                    }
                    if left.is_zero() {
                        bail!("{} was not ready within {:?}", self.name, timeout);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!("{} exited ({status}) before it was ready", self.name);
                }
            }
        }
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM lets the process close its connections; kill if it lingers.
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sample_video() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from("assets/sample.mp4"),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/sample.mp4")),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .context("sample video assets/sample.mp4 not found; run from the repository or pass --input")
}

/// CPU seconds used so far and peak resident memory (KiB) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((ticks as f64 / 100.0, hwm))
}

fn fetch_stats(port: u16) -> Option<Value> {
    fetch_json(&format!("http://127.0.0.1:{port}/api/stats"))
}

fn fetch_json(url: &str) -> Option<Value> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    let body = agent.get(url).call().ok()?.into_string().ok()?;
    serde_json::from_str(&body).ok()
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The demo's summary, with savings as DESIGN.md defines it: 1 − the UDP bytes the
/// broadcaster sent (its `/api/stats`, `wire_bytes_sent`) / the media bytes the viewers'
/// players played (their `bytes_played`). The viewers' own `bytes_from_source` is shown
/// too, but savings never comes from it. `source` is `None` until the broadcaster answers.
fn summarize(stats: &[Option<Value>], source: Option<&Value>) -> Value {
    let per_viewer: Vec<Value> = stats.iter().map(|s| s.clone().unwrap_or(Value::Null)).collect();
    let live: Vec<&Value> = stats.iter().flatten().collect();
    let from_source: u64 = live.iter().map(|v| num(v, "bytes_from_source")).sum();
    let peers: u64 = live.iter().map(|v| num(v, "bytes_from_peers")).sum();
    let delivered: u64 = live.iter().map(|v| num(v, "bytes_played")).sum();
    let wire = source.map(|s| num(s, "wire_bytes_sent"));
    json!({
        "viewers": stats.len(),
        "segments_played": live.iter().map(|v| num(v, "segments_played")).sum::<u64>(),
        "stalls": live.iter().map(|v| num(v, "stalls")).sum::<u64>(),
        "bytes_from_peers": peers,
        "bytes_from_source": from_source,
        "source_wire_bytes": wire,
        "source_media_bytes": source.map(|s| num(s, "media_bytes_sent")),
        "bytes_delivered": delivered,
        "savings": wire.and_then(|w| meshtv_proto::metrics::savings(w, delivered)),
        "broadcaster": source,
        "per_viewer": per_viewer,
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.viewers == 0 {
        bail!("--viewers must be at least 1");
    }
    if args.http_base as u32 + args.viewers > u16::MAX as u32 {
        bail!("--http-base {} leaves no room for {} viewers", args.http_base, args.viewers);
    }
    let input = match &args.input {
        Some(p) if !p.exists() => bail!("input {} does not exist", p.display()),
        Some(p) => p.clone(),
        None => sample_video()?,
    };
    let mut tracker = Proc::spawn("tracker", &["tracker".into(), "--listen".into(), "127.0.0.1:0".into()])?;
    let tracker_addr = tracker.expect_line("tracker listening on ", Duration::from_secs(10))?;
    eprintln!("demo: tracker at {tracker_addr}");
    let mut broadcaster = Proc::spawn(
        "broadcaster",
        &[
            "broadcast".into(),
            "--tracker".into(),
            tracker_addr.clone(),
            "--channel".into(),
            "demo".into(),
            "--loop".into(),
            "--max-copies".into(),
            args.max_copies.to_string(),
            "--http".into(),
            "127.0.0.1:0".into(),
            input.display().to_string(),
        ],
    )?;
    let source_stats = broadcaster.expect_line("stats: ", Duration::from_secs(20))?;
    broadcaster.expect_line("broadcasting", Duration::from_secs(20))?;
    let mut viewers = Vec::new();
    let ports: Vec<u16> = (0..args.viewers).map(|i| args.http_base + i as u16).collect();
    for (i, port) in ports.iter().enumerate() {
        let mut v = Proc::spawn(
            &format!("viewer {}", i + 1),
            &[
                "watch".into(),
                "--tracker".into(),
                tracker_addr.clone(),
                "--http".into(),
                format!("127.0.0.1:{port}"),
                "demo".into(),
            ],
        )?;
        let url = v.expect_line("player: ", Duration::from_secs(20))?;
        if i == 0 {
            println!("demo: watch at {url}");
            println!("demo: HLS at http://127.0.0.1:{port}/live/demo/index.m3u8");
        }
        viewers.push(v);
    }
    let start = Instant::now();
    let end = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Ctrl-C: stop the children cleanly through Drop rather than dying with them.
        let _ = ctrlc_flag(stop);
    }
    let mut stats: Vec<Option<Value>>;
    let mut source: Option<Value>;
    loop {
        stats = ports.iter().map(|p| fetch_stats(*p)).collect();
        source = fetch_json(&source_stats);
        let s = summarize(&stats, source.as_ref());
        let savings = s["savings"].as_f64().map_or("-".to_string(), |x| format!("{:.1}%", x * 100.0));
        eprint!(
            "\rdemo: {:>4.0}s  viewers {}/{}  savings {}  stalls {}  segments played {}   ",
            start.elapsed().as_secs_f64(),
            stats.iter().flatten().count(),
            args.viewers,
            savings,
            s["stalls"],
            s["segments_played"]
        );
        let _ = std::io::stderr().flush();
        if end.is_some_and(|e| Instant::now() >= e) || stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        for (i, v) in viewers.iter_mut().enumerate() {
            if let Some(status) = v.child.try_wait()? {
                bail!("viewer {} exited unexpectedly ({status})", i + 1);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!();
    // Per-viewer cost, for BENCHMARKS.md: CPU seconds and peak RSS of each viewer process.
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    for (st, v) in stats.iter_mut().zip(&viewers) {
        if let (Some(obj), Some((cpu_s, rss_kib))) =
            (st.as_mut().and_then(Value::as_object_mut), process_usage(v.child.id()))
        {
            obj.insert("cpu_s".into(), json!(cpu_s));
            obj.insert("cpu_s_per_min".into(), json!(cpu_s / minutes.max(1e-9)));
            obj.insert("peak_rss_kib".into(), json!(rss_kib));
        }
    }
    let summary = summarize(&stats, source.as_ref());
    drop(viewers);
    drop(broadcaster);
    drop(tracker);
    println!("{summary}");
    Ok(())
}

/// Sets `flag` on SIGINT/SIGTERM (through a tiny tokio runtime on its own thread).
fn ctrlc_flag(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        rt.block_on(crate::runtime::shutdown_signal(None));
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savings_comes_from_the_broadcasters_wire_bytes_not_the_viewers_counters() {
        let viewer = |from_source: u64, played: u64| {
            Some(json!({ "bytes_from_source": from_source, "bytes_from_peers": 0, "bytes_played": played }))
        };
        let stats = [viewer(100, 1_000), viewer(0, 1_000), None];
        let source = json!({ "wire_bytes_sent": 500, "media_bytes_sent": 400 });
        let s = summarize(&stats, Some(&source));
        assert_eq!(s["bytes_from_source"], 100);
        assert_eq!(s["source_wire_bytes"], 500);
        assert_eq!(s["bytes_delivered"], 2_000);
        assert_eq!(s["savings"].as_f64(), Some(0.75), "{s}");
        // Without the broadcaster's figures there is no savings to show.
        assert!(summarize(&stats, None)["savings"].is_null());
    }
}
