//! Many hosts on one wall clock: the snapshots of every host's recording summed into fixed time
//! steps, so the fleet's share on the new side can be told over time even though each host
//! started at its own moment and samples on its own ticks. Times are Unix milliseconds.

use super::analysis::gap::{Metric, Tracker, share_permille};

/// One snapshot of one host: the attempts of its interval and what was open at its end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPoint {
    pub at_ms: u64,
    pub old_attempts: u64,
    pub new_attempts: u64,
    pub old_open: u64,
    pub new_open: u64,
}

/// One step of the fleet: `(end_ms - step, end_ms]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub end_ms: u64,
    /// Attempts of every snapshot taken in the step, all hosts.
    pub old_attempts: u64,
    pub new_attempts: u64,
    /// Open at the step's end: each recording host's last snapshot at or before it.
    pub old_open: u64,
    pub new_open: u64,
    /// Hosts recording during the step (first snapshot at or before its end, last after its
    /// start).
    pub hosts: u32,
}

impl Bucket {
    pub fn share_attempts(&self) -> Option<u32> {
        share_permille(self.old_attempts, self.new_attempts)
    }

    pub fn share_open(&self) -> Option<u32> {
        share_permille(self.old_open, self.new_open)
    }
}

/// Sum the hosts' points (each host's sorted by time) into steps of `step_ms` from `t0_ms`, up
/// to the step holding the last point of any host.
pub fn buckets(hosts: &[Vec<HostPoint>], t0_ms: u64, step_ms: u64) -> Vec<Bucket> {
    let step = step_ms.max(1);
    let Some(last) = hosts.iter().filter_map(|h| h.last()).map(|p| p.at_ms).max() else {
        return vec![];
    };
    // The step holding `at`: the first whose end is at or after it.
    let index = |at: u64| (at.saturating_sub(t0_ms).div_ceil(step)).saturating_sub(1) as usize;
    let mut out: Vec<Bucket> = (0..=index(last))
        .map(|k| Bucket {
            end_ms: t0_ms + (k as u64 + 1) * step,
            ..Default::default()
        })
        .collect();
    for points in hosts {
        for p in points {
            let b = &mut out[index(p.at_ms)];
            b.old_attempts += p.old_attempts;
            b.new_attempts += p.new_attempts;
        }
        let (Some(first), Some(end)) = (points.first(), points.last()) else {
            continue;
        };
        let mut i = 0;
        for b in out.iter_mut() {
            if first.at_ms > b.end_ms || end.at_ms <= b.end_ms - step {
                continue;
            }
            while i + 1 < points.len() && points[i + 1].at_ms <= b.end_ms {
                i += 1;
            }
            b.old_open += points[i].old_open;
            b.new_open += points[i].new_open;
            b.hosts += 1;
        }
    }
    out
}

/// When the fleet's share of `metric` reached `level` % and held it (the gap analysis' rule:
/// `HOLD` steps in a row), as Unix ms; None if it never did or lost it again.
pub fn reached(buckets: &[Bucket], t0_ms: u64, metric: Metric, level: u32) -> Option<u64> {
    let mut t = Tracker::new(metric, level);
    for b in buckets {
        let (old, new) = match metric {
            Metric::Attempts => (b.old_attempts, b.new_attempts),
            Metric::Open => (b.old_open, b.new_open),
        };
        t.feed(b.end_ms - t0_ms, old, new);
    }
    t.holding().map(|c| t0_ms + c.reached_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at_ms: u64, oa: u64, na: u64, oo: u64, no: u64) -> HostPoint {
        HostPoint {
            at_ms,
            old_attempts: oa,
            new_attempts: na,
            old_open: oo,
            new_open: no,
        }
    }

    #[test]
    fn points_fall_into_the_step_that_ends_at_or_after_them() {
        let a = vec![
            p(1_000, 1, 0, 5, 0),
            p(2_000, 2, 0, 6, 0),
            p(3_000, 0, 4, 1, 3),
        ];
        let b = vec![p(2_500, 0, 10, 0, 7), p(3_500, 0, 20, 0, 8)];
        let bs = buckets(&[a, b], 0, 2_000);
        assert_eq!(bs.len(), 2);
        assert_eq!(
            bs[0],
            Bucket {
                end_ms: 2_000,
                old_attempts: 3,
                new_attempts: 0,
                old_open: 6,
                new_open: 0,
                hosts: 1
            }
        );
        // Host b records from 2.5 s: it counts in the second step only.
        assert_eq!(
            bs[1],
            Bucket {
                end_ms: 4_000,
                old_attempts: 0,
                new_attempts: 34,
                old_open: 1,
                new_open: 11,
                hosts: 2
            }
        );
        assert_eq!(bs[1].share_attempts(), Some(1000));
        assert_eq!(bs[0].share_open(), Some(0));
        assert!(buckets(&[], 0, 1_000).is_empty());
    }

    #[test]
    fn a_host_that_stopped_recording_no_longer_counts_as_open() {
        let a = vec![p(500, 0, 0, 9, 0)];
        let b = vec![
            p(500, 0, 0, 0, 1),
            p(1_500, 0, 0, 0, 1),
            p(2_500, 0, 0, 0, 1),
        ];
        let bs = buckets(&[a, b], 0, 1_000);
        assert_eq!(bs.iter().map(|b| b.old_open).collect::<Vec<_>>(), [9, 0, 0]);
        assert_eq!(bs.iter().map(|b| b.hosts).collect::<Vec<_>>(), [2, 1, 1]);
    }

    #[test]
    fn the_fleet_reaches_a_level_after_hold_steps() {
        let pts: Vec<HostPoint> = (1..=8)
            .map(|i| {
                if i <= 3 {
                    p(i * 1000, 10, 0, 0, 0)
                } else {
                    p(i * 1000, 0, 10, 0, 0)
                }
            })
            .collect();
        let bs = buckets(&[pts], 0, 1_000);
        // Steps 4, 5, 6 are all new: reached at the start of step 4 (end of step 3).
        assert_eq!(reached(&bs, 0, Metric::Attempts, 95), Some(3_000));
        assert_eq!(reached(&bs, 0, Metric::Open, 95), None);
    }
}
