//! Golden checks: small deterministic scenarios run through the simulator (the production
//! peer and tracker cores, in-process, under virtual time) must keep savings, stalled
//! share (`rebuffer_ratio`), startup p95 and duplicate share within bands, so that a change
//! to a tuning constant that hurts them fails here, in CI, rather than in a 10,000-viewer
//! run days later.
//!
//! Each band is the figure measured at commit 418f10e plus a margin that noise cannot
//! cross (a run is bit-for-bit reproducible from its seed, so a figure moves only when the
//! code does) but a real regression would. Measured (savings / rebuffer / startup p95 /
//! duplicate share), and what the bands caught when a rule was turned off:
//!
//! | scenario                | savings | rebuffer | startup p95 | duplicates |
//! |-------------------------|---------|----------|-------------|------------|
//! | lab-uniform-4m          | 89.10%  | 0.068%   | 2.69 s      | 2.36%      |
//! | lab-mixed-1-6m          | 88.18%  | 0.134%   | 3.08 s      | 3.03%      |
//! | small (100 viewers)     | 95.36%  | 0.000%   | 2.12 s      | 1.46%      |
//! | nat-heavy, 300 for 60 s | 93.76%  | 0.148%   | 3.17 s      | 4.41%      |
//!
//! - `PUSH_LAG_MARGIN` at 0: all four fail, duplicates 2.6-3.2x (lab-uniform 6.52%,
//!   lab-mixed 7.90%, small 4.66%, nat-heavy 13.43%), nat-heavy savings 92.93%.
//! - Start pulls off (front to back, and under the push wait): startup p95 lab-uniform
//!   3.33 s, lab-mixed 3.35 s.
//! - Start pulls front to back only: lab-uniform startup p95 3.13 s. Under the push wait
//!   only: lab-uniform 3.21 s, nat-heavy 3.42 s.
//!
//! A change that moves a figure for the better should tighten its band in the same commit.
//! The whole file takes about 20 s in a debug build (nat-heavy most of it).

use meshtv_simulator::{Policy, PolicyReport, Scenario};

/// The figures a scenario must keep.
struct Band {
    savings_min: f64,
    rebuffer_max: f64,
    startup_p95_max_s: f64,
    /// Bytes received twice, as a share of all media received: what a viewer pulls that
    /// its parent then pushes too (or the other way round) is paid for by both uplinks.
    duplicates_max: f64,
}

fn lab(file: &str) -> Scenario {
    let path = format!("{}/../assets/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    Scenario::load(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn duplicates(r: &PolicyReport) -> f64 {
    r.bytes_duplicate as f64 / (r.bytes_from_peers + r.bytes_from_source).max(1) as f64
}

/// Runs `s` under its own policy (Chandelier) and checks every figure against `band`,
/// reporting all that fall outside it at once.
fn check(s: &Scenario, band: Band) {
    let r = meshtv_simulator::run_policy(s, Policy::Chandelier, &mut |_| {});
    let (savings, rebuffer, startup) =
        (r.savings.expect("savings"), r.rebuffer_ratio.expect("rebuffer ratio"), r.startup_p95_s.expect("startup p95"));
    let dup = duplicates(&r);
    let figures = format!(
        "{}: savings {:.4}, rebuffer {:.5}, startup p95 {:.3} s, duplicates {:.4} \
         (continuity {:?}, live delay p95 {:?} s, {} events)",
        s.name, savings, rebuffer, startup, dup, r.continuity, r.live_delay_p95_s, r.events
    );
    eprintln!("{figures}");
    let mut out = Vec::new();
    if savings < band.savings_min {
        out.push(format!("savings {savings:.4} < {}", band.savings_min));
    }
    if rebuffer > band.rebuffer_max {
        out.push(format!("rebuffer ratio {rebuffer:.5} > {}", band.rebuffer_max));
    }
    if startup > band.startup_p95_max_s {
        out.push(format!("startup p95 {startup:.3} s > {} s", band.startup_p95_max_s));
    }
    if dup > band.duplicates_max {
        out.push(format!("duplicate share {dup:.4} > {}", band.duplicates_max));
    }
    assert!(out.is_empty(), "{figures}\noutside the band: {}", out.join("; "));
}

/// The link lab's `uniform-4m`: 12 viewers at 4 Mbit/s up (1.7x the stream), the source
/// at 12 Mbit/s, 97 s.
#[test]
fn golden_lab_uniform_4m() {
    check(
        &lab("lab-uniform-4m.toml"),
        Band { savings_min: 0.87, rebuffer_max: 0.004, startup_p95_max_s: 3.0, duplicates_max: 0.04 },
    );
}

/// The link lab's `mixed-1-6m`: 12 viewers at 1-6 Mbit/s up (1.5x the stream on average).
#[test]
fn golden_lab_mixed_1_6m() {
    check(
        &lab("lab-mixed-1-6m.toml"),
        Band { savings_min: 0.86, rebuffer_max: 0.006, startup_p95_max_s: 3.3, duplicates_max: 0.05 },
    );
}

/// `small`: 100 viewers arriving within 10 s on residential uplinks, 120 s.
#[test]
fn golden_small() {
    check(
        &Scenario::load("small").unwrap(),
        Band { savings_min: 0.94, rebuffer_max: 0.002, startup_p95_max_s: 2.5, duplicates_max: 0.03 },
    );
}

/// `nat-heavy-10k` cut to 300 viewers and 60 s: tight uplinks (1.5x the stream on
/// average, two fifths below it), 16 KiB pieces, most pairs behind restrictive NATs.
#[test]
fn golden_nat_heavy_300_for_60_s() {
    let mut s = Scenario::load("nat-heavy-10k").unwrap();
    s.peers = 300;
    s.duration_s = 60.0;
    check(&s, Band { savings_min: 0.933, rebuffer_max: 0.004, startup_p95_max_s: 3.4, duplicates_max: 0.07 });
}
