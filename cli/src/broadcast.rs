//! `meshtv broadcast`: ingests media with ffmpeg, signs each segment and seeds the swarm.

use anyhow::{bail, Context};
use meshtv_peer::{Peer, PeerConfig, PeerRole};
use meshtv_proto::media::{ChannelDescriptor, Container};
use meshtv_proto::msg::RejectReason;
use meshtv_proto::ChannelId;
use meshtv_transport::{Driver, DriverConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The tracker's address, HOST:PORT (a name or an IP address).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub tracker: String,
    /// The channel name viewers will watch.
    #[arg(long)]
    pub channel: String,
    /// A media file, or a URL ffmpeg opens: udp://HOST:PORT, srt://HOST:PORT (listener),
    /// rtmp://HOST:PORT/APP/KEY (listens, so OBS can publish to it).
    pub input: String,
    /// Replay a file forever as a live channel.
    #[arg(long = "loop")]
    pub looped: bool,
    /// Target segment duration in seconds (segments are cut at keyframes).
    #[arg(long, default_value_t = 2.0)]
    pub segment_secs: f64,
    /// Full copies of the stream the broadcaster uploads to the swarm; the viewers carry
    /// the rest. (Late pieces are still served from here on request.)
    #[arg(long, default_value_t = 1)]
    pub max_copies: u32,
    /// Number of stripes the stream is dealt into.
    #[arg(long, default_value_t = 4)]
    pub stripes: u8,
    /// Piece size in KiB.
    #[arg(long, default_value_t = 64)]
    pub piece_kib: u32,
    /// Broadcaster key file (32 secret bytes, hex). Created if missing. Without it a fresh
    /// key is used for this run.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// UDP address to bind (default: every interface, any port, in the tracker's address
    /// family).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Also write every segment produced to this folder as SEQ.ts (for checking viewers).
    #[arg(long)]
    pub dump_dir: Option<PathBuf>,
    /// Serve the broadcaster's figures at http://ADDR/api/stats (JSON: wire_bytes_sent,
    /// the UDP bytes it sent; media_bytes_sent; viewers_connected), e.g. 127.0.0.1:0.
    /// Off by default; the address is printed as "stats: URL".
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !(0.5..=30.0).contains(&args.segment_secs) {
        bail!("--segment-secs must be between 0.5 and 30");
    }
    let tracker = crate::runtime::resolve_tracker(&args.tracker).await?;
    let bind = args.bind.unwrap_or_else(|| crate::runtime::default_bind(tracker));
    let info = meshtv_media::probe(&args.input)?;
    let key = crate::keys::load_or_create(args.key.as_deref())?;
    if let Some(dir) = &args.dump_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let descriptor = ChannelDescriptor {
        id: ChannelId::derive(&key.public_key(), &args.channel),
        name: args.channel.clone(),
        broadcaster_key: key.public_key(),
        container: Container::MpegTs,
        live: true,
        stripes: args.stripes,
        piece_bytes: args.piece_kib * 1024,
        segment_duration_ms_target: (args.segment_secs * 1000.0) as u32,
        bitrate_bps: info.bitrate_bps,
    };
    descriptor.validate().map_err(|e| anyhow::anyhow!("bad channel settings: {e}"))?;
    let id = crate::runtime::random_node_id();
    // Slots are counted in stripes; a little headroom over the copies asked for keeps
    // the last stripe slot from being lost to rounding.
    let upload_bps = descriptor.stripe_bps() * args.stripes as u64 * args.max_copies as u64 + 1;
    let core = Arc::new(Mutex::new(Peer::new({
        let mut cfg = PeerConfig::new(id, bind, PeerRole::Source { descriptor, secret: key.secret() });
        cfg.upload_bps = upload_bps;
        cfg
    })));
    let driver = Driver::bind(
        DriverConfig { id, bind, tracker: Some(tracker), connect_timeout: Duration::from_secs(5) },
        core.clone(),
    )
    .await?;
    // Tell the tracker where to find us: where its STUN sees us if it answers STUN, else
    // the bound address (a concrete one if bound to every interface).
    let local = match driver.discover_nat(tracker).await {
        Some(nat) => nat.reflexive,
        None => crate::runtime::reachable_addr(driver.local_addr(), tracker),
    };
    let commands = driver.commands();
    core.lock().expect("core lock").set_addr(local);
    if let Some(addr) = args.http {
        let view = crate::source_stats::SourceView {
            channel: args.channel.clone(),
            core: core.clone(),
            transport: driver.stats(),
        };
        let bound = crate::source_stats::serve(addr, view).await?;
        println!("stats: http://{bound}/api/stats");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let ingest = {
        let stop = stop.clone();
        let opts = meshtv_media::IngestOptions {
            input: args.input.clone(),
            looped: args.looped,
            realtime: true,
            segment_duration: Duration::from_secs_f64(args.segment_secs),
        };
        let dump = args.dump_dir.clone();
        std::thread::spawn(move || {
            let r = meshtv_media::ingest(&opts, &stop, |seg| {
                if let Some(dir) = &dump {
                    if let Err(e) = std::fs::write(dir.join(format!("{}.ts", seg.seq)), &seg.data) {
                        tracing::warn!("cannot write segment to dump dir: {e}");
                    }
                }
                let cmd: meshtv_transport::Command<Peer> = Box::new(move |core: &mut Peer, now, out| {
                    core.publish(now, seg.seq, seg.duration_ms, &seg.data, out)
                });
                commands.blocking_send(cmd).is_ok()
            });
            let _ = ended_tx.send(r.map_err(anyhow::Error::from));
        })
    };

    println!(
        "broadcasting '{}' from {} ({} {}x{}, {:.2} Mbps) via tracker {}",
        args.channel,
        args.input,
        info.video_codec,
        info.width,
        info.height,
        info.bitrate_bps as f64 / 1e6,
        args.tracker
    );
    let watchdog = {
        let core = core.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(reason) = core.lock().expect("core lock").rejected().cloned() {
                    return Err(match reason {
                        RejectReason::NameTaken => {
                            anyhow::anyhow!("channel name '{}' is taken by another broadcaster", args.channel)
                        }
                        other => anyhow::anyhow!("tracker rejected the channel: {other:?}"),
                    });
                }
            }
        }
    };
    let outcome = tokio::select! {
        r = driver.run(crate::runtime::shutdown_signal(None)) => r,
        r = watchdog => r,
        r = &mut ended_rx => {
            match r {
                Ok(Err(e)) => Err(e),
                _ => { println!("input ended"); Ok(()) }
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    drop(ingest);
    outcome
}
