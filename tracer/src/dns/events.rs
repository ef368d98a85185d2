//! The NDJSON fields of the DNS events (docs/json-schema.md): `dns_change` per server,
//! `dns_stale` when a server keeps the old answer past its TTL, `dns_servers` with every
//! server's current answer. Built here only, so the typed event enum can take them over whole.

use std::{collections::BTreeSet, net::IpAddr};

use serde_json::{Value, json};

use crate::model::{
    analysis::dns::LONG_TTL_S,
    resolvers::{Change, NameRows, Reply, Row},
};

fn strs(s: &BTreeSet<IpAddr>) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}

/// `dns_change`: one server's answer for a name changed.
pub fn change(c: &Change, cnames: &[String]) -> Value {
    let long = c.ttl > LONG_TTL_S;
    let mut v = json!({"name": c.name, "server": c.server, "old": strs(&c.old), "new": strs(&c.new),
                       "ttl": c.ttl, "long_ttl": long, "lag_ms": c.lag_ms, "cnames": cnames});
    if long {
        v["message"] = json!(format!(
            "TTL {} s is above {LONG_TTL_S} s: clients may keep the old answer that long",
            c.ttl
        ));
    }
    v
}

/// `dns_stale`: server `row` still answers old after its TTL for it should have run out.
pub fn stale(n: &NameRows, row: usize) -> Value {
    let r = &n.rows[row];
    json!({"name": n.name, "server": r.server, "answer": strs(&r.addrs),
           "expected_ms": r.expected_ms, "first_switch_ms": n.first_switch_ms,
           "message": format!("{} still answers the old addresses of {} after the TTL it gave for them ran out: flush or bypass it", r.server, n.name)})
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
