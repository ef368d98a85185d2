//! The resolver gap of a recorded run (`--dns-server`): per watched name, each server, when it
//! switched, how far behind the first one, and whether it was flagged stale. From the
//! `dns_change`, `dns_stale` and `dns_servers` events.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::model::resolvers::resolver_gap;

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
pub fn gaps(events: &[Value], changes: &[Value]) -> Vec<Value> {
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
                    json!({"server": r.server, "switched_ms": r.switched_ms, "lag_ms": r.lag_ms,
                           "stale_at_ms": stale_at,
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
            let _ = writeln!(
                o,
                "           {:<24} {state}; last answer {}",
                r["server"].as_str().unwrap_or("?"),
                if answer.is_empty() {
                    r["last_kind"].as_str().unwrap_or("none").to_uppercase()
                } else {
                    answer.join(", ")
                }
            );
        }
    }
}
