//! DNS as the operator checks it, against real servers in a test network namespace: NSD
//! authoritative for `cut.test.`, an Unbound cache in front of it (the system resolver), and a
//! second Unbound that serves expired answers once it cannot reach NSD. The record changes at a
//! known time: NSD answers new at once, the cache keeps old for the rest of its TTL, the second
//! cache keeps old past it. `dig` checks each server independently.

use std::{
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tracer_tests::{dnsd, *};

const AUTH: &str = "127.53.1.1";
const CACHE: &str = "127.53.1.2";
const STALE: &str = "127.53.1.3";
const TTL: u32 = 6;
const NEG_TTL: u32 = 7;

/// NSD and the two caches, ready to answer.
struct Dns {
    ns: Netns,
    zone: std::path::PathBuf,
    nsd: dnsd::Daemon,
    _cache: dnsd::Daemon,
    _stale: dnsd::Daemon,
    resolv: std::path::PathBuf,
}

fn start(tag: &str) -> Dns {
    let ns = Netns::new(tag);
    let zone = tmp_path(&format!("{tag}.zone"));
    std::fs::write(
        &zone,
        dnsd::zone(1, AUTH, TTL, NEG_TTL, "127.134.53.8", "fd00:53::8"),
    )
    .unwrap();
    let nsd = dnsd::nsd(&ns, tag, AUTH, &zone);
    dnsd::wait_answering(&ns, AUTH, "cut.test.", "SOA");
    let cache = dnsd::unbound(
        &ns,
        &format!("{tag}-cache"),
        CACHE,
        "127.53.1.12",
        AUTH,
        false,
    );
    let stale = dnsd::unbound(
        &ns,
        &format!("{tag}-stale"),
        STALE,
        "127.53.1.13",
        AUTH,
        true,
    );
    // Ready by the zone's SOA: the watched names are first cached by tracer's own lookups.
    dnsd::wait_answering(&ns, CACHE, "cut.test.", "SOA");
    dnsd::wait_answering(&ns, STALE, "cut.test.", "SOA");
    let resolv = tmp_path(&format!("{tag}.resolv.conf"));
    std::fs::write(
        &resolv,
        format!("nameserver {CACHE}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    Dns {
        ns,
        zone,
        nsd,
        _cache: cache,
        _stale: stale,
        resolv,
    }
}

/// Unix ms of an RFC 3339 UTC time as tracer writes it (`2026-12-02T00:29:23.557Z`).
fn unix_ms(ts: &str) -> u64 {
    let n = |a: usize, b: usize| ts[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    (secs * 1000 + n(20, 23)) as u64
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Poll `dig` at `server` every 100 ms until it answers `want` for `api`; when it did (Unix ms).
fn dig_until(ns: &Netns, server: &str, want: &str, within: Duration) -> u64 {
    let t0 = Instant::now();
    loop {
        if dnsd::dig(ns, server, "api.cut.test.", "A").contains(want) {
            return now_ms();
        }
        assert!(
            t0.elapsed() < within,
            "{server} did not answer {want} within {within:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The TTL `server` has left for the old `api` A record (dig's answer line).
fn remaining(ns: &Netns, server: &str) -> u32 {
    let d = sh(ns.cmd(tool("dig")).args([
        "+noall",
        "+answer",
        "+tries=1",
        "+time=1",
        &format!("@{server}"),
        "api.cut.test.",
        "A",
    ]));
    d.split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("dig: {d}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn each_resolver_switches_on_its_own_ttl_and_a_stale_one_is_flagged() {
    let dns = start("dnsres");
    let mut cmd = dns.ns.cmd(tracer_bin());
    cmd.env("TRACER_RESOLV_CONF", &dns.resolv);
    let args = [
        "--old",
        "127.134.53.0/24,fd00:53::8/128",
        "--new",
        "127.144.53.0/24,fd00:53::9/128",
        "--watch-dns",
        "api.cut.test.",
        "--watch-dns",
        "www.cut.test.",
        "--watch-dns",
        "gone.cut.test.",
        "--dns-server",
        AUTH,
        "--dns-server",
        CACHE,
        "--dns-server",
        STALE,
    ];
    let run = Run::start_with("dnsres", &args, cmd);
    // tracer's lookups keep the old answer cached in both Unbounds (TTL 6 s). Change when both
    // have at least 3 s of it left, so the cache's lag is that rest of its TTL.
    let t0 = Instant::now();
    let (left, _) = loop {
        let (a, b) = (remaining(&dns.ns, CACHE), remaining(&dns.ns, STALE));
        if a >= 3 && b >= 3 {
            break (a, b);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "caches never had 3 s left"
        );
        thread::sleep(Duration::from_millis(300));
    };
    // The second cache loses its way to NSD, and the record changes.
    let nft = tool("nft");
    sh(dns.ns.cmd(&nft).args(["add", "table", "ip", "t"]));
    sh(dns.ns.cmd(&nft).args([
        "add",
        "chain",
        "ip",
        "t",
        "out",
        "{ type filter hook output priority 0 ; }",
    ]));
    sh(dns.ns.cmd(&nft).args([
        "add",
        "rule",
        "ip",
        "t",
        "out",
        "ip",
        "saddr",
        "127.53.1.13",
        "drop",
    ]));
    std::fs::write(
        &dns.zone,
        dnsd::zone(2, AUTH, TTL, NEG_TTL, "127.144.53.8", "fd00:53::9"),
    )
    .unwrap();
    let changed = now_ms();
    dns.nsd.signal(libc::SIGHUP);
    // Ground truth from dig: when NSD and the cache really answered the new address.
    let auth_new = dig_until(&dns.ns, AUTH, "127.144.53.8", Duration::from_secs(5));
    let cache_new = dig_until(&dns.ns, CACHE, "127.144.53.8", Duration::from_secs(15));
    // Wait (bounded) for tracer to flag the stale cache.
    let json = tmp_path("dnsres.ndjson");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&json)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("\"dns_stale\"") && l.contains("api.cut.test."))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "no dns_stale within 15 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let stale_still_old = dnsd::dig(&dns.ns, STALE, "api.cut.test.", "A");
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        stale_still_old.contains("127.134.53.8"),
        "dig: {stale_still_old}"
    );

    // Per-server changes of api: NSD first, the cache (and the system resolver, which is that
    // cache) when its TTL ran out, the stale cache never.
    let api: Vec<&Value> = out
        .events("dns_change")
        .into_iter()
        .filter(|e| e["name"] == "api.cut.test.")
        .collect();
    let by = |s: &str| -> &Value {
        let v: Vec<&&Value> = api.iter().filter(|e| e["server"] == s).collect();
        assert_eq!(v.len(), 1, "one change from {s}: {api:?}");
        v[0]
    };
    let auth = by("127.53.1.1:53");
    let cache = by("127.53.1.2:53");
    let system = by("system");
    assert!(
        api.iter().all(|e| e["server"] != "127.53.1.3:53"),
        "{api:?}"
    );
    assert_eq!(auth["lag_ms"], 0);
    assert_eq!(strs(&auth["old"]), ["127.134.53.8", "fd00:53::8"]);
    assert_eq!(strs(&auth["new"]), ["127.144.53.8", "fd00:53::9"]);
    assert_eq!(auth["ttl"], TTL);
    let ts = |e: &Value| unix_ms(e["ts"].as_str().unwrap());
    assert!(
        ts(auth) >= changed && ts(auth) <= auth_new + 400,
        "NSD switched at {} (changed {changed}, dig saw it {auth_new})",
        ts(auth)
    );
    // The cache switched when dig saw it switch, within two polls of either.
    assert!(
        ts(cache).abs_diff(cache_new) <= 500,
        "cache switched at {} by tracer, {cache_new} by dig",
        ts(cache)
    );
    // It kept the old answer for the rest of its TTL: its lag is what it had left.
    let lag = cache["lag_ms"].as_u64().unwrap();
    assert!(
        lag.abs_diff(u64::from(left) * 1000) <= 1_500,
        "lag {lag}, {left} s were left"
    );
    assert_eq!(ts(cache) - ts(auth), lag);
    assert!(system["lag_ms"].as_u64().unwrap().abs_diff(lag) <= 500);
    // The first switch of any server (NSD's) is the cutover.
    let cut = out.events("cutover");
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0]["source"], "dns");
    assert_eq!(cut[0]["name"], "api.cut.test.");
    assert_eq!(cut[0]["elapsed_ms"], auth["elapsed_ms"]);

    // The stale cache: flagged once, after the TTL it gave for the old answer ran out.
    let st: Vec<&Value> = out
        .events("dns_stale")
        .into_iter()
        .filter(|e| e["name"] == "api.cut.test.")
        .collect();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(
        (st[0]["name"].as_str(), st[0]["server"].as_str()),
        (Some("api.cut.test."), Some("127.53.1.3:53"))
    );
    assert_eq!(strs(&st[0]["answer"]), ["127.134.53.8", "fd00:53::8"]);
    let expected = st[0]["expected_ms"].as_u64().unwrap();
    assert!(expected <= auth["elapsed_ms"].as_u64().unwrap() + u64::from(TTL) * 1000);
    assert!(st[0]["elapsed_ms"].as_u64().unwrap() > expected);

    // The CNAME: followed, shown, and switched with its target.
    let www: Vec<&Value> = out
        .events("dns_change")
        .into_iter()
        .filter(|e| e["name"] == "www.cut.test." && e["server"] == "127.53.1.1:53")
        .collect();
    assert_eq!(www.len(), 1);
    assert_eq!(strs(&www[0]["cnames"]), ["api.cut.test."]);
    assert_eq!(strs(&www[0]["new"]), ["127.144.53.8", "fd00:53::9"]);

    // NXDOMAIN with the negative TTL from the SOA (its minimum: the SOA's own TTL is longer).
    let gone = out
        .events("dns_servers")
        .into_iter()
        .find(|e| e["name"] == "gone.cut.test.")
        .expect("dns_servers for gone");
    for s in gone["servers"].as_array().unwrap() {
        assert_eq!(s["kind"], "nxdomain", "{s}");
        let neg = s["negative_ttl"].as_u64().unwrap();
        assert!(neg >= 1 && neg <= u64::from(NEG_TTL), "{s}");
        if s["server"] == "127.53.1.1:53" {
            assert_eq!(neg, u64::from(NEG_TTL));
        }
    }
    // The last per-server view of api: the stale flag and each current answer.
    let last = out
        .events("dns_servers")
        .into_iter()
        .rev()
        .find(|e| e["name"] == "api.cut.test.")
        .unwrap();
    let row = |s: &str| {
        last["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["server"] == s)
            .unwrap()
            .clone()
    };
    assert_eq!(row("127.53.1.3:53")["stale"], true);
    assert_eq!(
        strs(&row("127.53.1.3:53")["answer"]),
        ["127.134.53.8", "fd00:53::8"]
    );
    assert_eq!(row("127.53.1.2:53")["stale"], false);
    assert_eq!(
        strs(&row("127.53.1.2:53")["answer"]),
        ["127.144.53.8", "fd00:53::9"]
    );

    // The report's resolver gap: the cache's lag, the stale cache not switched.
    let file = json.to_str().unwrap();
    let (code, text, err) = tracer(&["report", file, "--json"]);
    assert_eq!(code, 0, "{err}");
    let rep: Value = serde_json::from_str(&text).unwrap();
    let gap = rep["resolvers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "api.cut.test.")
        .unwrap();
    let rows = gap["servers"].as_array().unwrap();
    let get = |s: &str| rows.iter().find(|r| r["server"] == s).unwrap();
    assert_eq!(get("127.53.1.2:53")["lag_ms"], lag);
    assert_eq!(get("127.53.1.1:53")["lag_ms"], 0);
    assert_eq!(get("127.53.1.3:53")["switched_ms"], Value::Null);
    assert_eq!(get("127.53.1.3:53")["stale_at_ms"], st[0]["elapsed_ms"]);
    let max_lag = api
        .iter()
        .map(|e| e["lag_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(gap["resolver_gap_ms"], max_lag);
    let (code, text, _) = tracer(&["report", file]);
    assert_eq!(code, 0);
    assert!(
        text.contains("resolvers  api.cut.test.: resolver gap"),
        "{text}"
    );
    assert!(text.contains("STALE since"), "{text}");
}

/// `tracer preflight` in the namespace as an unprivileged user (no root, no BPF).
fn preflight(dns: &Dns, resolv: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = dns
        .ns
        .cmd("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(tracer_bin())
        .arg("preflight")
        .args(args)
        .env("TRACER_RESOLV_CONF", resolv)
        .output()
        .expect("run preflight");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn preflight_finds_the_authoritative_ttl_and_exits_by_max_ttl() {
    let dns = start("preflight");
    // Readable by the unprivileged user.
    let resolv = std::env::temp_dir().join(format!("tracer-preflight-{}.conf", std::process::id()));
    std::fs::copy(&dns.resolv, &resolv).unwrap();
    let names = ["api.cut.test.", "www.cut.test.", "gone.cut.test."];
    let mut args = names.to_vec();
    args.extend(["--dns-server", CACHE, "--max-ttl", "300s", "--json"]);
    let (code, text, err) = preflight(&dns, &resolv, &args);
    assert_eq!(code, 0, "{text}{err}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let api = &v["names"][0];
    assert_eq!(api["zone"], "cut.test.");
    let servers = api["servers"].as_array().unwrap();
    let roles: Vec<&str> = servers
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "server", "authoritative"]);
    let auth = &servers[2];
    assert_eq!(auth["server"], "ns1.cut.test. 127.53.1.1:53");
    assert_eq!(auth["ttl"], TTL);
    assert_eq!(strs(&auth["answer"]), ["127.134.53.8", "fd00:53::8"]);
    assert_eq!(api["largest_ttl"], TTL);
    let in_force = unix_ms(api["in_force_at"].as_str().unwrap());
    let checked = unix_ms(v["checked_at"].as_str().unwrap());
    assert_eq!(in_force - checked, u64::from(TTL) * 1000);
    assert_eq!(
        strs(&v["names"][1]["servers"][2]["cnames"]),
        ["api.cut.test."]
    );
    let gone = &v["names"][2]["servers"][2];
    assert_eq!(
        (gone["kind"].as_str(), gone["ttl"].as_u64()),
        (Some("nxdomain"), Some(u64::from(NEG_TTL)))
    );
    // Dig agrees with the authoritative TTL.
    let d = sh(dns.ns.cmd(tool("dig")).args([
        "+noall",
        "+answer",
        "@127.53.1.1",
        "api.cut.test.",
        "A",
    ]));
    assert!(d.split_whitespace().nth(1) == Some("6"), "dig: {d}");

    // Above --max-ttl: exit 1, and the text names it.
    let (code, text, _) = preflight(&dns, &resolv, &["api.cut.test.", "--max-ttl", "5s"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("TOO LONG"), "{text}");
    // Bad input: one line, exit 2.
    for bad in [
        &["api.cut.test.", "--max-ttl", "soon"][..],
        &["api.cut.test.", "--dns-server", "nope"],
    ] {
        let (code, _, err) = preflight(&dns, &resolv, bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Nobody answers: exit 2 with the reason.
    let dead =
        std::env::temp_dir().join(format!("tracer-preflight-dead-{}.conf", std::process::id()));
    std::fs::write(
        &dead,
        "nameserver 127.53.1.9\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let (code, _, err) = preflight(&dns, &dead, &["api.cut.test."]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no server answered for api.cut.test."),
        "{err}"
    );
    let _ = std::fs::remove_file(resolv);
    let _ = std::fs::remove_file(dead);
}
