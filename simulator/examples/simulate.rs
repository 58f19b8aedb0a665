//! Runs a scenario without the CLI (quick to build, for profiling):
//! `cargo run --release -p meshtv-simulator --example simulate -- SCENARIO [POLICY] [PEERS] [DURATION_S]`.

mod common;

use meshtv_simulator::run;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (s, policy) = common::scenario_from_args(&args);
    let mut last = 0.0;
    let report = run(&s, &[policy], &mut |_, p| {
        if p.sim_s - last >= 10.0 {
            last = p.sim_s;
            eprintln!("  t={:.0}s events={}", p.sim_s, p.events);
        }
    });
    let mut report = report;
    for (name, p) in &report.policies {
        // Savings per sample interval: how the swarm does after its start-up.
        let line: Vec<String> = p
            .series
            .t_s
            .iter()
            .zip(&p.series.savings)
            .map(|(t, s)| format!("{t:.0}:{}", s.map_or("-".into(), |s| format!("{:.3}", s))))
            .collect();
        eprintln!("{name} savings by interval: {}", line.join(" "));
        let buffer: Vec<String> =
            p.series.buffer_s.iter().map(|b| b.map_or("-".into(), |b| format!("{b:.1}"))).collect();
        eprintln!("{name} mean buffer (s): {}", buffer.join(" "));
        let stalled: Vec<String> =
            p.series.stalled_share.iter().map(|b| b.map_or("-".into(), |b| format!("{b:.3}"))).collect();
        eprintln!("{name} stalled share: {}", stalled.join(" "));
    }
    for p in report.policies.values_mut() {
        p.series = Default::default();
        p.startup_cdf.clear();
        p.live_delay_cdf.clear();
    }
    println!("{}", report.to_json());
    println!("{}", report.summary_table());
    println!("wall_s={:.2} events/s={:.0}", report.wall_s, report.events as f64 / report.wall_s);
}
