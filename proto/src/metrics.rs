//! The one definition of each swarm metric (DESIGN.md), used by the simulator, the demo
//! and the stats API alike. Inputs are plain counters so any driver can feed them.

/// Savings (DESIGN.md): 1 − (bytes the source and any origin fallback sent) / (media
/// bytes delivered to all viewers' players). The one computation of it: the demo's
/// summary, the e2e tests, the broadcaster's `/api/stats` and the simulator call this.
///
/// - `source_wire_bytes`: what the source (and an origin fallback, when there is one)
///   sent. On a real network, the UDP bytes its socket sent (`TransportStats::
///   udp_bytes_sent`: pieces, control, QUIC's headers, acks and retransmissions, to
///   viewers and tracker alike), never a figure the viewers report. The simulator
///   models no packets: its wire is the piece bytes the source uploaded that crossed
///   its uplink (pushes and fallback answers alike).
/// - `delivered_bytes`: the media bytes viewers' players played, summed over viewers
///   (`PeerStats::bytes_played`): each segment counted whole, once, when it was complete
///   and verified and the viewer's playhead played it, i.e. what its gateway served.
///   Bytes received but never played (duplicates, segments skipped) are not in it.
///
/// `None` before anything was delivered.
pub fn savings(source_wire_bytes: u64, delivered_bytes: u64) -> Option<f64> {
    (delivered_bytes > 0).then(|| 1.0 - source_wire_bytes as f64 / delivered_bytes as f64)
}

/// Total stalled time / total watch time.
pub fn rebuffer_ratio(stalled_ms: u64, watch_ms: u64) -> Option<f64> {
    (watch_ms > 0).then(|| stalled_ms as f64 / watch_ms as f64)
}

/// Share of segments complete before their playback deadline.
pub fn continuity(on_time_segments: u64, due_segments: u64) -> Option<f64> {
    (due_segments > 0).then(|| on_time_segments as f64 / due_segments as f64)
}

/// Control bytes / media bytes.
pub fn overhead(control_bytes: u64, media_bytes: u64) -> Option<f64> {
    (media_bytes > 0).then(|| control_bytes as f64 / media_bytes as f64)
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions() {
        assert_eq!(savings(25, 100), Some(0.75));
        assert_eq!(savings(1, 0), None);
        assert_eq!(rebuffer_ratio(5, 1000), Some(0.005));
        assert_eq!(continuity(9, 10), Some(0.9));
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&mut [3.0, 1.0, 2.0, 4.0], 0.95), Some(4.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
