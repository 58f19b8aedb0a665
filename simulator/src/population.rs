//! The viewers of a run, drawn from the seed before the run starts: when each arrives,
//! its capacity, NAT type, place and partition side. Drawn apart from the run itself, so
//! every policy compared in one invocation meets exactly the same viewers.

use crate::latency::{Place, Regions};
use crate::scenario::{ArrivalProcess, Scenario, SessionModel};
use meshtv_proto::nat::{self, Reachability};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Most partitions a scenario may declare (one side bit each).
pub const PARTITIONS_MAX: usize = 32;

#[derive(Clone, Debug)]
pub struct Viewer {
    pub arrive_s: f64,
    pub upload_bps: u64,
    pub download_bps: u64,
    pub reach: Reachability,
    pub place: Place,
    /// Bit `k`: on the cut-off side of partition `k`.
    pub cut_sides: u32,
    /// Seeds this viewer's session lengths (and pauses, with rejoin).
    pub session_seed: u64,
    /// Its sessions end as the scenario's model says (else it stays to the end).
    pub leaves: bool,
}

/// Draws `peers` viewers. Deterministic in the scenario (seed included).
pub fn draw(s: &Scenario) -> Vec<Viewer> {
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ 0x9e37_79b9_7f4a_7c15);
    let regions = Regions::new(&s.latency, &mut rng);
    let n = s.peers as usize;
    let mut arrivals: Vec<f64> = match s.arrivals.process {
        ArrivalProcess::FlashCrowd => (0..n).map(|_| rng.gen::<f64>() * s.arrivals.window_s).collect(),
        ArrivalProcess::Poisson => {
            let mean_gap_s = s.arrivals.window_s / n as f64;
            let mut t = 0.0;
            (0..n)
                .map(|_| {
                    t += exponential(&mut rng, mean_gap_s);
                    t
                })
                .collect()
        }
    };
    arrivals.sort_by(f64::total_cmp);
    let cap_total: f64 = s.capacity.iter().map(|c| c.share).sum();
    let nat_total: f64 = s.nat.iter().map(|c| c.share).sum();
    let share = s.sessions.ending_share;
    arrivals
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let drawn = pick(&mut rng, s.capacity.iter().map(|c| c.share), cap_total);
            let class = if s.capacity_cycle { i % s.capacity.len() } else { drawn };
            let nat_kind = pick(&mut rng, s.nat.iter().map(|c| c.share), nat_total);
            let mut cut_sides = 0u32;
            for (k, p) in s.partitions.iter().take(PARTITIONS_MAX).enumerate() {
                if rng.gen_bool(p.share) {
                    cut_sides |= 1 << k;
                }
            }
            Viewer {
                arrive_s: s.arrivals.start_s + t,
                upload_bps: s.capacity[class].upload_bps,
                download_bps: s.capacity[class].download_bps,
                // Validated names: `named` cannot fail here.
                reach: nat::named(&s.nat[nat_kind].kind).unwrap_or(Reachability::Open),
                place: regions.place(&mut rng),
                cut_sides,
                session_seed: rng.gen(),
                leaves: ((i + 1) as f64 * share).floor() > (i as f64 * share).floor(),
            }
        })
        .collect()
}

/// The length of a viewer's next session, `None` for "to the end of the run".
pub fn session_s(s: &Scenario, v: &Viewer, rng: &mut impl Rng) -> Option<f64> {
    if !v.leaves {
        return None;
    }
    match s.sessions.model {
        SessionModel::Forever => None,
        SessionModel::Fixed => Some(s.sessions.mean_s),
        SessionModel::Exponential => Some(exponential(rng, s.sessions.mean_s)),
    }
}

pub fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

fn pick(rng: &mut impl Rng, shares: impl Iterator<Item = f64>, total: f64) -> usize {
    let mut x = rng.gen::<f64>() * total;
    let mut last = 0;
    for (i, share) in shares.enumerate() {
        last = i;
        if x < share {
            return i;
        }
        x -= share;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_viewers_and_shares_are_kept() {
        let mut s = Scenario { peers: 4000, ..Scenario::default() };
        s.nat = vec![
            crate::scenario::NatShare { share: 3.0, kind: "open".into() },
            crate::scenario::NatShare { share: 1.0, kind: "symmetric".into() },
        ];
        let (a, b) = (draw(&s), draw(&s));
        assert_eq!(a.len(), 4000);
        assert!(a.iter().zip(&b).all(|(x, y)| x.arrive_s == y.arrive_s && x.reach == y.reach));
        let open = a.iter().filter(|v| v.reach == Reachability::Open).count();
        assert!((2800..3200).contains(&open), "{open} open of 4000 for a 3:1 mix");
        assert!(a.windows(2).all(|w| w[0].arrive_s <= w[1].arrive_s));
        assert!(a.iter().all(|v| (2.0..=12.0).contains(&v.arrive_s)));
    }
}
