//! `tracer watch`: set up (specs, output, kernel), then the run driver feeds the sinks: the
//! live view on a terminal, headless otherwise (or with --headless).

mod source;

use std::{
    cell::RefCell,
    fs::File,
    io::{IsTerminal, Write},
    path::Path,
    rc::Rc,
    time::SystemTime,
};

use crate::{
    cli::WatchArgs,
    dns::Watcher,
    error::{Context, Error, Result},
    kernel::{Config, Tracer, sampler::Sampler},
    model::{
        addr::Prefix,
        analysis::Params,
        cohort::Sets,
        spec::{self, Spec},
    },
    ndjson::Writer,
    run::{self, Ends, NoFront, Step},
    session::Session,
    sink::{RunInfo, Sink},
    tui::{TuiSink, state::ViewState},
};
pub use source::KernelSource;

fn flatten(specs: &[Spec]) -> Vec<Prefix> {
    let mut v: Vec<Prefix> = specs
        .iter()
        .flat_map(|s| s.prefixes.iter().copied())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn open_output(path: &Path) -> Result<Box<dyn Write + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdout()));
    }
    let f = File::create(path).map_err(|e| {
        Error::usage(format!(
            "cannot write --json {}: {e}: choose a writable path",
            path.display()
        ))
    })?;
    Ok(Box::new(f))
}

/// Is this process in the foreground of its terminal? A background job (`timeout 8 tracer ...`,
/// `tracer ... &`) is stopped by the kernel (SIGTTOU) the moment it sets raw mode, and then
/// cannot even handle SIGTERM: so the live view is refused before anything is loaded.
fn foreground(fd: i32) -> bool {
    // SAFETY: tcgetpgrp and getpgrp only read process state.
    let (tty_pgrp, own) = unsafe { (libc::tcgetpgrp(fd), libc::getpgrp()) };
    tty_pgrp < 0 || tty_pgrp == own
}

pub fn run(args: WatchArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
    let mut old = spec::parse(&args.old, &spec::system_resolve, &spec::read_file)
        .map_err(|e| Error::usage(format!("bad --old: {e}")))?;
    let new = spec::parse(&args.new, &spec::system_resolve, &spec::read_file)
        .map_err(|e| Error::usage(format!("bad --new: {e}")))?;
    if old.is_empty() && new.is_empty() && args.watch_dns.is_empty() {
        return Err(Error::usage(
            "watch needs the address sets: give --old SPEC and/or --new SPEC (e.g. --old 203.0.113.0/24 --new 198.51.100.7)",
        ));
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
    let sets = Sets::new(flatten(&old), flatten(&new)).usage()?;
    if let Some(w) = &mut watcher {
        w.sets = sets.clone();
    }
    let live = !args.headless && std::io::stdout().is_terminal();
    if live && args.json.as_deref() == Some(Path::new("-")) {
        return Err(Error::usage(
            "--json - writes NDJSON to the terminal the live view uses: give --json a file path, or add --headless",
        ));
    }
    if live
        && !(std::io::stdin().is_terminal()
            && foreground(libc::STDIN_FILENO)
            && foreground(libc::STDOUT_FILENO))
    {
        return Err(Error::usage(
            "the live view needs the terminal in the foreground, and tracer runs in the background of it (e.g. `timeout` without --foreground, or `&`): add --headless, or run `timeout --foreground ...`",
        ));
    }
    let out = match (&args.json, live) {
        (Some(p), _) => Some(open_output(p)?),
        (None, false) => Some(Box::new(std::io::stdout()) as Box<dyn Write + Send>),
        (None, true) => None,
    };
    // The cgroup directory is read as the user; a namespace of another user's process needs
    // CAP_SYS_PTRACE to open, so --netns is resolved once the capabilities are raised.
    let cgroup = args
        .filter
        .cgroup
        .as_deref()
        .map(crate::kernel::filter::cgroup)
        .transpose()
        .usage()?;
    crate::caps::acquire()?;
    let filters = crate::kernel::filter::Filters {
        netns: args
            .filter
            .netns
            .as_deref()
            .map(crate::kernel::filter::netns)
            .transpose()
            .usage()?,
        cgroup,
    };
    // Bind before tracing starts: a port in use or a bad address fails here, nothing loaded yet.
    let mut metrics_addr = None;
    let metrics = match &args.metrics {
        Some(addr) => {
            let ep = crate::metrics::bind(addr, args.web_config.as_deref())?;
            let scheme = ep.scheme();
            eprintln!("tracer: serving metrics at {scheme}://{}/metrics", ep.local);
            metrics_addr = Some(ep.local);
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
        state: args.state_hook,
        max_destinations: args.max_destinations,
        max_processes: args.max_destinations.clamp(1024, 65536),
        filters: filters.clone(),
        dns_capture: !args.no_dns_capture,
        hooks_only: args.hooks_only,
    };
    if cfg.hooks_only {
        eprintln!("tracer: --hooks-only: every program attached, none counts (a measurement)");
    }
    let mut tracer = Tracer::start(&cfg).env()?;
    for w in &tracer.warnings {
        eprintln!("tracer: {w}");
    }
    let started_at = SystemTime::now();
    let mut sampler = Sampler::new(&mut tracer, sets).env()?;
    let (census_owners, census_held) =
        crate::kernel::owners::census_holders(&tracer.census, &cfg.sets);
    sampler.set_census_owners(&census_owners, &census_held);
    let census_out = tracer.census.iter().filter(|c| !c.inbound).count() as u64;
    let info = RunInfo {
        started_at,
        host: crate::hostname(),
        kernel: crate::kernel_release(),
        hooks: tracer.hooks.clone(),
        old,
        new,
        ports: args.port.clone(),
        filters,
        interval_ms: args.interval.as_millis() as u64,
        max_destinations: args.max_destinations,
        census_outbound: census_out,
        census_inbound: tracer.census.len() as u64 - census_out,
        top: args.top,
        analysis: Params {
            threshold: args.threshold,
            quiet_for_ms: args.quiet_for.as_millis() as u64,
            ttl_ms: args.ttl.map(|t| t.as_millis() as u64),
        },
        census_owners,
        cutover_at: args.cutover_at,
        watch_dns: args.watch_dns.clone(),
        reconcile_every: args.reconcile_every,
        metrics_addr,
    };
    sampler.set_owner_pids(info.census_owners.iter().map(|o| o.pid).collect());
    // Attached, census and its owners taken: keep only what reconciliation needs.
    crate::caps::drop_after_attach()?;
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
    let dns = watcher.as_ref().map(|w| w.answers()).unwrap_or_default();
    let source = KernelSource::new(tracer, sampler, args.port.clone());
    let mut session = Session::new(Box::new(source), info, sinks, dns)?;
    let mut step = Step {
        watcher: watcher.as_mut(),
        // The live view is watched by a person: only headless runs end by themselves on drain.
        exit_on_drain: args.exit_on_drain && view.is_none(),
    };
    let reason = rt.block_on(async {
        let ends = Ends::new(args.duration, args.interval)?;
        match view {
            Some(v) => crate::tui::run(&mut session, v, args.interval, ends, &mut step).await,
            None => run::drive(&mut session, args.interval, ends, &mut step, &mut NoFront).await,
        }
    })?;
    session.finish(reason)?;
    Ok(0)
}
