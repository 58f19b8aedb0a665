//! Stripe trees: who is whose parent in each stripe, with upload slots as the budget.
//!
//! This is the simple policy (capacity-aware random): a receiver takes a parent with a
//! free slot at the lowest depth, ties broken at random, never one of its own descendants.
//! The Chandelier optimizer replaces the choice, not these invariants:
//! - every member's children across all stripes fit its slots;
//! - in each stripe the parent links form a tree rooted at the source (no cycles).

use meshtv_proto::{NodeId, Time};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Random picks tried before a parent search scans a whole depth level.
const PICK_TRIES_MAX: usize = 8;

/// Peers one member may have banned at once: far more than the parents and partners it
/// ever has (a few per stripe), so an honest member never loses a ban it needs, while a
/// member reporting made-up ids costs the tracker at most this many entries.
pub const BANS_PER_MEMBER_MAX: usize = 64;
/// How long a ban lasts. A peer that sent bad pieces is kept away from its accuser for
/// the rest of a typical session; a ban that outlives its purpose only narrows choice.
pub const BAN_TTL: Duration = Duration::from_secs(600);

/// Peers a member must not be given (it caught them sending bad pieces), each with the
/// time of its latest report. Bounded: at most [`BANS_PER_MEMBER_MAX`] (a new ban pushes
/// out the oldest), and each lasts [`BAN_TTL`] (the tracker's tick calls [`Bans::expire`]).
/// Shown to operators as the list of banned ids.
#[derive(Clone, Debug, Default)]
pub struct Bans(BTreeMap<NodeId, Time>);

impl Bans {
    pub fn contains(&self, id: &NodeId) -> bool {
        self.0.contains_key(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeId> {
        self.0.keys()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bans `peer` from `now` (a repeated report renews it); when full, the oldest ban
    /// goes. Returns whether `peer` was not banned before.
    pub fn insert(&mut self, now: Time, peer: NodeId) -> bool {
        let new = self.0.insert(peer, now).is_none();
        if self.0.len() > BANS_PER_MEMBER_MAX {
            let oldest =
                self.0.iter().filter(|(id, _)| **id != peer).min_by_key(|(id, t)| (**t, **id)).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.0.remove(&oldest);
            }
        }
        new
    }

    /// Lifts the bans older than [`BAN_TTL`].
    pub fn expire(&mut self, now: Time) {
        self.0.retain(|_, at| now.since(*at) < BAN_TTL);
    }
}

impl serde::Serialize for Bans {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.keys())
    }
}

/// A set of node ids with O(1) insert, remove and uniform random pick. Its order is the
/// order of insertions and removals, so it is the same on every run; the map is only
/// looked up, never iterated.
#[derive(Clone, Debug, Default)]
pub struct IdSet {
    ids: Vec<NodeId>,
    pos: HashMap<NodeId, usize>,
}

impl IdSet {
    pub fn insert(&mut self, id: NodeId) -> bool {
        if self.pos.contains_key(&id) {
            return false;
        }
        self.pos.insert(id, self.ids.len());
        self.ids.push(id);
        true
    }

    pub fn remove(&mut self, id: NodeId) -> bool {
        let Some(i) = self.pos.remove(&id) else { return false };
        self.ids.swap_remove(i);
        if let Some(&moved) = self.ids.get(i) {
            self.pos.insert(moved, i);
        }
        true
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.pos.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn as_slice(&self) -> &[NodeId] {
        &self.ids
    }

    /// Up to `k` distinct members for which `ok` holds, uniformly at random.
    pub fn sample(&self, k: usize, rng: &mut impl Rng, ok: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        // Random picks while the set is much larger than the sample; a scan otherwise.
        if self.ids.len() > 4 * k.max(1) {
            for _ in 0..k.saturating_mul(PICK_TRIES_MAX) {
                if out.len() == k {
                    return out;
                }
                let id = self.ids[rng.gen_range(0..self.ids.len())];
                if ok(id) && !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        let mut rest: Vec<NodeId> = self.ids.iter().copied().filter(|id| ok(*id) && !out.contains(id)).collect();
        while out.len() < k && !rest.is_empty() {
            out.push(rest.swap_remove(rng.gen_range(0..rest.len())));
        }
        out
    }
}

/// One member of a channel's swarm as the assignment sees it.
#[derive(Clone, Debug)]
pub struct Member {
    /// Upload slots (one slot carries one stripe to one child).
    pub slots: u32,
    /// The most slots it has been given so far: a steadier figure than `slots`, which
    /// follows every measurement, for where it ranks among uploaders.
    pub slots_shown: u32,
    /// Parent per stripe.
    pub parents: Vec<Option<NodeId>>,
    /// Children per stripe.
    pub children: Vec<BTreeSet<NodeId>>,
    /// Peers this member must not be given (it caught them sending bad pieces).
    pub banned: Bans,
}

impl Member {
    pub fn new(slots: u32, stripes: usize) -> Member {
        Member {
            slots,
            slots_shown: slots,
            parents: vec![None; stripes],
            children: vec![BTreeSet::new(); stripes],
            banned: Bans::default(),
        }
    }

    pub fn used_slots(&self) -> u32 {
        self.children.iter().map(|c| c.len() as u32).sum()
    }
}

/// The swarm of one channel: the source (root of every stripe) and its viewers.
///
/// Besides the members, it keeps an index so that a parent search costs about the depth
/// of the tree rather than the size of the swarm (at 10^5 viewers a scan per join would
/// dominate the tracker): per stripe, the depth of every member hanging from the source,
/// and the members with a free slot grouped by depth. Members join through [`Trees::insert`]
/// and change links only through [`Trees::link`], [`Trees::remove`] and [`Trees::assign`],
/// which keep the index in step.
#[derive(Clone, Debug)]
pub struct Trees {
    pub source: NodeId,
    pub stripes: usize,
    pub members: BTreeMap<NodeId, Member>,
    /// Every member, for drawing mesh partners at random.
    pub roster: IdSet,
    /// Per stripe: depth of each member attached to the source.
    depths: Vec<HashMap<NodeId, u32>>,
    /// Per stripe: attached members with a free slot, by depth (no empty levels).
    open: Vec<BTreeMap<u32, IdSet>>,
}

impl Trees {
    pub fn new(source: NodeId, source_slots: u32, stripes: usize) -> Trees {
        let mut t = Trees {
            source,
            stripes,
            members: BTreeMap::new(),
            roster: IdSet::default(),
            depths: vec![HashMap::new(); stripes],
            open: vec![BTreeMap::new(); stripes],
        };
        t.insert(source, Member::new(source_slots, stripes));
        for s in 0..stripes {
            t.set_depth(source, s, Some(0));
        }
        t
    }

    /// Adds a member that hangs from no parent yet (replacing any earlier one of that id).
    pub fn insert(&mut self, id: NodeId, member: Member) {
        if self.members.contains_key(&id) {
            self.remove(id);
        }
        self.members.insert(id, member);
        self.roster.insert(id);
    }

    fn has_free_slot(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.used_slots() < m.slots)
    }

    /// Puts `id` where it belongs in `open[stripe]` given its depth and free slots.
    fn refresh_open(&mut self, id: NodeId, stripe: usize) {
        let Some(&d) = self.depths[stripe].get(&id) else { return };
        let free = self.has_free_slot(id);
        let level = self.open[stripe].entry(d).or_default();
        if free {
            level.insert(id);
        } else {
            level.remove(id);
            if level.is_empty() {
                self.open[stripe].remove(&d);
            }
        }
    }

    fn refresh_open_all(&mut self, id: NodeId) {
        for s in 0..self.stripes {
            self.refresh_open(id, s);
        }
    }

    /// Records `id`'s depth in `stripe` (`None`: detached), moving it in the open index.
    fn set_depth(&mut self, id: NodeId, stripe: usize, depth: Option<u32>) {
        if let Some(old) = self.depths[stripe].remove(&id) {
            if let Some(level) = self.open[stripe].get_mut(&old) {
                level.remove(id);
                if level.is_empty() {
                    self.open[stripe].remove(&old);
                }
            }
        }
        if let Some(d) = depth {
            self.depths[stripe].insert(id, d);
            self.refresh_open(id, stripe);
        }
    }

    /// Changes a member's slot count (its measured capacity moved). Children beyond the
    /// new count stay until the next solve moves them: dropping them here would cut
    /// streams that may still flow.
    pub fn set_slots(&mut self, id: NodeId, slots: u32) {
        let Some(m) = self.members.get_mut(&id) else { return };
        m.slots_shown = m.slots_shown.max(slots);
        if m.slots != slots {
            m.slots = slots;
            self.refresh_open_all(id);
        }
    }

    /// Recomputes the depths of `id` and everything below it in `stripe`, from its parent.
    fn redepth_subtree(&mut self, id: NodeId, stripe: usize) {
        let parent = self.members.get(&id).and_then(|m| m.parents[stripe]);
        let base = match parent {
            None if id == self.source => Some(0),
            None => None,
            Some(p) => self.depths[stripe].get(&p).map(|d| d + 1),
        };
        let mut todo = vec![(id, base)];
        // Bounded by the member count: the trees are acyclic (see `check`).
        for _ in 0..=self.members.len() {
            let Some((x, d)) = todo.pop() else { break };
            self.set_depth(x, stripe, d);
            if let Some(m) = self.members.get(&x) {
                todo.extend(m.children[stripe].iter().map(|c| (*c, d.map(|d| d + 1))));
            }
        }
    }

    /// Depth of `node` in `stripe` (source = 0); `None` if its chain of parents does not
    /// reach the source. Read from the index: each Chandelier solve asks it for every
    /// member and stripe, and walking up the chain took a map lookup per level.
    pub fn depth(&self, node: NodeId, stripe: usize) -> Option<u32> {
        self.depths[stripe].get(&node).copied()
    }

    /// The depth by walking up the chain of parents, to check the index against.
    fn walked_depth(&self, node: NodeId, stripe: usize) -> Option<u32> {
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

    /// Picks and links a parent for `node` in `stripe`: a member with a free slot at the
    /// lowest depth, uniformly at random among those, never a descendant; returns it.
    /// Members `direct` accepts (those `node` reaches without the relay) come first at any
    /// depth: the relay's capacity is shared by every pair that has no other way. Others
    /// are taken only with `relay_ok` (the relay has room for another tree edge).
    pub fn assign(
        &mut self,
        node: NodeId,
        stripe: usize,
        rng: &mut impl Rng,
        direct: &dyn Fn(NodeId) -> bool,
        relay_ok: bool,
    ) -> Option<NodeId> {
        let me = self.members.get(&node)?;
        let eligible = |cand: NodeId| {
            cand != node
                && !me.banned.contains(&cand)
                && self.members.get(&cand).is_some_and(|m| !m.banned.contains(&node) && m.used_slots() < m.slots)
                && !self.is_ancestor(node, cand, stripe)
        };
        let mut parent = None;
        let passes: &[bool] = if relay_ok { &[false, true] } else { &[false] };
        'passes: for &relayed in passes {
            for level in self.open[stripe].values() {
                if let Some(&p) = level.sample(1, rng, |c| (relayed || direct(c)) && eligible(c)).first() {
                    parent = Some(p);
                    break 'passes;
                }
            }
        }
        let parent = parent?;
        self.link(node, stripe, Some(parent));
        Some(parent)
    }

    /// Sets `node`'s parent in `stripe`, keeping both sides' records and the index in step.
    pub fn link(&mut self, node: NodeId, stripe: usize, parent: Option<NodeId>) {
        if !self.members.contains_key(&node) {
            return;
        }
        let old = self.members.get_mut(&node).and_then(|m| std::mem::replace(&mut m.parents[stripe], parent));
        if let Some(old) = old {
            if let Some(o) = self.members.get_mut(&old) {
                o.children[stripe].remove(&node);
            }
            self.refresh_open_all(old);
        }
        if let Some(p) = parent {
            if let Some(pm) = self.members.get_mut(&p) {
                pm.children[stripe].insert(node);
            }
            self.refresh_open_all(p);
        }
        self.redepth_subtree(node, stripe);
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
                self.redepth_subtree(*c, s);
            }
            self.set_depth(node, s, None);
        }
        self.members.remove(&node);
        self.roster.remove(node);
        orphans
    }

    /// Gives `node` a parent in every stripe where it has none, preferring those `direct`
    /// accepts (see [`Trees::assign`]); one that `direct` does not accept is taken only
    /// while `relay_room` (tree edges the relay may still carry) is above zero, and uses
    /// one of it. True if anything changed.
    pub fn fill(
        &mut self,
        node: NodeId,
        rng: &mut impl Rng,
        direct: &dyn Fn(NodeId) -> bool,
        relay_room: &mut usize,
    ) -> bool {
        let mut changed = false;
        for s in 0..self.stripes {
            let has = self.members.get(&node).is_some_and(|m| m.parents[s].is_some());
            if has {
                continue;
            }
            if let Some(p) = self.assign(node, s, rng, direct, *relay_room > 0) {
                changed = true;
                if !direct(p) {
                    *relay_room = relay_room.saturating_sub(1);
                }
            }
        }
        changed
    }

    /// Checks the invariants (used by tests and debug builds).
    pub fn check(&self) -> Result<(), String> {
        for s in 0..self.stripes {
            for &id in self.members.keys() {
                let (walked, indexed) = (self.walked_depth(id, s), self.depth(id, s));
                if walked != indexed {
                    return Err(format!("{id} in stripe {s}: depth {walked:?}, index says {indexed:?}"));
                }
                let open = indexed.is_some_and(|d| self.open[s].get(&d).is_some_and(|l| l.contains(id)));
                if open != (indexed.is_some() && self.has_free_slot(id)) {
                    return Err(format!("{id} in stripe {s}: open index out of step"));
                }
            }
        }
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
    fn parents_reachable_without_the_relay_come_first_at_any_depth() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut no_limit = usize::MAX;
        let src = NodeId(1);
        // The source feeds one child per stripe: 2 sits at depth 1, 3 below it at depth 2.
        let mut t = Trees::new(src, 1, 1);
        t.insert(NodeId(2), Member::new(1, 1));
        t.fill(NodeId(2), &mut rng, &|_| true, &mut no_limit);
        t.insert(NodeId(3), Member::new(1, 1));
        t.fill(NodeId(3), &mut rng, &|_| true, &mut no_limit);
        assert_eq!(t.members[&NodeId(3)].parents[0], Some(NodeId(2)));
        // 2 and 4 both have a free slot; 2 is shallower, but 4 is reachable directly.
        t.insert(NodeId(4), Member::new(1, 1));
        t.link(NodeId(4), 0, Some(NodeId(3)));
        t.set_slots(NodeId(2), 2);
        t.insert(NodeId(5), Member::new(0, 1));
        t.fill(NodeId(5), &mut rng, &|p| p == NodeId(4) || p == src, &mut no_limit);
        assert_eq!(t.members[&NodeId(5)].parents[0], Some(NodeId(4)), "the direct parent, though deeper");
        // With no direct candidate left and the relay full, none; with room, the relayed
        // one is better than none.
        t.insert(NodeId(6), Member::new(0, 1));
        assert!(!t.fill(NodeId(6), &mut rng, &|_| false, &mut 0));
        assert_eq!(t.members[&NodeId(6)].parents[0], None);
        let mut room = 1;
        t.fill(NodeId(6), &mut rng, &|_| false, &mut room);
        assert_eq!(t.members[&NodeId(6)].parents[0], Some(NodeId(2)));
        assert_eq!(room, 0, "the relayed edge used the room");
        t.check().unwrap();
    }

    #[test]
    fn trees_respect_slots_and_stay_acyclic_through_churn() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut no_limit = usize::MAX;
        let src = NodeId(1);
        let mut t = Trees::new(src, 8, 4);
        for i in 2..60 {
            t.insert(NodeId(i), Member::new(8, 4));
            t.fill(NodeId(i), &mut rng, &|_| true, &mut no_limit);
            t.check().unwrap();
        }
        assert!(t.members[&src].used_slots() <= 8);
        let fully = t.members.values().filter(|m| m.parents.iter().all(|p| p.is_some())).count();
        assert_eq!(fully, 58, "every viewer has a parent in every stripe");
        for i in (2..60).step_by(3) {
            let orphans = t.remove(NodeId(i));
            for o in orphans {
                t.fill(o, &mut rng, &|_| true, &mut no_limit);
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
