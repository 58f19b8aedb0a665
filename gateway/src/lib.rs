//! The viewer's local HTTP gateway: it turns what the peer holds into an ordinary HLS
//! stream, so any player the viewer already has (a browser, VLC, mpv, ffplay) can watch
//! a meshtv channel without knowing about the swarm.
//!
//! The gateway only reads: it never asks the swarm for data, it lists what the peer
//! already has complete and verified ([`SwarmView`]), and the player's polling of the
//! playlist is what paces playback.
//!
//! Routes: `/` the player page, `/player/{file}` its scripts and style,
//! `/live/{channel}/index.m3u8` and `/live/{channel}/{seq}.ts` the stream, `/api/stats`
//! the peer's counters for the page. The stream may be read by other pages and players
//! (`Access-Control-Allow-Origin: *`), the stats only by the gateway's own page, and
//! every route refuses a Host header that does not name the gateway (403), so that a
//! web page cannot reach it by re-pointing its own name at 127.0.0.1 (DNS rebinding).

mod assets;
mod playlist;
mod routes;

use std::future::Future;
use std::sync::Arc;

pub use playlist::{
    iso8601_ms, media_playlist, media_playlist_with, starts_discontinuity, DiscontinuityLog, PlaylistEntry,
    DISCONTINUITY_GAP_MS, LIVE_WINDOW_DEFAULT,
};
pub use routes::{router, router_on};

/// What the gateway needs from the running peer. The peer side implements it over its
/// buffer; keeping it this narrow lets the gateway be tested over canned segments.
///
/// Every method is called from request handlers on the async runtime, once per request:
/// they must answer from memory without blocking.
pub trait SwarmView: Send + Sync + 'static {
    /// The channel name as the user typed it (used in URLs).
    fn channel(&self) -> String;
    /// Complete, verified segments available to the player, oldest first, contiguous.
    /// Empty before playback can start: a playlist request then waits a little for the
    /// first segment (see [`SwarmView::target_duration_ms`]), then tells players to retry.
    fn playlist(&self) -> Vec<PlaylistEntry>;
    /// The bytes of a segment listed in the playlist (MPEG-TS), None if not (or no
    /// longer) held.
    fn segment(&self, seq: u64) -> Option<bytes::Bytes>;
    /// JSON for `/api/stats`; must contain at least `bytes_from_peers`,
    /// `bytes_from_source`, `partners`, `buffer_s`, `stalls`, `startup_s`, which the
    /// player page shows. The gateway adds `channel`.
    fn stats(&self) -> serde_json::Value;
    /// The channel's target segment duration, if known: a playlist asked for before the
    /// first segment is ready waits up to three of these (two seconds each if unknown).
    fn target_duration_ms(&self) -> Option<u32> {
        None
    }
    /// Whether the channel is live (a sliding-window playlist) or on-demand (every
    /// segment and ENDLIST). ENDLIST tells players the video stops there, so an
    /// on-demand view should answer false only once its playlist is the whole video.
    fn is_live(&self) -> bool {
        true
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves, then lets requests in
/// flight finish. Taking a bound listener lets the caller pick port 0 and learn the
/// port before anything is served.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: Arc<dyn SwarmView>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, channel = %view.channel(), "gateway serving");
    axum::serve(listener, router_on(view, addr)).with_graceful_shutdown(shutdown).await
}
