//! Capabilities instead of root. Which ones tracer uses and why, the check before anything is
//! loaded, what `tracer probe` lists, and the drop once the programs are attached: a bug in the
//! long-running part (sampling, NDJSON, metrics, DNS) then cannot load programs or read files
//! the user could not.
//!
//! Effective capabilities are off from the start until the programs are loaded (`acquire`), so
//! reading `--old @file`, resolv.conf or creating `--json` happens with the user's own rights
//! even when file capabilities (the Debian package) grant more.

use std::{collections::HashSet, ffi::CString, os::unix::ffi::OsStrExt, path::Path};

use caps::{CapSet, Capability};

use crate::error::{Error, Result};

/// The copy of tracer with file capabilities that the Debian package installs, executable by
/// root and the `tracer` group only. The package's `/usr/sbin/tracer` (no capabilities) runs it.
pub const PRIVILEGED: &str = "/usr/lib/tracer/tracer";
const ENTRY: &str = "/usr/sbin/tracer";
/// Set on the re-executed copy, so a copy without capabilities (a filesystem without xattrs)
/// says so instead of looping.
const REEXEC_ENV: &str = "TRACER_PRIVILEGED";

/// One capability tracer uses.
pub struct Use {
    pub cap: Capability,
    /// What it is needed for.
    pub what: &'static str,
    /// `None`: watch cannot run without it. `Some`: what is missing from a run without it.
    pub without: Option<&'static str>,
    /// Kept after the programs are attached: why (else dropped).
    pub kept: Option<&'static str>,
}

/// The capabilities tracer uses, found by running it under `setpriv` with each one removed
/// (tests/tests/dist.rs proves the set). CAP_SYS_ADMIN would stand in for CAP_BPF and
/// CAP_PERFMON (and must on kernels before 5.8, which lack them), but it is only asked for what
/// nothing narrower allows.
pub const USES: &[Use] = &[
    Use {
        cap: Capability::CAP_BPF,
        what: "create the maps and load the programs",
        without: None,
        kept: None,
    },
    Use {
        cap: Capability::CAP_PERFMON,
        what: "attach the tracepoints, fentry and kprobes, and let the programs read kernel memory",
        without: None,
        kept: None,
    },
    Use {
        cap: Capability::CAP_DAC_READ_SEARCH,
        what: "read tracefs (root-only: tracepoint ids and field offsets) and list /proc/PID/fd of other users",
        without: None,
        kept: None,
    },
    Use {
        cap: Capability::CAP_NET_ADMIN,
        what: "load and attach the cgroup connect hooks",
        without: Some("connects that fail before a SYN (no route, no free port) are not counted"),
        kept: None,
    },
    Use {
        cap: Capability::CAP_SYS_PTRACE,
        what: "open /proc/PID/fd and /proc/PID/ns/net of other users' processes (census owners, network namespaces)",
        without: Some(
            "owners of connections open at start and other network namespaces are not found",
        ),
        kept: Some("the census of reconciliation opens /proc/PID/ns/net of every process"),
    },
    Use {
        cap: Capability::CAP_SYS_ADMIN,
        what: "join other network namespaces for the census (setns), mount tracefs if it is not mounted",
        without: Some(
            "the census sees only tracer's own network namespace, and tracefs must be mounted",
        ),
        kept: Some("the census of reconciliation joins every network namespace (setns)"),
    },
];

/// What `--help` says about privileges (the same as `USES`; a unit test keeps them together).
pub const HELP: &str = "Privileges: watch and probe need root or these capabilities: CAP_BPF, CAP_PERFMON and \
CAP_DAC_READ_SEARCH (required), CAP_NET_ADMIN (connects failing before a SYN), CAP_SYS_PTRACE and \
CAP_SYS_ADMIN (census owners and other network namespaces; CAP_SYS_ADMIN also mounts tracefs). \
`tracer probe` lists what is missing. Once the programs are attached, all are dropped except \
CAP_SYS_PTRACE and CAP_SYS_ADMIN (the census of reconciliation joins every network namespace) \
and, before Linux 6.5, CAP_BPF (reading the maps).";

/// The capability names as setcap(8), systemd and Kubernetes take them.
pub fn setcap_list() -> String {
    let names: Vec<String> = USES
        .iter()
        .map(|u| u.cap.to_string().to_lowercase())
        .collect();
    names.join(",")
}

fn permitted() -> HashSet<Capability> {
    caps::read(None, CapSet::Permitted).unwrap_or_default()
}

/// Whether this process may use `cap` (CAP_SYS_ADMIN also grants what CAP_BPF and CAP_PERFMON
/// grant, as the kernel checks it).
fn covered(have: &HashSet<Capability>, cap: Capability) -> bool {
    have.contains(&cap)
        || (matches!(cap, Capability::CAP_BPF | Capability::CAP_PERFMON)
            && have.contains(&Capability::CAP_SYS_ADMIN))
}

/// The capabilities this process lacks, required ones first.
pub fn missing() -> Vec<&'static Use> {
    let have = permitted();
    let mut m: Vec<&Use> = USES.iter().filter(|u| !covered(&have, u.cap)).collect();
    m.sort_by_key(|u| u.without.is_some());
    m
}

fn names(uses: &[&Use]) -> String {
    let v: Vec<String> = uses.iter().map(|u| u.cap.to_string()).collect();
    v.join(", ")
}

/// When file capabilities were granted at exec (the package's copy: a secure exec), turn them
/// off until `acquire`, so that what the user names (files, hosts) is read with the user's
/// rights. First thing in main; root and capabilities given by the caller are left alone.
pub fn lower() {
    // SAFETY: getauxval has no preconditions.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        let _ = caps::clear(None, CapSet::Effective);
    }
}

/// When required capabilities are missing and the package's privileged copy is there and
/// executable by this user (root or the `tracer` group), run it instead with the same arguments.
/// Returns only if it did not.
pub fn reexec_privileged() {
    if std::env::var_os(REEXEC_ENV).is_some()
        || !packaged()
        || missing().iter().all(|u| u.without.is_some())
        || !executable(PRIVILEGED)
    {
        return;
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(PRIVILEGED)
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1")
        .exec();
    eprintln!("tracer: note: cannot run {PRIVILEGED} ({err}): going on without it");
}

/// Running as the package's /usr/sbin/tracer, with its privileged copy installed (a binary of
/// another version elsewhere never hands over to it).
fn packaged() -> bool {
    std::env::current_exe().is_ok_and(|e| e == Path::new(ENTRY)) && Path::new(PRIVILEGED).exists()
}

fn executable(path: &str) -> bool {
    let Ok(c) = CString::new(Path::new(path).as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// Replaces the old euid-0 check: the required capabilities are permitted, or one line that
/// names what is missing and the fix. Then they are made effective for loading and attaching.
pub fn acquire() -> Result<()> {
    let missing = missing();
    let required: Vec<&Use> = missing
        .iter()
        .copied()
        .filter(|u| u.without.is_none())
        .collect();
    if !required.is_empty() {
        return Err(Error::env(format!(
            "missing {}: {}",
            names(&required),
            fix()
        )));
    }
    for u in &missing {
        eprintln!(
            "tracer: note: without {}: {}",
            u.cap,
            u.without.unwrap_or_default()
        );
    }
    let have = permitted();
    caps::set(None, CapSet::Effective, &have)
        .map_err(|e| Error::env(format!("cannot raise the permitted capabilities: {e}")))?;
    Ok(())
}

/// How to get the capabilities, for the situation at hand.
pub fn fix() -> String {
    let list = setcap_list();
    if packaged() && !executable(PRIVILEGED) {
        return "you are not in the `tracer` group: `sudo usermod -aG tracer $USER` and log in again, or run it with sudo".into();
    }
    if std::env::var_os(REEXEC_ENV).is_some() {
        return format!(
            "{PRIVILEGED} has lost its file capabilities (a filesystem without xattrs?): `sudo setcap {list}=ep {PRIVILEGED}`, or run it with sudo"
        );
    }
    format!(
        "run it with sudo, or grant them: `sudo setcap {list}=ep $(command -v tracer)` (then limit who may run it), or install the Debian package and join the `tracer` group"
    )
}

/// The capabilities to keep after attaching: CAP_BPF on kernels that still check it for every
/// bpf() command on an existing map while unprivileged BPF is disabled (before 6.5), and those
/// the census of reconciliation needs, if held.
fn kept_set(release: &str) -> HashSet<Capability> {
    let have = permitted();
    let mut keep: HashSet<Capability> = USES
        .iter()
        .filter(|u| u.kept.is_some() && have.contains(&u.cap))
        .map(|u| u.cap)
        .collect();
    let unpriv_disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    // Before Linux 6.5 every bpf(2) command (map lookups too) needed CAP_BPF while unprivileged
    // BPF is disabled; since then only creating maps and loading programs do.
    if unpriv_disabled && release_before(release, 6, 5) {
        keep.insert(if have.contains(&Capability::CAP_BPF) {
            Capability::CAP_BPF
        } else {
            Capability::CAP_SYS_ADMIN
        });
    }
    keep
}

/// Whether a kernel release (`6.1.0-54-amd64`) is older than major.minor.
pub fn release_before(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (major, minor)
}

/// After the programs are attached and the census at start is taken: keep only what later work
/// needs (see `USES`), in every set, so nothing can raise the rest again. Returns what is kept.
pub fn drop_after_attach() -> Result<Vec<Capability>> {
    let keep = kept_set(&crate::kernel_release());
    let err = |e: caps::errors::CapsError| Error::env(format!("cannot drop capabilities: {e}"));
    if permitted().contains(&Capability::CAP_SETPCAP) {
        for c in caps::all().difference(&keep) {
            let _ = caps::drop(None, CapSet::Bounding, *c);
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    caps::set(None, CapSet::Effective, &keep).map_err(err)?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err)?;
    let mut v: Vec<Capability> = keep.into_iter().collect();
    v.sort_by_key(|c| c.index());
    Ok(v)
}

/// `tracer probe`'s capability lines: each use, held or missing with what follows.
pub fn probe_lines() -> (Vec<String>, bool) {
    let have = permitted();
    let mut ok = true;
    let mut lines = vec![];
    for u in USES {
        let line = if covered(&have, u.cap) {
            format!("capability    {}: yes ({})", u.cap, u.what)
        } else if let Some(without) = u.without {
            format!("capability    {}: missing: {without}", u.cap)
        } else {
            ok = false;
            format!("capability    {}: MISSING: needed to {}", u.cap, u.what)
        };
        lines.push(line);
    }
    if !ok {
        lines.push(format!("capability    fix: {}", fix()));
    }
    (lines, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_by_major_and_minor() {
        assert!(release_before("6.1.0-54-amd64", 6, 5));
        assert!(release_before("5.15.0", 6, 5));
        assert!(!release_before("6.5.0", 6, 5));
        assert!(!release_before("6.18.44-fc-v1045", 6, 5));
        assert!(!release_before("6.18.44-fc-v1045", 5, 11));
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon_only() {
        let have: HashSet<Capability> = [Capability::CAP_SYS_ADMIN].into();
        assert!(covered(&have, Capability::CAP_BPF));
        assert!(covered(&have, Capability::CAP_PERFMON));
        assert!(!covered(&have, Capability::CAP_NET_ADMIN));
    }

    #[test]
    fn help_names_every_use_and_what_is_kept() {
        for u in USES {
            assert!(HELP.contains(&u.cap.to_string()), "{}", u.cap);
        }
        let kept = HELP.split("dropped except").nth(1).unwrap();
        for u in USES.iter().filter(|u| u.kept.is_some()) {
            assert!(kept.contains(&u.cap.to_string()), "{}", u.cap);
        }
    }

    #[test]
    fn setcap_list_names_every_use() {
        assert_eq!(
            setcap_list(),
            "cap_bpf,cap_perfmon,cap_dac_read_search,cap_net_admin,cap_sys_ptrace,cap_sys_admin"
        );
    }
}
