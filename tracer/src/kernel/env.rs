//! What this kernel offers, found once and used by both `watch` and `probe`: tracefs and the
//! tracepoint's record layout, the BTF (from `TRACER_BTF_PATH` when set) with the `struct sock`
//! offsets, and the offset of `sys_exit_connect`'s return value.

use std::path::Path;

use tracer_common::{Filter, SockOffsets, TpOffsets};

use super::{btf_path, filter_offsets, sock_offsets, tracefs, unsent};

pub struct Env {
    /// tracefs (mounted if it was not) and the state tracepoint's field offsets.
    pub tracefs: Result<(tracefs::Tracefs, TpOffsets), String>,
    pub btf_path: String,
    /// `struct sock` offsets from BTF (fentry/kprobe, failure reasons).
    pub sock: Result<SockOffsets, String>,
    /// What `--netns` reads (socket and task to namespace inode), from BTF.
    pub filter: Result<Filter, String>,
    /// The parsed BTF for attaching fentry programs.
    pub btf: Option<aya::Btf>,
    /// Offset of `ret` in `syscalls:sys_exit_connect`.
    pub syscall_ret: Result<u32, String>,
}

impl Env {
    pub fn discover() -> Env {
        let path = btf_path();
        let raw = std::fs::read(&path);
        let sock = match &raw {
            Ok(raw) => sock_offsets(raw),
            Err(e) => Err(format!("no kernel BTF at {path} ({e})")),
        };
        let filter = match &raw {
            Ok(raw) => filter_offsets(raw),
            Err(e) => Err(format!("no kernel BTF at {path} ({e})")),
        };
        let btf = match &raw {
            Ok(_) if Path::new(&path) == Path::new("/sys/kernel/btf/vmlinux") => {
                aya::Btf::from_sys_fs().ok()
            }
            Ok(_) => aya::Btf::parse_file(&path, aya::Endianness::default()).ok(),
            Err(_) => None,
        };
        let tracefs = tracefs::ensure().and_then(|fs| {
            let tp = tracefs::offsets(&fs)?;
            Ok((fs, tp))
        });
        let syscall_ret = match &tracefs {
            Ok((fs, _)) => unsent::ret_offset(fs),
            Err(e) => Err(e.clone()),
        };
        Env {
            tracefs,
            btf_path: path,
            sock,
            filter,
            btf,
            syscall_ret,
        }
    }
}

/// Does this kernel charge BPF maps to RLIMIT_MEMLOCK? Only before 5.11 (memcg accounting).
pub fn needs_memlock(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 11),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memlock_only_before_5_11() {
        assert!(super::needs_memlock("5.10.0-28-amd64"));
        assert!(super::needs_memlock("4.19.0"));
        assert!(!super::needs_memlock("5.11.0"));
        assert!(!super::needs_memlock("6.1.0-27-amd64"));
        assert!(!super::needs_memlock("6.18.44-fc-v66"));
        assert!(super::needs_memlock("garbage"));
    }
}
