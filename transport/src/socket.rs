//! The node's one UDP socket, shared by QUIC and by everything that is not QUIC: STUN,
//! punch packets and relay frames. quinn reads and writes it through [`AsyncUdpSocket`];
//! on the way in, each datagram is sorted by its first byte (RFC 7983's demultiplexing,
//! with QUIC's fixed bit never greased, see `endpoint`):
//!
//! | first byte | what | where it goes |
//! | --- | --- | --- |
//! | `0x00..=0x03` | STUN | answered here (a tracker), or to the discovery waiting for it |
//! | `0x20`, `0x21` | punch, punch ack | the rendezvous whose token it carries |
//! | `0x22` | relay frame to a node | forwarded (a relay) |
//! | `0x23` | relay frame from a node | unwrapped and handed to QUIC as from a virtual address |
//! | `0x40..=0xff` | QUIC | quinn |
//!
//! So the reflexive address a peer learns by STUN is the one its QUIC traffic uses, and a
//! hole a punch opens is the one QUIC goes through.
//!
//! **Relayed QUIC.** A connection through a relay is ordinary QUIC, end to end encrypted,
//! whose datagrams travel wrapped: quinn sends to a *virtual address* (in 240.0.0.0/4,
//! which no host uses) that stands for "node N through relay R"; this socket wraps each
//! such datagram as `0x22 ‖ N ‖ datagram` to R. R checks that the sender is a node it
//! serves (by the address of that node's QUIC connection to R) and that the pair is
//! allowed, and forwards `0x23 ‖ sender ‖ datagram` to N, which hands it to quinn as from
//! the virtual address of "sender through R".
//!
//! Anything that does not fit (malformed STUN, a punch with an unknown token or from a
//! node other than the one expected, relay frames from strangers) is dropped and counted,
//! with a rate-limited log line; it changes no state.

use crate::impair::{Impair, ImpairConfig};
use crate::stats::{bump, TransportStats};
use crate::stun::{self, Change, Stun, TxId};
use meshtv_proto::NodeId;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::ReadBuf;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

pub(crate) const PUNCH: u8 = 0x20;
pub(crate) const PUNCH_ACK: u8 = 0x21;
pub(crate) const RELAY_TO: u8 = 0x22;
pub(crate) const RELAY_FROM: u8 = 0x23;
/// A punch: kind, token, sender id, receiver id.
pub(crate) const PUNCH_BYTES: usize = 1 + 8 + 8 + 8;
/// What a relay frame adds to the datagram it carries.
pub(crate) const RELAY_HEADER_BYTES: usize = 1 + 8;
/// Virtual addresses in use at once (one per relayed peer); beyond this, refused.
const VIRTUAL_ADDRS_MAX: u32 = 65_536;
/// Non-QUIC datagrams handled in one `poll_recv` before yielding to other tasks.
const SIDE_DATAGRAMS_PER_POLL_MAX: usize = 256;
/// Relay grants held at once (pairs of nodes allowed to relay through us).
const RELAY_GRANTS_MAX: usize = 65_536;
/// STUN transactions a node waits for at once.
const STUN_WAITERS_MAX: usize = 64;

/// Bandwidth a relay gives away: in total, and to any one pair of nodes.
#[derive(Copy, Clone, Debug)]
pub struct RelayLimits {
    pub bytes_per_s_max: u64,
    pub pair_bytes_per_s_max: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits { bytes_per_s_max: 50_000_000 / 8, pair_bytes_per_s_max: 8_000_000 / 8 }
    }
}

/// A punch or its ack, as the rendezvous that expects it sees it.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Proof {
    /// Where the packet came from: an address that reaches the peer.
    pub(crate) from: SocketAddr,
}

struct PunchRoute {
    peer: NodeId,
    tx: mpsc::Sender<Proof>,
}

/// A token bucket: `rate` bytes a second, bursts of a quarter second.
struct Bucket {
    rate: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket { rate: rate as f64, level: Self::burst(rate as f64), at: Instant::now() }
    }
    fn burst(rate: f64) -> f64 {
        (rate / 4.0).max(64.0 * 1024.0)
    }
    fn take(&mut self, now: Instant, bytes: usize) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.level = (self.level + dt * self.rate).min(Self::burst(self.rate));
        if self.level >= bytes as f64 {
            self.level -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// The relay's side: which node is at which address (their QUIC connections to us), which
/// pairs may relay, and the buckets that bound what they take.
struct RelayServer {
    limits: RelayLimits,
    by_addr: HashMap<SocketAddr, NodeId>,
    by_node: HashMap<NodeId, SocketAddr>,
    grants: HashSet<(NodeId, NodeId)>,
    total: Bucket,
    pairs: HashMap<(NodeId, NodeId), Bucket>,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

/// Virtual addresses: "node N through relay R", both ways.
#[derive(Default)]
struct Virtuals {
    next: u32,
    by_addr: HashMap<SocketAddr, (SocketAddr, NodeId)>,
    by_key: HashMap<(SocketAddr, NodeId), SocketAddr>,
}

/// The STUN server of a tracker: its sockets by (alternate IP?, alternate port?).
pub(crate) struct StunServer {
    pub(crate) primary: SocketAddr,
    pub(crate) alternates: HashMap<(bool, bool), Arc<tokio::net::UdpSocket>>,
}

/// Drops that get a log line, at most one a second per kind (the rest only counted).
#[derive(Default)]
struct DropLog {
    last: HashMap<&'static str, Instant>,
}

/// Where the answer to a STUN transaction goes: the reply and who sent it.
pub(crate) type StunAnswer = oneshot::Sender<(stun::Reply, SocketAddr)>;
pub(crate) type StunWait = oneshot::Receiver<(stun::Reply, SocketAddr)>;

/// What the socket shares with the driver: tables for STUN, punches, relaying.
pub(crate) struct Side {
    pub(crate) local_id: NodeId,
    pub(crate) stats: Arc<TransportStats>,
    io: Arc<tokio::net::UdpSocket>,
    ipv6: bool,
    stun_server: Mutex<Option<StunServer>>,
    stun_waiters: Mutex<HashMap<[u8; 12], StunAnswer>>,
    punches: Mutex<HashMap<u64, PunchRoute>>,
    relay: Mutex<Option<RelayServer>>,
    /// Relays whose frames this node accepts (its tracker).
    trusted_relays: Mutex<HashSet<SocketAddr>>,
    virtuals: Mutex<Virtuals>,
    drops: Mutex<DropLog>,
    /// Lab only: delay and loss on QUIC's datagrams, when `MESHTV_LAB_IMPAIR` asks for it.
    impair: Option<Impair>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The tables hold plain data; a panic elsewhere leaves them consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The socket quinn drives.
pub(crate) struct MeshSocket {
    io: Arc<tokio::net::UdpSocket>,
    pub(crate) side: Arc<Side>,
}

impl fmt::Debug for MeshSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshSocket").field("local", &self.io.local_addr().ok()).finish()
    }
}

impl MeshSocket {
    /// Binds `addr`. Must run inside tokio.
    pub(crate) fn bind(addr: SocketAddr, local_id: NodeId, stats: Arc<TransportStats>) -> io::Result<Arc<MeshSocket>> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let io = Arc::new(tokio::net::UdpSocket::from_std(std)?);
        let ipv6 = io.local_addr()?.is_ipv6();
        let side = Arc::new(Side {
            local_id,
            stats,
            io: io.clone(),
            ipv6,
            stun_server: Mutex::new(None),
            stun_waiters: Mutex::default(),
            punches: Mutex::default(),
            relay: Mutex::new(None),
            trusted_relays: Mutex::default(),
            virtuals: Mutex::default(),
            drops: Mutex::default(),
            impair: ImpairConfig::from_env().map(|c| Impair::new(c, io.clone())),
        });
        Ok(Arc::new(MeshSocket { io, side }))
    }
}

/// What to do with one received datagram.
enum Sorted {
    /// Hand to quinn: bytes from `offset` on, as from `addr`.
    Quic { addr: SocketAddr, offset: usize },
    /// Handled (or dropped) here.
    Consumed,
}

impl Side {
    pub(crate) fn io(&self) -> &Arc<tokio::net::UdpSocket> {
        &self.io
    }

    fn dropped(&self, kind: &'static str, from: SocketAddr, why: &str) {
        bump(&self.stats.datagrams_dropped, 1);
        let mut log = lock(&self.drops);
        let now = Instant::now();
        if log.last.get(kind).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
            log.last.insert(kind, now);
            warn!(%from, why, "{kind} dropped");
        }
    }

    fn sort(&self, buf: &mut [u8], from: SocketAddr) -> Sorted {
        let from = canonical(from);
        match buf.first().copied() {
            Some(b) if b >= 0x40 => Sorted::Quic { addr: from, offset: 0 },
            Some(0..=3) => {
                self.on_stun(buf, from, (false, false));
                Sorted::Consumed
            }
            Some(PUNCH | PUNCH_ACK) => {
                self.on_punch(buf, from);
                Sorted::Consumed
            }
            Some(RELAY_TO) => {
                self.on_relay_to(buf, from);
                Sorted::Consumed
            }
            Some(RELAY_FROM) => match self.on_relay_from(buf, from) {
                Some(addr) => Sorted::Quic { addr, offset: RELAY_HEADER_BYTES },
                None => Sorted::Consumed,
            },
            _ => {
                self.dropped("unknown datagram", from, "its first byte is no protocol we speak");
                Sorted::Consumed
            }
        }
    }

    // --- STUN ---------------------------------------------------------------------

    /// A STUN datagram that arrived on socket `on` (`(alternate IP?, alternate port?)`;
    /// the QUIC socket is `(false, false)`).
    pub(crate) fn on_stun(&self, datagram: &[u8], from: SocketAddr, on: (bool, bool)) {
        match stun::parse(datagram) {
            Ok(Stun::Request { id, change }) => self.answer_stun(id, change, from, on),
            Ok(Stun::Response(reply)) => {
                let waiter = lock(&self.stun_waiters).remove(&reply.id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send((reply, from));
                    }
                    None => self.dropped("STUN response", from, "no transaction of ours has its id"),
                }
            }
            Err(why) => self.dropped("STUN message", from, why),
        }
    }

    fn answer_stun(&self, id: TxId, change: Change, from: SocketAddr, on: (bool, bool)) {
        let server = lock(&self.stun_server);
        let Some(server) = server.as_ref() else {
            self.dropped("STUN request", from, "this node is not a STUN server");
            return;
        };
        let out = (on.0 ^ change.ip, on.1 ^ change.port);
        let other_key = (!out.0, !out.1);
        let addr_of = |key: (bool, bool)| -> Option<SocketAddr> {
            if key == (false, false) {
                Some(server.primary)
            } else {
                server.alternates.get(&key).and_then(|s| s.local_addr().ok())
            }
        };
        let (Some(origin), other) = (addr_of(out), addr_of(other_key)) else {
            self.dropped("STUN request", from, "it asks to answer from an address this server lacks");
            return;
        };
        let response = stun::response(id, from, origin, other);
        let socket = if out == (false, false) { &self.io } else { &server.alternates[&out] };
        bump(&self.stats.stun_answered, 1);
        if let Err(e) = socket.try_send_to(&response, from) {
            tracing::debug!(%from, error = %e, "STUN answer not sent");
        }
    }

    pub(crate) fn set_stun_server(&self, server: StunServer) {
        *lock(&self.stun_server) = Some(server);
    }

    /// Sends a Binding request to `to`; the answer comes through the returned receiver.
    pub(crate) fn stun_request(&self, to: SocketAddr, change: Change) -> Option<(StunWait, [u8; 12])> {
        let id: [u8; 12] = *stun_rs::TransactionId::default().as_bytes();
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.stun_waiters);
            if waiters.len() >= STUN_WAITERS_MAX {
                return None;
            }
            waiters.insert(id, tx);
        }
        self.resend_stun(to, id, change);
        Some((rx, id))
    }

    pub(crate) fn resend_stun(&self, to: SocketAddr, id: [u8; 12], change: Change) {
        let _ = self.io.try_send_to(&stun::request(id, change), self.native(to));
    }

    pub(crate) fn forget_stun(&self, id: &[u8; 12]) {
        lock(&self.stun_waiters).remove(id);
    }

    // --- punching -----------------------------------------------------------------

    /// Expects punches carrying `token` from `peer`; they are reported on `tx`.
    pub(crate) fn expect_punches(&self, token: u64, peer: NodeId, tx: mpsc::Sender<Proof>) {
        lock(&self.punches).insert(token, PunchRoute { peer, tx });
    }

    pub(crate) fn stop_punches(&self, token: u64) {
        lock(&self.punches).remove(&token);
    }

    pub(crate) fn send_punch(&self, kind: u8, to: SocketAddr, token: u64, peer: NodeId) {
        let mut p = [0u8; PUNCH_BYTES];
        p[0] = kind;
        p[1..9].copy_from_slice(&token.to_be_bytes());
        p[9..17].copy_from_slice(&self.local_id.0.to_be_bytes());
        p[17..25].copy_from_slice(&peer.0.to_be_bytes());
        bump(&self.stats.punches_sent, 1);
        let _ = self.io.try_send_to(&p, self.native(to));
    }

    fn on_punch(&self, p: &[u8], from: SocketAddr) {
        let Some((kind, token, sender, receiver)) = parse_punch(p) else {
            self.dropped("punch", from, "malformed");
            return;
        };
        if receiver != self.local_id {
            self.dropped("punch", from, "addressed to another node");
            return;
        }
        let tx = {
            let punches = lock(&self.punches);
            match punches.get(&token) {
                Some(route) if route.peer == sender => route.tx.clone(),
                Some(_) => {
                    drop(punches);
                    self.dropped("punch", from, "its sender is not the peer of its token (spoofed?)");
                    return;
                }
                None => {
                    drop(punches);
                    self.dropped("punch", from, "unsolicited: no rendezvous has its token");
                    return;
                }
            }
        };
        bump(&self.stats.punches_received, 1);
        if kind == PUNCH {
            self.send_punch(PUNCH_ACK, from, token, sender);
        }
        let _ = tx.try_send(Proof { from });
    }

    // --- relaying -----------------------------------------------------------------

    /// Makes this node a relay (the tracker).
    pub(crate) fn serve_relay(&self, limits: RelayLimits) {
        *lock(&self.relay) = Some(RelayServer {
            limits,
            by_addr: HashMap::new(),
            by_node: HashMap::new(),
            grants: HashSet::new(),
            total: Bucket::new(limits.bytes_per_s_max),
            pairs: HashMap::new(),
        });
    }

    /// A node's QUIC connection to us came up (relay: it may now send frames from there).
    pub(crate) fn node_at(&self, node: NodeId, addr: SocketAddr) {
        if let Some(r) = lock(&self.relay).as_mut() {
            if let Some(old) = r.by_node.insert(node, canonical(addr)) {
                r.by_addr.remove(&old);
            }
            r.by_addr.insert(canonical(addr), node);
        }
    }

    /// A node's last connection to us is gone: it is no longer served, nor its grants.
    pub(crate) fn node_gone(&self, node: NodeId) {
        if let Some(r) = lock(&self.relay).as_mut() {
            if let Some(addr) = r.by_node.remove(&node) {
                r.by_addr.remove(&addr);
            }
            r.grants.retain(|(a, b)| *a != node && *b != node);
            r.pairs.retain(|(a, b), _| *a != node && *b != node);
        }
    }

    /// Allows `a` and `b` to relay through us (a core's decision, carried out).
    pub(crate) fn grant_relay(&self, a: NodeId, b: NodeId) {
        if let Some(r) = lock(&self.relay).as_mut() {
            if r.grants.len() < RELAY_GRANTS_MAX {
                r.grants.insert(pair(a, b));
            } else {
                warn!(%a, %b, "relay grant table full; pair not allowed");
            }
        }
    }

    fn on_relay_to(&self, buf: &mut [u8], from: SocketAddr) {
        let Some(to) = buf.get(1..9).map(|b| NodeId(u64::from_be_bytes(b.try_into().expect("8 bytes")))) else {
            self.dropped("relay frame", from, "truncated");
            return;
        };
        let target = {
            let mut relay = lock(&self.relay);
            let Some(r) = relay.as_mut() else {
                drop(relay);
                self.dropped("relay frame", from, "this node is not a relay");
                return;
            };
            let Some(&sender) = r.by_addr.get(&from) else {
                drop(relay);
                self.dropped("relay frame", from, "its sender is no node this relay serves");
                return;
            };
            if !r.grants.contains(&pair(sender, to)) {
                drop(relay);
                self.dropped("relay frame", from, "the pair was not introduced for relaying");
                return;
            }
            let Some(&target) = r.by_node.get(&to) else {
                drop(relay);
                self.dropped("relay frame", from, "its destination is not connected to this relay");
                return;
            };
            let now = Instant::now();
            let pair_limit = r.limits.pair_bytes_per_s_max;
            let bucket = r.pairs.entry(pair(sender, to)).or_insert_with(|| Bucket::new(pair_limit));
            if !bucket.take(now, buf.len()) || !r.total.take(now, buf.len()) {
                bump(&self.stats.relay_datagrams_limited, 1);
                return;
            }
            buf[0] = RELAY_FROM;
            buf[1..9].copy_from_slice(&sender.0.to_be_bytes());
            target
        };
        bump(&self.stats.relay_bytes_forwarded, buf.len() as u64);
        let _ = self.io.try_send_to(buf, self.native(target));
    }

    /// Accepts relay frames from `relay` (this node's tracker).
    pub(crate) fn trust_relay(&self, relay: SocketAddr) {
        lock(&self.trusted_relays).insert(canonical(relay));
    }

    fn on_relay_from(&self, buf: &[u8], from: SocketAddr) -> Option<SocketAddr> {
        if buf.len() <= RELAY_HEADER_BYTES {
            self.dropped("relay frame", from, "truncated");
            return None;
        }
        if !lock(&self.trusted_relays).contains(&from) {
            self.dropped("relay frame", from, "not from a relay this node uses");
            return None;
        }
        let node = NodeId(u64::from_be_bytes(buf[1..9].try_into().expect("8 bytes")));
        let addr = self.virtual_addr(from, node);
        if addr.is_none() {
            self.dropped("relay frame", from, "no virtual address left");
        }
        addr
    }

    /// The virtual address standing for `node` through `relay` (allocated on first use).
    pub(crate) fn virtual_addr(&self, relay: SocketAddr, node: NodeId) -> Option<SocketAddr> {
        let relay = canonical(relay);
        let mut v = lock(&self.virtuals);
        if let Some(a) = v.by_key.get(&(relay, node)) {
            return Some(self.presented(*a));
        }
        if v.next >= VIRTUAL_ADDRS_MAX {
            return None;
        }
        v.next += 1;
        let n = v.next;
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(240, (n >> 16) as u8, (n >> 8) as u8, n as u8)), 1);
        v.by_key.insert((relay, node), addr);
        v.by_addr.insert(addr, (relay, node));
        Some(self.presented(addr))
    }

    /// The relay and node a virtual address stands for.
    pub(crate) fn resolve_virtual(&self, addr: SocketAddr) -> Option<(SocketAddr, NodeId)> {
        let addr = canonical(addr);
        if !is_virtual(addr) {
            return None;
        }
        lock(&self.virtuals).by_addr.get(&addr).copied()
    }

    /// An address as quinn expects it on this socket (v4-mapped on an IPv6 socket).
    fn presented(&self, addr: SocketAddr) -> SocketAddr {
        match (self.ipv6, addr.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
            _ => addr,
        }
    }

    /// An address as the OS expects it for a send on this socket.
    fn native(&self, addr: SocketAddr) -> SocketAddr {
        self.presented(addr)
    }

    /// Sends one of QUIC's datagrams (or a relay frame carrying one): through the lab's
    /// impairment stage when it is on.
    fn send_quic(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        match &self.impair {
            Some(stage) => stage.send(&self.io, datagram, to).map(|_| datagram.len()),
            None => self.io.try_send_to(datagram, to),
        }
    }

    fn send_relayed(&self, dest: SocketAddr, t: &Transmit) -> io::Result<()> {
        let Some((relay, node)) = self.resolve_virtual(dest) else {
            // An address quinn got from us that we no longer know: the datagram is lost,
            // as on any path that went away.
            return Ok(());
        };
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        for datagram in t.contents.chunks(seg) {
            let mut frame = Vec::with_capacity(RELAY_HEADER_BYTES + datagram.len());
            frame.push(RELAY_TO);
            frame.extend_from_slice(&node.0.to_be_bytes());
            frame.extend_from_slice(datagram);
            let n = self.send_quic(&frame, self.native(relay))?;
            bump(&self.stats.relay_bytes_sent, frame.len() as u64);
            bump(&self.stats.udp_bytes_sent, n as u64);
        }
        Ok(())
    }
}

/// Reads a punch or ack: `(kind, token, sender, receiver)`.
pub(crate) fn parse_punch(p: &[u8]) -> Option<(u8, u64, NodeId, NodeId)> {
    if p.len() != PUNCH_BYTES || !(p[0] == PUNCH || p[0] == PUNCH_ACK) {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(p[i..i + 8].try_into().expect("8 bytes"));
    Some((p[0], word(1), NodeId(word(9)), NodeId(word(17))))
}

/// True for the addresses that stand for relayed peers.
pub(crate) fn is_virtual(addr: SocketAddr) -> bool {
    matches!(canonical(addr).ip(), IpAddr::V4(v4) if v4.octets()[0] == 240)
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl AsyncUdpSocket for MeshSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller { io: self.io.clone(), fut: None })
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        if is_virtual(t.destination) {
            return self.side.send_relayed(t.destination, t);
        }
        let sent = &self.side.stats.udp_bytes_sent;
        match t.segment_size {
            None => {
                let n = self.side.send_quic(t.contents, t.destination)?;
                bump(sent, n as u64);
                Ok(())
            }
            Some(seg) => {
                for datagram in t.contents.chunks(seg.max(1)) {
                    let n = self.side.send_quic(datagram, t.destination)?;
                    bump(sent, n as u64);
                }
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut filled = 0;
        let mut side_datagrams = 0;
        while filled < bufs.len().min(meta.len()) {
            let buf: &mut [u8] = &mut bufs[filled];
            let mut rb = ReadBuf::new(buf);
            let from = match self.io.poll_recv_from(cx, &mut rb) {
                Poll::Ready(Ok(from)) => from,
                Poll::Ready(Err(e)) if filled == 0 => return Poll::Ready(Err(e)),
                Poll::Ready(Err(_)) | Poll::Pending => break,
            };
            let len = rb.filled().len();
            match self.side.sort(&mut buf[..len], from) {
                Sorted::Quic { addr, offset } => {
                    if offset > 0 {
                        buf.copy_within(offset..len, 0);
                    }
                    let n = len - offset;
                    meta[filled] = RecvMeta { addr, len: n, stride: n, ecn: None, dst_ip: None };
                    filled += 1;
                }
                Sorted::Consumed => {
                    side_datagrams += 1;
                    if side_datagrams >= SIDE_DATAGRAMS_PER_POLL_MAX && filled == 0 {
                        // A flood of non-QUIC datagrams must not starve the other tasks.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
            }
        }
        if filled > 0 {
            Poll::Ready(Ok(filled))
        } else {
            Poll::Pending
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

/// Waits for the socket to be writable again after a send would have blocked.
struct Poller {
    io: Arc<tokio::net::UdpSocket>,
    fut: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Poller")
    }
}

impl UdpPoller for Poller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.fut.is_none() {
            let io = this.io.clone();
            this.fut = Some(Box::pin(async move { io.writable().await }));
        }
        let result = this.fut.as_mut().map_or(Poll::Ready(Ok(())), |f| f.as_mut().poll(cx));
        if result.is_ready() {
            this.fut = None;
        }
        result
    }
}

/// Answers STUN on one of a tracker's alternate sockets until the socket fails.
pub(crate) async fn serve_alternate(side: Arc<Side>, socket: Arc<tokio::net::UdpSocket>, key: (bool, bool)) {
    let mut buf = vec![0u8; stun::STUN_BYTES_MAX + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "alternate STUN socket");
                continue;
            }
        };
        let from = canonical(from);
        if stun::looks_like(&buf[..n]) {
            side.on_stun(&buf[..n], from, key);
        } else {
            side.dropped("datagram on a STUN-only socket", from, "not STUN");
        }
    }
}

/// A counter for tests that want to see drops.
#[allow(dead_code)]
pub(crate) fn drops(stats: &TransportStats) -> u64 {
    stats.datagrams_dropped.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    async fn side(id: u64) -> Arc<MeshSocket> {
        MeshSocket::bind("127.0.0.1:0".parse().unwrap(), NodeId(id), Arc::default()).unwrap()
    }

    #[tokio::test]
    async fn garbage_is_dropped_without_state_change() {
        let s = side(1).await;
        let (tx, mut rx) = mpsc::channel(4);
        s.side.expect_punches(77, NodeId(2), tx);
        s.side.serve_relay(RelayLimits::default());
        s.side.trust_relay("127.0.0.1:9".parse().unwrap());
        let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..80);
            let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if let Some(b) = d.first_mut() {
                // Aim at the non-QUIC kinds, where the parsing is ours.
                *b = [0, 1, PUNCH, PUNCH_ACK, RELAY_TO, RELAY_FROM, 0x30][rng.gen_range(0..7)];
            }
            let _ = s.side.sort(&mut d, from);
        }
        // A punch with the right token but from another node: spoofed, dropped.
        let mut p = [0u8; PUNCH_BYTES];
        p[0] = PUNCH;
        p[1..9].copy_from_slice(&77u64.to_be_bytes());
        p[9..17].copy_from_slice(&3u64.to_be_bytes());
        p[17..25].copy_from_slice(&1u64.to_be_bytes());
        assert!(matches!(s.side.sort(&mut p, from), Sorted::Consumed));
        assert!(rx.try_recv().is_err(), "no random or spoofed punch may reach the rendezvous");
        assert!(lock(&s.side.virtuals).by_addr.is_empty(), "relay frames from strangers allocate nothing");
        assert!(lock(&s.side.relay).as_ref().unwrap().grants.is_empty());
        assert!(drops(&s.side.stats) > 10_000);
        // The genuine punch goes through.
        p[9..17].copy_from_slice(&2u64.to_be_bytes());
        let _ = s.side.sort(&mut p, from);
        assert_eq!(rx.try_recv().unwrap().from, from);
    }

    #[test]
    fn virtual_addresses_are_recognised() {
        assert!(is_virtual("240.0.0.1:1".parse().unwrap()));
        assert!(is_virtual("[::ffff:240.0.0.1]:1".parse().unwrap()));
        assert!(!is_virtual("127.0.0.1:1".parse().unwrap()));
        assert_eq!(parse_punch(&[PUNCH; 3]), None);
    }
}
