//! The optimizer's solvers against each other and against brute force.

use meshtv_tracker::optimizer::instance::{Swarm, Weights};
use meshtv_tracker::optimizer::{dgs, exact, Arc, Problem};
use rand::{Rng, SeedableRng};

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

/// Every assignment of a tiny problem, for the true optimum.
fn brute_force(p: &Problem) -> i64 {
    fn go(p: &Problem, row: usize, used: &mut Vec<u32>, acc: i64, best: &mut i64) {
        if row == p.rows() {
            *best = (*best).max(acc);
            return;
        }
        go(p, row + 1, used, acc, best);
        for a in p.arcs(row) {
            if used[a.col as usize] < p.capacity[a.col as usize] {
                used[a.col as usize] += 1;
                go(p, row + 1, used, acc + a.utility, best);
                used[a.col as usize] -= 1;
            }
        }
    }
    let mut best = 0;
    go(p, 0, &mut vec![0; p.capacity.len()], 0, &mut best);
    best
}

fn random_problem(rng: &mut impl Rng, rows: usize, cols: usize) -> Problem {
    let capacity = (0..cols).map(|_| rng.gen_range(0..3)).collect();
    let mut p = Problem::new(capacity);
    for _ in 0..rows {
        let n = rng.gen_range(0..=cols);
        p.push_row((0..n).map(|_| Arc { col: rng.gen_range(0..cols) as u32, utility: rng.gen_range(1..100) }));
    }
    p.normalize();
    p
}

#[test]
fn exact_matches_brute_force_and_dgs_is_feasible_and_close() {
    let mut r = rng(1);
    let (mut dgs_total, mut exact_total) = (0, 0);
    for case in 0..300 {
        let (rows, cols) = (r.gen_range(1..7), r.gen_range(1..5));
        let p = random_problem(&mut r, rows, cols);
        let truth = brute_force(&p);
        let ex = p.evaluate(&exact::solve(&p)).unwrap_or_else(|e| panic!("case {case}: exact infeasible: {e}"));
        assert_eq!(ex, truth, "case {case}: exact solver is not optimal on {p:?}");
        let (a, _) = dgs::solve(&p, &dgs::Options::default());
        let d = p.evaluate(&a).unwrap_or_else(|e| panic!("case {case}: dgs infeasible: {e}"));
        assert!(d <= truth);
        dgs_total += d;
        exact_total += ex;
    }
    let ratio = dgs_total as f64 / exact_total as f64;
    assert!(ratio > 0.95, "DGS reaches only {ratio:.3} of the optimum on tiny instances");
}

#[test]
fn swarm_solutions_are_loop_free_and_near_optimal() {
    let mut r = rng(7);
    let swarm = Swarm::random(300, 4, 1.5, 0.6, &mut r);
    let built = swarm.build(&Weights::default(), &mut r);
    let (a, _) = dgs::solve(&built.problem, &dgs::Options::default());
    let d = built.problem.evaluate(&a).unwrap();
    let e = built.problem.evaluate(&exact::solve(&built.problem)).unwrap();
    assert!(d as f64 >= 0.98 * e as f64, "dgs {d} vs exact {e}");
    // Parents always rank above their children: no loops in any stripe.
    for (child, stripe, parent) in built.parents(&a.col_of) {
        if let Some(p) = parent {
            assert!(built.rank[stripe as usize][p as usize] < built.rank[stripe as usize][child as usize]);
        }
    }
    let assigned = a.col_of.iter().filter(|c| c.is_some()).count();
    assert!(assigned as f64 > 0.95 * built.problem.rows() as f64, "{assigned} of {} rows", built.problem.rows());
}

#[test]
fn a_solve_is_deterministic_and_resumes_from_a_previous_assignment() {
    let build = || {
        let mut r = rng(11);
        let swarm = Swarm::random(200, 4, 1.5, 0.6, &mut r);
        swarm.build(&Weights::default(), &mut r)
    };
    let (b1, b2) = (build(), build());
    let (a1, _) = dgs::solve(&b1.problem, &dgs::Options::default());
    let (a2, _) = dgs::solve(&b2.problem, &dgs::Options::default());
    assert_eq!(a1, a2);
    // Resuming from a solution does little work and never loses utility.
    let (again, report) = dgs::solve_from(&b1.problem, a1.col_of.clone(), &dgs::Options::default());
    assert!(report.moves <= b1.problem.rows() / 100, "{report:?}");
    assert!(b1.problem.evaluate(&again).unwrap() >= b1.problem.evaluate(&a1).unwrap());
    let (_, report) = dgs::solve_from(&b1.problem, vec![None; b1.problem.rows()], &dgs::Options::default());
    assert!(report.moves > b1.problem.rows() / 2, "an empty start is real work: {report:?}");
}

#[test]
fn chandelier_fills_the_trees_loop_free_and_settles() {
    use meshtv_proto::nat::Reachability;
    use meshtv_proto::NodeId;
    use meshtv_tracker::assignment::{Member, Trees};
    use meshtv_tracker::chandelier::Chandelier;
    let mut r = rng(5);
    let src = NodeId(1);
    let mut trees = Trees::new(src, 8, 4);
    for i in 0..200u64 {
        // A mix of weak and strong uploaders: 2 to 10 slots.
        trees.insert(NodeId(100 + i), Member::new(2 + (i % 9) as u32, 4));
    }
    let c = Chandelier::default();
    let first = c.solve(&mut trees, |_| Reachability::Open, &mut r);
    trees.check().unwrap();
    assert_eq!(first.rows, 800);
    assert_eq!(first.rows_assigned, 800, "{first:?}");
    assert_eq!(first.changed.len(), 200);
    // The first solve guesses depths; as they become known, the trees settle over a few
    // rounds (moving a peer up shortens its whole subtree), and an unchanged swarm then
    // keeps almost every link.
    let mut moved = Vec::new();
    for _ in 0..10 {
        let o = c.solve(&mut trees, |_| Reachability::Open, &mut r);
        trees.check().unwrap();
        assert_eq!(o.rows_assigned, 800);
        moved.push(o.changed.len());
    }
    eprintln!("peers moved per re-solve: {moved:?}");
    assert!(moved[7..].iter().all(|&m| m <= 10), "re-solves of an unchanged swarm keep moving peers: {moved:?}");
}
