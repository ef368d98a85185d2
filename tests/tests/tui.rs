//! The live view end to end: the real binary in a detached tmux session of fixed size, real
//! loopback connections held open to old and new, keys sent with `send-keys`, the screen read
//! with `capture-pane`.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use tracer_tests::*;

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        sh(Command::new(tool("tmux"))
            .args(["-L", &self.socket])
            .args(args))
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "tui"])
    }

    /// Capture until `ok` holds for the screen (bounded); the last screen either way.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the screen never showed {what}:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(tool("tmux"))
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The cohort row of the screen starting with `name`: its open count.
fn open_of(screen: &str, name: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let mut t = l.split_whitespace();
        (t.next() == Some(name)).then(|| t.next()?.parse().ok())?
    })
}

fn share_line(screen: &str) -> Option<&str> {
    let mut lines = screen.lines();
    lines.find(|l| l.contains("by open connections"))?;
    lines.next()
}

#[test]
fn live_view_shows_open_counts_and_share_and_marks_cutover() {
    require_root();
    let old = Server::start("127.10.4.4");
    let new = Server::start("127.20.4.4");
    let json = tmp_path("tui.ndjson");
    let exit = tmp_path("tui.exit");
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&exit);
    let tmux = Tmux {
        socket: format!("tracer-tui-{}", std::process::id()),
    };
    tmux.cmd(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "100",
        "-y",
        "32",
        "env",
        "PS1=tui-test$ ",
        "/bin/sh",
    ]);
    let (po, pn) = (old.addr.port().to_string(), new.addr.port().to_string());
    // Our own ports only, so other traffic on this host cannot change the counts.
    let cmd = format!(
        "{} watch --old 127.10.4.4 --new 127.20.4.4 --port {po} --port {pn} --interval 200ms --json {}; echo EXIT=$? > {}",
        tracer_bin().display(),
        json.display(),
        exit.display()
    );
    tmux.cmd(&["send-keys", "-t", "tui", &cmd, "Enter"]);
    tmux.wait_for("the live view", |s| s.contains("share on new"));
    assert_eq!(
        tmux.cmd(&["display", "-p", "-t", "tui", "#{alternate_on}"])
            .trim(),
        "1"
    );

    let (n_old, n_new) = (3u64, 5u64);
    let _held_old = open_connections(old.addr, n_old as usize);
    let _held_new = open_connections(new.addr, n_new as usize);
    old.wait_accepted(n_old as usize);
    new.wait_accepted(n_new as usize);
    let pct = format!("{}%", n_new * 100 / (n_old + n_new));
    let counts = format!("{n_new}/{}", n_old + n_new);
    let screen = tmux.wait_for("the open counts and the share", |s| {
        open_of(s, "old") == Some(n_old)
            && open_of(s, "new") == Some(n_new)
            && share_line(s).is_some_and(|l| l.contains(&pct) && l.contains(&counts))
    });
    assert!(screen.contains("stragglers on old"), "{screen}");

    tmux.cmd(&["send-keys", "-t", "tui", "c"]);
    tmux.wait_for("the cutover in the log", |s| {
        s.lines()
            .any(|l| l.contains("cutover") && l.contains("marked"))
    });

    tmux.cmd(&["send-keys", "-t", "tui", "q"]);
    let t0 = Instant::now();
    while !Path::new(&exit).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "tracer did not quit on q"
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&exit).unwrap().trim(), "EXIT=0");
    // The terminal is usable again: no alternate screen, the shell prompt is back.
    assert_eq!(
        tmux.cmd(&["display", "-p", "-t", "tui", "#{alternate_on}"])
            .trim(),
        "0"
    );
    tmux.wait_for("the shell prompt", |s| {
        s.lines()
            .filter(|l| l.trim().starts_with("tui-test$"))
            .count()
            >= 2
    });
    tmux.cmd(&[
        "send-keys",
        "-t",
        "tui",
        "echo typed-after-$((6*7))",
        "Enter",
    ]);
    tmux.wait_for("a command run after the view", |s| {
        s.contains("typed-after-42")
    });

    // The NDJSON written alongside agrees: the cutover event from the key and the same counts.
    // The exit status was checked above through the shell (EXIT=0).
    let status = std::os::unix::process::ExitStatusExt::from_raw(0);
    let out = read_output(&json, &tmp_path("tui.none"), status);
    let cut = out.events("cutover");
    assert_eq!(cut.len(), 1, "{}", out.raw);
    assert_eq!(cut[0]["source"], "key");
    assert_eq!(out.summary()["reason"], "quit");
    assert_eq!(out.cohort("old").4, n_old);
    assert_eq!(out.cohort("new").4, n_new);
}
