//! Stripe trees: who is whose parent in each stripe, with upload slots as the budget.
//!
//! This is the simple policy (capacity-aware random): a receiver takes a parent with a
//! free slot at the lowest depth, ties broken at random, never one of its own descendants.
//! The Chandelier optimizer replaces the choice, not these invariants:
//! - every member's children across all stripes fit its slots;
//! - in each stripe the parent links form a tree rooted at the source (no cycles).

use meshtv_proto::NodeId;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// One member of a channel's swarm as the assignment sees it.
#[derive(Clone, Debug)]
pub struct Member {
    /// Upload slots (one slot carries one stripe to one child).
    pub slots: u32,
    /// Parent per stripe.
    pub parents: Vec<Option<NodeId>>,
    /// Children per stripe.
    pub children: Vec<BTreeSet<NodeId>>,
    /// Peers this member must not be given (it caught them sending bad pieces).
    pub banned: BTreeSet<NodeId>,
}

impl Member {
    pub fn new(slots: u32, stripes: usize) -> Member {
        Member {
            slots,
            parents: vec![None; stripes],
            children: vec![BTreeSet::new(); stripes],
            banned: BTreeSet::new(),
        }
    }

    pub fn used_slots(&self) -> u32 {
        self.children.iter().map(|c| c.len() as u32).sum()
    }
}

/// The swarm of one channel: the source (root of every stripe) and its viewers.
#[derive(Clone, Debug)]
pub struct Trees {
    pub source: NodeId,
    pub stripes: usize,
    pub members: BTreeMap<NodeId, Member>,
}

impl Trees {
    pub fn new(source: NodeId, source_slots: u32, stripes: usize) -> Trees {
        let mut members = BTreeMap::new();
        members.insert(source, Member::new(source_slots, stripes));
        Trees { source, stripes, members }
    }

    /// Depth of `node` in `stripe` (source = 0); `None` if it hangs from no parent.
    pub fn depth(&self, node: NodeId, stripe: usize) -> Option<u32> {
        let mut cur = node;
        // Bounded by the member count: a longer walk would mean a cycle.
        for d in 0..=self.members.len() as u32 {
            if cur == self.source {
                return Some(d);
            }
            cur = self.members.get(&cur)?.parents.get(stripe).copied().flatten()?;
        }
        None
    }

    /// The top of `node`'s chain of parents in `stripe`: the source, or a member still
    /// waiting for a parent. `None` only if the chain is a cycle (an invariant violation).
    pub fn root(&self, node: NodeId, stripe: usize) -> Option<NodeId> {
        let mut cur = node;
        for _ in 0..=self.members.len() {
            match self.members.get(&cur).and_then(|m| m.parents.get(stripe).copied().flatten()) {
                Some(p) => cur = p,
                None => return Some(cur),
            }
        }
        None
    }

    fn is_ancestor(&self, ancestor: NodeId, node: NodeId, stripe: usize) -> bool {
        let mut cur = Some(node);
        for _ in 0..=self.members.len() {
            match cur {
                Some(c) if c == ancestor => return true,
                Some(c) => cur = self.members.get(&c).and_then(|m| m.parents.get(stripe).copied().flatten()),
                None => return false,
            }
        }
        true
    }

    /// Picks and links a parent for `node` in `stripe`; returns it.
    pub fn assign(&mut self, node: NodeId, stripe: usize, rng: &mut impl Rng) -> Option<NodeId> {
        let me = self.members.get(&node)?;
        let mut best: Option<(u32, u32, NodeId)> = None;
        for (&cand, m) in &self.members {
            if cand == node || me.banned.contains(&cand) || m.banned.contains(&node) || m.used_slots() >= m.slots {
                continue;
            }
            let Some(depth) = self.depth(cand, stripe) else { continue };
            if self.is_ancestor(node, cand, stripe) {
                continue;
            }
            let key = (depth, rng.gen::<u32>());
            if best.is_none_or(|(d, r, _)| key < (d, r)) {
                best = Some((key.0, key.1, cand));
            }
        }
        let (_, _, parent) = best?;
        self.link(node, stripe, Some(parent));
        Some(parent)
    }

    /// Sets `node`'s parent in `stripe`, keeping both sides' records in step.
    pub fn link(&mut self, node: NodeId, stripe: usize, parent: Option<NodeId>) {
        let old = self.members.get_mut(&node).and_then(|m| std::mem::replace(&mut m.parents[stripe], parent));
        if let Some(old) = old {
            if let Some(o) = self.members.get_mut(&old) {
                o.children[stripe].remove(&node);
            }
        }
        if let Some(p) = parent {
            if let Some(pm) = self.members.get_mut(&p) {
                pm.children[stripe].insert(node);
            }
        }
    }

    /// Removes `node`; returns the members that lost a parent (to be reassigned).
    pub fn remove(&mut self, node: NodeId) -> BTreeSet<NodeId> {
        let mut orphans = BTreeSet::new();
        let Some(m) = self.members.get(&node).cloned() else { return orphans };
        for s in 0..self.stripes {
            self.link(node, s, None);
            for c in &m.children[s] {
                if let Some(cm) = self.members.get_mut(c) {
                    cm.parents[s] = None;
                }
                orphans.insert(*c);
            }
        }
        self.members.remove(&node);
        orphans
    }

    /// Gives `node` a parent in every stripe where it has none; true if anything changed.
    pub fn fill(&mut self, node: NodeId, rng: &mut impl Rng) -> bool {
        let mut changed = false;
        for s in 0..self.stripes {
            let has = self.members.get(&node).is_some_and(|m| m.parents[s].is_some());
            if !has && self.assign(node, s, rng).is_some() {
                changed = true;
            }
        }
        changed
    }

    /// Checks the invariants (used by tests and debug builds).
    pub fn check(&self) -> Result<(), String> {
        for (&id, m) in &self.members {
            if m.used_slots() > m.slots {
                return Err(format!("{id} uses {} of {} slots", m.used_slots(), m.slots));
            }
            for s in 0..self.stripes {
                if let Some(p) = m.parents[s] {
                    if !self.members.get(&p).is_some_and(|pm| pm.children[s].contains(&id)) {
                        return Err(format!("{id}'s parent {p} in stripe {s} does not list it"));
                    }
                    if self.root(id, s).is_none() {
                        return Err(format!("{id} sits on a cycle in stripe {s}"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn trees_respect_slots_and_stay_acyclic_through_churn() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let src = NodeId(1);
        let mut t = Trees::new(src, 8, 4);
        for i in 2..60 {
            t.members.insert(NodeId(i), Member::new(8, 4));
            t.fill(NodeId(i), &mut rng);
            t.check().unwrap();
        }
        assert!(t.members[&src].used_slots() <= 8);
        let fully = t.members.values().filter(|m| m.parents.iter().all(|p| p.is_some())).count();
        assert_eq!(fully, 58, "every viewer has a parent in every stripe");
        for i in (2..60).step_by(3) {
            let orphans = t.remove(NodeId(i));
            for o in orphans {
                t.fill(o, &mut rng);
            }
            t.check().unwrap();
        }
        for (id, m) in &t.members {
            if *id != src {
                assert!(m.parents.iter().all(|p| p.is_some()), "{id} was not repaired");
            }
        }
    }
}
