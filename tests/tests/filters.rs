//! `--netns` and `--cgroup`: only one namespace's or one cgroup's connections are counted,
//! filtered in the kernel, though another tenant talks to the same addresses at the same time.
//! All traffic runs inside network namespaces the tests create (127.66/16 old, 127.67/16 new).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tracer_tests::*;

fn tconn() -> &'static str {
    env!("CARGO_BIN_EXE_tconn")
}

const SETS: [&str; 4] = ["--old", "127.66.0.0/16", "--new", "127.67.0.0/16"];

/// `tconn hold ADDR N` started by `cmd`: N connections held until `release`.
struct Held(Child);

impl Held {
    fn start(cmd: &mut Command, n: usize) -> Held {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tconn hold");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("tconn output");
        assert_eq!(line.trim(), format!("done {n}"), "tconn hold");
        Held(child)
    }

    /// Close the held connections (stdin closes) and wait for the process, bounded.
    fn release(mut self) {
        drop(self.0.stdin.take());
        let t0 = Instant::now();
        while self.0.try_wait().expect("wait").is_none() {
            assert!(t0.elapsed() < Duration::from_secs(10), "tconn hold hangs");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn add_addrs(ns: &Netns) {
    for a in ["127.66.0.1/32", "127.66.0.2/32", "127.67.0.1/32"] {
        sh(Command::new(tool("ip")).args(["-n", &ns.name, "addr", "add", a, "dev", "lo"]));
    }
}

#[test]
fn netns_counts_exactly_one_namespace_of_two_with_the_same_addresses() {
    let (a, b) = (Netns::new("fa"), Netns::new("fb"));
    add_addrs(&a);
    add_addrs(&b);
    // Held from before the start: the census must take A's 3 only, not B's 4.
    let held_a = Held::start(a.cmd(tconn()).args(["hold", "127.66.0.2", "3"]), 3);
    let held_b = Held::start(b.cmd(tconn()).args(["hold", "127.66.0.2", "4"]), 4);
    let path = format!("/run/netns/{}", a.name);
    let mut args = SETS.to_vec();
    args.extend(["--netns", &path]);
    let run = Run::start("netns-a", &args);
    // A process that lives on after its connects: its row shows its namespace.
    let live_a = Held::start(a.cmd(tconn()).args(["hold", "127.66.0.2", "2"]), 2);
    std::thread::sleep(Duration::from_millis(600));
    sh(a.cmd(tconn()).args(["pair", "127.66.0.1", "30"]));
    sh(a.cmd(tconn()).args(["pair", "127.67.0.1", "10"]));
    sh(b.cmd(tconn()).args(["pair", "127.66.0.1", "50"]));
    sh(b.cmd(tconn()).args(["pair", "127.67.0.1", "20"]));
    let r = sh(b.cmd(tconn()).args(["connect", "127.66.0.1:9", "7"]));
    assert_eq!(r.trim(), "ok=0 failed=7");
    let live_pid = live_a.0.id();
    held_b.release();
    held_a.release();
    live_a.release();
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let meta = out.meta();
    let ino = std::fs::metadata(&path).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert_eq!(meta["filter"]["netns"], *ino.as_ref().unwrap(), "{meta}");
    assert_eq!(meta["filter"]["netns_path"], path.as_str());
    assert_eq!(
        (
            n(&meta["census"]["outbound"]),
            n(&meta["census"]["inbound"])
        ),
        (3, 3),
        "{meta}"
    );
    // A: 30 + 10 pairs, 2 held while tracing, and the 3 held from before closed at the end;
    // nothing of B's 70 pairs, 7 refused and 4 held.
    assert_eq!(out.cohort("old"), (32, 32, 0, 35, 0));
    assert_eq!(out.cohort("new"), (10, 10, 0, 10, 0));
    assert_eq!(out.inbound("old"), (32, 35, 0));
    assert_eq!(out.inbound("new"), (10, 10, 0));
    assert_eq!(out.destination("127.66.0.1"), Some((30, 30, 0, 30, 0)));
    // Every process row is of A; the one alive at a sample shows A's namespace (the others
    // exited before tracer could look theirs up).
    let procs = out.summary()["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let attempts: u64 = procs
        .iter()
        .map(|p| n(&p["cohorts"]["old"]["attempts"]) + n(&p["cohorts"]["new"]["attempts"]))
        .sum();
    assert_eq!(attempts, 42, "{procs:?}");
    let live = procs
        .iter()
        .find(|p| p["pid"] == live_pid)
        .unwrap_or_else(|| panic!("no row of pid {live_pid}: {procs:?}"));
    assert_eq!(live["netns"], *ino.as_ref().unwrap(), "{live}");
}

/// A cgroup v2 directory made for one test, removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(tag: &str) -> TestCgroup {
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup v2 hierarchy is mounted (the --cgroup test needs one)");
        let dir = root.join(format!("tracer-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup(dir)
    }

    /// `tconn ARGS` in the namespace, its process moved into this cgroup before it runs (in
    /// the forked child, before `ip netns exec`, whose own mount namespace hides the cgroup
    /// mount; the membership is inherited across exec).
    fn cmd(&self, ns: &Netns, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(format!("{}/cgroup.procs", self.0.display())).unwrap();
        let mut c = ns.cmd(tconn());
        c.args(args);
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process itself.
                let rc = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                libc::close(fd);
                if rc != 2 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        c
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn cgroup_counts_only_connects_from_inside_it() {
    let ns = Netns::new("fcg");
    add_addrs(&ns);
    let cg = TestCgroup::new("cg");
    let held_in = Held::start(&mut cg.cmd(&ns, &["hold", "127.66.0.2", "2"]), 2);
    let held_out = Held::start(ns.cmd(tconn()).args(["hold", "127.66.0.2", "3"]), 3);
    let dir = cg.0.display().to_string();
    let mut args = SETS.to_vec();
    args.extend(["--cgroup", &dir]);
    let run = Run::start("cgroup", &args);
    sh(&mut cg.cmd(&ns, &["pair", "127.66.0.1", "20"]));
    sh(&mut cg.cmd(&ns, &["pair", "127.67.0.1", "6"]));
    let r = sh(&mut cg.cmd(&ns, &["connect", "127.66.0.1:9", "5"]));
    assert_eq!(r.trim(), "ok=0 failed=5");
    sh(ns.cmd(tconn()).args(["pair", "127.66.0.1", "15"]));
    sh(ns.cmd(tconn()).args(["pair", "127.67.0.1", "9"]));
    let r = sh(ns.cmd(tconn()).args(["connect", "127.66.0.1:9", "4"]));
    assert_eq!(r.trim(), "ok=0 failed=4");
    held_out.release();
    held_in.release();
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let meta = out.meta();
    let rel = format!("/{}", cg.0.file_name().unwrap().to_string_lossy());
    assert_eq!(meta["filter"]["cgroup"], rel.as_str(), "{meta}");
    assert_eq!(meta["filter"]["inbound_counted"], false);
    assert_eq!(
        (
            n(&meta["census"]["outbound"]),
            n(&meta["census"]["inbound"])
        ),
        (2, 0),
        "{meta}"
    );
    // Inside: 20 + 5 refused to old (and the 2 held closed), 6 to new; outside: nothing.
    assert_eq!(out.cohort("old"), (25, 20, 5, 22, 0));
    assert_eq!(out.cohort("new"), (6, 6, 0, 6, 0));
    // Outbound only: accepts are not counted under --cgroup.
    assert_eq!(out.inbound("old"), (0, 0, 0));
    assert_eq!(out.inbound("new"), (0, 0, 0));
    let procs = out.summary()["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        procs.iter().all(|p| p["comm"] == "tconn"),
        "only the process in the cgroup: {procs:?}"
    );
}

fn one_line_exit_2(args: &[&str], expect: &str) {
    let (code, stdout, stderr) = tracer(args);
    assert_eq!(code, 2, "{args:?}: stdout={stdout} stderr={stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    assert!(stderr.contains(expect), "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
}

#[test]
fn bad_filters_are_one_line_and_exit_2() {
    require_root();
    let gone = {
        let mut c = Command::new("true").spawn().expect("spawn true");
        let pid = c.id();
        c.wait().expect("wait");
        pid.to_string()
    };
    let w = |opt: &'static str, v: &str| -> Vec<String> {
        ["watch", "--old", "127.66.0.1", "--headless", opt, v]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (w("--netns", "/nonexistent/ns"), "cannot open"),
        (w("--netns", &gone), "no process"),
        (w("--netns", "/etc/hostname"), "not a namespace file"),
        (w("--netns", "/proc/self/ns/uts"), "not a network namespace"),
        (
            w("--netns", "no-such-netns-name"),
            "/run/netns/no-such-netns-name",
        ),
        (w("--cgroup", "/nonexistent-cgroup"), "cgroup v2 directory"),
        (w("--cgroup", "/etc"), "not a cgroup directory"),
        (w("--cgroup", "/etc/hostname"), "not a directory"),
        (
            ["probe", "--netns", "/nonexistent/ns"]
                .map(String::from)
                .to_vec(),
            "cannot open",
        ),
        (
            ["probe", "--cgroup", "/etc"].map(String::from).to_vec(),
            "not a cgroup directory",
        ),
    ];
    for (args, expect) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        one_line_exit_2(&a, expect);
    }
}

#[test]
fn probe_shows_the_filters() {
    let ns = Netns::new("fprobe");
    let path = format!("/run/netns/{}", ns.name);
    // By path, and by the PID of a process in it (bounded: sleep 30, killed at the end).
    let mut sleeper = ns
        .cmd("sleep")
        .arg("30")
        .spawn()
        .expect("sleep in the namespace");
    let pid = sleeper.id().to_string();
    std::thread::sleep(Duration::from_millis(200));
    for (arg, shown) in [
        (path.as_str(), path.clone()),
        (&pid, format!("/proc/{pid}/ns/net")),
    ] {
        let (code, stdout, stderr) = tracer(&["probe", "--netns", arg, "--cgroup", "/"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("filter        netns"))
            .unwrap_or_else(|| panic!("no filter line: {stdout}"));
        assert!(line.contains(&shown), "{line}");
        assert!(stdout.contains("filter        cgroup / "), "{stdout}");
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
