//! DNS answers per process. The sockets that send to UDP port 53 are noted with their owner
//! (pid, comm, cgroup) by socket cookie, in process context: the cgroup connect hooks (shared
//! with the unsent notes, in `main.rs`) see connected sockets (glibc, c-ares, Go), the sendmsg
//! hooks unconnected `sendto`s. A cgroup_skb
//! ingress program on the root cgroup passes every UDP datagram from port 53 (the answer,
//! already matched to its socket) to userspace through a ring buffer, with that owner.
//!
//! Cost on other traffic: a few loads from the packet in place and a compare per received
//! packet (no helper call); sends and connects that are not UDP to port 53 return after reading
//! two context fields.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_load_bytes,
        },
    },
    macros::{cgroup_skb, cgroup_sock_addr, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{SkBuffContext, SockAddrContext},
};
use tracer_common::{
    Addr,
    dns::{
        DNS_HDR_LEN, DNS_PAYLOAD_MAX, DNS_PORT, DNS_STAT_DROPPED, DNS_STAT_SEEN,
        DNS_STAT_TRUNCATED, DNS_STATS, DnsMsg, DnsOwner,
    },
    mapped_v4,
};

pub(crate) const SOCK_DGRAM: u32 = 2;
const IPPROTO_UDP: u8 = 17;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const UDP_HDR: u32 = 8;

/// Owner of each socket that sent to port 53, by socket cookie (never reused while booted).
#[map]
static DNS_OWNERS: LruHashMap<u64, DnsOwner> = LruHashMap::with_max_entries(16384, 0);

/// Answers for userspace: a `DnsMsgHdr` followed by the payload.
#[map]
static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Scratch space to build one record (too large for the BPF stack).
#[map]
static DNS_SCRATCH: PerCpuArray<DnsMsg> = PerCpuArray::with_max_entries(1, 0);

/// Answers seen, dropped (ring buffer full) and truncated.
#[map]
static DNS_STAT: PerCpuArray<u64> = PerCpuArray::with_max_entries(DNS_STATS, 0);

#[inline(always)]
fn bump(slot: u32) {
    if let Some(p) = DNS_STAT.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *p += 1 };
    }
}

/// Note the owner of a UDP socket that sends to port 53 (also called from the shared connect
/// hooks in `main.rs`). Always allows the call.
#[inline(always)]
pub(crate) fn note(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the context is valid for the program's run; its fields are read-only loads.
    let c = unsafe { &*ctx.sock_addr };
    if c.type_ != SOCK_DGRAM || u16::from_be(c.user_port as u16) != DNS_PORT {
        return 1;
    }
    // `--netns`: a socket of another namespace gets no owner, so its answers are not passed on.
    if !crate::filter::task_netns_ok() {
        return 1;
    }
    let owner = DnsOwner {
        // SAFETY: helper without arguments.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // SAFETY: the socket cookie helper takes the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = DNS_OWNERS.insert(cookie, owner, 0);
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn dns_sendmsg4(ctx: SockAddrContext) -> i32 {
    if crate::hooks_only() {
        return 1;
    }
    note(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn dns_sendmsg6(ctx: SockAddrContext) -> i32 {
    if crate::hooks_only() {
        return 1;
    }
    note(&ctx)
}

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    if crate::hooks_only() {
        return 1;
    }
    let _ = ingress(&ctx);
    1
}

/// Load `len` bytes at `off` of the packet (data starts at the network header here).
#[inline(always)]
fn load(ctx: &SkBuffContext, off: u32, to: *mut u8, len: u32) -> Result<(), ()> {
    // SAFETY: the helper checks the packet bounds; `to` has room for `len` bytes.
    let rc = unsafe { bpf_skb_load_bytes(ctx.as_ptr(), off, to.cast(), len) };
    if rc == 0 { Ok(()) } else { Err(()) }
}

/// The first `N` bytes of the packet's linear part, read in place (no helper call), or `None`
/// when the linear part is shorter.
#[inline(always)]
fn head<const N: usize>(ctx: &SkBuffContext) -> Option<&[u8; N]> {
    // SAFETY: context field loads; the bounds check below is the one the verifier wants.
    let (start, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    if start + N > end {
        return None;
    }
    // SAFETY: `N` bytes from `start` lie inside the packet, checked above.
    Some(unsafe { &*(start as *const [u8; N]) })
}

/// Is this surely not a DNS answer? Decided from the linear header in place: every TCP segment
/// and most other datagrams end here, at a few loads' cost. `false` means "look closer".
#[inline(always)]
fn surely_not_dns(ctx: &SkBuffContext, proto: u16) -> bool {
    match proto {
        ETH_P_IP => match head::<20>(ctx) {
            // The port is read in place only without IP options (the common case).
            Some(h) if h[9] != IPPROTO_UDP => true,
            Some(h) if h[0] == 0x45 => match head::<22>(ctx) {
                Some(h) => u16::from_be_bytes([h[20], h[21]]) != DNS_PORT,
                None => false,
            },
            _ => false,
        },
        ETH_P_IPV6 => match head::<42>(ctx) {
            Some(h) => h[6] != IPPROTO_UDP || u16::from_be_bytes([h[40], h[41]]) != DNS_PORT,
            None => false,
        },
        _ => true,
    }
}

#[inline(always)]
fn ingress(ctx: &SkBuffContext) -> Result<(), ()> {
    let proto = u16::from_be(ctx.skb.protocol() as u16);
    if surely_not_dns(ctx, proto) {
        return Ok(());
    }
    // The network and UDP headers in one load (IPv4 without options, or IPv6).
    let mut h = [0u8; 48];
    let (saddr, udp_off): (Addr, u32) = match proto {
        ETH_P_IP => {
            load(ctx, 0, h.as_mut_ptr(), 28)?;
            if h[9] != IPPROTO_UDP {
                return Ok(());
            }
            let ihl = (h[0] & 0x0f) as u32 * 4;
            let mut src = [0u8; 4];
            src.copy_from_slice(&h[12..16]);
            if ihl != 20 {
                load(ctx, ihl, h[20..].as_mut_ptr(), 8)?;
            }
            (mapped_v4(src), ihl)
        }
        ETH_P_IPV6 => {
            load(ctx, 0, h.as_mut_ptr(), 48)?;
            // Extension headers before UDP are not followed (never used for DNS answers).
            if h[6] != IPPROTO_UDP {
                return Ok(());
            }
            let mut src = [0u8; 16];
            src.copy_from_slice(&h[8..24]);
            // Move the UDP header to where the IPv4 path has it.
            let mut u = [0u8; 8];
            u.copy_from_slice(&h[40..48]);
            h[20..28].copy_from_slice(&u);
            (src, 40)
        }
        _ => return Ok(()),
    };
    let sport = u16::from_be_bytes([h[20], h[21]]);
    if sport != DNS_PORT {
        return Ok(());
    }
    // Rare from here on: a DNS answer.
    bump(DNS_STAT_SEEN);
    let udp_len = u16::from_be_bytes([h[24], h[25]]) as u32;
    let wire = udp_len.saturating_sub(UDP_HDR);
    let n = if wire as usize > DNS_PAYLOAD_MAX {
        bump(DNS_STAT_TRUNCATED);
        DNS_PAYLOAD_MAX as u32
    } else {
        wire
    };
    if n == 0 {
        return Ok(());
    }
    let msg = DNS_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: helper taking the context (0 without a socket).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: this CPU's scratch record, written before it is copied out.
    unsafe {
        let hdr = &mut (*msg).hdr;
        hdr.ns = bpf_ktime_get_ns();
        hdr.cookie = cookie;
        match DNS_OWNERS.get(cookie) {
            Some(o) => {
                hdr.owner = *o;
                hdr.owned = 1;
            }
            // With `--netns` an answer without a noted owner cannot be placed: dropped.
            None if crate::filter::netns_filtered() => return Ok(()),
            None => {
                hdr.owner = DnsOwner::default();
                hdr.owned = 0;
            }
        }
        hdr.saddr = saddr;
        hdr.sport = sport;
        hdr.len = n;
        hdr.wire_len = wire;
        // 1..=DNS_PAYLOAD_MAX already; the mask makes the bound visible to the verifier.
        let n = ((n - 1) & (DNS_PAYLOAD_MAX as u32 - 1)) + 1;
        load(ctx, udp_off + UDP_HDR, (*msg).payload.as_mut_ptr(), n)?;
        let rec = core::slice::from_raw_parts(msg.cast::<u8>(), DNS_HDR_LEN + n as usize);
        if DNS_EVENTS.output::<[u8]>(rec, 0).is_err() {
            bump(DNS_STAT_DROPPED);
        }
    }
    Ok(())
}
