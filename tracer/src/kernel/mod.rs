//! Everything that touches the kernel: choose and attach hooks, fill the policy maps, take the
//! census, and read the maps into plain snapshots (`sampler`).

pub mod batch;
pub mod btf;
pub mod census;
#[cfg(test)]
mod cost_tests;
pub mod dnscap;
pub mod env;
pub mod filter;
pub mod holders;
pub mod hooks;
#[cfg(test)]
mod object_tests;
pub mod owners;
pub mod procrows;
pub mod progstats;
pub mod reuse;
pub mod rows;
pub mod sampler;
pub mod tracefs;
pub mod unsent;

use std::{ffi::CString, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
};
use tracer_common::{
    CONFIG_COHORT_EXACT, CONFIG_COHORT_LPM, CONFIG_CONNECT_SOURCE, CensusInfo, DIR_IN, DIR_OUT,
    Filter, SockOffsets, TpOffsets, TupleKey, names,
};

use crate::model::{
    addr::{Prefix, to_key},
    cohort::{Cohort, Sets},
    reconcile::Table,
};
use hooks::{ConnectHook, ConnectMode, StateHook, StateMode, one_line};

/// The eBPF object built by aya-build from tracer-ebpf.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Where the kernel's BTF is read; overridable so tests can simulate a kernel without it.
pub fn btf_path() -> String {
    std::env::var("TRACER_BTF_PATH").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into())
}

/// What a run needs from the user.
#[derive(Clone, Debug)]
pub struct Config {
    pub sets: Sets,
    pub ports: Vec<u16>,
    pub connect: ConnectMode,
    pub state: StateMode,
    pub max_destinations: u32,
    pub max_processes: u32,
    /// `--netns`, `--cgroup`: only these sockets are counted.
    pub filters: filter::Filters,
    /// Attach the DNS answer capture (`--no-dns-capture` turns it off).
    pub dns_capture: bool,
    /// Every program attached but returning at once (`--hooks-only`): a measurement of what
    /// the hooks cost by themselves; nothing is counted.
    pub hooks_only: bool,
}

/// Hooks in use and how they were chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    pub connect: ConnectHook,
    pub state: &'static str,
    /// Hooks tried before the one in use, with why each was not used.
    pub fallbacks: Vec<(ConnectHook, String)>,
    pub tracefs_mounted: bool,
    /// Connects that fail before a SYN (no route, no local port): counted, or why not.
    pub unsent: Result<(), String>,
    /// DNS answers per process (`dnscap`): captured, or why not.
    pub dns: Result<(), String>,
}

/// A running tracer: attached programs (kept alive by `ebpf`) and its sampler.
pub struct Tracer {
    pub ebpf: Ebpf,
    pub hooks: Hooks,
    pub census: Vec<census::Conn>,
    pub warnings: Vec<String>,
    /// `--netns`, `--cgroup` (the census for reconciliation keeps to them too).
    pub filters: filter::Filters,
}

/// Offsets in `struct sock` from the kernel's BTF, or why they are unknown.
pub fn sock_offsets(raw: &[u8]) -> Result<SockOffsets, String> {
    let b = btf::Btf::parse(raw)?;
    let f = |m: &str| {
        b.member_offset("sock", &["__sk_common", m])
            .ok_or_else(|| format!("struct sock has no {m} in BTF"))
    };
    let g = |m: &str| {
        b.member_offset("sock", &[m])
            .ok_or_else(|| format!("struct sock has no {m} in BTF"))
    };
    Ok(SockOffsets {
        family: f("skc_family")?,
        daddr: f("skc_daddr")?,
        v6_daddr: f("skc_v6_daddr")?,
        dport: f("skc_dport")?,
        err: g("sk_err")?,
        err_soft: g("sk_err_soft")?,
        // Only `tp_btf` reads these; 0 (never their offset) rules it out (`tp_btf_ready`).
        protocol: g("sk_protocol").unwrap_or(0),
        rcv_saddr: f("skc_rcv_saddr").unwrap_or(0),
        v6_rcv_saddr: f("skc_v6_rcv_saddr").unwrap_or(0),
        sport: b.member_offset("inet_sock", &["inet_sport"]).unwrap_or(0),
    })
}

/// The offsets `--netns` reads (no filter set yet), or why they are unknown.
pub fn filter_offsets(raw: &[u8]) -> Result<Filter, String> {
    let b = btf::Btf::parse(raw)?;
    let at = |s: &str, path: &[&str]| {
        b.member_offset(s, path)
            .ok_or_else(|| format!("struct {s} has no {} in BTF", path.join(".")))
    };
    Ok(Filter {
        sk_net: at("sock", &["__sk_common", "skc_net", "net"])?,
        net_inum: at("net", &["ns", "inum"])?,
        task_nsproxy: at("task_struct", &["nsproxy"])?,
        nsproxy_net: at("nsproxy", &["net_ns"])?,
        ..Filter::default()
    })
}

/// Whether the BTF offsets cover what the `tp_btf` state program reads from the socket.
pub fn tp_btf_ready(o: &SockOffsets) -> Result<(), String> {
    if o.protocol == 0 || o.rcv_saddr == 0 || o.v6_rcv_saddr == 0 || o.sport == 0 {
        return Err("struct sock in BTF lacks sk_protocol, skc_rcv_saddr, skc_v6_rcv_saddr or inet_sock.inet_sport".into());
    }
    Ok(())
}

/// Mount a pseudo filesystem (`tracefs`, `cgroup2`) of type `fstype` at `target`.
pub fn mount_fs(fstype: &str, target: &Path) -> std::io::Result<()> {
    let target = CString::new(target.as_os_str().as_encoded_bytes())?;
    let fstype = CString::new(fstype)?;
    // SAFETY: plain mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Lift MEMLOCK for kernels older than 5.11 that charge BPF maps to it; newer ones do not need
/// it (and it needs CAP_SYS_RESOURCE), so it is not tried there, and a failure is a warning.
fn raise_memlock() -> Option<String> {
    if !env::needs_memlock(&crate::kernel_release()) {
        return None;
    }
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        return Some(format!(
            "warning: could not raise RLIMIT_MEMLOCK ({}); not needed on Linux 5.11+",
            std::io::Error::last_os_error()
        ));
    }
    None
}

/// The object loaded for a root-only unit test: default tracepoint layout and offsets, no
/// attach.
#[cfg(test)]
pub fn load_for_test(cfg: &Config) -> Ebpf {
    let tp = TpOffsets {
        record_len: 72,
        ..Default::default()
    };
    load(
        cfg,
        &tp,
        &Default::default(),
        16,
        1,
        &Ok(Default::default()),
    )
    .expect("load (root needed)")
}

/// Rows and LRU entries for a table of `max` keys: every key gets a row up to `max`; a quarter
/// more, least recently used first out, take the keys that come once the rows are all taken
/// (a long run whose early keys went quiet).
pub fn split_capacity(max: u32) -> [u32; 2] {
    [max.max(1), (max / 4).max(64)]
}

/// Possible CPUs (each has its own slots in the row tables: `cpu * rows + row`).
pub fn possible_cpus() -> Result<u32, String> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(what, e)| format!("{what}: {e}"))
}

/// Load the object with this kernel's offsets and sizes; nothing attached yet.
pub fn load(
    cfg: &Config,
    tp: &TpOffsets,
    sock: &SockOffsets,
    syscall_ret: u32,
    census_slots: u32,
    filter_offsets: &Result<Filter, String>,
) -> Result<Ebpf, String> {
    let port_filter: u8 = (!cfg.ports.is_empty()).into();
    let hooks_only: u8 = cfg.hooks_only.into();
    let filter = kernel_filter(&cfg.filters, filter_offsets)?;
    let ncpus = possible_cpus()?;
    let [dest_rows, dest_lru] = split_capacity(cfg.max_destinations);
    let [proc_rows, proc_lru] = split_capacity(cfg.max_processes);
    let slots = |rows: u32| {
        rows.checked_mul(ncpus).ok_or_else(|| {
            format!("{rows} rows x {ncpus} CPUs is too many counters: lower --max-destinations")
        })
    };
    let (dest_slots, proc_slots) = (slots(dest_rows)?, slots(proc_rows)?);
    let mut loader = EbpfLoader::new();
    loader
        .override_global(names::DEST_ROW_CAP, &dest_rows, true)
        .override_global(names::PROC_ROW_CAP, &proc_rows, true)
        .map_max_entries(names::DEST_INDEX, dest_rows)
        .map_max_entries(names::DEST_KEYS, dest_rows)
        .map_max_entries(names::DEST_ROWS, dest_slots)
        .map_max_entries(names::DEST_FREE, dest_rows)
        .map_max_entries(names::LOCAL_INDEX, dest_rows)
        .map_max_entries(names::LOCAL_KEYS, dest_rows)
        .map_max_entries(names::LOCAL_ROWS, dest_slots)
        .map_max_entries(names::LOCAL_FREE, dest_rows)
        .map_max_entries(names::PROCS_INDEX, proc_rows)
        .map_max_entries(names::PROCS_KEYS, proc_rows)
        .map_max_entries(names::PROCS_ROWS, proc_slots)
        .map_max_entries(names::PROCS_FREE, proc_rows)
        .override_global(names::FILTER, &filter, true)
        .override_global(names::HOOKS_ONLY, &hooks_only, true)
        .override_global(names::TP_OFFSETS, tp, true)
        .override_global(names::SOCK_OFFSETS, sock, true)
        .override_global(names::PORT_FILTER, &port_filter, true)
        .override_global(names::SYSCALL_RET, &syscall_ret, true)
        .map_max_entries(names::DEST, dest_lru)
        .map_max_entries(names::LOCAL_IN, dest_lru)
        .map_max_entries(names::DEST_REASONS, cfg.max_destinations)
        .map_max_entries(names::PROCS, proc_lru)
        .map_max_entries(names::PROC_REASONS, cfg.max_processes)
        .map_max_entries(names::CENSUS, census_slots.max(1));
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| format!("loading the BPF object failed: {}", one_line(&e)))?;

    // No state program may count before the connect source is chosen.
    set_config(&mut ebpf, CONFIG_CONNECT_SOURCE, CONNECT_NONE)?;
    insert_prefixes(&mut ebpf, cfg.sets.entries())?;
    if let Some(c) = &cfg.filters.cgroup {
        let mut arr = aya::maps::CgroupArray::try_from(
            ebpf.map_mut(names::CGROUP_FILTER)
                .ok_or("no CGROUP_FILTER map")?,
        )
        .map_err(|e| one_line(&e))?;
        arr.set(0, c.file.clone(), 0)
            .map_err(|e| format!("cannot load --cgroup {}: {}", c.arg, one_line(&e)))?;
    }
    let mut ports: HashMap<_, u16, u8> =
        HashMap::try_from(ebpf.map_mut(names::PORTS).ok_or("no PORTS map")?)
            .map_err(|e| one_line(&e))?;
    for p in &cfg.ports {
        ports
            .insert(p, 1, 0)
            .map_err(|e| format!("cannot load port {p}: {}", one_line(&e)))?;
    }
    Ok(ebpf)
}

/// The `FILTER` global for the filters asked for, with the offsets they need.
fn kernel_filter(f: &filter::Filters, offsets: &Result<Filter, String>) -> Result<Filter, String> {
    let mut k = Filter::default();
    if let Some(n) = &f.netns {
        k = *offsets.as_ref().map_err(|e| {
            format!("--netns needs the kernel's BTF to find a socket's namespace ({e}): run without --netns (needs CONFIG_DEBUG_INFO_BTF=y)")
        })?;
        k.netns = u32::try_from(n.inode).map_err(|_| {
            format!(
                "--netns {}: inode {} is not a namespace inode",
                n.arg, n.inode
            )
        })?;
    }
    if f.cgroup.is_some() {
        k.cgroup = 1;
    }
    Ok(k)
}

/// A connect source no program has: nothing counts attempts until one is set.
const CONNECT_NONE: u32 = 255;

/// Put prefixes into the cohort maps, at load or while running (a DNS change adds the new
/// side): connections counted before keep their cohort, later ones get the new one. Host
/// addresses go to the exact-match hash, wider prefixes to the trie; the kernel looks into
/// each only once it holds something (`CONFIG_COHORT_EXACT`, `CONFIG_COHORT_LPM`).
pub fn insert_prefixes(
    ebpf: &mut Ebpf,
    entries: impl IntoIterator<Item = (Prefix, Cohort)>,
) -> Result<(), String> {
    let (mut hosts, mut wide) = (Vec::new(), Vec::new());
    for (p, c) in entries {
        if p.key_len() == 128 {
            hosts.push((p, c));
        } else {
            wide.push((p, c));
        }
    }
    if !hosts.is_empty() {
        let mut map: HashMap<_, [u8; 16], u32> = HashMap::try_from(
            ebpf.map_mut(names::COHORT_HOSTS)
                .ok_or("no COHORT_HOSTS map")?,
        )
        .map_err(|e| one_line(&e))?;
        for (p, c) in &hosts {
            map.insert(to_key(p.addr), *c as u32, 0)
                .map_err(|e| format!("cannot load address {p}: {}", one_line(&e)))?;
        }
        set_config(ebpf, CONFIG_COHORT_EXACT, 1)?;
    }
    if !wide.is_empty() {
        let mut trie: LpmTrie<_, [u8; 16], u32> = LpmTrie::try_from(
            ebpf.map_mut(names::COHORT_PREFIXES)
                .ok_or("no COHORT_PREFIXES map")?,
        )
        .map_err(|e| one_line(&e))?;
        for (p, c) in &wide {
            trie.insert(&Key::new(p.key_len(), to_key(p.addr)), *c as u32, 0)
                .map_err(|e| format!("cannot load prefix {p}: {}", one_line(&e)))?;
        }
        set_config(ebpf, CONFIG_COHORT_LPM, 1)?;
    }
    Ok(())
}

fn set_config(ebpf: &mut Ebpf, slot: u32, value: u32) -> Result<(), String> {
    let mut config: Array<_, u32> =
        Array::try_from(ebpf.map_mut(names::CONFIG).ok_or("no CONFIG map")?)
            .map_err(|e| one_line(&e))?;
    config.set(slot, value, 0).map_err(|e| one_line(&e))
}

fn set_connect_source(ebpf: &mut Ebpf, hook: ConnectHook) -> Result<(), String> {
    set_config(ebpf, CONFIG_CONNECT_SOURCE, hook.source())
}

fn fill_census(ebpf: &mut Ebpf, sets: &Sets, conns: &[census::Conn]) -> Result<(), String> {
    let mut map: HashMap<_, TupleKey, CensusInfo> =
        HashMap::try_from(ebpf.map_mut(names::CENSUS).ok_or("no CENSUS map")?)
            .map_err(|e| one_line(&e))?;
    for c in conns {
        let key = TupleKey {
            saddr: to_key(c.local),
            daddr: to_key(c.remote),
            sport: c.lport,
            dport: c.rport,
        };
        let (dir, addr) = if c.inbound {
            (DIR_IN, c.local)
        } else {
            (DIR_OUT, c.remote)
        };
        let info = CensusInfo {
            dir: dir as u32,
            cohort: sets.cohort(addr) as u32,
        };
        map.insert(key, info, 0)
            .map_err(|e| format!("census map full: {}", one_line(&e)))?;
    }
    Ok(())
}

/// The census, or a warning: without it tracing still works, only connections opened before
/// the start are missing from `open` and their closes are not counted.
fn census_filtered(
    ports: &[u16],
    filters: &filter::Filters,
    warnings: &mut Vec<String>,
) -> Vec<census::Conn> {
    match census_of(ports, filters) {
        Ok(conns) => conns,
        Err(e) => {
            let w = format!(
                "warning: no census of existing connections ({e}); connections opened before the start are not counted"
            );
            if !warnings.contains(&w) {
                warnings.push(w);
            }
            Vec::new()
        }
    }
}

/// The census the filters keep: `--netns` dumps that namespace only; `--cgroup` keeps the
/// outbound connections whose owning process is in that cgroup or below it.
fn census_of(ports: &[u16], filters: &filter::Filters) -> Result<Vec<census::Conn>, String> {
    let conns = match &filters.netns {
        Some(n) => census::take_in(&n.file)?,
        None => census::take_all()?,
    };
    let conns = filter_ports(conns, ports);
    if filters.cgroup.is_none() {
        return Ok(conns);
    }
    let out: Vec<census::Conn> = conns.into_iter().filter(|c| !c.inbound).collect();
    let wanted = out.iter().map(|c| (c.inode, ())).collect();
    let owners = owners::inode_owners(&wanted);
    let mut cgroups: std::collections::HashMap<u32, Option<String>> = Default::default();
    Ok(out
        .into_iter()
        .filter(|c| {
            owners.get(&c.inode).is_some_and(|pid| {
                let cg = cgroups
                    .entry(*pid)
                    .or_insert_with(|| owners::cgroup_of_pid(*pid));
                filters.cgroup_has(cg.as_deref())
            })
        })
        .collect())
}

fn filter_ports(conns: Vec<census::Conn>, ports: &[u16]) -> Vec<census::Conn> {
    if ports.is_empty() {
        return conns;
    }
    conns
        .into_iter()
        .filter(|c| ports.contains(&if c.inbound { c.lport } else { c.rport }))
        .collect()
}

impl Tracer {
    /// Attach everything and take the census. Errors are one line naming cause and fix.
    pub fn start(cfg: &Config) -> Result<Tracer, String> {
        let mut warnings: Vec<String> = raise_memlock().into_iter().collect();
        let env = env::Env::discover();
        let (fs, tp) = env.tracefs?;
        if fs.mounted_by_us {
            warnings.push(format!(
                "note: tracefs was not mounted; mounted it at {}",
                fs.root
            ));
        }
        let sock = env.sock;
        let needs_btf = matches!(cfg.connect, ConnectMode::Fentry | ConnectMode::Kprobe);
        if let (true, Err(e)) = (needs_btf, &sock) {
            return Err(format!(
                "{e}: --connect-hook {} needs BTF (CONFIG_DEBUG_INFO_BTF=y); use --connect-hook derived",
                ConnectHook::candidates(cfg.connect)[0].name()
            ));
        }
        if let Err(e) = &sock {
            warnings.push(format!(
                "note: {e}: failed connects are counted with reason `other` (needs CONFIG_DEBUG_INFO_BTF=y)"
            ));
        }
        // Parsed once, after the first load (see `BtfSource::parse`).
        let btf_cell = std::cell::OnceCell::new();
        let btf_src = env.btf;
        let aya_btf = || btf_cell.get_or_init(|| btf_src.parse()).as_ref();

        // Size the census map from a first count; the real census is taken after attaching.
        let pre = census_filtered(&cfg.ports, &cfg.filters, &mut warnings).len() as u32;
        let ret_off = env.syscall_ret.clone();
        let sock_or_default = sock.clone().unwrap_or_default();
        let mut state_fallbacks = Vec::new();
        let mut loaded = None;
        for &hook in StateHook::candidates(cfg.state) {
            let ready = match (&sock, hook) {
                (Err(e), StateHook::TpBtf) => Err(e.clone()),
                (Ok(o), StateHook::TpBtf) => tp_btf_ready(o),
                _ => Ok(()),
            };
            // A fresh object per try: a program that failed to load stays unusable.
            let mut ebpf = load(
                cfg,
                &tp,
                &sock_or_default,
                *ret_off.as_ref().unwrap_or(&16),
                pre * 2 + 1024,
                &env.filter,
            )?;
            match ready.and_then(|()| hooks::attach_state(&mut ebpf, hook, aya_btf())) {
                Ok(()) => {
                    loaded = Some((ebpf, hook));
                    break;
                }
                Err(why) => state_fallbacks.push((hook, why)),
            }
        }
        let Some((mut ebpf, state)) = loaded else {
            let (hook, why) = state_fallbacks.pop().expect("one candidate at least");
            return Err(match hook {
                StateHook::TpBtf => format!(
                    "--state-hook tp_btf cannot attach on this kernel ({why}): use --state-hook auto (see `tracer probe`)"
                ),
                StateHook::Tracepoint => format!(
                    "cannot attach tracepoint sock:inet_sock_set_state ({why}): is this Linux 4.16+ with tracepoints enabled?"
                ),
            });
        };
        for (hook, why) in &state_fallbacks {
            warnings.push(format!("note: state hook {} not used: {why}", hook.name()));
        }

        let mut fallbacks = Vec::new();
        let mut chosen = None;
        for &hook in ConnectHook::candidates(cfg.connect) {
            match hooks::attach_connect(&mut ebpf, hook, aya_btf(), sock.is_ok()) {
                Ok(()) => {
                    chosen = Some(hook);
                    break;
                }
                Err(why) => fallbacks.push((hook, why)),
            }
        }
        let Some(connect) = chosen else {
            let (hook, why) = fallbacks.last().cloned().expect("one candidate at least");
            return Err(format!(
                "--connect-hook {} cannot attach on this kernel ({why}): use --connect-hook auto (see `tracer probe`)",
                hook.name()
            ));
        };
        set_connect_source(&mut ebpf, connect)?;

        let cgroup = cfg.filters.cgroup.as_ref();
        let unsent = ret_off.and_then(|_| unsent::attach(&mut ebpf, cgroup));
        if let Err(e) = &unsent {
            warnings.push(format!(
                "note: connects that fail before a SYN (no route, no local port) are not counted: {e}"
            ));
        }

        let dns = if cfg.dns_capture {
            dnscap::attach(&mut ebpf, cgroup)
        } else {
            Err(dnscap::TURNED_OFF.to_string())
        };
        if let Err(e) = &dns {
            warnings.push(format!(
                "note: DNS answers per process are not captured: {e}"
            ));
        }

        let conns = census_filtered(&cfg.ports, &cfg.filters, &mut warnings);
        fill_census(&mut ebpf, &cfg.sets, &conns)?;
        Ok(Tracer {
            ebpf,
            hooks: Hooks {
                connect,
                state: state.name(),
                fallbacks,
                tracefs_mounted: fs.mounted_by_us,
                unsent,
                dns,
            },
            census: conns,
            warnings,
            filters: cfg.filters.clone(),
        })
    }
}

/// The census as baselines for the open gauges: per address, by direction.
pub fn census_baseline(conns: &[census::Conn]) -> Table {
    let mut t = Table::default();
    for c in conns {
        t.add(c.inbound, if c.inbound { c.local } else { c.remote });
    }
    t
}

/// The established connections now, as the start census counts them (same `--port` filter):
/// what `open` is reconciled with.
pub fn census_now(ports: &[u16], filters: &filter::Filters) -> Result<Table, String> {
    Ok(census_baseline(&census_of(ports, filters)?))
}

#[cfg(test)]
mod contract_tests {
    use super::*;

    /// The names userspace looks maps up by are the object's (no root: only parsed).
    #[test]
    fn every_map_name_of_the_contract_is_in_the_object() {
        let obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        for n in names::MAPS {
            assert!(obj.maps.contains_key(*n), "map {n} is not in the object");
        }
    }
}
