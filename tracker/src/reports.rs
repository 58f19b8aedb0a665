//! Bad-piece reports, logged in aggregate: a peer that reports made-up ids, or a swarm
//! with a corrupting member, must not write a log line per report. The first report of a
//! quiet period opens a window; the first tick [`REPORT_LOG_INTERVAL`] later writes one
//! line with how many came in it. Sans-IO: time is the driver's `now`.

use meshtv_proto::{NodeId, Time};
use std::time::Duration;

/// At most one log line about bad-piece reports per this long.
pub const REPORT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Bad-piece reports counted since the last line.
#[derive(Clone, Debug, Default)]
pub struct ReportLog {
    /// When the window of reports not yet logged opened.
    since: Option<Time>,
    count: u64,
    /// The latest report of the window: (accuser, accused).
    latest: Option<(NodeId, NodeId)>,
    /// Every report since the start.
    pub total: u64,
}

impl ReportLog {
    /// Counts one report.
    pub fn note(&mut self, now: Time, accuser: NodeId, accused: NodeId) {
        self.since.get_or_insert(now);
        self.count += 1;
        self.total += 1;
        self.latest = Some((accuser, accused));
    }

    /// The line to log once a window's interval is over (then a new window opens with
    /// the next report); `None` before, or when nothing was reported.
    pub fn flush(&mut self, now: Time) -> Option<String> {
        let since = self.since?;
        let elapsed = now.since(since);
        if elapsed < REPORT_LOG_INTERVAL {
            return None;
        }
        let (accuser, accused) = self.latest.take()?;
        let line = format!(
            "{} bad-piece report(s) in the last {:.0} s (latest: {accuser} accused {accused}; {} since start)",
            self.count,
            elapsed.as_secs_f64(),
            self.total
        );
        self.since = None;
        self.count = 0;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_reports_make_one_line_per_interval() {
        let mut log = ReportLog::default();
        let t0 = Time::from_millis(1_000);
        assert_eq!(log.flush(t0), None, "nothing reported");
        for i in 0..10_000u64 {
            log.note(t0 + Duration::from_millis(i / 10), NodeId(2), NodeId(100 + i));
        }
        assert_eq!(log.flush(t0 + Duration::from_secs(5)), None, "the interval is not over");
        let line = log.flush(t0 + REPORT_LOG_INTERVAL).expect("one line after the interval");
        assert!(line.starts_with("10000 bad-piece report(s)"), "{line}");
        assert!(line.contains(&format!("{} accused {}", NodeId(2), NodeId(10_099))), "{line}");
        assert_eq!(log.flush(t0 + REPORT_LOG_INTERVAL * 3), None, "nothing new, no line");
        // A later report opens a new window.
        let t1 = t0 + REPORT_LOG_INTERVAL * 4;
        log.note(t1, NodeId(3), NodeId(4));
        assert_eq!(log.flush(t1), None);
        let line = log.flush(t1 + REPORT_LOG_INTERVAL).unwrap();
        assert!(line.starts_with("1 bad-piece report(s)") && line.contains("10001 since start"), "{line}");
        assert_eq!(log.total, 10_001);
    }
}
