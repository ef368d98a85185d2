//! The targets, judged from results.json, each with the measured number and, where it is
//! missed, the reason as far as the other figures of the same run show it.

use serde_json::{Value, json};

/// Fixed notes printed under the targets table.
pub const NOTES: &str = "\
### Reading these numbers

- The dev host is a shared 2-CPU VM where other engineers compile and test at the same time (see
  the load average above): the throughput ratios carry several percent of noise, which is why every
  figure shows its range. The lead re-runs `cargo xtask bench` on a quiet machine.
- The churn is loopback, so both halves of every connection run on this host: the BPF programs fire
  for the client and the server socket (about 10 transitions per connection), twice what a proxy
  that only connects out would see. The per-connection figures are therefore an upper bound.
- Run time per event is measured with BPF run-time statistics on, which add two clock reads per
  program run; throughput rounds run with them off.
- Hosts differ, and not in proportion: the ratios within one run are the figures to compare, not
  figures of runs on other days (the before/after table above gives each run as multiples of its
  own floor for that reason). The AMD guests report the kernel's `spec_rstack_overflow` mitigation
  (a thunk on every kernel return), which makes every helper and map call dearer there than on
  the Intel guests; tracer makes about a dozen per connection, bpftrace one per event.
- The hooks-only row is tracer's own object with every program returning at once: the same
  attachments and run counts, no work. It is the lowest any tracer doing its work on these hooks
  can cost, so it bounds the 2x target from below in the same run.

### What issue 15 changed, and what was measured but not kept

- The state program is `tp_btf` where it loads (`--state-hook auto`), the classic tracepoint
  otherwise: no trace record is built and copied, and the transitions nothing counts return before
  any read. Both stay forced in the bench (the two tracer rows) and in the VM matrix.
- The destination is classified once per connection (at the connect, the accept), host members of
  the sets by an exact-match hash before the LPM trie, and each looked up only when it holds
  members.
- Socket-local storage (`SK_STORAGE`) for the per-socket record was measured beside `tp_btf` and
  dropped: ~15 % more per connection than the LRU hash here (an allocation and a memory-cgroup
  charge per socket, a free by RCU at its end), see the README section on cost and accuracy.
- The DNS capture's per-packet program decides that a packet is no DNS answer from its linear header
  in place (no helper call): ~134 -> ~70 ns per received packet. One cgroup connect program per
  family serves both the unsent notes and the DNS owners (one run per connect, not two). The
  `tp_btf` program loads `struct sock` fields directly at BTF offsets from frozen `.rodata`
  instead of through `bpf_probe_read_kernel`. The unsent note is timed in jiffies, which the
  verifier turns into one load: a clock read (the coarse one included) was ~90-100 ns of the
  connect hook's ~200 on the AMD guest (5 paired runs: 201 -> 128 ns per run).
- Ablations measured and not kept (ns per connection saved, paired runs): per-process counters
  off ~440, per-destination counters off ~250-400, inbound counting off ~250; a per-CPU LRU for the
  socket records (`BPF_F_NO_COMMON_LRU`) was no cheaper. What is left is about a dozen hash-map
  operations per connection. The row index in the socket record and the counters in arrays
  (below) took the later transitions off the hashes; the per-socket record, the rows' index at
  the connect and the cohort counters remain per event.
- Found with `llvm-objdump` on the object: the linker's in-order memcpy mode turned every
  zeroing, down to a struct's padding, into a call to a byte-at-a-time `memset` (19 in the state
  program, 5 in connect4); the eBPF crate's build script now turns that mode off, so LLVM writes
  the stores. The connect syscall's exit reads its result from the record first and returns for
  every connect that reached SYN_SENT without looking at the thread's slot (~100 -> ~52 ns).
- The counter rows' per-CPU slots were `row * cpus + cpu`: two CPUs counting connections to one
  destination wrote the same cache line (~8 contended lines per loopback connection). They are
  `cpu * rows + row` now, each CPU's slots together. Together these took the state program from
  ~125 to ~106 ns per run and all programs from ~1.8 to ~1.5 µs per connection, below bpftrace
  (paired runs on the Xeon guest). Padding the unsent notes to a cache line each was measured too
  and made no difference.
- Measured on the AMD guest and not kept (6 paired runs each): the connect's start time taken
  from the connect hook's note instead of a second clock read (the state program 262 against
  264 ns per run, the connect hook +22 ns for the precise clock it then needs); one
  `bpf_get_current_pid_tgid` call fewer per connect (3877 against 3877 ns per connection).
- Where a connection's BPF time goes (history: AMD guest, 2026-12-08, one build with a load-time
  switch per part, 3 interleaved rounds each, per loopback connection): all programs ~3250-3570 ns;
  without the per-process counters, the cohort lookup, the inbound counting, the destination
  rows, the latency histogram and its clock reads together ~2500-2650; without the per-socket
  record as well ~1870-2020; every program returning at once ~1250-1400, of which the DNS
  capture's per-packet runs are ~560. The per-socket record kept as a plain preallocated hash
  instead of the LRU hash: no difference (3673 against 3703, and 2701 against 2656 with the rest
  switched off). A per-CPU memo of what a connect and an accept look up (the trie, the
  destination, local-address and process rows' indexes; a generation to follow changes of the
  sets) saved ~85-130 ns per connection (2-4 %, 4 paired rounds) and was not kept: the lookups
  are cheap beside the per-socket record's insert and delete.
- Not a lever: the DNS answers through `tp_btf/skb_copy_datagram_iovec` (one run per datagram
  read instead of one per received packet). `udp_recvmsg` copies a linear datagram with
  `copy_linear_skb`, which does not pass that tracepoint: against dnsmasq, 3 answers read by
  `recvfrom` gave 3 `sock_recv_length` events and 0 `skb_copy_datagram_iovec` events.
- Considered and not built: the DNS answers from `tp_btf/sk_data_ready` on 6.6+ (one run per
  wakeup of a reader instead of one per received packet: ~3 instead of 8 runs per loopback
  connection). A tracing program has no `bpf_skb_load_bytes`: it could read an answer only from
  the linear part of the queued skb, and drivers that keep only the first ~256 bytes there (the
  rest in page fragments) would cut longer answers, CNAME chains of the very names being moved.
- The sampler keeps the rows of DEST, LOCAL_IN, PROCS and the failure maps while the cohort totals
  stand still (the kernel bumps those last), so an idle snapshot reads no big map; it keeps a copy
  only once the totals stood still for an interval, and aya parses the kernel BTF after the object
  is loaded, not beside the loader's own copy (peak RSS: idle ~43 -> ~30 MiB, 60k active
  destinations ~70 -> ~43 MiB).
- Counter rows: the first keys of DEST, LOCAL_IN and PROCS own a row for good, in mmapped arrays
  (a slot per CPU, each CPU's slots together), found once per connection through a plain hash and kept in the socket record;
  the kernel counts the rows it takes, and the sampler reads only those, in place. The kernel's
  batch walk of the per-CPU hashes (~150-200 ns per entry, ~57 % of tracer's CPU at 60k) is gone:
  60k active destinations 4.2-4.6 % -> ~1.6 % of a core.";

/// `a`'s cost per connection over `b`'s, round by round: the two ran minutes apart at most, so
/// the host's drift between rounds cancels out of each ratio.
fn paired(v: &Value, a: &str, b: &str) -> Option<super::stats::Spread> {
    let trials = v["bpf_cost"]["trials"].as_array()?;
    let per_conn = |key: &str, round: u64| {
        trials
            .iter()
            .find(|t| t["contender"] == key && t["round"].as_u64() == Some(round))
            .and_then(|t| Some(t["run_time_ns"].as_f64()? / t["connects"].as_f64()?))
    };
    let ratios: Vec<f64> = trials
        .iter()
        .filter(|t| t["contender"] == a)
        .filter_map(|t| {
            let round = t["round"].as_u64()?;
            Some(super::stats::ratio(
                per_conn(a, round)?,
                per_conn(b, round)?,
            ))
        })
        .collect();
    super::stats::Spread::of(&ratios)
}

pub(super) fn med(v: &Value) -> Option<f64> {
    v["median"].as_f64()
}

fn row(target: &str, measured: String, met: Option<bool>, why: String) -> Value {
    json!({"target": target, "measured": measured, "met": met, "why": why})
}

/// The tracer row of a per-contender summary object (the first connect hook).
fn tracer_key(v: &Value) -> Option<String> {
    v["throughput"]["summary"]
        .as_object()?
        .keys()
        .find(|k| k.starts_with("tracer-"))
        .cloned()
}

/// Why the 2x target is missed. With the hooks-only row (tracer's programs returning at once,
/// same run) the bound is measured; without it (runs before that row existed) it is estimated
/// from the run count at the floor's price per run.
fn two_x_reason(
    events: Option<f64>,
    per_event: Option<f64>,
    bt: Option<f64>,
    floor: Option<f64>,
    floor_conn: Option<f64>,
    ns_conn: Option<f64>,
    hooks: Option<(f64, Option<super::stats::Spread>)>,
) -> String {
    let runs = match (events, per_event) {
        (Some(e), Some(p)) => format!(
            "{e:.1} program runs per loopback connection (both halves) x {p:.1} ns; one side alone is about half. "
        ),
        _ => String::new(),
    };
    match (hooks, floor_conn, ns_conn) {
        (Some((h, by_round)), Some(fc), Some(n)) => {
            let verdict = if h >= 2.0 * fc {
                "so no work done on these hooks can meet the target: they exceed it with every program empty".to_string()
            } else {
                format!(
                    "so the target leaves tracer's work {:.0} ns per connection, against {:.0} ns now",
                    2.0 * fc - h,
                    n - h
                )
            };
            format!(
                "{runs}Measured in this run: tracer's programs returning at once (hooks only: the state events, \
                 every received packet for the DNS capture, the connect hook and the connect syscall's exit) cost \
                 {h:.0} ns per connection, {:.2}x the floor program's {fc:.0} ns by themselves{}, {verdict}. tracer's own \
                 work is the other {:.0} ns ({:.0} %): the destination classified once, a per-socket record, \
                 counters per cohort, destination, process and local address{}",
                h / fc,
                by_round.map_or(String::new(), |p| format!(" ({} round by round)", p.show_unit(2, "x"))),
                n - h,
                (n - h) * 100.0 / n,
                bt.zip(floor).map_or(String::new(), |(b, f)| format!(
                    "; bpftrace's one-map program took {b:.1} ns per event against the floor's {f:.1}"
                )),
            )
        }
        _ => match (events, per_event, bt, floor, floor_conn) {
            (Some(e), Some(p), Some(b), Some(f), Some(fc)) => format!(
                "{runs}At the floor's own {f:.1} ns per run, {e:.0} runs that did nothing would already cost {:.1}x the floor \
                 program (which runs on the state events only): the target leaves no room for any work. \
                 In the same run an empty program on the same tracepoint (the floor) took {f:.1} ns per event and \
                 bpftrace's one-map program {b:.1} ns, so tracer's own work is ~{:.0} ns per event above the floor: \
                 per connection it classifies the destination once, keeps a per-socket record and counts per cohort, \
                 destination, process and local address (about a dozen map operations, each ~an order of magnitude \
                 above the empty program's run on this busy VM)",
                e * f / fc,
                p - f,
            ),
            _ => runs.trim_end().to_string(),
        },
    }
}

pub fn evaluate(v: &Value) -> Value {
    let quick = v["plan"]["quick"] == true;
    let mut rows = Vec::new();
    let tk = tracer_key(v).unwrap_or_default();
    let tp = &v["throughput"]["summary"];
    let t = &tp[&tk];
    let bpf: Vec<&Value> = v["bpf_cost"]["summary"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let tb = bpf.iter().find(|r| r["contender"] == tk.as_str());
    let bb = bpf.iter().find(|r| r["contender"] == "bpftrace");
    let bt = bb.and_then(|r| med(&r["ns_per_event"]));
    let floor_row = bpf.iter().find(|r| r["contender"] == "bpftrace-floor");
    let floor = floor_row.and_then(|r| med(&r["ns_per_event"]));
    let floor_conn = floor_row.and_then(|r| med(&r["ns_per_connection"]));
    let bt_conn = bb.and_then(|r| med(&r["ns_per_connection"]));
    let hooks_conn = bpf
        .iter()
        .find(|r| r["contender"] == "hooks-only")
        .and_then(|r| med(&r["ns_per_connection"]));

    // Throughput.
    let share = med(&t["share_of_baseline"]);
    let min_share = t["share_of_baseline"]["min"].as_f64();
    let base_rate = med(&tp["none"]["connects_per_s"]);
    let ns_conn = tb.and_then(|r| med(&r["ns_per_connection"]));
    let nproc = v["machine"]["nproc"].as_f64().unwrap_or(1.0);
    let why = match (ns_conn, base_rate) {
        (Some(ns), Some(rate)) => format!(
            "the workload costs at most ~{:.0} ns of CPU per connection ({} CPUs / {:.0} connects/s, less on a busy host); tracer's programs add ~{:.0} ns, so a share of ~{:.3} or lower is expected from BPF time alone; the rest is noise between rounds (see the range)",
            nproc * 1e9 / rate,
            nproc,
            rate,
            ns,
            1.0 / (1.0 + ns * rate / (nproc * 1e9))
        ),
        _ => String::new(),
    };
    rows.push(row(
        ">= 98% of baseline connect throughput (median of interleaved rounds)",
        share.map_or("n/a".into(), |s| {
            format!(
                "{:.1}% (lowest round {:.1}%)",
                s * 100.0,
                min_share.unwrap_or(s) * 100.0
            )
        }),
        share.map(|s| s >= 0.98),
        why,
    ));

    // BPF per connection.
    let events = tb.and_then(|r| med(&r["events_per_connection"]));
    let per_event = tb.and_then(|r| med(&r["ns_per_event"]));
    rows.push(row(
        "all programs together <= 2x the floor program per connection (same run)",
        match (ns_conn, floor_conn) {
            (Some(n), Some(f)) => format!("{n:.0} ns vs floor {f:.0} ns: {:.1}x", n / f),
            (Some(n), None) => format!("{n:.0} ns"),
            _ => "n/a".into(),
        },
        ns_conn.zip(floor_conn).map(|(n, f)| n <= 2.0 * f),
        two_x_reason(
            events,
            per_event,
            bt,
            floor,
            floor_conn,
            ns_conn,
            hooks_conn.map(|h| (h, paired(v, "hooks-only", "bpftrace-floor"))),
        ),
    ));

    // Userspace CPU and RSS at the largest destination count.
    let d = v["destinations"]["summary"]
        .as_array()
        .and_then(|a| a.last());
    let n_dest = d.and_then(|d| d["destinations"].as_u64()).unwrap_or(0);
    let cpu = d.and_then(|d| med(&d["cpu_percent"]));
    let rss = d.and_then(|d| med(&d["peak_rss_mib"]));
    let measured_60k = n_dest >= 60_000;
    rows.push(row(
        "userspace <= 1% of one core and <= 50 MiB RSS at 1 s interval, 60k destinations",
        match (cpu, rss) {
            (Some(c), Some(r)) => format!("{c:.2}% CPU, {r:.1} MiB at {n_dest} destinations"),
            _ => "n/a".into(),
        },
        match (cpu, rss) {
            (Some(c), Some(r)) if measured_60k => Some(c <= 1.0 && r <= 50.0),
            _ => None,
        },
        match (cpu, measured_60k) {
            (_, false) => "the quick run stops at fewer destinations".into(),
            (Some(c), true) if c > 1.0 => format!(
                "~{:.0} ms of CPU per 1 s snapshot, ~{:.2} µs per destination: the counters are rows in \
                 mmapped arrays now (no hash walk), but the spread churn touches every one of the 60k \
                 destinations (and their local-address and process rows) each interval, so every \
                 interval still builds 3 x 60k rows; `perf record` puts ~30 % in the pass over the \
                 mapped rows (cold memory: ~14 MB), ~11 % in the per-process aggregation (four times per \
                 interval: analysis and NDJSON, this interval and the last) and the rest in building, \
                 sorting and dropping the snapshot; RSS is {}",
                c * 10.0,
                c * 10_000.0 / n_dest.max(1) as f64,
                if rss.is_some_and(|r| r <= 50.0) { "within its target" } else { "over its target too" }
            ),
            _ => String::new(),
        },
    ));

    // Snapshot vs scan at the most sockets.
    let s = v["scan_cost"]["summary"].as_array().and_then(|a| a.last());
    let n_sock = s.and_then(|s| s["sockets"].as_u64()).unwrap_or(0);
    let r = s.and_then(|s| med(&s["procscan_per_snapshot"]));
    rows.push(row(
        "tracer snapshot >= 100x cheaper in CPU than one /proc scan at 70k open sockets",
        r.map_or("n/a".into(), |r| format!("{r:.0}x at {n_sock} sockets")),
        r.filter(|_| n_sock >= 70_000).map(|r| r >= 100.0),
        if n_sock >= 70_000 {
            String::new()
        } else {
            format!("measured up to {n_sock} open sockets only")
        },
    ));

    // Exact counts.
    let missed_max = t["missed"]["max"].as_f64();
    let missed_min = t["missed"]["min"].as_f64();
    let lost = t["lost_events"]["max"].as_f64();
    rows.push(row("exact counts: 0 missed connections at full churn rate",
        missed_max.map_or("n/a".into(), |m| format!("missed {:.0} to {m:.0} per run; lost events up to {:.0}", missed_min.unwrap_or(m), lost.unwrap_or(0.0))),
        missed_max.map(|m| m == 0.0 && missed_min == Some(0.0)),
        match lost {
            Some(l) if l > 0.0 => "the kernel skipped program runs that would have nested on one CPU (recursion_misses, reported as lost_events)".into(),
            _ if missed_max.is_some_and(|m| m != 0.0) => "a difference without lost events: counted includes any other connection to the same two addresses during the run, or misses connects that failed before SYN_SENT".into(),
            _ => String::new(),
        }));

    // Per connection against bpftrace.
    rows.push(row("below bpftrace's one-map count per connection (same run)",
        match (ns_conn, bt_conn) {
            (Some(a), Some(b)) => format!(
                "tracer {a:.0} ns vs bpftrace {b:.0} ns per connection{}",
                paired(v, &tk, "bpftrace").map_or(String::new(), |p| format!(
                    "; round by round tracer/bpftrace {}",
                    p.show_unit(2, "x")
                ))
            ),
            _ => "n/a".into(),
        },
        ns_conn.zip(bt_conn).map(|(a, b)| a < b),
        match (ns_conn, bt_conn) {
            (Some(a), Some(b)) if a >= b => format!(
                "tracer does more per connection than one hash update per event: per-socket record, per-destination, \
                 per-process and per-local-address counters{}",
                floor.map_or(String::new(), |f| format!(" (above the {f:.1} ns floor per event: tracer {:.1} ns, bpftrace {:.1} ns)",
                    per_event.unwrap_or(0.0) - f, bt.unwrap_or(0.0) - f))
            ),
            _ => String::new(),
        }));
    let _ = quick;
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(m: f64, lo: f64, hi: f64) -> Value {
        json!({"median": m, "min": lo, "max": hi, "n": 5})
    }

    fn sample() -> Value {
        json!({
            "plan": {"quick": false},
            "machine": {"nproc": 2},
            "throughput": {"summary": {
                "none": {"connects_per_s": spread(50000.0, 49000.0, 51000.0)},
                "tracer-derived": {"share_of_baseline": spread(0.95, 0.93, 0.97),
                    "missed": spread(0.0, 0.0, 0.0), "lost_events": spread(0.0, 0.0, 0.0)}}},
            "bpf_cost": {"summary": [
                {"contender": "tracer-derived", "ns_per_connection": spread(900.0, 850.0, 950.0),
                 "events_per_connection": spread(10.0, 10.0, 10.0), "ns_per_event": spread(90.0, 85.0, 95.0)},
                {"contender": "bpftrace", "ns_per_event": spread(150.0, 140.0, 160.0),
                 "ns_per_connection": spread(1500.0, 1400.0, 1600.0)},
                {"contender": "bpftrace-floor", "ns_per_event": spread(30.0, 28.0, 32.0),
                 "ns_per_connection": spread(300.0, 280.0, 320.0)}]},
            "destinations": {"summary": [{"destinations": 60000, "cpu_percent": spread(0.5, 0.4, 0.6),
                                          "peak_rss_mib": spread(20.0, 20.0, 21.0)}]},
            "scan_cost": {"summary": [{"sockets": 70000, "procscan_per_snapshot": spread(500.0, 400.0, 600.0)}]},
        })
    }

    #[test]
    fn verdicts_follow_the_numbers() {
        let rows = evaluate(&sample());
        let met: Vec<Option<bool>> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["met"].as_bool())
            .collect();
        assert_eq!(
            met,
            [
                Some(false),
                Some(false),
                Some(true),
                Some(true),
                Some(true),
                Some(true)
            ]
        );
        assert!(
            rows[0]["why"].as_str().unwrap().contains("0.978 or lower"),
            "{}",
            rows[0]["why"]
        );
        assert!(
            rows[1]["why"]
                .as_str()
                .unwrap()
                .contains("~60 ns per event above the floor"),
            "{}",
            rows[1]["why"]
        );
    }

    #[test]
    fn the_hooks_only_row_measures_the_bound_of_the_2x_target() {
        let mut v = sample();
        let hooks = |ns: f64| json!({"contender": "hooks-only", "ns_per_connection": spread(ns, ns - 10.0, ns + 10.0)});
        v["bpf_cost"]["summary"]
            .as_array_mut()
            .unwrap()
            .push(hooks(700.0));
        let why = evaluate(&v)[1]["why"].as_str().unwrap().to_string();
        assert!(
            why.contains("700 ns per connection, 2.33x the floor"),
            "{why}"
        );
        assert!(
            why.contains("no work done on these hooks can meet"),
            "{why}"
        );
        assert!(why.contains("other 200 ns (22 %)"), "{why}");
        v["bpf_cost"]["summary"][3] = hooks(500.0);
        let why = evaluate(&v)[1]["why"].as_str().unwrap().to_string();
        assert!(
            why.contains("leaves tracer's work 100 ns per connection, against 400 ns now"),
            "{why}"
        );
    }

    #[test]
    fn ratios_are_also_taken_round_by_round() {
        let mut v = sample();
        let trial = |round: u64, contender: &str, ns_per_conn: f64| {
            json!({"round": round, "contender": contender, "connects": 1000,
                   "run_time_ns": ns_per_conn * 1000.0})
        };
        // The host slows down from round to round; each round's ratio stays near 0.9.
        v["bpf_cost"]["trials"] = json!([
            trial(0, "tracer-derived", 900.0),
            trial(0, "bpftrace", 1000.0),
            trial(1, "bpftrace", 2000.0),
            trial(1, "tracer-derived", 1900.0),
            trial(2, "tracer-derived", 2400.0),
            trial(2, "bpftrace", 3000.0),
        ]);
        let rows = evaluate(&v);
        let measured = rows[5]["measured"].as_str().unwrap();
        assert!(
            measured.ends_with("round by round tracer/bpftrace 0.90x [0.80–0.95]"),
            "{measured}"
        );
    }

    #[test]
    fn small_runs_are_not_judged_on_the_large_targets() {
        let mut v = sample();
        v["destinations"]["summary"][0]["destinations"] = json!(1000);
        v["scan_cost"]["summary"][0]["sockets"] = json!(2000);
        let rows = evaluate(&v);
        assert!(rows[2]["met"].is_null());
        assert!(rows[3]["met"].is_null());
    }
}
