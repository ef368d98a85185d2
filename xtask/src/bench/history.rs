//! What the bench compares with besides its own contenders: the BPF cost before issue 15 (pinned
//! from the run the issue cites, `bench/before-issue-15.json`), and the last VM kernel matrix
//! run on this checkout (`target/vm/matrix.json`, written by `cargo xtask vm-test`). Two runs on
//! different days are compared only as ratios to the floor program of their own run.

use serde_json::{Value, json};

use super::targets::med;

/// The pinned "before" run.
const BEFORE: &str = include_str!("../../../bench/before-issue-15.json");

/// The summary row of `contender` (or, with `prefix`, of the first whose key starts so).
fn find<'a>(rows: &'a [Value], key: &str, prefix: bool) -> Option<&'a Value> {
    rows.iter().find(|r| {
        let c = r["contender"].as_str().unwrap_or("");
        if prefix { c.starts_with(key) } else { c == key }
    })
}

fn rows(v: &Value) -> Vec<Value> {
    v["bpf_cost"]["summary"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// One side (before or now): tracer's programs, its total per connection, bpftrace's and the
/// floor's, and the ratios to the floor.
fn side(rows: &[Value], tracer: &str) -> Value {
    let t = find(rows, tracer, true);
    let floor = find(rows, "bpftrace-floor", false).and_then(|r| med(&r["ns_per_connection"]));
    let floor_event = find(rows, "bpftrace-floor", false).and_then(|r| med(&r["ns_per_event"]));
    let bt = find(rows, "bpftrace", false).and_then(|r| med(&r["ns_per_connection"]));
    let total = t.and_then(|r| med(&r["ns_per_connection"]));
    let x = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let programs: Vec<Value> = t
        .and_then(|r| r["programs"].as_array())
        .into_iter()
        .flatten()
        .map(|p| {
            let ns = med(&p["ns_per_run"]);
            json!({"name": p["name"], "ns_per_run": ns,
                   "runs_per_connection": med(&p["runs_per_connection"]),
                   "x_floor_event": x(ns, floor_event)})
        })
        .collect();
    json!({"contender": t.map(|r| r["contender"].clone()), "programs": programs,
           "ns_per_connection": total, "floor_ns_per_connection": floor,
           "bpftrace_ns_per_connection": bt, "x_floor": x(total, floor), "x_bpftrace": x(total, bt)})
}

/// Before issue 15 against this run, for results.json.
pub fn before_after(v: &Value) -> Value {
    let before: Value = serde_json::from_str(BEFORE).expect("bench/before-issue-15.json parses");
    json!({"before": {"commit": before["commit"], "date": before["machine"]["date"],
                      "cost": side(&rows(&before), "tracer-")},
           "now": side(&rows(v), "tracer-derived-tp_btf")})
}

/// The last VM matrix of this checkout, if `cargo xtask vm-test` ran here.
pub fn vm_matrix() -> Value {
    let path = crate::vm::matrix_path();
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null)
}

fn ns(v: &Value) -> String {
    v.as_f64().map_or("n/a".into(), |x| format!("{x:.0}"))
}

fn times(v: &Value) -> String {
    v.as_f64().map_or("n/a".into(), |x| format!("{x:.1}x"))
}

/// The before/after section of RESULTS.md.
pub fn render_before_after(v: &Value, w: &mut dyn FnMut(&str)) {
    let ba = &v["before_after"];
    let (b, n) = (&ba["before"]["cost"], &ba["now"]);
    w("\n### Before and after issue 15\n");
    w(&format!(
        "Before: the run the issue cites (commit {}, {}), tracer with the derived connect hook and the \
         classic tracepoint; now: this run, derived connect hook with `tp_btf`. Each run's figures are \
         also given as multiples of its own floor program (an empty program on the same tracepoint), \
         since the two runs are days apart on a shared host.\n",
        ba["before"]["commit"].as_str().unwrap_or("?"),
        ba["before"]["date"].as_str().unwrap_or("?")
    ));
    w(
        "| program | before: ns per run (x floor per event) | now: ns per run (x floor per event) | runs per connection now |",
    );
    w("|---|---|---|---|");
    let before_progs = b["programs"].as_array().cloned().unwrap_or_default();
    let now_progs = n["programs"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = before_progs
        .iter()
        .chain(&now_progs)
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    // Each program once, in the order first seen (before, then the ones new since).
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let by = |ps: &[Value], name: &str| ps.iter().find(|p| p["name"] == name).cloned();
    for name in names {
        let cell = |p: Option<Value>| match p {
            Some(p) => format!("{} ({})", ns(&p["ns_per_run"]), times(&p["x_floor_event"])),
            None => "not there".into(),
        };
        let runs = by(&now_progs, &name)
            .and_then(|p| p["runs_per_connection"].as_f64())
            .map_or("-".into(), |r| format!("{r:.2}"));
        w(&format!(
            "| {name} | {} | {} | {runs} |",
            cell(by(&before_progs, &name)),
            cell(by(&now_progs, &name))
        ));
    }
    w(&format!(
        "\nPer connection, all programs: before {} ns = {} the floor and {} bpftrace's one-map count; \
         now {} ns = {} the floor and {} bpftrace's. The DNS capture programs (`dns_*`) came with \
         another issue after the before run: without them (their runs per connection times their ns \
         per run) tracer's own counting costs {} ns now.",
        ns(&b["ns_per_connection"]),
        times(&b["x_floor"]),
        times(&b["x_bpftrace"]),
        ns(&n["ns_per_connection"]),
        times(&n["x_floor"]),
        times(&n["x_bpftrace"]),
        ns(&without_dns(n))
    ));
}

/// Tracer's cost per connection without the DNS capture programs.
fn without_dns(side: &Value) -> Value {
    let total = side["ns_per_connection"].as_f64();
    let dns: f64 = side["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("dns_")))
        .filter_map(|p| Some(p["ns_per_run"].as_f64()? * p["runs_per_connection"].as_f64()?))
        .sum();
    total.map_or(Value::Null, |t| json!(t - dns))
}

/// The VM kernel matrix section of RESULTS.md.
pub fn render_vm(v: &Value, w: &mut dyn FnMut(&str)) {
    w("\n## VM kernel matrix (last `cargo xtask vm-test` on this checkout)\n");
    let m = &v["vm_matrix"];
    let Some(kernels) = m["kernels"].as_array() else {
        w(
            "Not run on this machine before this bench run: `cargo xtask vm-test` writes it (and `cargo xtask test` runs it).",
        );
        return;
    };
    w(&format!(
        "Run {} (the exact-count scenario, the hook-in-use check and the DNS capture, once per \
         connect hook x state hook forced, in a qemu guest):\n",
        m["date"].as_str().unwrap_or("?")
    ));
    w("| kernel | connect hook | state hook | result |");
    w("|---|---|---|---|");
    for k in kernels {
        for mode in k["modes"].as_array().into_iter().flatten() {
            w(&format!(
                "| {} | {} | {} | {} |",
                k["kernel"].as_str().unwrap_or("?"),
                mode["connect"].as_str().unwrap_or("?"),
                mode["state"].as_str().unwrap_or("?"),
                if mode["pass"] == true {
                    "pass"
                } else {
                    "**FAIL**"
                }
            ));
        }
        w(&format!(
            "\n{}: auto picks {}.",
            k["kernel"].as_str().unwrap_or("?"),
            k["auto"].as_str().unwrap_or("?")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_before_run_has_tracer_bpftrace_and_the_floor() {
        let b = before_after(&json!({}));
        let before = &b["before"]["cost"];
        assert!(before["ns_per_connection"].as_f64().unwrap() > 1000.0);
        assert!(before["x_floor"].as_f64().unwrap() > 1.0);
        assert!(before["x_bpftrace"].as_f64().is_some());
        assert_eq!(before["programs"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn dns_programs_are_left_out_of_the_counting_cost() {
        let side = json!({"ns_per_connection": 1000.0, "programs": [
            {"name": "inet_sock_set_state_btf", "ns_per_run": 80.0, "runs_per_connection": 10.0},
            {"name": "dns_ingress", "ns_per_run": 25.0, "runs_per_connection": 8.0}]});
        assert_eq!(without_dns(&side).as_f64(), Some(800.0));
    }
}
