//! Typed events: everything a run records besides snapshots. The NDJSON writer serializes them
//! (`ndjson::writer::event`); the live view logs `message()`; nothing matches on strings.

use std::time::SystemTime;

use crate::{
    kernel::hooks::ConnectHook,
    model::{
        addr::Prefix,
        analysis::{
            Finding, State, cutover::CutoverSource, dns::AnswerChange, drain::DrainChange,
            gap::Crossed,
        },
        reconcile::{Correction, Trigger},
        resolvers::{DnsVia, NameRows},
    },
};

/// Something that happened, dated.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub at: SystemTime,
    pub elapsed_ms: u64,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A connect hook could not be used; `using` counts instead.
    HookFallback {
        hook: ConnectHook,
        reason: String,
        using: ConnectHook,
    },
    TracefsMounted {
        path: String,
    },
    /// Connects that fail before a SYN cannot be counted on this host.
    UnsentNotCounted {
        reason: String,
    },
    /// The DNS answer capture cannot attach on this host.
    DnsNotCaptured {
        reason: String,
    },
    /// A DNS answer a process received (the event's `at`: when it arrived).
    DnsAnswer(Box<crate::model::dns_seen::DnsAnswerSeen>),
    /// The move was declared (the event's `at`). Only the first one is recorded.
    Cutover {
        source: CutoverSource,
        /// The watched name whose answer changed (`source` dns).
        name: Option<String>,
    },
    DnsChange {
        change: AnswerChange,
        long_ttl: bool,
        /// Addresses the change added to the new side (`--watch-dns` without `--old/--new`).
        added_to_new: Vec<Prefix>,
        /// The server that answered it, and its lag behind the first that switched.
        via: DnsVia,
    },
    /// A `--dns-server` still answers old after the TTL it gave for it ran out.
    DnsStale {
        name: String,
        server: String,
        answer: std::collections::BTreeSet<std::net::IpAddr>,
        expected_ms: Option<u64>,
        first_switch_ms: Option<u64>,
    },
    /// Every server's current answer for one name (`--dns-server`), when one changed.
    DnsServers(Box<NameRows>),
    Evicted {
        destinations: u64,
    },
    LostEvents {
        lost: u64,
    },
    Reconciled {
        trigger: Trigger,
        change: Correction,
        /// Corrections in effect per cohort (outbound, inbound).
        offset: ([i64; 3], [i64; 3]),
    },
    ReconcileFailed {
        trigger: Trigger,
        reason: String,
    },
    Finding(Finding),
    /// The analysis as it stands at the end (the object `tracer report --json` computes).
    Analysis(Box<State>),
}

impl EventKind {
    /// The NDJSON `kind`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::HookFallback { .. } => "hook_fallback",
            EventKind::TracefsMounted { .. } => "tracefs_mounted",
            EventKind::UnsentNotCounted { .. } => "unsent_not_counted",
            EventKind::DnsNotCaptured { .. } => "dns_not_captured",
            EventKind::DnsAnswer(_) => crate::dns_answer::EVENT,
            EventKind::Cutover { .. } => "cutover",
            EventKind::DnsChange { .. } => "dns_change",
            EventKind::DnsStale { .. } => "dns_stale",
            EventKind::DnsServers(_) => "dns_servers",
            EventKind::Evicted { .. } => "evicted",
            EventKind::LostEvents { .. } => "lost_events",
            EventKind::Reconciled { .. } => "reconciled",
            EventKind::ReconcileFailed { .. } => "reconcile_failed",
            EventKind::Finding(f) => match f {
                Finding::Threshold { .. } => "threshold",
                Finding::Gap { .. } => "gap",
                Finding::Drain(_) => "drained",
            },
            EventKind::Analysis(_) => "analysis",
        }
    }

    /// One sentence for a person (the NDJSON `message`, the live view's log).
    pub fn message(&self) -> String {
        let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        let list = |v: &std::collections::BTreeSet<std::net::IpAddr>| {
            let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
            if s.is_empty() {
                "nothing".into()
            } else {
                s.join(", ")
            }
        };
        match self {
            EventKind::HookFallback {
                hook,
                reason,
                using,
            } => format!(
                "{} not used, counting with {}: {reason}",
                hook.name(),
                using.name()
            ),
            EventKind::TracefsMounted { path } => {
                format!("tracefs was not mounted: mounted it at {path}")
            }
            EventKind::UnsentNotCounted { reason } => format!(
                "connects failing before a SYN (no route, no port) are not counted: {reason}"
            ),
            EventKind::DnsNotCaptured { reason } => {
                format!("DNS answers per process are not captured: {reason}")
            }
            EventKind::DnsAnswer(a) => crate::dns_answer::message(a),
            EventKind::Cutover { source, name } => match name {
                Some(n) => format!("cutover marked ({}: {n} changed)", source.name()),
                None => format!("cutover marked ({})", source.name()),
            },
            EventKind::DnsStale { name, server, .. } => {
                crate::dns::events::stale_message(name, server)
            }
            EventKind::DnsServers(n) => format!(
                "{}: {}",
                n.name,
                n.rows
                    .iter()
                    .map(|r| format!(
                        "{} {}",
                        r.server,
                        r.reply.as_ref().map_or("none", |x| x.kind())
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            EventKind::DnsChange {
                change,
                long_ttl,
                via,
                ..
            } => {
                let at = match via.server.as_str() {
                    "system" => String::new(),
                    s => format!(" at {s}"),
                };
                let mut m = format!(
                    "{}{at} now answers {} (was {}), TTL {} s",
                    change.name,
                    list(&change.new),
                    list(&change.old),
                    change.ttl
                );
                if *long_ttl {
                    m.push_str(&format!(
                        ": above {} s, clients may keep the old answer that long",
                        crate::model::analysis::dns::LONG_TTL_S
                    ));
                }
                m
            }
            EventKind::Evicted { destinations } => format!(
                "per-destination map full: {destinations} least recently used destinations evicted; cohort totals stay exact (raise --max-destinations)"
            ),
            EventKind::LostEvents { lost } => format!(
                "the kernel skipped {lost} BPF program runs (recursion on one CPU); counts may be short by this many events"
            ),
            EventKind::Reconciled {
                trigger, change, ..
            } => {
                let mut parts = vec![];
                for (v, label) in [(change.out, ""), (change.inb, "inbound ")] {
                    for c in crate::model::cohort::Cohort::ALL {
                        let n = v[c as usize];
                        if n != 0 {
                            parts.push(format!("{label}{} {n:+}", c.name()));
                        }
                    }
                }
                let what = match parts.is_empty() {
                    true => "no change".to_string(),
                    false => parts.join(", "),
                };
                format!(
                    "open checked against the socket table ({}): {what}",
                    trigger.name()
                )
            }
            EventKind::ReconcileFailed { reason, .. } => {
                format!("cannot check open against the socket table: {reason}")
            }
            EventKind::Finding(Finding::Threshold {
                metric,
                level,
                change,
                gap_ms,
            }) => {
                let (what, c) = match change {
                    Crossed::Reached(c) => ("reached", c),
                    Crossed::Lost(c) => ("lost", c),
                };
                let gap = gap_ms
                    .map(|g| format!(", {:+.1} s after the cutover", g as f64 / 1000.0))
                    .unwrap_or_default();
                format!(
                    "new share of {} {what} {level} % at {}{gap}",
                    metric.name(),
                    secs(c.reached_ms)
                )
            }
            EventKind::Finding(Finding::Gap {
                metric,
                level,
                gap_ms,
                ..
            }) => format!(
                "declaration gap for {} at {level} %: {:+.1} s",
                metric.name(),
                *gap_ms as f64 / 1000.0
            ),
            EventKind::Finding(Finding::Drain(DrainChange::Drained { since_ms, .. })) => {
                format!("old side drained: quiet since {}", secs(*since_ms))
            }
            EventKind::Finding(Finding::Drain(DrainChange::Busy { .. })) => {
                "the old side is busy again".into()
            }
            EventKind::Analysis(_) => "final analysis recorded".into(),
        }
    }
}
