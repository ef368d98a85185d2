//! `tracer probe`: what this kernel offers, tried by really loading and attaching each hook.
//! Without root it still reports what it can read, says what it cannot try, and exits 2.

use crate::{
    error::{Context, Result},
    kernel::{
        self, Config, dnscap,
        env::Env,
        hooks::{self, ConnectHook, ConnectMode, StateHook, StateMode},
        unsent,
    },
    model::cohort::Sets,
};

pub fn run(args: crate::cli::ProbeArgs) -> Result<i32> {
    let cgroup = args
        .filter
        .cgroup
        .as_deref()
        .map(kernel::filter::cgroup)
        .transpose()
        .usage()?;
    let filters = kernel::filter::Filters {
        netns: args
            .filter
            .netns
            .as_deref()
            .map(kernel::filter::netns)
            .transpose()
            .usage()?,
        cgroup,
    };
    println!("kernel        {}", crate::kernel_release());
    let (lines, caps_ok) = crate::caps::probe_lines();
    for l in lines {
        println!("{l}");
    }
    // What the user lacks is listed above: go on reading what can be read without it.
    let root = caps_ok;
    if caps_ok {
        crate::caps::acquire()?;
    }
    let env = Env::discover();
    if let Some(n) = &filters.netns {
        match &env.filter {
            Ok(_) => println!(
                "filter        netns {} ({}): sockets of that namespace only, checked in the kernel",
                n.inode,
                n.path.display()
            ),
            Err(e) => println!("filter        netns {}: not possible ({e})", n.inode),
        }
    }
    if let Some(c) = &filters.cgroup {
        println!(
            "filter        cgroup {} (id {}): outbound connects of its tasks and below, checked in the kernel; inbound accepts not counted",
            c.path, c.id
        );
    }
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
            println!("tracefs       cannot read it without the capabilities above ({e})");
            println!("hooks         not tried: loading BPF programs needs the capabilities above");
            println!(
                "watch cannot run without the capabilities above: {}",
                crate::caps::fix()
            );
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
        println!("hooks         not tried: loading BPF programs needs the capabilities above");
        println!(
            "watch cannot run without the capabilities above: {}",
            crate::caps::fix()
        );
        return Ok(2);
    }
    let ret_off = *env.syscall_ret.as_ref().unwrap_or(&16);
    let sock = env.sock.clone();
    let parsed = env.btf.parse();
    let aya_btf = parsed.as_ref();
    let cfg = Config {
        sets: Sets::default(),
        ports: vec![],
        connect: ConnectMode::Auto,
        state: StateMode::Auto,
        max_destinations: 1024,
        max_processes: 1024,
        filters: filters.clone(),
        dns_capture: true,
        hooks_only: false,
    };
    // A fresh object per hook tried, so that each is tried on its own.
    let offsets = sock.clone().unwrap_or_default();
    let load = || kernel::load(&cfg, &tp, &offsets, ret_off, 1, &env.filter).env();
    let mut state = None;
    for hook in [StateHook::TpBtf, StateHook::Tracepoint] {
        let mut ebpf = load()?;
        let ready = match (&sock, hook) {
            (Err(e), StateHook::TpBtf) => Err(e.clone()),
            (Ok(o), StateHook::TpBtf) => kernel::tp_btf_ready(o),
            _ => Ok(()),
        };
        match ready.and_then(|()| hooks::attach_state(&mut ebpf, hook, aya_btf)) {
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
        let mut ebpf = load()?;
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
    let mut ebpf = kernel::load(
        &cfg,
        &tp,
        &sock.unwrap_or_default(),
        ret_off,
        1,
        &env.filter,
    )
    .env()?;
    let unsent = env
        .syscall_ret
        .and_then(|_| unsent::attach(&mut ebpf, filters.cgroup.as_ref()));
    match &unsent {
        Ok(()) => println!("unsent hook   {}: available", unsent::NAME),
        Err(why) => println!(
            "unsent hook   not available ({why}): connects failing before a SYN are not counted"
        ),
    }
    let dns = dnscap::attach(&mut ebpf, filters.cgroup.as_ref());
    match &dns {
        Ok(()) => println!("dns hook      {}: available", dnscap::NAME),
        Err(why) => println!(
            "dns hook      not available ({why}): DNS answers per process are not captured"
        ),
    }
    let connect = chosen.unwrap_or(ConnectHook::Derived);
    println!(
        "watch would use: connect={} state={} unsent={} dns={}",
        connect.name(),
        state.name(),
        if unsent.is_ok() {
            "cgroup+syscall"
        } else {
            "none"
        },
        if dns.is_ok() { "cgroup_skb" } else { "none" }
    );
    Ok(0)
}
