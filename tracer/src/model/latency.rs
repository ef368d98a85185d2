//! Connect latency: log2 histograms kept by the kernel (bucket `i` counts durations of
//! `[2^i, 2^(i+1))` ns), and the percentiles derived from them. A log2 histogram knows a value
//! only to within a factor of two, so a percentile is reported as the upper bound of its bucket:
//! "p90 <= 1.07 s" is what it can honestly say.

use tracer_common::{LAT_BUCKETS, LatHist};

/// One histogram, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist(pub [u64; LAT_BUCKETS]);

impl Default for Hist {
    fn default() -> Self {
        Hist([0; LAT_BUCKETS])
    }
}

/// Percentiles of one histogram, in microseconds (`None` when it is empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
}

/// Connect latency of one cohort: connect to ESTABLISHED, and connect to failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    pub established: Hist,
    pub failed: Hist,
}

/// Upper bound of bucket `i` in microseconds, rounded up: `2^(i+1)` ns.
pub fn bucket_upper_us(i: usize) -> u64 {
    let ns = 1u128 << (i + 1);
    ns.div_ceil(1000).min(u64::MAX as u128) as u64
}

/// Upper bound of bucket `i` in seconds, exact: `2^(i+1)` ns.
pub fn bucket_upper_s(i: usize) -> f64 {
    (1u128 << (i + 1)) as f64 / 1e9
}

/// Microseconds for people: `263 us`, `1.5 ms`, `1.07 s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} us"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

impl Hist {
    /// Durations below the upper bound of bucket `i` (a Prometheus `le` bucket): exact, as the
    /// bucket edges are powers of two.
    pub fn count_upto(&self, i: usize) -> u64 {
        self.0[..=i.min(LAT_BUCKETS - 1)].iter().sum()
    }

    /// Sum of all durations in seconds, approximated by bucket midpoints (`1.5 * 2^i` ns): the
    /// kernel keeps counts, not sums, so this is within a factor of 1.5 of the truth.
    pub fn approx_sum_s(&self) -> f64 {
        let ns: f64 = self
            .0
            .iter()
            .enumerate()
            .map(|(i, n)| *n as f64 * 1.5 * (1u128 << i) as f64)
            .sum();
        ns / 1e9
    }

    pub fn from_kernel<'a>(values: impl IntoIterator<Item = &'a LatHist>) -> Self {
        let mut h = Hist::default();
        for v in values {
            for (a, b) in h.0.iter_mut().zip(v.b.iter()) {
                *a = a.wrapping_add(*b);
            }
        }
        h
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Change since `prev` (per interval); saturates at zero.
    pub fn delta(&self, prev: &Hist) -> Hist {
        let mut d = Hist::default();
        for i in 0..LAT_BUCKETS {
            d.0[i] = self.0[i].saturating_sub(prev.0[i]);
        }
        d
    }

    /// The `pct`-th percentile (1..=100) in microseconds: the upper bound of the bucket holding
    /// the value of rank `ceil(count * pct / 100)`.
    pub fn percentile_us(&self, pct: u64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (count as u128 * pct.clamp(1, 100) as u128)
            .div_ceil(100)
            .max(1);
        let mut seen = 0u128;
        for (i, n) in self.0.iter().enumerate() {
            seen += *n as u128;
            if seen >= rank {
                return Some(bucket_upper_us(i));
            }
        }
        None
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.count(),
            p50: self.percentile_us(50),
            p90: self.percentile_us(90),
            p99: self.percentile_us(99),
        }
    }
}

impl Latency {
    pub fn delta(&self, prev: &Latency) -> Latency {
        Latency {
            established: self.established.delta(&prev.established),
            failed: self.failed.delta(&prev.failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(entries: &[(usize, u64)]) -> Hist {
        let mut h = Hist::default();
        for (i, n) in entries {
            h.0[*i] = *n;
        }
        h
    }

    #[test]
    fn bucket_bounds_are_powers_of_two_in_us() {
        // 2^30 ns = 1.073741824 s: the bucket that holds a 1 s SYN retransmission.
        assert_eq!(bucket_upper_us(29), 1_073_742);
        assert_eq!(bucket_upper_us(0), 1);
        assert_eq!(bucket_upper_us(63), u64::MAX / 1000 + 1);
    }

    #[test]
    fn microseconds_read_as_units() {
        assert_eq!(fmt_us(33), "33 us");
        assert_eq!(fmt_us(1_500), "1.5 ms");
        assert_eq!(fmt_us(1_073_742), "1.07 s");
    }

    #[test]
    fn cumulative_counts_and_midpoint_sum() {
        let h = hist(&[(10, 2), (20, 1)]);
        assert_eq!(
            (h.count_upto(9), h.count_upto(10), h.count_upto(19)),
            (0, 2, 2)
        );
        assert_eq!(
            (h.count_upto(20), h.count_upto(63), h.count_upto(99)),
            (3, 3, 3)
        );
        // 2 * 1.5 * 1024 ns + 1.5 * 1048576 ns.
        assert!((h.approx_sum_s() - 1_575_936e-9).abs() < 1e-12);
        assert_eq!(bucket_upper_s(9), 1.024e-6);
        assert_eq!(bucket_upper_s(29), 1.073741824);
    }

    #[test]
    fn percentiles_pick_the_bucket_of_the_rank() {
        // 89 fast (bucket 15, 33-66 us), 10 slow (bucket 29, ~1 s), 1 very slow (bucket 31).
        let h = hist(&[(15, 89), (29, 10), (31, 1)]);
        let p = h.percentiles();
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, Some(bucket_upper_us(15)));
        assert_eq!(p.p90, Some(bucket_upper_us(29)));
        assert_eq!(p.p99, Some(bucket_upper_us(29)));
        assert_eq!(h.percentile_us(100), Some(bucket_upper_us(31)));
        // Half of the connects slow: p50 is still fast, p90 is slow.
        let half = hist(&[(15, 5), (29, 5)]);
        assert_eq!(half.percentile_us(50), Some(bucket_upper_us(15)));
        assert_eq!(half.percentile_us(90), Some(bucket_upper_us(29)));
    }

    #[test]
    fn empty_has_no_percentiles_and_one_value_is_every_percentile() {
        assert_eq!(Hist::default().percentiles(), Percentiles::default());
        let one = hist(&[(20, 1)]).percentiles();
        assert_eq!((one.p50, one.p99), (Some(2_098), Some(2_098)));
    }

    #[test]
    fn interval_delta_and_per_cpu_sum() {
        let prev = hist(&[(15, 10)]);
        let cur = hist(&[(15, 12), (29, 3)]);
        let d = cur.delta(&prev);
        assert_eq!(d.count(), 5);
        assert_eq!(d.percentile_us(50), Some(bucket_upper_us(29)));
        assert_eq!(prev.delta(&cur).count(), 0, "saturates");
        let mut a = LatHist::default();
        a.b[3] = 2;
        let mut b = LatHist::default();
        b.b[3] = 1;
        b.b[4] = 1;
        let s = Hist::from_kernel([&a, &b]);
        assert_eq!((s.0[3], s.0[4], s.count()), (3, 1, 4));
    }
}
