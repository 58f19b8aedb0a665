//! The node's QUIC endpoint: one UDP socket that both accepts and dials (and carries STUN,
//! punches and relay frames beside QUIC), and the QUIC transport parameters every meshtv
//! connection uses.

use crate::socket::{MeshSocket, Side};
use crate::stats::TransportStats;
use crate::tls;
use anyhow::Context;
use meshtv_proto::{limits, NodeId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, TransportConfig, VarInt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Keeps NAT bindings open and lets a silent peer be noticed well within the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A peer not heard from for this long is gone (it missed about five keep-alives).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Every piece is its own stream: enough for a few segments of small pieces in flight.
const UNI_STREAMS_MAX: u32 = 1024;
/// One control stream per connection, opened by the dialer.
const BI_STREAMS_MAX: u32 = 1;
/// Per stream: a whole maximum frame fits, so a piece never waits for a window update.
const STREAM_WINDOW_BYTES: u32 = 4 * limits::FRAME_BYTES_MAX as u32;
/// Per connection: the bound on unread data a peer can make us buffer.
const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Unacknowledged data we buffer per connection: a bandwidth-delay product of about
/// 300 Mbit/s at 100 ms, without queueing seconds of stale pieces on a slow link.
const SEND_WINDOW_BYTES: u64 = 4 * 1024 * 1024;

fn transport_config() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IdleTimeout::try_from(IDLE_TIMEOUT).expect("5 s is a valid idle timeout")))
        .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS_MAX))
        .max_concurrent_bidi_streams(VarInt::from_u32(BI_STREAMS_MAX))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES))
        .send_window(SEND_WINDOW_BYTES);
    Arc::new(t)
}

/// The client side of every dial. Public so that tools and tests can speak to a node
/// without running a driver.
pub fn client_config() -> anyhow::Result<quinn::ClientConfig> {
    let crypto = QuicClientConfig::try_from(tls::client_crypto()?)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

fn server_config() -> anyhow::Result<quinn::ServerConfig> {
    let crypto = QuicServerConfig::try_from(tls::server_crypto()?)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

/// Binds `addr` and makes it an endpoint that serves and dials, on the socket it shares
/// with STUN, punching and relaying (see `socket`). Must run inside tokio.
pub(crate) fn bind(
    addr: SocketAddr,
    local_id: NodeId,
    stats: Arc<TransportStats>,
) -> anyhow::Result<(quinn::Endpoint, Arc<Side>)> {
    let server = server_config().context("building the TLS server identity")?;
    let client = client_config().context("building the TLS client configuration")?;
    // The cause goes into the message itself, so that it shows however the error is printed.
    let socket = MeshSocket::bind(addr, local_id, stats)
        .map_err(|e| anyhow::anyhow!("cannot bind UDP {addr}: {e} (is another node using this address?)"))?;
    let side = socket.side.clone();
    // QUIC's fixed bit is what tells QUIC from STUN, punch and relay datagrams on the
    // socket: peers must not grease it.
    let mut endpoint_config = EndpointConfig::default();
    endpoint_config.grease_quic_bit(false);
    let mut endpoint =
        quinn::Endpoint::new_with_abstract_socket(endpoint_config, Some(server), socket, Arc::new(quinn::TokioRuntime))
            .map_err(|e| anyhow::anyhow!("cannot start QUIC on UDP {addr}: {e}"))?;
    endpoint.set_default_client_config(client);
    Ok((endpoint, side))
}
