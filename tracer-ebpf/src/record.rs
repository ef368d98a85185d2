//! The per-socket record between a socket's transitions, in an LRU hash keyed by the socket
//! pointer (made at the connect or the accept, removed when it has served). Both state hooks
//! and every connect hook use it. Socket-local storage (`SK_STORAGE`) was measured in its
//! place beside `tp_btf` and cost more per connection on 6.18 (an allocation and a memory
//! cgroup charge per socket, a free by RCU at its end): see bench/RESULTS.md.

use aya_ebpf::{macros::map, maps::LruHashMap};
use tracer_common::SockInfo;

#[map]
static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(262144, 0);

/// A socket, by its pointer as a number.
#[derive(Clone, Copy)]
pub struct Sk(pub u64);

impl Sk {
    /// Store `info` as the socket's record (replacing one from an earlier connect of the same
    /// socket). False when the kernel could not store it.
    #[inline(always)]
    pub fn create(self, info: &SockInfo) -> bool {
        SOCKS.insert(self.0, *info, 0).is_ok()
    }

    /// The socket's record, if it has one.
    #[inline(always)]
    pub fn get(self) -> Option<*mut SockInfo> {
        SOCKS.get_ptr_mut(self.0)
    }

    /// The record has served (the connect failed, or the connection left ESTABLISHED).
    #[inline(always)]
    pub fn done(self, _p: *mut SockInfo) {
        let _ = SOCKS.remove(self.0);
    }
}
