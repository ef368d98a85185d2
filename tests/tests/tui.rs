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
    /// A detached session of fixed size running a plain shell with a known prompt.
    fn start(tag: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("tracer-tui-{tag}-{}", std::process::id()),
        };
        let size = ["-x", "100", "-y", "32"];
        let shell = ["env", "PS1=tui-test$ ", "/bin/sh"];
        let mut args = vec!["-f", "/dev/null", "new-session", "-d", "-s", "tui"];
        args.extend(size);
        args.extend(shell);
        tmux.cmd(&args);
        tmux
    }

    fn alternate_screen(&self) -> bool {
        self.cmd(&["display", "-p", "-t", "tui", "#{alternate_on}"])
            .trim()
            == "1"
    }

    fn cmd(&self, args: &[&str]) -> String {
        sh(Command::new(tool("tmux"))
            .args(["-L", &self.socket])
            .args(args))
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "tui"])
    }

    /// Type `tracer ARGS` at the prompt; its exit code goes to `exit` (see `wait_exit`).
    fn run_tracer(&self, args: &str, exit: &Path) {
        let _ = std::fs::remove_file(exit);
        let cmd = format!(
            "{} {args}; echo EXIT=$? > {}",
            tracer_bin().display(),
            exit.display()
        );
        self.cmd(&["send-keys", "-t", "tui", &cmd, "Enter"]);
    }

    /// Wait for the live view, on the alternate screen.
    fn wait_live_view(&self) {
        self.wait_for("the live view", |s| s.contains("share on new"));
        assert!(self.alternate_screen());
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
    let tmux = Tmux::start("live");
    let (po, pn) = (old.addr.port().to_string(), new.addr.port().to_string());
    // Our own ports only, so other traffic on this host cannot change the counts.
    let args = format!(
        "watch --old 127.10.4.4 --new 127.20.4.4 --port {po} --port {pn} --interval 200ms --json {}",
        json.display()
    );
    tmux.run_tracer(&args, &exit);
    tmux.wait_live_view();

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

    // Resizing to the smallest supported size redraws the whole view there.
    tmux.cmd(&["resize-window", "-t", "tui", "-x", "80", "-y", "24"]);
    tmux.wait_for("the view redrawn at 80x24", |s| {
        s.lines().count() <= 24
            && s.lines().all(|l| l.chars().count() <= 80)
            && open_of(s, "old") == Some(n_old)
            && open_of(s, "new") == Some(n_new)
            && s.lines().last().is_some_and(|l| l.contains("? help"))
    });

    tmux.cmd(&["send-keys", "-t", "tui", "c"]);
    tmux.wait_for("the cutover in the log", |s| {
        s.lines()
            .any(|l| l.contains("cutover") && l.contains("marked"))
    });

    tmux.cmd(&["send-keys", "-t", "tui", "q"]);
    assert_eq!(wait_exit(&exit), "EXIT=0");
    // The terminal is usable again: no alternate screen, the shell prompt is back.
    assert!(!tmux.alternate_screen());
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

/// A process holding an old connection from before the start (found by the census) is a
/// straggler in the live pane, `pinned` once the cutover is known, and the final analysis says
/// the old side will not drain by itself and names it.
#[test]
fn a_census_owner_is_a_pinned_straggler_in_the_live_pane() {
    require_root();
    let old = Server::start("127.10.4.6");
    let port = old.addr.port();
    // bash holds the connection itself (`read` is a builtin: no child inherits the socket).
    let mut holder = Command::new(tool("bash"))
        .args([
            "-c",
            &format!("exec 3<>/dev/tcp/127.10.4.6/{port}; read -t 60 <&3"),
        ])
        .spawn()
        .expect("bash");
    old.wait_accepted(1);
    let json = tmp_path("tui-census.ndjson");
    let exit = tmp_path("tui-census.exit");
    let _ = std::fs::remove_file(&json);
    let tmux = Tmux::start("census");
    let args = format!(
        "watch --old 127.10.4.6 --new 127.20.4.6 --port {port} --interval 200ms --cutover-at now --json {}",
        json.display()
    );
    tmux.run_tracer(&args, &exit);
    tmux.wait_live_view();
    let pid = holder.id().to_string();
    let row = |s: &str| {
        s.lines()
            .find(|l| l.split_whitespace().any(|w| w == pid) && l.contains("bash"))
            .map(String::from)
    };
    // `pin` in a narrow pane, `pinned` in a wide one.
    let screen = tmux.wait_for("the census owner, pinned, in the stragglers pane", |s| {
        row(s).is_some_and(|l| l.split_whitespace().any(|w| w == "pin" || w == "pinned"))
    });
    assert!(screen.contains("stragglers on old (1)"), "{screen}");
    // No old attempts for 5 s with only pinned connections open: the verdict changes.
    thread::sleep(Duration::from_secs(6));
    tmux.cmd(&["send-keys", "-t", "tui", "q"]);
    assert_eq!(wait_exit(&exit), "EXIT=0");
    let _ = holder.kill();
    let _ = holder.wait();
    let status = std::os::unix::process::ExitStatusExt::from_raw(0);
    let out = read_output(&json, &tmp_path("tui-census.none"), status);
    let a = &out.events("analysis")[0];
    let s = &a["stragglers"][0];
    assert_eq!(s["pid"], holder.id(), "{a}");
    assert_eq!(s["causes"], serde_json::json!(["pinned"]), "{a}");
    assert_eq!(
        (s["census_open"].as_u64(), s["old_open"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(a["drain"]["will_not_drain"], true, "{a}");
    assert_eq!(a["drain"]["pinned_by"][0]["pid"], holder.id(), "{a}");
    // The per-process rows count it too (the README's jq recipe for holders).
    let last = (*out.snapshots().last().expect("a snapshot")).clone();
    let p = last["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == holder.id())
        .cloned()
        .unwrap_or_else(|| panic!("the holder is in the process rows: {last}"));
    assert_eq!(p["cohorts"]["old"]["open"], 1);
    assert_eq!(p["old_held"]["before_start"], 1);
}

/// The line the shell wrote after tracer ended (bounded wait).
fn wait_exit(exit: &Path) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(exit).unwrap_or_default();
        if text.ends_with('\n') {
            return text.trim().to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "tracer did not end");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the shell's child (tracer) in the pane.
fn tracer_pid(tmux: &Tmux) -> i32 {
    let shell = tmux.cmd(&["display", "-p", "-t", "tui", "#{pane_pid}"]);
    let shell = shell.trim();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("children of the pane's shell");
    let pids: Vec<i32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "one child of the shell: {pids:?}");
    pids[0]
}

#[test]
fn sigterm_and_sighup_restore_the_terminal_and_write_the_summary() {
    require_root();
    for (sig, reason) in [(libc::SIGTERM, "sigterm"), (libc::SIGHUP, "sighup")] {
        let json = tmp_path(&format!("tui-{reason}.ndjson"));
        let exit = tmp_path(&format!("tui-{reason}.exit"));
        let _ = std::fs::remove_file(&json);
        let tmux = Tmux::start(reason);
        let args = format!(
            "watch --old 127.10.4.5 --new 127.20.4.5 --interval 200ms --json {}",
            json.display()
        );
        tmux.run_tracer(&args, &exit);
        tmux.wait_live_view();
        // SAFETY: kill(2) to the tracer this test started.
        assert_eq!(unsafe { libc::kill(tracer_pid(&tmux), sig) }, 0);
        assert_eq!(wait_exit(&exit), "EXIT=0", "{reason}");
        assert!(
            !tmux.alternate_screen(),
            "{reason}: alternate screen left on"
        );
        tmux.cmd(&["send-keys", "-t", "tui", "echo after-$((6*7))", "Enter"]);
        tmux.wait_for("a command run after the view", |s| s.contains("after-42"));
        let status = std::os::unix::process::ExitStatusExt::from_raw(0);
        let out = read_output(&json, &tmp_path("tui.none"), status);
        assert_eq!(out.summary()["reason"], reason);
    }
}

#[test]
fn json_to_stdout_on_a_terminal_is_refused_in_one_line() {
    require_root();
    let exit = tmp_path("tui-stdout.exit");
    let tmux = Tmux::start("stdout");
    tmux.run_tracer("watch --old 127.10.4.6 --json -", &exit);
    assert_eq!(wait_exit(&exit), "EXIT=2");
    // -J joins the error line where the 100-column pane wrapped it.
    let screen = tmux.cmd(&["capture-pane", "-p", "-J", "-t", "tui"]);
    let line = screen
        .lines()
        .find_map(|l| l.find("tracer: --json -").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no error line:\n{screen}"));
    assert!(line.contains("--headless"), "{line}");
    assert!(!tmux.alternate_screen());
}

/// `timeout 8 tracer watch` from a terminal: timeout puts tracer in a background process
/// group, where raw mode would stop it (SIGTTOU) with its programs loaded. It must refuse at
/// once, in one line that says what to do, and never hang.
#[test]
fn a_live_view_in_the_background_of_the_terminal_is_refused_at_once() {
    require_root();
    let exit = tmp_path("tui-background.exit");
    let tmux = Tmux::start("background");
    let t0 = Instant::now();
    let _ = std::fs::remove_file(&exit);
    // From a script (no job control), `timeout` puts itself and tracer in a process group of
    // their own, in the background of the terminal.
    let cmd = format!(
        "sh -c 'timeout 8 {} watch --old 127.10.4.7; echo EXIT=$? > {}'",
        tracer_bin().display(),
        exit.display()
    );
    tmux.cmd(&["send-keys", "-t", "tui", &cmd, "Enter"]);
    assert_eq!(wait_exit(&exit), "EXIT=2");
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "refused before the timeout, not stopped until it: {:?}",
        t0.elapsed()
    );
    let screen = tmux.cmd(&["capture-pane", "-p", "-J", "-t", "tui"]);
    let line = screen
        .lines()
        .find_map(|l| l.find("tracer: the live view").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no error line:\n{screen}"));
    assert!(line.contains("background"), "{line}");
    assert!(
        line.contains("--headless") && line.contains("--foreground"),
        "{line}"
    );
    assert!(!tmux.alternate_screen());
}

/// The `c` key marks the cutover once: the header shows it at once (not at the next sample),
/// a second `c` writes no second event, and the event carries its time.
#[test]
fn the_cutover_key_shows_at_once_and_counts_once() {
    require_root();
    let json = tmp_path("tui-cutover-once.ndjson");
    let exit = tmp_path("tui-cutover-once.exit");
    let _ = std::fs::remove_file(&json);
    let tmux = Tmux::start("cutover-once");
    // A long interval: a header that waited for the next sample would still say `no cutover`.
    let args = format!(
        "watch --old 127.10.4.8 --new 127.20.4.8 --interval 30s --json {}",
        json.display()
    );
    tmux.run_tracer(&args, &exit);
    tmux.wait_live_view();
    tmux.cmd(&["send-keys", "-t", "tui", "c"]);
    // Within a second of the key, long before the first 30 s sample.
    let s = tmux.wait_for("the cutover in the header", |s| {
        s.lines()
            .any(|l| l.starts_with("cutover ") && l.contains(" key"))
    });
    assert!(!s.contains("no cutover"), "{s}");
    tmux.cmd(&["send-keys", "-t", "tui", "c"]);
    thread::sleep(Duration::from_millis(300));
    tmux.cmd(&["send-keys", "-t", "tui", "q"]);
    assert_eq!(wait_exit(&exit), "EXIT=0");
    let status = std::os::unix::process::ExitStatusExt::from_raw(0);
    let out = read_output(&json, &tmp_path("tui.none"), status);
    let cut = out.events("cutover");
    assert_eq!(cut.len(), 1, "{}", out.raw);
    assert!(cut[0]["at"].is_string(), "{}", cut[0]);
}
