//! DNS answers that processes received, as the kernel capture saw them, and their aggregation
//! per process: the last answer per (pid, name), and whether an answer named given addresses
//! after a given time (what tells a stale resolver from an in-process cache).

use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

/// The process that owned the receiving socket, noted when it sent to port 53.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
}

/// One DNS answer received by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswerSeen {
    /// When the kernel saw the answer arrive.
    pub at: SystemTime,
    /// None when the socket was set up before tracer started (no connect or send was seen).
    pub owner: Option<Owner>,
    /// The query name, lower case, without the trailing dot.
    pub name: String,
    /// The record type asked for (`A`, `AAAA`, ...).
    pub qtype: String,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...
    pub rcode: String,
    /// A and AAAA records of the answer section, in order.
    pub addrs: Vec<IpAddr>,
    /// CNAME targets in the order of the chain (empty without CNAMEs).
    pub cnames: Vec<String>,
    /// Smallest TTL of the answer records (seconds); None without answer records.
    pub ttl: Option<u32>,
    /// The resolver that sent it (source address and port of the datagram).
    pub resolver: SocketAddr,
    /// The message was cut: larger than the capture copies, or the TC bit was set.
    pub truncated: bool,
    /// An answer address is on the old side (set by the sampler, which knows the sets).
    pub names_old: bool,
}

impl DnsAnswerSeen {
    pub fn pid(&self) -> Option<u32> {
        self.owner.as_ref().map(|o| o.pid)
    }

    /// Merge an answer for the same lookup (A then AAAA): addresses joined, smallest TTL kept.
    fn merge(&mut self, other: &DnsAnswerSeen) {
        for a in &other.addrs {
            if !self.addrs.contains(a) {
                self.addrs.push(*a);
            }
        }
        for c in &other.cnames {
            if !self.cnames.contains(c) {
                self.cnames.push(c.clone());
            }
        }
        if !self.qtype.split('+').any(|q| q == other.qtype) {
            self.qtype = format!("{}+{}", self.qtype, other.qtype);
        }
        self.ttl = match (self.ttl, other.ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.addrs.is_empty() {
            self.rcode = other.rcode.clone();
        }
        self.truncated |= other.truncated;
        self.names_old |= other.names_old;
        self.at = self.at.max(other.at);
    }
}

/// Counts of the capture since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// UDP datagrams from port 53 that reached a socket.
    pub seen: u64,
    /// Lost because the ring buffer was full.
    pub dropped: u64,
    /// Larger than the capture copies.
    pub truncated: u64,
    /// Not a DNS response hickory-proto could decode.
    pub unparsed: u64,
}

/// Answers for one name from one resolver this close together belong to one lookup (glibc and
/// Go ask A and AAAA at once): they are merged into one.
pub const LOOKUP_WINDOW: Duration = Duration::from_secs(1);
/// Answers kept per (pid, name), newest last, for `named_since`.
const HISTORY: usize = 16;
/// (pid, name) pairs kept; the least recently answered go first.
const KEYS: usize = 4096;

/// Answers seen, per (pid, name). Answers with no known owner are not kept here (the events
/// still carry them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsSeen {
    by: BTreeMap<(u32, String), VecDeque<DnsAnswerSeen>>,
}

impl DnsSeen {
    pub fn add(&mut self, a: &DnsAnswerSeen) {
        let Some(pid) = a.pid() else { return };
        let h = self.by.entry((pid, a.name.clone())).or_default();
        match h.back_mut() {
            Some(last)
                if last.resolver == a.resolver
                    && a.at.duration_since(last.at).unwrap_or_default() <= LOOKUP_WINDOW =>
            {
                last.merge(a)
            }
            _ => {
                h.push_back(a.clone());
                if h.len() > HISTORY {
                    h.pop_front();
                }
            }
        }
        if self.by.len() > KEYS {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .by
            .iter()
            .min_by_key(|(_, h)| h.back().map(|a| a.at))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.by.remove(&k);
        }
    }

    /// The last answer (one lookup, A and AAAA merged) per name for this pid.
    pub fn last_per_name(&self, pid: u32) -> impl Iterator<Item = &DnsAnswerSeen> {
        self.by
            .range((pid, String::new())..)
            .take_while(move |((p, _), _)| *p == pid)
            .filter_map(|(_, h)| h.back())
    }

    /// The most recent answer this pid received, whatever the name.
    pub fn last(&self, pid: u32) -> Option<&DnsAnswerSeen> {
        self.last_per_name(pid).max_by_key(|a| a.at)
    }

    /// Whether `pid` received, at or after `since`, an answer naming an address `wanted`
    /// accepts, with the first such answer.
    // For the straggler causes (issue 14: `stale_resolver` vs `dns_cache`), built on this.
    #[allow(dead_code)]
    pub fn named_since(
        &self,
        pid: u32,
        since: SystemTime,
        wanted: impl Fn(IpAddr) -> bool,
    ) -> Option<&DnsAnswerSeen> {
        self.by
            .range((pid, String::new())..)
            .take_while(|((p, _), _)| *p == pid)
            .flat_map(|(_, h)| h.iter())
            .filter(|a| a.at >= since && a.addrs.iter().any(|x| wanted(*x)))
            .min_by_key(|a| a.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ans(pid: u32, name: &str, ms: u64, addrs: &[&str], ttl: Option<u32>) -> DnsAnswerSeen {
        DnsAnswerSeen {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
            owner: Some(Owner {
                pid,
                comm: "curl".into(),
                cgroup: 1,
            }),
            name: name.into(),
            qtype: if addrs.first().is_some_and(|a| a.contains(':')) {
                "AAAA".into()
            } else {
                "A".into()
            },
            rcode: "NOERROR".into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            cnames: vec![],
            ttl,
            resolver: "127.0.0.53:53".parse().unwrap(),
            truncated: false,
            names_old: false,
        }
    }

    #[test]
    fn a_and_aaaa_of_one_lookup_merge() {
        let mut s = DnsSeen::default();
        s.add(&ans(7, "svc.test", 1000, &["192.0.2.1"], Some(60)));
        s.add(&ans(7, "svc.test", 1002, &["2001:db8::1"], Some(30)));
        let last = s.last(7).unwrap();
        assert_eq!(last.addrs.len(), 2);
        assert_eq!(last.ttl, Some(30));
        assert_eq!(last.qtype, "A+AAAA");
        assert_eq!(
            last.at,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1002)
        );
    }

    #[test]
    fn an_empty_aaaa_answer_keeps_the_addresses_and_ttl() {
        let mut s = DnsSeen::default();
        s.add(&ans(7, "svc.test", 1000, &["192.0.2.1"], Some(60)));
        s.add(&ans(7, "svc.test", 1001, &[], None));
        let last = s.last(7).unwrap();
        assert_eq!(last.addrs, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(last.ttl, Some(60));
        assert_eq!(last.rcode, "NOERROR");
    }

    #[test]
    fn a_later_lookup_replaces_the_last_answer_but_history_stays() {
        let mut s = DnsSeen::default();
        s.add(&ans(7, "svc.test", 1000, &["192.0.2.1"], Some(5)));
        s.add(&ans(7, "svc.test", 9000, &["198.51.100.1"], Some(5)));
        assert_eq!(
            s.last(7).unwrap().addrs,
            vec!["198.51.100.1".parse::<IpAddr>().unwrap()]
        );
        let old = |a: IpAddr| a == "192.0.2.1".parse::<IpAddr>().unwrap();
        let t = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert!(s.named_since(7, t(500), old).is_some());
        assert!(s.named_since(7, t(1001), old).is_none());
        assert!(s.named_since(8, t(0), old).is_none());
    }

    #[test]
    fn last_is_per_pid_across_names_and_unowned_answers_are_skipped() {
        let mut s = DnsSeen::default();
        s.add(&ans(7, "a.test", 1000, &["192.0.2.1"], Some(5)));
        s.add(&ans(7, "b.test", 2000, &["192.0.2.2"], Some(5)));
        s.add(&ans(8, "a.test", 3000, &["192.0.2.3"], Some(5)));
        let mut none = ans(9, "a.test", 4000, &["192.0.2.4"], Some(5));
        none.owner = None;
        s.add(&none);
        assert_eq!(s.last(7).unwrap().name, "b.test");
        assert_eq!(s.last_per_name(7).count(), 2);
        assert_eq!(s.last(8).unwrap().name, "a.test");
        assert!(s.last(9).is_none());
    }

    #[test]
    fn different_resolvers_are_different_lookups() {
        let mut s = DnsSeen::default();
        s.add(&ans(7, "svc.test", 1000, &["192.0.2.1"], Some(5)));
        let mut b = ans(7, "svc.test", 1001, &["192.0.2.9"], Some(5));
        b.resolver = "127.0.0.1:53".parse().unwrap();
        s.add(&b);
        assert_eq!(s.last(7).unwrap().addrs.len(), 1);
        assert_eq!(s.last(7).unwrap().resolver, b.resolver);
    }

    #[test]
    fn the_oldest_keys_are_evicted_beyond_the_bound() {
        let mut s = DnsSeen::default();
        for i in 0..(KEYS as u32 + 10) {
            s.add(&ans(
                i,
                "svc.test",
                1000 + i as u64,
                &["192.0.2.1"],
                Some(5),
            ));
        }
        assert_eq!(s.by.len(), KEYS);
        assert!(s.last(0).is_none());
        assert!(s.last(KEYS as u32 + 9).is_some());
    }
}
