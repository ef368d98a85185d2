//! Failover analytics: a state machine fed with successive samples (one per snapshot) and
//! cutover marks, yielding findings (threshold crossings, gaps, drain verdicts) and a current
//! state for display. The live run and `tracer report` feed it the same data (what the NDJSON
//! snapshot lines hold), so both give the same numbers.

pub mod causes;
pub mod cutover;
pub mod dns;
pub mod drain;
pub mod gap;
pub mod stragglers;

use super::{cohort::Cohort, counters::Out, ranked::Ranked, snapshot::Snapshot};
use cutover::{Cutover, CutoverSource};
use drain::{Drain, Estimate};
use gap::{Crossing, Metric, Tracker};
use stragglers::{CensusOwner, OldAnswer, ProcSample, Straggler, Stragglers};

/// Settings of the analysis (recorded in the meta line so a report uses the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Percent of the new side's share that declares the move (`--threshold`).
    pub threshold: u32,
    /// Quiet time after which the old side is drained (`--quiet-for`).
    pub quiet_for_ms: u64,
    /// The grace after the cutover before old connects count against a process (`--ttl`;
    /// else the watched name's TTL at its change; else 0).
    pub ttl_ms: Option<u64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            threshold: 95,
            quiet_for_ms: 60_000,
            ttl_ms: None,
        }
    }
}

impl Params {
    /// The threshold and 99 %, each reported.
    pub fn levels(&self) -> Vec<u32> {
        let mut v = vec![self.threshold, 99];
        v.sort();
        v.dedup();
        v
    }
}

/// What one snapshot tells the analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub elapsed_ms: u64,
    pub old: Out,
    pub new: Out,
    /// Attempts during the interval (the snapshot's `delta.attempts`).
    pub old_attempts: u64,
    pub new_attempts: u64,
    pub processes: Vec<ProcSample>,
    /// Old-side destinations of the snapshot, busiest first.
    pub old_destinations: Vec<(String, Out)>,
}

impl Sample {
    /// What a live snapshot tells the analysis, limited to the `top` rows the NDJSON line
    /// records (so a replay of the recording sees the same).
    #[cfg(test)]
    pub fn of(cur: &Snapshot, prev: &Snapshot, top: usize) -> Sample {
        Self::from_ranked(cur, prev, &Ranked::of(cur, Some(prev), top))
    }

    /// The same from rankings made once for every reader of the snapshot.
    pub fn from_ranked(cur: &Snapshot, prev: &Snapshot, ranked: &Ranked) -> Sample {
        let (old, new) = (cur.cohort_out(Cohort::Old), cur.cohort_out(Cohort::New));
        let processes = ranked
            .processes
            .iter()
            .map(|p| ProcSample {
                unit: cur.units.get(&p.pid).cloned(),
                pid: p.pid,
                comm: p.comm.to_string(),
                cgroup: p.cgroup,
                old: *p.cohort(Cohort::Old),
                new: *p.cohort(Cohort::New),
                held: p.held.clone(),
            })
            .collect();
        let old_destinations = ranked
            .destinations
            .iter()
            .filter(|r| r.cohort == Cohort::Old)
            .map(|r| (r.addr.to_string(), r.out))
            .collect();
        Sample {
            elapsed_ms: cur.elapsed.as_millis() as u64,
            old: *old,
            new: *new,
            old_attempts: old.delta(prev.cohort_out(Cohort::Old)).attempts,
            new_attempts: new.delta(prev.cohort_out(Cohort::New)).attempts,
            processes,
            old_destinations,
        }
    }
}

/// Something the analysis decided, to be recorded as an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// A level reached or lost; `gap_ms` from the cutover when one is known.
    Threshold {
        metric: Metric,
        level: u32,
        change: gap::Crossed,
        gap_ms: Option<i64>,
    },
    /// The declaration gap became known (at a crossing after the cutover, or at a cutover
    /// after the crossing). Negative: the traffic moved before the move was declared.
    Gap {
        metric: Metric,
        level: u32,
        reached_ms: u64,
        gap_ms: i64,
    },
    Drain(drain::DrainChange),
}

/// One metric at one level, for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapState {
    pub metric: Metric,
    pub level: u32,
    /// The crossing in effect (reached and held).
    pub holding: Option<Crossing>,
    /// The last crossing that was lost again, if not holding.
    pub lost: Option<Crossing>,
    /// Gap of the crossing in effect, if there is a cutover.
    pub gap_ms: Option<i64>,
    /// Time since the cutover while the level is not held (the gap running).
    pub running_ms: Option<u64>,
}

/// A process whose pinned connections are all that keeps the old side open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedBy {
    pub pid: u32,
    pub comm: String,
    pub old_open: u64,
    pub oldest_open_age_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainState {
    /// Quiet since this time (ms since start), if drained.
    pub drained_since: Option<u64>,
    pub old_open: u64,
    pub attempts_last_minute: u64,
    pub quiet_for_ms: u64,
    pub last_busy_ms: u64,
    pub estimate: Estimate,
    /// Pinned processes holding old connections and making no fresh connects there.
    pub pinned_by: Vec<PinnedBy>,
}

impl DrainState {
    /// `held by nginx (pid 12, 4 open, oldest 5m02s), bash (pid 9, 1 open, from before start)`.
    pub fn pinned_text(&self, now_ms: u64) -> String {
        let who: Vec<String> = self
            .pinned_by
            .iter()
            .map(|p| {
                let age = match p.oldest_open_age_ms {
                    Some(a) if a >= now_ms => "from before start".to_string(),
                    Some(a) => format!("oldest {}", age(a)),
                    None => "age unknown".into(),
                };
                format!("{} (pid {}, {} open, {age})", p.comm, p.pid, p.old_open)
            })
            .collect();
        format!("held by {}", who.join(", "))
    }
}

/// `42s`, `5m02s`, `3h04m`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The analysis as plain data, for the live view and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub now_ms: u64,
    pub cutover: Option<Cutover>,
    /// New-side share of attempts in the last interval, and of open connections, per mille.
    pub share_attempts: Option<u32>,
    pub share_open: Option<u32>,
    pub gaps: Vec<GapState>,
    pub drain: DrainState,
    /// The `TOP` heaviest stragglers, and how many there are in all.
    pub stragglers: Vec<Straggler>,
    pub stragglers_total: usize,
    /// Stragglers per cause, in the order of `Cause::ALL`.
    pub per_cause: [usize; 3],
    /// (pid, comm, cgroup, causes) of every straggler with a cause.
    pub causes: Vec<(u32, String, u64, Vec<causes::Cause>)>,
    /// Processes on the new side and not straggling.
    pub moved: u64,
    /// The grace after the cutover in use, and where it came from.
    pub ttl_ms: u64,
    pub ttl_source: TtlSource,
    pub old_destinations: Vec<(String, Out)>,
}

/// Where the TTL of the analysis came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlSource {
    /// `--ttl`.
    Flag,
    /// The watched name's TTL at its change.
    Dns,
    /// Neither: 0 (each process gets one interval of grace).
    Unknown,
}

impl TtlSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TtlSource::Flag => "flag",
            TtlSource::Dns => "dns",
            TtlSource::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Analysis {
    pub cutover: Option<Cutover>,
    trackers: Vec<Tracker>,
    drain: Drain,
    stragglers: Stragglers,
    last: Sample,
    ttl: (u64, TtlSource),
}

/// No old attempts for this long, and only pinned connections open: it will not drain.
pub const PINNED_QUIET_MS: u64 = 5_000;

/// Rows of stragglers and destinations kept in the state.
pub const TOP: usize = 10;

impl Analysis {
    pub fn new(params: Params) -> Self {
        let mut trackers = vec![];
        for metric in [Metric::Attempts, Metric::Open] {
            for level in params.levels() {
                trackers.push(Tracker::new(metric, level));
            }
        }
        let mut stragglers = Stragglers::default();
        let ttl = match params.ttl_ms {
            Some(t) => (t, TtlSource::Flag),
            None => (0, TtlSource::Unknown),
        };
        stragglers.set_ttl(ttl.0);
        Analysis {
            cutover: None,
            trackers,
            drain: Drain::new(params.quiet_for_ms),
            stragglers,
            last: Sample::default(),
            ttl,
        }
    }

    /// The watched name's TTL, seen at its change: the grace, unless `--ttl` set one.
    pub fn dns_ttl(&mut self, ttl_s: u32) {
        if self.ttl.1 == TtlSource::Unknown {
            self.ttl = (u64::from(ttl_s) * 1000, TtlSource::Dns);
            self.stragglers.set_ttl(self.ttl.0);
        }
    }

    /// A DNS answer naming the old side that a process received; fed before the snapshot of
    /// the interval it arrived in.
    pub fn old_answer(&mut self, a: OldAnswer) {
        self.stragglers.old_answer(a);
    }

    pub fn census(&mut self, owners: &[CensusOwner]) {
        self.stragglers.census(owners);
    }

    fn gap(&self, c: &Crossing) -> Option<i64> {
        self.cutover
            .as_ref()
            .map(|k| c.reached_ms as i64 - k.at_ms as i64)
    }

    /// Mark the cutover; only the first mark counts. Crossings already held get their gap.
    pub fn mark_cutover(&mut self, at_ms: u64, source: CutoverSource) -> Vec<Finding> {
        if self.cutover.is_some() {
            return vec![];
        }
        self.cutover = Some(Cutover { at_ms, source });
        self.stragglers.cutover(at_ms);
        self.trackers
            .iter()
            .filter_map(|t| {
                let c = t.holding()?;
                Some(Finding::Gap {
                    metric: t.metric,
                    level: t.level,
                    reached_ms: c.reached_ms,
                    gap_ms: self.gap(c)?,
                })
            })
            .collect()
    }

    /// Feed the next snapshot.
    pub fn feed(&mut self, s: Sample) -> Vec<Finding> {
        let at = s.elapsed_ms;
        let mut out = vec![];
        for i in 0..self.trackers.len() {
            let t = &mut self.trackers[i];
            let change = match t.metric {
                Metric::Attempts => t.feed(at, s.old_attempts, s.new_attempts),
                Metric::Open => t.feed(at, s.old.open, s.new.open),
            };
            let Some(change) = change else { continue };
            let (metric, level) = (t.metric, t.level);
            let (gap::Crossed::Reached(c) | gap::Crossed::Lost(c)) = change;
            let gap_ms = self.gap(&c);
            out.push(Finding::Threshold {
                metric,
                level,
                change,
                gap_ms,
            });
            if let (gap::Crossed::Reached(c), Some(gap_ms)) = (change, gap_ms) {
                out.push(Finding::Gap {
                    metric,
                    level,
                    reached_ms: c.reached_ms,
                    gap_ms,
                });
            }
        }
        if let Some(c) = self.drain.feed(at, s.old.open, s.old_attempts) {
            out.push(Finding::Drain(c));
        }
        self.stragglers.feed(at, &s.processes);
        self.last = s;
        out
    }

    pub fn drained(&self) -> bool {
        self.drain.drained_since.is_some()
    }

    /// The drain verdict; when all that is open on old is held by pinned processes that make
    /// no fresh connects there, it will not drain by itself: no decay estimate, the holders named.
    fn drain_state(&self, stragglers: &[Straggler]) -> DrainState {
        let pinned_by: Vec<PinnedBy> = stragglers
            .iter()
            .filter(|s| s.only_pinned() && s.old_open > 0)
            .map(|s| PinnedBy {
                pid: s.pid,
                comm: s.comm.clone(),
                old_open: s.old_open,
                oldest_open_age_ms: s.oldest_open_age_ms,
            })
            .collect();
        let open = self.drain.open();
        let held: u64 = pinned_by.iter().map(|p| p.old_open).sum();
        let mut estimate = self.drain.estimate();
        if self.drain.drained_since.is_none()
            && open > 0
            && held >= open
            && self.drain.attempts_within(PINNED_QUIET_MS) == 0
        {
            estimate = Estimate::Pinned;
        }
        DrainState {
            drained_since: self.drain.drained_since,
            old_open: open,
            attempts_last_minute: self.drain.attempts_last_minute(),
            quiet_for_ms: self.drain.quiet_for_ms,
            last_busy_ms: self.drain.last_busy_ms,
            estimate,
            pinned_by,
        }
    }

    pub fn state(&self) -> State {
        let now = self.last.elapsed_ms;
        let (stragglers, moved) = self.stragglers.all(now);
        let gaps = self
            .trackers
            .iter()
            .map(|t| {
                let holding = t.holding().copied();
                GapState {
                    metric: t.metric,
                    level: t.level,
                    holding,
                    lost: if holding.is_none() {
                        t.crossings.last().copied()
                    } else {
                        None
                    },
                    gap_ms: holding.as_ref().and_then(|c| self.gap(c)),
                    running_ms: match (&self.cutover, holding) {
                        (Some(k), None) => Some(now.saturating_sub(k.at_ms)),
                        _ => None,
                    },
                }
            })
            .collect();
        State {
            now_ms: now,
            cutover: self.cutover.clone(),
            share_attempts: gap::share_permille(self.last.old_attempts, self.last.new_attempts),
            share_open: gap::share_permille(self.last.old.open, self.last.new.open),
            gaps,
            drain: self.drain_state(&stragglers),
            stragglers_total: stragglers.len(),
            causes: stragglers
                .iter()
                .filter(|s| !s.causes.is_empty())
                .map(|s| (s.pid, s.comm.clone(), s.cgroup, s.causes.clone()))
                .collect(),
            per_cause: causes::Cause::ALL
                .map(|c| stragglers.iter().filter(|s| s.causes.contains(&c)).count()),
            stragglers: stragglers.into_iter().take(TOP).collect(),
            moved,
            ttl_ms: self.ttl.0,
            ttl_source: self.ttl.1,
            old_destinations: self
                .last
                .old_destinations
                .iter()
                .take(TOP)
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
