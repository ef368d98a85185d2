//! The NDJSON form of the DNS answers processes received (kernel capture): the `dns_answer`
//! event's fields, the per-process `dns` field, and the capture's state in the meta and
//! summary lines.

use serde_json::{Value, json};

use crate::model::{
    analysis::stragglers::OldAnswer,
    dns_seen::{CaptureStats, DnsAnswerSeen},
};

/// The event kind of one answer.
pub const EVENT: &str = "dns_answer";

fn addrs(a: &DnsAnswerSeen) -> Vec<String> {
    a.addrs.iter().map(|x| x.to_string()).collect()
}

/// The `dns_answer` event's fields (its `ts` is when the answer arrived). `pid`, `comm` and
/// `cgroup_id` are null when the socket was set up before tracer started.
pub fn event(a: &DnsAnswerSeen) -> Value {
    let o = a.owner.as_ref();
    json!({
        "pid": o.map(|o| o.pid), "comm": o.map(|o| o.comm.as_str()),
        "cgroup_id": o.map(|o| o.cgroup),
        "name": a.name, "qtype": a.qtype, "rcode": a.rcode, "addrs": addrs(a),
        "cnames": a.cnames, "ttl": a.ttl, "resolver": a.resolver.to_string(),
        "truncated": a.truncated, "names_old": a.names_old,
    })
}

/// What the analysis keeps of an answer naming old: who got it, when, from where.
pub fn old_answer(a: &DnsAnswerSeen, at_ms: u64) -> Option<OldAnswer> {
    let o = a.owner.as_ref().filter(|_| a.names_old)?;
    Some(OldAnswer {
        at_ms,
        pid: o.pid,
        name: a.name.clone(),
        ttl_s: a.ttl.unwrap_or(0),
        resolver: a.resolver.to_string(),
    })
}

/// The same from a recorded `dns_answer` event.
pub fn old_answer_of_event(v: &Value) -> Option<OldAnswer> {
    if v["names_old"] != true {
        return None;
    }
    Some(OldAnswer {
        at_ms: v["elapsed_ms"].as_u64()?,
        pid: v["pid"].as_u64()? as u32,
        name: v["name"].as_str().unwrap_or("").into(),
        ttl_s: v["ttl"].as_u64().unwrap_or(0) as u32,
        resolver: v["resolver"].as_str().unwrap_or("").into(),
    })
}

/// One sentence for a person: who got which answer from where.
pub fn message(a: &DnsAnswerSeen) -> String {
    let who = match &a.owner {
        Some(o) => format!("{} (pid {})", o.comm, o.pid),
        None => "a process set up before the start".into(),
    };
    let got = match a.addrs.is_empty() {
        true => a.rcode.clone(),
        false => addrs(a).join(", "),
    };
    let ttl = a.ttl.map(|t| format!(" (TTL {t} s)")).unwrap_or_default();
    format!(
        "{who} got {} {}: {got}{ttl} from {}",
        a.name, a.qtype, a.resolver
    )
}

/// The `dns` field of a process row: its last answer (A and AAAA of one lookup merged).
pub fn row(a: &DnsAnswerSeen) -> Value {
    json!({
        "name": a.name, "qtype": a.qtype, "rcode": a.rcode, "addrs": addrs(a),
        "cnames": a.cnames, "ttl": a.ttl, "resolver": a.resolver.to_string(),
        "ts": crate::ndjson::rfc3339(a.at),
    })
}

/// `hooks.dns` in the meta line: captured with which hook, or why not.
pub fn hook(h: &Result<(), String>) -> Value {
    match h {
        Ok(()) => json!({"captured": true, "hook": crate::kernel::dnscap::NAME}),
        Err(why) => json!({"captured": false, "reason": why}),
    }
}

/// `dns_capture` in the summary line; null when the capture was not attached.
pub fn stats(s: Option<&CaptureStats>) -> Value {
    match s {
        Some(s) => json!({"seen": s.seen, "dropped": s.dropped, "truncated": s.truncated,
                          "unparsed": s.unparsed}),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::dns_seen::Owner;

    fn answer(owner: Option<Owner>) -> DnsAnswerSeen {
        DnsAnswerSeen {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1500),
            owner,
            name: "svc.tracer.test".into(),
            qtype: "A".into(),
            rcode: "NOERROR".into(),
            addrs: vec!["192.0.2.10".parse().unwrap()],
            cnames: vec!["real.tracer.test".into()],
            ttl: Some(42),
            resolver: "127.53.0.1:53".parse().unwrap(),
            truncated: false,
            names_old: false,
        }
    }

    #[test]
    fn event_names_the_process_and_the_answer() {
        let owner = Owner {
            pid: 7,
            comm: "curl".into(),
            cgroup: 3,
        };
        let a = answer(Some(owner));
        assert_eq!(
            message(&a),
            "curl (pid 7) got svc.tracer.test A: 192.0.2.10 (TTL 42 s) from 127.53.0.1:53"
        );
        let v = event(&a);
        assert_eq!(
            v,
            json!({"pid": 7, "comm": "curl", "cgroup_id": 3, "name": "svc.tracer.test",
                   "qtype": "A", "rcode": "NOERROR", "addrs": ["192.0.2.10"],
                   "cnames": ["real.tracer.test"], "ttl": 42, "resolver": "127.53.0.1:53",
                   "truncated": false, "names_old": false})
        );
        let v = event(&answer(None));
        assert!(v["pid"].is_null() && v["comm"].is_null());
    }

    #[test]
    fn row_carries_the_time_of_the_answer() {
        let v = row(&answer(None));
        assert_eq!(v["ts"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["ttl"], 42);
        assert_eq!(v["resolver"], "127.53.0.1:53");
    }
}
