//! STUN interop: a STUN client we did not write (Debian's `stun`, from the stun-client
//! package: RFC 3489's classic tests) accepts the answers of a meshtv tracker's socket.
//!
//! The tracker side is the real driver: its QUIC socket answers STUN, and its second STUN
//! address (127.0.0.2 on the loopback, another port) answers the change requests. On the
//! loopback there is no NAT, so the client must conclude "Open". (The NAT lab runs the same
//! client behind each of its NATs: tests/natlab/run.)

mod support;

use std::process::Command;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_stun_client_accepts_the_trackers_answers() {
    let which = Command::new("stun").output();
    assert!(which.is_ok(), "the `stun` client is missing: scripts/install-deps installs stun-client");
    let bound = try_bind(config(0), |_, _| {}).await.expect("bind");
    let primary = bound.driver.local_addr();
    // A free port for the second address: bind one, note it, let it go.
    let alt_port =
        std::net::UdpSocket::bind("127.0.0.2:0").expect("127.0.0.2 on the loopback").local_addr().unwrap().port();
    let alt = format!("127.0.0.2:{alt_port}").parse().unwrap();
    bound.driver.serve_stun(Some(alt)).await.expect("serve STUN");
    let stats = bound.driver.stats();
    let running = bound.run(0);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout").args(["20", "stun", &primary.to_string()]).output().expect("run stun")
    })
    .await
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Primary: Open"), "the stun client did not accept the answers:\n{text}");
    assert!(stats.snapshot().stun_answered >= 3, "{:?}", stats.snapshot());
    running.stop().await.expect("clean stop");
}
