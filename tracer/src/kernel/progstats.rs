//! Per-program kernel statistics: runs the kernel skipped (recursion on the same CPU, i.e. lost
//! events) and, with `kernel.bpf_stats_enabled=1`, run time and run count. aya 0.14 does not
//! expose these fields, so they are read with BPF_OBJ_GET_INFO_BY_FD directly.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya_obj::generated::bpf_prog_info;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

pub fn read(fd: BorrowedFd<'_>) -> std::io::Result<ProgStats> {
    // SAFETY: a plain C struct for which all-zero is the documented "ask for nothing" value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_fd().as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: attr points to a live InfoAttr whose `info` points to a live bpf_prog_info of
    // the announced size; the kernel writes at most that many bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ProgStats {
        run_time_ns: info.run_time_ns,
        run_cnt: info.run_cnt,
        recursion_misses: info.recursion_misses,
    })
}
