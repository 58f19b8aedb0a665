//! The driver: one event loop per node that feeds a core time, messages and timer firings,
//! and carries out what the core puts in its outbox.
//!
//! The loop waits on one thing at a time (a connection event, a command, an incoming
//! connection, the next timer, shutdown), makes at most a few core calls for it, and
//! carries out each outbox without waiting: writes go to per-connection queues, dials and
//! handshakes run in their own tasks and report back as events.

use crate::clock;
use crate::connection::{self, Event, ToLoop, CLOSE_PROTOCOL, CLOSE_SHUTDOWN};
use crate::endpoint;
use crate::links::{Link, LinkState, Links};
use crate::punch;
use crate::socket::{self, RelayLimits, Side, StunServer};
use crate::stats::{bump, ConnectionStats, TransportStats};
use crate::timers::Timers;
use meshtv_proto::msg::{NatReport, PeerInfo, Plan};
use meshtv_proto::{Msg, Node, NodeId, Outbox, PieceAck, Time};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Commands waiting for the loop (media ingest produces a few per segment).
const COMMANDS_MAX: usize = 1024;
/// Connection events waiting for the loop; readers wait when it is full, which pushes back
/// on the peers through QUIC flow control instead of growing memory.
const EVENTS_MAX: usize = 4096;
/// Timer firings per wake-up, so that a core re-arming a timer in the past cannot starve
/// the network.
const TIMER_FIRINGS_PER_WAKE_MAX: usize = 1024;
/// How long shutdown waits for connections to close cleanly.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// This node's id (a tracker is `NodeId::TRACKER`).
    pub id: NodeId,
    /// The UDP address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// For peers: the tracker, dialed as `NodeId::TRACKER` before the core starts.
    pub tracker: Option<SocketAddr>,
    /// Bound on a dial (QUIC handshake and hello) and on an incoming hello.
    pub connect_timeout: Duration,
}

impl DriverConfig {
    /// A node with no tracker and a 5 s connect timeout.
    pub fn new(id: NodeId, bind: SocketAddr) -> DriverConfig {
        DriverConfig { id, bind, tracker: None, connect_timeout: Duration::from_secs(5) }
    }
}

/// A command run against the core inside the driver's loop, with the driver's `now` and an
/// outbox the driver then carries out. This is how outside producers (the media ingest of
/// a source) feed the core.
pub type Command<C> = Box<dyn FnOnce(&mut C, Time, &mut Outbox) + Send>;

/// Runs one core over QUIC. Build with [`Driver::bind`], then [`Driver::run`].
pub struct Driver<C> {
    cfg: DriverConfig,
    core: Arc<Mutex<C>>,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    stats: Arc<TransportStats>,
    side: Arc<Side>,
    commands_tx: mpsc::Sender<Command<C>>,
    commands_rx: mpsc::Receiver<Command<C>>,
}

impl<C: Node + Send + 'static> Driver<C> {
    /// Binds the UDP socket and the QUIC endpoint (with a fresh TLS identity). Fails with
    /// an error naming the address if it is busy.
    ///
    /// The core is shared because the HTTP gateway reads a peer's buffer between events;
    /// the driver locks it for one core call at a time, never across an await.
    pub async fn bind(cfg: DriverConfig, core: Arc<Mutex<C>>) -> anyhow::Result<Driver<C>> {
        let stats: Arc<TransportStats> = Arc::default();
        let (endpoint, side) = endpoint::bind(cfg.bind, cfg.id, stats.clone())?;
        if let Some(tracker) = cfg.tracker {
            side.trust_relay(tracker);
        }
        let local_addr = endpoint.local_addr()?;
        let (commands_tx, commands_rx) = mpsc::channel(COMMANDS_MAX);
        Ok(Driver { cfg, core, endpoint, local_addr, stats, side, commands_tx, commands_rx })
    }

    /// Answers STUN Binding requests on the QUIC port and, given `alternate` (another IP
    /// of this host and another port), on the three more addresses RFC 5780's tests need:
    /// the alternate IP and port, the alternate IP with the QUIC port, and the QUIC IP with
    /// the alternate port (only the last when `alternate` has the QUIC IP).
    pub async fn serve_stun(&self, alternate: Option<SocketAddr>) -> anyhow::Result<()> {
        let primary = self.local_addr;
        let mut alternates = HashMap::new();
        if let Some(alt) = alternate {
            if primary.ip().is_unspecified() || alt.ip().is_unspecified() {
                anyhow::bail!("a second STUN address needs the tracker to listen on one IP, not {}", primary.ip());
            }
            if alt.port() == primary.port() {
                anyhow::bail!("the second STUN address needs a port other than {}", primary.port());
            }
            let mut want = vec![((false, true), SocketAddr::new(primary.ip(), alt.port()))];
            if alt.ip() != primary.ip() {
                want.push(((true, true), alt));
                want.push(((true, false), SocketAddr::new(alt.ip(), primary.port())));
            }
            for (key, addr) in want {
                let socket = tokio::net::UdpSocket::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot bind the STUN address {addr}: {e}"))?;
                alternates.insert(key, Arc::new(socket));
            }
        }
        for (key, socket) in &alternates {
            tokio::spawn(socket::serve_alternate(self.side.clone(), socket.clone(), *key));
        }
        self.side.set_stun_server(StunServer { primary, alternates });
        Ok(())
    }

    /// Relays QUIC datagrams between pairs of connected nodes that a core's plans allow,
    /// within `limits`.
    pub fn serve_relay(&self, limits: RelayLimits) {
        self.side.serve_relay(limits);
    }

    /// Classifies this node's NAT with STUN against the tracker's addresses, on the socket
    /// QUIC uses (see `discover`). `None` when the tracker does not answer STUN. Takes
    /// about a second at most.
    pub async fn discover_nat(&self, tracker: SocketAddr) -> Option<NatReport> {
        crate::discover::discover(&self.side, tracker).await
    }

    /// The address the node is reachable at (with the port picked when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where to send [`Command`]s; usable before and during [`Driver::run`].
    pub fn commands(&self) -> mpsc::Sender<Command<C>> {
        self.commands_tx.clone()
    }

    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    /// Dials the tracker if there is one (failing with "tracker unreachable at ADDR: …" if
    /// it does not answer within the connect timeout), starts the core, and runs until
    /// `shutdown` resolves; then closes every connection, waiting at most about a second.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Driver { cfg, core, endpoint, stats, side, commands_tx, commands_rx, .. } = self;
        // Commands come from the handles given out; ours must not keep the queue open.
        drop(commands_tx);
        let (events_tx, events_rx) = mpsc::channel(EVENTS_MAX);
        let mut node = EventLoop {
            id: cfg.id,
            tracker: cfg.tracker,
            connect_timeout: cfg.connect_timeout,
            core,
            endpoint: endpoint.clone(),
            links: Links::default(),
            timers: Timers::default(),
            to_loop: ToLoop { events: events_tx, stats },
            side,
            routes: HashMap::new(),
            waiting: HashMap::new(),
        };
        if let Some(addr) = cfg.tracker {
            node.connect_tracker(addr).await?;
        }
        node.call(|core, now, out| core.on_start(now, out));
        node.run(shutdown, events_rx, commands_rx).await;

        for link in node.links.all_mut() {
            link.close();
        }
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, endpoint.wait_idle()).await;
        endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
        Ok(())
    }
}

/// What woke the loop.
enum Input<C> {
    Event(Event),
    Command(Command<C>),
    Incoming(Box<quinn::Incoming>),
    Timers,
    Shutdown,
}

struct EventLoop<C> {
    id: NodeId,
    tracker: Option<SocketAddr>,
    connect_timeout: Duration,
    core: Arc<Mutex<C>>,
    endpoint: quinn::Endpoint,
    links: Links,
    timers: Timers,
    to_loop: ToLoop,
    side: Arc<Side>,
    /// Rendezvous plans being carried out, per peer.
    routes: HashMap<NodeId, Route>,
    /// Rendezvous asked of the tracker whose plan has not come yet: dials to these peers wait.
    waiting: HashMap<NodeId, tokio::time::Instant>,
}

/// A plan being carried out for one peer (see `punch`).
struct Route {
    token: u64,
    started: tokio::time::Instant,
    attempts: Arc<AtomicU32>,
    /// Dropped to stop the punch task (the connection came up, or a new plan replaced it).
    _cancel: oneshot::Sender<()>,
}

impl<C: Node + Send + 'static> EventLoop<C> {
    async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut events: mpsc::Receiver<Event>,
        mut commands: mpsc::Receiver<Command<C>>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let wake = self.timers.next().map(clock::instant_of);
            let input = tokio::select! {
                () = &mut shutdown => Input::Shutdown,
                Some(event) = events.recv() => Input::Event(event),
                Some(command) = commands.recv() => Input::Command(command),
                Some(incoming) = self.endpoint.accept() => Input::Incoming(Box::new(incoming)),
                () = sleep_until(wake) => Input::Timers,
            };
            match input {
                Input::Event(event) => self.on_event(event),
                Input::Command(command) => self.call(command),
                Input::Incoming(incoming) => self.accept(*incoming),
                Input::Timers => self.fire_timers(),
                Input::Shutdown => return,
            }
        }
    }

    /// One core call, then its outbox carried out. The lock is held for the call only.
    fn call(&mut self, f: impl FnOnce(&mut C, Time, &mut Outbox)) {
        let mut out = Outbox::default();
        {
            // A core that panicked mid-call is in a state nobody can trust: crash too.
            let mut core = self.core.lock().expect("the core panicked in an earlier call");
            f(&mut core, clock::now(), &mut out);
        }
        self.carry_out(out);
    }

    /// Never calls the core (dial failures and the like come back as events), so a core
    /// call is never re-entered.
    fn carry_out(&mut self, out: Outbox) {
        let Outbox { sends, dials, closes, timers } = out;
        for (at, id) in timers {
            self.timers.set(at, id);
        }
        // A rendezvous asked of the tracker: dials to that peer wait for its plan.
        for (to, msg) in &sends {
            if let (true, Msg::Rendezvous { peer, answer: false, .. }) = (*to == NodeId::TRACKER, msg) {
                self.await_plan(*peer);
            }
        }
        // Dials first, so that messages to a node being dialed wait for it; closes last,
        // so that a goodbye sent with a close is written before the connection goes.
        for peer in dials {
            self.dial(peer);
        }
        for (to, msg) in sends {
            self.send(to, msg);
        }
        for peer in closes {
            self.close(peer);
        }
    }

    fn send(&mut self, to: NodeId, msg: Msg) {
        // A tracker's plan that sends `to` through this node as a relay: allow the pair.
        if let Msg::Introduce { peer, plan, .. } = &msg {
            if plan.relay == Some(NodeId::TRACKER) && self.id == NodeId::TRACKER {
                self.side.grant_relay(to, *peer);
            }
        }
        let piece = match &msg {
            Msg::Piece { seq, index, .. } => Some((*seq, *index)),
            _ => None,
        };
        let (sent, why) = match self.links.current(to) {
            Some(link) => (link.try_send(msg), "its send queue is full"),
            None => (self.links.queue(to, msg), "there is no connection to it"),
        };
        if !sent {
            bump(&self.to_loop.stats.messages_dropped, 1);
            debug!(peer = %to, why, "message dropped");
            self.report_lost(to, &[piece]);
        }
    }

    /// Pieces that never reached a connection's writer: the core hears they are lost (as an
    /// event, since carrying out an outbox never calls the core).
    fn report_lost(&self, peer: NodeId, pieces: &[Option<(u64, u16)>]) {
        for &(seq, index) in pieces.iter().flatten() {
            let lost = Event::PieceAcked { peer, seq, index, delivered: false, rtt: Duration::ZERO };
            // A full queue loses the report; the core's own timeout then takes the piece out.
            let _ = self.to_loop.events.try_send(lost);
        }
    }

    fn dial(&mut self, peer: PeerInfo) {
        if peer.id == self.id {
            warn!(addr = %peer.addr, "the core asked to dial this node itself; ignored");
            return;
        }
        if self.links.is_connected(peer.id) || self.links.dialing(peer.id) {
            return;
        }
        self.links.start_dial(peer.id);
        bump(&self.to_loop.stats.dials_started, 1);
        if self.waiting.contains_key(&peer.id) || self.routes.contains_key(&peer.id) {
            // A rendezvous brings this connection; messages wait for it.
            self.links.route_dial(peer.id);
            return;
        }
        let (endpoint, to_loop, local, timeout) =
            (self.endpoint.clone(), self.to_loop.clone(), self.id, self.connect_timeout);
        tokio::spawn(async move {
            match connection::dial(&endpoint, peer.addr, local, timeout).await {
                Ok(hs) => connection::serve(hs, peer.id, true, to_loop).await,
                Err(e) => {
                    let error = format!("{e:#}");
                    let _ = to_loop.events.send(Event::DialFailed { peer: peer.id, error }).await;
                }
            }
        });
    }

    /// Closes every connection to `peer`; the core hears `on_disconnect` when the last
    /// one is gone, as for any other end of a connection.
    fn close(&mut self, peer: NodeId) {
        let dropped = self.links.cancel_dial(peer);
        bump(&self.to_loop.stats.messages_dropped, dropped as u64);
        for link in self.links.of_mut(peer).filter(|l| l.state != LinkState::Closing) {
            link.close();
        }
    }

    fn accept(&mut self, incoming: quinn::Incoming) {
        let (to_loop, local, timeout) = (self.to_loop.clone(), self.id, self.connect_timeout);
        let has_tracker = self.tracker.is_some();
        tokio::spawn(async move {
            let (peer, hs) = match connection::accept(incoming, timeout).await {
                Ok(accepted) => accepted,
                Err(e) => {
                    debug!(error = %e, "incoming connection failed");
                    bump(&to_loop.stats.connections_failed, 1);
                    return;
                }
            };
            // Ids are claims (see `tls`); refuse the two that would be impersonation for
            // sure: ours, and the tracker's when we reached the tracker ourselves.
            if peer == local || (has_tracker && peer == NodeId::TRACKER) {
                warn!(%peer, "incoming connection claims an id it cannot have; refused");
                hs.close(CLOSE_PROTOCOL, b"bad id");
                bump(&to_loop.stats.connections_failed, 1);
                return;
            }
            connection::serve(hs, peer, false, to_loop).await;
        });
    }

    async fn connect_tracker(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let stats = &self.to_loop.stats;
        bump(&stats.dials_started, 1);
        let hs = connection::dial(&self.endpoint, addr, self.id, self.connect_timeout).await.map_err(|e| {
            bump(&stats.connections_failed, 1);
            anyhow::anyhow!("tracker unreachable at {addr}: {e:#}")
        })?;
        let (link, readers) = connection::open(hs, NodeId::TRACKER, true, self.to_loop.clone());
        bump(&stats.connections_opened, 1);
        self.links.insert(NodeId::TRACKER, link);
        tokio::spawn(readers.run());
        info!(%addr, "connected to the tracker");
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::RouteFailed { peer, token } => {
                if self.routes.get(&peer).is_some_and(|r| r.token == token) {
                    self.routes.remove(&peer);
                    self.side.stop_punches(token);
                    debug!(%peer, "rendezvous failed");
                    self.fail_routed_dial(peer);
                }
            }
            Event::PlanMissing { peer, asked } => {
                if self.waiting.get(&peer) == Some(&asked) {
                    self.waiting.remove(&peer);
                    debug!(%peer, "no rendezvous plan from the tracker in time");
                    self.fail_routed_dial(peer);
                }
            }
            Event::Message { from: NodeId::TRACKER, conn, msg: Msg::Introduce { peer, plan, reply } } => {
                let open = self.links.get(NodeId::TRACKER, conn).is_some_and(|l| l.state != LinkState::Closing);
                if open && self.tracker.is_some() {
                    self.execute(peer, &plan);
                    let msg = Msg::Introduce { peer, plan, reply };
                    self.call(|core, now, out| core.on_message(now, NodeId::TRACKER, msg, out));
                }
            }
            Event::PieceAcked { peer, seq, index, delivered, rtt } => {
                let ack = PieceAck { to: peer, seq, index, delivered, rtt };
                self.call(|core, now, out| core.on_piece_acked(now, ack, out));
            }
            Event::Up { peer, link } => self.link_up(peer, link),
            Event::DialFailed { peer, error } => {
                bump(&self.to_loop.stats.connections_failed, 1);
                debug!(%peer, %error, "dial failed");
                if let Some(dial) = self.links.finish_dial(peer) {
                    bump(&self.to_loop.stats.messages_dropped, dial.queue.len() as u64);
                }
                if !self.links.has_links(peer) {
                    self.call(|core, now, out| core.on_disconnect(now, peer, out));
                }
            }
            Event::Message { from, conn, msg } => {
                let open = self.links.get(from, conn).is_some_and(|l| l.state != LinkState::Closing);
                if open {
                    self.call(|core, now, out| core.on_message(now, from, msg, out));
                } else {
                    debug!(peer = %from, "message on a closed connection ignored");
                }
            }
            Event::ControlFinished { peer, conn } => self.links.control_finished(peer, conn),
            Event::Down { peer, conn, reason } => {
                let Some(last) = self.links.remove(peer, conn) else { return };
                bump(&self.to_loop.stats.connections_closed, 1);
                debug!(%peer, %reason, last, "connection ended");
                if last {
                    self.side.node_gone(peer);
                    if let Ok(mut c) = self.to_loop.stats.connections.lock() {
                        c.remove(&peer);
                    }
                }
                // With a dial in progress, its outcome decides: a new connection or a report.
                if last && !self.links.dialing(peer) {
                    self.call(|core, now, out| core.on_disconnect(now, peer, out));
                }
            }
        }
    }

    fn link_up(&mut self, peer: NodeId, mut link: Link) {
        bump(&self.to_loop.stats.connections_opened, 1);
        debug!(%peer, outbound = link.outbound, "connection up");
        self.record_connection(peer, &link);
        let waiting = if link.outbound || self.links.is_routed(peer) {
            match self.links.finish_dial(peer) {
                Some(dial) if dial.cancelled => {
                    link.close();
                    Default::default()
                }
                Some(dial) => dial.queue,
                None => Default::default(),
            }
        } else {
            self.links.take_queued(peer)
        };
        self.links.insert(peer, link);
        if self.links.retire_duplicates(self.id, peer) > 0 {
            debug!(%peer, "both sides dialed; retiring the connection this node dialed");
        }
        for msg in waiting {
            self.send(peer, msg);
        }
    }

    /// Dials to `peer` wait for the tracker's plan, for at most the connect timeout.
    fn await_plan(&mut self, peer: NodeId) {
        if self.links.is_connected(peer) || self.routes.contains_key(&peer) {
            return;
        }
        let asked = tokio::time::Instant::now();
        self.waiting.insert(peer, asked);
        let (events, timeout) = (self.to_loop.events.clone(), self.connect_timeout);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = events.send(Event::PlanMissing { peer, asked }).await;
        });
    }

    /// Carries out the tracker's plan for reaching `peer` (see `punch`).
    fn execute(&mut self, peer: NodeId, plan: &Plan) {
        let asked = self.waiting.remove(&peer);
        if peer == self.id || self.links.is_connected(peer) {
            return;
        }
        if self.routes.get(&peer).is_some_and(|r| r.token == plan.token) {
            return;
        }
        let relay = match plan.relay {
            Some(NodeId::TRACKER) => self.tracker,
            Some(node) => self.links.current(node).map(|l| l.remote()),
            None => None,
        };
        if plan.targets.is_empty() && relay.is_none() {
            debug!(%peer, "the tracker cannot connect us to this peer");
            self.fail_routed_dial(peer);
            return;
        }
        if self.links.dialing(peer) {
            self.links.route_dial(peer);
        }
        let started = asked.unwrap_or_else(tokio::time::Instant::now);
        let attempts = Arc::new(AtomicU32::new(0));
        let (proofs_tx, proofs_rx) = mpsc::channel(punch::PROOFS_MAX);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        if plan.punch && plan.direct_ms > 0 {
            self.side.expect_punches(plan.token, peer, proofs_tx);
            // The first round now, in plan order (see `punch`).
            punch::punch_round(&self.side, plan, peer);
        }
        if let Some(old) = self
            .routes
            .insert(peer, Route { token: plan.token, started, attempts: attempts.clone(), _cancel: cancel_tx })
        {
            if old.token != plan.token {
                self.side.stop_punches(old.token);
            }
        }
        let job = punch::Job {
            peer,
            local: self.id,
            plan: plan.clone(),
            relay,
            endpoint: self.endpoint.clone(),
            side: self.side.clone(),
            to_loop: self.to_loop.clone(),
            timeout: self.connect_timeout,
            attempts,
        };
        tokio::spawn(punch::run(job, proofs_rx, cancel_rx));
    }

    /// A dial that waited for a rendezvous will not come up: as for any failed dial.
    fn fail_routed_dial(&mut self, peer: NodeId) {
        if !self.links.is_routed(peer) {
            return;
        }
        bump(&self.to_loop.stats.connections_failed, 1);
        if let Some(dial) = self.links.finish_dial(peer) {
            bump(&self.to_loop.stats.messages_dropped, dial.queue.len() as u64);
        }
        if !self.links.has_links(peer) {
            self.call(|core, now, out| core.on_disconnect(now, peer, out));
        }
    }

    /// Counts a new connection as direct or relayed, ends its rendezvous, and keeps its
    /// figures for the stats API. A relay learns here where each node is.
    fn record_connection(&mut self, peer: NodeId, link: &Link) {
        let remote = link.remote();
        self.side.node_at(peer, remote);
        let relayed = self.side.resolve_virtual(remote);
        let stats = &self.to_loop.stats;
        bump(if relayed.is_some() { &stats.connections_relayed } else { &stats.connections_direct }, 1);
        self.waiting.remove(&peer);
        let route = self.routes.remove(&peer);
        if let Some(r) = &route {
            self.side.stop_punches(r.token);
        }
        let entry = ConnectionStats {
            peer: peer.to_string(),
            path: if relayed.is_some() { "relay" } else { "direct" },
            remote: relayed.map_or(remote, |(relay, _)| relay),
            outbound: link.outbound,
            attempts: route.as_ref().map_or(1, |r| r.attempts.load(Ordering::Relaxed).max(1)),
            connect_ms: route.as_ref().map(|r| r.started.elapsed().as_millis() as u64),
        };
        if let Ok(mut c) = stats.connections.lock() {
            c.insert(peer, entry);
        }
    }

    fn fire_timers(&mut self) {
        let now = clock::now();
        for _ in 0..TIMER_FIRINGS_PER_WAKE_MAX {
            let Some(id) = self.timers.pop_due(now) else { return };
            self.call(|core, now, out| core.on_timer(now, id, out));
        }
    }
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
