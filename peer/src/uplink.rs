//! What this peer's uplink carries, measured from what its connections actually drain.
//!
//! Every driver reports each piece the peer handed it once the receiver has it
//! (`Node::on_delivered`: in production when QUIC has the stream acknowledged, in the
//! simulator one round trip after the piece's flow crossed the uplink). From those
//! reports this module keeps:
//! - the bytes in flight: handed to the transport and not yet acknowledged, i.e. what
//!   sits in the transport's buffers, the router's queue and on the wire;
//! - the uplink's rate: the windowed maximum of delivery-rate samples, each the bytes
//!   delivered between a piece's send and its acknowledgement over that time, as BBR
//!   measures a path (a sample taken while the peer had little to send is low, and the
//!   maximum over `RATE_WINDOW` keeps it from pulling the estimate down);
//! - the round trip's floor: the least time a piece took beyond its own transmission,
//!   from pieces sent while nothing else was in flight (any other sample would count the
//!   queue ahead of it, and the window, sized by the round trip, would feed the queue it
//!   measures).
//!
//! The peer hands the transport only as much as `window` allows: the rate times the
//! time asked for plus two round trips. Two round trips of data in flight let the
//! samples exceed the current estimate whenever the link has more room (so the estimate
//! climbs to the link's rate in a few round trips); the rest keeps the router's queue
//! short, so that control messages and urgent pieces are not stuck behind seconds of
//! media. An operator's cap (`--upload-kbps`) bounds the estimate; it is never a claim.

use meshtv_proto::{NodeId, Time};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The rate assumed before any piece was delivered: low, so that a peer on a thin
/// uplink does not flood its router at start; the estimate passes it in a few round
/// trips wherever the link is faster.
pub const INITIAL_BPS: u64 = 1_000_000;
/// Delivery-rate samples are kept this long; the estimate is their maximum.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Samples kept at most (one per delivered piece would be thousands a second at a source).
const SAMPLES_MAX: usize = 64;
/// The round-trip floor is the least sample over this long; once older, the next sample
/// replaces it (routes change). Without a new sample the old floor stays.
const RTT_WINDOW: Duration = Duration::from_secs(10);
/// A round-trip floor above this is taken as a congested measure, not the path's.
const RTT_MAX: Duration = Duration::from_millis(500);
/// Samples over less time than this are noise.
const SAMPLE_INTERVAL_MIN: Duration = Duration::from_millis(1);
/// A piece not acknowledged after this long is taken as lost (a driver that never
/// reported it must not shrink the window for good).
const INFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most pieces in flight tracked; a bound on memory, far above what any window allows.
const INFLIGHT_MAX: usize = 16_384;

/// A piece handed to the transport, waiting for its acknowledgement.
#[derive(Clone, Copy, Debug)]
struct Sent {
    bytes: u32,
    at: Time,
    /// `Uplink::delivered_bytes`, `Uplink::delivered_at` and `Uplink::first_sent_at`
    /// when it was sent.
    delivered_bytes: u64,
    delivered_at: Time,
    first_sent_at: Time,
    /// Nothing else was in flight when it was sent: its time to the acknowledgement is
    /// its transmission and one round trip, no queue.
    alone: bool,
}

#[derive(Debug)]
pub struct Uplink {
    cap_bps: Option<u64>,
    samples: VecDeque<(Time, u64)>,
    rate_bps: u64,
    rtt_floor: Option<(Duration, Time)>,
    inflight: BTreeMap<(NodeId, u64, u16), Sent>,
    inflight_bytes: u64,
    delivered_bytes: u64,
    delivered_at: Time,
    /// When the piece last acknowledged was sent.
    first_sent_at: Time,
}

impl Uplink {
    pub fn new(cap_bps: Option<u64>) -> Uplink {
        let rate_bps = cap_bps.map_or(INITIAL_BPS, |c| c.min(INITIAL_BPS));
        Uplink {
            cap_bps,
            samples: VecDeque::new(),
            rate_bps,
            rtt_floor: None,
            inflight: BTreeMap::new(),
            inflight_bytes: 0,
            delivered_bytes: 0,
            delivered_at: Time::ZERO,
            first_sent_at: Time::ZERO,
        }
    }

    /// The uplink's rate as measured, within the operator's cap.
    pub fn rate_bps(&self) -> u64 {
        self.cap_bps.map_or(self.rate_bps, |c| self.rate_bps.min(c))
    }

    /// The round trip's floor, zero before any was measured.
    pub fn rtt(&self) -> Duration {
        self.rtt_floor.map_or(Duration::ZERO, |(r, _)| r)
    }

    /// Bytes handed to the transport and not acknowledged.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// Bytes the peer may have in flight so that what it hands the transport now leaves
    /// within about `ahead`: the rate over `ahead` plus two round trips.
    pub fn window(&self, ahead: Duration) -> u64 {
        let secs = (ahead + 2 * self.rtt()).as_secs_f64();
        (self.rate_bps() as f64 * secs / 8.0) as u64
    }

    /// Whether more may be handed to the transport now to leave within `ahead`.
    pub fn has_room(&self, ahead: Duration, queued_bytes: u64) -> bool {
        self.inflight_bytes + queued_bytes < self.window(ahead)
    }

    /// A piece was handed to the transport.
    pub fn sent(&mut self, now: Time, to: NodeId, seq: u64, index: u16, bytes: u32) {
        if self.inflight.is_empty() {
            // Idle until now: the next sample's interval starts here, not at the last
            // acknowledgement long ago.
            self.delivered_at = now;
            self.first_sent_at = now;
        }
        if self.inflight.len() >= INFLIGHT_MAX {
            self.expire_oldest();
        }
        let alone = self.inflight.is_empty();
        let sent = Sent {
            bytes,
            at: now,
            delivered_bytes: self.delivered_bytes,
            delivered_at: self.delivered_at,
            first_sent_at: self.first_sent_at,
            alone,
        };
        if let Some(old) = self.inflight.insert((to, seq, index), sent) {
            self.inflight_bytes -= old.bytes as u64;
        }
        self.inflight_bytes += bytes as u64;
    }

    /// The driver's report on a piece: delivered (acknowledged) or lost. Unknown pieces
    /// (sent before a restart of the count, or already expired) are ignored.
    pub fn acked(&mut self, now: Time, to: NodeId, seq: u64, index: u16, delivered: bool) {
        let Some(s) = self.inflight.remove(&(to, seq, index)) else { return };
        self.inflight_bytes -= s.bytes as u64;
        if !delivered {
            return;
        }
        self.delivered_bytes += s.bytes as u64;
        self.delivered_at = now;
        self.first_sent_at = s.at;
        self.sample_rate(now, &s);
        self.sample_rtt(now, &s);
    }

    /// The connection to `peer` is gone: what was in flight to it will not be reported.
    pub fn forget(&mut self, peer: NodeId) {
        let gone: Vec<_> = self.inflight.range((peer, 0, 0)..=(peer, u64::MAX, u16::MAX)).map(|(k, _)| *k).collect();
        for k in gone {
            if let Some(s) = self.inflight.remove(&k) {
                self.inflight_bytes -= s.bytes as u64;
            }
        }
    }

    /// Drops pieces in flight for longer than any acknowledgement takes.
    pub fn expire(&mut self, now: Time) {
        if self.inflight.values().any(|s| now.since(s.at) > INFLIGHT_TIMEOUT) {
            let before = self.inflight.len();
            self.inflight.retain(|_, s| now.since(s.at) <= INFLIGHT_TIMEOUT);
            if self.inflight.len() != before {
                self.inflight_bytes = self.inflight.values().map(|s| s.bytes as u64).sum();
            }
        }
    }

    fn expire_oldest(&mut self) {
        let oldest = self.inflight.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| *k);
        if let Some(s) = oldest.and_then(|k| self.inflight.remove(&k)) {
            self.inflight_bytes -= s.bytes as u64;
        }
    }

    fn sample_rate(&mut self, now: Time, s: &Sent) {
        // BBR's delivery rate: the bytes acknowledged since this piece was sent, over the
        // longer of the send and acknowledgement intervals (acknowledgements that come
        // bunched would otherwise read as a burst of speed).
        let interval = now.since(s.delivered_at).max(s.at.since(s.first_sent_at));
        if interval < SAMPLE_INTERVAL_MIN {
            return;
        }
        let bits = (self.delivered_bytes - s.delivered_bytes) as f64 * 8.0;
        let bps = (bits / interval.as_secs_f64()) as u64;
        while self.samples.front().is_some_and(|&(t, _)| now.since(t) > RATE_WINDOW) {
            self.samples.pop_front();
        }
        if self.samples.len() >= SAMPLES_MAX {
            // Keep the larger of the two oldest: the maximum is what matters.
            let a = self.samples.pop_front().map_or(0, |(_, b)| b);
            if let Some(f) = self.samples.front_mut() {
                f.1 = f.1.max(a);
            }
        }
        self.samples.push_back((now, bps));
        let best = self.samples.iter().map(|&(_, b)| b).max().unwrap_or(INITIAL_BPS);
        // Until the window holds a sample above the initial guess, keep the guess.
        self.rate_bps = best.max(INITIAL_BPS.min(self.rate_bps));
    }

    fn sample_rtt(&mut self, now: Time, s: &Sent) {
        if !s.alone || self.samples.is_empty() {
            // Queued behind others, or the rate it would be corrected by is a guess.
            return;
        }
        let transmit = Duration::from_secs_f64(s.bytes as f64 * 8.0 / self.rate_bps().max(1) as f64);
        let rtt = now.since(s.at).saturating_sub(transmit).min(RTT_MAX);
        let stale = self.rtt_floor.is_none_or(|(_, at)| now.since(at) > RTT_WINDOW);
        if stale || self.rtt_floor.is_some_and(|(r, _)| rtt <= r) {
            self.rtt_floor = Some((rtt, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u32 = 16_384;

    /// Drives an uplink of `link_bps` with a one-way delay of `delay` for `secs`: every
    /// `burst` the peer has `load` times what the link carries in that time to send, and
    /// hands it over as the window allows; pieces leave one at a time at the link's rate.
    /// Returns the most bytes that were ever in flight or queued at the link.
    fn drive(up: &mut Uplink, link_bps: u64, delay: Duration, secs: u64, burst: Duration, load: f64) -> u64 {
        let mut now = Time::ZERO;
        let mut link_free = Time::ZERO;
        let mut acks: VecDeque<(Time, u64)> = VecDeque::new();
        let (mut seq, mut backlog, mut next_burst, mut most) = (0u64, 0f64, Time::ZERO, 0);
        let end = Time::from_secs_f64(secs as f64);
        while now < end {
            if now >= next_burst {
                backlog += load * link_bps as f64 / 8.0 * burst.as_secs_f64();
                next_burst = next_burst + burst;
            }
            while backlog > 0.0 && up.has_room(Duration::from_millis(150), 0) {
                up.sent(now, NodeId(7), seq, 0, PIECE);
                backlog -= PIECE as f64;
                let start = link_free.max(now);
                link_free = start + Duration::from_secs_f64(PIECE as f64 * 8.0 / link_bps as f64);
                acks.push_back((link_free + 2 * delay, seq));
                seq += 1;
                most = most.max(up.inflight_bytes());
            }
            let due = acks.front().map_or(next_burst, |a| a.0.min(next_burst));
            now = now.max(due);
            while let Some(&(at, s)) = acks.front().filter(|a| a.0 <= now) {
                acks.pop_front();
                up.acked(at, NodeId(7), s, 0, true);
            }
        }
        most
    }

    fn saturate(up: &mut Uplink, link_bps: u64, delay: Duration, secs: u64) {
        drive(up, link_bps, delay, secs, Duration::from_secs(1), 4.0);
    }

    #[test]
    fn climbs_to_the_links_rate_and_no_further() {
        // A live stream: bursts of 1.5 times what the link carries over 0.5 s, every
        // 2 s, so that the link is idle at times (as a segment's pushes are).
        for (link, delay_ms) in [(4_000_000, 20), (1_000_000, 5), (12_000_000, 40), (40_000_000, 1)] {
            let mut up = Uplink::new(None);
            let delay = Duration::from_millis(delay_ms);
            drive(&mut up, link, delay, 20, Duration::from_secs(2), 0.375);
            let r = up.rate_bps() as f64 / link as f64;
            assert!((0.9..=1.05).contains(&r), "link {link}: estimate {} ({r:.2} of it)", up.rate_bps());
            let rtt = up.rtt().as_millis() as u64;
            assert!(rtt + 2 >= 2 * delay_ms && rtt <= 2 * delay_ms + 20, "rtt {rtt} ms for {delay_ms} ms each way");
        }
    }

    #[test]
    fn a_sender_that_always_has_more_keeps_the_queue_short() {
        // Never idle after the start: the window must not feed on its own queue.
        for (link, delay_ms) in [(4_000_000, 20), (1_000_000, 5), (12_000_000, 40)] {
            let mut up = Uplink::new(None);
            let delay = Duration::from_millis(delay_ms);
            let most = drive(&mut up, link, delay, 20, Duration::from_secs(1), 4.0);
            let r = up.rate_bps() as f64 / link as f64;
            assert!((0.7..=1.05).contains(&r), "link {link}: estimate {} ({r:.2} of it)", up.rate_bps());
            // At most the window: 150 ms and two round trips of the link's rate.
            let window = (link as f64 / 8.0 * (0.15 + 4.0 * delay.as_secs_f64())) as u64 + PIECE as u64;
            assert!(most <= window, "link {link}: {most} bytes in flight, window {window}");
        }
    }

    #[test]
    fn a_cap_bounds_the_estimate() {
        let mut up = Uplink::new(Some(2_000_000));
        saturate(&mut up, 8_000_000, Duration::from_millis(10), 10);
        assert_eq!(up.rate_bps(), 2_000_000);
    }

    #[test]
    fn lost_and_forgotten_pieces_leave_the_window() {
        let mut up = Uplink::new(None);
        up.sent(Time::ZERO, NodeId(1), 0, 0, PIECE);
        up.sent(Time::ZERO, NodeId(2), 0, 0, PIECE);
        up.sent(Time::ZERO, NodeId(2), 0, 1, PIECE);
        assert_eq!(up.inflight_bytes(), 3 * PIECE as u64);
        up.acked(Time::from_millis(50), NodeId(1), 0, 0, false);
        up.forget(NodeId(2));
        assert_eq!(up.inflight_bytes(), 0);
        up.sent(Time::from_millis(60), NodeId(3), 0, 0, PIECE);
        up.expire(Time::from_millis(60) + INFLIGHT_TIMEOUT + Duration::from_millis(1));
        assert_eq!(up.inflight_bytes(), 0);
    }

    #[test]
    fn a_quiet_spell_does_not_lower_the_estimate() {
        let mut up = Uplink::new(None);
        saturate(&mut up, 4_000_000, Duration::from_millis(20), 10);
        let before = up.rate_bps();
        // One lone piece a second later, acknowledged after its transmission and an RTT.
        let t = Time::from_secs_f64(11.0);
        up.sent(t, NodeId(7), 1 << 20, 0, PIECE);
        up.acked(t + Duration::from_millis(75), NodeId(7), 1 << 20, 0, true);
        assert_eq!(up.rate_bps(), before);
    }
}
