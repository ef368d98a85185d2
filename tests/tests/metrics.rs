//! `--metrics`: a real Prometheus (Debian's package) scrapes tracer every second, over TLS with
//! basic auth from a `--web-config` (openssl certificates, an htpasswd bcrypt hash), while
//! loopback traffic runs; what it stored must equal tracer's NDJSON of the same run, snapshot for
//! snapshot, and the README's PromQL must give the shares computed from that NDJSON. Scrapes
//! without or with wrong credentials are refused (401). The shipped rules load and evaluate on
//! what it stored, and every query of the shipped Grafana dashboard parses and returns data.

use std::{
    net::{SocketAddr, TcpListener},
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde_json::Value;
use tracer_tests::{prom::Prometheus, tls::secured, *};

const OLD: &str = "127.136.0.0/16";
const NEW: &str = "127.146.0.0/16";

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
        if let Some(rest) = err
            .split("serving metrics at https://")
            .nth(1)
            .or_else(|| err.split("serving metrics at http://").nth(1))
        {
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
    let old = Server::start("127.136.0.5");
    let new = Server::start("127.146.0.5");
    let refused: SocketAddr = format!("127.136.0.95:{}", old.addr.port()).parse().unwrap();
    let sec = secured("e2e");
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
            "--metrics-processes",
            "10",
            "--web-config",
            sec.web_config.to_str().unwrap(),
        ],
    );
    assert!(run.stderr().contains("https://"), "{}", run.stderr());
    let target = metrics_addr(&run);
    let prom = Prometheus::start_with(
        &scrape_jobs(target, &sec),
        &[deploy("prometheus/tracer-rules.yml")],
    );

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
    .map(|n| dest("127.136.0.5", n) as u64);
    let dest_refused = dest(
        "127.136.0.95",
        "tracer_destination_connections_failed_total",
    );
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
    refused_without_credentials(&prom);
    rules_evaluate(&prom);
    dashboard_queries_return_data(&prom, at);

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
        "127.136.0.5 as Prometheus stored it"
    );
    assert_eq!(out.destination("127.136.0.5"), Some((34, 34, 0, 30, 4)));
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

fn deploy(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

/// The job that scrapes with the web config's user (`tracer`), and two that must be refused:
/// no credentials, a wrong password.
fn scrape_jobs(target: SocketAddr, sec: &tracer_tests::tls::Secured) -> String {
    let tls = format!(
        "    scheme: https\n    tls_config:\n      ca_file: '{}'\n    static_configs:\n      - targets: ['{target}']\n",
        sec.ca.display()
    );
    let auth = |pw: &str| {
        format!(
            "    basic_auth:\n      username: '{}'\n      password: '{pw}'\n",
            sec.user
        )
    };
    format!(
        "  - job_name: tracer\n{tls}{}  - job_name: tracer-noauth\n{tls}  - job_name: tracer-badpass\n{tls}{}",
        auth(&sec.password),
        auth("not-the-password")
    )
}

/// Prometheus' own view of the jobs without the right credentials: down, with HTTP 401.
fn refused_without_credentials(prom: &Prometheus) {
    let t0 = Instant::now();
    loop {
        let targets = prom.api("targets");
        let active = targets["data"]["activeTargets"].as_array().unwrap().clone();
        let of = |job: &str| {
            active
                .iter()
                .find(|t| t["labels"]["job"] == job)
                .cloned()
                .unwrap_or_default()
        };
        let (good, noauth, badpass) = (of("tracer"), of("tracer-noauth"), of("tracer-badpass"));
        let refused = |t: &Value| {
            t["health"] == "down" && t["lastError"].as_str().unwrap_or("").contains("401")
        };
        if refused(&noauth) && refused(&badpass) {
            assert_eq!(good["health"], "up", "{good}");
            assert_eq!(
                good["scrapeUrl"],
                format!(
                    "https://{}/metrics",
                    good["labels"]["instance"].as_str().unwrap()
                )
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "scrapes without the right credentials were not refused with 401: {noauth} {badpass}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        prom.query(r#"up{job=~"tracer-noauth|tracer-badpass"} == 1"#, None)
            .is_empty()
    );
}

/// Metrics the shipped rules and dashboard use that tracer does not export yet (they come with
/// other work). Their queries must parse and, while tracer does not export them, return
/// nothing; once it does, they must return data like the rest (then drop them from here).
const PENDING: &[&str] = &[];

fn pending(expr: &str) -> Option<&'static str> {
    PENDING.iter().find(|m| expr.contains(*m)).copied()
}

/// The shipped rules loaded without error, and every recording rule recorded a series.
fn rules_evaluate(prom: &Prometheus) {
    let t0 = Instant::now();
    let groups = loop {
        let g = prom.api("rules")["data"]["groups"]
            .as_array()
            .unwrap()
            .clone();
        let evaluated = g.iter().all(|g| {
            g["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        if g.len() == 2 && evaluated {
            break g;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "rules not loaded: {g:?} {}",
            prom.log()
        );
        thread::sleep(Duration::from_millis(200));
    };
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert_eq!(rule["health"], "ok", "{rule}");
        if rule["type"] == "recording" {
            let name = rule["name"].as_str().unwrap();
            match pending(rule["query"].as_str().unwrap()) {
                Some(_) => assert!(
                    prom.query(name, None).is_empty(),
                    "{name} has data now: drop it from PENDING"
                ),
                // A rate needs two scrapes in its window: the first evaluations after the
                // start record nothing, so wait (bounded) for one that does.
                None => {
                    let t0 = Instant::now();
                    while prom.query(name, None).is_empty() {
                        assert!(
                            t0.elapsed() < Duration::from_secs(20),
                            "recording rule {name} recorded nothing: {rule} {:?}",
                            prom.query(rule["query"].as_str().unwrap(), None)
                        );
                        thread::sleep(Duration::from_millis(250));
                    }
                }
            }
        }
    }
}

/// Every PromQL query of the Grafana dashboard (panels, annotations, variables), with the
/// dashboard's variables set as Grafana would for this job and all hosts.
fn dashboard_queries(dash: &Value) -> Vec<String> {
    let mut out = vec![];
    fn panels(v: &Value, out: &mut Vec<String>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(t["expr"].as_str().expect("a target with expr").to_string());
            }
            panels(&p["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    for a in dash["annotations"]["list"].as_array().into_iter().flatten() {
        out.extend(a["expr"].as_str().map(str::to_string));
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            // label_values(SELECTOR, LABEL): the selector is the query Prometheus answers.
            let q = v["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .unwrap()
                .0;
            out.push(inner.to_string());
        }
    }
    out.into_iter()
        .map(|q| {
            let q = q
                .replace("$job", "tracer")
                .replace("$instance", ".*")
                .replace("$__rate_interval", "10s");
            assert!(
                !q.contains('$'),
                "a dashboard variable the test does not set: {q}"
            );
            q
        })
        .collect()
}

fn dashboard_queries_return_data(prom: &Prometheus, at: f64) {
    let text = std::fs::read_to_string(deploy("grafana/tracer-fleet.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 12, "{queries:?}");
    for q in &queries {
        // `query` asserts HTTP 200 (it parsed) and a vector result.
        let got = prom.query(q, Some(at));
        match pending(q) {
            Some(m) => {
                assert!(
                    got.is_empty(),
                    "{q}: {m} has data now: drop it from PENDING"
                );
                assert!(
                    prom.query(&format!("count({{__name__=\"{m}\"}})"), Some(at))
                        .is_empty()
                );
            }
            None => assert!(!got.is_empty(), "dashboard query returned no data: {q}"),
        }
    }
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

#[test]
fn a_bad_web_config_is_one_line_before_tracing() {
    let json = tmp_path("webcfg.ndjson");
    let cfg = tmp_path("bad-web.yml");
    let missing = tmp_path("no-such-web.yml");
    let _ = std::fs::remove_file(&missing);
    for (content, expect) in [
        (None, "cannot read --web-config"),
        (
            Some("basic_auth_users:\n  alice: secret\n"),
            "not a bcrypt hash",
        ),
        (
            Some("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n"),
            "cert_file",
        ),
        (
            Some("tls_config:\n  cert_file: x\n"),
            "unknown field `tls_config`",
        ),
    ] {
        let path = match content {
            Some(c) => {
                std::fs::write(&cfg, c).unwrap();
                &cfg
            }
            None => &missing,
        };
        let _ = std::fs::remove_file(&json);
        let (code, stdout, stderr) = tracer(&[
            "watch",
            "--headless",
            "--old",
            OLD,
            "--json",
            json.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
            "--web-config",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{content:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(expect) && stderr.contains("--web-config"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("panicked") && stdout.is_empty(),
            "{stderr}"
        );
        let text = std::fs::read_to_string(&json).unwrap_or_default();
        assert!(
            !text.contains("\"meta\""),
            "traced despite the bad config: {text}"
        );
    }
}
