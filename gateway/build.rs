//! Puts hls.js into OUT_DIR so the gateway binary carries the whole player page and a
//! viewer's browser never fetches a script from elsewhere. Without `npm ci` in player/
//! the crate still builds: the page then relies on the browser's native HLS.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("hls.min.js");
    let src = manifest.join("../player/node_modules/hls.js/dist/hls.min.js");

    println!("cargo:rerun-if-changed=build.rs");
    // A missing path counts as changed, so a later `npm ci` is picked up on the next build;
    // npm rewrites its hidden lockfile on every install, which catches the files it keeps.
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", manifest.join("../player/node_modules/.package-lock.json").display());

    if src.is_file() {
        fs::copy(&src, &out).expect("copy hls.min.js into OUT_DIR");
    } else {
        fs::write(&out, b"").expect("write placeholder hls.min.js into OUT_DIR");
        println!(
            "cargo:warning=player/node_modules/hls.js is missing: run `npm ci` in player/ \
             (the page falls back to the browser's native HLS without it)"
        );
    }
}
