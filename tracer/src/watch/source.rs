//! The kernel as the session's source: the running tracer (its programs stay attached while
//! this lives) and the sampler over its maps.

use crate::{
    kernel::{self, Tracer, sampler::Sampler},
    model::{addr::Prefix, cohort::Cohort, reconcile::Correction, snapshot::Snapshot},
    session::Source,
};

pub struct KernelSource {
    pub tracer: Tracer,
    sampler: Sampler,
    ports: Vec<u16>,
}

impl KernelSource {
    pub fn new(tracer: Tracer, sampler: Sampler, ports: Vec<u16>) -> Self {
        KernelSource {
            tracer,
            sampler,
            ports,
        }
    }
}

impl Source for KernelSource {
    fn sample(&mut self) -> Result<Snapshot, String> {
        self.sampler.sample()
    }

    fn reconcile(&mut self, cur: &mut Snapshot) -> Result<Correction, String> {
        let real = kernel::census_now(&self.ports, &self.tracer.filters)?;
        self.sampler.reconcile(cur, &real)
    }

    fn offsets(&self) -> ([i64; 3], [i64; 3]) {
        self.sampler.cohort_offsets()
    }

    fn recycle(&mut self, old: Snapshot) {
        self.sampler.recycle(old);
    }

    fn add_to_new(&mut self, prefixes: &[Prefix]) -> Result<(), String> {
        kernel::insert_prefixes(
            &mut self.tracer.ebpf,
            prefixes.iter().map(|p| (*p, Cohort::New)),
        )?;
        let mut sets = self.sampler.sets().clone();
        sets.new.extend(prefixes.iter().copied());
        self.sampler.set_sets(sets);
        Ok(())
    }
}
