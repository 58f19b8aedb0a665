//! Which missing pieces to pull, from whom, and when.
//!
//! A piece is first left to the stripe parent's push (for as long after its header as that
//! parent has lately needed, see `Peer`'s push lag, and never past the source fallback);
//! then it is pulled from the least-loaded partner that announced it; a piece still missing
//! within `source_fallback` of its deadline is fetched from the source, so that peer-to-peer
//! delivery never costs the viewer a stall it could have avoided (SmoothCache's rule).

use meshtv_proto::msg::PieceMap;
use meshtv_proto::NodeId;
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// What the scheduler knows of a partner.
#[derive(Debug, Default)]
pub struct PartnerView {
    /// Piece maps the partner announced, by segment.
    pub have: HaveMaps,
    /// Requests sent to it and not yet answered.
    pub outstanding: usize,
    /// It told us its trees feed it (`Msg::Interest { from_seq: None }`): no Haves to it.
    pub maps_off: bool,
    /// We told it ours feed us: it sends us no Haves until we ask again.
    pub asked_quiet: bool,
}

/// Most segments of a partner's piece maps remembered.
pub const HAVE_SEGMENTS_MAX: usize = 32;

/// A partner's piece maps by segment, the newest `HAVE_SEGMENTS_MAX` kept. Kept in order
/// in one short array rather than a tree: every tick looks up each partner's maps for
/// each missing segment, and announcements nearly always add the newest segment at the
/// end (in a simulated 10^4-viewer crowd, B-tree lookups and these inserts took up to a
/// sixth of all the time spent).
#[derive(Debug, Default)]
pub struct HaveMaps(VecDeque<(u64, PieceMap)>);

impl HaveMaps {
    fn find(&self, seq: u64) -> Result<usize, usize> {
        // Most lookups are for the newest segments: try the end first.
        match self.0.back() {
            Some(&(last, _)) if last == seq => Ok(self.0.len() - 1),
            Some(&(last, _)) if last < seq => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }

    pub fn get(&self, seq: u64) -> Option<&PieceMap> {
        self.find(seq).ok().map(|i| &self.0[i].1)
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.find(seq).is_ok()
    }

    /// The newest segment announced.
    pub fn newest(&self) -> Option<u64> {
        self.0.back().map(|(s, _)| *s)
    }

    pub fn remove(&mut self, seq: u64) {
        if let Ok(i) = self.find(seq) {
            self.0.remove(i);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records `seq`'s map (replacing an older one), then forgets the oldest segment if
    /// that makes more than `HAVE_SEGMENTS_MAX`: returns the segment forgotten.
    fn insert(&mut self, seq: u64, pieces: PieceMap) -> Option<u64> {
        match self.find(seq) {
            Ok(i) => {
                self.0[i].1 = pieces;
                None
            }
            Err(i) if self.0.len() < HAVE_SEGMENTS_MAX => {
                self.0.insert(i, (seq, pieces));
                None
            }
            // Full: the oldest goes first, so the array never grows past the bound (growing
            // to one more would double its allocation, for every partner of every peer).
            Err(0) => Some(seq),
            Err(i) => {
                let oldest = self.0.pop_front().map(|(s, _)| s);
                self.0.insert(i - 1, (seq, pieces));
                oldest
            }
        }
    }
}

impl PartnerView {
    pub fn has(&self, seq: u64, index: usize) -> bool {
        self.have.get(seq).is_some_and(|m| m.get(index))
    }

    /// Records an announcement; returns the segment whose map was forgotten to make room.
    pub fn record_have(&mut self, seq: u64, pieces: PieceMap) -> Option<u64> {
        self.have.insert(seq, pieces)
    }
}

/// One missing piece as the scheduler sees it.
pub struct Missing {
    pub seq: u64,
    pub index: usize,
    /// Time left until the segment is due for playback.
    pub time_left: Duration,
    /// Time since the segment's header arrived.
    pub header_age: Duration,
    /// With a live parent expected to push this piece: how long after the header it is
    /// left to that push.
    pub push_wait: Option<Duration>,
}

pub struct Policy {
    pub source_fallback: Duration,
    pub requests_per_partner_max: usize,
}

/// Where to ask for a piece.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Wait,
    Ask { node: NodeId, urgent: bool },
}

/// Decides for one missing piece. `source` is the channel's source, asked only as a
/// fallback and never counted against the per-partner bound.
pub fn decide(
    piece: &Missing,
    partners: &BTreeMap<NodeId, PartnerView>,
    source: Option<NodeId>,
    policy: &Policy,
    rng: &mut impl Rng,
) -> Decision {
    // A push still expected is waited for until half the source fallback is left: a
    // parent that is merely slow still delivers, and the source is not asked twice over.
    let near_deadline = piece.time_left < policy.source_fallback / 2;
    if piece.push_wait.is_some_and(|w| piece.header_age < w) && !near_deadline {
        return Decision::Wait;
    }
    let urgent = piece.time_left < policy.source_fallback * 2;
    let mut best: Option<(usize, u32, NodeId)> = None;
    for (id, p) in partners {
        if Some(*id) == source || !p.has(piece.seq, piece.index) || p.outstanding >= policy.requests_per_partner_max {
            continue;
        }
        let key = (p.outstanding, rng.gen::<u32>());
        if best.is_none_or(|(o, r, _)| key < (o, r)) {
            best = Some((key.0, key.1, *id));
        }
    }
    if let Some((_, _, node)) = best {
        return Decision::Ask { node, urgent };
    }
    match source {
        Some(node) if piece.time_left < policy.source_fallback => Decision::Ask { node, urgent: true },
        _ => Decision::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> Policy {
        Policy { source_fallback: Duration::from_millis(1500), requests_per_partner_max: 2 }
    }

    fn missing(time_left_ms: u64, age_ms: u64, pushed: bool) -> Missing {
        Missing {
            seq: 5,
            index: 3,
            time_left: Duration::from_millis(time_left_ms),
            header_age: Duration::from_millis(age_ms),
            push_wait: pushed.then_some(Duration::from_millis(800)),
        }
    }

    #[test]
    fn waits_for_push_then_pulls_from_least_loaded_holder_then_source() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let src = NodeId(99);
        let mut partners = BTreeMap::new();
        let mut holder = PartnerView::default();
        holder.record_have(5, PieceMap::full(8));
        holder.outstanding = 1;
        let mut idle_holder = PartnerView::default();
        idle_holder.record_have(5, PieceMap::full(8));
        partners.insert(NodeId(1), holder);
        partners.insert(NodeId(2), idle_holder);
        partners.insert(NodeId(3), PartnerView::default());

        assert_eq!(decide(&missing(5000, 100, true), &partners, Some(src), &policy(), &mut rng), Decision::Wait);
        assert_eq!(
            decide(&missing(5000, 900, true), &partners, Some(src), &policy(), &mut rng),
            Decision::Ask { node: NodeId(2), urgent: false }
        );
        partners.get_mut(&NodeId(1)).unwrap().outstanding = 2;
        partners.get_mut(&NodeId(2)).unwrap().outstanding = 2;
        assert_eq!(decide(&missing(5000, 900, false), &partners, Some(src), &policy(), &mut rng), Decision::Wait);
        assert_eq!(
            decide(&missing(1000, 900, false), &partners, Some(src), &policy(), &mut rng),
            Decision::Ask { node: src, urgent: true }
        );
        // A push still expected holds a piece back until half the source fallback is left.
        assert_eq!(decide(&missing(1000, 100, true), &partners, Some(src), &policy(), &mut rng), Decision::Wait);
        assert_eq!(
            decide(&missing(700, 100, true), &partners, Some(src), &policy(), &mut rng),
            Decision::Ask { node: src, urgent: true }
        );
    }

    #[test]
    fn have_maps_keep_the_newest_segments_in_any_arrival_order() {
        // Against a sorted map as the model: announcements out of order, repeated,
        // removed, and beyond the bound.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut maps = HaveMaps::default();
        let mut model: BTreeMap<u64, PieceMap> = BTreeMap::new();
        for step in 0..2000u64 {
            let seq = step / 4 + rng.gen_range(0..40);
            if rng.gen_range(0..10) == 0 {
                maps.remove(seq);
                model.remove(&seq);
                continue;
            }
            let mut m = PieceMap::with_len(8);
            m.set((step % 8) as usize);
            let forgotten = maps.insert(seq, m.clone());
            model.insert(seq, m);
            let mut expected = None;
            while model.len() > HAVE_SEGMENTS_MAX {
                expected = model.pop_first().map(|(s, _)| s);
            }
            assert_eq!(forgotten, expected, "segment forgotten at step {step}");
            assert_eq!(maps.len(), model.len());
            // The bound holds for the allocation too, not only the length.
            assert!(maps.0.capacity() <= HAVE_SEGMENTS_MAX, "capacity {}", maps.0.capacity());
            assert_eq!(maps.newest(), model.keys().next_back().copied());
            for probe in seq.saturating_sub(50)..seq + 50 {
                assert_eq!(maps.get(probe), model.get(&probe), "segment {probe} at step {step}");
            }
        }
    }

    #[test]
    fn have_maps_are_bounded() {
        let mut p = PartnerView::default();
        for s in 0..100 {
            p.record_have(s, PieceMap::full(1));
        }
        assert_eq!(p.have.len(), HAVE_SEGMENTS_MAX);
        assert!(p.has(99, 0) && !p.has(0, 0));
    }
}
