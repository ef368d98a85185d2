//! Why connects fail and how long they take: reasons read from the socket in the kernel, and
//! connect latency histograms per cohort. Traffic to loopback and to addresses inside network
//! namespaces the tests create; drops, resets and ICMP errors come from nftables rules there.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::*;

fn tconn() -> &'static str {
    env!("CARGO_BIN_EXE_tconn")
}

const REASONS: [&str; 8] = [
    "refused",
    "timeout",
    "unreachable",
    "reset",
    "aborted",
    "no_route",
    "no_port",
    "other",
];

/// `failed_by_reason` of a JSON object, every reason present.
fn reasons(v: &Value) -> [u64; 8] {
    REASONS.map(|r| n(&v["failed_by_reason"][r]))
}

/// `[refused, timeout, unreachable, reset, aborted, no_route, no_port, other]`, one reason set.
fn only(reason: &str, count: u64) -> [u64; 8] {
    REASONS.map(|r| if r == reason { count } else { 0 })
}

fn dest<'a>(out: &'a Output, addr: &str) -> &'a Value {
    out.summary()["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["addr"] == addr)
        .unwrap_or_else(|| panic!("no destination {addr} in {}", out.summary()))
}

/// A TCP socket bound to `ip:0` that never listens: SYNs to it are answered with RST.
struct Bound {
    fd: i32,
    port: u16,
}

impl Bound {
    fn new(ip: Ipv4Addr) -> Bound {
        // SAFETY: plain socket/bind/getsockname on a struct we own.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_addr.s_addr = u32::from(ip).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            let r = libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len);
            assert_eq!(r, 0, "bind {ip}: {}", std::io::Error::last_os_error());
            let mut got = len;
            libc::getsockname(fd, &mut sa as *mut _ as *mut libc::sockaddr, &mut got);
            Bound {
                fd,
                port: u16::from_be(sa.sin_port),
            }
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}

/// nftables rules in the namespace's output chain (one `nft -f` script).
fn nft_output(ns: &Netns, rules: &[&str]) {
    let script = format!(
        "table inet t {{\n chain out {{\n  type filter hook output priority 0;\n  {}\n }}\n}}\n",
        rules.join("\n  ")
    );
    let path = tmp_path(&format!("{}.nft", ns.name));
    std::fs::write(&path, script).expect("write nft script");
    sh(ns.cmd(tool("nft")).arg("-f").arg(&path));
}

/// The kernel's SYN retransmission schedule: the first SYN plus `retries` retransmissions, the
/// timeout doubling from 1 s (TCP_TIMEOUT_INIT); the connect fails one timeout after the last.
fn syn_timeout(retries: u32) -> Duration {
    Duration::from_secs((0..=retries).map(|k| 1u64 << k).sum())
}

/// The log2 bucket a percentile names holds values in `(p/2, p]` (p in microseconds).
fn bucket_holds(p: &Value, d: Duration) -> bool {
    let p = n(p) as u128;
    let us = d.as_micros();
    p / 2 < us && us <= p
}

#[test]
fn refused_connects_have_reason_refused_per_cohort_destination_and_process() {
    let bound = Bound::new(Ipv4Addr::new(127, 135, 0, 9));
    let to = SocketAddr::from(([127, 135, 0, 9], bound.port));
    let s = Server::start("127.145.0.9");
    let run = Run::start(
        "refused",
        &["--old", "127.135.0.0/16", "--new", "127.145.0.0/16"],
    );
    refused_connections(to, 7);
    short_connections(s.addr, 4);
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let old = &out.summary()["cohorts"]["old"];
    assert_eq!(out.cohort("old"), (7, 0, 7, 0, 0));
    assert_eq!(reasons(old), only("refused", 7));
    assert_eq!(reasons(&old["delta"]), only("refused", 7));
    assert_eq!(n(&old["failed_latency_us"]["count"]), 7);
    assert_eq!(n(&old["latency_us"]["count"]), 0);
    assert!(old["latency_us"]["p50"].is_null());
    assert_eq!(reasons(dest(&out, "127.135.0.9")), only("refused", 7));

    let new = &out.summary()["cohorts"]["new"];
    assert_eq!(reasons(new), only("refused", 0));
    assert_eq!(n(&new["latency_us"]["count"]), 4);
    assert_eq!(reasons(dest(&out, "127.145.0.9")), only("refused", 0));

    // The connects came from this process: its row carries the reasons too.
    let me = out.summary()["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| n(&p["pid"]) == std::process::id() as u64)
        .expect("this test process is listed");
    assert_eq!(reasons(&me["cohorts"]["old"]), only("refused", 7));

    // Every snapshot: the reasons add up to `failed`, cumulative and per interval.
    for snap in out.snapshots() {
        for c in ["old", "new", "other"] {
            let v = &snap["cohorts"][c];
            assert_eq!(reasons(v).iter().sum::<u64>(), n(&v["failed"]), "{v}");
            let d = &v["delta"];
            assert_eq!(reasons(d).iter().sum::<u64>(), n(&d["failed"]), "{d}");
        }
    }
}

#[test]
fn mixed_failures_are_counted_exactly_per_reason() {
    let ns = Netns::new("why");
    sh(ns.cmd("sysctl").args(["-qw", "net.ipv4.tcp_syn_retries=1"]));
    sh(Command::new(tool("ip")).args([
        "-n",
        &ns.name,
        "route",
        "add",
        "unreachable",
        "127.135.200.0/24",
    ]));
    nft_output(
        &ns,
        &[
            "ip daddr 127.135.1.1 tcp dport 9 drop",
            "ip daddr 127.135.2.1 tcp dport 9 reject with icmp type host-unreachable",
            "ip daddr 127.135.2.2 tcp dport 9 reject with icmp type net-unreachable",
            "ip daddr 127.135.2.3 tcp dport 9 reject with icmp type admin-prohibited",
            "ip daddr 127.135.3.1 tcp dport 9 reject with tcp reset",
            "ip daddr 127.135.4.1 tcp dport 9 drop",
        ],
    );
    let run = Run::start(
        "mixed",
        &["--old", "127.135.0.0/16", "--new", "127.145.0.0/16"],
    );
    let connect = |addr: &str, n: &str| sh(ns.cmd(tconn()).args(["connect", addr, n]));

    // Refused: nothing listens there (the kernel answers the SYN with RST).
    assert_eq!(connect("127.135.0.1:9", "3").trim(), "ok=0 failed=3");
    // Reset: an RST sent by a rule; Linux reports every RST to a SYN as ECONNREFUSED.
    assert_eq!(connect("127.135.3.1:9", "2").trim(), "ok=0 failed=2");
    // Unreachable: ICMP errors to the SYN. The first ICMP arrives while connect() still holds
    // the socket (it is generated on this host), so the kernel keeps it as a soft error and the
    // retransmission's ICMP ends the connect: blocking connects (tconn) see it.
    for a in ["127.135.2.1:9", "127.135.2.2:9", "127.135.2.3:9"] {
        assert_eq!(connect(a, "1").trim(), "ok=0 failed=1");
    }
    // Timeout: every SYN dropped.
    let t0 = Instant::now();
    assert_eq!(connect("127.135.1.1:9", "1").trim(), "ok=0 failed=1");
    let timeout_took = t0.elapsed();
    // Aborted: the application gives up first (its own connect timeout, then close).
    let t0 = Instant::now();
    let r = sh(ns
        .cmd(tconn())
        .args(["giveup", "127.135.4.1:9", "2", "300"]));
    assert_eq!(r.trim(), "ok=0 failed=2");
    let giveup_took = t0.elapsed();
    // No route at all: connect() fails before a SYN exists; an attempt with reason no_route.
    assert_eq!(connect("127.135.200.1:9", "2").trim(), "ok=0 failed=2");
    // And some that work, on the new side.
    sh(ns.cmd(tconn()).args(["pair", "127.145.0.1", "5"]));
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);

    let old = &out.summary()["cohorts"]["old"];
    assert_eq!(out.cohort("old"), (13, 0, 13, 0, 0));
    //             refused timeout unreachable reset aborted no_route no_port other
    assert_eq!(reasons(old), [5, 1, 3, 0, 2, 2, 0, 0]);
    assert_eq!(reasons(dest(&out, "127.135.0.1")), only("refused", 3));
    assert_eq!(reasons(dest(&out, "127.135.3.1")), only("refused", 2));
    for a in ["127.135.2.1", "127.135.2.2", "127.135.2.3"] {
        assert_eq!(reasons(dest(&out, a)), only("unreachable", 1), "{a}");
    }
    assert_eq!(reasons(dest(&out, "127.135.1.1")), only("timeout", 1));
    assert_eq!(reasons(dest(&out, "127.135.4.1")), only("aborted", 2));
    assert_eq!(reasons(dest(&out, "127.135.200.1")), only("no_route", 2));
    assert_eq!(out.destination("127.135.200.1"), Some((2, 0, 2, 0, 0)));
    assert_eq!(out.cohort("new"), (5, 5, 0, 5, 0));
    assert_eq!(
        reasons(&out.summary()["cohorts"]["new"]),
        only("refused", 0)
    );

    // Time to failure: 11 failures sent a SYN (no_route ones have no time); the slowest is the
    // timeout, which must sit in the bucket of the kernel's retry schedule (and below what the
    // client measured around it).
    let lat = &old["failed_latency_us"];
    assert_eq!(n(&lat["count"]), 11);
    let expect = syn_timeout(1);
    assert!(expect < timeout_took, "{timeout_took:?}");
    assert!(
        bucket_holds(&lat["p99"], expect),
        "p99 {} vs timeout {expect:?}",
        lat["p99"]
    );
    // The two give-ups took the application's 300 ms each.
    assert!(giveup_took >= Duration::from_millis(600), "{giveup_took:?}");
}

/// `connect()` to `addr` from inside the namespace: the errno, or 0 when it connected.
fn connect_errno(ns: &Netns, addr: &str, udp: bool) -> String {
    let mut cmd = ns.cmd(tconn());
    cmd.args(["errno", addr]).args(udp.then_some("udp"));
    sh(&mut cmd).trim().to_string()
}

#[test]
fn routes_that_fail_before_the_syn_count_as_no_route_for_v4_and_v6() {
    let ns = Netns::new("noroute");
    // Prefixes this namespace owns, each routed to a different kind of refusal.
    for (kind, prefix) in [
        ("unreachable", "127.135.210.0/24"),
        ("prohibit", "127.135.211.0/24"),
        ("blackhole", "127.135.212.0/24"),
    ] {
        sh(ns.cmd(tool("ip")).args(["route", "add", kind, prefix]));
    }
    sh(ns
        .cmd(tool("ip"))
        .args(["-6", "route", "add", "unreachable", "fd00:10::/64"]));
    let run = Run::start(
        "noroute",
        &[
            "--old",
            "127.135.0.0/16",
            "--old",
            "fd00:10::/64",
            "--new",
            "127.145.0.0/16",
        ],
    );
    // EHOSTUNREACH, EACCES, EINVAL: what each route type makes connect() return.
    assert_eq!(connect_errno(&ns, "127.135.210.1:80", false), "113");
    assert_eq!(connect_errno(&ns, "127.135.211.1:80", false), "13");
    assert_eq!(connect_errno(&ns, "127.135.212.1:80", false), "22");
    assert_eq!(connect_errno(&ns, "[fd00:10::1]:80", false), "113");
    // IPv4-mapped on an IPv6 socket folds into IPv4.
    assert_eq!(
        connect_errno(&ns, "[::ffff:127.135.210.2]:80", false),
        "113"
    );
    // UDP connects fail the same way but are not TCP connection attempts.
    assert_eq!(connect_errno(&ns, "127.135.210.3:53", true), "113");
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);

    for a in [
        "127.135.210.1",
        "127.135.211.1",
        "127.135.212.1",
        "fd00:10::1",
        "127.135.210.2",
    ] {
        assert_eq!(out.destination(a), Some((1, 0, 1, 0, 0)), "{a}");
        assert_eq!(reasons(dest(&out, a)), only("no_route", 1), "{a}");
    }
    assert_eq!(out.destination("127.135.210.3"), None, "UDP is not counted");
    assert_eq!(out.cohort("old"), (5, 0, 5, 0, 0));
    assert_eq!(
        reasons(&out.summary()["cohorts"]["old"]),
        only("no_route", 5)
    );
}

#[test]
fn a_dropped_first_syn_puts_the_new_sides_p90_in_the_one_second_bucket() {
    let ns = Netns::new("lat");
    // Count only the client's SYNs to the new side: SYN, its retransmission, the next SYN, ...
    // `mod 3 == 0` drops the first SYN of every other connection (c1 dropped then passed, c2
    // passed, c3 dropped then passed, ...): those wait one initial RTO (1 s) for the retry.
    nft_output(
        &ns,
        &["ip daddr 127.145.0.0/16 tcp flags & (syn | ack) == syn numgen inc mod 3 == 0 drop"],
    );
    let run = Run::start(
        "latency",
        &["--old", "127.135.0.0/16", "--new", "127.145.0.0/16"],
    );
    sh(ns.cmd(tconn()).args(["pair", "127.135.0.1", "10"]));
    let t0 = Instant::now();
    sh(ns.cmd(tconn()).args(["pair", "127.145.0.1", "10"]));
    let took = t0.elapsed();
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);
    // Five connections waited for a retransmission.
    assert!(took >= Duration::from_secs(5), "{took:?}");

    let c = &out.summary()["cohorts"];
    assert_eq!(out.cohort("old"), (10, 10, 0, 10, 0));
    assert_eq!(out.cohort("new"), (10, 10, 0, 10, 0));
    let (old, new) = (&c["old"]["latency_us"], &c["new"]["latency_us"]);
    assert_eq!((n(&old["count"]), n(&new["count"])), (10, 10));
    let rto = Duration::from_secs(1);
    assert!(bucket_holds(&new["p90"], rto), "new p90 {new}");
    assert!(bucket_holds(&new["p99"], rto), "new p99 {new}");
    assert!(
        n(&new["p50"]) < 1000,
        "half of new connects are fast: {new}"
    );
    for p in ["p50", "p90"] {
        assert!(n(&old[p]) < 1000, "old {p} sub-millisecond: {old}");
    }
    // The slowest old connect may be unlucky on a busy host, yet far from a retransmission.
    assert!(n(&old["p99"]) < n(&new["p90"]) / 2, "old {old} new {new}");
    assert_eq!(n(&c["new"]["failed_latency_us"]["count"]), 0);

    // Per-interval histograms add up to the whole run.
    let per_interval: u64 = out
        .snapshots()
        .iter()
        .map(|s| n(&s["cohorts"]["new"]["delta"]["latency_us"]["count"]))
        .sum();
    assert_eq!(per_interval, 10);
    let slow_intervals = out
        .snapshots()
        .iter()
        .filter(|s| s["cohorts"]["new"]["delta"]["latency_us"]["p99"].as_u64() > Some(500_000))
        .count();
    assert!(slow_intervals >= 1, "some interval saw a slow connect");
}
