//! Kernel programs of `tracer`: count TCP connection attempts and state transitions per
//! destination (outbound) and per local address (inbound). All policy lives in userspace: the
//! cohort sets arrive in an LPM trie, offsets and the connect source arrive as globals.
#![no_std]
#![no_main]
// One atomic add (rows taken) needs the intrinsic: the bpf target has no atomic RMW types.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod counting;
mod dns;
mod filter;
mod record;
mod state_btf;
mod unsent;

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel,
    macros::{cgroup_sock_addr, fentry, kprobe, map, tracepoint},
    maps::PerCpuArray,
    programs::{FEntryContext, ProbeContext, SockAddrContext, TracePointContext},
};
use record::Sk;
use tracer_common::{
    Addr, CONNECT_DERIVED, REASON_NO_PORT, REASON_OTHER, SockOffsets, TCP_CLOSE, TCP_ESTABLISHED,
    TCP_SYN_RECV, TCP_SYN_SENT, TpOffsets, mapped_v4, reason_of,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;

/// Field offsets of `sock:inet_sock_set_state`, parsed from tracefs by userspace.
#[unsafe(no_mangle)]
static TP_OFFSETS: TpOffsets = TpOffsets {
    skaddr: 8,
    oldstate: 16,
    newstate: 20,
    sport: 24,
    dport: 26,
    family: 28,
    protocol: 30,
    saddr: 32,
    daddr: 36,
    saddr_v6: 40,
    daddr_v6: 56,
    record_len: 72,
};

/// `struct sock` offsets from the running kernel's BTF, for the `tcp_connect` hooks.
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets = SockOffsets {
    family: 0,
    daddr: 0,
    v6_daddr: 0,
    dport: 0,
    err: 0,
    err_soft: 0,
    protocol: 0,
    rcv_saddr: 0,
    v6_rcv_saddr: 0,
    sport: 0,
};

/// Nonzero only for `watch --hooks-only`: every program returns at once, so the bench measures
/// what the hooks cost by themselves. Frozen `.rodata`: at 0 the verifier knows the branch is
/// never taken and drops its code; a load and a jump remain (4 instructions per program, no
/// difference measured over 5 paired rounds).
#[unsafe(no_mangle)]
static HOOKS_ONLY: u8 = 0;

/// Is this a hooks-only run (see `HOOKS_ONLY`)?
#[inline(always)]
pub(crate) fn hooks_only() -> bool {
    global(&HOOKS_ONLY) != 0
}

#[inline(always)]
pub(crate) fn global<T: Copy>(v: &T) -> T {
    // SAFETY: globals are plain data in .rodata, set by the loader before the program runs.
    unsafe { core::ptr::read_volatile(v) }
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    match try_inet_sock_set_state(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

/// Largest tracepoint record read; the 6.18 record of this event is 72 bytes.
const RECORD_MAX: usize = 128;

/// Per-CPU scratch space for the record (the BPF stack is too small to hold it beside the rest).
#[map]
static RECORD: PerCpuArray<[u8; RECORD_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// The tracepoint record copied once: one helper call per event instead of one per field (the
/// offsets are runtime values, so direct context loads are not allowed).
struct Record {
    buf: *const [u8; RECORD_MAX],
}

impl Record {
    #[inline(always)]
    fn read(ctx: &TracePointContext, len: u32) -> Result<Record, u32> {
        let len = len as usize;
        if len == 0 || len > RECORD_MAX {
            return Err(1);
        }
        let buf = RECORD.get_ptr_mut(0).ok_or(1u32)?;
        // SAFETY: reads `len` bytes of the tracepoint record into this CPU's scratch slot.
        let rc = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                buf.cast(),
                len as u32,
                ctx.as_ptr().cast_const(),
            )
        };
        if rc != 0 {
            return Err(1);
        }
        Ok(Record { buf })
    }

    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> Result<T, u32> {
        let off = off as usize;
        if off + core::mem::size_of::<T>() > RECORD_MAX {
            return Err(1);
        }
        // SAFETY: bounds checked above; any bit pattern is a valid T for the plain types used.
        Ok(unsafe { core::ptr::read_unaligned(self.buf.cast::<u8>().add(off).cast::<T>()) })
    }

    /// The local or remote address in the shared 16-byte form.
    #[inline(always)]
    fn addr(&self, family: u16, off_v4: u32, off_v6: u32) -> Result<Addr, u32> {
        if family == AF_INET {
            Ok(mapped_v4(self.get::<[u8; 4]>(off_v4)?))
        } else {
            self.get::<Addr>(off_v6)
        }
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<u32, u32> {
    let o = global(&TP_OFFSETS);
    let rec = Record::read(ctx, o.record_len)?;
    if rec.get::<u16>(o.protocol)? != IPPROTO_TCP {
        return Ok(0);
    }
    let old: i32 = rec.get(o.oldstate)?;
    let new: i32 = rec.get(o.newstate)?;
    // Cheapest test first: most transitions are of no interest.
    let interesting = matches!(
        (old, new),
        (TCP_CLOSE, TCP_SYN_SENT)
            | (TCP_SYN_SENT, TCP_ESTABLISHED)
            | (TCP_SYN_SENT, TCP_CLOSE)
            | (TCP_SYN_RECV, TCP_ESTABLISHED)
            | (TCP_ESTABLISHED, _)
    );
    if !interesting {
        return Ok(0);
    }
    let family: u16 = rec.get(o.family)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(0);
    }
    let sk_addr: u64 = rec.get(o.skaddr)?;
    let sk = Sk(sk_addr);
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            if counting::connect_source() == CONNECT_DERIVED as u32 {
                let daddr = rec.addr(family, o.daddr, o.daddr_v6)?;
                let dport: u16 = rec.get(o.dport)?;
                counting::on_connect(sk, &daddr, dport);
            }
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) => counting::on_established(sk),
        (TCP_SYN_SENT, TCP_CLOSE) => {
            // No local port yet: `connect()` found none free and undoes SYN_SENT before any SYN
            // (only the derived hook counted this attempt; tcp_connect never ran).
            let reason = if rec.get::<u16>(o.sport)? == 0 {
                REASON_NO_PORT
            } else {
                sock_error(sk_addr as *const u8)
            };
            counting::on_failed(sk, reason)
        }
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            let saddr = rec.addr(family, o.saddr, o.saddr_v6)?;
            let sport: u16 = rec.get(o.sport)?;
            counting::on_accept(sk, &saddr, sport);
        }
        _ => {
            // Left ESTABLISHED. The tuple is needed only for connections from the census.
            counting::on_leave_established(sk, || {
                Ok(tracer_common::TupleKey {
                    saddr: rec.addr(family, o.saddr, o.saddr_v6)?,
                    daddr: rec.addr(family, o.daddr, o.daddr_v6)?,
                    sport: rec.get(o.sport)?,
                    dport: rec.get(o.dport)?,
                })
            });
        }
    }
    Ok(0)
}

/// The socket's error at `SYN_SENT -> CLOSE`, as a failure reason. The kernel writes `sk_err`
/// before it changes the state (`tcp_done_with_error`); `sk_err_soft` holds an ICMP error that
/// arrived while the socket was owned by its process. Offsets from BTF; unknown: `other`.
#[inline(always)]
pub(crate) fn sock_error(sk: *const u8) -> u32 {
    let o = global(&SOCK_OFFSETS);
    if o.err == 0 {
        return REASON_OTHER;
    }
    // SAFETY: `sk` is the tracepoint's socket pointer; the helper validates the read.
    let read = |off: u32| unsafe {
        bpf_probe_read_kernel(sk.add(off as usize) as *const i32).unwrap_or(-1)
    };
    let err = read(o.err);
    if err == 0 && o.err_soft != 0 {
        return reason_of(read(o.err_soft));
    }
    reason_of(err)
}

/// Read the destination of a connecting socket through the BTF offsets of `struct sock`;
/// `rec` says where its record goes.
#[inline(always)]
fn connect_from_sock(sk: *const u8, rec: Sk) -> Result<u32, u32> {
    let o = global(&SOCK_OFFSETS);
    // SAFETY: `sk` is the kernel's socket pointer; the helper validates every read.
    unsafe {
        let family: u16 =
            bpf_probe_read_kernel(sk.add(o.family as usize) as *const u16).map_err(|_| 1u32)?;
        let daddr = match family {
            AF_INET => mapped_v4(
                bpf_probe_read_kernel(sk.add(o.daddr as usize) as *const [u8; 4])
                    .map_err(|_| 1u32)?,
            ),
            AF_INET6 => bpf_probe_read_kernel(sk.add(o.v6_daddr as usize) as *const Addr)
                .map_err(|_| 1u32)?,
            _ => return Ok(0),
        };
        let dport_be: u16 =
            bpf_probe_read_kernel(sk.add(o.dport as usize) as *const u16).map_err(|_| 1u32)?;
        counting::on_connect(rec, &daddr, u16::from_be(dport_be));
    }
    Ok(0)
}

#[fentry(function = "tcp_connect")]
pub fn tcp_connect_fentry(ctx: FEntryContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    match connect_from_sock(sk, Sk(sk as u64)) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[kprobe]
pub fn tcp_connect_kprobe(ctx: ProbeContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    let Some(sk) = ctx.arg::<*const u8>(0) else {
        return 1;
    };
    match connect_from_sock(sk, Sk(sk as u64)) {
        Ok(ret) | Err(ret) => ret,
    }
}

/// Every `connect()` on the host passes the cgroup connect hooks: one program per family
/// serves both readers (a second program would cost a second run per connect). TCP connects
/// are noted for the connects that fail before a SYN, UDP ones to port 53 for the DNS capture.
/// Always allows the connect.
#[inline(always)]
fn on_connect_hook(ctx: &SockAddrContext, v6: bool) -> i32 {
    if hooks_only() {
        return 1;
    }
    // SAFETY: the context is valid for the program's run; its fields are read-only loads.
    match unsafe { (*ctx.sock_addr).type_ } {
        unsent::SOCK_STREAM => unsent::note(ctx, v6),
        dns::SOCK_DGRAM => dns::note(ctx),
        _ => 1,
    }
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    on_connect_hook(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    on_connect_hook(&ctx, true)
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    if hooks_only() {
        return 0;
    }
    match unsent::exit(&ctx) {
        Ok(ret) | Err(ret) => ret,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
