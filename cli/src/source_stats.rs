//! `meshtv broadcast --http ADDR`: the broadcaster's own figures at `GET /api/stats`, the
//! source's side of `savings` (DESIGN.md). The demo and the e2e tests read it; savings
//! itself needs what the viewers' players played, which only the viewers know.
//!
//! Fields:
//! - `wire_bytes_sent`: UDP bytes the source's socket sent for its QUIC connections
//!   (`TransportStats::udp_bytes_sent`: every connection since the start, closed ones
//!   included; pieces, control, QUIC's own packets; to viewers and the tracker alike);
//! - `media_bytes_sent`: piece payload bytes the source core uploaded
//!   (`PeerStats::bytes_uploaded`: pushes and fallback answers);
//! - `viewers_connected`: nodes other than the tracker with a connection up now;
//! - `children`, `channel`, `id`, and the transport's counters under `transport`.

use anyhow::Context;
use axum::extract::State;
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use meshtv_peer::Peer;
use meshtv_proto::NodeId;
use meshtv_transport::TransportStats;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the stats route reads: the source core and its transport's counters.
#[derive(Clone)]
pub struct SourceView {
    pub channel: String,
    pub core: Arc<Mutex<Peer>>,
    pub transport: Arc<TransportStats>,
}

impl SourceView {
    /// The figures `/api/stats` answers with (see the module's doc).
    pub fn figures(&self) -> Value {
        let (id, peer) = {
            let core = self.core.lock().expect("core lock");
            (core.id(), core.stats(meshtv_transport::now()))
        };
        let transport = self.transport.snapshot();
        let tracker = NodeId::TRACKER.to_string();
        let viewers = self.transport.connections().iter().filter(|c| c.peer != tracker).count();
        json!({
            "channel": self.channel,
            "id": id.to_string(),
            "wire_bytes_sent": transport.udp_bytes_sent,
            "media_bytes_sent": peer.bytes_uploaded,
            "viewers_connected": viewers,
            "children": peer.children,
            "transport": transport,
        })
    }
}

/// Binds `addr` (a busy port is an error naming it) and serves `/api/stats` on the
/// current runtime until it ends; returns the bound address.
pub async fn serve(addr: SocketAddr, view: SourceView) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve the broadcaster's stats on {addr} (port busy? pick another with --http)")
    })?;
    let local = listener.local_addr()?;
    let app = Router::new().route("/api/stats", get(stats)).with_state(view);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("broadcaster stats server ended: {e}");
        }
    });
    Ok(local)
}

async fn stats(State(view): State<SourceView>) -> impl IntoResponse {
    ([(CACHE_CONTROL, "no-cache"), (ACCESS_CONTROL_ALLOW_ORIGIN, "*")], Json(view.figures()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtv_peer::{PeerConfig, PeerRole};
    use meshtv_proto::media::{ChannelDescriptor, Container};
    use meshtv_proto::sign::Broadcaster;
    use meshtv_proto::ChannelId;
    use std::sync::atomic::Ordering;

    fn source_view() -> SourceView {
        let key = Broadcaster::from_secret([7; 32]);
        let descriptor = ChannelDescriptor {
            id: ChannelId::derive(&key.public_key(), "t"),
            name: "t".into(),
            broadcaster_key: key.public_key(),
            container: Container::MpegTs,
            live: true,
            stripes: 4,
            piece_bytes: 64 * 1024,
            segment_duration_ms_target: 2000,
            bitrate_bps: 1_000_000,
        };
        let cfg = PeerConfig::new(
            NodeId(5),
            "127.0.0.1:0".parse().unwrap(),
            PeerRole::Source { descriptor, secret: key.secret() },
        );
        SourceView { channel: "t".into(), core: Arc::new(Mutex::new(Peer::new(cfg))), transport: Arc::default() }
    }

    #[tokio::test]
    async fn stats_answer_the_wire_and_media_bytes() {
        let view = source_view();
        view.transport.udp_bytes_sent.store(12_345, Ordering::Relaxed);
        let addr = serve("127.0.0.1:0".parse().unwrap(), view).await.unwrap();
        let body = tokio::task::spawn_blocking(move || {
            ureq::get(&format!("http://{addr}/api/stats")).call().unwrap().into_string().unwrap()
        })
        .await
        .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["wire_bytes_sent"], 12_345, "{v}");
        assert_eq!(v["media_bytes_sent"], 0, "{v}");
        assert_eq!(v["viewers_connected"], 0, "{v}");
        assert_eq!(v["channel"], "t", "{v}");
    }
}
