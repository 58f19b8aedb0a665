//! Runs one policy of a scenario and prints, every few simulated seconds, how far it is and
//! what the flow model has cost so far (for profiling; no report is written):
//! `cargo run --release -p meshtv-simulator --example probe -- SCENARIO [POLICY] [PEERS] [DURATION_S] [STEP_S]`.

mod common;

use meshtv_proto::Time;
use meshtv_simulator::Engine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (s, policy) = common::scenario_from_args(&args);
    let duration_s = s.duration_s;
    let step_s: f64 = args.get(5).map_or(10.0, |d| d.parse().expect("step"));
    let mut e = Engine::new(&s, policy);
    let started = std::time::Instant::now();
    let mut t = 0.0;
    let mut source_bytes = 0u64;
    // Bytes each viewer had from the source at the previous step: where the origin's
    // upload goes, by how long ago the viewer joined.
    let mut from_source: std::collections::HashMap<meshtv_proto::NodeId, u64> = Default::default();
    while t < duration_s {
        let before = t;
        t = (t + step_s).min(duration_s);
        e.run_until(Time::from_secs_f64(t), &mut |_| {});
        // Swarm health: what the viewers' own stats say now.
        let now = e.now();
        let (mut n, mut playing, mut starving, mut buffer, mut partners, mut children) = (0, 0, 0, 0.0, 0, 0);
        let mut by_age = [0u64; 4];
        let mut next = std::collections::HashMap::new();
        for (id, p) in e.viewers() {
            let st = p.stats(now);
            let age = e.joined_at(id).map_or(0.0, |j| now.since(j).as_secs_f64());
            let k = match age {
                a if a < 5.0 => 0,
                a if a < 15.0 => 1,
                a if a < 60.0 => 2,
                _ => 3,
            };
            by_age[k] += st.bytes_from_source - from_source.get(&id).copied().unwrap_or(0);
            next.insert(id, st.bytes_from_source);
            n += 1;
            if st.startup_s.is_some() {
                playing += 1;
                buffer += st.buffer_s;
                starving += (st.buffer_s < 0.5) as usize;
            }
            partners += st.partners;
            children += st.children;
        }
        from_source = next;
        let per = |x: usize| x as f64 / n.max(1) as f64;
        let src = e.counters.source_media_bytes - source_bytes;
        source_bytes = e.counters.source_media_bytes;
        eprintln!(
            "  playing {playing}/{n}, buffer < 0.5 s {starving}, mean buffer {:.2} s, partners {:.1}, children {:.1}, \
             source {:.0} Mbit/s",
            buffer / playing.max(1) as f64,
            per(partners),
            per(children),
            src as f64 * 8.0 / (t - before) / 1e6,
        );
        let mbps = |b: u64| b as f64 * 8.0 / (t - before) / 1e6;
        eprintln!(
            "  origin to viewers by time since joining: < 5 s {:.0}, 5-15 s {:.0}, 15-60 s {:.0}, older {:.0} Mbit/s",
            mbps(by_age[0]),
            mbps(by_age[1]),
            mbps(by_age[2]),
            mbps(by_age[3])
        );
        let f = e.flows();
        let c = &e.counters;
        eprintln!(
            "sim {t:>5.0}s wall {:>7.2}s events {:>10} viewers {:>6} live flows {:>6} flow updates {:>9} \
             flows recomputed one by one {:>11} flows started {:>9} dials direct/relayed/failed {}/{}/{}",
            started.elapsed().as_secs_f64(),
            c.events,
            e.viewers().count(),
            f.live_flows(),
            f.updates,
            f.recomputed_flows,
            c.flows_started,
            c.dials_direct,
            c.dials_relayed,
            c.dials_failed,
        );
    }
}
