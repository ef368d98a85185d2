//! What an operator installs, used as an operator would: the artifacts of `cargo xtask dist`
//! (static binaries, SHA256SUMS, the Debian package, the container image), and least privilege:
//! a `tracer` group member runs it without sudo and counts exactly, others get one line and
//! exit 2; under `setpriv` with exactly the documented capabilities and no root it counts
//! exactly and keeps only what it says it keeps; with one missing, `tracer probe` names it.
//!
//! `cargo xtask test` runs `cargo xtask dist` first and passes TRACER_DIST_DIR. The package is
//! installed with dpkg and purged again; test users are made and removed.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use tracer_tests::*;

// Addresses no other test uses.
const OLD: &str = "127.117.0.0/16";
const NEW: &str = "127.118.0.0/16";
/// The documented set (README "Least privilege", `tracer --help`).
const CAPS: &[&str] = &[
    "bpf",
    "perfmon",
    "dac_read_search",
    "net_admin",
    "sys_ptrace",
    "sys_admin",
];
/// Those without which watch refuses to start.
const REQUIRED: &[&str] = &["bpf", "perfmon", "dac_read_search"];

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dist_dir() -> PathBuf {
    let d = std::env::var_os("TRACER_DIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root_dir().join("target/dist"));
    assert!(
        d.join("SHA256SUMS").is_file(),
        "no artifacts in {}: run `cargo xtask dist` (cargo xtask test does)",
        d.display()
    );
    d
}

fn dist_file(suffix: &str) -> PathBuf {
    std::fs::read_dir(dist_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no *{suffix} in {}", dist_dir().display()))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A system user for the test (with its own group), removed at the end.
struct User(&'static str);

impl User {
    fn new(name: &'static str, groups: &[&str]) -> User {
        let _ = run(Command::new(tool("userdel")).arg(name));
        let mut c = Command::new(tool("useradd"));
        c.args(["--system", "-U", "-M", "-s", "/usr/sbin/nologin"]);
        if !groups.is_empty() {
            c.arg("-G").arg(groups.join(","));
        }
        let (rc, _, err) = run(c.arg(name));
        assert_eq!(rc, 0, "useradd {name}: {err}");
        User(name)
    }

    /// A directory this user may write NDJSON into.
    fn dir(&self) -> PathBuf {
        let d = tmp_path(self.0);
        std::fs::create_dir_all(&d).unwrap();
        let (rc, _, err) = run(Command::new("chown").arg(self.0).arg(&d));
        assert_eq!(rc, 0, "{err}");
        // The parent is root's: let the user reach into it.
        let parent = d.parent().unwrap();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    /// `setpriv` as this user with its groups (`extra`: more options, e.g. capabilities).
    fn cmd(&self, extra: &[String], program: &Path) -> Command {
        let mut c = Command::new(tool("setpriv"));
        c.args(["--reuid", self.0, "--regid", self.0, "--init-groups"])
            .args(extra)
            .arg(program);
        c
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = run(Command::new(tool("userdel")).arg(self.0));
    }
}

/// The exact-count scenario (the foundation one, smaller): connections open before the start,
/// some of them closing, short connections to both sides, refused ones, held ones. Returns
/// tracer's /proc/PID/status while it ran.
fn counts_exactly(cmd: Command, json: PathBuf) -> String {
    let old = Server::start("127.117.0.1");
    let new = Server::start("127.118.0.1");
    let refused = format!("127.117.0.99:{}", old.addr.port()).parse().unwrap();
    let mut before = open_connections(old.addr, 6);
    old.wait_accepted(6);
    let run = Run::start_cmd(cmd, json, &["--old", OLD, "--new", NEW]);
    before.truncate(4);
    short_connections(old.addr, 30);
    short_connections(new.addr, 50);
    refused_connections(refused, 5);
    let held = open_connections(new.addr, 3);
    old.wait_accepted(36);
    new.wait_accepted(53);
    thread::sleep(Duration::from_millis(200));
    let pid = run.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let out = run.stop();
    drop((held, before));
    assert!(out.status.success(), "exit {}: {}", out.status, out.stderr);
    // (attempts, established, failed, closed, open)
    assert_eq!(out.cohort("old"), (35, 30, 5, 32, 4), "old cohort");
    assert_eq!(out.cohort("new"), (53, 53, 0, 50, 3), "new cohort");
    assert_eq!(out.inbound("new"), (53, 50, 3), "inbound new");
    status
}

/// CapEff of a /proc/PID/status text.
fn cap_eff(status: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line")
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn cap_bit(name: &str) -> u64 {
    let n = match name {
        "dac_read_search" => 2,
        "net_admin" => 12,
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        _ => panic!("{name}"),
    };
    1 << n
}

/// What tracer keeps after attaching, as --help and the README say.
fn kept_mask() -> u64 {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap(), v.next().unwrap());
    let mut m = cap_bit("sys_ptrace") | cap_bit("sys_admin");
    if (major, minor) < (6, 5) {
        m |= cap_bit("bpf");
    }
    m
}

#[test]
fn static_binaries_are_static_and_summed() {
    let (rc, out, err) = run(Command::new(tool("sha256sum"))
        .args(["-c", "SHA256SUMS"])
        .current_dir(dist_dir()));
    assert_eq!(rc, 0, "{out}{err}");
    for (suffix, machine) in [
        ("x86_64-linux-musl", "x86-64"),
        ("aarch64-linux-musl", "ARM aarch64"),
    ] {
        let bin = dist_file(suffix);
        assert!(
            out.contains(&format!(
                "{}: OK",
                bin.file_name().unwrap().to_string_lossy()
            )),
            "{out}"
        );
        let (_, text, _) = run(Command::new("file").arg("-b").arg(&bin));
        assert!(text.contains(machine), "{text}");
        assert!(
            text.contains("statically linked") || text.contains("static-pie linked"),
            "{text}"
        );
    }
    assert!(out.contains(".deb: OK"), "{out}");
}

/// Installs the package, so it must not overlap with the other tests that use /usr/sbin/tracer
/// (none do: they run the built binary).
#[test]
fn deb_lets_the_tracer_group_run_it_without_sudo() {
    require_root();
    let deb = dist_file("_amd64.deb");
    let (rc, _, err) = run(Command::new(tool("dpkg")).arg("-i").arg(&deb));
    assert_eq!(rc, 0, "dpkg -i: {err}");
    struct Purge;
    impl Drop for Purge {
        fn drop(&mut self) {
            let _ = run(Command::new(tool("dpkg")).args(["--purge", "tracer"]));
        }
    }
    let _purge = Purge;

    // What the package installs.
    let (_, caps, _) = run(Command::new(tool("getcap")).arg("/usr/lib/tracer/tracer"));
    for c in CAPS {
        assert!(caps.contains(&format!("cap_{c}")), "getcap: {caps}");
    }
    let (_, ls, _) = run(Command::new("stat").args([
        "-c",
        "%a %U:%G",
        "/usr/lib/tracer/tracer",
        "/usr/sbin/tracer",
    ]));
    assert_eq!(ls, "750 root:tracer\n755 root:root\n", "modes");
    for f in [
        "/usr/share/man/man8/tracer.8.gz",
        "/usr/share/man/man8/tracer-watch.8.gz",
        "/usr/share/bash-completion/completions/tracer",
        "/usr/share/zsh/vendor-completions/_tracer",
        "/usr/share/fish/vendor_completions.d/tracer.fish",
        "/usr/lib/systemd/system/tracer.service",
        "/usr/lib/tmpfiles.d/tracer.conf",
        "/etc/default/tracer",
    ] {
        assert!(Path::new(f).is_file(), "{f} not installed");
    }
    let (_, man, _) = run(Command::new("zcat").arg("/usr/share/man/man8/tracer-watch.8.gz"));
    assert!(
        man.contains(".TH TRACER-WATCH 8") && man.contains("\\-\\-old"),
        "{man}"
    );
    let (_, bash, _) = run(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/tracer && complete -p tracer",
    ]));
    assert!(
        bash.contains("-F _tracer tracer"),
        "bash completion: {bash}"
    );

    let (rc, out, err) = run(Command::new(tool("systemd-analyze"))
        .args(["verify", "/usr/lib/systemd/system/tracer.service"]));
    assert_eq!(rc, 0, "systemd-analyze verify: {out}{err}");
    assert_eq!(format!("{out}{err}").trim(), "", "the unit verifies clean");

    // A member of the group: /usr/sbin/tracer runs the group's copy with its capabilities.
    let member = User::new("tracer-t-member", &["tracer"]);
    let json = member.dir().join("member.ndjson");
    counts_exactly(member.cmd(&[], Path::new("/usr/sbin/tracer")), json);

    // Not a member: one line naming the cause and the fix, exit 2.
    let outsider = User::new("tracer-t-outsider", &[]);
    let (rc, _, err) = run(outsider.cmd(&[], Path::new("/usr/sbin/tracer")).args([
        "watch",
        "--headless",
        "--old",
        OLD,
        "--new",
        NEW,
        "--duration",
        "1s",
    ]));
    assert_eq!(rc, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("`tracer` group"),
        "{err}"
    );

    // The unit's command as systemd runs it (user tracer, its ambient capabilities, the state
    // directory), with a short rotation: one whole recording per period, then exit 0.
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/tracer.service").unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .replace("%%", "%");
    let ambient = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities");
    let list: Vec<String> = ambient
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(list.len(), CAPS.len(), "the unit grants the documented set");
    let list = list.join(",");
    let state = tmp_path("unit-state");
    std::fs::create_dir_all(&state).unwrap();
    run(Command::new("chown").arg("tracer").arg(&state));
    let mut unit_cmd = Command::new(tool("setpriv"));
    unit_cmd
        .args(["--reuid", "tracer", "--regid", "tracer", "--init-groups"])
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        .args(["/bin/sh", "-c", exec.as_str()])
        .env("STATE_DIRECTORY", &state)
        .env("TRACER_SETS", format!("--old {OLD} --new {NEW}"))
        .env("TRACER_INTERVAL", "200ms")
        .env("TRACER_ROTATE", "2s")
        .env("TRACER_METRICS", "127.0.0.1:0")
        .env("TRACER_ARGS", "--label unit=test");
    let (rc, _, err) = run(&mut unit_cmd);
    assert_eq!(rc, 0, "the unit's command: {err}");
    assert!(
        err.contains("serving metrics at http://127.0.0.1:"),
        "{err}"
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("tracer-20") && name.ends_with("Z.ndjson"),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("{\"type\":\"meta\""), "{text}");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["reason"], "duration");

    // The settings file is not started without sets: exit 2, one line.
    let (rc, _, err) = run(Command::new("/bin/sh")
        .args(["-c", exec.as_str()])
        .env("TRACER_SETS", ""));
    assert_eq!(
        (rc, err.trim()),
        (2, "tracer: set TRACER_SETS in /etc/default/tracer")
    );
}

/// Capabilities for setpriv: inheritable, ambient and bounding set to exactly `caps`.
fn with_caps(caps: &[&str]) -> Vec<String> {
    let list: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
    ]
}

/// The static binary where any user may run it (the worktree may not be reachable).
fn static_copy() -> PathBuf {
    let p = tmp_path("tracer-static");
    std::fs::copy(dist_file("x86_64-linux-musl"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    let parent = p.parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn the_documented_capabilities_are_enough_and_each_is_named_when_missing() {
    require_root();
    let bin = static_copy();
    let user = User::new("tracer-t-caps", &[]);
    let json = user.dir().join("caps.ndjson");
    let status = counts_exactly(user.cmd(&with_caps(CAPS), &bin), json);
    // After attaching: only what --help says is kept.
    assert_eq!(
        cap_eff(&status),
        kept_mask(),
        "capabilities kept after attaching: {status}"
    );

    // With one missing, probe names it: required ones stop it (exit 2, with the fix).
    for missing in CAPS {
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (the kernel accepts it for them):
        // without those two it must go as well.
        let stands_in = ["bpf", "perfmon"].contains(missing);
        let rest: Vec<&str> = CAPS
            .iter()
            .copied()
            .filter(|c| c != missing && !(stands_in && *c == "sys_admin"))
            .collect();
        let (rc, stdout, err) = run(user.cmd(&with_caps(&rest), &bin).arg("probe"));
        let name = format!("CAP_{}", missing.to_uppercase());
        let line = stdout
            .lines()
            .find(|l| l.starts_with("capability") && l.contains(&name))
            .unwrap_or_else(|| panic!("probe does not list {name}: {stdout}{err}"));
        if REQUIRED.contains(missing) {
            assert_eq!(rc, 2, "{stdout}{err}");
            assert!(line.contains("MISSING"), "{line}");
            assert!(stdout.contains("fix: "), "{stdout}");
        } else {
            assert_eq!(rc, 0, "{stdout}{err}");
            assert!(line.contains(": missing: "), "{line}");
        }
    }
    // And without any, as a plain user: one line, exit 2.
    let (rc, _, err) = run(user.cmd(&with_caps(&[]), &bin).args([
        "watch",
        "--headless",
        "--old",
        OLD,
        "--duration",
        "1s",
    ]));
    assert_eq!(rc, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("missing CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH"),
        "{err}"
    );
}

/// The image built FROM scratch runs `tracer probe` with the documented capabilities. Podman
/// runs containers on this kind of machine (with Debian's runc: crun refuses the hybrid cgroup
/// layout, and the ulimits must stay at the host's: root here lacks CAP_SYS_RESOURCE), so this
/// test never skips: if podman cannot run it, it fails.
#[test]
fn the_container_image_runs_probe() {
    require_root();
    let podman = tool("podman");
    let image = "localhost/tracer-dist-test:latest";
    let (rc, out, err) = run(Command::new(&podman)
        .args(["build", "-q", "-t", image, "-f"])
        .arg(root_dir().join("deploy/container/Containerfile"))
        .arg(dist_dir()));
    assert_eq!(rc, 0, "podman build: {out}{err}");
    struct Rmi<'a>(&'a Path, &'a str);
    impl Drop for Rmi<'_> {
        fn drop(&mut self) {
            let _ = run(Command::new(self.0).args(["rmi", "-f", self.1]));
        }
    }
    let _rmi = Rmi(&podman, image);
    let caps: Vec<String> = CAPS.iter().map(|c| c.to_uppercase()).collect();
    let (rc, out, err) = run(Command::new(&podman)
        .args(["--runtime", "runc", "run", "--rm"])
        .args(["--pid", "host", "--network", "host", "--cgroupns", "host"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(["--cap-drop", "all", "--cap-add", caps.join(",").as_str()])
        .arg(image)
        .arg("probe"));
    assert_eq!(rc, 0, "tracer probe in the image: {out}{err}");
    assert!(out.contains("watch would use: connect="), "{out}");
    for c in CAPS {
        assert!(
            out.contains(&format!("CAP_{}: yes", c.to_uppercase())),
            "{out}"
        );
    }
}
