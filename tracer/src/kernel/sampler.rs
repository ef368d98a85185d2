//! Reads the maps into a `Snapshot` once per interval. The only reader of the maps: every sink
//! gets the same numbers.

use std::{
    cell::RefCell,
    collections::{HashMap as StdHashMap, HashSet},
    net::IpAddr,
    os::fd::{AsFd, OwnedFd},
    time::{Instant, SystemTime},
};

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use tracer_common::{
    COHORTS, FailReasons, InCounters, LAT_ESTABLISHED, LAT_FAILED, LatHist, OutCounters, ProcKey,
    STAT_DEST_INSERTS, STAT_DEST_ROWS, STAT_LOCAL_INSERTS, STAT_LOCAL_ROWS, STAT_PROC_INSERTS,
    STAT_PROC_ROWS, STAT_SOCK_INSERT_FAILED, names,
};

use super::{
    Tracer, census_baseline,
    hooks::one_line,
    procrows::{ProcMerge, distinct_pids},
    progstats,
    reuse::{Reuse, Spare, reuse_vec},
    rows::{PER_SAMPLE, Rows},
};
use crate::model::{
    addr::from_key,
    cohort::{Classifier, Cohort, Sets},
    counters::{In, Out, evicted, sum_in, sum_out},
    dns_seen::DnsSeen,
    failures::Reasons,
    latency::{Hist, Latency},
    reconcile::{self, Correction, Offsets, Table},
    snapshot::{DestRow, Evicted, LocalRow, MapUse, MapsUse, ProcId, ProcRow, Snapshot},
};

pub struct Sampler {
    cohort_out: PerCpuArray<MapData, OutCounters>,
    cohort_in: PerCpuArray<MapData, InCounters>,
    /// Each key's row, and the LRU maps for the keys that came once all rows were taken.
    dest_rows: Rows<[u8; 16], OutCounters>,
    local_rows: Rows<[u8; 16], InCounters>,
    proc_rows: Rows<ProcKey, OutCounters>,
    dest: PerCpuHashMap<MapData, [u8; 16], OutCounters>,
    local_in: PerCpuHashMap<MapData, [u8; 16], InCounters>,
    procs: PerCpuHashMap<MapData, ProcKey, OutCounters>,
    stats: PerCpuArray<MapData, u64>,
    cohort_reasons: PerCpuArray<MapData, FailReasons>,
    dest_reasons: PerCpuHashMap<MapData, [u8; 16], FailReasons>,
    proc_reasons: PerCpuHashMap<MapData, ProcKey, FailReasons>,
    latency: PerCpuArray<MapData, LatHist>,
    progs: Vec<OwnedFd>,
    sets: Sets,
    /// `sets` ready for one lookup per row.
    classify: Classifier,
    /// Established connections at start (the census), the base of every `open`.
    start: Table,
    /// Corrections of `open` from the last reconciliation with the socket table.
    offsets: Offsets,
    reconciliations: u64,
    started: Instant,
    ncpus: usize,
    /// Rows plus LRU entries of destinations, local addresses, processes.
    capacity: [u64; 3],
    /// Unit per pid, looked up once per pid (/proc/PID/cgroup), kept while the pid is listed.
    units: std::cell::RefCell<StdHashMap<u32, Option<String>>>,
    /// Network namespace per pid, looked up once per pid like `units`.
    netns: std::cell::RefCell<StdHashMap<u32, Option<u64>>>,
    /// Pids looked up beside the listed ones: owners of the connections found at start.
    owner_pids: Vec<u32>,
    /// Rows of DEST, LOCAL_IN, PROCS last time: the capacity to reserve for the next.
    hint: std::cell::Cell<[usize; 3]>,
    /// The DNS answer capture and the answers seen so far, when it is attached.
    dns: Option<std::cell::RefCell<(super::dnscap::Capture, DnsSeen)>>,
    /// Rows kept while the cohort totals stand still (`reuse`): outbound, inbound, reasons.
    kept_out: RefCell<Reuse<[OutCounters; 3], OutRows>>,
    kept_in: RefCell<Reuse<[InCounters; 3], InRows>>,
    kept_reasons: RefCell<Reuse<[Reasons; 3], ReasonRows>>,
    /// Who holds the open old-side connections, and since when.
    holders: super::holders::Holders,
    /// Row buffers of a snapshot no one reads any more, for the next read to fill.
    spare: RefCell<Spare>,
}

/// Destinations and processes, each with its keys in use.
type OutRows = (Vec<DestRow>, Live, Vec<ProcRow>, Live);
/// Local addresses with the keys in use.
type InRows = (Vec<LocalRow>, Live);

/// Keys in use in a row table: in all, and in its LRU map (what evictions are derived from).
#[derive(Clone, Copy, Default)]
struct Live {
    all: u64,
    lru: u64,
}
/// Failure reasons per destination and per process.
type ReasonRows = (Vec<(IpAddr, Reasons)>, Vec<(ProcId, Reasons)>);

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    t: &mut Tracer,
    name: &str,
) -> Result<T, String> {
    let map = t
        .ebpf
        .take_map(name)
        .ok_or_else(|| format!("map {name} missing from the object"))?;
    T::try_from(map).map_err(|e| one_line(&e))
}

/// One row per entry of a per-CPU hash, made by `row` from the key and its per-CPU values
/// (and some state `S` it keeps, returned too): batched where the kernel can (5.6+), else key
/// by key, starting over with fresh state. No allocation per entry but the row's.
fn rows_with<K: aya::Pod + Default, V: aya::Pod + Default, R, S: Default>(
    map: &PerCpuHashMap<MapData, K, V>,
    ncpus: usize,
    hint: usize,
    mut row: impl FnMut(&mut S, K, &[V]) -> R,
) -> Result<(Vec<R>, S), String> {
    let mut out = Vec::with_capacity(hint);
    let mut state = S::default();
    let batched = super::batch::for_each_percpu(map, ncpus, |k, v| out.push(row(&mut state, k, v)));
    if batched.is_ok() {
        return Ok((out, state));
    }
    out.clear();
    state = S::default();
    for item in map.iter() {
        let (k, v) = item.map_err(|e| format!("reading BPF maps failed: {}", one_line(&e)))?;
        out.push(row(&mut state, k, &v));
    }
    Ok((out, state))
}

fn rows<K: aya::Pod + Default, V: aya::Pod + Default, R>(
    map: &PerCpuHashMap<MapData, K, V>,
    ncpus: usize,
    hint: usize,
    mut row: impl FnMut(K, &[V]) -> R,
) -> Result<Vec<R>, String> {
    Ok(rows_with(map, ncpus, hint, |_: &mut (), k, v| row(k, v))?.0)
}

/// The census count of `addr`, noting it in `seen` when there is one: so the rows missing
/// from the map (census-only) are found without a second lookup per row.
fn census_of(census: &StdHashMap<IpAddr, u64>, seen: &mut HashSet<IpAddr>, addr: IpAddr) -> u64 {
    // Most hosts start with few connections: no hashing per row when there were none.
    if census.is_empty() {
        return 0;
    }
    match census.get(&addr) {
        Some(n) => {
            seen.insert(addr);
            *n
        }
        None => 0,
    }
}

/// max_entries of a loaded map, as the kernel reports it (0 if it cannot be read).
fn capacity(t: &Tracer, name: &str) -> u64 {
    use aya::maps::Map;
    match t.ebpf.map(name) {
        Some(Map::PerCpuLruHashMap(d) | Map::PerCpuHashMap(d) | Map::LruHashMap(d)) => {
            d.info().map(|i| u64::from(i.max_entries())).unwrap_or(0)
        }
        _ => 0,
    }
}

impl Sampler {
    pub fn new(t: &mut Tracer, sets: Sets) -> Result<Self, String> {
        let mut progs = Vec::new();
        for (_, p) in t.ebpf.programs() {
            if let Ok(fd) = p.fd()
                && let Ok(owned) = fd.as_fd().try_clone_to_owned()
            {
                progs.push(owned);
            }
        }
        let start = census_baseline(&t.census);
        let holders = super::holders::Holders::new(t, super::holders::monotonic_ns())?;
        let ncpus = aya::util::nr_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
        let dest_rows = Rows::new(
            t,
            [names::DEST_KEYS, names::DEST_ROWS, names::DEST_FREE],
            ncpus,
        )?;
        let local_rows = Rows::new(
            t,
            [names::LOCAL_KEYS, names::LOCAL_ROWS, names::LOCAL_FREE],
            ncpus,
        )?;
        let proc_rows = Rows::new(
            t,
            [names::PROCS_KEYS, names::PROCS_ROWS, names::PROCS_FREE],
            ncpus,
        )?;
        let capacity = [
            capacity(t, names::DEST) + u64::from(dest_rows.capacity()),
            capacity(t, names::LOCAL_IN) + u64::from(local_rows.capacity()),
            capacity(t, names::PROCS) + u64::from(proc_rows.capacity()),
        ];
        Ok(Sampler {
            capacity,
            dest_rows,
            local_rows,
            proc_rows,
            cohort_out: take(t, names::COHORT_OUT)?,
            cohort_in: take(t, names::COHORT_IN)?,
            dest: take(t, names::DEST)?,
            local_in: take(t, names::LOCAL_IN)?,
            procs: take(t, names::PROCS)?,
            stats: take(t, names::STATS)?,
            cohort_reasons: take(t, names::COHORT_REASONS)?,
            dest_reasons: take(t, names::DEST_REASONS)?,
            proc_reasons: take(t, names::PROC_REASONS)?,
            latency: take(t, names::LATENCY)?,
            progs,
            classify: Classifier::new(&sets),
            sets,
            start,
            offsets: Offsets::default(),
            reconciliations: 0,
            started: Instant::now(),
            ncpus,
            units: Default::default(),
            netns: Default::default(),
            owner_pids: vec![],
            hint: Default::default(),
            dns: match t.hooks.dns {
                Ok(()) => Some(std::cell::RefCell::new((
                    super::dnscap::Capture::new(&mut t.ebpf)?,
                    DnsSeen::default(),
                ))),
                Err(_) => None,
            },
            kept_out: Default::default(),
            kept_in: Default::default(),
            kept_reasons: Default::default(),
            holders,
            spare: RefCell::default(),
        })
    }

    fn stat(&self, idx: u32) -> u64 {
        self.stats
            .get(&idx, 0)
            .map(|v| v.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
            .unwrap_or(0)
    }

    /// Lost events of all attached programs together.
    pub fn lost_events(&self) -> u64 {
        self.prog_stats().iter().map(|s| s.recursion_misses).sum()
    }

    pub fn prog_stats(&self) -> Vec<progstats::ProgStats> {
        self.progs
            .iter()
            .filter_map(|fd| progstats::read(fd.as_fd()).ok())
            .collect()
    }

    /// The owners of the census connections to old, so they count for their processes.
    pub fn set_census_owners(
        &mut self,
        owners: &[crate::model::analysis::stragglers::CensusOwner],
        held: &[(super::census::Conn, usize)],
    ) {
        self.holders.set_census_owners(owners, held);
    }

    /// Owners of the census connections: their rows show a namespace too.
    pub fn set_owner_pids(&mut self, pids: Vec<u32>) {
        self.owner_pids = pids;
    }

    /// Every row of every table is queued (tests fill rows from userspace and wait for this).
    #[cfg(test)]
    pub fn rows_queued(&self) -> bool {
        self.dest_rows.all_queued() && self.local_rows.all_queued() && self.proc_rows.all_queued()
    }

    pub fn sets(&self) -> &Sets {
        &self.sets
    }

    /// The cohorts changed while running (`--watch-dns`): classify with the new sets from now on.
    pub fn set_sets(&mut self, sets: Sets) {
        self.classify = Classifier::new(&sets);
        self.sets = sets;
        self.kept_out.borrow_mut().clear();
        self.kept_in.borrow_mut().clear();
        self.kept_reasons.borrow_mut().clear();
    }

    pub fn sample(&self) -> Result<Snapshot, String> {
        let err = |e: aya::maps::MapError| format!("reading BPF maps failed: {}", one_line(&e));
        let t0 = Instant::now();
        let mut snap = Snapshot::empty(SystemTime::now());
        snap.elapsed = self.started.elapsed();

        // Rows not queued at load are queued a part at a time (nothing waits for millions).
        self.dest_rows.queue(PER_SAMPLE)?;
        self.local_rows.queue(PER_SAMPLE)?;
        self.proc_rows.queue(PER_SAMPLE)?;
        let (census_cohort_out, census_cohort_in) = self.start.by_cohort(&self.sets);
        let mut out_totals = [OutCounters::default(); 3];
        let mut in_totals = [InCounters::default(); 3];
        for i in 0..COHORTS {
            let o = sum_out(self.cohort_out.get(&i, 0).map_err(err)?.iter());
            snap.out[i as usize] = Out::from_kernel(&o, census_cohort_out[i as usize]);
            out_totals[i as usize] = o;
            let n = sum_in(self.cohort_in.get(&i, 0).map_err(err)?.iter());
            snap.inb[i as usize] = In::from_kernel(&n, census_cohort_in[i as usize]);
            in_totals[i as usize] = n;
        }

        self.sample_failures(&mut snap)?;

        let ((destinations, live_dest, processes, live_procs), _) = self
            .kept_out
            .borrow_mut()
            .get(out_totals, || self.read_out())?;
        snap.destinations = destinations;
        snap.processes = processes;
        let old = &out_totals[Cohort::Old as usize];
        let held = self
            .holders
            .read(old.established.wrapping_add(old.closed), old.established);
        snap.held = held.holders;
        snap.processes.extend(held.census_rows);
        let ((locals, live_local), _) = self
            .kept_in
            .borrow_mut()
            .get(in_totals, || self.read_in())?;
        snap.locals = locals;
        self.hint.set([
            snap.destinations.len(),
            snap.locals.len(),
            snap.processes.len(),
        ]);

        // Units per distinct pid, not per row: a busy process has thousands of rows.
        let pids = distinct_pids(&snap.processes);
        let mut units = self.units.borrow_mut();
        units.retain(|pid, _| pids.binary_search(pid).is_ok());
        if let Some(dns) = &self.dns {
            let (cap, seen) = &mut *dns.borrow_mut();
            snap.dns_answers = cap.drain();
            for a in &mut snap.dns_answers {
                a.names_old = a.addrs.iter().any(|x| self.sets.cohort(*x) == Cohort::Old);
            }
            for a in &snap.dns_answers {
                seen.add(a);
            }
            snap.dns_capture = Some(cap.stats());
            for &pid in &pids {
                if let Some(a) = seen.last(pid) {
                    snap.dns.insert(pid, a.clone());
                }
            }
        }
        for &pid in &pids {
            let unit = units
                .entry(pid)
                .or_insert_with(|| super::owners::unit_of_pid(pid));
            if let Some(u) = unit {
                snap.units.insert(pid, u.clone());
            }
        }
        drop(units);
        self.sample_netns(pids, &mut snap.netns);

        snap.evicted = Evicted {
            destinations: evicted(self.stat(STAT_DEST_INSERTS), live_dest.lru),
            locals: evicted(self.stat(STAT_LOCAL_INSERTS), live_local.lru),
            processes: evicted(self.stat(STAT_PROC_INSERTS), live_procs.lru),
        };
        let [dest_cap, local_cap, proc_cap] = self.capacity;
        snap.maps = MapsUse {
            destinations: MapUse {
                live: live_dest.all,
                capacity: dest_cap,
            },
            locals: MapUse {
                live: live_local.all,
                capacity: local_cap,
            },
            processes: MapUse {
                live: live_procs.all,
                capacity: proc_cap,
            },
        };
        snap.lost_events = self.lost_events();
        snap.sock_insert_failed = self.stat(STAT_SOCK_INSERT_FAILED);
        snap.reconciliations = self.reconciliations;
        if !self.offsets.is_empty() {
            reconcile::apply(&mut snap, &self.start, &self.offsets, &self.sets);
        }
        snap.sample_duration = t0.elapsed();
        Ok(snap)
    }

    /// Hand every key of a row table to `f` with its counts summed over CPUs: the rows, and
    /// the LRU map's entries, added to the row of the same key where there is one (a connection
    /// that began while no row was free counts on there). `taken` is the table's `STATS` slot
    /// counting the rows the kernel took, `inserts` the one counting keys it put in the LRU
    /// map: none yet, and that map's buckets are not walked. Returns the keys in use.
    fn gather<K, V>(
        &self,
        (table, taken): (&Rows<K, V>, u32),
        (lru, inserts): (&PerCpuHashMap<MapData, K, V>, u32),
        sum: impl Fn(&[V]) -> V,
        mut f: impl FnMut(K, V),
    ) -> Result<Live, String>
    where
        K: aya::Pod + Default + Eq + std::hash::Hash,
        V: aya::Pod + Default,
    {
        let mut extra: StdHashMap<K, V> = if self.stat(inserts) == 0 {
            StdHashMap::new()
        } else {
            rows(lru, self.ncpus, 0, |k, v| (k, sum(v)))?
                .into_iter()
                .collect()
        };
        let lru = extra.len() as u64;
        let mut all = 0;
        table
            .for_each(self.stat(taken), |k, v| {
                all += 1;
                let v = sum(v);
                // Hashing every row's key only when there is something to merge.
                match (!extra.is_empty()).then(|| extra.remove(&k)).flatten() {
                    Some(e) => f(k, sum(&[v, e])),
                    None => f(k, v),
                }
            })
            .map_err(|e| format!("reading BPF maps failed: {e}"))?;
        all += extra.len() as u64;
        for (k, v) in extra {
            f(k, v);
        }
        Ok(Live { all, lru })
    }

    /// Destinations and processes, as rows, with the destinations only the census knows.
    fn read_out(&self) -> Result<OutRows, String> {
        let hint = self.hint.get();
        let mut seen = HashSet::new();
        let mut spare = self.spare.borrow_mut();
        let mut destinations = reuse_vec(&mut spare.destinations, hint[0]);
        let live_dest = self.gather(
            (&self.dest_rows, STAT_DEST_ROWS),
            (&self.dest, STAT_DEST_INSERTS),
            |v| sum_out(v),
            |key, o| {
                let addr = from_key(key);
                let census = census_of(&self.start.out, &mut seen, addr);
                destinations.push(DestRow {
                    addr,
                    cohort: self.classify.cohort(addr),
                    out: Out::from_kernel(&o, census),
                });
            },
        )?;
        // Destinations held open from before the start but quiet since have no counts yet.
        for (addr, n) in &self.start.out {
            if !seen.contains(addr) {
                destinations.push(DestRow {
                    addr: *addr,
                    cohort: self.sets.cohort(*addr),
                    out: Out::from_kernel(&OutCounters::default(), *n),
                });
            }
        }
        let mut processes = reuse_vec(&mut spare.processes, hint[2]);
        let mut merge = ProcMerge::default();
        let live_procs = self.gather(
            (&self.proc_rows, STAT_PROC_ROWS),
            (&self.procs, STAT_PROC_INSERTS),
            |v| sum_out(v),
            |key, o| merge.add(&mut processes, &key, &Out::from_kernel(&o, 0)),
        )?;
        Ok((destinations, live_dest, processes, live_procs))
    }

    /// Local addresses, as rows, with the local addresses only the census knows.
    fn read_in(&self) -> Result<InRows, String> {
        let mut seen_local = HashSet::new();
        let mut locals = reuse_vec(&mut self.spare.borrow_mut().locals, self.hint.get()[1]);
        let live_local = self.gather(
            (&self.local_rows, STAT_LOCAL_ROWS),
            (&self.local_in, STAT_LOCAL_INSERTS),
            |v| sum_in(v),
            |key, n| {
                let addr = from_key(key);
                let census = census_of(&self.start.inb, &mut seen_local, addr);
                locals.push(LocalRow {
                    addr,
                    cohort: self.classify.cohort(addr),
                    inb: In::from_kernel(&n, census),
                });
            },
        )?;
        for (addr, n) in &self.start.inb {
            if !seen_local.contains(addr) {
                locals.push(LocalRow {
                    addr: *addr,
                    cohort: self.sets.cohort(*addr),
                    inb: In::from_kernel(&InCounters::default(), *n),
                });
            }
        }
        Ok((locals, live_local))
    }

    /// Keep the row buffers of a snapshot no one reads any more for the next read.
    pub fn recycle(&self, old: Snapshot) {
        self.spare.borrow_mut().keep(
            old,
            self.kept_out.borrow().holds_copy(),
            self.kept_in.borrow().holds_copy(),
        );
    }

    /// Correct `open` from `real`, a census taken right after `snap` was sampled: new offsets
    /// for this and every later snapshot. One more sample right after the census bounds what
    /// moved meanwhile (see `reconcile::window_offset`). Returns how much `snap` moved.
    pub fn reconcile(&mut self, snap: &mut Snapshot, real: &Table) -> Result<Correction, String> {
        let after = self.sample()?;
        // DNS answers drained by this extra sample belong to `snap`: they are not read twice.
        snap.dns_answers.extend(after.dns_answers.iter().cloned());
        snap.dns_capture = after.dns_capture;
        let before = snap.clone();
        let d1 = reconcile::derive(snap, &self.start, &self.sets);
        let d2 = reconcile::derive(&after, &self.start, &self.sets);
        self.offsets = reconcile::offsets(real, &d1, &d2, &self.offsets, &self.sets);
        reconcile::apply(snap, &self.start, &self.offsets, &self.sets);
        self.reconciliations += 1;
        snap.reconciliations = self.reconciliations;
        Ok(reconcile::change(&before, snap))
    }

    /// Corrections in effect, per cohort: outbound and inbound.
    pub fn cohort_offsets(&self) -> ([i64; 3], [i64; 3]) {
        (self.offsets.cohort_out, self.offsets.cohort_in)
    }

    /// Failure reasons (per cohort, destination, process) and latency histograms (per cohort).
    /// The namespace of each listed pid and each census owner, cached while it is listed.
    fn sample_netns(&self, mut pids: Vec<u32>, out: &mut std::collections::BTreeMap<u32, u64>) {
        pids.extend(&self.owner_pids);
        pids.sort_unstable();
        pids.dedup();
        let mut cache = self.netns.borrow_mut();
        cache.retain(|pid, _| pids.binary_search(pid).is_ok());
        for pid in pids {
            if let Some(n) = cache
                .entry(pid)
                .or_insert_with(|| super::owners::netns_of_pid(pid))
            {
                out.insert(pid, *n);
            }
        }
    }

    fn sample_failures(&self, snap: &mut Snapshot) -> Result<(), String> {
        let err = |e: aya::maps::MapError| format!("reading BPF maps failed: {}", one_line(&e));
        for i in 0..COHORTS {
            let r = self.cohort_reasons.get(&i, 0).map_err(err)?;
            snap.reasons[i as usize] = Reasons::from_kernel(r.iter());
            let hist = |kind: u32| -> Result<Hist, String> {
                let v = self
                    .latency
                    .get(&tracer_common::lat_slot(i, kind), 0)
                    .map_err(err)?;
                Ok(Hist::from_kernel(v.iter()))
            };
            snap.latency[i as usize] = Latency {
                established: hist(LAT_ESTABLISHED)?,
                failed: hist(LAT_FAILED)?,
            };
        }
        let totals = snap.reasons;
        let ((dest, procs), _) = self
            .kept_reasons
            .borrow_mut()
            .get(totals, || self.read_reasons())?;
        snap.dest_reasons.extend(dest);
        snap.proc_reasons.extend(procs);
        Ok(())
    }
}

impl Sampler {
    /// DEST_REASONS and PROC_REASONS read whole. Batched like the rows: a key-by-key walk
    /// costs two syscalls per failing address.
    fn read_reasons(&self) -> Result<ReasonRows, String> {
        let dest = rows(&self.dest_reasons, self.ncpus, 0, |key, values| {
            (from_key(key), Reasons::from_kernel(values))
        })?;
        let procs = rows(&self.proc_reasons, self.ncpus, 0, |key, values| {
            let id = ProcId {
                pid: key.tgid,
                comm: super::procrows::comm_str(&key.comm),
                cgroup: key.cgroup,
                addr: from_key(key.addr),
                cohort: Cohort::from_index(key.cohort),
            };
            (id, Reasons::from_kernel(values))
        })?;
        Ok((dest, procs))
    }
}
