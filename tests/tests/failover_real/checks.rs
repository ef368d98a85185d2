//! The checks of the real-software failover: the programs' own logs (ground truth), tracer's
//! recording against them, and issue 14's contract on the report.

use std::collections::BTreeSet;

use tracer_tests::failover::Checks;

use super::*;

fn served(l: &Fields) -> &str {
    l.get("served").map(String::as_str).unwrap_or("-")
}

fn after(lines: &[Fields], ms: u64) -> Vec<&Fields> {
    lines.iter().filter(|l| num(l, "ms") >= ms).collect()
}

fn before(lines: &[Fields], ms: u64) -> Vec<&Fields> {
    lines.iter().filter(|l| num(l, "ms") < ms).collect()
}

/// The programs did what the scenario says, by their own logs and the kernel's socket table.
pub(super) fn check_ground_truth(t: &Truth) {
    let mut c = Checks::default();
    let settled = t.switch_ms + TTL_MS + INTERVAL_MS;
    // 1. nginx: every proxied request on old over one upstream connection, opened before T.
    c.check(
        t.driver.len() >= 40 && t.driver.iter().all(|l| served(l) == OLD),
        || "proxy driver: expected >= 40 requests, all answered by old".into(),
    );
    let proxied: Vec<&Hit> = t
        .backend
        .iter()
        .filter(|h| h.agent == "proxy-driver")
        .collect();
    let conns: BTreeSet<u64> = proxied.iter().map(|h| h.conn).collect();
    c.check(
        conns.len() == 1
            && proxied.iter().all(|h| h.side == OLD)
            && proxied.first().is_some_and(|h| h.ms < t.t0),
        || format!("backend: proxied requests must all reuse one old connection opened before T, got connections {conns:?}"),
    );
    c.check(proxied.len() == t.driver.len() + 1, || {
        format!(
            "backend: {} proxied requests for {} driver requests + 1 warm-up",
            proxied.len(),
            t.driver.len()
        )
    });
    // 2. java: its cache keeps old forever; keeps connecting to old after the switch.
    c.check(
        t.jvm.iter().all(|l| l["dns"] == OLD && served(l) == OLD)
            && before(&t.jvm, t.switch_ms).len() >= 3
            && after(&t.jvm, settled).len() >= 10,
        || "java: expected every request to old (cached answer old), >= 3 before the switch and >= 10 after switch + TTL".into(),
    );
    // 3. node: old answers from the stale resolver, every time, also after switch + TTL.
    c.check(
        t.nodejs.iter().all(|l| {
            l["dns"] == OLD && l.get("connected").map(String::as_str) == Some(OLD) && served(l) == OLD
        }) && before(&t.nodejs, t.switch_ms).len() >= 3
            && after(&t.nodejs, settled).len() >= 10,
        || "node: expected every answer and connection old, >= 3 before the switch and >= 10 after switch + TTL".into(),
    );
    c.check(t.stale_queries >= t.nodejs.len(), || {
        format!(
            "stale resolver: {} queries for {} node requests (one lookup each)",
            t.stale_queries,
            t.nodejs.len()
        )
    });
    // 4. curl: old before the switch, new from the switch on (no cache: within the TTL).
    // A curl logged just before the switch may have looked the name up just after it.
    let curl_before = before(&t.curl, t.switch_ms - 300);
    let curl_after = after(&t.curl, t.switch_ms + TTL_MS);
    c.check(
        curl_before.len() >= 3
            && curl_before.iter().all(|l| served(l) == OLD)
            && curl_after.len() >= 10
            && curl_after.iter().all(|l| served(l) == NEW)
            && t.curl.iter().all(|l| l.get("connected") == l.get("served")),
        || "curl: expected >= 3 requests all to old until 300 ms before the switch and >= 10 all to new after switch + TTL".into(),
    );
    // 5. the census holder, and nginx's pool: the only old connections, at start and at the end.
    let want = {
        let mut v = vec![
            (t.worker, "nginx".to_string()),
            (t.holder, "bash".to_string()),
        ];
        v.sort();
        v
    };
    c.check(t.held_at_start == want && t.held_at_end == want, || {
        format!("old connections held at start and end: want {want:?}")
    });
    c.check(t.census.contains(&format!("got={OLD}")), || {
        "census holder: no answer on its connection".into()
    });
    c.done("ground truth (the harness, not tracer)", &t.summary());
}

fn process_rows(snap: &Value, pid: u32) -> Option<&Value> {
    snap["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

fn old_attempts(snap: &Value, pid: u32) -> u64 {
    process_rows(snap, pid).map_or(0, |p| n(&p["cohorts"]["old"]["attempts"]))
}

/// What tracer records today (before issue 14's analysis): the cutover from the watched name,
/// and the old connects of java and node after the switch in their process rows.
pub(super) fn check_recording(t: &Truth, out: &Output) {
    let mut c = Checks::default();
    let cut = out
        .events("cutover")
        .first()
        .map(|e| n(&e["elapsed_ms"]))
        .unwrap_or(u64::MAX);
    let sw = t.switch_ms - t.t0;
    c.check(
        cut + SLACK_MS >= sw && cut <= sw + INTERVAL_MS + SLACK_MS,
        || format!("cutover at {cut} ms, the switch at {sw} ms: not within one interval"),
    );
    let snaps = out.snapshots();
    let settled = t.switch_ms + TTL_MS + INTERVAL_MS;
    let at = snaps
        .iter()
        .find(|s| t.t0 + n(&s["elapsed_ms"]) >= settled)
        .copied();
    let last = out.summary();
    for (who, pid, lines) in [("java", t.java, &t.jvm), ("node", t.node, &t.nodejs)] {
        let total = old_attempts(last, pid);
        c.check(total == lines.len() as u64, || {
            format!("{who}: {total} old attempts recorded, its log has {} requests (one connection each)", lines.len())
        });
        if let Some(s) = at {
            let since = total - old_attempts(s, pid).min(total);
            // The logs' times are the clients' own, taken around the connect; a connect within
            // SLACK_MS of the sample can land on either side of it (seen once in CI: 34 vs 35).
            let logged = after(lines, t.t0 + n(&s["elapsed_ms"]) + SLACK_MS).len() as u64;
            c.check(since >= logged && since > 0, || {
                format!("{who}: {since} old attempts recorded after the switch + TTL, its log has {logged}")
            });
        }
    }
    c.check(at.is_some(), || "no snapshot after switch + TTL".into());
    // The DNS answers each process received (the kernel's capture): the evidence the causes
    // rest on. Java asked once, before the switch; node got old from the stale resolver after
    // switch + TTL; curl got new from the primary after the switch.
    let answers = |pid: u32, from_ms: u64| -> Vec<&Value> {
        out.events("dns_answer")
            .into_iter()
            .filter(|e| {
                e["pid"] == pid && e["name"] == NAME && t.t0 + n(&e["elapsed_ms"]) >= from_ms
            })
            .collect()
    };
    let names = |e: &Value, a: &str| {
        e["addrs"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == a))
    };
    let java_all = answers(t.java, 0);
    let java_after = answers(t.java, t.switch_ms);
    c.check(!java_all.is_empty() && java_after.is_empty(), || {
        format!(
            "java: {} DNS answers, {} after the switch: want some before, none after",
            java_all.len(),
            java_after.len()
        )
    });
    let stale = format!("{STALE}:53");
    let node_after = answers(t.node, t.switch_ms + TTL_MS);
    c.check(
        node_after.len() >= 10
            && node_after
                .iter()
                .all(|e| e["resolver"] == stale && names(e, OLD)),
        || {
            format!(
                "node: {} DNS answers after switch + TTL, want >= 10, all naming old from {stale}",
                node_after.len()
            )
        },
    );
    let curl_after: Vec<&Value> = t
        .curl
        .iter()
        .filter(|l| num(l, "ms") >= t.switch_ms + TTL_MS)
        .flat_map(|l| answers(num(l, "pid") as u32, 0))
        .filter(|e| e["qtype"] == "A")
        .collect();
    c.check(
        curl_after.len() >= 10
            && curl_after
                .iter()
                .all(|e| e["resolver"] == format!("{PRIMARY}:53") && names(e, NEW)),
        || {
            format!(
                "curl: {} DNS answers of curl processes after switch + TTL, want >= 10 naming new",
                curl_after.len()
            )
        },
    );
    c.done("tracer's recording", &t.summary());
}

/// Issue 14's contract: `tracer report --json` -> `.analysis`, and the final `analysis` event.
pub(super) fn check_contract(t: &Truth, out: &Output, report: &Value) -> Checks {
    let mut c = Checks::default();
    let a = &report["analysis"];
    let live = out.events("analysis").last().map(|e| (*e).clone());
    for k in ["stragglers", "moved", "drain"] {
        c.check(live.as_ref().is_some_and(|l| l.get(k) == a.get(k)), || {
            format!("the final NDJSON analysis event's `{k}` differs from the report's")
        });
    }
    let end_ms = a["end_ms"].as_u64().unwrap_or(0);
    let rel = |ms: u64| ms.saturating_sub(t.t0);
    let empty = vec![];
    let stragglers = a["stragglers"].as_array().unwrap_or(&empty);
    let by_pid: BTreeMap<u64, &Value> = stragglers
        .iter()
        .filter_map(|s| Some((s["pid"].as_u64()?, s)))
        .collect();
    // Exactly these processes are still on old; nothing else touched old after the switch.
    let want: BTreeSet<u64> = [t.worker, t.java, t.node, t.holder].map(u64::from).into();
    let got: BTreeSet<u64> = by_pid.keys().copied().collect();
    c.check(got == want, || {
        format!(
            "stragglers {got:?}, want exactly {want:?} (nginx worker, java, node, census holder)"
        )
    });
    let curl_pids: BTreeSet<u64> = t.curl.iter().map(|l| num(l, "pid")).collect();
    let curl_stragglers: Vec<&u64> = got.intersection(&curl_pids).collect();
    c.check(curl_stragglers.is_empty(), || {
        format!("curl processes among the stragglers: {curl_stragglers:?}")
    });
    let last_snapshot = rel(t.t0 + end_ms);
    struct Want<'a> {
        who: &'a str,
        pid: u32,
        comm: &'a str,
        causes: &'a [&'a str],
        resolver: Option<String>,
        /// The last old contact by its log, ms since T (pinned: the connection is open to the end).
        last_old: u64,
        /// Old connects after switch + TTL by its log: (surely after tracer's cutover + TTL,
        /// possibly).
        fresh: (usize, usize),
    }
    let fresh = |lines: &[Fields]| {
        (
            // The cutover is detected up to one interval after the switch, and connects in the
            // interval in which the TTL ends are grace: two intervals at most.
            after(lines, t.switch_ms + TTL_MS + 2 * INTERVAL_MS + SLACK_MS).len(),
            after(lines, t.switch_ms + TTL_MS).len(),
        )
    };
    let wants = [
        Want {
            who: "nginx worker",
            pid: t.worker,
            comm: "nginx",
            causes: &["pinned"],
            resolver: None,
            last_old: last_snapshot,
            fresh: (0, 0),
        },
        Want {
            who: "census holder",
            pid: t.holder,
            comm: "bash",
            causes: &["pinned"],
            resolver: None,
            last_old: last_snapshot,
            fresh: (0, 0),
        },
        Want {
            who: "java",
            pid: t.java,
            comm: "java",
            causes: &["dns_cache"],
            resolver: None,
            last_old: rel(t.last_old(&t.jvm).unwrap_or(0)),
            fresh: fresh(&t.jvm),
        },
        Want {
            who: "node",
            pid: t.node,
            comm: "node",
            causes: &["stale_resolver"],
            resolver: Some(format!("{STALE}:53")),
            last_old: rel(t.last_old(&t.nodejs).unwrap_or(0)),
            fresh: fresh(&t.nodejs),
        },
    ];
    for w in &wants {
        let Some(s) = by_pid.get(&u64::from(w.pid)) else {
            continue;
        };
        let causes: Vec<&str> = s["causes"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        c.check(
            causes.iter().copied().collect::<BTreeSet<_>>()
                == w.causes.iter().copied().collect::<BTreeSet<_>>()
                && causes.len() == w.causes.len(),
            || format!("{}: causes {causes:?}, want {:?}: {s}", w.who, w.causes),
        );
        c.check(s["comm"] == w.comm, || format!("{}: comm: {s}", w.who));
        let resolver = s["stale_resolver"].as_str().map(String::from);
        c.check(
            s.get("stale_resolver").is_some() && resolver == w.resolver,
            || format!("{}: stale_resolver, want {:?}: {s}", w.who, w.resolver),
        );
        let last = s["last_old_ms"].as_u64().unwrap_or(u64::MAX);
        c.check(last.abs_diff(w.last_old) <= INTERVAL_MS + SLACK_MS, || {
            format!(
                "{}: last_old_ms {}, want {} within one interval ({}): {s}",
                w.who,
                s["last_old_ms"],
                w.last_old,
                if w.causes.contains(&"pinned") {
                    "its connection is open to the end of the recording"
                } else {
                    "its log's last old request"
                }
            )
        });
        let f = s["fresh_old_after_ttl"].as_u64().unwrap_or(u64::MAX) as usize;
        c.check(f >= w.fresh.0 && f <= w.fresh.1, || {
            format!(
                "{}: fresh_old_after_ttl {}, its log says {}..={}: {s}",
                w.who, s["fresh_old_after_ttl"], w.fresh.0, w.fresh.1
            )
        });
        let pinned = w.causes.contains(&"pinned");
        let (open, before_cut, census) = (
            s["old_open"].as_u64(),
            s["old_open_before_cutover"].as_u64(),
            s["census_open"].as_u64(),
        );
        let want_open = if pinned { Some(1) } else { Some(0) };
        c.check(open == want_open && before_cut == want_open && census == want_open, || {
            format!(
                "{}: old_open / old_open_before_cutover / census_open, want {want_open:?} each (ss at the end: {:?}): {s}",
                w.who, t.held_at_end
            )
        });
        if pinned {
            // Opened before tracer started: at least as old as the run.
            let age = s["oldest_open_age_ms"].as_u64().unwrap_or(0);
            c.check(age + INTERVAL_MS >= end_ms, || {
                format!(
                    "{}: oldest_open_age_ms {}, want >= {end_ms} (opened before the start): {s}",
                    w.who, s["oldest_open_age_ms"]
                )
            });
            let first = s["first_old_ms"].as_u64().unwrap_or(u64::MAX);
            c.check(first <= INTERVAL_MS, || {
                format!(
                    "{}: first_old_ms {}, open from before the start: {s}",
                    w.who, s["first_old_ms"]
                )
            });
        } else {
            let lines = if w.pid == t.java { &t.jvm } else { &t.nodejs };
            let first_log = rel(lines.first().map_or(0, |l| num(l, "ms")));
            let first = s["first_old_ms"].as_u64().unwrap_or(u64::MAX);
            c.check(first.abs_diff(first_log) <= INTERVAL_MS + SLACK_MS, || {
                format!(
                    "{}: first_old_ms {}, its log says {first_log}: {s}",
                    w.who, s["first_old_ms"]
                )
            });
        }
    }
    // curl: `moved` counts the processes on the new side that are not stragglers. Each curl
    // makes one connection and exits: those that connected to new (all after the switch, by
    // their logs) are exactly that; nothing else here uses the new side (java and node never
    // reach it, the proxy's upstream stays pinned to old).
    let curl_new = t.curl.iter().filter(|l| served(l) == NEW).count() as u64;
    let moved = a["moved"].as_u64();
    c.check(moved == Some(curl_new), || {
        format!("moved {moved:?}, want {curl_new}: the curl processes that connected to new")
    });
    // The drain verdict: what remains is pinned only (java and node stopped at T+16 s).
    let pinned_by: BTreeSet<(u64, String)> = a["drain"]["pinned_by"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|p| Some((p["pid"].as_u64()?, p["comm"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let want: BTreeSet<(u64, String)> = [
        (u64::from(t.worker), "nginx".to_string()),
        (u64::from(t.holder), "bash".to_string()),
    ]
    .into();
    c.check(pinned_by == want, || {
        format!(
            "drain.pinned_by {pinned_by:?}, want {want:?}: {}",
            a["drain"]
        )
    });
    c.check(
        a["drain"]["pinned_by"].as_array().is_some_and(|v| {
            v.iter()
                .all(|p| p["oldest_open_age_ms"].as_u64().unwrap_or(0) + INTERVAL_MS >= end_ms)
        }),
        || {
            format!(
                "drain.pinned_by: each oldest_open_age_ms at least the run: {}",
                a["drain"]
            )
        },
    );
    c
}
