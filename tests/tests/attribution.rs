//! Per-process attribution: the connect runs in the process, later transitions in softirq; the
//! per-socket record made at the connect attributes them all.

use std::process::Command;

use serde_json::Value;
use tracer_tests::*;

fn process<'a>(out: &'a Output, comm: &str) -> &'a Value {
    out.summary()["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == comm)
        .unwrap_or_else(|| panic!("no process {comm} in {}", out.summary()["processes"]))
}

#[test]
fn two_processes_with_different_comm_are_counted_apart() {
    let run = Run::start(
        "attribution",
        &["--old", "127.132.0.0/16", "--new", "127.142.0.0/16"],
    );
    let tconn = env!("CARGO_BIN_EXE_tconn");
    let a = Command::new(tconn)
        .args(["--comm", "alpha-client", "pair", "127.132.0.6", "12"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let b = Command::new(tconn)
        .args(["--comm", "beta-client", "pair", "127.142.0.6", "7"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (pa, pb) = (a.id(), b.id());
    for mut c in [a, b] {
        assert!(c.wait().unwrap().success());
    }
    let refused = Command::new(tconn)
        .args(["--comm", "beta-client", "connect", "127.132.0.98:9", "3"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&refused.stdout).trim(),
        "ok=0 failed=3"
    );
    let out = run.stop();

    let alpha = process(&out, "alpha-client");
    assert_eq!(n(&alpha["pid"]), pa as u64);
    assert_eq!(counters(&alpha["cohorts"]["old"]), (12, 12, 0, 12, 0));
    assert_eq!(counters(&alpha["cohorts"]["new"]), (0, 0, 0, 0, 0));
    assert!(n(&alpha["cgroup_id"]) > 0);

    let beta: Vec<&Value> = out.summary()["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["comm"] == "beta-client")
        .collect();
    assert_eq!(beta.len(), 2, "two beta-client processes (different pids)");
    let first = beta.iter().find(|p| n(&p["pid"]) == pb as u64).unwrap();
    assert_eq!(counters(&first["cohorts"]["new"]), (7, 7, 0, 7, 0));
    let second = beta.iter().find(|p| n(&p["pid"]) != pb as u64).unwrap();
    assert_eq!(counters(&second["cohorts"]["old"]), (3, 0, 3, 0, 0));
}
