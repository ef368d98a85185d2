//! Hooks for connects that fail before a SYN exists (no route, no free local port): the cgroup
//! connect hooks on the root of the cgroup v2 hierarchy and the `syscalls:sys_exit_connect`
//! tracepoint. Optional: without them the other counts are unchanged, only these are missing.

use std::{
    ffi::CString,
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, TracePoint},
};

use super::{hooks::one_line, tracefs::Tracefs};

const EVENT: &str = "events/syscalls/sys_exit_connect/format";
/// What the run reports as the hook in use.
pub const NAME: &str = "cgroup connect4/6 + syscalls:sys_exit_connect";

/// Offset of `ret` in the connect syscall's exit record, from its tracefs format.
pub fn ret_offset(fs: &Tracefs) -> Result<u32, String> {
    let path = Path::new(&fs.root).join(EVENT);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("no syscalls:sys_exit_connect tracepoint ({e}; needs CONFIG_FTRACE_SYSCALLS=y)")
    })?;
    parse_ret_offset(&text)
}

pub fn parse_ret_offset(text: &str) -> Result<u32, String> {
    super::tracefs::fields(text)
        .find_map(|(name, offset, _)| (name == "ret").then_some(offset))
        .ok_or_else(|| "syscalls:sys_exit_connect has no `ret` field".into())
}

/// The cgroup v2 root as the kernel's mount table lists it.
pub(super) fn mounted_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// An open handle on the cgroup v2 root. Without a cgroup2 mount (a v1-only host), mount it
/// privately, open it, and detach the mount again: the open directory is all attaching needs.
pub(super) fn open_root() -> Result<File, String> {
    if let Some(dir) = mounted_root() {
        return File::open(&dir).map_err(|e| format!("cannot open {}: {e}", dir.display()));
    }
    let dir = std::env::temp_dir().join(format!("tracer-cgroup2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Err(e) = super::mount_fs("cgroup2", &dir) {
        let _ = std::fs::remove_dir(&dir);
        return Err(format!("no cgroup2 mount and mounting one failed ({e})"));
    }
    let root = File::open(&dir).map_err(|e| format!("cannot open {}: {e}", dir.display()));
    let target = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: detach the mount we made; the open directory keeps the cgroup.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let _ = std::fs::remove_dir(&dir);
    root
}

/// Where the cgroup programs attach: the `--cgroup` directory (they then see only its tasks),
/// else the root.
pub(super) fn open_at(cgroup: Option<&super::filter::Cgroup>) -> Result<File, String> {
    match cgroup {
        Some(c) => c
            .file
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", c.dir.display())),
        None => open_root(),
    }
}

/// The cgroup connect programs: shared by this module (TCP notes) and the DNS capture (owners
/// of UDP sockets to port 53), one program per family so a connect runs one program, not two.
pub(super) const CONNECT_PROGS: [&str; 2] = ["connect4", "connect6"];

/// Load and attach the three programs, or say why not (then none stays attached).
pub fn attach(ebpf: &mut Ebpf, cgroup: Option<&super::filter::Cgroup>) -> Result<(), String> {
    let root = open_at(cgroup)?;
    let r = attach_all(ebpf, &root);
    if r.is_err() {
        // Unloading detaches too: a half-attached set would count attempts it cannot finish.
        for name in CONNECT_PROGS {
            if let Some(p) = ebpf.program_mut(name)
                && let Ok(p) = <&mut CgroupSockAddr>::try_from(p)
            {
                let _ = p.unload();
            }
        }
        if let Some(p) = ebpf.program_mut("sys_exit_connect")
            && let Ok(p) = <&mut TracePoint>::try_from(p)
        {
            let _ = p.unload();
        }
    }
    r
}

/// Load and attach cgroup sock_addr programs on the root cgroup (also the DNS capture's). A
/// program already loaded was attached by the other reader of the shared connect hooks.
pub(super) fn attach_sock_addr(ebpf: &mut Ebpf, root: &File, names: &[&str]) -> Result<(), String> {
    for name in names {
        let p: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing from the object"))?
            .try_into()
            .map_err(|e| one_line(&e))?;
        if p.fd().is_ok() {
            continue;
        }
        p.load().map_err(|e| format!("{name}: {}", one_line(&e)))?;
        // A BPF link (Linux 5.7+) takes no flags and always runs beside other tools' hooks on
        // the same cgroup; the link is gone when tracer exits, however it exits.
        p.attach(root, CgroupAttachMode::Single)
            .map_err(|e| format!("{name}: {}", one_line(&e)))?;
    }
    Ok(())
}

fn attach_all(ebpf: &mut Ebpf, root: &File) -> Result<(), String> {
    attach_sock_addr(ebpf, root, &CONNECT_PROGS)?;
    let p: &mut TracePoint = ebpf
        .program_mut("sys_exit_connect")
        .ok_or("program sys_exit_connect missing from the object")?
        .try_into()
        .map_err(|e| one_line(&e))?;
    p.load().map_err(|e| one_line(&e))?;
    p.attach("syscalls", "sys_exit_connect")
        .map_err(|e| one_line(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ret_in_the_6_18_format() {
        let text = "name: sys_exit_connect\nID: 2229\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n";
        assert_eq!(parse_ret_offset(text), Ok(16));
        assert!(parse_ret_offset("format:\n").is_err());
    }
}
