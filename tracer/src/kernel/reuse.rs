//! Rows read from the per-destination, per-process and per-local-address maps, kept with the
//! cohort totals read just before them. The kernel changes those maps only right before it
//! bumps the cohort totals (see `count_out` in tracer-ebpf), so while the totals stand still
//! the maps do too and the rows are reused: an idle snapshot reads no big map, whatever
//! `--max-destinations` is. And the row buffers of a snapshot no one reads any more, refilled
//! by the next read.

use crate::model::snapshot::{DestRow, LocalRow, ProcRow, Snapshot};

/// Rows `R` and the totals `K` they were read under. A copy of the rows is kept only once the
/// totals stood still for one interval: while they move every interval a kept copy is never
/// used, and with 60k destinations each copy is ~12 MiB and a clone per interval.
pub struct Reuse<K, R> {
    kept: Option<(K, Option<R>)>,
}

impl<K, R> Default for Reuse<K, R> {
    fn default() -> Self {
        Reuse { kept: None }
    }
}

impl<K: PartialEq, R: Clone> Reuse<K, R> {
    /// The rows under totals `key`: the kept ones if `key` equals the totals they were read
    /// under, else fresh ones from `read`. True in the second field when `read` ran.
    pub fn get(
        &mut self,
        key: K,
        read: impl FnOnce() -> Result<R, String>,
    ) -> Result<(R, bool), String> {
        let still = match &self.kept {
            Some((k, Some(rows))) if *k == key => return Ok((rows.clone(), false)),
            Some((k, None)) => *k == key,
            _ => false,
        };
        // The old rows go before the new ones are read: one copy fewer at the peak.
        self.kept = None;
        let rows = read()?;
        self.kept = Some((key, still.then(|| rows.clone())));
        Ok((rows, true))
    }

    /// True while a copy of the rows is kept (the totals stood still): the next rows come
    /// from that copy, not from a read into a recycled buffer.
    pub fn holds_copy(&self) -> bool {
        matches!(self.kept, Some((_, Some(_))))
    }

    /// Forget the kept rows (the classification changed, or a full read is due).
    pub fn clear(&mut self) {
        self.kept = None;
    }
}

/// The row vectors of a recycled snapshot, emptied: at 60k destinations MiBs that a fresh
/// allocation would fault in page by page every interval.
#[derive(Default)]
pub struct Spare {
    pub destinations: Vec<DestRow>,
    pub processes: Vec<ProcRow>,
    pub locals: Vec<LocalRow>,
}

impl Spare {
    /// Keep the buffers of `old` for the next read, but none while a kept copy will serve the
    /// next snapshot (`out_kept`: destinations and processes, `in_kept`: local addresses): a
    /// spare buffer then only adds to the peak.
    pub fn keep(&mut self, old: Snapshot, out_kept: bool, in_kept: bool) {
        let Snapshot {
            destinations,
            processes,
            locals,
            ..
        } = old;
        if out_kept {
            self.destinations = Vec::new();
            self.processes = Vec::new();
        } else {
            keep_larger(&mut self.destinations, destinations);
            keep_larger(&mut self.processes, processes);
        }
        if in_kept {
            self.locals = Vec::new();
        } else {
            keep_larger(&mut self.locals, locals);
        }
    }
}

/// Keep `v`'s buffer, emptied, in `keep` when it is the larger.
fn keep_larger<T>(keep: &mut Vec<T>, mut v: Vec<T>) {
    v.clear();
    if v.capacity() > keep.capacity() {
        *keep = v;
    }
}

/// `v`'s buffer, emptied, with room for `n` rows.
pub fn reuse_vec<T>(v: &mut Vec<T>, n: usize) -> Vec<T> {
    let mut v = std::mem::take(v);
    v.clear();
    v.reserve(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_kept_once_the_totals_stand_still() {
        let mut r: Reuse<u64, Vec<u32>> = Reuse::default();
        let reads = std::cell::Cell::new(0);
        let read = |v: u32| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                Ok(vec![v])
            }
        };
        // Totals moving every interval: read each time, nothing kept.
        assert_eq!(r.get(5, read(1)).unwrap(), (vec![1], true));
        assert_eq!(r.get(6, read(2)).unwrap(), (vec![2], true));
        assert!(!r.holds_copy());
        // They stood still for an interval: read once more, and kept from then on.
        assert_eq!(r.get(6, read(3)).unwrap(), (vec![3], true));
        assert!(r.holds_copy());
        assert_eq!(r.get(6, read(4)).unwrap(), (vec![3], false));
        assert_eq!(r.get(6, read(5)).unwrap(), (vec![3], false));
        // They moved: read again.
        assert_eq!(r.get(7, read(6)).unwrap(), (vec![6], true));
        assert!(!r.holds_copy());
        r.clear();
        assert_eq!(r.get(7, read(7)).unwrap(), (vec![7], true));
        // A failed read keeps nothing: the next call reads.
        assert!(r.get(7, || Err("map gone".to_string())).is_err());
        assert_eq!(r.get(7, read(8)).unwrap(), (vec![8], true));
        assert_eq!(reads.get(), 6);
    }
}
