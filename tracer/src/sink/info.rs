//! What is fixed for the whole run: the meta line, the live view's header.

use std::time::{Duration, SystemTime};

use crate::{
    kernel::Hooks,
    model::{
        analysis::{Params, cutover::CutoverAt, stragglers::CensusOwner},
        spec::Spec,
    },
};

#[derive(Clone, Debug)]
pub struct RunInfo {
    pub started_at: SystemTime,
    pub host: String,
    pub kernel: String,
    pub hooks: Hooks,
    /// The sets as given at start; a DNS change may add to the new side later
    /// (`EventKind::DnsChange::added_to_new`).
    pub old: Vec<Spec>,
    pub new: Vec<Spec>,
    pub ports: Vec<u16>,
    /// `--netns`, `--cgroup`.
    pub filters: crate::kernel::filter::Filters,
    pub interval_ms: u64,
    pub max_destinations: u32,
    pub census_outbound: u64,
    pub census_inbound: u64,
    /// Rows of destinations and processes per snapshot (the analysis sees the same rows).
    pub top: usize,
    pub analysis: Params,
    /// Owners of the old-side connections found at start.
    pub census_owners: Vec<CensusOwner>,
    pub cutover_at: Option<CutoverAt>,
    pub watch_dns: Vec<String>,
    /// `--reconcile-every`: correct `open` from the socket table this often, not only on losses.
    pub reconcile_every: Option<Duration>,
    /// The metrics endpoint in use (`--metrics`, with the port chosen for `:0`).
    pub metrics_addr: Option<std::net::SocketAddr>,
}
