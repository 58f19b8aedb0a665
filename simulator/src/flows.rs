//! The flow-level bandwidth model: every piece in flight is a flow through a few
//! resources (its sender's upload, a relay if it needs one, its receiver's download), and
//! the rates are max-min fair, found by progressive filling (Gkogkas, Roverso, Haridi 2011:
//! this tracks packet-level results closely at a tiny fraction of the cost).
//!
//! Rates are recomputed incrementally when a flow starts or ends. Only flows that can
//! change are recomputed: a resource that is not saturated does not couple its flows
//! (none of them is limited by it), so the affected set grows from the changed flow only
//! through saturated resources. Flows outside the set keep their rates, and resources at
//! its border count with their residual capacity; if one of those becomes saturated, the
//! set grows and the filling runs again. The result is the exact max-min allocation (up to
//! float tolerance), which the tests check against a from-scratch computation.

use meshtv_proto::Time;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Index of a resource (a node's upload or download, or a relay).
pub type ResId = u32;
/// Index of a flow; reused after the flow ends.
pub type FlowId = u32;

/// Most resources one flow passes through (upload, relay, download).
pub const FLOW_RESOURCES_MAX: usize = 3;
/// A resource counts as saturated when its use is within this share of its capacity.
const SATURATED_SHARE: f64 = 1e-9;
/// Bound on the rounds of growing the affected set in one update.
const GROW_ROUNDS_MAX: usize = 1_000_000;

#[derive(Debug, Clone)]
struct Resource {
    capacity_bps: f64,
    used_bps: f64,
    flows: Vec<FlowId>,
}

impl Resource {
    fn saturated(&self) -> bool {
        self.used_bps >= self.capacity_bps * (1.0 - SATURATED_SHARE)
    }
}

#[derive(Debug, Clone)]
struct Flow {
    resources: [ResId; FLOW_RESOURCES_MAX],
    resource_count: u8,
    rate_bps: f64,
    remaining_bits: f64,
    /// When `remaining_bits` was last brought up to date.
    updated: Time,
    /// Bumped on every rate change, so that stale completion events are ignored.
    generation: u32,
    live: bool,
}

impl Flow {
    fn resources(&self) -> &[ResId] {
        &self.resources[..self.resource_count as usize]
    }
}

/// A flow whose rate changed: the driver (re)schedules its completion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescheduled {
    pub flow: FlowId,
    pub generation: u32,
    /// `None` when the flow is stalled at rate zero.
    pub finish_at: Option<Time>,
}

/// Scratch space reused by every update, so that updates allocate nothing in the steady
/// state.
#[derive(Debug, Default)]
struct Scratch {
    flow_in: Vec<bool>,
    res_in: Vec<bool>,
    /// Local index of a resource in the filling, `u32::MAX` when not part of it.
    res_local: Vec<u32>,
    set_flows: Vec<FlowId>,
    set_res: Vec<ResId>,
    queue: Vec<ResId>,
    local_res: Vec<ResId>,
    local_rem: Vec<f64>,
    local_count: Vec<u32>,
    local_flows: Vec<Vec<u32>>,
    new_rate: Vec<f64>,
    frozen: Vec<bool>,
    heap: BinaryHeap<Reverse<Level>>,
}

/// A saturation level of a local resource, ordered by level then index (total order, so
/// the filling is the same on every run).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Level(f64, u32);

impl Eq for Level {}
impl PartialOrd for Level {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Level {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

#[derive(Debug, Default)]
pub struct Flows {
    resources: Vec<Resource>,
    flows: Vec<Flow>,
    free: Vec<FlowId>,
    scratch: Scratch,
    /// Flows recomputed over all updates (a cost measure for benchmarks).
    pub recomputed_flows: u64,
}

impl Flows {
    pub fn add_resource(&mut self, capacity_bps: f64) -> ResId {
        assert!(capacity_bps > 0.0 && capacity_bps.is_finite(), "capacity must be positive");
        self.resources.push(Resource { capacity_bps, used_bps: 0.0, flows: Vec::new() });
        self.scratch.res_in.push(false);
        self.scratch.res_local.push(u32::MAX);
        (self.resources.len() - 1) as ResId
    }

    /// Sets a resource's capacity (e.g. for reuse by a new node); it must carry no flow.
    pub fn reset_resource(&mut self, r: ResId, capacity_bps: f64) {
        let res = &mut self.resources[r as usize];
        assert!(res.flows.is_empty(), "resource still carries flows");
        assert!(capacity_bps > 0.0 && capacity_bps.is_finite(), "capacity must be positive");
        res.capacity_bps = capacity_bps;
        res.used_bps = 0.0;
    }

    pub fn rate_bps(&self, f: FlowId) -> f64 {
        self.flows[f as usize].rate_bps
    }

    pub fn is_live(&self, f: FlowId) -> bool {
        self.flows.get(f as usize).is_some_and(|f| f.live)
    }

    pub fn generation(&self, f: FlowId) -> u32 {
        self.flows[f as usize].generation
    }

    /// Flows currently through resource `r`.
    pub fn flows_of(&self, r: ResId) -> &[FlowId] {
        &self.resources[r as usize].flows
    }

    pub fn used_bps(&self, r: ResId) -> f64 {
        self.resources[r as usize].used_bps
    }

    pub fn live_flows(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    /// Starts a flow of `bytes` through `resources`; appends every flow whose rate changed
    /// (the new one included) to `changed`.
    pub fn start(&mut self, now: Time, resources: &[ResId], bytes: u64, changed: &mut Vec<Rescheduled>) -> FlowId {
        assert!(!resources.is_empty() && resources.len() <= FLOW_RESOURCES_MAX, "a flow has 1..=3 resources");
        let mut res = [0; FLOW_RESOURCES_MAX];
        res[..resources.len()].copy_from_slice(resources);
        let flow = Flow {
            resources: res,
            resource_count: resources.len() as u8,
            rate_bps: 0.0,
            remaining_bits: (bytes.max(1) * 8) as f64,
            updated: now,
            generation: 0,
            live: true,
        };
        let id = match self.free.pop() {
            Some(id) => {
                let generation = self.flows[id as usize].generation.wrapping_add(1);
                self.flows[id as usize] = Flow { generation, ..flow };
                id
            }
            None => {
                self.flows.push(flow);
                self.scratch.flow_in.push(false);
                (self.flows.len() - 1) as FlowId
            }
        };
        // Seeds: the new flow, and the saturated resources it joins (their flows may slow).
        let mut seeds = [0; FLOW_RESOURCES_MAX];
        let mut n = 0;
        for &r in resources {
            if self.resources[r as usize].saturated() {
                seeds[n] = r;
                n += 1;
            }
            self.resources[r as usize].flows.push(id);
        }
        self.update(now, &seeds[..n], Some(id), changed);
        id
    }

    /// Ends a flow (finished or cancelled); appends the flows whose rate changed.
    pub fn stop(&mut self, now: Time, id: FlowId, changed: &mut Vec<Rescheduled>) {
        let f = &mut self.flows[id as usize];
        assert!(f.live, "stopping a flow that is not live");
        f.live = false;
        let (rate, resources, count) = (f.rate_bps, f.resources, f.resource_count as usize);
        f.rate_bps = 0.0;
        let mut seeds = [0; FLOW_RESOURCES_MAX];
        let mut n = 0;
        for &r in &resources[..count] {
            let res = &mut self.resources[r as usize];
            // Only a saturated resource held others back; a slack one frees nobody.
            if res.saturated() {
                seeds[n] = r;
                n += 1;
            }
            res.used_bps = (res.used_bps - rate).max(0.0);
            if let Some(pos) = res.flows.iter().position(|&x| x == id) {
                res.flows.swap_remove(pos);
            }
        }
        self.free.push(id);
        self.update(now, &seeds[..n], None, changed);
    }

    /// Recomputes the rates of the flows that the change at `seeds` (and `new_flow`) can
    /// affect.
    fn update(&mut self, now: Time, seeds: &[ResId], new_flow: Option<FlowId>, changed: &mut Vec<Rescheduled>) {
        let mut s = std::mem::take(&mut self.scratch);
        s.set_flows.clear();
        s.set_res.clear();
        s.queue.clear();
        for &r in seeds {
            if !s.res_in[r as usize] {
                s.res_in[r as usize] = true;
                s.set_res.push(r);
                s.queue.push(r);
            }
        }
        if let Some(f) = new_flow {
            self.add_flow_to_set(f, &mut s);
        }
        for _round in 0..GROW_ROUNDS_MAX {
            // Close the set over saturated resources.
            while let Some(r) = s.queue.pop() {
                for i in 0..self.resources[r as usize].flows.len() {
                    let f = self.resources[r as usize].flows[i];
                    if !s.flow_in[f as usize] {
                        self.add_flow_to_set(f, &mut s);
                    }
                }
            }
            self.fill(&mut s);
            // A border resource that the new rates saturate couples flows outside the set.
            let mut grew = false;
            for li in 0..s.local_res.len() {
                let r = s.local_res[li];
                if s.res_in[r as usize] {
                    continue;
                }
                let res = &self.resources[r as usize];
                let outside = res.flows.iter().any(|&f| !s.flow_in[f as usize]);
                if outside && s.local_rem[li] <= res.capacity_bps * SATURATED_SHARE {
                    s.res_in[r as usize] = true;
                    s.set_res.push(r);
                    s.queue.push(r);
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        // Apply: bring each flow's remaining bits up to now at its old rate, then set the
        // new rate; keep each resource's use in step.
        for (k, &f) in s.set_flows.iter().enumerate() {
            let new = s.new_rate[k];
            let flow = &mut self.flows[f as usize];
            let old = flow.rate_bps;
            let is_new = Some(f) == new_flow;
            if !is_new && old == new {
                continue;
            }
            let dt_s = now.0.saturating_sub(flow.updated.0) as f64 / 1e6;
            flow.remaining_bits = (flow.remaining_bits - old * dt_s).max(0.0);
            flow.updated = now;
            flow.rate_bps = new;
            flow.generation = flow.generation.wrapping_add(1);
            for &r in flow.resources() {
                let res = &mut self.resources[r as usize];
                res.used_bps = (res.used_bps + new - old).max(0.0);
            }
            let finish_at = (new > 0.0).then(|| Time(now.0 + (flow.remaining_bits / new * 1e6).ceil() as u64));
            changed.push(Rescheduled { flow: f, generation: flow.generation, finish_at });
        }
        // Resources wholly inside the set: recompute their use exactly (no float drift).
        for &r in &s.set_res {
            let res = &mut self.resources[r as usize];
            res.used_bps = res.flows.iter().map(|&f| self.flows[f as usize].rate_bps).sum();
        }
        self.recomputed_flows += s.set_flows.len() as u64;
        for &f in &s.set_flows {
            s.flow_in[f as usize] = false;
        }
        for &r in &s.set_res {
            s.res_in[r as usize] = false;
        }
        self.scratch = s;
    }

    fn add_flow_to_set(&self, f: FlowId, s: &mut Scratch) {
        s.flow_in[f as usize] = true;
        s.set_flows.push(f);
        for &r in self.flows[f as usize].resources() {
            if !s.res_in[r as usize] && self.resources[r as usize].saturated() {
                s.res_in[r as usize] = true;
                s.set_res.push(r);
                s.queue.push(r);
            }
        }
    }

    /// Progressive filling over the set's flows: raise every unfrozen flow's rate together
    /// until a resource runs out, freeze the flows through it, repeat. Resources outside
    /// the set count with what the flows outside leave of them.
    fn fill(&self, s: &mut Scratch) {
        for (li, &r) in s.local_res.iter().enumerate() {
            s.res_local[r as usize] = u32::MAX;
            s.local_flows[li].clear();
        }
        s.local_res.clear();
        s.local_rem.clear();
        s.local_count.clear();
        s.new_rate.clear();
        s.frozen.clear();
        for (k, &f) in s.set_flows.iter().enumerate() {
            s.new_rate.push(0.0);
            s.frozen.push(false);
            let flow = &self.flows[f as usize];
            for &r in flow.resources() {
                let mut li = s.res_local[r as usize];
                if li == u32::MAX {
                    li = s.local_res.len() as u32;
                    s.res_local[r as usize] = li;
                    s.local_res.push(r);
                    let res = &self.resources[r as usize];
                    let rem = if s.res_in[r as usize] {
                        res.capacity_bps
                    } else {
                        // Capacity less what flows outside the set use.
                        let inside: f64 = res
                            .flows
                            .iter()
                            .filter(|&&g| s.flow_in[g as usize])
                            .map(|&g| self.flows[g as usize].rate_bps)
                            .sum();
                        (res.capacity_bps - (res.used_bps - inside)).max(0.0)
                    };
                    s.local_rem.push(rem);
                    s.local_count.push(0);
                    if s.local_flows.len() < s.local_res.len() {
                        s.local_flows.push(Vec::new());
                    }
                }
                s.local_count[li as usize] += 1;
                s.local_flows[li as usize].push(k as u32);
            }
        }
        // Every unfrozen flow runs at the common level; resource `li` runs out when the
        // level reaches its remaining capacity over its unfrozen flows. A heap of those
        // levels (stale entries skipped) makes a filling O((flows + resources) log), which
        // matters when thousands of flows share the origin's uplink.
        s.heap.clear();
        for li in 0..s.local_res.len() {
            if s.local_count[li] > 0 {
                s.heap.push(Reverse(Level(s.local_rem[li] / s.local_count[li] as f64, li as u32)));
            }
        }
        let mut level = 0.0f64;
        while let Some(Reverse(Level(at, li))) = s.heap.pop() {
            let li = li as usize;
            let n = s.local_count[li];
            if n == 0 || at != s.local_rem[li] / n as f64 {
                continue;
            }
            level = level.max(at).max(0.0);
            for j in 0..s.local_flows[li].len() {
                let k = s.local_flows[li][j] as usize;
                if s.frozen[k] {
                    continue;
                }
                s.frozen[k] = true;
                s.new_rate[k] = level;
                for &r in self.flows[s.set_flows[k] as usize].resources() {
                    let lj = s.res_local[r as usize] as usize;
                    s.local_rem[lj] -= level;
                    s.local_count[lj] -= 1;
                    if lj != li && s.local_count[lj] > 0 {
                        s.heap.push(Reverse(Level(s.local_rem[lj] / s.local_count[lj] as f64, lj as u32)));
                    }
                }
            }
        }
    }

    /// Gives a live flow `bytes` more to send at its current rate (the next piece queued on
    /// the same connection); no other flow changes. Returns its new completion.
    pub fn refill(&mut self, now: Time, f: FlowId, bytes: u64) -> Rescheduled {
        let flow = &mut self.flows[f as usize];
        assert!(flow.live, "refilling a flow that is not live");
        flow.remaining_bits = (bytes.max(1) * 8) as f64;
        flow.updated = now;
        flow.generation = flow.generation.wrapping_add(1);
        let rate = flow.rate_bps;
        let finish_at = (rate > 0.0).then(|| Time(now.0 + (flow.remaining_bits / rate * 1e6).ceil() as u64));
        Rescheduled { flow: f, generation: flow.generation, finish_at }
    }

    /// Bits still to send of a live flow, as of `now`.
    pub fn remaining_bits(&self, now: Time, f: FlowId) -> f64 {
        let flow = &self.flows[f as usize];
        let dt_s = now.0.saturating_sub(flow.updated.0) as f64 / 1e6;
        (flow.remaining_bits - flow.rate_bps * dt_s).max(0.0)
    }

    /// The max-min rates of all live flows, computed from scratch (for tests).
    pub fn reference_rates(&self) -> Vec<(FlowId, f64)> {
        let live: Vec<FlowId> = (0..self.flows.len() as FlowId).filter(|&f| self.flows[f as usize].live).collect();
        let mut rem: Vec<f64> = self.resources.iter().map(|r| r.capacity_bps).collect();
        let mut count = vec![0u32; self.resources.len()];
        for &f in &live {
            for &r in self.flows[f as usize].resources() {
                count[r as usize] += 1;
            }
        }
        let mut rate = vec![None; self.flows.len()];
        let mut level = 0.0;
        let mut unfrozen = live.len();
        while unfrozen > 0 {
            let delta = (0..rem.len())
                .filter(|&r| count[r] > 0)
                .map(|r| rem[r] / count[r] as f64)
                .fold(f64::INFINITY, f64::min)
                .max(0.0);
            level += delta;
            for r in 0..rem.len() {
                rem[r] -= delta * count[r] as f64;
            }
            let full: Vec<usize> = (0..rem.len())
                .filter(|&r| count[r] > 0 && rem[r] <= self.resources[r].capacity_bps * SATURATED_SHARE)
                .collect();
            for r in full {
                for &f in &self.resources[r].flows {
                    if rate[f as usize].is_none() {
                        rate[f as usize] = Some(level);
                        unfrozen -= 1;
                        for &r2 in self.flows[f as usize].resources() {
                            count[r2 as usize] -= 1;
                        }
                    }
                }
            }
        }
        live.into_iter().map(|f| (f, rate[f as usize].unwrap_or(0.0))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const MBPS: f64 = 1e6;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    /// Up and down resources of `n` nodes: node i has up `2i`, down `2i + 1`.
    fn nodes(f: &mut Flows, caps: &[(f64, f64)]) {
        for &(up, down) in caps {
            f.add_resource(up * MBPS);
            f.add_resource(down * MBPS);
        }
    }
    fn up(i: u32) -> ResId {
        2 * i
    }
    fn down(i: u32) -> ResId {
        2 * i + 1
    }

    #[test]
    fn a_shared_bottleneck_is_split_equally() {
        // Two senders with 10 Mbps each into one receiver with 10 Mbps down.
        let mut f = Flows::default();
        nodes(&mut f, &[(10.0, 100.0), (10.0, 100.0), (100.0, 10.0)]);
        let mut ch = Vec::new();
        let a = f.start(Time(0), &[up(0), down(2)], 1_000_000, &mut ch);
        assert!(close(f.rate_bps(a), 10.0 * MBPS));
        let b = f.start(Time(0), &[up(1), down(2)], 1_000_000, &mut ch);
        assert!(close(f.rate_bps(a), 5.0 * MBPS) && close(f.rate_bps(b), 5.0 * MBPS));
    }

    #[test]
    fn a_node_with_several_flows_gives_leftover_to_the_unconstrained_ones() {
        // Sender with 12 Mbps up to receivers with 2, 100 and 100 Mbps down: 2, 5, 5.
        let mut f = Flows::default();
        nodes(&mut f, &[(12.0, 100.0), (100.0, 2.0), (100.0, 100.0), (100.0, 100.0)]);
        let mut ch = Vec::new();
        let to_slow = f.start(Time(0), &[up(0), down(1)], 1_000_000, &mut ch);
        let c = f.start(Time(0), &[up(0), down(2)], 1_000_000, &mut ch);
        let d = f.start(Time(0), &[up(0), down(3)], 1_000_000, &mut ch);
        assert!(close(f.rate_bps(to_slow), 2.0 * MBPS));
        assert!(close(f.rate_bps(c), 5.0 * MBPS) && close(f.rate_bps(d), 5.0 * MBPS));

        // A flow ends: its capacity is redistributed to the others.
        ch.clear();
        f.stop(Time(10), to_slow, &mut ch);
        assert!(close(f.rate_bps(c), 6.0 * MBPS) && close(f.rate_bps(d), 6.0 * MBPS));
        assert_eq!(ch.len(), 2, "both remaining flows were rescheduled");
        ch.clear();
        f.stop(Time(20), c, &mut ch);
        assert!(close(f.rate_bps(d), 12.0 * MBPS));
    }

    #[test]
    fn bottlenecks_chain_across_nodes() {
        // f1: A→C, f2: A→D, f3: B→D. A, B up 10; C down 3; D down 12.
        // C limits f1 to 3; D splits 12 between f2 and f3; A has room for 3 + 6.
        let mut f = Flows::default();
        nodes(&mut f, &[(10.0, 100.0), (10.0, 100.0), (100.0, 3.0), (100.0, 12.0)]);
        let mut ch = Vec::new();
        let f1 = f.start(Time(0), &[up(0), down(2)], 1_000_000, &mut ch);
        let f2 = f.start(Time(0), &[up(0), down(3)], 1_000_000, &mut ch);
        let f3 = f.start(Time(0), &[up(1), down(3)], 1_000_000, &mut ch);
        assert!(close(f.rate_bps(f1), 3.0 * MBPS));
        assert!(close(f.rate_bps(f2), 6.0 * MBPS));
        assert!(close(f.rate_bps(f3), 6.0 * MBPS));
    }

    #[test]
    fn completion_time_follows_the_rate() {
        let mut f = Flows::default();
        nodes(&mut f, &[(1.0, 100.0), (100.0, 100.0)]);
        let mut ch = Vec::new();
        f.start(Time(0), &[up(0), down(1)], 125_000, &mut ch);
        assert_eq!(ch.last().unwrap().finish_at, Some(Time(1_000_000)), "1 Mbit at 1 Mbps takes 1 s");
    }

    #[test]
    fn incremental_rates_equal_a_full_recomputation() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut f = Flows::default();
        let n = 30u32;
        let caps: Vec<(f64, f64)> =
            (0..n).map(|_| (rng.gen_range(1..20) as f64, rng.gen_range(2..40) as f64)).collect();
        nodes(&mut f, &caps);
        let relay = f.add_resource(15.0 * MBPS);
        let mut live: Vec<FlowId> = Vec::new();
        let mut ch = Vec::new();
        for step in 0..3000u64 {
            if live.len() < 5 || (live.len() < 150 && rng.gen_bool(0.55)) {
                let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
                let id = if rng.gen_bool(0.1) {
                    f.start(Time(step), &[up(a), relay, down(b)], 1000, &mut ch)
                } else {
                    f.start(Time(step), &[up(a), down(b)], 1000, &mut ch)
                };
                live.push(id);
            } else {
                let i = rng.gen_range(0..live.len());
                f.stop(Time(step), live.swap_remove(i), &mut ch);
            }
            for (id, want) in f.reference_rates() {
                let got = f.rate_bps(id);
                assert!(close(got, want), "step {step}: flow {id} has {got}, max-min says {want}");
            }
        }
    }
}
