//! The four measurements. Each runs the contenders against the same workload, in interleaved
//! rounds, and returns plain rows that the report turns into tables.

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    Plan,
    contenders::{Contender, Ctx, PROCSCAN_PIPELINE, start_tracer, stop_child},
    procstat::{self, BpfStats, Prog},
};

/// The churn's two listeners: one old, one new, addresses no other test uses.
pub const TARGETS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 10, 66, 1), Ipv4Addr::new(127, 20, 66, 1)];
/// Where the background connections are held ("other" for tracer).
const HOLD_ADDR: &str = "127.30.66.1";

/// What the workload itself counted.
#[derive(Clone, Debug, Default)]
pub struct Churn {
    pub connects: u64,
    pub errors: u64,
    pub elapsed_ms: u64,
    pub first_error: Option<String>,
}

impl Churn {
    pub fn rate(&self) -> f64 {
        self.connects as f64 * 1000.0 / self.elapsed_ms.max(1) as f64
    }
}

/// Run the churn agent (inside `netns` if given) and read its result line.
pub fn churn(
    ctx: &Ctx,
    plan: &Plan,
    secs: f64,
    target: &str,
    netns: Option<&str>,
) -> Result<Churn> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&ctx.agent);
            c
        }
        None => Command::new(&ctx.agent),
    };
    cmd.args([
        "bench-agent",
        "churn",
        &plan.threads.to_string(),
        &secs.to_string(),
        target,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = cmd.output().context("cannot run the churn agent")?;
    if !out.status.success() {
        bail!(
            "churn agent failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("churn agent output")?;
    let c = Churn {
        connects: v["connects"].as_u64().unwrap_or(0),
        errors: v["errors"].as_u64().unwrap_or(0),
        elapsed_ms: v["elapsed_ms"].as_u64().unwrap_or(0),
        first_error: v["first_error"].as_str().map(String::from),
    };
    if c.connects == 0 {
        bail!("the churn made no connection: {:?}", c.first_error);
    }
    Ok(c)
}

/// Entries in /proc/net/tcp and tcp6 (sockets in every state, TIME_WAIT included).
pub fn tcp_entries() -> u64 {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|t| t.lines().count().saturating_sub(1) as u64)
                .unwrap_or(0)
        })
        .sum()
}

/// One contender during one churn.
#[derive(Clone, Debug)]
pub struct Trial {
    pub round: usize,
    pub contender: Contender,
    pub churn: Churn,
    pub counted: Option<u64>,
    pub lost_events: Option<u64>,
    /// tracer only: its CPU during the churn, and peak RSS.
    pub cpu_ns: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// Entries a scan had to walk at the end of the churn.
    pub tcp_entries: u64,
}

impl Trial {
    pub fn json(&self) -> Value {
        json!({"round": self.round, "contender": self.contender.key(),
               "connects": self.churn.connects, "errors": self.churn.errors,
               "elapsed_ms": self.churn.elapsed_ms, "connects_per_s": self.churn.rate(),
               "counted": self.counted, "lost_events": self.lost_events,
               "cpu_ns": self.cpu_ns, "peak_rss_kib": self.hwm_kib, "tcp_entries": self.tcp_entries})
    }
}

/// Throughput and accuracy: every contender once per round, order rotated each round.
pub fn throughput(ctx: &Ctx, plan: &Plan, contenders: &[Contender]) -> Result<Vec<Trial>> {
    let target = format!("addrs={},{}", TARGETS[0], TARGETS[1]);
    let mut trials = Vec::new();
    for round in 0..plan.rounds {
        for i in 0..contenders.len() {
            let c = &contenders[(i + round) % contenders.len()];
            eprintln!(
                "xtask: bench: throughput round {} / {}: {}",
                round + 1,
                plan.rounds,
                c.label()
            );
            let run = c
                .start(ctx, Duration::from_secs_f64(plan.churn_secs + 30.0))
                .with_context(|| c.label())?;
            let pid = run.pid();
            let cpu0 = pid.map(procstat::cpu_ns);
            let res = churn(ctx, plan, plan.churn_secs, &target, None);
            let cpu1 = pid.map(procstat::cpu_ns);
            let hwm = pid.and_then(procstat::vm_hwm_kib);
            let entries = tcp_entries();
            let counted = run.stop(&TARGETS)?;
            let is_tracer = matches!(c, Contender::Tracer(_));
            trials.push(Trial {
                round,
                contender: c.clone(),
                churn: res?,
                counted: counted.connections,
                lost_events: counted.lost_events,
                cpu_ns: cpu0.zip(cpu1).map(|(a, b)| b - a).filter(|_| is_tracer),
                hwm_kib: hwm.filter(|_| is_tracer),
                tcp_entries: entries,
            });
        }
    }
    Ok(trials)
}

/// BPF run time of one contender's programs during one churn.
#[derive(Clone, Debug)]
pub struct BpfTrial {
    pub round: usize,
    pub contender: Contender,
    pub churn: Churn,
    /// Per program: run time, runs and misses during the churn only.
    pub progs: Vec<Prog>,
}

impl BpfTrial {
    pub fn total(&self) -> (u64, u64, u64) {
        self.progs.iter().fold((0, 0, 0), |(t, c, m), p| {
            (t + p.run_time_ns, c + p.run_cnt, m + p.recursion_misses)
        })
    }
    pub fn json(&self) -> Value {
        let (t, c, m) = self.total();
        json!({"round": self.round, "contender": self.contender.key(), "connects": self.churn.connects,
               "run_time_ns": t, "run_cnt": c, "recursion_misses": m,
               "programs": self.progs.iter().map(Prog::json).collect::<Vec<_>>()})
    }
}

/// The change of each program's counters between two reads.
fn prog_delta(before: &[Prog], after: &[Prog]) -> Vec<Prog> {
    after
        .iter()
        .map(|a| {
            let b = before
                .iter()
                .find(|b| b.id == a.id)
                .cloned()
                .unwrap_or_default();
            Prog {
                run_time_ns: a.run_time_ns.saturating_sub(b.run_time_ns),
                run_cnt: a.run_cnt.saturating_sub(b.run_cnt),
                recursion_misses: a.recursion_misses.saturating_sub(b.recursion_misses),
                ..a.clone()
            }
        })
        .collect()
}

/// The BPF contenders, plus tracer's hooks alone (in the mode `watch` would pick) and the
/// bpftrace floor.
pub fn bpf_contenders(contenders: &[Contender]) -> Vec<Contender> {
    let mut v: Vec<Contender> = contenders.iter().filter(|c| c.is_bpf()).cloned().collect();
    if let Some(mode) = contenders.iter().find_map(|c| match c {
        Contender::Tracer(m) => Some(m.clone()),
        _ => None,
    }) {
        v.push(Contender::TracerHooksOnly(mode));
    }
    v.push(Contender::BpftraceFloor);
    v
}

/// BPF cost per event and per connection, with run-time statistics enabled only here.
pub fn bpf_cost(ctx: &Ctx, plan: &Plan, contenders: &[Contender]) -> Result<Vec<BpfTrial>> {
    let target = format!("addrs={},{}", TARGETS[0], TARGETS[1]);
    let bpf = bpf_contenders(contenders);
    let _stats = BpfStats::enable()?;
    let mut trials = Vec::new();
    for round in 0..plan.bpf_rounds {
        for i in 0..bpf.len() {
            let c = &bpf[(i + round) % bpf.len()];
            eprintln!(
                "xtask: bench: BPF cost round {} / {}: {}",
                round + 1,
                plan.bpf_rounds,
                c.label()
            );
            let run = c.start(ctx, Duration::from_secs_f64(plan.churn_secs + 30.0))?;
            let pid = run.pid().context("a BPF contender has a process")?;
            let before = procstat::bpf_progs(pid);
            let res = churn(ctx, plan, plan.churn_secs, &target, None);
            let after = procstat::bpf_progs(pid);
            run.stop(&TARGETS)?;
            let progs = prog_delta(&before, &after);
            if progs.iter().all(|p| p.run_cnt == 0) {
                bail!(
                    "{}: no BPF program ran during the churn (no prog fds with run counts)",
                    c.label()
                );
            }
            trials.push(BpfTrial {
                round,
                contender: c.clone(),
                churn: res?,
                progs,
            });
        }
    }
    Ok(trials)
}

/// tracer's own cost at a 1 s interval while the churn spreads over `destinations` addresses.
#[derive(Clone, Debug)]
pub struct DestTrial {
    pub round: usize,
    pub destinations: u32,
    pub churn: Churn,
    pub cpu_ns: u64,
    pub wall_ns: u64,
    pub hwm_kib: u64,
    pub counted: Option<u64>,
}

impl DestTrial {
    pub fn cpu_percent(&self) -> f64 {
        self.cpu_ns as f64 * 100.0 / self.wall_ns.max(1) as f64
    }
    pub fn json(&self) -> Value {
        json!({"round": self.round, "destinations": self.destinations, "connects": self.churn.connects,
               "connects_per_s": self.churn.rate(), "cpu_ns": self.cpu_ns, "wall_ns": self.wall_ns,
               "cpu_percent": self.cpu_percent(), "peak_rss_kib": self.hwm_kib,
               "counted_old_new_attempts": self.counted})
    }
}

/// A network namespace of the bench's own (its `lo` is up), deleted on drop. The spread churn
/// listens on 0.0.0.0 there, which nothing outside can reach.
pub struct Netns(pub String);

impl Netns {
    pub fn new() -> Result<Netns> {
        let name = format!("tracer-bench-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = |c: &mut Command| -> Result<()> {
            let st = c.status().with_context(|| format!("{c:?}"))?;
            if !st.success() {
                bail!("{c:?} failed ({st})");
            }
            Ok(())
        };
        ok(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns(name);
        ok(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Cohort attempts (old + new) of a tracer summary.
fn cohort_attempts(ndjson: &str) -> Option<u64> {
    let s: Value = serde_json::from_str(ndjson.lines().last()?).ok()?;
    Some(s["cohorts"]["old"]["attempts"].as_u64()? + s["cohorts"]["new"]["attempts"].as_u64()?)
}

pub fn destinations(ctx: &Ctx, plan: &Plan, mode: &str) -> Result<Vec<DestTrial>> {
    let ns = Netns::new()?;
    let out = ctx.work.join("dest.ndjson");
    let err = ctx.work.join("dest.err");
    let mut trials = Vec::new();
    for round in 0..plan.dest_rounds {
        for &d in &plan.dest_counts {
            eprintln!(
                "xtask: bench: tracer cost round {} / {}: {d} destinations",
                round + 1,
                plan.dest_rounds
            );
            let mut child = start_tracer(ctx, mode, "1s", 20, &[], &out, &err)?;
            let pid = child.id();
            let cpu0 = procstat::cpu_ns(pid);
            let t0 = Instant::now();
            let res = churn(
                ctx,
                plan,
                plan.dest_secs,
                &format!("spread={d}"),
                Some(&ns.0),
            );
            let cpu1 = procstat::cpu_ns(pid);
            let wall = t0.elapsed();
            let hwm = procstat::vm_hwm_kib(pid).unwrap_or(0);
            let st = stop_child(&mut child, libc::SIGINT, false)?;
            if !st.success() {
                bail!(
                    "tracer failed ({st}): {}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            trials.push(DestTrial {
                round,
                destinations: d,
                churn: res?,
                cpu_ns: cpu1 - cpu0,
                wall_ns: wall.as_nanos() as u64,
                hwm_kib: hwm,
                counted: cohort_attempts(&std::fs::read_to_string(&out).unwrap_or_default()),
            });
        }
    }
    Ok(trials)
}

/// CPU of one /proc scan, one ss run and one tracer snapshot with `sockets` open.
#[derive(Clone, Debug)]
pub struct ScanCost {
    pub sockets: usize,
    pub tcp_entries: u64,
    pub procscan_ns: Vec<f64>,
    pub ss_ns: Vec<f64>,
    pub snapshot_ns: f64,
    pub snapshots: u64,
    /// The same with `--max-destinations 1024` (first size only; there both are medians).
    pub snapshot_small_maps_ns: Option<f64>,
    pub census: Option<u64>,
}

impl ScanCost {
    pub fn json(&self) -> Value {
        json!({"sockets": self.sockets, "tcp_entries": self.tcp_entries,
               "procscan_cpu_ns": self.procscan_ns, "ss_cpu_ns": self.ss_ns,
               "tracer_snapshot_cpu_ns": self.snapshot_ns, "tracer_snapshots": self.snapshots,
               "tracer_snapshot_small_maps_cpu_ns": self.snapshot_small_maps_ns,
               "tracer_census": self.census})
    }
}

/// Hold agents keeping `sockets / 2` connections (2 sockets each), spread over processes so
/// each stays within the hard fd limit. Dropping them closes stdin: the agents exit.
struct Holders(Vec<Child>);

impl Holders {
    fn start(ctx: &Ctx, sockets: usize) -> Result<Holders> {
        // SAFETY: getrlimit fills a local struct.
        let hard = unsafe {
            let mut r: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            r.rlim_max as usize
        };
        let per = ((hard.saturating_sub(64)) / 2).clamp(1, 20_000);
        let mut left = sockets / 2;
        let mut hs = Holders(Vec::new());
        while left > 0 {
            let n = left.min(per);
            left -= n;
            let mut c = Command::new(&ctx.agent)
                .args(["bench-agent", "hold", HOLD_ADDR, &n.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start a hold agent")?;
            let mut line = String::new();
            BufReader::new(c.stdout.take().context("stdout")?).read_line(&mut line)?;
            hs.0.push(c);
            if !line.starts_with("ready") {
                bail!("a hold agent could not open {n} connections (see above)");
            }
        }
        Ok(hs)
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Earlier churn (this bench's, other tests') leaves TIME_WAIT sockets for 60 s, which every
/// /proc scan walks too: wait (at most 65 s) until few are left, so "0 open sockets" means it.
fn drain_time_wait() {
    let t0 = Instant::now();
    let mut said = false;
    while tcp_entries() > 5000 && t0.elapsed() < Duration::from_secs(65) {
        if !said {
            eprintln!(
                "xtask: bench: waiting (at most 65 s) for {} sockets, mostly TIME_WAIT, to expire",
                tcp_entries()
            );
            said = true;
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// CPU of one run of `cmd` (and everything it started), in ns.
fn cpu_of(cmd: &mut Command) -> Result<f64> {
    let before = procstat::children_cpu_ns();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("{cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok((procstat::children_cpu_ns() - before) as f64)
}

fn count_snapshots(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"type\":\"snapshot\""))
        .count() as u64
}

/// tracer's CPU per snapshot at a 100 ms interval, the snapshots it took, and its meta line.
fn snapshot_cost(ctx: &Ctx, plan: &Plan, mode: &str, extra: &[&str]) -> Result<(f64, u64, Value)> {
    let out = ctx.work.join("snap.ndjson");
    let err = ctx.work.join("snap.err");
    let mut tracer = start_tracer(ctx, mode, "100ms", 20, extra, &out, &err)?;
    let pid = tracer.id();
    thread::sleep(Duration::from_millis(500));
    let (c0, s0) = (procstat::cpu_ns(pid), count_snapshots(&out));
    thread::sleep(plan.snap_window);
    let (c1, s1) = (procstat::cpu_ns(pid), count_snapshots(&out));
    let st = stop_child(&mut tracer, libc::SIGINT, false)?;
    if !st.success() {
        bail!(
            "tracer failed ({st}): {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
    }
    if s1 <= s0 {
        bail!("tracer wrote no snapshot in {:?}", plan.snap_window);
    }
    let meta: Value = std::fs::read_to_string(&out)?
        .lines()
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    Ok(((c1 - c0) as f64 / (s1 - s0) as f64, s1 - s0, meta))
}

pub fn scan_cost(ctx: &Ctx, plan: &Plan, mode: &str) -> Result<Vec<ScanCost>> {
    let mut rows = Vec::new();
    if !plan.quick {
        drain_time_wait();
    }
    for &sockets in &plan.socket_counts {
        eprintln!("xtask: bench: scan cost with {sockets} open sockets");
        let holders = Holders::start(ctx, sockets)?;
        let entries = tcp_entries();
        let mut procscan_ns = Vec::new();
        let mut ss_ns = Vec::new();
        for _ in 0..plan.scan_reps {
            procscan_ns.push(cpu_of(
                Command::new("bash").args(["-c", PROCSCAN_PIPELINE]),
            )?);
            ss_ns.push(cpu_of(Command::new("ss").args([
                "-tn",
                "state",
                "established",
            ]))?);
        }
        let (mut snapshot_ns, snapshots, meta) = snapshot_cost(ctx, plan, mode, &[])?;
        // Profile of the idle snapshot, at the first size only: default maps (65536 entries)
        // against maps of 1024, interleaved, median of each.
        let mut small = None;
        if rows.is_empty() {
            let (mut big_v, mut small_v) = (vec![snapshot_ns], Vec::new());
            for i in 0..2 * plan.profile_reps - 1 {
                if i % 2 == 0 {
                    small_v
                        .push(snapshot_cost(ctx, plan, mode, &["--max-destinations", "1024"])?.0);
                } else {
                    big_v.push(snapshot_cost(ctx, plan, mode, &[])?.0);
                }
            }
            snapshot_ns = super::stats::Spread::of(&big_v).map_or(snapshot_ns, |s| s.median);
            small = super::stats::Spread::of(&small_v).map(|s| s.median);
        }
        drop(holders);
        rows.push(ScanCost {
            sockets,
            tcp_entries: entries,
            procscan_ns,
            ss_ns,
            snapshot_ns,
            snapshots,
            snapshot_small_maps_ns: small,
            census: meta["census"]["outbound"].as_u64(),
        });
    }
    Ok(rows)
}
