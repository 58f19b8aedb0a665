//! The shape every sans-IO core has, so that one driver (real QUIC or the simulator) can
//! run any of them: it feeds messages and timer firings in, and carries out what the
//! core put in its [`Outbox`].

use crate::ids::NodeId;
use crate::msg::{Msg, PeerInfo};
use crate::time::Time;

/// Names a timer of one node; a node has at most one pending firing per id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub u32);

/// What a core asks its driver to do. The driver drains it after every call.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to send. A message to a node the driver has no connection to and no
    /// address for is dropped (the core learns of it through `on_disconnect`).
    pub sends: Vec<(NodeId, Msg)>,
    /// Peers to connect to (their address is only known to the core).
    pub dials: Vec<PeerInfo>,
    /// Connections to close (bad peers, partners no longer assigned).
    pub closes: Vec<NodeId>,
    /// Timers to (re)arm: a later call for the same id replaces the earlier one.
    pub timers: Vec<(Time, TimerId)>,
}

impl Outbox {
    pub fn send(&mut self, to: NodeId, msg: Msg) {
        self.sends.push((to, msg));
    }
    pub fn dial(&mut self, peer: PeerInfo) {
        self.dials.push(peer);
    }
    pub fn close(&mut self, peer: NodeId) {
        self.closes.push(peer);
    }
    pub fn set_timer(&mut self, at: Time, id: TimerId) {
        self.timers.push((at, id));
    }
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.dials.is_empty() && self.closes.is_empty() && self.timers.is_empty()
    }
}

/// The driver's report on a `Msg::Piece` a node sent: the receiver acknowledged all of it
/// (`delivered`), or it was lost with its connection. `rtt` is the connection's round
/// trip as the driver knows it (QUIC's estimate in production, the modelled latency in
/// the simulator), zero where unknown.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PieceAck {
    pub to: NodeId,
    pub seq: u64,
    pub index: u16,
    pub delivered: bool,
    pub rtt: std::time::Duration,
}

/// A sans-IO node: a state machine driven by time, messages and timers.
pub trait Node {
    /// Called once, before anything else.
    fn on_start(&mut self, now: Time, out: &mut Outbox);
    fn on_message(&mut self, now: Time, from: NodeId, msg: Msg, out: &mut Outbox);
    fn on_timer(&mut self, now: Time, timer: TimerId, out: &mut Outbox);
    /// The connection to `peer` is gone (closed, timed out, or could not be made).
    fn on_disconnect(&mut self, now: Time, peer: NodeId, out: &mut Outbox);
    /// How a piece this node sent fared. Every driver reports every piece once, so that
    /// a node can measure its uplink from what its connections drain.
    fn on_piece_acked(&mut self, now: Time, ack: PieceAck, out: &mut Outbox) {
        let _ = (now, ack, out);
    }
}
