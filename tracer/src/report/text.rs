//! The report as text for a terminal: one section per question an operator asks.

use std::fmt::Write;

use serde_json::Value;

use super::{Recorded, outcomes};
use crate::model::{
    analysis::{State, TtlSource, causes::Cause, drain::Estimate, gap::HOLD},
    failures::Reason,
    latency::fmt_us,
};

/// Milliseconds as seconds with one decimal.
/// Who is still on old and why, with the fix per cause; the processes that moved, counted.
fn stragglers_text(o: &mut String, st: &State, netns: &std::collections::BTreeMap<u32, u64>) {
    let cut = st.cutover.is_some();
    let ttl = match st.ttl_source {
        TtlSource::Unknown => "TTL unknown (0 s: one interval of grace; give --ttl)".to_string(),
        s => format!("TTL {} ({})", secs(st.ttl_ms), s.as_str()),
    };
    let _ = writeln!(
        o,
        "stragglers {} on old, {} moved to new; {ttl}",
        st.stragglers_total, st.moved
    );
    if st.stragglers.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "           pid      comm             cgroup / unit        old conn  old open  pre-cut  oldest    first old  last old   {:<24}{}",
        "why",
        if netns.is_empty() { "" } else { " netns" }
    );
    for s in &st.stragglers {
        let t = |v: Option<u64>| v.map_or("-".into(), secs);
        let oldest = match s.oldest_open_age_ms {
            Some(a) if s.census_open > 0 && a >= st.now_ms => "pre-start".to_string(),
            Some(a) => crate::model::analysis::age(a),
            None => "-".into(),
        };
        let _ = writeln!(
            o,
            "           {:<8} {:<16} {:<20} {:>8} {:>9} {:>8}  {:<9} {:>9} {:>9}   {:<24} {}",
            s.pid,
            s.comm,
            s.unit.clone().unwrap_or_else(|| s.cgroup.to_string()),
            s.old_attempts_since_cutover,
            s.old_open,
            s.old_open_before_cutover
                .map_or("-".into(), |n| n.to_string()),
            oldest,
            t(s.first_old_ms),
            t(s.last_old_ms),
            s.why(cut),
            netns.get(&s.pid).map_or(String::new(), |n| n.to_string())
        );
    }
    if st.stragglers_total > st.stragglers.len() {
        let _ = writeln!(
            o,
            "           ... and {} more",
            st.stragglers_total - st.stragglers.len()
        );
    }
    for (c, n) in Cause::ALL.iter().zip(st.per_cause) {
        if n > 0 {
            let who = if n == 1 { "process" } else { "processes" };
            let _ = writeln!(o, "fix        {}: {} ({n} {who})", c.as_str(), c.fix());
        }
    }
}

pub fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// A moment of the run as a postmortem quotes it: `14:23:05 UTC (+6.7 s)`; elapsed time only
/// when the recording has no start time.
pub fn at_time(started: Option<std::time::SystemTime>, ms: u64) -> String {
    match started {
        Some(t) => format!(
            "{} UTC (+{})",
            crate::ndjson::clock(t + std::time::Duration::from_millis(ms)),
            secs(ms)
        ),
        None => secs(ms),
    }
}

fn signed_secs(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// `--netns`/`--cgroup` of the run, from the meta line's `filter` (None: everything counted).
pub fn filter_line(f: &Value) -> Option<String> {
    let netns = f["netns"].as_u64().map(|ino| {
        let path = f["netns_path"].as_str().unwrap_or("?").to_string();
        (ino, path)
    });
    let cgroup = f["cgroup"].as_str().map(str::to_string);
    crate::kernel::filter::describe(netns, cgroup)
}

pub fn render(rec: &Recorded) -> String {
    let mut o = String::new();
    let st = &rec.state;
    let m = &rec.meta;
    let started = m["started_at"]
        .as_str()
        .and_then(crate::ndjson::parse_rfc3339);
    let when = |ms: u64| at_time(started, ms);
    let ended = match &rec.summary {
        Some(s) => format!("ended by {}", s["reason"].as_str().unwrap_or("?")),
        None => "no summary line: the run did not end cleanly (killed?)".into(),
    };
    let _ = writeln!(
        o,
        "run        {} on {}: {} recorded, {} snapshots every {} ms, {ended}",
        m["started_at"].as_str().unwrap_or("?"),
        m["host"].as_str().unwrap_or("?"),
        secs(st.now_ms),
        rec.snapshots,
        m["interval_ms"]
    );
    let _ = writeln!(
        o,
        "sets       old: {}   new: {}",
        list(&m["old"]),
        match rec.new_side.is_empty() {
            true => "-".to_string(),
            false => rec.new_side.join(", "),
        }
    );
    if let Some(f) = filter_line(&m["filter"]) {
        let _ = writeln!(o, "filter     {f}");
    }
    match &st.cutover {
        Some(c) => {
            let _ = writeln!(o, "cutover    {} (marked by {})", when(c.at_ms), c.source);
        }
        None => {
            let _ = writeln!(
                o,
                "cutover    none marked (--cutover-at, the c key or --watch-dns mark it): gaps cannot be given, crossings are shown from the start"
            );
        }
    }
    for g in &st.gaps {
        let what = format!("{} {}%", g.metric.name(), g.level);
        let line = match (g.holding, g.gap_ms, g.lost) {
            (Some(c), Some(gap), _) => format!(
                "{} (reached at {}, held)",
                signed_secs(gap),
                when(c.reached_ms)
            ),
            (Some(c), None, _) => format!(
                "reached at {} (no cutover to measure from)",
                when(c.reached_ms)
            ),
            (None, _, Some(l)) => format!(
                "not held: reached at {}, lost at {}",
                when(l.reached_ms),
                when(l.lost_ms.unwrap_or(0))
            ),
            (None, _, None) => format!("never reached for {HOLD} intervals in a row"),
        };
        let _ = writeln!(o, "gap        {what:<13} {line}");
    }
    let d = &st.drain;
    match d.drained_since {
        Some(since) => {
            let _ = writeln!(
                o,
                "drain      drained at {} (no open connections and no attempts for {} after it)",
                when(since),
                secs(d.quiet_for_ms)
            );
        }
        None => {
            let est = match &d.estimate {
                Estimate::At(ms) => format!(
                    "expected quiet at {}, to count as drained {} after that",
                    when(*ms),
                    secs(d.quiet_for_ms)
                ),
                Estimate::QuietSince(ms) => format!(
                    "quiet since {}: drained at {} if it stays quiet for --quiet-for {} (the recording ended before)",
                    when(*ms),
                    when(ms + d.quiet_for_ms),
                    secs(d.quiet_for_ms)
                ),
                Estimate::Pinned => format!(
                    "WILL NOT DRAIN BY ITSELF: {} (pinned, no fresh connects: recycle their pools)",
                    d.pinned_text(st.now_ms)
                ),
                Estimate::NotPossible(why) => format!("no estimate: {why}"),
            };
            let _ = writeln!(
                o,
                "drain      not drained at the end ({}): {} open, {} attempts in its last minute, last busy at {}; {est}",
                when(st.now_ms),
                d.old_open,
                d.attempts_last_minute,
                when(d.last_busy_ms)
            );
        }
    }
    if let Some(t) = rec.summary.as_ref().or(rec.last.as_ref()) {
        let _ = writeln!(
            o,
            "totals     cohort   attempts  established  failed   closed     open"
        );
        for c in ["old", "new", "other"] {
            let v = &t["cohorts"][c];
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                o,
                "           {c:<6} {:>10} {:>12} {:>7} {:>8} {:>8}",
                n("attempts"),
                n("established"),
                n("failed"),
                n("closed"),
                n("open")
            );
        }
    }
    if let Some(t) = rec.summary.as_ref().or(rec.last.as_ref()) {
        outcome_lines(&mut o, t);
    }
    if !st.old_destinations.is_empty() {
        let top: Vec<String> = st
            .old_destinations
            .iter()
            .take(5)
            .map(|(a, o)| format!("{a} ({} open, {} attempts)", o.open, o.attempts))
            .collect();
        let _ = writeln!(o, "old dests  {}", top.join(", "));
    }
    stragglers_text(&mut o, st, &rec.netns);
    if st.cutover.is_some() && rec.meta["hooks"]["dns"]["captured"] == false {
        let _ = writeln!(
            o,
            "           (DNS answers were not captured on this kernel: a stale resolver shows as dns_cache)"
        );
    }
    for c in &rec.dns_changes {
        let _ = writeln!(
            o,
            "dns        {}{} at {}: {} -> {} (ttl {} s{})",
            c["name"].as_str().unwrap_or("?"),
            c["server"]
                .as_str()
                .map(|s| format!(" @{s}"))
                .unwrap_or_default(),
            when(c["elapsed_ms"].as_u64().unwrap_or(0)),
            list(&c["old"]),
            list(&c["new"]),
            c["ttl"],
            if c["long_ttl"] == true {
                ", LONG: clients may keep the old answer"
            } else {
                ""
            }
        );
    }
    super::resolvers::text(
        &mut o,
        &super::resolvers::gaps(&rec.dns_servers, &rec.dns_changes, &rec.state.stragglers),
    );
    o
}

/// Failures by reason per cohort, and connect latency per side (cumulative over the run).
fn outcome_lines(o: &mut String, totals: &Value) {
    let f = outcomes::failures(totals);
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut head = "failures   cohort    failed".to_string();
    for r in Reason::ALL {
        let _ = write!(head, " {:>11}", r.name());
    }
    let _ = writeln!(o, "{head}");
    for c in ["old", "new", "other", "all"] {
        let _ = write!(o, "           {c:<6} {:>9}", n(&f[c]["failed"]));
        for r in Reason::ALL {
            let _ = write!(o, " {:>11}", n(&f[c]["by_reason"][r.name()]));
        }
        let _ = writeln!(o);
    }
    let l = outcomes::latency(totals);
    let _ = writeln!(
        o,
        "latency    cohort  connects    p50 <=    p90 <=    p99 <=  |  failed    p50 <=    p90 <=    p99 <="
    );
    let p = |v: &Value| v.as_u64().map_or("-".into(), fmt_us);
    for c in ["old", "new", "other"] {
        let (e, x) = (&l[c]["established"], &l[c]["failed"]);
        let _ = writeln!(
            o,
            "           {c:<6} {:>9} {:>9} {:>9} {:>9}  | {:>7} {:>9} {:>9} {:>9}",
            n(&e["count"]),
            p(&e["p50"]),
            p(&e["p90"]),
            p(&e["p99"]),
            n(&x["count"]),
            p(&x["p50"]),
            p(&x["p90"]),
            p(&x["p99"]),
        );
    }
}
