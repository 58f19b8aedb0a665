//! `meshtv watch`: joins a channel's swarm and serves it to local players over HTTP.

use crate::view::PeerView;
use anyhow::{bail, Context};
use meshtv_peer::{Fault, Peer, PeerConfig, PeerRole};
use meshtv_proto::msg::RejectReason;
use meshtv_transport::{Driver, DriverConfig};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The tracker's address, HOST:PORT (a name or an IP address).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub tracker: String,
    /// The channel to watch.
    pub channel: String,
    /// Where the local player page and HLS stream are served (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// UDP address for the swarm connection (default: every interface, any port, in the
    /// tracker's address family).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Upload capacity offered to other viewers, kbit/s.
    #[arg(long, default_value_t = 10_000)]
    pub upload_kbps: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Testing only: misbehave on purpose (corrupt-uploads).
    #[arg(long, hide = true)]
    pub fault: Option<String>,
}

/// How often a viewer waiting for its channel asks the tracker again.
const REJOIN_EVERY: Duration = Duration::from_secs(1);

pub async fn run(args: Args) -> anyhow::Result<()> {
    let fault = match args.fault.as_deref() {
        None => None,
        Some("corrupt-uploads") => Some(Fault::CorruptUploads),
        Some(other) => bail!("unknown fault '{other}'"),
    };
    // Bind HTTP first: a busy port is the most common mistake and costs nothing to catch.
    let http = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot serve the player on {} (port busy? pick another with --http)", args.http))?;
    let tracker = crate::runtime::resolve_tracker(&args.tracker).await?;
    let bind = args.bind.unwrap_or_else(|| crate::runtime::default_bind(tracker));
    let id = crate::runtime::random_node_id();
    let mut cfg = PeerConfig::new(id, bind, PeerRole::Viewer { channel: args.channel.clone() });
    cfg.upload_bps = args.upload_kbps * 1000;
    cfg.fault = fault;
    let core = Arc::new(Mutex::new(Peer::new(cfg)));
    let driver = Driver::bind(
        DriverConfig { id, bind, tracker: Some(tracker), connect_timeout: Duration::from_secs(5) },
        core.clone(),
    )
    .await?;
    // Where others reach us: the bound address, made concrete if bound to every interface…
    core.lock().expect("core lock").set_addr(crate::runtime::reachable_addr(driver.local_addr(), tracker));
    // …or better, where the tracker's STUN sees us. Classifying our NAT before joining
    // also lets the tracker plan our connections (bounded: about a second at most).
    if let Some(nat) = driver.discover_nat(tracker).await {
        println!("nat: {} (reflexive address {})", nat.kind(), nat.reflexive);
        let mut core = core.lock().expect("core lock");
        core.set_addr(nat.reflexive);
        core.set_nat(nat);
    }
    let transport = driver.stats();
    let commands = driver.commands();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let swarm = tokio::spawn(driver.run(async move {
        let _ = stop_rx.await;
    }));

    // Wait for the tracker's answer before telling the user where to point a player. A
    // channel that is not live yet is waited for (a viewer may open its player before
    // the broadcaster starts): the join is asked again every `REJOIN_EVERY`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut waiting_for_channel = false;
    let started = Instant::now();
    let mut next_rejoin = Instant::now();
    loop {
        {
            let c = core.lock().expect("core lock");
            match c.rejected() {
                Some(RejectReason::UnknownChannel) => {
                    if !waiting_for_channel {
                        println!("waiting: channel '{}' is not live on tracker {} yet", args.channel, args.tracker);
                        waiting_for_channel = true;
                    }
                    if Instant::now() >= next_rejoin {
                        next_rejoin = Instant::now() + REJOIN_EVERY;
                        let rejoin: meshtv_transport::Command<Peer> = Box::new(|p, _now, out| p.rejoin(out));
                        if commands.try_send(rejoin).is_err() {
                            bail!("the swarm connection stopped while waiting for channel '{}'", args.channel);
                        }
                    }
                }
                Some(other) => bail!("tracker refused to let us join: {other:?}"),
                None if c.descriptor().is_some() => break,
                None => {}
            }
        }
        if swarm.is_finished() {
            return match swarm.await {
                Ok(Err(e)) => Err(e),
                _ => Err(anyhow::anyhow!("swarm connection ended before the tracker answered")),
            };
        }
        if Instant::now() > deadline && !waiting_for_channel {
            bail!("tracker {} did not answer within 10 s", args.tracker);
        }
        // `--duration` bounds the wait too: a run that was to stop by then gives up.
        if let Some(secs) = args.duration.filter(|&d| waiting_for_channel && started.elapsed().as_secs_f64() > d) {
            bail!("channel '{}' did not go live on tracker {} within {secs} s", args.channel, args.tracker);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let http_addr = http.local_addr()?;
    let view = Arc::new(PeerView { channel: args.channel.clone(), core: core.clone(), transport });
    println!("player: http://{http_addr}/");
    println!("hls: http://{http_addr}/live/{}/index.m3u8", args.channel);
    let duration = args.duration.map(Duration::from_secs_f64);
    meshtv_gateway::serve(http, view, crate::runtime::shutdown_signal(duration)).await?;
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(3), swarm).await {
        Ok(Ok(r)) => r,
        _ => Ok(()),
    }
}
