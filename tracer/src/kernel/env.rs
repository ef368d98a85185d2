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
    /// Where aya parses the BTF from, when it could be read.
    pub btf: BtfSource,
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
        let btf = BtfSource(raw.is_ok().then(|| path.clone()));
        drop(raw);
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

/// The kernel's BTF file (from `TRACER_BTF_PATH` when set), parsed by aya on demand.
pub struct BtfSource(Option<String>);

impl BtfSource {
    /// The parsed BTF for attaching `tp_btf` and fentry programs. Parsed after the object is
    /// loaded: aya's loader parses a copy of its own, and two at once (~15 MiB each) would
    /// double tracer's peak memory.
    pub fn parse(&self) -> Option<aya::Btf> {
        let path = self.0.as_deref()?;
        if Path::new(path) == Path::new("/sys/kernel/btf/vmlinux") {
            aya::Btf::from_sys_fs().ok()
        } else {
            aya::Btf::parse_file(path, aya::Endianness::default()).ok()
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
