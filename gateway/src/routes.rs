//! The HTTP routes: what a player, the page and other local tools ask the gateway.
//!
//! Everything here comes from the viewer's machine but is still request input: paths
//! are parsed, never trusted, and a bad one is answered with a 4xx, never a panic.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, HOST, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use crate::assets::{self, Asset};
use crate::playlist::{media_playlist_with, DiscontinuityLog, LIVE_WINDOW_DEFAULT};
use crate::SwarmView;

type View = Arc<dyn SwarmView>;

/// Segment duration assumed for the playlist wait while the view does not know its own.
const TARGET_DEFAULT_MS: u32 = 2000;
/// A playlist asked for before the first segment is ready waits up to this many target
/// durations for it (players such as FFmpeg give up on a first answer that is an error).
const PLAYLIST_WAIT_TARGETS: u32 = 3;
/// How often a waiting playlist request looks at the view again.
const PLAYLIST_POLL: Duration = Duration::from_millis(50);

/// What every route shares.
struct Gateway {
    view: View,
    /// The address the gateway listens on: Host headers naming it are accepted.
    listen: SocketAddr,
    discontinuities: Mutex<DiscontinuityLog>,
}

type Shared = Arc<Gateway>;

/// The gateway's routes over `view`, for a gateway listening on loopback: requests must
/// name `localhost` or a loopback address in their Host header. See [`router_on`].
pub fn router(view: View) -> Router {
    router_on(view, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
}

/// The gateway's routes over `view` for a gateway listening on `listen`.
///
/// Every route checks the request's Host header (DNS-rebinding defence: a web page
/// whose name was re-pointed at 127.0.0.1 must not read the viewer's gateway): accepted
/// are `localhost` and its subdomains, loopback addresses, `listen`'s own IP, and, when
/// `listen` is the unspecified address (serving the LAN), any IP address. Any other name
/// gets 403. A request without a Host (HTTP/1.0) is not from a browser and is served.
pub fn router_on(view: View, listen: SocketAddr) -> Router {
    let gateway = Arc::new(Gateway { view, listen, discontinuities: Mutex::new(DiscontinuityLog::default()) });
    // Other players and pages on the viewer's machine may read the stream; the stats are
    // for the gateway's own page only (same origin, so no CORS header).
    let shared =
        Router::new().route("/live/{channel}/{file}", get(live_file)).layer(middleware::map_response(allow_any_origin));
    Router::new()
        .route("/", get(index))
        .route("/player/{file}", get(player_file))
        .route("/api/stats", get(stats))
        .merge(shared)
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n".into()) })
        .layer(middleware::from_fn_with_state(gateway.clone(), check_host))
        .with_state(gateway)
}

async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

async fn check_host(State(gateway): State<Shared>, request: Request, next: Next) -> Response {
    let host = match request.headers().get(HOST) {
        Some(value) => value.to_str().ok(),
        // HTTP/2 carries it as the URI's authority; HTTP/1.0 may carry none at all.
        None => match request.uri().authority() {
            Some(authority) => Some(authority.as_str()),
            None => return next.run(request).await,
        },
    };
    match host {
        Some(host) if host_allowed(host, gateway.listen) => next.run(request).await,
        _ => {
            let shown: String = host.unwrap_or("(not text)").chars().take(100).collect();
            let port = gateway.listen.port();
            text(
                StatusCode::FORBIDDEN,
                format!(
                    "forbidden: Host {shown:?} is not this gateway; open it as http://localhost:{port}/ or http://127.0.0.1:{port}/\n"
                ),
            )
        }
    }
}

/// Whether a Host header value (`name`, `name:port`, `[v6]:port`) names this gateway.
/// Only the name is checked: a tunnel or port forward may change the port.
fn host_allowed(host: &str, listen: SocketAddr) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) if after.is_empty() || after.starts_with(':') => v6,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip == listen.ip() || listen.ip().is_unspecified(),
        Err(_) => false,
    }
}

async fn index() -> Response {
    asset(&assets::INDEX)
}

async fn player_file(Path(file): Path<String>) -> Response {
    match assets::player_file(&file) {
        Some(a) => asset(a),
        None => text(StatusCode::NOT_FOUND, "no such player file\n".into()),
    }
}

/// What a request under `/live/{channel}/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum LiveFile {
    Playlist,
    Segment(u64),
}

/// Reads the file part of a `/live/` path. `Ok(None)` is a well-formed name of nothing
/// the gateway serves; `Err` a segment name whose number is not a u64.
fn parse_live_file(file: &str) -> Result<Option<LiveFile>, ()> {
    if file == "index.m3u8" {
        return Ok(Some(LiveFile::Playlist));
    }
    let Some(stem) = file.strip_suffix(".ts") else { return Ok(None) };
    // u64::from_str also takes a leading '+'; a segment name is digits only.
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    stem.parse().map(|seq| Some(LiveFile::Segment(seq))).map_err(|_| ())
}

async fn live_file(State(gateway): State<Shared>, Path((channel, file)): Path<(String, String)>) -> Response {
    let view = &gateway.view;
    let wanted = match parse_live_file(&file) {
        Ok(Some(wanted)) => wanted,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such file\n".into()),
        Err(()) => return text(StatusCode::BAD_REQUEST, "segment names are <sequence number>.ts\n".into()),
    };
    if channel != view.channel() {
        return text(StatusCode::NOT_FOUND, "this gateway does not carry that channel\n".into());
    }
    match wanted {
        LiveFile::Playlist => playlist(&gateway).await,
        LiveFile::Segment(seq) => match view.segment(seq) {
            Some(bytes) => ([(CONTENT_TYPE, "video/mp2t")], bytes).into_response(),
            None => text(StatusCode::NOT_FOUND, format!("segment {seq} is not held\n")),
        },
    }
}

/// The playlist; asked for before the first segment is ready, the answer waits for it
/// (up to [`PLAYLIST_WAIT_TARGETS`] target durations), so that a player started as soon
/// as the viewer printed the URL gets a playlist rather than an error.
async fn playlist(gateway: &Gateway) -> Response {
    let view = gateway.view.as_ref();
    let target = view.target_duration_ms().filter(|&t| t > 0).unwrap_or(TARGET_DEFAULT_MS);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(u64::from(target) * u64::from(PLAYLIST_WAIT_TARGETS));
    let mut entries = view.playlist();
    while entries.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep_until((tokio::time::Instant::now() + PLAYLIST_POLL).min(deadline)).await;
        entries = view.playlist();
    }
    if entries.is_empty() {
        // Players treat a 404 playlist as a dead stream; a 503 with Retry-After is retried.
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, "buffering\n".into());
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let body = {
        let mut log = gateway.discontinuities.lock().unwrap_or_else(|e| e.into_inner());
        log.note(&entries);
        media_playlist_with(&entries, LIVE_WINDOW_DEFAULT, view.is_live(), &log)
    };
    ([(CONTENT_TYPE, "application/vnd.apple.mpegurl"), (CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn stats(State(gateway): State<Shared>) -> Response {
    let view = &gateway.view;
    let channel = Value::String(view.channel());
    let body = match view.stats() {
        Value::Object(mut fields) => {
            fields.insert("channel".into(), channel);
            Value::Object(fields)
        }
        // The page needs `channel` at the top level whatever the peer reports.
        other => serde_json::json!({ "channel": channel, "stats": other }),
    };
    ([(CACHE_CONTROL, "no-cache")], Json(body)).into_response()
}

fn asset(a: &'static Asset) -> Response {
    ([(CONTENT_TYPE, a.content_type), (CACHE_CONTROL, "no-cache")], a.body).into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8"), (CACHE_CONTROL, "no-cache")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_file_names() {
        assert_eq!(parse_live_file("index.m3u8"), Ok(Some(LiveFile::Playlist)));
        assert_eq!(parse_live_file("0.ts"), Ok(Some(LiveFile::Segment(0))));
        assert_eq!(parse_live_file("0042.ts"), Ok(Some(LiveFile::Segment(42))));
        assert_eq!(parse_live_file(&format!("{}.ts", u64::MAX)), Ok(Some(LiveFile::Segment(u64::MAX))));
        assert_eq!(parse_live_file("18446744073709551616.ts"), Err(()));
        assert_eq!(parse_live_file(&format!("{}.ts", "9".repeat(10_000))), Err(()));
        for bad in ["abc.ts", ".ts", "+1.ts", "-1.ts", "1 .ts", "1.5.ts", "١.ts"] {
            assert_eq!(parse_live_file(bad), Err(()), "{bad}");
        }
        assert_eq!(parse_live_file("1.mp4"), Ok(None));
        assert_eq!(parse_live_file("index.m3u"), Ok(None));
    }

    #[test]
    fn host_names() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:9000",
            "localhost.:8080",
            "player.localhost:8080",
            "127.0.0.1:8080",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(host_allowed(ok, loopback), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example:8080",
            "192.168.1.10:8080",
            "[::1",
            "[::1]x",
            "localhost:80x",
            "",
            "127.0.0.1.nip.io:8080",
        ] {
            assert!(!host_allowed(bad, loopback), "{bad}");
        }
        let lan: SocketAddr = "192.168.1.10:8080".parse().unwrap();
        assert!(host_allowed("192.168.1.10:8080", lan));
        assert!(!host_allowed("192.168.1.11:8080", lan));
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(host_allowed("192.168.1.11:8080", any) && host_allowed("[fe80::1]:8080", any));
        assert!(!host_allowed("tv.example:8080", any));
    }
}
