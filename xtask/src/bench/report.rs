//! bench/RESULTS.md and bench/results.json: the machine, a table per figure, and the targets
//! with met/missed and the measured reason. Summaries are computed once, as JSON, and the
//! Markdown is rendered from that JSON, so both always agree.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Plan,
    contenders::{
        BPFTRACE_FLOOR_SCRIPT, BPFTRACE_SCRIPT, Contender, PROCSCAN_PIPELINE, SS_COMMAND,
    },
    phases::{BpfTrial, DestTrial, ScanCost, TARGETS, Trial},
    stats::{Spread, ratio},
};

/// Where and when it was measured.
pub struct Machine(Value);

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    pub fn now() -> Machine {
        let model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let date = crate::utc_now();
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        Machine(
            json!({"nproc": nproc, "cpu_model": model, "kernel": read("/proc/sys/kernel/osrelease").trim(),
            "mem_mib": mem_kib / 1024, "date": date, "loadavg_start": loadavg()}),
        )
    }

    pub fn finish(mut self) -> Value {
        self.0["loadavg_end"] = json!(loadavg());
        self.0
    }
}

pub struct Report<'a> {
    pub plan: &'a Plan,
    pub machine: Value,
    pub contenders: &'a [Contender],
    pub trials: &'a [Trial],
    pub bpf: &'a [BpfTrial],
    pub dests: &'a [DestTrial],
    pub scans: &'a [ScanCost],
    pub took: Duration,
}

fn sj(values: &[f64]) -> Value {
    Spread::of(values).map_or(Value::Null, |s| s.json())
}

fn sp(v: &Value) -> Option<Spread> {
    Some(Spread {
        median: v["median"].as_f64()?,
        min: v["min"].as_f64()?,
        max: v["max"].as_f64()?,
        n: v["n"].as_u64()? as usize,
    })
}

/// A Spread-JSON shown with `digits` decimals after scaling, or `n/a`.
fn cell(v: &Value, scale: f64, digits: usize) -> String {
    sp(v).map_or("n/a".into(), |s| {
        Spread {
            median: s.median * scale,
            min: s.min * scale,
            max: s.max * scale,
            n: s.n,
        }
        .show(digits)
    })
}

/// A share as a percentage, or `n/a`.
fn pct(v: &Value) -> String {
    match cell(v, 100.0, 3) {
        s if s == "n/a" => s,
        s => s + " %",
    }
}

impl Report<'_> {
    fn throughput(&self) -> Value {
        let base = |round: usize| {
            self.trials
                .iter()
                .find(|t| t.round == round && t.contender == Contender::Baseline)
                .map(|t| t.churn.rate())
        };
        let mut summary = serde_json::Map::new();
        for c in self.contenders {
            let ts: Vec<&Trial> = self.trials.iter().filter(|t| t.contender == *c).collect();
            let f = |g: &dyn Fn(&Trial) -> Option<f64>| {
                sj(&ts.iter().filter_map(|t| g(t)).collect::<Vec<_>>())
            };
            summary.insert(c.key(), json!({
                "label": c.label(),
                "connects_per_s": f(&|t| Some(t.churn.rate())),
                "share_of_baseline": f(&|t| base(t.round).map(|b| ratio(t.churn.rate(), b))),
                "truth": f(&|t| Some(t.churn.connects as f64)),
                "counted": f(&|t| t.counted.map(|n| n as f64)),
                "counted_share": f(&|t| t.counted.map(|n| ratio(n as f64, t.churn.connects as f64))),
                "missed": f(&|t| t.counted.map(|n| t.churn.connects as f64 - n as f64)),
                "lost_events": f(&|t| t.lost_events.map(|n| n as f64)),
                "cpu_percent": f(&|t| t.cpu_ns.map(|n| n as f64 * 100.0 / (t.churn.elapsed_ms.max(1) as f64 * 1e6))),
                "peak_rss_kib": f(&|t| t.hwm_kib.map(|n| n as f64)),
                "tcp_entries": f(&|t| Some(t.tcp_entries as f64)),
            }));
        }
        json!({"trials": self.trials.iter().map(Trial::json).collect::<Vec<_>>(), "summary": summary})
    }

    fn bpf_cost(&self) -> Value {
        let mut summary = Vec::new();
        for c in &super::phases::bpf_contenders(self.contenders) {
            let ts: Vec<&BpfTrial> = self.bpf.iter().filter(|t| t.contender == *c).collect();
            let per = |g: &dyn Fn(u64, u64, u64, u64) -> f64| {
                sj(&ts
                    .iter()
                    .map(|t| {
                        let (ns, n, m) = t.total();
                        g(ns, n, m, t.churn.connects)
                    })
                    .collect::<Vec<_>>())
            };
            let mut progs: Vec<Value> = Vec::new();
            if let Some(first) = ts.first() {
                for p in &first.progs {
                    let runs: Vec<_> = ts
                        .iter()
                        .filter_map(|t| t.progs.iter().find(|q| q.name == p.name))
                        .collect();
                    let cnt: u64 = runs.iter().map(|q| q.run_cnt).sum();
                    if cnt == 0 {
                        continue;
                    }
                    progs.push(json!({"name": p.name, "type": p.kind,
                        "ns_per_run": sj(&runs.iter().map(|q| ratio(q.run_time_ns as f64, q.run_cnt as f64)).collect::<Vec<_>>()),
                        "runs_per_connection": sj(&ts.iter().zip(&runs).map(|(t, q)| ratio(q.run_cnt as f64, t.churn.connects as f64)).collect::<Vec<_>>())}));
                }
            }
            summary.push(json!({"contender": c.key(), "label": c.label(),
                "ns_per_event": per(&|ns, n, _, _| ratio(ns as f64, n as f64)),
                "ns_per_connection": per(&|ns, _, _, k| ratio(ns as f64, k as f64)),
                "events_per_connection": per(&|_, n, _, k| ratio(n as f64, k as f64)),
                "recursion_misses": per(&|_, _, m, _| m as f64),
                "programs": progs}));
        }
        json!({"trials": self.bpf.iter().map(BpfTrial::json).collect::<Vec<_>>(), "summary": summary})
    }

    fn destinations(&self) -> Value {
        let summary: Vec<Value> = self.plan.dest_counts.iter().map(|&d| {
            let ts: Vec<&DestTrial> = self.dests.iter().filter(|t| t.destinations == d).collect();
            json!({"destinations": d,
                "cpu_percent": sj(&ts.iter().map(|t| t.cpu_percent()).collect::<Vec<_>>()),
                "peak_rss_mib": sj(&ts.iter().map(|t| t.hwm_kib as f64 / 1024.0).collect::<Vec<_>>()),
                "connects_per_s": sj(&ts.iter().map(|t| t.churn.rate()).collect::<Vec<_>>()),
                "counted_share": sj(&ts.iter().filter_map(|t| Some(ratio(t.counted? as f64, t.churn.connects as f64))).collect::<Vec<_>>())})
        }).collect();
        json!({"trials": self.dests.iter().map(DestTrial::json).collect::<Vec<_>>(), "summary": summary})
    }

    fn scan_cost(&self) -> Value {
        let summary: Vec<Value> = self
            .scans
            .iter()
            .map(|s| {
                let r = |v: &[f64]| {
                    sj(&v
                        .iter()
                        .map(|x| ratio(*x, s.snapshot_ns))
                        .collect::<Vec<_>>())
                };
                json!({"sockets": s.sockets, "tcp_entries": s.tcp_entries, "census": s.census,
                "procscan_cpu_ns": sj(&s.procscan_ns), "ss_cpu_ns": sj(&s.ss_ns),
                "tracer_snapshot_cpu_ns": s.snapshot_ns,
                "tracer_snapshot_small_maps_cpu_ns": s.snapshot_small_maps_ns,
                "procscan_per_snapshot": r(&s.procscan_ns), "ss_per_snapshot": r(&s.ss_ns)})
            })
            .collect();
        json!({"rows": self.scans.iter().map(ScanCost::json).collect::<Vec<_>>(), "summary": summary})
    }

    pub fn json(&self) -> Value {
        let mut v = json!({
            "schema": 1,
            "machine": self.machine,
            "plan": self.plan.json(),
            "took_s": self.took.as_secs(),
            "workload": {"targets": TARGETS.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                         "bpftrace_script": BPFTRACE_SCRIPT, "procscan": PROCSCAN_PIPELINE, "ss": SS_COMMAND},
            "contenders": self.contenders.iter().map(Contender::key).collect::<Vec<_>>(),
            "throughput": self.throughput(),
            "bpf_cost": self.bpf_cost(),
            "destinations": self.destinations(),
            "scan_cost": self.scan_cost(),
        });
        judge(&mut v);
        v["vm_matrix"] = super::history::vm_matrix();
        v
    }
}

/// The sections derived from a run's figures: the targets' verdicts and the before/after
/// comparison. Made for a new run and again by `bench --render` from a committed one.
pub fn judge(v: &mut Value) {
    v["targets"] = super::targets::evaluate(v);
    v["before_after"] = super::history::before_after(v);
}

/// RESULTS.md from results.json.
pub fn render(v: &Value) -> String {
    let m = &v["machine"];
    let p = &v["plan"];
    let mut s = String::new();
    let mut w = |line: &str| {
        s.push_str(line);
        s.push('\n');
    };
    w("# Benchmarks: tracer against the alternatives\n");
    w("Written by `cargo xtask bench` (do not edit by hand; `results.json` has every round). Each");
    w("figure is the median over interleaved rounds, with the range [min–max] of the rounds.\n");
    w(&format!(
        "- Machine: {} CPUs ({}), {} MiB, kernel {}\n- Date: {} ({} run, {} s)\n- Load average: {} at the start, {} at the end",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_mib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        if p["quick"] == true { "quick" } else { "full" },
        v["took_s"],
        m["loadavg_start"].as_str().unwrap_or("?"),
        m["loadavg_end"].as_str().unwrap_or("?")
    ));
    w(&format!(
        "- Workload: {} client threads doing connect/send 1 byte/close as fast as they can for {} s to \
         listeners on {} (old) and {} (new); the server reads to EOF and closes. {} rounds.",
        p["threads"], p["churn_secs"], TARGETS[0], TARGETS[1], p["rounds"]
    ));
    if p["quick"] == true {
        w(
            "\n**Quick run**: a check that the harness works, not a measurement (1 round, short runs, small sizes).",
        );
    }
    w("\n## Throughput (connects/s) and accuracy\n");
    w(
        "Accuracy: what each contender counted for the workload's two addresses against the workload's own",
    );
    w(
        "count of successful connects. tracer and bpftrace count `CLOSE -> SYN_SENT` transitions; the scanners",
    );
    w("can only count the connections that happen to be ESTABLISHED at the moment of a scan.\n");
    w(
        "| contender | connects/s | share of baseline | counted / workload | missed per run | lost events | entries in /proc/net/tcp |",
    );
    w("|---|---|---|---|---|---|---|");
    for key in v["contenders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let r = &v["throughput"]["summary"][key];
        {
            w(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r["label"].as_str().unwrap_or(key),
                cell(&r["connects_per_s"], 1.0, 0),
                cell(&r["share_of_baseline"], 1.0, 3),
                pct(&r["counted_share"]),
                cell(&r["missed"], 1.0, 0),
                cell(&r["lost_events"], 1.0, 0),
                cell(&r["tcp_entries"], 1.0, 0)
            ));
        }
    }
    w(
        "\n## BPF cost (run_time_ns / run_cnt with run-time statistics on, as kernel.bpf_stats_enabled=1 does)\n",
    );
    w(
        "All programs of the contender together, during the churn only. On loopback one connection is both",
    );
    w(
        "halves (client and server socket), so a connection lifecycle is ~10 transitions here, 5 per side.\n",
    );
    w(
        "| contender | ns per event | events per connection | ns per connection | skipped runs (recursion) |",
    );
    w("|---|---|---|---|---|");
    for r in v["bpf_cost"]["summary"].as_array().into_iter().flatten() {
        w(&format!(
            "| {} | {} | {} | {} | {} |",
            r["label"].as_str().unwrap_or("?"),
            cell(&r["ns_per_event"], 1.0, 1),
            cell(&r["events_per_connection"], 1.0, 2),
            cell(&r["ns_per_connection"], 1.0, 0),
            cell(&r["recursion_misses"], 1.0, 0)
        ));
    }
    w("\nPer program:\n");
    w("| contender | program | type | ns per run | runs per connection |");
    w("|---|---|---|---|---|");
    for r in v["bpf_cost"]["summary"].as_array().into_iter().flatten() {
        for q in r["programs"].as_array().into_iter().flatten() {
            w(&format!(
                "| {} | {} | {} | {} | {} |",
                r["contender"].as_str().unwrap_or("?"),
                q["name"].as_str().unwrap_or("?"),
                q["type"].as_str().unwrap_or("?"),
                cell(&q["ns_per_run"], 1.0, 1),
                cell(&q["runs_per_connection"], 1.0, 2)
            ));
        }
    }
    super::history::render_before_after(v, &mut w);
    w("\n## tracer userspace at a 1 s interval, by number of destinations\n");
    w(&format!(
        "The churn spreads over N addresses (half in 127.10.0.0/16, half in 127.20.0.0/16) inside a network \
        namespace of the bench's own, {} s per run, {} rounds; CPU is tracer's (all threads, from schedstat) \
        during the churn, as % of one core; RSS is VmHWM.\n",
        p["dest_secs"], p["dest_rounds"]
    ));
    w(
        "The last column compares tracer's old + new cohort attempts with the workload's count; on this",
    );
    w(
        "shared host they also include other tests' connections to 127.10.0.0/16 and 127.20.0.0/16.\n",
    );
    w(
        "| destinations | tracer CPU (% of one core) | peak RSS (MiB) | connects/s | cohort attempts / workload |",
    );
    w("|---|---|---|---|---|");
    for r in v["destinations"]["summary"]
        .as_array()
        .into_iter()
        .flatten()
    {
        w(&format!(
            "| {} | {} | {} | {} | {} % |",
            r["destinations"],
            cell(&r["cpu_percent"], 1.0, 3),
            cell(&r["peak_rss_mib"], 1.0, 1),
            cell(&r["connects_per_s"], 1.0, 0),
            cell(&r["counted_share"], 100.0, 3)
        ));
    }
    w("\n## One scan against one tracer snapshot, by open sockets\n");
    w(&format!(
        "Background: established loopback connections held open (2 sockets each), spread over processes \
        within the fd limit. CPU of one run of the awk pipeline (`{}`, with its shell) and of one `{}`, \
        from getrusage of the reaped children, {} runs each; one tracer snapshot: tracer's CPU over {} ms \
        at a 100 ms interval divided by the snapshots written.\n",
        PROCSCAN_PIPELINE.replace('|', "\\|"),
        SS_COMMAND,
        p["scan_reps"],
        p["snapshot_window_ms"]
    ));
    w(
        "| open sockets | entries in /proc/net/tcp{,6} | /proc scan (ms CPU) | ss (ms CPU) | tracer snapshot (µs CPU) | scan / snapshot | ss / snapshot |",
    );
    w("|---|---|---|---|---|---|---|");
    for r in v["scan_cost"]["summary"].as_array().into_iter().flatten() {
        w(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {} |",
            r["sockets"],
            r["tcp_entries"],
            cell(&r["procscan_cpu_ns"], 1e-6, 2),
            cell(&r["ss_cpu_ns"], 1e-6, 2),
            r["tracer_snapshot_cpu_ns"].as_f64().unwrap_or(f64::NAN) / 1000.0,
            cell(&r["procscan_per_snapshot"], 1.0, 0),
            cell(&r["ss_per_snapshot"], 1.0, 0)
        ));
    }
    for r in v["scan_cost"]["summary"].as_array().into_iter().flatten() {
        if let Some(small) = r["tracer_snapshot_small_maps_cpu_ns"].as_f64() {
            let big = r["tracer_snapshot_cpu_ns"].as_f64().unwrap_or(f64::NAN);
            let verdict = if small < 0.8 * big {
                "Iterating a BPF hash map walks all of its buckets, so an idle snapshot mostly pays \
                 for the size of DEST, LOCAL_IN and PROCS, not for what is in them."
            } else {
                "No clear gain from smaller maps in this run: the idle cost is elsewhere (or lost in noise)."
            };
            w(&format!(
                "\nProfile of the idle snapshot ({} open sockets, median of {} runs each, interleaved): \
                 {:.1} µs with the default maps (`--max-destinations 65536`), {:.1} µs with \
                 `--max-destinations 1024`. {verdict}",
                r["sockets"],
                v["plan"]["profile_reps"],
                big / 1000.0,
                small / 1000.0
            ));
        }
    }
    super::history::render_vm(v, &mut w);
    w("\n## Targets\n");
    w("| target | measured | verdict | why |");
    w("|---|---|---|---|");
    for t in v["targets"].as_array().into_iter().flatten() {
        let verdict = match t["met"].as_bool() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        w(&format!(
            "| {} | {} | {} | {} |",
            t["target"].as_str().unwrap_or("?"),
            t["measured"].as_str().unwrap_or("n/a"),
            verdict,
            t["why"].as_str().unwrap_or("")
        ));
    }
    w(&format!("\n{}", super::targets::NOTES));
    w(&format!(
        "\n## The contenders, exactly\n\n- bpftrace: `{BPFTRACE_SCRIPT}`\n- bpftrace floor (BPF cost rounds only): `{BPFTRACE_FLOOR_SCRIPT}`\n- /proc scan: `{PROCSCAN_PIPELINE}` every second\n- ss: `{SS_COMMAND}` every second\n- tracer: `tracer watch --headless --interval 1s --json FILE --old 127.10.0.0/16 --new 127.20.0.0/16 --connect-hook MODE`\n- tracer, hooks only (BPF cost rounds only): the same with `--hooks-only`, in the mode `watch` picks: every program attached as usual, each returning at once, nothing counted (the run fails unless it counted 0)"
    ));
    s
}
