//! DNS answers captured in the kernel: the owner noted per UDP socket that sends to port 53, and
//! the record each answer becomes in the ring buffer (this header, then the payload).

use crate::Addr;

/// Largest DNS payload copied per answer. Larger UDP answers (rare: resolvers cap EDNS at 1232
/// bytes) are marked truncated and counted, not parsed.
pub const DNS_PAYLOAD_MAX: usize = 2048;
/// The DNS port, on the resolver's side.
pub const DNS_PORT: u16 = 53;

/// Who uses a socket that sends to port 53, noted in process context (connect or sendmsg).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOwner {
    pub cgroup: u64,
    pub tgid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// One answer as the kernel saw it arrive; `len` payload bytes follow in the ring buffer record
/// (at most `DNS_PAYLOAD_MAX`; `wire_len` is the payload length on the wire).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsMsgHdr {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at receipt.
    pub ns: u64,
    pub cookie: u64,
    pub owner: DnsOwner,
    /// The resolver's address (IPv4 mapped) and port.
    pub saddr: Addr,
    pub sport: u16,
    /// 1 when an owner was noted for the socket, else 0 (socket set up before tracer started).
    pub owned: u8,
    pub _pad: u8,
    pub len: u32,
    pub wire_len: u32,
    pub _pad2: u32,
}

/// Slots of the capture's statistics array.
pub const DNS_STAT_SEEN: u32 = 0;
/// The ring buffer was full: answers lost.
pub const DNS_STAT_DROPPED: u32 = 1;
/// Larger than `DNS_PAYLOAD_MAX`: not copied whole.
pub const DNS_STAT_TRUNCATED: u32 = 2;
pub const DNS_STATS: u32 = 3;

/// A whole record: the header and room for the largest payload (per-CPU scratch space).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsMsg {
    pub hdr: DnsMsgHdr,
    pub payload: [u8; DNS_PAYLOAD_MAX],
}

pub const DNS_HDR_LEN: usize = core::mem::size_of::<DnsMsgHdr>();

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), padding-free, valid for any bit pattern.
    unsafe impl aya::Pod for DnsOwner {}
    unsafe impl aya::Pod for DnsMsgHdr {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_has_no_padding() {
        assert_eq!(core::mem::size_of::<DnsOwner>(), 32);
        assert_eq!(DNS_HDR_LEN, 8 + 8 + 32 + 16 + 2 + 1 + 1 + 4 + 4 + 4);
        assert_eq!(DNS_HDR_LEN % 8, 0);
    }
}
