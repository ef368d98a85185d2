//! Ground truth of the real-software failover test (`tests/tests/failover_real.rs`): what each
//! real program logged, read back, summarised for a failure message, and checked in phases.

use std::{collections::BTreeMap, path::Path, process::Command};

use crate::procs::{fields, num};

pub type Fields = BTreeMap<String, String>;

/// One line of the backends' access log (`log_format truth` in tests/failover/backend.conf).
#[derive(Debug, Clone)]
pub struct Hit {
    pub ms: u64,
    pub side: String,
    pub remote: String,
    pub conn: u64,
    pub agent: String,
}

pub fn backend_log(path: &Path) -> Vec<Hit> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (head, agent) = l.split_once(" \"")?;
            let mut w = head.split_whitespace();
            let msec: f64 = w.next()?.parse().ok()?;
            let side = w.next()?.to_string();
            let remote = w.next()?.to_string();
            let f = fields(&w.collect::<Vec<_>>().join(" "));
            Some(Hit {
                ms: (msec * 1000.0).round() as u64,
                side,
                remote,
                conn: num(&f, "conn"),
                agent: agent.trim_end_matches('"').to_string(),
            })
        })
        .collect()
}

/// dnsmasq's query log: how many A queries for `name` it logged.
pub fn queries(path: &Path, name: &str) -> usize {
    let needle = format!("query[A] {name} ");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// Established TCP connections to `dst` inside the namespace, with the owning process:
/// (pid, comm) per connection, from `ss -tnp` (the kernel's socket table).
pub fn holders(ns_cmd: impl Fn(&str) -> Command, dst: &str) -> Vec<(u32, String)> {
    let out = crate::sh(ns_cmd("ss").args(["-Htnp", "state", "established", "dst", dst]));
    let mut v = Vec::new();
    for line in out.lines() {
        // users:(("nginx",pid=4242,fd=7))
        for u in line.split("((").skip(1).flat_map(|s| s.split("),(")) {
            let comm = u.split('"').nth(1).unwrap_or("?").to_string();
            if let Some(pid) = u
                .split("pid=")
                .nth(1)
                .and_then(|p| p.split(',').next())
                .and_then(|p| p.parse().ok())
            {
                v.push((pid, comm));
            }
        }
    }
    v.sort();
    v
}

/// A client's log seen against the switch: lines and sides before and after.
pub fn describe(name: &str, pid: u32, lines: &[Fields], key: &str, t0: u64, switch: u64) -> String {
    let rel = |ms: u64| ms as f64 / 1000.0 - t0 as f64 / 1000.0;
    let mut before: BTreeMap<&str, usize> = BTreeMap::new();
    let mut after: BTreeMap<&str, usize> = BTreeMap::new();
    for l in lines {
        let side = l.get(key).map(String::as_str).unwrap_or("-");
        let m = if num(l, "ms") < switch {
            &mut before
        } else {
            &mut after
        };
        *m.entry(side).or_default() += 1;
    }
    let span = match (lines.first(), lines.last()) {
        (Some(a), Some(b)) => format!("{:+.2}..{:+.2} s", rel(num(a, "ms")), rel(num(b, "ms"))),
        _ => "no lines".into(),
    };
    format!(
        "  {name:<13} pid {pid:<7} {n:>3} requests {span}; {key} before switch {before:?}, after {after:?}",
        n = lines.len()
    )
}

/// Failures of one phase, collected so that one run shows all of them at once.
#[derive(Default)]
pub struct Checks {
    pub failures: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(msg());
        }
    }

    /// Panic with every failure of the phase and the ground truth, if any failed.
    pub fn done(&mut self, phase: &str, truth: &str) {
        if self.failures.is_empty() {
            return;
        }
        let list: Vec<String> = self.failures.iter().map(|f| format!("  - {f}")).collect();
        panic!(
            "{phase}: {} failed\n{}\n\nground truth:\n{truth}",
            list.len(),
            list.join("\n")
        );
    }
}
