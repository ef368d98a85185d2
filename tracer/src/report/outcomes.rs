//! How the connects of each side ended over the run: failures by reason and connect latency,
//! read from the summary's cohorts (else the last snapshot's): both are cumulative since start.

use serde_json::{Map, Value, json};

use crate::model::failures::Reason;

const COHORTS: [&str; 3] = ["old", "new", "other"];

/// `{"old": {"failed": N, "by_reason": {...}}, .., "all": {...}}`: per cohort, and summed.
pub fn failures(totals: &Value) -> Value {
    let mut out = Map::new();
    let mut all = [0u64; Reason::ALL.len()];
    let mut all_failed = 0;
    for c in COHORTS {
        let v = &totals["cohorts"][c];
        let failed = v["failed"].as_u64().unwrap_or(0);
        all_failed += failed;
        let mut by = Map::new();
        for (i, r) in Reason::ALL.iter().enumerate() {
            let n = v["failed_by_reason"][r.name()].as_u64().unwrap_or(0);
            all[i] += n;
            by.insert(r.name().into(), json!(n));
        }
        out.insert(c.into(), json!({"failed": failed, "by_reason": by}));
    }
    let by: Map<String, Value> = Reason::ALL
        .iter()
        .zip(all)
        .map(|(r, n)| (r.name().to_string(), json!(n)))
        .collect();
    out.insert("all".into(), json!({"failed": all_failed, "by_reason": by}));
    Value::Object(out)
}

/// `{"old": {"established": {count,p50,p90,p99}, "failed": {..}}, ..}` in microseconds (upper
/// bounds of log2 buckets, null while a count is 0), as the NDJSON has them.
pub fn latency(totals: &Value) -> Value {
    let pick = |v: &Value| json!({"count": v["count"].as_u64().unwrap_or(0), "p50": v["p50"], "p90": v["p90"], "p99": v["p99"]});
    COHORTS
        .iter()
        .map(|c| {
            let v = &totals["cohorts"][c];
            let sides = json!({"established": pick(&v["latency_us"]), "failed": pick(&v["failed_latency_us"])});
            (c.to_string(), sides)
        })
        .collect::<Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_add_up_per_cohort_and_over_all() {
        let t = json!({"cohorts": {
            "old": {"failed": 7, "failed_by_reason": {"refused": 5, "timeout": 2}},
            "new": {"failed": 1, "failed_by_reason": {"refused": 1}},
        }});
        let f = failures(&t);
        assert_eq!(f["old"]["failed"], 7);
        assert_eq!(f["old"]["by_reason"]["timeout"], 2);
        assert_eq!(f["old"]["by_reason"]["aborted"], 0);
        assert_eq!(f["other"]["failed"], 0);
        assert_eq!(f["all"]["failed"], 8);
        assert_eq!(f["all"]["by_reason"]["refused"], 6);
        let l = latency(&t);
        assert_eq!(l["old"]["established"]["count"], 0);
        assert!(l["old"]["established"]["p50"].is_null());
    }
}
