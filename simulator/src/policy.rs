//! Swarm policies as configurations of the production cores: a policy never adds logic of
//! its own, it only sets tracker and peer config fields.

use crate::scenario::Scenario;
use meshtv_peer::PeerConfig;
use meshtv_tracker::tracker::Policy as TrackerPolicy;
use meshtv_tracker::TrackerConfig;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    /// The Chandelier optimizer: the tracker re-solves all stripe parents periodically as
    /// one assignment problem, with measured upload capacity (the tracker's default).
    Chandelier,
    /// The tracker's stripe trees (one parent per stripe, lowest depth first) plus a few
    /// mesh partners, chosen once at join with declared capacity.
    Tree,
    /// Baseline: every viewer is the source's child in every stripe, no mesh; the source
    /// is an origin with capacity for all (savings 0 by construction).
    OriginOnly,
    /// Baseline, CoolStreaming-like: random mesh partners, pull by buffer maps; only the
    /// source pushes (to the few viewers its slots allow), no trees among viewers.
    RandomMesh,
}

pub const NAMES: &[&str] = &["chandelier", "tree", "origin-only", "random-mesh"];

impl Policy {
    pub fn from_name(name: &str) -> Option<Policy> {
        match name {
            "chandelier" => Some(Policy::Chandelier),
            "tree" => Some(Policy::Tree),
            "origin-only" => Some(Policy::OriginOnly),
            "random-mesh" => Some(Policy::RandomMesh),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::Chandelier => "chandelier",
            Policy::Tree => "tree",
            Policy::OriginOnly => "origin-only",
            Policy::RandomMesh => "random-mesh",
        }
    }

    /// The source's real uplink under this policy.
    pub fn source_upload_bps(self, s: &Scenario) -> u64 {
        match self {
            Policy::OriginOnly if s.source.origin_upload_bps > 0 => s.source.origin_upload_bps,
            Policy::OriginOnly => (s.peers * s.bitrate_bps).saturating_mul(3) / 2,
            _ => s.source.upload_bps,
        }
    }

    pub fn tracker_config(self, s: &Scenario, seed: u64) -> TrackerConfig {
        let mut cfg = TrackerConfig { seed, relay_bps: s.network.relay_upload_bps, ..TrackerConfig::default() };
        cfg.members_per_channel_max = cfg.members_per_channel_max.max(s.peers as usize + 1);
        if self != Policy::Chandelier {
            cfg.policy = TrackerPolicy::Tree;
        }
        match self {
            Policy::Chandelier | Policy::Tree => {}
            Policy::OriginOnly => cfg.partners_per_peer = 0,
            Policy::RandomMesh => {
                cfg.partners_per_peer = s.mesh_partners;
                cfg.trees_among_viewers = false;
            }
        }
        cfg
    }

    /// Adjusts a viewer's config. A baseline is run as it does best. Random-mesh keeps
    /// Haves every 300 ms and never asks its partners to stop announcing (it has no
    /// trees to feed it): a mesh that only pulls lives on its partners' maps, and the
    /// 600 ms that suits the trees (their pushes need no map) left it stalled a tenth of
    /// the time in a simulated 10,000-viewer flash crowd (rebuffer 0.02% -> 9.9%). Nor
    /// does its player catch up: a mesh has no spare time to give (nat-heavy at 2,000:
    /// rebuffer 1.1% -> 5.1%, live delay p95 8.45 -> 9.30 s).
    ///
    /// Nor does it start by the start delay, which made it worse on all four figures
    /// (nat-heavy at 2,000: savings 77.9% -> 74.3%, rebuffer 1.1% -> 2.0%, startup p95
    /// 3.59 -> 3.82 s, live delay p95 8.37 -> 9.32 s; flash-crowd at 3,000: live delay
    /// p95 20.9 s, since without catch-up it keeps the delay it starts at).
    pub fn viewer_config(self, cfg: &mut PeerConfig) {
        if self == Policy::RandomMesh {
            cfg.have_interval = std::time::Duration::from_millis(300);
            cfg.quiet_maps_after = None;
            cfg.catch_up = None;
            cfg.start_delay = None;
        }
    }

    /// Adjusts a source's config: an origin serves every viewer as a child.
    pub fn source_config(self, s: &Scenario, cfg: &mut PeerConfig) {
        if self == Policy::OriginOnly {
            cfg.upload_bps = self.source_upload_bps(s);
            cfg.children_max = (s.peers as usize).saturating_add(16);
        } else {
            // As `meshtv broadcast` announces it: slots for `copies` full copies, plus one
            // bit so that rounding never costs the last slot.
            let stripe_bps = (s.bitrate_bps / s.stripes.max(1) as u64).max(1);
            cfg.upload_bps = stripe_bps * s.stripes as u64 * s.source.copies as u64 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_random_mesh_keeps_the_faster_haves_never_catches_up_nor_starts_by_the_delay() {
        use meshtv_peer::PeerRole;
        let viewer = || {
            let role = PeerRole::Viewer { channel: "c".into() };
            PeerConfig::new(meshtv_proto::NodeId(5), "127.0.0.1:1".parse().unwrap(), role)
        };
        let default = viewer().have_interval;
        for n in NAMES {
            let mut cfg = viewer();
            let policy = Policy::from_name(n).unwrap();
            policy.viewer_config(&mut cfg);
            let expected = if policy == Policy::RandomMesh { std::time::Duration::from_millis(300) } else { default };
            assert_eq!(cfg.have_interval, expected, "{n}");
            assert_eq!(cfg.catch_up.is_none(), policy == Policy::RandomMesh, "{n}");
            assert_eq!(cfg.quiet_maps_after.is_none(), policy == Policy::RandomMesh, "{n}");
            assert_eq!(cfg.start_delay.is_none(), policy == Policy::RandomMesh, "{n}");
        }
        assert!(default > std::time::Duration::from_millis(300), "the trees' default is the slower one");
    }

    #[test]
    fn names_round_trip() {
        for n in NAMES {
            assert_eq!(Policy::from_name(n).unwrap().name(), *n);
        }
        assert_eq!(Policy::from_name("tree-ish"), None);
    }
}
