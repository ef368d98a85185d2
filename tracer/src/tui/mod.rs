//! The live terminal view. `TuiSink` is one of the session's sinks: it turns snapshots and events
//! into a `ViewState`; `run` is the driver that samples, reads keys and redraws. Keys are read on
//! their own thread and arrive through a channel, so the UI never holds up sampling.

mod cohorts;
#[cfg(test)]
mod fixtures;
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
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    Fatal,
    model::{
        analysis::{State, dns::Answer},
        snapshot::Snapshot,
    },
    session::{Event, Session, Sink},
    watch::Ends,
};
use state::{Action, ViewState};

/// The view's sink: the state is shared with the driver (one thread, so `Rc<RefCell>`).
pub struct TuiSink(pub Rc<RefCell<ViewState>>);

impl Sink for TuiSink {
    fn analysis(&mut self, state: &State, dns: &[Answer]) -> Result<(), Fatal> {
        self.0.borrow_mut().analysis(state, dns);
        Ok(())
    }
    fn snapshot(&mut self, cur: &Snapshot, prev: &Snapshot) -> Result<(), Fatal> {
        self.0.borrow_mut().push(cur, prev);
        Ok(())
    }
    fn event(&mut self, ev: &Event) -> Result<(), Fatal> {
        self.0.borrow_mut().event(ev);
        Ok(())
    }
    fn summary(&mut self, _: &Snapshot, _: &Snapshot, _: &str, _: u64) -> Result<(), Fatal> {
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

fn draw(
    term: &mut Terminal<CrosstermBackend<Stdout>>,
    st: &Rc<RefCell<ViewState>>,
) -> Result<(), Fatal> {
    term.draw(|f| view::render(f, &st.borrow()))
        .map(|_| ())
        .map_err(|e| format!("cannot draw the live view ({e}): use --headless"))
}

/// Run the view until a quit key, a signal or the end of `--duration`; returns the reason.
/// Redraws only after a sample or a key, so at most at the sampling rate plus key presses.
pub async fn run(
    session: &mut Session,
    st: Rc<RefCell<ViewState>>,
    interval: Duration,
    mut ends: Ends,
    step: &mut crate::watch::Step<'_>,
) -> Result<&'static str, Fatal> {
    let _guard = terminal::Guard::enter()?;
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))
        .map_err(|e| format!("cannot open the live view ({e}): use --headless"))?;
    let (tx, mut keys) = mpsc::unbounded_channel();
    let stop = StopFlag(Arc::new(AtomicBool::new(false)));
    spawn_reader(tx, stop.0.clone());
    let mut ticker = crate::watch::ticker(interval);
    draw(&mut term, &st)?;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(reason) = step.run(session).await? {
                    return Ok(reason);
                }
                draw(&mut term, &st)?;
            }
            ev = keys.recv() => match ev {
                Some(Ok(event::Event::Key(k))) => {
                    let action = st.borrow_mut().key(k);
                    match action {
                        Action::Quit => return Ok("quit"),
                        Action::Cutover => {
                            session.event("cutover", json!({"source": "key"}))?;
                            draw(&mut term, &st)?;
                        }
                        Action::Redraw => draw(&mut term, &st)?,
                        Action::None => {}
                    }
                }
                Some(Ok(event::Event::Resize(..))) => draw(&mut term, &st)?,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("cannot read the terminal ({e}): use --headless")),
                None => return Err("the terminal reader stopped: use --headless".into()),
            },
            reason = ends.next() => return Ok(reason),
        }
    }
}
