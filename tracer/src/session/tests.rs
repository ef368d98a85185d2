//! The session's event logic with a fake source and a recording sink: no root, no kernel.

use std::{
    cell::RefCell,
    collections::BTreeSet,
    rc::Rc,
    time::{Duration, SystemTime},
};

use super::*;
use crate::model::{cohort::Cohort, counters::Out, ranked::Ranked};

/// Snapshots with growing new-side attempts; counts what the session asked of it.
#[derive(Default)]
struct Fake {
    n: u64,
    added: Rc<RefCell<Vec<Prefix>>>,
    started: Option<SystemTime>,
    /// Also processes and destinations that change every interval.
    busy: bool,
    recycled: Rc<RefCell<u64>>,
}

impl Fake {
    /// The rows of a busy interval.
    fn busy_rows(&self, s: &mut Snapshot) {
        // Pid 1 on old, busier every interval; pid 2 moves to new from the third; a pid that
        // comes and goes.
        let rows = [
            (1, Cohort::Old, 10 * self.n, 1),
            (
                2,
                [Cohort::Old, Cohort::New][usize::from(self.n >= 3)],
                5 * self.n,
                0,
            ),
            (3 + self.n as u32 % 2, Cohort::New, self.n, 0),
        ];
        for (i, (pid, cohort, attempts, open)) in rows.into_iter().enumerate() {
            let out = Out {
                attempts,
                open,
                ..Default::default()
            };
            let addr = std::net::IpAddr::from([127, 10, 0, i as u8 + 1]);
            s.processes.push(crate::model::snapshot::ProcRow {
                pid,
                comm: format!("p{pid}").into(),
                cgroup: 1,
                destinations: 1,
                cohort,
                out,
            });
            s.destinations
                .push(crate::model::snapshot::DestRow { addr, cohort, out });
        }
    }
}

impl Source for Fake {
    fn sample(&mut self) -> Result<Snapshot, String> {
        let start = *self.started.get_or_insert_with(SystemTime::now);
        let mut s = Snapshot::empty(start + Duration::from_secs(self.n));
        s.elapsed = Duration::from_secs(self.n);
        s.out[Cohort::New as usize] = Out {
            attempts: 10 * self.n,
            ..Default::default()
        };
        if self.busy {
            self.busy_rows(&mut s);
        }
        self.n += 1;
        Ok(s)
    }
    fn reconcile(&mut self, _cur: &mut Snapshot) -> Result<Correction, String> {
        Ok(Correction::default())
    }
    fn offsets(&self) -> ([i64; 3], [i64; 3]) {
        ([0; 3], [0; 3])
    }
    fn add_to_new(&mut self, prefixes: &[Prefix]) -> Result<(), String> {
        self.added.borrow_mut().extend_from_slice(prefixes);
        Ok(())
    }
    fn recycle(&mut self, _old: Snapshot) {
        *self.recycled.borrow_mut() += 1;
    }
}

/// What the sinks saw: events and the cutover of each analysis handed over, in order.
#[derive(Default)]
struct Seen {
    events: Vec<Event>,
    /// After each `analysis` call: whether a cutover was known.
    analysis_cutover: Vec<bool>,
    summaries: Vec<EndReason>,
    /// Per snapshot: were the rankings handed over what the sink would have made alone?
    ranked_as_alone: Vec<bool>,
}

struct Recorder(Rc<RefCell<Seen>>);

impl Sink for Recorder {
    fn analysis(&mut self, state: &crate::model::analysis::State, _: &[Answer]) -> Result<()> {
        self.0
            .borrow_mut()
            .analysis_cutover
            .push(state.cutover.is_some());
        Ok(())
    }
    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot, ranked: &Ranked) -> Result<()> {
        let top = info(None).top;
        let alone = Ranked::of(cur, Some(prev), top);
        let same = ranked.processes == alone.processes && ranked.destinations == alone.destinations;
        self.0.borrow_mut().ranked_as_alone.push(same);
        Ok(())
    }
    fn event(&mut self, ev: &Event) -> Result<()> {
        self.0.borrow_mut().events.push(ev.clone());
        Ok(())
    }
    fn summary(&mut self, _: &Snapshot, _: &Snapshot, r: EndReason, _: u64) -> Result<()> {
        self.0.borrow_mut().summaries.push(r);
        Ok(())
    }
}

fn info(cutover_at: Option<CutoverAt>) -> RunInfo {
    let mut i = crate::tui::fixtures::info();
    i.started_at = SystemTime::now();
    i.cutover_at = cutover_at;
    i.hooks.fallbacks.clear();
    i
}

type Added = Rc<RefCell<Vec<Prefix>>>;

fn session(cutover_at: Option<CutoverAt>) -> (Session, Rc<RefCell<Seen>>, Added) {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let fake = Fake::default();
    let added = fake.added.clone();
    let s = Session::new(
        Box::new(fake),
        info(cutover_at),
        vec![Box::new(Recorder(seen.clone()))],
        vec![],
    )
    .unwrap();
    (s, seen, added)
}

fn cutovers(seen: &Seen) -> Vec<CutoverSource> {
    seen.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Cutover { source, .. } => Some(*source),
            _ => None,
        })
        .collect()
}

#[test]
fn a_key_cutover_is_in_the_analysis_at_once_and_only_once() {
    let (mut s, seen, _) = session(None);
    s.tick().unwrap();
    assert_eq!(seen.borrow().analysis_cutover.last(), Some(&false));
    assert!(
        s.mark_cutover(CutoverSource::Key, SystemTime::now(), None)
            .unwrap()
    );
    // The sinks got the analysis with the cutover right after the event, before any sample.
    assert_eq!(seen.borrow().analysis_cutover.last(), Some(&true));
    assert!(
        !s.mark_cutover(CutoverSource::Key, SystemTime::now(), None)
            .unwrap()
    );
    s.tick().unwrap();
    assert_eq!(cutovers(&seen.borrow()), [CutoverSource::Key]);
}

#[test]
fn the_key_after_cutover_at_now_writes_no_second_event() {
    let (mut s, seen, _) = session(Some(CutoverAt::Now));
    assert_eq!(cutovers(&seen.borrow()), [CutoverSource::Flag]);
    assert_eq!(seen.borrow().analysis_cutover.last(), Some(&true));
    assert!(
        !s.mark_cutover(CutoverSource::Key, SystemTime::now(), None)
            .unwrap()
    );
    assert_eq!(cutovers(&seen.borrow()), [CutoverSource::Flag]);
}

#[test]
fn a_future_cutover_at_is_dated_at_its_time_when_it_comes() {
    let at = SystemTime::now() + Duration::from_millis(1500);
    let (mut s, seen, _) = session(Some(CutoverAt::At(at)));
    assert!(cutovers(&seen.borrow()).is_empty());
    // The fake's samples are a second apart: the mark comes with the sample at or after it.
    s.tick().unwrap();
    s.tick().unwrap();
    let sb = seen.borrow();
    let ev = sb
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Cutover { .. }))
        .expect("the cutover came");
    assert_eq!(ev.at, at);
    assert_eq!(cutovers(&sb), [CutoverSource::Flag]);
}

#[test]
fn a_dns_change_adds_to_the_new_side_and_marks_the_cutover_once() {
    let (mut s, seen, added) = session(None);
    let addr: std::net::IpAddr = "127.20.9.9".parse().unwrap();
    let change = |at_ms| AnswerChange {
        name: "api.example".into(),
        old: BTreeSet::from(["127.10.9.9".parse().unwrap()]),
        new: BTreeSet::from([addr]),
        ttl: 600,
        at_ms,
    };
    s.dns_change(change(500), vec![Prefix::host(addr)]).unwrap();
    s.dns_change(change(900), vec![]).unwrap();
    assert_eq!(*added.borrow(), [Prefix::host(addr)]);
    let sb = seen.borrow();
    assert_eq!(cutovers(&sb), [CutoverSource::Dns]);
    let dns: Vec<_> = sb
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DnsChange {
                long_ttl,
                added_to_new,
                ..
            } => Some((e.elapsed_ms, *long_ttl, added_to_new.len())),
            _ => None,
        })
        .collect();
    assert_eq!(dns, [(500, true, 1), (900, true, 0)]);
}

#[test]
fn evictions_and_losses_are_reported_when_they_grow() {
    struct Lossy(u64);
    impl Source for Lossy {
        fn sample(&mut self) -> Result<Snapshot, String> {
            let mut s = Snapshot::empty(SystemTime::now());
            s.lost_events = self.0 / 2;
            s.evicted.destinations = self.0 / 3;
            self.0 += 1;
            Ok(s)
        }
        fn reconcile(&mut self, _: &mut Snapshot) -> Result<Correction, String> {
            Err("no census here".into())
        }
        fn offsets(&self) -> ([i64; 3], [i64; 3]) {
            ([0; 3], [0; 3])
        }
        fn add_to_new(&mut self, _: &[Prefix]) -> Result<(), String> {
            Ok(())
        }
    }
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut s = Session::new(
        Box::new(Lossy(0)),
        info(None),
        vec![Box::new(Recorder(seen.clone()))],
        vec![],
    )
    .unwrap();
    for _ in 0..6 {
        s.tick().unwrap();
    }
    s.finish(EndReason::Duration).unwrap();
    let sb = seen.borrow();
    let names: Vec<&str> = sb.events.iter().map(|e| e.kind.name()).collect();
    // Lost events 1, 2, 3 on ticks 2, 4, 6 (one event each); evictions 1, 2 on ticks 3, 6.
    assert_eq!(names.iter().filter(|n| **n == "lost_events").count(), 3);
    assert_eq!(names.iter().filter(|n| **n == "evicted").count(), 2);
    // Losses call for a census; this source has none: said once per check, not fatal.
    assert!(names.contains(&"reconcile_failed"));
    assert_eq!(names.last(), Some(&"analysis"));
    assert_eq!(sb.summaries, [EndReason::Duration]);
}

#[test]
fn sinks_get_the_rankings_they_would_make_alone_and_old_snapshots_go_back() {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let busy = Fake {
        busy: true,
        ..Fake::default()
    };
    let recycled = busy.recycled.clone();
    let mut s = Session::new(
        Box::new(busy),
        info(None),
        vec![Box::new(Recorder(seen.clone()))],
        vec![],
    )
    .unwrap();
    for _ in 0..6 {
        s.tick().unwrap();
    }
    assert_eq!(seen.borrow().ranked_as_alone, vec![true; 6]);
    // Each tick hands back the snapshot it replaced.
    assert_eq!(*recycled.borrow(), 6);
}
