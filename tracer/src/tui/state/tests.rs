//! Key handling and the state derived from snapshots (sort, filter, pause, cutover, scroll).
use super::*;
use crate::tui::fixtures;
use crossterm::event::KeyEvent;

fn key(c: char) -> KeyEvent {
    KeyEvent::from(KeyCode::Char(c))
}

fn typed(st: &mut ViewState, text: &str) {
    for c in text.chars() {
        st.key(key(c));
    }
    st.key(KeyEvent::from(KeyCode::Enter));
}

#[test]
fn sort_cycles_through_every_order_and_back() {
    let mut st = fixtures::mid_failover();
    let mut seen = vec![st.sort];
    for _ in 0..5 {
        assert_eq!(st.key(key('s')), Action::Redraw);
        seen.push(st.sort);
    }
    assert_eq!(seen.first(), seen.last());
    assert_eq!(
        seen[..5]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        5
    );
    st.sort = Sort::Addr;
    let addrs: Vec<IpAddr> = st.destinations().iter().map(|d| d.addr).collect();
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(addrs, sorted);
    st.sort = Sort::Open;
    let open: Vec<u64> = st.destinations().iter().map(|d| d.open).collect();
    assert!(open.windows(2).all(|w| w[0] >= w[1]), "{open:?}");
}

#[test]
fn filter_by_text_and_cidr_and_cancel() {
    let mut st = fixtures::mid_failover();
    let all = st.destinations().len();
    assert_eq!(st.key(key('/')), Action::Redraw);
    assert!(st.editing.is_some());
    // While typing, `q` is text, not quit.
    typed(&mut st, "127.20.0.0/16");
    assert_eq!(st.filter, "127.20.0.0/16");
    let v = st.destinations();
    assert!(!v.is_empty() && v.len() < all);
    assert!(v.iter().all(|d| d.cohort == Cohort::New));
    st.key(key('/'));
    for _ in 0.."127.20.0.0/16".len() {
        st.key(KeyEvent::from(KeyCode::Backspace));
    }
    typed(&mut st, "old");
    assert!(st.destinations().iter().all(|d| d.cohort == Cohort::Old));
    st.key(key('/'));
    st.key(key('x'));
    st.key(KeyEvent::from(KeyCode::Esc));
    assert_eq!(st.filter, "old", "Esc cancels the edit, keeps the filter");
    assert!(matches("10.0", "10.0.0.1".parse().unwrap(), Cohort::Other));
    assert!(!matches(
        "10.1.0.0/16",
        "10.0.0.1".parse().unwrap(),
        Cohort::Other
    ));
}

#[test]
fn pause_freezes_the_display_while_counting_goes_on() {
    let mut st = fixtures::mid_failover();
    let before = st.data().cur.clone();
    st.key(key('p'));
    assert!(st.paused());
    let mut later = before.clone();
    later.elapsed += Duration::from_secs(1);
    later.out[Cohort::New as usize].attempts += 50;
    st.push(&later, &before);
    assert_eq!(st.data().cur, before, "display frozen");
    assert_eq!(st.live.cur, later, "counting goes on");
    st.key(key('p'));
    assert_eq!(st.data().cur, later);
}

#[test]
fn pause_freezes_the_drain_line_and_the_gaps_too() {
    let mut st = fixtures::mid_failover();
    let shown = st.shown_analysis().cloned().unwrap();
    st.key(key('p'));
    let mut moved = shown.clone();
    moved.now_ms += 5_000;
    moved.drain.old_open = 0;
    moved.drain.attempts_last_minute += 99;
    st.analysis(&moved, &[]);
    assert_eq!(st.shown_analysis(), Some(&shown), "frozen with the table");
    assert!(
        !st.data().dns.is_empty(),
        "the DNS answers shown are frozen too"
    );
    st.key(key('p'));
    assert_eq!(st.shown_analysis(), Some(&moved));
}

#[test]
fn a_dns_change_that_adds_to_the_new_side_shows_in_the_sets() {
    use crate::model::{addr::Prefix, analysis::dns::AnswerChange};
    let mut st = fixtures::empty();
    st.info.new.clear();
    let addr: std::net::IpAddr = "127.20.5.5".parse().unwrap();
    st.event(&fixtures::event(
        3_000,
        crate::sink::EventKind::DnsChange {
            change: AnswerChange {
                name: "api.example".into(),
                old: Default::default(),
                new: [addr].into(),
                ttl: 30,
                at_ms: 3_000,
            },
            long_ttl: false,
            added_to_new: vec![Prefix::host(addr)],
            via: crate::model::resolvers::DnsVia::system(),
        },
    ));
    assert_eq!(st.info.new.len(), 1);
    assert_eq!(st.info.new[0].prefixes, [Prefix::host(addr)]);
}

#[test]
fn cutover_key_asks_the_driver_and_the_event_marks_it() {
    let mut st = fixtures::empty();
    assert_eq!(st.key(key('c')), Action::Cutover);
    assert_eq!(st.cutover, None, "only the recorded event marks it");
    st.event(&fixtures::event(
        61_500,
        crate::sink::EventKind::Cutover {
            source: crate::model::analysis::cutover::CutoverSource::Key,
            name: None,
        },
    ));
    assert_eq!(st.cutover, Some(61.5));
    assert_eq!(st.log.last().unwrap().text, "cutover marked (key)");
}

#[test]
fn quit_keys_help_and_panes() {
    let mut st = fixtures::mid_failover();
    assert_eq!(st.key(key('q')), Action::Quit);
    assert_eq!(st.key(KeyEvent::from(KeyCode::Esc)), Action::Quit);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(st.key(ctrl_c), Action::Quit);
    st.key(key('?'));
    assert!(st.help);
    assert_eq!(st.key(key('s')), Action::None, "keys do nothing under help");
    st.key(KeyEvent::from(KeyCode::Esc));
    assert!(!st.help);
    st.key(KeyEvent::from(KeyCode::Tab));
    assert_eq!(st.focus, Pane::Stragglers);
    st.key(KeyEvent::from(KeyCode::BackTab));
    st.key(KeyEvent::from(KeyCode::BackTab));
    assert_eq!(st.focus, Pane::Log);
}

#[test]
fn scrolling_is_clamped_to_the_rows() {
    let mut st = fixtures::mid_failover();
    let n = st.destinations().len();
    st.key(KeyEvent::from(KeyCode::PageDown));
    st.key(KeyEvent::from(KeyCode::PageDown));
    assert_eq!(st.scroll[0], n - 1);
    st.key(KeyEvent::from(KeyCode::Up));
    assert_eq!(st.scroll[0], n - 2);
    st.key(KeyEvent::from(KeyCode::Home));
    assert_eq!(st.scroll[0], 0);
}

#[test]
fn history_keeps_the_whole_run_when_full() {
    let mut st = ViewState::new(fixtures::info());
    let mut prev = Snapshot::empty(st.info.started_at);
    for i in 1..=(HISTORY as u64 + 1) {
        let mut cur = prev.clone();
        cur.elapsed = Duration::from_secs(i);
        st.push(&cur, &prev);
        prev = cur;
    }
    let h = &st.live.history;
    assert!(h.len() <= HISTORY);
    assert_eq!(h[0].t, 1.0);
    assert_eq!(h[0].share, None, "no traffic, no share");
}

#[test]
fn stragglers_are_processes_still_on_old() {
    let st = fixtures::mid_failover();
    let s = st.stragglers();
    assert!(!s.is_empty());
    assert!(s.iter().all(|p| p.open > 0 || p.rate > 0.0));
    assert!(s.windows(2).all(|w| w[0].open >= w[1].open));
}

#[test]
fn reconciled_event_says_what_moved() {
    use crate::model::reconcile::{Correction, Trigger};
    use crate::sink::EventKind;
    let ev = EventKind::Reconciled {
        trigger: Trigger::Every,
        change: Correction {
            out: [2, -4, 0],
            inb: [0, -4, 0],
            addresses: 2,
        },
        offset: ([0; 3], [0; 3]),
    };
    assert_eq!(
        ev.message(),
        "open checked against the socket table (every): old -4, other +2, inbound old -4"
    );
    let none = EventKind::Reconciled {
        trigger: Trigger::LostEvents,
        change: Correction::default(),
        offset: ([0; 3], [0; 3]),
    };
    assert_eq!(
        none.message(),
        "open checked against the socket table (lost_events): no change"
    );
}

#[test]
fn push_keeps_the_previous_snapshot_whether_moved_or_copied() {
    let mut st = fixtures::mid_failover();
    let first = st.live.cur.clone();
    let mut second = first.clone();
    second.elapsed += Duration::from_secs(1);
    second.out[Cohort::New as usize].attempts += 7;
    // The session's order: the last `cur` comes back as `prev` (moved, not cloned).
    st.push(&second, &first);
    assert_eq!((&st.live.prev, &st.live.cur), (&first, &second));
    // A `prev` the view never saw as `cur` is taken as given.
    let mut other = first.clone();
    other.out[Cohort::Old as usize].attempts += 3;
    st.push(&first, &other);
    assert_eq!((&st.live.prev, &st.live.cur), (&other, &first));
}
