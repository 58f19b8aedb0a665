//! The command line both profiling examples take: `SCENARIO [POLICY] [PEERS] [DURATION_S]`,
//! each overriding the scenario's own value (as `meshtv simulate`'s flags do).

use meshtv_simulator::{Policy, Scenario};

/// The allocator `meshtv` itself runs with, so that these examples time what it does.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The scenario named by `args[1]` (default `small`) with `args[2..=4]` applied, and its
/// policy. Panics with the argument's name on bad input: these are developer tools.
///
/// Sets up the process's memory as `meshtv simulate` does ([`keep_freed_memory`]).
///
/// [`keep_freed_memory`]: meshtv_simulator::keep_freed_memory
pub fn scenario_from_args(args: &[String]) -> (Scenario, Policy) {
    meshtv_simulator::keep_freed_memory();
    let mut s = Scenario::load(args.get(1).map_or("small", String::as_str)).expect("scenario");
    if let Some(p) = args.get(2) {
        s.policy = p.clone();
    }
    if let Some(n) = args.get(3) {
        s.peers = n.parse().expect("peers");
    }
    if let Some(d) = args.get(4) {
        s.duration_s = d.parse().expect("duration");
    }
    let policy = Policy::from_name(&s.policy).expect("policy");
    (s, policy)
}
