//! The driver's clock: the one place where meshtv reads the time.
//!
//! Time is microseconds since the Unix epoch, so that a segment's creation time at the
//! source compares with the moment a viewer in another process on the same machine plays
//! it (live delay). The wall clock is read once; after that time advances by the monotonic
//! clock, so a core never sees time go backwards when NTP steps the system clock.

use meshtv_proto::Time;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Epoch {
    unix_us: u64,
    at: Instant,
}

fn epoch() -> &'static Epoch {
    static EPOCH: OnceLock<Epoch> = OnceLock::new();
    EPOCH.get_or_init(|| {
        // A clock set before 1970 is a broken machine; time then starts at zero, which
        // only makes live-delay figures meaningless, never the protocol unsafe.
        let unix_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Epoch { unix_us, at: Instant::now() }
    })
}

/// The driver's time: microseconds since the Unix epoch, so that segment creation times
/// compare across processes on one machine. Never goes backwards within a process.
pub fn now() -> Time {
    let e = epoch();
    Time(e.unix_us.saturating_add(e.at.elapsed().as_micros() as u64))
}

/// The monotonic instant at which [`now`] reaches `t`. A time already past maps to the
/// past, so a sleep until it returns at once; a time beyond what the platform's clock can
/// hold (a core's "never", `Time(u64::MAX)`) maps to decades from now.
pub(crate) fn instant_of(t: Time) -> tokio::time::Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let e = epoch();
    let ahead = Duration::from_micros(t.0.saturating_sub(e.unix_us));
    let at = e.at.checked_add(ahead.min(FAR_FUTURE)).unwrap_or_else(|| Instant::now() + FAR_FUTURE);
    tokio::time::Instant::from_std(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_unix_micros_and_monotonic() {
        let a = now();
        let b = now();
        assert!(b >= a);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        // Within a minute of the wall clock: the epoch was read in this test run.
        assert!(a.0.abs_diff(wall) < 60_000_000, "{a:?} vs {wall}");
    }

    #[test]
    fn instants_round_trip_time() {
        let t = now() + Duration::from_millis(250);
        let i = instant_of(t);
        let ahead = i.saturating_duration_since(tokio::time::Instant::now());
        assert!(ahead <= Duration::from_millis(250) && ahead > Duration::from_millis(150), "{ahead:?}");
        assert!(instant_of(Time::ZERO) <= tokio::time::Instant::now());
        assert!(instant_of(Time(u64::MAX)) > tokio::time::Instant::now() + Duration::from_secs(3600));
    }
}
