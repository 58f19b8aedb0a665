//! The segment buffer: headers and verified pieces of the segments around the playhead.
//! A piece enters the buffer only after it matched its hash in the signed header.

use bytes::Bytes;
use meshtv_proto::media::SignedHeader;
use meshtv_proto::msg::PieceMap;
use meshtv_proto::verify::Verifier;
use meshtv_proto::Time;
use std::collections::BTreeMap;
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
#[derive(Debug, Default)]
pub struct Buffer {
    slots: BTreeMap<u64, Slot>,
}

impl Buffer {
    /// Adds a verified header; returns false if it was already known.
    pub fn insert_header(&mut self, header: Arc<SignedHeader>, now: Time) -> bool {
        let seq = header.header.seq;
        if self.slots.contains_key(&seq) {
            return false;
        }
        let n = header.header.piece_count();
        self.slots.insert(
            seq,
            Slot {
                header,
                header_at: now,
                pieces: vec![None; n],
                have: PieceMap::with_len(n),
                received: 0,
                complete_at: None,
                announced: 0,
                held: None,
            },
        );
        true
    }

    /// Checks a piece against its header and stores it if it is good.
    pub fn offer(&mut self, seq: u64, index: usize, data: Bytes, now: Time) -> Offer {
        self.offer_checked(seq, index, data, now, &meshtv_proto::verify::Direct)
    }

    /// As [`Buffer::offer`], checking the piece with `verifier`.
    pub fn offer_checked(&mut self, seq: u64, index: usize, data: Bytes, now: Time, verifier: &dyn Verifier) -> Offer {
        let Some(slot) = self.slots.get_mut(&seq) else {
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

    pub fn get(&self, seq: u64) -> Option<&Slot> {
        self.slots.get(&seq)
    }

    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        self.slots.get_mut(&seq)
    }

    pub fn piece(&self, seq: u64, index: usize) -> Option<&Bytes> {
        self.slots.get(&seq)?.pieces.get(index)?.as_ref()
    }

    pub fn newest(&self) -> Option<u64> {
        self.slots.keys().next_back().copied()
    }

    /// The slot of the newest segment.
    pub fn newest_slot(&self) -> Option<&Slot> {
        self.slots.values().next_back()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &Slot)> {
        self.slots.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Slot)> {
        self.slots.iter_mut()
    }

    pub fn range_from(&self, seq: u64) -> impl Iterator<Item = (&u64, &Slot)> {
        self.slots.range(seq..)
    }

    /// Drops every segment older than `seq`.
    pub fn evict_before(&mut self, seq: u64) {
        if self.slots.first_key_value().is_some_and(|(&s, _)| s < seq) {
            self.slots = self.slots.split_off(&seq);
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
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
}
