//! What a process costs, read from the kernel: CPU time in nanoseconds (schedstat), peak RSS
//! (VmHWM), CPU of reaped children (getrusage), and the run time of the BPF programs a process
//! holds (fdinfo of its prog fds, filled while BPF run-time statistics are enabled).

use std::{
    os::fd::{FromRawFd, OwnedFd},
    process::Command,
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

/// CPU time of all threads of `pid` so far, in ns (first field of each task's schedstat).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Peak resident set size of `pid` in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User plus system CPU of all reaped children (and their reaped children), in ns.
pub fn children_cpu_ns() -> u64 {
    // SAFETY: getrusage fills a local struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime) + us(ru.ru_stime)) * 1000
}

/// Statistics of one BPF program, from the fdinfo of a prog fd.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prog {
    pub id: u64,
    pub kind: String,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
}

impl Prog {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "type": self.kind, "name": self.name, "run_time_ns": self.run_time_ns,
               "run_cnt": self.run_cnt, "recursion_misses": self.recursion_misses})
    }
}

/// Name of a `bpf_prog_type` number, as bpftool shows it.
fn prog_type(n: u64) -> String {
    match n {
        2 => "kprobe".into(),
        5 => "tracepoint".into(),
        17 => "raw_tracepoint".into(),
        26 => "tracing".into(),
        n => format!("type {n}"),
    }
}

/// Parse one fdinfo text; None unless it is a BPF program.
pub fn parse_fdinfo(text: &str) -> Option<Prog> {
    let mut p = Prog::default();
    let mut is_prog = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let num = || v.parse::<u64>().unwrap_or(0);
        match k {
            "prog_id" => {
                is_prog = true;
                p.id = num();
            }
            "prog_type" => p.kind = prog_type(num()),
            "run_time_ns" => p.run_time_ns = num(),
            "run_cnt" => p.run_cnt = num(),
            "recursion_misses" => p.recursion_misses = num(),
            _ => {}
        }
    }
    is_prog.then_some(p)
}

/// The BPF programs `pid` holds open (each once), named through bpftool where it can.
pub fn bpf_progs(pid: u32) -> Vec<Prog> {
    let mut progs: Vec<Prog> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return progs;
    };
    for e in dir.flatten() {
        if let Some(p) = std::fs::read_to_string(e.path())
            .ok()
            .and_then(|t| parse_fdinfo(&t))
            && !progs.iter().any(|q| q.id == p.id)
        {
            progs.push(p);
        }
    }
    for p in &mut progs {
        p.name = prog_name(p.id).unwrap_or_else(|| format!("id {}", p.id));
    }
    progs.sort_by_key(|p| std::cmp::Reverse(p.run_time_ns));
    progs
}

fn prog_name(id: u64) -> Option<String> {
    let out = Command::new(super::bpftool()?)
        .args(["prog", "show", "id", &id.to_string(), "-j"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["name"].as_str()?.to_string())
}

const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// BPF run-time statistics (what `sysctl kernel.bpf_stats_enabled=1` turns on), enabled while
/// this value lives. Taken through BPF_ENABLE_STATS: the kernel turns them off again when the fd
/// closes, even if the bench is killed, so the sysctl is never left changed.
pub struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        let mut attr = [0u8; 8];
        attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
        // SAFETY: BPF_ENABLE_STATS reads a u32 type from the attr buffer of the given size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_mut_ptr(),
                attr.len(),
            )
        };
        if fd < 0 {
            bail!(
                "cannot enable BPF run-time statistics (BPF_ENABLE_STATS): {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the kernel just returned this fd to us.
        Ok(BpfStats {
            _fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_of_a_program() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\nlink_type:\tx\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\tabc\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t1500\nrun_cnt:\t10\nrecursion_misses:\t2\nverified_insns:\t99\n";
        let p = parse_fdinfo(t).unwrap();
        assert_eq!(
            (
                p.id,
                p.kind.as_str(),
                p.run_time_ns,
                p.run_cnt,
                p.recursion_misses
            ),
            (42, "tracepoint", 1500, 10, 2)
        );
    }

    #[test]
    fn fdinfo_of_a_map_is_not_a_program() {
        assert!(parse_fdinfo("pos:\t0\nmap_type:\t1\nmap_id:\t7\n").is_none());
    }

    #[test]
    fn own_cpu_is_counted() {
        // The running task's time is folded in at ticks and switches: spin (bounded) until it
        // is. Other test threads may exit meanwhile and take their time out of the sum, so
        // wait for it to grow, not merely to change.
        let me = std::process::id();
        let a = cpu_ns(me);
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        // The read that ended the loop is the one judged: a second read could see a test
        // thread's time leave the sum (seen once: it failed right after the loop ended).
        let mut now = cpu_ns(me);
        while now <= a && t0.elapsed() < std::time::Duration::from_secs(5) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
            now = cpu_ns(me);
        }
        assert!(now > a, "schedstat never advanced");
        assert!(vm_hwm_kib(me).unwrap() > 0);
    }
}
