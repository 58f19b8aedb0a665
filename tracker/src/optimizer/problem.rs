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
            // A row has a dozen arcs or so: a scan of those kept beats a set per row (a
            // 10,000-peer instance has 40,000 rows, re-built every solve).
            let mut kept = 0;
            for i in 0..row.len() {
                let a = row[i];
                if a.utility > 0 && !row[..kept].iter().any(|k| k.col == a.col) {
                    row[kept] = a;
                    kept += 1;
                }
            }
            row.truncate(kept);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sorts_best_first_and_keeps_the_best_positive_arc_per_column() {
        let arc = |col, utility| Arc { col, utility };
        let mut p =
            Problem { capacity: vec![1; 4], arcs: vec![vec![arc(2, 5), arc(1, 9), arc(2, 7), arc(3, 0), arc(0, -4)]] };
        p.normalize();
        assert_eq!(p.arcs[0], vec![arc(1, 9), arc(2, 7)]);
    }
}
