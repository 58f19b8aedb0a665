//! `meshtv`: one binary for every role in a meshtv swarm.
//!
//! Each subcommand is a thin driver: it wires a sans-IO core (peer or tracker) to the
//! QUIC transport, the ffmpeg ingest or the HTTP gateway, and turns failures into one
//! clear line on stderr and a non-zero exit.

mod bench;
mod broadcast;
mod demo;
mod keys;
mod runtime;
mod simulate;
mod source_stats;
mod tracker;
mod view;
mod watch;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc rather than the system allocator: a simulation allocates and frees a message
/// per event, and with it `flash-crowd-10k --peers 3000` ran in 17 s of CPU instead of 20 s.
/// The long-running network roles turn transparent huge pages off (`lean_memory`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "meshtv",
    version,
    about = "Peer-to-peer live video streaming: viewers re-upload the stream to each other"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a tracker: channel registry, membership and partner assignment.
    Tracker(tracker::Args),
    /// Publish a live channel from a file (looped), or a UDP/SRT/RTMP feed.
    Broadcast(broadcast::Args),
    /// Watch a channel: joins the swarm and serves it to a local player over HTTP.
    Watch(watch::Args),
    /// Run a whole swarm on this machine: a tracker, a broadcaster and N viewers.
    Demo(demo::Args),
    /// Simulate a swarm of up to 10^5 viewers on the production cores under virtual time.
    Simulate(simulate::Args),
    /// Measure the production code (figures for BENCHMARKS.md).
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Simulate(_) | Command::Bench(_)) {
        meshtv_simulator::keep_freed_memory();
    } else {
        lean_memory();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,meshtv=info".into()),
        )
        .init();
    let result = match cli.command {
        Command::Tracker(a) => runtime::block_on(tracker::run(a)),
        Command::Broadcast(a) => runtime::block_on(broadcast::run(a)),
        Command::Watch(a) => runtime::block_on(watch::run(a)),
        Command::Demo(a) => demo::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshtv: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process and those it starts. mimalloc backs
/// its arenas with huge pages where it can: a simulation runs about 8% faster on them, but
/// a viewer of the loopback demo then held 71-74 MiB instead of 60-63 MiB.
fn lean_memory() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!("transparent huge pages stay on: {}", std::io::Error::last_os_error());
    }
}
