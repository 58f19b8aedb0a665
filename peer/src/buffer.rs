//! The segment buffer: headers and verified pieces of the segments around the playhead.
//! A piece enters the buffer only after it matched its hash in the signed header.

use bytes::Bytes;
use meshtv_proto::media::SignedHeader;
use meshtv_proto::msg::PieceMap;
use meshtv_proto::verify::Verifier;
use meshtv_proto::Time;
use std::collections::VecDeque;
use std::sync::Arc;

/// One segment being assembled (or complete).
#[derive(Debug)]
pub struct Slot {
    /// Shared with the message it came in and the children it went to.
    pub header: Arc<SignedHeader>,
    pub header_at: Time,
    pub pieces: Vec<Option<Bytes>>,
    pub have: PieceMap,
    pub received: usize,
    /// When the last piece arrived; `None` while incomplete.
    pub complete_at: Option<Time>,
    /// The piece map last announced to partners, to send only changes.
    pub announced: usize,
    /// The union of the maps partners announced for this segment, kept up by the peer as
    /// announcements arrive (every tick asks, for every incomplete segment; a walk over
    /// every partner's maps was the peer's main cost in 10^4-peer simulations). `None`:
    /// to be worked out again (a partner or one of its maps went away, or a map shrank).
    pub held: Option<PieceMap>,
}

impl Slot {
    pub fn is_complete(&self) -> bool {
        self.complete_at.is_some()
    }

    /// The segment's bytes once complete.
    pub fn assemble(&self) -> Option<Bytes> {
        if !self.is_complete() {
            return None;
        }
        let mut out = Vec::with_capacity(self.header.header.size_bytes as usize);
        for p in self.pieces.iter().flatten() {
            out.extend_from_slice(p);
        }
        Some(Bytes::from(out))
    }
}

/// Outcome of offering a piece to the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Stored; `completed` tells whether it finished the segment.
    Stored { completed: bool },
    /// Already held (a duplicate: wasted transfer, not misbehaviour).
    Duplicate,
    /// The segment's header is not known yet.
    NoHeader,
    /// Failed its hash or index: the sender is misbehaving.
    Bad,
}

/// Segments by sequence number, bounded by the caller's eviction.
///
/// Held in a ring indexed by `seq - base` rather than a tree: the peer looks segments up
/// on every tick and every piece, and at 10^4 simulated viewers the tree's searches (a
/// cache miss per level) were 3% of all the time. Segments are close together (a window
/// of a few dozen); one further than `SPAN_MAX` from the others is refused.
#[derive(Debug, Default)]
pub struct Buffer {
    /// `slots[i]` holds segment `base + i`, if here. Never starts or ends with `None`.
    slots: VecDeque<Option<Slot>>,
    base: u64,
    len: usize,
}

/// Most sequence numbers the buffer spans, from its oldest segment to its newest. A
/// viewer's window is a few dozen segments; before it starts playing, a header far from
/// the rest is an old or foreign one it has no use for.
pub const SPAN_MAX: u64 = 1024;

impl Buffer {
    /// Adds a verified header; returns false if it was already known, or lies further
    /// than `SPAN_MAX` from the segments held.
    pub fn insert_header(&mut self, header: Arc<SignedHeader>, now: Time) -> bool {
        let seq = header.header.seq;
        if self.get(seq).is_some() {
            return false;
        }
        if self.newest().is_some_and(|newest| seq.max(newest) - seq.min(self.base) >= SPAN_MAX) {
            return false;
        }
        let n = header.header.piece_count();
        let slot = Slot {
            header,
            header_at: now,
            pieces: vec![None; n],
            have: PieceMap::with_len(n),
            received: 0,
            complete_at: None,
            announced: 0,
            held: None,
        };
        if self.len == 0 {
            self.base = seq;
            self.slots.push_back(Some(slot));
        } else if seq < self.base {
            for _ in seq + 1..self.base {
                self.slots.push_front(None);
            }
            self.slots.push_front(Some(slot));
            self.base = seq;
        } else {
            let i = (seq - self.base) as usize;
            if i >= self.slots.len() {
                self.slots.resize_with(i + 1, || None);
            }
            self.slots[i] = Some(slot);
        }
        self.len += 1;
        true
    }

    /// Checks a piece against its header and stores it if it is good.
    pub fn offer(&mut self, seq: u64, index: usize, data: Bytes, now: Time) -> Offer {
        self.offer_checked(seq, index, data, now, &meshtv_proto::verify::Direct)
    }

    /// As [`Buffer::offer`], checking the piece with `verifier`.
    pub fn offer_checked(&mut self, seq: u64, index: usize, data: Bytes, now: Time, verifier: &dyn Verifier) -> Offer {
        let Some(slot) = self.get_mut(seq) else {
            return Offer::NoHeader;
        };
        if index >= slot.pieces.len() || !verifier.piece_ok(&slot.header.header, index, &data) {
            return Offer::Bad;
        }
        if slot.pieces[index].is_some() {
            return Offer::Duplicate;
        }
        slot.pieces[index] = Some(data);
        slot.have.set(index);
        slot.received += 1;
        let completed = slot.received == slot.pieces.len();
        if completed {
            slot.complete_at = Some(now);
        }
        Offer::Stored { completed }
    }

    /// Where segment `seq` sits in `slots`, if within them.
    fn index(&self, seq: u64) -> Option<usize> {
        usize::try_from(seq.checked_sub(self.base)?).ok().filter(|&i| i < self.slots.len())
    }

    pub fn get(&self, seq: u64) -> Option<&Slot> {
        self.slots[self.index(seq)?].as_ref()
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = self.index(seq)?;
        self.slots[i].as_mut()
    }

    pub fn piece(&self, seq: u64, index: usize) -> Option<&Bytes> {
        self.get(seq)?.pieces.get(index)?.as_ref()
    }

    pub fn newest(&self) -> Option<u64> {
        (self.len > 0).then(|| self.base + self.slots.len() as u64 - 1)
    }

    /// The slot of the newest segment.
    pub fn newest_slot(&self) -> Option<&Slot> {
        self.slots.back()?.as_ref()
    }

    /// Every segment held, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &Slot)> {
        self.range_from(self.base)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut Slot)> {
        let base = self.base;
        self.slots.iter_mut().enumerate().filter_map(move |(i, s)| Some((base + i as u64, s.as_mut()?)))
    }

    /// The segments from `seq` on, oldest first.
    pub fn range_from(&self, seq: u64) -> impl DoubleEndedIterator<Item = (u64, &Slot)> {
        let skip = usize::try_from(seq.saturating_sub(self.base)).unwrap_or(usize::MAX);
        let base = self.base;
        self.slots.iter().enumerate().skip(skip).filter_map(move |(i, s)| Some((base + i as u64, s.as_ref()?)))
    }

    /// Drops every segment older than `seq`.
    pub fn evict_before(&mut self, seq: u64) {
        let older = usize::try_from(seq.saturating_sub(self.base)).unwrap_or(usize::MAX).min(self.slots.len());
        self.len -= self.slots.drain(..older).flatten().count();
        self.base += older as u64;
        // Never start with a gap.
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.base += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtv_proto::media::SegmentHeader;
    use meshtv_proto::sign::Broadcaster;
    use meshtv_proto::ChannelId;

    #[test]
    fn pieces_are_checked_and_completion_is_recorded() {
        let b = Broadcaster::from_seed(1);
        let ch = ChannelId::derive(&b.public_key(), "c");
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let h = Arc::new(b.sign(SegmentHeader::describe(ch, 0, 2000, 0, 1024, &data)));
        let mut buf = Buffer::default();
        assert_eq!(buf.offer(0, 0, Bytes::copy_from_slice(&data[..1024]), Time(1)), Offer::NoHeader);
        assert!(buf.insert_header(h.clone(), Time(1)));
        assert!(!buf.insert_header(h, Time(1)));
        assert_eq!(buf.offer(0, 0, Bytes::copy_from_slice(&data[1..1025]), Time(2)), Offer::Bad);
        assert_eq!(buf.offer(0, 9, Bytes::new(), Time(2)), Offer::Bad);
        assert_eq!(buf.offer(0, 0, Bytes::copy_from_slice(&data[..1024]), Time(2)), Offer::Stored { completed: false });
        assert_eq!(buf.offer(0, 0, Bytes::copy_from_slice(&data[..1024]), Time(2)), Offer::Duplicate);
        assert_eq!(buf.offer(0, 2, Bytes::copy_from_slice(&data[2048..]), Time(3)), Offer::Stored { completed: false });
        assert_eq!(buf.get(0).unwrap().assemble(), None);
        assert_eq!(
            buf.offer(0, 1, Bytes::copy_from_slice(&data[1024..2048]), Time(4)),
            Offer::Stored { completed: true }
        );
        assert_eq!(buf.get(0).unwrap().complete_at, Some(Time(4)));
        assert_eq!(buf.get(0).unwrap().assemble().unwrap(), Bytes::from(data));
        buf.evict_before(1);
        assert!(buf.is_empty());
    }

    fn header(b: &Broadcaster, seq: u64) -> Arc<SignedHeader> {
        let ch = ChannelId::derive(&b.public_key(), "c");
        Arc::new(b.sign(SegmentHeader::describe(ch, seq, 2000, 0, 1024, &[seq as u8; 100])))
    }

    fn seqs(buf: &Buffer) -> Vec<u64> {
        buf.iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn segments_come_in_any_order_and_go_oldest_first() {
        let b = Broadcaster::from_seed(2);
        let mut buf = Buffer::default();
        for seq in [10, 14, 12, 7] {
            assert!(buf.insert_header(header(&b, seq), Time(1)));
        }
        assert!(!buf.insert_header(header(&b, 12), Time(2)), "already known");
        assert_eq!(seqs(&buf), vec![7, 10, 12, 14]);
        assert_eq!(buf.iter().rev().map(|(s, _)| s).collect::<Vec<_>>(), vec![14, 12, 10, 7]);
        assert_eq!(buf.range_from(11).map(|(s, _)| s).collect::<Vec<_>>(), vec![12, 14]);
        assert_eq!(buf.range_from(0).count(), 4);
        assert_eq!(buf.range_from(15).count(), 0);
        assert_eq!((buf.newest(), buf.len()), (Some(14), 4));
        assert_eq!(buf.newest_slot().map(|s| s.header.header.seq), Some(14));
        assert!(buf.get(11).is_none() && buf.get(6).is_none() && buf.get(15).is_none());
        assert_eq!(buf.get(12).map(|s| s.header.header.seq), Some(12));
        // Up to a gap, then past it.
        buf.evict_before(8);
        assert_eq!(seqs(&buf), vec![10, 12, 14]);
        buf.evict_before(13);
        assert_eq!(seqs(&buf), vec![14]);
        buf.evict_before(100);
        assert!(buf.is_empty() && buf.newest().is_none() && buf.newest_slot().is_none());
        // Empty again, it starts anew anywhere.
        assert!(buf.insert_header(header(&b, 3), Time(3)));
        assert_eq!(seqs(&buf), vec![3]);
    }

    #[test]
    fn a_header_further_than_the_span_from_the_rest_is_refused() {
        let b = Broadcaster::from_seed(3);
        let mut buf = Buffer::default();
        assert!(buf.insert_header(header(&b, 5000), Time(1)));
        assert!(!buf.insert_header(header(&b, 5000 + SPAN_MAX), Time(1)));
        assert!(!buf.insert_header(header(&b, 5000 - SPAN_MAX), Time(1)));
        assert!(!buf.insert_header(header(&b, 0), Time(1)));
        assert!(buf.insert_header(header(&b, 5000 + SPAN_MAX - 1), Time(1)));
        assert_eq!(seqs(&buf), vec![5000, 5000 + SPAN_MAX - 1]);
    }
}
