//! The peer state machine. See the crate documentation for what it does.

use crate::buffer::{Buffer, Offer, Slot};
use crate::config::{Fault, PeerConfig, PeerRole};
use crate::playback::{Playback, SegmentState};
use crate::scheduler::{self, Decision, Missing, PartnerView, Policy};
use crate::stats::PeerStats;
use crate::traversal::Traversal;
use crate::uplink::Uplink;
use bytes::Bytes;
use meshtv_proto::media::{ChannelDescriptor, SegmentHeader, SignedHeader};
use meshtv_proto::metrics::quantile;
use meshtv_proto::msg::{NatReport, PeerInfo, PeerReport, PieceMap, RejectReason};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{Msg, Node, NodeId, Outbox, PieceAck, Time, TimerId};
use rand::SeedableRng;
use smallvec::{smallvec, SmallVec};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const TICK: TimerId = TimerId(1);
/// Per-stripe state, inline in the peer up to four stripes (the common case): every tick
/// reads it for each missing piece, and as its own allocation it was a cache miss per
/// tick in simulations of 10^4 viewers.
type Stripes<T> = SmallVec<[T; 4]>;
/// Pieces held while their header is still on its way (pieces and headers travel on
/// different streams, so a piece may overtake its header).
const PENDING_PIECES_MAX: usize = 256;
/// After the source declined a request: how long before it is asked for that piece again.
const SOURCE_BUSY_PAUSE: Duration = Duration::from_millis(300);
/// A parent's push is given this much beyond its recent lag before the piece is pulled.
const PUSH_LAG_MARGIN: Duration = Duration::from_millis(300);
/// Never wait longer than this for a push (the source fallback still applies sooner).
const PUSH_WAIT_MAX: Duration = Duration::from_millis(4000);
/// A quiet viewer (`PeerConfig::quiet_maps_after`) asks for its partners' maps again this
/// long before a piece's push stops being waited for near its deadline, so that the maps
/// are here when it must pull. In a simulated 10,000-viewer flash crowd, asking only then
/// sent 2.6 times the bytes from the source (savings 99.84% -> 99.59%); 250 ms kept them
/// (99.82%).
const MAPS_LEAD: Duration = Duration::from_millis(250);
/// With a start delay, how long past it a start segment the next has not overtaken is
/// still waited for (see `catch_up_before_start`). In a simulated 10,000-viewer crowd on
/// tight uplinks (120 s, 4.25 s delay), 0.75, 1 and 1.5 s gave startup p95 2.97, 2.96 and
/// 2.97 s; over its first 40 s with a 4.5 s delay, 0.5 and 2 s rebuffered two to three
/// times as much as 1 s (0.95% and 1.31% against 0.48%).
const START_KEEP_LATE: Duration = Duration::from_millis(1000);
/// Most segments ahead of the playhead the peer accepts headers for.
const WINDOW_AHEAD_SEGMENTS: u64 = 32;
/// Segments a source keeps for fallback requests.
const SOURCE_KEEP_SEGMENTS: u64 = 16;
/// Headers a parent sends a new child so it can start at once.
const HEADERS_ON_SUBSCRIBE: usize = 2;
/// Pushes are handed to the transport while less than this much data is queued on the
/// uplink; the rest wait in the peer, where a child's `Skip` can still cancel them.
const PUSH_AHEAD: Duration = Duration::from_millis(150);
/// Most pushes waiting in the peer; beyond it the oldest are dropped (the children pull
/// what a parent this far behind would bring too late).
const PUSH_QUEUE_MAX: usize = 4096;
/// A playing viewer with nothing to decide before a later time (every missing piece left
/// to its parent's push for a while yet, nothing asked, nothing queued) ticks that much
/// later, up to this many ticks apart. Ticks were a third of all events in a simulated
/// 10,000-viewer crowd, and most found nothing to do: this cut its events by 18% with
/// the same startup, live delay and savings.
const QUIET_TICKS_MAX: u32 = 5;
/// Most mesh partners (the tracker's and those that chose this peer): a `Msg::Partner`
/// beyond it is ignored, so that strangers cannot grow the table (each partner is
/// announced to and its maps kept).
const MESH_PARTNERS_MAX: usize = 2 * meshtv_proto::limits::PARTNERS_MAX;
/// Most peers remembered as banned; the oldest ban gives way (a peer must be among the
/// last this many caught to stay shut out).
const BANNED_MAX: usize = 1024;

pub struct Peer {
    cfg: PeerConfig,
    rng: rand_chacha::ChaCha8Rng,
    descriptor: Option<ChannelDescriptor>,
    signer: Option<Broadcaster>,
    source: Option<PeerInfo>,
    rejected: Option<RejectReason>,
    buffer: Buffer,
    playback: Playback,
    /// The parent assigned for each stripe.
    parents: Stripes<Option<PeerInfo>>,
    /// Mesh partners, with what they announced and what we asked of them.
    partners: BTreeMap<NodeId, PartnerView>,
    /// The newest segment any partner announced, kept up as Haves arrive: every tick asks
    /// for it, and a walk over every partner's maps for it was a third of the peer's tick
    /// in 10^4-peer simulations. `None` once a partner or one of its maps went away (the
    /// newest may have gone with it): worked out again at the next use.
    partners_newest: Option<Option<u64>>,
    /// Children and the stripes (bit mask) they asked us to push.
    children: BTreeMap<NodeId, u32>,
    /// Outstanding requests: piece → (asked node, when).
    requested: BTreeMap<(u64, usize), (NodeId, Time)>,
    /// Headers asked for, so one is not asked for twice at once.
    headers_requested: BTreeMap<u64, Time>,
    pending: VecDeque<(NodeId, u64, usize, Bytes)>,
    /// Peers caught sending bad pieces; never talked to again (the last `BANNED_MAX`,
    /// oldest first in `banned_order`).
    banned: BTreeSet<NodeId>,
    banned_order: VecDeque<NodeId>,
    stats: PeerStats,
    last_heartbeat: Option<Time>,
    /// Per completed segment: ms from its creation at the source to complete here (when
    /// the gateway can list it); bounded like the playback delays.
    ready_delays_ms: Vec<u64>,
    /// NAT traversal: rendezvous through the tracker, once the driver measured our NAT.
    traversal: Traversal,
    /// The uplink as measured from what the transport drains (see `uplink`).
    uplink: Uplink,
    /// Requests outstanding at the source (bounded by `source_request_bytes_max`).
    source_outstanding: usize,
    /// Whether this peer dialed the source for its fallback (dial once, not per request).
    source_dialed: bool,
    /// Per stripe: how long after a segment's header the parent's pushes have lately
    /// arrived (rises at once, decays slowly). A piece is pulled only once its push is
    /// later than that: pulling what the parent is about to push wastes both uplinks.
    push_lag: Stripes<Duration>,
    last_announce: Option<Time>,
    /// Verified bytes received per sender since the last heartbeat (bounded by the
    /// connections: pieces come only from connected peers).
    received: BTreeMap<NodeId, u64>,
    /// Partners of the mesh (given by the tracker, or that chose us), as opposed to those
    /// that are partners only while they are a parent: a replaced parent stops being one,
    /// or every re-assignment would add a partner to announce to, for good.
    mesh: BTreeSet<NodeId>,
    /// Pushes waiting for room on the uplink, oldest first.
    push_queue: VecDeque<Queued>,
    /// Answers to pull requests waiting for the uplink: they go after every queued push
    /// (a late tree starves the whole subtree below it; a late answer only its asker).
    answer_queue: VecDeque<Queued>,
    /// Bytes of the pieces in `push_queue` and `answer_queue`.
    queued_bytes: u64,
    /// Per child and segment: pieces it said it gets elsewhere (`Msg::Skip`).
    skips: BTreeMap<(NodeId, u64), PieceMap>,
    /// No segment in `skips` is older than this: while it is at or above the window's low
    /// end, trimming `skips` would remove nothing, and the tick skips the walk over every
    /// entry (1.2% of a simulated 10,000-viewer crowd's time went to it).
    skips_floor: u64,
    /// Per parent and segment: pieces that came from elsewhere since the last tick, for
    /// the parent to skip.
    skips_to_send: BTreeMap<(NodeId, u64), PieceMap>,
    /// When the tick timer fires next.
    next_tick: Time,
    /// Set by `schedule`: the earliest time one of its decisions could change without a
    /// message coming (a push wait or a source fallback running out), if nothing is
    /// pending now. `None`: tick again after `cfg.tick`.
    quiet_until: Option<Time>,
    /// Since when the trees have fed this peer without a break (see `schedule`).
    fed_since: Option<Time>,
    /// Partners were asked to stop announcing to us (`cfg.quiet_maps_after`).
    maps_quiet: bool,
}

/// A piece waiting in the peer for room on the uplink.
#[derive(Clone, Copy, Debug)]
struct Queued {
    /// The child it is pushed to, or the partner that asked for it.
    to: NodeId,
    seq: u64,
    index: u16,
    bytes: u32,
    at: Time,
}

/// Most readiness-delay samples kept.
const READY_SAMPLES_MAX: usize = 2048;

impl Peer {
    pub fn new(cfg: PeerConfig) -> Peer {
        let (descriptor, signer) = match &cfg.role {
            PeerRole::Source { descriptor, secret } => {
                (Some(descriptor.clone()), Some(Broadcaster::from_secret(*secret)))
            }
            PeerRole::Viewer { .. } => (None, None),
        };
        Peer {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed),
            parents: smallvec![None; descriptor.as_ref().map_or(0, |d| d.stripes as usize)],
            descriptor,
            signer,
            source: None,
            rejected: None,
            buffer: Buffer::default(),
            playback: Playback::default(),
            partners: BTreeMap::new(),
            partners_newest: None,
            children: BTreeMap::new(),
            requested: BTreeMap::new(),
            uplink: Uplink::new(cfg.uplink_cap_bps),
            received: BTreeMap::new(),
            source_outstanding: 0,
            source_dialed: false,
            push_lag: Stripes::new(),
            last_announce: None,
            mesh: BTreeSet::new(),
            push_queue: VecDeque::new(),
            answer_queue: VecDeque::new(),
            queued_bytes: 0,
            skips: BTreeMap::new(),
            skips_floor: u64::MAX,
            skips_to_send: BTreeMap::new(),
            next_tick: Time::ZERO,
            quiet_until: None,
            fed_since: None,
            maps_quiet: false,
            headers_requested: BTreeMap::new(),
            pending: VecDeque::new(),
            banned: BTreeSet::new(),
            banned_order: VecDeque::new(),
            stats: PeerStats::default(),
            last_heartbeat: None,
            ready_delays_ms: Vec::new(),
            traversal: Traversal::default(),
            cfg,
        }
    }

    /// Sets this peer's NAT, as its driver measured it: from then on it connects to others
    /// through rendezvous at the tracker (see `traversal`). Call before the driver starts.
    pub fn set_nat(&mut self, report: NatReport) {
        self.traversal.set_report(report);
    }

    /// Sets the address announced to the tracker; the driver knows it only once bound.
    pub fn set_addr(&mut self, addr: std::net::SocketAddr) {
        self.cfg.addr = addr;
    }

    /// The segments held, with when their header and last piece came (for probes).
    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn is_source(&self) -> bool {
        self.signer.is_some()
    }

    /// The channel, once the tracker welcomed us (or from the start, for a source).
    pub fn descriptor(&self) -> Option<&ChannelDescriptor> {
        self.descriptor.as_ref()
    }

    /// Why the tracker turned us down, if it did.
    pub fn rejected(&self) -> Option<&RejectReason> {
        self.rejected.as_ref()
    }

    /// Asks the tracker again to let this peer in, after a `Reject` (a viewer that came
    /// before its channel was live waits for it this way).
    pub fn rejoin(&mut self, out: &mut Outbox) {
        self.rejected = None;
        self.introduce(out);
    }

    /// The NAT report, then the join (or a source's announcement). The NAT first: the
    /// tracker fills the join with parents and mesh partners this peer reaches without
    /// the relay only if it knows the NAT by then.
    fn introduce(&self, out: &mut Outbox) {
        if let Some(report) = self.traversal.report() {
            out.send(NodeId::TRACKER, Msg::NatReport { report: Box::new(report.clone()) });
        }
        match &self.cfg.role {
            PeerRole::Source { descriptor, .. } => out.send(
                NodeId::TRACKER,
                Msg::Announce {
                    descriptor: Box::new(descriptor.clone()),
                    addr: self.cfg.addr,
                    upload_bps: self.cfg.upload_bps,
                },
            ),
            PeerRole::Viewer { channel } => out.send(
                NodeId::TRACKER,
                Msg::Join { channel: channel.clone(), addr: self.cfg.addr, upload_bps: self.cfg.upload_bps },
            ),
        }
    }

    pub fn playback(&self) -> &Playback {
        &self.playback
    }

    /// Complete segments from the start of playback on, oldest first and contiguous:
    /// what the gateway may list in its playlist. `(seq, duration_ms)`.
    pub fn playable(&self) -> Vec<(u64, u32)> {
        let Some(start) = self.playback.start_seq.filter(|_| self.playback.started()) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, u32)> = Vec::new();
        for (seq, slot) in self.buffer.range_from(start) {
            if out.last().is_some_and(|&(last, _)| last + 1 != seq) || !slot.is_complete() {
                break;
            }
            if out.is_empty() && seq != start && self.buffer.get(seq - 1).is_some_and(|s| !s.is_complete()) {
                break;
            }
            out.push((seq, slot.header.header.duration_ms));
        }
        out
    }

    /// The bytes of a complete segment.
    pub fn segment(&self, seq: u64) -> Option<Bytes> {
        self.buffer.get(seq)?.assemble()
    }

    /// The header of a held segment.
    pub fn header(&self, seq: u64) -> Option<&SegmentHeader> {
        self.buffer.get(seq).map(|s| &s.header.header)
    }

    pub fn stats(&self, now: Time) -> PeerStats {
        let mut s = self.stats.clone();
        let p = &self.playback;
        s.partners = self.partners.len();
        s.children = self.children.len();
        s.buffer_s = p.buffer_ms(now, |q| self.segment_state(q)) as f64 / 1000.0;
        s.stalls = p.stalls;
        s.stalled_ms = p.stalled_ms + p.stalled_since.map_or(0, |t| now.since(t).as_millis() as u64);
        // A stall still going on counts too: a viewer stuck right now is stalled.
        s.stall_ms_max = p.stall_ms_max.max(p.stalled_since.map_or(0, |t| now.since(t).as_millis() as u64));
        s.startup_s = p.startup().map(|d| d.as_secs_f64());
        s.segments_played = p.played_segments;
        s.bytes_played = p.played_bytes;
        s.segments_on_time = p.on_time_segments;
        s.watch_ms = p.watch_ms(now);
        let mut delays: Vec<f64> = p.live_delays_ms.iter().map(|&d| d as f64 / 1000.0).collect();
        s.live_delay_p50_s = quantile(&mut delays, 0.5);
        s.live_delay_p95_s = quantile(&mut delays, 0.95);
        let mut ready: Vec<f64> = self.ready_delays_ms.iter().map(|&d| d as f64 / 1000.0).collect();
        s.ready_delay_p50_s = quantile(&mut ready, 0.5);
        s.ready_delay_p95_s = quantile(&mut ready, 0.95);
        s.maps_quiet = self.maps_quiet;
        s.newest_complete_seq = self.buffer.iter().rev().find(|(_, sl)| sl.is_complete()).map(|(q, _)| q);
        s.nat = self.traversal.report().map(NatReport::kind);
        s.nat_report = self.traversal.report().cloned();
        s.uplink_bps = self.uplink.rate_bps();
        s.uplink_inflight_bytes = self.uplink.inflight_bytes();
        s.uplink_backlog_bytes = self.uplink.queued_bytes(now);
        s.uplink_queued_bytes = self.queued_bytes;
        s
    }

    /// Source only: signs and publishes a new segment, pushing it to the children.
    pub fn publish(&mut self, now: Time, seq: u64, duration_ms: u32, data: &[u8], out: &mut Outbox) {
        let (Some(signer), Some(d)) = (&self.signer, &self.descriptor) else {
            tracing::warn!("publish called on a viewer; ignored");
            return;
        };
        let header = SegmentHeader::describe(d.id, seq, duration_ms, now.as_millis(), d.piece_bytes, data);
        let signed = Arc::new(signer.sign(header));
        if self.buffer.get(seq).is_none() && !self.buffer.insert_header(signed.clone(), now) {
            // The numbering jumped further than a buffer spans (`buffer::SPAN_MAX`): what
            // it holds is of another stretch of the stream.
            self.buffer.evict_before(u64::MAX);
            self.buffer.insert_header(signed.clone(), now);
        }
        for child in self.children.keys() {
            out.send(*child, Msg::Header(signed.clone()));
        }
        for (index, chunk) in data.chunks(d.piece_bytes as usize).enumerate() {
            let piece = Bytes::copy_from_slice(chunk);
            self.buffer.offer(seq, index, piece.clone(), now);
            self.push_to_children(now, None, seq, index, &piece, out);
        }
        self.buffer.evict_before(seq.saturating_sub(SOURCE_KEEP_SEGMENTS));
    }

    fn segment_state(&self, seq: u64) -> Option<SegmentState> {
        segment_state_in(&self.buffer, seq)
    }

    fn stripes(&self) -> u8 {
        self.descriptor.as_ref().map_or(1, |d| d.stripes)
    }

    /// The parent of the stripe piece `index` belongs to, if it has one.
    fn parent_of_piece(&self, index: usize) -> Option<NodeId> {
        let stripe = SegmentHeader::stripe_of(index, self.stripes()) as usize;
        self.parents.get(stripe)?.as_ref().map(|p| p.id)
    }

    /// Whether `child` said it gets piece `index` of `seq` elsewhere.
    fn skipped(&self, child: NodeId, seq: u64, index: usize) -> bool {
        self.skips.get(&(child, seq)).is_some_and(|m| m.get(index))
    }

    /// Learns how late `from`'s pushes come, if it is the stripe parent of this piece.
    fn note_push_lag(&mut self, now: Time, from: NodeId, seq: u64, index: usize) {
        if self.parent_of_piece(index) != Some(from) {
            return;
        }
        let stripe = SegmentHeader::stripe_of(index, self.stripes()) as usize;
        let Some(header_at) = self.buffer.get(seq).map(|s| s.header_at) else { return };
        let sample = now.since(header_at);
        if self.push_lag.len() <= stripe {
            self.push_lag.resize(stripe + 1, Duration::ZERO);
        }
        let lag = &mut self.push_lag[stripe];
        *lag = if sample >= *lag { sample } else { (*lag * 15 + sample) / 16 };
    }

    /// Brings the next tick forward to one tick from now, if it was set later: something
    /// came that the next tick must act on (a new parent, a queued upload, a skip to send,
    /// a request declined).
    fn wake(&mut self, now: Time, out: &mut Outbox) {
        let soon = now + self.cfg.tick;
        if self.next_tick > soon {
            self.next_tick = soon;
            out.set_timer(soon, TICK);
        }
    }

    /// How long after its header a piece of `stripe` is left to the parent's push.
    fn push_wait(&self, stripe: usize) -> Duration {
        let lag = self.push_lag.get(stripe).copied().unwrap_or_default();
        (lag + PUSH_LAG_MARGIN).clamp(self.cfg.push_grace, PUSH_WAIT_MAX)
    }

    /// What the next heartbeat reports received per sender (most first, bounded).
    fn take_received(&mut self) -> Vec<(NodeId, u64)> {
        let mut r: Vec<(NodeId, u64)> = std::mem::take(&mut self.received).into_iter().collect();
        r.sort_by_key(|&(id, bytes)| (std::cmp::Reverse(bytes), id));
        r.truncate(meshtv_proto::limits::REPORT_SENDERS_MAX);
        r
    }

    /// Whether a pull request may be answered now: it would leave within `serve_horizon`
    /// behind what is in flight and queued.
    fn uplink_has_room(&mut self, now: Time) -> bool {
        self.uplink.has_room(now, self.cfg.serve_horizon, self.queued_bytes)
    }

    fn send_piece(&mut self, now: Time, to: NodeId, seq: u64, index: usize, data: &Bytes, out: &mut Outbox) {
        let data = match self.cfg.fault {
            Some(Fault::CorruptUploads) => {
                let mut v = data.to_vec();
                if let Some(b) = v.first_mut() {
                    *b ^= 0xff;
                }
                Bytes::from(v)
            }
            None => data.clone(),
        };
        self.stats.bytes_uploaded += data.len() as u64;
        self.uplink.sent(now, to, seq, index as u16, data.len() as u32);
        out.send(to, Msg::Piece { seq, index: index as u16, data });
    }

    fn push_to_children(
        &mut self,
        now: Time,
        from: Option<NodeId>,
        seq: u64,
        index: usize,
        data: &Bytes,
        out: &mut Outbox,
    ) {
        let bit = 1u32 << SegmentHeader::stripe_of(index, self.stripes());
        let targets: Vec<NodeId> =
            self.children.iter().filter(|(c, m)| *m & bit != 0 && Some(**c) != from).map(|(c, _)| *c).collect();
        for child in targets {
            if self.skipped(child, seq, index) {
                self.stats.bytes_excused += data.len() as u64;
            } else {
                self.push(now, child, seq, index, data, out);
            }
        }
    }

    /// Pushes a piece to a child through the push queue.
    fn push(&mut self, now: Time, child: NodeId, seq: u64, index: usize, data: &Bytes, out: &mut Outbox) {
        if self.push_queue.len() >= PUSH_QUEUE_MAX {
            if let Some(old) = self.push_queue.pop_front() {
                self.queued_bytes -= old.bytes as u64;
                self.stats.pushes_dropped += 1;
            }
        }
        let bytes = data.len() as u32;
        self.push_queue.push_back(Queued { to: child, seq, index: index as u16, bytes, at: now });
        self.queued_bytes += bytes as u64;
        self.release_pushes(now, out);
    }

    /// Hands queued pushes to the transport while the uplink has less than `PUSH_AHEAD`
    /// queued, and brings the tick forward while anything is left to release. Drops those
    /// nobody wants any more: the child left or unsubscribed from the stripe, said it gets
    /// the piece elsewhere, or has waited longer than any child waits for a push.
    fn release_pushes(&mut self, now: Time, out: &mut Outbox) {
        while self.uplink.has_room(now, PUSH_AHEAD, 0) {
            if let Some(p) = self.push_queue.pop_front() {
                self.release_push(now, p, out);
            } else if !self.answer_queue.is_empty() {
                self.release_answer(now, out);
            } else {
                break;
            }
        }
        if !self.push_queue.is_empty() || !self.answer_queue.is_empty() {
            self.wake(now, out);
        }
    }

    /// Sends a push taken off the queue, or drops it if nobody wants it any more (or the
    /// child's connection stalled: see `uplink`).
    fn release_push(&mut self, now: Time, p: Queued, out: &mut Outbox) {
        self.queued_bytes -= p.bytes as u64;
        let index = p.index as usize;
        let bit = 1u32 << SegmentHeader::stripe_of(index, self.stripes());
        let wanted = self.children.get(&p.to).is_some_and(|m| m & bit != 0)
            && !self.skipped(p.to, p.seq, index)
            && now.since(p.at) < PUSH_WAIT_MAX
            && !self.uplink.stalled(now, p.to);
        if !wanted {
            self.stats.pushes_dropped += 1;
        } else if let Some(data) = self.buffer.piece(p.seq, index).cloned() {
            self.send_piece(now, p.to, p.seq, index, &data, out);
        }
    }

    /// Sends the oldest queued answer, or declines it if it waited so long that the asker
    /// would do better elsewhere.
    fn release_answer(&mut self, now: Time, out: &mut Outbox) {
        let Some(a) = self.answer_queue.pop_front() else { return };
        self.queued_bytes -= a.bytes as u64;
        let index = a.index as usize;
        match self.buffer.piece(a.seq, index).cloned() {
            Some(data) if now.since(a.at) < self.cfg.serve_horizon && !self.uplink.stalled(now, a.to) => {
                self.send_piece(now, a.to, a.seq, index, &data, out)
            }
            _ => out.send(a.to, Msg::NoPiece { seq: a.seq, index: a.index }),
        }
    }

    /// Answers a pull request: queued behind the pushes, or declined when the uplink has
    /// more in flight and queued than it sends within `serve_horizon`.
    fn answer(&mut self, now: Time, from: NodeId, seq: u64, index: u16, out: &mut Outbox) {
        let Some(data) = self.buffer.piece(seq, index as usize).cloned() else {
            out.send(from, Msg::NoPiece { seq, index });
            return;
        };
        if !self.uplink_has_room(now) {
            out.send(from, Msg::NoPiece { seq, index });
        } else {
            let bytes = data.len() as u32;
            self.answer_queue.push_back(Queued { to: from, seq, index, bytes, at: now });
            self.queued_bytes += bytes as u64;
            self.release_pushes(now, out);
        }
    }

    /// A piece came from someone other than its stripe's parent: the parent will be told
    /// not to push it (at the next tick, one message per parent and segment). Not sooner,
    /// when the pull was only asked: a push still racing a slow pull is often the one that
    /// arrives first.
    fn note_skip(&mut self, from: NodeId, seq: u64, index: usize) {
        let Some(parent) = self.parent_of_piece(index) else { return };
        if parent != from {
            self.queue_skip(parent, seq, index);
        }
    }

    /// Adds a piece to the next `Skip` to `to` (sent at the next tick).
    fn queue_skip(&mut self, to: NodeId, seq: u64, index: usize) {
        let pieces = slot_len_of(&self.buffer, seq);
        self.skips_to_send.entry((to, seq)).or_insert_with(|| PieceMap::with_len(pieces)).set(index);
    }

    /// A peer gets these pieces elsewhere: forget the answers and pushes still queued for
    /// it, and push none of them later (a viewer about to subscribe lists what it holds).
    fn on_skip(&mut self, from: NodeId, seq: u64, pieces: PieceMap) {
        // Only segments this peer could still send: the map stays bounded by the window.
        let low = self.window_low();
        let high = low + self.cfg.keep_behind_segments + WINDOW_AHEAD_SEGMENTS;
        if seq < low || seq > high {
            return;
        }
        let (_, answers_bytes) = drop_queued(&mut self.answer_queue, from, seq, &pieces);
        self.queued_bytes -= answers_bytes;
        // Kept from a peer that is not a child yet too: a viewer lists what it holds just
        // before it subscribes. Bounded all the same: by the window, and by the peers
        // connected (a peer's skips go with it, see `forget`).
        let (dropped, dropped_bytes) = drop_queued(&mut self.push_queue, from, seq, &pieces);
        self.stats.pushes_dropped += dropped;
        self.queued_bytes -= dropped_bytes;
        self.skips.entry((from, seq)).or_default().union_with(&pieces);
        self.skips_floor = self.skips_floor.min(seq);
    }

    /// The lowest segment still of interest: older ones are neither stored nor asked for.
    fn window_low(&self) -> u64 {
        match self.playback.wanted_from() {
            Some(s) => s.saturating_sub(self.cfg.keep_behind_segments),
            None => self.buffer.newest().map_or(0, |n| n.saturating_sub(self.cfg.keep_behind_segments)),
        }
    }

    fn in_window(&self, seq: u64) -> bool {
        if self.is_source() {
            return false;
        }
        let low = self.window_low();
        match self.playback.wanted_from() {
            Some(w) => seq >= low && seq <= w + WINDOW_AHEAD_SEGMENTS,
            None => true,
        }
    }

    fn on_header(&mut self, now: Time, from: NodeId, signed: Arc<SignedHeader>, out: &mut Outbox) {
        let Some(d) = &self.descriptor else { return };
        let seq = signed.header.seq;
        if self.buffer.get(seq).is_some() || !self.in_window(seq) || signed.header.channel != d.id {
            return;
        }
        if let Err(e) = self.cfg.verifier.header(&signed, &d.broadcaster_key) {
            tracing::warn!(peer = %from, seq, "dropping peer: bad segment header: {e}");
            self.drop_peer(from, out);
            return;
        }
        self.headers_requested.remove(&seq);
        if !self.buffer.insert_header(signed.clone(), now) {
            // Further from the segments held than any window (`buffer::SPAN_MAX`).
            tracing::debug!(peer = %from, seq, "header far outside the buffer ignored");
            return;
        }
        if self.playback.start_seq.is_none() {
            // With a start delay, one behind: the newest segment is still crossing the
            // trees, the one before it is held more widely and reaches the delay sooner.
            let back = u64::from(self.cfg.start_delay.is_some());
            self.playback.start_seq = Some(seq.saturating_sub(back));
        }
        for child in self.children.keys() {
            if *child != from {
                out.send(*child, Msg::Header(signed.clone()));
            }
        }
        // Pieces that overtook this header can be checked now.
        let waiting: Vec<_> = self.pending.iter().filter(|p| p.1 == seq).cloned().collect();
        self.pending.retain(|p| p.1 != seq);
        for (f, s, i, data) in waiting {
            self.on_piece(now, f, s, i, data, out);
        }
    }

    fn on_piece(&mut self, now: Time, from: NodeId, seq: u64, index: usize, data: Bytes, out: &mut Outbox) {
        // The node asked for it, if not the sender, still owes an answer; it is told to
        // forget it only if the piece is stored here (below).
        let mut asked_elsewhere = None;
        if let Some(&(asked, _)) = self.requested.get(&(seq, index)) {
            if asked == from {
                self.requested.remove(&(seq, index));
                self.settled(from);
            } else {
                asked_elsewhere = Some(asked);
            }
        }
        if self.is_source() || !self.in_window(seq) {
            return;
        }
        let len = data.len() as u64;
        match self.buffer.offer_checked(seq, index, data.clone(), now, self.cfg.verifier.as_ref()) {
            Offer::Stored { completed } => {
                if completed && self.ready_delays_ms.len() < READY_SAMPLES_MAX {
                    let created = self.buffer.get(seq).map_or(0, |s| s.header.header.created_ms);
                    self.ready_delays_ms.push(now.as_millis().saturating_sub(created));
                }
                if self.source.as_ref().is_some_and(|s| s.id == from) {
                    self.stats.bytes_from_source += len;
                } else {
                    self.stats.bytes_from_peers += len;
                }
                *self.received.entry(from).or_default() += len;
                self.note_push_lag(now, from, seq, index);
                self.note_skip(from, seq, index);
                if let Some(asked) = asked_elsewhere {
                    self.requested.remove(&(seq, index));
                    self.settled(asked);
                    self.queue_skip(asked, seq, index);
                }
                self.push_to_children(now, Some(from), seq, index, &data, out);
                if !self.skips_to_send.is_empty() {
                    self.wake(now, out);
                }
            }
            Offer::Duplicate => {
                self.stats.bytes_duplicate += len;
                if self.parent_of_piece(index) == Some(from) {
                    self.stats.bytes_duplicate_pushed += len;
                }
            }
            Offer::NoHeader => {
                if self.pending.len() >= PENDING_PIECES_MAX {
                    self.pending.pop_front();
                }
                self.pending.push_back((from, seq, index, data));
                self.ask_header(now, from, seq, out);
            }
            Offer::Bad => {
                tracing::warn!(peer = %from, seq, index, "dropping peer: piece failed its hash");
                self.stats.bad_pieces += 1;
                self.drop_peer(from, out);
            }
        }
    }

    fn ask_header(&mut self, now: Time, from: NodeId, seq: u64, out: &mut Outbox) {
        let recent = self.headers_requested.get(&seq).is_some_and(|t| now.since(*t) < self.cfg.request_timeout);
        if !recent {
            self.headers_requested.insert(seq, now);
            out.send(from, Msg::GetHeader { seq });
        }
    }

    /// Cuts a misbehaving peer off for good and tells the tracker.
    fn drop_peer(&mut self, peer: NodeId, out: &mut Outbox) {
        if peer == NodeId::TRACKER || self.source.as_ref().is_some_and(|s| s.id == peer) {
            // The source signs the stream; a bad piece "from the source" is a bug, not an
            // attack we can route around.
            tracing::error!(%peer, "source or tracker sent bad data");
            return;
        }
        if !self.banned.insert(peer) {
            return;
        }
        self.banned_order.push_back(peer);
        if self.banned_order.len() > BANNED_MAX {
            if let Some(old) = self.banned_order.pop_front() {
                self.banned.remove(&old);
            }
        }
        self.stats.peers_dropped += 1;
        self.forget(peer);
        self.pending.retain(|p| p.0 != peer);
        out.close(peer);
        out.send(NodeId::TRACKER, Msg::BadPeer { peer });
    }

    /// Removes every trace of a peer's role as partner, parent or child.
    fn forget(&mut self, peer: NodeId) {
        self.remove_partner(peer);
        self.mesh.remove(&peer);
        self.children.remove(&peer);
        self.skips.retain(|(c, _), _| *c != peer);
        for p in self.parents.iter_mut() {
            if p.as_ref().is_some_and(|p| p.id == peer) {
                *p = None;
            }
        }
        self.requested.retain(|_, (n, _)| *n != peer);
        if self.source.as_ref().is_some_and(|s| s.id == peer) {
            self.source_dialed = false;
            self.source_outstanding = 0;
        }
    }

    /// A request to `node` is answered, refused or given up: it no longer counts against
    /// the node's bound.
    fn settled(&mut self, node: NodeId) {
        if let Some(p) = self.partners.get_mut(&node) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
        if self.source.as_ref().is_some_and(|s| s.id == node) {
            self.source_outstanding = self.source_outstanding.saturating_sub(1);
        }
    }

    /// Recounts the requests outstanding at the source after entries were dropped in bulk.
    fn recount_source(&mut self) {
        let source = self.source.as_ref().map(|s| s.id);
        self.source_outstanding = self.requested.values().filter(|(n, _)| Some(*n) == source).count();
    }

    fn apply_assignment(&mut self, parents: Vec<Option<PeerInfo>>, partners: Vec<PeerInfo>, out: &mut Outbox) {
        let Some(d) = &self.descriptor else { return };
        let (channel, stripes) = (d.id, d.stripes as usize);
        let mut parents: Stripes<Option<PeerInfo>> = parents.into_iter().take(stripes).collect();
        parents.resize(stripes, None);
        for p in parents.iter_mut() {
            if p.as_ref().is_some_and(|p| self.banned.contains(&p.id) || p.id == self.cfg.id) {
                *p = None;
            }
        }
        let mask_of = |list: &[Option<PeerInfo>], id: NodeId| {
            list.iter()
                .enumerate()
                .filter(|(_, p)| p.as_ref().is_some_and(|p| p.id == id))
                .fold(0u32, |m, (s, _)| m | 1 << s)
        };
        let mut nodes: BTreeMap<NodeId, PeerInfo> = BTreeMap::new();
        for p in self.parents.iter().chain(parents.iter()).flatten() {
            nodes.insert(p.id, p.clone());
        }
        // Pushes start at the first segment the playhead still needs that is not complete
        // here: a new parent's catch-up would otherwise re-send what this peer holds.
        let wanted = self.playback.wanted_from().unwrap_or(0);
        let from_seq = self
            .buffer
            .range_from(wanted)
            .find(|(_, slot)| !slot.is_complete())
            .map(|(seq, _)| seq)
            .or_else(|| self.buffer.newest().map(|n| n + 1))
            .unwrap_or(wanted)
            .max(wanted);
        for (id, info) in nodes {
            let (old, new) = (mask_of(&self.parents, id), mask_of(&parents, id));
            if old != new {
                if old == 0 && !self.partners.contains_key(&id) {
                    self.traversal.connect(info, out);
                }
                if new & !old != 0 {
                    // A new parent catches its child up on the newest segments it holds
                    // (see `on_subscribe`); what is here already is listed first, so it is
                    // not sent twice. After a re-assignment nearly all of it is here: in a
                    // simulated 2,000-viewer crowd on tight uplinks, this halved the pushes
                    // of pieces the child already had once playing (1.04 -> 0.56 GB).
                    for (seq, slot) in self.buffer.range_from(from_seq) {
                        if slot.received > 0 {
                            out.send(id, Msg::Skip { seq, pieces: slot.have.clone() });
                        }
                    }
                }
                out.send(id, Msg::Subscribe { channel, stripes: new, from_seq });
            }
            if new != 0 {
                self.partners.entry(id).or_default();
            } else if old != 0 && !self.mesh.contains(&id) {
                self.remove_partner(id);
            }
        }
        self.parents = parents;
        for p in partners {
            let full = self.mesh.len() >= MESH_PARTNERS_MAX;
            if p.id == self.cfg.id || self.banned.contains(&p.id) || self.mesh.contains(&p.id) || full {
                continue;
            }
            if !self.partners.contains_key(&p.id) {
                self.traversal.connect(p.clone(), out);
            }
            out.send(p.id, Msg::Partner { channel });
            self.partners.entry(p.id).or_default();
            self.mesh.insert(p.id);
        }
    }

    fn on_subscribe(&mut self, now: Time, from: NodeId, stripes: u32, from_seq: u64, out: &mut Outbox) {
        if stripes == 0 {
            self.children.remove(&from);
            self.skips.retain(|(c, _), _| *c != from);
            return;
        }
        if !self.children.contains_key(&from) && self.children.len() >= self.cfg.children_max {
            tracing::warn!(peer = %from, "refusing child: already serving {}", self.cfg.children_max);
            return;
        }
        self.children.insert(from, stripes);
        // Catch the child up: the newest headers and the pieces of its stripes we hold.
        let newest: Vec<u64> =
            self.buffer.iter().rev().map(|(s, _)| s).filter(|&s| s >= from_seq).take(HEADERS_ON_SUBSCRIBE).collect();
        let stripe_count = self.stripes();
        for seq in newest.into_iter().rev() {
            let Some(slot) = self.buffer.get(seq) else { continue };
            out.send(from, Msg::Header(slot.header.clone()));
            let pieces: Vec<(usize, Bytes)> = slot
                .pieces
                .iter()
                .enumerate()
                .filter(|(i, p)| p.is_some() && stripes & (1 << SegmentHeader::stripe_of(*i, stripe_count)) != 0)
                .filter_map(|(i, p)| p.clone().map(|p| (i, p)))
                .collect();
            for (i, p) in pieces {
                if self.skipped(from, seq, i) {
                    continue;
                }
                self.push(now, from, seq, i, &p, out);
            }
        }
    }

    /// Before playback, a start segment that fell behind the live edge (its pieces were
    /// slow to come, or it was an old header a partner sent) is given up for a newer
    /// one: a live viewer starts near the edge, and the old one may never complete.
    /// Only within twice the start budget, though: a viewer still waiting then is in a
    /// swarm that brings it less than the stream's rate, and every jump would throw away
    /// what it gathered (in a simulated 2,000-viewer swarm with tight uplinks, 800
    /// viewers never started that way). With a start delay, the segment is given up for
    /// the next only once it would play later than the delay and is not yet half here;
    /// without one, whenever the live edge has moved on (see below).
    fn catch_up_before_start(&mut self, now: Time) {
        if self.playback.started() || now.since(self.playback.joined_at) > self.cfg.start_budget * 2 {
            return;
        }
        let (Some(start), Some(newest)) = (self.playback.start_seq, self.buffer.newest()) else { return };
        let half_here = self.buffer.get(start).is_some_and(|s| s.received * 2 >= s.pieces.len());
        if let Some(delay) = self.cfg.start_delay {
            // Giving it up whenever a newer header came (the rule below) made viewers that
            // joined just after a segment's creation give up one about to complete for
            // one whose delay ran out 2 s later (in a simulated 2,000-viewer crowd they
            // started 3.4 s after joining; the segment given up was complete 1.7-2.6 s
            // after joining).
            let late_by = |extra: Duration| {
                self.created_ms_of(start).is_some_and(|c| now.as_millis() > c + (delay + extra).as_millis() as u64)
            };
            // A late segment still on its way is kept while the next is no further along:
            // giving it up at its delay made viewers wait 2 s for the next one's, though
            // the one given up was complete half a second later (simulated 10,000-viewer
            // crowd on tight uplinks: startup p95 3.24 -> 3.02 s at a 4.5 s delay).
            let overtaken = || {
                let progress = |seq: u64| self.buffer.get(seq).map_or((0, 1), |s| (s.received, s.pieces.len().max(1)));
                let ((got, of), (next_got, next_of)) = (progress(start), progress(start + 1));
                next_got * of >= got * next_of
            };
            if late_by(Duration::ZERO) && !half_here && newest > start && (overtaken() || late_by(START_KEEP_LATE)) {
                self.playback.start_seq = Some(start + 1);
            }
            return;
        }
        let k = self.cfg.start_segments.max(1) as u64;
        // Allow one segment in flight beyond the ones needed to start; two when the start
        // segment is at least half here. In a young, busy swarm (simulated: 10,000
        // viewers joining in 30 s on uplinks of 1.5x the bitrate) segments take seconds
        // to cross the trees, and a viewer that gave up a half-complete segment for the
        // newest ones waited that long again (startup p95 8.9 s; keeping it, 5.4 s, for
        // live delay p95 7.4 -> 7.6 s).
        let keep = half_here && newest <= start + k + 1;
        if newest > start + k && !keep {
            self.playback.start_seq = Some(newest + 1 - k);
        }
    }

    /// When segment `seq` was created at the source, in ms; without its header, taken from
    /// the next one's. A viewer starting one behind the first header it heard of may never
    /// get the header of its start, and would otherwise wait for it forever (in a
    /// simulated 10,000-viewer crowd, 42 viewers behind symmetric NATs never started).
    fn created_ms_of(&self, seq: u64) -> Option<u64> {
        match self.buffer.get(seq) {
            Some(slot) => Some(slot.header.header.created_ms),
            None => self
                .buffer
                .get(seq + 1)
                .map(|next| next.header.header.created_ms.saturating_sub(next.header.header.duration_ms as u64)),
        }
    }

    fn tick(&mut self, now: Time, out: &mut Outbox) {
        self.uplink.expire(now);
        if self.descriptor.is_some() && !self.is_source() {
            self.catch_up_before_start(now);
            // Looked up in the buffer directly: a copy of every slot's state per tick was
            // the peer's main cost in 10^4-peer simulations.
            let buffer = &self.buffer;
            self.playback.advance(now, |s| segment_state_in(buffer, s));
            let fed = self.schedule(now, out);
            self.update_interest(now, fed, out);
            if self.last_announce.is_none_or(|t| now.since(t) >= self.cfg.have_interval) {
                self.announce(out);
                self.last_announce = Some(now);
            }
            let low = self.window_low();
            self.buffer.evict_before(low);
            // Most ticks have nothing below the window: skip the scans then.
            // `is_empty` first: an emptied map's first entry is a cache miss away.
            if !self.requested.is_empty() && self.requested.first_key_value().is_some_and(|((s, _), _)| *s < low) {
                self.requested.retain(|(s, _), _| *s >= low);
                self.recount_source();
            }
            if !self.headers_requested.is_empty()
                && self.headers_requested.first_key_value().is_some_and(|(s, _)| *s < low)
            {
                self.headers_requested.retain(|s, _| *s >= low);
            }
            if !self.pending.is_empty() {
                self.pending.retain(|p| p.1 >= low);
            }
            if self.skips_floor < low {
                self.skips.retain(|(_, s), _| *s >= low);
                self.skips_floor = low;
            }
            for ((to, seq), pieces) in std::mem::take(&mut self.skips_to_send) {
                out.send(to, Msg::Skip { seq, pieces });
            }
        }
        self.release_pushes(now, out);
        if self.last_heartbeat.is_none_or(|t| now.since(t) >= self.cfg.heartbeat) {
            self.last_heartbeat = Some(now);
            // The fields `stats` would give, without its sorting of every delay sample.
            let buffer_s = self.playback.buffer_ms(now, |q| self.segment_state(q)) as f64 / 1000.0;
            let report = PeerReport {
                bytes_from_peers: self.stats.bytes_from_peers,
                bytes_from_source: self.stats.bytes_from_source,
                bytes_uploaded: self.stats.bytes_uploaded,
                bytes_excused: self.stats.bytes_excused,
                stalls: self.playback.stalls,
                buffer_ms: (buffer_s * 1000.0) as u64,
                received: self.take_received(),
            };
            out.send(NodeId::TRACKER, Msg::Heartbeat { report: Box::new(report) });
        }
        self.next_tick = self.next_tick_after(now);
        out.set_timer(self.next_tick, TICK);
    }

    /// One tick from now while anything is pending; else the first of: a scheduling
    /// decision coming due, the next announcement or heartbeat, `QUIET_TICKS_MAX` ticks.
    fn next_tick_after(&self, now: Time) -> Time {
        let soon = now + self.cfg.tick;
        let pending = !self.push_queue.is_empty() || !self.answer_queue.is_empty() || !self.requested.is_empty();
        let Some(quiet) = self.quiet_until.filter(|_| !pending) else { return soon };
        let mut at = quiet;
        if let Some(t) = self.last_announce {
            at = at.min(t + self.cfg.have_interval);
        }
        if let Some(t) = self.last_heartbeat {
            at = at.min(t + self.cfg.heartbeat);
        }
        at.clamp(soon, now + self.cfg.tick * QUIET_TICKS_MAX)
    }

    /// Asks again for the headers of segments the playhead needs but never got: a parent
    /// that died mid-stream leaves a gap that no push will fill, and partners announce a
    /// segment only once. Asks a partner that announced it, else the source.
    fn fetch_missing_headers(&mut self, now: Time, out: &mut Outbox) {
        let Some(from) = self.playback.wanted_from() else { return };
        let announced = self.partners_newest();
        let Some(newest) = self.buffer.newest().max(announced) else { return };
        for seq in from..=newest.min(from + WINDOW_AHEAD_SEGMENTS) {
            if self.buffer.get(seq).is_some() {
                continue;
            }
            let holder = self.partners.iter().find(|(_, p)| p.have.contains(seq)).map(|(id, _)| *id);
            if let Some(to) = holder.or(self.source.as_ref().map(|s| s.id)) {
                self.ask_header(now, to, seq, out);
            }
        }
    }

    /// Removes a partner; what was worked out from its maps is to be worked out again.
    fn remove_partner(&mut self, id: NodeId) {
        self.partners.remove(&id);
        self.partners_newest = None;
        for (_, slot) in self.buffer.iter_mut() {
            slot.held = None;
        }
    }

    /// Forgets what partner `id` announced of segment `seq`.
    fn drop_partner_map(&mut self, id: NodeId, seq: u64) {
        if let Some(p) = self.partners.get_mut(&id) {
            p.have.remove(seq);
            self.partner_map_gone(seq);
        }
    }

    /// A partner's map of segment `seq` went: what was worked out from it is stale.
    fn partner_map_gone(&mut self, seq: u64) {
        self.partners_newest = None;
        if let Some(slot) = self.buffer.get_mut(seq) {
            slot.held = None;
        }
    }

    /// The newest segment any partner announced.
    fn partners_newest(&mut self) -> Option<u64> {
        let partners = &self.partners;
        let walk = || partners.values().filter_map(|p| p.have.newest()).max();
        let newest = *self.partners_newest.get_or_insert_with(walk);
        debug_assert_eq!(newest, walk(), "partners_newest missed a change of the partners' maps");
        newest
    }

    /// Sends pull requests for missing pieces, most urgent segments first. Returns whether
    /// the trees feed this peer: playing, nothing asked for, headers still coming, and
    /// every missing piece within its parent's push wait and more than `MAPS_LEAD` before
    /// `decide` stops waiting for that push.
    fn schedule(&mut self, now: Time, out: &mut Outbox) -> bool {
        self.quiet_until = None;
        self.fetch_missing_headers(now, out);
        let Some(from) = self.playback.wanted_from() else { return false };
        // Quiet only once playing, with no header or piece asked for: then nothing changes
        // before a push wait or a fallback runs out, unless a message comes.
        let mut quiet = (self.playback.started() && self.requested.is_empty() && self.headers_requested.is_empty())
            .then_some(now + PUSH_WAIT_MAX);
        let (mut near_deadline, mut push_late) = (false, false);
        let Some(d) = &self.descriptor else { return false };
        let (stripes, target_ms) = (d.stripes, d.segment_duration_ms_target);
        let per_piece = |bytes: u64| (bytes / d.piece_bytes.max(1) as u64).max(1) as usize;
        let source_requests_max = per_piece(self.cfg.source_request_bytes_max);
        let policy = Policy {
            source_fallback: self.cfg.source_fallback,
            requests_per_partner_max: per_piece(self.cfg.partner_request_bytes_max),
        };
        let source = self.source.as_ref().map(|s| s.id);
        let mut wanted: Vec<Missing> = Vec::new();
        let started = self.playback.started();
        let incomplete: Vec<u64> =
            self.buffer.range_from(from).filter(|(_, slot)| !slot.is_complete()).map(|(s, _)| s).collect();
        let dues = self
            .playback
            .due_each(&incomplete, now, target_ms, |s| segment_state_in(&self.buffer, s).filter(|_| s >= from));
        for &seq in &incomplete {
            if let Some(slot) = self.buffer.get_mut(seq) {
                held_by_partners(&self.partners, seq, slot);
            }
        }
        for (&seq, due) in incomplete.iter().zip(dues) {
            let Some(slot) = self.buffer.get(seq) else { continue };
            if let Some(q) = quiet.as_mut() {
                if source.is_some() {
                    *q = (*q).min(due - policy.source_fallback);
                    // `decide` stops waiting for a push at half the fallback: listen before.
                    near_deadline |= due.since(now) < policy.source_fallback / 2 + MAPS_LEAD;
                }
                for index in slot.have.missing(slot.pieces.len()) {
                    let stripe = SegmentHeader::stripe_of(index, stripes) as usize;
                    // With no parent, a piece is pulled as soon as a partner has it.
                    let parent = self.parents.get(stripe).is_some_and(|p| p.is_some());
                    let pull_from = if parent { slot.header_at + self.push_wait(stripe) } else { now };
                    push_late |= pull_from <= now;
                    *q = (*q).min(pull_from);
                }
            }
            // A segment with no request out, not yet due for the source fallback, and none
            // of whose missing pieces a partner announced, has nothing to ask for (the loop
            // below would pass over each of its pieces): skip it whole. A stalled viewer
            // has dozens of those in its window on every tick.
            let may_fall_back = source.is_some() && due.since(now) < policy.source_fallback;
            if !may_fall_back
                && self.requested.range((seq, 0)..=(seq, usize::MAX)).next().is_none()
                && !slot.held.as_ref().is_some_and(|held| slot.have.lacks_any_of(held, slot.pieces.len()))
            {
                continue;
            }
            for index in slot.have.missing(slot.pieces.len()) {
                let stripe = SegmentHeader::stripe_of(index, stripes) as usize;
                wanted.push(Missing {
                    seq,
                    index,
                    time_left: due.since(now),
                    header_age: now.since(slot.header_at),
                    // Before playback a start piece is pulled at once from whoever has it:
                    // the parent's catch-up push races the pull, and the loser is skipped.
                    push_wait: (started && self.parents.get(stripe).is_some_and(|p| p.is_some()))
                        .then(|| self.push_wait(stripe)),
                });
            }
        }
        self.quiet_until = quiet;
        // A tree that broke above us sends no headers either: with its partners quiet, a
        // viewer would never hear that newer segments exist. Fed, then, only while headers
        // keep coming (the newest no older than one and a half segments).
        let header_due = Duration::from_millis(u64::from(target_ms) * 3 / 2);
        let headers_coming = self.buffer.newest_slot().is_some_and(|slot| now.since(slot.header_at) < header_due);
        let fed = self.stats.decisions.count(quiet.is_none(), near_deadline, push_late, !headers_coming);
        // Which pieces of a segment any partner announced, computed once per segment: most
        // missing pieces are held by nobody yet, and for those `decide` would only scan
        // every partner to wait (drawing nothing from the RNG), so it is not asked.
        let mut held: Option<(u64, PieceMap)> = None;
        if !started {
            // A newcomer's parents push its start pieces front to back; asked back to
            // front, pulls and the source's answers meet those pushes instead of racing
            // them for the same pieces (simulated 10,000-viewer crowd on tight uplinks,
            // its first 40 s, with an earlier form of the start delay: startup p95
            // 3.80 -> 3.52 s).
            wanted.reverse();
        }
        for m in wanted {
            if let Some((node, at)) = self.requested.get(&(m.seq, m.index)).copied() {
                if now.since(at) < self.cfg.request_timeout {
                    continue;
                }
                self.requested.remove(&(m.seq, m.index));
                self.settled(node);
                // It did not deliver: do not count on its map for this segment.
                self.drop_partner_map(node, m.seq);
            }
            if held.as_ref().is_none_or(|(s, _)| *s != m.seq) {
                let union = match self.buffer.get_mut(m.seq) {
                    Some(slot) => held_by_partners(&self.partners, m.seq, slot).clone(),
                    None => PieceMap::default(),
                };
                held = Some((m.seq, union));
            }
            let someone_has = held.as_ref().is_some_and(|(_, u)| u.get(m.index));
            // Partners' maps are stale while they are asked not to announce: the source
            // waits for a tick with their answers (see `update_interest`).
            let source_free = self.source_outstanding < source_requests_max && !self.maps_quiet;
            let may_fall_back = source_free && source.is_some() && m.time_left < policy.source_fallback;
            if !someone_has && !may_fall_back {
                continue;
            }
            let source_now = source.filter(|_| source_free);
            if let Decision::Ask { node, urgent } =
                scheduler::decide(&m, &self.partners, source_now, &policy, &mut self.rng)
            {
                self.requested.insert((m.seq, m.index), (node, now));
                if let Some(p) = self.partners.get_mut(&node) {
                    p.outstanding += 1;
                }
                self.stats.requests_sent += 1;
                if Some(node) == source {
                    self.stats.requests_to_source += 1;
                    self.source_outstanding += 1;
                    // Parents are partners too, so this covers a source that feeds us.
                    if !self.partners.contains_key(&node) && !self.source_dialed {
                        if let Some(s) = self.source.clone() {
                            self.traversal.connect(s, out);
                            self.source_dialed = true;
                        }
                    }
                }
                out.send(node, Msg::Request { seq: m.seq, index: m.index as u16, urgent });
            }
        }
        fed
    }

    /// Asks partners to stop announcing to us once the trees have fed us for
    /// `cfg.quiet_maps_after`, and for their maps again the moment we are not fed (a piece
    /// overdue, a request out, a header missing). A fed viewer never pulls, so the maps it
    /// would be sent are read by nobody.
    fn update_interest(&mut self, now: Time, fed: bool, out: &mut Outbox) {
        let Some(after) = self.cfg.quiet_maps_after else { return };
        self.fed_since = if fed { Some(self.fed_since.unwrap_or(now)) } else { None };
        let quiet = self.fed_since.is_some_and(|since| now.since(since) >= after);
        if quiet == self.maps_quiet {
            return;
        }
        self.maps_quiet = quiet;
        let from_seq = (!quiet).then(|| self.playback.wanted_from().unwrap_or_else(|| self.window_low()));
        for (id, p) in self.partners.iter_mut() {
            if p.asked_quiet != quiet {
                p.asked_quiet = quiet;
                out.send(*id, Msg::Interest { from_seq });
            }
        }
    }

    /// Sends `to` our map of every segment from `from_seq` on (within the window), for a
    /// partner that has none or only stale ones.
    fn send_maps(&self, to: NodeId, from_seq: u64, out: &mut Outbox) {
        for (seq, slot) in self.buffer.range_from(from_seq.max(self.window_low())) {
            out.send(to, Msg::Have { seq, pieces: slot.have.clone() });
        }
    }

    /// Whether `id` counts us as its partner: a mesh partner or a child (to whom we are a
    /// parent). Only those read our maps.
    fn listens(&self, id: &NodeId) -> bool {
        self.mesh.contains(id) || self.children.contains_key(id)
    }

    /// Tells partners which pieces arrived since the last announcement. Only those that
    /// count us as their partner listen: mesh partners and children (to whom we are a
    /// parent). A parent that is nothing more drops our maps, so it is not sent them: in a
    /// simulated 2,000-viewer flash crowd those were a fifth of all events. Nor is a
    /// partner that told us it holds the whole segment: it will never ask us for any of
    /// it (flash-crowd-10k: a tenth fewer events, the same figures). Nor one that said its
    /// trees feed it (`Msg::Interest`).
    fn announce(&mut self, out: &mut Outbox) {
        let low = self.window_low();
        let listeners: Vec<NodeId> =
            self.partners.iter().filter(|(id, p)| !p.maps_off && self.listens(id)).map(|(id, _)| *id).collect();
        for (seq, slot) in self.buffer.iter_mut() {
            if seq < low || slot.received == slot.announced {
                continue;
            }
            slot.announced = slot.received;
            let pieces = slot.pieces.len();
            for p in &listeners {
                let has_all = self.partners.get(p).and_then(|v| v.have.get(seq)).is_some_and(|m| m.is_full(pieces));
                if !has_all {
                    out.send(*p, Msg::Have { seq, pieces: slot.have.clone() });
                }
            }
        }
    }
}

/// Takes out of `queue` the pieces `pieces` of segment `seq` waiting to go to `to`;
/// returns how many there were and their bytes.
fn drop_queued(queue: &mut VecDeque<Queued>, to: NodeId, seq: u64, pieces: &PieceMap) -> (u64, u64) {
    let (mut count, mut bytes) = (0u64, 0u64);
    queue.retain(|q| {
        let drop = q.to == to && q.seq == seq && pieces.get(q.index as usize);
        if drop {
            count += 1;
            bytes += q.bytes as u64;
        }
        !drop
    });
    (count, bytes)
}

/// The pieces of segment `seq` some partner announced: the slot's union, worked out from
/// the partners' maps if it went stale.
fn held_by_partners<'a>(partners: &BTreeMap<NodeId, PartnerView>, seq: u64, slot: &'a mut Slot) -> &'a PieceMap {
    let walk = || {
        let mut union = PieceMap::default();
        for map in partners.values().filter_map(|p| p.have.get(seq)) {
            union.union_with(map);
        }
        union
    };
    let held = slot.held.get_or_insert_with(walk);
    debug_assert_eq!(*held, walk(), "the union of segment {seq}'s maps missed a change");
    held
}

/// How many pieces segment `seq` has (0 if its header is not here).
fn slot_len_of(buffer: &Buffer, seq: u64) -> usize {
    buffer.get(seq).map_or(0, |s| s.pieces.len())
}

/// What the playhead needs to know of segment `seq`, if the buffer holds it.
fn segment_state_in(buffer: &Buffer, seq: u64) -> Option<SegmentState> {
    buffer.get(seq).map(|slot| SegmentState {
        duration_ms: slot.header.header.duration_ms,
        size_bytes: slot.header.header.size_bytes,
        created_ms: slot.header.header.created_ms,
        complete_at: slot.complete_at,
    })
}

impl Node for Peer {
    fn on_start(&mut self, now: Time, out: &mut Outbox) {
        self.playback = Playback::new(now, self.cfg.start_segments)
            .with_start_delay(self.cfg.start_delay)
            .with_catch_up(self.cfg.catch_up);
        self.playback.start_budget = self.cfg.start_budget;
        self.introduce(out);
        self.tick(now, out);
    }

    fn on_message(&mut self, now: Time, from: NodeId, msg: Msg, out: &mut Outbox) {
        if self.banned.contains(&from) {
            return;
        }
        let from_tracker = from == NodeId::TRACKER;
        match msg {
            Msg::Introduce { peer, plan, reply } if from_tracker => {
                if self.banned.contains(&peer) {
                    out.close(peer);
                } else {
                    self.traversal.on_introduce(peer, &plan, reply, out);
                }
            }
            Msg::Welcome { descriptor, source, .. } if from_tracker && !self.is_source() => {
                self.parents = smallvec![None; descriptor.stripes as usize];
                self.descriptor = Some(*descriptor);
                self.source = Some(source);
            }
            Msg::Registered { .. } if from_tracker => {}
            Msg::Reject { reason } if from_tracker => {
                tracing::warn!(?reason, "tracker rejected us");
                self.rejected = Some(reason);
            }
            Msg::Assign { parents, partners } if from_tracker => {
                self.apply_assignment(parents, partners, out);
                self.wake(now, out);
            }
            Msg::Subscribe { channel, stripes, from_seq } => {
                if self.descriptor.as_ref().is_some_and(|d| d.id == channel) {
                    self.on_subscribe(now, from, stripes, from_seq, out);
                }
            }
            Msg::Partner { channel } => {
                let ours = self.descriptor.as_ref().is_some_and(|d| d.id == channel);
                if ours && !self.mesh.contains(&from) && self.mesh.len() < MESH_PARTNERS_MAX {
                    self.mesh.insert(from);
                    self.partners.entry(from).or_default();
                    self.send_maps(from, 0, out);
                }
            }
            Msg::Header(h) => self.on_header(now, from, h, out),
            Msg::GetHeader { seq } => {
                if let Some(slot) = self.buffer.get(seq) {
                    out.send(from, Msg::Header(slot.header.clone()));
                }
            }
            Msg::Have { seq, pieces } => {
                if let Some(p) = self.partners.get_mut(&from) {
                    if let Some(slot) = self.buffer.get_mut(seq) {
                        // A map that only grew joins the union; one that shrank spoils it.
                        let grew = p.have.get(seq).is_none_or(|old| pieces.covers(old));
                        match (&mut slot.held, grew) {
                            (Some(held), true) => held.union_with(&pieces),
                            (held, _) => *held = None,
                        }
                    }
                    if self.maps_quiet && !p.asked_quiet {
                        // A partner that came while the trees fed us.
                        p.asked_quiet = true;
                        out.send(from, Msg::Interest { from_seq: None });
                    }
                    if let Some(forgotten) = p.record_have(seq, pieces) {
                        self.partner_map_gone(forgotten);
                    }
                    if let Some(newest) = self.partners_newest.as_mut() {
                        *newest = (*newest).max(Some(seq));
                    }
                    // A viewer without any parent has nobody to push it a first header, so
                    // it asks its partners for the headers they announce.
                    let parentless = self.parents.iter().all(Option::is_none);
                    if self.buffer.get(seq).is_none()
                        && self.in_window(seq)
                        && (self.playback.wanted_from().is_some() || parentless)
                    {
                        self.ask_header(now, from, seq, out);
                    }
                }
            }
            Msg::Interest { from_seq } => {
                let Some(p) = self.partners.get_mut(&from) else { return };
                p.maps_off = from_seq.is_none();
                if let Some(seq) = from_seq.filter(|_| self.listens(&from)) {
                    self.send_maps(from, seq, out);
                }
            }
            Msg::Request { seq, index, .. } => self.answer(now, from, seq, index, out),
            Msg::Piece { seq, index, data } => self.on_piece(now, from, seq, index as usize, data, out),
            Msg::Skip { seq, pieces } => self.on_skip(from, seq, pieces),
            Msg::NoPiece { seq, index } => {
                if self.requested.get(&(seq, index as usize)).is_some_and(|(n, _)| *n == from) {
                    if self.source.as_ref().is_some_and(|s| s.id == from) {
                        // The source is busy: the request stays counted for a pause, so that
                        // thousands of viewers do not ask it again on their next tick.
                        let pause = SOURCE_BUSY_PAUSE.min(self.cfg.request_timeout);
                        self.requested.insert((seq, index as usize), (from, now - (self.cfg.request_timeout - pause)));
                        return;
                    }
                    self.requested.remove(&(seq, index as usize));
                    self.settled(from);
                    self.drop_partner_map(from, seq);
                    self.wake(now, out);
                }
            }
            other => tracing::debug!(peer = %from, ?other, "unexpected message ignored"),
        }
    }

    fn on_timer(&mut self, now: Time, timer: TimerId, out: &mut Outbox) {
        if timer == TICK {
            self.tick(now, out);
        }
    }

    fn on_disconnect(&mut self, now: Time, peer: NodeId, out: &mut Outbox) {
        if peer == NodeId::TRACKER {
            tracing::warn!("lost the tracker; streaming goes on with the partners we have");
            return;
        }
        self.forget(peer);
        self.uplink.forget(peer);
        self.release_pushes(now, out);
    }

    fn on_piece_acked(&mut self, now: Time, ack: PieceAck, out: &mut Outbox) {
        self.uplink.acked(now, ack);
        self.release_pushes(now, out);
    }
}
