//! Reconciliation of the derived `open` gauge with the kernel's socket table.
//!
//! `open` is census + established - closed. A close the kernel side never saw (a program run
//! skipped on recursion, a per-socket record that could not be stored or was evicted) leaves it
//! too high forever, and the old side never looks drained. A later census of the socket table
//! gives the true number; the difference is kept as a signed offset per address and per cohort
//! and added to every later snapshot. Offsets are recomputed from the uncorrected gauge each
//! time, so errors (connections that open or close between the sample and the census) never
//! add up across reconciliations.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use super::{
    cohort::Sets,
    counters::{In, Out},
    snapshot::{DestRow, LocalRow, Snapshot},
};

/// Established connections per address: outbound by remote, inbound by local address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub out: HashMap<IpAddr, u64>,
    pub inb: HashMap<IpAddr, u64>,
}

impl Table {
    /// Count one established connection.
    pub fn add(&mut self, inbound: bool, addr: IpAddr) {
        let m = if inbound {
            &mut self.inb
        } else {
            &mut self.out
        };
        *m.entry(addr).or_insert(0) += 1;
    }

    /// Totals per cohort (indexed by `Cohort as usize`), outbound and inbound.
    pub fn by_cohort(&self, sets: &Sets) -> ([u64; 3], [u64; 3]) {
        let sum = |m: &HashMap<IpAddr, u64>| {
            let mut c = [0u64; 3];
            for (a, n) in m {
                c[sets.cohort(*a) as usize] += n;
            }
            c
        };
        (sum(&self.out), sum(&self.inb))
    }
}

/// Signed corrections added to the derived gauge: per address and per cohort. Cohorts have
/// their own offsets because cohort counters are exact while per-address rows can be evicted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub out: HashMap<IpAddr, i64>,
    pub inb: HashMap<IpAddr, i64>,
    pub cohort_out: [i64; 3],
    pub cohort_in: [i64; 3],
}

impl Offsets {
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
            && self.inb.is_empty()
            && self.cohort_out == [0; 3]
            && self.cohort_in == [0; 3]
    }
}

/// The uncorrected gauge, signed: census + up - down (a missed `up` can make it negative).
pub fn derived(census: u64, up: u64, down: u64) -> i64 {
    let v = i128::from(census) + i128::from(up) - i128::from(down);
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The gauge shown: derived plus offset, never below zero.
pub fn gauge(census: u64, up: u64, down: u64, offset: i64) -> u64 {
    let v = i128::from(census) + i128::from(up) - i128::from(down) + i128::from(offset);
    v.clamp(0, i128::from(u64::MAX)) as u64
}

/// The counters behind one uncorrected gauge: census at start, ups (established, accepted)
/// and downs (closed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub census: u64,
    pub up: u64,
    pub down: u64,
}

impl Counts {
    pub fn value(&self) -> i64 {
        derived(self.census, self.up, self.down)
    }
}

/// The uncorrected gauge of every address and cohort of a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    pub out: HashMap<IpAddr, Counts>,
    pub inb: HashMap<IpAddr, Counts>,
    pub cohort_out: [Counts; 3],
    pub cohort_in: [Counts; 3],
}

/// Derived `open` of a snapshot, from its counters and the census taken at start.
pub fn derive(snap: &Snapshot, start: &Table, sets: &Sets) -> Derived {
    let census = |m: &HashMap<IpAddr, u64>, a: &IpAddr| m.get(a).copied().unwrap_or(0);
    let counts = |census, up, down| Counts { census, up, down };
    let mut d = Derived::default();
    for (a, n) in &start.out {
        d.out.insert(*a, counts(*n, 0, 0));
    }
    for (a, n) in &start.inb {
        d.inb.insert(*a, counts(*n, 0, 0));
    }
    for r in &snap.destinations {
        let c = census(&start.out, &r.addr);
        d.out
            .insert(r.addr, counts(c, r.out.established, r.out.closed));
    }
    for r in &snap.locals {
        let c = census(&start.inb, &r.addr);
        d.inb
            .insert(r.addr, counts(c, r.inb.accepted, r.inb.closed));
    }
    let (co, ci) = start.by_cohort(sets);
    for i in 0..3 {
        d.cohort_out[i] = counts(co[i], snap.out[i].established, snap.out[i].closed);
        d.cohort_in[i] = counts(ci[i], snap.inb[i].accepted, snap.inb[i].closed);
    }
    d
}

/// The offset for one gauge from a census taken between two samples. The census matched the
/// gauge at some moment in between, which lies anywhere from `before` minus the downs of the
/// window to `before` plus its ups; of the offsets that fits, keep the one nearest the previous
/// offset. Exact when the window was quiet; a busy address is never corrected by the noise of
/// its own traffic, only by what exceeds it.
pub fn window_offset(real: u64, before: Counts, after: Counts, prev: i64) -> i64 {
    let d = i128::from(before.value());
    let ups = i128::from(after.up.saturating_sub(before.up));
    let downs = i128::from(after.down.saturating_sub(before.down));
    let r = i128::from(real);
    let (lo, hi) = (r - d - ups, r - d + downs);
    let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    clamp(i128::from(prev).clamp(lo, hi))
}

fn window(
    real: &HashMap<IpAddr, u64>,
    before: &HashMap<IpAddr, Counts>,
    after: &HashMap<IpAddr, Counts>,
    prev: &HashMap<IpAddr, i64>,
) -> HashMap<IpAddr, i64> {
    let mut out = HashMap::new();
    for a in real.keys().chain(before.keys()).chain(after.keys()) {
        let get = |m: &HashMap<IpAddr, Counts>| m.get(a).copied().unwrap_or_default();
        let r = real.get(a).copied().unwrap_or(0);
        let p = prev.get(a).copied().unwrap_or(0);
        let o = window_offset(r, get(before), get(after), p);
        if o != 0 {
            out.insert(*a, o);
        }
    }
    out
}

/// Offsets that make the derived gauge equal the real one (real - derived), per address (an
/// address the census found but no row has counts as derived 0) and per cohort, from a census
/// taken between the samples `before` and `after` (see `window_offset`).
pub fn offsets(
    real: &Table,
    before: &Derived,
    after: &Derived,
    prev: &Offsets,
    sets: &Sets,
) -> Offsets {
    let (ro, ri) = real.by_cohort(sets);
    let mut o = Offsets {
        out: window(&real.out, &before.out, &after.out, &prev.out),
        inb: window(&real.inb, &before.inb, &after.inb, &prev.inb),
        ..Offsets::default()
    };
    for i in 0..3 {
        let (b, a) = (before.cohort_out[i], after.cohort_out[i]);
        o.cohort_out[i] = window_offset(ro[i], b, a, prev.cohort_out[i]);
        let (b, a) = (before.cohort_in[i], after.cohort_in[i]);
        o.cohort_in[i] = window_offset(ri[i], b, a, prev.cohort_in[i]);
    }
    o
}

/// Set every `open` of a snapshot to derived + offset. Addresses with a positive corrected
/// gauge but no row (real connections the maps do not show) get a row of their own.
pub fn apply(snap: &mut Snapshot, start: &Table, off: &Offsets, sets: &Sets) {
    let get = |m: &HashMap<IpAddr, u64>, a: &IpAddr| m.get(a).copied().unwrap_or(0);
    let offset = |m: &HashMap<IpAddr, i64>, a: &IpAddr| m.get(a).copied().unwrap_or(0);
    for r in &mut snap.destinations {
        let c = get(&start.out, &r.addr);
        r.out.open = gauge(
            c,
            r.out.established,
            r.out.closed,
            offset(&off.out, &r.addr),
        );
    }
    for r in &mut snap.locals {
        let c = get(&start.inb, &r.addr);
        r.inb.open = gauge(c, r.inb.accepted, r.inb.closed, offset(&off.inb, &r.addr));
    }
    let seen: std::collections::HashSet<IpAddr> =
        snap.destinations.iter().map(|r| r.addr).collect();
    for (a, o) in &off.out {
        let open = gauge(get(&start.out, a), 0, 0, *o);
        if open > 0 && !seen.contains(a) {
            snap.destinations.push(DestRow {
                addr: *a,
                cohort: sets.cohort(*a),
                out: Out {
                    open,
                    ..Out::default()
                },
            });
        }
    }
    let seen: std::collections::HashSet<IpAddr> = snap.locals.iter().map(|r| r.addr).collect();
    for (a, o) in &off.inb {
        let open = gauge(get(&start.inb, a), 0, 0, *o);
        if open > 0 && !seen.contains(a) {
            snap.locals.push(LocalRow {
                addr: *a,
                cohort: sets.cohort(*a),
                inb: In {
                    open,
                    ..In::default()
                },
            });
        }
    }
    let (co, ci) = start.by_cohort(sets);
    for i in 0..3 {
        let (o, n) = (&mut snap.out[i], &mut snap.inb[i]);
        o.open = gauge(co[i], o.established, o.closed, off.cohort_out[i]);
        n.open = gauge(ci[i], n.accepted, n.closed, off.cohort_in[i]);
    }
}

/// How much one reconciliation moved the `open` shown, per cohort, and how many addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Correction {
    pub out: [i64; 3],
    pub inb: [i64; 3],
    pub addresses: u64,
}

impl Correction {
    pub fn is_zero(&self) -> bool {
        self.out == [0; 3] && self.inb == [0; 3] && self.addresses == 0
    }
}

/// The change between a snapshot before and after its offsets were replaced.
pub fn change(before: &Snapshot, after: &Snapshot) -> Correction {
    let mut ch = Correction::default();
    for i in 0..3 {
        ch.out[i] = after.out[i].open as i64 - before.out[i].open as i64;
        ch.inb[i] = after.inb[i].open as i64 - before.inb[i].open as i64;
    }
    let dest: HashMap<IpAddr, u64> = before
        .destinations
        .iter()
        .map(|r| (r.addr, r.out.open))
        .collect();
    let local: HashMap<IpAddr, u64> = before.locals.iter().map(|r| (r.addr, r.inb.open)).collect();
    let moved =
        |m: &HashMap<IpAddr, u64>, a: &IpAddr, open: u64| m.get(a).copied().unwrap_or(0) != open;
    ch.addresses = after
        .destinations
        .iter()
        .filter(|r| moved(&dest, &r.addr, r.out.open))
        .count() as u64
        + after
            .locals
            .iter()
            .filter(|r| moved(&local, &r.addr, r.inb.open))
            .count() as u64;
    ch
}

/// Why a reconciliation ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The kernel skipped program runs since the last one.
    LostEvents,
    /// A per-socket record could not be stored since the last one.
    SockInsertFailed,
    /// `--reconcile-every`.
    Every,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::LostEvents => "lost_events",
            Trigger::SockInsertFailed => "sock_insert_failed",
            Trigger::Every => "every",
        }
    }
}

/// Losses trigger a census at most this often: on a host that loses a few events every second
/// a census (whose cost grows with open sockets) must not run every interval.
pub const MIN_GAP: Duration = Duration::from_secs(10);

/// When to reconcile: after losses (at most every `MIN_GAP`) and every `every` if given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    every: Option<Duration>,
    min_gap: Duration,
    last: Option<Duration>,
    lost: u64,
    failed: u64,
}

impl Policy {
    pub fn new(every: Option<Duration>, min_gap: Duration) -> Self {
        Policy {
            every,
            min_gap,
            last: None,
            lost: 0,
            failed: 0,
        }
    }

    /// At a tick `now` (since start) with the loss counters so far: is a census due, and why.
    /// Losses not yet acted on stay pending until the gap has passed.
    pub fn due(&self, now: Duration, lost: u64, insert_failed: u64) -> Option<Trigger> {
        let since = self.last.map(|l| now.saturating_sub(l));
        let loss = if lost > self.lost {
            Some(Trigger::LostEvents)
        } else if insert_failed > self.failed {
            Some(Trigger::SockInsertFailed)
        } else {
            None
        };
        if loss.is_some() && since.is_none_or(|s| s >= self.min_gap) {
            return loss;
        }
        match self.every {
            Some(e) if since.unwrap_or(now) >= e => Some(Trigger::Every),
            _ => None,
        }
    }

    /// A census was taken at `now`; it covers the losses counted so far.
    pub fn done(&mut self, now: Duration, lost: u64, insert_failed: u64) {
        self.last = Some(now);
        self.lost = lost;
        self.failed = insert_failed;
    }
}

#[cfg(test)]
mod tests;
