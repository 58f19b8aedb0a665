//! The assignment problem in the form both solvers take: sparse candidate arcs per row.

/// A candidate pairing: row ← `col` with this utility (higher is better, > 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Arc {
    pub col: u32,
    pub utility: i64,
}

/// Rows (receiver, stripe pairs) choose among their arcs; column `c` can take at most
/// `capacity[c]` rows. A row may stay unassigned (utility 0).
#[derive(Clone, Debug, Default)]
pub struct Problem {
    pub capacity: Vec<u32>,
    /// Each row's arcs, sorted by utility, best first (see [`Problem::normalize`]).
    pub arcs: Vec<Vec<Arc>>,
}

/// The column chosen for each row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub col_of: Vec<Option<u32>>,
}

impl Problem {
    pub fn rows(&self) -> usize {
        self.arcs.len()
    }

    /// Sorts each row's arcs best first and keeps only the best arc per column.
    pub fn normalize(&mut self) {
        for row in &mut self.arcs {
            row.sort_by(|a, b| b.utility.cmp(&a.utility).then(a.col.cmp(&b.col)));
            let mut seen = std::collections::BTreeSet::new();
            row.retain(|a| a.utility > 0 && seen.insert(a.col));
        }
    }

    pub fn utility(&self, row: usize, col: u32) -> Option<i64> {
        self.arcs[row].iter().find(|a| a.col == col).map(|a| a.utility)
    }

    /// Total utility of `a`, or an error naming the first broken constraint.
    pub fn evaluate(&self, a: &Assignment) -> Result<i64, String> {
        if a.col_of.len() != self.rows() {
            return Err(format!("{} rows assigned, problem has {}", a.col_of.len(), self.rows()));
        }
        let mut used = vec![0u32; self.capacity.len()];
        let mut total = 0;
        for (row, col) in a.col_of.iter().enumerate() {
            let Some(col) = col else { continue };
            let u = self.utility(row, *col).ok_or_else(|| format!("row {row} has no arc to column {col}"))?;
            used[*col as usize] += 1;
            total += u;
        }
        for (c, (&u, &cap)) in used.iter().zip(&self.capacity).enumerate() {
            if u > cap {
                return Err(format!("column {c} holds {u} rows, capacity {cap}"));
            }
        }
        Ok(total)
    }
}
