//! The counting core shared by every hook: maps, cohort matching and the per-socket record.
//! Per destination, local address and (process, destination) the first keys each own a row
//! for good: a slot per CPU in an array userspace maps and reads in place (a pass over memory,
//! not a hash walk), found once per connection through a plain hash and then kept in the
//! socket record. Keys beyond the rows count in the bounded LRU maps (DEST, LOCAL_IN, PROCS),
//! incremented through the pointer from a lookup; a key is inserted there only when missing
//! (never "update an existing key" on an LRU map).

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_cgroup_id, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    },
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, Queue, lpm_trie::Key},
};
use tracer_common::{
    Addr, BPF_F_MMAPABLE, COHORT_OTHER, COHORTS, CONFIG_COHORT_EXACT, CONFIG_COHORT_LPM,
    CONFIG_CONNECT_SOURCE, CONFIG_SLOTS, CONNECT_DERIVED, CensusInfo, DIR_IN, DIR_OUT, FailReasons,
    InCounters, LAT_ESTABLISHED, LAT_FAILED, LAT_SLOTS, LatHist, NO_ROW, OutCounters, ProcKey,
    REASON_NO_PORT, REASONS, STAT_CENSUS_CLOSED, STAT_DEST_INSERTS, STAT_DEST_ROWS,
    STAT_LOCAL_INSERTS, STAT_LOCAL_ROWS, STAT_PROC_INSERTS, STAT_PROC_ROWS,
    STAT_SOCK_INSERT_FAILED, STATS as STAT_SLOTS, SockInfo, TupleKey,
};

const BPF_NOEXIST: u64 = 1;

use crate::record::Sk;

/// Old/new prefixes (IPv4 mapped into IPv6), value = cohort. Filled by userspace.
#[map]
static COHORT_PREFIXES: LpmTrie<Addr, u32> = LpmTrie::with_max_entries(4096, 0);

/// Old/new host addresses (/32, /128), value = cohort: one hash lookup instead of a trie walk.
#[map]
static COHORT_HOSTS: HashMap<Addr, u32> = HashMap::with_max_entries(4096, 0);

/// Exact outbound totals per cohort: never evicted.
#[map]
static COHORT_OUT: PerCpuArray<OutCounters> = PerCpuArray::with_max_entries(COHORTS, 0);

/// Exact inbound totals per cohort of the local address.
#[map]
static COHORT_IN: PerCpuArray<InCounters> = PerCpuArray::with_max_entries(COHORTS, 0);

/// Outbound counters per destination beyond the rows; bounded (LRU).
#[map]
static DEST: LruPerCpuHashMap<Addr, OutCounters> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// Inbound counters per local address beyond the rows; bounded like `DEST`.
#[map]
static LOCAL_IN: LruPerCpuHashMap<Addr, InCounters> = LruPerCpuHashMap::with_max_entries(16384, 0);

/// Outbound counters per (process, destination) beyond the rows.
#[map]
static PROCS: LruPerCpuHashMap<ProcKey, OutCounters> = LruPerCpuHashMap::with_max_entries(4096, 0);

/// Rows of the destination and local tables, and of the process table, set at load: a row's
/// slot on CPU `c` is `c * rows + row`. Each CPU's slots lie together, apart from the other
/// CPUs': two CPUs counting connections to one destination never write the same cache line
/// (as `row * cpus + c` had them, ~8 contended lines per loopback connection).
#[unsafe(no_mangle)]
static DEST_ROW_CAP: u32 = 1;
#[unsafe(no_mangle)]
static PROC_ROW_CAP: u32 = 1;

/// Row tables (sizes set at load: `--max-destinations`, `--max-processes`).
#[map]
static DEST_INDEX: HashMap<Addr, u32> = HashMap::with_max_entries(65536, 0);
#[map]
static DEST_KEYS: Array<Addr> = Array::with_max_entries(65536, BPF_F_MMAPABLE);
#[map]
static DEST_ROWS: Array<OutCounters> = Array::with_max_entries(65536, BPF_F_MMAPABLE);
#[map]
static DEST_FREE: Queue<u32> = Queue::with_max_entries(65536, 0);
#[map]
static LOCAL_INDEX: HashMap<Addr, u32> = HashMap::with_max_entries(65536, 0);
#[map]
static LOCAL_KEYS: Array<Addr> = Array::with_max_entries(65536, BPF_F_MMAPABLE);
#[map]
static LOCAL_ROWS: Array<InCounters> = Array::with_max_entries(65536, BPF_F_MMAPABLE);
#[map]
static LOCAL_FREE: Queue<u32> = Queue::with_max_entries(65536, 0);
#[map]
static PROCS_INDEX: HashMap<ProcKey, u32> = HashMap::with_max_entries(16384, 0);
#[map]
static PROCS_KEYS: Array<ProcKey> = Array::with_max_entries(16384, BPF_F_MMAPABLE);
#[map]
static PROCS_ROWS: Array<OutCounters> = Array::with_max_entries(16384, BPF_F_MMAPABLE);
#[map]
static PROCS_FREE: Queue<u32> = Queue::with_max_entries(16384, 0);

/// Failed connects per reason: exact per cohort, bounded per destination and per process.
/// Written only on failures, so the common path (connects that succeed) pays nothing for them.
#[map]
static COHORT_REASONS: PerCpuArray<FailReasons> = PerCpuArray::with_max_entries(COHORTS, 0);

#[map]
static DEST_REASONS: LruPerCpuHashMap<Addr, FailReasons> =
    LruPerCpuHashMap::with_max_entries(65536, 0);

#[map]
static PROC_REASONS: LruPerCpuHashMap<ProcKey, FailReasons> =
    LruPerCpuHashMap::with_max_entries(16384, 0);

/// Connect latency (connect to ESTABLISHED, connect to failure) as log2 histograms, exact per
/// cohort: slot `cohort * 2 + LAT_ESTABLISHED|LAT_FAILED`.
#[map]
static LATENCY: PerCpuArray<LatHist> = PerCpuArray::with_max_entries(LAT_SLOTS, 0);

/// Connections that existed at start, by 4-tuple; removed at their close.
#[map]
static CENSUS: HashMap<TupleKey, CensusInfo> = HashMap::with_max_entries(1, 0);

/// Port filter (`--port`): when `PORT_FILTER` is set, only these ports are counted.
#[map]
static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(64, 0);

#[unsafe(no_mangle)]
static PORT_FILTER: u8 = 0;

/// Settings chosen after load (the connect source is known only once a hook attached).
#[map]
static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Which program counts attempts: exactly one source at a time.
#[inline(always)]
pub fn connect_source() -> u32 {
    config(CONFIG_CONNECT_SOURCE, CONNECT_DERIVED as u32)
}

#[inline(always)]
fn config(slot: u32, default: u32) -> u32 {
    CONFIG.get(slot).copied().unwrap_or(default)
}

/// Self-observation: inserts (to derive evictions) and failures.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);

#[derive(Clone, Copy)]
enum Out {
    Attempts,
    Established,
    Failed,
    Closed,
}

#[derive(Clone, Copy)]
enum In {
    Accepted,
    Closed,
}

#[inline(always)]
fn stat(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no other writer on this CPU while the program runs.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn bump_out(c: *mut OutCounters, f: Out) {
    // SAFETY: `c` points to this CPU's value of a per-CPU map.
    unsafe {
        match f {
            Out::Attempts => (*c).attempts += 1,
            Out::Established => (*c).established += 1,
            Out::Failed => (*c).failed += 1,
            Out::Closed => (*c).closed += 1,
        }
    }
}

#[inline(always)]
fn bump_in(c: *mut InCounters, f: In) {
    // SAFETY: as in `bump_out`.
    unsafe {
        match f {
            In::Accepted => (*c).accepted += 1,
            In::Closed => (*c).closed += 1,
        }
    }
}

/// Count through the pointer of an existing entry; insert only when the key is missing (never
/// "update an existing key" on an LRU map). True when this call inserted the key.
#[inline(always)]
fn upsert<K, V: Default>(map: &LruPerCpuHashMap<K, V>, key: &K, bump: impl Fn(*mut V)) -> bool {
    if let Some(c) = map.get_ptr_mut(key) {
        bump(c);
        return false;
    }
    let mut v = V::default();
    bump(&mut v);
    if map.insert(key, v, BPF_NOEXIST).is_ok() {
        return true;
    }
    // Another CPU inserted it meanwhile: count on this CPU's slot of that entry.
    if let Some(c) = map.get_ptr_mut(key) {
        bump(c);
    }
    false
}

/// The per-process key of a socket's record; none for sockets without a process (inbound,
/// census).
#[inline(always)]
fn proc_key(info: &SockInfo) -> Option<ProcKey> {
    (info.tgid != 0).then_some(ProcKey {
        cgroup: info.cgroup,
        tgid: info.tgid,
        cohort: info.cohort as u32,
        comm: info.comm,
        addr: info.addr,
    })
}

#[inline(always)]
pub fn port_allowed(port: u16) -> bool {
    // SAFETY: read-only lookup of plain data.
    crate::global(&PORT_FILTER) == 0 || unsafe { PORTS.get(port) }.is_some()
}

/// The cohort of an address, classified once per connection (at the connect or the accept):
/// host members by exact match first (the longest prefix there is), then the trie, each only
/// when the sets hold such members.
#[inline(always)]
fn cohort_of(addr: &Addr) -> u32 {
    if config(CONFIG_COHORT_EXACT, 1) != 0 {
        // SAFETY: read-only lookup of plain data.
        if let Some(c) = unsafe { COHORT_HOSTS.get(addr) } {
            return *c;
        }
    }
    if config(CONFIG_COHORT_LPM, 1) == 0 {
        return COHORT_OTHER;
    }
    COHORT_PREFIXES
        .get(Key::new(128, *addr))
        .copied()
        .unwrap_or(COHORT_OTHER)
}

/// The row of `key` in a row table, taken from the table's free queue the first time (counted
/// in the `taken` stat); `NO_ROW` when none is left (the key then counts in the LRU map).
#[inline(always)]
fn row_of<K: Copy>(
    index: &HashMap<K, u32>,
    keys: &Array<K>,
    free: &Queue<u32>,
    taken: u32,
    key: &K,
) -> u32 {
    // SAFETY: read-only lookup of plain data.
    if let Some(r) = unsafe { index.get(key) } {
        return *r;
    }
    let Ok(Some(r)) = free.pop() else {
        return NO_ROW;
    };
    if let Some(n) = STATS.get_ptr_mut(taken) {
        add_one(n);
    }
    if let Some(k) = keys.get_ptr_mut(r) {
        // SAFETY: the row is this program's alone until its key is in the index; its counts
        // are all zero, so userspace skips it until then.
        unsafe { *k = *key };
    }
    if index.insert(key, r, BPF_NOEXIST).is_ok() {
        return r;
    }
    // Another CPU gave the key a row meanwhile: this one goes back, unused.
    let _ = free.push(r, 0);
    // SAFETY: as above.
    unsafe { index.get(key) }.copied().unwrap_or(NO_ROW)
}

/// `*n += 1` as one instruction (`lock xadd`), unlike `stat`: a program that nests on this CPU
/// (a softirq over a cgroup hook) must not lose a row from the count, or userspace would not
/// read that row.
#[inline(always)]
fn add_one(n: *mut u64) {
    // SAFETY: `n` points to an aligned u64 in a map's memory.
    #[cfg(target_arch = "bpf")]
    unsafe {
        // The bpf target has no compare-and-swap, so no AtomicU64::fetch_add; the result
        // unused, this is BPF_ATOMIC BPF_ADD, which every kernel we load on has.
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            n, 1,
        );
    }
    // SAFETY: as above (host builds are for clippy and tests only).
    #[cfg(not(target_arch = "bpf"))]
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(n)
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

/// This CPU's slot of a row (`None` for `NO_ROW`).
#[inline(always)]
fn slot<V>(rows: &Array<V>, cap: &u32, row: u32) -> Option<*mut V> {
    if row == NO_ROW {
        return None;
    }
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    rows.get_ptr_mut(cpu.wrapping_mul(crate::global(cap)).wrapping_add(row))
}

/// The outbound record with its destination and process rows.
#[inline(always)]
fn with_out_rows(mut info: SockInfo) -> SockInfo {
    info.row = row_of(
        &DEST_INDEX,
        &DEST_KEYS,
        &DEST_FREE,
        STAT_DEST_ROWS,
        &info.addr,
    );
    if let Some(key) = proc_key(&info) {
        info.proc_row = row_of(&PROCS_INDEX, &PROCS_KEYS, &PROCS_FREE, STAT_PROC_ROWS, &key);
    }
    info
}

/// The row of a local address.
#[inline(always)]
fn local_row(addr: &Addr) -> u32 {
    row_of(
        &LOCAL_INDEX,
        &LOCAL_KEYS,
        &LOCAL_FREE,
        STAT_LOCAL_ROWS,
        addr,
    )
}

/// Count one outbound event for the destination and the process (in their rows, else in the
/// bounded maps), then the cohort (exact). The cohort goes last: userspace reads the cohort
/// totals first and skips reading the rest while they have not moved, so every change there
/// must be followed by a change of the totals.
#[inline(always)]
fn count_out(info: &SockInfo, f: Out) {
    if let Some(c) = slot(&DEST_ROWS, &DEST_ROW_CAP, info.row) {
        bump_out(c, f);
    } else if upsert(&DEST, &info.addr, |c| bump_out(c, f)) {
        stat(STAT_DEST_INSERTS);
    }
    if let Some(c) = slot(&PROCS_ROWS, &PROC_ROW_CAP, info.proc_row) {
        bump_out(c, f);
    } else if let Some(key) = proc_key(info)
        && upsert(&PROCS, &key, |c| bump_out(c, f))
    {
        stat(STAT_PROC_INSERTS);
    }
    if let Some(c) = COHORT_OUT.get_ptr_mut(info.cohort as u32) {
        bump_out(c, f);
    }
}

/// Count one inbound event for the local address (its row, else the bounded map), then its
/// cohort (exact; last, as in `count_out`).
#[inline(always)]
fn count_in(addr: &Addr, row: u32, cohort: u32, f: In) {
    if let Some(c) = slot(&LOCAL_ROWS, &DEST_ROW_CAP, row) {
        bump_in(c, f);
    } else if upsert(&LOCAL_IN, addr, |c| bump_in(c, f)) {
        stat(STAT_LOCAL_INSERTS);
    }
    if let Some(c) = COHORT_IN.get_ptr_mut(cohort) {
        bump_in(c, f);
    }
}

/// The record of an outbound connect made by the current task: who, where, which cohort.
#[inline(always)]
fn outbound(daddr: &Addr) -> SockInfo {
    SockInfo {
        // SAFETY: helper without arguments, valid in every program type used here.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        addr: *daddr,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        cohort: cohort_of(daddr) as u8,
        dir: DIR_OUT,
        ..SockInfo::default()
    }
}

/// An active open, in the connecting process: remember who, then count the attempt.
#[inline(always)]
pub fn on_connect(sk: Sk, daddr: &Addr, dport: u16) {
    crate::unsent::reached();
    if !port_allowed(dport) || !crate::filter::connect_ok(sk.0) {
        return;
    }
    let info = with_out_rows(SockInfo {
        // SAFETY: helper without arguments.
        syn_ns: unsafe { bpf_ktime_get_ns() },
        ..outbound(daddr)
    });
    if !sk.create(&info) {
        stat(STAT_SOCK_INSERT_FAILED);
    }
    count_out(&info, Out::Attempts);
}

#[inline(always)]
pub fn on_established(sk: Sk) {
    if let Some(p) = sk.get() {
        // SAFETY: the record stays valid while the program runs (RCU).
        let info = unsafe { &mut *p };
        if info.dir == DIR_OUT && info.established == 0 {
            info.established = 1;
            count_out(info, Out::Established);
            latency(info, LAT_ESTABLISHED);
        }
    }
}

/// Add the time since the connect to the cohort's histogram.
#[inline(always)]
fn latency(info: &SockInfo, kind: u32) {
    if info.syn_ns == 0 {
        return;
    }
    // SAFETY: helper without arguments.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(info.syn_ns);
    let bucket = tracer_common::log2_bucket(ns) as usize & 63;
    if let Some(h) = LATENCY.get_ptr_mut(tracer_common::lat_slot(info.cohort as u32, kind)) {
        // SAFETY: this CPU's value of a per-CPU array.
        if let Some(n) = unsafe { (*h).b.get_mut(bucket) } {
            *n += 1;
        }
    }
}

#[inline(always)]
fn bump_reason(r: *mut FailReasons, reason: usize) {
    // SAFETY: this CPU's value of a per-CPU map.
    if let Some(n) = unsafe { (*r).n.get_mut(reason) } {
        *n += 1;
    }
}

/// Count a failure's reason where `count_out` counts the failure itself.
#[inline(always)]
fn count_reason(info: &SockInfo, reason: u32) {
    let reason = if (reason as usize) < REASONS {
        reason as usize
    } else {
        REASONS - 1
    };
    // The cohort last, as in `count_out`.
    upsert(&DEST_REASONS, &info.addr, |r| bump_reason(r, reason));
    if let Some(key) = proc_key(info) {
        upsert(&PROC_REASONS, &key, |r| bump_reason(r, reason));
    }
    if let Some(r) = COHORT_REASONS.get_ptr_mut(info.cohort as u32) {
        bump_reason(r, reason);
    }
}

/// A connect ended before ESTABLISHED; `reason` was read from the socket's error.
#[inline(always)]
pub fn on_failed(sk: Sk, reason: u32) {
    let Some(p) = sk.get() else {
        return;
    };
    // SAFETY: copied out before the record is released.
    let info = unsafe { *p };
    sk.done(p);
    if info.dir == DIR_OUT && info.established == 0 {
        count_out(&info, Out::Failed);
        count_reason(&info, reason);
        // No SYN left: there is no handshake time to record (as with `on_unsent`).
        if reason != REASON_NO_PORT {
            latency(&info, LAT_FAILED);
        }
    }
}

/// A connect that failed before its socket reached SYN_SENT, in the connecting thread: an
/// attempt and a failure with its reason, no latency (no SYN was sent).
#[inline(always)]
pub fn on_unsent(daddr: &Addr, reason: u32) {
    // `--cgroup`: only tasks there were noted (the connect hooks are attached at that cgroup).
    if !crate::filter::task_netns_ok() {
        return;
    }
    let info = with_out_rows(outbound(daddr));
    count_out(&info, Out::Attempts);
    count_out(&info, Out::Failed);
    count_reason(&info, reason);
}

/// A passive open completed on the child socket: count it by local address.
#[inline(always)]
pub fn on_accept(sk: Sk, saddr: &Addr, sport: u16) {
    if !port_allowed(sport) || !crate::filter::accept_ok(sk.0) {
        return;
    }
    let cohort = cohort_of(saddr);
    let info = SockInfo {
        addr: *saddr,
        cohort: cohort as u8,
        dir: DIR_IN,
        established: 1,
        row: local_row(saddr),
        ..SockInfo::default()
    };
    if !sk.create(&info) {
        stat(STAT_SOCK_INSERT_FAILED);
    }
    count_in(saddr, info.row, cohort, In::Accepted);
}

/// An established connection left ESTABLISHED: count the close by its record, or, for a
/// connection from before the start, by its 4-tuple in the census.
#[inline(always)]
pub fn on_leave_established(sk: Sk, tuple: impl FnOnce() -> Result<TupleKey, u32>) {
    if let Some(p) = sk.get() {
        // SAFETY: copied out before the record is released.
        let info = unsafe { *p };
        sk.done(p);
        if info.dir == DIR_OUT {
            count_out(&info, Out::Closed);
        } else if info.dir == DIR_IN {
            count_in(&info.addr, info.row, info.cohort as u32, In::Closed);
        }
        return;
    }
    // A socket of another namespace never matches a census entry (the census is of `--netns`
    // only), however alike its 4-tuple.
    if !crate::filter::sock_netns_ok(sk.0) {
        return;
    }
    let Ok(key) = tuple() else { return };
    // SAFETY: copied out before the entry is removed.
    let Some(c) = unsafe { CENSUS.get(key) }.copied() else {
        return;
    };
    let _ = CENSUS.remove(key);
    stat(STAT_CENSUS_CLOSED);
    if c.dir == DIR_OUT as u32 {
        let info = with_out_rows(SockInfo {
            addr: key.daddr,
            cohort: c.cohort as u8,
            dir: DIR_OUT,
            ..SockInfo::default()
        });
        count_out(&info, Out::Closed);
    } else {
        count_in(&key.saddr, local_row(&key.saddr), c.cohort, In::Closed);
    }
}
