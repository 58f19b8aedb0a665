//! A source whose segment numbering jumps (a restarted or skipped counter) goes on
//! publishing: a buffer spans at most `buffer::SPAN_MAX` segments, so the source lets go
//! of what it held from the other stretch of the stream.

mod common;

use common::{addr, descriptor, PIECE_BYTES};
use meshtv_peer::buffer::SPAN_MAX;
use meshtv_peer::{Peer, PeerConfig, PeerRole};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Node, NodeId, Outbox, Time};

#[test]
fn a_source_whose_numbering_jumps_publishes_the_new_segments() {
    let b = Broadcaster::from_seed(9);
    let cfg = PeerConfig::new(NodeId(1), addr(), PeerRole::Source { descriptor: descriptor(&b), secret: b.secret() });
    let mut p = Peer::new(cfg);
    p.on_start(Time::ZERO, &mut Outbox::default());
    let data = vec![7u8; 8 * PIECE_BYTES as usize];
    let publish =
        |p: &mut Peer, ms: u64, seq: u64| p.publish(Time::from_millis(ms), seq, 2000, &data, &mut Outbox::default());
    for seq in 0..3 {
        publish(&mut p, seq * 2000, seq);
    }
    let far = 2 + 4 * SPAN_MAX;
    publish(&mut p, 6000, far);
    assert_eq!(p.segment(far).map(|s| s.len()), Some(data.len()));
    assert!(p.segment(2).is_none(), "the old stretch let go");
    // Back to the start of the numbering.
    publish(&mut p, 8000, 1);
    assert!(p.segment(1).is_some() && p.segment(far).is_none());
}
