//! Connects that fail before a SYN exists (no route, no free local port): no socket state
//! changes for them, so the state tracepoint never sees them. The cgroup connect hook notes the
//! TCP destination in its thread's slot; `on_connect` clears the note once the socket reaches
//! SYN_SENT; the connect syscall's exit counts what is still noted when it returns an error.
//!
//! Every TCP connect on the host passes here, so the note is a plain array slot (thread id
//! modulo the slots, owner checked): a hash map insert and delete per connect cost several
//! times more. Two threads whose ids share a slot and that connect in the same microseconds
//! lose one note: that connect, if it failed before its SYN, is not counted.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_jiffies64},
    macros::map,
    maps::Array,
    programs::{SockAddrContext, TracePointContext},
};
use tracer_common::{Addr, PENDING_SLOTS, Pending, mapped_v4, unsent_reason_of};

pub(crate) const SOCK_STREAM: u32 = 1;
const IPPROTO_TCP: u32 = 6;
/// A note older than this many ticks did not come from the connect now returning (0.1 s at
/// HZ=1000, 1 s at HZ=100; a connect that fails before its SYN returns within microseconds).
/// The note is timed in jiffies: the verifier turns `bpf_jiffies64` into one load of the
/// kernel's tick count, where a clock read was the dearest step of the connect hook (~90-100
/// of its ~200 ns on a KVM guest, by ablation).
const STALE_JIFFIES: u64 = 100;
/// `connect()` on a non-blocking socket that sent its SYN.
const EINPROGRESS: i64 = 115;

/// Offset of `ret` in the `syscalls:sys_exit_connect` record, read from tracefs.
#[unsafe(no_mangle)]
static SYSCALL_RET: u32 = USUAL_SYSCALL_RET;
/// Where every kernel seen so far puts `ret`: after the common header and `__syscall_nr`.
const USUAL_SYSCALL_RET: u32 = 16;

/// TCP connects in flight, one slot per thread id modulo the slots, from the connect hook until
/// SYN_SENT or the syscall's exit.
#[map]
static PENDING: Array<Pending> = Array::with_max_entries(PENDING_SLOTS, 0);

/// This thread's slot, with the thread's `pid_tgid`.
#[inline(always)]
fn slot() -> Option<(*mut Pending, u64)> {
    let id = bpf_get_current_pid_tgid();
    let p = PENDING.get_ptr_mut(id as u32 & (PENDING_SLOTS - 1))?;
    Some((p, id))
}

/// Note a TCP connect of this thread. Always allows the connect.
#[inline(always)]
pub fn note(ctx: &SockAddrContext, v6: bool) -> i32 {
    // SAFETY: the context is valid for the program's run; its fields are read-only loads.
    let c = unsafe { &*ctx.sock_addr };
    if c.type_ != SOCK_STREAM || c.protocol != IPPROTO_TCP {
        return 1;
    }
    let addr: Addr = if v6 {
        // SAFETY: four words holding the address bytes in order (network order in memory).
        unsafe { core::mem::transmute::<[u32; 4], Addr>(c.user_ip6) }
    } else {
        mapped_v4(c.user_ip4.to_ne_bytes())
    };
    let dport = u16::from_be(c.user_port as u16);
    if !crate::counting::port_allowed(dport) {
        return 1;
    }
    if let Some((p, id)) = slot() {
        // SAFETY: a valid slot of the array; helper without arguments.
        unsafe {
            *p = Pending {
                id,
                addr,
                dport,
                _pad: [0; 6],
                jiffies: bpf_jiffies64(),
            }
        };
    }
    1
}

/// The socket of this thread's connect reached SYN_SENT: counted by the state hooks.
#[inline(always)]
pub fn reached() {
    if let Some((p, id)) = slot() {
        // SAFETY: a valid slot of the array.
        unsafe {
            if (*p).id == id {
                (*p).id = 0;
            }
        }
    }
}

/// The connect syscall returned: count it when it failed and never reached SYN_SENT.
#[inline(always)]
pub fn exit(ctx: &TracePointContext) -> Result<u32, u32> {
    // The result first, and where the record has it at the usual offset loaded in place (the
    // verifier takes context loads at constant offsets only): a connect that returned 0 or
    // EINPROGRESS reached SYN_SENT, where `reached` already freed its note, so nearly every
    // exit returns here without a helper call or a look at the thread's slot.
    let off = crate::global(&SYSCALL_RET);
    let ret: i64 = if off == USUAL_SYSCALL_RET {
        // SAFETY: `ret` of the syscall record; the verifier checks the load against the
        // tracepoint context's bounds.
        unsafe {
            core::ptr::read_volatile(
                ctx.as_ptr()
                    .cast::<u8>()
                    .add(USUAL_SYSCALL_RET as usize)
                    .cast(),
            )
        }
    } else {
        // SAFETY: reads the syscall record at an offset from its tracefs format.
        unsafe { ctx.read_at(off as usize) }.map_err(|_| 1u32)?
    };
    if ret >= 0 || ret == -EINPROGRESS || ret < -4095 {
        return Ok(0);
    }
    let Some((slot, id)) = slot() else {
        return Ok(0);
    };
    // SAFETY: a valid slot of the array; copied out, then freed.
    let p = unsafe {
        if (*slot).id != id {
            return Ok(0);
        }
        (*slot).id = 0;
        *slot
    };
    // SAFETY: helper without arguments.
    let age = unsafe { bpf_jiffies64() }.saturating_sub(p.jiffies);
    if age > STALE_JIFFIES {
        return Ok(0);
    }
    crate::counting::on_unsent(&p.addr, unsent_reason_of(-ret as i32));
    Ok(0)
}
