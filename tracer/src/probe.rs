//! `tracer probe`: what this kernel offers, tried by really loading and attaching each hook.

use std::path::Path;

use crate::{
    Fatal,
    kernel::{
        self, Config,
        hooks::{self, ConnectHook, ConnectMode},
        presyn, tracefs,
    },
    model::cohort::Sets,
};

pub fn run() -> Result<i32, Fatal> {
    println!("kernel        {}", crate::kernel_release());
    let (lines, caps_ok) = crate::caps::probe_lines();
    for l in lines {
        println!("{l}");
    }
    if !caps_ok {
        println!("watch cannot run without the capabilities above");
        return Ok(2);
    }
    crate::caps::acquire()?;
    let btf_path = kernel::btf_path();
    let btf_raw = std::fs::read(&btf_path);
    let sock = match &btf_raw {
        Ok(raw) => kernel::sock_offsets(raw),
        Err(e) => Err(format!("no BTF at {btf_path} ({e})")),
    };
    match &sock {
        Ok(_) => println!("btf           yes ({btf_path})"),
        Err(e) => println!("btf           no: {e}"),
    }
    let fs = match tracefs::ensure() {
        Ok(fs) => {
            let how = if fs.mounted_by_us {
                " (was not mounted: mounted it)"
            } else {
                ""
            };
            println!("tracefs       {}{how}", fs.root);
            fs
        }
        Err(e) => {
            println!("tracefs       no: {e}");
            println!("state hook    tracepoint: not available");
            println!("watch cannot run on this kernel");
            return Ok(2);
        }
    };
    let tp = tracefs::offsets(&fs)?;
    let ret = presyn::ret_offset(&fs);
    let ret_off = *ret.as_ref().unwrap_or(&16);
    let cfg = Config {
        sets: Sets::default(),
        ports: vec![],
        connect: ConnectMode::Auto,
        max_destinations: 1024,
        max_processes: 1024,
    };
    let aya_btf = if btf_raw.is_ok() && Path::new(&btf_path) == Path::new("/sys/kernel/btf/vmlinux")
    {
        aya::Btf::from_sys_fs().ok()
    } else {
        None
    };
    let mut chosen = None;
    for hook in ConnectHook::ALL {
        // A fresh object per hook, so that each is tried on its own.
        let mut ebpf = kernel::load(&cfg, &tp, &sock.clone().unwrap_or_default(), ret_off, 1)?;
        match hooks::attach_connect(&mut ebpf, hook, aya_btf.as_ref(), sock.is_ok()) {
            Ok(()) => {
                let how = if hook == ConnectHook::Derived {
                    " (from CLOSE -> SYN_SENT)"
                } else {
                    " on tcp_connect"
                };
                println!("connect hook  {}: available{how}", hook.name());
                chosen.get_or_insert(hook);
            }
            Err(why) => println!("connect hook  {}: not available ({why})", hook.name()),
        }
    }
    let mut ebpf = kernel::load(&cfg, &tp, &sock.unwrap_or_default(), ret_off, 1)?;
    match hooks::attach_state(&mut ebpf) {
        Ok(()) => println!("state hook    tracepoint sock:inet_sock_set_state: available"),
        Err(why) => {
            println!("state hook    tracepoint sock:inet_sock_set_state: not available ({why})");
            println!("watch cannot run on this kernel");
            return Ok(2);
        }
    }
    let unsent = ret.and_then(|_| presyn::attach(&mut ebpf));
    match &unsent {
        Ok(()) => println!("unsent hook   {}: available", presyn::NAME),
        Err(why) => println!(
            "unsent hook   not available ({why}): connects failing before a SYN are not counted"
        ),
    }
    let connect = chosen.unwrap_or(ConnectHook::Derived);
    println!(
        "watch would use: connect={} state=tracepoint unsent={}",
        connect.name(),
        if unsent.is_ok() {
            "cgroup+syscall"
        } else {
            "none"
        }
    );
    Ok(0)
}
