//! The NDJSON fields of the per-server DNS events (docs/json-schema.md): where a `dns_change`
//! was seen, `dns_stale` when a server keeps the old answer past its TTL, `dns_servers` with
//! every server's current answer. The NDJSON writer calls these for the typed events.

use std::{collections::BTreeSet, net::IpAddr};

use serde_json::{Value, json};

use crate::model::resolvers::{DnsVia, NameRows, Reply, Row};

fn strs(s: &BTreeSet<IpAddr>) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}

/// The `dns_change` fields that say where it was seen.
pub fn via(v: &DnsVia) -> Value {
    json!({"server": v.server, "lag_ms": v.lag_ms, "cnames": v.cnames})
}

/// `dns_stale`: `server` still answers old after its TTL for it should have run out.
pub fn stale(
    name: &str,
    server: &str,
    answer: &BTreeSet<IpAddr>,
    expected_ms: Option<u64>,
    first_switch_ms: Option<u64>,
) -> Value {
    json!({"name": name, "server": server, "answer": strs(answer),
           "expected_ms": expected_ms, "first_switch_ms": first_switch_ms})
}

/// The sentence of a `dns_stale` event.
pub fn stale_message(name: &str, server: &str) -> String {
    format!(
        "{server} still answers the old addresses of {name} after the TTL it gave for them ran out: flush or bypass it"
    )
}

/// One server's current answer, as `dns_servers` and `tracer report` show it.
pub fn row(r: &Row, now_ms: u64) -> Value {
    let mut v = json!({"server": r.server, "stale": r.stale, "switched_ms": r.switched_ms,
                       "expected_ms": r.expected_ms});
    match &r.reply {
        Some(Reply::Addrs { addrs, cnames, .. }) => {
            v["answer"] = json!(strs(addrs));
            v["kind"] = json!("addresses");
            v["cnames"] = json!(cnames);
        }
        Some(
            neg @ Reply::Negative {
                cnames,
                negative_ttl,
                ..
            },
        ) => {
            v["answer"] = json!([]);
            v["kind"] = json!(neg.kind());
            v["cnames"] = json!(cnames);
            v["negative_ttl"] = json!(negative_ttl);
        }
        None => v["kind"] = json!("none"),
    }
    v["ttl"] = json!(r.remaining_ttl(now_ms));
    if let Some(e) = &r.error {
        v["error"] = json!(e);
    }
    v
}

/// `dns_servers`: every server's current answer for one name.
pub fn servers(n: &NameRows, now_ms: u64) -> Value {
    let rows: Vec<Value> = n.rows.iter().map(|r| row(r, now_ms)).collect();
    json!({"name": n.name, "first_switch_ms": n.first_switch_ms, "servers": rows})
}

/// What makes a new `dns_servers` line worth writing: the answers and flags, not the TTL
/// counting down.
pub fn shown(n: &NameRows) -> Value {
    let mut v = servers(n, 0);
    for r in v["servers"].as_array_mut().into_iter().flatten() {
        r["ttl"] = Value::Null;
        if let Some(o) = r.as_object_mut() {
            o.remove("negative_ttl");
        }
    }
    v
}
