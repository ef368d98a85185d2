//! Command line: `tracer watch`, `tracer probe`. Parse errors become one line and exit code 2.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    kernel::hooks::{ConnectMode, StateMode},
    model::analysis::cutover::CutoverAt,
};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Count TCP connections per destination in the kernel during a move from old to new addresses",
    after_help = crate::caps::HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace connections and sort them into the old and new address sets.
    Watch(Box<WatchArgs>),
    /// Show what this kernel offers and which hooks `watch` would use (with --netns/--cgroup:
    /// what it would filter).
    Probe(ProbeArgs),
    /// Tell the story of a recorded run: cutover, declaration gap, drain, stragglers. Several
    /// files (one per host): the fleet's story on one wall clock.
    Report(ReportArgs),
    /// Before a planned DNS change: every resolver's answer and TTL, and whether the TTL is
    /// low enough (no root needed).
    Preflight(crate::preflight::PreflightArgs),
    /// Write the man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// NDJSON file written by `tracer watch --headless --json FILE`; several (one per host)
    /// for the fleet report.
    #[arg(value_name = "FILE.ndjson", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also draw the new side's share and connects/s over time into this SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Fleet report: the wall-clock step the hosts' snapshots are summed into (default: the
    /// largest interval, coarser for long runs so about 60 steps are shown).
    #[arg(long, value_parser = parse_duration)]
    pub step: Option<Duration>,
}

/// `--netns` and `--cgroup`, for `watch` and `probe`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Count only sockets of this network namespace, filtered in the kernel: a netns file
    /// (/run/netns/NAME, /proc/PID/ns/net), an `ip netns` NAME, or the PID of a process in it.
    #[arg(long, value_name = "PATH|PID")]
    pub netns: Option<String>,
    /// Count only outbound connects by tasks in this cgroup v2 directory or below it
    /// (/sys/fs/cgroup/system.slice/nginx.service, or relative to the cgroup v2 mount),
    /// filtered in the kernel; inbound accepts are not counted with it.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Old side: IP, CIDR, hostname (resolved once) or @file; repeatable, comma-separated.
    #[arg(long, value_name = "SPEC")]
    pub old: Vec<String>,
    /// New side: same forms as --old.
    #[arg(long, value_name = "SPEC")]
    pub new: Vec<String>,
    /// Count only this destination port (inbound: local port); repeatable.
    #[arg(long, value_name = "N")]
    pub port: Vec<u16>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Sampling interval, e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Stop after this long (e.g. 30s, 2h) and write the summary.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// No terminal view: write NDJSON (to stdout unless --json is given).
    #[arg(long)]
    pub headless: bool,
    /// Write NDJSON to PATH, or `-` for stdout.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// How to count connect attempts: the best that works, or one forced.
    #[arg(long, value_enum, default_value = "auto")]
    pub connect_hook: ConnectMode,
    /// How to see state transitions: `tp_btf` (cheaper, kernel 5.5+ with BTF), the classic
    /// `tracepoint`, or the best that works.
    #[arg(long, value_enum, default_value = "auto")]
    pub state_hook: StateMode,
    /// Destinations (and local addresses) counted one by one: the first N each get a row of
    /// their own, a quarter more are kept least recently used first out; cohort totals stay
    /// exact beyond it.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(16..=4_194_304))]
    pub max_destinations: u32,
    /// Rows of destinations and processes per snapshot line.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Serve Prometheus/OpenMetrics text at http://ADDR:PORT/metrics (without --web-config: no
    /// TLS, no authentication; bind to localhost or a private interface).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// TLS and basic auth for --metrics from a Prometheus exporter web config file
    /// (tls_server_config, basic_auth_users with bcrypt hashes); read once at start.
    #[arg(long, value_name = "FILE", requires = "metrics")]
    pub web_config: Option<PathBuf>,
    /// Per-destination series for the top N destinations by activity (0 = none, at most 1000).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "metrics",
          value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub metrics_destinations: u16,
    /// Per-process series for the top N processes (0 = none, at most 100).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "metrics",
          value_parser = clap::value_parser!(u16).range(0..=100))]
    pub metrics_processes: u16,
    /// A label on every metric series, e.g. site=fra1; repeatable.
    #[arg(long, value_name = "KEY=VALUE", requires = "metrics",
          value_parser = crate::metrics::labels::parse)]
    pub label: Vec<(String, String)>,
    /// When the move was declared: `now` or an RFC 3339 time (else the `c` key or the first
    /// DNS change marks it).
    #[arg(long, value_name = "now|RFC3339", value_parser = parse_cutover_at)]
    pub cutover_at: Option<CutoverAt>,
    /// New-side share (percent) that declares the move done; 99 is reported as well.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub threshold: u32,
    /// The old side is drained after this long with no open connections and no attempts.
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub quiet_for: Duration,
    /// The DNS TTL of the move: old connects later than cutover + TTL count against a process
    /// (`dns_cache`, `stale_resolver`). Default: the watched name's TTL at its change, else 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub ttl: Option<Duration>,
    /// Headless: exit 0 once the old side is drained (for scripts that switch it off).
    #[arg(long)]
    pub exit_on_drain: bool,
    /// Resolve NAME every interval and record changes of its answers (repeatable); the first
    /// change is the cutover unless given. Without --old/--new the answers at start are the old
    /// side and new answers the new side. Tests point the resolver elsewhere with the
    /// TRACER_RESOLV_CONF environment variable (a resolv.conf path).
    #[arg(long, value_name = "NAME")]
    pub watch_dns: Vec<String>,
    /// With --watch-dns: also ask this DNS server directly every interval (repeatable), to see
    /// each resolver's answer, its TTL and when it switched.
    #[arg(long, value_name = "ADDR[:PORT]", requires = "watch_dns",
          value_parser = crate::dns::query::parse_server)]
    pub dns_server: Vec<std::net::SocketAddr>,
    /// Also correct `open` from the kernel's socket table (sock_diag) this often (e.g. 1m);
    /// without it only after lost events. Its cost grows with open sockets.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    pub reconcile_every: Option<Duration>,
    /// Leave the DNS answer capture off: no program runs per received packet (~70 ns each
    /// here) and per UDP send, and DNS answers, resolvers and their causes go unseen. For
    /// hosts where packets, not connections, dominate.
    #[arg(long)]
    pub no_dns_capture: bool,
    /// Measurement only: attach every program as usual, but each returns at once and nothing
    /// is counted. What the hooks cost by themselves, the lower bound `cargo xtask bench`
    /// sets beside tracer's own cost.
    #[arg(long, hide = true)]
    pub hooks_only: bool,
}

fn parse_cutover_at(s: &str) -> Result<CutoverAt, String> {
    crate::model::analysis::cutover::parse_cutover_at(s)
}

/// `500ms`, `1s`, `2m`, `1h30m`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration (examples: 500ms, 1s, 2m, 1h30m)");
    if s.trim_start().starts_with('-') {
        return Err(format!(
            "'{s}' is negative: give a positive duration (examples: 500ms, 1s, 2m, 1h30m)"
        ));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
    }
    if total.is_zero() {
        return Err(format!("'{s}' must be longer than zero"));
    }
    Ok(total)
}

/// Turn clap's multi-line error into one line with a hint.
pub fn one_line_error(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines
        .next()
        .unwrap_or("bad arguments")
        .trim_start_matches("error: ")
        .to_string();
    // "the following required arguments were not provided:" names them on the next line.
    if first.ends_with(':')
        && let Some(next) = lines.next()
    {
        first = format!("{first} {next}");
    }
    format!("{first}: see `tracer --help` or `tracer watch --help`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn unknown_flags_become_one_line() {
        let e = Cli::try_parse_from(["tracer", "watch", "--bogus"]).unwrap_err();
        let line = one_line_error(&e);
        assert!(!line.contains('\n'));
        assert!(line.contains("--bogus"), "{line}");
    }

    #[test]
    fn watch_flags_parse() {
        let c = Cli::try_parse_from([
            "tracer",
            "watch",
            "--old",
            "127.10.0.0/16",
            "--new",
            "127.20.0.0/16",
            "--port",
            "80",
            "--port",
            "443",
            "--interval",
            "250ms",
            "--headless",
            "--json",
            "-",
            "--connect-hook",
            "derived",
            "--state-hook",
            "tp_btf",
            "--max-destinations",
            "256",
        ])
        .unwrap();
        let Command::Watch(w) = c.command else {
            panic!()
        };
        assert_eq!(w.port, [80, 443]);
        assert_eq!(w.connect_hook, ConnectMode::Derived);
        assert_eq!(w.state_hook, StateMode::TpBtf);
        assert_eq!(w.interval, Duration::from_millis(250));
        assert_eq!(w.metrics, None);
    }

    #[test]
    fn filter_flags_parse_for_watch_and_probe() {
        let c = Cli::try_parse_from([
            "tracer",
            "watch",
            "--old",
            "10.0.0.1",
            "--netns",
            "/run/netns/a",
            "--cgroup",
            "system.slice/nginx.service",
        ])
        .unwrap();
        let Command::Watch(w) = c.command else {
            panic!()
        };
        assert_eq!(w.filter.netns.as_deref(), Some("/run/netns/a"));
        assert_eq!(
            w.filter.cgroup.as_deref(),
            Some("system.slice/nginx.service")
        );
        let c = Cli::try_parse_from(["tracer", "probe", "--netns", "1234"]).unwrap();
        let Command::Probe(p) = c.command else {
            panic!()
        };
        assert_eq!(p.filter.netns.as_deref(), Some("1234"));
        assert_eq!(p.filter.cgroup, None);
        let e = Cli::try_parse_from(["tracer", "watch", "--netns"]).unwrap_err();
        assert!(one_line_error(&e).contains("--netns"));
    }

    #[test]
    fn metrics_flags_parse_and_are_checked() {
        let c = Cli::try_parse_from([
            "tracer",
            "watch",
            "--metrics",
            "127.0.0.1:9464",
            "--metrics-destinations",
            "5",
            "--label",
            "site=fra1",
            "--label",
            "service=api",
        ])
        .unwrap();
        let Command::Watch(w) = c.command else {
            panic!()
        };
        assert_eq!(w.metrics.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(w.metrics_destinations, 5);
        assert_eq!(w.label[1], ("service".into(), "api".into()));
        let err = |args: &[&str]| {
            let mut v = vec!["tracer", "watch"];
            v.extend_from_slice(args);
            one_line_error(&Cli::try_parse_from(v).unwrap_err())
        };
        assert!(err(&["--metrics", "x:1", "--label", "1x=y"]).contains("label name"));
        assert!(err(&["--metrics", "x:1", "--metrics-processes", "500"]).contains("500"));
        assert!(err(&["--label", "a=b"]).contains("--metrics"));
    }
}
