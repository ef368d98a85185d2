//! The terminal guard (bpftop's pattern): raw mode and the alternate screen while the view runs,
//! always given back: on drop (quit, error, unwinding), from the panic hook, and on SIGTERM/SIGHUP
//! because the driver turns those into a normal return that drops the guard.

use std::io;

use crossterm::{cursor, execute, terminal};

use crate::error::{Error, Result};

pub struct Guard;

impl Guard {
    pub fn enter() -> Result<Guard> {
        terminal::enable_raw_mode().map_err(|e| {
            Error::env(format!(
                "cannot put the terminal in raw mode ({e}): use --headless"
            ))
        })?;
        // From here on, dropping the guard restores the terminal even if the next step fails.
        let guard = Guard;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
            .map_err(|e| Error::env(format!("cannot open the live view ({e}): use --headless")))?;
        install_panic_hook();
        Ok(guard)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leave the alternate screen, show the cursor, leave raw mode. Harmless when called twice.
pub fn restore() {
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
    let _ = terminal::disable_raw_mode();
}

/// Restore the terminal before the panic message is printed, so it is readable.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            prev(info);
        }));
    });
}
