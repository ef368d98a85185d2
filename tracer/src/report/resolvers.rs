//! The resolver gap of a recorded run (`--dns-server`): per watched name, each server, when it
//! switched, how far behind the first one, and whether it was flagged stale. From the
//! `dns_change`, `dns_stale` and `dns_servers` events.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::model::{analysis::stragglers::Straggler, resolvers::resolver_gap};

/// The names seen in the DNS events, each with its servers in the order first seen.
fn servers_by_name(events: &[Value], changes: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = vec![];
    let mut add = |name: &str, server: &str| {
        let i = match out.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                out.push((name.into(), vec![]));
                out.len() - 1
            }
        };
        if !out[i].1.iter().any(|s| s == server) {
            out[i].1.push(server.into());
        }
    };
    for e in events.iter().filter(|e| e["kind"] == "dns_servers") {
        let name = e["name"].as_str().unwrap_or("?");
        for s in e["servers"].as_array().into_iter().flatten() {
            add(name, s["server"].as_str().unwrap_or("?"));
        }
    }
    for c in changes {
        add(
            c["name"].as_str().unwrap_or("?"),
            c["server"].as_str().unwrap_or("system"),
        );
    }
    out
}

/// Per name: servers with switched_ms, lag_ms, stale_at_ms and the last answer seen; the gap
/// is the largest lag. Only runs with `--dns-server` have `dns_servers` events; without them
/// the system resolver alone has no gap to tell, so names without server rows are left out.
/// Each server row names the stragglers whose last answer naming old came from it (the kernel
/// capture): which resolver holds which process on old.
pub fn gaps(events: &[Value], changes: &[Value], stragglers: &[Straggler]) -> Vec<Value> {
    servers_by_name(events, changes)
        .into_iter()
        .filter(|(_, servers)| servers.len() > 1)
        .map(|(name, servers)| {
            let first_change = |server: &str| {
                changes
                    .iter()
                    .find(|c| {
                        c["name"] == name.as_str()
                            && c["server"].as_str().unwrap_or("system") == server
                    })
                    .and_then(|c| c["elapsed_ms"].as_u64())
            };
            let switches: Vec<(String, Option<u64>)> = servers
                .iter()
                .map(|s| (s.clone(), first_change(s)))
                .collect();
            let (rows, gap) = resolver_gap(&switches);
            let last = events
                .iter()
                .rev()
                .find(|e| e["kind"] == "dns_servers" && e["name"] == name.as_str());
            let rows: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let stale_at = events
                        .iter()
                        .find(|e| {
                            e["kind"] == "dns_stale"
                                && e["name"] == name.as_str()
                                && e["server"] == r.server.as_str()
                        })
                        .and_then(|e| e["elapsed_ms"].as_u64());
                    let seen = last.and_then(|l| {
                        l["servers"]
                            .as_array()?
                            .iter()
                            .find(|s| s["server"] == r.server.as_str())
                            .cloned()
                    });
                    let held: Vec<Value> = stragglers
                        .iter()
                        .filter(|s| {
                            s.last_old_answer
                                .as_ref()
                                .is_some_and(|a| a.resolver == r.server && a.name == name)
                        })
                        .map(|s| json!({"pid": s.pid, "comm": s.comm,
                                        "causes": s.causes.iter().map(|c| c.as_str()).collect::<Vec<_>>()}))
                        .collect();
                    json!({"server": r.server, "switched_ms": r.switched_ms, "lag_ms": r.lag_ms,
                           "stale_at_ms": stale_at, "stragglers": held,
                           "last_answer": seen.as_ref().map(|s| s["answer"].clone()),
                           "last_kind": seen.as_ref().map(|s| s["kind"].clone())})
                })
                .collect();
            json!({"name": name, "servers": rows, "resolver_gap_ms": gap})
        })
        .collect()
}

/// Text lines of the resolver gap.
pub fn text(o: &mut String, gaps: &[Value]) {
    let s = |v: &Value| {
        v.as_u64()
            .map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
    };
    for g in gaps {
        let _ =
            writeln!(
                o,
                "resolvers  {}: resolver gap {}",
                g["name"].as_str().unwrap_or("?"),
                g["resolver_gap_ms"].as_u64().map_or(
                    "none (no server switched)".into(),
                    |ms| format!("{:.1}s", ms as f64 / 1000.0)
                )
            );
        for r in g["servers"].as_array().into_iter().flatten() {
            let state = match (r["switched_ms"].as_u64(), r["stale_at_ms"].as_u64()) {
                (Some(_), _) => format!(
                    "switched at {} (+{} behind the first)",
                    s(&r["switched_ms"]),
                    s(&r["lag_ms"])
                ),
                (None, Some(_)) => format!(
                    "STALE since {}: still answered old after its TTL ran out",
                    s(&r["stale_at_ms"])
                ),
                (None, None) => "did not switch".into(),
            };
            let answer: Vec<String> = r["last_answer"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            let held: Vec<String> = r["stragglers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{} (pid {})", s["comm"].as_str().unwrap_or("?"), s["pid"]))
                .collect();
            let _ = writeln!(
                o,
                "           {:<24} {state}; last answer {}{}",
                r["server"].as_str().unwrap_or("?"),
                if answer.is_empty() {
                    r["last_kind"].as_str().unwrap_or("none").to_uppercase()
                } else {
                    answer.join(", ")
                },
                if held.is_empty() {
                    String::new()
                } else {
                    format!("; old answers to stragglers {}", held.join(", "))
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::analysis::{causes::Cause, stragglers::OldAnswer};

    #[test]
    fn a_stragglers_resolver_is_matched_to_its_server_row() {
        let servers = json!({"kind": "dns_servers", "name": "svc.test", "elapsed_ms": 100,
            "servers": [{"server": "127.63.0.53:53", "answer": ["127.62.0.1"], "kind": "answer"},
                        {"server": "127.63.0.54:53", "answer": ["127.61.0.1"], "kind": "answer"}]});
        let changes = [
            json!({"kind": "dns_change", "name": "svc.test", "server": "127.63.0.53:53",
                              "elapsed_ms": 6000}),
        ];
        let node = Straggler {
            pid: 42,
            comm: "node".into(),
            cgroup: 1,
            unit: None,
            old_attempts_since_cutover: 30,
            old_open: 0,
            census_open: 0,
            first_old_ms: Some(500),
            last_old_ms: Some(16_000),
            reached_new: false,
            causes: vec![Cause::StaleResolver],
            old_open_before_cutover: Some(0),
            oldest_open_age_ms: None,
            fresh_old_after_ttl: 30,
            last_old_answer: Some(OldAnswer {
                at_ms: 15_800,
                pid: 42,
                name: "svc.test".into(),
                ttl_s: 2,
                resolver: "127.63.0.54:53".into(),
            }),
            stale_resolver: Some("127.63.0.54:53".into()),
        };
        let g = gaps(&[servers], &changes, &[node]);
        let rows = g[0]["servers"].as_array().unwrap();
        assert_eq!(rows[0]["stragglers"], json!([]));
        assert_eq!(
            rows[1]["stragglers"],
            json!([{"pid": 42, "comm": "node", "causes": ["stale_resolver"]}])
        );
        let mut o = String::new();
        text(&mut o, &g);
        assert!(
            o.contains("127.63.0.54:53") && o.contains("old answers to stragglers node (pid 42)"),
            "{o}"
        );
    }
}
