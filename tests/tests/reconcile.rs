//! Reconciliation of `open` with the kernel's socket table. A missed close is made on purpose:
//! connections are held, their per-socket records (SOCKS) are deleted with bpftool, then they
//! close, so the programs never see the close. With `--reconcile-every` `open` comes back to
//! the true value and a `reconciled` event says by how much; without it (and without lost
//! events) `open` stays wrong, which shows the test really made the error.
//! Addresses 127.31.0.0/16 (old) and 127.32.0.0/16 (new) only: other tests run alongside.

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use tracer_tests::*;

const OLD: &str = "127.31.0.0/16";
const NEW: &str = "127.32.0.0/16";
/// Connections whose close the programs miss.
const MISSED: usize = 4;
/// Connections held open to the whole run: with ELSEWHERE the true `open` of the old side.
const KEPT: usize = 2;
/// Connections held in a network namespace of the test's own: the programs count every
/// namespace, so the socket table they are reconciled with must cover them too.
const ELSEWHERE: usize = 3;

/// SockInfo (tracer-common) is 64 bytes: cgroup u64, addr [u8; 16] (IPv4 as ::ffff:a.b.c.d),
/// comm [u8; 16], tgid u32, cohort u8, dir u8, established u8, pad u8, syn_ns u64, row u32,
/// proc_row u32.
const SOCKINFO_SIZE: usize = 64;
const ADDR_AT: usize = 8;
const DIR_AT: usize = 45;
const DIR_OUT: u8 = 1;
const DIR_IN: u8 = 2;
const BPF_MAP_TYPE_LRU_HASH: &str = "9";

fn bpftool_json(args: &[&str]) -> Value {
    let out = sh(Command::new(tool("bpftool")).arg("-j").args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}: {out}"))
}

/// The SOCKS map of the tracer with this pid: its map fds' fdinfo give the ids (several
/// tracers may run on this host), bpftool gives their names.
fn socks_map(pid: u32) -> String {
    let mut ids = vec![];
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo of tracer") {
        let text = std::fs::read_to_string(fd.expect("fdinfo entry").path()).unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("map_type:").as_deref() == Some(BPF_MAP_TYPE_LRU_HASH)
            && field("value_size:") == Some(SOCKINFO_SIZE.to_string())
            && let Some(id) = field("map_id:")
        {
            ids.push(id);
        }
    }
    let named: Vec<String> = ids
        .into_iter()
        .filter(|id| bpftool_json(&["map", "show", "id", id])["name"] == "SOCKS")
        .collect();
    assert_eq!(
        named.len(),
        1,
        "one SOCKS map held by tracer {pid}: {named:?}"
    );
    named[0].clone()
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .expect("bpftool prints bytes as an array")
        .iter()
        .map(|b| {
            let s = b.as_str().expect("a hex byte");
            u8::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex byte")
        })
        .collect()
}

/// Delete every SOCKS record of `addr` (remote for outbound, local for inbound sockets).
/// Returns how many outbound and inbound records were deleted.
fn forget(map: &str, addr: Ipv4Addr) -> (usize, usize) {
    let mut want = [0u8; 16];
    want[10] = 0xff;
    want[11] = 0xff;
    want[12..].copy_from_slice(&addr.octets());
    let (mut out, mut inb) = (0, 0);
    let dump = bpftool_json(&["map", "dump", "id", map]);
    for e in dump.as_array().expect("a dump is an array") {
        let (key, value) = (bytes(&e["key"]), bytes(&e["value"]));
        assert_eq!(value.len(), SOCKINFO_SIZE, "SockInfo layout changed");
        if value[ADDR_AT..ADDR_AT + 16] != want {
            continue;
        }
        let hex: Vec<String> = key.iter().map(|b| format!("0x{b:02x}")).collect();
        let mut args = vec!["map", "delete", "id", map, "key"];
        args.extend(hex.iter().map(String::as_str));
        sh(Command::new(tool("bpftool")).args(&args));
        match value[DIR_AT] {
            DIR_OUT => out += 1,
            DIR_IN => inb += 1,
            d => panic!("unknown direction {d}"),
        }
    }
    (out, inb)
}

fn open_of(snapshot: &Value, addr: &str) -> Option<u64> {
    snapshot["destinations"]
        .as_array()?
        .iter()
        .find(|d| d["addr"] == addr)
        .map(|d| n(&d["open"]))
}

/// Hold MISSED connections to 127.31.0.1 and KEPT to 127.31.0.2, make the programs miss the
/// MISSED closes, and give the run `wait` to notice.
fn missed_closes(name: &str, extra: &[&str], wait: Duration) -> Output {
    let missed_srv = Server::start("127.31.0.1");
    let kept_srv = Server::start("127.31.0.2");
    let mut args = vec!["--old", OLD, "--new", NEW, "--top", "1000"];
    args.extend(extra);
    let run = Run::start(name, &args);
    let ns = Netns::new("recon");
    let mut elsewhere = ns
        .cmd(env!("CARGO_BIN_EXE_tconn"))
        .args(["hold", "127.31.0.9", &ELSEWHERE.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tconn hold in the namespace");
    let mut line = String::new();
    let stdout = elsewhere.stdout.take().expect("tconn stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("tconn says done");
    assert_eq!(line.trim(), format!("done {ELSEWHERE}"));
    let missed = open_connections(missed_srv.addr, MISSED);
    let kept = open_connections(kept_srv.addr, KEPT);
    missed_srv.wait_accepted(MISSED);
    kept_srv.wait_accepted(KEPT);
    // Let a snapshot show them before the records go.
    thread::sleep(Duration::from_millis(500));

    let (out, inb) = forget(&socks_map(run.pid()), Ipv4Addr::new(127, 31, 0, 1));
    assert_eq!(
        (out, inb),
        (MISSED, MISSED),
        "records of both halves of each connection"
    );
    // Both halves close; neither leaves ESTABLISHED in view of the programs' records.
    drop(missed);
    drop(missed_srv);
    thread::sleep(wait);
    let output = run.stop();
    drop(kept);
    drop(elsewhere.stdin.take());
    let _ = elsewhere.wait();
    assert!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        output.stderr
    );
    let seen = output
        .snapshots()
        .iter()
        .any(|s| open_of(s, "127.31.0.1") == Some(MISSED as u64));
    assert!(seen, "a snapshot showed the {MISSED} connections open");
    output
}

fn reconciled(out: &Output) -> Vec<&Value> {
    out.events("reconciled")
}

fn sum(events: &[&Value], dir: &str, cohort: &str) -> i64 {
    events
        .iter()
        .map(|e| e[dir][cohort].as_i64().expect("an integer change"))
        .sum()
}

#[test]
fn reconcile_every_brings_open_back_to_the_socket_table() {
    let out = missed_closes(
        "reconcile-every",
        &["--reconcile-every", "1s"],
        Duration::from_millis(2500),
    );
    let k = (KEPT + ELSEWHERE) as u64;
    assert_eq!(out.meta()["reconcile_every_ms"], 1000);
    assert_eq!(
        out.destination("127.31.0.9").map(|d| d.4),
        Some(ELSEWHERE as u64),
        "connections in another namespace are real too"
    );
    assert_eq!(out.destination("127.31.0.1").map(|d| d.4), Some(0));
    assert_eq!(
        out.destination("127.31.0.2").map(|d| d.4),
        Some(KEPT as u64)
    );
    let (attempts, established, _, closed, open) = out.cohort("old");
    assert_eq!(
        (attempts, established, closed),
        (MISSED as u64 + k, MISSED as u64 + k, 0),
        "the counters still miss the closes"
    );
    assert_eq!(open, k, "old open corrected to the connections really open");
    assert_eq!(out.inbound("old").2, k, "inbound old open corrected");

    let events = reconciled(&out);
    assert!(!events.is_empty(), "a reconciled event: {}", out.raw);
    assert_eq!(sum(&events, "outbound", "old"), -(MISSED as i64));
    assert_eq!(sum(&events, "inbound", "old"), -(MISSED as i64));
    assert_eq!(sum(&events, "outbound", "new"), 0);
    let last = events.last().unwrap();
    assert_eq!(last["offset"]["outbound"]["old"], -(MISSED as i64));
    assert!(n(&out.summary()["reconciliations"]) >= 2, "every second");
}

#[test]
fn without_reconciliation_the_missed_closes_stay_open() {
    let out = missed_closes("reconcile-off", &[], Duration::from_millis(1500));
    assert_eq!(out.meta()["reconcile_every_ms"], Value::Null);
    let lossy = out.snapshots().iter().any(|s| n(&s["lost_events"]) > 0);
    let events = reconciled(&out);
    if !lossy {
        // Nothing told tracer it missed anything: open stays wrong (the error is real).
        let (k, m) = ((KEPT + ELSEWHERE) as u64, MISSED as u64);
        assert!(
            events.is_empty(),
            "no reconciliation without losses: {events:?}"
        );
        assert_eq!(n(&out.summary()["reconciliations"]), 0);
        assert_eq!(out.destination("127.31.0.1").map(|d| d.4), Some(m));
        assert_eq!(out.cohort("old").4, k + m);
        assert_eq!(out.inbound("old").2, k + m);
    } else {
        // The kernel skipped program runs during this run (other tests share the host):
        // tracer must have reconciled because of them, never on a timer.
        assert!(
            n(&out.summary()["reconciliations"]) >= 1,
            "losses reconcile"
        );
        for e in events {
            assert_ne!(e["trigger"], "every", "{e}");
        }
    }
}
