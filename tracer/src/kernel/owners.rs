//! Owners of the connections found by the census: socket inode -> process, by one scan of
//! /proc/*/fd at start (never again: the cost grows with open files).

use std::{collections::HashMap, os::unix::fs::MetadataExt};

use super::census::Conn;
use crate::model::{
    analysis::stragglers::{CensusOwner, unit_of},
    cohort::{Cohort, Sets},
};

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The cgroup v2 path from /proc/PID/cgroup (`0::/system.slice/x.service`).
pub fn cgroup_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The cgroup v2 path of a process (`/system.slice/x.service`).
pub fn cgroup_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroup_path(&text).map(str::to_string)
}

/// The network namespace inode of a process (what `--netns` compares).
pub fn netns_of_pid(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// The container or service unit of a process, from its cgroup path.
pub fn unit_of_pid(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    unit_of(cgroup_path(&text)?)
}

/// The cgroup id the kernel reports (bpf_get_current_cgroup_id): the inode of its directory.
fn cgroup_id(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| {
            let p = cgroup_path(&t)?.to_string();
            std::fs::metadata(format!("/sys/fs/cgroup{p}")).ok()
        })
        .map_or(0, |m| m.ino())
}

/// Map every socket inode of every process to its pid (the first owner found).
pub fn inode_owners(wanted: &HashMap<u32, ()>) -> HashMap<u32, u32> {
    let mut owners = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some(ino) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| socket_inode(&l.to_string_lossy()))
                && wanted.contains_key(&ino)
            {
                owners.entry(ino).or_insert(pid);
            }
        }
    }
    owners
}

/// Processes holding old-side outbound connections at start, with how many each, and the
/// owner of each of those connections (an index into the owners), so its close can be followed
/// per process.
pub fn census_holders(conns: &[Conn], sets: &Sets) -> (Vec<CensusOwner>, Vec<(Conn, usize)>) {
    let old: Vec<&Conn> = conns
        .iter()
        .filter(|c| !c.inbound && sets.cohort(c.remote) == Cohort::Old)
        .collect();
    if old.is_empty() {
        return (vec![], vec![]);
    }
    let wanted: HashMap<u32, ()> = old.iter().map(|c| (c.inode, ())).collect();
    let owners = inode_owners(&wanted);
    let mut per_pid: HashMap<u32, u64> = HashMap::new();
    for c in &old {
        if let Some(pid) = owners.get(&c.inode) {
            *per_pid.entry(*pid).or_insert(0) += 1;
        }
    }
    let mut v: Vec<CensusOwner> = per_pid
        .into_iter()
        .map(|(pid, n)| CensusOwner {
            pid,
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default(),
            cgroup: cgroup_id(pid),
            unit: unit_of_pid(pid),
            old_open: n,
        })
        .collect();
    v.sort_by(|a, b| b.old_open.cmp(&a.old_open).then(a.pid.cmp(&b.pid)));
    let index: HashMap<u32, usize> = v.iter().enumerate().map(|(i, o)| (o.pid, i)).collect();
    let held = old
        .into_iter()
        .filter_map(|c| Some(((*c).clone(), index[owners.get(&c.inode)?])))
        .collect();
    (v, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_and_cgroup_lines() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(
            cgroup_path("0::/system.slice/nginx.service\n"),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(cgroup_path("1:name=systemd:/x\n"), None);
    }
}
