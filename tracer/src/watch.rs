//! `tracer watch`: set up (specs, output, kernel), then one sampling loop that feeds the sinks.

use std::{
    fs::File,
    io::Write,
    path::Path,
    time::{Duration, SystemTime},
};

use tokio::signal::unix::{SignalKind, signal};

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
        false => Some(rt.block_on(Watcher::start(&args.watch_dns, auto_sets))?),
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
    };
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Writer::new(out, args.top))];
    let mut session = Session::new(sampler, info, sinks)?;
    if let Some(w) = &watcher {
        session.dns = w.watch.answers.clone();
    }

    let reason = rt.block_on(headless(
        &mut session,
        &mut tracer,
        watcher.as_mut(),
        args.interval,
        args.duration,
        args.exit_on_drain,
    ))?;
    session.finish(reason)?;
    drop(tracer);
    Ok(0)
}

/// Sample every interval until the duration ends or a signal arrives.
async fn headless(
    session: &mut Session,
    tracer: &mut Tracer,
    mut watcher: Option<&mut Watcher>,
    interval: Duration,
    duration: Option<Duration>,
    exit_on_drain: bool,
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
            _ = ticker.tick() => {
                session.tick()?;
                if let Some(w) = watcher.as_deref_mut() {
                    w.poll(session, tracer).await?;
                }
                if exit_on_drain && session.analysis.drained() {
                    return Ok("drained");
                }
            }
            _ = sigint.recv() => return Ok("sigint"),
            _ = sigterm.recv() => return Ok("sigterm"),
            _ = sighup.recv() => return Ok("sighup"),
            _ = tokio::time::sleep_until(deadline) => return Ok("duration"),
        }
    }
}
