//! `--metrics`: a real Prometheus (Debian's package) scrapes tracer every second while loopback
//! traffic runs; what it stored must equal tracer's NDJSON of the same run, snapshot for
//! snapshot, and the README's PromQL must give the shares computed from that NDJSON.

use std::{
    net::{SocketAddr, TcpListener},
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use tracer_tests::{prom::Prometheus, *};

const OLD: &str = "127.10.0.0/16";
const NEW: &str = "127.20.0.0/16";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The address tracer printed it serves metrics on.
fn metrics_addr(run: &Run) -> SocketAddr {
    let t0 = Instant::now();
    loop {
        let err = run.stderr();
        if let Some(rest) = err.split("serving metrics at http://").nth(1) {
            let addr = rest.split('/').next().unwrap();
            return addr.parse().expect("a socket address");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no metrics note: {err}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn prometheus_stores_what_the_ndjson_says() {
    let old = Server::start("127.10.0.5");
    let new = Server::start("127.20.0.5");
    let refused: SocketAddr = format!("127.10.0.95:{}", old.addr.port()).parse().unwrap();
    let before_start = now();
    let run = Run::start(
        "metrics-e2e",
        &[
            "--old",
            OLD,
            "--new",
            NEW,
            "--cutover-at",
            "now",
            "--metrics",
            "127.0.0.1:0",
            "--metrics-destinations",
            "50",
            "--label",
            "site=e2e",
        ],
    );
    let target = metrics_addr(&run);
    let prom = Prometheus::start(target);

    // Wait (bounded) until Prometheus scrapes tracer successfully.
    let t0 = Instant::now();
    while prom.query(r#"up{job="tracer"} == 1"#, None).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "target never up: {}",
            prom.log()
        );
        thread::sleep(Duration::from_millis(200));
    }

    short_connections(old.addr, 30);
    short_connections(new.addr, 70);
    refused_connections(refused, 5);
    let held_old = open_connections(old.addr, 4);
    let held_new = open_connections(new.addr, 6);
    old.wait_accepted(34);
    new.wait_accepted(76);
    // One tracer interval (200 ms) and more, so a snapshot holds all of it.
    thread::sleep(Duration::from_millis(500));
    let mark = now();

    // Wait (bounded) for a scrape after the mark; evaluate every query at that scrape's time.
    let t0 = Instant::now();
    let at = loop {
        let ts = prom.query(r#"timestamp(tracer_snapshots_total{job="tracer"})"#, None);
        if let Some((_, t)) = ts.first()
            && *t > mark
        {
            break *t;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no scrape after the traffic: {ts:?} {}",
            prom.log()
        );
        thread::sleep(Duration::from_millis(200));
    };
    let q = |expr: &str| prom.one(expr, Some(at));
    let snapshot_no = q(r#"tracer_snapshots_total{job="tracer"}"#) as usize;
    // Failures carry a `reason` label: the sum over reasons is the cohort's `failed`.
    let stored = |name: &str, cohort: &str, dir: &str| {
        q(&format!(
            r#"sum({name}{{job="tracer",cohort="{cohort}",direction="{dir}",site="e2e"}})"#
        ))
    };
    let out_series = [
        ("tracer_connection_attempts_total", "attempts"),
        ("tracer_connections_established_total", "established"),
        ("tracer_connections_failed_total", "failed"),
        ("tracer_connections_closed_total", "closed"),
        ("tracer_connections_open", "open"),
    ];
    let in_series = [
        ("tracer_connections_established_total", "accepted"),
        ("tracer_connections_closed_total", "closed"),
        ("tracer_connections_open", "open"),
    ];
    let mut prom_out = vec![];
    for c in ["old", "new"] {
        for (name, field) in out_series {
            prom_out.push((c, "cohorts", field, stored(name, c, "outbound")));
        }
        for (name, field) in in_series {
            prom_out.push((c, "inbound", field, stored(name, c, "inbound")));
        }
    }
    let share_open = q(r#"tracer_new_share_ratio{job="tracer",basis="open"}"#);
    let share_attempts = prom.query(r#"tracer_new_share_ratio{basis="attempts"}"#, Some(at));
    // The README's fleet-wide share and the hosts still holding old connections.
    let fleet_share = q(
        r#"sum(tracer_connections_open{direction="outbound",cohort="new"})
        / sum(tracer_connections_open{direction="outbound",cohort=~"old|new"})"#,
    );
    let holding_old = prom.query(
        r#"sum by (instance) (tracer_connections_open{direction="outbound",cohort="old"}) > 0"#,
        Some(at),
    );
    let dest = |addr: &str, name: &str| {
        q(&format!(
            r#"{name}{{job="tracer",destination="{addr}",site="e2e"}}"#
        ))
    };
    let dest_old = [
        "tracer_destination_connection_attempts_total",
        "tracer_destination_connections_established_total",
        "tracer_destination_connections_failed_total",
        "tracer_destination_connections_closed_total",
        "tracer_destination_connections_open",
    ]
    .map(|n| dest("127.10.0.5", n) as u64);
    let dest_refused = dest("127.10.0.95", "tracer_destination_connections_failed_total");
    let hooks = prom.query(r#"tracer_hooks_info{job="tracer"}"#, Some(at));
    // Latency histogram per cohort, and the milestones of the analysis.
    let latency_count = |c: &str| {
        q(&format!(
            r#"tracer_connect_latency_seconds_count{{job="tracer",cohort="{c}"}}"#
        ))
    };
    let latency = [latency_count("old"), latency_count("new")];
    let latency_inf =
        q(r#"tracer_connect_latency_seconds_bucket{job="tracer",cohort="new",le="+Inf"}"#);
    let cutover_time = q(r#"tracer_cutover_time_seconds{job="tracer"}"#);
    let drained = q(r#"tracer_old_drained{job="tracer"}"#);

    let out = run.stop();
    drop((held_old, held_new, prom));
    assert!(out.status.success(), "exit {}: {}", out.status, out.stderr);

    // The snapshot Prometheus scraped, found by its number, is the NDJSON line of that number.
    let snaps = out.snapshots();
    assert!(
        snapshot_no >= 1 && snapshot_no <= snaps.len(),
        "{snapshot_no}"
    );
    let snap: &Value = snaps[snapshot_no - 1];
    for (c, section, field, value) in &prom_out {
        assert_eq!(
            *value,
            n(&snap[section][c][field]) as f64,
            "{section}.{c}.{field}: Prometheus vs NDJSON snapshot {snapshot_no}"
        );
    }
    // Per destination: the traffic this test made, exactly.
    assert_eq!(
        dest_old,
        [34, 34, 0, 30, 4],
        "127.10.0.5 as Prometheus stored it"
    );
    assert_eq!(out.destination("127.10.0.5"), Some((34, 34, 0, 30, 4)));
    assert_eq!(dest_refused, 5.0);

    // Shares as computed from the NDJSON.
    let open = |c: &str| n(&snap["cohorts"][c]["open"]) as f64;
    let expected = open("new") / (open("old") + open("new"));
    assert!(
        (share_open - expected).abs() < 1e-9,
        "{share_open} vs {expected}"
    );
    assert!(
        (fleet_share - expected).abs() < 1e-9,
        "{fleet_share} vs {expected}"
    );
    let delta = |c: &str| n(&snap["cohorts"][c]["delta"]["attempts"]) as f64;
    match (delta("old") + delta("new"), share_attempts.as_slice()) {
        (0.0, []) => {} // no attempts in that interval: absent, not 0
        (d, [(_, v)]) if d > 0.0 => assert!((v - delta("new") / d).abs() < 1e-9),
        other => panic!("attempts share {other:?}"),
    }
    assert_eq!(holding_old.len(), 1, "{holding_old:?}");
    assert_eq!(holding_old[0].0["instance"], target.to_string());
    assert_eq!(holding_old[0].1, open("old"));
    let lat = |c: &str| n(&snap["cohorts"][c]["latency_us"]["count"]) as f64;
    assert_eq!(
        latency,
        [lat("old"), lat("new")],
        "latency _count vs NDJSON"
    );
    assert_eq!(latency_inf, lat("new"));
    assert!(
        lat("new") >= 76.0,
        "every connect to the new side was timed"
    );
    assert!(
        cutover_time >= before_start.floor() && cutover_time <= mark,
        "cutover {cutover_time} not in [{before_start}, {mark}]"
    );
    assert_eq!(drained, 0.0, "old connections are held open");
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        hooks[0].0["connect"],
        out.meta()["hooks"]["connect"].as_str().unwrap()
    );
    assert_eq!(hooks[0].0["unsent"], "cgroup+syscall");
}

#[test]
fn bind_failures_are_one_line_before_tracing() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let json = tmp_path("bind.ndjson");
    let _ = std::fs::remove_file(&json);
    for (arg, expect) in [
        (addr.as_str(), "in use"),
        ("127.0.0.1", "--metrics 127.0.0.1"),
        ("127.0.0.1:99999", "--metrics 127.0.0.1:99999"),
    ] {
        let (code, stdout, stderr) = tracer(&[
            "watch",
            "--headless",
            "--old",
            OLD,
            "--json",
            json.to_str().unwrap(),
            "--metrics",
            arg,
        ]);
        assert_eq!(code, 2, "{arg}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{arg}: one line: {stderr}");
        assert!(stderr.contains(expect), "{arg}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stdout.is_empty());
        // Nothing was traced: the NDJSON has no meta line.
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        assert!(!text.contains("\"meta\""), "{arg}: {text}");
    }
    drop(busy);
}
