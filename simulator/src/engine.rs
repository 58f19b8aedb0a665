//! The discrete-event engine: virtual time jumps from one event to the next (a radix heap
//! keyed by time, then by insertion order, so ties break the same way on every run; see
//! `queue`).
//! Nodes are the production cores behind [`meshtv_proto::Node`]; the engine carries out
//! their [`Outbox`]es: connections come up (or not) as the NAT model says, control
//! messages arrive after the path's latency, pieces after the flow model has carried their
//! bytes, timers fire, viewers arrive and leave, partitions cut and heal.
//!
//! Pieces travel as the real transport sends them: each connection is one QUIC congestion
//! controller, so a connection with pieces queued is one flow of the bandwidth model, and
//! its pieces go one after the other, earlier segments first (the transport's stream
//! priority), with at most [`LINK_QUEUE_PIECES_MAX`] waiting (its write queue bound).
//! Modelling each piece as its own flow would share a sender's upload among all its
//! queued pieces at once, which no QUIC stack does, and which makes every piece late as
//! soon as a sender is oversubscribed.

use crate::flows::{FlowId, Flows, ResId, Rescheduled};
use crate::latency::Place;
use crate::metrics::Collector;
use crate::policy::Policy;
use crate::population::{self, Viewer};
use crate::queue::RadixQueue;
use crate::scenario::Scenario;
use crate::verify::Remembering;
use bytes::Bytes;
use meshtv_peer::{Peer, PeerConfig, PeerRole};
use meshtv_proto::media::{ChannelDescriptor, Container};
use meshtv_proto::msg::{NatReport, PeerInfo};
use meshtv_proto::nat::{self, Path, Reachability};
use meshtv_proto::sign::Broadcaster;
use meshtv_proto::{ChannelId, Msg, Node, NodeId, Outbox, PieceAck, Time, TimerId};
use meshtv_tracker::Tracker;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The source's node id (the tracker's is [`NodeId::TRACKER`]); viewers follow.
pub const SOURCE: NodeId = NodeId(1);
/// Pieces waiting on one connection beyond the one being sent; more are dropped, as the
/// transport's bounded write queue drops them.
pub const LINK_QUEUE_PIECES_MAX: usize = 1024;
/// Bytes a piece costs on the wire beyond its data (frame and stream headers).
const PIECE_OVERHEAD_BYTES: u64 = 32;
/// A message is lost and resent at most this many times in a row (QUIC gives up later,
/// but the odds of more at a loss rate below 0.5 are negligible).
const RETRANSMITS_MAX: u32 = 8;
/// The channel every scenario streams.
const CHANNEL: &str = "sim";
/// Capacity of the tracker's and source's download (they receive control traffic only).
const SERVER_DOWNLOAD_BPS: f64 = 10e9;

/// A production core, as the engine holds it. The peer sits inline in its slot (itself
/// boxed): its fields are then a fixed offset from the slot's, not one more pointer to
/// follow, a dependent cache miss on every event at 10^5 viewers.
#[allow(clippy::large_enum_variant)]
pub enum Core {
    Tracker(Box<Tracker>),
    Peer(Peer),
}

impl Core {
    fn node(&mut self) -> &mut dyn Node {
        match self {
            Core::Tracker(t) => t.as_mut(),
            Core::Peer(p) => p,
        }
    }

    pub fn as_peer(&self) -> Option<&Peer> {
        match self {
            Core::Peer(p) => Some(p),
            Core::Tracker(_) => None,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum LinkState {
    /// Handshake done at `up_at` (messages sent earlier wait for it).
    Up,
    /// A dial that cannot succeed; the dialer hears `on_disconnect` at its timeout.
    Failing,
}

/// One node's end of a connection.
#[derive(Copy, Clone, Debug)]
struct Link {
    state: LinkState,
    up_at: Time,
    relayed: bool,
    /// When the last control message sent on it arrives: the control stream is ordered.
    control_at: Time,
    /// One-way latency from this end, through the relay if relayed: fixed for the
    /// connection's life, so worked out once rather than for every message.
    latency_us: u64,
    /// The other end's download, which its pieces cross: kept here so that a send need
    /// not load the receiver's slot (a cache miss per message at 10^5 viewers).
    peer_down: ResId,
}

struct Slot {
    core: Core,
    up: ResId,
    down: ResId,
    reach: Reachability,
    place: Place,
    cut_sides: u32,
    /// This node's connections. Looked up on every delivery, so hashed (the source and
    /// tracker hold one per viewer); where a walk over them reaches the event queue it
    /// goes in id order (`linked_ids`), so the hasher's order cannot reach the results.
    links: FxHashMap<NodeId, Link>,
    /// Current generation of each armed timer; a re-armed timer's older firing is stale.
    /// Inline: every timer event reads it (the cores arm one or two timers each), and a
    /// separate allocation was one more cache miss per tick.
    timers: SmallVec<[(TimerId, u32); 2]>,
    /// Index into the population, for viewers.
    viewer: Option<u32>,
    joined_at: Time,
}

impl Slot {
    /// The ids this node has a connection to, in id order: the one order for any walk
    /// over the links whose effects are queued as events.
    fn linked_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.links.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

enum Ev {
    Deliver {
        from: NodeId,
        to: NodeId,
        /// The receiver's `Engine::closures` count when this was sent.
        closures: u32,
        msg: Msg,
    },
    Timer {
        node: NodeId,
        timer: TimerId,
        generation: u32,
    },
    /// Tell `node` that its connection to `peer` is gone.
    Disconnect {
        node: NodeId,
        peer: NodeId,
    },
    /// Tell `node` how its piece to `peer` fared (see `Node::on_piece_acked`).
    Acked {
        node: NodeId,
        peer: NodeId,
        seq: u64,
        index: u16,
        delivered: bool,
        /// The connection's one-way latency.
        rtt_half_us: u64,
    },
    Arrive {
        viewer: u32,
    },
    Depart {
        node: NodeId,
    },
    Publish {
        seq: u64,
    },
    Cut {
        partition: u32,
    },
    Heal {
        partition: u32,
    },
    Sample,
}

/// A piece being carried by the flow model: its `Msg::Piece`, taken apart (a `Msg` is
/// several times larger, and a congested origin holds millions of these).
struct InFlight {
    from: NodeId,
    to: NodeId,
    seq: u64,
    index: u16,
    data: Bytes,
    latency_us: u64,
    /// Not delivered before this (the connection's handshake, a retransmission).
    not_before: Time,
    /// The receiver's `Engine::closures` count when it was sent.
    closures: u32,
}

impl InFlight {
    fn wire_bytes(&self) -> u64 {
        self.data.len() as u64 + PIECE_OVERHEAD_BYTES
    }
}

/// A piece waiting on a connection, in send order: earlier segment first, then FIFO.
struct Queued {
    order: u64,
    piece: InFlight,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.piece.seq, self.order) == (o.piece.seq, o.order)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.piece.seq, self.order).cmp(&(o.piece.seq, o.order))
    }
}

/// The pieces of one directed connection: the one in the flow model and those waiting.
#[derive(Default)]
struct LinkQueue {
    flow: Option<FlowId>,
    waiting: BinaryHeap<Reverse<Queued>>,
}

/// What the engine counted, for the report and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub events: u64,
    pub media_bytes: u64,
    pub control_bytes: u64,
    /// Media bytes the source uploaded (pushes and fallback answers alike).
    pub source_media_bytes: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    /// Viewer-to-viewer connection attempts, by outcome.
    pub dials_direct: u64,
    pub dials_relayed: u64,
    pub dials_failed: u64,
    /// Dials to nodes that had already left (churn, not NAT).
    pub dials_to_departed: u64,
    /// Messages that reached a partition's edge while it was cut, and were lost there.
    pub lost_to_cut: u64,
    /// Messages delivered between nodes on different sides of any partition while it
    /// was healed (shows traffic resumed).
    pub delivered_across_healed: u64,
    pub arrivals: u64,
    pub departures: u64,
    pub disconnects: u64,
    pub flows_started: u64,
}

/// Called now and then with how far the run is, for a progress bar.
#[derive(Copy, Clone, Debug)]
pub struct Progress {
    pub sim_s: f64,
    pub duration_s: f64,
    pub events: u64,
}

pub struct Engine {
    pub scenario: Scenario,
    pub policy: Policy,
    now: Time,
    end: Time,
    /// Pending events by (time, insertion counter), held in the queue itself: the queue
    /// moves them in runs, where a slab beside it was a cache miss per event (a tenth of
    /// the engine's own time in 10^4-peer runs).
    queue: RadixQueue<Ev>,
    /// Flow completions, one per group of the flow model (the flows bottlenecked at one
    /// resource share a clock, so only the first of them to finish is scheduled). Kept
    /// apart from the heap because a group's next completion moves every time its level
    /// changes: an ordered set lets the old entry go, where a heap would pile up stale
    /// ones. Keyed like the heap (time, then the same insertion counter).
    completions: BTreeSet<(Time, u64, ResId)>,
    group_due: Vec<Option<(Time, u64)>>,
    seq: u64,
    nodes: Vec<Option<Box<Slot>>>,
    /// Links each node has had removed so far, by node id. A message carries its
    /// receiver's count from when it was sent: while it is unchanged no connection of the
    /// receiver has closed, so the one it came on is still up and delivery need not look
    /// it up (a cache miss per message in 10^4-peer runs). Apart from the slots, in one
    /// array that stays in cache, because every send reads the receiver's.
    closures: Vec<u32>,
    flows: Flows,
    in_flight: Vec<Option<InFlight>>,
    /// Piece queues by (sender, receiver). Only ever looked up, never iterated, so the
    /// hasher's order cannot reach the results.
    link_queues: FxHashMap<(NodeId, NodeId), LinkQueue>,
    queue_order: u64,
    relay: Option<ResId>,
    rng: ChaCha8Rng,
    population: Vec<Viewer>,
    session_rngs: Vec<ChaCha8Rng>,
    cut_active: u32,
    cut_ever: u32,
    changed: Vec<Rescheduled>,
    verifier: Arc<Remembering>,
    pub counters: Counters,
    /// Events by kind: messages delivered by their variant's name, and `"timer"` (for
    /// probes: where a run's events go; not in the report).
    pub events_by_kind: FxHashMap<&'static str, u64>,
    /// The outbox handed to the cores, empty between events (see `apply`).
    outbox: Outbox,
    pub collector: Collector,
}

fn addr_of(id: NodeId) -> SocketAddr {
    // Addresses only matter to the transport; the engine routes by node id.
    SocketAddr::from((Ipv4Addr::new(10, (id.0 >> 16) as u8, (id.0 >> 8) as u8, id.0 as u8), 4433))
}

impl Engine {
    pub fn new(scenario: &Scenario, policy: Policy) -> Engine {
        let s = scenario.clone();
        let population = population::draw(&s);
        let session_rngs = population.iter().map(|v| ChaCha8Rng::seed_from_u64(v.session_seed)).collect();
        let broadcaster = Broadcaster::from_seed(s.seed);
        let descriptor = ChannelDescriptor {
            id: ChannelId::derive(&broadcaster.public_key(), CHANNEL),
            name: CHANNEL.into(),
            broadcaster_key: broadcaster.public_key(),
            container: Container::MpegTs,
            live: true,
            stripes: s.stripes,
            piece_bytes: s.piece_bytes,
            segment_duration_ms_target: s.segment_duration_ms,
            bitrate_bps: s.bitrate_bps,
        };
        let mut flows = Flows::default();
        let relay = (s.network.relay_upload_bps > 0).then(|| flows.add_resource(s.network.relay_upload_bps as f64));
        let mut e = Engine {
            end: Time::from_secs_f64(s.duration_s),
            now: Time::ZERO,
            queue: RadixQueue::default(),
            completions: BTreeSet::new(),
            group_due: Vec::new(),
            seq: 0,
            nodes: Vec::new(),
            closures: Vec::new(),
            flows,
            in_flight: Vec::new(),
            link_queues: FxHashMap::default(),
            queue_order: 0,
            relay,
            rng: ChaCha8Rng::seed_from_u64(s.seed ^ 0x5851_f42d_4c95_7f2d),
            population,
            session_rngs,
            cut_active: 0,
            cut_ever: 0,
            changed: Vec::new(),
            verifier: Arc::new(Remembering::default()),
            counters: Counters::default(),
            events_by_kind: FxHashMap::default(),
            outbox: Outbox::default(),
            collector: Collector::new(&s),
            policy,
            scenario: s,
        };
        // The tracker and the source: public, at the centre of the plane.
        let tracker = Tracker::new(policy.tracker_config(&e.scenario, e.scenario.seed));
        e.add_node(NodeId::TRACKER, Core::Tracker(Box::new(tracker)), 10e9, SERVER_DOWNLOAD_BPS, None);
        let mut cfg =
            PeerConfig::new(SOURCE, addr_of(SOURCE), PeerRole::Source { descriptor, secret: broadcaster.secret() });
        cfg.seed = e.scenario.seed ^ SOURCE.0;
        cfg.verifier = e.verifier.clone();
        policy.source_config(&e.scenario, &mut cfg);
        let source_up = policy.source_upload_bps(&e.scenario) as f64;
        e.add_node(SOURCE, Core::Peer(Peer::new(cfg)), source_up, SERVER_DOWNLOAD_BPS, None);
        // Segments from one second in, so the source is registered first.
        e.push(Time::from_millis(1000), Ev::Publish { seq: 0 });
        let mut arrivals = Vec::new();
        for (i, v) in e.population.iter().enumerate() {
            let at = Time::from_secs_f64(v.arrive_s);
            if at < e.end {
                arrivals.push((at, i as u32));
            }
        }
        for (at, viewer) in arrivals {
            e.push(at, Ev::Arrive { viewer });
        }
        for (k, p) in e.scenario.partitions.clone().iter().enumerate().take(population::PARTITIONS_MAX) {
            e.push(Time::from_secs_f64(p.at_s), Ev::Cut { partition: k as u32 });
            e.push(Time::from_secs_f64(p.heal_s), Ev::Heal { partition: k as u32 });
        }
        e.push(Time::ZERO, Ev::Sample);
        e
    }

    pub fn now(&self) -> Time {
        self.now
    }

    pub fn end(&self) -> Time {
        self.end
    }

    /// The core of a live node.
    pub fn core(&self, id: NodeId) -> Option<&Core> {
        self.nodes.get(id.0 as usize)?.as_ref().map(|s| &s.core)
    }

    /// The stripe parents the tracker has given a viewer (for probes and tests).
    pub fn parents_of(&self, id: NodeId) -> Option<Vec<Option<NodeId>>> {
        match self.core(NodeId::TRACKER)? {
            Core::Tracker(t) => t.parents(CHANNEL, id),
            Core::Peer(_) => None,
        }
    }

    /// Live viewers, by id.
    pub fn viewers(&self) -> impl Iterator<Item = (NodeId, &Peer)> {
        self.nodes.iter().enumerate().filter_map(|(i, s)| {
            let s = s.as_ref()?;
            s.viewer?;
            Some((NodeId(i as u64), s.core.as_peer()?))
        })
    }

    /// Node ids that are currently connected to `id` (for tests).
    pub fn links_of(&self, id: NodeId) -> Vec<NodeId> {
        self.slot(id)
            .map(|s| s.linked_ids().into_iter().filter(|k| s.links[k].state == LinkState::Up).collect())
            .unwrap_or_default()
    }

    /// True when `a` and `b` are on different sides of an active partition.
    pub fn cut_between(&self, a: NodeId, b: NodeId) -> bool {
        // Most runs never cut: then no slot need be looked at.
        self.cut_active != 0 && self.sides(a, b) & self.cut_active != 0
    }

    fn sides(&self, a: NodeId, b: NodeId) -> u32 {
        let side = |id: NodeId| self.slot(id).map_or(0, |s| s.cut_sides);
        side(a) ^ side(b)
    }

    pub fn flows(&self) -> &Flows {
        &self.flows
    }

    fn slot(&self, id: NodeId) -> Option<&Slot> {
        self.nodes.get(id.0 as usize)?.as_deref()
    }

    fn slot_mut(&mut self, id: NodeId) -> Option<&mut Slot> {
        self.nodes.get_mut(id.0 as usize)?.as_deref_mut()
    }

    /// Removes `node`'s link to `peer`: the one way links leave `Slot::links`.
    fn unlink(&mut self, node: NodeId, peer: NodeId) -> Option<Link> {
        let link = self.slot_mut(node)?.links.remove(&peer)?;
        let count = &mut self.closures[node.0 as usize];
        *count = count.wrapping_add(1);
        Some(link)
    }

    /// Whether a message sent to `node` from `from` when its closures were `sent_at`
    /// still has its connection. A message is only sent on a connection that is up at
    /// both ends (the ends are made and removed together), so with no closure since, it
    /// still is.
    fn still_linked(&self, node: NodeId, from: NodeId, sent_at: u32) -> bool {
        self.closures.get(node.0 as usize) == Some(&sent_at)
            || self.slot(node).is_some_and(|s| s.links.get(&from).is_some_and(|l| l.state == LinkState::Up))
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(at.max(self.now).0, self.seq, ev);
    }

    fn add_node(&mut self, id: NodeId, core: Core, up_bps: f64, down_bps: f64, viewer: Option<u32>) {
        let (reach, place, cut_sides) = match viewer {
            Some(v) => {
                let v = &self.population[v as usize];
                (v.reach, v.place, v.cut_sides)
            }
            None => (Reachability::Open, Place::CENTRE, 0),
        };
        let slot = Slot {
            core,
            up: self.flows.add_resource(up_bps),
            down: self.flows.add_resource(down_bps),
            reach,
            place,
            cut_sides,
            links: FxHashMap::default(),
            timers: SmallVec::new(),
            viewer,
            joined_at: self.now,
        };
        let i = id.0 as usize;
        if self.nodes.len() <= i {
            self.nodes.resize_with(i + 1, || None);
            self.closures.resize(i + 1, 0);
        }
        self.nodes[i] = Some(Box::new(slot));
        let mut out = std::mem::take(&mut self.outbox);
        let now = self.now;
        if let Some(s) = self.slot_mut(id) {
            s.core.node().on_start(now, &mut out);
        }
        self.apply(id, out);
    }

    /// Runs until virtual time `until` (or the end), calling `progress` every simulated
    /// second.
    pub fn run_until(&mut self, until: Time, progress: &mut dyn FnMut(Progress)) {
        let until = until.min(self.end);
        let mut next_report = self.now + Duration::from_secs(1);
        loop {
            let heap_next = self.queue.peek().map(|(at, seq)| (Time(at), seq));
            let flow_next = self.completions.first().map(|&(at, seq, _)| (at, seq));
            let flow_first = match (heap_next, flow_next) {
                (None, None) => break,
                (Some(h), Some(f)) => f < h,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if flow_first {
                let Some((at, _, group)) = self.completions.first().copied() else { break };
                if at > until {
                    break;
                }
                self.completions.pop_first();
                self.group_due[group as usize] = None;
                self.now = at;
                self.counters.events += 1;
                if let Some(flow) = self.flows.head(group) {
                    self.end_flow(flow, true);
                }
                continue;
            }
            let Some((at, _)) = heap_next else { break };
            if at > until {
                break;
            }
            let Some(crate::queue::Entry { at, item: ev, .. }) = self.queue.pop() else { break };
            self.now = Time(at);
            self.prefetch_next();
            self.handle(ev);
            if self.now >= next_report {
                next_report = self.now + Duration::from_secs(1);
                progress(Progress {
                    sim_s: self.now.as_secs_f64(),
                    duration_s: self.end.as_secs_f64(),
                    events: self.counters.events,
                });
            }
        }
        self.now = until;
    }

    /// Starts loading the node the next queued event is for while this one is handled:
    /// at 10^5 viewers nearly every event's first touch of its node is a cache miss, and
    /// an event takes microseconds, time enough for the load to land.
    fn prefetch_next(&mut self) {
        let node = match self.queue.front().map(|e| &e.item) {
            Some(Ev::Deliver { to, .. }) => *to,
            Some(Ev::Timer { node, .. } | Ev::Disconnect { node, .. } | Ev::Acked { node, .. }) => *node,
            _ => return,
        };
        if let Some(Some(slot)) = self.nodes.get(node.0 as usize) {
            crate::prefetch::prefetch(&**slot);
        }
    }

    /// Runs to the end and records every viewer still present.
    pub fn finish(&mut self, progress: &mut dyn FnMut(Progress)) {
        self.run_until(self.end, progress);
        self.sample();
        let now = self.now;
        for (i, s) in self.nodes.iter().enumerate() {
            if let Some(s) = s {
                if let (Some(_), Some(p)) = (s.viewer, s.core.as_peer()) {
                    self.collector.record(NodeId(i as u64), p, now, false);
                }
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { from, to, closures, msg } => {
                self.counters.events += 1;
                if self.cut_between(from, to) {
                    // Sent before the cut, still in flight when it came: lost.
                    self.counters.lost_to_cut += 1;
                    return;
                }
                if self.cut_ever != 0 && self.sides(from, to) & self.cut_ever != 0 {
                    self.counters.delivered_across_healed += 1;
                }
                let now = self.now;
                // Gone, or the connection closed while this was in flight.
                let linked = self.still_linked(to, from, closures);
                let mut out = std::mem::take(&mut self.outbox);
                let Some(slot) = self.slot_mut(to).filter(|_| linked) else {
                    self.counters.messages_dropped += 1;
                    return;
                };
                let kind = msg.name();
                slot.core.node().on_message(now, from, msg, &mut out);
                self.counters.messages_delivered += 1;
                *self.events_by_kind.entry(kind).or_default() += 1;
                self.apply(to, out);
            }
            Ev::Timer { node, timer, generation } => {
                let now = self.now;
                let mut out = std::mem::take(&mut self.outbox);
                let Some(slot) = self.slot_mut(node) else { return };
                if !slot.timers.iter().any(|&(t, g)| t == timer && g == generation) {
                    return;
                }
                slot.core.node().on_timer(now, timer, &mut out);
                self.counters.events += 1;
                *self.events_by_kind.entry("timer").or_default() += 1;
                self.apply(node, out);
            }
            Ev::Disconnect { node, peer } => {
                let now = self.now;
                let mut out = std::mem::take(&mut self.outbox);
                let Some(slot) = self.slot(node) else { return };
                match slot.links.get(&peer).map(|l| l.state) {
                    Some(LinkState::Up) => return,
                    Some(LinkState::Failing) => {
                        self.unlink(node, peer);
                    }
                    None => {}
                }
                let Some(slot) = self.slot_mut(node) else { return };
                slot.core.node().on_disconnect(now, peer, &mut out);
                self.counters.events += 1;
                self.counters.disconnects += 1;
                self.apply(node, out);
            }
            Ev::Acked { node, peer, seq, index, delivered, rtt_half_us } => {
                let now = self.now;
                let mut out = std::mem::take(&mut self.outbox);
                let Some(slot) = self.slot_mut(node) else { return };
                let rtt = Duration::from_micros(2 * rtt_half_us);
                let ack = PieceAck { to: peer, seq, index, delivered, rtt };
                slot.core.node().on_piece_acked(now, ack, &mut out);
                self.counters.events += 1;
                *self.events_by_kind.entry("acked").or_default() += 1;
                self.apply(node, out);
            }
            Ev::Arrive { viewer } => {
                self.counters.events += 1;
                self.arrive(viewer);
            }
            Ev::Depart { node } => {
                self.counters.events += 1;
                self.depart(node);
            }
            Ev::Publish { seq } => {
                self.counters.events += 1;
                self.publish(seq);
            }
            Ev::Cut { partition } => {
                self.counters.events += 1;
                self.cut(partition);
            }
            Ev::Heal { partition } => {
                self.counters.events += 1;
                self.cut_active &= !(1 << partition);
            }
            Ev::Sample => {
                self.sample();
                let next = self.now + Duration::from_secs_f64(self.scenario.sample_interval_s);
                if next < self.end {
                    self.push(next, Ev::Sample);
                }
            }
        }
    }

    fn sample(&mut self) {
        let now = self.now;
        let source = self.counters.source_media_bytes;
        let mut collector = std::mem::take(&mut self.collector);
        let viewers: Vec<(NodeId, &Peer)> = self.viewers().collect();
        collector.sample(now, &viewers, source);
        drop(viewers);
        self.collector = collector;
    }

    fn arrive(&mut self, viewer: u32) {
        let id = NodeId(self.nodes.len().max(2) as u64);
        let v = &self.population[viewer as usize];
        let (up, down) = (v.upload_bps, v.download_bps);
        let mut cfg = PeerConfig::new(id, addr_of(id), PeerRole::Viewer { channel: CHANNEL.into() });
        cfg.seed = self.scenario.seed ^ id.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        cfg.upload_bps = up;
        cfg.verifier = self.verifier.clone();
        self.policy.viewer_config(&mut cfg);
        self.counters.arrivals += 1;
        let mut peer = Peer::new(cfg);
        // What the production driver's STUN exchange with the tracker would measure: the
        // peer reports it, so the tracker's optimizer knows which pairs need the relay and
        // its connections go through rendezvous as in production (the engine models the
        // introduction's cost on the dial itself; see `dial`).
        peer.set_nat(NatReport {
            reachability: v.reach,
            classified: true,
            reflexive: addr_of(id),
            local: addr_of(id),
            port_step: 0,
            next_port: addr_of(id).port(),
        });
        self.add_node(id, Core::Peer(peer), up as f64, down as f64, Some(viewer));
        let v = &self.population[viewer as usize];
        let session = population::session_s(&self.scenario, v, &mut self.session_rngs[viewer as usize]);
        if let Some(session_s) = session {
            self.push(self.now + Duration::from_secs_f64(session_s), Ev::Depart { node: id });
        }
    }

    fn depart(&mut self, node: NodeId) {
        let now = self.now;
        let Some(slot) = self.nodes.get_mut(node.0 as usize).and_then(Option::take) else { return };
        self.counters.departures += 1;
        if let Some(p) = slot.core.as_peer() {
            if slot.viewer.is_some() {
                self.collector.record(node, p, now, true);
            }
        }
        // Its connections close: each neighbour hears of it one latency later.
        for peer in slot.linked_ids() {
            let link = slot.links[&peer];
            let lat = link.latency_us;
            self.unlink(peer, node);
            if link.state == LinkState::Up {
                self.push(now + Duration::from_micros(lat), Ev::Disconnect { node: peer, peer: node });
            }
        }
        self.cancel_flows_of(slot.up, slot.down);
        if let Some(v) = slot.viewer {
            if self.scenario.sessions.rejoin {
                let off_s =
                    population::exponential(&mut self.session_rngs[v as usize], self.scenario.sessions.off_mean_s);
                self.push(now + Duration::from_secs_f64(off_s), Ev::Arrive { viewer: v });
            }
        }
    }

    fn cancel_flows_of(&mut self, up: ResId, down: ResId) {
        let mut doomed: Vec<FlowId> = self.flows.flows_of(up).to_vec();
        doomed.extend_from_slice(self.flows.flows_of(down));
        doomed.sort_unstable();
        doomed.dedup();
        for f in doomed {
            self.end_flow(f, false);
        }
    }

    fn publish(&mut self, seq: u64) {
        let now = self.now;
        let dur_ms = self.scenario.segment_duration_ms;
        let data = segment_data(seq, self.scenario.segment_bytes());
        let mut out = std::mem::take(&mut self.outbox);
        if let Some(Core::Peer(p)) = self.slot_mut(SOURCE).map(|s| &mut s.core) {
            p.publish(now, seq, dur_ms, &data, &mut out);
        }
        self.apply(SOURCE, out);
        let next = now + Duration::from_millis(dur_ms as u64);
        if next < self.end {
            self.push(next, Ev::Publish { seq: seq + 1 });
        }
    }

    fn cut(&mut self, partition: u32) {
        let bit = 1 << partition;
        self.cut_active |= bit;
        self.cut_ever |= bit;
        let idle = Duration::from_millis(self.scenario.network.idle_timeout_ms);
        // Every connection across the cut goes silent: in-flight pieces are lost, and each
        // end declares the connection dead after the idle timeout.
        let mut severed: Vec<(NodeId, NodeId)> = Vec::new();
        for (i, s) in self.nodes.iter().enumerate() {
            let Some(s) = s else { continue };
            if s.cut_sides & bit == 0 {
                continue;
            }
            for peer in s.linked_ids() {
                let other = self.slot(peer).map_or(0, |p| p.cut_sides);
                if other & bit == 0 {
                    severed.push((NodeId(i as u64), peer));
                }
            }
        }
        for (a, b) in severed {
            self.cancel_flows_between(a, b);
            for (x, y) in [(a, b), (b, a)] {
                self.unlink(x, y);
                self.push(self.now + idle, Ev::Disconnect { node: x, peer: y });
            }
        }
    }

    fn cancel_flows_between(&mut self, a: NodeId, b: NodeId) {
        for key in [(a, b), (b, a)] {
            // A connection has at most one flow: its queue knows it (a scan of the
            // sender's flows would cost an origin's thousands per closed connection).
            if let Some(f) = self.link_queues.get(&key).and_then(|q| q.flow) {
                self.end_flow(f, false);
            }
        }
    }

    /// A connection's flow finished its piece (delivered one latency later) or was cut
    /// off (the piece and those waiting behind it are lost). A finished flow goes on with
    /// the next waiting piece at the same rate; an idle connection leaves the flow model.
    fn end_flow(&mut self, flow: FlowId, finished: bool) {
        let Some(m) = self.in_flight[flow as usize].take() else { return };
        let key = (m.from, m.to);
        if finished {
            // Media bytes count once they have crossed the sender's uplink.
            let len = m.data.len() as u64;
            self.counters.media_bytes += len;
            if m.from == SOURCE {
                self.counters.source_media_bytes += len;
            }
            let at = (self.now + Duration::from_micros(m.latency_us)).max(m.not_before);
            // The sender hears of it as QUIC's acknowledgement would tell it: one latency
            // after the receiver has it.
            let lat = m.latency_us;
            let acked =
                Ev::Acked { node: m.from, peer: m.to, seq: m.seq, index: m.index, delivered: true, rtt_half_us: lat };
            self.push(at + Duration::from_micros(m.latency_us), acked);
            let msg = Msg::Piece { seq: m.seq, index: m.index, data: m.data };
            self.push(at, Ev::Deliver { from: m.from, to: m.to, closures: m.closures, msg });
            let next = self.link_queues.get_mut(&key).and_then(|q| q.waiting.pop());
            if let Some(Reverse(next)) = next {
                let bytes = next.piece.wire_bytes();
                let r = self.flows.refill(self.now, flow, bytes);
                self.in_flight[flow as usize] = Some(next.piece);
                self.reschedule(&[r]);
                return;
            }
        } else {
            self.counters.messages_dropped += 1;
            if let Some(q) = self.link_queues.get(&key) {
                self.counters.messages_dropped += q.waiting.len() as u64;
            }
        }
        self.link_queues.remove(&key);
        self.changed.clear();
        let mut changed = std::mem::take(&mut self.changed);
        self.flows.stop(self.now, flow, &mut changed);
        self.reschedule(&changed);
        self.changed = changed;
    }

    fn reschedule(&mut self, changed: &[Rescheduled]) {
        for r in changed {
            let i = r.group as usize;
            if self.group_due.len() <= i {
                self.group_due.resize(i + 1, None);
            }
            let at = r.finish_at.map(|at| at.max(self.now));
            if let (Some(old), Some(at)) = (self.group_due[i], at) {
                if old.0 == at {
                    // Unchanged: keep its place among ties.
                    continue;
                }
            }
            if let Some(old) = self.group_due[i].take() {
                self.completions.remove(&(old.0, old.1, r.group));
            }
            if let Some(at) = at {
                self.seq += 1;
                self.completions.insert((at, self.seq, r.group));
                self.group_due[i] = Some((at, self.seq));
            }
        }
    }

    /// Carries out what a core asked for: timers, then dials, then sends, then closes
    /// (the same order as the real driver). The emptied outbox is kept for the next
    /// event, so its vectors' allocations outlive the event.
    fn apply(&mut self, from: NodeId, mut out: Outbox) {
        for (at, timer) in out.timers.drain(..) {
            let Some(slot) = self.slot_mut(from) else { break };
            let generation = match slot.timers.iter_mut().find(|(t, _)| *t == timer) {
                Some((_, g)) => {
                    *g = g.wrapping_add(1);
                    *g
                }
                None => {
                    slot.timers.push((timer, 0));
                    0
                }
            };
            self.push(at, Ev::Timer { node: from, timer, generation });
        }
        for peer in out.dials.drain(..) {
            self.dial(from, peer);
        }
        for (to, msg) in out.sends.drain(..) {
            self.send(from, to, msg);
        }
        for peer in out.closes.drain(..) {
            self.close(from, peer);
        }
        self.outbox = out;
    }

    fn latency_us_between(&self, a: &Slot, b: NodeId, relayed: bool) -> u64 {
        let Some(b) = self.slot(b) else { return 0 };
        if relayed {
            a.place.latency_us(&Place::CENTRE) + Place::CENTRE.latency_us(&b.place)
        } else {
            a.place.latency_us(&b.place)
        }
    }

    fn dial(&mut self, a: NodeId, peer: PeerInfo) {
        let b = peer.id;
        if a == b || self.slot(a).is_none_or(|s| s.links.contains_key(&b)) {
            return;
        }
        let both_viewers =
            self.slot(a).is_some_and(|s| s.viewer.is_some()) && self.slot(b).is_some_and(|s| s.viewer.is_some());
        let timeout = Duration::from_millis(self.scenario.network.connect_timeout_ms);
        let Some(sb) = self.slot(b) else {
            if both_viewers || self.slot(a).is_some_and(|s| s.viewer.is_some()) {
                self.counters.dials_to_departed += 1;
            }
            self.fail_dial(a, b, timeout);
            return;
        };
        let Some(sa) = self.slot(a) else { return };
        let (down_a, down_b) = (sa.down, sb.down);
        let mut path = if self.cut_between(a, b) { Path::None } else { nat::traversal(sa.reach, sb.reach) };
        if path == Path::Relay && self.relay.is_none() {
            path = Path::None;
        }
        let relayed = path == Path::Relay;
        // A QUIC handshake is one round trip; two NAT'd nodes are first introduced by the
        // tracker, which costs a trip to it and back.
        let lat = self.latency_us_between(sa, b, relayed);
        let lat_back = self.latency_us_between(sb, a, relayed);
        let behind_nat = |r: Reachability| matches!(r, Reachability::Nat(_));
        let intro = if behind_nat(sa.reach) && behind_nat(sb.reach) {
            sa.place.latency_us(&Place::CENTRE) + Place::CENTRE.latency_us(&sb.place)
        } else {
            0
        };
        if both_viewers {
            match path {
                Path::Direct => self.counters.dials_direct += 1,
                Path::Relay => self.counters.dials_relayed += 1,
                Path::None => self.counters.dials_failed += 1,
            }
        }
        if path == Path::None {
            self.fail_dial(a, b, timeout);
            return;
        }
        let up_at = self.now + Duration::from_micros(2 * lat + intro);
        let link =
            Link { state: LinkState::Up, up_at, relayed, control_at: Time::ZERO, latency_us: lat, peer_down: down_b };
        // A simultaneous dial from the other side shares its connection.
        let existing = self.slot(b).and_then(|s| s.links.get(&a).copied()).filter(|l| l.state == LinkState::Up);
        let mine = existing.map_or(link, |l| Link { control_at: Time::ZERO, latency_us: lat, peer_down: down_b, ..l });
        if let Some(s) = self.slot_mut(a) {
            s.links.insert(b, mine);
        }
        if existing.is_none() {
            if let Some(s) = self.slot_mut(b) {
                s.links.insert(a, Link { latency_us: lat_back, peer_down: down_a, ..link });
            }
        }
    }

    fn fail_dial(&mut self, a: NodeId, b: NodeId, timeout: Duration) {
        if let Some(s) = self.slot_mut(a) {
            s.links.insert(
                b,
                Link {
                    state: LinkState::Failing,
                    up_at: Time::ZERO,
                    relayed: false,
                    control_at: Time::ZERO,
                    latency_us: 0,
                    // Nothing is sent on a failing link.
                    peer_down: ResId::MAX,
                },
            );
        }
        self.push(self.now + timeout, Ev::Disconnect { node: a, peer: b });
    }

    fn close(&mut self, a: NodeId, b: NodeId) {
        let Some(link) = self.unlink(a, b) else { return };
        if link.state != LinkState::Up {
            return;
        }
        let lat = link.latency_us;
        self.unlink(b, a);
        self.cancel_flows_between(a, b);
        self.push(self.now, Ev::Disconnect { node: a, peer: b });
        self.push(self.now + Duration::from_micros(lat), Ev::Disconnect { node: b, peer: a });
    }

    /// Extra delay from loss: each loss costs a retransmission timeout (about 1.5 round
    /// trips, QUIC's probe timeout).
    fn loss_delay_us(&mut self, latency_us: u64) -> u64 {
        let loss = self.scenario.network.loss;
        if loss <= 0.0 {
            return 0;
        }
        let mut extra = 0;
        for _ in 0..RETRANSMITS_MAX {
            if !self.rng.gen_bool(loss) {
                break;
            }
            extra += 3 * latency_us;
        }
        extra
    }

    fn send(&mut self, a: NodeId, b: NodeId, msg: Msg) {
        if a == b {
            return;
        }
        let has_link = self.slot(a).is_some_and(|s| s.links.contains_key(&b));
        if !has_link && b == NodeId::TRACKER {
            // Every node knows the tracker's address: the connection is made on demand.
            self.dial(a, PeerInfo { id: b, addr: addr_of(b) });
        }
        let Some(sa) = self.slot(a) else { return };
        let Some(link) = sa.links.get(&b).copied().filter(|l| l.state == LinkState::Up) else {
            self.counters.messages_dropped += 1;
            return;
        };
        let up = sa.up;
        let lat = link.latency_us;
        // The receiver's slot itself is not read (its count is in `closures`, its
        // download in the link).
        let Some(Some(_)) = self.nodes.get(b.0 as usize) else {
            self.counters.messages_dropped += 1;
            return;
        };
        let closures = self.closures[b.0 as usize];
        let down = link.peer_down;
        if self.cut_between(a, b) {
            self.counters.messages_dropped += 1;
            return;
        }
        let depart = self.now.max(link.up_at);
        let extra = self.loss_delay_us(lat);
        if let Msg::Piece { seq, index, data } = msg {
            let not_before = depart + Duration::from_micros(lat + extra);
            let piece = InFlight { from: a, to: b, seq, index, data, latency_us: lat + extra, not_before, closures };
            let bytes = piece.wire_bytes();
            let q = self.link_queues.entry((a, b)).or_default();
            if q.flow.is_some() {
                if q.waiting.len() >= LINK_QUEUE_PIECES_MAX {
                    self.counters.messages_dropped += 1;
                } else {
                    self.queue_order += 1;
                    q.waiting.push(Reverse(Queued { order: self.queue_order, piece }));
                }
                return;
            }
            self.counters.flows_started += 1;
            let relay = self.relay.filter(|_| link.relayed);
            let via = [up, relay.unwrap_or(down), down];
            let res = if relay.is_some() { &via[..] } else { &via[..2] };
            self.changed.clear();
            let mut changed = std::mem::take(&mut self.changed);
            let f = self.flows.start(self.now, res, bytes, &mut changed);
            if let Some(q) = self.link_queues.get_mut(&(a, b)) {
                q.flow = Some(f);
            }
            if self.in_flight.len() <= f as usize {
                self.in_flight.resize_with(f as usize + 1, || None);
            }
            self.in_flight[f as usize] = Some(piece);
            self.reschedule(&changed);
            self.changed = changed;
        } else {
            self.counters.control_bytes += control_bytes(&msg);
            let at = (depart + Duration::from_micros(lat + extra)).max(link.control_at);
            if let Some(l) = self.slot_mut(a).and_then(|s| s.links.get_mut(&b)) {
                l.control_at = at;
            }
            self.push(at, Ev::Deliver { from: a, to: b, closures, msg });
        }
    }

    /// The live source peer (for tests and the report).
    pub fn source(&self) -> Option<&Peer> {
        self.core(SOURCE)?.as_peer()
    }

    /// When the node joined (for tests).
    pub fn joined_at(&self, id: NodeId) -> Option<Time> {
        self.slot(id).map(|s| s.joined_at)
    }

    /// A viewer's upload capacity in the scenario (for probes).
    pub fn upload_bps_of(&self, id: NodeId) -> Option<f64> {
        let v = self.slot(id)?.viewer?;
        Some(self.population[v as usize].upload_bps as f64)
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }
}

/// Wire size of a control message, as `codec::encode` frames it (a version byte, then the
/// postcard body), counted without building the frame.
fn control_bytes(msg: &Msg) -> u64 {
    // A plain enum always serializes (the codec's own `encode` relies on it too).
    1 + postcard::serialize_with_flavor::<Msg, _, usize>(msg, postcard::ser_flavors::Size::default())
        .expect("Msg encodes") as u64
}

/// A segment's bytes: content does not matter to the swarm, only size and hashes.
fn segment_data(seq: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    for (i, chunk) in v.chunks_mut(1024).enumerate() {
        chunk[0] = seq as u8;
        chunk[1] = (seq >> 8) as u8;
        chunk[2] = i as u8;
    }
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtv_proto::codec;
    use meshtv_proto::msg::PieceMap;

    #[test]
    fn control_bytes_are_the_codec_frame_length() {
        let msgs = [
            Msg::Have { seq: 12345, pieces: PieceMap::full(13) },
            Msg::Request { seq: 7, index: 300, urgent: true },
            Msg::GetHeader { seq: u64::MAX },
            Msg::Leave,
        ];
        for m in &msgs {
            assert_eq!(control_bytes(m), codec::encode(m).len() as u64, "{m:?}");
        }
    }
}
