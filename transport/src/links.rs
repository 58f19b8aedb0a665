//! Which connections the driver holds to which node, and the messages waiting for a dial.
//!
//! A node may hold two connections to one peer for a while: both dialed each other at once
//! (partners the tracker assigns to each other do exactly that), or the peer restarted and
//! dialed again before its old connection timed out. So: messages are sent on the newest
//! open connection, accepted from every live one, and `on_disconnect` is reported only
//! when the last one ends; a replaced connection never looks like a lost peer.
//!
//! A duplicate from a simultaneous dial is retired without losing a message: the node with
//! the higher id stops sending on the connection it dialed and finishes its control stream;
//! the other node, seeing the end of that stream, stops sending on it too and finishes its
//! side; the first then closes it after a grace period. Both nodes decide from ids alone,
//! so they always agree on which connection stays.

use crate::connection::{Outgoing, CLOSE_DUPLICATE, CLOSE_LINGER, CLOSE_NORMAL};
use meshtv_proto::{Msg, NodeId};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages held for a node while a dial to it is in progress; beyond this they are dropped.
pub(crate) const DIAL_QUEUE_MSGS_MAX: usize = 256;
/// How long a retired duplicate stays open for piece streams still in flight on it.
const RETIRE_GRACE: Duration = Duration::from_secs(1);

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// Carries messages both ways.
    Open,
    /// Being retired (a duplicate) or wound down (the peer finished with it): nothing more
    /// is sent on it, what arrives is still delivered.
    Retiring,
    /// A core asked to close it: nothing is sent, nothing that arrives is delivered.
    Closing,
}

/// The loop's handle on one live connection.
pub(crate) struct Link {
    conn: quinn::Connection,
    /// We dialed it (rather than accepted it).
    pub(crate) outbound: bool,
    pub(crate) state: LinkState,
    writer: mpsc::Sender<Outgoing>,
}

impl Link {
    pub(crate) fn new(conn: quinn::Connection, outbound: bool, writer: mpsc::Sender<Outgoing>) -> Link {
        Link { conn, outbound, state: LinkState::Open, writer }
    }

    pub(crate) fn id(&self) -> usize {
        self.conn.stable_id()
    }

    pub(crate) fn remote(&self) -> std::net::SocketAddr {
        self.conn.remote_address()
    }

    /// Queues a message for the writer; false if the queue is full or the writer gone.
    pub(crate) fn try_send(&self, msg: Msg) -> bool {
        self.writer.try_send(Outgoing::Msg(msg)).is_ok()
    }

    /// Stops sending here; the writer finishes the control stream after what is queued.
    pub(crate) fn retire(&mut self) {
        self.state = LinkState::Retiring;
        let writer = self.writer.clone();
        tokio::spawn(async move {
            let _ = writer.send(Outgoing::Finish).await;
        });
    }

    /// Closes at a core's request: nothing more is sent, nothing that arrives is delivered.
    pub(crate) fn close(&mut self) {
        self.state = LinkState::Closing;
        self.close_after_queue();
    }

    /// The peer is done with this connection and there is no other: send nothing more,
    /// still deliver what is in flight, and close.
    fn wind_down(&mut self) {
        self.state = LinkState::Retiring;
        self.close_after_queue();
    }

    /// Closes once what is queued is written, or after a bounded wait if the writer is
    /// stuck behind a peer that does not read.
    fn close_after_queue(&self) {
        let (writer, conn) = (self.writer.clone(), self.conn.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_LINGER, writer.send(Outgoing::Close)).await;
            let _ = tokio::time::timeout(CLOSE_LINGER, conn.closed()).await;
            conn.close(CLOSE_NORMAL, b"closed");
        });
    }

    /// Closes a retired duplicate once both sides have finished with it, after a grace
    /// period for piece streams still in flight (which are still delivered meanwhile).
    fn close_retired(&self) {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_GRACE).await;
            conn.close(CLOSE_DUPLICATE, b"duplicate connection");
        });
    }
}

/// A dial in progress and what waits for it.
#[derive(Default)]
pub(crate) struct Dial {
    pub(crate) queue: VecDeque<Msg>,
    /// The core closed the node while we were dialing it: close the connection on arrival.
    pub(crate) cancelled: bool,
    /// A rendezvous brings the connection (punched or relayed, in either direction): there
    /// is no QUIC dial of this dial's own, and an incoming connection completes it.
    pub(crate) routed: bool,
}

#[derive(Default)]
pub(crate) struct Links {
    /// Oldest first; never an empty list.
    peers: HashMap<NodeId, Vec<Link>>,
    dials: HashMap<NodeId, Dial>,
}

impl Links {
    pub(crate) fn insert(&mut self, peer: NodeId, link: Link) {
        self.peers.entry(peer).or_default().push(link);
    }

    /// Where to send to `peer`: its newest open connection.
    pub(crate) fn current(&self, peer: NodeId) -> Option<&Link> {
        self.peers.get(&peer)?.iter().rev().find(|l| l.state == LinkState::Open)
    }

    pub(crate) fn is_connected(&self, peer: NodeId) -> bool {
        self.current(peer).is_some()
    }

    /// Whether any connection to `peer` is still live, in any state.
    pub(crate) fn has_links(&self, peer: NodeId) -> bool {
        self.peers.contains_key(&peer)
    }

    pub(crate) fn get(&self, peer: NodeId, conn: usize) -> Option<&Link> {
        self.peers.get(&peer)?.iter().find(|l| l.id() == conn)
    }

    /// All live connections, for shutdown.
    pub(crate) fn all_mut(&mut self) -> impl Iterator<Item = &mut Link> {
        self.peers.values_mut().flatten()
    }

    pub(crate) fn of_mut(&mut self, peer: NodeId) -> impl Iterator<Item = &mut Link> {
        self.peers.get_mut(&peer).into_iter().flatten()
    }

    /// Forgets a connection that ended. `Some(true)` when it was the node's last one,
    /// `None` when it was not in the table.
    pub(crate) fn remove(&mut self, peer: NodeId, conn: usize) -> Option<bool> {
        let links = self.peers.get_mut(&peer)?;
        let at = links.iter().position(|l| l.id() == conn)?;
        links.remove(at);
        let last = links.is_empty();
        if last {
            self.peers.remove(&peer);
        }
        Some(last)
    }

    /// Retires the duplicates of a simultaneous dial (see the module documentation):
    /// when `local` has the higher id and holds an open connection `peer` dialed, the
    /// open connections `local` dialed go. Returns how many were retired.
    pub(crate) fn retire_duplicates(&mut self, local: NodeId, peer: NodeId) -> usize {
        let Some(links) = self.peers.get_mut(&peer) else { return 0 };
        if local < peer || !links.iter().any(|l| !l.outbound && l.state == LinkState::Open) {
            return 0;
        }
        let mut retired = 0;
        for link in links.iter_mut().filter(|l| l.outbound && l.state == LinkState::Open) {
            link.retire();
            retired += 1;
        }
        retired
    }

    /// The peer finished its side of the control stream of `conn`. Either it is retiring
    /// a duplicate (retire ours too, or close it if we retired it first), or it is done
    /// with us (close).
    pub(crate) fn control_finished(&mut self, peer: NodeId, conn: usize) {
        let Some(links) = self.peers.get_mut(&peer) else { return };
        let others_open = links.iter().any(|l| l.id() != conn && l.state == LinkState::Open);
        let Some(link) = links.iter_mut().find(|l| l.id() == conn) else { return };
        match link.state {
            LinkState::Open if others_open => link.retire(),
            LinkState::Open => link.wind_down(),
            LinkState::Retiring => link.close_retired(),
            LinkState::Closing => {}
        }
    }

    pub(crate) fn dialing(&self, peer: NodeId) -> bool {
        self.dials.contains_key(&peer)
    }

    pub(crate) fn start_dial(&mut self, peer: NodeId) {
        let fresh = self.dials.insert(peer, Dial::default()).is_none();
        debug_assert!(fresh, "one dial per node at a time");
    }

    /// Marks the dial to `peer` as brought by a rendezvous (see [`Dial::routed`]).
    pub(crate) fn route_dial(&mut self, peer: NodeId) {
        if let Some(d) = self.dials.get_mut(&peer) {
            d.routed = true;
        }
    }

    pub(crate) fn is_routed(&self, peer: NodeId) -> bool {
        self.dials.get(&peer).is_some_and(|d| d.routed)
    }

    /// Holds `msg` until the dial to `peer` completes; false (and `msg` dropped) when no
    /// dial is in progress, the dial was cancelled, or the queue is full.
    pub(crate) fn queue(&mut self, peer: NodeId, msg: Msg) -> bool {
        match self.dials.get_mut(&peer) {
            Some(d) if !d.cancelled && d.queue.len() < DIAL_QUEUE_MSGS_MAX => {
                d.queue.push_back(msg);
                true
            }
            _ => false,
        }
    }

    /// Takes what waits for a dial that is still in progress (the peer dialed us first).
    pub(crate) fn take_queued(&mut self, peer: NodeId) -> VecDeque<Msg> {
        self.dials.get_mut(&peer).map(|d| std::mem::take(&mut d.queue)).unwrap_or_default()
    }

    /// Ends the dial to `peer`, whatever its outcome.
    pub(crate) fn finish_dial(&mut self, peer: NodeId) -> Option<Dial> {
        self.dials.remove(&peer)
    }

    /// Cancels the dial to `peer`, if any; returns the number of messages dropped.
    pub(crate) fn cancel_dial(&mut self, peer: NodeId) -> usize {
        self.dials.get_mut(&peer).map_or(0, |d| {
            d.cancelled = true;
            std::mem::take(&mut d.queue).len()
        })
    }
}
