//! Bad input: one line naming cause and fix, exit code 2, no panic, no backtrace.

use std::{os::unix::process::CommandExt, process::Command};

use tracer_tests::*;

fn one_line_exit_2(args: &[&str], expect: &str) {
    let (code, stdout, stderr) = tracer(args);
    assert_eq!(code, 2, "{args:?}: stdout={stdout} stderr={stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: one line, got: {stderr}"
    );
    assert!(stderr.contains(expect), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "no half-written output: {stdout}");
}

#[test]
fn unknown_flag() {
    one_line_exit_2(&["watch", "--bogus"], "--bogus");
    one_line_exit_2(&["frobnicate"], "frobnicate");
}

#[test]
fn bad_addresses_and_hosts() {
    one_line_exit_2(
        &["watch", "--old", "300.1.2.3", "--new", "127.20.0.0/16"],
        "not an IP",
    );
    one_line_exit_2(&["watch", "--old", "10.0.0.0/33"], "prefix length");
    one_line_exit_2(
        &["watch", "--old", "no-such-host.invalid"],
        "cannot resolve",
    );
    one_line_exit_2(
        &["watch", "--old", "@/nonexistent/specs"],
        "cannot read SPEC file",
    );
    one_line_exit_2(
        &["watch", "--old", "10.0.0.0/8", "--new", "10.0.0.0/8"],
        "both",
    );
    one_line_exit_2(
        &["watch", "--interval", "soon", "--old", "10.0.0.0/8"],
        "duration",
    );
    one_line_exit_2(&["watch"], "--old");
    one_line_exit_2(
        &["watch", "--old", "10.0.0.0/8", "--duration", "-5s"],
        "negative",
    );
    one_line_exit_2(
        &["watch", "--old", "10.0.0.0/8", "--interval", "-1s"],
        "negative",
    );
}

#[test]
fn unwritable_output() {
    one_line_exit_2(
        &[
            "watch",
            "--old",
            "127.10.0.0/16",
            "--json",
            "/proc/no/such/dir/out.ndjson",
        ],
        "cannot write --json",
    );
}

#[test]
fn not_root() {
    let out = Command::new(tracer_bin())
        .args(["watch", "--old", "127.10.0.0/16", "--headless"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("root"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `tracer probe` without root: what it can tell, what it cannot try and why, exit 2.
#[test]
fn probe_without_root_says_what_is_missing() {
    let out = Command::new(tracer_bin())
        .arg("probe")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.starts_with("kernel        "), "{stdout}");
    assert!(stdout.contains("btf           "), "{stdout}");
    assert!(stdout.contains("needs root"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--duration D --interval I` writes D / I snapshots, every time: the last interval is
/// never lost to the deadline firing in the same instant.
#[test]
fn a_duration_writes_every_interval() {
    require_root();
    for round in 0..3 {
        let json = tmp_path(&format!("duration-{round}.ndjson"));
        let (code, _, stderr) = tracer(&[
            "watch",
            "--headless",
            "--old",
            "127.10.0.0/16",
            "--interval",
            "200ms",
            "--duration",
            "1s",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stderr}");
        let text = std::fs::read_to_string(&json).unwrap();
        let snaps = text
            .lines()
            .filter(|l| l.contains("\"type\":\"snapshot\""))
            .count();
        assert_eq!(snaps, 5, "round {round}: {text}");
        assert!(
            text.lines()
                .last()
                .unwrap()
                .contains("\"reason\":\"duration\"")
        );
    }
}

#[test]
fn forced_hooks_that_cannot_attach() {
    require_root();
    let (_, probe, _) = tracer(&["probe"]);
    for hook in ["fentry", "kprobe"] {
        let available = probe.contains(&format!("connect hook  {hook}: available"));
        let json = tmp_path(&format!("forced-{hook}.ndjson"));
        let (code, _, stderr) = tracer(&[
            "watch",
            "--headless",
            "--old",
            "127.10.0.0/16",
            "--connect-hook",
            hook,
            "--duration",
            "300ms",
            "--json",
            json.to_str().unwrap(),
        ]);
        if available {
            assert_eq!(code, 0, "{hook} is available, forcing it works: {stderr}");
        } else {
            assert_eq!(code, 2, "{hook}: {stderr}");
            assert!(
                stderr.contains(&format!("--connect-hook {hook} cannot attach")),
                "{stderr}"
            );
            assert!(
                stderr.contains("--connect-hook auto"),
                "names the fix: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
}

#[test]
fn no_btf_when_a_btf_hook_is_forced() {
    require_root();
    let out = Command::new(tracer_bin())
        .args([
            "watch",
            "--headless",
            "--old",
            "127.10.0.0/16",
            "--connect-hook",
            "fentry",
        ])
        .env("TRACER_BTF_PATH", "/nonexistent/vmlinux")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no kernel BTF"), "{stderr}");
    assert!(stderr.contains("--connect-hook derived"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn memlock_failure_is_a_warning_not_an_error() {
    // setrlimit(MEMLOCK) fails without CAP_SYS_RESOURCE; tracer must still run.
    let json = tmp_path("memlock.ndjson");
    let (code, _, stderr) = tracer(&[
        "watch",
        "--headless",
        "--old",
        "127.10.0.0/16",
        "--duration",
        "300ms",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for line in stderr.lines() {
        assert!(
            line.starts_with("tracer: warning:") || line.starts_with("tracer: note:"),
            "only warnings and notes: {stderr}"
        );
    }
}
