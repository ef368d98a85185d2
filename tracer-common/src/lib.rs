//! Types shared by the kernel programs and userspace: every map key and value.
//!
//! All types are `#[repr(C)]` and padding-free so that the bytes the kernel writes are exactly the
//! bytes userspace reads. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one 16-byte
//! key covers both families and v4-mapped IPv6 folds into IPv4 by construction.
#![no_std]

pub mod dns;

/// A destination (outbound) or local (inbound) address, IPv4 stored as `::ffff:a.b.c.d`.
pub type Addr = [u8; 16];

/// Cohort index: where an address falls in the sets the user gave.
pub const COHORT_OTHER: u32 = 0;
pub const COHORT_OLD: u32 = 1;
pub const COHORT_NEW: u32 = 2;
pub const COHORTS: u32 = 3;

/// Direction of a tracked socket.
pub const DIR_OUT: u8 = 1;
pub const DIR_IN: u8 = 2;

/// Slots of the `CONFIG` array, written by userspace after the hooks are chosen.
pub const CONFIG_CONNECT_SOURCE: u32 = 0;
/// Non-zero when the cohort sets hold host addresses (/32, /128): they live in an exact-match
/// hash looked up before the LPM trie.
pub const CONFIG_COHORT_EXACT: u32 = 1;
/// Non-zero when the cohort sets hold wider prefixes: only then is the LPM trie looked up.
pub const CONFIG_COHORT_LPM: u32 = 2;
pub const CONFIG_SLOTS: u32 = 4;

/// Which program counts connect attempts (`CONFIG[CONFIG_CONNECT_SOURCE]`).
pub const CONNECT_DERIVED: u8 = 0;
pub const CONNECT_FENTRY: u8 = 1;
pub const CONNECT_KPROBE: u8 = 2;

/// TCP states as the tracepoint reports them.
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_SYN_SENT: i32 = 2;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_CLOSE: i32 = 7;

/// Indexes of the `STATS` per-CPU array (self-observation of the kernel side).
pub const STAT_DEST_INSERTS: u32 = 0;
pub const STAT_LOCAL_INSERTS: u32 = 1;
pub const STAT_PROC_INSERTS: u32 = 2;
pub const STAT_SOCK_INSERT_FAILED: u32 = 3;
pub const STAT_CENSUS_CLOSED: u32 = 4;
/// Rows taken from each row table's free queue: the queue hands rows out in order, so every row
/// in use lies below this count, and userspace reads no further.
pub const STAT_DEST_ROWS: u32 = 5;
pub const STAT_LOCAL_ROWS: u32 = 6;
pub const STAT_PROC_ROWS: u32 = 7;
pub const STATS: u32 = 8;

/// A socket record's row when its key has none (all rows taken): count in the LRU map.
pub const NO_ROW: u32 = u32::MAX;
/// `BPF_F_MMAPABLE`: the row arrays are mapped and read by userspace in place.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Outbound counters per destination, per cohort and per (process, destination).
/// The `open` gauge is derived in userspace: census + established - closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutCounters {
    /// Active opens (`CLOSE -> SYN_SENT`, or `tcp_connect`).
    pub attempts: u64,
    /// `SYN_SENT -> ESTABLISHED`.
    pub established: u64,
    /// `SYN_SENT -> CLOSE`: refused, reset or timed out.
    pub failed: u64,
    /// An established connection left ESTABLISHED.
    pub closed: u64,
}

/// Inbound counters per local address and per cohort of the local address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InCounters {
    /// `SYN_RECV -> ESTABLISHED` on the child socket.
    pub accepted: u64,
    /// An accepted connection left ESTABLISHED.
    pub closed: u64,
}

/// What the kernel remembers about one socket between its transitions, keyed by the socket
/// pointer. Made where the context is the owning process (the connect), read in softirq later.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    pub cgroup: u64,
    /// Remote address for outbound sockets, local address for inbound ones.
    pub addr: Addr,
    pub comm: [u8; 16],
    pub tgid: u32,
    pub cohort: u8,
    pub dir: u8,
    pub established: u8,
    pub _pad: u8,
    /// `bpf_ktime_get_ns()` at the connect, for the connect latency (0: unknown).
    pub syn_ns: u64,
    /// Row of `addr` in DEST_ROWS (outbound) or LOCAL_ROWS (inbound), or `NO_ROW`: taken once,
    /// at the connect or the accept, so later transitions add to it without a hash lookup.
    pub row: u32,
    /// Row of the process key in PROCS_ROWS, or `NO_ROW`.
    pub proc_row: u32,
}

impl Default for SockInfo {
    /// No rows: a record is never counted in row 0 by accident.
    fn default() -> Self {
        SockInfo {
            cgroup: 0,
            addr: [0; 16],
            comm: [0; 16],
            tgid: 0,
            cohort: 0,
            dir: 0,
            established: 0,
            _pad: 0,
            syn_ns: 0,
            row: NO_ROW,
            proc_row: NO_ROW,
        }
    }
}

/// Per (process, destination) key. The comm is part of the key so that a pid reused by another
/// program never mixes two programs' counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub cgroup: u64,
    pub tgid: u32,
    pub cohort: u32,
    pub comm: [u8; 16],
    pub addr: Addr,
}

/// A connection that existed when tracing started, found by the census (sock_diag); its later
/// close is matched by 4-tuple, since the census does not know the socket pointer.
/// Addresses as the socket sees them: `saddr` local, `daddr` remote. Ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TupleKey {
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport: u16,
    pub dport: u16,
}

/// Value of the census map: direction and cohort of the pre-existing connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CensusInfo {
    pub dir: u32,
    pub cohort: u32,
}

/// Field offsets of the classic tracepoint `sock:inet_sock_set_state`, read from its tracefs
/// `format` file at start rather than hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TpOffsets {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    /// Bytes of the record that cover every field above (end of the last one).
    pub record_len: u32,
}

/// Offsets inside `struct sock` for hooks that only see the socket pointer (fentry/kprobe on
/// `tcp_connect`), taken from the running kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    pub family: u32,
    pub daddr: u32,
    pub v6_daddr: u32,
    pub dport: u32,
    /// `sk_err` and `sk_err_soft`: why a connect failed. 0 = unknown (no BTF): reason `other`.
    pub err: u32,
    pub err_soft: u32,
    /// What the BTF-typed state hook (`tp_btf`) reads from the socket instead of a trace record:
    /// `sk_protocol` (u16), the local addresses and the local port (`inet_sport` of
    /// `struct inet_sock`, network order: what the classic tracepoint reports; `skc_num` is
    /// already 0 when a socket goes to CLOSE).
    pub protocol: u32,
    pub rcv_saddr: u32,
    pub v6_rcv_saddr: u32,
    pub sport: u32,
}

/// The filters of `--netns` and `--cgroup` and the kernel offsets they read, set at load (the
/// `FILTER` global). All zero: no filter, and the programs read nothing for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Inode of the network namespace to count (`--netns`); 0 = every namespace.
    pub netns: u32,
    /// Non-zero: count only outbound connects of tasks in the cgroup at index 0 of the
    /// `CGROUP_FILTER` array, or below it (`--cgroup`); inbound accepts are not counted.
    pub cgroup: u32,
    /// `struct sock` -> `__sk_common.skc_net.net` (a `struct net *`).
    pub sk_net: u32,
    /// `struct net` -> `ns.inum`.
    pub net_inum: u32,
    /// `struct task_struct` -> `nsproxy`, and `struct nsproxy` -> `net_ns`: the namespace of
    /// the current task, where no socket is at hand (connects failing before a SYN, DNS).
    pub task_nsproxy: u32,
    pub nsproxy_net: u32,
}

/// Why a connect ended before ESTABLISHED: index into `FailReasons::n`.
pub const REASON_REFUSED: u32 = 0;
pub const REASON_TIMEOUT: u32 = 1;
pub const REASON_UNREACHABLE: u32 = 2;
pub const REASON_RESET: u32 = 3;
/// No socket error: the application closed the socket first (its own connect timeout).
pub const REASON_ABORTED: u32 = 4;
/// `connect()` failed before a SYN existed: no route, or an unreachable, prohibit or blackhole
/// route (ENETUNREACH, EHOSTUNREACH, EACCES, EINVAL from the routing lookup).
pub const REASON_NO_ROUTE: u32 = 5;
/// `connect()` found no free local port for the destination (EADDRNOTAVAIL).
pub const REASON_NO_PORT: u32 = 6;
/// Anything else, or the error could not be read. Always the last slot.
pub const REASON_OTHER: u32 = 7;
pub const REASONS: usize = 8;

const ECONNREFUSED: i32 = 111;
const ETIMEDOUT: i32 = 110;
const EHOSTUNREACH: i32 = 113;
const ENETUNREACH: i32 = 101;
const ECONNRESET: i32 = 104;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;
const EADDRNOTAVAIL: i32 = 99;

/// Map the socket's error at `SYN_SENT -> CLOSE` to a reason. The kernel stores it before the
/// state change: an RST to the SYN (`tcp_reset`) and ICMP port unreachable give ECONNREFUSED,
/// exhausted SYN retries ETIMEDOUT (or the last ICMP soft error), ICMP host/net unreachable
/// EHOSTUNREACH/ENETUNREACH; a close by the application leaves 0.
#[inline(always)]
pub fn reason_of(err: i32) -> u32 {
    match err {
        ECONNREFUSED => REASON_REFUSED,
        ETIMEDOUT => REASON_TIMEOUT,
        EHOSTUNREACH | ENETUNREACH => REASON_UNREACHABLE,
        ECONNRESET => REASON_RESET,
        0 => REASON_ABORTED,
        _ => REASON_OTHER,
    }
}

/// Map the error of a `connect()` whose socket never reached `SYN_SENT` (the syscall's return
/// value, negated) to a reason: the routing lookup and the local port choice come before the SYN.
#[inline(always)]
pub fn unsent_reason_of(err: i32) -> u32 {
    match err {
        ENETUNREACH | EHOSTUNREACH | EACCES | EINVAL => REASON_NO_ROUTE,
        EADDRNOTAVAIL => REASON_NO_PORT,
        _ => REASON_OTHER,
    }
}

/// A TCP `connect()` seen by the cgroup connect hook and not yet past `SYN_SENT`, in the slot
/// of its thread: the syscall's exit counts it when it failed before a SYN was sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// `pid_tgid` of the connecting thread, 0 when the slot is free: threads share a slot
    /// (thread id modulo the slots), so the owner is checked before use.
    pub id: u64,
    pub addr: Addr,
    pub dport: u16,
    pub _pad: [u8; 6],
    /// `bpf_jiffies64()` at the hook: a stale entry (a connect that ended elsewhere, as
    /// with TCP Fast Open's `sendto`) is ignored.
    pub jiffies: u64,
}

/// Slots of the `PENDING` array (a power of two).
pub const PENDING_SLOTS: u32 = 16384;

/// Failed connects per reason (per cohort, destination or process).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailReasons {
    pub n: [u64; REASONS],
}

/// Buckets of a latency histogram: bucket `i` counts durations `d` (ns) with
/// `floor(log2(d)) == i` (bucket 0 also holds 0).
pub const LAT_BUCKETS: usize = 64;
/// Histogram slots of the `LATENCY` array: `cohort * 2 + LAT_ESTABLISHED|LAT_FAILED`.
pub const LAT_ESTABLISHED: u32 = 0;
pub const LAT_FAILED: u32 = 1;
pub const LAT_SLOTS: u32 = COHORTS * 2;

/// The `LATENCY` slot of a cohort's histogram of one kind (`LAT_ESTABLISHED`, `LAT_FAILED`).
pub const fn lat_slot(cohort: u32, kind: u32) -> u32 {
    cohort * 2 + kind
}

/// Names of the object's maps and globals as userspace finds them (the eBPF statics carry
/// these names; a unit test in `tracer` checks every one is in the object).
pub mod names {
    pub const COHORT_PREFIXES: &str = "COHORT_PREFIXES";
    pub const COHORT_HOSTS: &str = "COHORT_HOSTS";
    pub const COHORT_OUT: &str = "COHORT_OUT";
    pub const COHORT_IN: &str = "COHORT_IN";
    pub const DEST: &str = "DEST";
    pub const LOCAL_IN: &str = "LOCAL_IN";
    pub const PROCS: &str = "PROCS";
    pub const COHORT_REASONS: &str = "COHORT_REASONS";
    pub const DEST_REASONS: &str = "DEST_REASONS";
    pub const PROC_REASONS: &str = "PROC_REASONS";
    pub const LATENCY: &str = "LATENCY";
    pub const CENSUS: &str = "CENSUS";
    pub const PORTS: &str = "PORTS";
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const SOCKS: &str = "SOCKS";
    pub const CGROUP_FILTER: &str = "CGROUP_FILTER";
    /// Row tables: key to row (hash), key per row, counts per row and CPU, free rows (queue).
    pub const DEST_INDEX: &str = "DEST_INDEX";
    pub const DEST_KEYS: &str = "DEST_KEYS";
    pub const DEST_ROWS: &str = "DEST_ROWS";
    pub const DEST_FREE: &str = "DEST_FREE";
    pub const LOCAL_INDEX: &str = "LOCAL_INDEX";
    pub const LOCAL_KEYS: &str = "LOCAL_KEYS";
    pub const LOCAL_ROWS: &str = "LOCAL_ROWS";
    pub const LOCAL_FREE: &str = "LOCAL_FREE";
    pub const PROCS_INDEX: &str = "PROCS_INDEX";
    pub const PROCS_KEYS: &str = "PROCS_KEYS";
    pub const PROCS_ROWS: &str = "PROCS_ROWS";
    pub const PROCS_FREE: &str = "PROCS_FREE";
    pub const MAPS: &[&str] = &[
        COHORT_PREFIXES,
        COHORT_HOSTS,
        COHORT_OUT,
        COHORT_IN,
        DEST,
        LOCAL_IN,
        PROCS,
        COHORT_REASONS,
        DEST_REASONS,
        PROC_REASONS,
        LATENCY,
        CENSUS,
        PORTS,
        CONFIG,
        STATS,
        SOCKS,
        CGROUP_FILTER,
        DEST_INDEX,
        DEST_KEYS,
        DEST_ROWS,
        DEST_FREE,
        LOCAL_INDEX,
        LOCAL_KEYS,
        LOCAL_ROWS,
        LOCAL_FREE,
        PROCS_INDEX,
        PROCS_KEYS,
        PROCS_ROWS,
        PROCS_FREE,
    ];
    /// Globals set at load time.
    pub const TP_OFFSETS: &str = "TP_OFFSETS";
    pub const SOCK_OFFSETS: &str = "SOCK_OFFSETS";
    pub const PORT_FILTER: &str = "PORT_FILTER";
    pub const SYSCALL_RET: &str = "SYSCALL_RET";
    pub const FILTER: &str = "FILTER";
    /// Nonzero: every program returns at once (`watch --hooks-only`, a measurement).
    pub const HOOKS_ONLY: &str = "HOOKS_ONLY";
    /// Rows of the destination and local-address tables (each CPU's slots are that many).
    pub const DEST_ROW_CAP: &str = "DEST_ROW_CAP";
    /// Rows of the process table.
    pub const PROC_ROW_CAP: &str = "PROC_ROW_CAP";
}

/// A log2 histogram of connect latencies in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatHist {
    pub b: [u64; LAT_BUCKETS],
}

impl Default for LatHist {
    fn default() -> Self {
        LatHist {
            b: [0; LAT_BUCKETS],
        }
    }
}

/// `floor(log2(v))` (0 for 0) without loops, so the verifier sees straight-line code.
#[inline(always)]
pub fn log2_bucket(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: all types are repr(C), padding-free and valid for any bit pattern.
    unsafe impl aya::Pod for OutCounters {}
    unsafe impl aya::Pod for InCounters {}
    unsafe impl aya::Pod for SockInfo {}
    unsafe impl aya::Pod for ProcKey {}
    unsafe impl aya::Pod for TupleKey {}
    unsafe impl aya::Pod for CensusInfo {}
    unsafe impl aya::Pod for TpOffsets {}
    unsafe impl aya::Pod for SockOffsets {}
    unsafe impl aya::Pod for FailReasons {}
    unsafe impl aya::Pod for LatHist {}
    unsafe impl aya::Pod for Pending {}
    unsafe impl aya::Pod for Filter {}
}

/// Map an IPv4 address (network order bytes) into the shared 16-byte form.
#[inline(always)]
pub fn mapped_v4(v4: [u8; 4]) -> Addr {
    // Built from four words: as sixteen bytes, the bpf target zeroes the first ten through a
    // call to a byte-at-a-time `memset` on every connect.
    let w: [u32; 4] = [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(v4),
    ];
    // SAFETY: `[u32; 4]` and `[u8; 16]` have the same size, and every bit pattern is a valid
    // byte array; the words hold their bytes in memory order.
    unsafe { core::mem::transmute::<[u32; 4], Addr>(w) }
}

/// Fold an IPv4-mapped IPv6 address: already in shared form, so this is the identity; kept as the
/// one place that says so.
#[inline(always)]
pub fn is_v4_mapped(a: &Addr) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn shared_types_have_no_padding() {
        assert_eq!(size_of::<OutCounters>(), 32);
        assert_eq!(size_of::<InCounters>(), 16);
        assert_eq!(size_of::<SockInfo>(), 8 + 16 + 16 + 4 + 4 + 8 + 4 + 4);
        assert_eq!(size_of::<ProcKey>(), 8 + 4 + 4 + 16 + 16);
        assert_eq!(size_of::<TupleKey>(), 16 + 16 + 2 + 2);
        assert_eq!(size_of::<CensusInfo>(), 8);
        assert_eq!(size_of::<TpOffsets>(), 12 * 4);
        assert_eq!(size_of::<SockOffsets>(), 40);
        assert_eq!(size_of::<FailReasons>(), 8 * REASONS);
        assert_eq!(size_of::<LatHist>(), 8 * LAT_BUCKETS);
        assert_eq!(size_of::<Pending>(), 8 + 16 + 2 + 6 + 8);
        assert_eq!(size_of::<Filter>(), 6 * 4);
    }

    #[test]
    fn log2_bucket_is_floor_log2() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        for v in [
            2u64,
            3,
            4,
            1000,
            1 << 30,
            (1 << 30) + 1,
            u64::MAX,
            12345678901,
        ] {
            assert_eq!(log2_bucket(v), 63 - v.leading_zeros(), "{v}");
        }
    }

    #[test]
    fn errors_map_to_reasons() {
        assert_eq!(reason_of(111), REASON_REFUSED);
        assert_eq!(reason_of(110), REASON_TIMEOUT);
        assert_eq!(reason_of(113), REASON_UNREACHABLE);
        assert_eq!(reason_of(101), REASON_UNREACHABLE);
        assert_eq!(reason_of(104), REASON_RESET);
        assert_eq!(reason_of(0), REASON_ABORTED);
        assert_eq!(reason_of(13), REASON_OTHER);
    }

    #[test]
    fn connect_errors_before_the_syn_map_to_reasons() {
        for e in [101, 113, 13, 22] {
            assert_eq!(unsent_reason_of(e), REASON_NO_ROUTE, "{e}");
        }
        assert_eq!(unsent_reason_of(99), REASON_NO_PORT);
        assert_eq!(unsent_reason_of(1), REASON_OTHER);
        assert_eq!(REASON_OTHER as usize, REASONS - 1);
    }

    #[test]
    fn v4_is_mapped() {
        let a = mapped_v4([127, 10, 0, 1]);
        assert!(is_v4_mapped(&a));
        assert_eq!(&a[12..], &[127, 10, 0, 1]);
    }
}
