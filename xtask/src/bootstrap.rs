//! Installs what building and testing need on a fresh machine, and nothing when it is all there
//! (then it costs well under a second). Every step says what it installs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGE: &str = "llvm-22-dev";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the integration tests use, with the binary that shows each is present.
/// (`prometheus`: the real server the metrics end-to-end test scrapes tracer with.)
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("nftables", "nft"),
    ("tmux", "tmux"),
    ("prometheus", "prometheus"),
    // promtool (in Debian's prometheus package) tests the shipped rules; openssl makes the
    // metrics test's certificates, htpasswd the bcrypt hash of its web config.
    ("prometheus", "promtool"),
    ("openssl", "openssl"),
    ("apache2-utils", "htpasswd"),
    // The reconciliation test removes per-socket records from a live map to make a missed close.
    ("bpftool", "bpftool"),
    // The DNS capture test: a real resolver and three real stub resolvers (glibc via getent and
    // curl, c-ares in Node, Go's own resolver built at test time).
    ("dnsmasq-base", "dnsmasq"),
    ("curl", "curl"),
    ("nodejs", "node"),
    ("golang-go", "go"),
    // The resolver tests: NSD authoritative for a test zone, Unbound caches in front of it,
    // and dig as the independent client.
    ("nsd", "nsd"),
    ("unbound", "unbound"),
    ("bind9-dnsutils", "dig"),
    // The real-software failover test: nginx as the backends and as a reverse proxy with an
    // upstream keepalive pool, a JVM client run from its source file (the single-file source
    // launcher needs the JDK's compiler module). dnsmasq, Node and curl are listed above.
    ("nginx", "nginx"),
    ("openjdk-17-jdk-headless", "javac"),
];

/// What `cargo xtask dist` and its test use: Debian's cross toolchain links the aarch64 binary,
/// `file` checks both are static, setcap sets the package's file capabilities, podman (with
/// runc: crun refuses this host's hybrid cgroup layout) builds and runs the image.
const DIST_PACKAGES: &[(&str, &str)] = &[
    ("gcc-aarch64-linux-gnu", "aarch64-linux-gnu-gcc"),
    // The C headers the cross compiler needs for ring (rustls) in the aarch64 build (a file,
    // not a binary: the package has none).
    (
        "libc6-dev-arm64-cross",
        "/usr/aarch64-linux-gnu/include/stdint.h",
    ),
    // The C parts of ring (rustls) for the static x86_64 build.
    ("musl-tools", "musl-gcc"),
    ("file", "file"),
    ("libcap2-bin", "setcap"),
    ("podman", "podman"),
    ("runc", "runc"),
    // systemd-analyze verify checks the unit the package ships.
    ("systemd", "systemd-analyze"),
    ("man-db", "man"),
];
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages only `cargo xtask bench` needs: the contender bpftrace, and bpftool to name
/// BPF programs in the per-program cost table.
const BENCH_PACKAGES: &[(&str, &str)] = &[("bpftrace", "bpftrace"), ("bpftool", "bpftool")];

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

pub fn run_ok(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn cargo_home_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// A binary on PATH, or in cargo's bin directory (which a non-login shell may lack on PATH).
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            cargo_home_bin(),
            PathBuf::from("/usr/sbin"),
            PathBuf::from("/sbin"),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, packages: &[&str]) -> Result<()> {
        if std::env::var_os("XTASK_NO_INSTALL").is_some() {
            bail!(
                "missing Debian packages {packages:?} and XTASK_NO_INSTALL is set: install them with apt-get"
            );
        }
        if !self.updated {
            say("running apt-get update (once)");
            run_ok(Command::new("apt-get").args(["update", "-qq"])).context(
                "apt-get update failed: are you root with network access to the Debian mirrors?",
            )?;
            self.updated = true;
        }
        say(&format!(
            "installing Debian packages: {}",
            packages.join(" ")
        ));
        run_ok(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| format!("apt-get install {} failed", packages.join(" ")))
    }
}

fn nightly_sysroot() -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Everything needed to build the eBPF object: nightly with rust-src, and bpf-linker.
pub fn build_tools() -> Result<()> {
    let mut apt = Apt { updated: false };
    let sysroot = match nightly_sysroot() {
        Some(s) => s,
        None => {
            say("installing the nightly toolchain (the eBPF crate needs -Z build-std)");
            run_ok(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))
            .context("rustup could not install nightly")?;
            nightly_sysroot().context("nightly installed but rustc +nightly does not run")?
        }
    };
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        say("installing rust-src for nightly (needed to build core for the BPF target)");
        run_ok(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("rustup could not add rust-src to nightly")?;
    }
    if find_bin("bpf-linker").is_none() {
        if !Path::new(LLVM_PREFIX).join("bin/llvm-config").is_file() {
            apt.install(&[LLVM_PACKAGE])?;
        }
        say(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        ));
        run_ok(
            Command::new("cargo")
                .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )
        .context("cargo install bpf-linker failed")?;
    }
    Ok(())
}

/// The Debian tools the integration tests drive.
pub fn test_tools() -> Result<()> {
    install_missing(TEST_PACKAGES)
}

/// The Debian tools the benchmark compares against (installed by `cargo xtask bench` only).
pub fn bench_tools() -> Result<()> {
    install_missing(BENCH_PACKAGES)
}

fn install_missing(packages: &[(&str, &str)]) -> Result<()> {
    let mut apt = Apt { updated: false };
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, bin)| match bin.strip_prefix('/') {
            Some(_) => !std::path::Path::new(bin).exists(),
            None => find_bin(bin).is_none(),
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        apt.install(&missing)?;
    }
    Ok(())
}

/// The Debian packages of DIST_PACKAGES, and cargo-deb (a maintained packager) from crates.io.
pub fn dist_tools() -> Result<()> {
    install_missing(DIST_PACKAGES)?;
    if find_bin("cargo-deb").is_none() {
        say(&format!(
            "building cargo-deb {CARGO_DEB_VERSION} (a few minutes, once)"
        ));
        run_ok(Command::new("cargo").args([
            "install",
            "cargo-deb",
            "--locked",
            "--version",
            CARGO_DEB_VERSION,
        ]))
        .context("cargo install cargo-deb failed")?;
    }
    Ok(())
}

/// What `cargo xtask vm-test` needs: qemu, a static busybox for the guest, and package lists
/// for `apt-get download` of the guest kernels.
pub fn vm_tools() -> Result<()> {
    let mut apt = Apt { updated: false };
    let lists_empty = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            !d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(true);
    let mut missing = Vec::new();
    if find_bin("qemu-system-x86_64").is_none() {
        missing.push("qemu-system-x86");
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("busybox-static");
    }
    if !missing.is_empty() {
        apt.install(&missing)?;
    } else if lists_empty {
        say("running apt-get update (package lists are empty; needed to download guest kernels)");
        run_ok(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    Ok(())
}

/// PATH with cargo's bin directory added, so a fresh bpf-linker is found by the build.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    let bin = cargo_home_bin();
    if !dirs.contains(&bin) {
        dirs.push(bin);
    }
    std::env::join_paths(dirs).unwrap_or_default()
}
