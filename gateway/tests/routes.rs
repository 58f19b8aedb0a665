//! The gateway's HTTP answers, through its public router, over a canned view.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use meshtv_gateway::{router, PlaylistEntry, SwarmView};
use tower::ServiceExt;

const CHANNEL: &str = "demo tv";

/// A view whose segments a test sets by hand.
struct Canned {
    segments: Mutex<Vec<(u64, Bytes)>>,
    stats: serde_json::Value,
    live: bool,
    target_ms: Option<u32>,
}

impl Canned {
    fn new(segments: Vec<(u64, Bytes)>) -> Canned {
        Canned {
            segments: Mutex::new(segments),
            stats: serde_json::json!({
                "bytes_from_peers": 900, "bytes_from_source": 100, "partners": 4,
                "buffer_s": 6.5, "stalls": 0, "startup_s": 1.25,
            }),
            live: true,
            target_ms: Some(100),
        }
    }

    fn view(self) -> Arc<dyn SwarmView> {
        Arc::new(self)
    }
}

impl SwarmView for Canned {
    fn channel(&self) -> String {
        CHANNEL.to_string()
    }
    fn playlist(&self) -> Vec<PlaylistEntry> {
        let segments = self.segments.lock().expect("lock");
        segments.iter().map(|(seq, _)| PlaylistEntry { seq: *seq, duration_ms: 2000, created_ms: None }).collect()
    }
    fn segment(&self, seq: u64) -> Option<Bytes> {
        let segments = self.segments.lock().expect("lock");
        segments.iter().find(|(s, _)| *s == seq).map(|(_, b)| b.clone())
    }
    fn stats(&self) -> serde_json::Value {
        self.stats.clone()
    }
    fn is_live(&self) -> bool {
        self.live
    }
    fn target_duration_ms(&self) -> Option<u32> {
        self.target_ms
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

async fn get(view: Arc<dyn SwarmView>, uri: &str) -> Answer {
    send(router(view), Request::get(uri).body(Body::empty()).expect("request")).await
}

async fn get_with_host(router: axum::Router, uri: &str, host: &str) -> Answer {
    send(router, Request::get(uri).header("host", host).body(Body::empty()).expect("request")).await
}

async fn send(router: axum::Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
    Answer { status, headers, body }
}

fn ts(seq: u64) -> Bytes {
    // Not real MPEG-TS: the gateway passes bytes through untouched, which is what is checked.
    Bytes::from((0..188 * 7).map(|i| (i as u64 ^ seq) as u8).collect::<Vec<u8>>())
}

#[tokio::test]
async fn empty_playlist_waits_three_target_durations_then_asks_players_to_retry() {
    let asked = Instant::now();
    let answer = get(Canned::new(vec![]).view(), "/live/demo%20tv/index.m3u8").await;
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(300), "answered after {waited:?}, before 3 x 100 ms");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.header("retry-after"), "1");
    assert_eq!(answer.text(), "buffering\n");
    assert_eq!(answer.header("access-control-allow-origin"), "*");
}

#[tokio::test]
async fn live_playlist_is_a_window_with_hls_headers() {
    let view = Canned::new((0..10).map(|s| (s, ts(s))).collect()).view();
    let answer = get(view, "/live/demo%20tv/index.m3u8").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(answer.header("cache-control"), "no-cache");
    assert_eq!(answer.header("access-control-allow-origin"), "*");
    let text = answer.text();
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4\n"), "{text}");
    assert_eq!(text.matches(".ts\n").count(), 6, "{text}");
    assert!(!text.contains("ENDLIST"));
}

#[tokio::test]
async fn on_demand_playlist_ends() {
    let view = Canned { live: false, ..Canned::new(vec![(0, ts(0)), (1, ts(1))]) }.view();
    let answer = get(view, "/live/demo%20tv/index.m3u8").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.text().ends_with("1.ts\n#EXT-X-ENDLIST\n"), "{}", answer.text());
}

#[tokio::test]
async fn another_channel_is_not_found() {
    let view = Canned::new(vec![(0, ts(0))]).view();
    for uri in ["/live/other/index.m3u8", "/live/other/0.ts", "/live/demo/index.m3u8"] {
        let answer = get(view.clone(), uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(answer.text().lines().count(), 1, "{uri}");
        assert_eq!(answer.header("access-control-allow-origin"), "*", "{uri}");
    }
}

#[tokio::test]
async fn bad_segment_names_are_bad_requests() {
    let view = Canned::new(vec![(0, ts(0))]).view();
    let huge = format!("/live/demo%20tv/{}.ts", "9".repeat(400));
    let bad = [
        "/live/demo%20tv/abc.ts",
        "/live/demo%20tv/18446744073709551616.ts",
        "/live/demo%20tv/-1.ts",
        "/live/x/abc.ts",
    ];
    for uri in bad.iter().copied().chain([huge.as_str()]) {
        let answer = get(view.clone(), uri).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
    }
    // A path that is not valid UTF-8 once decoded is axum's to refuse, also without a panic.
    let answer = get(view, "/live/demo%20tv/%FF.ts").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn segments_come_back_byte_for_byte() {
    let view = Canned::new((3..6).map(|s| (s, ts(s))).collect()).view();
    let answer = get(view.clone(), "/live/demo%20tv/4.ts").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "video/mp2t");
    assert_eq!(answer.header("access-control-allow-origin"), "*");
    assert_eq!(answer.body, ts(4));

    let gone = get(view.clone(), "/live/demo%20tv/2.ts").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let top = get(view, &format!("/live/demo%20tv/{}.ts", u64::MAX)).await;
    assert_eq!(top.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn stats_carry_the_counters_and_the_channel() {
    let answer = get(Canned::new(vec![]).view(), "/api/stats").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "application/json");
    // For the gateway's own page only: no CORS header lets another origin read them.
    assert!(answer.headers.get("access-control-allow-origin").is_none());
    let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    for key in ["bytes_from_peers", "bytes_from_source", "partners", "buffer_s", "stalls", "startup_s"] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["channel"], CHANNEL);
}

#[tokio::test]
async fn non_object_stats_still_name_the_channel() {
    let view = Canned { stats: serde_json::json!([1, 2]), ..Canned::new(vec![]) }.view();
    let answer = get(view, "/api/stats").await;
    let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    assert_eq!(json["channel"], CHANNEL);
    assert_eq!(json["stats"], serde_json::json!([1, 2]));
}

#[tokio::test]
async fn the_page_and_its_files() {
    let view = Canned::new(vec![]).view();
    let page = get(view.clone(), "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.text().contains("<video"));
    assert!(!page.text().contains("http://") && !page.text().contains("https://"), "no external URLs");

    for (file, kind) in [("player.js", "text/javascript"), ("player.css", "text/css")] {
        let answer = get(view.clone(), &format!("/player/{file}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{file}");
        assert!(answer.header("content-type").starts_with(kind), "{file}");
        assert!(!answer.text().contains("http://") && !answer.text().contains("https://"), "{file}");
    }
    let hls = get(view.clone(), "/player/hls.min.js").await;
    assert!(hls.status == StatusCode::OK || hls.status == StatusCode::NOT_FOUND);

    for uri in ["/player/..%2FCargo.toml", "/player/index.html", "/nope", "/live/demo%20tv"] {
        assert_eq!(get(view.clone(), uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn a_playlist_asked_for_while_buffering_is_answered_once_the_first_segment_is_ready() {
    let canned = Arc::new(Canned { target_ms: Some(2000), ..Canned::new(vec![]) });
    let view: Arc<dyn SwarmView> = canned.clone();
    let release = tokio::spawn({
        let canned = canned.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            canned.segments.lock().expect("lock").push((7, ts(7)));
        }
    });
    let asked = Instant::now();
    let answer = get(view, "/live/demo%20tv/index.m3u8").await;
    let waited = asked.elapsed();
    release.await.expect("release");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.text().contains("#EXT-X-MEDIA-SEQUENCE:7\n7.ts\n") || answer.text().contains("\n7.ts\n"));
    assert!(waited >= Duration::from_millis(400), "answered after {waited:?}, before the segment");
    // Answered soon after the segment came, not at the end of the 6 s bound.
    assert!(waited < Duration::from_millis(2000), "answered after {waited:?}");
}

#[tokio::test]
async fn a_playlist_that_is_ready_is_answered_at_once() {
    let view = Canned { target_ms: Some(30_000), ..Canned::new(vec![(0, ts(0))]) }.view();
    let asked = Instant::now();
    let answer = get(view, "/live/demo%20tv/index.m3u8").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(asked.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn every_route_refuses_a_host_that_is_not_the_gateway() {
    let view = Canned::new(vec![(0, ts(0))]).view();
    let listen: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let routes =
        ["/", "/player/player.js", "/live/demo%20tv/index.m3u8", "/live/demo%20tv/0.ts", "/api/stats", "/nope"];
    for uri in routes {
        // A DNS-rebinding page: its own name, now resolving to 127.0.0.1.
        for host in ["evil.example:8080", "evil.example", "localhost.evil.example:8080", "192.168.1.10:8080"] {
            let answer = get_with_host(meshtv_gateway::router_on(view.clone(), listen), uri, host).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{uri} with Host {host}");
            assert!(answer.text().starts_with("forbidden: Host "), "{}", answer.text());
            assert_eq!(answer.text().lines().count(), 1);
            assert!(answer.headers.get("access-control-allow-origin").is_none(), "{uri}");
        }
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "localhost"] {
            let answer = get_with_host(meshtv_gateway::router_on(view.clone(), listen), uri, host).await;
            assert_ne!(answer.status, StatusCode::FORBIDDEN, "{uri} with Host {host}");
        }
    }
    // A gateway serving the LAN on all addresses accepts being named by any IP address,
    // but still no other name.
    let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let lan = get_with_host(meshtv_gateway::router_on(view.clone(), any), "/api/stats", "192.168.1.10:8080").await;
    assert_eq!(lan.status, StatusCode::OK);
    let named = get_with_host(meshtv_gateway::router_on(view, any), "/api/stats", "tv.example:8080").await;
    assert_eq!(named.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_playlist_dates_segments_from_their_headers() {
    struct Dated;
    impl SwarmView for Dated {
        fn channel(&self) -> String {
            CHANNEL.to_string()
        }
        fn playlist(&self) -> Vec<PlaylistEntry> {
            // 2024-03-01T00:00:00Z plus 2 s per segment.
            (0..3)
                .map(|seq| PlaylistEntry { seq, duration_ms: 2000, created_ms: Some(1_709_251_202_000 + seq * 2000) })
                .collect()
        }
        fn segment(&self, _: u64) -> Option<Bytes> {
            None
        }
        fn stats(&self) -> serde_json::Value {
            serde_json::json!({})
        }
    }
    let answer = get(Arc::new(Dated), "/live/demo%20tv/index.m3u8").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.text().contains("#EXT-X-PROGRAM-DATE-TIME:2024-03-01T00:00:04.000Z\n#EXTINF:2.000,\n2.ts\n"),
        "{}",
        answer.text()
    );
}
