//! `cargo xtask vm-test`: boot other kernels under qemu (TCG: no KVM here) and run the BPF
//! integration tests inside them once per connect hook, so the fentry and kprobe paths that the
//! development host refuses are proven on a real kernel.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, cargo, root};

const MUSL: &str = crate::dist::X86_64;
/// Meta package whose dependency names the current kernel of a series.
const KERNEL_SERIES: &[&str] = &["linux-image-amd64"];
/// `connect:state` hook pairs forced in the guest.
const MODES: &[&str] = &[
    "auto:auto",
    "fentry:tp_btf",
    "fentry:tracepoint",
    "kprobe:tp_btf",
    "kprobe:tracepoint",
    "derived:tp_btf",
    "derived:tracepoint",
];
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

fn say(msg: &str) {
    eprintln!("xtask vm: {msg}");
}

fn vm_dir() -> PathBuf {
    root().join("target/vm")
}

/// Where `vm_test` records its last matrix (the bench report shows it).
pub fn matrix_path() -> PathBuf {
    vm_dir().join("matrix.json")
}

/// What the guest's init prints first (see `INIT`), before the kernel release.
const INIT_SPOKE: &str = "VMTEST kernel ";

/// One kernel's row of the matrix, read from its console log: each mode passed or not, and the
/// hooks `auto` picks there.
fn matrix_entry(pkg: &str, log: &str) -> serde_json::Value {
    let kernel = log
        .lines()
        .find_map(|l| l.split_once(INIT_SPOKE).map(|(_, k)| k))
        .unwrap_or(pkg)
        .trim();
    let modes: Vec<serde_json::Value> = MODES
        .iter()
        .map(|m| {
            let (connect, state) = m.split_once(':').unwrap_or((m, m));
            serde_json::json!({"connect": connect, "state": state,
                               "pass": log.contains(&format!("VMTEST mode={m} rc=0"))})
        })
        .collect();
    let auto = log.lines().find_map(|l| {
        let (_, rest) = l.split_once("watch would use: ")?;
        let mut words = rest.split_whitespace();
        Some(format!("{} and {}", words.next()?, words.next()?))
    });
    serde_json::json!({"package": pkg, "kernel": kernel, "modes": modes, "auto": auto})
}

/// The concrete kernel package behind a meta package, e.g. linux-image-6.1.0-54-amd64.
fn resolve_kernel_package(meta: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .context("apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64"))
        .map(str::to_string)
        .with_context(|| format!("cannot find the kernel package behind {meta} (apt-get update?)"))
}

/// Download and unpack a kernel package once; returns the vmlinuz path.
fn kernel(meta: &str) -> Result<(String, PathBuf)> {
    let pkg = resolve_kernel_package(meta)?;
    let dir = vm_dir().join("kernels").join(&pkg);
    let boot = dir.join("root/boot");
    if let Some(k) = find_vmlinuz(&boot) {
        return Ok((pkg, k));
    }
    fs::create_dir_all(&dir)?;
    say(&format!(
        "downloading {pkg} from Debian's archive (cached in {})",
        dir.display()
    ));
    bootstrap::run_ok(
        Command::new("apt-get")
            .args(["download", &pkg])
            .current_dir(&dir),
    )?;
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    bootstrap::run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")),
    )?;
    let _ = fs::remove_file(&deb);
    let k = find_vmlinuz(&boot).context("no vmlinuz in the kernel package")?;
    Ok((pkg, k))
}

fn find_vmlinuz(boot: &Path) -> Option<PathBuf> {
    fs::read_dir(boot)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// Static (musl) builds of tracer (the one `cargo xtask dist` ships) and the integration test
/// binaries the guest runs.
fn build_guest_binaries() -> Result<(PathBuf, PathBuf)> {
    let tracer = crate::dist::static_binary(MUSL)?;
    let out = cargo()
        .args(["test", "--release", "-p", "tracer-tests", "--target", MUSL])
        .args(["--test", "foundation", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the guest tests failed");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let test = stdout
        .lines()
        .filter(|l| l.contains("\"name\":\"foundation\"") && l.contains("\"executable\":\""))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + 14;
            let end = l[start..].find('"')? + start;
            Some(PathBuf::from(&l[start..end]))
        })
        .context("no foundation test executable in cargo's output")?;
    Ok((tracer, test))
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 none /sys/fs/cgroup
# The census uses sock_diag, a module in Debian's kernels (autoloaded on a full system).
insmod /lib/diag/inet_diag.ko && insmod /lib/diag/tcp_diag.ko || echo "VMTEST no tcp_diag"
# tracefs is left unmounted on purpose: tracer must mount it itself.
ip link set lo up
echo "VMTEST kernel $(uname -r)"
/bin/tracer probe
echo "VMTEST probe rc=$?"
for mode in MODES; do
  TRACER_BIN=/bin/tracer TRACER_TCONN=/bin/tconn TRACER_TEST_CONNECT_HOOK=${mode%:*} \
    TRACER_TEST_STATE_HOOK=${mode#*:} RUST_BACKTRACE=0 \
    /bin/foundation --test-threads=1 exact_counts the_hook_in_use dns_capture > /tmp/out 2>&1
  rc=$?
  cat /tmp/out
  echo "VMTEST mode=$mode rc=$rc"
done
echo "VMTEST done"
poweroff -f
"#;

/// A newc cpio archive (what the kernel unpacks as initramfs), written directly.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }
    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name, 0o100755, data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The sock_diag modules of the guest kernel, from its package.
fn diag_modules(vmlinuz: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let root = vmlinuz
        .parent()
        .and_then(Path::parent)
        .context("kernel path")?;
    let modules = fs::read_dir(root.join("lib/modules"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .context("no modules in the kernel package")?;
    ["inet_diag.ko", "tcp_diag.ko"]
        .iter()
        .map(|m| {
            let p = modules.join("kernel/net/ipv4").join(m);
            Ok((
                m.to_string(),
                fs::read(&p).with_context(|| format!("{}", p.display()))?,
            ))
        })
        .collect()
}

fn initramfs(tracer: &Path, test: &Path, vmlinuz: &Path, name: &str) -> Result<PathBuf> {
    let busybox = fs::read("/bin/busybox").context("busybox-static is not installed")?;
    let mut c = Cpio {
        out: Vec::new(),
        ino: 0,
    };
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "sys/fs",
        "sys/fs/bpf",
        "sys/fs/cgroup",
        "lib",
        "lib/diag",
    ] {
        c.dir(d);
    }
    for (m, data) in diag_modules(vmlinuz)? {
        c.file(&format!("lib/diag/{m}"), &data);
    }
    c.file("bin/busybox", &busybox);
    c.file("bin/tracer", &fs::read(tracer)?);
    c.file("bin/foundation", &fs::read(test)?);
    // The traffic helper, built beside the tests (cargo builds a package's bins for them).
    let tconn = tracer.with_file_name("tconn");
    c.file(
        "bin/tconn",
        &fs::read(&tconn).with_context(|| tconn.display().to_string())?,
    );
    c.file("init", INIT.replace("MODES", &MODES.join(" ")).as_bytes());
    let path = vm_dir().join(format!("{name}.cpio"));
    fs::create_dir_all(vm_dir())?;
    fs::write(&path, c.finish())?;
    Ok(path)
}

/// The guest's init did not speak within `FIRST_SIGN`: qemu (TCG) hung before it, which was
/// seen once in many boots and says nothing about tracer. Such a boot is tried once more.
#[derive(Debug)]
struct NoInit;

impl std::fmt::Display for NoInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest's init printed nothing within {FIRST_SIGN:?} (qemu hung before it)"
        )
    }
}

impl std::error::Error for NoInit {}

/// Init's first line normally comes within a minute under TCG.
const FIRST_SIGN: Duration = Duration::from_secs(240);

/// Boot once, run every mode, return the console log. Killed after GUEST_TIMEOUT, or after
/// FIRST_SIGN when init has not spoken by then.
fn boot(kernel: &Path, initrd: &Path, log: &Path) -> Result<String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "1G",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().expect("piped");
    // The console as it arrives, so that a guest that never reaches init is seen early.
    let console = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = console.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().expect("console").extend_from_slice(&chunk[..n]);
        }
    });
    // Scanned only until init's first line is seen, once FIRST_SIGN has passed.
    let mut spoke = false;
    let t0 = Instant::now();
    let ended = loop {
        if child.try_wait()?.is_some() {
            break Ended::Exited;
        }
        if !spoke && t0.elapsed() > FIRST_SIGN {
            let c = console.lock().expect("console");
            spoke = c
                .windows(INIT_SPOKE.len())
                .any(|w| w == INIT_SPOKE.as_bytes());
        }
        let ended = if t0.elapsed() > FIRST_SIGN && !spoke {
            Some(Ended::NoInit)
        } else if t0.elapsed() > GUEST_TIMEOUT {
            Some(Ended::Timeout)
        } else {
            None
        };
        if let Some(e) = ended {
            let _ = child.kill();
            let _ = child.wait();
            break e;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = reader.join();
    let text = String::from_utf8_lossy(&console.lock().expect("console")).into_owned();
    fs::File::create(log)?.write_all(text.as_bytes())?;
    match ended {
        Ended::Exited => Ok(text),
        Ended::NoInit => Err(NoInit.into()),
        Ended::Timeout => bail!(
            "guest did not finish within {GUEST_TIMEOUT:?}: console log in {}",
            log.display()
        ),
    }
}

/// How a boot ended: qemu exited, or it was killed because init never spoke or the guest ran
/// past GUEST_TIMEOUT.
enum Ended {
    Exited,
    NoInit,
    Timeout,
}

/// `boot`, once more when qemu hung before the guest's init (said on stderr, never silent).
fn boot_retrying(kernel: &Path, initrd: &Path, log: &Path) -> Result<String> {
    match boot(kernel, initrd, log) {
        Err(e) if e.is::<NoInit>() => {
            say(&format!("{e}: booting once more"));
            boot(kernel, initrd, log)
        }
        r => r,
    }
}

/// Check the console log: every mode passed, and auto chose the best hook offered.
fn verdict(log: &str) -> Result<Vec<String>> {
    if !log.contains("VMTEST done") {
        bail!("guest stopped before finishing (panic or crash)");
    }
    let mut lines = Vec::new();
    let best = ["fentry", "kprobe", "derived"]
        .into_iter()
        .find(|h| log.contains(&format!("connect hook  {h}: available")))
        .context("probe in the guest offered no connect hook")?;
    if !log.contains(&format!("watch would use: connect={best}")) {
        bail!("auto does not pick the best hook the guest offers ({best})");
    }
    if !log.contains("dns hook      cgroup_skb/ingress") {
        bail!("the DNS capture hooks are not available in the guest (see `dns hook` in the log)");
    }
    let state = ["tp_btf", "tracepoint"]
        .into_iter()
        .find(|h| {
            log.contains(&format!(
                "state hook    {h} sock:inet_sock_set_state: available"
            ))
        })
        .context("probe in the guest offered no state hook")?;
    if !log.contains(&format!("state={state} ")) {
        bail!("auto does not pick the best state hook the guest offers ({state})");
    }
    let mut failed = Vec::new();
    for mode in MODES {
        let ok = log.contains(&format!("VMTEST mode={mode} rc=0"));
        lines.push(format!("{mode}: {}", if ok { "pass" } else { "FAIL" }));
        if !ok {
            failed.push(*mode);
        }
    }
    if !failed.is_empty() {
        // The console log stays on the machine: CI shows only this, so say why here.
        let why: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("panicked at") || l.starts_with("test ") && l.ends_with("FAILED")
            })
            .take(12)
            .collect();
        let mut detail = String::new();
        for l in log
            .lines()
            .skip_while(|l| !l.contains("panicked at"))
            .take(6)
        {
            detail.push_str("\n    ");
            detail.push_str(l);
        }
        bail!(
            "modes failed in the guest: {failed:?}\n  {}{detail}",
            why.join("\n  ")
        );
    }
    lines.push(format!("auto picked {best} and {state}"));
    Ok(lines)
}

pub fn vm_test() -> Result<()> {
    let t0 = Instant::now();
    bootstrap::build_tools()?;
    bootstrap::vm_tools()?;
    let (tracer, test) = build_guest_binaries()?;
    let mut failures = 0;
    let mut matrix = Vec::new();
    for meta in KERNEL_SERIES {
        let (pkg, vmlinuz) = kernel(meta)?;
        let initrd = initramfs(&tracer, &test, &vmlinuz, &pkg)?;
        let log = vm_dir().join(format!("{pkg}.log"));
        say(&format!("booting {pkg} (console log: {})", log.display()));
        let result = boot_retrying(&vmlinuz, &initrd, &log).and_then(|text| {
            matrix.push(matrix_entry(&pkg, &text));
            verdict(&text)
        });
        match result {
            Ok(lines) => say(&format!("{pkg}: {}", lines.join(", "))),
            Err(e) => {
                failures += 1;
                say(&format!(
                    "{pkg}: FAILED: {e:#} (console log: {})",
                    log.display()
                ));
            }
        }
    }
    fs::write(
        matrix_path(),
        serde_json::to_string_pretty(
            &serde_json::json!({"date": crate::utc_now(), "kernels": matrix}),
        )? + "\n",
    )?;
    let kernels = KERNEL_SERIES.len();
    println!("vm-test: {} passed, {failures} failed", kernels - failures);
    say(&format!("done in {:.0?}", t0.elapsed()));
    if failures > 0 {
        bail!("{failures} kernel(s) failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_entry_reads_each_mode_and_the_auto_pick_from_the_console() {
        let log = "\x1b[2JVMTEST kernel 6.1.0-57-amd64\r\n\
                   watch would use: connect=fentry state=tp_btf unsent=cgroup+syscall dns=cgroup_skb\n\
                   VMTEST mode=auto:auto rc=0\nVMTEST mode=fentry:tp_btf rc=101\n";
        let e = matrix_entry("linux-image-6.1.0-57-amd64", log);
        assert_eq!(e["kernel"], "6.1.0-57-amd64");
        assert_eq!(e["auto"], "connect=fentry and state=tp_btf");
        let modes = e["modes"].as_array().unwrap();
        assert_eq!(modes.len(), MODES.len());
        assert_eq!(modes[0]["pass"], true);
        assert_eq!(modes[1]["connect"], "fentry");
        assert_eq!(modes[1]["state"], "tp_btf");
        assert_eq!(modes[1]["pass"], false);
        // A mode the guest never reported did not pass.
        assert_eq!(modes[2]["pass"], false);
    }
}
