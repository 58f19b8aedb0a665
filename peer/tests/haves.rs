//! Who hears of a viewer's new pieces.

mod common;

use common::{assign, segments, welcomed, SOURCE};
use meshtv_proto::msg::PieceMap;
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use std::time::Duration;

const VIEWER: NodeId = NodeId(100);
const HAS_ALL: NodeId = NodeId(61);
const HAS_HALF: NodeId = NodeId(62);
const SILENT: NodeId = NodeId(63);

#[test]
fn a_partner_that_holds_the_whole_segment_is_not_told_of_it() {
    let b = Broadcaster::from_seed(4);
    let t0 = Time::from_millis(10_000);
    let mut out = Outbox::default();
    let mut p = welcomed(&b, VIEWER, t0, &mut out);
    p.on_message(t0, NodeId::TRACKER, assign(SOURCE, &[HAS_ALL, HAS_HALF, SILENT]), &mut out);
    let (header, pieces) = segments(&b, VIEWER, 1).remove(0);
    let n = pieces.len();
    let mut half = PieceMap::with_len(n);
    (0..n / 2).for_each(|i| half.set(i));
    p.on_message(t0, HAS_ALL, Msg::Have { seq: 0, pieces: PieceMap::full(n) }, &mut out);
    p.on_message(t0, HAS_HALF, Msg::Have { seq: 0, pieces: half }, &mut out);
    p.on_message(t0, SOURCE, header, &mut out);
    for m in pieces {
        p.on_message(t0, SOURCE, m, &mut out);
    }
    let mut out = Outbox::default();
    p.on_timer(t0 + Duration::from_millis(100), TimerId(1), &mut out);
    let mut told: Vec<NodeId> =
        out.sends.iter().filter(|(_, m)| matches!(m, Msg::Have { seq: 0, .. })).map(|(to, _)| *to).collect();
    told.sort();
    assert_eq!(told, vec![HAS_HALF, SILENT]);
}
