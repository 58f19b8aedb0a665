//! Upload capacity as measured, not as declared.
//!
//! A peer starts with one upload slot. Each heartbeat tells the tracker how many bytes the
//! peer uploaded since the last one; while the peer keeps up with the slots it was given
//! and all of them are in use, its slot count doubles (slow start), then grows by one per
//! round; when it falls short of what its children needed, the estimate drops to what it
//! actually delivered. A declared figure only caps the estimate (a user may refuse to
//! give more), it never raises it.

use meshtv_proto::Time;

/// Share of the demanded rate a peer must deliver to count as keeping up.
const KEEPING_UP: f64 = 0.9;
/// Below this share of the demand, the estimate falls to what was delivered.
const FALLING_BEHIND: f64 = 0.7;
/// Slot counts double up to here, then grow by one per round.
const SLOW_START_SLOTS_MAX: u32 = 8;

#[derive(Clone, Debug)]
pub struct Capacity {
    /// Slots the tracker may fill now.
    pub slots: u32,
    /// Never more than this (the declared upload, in slots).
    pub slots_cap: u32,
    last: Option<(Time, u64)>,
    /// Delivered upload rate over the last report interval.
    pub delivered_bps: f64,
}

impl Capacity {
    pub fn new(slots_cap: u32) -> Capacity {
        Capacity { slots: slots_cap.min(1), slots_cap, last: None, delivered_bps: 0.0 }
    }

    /// Takes a heartbeat's cumulative upload counter. `used_slots` is how many slots the
    /// peer was serving over the interval; `stripe_bps` what one slot carries.
    pub fn report(&mut self, now: Time, bytes_uploaded: u64, used_slots: u32, stripe_bps: u64) {
        let Some((then, bytes_then)) = self.last.replace((now, bytes_uploaded)) else { return };
        let secs = now.since(then).as_secs_f64();
        if secs <= 0.0 || bytes_uploaded < bytes_then {
            return;
        }
        self.delivered_bps = (bytes_uploaded - bytes_then) as f64 * 8.0 / secs;
        let demand_bps = used_slots as f64 * stripe_bps as f64;
        if used_slots == 0 {
            return;
        }
        if self.delivered_bps >= KEEPING_UP * demand_bps {
            if used_slots >= self.slots {
                let grown = if self.slots < SLOW_START_SLOTS_MAX { self.slots * 2 } else { self.slots + 1 };
                self.slots = grown.max(1).min(self.slots_cap);
            }
        } else if self.delivered_bps < FALLING_BEHIND * demand_bps {
            self.slots = ((self.delivered_bps / stripe_bps.max(1) as f64) as u32).min(self.slots_cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_while_keeping_up_and_falls_to_what_was_delivered() {
        let stripe = 500_000u64;
        let mut c = Capacity::new(40);
        assert_eq!(c.slots, 1);
        let mut bytes = 0u64;
        let mut t = Time::ZERO;
        c.report(t, bytes, 0, stripe);
        for want in [2, 4, 8, 9, 10] {
            t = t + std::time::Duration::from_secs(1);
            bytes += c.slots as u64 * stripe / 8;
            c.report(t, bytes, c.slots, stripe);
            assert_eq!(c.slots, want);
        }
        // Now it delivers only 3 slots' worth of its 10.
        t = t + std::time::Duration::from_secs(1);
        bytes += 3 * stripe / 8;
        c.report(t, bytes, 10, stripe);
        assert_eq!(c.slots, 3);
        // Not all slots in use: no growth, whatever it delivers.
        t = t + std::time::Duration::from_secs(1);
        bytes += 2 * stripe / 8;
        c.report(t, bytes, 2, stripe);
        assert_eq!(c.slots, 3);
        // The declared cap bounds growth.
        let mut small = Capacity::new(2);
        small.report(Time::ZERO, 0, 0, stripe);
        small.report(Time::from_millis(1000), stripe / 8, 1, stripe);
        small.report(Time::from_millis(2000), stripe / 8 * 3, 2, stripe);
        assert_eq!(small.slots, 2);
    }
}
