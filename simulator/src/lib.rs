//! meshtv's deterministic discrete-event simulator. It runs the production sans-IO cores,
//! [`meshtv_peer::Peer`] and [`meshtv_tracker::Tracker`], under virtual time that jumps
//! from one event to the next, with a flow-level bandwidth model (max-min fair sharing of
//! every node's upload and download), a coordinate latency model, loss, partitions,
//! churn, arrivals and a NAT model. It is where policies are measured at 10^4–10^5 peers
//! before deployment, as PeerTV did on MyP2PWorld / Mesmerizer.
//!
//! **Architecture Invariant:** the simulator drives the same cores as production through
//! [`meshtv_proto::Node`] and [`meshtv_proto::Outbox`] and holds no copy of their logic; a
//! policy is a configuration of those cores. It has no tokio, no threads and no clock
//! on its path (the wall time in the report is measured around a run, never inside), and
//! a run is bit-for-bit reproducible from its scenario and seed: every collection whose
//! order can matter is ordered (BTreeMap, Vec, a heap keyed by time and insertion order)
//! and every random draw comes from a seeded ChaCha generator.

pub mod engine;
pub mod flows;
pub mod latency;
pub mod memory;
pub mod metrics;
pub mod plots;
pub mod policy;
pub mod population;
mod prefetch;
pub mod queue;
pub mod report;
pub mod scenario;
pub mod verify;

pub use engine::{Engine, Progress};
pub use memory::keep_freed_memory;
pub use metrics::PolicyReport;
pub use policy::Policy;
pub use report::Report;
pub use scenario::Scenario;

use std::collections::BTreeMap;

/// Runs `scenario` under one policy to its end.
pub fn run_policy(scenario: &Scenario, policy: Policy, progress: &mut dyn FnMut(Progress)) -> PolicyReport {
    // The cores log through `tracing`; at 10^5 peers their warnings (a refused child, a
    // lost tracker) would drown the terminal, and they are counted in the report anyway.
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        let mut engine = Engine::new(scenario, policy);
        engine.finish(progress);
        metrics::summarize(&engine.collector, &engine.counters)
    })
}

/// Runs `scenario` under each policy in turn, from the same seed, into one report.
/// `progress` hears which policy is running and how far it is.
pub fn run(scenario: &Scenario, policies: &[Policy], progress: &mut dyn FnMut(Policy, Progress)) -> Report {
    let started = std::time::Instant::now();
    let mut reports = BTreeMap::new();
    let mut events = 0;
    for &p in policies {
        let r = run_policy(scenario, p, &mut |pr| progress(p, pr));
        events += r.events;
        reports.insert(p.name().to_string(), r);
    }
    Report {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        peers: scenario.peers,
        sim_duration_s: scenario.duration_s,
        wall_s: started.elapsed().as_secs_f64(),
        events,
        policy: scenario.policy.clone(),
        policies: reports,
    }
}

/// The policies `--compare` runs: the scenario's own, then the two baselines.
pub fn compared(own: Policy) -> Vec<Policy> {
    let mut v = vec![own];
    for p in [Policy::OriginOnly, Policy::RandomMesh] {
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}
