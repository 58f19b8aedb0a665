//! `meshtv bench`: measured figures for BENCHMARKS.md, from the production code.

use meshtv_tracker::optimizer::instance::{Swarm, Weights};
use meshtv_tracker::optimizer::{dgs, exact};
use rand::SeedableRng;
use serde_json::json;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// The Chandelier optimizer: solve time and utility on a random swarm.
    Optimizer(OptimizerArgs),
}

#[derive(clap::Args)]
pub struct OptimizerArgs {
    #[arg(long, default_value_t = 10_000)]
    pub peers: usize,
    #[arg(long, default_value_t = 4)]
    pub stripes: usize,
    /// Mean upload capacity as a multiple of the bitrate.
    #[arg(long, default_value_t = 1.5)]
    pub upload_ratio: f64,
    /// Share of peers behind NATs (a third of them symmetric).
    #[arg(long, default_value_t = 0.6)]
    pub natted: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Solves timed; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Also solve exactly and report DGS's share of the optimum (slow beyond ~2,000 peers).
    #[arg(long)]
    pub exact_check: bool,
    /// DGS: full columns tried for steals per row (0 = every column).
    #[arg(long, default_value_t = dgs::Options::default().steal_columns_max)]
    pub steal_columns: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Optimizer(a) => optimizer(a),
    }
}

/// CPU time of the calling thread: unlike wall time, it does not count the time other
/// processes on a busy machine take the core away.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn optimizer(a: OptimizerArgs) -> anyhow::Result<()> {
    if a.peers == 0 || a.stripes == 0 || a.stripes > meshtv_proto::limits::STRIPES_MAX || a.runs == 0 {
        anyhow::bail!(
            "--peers and --runs must be at least 1, --stripes between 1 and {}",
            meshtv_proto::limits::STRIPES_MAX
        );
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let swarm = Swarm::random(a.peers, a.stripes, a.upload_ratio, a.natted, &mut rng);
    let weights = Weights::default();
    let t = Instant::now();
    let built = swarm.build(&weights, &mut rng);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let p = &built.problem;
    let opts = dgs::Options {
        steal_columns_max: if a.steal_columns == 0 { usize::MAX } else { a.steal_columns },
        ..dgs::Options::default()
    };
    let mut times = Vec::new();
    let mut cpu_times = Vec::new();
    let mut result = None;
    for _ in 0..a.runs {
        let (t, cpu) = (Instant::now(), thread_cpu_ms());
        let r = dgs::solve(p, &opts);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        cpu_times.push(thread_cpu_ms() - cpu);
        result = Some(r);
    }
    let (assignment, report) = result.expect("at least one run");
    let utility = p.evaluate(&assignment).map_err(anyhow::Error::msg)?;
    let assigned = assignment.col_of.iter().filter(|c| c.is_some()).count();
    let arcs = p.all_arcs().len();
    let exact = if a.exact_check {
        let t = Instant::now();
        let e = exact::solve(p);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        Some((p.evaluate(&e).map_err(anyhow::Error::msg)?, ms))
    } else {
        None
    };
    let out = json!({
        "peers": a.peers,
        "stripes": a.stripes,
        "rows": p.rows(),
        "columns": p.capacity.len(),
        "arcs": arcs,
        "slots": p.capacity.iter().map(|&c| c as u64).sum::<u64>(),
        "build_ms": build_ms,
        "solve_ms_median": median_ms(times.clone()),
        "solve_ms_all": times,
        "solve_cpu_ms_median": median_ms(cpu_times.clone()),
        "augmented": report.augmented,
        "passes": report.passes,
        "moves": report.moves,
        "utility": utility,
        "rows_assigned": assigned,
        "exact_utility": exact.map(|e| e.0),
        "exact_ms": exact.map(|e| e.1),
        "ratio_to_exact": exact.map(|e| utility as f64 / e.0 as f64),
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "optimizer: {} peers × {} stripes = {} rows, {} uploader columns, {} arcs",
            a.peers,
            a.stripes,
            p.rows(),
            p.capacity.len(),
            arcs
        );
        println!("  build   {build_ms:>9.1} ms");
        println!(
            "  solve   {:>9.1} ms wall, {:.1} ms CPU (medians of {}; {} passes, {} moves, {} rows placed by chains)",
            out["solve_ms_median"].as_f64().unwrap_or(0.0),
            out["solve_cpu_ms_median"].as_f64().unwrap_or(0.0),
            a.runs,
            report.passes,
            report.moves,
            report.augmented
        );
        println!("  utility {utility} ({assigned} of {} rows assigned)", p.rows());
        if let Some((eu, ms)) = exact {
            println!("  exact   {eu} in {ms:.0} ms: DGS reaches {:.4} of the optimum", utility as f64 / eu as f64);
        }
    }
    Ok(())
}
