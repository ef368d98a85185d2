//! The fleet report as text: per host, the fleet's share over time, who still holds old.

use std::fmt::Write;

use super::fleet::{Fleet, fmt_ms};
use crate::model::analysis::gap::Metric;

fn signed(ms: i64) -> String {
    format!("{:+.1}s", ms as f64 / 1000.0)
}

fn pct(permille: Option<u32>) -> String {
    permille.map_or("-".into(), |p| format!("{:.1}%", p as f64 / 10.0))
}

/// `HH:MM:SS.mmm` of a Unix ms time (the date is in the header).
fn clock(ms: u64) -> String {
    fmt_ms(ms)[11..23].to_string()
}

pub fn render(f: &Fleet) -> String {
    let mut o = String::new();
    let end = f.hosts.iter().map(|h| h.end_ms).max().unwrap_or(f.t0_ms);
    let _ = writeln!(
        o,
        "fleet      {} hosts, {} .. {} (UTC)",
        f.hosts.len(),
        fmt_ms(f.t0_ms),
        fmt_ms(end)
    );
    let level = f.params.threshold;
    let first = f.first_cutover();
    match first {
        Some(c) => {
            let _ = writeln!(o, "cutover    first at {}", clock(c));
        }
        None => {
            let _ = writeln!(
                o,
                "cutover    none marked on any host: gaps and drain times are unknown"
            );
        }
    }
    for (metric, lvl, at) in &f.reached {
        let what = match (at, first) {
            (Some(a), Some(c)) => {
                format!("at {} (gap {})", clock(*a), signed(*a as i64 - c as i64))
            }
            (Some(a), None) => format!("at {}", clock(*a)),
            (None, _) => "not reached and held".into(),
        };
        let _ = writeln!(o, "fleet {:>2}%  of {:<8} {what}", lvl, metric.name());
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<20} {:>12} {:>12} {:>10} {:>10} {:>22} {:>8}",
        "host",
        "started",
        "cutover",
        format!("gap {level}%"),
        format!("open {level}%"),
        "drain",
        "old open"
    );
    for h in &f.hosts {
        let gap = |m: Metric| {
            h.gaps
                .iter()
                .find(|g| g.0 == m && g.1 == level)
                .and_then(|g| g.2)
                .map_or("-".into(), signed)
        };
        let drain = match (h.drained_ms, &h.cutover) {
            (Some(d), Some((c, _))) => format!("{} ({})", clock(d), signed(d as i64 - *c as i64)),
            (Some(d), None) => clock(d),
            (None, _) => "not drained".into(),
        };
        let _ = writeln!(
            o,
            "{:<20} {:>12} {:>12} {:>10} {:>10} {:>22} {:>8}",
            h.host,
            clock(h.started_ms),
            h.cutover.as_ref().map_or("-".into(), |c| clock(c.0)),
            gap(Metric::Attempts),
            gap(Metric::Open),
            drain,
            h.old_open
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "share on new, all hosts, {:.1} s steps (attempts in the step; open at its end)",
        f.step_ms as f64 / 1000.0
    );
    let _ = writeln!(
        o,
        "{:>12} {:>5} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7}",
        "until", "hosts", "att old", "att new", "share", "open old", "open new", "share"
    );
    for b in &f.buckets {
        let _ = writeln!(
            o,
            "{:>12} {:>5} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7}",
            clock(b.end_ms),
            b.hosts,
            b.old_attempts,
            b.new_attempts,
            pct(b.share_attempts()),
            b.old_open,
            b.new_open,
            pct(b.share_open())
        );
    }
    let _ = writeln!(o);
    let holding: Vec<_> = f.hosts.iter().filter(|h| h.holds_old()).collect();
    if holding.is_empty() {
        let _ = writeln!(
            o,
            "holding old: none (no host has old connections open at its end)"
        );
    }
    for h in holding {
        let who: Vec<String> = h
            .stragglers
            .iter()
            .take(3)
            .map(|s| format!("{} (pid {}, {} open)", s.comm, s.pid, s.old_open))
            .collect();
        let _ = writeln!(
            o,
            "holding old: {} with {} open at {}{}",
            h.host,
            h.old_open,
            clock(h.end_ms),
            if who.is_empty() {
                String::new()
            } else {
                format!(": {}", who.join(", "))
            }
        );
    }
    o
}
