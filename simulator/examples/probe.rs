use meshtv_proto::Time;
use meshtv_simulator::{Engine, Policy, Scenario};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut s = Scenario::load(&args[1]).unwrap();
    s.policy = args.get(2).cloned().unwrap_or("tree".into());
    if let Some(n) = args.get(3) {
        s.peers = n.parse().unwrap();
    }
    let dur: f64 = args.get(4).map_or(s.duration_s, |d| d.parse().unwrap());
    let step: f64 = args.get(5).map_or(5.0, |d| d.parse().unwrap());
    let mut e = Engine::new(&s, Policy::from_name(&s.policy).unwrap());
    let t0 = std::time::Instant::now();
    let mut t = 0.0;
    while t < dur {
        t += step;
        e.run_until(Time::from_secs_f64(t), &mut |_| {});
        let f = e.flows();
        eprintln!("sim {t:>5.0}s wall {:>7.2}s events {:>10} live_flows {:>6} updates {:>9} recomputed {:>12} flows_started {:>9} viewers {}",
            t0.elapsed().as_secs_f64(), e.counters.events, f.live_flows(), f.updates, f.recomputed_flows, e.counters.flows_started, e.viewers().count());
    }
}
