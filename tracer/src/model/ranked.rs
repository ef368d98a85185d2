//! One interval's rankings, made once and read by the analysis and by every sink. At tens of
//! thousands of rows the per-process aggregation and the top-destination selection cost the
//! most after the map read itself, and each reader used to run them again.

use super::{
    process::{self, Process},
    snapshot::{DestRow, Snapshot},
};

/// What a snapshot lists: its processes and its busiest destinations.
#[derive(Debug)]
pub struct Ranked<'a> {
    /// The processes listed (see `process::listed`).
    pub processes: Vec<Process>,
    /// The `top` busiest destinations (see `Snapshot::top_destinations`).
    pub destinations: Vec<&'a DestRow>,
}

impl<'a> Ranked<'a> {
    /// The rankings of `cur`, aggregating `prev` too (a replay, a test, the summary).
    pub fn of(cur: &'a Snapshot, prev: Option<&Snapshot>, top: usize) -> Self {
        let before = prev.map(|p| process::aggregate(&p.processes));
        Self::from_aggregates(
            cur,
            process::aggregate(&cur.processes),
            before.as_deref(),
            top,
        )
    }

    /// The same from aggregations already made: `all` of `cur`, `before` of the snapshot
    /// before it.
    pub fn from_aggregates(
        cur: &'a Snapshot,
        all: Vec<Process>,
        before: Option<&[Process]>,
        top: usize,
    ) -> Self {
        Ranked {
            processes: process::listed_from(cur, all, before, top),
            destinations: cur.top_destinations(top),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{cohort::Cohort, counters::Out, snapshot::ProcRow};

    fn snap(rows: &[(u32, u64)]) -> Snapshot {
        let mut s = Snapshot::empty(std::time::SystemTime::UNIX_EPOCH);
        for (i, &(pid, attempts)) in rows.iter().enumerate() {
            let out = Out {
                attempts,
                ..Default::default()
            };
            let addr = std::net::IpAddr::from([127, 10, 0, i as u8 + 1]);
            s.processes.push(ProcRow {
                pid,
                comm: format!("p{pid}").into(),
                cgroup: 1,
                destinations: 1,
                cohort: Cohort::Old,
                out,
            });
            s.destinations.push(DestRow {
                addr,
                cohort: Cohort::Old,
                out,
            });
        }
        s
    }

    #[test]
    fn from_aggregates_is_what_each_reader_computed_alone() {
        let prev = snap(&[(1, 3), (2, 5), (3, 1)]);
        let cur = snap(&[(1, 4), (2, 9), (3, 1), (4, 2)]);
        for top in [0, 1, 2, 10] {
            let alone = Ranked::of(&cur, Some(&prev), top);
            let before = process::aggregate(&prev.processes);
            let shared = Ranked::from_aggregates(
                &cur,
                process::aggregate(&cur.processes),
                Some(&before),
                top,
            );
            assert_eq!(alone.processes, shared.processes, "top {top}");
            assert_eq!(alone.processes, process::listed(&cur, Some(&prev), top));
            assert_eq!(alone.destinations, cur.top_destinations(top));
            assert_eq!(shared.destinations, cur.top_destinations(top));
        }
    }
}
