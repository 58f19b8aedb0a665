//! The engine's event queue: a radix heap (Ahuja, Mehlhorn, Orlin, Tarjan 1990) over
//! virtual time in microseconds. It relies on what a discrete-event simulator guarantees:
//! nothing is scheduled before the last event taken out. Entries are binned by the highest
//! bit in which their time differs from that event's, so a push is an append and a pop
//! touches each entry O(log T) times over its life, where a binary heap of 10^5 pending
//! events sifts through 17 levels of cache misses on every pop.
//!
//! Order is exactly a binary heap's on `(time, insertion counter)`: entries due at the
//! same microsecond come out in the order they went in, so runs stay reproducible.

use std::collections::VecDeque;

/// Bins: one per bit of a `u64` time, plus bin 0 for "due at the last time taken".
const BINS: usize = 65;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub at: u64,
    pub seq: u64,
    pub item: T,
}

#[derive(Debug)]
pub struct RadixQueue<T> {
    /// Bin 0: entries due at `last`, by insertion order (front first). Bins 1..: entries
    /// whose time first differs from `last` in bit `i - 1`, in no order.
    bin0: VecDeque<Entry<T>>,
    bins: Vec<Vec<Entry<T>>>,
    /// The time of the last entry taken out: nothing may be pushed before it.
    last: u64,
    len: usize,
    /// The first entry of the lowest non-empty bin, once found (bin 0 empty).
    min: Option<(usize, usize)>,
    /// Scratch for the entries a redistribution finds due at once (kept for its allocation).
    due: Vec<Entry<T>>,
}

impl<T> Default for RadixQueue<T> {
    fn default() -> Self {
        RadixQueue {
            bin0: VecDeque::new(),
            bins: (0..BINS).map(|_| Vec::new()).collect(),
            last: 0,
            len: 0,
            min: None,
            due: Vec::new(),
        }
    }
}

fn bin_of(last: u64, at: u64) -> usize {
    if at == last {
        0
    } else {
        (64 - (at ^ last).leading_zeros()) as usize
    }
}

impl<T> RadixQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds an entry; `at` must not be before the last entry taken out, and `seq` must
    /// grow with every push.
    pub fn push(&mut self, at: u64, seq: u64, item: T) {
        assert!(at >= self.last, "event scheduled in the past: {at} < {}", self.last);
        let e = Entry { at, seq, item };
        let b = bin_of(self.last, at);
        self.len += 1;
        if b == 0 {
            self.bin0.push_back(e);
            return;
        }
        let bin = &mut self.bins[b];
        bin.push(e);
        if let Some((mb, mi)) = self.min {
            let m = &self.bins[mb][mi];
            if b < mb || (b == mb && (at, seq) < (m.at, m.seq)) {
                self.min = Some((b, self.bins[b].len() - 1));
            }
        }
    }

    /// The first entry's time and counter, without taking it.
    pub fn peek(&mut self) -> Option<(u64, u64)> {
        self.front().map(|e| (e.at, e.seq))
    }

    /// The first entry, without taking it (the engine looks ahead to what it will touch).
    pub fn front(&mut self) -> Option<&Entry<T>> {
        if !self.bin0.is_empty() {
            return self.bin0.front();
        }
        let (b, i) = self.find_min()?;
        Some(&self.bins[b][i])
    }

    fn find_min(&mut self) -> Option<(usize, usize)> {
        if self.min.is_none() {
            let b = (1..BINS).find(|&b| !self.bins[b].is_empty())?;
            let bin = &self.bins[b];
            let mut best = 0;
            for (i, e) in bin.iter().enumerate() {
                if (e.at, e.seq) < (bin[best].at, bin[best].seq) {
                    best = i;
                }
            }
            self.min = Some((b, best));
        }
        self.min
    }

    /// Takes the first entry out.
    pub fn pop(&mut self) -> Option<Entry<T>> {
        if self.bin0.is_empty() {
            let (b, i) = self.find_min()?;
            self.min = None;
            // The new `last` is that bin's earliest time; its entries move to lower bins
            // (those due then to bin 0, in insertion order).
            self.last = self.bins[b][i].at;
            let mut moved = std::mem::take(&mut self.bins[b]);
            for e in moved.drain(..) {
                match bin_of(self.last, e.at) {
                    0 => self.due.push(e),
                    nb => self.bins[nb].push(e),
                }
            }
            self.due.sort_unstable_by_key(|e| e.seq);
            self.bin0.extend(self.due.drain(..));
            // Keep the emptied bin's allocation.
            self.bins[b] = moved;
        }
        let e = self.bin0.pop_front()?;
        self.len -= 1;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[test]
    fn the_order_is_a_binary_heaps_on_time_then_insertion() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut q = RadixQueue::default();
        let mut h = BinaryHeap::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for step in 0..200_000u32 {
            if h.is_empty() || rng.gen_bool(0.52) {
                // Mostly near-future events, some far, many ties.
                let at = now
                    + match rng.gen_range(0..4) {
                        0 => 0,
                        1 => rng.gen_range(0..100),
                        2 => rng.gen_range(0..100_000),
                        _ => rng.gen_range(0..1u64 << 40),
                    };
                seq += 1;
                q.push(at, seq, step);
                h.push(Reverse((at, seq, step)));
            } else {
                let Reverse((at, s, item)) = h.pop().unwrap();
                assert_eq!(q.peek(), Some((at, s)));
                let e = q.pop().unwrap();
                assert_eq!((e.at, e.seq, e.item), (at, s, item), "step {step}");
                now = at;
            }
            assert_eq!(q.len(), h.len());
        }
        while let Some(Reverse((at, s, _))) = h.pop() {
            let e = q.pop().unwrap();
            assert_eq!((e.at, e.seq), (at, s));
        }
        assert!(q.pop().is_none() && q.is_empty());
    }
}
