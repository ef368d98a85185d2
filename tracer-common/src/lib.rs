//! Types shared by the kernel programs and userspace: every map key and value.
//!
//! All types are `#[repr(C)]` and padding-free so that the bytes the kernel writes are exactly the
//! bytes userspace reads. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one 16-byte
//! key covers both families and v4-mapped IPv6 folds into IPv4 by construction.
#![no_std]

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
pub const STATS: u32 = 8;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    pub _pad: u32,
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
}

/// Map an IPv4 address (network order bytes) into the shared 16-byte form.
#[inline(always)]
pub fn mapped_v4(v4: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
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
        assert_eq!(size_of::<SockInfo>(), 8 + 16 + 16 + 4 + 4);
        assert_eq!(size_of::<ProcKey>(), 8 + 4 + 4 + 16 + 16);
        assert_eq!(size_of::<TupleKey>(), 16 + 16 + 2 + 2);
        assert_eq!(size_of::<CensusInfo>(), 8);
        assert_eq!(size_of::<TpOffsets>(), 12 * 4);
        assert_eq!(size_of::<SockOffsets>(), 16);
    }

    #[test]
    fn v4_is_mapped() {
        let a = mapped_v4([127, 10, 0, 1]);
        assert!(is_v4_mapped(&a));
        assert_eq!(&a[12..], &[127, 10, 0, 1]);
    }
}
