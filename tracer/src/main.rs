//! `tracer`: kernel-side TCP connection counting for moves from old to new addresses.

mod caps;
mod cli;
mod dns;
mod dns_answer;
mod error;
mod generate;
mod kernel;
mod metrics;
mod model;
mod ndjson;
mod preflight;
mod probe;
mod report;
mod run;
mod session;
mod sink;
#[cfg(test)]
mod testutil;
mod tui;
mod watch;

use clap::Parser;

/// Snapshot buffers (MiBs each at 60k destinations) are mapped and unmapped whole, never kept
/// in the heap once freed: glibc's moving threshold would otherwise keep freed ones and grow
/// the peak memory by a snapshot (musl does this already). What is smaller stays in the heap
/// once freed instead of going back at once: the per-interval vectors below 1 MiB would
/// otherwise be faulted in afresh every interval.
fn big_buffers_go_back() {
    #[cfg(target_env = "gnu")]
    // SAFETY: plain settings, made before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

fn main() {
    // No backtraces for users: a panic is one line and exit code 2.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("tracer: internal error: {msg}{at} (please report it)");
    }));
    big_buffers_go_back();
    caps::lower();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("tracer: {}", cli::one_line_error(&e));
            std::process::exit(2);
        }
    };
    if matches!(cli.command, cli::Command::Watch(_) | cli::Command::Probe(_)) {
        caps::reexec_privileged();
    }
    let result = std::panic::catch_unwind(|| match cli.command {
        cli::Command::Watch(args) => watch::run(*args),
        cli::Command::Probe(args) => probe::run(args),
        cli::Command::Report(args) => report::run(args),
        cli::Command::Generate { dir } => generate::run(&dir),
        cli::Command::Preflight(args) => preflight::run(args),
    });
    match result {
        Ok(Ok(code)) => std::process::exit(code),
        Ok(Err(e)) => {
            eprintln!("tracer: {e}");
            std::process::exit(e.exit_code());
        }
        Err(_) => std::process::exit(2),
    }
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
