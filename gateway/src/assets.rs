//! The player page, compiled into the binary so `meshtv watch` needs no files beside it
//! and the page never loads anything from outside the viewer's machine.

/// A static file the gateway serves.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The page at `/`.
pub const INDEX: Asset =
    Asset { content_type: "text/html; charset=utf-8", body: include_bytes!("../../player/index.html") };

const PLAYER_JS: Asset =
    Asset { content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../player/player.js") };

const PLAYER_CSS: Asset =
    Asset { content_type: "text/css; charset=utf-8", body: include_bytes!("../../player/player.css") };

/// Copied by build.rs from player/node_modules; empty when `npm ci` was not run there.
const HLS_JS: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!(concat!(env!("OUT_DIR"), "/hls.min.js")),
};

/// The file under `/player/` named `name`. An empty hls.js counts as absent, so the
/// page's script tag fails and the page falls back to the browser's native HLS.
pub fn player_file(name: &str) -> Option<&'static Asset> {
    let asset = match name {
        "player.js" => &PLAYER_JS,
        "player.css" => &PLAYER_CSS,
        "hls.min.js" => &HLS_JS,
        _ => return None,
    };
    (!asset.body.is_empty()).then_some(asset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_files_are_embedded() {
        assert!(std::str::from_utf8(INDEX.body).is_ok_and(|s| s.contains("<video")));
        assert!(player_file("player.js").is_some());
        assert!(player_file("player.css").is_some());
        assert!(player_file("../Cargo.toml").is_none());
        assert!(player_file("").is_none());
    }
}
