//! The versioned binary codec: one version byte, then the postcard encoding of a [`Msg`].
//! Every frame is bounded by [`limits::FRAME_BYTES_MAX`] and validated after decoding, so
//! bytes from the network become either a well-formed message or an error, never a panic.

use crate::limits;
use crate::msg::Msg;

/// Bumped whenever the encoding of [`Msg`] changes incompatibly.
pub const WIRE_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty frame")]
    Empty,
    #[error("frame of {0} bytes exceeds the {max} byte limit", max = limits::FRAME_BYTES_MAX)]
    TooLarge(usize),
    #[error("wire version {0} is not supported (this build speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("message out of bounds: {0}")]
    OutOfBounds(&'static str),
}

pub fn encode(msg: &Msg) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Serializing into a Vec only fails for types serde cannot express; Msg has none.
    out.extend(postcard::to_stdvec(msg).expect("Msg encodes"));
    out
}

pub fn decode(frame: &[u8]) -> Result<Msg, DecodeError> {
    if frame.len() > limits::FRAME_BYTES_MAX {
        return Err(DecodeError::TooLarge(frame.len()));
    }
    let (&version, body) = frame.split_first().ok_or(DecodeError::Empty)?;
    if version != WIRE_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (msg, rest): (Msg, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    msg.validate().map_err(DecodeError::OutOfBounds)?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelId, NodeId};
    use crate::media::{ChannelDescriptor, Container, SegmentHeader};
    use crate::msg::{PeerInfo, PieceMap, RejectReason};
    use crate::sign::Broadcaster;
    use rand::{Rng, SeedableRng};

    fn samples() -> Vec<Msg> {
        let b = Broadcaster::from_seed(1);
        let id = ChannelId::derive(&b.public_key(), "demo");
        let descriptor = ChannelDescriptor {
            id,
            name: "demo".into(),
            broadcaster_key: b.public_key(),
            container: Container::MpegTs,
            live: true,
            stripes: 4,
            piece_bytes: 16384,
            segment_duration_ms_target: 2000,
            bitrate_bps: 2_000_000,
        };
        let addr = "127.0.0.1:4000".parse().unwrap();
        let data = vec![9u8; 40000];
        vec![
            Msg::Announce { descriptor: Box::new(descriptor.clone()), addr, upload_bps: 1 },
            Msg::Join { channel: "demo".into(), addr, upload_bps: 5 },
            Msg::Welcome {
                descriptor: Box::new(descriptor),
                source: PeerInfo { id: NodeId(3), addr },
                live_edge: Some(4),
            },
            Msg::Reject { reason: RejectReason::UnknownChannel },
            Msg::Assign { parents: vec![None, Some(PeerInfo { id: NodeId(2), addr })], partners: vec![] },
            Msg::Header(std::sync::Arc::new(b.sign(SegmentHeader::describe(id, 1, 2000, 5, 16384, &data)))),
            Msg::Have { seq: 3, pieces: PieceMap::full(5) },
            Msg::Skip { seq: 3, pieces: PieceMap::full(5) },
            Msg::Interest { from_seq: None },
            Msg::Interest { from_seq: Some(7) },
            Msg::Request { seq: 3, index: 2, urgent: true },
            Msg::Piece { seq: 3, index: 1, data: bytes::Bytes::from(vec![1u8; 16384]) },
            Msg::Leave,
        ]
    }

    #[test]
    fn every_sample_round_trips() {
        for m in samples() {
            assert_eq!(decode(&encode(&m)), Ok(m));
        }
    }

    #[test]
    fn random_and_truncated_bytes_give_errors_not_panics() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        let mut errors = 0;
        for m in samples() {
            let frame = encode(&m);
            for cut in 0..frame.len().min(300) {
                if decode(&frame[..cut]).is_err() {
                    errors += 1;
                }
            }
            for _ in 0..200 {
                let mut f = frame.clone();
                let i = rng.gen_range(0..f.len());
                f[i] = rng.gen();
                let _ = decode(&f);
            }
        }
        for _ in 0..20_000 {
            let len = rng.gen_range(0..512);
            let mut f: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if !f.is_empty() {
                f[0] = WIRE_VERSION;
            }
            let _ = decode(&f);
        }
        assert!(errors > 0);
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[9, 0]), Err(DecodeError::Version(9)));
        assert!(matches!(decode(&vec![1u8; limits::FRAME_BYTES_MAX + 1]), Err(DecodeError::TooLarge(_))));
    }

    #[test]
    fn out_of_bounds_fields_are_rejected() {
        let m = Msg::Join { channel: "x".repeat(100), addr: "127.0.0.1:1".parse().unwrap(), upload_bps: 0 };
        assert!(matches!(decode(&encode(&m)), Err(DecodeError::OutOfBounds(_))));
    }
}
