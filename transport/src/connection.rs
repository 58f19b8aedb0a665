//! One QUIC connection to one node: the hello handshake, and the tasks that move frames
//! between the connection and the event loop.
//!
//! Per connection there is one writer task fed by a bounded queue (the event loop never
//! waits on a slow peer), one reader for the control stream, one loop accepting piece
//! streams, and one watcher that reports the end of the connection. Readers decode every
//! frame with the proto codec; a peer that sends bytes that do not decode is cut off,
//! because nothing it says after garbage can be trusted to be framed right.

use crate::framing::{self, FrameError, FRAME_PREFIX_BYTES};
use crate::links::Link;
use crate::stats::{bump, TransportStats};
use crate::tls;
use anyhow::anyhow;
use meshtv_proto::{codec, limits, Msg, NodeId};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

/// Messages waiting for one connection's writer; beyond this they are dropped and counted.
pub(crate) const WRITE_QUEUE_MSGS_MAX: usize = 1024;
/// Piece streams of one connection read at once: bounds the memory one peer can pin
/// (this many frames of at most `FRAME_BYTES_MAX`).
const PIECE_READS_MAX: usize = 32;
/// How long a closing connection waits for the peer to acknowledge what was written.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// QUIC application close codes, so that a peer's logs say why it was cut off.
pub(crate) const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
pub(crate) const CLOSE_PROTOCOL: VarInt = VarInt::from_u32(1);
pub(crate) const CLOSE_DUPLICATE: VarInt = VarInt::from_u32(2);
pub(crate) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(3);

/// What connection tasks tell the event loop. `conn` is the connection's stable id, so
/// that the loop can tell a node's current connection from one that was replaced.
pub(crate) enum Event {
    /// A connection finished its hello and can carry messages.
    Up {
        peer: NodeId,
        link: Link,
    },
    DialFailed {
        peer: NodeId,
        error: String,
    },
    Message {
        from: NodeId,
        conn: usize,
        msg: Msg,
    },
    /// The peer finished its side of the control stream: it will send nothing more here.
    ControlFinished {
        peer: NodeId,
        conn: usize,
    },
    Down {
        peer: NodeId,
        conn: usize,
        reason: quinn::ConnectionError,
    },
    /// How a piece written to `peer` fared: acknowledged in full by the peer, or lost
    /// (never written, or its connection ended first). Every piece a core hands the
    /// driver is reported once (see `Node::on_piece_acked`).
    PieceAcked {
        peer: NodeId,
        seq: u64,
        index: u16,
        delivered: bool,
        /// QUIC's round-trip estimate for the connection when it was reported.
        rtt: Duration,
    },
    /// A rendezvous plan ran out of ways to connect.
    RouteFailed {
        peer: NodeId,
        token: u64,
    },
    /// The tracker did not answer a rendezvous request in time.
    PlanMissing {
        peer: NodeId,
        asked: tokio::time::Instant,
    },
}

/// What the event loop asks of a connection's writer, in order.
pub(crate) enum Outgoing {
    Msg(Msg),
    /// Write what came before, then finish the control stream (a duplicate connection
    /// being retired: the peer stops sending on it too, then it is closed).
    Finish,
    /// Write what came before, give the peer a moment to acknowledge it, then close.
    Close,
}

/// What connection tasks need to talk back: the loop's event queue and the counters.
#[derive(Clone)]
pub(crate) struct ToLoop {
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) stats: Arc<TransportStats>,
}

/// A connection whose hello went through, with its control stream.
pub(crate) struct Handshake {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
}

impl Handshake {
    pub(crate) fn close(&self, code: VarInt, reason: &[u8]) {
        self.conn.close(code, reason);
    }
}

/// Dials `addr` and says hello as `local`, all within `timeout`.
pub(crate) async fn dial(
    endpoint: &Endpoint,
    addr: SocketAddr,
    local: NodeId,
    timeout: Duration,
) -> anyhow::Result<Handshake> {
    let connecting = endpoint.connect(addr, tls::SERVER_NAME)?;
    let handshake = async {
        let conn = connecting.await?;
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&framing::hello(local)).await?;
        anyhow::Ok(Handshake { conn, send, recv })
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| anyhow!("no QUIC handshake within {} ms", timeout.as_millis()))?
}

/// Completes an incoming connection and reads the dialer's hello, within `timeout`.
pub(crate) async fn accept(incoming: quinn::Incoming, timeout: Duration) -> anyhow::Result<(NodeId, Handshake)> {
    let remote = incoming.remote_address();
    let handshake = async {
        let conn = incoming.await?;
        let (send, mut recv) = conn.accept_bi().await?;
        match framing::read_hello(&mut recv).await {
            Ok(peer) => Ok((peer, Handshake { conn, send, recv })),
            Err(e) => {
                conn.close(CLOSE_PROTOCOL, b"bad hello");
                Err(anyhow!("bad hello from {remote}: {e}"))
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| anyhow!("no hello from {remote} within {} ms", timeout.as_millis()))?
}

/// Starts the writer of a connection to `peer` and returns its [`Link`] for the loop's
/// table, with the readers to run once the link is registered: a message must never reach
/// the loop before the link it came on.
pub(crate) fn open(hs: Handshake, peer: NodeId, outbound: bool, to_loop: ToLoop) -> (Link, Readers) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_MSGS_MAX);
    tokio::spawn(write_loop(hs.conn.clone(), hs.send, rx, peer, to_loop.clone()));
    let link = Link::new(hs.conn.clone(), outbound, tx);
    (link, Readers { conn: hs.conn, recv: hs.recv, peer, to_loop })
}

/// Registers a fresh connection with the loop, then serves it until it ends.
pub(crate) async fn serve(hs: Handshake, peer: NodeId, outbound: bool, to_loop: ToLoop) {
    let (link, readers) = open(hs, peer, outbound, to_loop.clone());
    if to_loop.events.send(Event::Up { peer, link }).await.is_ok() {
        readers.run().await;
    }
}

/// The reading side of one connection.
pub(crate) struct Readers {
    conn: Connection,
    recv: RecvStream,
    peer: NodeId,
    to_loop: ToLoop,
}

impl Readers {
    /// Reads until the connection ends, then reports its end.
    pub(crate) async fn run(self) {
        let Readers { conn, recv, peer, to_loop } = self;
        tokio::spawn(read_pieces(conn.clone(), peer, to_loop.clone()));
        tokio::spawn(read_control(conn.clone(), recv, peer, to_loop.clone()));
        let reason = conn.closed().await;
        let _ = to_loop.events.send(Event::Down { peer, conn: conn.stable_id(), reason }).await;
    }
}

async fn read_control(conn: Connection, mut recv: RecvStream, peer: NodeId, to_loop: ToLoop) {
    loop {
        match framing::read_frame(&mut recv).await {
            Ok(Some(frame)) => {
                if !deliver(&conn, peer, frame, &to_loop).await {
                    return;
                }
            }
            Ok(None) => {
                let _ = to_loop.events.send(Event::ControlFinished { peer, conn: conn.stable_id() }).await;
                return;
            }
            Err(FrameError::Io(e)) => {
                debug!(%peer, error = %e, "control stream ended");
                conn.close(CLOSE_NORMAL, b"control stream lost");
                return;
            }
            Err(e) => {
                warn!(%peer, error = %e, "bad frame on the control stream; closing the connection");
                conn.close(CLOSE_PROTOCOL, b"bad frame");
                return;
            }
        }
    }
}

/// Accepts piece streams, reading a bounded number at once: each carries one frame.
async fn read_pieces(conn: Connection, peer: NodeId, to_loop: ToLoop) {
    let permits = Arc::new(Semaphore::new(PIECE_READS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let Ok(mut stream) = conn.accept_uni().await else { return };
        let (conn, to_loop) = (conn.clone(), to_loop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match framing::read_frame(&mut stream).await {
                Ok(Some(frame)) => {
                    deliver(&conn, peer, frame, &to_loop).await;
                }
                Ok(None) => {}
                Err(FrameError::Io(e)) => debug!(%peer, error = %e, "piece stream lost"),
                Err(e) => {
                    warn!(%peer, error = %e, "bad frame on a piece stream; closing the connection");
                    conn.close(CLOSE_PROTOCOL, b"bad frame");
                }
            }
        });
    }
}

/// Decodes a frame from `peer` and hands it to the loop. False when reading should stop:
/// the frame was garbage (the connection is then closed) or the loop is gone.
async fn deliver(conn: &Connection, peer: NodeId, frame: Vec<u8>, to_loop: &ToLoop) -> bool {
    match codec::decode(&frame) {
        Ok(msg) => {
            to_loop.stats.count_recv(msg.is_media(), frame.len() + FRAME_PREFIX_BYTES);
            to_loop.events.send(Event::Message { from: peer, conn: conn.stable_id(), msg }).await.is_ok()
        }
        Err(e) => {
            warn!(%peer, error = %e, "undecodable frame dropped; closing the connection");
            conn.close(CLOSE_PROTOCOL, b"undecodable frame");
            false
        }
    }
}

async fn write_loop(
    conn: Connection,
    mut control: SendStream,
    mut queue: mpsc::Receiver<Outgoing>,
    peer: NodeId,
    to_loop: ToLoop,
) {
    let ToLoop { events, stats } = to_loop;
    while let Some(out) = queue.recv().await {
        let msg = match out {
            Outgoing::Msg(msg) => msg,
            Outgoing::Finish => {
                let _ = control.finish();
                return;
            }
            Outgoing::Close => {
                // QUIC discards unsent stream data on close: let what was written arrive.
                let _ = control.finish();
                let _ = tokio::time::timeout(CLOSE_LINGER, control.stopped()).await;
                conn.close(CLOSE_NORMAL, b"closed");
                return;
            }
        };
        let piece = match &msg {
            Msg::Piece { seq, index, .. } => Some((*seq, *index)),
            _ => None,
        };
        let (written, acked) = match write_msg(&conn, &mut control, &msg, &stats).await {
            Ok(acked) => (Ok(()), acked),
            Err(e) => (Err(e), None),
        };
        if let Some((seq, index)) = piece {
            report_ack(&events, &conn, peer, seq, index, acked).await;
        }
        if let Err(e) = written {
            // A connection that cannot be written to is of no use; closing it lets the
            // loop learn of it (and report it) instead of queueing into a dead writer.
            debug!(%peer, error = %e, "write failed; closing the connection");
            conn.close(CLOSE_NORMAL, b"write failed");
            return;
        }
    }
}

/// Tells the loop how a piece fared: at once when it was never written, else once the
/// peer acknowledged all of it (or its connection ended first), without holding up the
/// writer.
async fn report_ack(
    events: &mpsc::Sender<Event>,
    conn: &Connection,
    peer: NodeId,
    seq: u64,
    index: u16,
    acked: Option<Acked>,
) {
    let Some(acked) = acked else {
        let lost = Event::PieceAcked { peer, seq, index, delivered: false, rtt: Duration::ZERO };
        let _ = events.send(lost).await;
        return;
    };
    let (events, conn) = (events.clone(), conn.clone());
    tokio::spawn(async move {
        let delivered = matches!(acked.await, Ok(None));
        let _ = events.send(Event::PieceAcked { peer, seq, index, delivered, rtt: conn.rtt() }).await;
    });
}

/// What `SendStream::stopped` gives: resolves once the peer acknowledged a piece's stream.
type Acked = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<VarInt>, quinn::StoppedError>> + Send>>;

/// Writes one message; for a piece written, the future that resolves when the peer has
/// all of it. `Ok(None)` for a piece means it was dropped unwritten.
async fn write_msg(
    conn: &Connection,
    control: &mut SendStream,
    msg: &Msg,
    stats: &TransportStats,
) -> anyhow::Result<Option<Acked>> {
    // The receiver would take an out-of-bounds message for garbage and cut us off: a core
    // bug must cost one message, not the connection.
    if let Err(why) = msg.validate() {
        warn!(why, "a core sent a message out of bounds; dropped");
        bump(&stats.messages_dropped, 1);
        return Ok(None);
    }
    let body = codec::encode(msg);
    if body.len() > limits::FRAME_BYTES_MAX {
        warn!(bytes = body.len(), "a core sent a message larger than a frame; dropped");
        bump(&stats.messages_dropped, 1);
        return Ok(None);
    }
    let mut acked: Option<Acked> = None;
    if let Msg::Piece { seq, .. } = msg {
        let mut stream = conn.open_uni().await?;
        stream.set_priority(framing::piece_priority(*seq))?;
        framing::write_frame(&mut stream, &body).await?;
        stream.finish()?;
        acked = Some(Box::pin(stream.stopped()));
    } else {
        framing::write_frame(control, &body).await?;
    }
    stats.count_sent(msg.is_media(), body.len() + FRAME_PREFIX_BYTES);
    Ok(acked)
}
