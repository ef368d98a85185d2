//! Stragglers: processes still using the old side after the cutover, ranked by old-side attempts
//! since the cutover plus open old connections, each with the layer that holds it (`causes`).
//! Owners of connections open before tracer started come from the census (mapped to a process
//! once at start) and count like any holder. Processes that moved are counted, not listed.

use std::collections::{BTreeMap, BTreeSet};

use super::causes::{self, Cause, Evidence};
use crate::model::{counters::Out, held::Held};

/// One process as a snapshot shows it: cumulative per-cohort counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
    /// Container or service unit, if the cgroup path names one.
    pub unit: Option<String>,
    pub old: Out,
    pub new: Out,
    /// Its open old-side connections, with when each was opened.
    pub held: Held,
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

/// A DNS answer naming an old-side address, received by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldAnswer {
    pub at_ms: u64,
    pub pid: u32,
    pub name: String,
    pub ttl_s: u32,
    /// `ip:port` of the resolver that sent it.
    pub resolver: String,
}

type Key = (u32, String, u64);

#[derive(Clone, Debug, Default)]
struct Row {
    unit: Option<String>,
    old_attempts: u64,
    old_open: u64,
    new_attempts: u64,
    new_open: u64,
    /// Old attempts when the cutover was marked (or when first seen after it).
    baseline: Option<u64>,
    census_open: u64,
    first_old_ms: Option<u64>,
    last_old_ms: Option<u64>,
    held: Held,
    /// Old attempts in intervals that began after cutover + TTL.
    fresh_after_ttl: u64,
    /// Of those, the ones no valid DNS answer naming old explains.
    unexplained: u64,
    /// The last interval with any activity (old or new), for pruning.
    last_active_ms: u64,
}

/// DNS answers naming old that one pid received.
#[derive(Clone, Debug, Default)]
struct PidDns {
    /// Received + TTL of the latest-expiring one.
    valid_until_ms: Option<u64>,
    last: Option<OldAnswer>,
    /// The last one after cutover + TTL.
    stale: Option<OldAnswer>,
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
    pub causes: Vec<Cause>,
    /// Open old connections opened before the cutover (None without a cutover).
    pub old_open_before_cutover: Option<u64>,
    /// Age of its oldest open old connection (a census one: at least the run's length).
    pub oldest_open_age_ms: Option<u64>,
    /// Old connects after cutover + TTL.
    pub fresh_old_after_ttl: u64,
    /// Its last DNS answer naming old.
    pub last_old_answer: Option<OldAnswer>,
    /// The resolver of its last stale answer (cause `stale_resolver`).
    pub stale_resolver: Option<String>,
}

impl Straggler {
    /// What a straggler without a cause is doing on old: (long, short) words.
    fn uncaused(&self) -> (&'static str, &'static str) {
        if self.old_open > 0 && self.fresh_old_after_ttl == 0 {
            ("holds old (opened after cutover)", "holds")
        } else if self.fresh_old_after_ttl > 0 {
            ("old answer still in TTL", "in ttl")
        } else {
            ("moving (within TTL)", "moving")
        }
    }

    /// Its causes for a person: `pinned+stale_resolver@127.0.0.54:53`; without a cause, what
    /// it is doing on old.
    pub fn why(&self, cutover: bool) -> String {
        if !cutover {
            return "-".into();
        }
        if self.causes.is_empty() {
            return self.uncaused().0.into();
        }
        let v: Vec<String> = self
            .causes
            .iter()
            .map(|c| match (c, &self.stale_resolver) {
                (Cause::StaleResolver, Some(r)) => format!("{}@{r}", c.as_str()),
                _ => c.as_str().to_string(),
            })
            .collect();
        v.join("+")
    }

    /// `why` for a narrow pane: `pin+cache`, `stale`, `holds`, `in ttl`, `moving`.
    pub fn why_short(&self, cutover: bool) -> String {
        if !cutover {
            return "-".into();
        }
        if self.causes.is_empty() {
            return self.uncaused().1.into();
        }
        let v: Vec<&str> = self.causes.iter().map(|c| c.short()).collect();
        v.join("+")
    }

    /// Pinned and nothing else: it makes no fresh connects to old, so only closing its pool
    /// ends it.
    pub fn only_pinned(&self) -> bool {
        self.causes == [Cause::Pinned] && self.fresh_old_after_ttl == 0
    }
}

/// Rows not active for this long, holding nothing and with no cause, are folded into counts.
const PRUNE_AFTER_MS: u64 = 300_000;
const PRUNE_AT_ROWS: usize = 20_000;

#[derive(Clone, Debug, Default)]
pub struct Stragglers {
    rows: BTreeMap<Key, Row>,
    dns: BTreeMap<u32, PidDns>,
    cut_ms: Option<u64>,
    ttl_ms: u64,
    /// The previous sample: the start of the interval being fed.
    last_ms: u64,
    /// Rows folded away that had reached the new side (they moved).
    pruned_moved: u64,
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
                r.old_open = r.old_open.max(o.old_open);
                r.held.before_start = r.held.before_start.max(o.old_open);
            }
        }
    }

    /// The grace after the cutover (the name's TTL).
    pub fn set_ttl(&mut self, ttl_ms: u64) {
        self.ttl_ms = ttl_ms;
    }

    /// From now on attempts count as "since the cutover".
    pub fn cutover(&mut self, at_ms: u64) {
        if self.cut_ms.is_none() {
            self.cut_ms = Some(at_ms);
            for r in self.rows.values_mut() {
                r.baseline = Some(r.old_attempts);
            }
        }
    }

    /// A DNS answer naming old (fed before the sample of the interval it arrived in).
    pub fn old_answer(&mut self, a: OldAnswer) {
        let d = self.dns.entry(a.pid).or_default();
        let until = a.at_ms + u64::from(a.ttl_s) * 1000;
        d.valid_until_ms = Some(d.valid_until_ms.map_or(until, |v| v.max(until)));
        if let Some(c) = self.cut_ms
            && a.at_ms > c + self.ttl_ms
        {
            d.stale = Some(a.clone());
        }
        d.last = Some(a);
    }

    pub fn feed(&mut self, at_ms: u64, procs: &[ProcSample]) {
        let start = self.last_ms;
        self.last_ms = at_ms;
        let mut seen = BTreeSet::new();
        for p in procs {
            let key = (p.pid, p.comm.clone(), p.cgroup);
            let r = self.rows.entry(key.clone()).or_default();
            seen.insert(key);
            // Counters only grow; a smaller value is a reset (eviction): count from it anew.
            let reset = p.old.attempts < r.old_attempts;
            if reset {
                r.baseline = r.baseline.map(|_| 0);
            }
            let attempted = if reset {
                p.old.attempts
            } else {
                p.old.attempts - r.old_attempts
            };
            if attempted > 0 || p.old.open > 0 {
                r.first_old_ms.get_or_insert(at_ms);
                r.last_old_ms = Some(at_ms);
            }
            if attempted > 0
                && let Some(c) = self.cut_ms
                && causes::after_ttl(start, c, self.ttl_ms)
            {
                r.fresh_after_ttl += attempted;
                let valid = self.dns.get(&p.pid).and_then(|d| d.valid_until_ms);
                if !causes::explained(start, valid) {
                    r.unexplained += attempted;
                }
            }
            if attempted > 0 || p.old.open > 0 || p.new.attempts > r.new_attempts {
                r.last_active_ms = at_ms;
            }
            if p.unit.is_some() {
                r.unit = p.unit.clone();
            }
            r.old_attempts = p.old.attempts;
            r.old_open = p.old.open;
            r.held = p.held.clone();
            r.new_attempts = r.new_attempts.max(p.new.attempts);
            r.new_open = p.new.open;
            if self.cut_ms.is_some() && r.baseline.is_none() {
                r.baseline = Some(0);
            }
        }
        // A process missing from the sample holds nothing now (holders are always listed).
        for (k, r) in self.rows.iter_mut() {
            if !seen.contains(k) {
                r.old_open = 0;
                r.new_open = 0;
                r.held = Held::default();
            }
        }
        if self.rows.len() > PRUNE_AT_ROWS {
            self.prune(at_ms);
        }
    }

    fn prune(&mut self, now_ms: u64) {
        let cut = self.cut_ms;
        let mut moved = 0;
        self.rows.retain(|_, r| {
            let idle = r.last_active_ms + PRUNE_AFTER_MS < now_ms;
            let keep = !idle || r.old_open > 0 || (cut.is_some() && r.fresh_after_ttl > 0);
            if !keep && r.new_attempts > 0 {
                moved += 1;
            }
            keep
        });
        self.pruned_moved += moved;
    }

    fn straggler(
        &self,
        (pid, comm, cgroup): &Key,
        r: &Row,
        reached: bool,
        now_ms: u64,
    ) -> Straggler {
        let dns = self.dns.get(pid);
        let stale = dns.and_then(|d| d.stale.as_ref());
        let before_cut = self.cut_ms.map(|c| r.held.opened_before(c));
        let evidence = Evidence {
            open_before_cutover: before_cut.unwrap_or(0),
            unexplained_fresh: r.unexplained,
            stale_answer: stale.is_some(),
        };
        Straggler {
            pid: *pid,
            comm: comm.clone(),
            cgroup: *cgroup,
            unit: r.unit.clone(),
            old_attempts_since_cutover: r.old_attempts.saturating_sub(r.baseline.unwrap_or(0)),
            old_open: r.old_open,
            census_open: r.census_open,
            first_old_ms: r.first_old_ms,
            last_old_ms: r.last_old_ms,
            reached_new: reached,
            causes: causes::causes(self.cut_ms.is_some(), &evidence),
            old_open_before_cutover: before_cut,
            oldest_open_age_ms: r.held.oldest_age_ms(now_ms),
            fresh_old_after_ttl: r.fresh_after_ttl,
            last_old_answer: dns.and_then(|d| d.last.clone()),
            stale_resolver: stale.map(|a| a.resolver.clone()),
        }
    }

    /// Every straggler, the heaviest first, and how many processes moved (on the new side and
    /// not straggling). Before a cutover: every process with old-side use since start. After
    /// it: those with a cause, open old connections, fresh old connects after the TTL, or old
    /// attempts in the last interval (still within the grace).
    pub fn all(&self, now_ms: u64) -> (Vec<Straggler>, u64) {
        // The kernel names a process by the comm of the thread that connected, the census by
        // the main thread's: the new side is reached if any row of the pid reached it.
        let reached: BTreeSet<(u32, u64)> = self
            .rows
            .iter()
            .filter(|(_, r)| r.new_attempts > 0 || r.new_open > 0)
            .map(|((pid, _, cg), _)| (*pid, *cg))
            .collect();
        let mut v = vec![];
        let mut moved = self.pruned_moved;
        for (k, r) in &self.rows {
            let s = self.straggler(k, r, reached.contains(&(k.0, k.2)), now_ms);
            let recent = r.last_old_ms.is_some_and(|t| t >= self.last_ms);
            let straggling = match self.cut_ms {
                None => s.old_attempts_since_cutover + s.old_open > 0,
                Some(_) => {
                    !s.causes.is_empty()
                        || s.old_open > 0
                        || s.fresh_old_after_ttl > 0
                        || (s.old_attempts_since_cutover > 0 && recent)
                }
            };
            if straggling {
                v.push(s);
            } else if r.new_attempts > 0 || r.new_open > 0 {
                moved += 1;
            }
        }
        let weight = |s: &Straggler| s.old_attempts_since_cutover + s.old_open;
        v.sort_by(|a, b| weight(b).cmp(&weight(a)).then(a.pid.cmp(&b.pid)));
        (v, moved)
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
            old: Out {
                attempts: old_attempts,
                open: old_open,
                ..Default::default()
            },
            new: Out {
                attempts: new_attempts,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// `p` holding `open` old connections, opened at these times (None: census).
    fn holding(pid: u32, old_attempts: u64, opened: &[Option<u64>]) -> ProcSample {
        let mut s = p(pid, old_attempts, opened.len() as u64, 0);
        for t in opened {
            s.held.add(*t, 1);
        }
        s.held.normalize();
        s
    }

    fn top(s: &Stragglers, now: u64) -> Vec<Straggler> {
        s.all(now).0
    }

    #[test]
    fn ranked_by_old_use_since_cutover_with_contact_times() {
        let mut s = Stragglers::default();
        s.feed(1000, &[p(1, 100, 0, 0), p(2, 50, 0, 0)]);
        s.cutover(1500);
        s.feed(2000, &[p(1, 100, 0, 10), p(2, 60, 1, 0), p(3, 5, 0, 0)]);
        s.feed(3000, &[p(1, 100, 0, 20), p(2, 80, 0, 0), p(3, 5, 0, 0)]);
        let (top, moved) = s.all(3000);
        assert_eq!(
            top.len(),
            1,
            "pid 1 moved, pid 3 stopped within the grace: {top:?}"
        );
        assert_eq!(moved, 1);
        assert_eq!((top[0].pid, top[0].old_attempts_since_cutover), (2, 30));
        assert_eq!(
            (top[0].first_old_ms, top[0].last_old_ms),
            (Some(1000), Some(3000))
        );
        assert!(!top[0].reached_new, "the cached-DNS-forever case");
        assert_eq!(top[0].causes, vec![Cause::DnsCache]);
        assert_eq!(top[0].fresh_old_after_ttl, 20);
    }

    #[test]
    fn census_owners_count_without_attempts_until_their_connections_close() {
        let mut s = Stragglers::default();
        s.census(&[CensusOwner {
            pid: 9,
            comm: "java".into(),
            cgroup: 7,
            unit: Some("app.service".into()),
            old_open: 4,
        }]);
        let mut java = holding(9, 0, &[None, None, None, None]);
        java.comm = "java".into();
        s.feed(1000, std::slice::from_ref(&java));
        s.cutover(1500);
        s.feed(2000, std::slice::from_ref(&java));
        s.feed(5000, std::slice::from_ref(&java));
        let t = top(&s, 5000);
        assert_eq!(
            (t[0].pid, t[0].census_open, t[0].old_open, t[0].first_old_ms),
            (9, 4, 4, Some(0))
        );
        assert_eq!(t[0].last_old_ms, Some(5000), "used until the last interval");
        assert_eq!(t[0].causes, vec![Cause::Pinned]);
        assert_eq!(t[0].old_open_before_cutover, Some(4));
        assert_eq!(t[0].oldest_open_age_ms, Some(5000));
        assert!(t[0].only_pinned());
        assert!(!t[0].reached_new);
        assert_eq!(t[0].unit.as_deref(), Some("app.service"));
        // A thread of the same process (its own comm) reaches the new side.
        let mut th = p(9, 0, 0, 3);
        th.comm = "java-worker".into();
        s.feed(6000, &[java.clone(), th]);
        assert!(top(&s, 6000)[0].reached_new);
        // Its connections close: it has moved.
        java.held = Held::default();
        java.old.open = 0;
        s.feed(7000, &[java]);
        let (t, moved) = s.all(7000);
        assert!(t.is_empty(), "{t:?}");
        assert_eq!(moved, 1);
    }

    #[test]
    fn pinned_counts_only_connections_from_before_the_cutover() {
        let mut s = Stragglers::default();
        s.feed(1000, &[holding(1, 2, &[Some(200), Some(900)])]);
        s.cutover(2000);
        // A third connection opened at 2.5 s, within the grace: held, not pinned for it.
        s.feed(3000, &[holding(1, 3, &[Some(200), Some(900), Some(2500)])]);
        let t = top(&s, 3000);
        assert_eq!(t[0].old_open_before_cutover, Some(2));
        assert_eq!(t[0].causes, vec![Cause::Pinned]);
        assert_eq!(t[0].oldest_open_age_ms, Some(2800));
        let mut s = Stragglers::default();
        s.cutover(0);
        s.feed(1000, &[holding(2, 1, &[Some(500)])]);
        let t = top(&s, 1000);
        assert!(t[0].causes.is_empty(), "opened after the cutover: {t:?}");
        assert_eq!(t[0].old_open, 1, "still listed: it holds old");
    }

    #[test]
    fn stale_resolver_and_dns_cache_are_told_apart_by_the_answers_seen() {
        let answer = |pid, at_ms, ttl_s| OldAnswer {
            at_ms,
            pid,
            name: "svc.test".into(),
            ttl_s,
            resolver: "127.0.0.54:53".into(),
        };
        let mut s = Stragglers::default();
        s.set_ttl(2000);
        s.feed(1000, &[p(1, 1, 0, 0), p(2, 1, 0, 0)]);
        s.cutover(1000);
        for (i, at) in (2000..=8000).step_by(1000).enumerate() {
            // pid 1 asks a stale resolver before every connect (TTL 2 s); pid 2 never asks.
            s.old_answer(answer(1, at - 500, 2));
            let n = i as u64 + 2;
            s.feed(at, &[p(1, n, 0, 0), p(2, n, 0, 0)]);
        }
        let t = top(&s, 8000);
        let by = |pid| t.iter().find(|x| x.pid == pid).unwrap();
        assert_eq!(by(1).causes, vec![Cause::StaleResolver]);
        assert_eq!(by(1).stale_resolver.as_deref(), Some("127.0.0.54:53"));
        assert_eq!(by(2).causes, vec![Cause::DnsCache]);
        assert_eq!(
            by(2).fresh_old_after_ttl,
            4,
            "intervals starting at 4..7 s are after cutover + TTL"
        );
        assert_eq!(by(1).fresh_old_after_ttl, 4);
    }

    #[test]
    fn an_answer_received_before_the_cutover_explains_connects_until_it_expires() {
        let mut s = Stragglers::default();
        s.old_answer(OldAnswer {
            at_ms: 500,
            pid: 1,
            name: "svc.test".into(),
            ttl_s: 5,
            resolver: "127.0.0.53:53".into(),
        });
        s.feed(1000, &[p(1, 1, 0, 0)]);
        s.cutover(1000);
        s.feed(2000, &[p(1, 2, 0, 0)]);
        s.feed(5000, &[p(1, 3, 0, 0)]);
        assert!(
            top(&s, 5000)[0].causes.is_empty(),
            "still within its 5 s TTL"
        );
        s.feed(7000, &[p(1, 4, 0, 0)]);
        assert!(
            top(&s, 7000)[0].causes.is_empty(),
            "began before it expired"
        );
        s.feed(8000, &[p(1, 5, 0, 0)]);
        assert_eq!(top(&s, 8000)[0].causes, vec![Cause::DnsCache]);
    }

    #[test]
    fn a_counter_reset_counts_anew() {
        let mut s = Stragglers::default();
        s.feed(1000, &[p(1, 100, 0, 0)]);
        s.cutover(1000);
        s.feed(2000, &[p(1, 3, 0, 0)]);
        assert_eq!(top(&s, 2000)[0].old_attempts_since_cutover, 3);
    }

    #[test]
    fn processes_that_moved_are_counted_and_never_push_stragglers_out() {
        let mut s = Stragglers::default();
        s.feed(1000, &[p(1, 5, 0, 0)]);
        s.cutover(1000);
        let mut procs: Vec<ProcSample> = (100..250).map(|pid| p(pid, 0, 0, 50)).collect();
        procs.push(p(1, 6, 0, 0));
        s.feed(2000, &procs);
        procs.last_mut().unwrap().old.attempts = 7;
        s.feed(3000, &procs);
        let (t, moved) = s.all(3000);
        assert_eq!(moved, 150);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].pid, 1);
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
