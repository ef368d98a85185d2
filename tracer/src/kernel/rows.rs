//! Counter rows (see the kernel's `counting.rs`): the first keys of DEST, LOCAL_IN and PROCS
//! each own a row for good, with one slot per CPU. The kernel takes rows from a free queue,
//! which hands them out in order; the first rows are queued at load, the rest by the sampler,
//! `PER_SAMPLE` at a time (a syscall per row: millions would hold up the start for seconds; a
//! key that finds no row meanwhile counts in the LRU map, merged by the sampler). Userspace
//! reads the rows the kernel has taken (its count in `STATS`) through short-lived read-only
//! mappings of the key and count arrays: a pass over memory, where a hash walk costs ~150 ns
//! per entry in the kernel.

use std::{
    cell::{Cell, RefCell},
    io,
    marker::PhantomData,
    mem::size_of,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::{
    Pod,
    maps::{Map, MapData, Queue},
};

use super::{Tracer, hooks::one_line};

/// Rows mapped at a time: the peak RSS stays small whatever the table's size. A multiple of the
/// page size in rows, so that every window starts on a page for any element size.
const WINDOW: u32 = 4096;
/// Rows queued at load, before anything counts.
const FIRST: u32 = 8192;
/// Rows queued per sample until all are.
pub const PER_SAMPLE: u32 = 65536;

/// One row table: the kernel's key array, count array (`cpu * cap + row`: each CPU's slots
/// together) and free queue.
pub struct Rows<K, V> {
    keys: MapData,
    counts: MapData,
    cap: u32,
    ncpus: usize,
    free: RefCell<Queue<MapData, u32>>,
    /// Rows queued so far (`0..queued`, in order): every row the kernel can have taken.
    queued: Cell<u32>,
    _t: PhantomData<(K, V)>,
}

fn array(t: &mut Tracer, name: &str) -> Result<MapData, String> {
    match t.ebpf.take_map(name) {
        Some(Map::Array(d)) => Ok(d),
        Some(_) => Err(format!("map {name} is not an array")),
        None => Err(format!("map {name} missing from the object")),
    }
}

impl<K: Pod, V: Pod> Rows<K, V> {
    /// The table of the maps `[keys, counts, free]`, its first rows queued.
    pub fn new(
        t: &mut Tracer,
        [keys, counts, free]: [&str; 3],
        ncpus: usize,
    ) -> Result<Self, String> {
        let queue = t
            .ebpf
            .take_map(free)
            .ok_or_else(|| format!("map {free} missing from the object"))?;
        let queue: Queue<MapData, u32> = Queue::try_from(queue).map_err(|e| one_line(&e))?;
        let keys = array(t, keys)?;
        let cap = keys.info().map_err(|e| one_line(&e))?.max_entries();
        let rows = Rows {
            keys,
            counts: array(t, counts)?,
            free: RefCell::new(queue),
            cap,
            ncpus,
            queued: Cell::new(0),
            _t: PhantomData,
        };
        rows.queue(FIRST)?;
        Ok(rows)
    }

    /// Queue up to `n` more rows, in order, until all are queued (a syscall per row).
    pub fn queue(&self, n: u32) -> Result<(), String> {
        let end = self.queued.get().saturating_add(n).min(self.cap);
        let mut q = self.free.borrow_mut();
        for row in self.queued.get()..end {
            q.push(row, 0)
                .map_err(|e| format!("cannot queue free rows: {}", one_line(&e)))?;
            self.queued.set(row + 1);
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn all_queued(&self) -> bool {
        self.queued.get() == self.cap
    }

    pub fn capacity(&self) -> u32 {
        self.cap
    }

    /// Every row in use (any count not zero) among the first `taken` (the kernel's count of
    /// rows taken; only queued rows can be): its key and per-CPU counts.
    pub fn for_each(&self, taken: u64, mut f: impl FnMut(K, &[V])) -> io::Result<()> {
        let used = u32::try_from(taken)
            .unwrap_or(u32::MAX)
            .min(self.queued.get());
        let mut slots = Vec::with_capacity(self.ncpus);
        let mut counts = Vec::with_capacity(self.ncpus);
        let mut start = 0;
        while start < used {
            let n = WINDOW.min(used - start);
            let keys = Window::new(self.keys.fd().as_fd(), start, n, size_of::<K>())?;
            // The same rows in each CPU's part of the count array.
            counts.clear();
            for c in 0..self.ncpus as u32 {
                let from = c * self.cap + start;
                counts.push(Window::new(
                    self.counts.fd().as_fd(),
                    from,
                    n,
                    size_of::<V>(),
                )?);
            }
            for i in 0..n as usize {
                slots.clear();
                slots.extend(counts.iter().map(|w| w.get::<V>(i)));
                if slots.iter().all(|v| is_zero(v)) {
                    continue;
                }
                f(keys.get::<K>(i), &slots);
            }
            start += n;
        }
        Ok(())
    }
}

/// All bytes zero, compared a word at a time where the type allows (the counters are u64s):
/// this runs for every CPU slot of every row taken, each interval.
fn is_zero<V: Pod>(v: &V) -> bool {
    let p = (v as *const V).cast::<u8>();
    if size_of::<V>().is_multiple_of(8) && (p as usize).is_multiple_of(8) {
        // SAFETY: a Pod value is plain bytes, here a whole number of aligned u64s.
        let words = unsafe { std::slice::from_raw_parts(p.cast::<u64>(), size_of::<V>() / 8) };
        return words.iter().all(|w| *w == 0);
    }
    // SAFETY: a Pod value is plain bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p, size_of::<V>()) };
    bytes.iter().all(|b| *b == 0)
}

/// A read-only mapping of `n` elements from element `start` of an array map, unmapped on drop.
struct Window {
    base: *mut libc::c_void,
    len: usize,
    /// Bytes from `base` to the first element of row `start`.
    skip: usize,
    elem: usize,
}

impl Window {
    fn new(fd: BorrowedFd<'_>, start: u32, n: u32, elem: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let from = start as usize * elem;
        let off = from / page * page;
        let end = (start + n) as usize * elem;
        let len = (end - off).div_ceil(page) * page;
        // SAFETY: a fresh shared read-only mapping of the map's memory; the kernel checks the
        // range against the array's size.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Window {
            base,
            len,
            skip: from - off,
            elem,
        })
    }

    /// Element `i` of the window (counted from row `start`), read as it is now.
    fn get<T: Pod>(&self, i: usize) -> T {
        let at = self.skip + i * self.elem;
        debug_assert!(at + size_of::<T>() <= self.len);
        let mut v = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: inside the mapping (the window covers its rows); T is Pod, so any bytes are
        // a value. The kernel may write meanwhile: a plain copy of whatever is there (a
        // volatile read of a byte array is a load per byte).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.cast::<u8>().add(at),
                v.as_mut_ptr().cast::<u8>(),
                size_of::<T>(),
            );
            v.assume_init()
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base, self.len) };
    }
}
