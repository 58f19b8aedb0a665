//! The channel / segment / piece model.
//!
//! A segment is a keyframe-aligned, independently playable slice of the stream; a piece
//! is a fixed-size slice of a segment and the unit of transfer. The segment header lists
//! the BLAKE3 hash of every piece and is signed by the broadcaster, so any single piece
//! can be checked the moment it arrives, before it is stored, forwarded or played.

use crate::ids::ChannelId;
use crate::limits;
use serde::{Deserialize, Serialize};

/// How segments are packaged. MPEG-TS segments need no init data.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Container {
    MpegTs,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Container::MpegTs => "ts",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Container::MpegTs => "video/mp2t",
        }
    }
}

/// What a viewer needs to know about a channel before its first segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDescriptor {
    pub id: ChannelId,
    pub name: String,
    /// The broadcaster's ed25519 public key: every segment header must verify against it.
    pub broadcaster_key: [u8; 32],
    pub container: Container,
    pub live: bool,
    /// Number of stripes the pieces are dealt into (piece index mod stripes).
    pub stripes: u8,
    pub piece_bytes: u32,
    pub segment_duration_ms_target: u32,
    /// The stream's bitrate as the source measured it, used to size upload slots.
    pub bitrate_bps: u64,
}

impl ChannelDescriptor {
    /// Checks the bounds a descriptor from the network must keep.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.name.is_empty() || self.name.len() > limits::CHANNEL_NAME_BYTES_MAX {
            return Err("channel name length out of bounds");
        }
        if self.stripes == 0 || self.stripes as usize > limits::STRIPES_MAX {
            return Err("stripe count out of bounds");
        }
        let p = self.piece_bytes as usize;
        if !(limits::PIECE_BYTES_MIN..=limits::PIECE_BYTES_MAX).contains(&p) {
            return Err("piece size out of bounds");
        }
        if ChannelId::derive(&self.broadcaster_key, &self.name) != self.id {
            return Err("channel id does not match key and name");
        }
        Ok(())
    }

    /// Bits per second one stripe carries: the unit of an upload slot.
    pub fn stripe_bps(&self) -> u64 {
        (self.bitrate_bps / self.stripes.max(1) as u64).max(1)
    }
}

/// A segment's metadata; signed by the broadcaster as a [`SignedHeader`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub channel: ChannelId,
    pub seq: u64,
    pub duration_ms: u32,
    pub size_bytes: u32,
    pub piece_bytes: u32,
    /// When the source finished the segment, on the source's clock (milliseconds); used
    /// to measure live delay.
    pub created_ms: u64,
    pub piece_hashes: Vec<[u8; 32]>,
}

impl SegmentHeader {
    /// Builds the header of `data`, hashing each piece.
    pub fn describe(
        channel: ChannelId,
        seq: u64,
        duration_ms: u32,
        created_ms: u64,
        piece_bytes: u32,
        data: &[u8],
    ) -> SegmentHeader {
        let piece_hashes = data.chunks(piece_bytes as usize).map(|c| *blake3::hash(c).as_bytes()).collect();
        SegmentHeader {
            channel,
            seq,
            duration_ms,
            size_bytes: data.len() as u32,
            piece_bytes,
            created_ms,
            piece_hashes,
        }
    }

    pub fn piece_count(&self) -> usize {
        self.piece_hashes.len()
    }

    /// Byte length of piece `index` (the last one may be short).
    pub fn piece_len(&self, index: usize) -> usize {
        let start = index * self.piece_bytes as usize;
        (self.size_bytes as usize).saturating_sub(start).min(self.piece_bytes as usize)
    }

    pub fn stripe_of(index: usize, stripes: u8) -> u8 {
        (index % stripes.max(1) as usize) as u8
    }

    /// True when `data` is exactly piece `index` as the broadcaster hashed it.
    pub fn piece_ok(&self, index: usize, data: &[u8]) -> bool {
        match self.piece_hashes.get(index) {
            Some(h) => data.len() == self.piece_len(index) && blake3::hash(data).as_bytes() == h,
            None => false,
        }
    }

    /// Checks that the header is internally consistent and within bounds.
    pub fn validate(&self) -> Result<(), &'static str> {
        let p = self.piece_bytes as usize;
        if !(limits::PIECE_BYTES_MIN..=limits::PIECE_BYTES_MAX).contains(&p) {
            return Err("piece size out of bounds");
        }
        if self.size_bytes == 0 || self.size_bytes as usize > limits::SEGMENT_BYTES_MAX {
            return Err("segment size out of bounds");
        }
        let expected = (self.size_bytes as usize).div_ceil(p);
        if self.piece_hashes.len() != expected || expected > limits::PIECES_PER_SEGMENT_MAX {
            return Err("piece count does not match segment size");
        }
        Ok(())
    }
}

/// A segment header with the broadcaster's signature over its canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeader {
    pub header: SegmentHeader,
    pub signature: ed25519_dalek::Signature,
}
