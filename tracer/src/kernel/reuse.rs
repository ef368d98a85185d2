//! Rows read from the per-destination, per-process and per-local-address maps, kept with the
//! cohort totals read just before them. The kernel changes those maps only right before it
//! bumps the cohort totals (see `count_out` in tracer-ebpf), so while the totals stand still
//! the maps do too and the rows are reused: an idle snapshot reads no big map, whatever
//! `--max-destinations` is.

/// Rows `R` and the totals `K` they were read under.
pub struct Reuse<K, R> {
    kept: Option<(K, R)>,
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
        if let Some((k, rows)) = &self.kept
            && *k == key
        {
            return Ok((rows.clone(), false));
        }
        let rows = read()?;
        self.kept = Some((key, rows.clone()));
        Ok((rows, true))
    }

    /// Forget the kept rows (the classification changed, or a full read is due).
    pub fn clear(&mut self) {
        self.kept = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_again_only_when_the_totals_move() {
        let mut r: Reuse<u64, Vec<u32>> = Reuse::default();
        let reads = std::cell::Cell::new(0);
        let read = |v: u32| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                Ok(vec![v])
            }
        };
        assert_eq!(r.get(5, read(1)).unwrap(), (vec![1], true));
        assert_eq!(r.get(5, read(2)).unwrap(), (vec![1], false));
        assert_eq!(r.get(6, read(3)).unwrap(), (vec![3], true));
        r.clear();
        assert_eq!(r.get(6, read(4)).unwrap(), (vec![4], true));
        assert!(r.get(7, || Err("map gone".to_string())).is_err());
        // A failed read leaves the kept rows as they were.
        assert_eq!(r.get(6, read(5)).unwrap(), (vec![4], false));
        assert_eq!(reads.get(), 3);
    }
}
