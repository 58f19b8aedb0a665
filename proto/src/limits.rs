//! Hard bounds on everything that arrives from the network. A message that exceeds any of
//! them is rejected by the codec before any core sees it.

/// Largest encoded frame: one piece plus its envelope, with room to spare.
pub const FRAME_BYTES_MAX: usize = PIECE_BYTES_MAX + 4 * 1024;
/// Largest piece a channel may declare.
pub const PIECE_BYTES_MAX: usize = 256 * 1024;
/// Smallest piece a channel may declare (keeps the header's hash list short).
pub const PIECE_BYTES_MIN: usize = 1024;
/// Most pieces in one segment (a 2 s segment at 2 Mbps with 64 KiB pieces has 8).
pub const PIECES_PER_SEGMENT_MAX: usize = 1024;
/// Largest segment, in bytes.
pub const SEGMENT_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most stripes a channel may be split into.
pub const STRIPES_MAX: usize = 16;
/// Longest channel name, in bytes.
pub const CHANNEL_NAME_BYTES_MAX: usize = 64;
/// Most partners the tracker hands a peer in one assignment.
pub const PARTNERS_MAX: usize = 32;
/// Senders a heartbeat reports bytes received from (`PeerReport::received`).
pub const REPORT_SENDERS_MAX: usize = 64;
/// Longest free-text reason in a rejection.
pub const REASON_BYTES_MAX: usize = 256;
/// Most addresses one rendezvous plan may punch toward.
pub const PUNCH_TARGETS_MAX: usize = 64;
