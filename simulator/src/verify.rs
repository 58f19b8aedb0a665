//! A [`Verifier`] that remembers: the simulator's peers pass the very same immutable
//! `Bytes` from one to the next (nothing is ever copied), so a piece's hash need only be
//! computed once per buffer, not once per peer; and a header's signature once per shared
//! header, not once per viewer. At 10^4 viewers that is the difference between hashing every
//! byte ten thousand times and hashing it once. Every check still decides exactly as the
//! production verifier does.

use bytes::Bytes;
use meshtv_proto::media::SignedHeader;
use meshtv_proto::sign::SignatureError;
use meshtv_proto::verify::{Direct, Verifier};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Pieces remembered (oldest forgotten first): a few hundred segments.
const PIECES_MAX: usize = 4096;
/// Headers remembered.
const HEADERS_MAX: usize = 1024;

/// A shared header's address and the broadcaster key it was checked against.
type HeaderKey = (usize, [u8; 32]);

#[derive(Default)]
struct Memo {
    /// (address, length) of a buffer → its hash, holding the buffer so that the address
    /// cannot be freed and reused for other bytes while remembered.
    pieces: HashMap<(usize, usize), ([u8; 32], Bytes)>,
    piece_order: VecDeque<(usize, usize)>,
    /// (address of the shared header, broadcaster key) → the verification result, holding
    /// the header so that it cannot change or be freed and its address reused while
    /// remembered (a shared header is immutable while a second holder exists).
    headers: HashMap<HeaderKey, (Result<(), SignatureError>, Arc<SignedHeader>)>,
    header_order: VecDeque<HeaderKey>,
    hits: u64,
    misses: u64,
}

/// Shared by every peer of a run. The lock is never contended (one thread), and lookups
/// never iterate the maps, so their order cannot reach the results.
#[derive(Default)]
pub struct Remembering {
    memo: Mutex<Memo>,
}

impl Remembering {
    /// (hits, misses) so far.
    pub fn counts(&self) -> (u64, u64) {
        let m = self.memo.lock().expect("verifier memo poisoned");
        (m.hits, m.misses)
    }
}

impl Verifier for Remembering {
    fn piece_hash(&self, data: &Bytes) -> [u8; 32] {
        let key = (data.as_ptr() as usize, data.len());
        let mut m = self.memo.lock().expect("verifier memo poisoned");
        if let Some((h, _)) = m.pieces.get(&key) {
            let h = *h;
            m.hits += 1;
            return h;
        }
        m.misses += 1;
        let h = Direct.piece_hash(data);
        if m.piece_order.len() >= PIECES_MAX {
            if let Some(old) = m.piece_order.pop_front() {
                m.pieces.remove(&old);
            }
        }
        m.pieces.insert(key, (h, data.clone()));
        m.piece_order.push_back(key);
        h
    }

    fn header(&self, signed: &Arc<SignedHeader>, broadcaster_key: &[u8; 32]) -> Result<(), SignatureError> {
        let key = (Arc::as_ptr(signed) as usize, *broadcaster_key);
        let mut m = self.memo.lock().expect("verifier memo poisoned");
        if let Some((r, _)) = m.headers.get(&key) {
            let r = r.clone();
            m.hits += 1;
            return r;
        }
        m.misses += 1;
        let r = Direct.header(signed, broadcaster_key);
        if m.header_order.len() >= HEADERS_MAX {
            if let Some(old) = m.header_order.pop_front() {
                m.headers.remove(&old);
            }
        }
        m.headers.insert(key, (r.clone(), signed.clone()));
        m.header_order.push_back(key);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtv_proto::media::SegmentHeader;
    use meshtv_proto::sign::Broadcaster;
    use meshtv_proto::ChannelId;

    #[test]
    fn remembered_results_equal_direct_ones_and_altered_bytes_are_checked_afresh() {
        let v = Remembering::default();
        let b = Broadcaster::from_seed(3);
        let ch = ChannelId::derive(&b.public_key(), "c");
        let data = Bytes::from(vec![7u8; 4096]);
        let signed = Arc::new(b.sign(SegmentHeader::describe(ch, 0, 2000, 0, 1024, &data)));
        let piece = data.slice(1024..2048);
        for _ in 0..3 {
            assert!(v.piece_ok(&signed.header, 1, &piece));
            assert_eq!(v.header(&signed, &b.public_key()), Ok(()));
        }
        let mut bad = piece.to_vec();
        bad[0] ^= 1;
        assert!(!v.piece_ok(&signed.header, 1, &Bytes::from(bad)));
        let mut forged = SignedHeader::clone(&signed);
        forged.header.seq = 9;
        assert!(v.header(&Arc::new(forged), &b.public_key()).is_err());
        // The same header under another key is checked afresh, and fails.
        assert!(v.header(&signed, &Broadcaster::from_seed(4).public_key()).is_err());
        let (hits, misses) = v.counts();
        assert_eq!((hits, misses), (4, 5));
    }
}
