//! The exposition: a snapshot as Prometheus text (0.0.4) or OpenMetrics 1.0 text. Pure: no I/O,
//! so every name, type and escape is unit-tested with an independent parser.
//!
//! Families are kept in OpenMetrics form (a counter family `x` has the sample `x_total`, an info
//! family `x` has `x_info`); the Prometheus form names the metadata after the sample and types
//! info as gauge. Both formats carry the same series with the same values.

use std::{fmt::Write as _, time::SystemTime};

use crate::model::{
    cohort::Cohort,
    counters::Out,
    latency::{Hist, bucket_upper_s},
    share,
    snapshot::Snapshot,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what `curl` and older scrapers get.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`: what Prometheus asks for first.
    OpenMetrics,
}

impl Format {
    /// Content negotiation: OpenMetrics when the client accepts it, else the classic format.
    pub fn from_accept(accept: &str) -> Format {
        if accept
            .to_ascii_lowercase()
            .contains("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What is fixed for the run.
#[derive(Clone, Debug, Default)]
pub struct Fixed {
    pub version: String,
    /// Hooks in use (empty until tracing has started).
    pub connect_hook: String,
    pub state_hook: String,
    /// `cgroup+syscall` when connects failing before a SYN are counted, else `none`.
    pub unsent_hook: String,
    /// `--label key=value`, on every series.
    pub labels: Vec<(String, String)>,
    /// `--metrics-destinations N`: per-destination series for the top N (0 = none).
    pub destinations: usize,
    /// `--metrics-processes N`: per-process series for the top N (0 = none).
    pub processes: usize,
}

/// Milestones of the move, each absent until known, from the failover analysis.
#[derive(Clone, Debug, Default)]
pub struct Milestones {
    /// When the move was declared (`tracer_cutover_time_seconds`, Unix time).
    pub cutover: Option<SystemTime>,
    /// Declaration gaps known so far (`tracer_declaration_gap_seconds{basis,level}`): basis
    /// `attempts` or `open`, level in percent, seconds from the cutover until the new side's
    /// share reached the level and held it (negative: it moved before it was declared).
    pub gaps: Vec<(&'static str, u32, f64)>,
    /// Whether the old side has drained (`tracer_old_drained`, 0 or 1).
    pub drained: Option<bool>,
    /// Straggler processes per cause (`tracer_stragglers{cause}`), once a cutover is known.
    pub stragglers: Option<Vec<(&'static str, u64)>>,
}

/// One sampling pass: the snapshot, the one before it (for per-interval shares), and how many
/// passes the run has made.
pub struct Frame<'a> {
    pub cur: &'a Snapshot,
    pub prev: &'a Snapshot,
    pub snapshots: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Info,
    Histogram,
}

#[derive(Clone, Copy, Debug)]
enum Num {
    Int(u64),
    Float(f64),
}

struct Family {
    /// OpenMetrics family name (no `_total` / `_info`).
    name: &'static str,
    kind: Kind,
    help: &'static str,
    unit: Option<&'static str>,
    labels: &'static [&'static str],
    samples: Vec<Sample>,
}

/// One line: the suffix after the family's sample name (`_bucket`, `_sum`, `_count` of a
/// histogram; empty otherwise), label values in the order of the family's labels, then `le`.
struct Sample {
    suffix: &'static str,
    values: Vec<String>,
    le: Option<f64>,
    n: Num,
}

impl Family {
    fn new(
        name: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Family {
        Family {
            name,
            kind,
            help,
            unit: None,
            labels,
            samples: vec![],
        }
    }

    fn unit(mut self, unit: &'static str) -> Family {
        self.unit = Some(unit);
        self
    }

    fn int(&mut self, values: &[&str], n: u64) {
        self.push(values, Num::Int(n));
    }

    fn float(&mut self, values: &[&str], x: f64) {
        self.push(values, Num::Float(x));
    }

    fn push(&mut self, values: &[&str], n: Num) {
        self.push_part("", values, None, n);
    }

    fn push_part(&mut self, suffix: &'static str, values: &[&str], le: Option<f64>, n: Num) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let values = values.iter().map(|s| s.to_string()).collect();
        self.samples.push(Sample {
            suffix,
            values,
            le,
            n,
        });
    }

    /// A log2 latency histogram as cumulative `le` buckets (those of `LE_BUCKETS`, then
    /// +Inf), `_sum` (bucket midpoints) and `_count`.
    fn histogram(&mut self, values: &[&str], h: &Hist) {
        for i in LE_BUCKETS {
            let n = Num::Int(h.count_upto(i));
            self.push_part("_bucket", values, Some(bucket_upper_s(i)), n);
        }
        let count = h.count();
        self.push_part("_bucket", values, Some(f64::INFINITY), Num::Int(count));
        self.push_part("_sum", values, None, Num::Float(h.approx_sum_s()));
        self.push_part("_count", values, None, Num::Int(count));
    }
}

/// Label values: backslash, double quote and newline escaped (both formats).
pub fn escape_label(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// HELP text: backslash and newline escaped; OpenMetrics also escapes double quotes.
fn escape_help(s: &str, fmt: Format) -> String {
    let o = s.replace('\\', "\\\\").replace('\n', "\\n");
    match fmt {
        Format::Prometheus => o,
        Format::OpenMetrics => o.replace('"', "\\\""),
    }
}

fn write_family(out: &mut String, f: &Family, user: &[(String, String)], fmt: Format) {
    if f.samples.is_empty() {
        return; // absent, not zero: e.g. the share while there is no traffic
    }
    let sample_name = match f.kind {
        Kind::Counter => format!("{}_total", f.name),
        Kind::Info => format!("{}_info", f.name),
        Kind::Gauge | Kind::Histogram => f.name.to_string(),
    };
    let (meta_name, type_name) = match (fmt, f.kind) {
        (Format::OpenMetrics, Kind::Info) => (f.name.to_string(), "info"),
        (Format::OpenMetrics, k) => (f.name.to_string(), kind_name(k)),
        (Format::Prometheus, Kind::Info) => (sample_name.clone(), "gauge"),
        (Format::Prometheus, k) => (sample_name.clone(), kind_name(k)),
    };
    let _ = writeln!(out, "# HELP {meta_name} {}", escape_help(f.help, fmt));
    let _ = writeln!(out, "# TYPE {meta_name} {type_name}");
    if let (Format::OpenMetrics, Some(u)) = (fmt, f.unit) {
        let _ = writeln!(out, "# UNIT {meta_name} {u}");
    }
    for Sample {
        suffix,
        values,
        le,
        n,
    } in &f.samples
    {
        out.push_str(&sample_name);
        out.push_str(suffix);
        let le = le.map(fmt_float);
        let pairs = f
            .labels
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .chain(le.as_deref().map(|v| ("le", v)))
            .chain(user.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut first = true;
        for (k, v) in pairs {
            out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        if !first {
            out.push('}');
        }
        match n {
            Num::Int(i) => {
                let _ = writeln!(out, " {i}");
            }
            Num::Float(x) => {
                let _ = writeln!(out, " {}", fmt_float(*x));
            }
        }
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Info => "gauge",
        Kind::Histogram => "histogram",
    }
}

/// Floats as both formats accept them (`NaN`, `+Inf`, plain decimals).
fn fmt_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{x}")
    }
}

/// Latency buckets exported: `le` from 2^10 ns (~1 us) to 2^36 ns (~69 s), a factor of two
/// apart like the kernel's; shorter durations are in the first, longer ones only in +Inf.
const LE_BUCKETS: std::ops::RangeInclusive<usize> = 9..=35;

const CD: &[&str] = &["cohort", "direction"];
const CDR: &[&str] = &["cohort", "direction", "reason"];
const OUTB: &str = "outbound";
const INB: &str = "inbound";

/// Per cohort and direction: the counters of the move itself.
fn connection_families(s: &Snapshot) -> Vec<Family> {
    let mut attempts = Family::new(
        "tracer_connection_attempts",
        Kind::Counter,
        CD,
        "Outbound connection attempts (active opens) since start.",
    );
    let mut established = Family::new(
        "tracer_connections_established",
        Kind::Counter,
        CD,
        "Connections that reached ESTABLISHED since start (inbound: accepted).",
    );
    let mut failed = Family::new(
        "tracer_connections_failed",
        Kind::Counter,
        CDR,
        "Outbound connects that failed since start, by reason (read from the socket's error).",
    );
    let mut closed = Family::new(
        "tracer_connections_closed",
        Kind::Counter,
        CD,
        "Established connections that closed since start (pre-existing ones included).",
    );
    let mut open = Family::new(
        "tracer_connections_open",
        Kind::Gauge,
        CD,
        "Connections established now, those open before the start included.",
    );
    for c in Cohort::ALL {
        let (o, i) = (s.cohort_out(c), s.cohort_in(c));
        let name = c.name();
        attempts.int(&[name, OUTB], o.attempts);
        established.int(&[name, OUTB], o.established);
        established.int(&[name, INB], i.accepted);
        for (reason, n) in s.reasons[c as usize].named() {
            failed.int(&[name, OUTB, reason], n);
        }
        closed.int(&[name, OUTB], o.closed);
        closed.int(&[name, INB], i.closed);
        open.int(&[name, OUTB], o.open);
        open.int(&[name, INB], i.open);
    }
    vec![attempts, established, failed, closed, open]
}

fn share_family(cur: &Snapshot, prev: &Snapshot) -> Family {
    let mut f = Family::new(
        "tracer_new_share_ratio",
        Kind::Gauge,
        &["basis"],
        "Outbound share of the new side: new / (old + new), of the attempts in the last interval or of the open connections; absent while both are zero.",
    );
    if let Some(s) = share::attempts(cur, prev) {
        f.float(&["attempts"], s.ratio());
    }
    if let Some(s) = share::open(cur) {
        f.float(&["open"], s.ratio());
    }
    f
}

/// Connect latency per cohort (outbound connects that reached ESTABLISHED).
fn latency_family(s: &Snapshot) -> Family {
    let mut f = Family::new(
        "tracer_connect_latency_seconds",
        Kind::Histogram,
        &["cohort"],
        "Time from connect to ESTABLISHED, outbound, since start. Buckets are exact (the kernel's log2 histogram); _sum is approximated by bucket midpoints (within a factor of 1.5).",
    );
    for c in Cohort::ALL {
        f.histogram(&[c.name()], &s.cohort_latency(c).established);
    }
    f
}

fn milestone_families(m: &Milestones) -> Vec<Family> {
    let mut cutover = Family::new(
        "tracer_cutover_time_seconds",
        Kind::Gauge,
        &[],
        "When the move was declared (--cutover-at, the live view's c key or a DNS change), Unix time; absent until then.",
    )
    .unit("seconds");
    if let Some(t) = m.cutover {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        cutover.float(&[], secs);
    }
    let mut gap = Family::new(
        "tracer_declaration_gap_seconds",
        Kind::Gauge,
        &["basis", "level"],
        "From the cutover until the new side's share (of attempts or open connections) reached the level (percent) and held it; negative if it moved first; absent until known.",
    )
    .unit("seconds");
    for (basis, level, secs) in &m.gaps {
        gap.float(&[basis, &level.to_string()], *secs);
    }
    let mut drained = Family::new(
        "tracer_old_drained",
        Kind::Gauge,
        &[],
        "1 once the old side has drained, 0 while it has not; absent until known.",
    );
    if let Some(d) = m.drained {
        drained.int(&[], d.into());
    }
    let mut stragglers = Family::new(
        "tracer_stragglers",
        Kind::Gauge,
        &["cause"],
        "Processes still on the old side after the cutover, per cause (pinned: holds connections opened before it; dns_cache: fresh connects no DNS answer explains; stale_resolver: got old answers after the TTL); absent until a cutover.",
    );
    for (cause, n) in m.stragglers.iter().flatten() {
        stragglers.int(&[cause], *n);
    }
    vec![cutover, gap, drained, stragglers]
}

const DC: &[&str] = &["destination", "cohort"];

/// Opt-in: the top N destinations by activity (bounded, as label cardinality is the risk).
fn destination_families(s: &Snapshot, n: usize) -> Vec<Family> {
    let mut attempts = Family::new(
        "tracer_destination_connection_attempts",
        Kind::Counter,
        DC,
        "Connection attempts per destination address (top --metrics-destinations by activity).",
    );
    let mut established = Family::new(
        "tracer_destination_connections_established",
        Kind::Counter,
        DC,
        "Connections established per destination address.",
    );
    let mut failed = Family::new(
        "tracer_destination_connections_failed",
        Kind::Counter,
        DC,
        "Failed connects per destination address.",
    );
    let mut closed = Family::new(
        "tracer_destination_connections_closed",
        Kind::Counter,
        DC,
        "Closed connections per destination address.",
    );
    let mut open = Family::new(
        "tracer_destination_connections_open",
        Kind::Gauge,
        DC,
        "Open connections per destination address.",
    );
    for r in s.top_destinations(n) {
        let (a, c) = (r.addr.to_string(), r.cohort.name());
        let v = [a.as_str(), c];
        attempts.int(&v, r.out.attempts);
        established.int(&v, r.out.established);
        failed.int(&v, r.out.failed);
        closed.int(&v, r.out.closed);
        open.int(&v, r.out.open);
    }
    vec![attempts, established, failed, closed, open]
}

const PC: &[&str] = &["pid", "comm", "cohort"];

/// Opt-in: the top N processes by attempts plus open connections.
fn process_families(s: &Snapshot, n: usize) -> Vec<Family> {
    // The same processes, in the same order, as the NDJSON rows and the live view (one
    // aggregation, `model::process`). Two of them that share pid and comm (a pid reused in
    // another cgroup) share one label set, so their counts are added.
    type Labels = (u32, std::sync::Arc<str>);
    let mut rows: Vec<(Labels, [Out; 3])> = vec![];
    for p in crate::model::process::aggregate(&s.processes)
        .into_iter()
        .take(n)
    {
        let key = (p.pid, p.comm.clone());
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, outs)) => {
                for (o, add) in outs.iter_mut().zip(p.out.iter()) {
                    o.add(add);
                }
            }
            None => rows.push((key, p.out)),
        }
    }
    let mut attempts = Family::new(
        "tracer_process_connection_attempts",
        Kind::Counter,
        PC,
        "Connection attempts per process (top --metrics-processes), by cohort of the destination.",
    );
    let mut open = Family::new(
        "tracer_process_connections_open",
        Kind::Gauge,
        PC,
        "Open outbound connections per process, by cohort of the destination.",
    );
    for ((pid, comm), outs) in rows {
        let pid = pid.to_string();
        for c in Cohort::ALL {
            let v = [pid.as_str(), &*comm, c.name()];
            attempts.int(&v, outs[c as usize].attempts);
            open.int(&v, outs[c as usize].open);
        }
    }
    vec![attempts, open]
}

/// The reader's own health: evictions, losses, map fill, sampling cost.
fn self_families(s: &Snapshot, snapshots: u64) -> Vec<Family> {
    let maps = [
        ("destinations", s.evicted.destinations, s.maps.destinations),
        ("locals", s.evicted.locals, s.maps.locals),
        ("processes", s.evicted.processes, s.maps.processes),
    ];
    let mut evictions = Family::new(
        "tracer_evictions",
        Kind::Counter,
        &["map"],
        "Entries evicted from a bounded per-address map (cohort totals stay exact).",
    );
    let mut fill = Family::new(
        "tracer_map_fill_ratio",
        Kind::Gauge,
        &["map"],
        "Entries in use / capacity of a bounded map; near 1 means evictions.",
    );
    for (name, ev, used) in maps {
        evictions.int(&[name], ev);
        fill.float(&[name], used.ratio());
    }
    let mut lost = Family::new(
        "tracer_lost_events",
        Kind::Counter,
        &[],
        "BPF program runs the kernel skipped (recursion on one CPU): counts may be short by this many.",
    );
    lost.int(&[], s.lost_events);
    let mut dur = Family::new(
        "tracer_sample_duration_seconds",
        Kind::Gauge,
        &[],
        "How long the last sampling pass over the BPF maps took.",
    )
    .unit("seconds");
    dur.float(&[], s.sample_duration.as_secs_f64());
    let mut snaps = Family::new(
        "tracer_snapshots",
        Kind::Counter,
        &[],
        "Sampling passes since start (the snapshot these values come from).",
    );
    snaps.int(&[], snapshots);
    vec![evictions, fill, lost, dur, snaps]
}

fn info_families(fixed: &Fixed) -> Vec<Family> {
    let mut hooks = Family::new(
        "tracer_hooks",
        Kind::Info,
        &["connect", "state", "unsent"],
        "Kernel hooks in use: how connect attempts, state changes and connects failing before a SYN are counted.",
    );
    if !fixed.connect_hook.is_empty() {
        hooks.int(
            &[&fixed.connect_hook, &fixed.state_hook, &fixed.unsent_hook],
            1,
        );
    }
    let mut build = Family::new(
        "tracer_build",
        Kind::Info,
        &["version"],
        "The tracer build serving these metrics.",
    );
    build.int(&[&fixed.version], 1);
    vec![hooks, build]
}

/// The whole exposition. Without a frame (before the first sample) only the info metrics.
pub fn render(
    fixed: &Fixed,
    frame: Option<&Frame>,
    milestones: &Milestones,
    fmt: Format,
) -> String {
    let mut families = Vec::new();
    if let Some(f) = frame {
        families.extend(connection_families(f.cur));
        families.push(share_family(f.cur, f.prev));
        families.push(latency_family(f.cur));
        families.extend(milestone_families(milestones));
        if fixed.destinations > 0 {
            families.extend(destination_families(f.cur, fixed.destinations));
        }
        if fixed.processes > 0 {
            families.extend(process_families(f.cur, fixed.processes));
        }
        families.extend(self_families(f.cur, f.snapshots));
    }
    families.extend(info_families(fixed));
    let mut out = String::with_capacity(8192);
    for f in &families {
        write_family(&mut out, f, &fixed.labels, fmt);
    }
    if fmt == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
#[path = "exposition_tests.rs"]
mod tests;
