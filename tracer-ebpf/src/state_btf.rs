//! The state program as `tp_btf` on `inet_sock_set_state`: the states arrive as arguments (no
//! trace record is built or copied, nothing is read for the transitions nothing counts), the
//! socket as a BTF-typed pointer. Fields are read from the socket only on the transitions that
//! need them, at the BTF offsets userspace passes in `SOCK_OFFSETS`: those of `struct sock` by
//! plain loads the verifier checks against BTF, the local port (in `struct inet_sock`) through
//! the helper.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use tracer_common::{
    Addr, CONNECT_DERIVED, REASON_NO_PORT, TCP_CLOSE, TCP_ESTABLISHED, TCP_SYN_RECV, TCP_SYN_SENT,
    TupleKey, mapped_v4,
};

use crate::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_OFFSETS, counting, global, record::Sk};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> u32 {
    if crate::hooks_only() {
        return 0;
    }
    let sk: *mut c_void = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    // Cheapest test first: half of all transitions are of no interest, and need no read.
    let interesting = matches!(
        (old, new),
        (TCP_CLOSE, TCP_SYN_SENT)
            | (TCP_SYN_SENT, TCP_ESTABLISHED)
            | (TCP_SYN_SENT, TCP_CLOSE)
            | (TCP_SYN_RECV, TCP_ESTABLISHED)
            | (TCP_ESTABLISHED, _)
    );
    if !interesting {
        return 0;
    }
    match transition(sk, old, new) {
        Ok(()) | Err(()) => 0,
    }
}

/// A field of the socket at a BTF offset, through the helper: for fields outside
/// `struct sock` (the local port is in `struct inet_sock`).
#[inline(always)]
fn field<T: Copy>(sk: *mut c_void, off: u32) -> Result<T, ()> {
    // SAFETY: the hook's socket pointer; the helper validates the read.
    unsafe { bpf_probe_read_kernel(sk.cast::<u8>().add(off as usize).cast::<T>()) }.map_err(|_| ())
}

/// A field of `struct sock` loaded in place: the socket is a BTF-typed pointer, so a plain load
/// is allowed where the verifier knows the offset (a field of the frozen `.rodata`, read on its
/// own so it stays a known constant) and finds a field of that size there. No helper call.
#[inline(always)]
fn sock<T: Copy>(sk: *mut c_void, off: &u32) -> T {
    let off = global(off);
    // SAFETY: checked by the verifier against the socket's BTF type at load time.
    unsafe { core::ptr::read_volatile(sk.cast::<u8>().add(off as usize).cast::<T>()) }
}

/// The remote (`local == false`) or local address in the shared 16-byte form.
#[inline(always)]
fn addr(sk: *mut c_void, family: u16, local: bool) -> Addr {
    let o = &SOCK_OFFSETS;
    let (v4, v6) = if local {
        (&o.rcv_saddr, &o.v6_rcv_saddr)
    } else {
        (&o.daddr, &o.v6_daddr)
    };
    if family == AF_INET {
        mapped_v4(sock::<u32>(sk, v4).to_ne_bytes())
    } else {
        // Four 32-bit loads, each inside `in6_addr.s6_addr32`.
        let w: [u32; 4] = [
            sock::<u32>(sk, v6),
            sock_at::<u32>(sk, v6, 4),
            sock_at::<u32>(sk, v6, 8),
            sock_at::<u32>(sk, v6, 12),
        ];
        // SAFETY: the words hold the address bytes in order (network order in memory).
        unsafe { core::mem::transmute::<[u32; 4], Addr>(w) }
    }
}

/// As `sock`, `extra` bytes further on.
#[inline(always)]
fn sock_at<T: Copy>(sk: *mut c_void, off: &u32, extra: usize) -> T {
    let off = global(off) as usize + extra;
    // SAFETY: as in `sock`.
    unsafe { core::ptr::read_volatile(sk.cast::<u8>().add(off).cast::<T>()) }
}

#[inline(always)]
fn transition(sk: *mut c_void, old: i32, new: i32) -> Result<(), ()> {
    let o = &SOCK_OFFSETS;
    if sock::<u16>(sk, &o.protocol) != IPPROTO_TCP {
        return Ok(());
    }
    let rec = Sk(sk as u64);
    match (old, new) {
        (TCP_SYN_SENT, TCP_ESTABLISHED) => counting::on_established(rec),
        (TCP_CLOSE, TCP_SYN_SENT) => {
            if counting::connect_source() == CONNECT_DERIVED as u32 {
                let family = family(sk)?;
                let daddr = addr(sk, family, false);
                let dport = u16::from_be(sock::<u16>(sk, &o.dport));
                counting::on_connect(rec, &daddr, dport);
            }
        }
        (TCP_SYN_SENT, TCP_CLOSE) => {
            // No local port yet: `connect()` found none free (see the classic program).
            let reason = if field::<u16>(sk, global(&o.sport))? == 0 {
                REASON_NO_PORT
            } else {
                crate::sock_error(sk as *const u8)
            };
            counting::on_failed(rec, reason)
        }
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            let family = family(sk)?;
            let saddr = addr(sk, family, true);
            let sport = u16::from_be(field::<u16>(sk, global(&o.sport))?);
            counting::on_accept(rec, &saddr, sport);
        }
        _ => {
            // Left ESTABLISHED. The tuple is needed only for connections from the census.
            counting::on_leave_established(rec, || {
                let family = family(sk).map_err(|_| 1u32)?;
                Ok(TupleKey {
                    saddr: addr(sk, family, true),
                    daddr: addr(sk, family, false),
                    sport: u16::from_be(field::<u16>(sk, global(&o.sport)).map_err(|_| 1u32)?),
                    dport: u16::from_be(sock::<u16>(sk, &o.dport)),
                })
            });
        }
    }
    Ok(())
}

/// The socket's address family, when it is one tracer counts.
#[inline(always)]
fn family(sk: *mut c_void) -> Result<u16, ()> {
    let f: u16 = sock(sk, &SOCK_OFFSETS.family);
    if f != AF_INET && f != AF_INET6 {
        return Err(());
    }
    Ok(f)
}
