//! `tracer report A.ndjson B.ndjson ...`: one recording per host merged into the fleet's story.
//! Each file is replayed on its own (so every host's cutover, gap and drain are exactly what
//! its single report says), then put on the wall clock through its `started_at`, and the
//! snapshots of all hosts are summed into steps (`model::fleet`).

use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::Recorded;
use crate::{
    model::{
        analysis::{Params, gap::Metric, stragglers::Straggler},
        fleet::{self, Bucket, HostPoint},
    },
    ndjson::{SCHEMA, writer},
};

/// Steps the text report aims at when no `--step` is given.
const ROWS: u64 = 60;

/// One host's figures, on the wall clock (Unix ms).
#[derive(Clone, Debug)]
pub struct Host {
    pub file: String,
    pub host: String,
    pub started_ms: u64,
    pub end_ms: u64,
    pub interval_ms: u64,
    pub snapshots: u64,
    pub cutover: Option<(u64, String)>,
    /// (metric, level, gap in ms) as the host's own analysis found them.
    pub gaps: Vec<(Metric, u32, Option<i64>)>,
    pub drained_ms: Option<u64>,
    /// Outbound connections to the old side open at the last snapshot.
    pub old_open: u64,
    pub stragglers: Vec<Straggler>,
    /// The same as the single-file report's JSON writes them.
    pub stragglers_json: Value,
}

impl Host {
    /// Still holds connections to the old side at the end of its recording (whether it is
    /// drained, quiet for `--quiet-for`, is told apart in `drained_ms`).
    pub fn holds_old(&self) -> bool {
        self.old_open > 0
    }
}

/// The merged story.
pub struct Fleet {
    pub hosts: Vec<Host>,
    pub params: Params,
    pub t0_ms: u64,
    pub step_ms: u64,
    pub buckets: Vec<Bucket>,
    /// (metric, level, when the fleet reached it and held) for each level.
    pub reached: Vec<(Metric, u32, Option<u64>)>,
}

impl Fleet {
    /// The first cutover any host marked.
    pub fn first_cutover(&self) -> Option<u64> {
        self.hosts
            .iter()
            .filter_map(|h| h.cutover.as_ref())
            .map(|c| c.0)
            .min()
    }
}

/// Unix ms of an RFC 3339 time.
pub fn parse_ms(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// RFC 3339 UTC with milliseconds.
pub fn fmt_ms(ms: u64) -> String {
    crate::ndjson::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

fn host(file: &str, rec: &Recorded) -> Result<(Host, Vec<HostPoint>), String> {
    let started_ms = rec.meta["started_at"]
        .as_str()
        .and_then(parse_ms)
        .ok_or_else(|| format!("{file}: the meta line has no RFC 3339 started_at: give NDJSON written by `tracer watch --json`"))?;
    let st = &rec.state;
    let at = |ms: u64| started_ms + ms;
    let points = rec
        .series
        .iter()
        .map(|p| HostPoint {
            at_ms: at(p.ms),
            old_attempts: p.old_attempts,
            new_attempts: p.new_attempts,
            old_open: p.old_open,
            new_open: p.new_open,
        })
        .collect();
    let h = Host {
        file: file.to_string(),
        host: rec.meta["host"].as_str().unwrap_or("?").to_string(),
        started_ms,
        end_ms: at(st.now_ms),
        interval_ms: rec.meta["interval_ms"].as_u64().unwrap_or(1000),
        snapshots: rec.snapshots,
        cutover: st
            .cutover
            .as_ref()
            .map(|c| (at(c.at_ms), c.source.name().to_string())),
        gaps: st
            .gaps
            .iter()
            .map(|g| (g.metric, g.level, g.gap_ms))
            .collect(),
        drained_ms: st.drain.drained_since.map(at),
        old_open: rec.series.last().map_or(0, |p| p.old_open),
        stragglers: st.stragglers.clone(),
        stragglers_json: writer::state_json(st)["stragglers"].clone(),
    };
    Ok((h, points))
}

/// Merge replayed recordings (file name, run). `step_ms` None: the largest interval of the
/// hosts, made coarser until the run fits about `ROWS` steps.
pub fn merge(runs: &[(String, Recorded)], step_ms: Option<u64>) -> Result<Fleet, String> {
    let mut hosts = vec![];
    let mut series = vec![];
    for (file, rec) in runs {
        let (h, pts) = host(file, rec)?;
        hosts.push(h);
        series.push(pts);
    }
    // Two recordings of one host (or hosts of one name): tell them apart by file.
    let names: Vec<String> = hosts.iter().map(|h: &Host| h.host.clone()).collect();
    for h in hosts.iter_mut() {
        if names.iter().filter(|n| **n == h.host).count() > 1 {
            h.host = format!("{} ({})", h.host, h.file);
        }
    }
    let t0_ms = hosts.iter().map(|h| h.started_ms).min().unwrap_or(0);
    let end = hosts.iter().map(|h| h.end_ms).max().unwrap_or(t0_ms);
    let step_ms = step_ms.unwrap_or_else(|| {
        let base = hosts
            .iter()
            .map(|h| h.interval_ms)
            .max()
            .unwrap_or(1000)
            .max(1);
        base * (end - t0_ms).div_ceil(base * ROWS).max(1)
    });
    let buckets = fleet::buckets(&series, t0_ms, step_ms);
    let params = runs.first().map(|r| r.1.params).unwrap_or_default();
    let mut reached = vec![];
    for metric in [Metric::Attempts, Metric::Open] {
        for level in params.levels() {
            reached.push((
                metric,
                level,
                fleet::reached(&buckets, t0_ms, metric, level),
            ));
        }
    }
    Ok(Fleet {
        hosts,
        params,
        t0_ms,
        step_ms,
        buckets,
        reached,
    })
}

/// The fleet report as one JSON object (times RFC 3339 and Unix ms).
pub fn to_json(f: &Fleet) -> Value {
    let first = f.first_cutover();
    let hosts: Vec<Value> = f
        .hosts
        .iter()
        .map(|h| {
            json!({
                "file": h.file, "host": h.host, "started_at": fmt_ms(h.started_ms),
                "started_ms": h.started_ms, "offset_ms": h.started_ms - f.t0_ms,
                "end_ms": h.end_ms, "interval_ms": h.interval_ms, "snapshots": h.snapshots,
                "cutover": h.cutover.as_ref().map(|(ms, src)| json!({"at": fmt_ms(*ms), "at_ms": ms, "source": src})),
                "gaps": h.gaps.iter().map(|(m, l, g)| json!({"metric": m.name(), "level": l, "gap_ms": g})).collect::<Vec<_>>(),
                "drained_ms": h.drained_ms,
                "drain_ms": h.drained_ms.zip(h.cutover.as_ref()).map(|(d, c)| d as i64 - c.0 as i64),
                "old_open": h.old_open,
                "holds_old": h.holds_old(),
                "stragglers": h.stragglers_json,
            })
        })
        .collect();
    let series: Vec<Value> = f
        .buckets
        .iter()
        .map(|b| {
            json!({"end": fmt_ms(b.end_ms), "end_ms": b.end_ms, "hosts": b.hosts,
                   "attempts": {"old": b.old_attempts, "new": b.new_attempts, "share_permille": b.share_attempts()},
                   "open": {"old": b.old_open, "new": b.new_open, "share_permille": b.share_open()}})
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "fleet": {
            "hosts": f.hosts.len(), "start_ms": f.t0_ms, "step_ms": f.step_ms,
            "first_cutover_ms": first,
            "reached": f.reached.iter().map(|(m, l, at)| json!({
                "metric": m.name(), "level": l, "at_ms": at,
                "gap_ms": at.zip(first).map(|(a, c)| a as i64 - c as i64)})).collect::<Vec<_>>(),
            "holding_old": f.hosts.iter().filter(|h| h.holds_old()).map(|h| h.host.clone()).collect::<Vec<_>>(),
        },
        "hosts": hosts,
        "series": series,
    })
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
