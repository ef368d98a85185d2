//! Counter math: cumulative totals, the derived `open` gauge, and per-interval deltas.
//! Kernel counters only grow, but a reset (reload, LRU eviction and re-insert) must never show
//! up as a huge number: deltas saturate at zero.

use tracer_common::{InCounters, OutCounters};

/// Outbound totals of a cohort or destination, `open` derived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Out {
    pub attempts: u64,
    pub established: u64,
    pub failed: u64,
    pub closed: u64,
    pub open: u64,
}

/// Inbound totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct In {
    pub accepted: u64,
    pub closed: u64,
    pub open: u64,
}

/// Change over one interval; `open` can go down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutDelta {
    pub attempts: u64,
    pub established: u64,
    pub failed: u64,
    pub closed: u64,
    pub open: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InDelta {
    pub accepted: u64,
    pub closed: u64,
    pub open: i64,
}

/// Open connections: those found by the census plus those established since, minus closes
/// (which include closes of census connections).
pub fn open(census: u64, established: u64, closed: u64) -> u64 {
    census.saturating_add(established).saturating_sub(closed)
}

impl Out {
    pub fn from_kernel(c: &OutCounters, census: u64) -> Self {
        Out {
            attempts: c.attempts,
            established: c.established,
            failed: c.failed,
            closed: c.closed,
            open: open(census, c.established, c.closed),
        }
    }

    pub fn delta(&self, prev: &Out) -> OutDelta {
        OutDelta {
            attempts: self.attempts.saturating_sub(prev.attempts),
            established: self.established.saturating_sub(prev.established),
            failed: self.failed.saturating_sub(prev.failed),
            closed: self.closed.saturating_sub(prev.closed),
            open: self.open as i64 - prev.open as i64,
        }
    }

    pub fn add(&mut self, o: &Out) {
        self.attempts += o.attempts;
        self.established += o.established;
        self.failed += o.failed;
        self.closed += o.closed;
        self.open += o.open;
    }
}

impl In {
    pub fn from_kernel(c: &InCounters, census: u64) -> Self {
        In {
            accepted: c.accepted,
            closed: c.closed,
            open: open(census, c.accepted, c.closed),
        }
    }

    pub fn delta(&self, prev: &In) -> InDelta {
        InDelta {
            accepted: self.accepted.saturating_sub(prev.accepted),
            closed: self.closed.saturating_sub(prev.closed),
            open: self.open as i64 - prev.open as i64,
        }
    }
}

/// Sum per-CPU values of a counter struct (each CPU's count only grows).
pub fn sum_out<'a>(values: impl IntoIterator<Item = &'a OutCounters>) -> OutCounters {
    values.into_iter().fold(OutCounters::default(), |mut a, v| {
        a.attempts = a.attempts.wrapping_add(v.attempts);
        a.established = a.established.wrapping_add(v.established);
        a.failed = a.failed.wrapping_add(v.failed);
        a.closed = a.closed.wrapping_add(v.closed);
        a
    })
}

pub fn sum_in<'a>(values: impl IntoIterator<Item = &'a InCounters>) -> InCounters {
    values.into_iter().fold(InCounters::default(), |mut a, v| {
        a.accepted = a.accepted.wrapping_add(v.accepted);
        a.closed = a.closed.wrapping_add(v.closed);
        a
    })
}

/// Entries lost to the LRU bound: successful inserts minus entries still present.
pub fn evicted(inserts: u64, live: u64) -> u64 {
    inserts.saturating_sub(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_counts_census_and_its_closes() {
        // The foundation scenario's old side: 40 from the census, 325 established, 315 closed.
        assert_eq!(open(40, 325, 315), 50);
        assert_eq!(open(0, 3, 5), 0, "never negative after lost events");
    }

    #[test]
    fn deltas_saturate_on_reset_and_open_goes_down() {
        let prev = Out {
            attempts: 10,
            established: 9,
            failed: 1,
            closed: 4,
            open: 5,
        };
        let cur = Out {
            attempts: 15,
            established: 12,
            failed: 1,
            closed: 10,
            open: 2,
        };
        let d = cur.delta(&prev);
        assert_eq!(
            (d.attempts, d.established, d.failed, d.closed, d.open),
            (5, 3, 0, 6, -3)
        );
        let reset = Out::default().delta(&prev);
        assert_eq!((reset.attempts, reset.closed), (0, 0));
    }

    #[test]
    fn per_cpu_sums_wrap_instead_of_panicking() {
        let a = OutCounters {
            attempts: u64::MAX,
            ..Default::default()
        };
        let b = OutCounters {
            attempts: 2,
            established: 1,
            ..Default::default()
        };
        let s = sum_out([&a, &b]);
        assert_eq!((s.attempts, s.established), (1, 1));
        let i = sum_in([
            &InCounters {
                accepted: 2,
                closed: 1,
            },
            &InCounters {
                accepted: 3,
                closed: 0,
            },
        ]);
        assert_eq!(
            In::from_kernel(&i, 1),
            In {
                accepted: 5,
                closed: 1,
                open: 5
            }
        );
    }

    #[test]
    fn evictions_are_inserts_not_present() {
        assert_eq!(evicted(1000, 256), 744);
        assert_eq!(evicted(10, 12), 0);
    }
}
