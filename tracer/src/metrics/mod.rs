//! `--metrics ADDR:PORT`: Prometheus / OpenMetrics text over HTTP(S), from the same snapshots as
//! every other sink. The sink renders after each snapshot and swaps the text in; a scrape only
//! copies a pointer to it, so it never reads a map and never waits on sampling.

mod auth;
pub mod exposition;
pub mod labels;
pub mod server;
pub mod webconfig;

use exposition::{Fixed, Format, Frame, Milestones, render};
use server::{Endpoint, Latest};

use std::time::{Duration, SystemTime};

use crate::{
    error::{Context, Result},
    model::{
        analysis::{State, dns::Answer},
        ranked::Ranked,
        snapshot::Snapshot,
    },
    sink::{EndReason, Event, RunInfo, Sink},
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
    /// Cutover, gap and drain from the analysis (absent until known).
    milestones: Milestones,
    started_at: SystemTime,
}

/// The milestones an analysis state tells, dated from the run's start.
pub fn milestones(st: &State, started_at: SystemTime) -> Milestones {
    Milestones {
        cutover: st
            .cutover
            .as_ref()
            .map(|c| started_at + Duration::from_millis(c.at_ms)),
        gaps: st
            .gaps
            .iter()
            .filter_map(|g| Some((g.metric.name(), g.level, g.gap_ms? as f64 / 1000.0)))
            .collect(),
        drained: Some(st.drain.drained_since.is_some()),
        stragglers: st.cutover.as_ref().map(|_| {
            crate::model::analysis::causes::Cause::ALL
                .iter()
                .zip(st.per_cause)
                .map(|(c, n)| (c.as_str(), n as u64))
                .collect()
        }),
    }
}

/// Read `--web-config` and bind `addr` (before tracing starts: a bad config file, a bad address
/// or a port in use fails the run at once).
pub fn bind(addr: &str, web_config: Option<&std::path::Path>) -> Result<Endpoint> {
    server::bind(addr, web_config).usage()
}

/// Start serving on a bound endpoint; the returned sink keeps what it serves current.
pub fn start(ep: Endpoint, opts: Options) -> Result<MetricsSink> {
    labels::check(&opts.labels).usage()?;
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
        started_at: SystemTime::UNIX_EPOCH,
    };
    sink.publish(None);
    ep.serve(sink.latest.clone()).env()?;
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
    fn meta(&mut self, info: &RunInfo) -> Result<()> {
        self.fixed.connect_hook = info.hooks.connect.name().into();
        self.fixed.state_hook = info.hooks.state.into();
        self.fixed.unsent_hook = match info.hooks.unsent {
            Ok(()) => "cgroup+syscall",
            Err(_) => "none",
        }
        .into();
        self.started_at = info.started_at;
        self.publish(None);
        Ok(())
    }

    /// Comes just before the snapshot that publishes it.
    fn analysis(&mut self, state: &State, _dns: &[Answer]) -> Result<()> {
        self.milestones = milestones(state, self.started_at);
        Ok(())
    }

    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot, _: &Ranked) -> Result<()> {
        self.snapshots += 1;
        self.publish(Some(&Frame {
            cur,
            prev,
            snapshots: self.snapshots,
        }));
        Ok(())
    }

    fn event(&mut self, _ev: &Event) -> Result<()> {
        Ok(())
    }

    fn summary(
        &mut self,
        _last: &Snapshot,
        _first: &Snapshot,
        _reason: EndReason,
        _snapshots: u64,
    ) -> Result<()> {
        // The run is ending: what was served from the last snapshot stays the last word.
        Ok(())
    }
}
