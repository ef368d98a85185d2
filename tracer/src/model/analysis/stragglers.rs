//! Stragglers: processes still using the old side after the cutover, ranked by old-side attempts
//! since the cutover plus open old connections. A process that never reaches the new side is the
//! "cached DNS forever" case. Owners of connections open before tracer started come from the
//! census (mapped to a process once at start).

use std::collections::BTreeMap;

use crate::model::counters::Out;

/// One process as a snapshot shows it: cumulative per-cohort counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcSample {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
    /// Container or service unit, if the cgroup path names one.
    pub unit: Option<String>,
    pub old: Out,
    pub new: Out,
}

/// A process that held old connections when tracing started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CensusOwner {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
    pub unit: Option<String>,
    /// Old-side connections it held at start.
    pub old_open: u64,
}

type Key = (u32, String, u64);

#[derive(Clone, Debug, Default)]
struct Row {
    unit: Option<String>,
    old_attempts: u64,
    old_open: u64,
    new_attempts: u64,
    /// Old attempts when the cutover was marked (or when first seen after it).
    baseline: Option<u64>,
    census_open: u64,
    first_old_ms: Option<u64>,
    last_old_ms: Option<u64>,
}

/// A ranked straggler, for display and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Straggler {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
    pub unit: Option<String>,
    pub old_attempts_since_cutover: u64,
    pub old_open: u64,
    /// Old connections it held when tracing started (census).
    pub census_open: u64,
    pub first_old_ms: Option<u64>,
    pub last_old_ms: Option<u64>,
    pub reached_new: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Stragglers {
    rows: BTreeMap<Key, Row>,
    cut: bool,
}

impl Stragglers {
    pub fn census(&mut self, owners: &[CensusOwner]) {
        for o in owners {
            let r = self
                .rows
                .entry((o.pid, o.comm.clone(), o.cgroup))
                .or_default();
            r.census_open += o.old_open;
            r.unit = r.unit.take().or(o.unit.clone());
            if o.old_open > 0 {
                r.first_old_ms.get_or_insert(0);
                r.last_old_ms.get_or_insert(0);
            }
        }
    }

    /// From now on attempts count as "since the cutover".
    pub fn cutover(&mut self) {
        if !self.cut {
            self.cut = true;
            for r in self.rows.values_mut() {
                r.baseline = Some(r.old_attempts);
            }
        }
    }

    pub fn feed(&mut self, at_ms: u64, procs: &[ProcSample]) {
        for p in procs {
            let r = self
                .rows
                .entry((p.pid, p.comm.clone(), p.cgroup))
                .or_default();
            // Counters only grow; a smaller value is a reset (eviction): count from it anew.
            let reset = p.old.attempts < r.old_attempts;
            if reset {
                r.baseline = r.baseline.map(|_| 0);
            }
            let attempted = p.old.attempts > r.old_attempts || (reset && p.old.attempts > 0);
            if attempted || p.old.open > 0 {
                r.first_old_ms.get_or_insert(at_ms);
                r.last_old_ms = Some(at_ms);
            }
            if p.unit.is_some() {
                r.unit = p.unit.clone();
            }
            r.old_attempts = p.old.attempts;
            r.old_open = p.old.open;
            r.new_attempts = r.new_attempts.max(p.new.attempts);
            if self.cut && r.baseline.is_none() {
                r.baseline = Some(0);
            }
        }
    }

    /// Processes with any old-side use since the cutover (or since start without one), the
    /// heaviest first.
    pub fn top(&self, n: usize) -> Vec<Straggler> {
        // The kernel names a process by the comm of the thread that connected, the census by
        // the main thread's: the new side is reached if any row of the pid reached it.
        let reached: std::collections::BTreeSet<(u32, u64)> = self
            .rows
            .iter()
            .filter(|(_, r)| r.new_attempts > 0)
            .map(|((pid, _, cg), _)| (*pid, *cg))
            .collect();
        let mut v: Vec<Straggler> = self
            .rows
            .iter()
            .map(|((pid, comm, cgroup), r)| Straggler {
                pid: *pid,
                comm: comm.clone(),
                cgroup: *cgroup,
                unit: r.unit.clone(),
                old_attempts_since_cutover: r.old_attempts.saturating_sub(r.baseline.unwrap_or(0)),
                old_open: r.old_open,
                census_open: r.census_open,
                first_old_ms: r.first_old_ms,
                last_old_ms: r.last_old_ms,
                reached_new: reached.contains(&(*pid, *cgroup)),
            })
            .filter(|s| s.old_attempts_since_cutover + s.old_open + s.census_open > 0)
            .collect();
        let weight = |s: &Straggler| s.old_attempts_since_cutover + s.old_open + s.census_open;
        v.sort_by(|a, b| weight(b).cmp(&weight(a)).then(a.pid.cmp(&b.pid)));
        v.truncate(n);
        v
    }
}

/// The container or service unit a cgroup v2 path names: `nginx.service`, `docker:0123456789ab`,
/// `containerd:…`, `podman:…`; None for the root and for login sessions.
pub fn unit_of(cgroup_path: &str) -> Option<String> {
    let last = cgroup_path.trim_end_matches('/').rsplit('/').next()?;
    for (prefix, tag) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "crio"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = last.strip_prefix(prefix) {
            let id = id.trim_end_matches(".scope");
            return Some(format!("{tag}:{}", &id[..id.len().min(12)]));
        }
    }
    let unit =
        last.ends_with(".service") || (last.ends_with(".scope") && !last.starts_with("session-"));
    unit.then(|| last.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, old_attempts: u64, old_open: u64, new_attempts: u64) -> ProcSample {
        ProcSample {
            pid,
            comm: format!("p{pid}"),
            cgroup: 7,
            unit: None,
            old: Out {
                attempts: old_attempts,
                open: old_open,
                ..Default::default()
            },
            new: Out {
                attempts: new_attempts,
                ..Default::default()
            },
        }
    }

    #[test]
    fn ranked_by_old_use_since_cutover_with_contact_times() {
        let mut s = Stragglers::default();
        s.feed(1000, &[p(1, 100, 0, 0), p(2, 50, 0, 0)]);
        s.cutover();
        s.feed(2000, &[p(1, 100, 0, 10), p(2, 60, 1, 0), p(3, 5, 0, 0)]);
        s.feed(3000, &[p(1, 100, 0, 20), p(2, 80, 0, 0), p(3, 5, 0, 0)]);
        let top = s.top(10);
        assert_eq!(top.len(), 2, "pid 1 moved completely: {top:?}");
        assert_eq!((top[0].pid, top[0].old_attempts_since_cutover), (2, 30));
        assert_eq!(
            (top[0].first_old_ms, top[0].last_old_ms),
            (Some(1000), Some(3000))
        );
        assert!(!top[0].reached_new, "the cached-DNS-forever case");
        assert_eq!((top[1].pid, top[1].old_attempts_since_cutover), (3, 5));
        assert_eq!(top[1].last_old_ms, Some(2000));
    }

    #[test]
    fn census_owners_count_without_attempts() {
        let mut s = Stragglers::default();
        s.census(&[CensusOwner {
            pid: 9,
            comm: "java".into(),
            cgroup: 7,
            unit: Some("app.service".into()),
            old_open: 40,
        }]);
        s.cutover();
        let top = s.top(5);
        assert_eq!(
            (top[0].pid, top[0].census_open, top[0].first_old_ms),
            (9, 40, Some(0))
        );
        assert!(!top[0].reached_new);
        assert_eq!(top[0].unit.as_deref(), Some("app.service"));
        // A thread of the same process (its own comm) reaches the new side.
        let mut t = p(9, 0, 0, 3);
        t.comm = "java-worker".into();
        s.feed(1000, &[t]);
        assert!(s.top(5)[0].reached_new);
    }

    #[test]
    fn a_counter_reset_counts_anew() {
        let mut s = Stragglers::default();
        s.feed(1000, &[p(1, 100, 0, 0)]);
        s.cutover();
        s.feed(2000, &[p(1, 3, 0, 0)]);
        assert_eq!(s.top(1)[0].old_attempts_since_cutover, 3);
    }

    #[test]
    fn units_from_cgroup_paths() {
        let u = |p: &str| unit_of(p);
        assert_eq!(
            u("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            u("/system.slice/docker-0123456789abcdef.scope").as_deref(),
            Some("docker:0123456789ab")
        );
        assert_eq!(
            u("/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope").as_deref(),
            Some("containerd:abc")
        );
        assert_eq!(u("/user.slice/user-0.slice/session-3.scope"), None);
        assert_eq!(u("/"), None);
    }
}
