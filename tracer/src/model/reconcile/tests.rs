use std::time::SystemTime;

use super::*;
use crate::model::{addr::Prefix, cohort::Cohort};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sets() -> Sets {
    let p = |s: &str| Prefix::parse(s).unwrap();
    Sets::new(vec![p("127.10.0.0/16")], vec![p("127.20.0.0/16")]).unwrap()
}

/// A snapshot as the sampler makes it: rows and cohorts from counters, census at start.
fn snap(start: &Table, rows: &[(&str, u64, u64)], locals: &[(&str, u64, u64)]) -> Snapshot {
    let sets = sets();
    let mut s = Snapshot::empty(SystemTime::UNIX_EPOCH);
    for (a, est, closed) in rows {
        let addr = ip(a);
        let c = sets.cohort(addr);
        let census = start.out.get(&addr).copied().unwrap_or(0);
        let out = Out::from_kernel(
            &tracer_common::OutCounters {
                attempts: *est,
                established: *est,
                failed: 0,
                closed: *closed,
            },
            census,
        );
        s.destinations.push(DestRow {
            addr,
            cohort: c,
            out,
        });
        let o = &mut s.out[c as usize];
        o.attempts += est;
        o.established += est;
        o.closed += closed;
    }
    for (a, acc, closed) in locals {
        let addr = ip(a);
        let c = sets.cohort(addr);
        let census = start.inb.get(&addr).copied().unwrap_or(0);
        let inb = In::from_kernel(
            &tracer_common::InCounters {
                accepted: *acc,
                closed: *closed,
            },
            census,
        );
        s.locals.push(LocalRow {
            addr,
            cohort: c,
            inb,
        });
        let n = &mut s.inb[c as usize];
        n.accepted += acc;
        n.closed += closed;
    }
    // Addresses held from before the start but quiet since: the sampler gives them a row.
    for (a, n) in &start.out {
        if !s.destinations.iter().any(|r| r.addr == *a) {
            s.destinations.push(DestRow {
                addr: *a,
                cohort: sets.cohort(*a),
                out: Out {
                    open: *n,
                    ..Out::default()
                },
            });
        }
    }
    // Cohort gauges without offsets, as the sampler derives them.
    apply(&mut s, start, &Offsets::default(), &sets);
    s
}

fn table(out: &[(&str, u64)], inb: &[(&str, u64)]) -> Table {
    let mut t = Table::default();
    for (a, n) in out {
        for _ in 0..*n {
            t.add(false, ip(a));
        }
    }
    for (a, n) in inb {
        for _ in 0..*n {
            t.add(true, ip(a));
        }
    }
    t
}

/// Offsets from a census taken while nothing moved (the samples before and after agree).
fn quiet(real: &Table, s: &Snapshot, start: &Table, prev: &Offsets) -> Offsets {
    let d = derive(s, start, &sets());
    offsets(real, &d, &d, prev, &sets())
}

fn open_of(s: &Snapshot, a: &str) -> u64 {
    s.destinations
        .iter()
        .find(|r| r.addr == ip(a))
        .map(|r| r.out.open)
        .unwrap_or(0)
}

#[test]
fn gauge_adds_the_offset_and_never_goes_negative() {
    assert_eq!(derived(40, 325, 315), 50);
    assert_eq!(derived(0, 3, 5), -2, "signed: a missed established shows");
    assert_eq!(gauge(0, 3, 5, 0), 0);
    assert_eq!(gauge(0, 3, 5, 4), 2);
    assert_eq!(gauge(10, 0, 0, -4), 6);
    assert_eq!(gauge(1, 0, 0, -4), 0, "clamped at zero");
    assert_eq!(gauge(u64::MAX, u64::MAX, 0, i64::MAX), u64::MAX);
}

#[test]
fn missed_closes_are_corrected_per_address_and_cohort() {
    let start = table(&[("127.10.0.2", 2)], &[]);
    // .1: 6 established, 2 closes seen but 4 more really closed (missed); .2: census 2, held.
    let s = snap(&start, &[("127.10.0.1", 6, 2), ("127.20.0.1", 3, 0)], &[]);
    assert_eq!(open_of(&s, "127.10.0.1"), 4);
    assert_eq!(s.out[Cohort::Old as usize].open, 6);
    let real = table(&[("127.10.0.2", 2), ("127.20.0.1", 3)], &[]);
    let off = quiet(&real, &s, &start, &Offsets::default());
    assert_eq!(off.out, HashMap::from([(ip("127.10.0.1"), -4)]));
    assert_eq!(off.cohort_out, [0, -4, 0]);

    let mut after = s.clone();
    apply(&mut after, &start, &off, &sets());
    assert_eq!(open_of(&after, "127.10.0.1"), 0);
    assert_eq!(open_of(&after, "127.10.0.2"), 2);
    assert_eq!(after.out[Cohort::Old as usize].open, 2);
    assert_eq!(after.out[Cohort::New as usize].open, 3);
    let ch = change(&s, &after);
    assert_eq!(ch.out[Cohort::Old as usize], -4);
    assert_eq!(ch.out[Cohort::New as usize], 0);
    assert_eq!(ch.addresses, 1);

    // Later: the offset stays; a new connection to .1 counts from the true value.
    let later = {
        let mut l = snap(&start, &[("127.10.0.1", 7, 2), ("127.20.0.1", 3, 0)], &[]);
        apply(&mut l, &start, &off, &sets());
        l
    };
    assert_eq!(open_of(&later, "127.10.0.1"), 1);
    assert_eq!(later.out[Cohort::Old as usize].open, 3);
}

#[test]
fn cohort_offset_is_the_sum_of_address_offsets_when_rows_are_complete() {
    let start = Table::default();
    let s = snap(
        &start,
        &[
            ("127.10.0.1", 5, 1),
            ("127.10.0.2", 3, 0),
            ("127.10.0.3", 1, 3),
        ],
        &[("127.10.0.1", 4, 0)],
    );
    // Real: .1 has 1 (3 missed closes), .2 has 4 (one missed established), .3 none,
    // .9 has 2 the maps never showed.
    let real = table(
        &[("127.10.0.1", 1), ("127.10.0.2", 4), ("127.10.0.9", 2)],
        &[("127.10.0.1", 1)],
    );
    let off = quiet(&real, &s, &start, &Offsets::default());
    let sum: i64 = off.out.values().sum();
    assert_eq!(off.cohort_out[Cohort::Old as usize], sum);
    assert_eq!(off.out[&ip("127.10.0.3")], 2, "derived -2 -> real 0");
    assert_eq!(off.inb, HashMap::from([(ip("127.10.0.1"), -3)]));
    assert_eq!(off.cohort_in, [0, -3, 0]);

    let mut after = s.clone();
    apply(&mut after, &start, &off, &sets());
    for (a, n) in [
        ("127.10.0.1", 1),
        ("127.10.0.2", 4),
        ("127.10.0.3", 0),
        ("127.10.0.9", 2),
    ] {
        assert_eq!(open_of(&after, a), n, "{a}");
    }
    assert_eq!(after.out[Cohort::Old as usize].open, 7);
    assert_eq!(after.inb[Cohort::Old as usize].open, 1);
    assert_eq!(after.locals[0].inb.open, 1);
    let ch = change(&s, &after);
    assert_eq!(ch.out[Cohort::Old as usize], 7 - 5);
    assert_eq!(ch.inb[Cohort::Old as usize], -3);
    assert_eq!(ch.addresses, 4, ".1 .2 .9 outbound and .1 inbound");
}

#[test]
fn evicted_rows_leave_the_exact_cohort_offset_alone() {
    let start = Table::default();
    let mut s = snap(&start, &[("127.10.0.1", 4, 0)], &[]);
    // The row of .1 was evicted and re-inserted: it shows only the last close.
    s.destinations[0].out = Out {
        closed: 1,
        ..Out::default()
    };
    s.out[Cohort::Old as usize].closed = 1;
    let real = table(&[("127.10.0.1", 3)], &[]);
    let off = quiet(&real, &s, &start, &Offsets::default());
    assert_eq!(off.out[&ip("127.10.0.1")], 4);
    assert_eq!(off.cohort_out, [0, 0, 0], "cohort counters were right");
}

#[test]
fn reconciling_twice_replaces_the_offset_instead_of_adding() {
    let start = Table::default();
    let s = snap(&start, &[("127.10.0.1", 6, 2)], &[]);
    let real = table(&[], &[]);
    let off1 = quiet(&real, &s, &start, &Offsets::default());
    let off2 = quiet(&real, &s, &start, &off1);
    assert_eq!(off1, off2);
    let mut a = s.clone();
    apply(&mut a, &start, &off1, &sets());
    let mut b = a.clone();
    apply(&mut b, &start, &off2, &sets());
    assert_eq!(change(&a, &b), Correction::default());
    assert!(change(&a, &b).is_zero());
    // A true reconciliation removes the offsets.
    let none = quiet(&table(&[("127.10.0.1", 4)], &[]), &s, &start, &off2);
    assert!(none.is_empty());
}

#[test]
fn traffic_between_sample_and_census_is_not_taken_for_an_error() {
    let c = |census, up, down| Counts { census, up, down };
    // Quiet window: exact, whatever the previous offset.
    assert_eq!(window_offset(2, c(0, 6, 2), c(0, 6, 2), 0), -2);
    assert_eq!(window_offset(2, c(0, 6, 2), c(0, 6, 2), 5), -2);
    // 3 connects and 3 closes in the window: the census may have seen 1..7 open, all noise.
    for real in 1..=7 {
        assert_eq!(
            window_offset(real, c(0, 10, 6), c(0, 13, 9), 0),
            0,
            "real {real}"
        );
    }
    assert_eq!(
        window_offset(9, c(0, 10, 6), c(0, 13, 9), 0),
        2,
        "beyond the window"
    );
    // 4 missed closes on a busy address: corrected by what exceeds the window's traffic.
    assert_eq!(window_offset(0, c(0, 10, 6), c(0, 11, 7), 0), -3);
    // A previous offset inside the window is kept, not undone by noise.
    assert_eq!(window_offset(0, c(0, 10, 6), c(0, 11, 7), -4), -4);
    // A busy cohort in the offsets: the same rule.
    let start = Table::default();
    let before = snap(&start, &[("127.10.0.1", 10, 6)], &[]);
    let after = snap(&start, &[("127.10.0.1", 11, 7)], &[]);
    let real = table(&[("127.10.0.1", 4)], &[]);
    let (d1, d2) = (
        derive(&before, &start, &sets()),
        derive(&after, &start, &sets()),
    );
    let off = offsets(&real, &d1, &d2, &Offsets::default(), &sets());
    assert!(off.is_empty(), "{off:?}");
}

#[test]
fn policy_reconciles_on_losses_at_most_every_gap_and_periodically() {
    let s = Duration::from_secs;
    let mut p = Policy::new(None, s(10));
    assert_eq!(p.due(s(1), 0, 0), None);
    assert_eq!(p.due(s(1), 3, 0), Some(Trigger::LostEvents));
    p.done(s(1), 3, 0);
    assert_eq!(p.due(s(2), 3, 0), None);
    assert_eq!(p.due(s(5), 3, 1), None, "within the gap: pending");
    assert_eq!(p.due(s(11), 3, 1), Some(Trigger::SockInsertFailed));
    p.done(s(11), 3, 1);
    assert_eq!(p.due(s(100), 3, 1), None, "no losses, no period: never");

    let mut e = Policy::new(Some(s(2)), s(10));
    assert_eq!(e.due(s(1), 0, 0), None);
    assert_eq!(e.due(s(2), 0, 0), Some(Trigger::Every));
    e.done(s(2), 0, 0);
    assert_eq!(e.due(s(3), 5, 0), None, "loss within the gap waits");
    assert_eq!(
        e.due(s(4), 5, 0),
        Some(Trigger::Every),
        "the period still runs"
    );
    e.done(s(4), 5, 0);
    assert_eq!(e.due(s(5), 5, 0), None);
}
