//! Ingests a file or URL and writes its segments as numbered `.ts` files, for eyeballing
//! the output with ffprobe or a player: `cargo run -p meshtv-media --example segment -- INPUT OUTDIR [--loop N] [--realtime]`.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: segment INPUT OUTDIR [--loop N] [--realtime]");
        std::process::exit(2);
    }
    let max: Option<u64> = args.iter().position(|a| a == "--loop").and_then(|i| args.get(i + 1)?.parse().ok());
    let opts = meshtv_media::IngestOptions {
        input: args[1].clone(),
        looped: max.is_some(),
        realtime: args.iter().any(|a| a == "--realtime"),
        segment_duration: Duration::from_secs(2),
    };
    match meshtv_media::probe(&opts.input) {
        Ok(info) => println!("{info:?}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    let out = std::path::PathBuf::from(&args[2]);
    let _ = std::fs::create_dir_all(&out);
    let stop = AtomicBool::new(false);
    let result = meshtv_media::ingest(&opts, &stop, |s| {
        println!("segment {} {} ms {} bytes", s.seq, s.duration_ms, s.data.len());
        let _ = std::fs::write(out.join(format!("{:05}.ts", s.seq)), &s.data);
        max.map_or(true, |m| s.seq + 1 < m)
    });
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
