//! `tracer probe`: what this kernel offers, tried by really loading and attaching each hook.
//! Without root it still reports what it can read, says what it cannot try, and exits 2.

use crate::{
    error::{Context, Result},
    kernel::{
        self, Config,
        env::Env,
        hooks::{self, ConnectHook, ConnectMode},
        unsent,
    },
    model::cohort::Sets,
};

pub fn run() -> Result<i32> {
    println!("kernel        {}", crate::kernel_release());
    let root = crate::is_root();
    let env = Env::discover();
    match &env.sock {
        Ok(_) => println!("btf           yes ({})", env.btf_path),
        Err(e) => println!("btf           no: {e}"),
    }
    let tp = match &env.tracefs {
        Ok((fs, tp)) => {
            let how = if fs.mounted_by_us {
                " (was not mounted: mounted it)"
            } else {
                ""
            };
            println!("tracefs       {}{how}", fs.root);
            *tp
        }
        Err(e) if !root => {
            println!("tracefs       cannot read it without root ({e})");
            println!(
                "hooks         not tried: loading BPF programs needs root (CAP_BPF, CAP_PERFMON)"
            );
            println!("watch needs root: run `sudo tracer probe` to see which hooks it would use");
            return Ok(2);
        }
        Err(e) => {
            println!("tracefs       no: {e}");
            println!("state hook    tracepoint: not available");
            println!("watch cannot run on this kernel");
            return Ok(2);
        }
    };
    if !root {
        println!("hooks         not tried: loading BPF programs needs root (CAP_BPF, CAP_PERFMON)");
        println!("watch needs root: run `sudo tracer probe` to see which hooks it would use");
        return Ok(2);
    }
    let ret_off = *env.syscall_ret.as_ref().unwrap_or(&16);
    let sock = env.sock.clone();
    let aya_btf = env.btf.as_ref();
    let cfg = Config {
        sets: Sets::default(),
        ports: vec![],
        connect: ConnectMode::Auto,
        max_destinations: 1024,
        max_processes: 1024,
    };
    let mut chosen = None;
    for hook in ConnectHook::ALL {
        // A fresh object per hook, so that each is tried on its own.
        let mut ebpf =
            kernel::load(&cfg, &tp, &sock.clone().unwrap_or_default(), ret_off, 1).env()?;
        match hooks::attach_connect(&mut ebpf, hook, aya_btf, sock.is_ok()) {
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
    let mut ebpf = kernel::load(&cfg, &tp, &sock.unwrap_or_default(), ret_off, 1).env()?;
    match hooks::attach_state(&mut ebpf) {
        Ok(()) => println!("state hook    tracepoint sock:inet_sock_set_state: available"),
        Err(why) => {
            println!("state hook    tracepoint sock:inet_sock_set_state: not available ({why})");
            println!("watch cannot run on this kernel");
            return Ok(2);
        }
    }
    let unsent = env.syscall_ret.and_then(|_| unsent::attach(&mut ebpf));
    match &unsent {
        Ok(()) => println!("unsent hook   {}: available", unsent::NAME),
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
