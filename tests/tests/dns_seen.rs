//! DNS answers per process, captured in the kernel. dnsmasq in a test network namespace serves
//! `alias.tracer.test` (a CNAME, TTL 300) -> `svc.tracer.test` (A and AAAA, TTL 42); a second
//! dnsmasq forwards to it (its upstream queries are unconnected `sendto`s). glibc (`getent
//! ahosts`, curl), c-ares (Node's `dns.resolve4`, once through the forwarder) and Go's own
//! resolver each resolve the name and log what they got; tracer's NDJSON must attribute each
//! answer to the right pid and comm, with the addresses the client logged, the TTL, the CNAME
//! chain and the resolver, in `dns_answer` events and in the `dns` field of process rows.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use tracer_tests::*;

const AUTH: &str = "127.53.0.1";
const FORWARDER: &str = "127.53.0.2";
const ANSWER_V4: &str = "127.53.1.10";
const ANSWER_V6: &str = "fd53::10";
/// A port nothing listens on in the namespace: the clients' connects are refused, and still
/// make a process row.
const PORT: &str = "9";

/// A dnsmasq in the namespace, killed on drop.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
}

impl Dnsmasq {
    fn start(ns: &Netns, listen: &str, args: &[&str]) -> Dnsmasq {
        let log = tmp_path(&format!("dnsmasq-{listen}.log"));
        let child = ns
            .cmd(tool("dnsmasq"))
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
            ])
            .args(["--no-hosts", "--user=root", "--group=root", "--pid-file="])
            .args([
                "--bind-interfaces",
                "--port=53",
                "--log-queries",
                "--log-facility=-",
            ])
            .arg(format!("--listen-address={listen}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn dnsmasq");
        let d = Dnsmasq { child, log };
        let t0 = Instant::now();
        while !std::fs::read_to_string(&d.log)
            .unwrap_or_default()
            .contains("started, version")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "dnsmasq on {listen} did not start: {}",
                std::fs::read_to_string(&d.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/etc/netns/NS/resolv.conf`: what `ip netns exec` mounts over /etc/resolv.conf.
struct Resolv(PathBuf);

impl Resolv {
    fn new(ns: &Netns, nameserver: &str) -> Resolv {
        let dir = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\n"),
        )
        .expect("write resolv.conf");
        Resolv(dir)
    }
}

impl Drop for Resolv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Go's resolver in a tiny stdlib-only program, built now (offline, no modules to fetch).
fn build_go() -> PathBuf {
    let dir = tmp_path("dnsgo");
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/dnsgo.go");
    std::fs::copy(&src, dir.join("main.go")).expect("copy dnsgo.go");
    std::fs::write(dir.join("go.mod"), "module dnsgo\n\ngo 1.19\n").unwrap();
    let out = dir.join("dnsgo");
    sh(Command::new(tool("go"))
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&dir)
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("HOME", &dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0"));
    out
}

/// One client run: its pid, when it ran, and what it printed (stdout and stderr).
struct Client {
    pid: u32,
    from: SystemTime,
    to: SystemTime,
    out: String,
}

fn run_client(mut cmd: Command) -> Client {
    let from = SystemTime::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the client");
    let to = SystemTime::now();
    Client {
        pid,
        from,
        to,
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `2026-12-02T00:01:02.345Z` as milliseconds since the epoch.
fn epoch_ms(ts: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().expect("RFC 3339 field");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    let secs = days * 86400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    (secs * 1000 + n(20..23)) as u64
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// What one client must have received, as its own log says.
struct Expect<'a> {
    who: &'a str,
    client: &'a Client,
    comm: &'a str,
    name: &'a str,
    cnames: &'a [&'a str],
    addrs: BTreeSet<String>,
    qtypes: &'a [&'a str],
    ttl: u64,
    resolver: &'a str,
    /// The client connected afterwards, so it has a process row.
    row: bool,
}

fn check(out: &Output, e: &Expect) {
    let evs: Vec<&Value> = out
        .events("dns_answer")
        .into_iter()
        .filter(|v| v["pid"] == e.client.pid)
        .collect();
    assert!(
        !evs.is_empty(),
        "{}: no dns_answer for pid {} (client said: {})\n{}",
        e.who,
        e.client.pid,
        e.client.out,
        out.raw
    );
    let mut addrs = BTreeSet::new();
    let mut qtypes = BTreeSet::new();
    for v in &evs {
        assert_eq!(v["comm"], e.comm, "{}: {v}", e.who);
        assert_eq!(v["name"], e.name, "{}: {v}", e.who);
        assert_eq!(v["resolver"], e.resolver, "{}: {v}", e.who);
        assert_eq!(v["rcode"], "NOERROR", "{}: {v}", e.who);
        assert!(n(&v["cgroup_id"]) > 0, "{}: {v}", e.who);
        let cn: Vec<&str> = v["cnames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cn, e.cnames, "{}: {v}", e.who);
        assert_eq!(n(&v["ttl"]), e.ttl, "{}: {v}", e.who);
        let at = epoch_ms(v["ts"].as_str().unwrap());
        assert!(
            ms(e.client.from) <= at + 5 && at <= ms(e.client.to) + 5,
            "{}: answer at {at} outside the client's run {}..{}",
            e.who,
            ms(e.client.from),
            ms(e.client.to)
        );
        addrs.extend(strs(&v["addrs"]));
        qtypes.insert(v["qtype"].as_str().unwrap().to_string());
    }
    assert_eq!(
        addrs, e.addrs,
        "{}: addresses (client said: {})",
        e.who, e.client.out
    );
    let want: BTreeSet<String> = e.qtypes.iter().map(|s| s.to_string()).collect();
    assert_eq!(qtypes, want, "{}: record types asked", e.who);
    if !e.row {
        return;
    }
    let row = out
        .snapshots()
        .iter()
        .rev()
        .flat_map(|s| s["processes"].as_array().unwrap().iter())
        .find(|p| p["pid"] == e.client.pid && p.get("dns").is_some())
        .unwrap_or_else(|| {
            panic!(
                "{}: no process row with dns for pid {}",
                e.who, e.client.pid
            )
        })
        .clone();
    let dns = &row["dns"];
    assert_eq!(row["comm"], e.comm, "{}: {row}", e.who);
    assert_eq!(dns["name"], e.name, "{}: {row}", e.who);
    assert_eq!(strs(&dns["addrs"]), e.addrs, "{}: {row}", e.who);
    assert_eq!(n(&dns["ttl"]), e.ttl, "{}: {row}", e.who);
    assert_eq!(dns["resolver"], e.resolver, "{}: {row}", e.who);
}

/// Addresses from lines that start with one (getent ahosts).
fn first_column(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_string)
        .collect()
}

/// Addresses curl tried (`*   Trying 127.53.1.10:9...`, `[fd53::10]:9`).
fn curl_tried(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter_map(|l| l.split("Trying ").nth(1))
        .filter_map(|a| a.trim_end_matches("...").rsplit_once(':'))
        .map(|(ip, _)| ip.trim_matches(['[', ']']).to_string())
        .collect()
}

fn json_line(out: &str) -> Value {
    out.lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON line in: {out}"))
}

#[test]
fn answers_are_attributed_to_the_process_that_asked() {
    require_root();
    for t in ["dnsmasq", "curl", "getent", "node", "go"] {
        tool(t);
    }
    let go = build_go();
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/resolve4.js");
    let ns = Netns::new("dnsseen");
    let _resolv = Resolv::new(&ns, AUTH);
    let _auth = Dnsmasq::start(
        &ns,
        AUTH,
        &[
            &format!("--host-record=svc.tracer.test,{ANSWER_V4},{ANSWER_V6},42"),
            "--cname=alias.tracer.test,svc.tracer.test,300",
        ],
    );
    let fwd = Dnsmasq::start(&ns, FORWARDER, &[&format!("--server={AUTH}")]);

    let run = Run::start("dns-seen", &["--old", ANSWER_V4]);
    let alias = "alias.tracer.test";
    let getent = run_client({
        let mut c = ns.cmd(tool("getent"));
        c.args(["ahosts", alias]);
        c
    });
    let curl = run_client({
        let mut c = ns.cmd(tool("curl"));
        c.args(["-sv", "--max-time", "3", "-o", "/dev/null"])
            .arg(format!("http://{alias}:{PORT}/"));
        c
    });
    let node = run_client({
        let mut c = ns.cmd(tool("node"));
        c.arg(&js).args([alias, PORT]);
        c
    });
    let node_fwd = run_client({
        let mut c = ns.cmd(tool("node"));
        c.arg(&js).args(["svc.tracer.test", PORT, FORWARDER]);
        c
    });
    let gocl = run_client({
        let mut c = ns.cmd(&go);
        c.args([alias, PORT]);
        c
    });
    let out = run.stop();

    assert_eq!(out.meta()["hooks"]["dns"]["captured"], true, "{}", out.raw);
    let both: BTreeSet<String> = [ANSWER_V4, ANSWER_V6].map(String::from).into();
    let auth = format!("{AUTH}:53");
    let cname = ["svc.tracer.test"];
    // glibc: getent prints every address it got.
    let got = first_column(&getent.out);
    assert_eq!(got, both, "getent's own log: {}", getent.out);
    check(
        &out,
        &Expect {
            who: "getent (glibc)",
            client: &getent,
            comm: "getent",
            name: alias,
            cnames: &cname,
            addrs: got,
            qtypes: &["A", "AAAA"],
            ttl: 42,
            resolver: &auth,
            row: false,
        },
    );
    // glibc in curl's resolver thread; curl tried every address it got.
    let got = curl_tried(&curl.out);
    assert_eq!(got, both, "curl's own log: {}", curl.out);
    check(
        &out,
        &Expect {
            who: "curl (glibc)",
            client: &curl,
            comm: "curl",
            name: alias,
            cnames: &cname,
            addrs: got,
            qtypes: &["A", "AAAA"],
            ttl: 42,
            resolver: &auth,
            row: true,
        },
    );
    // c-ares: Node logs the addresses and the TTL it got.
    let said = json_line(&node.out);
    assert_eq!(said["pid"], node.pid, "{said}");
    check(
        &out,
        &Expect {
            who: "node (c-ares)",
            client: &node,
            comm: said["comm"].as_str().unwrap(),
            name: alias,
            cnames: &cname,
            addrs: strs(&said["addrs"]),
            qtypes: &["A"],
            ttl: n(&said["ttls"][0]),
            resolver: &auth,
            row: true,
        },
    );
    let said = json_line(&node_fwd.out);
    let fwd_addr = format!("{FORWARDER}:53");
    check(
        &out,
        &Expect {
            who: "node via the forwarder",
            client: &node_fwd,
            comm: said["comm"].as_str().unwrap(),
            name: "svc.tracer.test",
            cnames: &[],
            addrs: strs(&said["addrs"]),
            qtypes: &["A"],
            ttl: n(&said["ttls"][0]),
            resolver: &fwd_addr,
            row: true,
        },
    );
    // The forwarder's own upstream answer, received on an unconnected socket (sendto).
    let fwd_client = Client {
        pid: fwd.child.id(),
        from: node_fwd.from,
        to: node_fwd.to,
        out: std::fs::read_to_string(&fwd.log).unwrap_or_default(),
    };
    check(
        &out,
        &Expect {
            who: "dnsmasq forwarding",
            client: &fwd_client,
            comm: "dnsmasq",
            name: "svc.tracer.test",
            cnames: &[],
            addrs: [ANSWER_V4.to_string()].into(),
            qtypes: &["A"],
            ttl: 42,
            resolver: &auth,
            row: false,
        },
    );
    // Go's own resolver: connected UDP sockets and read().
    let line = gocl
        .out
        .lines()
        .find(|l| l.starts_with("pid="))
        .unwrap_or_else(|| {
            panic!("go client: {}", gocl.out);
        });
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    assert_eq!(field("pid="), gocl.pid.to_string(), "{line}");
    let got: BTreeSet<String> = field("addrs=").split(',').map(String::from).collect();
    assert_eq!(got, both, "go client: {line}");
    check(
        &out,
        &Expect {
            who: "go (its own resolver)",
            client: &gocl,
            comm: &field("comm="),
            name: alias,
            cnames: &cname,
            addrs: got,
            qtypes: &["A", "AAAA"],
            ttl: 42,
            resolver: &auth,
            row: true,
        },
    );
    // Nobody else received these answers.
    let pids: BTreeSet<u64> = [&getent, &curl, &node, &node_fwd, &gocl, &fwd_client]
        .iter()
        .map(|c| c.pid as u64)
        .collect();
    for v in out.events("dns_answer") {
        if v["name"]
            .as_str()
            .is_some_and(|s| s.ends_with("tracer.test"))
        {
            assert!(
                pids.contains(&n(&v["pid"])),
                "answer to an unknown pid: {v}"
            );
        }
    }
    let stats = &out.summary()["dns_capture"];
    assert_eq!(n(&stats["dropped"]), 0, "{stats}");
    assert!(
        n(&stats["seen"]) >= out.events("dns_answer").len() as u64,
        "{stats}"
    );
}

/// The BPF program types among the fds of process `pid` (from /proc/PID/fdinfo).
fn prog_types(pid: u32) -> BTreeSet<u32> {
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("prog_type:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// `BPF_PROG_TYPE_CGROUP_SKB`: the capture's per-packet program.
const CGROUP_SKB: u32 = 8;

#[test]
fn no_dns_capture_runs_no_packet_program_and_records_no_answer() {
    require_root();
    for t in ["dnsmasq", "getent"] {
        tool(t);
    }
    let ns = Netns::new("dnsoff");
    let _resolv = Resolv::new(&ns, AUTH);
    let auth = Dnsmasq::start(
        &ns,
        AUTH,
        &[&format!(
            "--host-record=svc.tracer.test,{ANSWER_V4},{ANSWER_V6},42"
        )],
    );
    // The default run holds the per-packet program: the check below is not vacuous.
    let on = Run::start("dns-on", &["--old", ANSWER_V4]);
    assert!(
        prog_types(on.pid()).contains(&CGROUP_SKB),
        "the default run holds no cgroup_skb program: {:?}",
        prog_types(on.pid())
    );
    drop(on.stop());

    let run = Run::start("dns-off", &["--old", ANSWER_V4, "--no-dns-capture"]);
    let types = prog_types(run.pid());
    let getent = run_client({
        let mut c = ns.cmd(tool("getent"));
        c.args(["ahosts", "svc.tracer.test"]);
        c
    });
    let out = run.stop();
    // Ground truth: the resolver answered, and getent got the addresses.
    assert!(
        first_column(&getent.out).contains(ANSWER_V4),
        "getent's own log: {}",
        getent.out
    );
    let log = std::fs::read_to_string(&auth.log).unwrap_or_default();
    assert!(
        log.contains("query[A] svc.tracer.test"),
        "dnsmasq's log: {log}"
    );
    assert!(
        !types.contains(&CGROUP_SKB),
        "--no-dns-capture still holds a cgroup_skb program: {types:?}"
    );
    let dns = &out.meta()["hooks"]["dns"];
    assert_eq!(dns["captured"], false, "{}", out.raw);
    assert!(
        dns.to_string().contains("--no-dns-capture"),
        "meta.hooks.dns: {dns}"
    );
    let off = out.events("dns_not_captured");
    assert_eq!(off.len(), 1, "{}", out.raw);
    assert!(out.events("dns_answer").is_empty(), "{}", out.raw);
    // Counting goes on as usual.
    assert!(out.meta()["hooks"]["state"].is_string(), "{}", out.raw);
}
