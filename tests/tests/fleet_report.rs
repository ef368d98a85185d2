//! `tracer report A.ndjson B.ndjson`: two real recordings (two tracer runs, each watching its own
//! pair of loopback address sets, the second started about a second after the first) merged on
//! one wall clock. Every expectation comes from the two NDJSON files and the traffic made.

use std::{thread, time::Duration};

use serde_json::Value;
use tracer_tests::*;

/// Unix ms of `YYYY-MM-DDTHH:MM:SS.mmmZ` (what tracer writes).
fn unix_ms(s: &str) -> u64 {
    let num = |a: usize, b: usize| s[a..b].parse::<i64>().expect("digits");
    let (y, m, d) = (num(0, 4), num(5, 7), num(8, 10));
    // Days from 1970-01-01 (civil calendar).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11, 13) * 3600 + num(14, 16) * 60 + num(17, 19);
    (secs * 1000 + num(20, 23)) as u64
}

struct Host {
    started: u64,
    /// (wall ms, old attempts, new attempts, old open, new open) per snapshot.
    points: Vec<(u64, u64, u64, u64, u64)>,
    cutover: u64,
}

fn host(out: &Output) -> Host {
    let started = unix_ms(out.meta()["started_at"].as_str().unwrap());
    let points = out
        .snapshots()
        .iter()
        .map(|s| {
            let c = &s["cohorts"];
            (
                started + n(&s["elapsed_ms"]),
                n(&c["old"]["delta"]["attempts"]),
                n(&c["new"]["delta"]["attempts"]),
                n(&c["old"]["open"]),
                n(&c["new"]["open"]),
            )
        })
        .collect();
    let cut = out.events("cutover");
    assert_eq!(cut.len(), 1, "one cutover per run");
    Host {
        started,
        points,
        cutover: started + n(&cut[0]["elapsed_ms"]),
    }
}

#[test]
fn two_recordings_a_second_apart_merge_into_one_fleet_story() {
    let (a_old, a_new) = (Server::start("127.181.0.5"), Server::start("127.182.0.5"));
    let (b_old, b_new) = (Server::start("127.183.0.5"), Server::start("127.184.0.5"));
    let set = |o: &str, n: &str| ["--old", o, "--new", n, "--cutover-at", "now"].map(String::from);
    let a_args = set("127.181.0.0/24", "127.182.0.0/24");
    let run_a = Run::start("fleet-a", &a_args.each_ref().map(String::as_str));
    thread::sleep(Duration::from_millis(1000));
    let b_args = set("127.183.0.0/24", "127.184.0.0/24");
    let run_b = Run::start("fleet-b", &b_args.each_ref().map(String::as_str));
    // Host a moves completely; host b keeps 3 connections to its old side open.
    short_connections(a_old.addr, 10);
    short_connections(b_old.addr, 5);
    let held = open_connections(b_old.addr, 3);
    short_connections(a_new.addr, 20);
    short_connections(b_new.addr, 15);
    a_old.wait_accepted(10);
    b_old.wait_accepted(8);
    a_new.wait_accepted(20);
    b_new.wait_accepted(15);
    thread::sleep(Duration::from_millis(500));
    let out_a = run_a.stop();
    let out_b = run_b.stop();
    drop(held);
    assert!(out_a.status.success() && out_b.status.success());
    assert_eq!(
        out_a.cohort("old").0 + out_b.cohort("old").0,
        18,
        "old attempts made"
    );
    assert_eq!(
        out_a.cohort("new").0 + out_b.cohort("new").0,
        35,
        "new attempts made"
    );

    let files = [tmp_path("fleet-a.ndjson"), tmp_path("fleet-b.ndjson")];
    let (code, stdout, stderr) = tracer(&[
        "report",
        files[0].to_str().unwrap(),
        files[1].to_str().unwrap(),
        "--json",
        "--step",
        "1s",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let j: Value = serde_json::from_str(&stdout).expect("report JSON");
    let (ha, hb) = (host(&out_a), host(&out_b));
    let t0 = ha.started.min(hb.started);
    assert_eq!(n(&j["fleet"]["start_ms"]), t0);
    assert!(hb.started >= ha.started + 1000, "b started a second later");

    // Per host: start, offset and cutover on the wall clock, as each file says.
    for (k, h) in [&ha, &hb].into_iter().enumerate() {
        let r = &j["hosts"][k];
        assert_eq!(n(&r["started_ms"]), h.started);
        assert_eq!(n(&r["offset_ms"]), h.started - t0);
        assert_eq!(n(&r["cutover"]["at_ms"]), h.cutover);
    }
    assert_eq!(
        n(&j["fleet"]["first_cutover_ms"]),
        ha.cutover.min(hb.cutover)
    );
    // The old side of a closed every connection; b still holds 3.
    assert_eq!(n(&j["hosts"][0]["old_open"]), 0);
    assert_eq!(n(&j["hosts"][1]["old_open"]), 3);
    let holding: Vec<&str> = j["fleet"]["holding_old"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(holding.len(), 1, "{holding:?}");
    assert!(
        holding[0].contains("fleet-b.ndjson"),
        "one host name twice: told apart by file: {holding:?}"
    );

    // The fleet series: each snapshot of each file in the 1 s step ending at or after it.
    let step = 1000;
    let series = j["series"].as_array().unwrap();
    let last = ha
        .points
        .iter()
        .chain(&hb.points)
        .map(|p| p.0)
        .max()
        .unwrap();
    assert_eq!(series.len() as u64, (last - t0).div_ceil(step));
    let (mut old_sum, mut new_sum) = (0, 0);
    for (k, b) in series.iter().enumerate() {
        let end = t0 + (k as u64 + 1) * step;
        assert_eq!(n(&b["end_ms"]), end);
        let inside = || {
            ha.points
                .iter()
                .chain(&hb.points)
                .filter(|p| p.0 > end - step && p.0 <= end)
        };
        let oa: u64 = inside().map(|p| p.1).sum();
        let na: u64 = inside().map(|p| p.2).sum();
        assert_eq!(
            (n(&b["attempts"]["old"]), n(&b["attempts"]["new"])),
            (oa, na),
            "step to {end}"
        );
        let mut open = (0, 0);
        for h in [&ha, &hb] {
            let recording = h.points[0].0 <= end && h.points.last().unwrap().0 > end - step;
            if let Some(p) = h
                .points
                .iter()
                .rev()
                .find(|p| p.0 <= end)
                .filter(|_| recording)
            {
                open = (open.0 + p.3, open.1 + p.4);
            }
        }
        assert_eq!(
            (n(&b["open"]["old"]), n(&b["open"]["new"])),
            open,
            "step to {end}"
        );
        old_sum += oa;
        new_sum += na;
    }
    // Nothing lost or counted twice in the merge: the traffic made.
    assert_eq!((old_sum, new_sum), (18, 35));

    // The text report names both hosts and the one still holding old.
    let (code, text, stderr) = tracer(&[
        "report",
        files[0].to_str().unwrap(),
        files[1].to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(text.contains("fleet      2 hosts"), "{text}");
    assert!(
        text.contains("holding old: ") && text.contains("fleet-b.ndjson) with 3 open"),
        "{text}"
    );
    // --svg draws one run only: one line, exit 2.
    let (code, _, stderr) = tracer(&[
        "report",
        files[0].to_str().unwrap(),
        files[1].to_str().unwrap(),
        "--svg",
        "/tmp/x.svg",
    ]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
