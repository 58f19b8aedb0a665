//! What goes wrong, and that the driver says so and keeps serving: unreachable peers and
//! trackers, busy addresses, and peers that send garbage.

mod support;

use meshtv_proto::{Msg, NodeId};
use meshtv_transport::framing;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use support::*;

/// A UDP port where nothing speaks QUIC: held open, so nobody else can take it meanwhile.
fn silent_port() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// A bare QUIC client that speaks meshtv's TLS, to misbehave with.
async fn raw_connect(to: SocketAddr) -> quinn::Connection {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(meshtv_transport::client_config().unwrap());
    let connecting = endpoint.connect(to, meshtv_transport::tls::SERVER_NAME).unwrap();
    tokio::time::timeout(WAIT, connecting).await.unwrap().unwrap()
}

/// Waits until the node closes `conn`; returns its close code.
async fn closed_by_node(conn: &quinn::Connection) -> u64 {
    match tokio::time::timeout(WAIT, conn.closed()).await.expect("the node closes the connection") {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed otherwise: {other}"),
    }
}

#[tokio::test]
async fn a_dial_to_a_closed_port_reports_a_disconnect() {
    let (_socket, addr) = silent_port();
    let mut a = start(config(1), |_, _| {}).await;
    a.command(move |_, _, out| {
        out.dial(meshtv_proto::msg::PeerInfo { id: NodeId(9), addr });
        out.send(NodeId(9), Msg::Leave); // waits for the dial, then is dropped with it
    })
    .await;
    a.expect(|s| *s == Seen::Disconnect(NodeId(9))).await;
    let s = a.stats();
    assert_eq!((s.dials_started, s.connections_failed, s.messages_dropped), (1, 1, 1), "{s:?}");

    // With no connection and no dial, a message is dropped at once.
    a.send(NodeId(9), Msg::Leave).await;
    a.wait_stats("second drop", |s| s.messages_dropped == 2).await;
    a.stop().await.unwrap();
}

#[tokio::test]
async fn run_fails_when_the_tracker_is_unreachable() {
    let (_socket, addr) = silent_port();
    let mut cfg = config(5);
    cfg.tracker = Some(addr);
    let mut bound = bind(cfg, |_, _| {}).await;
    let began = tokio::time::Instant::now();
    let err = tokio::time::timeout(WAIT, bound.driver.run(std::future::pending()))
        .await
        .expect("run gives up after the connect timeout")
        .expect_err("no tracker there");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("tracker unreachable at {addr}: ")), "{msg}");
    assert!(began.elapsed() < Duration::from_secs(3), "took {:?}", began.elapsed());
    assert!(bound.seen.try_recv().is_err(), "the core was not started");
}

#[tokio::test]
async fn binding_a_busy_address_is_an_error_naming_it() {
    let a = start(config(1), |_, _| {}).await;
    let mut cfg = config(2);
    cfg.bind = a.addr;
    let err = try_bind(cfg, |_, _| {}).await.err().expect("the address is taken");
    let msg = err.to_string();
    assert!(msg.contains(&a.addr.to_string()) && msg.contains("in use"), "{msg}");

    // A port held by any other socket is just as busy.
    let (_socket, addr) = silent_port();
    let mut cfg = config(3);
    cfg.bind = addr;
    assert!(try_bind(cfg, |_, _| {}).await.is_err());
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_peer_sending_garbage_is_cut_off_and_others_are_still_served() {
    let mut a = start(config(1), |_, _| {}).await;
    let mut b = start(config(2), |_, _| {}).await;
    connect(&b, &mut a).await;

    // Garbage on the control stream, after one good message.
    let conn = raw_connect(a.addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&framing::hello(NodeId(77))).await.unwrap();
    framing::write_frame(&mut send, &meshtv_proto::codec::encode(&Msg::Leave)).await.unwrap();
    framing::write_frame(&mut send, &[meshtv_proto::codec::WIRE_VERSION, 0xff, 0xff, 0xff]).await.unwrap();
    a.expect(|s| *s == Seen::Message(NodeId(77), Msg::Leave)).await;
    a.expect(|s| *s == Seen::Disconnect(NodeId(77))).await;
    assert_eq!(closed_by_node(&conn).await, 1);

    // A length prefix beyond the frame bound.
    let conn = raw_connect(a.addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&framing::hello(NodeId(78))).await.unwrap();
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    a.expect(|s| *s == Seen::Disconnect(NodeId(78))).await;
    assert_eq!(closed_by_node(&conn).await, 1);

    // Garbage on a piece stream.
    let conn = raw_connect(a.addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&framing::hello(NodeId(79))).await.unwrap();
    let mut uni = conn.open_uni().await.unwrap();
    framing::write_frame(&mut uni, b"not a message").await.unwrap();
    uni.finish().unwrap();
    a.expect(|s| *s == Seen::Disconnect(NodeId(79))).await;
    assert_eq!(closed_by_node(&conn).await, 1);

    // Not a meshtv hello: refused before the core hears of it.
    let conn = raw_connect(a.addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert_eq!(closed_by_node(&conn).await, 1);

    // Claiming to be the node itself: refused too.
    let conn = raw_connect(a.addr).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&framing::hello(NodeId(1))).await.unwrap();
    assert_eq!(closed_by_node(&conn).await, 1);

    // Meanwhile b is served as before.
    b.send(a.id, request(9, 2)).await;
    b.expect(|s| matches!(s, Seen::Message(f, Msg::Piece { seq: 9, index: 2, .. }) if *f == NodeId(1))).await;
    let seen = a.drain();
    assert!(!seen.contains(&Seen::Disconnect(NodeId(2))), "{seen:?}");
    assert!(!seen.iter().any(|s| matches!(s, Seen::Message(NodeId(1), _) | Seen::Disconnect(NodeId(1)))));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
