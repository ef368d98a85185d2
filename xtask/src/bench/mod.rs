//! `cargo xtask bench [--quick]`: tracer against no tracing, bpftrace, a /proc/net/tcp awk loop
//! and `ss`, side by side on the same loopback workloads, in interleaved rounds. Writes
//! bench/RESULTS.md and bench/results.json (quick: target/bench-quick/, harness check only).

pub mod agent;
mod contenders;
mod history;
mod phases;
mod procstat;
mod report;
mod stats;
mod targets;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use contenders::{Contender, Ctx};

/// Sizes and repetitions of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub threads: usize,
    pub rounds: usize,
    pub churn_secs: f64,
    pub bpf_rounds: usize,
    pub dest_counts: Vec<u32>,
    pub dest_secs: f64,
    pub dest_rounds: usize,
    pub socket_counts: Vec<usize>,
    pub scan_reps: usize,
    pub snap_window: Duration,
    /// Runs of each side of the idle-snapshot profile (default maps against small maps).
    pub profile_reps: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        if quick {
            Plan {
                quick,
                threads,
                rounds: 1,
                churn_secs: 1.5,
                bpf_rounds: 1,
                dest_counts: vec![1, 1000],
                dest_secs: 2.0,
                dest_rounds: 1,
                socket_counts: vec![0, 2000],
                scan_reps: 2,
                snap_window: Duration::from_secs(1),
                profile_reps: 1,
            }
        } else {
            Plan {
                quick,
                threads,
                rounds: 7,
                churn_secs: 4.0,
                bpf_rounds: 5,
                dest_counts: vec![1, 1000, 60_000],
                dest_secs: 8.0,
                dest_rounds: 3,
                socket_counts: vec![0, 10_000, 70_000],
                scan_reps: 5,
                snap_window: Duration::from_secs(2),
                profile_reps: 3,
            }
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"quick": self.quick, "threads": self.threads, "rounds": self.rounds,
            "churn_secs": self.churn_secs, "bpf_rounds": self.bpf_rounds,
            "destinations": self.dest_counts, "dest_secs": self.dest_secs,
            "dest_rounds": self.dest_rounds, "open_sockets": self.socket_counts,
            "scan_reps": self.scan_reps, "snapshot_window_ms": self.snap_window.as_millis() as u64,
            "profile_reps": self.profile_reps})
    }
}

/// bpftool, if installed (only used to name programs).
pub fn bpftool() -> Option<PathBuf> {
    crate::bootstrap::find_bin("bpftool")
}

/// Tracer setups to compare: each connect hook `tracer probe` reports as available, with
/// each available state hook forced (`connect,state`). The first is what `watch` would pick.
fn tracer_modes(tracer: &Path) -> Result<Vec<String>> {
    let connects = connect_modes(tracer)?;
    let out = Command::new(tracer).arg("probe").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let states: Vec<&str> = ["tp_btf", "tracepoint"]
        .into_iter()
        .filter(|s| {
            text.lines().any(|l| {
                l.strip_prefix("state hook").is_some_and(|r| {
                    r.trim().starts_with(&format!("{s} ")) && r.contains(": available")
                })
            })
        })
        .collect();
    if states.is_empty() {
        bail!("tracer probe found no usable state hook: {}", text.trim());
    }
    let mut modes = Vec::new();
    for c in &connects {
        for s in &states {
            modes.push(format!("{c},{s}"));
        }
    }
    Ok(modes)
}

/// Connect hooks `tracer probe` reports as available on this kernel.
fn connect_modes(tracer: &Path) -> Result<Vec<String>> {
    let out = Command::new(tracer)
        .arg("probe")
        .output()
        .context("cannot run tracer probe")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let modes: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("connect hook"))
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(':')?;
            rest.trim()
                .starts_with("available")
                .then(|| name.trim().to_string())
        })
        .collect();
    if modes.is_empty() {
        bail!(
            "tracer probe found no usable connect hook: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(modes)
}

pub fn run(root: &Path, tracer: PathBuf, agent: PathBuf, quick: bool) -> Result<()> {
    let t0 = Instant::now();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench loads BPF programs: run it as root");
    }
    let plan = Plan::new(quick);
    let dir = if quick {
        root.join("target/bench-quick")
    } else {
        root.join("bench")
    };
    let work = root.join("target/bench-work");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&work)?;
    let ctx = Ctx {
        tracer: tracer.clone(),
        agent,
        bpftrace: crate::bootstrap::find_bin("bpftrace").context("bpftrace is not installed")?,
        work,
    };
    let machine = report::Machine::now();
    let modes = tracer_modes(&tracer)?;
    let mut contenders = vec![Contender::Baseline];
    contenders.extend(modes.iter().cloned().map(Contender::Tracer));
    contenders.extend([Contender::Bpftrace, Contender::ProcScan, Contender::Ss]);
    eprintln!(
        "xtask: bench ({}): tracer setups (connect,state) {modes:?}, {} client threads",
        if quick { "quick" } else { "full" },
        plan.threads
    );

    // Scans first: the churn leaves TIME_WAIT sockets that a scan would have to walk too.
    let scans = phases::scan_cost(&ctx, &plan, &modes[0])?;
    let trials = phases::throughput(&ctx, &plan, &contenders)?;
    let bpf = phases::bpf_cost(&ctx, &plan, &contenders)?;
    let dests = phases::destinations(&ctx, &plan, &modes[0])?;

    let r = report::Report {
        plan: &plan,
        machine: machine.finish(),
        contenders: &contenders,
        trials: &trials,
        bpf: &bpf,
        dests: &dests,
        scans: &scans,
        took: t0.elapsed(),
    };
    let json = r.json();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    std::fs::write(dir.join("RESULTS.md"), report::render(&json))?;
    check_complete(&json)?;
    eprintln!(
        "xtask: bench done in {:.0?}: {}",
        t0.elapsed(),
        dir.join("RESULTS.md").display()
    );
    Ok(())
}

/// RESULTS.md written again from the committed results.json: the same run's figures under the
/// current text (notes, wording, the targets' verdicts and reasons judged again from those
/// figures), without measuring anew; results.json itself is left as the run wrote it. The VM
/// matrix stays the one the run recorded.
pub fn rerender(dir: &Path) -> Result<()> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut json: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a bench result: run `cargo xtask bench`",
            path.display()
        )
    })?;
    report::judge(&mut json);
    std::fs::write(dir.join("RESULTS.md"), report::render(&json))?;
    eprintln!(
        "xtask: bench: {} rewritten from {}",
        dir.join("RESULTS.md").display(),
        path.display()
    );
    Ok(())
}

/// The harness check (all the quick run asserts): every contender ran and produced numbers.
/// Never a threshold on a measured value: the machine is shared and noisy.
fn check_complete(json: &serde_json::Value) -> Result<()> {
    let mut missing = Vec::new();
    for (key, row) in json["throughput"]["summary"]
        .as_object()
        .context("no throughput summary")?
    {
        if row["connects_per_s"]["median"]
            .as_f64()
            .is_none_or(|v| v <= 0.0)
        {
            missing.push(format!("{key}: no throughput"));
        }
        if key != "none" && row["counted"]["median"].is_null() {
            missing.push(format!("{key}: no count"));
        }
    }
    for key in ["bpf_cost", "destinations", "scan_cost"] {
        if json[key]["summary"].as_array().is_none_or(|a| a.is_empty()) {
            missing.push(format!("{key}: no rows"));
        }
    }
    if !missing.is_empty() {
        bail!("bench incomplete: {}", missing.join("; "));
    }
    Ok(())
}
