//! The share of traffic on the new side: the one number an SRE watches during a move. Only the old
//! and new cohorts count (other traffic is not part of the move); with no traffic on either side
//! there is no share at all, rather than a misleading 0% or NaN.

use super::{cohort::Cohort, snapshot::Snapshot};

/// `new` out of old + new, with the counts behind the percentage. The one definition of the
/// share: the live view, the metrics and the failover analysis all use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub new: u64,
    pub old: u64,
}

impl Share {
    /// None when neither side has any traffic.
    pub fn of(new: u64, old: u64) -> Option<Share> {
        (new > 0 || old > 0).then_some(Share { new, old })
    }

    /// old + new, exact (no overflow).
    pub fn total(&self) -> u128 {
        self.new as u128 + self.old as u128
    }

    /// Between 0.0 and 1.0.
    pub fn ratio(&self) -> f64 {
        self.new as f64 / self.total() as f64
    }

    /// Whole percent, rounded down: 100% only once nothing at all is left on the old side, and
    /// the counts beside it tell a tiny share from none.
    pub fn percent(&self) -> u64 {
        (self.new as u128 * 100 / self.total()) as u64
    }

    /// Per mille, rounded down (the analysis keeps one decimal of a percent).
    pub fn permille(&self) -> u32 {
        (self.new as u128 * 1000 / self.total()) as u32
    }

    /// `new / (old + new) >= level %`, in exact integer math.
    pub fn reaches(&self, level: u32) -> bool {
        self.new as u128 * 100 >= level as u128 * self.total()
    }
}

/// Share of connection attempts made during the interval from `prev` to `cur`.
pub fn attempts(cur: &Snapshot, prev: &Snapshot) -> Option<Share> {
    let d = |c: Cohort| cur.cohort_out(c).delta(prev.cohort_out(c)).attempts;
    Share::of(d(Cohort::New), d(Cohort::Old))
}

/// Share of outbound connections open now.
pub fn open(cur: &Snapshot) -> Option<Share> {
    Share::of(
        cur.cohort_out(Cohort::New).open,
        cur.cohort_out(Cohort::Old).open,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::counters::Out;
    use std::time::SystemTime;

    fn snap(old: (u64, u64), new: (u64, u64), other: (u64, u64)) -> Snapshot {
        let mut s = Snapshot::empty(SystemTime::UNIX_EPOCH);
        for (c, (attempts, open)) in [
            (Cohort::Old, old),
            (Cohort::New, new),
            (Cohort::Other, other),
        ] {
            s.out[c as usize] = Out {
                attempts,
                open,
                ..Default::default()
            };
        }
        s
    }

    #[test]
    fn no_traffic_means_no_share() {
        let s = snap((0, 0), (0, 0), (50, 7));
        assert_eq!(attempts(&s, &s), None);
        assert_eq!(open(&s), None);
        assert_eq!(Share::of(0, 0), None);
    }

    #[test]
    fn attempts_share_uses_the_last_interval_only() {
        let prev = snap((100, 0), (0, 0), (0, 0));
        let cur = snap((103, 0), (5, 0), (40, 0));
        let s = attempts(&cur, &prev).unwrap();
        assert_eq!((s.new, s.total()), (5, 8));
        assert_eq!(s.percent(), 62);
        assert!((s.ratio() - 0.625).abs() < 1e-9);
    }

    #[test]
    fn open_share_counts_old_and_new_only() {
        let s = open(&snap((0, 3), (0, 5), (0, 100))).unwrap();
        assert_eq!((s.new, s.total()), (5, 8));
        let all_new = open(&snap((0, 0), (0, 9), (0, 0))).unwrap();
        assert_eq!(all_new.percent(), 100);
        let all_old = open(&snap((0, 4), (0, 0), (0, 0))).unwrap();
        assert_eq!((all_old.percent(), all_old.new, all_old.total()), (0, 0, 4));
    }

    #[test]
    fn percent_rounds_down_so_100_means_nothing_left_on_old() {
        assert_eq!(Share::of(999, 1).unwrap().percent(), 99);
        assert_eq!(Share::of(1, 999).unwrap().percent(), 0);
        assert_eq!(Share::of(u64::MAX, 0).unwrap().percent(), 100);
        assert_eq!(Share::of(u64::MAX, u64::MAX).unwrap().percent(), 50);
    }

    #[test]
    fn permille_and_levels_are_exact() {
        assert_eq!(Share::of(19, 1).unwrap().permille(), 950);
        assert!(Share::of(19, 1).unwrap().reaches(95));
        assert!(!Share::of(19, 2).unwrap().reaches(95));
    }
}
