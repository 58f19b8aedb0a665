//! The tracker state machine. See the crate documentation for what it does.

use crate::assignment::{Member, Trees};
use crate::capacity::Capacity;
use crate::chandelier::Chandelier;
use crate::rendezvous::Rendezvous;
use crate::reports::ReportLog;
use meshtv_proto::media::ChannelDescriptor;
use meshtv_proto::msg::{PeerInfo, PeerReport, RejectReason};
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use rand::SeedableRng;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

const TICK: TimerId = TimerId(1);
/// A viewer's uplink is offered as slots of a few times the stripe rate (in quarters),
/// sized by how much room the swarm has. A parent's pieces of a segment leave in one
/// burst to all its children at once (its uplink shared fairly among them), so the last
/// child has them only after (busy share of the uplink × segment duration), and every
/// hop of a tree adds that. Where the swarm's uplinks leave room, slots of up to 3× the
/// stripe rate keep each uplink at most a third busy; a swarm that needs all of its
/// uplinks gets 1.25× (pieces still cross a hop faster than the stream runs). Measured
/// in a simulated 2,000-viewer churn: 1.25× left the origin 3% of the stream, with
/// parents' pushes ~2 s behind their headers; 3× left it under 1%.
const SLOT_QUARTERS_MIN: u64 = 5;
const SLOT_QUARTERS_MAX: u64 = 12;

/// Share of the relay's capacity that tree edges may take (see
/// `TrackerConfig::relay_bps`).
const RELAY_TREE_SHARE: u64 = 8;

/// Most tree edges of a channel the relay may carry.
fn relayed_edges_max(relay_bps: u64, d: &ChannelDescriptor) -> usize {
    (relay_bps / RELAY_TREE_SHARE / d.stripe_bps().max(1)) as usize
}

/// The slot size for a swarm whose viewers declared `declared_bps` in all, `viewers` of
/// them, on a stream of `bitrate_bps`: half its uplink-to-demand ratio, within bounds.
/// Declared figures only size slots (a slot count is still measured, and capped by the
/// declared upload); a swarm that overstates its uplinks gets fewer, larger slots.
fn slot_quarters(declared_bps: u128, viewers: u128, bitrate_bps: u64) -> u64 {
    let demand = viewers * bitrate_bps as u128;
    if demand == 0 {
        return SLOT_QUARTERS_MIN;
    }
    // quarters = 4 × ratio / 2
    ((2 * declared_bps / demand) as u64).clamp(SLOT_QUARTERS_MIN, SLOT_QUARTERS_MAX)
}

pub struct TrackerConfig {
    pub seed: u64,
    /// A peer silent for this long is expired and its children reassigned.
    pub peer_timeout: Duration,
    pub tick: Duration,
    /// Mesh partners handed to each viewer besides its parents.
    pub partners_per_peer: usize,
    /// Most viewers admitted to one channel.
    pub members_per_channel_max: usize,
    /// Whether viewers may be parents. `false` leaves the source as the only parent (of as
    /// many viewers as its slots allow) and the rest to pull from their mesh partners: the
    /// random-mesh baseline the simulator compares against.
    pub trees_among_viewers: bool,
    /// How stripe parents are chosen: the Chandelier optimizer by default.
    pub policy: Policy,
    /// Capacity of the relay this tracker runs for pairs that cannot connect directly
    /// (bit/s). Tree edges through it are admitted while they would carry at most an
    /// eighth of it at the stripe rate: the rest is left to pulls and to the bursts of
    /// catch-up a new edge brings. Measured in a simulated 10,000-viewer flash crowd with
    /// a 200 Mbit/s relay: unbounded, ~3,000 transfers shared it at ~65 kbit/s each and
    /// viewers behind symmetric NATs started in 4.0-4.7 s (95th percentile, 2.8 s for
    /// the rest); with half of it for trees 3.9 s, with an eighth 3.4 s.
    pub relay_bps: u64,
}

/// The tracker's way of choosing stripe parents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// At join time, a free slot at the lowest depth (capacity as declared). Simple and
    /// immediate; the baseline the optimizer is measured against.
    Tree,
    /// The Chandelier optimizer: joins still get immediate parents from the simple rule,
    /// then the whole channel is re-solved every `every`, with upload slots from
    /// *measured* capacity ([`Capacity`]), and only peers whose parents changed are told.
    Chandelier { every: Duration },
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            seed: 0,
            peer_timeout: Duration::from_secs(6),
            tick: Duration::from_millis(500),
            partners_per_peer: 4,
            members_per_channel_max: 100_000,
            trees_among_viewers: true,
            policy: Policy::Chandelier { every: Duration::from_secs(2) },
            relay_bps: 50_000_000,
        }
    }
}

struct Channel {
    descriptor: ChannelDescriptor,
    trees: Trees,
    /// Upload the viewers declared, summed, and how many: sizes their slots.
    declared_bps: u128,
    declared_viewers: u128,
    /// Tree edges that go through the relay, as of the last count (each solve, or each
    /// tick under `Policy::Tree`) plus those added since: departures are counted out at
    /// the next count (an over-count only errs safe).
    relayed_edges: usize,
    /// When the optimizer last solved this channel.
    solved_at: Option<Time>,
}

struct NodeRecord {
    /// Upload capacity as measured from the peer's heartbeats.
    capacity: Capacity,
    channel: String,
    addr: SocketAddr,
    last_seen: Time,
    report: PeerReport,
    /// The upload it declared when it joined (0 for a source).
    declared_bps: u64,
    /// Bytes the other members of its channel reported receiving from it: its upload as
    /// measured by its receivers.
    credited_bytes: u64,
}

/// What the tracker shows operators (dashboard, logs, tests).
#[derive(Clone, Debug, Serialize)]
pub struct TrackerSnapshot {
    pub channels: Vec<ChannelSnapshot>,
    /// Every peer that reported its NAT, with what it reported.
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PeerSnapshot {
    /// As the peer's own stats show it ("n" and hex).
    pub id: String,
    pub channel: String,
    /// The NAT's usual name (`NatReport::kind`), and the report itself.
    pub nat: String,
    pub report: meshtv_proto::msg::NatReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChannelSnapshot {
    pub name: String,
    pub source: NodeId,
    pub viewers: usize,
    pub bytes_from_peers: u64,
    pub bytes_from_source: u64,
    pub stalls: u64,
}

pub struct Tracker {
    cfg: TrackerConfig,
    rng: rand_chacha::ChaCha8Rng,
    channels: BTreeMap<String, Channel>,
    /// Every connected peer, looked up on each message it sends (a heartbeat a second
    /// from each viewer: in a B-tree of 10^5 records, a cache miss per level). Hashed
    /// with a fixed hasher; where the order of a walk over it can matter, the walk sorts.
    nodes: FxHashMap<NodeId, NodeRecord>,
    /// NAT reports and rendezvous under way (see `rendezvous`).
    pub rendezvous: Rendezvous,
    /// Members with bans to expire (see `assignment::Bans`): the tick visits only these.
    banning: BTreeSet<NodeId>,
    /// Bad-piece reports, logged as one line per interval.
    reports: ReportLog,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            channels: BTreeMap::new(),
            nodes: FxHashMap::default(),
            rendezvous: Rendezvous::default(),
            banning: BTreeSet::new(),
            reports: ReportLog::default(),
        }
    }

    /// Bad-piece reports received since the start.
    pub fn bad_peer_reports(&self) -> u64 {
        self.reports.total
    }

    pub fn snapshot(&self) -> TrackerSnapshot {
        let channels = self
            .channels
            .iter()
            .map(|(name, ch)| {
                let viewers: Vec<&NodeRecord> = ch
                    .trees
                    .members
                    .keys()
                    .filter(|id| **id != ch.trees.source)
                    .filter_map(|id| self.nodes.get(id))
                    .collect();
                ChannelSnapshot {
                    name: name.clone(),
                    source: ch.trees.source,
                    viewers: viewers.len(),
                    bytes_from_peers: viewers.iter().map(|r| r.report.bytes_from_peers).sum(),
                    bytes_from_source: viewers.iter().map(|r| r.report.bytes_from_source).sum(),
                    stalls: viewers.iter().map(|r| r.report.stalls as u64).sum(),
                }
            })
            .collect();
        let mut nodes: Vec<(&NodeId, &NodeRecord)> = self.nodes.iter().collect();
        nodes.sort_by_key(|(id, _)| **id);
        let peers = nodes
            .into_iter()
            .filter_map(|(id, r)| {
                let report = self.rendezvous.nat(*id)?.clone();
                Some(PeerSnapshot { id: id.to_string(), channel: r.channel.clone(), nat: report.kind(), report })
            })
            .collect();
        TrackerSnapshot { channels, peers }
    }

    /// The parent a member has in each stripe (for tests and the dashboard).
    pub fn parents(&self, channel: &str, node: NodeId) -> Option<Vec<Option<NodeId>>> {
        Some(self.channels.get(channel)?.trees.members.get(&node)?.parents.clone())
    }

    fn info(&self, id: NodeId) -> Option<PeerInfo> {
        // Where others reach a peer: where the tracker's STUN saw it, if it reported.
        let addr = |r: &NodeRecord| self.rendezvous.nat(id).map_or(r.addr, |n| n.reflexive);
        self.nodes.get(&id).map(|r| PeerInfo { id, addr: addr(r) })
    }

    fn slots(descriptor: &ChannelDescriptor, upload_bps: u64) -> u32 {
        (upload_bps / descriptor.stripe_bps()).min(u32::MAX as u64) as u32
    }

    fn on_announce(
        &mut self,
        now: Time,
        from: NodeId,
        d: ChannelDescriptor,
        addr: SocketAddr,
        upload_bps: u64,
        out: &mut Outbox,
    ) {
        if let Some(ch) = self.channels.get(&d.name) {
            if ch.descriptor.broadcaster_key != d.broadcaster_key {
                out.send(from, Msg::Reject { reason: RejectReason::NameTaken });
                return;
            }
            // The broadcaster came back (restart): the old channel and its trees go.
            let old_source = ch.trees.source;
            self.drop_node(now, old_source, out);
        }
        let slots = Self::slots(&d, upload_bps);
        tracing::info!(channel = %d.name, source = %from, slots, "channel registered");
        self.nodes.insert(
            from,
            NodeRecord {
                capacity: Capacity::trusted(slots),
                channel: d.name.clone(),
                addr,
                last_seen: now,
                report: PeerReport::default(),
                declared_bps: 0,
                credited_bytes: 0,
            },
        );
        let trees = Trees::new(from, slots, d.stripes as usize);
        out.send(from, Msg::Registered { channel: d.id });
        self.channels.insert(
            d.name.clone(),
            Channel { descriptor: d, trees, solved_at: None, declared_bps: 0, declared_viewers: 0, relayed_edges: 0 },
        );
    }

    fn on_join(
        &mut self,
        now: Time,
        from: NodeId,
        channel: String,
        addr: SocketAddr,
        upload_bps: u64,
        out: &mut Outbox,
    ) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            out.send(from, Msg::Reject { reason: RejectReason::UnknownChannel });
            return;
        };
        if ch.trees.members.len() > self.cfg.members_per_channel_max {
            out.send(from, Msg::Reject { reason: RejectReason::BadDescriptor("channel is full".into()) });
            return;
        }
        if let Some(old) = self.nodes.get(&from).filter(|r| r.channel == channel && ch.trees.source != from) {
            // Joined again without leaving: its old figure no longer counts.
            ch.declared_bps = ch.declared_bps.saturating_sub(old.declared_bps as u128);
            ch.declared_viewers = ch.declared_viewers.saturating_sub(1);
        }
        ch.declared_bps += upload_bps as u128;
        ch.declared_viewers += 1;
        let quarters = slot_quarters(ch.declared_bps, ch.declared_viewers, ch.descriptor.bitrate_bps);
        let declared = if self.cfg.trees_among_viewers {
            Self::slots(&ch.descriptor, upload_bps.saturating_mul(4) / quarters)
        } else {
            0
        };
        // Under the optimizer a newcomer offers only what it has shown it can upload;
        // the declared figure is a cap, never a promise.
        let capacity = match self.cfg.policy {
            Policy::Tree => Capacity::trusted(declared),
            Policy::Chandelier { .. } => Capacity::new(declared),
        };
        ch.trees.insert(from, Member::new(capacity.slots, ch.descriptor.stripes as usize));
        let (descriptor, source) = (ch.descriptor.clone(), ch.trees.source);
        self.nodes.insert(
            from,
            NodeRecord {
                capacity,
                channel: channel.clone(),
                addr,
                last_seen: now,
                report: PeerReport::default(),
                declared_bps: upload_bps,
                credited_bytes: 0,
            },
        );
        let Some(source) = self.info(source) else { return };
        out.send(from, Msg::Welcome { descriptor: Box::new(descriptor), source, live_edge: None });
        self.fill(&channel, from);
        self.send_assignment(&channel, from, true, out);
    }

    /// Gives `node` a parent in every stripe where it has none (see `Trees::fill`),
    /// through the relay only while the channel's relayed edges are within budget; true
    /// if anything changed.
    fn fill(&mut self, channel: &str, node: NodeId) -> bool {
        let Some(ch) = self.channels.get_mut(channel) else { return false };
        let mut room = relayed_edges_max(self.cfg.relay_bps, &ch.descriptor).saturating_sub(ch.relayed_edges);
        let before = room;
        let rendezvous = &self.rendezvous;
        let changed = ch.trees.fill(node, &mut self.rng, &|p| rendezvous.direct(node, p), &mut room);
        ch.relayed_edges += before - room;
        changed
    }

    /// A member's NAT became known after it joined (a driver that measured it late), when
    /// it already has parents: its edges that turn out to need the relay count against the budget,
    /// and those beyond it are given up for direct parents where any has room.
    fn on_nat_known(&mut self, channel: &str, node: NodeId, out: &mut Outbox) {
        let Some(ch) = self.channels.get_mut(channel) else { return };
        let max = relayed_edges_max(self.cfg.relay_bps, &ch.descriptor);
        let Some(m) = ch.trees.members.get(&node) else { return };
        let relayed: Vec<usize> =
            (0..m.parents.len()).filter(|&s| m.parents[s].is_some_and(|p| !self.rendezvous.direct(node, p))).collect();
        let mut cut = false;
        for s in relayed {
            if ch.relayed_edges < max {
                ch.relayed_edges += 1;
            } else {
                ch.trees.link(node, s, None);
                cut = true;
            }
        }
        if cut {
            self.fill(channel, node);
            self.send_assignment(channel, node, false, out);
        }
    }

    /// Counts the channel's relayed tree edges afresh and cuts those beyond the budget
    /// (their rows are filled again with direct parents where any has room); returns the
    /// members that lost a parent.
    fn trim_relayed_edges(&mut self, channel: &str) -> Vec<NodeId> {
        let Some(ch) = self.channels.get(channel) else { return Vec::new() };
        let max = relayed_edges_max(self.cfg.relay_bps, &ch.descriptor);
        let mut relayed = Vec::new();
        for (&id, m) in &ch.trees.members {
            for (s, p) in m.parents.iter().enumerate() {
                if p.is_some_and(|p| !self.rendezvous.direct(id, p)) {
                    relayed.push((id, s));
                }
            }
        }
        let Some(ch) = self.channels.get_mut(channel) else { return Vec::new() };
        ch.relayed_edges = relayed.len().min(max);
        let mut cut: Vec<NodeId> = Vec::new();
        for &(id, s) in relayed.iter().skip(max) {
            ch.trees.link(id, s, None);
            if cut.last() != Some(&id) {
                cut.push(id);
            }
        }
        cut
    }

    /// Tells `node` its parents, and with `with_partners`, a fresh set of mesh partners.
    fn send_assignment(&mut self, channel: &str, node: NodeId, with_partners: bool, out: &mut Outbox) {
        let Some(ch) = self.channels.get(channel) else { return };
        let Some(m) = ch.trees.members.get(&node) else { return };
        let parents: Vec<Option<PeerInfo>> = m.parents.iter().map(|p| p.and_then(|p| self.info(p))).collect();
        let mut partners = Vec::new();
        if with_partners {
            let ok = |id: NodeId| id != node && id != ch.trees.source && !m.banned.contains(&id);
            // Partners it reaches without the relay first; relayed ones only to make up
            // the number.
            let want = self.cfg.partners_per_peer;
            let direct = |id: NodeId| ok(id) && self.rendezvous.direct(node, id);
            let mut pool = ch.trees.roster.sample(want, &mut self.rng, direct);
            if pool.len() < want {
                let more = ch.trees.roster.sample(want - pool.len(), &mut self.rng, |id| ok(id) && !pool.contains(&id));
                pool.extend(more);
            }
            partners = pool.into_iter().filter_map(|id| self.info(id)).collect();
        }
        out.send(node, Msg::Assign { parents, partners });
    }

    /// Forgets a node; reassigns the members that lost a parent.
    fn drop_node(&mut self, _now: Time, node: NodeId, out: &mut Outbox) {
        self.rendezvous.forget(node);
        let Some(rec) = self.nodes.remove(&node) else { return };
        let Some(ch) = self.channels.get_mut(&rec.channel) else { return };
        if ch.trees.source == node {
            tracing::info!(channel = %rec.channel, "source left; channel closed");
            let members: Vec<NodeId> = ch.trees.members.keys().copied().collect();
            self.channels.remove(&rec.channel);
            for m in members {
                if m != node {
                    self.nodes.remove(&m);
                    out.send(m, Msg::Reject { reason: RejectReason::UnknownChannel });
                }
            }
            return;
        }
        ch.declared_bps = ch.declared_bps.saturating_sub(rec.declared_bps as u128);
        ch.declared_viewers = ch.declared_viewers.saturating_sub(1);
        let orphans = ch.trees.remove(node);
        for o in orphans {
            self.fill(&rec.channel, o);
            self.send_assignment(&rec.channel, o, false, out);
        }
    }

    fn on_bad_peer(&mut self, now: Time, from: NodeId, peer: NodeId, out: &mut Outbox) {
        let Some(channel) = self.nodes.get(&from).map(|r| r.channel.clone()) else { return };
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        // Logged in aggregate by the tick: a report per line would let one peer flood the log.
        tracing::debug!(accuser = %from, accused = %peer, "bad-piece report");
        self.reports.note(now, from, peer);
        let Some(m) = ch.trees.members.get_mut(&from) else { return };
        m.banned.insert(now, peer);
        self.banning.insert(from);
        for s in 0..ch.trees.stripes {
            if ch.trees.members.get(&from).is_some_and(|m| m.parents[s] == Some(peer)) {
                ch.trees.link(from, s, None);
            }
        }
        self.fill(&channel, from);
        self.send_assignment(&channel, from, false, out);
    }

    /// Credits each sender in `from`'s report with what `from` received from it. Only
    /// members of the same channel count (a stranger's bytes say nothing of its uplink).
    fn credit(&mut self, from: NodeId, report: &PeerReport) {
        let Some(channel) = self.nodes.get(&from).map(|r| r.channel.clone()) else { return };
        for &(sender, bytes) in &report.received {
            if sender == from {
                continue;
            }
            if let Some(rec) = self.nodes.get_mut(&sender).filter(|r| r.channel == channel) {
                rec.credited_bytes = rec.credited_bytes.saturating_add(bytes);
            }
        }
    }

    /// Updates a viewer's measured capacity from its heartbeat (optimizer only).
    fn measure(&mut self, now: Time, from: NodeId, report: &PeerReport) {
        if !matches!(self.cfg.policy, Policy::Chandelier { .. }) {
            return;
        }
        let Some(rec) = self.nodes.get_mut(&from) else { return };
        let Some(ch) = self.channels.get_mut(&rec.channel) else { return };
        if ch.trees.source == from {
            return;
        }
        let used = ch.trees.members.get(&from).map_or(0, |m| m.used_slots());
        // What children declined before the piece even reached it counts as carried: the
        // peer was asked for it, and only its own parent's lateness kept it from sending.
        let carried = rec.credited_bytes + report.bytes_excused;
        rec.capacity.report(now, carried, used, ch.descriptor.stripe_bps());
        ch.trees.set_slots(from, rec.capacity.slots);
    }

    /// Re-solves every channel whose turn has come (optimizer only).
    fn optimize(&mut self, now: Time, out: &mut Outbox) {
        let Policy::Chandelier { every } = self.cfg.policy else { return };
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            let Some(ch) = self.channels.get_mut(&name) else { continue };
            if ch.solved_at.is_some_and(|t| now.since(t) < every) {
                continue;
            }
            ch.solved_at = Some(now);
            let rendezvous = &self.rendezvous;
            let reach = |id: NodeId| rendezvous.reach(id);
            let mut chandelier = Chandelier::default();
            chandelier.weights.relay_new = ch.relayed_edges < relayed_edges_max(self.cfg.relay_bps, &ch.descriptor);
            let outcome = chandelier.solve(&mut ch.trees, reach, &mut self.rng);
            tracing::debug!(channel = %name, ?outcome, "optimizer solved");
            let mut changed = outcome.changed;
            changed.extend(self.trim_relayed_edges(&name));
            changed.sort_unstable();
            changed.dedup();
            for id in changed {
                self.send_assignment(&name, id, false, out);
            }
        }
    }

    /// Lifts bans past their time, visiting only members that have some.
    fn expire_bans(&mut self, now: Time) {
        let (nodes, channels) = (&self.nodes, &mut self.channels);
        self.banning.retain(|id| {
            let Some(rec) = nodes.get(id) else { return false };
            let Some(m) = channels.get_mut(&rec.channel).and_then(|ch| ch.trees.members.get_mut(id)) else {
                return false;
            };
            m.banned.expire(now);
            !m.banned.is_empty()
        });
    }

    fn tick(&mut self, now: Time, out: &mut Outbox) {
        self.optimize(now, out);
        if self.cfg.policy == Policy::Tree {
            // No solve recounts the relayed edges under the simple rule, so departures
            // would never be counted out: the tick does it.
            let names: Vec<String> = self.channels.keys().cloned().collect();
            for name in names {
                for id in self.trim_relayed_edges(&name) {
                    self.send_assignment(&name, id, false, out);
                }
            }
        }
        self.rendezvous.expire(now);
        self.expire_bans(now);
        if let Some(line) = self.reports.flush(now) {
            tracing::warn!("{line}");
        }
        let mut expired: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, r)| now.since(r.last_seen) > self.cfg.peer_timeout)
            .map(|(id, _)| *id)
            .collect();
        expired.sort();
        for id in expired {
            tracing::info!(peer = %id, "peer expired");
            self.drop_node(now, id, out);
        }
        // Members still missing a parent somewhere get another try (slots may have freed).
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for name in names {
            let waiting: Vec<NodeId> = self.channels[&name]
                .trees
                .members
                .iter()
                .filter(|(id, m)| **id != self.channels[&name].trees.source && m.parents.iter().any(|p| p.is_none()))
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                if self.fill(&name, id) {
                    self.send_assignment(&name, id, false, out);
                }
            }
        }
        out.set_timer(now + self.cfg.tick, TICK);
    }
}

impl Node for Tracker {
    fn on_start(&mut self, now: Time, out: &mut Outbox) {
        out.set_timer(now + self.cfg.tick, TICK);
    }

    fn on_message(&mut self, now: Time, from: NodeId, msg: Msg, out: &mut Outbox) {
        if let Some(r) = self.nodes.get_mut(&from) {
            r.last_seen = now;
        }
        match msg {
            Msg::Announce { descriptor, addr, upload_bps } => {
                if let Err(e) = descriptor.validate() {
                    out.send(from, Msg::Reject { reason: RejectReason::BadDescriptor(e.into()) });
                } else {
                    self.on_announce(now, from, *descriptor, addr, upload_bps, out);
                }
            }
            Msg::Join { channel, addr, upload_bps } => self.on_join(now, from, channel, addr, upload_bps, out),
            Msg::Heartbeat { report } => {
                self.credit(from, &report);
                self.measure(now, from, &report);
                if let Some(r) = self.nodes.get_mut(&from) {
                    r.report = *report;
                }
            }
            Msg::BadPeer { peer } => self.on_bad_peer(now, from, peer, out),
            Msg::Leave => self.drop_node(now, from, out),
            Msg::NatReport { report } => {
                // A peer reports its NAT before it joins, so that its join is filled with
                // parents and partners it can reach without the relay. The report is
                // dropped with the connection (`drop_node`), joined or not.
                self.rendezvous.report(from, *report);
                if let Some(channel) = self.nodes.get(&from).map(|r| r.channel.clone()) {
                    self.on_nat_known(&channel, from, out);
                }
            }
            Msg::Rendezvous { peer, offer, answer } => {
                if !self.nodes.contains_key(&from) {
                    tracing::debug!(peer = %from, "rendezvous from a peer that has not joined; ignored");
                } else {
                    let nodes = &self.nodes;
                    let addr_of = |n: NodeId| nodes.get(&n).map(|r| r.addr);
                    self.rendezvous.on_request(now, &mut self.rng, from, peer, *offer, answer, addr_of, out);
                }
            }
            other => tracing::debug!(peer = %from, ?other, "unexpected message at tracker ignored"),
        }
    }

    fn on_timer(&mut self, now: Time, timer: TimerId, out: &mut Outbox) {
        if timer == TICK {
            self.tick(now, out);
        }
    }

    fn on_disconnect(&mut self, now: Time, peer: NodeId, out: &mut Outbox) {
        self.drop_node(now, peer, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_grow_with_the_room_the_swarm_declares() {
        let bitrate = 2_000_000;
        // Uplinks at 8.6x the bitrate (the simulator's flash crowd): the largest slots.
        assert_eq!(slot_quarters(100 * 17_200_000, 100, bitrate), SLOT_QUARTERS_MAX);
        // 1.5x (tight uplinks): every bit of uplink is needed, the smallest.
        assert_eq!(slot_quarters(100 * 3_000_000, 100, bitrate), SLOT_QUARTERS_MIN);
        // In between, half the ratio: 4x the bitrate gives slots of 2x the stripe rate.
        assert_eq!(slot_quarters(100 * 8_000_000, 100, bitrate), 8);
        assert_eq!(slot_quarters(0, 0, bitrate), SLOT_QUARTERS_MIN);
    }

    fn descriptor() -> ChannelDescriptor {
        ChannelDescriptor {
            id: meshtv_proto::ids::ChannelId::derive(&[7; 32], "ch"),
            name: "ch".into(),
            broadcaster_key: [7; 32],
            container: meshtv_proto::media::Container::MpegTs,
            live: true,
            stripes: 4,
            piece_bytes: 65536,
            segment_duration_ms_target: 2000,
            bitrate_bps: 2_000_000,
        }
    }

    fn symmetric(id: u64) -> meshtv_proto::msg::NatReport {
        let addr: SocketAddr = format!("203.0.113.{id}:4000").parse().unwrap();
        meshtv_proto::msg::NatReport {
            reachability: meshtv_proto::nat::named("symmetric").unwrap(),
            classified: true,
            reflexive: addr,
            local: addr,
            port_step: 0,
            next_port: 4000,
        }
    }

    #[test]
    fn tree_edges_through_the_relay_stay_within_its_budget() {
        // Room on the relay for two tree edges at the stripe rate.
        let stripe_bps = 500_000;
        let cfg =
            TrackerConfig { policy: Policy::Tree, relay_bps: 2 * RELAY_TREE_SHARE * stripe_bps, ..Default::default() };
        let mut t = Tracker::new(cfg);
        t.rendezvous.relay = true;
        let mut out = Outbox::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        // The source feeds one copy (four stripes); every viewer is behind a symmetric
        // NAT, so viewers reach each other only through the relay.
        t.on_announce(Time::ZERO, NodeId(1), descriptor(), addr, 4 * stripe_bps, &mut out);
        for id in 2..=4 {
            t.on_join(Time::ZERO, NodeId(id), "ch".into(), addr, 40_000_000, &mut out);
            t.on_message(Time::ZERO, NodeId(id), Msg::NatReport { report: Box::new(symmetric(id)) }, &mut out);
        }
        let parents = |t: &Tracker, id| t.parents("ch", NodeId(id)).unwrap();
        assert!(parents(&t, 2).iter().all(|p| *p == Some(NodeId(1))), "the first viewer is fed by the source");
        let relayed: usize = (3..=4).map(|id| parents(&t, id).iter().flatten().count()).sum();
        assert_eq!(relayed, 2, "only two relayed edges: {:?} {:?}", parents(&t, 3), parents(&t, 4));
        // A viewer that leaves frees its edges at the next count (each tick under this
        // policy), and the tick's fill of members missing a parent uses them.
        t.drop_node(Time::ZERO, NodeId(3), &mut out);
        t.on_timer(Time::from_millis(500), TICK, &mut out);
        assert_eq!(parents(&t, 4).iter().flatten().count(), 2);
    }

    #[test]
    fn a_nat_reported_before_the_join_gets_partners_reached_without_the_relay() {
        let mut t = Tracker::new(TrackerConfig { policy: Policy::Tree, ..Default::default() });
        t.rendezvous.relay = true;
        let mut out = Outbox::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        t.on_announce(Time::ZERO, NodeId(1), descriptor(), addr, 8_000_000, &mut out);
        // Four viewers without a NAT and twelve behind symmetric NATs, which reach each
        // other only through the relay.
        for id in 2..=17 {
            if id > 5 {
                t.on_message(Time::ZERO, NodeId(id), Msg::NatReport { report: Box::new(symmetric(id)) }, &mut out);
            }
            t.on_join(Time::ZERO, NodeId(id), "ch".into(), addr, 40_000_000, &mut out);
        }
        // A symmetric newcomer reports first, as peers do: all four partners are the ones
        // it reaches directly.
        let newcomer = NodeId(40);
        let mut out = Outbox::default();
        t.on_message(Time::ZERO, newcomer, Msg::NatReport { report: Box::new(symmetric(40)) }, &mut out);
        t.on_join(Time::ZERO, newcomer, "ch".into(), addr, 40_000_000, &mut out);
        let partners: Vec<NodeId> = out
            .sends
            .iter()
            .find_map(|(to, m)| match m {
                Msg::Assign { partners, .. } if *to == newcomer => Some(partners.iter().map(|p| p.id).collect()),
                _ => None,
            })
            .expect("the join is answered with an assignment");
        let mut sorted = partners.clone();
        sorted.sort();
        assert_eq!(sorted, (2..=5).map(NodeId).collect::<Vec<_>>(), "partners {partners:?}");
        // The report goes with the connection, joined or not.
        t.on_message(Time::ZERO, NodeId(50), Msg::NatReport { report: Box::new(symmetric(50)) }, &mut out);
        t.on_disconnect(Time::ZERO, NodeId(50), &mut out);
        assert!(t.rendezvous.nat(NodeId(50)).is_none());
    }

    #[test]
    fn a_viewer_that_leaves_or_joins_again_is_counted_once() {
        let mut t = Tracker::new(TrackerConfig { policy: Policy::Tree, ..Default::default() });
        let mut out = Outbox::default();
        let d = descriptor();
        let now = Time::ZERO;
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let source = NodeId(1);
        t.on_announce(now, source, d, addr, 8_000_000, &mut out);
        for id in 2..12 {
            t.on_join(now, NodeId(id), "ch".into(), addr, 40_000_000, &mut out);
        }
        t.on_join(now, NodeId(2), "ch".into(), addr, 40_000_000, &mut out);
        let ch = &t.channels["ch"];
        assert_eq!((ch.declared_viewers, ch.declared_bps), (10, 400_000_000));
        t.drop_node(now, NodeId(3), &mut out);
        let ch = &t.channels["ch"];
        assert_eq!((ch.declared_viewers, ch.declared_bps), (9, 360_000_000));
        // A 40 Mbit/s viewer among its peers (20x the bitrate) offers 3x slots: 40 / 1.5 = 26.
        let m = &ch.trees.members[&NodeId(4)];
        assert_eq!(m.slots, 26);
    }

    #[test]
    fn pushes_children_declined_before_the_piece_came_count_as_carried() {
        // One viewer (2) carries another (3) in all four stripes: 2 Mbit/s asked of it.
        // It uploads only a quarter of that; the rest its child declined (`Skip`) before
        // the pieces reached it, because its own parent was late.
        let slots_after = |excused_share: u64| {
            let mut t = Tracker::new(TrackerConfig::default());
            let mut out = Outbox::default();
            let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
            t.on_announce(Time::ZERO, NodeId(1), descriptor(), addr, 2_000_000, &mut out);
            t.on_join(Time::ZERO, NodeId(2), "ch".into(), addr, 40_000_000, &mut out);
            t.on_join(Time::ZERO, NodeId(3), "ch".into(), addr, 40_000_000, &mut out);
            assert!(t.parents("ch", NodeId(3)).unwrap().iter().all(|p| *p == Some(NodeId(2))));
            let asked_per_s = 2_000_000 / 8;
            for s in 1..=12u64 {
                let now = Time::from_millis(s * 1000);
                // The child reports what it received from its parent; the parent, only
                // what was excused (and a claim of its upload, which counts for nothing).
                let child = PeerReport { received: vec![(NodeId(2), asked_per_s / 4)], ..Default::default() };
                t.on_message(now, NodeId(3), Msg::Heartbeat { report: Box::new(child) }, &mut out);
                let report = PeerReport {
                    bytes_uploaded: s * asked_per_s * 4,
                    bytes_excused: s * asked_per_s * excused_share / 4,
                    ..Default::default()
                };
                t.on_message(now, NodeId(2), Msg::Heartbeat { report: Box::new(report) }, &mut out);
            }
            t.channels["ch"].trees.members[&NodeId(2)].slots
        };
        assert!(slots_after(3) >= 4, "declined before it had the pieces: not its fault");
        assert_eq!(
            slots_after(0),
            1,
            "its child got a quarter of what was asked, with nothing excused: it cannot carry more, whatever it claims"
        );
    }

    #[test]
    fn bad_peer_reports_are_bounded_expire_and_are_counted() {
        use crate::assignment::{BANS_PER_MEMBER_MAX, BAN_TTL};
        // Peers that outlive their bans (no heartbeats in this test).
        let peer_timeout = BAN_TTL * 2;
        let mut t = Tracker::new(TrackerConfig { policy: Policy::Tree, peer_timeout, ..Default::default() });
        let mut out = Outbox::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        t.on_announce(Time::ZERO, NodeId(1), descriptor(), addr, 8_000_000, &mut out);
        t.on_join(Time::ZERO, NodeId(2), "ch".into(), addr, 40_000_000, &mut out);
        t.on_join(Time::ZERO, NodeId(3), "ch".into(), addr, 40_000_000, &mut out);
        let banned = |t: &Tracker, id| t.channels["ch"].trees.members[&NodeId(id)].banned.clone();
        // An honest report, then a flood of made-up ids from the same member: the set
        // stays bounded (the oldest bans giving way) and the real culprit, reported again
        // and again, stays banned. Only the flooding member's own bans are at stake.
        t.on_message(Time::ZERO, NodeId(2), Msg::BadPeer { peer: NodeId(3) }, &mut out);
        for i in 0..10_000u64 {
            let now = Time::from_millis(i);
            t.on_message(now, NodeId(2), Msg::BadPeer { peer: NodeId(1_000 + i) }, &mut out);
            if i % 10 == 0 {
                t.on_message(now, NodeId(2), Msg::BadPeer { peer: NodeId(3) }, &mut out);
            }
        }
        let b = banned(&t, 2);
        assert_eq!(b.len(), BANS_PER_MEMBER_MAX);
        assert!(b.contains(&NodeId(3)) && b.contains(&NodeId(10_999)) && !b.contains(&NodeId(1_000)));
        assert_eq!(t.bad_peer_reports(), 11_001);
        // Bans are lifted once they are old enough, and the member is no longer visited.
        t.on_timer(Time::from_millis(9_999) + BAN_TTL - Duration::from_secs(1), TICK, &mut out);
        assert_eq!(banned(&t, 2).len(), BANS_PER_MEMBER_MAX, "not yet");
        t.on_timer(Time::from_millis(10_000) + BAN_TTL, TICK, &mut out);
        assert!(banned(&t, 2).is_empty());
        assert!(t.banning.is_empty());
        // Reports from a peer that is not a member change nothing.
        t.on_message(Time::ZERO, NodeId(99), Msg::BadPeer { peer: NodeId(3) }, &mut out);
        assert_eq!(t.bad_peer_reports(), 11_001);
    }
}
