//! The HTTP routes: what a player, the page and other local tools ask the gateway.
//!
//! Everything here comes from the viewer's machine but is still request input: paths
//! are parsed, never trusted, and a bad one is answered with a 4xx, never a panic.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde_json::Value;

use crate::assets::{self, Asset};
use crate::playlist::{media_playlist, LIVE_WINDOW_DEFAULT};
use crate::SwarmView;

type View = Arc<dyn SwarmView>;

/// The gateway's routes over `view`.
pub fn router(view: View) -> Router {
    // Other players and pages on the viewer's machine may read the stream and the stats.
    let shared = Router::new()
        .route("/live/{channel}/{file}", get(live_file))
        .route("/api/stats", get(stats))
        .layer(middleware::map_response(allow_any_origin));
    Router::new()
        .route("/", get(index))
        .route("/player/{file}", get(player_file))
        .merge(shared)
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n".into()) })
        .with_state(view)
}

async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
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

async fn live_file(State(view): State<View>, Path((channel, file)): Path<(String, String)>) -> Response {
    let wanted = match parse_live_file(&file) {
        Ok(Some(wanted)) => wanted,
        Ok(None) => return text(StatusCode::NOT_FOUND, "no such file\n".into()),
        Err(()) => return text(StatusCode::BAD_REQUEST, "segment names are <sequence number>.ts\n".into()),
    };
    if channel != view.channel() {
        return text(StatusCode::NOT_FOUND, "this gateway does not carry that channel\n".into());
    }
    match wanted {
        LiveFile::Playlist => playlist(view.as_ref()),
        LiveFile::Segment(seq) => match view.segment(seq) {
            Some(bytes) => ([(CONTENT_TYPE, "video/mp2t")], bytes).into_response(),
            None => text(StatusCode::NOT_FOUND, format!("segment {seq} is not held\n")),
        },
    }
}

fn playlist(view: &dyn SwarmView) -> Response {
    let entries = view.playlist();
    if entries.is_empty() {
        // Players treat a 404 playlist as a dead stream; a 503 with Retry-After is retried.
        let mut response = text(StatusCode::SERVICE_UNAVAILABLE, "buffering\n".into());
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let body = media_playlist(&entries, LIVE_WINDOW_DEFAULT, view.is_live());
    ([(CONTENT_TYPE, "application/vnd.apple.mpegurl"), (CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn stats(State(view): State<View>) -> Response {
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
}
