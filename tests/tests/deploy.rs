//! The fleet files in `deploy/`: Debian's promtool checks and unit-tests the Prometheus rules
//! (`promtool test rules`), and no rule is left without a test. The Grafana dashboard's queries
//! are run against a real Prometheus in `metrics.rs`.

use std::{path::PathBuf, process::Command};

use tracer_tests::tool;

fn deploy(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(tool("promtool"))
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Names after `key:` on rule lines (`- alert: X`, `- record: X`).
fn names(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn promtool_checks_and_tests_the_shipped_rules() {
    let check = promtool(&["check", "rules", "tracer-rules.yml"]);
    let rules = std::fs::read_to_string(deploy("prometheus/tracer-rules.yml")).unwrap();
    let alerts = names(&rules, "alert:");
    let records = names(&rules, "record:");
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    assert!(
        check.contains(&format!(
            "SUCCESS: {} rules found",
            alerts.len() + records.len()
        )),
        "{check}"
    );
    let test = promtool(&["test", "rules", "tracer-rules.test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
    // Every rule is exercised: each alert by an alert_rule_test that expects it to fire, each
    // recording rule by a promql_expr_test of its name.
    let tests = std::fs::read_to_string(deploy("prometheus/tracer-rules.test.yml")).unwrap();
    let tested_alerts = names(&tests, "alertname:");
    for a in &alerts {
        assert!(
            tested_alerts.contains(a),
            "alert {a} has no alert_rule_test"
        );
    }
    let tested_exprs = names(&tests, "expr:");
    for r in &records {
        assert!(
            tested_exprs.contains(r),
            "recording rule {r} has no promql_expr_test"
        );
    }
}

#[test]
fn a_broken_rule_fails_the_rule_tests() {
    // The tests are not vacuous: a rule that fires at the wrong threshold makes them fail.
    let dir = tracer_tests::tmp_path("rules-mutated");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = std::fs::read_to_string(deploy("prometheus/tracer-rules.yml")).unwrap();
    let mutated = rules.replace(
        "tracer_map_fill_ratio > 0.9",
        "tracer_map_fill_ratio > 0.99",
    );
    assert_ne!(mutated, rules);
    std::fs::write(dir.join("tracer-rules.yml"), mutated).unwrap();
    std::fs::copy(
        deploy("prometheus/tracer-rules.test.yml"),
        dir.join("tracer-rules.test.yml"),
    )
    .unwrap();
    let out = Command::new(tool("promtool"))
        .args(["test", "rules", "tracer-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("TracerMapNearlyFull"), "{text}");
}
