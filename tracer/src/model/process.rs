//! Per-process totals: the kernel keeps one row per (process, destination); every sink (NDJSON,
//! live view, metrics, the analysis) sees the same per-process aggregation, keyed by
//! (pid, comm, cgroup) so a pid reused by another program is another process.

use std::{collections::BTreeMap, sync::Arc};

use super::{cohort::Cohort, counters::Out, snapshot::ProcRow};

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
                    });
                }
                *slot = Some((key, i));
                i
            }
        };
        acc[i].out[r.cohort as usize].add(&r.out);
        acc[i].destinations += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

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
                    addr: "127.10.0.1".parse().unwrap(),
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
            e.1 += 1;
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
    fn per_pid_and_cohort_most_active_first() {
        let row = |pid, cohort, attempts| ProcRow {
            pid,
            comm: format!("p{pid}").into(),
            cgroup: 1,
            addr: "127.10.0.1".parse().unwrap(),
            cohort,
            out: Out {
                attempts,
                ..Default::default()
            },
        };
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
