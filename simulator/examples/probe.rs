//! Runs one policy of a scenario and prints, every few simulated seconds, how the swarm is
//! doing and what the flow model has cost so far (for diagnosis and profiling; no report
//! is written):
//! `cargo run --release -p meshtv-simulator --example probe -- SCENARIO [POLICY] [PEERS] [DURATION_S] [STEP_S]`.
//! With `TIMELINE=1`, also the first segments of up to 40 viewers that joined in the first
//! 8 s (or in the 8 s from `TIMELINE_FROM` seconds): when each header came and each
//! segment completed, relative to joining. With `SLOW_STARTS=1`, every viewer that started
//! more than 3 s after joining (issue 5's startup target), with its start segment, the one
//! before and the one after (created, header and completion times relative to joining),
//! and a count by 5 s of joining time; the buffer keeps only recent segments, so run the
//! probe no further than about 15 s past the joins of interest.

mod common;

use meshtv_peer::buffer::Slot;
use meshtv_peer::stats::Decisions;
use meshtv_peer::{Peer, PeerStats};
use meshtv_proto::{NodeId, Time};
use meshtv_simulator::Engine;
use std::collections::{BTreeMap, HashMap};

/// One viewer at this step, with what it had at the previous one.
struct Row<'a> {
    id: NodeId,
    peer: &'a Peer,
    stats: PeerStats,
    before: Seen,
    parents: Vec<Option<NodeId>>,
    /// Seconds since it joined.
    age_s: f64,
    upload_bps: f64,
}

/// A viewer's counters at the previous step.
#[derive(Clone, Default)]
struct Seen {
    from_source: u64,
    uploaded: u64,
    duplicate: u64,
    decisions: Decisions,
    parents: Option<Vec<Option<NodeId>>>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (s, policy) = common::scenario_from_args(&args);
    let step_s: f64 = args.get(5).map_or(10.0, |d| d.parse().expect("step"));
    let mut e = Engine::new(&s, policy);
    let started = std::time::Instant::now();
    let mut t = 0.0;
    let mut source_bytes = 0u64;
    let mut seen: HashMap<NodeId, Seen> = HashMap::new();
    while t < s.duration_s {
        let before = t;
        t = (t + step_s).min(s.duration_s);
        e.run_until(Time::from_secs_f64(t), &mut |_| {});
        let now = e.now();
        let rows: Vec<Row> = e
            .viewers()
            .map(|(id, peer)| Row {
                id,
                peer,
                stats: peer.stats(now),
                before: seen.get(&id).cloned().unwrap_or_default(),
                parents: e.parents_of(id).unwrap_or_default(),
                age_s: e.joined_at(id).map_or(0.0, |j| now.since(j).as_secs_f64()),
                upload_bps: e.upload_bps_of(id).unwrap_or(0.0),
            })
            .collect();
        let mbps = |bytes: u64| bytes as f64 * 8.0 / (t - before) / 1e6;
        if std::env::var_os("TIMELINE").is_some() {
            timeline(&e, &rows);
        }
        if std::env::var_os("SLOW_STARTS").is_some() {
            slow_starts(&e, &rows);
        }
        startups(&e, &rows);
        upload_classes(&rows, t - before);
        uploads(&rows, &mbps);
        nat_kinds(&rows, &mbps);
        let source = e.counters.source_media_bytes - source_bytes;
        source_bytes = e.counters.source_media_bytes;
        health(&rows, mbps(source));
        interest(&rows);
        origin_by_age(&rows, &mbps);
        flow_cost(&e, t, started);
        seen = rows
            .into_iter()
            .map(|r| {
                let s = Seen {
                    from_source: r.stats.bytes_from_source,
                    uploaded: r.stats.bytes_uploaded,
                    duplicate: r.stats.bytes_duplicate,
                    decisions: r.stats.decisions,
                    parents: Some(r.parents),
                };
                (r.id, s)
            })
            .collect();
    }
}

/// Quantiles of startup by NAT kind, by upload class and by when the viewer joined; and of
/// each viewer's own median live delay by when it joined (a viewer keeps the delay it
/// started with, less any stall, so the early crowd's shows there).
fn startups(e: &Engine, rows: &[Row]) {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut delays: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in rows {
        let Some(s) = r.stats.startup_s else { continue };
        groups.entry(nat_kind(&r.stats)).or_default().push(s);
        groups.entry(format!("uplink {:.0} Mbit/s", r.upload_bps / 1e6)).or_default().push(s);
        let joined = e.joined_at(r.id).map_or(0.0, |j| j.as_secs_f64());
        let when = format!("joined at {:>3.0} s", (joined / 5.0).floor() * 5.0);
        if let Some(d) = r.stats.live_delay_p50_s {
            delays.entry(when.clone()).or_default().push(d);
        }
        groups.entry(when).or_default().push(s);
    }
    for (k, v) in &mut groups {
        let (p50, p95) = p50_p95(v);
        eprintln!("    startup {k:<22} p50 {p50:.2} s p95 {p95:.2} s ({} started)", v.len());
    }
    for (k, v) in &mut delays {
        let (p50, p95) = p50_p95(v);
        eprintln!("    live delay {k:<19} p50 {p50:.2} s p95 {p95:.2} s (of viewers' medians)");
    }
}

/// The median and 95th percentile of a non-empty sample (sorts it).
fn p50_p95(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
    (q(0.5), q(0.95))
}

/// Per upload class: how much of its uplink it used since the last step, and its children.
fn upload_classes(rows: &[Row], secs: f64) {
    let mut classes: BTreeMap<u64, (usize, u64, usize)> = BTreeMap::new();
    for r in rows {
        let c = classes.entry(r.upload_bps as u64).or_default();
        c.0 += 1;
        c.1 += r.stats.bytes_uploaded - r.before.uploaded;
        c.2 += r.stats.children;
    }
    for (bps, (n, bytes, children)) in &classes {
        eprintln!(
            "    uplink {:>4.1} Mbit/s x {n:>5}: using {:>3.0}%, children {:.2}",
            *bps as f64 / 1e6,
            *bytes as f64 * 8.0 / secs / (*bps as f64 * *n as f64) * 100.0,
            *children as f64 / *n as f64
        );
    }
}

/// What the viewers uploaded, what arrived twice, and how many stripe parents changed.
fn uploads(rows: &[Row], mbps: &dyn Fn(u64) -> f64) {
    let sum = |f: &dyn Fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    let up = sum(&|r| r.stats.bytes_uploaded - r.before.uploaded);
    let dup = sum(&|r| r.stats.bytes_duplicate - r.before.duplicate);
    let moved: usize = rows
        .iter()
        .filter_map(|r| Some(r.parents.iter().zip(r.before.parents.as_ref()?).filter(|(a, b)| a != b).count()))
        .sum();
    eprintln!(
        "  viewers upload {:.0} Mbit/s, duplicates received {:.0} Mbit/s, stripe parents changed {moved}, \
         pushes dropped so far {}, excused so far {:.0} MB, duplicates pushed so far {:.0} MB",
        mbps(up),
        mbps(dup),
        sum(&|r| r.stats.pushes_dropped),
        sum(&|r| r.stats.bytes_excused) as f64 / 1e6,
        sum(&|r| r.stats.bytes_duplicate_pushed) as f64 / 1e6
    );
}

/// Per NAT kind: how many, their origin load, stripes without a parent, starving, children.
fn nat_kinds(rows: &[Row], mbps: &dyn Fn(u64) -> f64) {
    let mut kinds: BTreeMap<String, (usize, u64, usize, usize, usize)> = BTreeMap::new();
    for r in rows {
        let k = kinds.entry(nat_kind(&r.stats)).or_default();
        k.0 += 1;
        k.1 += r.stats.bytes_from_source - r.before.from_source;
        k.2 += r.parents.iter().filter(|p| p.is_none()).count();
        k.3 += (r.stats.startup_s.is_some() && r.stats.buffer_s < 0.5) as usize;
        k.4 += r.stats.children;
    }
    for (kind, (n, src, orphan, starving, children)) in &kinds {
        eprintln!(
            "    {kind:<22} {n:>5}: origin {:>5.0} Mbit/s, stripes without parent {orphan:>5}, \
             starving {starving:>4}, children {:.2}",
            mbps(*src),
            *children as f64 / *n as f64
        );
    }
}

/// Swarm health: what the viewers' own stats say now.
fn health(rows: &[Row], source_mbps: f64) {
    let n = rows.len().max(1) as f64;
    let playing: Vec<&Row> = rows.iter().filter(|r| r.stats.startup_s.is_some()).collect();
    let starving = playing.iter().filter(|r| r.stats.buffer_s < 0.5).count();
    let buffer: f64 = playing.iter().map(|r| r.stats.buffer_s).sum();
    eprintln!(
        "  playing {}/{}, buffer < 0.5 s {starving}, mean buffer {:.2} s, partners {:.1}, children {:.1}, \
         source {source_mbps:.0} Mbit/s",
        playing.len(),
        rows.len(),
        buffer / playing.len().max(1) as f64,
        rows.iter().map(|r| r.stats.partners).sum::<usize>() as f64 / n,
        rows.iter().map(|r| r.stats.children).sum::<usize>() as f64 / n,
    );
}

/// How many viewers have their partners' maps turned off, and what their scheduling
/// decisions since the last step found (see `PeerStats::decisions`).
fn interest(rows: &[Row]) {
    let quiet = rows.iter().filter(|r| r.stats.maps_quiet).count();
    let mut d = [0u64; 5];
    for r in rows {
        let (now, was) = (r.stats.decisions, r.before.decisions);
        d[0] += now.fed - was.fed;
        d[1] += now.waiting - was.waiting;
        d[2] += now.near_deadline - was.near_deadline;
        d[3] += now.push_late - was.push_late;
        d[4] += now.no_headers - was.no_headers;
    }
    let total = d.iter().sum::<u64>().max(1) as f64;
    let pct = |n: u64| 100.0 * n as f64 / total;
    eprintln!(
        "  maps quiet {quiet}/{}; decisions: fed {:.1}%, waiting {:.1}%, near deadline {:.1}%, push late {:.1}%, \
         no headers {:.1}%",
        rows.len(),
        pct(d[0]),
        pct(d[1]),
        pct(d[2]),
        pct(d[3]),
        pct(d[4])
    );
}

/// Where the origin's upload went since the last step, by how long ago each receiver joined.
fn origin_by_age(rows: &[Row], mbps: &dyn Fn(u64) -> f64) {
    let mut by_age = [0u64; 4];
    for r in rows {
        let k = match r.age_s {
            a if a < 5.0 => 0,
            a if a < 15.0 => 1,
            a if a < 60.0 => 2,
            _ => 3,
        };
        by_age[k] += r.stats.bytes_from_source - r.before.from_source;
    }
    eprintln!(
        "  origin to viewers by time since joining: < 5 s {:.0}, 5-15 s {:.0}, 15-60 s {:.0}, older {:.0} Mbit/s",
        mbps(by_age[0]),
        mbps(by_age[1]),
        mbps(by_age[2]),
        mbps(by_age[3])
    );
}

/// How far the run is and what the flow model has cost so far.
fn flow_cost(e: &Engine, t: f64, started: std::time::Instant) {
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
    let mut kinds: Vec<(&str, u64)> = e.events_by_kind.iter().map(|(k, n)| (*k, *n)).collect();
    kinds.sort_by_key(|&(k, n)| (std::cmp::Reverse(n), k));
    let total: u64 = kinds.iter().map(|(_, n)| n).sum::<u64>().max(1);
    let shares: Vec<String> =
        kinds.iter().take(10).map(|(k, n)| format!("{k} {:.1}%", *n as f64 * 100.0 / total as f64)).collect();
    eprintln!("  events by kind so far: {}", shares.join(", "));
}

/// Viewers that started more than 3 s after joining: where they started, and when the
/// segments around that start were created, heard of and complete (s after joining).
fn slow_starts(e: &Engine, rows: &[Row]) {
    let mut by_join: BTreeMap<u64, u32> = BTreeMap::new();
    for r in rows {
        let (Some(j), Some(startup)) = (e.joined_at(r.id), r.stats.startup_s) else { continue };
        if startup <= 3.0 {
            continue;
        }
        *by_join.entry(j.as_secs_f64() as u64 / 5 * 5).or_default() += 1;
        let segment = |seq: u64| r.peer.buffer().get(seq).map_or("-".to_string(), |slot| segment_times(slot, j));
        let start = r.peer.playback().start_seq.unwrap_or(0);
        eprintln!(
            "      {:?} joined {:.2} startup {startup:.2} start {start}: [before: {}] [start: {}] [after: {}]",
            r.id,
            j.as_secs_f64(),
            segment(start.saturating_sub(1)),
            segment(start),
            segment(start + 1)
        );
    }
    eprintln!("    started after more than 3 s, by joining time (5 s bins): {by_join:?}");
}

/// When a segment was created at the source, its header came and it was complete here, in
/// seconds after `joined`.
fn segment_times(slot: &Slot, joined: Time) -> String {
    let rel = |t: Time| t.since(joined).as_secs_f64();
    format!(
        "created {:.2} header {:.2} complete {}",
        slot.header.header.created_ms as f64 / 1000.0 - joined.as_secs_f64(),
        rel(slot.header_at),
        slot.complete_at.map_or("-".to_string(), |c| format!("{:.2}", rel(c)))
    )
}

/// For up to 40 viewers that joined in an 8 s window (`TIMELINE_FROM`, default 0): when the
/// headers of their first segments came and when each segment completed, in seconds after
/// joining.
fn timeline(e: &Engine, rows: &[Row]) {
    let from: f64 = std::env::var("TIMELINE_FROM").ok().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let joined_in_window = |j: Time| (from..from + 8.0).contains(&j.as_secs_f64());
    for r in rows.iter().filter(|r| e.joined_at(r.id).is_some_and(joined_in_window)).take(40) {
        let Some(j) = e.joined_at(r.id) else { continue };
        let st = &r.stats;
        let mut line = format!(
            "      {:?} joined {:.2} start {:?} startup {:?} from source {} kB of {} kB:",
            r.id,
            j.as_secs_f64(),
            r.peer.playback().start_seq,
            st.startup_s,
            st.bytes_from_source / 1000,
            (st.bytes_from_source + st.bytes_from_peers) / 1000
        );
        for (seq, slot) in r.peer.buffer().iter().take(4) {
            line += &format!(" [{seq} {}]", segment_times(slot, j));
        }
        eprintln!("{line}");
    }
}

fn nat_kind(st: &PeerStats) -> String {
    st.nat_report.as_ref().map_or("unknown".into(), |r| r.kind())
}
