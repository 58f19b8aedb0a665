//! What every networked subcommand shares: the tokio runtime, node ids, shutdown.

use std::future::Future;
use std::time::Duration;

pub fn block_on(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(fut)
}

/// A random node id (never the tracker's).
pub fn random_node_id() -> meshtv_proto::NodeId {
    meshtv_proto::NodeId(rand::random::<u64>().max(1))
}

/// Resolves on Ctrl-C or SIGTERM, or after `duration` if one is given.
pub async fn shutdown_signal(duration: Option<Duration>) {
    let term = async {
        #[cfg(unix)]
        {
            if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                s.recv().await;
                return;
            }
        }
        std::future::pending::<()>().await
    };
    let limit = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = limit => {}
    }
}

/// Resolves `--tracker HOST:PORT` (a name or an address) to one socket address, IPv4
/// first when the name has both (a tracker usually listens on one IPv4 address).
pub async fn resolve_tracker(spec: &str) -> anyhow::Result<std::net::SocketAddr> {
    if let Ok(addr) = spec.parse() {
        return Ok(addr);
    }
    let has_port = spec.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        anyhow::bail!("tracker address '{spec}' is not HOST:PORT (e.g. tracker.example.org:7000)");
    }
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host(spec).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => anyhow::bail!("cannot resolve tracker address '{spec}': {e}"),
    };
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve tracker address '{spec}': the name has no address"))
}

/// The UDP address to bind when the user gave none: every interface, in the tracker's
/// address family, any port.
pub fn default_bind(tracker: std::net::SocketAddr) -> std::net::SocketAddr {
    let any: std::net::IpAddr =
        if tracker.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    std::net::SocketAddr::new(any, 0)
}

/// The address to tell the tracker before (or without) STUN: the bound one, or, bound to
/// every interface, the local IP the OS would send from toward the tracker (no packet is
/// sent: connecting a UDP socket only picks a route). STUN's reflexive address, where
/// the tracker answers it, replaces this.
pub fn reachable_addr(bound: std::net::SocketAddr, tracker: std::net::SocketAddr) -> std::net::SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let probe = std::net::UdpSocket::bind(default_bind(tracker)).and_then(|s| {
        s.connect(tracker)?;
        s.local_addr()
    });
    match probe {
        Ok(local) => std::net::SocketAddr::new(local.ip(), bound.port()),
        Err(_) => bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_addresses_and_names() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            assert_eq!(resolve_tracker("127.0.0.1:7000").await.unwrap(), "127.0.0.1:7000".parse().unwrap());
            assert_eq!(resolve_tracker("[::1]:7000").await.unwrap(), "[::1]:7000".parse().unwrap());
            let local = resolve_tracker("localhost:7000").await.unwrap();
            assert!(local.ip().is_loopback() && local.port() == 7000, "{local}");
            for bad in ["localhost", "tracker.invalid:7000", ":7000", "localhost:99999"] {
                let e = resolve_tracker(bad).await.unwrap_err().to_string();
                assert!(e.contains(bad) && !e.contains('\n'), "{bad}: {e}");
            }
        });
    }

    #[test]
    fn binds_and_announced_addresses() {
        let v4: std::net::SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let v6: std::net::SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(default_bind(v4), "0.0.0.0:0".parse().unwrap());
        assert_eq!(default_bind(v6), "[::]:0".parse().unwrap());
        // Bound to every interface, the address told is a real one, with the bound port.
        assert_eq!(reachable_addr("0.0.0.0:4321".parse().unwrap(), v4), "127.0.0.1:4321".parse().unwrap());
        let bound: std::net::SocketAddr = "10.1.2.3:4321".parse().unwrap();
        assert_eq!(reachable_addr(bound, v4), bound);
    }
}
