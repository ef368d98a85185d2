//! Cohorts: which side of the move an address is on. Longest prefix wins, as in the kernel's
//! LPM trie, so userspace and kernel always agree.

use std::net::IpAddr;

use super::addr::Prefix;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cohort {
    Other = 0,
    Old = 1,
    New = 2,
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
            1 => Cohort::Old,
            2 => Cohort::New,
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
    fn same_prefix_on_both_sides_is_refused() {
        let e = Sets::new(vec![p("10.0.0.0/8")], vec![p("10.0.0.0/8")]).unwrap_err();
        assert!(e.contains("both"));
    }
}
