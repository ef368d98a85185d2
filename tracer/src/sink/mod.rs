//! What a run tells its consumers. The session produces typed facts (the run info, snapshots,
//! the analysis after each sample, events, the summary); each sink (NDJSON writer, live view,
//! metrics) renders them its own way. Only the NDJSON writer turns events into JSON.

pub mod event;
mod info;

pub use event::{Event, EventKind};
pub use info::RunInfo;

use crate::{
    error::Result,
    model::{analysis::State, analysis::dns::Answer, ranked::Ranked, snapshot::Snapshot},
};

/// Why a run ended (the summary's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Duration,
    Sigint,
    Sigterm,
    Sighup,
    Quit,
    Drained,
}

impl EndReason {
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Duration => "duration",
            EndReason::Sigint => "sigint",
            EndReason::Sigterm => "sigterm",
            EndReason::Sighup => "sighup",
            EndReason::Quit => "quit",
            EndReason::Drained => "drained",
        }
    }
}

/// A consumer of the run's data.
pub trait Sink {
    fn meta(&mut self, _info: &RunInfo) -> Result<()> {
        Ok(())
    }
    /// The failover analysis and the watched DNS names: after each sample, just before that
    /// sample's `snapshot`, and after every event that changes them (a cutover mark), so a view
    /// never shows a verdict older than the log line below it.
    fn analysis(&mut self, _state: &State, _dns: &[Answer]) -> Result<()> {
        Ok(())
    }
    /// A new snapshot, the one before it, and its rankings (made once for every sink).
    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot, ranked: &Ranked) -> Result<()>;
    fn event(&mut self, ev: &Event) -> Result<()>;
    fn summary(
        &mut self,
        last: &Snapshot,
        first: &Snapshot,
        reason: EndReason,
        snapshots: u64,
    ) -> Result<()>;
}
