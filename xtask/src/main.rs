//! Project tasks: `cargo xtask run -- <tracer args>`, `cargo xtask test`, `cargo xtask lint`,
//! `cargo xtask bootstrap`, `cargo xtask bench [--quick]`. Each installs what it needs first
//! (see bootstrap.rs).

mod bench;
mod bootstrap;
mod dist;
mod vm;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use bootstrap::run_ok;

const USAGE: &str = "usage: cargo xtask <command>
  run -- ARGS     build tracer (release) and run it with ARGS, e.g. run -- watch --old 10.0.0.0/8 --new 10.1.0.0/16
  test            lint, unit tests, dist, integration tests against the real kernel (root),
                  bench --quick, vm-test
  lint            cargo fmt --check and clippy -D warnings (workspace and eBPF crate)
  build           build tracer (release)
  dist            static binaries (x86_64, aarch64), SHA256SUMS and the Debian package in target/dist/
  vm-test         run the BPF integration tests in Debian kernels under qemu, once per connect hook
  bootstrap       install build and test tools if missing
  bench [--quick] tracer against no tracing, bpftrace, a /proc/net/tcp loop and ss (root);
                  writes bench/RESULTS.md and bench/results.json (--quick: target/bench-quick/)
  bench --render  rewrite bench/RESULTS.md from bench/results.json (after a change of its text)";

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Now, in UTC, as RFC 3339 to the second (for the records the bench and the VM matrix write).
pub(crate) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root())
        .env("PATH", bootstrap::path_with_cargo_bin());
    c
}

fn build() -> Result<PathBuf> {
    bootstrap::build_tools()?;
    run_ok(cargo().args(["build", "--release", "-p", "tracer"]))?;
    Ok(root().join("target/release/tracer"))
}

/// Release builds of tracer and of xtask itself (the workload agent runs from the release
/// xtask, so the driver's own overhead stays small and the same for every contender).
fn bench(quick: bool) -> Result<()> {
    bootstrap::build_tools()?;
    bootstrap::test_tools()?;
    bootstrap::bench_tools()?;
    run_ok(cargo().args(["build", "--release", "-p", "tracer", "-p", "xtask"]))?;
    let target = root().join("target/release");
    bench::run(&root(), target.join("tracer"), target.join("xtask"), quick)
}

fn lint() -> Result<()> {
    bootstrap::build_tools()?;
    run_ok(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    // The eBPF crate is linted on its own: built together with the workspace, feature
    // unification would give tracer-common its `user` feature (and std) there.
    run_ok(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // no_std without unwinding: checked with panic=abort, in its own target dir so the flag
    // does not invalidate the main build cache.
    run_ok(
        cargo()
            .args([
                "clippy",
                "-p",
                "tracer-ebpf",
                "--target-dir",
                "target/clippy-ebpf",
            ])
            .args(["--", "-D", "warnings"])
            .env("RUSTFLAGS", "-C panic=abort"),
    )?;
    Ok(())
}

fn test() -> Result<()> {
    let t0 = Instant::now();
    bootstrap::build_tools()?;
    bootstrap::test_tools()?;
    lint()?;
    let bin = build()?;
    eprintln!("xtask: unit tests (with the root-only ones a plain `cargo test` leaves out)");
    run_ok(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "tracer-tests",
        "--exclude",
        "tracer-ebpf",
        "--",
        "--include-ignored",
    ]))?;
    eprintln!("xtask: dist (static binaries, SHA256SUMS, Debian package)");
    let dist = dist::dist()?;
    eprintln!(
        "xtask: integration tests against the running kernel ({})",
        bin.display()
    );
    run_ok(
        cargo()
            .args([
                "test",
                "--release",
                "-p",
                "tracer-tests",
                "--",
                "--test-threads=1",
            ])
            .env("TRACER_BIN", &bin)
            .env("TRACER_DIST_DIR", dist::dist_dir()),
    )?;
    eprintln!(
        "xtask: the foundation scenario with the static binary ({})",
        dist.x86_64.display()
    );
    run_ok(
        cargo()
            .args([
                "test",
                "--release",
                "-p",
                "tracer-tests",
                "--test",
                "foundation",
            ])
            .args(["--", "--test-threads=1", "exact_counts"])
            .env("TRACER_BIN", &dist.x86_64),
    )?;
    // The default run uses the state hook auto picks (tp_btf here); the counting tests run
    // once more on the classic tracepoint, the fallback on kernels without tp_btf.
    eprintln!("xtask: counting tests again with --state-hook tracepoint");
    run_ok(
        cargo()
            .args(["test", "--release", "-p", "tracer-tests"])
            .args([
                "--test",
                "foundation",
                "--test",
                "failures",
                "--test",
                "netns",
                "--test",
                "filters",
            ])
            .args(["--test", "attribution", "--", "--test-threads=1"])
            .env("TRACER_BIN", &bin)
            .env("TRACER_TEST_STATE_HOOK", "tracepoint"),
    )?;
    // The bench harness runs on every test so it never rots (quick: a few seconds per phase,
    // results in target/bench-quick/, the committed bench/RESULTS.md is left alone).
    eprintln!("xtask: quick benchmark (harness check)");
    bench(true)?;
    eprintln!("xtask: kernel matrix (other kernels under qemu, every connect hook)");
    vm::vm_test()?;
    eprintln!("xtask: all tests passed in {:.0?}", t0.elapsed());
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("");
    match cmd {
        "bootstrap" => {
            let t0 = Instant::now();
            bootstrap::build_tools()?;
            bootstrap::test_tools()?;
            eprintln!("xtask: tools present ({:.0?})", t0.elapsed());
        }
        "build" => {
            build()?;
        }
        "lint" => lint()?,
        "bench" => match args.get(1).map(String::as_str) {
            None => bench(false)?,
            Some("--quick") => bench(true)?,
            Some("--render") => bench::rerender(&root().join("bench"))?,
            Some(other) => {
                eprintln!("xtask: bench takes only --quick or --render, not '{other}'\n{USAGE}");
                std::process::exit(2);
            }
        },
        // The workload of the bench, run as a subprocess (not for humans).
        "bench-agent" => bench::agent::main(&args[1..])?,
        "test" => test()?,
        "vm-test" => vm::vm_test()?,
        "dist" => {
            dist::dist()?;
        }
        "run" => {
            let bin = build()?;
            let rest: Vec<&String> = args[1..].iter().skip_while(|a| *a == "--").collect();
            let err = Command::new(&bin).args(rest).exec();
            bail!("cannot run {}: {err}", bin.display());
        }
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => {
            eprintln!("xtask: unknown command '{other}'\n{USAGE}");
            std::process::exit(2);
        }
    }
    Ok(())
}
