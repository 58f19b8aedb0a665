//! The simulator's promises: a run is reproducible from its seed; the nodes are the
//! production cores; churn, partitions and the NAT model do what the scenario says.

use meshtv_proto::NodeId;
use meshtv_proto::Time;
use meshtv_simulator::engine::{Core, Engine, SOURCE};
use meshtv_simulator::scenario::{NatShare, Partition, SessionModel};
use meshtv_simulator::{Policy, Scenario};

/// A quick scenario: `peers` open viewers with ample capacity.
fn quick(peers: u64, duration_s: f64) -> Scenario {
    let mut s = Scenario::load("small").unwrap();
    s.peers = peers;
    s.duration_s = duration_s;
    s
}

fn nothing(_: meshtv_simulator::Progress) {}

#[test]
fn two_runs_from_the_same_seed_give_the_same_report() {
    let s = quick(30, 40.0);
    let policies = meshtv_simulator::compared(Policy::Tree);
    let mut a = meshtv_simulator::run(&s, &policies, &mut |_, _| {});
    let mut b = meshtv_simulator::run(&s, &policies, &mut |_, _| {});
    assert!(a.events > 10_000, "the run did something: {} events", a.events);
    a.wall_s = 0.0;
    b.wall_s = 0.0;
    assert_eq!(a.to_json(), b.to_json());
    let mut other = s.clone();
    other.seed += 1;
    let mut c = meshtv_simulator::run(&other, &policies, &mut |_, _| {});
    c.wall_s = 0.0;
    c.seed = a.seed;
    assert_ne!(a.to_json(), c.to_json(), "another seed gives another run");
}

#[test]
fn the_nodes_are_the_production_cores_and_play_the_stream() {
    let mut e = Engine::new(&quick(20, 40.0), Policy::Tree);
    e.finish(&mut nothing);
    assert!(matches!(e.core(NodeId::TRACKER), Some(Core::Tracker(_))));
    let source: &meshtv_peer::Peer = e.source().expect("the source is a production peer");
    assert!(source.is_source());
    let mut viewers = 0;
    for (_, p) in e.viewers() {
        let p: &meshtv_peer::Peer = p;
        let st = p.stats(e.now());
        assert!(st.segments_played >= 5, "a viewer played only {} segments", st.segments_played);
        // What the production buffer holds verifies and reassembles.
        for (seq, _) in p.playable() {
            assert!(p.segment(seq).is_some());
        }
        viewers += 1;
    }
    assert_eq!(viewers, 20);
}

#[test]
fn viewers_leave_when_their_sessions_end_and_the_tracker_hears_of_it() {
    let mut s = quick(30, 60.0);
    s.sessions.model = SessionModel::Fixed;
    s.sessions.mean_s = 20.0;
    let mut e = Engine::new(&s, Policy::Tree);
    e.run_until(Time::from_millis(13_000), &mut nothing);
    assert_eq!(e.viewers().count(), 30, "all arrived by 12 s, none left before 22 s");
    e.run_until(Time::from_millis(45_000), &mut nothing);
    assert_eq!(e.viewers().count(), 0);
    assert_eq!((e.counters.arrivals, e.counters.departures), (30, 30));
    let Some(Core::Tracker(t)) = e.core(NodeId::TRACKER) else { panic!("no tracker") };
    assert_eq!(t.snapshot().channels[0].viewers, 0, "the tracker dropped every viewer that left");

    // With rejoin, the audience comes back as new nodes and stays about the same size.
    s.sessions.rejoin = true;
    s.sessions.off_mean_s = 2.0;
    let mut e = Engine::new(&s, Policy::Tree);
    e.run_until(Time::from_millis(59_000), &mut nothing);
    assert!(e.counters.arrivals > 30 && e.counters.departures > 0);
    assert!(e.viewers().count() >= 20, "{} viewers present", e.viewers().count());
}

#[test]
fn a_partition_cuts_traffic_across_it_until_it_heals() {
    let mut s = quick(40, 80.0);
    s.partitions = vec![Partition { at_s: 20.0, heal_s: 45.0, share: 0.5 }];
    let mut e = Engine::new(&s, Policy::Tree);
    e.run_until(Time::from_millis(19_000), &mut nothing);
    let ids: Vec<NodeId> = e.viewers().map(|(id, _)| id).collect();
    e.run_until(Time::from_millis(21_000), &mut nothing);
    let cut: Vec<NodeId> = ids.iter().copied().filter(|&v| e.cut_between(v, SOURCE)).collect();
    assert!(!cut.is_empty() && cut.len() < ids.len(), "{} of {} viewers cut off", cut.len(), ids.len());
    // After the idle timeout no connection crosses the cut, and nothing arrives across it.
    e.run_until(Time::from_millis(32_000), &mut nothing);
    let received = |e: &Engine| -> Vec<u64> {
        cut.iter()
            .map(|v| {
                let p = e.viewers().find(|(id, _)| id == v).map(|(_, p)| p).unwrap();
                let st = p.stats(e.now());
                st.bytes_from_source + st.bytes_from_peers
            })
            .collect()
    };
    for &v in &cut {
        assert!(e.links_of(v).iter().all(|&w| !e.cut_between(v, w)), "{v} still linked across the cut");
    }
    let before = received(&e);
    // Pieces already queued toward a cut-side viewer from its own side may still arrive;
    // from the source's side nothing does.
    let from_source_before: u64 =
        cut.iter().map(|v| e.viewers().find(|(id, _)| id == v).unwrap().1.stats(e.now()).bytes_from_source).sum();
    e.run_until(Time::from_millis(44_000), &mut nothing);
    let from_source_after: u64 =
        cut.iter().map(|v| e.viewers().find(|(id, _)| id == v).unwrap().1.stats(e.now()).bytes_from_source).sum();
    assert_eq!(from_source_before, from_source_after, "the source reached the cut side");
    assert!(e.counters.lost_to_cut > 0 || received(&e) == before);
    let across_before_heal = e.counters.delivered_across_healed;
    e.run_until(Time::from_millis(79_000), &mut nothing);
    assert!(!e.cut_between(cut[0], SOURCE));
    assert!(e.counters.delivered_across_healed > across_before_heal, "traffic crosses again once healed");
}

#[test]
fn nat_pairs_connect_directly_through_the_relay_or_not_at_all() {
    let run = |kind: &str, relay_bps: u64| {
        let mut s = quick(20, 30.0);
        s.nat = vec![NatShare { share: 1.0, kind: kind.into() }];
        s.network.relay_upload_bps = relay_bps;
        let mut e = Engine::new(&s, Policy::Tree);
        e.finish(&mut nothing);
        meshtv_simulator::metrics::summarize(&e.collector, &e.counters)
    };
    let open = run("open", 100_000_000);
    assert_eq!(open.connectivity_direct, Some(1.0));
    let relayed = run("symmetric", 100_000_000);
    assert_eq!(relayed.connectivity_relayed, Some(1.0));
    let failed = run("symmetric", 0);
    assert_eq!(failed.connectivity_failed, Some(1.0));
    // Failed dials reach the cores as disconnects, and viewers still play from the source.
    assert!(failed.disconnects > 0);
    assert!(failed.played_bytes > 0);
    assert!(failed.savings.unwrap_or(0.0) < relayed.savings.unwrap_or(0.0));
}

#[test]
fn the_baselines_behave_as_their_names_say() {
    let s = quick(20, 40.0);
    let report = meshtv_simulator::run(&s, &meshtv_simulator::compared(Policy::Tree), &mut |_, _| {});
    let origin = &report.policies["origin-only"];
    assert!(origin.savings.is_some_and(|v| v <= 0.0), "origin-only savings {:?}", origin.savings);
    assert_eq!(origin.bytes_from_peers, 0, "no viewer got media from another viewer");
    let mesh = &report.policies["random-mesh"];
    assert!(mesh.bytes_from_peers > 0, "random-mesh pulls from partners");
    assert!(report.policies["tree"].savings > origin.savings);
}

#[test]
fn in_a_whole_run_the_flow_model_keeps_max_min_rates_and_its_bookkeeping() {
    // Churn (departures cancel flows), NATs that need the relay, a partition: every way
    // flows start, refill and stop. At each check the incremental rates equal a
    // from-scratch max-min computation, and the groups' bookkeeping recounts.
    let mut s = quick(80, 60.0);
    s.nat = vec![NatShare { share: 1.0, kind: "open".into() }, NatShare { share: 1.0, kind: "symmetric".into() }];
    s.network.relay_upload_bps = 20_000_000;
    s.sessions.model = SessionModel::Exponential;
    s.sessions.mean_s = 25.0;
    s.sessions.rejoin = true;
    s.sessions.off_mean_s = 3.0;
    s.partitions = vec![Partition { at_s: 30.0, heal_s: 40.0, share: 0.3 }];
    let mut e = Engine::new(&s, Policy::Tree);
    let mut checked = 0;
    for ms in (500..60_000).step_by(1_500) {
        e.run_until(Time::from_millis(ms), &mut nothing);
        let f = e.flows();
        f.check_consistency();
        for (id, want) in f.reference_rates() {
            let got = f.rate_bps(id);
            assert!((got - want).abs() <= 1e-6 * want.max(1.0), "{ms} ms: flow {id} at {got}, max-min {want}");
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} flow rates checked");
    assert!(e.counters.departures > 0 && e.counters.dials_relayed > 0);
}
