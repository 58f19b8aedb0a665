//! The report of an invocation: `report.json` (the fields issue 3 names, then the time
//! series) and the summary table printed at the end.

use crate::metrics::PolicyReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub peers: u64,
    pub sim_duration_s: f64,
    /// Wall-clock seconds of the whole invocation: the one field that differs between two
    /// runs of the same scenario and seed.
    pub wall_s: f64,
    /// Events processed, over all policies.
    pub events: u64,
    /// The policy the scenario names (the others are baselines).
    pub policy: String,
    pub policies: BTreeMap<String, PolicyReport>,
}

impl Report {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("report serializes") + "\n"
    }

    /// One row per policy: the headline metrics.
    pub fn summary_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
            "policy",
            "savings",
            "rebuffer",
            "continuity",
            "start p50",
            "start p95",
            "delay p50",
            "delay p95",
            "overhead",
            "direct",
            "relayed",
            "failed"
        );
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}s"));
        for (name, p) in &self.policies {
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
                name,
                pct(p.savings),
                pct(p.rebuffer_ratio),
                pct(p.continuity),
                secs(p.startup_p50_s),
                secs(p.startup_p95_s),
                secs(p.live_delay_p50_s),
                secs(p.live_delay_p95_s),
                pct(p.overhead),
                pct(p.connectivity_direct),
                pct(p.connectivity_relayed),
                pct(p.connectivity_failed),
            );
        }
        out
    }
}
