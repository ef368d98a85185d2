//! One run: the sampler and the sinks it feeds. Every sink (NDJSON, live view, metrics) sees the
//! same snapshots and events, in the same order, from the one sampler.

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::{
    Fatal,
    kernel::{Hooks, sampler::Sampler},
    model::{snapshot::Snapshot, spec::Spec},
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
}

impl Session {
    /// Takes the first (baseline) sample and announces the run to every sink.
    pub fn new(sampler: Sampler, info: RunInfo, sinks: Vec<Box<dyn Sink>>) -> Result<Self, Fatal> {
        let first = sampler.sample()?;
        let mut s = Session {
            sampler,
            sinks,
            info,
            last: first.clone(),
            first,
            snapshots: 0,
            reported_evicted: 0,
            reported_lost: 0,
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
        Ok(s)
    }

    /// Record an event and hand it to every sink.
    pub fn event(&mut self, kind: &str, fields: Value) -> Result<(), Fatal> {
        let ev = Event {
            at: SystemTime::now(),
            elapsed_ms: self.last.elapsed.as_millis() as u64,
            kind: kind.into(),
            fields,
        };
        for sink in &mut self.sinks {
            sink.event(&ev)?;
        }
        Ok(())
    }

    /// Sample once and feed the snapshot, and the events it implies, to every sink.
    pub fn tick(&mut self) -> Result<(), Fatal> {
        let cur = self.sampler.sample()?;
        for sink in &mut self.sinks {
            sink.snapshot(&cur, &self.last)?;
        }
        self.last = cur;
        self.snapshots += 1;
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
        Ok(())
    }

    /// Final sample and summary to every sink.
    pub fn finish(&mut self, reason: &str) -> Result<(), Fatal> {
        self.last = self.sampler.sample()?;
        for sink in &mut self.sinks {
            sink.summary(&self.last, &self.first, reason, self.snapshots)?;
        }
        Ok(())
    }
}
