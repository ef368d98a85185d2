//! The run driver, one for the headless and the live loop: sample every interval, poll the DNS
//! watch, end on a signal, `--duration`, drain or the user's quit. A front end (the live view)
//! plugs in its input and redraw; headless has none.

use std::time::Duration;

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval},
};

use crate::{
    dns::Watcher,
    error::{Error, Result},
    model::analysis::cutover::CutoverSource,
    session::Session,
    sink::EndReason,
};

/// What ends a run: SIGINT, SIGTERM, SIGHUP or the end of --duration.
pub struct Ends {
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    deadline: Instant,
    /// Snapshots `--duration` asks for (duration / interval), so the last one is never lost
    /// to a deadline that fires in the same instant as the last tick.
    pub expected: Option<u64>,
}

impl Ends {
    /// Install the handlers; must run inside the runtime.
    pub fn new(duration: Option<Duration>, interval: Duration) -> Result<Ends> {
        let sig = |k| {
            signal(k).map_err(|e| Error::runtime(format!("cannot install signal handler: {e}")))
        };
        Ok(Ends {
            sigint: sig(SignalKind::interrupt())?,
            sigterm: sig(SignalKind::terminate())?,
            sighup: sig(SignalKind::hangup())?,
            deadline: Instant::now() + duration.unwrap_or(Duration::from_secs(100 * 365 * 86400)),
            expected: duration.map(|d| (d.as_millis() / interval.as_millis().max(1)) as u64),
        })
    }

    /// The reason the run ends; cancel-safe, for `select!`.
    pub async fn next(&mut self) -> EndReason {
        tokio::select! {
            _ = self.sigint.recv() => EndReason::Sigint,
            _ = self.sigterm.recv() => EndReason::Sigterm,
            _ = self.sighup.recv() => EndReason::Sighup,
            _ = tokio::time::sleep_until(self.deadline) => EndReason::Duration,
        }
    }
}

/// Ticks every interval from one interval after now; a late tick is skipped, never bunched.
pub fn ticker(interval: Duration) -> Interval {
    let mut t = tokio::time::interval_at(Instant::now() + interval, interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}

/// What the user asked for through a front end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing the driver acts on (the front end redraws by itself if needed).
    Nothing,
    Quit,
    Cutover,
}

/// A front end: the live view. Headless runs have `NoFront`.
#[allow(async_fn_in_trait)]
pub trait Front {
    /// The next input; must be cancel-safe (it runs in `select!` against the ticker).
    async fn input(&mut self) -> Result<Input>;
    /// Show what the sinks were given.
    fn redraw(&mut self) -> Result<()>;
}

/// Headless: no input, nothing to draw.
pub struct NoFront;

impl Front for NoFront {
    async fn input(&mut self) -> Result<Input> {
        std::future::pending().await
    }
    fn redraw(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a tick does besides sampling: the DNS watch and the drain exit.
pub struct Step<'a> {
    pub watcher: Option<&'a mut Watcher>,
    /// End the run once the old side is drained (headless `--exit-on-drain`).
    pub exit_on_drain: bool,
}

impl Step<'_> {
    /// Sample once; `Some(reason)` when the run should end now.
    async fn run(&mut self, session: &mut Session) -> Result<Option<EndReason>> {
        session.tick()?;
        if let Some(w) = self.watcher.as_deref_mut() {
            w.poll(session).await?;
        }
        Ok((self.exit_on_drain && session.analysis.drained()).then_some(EndReason::Drained))
    }
}

/// Sample every interval until something ends the run; returns why.
pub async fn drive<F: Front>(
    session: &mut Session,
    interval: Duration,
    mut ends: Ends,
    step: &mut Step<'_>,
    front: &mut F,
) -> Result<EndReason> {
    let mut ticker = ticker(interval);
    front.redraw()?;
    loop {
        tokio::select! {
            biased;
            reason = ends.next() => {
                // The deadline and the last tick can fall in the same instant: take that
                // last sample rather than lose an interval.
                if reason == EndReason::Duration
                    && ends.expected.is_some_and(|n| session.snapshots < n)
                {
                    session.tick()?;
                }
                return Ok(reason);
            }
            _ = ticker.tick() => {
                if let Some(reason) = step.run(session).await? {
                    return Ok(reason);
                }
                front.redraw()?;
            }
            input = front.input() => match input? {
                Input::Quit => return Ok(EndReason::Quit),
                Input::Cutover => {
                    session.mark_cutover(CutoverSource::Key, std::time::SystemTime::now(), None)?;
                    front.redraw()?;
                }
                Input::Nothing => {}
            },
        }
    }
}
