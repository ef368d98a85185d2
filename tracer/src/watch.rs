//! `tracer watch`: set up (specs, output, kernel), then one sampling loop that feeds the sinks.

use std::{
    fs::File,
    io::Write,
    path::Path,
    time::{Duration, SystemTime},
};

use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    Fatal,
    cli::WatchArgs,
    kernel::{Config, Tracer, sampler::Sampler},
    model::{
        addr::Prefix,
        cohort::Sets,
        snapshot::Snapshot,
        spec::{self, Spec},
    },
    ndjson::{self, Writer},
};

/// One run's state shared by every sink: the sampler, the first and latest snapshots.
pub struct Session {
    sampler: Sampler,
    writer: Option<Writer>,
    pub first: Snapshot,
    pub last: Snapshot,
    pub snapshots: u64,
    top: usize,
    reported_evicted: u64,
    reported_lost: u64,
}

impl Session {
    fn write(&mut self, v: &serde_json::Value) -> Result<(), Fatal> {
        if let Some(w) = &mut self.writer {
            w.line(v)
                .map_err(|e| format!("cannot write NDJSON output: {e}"))?;
        }
        Ok(())
    }

    fn event(&mut self, kind: &str, fields: serde_json::Value) -> Result<(), Fatal> {
        let ms = self.last.elapsed.as_millis() as u64;
        self.write(&ndjson::event(SystemTime::now(), ms, kind, fields))
    }

    /// Sample once, write the snapshot line and any events it implies.
    pub fn tick(&mut self) -> Result<(), Fatal> {
        let cur = self.sampler.sample()?;
        let line = ndjson::snapshot(&cur, &self.last, self.top);
        self.last = cur;
        self.snapshots += 1;
        self.write(&line)?;
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

    /// Final sample and summary line.
    pub fn finish(&mut self, reason: &str) -> Result<(), Fatal> {
        let cur = self.sampler.sample()?;
        self.last = cur;
        let line = ndjson::summary(&self.last, &self.first, reason, self.snapshots, self.top);
        self.write(&line)
    }
}

fn flatten(specs: &[Spec]) -> Vec<Prefix> {
    let mut v: Vec<Prefix> = specs
        .iter()
        .flat_map(|s| s.prefixes.iter().copied())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn open_output(path: &Path) -> Result<Box<dyn Write + Send>, Fatal> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdout()));
    }
    let f = File::create(path).map_err(|e| {
        format!(
            "cannot write --json {}: {e}: choose a writable path",
            path.display()
        )
    })?;
    Ok(Box::new(f))
}

pub fn run(args: WatchArgs) -> Result<i32, Fatal> {
    let old = spec::parse(&args.old, &spec::system_resolve, &spec::read_file)
        .map_err(|e| format!("bad --old: {e}"))?;
    let new = spec::parse(&args.new, &spec::system_resolve, &spec::read_file)
        .map_err(|e| format!("bad --new: {e}"))?;
    if old.is_empty() && new.is_empty() {
        return Err("watch needs the address sets: give --old SPEC and/or --new SPEC (e.g. --old 203.0.113.0/24 --new 198.51.100.7)".into());
    }
    let sets = Sets::new(flatten(&old), flatten(&new))?;
    let out = match &args.json {
        Some(p) => open_output(p)?,
        None => Box::new(std::io::stdout()),
    };
    crate::require_root()?;
    for s in old.iter().chain(new.iter()).filter(|s| s.resolved) {
        let addrs: Vec<String> = s.prefixes.iter().map(|p| p.addr.to_string()).collect();
        eprintln!("tracer: note: {} resolved to {}", s.text, addrs.join(", "));
    }

    let cfg = Config {
        sets: sets.clone(),
        ports: args.port.clone(),
        connect: args.connect_hook,
        max_destinations: args.max_destinations,
        max_processes: args.max_destinations.clamp(1024, 65536),
    };
    let mut tracer = Tracer::start(&cfg)?;
    for w in &tracer.warnings {
        eprintln!("tracer: {w}");
    }
    let started_at = SystemTime::now();
    let sampler = Sampler::new(&mut tracer, sets)?;
    let first = sampler.sample()?;
    let census_out = tracer.census.iter().filter(|c| !c.inbound).count() as u64;
    let census_in = tracer.census.len() as u64 - census_out;
    let meta = ndjson::meta(&ndjson::Meta {
        started_at,
        host: crate::hostname(),
        kernel: crate::kernel_release(),
        connect_hook: tracer.hooks.connect.name(),
        state_hook: tracer.hooks.state,
        fallbacks: tracer
            .hooks
            .fallbacks
            .iter()
            .map(|(h, why)| (h.name().to_string(), why.clone()))
            .collect(),
        old: &old,
        new: &new,
        ports: &args.port,
        interval_ms: args.interval.as_millis() as u64,
        max_destinations: args.max_destinations,
        census_outbound: census_out,
        census_inbound: census_in,
    });
    let mut session = Session {
        sampler,
        writer: Some(Writer::new(out)),
        last: first.clone(),
        first,
        snapshots: 0,
        top: args.top,
        reported_evicted: 0,
        reported_lost: 0,
    };
    session.write(&meta)?;
    for (hook, why) in tracer.hooks.fallbacks.clone() {
        session.event(
            "hook_fallback",
            json!({"hook": hook.name(), "reason": why, "using": tracer.hooks.connect.name()}),
        )?;
    }
    if tracer.hooks.tracefs_mounted {
        session.event(
            "tracefs_mounted",
            json!({"path": crate::kernel::tracefs::TRACEFS}),
        )?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let reason = rt.block_on(headless(&mut session, args.interval, args.duration))?;
    session.finish(reason)?;
    drop(tracer);
    Ok(0)
}

/// Sample every interval until the duration ends or a signal arrives.
async fn headless(
    session: &mut Session,
    interval: Duration,
    duration: Option<Duration>,
) -> Result<&'static str, Fatal> {
    let sig = |k| signal(k).map_err(|e| format!("cannot install signal handler: {e}"));
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sighup = sig(SignalKind::hangup())?;
    let start = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(start + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = start + duration.unwrap_or(Duration::from_secs(100 * 365 * 86400));
    loop {
        tokio::select! {
            _ = ticker.tick() => session.tick()?,
            _ = sigint.recv() => return Ok("sigint"),
            _ = sigterm.recv() => return Ok("sigterm"),
            _ = sighup.recv() => return Ok("sighup"),
            _ = tokio::time::sleep_until(deadline) => return Ok("duration"),
        }
    }
}
