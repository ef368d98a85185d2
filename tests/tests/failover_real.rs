//! A failover with real software nobody here wrote, each program logging what it really did
//! (its own ground truth), and tracer asked at the end who is still on the old side and why.
//!
//! In a network namespace of its own (addresses apart from every other test):
//! - backends: one nginx on old 127.61.0.1:8080 and new 127.62.0.1:8080, its access log naming
//!   the side, the client and the kept-alive connection of every request;
//! - the primary resolver: dnsmasq on 127.63.0.53 (the namespace's /etc/resolv.conf) answering
//!   `svc.test` from a hosts file with a TTL of 2 s; switched from old to new at a known time
//!   (file rewritten, SIGHUP);
//! - a stale resolver: a second dnsmasq on 127.63.0.54 that keeps answering old;
//! - clients, each with its expected causes:
//!   1. nginx as a reverse proxy, upstream `svc.test:8080` resolved once at start, `keepalive 4`,
//!      driven at a low steady rate so its one upstream connection, opened before tracer, is
//!      reused throughout: its worker is `pinned`;
//!   2. a JVM (`networkaddress.cache.ttl=-1`, keep-alive off), a request every 200 ms: it keeps
//!      connecting to old with no new lookup: `dns_cache`;
//!   3. Node with c-ares asking the stale resolver before every request: `stale_resolver`
//!      (127.63.0.54:53);
//!   4. curl, one process per request, through the primary resolver: moves within the TTL;
//!   5. bash holding one old connection from before tracer started (found by the census):
//!      `pinned`.
//!
//! Timeline (T = tracer's start): clients from T, the DNS switch at about T+6 s, clients stop at
//! T+16 s, tracer stops at T+20 s. The pinned connections stay open to the end, so the drain
//! verdict must name their two holders.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use serde_json::Value;
use tracer_tests::{
    failover::{Fields, Hit, backend_log, describe, holders, queries},
    procs::{Daemon, Resolv, kv_log, now_ms, num, rfc3339_ms, wait_until},
    *,
};

const OLD: &str = "127.61.0.1";
const NEW: &str = "127.62.0.1";
const PRIMARY: &str = "127.63.0.53";
const STALE: &str = "127.63.0.54";
const PROXY: &str = "127.64.0.1";
const NAME: &str = "svc.test";
const TTL_MS: u64 = 2000;
const INTERVAL_MS: u64 = 500;
/// Sampling ticks on a busy 2-CPU machine can be late by a little; one interval is the claim.
const SLACK_MS: u64 = 250;
/// Each client's pace: one request every 200 ms.
const EVERY_MS: u64 = 200;
const SWITCH_AT_MS: u64 = 6000;
const CLIENTS_FOR_MS: u64 = 16_000;
const TRACER_FOR_MS: u64 = 20_000;

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("failover")
        .join(file)
}

/// A support file with its @KEY@ placeholders filled in, written into `dir`.
fn template(file: &str, dir: &Path, vars: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(support(file)).expect("support file");
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    assert!(!text.contains('@'), "{file}: a placeholder left: {text}");
    let out = dir.join(file);
    std::fs::write(&out, text).expect("write config");
    out
}

fn listening(ns: &Netns, addr: &str) -> bool {
    sh(ns.cmd("ss").args(["-Hltn"]))
        .split_whitespace()
        .any(|w| w == addr)
}

fn dnsmasq(ns: &Netns, dir: &Path, name: &str, listen: &str) -> (Daemon, PathBuf, PathBuf) {
    let hosts = dir.join(format!("{name}.hosts"));
    std::fs::write(&hosts, format!("{OLD} {NAME}\n")).expect("hosts file");
    let log = dir.join(format!("{name}.log"));
    let mut c = ns.cmd(tool("dnsmasq"));
    c.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
    ])
    .args(["--no-hosts", "--user=root", "--group=root", "--pid-file="])
    .args(["--bind-interfaces", "--port=53", "--local=/test/"])
    .arg(format!("--listen-address={listen}"))
    .arg(format!("--addn-hosts={}", hosts.display()))
    .arg(format!("--local-ttl={}", TTL_MS / 1000))
    .arg("--log-queries=extra")
    .arg(format!("--log-facility={}", log.display()));
    let d = Daemon::spawn(name, c);
    wait_until(
        &format!("{name} (dnsmasq on {listen}) starts"),
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("started, version")),
        || std::fs::read_to_string(&log).unwrap_or_default() + &d.printed(),
    );
    (d, hosts, log)
}

fn nginx(ns: &Netns, dir: &Path, name: &str, conf: &Path, listen: &str) -> Daemon {
    let mut c = ns.cmd(tool("nginx"));
    c.arg("-p").arg(dir).arg("-c").arg(conf);
    c.arg("-e").arg(dir.join(format!("{name}.error.log")));
    let d = Daemon::spawn(name, c);
    wait_until(
        &format!("{name} (nginx) listens on {listen}"),
        Duration::from_secs(10),
        || listening(ns, listen),
        || {
            d.printed()
                + &std::fs::read_to_string(dir.join(format!("{name}.error.log")))
                    .unwrap_or_default()
        },
    );
    d
}

fn lines_of(path: &Path) -> usize {
    kv_log(path).len()
}

/// Everything the programs logged, and what the kernel's socket table showed.
struct Truth {
    /// tracer's start (the meta line's `started_at`), epoch ms.
    t0: u64,
    switch_ms: u64,
    worker: u32,
    java: u32,
    node: u32,
    holder: u32,
    driver: Vec<Fields>,
    jvm: Vec<Fields>,
    nodejs: Vec<Fields>,
    curl: Vec<Fields>,
    census: String,
    backend: Vec<Hit>,
    primary_queries: usize,
    stale_queries: usize,
    held_at_start: Vec<(u32, String)>,
    held_at_end: Vec<(u32, String)>,
}

impl Truth {
    fn summary(&self) -> String {
        let rel = |ms: u64| (ms as f64 - self.t0 as f64) / 1000.0;
        let mut s = vec![
            format!(
                "  tracer started at {} ms (T); DNS switched at T{:+.2} s; TTL {TTL_MS} ms, interval {INTERVAL_MS} ms",
                self.t0,
                rel(self.switch_ms)
            ),
            describe(
                "proxy driver",
                0,
                &self.driver,
                "served",
                self.t0,
                self.switch_ms,
            ),
            describe(
                "java",
                self.java,
                &self.jvm,
                "served",
                self.t0,
                self.switch_ms,
            ),
            describe(
                "node",
                self.node,
                &self.nodejs,
                "served",
                self.t0,
                self.switch_ms,
            ),
            describe(
                "curl (each)",
                0,
                &self.curl,
                "served",
                self.t0,
                self.switch_ms,
            ),
        ];
        let mut conns: BTreeMap<(String, u64), (usize, u64, u64, String)> = BTreeMap::new();
        for h in &self.backend {
            let e =
                conns
                    .entry((h.agent.clone(), h.conn))
                    .or_insert((0, h.ms, h.ms, h.side.clone()));
            e.0 += 1;
            e.2 = h.ms;
        }
        let by_agent: BTreeMap<&str, usize> =
            conns.keys().fold(BTreeMap::new(), |mut m, (a, _)| {
                *m.entry(a.as_str()).or_default() += 1;
                m
            });
        s.push(format!(
            "  backend connections per user agent: {by_agent:?}"
        ));
        for ((agent, conn), (n, a, b, side)) in &conns {
            if agent == "proxy-driver" || agent == "census-holder" {
                s.push(format!(
                    "    {agent} conn {conn} on {side}: {n} requests T{:+.2}..T{:+.2} s",
                    rel(*a),
                    rel(*b)
                ));
            }
        }
        s.push(format!(
            "  nginx worker pid {}, census holder (bash) pid {}: {}",
            self.worker,
            self.holder,
            self.census.lines().next().unwrap_or("no log")
        ));
        s.push(format!(
            "  DNS A queries for {NAME}: primary {}, stale {}",
            self.primary_queries, self.stale_queries
        ));
        s.push(format!(
            "  old connections held at start (pid, comm): {:?}",
            self.held_at_start
        ));
        s.push(format!(
            "  old connections held at the end: {:?}",
            self.held_at_end
        ));
        s.join("\n")
    }

    fn last_old(&self, lines: &[Fields]) -> Option<u64> {
        lines
            .iter()
            .filter(|l| l.get("served").map(String::as_str) == Some(OLD))
            .map(|l| num(l, "ms"))
            .max()
    }
}

#[path = "failover_real/checks.rs"]
mod checks;
use checks::{check_contract, check_ground_truth, check_recording};

#[test]
fn every_process_still_on_old_is_named_with_the_layer_that_holds_it() {
    require_root();
    for t in [
        "nginx", "dnsmasq", "java", "javac", "node", "curl", "bash", "ss",
    ] {
        tool(t);
    }
    let dir = tmp_path("failover-real");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let classes = dir.join("classes");
    sh(Command::new(tool("javac"))
        .arg("-d")
        .arg(&classes)
        .arg(support("Client.java")));
    let ns = Netns::new("fo");
    let in_ns = |p: &str| ns.cmd(p);
    let _resolv = Resolv::new(&ns, PRIMARY);
    let (primary, primary_hosts, primary_log) = dnsmasq(&ns, &dir, "primary", PRIMARY);
    let (_stale, _, stale_log) = dnsmasq(&ns, &dir, "stale", STALE);
    let d = dir.to_str().unwrap();
    let backend_conf = template(
        "backend.conf",
        &dir,
        &[("DIR", d), ("OLD", OLD), ("NEW", NEW)],
    );
    let _backend = nginx(&ns, &dir, "backend", &backend_conf, &format!("{OLD}:8080"));
    assert!(listening(&ns, &format!("{NEW}:8080")));
    let proxy_conf = template(
        "proxy.conf",
        &dir,
        &[("DIR", d), ("NAME", NAME), ("PROXY", PROXY)],
    );
    let proxy = nginx(&ns, &dir, "proxy", &proxy_conf, &format!("{PROXY}:8081"));
    let worker = {
        let w = proxy.children();
        assert_eq!(w.len(), 1, "one nginx worker: {w:?}");
        w[0]
    };
    let script = |s: &str| support(s).to_str().unwrap().to_string();
    let driver_log = dir.join("driver.log");
    let driver = |deadline: u64, max: u64, log: &Path| {
        let mut c = ns.cmd(tool("bash"));
        c.arg(script("proxy-driver.sh")).args([PROXY, "8081"]);
        c.arg(deadline.to_string())
            .arg(max.to_string())
            .arg("0.2")
            .arg(log);
        c
    };
    // Warm the proxy's pool: one request opens its upstream connection to old.
    let warm = dir.join("warm.log");
    sh(&mut driver(now_ms() + 5000, 1, &warm));
    assert!(
        std::fs::read_to_string(&warm)
            .unwrap()
            .contains(&format!("served={OLD}"))
    );
    let census_log = dir.join("census.log");
    let holder = {
        let mut c = ns.cmd(tool("bash"));
        c.arg(script("census-holder.sh"))
            .args([OLD, "8080", "60"])
            .arg(&census_log);
        Daemon::spawn("census-holder", c)
    };
    wait_until(
        "the census holder's connection is answered",
        Duration::from_secs(5),
        || std::fs::read_to_string(&census_log).is_ok_and(|t| t.contains("got=")),
        || holder.printed(),
    );
    let held_at_start = holders(in_ns, &format!("{OLD}:8080"));

    // tracer, in the namespace (its --watch-dns asks the primary resolver, and each resolver
    // directly: the report matches each straggler's resolver to its row).
    let (primary_at, stale_at) = (format!("{PRIMARY}:53"), format!("{STALE}:53"));
    let args = vec![
        "--old",
        OLD,
        "--new",
        NEW,
        "--interval",
        "500ms",
        "--watch-dns",
        NAME,
        "--dns-server",
        &primary_at,
        "--dns-server",
        &stale_at,
        "--ttl",
        "2s",
    ];
    let json = tmp_path("failover-real.ndjson");
    let run = Run::start_cmd(ns.cmd(tracer_bin()), json.clone(), &args);
    let start = now_ms();
    let deadline = start + CLIENTS_FOR_MS;
    let max = (CLIENTS_FOR_MS / EVERY_MS + 10).to_string();
    let dl = deadline.to_string();
    let every = EVERY_MS.to_string();
    let (java_log, node_log, curl_log) = (
        dir.join("java.log"),
        dir.join("node.log"),
        dir.join("curl.log"),
    );
    let mut java = {
        let mut c = ns.cmd(tool("java"));
        c.arg(format!(
            "-Djava.security.properties={}",
            support("java.security").display()
        ))
        .arg("-Dhttp.keepAlive=false")
        .arg("-cp")
        .arg(&classes)
        .arg("Client")
        .arg(format!("http://{NAME}:8080/"))
        .args([&dl, &max, &every])
        .arg(&java_log);
        Daemon::spawn("java", c)
    };
    let mut node = {
        let mut c = ns.cmd(tool("node"));
        c.arg(support("client.js"))
            .args([NAME, "8080", STALE, &dl, &max, &every])
            .arg(&node_log);
        Daemon::spawn("node", c)
    };
    let mut curl = {
        let mut c = ns.cmd(tool("bash"));
        c.arg(script("curl-loop.sh"))
            .arg(format!("http://{NAME}:8080/"))
            .args([&dl, &max, "0.2"])
            .arg(&curl_log);
        Daemon::spawn("curl-loop", c)
    };
    let mut proxy_driver = Daemon::spawn(
        "proxy-driver",
        driver(deadline, CLIENTS_FOR_MS / EVERY_MS + 10, &driver_log),
    );
    // The switch: at T+6 s, once every client has made a few requests before it.
    let logs = [&java_log, &node_log, &curl_log, &driver_log];
    wait_until(
        "every client has made 3 requests before the switch",
        Duration::from_secs(20),
        || logs.iter().all(|l| lines_of(l) >= 3) && now_ms() >= start + SWITCH_AT_MS,
        || format!("{}{}", java.printed(), node.printed()),
    );
    std::fs::write(&primary_hosts, format!("{NEW} {NAME}\n")).unwrap();
    primary.signal(libc::SIGHUP);
    let switch_ms = now_ms();
    wait_until(
        "the primary resolver re-read its hosts file",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(&primary_log).is_ok_and(|t| {
                t.matches(&format!("read {}", primary_hosts.display()))
                    .count()
                    >= 2
            })
        },
        || std::fs::read_to_string(&primary_log).unwrap_or_default(),
    );
    for c in [&mut java, &mut node, &mut curl, &mut proxy_driver] {
        c.wait_exit(Duration::from_millis(
            deadline + 5000 - now_ms().min(deadline),
        ));
    }
    // The pinned connections stay; nothing else touches old until tracer stops.
    let rest = (start + TRACER_FOR_MS).saturating_sub(now_ms());
    thread::sleep(Duration::from_millis(rest));
    let held_at_end = holders(in_ns, &format!("{OLD}:8080"));
    let out = run.stop();
    assert!(out.status.success(), "tracer: {}", out.stderr);
    let t0 = rfc3339_ms(out.meta()["started_at"].as_str().expect("started_at"));

    let truth = Truth {
        t0,
        switch_ms,
        worker,
        java: java.pid(),
        node: node.pid(),
        holder: holder.pid(),
        driver: kv_log(&driver_log),
        jvm: kv_log(&java_log),
        nodejs: kv_log(&node_log),
        curl: kv_log(&curl_log),
        census: std::fs::read_to_string(&census_log).unwrap_or_default(),
        backend: backend_log(&dir.join("backend.access.log")),
        primary_queries: queries(&primary_log, NAME),
        stale_queries: queries(&stale_log, NAME),
        held_at_start,
        held_at_end,
    };
    eprintln!("ground truth:\n{}", truth.summary());
    check_ground_truth(&truth);
    check_recording(&truth, &out);

    let rep = Command::new(tracer_bin())
        .args(["report", "--json"])
        .arg(&json)
        .output()
        .expect("tracer report");
    assert!(
        rep.status.success(),
        "tracer report: {}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let report: Value = serde_json::from_slice(&rep.stdout).expect("report JSON");
    let mut c = check_contract(&truth, &out, &report);
    // The stale resolver's row names node, the one straggler it kept on old; the primary's row
    // names java, which got its (then right) old answer there before the switch and cached it.
    let rows = report["resolvers"][0]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let held_by = |server: &str| {
        rows.iter()
            .find(|r| r["server"] == server)
            .map(|r| r["stragglers"].clone())
    };
    let want =
        serde_json::json!([{"pid": truth.node, "comm": "node", "causes": ["stale_resolver"]}]);
    c.check(held_by(&stale_at) == Some(want.clone()), || {
        format!(
            "resolver row {stale_at}: stragglers {:?}, want {want}",
            held_by(&stale_at)
        )
    });
    let want = serde_json::json!([{"pid": truth.java, "comm": "java", "causes": ["dns_cache"]}]);
    c.check(held_by(&primary_at) == Some(want.clone()), || {
        format!(
            "resolver row {primary_at}: stragglers {:?}, want {want}",
            held_by(&primary_at)
        )
    });
    c.done(
        &format!(
            "issue 14's contract (report: {})",
            serde_json::to_string(&report["analysis"]).unwrap_or_default()
        ),
        &truth.summary(),
    );
}
