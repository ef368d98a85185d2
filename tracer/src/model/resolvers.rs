//! Per-resolver DNS view, the pure part: what each server answers for a watched name, when it
//! switched from the old answer, and the "resolver gap" (how far each one lags the first to
//! switch). A server that still answers old after the TTL it reported for the old answer at the
//! first switch has run out is flagged stale: it keeps answers longer than it said it would.

use std::{collections::BTreeSet, net::IpAddr};

/// What one server said about a name, A and AAAA together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Addresses, the CNAME chain followed to them (each target in order) and the smallest
    /// remaining TTL of the address records, as the server reports it.
    Addrs {
        addrs: BTreeSet<IpAddr>,
        cnames: Vec<String>,
        ttl: u32,
    },
    /// No addresses: NXDOMAIN (the name does not exist) or an empty answer (it exists without
    /// A/AAAA). The negative-cache TTL comes from the SOA the server sent, when it sent one.
    Negative {
        nxdomain: bool,
        cnames: Vec<String>,
        negative_ttl: Option<u32>,
    },
}

impl Reply {
    /// The TTL that bounds how long this reply may be cached: the address TTL or the negative one.
    pub fn ttl(&self) -> Option<u32> {
        match self {
            Reply::Addrs { ttl, .. } => Some(*ttl),
            Reply::Negative { negative_ttl, .. } => *negative_ttl,
        }
    }

    pub fn cnames(&self) -> &[String] {
        match self {
            Reply::Addrs { cnames, .. } | Reply::Negative { cnames, .. } => cnames,
        }
    }

    /// `NXDOMAIN`, `NODATA` or `addresses`: what kind of answer it is.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Addrs { .. } => "addresses",
            Reply::Negative { nxdomain: true, .. } => "nxdomain",
            Reply::Negative { .. } => "nodata",
        }
    }

    /// Merge the A and the AAAA reply of one server: addresses are the union, the TTL the
    /// smaller; negative only when both are (NXDOMAIN when either says so).
    pub fn merge(a: Reply, b: Reply) -> Reply {
        match (a, b) {
            (
                Reply::Addrs {
                    addrs: mut x,
                    cnames,
                    ttl: t1,
                },
                Reply::Addrs {
                    addrs: y, ttl: t2, ..
                },
            ) => {
                x.extend(y);
                Reply::Addrs {
                    addrs: x,
                    cnames,
                    ttl: t1.min(t2),
                }
            }
            (r @ Reply::Addrs { .. }, Reply::Negative { .. })
            | (Reply::Negative { .. }, r @ Reply::Addrs { .. }) => r,
            (
                Reply::Negative {
                    nxdomain: n1,
                    cnames,
                    negative_ttl: t1,
                },
                Reply::Negative {
                    nxdomain: n2,
                    negative_ttl: t2,
                    ..
                },
            ) => Reply::Negative {
                nxdomain: n1 || n2,
                cnames,
                negative_ttl: match (t1, t2) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            },
        }
    }
}

/// One server's view of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `system` (the resolv.conf resolver) or `ADDR:PORT`.
    pub server: String,
    /// The latest reply; kept when a later lookup fails.
    pub reply: Option<Reply>,
    /// The latest lookup failed with this error.
    pub error: Option<String>,
    /// When the latest reply or error came (ms since start).
    pub at_ms: Option<u64>,
    /// The last address set it answered (the baseline first).
    pub addrs: BTreeSet<IpAddr>,
    /// When its answer first changed from the baseline.
    pub switched_ms: Option<u64>,
    /// When its cached old answer runs out by the TTL it reported (latest address reply).
    expires_ms: Option<u64>,
    /// Set at the first switch of any server: by then this one should have switched too.
    pub expected_ms: Option<u64>,
    /// Still answering the old addresses after `expected_ms` (plus a grace).
    pub stale: bool,
}

impl Row {
    fn new(server: &str) -> Row {
        Row {
            server: server.into(),
            reply: None,
            error: None,
            at_ms: None,
            addrs: BTreeSet::new(),
            switched_ms: None,
            expires_ms: None,
            expected_ms: None,
            stale: false,
        }
    }

    /// Seconds of TTL left now for the latest reply (its TTL less the time since it came).
    pub fn remaining_ttl(&self, now_ms: u64) -> Option<u32> {
        let ttl = self.reply.as_ref()?.ttl()?;
        let age = now_ms.saturating_sub(self.at_ms?) / 1000;
        Some(ttl.saturating_sub(age.min(u32::MAX as u64) as u32))
    }
}

/// A change of one server's address set for a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub server: String,
    pub old: BTreeSet<IpAddr>,
    pub new: BTreeSet<IpAddr>,
    pub ttl: u32,
    pub at_ms: u64,
    /// Behind the first server that switched for this name (0 for that one).
    pub lag_ms: u64,
}

/// Where a `dns_change` was seen: the server, its lag behind the first server that switched,
/// and the CNAME chain to the new addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsVia {
    pub server: String,
    pub lag_ms: u64,
    pub cnames: Vec<String>,
}

impl DnsVia {
    /// The system resolver, without per-server tracking (tests).
    #[cfg(test)]
    pub fn system() -> DnsVia {
        DnsVia {
            server: "system".into(),
            lag_ms: 0,
            cnames: vec![],
        }
    }
}

/// All servers' rows for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRows {
    pub name: String,
    pub rows: Vec<Row>,
    pub first_switch_ms: Option<u64>,
}

impl NameRows {
    pub fn new(name: &str, servers: &[String]) -> NameRows {
        NameRows {
            name: name.into(),
            rows: servers.iter().map(|s| Row::new(s)).collect(),
            first_switch_ms: None,
        }
    }

    /// Record server `i`'s lookup at `at_ms`. The first address set is the baseline; a later
    /// different one is a change. Errors and negative replies are shown but change nothing:
    /// the addresses last answered may well still be in use.
    pub fn observe(
        &mut self,
        i: usize,
        at_ms: u64,
        result: Result<Reply, String>,
    ) -> Option<Change> {
        let row = &mut self.rows[i];
        let baseline = row.at_ms.is_none();
        row.at_ms = Some(at_ms);
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                row.error = Some(e);
                return None;
            }
        };
        row.error = None;
        let (addrs, ttl) = match &reply {
            Reply::Addrs { addrs, ttl, .. } if !addrs.is_empty() => (addrs.clone(), *ttl),
            _ => {
                row.reply = Some(reply);
                return None;
            }
        };
        row.reply = Some(reply);
        row.expires_ms = Some(at_ms + u64::from(ttl) * 1000);
        if baseline || row.addrs.is_empty() || addrs == row.addrs {
            // An earlier negative reply or error left no baseline: this is it.
            if row.addrs.is_empty() {
                row.addrs = addrs;
            }
            return None;
        }
        let old = std::mem::replace(&mut row.addrs, addrs.clone());
        if row.switched_ms.is_none() {
            row.switched_ms = Some(at_ms);
            row.stale = false;
        }
        let first = *self.first_switch_ms.get_or_insert_with(|| {
            for r in &mut self.rows {
                if r.switched_ms.is_none() {
                    r.expected_ms = r.expires_ms.map(|e| e.max(at_ms));
                }
            }
            at_ms
        });
        Some(Change {
            name: self.name.clone(),
            server: self.rows[i].server.clone(),
            old,
            new: addrs,
            ttl,
            at_ms,
            lag_ms: at_ms.saturating_sub(first),
        })
    }

    /// After a round of lookups: flag servers still answering old past their expected switch
    /// (plus `grace_ms`: TTLs are whole seconds and lookups come once an interval). Returns the
    /// rows that became stale now.
    pub fn check_stale(&mut self, now_ms: u64, grace_ms: u64) -> Vec<usize> {
        let mut newly = vec![];
        for (i, r) in self.rows.iter_mut().enumerate() {
            let answering_old = r.error.is_none()
                && matches!(&r.reply, Some(Reply::Addrs { addrs, .. }) if *addrs == r.addrs);
            let late = r.expected_ms.is_some_and(|e| now_ms > e + grace_ms);
            let stale = r.switched_ms.is_none() && answering_old && late;
            if stale && !r.stale {
                newly.push(i);
            }
            r.stale = stale;
        }
        newly
    }
}

/// One server's line of the resolver gap, as a report gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GapRow {
    pub server: String,
    pub switched_ms: Option<u64>,
    /// Behind the first server that switched; None when it did not switch.
    pub lag_ms: Option<u64>,
}

/// The resolver gap of one name from each server's first switch (None: never switched):
/// per server its lag behind the first, and the largest lag among those that switched.
pub fn resolver_gap(switches: &[(String, Option<u64>)]) -> (Vec<GapRow>, Option<u64>) {
    let first = switches.iter().filter_map(|(_, t)| *t).min();
    let rows: Vec<GapRow> = switches
        .iter()
        .map(|(s, t)| GapRow {
            server: s.clone(),
            switched_ms: *t,
            lag_ms: t.zip(first).map(|(t, f)| t - f),
        })
        .collect();
    let gap = rows.iter().filter_map(|r| r.lag_ms).max();
    (rows, gap)
}

/// `tracer preflight` for one name: the largest TTL any server gave (address or negative
/// TTL: a name that is missing can be cached as missing), whether one is above the limit, and
/// whether any server answered at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub largest_ttl: Option<u32>,
    pub over: bool,
    pub answered: bool,
}

pub fn verdict<'a>(
    replies: impl IntoIterator<Item = &'a Result<Reply, String>>,
    max_ttl_s: u64,
) -> Verdict {
    let mut v = Verdict {
        largest_ttl: None,
        over: false,
        answered: false,
    };
    for r in replies.into_iter().flatten() {
        v.answered = true;
        if let Some(t) = r.ttl() {
            v.largest_ttl = Some(v.largest_ttl.map_or(t, |m| m.max(t)));
            v.over |= u64::from(t) > max_ttl_s;
        }
    }
    v
}

/// The exit code of `tracer preflight`: 2 when a name got no answer, else 1 when a TTL is above
/// the limit, else 0.
pub fn preflight_exit(verdicts: &[Verdict]) -> i32 {
    if verdicts.iter().any(|v| !v.answered) {
        2
    } else if verdicts.iter().any(|v| v.over) {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(a: &[&str], ttl: u32) -> Result<Reply, String> {
        Ok(Reply::Addrs {
            addrs: a.iter().map(|s| s.parse().unwrap()).collect(),
            cnames: vec![],
            ttl,
        })
    }

    fn servers() -> Vec<String> {
        ["system", "auth", "cache"].map(String::from).to_vec()
    }

    #[test]
    fn the_first_switch_sets_the_lag_and_each_cache_its_expected_time() {
        let mut n = NameRows::new("api", &servers());
        for i in 0..3 {
            assert_eq!(n.observe(i, 0, addrs(&["10.0.0.1"], 30)), None);
        }
        // 10 s later the cache reports 20 s left; then the authoritative server switches.
        assert_eq!(n.observe(2, 10_000, addrs(&["10.0.0.1"], 20)), None);
        let c = n.observe(1, 11_000, addrs(&["10.0.0.2"], 30)).unwrap();
        assert_eq!((c.server.as_str(), c.lag_ms, c.ttl), ("auth", 0, 30));
        assert_eq!(n.first_switch_ms, Some(11_000));
        assert_eq!(n.rows[2].expected_ms, Some(30_000));
        assert_eq!(n.rows[0].expected_ms, Some(30_000));
        assert!(n.check_stale(31_000, 1_000).is_empty());
        // The cache switches when its TTL ran out: 19 s behind.
        let c = n.observe(2, 30_200, addrs(&["10.0.0.2"], 30)).unwrap();
        assert_eq!((c.server.as_str(), c.lag_ms), ("cache", 19_200));
        assert_eq!(c.old, ["10.0.0.1".parse().unwrap()].into());
        // The system resolver still answers old past 30 s + grace: stale, reported once.
        n.observe(0, 31_500, addrs(&["10.0.0.1"], 5));
        assert_eq!(n.check_stale(31_500, 1_000), vec![0]);
        assert!(n.check_stale(31_700, 1_000).is_empty());
        assert!(n.rows[0].stale && !n.rows[2].stale);
        let c = n.observe(0, 40_000, addrs(&["10.0.0.2"], 30)).unwrap();
        assert_eq!(c.lag_ms, 29_000);
        n.check_stale(40_000, 1_000);
        assert!(!n.rows[0].stale);
    }

    #[test]
    fn errors_and_negative_replies_change_nothing_and_are_not_stale() {
        let mut n = NameRows::new("api", &servers());
        n.observe(0, 0, addrs(&["10.0.0.1"], 5));
        n.observe(2, 0, addrs(&["10.0.0.1"], 5));
        assert_eq!(n.observe(0, 100, Err("timeout".into())), None);
        assert_eq!(n.rows[0].error.as_deref(), Some("timeout"));
        let neg = Reply::Negative {
            nxdomain: true,
            cnames: vec![],
            negative_ttl: Some(7),
        };
        assert_eq!(n.observe(0, 200, Ok(neg.clone())), None);
        assert_eq!(n.rows[0].reply, Some(neg));
        assert_eq!(n.rows[0].remaining_ttl(2_300), Some(5));
        n.observe(2, 300, addrs(&["10.0.0.2"], 5));
        assert!(
            n.check_stale(60_000, 1_000).is_empty(),
            "a negative reply is not the old one"
        );
        // A server first seen negative takes its first addresses as the baseline.
        assert_eq!(n.observe(1, 0, Err("refused".into())), None);
        assert_eq!(n.observe(1, 400, addrs(&["10.0.0.2"], 5)), None);
        assert_eq!(n.rows[1].switched_ms, None);
    }

    #[test]
    fn a_and_aaaa_merge() {
        let v6 = Reply::Addrs {
            addrs: ["fd00::1".parse().unwrap()].into(),
            cnames: vec!["b.".into()],
            ttl: 3,
        };
        let m = Reply::merge(addrs(&["10.0.0.1"], 9).unwrap(), v6.clone());
        assert_eq!(m.ttl(), Some(3));
        assert_eq!(m.kind(), "addresses");
        let nodata = Reply::Negative {
            nxdomain: false,
            cnames: vec![],
            negative_ttl: Some(60),
        };
        assert_eq!(Reply::merge(nodata.clone(), v6.clone()), v6);
        let nx = Reply::Negative {
            nxdomain: true,
            cnames: vec![],
            negative_ttl: Some(7),
        };
        let both = Reply::merge(nodata, nx);
        assert_eq!((both.kind(), both.ttl()), ("nxdomain", Some(7)));
    }

    #[test]
    fn the_resolver_gap_is_the_largest_lag() {
        let (rows, gap) = resolver_gap(&[
            ("system".into(), Some(12_000)),
            ("auth".into(), Some(5_000)),
            ("stale".into(), None),
        ]);
        assert_eq!(rows[0].lag_ms, Some(7_000));
        assert_eq!(rows[1].lag_ms, Some(0));
        assert_eq!(rows[2].lag_ms, None);
        assert_eq!(gap, Some(7_000));
        assert_eq!(resolver_gap(&[("a".into(), None)]).1, None);
    }

    #[test]
    fn preflight_verdicts_and_exit_codes() {
        let neg = Ok(Reply::Negative {
            nxdomain: true,
            cnames: vec![],
            negative_ttl: Some(900),
        });
        let replies = [
            addrs(&["10.0.0.1"], 60),
            Err("timeout".into()),
            addrs(&["10.0.0.1"], 300),
        ];
        let v = verdict(&replies, 300);
        assert_eq!(
            (v.largest_ttl, v.over, v.answered),
            (Some(300), false, true)
        );
        assert!(verdict(&replies, 299).over);
        assert!(verdict([&neg], 300).over, "the negative TTL counts");
        let none = verdict(&[Err("timeout".to_string())], 300);
        assert!(!none.answered);
        assert_eq!(preflight_exit(&[v]), 0);
        assert_eq!(preflight_exit(&[v, verdict(&replies, 10)]), 1);
        assert_eq!(preflight_exit(&[verdict(&replies, 10), none]), 2);
    }
}
