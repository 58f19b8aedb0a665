//! The assignment problem in the form both solvers take: sparse candidate arcs per row.

/// A candidate pairing: row ← `col` with this utility (higher is better, > 0).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Arc {
    pub col: u32,
    pub utility: i64,
}

/// Rows (receiver, stripe pairs) choose among their arcs; column `c` can take at most
/// `capacity[c]` rows. A row may stay unassigned (utility 0).
///
/// The arcs of all rows sit in one array, row after row: the tracker builds a problem at
/// every solve, 40,000 rows for 10,000 peers, and with a vector per row allocation took
/// more of a simulated 10,000-viewer crowd's solves than the solver did. Rows are added
/// in order with [`Problem::push_row`] and read with [`Problem::arcs`].
#[derive(Clone, Debug)]
pub struct Problem {
    pub capacity: Vec<u32>,
    /// Every row's arcs, row after row; each row sorted best first once normalized (see
    /// [`Problem::normalize`]).
    arcs: Vec<Arc>,
    /// Row `r`'s arcs are `arcs[offsets[r]..offsets[r + 1]]` (`offsets[0]` is 0).
    offsets: Vec<u32>,
}

impl Default for Problem {
    fn default() -> Self {
        Problem::new(Vec::new())
    }
}

/// The column chosen for each row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub col_of: Vec<Option<u32>>,
}

impl Problem {
    /// A problem with these columns and no rows yet.
    pub fn new(capacity: Vec<u32>) -> Problem {
        Problem::with_capacity(capacity, 0, 0)
    }

    /// As [`Problem::new`], with room reserved for `rows` rows and `arcs` arcs in all, so
    /// that building a large instance does not grow (and copy) its arrays as it goes.
    pub fn with_capacity(capacity: Vec<u32>, rows: usize, arcs: usize) -> Problem {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Problem { capacity, arcs: Vec::with_capacity(arcs), offsets }
    }

    /// Adds the next row, with these arcs (in any order until [`Problem::normalize`]).
    pub fn push_row(&mut self, arcs: impl IntoIterator<Item = Arc>) {
        self.arcs.extend(arcs);
        self.offsets.push(u32::try_from(self.arcs.len()).expect("fewer than 2^32 arcs"));
    }

    /// Appends arcs to existing rows, after the arcs they have (normalize again after):
    /// `extra` holds (row, arc) pairs in row order. The arcs being flat, this copies them
    /// all once, into an array with room for the new ones.
    pub fn append_arcs(&mut self, extra: &[(u32, Arc)]) {
        if extra.is_empty() {
            return;
        }
        let mut arcs = Vec::with_capacity(self.arcs.len() + extra.len());
        let mut extra = extra.iter().peekable();
        let mut start = 0;
        for r in 0..self.rows() {
            let end = self.offsets[r + 1] as usize;
            arcs.extend_from_slice(&self.arcs[start..end]);
            while let Some((_, a)) = extra.next_if(|(row, _)| *row as usize == r) {
                arcs.push(*a);
            }
            self.offsets[r + 1] = u32::try_from(arcs.len()).expect("fewer than 2^32 arcs");
            start = end;
        }
        assert!(extra.next().is_none(), "extra arcs must be in row order, for rows of the problem");
        self.arcs = arcs;
    }

    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The arcs of `row`: best first once normalized.
    pub fn arcs(&self, row: usize) -> &[Arc] {
        &self.arcs[self.offsets[row] as usize..self.offsets[row + 1] as usize]
    }

    /// The arcs of every row, row after row.
    pub fn all_arcs(&self) -> &[Arc] {
        &self.arcs
    }

    /// Sorts each row's arcs best first and keeps only the best arc per column.
    pub fn normalize(&mut self) {
        // Rows only shrink, so the kept arcs move down in place, each row right after the
        // previous one: a row is read from `start`, always at or beyond where it is written.
        let mut start = 0;
        let mut write = 0;
        for r in 0..self.rows() {
            let end = self.offsets[r + 1] as usize;
            let row = &mut self.arcs[start..end];
            row.sort_by(|a, b| b.utility.cmp(&a.utility).then(a.col.cmp(&b.col)));
            // A row has a dozen arcs or so: a scan of those kept beats a set per row (a
            // 10,000-peer instance has 40,000 rows, re-built every solve).
            let mut kept = 0;
            for i in start..end {
                let a = self.arcs[i];
                if a.utility > 0 && !self.arcs[write..write + kept].iter().any(|k| k.col == a.col) {
                    self.arcs[write + kept] = a;
                    kept += 1;
                }
            }
            write += kept;
            self.offsets[r + 1] = write as u32;
            start = end;
        }
        self.arcs.truncate(write);
    }

    pub fn utility(&self, row: usize, col: u32) -> Option<i64> {
        self.arcs(row).iter().find(|a| a.col == col).map(|a| a.utility)
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
        let mut p = Problem::new(vec![1; 4]);
        p.push_row([arc(2, 5), arc(1, 9), arc(2, 7), arc(3, 0), arc(0, -4)]);
        p.push_row([]);
        p.push_row([arc(3, 0)]);
        p.push_row([arc(0, 2), arc(3, 8), arc(0, 2), arc(0, 6)]);
        p.normalize();
        assert_eq!(p.rows(), 4);
        assert_eq!(p.arcs(0), [arc(1, 9), arc(2, 7)]);
        assert_eq!(p.arcs(1), []);
        assert_eq!(p.arcs(2), []);
        assert_eq!(p.arcs(3), [arc(3, 8), arc(0, 6)]);
        assert_eq!(p.all_arcs().len(), 4);
        // Normalizing again changes nothing (a repair adds arcs and normalizes anew).
        let before = p.clone();
        p.normalize();
        assert_eq!(p.all_arcs(), before.all_arcs());
        assert_eq!(p.offsets, before.offsets);
    }

    #[test]
    fn appended_arcs_go_after_their_rows_own() {
        let arc = |col, utility| Arc { col, utility };
        let mut p = Problem::new(vec![1; 4]);
        p.push_row([arc(0, 5)]);
        p.push_row([]);
        p.push_row([arc(1, 3), arc(2, 4)]);
        p.append_arcs(&[(1, arc(3, 1)), (2, arc(3, 6)), (2, arc(0, 2))]);
        assert_eq!(p.rows(), 3);
        assert_eq!(p.arcs(0), [arc(0, 5)]);
        assert_eq!(p.arcs(1), [arc(3, 1)]);
        assert_eq!(p.arcs(2), [arc(1, 3), arc(2, 4), arc(3, 6), arc(0, 2)]);
    }
}
