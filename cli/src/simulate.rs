//! `meshtv simulate`: runs a scenario on the deterministic simulator (the production peer
//! and tracker cores under virtual time), writes `report.json` and SVG plots, and prints a
//! summary table. Same scenario, seed and binary give the same report, apart from `wall_s`.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use meshtv_simulator::{policy, Policy, Scenario};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A scenario file, or the name of a built-in one (small, flash-crowd-10k, churn-10k,
    /// nat-heavy-10k, scale-100k; their files are in assets/scenarios/).
    pub scenario: String,
    /// Seed for everything random in the run (overrides the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of viewers (overrides the scenario's).
    #[arg(long)]
    pub peers: Option<u64>,
    /// Simulated seconds (overrides the scenario's).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Policy: chandelier (the tracker's default), tree, origin-only or random-mesh (overrides
    /// the scenario's).
    #[arg(long)]
    pub policy: Option<String>,
    /// Also run the two baselines (origin-only, random-mesh) from the same seed, side by side.
    #[arg(long)]
    pub compare: bool,
    /// Folder for report.json and the plots (default: sim-SCENARIO).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut s = Scenario::load(&args.scenario)?;
    if let Some(seed) = args.seed {
        s.seed = seed;
    }
    if let Some(peers) = args.peers {
        s.peers = peers;
    }
    if let Some(d) = args.duration {
        s.duration_s = d;
    }
    if let Some(p) = args.policy {
        s.policy = p;
    }
    s.validate()?;
    let Some(own) = Policy::from_name(&s.policy) else {
        bail!("unknown policy {:?} (known: {})", s.policy, policy::NAMES.join(", "));
    };
    let policies = if args.compare { meshtv_simulator::compared(own) } else { vec![own] };
    let out = args.out.unwrap_or_else(|| PathBuf::from(format!("sim-{}", s.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating output folder {}", out.display()))?;

    let total_ms = (s.duration_s * 1000.0) as u64 * policies.len() as u64;
    let bar = ProgressBar::new(total_ms);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {msg} ({elapsed}, eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let duration_ms = (s.duration_s * 1000.0) as u64;
    let report = meshtv_simulator::run(&s, &policies, &mut |p, pr| {
        let i = policies.iter().position(|x| *x == p).unwrap_or(0) as u64;
        bar.set_prefix(p.name());
        bar.set_position(i * duration_ms + (pr.sim_s * 1000.0) as u64);
        bar.set_message(format!("{:.0}/{:.0} s simulated, {} events", pr.sim_s, pr.duration_s, pr.events));
    });
    bar.finish_and_clear();

    let json = out.join("report.json");
    std::fs::write(&json, report.to_json()).with_context(|| format!("writing {}", json.display()))?;
    let plots = meshtv_simulator::plots::write_all(&report, &out).map_err(anyhow::Error::msg)?;
    println!(
        "scenario {} · seed {} · {} viewers · {} s simulated · {} events in {:.1} s ({:.0} events/s)",
        report.scenario,
        report.seed,
        report.peers,
        report.sim_duration_s,
        report.events,
        report.wall_s,
        report.events as f64 / report.wall_s.max(1e-9)
    );
    print!("{}", report.summary_table());
    println!("wrote {}", json.display());
    for p in plots {
        println!("wrote {}", p.display());
    }
    Ok(())
}
