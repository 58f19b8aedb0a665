//! The coordinate latency model: every node has a place on a plane measured in
//! milliseconds and an access delay (its last mile); the one-way latency between two
//! nodes is the distance between them plus both access delays. Viewers gather in a few
//! regions, so pairs inside a region are close and pairs across regions are far, as on
//! the real Internet, without a latency matrix of n² entries.

use crate::scenario::Latency;
use rand::Rng;
use std::time::Duration;

/// Where a node sits, as the latency model sees it.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Place {
    pub x_ms: f32,
    pub y_ms: f32,
    pub access_ms: f32,
}

impl Place {
    /// The well-connected centre of the plane (tracker and source).
    pub const CENTRE: Place = Place { x_ms: 0.0, y_ms: 0.0, access_ms: 1.0 };

    /// One-way latency to `other`, in microseconds.
    pub fn latency_us(&self, other: &Place) -> u64 {
        let (dx, dy) = (self.x_ms - other.x_ms, self.y_ms - other.y_ms);
        let ms = (dx * dx + dy * dy).sqrt() + self.access_ms + other.access_ms;
        (ms as f64 * 1000.0).round() as u64
    }

    pub fn latency(&self, other: &Place) -> Duration {
        Duration::from_micros(self.latency_us(other))
    }
}

/// Region centres, drawn once per run from the seed.
pub struct Regions {
    centres: Vec<(f32, f32)>,
    radius_ms: f32,
    access_ms: (f32, f32),
}

impl Regions {
    pub fn new(cfg: &Latency, rng: &mut impl Rng) -> Regions {
        let half = (cfg.span_ms / 2.0) as f32;
        let centres =
            (0..cfg.regions.max(1)).map(|_| (rng.gen_range(-half..=half), rng.gen_range(-half..=half))).collect();
        Regions {
            centres,
            radius_ms: cfg.region_radius_ms as f32,
            access_ms: (cfg.access_ms_min as f32, cfg.access_ms_max as f32),
        }
    }

    /// A place for a new viewer: a region at random, uniform in a disc around its centre.
    pub fn place(&self, rng: &mut impl Rng) -> Place {
        let (cx, cy) = self.centres[rng.gen_range(0..self.centres.len())];
        let r = self.radius_ms * rng.gen::<f32>().sqrt();
        let a = rng.gen::<f32>() * std::f32::consts::TAU;
        let (lo, hi) = self.access_ms;
        let access_ms = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
        Place { x_ms: cx + r * a.cos(), y_ms: cy + r * a.sin(), access_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn latency_is_symmetric_and_includes_both_access_delays() {
        let a = Place { x_ms: 0.0, y_ms: 0.0, access_ms: 2.0 };
        let b = Place { x_ms: 3.0, y_ms: 4.0, access_ms: 5.0 };
        assert_eq!(a.latency_us(&b), 12_000);
        assert_eq!(b.latency_us(&a), 12_000);
    }

    #[test]
    fn places_stay_within_their_region() {
        let cfg =
            Latency { regions: 3, span_ms: 100.0, region_radius_ms: 10.0, access_ms_min: 1.0, access_ms_max: 9.0 };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let regions = Regions::new(&cfg, &mut rng);
        for _ in 0..1000 {
            let p = regions.place(&mut rng);
            let near =
                regions.centres.iter().any(|&(x, y)| ((p.x_ms - x).powi(2) + (p.y_ms - y).powi(2)).sqrt() <= 10.001);
            assert!(near && (1.0..=9.0).contains(&p.access_ms));
        }
    }
}
