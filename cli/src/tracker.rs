//! `meshtv tracker`: runs the tracker core on a QUIC endpoint.

use meshtv_proto::NodeId;
use meshtv_tracker::{Tracker, TrackerConfig};
use meshtv_transport::{Driver, DriverConfig};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// UDP address to listen on (QUIC). Port 0 picks a free one; the address is printed.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = TrackerConfig { seed: rand::random(), ..TrackerConfig::default() };
    let core = Arc::new(Mutex::new(Tracker::new(cfg)));
    let driver = Driver::bind(
        DriverConfig { id: NodeId::TRACKER, bind: args.listen, tracker: None, connect_timeout: Duration::from_secs(5) },
        core,
    )
    .await?;
    println!("tracker listening on {}", driver.local_addr());
    driver.run(crate::runtime::shutdown_signal(None)).await
}
