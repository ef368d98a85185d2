//! Who holds the open old-side connections, and since when. Connections opened while tracing
//! are in the per-socket records (SOCKS: owner and connect time); those from before the start
//! are in the census map until they close, their owner found once at start. Read only while
//! the old side has open connections, and again only when its counters moved.

use std::{cell::RefCell, collections::BTreeMap, collections::HashMap, sync::Arc};

use aya::maps::{HashMap as BpfHash, IterableMap, MapData};
use tracer_common::{COHORT_OLD, CensusInfo, DIR_OUT, SockInfo, TupleKey, names};

use super::{Tracer, census::Conn, hooks::one_line};
use crate::model::{
    addr::to_key,
    analysis::stragglers::CensusOwner,
    held::{Held, Holder},
    snapshot::ProcRow,
};

type Key = (u32, Arc<str>, u64);

pub struct Holders {
    socks: BpfHash<MapData, u64, SockInfo>,
    census: BpfHash<MapData, TupleKey, CensusInfo>,
    /// Census connections to old with a known owner: (owner key, remote address).
    census_owner: HashMap<TupleKey, (Key, std::net::IpAddr)>,
    /// CLOCK_MONOTONIC at the start (what `bpf_ktime_get_ns` counts), in ns.
    start_ns: u64,
    /// What the last read was made for, and what it found.
    kept: RefCell<Option<(u64, Read)>>,
}

/// What one read found: holdings per process, and the census connections still open per
/// (owner, remote address) so their owners count them in the per-process rows.
#[derive(Clone, Default)]
pub struct Read {
    pub holders: Vec<Holder>,
    pub census_rows: Vec<ProcRow>,
}

/// CLOCK_MONOTONIC now, in ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Holders {
    pub fn new(t: &mut Tracer, start_ns: u64) -> Result<Self, String> {
        let take = |t: &mut Tracer, name: &str| {
            t.ebpf
                .take_map(name)
                .ok_or_else(|| format!("map {name} missing from the object"))
        };
        let socks = BpfHash::try_from(take(t, names::SOCKS)?).map_err(|e| one_line(&e))?;
        let census = BpfHash::try_from(take(t, names::CENSUS)?).map_err(|e| one_line(&e))?;
        Ok(Holders {
            socks,
            census,
            census_owner: HashMap::new(),
            start_ns,
            kept: RefCell::new(None),
        })
    }

    /// The owners of the census connections to old (from `owners::census_holders`).
    pub fn set_census_owners(&mut self, owners: &[CensusOwner], held: &[(Conn, usize)]) {
        self.census_owner = held
            .iter()
            .map(|(c, i)| {
                let o = &owners[*i];
                let key = TupleKey {
                    saddr: to_key(c.local),
                    daddr: to_key(c.remote),
                    sport: c.lport,
                    dport: c.rport,
                };
                (key, ((o.pid, o.comm.as_str().into(), o.cgroup), c.remote))
            })
            .collect();
    }

    /// Read the holdings. `moved` changes whenever an old connection was established or
    /// closed (the old cohort's counters): while it stands still the last read is reused. The
    /// records are read only once an old connection was established while tracing.
    pub fn read(&self, moved: u64, established: u64) -> Read {
        if let Some((m, r)) = &*self.kept.borrow()
            && *m == moved
        {
            return r.clone();
        }
        let mut per: BTreeMap<Key, Held> = BTreeMap::new();
        let mut census_rows: BTreeMap<(Key, std::net::IpAddr), u64> = BTreeMap::new();
        if established > 0 {
            let _ = super::batch::for_each_plain(self.socks.map(), |_: u64, s: SockInfo| {
                if s.dir != DIR_OUT || s.established == 0 || s.cohort as u32 != COHORT_OLD {
                    return;
                }
                let at_ms = s.syn_ns.saturating_sub(self.start_ns) / 1_000_000;
                let key = (s.tgid, super::procrows::comm_str(&s.comm).into(), s.cgroup);
                per.entry(key).or_default().add(Some(at_ms), 1);
            });
        }
        if !self.census_owner.is_empty() {
            let _ =
                super::batch::for_each_plain(self.census.map(), |k: TupleKey, _: CensusInfo| {
                    if let Some((key, remote)) = self.census_owner.get(&k) {
                        per.entry(key.clone()).or_default().add(None, 1);
                        *census_rows.entry((key.clone(), *remote)).or_default() += 1;
                    }
                });
        }
        let holders = per
            .into_iter()
            .map(|((pid, comm, cgroup), mut held)| {
                held.normalize();
                Holder {
                    pid,
                    comm,
                    cgroup,
                    held,
                }
            })
            .collect();
        let census_rows = census_rows
            .into_iter()
            .map(|(((pid, comm, cgroup), _remote), n)| ProcRow {
                pid,
                comm,
                cgroup,
                // One row per remote address: one destination each.
                destinations: 1,
                cohort: crate::model::cohort::Cohort::Old,
                out: crate::model::counters::Out {
                    open: n,
                    ..Default::default()
                },
            })
            .collect();
        let r = Read {
            holders,
            census_rows,
        };
        *self.kept.borrow_mut() = Some((moved, r.clone()));
        r
    }
}
