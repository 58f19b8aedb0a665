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
    let mut last_bytes: std::collections::HashMap<meshtv_proto::NodeId, (u64, u64)> = Default::default();
    let mut last_parents: std::collections::HashMap<meshtv_proto::NodeId, Vec<Option<meshtv_proto::NodeId>>> =
        Default::default();
    let mut last_up: std::collections::HashMap<meshtv_proto::NodeId, u64> = Default::default();
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
        // By NAT kind: how many, their origin load, how many stripes have no parent, and
        // how many of them are starving.
        // Upload, what of it arrived as duplicates, and how many stripe parents changed.
        let (mut up, mut dup, mut moved, mut dropped, mut excused, mut dup_pushed) =
            (0u64, 0u64, 0usize, 0u64, 0u64, 0u64);
        let mut parents_now = std::collections::HashMap::new();
        for (id, p) in e.viewers() {
            let st = p.stats(now);
            let (u0, d0) = last_bytes.get(&id).copied().unwrap_or((0, 0));
            up += st.bytes_uploaded - u0;
            dropped += st.pushes_dropped;
            excused += st.bytes_excused;
            dup_pushed += st.bytes_duplicate_pushed;

            dup += st.bytes_duplicate - d0;
            last_bytes.insert(id, (st.bytes_uploaded, st.bytes_duplicate));
            let ps = e.parents_of(id).unwrap_or_default();
            if let Some(old) = last_parents.get(&id) {
                moved += ps.iter().zip(old).filter(|(a, b)| a != b).count();
            }
            parents_now.insert(id, ps);
        }
        last_parents = parents_now;
        // By upload class: upload used against capacity, children.
        let mut classes: std::collections::BTreeMap<u64, (usize, u64, usize)> = Default::default();
        for (id, p) in e.viewers() {
            let st = p.stats(now);
            let c = classes.entry(e.upload_bps_of(id).unwrap_or(0.0) as u64).or_default();
            c.0 += 1;
            c.1 += st.bytes_uploaded - last_up.get(&id).copied().unwrap_or(0);
            c.2 += st.children;
            last_up.insert(id, st.bytes_uploaded);
        }
        // Startup by NAT kind and by upload class (viewers that started so far).
        let mut startups: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for (id, p) in e.viewers() {
            let st = p.stats(now);
            let Some(s) = st.startup_s else { continue };
            let kind = st.nat_report.as_ref().map_or("unknown".into(), |r| r.kind());
            startups.entry(kind).or_default().push(s);
            let class = format!("uplink {:.0} Mbit/s", e.upload_bps_of(id).unwrap_or(0.0) / 1e6);
            let joined = e.joined_at(id).map_or(0.0, |j| j.as_secs_f64());
            startups.entry(format!("joined at {:>3.0} s", (joined / 5.0).floor() * 5.0)).or_default().push(s);
            startups.entry(class).or_default().push(s);
        }
        if std::env::var_os("TIMELINE").is_some() {
            for (id, p) in
                e.viewers().filter(|(id, _)| e.joined_at(*id).is_some_and(|j| j.as_secs_f64() < 8.0)).take(40)
            {
                let j = e.joined_at(id).unwrap();
                let pb = p.playback();
                let rel = |t: Time| t.since(j).as_secs_f64();
                let st = p.stats(now);
                let mut line = format!(
                    "      {id:?} joined {:.2} start {:?} startup {:?} from source {} kB of {} kB:",
                    j.as_secs_f64(),
                    pb.start_seq,
                    st.startup_s,
                    st.bytes_from_source / 1000,
                    (st.bytes_from_source + st.bytes_from_peers) / 1000
                );
                for (seq, slot) in p.buffer().iter().take(4) {
                    line += &format!(
                        " [{seq} created {:.2} header {:.2} complete {:?}]",
                        slot.header.header.created_ms as f64 / 1000.0 - j.as_secs_f64(),
                        rel(slot.header_at),
                        slot.complete_at.map(|c| (rel(c) * 100.0).round() / 100.0)
                    );
                }
                eprintln!("{line}");
            }
        }
        for (k, v) in &mut startups {
            v.sort_by(f64::total_cmp);
            let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
            eprintln!("    startup {k:<22} p50 {:.2} s p95 {:.2} s ({} started)", q(0.5), q(0.95), v.len());
        }
        for (bps, (n, bytes, children)) in &classes {
            eprintln!(
                "    uplink {:>4.1} Mbit/s x {n:>5}: using {:>3.0}%, children {:.2}",
                *bps as f64 / 1e6,
                *bytes as f64 * 8.0 / (t - before) / (*bps as f64 * *n as f64) * 100.0,
                *children as f64 / *n as f64
            );
        }
        eprintln!(
            "  viewers upload {:.0} Mbit/s, duplicates received {:.0} Mbit/s, stripe parents changed {moved}, \
             pushes dropped so far {dropped}, excused so far {:.0} MB, duplicates pushed so far {:.0} MB",
            up as f64 * 8.0 / (t - before) / 1e6,
            dup as f64 * 8.0 / (t - before) / 1e6,
            excused as f64 / 1e6,
            dup_pushed as f64 / 1e6
        );
        let mut kinds: std::collections::BTreeMap<String, (usize, u64, usize, usize, usize)> = Default::default();
        for (id, p) in e.viewers() {
            let st = p.stats(now);
            let kind = st.nat_report.as_ref().map_or("unknown".into(), |r| r.kind());
            let k = kinds.entry(kind).or_default();
            k.0 += 1;
            k.1 += st.bytes_from_source - from_source.get(&id).copied().unwrap_or(0);
            k.2 += e.parents_of(id).map_or(0, |ps| ps.iter().filter(|p| p.is_none()).count());
            k.3 += (st.startup_s.is_some() && st.buffer_s < 0.5) as usize;
            k.4 += st.children;
        }
        for (kind, (n, src, orphan, starving, children)) in &kinds {
            eprintln!(
                "    {kind:<22} {n:>5}: origin {:>5.0} Mbit/s, stripes without parent {orphan:>5}, starving {starving:>4}, children {:.2}",
                *src as f64 * 8.0 / (t - before) / 1e6,
                *children as f64 / *n as f64
            );
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
