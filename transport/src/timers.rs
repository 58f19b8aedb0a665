//! The core's timers: at most one pending firing per [`TimerId`], a later arming replaces
//! the earlier one (the contract of `Outbox::set_timer`), fired earliest first.

use meshtv_proto::{Time, TimerId};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub(crate) struct Timers {
    armed: HashMap<TimerId, Time>,
    /// Ordered by deadline, then id, so equal deadlines fire in a stable order.
    queue: BTreeSet<(Time, TimerId)>,
}

impl Timers {
    pub(crate) fn set(&mut self, at: Time, id: TimerId) {
        if let Some(old) = self.armed.insert(id, at) {
            self.queue.remove(&(old, id));
        }
        self.queue.insert((at, id));
        debug_assert_eq!(self.armed.len(), self.queue.len());
    }

    /// The earliest deadline, if any timer is armed.
    pub(crate) fn next(&self) -> Option<Time> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// Disarms and returns the earliest timer due at `now`. One at a time, because firing
    /// one timer may re-arm another that was also due.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<TimerId> {
        let &(at, id) = self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.pop_first();
        self.armed.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_rearming_replaces() {
        let mut t = Timers::default();
        t.set(Time(30), TimerId(3));
        t.set(Time(10), TimerId(1));
        t.set(Time(5), TimerId(4));
        t.set(Time(20), TimerId(2));
        t.set(Time(40), TimerId(4)); // replaces the firing at 5
        assert_eq!(t.next(), Some(Time(10)));
        assert_eq!(t.pop_due(Time(9)), None);
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(Time(35))).collect();
        assert_eq!(fired, vec![TimerId(1), TimerId(2), TimerId(3)]);
        assert_eq!(t.next(), Some(Time(40)));
        assert_eq!(t.pop_due(Time(40)), Some(TimerId(4)));
        assert_eq!(t.next(), None);
    }
}
