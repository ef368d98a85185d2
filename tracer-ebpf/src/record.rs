//! Where the per-socket record lives between a socket's transitions. With a BTF-typed socket
//! (`tp_btf`, fentry) it is socket-local storage: found through the socket itself, freed with
//! it, never evicted, no pointer reuse. The classic tracepoint and the kprobe only see the
//! pointer as a number: there it is an LRU hash keyed by that number (the fallback).

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    btf_maps::SkStorage,
    helpers::generated::bpf_sk_storage_get,
    macros::{btf_map, map},
    maps::LruHashMap,
};
use tracer_common::SockInfo;

/// Fallback store, keyed by the socket pointer; sized to one entry when `tp_btf` is used.
#[map]
static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(262144, 0);

/// Socket-local storage (kernel 5.11+ for tracing programs).
#[btf_map]
static SK_RECORDS: SkStorage<SockInfo> = SkStorage::new();

/// A socket as the running program sees it.
#[derive(Clone, Copy)]
pub enum Sk {
    /// The pointer as a number: the record is in `SOCKS`.
    Hash(u64),
    /// The BTF-typed pointer: the record is in the socket's own storage.
    Local(*mut c_void),
}

impl Sk {
    #[inline(always)]
    fn local(sk: *mut c_void, flags: u64) -> *mut SockInfo {
        let map = ptr::from_ref(&SK_RECORDS).cast_mut().cast::<c_void>();
        // SAFETY: `sk` is the BTF-typed socket of the hook; the kernel checks it.
        unsafe { bpf_sk_storage_get(map, sk, ptr::null_mut(), flags) }.cast()
    }

    /// Store `info` as the socket's record (replacing one from an earlier connect of the same
    /// socket). False when the kernel could not store it.
    #[inline(always)]
    pub fn create(self, info: &SockInfo) -> bool {
        match self {
            Sk::Hash(k) => SOCKS.insert(k, *info, 0).is_ok(),
            Sk::Local(sk) => {
                let p = Self::local(sk, BPF_SK_STORAGE_GET_F_CREATE.into());
                if p.is_null() {
                    return false;
                }
                // SAFETY: the socket's storage, valid while the program runs.
                unsafe { *p = *info };
                true
            }
        }
    }

    /// The socket's record, if it has a live one.
    #[inline(always)]
    pub fn get(self) -> Option<*mut SockInfo> {
        let p = match self {
            Sk::Hash(k) => SOCKS.get_ptr_mut(k)?,
            Sk::Local(sk) => Self::local(sk, 0),
        };
        if p.is_null() {
            return None;
        }
        Some(p)
    }

    /// The record has served (the connect failed, or the connection left ESTABLISHED): the
    /// hash entry is removed; socket storage is only marked, it goes with the socket.
    #[inline(always)]
    pub fn done(self, p: *mut SockInfo) {
        match self {
            Sk::Hash(k) => {
                let _ = SOCKS.remove(k);
            }
            // SAFETY: the socket's storage, valid while the program runs.
            Sk::Local(_) => unsafe { (*p).dir = 0 },
        }
    }
}
