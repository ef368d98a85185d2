//! Whole-map reads of per-CPU hashes with BPF_MAP_LOOKUP_BATCH: a few syscalls per interval
//! instead of two per key (get-next-key, lookup), which is what keeps the sampler cheap with tens
//! of thousands of destinations. aya 0.14 has no batch API, so this is the raw syscall.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
};

use aya::{
    Pod,
    maps::{IterableMap, PerCpuValues},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const CHUNK: usize = 4096;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, per-CPU values) of a per-CPU hash map, collected (what the test checks).
#[cfg(test)]
pub fn read_percpu<K: Pod + Default, V: Pod + Default, M: IterableMap<K, PerCpuValues<V>>>(
    map: &M,
    ncpus: usize,
) -> io::Result<Vec<(K, Vec<V>)>> {
    let mut out = Vec::new();
    for_each_percpu(map, ncpus, |k, v: &[V]| out.push((k, v.to_vec())))?;
    Ok(out)
}

/// Hand every (key, per-CPU values) of a per-CPU hash map to `f`, with no allocation per
/// entry (the values slice is reused). `Err` when the kernel lacks batch lookups (before
/// 5.6), before `f` saw any entry.
pub fn for_each_percpu<K, V, M>(map: &M, ncpus: usize, f: impl FnMut(K, &[V])) -> io::Result<()>
where
    K: Pod + Default,
    V: Pod + Default,
    M: IterableMap<K, PerCpuValues<V>>,
{
    // Per-CPU values are laid out one per possible CPU, each rounded up to 8 bytes.
    let stride = size_of::<V>().div_ceil(8) * 8;
    for_each_raw(map.map(), ncpus, stride, f)
}

/// Hand every (key, value) of a plain (not per-CPU) hash map to `f`, batched like
/// `for_each_percpu`.
pub fn for_each_plain<K: Pod + Default, V: Pod + Default>(
    map: &aya::maps::MapData,
    mut f: impl FnMut(K, V),
) -> io::Result<()> {
    for_each_raw(map, 1, size_of::<V>(), |k, v: &[V]| f(k, v[0]))
}

fn for_each_raw<K: Pod + Default, V: Pod + Default>(
    map: &aya::maps::MapData,
    ncpus: usize,
    stride: usize,
    mut f: impl FnMut(K, &[V]),
) -> io::Result<()> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys = vec![K::default(); CHUNK];
    let mut values = vec![0u8; CHUNK * ncpus * stride];
    let mut per_cpu = vec![V::default(); ncpus];
    // The batch token of hash maps is a bucket index (u32); room for more does no harm.
    let mut token_in = [0u8; 16];
    let mut token_out = [0u8; 16];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token_in.as_ptr() as u64 },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: every pointer in attr refers to a live buffer sized for `count` elements.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc != 0).then(io::Error::last_os_error);
        let done = matches!(&err, Some(e) if e.raw_os_error() == Some(libc::ENOENT));
        if let Some(e) = err
            && !done
        {
            return Err(e);
        }
        for (i, key) in keys.iter().take(attr.count as usize).enumerate() {
            let base = i * ncpus * stride;
            for (c, v) in per_cpu.iter_mut().enumerate() {
                let at = base + c * stride;
                // SAFETY: `at..at + size_of::<V>()` lies inside `values`; V is Pod.
                *v = unsafe { std::ptr::read_unaligned(values[at..].as_ptr().cast::<V>()) };
            }
            f(*key, &per_cpu);
        }
        if done {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use aya::maps::{MapData, PerCpuHashMap, PerCpuValues};
    use tracer_common::OutCounters;

    use super::*;
    use crate::{
        kernel::{
            Config,
            hooks::{ConnectMode, StateMode},
        },
        model::cohort::Sets,
    };

    /// Loads the real object (needs root, as all BPF tests here) and fills DEST from userspace
    /// with more keys than one batch holds.
    #[test]
    #[ignore = "needs root (loads BPF maps): `cargo xtask test` runs it"]
    fn batch_read_returns_every_key_with_per_cpu_values() {
        let cfg = Config {
            sets: Sets::default(),
            ports: vec![],
            connect: ConnectMode::Derived,
            state: StateMode::Auto,
            max_destinations: 40_000,
            max_processes: 1024,
            filters: Default::default(),
            dns_capture: true,
            hooks_only: false,
        };
        let mut ebpf = crate::kernel::load_for_test(&cfg);
        let mut dest: PerCpuHashMap<MapData, [u8; 16], OutCounters> =
            PerCpuHashMap::try_from(ebpf.take_map("DEST").unwrap()).unwrap();
        let ncpus = aya::util::nr_cpus().unwrap();
        let n = CHUNK + 123;
        for i in 0..n as u32 {
            let mut key = [0u8; 16];
            key[12..].copy_from_slice(&i.to_be_bytes());
            let values: Vec<OutCounters> = (0..ncpus)
                .map(|c| OutCounters {
                    attempts: i as u64,
                    closed: c as u64,
                    ..Default::default()
                })
                .collect();
            dest.insert(key, PerCpuValues::try_from(values).unwrap(), 0)
                .unwrap();
        }
        let all = read_percpu(&dest, ncpus).expect("batch lookups work on this kernel");
        assert_eq!(all.len(), n);
        for (key, values) in all {
            let i = u32::from_be_bytes(key[12..].try_into().unwrap()) as u64;
            assert_eq!(values.len(), ncpus);
            for (c, v) in values.iter().enumerate() {
                assert_eq!((v.attempts, v.closed), (i, c as u64));
            }
        }
    }
}
