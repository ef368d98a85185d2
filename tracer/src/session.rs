//! One run: a source of snapshots and the sinks it feeds. Every sink (NDJSON, live view,
//! metrics) sees the same snapshots and typed events, in the same order. The session holds the
//! run's event logic (cutover marks, findings, evictions, losses, reconciliation); its source is
//! a trait, so that logic is tested with a fake source, without root or a kernel.

use std::time::{Duration, SystemTime};

use crate::{
    error::{Error, Result},
    model::{
        addr::Prefix,
        analysis::{
            Analysis, Sample,
            cutover::{CutoverAt, CutoverSource, offset_ms},
            dns::{Answer, AnswerChange},
        },
        process::{self, Process},
        ranked::Ranked,
        reconcile::{self, Correction, Policy, Trigger},
        resolvers::DnsVia,
        snapshot::Snapshot,
    },
    sink::{EndReason, Event, EventKind, RunInfo, Sink},
};

/// Where snapshots come from: the kernel's maps in a real run, a script in tests.
pub trait Source {
    /// Read every counter now. An error here is a runtime failure, not the user's to fix.
    fn sample(&mut self) -> Result<Snapshot, String>;
    /// Take a census of the kernel's socket table and correct `cur` (and later snapshots)
    /// by what the programs missed.
    fn reconcile(&mut self, cur: &mut Snapshot) -> Result<Correction, String>;
    /// The corrections in effect per cohort (outbound, inbound).
    fn offsets(&self) -> ([i64; 3], [i64; 3]);
    /// Count these prefixes as the new side from now on (a DNS change without --old/--new).
    fn add_to_new(&mut self, prefixes: &[Prefix]) -> Result<(), String>;
    /// A snapshot no one reads any more: its buffers may be reused by the next `sample` (at
    /// 60k destinations a fresh ~10 MiB per interval is a page fault per 4 KiB).
    fn recycle(&mut self, _old: Snapshot) {}
}

pub struct Session {
    source: Box<dyn Source>,
    sinks: Vec<Box<dyn Sink>>,
    pub info: RunInfo,
    pub first: Snapshot,
    pub last: Snapshot,
    /// `last`'s processes aggregated (made for its rankings, kept for the next interval's).
    last_processes: Vec<Process>,
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
    pub fn new(
        mut source: Box<dyn Source>,
        info: RunInfo,
        sinks: Vec<Box<dyn Sink>>,
        dns: Vec<Answer>,
    ) -> Result<Self> {
        let first = source.sample().map_err(Error::runtime)?;
        let info_every = info.reconcile_every;
        let mut analysis = Analysis::new(info.analysis);
        analysis.census(&info.census_owners);
        let mut s = Session {
            source,
            sinks,
            info,
            last: first.clone(),
            last_processes: process::aggregate(&first.processes),
            first,
            snapshots: 0,
            reported_evicted: 0,
            reported_lost: 0,
            analysis,
            pending_cutover: None,
            dns,
            reconcile: Policy::new(info_every, reconcile::MIN_GAP),
        };
        for sink in &mut s.sinks {
            sink.meta(&s.info)?;
        }
        let hooks = s.info.hooks.clone();
        for (hook, reason) in hooks.fallbacks {
            s.event(EventKind::HookFallback {
                hook,
                reason,
                using: hooks.connect,
            })?;
        }
        if hooks.tracefs_mounted {
            s.event(EventKind::TracefsMounted {
                path: crate::kernel::tracefs::TRACEFS.into(),
            })?;
        }
        if let Err(reason) = hooks.unsent {
            s.event(EventKind::UnsentNotCounted { reason })?;
        }
        if let Err(reason) = hooks.dns {
            s.event(EventKind::DnsNotCaptured { reason })?;
        }
        s.dns_answers(s.first.dns_answers.clone())?;
        match s.info.cutover_at {
            Some(CutoverAt::Now) => {
                s.mark_cutover(CutoverSource::Flag, SystemTime::now(), None)?;
            }
            Some(CutoverAt::At(t)) => {
                s.pending_cutover = Some(t);
                s.cutover_due(SystemTime::now())?;
            }
            None => {}
        }
        s.publish_analysis()?;
        Ok(s)
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        offset_ms(self.info.started_at, SystemTime::now())
    }

    /// Hand an event, dated now, to every sink.
    pub fn event(&mut self, kind: EventKind) -> Result<()> {
        self.event_at(kind, SystemTime::now())
    }

    fn event_at(&mut self, kind: EventKind, at: SystemTime) -> Result<()> {
        let ev = Event {
            at,
            elapsed_ms: offset_ms(self.info.started_at, at),
            kind,
        };
        for sink in &mut self.sinks {
            sink.event(&ev)?;
        }
        Ok(())
    }

    /// The one way a cutover is marked (the `c` key, `--cutover-at`, a DNS change): the first
    /// mark wins; later ones are ignored and return false, so one move has one cutover event.
    /// The gaps it settles are recorded, and every sink sees the new analysis at once.
    pub fn mark_cutover(
        &mut self,
        source: CutoverSource,
        at: SystemTime,
        name: Option<String>,
    ) -> Result<bool> {
        if self.analysis.cutover.is_some() {
            return Ok(false);
        }
        // A mark before a `--cutover-at` still to come replaces it.
        self.pending_cutover = None;
        let at_ms = offset_ms(self.info.started_at, at);
        self.event_at(EventKind::Cutover { source, name }, at)?;
        for f in self.analysis.mark_cutover(at_ms, source) {
            self.event_at(EventKind::Finding(f), at)?;
        }
        self.publish_analysis()?;
        Ok(true)
    }

    /// The analysis and DNS answers as they stand, to every sink.
    fn publish_analysis(&mut self) -> Result<()> {
        let state = self.analysis.state();
        for sink in &mut self.sinks {
            sink.analysis(&state, &self.dns)?;
        }
        Ok(())
    }

    /// A `--cutover-at` time that has come: record it, dated at the time given.
    fn cutover_due(&mut self, now: SystemTime) -> Result<()> {
        if let Some(t) = self.pending_cutover.filter(|t| *t <= now) {
            self.pending_cutover = None;
            self.mark_cutover(CutoverSource::Flag, t, None)?;
        }
        Ok(())
    }

    /// A watched name's answer changed at `change.at_ms`: record it; without --old/--new its
    /// new addresses become the new side; the first change is the cutover unless one is known
    /// or `--cutover-at` was given.
    #[cfg(test)]
    pub fn dns_change(&mut self, change: AnswerChange, added_to_new: Vec<Prefix>) -> Result<()> {
        self.dns_change_via(change, DnsVia::system(), added_to_new)
    }

    /// The same, seen at one server (`--dns-server`): the event names it and its lag.
    pub fn dns_change_via(
        &mut self,
        change: AnswerChange,
        via: DnsVia,
        added_to_new: Vec<Prefix>,
    ) -> Result<()> {
        if !added_to_new.is_empty() {
            self.source
                .add_to_new(&added_to_new)
                .map_err(Error::runtime)?;
        }
        let at = self.info.started_at + Duration::from_millis(change.at_ms);
        let name = change.name.clone();
        let long_ttl = change.ttl > crate::model::analysis::dns::LONG_TTL_S;
        let ttl = change.ttl;
        self.event_at(
            EventKind::DnsChange {
                change,
                long_ttl,
                added_to_new,
                via,
            },
            at,
        )?;
        self.analysis.dns_ttl(ttl);
        if self.info.cutover_at.is_none() {
            self.mark_cutover(CutoverSource::Dns, at, Some(name))?;
        }
        Ok(())
    }

    /// New answers of the watched names (changed or not), for the views.
    pub fn set_dns(&mut self, answers: Vec<Answer>) -> Result<()> {
        if answers != self.dns {
            self.dns = answers;
            self.publish_analysis()?;
        }
        Ok(())
    }

    /// Sample once and feed the snapshot, and the events it implies, to every sink.
    pub fn tick(&mut self) -> Result<()> {
        let mut cur = self.source.sample().map_err(Error::runtime)?;
        let reconciled = self.reconcile_if_due(&mut cur);
        // The answers arrived before the snapshot was read: recorded, and fed, before it.
        self.dns_answers(std::mem::take(&mut cur.dns_answers))?;
        // Aggregated and ranked once: the analysis and every sink read the same rankings.
        let all = process::aggregate(&cur.processes);
        let ranked =
            Ranked::from_aggregates(&cur, all.clone(), Some(&self.last_processes), self.info.top);
        let sample = Sample::from_ranked(&cur, &self.last, &ranked);
        let findings = self.analysis.feed(sample);
        let state = self.analysis.state();
        for sink in &mut self.sinks {
            sink.analysis(&state, &self.dns)?;
            sink.snapshot(&cur, &self.last, &ranked)?;
        }
        drop(ranked);
        let at = cur.at;
        let old = std::mem::replace(&mut self.last, cur);
        self.source.recycle(old);
        self.last_processes = all;
        self.snapshots += 1;
        for f in findings {
            self.event_at(EventKind::Finding(f), at)?;
        }
        self.cutover_due(at)?;
        let destinations = self.last.evicted.destinations;
        if destinations > self.reported_evicted {
            self.event(EventKind::Evicted { destinations })?;
            self.reported_evicted = destinations;
        }
        let lost = self.last.lost_events;
        if lost > self.reported_lost {
            self.event(EventKind::LostEvents { lost })?;
            self.reported_lost = lost;
        }
        match reconciled {
            Some((trigger, Ok(change))) if trigger != Trigger::Every || !change.is_zero() => {
                let offset = self.source.offsets();
                self.event(EventKind::Reconciled {
                    trigger,
                    change,
                    offset,
                })?;
            }
            Some((trigger, Err(reason))) => {
                self.event(EventKind::ReconcileFailed { trigger, reason })?
            }
            _ => {}
        }
        Ok(())
    }

    /// One `dns_answer` event per answer, dated when it arrived; those naming old go to the
    /// analysis (what tells a stale resolver from an in-process cache).
    fn dns_answers(&mut self, answers: Vec<crate::model::dns_seen::DnsAnswerSeen>) -> Result<()> {
        for a in answers {
            let at = a.at;
            if let Some(o) = crate::dns_answer::old_answer(&a, offset_ms(self.info.started_at, at))
            {
                self.analysis.old_answer(o);
            }
            self.event_at(EventKind::DnsAnswer(Box::new(a)), at)?;
        }
        Ok(())
    }

    /// Take a census right after `cur` was sampled when losses or `--reconcile-every` call
    /// for it, and correct `cur` (and later snapshots).
    fn reconcile_if_due(
        &mut self,
        cur: &mut Snapshot,
    ) -> Option<(Trigger, Result<Correction, String>)> {
        let (lost, failed) = (cur.lost_events, cur.sock_insert_failed);
        let trigger = self.reconcile.due(cur.elapsed, lost, failed)?;
        self.reconcile.done(cur.elapsed, lost, failed);
        Some((trigger, self.source.reconcile(cur)))
    }

    /// Final analysis, sample and summary to every sink.
    pub fn finish(&mut self, reason: EndReason) -> Result<()> {
        self.event(EventKind::Analysis(Box::new(self.analysis.state())))?;
        self.last = self.source.sample().map_err(Error::runtime)?;
        self.dns_answers(self.last.dns_answers.clone())?;
        for sink in &mut self.sinks {
            sink.summary(&self.last, &self.first, reason, self.snapshots)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
