//! How a peer checks what it receives: each piece against the hash in its signed header,
//! each header against the broadcaster's key. A driver may supply its own [`Verifier`]
//! to avoid repeating work it can prove redundant (the simulator remembers results per
//! immutable buffer, because its peers pass the very same bytes around); what a check
//! decides must never change.

use crate::media::{SegmentHeader, SignedHeader};
use crate::sign::{self, SignatureError};
use bytes::Bytes;
use std::sync::Arc;

pub trait Verifier: Send + Sync {
    /// The BLAKE3 hash of a piece's bytes.
    fn piece_hash(&self, data: &Bytes) -> [u8; 32];
    /// Verifies a header's signature and consistency against the broadcaster's key. The
    /// header comes shared, as peers hold and forward it, so that a driver whose peers pass
    /// the very same header around can recognise it without reading it.
    fn header(&self, signed: &Arc<SignedHeader>, broadcaster_key: &[u8; 32]) -> Result<(), SignatureError>;

    /// True when `data` is exactly piece `index` of `header`.
    fn piece_ok(&self, header: &SegmentHeader, index: usize, data: &Bytes) -> bool {
        match header.piece_hashes.get(index) {
            Some(h) => data.len() == header.piece_len(index) && self.piece_hash(data) == *h,
            None => false,
        }
    }
}

/// The production verifier: every check done in full, every time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Direct;

impl Verifier for Direct {
    fn piece_hash(&self, data: &Bytes) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }

    fn header(&self, signed: &Arc<SignedHeader>, broadcaster_key: &[u8; 32]) -> Result<(), SignatureError> {
        sign::verify(signed, broadcaster_key)
    }
}
