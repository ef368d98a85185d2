//! Why connects failed: counts per reason, summed over CPUs, with per-interval deltas. The kernel
//! reads the socket's error at `SYN_SENT -> CLOSE`; `tracer_common::reason_of` maps it.

use tracer_common::{
    FailReasons, REASON_ABORTED, REASON_NO_PORT, REASON_NO_ROUTE, REASON_OTHER, REASON_REFUSED,
    REASON_RESET, REASON_TIMEOUT, REASON_UNREACHABLE, REASONS,
};

/// A failure reason, in the order of the kernel's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// RST to the SYN, or ICMP port unreachable (ECONNREFUSED).
    Refused = REASON_REFUSED as isize,
    /// SYN retries exhausted (ETIMEDOUT).
    Timeout = REASON_TIMEOUT as isize,
    /// ICMP host or network unreachable (EHOSTUNREACH, ENETUNREACH).
    Unreachable = REASON_UNREACHABLE as isize,
    /// ECONNRESET: a reset in the handshake the kernel does not report as refused.
    Reset = REASON_RESET as isize,
    /// No socket error: the application closed the socket first (its own connect timeout).
    Aborted = REASON_ABORTED as isize,
    /// `connect()` failed before a SYN: no route, or an unreachable/prohibit/blackhole route.
    NoRoute = REASON_NO_ROUTE as isize,
    /// `connect()` found no free local port (EADDRNOTAVAIL): ephemeral ports exhausted.
    NoPort = REASON_NO_PORT as isize,
    /// Any other error, or the error could not be read (no BTF).
    Other = REASON_OTHER as isize,
}

impl Reason {
    pub const ALL: [Reason; REASONS] = [
        Reason::Refused,
        Reason::Timeout,
        Reason::Unreachable,
        Reason::Reset,
        Reason::Aborted,
        Reason::NoRoute,
        Reason::NoPort,
        Reason::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Refused => "refused",
            Reason::Timeout => "timeout",
            Reason::Unreachable => "unreachable",
            Reason::Reset => "reset",
            Reason::Aborted => "aborted",
            Reason::NoRoute => "no_route",
            Reason::NoPort => "no_port",
            Reason::Other => "other",
        }
    }
}

/// Failed connects per reason; the sum equals the `failed` counter of the same scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasons(pub [u64; REASONS]);

impl Reasons {
    /// Sum the per-CPU values (each CPU's count only grows).
    pub fn from_kernel<'a>(values: impl IntoIterator<Item = &'a FailReasons>) -> Self {
        let mut r = Reasons::default();
        for v in values {
            for (a, b) in r.0.iter_mut().zip(v.n.iter()) {
                *a = a.wrapping_add(*b);
            }
        }
        r
    }

    pub fn get(&self, r: Reason) -> u64 {
        self.0[r as usize]
    }

    /// Change since `prev`, saturating at zero after a reset (LRU eviction and re-insert).
    pub fn delta(&self, prev: &Reasons) -> Reasons {
        let mut d = Reasons::default();
        for i in 0..REASONS {
            d.0[i] = self.0[i].saturating_sub(prev.0[i]);
        }
        d
    }

    pub fn add(&mut self, o: &Reasons) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }

    /// `(name, count)` for every reason, in a fixed order (for output).
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reason::ALL.iter().map(|r| (r.name(), self.get(*r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_sum_and_total() {
        let a = FailReasons {
            n: [1, 0, 2, 0, 0, 0, 0, 0],
        };
        let b = FailReasons {
            n: [3, 1, 0, 0, 1, 2, 1, 0],
        };
        let r = Reasons::from_kernel([&a, &b]);
        assert_eq!(r.get(Reason::Refused), 4);
        assert_eq!(r.get(Reason::Timeout), 1);
        assert_eq!(r.get(Reason::Unreachable), 2);
        assert_eq!(r.get(Reason::Aborted), 1);
        assert_eq!(r.get(Reason::NoRoute), 2);
        assert_eq!(r.get(Reason::NoPort), 1);
        assert_eq!(r.0.iter().sum::<u64>(), 11);
    }

    #[test]
    fn deltas_saturate_and_add_sums() {
        let prev = Reasons([5, 1, 0, 0, 0, 4, 0, 2]);
        let cur = Reasons([7, 1, 3, 0, 0, 6, 1, 1]);
        assert_eq!(cur.delta(&prev), Reasons([2, 0, 3, 0, 0, 2, 1, 0]));
        let mut s = prev;
        s.add(&cur);
        assert_eq!(s, Reasons([12, 2, 3, 0, 0, 10, 1, 3]));
    }

    #[test]
    fn names_are_in_kernel_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let names: Vec<_> = Reasons::default().named().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "refused",
                "timeout",
                "unreachable",
                "reset",
                "aborted",
                "no_route",
                "no_port",
                "other"
            ]
        );
    }
}
