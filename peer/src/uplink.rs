//! What this peer's uplink carries, measured from what its connections actually drain.
//!
//! Every driver reports each piece the peer handed it once the receiver has it
//! ([`PieceAck`]: in production when QUIC has the stream acknowledged, in the simulator
//! one round trip after the piece's flow crossed the uplink), with the connection's
//! round trip. From those reports this module keeps:
//! - the bytes in flight: handed to the transport and not yet acknowledged;
//! - the bytes in the pipe: of those, the ones already past the uplink and on their
//!   way or waiting for their acknowledgement, estimated per connection as its recent
//!   rate (bytes acknowledged over the last `PIPE_WINDOW` or round trip, whichever is
//!   longer) times its round trip: at a steady rate, what left the uplink in the last
//!   round trip is what comes back acknowledged in the next;
//! - the uplink's rate: the windowed maximum of rate samples, each the bytes of the
//!   pieces that left the uplink over about `SAMPLE_SPAN`, over that span. A piece left
//!   a round trip before its acknowledgement; acknowledgements themselves come sooner from
//!   near children than from far ones, and rates taken on their times read as bursts of
//!   speed. A span is measured once every piece that left in it has been acknowledged
//!   (the longest round trip has passed). A sample taken while the peer had little to
//!   send is low; the maximum over `RATE_WINDOW` keeps it from pulling the estimate down.
//!
//! What is in flight and not in the pipe is the uplink's queue (the transport's buffers
//! and the router's). The peer hands the transport more only while that queue is under
//! the rate times the time asked for (`PUSH_AHEAD` for pushes, `serve_horizon` for
//! answers): the link stays busy whenever the peer has something to send, so the samples
//! reach the link's real rate, while the router's queue stays short and control messages
//! and urgent pieces are not stuck behind seconds of media. An operator's cap
//! (`PeerConfig::uplink_cap_bps`) bounds the estimate; it is never a claim.

use meshtv_proto::{NodeId, PieceAck, Time};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The rate assumed before any piece was acknowledged, and the floor of the estimate: low,
/// so that a peer on a thin uplink does not flood its router (on a link of half this, the
/// queue is at most twice the time asked for); the estimate passes it within a few round
/// trips wherever the link is faster.
pub const INITIAL_BPS: u64 = 1_000_000;
/// Delivery-rate samples are kept this long; the estimate is their maximum.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Samples kept at most (one per acknowledged piece would be thousands a second at a
/// source; the oldest are folded together).
const SAMPLES_MAX: usize = 64;
/// The span of departures one rate sample is taken over.
const SAMPLE_SPAN: Duration = Duration::from_millis(500);
/// Departures kept for the samples (the last span and the longest round trip, at most
/// this many).
const DEPARTURES_MAX: usize = 1024;
/// The least time a connection's recent rate is taken over (a round trip of whole
/// pieces is too lumpy: a piece or none).
const PIPE_WINDOW: Duration = Duration::from_millis(500);
/// The least round trip reported over this long is the path's.
const RTT_FLOOR_WINDOW: Duration = Duration::from_secs(10);
/// A round trip longer than this is taken as this long: a pipe estimate over seconds
/// would count a congested queue as the pipe.
const RTT_MAX: Duration = Duration::from_millis(500);
/// A connection with pieces in flight and no acknowledgement for this long is stalled
/// (its peer is gone or its path is broken): what is in flight on it no longer counts
/// against the uplink, and nothing more is sent on it until it acknowledges again. A
/// child that vanished without a word must not hold up its siblings until the transport
/// times the connection out.
const STALL_AFTER: Duration = Duration::from_secs(1);
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
}

/// One connection's pieces in flight and recent acknowledgements, for its share of the
/// pipe.
#[derive(Debug, Default)]
struct Pipe {
    /// Bytes in flight on it.
    inflight: u64,
    /// Since when it has had pieces in flight, or its last acknowledgement if later.
    waiting_since: Time,
    /// The path's round trip (see `observe_rtt`), and the reports it is the least of
    /// (increasing: at most one per acknowledgement over `RTT_FLOOR_WINDOW`, fewer as a
    /// rule).
    rtt: Duration,
    rtts: VecDeque<(Time, Duration)>,
    /// (when, bytes) acknowledged within the last `window()`.
    acked: VecDeque<(Time, u32)>,
    bytes: u64,
}

impl Pipe {
    /// Takes the round trip the driver reports and returns the path's: the least reported
    /// over `RTT_FLOOR_WINDOW`. QUIC's estimate counts the router's queue, and a departure
    /// time or pipe taken from it would count the queue as the pipe: the uplink would
    /// look faster than it is and its queue shorter.
    fn observe_rtt(&mut self, now: Time, rtt: Duration) -> Duration {
        // A sliding minimum: reports kept in increasing order, each the least since.
        while self.rtts.back().is_some_and(|&(_, r)| r >= rtt) {
            self.rtts.pop_back();
        }
        self.rtts.push_back((now, rtt));
        while self.rtts.front().is_some_and(|&(t, _)| now.since(t) > RTT_FLOOR_WINDOW) {
            self.rtts.pop_front();
        }
        self.rtt = self.rtts.front().map_or(rtt, |&(_, r)| r);
        self.rtt
    }

    fn window(&self) -> Duration {
        self.rtt.max(PIPE_WINDOW)
    }

    fn stalled(&self, now: Time) -> bool {
        self.inflight > 0 && now.since(self.waiting_since) > STALL_AFTER
    }

    /// Its bytes in flight not yet past the uplink: what is in flight, less its recent
    /// rate times its round trip; nothing once it stalled.
    fn queued(&self, now: Time) -> u64 {
        if self.stalled(now) {
            return 0;
        }
        let pipe = self.bytes as f64 * self.rtt.as_secs_f64() / self.window().as_secs_f64();
        self.inflight.saturating_sub(pipe as u64)
    }

    fn trim(&mut self, now: Time) {
        let window = self.window();
        while let Some(&(at, b)) = self.acked.front() {
            if now.since(at) <= window {
                break;
            }
            self.acked.pop_front();
            self.bytes -= b as u64;
        }
    }
}

#[derive(Debug)]
pub struct Uplink {
    cap_bps: Option<u64>,
    samples: VecDeque<(Time, u64)>,
    rate_bps: u64,
    inflight: BTreeMap<(NodeId, u64, u16), Sent>,
    inflight_bytes: u64,
    /// Per connection with pieces acknowledged: bounded by the connections.
    pipes: BTreeMap<NodeId, Pipe>,
    /// When acknowledged pieces left the uplink, and their bytes, in time order.
    departures: VecDeque<(Time, u32)>,
    /// The end of the span last sampled: each span is sampled once.
    sampled_to: Time,
    /// When the pipes were last trimmed (acknowledgements trim their own pipe as they come).
    aged_at: Option<Time>,
}

impl Uplink {
    pub fn new(cap_bps: Option<u64>) -> Uplink {
        Uplink {
            cap_bps,
            samples: VecDeque::new(),
            rate_bps: INITIAL_BPS,
            inflight: BTreeMap::new(),
            inflight_bytes: 0,
            pipes: BTreeMap::new(),
            departures: VecDeque::new(),
            sampled_to: Time::ZERO,
            aged_at: None,
        }
    }

    /// The uplink's rate as measured, within the operator's cap.
    pub fn rate_bps(&self) -> u64 {
        self.cap_bps.map_or(self.rate_bps, |c| self.rate_bps.min(c))
    }

    /// Bytes handed to the transport and not acknowledged.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// Bytes in flight that have not left the uplink yet, as far as the peer can tell.
    pub fn queued_bytes(&self, now: Time) -> u64 {
        self.pipes.values().map(|p| p.queued(now)).sum()
    }

    /// Whether the connection to `peer` has had pieces in flight and no acknowledgement
    /// for `STALL_AFTER`: sending it more would only queue behind what it does not take.
    pub fn stalled(&self, now: Time, peer: NodeId) -> bool {
        self.pipes.get(&peer).is_some_and(|p| p.stalled(now))
    }

    fn add_inflight(&mut self, now: Time, to: NodeId, bytes: u32) {
        self.inflight_bytes += bytes as u64;
        let pipe = self.pipes.entry(to).or_default();
        if pipe.inflight == 0 {
            pipe.waiting_since = now;
        }
        pipe.inflight += bytes as u64;
    }

    fn remove_inflight(&mut self, to: NodeId, bytes: u32) {
        self.inflight_bytes -= bytes as u64;
        if let Some(p) = self.pipes.get_mut(&to) {
            p.inflight -= bytes as u64;
        }
    }

    /// Whether the uplink's queue and `waiting` more bytes would leave within `ahead`
    /// at the measured rate.
    pub fn has_room(&mut self, now: Time, ahead: Duration, waiting: u64) -> bool {
        self.age(now);
        let room = self.rate_bps() as f64 * ahead.as_secs_f64() / 8.0;
        ((self.queued_bytes(now) + waiting) as f64) < room
    }

    /// A piece was handed to the transport.
    pub fn sent(&mut self, now: Time, to: NodeId, seq: u64, index: u16, bytes: u32) {
        if self.inflight.len() >= INFLIGHT_MAX {
            self.expire_oldest();
        }
        let sent = Sent { bytes, at: now };
        if let Some(old) = self.inflight.insert((to, seq, index), sent) {
            self.remove_inflight(to, old.bytes);
        }
        self.add_inflight(now, to, bytes);
    }

    /// The driver's report on a piece. Unknown pieces (already expired or forgotten)
    /// are ignored.
    pub fn acked(&mut self, now: Time, ack: PieceAck) {
        let Some(s) = self.inflight.remove(&(ack.to, ack.seq, ack.index)) else { return };
        self.remove_inflight(ack.to, s.bytes);
        if !ack.delivered {
            return;
        }
        let pipe = self.pipes.entry(ack.to).or_default();
        pipe.waiting_since = now;
        let rtt = pipe.observe_rtt(now, ack.rtt.min(RTT_MAX));
        pipe.acked.push_back((now, s.bytes));
        pipe.bytes += s.bytes as u64;
        pipe.trim(now);
        // When it left the uplink: a round trip (without queue) before its acknowledgement.
        self.depart((now - rtt).max(s.at), s.bytes);
        self.sample_rate(now);
    }

    /// Records a departure, in time order.
    fn depart(&mut self, at: Time, bytes: u32) {
        let i = self.departures.iter().rposition(|&(t, _)| t <= at).map_or(0, |i| i + 1);
        self.departures.insert(i, (at, bytes));
        if self.departures.len() > DEPARTURES_MAX {
            self.departures.pop_front();
        }
    }

    /// The connection to `peer` is gone: what was in flight to it will not be reported.
    pub fn forget(&mut self, peer: NodeId) {
        let gone: Vec<_> = self.inflight.range((peer, 0, 0)..=(peer, u64::MAX, u16::MAX)).map(|(k, _)| *k).collect();
        for k in gone {
            if let Some(s) = self.inflight.remove(&k) {
                self.inflight_bytes -= s.bytes as u64;
            }
        }
        self.pipes.remove(&peer);
    }

    /// Lets the pipe estimates age: what was acknowledged longer ago than a connection's
    /// window (`Pipe::window`) no longer counts toward its recent rate.
    fn age(&mut self, now: Time) {
        // Once per instant: a release loop asks for room once per piece it hands over.
        if self.aged_at == Some(now) {
            return;
        }
        self.aged_at = Some(now);
        for pipe in self.pipes.values_mut() {
            pipe.trim(now);
        }
    }

    /// Drops pieces in flight for longer than any acknowledgement takes, and connections
    /// with nothing in flight or in the pipe. Called on every tick.
    pub fn expire(&mut self, now: Time) {
        self.age(now);
        let stale: Vec<_> =
            self.inflight.iter().filter(|(_, s)| now.since(s.at) > INFLIGHT_TIMEOUT).map(|(k, _)| *k).collect();
        for k in stale {
            if let Some(s) = self.inflight.remove(&k) {
                self.remove_inflight(k.0, s.bytes);
            }
        }
        self.pipes.retain(|_, p| !p.acked.is_empty() || p.inflight > 0);
    }

    fn expire_oldest(&mut self) {
        let oldest = self.inflight.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| *k);
        if let Some(k) = oldest {
            if let Some(s) = self.inflight.remove(&k) {
                self.remove_inflight(k.0, s.bytes);
            }
        }
    }

    /// Samples the rate over the last span whose departures have all been acknowledged:
    /// the bytes of the pieces that left after the span's first departure and up to its
    /// last, over the time between them (each of those pieces crossed the uplink wholly
    /// inside it).
    fn sample_rate(&mut self, now: Time) {
        let longest = self.pipes.values().map(|p| p.rtt).max().unwrap_or_default();
        let end = now - longest;
        while self.departures.front().is_some_and(|&(t, _)| end.since(t) > SAMPLE_SPAN) {
            self.departures.pop_front();
        }
        let done = self.departures.iter().take_while(|&&(t, _)| t <= end);
        let (Some(&(first, _)), Some(&(last, _))) = (self.departures.front(), done.clone().last()) else { return };
        if last.since(first) < SAMPLE_SPAN / 2 || last <= self.sampled_to {
            return;
        }
        self.sampled_to = last;
        let bytes: u64 = done.skip(1).map(|&(_, b)| b as u64).sum();
        let bps = (bytes as f64 * 8.0 / last.since(first).as_secs_f64()) as u64;
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
        // Never below the initial guess: a peer that had little to send measured little,
        // and an estimate under what any uplink carries would have it decline the very
        // requests that would show its rate.
        self.rate_bps = self.samples.iter().map(|&(_, b)| b).max().unwrap_or(0).max(INITIAL_BPS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u32 = 16_384;
    const AHEAD: Duration = Duration::from_millis(150);

    /// An uplink of `link_bps` whose pieces reach children `delay_ms` away (one way),
    /// children taking turns: every `burst` the peer has `load` times what the link
    /// carries in that time to send, and hands it over while `has_room` allows. Pieces
    /// leave one at a time at the link's rate. Returns the most bytes ever waiting for
    /// the link (sent and not yet started on it).
    fn drive(up: &mut Uplink, link_bps: u64, delay_ms: &[u64], secs: u64, burst: Duration, load: f64) -> u64 {
        drive_reporting(up, link_bps, delay_ms, secs, burst, load, false)
    }

    /// `drive`, the round trips reported counting the time each piece waited for the link
    /// when `queue_in_rtt` (as QUIC's smoothed estimate counts a router's queue).
    fn drive_reporting(
        up: &mut Uplink,
        link_bps: u64,
        delay_ms: &[u64],
        secs: u64,
        burst: Duration,
        load: f64,
        queue_in_rtt: bool,
    ) -> u64 {
        let mut now = Time::ZERO;
        let mut link_free = Time::ZERO;
        // (acknowledged at, child, seq, round trip)
        let mut acks: Vec<(Time, u64, u64, Duration)> = Vec::new();
        let (mut seq, mut backlog, mut next_burst, mut most) = (0u64, 0f64, Time::ZERO, 0);
        let end = Time::from_secs_f64(secs as f64);
        while now < end {
            if now >= next_burst {
                backlog += load * link_bps as f64 / 8.0 * burst.as_secs_f64();
                next_burst = next_burst + burst;
            }
            while backlog > 0.0 && up.has_room(now, AHEAD, 0) {
                let child = seq % delay_ms.len() as u64;
                up.sent(now, NodeId(child), seq, 0, PIECE);
                backlog -= PIECE as f64;
                let start = link_free.max(now);
                let waiting = start.since(now).as_secs_f64() * link_bps as f64 / 8.0;
                most = most.max(waiting as u64);
                link_free = start + Duration::from_secs_f64(PIECE as f64 * 8.0 / link_bps as f64);
                let rtt = Duration::from_millis(2 * delay_ms[child as usize]);
                let reported = if queue_in_rtt { rtt + start.since(now) } else { rtt };
                acks.push((link_free + rtt, child, seq, reported));
                seq += 1;
            }
            acks.sort_by_key(|a| std::cmp::Reverse(a.0));
            let due = acks.last().map_or(next_burst, |a| a.0.min(next_burst));
            now = now.max(due);
            while let Some(&(at, child, s, rtt)) = acks.last().filter(|a| a.0 <= now) {
                acks.pop();
                up.acked(at, PieceAck { to: NodeId(child), seq: s, index: 0, delivered: true, rtt });
            }
        }
        most
    }

    #[test]
    fn climbs_to_the_links_rate_and_no_further_and_keeps_the_queue_short() {
        // A live stream (bursts of 1.5 times what the link carries over 0.5 s, every 2 s)
        // and a sender that always has more; children near and far.
        let cases =
            [(4_000_000, vec![20, 5, 60]), (1_000_000, vec![5]), (12_000_000, vec![40, 150]), (40_000_000, vec![1])];
        for (link, delays) in cases {
            for (burst, load) in [(Duration::from_secs(2), 0.375), (Duration::from_secs(1), 4.0)] {
                let mut up = Uplink::new(None);
                let most = drive(&mut up, link, &delays, 20, burst, load);
                let r = up.rate_bps() as f64 / link as f64;
                assert!((0.9..=1.05).contains(&r), "link {link}, load {load}: estimate {} ({r:.2})", up.rate_bps());
                // The link's queue stays of the order of `AHEAD`: within twice it and a
                // piece per child (the pipe estimate lags when a burst starts or ends).
                let pieces = delays.len() as u64 + 1;
                let bound = (link as f64 / 8.0 * 2.0 * AHEAD.as_secs_f64()) as u64 + pieces * PIECE as u64;
                assert!(most <= bound, "link {link}, load {load}: {most} bytes queued, bound {bound}");
            }
        }
    }

    #[test]
    fn a_round_trip_that_counts_the_queue_does_not_inflate_the_rate() {
        // A live stream goes idle between segments: the path's round trip shows then, and
        // the estimate holds to the link. A sender that never goes idle never shows it,
        // and errs by at most the queue it allows (a quarter here).
        for (link, delays) in [(4_000_000, vec![20]), (12_000_000, vec![40, 150])] {
            for (burst, load, most) in [(Duration::from_secs(2), 0.375, 1.05), (Duration::from_secs(1), 4.0, 1.3)] {
                let mut up = Uplink::new(None);
                drive_reporting(&mut up, link, &delays, 20, burst, load, true);
                let r = up.rate_bps() as f64 / link as f64;
                assert!((0.9..=most).contains(&r), "link {link}, load {load}: estimate {} ({r:.2})", up.rate_bps());
            }
        }
    }

    #[test]
    fn a_cap_bounds_the_estimate() {
        let mut up = Uplink::new(Some(2_000_000));
        drive(&mut up, 8_000_000, &[10], 10, Duration::from_secs(1), 4.0);
        assert_eq!(up.rate_bps(), 2_000_000);
    }

    #[test]
    fn lost_and_forgotten_pieces_leave_the_window() {
        let mut up = Uplink::new(None);
        up.sent(Time::ZERO, NodeId(1), 0, 0, PIECE);
        up.sent(Time::ZERO, NodeId(2), 0, 0, PIECE);
        up.sent(Time::ZERO, NodeId(2), 0, 1, PIECE);
        assert_eq!(up.inflight_bytes(), 3 * PIECE as u64);
        let lost = PieceAck { to: NodeId(1), seq: 0, index: 0, delivered: false, rtt: Duration::ZERO };
        up.acked(Time::from_millis(50), lost);
        up.forget(NodeId(2));
        assert_eq!(up.inflight_bytes(), 0);
        up.sent(Time::from_millis(60), NodeId(3), 0, 0, PIECE);
        up.expire(Time::from_millis(60) + INFLIGHT_TIMEOUT + Duration::from_millis(1));
        assert_eq!(up.inflight_bytes(), 0);
    }

    #[test]
    fn a_quiet_spell_does_not_lower_the_estimate() {
        let mut up = Uplink::new(None);
        drive(&mut up, 4_000_000, &[20], 10, Duration::from_secs(1), 4.0);
        let before = up.rate_bps();
        // One lone piece a second later, acknowledged after its transmission and an RTT.
        let t = Time::from_secs_f64(11.0);
        up.sent(t, NodeId(7), 1 << 20, 0, PIECE);
        let ack = PieceAck { to: NodeId(7), seq: 1 << 20, index: 0, delivered: true, rtt: Duration::from_millis(40) };
        up.acked(t + Duration::from_millis(75), ack);
        assert_eq!(up.rate_bps(), before);
    }

    #[test]
    fn what_is_acknowledged_over_a_round_trip_counts_as_in_the_pipe() {
        let mut up = Uplink::new(None);
        let rtt = Duration::from_millis(100);
        for i in 0..4 {
            up.sent(Time::ZERO, NodeId(1), i, 0, PIECE);
        }
        // Ten acknowledged over the last 500 ms, i.e. two per round trip: two of the
        // four in flight are in the pipe as far as the peer can tell.
        for i in 0..4 {
            up.sent(Time::ZERO, NodeId(1), 100 + i, 0, PIECE);
        }
        for i in 0..10 {
            let ack = PieceAck { to: NodeId(1), seq: 100 + (i % 4), index: 0, delivered: true, rtt };
            up.sent(Time::ZERO, NodeId(1), 100 + (i % 4), 0, PIECE);
            up.acked(Time::from_millis(50 * (i + 1)), ack);
        }
        assert_eq!(up.inflight_bytes(), 4 * PIECE as u64);
        assert_eq!(up.queued_bytes(Time::from_millis(500)), 2 * PIECE as u64);
        // Once nothing was acknowledged for the window, all four count as queued.
        up.expire(Time::from_millis(1001));
        assert_eq!(up.queued_bytes(Time::from_millis(500)), 4 * PIECE as u64);
    }

    #[test]
    fn a_connection_that_stops_acknowledging_stops_holding_up_the_others() {
        let mut up = Uplink::new(None);
        let t0 = Time::ZERO;
        // A child that vanished: two pieces to it are never acknowledged.
        up.sent(t0, NodeId(9), 0, 0, PIECE);
        up.sent(t0, NodeId(9), 0, 1, PIECE);
        assert!(!up.has_room(t0, AHEAD, 0), "two pieces fill 150 ms of 1 Mbit/s");
        let later = t0 + STALL_AFTER + Duration::from_millis(1);
        assert!(up.stalled(later, NodeId(9)));
        assert!(!up.stalled(later, NodeId(8)));
        assert!(up.has_room(later, AHEAD, 0), "its pieces no longer count against the uplink");
        // It acknowledges after all: no longer stalled.
        let ack = PieceAck { to: NodeId(9), seq: 0, index: 0, delivered: true, rtt: Duration::from_millis(20) };
        up.acked(later, ack);
        assert!(!up.stalled(later, NodeId(9)));
    }
}
