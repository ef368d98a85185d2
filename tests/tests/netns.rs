//! IPv6 and SYN timeouts, inside network namespaces the tests create. tracer runs in the host
//! namespace: its programs see every namespace's sockets.

use std::{process::Command, time::Instant};

use tracer_tests::*;

fn tconn() -> &'static str {
    env!("CARGO_BIN_EXE_tconn")
}

#[test]
fn ipv6_counts_are_exact_per_cohort() {
    let ns = Netns::new("v6");
    let ip = tool("ip");
    for a in ["fd00:10::1/128", "fd00:20::1/128"] {
        sh(Command::new(&ip).args(["-n", &ns.name, "addr", "add", a, "dev", "lo", "nodad"]));
    }
    let run = Run::start("ipv6", &["--old", "fd00:10::/64", "--new", "fd00:20::/64"]);
    sh(ns.cmd(tconn()).args(["pair", "[fd00:10::1]", "30"]));
    sh(ns.cmd(tconn()).args(["pair", "[fd00:20::1]", "40"]));
    // Refused: nothing listens on this port of an old address.
    let r = sh(ns.cmd(tconn()).args(["connect", "[fd00:10::1]:9", "5"]));
    assert_eq!(r.trim(), "ok=0 failed=5");
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.cohort("old"), (35, 30, 5, 30, 0));
    assert_eq!(out.cohort("new"), (40, 40, 0, 40, 0));
    assert_eq!(out.inbound("old"), (30, 30, 0));
    assert_eq!(out.destination("fd00:10::1"), Some((35, 30, 5, 30, 0)));
}

#[test]
fn v4_mapped_ipv6_folds_into_ipv4() {
    let s = Server::start("127.137.0.5");
    let run = Run::start(
        "mapped",
        &["--old", "127.137.0.0/16", "--new", "127.147.0.0/16"],
    );
    let mapped = format!("[::ffff:127.137.0.5]:{}", s.addr.port());
    let r = sh(Command::new(tconn()).args(["connect", &mapped, "4"]));
    assert_eq!(r.trim(), "ok=4 failed=0");
    let out = run.stop();
    assert_eq!(out.destination("127.137.0.5"), Some((4, 4, 0, 4, 0)));
    assert_eq!(out.cohort("old"), (4, 4, 0, 4, 0));
}

#[test]
fn a_syn_without_answer_is_an_attempt_then_a_failure() {
    let ns = Netns::new("syn");
    let nft = tool("nft");
    sh(ns.cmd("sysctl").args(["-qw", "net.ipv4.tcp_syn_retries=1"]));
    sh(ns.cmd(&nft).args(["add", "table", "inet", "t"]));
    sh(ns.cmd(&nft).args([
        "add",
        "chain",
        "inet",
        "t",
        "out",
        "{ type filter hook output priority 0 ; }",
    ]));
    sh(ns.cmd(&nft).args([
        "add", "rule", "inet", "t", "out", "tcp", "dport", "9", "drop",
    ]));
    let run = Run::start(
        "syn-timeout",
        &["--old", "127.137.0.0/16", "--new", "127.147.0.0/16"],
    );
    let t0 = Instant::now();
    let r = sh(ns.cmd(tconn()).args(["connect", "127.137.77.1:9", "1"]));
    let took = t0.elapsed();
    assert_eq!(r.trim(), "ok=0 failed=1");
    // One retransmission: about 1 s + 2 s before the kernel gives up.
    assert!(
        took.as_secs_f64() > 2.0 && took.as_secs_f64() < 10.0,
        "{took:?}"
    );
    let out = run.stop();
    assert_eq!(out.destination("127.137.77.1"), Some((1, 0, 1, 0, 0)));
    assert_eq!(out.cohort("old"), (1, 0, 1, 0, 0));
}
