//! `tracer probe`: what this kernel offers, tried by really loading and attaching each hook.

use std::path::Path;

use crate::{
    Fatal,
    kernel::{
        self, Config,
        hooks::{self, ConnectHook, ConnectMode, StateHook, StateMode},
        presyn, tracefs,
    },
    model::cohort::Sets,
};

pub fn run() -> Result<i32, Fatal> {
    crate::require_root()?;
    println!("kernel        {}", crate::kernel_release());
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
        state: StateMode::Auto,
        max_destinations: 1024,
        max_processes: 1024,
    };
    let aya_btf = if btf_raw.is_ok() && Path::new(&btf_path) == Path::new("/sys/kernel/btf/vmlinux")
    {
        aya::Btf::from_sys_fs().ok()
    } else {
        None
    };
    let mut state = None;
    for hook in [StateHook::TpBtf, StateHook::Tracepoint] {
        let mut ebpf = kernel::load(&cfg, &tp, &sock.clone().unwrap_or_default(), ret_off, 1)?;
        let ready = match (&sock, hook) {
            (Err(e), StateHook::TpBtf) => Err(e.clone()),
            (Ok(o), StateHook::TpBtf) => kernel::tp_btf_ready(o),
            _ => Ok(()),
        };
        match ready.and_then(|()| hooks::attach_state(&mut ebpf, hook, aya_btf.as_ref())) {
            Ok(()) => {
                println!(
                    "state hook    {} sock:inet_sock_set_state: available",
                    hook.name()
                );
                state.get_or_insert(hook);
            }
            Err(why) => println!(
                "state hook    {} sock:inet_sock_set_state: not available ({why})",
                hook.name()
            ),
        }
    }
    let Some(state) = state else {
        println!("watch cannot run on this kernel");
        return Ok(2);
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
    let unsent = ret.and_then(|_| presyn::attach(&mut ebpf));
    match &unsent {
        Ok(()) => println!("unsent hook   {}: available", presyn::NAME),
        Err(why) => println!(
            "unsent hook   not available ({why}): connects failing before a SYN are not counted"
        ),
    }
    let connect = chosen.unwrap_or(ConnectHook::Derived);
    println!(
        "watch would use: connect={} state={} unsent={}",
        connect.name(),
        state.name(),
        if unsent.is_ok() {
            "cgroup+syscall"
        } else {
            "none"
        }
    );
    Ok(0)
}
