//! Glue between the pure analysis (`model::analysis`) and the run's data: samples from live
//! snapshots and from recorded NDJSON lines (the same fields, so live and `tracer report` agree),
//! and findings as NDJSON events.

use serde_json::{Value, json};

use crate::{
    model::{
        analysis::{
            Finding, Params, Sample, State,
            drain::{Change as DrainChange, Estimate},
            gap::Change,
            stragglers::{CensusOwner, ProcSample, Straggler},
        },
        cohort::Cohort,
        counters::Out,
        snapshot::Snapshot,
    },
    ndjson,
};

/// The sample a live snapshot gives, limited to the `top` rows the NDJSON line records.
pub fn sample_of(cur: &Snapshot, prev: &Snapshot, top: usize) -> Sample {
    let (old, new) = (cur.cohort_out(Cohort::Old), cur.cohort_out(Cohort::New));
    let processes = ndjson::processes(&cur.processes)
        .into_iter()
        .take(top)
        .map(|(pid, comm, cgroup, outs, _)| ProcSample {
            unit: cur.units.get(&pid).cloned(),
            pid,
            comm,
            cgroup,
            old: outs[Cohort::Old as usize],
            new: outs[Cohort::New as usize],
        })
        .collect();
    let old_destinations = ndjson::top_destinations(cur, top)
        .into_iter()
        .filter(|r| r.cohort == Cohort::Old)
        .map(|r| (r.addr.to_string(), r.out))
        .collect();
    Sample {
        elapsed_ms: cur.elapsed.as_millis() as u64,
        old: *old,
        new: *new,
        old_attempts: old.delta(prev.cohort_out(Cohort::Old)).attempts,
        new_attempts: new.delta(prev.cohort_out(Cohort::New)).attempts,
        processes,
        old_destinations,
    }
}

fn u(v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("`{what}` is missing or not a non-negative integer"))
}

fn out_of(v: &Value, what: &str) -> Result<Out, String> {
    Ok(Out {
        attempts: u(&v["attempts"], &format!("{what}.attempts"))?,
        established: v["established"].as_u64().unwrap_or(0),
        failed: v["failed"].as_u64().unwrap_or(0),
        closed: v["closed"].as_u64().unwrap_or(0),
        open: u(&v["open"], &format!("{what}.open"))?,
    })
}

/// The sample a recorded snapshot line gives. Unknown fields are ignored.
pub fn sample_from_json(v: &Value) -> Result<Sample, String> {
    let c = &v["cohorts"];
    let processes = v["processes"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|p| {
                    Ok(ProcSample {
                        pid: u(&p["pid"], "processes[].pid")? as u32,
                        comm: p["comm"].as_str().unwrap_or("").into(),
                        cgroup: p["cgroup_id"].as_u64().unwrap_or(0),
                        unit: p["unit"].as_str().map(String::from),
                        old: out_of(&p["cohorts"]["old"], "processes[].cohorts.old")?,
                        new: out_of(&p["cohorts"]["new"], "processes[].cohorts.new")?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?
        .unwrap_or_default();
    let old_destinations = v["destinations"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|d| d["cohort"] == "old")
                .map(|d| {
                    Ok((
                        d["addr"].as_str().unwrap_or("?").into(),
                        out_of(d, "destinations[]")?,
                    ))
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(Sample {
        elapsed_ms: u(&v["elapsed_ms"], "elapsed_ms")?,
        old: out_of(&c["old"], "cohorts.old")?,
        new: out_of(&c["new"], "cohorts.new")?,
        old_attempts: u(&c["old"]["delta"]["attempts"], "cohorts.old.delta.attempts")?,
        new_attempts: u(&c["new"]["delta"]["attempts"], "cohorts.new.delta.attempts")?,
        processes,
        old_destinations,
    })
}

/// A finding as an NDJSON event: its kind and fields.
pub fn finding_event(f: &Finding) -> (&'static str, Value) {
    match f {
        Finding::Threshold {
            metric,
            level,
            change,
            gap_ms,
        } => {
            let (state, c) = match change {
                Change::Reached(c) => ("reached", c),
                Change::Lost(c) => ("lost", c),
            };
            let mut v = json!({"metric": metric.name(), "level": level, "state": state,
                               "reached_ms": c.reached_ms, "confirmed_ms": c.confirmed_ms});
            if let Some(l) = c.lost_ms {
                v["lost_ms"] = json!(l);
            }
            if let Some(g) = gap_ms {
                v["gap_ms"] = json!(g);
            }
            ("threshold", v)
        }
        Finding::Gap {
            metric,
            level,
            reached_ms,
            gap_ms,
        } => (
            "gap",
            json!({"metric": metric.name(), "level": level, "reached_ms": reached_ms, "gap_ms": gap_ms}),
        ),
        Finding::Drain(DrainChange::Drained { since_ms, at_ms }) => (
            "drained",
            json!({"state": "drained", "since_ms": since_ms, "confirmed_ms": at_ms}),
        ),
        Finding::Drain(DrainChange::Busy { at_ms }) => (
            "drained",
            json!({"state": "busy", "since_ms": at_ms, "message": "the old side is busy again"}),
        ),
    }
}

/// The meta line's record of the analysis settings.
pub fn params_json(p: &Params) -> Value {
    json!({"threshold": p.threshold, "levels": p.levels(), "quiet_for_ms": p.quiet_for_ms})
}

pub fn params_from_json(v: &Value) -> Params {
    let d = Params::default();
    Params {
        threshold: v["threshold"].as_u64().map_or(d.threshold, |t| t as u32),
        quiet_for_ms: v["quiet_for_ms"].as_u64().unwrap_or(d.quiet_for_ms),
    }
}

pub fn owners_json(owners: &[CensusOwner]) -> Value {
    owners
        .iter()
        .map(|o| json!({"pid": o.pid, "comm": o.comm, "cgroup_id": o.cgroup, "unit": o.unit, "old_open": o.old_open}))
        .collect()
}

pub fn owners_from_json(v: &Value) -> Vec<CensusOwner> {
    v.as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|o| {
                    Some(CensusOwner {
                        pid: o["pid"].as_u64()? as u32,
                        comm: o["comm"].as_str().unwrap_or("").into(),
                        cgroup: o["cgroup_id"].as_u64().unwrap_or(0),
                        unit: o["unit"].as_str().map(String::from),
                        old_open: o["old_open"].as_u64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn straggler_json(s: &Straggler) -> Value {
    json!({"pid": s.pid, "comm": s.comm, "cgroup_id": s.cgroup, "unit": s.unit,
           "old_attempts_since_cutover": s.old_attempts_since_cutover, "old_open": s.old_open,
           "census_open": s.census_open, "first_old_ms": s.first_old_ms, "last_old_ms": s.last_old_ms,
           "reached_new": s.reached_new})
}

/// The analysis state as JSON (`tracer report --json`).
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
        Estimate::NotPossible(why) => json!({"none": why}),
    };
    json!({
        "end_ms": st.now_ms,
        "cutover": st.cutover.as_ref().map(|c| json!({"at_ms": c.at_ms, "source": c.source})),
        "share": {"attempts_permille": st.share_attempts, "open_permille": st.share_open},
        "gaps": gaps,
        "drain": {"drained": st.drain.drained_since.is_some(), "since_ms": st.drain.drained_since,
                  "old_open": st.drain.old_open, "attempts_last_minute": st.drain.attempts_last_minute,
                  "quiet_for_ms": st.drain.quiet_for_ms, "last_busy_ms": st.drain.last_busy_ms,
                  "estimate": estimate},
        "stragglers": st.stragglers.iter().map(straggler_json).collect::<Vec<_>>(),
        "old_destinations": st.old_destinations.iter().map(|(a, o)| json!({"addr": a, "attempts": o.attempts, "open": o.open})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{analysis::Analysis, snapshot::ProcRow};
    use std::time::{Duration, SystemTime};

    fn snap(ms: u64, old_attempts: u64, new_attempts: u64) -> Snapshot {
        let mut s = Snapshot::empty(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        s.elapsed = Duration::from_millis(ms);
        s.out[Cohort::Old as usize].attempts = old_attempts;
        s.out[Cohort::Old as usize].open = 1;
        s.out[Cohort::New as usize].attempts = new_attempts;
        s.processes.push(ProcRow {
            pid: 5,
            comm: "curl".into(),
            cgroup: 3,
            addr: "127.10.0.1".parse().unwrap(),
            cohort: Cohort::Old,
            out: s.out[Cohort::Old as usize],
        });
        s.units.insert(5, "app.service".into());
        s
    }

    #[test]
    fn live_and_recorded_samples_are_the_same() {
        let (prev, cur) = (snap(1000, 10, 0), snap(2000, 12, 30));
        let live = sample_of(&cur, &prev, 20);
        let line = ndjson::snapshot(&cur, &prev, 20);
        let text = serde_json::to_string(&line).unwrap();
        let recorded = sample_from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(live, recorded);
        assert_eq!((live.old_attempts, live.new_attempts), (2, 30));
        assert_eq!(recorded.processes[0].unit.as_deref(), Some("app.service"));
    }

    #[test]
    fn a_snapshot_line_missing_counters_is_refused_by_name() {
        let e = sample_from_json(&json!({"type": "snapshot", "elapsed_ms": 5, "cohorts": {}}))
            .unwrap_err();
        assert!(e.contains("cohorts.old.attempts"), "{e}");
    }

    #[test]
    fn findings_become_events() {
        let mut a = Analysis::new(Params::default());
        a.mark_cutover(0, "flag");
        let mut all = vec![];
        for i in 1..=3u64 {
            let mut s = Sample {
                elapsed_ms: i * 1000,
                ..Default::default()
            };
            s.new_attempts = 10;
            all.extend(a.feed(s));
        }
        let kinds: Vec<_> = all.iter().map(|f| finding_event(f).0).collect();
        assert_eq!(kinds, ["threshold", "gap", "threshold", "gap"]);
        let (_, v) = finding_event(&all[1]);
        assert_eq!(
            (
                v["metric"].as_str(),
                v["level"].as_u64(),
                v["gap_ms"].as_i64()
            ),
            (Some("attempts"), Some(95), Some(0))
        );
        let st = state_json(&a.state());
        assert_eq!(st["cutover"]["source"], "flag");
        assert_eq!(st["gaps"][0]["gap_ms"], 0);
    }
}
