//! A snapshot: everything one sampling pass read, as plain data with no aya types. One sampler
//! makes them; every sink (NDJSON, live view) reads them.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use super::{
    cohort::Cohort,
    counters::{In, Out},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestRow {
    pub addr: IpAddr,
    pub cohort: Cohort,
    pub out: Out,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRow {
    pub addr: IpAddr,
    pub cohort: Cohort,
    pub inb: In,
}

/// Outbound counts of one process towards one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRow {
    pub pid: u32,
    pub comm: String,
    pub cgroup: u64,
    pub addr: IpAddr,
    pub cohort: Cohort,
    pub out: Out,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub destinations: u64,
    pub locals: u64,
    pub processes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub at: SystemTime,
    pub elapsed: Duration,
    /// Indexed by `Cohort as usize`: other, old, new.
    pub out: [Out; 3],
    pub inb: [In; 3],
    pub destinations: Vec<DestRow>,
    pub locals: Vec<LocalRow>,
    pub processes: Vec<ProcRow>,
    pub evicted: Evicted,
    /// BPF program runs the kernel skipped (recursion on the same CPU), all programs.
    pub lost_events: u64,
    /// Container or service unit of the processes' pids, where their cgroup path names one.
    pub units: std::collections::BTreeMap<u32, String>,
}

impl Snapshot {
    pub fn empty(at: SystemTime) -> Self {
        Snapshot {
            at,
            elapsed: Duration::ZERO,
            out: [Out::default(); 3],
            inb: [In::default(); 3],
            destinations: vec![],
            locals: vec![],
            processes: vec![],
            evicted: Evicted::default(),
            lost_events: 0,
            units: Default::default(),
        }
    }

    pub fn cohort_out(&self, c: Cohort) -> &Out {
        &self.out[c as usize]
    }

    pub fn cohort_in(&self, c: Cohort) -> &In {
        &self.inb[c as usize]
    }
}
