//! The open connections a process holds to the old side, and when each was opened: what tells a
//! pool pinned since before the cutover from a process that keeps making fresh connects. Open
//! times are kept to `GRAIN_MS` in a short run-length list, so a snapshot stays small however
//! many connections a pool holds.

use std::sync::Arc;

/// Open times are rounded down to this (ms since start).
pub const GRAIN_MS: u64 = 100;
/// At most this many distinct open times per process; the youngest are merged beyond it (the
/// oldest, which decide "before the cutover", stay exact).
pub const MAX_TIMES: usize = 256;

/// The open old-side connections of one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Found by the census: opened before tracing started.
    pub before_start: u64,
    /// (opened at, ms since start; how many), ascending by time.
    pub opened_ms: Vec<(u64, u64)>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.open() == 0
    }

    /// Connections held now.
    pub fn open(&self) -> u64 {
        self.before_start + self.opened_ms.iter().map(|p| p.1).sum::<u64>()
    }

    /// Connections opened before `at_ms` (the census ones included).
    pub fn opened_before(&self, at_ms: u64) -> u64 {
        self.before_start
            + self
                .opened_ms
                .iter()
                .take_while(|p| p.0 < at_ms)
                .map(|p| p.1)
                .sum::<u64>()
    }

    /// Age of the oldest connection at `now_ms`: for a census one, the time since start (it is
    /// at least that old).
    pub fn oldest_age_ms(&self, now_ms: u64) -> Option<u64> {
        if self.before_start > 0 {
            return Some(now_ms);
        }
        self.opened_ms.first().map(|p| now_ms.saturating_sub(p.0))
    }

    /// One more connection, opened at `at_ms` (None: before start). Call `normalize` after.
    pub fn add(&mut self, at_ms: Option<u64>, n: u64) {
        match at_ms {
            None => self.before_start += n,
            Some(t) => self.opened_ms.push((t - t % GRAIN_MS, n)),
        }
    }

    /// Sort, join equal times, cap the list at `MAX_TIMES`.
    pub fn normalize(&mut self) {
        self.opened_ms.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.opened_ms.len());
        for &(t, n) in &self.opened_ms {
            match out.last_mut() {
                Some(last) if last.0 == t => last.1 += n,
                _ => out.push((t, n)),
            }
        }
        if out.len() > MAX_TIMES {
            let rest: u64 = out[MAX_TIMES - 1..].iter().map(|p| p.1).sum();
            out.truncate(MAX_TIMES);
            out[MAX_TIMES - 1].1 = rest;
        }
        self.opened_ms = out;
    }
}

/// One process's holdings, keyed like the per-process rows (pid, comm, cgroup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: Arc<str>,
    pub cgroup: u64,
    pub held: Held,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_before_a_time_and_the_oldest_age() {
        let mut h = Held::default();
        h.add(Some(1250), 1);
        h.add(Some(300), 2);
        h.add(Some(1299), 1);
        h.normalize();
        assert_eq!(h.opened_ms, vec![(300, 2), (1200, 2)]);
        assert_eq!(
            (h.open(), h.opened_before(1000), h.opened_before(300)),
            (4, 2, 0)
        );
        assert_eq!(h.oldest_age_ms(5300), Some(5000));
        h.add(None, 3);
        assert_eq!((h.open(), h.opened_before(0)), (7, 3));
        assert_eq!(
            h.oldest_age_ms(5300),
            Some(5300),
            "census: at least since start"
        );
        assert_eq!(Held::default().oldest_age_ms(9), None);
    }

    #[test]
    fn the_list_is_capped_keeping_the_oldest_exact() {
        let mut h = Held::default();
        for i in 0..1000 {
            h.add(Some(i * GRAIN_MS), 1);
        }
        h.normalize();
        assert_eq!(h.opened_ms.len(), MAX_TIMES);
        assert_eq!(h.open(), 1000);
        assert_eq!(h.opened_before(10 * GRAIN_MS), 10);
    }
}
