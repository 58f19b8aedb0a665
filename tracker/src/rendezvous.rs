//! Rendezvous: the tracker's decisions on how two peers connect, from the pair of their
//! NAT types (the pair rule in `meshtv_proto::nat`, which the simulator uses too).
//!
//! A peer asks to be connected to another (`Msg::Rendezvous`, with an offer: where its
//! packets toward the other will come from). The tracker decides, for the pair:
//! - whether they connect directly or only through the relay (the pair rule);
//! - which side opens QUIC (the *dialer*): a NAT'd side toward an open one; between two
//!   NATs, the side whose port is harder to predict (random, then sequential, then
//!   endpoint-independent mapping), so that the other side, which can aim, opens its NAT
//!   toward it; a tie goes to the lower node id, so both sides' plans always agree;
//! - where each side punches (`Plan::targets`): the other's reflexive address, or a window
//!   of its predicted ports when its NAT allocates them in sequence.
//!
//! A NAT'd peer's offer is needed before the other side can aim at it, so the other side
//! is introduced first (`Introduce { reply: true }`), punches at once and answers with its
//! own offer, and then the asker gets its plan. Pairs the rule sends through the relay go
//! there at once, without troubling the other side. Every plan with a dialer also names
//! the relay as the fallback when the direct attempt runs out of time.

use meshtv_proto::msg::{NatReport, Offer, Plan};
use meshtv_proto::nat::{self, Allocation, Mapping, Path, Reachability};
use meshtv_proto::{Msg, NodeId, Outbox, Time};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// Predicted ports a side punches toward when the other side's NAT allocates in sequence.
pub const WINDOW_PORTS: u16 = 16;
/// How long a rendezvous is remembered (a second request for the pair reuses it).
const SESSION_TTL: Duration = Duration::from_secs(10);
/// Rendezvous remembered at once; beyond this, requests are turned down.
const SESSIONS_MAX: usize = 100_000;

pub struct Rendezvous {
    /// Whether pairs that cannot connect directly may use this tracker as a relay.
    pub relay: bool,
    /// How long a plan tries directly before falling back to the relay.
    pub direct_ms: u32,
    reports: BTreeMap<NodeId, NatReport>,
    sessions: BTreeMap<(NodeId, NodeId), Session>,
    /// Sessions in the order they started, which is the order they expire in: the
    /// tracker's every tick expires from the front instead of walking every session (at
    /// 10^5 simulated peers that walk was 1.5% of the run). An entry whose session has
    /// gone, or was started anew, is passed over.
    by_start: VecDeque<(Time, (NodeId, NodeId))>,
}

struct Session {
    token: u64,
    started: Time,
    offers: BTreeMap<NodeId, Offer>,
    /// Sides already sent their plan.
    planned: BTreeSet<NodeId>,
}

impl Default for Rendezvous {
    fn default() -> Self {
        Rendezvous {
            relay: true,
            direct_ms: 2000,
            reports: BTreeMap::new(),
            sessions: BTreeMap::new(),
            by_start: VecDeque::new(),
        }
    }
}

/// How hard a NAT's external port is to predict (higher: harder).
fn rank(r: Option<&NatReport>) -> u8 {
    match r.map(|r| r.reachability) {
        Some(Reachability::Nat(t)) if t.mapping != Mapping::EndpointIndependent => match t.allocation {
            Allocation::Random => 3,
            _ => 2,
        },
        Some(Reachability::Nat(_)) => 1,
        _ => 0,
    }
}

fn behind_nat(r: Option<&NatReport>) -> bool {
    matches!(r.map(|r| r.reachability), Some(Reachability::Nat(_)))
}

impl Rendezvous {
    pub fn report(&mut self, node: NodeId, report: NatReport) {
        tracing::info!(peer = %node, nat = %report.kind(), reflexive = %report.reflexive, "NAT report");
        self.reports.insert(node, report);
    }

    pub fn nat(&self, node: NodeId) -> Option<&NatReport> {
        self.reports.get(&node)
    }

    pub fn forget(&mut self, node: NodeId) {
        self.reports.remove(&node);
        self.sessions.retain(|(a, b), _| *a != node && *b != node);
    }

    pub fn expire(&mut self, now: Time) {
        while let Some(&(started, key)) = self.by_start.front() {
            if now.since(started) < SESSION_TTL {
                break;
            }
            self.by_start.pop_front();
            if self.sessions.get(&key).is_some_and(|s| s.started == started) {
                self.sessions.remove(&key);
            }
        }
    }

    /// Which of `a` and `b` opens the QUIC connection.
    pub fn dialer(&self, a: NodeId, b: NodeId) -> NodeId {
        let (ra, rb) = (self.reports.get(&a), self.reports.get(&b));
        match (behind_nat(ra), behind_nat(rb)) {
            (true, false) => a,
            (false, true) => b,
            _ => match rank(ra).cmp(&rank(rb)) {
                std::cmp::Ordering::Greater => a,
                std::cmp::Ordering::Less => b,
                std::cmp::Ordering::Equal => a.min(b),
            },
        }
    }

    /// A node's NAT situation as reported (unknown counts as open: dialed as before).
    pub fn reach(&self, node: NodeId) -> Reachability {
        self.reports.get(&node).map_or(Reachability::Open, |r| r.reachability)
    }

    /// How `a` and `b` can connect.
    pub fn path(&self, a: NodeId, b: NodeId) -> Path {
        nat::traversal(self.reach(a), self.reach(b))
    }

    /// Whether `a` and `b` connect without the relay.
    pub fn direct(&self, a: NodeId, b: NodeId) -> bool {
        self.path(a, b) == Path::Direct
    }

    /// A peer's request (`answer` false) or answer (`answer` true). `addr_of` gives the
    /// address a node announced, for nodes without a NAT report.
    #[allow(clippy::too_many_arguments)]
    pub fn on_request(
        &mut self,
        now: Time,
        rng: &mut impl Rng,
        from: NodeId,
        peer: NodeId,
        offer: Offer,
        answer: bool,
        addr_of: impl Fn(NodeId) -> Option<SocketAddr>,
        out: &mut Outbox,
    ) {
        let Some(peer_addr) = addr_of(peer) else {
            tracing::info!(%from, %peer, "rendezvous with an unknown peer refused");
            out.send(from, Msg::Introduce { peer, plan: Box::new(Plan::unreachable()), reply: false });
            return;
        };
        let key = (from.min(peer), from.max(peer));
        if !self.sessions.contains_key(&key) {
            if answer {
                tracing::debug!(%from, %peer, "answer to a rendezvous that is over; ignored");
                return;
            }
            if self.sessions.len() >= SESSIONS_MAX {
                tracing::warn!(%from, %peer, "too many rendezvous under way; refused");
                out.send(from, Msg::Introduce { peer, plan: Box::new(Plan::unreachable()), reply: false });
                return;
            }
            let token = rng.gen::<u64>().max(1);
            self.sessions
                .insert(key, Session { token, started: now, offers: BTreeMap::new(), planned: BTreeSet::new() });
            self.by_start.push_back((now, key));
        }
        let path = self.path(from, peer);
        let dialer = self.dialer(from, peer);
        let relay = self.relay.then_some(NodeId::TRACKER);
        let direct_ms = self.direct_ms;
        let peer_report = self.reports.get(&peer).cloned();
        let from_report = self.reports.get(&from).cloned();
        let session = self.sessions.get_mut(&key).expect("inserted above");
        let token = session.token;
        session.offers.insert(from, offer);

        if path == Path::Relay || path == Path::None {
            // Punching cannot work for this pair: the asker goes through the relay at once.
            if !answer && session.planned.insert(from) {
                let plan = match (path, relay) {
                    (Path::Relay, Some(relay)) => {
                        Plan { token, targets: Vec::new(), dial: true, punch: false, direct_ms: 0, relay: Some(relay) }
                    }
                    _ => Plan::unreachable(),
                };
                out.send(from, Msg::Introduce { peer, plan: Box::new(plan), reply: false });
            }
            return;
        }
        if !behind_nat(peer_report.as_ref()) {
            // The other side is open (or of unknown NAT): aim at where it said it is.
            let target = peer_report.as_ref().map_or(peer_addr, |r| r.reflexive);
            if session.planned.insert(from) {
                let plan = Plan { token, targets: vec![target], dial: true, punch: false, direct_ms, relay };
                out.send(from, Msg::Introduce { peer, plan: Box::new(plan), reply: false });
            }
            return;
        }
        // Both sides must act: each gets a plan aimed from the other's offer.
        let offers = session.offers.clone();
        for (side, other) in [(peer, from), (from, peer)] {
            let Some(other_offer) = offers.get(&other) else { continue };
            if session.planned.contains(&side) {
                continue;
            }
            let (other_report, side_report) = if other == peer {
                (peer_report.as_ref(), from_report.as_ref())
            } else {
                (from_report.as_ref(), peer_report.as_ref())
            };
            let same = same_nat(from_report.as_ref(), peer_report.as_ref());
            // Stepping two ports at a time only pays when this side's own new mappings move too.
            let stride = if side == dialer || !sequential(side_report) { 1 } else { 2 };
            let targets = aim(other_offer, other_report, stride, same);
            let dials = side == dialer;
            let plan = Plan {
                token,
                targets,
                dial: dials,
                punch: behind_nat(other_report),
                direct_ms,
                relay: if dials { relay } else { None },
            };
            let reply = !offers.contains_key(&side);
            session.planned.insert(side);
            out.send(side, Msg::Introduce { peer: other, plan: Box::new(plan), reply });
        }
    }
}

/// A NAT that gives each new destination a new mapping, with ports in sequence.
fn sequential(r: Option<&NatReport>) -> bool {
    matches!(r.map(|r| r.reachability), Some(Reachability::Nat(t))
        if t.mapping != Mapping::EndpointIndependent && t.allocation == Allocation::Sequential)
}

/// Two peers behind the same public IP (one NAT): their local addresses are worth a try.
fn same_nat(a: Option<&NatReport>, b: Option<&NatReport>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => behind_nat(Some(a)) && a.reflexive.ip() == b.reflexive.ip(),
        _ => false,
    }
}

/// Where to punch toward a side with this offer and NAT. A sequential allocator's next
/// port is a guess (other flows may have taken ports since the offer), so a window of
/// ports above it is tried, one port at a time (`stride` 1). When both sides allocate in
/// sequence, every target is a new mapping of the aiming side too: then the dialer steps one
/// port at a time and the other side two, so that one of the dialer's new mappings and one
/// of the other side's meet whatever the two guesses missed by (up to a few ports each).
fn aim(offer: &Offer, report: Option<&NatReport>, stride: u16, same_nat: bool) -> Vec<SocketAddr> {
    let mut targets = Vec::new();
    if same_nat {
        targets.push(offer.local);
    }
    match report.map(|r| (r.reachability, r.port_step)) {
        Some((_, step)) if sequential(report) => {
            let stride = stride * step.max(1);
            let base = offer.external.port();
            for i in 0..WINDOW_PORTS {
                let port = base.wrapping_add(stride.wrapping_mul(i));
                if port != 0 {
                    targets.push(SocketAddr::new(offer.external.ip(), port));
                }
            }
        }
        _ => targets.push(offer.external),
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn report(name: &str, ip: &str, port: u16) -> NatReport {
        let reflexive: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let sequential = name == "symmetric-sequential";
        NatReport {
            reachability: nat::named(name).unwrap(),
            classified: true,
            reflexive,
            local: "10.0.0.2:5000".parse().unwrap(),
            port_step: if sequential { 1 } else { 0 },
            next_port: port + 1,
        }
    }

    fn offer(r: &NatReport) -> Offer {
        Offer { local: r.local, external: r.reflexive }
    }

    fn plans(out: &Outbox) -> Vec<(NodeId, NodeId, Plan, bool)> {
        out.sends
            .iter()
            .filter_map(|(to, m)| match m {
                Msg::Introduce { peer, plan, reply } => Some((*to, *peer, (**plan).clone(), *reply)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn sessions_expire_after_their_ttl_and_a_session_started_anew_keeps_its_own() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let addr = |_| Some("1.2.3.4:5".parse().unwrap());
        let mut r = Rendezvous::default();
        for n in 1..=4 {
            r.report(NodeId(n), report("full-cone", "203.0.113.1", 4000 + n as u16));
        }
        let ask = |r: &mut Rendezvous, rng: &mut rand_chacha::ChaCha8Rng, at: f64, a: u64, b: u64| {
            let mut out = Outbox::default();
            let ra = r.reports[&NodeId(a)].clone();
            r.on_request(Time::from_secs_f64(at), rng, NodeId(a), NodeId(b), offer(&ra), false, addr, &mut out);
        };
        ask(&mut r, &mut rng, 0.0, 1, 2);
        ask(&mut r, &mut rng, 4.0, 3, 4);
        // Node 1 goes and comes back: its pair starts anew at 8 s.
        r.forget(NodeId(1));
        r.report(NodeId(1), report("full-cone", "203.0.113.1", 4001));
        ask(&mut r, &mut rng, 8.0, 1, 2);
        r.expire(Time::from_secs_f64(10.0));
        assert_eq!(r.sessions.len(), 2, "the first (1, 2) entry must not expire the new session");
        r.expire(Time::from_secs_f64(14.0));
        assert_eq!(r.sessions.keys().copied().collect::<Vec<_>>(), [(NodeId(1), NodeId(2))]);
        r.expire(Time::from_secs_f64(18.0));
        assert!(r.sessions.is_empty() && r.by_start.is_empty());
    }

    #[test]
    fn both_sides_get_agreeing_plans_and_relay_pairs_skip_punching() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (a, b) = (NodeId(5), NodeId(9));
        let addr = |_| Some("1.2.3.4:5".parse().unwrap());
        // Full cone asks for a symmetric peer: the symmetric side dials.
        let mut r = Rendezvous::default();
        let (ra, rb) = (report("full-cone", "203.0.113.1", 4000), report("symmetric", "203.0.113.2", 5000));
        r.report(a, ra.clone());
        r.report(b, rb.clone());
        let mut out = Outbox::default();
        r.on_request(Time::ZERO, &mut rng, a, b, offer(&ra), false, addr, &mut out);
        let p = plans(&out);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].0, p[0].1, p[0].3), (b, a, true));
        assert!(p[0].2.dial && p[0].2.punch && p[0].2.targets == vec![ra.reflexive]);
        let mut out = Outbox::default();
        r.on_request(Time::ZERO, &mut rng, b, a, offer(&rb), true, addr, &mut out);
        let q = plans(&out);
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].0, q[0].1, q[0].3), (a, b, false));
        assert!(!q[0].2.dial && q[0].2.token == p[0].2.token && q[0].2.relay.is_none());

        // Port-restricted cone and symmetric: the relay, at once, without the other side.
        let mut r = Rendezvous::default();
        let ra = report("port-restricted-cone", "203.0.113.1", 4000);
        r.report(a, ra.clone());
        r.report(b, rb.clone());
        let mut out = Outbox::default();
        r.on_request(Time::ZERO, &mut rng, a, b, offer(&ra), false, addr, &mut out);
        let p = plans(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, a);
        assert_eq!(p[0].2.relay, Some(NodeId::TRACKER));
        assert!(p[0].2.dial && p[0].2.direct_ms == 0);

        // Two sequential allocators: windows of predicted ports, strides 1 and 2.
        let mut r = Rendezvous::default();
        let (ra, rb) = (
            report("symmetric-sequential", "203.0.113.1", 30000),
            report("symmetric-sequential", "203.0.113.2", 40000),
        );
        r.report(a, ra.clone());
        r.report(b, rb.clone());
        let mut out = Outbox::default();
        r.on_request(Time::ZERO, &mut rng, b, a, offer(&rb), false, addr, &mut out);
        let p = plans(&out);
        assert_eq!(p[0].0, a, "a, the lower id, dials");
        assert!(p[0].2.dial);
        assert_eq!(p[0].2.targets[1].port(), 40001);
        let mut out = Outbox::default();
        r.on_request(Time::ZERO, &mut rng, a, b, offer(&ra), true, addr, &mut out);
        let q = plans(&out);
        assert_eq!(q[0].2.targets[1].port(), 30002);
        assert_eq!(q[0].2.targets.len(), WINDOW_PORTS as usize);
    }

    #[test]
    fn unknown_peers_and_stale_answers_change_nothing() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut r = Rendezvous::default();
        let ra = report("full-cone", "203.0.113.1", 4000);
        r.report(NodeId(1), ra.clone());
        let mut out = Outbox::default();
        r.on_request(Time::ZERO, &mut rng, NodeId(1), NodeId(2), offer(&ra), false, |_| None, &mut out);
        assert_eq!(plans(&out)[0].2, Plan::unreachable());
        let mut out = Outbox::default();
        r.on_request(
            Time::ZERO,
            &mut rng,
            NodeId(1),
            NodeId(3),
            offer(&ra),
            true,
            |_| Some("1.1.1.1:1".parse().unwrap()),
            &mut out,
        );
        assert!(out.sends.is_empty());
        assert!(r.sessions.is_empty());
    }
}
