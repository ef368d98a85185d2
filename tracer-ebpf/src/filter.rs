//! `--netns` and `--cgroup`: which sockets count at all. Unset, each check is one test of a
//! load-time constant (the verifier drops the rest). Set, the netns check is two reads from the
//! socket (or three from the current task), the cgroup check one helper call; both run once per
//! connection, where its record is made: closes and failures follow the record.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task},
    macros::map,
    maps::CgroupArray,
};
use tracer_common::Filter;

use crate::global;

#[unsafe(no_mangle)]
static FILTER: Filter = Filter {
    netns: 0,
    cgroup: 0,
    sk_net: 0,
    net_inum: 0,
    task_nsproxy: 0,
    nsproxy_net: 0,
};

/// The `--cgroup` directory at index 0, set by userspace.
#[map]
static CGROUP_FILTER: CgroupArray = CgroupArray::with_max_entries(1, 0);

#[inline(always)]
fn read<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: a kernel pointer plus a BTF offset; the helper validates the read.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// Inode of a network namespace (`struct net *`), 0 when it cannot be read.
#[inline(always)]
fn inum(net: u64, f: &Filter) -> u32 {
    read::<u32>(net, f.net_inum).unwrap_or(0)
}

/// Is the socket `sk` in the namespace of `--netns` (or is there no such filter)?
#[inline(always)]
pub fn sock_netns_ok(sk: u64) -> bool {
    let f = global(&FILTER);
    if f.netns == 0 {
        return true;
    }
    let net = read::<u64>(sk, f.sk_net).unwrap_or(0);
    inum(net, &f) == f.netns
}

/// Is the current task in the namespace of `--netns` (or is there no such filter)? For the
/// programs that have no socket at hand; a socket lives in the namespace of the task that
/// made it.
#[inline(always)]
pub fn task_netns_ok() -> bool {
    let f = global(&FILTER);
    if f.netns == 0 {
        return true;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let nsproxy = read::<u64>(task, f.task_nsproxy).unwrap_or(0);
    let net = read::<u64>(nsproxy, f.nsproxy_net).unwrap_or(0);
    inum(net, &f) == f.netns
}

/// Outbound, in the connecting task: its socket's namespace and the task's cgroup.
#[inline(always)]
pub fn connect_ok(sk: u64) -> bool {
    if !sock_netns_ok(sk) {
        return false;
    }
    global(&FILTER).cgroup == 0 || CGROUP_FILTER.current_task_under_cgroup(0) == Ok(true)
}

/// Inbound, in softirq (no task of the server at hand): its namespace; with `--cgroup`,
/// accepts are not counted.
#[inline(always)]
pub fn accept_ok(sk: u64) -> bool {
    global(&FILTER).cgroup == 0 && sock_netns_ok(sk)
}

/// Is `--netns` set?
#[inline(always)]
pub fn netns_filtered() -> bool {
    global(&FILTER).netns != 0
}
