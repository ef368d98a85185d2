//! One run: the sampler and the sinks it feeds. Every sink (NDJSON, live view, metrics) sees the
//! same snapshots and events, in the same order, from the one sampler.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::{
    Fatal, analytics,
    kernel::{Hooks, sampler::Sampler},
    model::{
        analysis::{
            Analysis, Params, State,
            cutover::{CutoverAt, offset_ms},
            dns::Answer,
            stragglers::CensusOwner,
        },
        cohort::Cohort,
        reconcile::{self, Change, Policy, Trigger},
        snapshot::Snapshot,
        spec::Spec,
    },
};

/// What is fixed for the whole run (the meta line, the live view's header).
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub started_at: SystemTime,
    pub host: String,
    pub kernel: String,
    pub hooks: Hooks,
    pub old: Vec<Spec>,
    pub new: Vec<Spec>,
    pub ports: Vec<u16>,
    pub interval_ms: u64,
    pub max_destinations: u32,
    pub census_outbound: u64,
    pub census_inbound: u64,
    /// Rows of destinations and processes per snapshot (the analysis sees the same rows).
    pub top: usize,
    pub analysis: Params,
    /// Owners of the old-side connections found at start.
    pub census_owners: Vec<CensusOwner>,
    pub cutover_at: Option<CutoverAt>,
    pub watch_dns: Vec<String>,
    /// `--reconcile-every`: correct `open` from the socket table this often, not only on losses.
    pub reconcile_every: Option<std::time::Duration>,
}

/// Something that happened: a hook fallback, evictions, lost events, a cutover mark.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub at: SystemTime,
    pub elapsed_ms: u64,
    pub kind: String,
    /// Kind-specific fields (a JSON object), including a human `message` where useful.
    pub fields: Value,
}

/// A consumer of the run's data.
pub trait Sink {
    fn meta(&mut self, _info: &RunInfo) -> Result<(), Fatal> {
        Ok(())
    }
    /// The failover analysis and the watched DNS names after each sample, just before that
    /// sample's `snapshot` (the live view's header, the metrics' milestones). The NDJSON
    /// records the findings and DNS changes as events instead.
    fn analysis(&mut self, _state: &State, _dns: &[Answer]) -> Result<(), Fatal> {
        Ok(())
    }
    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot) -> Result<(), Fatal>;
    fn event(&mut self, ev: &Event) -> Result<(), Fatal>;
    fn summary(
        &mut self,
        last: &Snapshot,
        first: &Snapshot,
        reason: &str,
        snapshots: u64,
    ) -> Result<(), Fatal>;
}

pub struct Session {
    sampler: Sampler,
    sinks: Vec<Box<dyn Sink>>,
    pub info: RunInfo,
    pub first: Snapshot,
    pub last: Snapshot,
    pub snapshots: u64,
    reported_evicted: u64,
    reported_lost: u64,
    /// Cutover, threshold, gap and drain analysis: its `state()` is what a view shows.
    pub analysis: Analysis,
    /// A `--cutover-at` time still in the future.
    pending_cutover: Option<SystemTime>,
    /// `--watch-dns` names with their current answer and TTL (for the header of a view).
    pub dns: Vec<Answer>,
    /// When `open` is next reconciled with the kernel's socket table.
    reconcile: Policy,
}

impl Session {
    /// Takes the first (baseline) sample and announces the run to every sink.
    pub fn new(sampler: Sampler, info: RunInfo, sinks: Vec<Box<dyn Sink>>) -> Result<Self, Fatal> {
        let first = sampler.sample()?;
        let info_every = info.reconcile_every;
        let mut analysis = Analysis::new(info.analysis);
        analysis.census(&info.census_owners);
        let mut s = Session {
            sampler,
            sinks,
            info,
            last: first.clone(),
            first,
            snapshots: 0,
            reported_evicted: 0,
            reported_lost: 0,
            analysis,
            pending_cutover: None,
            dns: vec![],
            reconcile: Policy::new(info_every, reconcile::MIN_GAP),
        };
        for sink in &mut s.sinks {
            sink.meta(&s.info)?;
        }
        for (hook, why) in s.info.hooks.fallbacks.clone() {
            let using = s.info.hooks.connect.name();
            s.event(
                "hook_fallback",
                json!({"hook": hook.name(), "reason": why, "using": using}),
            )?;
        }
        if s.info.hooks.tracefs_mounted {
            s.event(
                "tracefs_mounted",
                json!({"path": crate::kernel::tracefs::TRACEFS}),
            )?;
        }
        if let Err(why) = s.info.hooks.unsent.clone() {
            s.event("unsent_not_counted", json!({"reason": why}))?;
        }
        if let Err(why) = s.info.hooks.dns.clone() {
            s.event("dns_not_captured", json!({"reason": why}))?;
        }
        s.dns_answers(&s.first.dns_answers.clone())?;
        match s.info.cutover_at {
            Some(CutoverAt::Now) => s.event("cutover", json!({"source": "flag"}))?,
            Some(CutoverAt::At(t)) => {
                s.pending_cutover = Some(t);
                s.cutover_due(SystemTime::now())?;
            }
            None => {}
        }
        Ok(s)
    }

    /// New address sets while running (a DNS change); the kernel's trie is updated apart.
    pub fn set_sets(&mut self, sets: crate::model::cohort::Sets) {
        self.sampler.set_sets(sets);
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.elapsed_ms(SystemTime::now())
    }

    fn elapsed_ms(&self, at: SystemTime) -> u64 {
        offset_ms(self.info.started_at, at)
    }

    /// Record an event and hand it to every sink. A `cutover` event (from `--cutover-at`, the
    /// live view's `c` key or a DNS change) also marks the cutover in the analysis.
    pub fn event(&mut self, kind: &str, fields: Value) -> Result<(), Fatal> {
        let now = SystemTime::now();
        self.event_at(kind, fields, now, self.elapsed_ms(now))
    }

    /// An event that happened at `elapsed_ms` (e.g. a cutover at the moment of a DNS change).
    pub fn event_dated(&mut self, kind: &str, fields: Value, elapsed_ms: u64) -> Result<(), Fatal> {
        let at = self.info.started_at + std::time::Duration::from_millis(elapsed_ms);
        self.event_at(kind, fields, at, elapsed_ms)
    }

    fn event_at(
        &mut self,
        kind: &str,
        fields: Value,
        at: SystemTime,
        elapsed_ms: u64,
    ) -> Result<(), Fatal> {
        let ev = Event {
            at,
            elapsed_ms,
            kind: kind.into(),
            fields,
        };
        for sink in &mut self.sinks {
            sink.event(&ev)?;
        }
        if kind == "cutover" {
            let source = ev.fields["source"].as_str().unwrap_or("event");
            let findings = self.analysis.mark_cutover(elapsed_ms, source);
            for f in findings {
                let (kind, fields) = analytics::finding_event(&f);
                self.event_at(kind, fields, at, elapsed_ms)?;
            }
        }
        Ok(())
    }

    /// A `--cutover-at` time that has come: record it, dated at the time given.
    fn cutover_due(&mut self, now: SystemTime) -> Result<(), Fatal> {
        if let Some(t) = self.pending_cutover.filter(|t| *t <= now) {
            self.pending_cutover = None;
            let fields = json!({"source": "flag", "at": crate::ndjson::rfc3339(t)});
            self.event_at("cutover", fields, t, self.elapsed_ms(t))?;
        }
        Ok(())
    }

    /// Sample once and feed the snapshot, and the events it implies, to every sink.
    pub fn tick(&mut self) -> Result<(), Fatal> {
        let mut cur = self.sampler.sample()?;
        let reconciled = self.reconcile_if_due(&mut cur);
        let sample = analytics::sample_of(&cur, &self.last, self.info.top);
        let findings = self.analysis.feed(sample);
        let state = self.analysis.state();
        for sink in &mut self.sinks {
            sink.analysis(&state, &self.dns)?;
            sink.snapshot(&cur, &self.last)?;
        }
        let at = cur.at;
        self.last = cur;
        self.snapshots += 1;
        for f in findings {
            let (kind, fields) = analytics::finding_event(&f);
            self.event_at(kind, fields, at, self.last.elapsed.as_millis() as u64)?;
        }
        self.cutover_due(at)?;
        self.dns_answers(&self.last.dns_answers.clone())?;
        let ev = self.last.evicted.destinations;
        if ev > self.reported_evicted {
            self.event(
                "evicted",
                json!({"destinations": ev, "message": "per-destination map full: least recently used destinations evicted; cohort totals stay exact (raise --max-destinations)"}),
            )?;
            self.reported_evicted = ev;
        }
        let lost = self.last.lost_events;
        if lost > self.reported_lost {
            self.event(
                "lost_events",
                json!({"lost_events": lost, "message": "the kernel skipped BPF program runs (recursion on one CPU); counts may be short by this many events"}),
            )?;
            self.reported_lost = lost;
        }
        match reconciled {
            Some((trigger, Ok(ch))) if trigger != Trigger::Every || !ch.is_zero() => {
                let fields = self.reconciled_fields(trigger, &ch);
                self.event("reconciled", fields)?;
            }
            Some((trigger, Err(e))) => self.event(
                "reconcile_failed",
                json!({"trigger": trigger.name(), "reason": e,
                       "message": format!("cannot check open against the socket table: {e}")}),
            )?,
            _ => {}
        }
        Ok(())
    }

    /// One `dns_answer` event per answer, dated when it arrived.
    fn dns_answers(
        &mut self,
        answers: &[crate::model::dns_seen::DnsAnswerSeen],
    ) -> Result<(), Fatal> {
        for a in answers {
            let (kind, fields) = crate::dns_answer::event(a);
            self.event_at(kind, fields, a.at, self.elapsed_ms(a.at))?;
        }
        Ok(())
    }

    /// Take a census right after `cur` was sampled when losses or `--reconcile-every` call
    /// for it, and correct `cur` (and later snapshots). Traffic between the sample and the
    /// census is bounded by a second sample, so it is not mistaken for an error.
    fn reconcile_if_due(
        &mut self,
        cur: &mut Snapshot,
    ) -> Option<(Trigger, Result<Change, String>)> {
        let (lost, failed) = (cur.lost_events, cur.sock_insert_failed);
        let trigger = self.reconcile.due(cur.elapsed, lost, failed)?;
        self.reconcile.done(cur.elapsed, lost, failed);
        let result = crate::kernel::census_now(&self.info.ports)
            .and_then(|real| self.sampler.reconcile(cur, &real));
        Some((trigger, result))
    }

    /// The `reconciled` event: how much `open` moved per cohort, and the corrections in effect.
    fn reconciled_fields(&self, trigger: Trigger, ch: &Change) -> Value {
        let per = |v: [i64; 3]| {
            json!({"old": v[Cohort::Old as usize], "new": v[Cohort::New as usize],
                   "other": v[Cohort::Other as usize]})
        };
        let (off_out, off_in) = self.sampler.cohort_offsets();
        json!({
            "trigger": trigger.name(), "outbound": per(ch.out), "inbound": per(ch.inb),
            "addresses": ch.addresses,
            "offset": {"outbound": per(off_out), "inbound": per(off_in)},
            "message": "open corrected from the kernel's socket table (sock_diag): closes or connects the BPF programs missed",
        })
    }

    /// Final sample and summary to every sink.
    pub fn finish(&mut self, reason: &str) -> Result<(), Fatal> {
        // The analysis as it stands, the same object `tracer report --json` computes.
        let state = analytics::state_json(&self.analysis.state());
        self.event("analysis", state)?;
        self.last = self.sampler.sample()?;
        self.dns_answers(&self.last.dns_answers.clone())?;
        for sink in &mut self.sinks {
            sink.summary(&self.last, &self.first, reason, self.snapshots)?;
        }
        Ok(())
    }
}
