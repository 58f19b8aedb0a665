//! `meshtv tracker`: runs the tracker core on a QUIC endpoint.

use meshtv_proto::NodeId;
use meshtv_tracker::{Tracker, TrackerConfig};
use meshtv_transport::{Driver, DriverConfig, RelayLimits};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// UDP address to listen on (QUIC). Port 0 picks a free one; the address is printed.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// A second STUN address (another IP of this host, another port), so that peers can
    /// classify their NAT (RFC 5780). The tracker also answers STUN there with that IP and
    /// the listen port, and with the listen IP and that port. Needs --listen on one IP.
    #[arg(long)]
    pub stun_alt: Option<SocketAddr>,
    /// Relay bandwidth for all pairs that cannot connect directly, kbit/s (0: no relay).
    #[arg(long, default_value_t = 50_000)]
    pub relay_kbps: u64,
    /// Relay bandwidth for any one pair, kbit/s.
    #[arg(long, default_value_t = 8_000)]
    pub relay_pair_kbps: u64,
    /// Write the tracker's view (channels, peers and their NATs) to this file as JSON,
    /// every second.
    #[arg(long)]
    pub status_file: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = TrackerConfig { seed: rand::random(), relay_bps: args.relay_kbps * 1000, ..TrackerConfig::default() };
    let mut tracker = Tracker::new(cfg);
    tracker.rendezvous.relay = args.relay_kbps > 0;
    let core = Arc::new(Mutex::new(tracker));
    let driver = Driver::bind(
        DriverConfig { id: NodeId::TRACKER, bind: args.listen, tracker: None, connect_timeout: Duration::from_secs(5) },
        core.clone(),
    )
    .await?;
    driver.serve_stun(args.stun_alt).await?;
    if args.relay_kbps > 0 {
        driver.serve_relay(RelayLimits {
            bytes_per_s_max: args.relay_kbps * 1000 / 8,
            pair_bytes_per_s_max: args.relay_pair_kbps * 1000 / 8,
        });
    }
    println!("tracker listening on {}", driver.local_addr());
    if let Some(alt) = args.stun_alt {
        println!("tracker STUN on {} and {alt}", driver.local_addr());
    }
    if let Some(path) = args.status_file {
        let stats = driver.stats();
        tokio::spawn(async move {
            loop {
                let snapshot = core.lock().map(|c| c.snapshot()).ok();
                let mut v = serde_json::to_value(snapshot).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("transport".into(), serde_json::to_value(stats.snapshot()).unwrap_or_default());
                }
                // Written whole, then renamed: a reader never sees half a file.
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, v.to_string()).and_then(|()| std::fs::rename(&tmp, &path)).is_err() {
                    tracing::warn!(path = %path.display(), "cannot write the status file");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    driver.run(crate::runtime::shutdown_signal(None)).await
}
