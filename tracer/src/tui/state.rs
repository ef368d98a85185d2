//! The live view's state: plain data built from the run info, the snapshots and the events, plus
//! the key handling. The view renders only from this, so it is tested without a terminal or root.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::{
    model::{
        addr::Prefix,
        analysis::{self, dns::Answer},
        cohort::Cohort,
        counters::Out,
        process,
        share::{self, Share},
        snapshot::Snapshot,
    },
    sink::{Event, EventKind, RunInfo},
};

/// Chart points kept; when full every other point is dropped, so the chart always spans the
/// whole run at a coarser step instead of forgetting its start.
pub const HISTORY: usize = 1800;
/// Log lines kept.
pub const LOG: usize = 1000;

/// One chart point: connects/s per cohort (indexed by `Cohort as usize`) and the new-side share
/// of attempts, at `t` seconds since start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub t: f64,
    pub rate: [f64; 3],
    pub share: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// Wall-clock time of the event (shown in UTC).
    pub at: SystemTime,
    pub elapsed_ms: u64,
    pub kind: &'static str,
    pub text: String,
}

/// Sort order of the destinations table, cycled with `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sort {
    Open,
    Rate,
    Failed,
    LastSeen,
    Addr,
}

impl Sort {
    pub fn next(self) -> Sort {
        match self {
            Sort::Open => Sort::Rate,
            Sort::Rate => Sort::Failed,
            Sort::Failed => Sort::LastSeen,
            Sort::LastSeen => Sort::Addr,
            Sort::Addr => Sort::Open,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Sort::Open => "open",
            Sort::Rate => "conn/s",
            Sort::Failed => "failed",
            Sort::LastSeen => "seen",
            Sort::Addr => "address",
        }
    }
}

/// The panes that scroll, cycled with Tab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Destinations = 0,
    Stragglers = 1,
    Log = 2,
}

impl Pane {
    fn next(self) -> Pane {
        match self {
            Pane::Destinations => Pane::Stragglers,
            Pane::Stragglers => Pane::Log,
            Pane::Log => Pane::Destinations,
        }
    }
    fn prev(self) -> Pane {
        self.next().next()
    }
}

/// What the driver must do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Redraw,
    Quit,
    /// Mark the cutover now: the driver records a `cutover` event in the session.
    Cutover,
}

/// Everything shown that changes with the samples; frozen as a whole while the display is
/// paused (counting goes on), so the table, the gaps and the drain line stay of one moment.
#[derive(Clone, Debug)]
pub struct Data {
    pub cur: Snapshot,
    pub prev: Snapshot,
    pub history: Vec<Point>,
    /// Per destination: its counters and when (elapsed) they last changed.
    pub seen: HashMap<IpAddr, (Out, Duration)>,
    /// The failover analysis as of the last sample (None before the first).
    pub analysis: Option<analysis::State>,
    /// `--watch-dns` names with their current answer.
    pub dns: Vec<Answer>,
}

impl Data {
    /// Seconds the last interval really lasted (the configured one before the first sample).
    pub fn secs(&self, interval_ms: u64) -> f64 {
        let d = self.cur.elapsed.saturating_sub(self.prev.elapsed);
        if d.is_zero() {
            interval_ms.max(1) as f64 / 1000.0
        } else {
            d.as_secs_f64()
        }
    }
}

/// A destination row as shown.
#[derive(Clone, Debug, PartialEq)]
pub struct DestView {
    pub addr: IpAddr,
    pub cohort: Cohort,
    pub open: u64,
    pub rate: f64,
    pub failed: u64,
    /// Time since its counters last changed.
    pub ago: Duration,
}

/// A process still connecting to, or holding connections to, the old side.
#[derive(Clone, Debug, PartialEq)]
pub struct Straggler {
    pub pid: u32,
    pub comm: String,
    pub open: u64,
    pub rate: f64,
    pub attempts: u64,
    /// What the analysis knows of it: first and last old contact, whether it ever reached
    /// the new side, its unit (None before the analysis has seen it).
    pub history: Option<analysis::stragglers::Straggler>,
}

pub struct ViewState {
    pub info: RunInfo,
    pub live: Data,
    pub frozen: Option<Data>,
    pub log: Vec<LogLine>,
    /// Seconds since start of the last cutover mark.
    pub cutover: Option<f64>,
    pub sort: Sort,
    /// The applied destination filter (text or CIDR); empty for none.
    pub filter: String,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    pub focus: Pane,
    pub scroll: [usize; 3],
    pub help: bool,
}

impl ViewState {
    pub fn new(info: RunInfo) -> Self {
        let empty = Snapshot::empty(info.started_at);
        let start = format!(
            "tracing: {} open outbound and {} inbound connections found at start",
            info.census_outbound, info.census_inbound
        );
        let mut st = ViewState {
            info,
            live: Data {
                cur: empty.clone(),
                prev: empty,
                history: vec![],
                seen: HashMap::new(),
                analysis: None,
                dns: vec![],
            },
            frozen: None,
            log: vec![],
            cutover: None,
            sort: Sort::Open,
            filter: String::new(),
            editing: None,
            focus: Pane::Destinations,
            scroll: [0; 3],
            help: false,
        };
        st.log_line(st.info.started_at, 0, "start", start);
        st
    }

    /// What the view shows: the frozen data while paused, else the live data.
    pub fn data(&self) -> &Data {
        self.frozen.as_ref().unwrap_or(&self.live)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// A new snapshot (the sink's `snapshot`).
    pub fn push(&mut self, cur: &Snapshot, prev: &Snapshot) {
        let d = &mut self.live;
        // The session's `prev` is the `cur` of the last push: move it over rather than clone a
        // second snapshot of tens of thousands of rows (comparing is cheaper than copying).
        if d.cur == *prev {
            d.prev = std::mem::replace(&mut d.cur, cur.clone());
        } else {
            d.cur = cur.clone();
            d.prev = prev.clone();
        }
        let secs = d.secs(self.info.interval_ms);
        let mut rate = [0.0; 3];
        for c in Cohort::ALL {
            rate[c as usize] = cur.cohort_out(c).delta(prev.cohort_out(c)).attempts as f64 / secs;
        }
        d.history.push(Point {
            t: cur.elapsed.as_secs_f64(),
            rate,
            share: share::attempts(cur, prev).map(|s| s.ratio()),
        });
        if d.history.len() > HISTORY {
            let mut i = 0;
            d.history.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        let mut seen = HashMap::with_capacity(cur.destinations.len());
        for r in &cur.destinations {
            let at = match d.seen.get(&r.addr) {
                Some((o, at)) if *o == r.out => *at,
                _ => cur.elapsed,
            };
            seen.insert(r.addr, (r.out, at));
        }
        d.seen = seen;
    }

    /// The analysis and DNS answers (the sink's `analysis`), shown with the samples (and
    /// frozen with them while paused).
    pub fn analysis(&mut self, state: &analysis::State, dns: &[Answer]) {
        self.live.analysis = Some(state.clone());
        self.live.dns = dns.to_vec();
    }

    /// The analysis as shown (frozen while paused).
    pub fn shown_analysis(&self) -> Option<&analysis::State> {
        self.data().analysis.as_ref()
    }

    /// An event (the sink's `event`): logged as a sentence; a cutover also marks the chart, and
    /// a DNS change that adds to the new side updates the sets in the header.
    pub fn event(&mut self, ev: &Event) {
        match &ev.kind {
            EventKind::Cutover { .. } => self.cutover = Some(ev.elapsed_ms as f64 / 1000.0),
            EventKind::DnsChange {
                change,
                added_to_new,
                ..
            } if !added_to_new.is_empty() => self.info.new.push(crate::model::spec::Spec {
                text: change.name.clone(),
                prefixes: added_to_new.clone(),
                resolved: true,
            }),
            // The final analysis is shown by the header, not as a log line.
            EventKind::Analysis(_) => return,
            // Many on a busy host: NDJSON records them, the log would only scroll.
            EventKind::DnsAnswer(_) => return,
            _ => {}
        }
        self.log_line(ev.at, ev.elapsed_ms, ev.kind.name(), ev.kind.message());
    }

    pub fn log_line(&mut self, at: SystemTime, elapsed_ms: u64, kind: &'static str, text: String) {
        self.log.push(LogLine {
            at,
            elapsed_ms,
            kind,
            text,
        });
        if self.log.len() > LOG {
            self.log.remove(0);
        }
    }

    /// Destinations that pass the filter, in the chosen order.
    pub fn destinations(&self) -> Vec<DestView> {
        let d = self.data();
        let secs = d.secs(self.info.interval_ms);
        let prev: HashMap<IpAddr, &Out> = d
            .prev
            .destinations
            .iter()
            .map(|r| (r.addr, &r.out))
            .collect();
        let mut v: Vec<DestView> = d
            .cur
            .destinations
            .iter()
            .filter(|r| matches(&self.filter, r.addr, r.cohort))
            .map(|r| {
                let attempts = prev.get(&r.addr).map_or(0, |p| r.out.delta(p).attempts);
                let at = d.seen.get(&r.addr).map_or(d.cur.elapsed, |s| s.1);
                DestView {
                    addr: r.addr,
                    cohort: r.cohort,
                    open: r.out.open,
                    rate: attempts as f64 / secs,
                    failed: r.out.failed,
                    ago: d.cur.elapsed.saturating_sub(at),
                }
            })
            .collect();
        let by = |a: &DestView, b: &DestView| match self.sort {
            Sort::Open => b.open.cmp(&a.open).then(b.rate.total_cmp(&a.rate)),
            Sort::Rate => b.rate.total_cmp(&a.rate).then(b.open.cmp(&a.open)),
            Sort::Failed => b.failed.cmp(&a.failed),
            Sort::LastSeen => a.ago.cmp(&b.ago),
            Sort::Addr => std::cmp::Ordering::Equal,
        };
        v.sort_by(|a, b| by(a, b).then(a.addr.cmp(&b.addr)));
        v
    }

    /// Processes with open connections to the old side or connects to it in the last interval,
    /// most first.
    pub fn stragglers(&self) -> Vec<Straggler> {
        let d = self.data();
        let secs = d.secs(self.info.interval_ms);
        let old = Cohort::Old as usize;
        let prev: HashMap<(u32, std::sync::Arc<str>, u64), u64> =
            process::aggregate(&d.prev.processes)
                .into_iter()
                .map(|p| ((p.pid, p.comm.clone(), p.cgroup), p.out[old].attempts))
                .collect();
        let mut v: Vec<Straggler> = process::aggregate(&d.cur.processes)
            .into_iter()
            .map(|p| {
                let before = prev
                    .get(&(p.pid, p.comm.clone(), p.cgroup))
                    .copied()
                    .unwrap_or(0);
                let o = p.out[old];
                let history = d.analysis.as_ref().and_then(|a| {
                    a.stragglers
                        .iter()
                        .find(|s| s.pid == p.pid && *s.comm == *p.comm && s.cgroup == p.cgroup)
                        .cloned()
                });
                Straggler {
                    pid: p.pid,
                    rate: o.attempts.saturating_sub(before) as f64 / secs,
                    comm: p.comm.to_string(),
                    open: o.open,
                    attempts: o.attempts,
                    history,
                }
            })
            .filter(|s| s.open > 0 || s.rate > 0.0)
            .collect();
        // Stragglers the analysis names (a cause) that were quiet in this interval stay listed.
        if let Some(a) = &d.analysis {
            for h in &a.stragglers {
                if !h.causes.is_empty()
                    && !v
                        .iter()
                        .any(|s| s.pid == h.pid && s.comm == h.comm && s.history.is_some())
                {
                    v.push(Straggler {
                        pid: h.pid,
                        comm: h.comm.clone(),
                        open: h.old_open,
                        rate: 0.0,
                        attempts: 0,
                        history: Some(h.clone()),
                    });
                }
            }
        }
        // Ranked as the analysis ranks them: old use since the cutover plus old held.
        let weight = |s: &Straggler| {
            s.open
                + s.history
                    .as_ref()
                    .map_or(0, |h| h.old_attempts_since_cutover)
        };
        v.sort_by(|a, b| {
            weight(b)
                .cmp(&weight(a))
                .then(b.rate.total_cmp(&a.rate))
                .then(a.pid.cmp(&b.pid))
        });
        v
    }

    pub fn share_attempts(&self) -> Option<Share> {
        let d = self.data();
        share::attempts(&d.cur, &d.prev)
    }

    pub fn share_open(&self) -> Option<Share> {
        share::open(&self.data().cur)
    }

    fn rows(&self, p: Pane) -> usize {
        match p {
            Pane::Destinations => self.destinations().len(),
            Pane::Stragglers => self.stragglers().len(),
            Pane::Log => self.log.len(),
        }
    }

    fn scroll_by(&mut self, n: isize) {
        let i = self.focus as usize;
        let max = self.rows(self.focus).saturating_sub(1);
        self.scroll[i] = self.scroll[i].saturating_add_signed(n).min(max);
    }

    /// Handle one key press.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        if k.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl_c = k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c');
        if ctrl_c {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match k.code {
                KeyCode::Char(c) => text.push(c),
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Enter => {
                    self.filter = text.trim().to_string();
                    self.editing = None;
                    self.scroll[Pane::Destinations as usize] = 0;
                }
                KeyCode::Esc => self.editing = None,
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        if self.help {
            return match k.code {
                KeyCode::Char('?') | KeyCode::Esc => {
                    self.help = false;
                    Action::Redraw
                }
                KeyCode::Char('q') => Action::Quit,
                _ => Action::None,
            };
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('c') => return Action::Cutover,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('p') => {
                self.frozen = match self.frozen {
                    Some(_) => None,
                    None => Some(self.live.clone()),
                }
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.scroll[Pane::Destinations as usize] = 0;
            }
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Tab => self.focus = self.focus.next(),
            KeyCode::BackTab => self.focus = self.focus.prev(),
            KeyCode::Down => self.scroll_by(1),
            KeyCode::Up => self.scroll_by(-1),
            KeyCode::PageDown => self.scroll_by(10),
            KeyCode::PageUp => self.scroll_by(-10),
            KeyCode::Home => self.scroll[self.focus as usize] = 0,
            _ => return Action::None,
        }
        Action::Redraw
    }
}

/// Does a destination pass the filter? A filter with `/` is a CIDR prefix; anything else is text
/// looked for in the address and the cohort name.
pub fn matches(filter: &str, addr: IpAddr, cohort: Cohort) -> bool {
    if filter.is_empty() {
        return true;
    }
    if filter.contains('/')
        && let Ok(p) = Prefix::parse(filter)
    {
        return p.contains(addr);
    }
    addr.to_string().contains(filter) || cohort.name() == filter
}

#[cfg(test)]
mod tests;
