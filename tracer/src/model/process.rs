//! Per-process totals: the kernel keeps one row per (process, destination); every sink (NDJSON,
//! live view, metrics, the analysis) sees the same per-process aggregation, keyed by
//! (pid, comm, cgroup) so a pid reused by another program is another process.

use std::{collections::BTreeMap, sync::Arc};

use super::{
    cohort::Cohort,
    counters::Out,
    held::Held,
    snapshot::{ProcRow, Snapshot},
};

/// One process: its counters towards each cohort, summed over destinations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: Arc<str>,
    pub cgroup: u64,
    /// Indexed by `Cohort as usize`.
    pub out: [Out; 3],
    /// Destinations it has rows for.
    pub destinations: usize,
    /// Its open old-side connections with when each was opened (filled by `listed`).
    pub held: Held,
}

impl Process {
    pub fn cohort(&self, c: Cohort) -> &Out {
        &self.out[c as usize]
    }

    /// Activity that ranks it: attempts plus open connections, all cohorts.
    pub fn weight(&self) -> u64 {
        self.out.iter().map(|x| x.attempts + x.open).sum()
    }
}

/// Aggregate rows per process, most active first (ties by pid).
pub fn aggregate(rows: &[ProcRow]) -> Vec<Process> {
    // Keyed by borrowed names: one key per process, not one per row. A process has many
    // rows (one per destination), so a small cache by pid skips most tree lookups.
    type Key<'a> = (u32, &'a str, u64);
    let mut by: BTreeMap<Key, usize> = BTreeMap::new();
    let mut acc: Vec<Process> = vec![];
    let mut cache: [Option<(Key, usize)>; 64] = [None; 64];
    for r in rows {
        let key = (r.pid, &*r.comm, r.cgroup);
        let slot = &mut cache[r.pid as usize % 64];
        let i = match slot {
            Some((k, i)) if *k == key => *i,
            _ => {
                let next = acc.len();
                let i = *by.entry(key).or_insert(next);
                if i == next {
                    acc.push(Process {
                        pid: r.pid,
                        comm: r.comm.clone(),
                        cgroup: r.cgroup,
                        out: [Out::default(); 3],
                        destinations: 0,
                        held: Held::default(),
                    });
                }
                *slot = Some((key, i));
                i
            }
        };
        acc[i].out[r.cohort as usize].add(&r.out);
        acc[i].destinations += r.destinations as usize;
    }
    acc.sort_by(|a, b| {
        b.weight()
            .cmp(&a.weight())
            .then(a.pid.cmp(&b.pid))
            .then(a.comm.cmp(&b.comm))
            .then(a.cgroup.cmp(&b.cgroup))
    });
    acc
}

/// Processes listed beyond `top` when that many are on the old side in one interval.
pub const OLD_SIDE_CAP: usize = 500;

/// The processes a snapshot lists: first every process on the old side in the interval (open
/// old connections, census ones included, or old attempts since `prev`), busiest there first,
/// up to `OLD_SIDE_CAP`; then those that made attempts elsewhere in the interval (so each
/// short-lived process that moved is seen at least once), up to `OLD_SIDE_CAP` more; then the
/// most active others up to `top` in all. So a straggler is never pushed out by processes that
/// moved, and those are counted. Made from aggregations already made: `all` of `cur`, `before`
/// of the snapshot before (a session keeps the last one, so each snapshot is aggregated once).
pub fn listed_from(
    cur: &Snapshot,
    all: Vec<Process>,
    before: Option<&[Process]>,
    top: usize,
) -> Vec<Process> {
    let old = Cohort::Old as usize;
    let before: BTreeMap<(u32, &str, u64), [u64; 3]> = before
        .into_iter()
        .flatten()
        .map(|p| {
            let a = [0, 1, 2].map(|c| p.out[c].attempts);
            ((p.pid, &*p.comm, p.cgroup), a)
        })
        .collect();
    // A smaller count is a reset (eviction): all of it is new.
    let fresh = |now: u64, was: u64| if now >= was { now - was } else { now };
    let held: BTreeMap<(u32, &str, u64), &Held> = cur
        .held
        .iter()
        .map(|h| ((h.pid, &*h.comm, h.cgroup), &h.held))
        .collect();
    type Ranked = ((u64, u64), Process);
    let (mut on_old, rest): (Vec<Ranked>, Vec<Ranked>) = all
        .into_iter()
        .map(|mut p| {
            if let Some(h) = held.get(&(p.pid, &*p.comm, p.cgroup)) {
                p.held = (*h).clone();
            }
            let was = before
                .get(&(p.pid, &*p.comm, p.cgroup))
                .copied()
                .unwrap_or_default();
            let elsewhere: u64 = [0, 2]
                .iter()
                .map(|&c| fresh(p.out[c].attempts, was[c]))
                .sum();
            let o = p.out[old];
            ((o.open + fresh(o.attempts, was[old]), elsewhere), p)
        })
        .partition(|((w, _), _)| *w > 0);
    on_old.sort_by(|a, b| b.0.0.cmp(&a.0.0).then(a.1.pid.cmp(&b.1.pid)));
    on_old.truncate(OLD_SIDE_CAP);
    let (mut active, mut rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(|((_, e), _)| *e > 0);
    active.sort_by(|a, b| b.0.1.cmp(&a.0.1).then(a.1.pid.cmp(&b.1.pid)));
    active.truncate(OLD_SIDE_CAP);
    let room = top.saturating_sub(on_old.len() + active.len());
    rest.truncate(room);
    on_old
        .into_iter()
        .chain(active)
        .chain(rest)
        .map(|(_, p)| p)
        .collect()
}

/// `listed_from` with both snapshots aggregated here.
#[cfg(test)]
pub fn listed(cur: &Snapshot, prev: Option<&Snapshot>, top: usize) -> Vec<Process> {
    let before = prev.map(|p| aggregate(&p.processes));
    listed_from(cur, aggregate(&cur.processes), before.as_deref(), top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, cohort: Cohort, attempts: u64, open: u64) -> ProcRow {
        ProcRow {
            pid,
            comm: format!("p{pid}").into(),
            cgroup: 1,
            destinations: 1,
            cohort,
            out: Out {
                attempts,
                open,
                ..Default::default()
            },
        }
    }

    #[test]
    fn matches_a_plain_aggregation() {
        let mut next = crate::testutil::xorshift(0x1234_5678_9abc_def1);
        // Pids that share cache slots (n and n + 64), one pid under two names and cgroups.
        let rows: Vec<ProcRow> = (0..5000)
            .map(|_| {
                let r = next();
                let pid = [1, 65, 129, 7, 7, 7][(r % 6) as usize];
                ProcRow {
                    pid,
                    comm: if r.is_multiple_of(5) {
                        "a".into()
                    } else {
                        "b".into()
                    },
                    cgroup: (r >> 8) % 2,
                    destinations: (r >> 28) % 4 + 1,
                    cohort: Cohort::from_index((r >> 16) as u32 % 3),
                    out: Out {
                        attempts: (r >> 20) % 9,
                        open: (r >> 24) % 3,
                        ..Default::default()
                    },
                }
            })
            .collect();
        let mut plain: BTreeMap<(u32, String, u64), ([Out; 3], usize)> = BTreeMap::new();
        for r in &rows {
            let e = plain
                .entry((r.pid, r.comm.to_string(), r.cgroup))
                .or_insert(([Out::default(); 3], 0));
            e.0[r.cohort as usize].add(&r.out);
            e.1 += r.destinations as usize;
        }
        let got = aggregate(&rows);
        assert_eq!(got.len(), plain.len());
        for p in got {
            assert_eq!(
                plain[&(p.pid, p.comm.to_string(), p.cgroup)],
                (p.out, p.destinations)
            );
        }
    }

    #[test]
    fn old_side_processes_are_listed_first_and_never_pushed_out() {
        let mut prev = Snapshot::empty(std::time::SystemTime::UNIX_EPOCH);
        prev.processes = vec![row(1, Cohort::Old, 4, 0)];
        let mut cur = prev.clone();
        cur.processes = (100..150).map(|pid| row(pid, Cohort::New, 90, 1)).collect();
        cur.processes.push(row(1, Cohort::Old, 4, 0));
        cur.processes.push(row(2, Cohort::Old, 1, 0));
        cur.processes.push(row(3, Cohort::Old, 0, 2));
        cur.held = vec![super::super::held::Holder {
            pid: 3,
            comm: "p3".into(),
            cgroup: 1,
            held: Held {
                before_start: 2,
                opened_ms: vec![],
            },
        }];
        let l = listed(&cur, Some(&prev), 5);
        let pids: Vec<u32> = l.iter().map(|p| p.pid).collect();
        assert_eq!(
            &pids[..3],
            [3, 2, 100],
            "pid 1 made no attempt this interval"
        );
        assert_eq!(
            pids.len(),
            52,
            "every process that made an attempt is listed"
        );
        assert!(!pids.contains(&1));
        assert_eq!(l[0].held.before_start, 2);
        let again = listed(&cur, Some(&cur), 5);
        assert_eq!(
            again.len(),
            5,
            "quiet since the last one: old holders, then by weight"
        );
        assert_eq!(again[0].pid, 3);
    }

    #[test]
    fn per_pid_and_cohort_most_active_first() {
        let row = |pid, cohort, attempts| row(pid, cohort, attempts, 0);
        let p = aggregate(&[
            row(1, Cohort::Old, 2),
            row(1, Cohort::New, 3),
            row(2, Cohort::Old, 9),
        ]);
        assert_eq!(p[0].pid, 2);
        assert_eq!(p[1].cohort(Cohort::New).attempts, 3);
        assert_eq!(p[1].destinations, 2);
    }
}
