//! A tiny echo core and helpers to run it on real QUIC over 127.0.0.1.
//!
//! Every wait here is bounded and waits on a signal (the core's report channel) or polls
//! a condition with a deadline: no test sleeps to guess that something is ready.

#![allow(dead_code)] // each test file uses its own subset

use bytes::Bytes;
use meshtv_proto::msg::PeerInfo;
use meshtv_proto::{Msg, Node, NodeId, Outbox, Time, TimerId};
use meshtv_transport::{Driver, DriverConfig, StatsSnapshot, TransportStats};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Bound on every wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
pub const PIECE_BYTES: usize = 64 * 1024;

/// What the core saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Started,
    Message(NodeId, Msg),
    Timer(TimerId, Time),
    Disconnect(NodeId),
}

type Action = Box<dyn FnOnce(Time, &mut Outbox) + Send>;

/// Reports everything it sees, and answers `Request { seq, index }` with a 64 KiB piece
/// whose bytes are all `index as u8`.
pub struct Echo {
    start: Option<Action>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Node for Echo {
    fn on_start(&mut self, now: Time, out: &mut Outbox) {
        let _ = self.seen.send(Seen::Started);
        if let Some(start) = self.start.take() {
            start(now, out);
        }
    }

    fn on_message(&mut self, _now: Time, from: NodeId, msg: Msg, out: &mut Outbox) {
        if let Msg::Request { seq, index, .. } = msg {
            out.send(from, piece(seq, index));
        }
        let _ = self.seen.send(Seen::Message(from, msg));
    }

    fn on_timer(&mut self, now: Time, timer: TimerId, _out: &mut Outbox) {
        let _ = self.seen.send(Seen::Timer(timer, now));
    }

    fn on_disconnect(&mut self, _now: Time, peer: NodeId, _out: &mut Outbox) {
        let _ = self.seen.send(Seen::Disconnect(peer));
    }
}

pub fn piece(seq: u64, index: u16) -> Msg {
    Msg::Piece { seq, index, data: Bytes::from(vec![index as u8; PIECE_BYTES]) }
}

pub fn request(seq: u64, index: u16) -> Msg {
    Msg::Request { seq, index, urgent: true }
}

pub fn config(id: u64) -> DriverConfig {
    let mut cfg = DriverConfig::new(NodeId(id), "127.0.0.1:0".parse().unwrap());
    cfg.connect_timeout = Duration::from_secs(1);
    cfg
}

/// A bound driver, not yet running.
pub struct Bound {
    pub driver: Driver<Echo>,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

pub async fn try_bind(
    cfg: DriverConfig,
    start: impl FnOnce(Time, &mut Outbox) + Send + 'static,
) -> anyhow::Result<Bound> {
    let (tx, seen) = mpsc::unbounded_channel();
    let core = Arc::new(Mutex::new(Echo { start: Some(Box::new(start)), seen: tx }));
    let driver = Driver::bind(cfg, core).await?;
    Ok(Bound { driver, seen })
}

pub async fn bind(cfg: DriverConfig, start: impl FnOnce(Time, &mut Outbox) + Send + 'static) -> Bound {
    try_bind(cfg, start).await.expect("bind 127.0.0.1:0")
}

/// A running node and its handles.
pub struct Running {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    commands: mpsc::Sender<meshtv_transport::Command<Echo>>,
    stats: Arc<TransportStats>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Bound {
    pub fn run(self, id: u64) -> Running {
        let Bound { driver, seen } = self;
        let (addr, commands, stats) = (driver.local_addr(), driver.commands(), driver.stats());
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(driver.run(async move {
            let _ = stop.await;
        }));
        Running { id: NodeId(id), addr, seen, commands, stats, shutdown: Some(shutdown), task: Some(task) }
    }
}

/// Binds and runs a node that does `start` in `on_start`, and waits until it has started.
pub async fn start(cfg: DriverConfig, start: impl FnOnce(Time, &mut Outbox) + Send + 'static) -> Running {
    let id = cfg.id.0;
    let mut node = bind(cfg, start).await.run(id);
    node.expect(|s| *s == Seen::Started).await;
    node
}

impl Running {
    pub fn info(&self) -> PeerInfo {
        PeerInfo { id: self.id, addr: self.addr }
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Runs `f` against the core inside the driver's loop.
    pub async fn command(&self, f: impl FnOnce(&mut Echo, Time, &mut Outbox) + Send + 'static) {
        self.commands.send(Box::new(f)).await.map_err(|_| "driver stopped").unwrap();
    }

    /// Makes the core send `msg` to `to`.
    pub async fn send(&self, to: NodeId, msg: Msg) {
        self.command(move |_, _, out| out.send(to, msg)).await;
    }

    /// Waits for the first event matching `want`, skipping others; panics after [`WAIT`].
    pub async fn expect(&mut self, mut want: impl FnMut(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(s)) if want(&s) => return s,
                Ok(Some(_)) => {}
                Ok(None) => panic!("node {} stopped while waiting", self.id),
                Err(_) => panic!("node {}: nothing expected seen within {WAIT:?}", self.id),
            }
        }
    }

    /// Everything seen so far and not yet consumed.
    pub fn drain(&mut self) -> Vec<Seen> {
        std::iter::from_fn(|| self.seen.try_recv().ok()).collect()
    }

    /// Polls the stats until `cond` holds; panics after [`WAIT`].
    pub async fn wait_stats(&self, what: &str, cond: impl Fn(&StatsSnapshot) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !cond(&self.stats()) {
            assert!(tokio::time::Instant::now() < deadline, "node {}: {what} not reached: {:?}", self.id, self.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the driver and returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap()).await.expect("run returns after shutdown").unwrap()
    }
}

/// Connects `from` to `to` (from dials) and waits until `to` has a message from `from`.
pub async fn connect(from: &Running, to: &mut Running) {
    let info = to.info();
    let to_id = to.id;
    from.command(move |_, _, out| {
        out.dial(info);
        out.send(to_id, Msg::GetHeader { seq: 0 });
    })
    .await;
    let from_id = from.id;
    to.expect(|s| matches!(s, Seen::Message(f, Msg::GetHeader { seq: 0 }) if *f == from_id)).await;
}
