//! What the peer's integration tests share: a channel and an address.

use meshtv_proto::media::{ChannelDescriptor, Container};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::ChannelId;
use std::net::SocketAddr;

pub const PIECE_BYTES: u32 = 16 * 1024;

/// A 400 kbit/s live channel in four stripes, 2 s segments of 16 KiB pieces.
pub fn descriptor(b: &Broadcaster) -> ChannelDescriptor {
    ChannelDescriptor {
        id: ChannelId::derive(&b.public_key(), "live"),
        name: "live".into(),
        broadcaster_key: b.public_key(),
        container: Container::MpegTs,
        live: true,
        stripes: 4,
        piece_bytes: PIECE_BYTES,
        segment_duration_ms_target: 2000,
        bitrate_bps: 400_000,
    }
}

pub fn addr() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}
