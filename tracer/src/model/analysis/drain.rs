//! Drain verdict: the old side is drained when it has had no open connections and no connection
//! attempts for `quiet_for`. Until then, an estimate of when it will be, from the decay seen over
//! the last minute (a least-squares line through the open gauge and through the attempt rate).

use std::collections::VecDeque;

/// How far back the estimate and "attempts in the last minute" look.
pub const WINDOW_MS: u64 = 60_000;

/// Old-side figures of one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    at_ms: u64,
    open: u64,
    attempts: u64,
    len_ms: u64,
}

/// A change of the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainChange {
    /// Quiet since `since_ms` (the last interval seen busy), confirmed at `at_ms`.
    Drained { since_ms: u64, at_ms: u64 },
    /// Busy again after having drained.
    Busy { at_ms: u64 },
}

/// When the old side is expected to go quiet, or why no estimate is possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Estimate {
    /// Expected quiet at this time (ms since start); drained `quiet_for` later.
    At(u64),
    /// Quiet already since this time, not yet for `quiet_for`: drained then, if it stays so.
    QuietSince(u64),
    /// What is open is held by pinned connections of processes that make no fresh connects:
    /// it will not drain by itself (`DrainState::pinned_by` names them).
    Pinned,
    NotPossible(String),
}

#[derive(Clone, Debug)]
pub struct Drain {
    pub quiet_for_ms: u64,
    /// The last interval in which the old side had open connections or attempts (0: start).
    pub last_busy_ms: u64,
    /// Set while drained: quiet since this time.
    pub drained_since: Option<u64>,
    window: VecDeque<Point>,
    last_ms: u64,
}

/// Least-squares slope of (x, y) in y per x; None if x does not vary.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Time (ms) until a value now at `current`, falling at `slope` per ms, reaches zero.
fn time_to_zero(current: f64, slope: Option<f64>, what: &str) -> Result<f64, String> {
    if current <= 0.0 {
        return Ok(0.0);
    }
    match slope {
        Some(s) if s < 0.0 => Ok(current / -s),
        _ => Err(format!("{what} is not falling over the last minute")),
    }
}

impl Drain {
    pub fn new(quiet_for_ms: u64) -> Self {
        Drain {
            quiet_for_ms,
            last_busy_ms: 0,
            drained_since: None,
            window: VecDeque::new(),
            last_ms: 0,
        }
    }

    /// Feed the interval ending at `at_ms`: old-side open gauge and attempts in the interval.
    pub fn feed(&mut self, at_ms: u64, open: u64, attempts: u64) -> Option<DrainChange> {
        let len_ms = at_ms.saturating_sub(self.last_ms);
        self.last_ms = at_ms;
        self.window.push_back(Point {
            at_ms,
            open,
            attempts,
            len_ms,
        });
        while self
            .window
            .front()
            .is_some_and(|p| p.at_ms + WINDOW_MS < at_ms)
        {
            self.window.pop_front();
        }
        if open > 0 || attempts > 0 {
            self.last_busy_ms = at_ms;
            return self
                .drained_since
                .take()
                .map(|_| DrainChange::Busy { at_ms });
        }
        if self.drained_since.is_none() && at_ms - self.last_busy_ms >= self.quiet_for_ms {
            self.drained_since = Some(self.last_busy_ms);
            return Some(DrainChange::Drained {
                since_ms: self.last_busy_ms,
                at_ms,
            });
        }
        None
    }

    /// Attempts on the old side in the intervals that ended within `ms` of the last one.
    pub fn attempts_within(&self, ms: u64) -> u64 {
        let last = self.window.back().map_or(0, |p| p.at_ms);
        self.window
            .iter()
            .filter(|p| p.at_ms + ms >= last)
            .map(|p| p.attempts)
            .sum()
    }

    /// Attempts on the old side over the last minute.
    pub fn attempts_last_minute(&self) -> u64 {
        self.window.iter().map(|p| p.attempts).sum()
    }

    pub fn open(&self) -> u64 {
        self.window.back().map_or(0, |p| p.open)
    }

    /// When the old side will go quiet, judged from the last minute.
    pub fn estimate(&self) -> Estimate {
        if let Some(since) = self.drained_since {
            return Estimate::At(since);
        }
        let Some(last) = self.window.back() else {
            return Estimate::NotPossible("no data yet".into());
        };
        if last.open == 0 && last.attempts == 0 {
            return Estimate::QuietSince(self.last_busy_ms);
        }
        if self.window.len() < 3 {
            return Estimate::NotPossible("too few intervals to see a trend".into());
        }
        let open: Vec<(f64, f64)> = self
            .window
            .iter()
            .map(|p| (p.at_ms as f64, p.open as f64))
            .collect();
        // Attempts as a rate per ms, so intervals of different length compare.
        let rate: Vec<(f64, f64)> = self
            .window
            .iter()
            .filter(|p| p.len_ms > 0)
            .map(|p| (p.at_ms as f64, p.attempts as f64 / p.len_ms as f64))
            .collect();
        let cur_rate = rate.last().map_or(0.0, |p| p.1);
        let open_eta = time_to_zero(last.open as f64, slope(&open), "the open count");
        let rate_eta = time_to_zero(cur_rate, slope(&rate), "the attempt rate");
        match (open_eta, rate_eta) {
            (Ok(a), Ok(b)) => Estimate::At(last.at_ms + a.max(b).round() as u64),
            (Err(e), _) | (_, Err(e)) => Estimate::NotPossible(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_after_quiet_for_dated_from_the_last_busy_interval() {
        let mut d = Drain::new(3000);
        assert_eq!(d.feed(1000, 5, 10), None);
        assert_eq!(d.feed(2000, 2, 0), None);
        assert_eq!(d.feed(3000, 0, 0), None);
        assert_eq!(d.feed(4000, 0, 0), None);
        assert_eq!(
            d.feed(5000, 0, 0),
            Some(DrainChange::Drained {
                since_ms: 2000,
                at_ms: 5000
            })
        );
        assert_eq!(d.feed(6000, 0, 0), None, "reported once");
        assert_eq!(d.estimate(), Estimate::At(2000));
        assert_eq!(d.feed(7000, 0, 1), Some(DrainChange::Busy { at_ms: 7000 }));
        assert_eq!(d.drained_since, None);
    }

    #[test]
    fn a_side_that_never_drains_has_no_verdict_and_says_why_no_estimate() {
        let mut d = Drain::new(1000);
        for i in 1..=30 {
            assert_eq!(d.feed(i * 1000, 40, 5), None);
        }
        assert_eq!(d.open(), 40);
        match d.estimate() {
            Estimate::NotPossible(why) => assert!(why.contains("not falling"), "{why}"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_linear_decay_is_extrapolated() {
        let mut d = Drain::new(1000);
        // Open falls by 10 per second from 100; attempts fall by 1/s from 10.
        for i in 0..5u64 {
            d.feed(1000 * (i + 1), 100 - 10 * i, 10 - i);
        }
        // At 5 s: open 60 (6 s to go), rate 6/s falling 1/s/s (6 s to go).
        assert_eq!(d.estimate(), Estimate::At(11_000));
        assert_eq!(d.attempts_last_minute(), 10 + 9 + 8 + 7 + 6);
    }

    #[test]
    fn quiet_but_not_yet_long_enough_is_not_a_forecast() {
        let mut d = Drain::new(60_000);
        d.feed(10_000, 3, 5);
        d.feed(30_000, 0, 0);
        d.feed(50_000, 0, 0);
        assert_eq!(d.estimate(), Estimate::QuietSince(10_000));
        assert_eq!(d.drained_since, None);
    }

    #[test]
    fn the_window_forgets_old_intervals() {
        let mut d = Drain::new(1000);
        d.feed(1000, 1, 100);
        d.feed(70_000, 1, 1);
        assert_eq!(d.attempts_last_minute(), 1);
        assert!(matches!(d.estimate(), Estimate::NotPossible(_)));
    }
}
