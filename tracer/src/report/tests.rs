//! `tracer report` on synthetic recordings made with the same NDJSON writer as a live run.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::{
    model::{
        analysis::Sample, cohort::Cohort, counters::Out, latency::bucket_upper_us,
        snapshot::Snapshot,
    },
    ndjson::{reader, writer},
};

fn meta() -> Value {
    json!({"type": "meta", "schema": 1, "started_at": "2026-01-01T00:00:00.000Z", "host": "h",
           "old": ["127.10.0.0/16"], "new": ["127.20.0.0/16"], "interval_ms": 1000,
           "analysis": {"threshold": 95, "quiet_for_ms": 3000}, "census_owners": [],
           "some_future_field": {"x": 1}})
}

/// A failover: all old for 5 s, cutover at 5 s, moved at 7 s, old pool closed at 10 s.
fn recording() -> (String, State) {
    let mut lines = vec![meta()];
    let mut live = Analysis::new(reader::params_from_json(&meta()["analysis"]));
    let mut prev = Snapshot::empty(SystemTime::UNIX_EPOCH);
    let (mut old, mut new) = (Out::default(), Out::default());
    for i in 1..=16u64 {
        let (o, n) = if i < 7 { (100, 0) } else { (0, 100) };
        old.attempts += o;
        new.attempts += n;
        old.open = if i < 10 { 20 } else { 0 };
        new.open = if i < 7 { 0 } else { 20 };
        let mut cur = Snapshot::empty(SystemTime::UNIX_EPOCH + Duration::from_secs(i));
        cur.elapsed = Duration::from_secs(i);
        // Until the move, 2 refused and 1 timed out per interval on the old side; connects
        // to the new side take 33-65 us, one in ten waits for a SYN retransmission (~1 s).
        let k = i.min(6);
        old.failed = 3 * k;
        cur.reasons[Cohort::Old as usize].0[..2].copy_from_slice(&[2 * k, k]);
        let lat = &mut cur.latency[Cohort::New as usize].established;
        lat.0[15] = new.attempts * 9 / 10;
        lat.0[29] = new.attempts / 10;
        cur.out[Cohort::Old as usize] = old;
        cur.out[Cohort::New as usize] = new;
        lines.push(writer::snapshot(&cur, &prev, 20));
        live.feed(Sample::of(&cur, &prev, 20));
        if i == 5 {
            lines.push(
                json!({"type": "event", "elapsed_ms": 5000, "kind": "cutover", "source": "flag"}),
            );
            live.mark_cutover(5000, crate::model::analysis::cutover::CutoverSource::Flag);
        }
        prev = cur;
    }
    // The summary carries the last snapshot's cohorts (taken before the unknown line).
    let cohorts = lines.last().unwrap()["cohorts"].clone();
    lines.push(json!({"type": "future_line_type", "x": 1}));
    lines.push(json!({"type": "summary", "reason": "sigint", "cohorts": cohorts}));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    (text, live.state())
}

#[test]
fn replay_gives_the_numbers_of_the_live_run() {
    let (text, live) = recording();
    let rec = replay(&text).unwrap();
    assert_eq!(rec.state, live);
    assert_eq!(rec.snapshots, 16);
    assert_eq!(rec.state.cutover.as_ref().unwrap().at_ms, 5000);
    assert_eq!(
        rec.state.gaps[0].gap_ms,
        Some(1000),
        "attempts moved during 6..7 s"
    );
    assert_eq!(
        rec.state.drain.drained_since,
        Some(9000),
        "last busy interval"
    );
    let j = to_json(&rec);
    assert_eq!(j["analysis"]["gaps"][0]["gap_ms"], 1000);
    assert_eq!(j["analysis"]["drain"]["since_ms"], 9000);
    assert_eq!(j["run"]["ended"], "sigint");
    let t = text::render(&rec);
    // Wall-clock times (UTC) with the offset into the run: what a postmortem quotes.
    assert!(
        t.contains("cutover    00:00:05 UTC (+5.0 s) (marked by flag)"),
        "{t}"
    );
    assert!(
        t.contains("attempts 95%  1.0 s (reached at 00:00:06 UTC (+6.0 s), held)"),
        "{t}"
    );
    assert!(t.contains("drained at 00:00:09 UTC (+9.0 s)"), "{t}");
}

#[test]
fn a_recording_that_ends_quiet_says_since_when_not_a_forecast() {
    // Old busy until 3 s, quiet from then to the end at 10 s, with --quiet-for 60 s.
    let mut lines = vec![meta()];
    lines[0]["analysis"]["quiet_for_ms"] = json!(60_000);
    let mut prev = Snapshot::empty(SystemTime::UNIX_EPOCH);
    let mut old = Out::default();
    for i in 1..=10u64 {
        if i <= 3 {
            old.attempts += 10;
        }
        let mut cur = Snapshot::empty(SystemTime::UNIX_EPOCH + Duration::from_secs(i));
        cur.elapsed = Duration::from_secs(i);
        cur.out[Cohort::Old as usize] = old;
        lines.push(writer::snapshot(&cur, &prev, 20));
        prev = cur;
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let t = text::render(&replay(&text).unwrap());
    assert!(
        t.contains("quiet since 00:00:03 UTC (+3.0 s): drained at 00:01:03 UTC (+63.0 s)"),
        "{t}"
    );
    assert!(!t.contains("expected quiet"), "{t}");
    assert!(
        t.contains("not drained at the end (00:00:10 UTC (+10.0 s))"),
        "{t}"
    );
}

/// `--watch-dns` without `--old/--new`: the new side is what the DNS change added.
#[test]
fn the_new_side_added_by_a_dns_change_is_in_the_report() {
    let mut m = meta();
    m["new"] = json!([]);
    let ev = json!({"type": "event", "elapsed_ms": 2000, "kind": "dns_change",
                    "name": "api.example", "old": ["127.10.0.1"], "new": ["127.20.0.9"],
                    "ttl": 30, "long_ttl": false, "added_to_new": ["127.20.0.9/32"]});
    let text = format!("{m}\n{ev}\n");
    let rec = replay(&text).unwrap();
    assert_eq!(rec.new_side, ["127.20.0.9/32"]);
    assert!(text::render(&rec).contains("new: 127.20.0.9/32"));
    assert_eq!(to_json(&rec)["sets"]["new"], json!(["127.20.0.9/32"]));
}

#[test]
fn truncated_and_foreign_files_name_the_line() {
    let (text, _) = recording();
    // A killed run: reported up to its last complete line, with a warning naming the line.
    let cut = &text[..text.len() - 40];
    let rec = replay(cut).unwrap();
    let last = cut.lines().count();
    let w = rec.warning.clone().unwrap();
    assert!(w.starts_with(&format!("line {last} ")), "{w}");
    assert!(w.contains("truncated"), "{w}");
    assert!(rec.summary.is_none());
    assert_eq!(rec.snapshots, 16);
    assert_eq!(to_json(&rec)["warning"], w.as_str());
    // Damage before the end is not a truncation: refused, naming the line.
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "{\"type\":\"snap";
    let e = replay(&lines.join("\n")).err().unwrap();
    assert!(e.starts_with("line 4: "), "{e}");

    let e = replay("hello world\n").err().unwrap();
    assert!(
        e.starts_with("line 1:") && e.contains("not NDJSON written by"),
        "{e}"
    );
    let e = replay("{\"type\":\"snapshot\"}\n").err().unwrap();
    assert!(e.starts_with("line 1:") && e.contains("meta"), "{e}");
    let e = replay("").err().unwrap();
    assert!(e.contains("empty"), "{e}");
    let e = replay(&format!(
        "{}\n{{\"type\":\"snapshot\",\"elapsed_ms\":1}}\n",
        meta()
    ))
    .err()
    .unwrap();
    assert!(e.starts_with("line 2: bad snapshot"), "{e}");
    let e = replay("{\"type\":\"meta\",\"schema\":9}\n").err().unwrap();
    assert!(e.contains("schema 9"), "{e}");
}

#[test]
fn a_run_without_summary_or_cutover_still_reports() {
    let (text, _) = recording();
    let text: String = text
        .lines()
        .filter(|l| !l.contains("\"summary\"") && !l.contains("\"cutover\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let rec = replay(&text).unwrap();
    assert!(rec.state.cutover.is_none());
    assert_eq!(rec.state.gaps[0].holding.unwrap().reached_ms, 6000);
    let t = text::render(&rec);
    assert!(t.contains("no summary line"), "{t}");
    assert!(t.contains("none marked"), "{t}");
}

#[test]
fn the_svg_renders_to_an_image_of_the_expected_size() {
    let (text, _) = recording();
    let rec = replay(&text).unwrap();
    let svg = svg::render(&rec);
    assert!(svg.contains("cutover (flag)"), "the cutover is marked");
    // A postmortem picture: title with host and date, wall-clock axis, the drain panel.
    assert!(svg.contains("move on h from 2026-01-01"), "title");
    assert!(
        svg.contains("00:00:05 cutover (flag)"),
        "legend with the time"
    );
    assert!(
        svg.contains("old side: open connections (drain)"),
        "drain panel"
    );
    assert!(svg.contains("\n00:00:10\n"), "wall-clock axis labels");
    let tree = resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default()).unwrap();
    assert_eq!(
        (tree.size().width() as u32, tree.size().height() as u32),
        (svg::WIDTH, svg::HEIGHT)
    );
    let mut pix = resvg::tiny_skia::Pixmap::new(svg::WIDTH, svg::HEIGHT).unwrap();
    resvg::render(&tree, Default::default(), &mut pix.as_mut());
    let colored = pix
        .pixels()
        .iter()
        .filter(|p| p.red() != p.blue() || p.green() != p.blue())
        .count();
    assert!(
        colored > 1000,
        "lines are drawn in colour: {colored} pixels"
    );
}

#[test]
fn failures_by_reason_and_latency_per_side_over_the_run() {
    let (text, _) = recording();
    let rec = replay(&text).unwrap();
    let j = to_json(&rec);
    let f = &j["failures"];
    assert_eq!(
        (f["old"]["failed"].as_u64(), f["new"]["failed"].as_u64()),
        (Some(18), Some(0))
    );
    assert_eq!(f["old"]["by_reason"]["refused"], 12);
    assert_eq!(f["old"]["by_reason"]["timeout"], 6);
    assert_eq!(f["all"]["by_reason"]["refused"], 12);
    let new = &j["latency_us"]["new"]["established"];
    assert_eq!(new["count"], 1000);
    let (fast, slow) = (bucket_upper_us(15), bucket_upper_us(29));
    assert_eq!(
        (new["p50"].as_u64(), new["p90"].as_u64()),
        (Some(fast), Some(fast))
    );
    assert_eq!(new["p99"].as_u64(), Some(slow));
    assert!(j["latency_us"]["old"]["established"]["p50"].is_null());
    let t = text::render(&rec);
    assert!(
        t.contains("failures   cohort    failed     refused     timeout"),
        "{t}"
    );
    assert!(
        t.contains("           old           18          12           6"),
        "{t}"
    );
    assert!(
        t.contains("           new         1000     66 us     66 us    1.07 s"),
        "{t}"
    );

    // Without a summary line the last snapshot gives the same.
    let cut: String = text
        .lines()
        .filter(|l| !l.contains("\"summary\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(to_json(&replay(&cut).unwrap())["failures"], j["failures"]);
}

#[test]
fn the_filters_of_the_run_are_in_the_report() {
    let (text, _) = recording();
    let rec = replay(&text).unwrap();
    assert!(!text::render(&rec).contains("filter "));
    let f = json!({"netns": 4026532401u64, "netns_path": "/run/netns/a", "cgroup": "/x.slice",
                   "cgroup_id": 9, "inbound_counted": false});
    let text = text.replacen(
        "\"type\":\"meta\"",
        &format!("\"filter\":{f},\"type\":\"meta\""),
        1,
    );
    let rec = replay(&text).unwrap();
    let t = text::render(&rec);
    assert!(
        t.contains("filter     netns 4026532401 (/run/netns/a), cgroup /x.slice (outbound only)"),
        "{t}"
    );
    assert_eq!(to_json(&rec)["filter"], f);
}

/// A pool held from before the start and a process that keeps connecting from a cached answer:
/// the replay names both with their causes, the live analysis agrees, and once only the pool
/// is left the old side will not drain by itself.
#[test]
fn stragglers_are_named_with_their_causes_and_the_pinned_pool_blocks_the_drain() {
    use crate::model::{
        held::{Held, Holder},
        snapshot::ProcRow,
    };
    let mut lines = vec![meta()];
    let mut live = Analysis::new(reader::params_from_json(&meta()["analysis"]));
    let mut prev = Snapshot::empty(SystemTime::UNIX_EPOCH);
    let row = |pid: u32, comm: &str, attempts, open| ProcRow {
        pid,
        comm: comm.into(),
        cgroup: 1,
        destinations: 1,
        cohort: Cohort::Old,
        out: Out {
            attempts,
            established: attempts,
            closed: attempts,
            open,
            ..Default::default()
        },
    };
    for i in 1..=20u64 {
        let mut cur = Snapshot::empty(SystemTime::UNIX_EPOCH + Duration::from_secs(i));
        cur.elapsed = Duration::from_secs(i);
        let cached = i.min(12);
        cur.out[Cohort::Old as usize] = Out {
            attempts: cached,
            established: cached,
            closed: cached,
            open: 2,
            ..Default::default()
        };
        cur.processes = vec![row(7, "nginx", 0, 2), row(8, "java", cached, 0)];
        cur.held = vec![Holder {
            pid: 7,
            comm: "nginx".into(),
            cgroup: 1,
            held: Held {
                before_start: 2,
                opened_ms: vec![],
            },
        }];
        lines.push(writer::snapshot(&cur, &prev, 20));
        live.feed(Sample::of(&cur, &prev, 20));
        if i == 3 {
            lines.push(
                json!({"type": "event", "elapsed_ms": 3000, "kind": "cutover", "source": "flag"}),
            );
            live.mark_cutover(3000, crate::model::analysis::cutover::CutoverSource::Flag);
        }
        prev = cur;
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let rec = replay(&text).unwrap();
    assert_eq!(rec.state, live.state(), "the replay is the live analysis");
    let by = |pid| rec.state.stragglers.iter().find(|s| s.pid == pid).unwrap();
    assert_eq!(by(7).why(true), "pinned");
    assert_eq!(by(8).why(true), "dns_cache");
    assert_eq!(
        by(8).fresh_old_after_ttl,
        8,
        "attempts in the intervals from 4 s to 12 s"
    );
    assert_eq!(
        rec.state.drain.estimate,
        crate::model::analysis::drain::Estimate::Pinned
    );
    let out = text::render(&rec);
    assert!(out.contains("stragglers 2 on old, 0 moved to new"), "{out}");
    assert!(
        out.contains("WILL NOT DRAIN BY ITSELF: held by nginx (pid 7, 2 open, from before start)"),
        "{out}"
    );
    assert!(
        out.contains("fix        pinned: recycle its pool / reload it (1 process)"),
        "{out}"
    );
    assert!(out.contains("TTL unknown"), "{out}");
    let j = to_json(&rec);
    assert_eq!(j["analysis"]["stragglers_by_cause"]["dns_cache"], 1, "{j}");
    assert_eq!(j["analysis"]["drain"]["will_not_drain"], true);
}
