//! The NDJSON reader: the lines `tracer report` replays, with the same fields the live run
//! feeds the analysis from, so a replay gives the live numbers.

use serde_json::Value;

use crate::model::{
    analysis::{
        Params, Sample,
        stragglers::{CensusOwner, ProcSample},
    },
    counters::Out,
    held::Held,
};

/// The complete JSON lines of a recording, numbered from 1, and a warning when the recording
/// ends in a partial line (a run that was killed while writing): that line is left out.
#[derive(Debug)]
pub struct Lines {
    pub lines: Vec<(usize, Value)>,
    pub warning: Option<String>,
}

/// Split a recording into JSON lines. A broken line before the last one is an error naming
/// it; a broken last line is a truncated recording, read up to the line before.
pub fn lines(text: &str) -> Result<Lines, String> {
    let numbered: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let last = numbered.last().map(|(n, _)| *n);
    let mut out = Lines {
        lines: Vec::with_capacity(numbered.len()),
        warning: None,
    };
    for (no, l) in numbered {
        match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => out.lines.push((no, v)),
            Ok(_) | Err(_) if Some(no) == last && no > 1 => {
                out.warning = Some(format!(
                    "line {no} is not a complete JSON object: the recording is truncated (was the run killed?); reporting up to line {}",
                    no - 1
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "line {no}: not a JSON object: this is not NDJSON written by `tracer watch --json`"
                ));
            }
            Err(e) => {
                return Err(format!(
                    "line {no}: not a complete JSON object ({e}): the file is damaged or is not NDJSON written by `tracer watch --json`"
                ));
            }
        }
    }
    Ok(out)
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
                        held: held_of(&p["old_held"]),
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

pub fn params_from_json(v: &Value) -> Params {
    let d = Params::default();
    Params {
        threshold: v["threshold"].as_u64().map_or(d.threshold, |t| t as u32),
        quiet_for_ms: v["quiet_for_ms"].as_u64().unwrap_or(d.quiet_for_ms),
        ttl_ms: v["ttl_ms"].as_u64(),
    }
}

/// A process's `old_held` (absent: it holds nothing on old).
fn held_of(v: &Value) -> Held {
    let mut h = Held {
        before_start: v["before_start"].as_u64().unwrap_or(0),
        opened_ms: vec![],
    };
    for p in v["opened_ms"].as_array().into_iter().flatten() {
        if let (Some(t), Some(n)) = (p[0].as_u64(), p[1].as_u64()) {
            h.opened_ms.push((t, n));
        }
    }
    h.normalize();
    h
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        cohort::Cohort,
        snapshot::{ProcRow, Snapshot},
    };
    use serde_json::json;
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
            destinations: 1,
            cohort: Cohort::Old,
            out: s.out[Cohort::Old as usize],
        });
        s.units.insert(5, "app.service".into());
        s
    }

    #[test]
    fn live_and_recorded_samples_are_the_same() {
        let (prev, cur) = (snap(1000, 10, 0), snap(2000, 12, 30));
        let live = Sample::of(&cur, &prev, 20);
        let line = crate::ndjson::writer::snapshot(&cur, &prev, 20);
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
    fn a_truncated_last_line_is_a_warning_a_broken_middle_line_an_error() {
        let ok = lines("{\"type\":\"meta\"}\n{\"type\":\"snapshot\"}\n{\"type\":\"snap").unwrap();
        assert_eq!(ok.lines.len(), 2);
        let w = ok.warning.unwrap();
        assert!(w.contains("line 3") && w.contains("up to line 2"), "{w}");
        let e = lines("{\"type\":\"meta\"}\n{\"ty\n{\"type\":\"summary\"}\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(lines("{\"a\":1}\n\n").unwrap().warning.is_none());
    }
}
