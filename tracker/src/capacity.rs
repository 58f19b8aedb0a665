//! Upload capacity as measured, not as declared.
//!
//! A peer starts with the slots of two full copies (eight, or fewer if it declares less):
//! in a flash crowd every newcomer's stripes must find parents at once, and a peer that
//! cannot carry them is found out within two judged windows. Each heartbeat tells the
//! tracker how many bytes the peer uploaded since the last one; while the peer keeps up
//! with the slots it was given and all of them are in use, its slot count doubles (slow
//! start, up to 32), then grows by one per round; when it falls short of what its children needed,
//! the estimate drops to what it actually delivered. A declared figure only caps the
//! estimate (a user may refuse to give more), it never raises it.

use meshtv_proto::Time;

/// Share of the demanded rate a peer must deliver to count as keeping up. Not 1: stripes
/// carry whole pieces, so their rates differ a little from the nominal stripe rate.
const KEEPING_UP: f64 = 0.75;
/// Below this share of the demand, the estimate falls to what was delivered.
const FALLING_BEHIND: f64 = 0.5;
/// Shortest interval judged: media arrives in bursts (a segment's pieces at a time), so
/// a heartbeat's one second says little on its own; a whole segment's worth (2 s) does,
/// and in a flash crowd every window a newcomer waits to grow is a window of orphans
/// (simulated, 2,000 viewers at 1.5x the bitrate: 4 s windows left a fifth of the
/// stripes without a parent through the crowd).
const WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
/// Slot counts double up to here, then grow by one per round.
const SLOW_START_SLOTS_MAX: u32 = 32;
/// Slots a newcomer starts with (if it declares that much). Two copies: with one, a
/// crowd of newcomers offers fewer slots than it needs until the fast ones have grown
/// (same simulation, measured before a queue accounting fix in the peer: savings 93.4%
/// with four, 94.5% with eight).
const INITIAL_SLOTS: u32 = 8;

#[derive(Clone, Debug)]
pub struct Capacity {
    /// Slots the tracker may fill now.
    pub slots: u32,
    /// Never more than this (the declared upload, in slots).
    pub slots_cap: u32,
    /// The previous report: when, the upload counter, and the slots in use then.
    last: Option<(Time, u64, u32)>,
    /// Consecutive reports that fell behind: one short interval is not a verdict.
    behind: u32,
    /// Delivered upload rate over the last report interval.
    pub delivered_bps: f64,
    /// Whether reports move the estimate (false: a fixed, trusted figure).
    measured: bool,
}

impl Capacity {
    /// A measured capacity, starting at [`INITIAL_SLOTS`], never above `slots_cap`.
    pub fn new(slots_cap: u32) -> Capacity {
        Capacity {
            slots: slots_cap.min(INITIAL_SLOTS),
            slots_cap,
            last: None,
            behind: 0,
            delivered_bps: 0.0,
            measured: true,
        }
    }

    /// A fixed capacity: the source's (its operator chose how many copies it uploads),
    /// or every peer's under the simple policy.
    pub fn trusted(slots: u32) -> Capacity {
        Capacity { slots, slots_cap: slots, last: None, behind: 0, delivered_bps: 0.0, measured: false }
    }

    /// Takes a heartbeat's cumulative upload counter. `used_slots` is how many slots the
    /// peer was serving over the interval; `stripe_bps` what one slot carries.
    pub fn report(&mut self, now: Time, bytes_uploaded: u64, used_slots: u32, stripe_bps: u64) {
        if !self.measured {
            return;
        }
        let Some((then, bytes_then, used_then)) = self.last else {
            self.last = Some((now, bytes_uploaded, used_slots));
            return;
        };
        if now.since(then) < WINDOW {
            // Slots in use over the window: the fewest seen in it.
            self.last = Some((then, bytes_then, used_then.min(used_slots)));
            return;
        }
        self.last = Some((now, bytes_uploaded, used_slots));
        let secs = now.since(then).as_secs_f64();
        if secs <= 0.0 || bytes_uploaded < bytes_then {
            return;
        }
        self.delivered_bps = (bytes_uploaded - bytes_then) as f64 * 8.0 / secs;
        // Only slots in use over the whole interval count as demand: a child added in
        // the middle of it had no time to be served.
        let used = used_then.min(used_slots);
        if used == 0 {
            return;
        }
        let demand_bps = used as f64 * stripe_bps as f64;
        if self.delivered_bps >= KEEPING_UP * demand_bps {
            self.behind = 0;
            // Kept up with what it had all along, and every slot is taken now: offer more.
            if used_slots >= self.slots {
                let grown = if self.slots < SLOW_START_SLOTS_MAX { self.slots * 2 } else { self.slots + 1 };
                self.slots = grown.max(1).min(self.slots_cap);
            }
        } else if self.delivered_bps < FALLING_BEHIND * demand_bps {
            self.behind += 1;
            if self.behind >= 2 {
                // Never below one slot: a peer must keep a way to show it can do more.
                let shown = (self.delivered_bps / stripe_bps.max(1) as f64) as u32;
                self.slots = shown.max(1).min(self.slots_cap);
            }
        } else {
            self.behind = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Probe {
        c: Capacity,
        t: Time,
        bytes: u64,
    }

    impl Probe {
        /// One judged window (4 s) in which `delivered` slots' worth was uploaded while
        /// `used` slots were in use.
        fn second(&mut self, delivered: u64, used: u32) -> u32 {
            const STRIPE: u64 = 500_000;
            self.t = self.t + Duration::from_secs(4);
            self.bytes += delivered * STRIPE / 8 * 4;
            self.c.report(self.t, self.bytes, used, STRIPE);
            self.c.slots
        }
    }

    #[test]
    fn grows_while_keeping_up_and_falls_to_what_was_delivered() {
        let mut p = Probe { c: Capacity::new(40), t: Time::ZERO, bytes: 0 };
        assert_eq!(p.c.slots, 8, "a newcomer starts with two copies' worth of slots");
        p.second(0, 8);
        // Slow start while every slot is taken and the ones held all window were served:
        // one step per window, doubling up to 32, then one at a time.
        let mut held = 8;
        for want in [16, 32, 33] {
            // Every slot is taken at once; those held since the window began are served.
            let s = p.c.slots;
            assert_eq!(p.second(held, s), want);
            held = s as u64;
        }
        // Every slot taken but the held ones only half served (16 of 32): no growth.
        assert_eq!(p.second(16, 33), 33);
        // Reports inside a window change nothing.
        let t = p.t + Duration::from_secs(1);
        p.c.report(t, p.bytes, 33, 500_000);
        assert_eq!(p.c.slots, 33);
        // It delivers only 3 slots' worth of its 33: once is noise, twice a verdict.
        assert_eq!(p.second(3, 33), 33);
        assert_eq!(p.second(3, 33), 3);
        // Not all slots in use: no growth.
        assert_eq!(p.second(2, 2), 3);
        // Even a peer that delivered nothing keeps one slot to show what it can do.
        p.second(0, 3);
        assert_eq!(p.second(0, 3), 1);
        // The declared cap bounds growth; a trusted capacity never moves.
        let mut small = Probe { c: Capacity::new(2), t: Time::ZERO, bytes: 0 };
        assert_eq!(small.c.slots, 2);
        small.second(0, 2);
        small.second(2, 2);
        assert_eq!(small.second(2, 2), 2);
        let mut fixed = Probe { c: Capacity::trusted(6), t: Time::ZERO, bytes: 0 };
        fixed.second(0, 6);
        assert_eq!(fixed.second(0, 6), 6);
    }
}
