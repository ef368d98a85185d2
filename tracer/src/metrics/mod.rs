//! `--metrics ADDR:PORT`: Prometheus / OpenMetrics text over HTTP, from the same snapshots as
//! every other sink. The sink renders after each snapshot and swaps the text in; a scrape only
//! copies a pointer to it, so it never reads a map and never waits on sampling.

pub mod exposition;
pub mod labels;
pub mod server;

use exposition::{Fixed, Format, Frame, Milestones, render};
use server::{Endpoint, Latest};

use crate::{
    Fatal,
    model::snapshot::Snapshot,
    session::{Event, RunInfo, Sink},
};

/// What `--metrics*` and `--label` asked for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub labels: Vec<(String, String)>,
    pub destinations: usize,
    pub processes: usize,
}

pub struct MetricsSink {
    fixed: Fixed,
    latest: Latest,
    snapshots: u64,
    /// Cutover, gap and drain, once the model computes them (absent until then).
    milestones: Milestones,
}

/// Bind `addr` (before tracing starts: a bad address or a port in use fails the run at once).
pub fn bind(addr: &str) -> Result<Endpoint, Fatal> {
    server::bind(addr)
}

/// Start serving on a bound endpoint; the returned sink keeps what it serves current.
pub fn start(ep: Endpoint, opts: Options) -> Result<MetricsSink, Fatal> {
    labels::check(&opts.labels)?;
    let fixed = Fixed {
        version: env!("CARGO_PKG_VERSION").into(),
        labels: opts.labels,
        destinations: opts.destinations,
        processes: opts.processes,
        ..Default::default()
    };
    let sink = MetricsSink {
        fixed,
        latest: Latest::default(),
        snapshots: 0,
        milestones: Milestones::default(),
    };
    sink.publish(None);
    ep.serve(sink.latest.clone())?;
    Ok(sink)
}

impl MetricsSink {
    fn publish(&self, frame: Option<&Frame>) {
        let m = &self.milestones;
        self.latest.set(
            render(&self.fixed, frame, m, Format::Prometheus),
            render(&self.fixed, frame, m, Format::OpenMetrics),
        );
    }
}

impl Sink for MetricsSink {
    fn meta(&mut self, info: &RunInfo) -> Result<(), Fatal> {
        self.fixed.connect_hook = info.hooks.connect.name().into();
        self.fixed.state_hook = info.hooks.state.into();
        self.publish(None);
        Ok(())
    }

    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot) -> Result<(), Fatal> {
        self.snapshots += 1;
        self.publish(Some(&Frame {
            cur,
            prev,
            snapshots: self.snapshots,
        }));
        Ok(())
    }

    fn event(&mut self, _ev: &Event) -> Result<(), Fatal> {
        Ok(())
    }

    fn summary(
        &mut self,
        _last: &Snapshot,
        _first: &Snapshot,
        _reason: &str,
        _snapshots: u64,
    ) -> Result<(), Fatal> {
        // The run is ending: what was served from the last snapshot stays the last word.
        Ok(())
    }
}
