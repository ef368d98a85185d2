//! The fleet report on two synthetic recordings (made with the live run's NDJSON writer) whose
//! starts are a known 2.5 s apart; every expectation is computed from the generated inputs.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::{
    model::{cohort::Cohort, counters::Out, snapshot::Snapshot},
    ndjson,
    report::{fleet_text, replay},
};

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const OFFSET_MS: u64 = 2_500;

/// What a host did, in its own elapsed time (1 s interval, 16 snapshots).
struct Plan {
    host: &'static str,
    start_ms: u64,
    /// From this snapshot on, attempts go to the new side.
    moved_at: u64,
    cutover_ms: u64,
    /// The old pool closes at this snapshot (None: held to the end).
    old_closed_at: Option<u64>,
}

/// NDJSON text and the (wall time, old attempts, new attempts, old open, new open) of every
/// snapshot.
/// (wall time, old attempts, new attempts, old open, new open).
type Row = (u64, u64, u64, u64, u64);

fn recording(p: &Plan) -> (String, Vec<Row>) {
    let meta = json!({"type": "meta", "schema": 1, "started_at": fmt_ms(p.start_ms), "host": p.host,
        "old": ["127.10.0.0/16"], "new": ["127.20.0.0/16"], "interval_ms": 1000,
        "analysis": {"threshold": 95, "quiet_for_ms": 3000}, "census_owners": []});
    let mut lines = vec![meta];
    let mut points = vec![];
    let mut prev = Snapshot::empty(SystemTime::UNIX_EPOCH);
    let (mut old, mut new) = (Out::default(), Out::default());
    for i in 1..=16u64 {
        let (o, n) = if i < p.moved_at { (40, 10) } else { (0, 50) };
        old.attempts += o;
        new.attempts += n;
        old.open = if p.old_closed_at.is_some_and(|c| i >= c) {
            0
        } else {
            8
        };
        new.open = if i < p.moved_at { 2 } else { 10 };
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(p.start_ms + i * 1000);
        let mut cur = Snapshot::empty(at);
        cur.elapsed = Duration::from_secs(i);
        cur.out[Cohort::Old as usize] = old;
        cur.out[Cohort::New as usize] = new;
        lines.push(ndjson::writer::snapshot(&cur, &prev, 20));
        points.push((p.start_ms + i * 1000, o, n, old.open, new.open));
        if i * 1000 == p.cutover_ms {
            lines.push(json!({"type": "event", "elapsed_ms": p.cutover_ms, "kind": "cutover", "source": "flag"}));
        }
        prev = cur;
    }
    (lines.iter().map(|l| format!("{l}\n")).collect(), points)
}

fn plans() -> [Plan; 2] {
    [
        Plan {
            host: "edge-a",
            start_ms: T0,
            moved_at: 7,
            cutover_ms: 5000,
            old_closed_at: Some(9),
        },
        Plan {
            host: "edge-b",
            start_ms: T0 + OFFSET_MS,
            moved_at: 7,
            cutover_ms: 4000,
            old_closed_at: None,
        },
    ]
}

#[test]
fn two_hosts_a_known_offset_apart_make_one_fleet_story() {
    let plans = plans();
    let made: Vec<_> = plans.iter().map(recording).collect();
    let runs: Vec<(String, Recorded)> = plans
        .iter()
        .zip(&made)
        .map(|(p, (text, _))| (format!("{}.ndjson", p.host), replay(text).unwrap()))
        .collect();
    let step = 1000;
    let f = merge(&runs, Some(step)).unwrap();
    assert_eq!(f.t0_ms, T0);

    // Per host: the single-file analysis, moved onto the wall clock by its own start.
    for ((p, h), (_, rec)) in plans.iter().zip(&f.hosts).zip(&runs) {
        assert_eq!(h.host, p.host);
        assert_eq!(h.started_ms, p.start_ms);
        assert_eq!(
            h.cutover.as_ref().map(|c| c.0),
            Some(p.start_ms + p.cutover_ms)
        );
        let own: Vec<_> = rec
            .state
            .gaps
            .iter()
            .map(|g| (g.metric, g.level, g.gap_ms))
            .collect();
        assert_eq!(h.gaps, own);
        // Attempts moved during the interval before snapshot `moved_at`.
        let attempts_gap = ((p.moved_at - 1) * 1000) as i64 - p.cutover_ms as i64;
        assert_eq!(h.gaps[0], (Metric::Attempts, 95, Some(attempts_gap)));
        assert_eq!(
            h.drained_ms,
            rec.state.drain.drained_since.map(|d| p.start_ms + d)
        );
        assert_eq!(h.drained_ms.is_some(), p.old_closed_at.is_some());
        assert_eq!(h.holds_old(), p.old_closed_at.is_none());
    }

    // The fleet series: brute force over the generated points.
    let pts: Vec<&(u64, u64, u64, u64, u64)> = made.iter().flat_map(|m| &m.1).collect();
    let last = pts.iter().map(|p| p.0).max().unwrap();
    let steps = (last - T0).div_ceil(step);
    assert_eq!(f.buckets.len() as u64, steps);
    for (k, b) in f.buckets.iter().enumerate() {
        let end = T0 + (k as u64 + 1) * step;
        assert_eq!(b.end_ms, end);
        let inside = pts.iter().filter(|p| p.0 > end - step && p.0 <= end);
        let (oa, na) = inside.fold((0, 0), |(o, n), p| (o + p.1, n + p.2));
        assert_eq!((b.old_attempts, b.new_attempts), (oa, na), "step to {end}");
        let (mut oo, mut no, mut hosts) = (0, 0, 0);
        for (_, host_pts) in &made {
            let recording = host_pts[0].0 <= end && host_pts.last().unwrap().0 > end - step;
            if let Some(p) = host_pts
                .iter()
                .rev()
                .find(|p| p.0 <= end)
                .filter(|_| recording)
            {
                oo += p.3;
                no += p.4;
                hosts += 1;
            }
        }
        assert_eq!(
            (b.old_open, b.new_open, b.hosts),
            (oo, no, hosts),
            "step to {end}"
        );
    }
    // Host b starts 2.5 s later: the first steps hold only host a.
    assert_eq!(f.buckets[0].hosts, 1);
    assert_eq!(f.buckets[3].hosts, 2);

    // The fleet reached 95 % of attempts at the start of the first step after the last old
    // attempt anywhere (then held), and the fleet gap runs from the first cutover.
    let last_old = pts.iter().filter(|p| p.1 > 0).map(|p| p.0).max().unwrap();
    let reached_at = T0 + (last_old - T0).div_ceil(step) * step;
    let first_cutover = plans
        .iter()
        .map(|p| p.start_ms + p.cutover_ms)
        .min()
        .unwrap();
    assert_eq!(f.first_cutover(), Some(first_cutover));
    assert_eq!(f.reached[0], (Metric::Attempts, 95, Some(reached_at)));
    let j = to_json(&f);
    assert_eq!(
        j["fleet"]["reached"][0]["gap_ms"],
        json!(reached_at as i64 - first_cutover as i64)
    );
    assert_eq!(j["fleet"]["holding_old"], json!(["edge-b"]));
    assert_eq!(j["hosts"][1]["offset_ms"], json!(OFFSET_MS));
    assert_eq!(j["series"].as_array().unwrap().len() as u64, steps);

    let text = fleet_text::render(&f);
    assert!(text.contains("fleet      2 hosts"), "{text}");
    assert!(text.contains("holding old: edge-b with 8 open"), "{text}");
    assert!(!text.contains("holding old: edge-a"), "{text}");
}

#[test]
fn the_default_step_keeps_long_runs_to_about_sixty_rows() {
    let plans = plans();
    let runs: Vec<(String, Recorded)> = plans
        .iter()
        .map(|p| (p.host.to_string(), replay(&recording(p).0).unwrap()))
        .collect();
    let f = merge(&runs, None).unwrap();
    assert_eq!(f.step_ms, 1000, "18.5 s at 1 s intervals fit");
    // One host twice: told apart by file.
    let twice = vec![
        (
            "x.ndjson".to_string(),
            replay(&recording(&plans[0]).0).unwrap(),
        ),
        (
            "y.ndjson".to_string(),
            replay(&recording(&plans[0]).0).unwrap(),
        ),
    ];
    let f = merge(&twice, None).unwrap();
    assert_eq!(f.hosts[1].host, "edge-a (y.ndjson)");
}
