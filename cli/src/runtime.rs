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
