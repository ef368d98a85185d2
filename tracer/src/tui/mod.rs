//! The live terminal view. `TuiSink` is one of the session's sinks: it turns snapshots and events
//! into a `ViewState`; `run` is the driver that samples, reads keys and redraws. Keys are read on
//! their own thread and arrive through a channel, so the UI never holds up sampling.

mod cohorts;
mod fit;
#[cfg(test)]
pub mod fixtures;
mod header;
mod resolvers;
pub mod state;
mod terminal;
pub mod view;

use std::{
    cell::RefCell,
    io::{self, Stdout},
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crossterm::event;
use ratatui::{Terminal, backend::CrosstermBackend};
use tokio::sync::mpsc;

use crate::{
    error::{Error, Result},
    model::{
        analysis::{State, dns::Answer},
        ranked::Ranked,
        snapshot::Snapshot,
    },
    run::{Ends, Front, Input, Step},
    session::Session,
    sink::{EndReason, Event, Sink},
};
use state::{Action, ViewState};

/// The view's sink: the state is shared with the driver (one thread, so `Rc<RefCell>`).
pub struct TuiSink(pub Rc<RefCell<ViewState>>);

impl Sink for TuiSink {
    fn analysis(&mut self, state: &State, dns: &[Answer]) -> Result<()> {
        self.0.borrow_mut().analysis(state, dns);
        Ok(())
    }
    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot, _: &Ranked) -> Result<()> {
        self.0.borrow_mut().push(cur, prev);
        Ok(())
    }
    fn event(&mut self, ev: &Event) -> Result<()> {
        self.0.borrow_mut().event(ev);
        Ok(())
    }
    fn summary(&mut self, _: &Snapshot, _: &Snapshot, _: EndReason, _: u64) -> Result<()> {
        Ok(())
    }
}

/// Stops the key reader thread when the driver returns, whichever way.
struct StopFlag(Arc<AtomicBool>);

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Read terminal events on a thread of its own; polls so it notices `stop`.
fn spawn_reader(tx: mpsc::UnboundedSender<io::Result<event::Event>>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match event::poll(Duration::from_millis(100)) {
                Ok(false) => {}
                Ok(true) => {
                    let ev = event::read();
                    let failed = ev.is_err();
                    if tx.send(ev).is_err() || failed {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
}

/// The live view as the driver's front end: keys in, frames out.
struct Live {
    term: Terminal<CrosstermBackend<Stdout>>,
    st: Rc<RefCell<ViewState>>,
    keys: mpsc::UnboundedReceiver<io::Result<event::Event>>,
}

impl Front for Live {
    async fn input(&mut self) -> Result<Input> {
        let ev = self.keys.recv().await;
        Ok(match ev {
            Some(Ok(event::Event::Key(k))) => {
                let action = self.st.borrow_mut().key(k);
                match action {
                    Action::Quit => Input::Quit,
                    Action::Cutover => Input::Cutover,
                    Action::Redraw => {
                        self.redraw()?;
                        Input::Nothing
                    }
                    Action::None => Input::Nothing,
                }
            }
            Some(Ok(event::Event::Resize(..))) => {
                self.redraw()?;
                Input::Nothing
            }
            Some(Ok(_)) => Input::Nothing,
            Some(Err(e)) => {
                return Err(Error::runtime(format!(
                    "cannot read the terminal ({e}); --headless runs without it"
                )));
            }
            None => return Err(Error::runtime("the terminal reader stopped")),
        })
    }

    fn redraw(&mut self) -> Result<()> {
        let st = &self.st;
        self.term
            .draw(|f| view::render(f, &st.borrow()))
            .map(|_| ())
            .map_err(|e| Error::runtime(format!("cannot draw the live view ({e})")))
    }
}

/// Run the view until a quit key, a signal or the end of `--duration`; returns the reason.
/// Redraws only after a sample or a key, so at most at the sampling rate plus key presses.
pub async fn run(
    session: &mut Session,
    st: Rc<RefCell<ViewState>>,
    interval: Duration,
    ends: Ends,
    step: &mut Step<'_>,
) -> Result<EndReason> {
    let _guard = terminal::Guard::enter()?;
    let term = Terminal::new(CrosstermBackend::new(io::stdout()))
        .map_err(|e| Error::env(format!("cannot open the live view ({e}): use --headless")))?;
    let (tx, keys) = mpsc::unbounded_channel();
    let stop = StopFlag(Arc::new(AtomicBool::new(false)));
    spawn_reader(tx, stop.0.clone());
    let mut live = Live { term, st, keys };
    crate::run::drive(session, interval, ends, step, &mut live).await
}
