//! NDJSON schema 1 (docs/json-schema.md): one complete JSON object per line, flushed per line,
//! so a killed run leaves a file that is valid up to its last line.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    time::SystemTime,
};

use serde_json::{Value, json};
use time::{OffsetDateTime, macros::format_description};

use crate::{
    model::{
        cohort::Cohort,
        counters::{In, Out},
        failures::Reasons,
        latency::{Hist, Latency},
        snapshot::{DestRow, ProcRow, Snapshot},
        spec::Spec,
    },
    session::{Event, RunInfo, Sink},
};

pub const SCHEMA: u64 = 1;

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from(t)
        .format(&fmt)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

fn out_json(o: &Out) -> Value {
    json!({"attempts": o.attempts, "established": o.established, "failed": o.failed,
           "closed": o.closed, "open": o.open})
}

fn out_with_delta(cur: &Out, prev: &Out) -> Value {
    let d = cur.delta(prev);
    let mut v = out_json(cur);
    v["delta"] = json!({"attempts": d.attempts, "established": d.established,
                        "failed": d.failed, "closed": d.closed, "open": d.open});
    v
}

fn reasons_json(r: &Reasons) -> Value {
    Value::Object(r.named().map(|(k, n)| (k.to_string(), json!(n))).collect())
}

/// `{count, p50, p90, p99}` in microseconds; percentiles are null when count is 0.
fn latency_json(h: &Hist) -> Value {
    let p = h.percentiles();
    json!({"count": p.count, "p50": p.p50, "p90": p.p90, "p99": p.p99})
}

/// Add failure reasons and connect latency to a cohort object and to its `delta`.
fn add_failures(v: &mut Value, reasons: (&Reasons, &Reasons), lat: (&Latency, &Latency)) {
    let (cur, prev) = reasons;
    v["failed_by_reason"] = reasons_json(cur);
    v["latency_us"] = latency_json(&lat.0.established);
    v["failed_latency_us"] = latency_json(&lat.0.failed);
    let d = lat.0.delta(lat.1);
    v["delta"]["failed_by_reason"] = reasons_json(&cur.delta(prev));
    v["delta"]["latency_us"] = latency_json(&d.established);
    v["delta"]["failed_latency_us"] = latency_json(&d.failed);
}

fn in_json(i: &In) -> Value {
    json!({"accepted": i.accepted, "closed": i.closed, "open": i.open})
}

fn in_with_delta(cur: &In, prev: &In) -> Value {
    let d = cur.delta(prev);
    let mut v = in_json(cur);
    v["delta"] = json!({"accepted": d.accepted, "closed": d.closed, "open": d.open});
    v
}

fn prefixes(specs: &[Spec]) -> Vec<String> {
    specs
        .iter()
        .flat_map(|s| s.prefixes.iter().map(|p| p.to_string()))
        .collect()
}

fn resolved(specs: &[Spec]) -> Vec<Value> {
    specs
        .iter()
        .filter(|s| s.resolved)
        .map(|s| json!({"name": s.text, "addrs": s.prefixes.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>()}))
        .collect()
}

pub fn meta(m: &RunInfo) -> Value {
    let mut hostnames = resolved(&m.old);
    hostnames.extend(resolved(&m.new));
    json!({
        "type": "meta", "schema": SCHEMA, "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(m.started_at), "host": m.host, "kernel": m.kernel,
        "hooks": {"connect": m.hooks.connect.name(), "state": m.hooks.state,
                  "fallbacks": m.hooks.fallbacks.iter().map(|(h, why)| json!({"hook": h.name(), "reason": why})).collect::<Vec<_>>(),
                  "unsent": match &m.hooks.unsent {
                      Ok(()) => json!({"counted": true, "hook": crate::kernel::presyn::NAME}),
                      Err(why) => json!({"counted": false, "reason": why}),
                  },
                  "dns": crate::dns_answer::hook(&m.hooks.dns)},
        "old": prefixes(&m.old), "new": prefixes(&m.new), "resolved": hostnames,
        "ports": m.ports, "interval_ms": m.interval_ms, "max_destinations": m.max_destinations,
        "census": {"outbound": m.census_outbound, "inbound": m.census_inbound},
        "analysis": crate::analytics::params_json(&m.analysis),
        "census_owners": crate::analytics::owners_json(&m.census_owners),
        "watch_dns": m.watch_dns,
        "reconcile_every_ms": m.reconcile_every.map(|d| d.as_millis() as u64),
    })
}

/// Top destinations by activity: open connections first, then attempts.
pub fn top_destinations(s: &Snapshot, top: usize) -> Vec<&DestRow> {
    s.top_destinations(top)
}

fn destinations(s: &Snapshot, top: usize) -> Vec<Value> {
    top_destinations(s, top)
        .iter()
        .map(|r| {
            let mut v = out_json(&r.out);
            v["failed_by_reason"] = reasons_json(&s.dest_reasons(r.addr));
            v["addr"] = json!(r.addr.to_string());
            v["cohort"] = json!(r.cohort.name());
            v
        })
        .collect()
}

/// Per process (pid, comm, cgroup): counts per cohort, most active first.
pub fn processes(rows: &[ProcRow]) -> Vec<(u32, String, u64, [Out; 3], usize)> {
    // Keyed by borrowed names: one String per process, not one per row. A process has many
    // rows (one per destination), so a small cache by pid skips most tree lookups.
    type Key<'a> = (u32, &'a str, u64);
    let mut by: BTreeMap<Key, usize> = BTreeMap::new();
    let mut acc: Vec<([Out; 3], usize)> = vec![];
    let mut cache: [Option<(Key, usize)>; 64] = [None; 64];
    for r in rows {
        let key = (r.pid, &*r.comm, r.cgroup);
        let slot = &mut cache[r.pid as usize % 64];
        let i = match slot {
            Some((k, i)) if *k == key => *i,
            _ => {
                let next = acc.len();
                let i = *by.entry(key).or_insert(next);
                if i == next {
                    acc.push(([Out::default(); 3], 0));
                }
                *slot = Some((key, i));
                i
            }
        };
        acc[i].0[r.cohort as usize].add(&r.out);
        acc[i].1 += 1;
    }
    let mut v: Vec<_> = by
        .into_iter()
        .map(|((pid, comm, cg), i)| (pid, comm.to_string(), cg, acc[i].0, acc[i].1))
        .collect();
    let weight = |o: &[Out; 3]| o.iter().map(|x| x.attempts + x.open).sum::<u64>();
    v.sort_by(|a, b| weight(&b.3).cmp(&weight(&a.3)).then(a.0.cmp(&b.0)));
    v
}

/// Failure reasons per process (pid, comm, cgroup) and cohort, summed over destinations.
fn process_reasons(s: &Snapshot) -> BTreeMap<(u32, &str, u64), [Reasons; 3]> {
    let mut by: BTreeMap<(u32, &str, u64), [Reasons; 3]> = BTreeMap::new();
    for (id, r) in &s.proc_reasons {
        let e = by.entry((id.pid, id.comm.as_str(), id.cgroup)).or_default();
        e[id.cohort as usize].add(r);
    }
    by
}

fn processes_json(s: &Snapshot, top: usize) -> Vec<Value> {
    let reasons = process_reasons(s);
    processes(&s.processes)
        .into_iter()
        .take(top)
        .map(|(pid, comm, cgroup, outs, n)| {
            let r = reasons.get(&(pid, comm.as_str(), cgroup));
            let cohorts: serde_json::Map<String, Value> = Cohort::ALL
                .iter()
                .map(|c| {
                    let mut v = out_json(&outs[*c as usize]);
                    let none = Reasons::default();
                    v["failed_by_reason"] =
                        reasons_json(r.map(|r| &r[*c as usize]).unwrap_or(&none));
                    (c.name().to_string(), v)
                })
                .collect();
            let mut v = json!({"pid": pid, "comm": comm, "cgroup_id": cgroup, "destinations": n, "cohorts": cohorts});
            if let Some(u) = s.units.get(&pid) {
                v["unit"] = json!(u);
            }
            if let Some(a) = s.dns.get(&pid) {
                v["dns"] = crate::dns_answer::row(a);
            }
            v
        })
        .collect()
}

fn cohorts(cur: &Snapshot, prev: &Snapshot) -> (Value, Value) {
    let mut out = serde_json::Map::new();
    let mut inb = serde_json::Map::new();
    for c in Cohort::ALL {
        let mut v = out_with_delta(cur.cohort_out(c), prev.cohort_out(c));
        add_failures(
            &mut v,
            (cur.cohort_reasons(c), prev.cohort_reasons(c)),
            (cur.cohort_latency(c), prev.cohort_latency(c)),
        );
        out.insert(c.name().into(), v);
        inb.insert(
            c.name().into(),
            in_with_delta(cur.cohort_in(c), prev.cohort_in(c)),
        );
    }
    (Value::Object(out), Value::Object(inb))
}

fn evicted(s: &Snapshot) -> Value {
    json!(s.evicted.destinations)
}

pub fn snapshot(cur: &Snapshot, prev: &Snapshot, top: usize) -> Value {
    let (out, inb) = cohorts(cur, prev);
    json!({
        "type": "snapshot", "ts": rfc3339(cur.at), "elapsed_ms": cur.elapsed.as_millis() as u64,
        "cohorts": out, "inbound": inb,
        "destinations": destinations(cur, top), "processes": processes_json(cur, top),
        "evicted": evicted(cur),
        "evicted_detail": {"destinations": cur.evicted.destinations, "locals": cur.evicted.locals,
                           "processes": cur.evicted.processes},
        "lost_events": cur.lost_events,
    })
}

pub fn event(ev: &Event) -> Value {
    let mut v = json!({"type": "event", "ts": rfc3339(ev.at), "elapsed_ms": ev.elapsed_ms, "kind": ev.kind});
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), &ev.fields) {
        obj.extend(extra.clone());
    }
    v
}

/// The last line: totals since start and why the run ended.
pub fn summary(
    last: &Snapshot,
    first: &Snapshot,
    reason: &str,
    snapshots: u64,
    top: usize,
) -> Value {
    let (out, inb) = cohorts(last, first);
    json!({
        "type": "summary", "ts": rfc3339(last.at), "elapsed_ms": last.elapsed.as_millis() as u64,
        "reason": reason, "snapshots": snapshots,
        "cohorts": out, "inbound": inb,
        "destinations": destinations(last, top), "processes": processes_json(last, top),
        "evicted": evicted(last), "lost_events": last.lost_events,
        "reconciliations": last.reconciliations,
        "dns_capture": crate::dns_answer::stats(last.dns_capture.as_ref()),
    })
}

/// Writes one line per call: serialized first, then one write and a flush.
pub struct Writer {
    out: Box<dyn Write + Send>,
    top: usize,
}

impl Writer {
    fn put(&mut self, v: &Value) -> Result<(), crate::Fatal> {
        self.line(v)
            .map_err(|e| format!("cannot write NDJSON output: {e}"))
    }
}

impl Sink for Writer {
    fn meta(&mut self, info: &RunInfo) -> Result<(), crate::Fatal> {
        self.put(&meta(info))
    }
    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot) -> Result<(), crate::Fatal> {
        let v = snapshot(cur, prev, self.top);
        self.put(&v)
    }
    fn event(&mut self, ev: &Event) -> Result<(), crate::Fatal> {
        self.put(&event(ev))
    }
    fn summary(
        &mut self,
        last: &Snapshot,
        first: &Snapshot,
        reason: &str,
        snapshots: u64,
    ) -> Result<(), crate::Fatal> {
        let v = summary(last, first, reason, snapshots, self.top);
        self.put(&v)
    }
}

impl Writer {
    pub fn new(out: Box<dyn Write + Send>, top: usize) -> Self {
        Writer { out, top }
    }

    pub fn line(&mut self, v: &Value) -> io::Result<()> {
        let mut buf = serde_json::to_vec(v).map_err(io::Error::other)?;
        buf.push(b'\n');
        self.out.write_all(&buf)?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snap(old_attempts: u64, old_open: u64) -> Snapshot {
        let mut s = Snapshot::empty(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500));
        s.elapsed = Duration::from_millis(1_000);
        s.out[Cohort::Old as usize] = Out {
            attempts: old_attempts,
            established: old_attempts,
            open: old_open,
            ..Default::default()
        };
        s.destinations.push(DestRow {
            addr: "127.10.0.1".parse().unwrap(),
            cohort: Cohort::Old,
            out: s.out[Cohort::Old as usize],
        });
        s
    }

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)),
            "1970-01-01T00:00:01.500Z"
        );
    }

    #[test]
    fn snapshot_line_has_cumulative_and_delta() {
        let v = snapshot(&snap(7, 2), &snap(3, 4), 10);
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["elapsed_ms"], 1000);
        assert_eq!(v["cohorts"]["old"]["attempts"], 7);
        assert_eq!(v["cohorts"]["old"]["delta"]["attempts"], 4);
        assert_eq!(v["cohorts"]["old"]["delta"]["open"], -2);
        assert_eq!(v["cohorts"]["new"]["open"], 0);
        assert_eq!(v["destinations"][0]["addr"], "127.10.0.1");
        assert_eq!(v["destinations"][0]["cohort"], "old");
    }

    #[test]
    fn failures_and_latency_are_cumulative_with_interval_deltas() {
        use crate::model::{failures::Reasons, snapshot::ProcId};
        let mut prev = snap(3, 0);
        prev.reasons[Cohort::Old as usize] = Reasons([1, 0, 0, 0, 0, 0, 0, 0]);
        prev.latency[Cohort::Old as usize].established.0[15] = 3;
        let mut cur = snap(7, 0);
        cur.reasons[Cohort::Old as usize] = Reasons([2, 1, 0, 0, 0, 0, 0, 0]);
        cur.latency[Cohort::Old as usize].established.0[15] = 4;
        cur.latency[Cohort::Old as usize].established.0[29] = 2;
        let addr = "127.10.0.1".parse().unwrap();
        cur.dest_reasons
            .insert(addr, Reasons([2, 1, 0, 0, 0, 0, 0, 0]));
        cur.processes.push(ProcRow {
            pid: 9,
            comm: "app".into(),
            cgroup: 1,
            addr,
            cohort: Cohort::Old,
            out: Out::default(),
        });
        let id = ProcId {
            pid: 9,
            comm: "app".into(),
            cgroup: 1,
            addr,
            cohort: Cohort::Old,
        };
        cur.proc_reasons
            .insert(id, Reasons([0, 1, 0, 0, 0, 0, 0, 0]));

        let v = snapshot(&cur, &prev, 10);
        let old = &v["cohorts"]["old"];
        assert_eq!(old["failed_by_reason"]["refused"], 2);
        assert_eq!(old["failed_by_reason"]["timeout"], 1);
        assert_eq!(old["delta"]["failed_by_reason"]["refused"], 1);
        assert_eq!(old["latency_us"]["count"], 6);
        assert_eq!(old["latency_us"]["p50"], 66);
        assert_eq!(old["latency_us"]["p90"], 1_073_742);
        // The interval saw one fast and two slow connects.
        assert_eq!(old["delta"]["latency_us"]["count"], 3);
        assert_eq!(old["delta"]["latency_us"]["p50"], 1_073_742);
        assert!(old["failed_latency_us"]["p50"].is_null());
        assert_eq!(v["cohorts"]["new"]["failed_by_reason"]["refused"], 0);
        assert_eq!(v["destinations"][0]["failed_by_reason"]["timeout"], 1);
        let p = &v["processes"][0];
        assert_eq!(p["cohorts"]["old"]["failed_by_reason"]["timeout"], 1);
        assert_eq!(p["cohorts"]["new"]["failed_by_reason"]["timeout"], 0);
    }

    #[test]
    fn writer_emits_one_complete_line_per_object() {
        use crate::testutil::Shared;
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut w = Writer::new(Box::new(Shared(buf.clone())), 5);
        w.line(&json!({"type": "meta", "s": "a\nb"})).unwrap();
        w.line(&summary(&snap(1, 1), &snap(0, 0), "duration", 3, 5))
            .unwrap();
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["type"].is_string());
        }
    }

    #[test]
    fn processes_match_a_plain_aggregation() {
        let mut next = crate::testutil::xorshift(0x1234_5678_9abc_def1);
        // Pids that share cache slots (n and n + 64), one pid under two names and cgroups.
        let rows: Vec<ProcRow> = (0..5000)
            .map(|_| {
                let r = next();
                let pid = [1, 65, 129, 7, 7, 7][(r % 6) as usize];
                ProcRow {
                    pid,
                    comm: if r.is_multiple_of(5) {
                        "a".into()
                    } else {
                        "b".into()
                    },
                    cgroup: (r >> 8) % 2,
                    addr: "127.10.0.1".parse().unwrap(),
                    cohort: Cohort::from_index((r >> 16) as u32 % 3),
                    out: Out {
                        attempts: (r >> 20) % 9,
                        open: (r >> 24) % 3,
                        ..Default::default()
                    },
                }
            })
            .collect();
        let mut plain: BTreeMap<(u32, String, u64), ([Out; 3], usize)> = BTreeMap::new();
        for r in &rows {
            let e = plain
                .entry((r.pid, r.comm.to_string(), r.cgroup))
                .or_insert(([Out::default(); 3], 0));
            e.0[r.cohort as usize].add(&r.out);
            e.1 += 1;
        }
        let got = processes(&rows);
        assert_eq!(got.len(), plain.len());
        for (pid, comm, cg, outs, n) in got {
            assert_eq!(plain[&(pid, comm, cg)], (outs, n));
        }
    }

    #[test]
    fn processes_aggregate_per_pid_and_cohort() {
        let row = |pid, cohort, attempts| ProcRow {
            pid,
            comm: format!("p{pid}").into(),
            cgroup: 1,
            addr: "127.10.0.1".parse().unwrap(),
            cohort,
            out: Out {
                attempts,
                ..Default::default()
            },
        };
        let p = processes(&[
            row(1, Cohort::Old, 2),
            row(1, Cohort::New, 3),
            row(2, Cohort::Old, 9),
        ]);
        assert_eq!(p[0].0, 2);
        assert_eq!(p[1].3[Cohort::New as usize].attempts, 3);
        assert_eq!(p[1].4, 2);
    }
}
