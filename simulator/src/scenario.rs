//! Scenarios: what to simulate, as TOML (`assets/scenarios/*.toml`). Every field has a
//! unit in its name and a default, so a scenario file says only what it changes; unknown
//! fields are errors, so a typo is not silently ignored.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Most peers a scenario may ask for (the simulator is sized for 10^5).
pub const PEERS_MAX: u64 = 1_000_000;
/// Longest simulated run.
pub const DURATION_S_MAX: f64 = 24.0 * 3600.0;

/// The scenarios shipped in `assets/scenarios/`, built in so that `meshtv simulate NAME`
/// works from anywhere.
pub const BUILTIN: &[(&str, &str)] = &[
    ("small", include_str!("../../assets/scenarios/small.toml")),
    ("flash-crowd-10k", include_str!("../../assets/scenarios/flash-crowd-10k.toml")),
    ("churn-10k", include_str!("../../assets/scenarios/churn-10k.toml")),
    ("nat-heavy-10k", include_str!("../../assets/scenarios/nat-heavy-10k.toml")),
    ("scale-100k", include_str!("../../assets/scenarios/scale-100k.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("scenario {name}: {message}")]
    Parse { name: String, message: String },
    #[error("no scenario file {0} and no built-in scenario of that name (built in: {names})", names = builtin_names())]
    Unknown(String),
    #[error("scenario {name}: {message}")]
    Invalid { name: String, message: String },
}

fn builtin_names() -> String {
    BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    /// Viewers (the source and the tracker come on top).
    pub peers: u64,
    pub duration_s: f64,
    /// `tree`, `origin-only` or `random-mesh`.
    pub policy: String,
    pub bitrate_bps: u64,
    pub segment_duration_ms: u32,
    pub piece_bytes: u32,
    pub stripes: u8,
    /// Time between two points of the time series.
    pub sample_interval_s: f64,
    pub source: Source,
    pub arrivals: Arrivals,
    pub sessions: Sessions,
    /// Upload / download capacity classes of viewers, by share.
    pub capacity: Vec<CapacityClass>,
    /// Viewers take the capacity classes in turn (the i-th to arrive gets class i mod n,
    /// shares ignored), as a lab's fixed list of uplinks does, instead of drawing them.
    pub capacity_cycle: bool,
    /// NAT types of viewers, by share.
    pub nat: Vec<NatShare>,
    pub latency: Latency,
    pub network: Network,
    pub partitions: Vec<Partition>,
    /// Mesh partners each viewer gets (the `tree` policy keeps the tracker's default).
    pub mesh_partners: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Source {
    /// The broadcaster's real uplink.
    pub upload_bps: u64,
    /// Full copies of the stream the source offers the trees, as `meshtv broadcast
    /// --max-copies` does; the rest of its uplink answers late pieces.
    pub copies: u32,
    /// The origin's uplink under the `origin-only` policy (a CDN); 0 means "enough for
    /// every viewer at 1.5× the bitrate".
    pub origin_upload_bps: u64,
}

#[derive(Copy, Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ArrivalProcess {
    /// Everyone arrives within `window_s`, uniformly.
    FlashCrowd,
    /// Exponential gaps, `peers` arrivals expected over `window_s`.
    Poisson,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Arrivals {
    pub process: ArrivalProcess,
    pub start_s: f64,
    pub window_s: f64,
}

#[derive(Copy, Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SessionModel {
    /// Viewers stay to the end.
    Forever,
    /// Session lengths are exponential with mean `mean_s`.
    Exponential,
    /// Every session lasts `mean_s`.
    Fixed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    pub model: SessionModel,
    pub mean_s: f64,
    /// When a session ends, the same viewer (same capacity, NAT and place, new node id)
    /// comes back after an exponential pause of mean `off_mean_s`: a steady population.
    pub rejoin: bool,
    pub off_mean_s: f64,
    /// Share of the viewers whose sessions end as `model` says, spread evenly over the
    /// order of arrival (0.25: the 4th, 8th, 12th, …); the others stay to the end.
    pub ending_share: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapacityClass {
    pub share: f64,
    pub upload_bps: u64,
    pub download_bps: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatShare {
    pub share: f64,
    /// One of [`meshtv_proto::nat::NAMES`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// The coordinate latency model: viewers sit in `regions` clusters spread over a plane
/// `span_ms` wide; one-way latency is the distance plus both ends' access delay.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Latency {
    pub regions: u32,
    pub span_ms: f64,
    pub region_radius_ms: f64,
    pub access_ms_min: f64,
    pub access_ms_max: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// Packet loss probability; a lost message is retransmitted after a timeout (QUIC is
    /// reliable), so loss shows up as delay.
    pub loss: f64,
    /// The tracker's relay uplink; 0 means no relay (relayed pairs cannot connect).
    pub relay_upload_bps: u64,
    pub connect_timeout_ms: u64,
    /// How long a silent connection (e.g. across a partition) lives before it is declared
    /// gone.
    pub idle_timeout_ms: u64,
}

/// A network partition: from `at_s` to `heal_s`, a `share` of the viewers (drawn from the
/// seed) cannot exchange packets with the rest, the tracker and source included.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub at_s: f64,
    pub heal_s: f64,
    pub share: f64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "unnamed".into(),
            seed: 1,
            peers: 100,
            duration_s: 120.0,
            policy: "tree".into(),
            bitrate_bps: 2_000_000,
            segment_duration_ms: 2000,
            piece_bytes: 64 * 1024,
            stripes: 4,
            sample_interval_s: 5.0,
            source: Source::default(),
            arrivals: Arrivals::default(),
            sessions: Sessions::default(),
            capacity: vec![CapacityClass { share: 1.0, upload_bps: 4_000_000, download_bps: 50_000_000 }],
            capacity_cycle: false,
            nat: vec![NatShare { share: 1.0, kind: "open".into() }],
            latency: Latency::default(),
            network: Network::default(),
            partitions: Vec::new(),
            mesh_partners: 8,
        }
    }
}

impl Default for Source {
    fn default() -> Self {
        Source { upload_bps: 20_000_000, copies: 4, origin_upload_bps: 0 }
    }
}

impl Default for Arrivals {
    fn default() -> Self {
        Arrivals { process: ArrivalProcess::FlashCrowd, start_s: 2.0, window_s: 10.0 }
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { model: SessionModel::Forever, mean_s: 300.0, rejoin: false, off_mean_s: 30.0, ending_share: 1.0 }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency { regions: 4, span_ms: 80.0, region_radius_ms: 10.0, access_ms_min: 2.0, access_ms_max: 20.0 }
    }
}

impl Default for Network {
    fn default() -> Self {
        Network { loss: 0.0, relay_upload_bps: 100_000_000, connect_timeout_ms: 5000, idle_timeout_ms: 10_000 }
    }
}

impl Scenario {
    /// Reads a scenario from a file path or, failing that, a built-in name. Only a file
    /// counts as a path: a directory of reports named after a scenario (as `--out` makes
    /// them) must not hide the built-in of that name.
    pub fn load(path_or_name: &str) -> Result<Scenario, ScenarioError> {
        Scenario::load_in(Path::new("."), path_or_name)
    }

    /// [`Scenario::load`] with relative paths taken from `dir`.
    fn load_in(dir: &Path, path_or_name: &str) -> Result<Scenario, ScenarioError> {
        let path = dir.join(path_or_name);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ScenarioError::Read { path: path_or_name.into(), source })?;
            return Scenario::parse(path_or_name, &text);
        }
        let name = path_or_name.trim_end_matches(".toml");
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Scenario::parse(n, text),
            None => Err(ScenarioError::Unknown(path_or_name.into())),
        }
    }

    pub fn parse(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse { name: name.into(), message: e.to_string() })?;
        s.validate()?;
        Ok(s)
    }

    /// Checks the bounds and the shares; the engine relies on them.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |message: String| Err(ScenarioError::Invalid { name: self.name.clone(), message });
        if self.peers == 0 || self.peers > PEERS_MAX {
            return bad(format!("peers must be 1..={PEERS_MAX}"));
        }
        if !(self.duration_s > 0.0 && self.duration_s <= DURATION_S_MAX) {
            return bad(format!("duration_s must be in (0, {DURATION_S_MAX}]"));
        }
        if crate::policy::Policy::from_name(&self.policy).is_none() {
            return bad(format!("unknown policy {:?} (known: {})", self.policy, crate::policy::NAMES.join(", ")));
        }
        if self.bitrate_bps < 10_000 || self.segment_duration_ms < 100 || self.sample_interval_s <= 0.0 {
            return bad("bitrate_bps ≥ 10000, segment_duration_ms ≥ 100 and sample_interval_s > 0".into());
        }
        let pb = self.piece_bytes as usize;
        if !(meshtv_proto::limits::PIECE_BYTES_MIN..=meshtv_proto::limits::PIECE_BYTES_MAX).contains(&pb) {
            return bad("piece_bytes out of the protocol's bounds".into());
        }
        let seg_bytes = self.bitrate_bps * self.segment_duration_ms as u64 / 8000;
        if seg_bytes.div_ceil(pb as u64) > meshtv_proto::limits::PIECES_PER_SEGMENT_MAX as u64 {
            return bad("too many pieces per segment: raise piece_bytes".into());
        }
        if self.stripes == 0 || self.stripes as usize > meshtv_proto::limits::STRIPES_MAX {
            return bad("stripes out of bounds".into());
        }
        if self.capacity.is_empty()
            || self.capacity.iter().any(|c| c.share < 0.0 || c.upload_bps == 0 || c.download_bps == 0)
        {
            return bad("capacity classes need a share ≥ 0 and non-zero capacities".into());
        }
        if !(0.0..=1.0).contains(&self.sessions.ending_share) {
            return bad("sessions.ending_share must be in [0, 1]".into());
        }
        if self.nat.is_empty() || self.nat.iter().any(|n| n.share < 0.0) {
            return bad("nat shares must be ≥ 0".into());
        }
        for n in &self.nat {
            if meshtv_proto::nat::named(&n.kind).is_none() {
                return bad(format!("unknown NAT type {:?} (known: {})", n.kind, meshtv_proto::nat::NAMES.join(", ")));
            }
        }
        if self.capacity.iter().map(|c| c.share).sum::<f64>() <= 0.0
            || self.nat.iter().map(|n| n.share).sum::<f64>() <= 0.0
        {
            return bad("shares must not all be zero".into());
        }
        if self.source.upload_bps == 0 || self.source.copies == 0 {
            return bad("source.upload_bps and source.copies must be > 0".into());
        }
        if self.arrivals.window_s < 0.0 || self.arrivals.start_s < 0.0 {
            return bad("arrival times must be ≥ 0".into());
        }
        if self.sessions.model != SessionModel::Forever && self.sessions.mean_s <= 0.0 {
            return bad("sessions.mean_s must be > 0".into());
        }
        if !(0.0..0.5).contains(&self.network.loss) {
            return bad("network.loss must be in [0, 0.5)".into());
        }
        if self.latency.regions == 0 || self.latency.access_ms_min > self.latency.access_ms_max {
            return bad("latency needs ≥ 1 region and access_ms_min ≤ access_ms_max".into());
        }
        for p in &self.partitions {
            if !(p.at_s < p.heal_s && (0.0..=1.0).contains(&p.share)) {
                return bad("a partition needs at_s < heal_s and a share in [0, 1]".into());
            }
        }
        if self.mesh_partners > meshtv_proto::limits::PARTNERS_MAX {
            return bad("mesh_partners above the protocol's PARTNERS_MAX".into());
        }
        Ok(())
    }

    /// Bytes of one segment at the scenario's bitrate.
    pub fn segment_bytes(&self) -> usize {
        (self.bitrate_bps * self.segment_duration_ms as u64 / 8000) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_parses_and_validates() {
        for (name, _) in BUILTIN {
            let s = Scenario::load(name).unwrap();
            assert_eq!(&s.name, name);
        }
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(matches!(Scenario::parse("t", "peerz = 3"), Err(ScenarioError::Parse { .. })));
        assert!(matches!(Scenario::parse("t", "peers = 0"), Err(ScenarioError::Invalid { .. })));
        assert!(matches!(Scenario::parse("t", "policy = \"best\""), Err(ScenarioError::Invalid { .. })));
        assert!(matches!(Scenario::load("no-such-scenario"), Err(ScenarioError::Unknown(_))));
    }

    #[test]
    fn a_directory_named_like_a_scenario_does_not_hide_it() {
        // `meshtv simulate small --out small` leaves a directory `small` behind.
        let dir = std::env::temp_dir().join(format!("meshtv-scenario-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("small")).unwrap();
        let loaded = Scenario::load_in(&dir, "small");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.unwrap().name, "small");
    }
}
