//! `--netns PATH|PID` and `--cgroup PATH`: resolve what the user names into what the kernel
//! compares (a namespace inode, a cgroup directory), with one line naming cause and fix when
//! it is not what it should be. The kernel side is tracer-ebpf `filter.rs`.

use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// The network namespace to count (`--netns`).
#[derive(Clone, Debug)]
pub struct Netns {
    /// As the user gave it.
    pub arg: String,
    /// The namespace file opened (`/run/netns/NAME`, `/proc/PID/ns/net`).
    pub path: PathBuf,
    /// Its inode: the namespace's `ns.inum`, what `ls -L -i` and `lsns` show.
    pub inode: u64,
    /// Kept open: the census joins the namespace through it (a PID may exit meanwhile).
    pub file: std::sync::Arc<File>,
}

/// The cgroup v2 directory to count (`--cgroup`), with its subtree.
#[derive(Clone, Debug)]
pub struct Cgroup {
    pub arg: String,
    /// The directory in the cgroup v2 mount.
    pub dir: PathBuf,
    /// Its path in the hierarchy as /proc/PID/cgroup shows it (`/system.slice/x.service`).
    pub path: String,
    /// Its id (the directory's inode, what bpf_get_current_cgroup_id returns).
    pub id: u64,
    pub file: std::sync::Arc<File>,
}

/// Both filters; none set: everything is counted.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub netns: Option<Netns>,
    pub cgroup: Option<Cgroup>,
}

impl Filters {
    /// One line for headers and reports (`netns 4026532401 (/run/netns/a), cgroup /x`).
    pub fn describe(&self) -> Option<String> {
        describe(
            self.netns
                .as_ref()
                .map(|n| (n.inode, n.path.display().to_string())),
            self.cgroup.as_ref().map(|c| c.path.clone()),
        )
    }

    /// Does the census connection owned by `pid` count under `--cgroup`?
    pub fn cgroup_has(&self, cgroup_of_pid: Option<&str>) -> bool {
        match &self.cgroup {
            None => true,
            Some(c) => cgroup_of_pid.is_some_and(|p| under(p, &c.path)),
        }
    }
}

/// The filter line from its parts (shared with the report, which has them from the meta line).
pub fn describe(netns: Option<(u64, String)>, cgroup: Option<String>) -> Option<String> {
    let mut parts = vec![];
    if let Some((ino, path)) = netns {
        parts.push(format!("netns {ino} ({path})"));
    }
    if let Some(c) = cgroup {
        parts.push(format!("cgroup {c} (outbound only)"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Is cgroup path `p` the cgroup `top` or below it?
pub fn under(p: &str, top: &str) -> bool {
    let top = top.trim_end_matches('/');
    top.is_empty() || p == top || p.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

/// Where `--netns ARG` points: a PID's namespace, a name under /run/netns, or a path.
pub fn netns_path(arg: &str) -> Result<PathBuf, String> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Err(
            "--netns is empty: give a netns file (/run/netns/NAME, /proc/PID/ns/net) or a PID"
                .into(),
        );
    }
    if arg.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(PathBuf::from(format!("/proc/{arg}/ns/net")));
    }
    if !arg.contains('/') {
        return Ok(Path::new("/run/netns").join(arg));
    }
    Ok(PathBuf::from(arg))
}

fn fs_type(path: &Path) -> std::io::Result<u64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statfs on a NUL-terminated path into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as u64)
}

const NS_GET_NSTYPE: libc::c_ulong = 0xb7 << 8 | 0x3;

/// Resolve `--netns`.
pub fn netns(arg: &str) -> Result<Netns, String> {
    let path = netns_path(arg)?;
    let hint =
        "give a netns file (/run/netns/NAME, /proc/PID/ns/net) or the PID of a running process";
    let pid = arg.trim().bytes().all(|b| b.is_ascii_digit());
    let file = File::open(&path).map_err(|e| {
        if pid && e.kind() == std::io::ErrorKind::NotFound {
            format!("--netns {arg}: no process {arg}: {hint}")
        } else {
            format!("--netns {arg}: cannot open {}: {e}: {hint}", path.display())
        }
    })?;
    if fs_type(&path).map_err(|e| format!("--netns {arg}: {}: {e}", path.display()))?
        != libc::NSFS_MAGIC as u64
    {
        return Err(format!(
            "--netns {arg}: {} is not a namespace file (not on nsfs; an `ip netns` name that was never mounted?): {hint}",
            path.display()
        ));
    }
    // SAFETY: ioctl on an open nsfs file; no argument.
    let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if ty >= 0 && ty != libc::CLONE_NEWNET {
        return Err(format!(
            "--netns {arg}: {} is a namespace of another type, not a network namespace: {hint}",
            path.display()
        ));
    }
    let inode = file
        .metadata()
        .map_err(|e| format!("--netns {arg}: {}: {e}", path.display()))?
        .ino();
    Ok(Netns {
        arg: arg.to_string(),
        path,
        inode,
        file: std::sync::Arc::new(file),
    })
}

/// The directory `--cgroup ARG` names, given the cgroup v2 mount (`is_cgroup`: a cgroup v2
/// directory): absolute paths as they are or, when that is not a cgroup, as a path in the
/// hierarchy (`/system.slice/x.service`, what /proc/PID/cgroup shows); relative ones below
/// the mount.
pub fn cgroup_dir(arg: &str, mount: &Path, exists: impl Fn(&Path) -> bool) -> PathBuf {
    // `exists` means "is a cgroup v2 directory".
    let p = Path::new(arg.trim());
    if p.is_absolute() {
        if exists(p) || p.starts_with(mount) {
            return p.to_path_buf();
        }
        let inner = mount.join(p.strip_prefix("/").unwrap_or(p));
        return if exists(&inner) {
            inner
        } else {
            p.to_path_buf()
        };
    }
    mount.join(p)
}

/// The cgroup path of `dir` in the hierarchy mounted at `mount` (`/` for the root).
pub fn hierarchy_path(dir: &Path, mount: &Path) -> Option<String> {
    let rest = dir.strip_prefix(mount).ok()?;
    let s = rest.to_string_lossy();
    Some(format!("/{}", s.trim_matches('/')))
}

/// Resolve `--cgroup`.
pub fn cgroup(arg: &str) -> Result<Cgroup, String> {
    let hint = "give a cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/nginx.service, or a path relative to the cgroup v2 mount)";
    if arg.trim().is_empty() {
        return Err(format!("--cgroup is empty: {hint}"));
    }
    let mount = super::unsent::mounted_root().ok_or_else(|| {
        format!("--cgroup {arg}: no cgroup v2 hierarchy is mounted (cgroup v1 only): mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or run without --cgroup")
    })?;
    let dir = cgroup_dir(arg, &mount, |p| {
        p.is_dir() && fs_type(p).ok() == Some(libc::CGROUP2_SUPER_MAGIC as u64)
    });
    let md = std::fs::metadata(&dir)
        .map_err(|e| format!("--cgroup {arg}: {}: {e}: {hint}", dir.display()))?;
    if !md.is_dir() {
        return Err(format!(
            "--cgroup {arg}: {} is not a directory: {hint}",
            dir.display()
        ));
    }
    let ty = fs_type(&dir).map_err(|e| format!("--cgroup {arg}: {}: {e}", dir.display()))?;
    if ty != libc::CGROUP2_SUPER_MAGIC as u64 {
        let what = if ty == libc::CGROUP_SUPER_MAGIC as u64 {
            "a cgroup v1 directory"
        } else {
            "not a cgroup directory"
        };
        return Err(format!(
            "--cgroup {arg}: {} is {what}: {hint}; the cgroup v2 mount is {}",
            dir.display(),
            mount.display()
        ));
    }
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let mount_canon = mount.canonicalize().unwrap_or(mount.clone());
    let path = hierarchy_path(&canon, &mount_canon).ok_or_else(|| {
        format!(
            "--cgroup {arg}: {} is not below the cgroup v2 mount {}: {hint}",
            dir.display(),
            mount.display()
        )
    })?;
    let file = File::open(&dir).map_err(|e| format!("--cgroup {arg}: {}: {e}", dir.display()))?;
    Ok(Cgroup {
        arg: arg.to_string(),
        dir,
        path,
        id: md.ino(),
        file: std::sync::Arc::new(file),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_args_name_a_file() {
        assert_eq!(netns_path("1234").unwrap(), Path::new("/proc/1234/ns/net"));
        assert_eq!(netns_path("blue").unwrap(), Path::new("/run/netns/blue"));
        assert_eq!(
            netns_path("/proc/7/ns/net").unwrap(),
            Path::new("/proc/7/ns/net")
        );
        assert!(netns_path(" ").unwrap_err().contains("PID"));
    }

    #[test]
    fn own_namespace_resolves_and_bad_ones_say_why() {
        let own = netns("/proc/self/ns/net").unwrap();
        let ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_eq!(own.inode, ino);
        let e = netns("/nonexistent/x").unwrap_err();
        assert!(
            e.contains("cannot open") && e.contains("/run/netns/NAME"),
            "{e}"
        );
        let e = netns("/etc/hostname").unwrap_err();
        assert!(e.contains("not a namespace file"), "{e}");
        let e = netns("/proc/self/ns/uts").unwrap_err();
        assert!(e.contains("not a network namespace"), "{e}");
        let e = netns("999999999").unwrap_err();
        assert!(e.contains("no process 999999999"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn cgroup_args_map_to_directories() {
        let m = Path::new("/sys/fs/cgroup");
        let none = |_: &Path| false;
        assert_eq!(
            cgroup_dir("system.slice/nginx.service", m, none),
            Path::new("/sys/fs/cgroup/system.slice/nginx.service")
        );
        assert_eq!(
            cgroup_dir("/sys/fs/cgroup/a", m, none),
            Path::new("/sys/fs/cgroup/a")
        );
        // A hierarchy path as /proc/PID/cgroup shows it.
        let inner = |p: &Path| p == Path::new("/sys/fs/cgroup/system.slice/x.service");
        assert_eq!(
            cgroup_dir("/system.slice/x.service", m, inner),
            Path::new("/sys/fs/cgroup/system.slice/x.service")
        );
        assert_eq!(cgroup_dir("/elsewhere", m, none), Path::new("/elsewhere"));
        // `/` is the hierarchy's root, not the file system's.
        let root = |p: &Path| p == Path::new("/sys/fs/cgroup/");
        assert_eq!(cgroup_dir("/", m, root), Path::new("/sys/fs/cgroup/"));
        assert_eq!(
            hierarchy_path(Path::new("/sys/fs/cgroup/a/b"), m).as_deref(),
            Some("/a/b")
        );
        assert_eq!(hierarchy_path(m, m).as_deref(), Some("/"));
        assert_eq!(hierarchy_path(Path::new("/tmp"), m), None);
    }

    #[test]
    fn subtrees() {
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a"));
        assert!(under("/a/b/c", "/a/b/"));
        assert!(!under("/ab", "/a"));
        assert!(!under("/", "/a"));
        assert!(under("/x", "/"));
    }

    #[test]
    fn bad_cgroups_are_one_line() {
        for arg in ["", "/nonexistent-tracer-cgroup", "/etc/hostname", "/tmp"] {
            let e = cgroup(arg).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains("--cgroup"), "{e}");
        }
    }

    #[test]
    fn describes_the_filters() {
        assert_eq!(describe(None, None), None);
        assert_eq!(
            describe(Some((4026532401, "/run/netns/a".into())), Some("/x".into())).unwrap(),
            "netns 4026532401 (/run/netns/a), cgroup /x (outbound only)"
        );
    }
}
