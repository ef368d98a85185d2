//! Cost of one snapshot with 60000 destinations, measured in-process and without any network
//! traffic: the real BPF object is loaded (root needed, as for every BPF test here) but not
//! attached, DEST, LOCAL_IN and PROCS are filled from userspace, and the sampler plus what one
//! session tick does (analysis, NDJSON line, metrics exposition) run on them. Prints the thread
//! CPU per snapshot; asserts only correctness (speed goals are for benchmarks, not tests).
//!
//! Reproduce: `cargo test --release -p tracer snapshot_cost -- --nocapture`; profile with
//! `perf record -g` on the test binary with the same filter. `SNAPSHOT_COST_DUMP=FILE` writes
//! the last snapshot line and the metrics text (timestamps removed) to compare two builds.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use serde_json::Value;
use tracer_common::{
    InCounters, OutCounters, ProcKey, STAT_DEST_INSERTS, STAT_DEST_ROWS, STAT_LOCAL_INSERTS,
    STAT_LOCAL_ROWS, STAT_PROC_INSERTS, STAT_PROC_ROWS, names,
};

use super::{
    Config, Hooks, Tracer, census,
    hooks::{ConnectHook, ConnectMode, StateMode},
};
use crate::{
    metrics::exposition::{Fixed, Format, Frame, Milestones, render},
    model::{
        addr::{Prefix, from_key, to_key},
        analysis::Params,
        cohort::Sets,
        counters::{In, Out, sum_in, sum_out},
    },
    ndjson::Writer,
    session::Session,
    sink::{RunInfo, Sink},
    testutil::Shared,
};

const N: u32 = 60_000;
const TOP: usize = 20;
const ROUNDS: u32 = 5;
/// Connections in the start census, per direction, to live and to quiet addresses each.
const CENSUS: u32 = 5;

/// CPU time of this thread (user + system, so the map syscalls count too).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The i-th synthetic address: half in 127.10.0.0/16 (old), half in 127.20.0.0/16 (new).
fn addr(i: u32) -> [u8; 16] {
    let second = if i.is_multiple_of(2) { 10 } else { 20 };
    let k = i / 2;
    let v4 = std::net::Ipv4Addr::new(127, second, (k >> 8) as u8, k as u8);
    to_key(v4.into())
}

fn per_cpu<V: aya::Pod>(ncpus: usize, f: impl Fn(usize) -> V) -> PerCpuValues<V> {
    PerCpuValues::try_from((0..ncpus).map(f).collect::<Vec<V>>()).unwrap()
}

fn out(i: u32, c: usize) -> OutCounters {
    let n = u64::from(i);
    OutCounters {
        attempts: n % 97 + c as u64,
        established: n % 89,
        failed: (n % 97 + c as u64).saturating_sub(n % 89),
        closed: n % 83,
    }
}

fn inb(i: u32, c: usize) -> InCounters {
    InCounters {
        accepted: u64::from(i % 91) + c as u64,
        closed: u64::from(i % 79),
    }
}

fn proc_key(i: u32) -> ProcKey {
    let mut comm = [0u8; 16];
    let name = format!("work{}", i % 8);
    comm[..name.len()].copy_from_slice(name.as_bytes());
    ProcKey {
        cgroup: 1 + u64::from(i % 8),
        tgid: 4_190_000 + i % 8,
        cohort: if i.is_multiple_of(2) { 1 } else { 2 },
        comm,
        addr: addr(i),
    }
}

/// Keys that also have an LRU entry (a connection begun while no row was free): their counts
/// are twice those of their row.
fn merged(i: u32) -> bool {
    i.is_multiple_of(50)
}

/// Keys past the rows, in the LRU maps only (addresses apart from the census ones).
const LRU_ONLY: u32 = 100;

fn lru_only(k: u32) -> u32 {
    N + 2 * CENSUS + k
}

/// One row table filled from userspace: key `i` in row `i`, its per-CPU counts in the row's slots
/// (`cpu * rows + row`, as the kernel counts).
fn fill_rows<K: aya::Pod, V: aya::Pod>(
    t: &mut Tracer,
    [keys, rows]: [&str; 2],
    ncpus: usize,
    key: impl Fn(u32) -> K,
    value: impl Fn(u32, usize) -> V,
) {
    let mut k: Array<&mut MapData, K> = Array::try_from(t.ebpf.map_mut(keys).unwrap()).unwrap();
    let cap = k.len();
    for i in 0..N {
        k.set(i, key(i), 0).unwrap();
    }
    let mut r: Array<&mut MapData, V> = Array::try_from(t.ebpf.map_mut(rows).unwrap()).unwrap();
    assert_eq!(r.len(), cap * ncpus as u32);
    for i in 0..N {
        for c in 0..ncpus {
            r.set(c as u32 * cap + i, value(i, c), 0).unwrap();
        }
    }
}

fn fill(t: &mut Tracer, ncpus: usize) {
    fill_rows(t, [names::DEST_KEYS, names::DEST_ROWS], ncpus, addr, out);
    fill_rows(t, [names::LOCAL_KEYS, names::LOCAL_ROWS], ncpus, addr, inb);
    fill_rows(
        t,
        [names::PROCS_KEYS, names::PROCS_ROWS],
        ncpus,
        proc_key,
        out,
    );
    // As the kernel would have counted them: N rows taken in each table (all on CPU 0).
    let mut stats: PerCpuArray<&mut MapData, u64> =
        PerCpuArray::try_from(t.ebpf.map_mut(names::STATS).unwrap()).unwrap();
    for slot in [STAT_DEST_ROWS, STAT_LOCAL_ROWS, STAT_PROC_ROWS] {
        let taken = per_cpu(ncpus, |c| if c == 0 { u64::from(N) } else { 0 });
        stats.set(slot, taken, 0).unwrap();
    }
    // And the LRU entries below, each counted once when the kernel inserted it: the sampler
    // walks an LRU map only once its insert count has moved.
    let merged_keys = u64::from((0..N).filter(|i| merged(*i)).count() as u32);
    for (slot, n) in [
        (STAT_DEST_INSERTS, merged_keys + u64::from(LRU_ONLY)),
        (STAT_LOCAL_INSERTS, merged_keys),
        (STAT_PROC_INSERTS, merged_keys),
    ] {
        stats
            .set(slot, per_cpu(ncpus, |c| if c == 0 { n } else { 0 }), 0)
            .unwrap();
    }
    let mut dest: PerCpuHashMap<&mut MapData, [u8; 16], OutCounters> =
        PerCpuHashMap::try_from(t.ebpf.map_mut(names::DEST).unwrap()).unwrap();
    for i in (0..N).filter(|i| merged(*i)) {
        dest.insert(addr(i), per_cpu(ncpus, |c| out(i, c)), 0)
            .unwrap();
    }
    for k in 0..LRU_ONLY {
        dest.insert(addr(lru_only(k)), per_cpu(ncpus, |c| out(k, c)), 0)
            .unwrap();
    }
    let mut local: PerCpuHashMap<&mut MapData, [u8; 16], InCounters> =
        PerCpuHashMap::try_from(t.ebpf.map_mut(names::LOCAL_IN).unwrap()).unwrap();
    for i in (0..N).filter(|i| merged(*i)) {
        local
            .insert(addr(i), per_cpu(ncpus, |c| inb(i, c)), 0)
            .unwrap();
    }
    let mut procs: PerCpuHashMap<&mut MapData, ProcKey, OutCounters> =
        PerCpuHashMap::try_from(t.ebpf.map_mut(names::PROCS).unwrap()).unwrap();
    for i in (0..N).filter(|i| merged(*i)) {
        procs
            .insert(proc_key(i), per_cpu(ncpus, |c| out(i, c)), 0)
            .unwrap();
    }
}

/// System (kernel) CPU time of this thread: the map syscalls.
fn thread_sys() -> Duration {
    // SAFETY: getrusage writes one rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    Duration::new(ru.ru_stime.tv_sec as u64, ru.ru_stime.tv_usec as u32 * 1000)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "needs root (loads BPF maps): `cargo xtask test` runs it"]
fn snapshot_cost_at_60k_destinations() {
    let p = |s: &str| Prefix::parse(s).unwrap();
    let sets = Sets::new(vec![p("127.10.0.0/16")], vec![p("127.20.0.0/16")]).unwrap();
    let cfg = Config {
        sets: sets.clone(),
        ports: vec![],
        connect: ConnectMode::Derived,
        state: StateMode::Auto,
        max_destinations: 65536,
        max_processes: 65536,
        filters: Default::default(),
        dns_capture: true,
        hooks_only: false,
    };
    let ebpf = super::load_for_test(&cfg);
    let hooks = Hooks {
        connect: ConnectHook::Derived,
        state: "tracepoint",
        fallbacks: vec![],
        tracefs_mounted: false,
        unsent: Err("not attached in this test".into()),
        dns: Err("not attached in this test".into()),
    };
    // Connections open before the start: half to addresses in the maps, half to quiet ones
    // (those get census-only rows), both directions.
    let census: Vec<census::Conn> = (0..2 * CENSUS)
        .flat_map(|j| {
            let a = from_key(addr(if j < CENSUS { j } else { N + j }));
            let local = "127.0.0.1".parse().unwrap();
            [true, false].map(|inbound| census::Conn {
                local: if inbound { a } else { local },
                lport: 1000,
                remote: if inbound { local } else { a },
                rport: 2000 + j as u16,
                inbound,
                inode: 0,
            })
        })
        .collect();
    let mut t = Tracer {
        ebpf,
        hooks: hooks.clone(),
        census,
        warnings: vec![],
        filters: Default::default(),
    };
    let ncpus = aya::util::nr_cpus().unwrap();
    fill(&mut t, ncpus);
    let sampler = super::sampler::Sampler::new(&mut t, sets).unwrap();
    // The rows count once queued: the first sample queues the rest of them.
    sampler.sample().unwrap();
    assert!(sampler.rows_queued());

    let (mut sample_cpu, mut sample_sys) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let (c0, s0) = (thread_cpu(), thread_sys());
        let s = sampler.sample().unwrap();
        sample_cpu.push(thread_cpu() - c0);
        sample_sys.push(thread_sys() - s0);
        assert_eq!(s.destinations.len(), (N + LRU_ONLY + CENSUS) as usize);
        assert_eq!(s.locals.len(), (N + CENSUS) as usize);
        // Every census address has one row carrying its census connection: on top of the
        // map's counts where the address is live, alone where it is quiet.
        for j in 0..2 * CENSUS {
            let live = j < CENSUS;
            let a = from_key(addr(if live { j } else { N + j }));
            let d: Vec<_> = s.destinations.iter().filter(|r| r.addr == a).collect();
            let l: Vec<_> = s.locals.iter().filter(|r| r.addr == a).collect();
            let (o, i) = if live {
                let twice = if merged(j) { 2 } else { 1 };
                let o: Vec<_> = (0..twice * ncpus).map(|c| out(j, c % ncpus)).collect();
                let i: Vec<_> = (0..twice * ncpus).map(|c| inb(j, c % ncpus)).collect();
                (sum_out(&o), sum_in(&i))
            } else {
                Default::default()
            };
            assert_eq!(d.len(), 1, "{a}");
            assert_eq!(l.len(), 1, "{a}");
            assert_eq!(d[0].out, Out::from_kernel(&o, 1), "{a}");
            assert_eq!(l[0].inb, In::from_kernel(&i, 1), "{a}");
        }
        for k in [0, LRU_ONLY - 1] {
            let a = from_key(addr(lru_only(k)));
            let d: Vec<_> = s.destinations.iter().filter(|r| r.addr == a).collect();
            let o: Vec<_> = (0..ncpus).map(|c| out(k, c)).collect();
            assert_eq!(d.len(), 1, "{a}");
            assert_eq!(d[0].out, Out::from_kernel(&sum_out(&o), 0), "{a}");
        }
        // One row per process and cohort (8 processes, each towards one cohort), summing its
        // destinations: one per key, a key's LRU entry merged into its row (counts twice).
        assert_eq!(s.processes.len(), 8);
        let rows: u64 = s.processes.iter().map(|p| p.destinations).sum();
        assert_eq!(rows, u64::from(N));
        let attempts: u64 = s.processes.iter().map(|p| p.out.attempts).sum();
        let want: u64 = (0..N)
            .flat_map(|i| (0..ncpus).map(move |c| (i, c)))
            .map(|(i, c)| out(i, c).attempts * if merged(i) { 2 } else { 1 })
            .sum();
        assert_eq!(attempts, want);
        assert_eq!(s.maps.destinations.live, u64::from(N + LRU_ONLY));
        assert_eq!(s.evicted.destinations, 0);
    }

    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = Writer::new(Box::new(Shared(buf.clone())), TOP);
    let info = RunInfo {
        started_at: SystemTime::now(),
        host: "test".into(),
        kernel: "test".into(),
        hooks,
        old: vec![],
        new: vec![],
        ports: vec![],
        filters: Default::default(),
        interval_ms: 1000,
        max_destinations: 65536,
        census_outbound: 0,
        census_inbound: 0,
        top: TOP,
        analysis: Params::default(),
        census_owners: vec![],
        cutover_at: None,
        watch_dns: vec![],
        reconcile_every: None,
        metrics_addr: None,
    };
    let sinks: Vec<Box<dyn Sink>> = vec![Box::new(writer)];
    let source = crate::watch::KernelSource::new(t, sampler, vec![]);
    let mut session = Session::new(Box::new(source), info, sinks, vec![]).unwrap();
    let fixed = Fixed {
        destinations: TOP,
        processes: TOP,
        ..Default::default()
    };
    let (mut tick_cpu, mut tick_sys, mut metrics_cpu) = (vec![], vec![], vec![]);
    let mut text = String::new();
    for _ in 0..ROUNDS {
        let prev = session.last.clone();
        let (c0, s0) = (thread_cpu(), thread_sys());
        session.tick().unwrap();
        let c1 = thread_cpu();
        tick_sys.push(thread_sys() - s0);
        let frame = Frame {
            cur: &session.last,
            prev: &prev,
            snapshots: session.snapshots,
        };
        text = render(
            &fixed,
            Some(&frame),
            &Milestones::default(),
            Format::Prometheus,
        );
        text.push_str(&render(
            &fixed,
            Some(&frame),
            &Milestones::default(),
            Format::OpenMetrics,
        ));
        metrics_cpu.push(thread_cpu() - c1);
        tick_cpu.push(c1 - c0);
    }

    let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    let last = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["type"] == "snapshot")
        .expect("a snapshot line");
    assert_eq!(last["destinations"].as_array().unwrap().len(), TOP);
    assert_eq!(last["processes"].as_array().unwrap().len(), 8);
    assert!(
        text.contains("tracer_destination"),
        "per-destination series"
    );

    let (s, t, m) = (median(sample_cpu), median(tick_cpu), median(metrics_cpu));
    println!(
        "snapshot cost at {N} destinations (thread CPU, median of {ROUNDS}): sample {:.2} ms (kernel {:.2} ms), \
         tick (sample + analysis + NDJSON) {:.2} ms (kernel {:.2} ms), metrics render {:.2} ms",
        ms(s),
        ms(median(sample_sys)),
        ms(t),
        ms(median(tick_sys)),
        ms(m)
    );
    if let Ok(path) = std::env::var("SNAPSHOT_COST_DUMP") {
        let mut last = last;
        for k in ["ts", "elapsed_ms"] {
            last[k] = Value::Null;
        }
        let text: String = text
            .lines()
            .filter(|l| !l.contains("elapsed") && !l.contains("sample_duration"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(path, format!("{last}\n{text}")).unwrap();
    }
}
