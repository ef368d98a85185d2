//! `cargo xtask dist`: what an operator installs, in target/dist/. Static musl binaries for
//! x86_64 and aarch64 with the eBPF object embedded (aya needs no libbpf or libelf, so nothing
//! dynamic is left: checked with `file`), SHA256SUMS, and the Debian package (cargo-deb) with
//! the man pages and shell completions tracer generates from its own command line.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, cargo, root};

pub const X86_64: &str = "x86_64-unknown-linux-musl";
pub const AARCH64: &str = "aarch64-unknown-linux-musl";
/// Debian's cross toolchain: the linker for aarch64, and the C compiler should a dependency
/// build C code.
const AARCH64_GCC: &str = "aarch64-linux-gnu-gcc";

fn say(msg: &str) {
    eprintln!("xtask dist: {msg}");
}

pub fn dist_dir() -> PathBuf {
    root().join("target/dist")
}

/// What `cargo xtask dist` made (all of it is in `dist_dir()`).
pub struct Dist {
    /// The static x86_64 binary (the one the VM matrix boots).
    pub x86_64: PathBuf,
}

/// The rustup target for `triple`, added when missing.
pub fn rust_target(triple: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup")?;
    if !String::from_utf8_lossy(&installed.stdout).contains(triple) {
        say(&format!("installing the {triple} target"));
        bootstrap::run_ok(Command::new("rustup").args(["target", "add", triple]))?;
    }
    Ok(())
}

/// A static release build of tracer for `triple` (shared with `vm-test`, which boots the
/// x86_64 one): target/<triple>/release/tracer.
pub fn static_binary(triple: &str) -> Result<PathBuf> {
    // The cross and musl C compilers (ring under rustls compiles C for the target).
    bootstrap::dist_tools()?;
    rust_target(triple)?;
    let mut c = cargo();
    c.args(["build", "--release", "-p", "tracer", "--target", triple]);
    if triple == AARCH64 {
        let env = triple.replace('-', "_");
        c.env(
            format!("CARGO_TARGET_{}_LINKER", env.to_uppercase()),
            AARCH64_GCC,
        )
        .env(format!("CC_{env}"), AARCH64_GCC);
    } else {
        // ring (under rustls) compiles C for the target: musl's own gcc wrapper.
        c.env(format!("CC_{}", triple.replace('-', "_")), "musl-gcc");
    }
    bootstrap::run_ok(&mut c)?;
    let bin = root().join(format!("target/{triple}/release/tracer"));
    check_static(&bin, triple)?;
    Ok(bin)
}

/// `file` must say the binary is for the right machine and statically linked.
fn check_static(bin: &Path, triple: &str) -> Result<()> {
    let out = Command::new("file").arg("-b").arg(bin).output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let machine = if triple == AARCH64 {
        "ARM aarch64"
    } else {
        "x86-64"
    };
    if !text.contains(machine)
        || !(text.contains("statically linked") || text.contains("static-pie linked"))
    {
        bail!(
            "{} is not a static {machine} binary: file says: {text}",
            bin.display()
        );
    }
    say(&format!("{}: {text}", bin.display()));
    Ok(())
}

fn sha256sums(dir: &Path, names: &[&str]) -> Result<()> {
    let out = Command::new("sha256sum")
        .args(names)
        .current_dir(dir)
        .output()
        .context("sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::write(dir.join("SHA256SUMS"), out.stdout)?;
    Ok(())
}

/// Man pages (gzipped, as Debian ships them) and completions into target/dist/gen, where the
/// package's assets (tracer/Cargo.toml) take them from.
fn generated(bin: &Path) -> Result<()> {
    let gen_dir = dist_dir().join("gen");
    let _ = fs::remove_dir_all(&gen_dir);
    bootstrap::run_ok(Command::new(bin).arg("generate").arg(&gen_dir))?;
    for e in fs::read_dir(&gen_dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "8") {
            bootstrap::run_ok(Command::new("gzip").args(["-9nf"]).arg(&p))?;
        }
    }
    Ok(())
}

fn deb(version: &str) -> Result<PathBuf> {
    let out = dist_dir();
    bootstrap::run_ok(
        cargo()
            .args(["deb", "-p", "tracer", "--no-build", "--target", X86_64])
            .arg("--output")
            .arg(&out),
    )?;
    let deb = out.join(format!("tracer_{version}-1_amd64.deb"));
    if !deb.is_file() {
        bail!("cargo deb did not write {}", deb.display());
    }
    Ok(deb)
}

fn version() -> Result<String> {
    let text = fs::read_to_string(root().join("Cargo.toml"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .context("no workspace version in Cargo.toml")
}

pub fn dist() -> Result<Dist> {
    bootstrap::build_tools()?;
    bootstrap::dist_tools()?;
    let version = version()?;
    let dir = dist_dir();
    fs::create_dir_all(&dir)?;
    let mut names = vec![];
    let mut copies = vec![];
    for triple in [X86_64, AARCH64] {
        let bin = static_binary(triple)?;
        let arch = triple.split('-').next().unwrap_or(triple);
        let name = format!("tracer-{version}-{arch}-linux-musl");
        fs::copy(&bin, dir.join(&name))?;
        copies.push(dir.join(&name));
        names.push(name);
    }
    generated(&root().join(format!("target/{X86_64}/release/tracer")))?;
    let deb = deb(&version)?;
    let deb_name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push(&deb_name);
    sha256sums(&dir, &all)?;
    say(&format!(
        "{}, {} and SHA256SUMS in {}",
        all[..2].join(", "),
        deb_name,
        dir.display()
    ));
    Ok(Dist {
        x86_64: copies[0].clone(),
    })
}
