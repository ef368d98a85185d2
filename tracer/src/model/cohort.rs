//! Cohorts: which side of the move an address is on. Longest prefix wins, as in the kernel's
//! LPM trie, so userspace and kernel always agree.

use std::net::IpAddr;

use super::addr::Prefix;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cohort {
    Other = tracer_common::COHORT_OTHER as isize,
    Old = tracer_common::COHORT_OLD as isize,
    New = tracer_common::COHORT_NEW as isize,
}

impl Cohort {
    pub const ALL: [Cohort; 3] = [Cohort::Old, Cohort::New, Cohort::Other];

    pub fn name(self) -> &'static str {
        match self {
            Cohort::Other => "other",
            Cohort::Old => "old",
            Cohort::New => "new",
        }
    }

    pub fn from_index(i: u32) -> Cohort {
        match i {
            tracer_common::COHORT_OLD => Cohort::Old,
            tracer_common::COHORT_NEW => Cohort::New,
            _ => Cohort::Other,
        }
    }
}

/// The old and new address sets the user gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sets {
    pub old: Vec<Prefix>,
    pub new: Vec<Prefix>,
}

impl Sets {
    /// Build the sets; the same prefix on both sides is a contradiction.
    pub fn new(old: Vec<Prefix>, new: Vec<Prefix>) -> Result<Self, String> {
        if let Some(p) = old.iter().find(|p| new.contains(p)) {
            return Err(format!("{p} is in both --old and --new"));
        }
        Ok(Sets { old, new })
    }

    /// Every prefix with its cohort, as loaded into the kernel's trie.
    pub fn entries(&self) -> impl Iterator<Item = (Prefix, Cohort)> + '_ {
        let old = self.old.iter().map(|p| (*p, Cohort::Old));
        old.chain(self.new.iter().map(|p| (*p, Cohort::New)))
    }

    pub fn cohort(&self, a: IpAddr) -> Cohort {
        self.entries()
            .filter(|(p, _)| p.contains(a))
            .max_by_key(|(p, _)| p.len)
            .map(|(_, c)| c)
            .unwrap_or(Cohort::Other)
    }
}

/// `Sets::cohort` for many addresses (one per map row): the prefixes once, as masks, longest
/// first, so a lookup is a few integer compares and stops at the first prefix that holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classifier(Vec<(bool, u128, u128, Cohort)>);

/// An address as (is IPv4, bits): IPv4 (also IPv4-mapped) in the low 32 bits.
fn bits(a: IpAddr) -> (bool, u128) {
    match super::addr::fold(a) {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

impl Classifier {
    pub fn new(sets: &Sets) -> Self {
        let mut v: Vec<(Prefix, Cohort)> = sets.entries().collect();
        // `Sets::cohort` keeps the last of equally long matches: reverse, then a stable sort.
        v.reverse();
        v.sort_by_key(|(p, _)| std::cmp::Reverse(p.len));
        Classifier(
            v.into_iter()
                .map(|(p, c)| {
                    let (v4, b) = bits(p.addr);
                    let width = if v4 { 32 } else { 128 };
                    let len = u32::from(p.len).min(width);
                    let ones = if width == 32 {
                        u128::from(u32::MAX)
                    } else {
                        u128::MAX
                    };
                    let mask = if len == 0 {
                        0
                    } else {
                        (ones << (width - len)) & ones
                    };
                    (v4, mask, b & mask, c)
                })
                .collect(),
        )
    }

    pub fn cohort(&self, a: IpAddr) -> Cohort {
        let (v4, b) = bits(a);
        self.0
            .iter()
            .find(|(pv4, mask, pb, _)| *pv4 == v4 && b & mask == *pb)
            .map_or(Cohort::Other, |e| e.3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::parse(s).unwrap()
    }

    #[test]
    fn longest_prefix_wins_across_families() {
        let sets = Sets::new(
            vec![p("127.0.0.0/8"), p("fd00::/64")],
            vec![p("127.20.0.0/16"), p("fd00::20")],
        )
        .unwrap();
        let c = |s: &str| sets.cohort(s.parse().unwrap());
        assert_eq!(c("127.10.0.1"), Cohort::Old);
        assert_eq!(c("127.20.0.1"), Cohort::New);
        assert_eq!(c("::ffff:127.20.0.1"), Cohort::New);
        assert_eq!(c("fd00::1"), Cohort::Old);
        assert_eq!(c("fd00::20"), Cohort::New);
        assert_eq!(c("10.0.0.1"), Cohort::Other);
        assert_eq!(c("::1"), Cohort::Other);
    }

    #[test]
    fn classifier_agrees_with_sets() {
        let mut next = crate::testutil::xorshift(0x2545_f491_4f6c_dd1d);
        let prefixes = [
            "127.0.0.0/8",
            "127.10.0.0/16",
            "127.20.0.0/16",
            "127.20.3.4",
            "0.0.0.0/0",
            "::/0",
            "fd00::/64",
            "fd00::20",
            "127.30.0.0/24",
            "::1",
        ];
        for round in 0..200 {
            let pick = |n: u64| p(prefixes[(n % prefixes.len() as u64) as usize]);
            let old: Vec<Prefix> = (0..round % 4).map(|_| pick(next())).collect();
            let new: Vec<Prefix> = (0..(round / 4) % 3).map(|_| pick(next())).collect();
            // Built as the DNS watcher may (no both-sides check), so ties are covered too.
            let sets = Sets { old, new };
            let c = Classifier::new(&sets);
            for _ in 0..50 {
                let r = next();
                let a: IpAddr = match r % 4 {
                    0 => std::net::Ipv4Addr::new(
                        127,
                        [10, 20, 30][(r >> 8) as usize % 3],
                        (r >> 16) as u8,
                        (r >> 24) as u8,
                    )
                    .into(),
                    1 => std::net::Ipv4Addr::from((r >> 8) as u32).into(),
                    2 => std::net::Ipv6Addr::from((0xfd00u128 << 112) | (u128::from(r >> 8) % 64))
                        .into(),
                    _ => std::net::Ipv4Addr::new(127, 30, 0, r as u8)
                        .to_ipv6_mapped()
                        .into(),
                };
                assert_eq!(c.cohort(a), sets.cohort(a), "{a} in {sets:?}");
            }
        }
    }

    #[test]
    fn same_prefix_on_both_sides_is_refused() {
        let e = Sets::new(vec![p("10.0.0.0/8")], vec![p("10.0.0.0/8")]).unwrap_err();
        assert!(e.contains("both"));
    }
}
