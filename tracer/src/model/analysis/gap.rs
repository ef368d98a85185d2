//! Declaration gap: when the new side's share first reaches a level and holds it. A level counts
//! as reached after `HOLD` intervals in a row at or above it, and as lost after `HOLD` in a row
//! below it, so one noisy interval neither declares nor cancels a move. Intervals with nothing to
//! share (no attempts, no open connections) neither count nor break a streak.

use crate::model::share::Share;

/// Consecutive intervals needed to reach or lose a level.
pub const HOLD: u32 = 3;

/// What a share is taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// New-side share of connection attempts in each interval.
    Attempts,
    /// New-side share of open connections at each snapshot (moves later: pools, keep-alive).
    Open,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Attempts => "attempts",
            Metric::Open => "open",
        }
    }
}

/// New-side share in per mille, or None when both sides are zero.
pub fn share_permille(old: u64, new: u64) -> Option<u32> {
    Share::of(new, old).map(|s| s.permille())
}

/// `new / (old + new) >= level %`, in exact integer math.
pub fn at_or_above(old: u64, new: u64, level: u32) -> Option<bool> {
    Share::of(new, old).map(|s| s.reaches(level))
}

/// One time the level was reached (and maybe lost again). Times in ms since start. A crossing
/// happened during the first interval of its streak, so it is dated at that interval's start
/// (the snapshot before): at most one interval early, never late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossing {
    /// Start of the first interval of the streak that reached the level.
    pub reached_ms: u64,
    /// The interval that completed the streak (when it became known).
    pub confirmed_ms: u64,
    /// Start of the first interval of the streak that lost it.
    pub lost_ms: Option<u64>,
}

/// A change a tracker reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossed {
    Reached(Crossing),
    Lost(Crossing),
}

/// Follows one metric at one level.
#[derive(Clone, Debug)]
pub struct Tracker {
    pub metric: Metric,
    pub level: u32,
    pub crossings: Vec<Crossing>,
    /// Consecutive intervals on the other side of the level than the current state.
    streak: u32,
    streak_start: u64,
    /// End of the previous interval: the start of the next.
    prev_ms: u64,
}

impl Tracker {
    pub fn new(metric: Metric, level: u32) -> Self {
        Tracker {
            metric,
            level,
            crossings: vec![],
            streak: 0,
            streak_start: 0,
            prev_ms: 0,
        }
    }

    /// The level is held now (reached and not lost since).
    pub fn holding(&self) -> Option<&Crossing> {
        self.crossings.last().filter(|c| c.lost_ms.is_none())
    }

    /// Feed one interval ending at `at_ms` with the old and new counts of this metric.
    pub fn feed(&mut self, at_ms: u64, old: u64, new: u64) -> Option<Crossed> {
        let from_ms = std::mem::replace(&mut self.prev_ms, at_ms);
        let above = at_or_above(old, new, self.level)?;
        let holding = self.holding().is_some();
        if above == holding {
            self.streak = 0;
            return None;
        }
        if self.streak == 0 {
            self.streak_start = from_ms;
        }
        self.streak += 1;
        if self.streak < HOLD {
            return None;
        }
        self.streak = 0;
        if above {
            let c = Crossing {
                reached_ms: self.streak_start,
                confirmed_ms: at_ms,
                lost_ms: None,
            };
            self.crossings.push(c);
            Some(Crossed::Reached(c))
        } else {
            let c = self
                .crossings
                .last_mut()
                .expect("holding implies a crossing");
            c.lost_ms = Some(self.streak_start);
            Some(Crossed::Lost(*c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_exact_and_undefined_when_empty() {
        assert_eq!(share_permille(0, 0), None);
        assert_eq!(share_permille(1, 19), Some(950));
        assert_eq!(at_or_above(1, 19, 95), Some(true));
        assert_eq!(at_or_above(2, 19, 95), Some(false));
        assert_eq!(at_or_above(0, 0, 95), None);
        assert_eq!(at_or_above(u64::MAX, u64::MAX, 50), Some(true));
    }

    #[test]
    fn reached_after_three_intervals_dated_from_the_start_of_the_first() {
        let mut t = Tracker::new(Metric::Attempts, 95);
        assert_eq!(t.feed(1000, 50, 50), None);
        assert_eq!(t.feed(2000, 1, 99), None);
        assert_eq!(
            t.feed(3000, 0, 0),
            None,
            "empty interval neither counts nor breaks"
        );
        assert_eq!(t.feed(4000, 0, 10), None);
        let c = t.feed(5000, 0, 10);
        assert_eq!(
            c,
            Some(Crossed::Reached(Crossing {
                reached_ms: 1000,
                confirmed_ms: 5000,
                lost_ms: None
            }))
        );
        assert!(t.holding().is_some());
    }

    #[test]
    fn a_short_dip_is_not_a_loss_but_three_intervals_are() {
        let mut t = Tracker::new(Metric::Open, 95);
        for ms in [1, 2, 3] {
            t.feed(ms, 0, 100);
        }
        assert!(t.holding().is_some());
        assert_eq!(t.feed(4, 50, 50), None);
        assert_eq!(t.feed(5, 0, 100), None, "dip of one interval");
        t.feed(6, 50, 50);
        t.feed(7, 50, 50);
        let lost = t.feed(8, 50, 50);
        assert!(
            matches!(lost, Some(Crossed::Lost(c)) if c.lost_ms == Some(5) && c.reached_ms == 0)
        );
        assert!(t.holding().is_none());
        for ms in [9, 10, 11] {
            t.feed(ms, 0, 100);
        }
        assert_eq!(t.crossings.len(), 2);
        assert_eq!(t.holding().unwrap().reached_ms, 8);
    }

    #[test]
    fn a_broken_streak_starts_over() {
        let mut t = Tracker::new(Metric::Attempts, 99);
        t.feed(1, 0, 100);
        t.feed(2, 0, 100);
        t.feed(3, 5, 95);
        t.feed(4, 0, 100);
        t.feed(5, 0, 100);
        assert!(t.holding().is_none());
        assert!(matches!(t.feed(6, 0, 100), Some(Crossed::Reached(c)) if c.reached_ms == 3));
    }
}
