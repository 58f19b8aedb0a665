//! The exact optimum of a [`Problem`], by successive shortest paths (the Hungarian method
//! for a transportation problem): rows enter one at a time, each along a shortest
//! augmenting path in the residual graph under Johnson potentials, which keeps the
//! assignment of the rows so far optimal. Used to measure how far DGS is from optimal;
//! slow (about rows × edges), so meant for instances of a few thousand rows.

use super::problem::{Assignment, Problem};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Solves `p` exactly. Staying unassigned is a column of unlimited capacity and utility 0.
pub fn solve(p: &Problem) -> Assignment {
    let rows = p.rows();
    let cols = p.capacity.len();
    let unassigned = cols; // the extra column
    let max_u = p.all_arcs().iter().map(|a| a.utility).max().unwrap_or(0) + 1;
    // Cost of row → col is max_u − utility ≥ 1; of row → unassigned, max_u.
    let cost = |u: i64| max_u - u;
    let mut col_of: Vec<Option<usize>> = vec![None; rows];
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); cols + 1];
    let cap = |c: usize| if c == unassigned { u32::MAX } else { p.capacity[c] };
    // Nodes: rows 0..rows, columns rows..=rows+cols (the last is "unassigned"), then the
    // sink. Potentials keep every residual edge's reduced cost non-negative.
    let sink = rows + cols + 1;
    let nodes = sink + 1;
    let mut pot = vec![0i64; nodes];
    let node_col = |c: usize| rows + c;
    let arcs_of = |r: usize| p.arcs(r).iter().map(|a| (a.col as usize, cost(a.utility))).chain([(unassigned, max_u)]);

    let mut dist = vec![i64::MAX; nodes];
    let mut pred = vec![usize::MAX; nodes];
    let mut done = vec![false; nodes];
    for r in 0..rows {
        // A new row's potential keeps its arcs' reduced costs non-negative.
        pot[r] = arcs_of(r).map(|(c, k)| pot[node_col(c)] - k).max().unwrap_or(0);
        dist.fill(i64::MAX);
        pred.fill(usize::MAX);
        done.fill(false);
        let mut heap = BinaryHeap::new();
        dist[r] = 0;
        heap.push(Reverse((0i64, r)));
        while let Some(Reverse((d, v))) = heap.pop() {
            if done[v] || d > dist[v] {
                continue;
            }
            done[v] = true;
            if v == sink {
                break;
            }
            if v < rows {
                for (c, k) in arcs_of(v) {
                    if col_of[v] == Some(c) {
                        continue;
                    }
                    let w = node_col(c);
                    let nd = d + k + pot[v] - pot[w];
                    if nd < dist[w] {
                        dist[w] = nd;
                        pred[w] = v;
                        heap.push(Reverse((nd, w)));
                    }
                }
            } else {
                let c = v - rows;
                if (holders[c].len() as u32) < cap(c) {
                    let nd = d + pot[v] - pot[sink];
                    if nd < dist[sink] {
                        dist[sink] = nd;
                        pred[sink] = v;
                        heap.push(Reverse((nd, sink)));
                    }
                }
                for &h in &holders[c] {
                    let k = if c == unassigned { max_u } else { cost(p.utility(h, c as u32).unwrap_or(0)) };
                    // Backward residual edge col → holder has cost −k.
                    let nd = d - k + pot[v] - pot[h];
                    if nd < dist[h] {
                        dist[h] = nd;
                        pred[h] = v;
                        heap.push(Reverse((nd, h)));
                    }
                }
            }
        }
        // The unassigned column always has room, so the sink is always reached.
        let sink_d = dist[sink];
        let mut c = pred[sink] - rows;
        // Walk back: col ← row ← col ← … ← r, moving each row to the column after it.
        loop {
            let row = pred[node_col(c)];
            let prev = col_of[row];
            if let Some(pc) = prev {
                if let Some(i) = holders[pc].iter().position(|&h| h == row) {
                    holders[pc].swap_remove(i);
                }
            }
            holders[c].push(row);
            col_of[row] = Some(c);
            if row == r {
                break;
            }
            c = prev.expect("a row reached through a column holds it");
        }
        for v in 0..nodes {
            pot[v] += dist[v].min(sink_d);
        }
    }
    Assignment { col_of: col_of.into_iter().map(|c| c.filter(|&c| c != unassigned).map(|c| c as u32)).collect() }
}
