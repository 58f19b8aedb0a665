//! A peer's counters, as the stats API and the simulator read them.

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PeerStats {
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    /// Pieces that arrived twice (wasted transfer).
    pub bytes_duplicate: u64,
    /// Of `bytes_duplicate`, what the stripe's parent pushed.
    pub bytes_duplicate_pushed: u64,
    pub bytes_uploaded: u64,
    /// Pushes a parent never sent: the child got the piece elsewhere, left, or waited too
    /// long for it.
    pub pushes_dropped: u64,
    /// Bytes of pushes a child declined before the piece reached this peer (see
    /// `PeerReport::bytes_excused`).
    pub bytes_excused: u64,
    pub partners: usize,
    pub children: usize,
    pub buffer_s: f64,
    pub stalls: u32,
    pub stalled_ms: u64,
    pub stall_ms_max: u64,
    pub startup_s: Option<f64>,
    pub segments_played: u64,
    pub bytes_played: u64,
    pub segments_on_time: u64,
    pub watch_ms: u64,
    pub bad_pieces: u64,
    pub peers_dropped: u64,
    pub requests_sent: u64,
    pub requests_to_source: u64,
    pub live_delay_p50_s: Option<f64>,
    pub live_delay_p95_s: Option<f64>,
    /// From a segment's creation at the source to its being complete here, i.e. listed
    /// in this viewer's playlist.
    pub ready_delay_p50_s: Option<f64>,
    pub ready_delay_p95_s: Option<f64>,
    /// The newest segment this peer holds completely.
    pub newest_complete_seq: Option<u64>,
    /// This peer's NAT as its driver measured it ("full-cone", "symmetric", …), and the
    /// whole report; `None` when it was not measured.
    pub nat: Option<String>,
    pub nat_report: Option<meshtv_proto::msg::NatReport>,
}
