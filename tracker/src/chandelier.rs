//! The Chandelier policy: the tracker periodically re-solves every stripe parent of a
//! channel as one assignment problem (see [`crate::optimizer`]) and applies the answer to
//! the channel's [`Trees`], telling only the peers whose parents changed.
//!
//! Between solves a joining peer gets parents at once from the simple policy
//! ([`Trees::fill`]), so it starts playing without waiting for the next round; the next
//! solve then places it well. Each solve starts from the current trees, so a stable swarm
//! costs few moves and keeps its links (the utility also rewards keeping a parent).

use crate::assignment::Trees;
use crate::optimizer::dgs;
use crate::optimizer::instance::{NodeView, Swarm, Weights};
use meshtv_proto::nat::Reachability;
use meshtv_proto::NodeId;
use rand::Rng;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Chandelier {
    pub weights: Weights,
    pub options: dgs::Options,
}

/// What one solve did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Members whose parent changed in at least one stripe.
    pub changed: Vec<NodeId>,
    pub rows: usize,
    pub rows_assigned: usize,
    pub utility: i64,
    pub moves: usize,
}

impl Chandelier {
    /// Re-solves all parents of `trees`. `reach` tells each node's NAT situation.
    pub fn solve(&self, trees: &mut Trees, reach: impl Fn(NodeId) -> Reachability, rng: &mut impl Rng) -> Outcome {
        // Node 0 is the source, then the viewers in id order (deterministic).
        let ids: Vec<NodeId> = std::iter::once(trees.source)
            .chain(trees.members.keys().copied().filter(|&id| id != trees.source))
            .collect();
        let index: BTreeMap<NodeId, u32> = ids.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
        let stripes = trees.stripes;
        let mut swarm = Swarm {
            stripes,
            nodes: Vec::with_capacity(ids.len()),
            parents: Vec::with_capacity(ids.len() * stripes),
            depth: Vec::with_capacity(ids.len() * stripes),
        };
        for &id in &ids {
            let m = &trees.members[&id];
            swarm.nodes.push(NodeView {
                key: id.0,
                slots: m.slots,
                rank_slots: m.slots_shown,
                reach: reach(id),
                // Coordinates are not measured yet: every pair looks equally close.
                coord_ms: (0.0, 0.0),
                banned: m.banned.iter().filter_map(|b| index.get(b).copied()).collect(),
            });
            swarm.parents.extend((0..stripes).map(|s| m.parents[s].and_then(|p| index.get(&p).copied())));
            swarm.depth.extend((0..stripes).map(|s| trees.depth(id, s)));
        }
        let mut built = swarm.build(&self.weights, rng);
        let start = start_from(&built.rows, &built.cols, &swarm);
        let (mut assignment, mut report) = dgs::solve_from(&built.problem, start, &self.options);
        if swarm.repair(&self.weights, &mut built, &assignment.col_of, rng) > 0 {
            let (again, more) = dgs::solve_from(&built.problem, assignment.col_of, &self.options);
            assignment = again;
            report.moves += more.moves;
        }
        // Apply in two phases: first detach every row whose parent changes, then attach
        // the new parents. The new links are a subset of an acyclic assignment (ranks),
        // so no intermediate state has a cycle.
        let mut changed = Vec::new();
        let mut relink = Vec::new();
        let mut rows_assigned = 0;
        for (receiver, stripe, parent) in built.parents(&assignment.col_of) {
            let id = ids[receiver as usize];
            let parent = parent.map(|p| ids[p as usize]);
            rows_assigned += parent.is_some() as usize;
            if trees.members[&id].parents[stripe as usize] != parent {
                trees.link(id, stripe as usize, None);
                relink.push((id, stripe as usize, parent));
                // Rows come grouped by receiver, so a repeat is always the last entry.
                if changed.last() != Some(&id) {
                    changed.push(id);
                }
            }
        }
        for (id, stripe, parent) in relink {
            if parent.is_some() {
                trees.link(id, stripe, parent);
            }
        }
        Outcome {
            changed,
            rows: built.problem.rows(),
            rows_assigned,
            utility: built.problem.evaluate(&assignment).unwrap_or(0),
            moves: report.moves,
        }
    }
}

/// The current parents as a starting assignment (entries that are no longer valid are
/// dropped by the solver).
fn start_from(rows: &[(u32, u8)], cols: &[u32], swarm: &Swarm) -> Vec<Option<u32>> {
    let mut col_of_node = vec![u32::MAX; swarm.nodes.len()];
    for (c, &n) in cols.iter().enumerate() {
        col_of_node[n as usize] = c as u32;
    }
    rows.iter()
        .map(|&(r, s)| swarm.parent(r as usize, s as usize).map(|n| col_of_node[n as usize]).filter(|&c| c != u32::MAX))
        .collect()
}
