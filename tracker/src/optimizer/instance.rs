//! From the tracker's view of a swarm to a [`Problem`]: who may feed whom (ranks, NAT
//! pairs), how good each pairing is (utility), and back from a solution to parents.

use super::problem::{Arc, Problem};
use meshtv_proto::nat::{self, Path, Reachability};
use rand::seq::SliceRandom;
use rand::Rng;

/// One node as the optimizer sees it. Node 0 of a [`Swarm`] is the source.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// A stable key (the node id): ties in the ranking break by it, so ranks, and with
    /// them the trees, do not reshuffle from one solve to the next.
    pub key: u64,
    /// Upload slots from the measured capacity (one slot carries one stripe).
    pub slots: u32,
    /// What it ranks by: the most slots it has shown. Ranks decide who may feed whom, so
    /// they must not reshuffle with every measurement, or each solve would have to move
    /// parents that work.
    pub rank_slots: u32,
    pub reach: Reachability,
    /// Network coordinates (ms): the distance between two nodes estimates their RTT.
    pub coord_ms: (f64, f64),
    /// Nodes this one must not be fed by (caught sending bad pieces).
    pub banned: Vec<u32>,
}

/// The nodes' per-stripe state is kept flat, node after node (entry `node * stripes +
/// stripe`), not in vectors per node: the tracker builds the swarm of a whole channel at
/// every solve.
#[derive(Clone, Debug)]
pub struct Swarm {
    pub stripes: usize,
    /// Index 0 is the source.
    pub nodes: Vec<NodeView>,
    /// Each node's current parent per stripe (node index), to reward keeping what works.
    pub parents: Vec<Option<u32>>,
    /// Each node's depth per stripe in the current trees (source 0); unknown counts as 1.
    pub depth: Vec<Option<u32>>,
}

/// Weights of the utility terms (integers: utilities are integers so solvers are exact).
#[derive(Clone, Debug)]
pub struct Weights {
    pub base: i64,
    /// Per slot of upload headroom (capped at 16 slots).
    pub per_slot: i64,
    /// Per level of the uploader's depth.
    pub per_depth: i64,
    /// Per ms of RTT between the two.
    pub per_rtt_ms: i64,
    /// For a pairing that needs a relay.
    pub relayed: i64,
    /// For keeping the current parent: a move costs the child a catch-up from its new
    /// parent, and in a crowd whose capacities are still being measured the optimizer
    /// would otherwise move thousands of rows per solve. Larger than what the other terms
    /// differ by between two candidates but for a dozen levels of depth, so mostly rows
    /// whose parent left or is no longer valid (loops, bans, the relay's budget) move.
    /// Simulated 10,000-viewer crowd on tight uplinks: 500 gave startup p95 4.93 s and live
    /// delay p95 7.30 s; 3,000 gave 4.64 s and 7.18 s, with half the catch-up pushes;
    /// 10,000 no better.
    pub keep: i64,
    /// Whether new pairings through the relay may be made: false once the relay carries
    /// all the tree edges it has room for (those it carries may stay).
    pub relay_new: bool,
    /// Candidate uploaders sampled per row, besides the source and the current parent.
    pub candidates: usize,
    /// Rows ranked within this many times the source's slot count get the source as a
    /// candidate.
    pub source_candidates_per_slot: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            base: 1000,
            per_slot: 20,
            per_depth: 150,
            per_rtt_ms: 2,
            relayed: 300,
            keep: 3000,
            relay_new: true,
            candidates: 12,
            source_candidates_per_slot: 4,
        }
    }
}

/// The problem built from a swarm, with the maps back to nodes and stripes.
pub struct Built {
    pub problem: Problem,
    /// Row → (receiver node, stripe).
    pub rows: Vec<(u32, u8)>,
    /// Column → uploader node.
    pub cols: Vec<u32>,
    /// Rank of each node in each stripe (`rank[stripe][node]`, source 0).
    pub rank: Vec<Vec<u32>>,
}

impl Swarm {
    pub fn slots(&self, node: usize) -> u32 {
        self.nodes[node].slots
    }

    /// The current parent of `node` in `stripe`.
    pub fn parent(&self, node: usize, stripe: usize) -> Option<u32> {
        self.parents[node * self.stripes + stripe]
    }

    fn depth(&self, node: usize, stripe: usize) -> Option<u32> {
        self.depth[node * self.stripes + stripe]
    }

    fn rtt_ms(&self, a: usize, b: usize) -> f64 {
        let (p, q) = (self.nodes[a].coord_ms, self.nodes[b].coord_ms);
        ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt()
    }

    /// Ranks per stripe: the source first, then by upload capacity in coarse bands (who
    /// can feed many sits high; small changes of a measurement do not reorder), ties broken
    /// by a hash of the key and the stripe, so that interior positions differ by stripe.
    fn ranks(&self) -> Vec<Vec<u32>> {
        let band = |slots: u32| slots.min(16) / 4;
        let mut order: Vec<(u32, u64, u32)> = Vec::with_capacity(self.nodes.len());
        (0..self.stripes)
            .map(|stripe| {
                order.clear();
                order.extend(
                    (1..self.nodes.len())
                        .map(|i| (band(self.nodes[i].rank_slots), mix(self.nodes[i].key, stripe as u64), i as u32)),
                );
                order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut rank = vec![0u32; self.nodes.len()];
                for (k, (_, _, node)) in order.iter().enumerate() {
                    rank[*node as usize] = k as u32 + 1;
                }
                rank
            })
            .collect()
    }

    fn utility(&self, w: &Weights, receiver: usize, stripe: usize, uploader: usize) -> Option<i64> {
        let (r, u) = (&self.nodes[receiver], &self.nodes[uploader]);
        if r.banned.contains(&(uploader as u32)) {
            return None;
        }
        let current = self.parent(receiver, stripe) == Some(uploader as u32);
        let relayed = match nat::traversal(r.reach, u.reach) {
            Path::Direct => false,
            Path::Relay if !w.relay_new && !current => return None,
            Path::Relay => true,
            Path::None => return None,
        };
        let slots = self.slots(uploader).min(16) as i64;
        let depth = if uploader == 0 { 0 } else { self.depth(uploader, stripe).unwrap_or(1) as i64 };
        let mut v =
            w.base + w.per_slot * slots - w.per_depth * depth - w.per_rtt_ms * self.rtt_ms(receiver, uploader) as i64;
        if relayed {
            v -= w.relayed;
        }
        if current {
            v += w.keep;
        }
        Some(v.max(1))
    }

    /// Builds the assignment problem: one row per (viewer, stripe), one column per node
    /// with upload slots; arcs only from higher-ranked uploaders.
    pub fn build(&self, w: &Weights, rng: &mut impl Rng) -> Built {
        let per_node = self.nodes.len() * self.stripes;
        assert!(
            self.parents.len() == per_node && self.depth.len() == per_node,
            "a parent and a depth per node and stripe"
        );
        let rank = self.ranks();
        let cols: Vec<u32> = (0..self.nodes.len() as u32).filter(|&n| self.slots(n as usize) > 0).collect();
        let mut col_index = vec![u32::MAX; self.nodes.len()];
        for (c, &n) in cols.iter().enumerate() {
            col_index[n as usize] = c as u32;
        }
        // Per stripe, uploaders in rank order, to sample "anyone above me" quickly.
        let by_rank: Vec<Vec<u32>> = rank
            .iter()
            .map(|rk| {
                let mut v: Vec<u32> = cols.clone();
                v.sort_by_key(|&n| rk[n as usize]);
                v
            })
            .collect();
        let source_reach = self.slots(0).saturating_mul(w.source_candidates_per_slot);
        let row_count = self.nodes.len().saturating_sub(1) * self.stripes;
        let mut rows = Vec::with_capacity(row_count);
        let capacity = cols.iter().map(|&n| self.slots(n as usize)).collect();
        let mut problem = Problem::with_capacity(capacity, row_count, row_count * (w.candidates + 2));
        // One candidate list, refilled for each row.
        let mut cand: Vec<u32> = Vec::with_capacity(w.candidates + 2);
        for receiver in 1..self.nodes.len() {
            for stripe in 0..self.stripes {
                let my_rank = rank[stripe][receiver];
                let above = by_rank[stripe].partition_point(|&n| rank[stripe][n as usize] < my_rank);
                let pool = &by_rank[stripe][..above];
                cand.clear();
                // The source's few slots go to the top of the ranking (who can feed many);
                // offering them to every row would only make everyone contend for them.
                if my_rank <= source_reach {
                    cand.push(0);
                }
                if let Some(p) = self.parent(receiver, stripe) {
                    if rank[stripe][p as usize] < my_rank && !cand.contains(&p) {
                        cand.push(p);
                    }
                }
                if pool.len() <= w.candidates {
                    cand.extend_from_slice(pool);
                } else {
                    cand.extend(pool.choose_multiple(rng, w.candidates).copied());
                }
                problem.push_row(cand.iter().filter(|&&n| col_index[n as usize] != u32::MAX).filter_map(|&n| {
                    self.utility(w, receiver, stripe, n as usize)
                        .map(|u| Arc { col: col_index[n as usize], utility: u })
                }));
                rows.push((receiver as u32, stripe as u8));
            }
        }
        problem.normalize();
        Built { problem, rows, cols, rank }
    }

    /// Gives each row left unassigned by `col_of` up to `w.candidates` more arcs, to
    /// uploaders ranked above it that still have free slots. Sampled candidates can all
    /// be full while capacity sits idle elsewhere; one repair round finds it. Returns how
    /// many rows got new arcs.
    pub fn repair(&self, w: &Weights, built: &mut Built, col_of: &[Option<u32>], rng: &mut impl Rng) -> usize {
        let mut room: Vec<u32> = built.problem.capacity.clone();
        for c in col_of.iter().flatten() {
            room[*c as usize] -= 1;
        }
        let free: Vec<u32> = (0..room.len() as u32).filter(|&c| room[c as usize] > 0).collect();
        let mut extended = 0;
        // The new arcs, by row, go into the (flat) problem together at the end.
        let mut extra: Vec<(u32, Arc)> = Vec::new();
        let mut above: Vec<u32> = Vec::new();
        for (row, col) in col_of.iter().enumerate() {
            if col.is_some() {
                continue;
            }
            let (receiver, stripe) = built.rows[row];
            let (receiver, stripe) = (receiver as usize, stripe as usize);
            let my_rank = built.rank[stripe][receiver];
            above.clear();
            above.extend(
                free.iter().copied().filter(|&c| built.rank[stripe][built.cols[c as usize] as usize] < my_rank),
            );
            let before = extra.len();
            for &c in above.choose_multiple(rng, w.candidates) {
                let node = built.cols[c as usize] as usize;
                if let Some(u) = self.utility(w, receiver, stripe, node) {
                    extra.push((row as u32, Arc { col: c, utility: u }));
                }
            }
            extended += (extra.len() > before) as usize;
        }
        // With nothing added, the problem stays as built: normalized already.
        if !extra.is_empty() {
            built.problem.append_arcs(&extra);
            built.problem.normalize();
        }
        extended
    }

    /// A random swarm for benchmarks and tests: upload capacity averaging `upload_ratio`
    /// times the bitrate (uniform between 0.2× and 2× that mean), `natted` of the peers
    /// behind NATs (a third of those symmetric), coordinates in a 200 ms square.
    pub fn random(peers: usize, stripes: usize, upload_ratio: f64, natted: f64, rng: &mut impl Rng) -> Swarm {
        let bitrate_bps = 2_000_000u64;
        let stripe_bps = bitrate_bps / stripes as u64;
        let names = ["full-cone", "restricted-cone", "port-restricted-cone", "symmetric"];
        let mut nodes = Vec::with_capacity(peers + 1);
        for i in 0..=peers {
            let upload_bps = if i == 0 {
                2 * bitrate_bps
            } else {
                (bitrate_bps as f64 * upload_ratio * rng.gen_range(0.2..1.8)) as u64
            };
            let reach = if i > 0 && rng.gen_bool(natted) {
                let k = if rng.gen_bool(1.0 / 3.0) { 3 } else { rng.gen_range(0..3) };
                nat::named(names[k]).expect("known NAT name")
            } else {
                Reachability::Open
            };
            nodes.push(NodeView {
                key: i as u64,
                slots: (upload_bps / stripe_bps) as u32,
                rank_slots: (upload_bps / stripe_bps) as u32,
                reach,
                coord_ms: (rng.gen_range(0.0..100.0), rng.gen_range(0.0..100.0)),
                banned: Vec::new(),
            });
        }
        let per_node = nodes.len() * stripes;
        Swarm { stripes, nodes, parents: vec![None; per_node], depth: vec![None; per_node] }
    }
}

/// A 64-bit mix (SplitMix64's finalizer): a stable, well-spread hash of two numbers.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Built {
    /// The parent (node index) of each (receiver, stripe) under `col_of`.
    pub fn parents(&self, col_of: &[Option<u32>]) -> Vec<(u32, u8, Option<u32>)> {
        self.rows.iter().zip(col_of).map(|(&(r, s), c)| (r, s, c.map(|c| self.cols[c as usize]))).collect()
    }
}
