//! The NDJSON writer: typed run data to schema-1 lines. The only place events become JSON.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use serde_json::{Value, json};

use super::{SCHEMA, rfc3339};
use crate::{
    error::{Error, Result},
    model::{
        analysis::{
            Finding, Params, State,
            causes::Cause,
            drain::DrainChange,
            drain::Estimate,
            gap::Crossed,
            stragglers::{CensusOwner, Straggler},
        },
        cohort::Cohort,
        counters::{In, Out},
        failures::Reasons,
        held::Held,
        latency::{Hist, Latency},
        process::Process,
        ranked::Ranked,
        snapshot::{DestRow, Snapshot},
        spec::Spec,
    },
    sink::{EndReason, Event, EventKind, RunInfo, Sink},
};

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
                      Ok(()) => json!({"counted": true, "hook": crate::kernel::unsent::NAME}),
                      Err(why) => json!({"counted": false, "reason": why}),
                  },
                  "dns": crate::dns_answer::hook(&m.hooks.dns)},
        "old": prefixes(&m.old), "new": prefixes(&m.new), "resolved": hostnames,
        "ports": m.ports, "interval_ms": m.interval_ms, "max_destinations": m.max_destinations,
        "census": {"outbound": m.census_outbound, "inbound": m.census_inbound},
        "analysis": params_json(&m.analysis),
        "census_owners": owners_json(&m.census_owners),
        "watch_dns": m.watch_dns,
        "reconcile_every_ms": m.reconcile_every.map(|d| d.as_millis() as u64),
        "filter": filter_json(&m.filters),
    })
}

/// `--netns`, `--cgroup` as the meta line records them (nulls when not set).
pub fn filter_json(f: &crate::kernel::filter::Filters) -> Value {
    json!({
        "netns": f.netns.as_ref().map(|n| n.inode),
        "netns_path": f.netns.as_ref().map(|n| n.path.display().to_string()),
        "cgroup": f.cgroup.as_ref().map(|c| c.path.clone()),
        "cgroup_id": f.cgroup.as_ref().map(|c| c.id),
        "inbound_counted": f.cgroup.is_none(),
    })
}

fn destinations(s: &Snapshot, top: &[&DestRow]) -> Vec<Value> {
    top.iter()
        .map(|r| {
            let mut v = out_json(&r.out);
            v["failed_by_reason"] = reasons_json(&s.dest_reasons(r.addr));
            v["addr"] = json!(r.addr.to_string());
            v["cohort"] = json!(r.cohort.name());
            v
        })
        .collect()
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

/// Open old connections of a process and when they were opened: what `pinned` is judged by.
pub fn held_json(h: &Held) -> Value {
    json!({"before_start": h.before_start,
           "opened_ms": h.opened_ms.iter().map(|(t, n)| json!([t, n])).collect::<Vec<_>>()})
}

fn processes_json(s: &Snapshot, listed: &[Process]) -> Vec<Value> {
    let reasons = process_reasons(s);
    listed
        .iter()
        .map(|p| {
            let r = reasons.get(&(p.pid, &*p.comm, p.cgroup));
            let cohorts: serde_json::Map<String, Value> = Cohort::ALL
                .iter()
                .map(|c| {
                    let mut v = out_json(p.cohort(*c));
                    let none = Reasons::default();
                    v["failed_by_reason"] =
                        reasons_json(r.map(|r| &r[*c as usize]).unwrap_or(&none));
                    (c.name().to_string(), v)
                })
                .collect();
            let mut v = json!({"pid": p.pid, "comm": &*p.comm, "cgroup_id": p.cgroup,
                               "destinations": p.destinations, "cohorts": cohorts});
            if let Some(u) = s.units.get(&p.pid) {
                v["unit"] = json!(u);
            }
            if let Some(n) = s.netns.get(&p.pid) {
                v["netns"] = json!(n);
            }
            if let Some(a) = s.dns.get(&p.pid) {
                v["dns"] = crate::dns_answer::row(a);
            }
            if !p.held.is_empty() {
                v["old_held"] = held_json(&p.held);
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

#[cfg(test)]
pub fn snapshot(cur: &Snapshot, prev: &Snapshot, top: usize) -> Value {
    snapshot_ranked(cur, prev, &Ranked::of(cur, Some(prev), top))
}

/// The snapshot line from the rankings the session made once for every reader.
pub fn snapshot_ranked(cur: &Snapshot, prev: &Snapshot, ranked: &Ranked) -> Value {
    let (out, inb) = cohorts(cur, prev);
    json!({
        "type": "snapshot", "ts": rfc3339(cur.at), "elapsed_ms": cur.elapsed.as_millis() as u64,
        "cohorts": out, "inbound": inb,
        "destinations": destinations(cur, &ranked.destinations),
        "processes": processes_json(cur, &ranked.processes),
        "evicted": evicted(cur),
        "evicted_detail": {"destinations": cur.evicted.destinations, "locals": cur.evicted.locals,
                           "processes": cur.evicted.processes},
        "lost_events": cur.lost_events,
    })
}

fn per_cohort(v: [i64; 3]) -> Value {
    json!({"old": v[Cohort::Old as usize], "new": v[Cohort::New as usize],
           "other": v[Cohort::Other as usize]})
}

fn addr_list(v: &std::collections::BTreeSet<std::net::IpAddr>) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

/// The fields of one event, besides the common ones (`type`, `ts`, `elapsed_ms`, `kind`).
fn event_fields(ev: &Event) -> Value {
    match &ev.kind {
        EventKind::HookFallback {
            hook,
            reason,
            using,
        } => json!({"hook": hook.name(), "reason": reason, "using": using.name()}),
        EventKind::TracefsMounted { path } => json!({"path": path}),
        EventKind::UnsentNotCounted { reason } => json!({"reason": reason}),
        EventKind::DnsNotCaptured { reason } => json!({"reason": reason}),
        EventKind::DnsAnswer(a) => crate::dns_answer::event(a),
        EventKind::Cutover { source, name } => {
            let mut v = json!({"source": source.name(), "at": rfc3339(ev.at)});
            if let Some(n) = name {
                v["name"] = json!(n);
            }
            v
        }
        EventKind::DnsChange {
            change,
            long_ttl,
            added_to_new,
            via,
        } => {
            let mut v = json!({"name": change.name, "old": addr_list(&change.old),
                               "new": addr_list(&change.new), "ttl": change.ttl,
                               "long_ttl": long_ttl});
            if let (Some(o), Value::Object(w)) = (v.as_object_mut(), crate::dns::events::via(via)) {
                o.extend(w);
            }
            if !added_to_new.is_empty() {
                v["added_to_new"] = json!(
                    added_to_new
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                );
            }
            v
        }
        EventKind::DnsStale {
            name,
            server,
            answer,
            expected_ms,
            first_switch_ms,
        } => crate::dns::events::stale(name, server, answer, *expected_ms, *first_switch_ms),
        EventKind::DnsServers(n) => crate::dns::events::servers(n, ev.elapsed_ms),
        EventKind::Evicted { destinations } => json!({"destinations": destinations}),
        EventKind::LostEvents { lost } => json!({"lost_events": lost}),
        EventKind::Reconciled {
            trigger,
            change,
            offset,
        } => json!({
            "trigger": trigger.name(), "outbound": per_cohort(change.out),
            "inbound": per_cohort(change.inb), "addresses": change.addresses,
            "offset": {"outbound": per_cohort(offset.0), "inbound": per_cohort(offset.1)},
        }),
        EventKind::ReconcileFailed { trigger, reason } => {
            json!({"trigger": trigger.name(), "reason": reason})
        }
        EventKind::Finding(f) => finding_fields(f),
        EventKind::Analysis(st) => state_json(st),
    }
}

/// A finding's fields (`threshold`, `gap`, `drained` events).
fn finding_fields(f: &Finding) -> Value {
    match f {
        Finding::Threshold {
            metric,
            level,
            change,
            gap_ms,
        } => {
            let (state, c) = match change {
                Crossed::Reached(c) => ("reached", c),
                Crossed::Lost(c) => ("lost", c),
            };
            let mut v = json!({"metric": metric.name(), "level": level, "state": state,
                               "reached_ms": c.reached_ms, "confirmed_ms": c.confirmed_ms});
            if let Some(l) = c.lost_ms {
                v["lost_ms"] = json!(l);
            }
            if let Some(g) = gap_ms {
                v["gap_ms"] = json!(g);
            }
            v
        }
        Finding::Gap {
            metric,
            level,
            reached_ms,
            gap_ms,
        } => {
            json!({"metric": metric.name(), "level": level, "reached_ms": reached_ms, "gap_ms": gap_ms})
        }
        Finding::Drain(DrainChange::Drained { since_ms, at_ms }) => {
            json!({"state": "drained", "since_ms": since_ms, "confirmed_ms": at_ms})
        }
        Finding::Drain(DrainChange::Busy { at_ms }) => json!({"state": "busy", "since_ms": at_ms}),
    }
}

pub fn event(ev: &Event) -> Value {
    let mut v = json!({"type": "event", "ts": rfc3339(ev.at), "elapsed_ms": ev.elapsed_ms,
                       "kind": ev.kind.name()});
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), event_fields(ev)) {
        obj.extend(extra);
    }
    // No sentence on the analysis (an object) nor on DNS answers (many, and all fields).
    if !matches!(ev.kind, EventKind::Analysis(_) | EventKind::DnsAnswer(_)) {
        v["message"] = json!(ev.kind.message());
    }
    v
}

/// The meta line's record of the analysis settings.
pub fn params_json(p: &Params) -> Value {
    json!({"threshold": p.threshold, "levels": p.levels(), "quiet_for_ms": p.quiet_for_ms,
           "ttl_ms": p.ttl_ms})
}

pub fn owners_json(owners: &[CensusOwner]) -> Value {
    owners
        .iter()
        .map(|o| json!({"pid": o.pid, "comm": o.comm, "cgroup_id": o.cgroup, "unit": o.unit, "old_open": o.old_open}))
        .collect()
}

fn straggler_json(s: &Straggler) -> Value {
    let answer = s
        .last_old_answer
        .as_ref()
        .map(|a| json!({"at_ms": a.at_ms, "name": a.name, "ttl": a.ttl_s, "resolver": a.resolver}));
    json!({"pid": s.pid, "comm": s.comm, "cgroup_id": s.cgroup, "unit": s.unit,
           "causes": s.causes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
           "old_attempts_since_cutover": s.old_attempts_since_cutover, "old_open": s.old_open,
           "old_open_before_cutover": s.old_open_before_cutover,
           "oldest_open_age_ms": s.oldest_open_age_ms,
           "fresh_old_after_ttl": s.fresh_old_after_ttl,
           "last_old_answer": answer, "stale_resolver": s.stale_resolver,
           "census_open": s.census_open, "first_old_ms": s.first_old_ms, "last_old_ms": s.last_old_ms,
           "reached_new": s.reached_new})
}

/// Processes per cause among all stragglers (what the metrics gauge shows).
pub fn causes_count(st: &State) -> Value {
    Cause::ALL
        .iter()
        .zip(st.per_cause)
        .map(|(c, n)| (c.as_str().to_string(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The analysis state as JSON (the final `analysis` event, `tracer report --json`).
pub fn state_json(st: &State) -> Value {
    let gaps: Vec<Value> = st
        .gaps
        .iter()
        .map(|g| {
            json!({"metric": g.metric.name(), "level": g.level,
                   "reached_ms": g.holding.map(|c| c.reached_ms),
                   "gap_ms": g.gap_ms,
                   "lost": g.lost.map(|c| json!({"reached_ms": c.reached_ms, "lost_ms": c.lost_ms})),
                   "running_ms": g.running_ms})
        })
        .collect();
    let estimate = match &st.drain.estimate {
        Estimate::At(ms) => json!({"quiet_at_ms": ms}),
        Estimate::QuietSince(ms) => {
            json!({"quiet_since_ms": ms, "drained_at_ms": ms + st.drain.quiet_for_ms})
        }
        Estimate::Pinned => {
            json!({"none": "held by pinned connections: it will not drain by itself"})
        }
        Estimate::NotPossible(why) => json!({"none": why}),
    };
    let pinned_by: Vec<Value> = st
        .drain
        .pinned_by
        .iter()
        .map(|p| {
            json!({"pid": p.pid, "comm": p.comm, "old_open": p.old_open,
                        "oldest_open_age_ms": p.oldest_open_age_ms})
        })
        .collect();
    json!({
        "end_ms": st.now_ms,
        "cutover": st.cutover.as_ref().map(|c| json!({"at_ms": c.at_ms, "source": c.source.name()})),
        "share": {"attempts_permille": st.share_attempts, "open_permille": st.share_open},
        "gaps": gaps,
        "drain": {"drained": st.drain.drained_since.is_some(), "since_ms": st.drain.drained_since,
                  "old_open": st.drain.old_open, "attempts_last_minute": st.drain.attempts_last_minute,
                  "quiet_for_ms": st.drain.quiet_for_ms, "last_busy_ms": st.drain.last_busy_ms,
                  "estimate": estimate, "will_not_drain": st.drain.estimate == Estimate::Pinned,
                  "pinned_by": pinned_by},
        "ttl_ms": st.ttl_ms, "ttl_source": st.ttl_source.as_str(),
        "stragglers": st.stragglers.iter().map(straggler_json).collect::<Vec<_>>(),
        "stragglers_total": st.stragglers_total, "moved": st.moved,
        "stragglers_by_cause": causes_count(st),
        "old_destinations": st.old_destinations.iter().map(|(a, o)| json!({"addr": a, "attempts": o.attempts, "open": o.open})).collect::<Vec<_>>(),
    })
}

/// The last line: totals since start, why the run ended and the sets as they ended (a DNS
/// change may have added to the new side).
pub fn summary(
    last: &Snapshot,
    first: &Snapshot,
    reason: EndReason,
    snapshots: u64,
    top: usize,
) -> Value {
    let (out, inb) = cohorts(last, first);
    let ranked = Ranked::of(last, None, top);
    json!({
        "type": "summary", "ts": rfc3339(last.at), "elapsed_ms": last.elapsed.as_millis() as u64,
        "reason": reason.name(), "snapshots": snapshots,
        "cohorts": out, "inbound": inb,
        "destinations": destinations(last, &ranked.destinations),
        "processes": processes_json(last, &ranked.processes),
        "evicted": evicted(last), "lost_events": last.lost_events,
        "reconciliations": last.reconciliations,
        "dns_capture": crate::dns_answer::stats(last.dns_capture.as_ref()),
    })
}

/// Writes one line per call: serialized first, then one write and a flush.
pub struct Writer {
    out: Box<dyn Write + Send>,
    top: usize,
    /// The causes of the stragglers, from the analysis handed over before each snapshot: each
    /// process row of one names them (`causes`), so a live reader of the stream sees them.
    causes: BTreeMap<(u32, String, u64), Vec<&'static str>>,
}

impl Writer {
    pub fn new(out: Box<dyn Write + Send>, top: usize) -> Self {
        Writer {
            out,
            top,
            causes: BTreeMap::new(),
        }
    }

    /// Name the causes in the process rows of a snapshot line.
    fn with_causes(&self, mut v: Value) -> Value {
        for p in v["processes"].as_array_mut().into_iter().flatten() {
            let key = (
                p["pid"].as_u64().unwrap_or(0) as u32,
                p["comm"].as_str().unwrap_or("").to_string(),
                p["cgroup_id"].as_u64().unwrap_or(0),
            );
            if let Some(c) = self.causes.get(&key) {
                p["causes"] = json!(c);
            }
        }
        v
    }

    fn put(&mut self, v: &Value) -> Result<()> {
        self.line(v)
            .map_err(|e| Error::runtime(format!("cannot write NDJSON output: {e}")))
    }

    pub fn line(&mut self, v: &Value) -> io::Result<()> {
        let mut buf = serde_json::to_vec(v).map_err(io::Error::other)?;
        buf.push(b'\n');
        self.out.write_all(&buf)?;
        self.out.flush()
    }
}

impl Sink for Writer {
    fn meta(&mut self, info: &RunInfo) -> Result<()> {
        self.put(&meta(info))
    }
    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot, ranked: &Ranked) -> Result<()> {
        let v = self.with_causes(snapshot_ranked(cur, prev, ranked));
        self.put(&v)
    }
    fn analysis(
        &mut self,
        state: &State,
        _dns: &[crate::model::analysis::dns::Answer],
    ) -> Result<()> {
        self.causes = state
            .causes
            .iter()
            .map(|(pid, comm, cgroup, c)| {
                (
                    (*pid, comm.clone(), *cgroup),
                    c.iter().map(|c| c.as_str()).collect(),
                )
            })
            .collect();
        Ok(())
    }
    fn event(&mut self, ev: &Event) -> Result<()> {
        self.put(&event(ev))
    }
    fn summary(
        &mut self,
        last: &Snapshot,
        first: &Snapshot,
        reason: EndReason,
        snapshots: u64,
    ) -> Result<()> {
        let v = summary(last, first, reason, snapshots, self.top);
        self.put(&v)
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
