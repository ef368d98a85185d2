//! Why a process is still on the old side: the layer that holds it, each with its own fix.
//! Decided from evidence gathered per process (see `stragglers`): pure, so every rule is
//! tested on synthetic series.

/// A layer that keeps a process on the old side after the cutover. A process can have several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// Holds old connections opened before the cutover (a pool, keep-alive, or from before
    /// tracer started).
    Pinned,
    /// Makes fresh connects to old after cutover + TTL that no DNS answer naming old explains:
    /// an in-process cache that ignores the TTL.
    DnsCache,
    /// Received DNS answers naming old after cutover + TTL: its resolver serves a stale record.
    StaleResolver,
}

impl Cause {
    pub const ALL: [Cause; 3] = [Cause::Pinned, Cause::DnsCache, Cause::StaleResolver];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Pinned => "pinned",
            Cause::DnsCache => "dns_cache",
            Cause::StaleResolver => "stale_resolver",
        }
    }

    /// The name in a narrow column.
    pub fn short(self) -> &'static str {
        match self {
            Cause::Pinned => "pin",
            Cause::DnsCache => "cache",
            Cause::StaleResolver => "stale",
        }
    }

    /// What the operator does about it.
    pub fn fix(self) -> &'static str {
        match self {
            Cause::Pinned => "recycle its pool / reload it",
            Cause::DnsCache => "restart it or set its runtime's DNS TTL",
            Cause::StaleResolver => "flush or bypass that resolver",
        }
    }
}

/// The evidence about one process, once a cutover is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Open old connections opened before the cutover (census ones included).
    pub open_before_cutover: u64,
    /// Old connects in intervals that began after cutover + TTL with no DNS answer naming old
    /// still valid for them.
    pub unexplained_fresh: u64,
    /// A DNS answer naming old arrived after cutover + TTL.
    pub stale_answer: bool,
}

/// The causes of a process, in the order of `Cause::ALL`; empty before a cutover.
pub fn causes(cutover: bool, e: &Evidence) -> Vec<Cause> {
    if !cutover {
        return vec![];
    }
    let mut v = vec![];
    if e.open_before_cutover > 0 {
        v.push(Cause::Pinned);
    }
    if e.unexplained_fresh > 0 {
        v.push(Cause::DnsCache);
    }
    if e.stale_answer {
        v.push(Cause::StaleResolver);
    }
    v
}

/// Whether connects in the interval that began at `start_ms` are fresh connects after the TTL
/// (`cutover_ms + ttl_ms`): the interval in which the TTL ends is grace, so a process that
/// moves gets the TTL plus up to one interval.
pub fn after_ttl(start_ms: u64, cutover_ms: u64, ttl_ms: u64) -> bool {
    start_ms > cutover_ms + ttl_ms
}

/// Whether an answer naming old, valid until `valid_until_ms` (received + its TTL), explains
/// connects in the interval that began at `start_ms`.
pub fn explained(start_ms: u64, valid_until_ms: Option<u64>) -> bool {
    valid_until_ms.is_some_and(|v| v >= start_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_cutover_no_causes() {
        let e = Evidence {
            open_before_cutover: 3,
            unexplained_fresh: 5,
            stale_answer: true,
        };
        assert!(causes(false, &e).is_empty());
        assert_eq!(causes(true, &e), Cause::ALL.to_vec());
    }

    #[test]
    fn two_causes_and_none() {
        let e = Evidence {
            open_before_cutover: 1,
            unexplained_fresh: 2,
            ..Default::default()
        };
        assert_eq!(causes(true, &e), vec![Cause::Pinned, Cause::DnsCache]);
        assert!(causes(true, &Evidence::default()).is_empty(), "moved");
    }

    #[test]
    fn grace_is_the_ttl_and_one_interval() {
        // TTL 0: the interval the cutover falls in is grace, the next is not.
        assert!(!after_ttl(9_500, 10_000, 0));
        assert!(!after_ttl(10_000, 10_000, 0));
        assert!(after_ttl(10_500, 10_000, 0));
        assert!(!after_ttl(12_000, 10_000, 2_000));
        assert!(after_ttl(12_001, 10_000, 2_000));
        assert!(explained(12_000, Some(12_000)));
        assert!(!explained(12_001, Some(12_000)));
        assert!(!explained(0, None));
    }
}
