//! Real programs run by a test (daemons, clients) and what they log: each is started in a
//! process group of its own and the whole group is killed when its guard is dropped, on success
//! and on panic, so a daemon's workers or a shell loop's children never outlive the test.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use std::os::unix::process::CommandExt;

use crate::{Netns, tmp_path};

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// `2026-11-23T11:22:19.180Z` as milliseconds since the epoch (UTC, milliseconds given).
pub fn rfc3339_ms(ts: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| {
        ts.get(r)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 time with milliseconds: {ts}"))
    };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    let secs = days * 86400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    (secs * 1000 + n(20..23)) as u64
}

/// A program the test started, killed with its whole process group on drop.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    /// Where its stdout and stderr went.
    pub output: PathBuf,
}

impl Daemon {
    /// Spawn `cmd` in a new process group, stdout and stderr to a file named after `name`.
    pub fn spawn(name: &str, mut cmd: Command) -> Daemon {
        let output = tmp_path(&format!("{name}.out"));
        let f = std::fs::File::create(&output).expect("output file");
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Daemon {
            name: name.to_string(),
            child,
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Send a signal to the process itself (not its group).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait (bounded) for it to exit by itself; panics with its output if it does not.
    pub fn wait_exit(&mut self, within: Duration) {
        let t0 = Instant::now();
        while self.running() {
            assert!(
                t0.elapsed() < within,
                "{} still running after {within:?}: {}",
                self.name,
                self.printed()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pids of its direct children (e.g. nginx's workers), from /proc.
    pub fn children(&self) -> Vec<u32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this guard created (process_group(0)).
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let t0 = Instant::now();
        while self.running() && t0.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left of the group (workers, a loop's children), then the leader.
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (bounded) until `ok` holds, else panic with `what` and `detail()`.
pub fn wait_until(
    what: &str,
    within: Duration,
    mut ok: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < within,
            "{what}: not within {within:?}\n{}",
            detail()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// `/etc/netns/NS/resolv.conf`: what `ip netns exec` mounts over /etc/resolv.conf; removed on
/// drop.
pub struct Resolv(PathBuf);

impl Resolv {
    pub fn new(ns: &Netns, nameserver: &str) -> Resolv {
        let dir = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:2\n"),
        )
        .expect("write resolv.conf");
        Resolv(dir)
    }
}

impl Drop for Resolv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One log line of `key=value` fields (a field without `=` is kept with an empty value).
pub fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (f.to_string(), String::new()),
        })
        .collect()
}

/// The lines of a `key=value` log that have an `ms=` time, parsed.
pub fn kv_log(path: &Path) -> Vec<BTreeMap<String, String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(fields)
        .filter(|f| f.get("ms").is_some_and(|m| m.parse::<u64>().is_ok()))
        .collect()
}

/// A field as a number (panics with the line if it is not one).
pub fn num(f: &BTreeMap<String, String>, k: &str) -> u64 {
    f.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {k} in {f:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_epoch_milliseconds() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00.000Z"), 0);
        assert_eq!(rfc3339_ms("2000-03-01T00:00:01.250Z"), 951_868_801_250);
        assert_eq!(rfc3339_ms("2026-11-23T11:22:19.180Z"), 1_795_432_939_180);
    }

    #[test]
    fn fields_split_on_the_first_equals() {
        let f = fields("ms=12 pid=3 served=error:x=y open");
        assert_eq!(f["served"], "error:x=y");
        assert_eq!(f["open"], "");
        assert_eq!(num(&f, "ms"), 12);
    }
}
