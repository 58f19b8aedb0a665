//! Broadcaster identity: an ed25519 key signs every segment header.

use crate::media::{SegmentHeader, SignedHeader};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand::SeedableRng;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("broadcaster key is not a valid ed25519 public key")]
    BadKey,
    #[error("segment header signature does not verify against the broadcaster key")]
    BadSignature,
    #[error("segment header is malformed: {0}")]
    Malformed(&'static str),
}

/// The broadcaster's signing identity.
pub struct Broadcaster {
    key: SigningKey,
}

impl Broadcaster {
    /// A key from 32 secret bytes (as stored in a key file).
    pub fn from_secret(secret: [u8; 32]) -> Broadcaster {
        Broadcaster { key: SigningKey::from_bytes(&secret) }
    }

    /// A fresh key drawn from a driver-provided seed.
    pub fn from_seed(seed: u64) -> Broadcaster {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        Broadcaster { key: SigningKey::generate(&mut rng) }
    }

    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn sign(&self, header: SegmentHeader) -> SignedHeader {
        let bytes = signing_bytes(&header);
        SignedHeader { signature: self.key.sign(&bytes), header }
    }
}

fn signing_bytes(header: &SegmentHeader) -> Vec<u8> {
    let mut out = b"meshtv segment v1\0".to_vec();
    // Encoding a plain struct into a Vec cannot fail.
    out.extend(postcard::to_stdvec(header).expect("header encodes"));
    out
}

/// Verifies a header's signature and internal consistency against the channel's key.
pub fn verify(signed: &SignedHeader, broadcaster_key: &[u8; 32]) -> Result<(), SignatureError> {
    signed.header.validate().map_err(SignatureError::Malformed)?;
    let key = VerifyingKey::from_bytes(broadcaster_key).map_err(|_| SignatureError::BadKey)?;
    key.verify(&signing_bytes(&signed.header), &signed.signature).map_err(|_| SignatureError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChannelId;

    #[test]
    fn signed_header_verifies_and_tampering_is_caught() {
        let b = Broadcaster::from_seed(7);
        let ch = ChannelId::derive(&b.public_key(), "news");
        let data = vec![3u8; 5000];
        let signed = b.sign(SegmentHeader::describe(ch, 4, 2000, 123, 1024, &data));
        assert_eq!(verify(&signed, &b.public_key()), Ok(()));
        assert!(signed.header.piece_ok(4, &data[4096..]));
        assert!(!signed.header.piece_ok(4, &data[4095..]));

        let mut forged = signed.clone();
        forged.header.duration_ms += 1;
        assert_eq!(verify(&forged, &b.public_key()), Err(SignatureError::BadSignature));

        let other = Broadcaster::from_seed(8);
        assert_eq!(verify(&signed, &other.public_key()), Err(SignatureError::BadSignature));
    }
}
