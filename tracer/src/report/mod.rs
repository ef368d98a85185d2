//! `tracer report FILE.ndjson`: replay a recorded run through the same analysis the live run
//! uses, then print it as text or JSON, and optionally draw it as SVG.

mod fleet;
mod fleet_text;
mod outcomes;
mod resolvers;
mod svg;
mod text;

use std::{io::Read, io::Write, path::Path};

use serde_json::{Value, json};

use crate::{
    cli::ReportArgs,
    error::{Error, Result},
    model::analysis::{
        Analysis, Finding, Params, State, cutover::CutoverSource, gap::share_permille,
    },
    ndjson::{SCHEMA, reader, writer},
};

/// One point of the time series the SVG draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub ms: u64,
    /// New-side share of attempts and of open connections, per mille.
    pub share_attempts: Option<u32>,
    pub share_open: Option<u32>,
    /// Open connections to the old side (the drain panel).
    pub old_open: u64,
    /// Connects per second on each side over the interval.
    pub old_rate: f64,
    pub new_rate: f64,
    /// The counts behind them (the fleet report sums these across hosts).
    pub old_attempts: u64,
    pub new_attempts: u64,
    pub new_open: u64,
}

/// A recorded run, replayed.
pub struct Recorded {
    pub meta: Value,
    pub params: Params,
    pub state: State,
    pub findings: Vec<(u64, Finding)>,
    pub series: Vec<Point>,
    pub summary: Option<Value>,
    /// The last snapshot line (totals when there is no summary).
    pub last: Option<Value>,
    pub dns_changes: Vec<Value>,
    /// `dns_servers` and `dns_stale` events (`--dns-server`).
    pub dns_servers: Vec<Value>,
    pub snapshots: u64,
    /// The new side as it ended: the meta line's, plus what DNS changes added.
    pub new_side: Vec<String>,
    /// Set when the recording ends in a partial line (a killed run): what was left out.
    pub warning: Option<String>,
    /// Network namespace inode per pid, from the snapshots' process rows.
    pub netns: std::collections::BTreeMap<u32, u64>,
}

/// Replay NDJSON text. Errors name the line and what is wrong with it; a truncated last
/// line (a killed run) is left out with a warning.
pub fn replay(text: &str) -> Result<Recorded, String> {
    let read = reader::lines(text)?;
    let mut lines = read.lines.into_iter();
    let (no, meta) = lines.next().ok_or(
        "the file is empty or holds no complete line: give the NDJSON file `tracer watch --json` wrote",
    )?;
    if meta["type"] != "meta" {
        return Err(format!(
            "line {no}: the first line must be a tracer meta line (\"type\":\"meta\"): this is not NDJSON written by `tracer watch --json`"
        ));
    }
    match meta["schema"].as_u64() {
        Some(s) if s <= SCHEMA => {}
        other => {
            return Err(format!(
                "line {no}: schema {} is not known to this tracer (knows {SCHEMA}): use a newer tracer",
                other.map_or("missing".into(), |s| s.to_string())
            ));
        }
    }
    let params = reader::params_from_json(&meta["analysis"]);
    let mut analysis = Analysis::new(params);
    analysis.census(&reader::owners_from_json(&meta["census_owners"]));
    let new_side = meta["new"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut rec = Recorded {
        meta: Value::Null,
        params,
        state: analysis.state(),
        findings: vec![],
        series: vec![],
        summary: None,
        last: None,
        dns_changes: vec![],
        dns_servers: vec![],
        snapshots: 0,
        new_side,
        warning: read.warning,
        netns: Default::default(),
    };
    let mut prev_ms = 0u64;
    for (no, v) in lines {
        if rec.summary.is_some() {
            return Err(format!(
                "line {no}: a line after the summary: two runs in one file? give one run per file"
            ));
        }
        match v["type"].as_str() {
            Some("snapshot") => {
                let s = reader::sample_from_json(&v)
                    .map_err(|e| format!("line {no}: bad snapshot: {e}"))?;
                let secs = (s.elapsed_ms.saturating_sub(prev_ms)).max(1) as f64 / 1000.0;
                prev_ms = s.elapsed_ms;
                rec.series.push(Point {
                    ms: s.elapsed_ms,
                    share_attempts: share_permille(s.old_attempts, s.new_attempts),
                    share_open: share_permille(s.old.open, s.new.open),
                    old_open: s.old.open,
                    old_rate: s.old_attempts as f64 / secs,
                    new_rate: s.new_attempts as f64 / secs,
                    old_attempts: s.old_attempts,
                    new_attempts: s.new_attempts,
                    new_open: s.new.open,
                });
                let at = s.elapsed_ms;
                rec.findings
                    .extend(analysis.feed(s).into_iter().map(|f| (at, f)));
                rec.snapshots += 1;
                for p in v["processes"].as_array().into_iter().flatten() {
                    if let (Some(pid), Some(ns)) = (p["pid"].as_u64(), p["netns"].as_u64()) {
                        rec.netns.insert(pid as u32, ns);
                    }
                }
                rec.last = Some(v);
            }
            Some("event") => {
                let at = v["elapsed_ms"].as_u64().unwrap_or(prev_ms);
                match v["kind"].as_str() {
                    Some("cutover") => {
                        let source = CutoverSource::parse(v["source"].as_str().unwrap_or(""));
                        rec.findings.extend(
                            analysis
                                .mark_cutover(at, source)
                                .into_iter()
                                .map(|f| (at, f)),
                        );
                    }
                    Some(crate::dns_answer::EVENT) => {
                        if let Some(a) = crate::dns_answer::old_answer_of_event(&v) {
                            analysis.old_answer(a);
                        }
                    }
                    Some("dns_change") => {
                        if let Some(t) = v["ttl"].as_u64() {
                            analysis.dns_ttl(t as u32);
                        }
                        for p in v["added_to_new"].as_array().into_iter().flatten() {
                            if let Some(p) = p.as_str()
                                && !rec.new_side.iter().any(|x| x == p)
                            {
                                rec.new_side.push(p.to_string());
                            }
                        }
                        rec.dns_changes.push(v)
                    }
                    Some("dns_servers" | "dns_stale") => rec.dns_servers.push(v),
                    _ => {}
                }
            }
            Some("summary") => rec.summary = Some(v),
            // Forward compatible: line types of later versions are skipped.
            _ => {}
        }
    }
    rec.state = analysis.state();
    rec.meta = meta;
    Ok(rec)
}

/// The recording's text: a file, or standard input for `-`.
fn read(path: &Path) -> Result<String> {
    let name = if path == Path::new("-") {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let mut bytes = vec![];
    let r = if path == Path::new("-") {
        std::io::stdin().lock().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    r.map_err(|e| {
        Error::usage(format!(
            "cannot read {name}: {e}: give the NDJSON file `tracer watch --json` wrote"
        ))
    })?;
    String::from_utf8(bytes).map_err(|e| {
        Error::usage(format!("{name} is not text (invalid UTF-8 at byte {}): give the NDJSON file `tracer watch --json` wrote", e.utf8_error().valid_up_to()))
    })
}

/// The report as one JSON object.
pub fn to_json(rec: &Recorded) -> Value {
    let totals = rec.summary.as_ref().or(rec.last.as_ref());
    json!({
        "schema": SCHEMA,
        "run": {"started_at": rec.meta["started_at"], "host": rec.meta["host"],
                "interval_ms": rec.meta["interval_ms"], "snapshots": rec.snapshots,
                "end_ms": rec.state.now_ms,
                "ended": rec.summary.as_ref().map(|s| s["reason"].clone())},
        "sets": {"old": rec.meta["old"], "new": rec.new_side, "resolved": rec.meta["resolved"]},
        "filter": rec.meta["filter"],
        "params": writer::params_json(&rec.params),
        "analysis": writer::state_json(&rec.state),
        "totals": totals.map(|t| json!({"cohorts": t["cohorts"], "inbound": t["inbound"]})),
        "failures": totals.map(outcomes::failures),
        "latency_us": totals.map(outcomes::latency),
        "dns_changes": rec.dns_changes,
        "resolvers": resolvers::gaps(&rec.dns_servers, &rec.dns_changes, &rec.state.stragglers),
        "warning": rec.warning,
    })
}

/// Read and replay one file; errors name it.
fn load(path: &Path) -> Result<Recorded> {
    let text = read(path)?;
    let rec = replay(&text).map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
    if let Some(w) = &rec.warning {
        eprintln!("tracer: warning: {}: {w}", path.display());
    }
    Ok(rec)
}

/// Several files: the fleet report.
fn run_fleet(args: &ReportArgs) -> Result<String> {
    if args.svg.is_some() {
        return Err(Error::usage(
            "--svg draws one run: give one file with --svg, or leave --svg out for the fleet report",
        ));
    }
    let mut runs = vec![];
    for p in &args.files {
        runs.push((p.display().to_string(), load(p)?));
    }
    let step = args.step.map(|d| d.as_millis() as u64);
    if step == Some(0) {
        return Err(Error::usage(
            "--step 0: give a step of 1ms or more, e.g. --step 10s",
        ));
    }
    let f = fleet::merge(&runs, step).map_err(Error::usage)?;
    Ok(if args.json {
        serde_json::to_string_pretty(&fleet::to_json(&f)).unwrap_or_default() + "\n"
    } else {
        fleet_text::render(&f)
    })
}

fn run_one(args: &ReportArgs) -> Result<String> {
    if args.step.is_some() {
        return Err(Error::usage(
            "--step is for the fleet report: give two or more files, or leave --step out",
        ));
    }
    let rec = load(&args.files[0])?;
    if let Some(out) = &args.svg {
        let svg = svg::render(&rec);
        std::fs::write(out, svg).map_err(|e| {
            Error::usage(format!(
                "cannot write --svg {}: {e}: choose a writable path",
                out.display()
            ))
        })?;
    }
    Ok(if args.json {
        serde_json::to_string_pretty(&to_json(&rec)).unwrap_or_default() + "\n"
    } else {
        text::render(&rec)
    })
}

pub fn run(args: ReportArgs) -> Result<i32> {
    let out = if args.files.len() > 1 {
        run_fleet(&args)?
    } else {
        run_one(&args)?
    };
    // A closed pipe (`| head`) is the reader's choice, not an error.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::runtime(format!("cannot write the report: {e}")))
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests;
