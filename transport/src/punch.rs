//! Carrying out a rendezvous plan (`meshtv_proto::msg::Plan`, decided by the tracker
//! core): punch toward the other side's addresses, dial the address a punch proved (when
//! this side is the dialer), and fall back to the relay when the direct attempt runs out
//! of time.
//!
//! Both sides send punch packets to every target every [`PUNCH_INTERVAL`]: each one opens
//! this side's NAT toward that address, and the first that comes through from the other
//! side (or the ack of one of ours) proves a path both ways. The dialer then opens QUIC to
//! the address the proof came from, so the handshake goes through a path already open
//! instead of waiting out a lost first packet. The first round is sent by the event loop
//! itself, in the order plans arrive, so that a NAT allocating ports in sequence sees new
//! destinations in the order the peer's core predicted.
//!
//! Everything is bounded: the direct attempt by the plan's `direct_ms`, the relay attempt
//! and the wait of a side that does not dial by the connect timeout.

use crate::connection::{self, Event, ToLoop};
use crate::socket::{Proof, Side, PUNCH};
use meshtv_proto::msg::Plan;
use meshtv_proto::NodeId;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

/// Between two rounds of punches.
pub(crate) const PUNCH_INTERVAL: Duration = Duration::from_millis(50);
/// Proofs waiting for the punch task (more are of no use: the first one is enough).
pub(crate) const PROOFS_MAX: usize = 16;

/// One plan being carried out.
pub(crate) struct Job {
    pub(crate) peer: NodeId,
    pub(crate) local: NodeId,
    pub(crate) plan: Plan,
    /// Where the relay of the plan is, resolved by the loop.
    pub(crate) relay: Option<SocketAddr>,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) side: Arc<Side>,
    pub(crate) to_loop: ToLoop,
    pub(crate) timeout: Duration,
    /// Ways tried so far (read by the loop when the connection comes up).
    pub(crate) attempts: Arc<AtomicU32>,
}

/// Sends one round of punches: to every target, in order.
pub(crate) fn punch_round(side: &Side, plan: &Plan, peer: NodeId) {
    for t in &plan.targets {
        side.send_punch(PUNCH, *t, plan.token, peer);
    }
}

/// Runs the plan until a connection comes up (reported as `Event::Up` by the connection
/// it opened, or cancelled by the loop when one came up the other way) or it fails
/// (`Event::RouteFailed`).
pub(crate) async fn run(job: Job, mut proofs: mpsc::Receiver<Proof>, mut cancel: oneshot::Receiver<()>) {
    let Job { peer, local, plan, relay, endpoint, side, to_loop, timeout, attempts } = job;
    let start = Instant::now();
    let direct_deadline = start + Duration::from_millis(plan.direct_ms as u64);
    let connected = async {
        if plan.direct_ms > 0 && !plan.targets.is_empty() {
            if plan.dial && !plan.punch {
                attempts.fetch_add(1, Ordering::Relaxed);
                let left = direct_deadline.saturating_duration_since(Instant::now()).min(timeout);
                match connection::dial(&endpoint, plan.targets[0], local, left).await {
                    Ok(hs) => return Some(hs),
                    Err(e) => debug!(%peer, error = %e, "direct dial failed"),
                }
            } else {
                if plan.dial {
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(hs) =
                    punch_and_dial(&plan, peer, local, &endpoint, &side, &mut proofs, direct_deadline).await
                {
                    return Some(hs);
                }
            }
        }
        match (plan.dial, relay) {
            (true, Some(relay)) => {
                attempts.fetch_add(1, Ordering::Relaxed);
                let vaddr = side.virtual_addr(relay, peer)?;
                debug!(%peer, %relay, "dialing through the relay");
                match connection::dial(&endpoint, vaddr, local, timeout).await {
                    Ok(hs) => Some(hs),
                    Err(e) => {
                        debug!(%peer, error = %e, "relayed dial failed");
                        None
                    }
                }
            }
            (true, None) => None,
            (false, _) => {
                // The other side dials (directly or through the relay): give it time.
                tokio::time::sleep_until(direct_deadline.max(Instant::now()) + timeout).await;
                None
            }
        }
    };
    tokio::select! {
        _ = &mut cancel => {}
        hs = connected => {
            side.stop_punches(plan.token);
            match hs {
                Some(hs) => connection::serve(hs, peer, true, to_loop).await,
                None => {
                    let _ = to_loop.events.send(Event::RouteFailed { peer, token: plan.token }).await;
                }
            }
        }
    }
}

/// Punches every [`PUNCH_INTERVAL`] until the deadline; the dialer dials the first proven
/// address. `Some` only for the dialer, once its handshake is through.
async fn punch_and_dial(
    plan: &Plan,
    peer: NodeId,
    local: NodeId,
    endpoint: &quinn::Endpoint,
    side: &Side,
    proofs: &mut mpsc::Receiver<Proof>,
    deadline: Instant,
) -> Option<connection::Handshake> {
    let mut tick = tokio::time::interval_at(Instant::now() + PUNCH_INTERVAL, PUNCH_INTERVAL);
    let mut dialing: Option<
        std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<connection::Handshake>> + Send>>,
    > = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return None,
            _ = tick.tick() => punch_round(side, plan, peer),
            Some(proof) = proofs.recv() => {
                if plan.dial && dialing.is_none() {
                    debug!(%peer, from = %proof.from, "punch came through; dialing");
                    let left = deadline.saturating_duration_since(Instant::now());
                    let endpoint = endpoint.clone();
                    dialing = Some(Box::pin(async move { connection::dial(&endpoint, proof.from, local, left).await }));
                }
            }
            r = async { dialing.as_mut().expect("guarded").await }, if dialing.is_some() => match r {
                Ok(hs) => return Some(hs),
                Err(e) => {
                    debug!(%peer, error = %e, "dial over a punched path failed");
                    dialing = None;
                }
            },
        }
    }
}
