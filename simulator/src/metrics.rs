//! What a run measured: one record per viewer session (read from the production peer's
//! own counters when it leaves or the run ends) and a time series sampled during the
//! run. The metrics themselves are computed by `meshtv_proto::metrics`, the one
//! definition shared with the demo and the stats API.

use crate::engine::Counters;
use crate::scenario::Scenario;
use meshtv_peer::Peer;
use meshtv_proto::metrics::{self, quantile};
use meshtv_proto::{NodeId, Time};
use serde::Serialize;

/// Live-delay samples kept per viewer session (evenly spaced over its samples).
const DELAYS_PER_VIEWER_MAX: usize = 64;
/// Viewers whose buffer level is read at each sample (reading all of them at 10^5 peers
/// would cost more than the run).
const BUFFER_SAMPLE_VIEWERS_MAX: usize = 256;
/// Points kept of each distribution's CDF in the report.
const CDF_POINTS_MAX: usize = 200;

/// One viewer session, as its peer core counted it.
#[derive(Clone, Debug)]
pub struct ViewerRecord {
    pub id: NodeId,
    pub startup_s: Option<f64>,
    pub stalled_ms: u64,
    pub watch_ms: u64,
    pub segments_played: u64,
    pub segments_on_time: u64,
    pub bytes_played: u64,
    pub live_delays_s: Vec<f64>,
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    pub bytes_duplicate: u64,
    pub requests_sent: u64,
    pub requests_to_source: u64,
}

/// The time series of one run: parallel columns, one entry per sample.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Series {
    pub t_s: Vec<f64>,
    pub viewers: Vec<u64>,
    /// Savings over the interval since the previous sample (`null` when nothing played).
    pub savings: Vec<Option<f64>>,
    /// Savings since the start of the run.
    pub savings_cumulative: Vec<Option<f64>>,
    /// Mean buffer ahead of the playhead over sampled viewers, seconds.
    pub buffer_s: Vec<Option<f64>>,
    /// Share of viewers stalled at the sample time.
    pub stalled_share: Vec<Option<f64>>,
    /// The source's upload over the interval, bits per second.
    pub source_upload_bps: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct Collector {
    pub records: Vec<ViewerRecord>,
    pub series: Series,
    /// Bytes played by viewers that have left (the live ones are read at each sample).
    departed_played_bytes: u64,
    last_t: Time,
    last_source_bytes: u64,
    last_played_bytes: u64,
}

impl Collector {
    pub fn new(_s: &Scenario) -> Collector {
        Collector::default()
    }

    /// Records a viewer session; `departed` when the peer leaves before the end.
    pub fn record(&mut self, id: NodeId, peer: &Peer, now: Time, departed: bool) {
        let st = peer.stats(now);
        let delays = &peer.playback().live_delays_ms;
        let step = delays.len().div_ceil(DELAYS_PER_VIEWER_MAX).max(1);
        let live_delays_s = delays.iter().step_by(step).map(|&d| d as f64 / 1000.0).collect();
        if departed {
            self.departed_played_bytes += st.bytes_played;
        }
        self.records.push(ViewerRecord {
            id,
            startup_s: st.startup_s,
            stalled_ms: st.stalled_ms,
            watch_ms: st.watch_ms,
            segments_played: st.segments_played,
            segments_on_time: st.segments_on_time,
            bytes_played: st.bytes_played,
            live_delays_s,
            bytes_from_peers: st.bytes_from_peers,
            bytes_from_source: st.bytes_from_source,
            bytes_duplicate: st.bytes_duplicate,
            requests_sent: st.requests_sent,
            requests_to_source: st.requests_to_source,
        });
    }

    /// One point of the time series.
    pub fn sample(&mut self, now: Time, viewers: &[(NodeId, &Peer)], source_bytes: u64) {
        let played: u64 =
            self.departed_played_bytes + viewers.iter().map(|(_, p)| p.playback().played_bytes).sum::<u64>();
        let dt_s = now.since(self.last_t).as_secs_f64();
        let s = &mut self.series;
        s.t_s.push(now.as_secs_f64());
        s.viewers.push(viewers.len() as u64);
        s.savings.push(metrics::savings(
            source_bytes - self.last_source_bytes,
            played.saturating_sub(self.last_played_bytes),
        ));
        s.savings_cumulative.push(metrics::savings(source_bytes, played));
        s.source_upload_bps.push(if dt_s > 0.0 {
            (source_bytes - self.last_source_bytes) as f64 * 8.0 / dt_s
        } else {
            0.0
        });
        let step = viewers.len().div_ceil(BUFFER_SAMPLE_VIEWERS_MAX).max(1);
        let buffers: Vec<f64> = viewers.iter().step_by(step).map(|(_, p)| p.stats(now).buffer_s).collect();
        s.buffer_s.push((!buffers.is_empty()).then(|| buffers.iter().sum::<f64>() / buffers.len() as f64));
        let stalled = viewers.iter().filter(|(_, p)| p.playback().stalled_since.is_some()).count();
        s.stalled_share.push((!viewers.is_empty()).then(|| stalled as f64 / viewers.len() as f64));
        self.last_t = now;
        self.last_source_bytes = source_bytes;
        self.last_played_bytes = played;
    }
}

/// A policy's results, with exactly the metric names of issue 3 first.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PolicyReport {
    /// `metrics::savings(source_media_bytes, played_bytes)`: the simulator models no
    /// packets, so the source's wire bytes are the piece bytes it uploaded.
    pub savings: Option<f64>,
    pub rebuffer_ratio: Option<f64>,
    pub continuity: Option<f64>,
    pub startup_p50_s: Option<f64>,
    pub startup_p95_s: Option<f64>,
    pub live_delay_p50_s: Option<f64>,
    pub live_delay_p95_s: Option<f64>,
    pub overhead: Option<f64>,
    pub connectivity_direct: Option<f64>,
    pub connectivity_relayed: Option<f64>,
    pub connectivity_failed: Option<f64>,
    pub events: u64,
    /// Viewer sessions (a viewer that rejoins counts again).
    pub sessions: u64,
    /// Sessions whose playback started.
    pub sessions_started: u64,
    pub media_bytes: u64,
    pub control_bytes: u64,
    pub source_media_bytes: u64,
    pub played_bytes: u64,
    /// Viewers' own counters, summed over sessions.
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    pub bytes_duplicate: u64,
    pub requests_sent: u64,
    pub requests_to_source: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub dials_to_departed: u64,
    pub disconnects: u64,
    pub lost_to_cut: u64,
    pub startup_cdf: Vec<[f64; 2]>,
    pub live_delay_cdf: Vec<[f64; 2]>,
    pub series: Series,
}

/// The policy's metrics from its sessions and counters.
pub fn summarize(c: &Collector, n: &Counters) -> PolicyReport {
    let r = &c.records;
    let sum = |f: fn(&ViewerRecord) -> u64| r.iter().map(f).sum::<u64>();
    let played_bytes = sum(|v| v.bytes_played);
    let mut startups: Vec<f64> = r.iter().filter_map(|v| v.startup_s).collect();
    let mut delays: Vec<f64> = r.iter().flat_map(|v| v.live_delays_s.iter().copied()).collect();
    let dials = n.dials_direct + n.dials_relayed + n.dials_failed;
    let share = |x: u64| (dials > 0).then(|| x as f64 / dials as f64);
    PolicyReport {
        savings: metrics::savings(n.source_media_bytes, played_bytes),
        rebuffer_ratio: metrics::rebuffer_ratio(sum(|v| v.stalled_ms), sum(|v| v.watch_ms)),
        continuity: metrics::continuity(sum(|v| v.segments_on_time), sum(|v| v.segments_played)),
        startup_p50_s: quantile(&mut startups, 0.5),
        startup_p95_s: quantile(&mut startups, 0.95),
        live_delay_p50_s: quantile(&mut delays, 0.5),
        live_delay_p95_s: quantile(&mut delays, 0.95),
        overhead: metrics::overhead(n.control_bytes, n.media_bytes),
        connectivity_direct: share(n.dials_direct),
        connectivity_relayed: share(n.dials_relayed),
        connectivity_failed: share(n.dials_failed),
        events: n.events,
        sessions: r.len() as u64,
        sessions_started: startups.len() as u64,
        media_bytes: n.media_bytes,
        control_bytes: n.control_bytes,
        source_media_bytes: n.source_media_bytes,
        played_bytes,
        bytes_from_peers: sum(|v| v.bytes_from_peers),
        bytes_from_source: sum(|v| v.bytes_from_source),
        bytes_duplicate: sum(|v| v.bytes_duplicate),
        requests_sent: sum(|v| v.requests_sent),
        requests_to_source: sum(|v| v.requests_to_source),
        messages_delivered: n.messages_delivered,
        messages_dropped: n.messages_dropped,
        dials_to_departed: n.dials_to_departed,
        disconnects: n.disconnects,
        lost_to_cut: n.lost_to_cut,
        startup_cdf: cdf(&startups),
        live_delay_cdf: cdf(&delays),
        series: c.series.clone(),
    }
}

/// Points `[value, share ≤ value]` of a sorted sample, thinned to a bounded count.
fn cdf(sorted: &[f64]) -> Vec<[f64; 2]> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let n = sorted.len();
    let step = n.div_ceil(CDF_POINTS_MAX).max(1);
    let mut out: Vec<[f64; 2]> = (0..n).step_by(step).map(|i| [sorted[i], (i + 1) as f64 / n as f64]).collect();
    if out.last().is_some_and(|p| p[1] < 1.0) {
        out.push([sorted[n - 1], 1.0]);
    }
    out
}
