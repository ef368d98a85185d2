//! Model states for the view's tests: a simulated move from old to new, built from plain data.
//! Every number on the snapshots comes from here, through the same pure code the live view uses.

use std::time::{Duration, SystemTime};

use super::state::ViewState;
use crate::{
    kernel::{Hooks, hooks::ConnectHook},
    model::{
        addr::Prefix,
        analysis::{Analysis, Params, Sample, cutover::CutoverSource, dns::Answer},
        cohort::Cohort,
        counters::Out,
        snapshot::{DestRow, ProcRow, Snapshot},
        spec::Spec,
    },
    sink::{Event, EventKind, RunInfo},
};

fn spec(text: &str, prefixes: &[&str], resolved: bool) -> Spec {
    Spec {
        text: text.into(),
        prefixes: prefixes.iter().map(|p| Prefix::parse(p).unwrap()).collect(),
        resolved,
    }
}

pub fn info() -> RunInfo {
    RunInfo {
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        host: "edge-7".into(),
        kernel: "6.18.44".into(),
        hooks: Hooks {
            connect: ConnectHook::Derived,
            state: "tracepoint",
            fallbacks: vec![
                (
                    ConnectHook::Fentry,
                    "the kernel refuses fentry programs here (EPERM)".into(),
                ),
                (
                    ConnectHook::Kprobe,
                    "kprobes are not enabled in this kernel".into(),
                ),
            ],
            tracefs_mounted: false,
            unsent: Ok(()),
            dns: Ok(()),
        },
        old: vec![spec("127.10.0.0/16", &["127.10.0.0/16"], false)],
        new: vec![spec("api.example", &["127.20.0.7"], true)],
        ports: vec![],
        filters: Default::default(),
        interval_ms: 1000,
        max_destinations: 65536,
        census_outbound: 0,
        census_inbound: 0,
        top: 20,
        analysis: Default::default(),
        census_owners: vec![],
        cutover_at: None,
        watch_dns: vec![],
        reconcile_every: None,
        metrics_addr: None,
    }
}

pub fn event(elapsed_ms: u64, kind: EventKind) -> Event {
    Event {
        at: info().started_at + Duration::from_millis(elapsed_ms),
        elapsed_ms,
        kind,
    }
}

/// Cumulative counters of one destination, stepped one second at a time.
#[derive(Default, Clone, Copy)]
struct Acc {
    out: Out,
}

impl Acc {
    fn step(&mut self, attempts: u64, failed: u64, open: u64) {
        let o = &mut self.out;
        o.attempts += attempts;
        o.failed += failed;
        o.established += attempts - failed;
        o.closed = o.closed.max(o.established.saturating_sub(open));
        o.open = o.established - o.closed;
    }
}

const DESTS: [(&str, Cohort); 5] = [
    ("127.10.0.1", Cohort::Old),
    ("127.10.0.2", Cohort::Old),
    ("127.20.0.7", Cohort::New),
    ("127.0.0.53", Cohort::Other),
    ("::1", Cohort::Other),
];

/// A run of `secs` seconds in which `moved` (0.0..=1.0) of the traffic has gone from old to new
/// by the end, moving linearly; 100 connects/s between old and new, a few to other addresses.
pub fn run(secs: u64, moved: f64) -> ViewState {
    let mut st = ViewState::new(info());
    for (hook, why) in st.info.hooks.fallbacks.clone() {
        st.event(&event(
            0,
            EventKind::HookFallback {
                hook,
                reason: why,
                using: ConnectHook::Derived,
            },
        ));
    }
    let mut acc = [Acc::default(); DESTS.len()];
    let mut analysis = Analysis::new(Params::default());
    let dns = vec![Answer {
        name: "api.example".into(),
        addrs: ["127.20.0.7".parse().unwrap()].into(),
        ttl: 3600,
        at_ms: Some(0),
        error: None,
        servers: vec![],
    }];
    let mut prev = Snapshot::empty(st.info.started_at);
    for t in 1..=secs {
        let frac = moved * t as f64 / secs as f64;
        let old = (100.0 * (1.0 - frac)).round() as u64;
        let new = 100 - old;
        let plan = [
            (old - old / 3, 0, (old - old / 3) / 2),
            (old / 3, old / 10, old / 6),
            (new, 0, new / 2),
            (3, 0, 1),
            (if t % 4 == 0 { 1 } else { 0 }, 0, 0),
        ];
        for (a, (attempts, failed, open)) in acc.iter_mut().zip(plan) {
            a.step(attempts, failed, open);
        }
        let mut cur = Snapshot::empty(st.info.started_at + Duration::from_secs(t));
        cur.elapsed = Duration::from_secs(t);
        for (a, (addr, cohort)) in acc.iter().zip(DESTS) {
            cur.out[cohort as usize].add(&a.out);
            cur.destinations.push(DestRow {
                addr: addr.parse().unwrap(),
                cohort,
                out: a.out,
            });
        }
        let proc_row = |pid, comm: &str, i: usize, share: u64| ProcRow {
            pid,
            comm: comm.into(),
            cgroup: 4242,
            destinations: 1,
            cohort: DESTS[i].1,
            out: Out {
                attempts: acc[i].out.attempts * share / 4,
                open: acc[i].out.open * share / 4,
                ..acc[i].out
            },
        };
        cur.processes = vec![
            proc_row(4242, "java", 0, 3),
            proc_row(4242, "java", 2, 4),
            proc_row(1313, "legacy-cron", 1, 4),
            proc_row(977, "curl", 0, 1),
        ];
        // Old-side failures: refused, and one in five timing out; connects take 33-65 us, one
        // in twenty on the new side waits for a SYN retransmission (~1 s).
        let failed = acc[1].out.failed;
        cur.reasons[Cohort::Old as usize].0[..2]
            .copy_from_slice(&[failed - failed / 5, failed / 5]);
        for c in [Cohort::Old, Cohort::New] {
            let n = cur.out[c as usize].established;
            let slow = if c == Cohort::New { n / 20 } else { 0 };
            let lat = &mut cur.latency[c as usize].established;
            lat.0[15] = n - slow;
            lat.0[29] = slow;
        }
        if t == secs / 2 && moved > 0.0 && moved < 1.0 {
            st.event(&event(
                t * 1000,
                EventKind::Cutover {
                    source: CutoverSource::Key,
                    name: None,
                },
            ));
            analysis.mark_cutover(t * 1000, CutoverSource::Key);
        }
        analysis.feed(Sample::of(&cur, &prev, 20));
        st.analysis(&analysis.state(), &dns);
        st.push(&cur, &prev);
        prev = cur;
    }
    st
}

pub fn empty() -> ViewState {
    ViewState::new(info())
}

pub fn mid_failover() -> ViewState {
    run(120, 0.75)
}

pub fn fully_new() -> ViewState {
    run(300, 1.0)
}
