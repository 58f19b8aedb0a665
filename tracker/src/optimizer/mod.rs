//! The Chandelier optimizer: which uploader feeds each (viewer, stripe).
//!
//! PeerTV coordinated its swarm centrally: the tracker periodically solves a linear sum
//! assignment problem whose rows are (receiver, stripe) pairs and whose columns are
//! uploaders' slots, each pairing weighted by a utility made of bandwidth, depth, delay
//! and NAT compatibility. It is solved by Deep Greedy Switching ([`dgs`]), a heuristic
//! fast enough for thousands of peers and close to optimal; [`exact`] solves the same
//! instance to optimality (min-cost flow), to measure that gap in tests and benchmarks.
//!
//! The problem is kept linear by ranks: in each stripe every node has a rank (the source
//! first), and an uploader may only feed a receiver ranked below it. Trees therefore
//! never loop, whatever the solver picks; depth enters through the utility.

pub mod dgs;
pub mod exact;
pub mod instance;
pub mod problem;

pub use problem::{Arc, Assignment, Problem};
