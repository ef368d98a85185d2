//! A snapshot: everything one sampling pass read, as plain data with no aya types. One sampler
//! makes them; every sink (NDJSON, live view) reads them.

use std::{
    cmp::Ordering,
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use super::{
    cohort::Cohort,
    counters::{In, Out},
    failures::Reasons,
    latency::Latency,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestRow {
    pub addr: IpAddr,
    pub cohort: Cohort,
    pub out: Out,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRow {
    pub addr: IpAddr,
    pub cohort: Cohort,
    pub inb: In,
}

/// Outbound counts of one process towards one cohort, summed over its `destinations`. The
/// kernel keeps a row per (process, destination); the sampler merges them as it reads them
/// (a snapshot row each cost more, at 60k destinations, than the rest of the snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRow {
    pub pid: u32,
    /// Shared: every row of a process has the same name.
    pub comm: std::sync::Arc<str>,
    pub cgroup: u64,
    /// Destinations (kernel rows, census connections by remote address) summed here.
    pub destinations: u64,
    pub cohort: Cohort,
    pub out: Out,
}

/// Failure reasons of one process towards one destination (same key as `ProcRow`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
    pub addr: IpAddr,
    pub cohort: Cohort,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub destinations: u64,
    pub locals: u64,
    pub processes: u64,
}

/// Entries in use and capacity of one bounded (LRU) map: how close it is to evicting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapUse {
    pub live: u64,
    pub capacity: u64,
}

impl MapUse {
    /// live / capacity, 0 for a map of unknown size.
    pub fn ratio(&self) -> f64 {
        if self.capacity == 0 {
            return 0.0;
        }
        self.live as f64 / self.capacity as f64
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapsUse {
    pub destinations: MapUse,
    pub locals: MapUse,
    pub processes: MapUse,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub at: SystemTime,
    pub elapsed: Duration,
    /// Indexed by `Cohort as usize`: other, old, new.
    pub out: [Out; 3],
    pub inb: [In; 3],
    pub destinations: Vec<DestRow>,
    pub locals: Vec<LocalRow>,
    pub processes: Vec<ProcRow>,
    pub evicted: Evicted,
    /// BPF program runs the kernel skipped (recursion on the same CPU), all programs.
    pub lost_events: u64,
    /// Per-socket records the kernel could not store (their later transitions are missed).
    pub sock_insert_failed: u64,
    /// Reconciliations of `open` with the kernel's socket table so far.
    pub reconciliations: u64,
    /// Failed connects per reason, per cohort (exact; sums to `out[c].failed`).
    pub reasons: [Reasons; 3],
    /// Connect latency histograms per cohort (exact), cumulative since start.
    pub latency: [Latency; 3],
    /// Failure reasons per destination and per (process, destination), bounded like the rows
    /// they belong to; an address with no failure has no entry.
    pub dest_reasons: HashMap<IpAddr, Reasons>,
    pub proc_reasons: HashMap<ProcId, Reasons>,
    /// Fill of the bounded per-destination, per-local and per-process maps.
    pub maps: MapsUse,
    /// How long this sampling pass took (the reader's own cost).
    pub sample_duration: Duration,
    /// Container or service unit of the processes' pids, where their cgroup path names one.
    pub units: std::collections::BTreeMap<u32, String>,
    /// Network namespace inode of the processes' pids (/proc/PID/ns/net), where readable.
    pub netns: std::collections::BTreeMap<u32, u64>,
    /// DNS answers received since the last sample (kernel capture), oldest first.
    pub dns_answers: Vec<super::dns_seen::DnsAnswerSeen>,
    /// The last DNS answer of each listed pid that received one.
    pub dns: std::collections::BTreeMap<u32, super::dns_seen::DnsAnswerSeen>,
    /// The capture's counts since start; None when it is not attached.
    pub dns_capture: Option<super::dns_seen::CaptureStats>,
    /// Open old-side connections per process, with when each was opened.
    pub held: Vec<super::held::Holder>,
}

impl Snapshot {
    pub fn empty(at: SystemTime) -> Self {
        Snapshot {
            at,
            elapsed: Duration::ZERO,
            out: [Out::default(); 3],
            inb: [In::default(); 3],
            destinations: vec![],
            locals: vec![],
            processes: vec![],
            evicted: Evicted::default(),
            lost_events: 0,
            sock_insert_failed: 0,
            reconciliations: 0,
            reasons: [Reasons::default(); 3],
            latency: [Latency::default(); 3],
            dest_reasons: HashMap::new(),
            proc_reasons: HashMap::new(),
            maps: MapsUse::default(),
            sample_duration: Duration::ZERO,
            units: Default::default(),
            netns: Default::default(),
            dns_answers: vec![],
            dns: Default::default(),
            dns_capture: None,
            held: vec![],
        }
    }

    pub fn cohort_reasons(&self, c: Cohort) -> &Reasons {
        &self.reasons[c as usize]
    }

    pub fn cohort_latency(&self, c: Cohort) -> &Latency {
        &self.latency[c as usize]
    }

    /// Failure reasons of a destination (zero if it never failed).
    pub fn dest_reasons(&self, addr: IpAddr) -> Reasons {
        self.dest_reasons.get(&addr).copied().unwrap_or_default()
    }

    pub fn cohort_out(&self, c: Cohort) -> &Out {
        &self.out[c as usize]
    }

    pub fn cohort_in(&self, c: Cohort) -> &In {
        &self.inb[c as usize]
    }

    /// The `n` most active destinations: open connections first, then attempts, then address.
    /// The n-th largest (open, attempts) is found on those integers alone: only rows at or
    /// above it can be in, and only they are compared by address (tens of 60k, not all).
    pub fn top_destinations(&self, n: usize) -> Vec<&DestRow> {
        let key = |r: &DestRow| (r.out.open, r.out.attempts);
        let rows: Vec<&DestRow> = if n > 0 && self.destinations.len() > n {
            let mut keys: Vec<(u64, u64)> = self.destinations.iter().map(key).collect();
            let (_, nth, _) = keys.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
            let nth = *nth;
            self.destinations.iter().filter(|r| key(r) >= nth).collect()
        } else {
            self.destinations.iter().collect()
        };
        top_n(rows, n, |a, b| {
            (b.out.open, b.out.attempts, a.addr).cmp(&(a.out.open, a.out.attempts, b.addr))
        })
    }
}

/// The first `n` of `rows` in the order `cmp`, sorted: what sorting all and truncating gives
/// when `cmp` is a total order, but only the `n` are sorted (a few of tens of thousands).
pub fn top_n<T>(mut rows: Vec<T>, n: usize, cmp: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    if n == 0 {
        rows.clear();
        return rows;
    }
    if rows.len() > n {
        rows.select_nth_unstable_by(n - 1, &cmp);
        rows.truncate(n);
    }
    rows.sort_by(&cmp);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_destinations_by_open_then_attempts() {
        let mut s = Snapshot::empty(SystemTime::UNIX_EPOCH);
        for (a, attempts, open) in [
            ("127.10.0.1", 5, 0),
            ("127.10.0.2", 1, 1),
            ("127.10.0.3", 9, 0),
        ] {
            s.destinations.push(DestRow {
                addr: a.parse().unwrap(),
                cohort: Cohort::Old,
                out: Out {
                    attempts,
                    open,
                    ..Default::default()
                },
            });
        }
        let top: Vec<String> = s
            .top_destinations(2)
            .iter()
            .map(|r| r.addr.to_string())
            .collect();
        assert_eq!(top, ["127.10.0.2", "127.10.0.3"]);
        assert!(s.top_destinations(0).is_empty());
    }

    #[test]
    fn top_destinations_is_a_full_sort_truncated() {
        // Attempts with many ties, and nearly without.
        for spread in [4, 1 << 20] {
            top_destinations_match_a_full_sort(spread);
        }
    }

    fn top_destinations_match_a_full_sort(spread: u64) {
        let mut next = crate::testutil::xorshift(0x0bad_cafe_f00d_1234);
        let mut s = Snapshot::empty(SystemTime::UNIX_EPOCH);
        for i in 0..3000u32 {
            let r = next();
            let addr = if r.is_multiple_of(3) {
                IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(i) << 64 | u128::from(r % 7),
                ))
            } else {
                IpAddr::V4(std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761)))
            };
            s.destinations.push(DestRow {
                addr,
                cohort: Cohort::Old,
                out: Out {
                    attempts: (r >> 8) % spread,
                    open: (r >> 16) % 3,
                    ..Default::default()
                },
            });
        }
        let mut all: Vec<&DestRow> = s.destinations.iter().collect();
        all.sort_by(|a, b| {
            (b.out.open, b.out.attempts, a.addr).cmp(&(a.out.open, a.out.attempts, b.addr))
        });
        for n in [0, 1, 5, 100, 2999, 3000, 5000] {
            let want: Vec<IpAddr> = all.iter().take(n).map(|r| r.addr).collect();
            let got: Vec<IpAddr> = s.top_destinations(n).iter().map(|r| r.addr).collect();
            assert_eq!(got, want, "n = {n}, spread {spread}");
        }
    }

    #[test]
    fn top_n_is_sort_then_truncate() {
        // A small generator, so the cases are many and reproducible without a crate.
        let mut next = crate::testutil::xorshift(0x9e37_79b9_7f4a_7c15);
        for len in [0usize, 1, 2, 5, 20, 21, 100, 1000] {
            let rows: Vec<(u64, u64)> = (0..len as u64).map(|i| (next() % 7, i)).collect();
            let cmp = |a: &(u64, u64), b: &(u64, u64)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
            for n in [0, 1, 3, 20, len, len + 1] {
                let mut all = rows.clone();
                all.sort_by(cmp);
                all.truncate(n);
                assert_eq!(top_n(rows.clone(), n, cmp), all, "len {len}, n {n}");
            }
        }
    }

    #[test]
    fn fill_ratio_of_unknown_capacity_is_zero() {
        assert_eq!(
            MapUse {
                live: 3,
                capacity: 0
            }
            .ratio(),
            0.0
        );
        assert_eq!(
            MapUse {
                live: 16,
                capacity: 64
            }
            .ratio(),
            0.25
        );
    }
}
