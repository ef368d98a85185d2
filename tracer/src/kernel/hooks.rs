//! The table of connect hooks, best first, each with what it needs; the one used is chosen by
//! really loading and attaching, not by guessing from the kernel version.

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, KProbe, TracePoint},
};
use tracer_common::{CONNECT_DERIVED, CONNECT_FENTRY, CONNECT_KPROBE};

/// How connect attempts are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectHook {
    /// fentry on `tcp_connect`: cheapest, needs BTF and a kernel that allows tracing programs.
    Fentry,
    /// kprobe on `tcp_connect`: needs kprobes built in.
    Kprobe,
    /// The `CLOSE -> SYN_SENT` transition of the state tracepoint: always there.
    Derived,
}

/// `--connect-hook`: one hook forced, or the best that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConnectMode {
    Auto,
    Fentry,
    Kprobe,
    Derived,
}

impl ConnectHook {
    pub const ALL: [ConnectHook; 3] = [
        ConnectHook::Fentry,
        ConnectHook::Kprobe,
        ConnectHook::Derived,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConnectHook::Fentry => "fentry",
            ConnectHook::Kprobe => "kprobe",
            ConnectHook::Derived => "derived",
        }
    }

    pub fn source(self) -> u32 {
        (match self {
            ConnectHook::Fentry => CONNECT_FENTRY,
            ConnectHook::Kprobe => CONNECT_KPROBE,
            ConnectHook::Derived => CONNECT_DERIVED,
        }) as u32
    }

    fn program(self) -> Option<&'static str> {
        match self {
            ConnectHook::Fentry => Some("tcp_connect_fentry"),
            ConnectHook::Kprobe => Some("tcp_connect_kprobe"),
            ConnectHook::Derived => None,
        }
    }

    /// Candidates in order of preference for a mode.
    pub fn candidates(mode: ConnectMode) -> &'static [ConnectHook] {
        match mode {
            ConnectMode::Auto => &Self::ALL,
            ConnectMode::Fentry => &[ConnectHook::Fentry],
            ConnectMode::Kprobe => &[ConnectHook::Kprobe],
            ConnectMode::Derived => &[ConnectHook::Derived],
        }
    }
}

/// How state transitions are seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateHook {
    /// BTF-typed tracepoint: no trace record to fill and copy (kernel 5.5+ with BTF).
    TpBtf,
    /// The classic tracepoint, field offsets from tracefs.
    Tracepoint,
}

/// `--state-hook`: one forced, or the best that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StateMode {
    Auto,
    #[value(name = "tp_btf")]
    TpBtf,
    Tracepoint,
}

impl StateHook {
    pub fn name(self) -> &'static str {
        match self {
            StateHook::TpBtf => "tp_btf",
            StateHook::Tracepoint => "tracepoint",
        }
    }

    fn program(self) -> &'static str {
        match self {
            StateHook::TpBtf => "inet_sock_set_state_btf",
            StateHook::Tracepoint => "inet_sock_set_state",
        }
    }

    /// Candidates in order of preference for a mode.
    pub fn candidates(mode: StateMode) -> &'static [StateHook] {
        match mode {
            StateMode::Auto => &[StateHook::TpBtf, StateHook::Tracepoint],
            StateMode::TpBtf => &[StateHook::TpBtf],
            StateMode::Tracepoint => &[StateHook::Tracepoint],
        }
    }
}

/// One line from any error chain, without the verifier's log (which can be pages long).
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    let joined = parts.join(": ");
    let cut = joined.split(". Verifier output").next().unwrap_or(&joined);
    cut.lines().next().unwrap_or("").to_string()
}

/// Say why a hook failed in the operator's terms, keeping the kernel's own words.
fn explain(hook: ConnectHook, raw: String) -> String {
    let why = match hook {
        ConnectHook::Fentry if raw.contains("Operation not permitted") => {
            "the kernel refuses fentry programs here (EPERM: lockdown or no BPF trampoline)"
        }
        ConnectHook::Kprobe if raw.contains("kprobe/type") => {
            "kprobes are not enabled in this kernel (no kprobe event source)"
        }
        _ => return raw,
    };
    format!("{why}; {raw}")
}

/// Load and attach one connect hook. `btf` is needed by fentry and for the offsets.
pub fn attach_connect(
    ebpf: &mut Ebpf,
    hook: ConnectHook,
    btf: Option<&Btf>,
    has_offsets: bool,
) -> Result<(), String> {
    let Some(name) = hook.program() else {
        return Ok(());
    };
    if !has_offsets {
        return Err("no kernel BTF to find struct sock offsets".into());
    }
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    attach_program(prog, hook, btf).map_err(|e| explain(hook, e))
}

fn attach_program(
    prog: &mut aya::programs::Program,
    hook: ConnectHook,
    btf: Option<&Btf>,
) -> Result<(), String> {
    match hook {
        ConnectHook::Fentry => {
            let btf = btf.ok_or("no kernel BTF")?;
            let p: &mut FEntry = prog.try_into().map_err(|e| one_line(&e))?;
            p.load("tcp_connect", btf).map_err(|e| one_line(&e))?;
            if let Err(e) = p.attach() {
                // A loaded program that will never run should not stay in the kernel.
                let _ = p.unload();
                return Err(one_line(&e));
            }
        }
        ConnectHook::Kprobe => {
            let p: &mut KProbe = prog.try_into().map_err(|e| one_line(&e))?;
            p.load().map_err(|e| one_line(&e))?;
            if let Err(e) = p.attach("tcp_connect", 0) {
                let _ = p.unload();
                return Err(one_line(&e));
            }
        }
        ConnectHook::Derived => {}
    }
    Ok(())
}

/// Load and attach the state program as `hook`. `tp_btf` needs the kernel's BTF.
pub fn attach_state(ebpf: &mut Ebpf, hook: StateHook, btf: Option<&Btf>) -> Result<(), String> {
    let name = hook.program();
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    match hook {
        StateHook::TpBtf => {
            let btf = btf.ok_or("no kernel BTF")?;
            let p: &mut BtfTracePoint = prog.try_into().map_err(|e| one_line(&e))?;
            p.load("inet_sock_set_state", btf)
                .map_err(|e| one_line(&e))?;
            if let Err(e) = p.attach() {
                let _ = p.unload();
                return Err(one_line(&e));
            }
        }
        StateHook::Tracepoint => {
            let p: &mut TracePoint = prog.try_into().map_err(|e| one_line(&e))?;
            p.load().map_err(|e| one_line(&e))?;
            p.attach("sock", "inet_sock_set_state")
                .map_err(|e| one_line(&e))?;
        }
    }
    Ok(())
}
