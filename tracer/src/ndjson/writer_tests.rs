//! The NDJSON writer's lines, checked field by field.
use super::*;
use crate::model::snapshot::{DestRow, ProcRow};
use std::time::Duration;
use std::time::SystemTime;

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
        destinations: 1,
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
    w.line(&summary(
        &snap(1, 1),
        &snap(0, 0),
        EndReason::Duration,
        3,
        5,
    ))
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
fn findings_become_events() {
    use crate::model::analysis::{Analysis, Sample, cutover::CutoverSource};
    let mut a = Analysis::new(Params::default());
    a.mark_cutover(0, CutoverSource::Flag);
    let mut all = vec![];
    for i in 1..=3u64 {
        let mut s = Sample {
            elapsed_ms: i * 1000,
            ..Default::default()
        };
        s.new_attempts = 10;
        all.extend(a.feed(s));
    }
    let ev = |f: &Finding| {
        event(&Event {
            at: SystemTime::UNIX_EPOCH,
            elapsed_ms: 3000,
            kind: EventKind::Finding(f.clone()),
        })
    };
    let kinds: Vec<_> = all.iter().map(|f| ev(f)["kind"].clone()).collect();
    assert_eq!(kinds, ["threshold", "gap", "threshold", "gap"]);
    let v = ev(&all[1]);
    assert_eq!(
        (
            v["metric"].as_str(),
            v["level"].as_u64(),
            v["gap_ms"].as_i64()
        ),
        (Some("attempts"), Some(95), Some(0))
    );
    assert!(v["message"].as_str().unwrap().contains("declaration gap"));
    let st = state_json(&a.state());
    assert_eq!(st["cutover"]["source"], "flag");
    assert_eq!(st["gaps"][0]["gap_ms"], 0);
}

#[test]
fn process_rows_name_the_causes_the_analysis_found() {
    use crate::model::analysis::stragglers::ProcSample;
    use crate::model::analysis::{Analysis, Sample, cutover::CutoverSource};
    let mut a = Analysis::new(Params::default());
    a.mark_cutover(0, CutoverSource::Flag);
    for (ms, attempts) in [(1000, 1), (2000, 2)] {
        a.feed(Sample {
            elapsed_ms: ms,
            processes: vec![ProcSample {
                pid: 1,
                comm: "java".into(),
                cgroup: 3,
                old: Out {
                    attempts,
                    ..Default::default()
                },
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    let mut w = Writer::new(Box::new(std::io::sink()), 10);
    w.analysis(&a.state(), &[]).unwrap();
    let v = w.with_causes(json!({"processes": [
        {"pid": 1, "comm": "java", "cgroup_id": 3},
        {"pid": 2, "comm": "curl", "cgroup_id": 3}]}));
    assert_eq!(v["processes"][0]["causes"], json!(["dns_cache"]));
    assert!(v["processes"][1].get("causes").is_none());
}

#[test]
fn every_cutover_event_carries_its_time() {
    use crate::model::analysis::cutover::CutoverSource;
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(51_785_000);
    for source in [CutoverSource::Flag, CutoverSource::Key, CutoverSource::Dns] {
        let v = event(&Event {
            at,
            elapsed_ms: 700,
            kind: EventKind::Cutover { source, name: None },
        });
        assert_eq!(v["kind"], "cutover");
        assert_eq!(v["source"], source.name());
        assert_eq!(v["at"], "1970-01-01T14:23:05.000Z");
    }
}
