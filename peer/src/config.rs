//! How a peer is set up by its driver.

use crate::playback::CatchUp;
use meshtv_proto::media::ChannelDescriptor;
use meshtv_proto::verify::{self, Verifier};
use meshtv_proto::NodeId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What this peer is in its channel.
pub enum PeerRole {
    /// Watches the channel of this name.
    Viewer { channel: String },
    /// Publishes the channel: holds the broadcaster's secret key to sign segment headers.
    Source { descriptor: ChannelDescriptor, secret: [u8; 32] },
}

/// Deliberate misbehaviour, for tests that prove the swarm survives it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Flip a byte in every piece this peer uploads.
    CorruptUploads,
}

pub struct PeerConfig {
    pub id: NodeId,
    /// Where other peers can dial this one.
    pub addr: SocketAddr,
    pub role: PeerRole,
    /// Upload capacity offered to the swarm, bits per second.
    pub upload_bps: u64,
    /// Seeds the peer's own RNG (partner choice tie-breaks).
    pub seed: u64,
    /// Complete segments needed before playback starts.
    pub start_segments: usize,
    /// A viewer starts as soon as its start segment is complete and it would play that
    /// far behind the source, without waiting for the other start segments (see
    /// [`crate::playback`]); it starts one segment behind the first it hears of. `None`:
    /// it waits for all `start_segments`. In a simulated 10,000-viewer crowd joining in 30 s
    /// on uplinks of 1.5x the bitrate, over its first 40 s, 4.5 s took startup p95 from
    /// 4.66 s to 3.25 s and live delay p95 from 6.34 s to 5.20 s. A lower delay starts
    /// viewers nearer the source than the young trees deliver, and the source, busy with
    /// their late pieces, brings newcomers theirs later: with a rule that always waited
    /// for the delay, 4 s gave startup p95 3.46 s and 2.1% rebuffering, 4.5 s 3.28 s and
    /// 0.6%. Once a late start segment was kept while still on its way, 4.25 s paid: over
    /// that crowd's whole 120 s, startup p95 3.02 s -> 2.96 s, rebuffering 0.10% -> 0.24%
    /// (4 s: 3.04 s and 2.4% over the first 40 s).
    pub start_delay: Option<Duration>,
    /// How long a joining viewer leaves its start segments to parents and partners before
    /// the source fallback may bring them (see `source_fallback`: the source is asked once
    /// less than that is left of the budget).
    pub start_budget: Duration,
    /// Segments kept behind the playhead, to serve partners that are behind.
    pub keep_behind_segments: u64,
    /// The least time a piece is left to its stripe parent's push before it is pulled; a
    /// parent whose pushes have lately come later is waited for that long (plus a margin).
    pub push_grace: Duration,
    /// A piece still missing this close to its deadline is fetched from the source.
    pub source_fallback: Duration,
    /// A request unanswered for this long is retried elsewhere.
    pub request_timeout: Duration,
    /// Most data asked of one partner and not yet received, in bytes (a count of requests
    /// would make small pieces slow to fetch: the bound is on what is in flight).
    pub partner_request_bytes_max: u64,
    /// Most children this peer serves, whatever the tracker says. An origin that serves
    /// every viewer (the simulator's origin-only baseline) raises it.
    pub children_max: usize,
    /// The most this peer may upload, bits per second (an operator's limit; no CLI flag
    /// sets it yet, `--upload-kbps` being the declared upload): a cap on the
    /// rate the peer measures of its uplink (see [`crate::uplink`]), never a claim. Pull
    /// requests are declined (`NoPiece`, so the asker goes elsewhere at once) while more
    /// than `serve_horizon` of data is in flight and queued: an answer that would arrive
    /// after the asker gave up only wastes the uplink, and an origin asked by thousands
    /// must shed what it cannot send in time. `None`: no cap.
    pub uplink_cap_bps: Option<u64>,
    /// Short, so that a slow partner declines at once and the asker turns to a faster
    /// one: in a simulated swarm on tight uplinks (2,000 viewers at 1.5x the bitrate),
    /// 1 s gave a startup p95 of 4.1 s, 0.5 s 3.4 s, 0.3 s 3.1 s.
    pub serve_horizon: Duration,
    /// Most data asked of the source and not yet received, in bytes (its fallback is for
    /// the few pieces the swarm could not bring in time, not a second feed).
    pub source_request_bytes_max: u64,
    /// Partners hear of new pieces at most this often (each announcement lists a whole
    /// segment's map, so one message covers every piece that came since the last). Haves
    /// are half of all messages in a swarm: in simulated 2,000- and 10,000-viewer swarms on
    /// tight uplinks, 600 ms instead of 300 ms sent 16-18% fewer messages and started
    /// viewers no later (1 s started the 10,000 later).
    pub have_interval: Duration,
    /// A viewer whose stripe parents have brought every piece in time for this long asks
    /// its partners to stop announcing to it, and asks again for their maps the moment a
    /// piece is overdue (`Msg::Interest`). `None`: it always listens (a pull-only mesh,
    /// which lives on the maps). Once a swarm has joined, a fed viewer pulled about once
    /// per hundred Haves it was sent; with 4 s, simulated crowds of 3,000 and 10,000
    /// viewers made 23% and 20% fewer events (nat-heavy at 2,000: 19%) with the same
    /// savings, continuity and startup, within a few hundredths of a percent or second.
    pub quiet_maps_after: Option<Duration>,
    /// How a player that fell behind catches up (see [`crate::playback`]). A 5 s target at
    /// 1.25x: in a simulated 2,000-viewer crowd on uplinks of 1.5x the bitrate, live delay
    /// p95 went from 6.21 s to 4.97 s with no more stalls and the same savings (a 4 s
    /// target: 4.25 s, but 0.1% rebuffering). dash.js catches up at up to 1.5x by default.
    pub catch_up: Option<CatchUp>,
    /// How often the peer decides what to pull and releases queued uploads; a viewer with
    /// nothing to decide for a while ticks less often (see `Peer`'s quiet ticks).
    pub tick: Duration,
    pub heartbeat: Duration,
    pub fault: Option<Fault>,
    /// Checks pieces and headers. Production: [`verify::Direct`], full BLAKE3 and ed25519
    /// on every one; the simulator shares one that remembers results per immutable buffer.
    pub verifier: Arc<dyn Verifier>,
}

impl PeerConfig {
    /// Defaults that suit 2 s segments on a real network.
    pub fn new(id: NodeId, addr: SocketAddr, role: PeerRole) -> PeerConfig {
        PeerConfig {
            id,
            addr,
            role,
            upload_bps: 10_000_000,
            seed: id.0,
            start_segments: 2,
            start_budget: Duration::from_millis(2200),
            start_delay: Some(Duration::from_millis(4250)),
            keep_behind_segments: 8,
            push_grace: Duration::from_millis(800),
            source_fallback: Duration::from_millis(1500),
            request_timeout: Duration::from_millis(1500),
            partner_request_bytes_max: 1 << 20,
            children_max: 64,
            uplink_cap_bps: None,
            serve_horizon: Duration::from_millis(300),
            source_request_bytes_max: 512 << 10,
            have_interval: Duration::from_millis(600),
            quiet_maps_after: Some(Duration::from_secs(4)),
            catch_up: Some(CatchUp { above: Duration::from_secs(5), rate: 1.25 }),
            tick: Duration::from_millis(100),
            heartbeat: Duration::from_secs(1),
            fault: None,
            verifier: Arc::new(verify::Direct),
        }
    }
}
