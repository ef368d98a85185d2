//! A simulated failover with real loopback traffic and a driver that keeps its own record:
//! tracer's cutover, declaration gap and drain time must match that record within one interval,
//! and `tracer report` on the NDJSON must give the same numbers as the live run. Its addresses
//! (127.138.77.0/24 old, 127.148.77.0/24 new) are its own, apart from other tests on the host.
//!
//! Schedule (seconds after the driver starts; the driver records the real times):
//!   0   main clients: ~200 connects/s to old; a sticky client (own process, comm "sticky")
//!       ~20 connects/s to old; a pool of 30 old connections is open from before tracer
//!   5   cutover (given with --cutover-at as an RFC 3339 time still in the future)
//!   7   main clients move to new, and open a pool of 30 new connections
//!   10  the sticky client stops: from here >= 99 % of attempts are new
//!   14  the old pool is closed: the old side is quiet, drained 2 s later (--quiet-for 2s)

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tracer_tests::*;

const INTERVAL_MS: i64 = 200;
/// Sampling ticks on this shared machine can be late by a little; one interval is the claim.
const SLACK_MS: i64 = 100;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `2026-11-23T11:22:19.180Z` -> ms since the epoch.
fn parse_rfc3339_ms(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let days = days_from_civil(n(0, 4), n(5, 7), n(8, 10));
    ((days * 24 + n(11, 13)) * 60 + n(14, 16)) * 60_000 + n(17, 19) * 1000 + n(20, 23)
}

fn rfc3339(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil from days (inverse of the above).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A listener that closes what it accepts at once (for the short connections).
fn churn_server(ip: &str, stop: Arc<AtomicBool>) -> (SocketAddr, thread::JoinHandle<()>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok(_) => {}
                Err(_) => thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    (addr, h)
}

fn event<'a>(out: &'a Output, kind: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    out.events(kind)
        .into_iter()
        .find(|e| pred(e))
        .unwrap_or_else(|| panic!("no {kind} event matching; events: {:?}", out.events(kind)))
}

fn assert_near(what: &str, tracer_ms: i64, driver_ms: i64) {
    let d = (tracer_ms - driver_ms).abs();
    eprintln!("{what}: tracer {tracer_ms} ms, driver {driver_ms} ms, off by {d} ms");
    assert!(
        d <= INTERVAL_MS + SLACK_MS,
        "{what}: tracer says {tracer_ms} ms, the driver recorded {driver_ms} ms (off by {d} ms)"
    );
}

#[test]
fn cutover_gap_and_drain_match_the_drivers_record_and_the_report() {
    let stop = Arc::new(AtomicBool::new(false));
    let (old, h_old) = churn_server("127.138.77.1", stop.clone());
    let (new, h_new) = churn_server("127.148.77.1", stop.clone());
    let old_pool_srv = Server::start("127.138.77.2");
    let new_pool_srv = Server::start("127.148.77.2");
    let old_pool = open_connections(old_pool_srv.addr, 30);
    old_pool_srv.wait_accepted(30);

    // The cutover is given as a time 5 s after the driver will start.
    let t_start = now_ms() + 1500;
    let t_cut = t_start + 5000;
    let cut_arg = rfc3339(t_cut);
    let run = Run::start(
        "failover",
        &[
            "--old",
            "127.138.77.0/24",
            "--new",
            "127.148.77.0/24",
            "--cutover-at",
            &cut_arg,
            "--quiet-for",
            "2s",
            "--exit-on-drain",
        ],
    );
    thread::sleep(Duration::from_millis((t_start - now_ms()).max(0) as u64));

    let sticky = Command::new(env!("CARGO_BIN_EXE_tconn"))
        .args(["--comm", "sticky", "paced", &old.to_string(), "20", "10000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tconn");
    let (mut t_switch, mut t_pool_close) = (0, 0);
    let mut old_pool = Some(old_pool);
    let mut new_pool = vec![];
    let t0 = Instant::now();
    let mut i = 0u32;
    // The main clients: one connect every 5 ms on an absolute schedule, bounded to 20 s.
    while t0.elapsed() < Duration::from_secs(20) {
        let due = t0 + Duration::from_millis(5) * i;
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            thread::sleep(w);
        }
        i += 1;
        let ms = now_ms() - t_start;
        let to = if ms < 7000 { old } else { new };
        if ms >= 7000 && t_switch == 0 {
            t_switch = now_ms();
            new_pool = open_connections(new_pool_srv.addr, 30);
        }
        if ms >= 14_000 && old_pool.is_some() {
            drop(old_pool.take());
            t_pool_close = now_ms();
        }
        drop(TcpStream::connect(to).expect("connect"));
        if ms >= 17_000 {
            break;
        }
    }
    let mut sticky = sticky;
    let sticky_out = read_all(sticky.stdout.take().unwrap());
    assert!(sticky.wait().expect("wait tconn").success(), "{sticky_out}");
    let t_sticky_last: i64 = sticky_out
        .split("last_ms=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("sticky client output: {sticky_out}"));
    assert!(sticky_out.contains("failed=0"), "{sticky_out}");
    let out = run.stop();
    stop.store(true, Ordering::Relaxed);
    let _ = (h_old.join(), h_new.join());
    drop(new_pool);

    assert!(out.status.success(), "exit {}: {}", out.status, out.stderr);
    assert_eq!(
        out.summary()["reason"],
        "drained",
        "--exit-on-drain ended the run"
    );
    let start = parse_rfc3339_ms(out.meta()["started_at"].as_str().unwrap());
    let rel = |t: i64| t - start;

    // Cutover: the time given, as an offset from the start.
    let cut = event(&out, "cutover", |_| true);
    assert_eq!(cut["source"], "flag");
    assert_near("cutover", n(&cut["elapsed_ms"]) as i64, rel(t_cut));

    // Attempts reach 95 % and 99 % when the sticky client stops; open connections when the old
    // pool closes.
    let gap = |metric: &str, level: u64| {
        let e = event(&out, "gap", |e| {
            e["metric"] == metric && e["level"] == level
        });
        e["gap_ms"].as_i64().unwrap()
    };
    let cut_ms = n(&cut["elapsed_ms"]) as i64;
    assert_near(
        "attempts 95%",
        cut_ms + gap("attempts", 95),
        rel(t_sticky_last),
    );
    assert_near(
        "attempts 99%",
        cut_ms + gap("attempts", 99),
        rel(t_sticky_last),
    );
    assert_near("open 95%", cut_ms + gap("open", 95), rel(t_pool_close));
    assert!(t_switch > 0);

    // Drained: quiet since the pool closed.
    let drained = event(&out, "drained", |e| e["state"] == "drained");
    assert_near("drained", n(&drained["since_ms"]) as i64, rel(t_pool_close));

    // The census found the pool and its owner (this process).
    let owners = out.meta()["census_owners"].as_array().unwrap();
    let me = owners
        .iter()
        .find(|o| n(&o["pid"]) == std::process::id() as u64)
        .unwrap_or_else(|| panic!("this process owns the old pool: {owners:?}"));
    assert!(n(&me["old_open"]) >= 30);

    // `tracer report` replays the file to the same numbers.
    let json = tmp_path("failover.ndjson");
    let svg = tmp_path("failover.svg");
    let (code, stdout, stderr) = tracer(&[
        "report",
        json.to_str().unwrap(),
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let rep: Value = serde_json::from_str(&stdout).expect("report --json is one JSON object");
    let a = &rep["analysis"];
    // The live run's final analysis (an event before the summary) is the report's.
    let mut live = out.events("analysis")[0].clone();
    for k in ["type", "ts", "elapsed_ms", "kind"] {
        live.as_object_mut().unwrap().remove(k);
    }
    assert_eq!(&live, a, "live and report analysis differ");
    assert_eq!(a["cutover"]["at_ms"], cut["elapsed_ms"]);
    for g in a["gaps"].as_array().unwrap() {
        let (m, l) = (g["metric"].as_str().unwrap(), g["level"].as_u64().unwrap());
        assert_eq!(g["gap_ms"].as_i64(), Some(gap(m, l)), "report gap {m} {l}%");
    }
    assert_eq!(a["drain"]["since_ms"], drained["since_ms"]);
    assert_eq!(a["drain"]["drained"], true);
    assert_eq!(rep["totals"]["cohorts"], out.summary()["cohorts"]);
    // The sticky client is a straggler that never reached the new side.
    let st = a["stragglers"].as_array().unwrap();
    let s = st
        .iter()
        .find(|s| s["comm"] == "sticky")
        .unwrap_or_else(|| panic!("sticky among the stragglers: {st:?}"));
    assert_eq!(s["reached_new"], false);
    assert!(n(&s["old_attempts_since_cutover"]) > 0);
    assert_near(
        "sticky last old contact",
        n(&s["last_old_ms"]) as i64,
        rel(t_sticky_last),
    );
    let text = std::fs::read_to_string(&svg).expect("the SVG is written");
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(100)]);

    let (code, stdout, _) = tracer(&["report", json.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("cutover    ") && stdout.contains(" UTC (+"),
        "{stdout}"
    );
    assert!(stdout.contains("drained at"), "{stdout}");
    assert!(stdout.contains("sticky"), "{stdout}");
}

#[test]
fn report_refuses_truncated_and_foreign_files_with_the_line() {
    let bad = tmp_path("foreign.ndjson");
    std::fs::write(&bad, "PK\u{3}\u{4} not json\n").unwrap();
    let (code, _, stderr) = tracer(&["report", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let meta = "{\"type\":\"meta\",\"schema\":1,\"interval_ms\":200}\n";
    std::fs::write(
        &bad,
        format!("{meta}{{\"type\":\"snapshot\",\"elapsed_ms\":20"),
    )
    .unwrap();
    // A killed run: reported up to its last complete line, with a one-line warning.
    let (code, stdout, stderr) = tracer(&["report", bad.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("line 2") && stderr.contains("truncated"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stdout.contains("no summary line"), "{stdout}");

    let (code, _, stderr) = tracer(&["report", "/nonexistent/run.ndjson"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

/// `tracer report -` reads the recording from standard input.
#[test]
fn report_reads_standard_input() {
    let meta = "{\"type\":\"meta\",\"schema\":1,\"interval_ms\":200,\"host\":\"stdin-host\",\"old\":[\"127.138.77.0/24\"],\"new\":[]}\n";
    let mut child = Command::new(tracer_bin())
        .args(["report", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(meta.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["run"]["host"], "stdin-host");
}

#[test]
fn bad_analysis_flags_are_one_line_with_exit_code_2() {
    for args in [
        ["--cutover-at", "yesterday"],
        ["--threshold", "101"],
        ["--quiet-for", "soon"],
    ] {
        let mut all = vec!["watch", "--headless", "--old", "127.138.77.0/24"];
        all.extend(args);
        let (code, _, stderr) = tracer(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}
