//! `meshtv demo` as the README runs it: 8 viewers through the tracker's optimizer.
//! Its JSON summary (the last line of stdout) must show savings ≥ 0.8 and no stall.

use meshtv_tests::*;
use std::time::Duration;

/// A base port with `n` free consecutive TCP ports after it on loopback.
fn free_port_run(n: u16) -> u16 {
    for base in (20_000u16..60_000).step_by(97) {
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no run of {n} free ports on loopback");
}

#[test]
fn eight_viewer_demo_saves_over_80_percent_without_stalls() {
    let base = free_port_run(8);
    let out = run_meshtv(
        &["demo", "--viewers", "8", "--duration", "90", "--http-base", &base.to_string()],
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("demo printed nothing");
    let summary: serde_json::Value = serde_json::from_str(last).expect("last line is JSON");
    eprintln!(
        "demo summary: {}",
        serde_json::json!({
            "savings": summary["savings"], "stalls": summary["stalls"], "segments_played": summary["segments_played"],
            "source_wire_bytes": summary["source_wire_bytes"], "bytes_delivered": summary["bytes_delivered"],
            "bytes_from_source": summary["bytes_from_source"],
        })
    );
    assert_eq!(summary["viewers"], 8);
    assert_eq!(num(&summary, "stalls"), 0, "{summary}");
    assert!(num(&summary, "segments_played") >= 8 * 30, "{summary}");
    let savings = summary["savings"].as_f64().expect("savings");
    // Savings is the broadcaster's wire bytes over what the players played, never the
    // viewers' own counters: the figures the summary prints give its savings exactly,
    // and the wire bytes are the broadcaster's, above what viewers say came from it.
    let wire = num(&summary, "source_wire_bytes");
    let delivered = num(&summary, "bytes_delivered");
    assert_eq!(wire, num(&summary["broadcaster"], "wire_bytes_sent"), "{summary}");
    assert_eq!(Some(savings), meshtv_proto::metrics::savings(wire, delivered), "{summary}");
    assert!(wire > num(&summary, "bytes_from_source"), "{summary}");
    assert!(savings >= 0.8, "savings {savings:.3}");
}
