//! Who forwards a segment's header: a child hears it from the parent of one stripe only,
//! the stripes taking turns by segment.

mod common;

use common::{descriptor, segments, welcomed};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time};

#[test]
fn a_parent_forwards_each_header_only_to_children_on_that_segments_stripe() {
    let b = Broadcaster::from_seed(9);
    let parent = NodeId(100);
    let t0 = Time::from_millis(1_000);
    let mut out = Outbox::default();
    let mut p = welcomed(&b, parent, t0, &mut out);
    let channel = descriptor(&b).id;
    // Child 200 takes stripe 0 from it, child 201 stripes 1 and 2, child 202 all four.
    for (child, stripes) in [(200, 0b0001), (201, 0b0110), (202, 0b1111)] {
        p.on_message(t0, NodeId(child), Msg::Subscribe { channel, stripes, from_seq: 0 }, &mut out);
    }
    for (seq, (header, _)) in segments(&b, parent, 4).into_iter().enumerate() {
        let mut out = Outbox::default();
        p.on_message(t0, NodeId(1), header, &mut out);
        let mut told: Vec<u64> =
            out.sends.iter().filter(|(_, m)| matches!(m, Msg::Header(_))).map(|(to, _)| to.0).collect();
        told.sort();
        let expected: Vec<u64> = match seq {
            0 => vec![200, 202],
            1 | 2 => vec![201, 202],
            _ => vec![202],
        };
        assert_eq!(told, expected, "segment {seq}");
    }
}
