//! DNS watch, the pure part: the answer set of each watched name over time, and its changes.
//! A TTL above `LONG_TTL_S` is flagged: clients may keep the old answer that long after a change.

use std::{collections::BTreeSet, net::IpAddr};

pub const LONG_TTL_S: u32 = 300;

/// One watched name and what it resolves to now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub addrs: BTreeSet<IpAddr>,
    pub ttl: u32,
    /// When the answer was last taken (ms since start); None before the first answer.
    pub at_ms: Option<u64>,
    /// The last lookup failed with this error (the previous answer is kept).
    pub error: Option<String>,
    /// Each server's view with `--dns-server` (the system resolver first); else empty.
    pub servers: Vec<crate::model::resolvers::Row>,
}

impl Answer {
    pub fn long_ttl(&self) -> bool {
        self.ttl > LONG_TTL_S
    }
}

/// A change of a name's answer set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerChange {
    pub name: String,
    pub old: BTreeSet<IpAddr>,
    pub new: BTreeSet<IpAddr>,
    pub ttl: u32,
    pub at_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub struct DnsWatch {
    pub answers: Vec<Answer>,
}

impl DnsWatch {
    pub fn new(names: &[String]) -> Self {
        DnsWatch {
            answers: names
                .iter()
                .map(|n| Answer {
                    name: n.clone(),
                    addrs: BTreeSet::new(),
                    ttl: 0,
                    at_ms: None,
                    error: None,
                    servers: vec![],
                })
                .collect(),
        }
    }

    /// Record a lookup of name `i`: Ok((addresses, ttl)) or the error. The first answer is the
    /// baseline; afterwards a different set is a change. An error or an empty answer is not a
    /// change (the old addresses may well still be in use).
    pub fn observe(
        &mut self,
        i: usize,
        at_ms: u64,
        result: Result<(BTreeSet<IpAddr>, u32), String>,
    ) -> Option<AnswerChange> {
        let a = &mut self.answers[i];
        let (addrs, ttl) = match result {
            Ok(r) if !r.0.is_empty() => r,
            Ok(_) => {
                a.error = Some("no addresses in the answer".into());
                return None;
            }
            Err(e) => {
                a.error = Some(e);
                return None;
            }
        };
        a.error = None;
        a.ttl = ttl;
        let first = a.at_ms.is_none();
        a.at_ms = Some(at_ms);
        if first || addrs == a.addrs {
            a.addrs = addrs;
            return None;
        }
        let old = std::mem::replace(&mut a.addrs, addrs.clone());
        Some(AnswerChange {
            name: a.name.clone(),
            old,
            new: addrs,
            ttl,
            at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(a: &[&str]) -> BTreeSet<IpAddr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn first_answer_is_the_baseline_then_changes_are_reported() {
        let mut w = DnsWatch::new(&["api.test".into()]);
        assert_eq!(w.observe(0, 0, Ok((set(&["127.10.0.1"]), 600))), None);
        assert!(w.answers[0].long_ttl());
        assert_eq!(w.observe(0, 1000, Ok((set(&["127.10.0.1"]), 30))), None);
        assert!(!w.answers[0].long_ttl());
        let c = w.observe(0, 2000, Ok((set(&["127.20.0.1", "127.20.0.2"]), 30)));
        assert_eq!(
            c,
            Some(AnswerChange {
                name: "api.test".into(),
                old: set(&["127.10.0.1"]),
                new: set(&["127.20.0.1", "127.20.0.2"]),
                ttl: 30,
                at_ms: 2000
            })
        );
    }

    #[test]
    fn failures_and_empty_answers_keep_the_last_answer() {
        let mut w = DnsWatch::new(&["a".into()]);
        w.observe(0, 0, Ok((set(&["127.10.0.1"]), 5)));
        assert_eq!(w.observe(0, 1, Err("timeout".into())), None);
        assert_eq!(w.answers[0].error.as_deref(), Some("timeout"));
        assert_eq!(w.observe(0, 2, Ok((BTreeSet::new(), 5))), None);
        assert_eq!(w.answers[0].addrs, set(&["127.10.0.1"]));
        assert_eq!(w.observe(0, 3, Ok((set(&["127.10.0.1"]), 5))), None);
        assert_eq!(w.answers[0].error, None);
    }
}
