//! `tracer watch`: set up (specs, output, kernel), then one sampling loop that feeds the sinks:
//! the live view on a terminal, headless otherwise (or with --headless).

use std::{
    cell::RefCell,
    fs::File,
    io::{IsTerminal, Write},
    path::Path,
    rc::Rc,
    time::{Duration, SystemTime},
};

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval},
};

use crate::{
    Fatal,
    cli::WatchArgs,
    dns::Watcher,
    kernel::{Config, Tracer, sampler::Sampler},
    model::{
        addr::Prefix,
        analysis::Params,
        cohort::Sets,
        spec::{self, Spec},
    },
    ndjson::Writer,
    session::{RunInfo, Session, Sink},
    tui::{TuiSink, state::ViewState},
};

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let mut old = spec::parse(&args.old, &spec::system_resolve, &spec::read_file)
        .map_err(|e| format!("bad --old: {e}"))?;
    let new = spec::parse(&args.new, &spec::system_resolve, &spec::read_file)
        .map_err(|e| format!("bad --new: {e}"))?;
    if old.is_empty() && new.is_empty() && args.watch_dns.is_empty() {
        return Err("watch needs the address sets: give --old SPEC and/or --new SPEC (e.g. --old 203.0.113.0/24 --new 198.51.100.7)".into());
    }
    let auto_sets = old.is_empty() && new.is_empty();
    let mut watcher = match args.watch_dns.is_empty() {
        true => None,
        false => Some(rt.block_on(Watcher::start(
            &args.watch_dns,
            &args.dns_server,
            auto_sets,
            args.interval.as_millis() as u64,
        ))?),
    };
    if let (true, Some(w)) = (auto_sets, &watcher) {
        // The answers at start are the old side; new answers become the new side.
        old = w
            .watch
            .answers
            .iter()
            .map(|a| Spec {
                text: a.name.clone(),
                prefixes: a.addrs.iter().map(|x| Prefix::host(*x)).collect(),
                resolved: true,
            })
            .collect();
    }
    let sets = Sets::new(flatten(&old), flatten(&new))?;
    if let Some(w) = &mut watcher {
        w.sets = sets.clone();
    }
    let live = !args.headless && std::io::stdout().is_terminal();
    if live && args.json.as_deref() == Some(Path::new("-")) {
        return Err("--json - writes NDJSON to the terminal the live view uses: give --json a file path, or add --headless".into());
    }
    let out = match (&args.json, live) {
        (Some(p), _) => Some(open_output(p)?),
        (None, false) => Some(Box::new(std::io::stdout()) as Box<dyn Write + Send>),
        (None, true) => None,
    };
    crate::require_root()?;
    // Bind before tracing starts: a port in use or a bad address fails here, nothing loaded yet.
    let metrics = match &args.metrics {
        Some(addr) => {
            let ep = crate::metrics::bind(addr)?;
            eprintln!("tracer: serving metrics at http://{}/metrics", ep.local);
            let opts = crate::metrics::Options {
                labels: args.label.clone(),
                destinations: args.metrics_destinations.into(),
                processes: args.metrics_processes.into(),
            };
            Some(crate::metrics::start(ep, opts)?)
        }
        None => None,
    };
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
    let census_out = tracer.census.iter().filter(|c| !c.inbound).count() as u64;
    let info = RunInfo {
        started_at,
        host: crate::hostname(),
        kernel: crate::kernel_release(),
        hooks: tracer.hooks.clone(),
        old,
        new,
        ports: args.port.clone(),
        interval_ms: args.interval.as_millis() as u64,
        max_destinations: args.max_destinations,
        census_outbound: census_out,
        census_inbound: tracer.census.len() as u64 - census_out,
        top: args.top,
        analysis: Params {
            threshold: args.threshold,
            quiet_for_ms: args.quiet_for.as_millis() as u64,
        },
        census_owners: crate::kernel::owners::census_owners(&tracer.census, &cfg.sets),
        cutover_at: args.cutover_at,
        watch_dns: args.watch_dns.clone(),
        reconcile_every: args.reconcile_every,
    };
    let mut sinks: Vec<Box<dyn Sink>> = vec![];
    if let Some(out) = out {
        sinks.push(Box::new(Writer::new(out, args.top)));
    }
    let view = live.then(|| Rc::new(RefCell::new(ViewState::new(info.clone()))));
    if let Some(v) = &view {
        sinks.push(Box::new(TuiSink(v.clone())));
    }
    if let Some(m) = metrics {
        sinks.push(Box::new(m));
    }
    let mut session = Session::new(sampler, info, sinks)?;
    if let Some(w) = &watcher {
        session.dns = w.answers();
    }

    let mut step = Step {
        tracer: &mut tracer,
        watcher: watcher.as_mut(),
        // The live view is watched by a person: only headless runs end by themselves on drain.
        exit_on_drain: args.exit_on_drain && view.is_none(),
    };
    let reason = rt.block_on(async {
        let ends = Ends::new(args.duration)?;
        match view {
            Some(v) => crate::tui::run(&mut session, v, args.interval, ends, &mut step).await,
            None => headless(&mut session, args.interval, ends, &mut step).await,
        }
    })?;
    session.finish(reason)?;
    drop(tracer);
    Ok(0)
}

/// What ends a run: SIGINT, SIGTERM, SIGHUP or the end of --duration.
pub struct Ends {
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    deadline: Instant,
}

impl Ends {
    /// Install the handlers; must run inside the runtime.
    pub fn new(duration: Option<Duration>) -> Result<Ends, Fatal> {
        let sig = |k| signal(k).map_err(|e| format!("cannot install signal handler: {e}"));
        Ok(Ends {
            sigint: sig(SignalKind::interrupt())?,
            sigterm: sig(SignalKind::terminate())?,
            sighup: sig(SignalKind::hangup())?,
            deadline: Instant::now() + duration.unwrap_or(Duration::from_secs(100 * 365 * 86400)),
        })
    }

    /// The reason the run ends (the summary's `reason`); cancel-safe, for `select!`.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.sigint.recv() => "sigint",
            _ = self.sigterm.recv() => "sigterm",
            _ = self.sighup.recv() => "sighup",
            _ = tokio::time::sleep_until(self.deadline) => "duration",
        }
    }
}

/// Ticks every interval from one interval after now; a late tick is skipped, never bunched.
pub fn ticker(interval: Duration) -> Interval {
    let mut t = tokio::time::interval_at(Instant::now() + interval, interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}

/// One sampling step as both loops (headless, live view) take it: sample, then DNS watching and
/// the drain exit.
pub struct Step<'a> {
    tracer: &'a mut Tracer,
    watcher: Option<&'a mut Watcher>,
    exit_on_drain: bool,
}

impl Step<'_> {
    /// Sample once; `Some(reason)` when the run should end now.
    pub async fn run(&mut self, session: &mut Session) -> Result<Option<&'static str>, Fatal> {
        session.tick()?;
        if let Some(w) = self.watcher.as_deref_mut() {
            w.poll(session, self.tracer).await?;
        }
        Ok((self.exit_on_drain && session.analysis.drained()).then_some("drained"))
    }
}

/// Sample every interval until the duration ends or a signal arrives.
async fn headless(
    session: &mut Session,
    interval: Duration,
    mut ends: Ends,
    step: &mut Step<'_>,
) -> Result<&'static str, Fatal> {
    let mut ticker = ticker(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(reason) = step.run(session).await? {
                    return Ok(reason);
                }
            }
            reason = ends.next() => return Ok(reason),
        }
    }
}
