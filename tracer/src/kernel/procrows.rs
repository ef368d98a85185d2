//! Process rows as a snapshot lists them: the kernel's (process, destination) rows merged
//! into one row per process and cohort as the sampler reads them, the names those rows share,
//! and the distinct pids they name.

use std::{collections::HashMap, sync::Arc};

use tracer_common::ProcKey;

use crate::model::{cohort::Cohort, counters::Out, snapshot::ProcRow};

/// Merges the kernel's (process, destination) rows into one `ProcRow` per process and cohort
/// as they are read. A process's rows mostly come one after another (towards old and new
/// interleaved), so the last key of each cohort is checked before the map.
#[derive(Default)]
pub struct ProcMerge {
    last: [Option<(MergeKey, usize)>; 4],
    index: HashMap<MergeKey, usize>,
    names: Names,
}

/// (pid, comm, cgroup, cohort): a `ProcKey` without the destination.
type MergeKey = (u32, [u8; 16], u64, u32);

impl ProcMerge {
    pub fn add(&mut self, rows: &mut Vec<ProcRow>, key: &ProcKey, out: &Out) {
        let k = (key.tgid, key.comm, key.cgroup, key.cohort);
        let last = &mut self.last[key.cohort as usize & 3];
        let i = match *last {
            Some((l, i)) if l == k => i,
            _ => {
                let next = rows.len();
                let i = *self.index.entry(k).or_insert(next);
                if i == next {
                    rows.push(ProcRow {
                        pid: key.tgid,
                        comm: self.names.get(key.tgid, &key.comm),
                        cgroup: key.cgroup,
                        destinations: 0,
                        cohort: Cohort::from_index(key.cohort),
                        out: Out::default(),
                    });
                }
                *last = Some((k, i));
                i
            }
        };
        rows[i].destinations += 1;
        rows[i].out.add(out);
    }
}

/// The pids of `rows`, sorted, each once. A process's rows mostly come one after another
/// (the kernel gives its keys rows in the order they come), so repeats are dropped before the
/// sort: with 60k rows of one process that sorts one pid, not 60k.
pub fn distinct_pids(rows: &[ProcRow]) -> Vec<u32> {
    let mut pids: Vec<u32> = Vec::new();
    for r in rows {
        if pids.last() != Some(&r.pid) {
            pids.push(r.pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Process names shared between the rows of a process: the last name seen per pid slot.
struct Names([Option<Named>; 64]);

/// A pid, its raw comm and that comm as text.
type Named = (u32, [u8; 16], Arc<str>);

impl Default for Names {
    fn default() -> Self {
        Names([const { None }; 64])
    }
}

impl Names {
    fn get(&mut self, pid: u32, comm: &[u8; 16]) -> Arc<str> {
        let slot = &mut self.0[pid as usize % 64];
        match slot {
            Some((p, c, name)) if *p == pid && c == comm => name.clone(),
            _ => {
                let name: Arc<str> = comm_str(comm).into();
                *slot = Some((pid, *comm, name.clone()));
                name
            }
        }
    }
}

/// A kernel `comm` (NUL-padded) as text.
pub fn comm_str(c: &[u8; 16]) -> String {
    let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    #[test]
    fn names_are_shared_per_pid_and_follow_a_rename() {
        let mut n = Names::default();
        let a = n.get(7, &comm("curl"));
        assert_eq!(&*a, "curl");
        assert!(Arc::ptr_eq(&a, &n.get(7, &comm("curl"))));
        // Same slot (7 + 64), another process: its own name, then the first is made anew.
        assert_eq!(&*n.get(71, &comm("java")), "java");
        assert_eq!(&*n.get(7, &comm("curl")), "curl");
        assert_eq!(&*n.get(7, &comm("curl-worker")), "curl-worker");
        assert_eq!(&*n.get(9, &[b'x'; 16]), "xxxxxxxxxxxxxxxx");
    }

    #[test]
    fn process_rows_merge_per_process_and_cohort() {
        let key = |tgid, name: &str, cohort, last: u8| ProcKey {
            cgroup: 9,
            tgid,
            cohort,
            comm: comm(name),
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 10, 0, last],
        };
        let out = |attempts| Out {
            attempts,
            ..Default::default()
        };
        let mut rows = vec![];
        let mut m = ProcMerge::default();
        // Interleaved processes, one pid under two names, one process towards two cohorts.
        for (k, n) in [
            (key(1, "curl", 1, 1), 2),
            (key(1, "curl", 1, 2), 3),
            (key(2, "java", 1, 1), 5),
            (key(1, "curl", 1, 3), 1),
            (key(1, "curl", 2, 4), 7),
            (key(1, "wget", 1, 1), 4),
            (key(2, "java", 1, 2), 6),
        ] {
            m.add(&mut rows, &k, &out(n));
        }
        let got: Vec<(u32, &str, Cohort, u64, u64)> = rows
            .iter()
            .map(|r| (r.pid, &*r.comm, r.cohort, r.destinations, r.out.attempts))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "curl", Cohort::Old, 3, 6),
                (2, "java", Cohort::Old, 2, 11),
                (1, "curl", Cohort::New, 1, 7),
                (1, "wget", Cohort::Old, 1, 4),
            ]
        );
    }

    #[test]
    fn distinct_pids_are_sorted_and_each_once() {
        let row = |pid| ProcRow {
            pid,
            comm: "p".into(),
            cgroup: 1,
            destinations: 1,
            cohort: Cohort::Old,
            out: Out::default(),
        };
        let rows: Vec<ProcRow> = [5, 5, 3, 5, 9, 3, 3, 1].into_iter().map(row).collect();
        assert_eq!(distinct_pids(&rows), vec![1, 3, 5, 9]);
        assert!(distinct_pids(&[]).is_empty());
    }
}
