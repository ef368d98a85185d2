//! The contenders, each started before the workload and stopped after it: nothing, tracer (per
//! connect hook this kernel offers), bpftrace on the same tracepoint, the `/proc/net/tcp` awk loop
//! and the `ss` loop. Stopping one returns what it counted for the workload's own addresses.

use std::{
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Old and new sets given to tracer: the project's loopback test ranges.
pub const OLD: &str = "127.10.0.0/16";
pub const NEW: &str = "127.20.0.0/16";

/// The same transitions per destination, on the same tracepoint, the way an operator would write
/// it in bpftrace. `ready` is printed once the probe is attached.
pub const BPFTRACE_SCRIPT: &str = "BEGIN { printf(\"ready\\n\"); } \
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ \
{ @t[ntop(args->daddr), args->oldstate, args->newstate] = count(); }";

/// The floor: the same probe with only the protocol filter, no map. Measured next to the others
/// in the BPF cost rounds, it shows what attaching to this tracepoint costs on this host today.
pub const BPFTRACE_FLOOR_SCRIPT: &str = "BEGIN { printf(\"ready\\n\"); } \
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { }";

/// The status quo pipeline from the issue, once a second.
pub const PROCSCAN_PIPELINE: &str =
    "cat /proc/net/tcp /proc/net/tcp6 | awk '$4==\"01\"{print $3}' | cut -d: -f1 | sort | uniq -c";
pub const SS_COMMAND: &str = "ss -tn state established";

/// Paths every contender needs.
pub struct Ctx {
    pub tracer: PathBuf,
    pub agent: PathBuf,
    pub bpftrace: PathBuf,
    pub work: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Contender {
    Baseline,
    Tracer(String),
    Bpftrace,
    /// BPF cost rounds only: bpftrace with an empty action.
    BpftraceFloor,
    /// BPF cost rounds only: tracer in this mode with `--hooks-only`, every one of its programs
    /// attached and returning at once. What tracer's set of hooks costs before any work.
    TracerHooksOnly(String),
    ProcScan,
    Ss,
}

impl Contender {
    /// Short stable key for results.json.
    pub fn key(&self) -> String {
        match self {
            Contender::Baseline => "none".into(),
            Contender::Tracer(m) => format!("tracer-{}", m.replace(',', "-")),
            Contender::Bpftrace => "bpftrace".into(),
            Contender::BpftraceFloor => "bpftrace-floor".into(),
            Contender::TracerHooksOnly(_) => "hooks-only".into(),
            Contender::ProcScan => "procscan".into(),
            Contender::Ss => "ss".into(),
        }
    }

    /// Name for the tables.
    pub fn label(&self) -> String {
        match self {
            Contender::Baseline => "none (baseline)".into(),
            Contender::Tracer(m) => match m.split_once(',') {
                Some((connect, state)) => format!("tracer (connect hook {connect}, state {state})"),
                None => format!("tracer (connect hook {m})"),
            },
            Contender::Bpftrace => "bpftrace (same tracepoint)".into(),
            Contender::BpftraceFloor => "bpftrace, protocol filter only (floor)".into(),
            Contender::TracerHooksOnly(m) => {
                format!("tracer's programs returning at once (hooks only, {m})")
            }
            Contender::ProcScan => "/proc/net/tcp awk loop, 1 s".into(),
            Contender::Ss => "`ss -tn state established`, 1 s".into(),
        }
    }

    pub fn is_bpf(&self) -> bool {
        matches!(
            self,
            Contender::Tracer(_)
                | Contender::Bpftrace
                | Contender::BpftraceFloor
                | Contender::TracerHooksOnly(_)
        )
    }

    /// Start it and wait until it is really watching; `max` bounds the scanner loops.
    pub fn start(&self, ctx: &Ctx, max: Duration) -> Result<Running> {
        let out = ctx.work.join(format!("{}.out", self.key()));
        let err = ctx.work.join(format!("{}.err", self.key()));
        let _ = std::fs::remove_file(&out);
        let child = match self {
            Contender::Baseline => None,
            Contender::Tracer(mode) | Contender::TracerHooksOnly(mode) => {
                let extra: &[&str] = match self {
                    Contender::TracerHooksOnly(_) => &["--hooks-only"],
                    _ => &[],
                };
                Some(start_tracer(ctx, mode, "1s", 200, extra, &out, &err)?)
            }
            Contender::Bpftrace | Contender::BpftraceFloor => {
                let script = if *self == Contender::Bpftrace {
                    BPFTRACE_SCRIPT
                } else {
                    BPFTRACE_FLOOR_SCRIPT
                };
                let child = Command::new(&ctx.bpftrace)
                    .args(["-e", script])
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&out)?)
                    .stderr(std::fs::File::create(&err)?)
                    .spawn()
                    .context("cannot start bpftrace")?;
                let mut child = child;
                wait_for(&mut child, &out, &err, "ready", Duration::from_secs(60))?;
                Some(child)
            }
            Contender::ProcScan | Contender::Ss => {
                let cmd = if *self == Contender::Ss {
                    SS_COMMAND
                } else {
                    PROCSCAN_PIPELINE
                };
                let script = format!(
                    "end=$((SECONDS+{})); while [ $SECONDS -lt $end ]; do {cmd}; echo --; sleep 1; done",
                    max.as_secs() + 1
                );
                let mut child = Command::new("bash")
                    .args(["-c", &script])
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&out)?)
                    .stderr(std::fs::File::create(&err)?)
                    .spawn()
                    .context("cannot start bash")?;
                wait_for(&mut child, &out, &err, "--", Duration::from_secs(30))?;
                Some(child)
            }
        };
        Ok(Running {
            contender: self.clone(),
            child,
            out,
            err,
        })
    }
}

/// `tracer watch --headless` writing NDJSON to `out`, started and traced (meta line written).
/// `top` rows per line: the default 20 for the cost figures, more for the accuracy runs so the
/// workload's addresses are found among other tests' destinations.
pub fn start_tracer(
    ctx: &Ctx,
    mode: &str,
    interval: &str,
    top: usize,
    extra: &[&str],
    out: &Path,
    err: &Path,
) -> Result<Child> {
    // A stale file from the previous run would look ready at once.
    let _ = std::fs::remove_file(out);
    // `mode` is a connect hook, or `connect,state` with the state hook forced too.
    let (connect, state) = mode.split_once(',').unwrap_or((mode, "auto"));
    let mut child = Command::new(&ctx.tracer)
        .args(["watch", "--headless", "--interval", interval, "--json"])
        .arg(out)
        .args(["--old", OLD, "--new", NEW, "--connect-hook", connect])
        .args(["--state-hook", state, "--top"])
        .arg(top.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err)?)
        .spawn()
        .context("cannot start tracer")?;
    wait_for(
        &mut child,
        out,
        err,
        "\"type\":\"meta\"",
        Duration::from_secs(60),
    )?;
    Ok(child)
}

/// Wait (bounded) until `out` contains `marker`; fail with the child's stderr if it exits first.
fn wait_for(child: &mut Child, out: &Path, err: &Path, marker: &str, max: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        if std::fs::read_to_string(out)
            .unwrap_or_default()
            .contains(marker)
        {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "exited before it was ready ({st}): {}",
                std::fs::read_to_string(err).unwrap_or_default().trim()
            );
        }
        if t0.elapsed() > max {
            let _ = child.kill();
            bail!("not ready within {max:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Signal, then wait at most 20 s (then kill).
pub fn stop_child(child: &mut Child, sig: i32, group: bool) -> Result<ExitStatus> {
    let pid = child.id() as i32;
    // SAFETY: kill(2) on our own child (or its process group, which it leads).
    unsafe { libc::kill(if group { -pid } else { pid }, sig) };
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            bail!("did not stop within 20 s of signal {sig}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// What a contender counted for the workload's addresses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counted {
    /// Connections counted (attempts for the BPF contenders, sightings for the scanners).
    pub connections: Option<u64>,
    pub lost_events: Option<u64>,
}

pub struct Running {
    pub contender: Contender,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop it and read what it counted towards `targets`.
    pub fn stop(mut self, targets: &[Ipv4Addr]) -> Result<Counted> {
        let Some(child) = self.child.as_mut() else {
            return Ok(Counted::default());
        };
        let label = self.contender.label();
        let scanner = matches!(self.contender, Contender::ProcScan | Contender::Ss);
        let sig = if scanner { libc::SIGTERM } else { libc::SIGINT };
        let st = stop_child(child, sig, scanner).with_context(|| label.clone())?;
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let fail = |what: &str| {
            anyhow::anyhow!(
                "{label}: {what} ({st}): {}",
                std::fs::read_to_string(&self.err)
                    .unwrap_or_default()
                    .trim()
            )
        };
        Ok(match &self.contender {
            Contender::Baseline => Counted::default(),
            Contender::Tracer(_) | Contender::TracerHooksOnly(_) => {
                if !st.success() {
                    return Err(fail("failed"));
                }
                let counted =
                    tracer_counted(&text, targets).ok_or_else(|| fail("no summary line"))?;
                // With --hooks-only its programs ran (the BPF round checks run counts) and must
                // have counted nothing.
                let hooks_only = matches!(self.contender, Contender::TracerHooksOnly(_));
                if hooks_only && counted.connections != Some(0) {
                    return Err(fail(&format!(
                        "counted {:?} attempts with --hooks-only, expected 0",
                        counted.connections
                    )));
                }
                counted
            }
            Contender::BpftraceFloor => Counted::default(),
            Contender::Bpftrace => Counted {
                connections: Some(bpftrace_attempts(&text, targets)),
                lost_events: None,
            },
            Contender::ProcScan => Counted {
                connections: Some(procscan_sightings(&text, targets)),
                lost_events: None,
            },
            Contender::Ss => Counted {
                connections: Some(ss_sightings(&text, targets)),
                lost_events: None,
            },
        })
    }
}

/// Attempts towards `targets` in tracer's summary line, and its lost events.
pub fn tracer_counted(ndjson: &str, targets: &[Ipv4Addr]) -> Option<Counted> {
    let summary: Value = serde_json::from_str(ndjson.lines().last()?).ok()?;
    if summary["type"] != "summary" {
        return None;
    }
    let names: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    let attempts = summary["destinations"]
        .as_array()?
        .iter()
        .filter(|d| {
            d["addr"]
                .as_str()
                .is_some_and(|a| names.iter().any(|n| n == a))
        })
        .filter_map(|d| d["attempts"].as_u64())
        .sum();
    Some(Counted {
        connections: Some(attempts),
        lost_events: summary["lost_events"].as_u64(),
    })
}

/// `CLOSE -> SYN_SENT` (7 -> 2) transitions towards `targets` in bpftrace's map dump.
pub fn bpftrace_attempts(text: &str, targets: &[Ipv4Addr]) -> u64 {
    let keys: Vec<String> = targets.iter().map(|t| format!("@t[{t}, 7, 2]:")).collect();
    text.lines()
        .filter_map(|l| {
            let k = keys.iter().find(|k| l.starts_with(k.as_str()))?;
            l[k.len()..].trim().parse::<u64>().ok()
        })
        .sum()
}

/// `/proc/net/tcp` prints an IPv4 address as the hex of its in-memory (network order) u32.
pub fn proc_hex(a: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_ne_bytes(a.octets()))
}

/// Established connections towards `targets` summed over all scans of the awk pipeline (each
/// short connection lives far less than a scan period, so no connection is seen twice).
pub fn procscan_sightings(text: &str, targets: &[Ipv4Addr]) -> u64 {
    let hex: Vec<String> = targets.iter().map(|t| proc_hex(*t)).collect();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let n: u64 = f.next()?.parse().ok()?;
            let addr = f.next()?;
            hex.iter().any(|h| h == addr).then_some(n)
        })
        .sum()
}

/// Lines of `ss -tn state established` whose peer is one of `targets`, over all runs.
pub fn ss_sightings(text: &str, targets: &[Ipv4Addr]) -> u64 {
    let peers: Vec<String> = targets.iter().map(|t| format!("{t}:")).collect();
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|p| peers.iter().any(|x| p.starts_with(x.as_str())))
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Vec<Ipv4Addr> {
        vec![
            "127.10.66.1".parse().unwrap(),
            "127.20.66.1".parse().unwrap(),
        ]
    }

    #[test]
    fn proc_hex_is_little_endian_memory_order() {
        assert_eq!(proc_hex("127.0.0.1".parse().unwrap()), "0100007F");
        assert_eq!(proc_hex("127.10.66.1".parse().unwrap()), "01420A7F");
    }

    #[test]
    fn scanners_count_only_the_targets() {
        let scan =
            "      3 0100007F\n      2 01420A7F\n--\n      1 01421A7F\n      4 0142147F\n--\n";
        assert_eq!(procscan_sightings(scan, &t()), 2 + 4);
        let ss = "Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n\
                  0 0 127.0.0.1:40000 127.10.66.1:5000\n0 0 127.10.66.1:5000 127.0.0.1:40000\n\
                  0 0 127.0.0.1:40002 127.20.66.1:5001\n--\n0 0 127.0.0.1:1 127.10.66.10:5\n";
        assert_eq!(ss_sightings(ss, &t()), 2);
    }

    #[test]
    fn bpftrace_counts_close_to_syn_sent_per_target() {
        let out = "ready\n\n\n@t[127.10.66.1, 7, 2]: 100\n@t[127.10.66.1, 2, 1]: 99\n\
                   @t[127.20.66.1, 7, 2]: 50\n@t[127.10.66.10, 7, 2]: 5\n";
        assert_eq!(bpftrace_attempts(out, &t()), 150);
    }

    #[test]
    fn tracer_summary_per_target() {
        let nd = "{\"type\":\"meta\"}\n{\"type\":\"summary\",\"lost_events\":3,\"destinations\":[\
                  {\"addr\":\"127.10.66.1\",\"attempts\":10},{\"addr\":\"127.20.66.1\",\"attempts\":5},\
                  {\"addr\":\"127.10.0.1\",\"attempts\":7}]}\n";
        let c = tracer_counted(nd, &t()).unwrap();
        assert_eq!((c.connections, c.lost_events), (Some(15), Some(3)));
        assert!(tracer_counted("{\"type\":\"meta\"}\n", &t()).is_none());
    }
}
