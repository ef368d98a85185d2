//! The exposition checked with an independent parser (openmetrics-parser), in both formats:
//! names, types, HELP, label escaping, values equal to the snapshot's.

use std::{collections::BTreeMap, time::Duration};

use openmetrics_parser::{
    OpenMetricsType, OpenMetricsValue, PrometheusType, PrometheusValue, openmetrics, prometheus,
};

use super::*;
use crate::model::{
    counters::In,
    snapshot::{DestRow, MapUse, ProcRow},
};

/// Series name plus sorted labels, to its value.
type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Family name (as written in the metadata) to (type, help).
type Meta = BTreeMap<String, (String, String)>;

fn parse_prom(text: &str) -> (Series, Meta) {
    let exp = prometheus::parse_prometheus(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let mut series = Series::new();
    let mut meta = Meta::new();
    for (name, fam) in &exp.families {
        meta.insert(
            name.clone(),
            (fam.family_type.to_string(), fam.help.clone()),
        );
        for s in fam.iter_samples() {
            let v = match &s.value {
                PrometheusValue::Counter(c) => {
                    assert_eq!(fam.family_type, PrometheusType::Counter);
                    c.value.as_f64()
                }
                PrometheusValue::Gauge(g) => g.as_f64(),
                PrometheusValue::Histogram(h) => {
                    let labels = s.get_labelset().unwrap();
                    insert_histogram(&mut series, name, labels.iter(), h);
                    continue;
                }
                other => panic!("unexpected {other:?} in {name}"),
            };
            series.insert((name.clone(), sorted(s.get_labelset().unwrap().iter())), v);
        }
    }
    (series, meta)
}

fn parse_om(text: &str) -> (Series, Meta) {
    let exp = openmetrics::parse_openmetrics(text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let mut series = Series::new();
    let mut meta = Meta::new();
    for (name, fam) in &exp.families {
        meta.insert(
            name.clone(),
            (format!("{:?}", fam.family_type), fam.help.clone()),
        );
        let sample_name = match fam.family_type {
            OpenMetricsType::Counter => format!("{name}_total"),
            OpenMetricsType::Info => format!("{name}_info"),
            _ => name.clone(),
        };
        for s in fam.iter_samples() {
            let v = match &s.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Gauge(g) => g.as_f64(),
                OpenMetricsValue::Info => 1.0,
                OpenMetricsValue::Histogram(h) => {
                    let labels = s.get_labelset().unwrap();
                    insert_histogram(&mut series, name, labels.iter(), h);
                    continue;
                }
                other => panic!("unexpected {other:?} in {name}"),
            };
            series.insert(
                (
                    sample_name.clone(),
                    sorted(s.get_labelset().unwrap().iter()),
                ),
                v,
            );
        }
    }
    (series, meta)
}

/// Labels as a sorted list, the key both parsers' samples are compared by.
fn sorted<'a>(labels: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    let mut l: Vec<_> = labels.map(|(k, v)| (k.clone(), v.clone())).collect();
    l.sort();
    l
}

/// A parsed histogram as its `_bucket{le}`, `_sum` and `_count` series.
fn insert_histogram<'a>(
    series: &mut Series,
    name: &str,
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    h: &openmetrics_parser::HistogramValue,
) {
    let base: Vec<(String, String)> = labels
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let sorted = |mut l: Vec<(String, String)>| {
        l.sort();
        l
    };
    for b in &h.buckets {
        let mut l = base.clone();
        l.push(("le".into(), fmt_float(b.upper_bound)));
        series.insert((format!("{name}_bucket"), sorted(l)), b.count.as_f64());
    }
    let sum = h.sum.as_ref().expect("histogram has _sum").as_f64();
    series.insert((format!("{name}_sum"), sorted(base.clone())), sum);
    let count = h.count.expect("histogram has _count") as f64;
    series.insert((format!("{name}_count"), sorted(base)), count);
}

fn out(attempts: u64, established: u64, failed: u64, closed: u64, open: u64) -> Out {
    Out {
        attempts,
        established,
        failed,
        closed,
        open,
    }
}

fn snapshots() -> (Snapshot, Snapshot) {
    let mut prev = Snapshot::empty(SystemTime::UNIX_EPOCH);
    prev.out[Cohort::Old as usize] = out(300, 260, 40, 250, 10);
    prev.out[Cohort::New as usize] = out(100, 100, 0, 90, 10);
    let mut cur = prev.clone();
    cur.out[Cohort::Old as usize] = out(375, 325, 50, 315, 10);
    cur.out[Cohort::New as usize] = out(510, 510, 0, 500, 10);
    cur.out[Cohort::Other as usize] = out(7, 6, 1, 6, 0);
    // Reasons as the sampler gives them: they sum to `failed` (40 refused + 10 timeouts).
    cur.reasons[Cohort::Old as usize].0[0] = 40;
    cur.reasons[Cohort::Old as usize].0[1] = 10;
    cur.reasons[Cohort::Other as usize].0[0] = 1;
    cur.inb[Cohort::Old as usize] = In {
        accepted: 325,
        closed: 315,
        open: 50,
    };
    cur.destinations = ["127.10.0.1", "127.10.0.2", "127.20.0.1"]
        .iter()
        .enumerate()
        .map(|(i, a)| DestRow {
            addr: a.parse().unwrap(),
            cohort: if a.starts_with("127.10") {
                Cohort::Old
            } else {
                Cohort::New
            },
            out: out(10 * (i as u64 + 1), 0, 0, 0, i as u64),
        })
        .collect();
    cur.processes = vec![ProcRow {
        pid: 42,
        comm: "cu\"rl".into(),
        cgroup: 1,
        destinations: 1,
        cohort: Cohort::Old,
        out: out(12, 12, 0, 10, 2),
    }];
    cur.evicted.destinations = 744;
    cur.maps.destinations = MapUse {
        live: 256,
        capacity: 1024,
    };
    cur.lost_events = 3;
    cur.sample_duration = Duration::from_micros(1500);
    (cur, prev)
}

/// A user label value with every character that needs escaping.
const NASTY: &str = "fra\"1\\b\nc}{,=";

fn fixed(destinations: usize, processes: usize) -> Fixed {
    Fixed {
        version: "0.1.0".into(),
        connect_hook: "derived".into(),
        state_hook: "tracepoint".into(),
        unsent_hook: "cgroup+syscall".into(),
        labels: vec![("site".into(), NASTY.into())],
        destinations,
        processes,
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("site".to_string(), NASTY.to_string())])
        .collect();
    l.sort();
    (name.to_string(), l)
}

fn both(f: &Fixed, frame: Option<&Frame>, m: &Milestones) -> [(Series, Meta); 2] {
    let prom = render(f, frame, m, Format::Prometheus);
    let om = render(f, frame, m, Format::OpenMetrics);
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    assert!(!prom.contains("# EOF"));
    [parse_prom(&prom), parse_om(&om)]
}

#[test]
fn cohort_counters_parse_with_values_of_the_snapshot() {
    let (cur, prev) = snapshots();
    let frame = Frame {
        cur: &cur,
        prev: &prev,
        snapshots: 9,
    };
    for (series, _) in both(&fixed(0, 0), Some(&frame), &Milestones::default()) {
        let get = |name: &str, l: &[(&str, &str)]| {
            *series
                .get(&key(name, l))
                .unwrap_or_else(|| panic!("{name} {l:?} missing: {series:?}"))
        };
        for c in Cohort::ALL {
            let o = cur.cohort_out(c);
            let i = cur.cohort_in(c);
            let ob = [("cohort", c.name()), ("direction", "outbound")];
            let ib = [("cohort", c.name()), ("direction", "inbound")];
            assert_eq!(
                get("tracer_connection_attempts_total", &ob),
                o.attempts as f64
            );
            assert_eq!(
                get("tracer_connections_established_total", &ob),
                o.established as f64
            );
            assert_eq!(
                get("tracer_connections_established_total", &ib),
                i.accepted as f64
            );
            let by_reason: f64 = crate::model::failures::Reason::ALL
                .iter()
                .map(|r| {
                    let l = [
                        ("cohort", c.name()),
                        ("direction", "outbound"),
                        ("reason", r.name()),
                    ];
                    get("tracer_connections_failed_total", &l)
                })
                .sum();
            assert_eq!(by_reason, o.failed as f64, "reasons sum to failed");
            assert_eq!(get("tracer_connections_closed_total", &ob), o.closed as f64);
            assert_eq!(get("tracer_connections_closed_total", &ib), i.closed as f64);
            assert_eq!(get("tracer_connections_open", &ob), o.open as f64);
            assert_eq!(get("tracer_connections_open", &ib), i.open as f64);
            // Attempts and failures are outbound only: inbound has no such series.
            assert!(!series.contains_key(&key("tracer_connection_attempts_total", &ib)));
        }
        // Share of the interval: new 410 of 410 + 75 attempts; of open: 10 of 20.
        let share = get("tracer_new_share_ratio", &[("basis", "attempts")]);
        assert!((share - 410.0 / 485.0).abs() < 1e-12, "{share}");
        assert_eq!(get("tracer_new_share_ratio", &[("basis", "open")]), 0.5);
        assert_eq!(
            get("tracer_evictions_total", &[("map", "destinations")]),
            744.0
        );
        assert_eq!(
            get("tracer_map_fill_ratio", &[("map", "destinations")]),
            0.25
        );
        assert_eq!(get("tracer_lost_events_total", &[]), 3.0);
        assert_eq!(get("tracer_snapshots_total", &[]), 9.0);
        assert_eq!(get("tracer_sample_duration_seconds", &[]), 0.0015);
        assert_eq!(
            get(
                "tracer_hooks_info",
                &[
                    ("connect", "derived"),
                    ("state", "tracepoint"),
                    ("unsent", "cgroup+syscall")
                ]
            ),
            1.0
        );
        assert_eq!(get("tracer_build_info", &[("version", "0.1.0")]), 1.0);
        // Opt-in series are absent by default; milestones absent until known.
        assert!(
            series
                .keys()
                .all(|(n, _)| !n.starts_with("tracer_destination")
                    && !n.starts_with("tracer_process")
                    && !n.starts_with("tracer_cutover"))
        );
    }
}

#[test]
fn types_and_help_of_every_family() {
    let (cur, prev) = snapshots();
    let frame = Frame {
        cur: &cur,
        prev: &prev,
        snapshots: 1,
    };
    let [(prom, pmeta), (om, ometa)] = both(&fixed(2, 1), Some(&frame), &Milestones::default());
    assert_eq!(prom, om, "both formats carry the same series and values");
    for (name, (ty, help)) in &pmeta {
        assert!(name.starts_with("tracer_"), "{name}");
        assert!(!help.is_empty(), "{name} has HELP");
        match ty.as_str() {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "gauge" => assert!(!name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            other => panic!("{name}: type {other}"),
        }
    }
    let ty = |n: &str| ometa.get(n).map(|m| m.0.as_str()).unwrap_or("missing");
    assert_eq!(ty("tracer_connection_attempts"), "Counter");
    assert_eq!(ty("tracer_connections_open"), "Gauge");
    assert_eq!(ty("tracer_build"), "Info");
    assert_eq!(ty("tracer_hooks"), "Info");
    assert_eq!(ty("tracer_connect_latency_seconds"), "Histogram");
    assert_eq!(pmeta["tracer_build_info"].0, "gauge");
}

#[test]
fn label_values_are_escaped_and_round_trip() {
    let (cur, prev) = snapshots();
    let frame = Frame {
        cur: &cur,
        prev: &prev,
        snapshots: 1,
    };
    let text = render(
        &fixed(0, 1),
        Some(&frame),
        &Milestones::default(),
        Format::Prometheus,
    );
    assert!(text.contains(r#"site="fra\"1\\b\nc}{,=""#), "{text}");
    assert!(text.contains(r#"comm="cu\"rl""#), "{text}");
    // Every sample line is one line: the newline in the value is escaped.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(l.starts_with("tracer_"), "{l}");
    }
    for (series, _) in both(&fixed(0, 1), Some(&frame), &Milestones::default()) {
        let k = key(
            "tracer_process_connections_open",
            &[("pid", "42"), ("comm", "cu\"rl"), ("cohort", "old")],
        );
        assert_eq!(series.get(&k), Some(&2.0), "{series:?}");
    }
}

#[test]
fn destinations_are_the_top_n_only() {
    let (cur, prev) = snapshots();
    let frame = Frame {
        cur: &cur,
        prev: &prev,
        snapshots: 1,
    };
    for (series, _) in both(&fixed(2, 0), Some(&frame), &Milestones::default()) {
        let mut dests: Vec<_> = series
            .iter()
            .filter(|((n, _), _)| n == "tracer_destination_connections_open")
            .map(|((_, l), v)| {
                let addr = l.iter().find(|(k, _)| k == "destination").unwrap();
                (addr.1.clone(), *v)
            })
            .collect();
        dests.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            dests,
            [("127.10.0.2".to_string(), 1.0), ("127.20.0.1".into(), 2.0)]
        );
    }
}

#[test]
fn share_is_absent_without_traffic_and_milestones_when_known() {
    let quiet = Snapshot::empty(SystemTime::UNIX_EPOCH);
    let frame = Frame {
        cur: &quiet,
        prev: &quiet,
        snapshots: 1,
    };
    let m = Milestones {
        cutover: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        gaps: vec![("attempts", 95, 2.5), ("open", 99, -1.0)],
        drained: Some(false),
        stragglers: Some(vec![("pinned", 2), ("dns_cache", 0), ("stale_resolver", 1)]),
    };
    for (series, meta) in both(&fixed(0, 0), Some(&frame), &m) {
        assert!(series.keys().all(|(n, _)| n != "tracer_new_share_ratio"));
        assert!(
            !meta.contains_key("tracer_new_share_ratio"),
            "no HELP either"
        );
        assert_eq!(
            series[&key("tracer_cutover_time_seconds", &[])],
            1_700_000_000.0
        );
        let gap = |basis, level| {
            series[&key(
                "tracer_declaration_gap_seconds",
                &[("basis", basis), ("level", level)],
            )]
        };
        assert_eq!((gap("attempts", "95"), gap("open", "99")), (2.5, -1.0));
        assert_eq!(series[&key("tracer_old_drained", &[])], 0.0);
        let by = |c| series[&key("tracer_stragglers", &[("cause", c)])];
        assert_eq!(
            (by("pinned"), by("dns_cache"), by("stale_resolver")),
            (2.0, 0.0, 1.0)
        );
    }
}

#[test]
fn before_the_first_sample_only_build_info() {
    let f = Fixed {
        version: "0.1.0".into(),
        ..Default::default()
    };
    let text = render(&f, None, &Milestones::default(), Format::OpenMetrics);
    let (series, _) = parse_om(&text);
    assert_eq!(series.len(), 1, "{text}");
    assert_eq!(
        series.keys().next().unwrap().0,
        "tracer_build_info".to_string()
    );
}

#[test]
fn negotiation_prefers_openmetrics_when_accepted() {
    // What Prometheus 2.x sends.
    let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(Format::from_accept(prom), Format::OpenMetrics);
    assert_eq!(Format::from_accept("*/*"), Format::Prometheus);
    assert_eq!(Format::from_accept(""), Format::Prometheus);
    assert!(Format::OpenMetrics.content_type().contains("version=1.0.0"));
}

#[test]
fn latency_is_a_histogram_per_cohort_from_the_log2_buckets() {
    let (mut cur, prev) = snapshots();
    // Old: 3 connects in bucket 15 (32-65 us), 1 in bucket 29 (~1 s); new: 2 in bucket 5,
    // below the first exported bucket.
    let h = &mut cur.latency[Cohort::Old as usize].established;
    h.0[15] = 3;
    h.0[29] = 1;
    cur.latency[Cohort::New as usize].established.0[5] = 2;
    let frame = Frame {
        cur: &cur,
        prev: &prev,
        snapshots: 9,
    };
    let le = |i: usize| fmt_float(crate::model::latency::bucket_upper_s(i));
    for (series, meta) in both(&fixed(0, 0), Some(&frame), &Milestones::default()) {
        let name = "tracer_connect_latency_seconds";
        let bucket = |cohort, le: &str| {
            series[&key(&format!("{name}_bucket"), &[("cohort", cohort), ("le", le)])]
        };
        assert_eq!(bucket("old", &le(14)), 0.0);
        assert_eq!(bucket("old", &le(15)), 3.0);
        assert_eq!(bucket("old", &le(28)), 3.0);
        assert_eq!(bucket("old", &le(29)), 4.0);
        assert_eq!(bucket("old", "+Inf"), 4.0);
        assert_eq!(
            bucket("new", &le(9)),
            2.0,
            "shorter ones are in the first bucket"
        );
        assert_eq!(bucket("other", "+Inf"), 0.0);
        let count = |c| series[&key(&format!("{name}_count"), &[("cohort", c)])];
        assert_eq!(
            (count("old"), count("new"), count("other")),
            (4.0, 2.0, 0.0)
        );
        let sum = series[&key(&format!("{name}_sum"), &[("cohort", "old")])];
        let want = cur.latency[Cohort::Old as usize].established.approx_sum_s();
        assert!((sum - want).abs() < 1e-12, "{sum} vs {want}");
        let (kind, help) = &meta[name];
        assert!(kind.to_lowercase().contains("histogram"), "{kind}");
        assert!(help.contains("midpoints"), "{help}");
    }
}

#[test]
fn milestones_come_from_the_analysis_state() {
    use crate::model::analysis::{Analysis, Params, Sample};
    let mut a = Analysis::new(Params::default());
    a.mark_cutover(1000, crate::model::analysis::cutover::CutoverSource::Flag);
    for i in 1..=4u64 {
        a.feed(Sample {
            elapsed_ms: 1000 + i * 1000,
            new_attempts: 10,
            ..Default::default()
        });
    }
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
    let m = super::super::milestones(&a.state(), start);
    assert_eq!(m.cutover, Some(start + Duration::from_millis(1000)));
    // Reached at the start of the first interval of the streak (0 ms, the run's start), one
    // second before the cutover at 1 s: a negative gap, at both levels.
    assert_eq!(m.gaps, [("attempts", 95, -1.0), ("attempts", 99, -1.0)]);
    assert_eq!(m.drained, Some(false));
}
