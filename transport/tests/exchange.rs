//! Two or more drivers talking over real QUIC on 127.0.0.1: messages both ways, pieces on
//! their own streams, timers, closes, shutdown, and both sides dialing at once.

mod support;

use meshtv_proto::msg::PeerInfo;
use meshtv_proto::{Msg, NodeId, Outbox, Time, TimerId};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use support::*;

fn is_piece_from(s: &Seen, from: NodeId, want_seq: u64, want_index: u16) -> bool {
    match s {
        Seen::Message(f, Msg::Piece { seq, index, data }) if *f == from && *seq == want_seq && *index == want_index => {
            assert_eq!(data.len(), PIECE_BYTES);
            assert!(data.iter().all(|&b| b == want_index as u8), "piece bytes intact");
            true
        }
        _ => false,
    }
}

#[tokio::test]
async fn echo_pair_exchanges_control_and_pieces_both_ways() {
    let mut a = start(config(1), |_, _| {}).await;
    let mut b = start(config(2), |_, _| {}).await;
    connect(&b, &mut a).await;

    // b asks a: the request is control, the 64 KiB answer a piece on its own stream.
    b.send(a.id, request(7, 3)).await;
    a.expect(|s| *s == Seen::Message(b.id, request(7, 3))).await;
    b.expect(|s| is_piece_from(s, a.id, 7, 3)).await;

    // The other way, on the connection b dialed.
    a.send(b.id, request(8, 5)).await;
    a.send(b.id, Msg::GetHeader { seq: 8 }).await;
    b.expect(|s| *s == Seen::Message(a.id, request(8, 5))).await;
    b.expect(|s| *s == Seen::Message(a.id, Msg::GetHeader { seq: 8 })).await;
    a.expect(|s| is_piece_from(s, b.id, 8, 5)).await;

    // Many pieces at once: each on its own stream, all arrive intact.
    let requests = 40u16;
    b.command(move |_, _, out| {
        for i in 0..requests {
            out.send(NodeId(1), request(100 + u64::from(i), i));
        }
    })
    .await;
    // Streams are independent: pieces may arrive in any order.
    let mut missing: std::collections::BTreeSet<u16> = (0..requests).collect();
    while !missing.is_empty() {
        let got = b.expect(|s| matches!(s, Seen::Message(_, Msg::Piece { .. }))).await;
        let Seen::Message(from, Msg::Piece { seq, index, .. }) = &got else { unreachable!() };
        assert!(is_piece_from(&got, a.id, *seq, *index) && *seq == 100 + u64::from(*index), "{from:?} {seq}");
        assert!(missing.remove(index), "piece {index} twice");
    }

    let (sa, sb) = (a.stats(), b.stats());
    let piece_frames = (1 + requests as u64) * PIECE_BYTES as u64;
    assert!(sa.media_bytes_sent >= piece_frames, "{sa:?}");
    assert!(sb.media_bytes_recv >= piece_frames, "{sb:?}");
    assert!(sb.media_bytes_sent >= PIECE_BYTES as u64 && sa.media_bytes_recv >= PIECE_BYTES as u64);
    assert!(sa.control_bytes_sent > 0 && sa.control_bytes_recv > 0, "{sa:?}");
    assert_eq!(sa.media_bytes_sent, sb.media_bytes_recv, "every piece sent was received");
    // On the wire: every frame plus QUIC's own packets, so more than the frames.
    for s in [&sa, &sb] {
        assert!(s.udp_bytes_sent > s.media_bytes_sent + s.control_bytes_sent, "{s:?}");
    }
    assert_eq!((sa.messages_dropped, sb.messages_dropped), (0, 0));
    assert_eq!((sa.connections_open(), sb.connections_open()), (1, 1));
    assert!(!a.drain().iter().chain(b.drain().iter()).any(|s| matches!(s, Seen::Disconnect(_))));

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn timers_fire_in_order_and_rearming_replaces() {
    let mut a = start(config(1), |_, _| {}).await;
    let (armed_tx, armed_rx) = tokio::sync::oneshot::channel();
    a.command(move |_, now, out| {
        let ms = |n| now + Duration::from_millis(n);
        out.set_timer(ms(60), TimerId(3));
        out.set_timer(ms(20), TimerId(1));
        out.set_timer(ms(10), TimerId(4));
        out.set_timer(ms(40), TimerId(2));
        out.set_timer(ms(80), TimerId(4)); // replaces the firing at +10 ms
        let _ = armed_tx.send(now);
    })
    .await;
    let armed = armed_rx.await.unwrap();

    let mut fired = Vec::new();
    while fired.len() < 4 {
        if let Seen::Timer(id, at) = a.expect(|s| matches!(s, Seen::Timer(..))).await {
            fired.push((id, at));
        }
    }
    let ids: Vec<_> = fired.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    for ((id, at), due_ms) in fired.iter().zip([20u64, 40, 60, 80]) {
        assert!(*at >= armed + Duration::from_millis(due_ms), "timer {id:?} fired early at {at:?}");
    }
    assert!(fired.windows(2).all(|w| w[0].1 <= w[1].1));
    assert!(a.drain().iter().all(|s| !matches!(s, Seen::Timer(..))), "timer 4 fired once");
    a.stop().await.unwrap();
}

/// A core start that dials `peer` (whose address is known only once it is bound) and
/// sends it a `GetHeader` numbered `seq`.
fn dial_at_start(peer: NodeId, addr: Arc<OnceLock<SocketAddr>>, seq: u64) -> impl FnOnce(Time, &mut Outbox) + Send {
    move |_, out| {
        out.dial(PeerInfo { id: peer, addr: *addr.get().expect("both bound before either runs") });
        out.send(peer, Msg::GetHeader { seq });
    }
}

#[tokio::test]
async fn both_sides_dialing_at_once_converge_on_one_connection() {
    // Partners assigned to each other dial each other at the same moment.
    let (addr_a, addr_b) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let bound_a = bind(config(1), dial_at_start(NodeId(2), addr_b.clone(), 1)).await;
    let bound_b = bind(config(2), dial_at_start(NodeId(1), addr_a.clone(), 2)).await;
    addr_a.set(bound_a.driver.local_addr()).unwrap();
    addr_b.set(bound_b.driver.local_addr()).unwrap();
    let mut a = bound_a.run(1);
    let mut b = bound_b.run(2);

    a.expect(|s| *s == Seen::Message(NodeId(2), Msg::GetHeader { seq: 2 })).await;
    b.expect(|s| *s == Seen::Message(NodeId(1), Msg::GetHeader { seq: 1 })).await;
    a.wait_stats("one connection", |s| s.connections_open() == 1).await;
    b.wait_stats("one connection", |s| s.connections_open() == 1).await;

    // The surviving connection carries both ways.
    a.send(b.id, request(1, 1)).await;
    b.send(a.id, request(2, 2)).await;
    a.expect(|s| is_piece_from(s, b.id, 1, 1)).await;
    b.expect(|s| is_piece_from(s, a.id, 2, 2)).await;
    assert!(!a.drain().iter().chain(b.drain().iter()).any(|s| matches!(s, Seen::Disconnect(_))));
    assert_eq!((a.stats().messages_dropped, b.stats().messages_dropped), (0, 0));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_core_close_is_reported_on_both_sides_after_the_goodbye() {
    let mut a = start(config(1), |_, _| {}).await;
    let mut b = start(config(2), |_, _| {}).await;
    connect(&b, &mut a).await;

    // A goodbye sent with the close arrives before the connection goes.
    a.command(|_, _, out| {
        out.send(NodeId(2), Msg::Leave);
        out.close(NodeId(2));
    })
    .await;
    b.expect(|s| *s == Seen::Message(NodeId(1), Msg::Leave)).await;
    b.expect(|s| *s == Seen::Disconnect(NodeId(1))).await;
    a.expect(|s| *s == Seen::Disconnect(NodeId(2))).await;

    // Closed means gone: a message to b now is dropped and counted.
    let dropped = a.stats().messages_dropped;
    a.send(b.id, Msg::Leave).await;
    a.wait_stats("the drop counted", |s| s.messages_dropped == dropped + 1).await;

    // And b can dial back.
    connect(&b, &mut a).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_returns_promptly_and_the_peer_hears_of_it() {
    let mut a = start(config(1), |_, _| {}).await;
    let mut b = start(config(2), |_, _| {}).await;
    connect(&b, &mut a).await;

    let began = tokio::time::Instant::now();
    a.stop().await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(3), "shutdown took {:?}", began.elapsed());
    b.expect(|s| *s == Seen::Disconnect(NodeId(1))).await;
    // Well before the 5 s idle timeout: the close was sent, not left to time out.
    assert!(began.elapsed() < Duration::from_secs(4), "disconnect after {:?}", began.elapsed());
    b.stop().await.unwrap();
}

#[tokio::test]
async fn a_peer_reaches_the_tracker_as_node_zero() {
    let mut tracker = start(config(NodeId::TRACKER.0), |_, _| {}).await;
    let mut cfg = config(5);
    cfg.tracker = Some(tracker.addr);
    // The tracker connection is up before on_start, so the first message is not lost.
    let mut peer = start(cfg, |_, out| out.send(NodeId::TRACKER, Msg::Leave)).await;
    tracker.expect(|s| *s == Seen::Message(NodeId(5), Msg::Leave)).await;

    tracker.send(NodeId(5), request(3, 4)).await;
    peer.expect(|s| *s == Seen::Message(NodeId::TRACKER, request(3, 4))).await;
    tracker.expect(|s| is_piece_from(s, NodeId(5), 3, 4)).await;
    assert_eq!(peer.stats().dials_started, 1);

    tracker.stop().await.unwrap();
    peer.expect(|s| *s == Seen::Disconnect(NodeId::TRACKER)).await;
    peer.stop().await.unwrap();
}
