//! The byte layout of meshtv on QUIC streams.
//!
//! - **Hello**: the dialer opens one bidirectional stream and first writes `b"MTV1"` and its
//!   [`NodeId`] as a big-endian `u64` (12 bytes). That is how the acceptor learns who
//!   dialed; the claim is not authenticated (see [`crate::tls`]).
//! - **Frame**: a big-endian `u32` length, then that many bytes of
//!   [`meshtv_proto::codec::encode`]. The same bidirectional stream then carries control
//!   frames both ways; each piece travels as the one frame of its own unidirectional stream.
//!
//! Readers are bounded: a hello is 12 bytes, a frame at most
//! [`limits::FRAME_BYTES_MAX`]; a longer length prefix is an error before any allocation.

use meshtv_proto::{limits, NodeId};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HELLO_MAGIC: [u8; 4] = *b"MTV1";
pub const HELLO_BYTES: usize = 12;
/// Bytes a frame adds to its body.
pub const FRAME_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {max} byte limit", max = limits::FRAME_BYTES_MAX)]
    TooLarge(usize),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("not a meshtv hello (magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub fn hello(id: NodeId) -> [u8; HELLO_BYTES] {
    let mut out = [0; HELLO_BYTES];
    out[..4].copy_from_slice(&HELLO_MAGIC);
    out[4..].copy_from_slice(&id.0.to_be_bytes());
    out
}

pub fn parse_hello(bytes: &[u8; HELLO_BYTES]) -> Result<NodeId, FrameError> {
    let (magic, id) = bytes.split_at(4);
    let magic: [u8; 4] = magic.try_into().expect("split at 4");
    if magic != HELLO_MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    Ok(NodeId(u64::from_be_bytes(id.try_into().expect("8 bytes remain"))))
}

/// Reads a hello: exactly [`HELLO_BYTES`], never more.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<NodeId, FrameError> {
    let mut buf = [0; HELLO_BYTES];
    r.read_exact(&mut buf).await.map_err(truncated)?;
    parse_hello(&buf)
}

/// Writes one frame around `body` (an encoded message).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> io::Result<()> {
    debug_assert!(body.len() <= limits::FRAME_BYTES_MAX, "the writer checks the bound first");
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(body).await
}

/// Reads one frame's body. `Ok(None)` when the stream ended cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0; FRAME_PREFIX_BYTES];
    let mut got = 0;
    while got < prefix.len() {
        match r.read(&mut prefix[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limits::FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.map_err(truncated)?;
    Ok(Some(body))
}

fn truncated(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// The stream priority of a piece of segment `seq`: quinn sends buffered data of higher
/// priority first, so older segments (closer to their playback deadline) get precedence.
/// Control frames keep the default 0, at or above every piece. The mask keeps the value in
/// range; segment numbers that far apart are never buffered at once.
pub fn piece_priority(seq: u64) -> i32 {
    -((seq & 0x3fff_ffff) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_strangers() {
        let h = hello(NodeId(0x0102_0304_0506_0708));
        assert_eq!(&h[..4], b"MTV1");
        assert_eq!(parse_hello(&h).unwrap(), NodeId(0x0102_0304_0506_0708));
        let mut bad = h;
        bad[0] = b'X';
        assert!(matches!(parse_hello(&bad), Err(FrameError::BadMagic(_))));
    }

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, b"hello").await.unwrap();
        write_frame(&mut a, &[]).await.unwrap();
        write_frame(&mut a, &vec![7; limits::FRAME_BYTES_MAX]).await.unwrap();
        drop(a);
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap().len(), limits::FRAME_BYTES_MAX);
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&((limits::FRAME_BYTES_MAX + 1) as u32).to_be_bytes()).await.unwrap();
        assert!(matches!(read_frame(&mut b).await, Err(FrameError::TooLarge(_))));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(FrameError::Truncated)));

        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(FrameError::Truncated)));
    }

    #[test]
    fn older_segments_have_higher_priority() {
        assert_eq!(piece_priority(0), 0);
        assert!(piece_priority(1) > piece_priority(2));
        assert!(piece_priority(u64::MAX) <= 0);
    }
}
