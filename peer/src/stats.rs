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
    /// Whether this viewer asked its partners to stop announcing (see `Msg::Interest`).
    pub maps_quiet: bool,
    /// Its scheduling decisions (one a tick, once it knows where it plays from), by what
    /// they found: fed by the trees, or why not. What keeps a swarm's viewers listening
    /// to maps, and so its Haves coming.
    pub decisions: Decisions,
    /// The newest segment this peer holds completely.
    pub newest_complete_seq: Option<u64>,
    /// This peer's NAT as its driver measured it ("full-cone", "symmetric", …), and the
    /// whole report; `None` when it was not measured.
    pub nat: Option<String>,
    pub nat_report: Option<meshtv_proto::msg::NatReport>,
    /// The uplink's rate as this peer measured it from what its connections drained
    /// (see `uplink`), bits per second, and what it has in flight, bytes.
    pub uplink_bps: u64,
    pub uplink_inflight_bytes: u64,
    /// Of those in flight, the bytes not yet past the uplink, as the peer estimates it.
    pub uplink_backlog_bytes: u64,
    /// Pieces waiting in the peer for room on the uplink, bytes.
    pub uplink_queued_bytes: u64,
}

/// Counts of a viewer's scheduling decisions by outcome; each decision counts once, under
/// the first reason that applies, in this order.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Decisions {
    /// Not playing yet, or a piece or header asked for and not come.
    pub waiting: u64,
    /// A segment not complete within half the source fallback and `MAPS_LEAD` of its
    /// deadline.
    pub near_deadline: u64,
    /// A missing piece past its parent's push wait (or of a stripe with no parent).
    pub push_late: u64,
    /// No new segment header for one and a half segment durations.
    pub no_headers: u64,
    /// Fed: nothing to pull.
    pub fed: u64,
}

impl Decisions {
    /// Counts one decision under the first of its reasons not to be fed; returns whether
    /// it was fed.
    pub fn count(&mut self, waiting: bool, near_deadline: bool, push_late: bool, no_headers: bool) -> bool {
        let counter = match () {
            _ if waiting => &mut self.waiting,
            _ if near_deadline => &mut self.near_deadline,
            _ if push_late => &mut self.push_late,
            _ if no_headers => &mut self.no_headers,
            _ => &mut self.fed,
        };
        *counter += 1;
        !(waiting || near_deadline || push_late || no_headers)
    }
}
