//! The analysis on synthetic snapshot series, one per interval of 1 s.

use super::*;

/// Builds cumulative samples from per-interval figures, as the sampler would.
struct Series {
    ms: u64,
    old: Out,
    new: Out,
}

impl Series {
    fn new() -> Self {
        Series {
            ms: 0,
            old: Out::default(),
            new: Out::default(),
        }
    }

    /// One 1 s interval: attempts on each side, and the open gauges at its end.
    fn next(&mut self, old_att: u64, new_att: u64, old_open: u64, new_open: u64) -> Sample {
        self.ms += 1000;
        self.old.attempts += old_att;
        self.new.attempts += new_att;
        self.old.open = old_open;
        self.new.open = new_open;
        Sample {
            elapsed_ms: self.ms,
            old: self.old,
            new: self.new,
            old_attempts: old_att,
            new_attempts: new_att,
            processes: vec![],
            old_destinations: vec![],
        }
    }
}

fn params(quiet_s: u64) -> Params {
    Params {
        threshold: 95,
        quiet_for_ms: quiet_s * 1000,
        ttl_ms: None,
    }
}

fn gaps(f: &[Finding]) -> Vec<(Metric, u32, i64)> {
    f.iter()
        .filter_map(|f| match f {
            Finding::Gap {
                metric,
                level,
                gap_ms,
                ..
            } => Some((*metric, *level, *gap_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn levels_are_the_threshold_and_99() {
    assert_eq!(params(1).levels(), [95, 99]);
    let p = Params {
        threshold: 99,
        ..params(1)
    };
    assert_eq!(p.levels(), [99]);
}

#[test]
fn a_full_failover_gives_gaps_and_a_drain_time() {
    let mut a = Analysis::new(params(3));
    let mut s = Series::new();
    let mut found = vec![];
    // 5 s all old (pool of 20 open), cutover at 5.5 s, attempts move at 7 s, pool closes at 12 s.
    for _ in 0..5 {
        found.extend(a.feed(s.next(100, 0, 20, 0)));
    }
    found.extend(a.mark_cutover(5_500, crate::model::analysis::cutover::CutoverSource::Flag));
    found.extend(a.feed(s.next(100, 0, 20, 0))); // 6 s
    found.extend(a.feed(s.next(50, 50, 20, 0))); // 7 s
    for _ in 0..4 {
        found.extend(a.feed(s.next(0, 100, 20, 2))); // 8..11 s
    }
    for _ in 0..6 {
        found.extend(a.feed(s.next(0, 100, 0, 2))); // 12..17 s
    }
    let g = gaps(&found);
    // Dated at the start of the first interval above the level.
    assert!(g.contains(&(Metric::Attempts, 95, 7_000 - 5_500)), "{g:?}");
    assert!(g.contains(&(Metric::Attempts, 99, 7_000 - 5_500)), "{g:?}");
    assert!(g.contains(&(Metric::Open, 95, 11_000 - 5_500)), "{g:?}");
    assert!(found.contains(&Finding::Drain(drain::DrainChange::Drained {
        since_ms: 11_000,
        at_ms: 14_000
    })));
    let st = a.state();
    assert_eq!(
        st.cutover.as_ref().unwrap().source,
        crate::model::analysis::cutover::CutoverSource::Flag
    );
    assert_eq!(st.drain.drained_since, Some(11_000));
    assert_eq!(st.share_attempts, Some(1000));
    assert!(
        st.gaps
            .iter()
            .all(|g| g.holding.is_some() && g.running_ms.is_none())
    );
    assert!(a.drained());
}

#[test]
fn without_a_cutover_crossings_are_found_but_no_gap() {
    let mut a = Analysis::new(params(60));
    let mut s = Series::new();
    let mut found = vec![];
    for _ in 0..5 {
        found.extend(a.feed(s.next(0, 10, 0, 0)));
    }
    assert!(gaps(&found).is_empty());
    let crossings: Vec<_> = found
        .iter()
        .filter(|f| matches!(f, Finding::Threshold { gap_ms: None, .. }))
        .collect();
    assert_eq!(crossings.len(), 2, "attempts at 95 and 99: {found:?}");
    let st = a.state();
    assert!(st.cutover.is_none());
    assert_eq!(st.gaps[0].holding.unwrap().reached_ms, 0);
    assert_eq!(st.gaps[0].gap_ms, None);
    assert_eq!(st.share_open, None, "no open connections on either side");
    // A later cutover gives the gap at once (negative: moved before it was declared).
    let late = a.mark_cutover(10_000, crate::model::analysis::cutover::CutoverSource::Key);
    assert_eq!(
        gaps(&late),
        [
            (Metric::Attempts, 95, -10_000),
            (Metric::Attempts, 99, -10_000)
        ]
    );
    assert!(
        a.mark_cutover(20_000, crate::model::analysis::cutover::CutoverSource::Dns)
            .is_empty(),
        "the first cutover wins"
    );
    assert_eq!(a.state().cutover.unwrap().at_ms, 10_000);
}

#[test]
fn a_threshold_reached_and_lost_again_shows_the_loss_and_the_running_gap() {
    let mut a = Analysis::new(params(60));
    a.mark_cutover(0, crate::model::analysis::cutover::CutoverSource::Flag);
    let mut s = Series::new();
    let mut found = vec![];
    for _ in 0..3 {
        found.extend(a.feed(s.next(1, 99, 0, 0)));
    }
    for _ in 0..3 {
        found.extend(a.feed(s.next(50, 50, 0, 0)));
    }
    let lost: Vec<_> = found
        .iter()
        .filter(|f| {
            matches!(f, Finding::Threshold { metric: Metric::Attempts, level: 95, change: gap::Crossed::Lost(c), .. } if c.lost_ms == Some(3000))
        })
        .collect();
    assert_eq!(lost.len(), 1, "{found:?}");
    let st = a.state();
    let g95 = &st.gaps[0];
    assert_eq!((g95.metric, g95.level), (Metric::Attempts, 95));
    assert!(g95.holding.is_none());
    assert_eq!(g95.lost.unwrap().reached_ms, 0);
    assert_eq!(g95.running_ms, Some(6000));
    // 99 of 100 is exactly 99 %: reached at 1 s too, and lost with it.
    assert_eq!(st.gaps[1].lost.unwrap().reached_ms, 0);
}

#[test]
fn a_side_that_never_drains() {
    let mut a = Analysis::new(params(5));
    a.mark_cutover(0, crate::model::analysis::cutover::CutoverSource::Flag);
    let mut s = Series::new();
    let mut found = vec![];
    for _ in 0..30 {
        found.extend(a.feed(s.next(1, 100, 7, 50)));
    }
    assert!(!found.iter().any(|f| matches!(f, Finding::Drain(_))));
    let st = a.state();
    assert_eq!(st.drain.drained_since, None);
    assert_eq!(st.drain.old_open, 7);
    assert_eq!(st.drain.attempts_last_minute, 30);
    assert!(matches!(st.drain.estimate, Estimate::NotPossible(_)));
    assert_eq!(st.drain.last_busy_ms, 30_000);
}

#[test]
fn a_counter_reset_is_not_a_burst() {
    // After a reset (tracer reloaded, a row evicted and re-inserted) the cumulative counters
    // fall; the interval's attempts are the snapshot's delta, which saturates at 0.
    let mut a = Analysis::new(params(2));
    let mut s = Series::new();
    a.feed(s.next(100, 0, 5, 0));
    let prev = s.old;
    let mut reset = s.next(0, 0, 0, 0);
    reset.old = Out::default();
    reset.new = Out::default();
    reset.old_attempts = reset.old.delta(&prev).attempts;
    let f = a.feed(reset);
    assert!(f.is_empty(), "{f:?}");
    assert_eq!(
        a.state().drain.attempts_last_minute,
        100,
        "no burst from the reset"
    );
    let f: Vec<_> = (0..2).flat_map(|_| a.feed(s.next(0, 0, 0, 0))).collect();
    assert_eq!(
        f,
        [Finding::Drain(drain::DrainChange::Drained {
            since_ms: 1000,
            at_ms: 3000
        })]
    );
}

#[test]
fn stragglers_and_destinations_reach_the_state() {
    let mut a = Analysis::new(params(60));
    let mut s = Series::new();
    let mut smp = s.next(5, 0, 1, 0);
    smp.processes = vec![ProcSample {
        pid: 42,
        comm: "curl".into(),
        cgroup: 1,
        unit: None,
        old: Out {
            attempts: 5,
            open: 1,
            ..Default::default()
        },
        new: Out::default(),
        held: Default::default(),
    }];
    smp.old_destinations = vec![("127.10.0.1".into(), smp.old)];
    a.feed(smp);
    let st = a.state();
    assert_eq!(st.stragglers[0].pid, 42);
    assert_eq!(st.stragglers[0].old_attempts_since_cutover, 5);
    assert_eq!(st.old_destinations[0].0, "127.10.0.1");
}

#[test]
fn a_side_held_only_by_pinned_connections_will_not_drain_and_says_who() {
    let mut a = Analysis::new(params(60));
    a.census(&[CensusOwner {
        pid: 7,
        comm: "nginx".into(),
        cgroup: 1,
        unit: None,
        old_open: 2,
    }]);
    let mut s = Series::new();
    let pinned = |attempts| ProcSample {
        pid: 7,
        comm: "nginx".into(),
        cgroup: 1,
        old: Out {
            attempts,
            open: 2,
            ..Default::default()
        },
        held: crate::model::held::Held {
            before_start: 2,
            opened_ms: vec![],
        },
        ..Default::default()
    };
    let cron = |attempts| ProcSample {
        pid: 8,
        comm: "cron".into(),
        cgroup: 1,
        old: Out {
            attempts,
            ..Default::default()
        },
        ..Default::default()
    };
    a.mark_cutover(0, CutoverSource::Flag);
    for i in 1..=3 {
        let mut smp = s.next(1, 0, 2, 0);
        smp.processes = vec![pinned(0), cron(i)];
        a.feed(smp);
    }
    assert_ne!(
        a.state().drain.estimate,
        Estimate::Pinned,
        "cron still connects"
    );
    for _ in 0..6 {
        let mut smp = s.next(0, 0, 2, 0);
        smp.processes = vec![pinned(0), cron(3)];
        a.feed(smp);
    }
    let st = a.state();
    assert_eq!(st.drain.estimate, Estimate::Pinned);
    assert_eq!(st.drain.pinned_by.len(), 1);
    assert_eq!(
        (st.drain.pinned_by[0].pid, st.drain.pinned_by[0].old_open),
        (7, 2)
    );
    assert_eq!(
        st.drain.pinned_text(st.now_ms),
        "held by nginx (pid 7, 2 open, from before start)"
    );
    assert_eq!(st.per_cause, [1, 1, 0], "pinned nginx, dns_cache cron");
}
