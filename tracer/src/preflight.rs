//! `tracer preflight NAME...`: before a planned DNS change, ask the system resolver, each
//! `--dns-server` and the zone's authoritative servers (found through its NS records) for every
//! name; print each answer and TTL and when a TTL lowered now is in force everywhere. Exit 1
//! when a TTL is above `--max-ttl` (a script refuses to proceed), 0 when all are within it, 2 on
//! bad input or when nobody answered. No root, no BPF.

use std::{
    fmt::Write as _,
    io::Write,
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use clap::Args;
use serde_json::{Value, json};

use crate::{
    dns::query,
    error::{Error, Result},
    model::resolvers::{self, Reply, Verdict},
};

#[derive(Args, Debug, Clone)]
pub struct PreflightArgs {
    /// Names to check (the ones the change will touch).
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Also ask this DNS server (repeatable), e.g. the resolvers the clients use.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = query::parse_server)]
    pub dns_server: Vec<SocketAddr>,
    /// The largest TTL that is acceptable before the change; above it the exit code is 1.
    #[arg(long, default_value = "300s", value_parser = crate::cli::parse_duration)]
    pub max_ttl: Duration,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One server's answer for one name.
struct Asked {
    server: String,
    /// `system`, `server` (a --dns-server) or `authoritative`.
    role: &'static str,
    reply: Result<Reply, String>,
}

struct Checked {
    name: String,
    /// The zone whose NS records named the authoritative servers, or why none were found.
    zone: Result<String, String>,
    asked: Vec<Asked>,
    verdict: Verdict,
}

/// The authoritative servers of `name`'s zone: each address of each NS host (port 53), or
/// why a host has none.
type Targets = Vec<(String, Result<SocketAddr, String>)>;

async fn authoritative(
    system: &hickory_resolver::TokioResolver,
    name: &str,
) -> Result<(String, Targets), String> {
    let (zone, hosts) = query::zone_servers(system, name).await?;
    let mut out = vec![];
    for h in hosts {
        match system.lookup_ip(h.as_str()).await {
            Ok(ips) => out.extend(
                ips.iter()
                    .map(|ip| (h.clone(), Ok(SocketAddr::new(ip, 53)))),
            ),
            Err(e) => out.push((
                h.clone(),
                Err(format!("cannot resolve the name server: {e}")),
            )),
        }
    }
    Ok((zone, out))
}

/// Ask everyone about one name.
async fn check(
    system: &hickory_resolver::TokioResolver,
    servers: &[SocketAddr],
    name: &str,
    max_ttl_s: u64,
) -> Checked {
    let mut asked = vec![Asked {
        server: "system".into(),
        role: "system",
        reply: query::addresses(system, name).await,
    }];
    for s in servers {
        let reply = match query::direct(*s) {
            Ok(r) => query::addresses(&r, name).await,
            Err(e) => Err(e),
        };
        asked.push(Asked {
            server: query::server_name(*s),
            role: "server",
            reply,
        });
    }
    let zone = match authoritative(system, name).await {
        Ok((zone, targets)) => {
            for (host, target) in targets {
                let (server, reply) = match target {
                    Ok(a) => {
                        let reply = match query::direct(a) {
                            Ok(r) => query::addresses(&r, name).await,
                            Err(e) => Err(e),
                        };
                        (format!("{host} {}", query::server_name(a)), reply)
                    }
                    Err(e) => (host, Err(e)),
                };
                asked.push(Asked {
                    server,
                    role: "authoritative",
                    reply,
                });
            }
            Ok(zone)
        }
        Err(e) => Err(e),
    };
    let verdict = resolvers::verdict(asked.iter().map(|a| &a.reply), max_ttl_s);
    Checked {
        name: name.into(),
        zone,
        asked,
        verdict,
    }
}

/// `127.0.0.1, ::1 via a.example.` or `NXDOMAIN`.
fn answer_text(r: &Reply) -> String {
    let chain = match r.cnames() {
        [] => String::new(),
        c => format!(" (via {})", c.join(" -> ")),
    };
    match r {
        Reply::Addrs { addrs, .. } => {
            let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            format!("{}{chain}", a.join(", "))
        }
        neg => format!("{}{chain}", neg.kind().to_uppercase()),
    }
}

fn ttl_text(r: &Reply) -> String {
    match (r, r.ttl()) {
        (Reply::Addrs { .. }, Some(t)) => format!("ttl {t}s"),
        (_, Some(t)) => format!("negative ttl {t}s"),
        (_, None) => "no SOA: negative ttl unknown".into(),
    }
}

fn text(checked: &[Checked], now: SystemTime, max_ttl_s: u64) -> String {
    let mut o = String::new();
    for c in checked {
        let zone = match &c.zone {
            Ok(z) => format!("zone {z}"),
            Err(e) => format!("authoritative servers not found: {e}"),
        };
        let _ = writeln!(o, "{}  ({zone})", c.name);
        for a in &c.asked {
            let (answer, ttl) = match &a.reply {
                Ok(r) => (answer_text(r), ttl_text(r)),
                Err(e) => (format!("no answer: {e}"), String::new()),
            };
            let who = format!("{} [{}]", a.server, a.role);
            let _ = writeln!(o, "  {who:<40} {answer}  {ttl}");
        }
        let v = &c.verdict;
        match v.largest_ttl {
            _ if !v.answered => {
                let _ = writeln!(
                    o,
                    "  NO ANSWER from any server: check the name and the resolvers"
                );
            }
            Some(t) => {
                let at = crate::ndjson::rfc3339(now + Duration::from_secs(t.into()));
                let verdict = if v.over {
                    format!("TOO LONG: above --max-ttl {max_ttl_s}s")
                } else {
                    format!("ok: within --max-ttl {max_ttl_s}s")
                };
                let _ = writeln!(
                    o,
                    "  largest ttl {t}s, {verdict}; a TTL lowered now is in force everywhere at {at}"
                );
            }
            None => {
                let _ = writeln!(o, "  no TTL given by any server");
            }
        }
    }
    o
}

fn json_of(checked: &[Checked], now: SystemTime, max_ttl_s: u64, exit: i32) -> Value {
    let names: Vec<Value> = checked
        .iter()
        .map(|c| {
            let servers: Vec<Value> = c
                .asked
                .iter()
                .map(|a| {
                    let mut v = json!({"server": a.server, "role": a.role});
                    match &a.reply {
                        Ok(r) => {
                            v["kind"] = json!(r.kind());
                            v["answer"] = match r {
                                Reply::Addrs { addrs, .. } => json!(addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                                _ => json!([]),
                            };
                            v["cnames"] = json!(r.cnames());
                            v["ttl"] = json!(r.ttl());
                        }
                        Err(e) => v["error"] = json!(e),
                    }
                    v
                })
                .collect();
            let largest = c.verdict.largest_ttl;
            json!({
                "name": c.name,
                "zone": c.zone.as_ref().ok(),
                "zone_error": c.zone.as_ref().err(),
                "servers": servers,
                "answered": c.verdict.answered,
                "largest_ttl": largest,
                "over_max_ttl": c.verdict.over,
                "in_force_at": largest.map(|t| crate::ndjson::rfc3339(now + Duration::from_secs(t.into()))),
            })
        })
        .collect();
    json!({"checked_at": crate::ndjson::rfc3339(now), "max_ttl_s": max_ttl_s,
           "exit_code": exit, "names": names})
}

pub fn run(args: PreflightArgs) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
    let max_ttl_s = args.max_ttl.as_secs();
    let now = SystemTime::now();
    let checked: Vec<Checked> = rt.block_on(async {
        let system = crate::dns::system_resolver("preflight")?;
        let mut v = vec![];
        for n in &args.names {
            v.push(check(&system, &args.dns_server, n, max_ttl_s).await);
        }
        Ok::<_, Error>(v)
    })?;
    let verdicts: Vec<Verdict> = checked.iter().map(|c| c.verdict).collect();
    let exit = resolvers::preflight_exit(&verdicts);
    let out = if args.json {
        serde_json::to_string_pretty(&json_of(&checked, now, max_ttl_s, exit)).unwrap_or_default()
            + "
"
    } else {
        text(&checked, now, max_ttl_s)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(Error::runtime(format!("cannot write the preflight: {e}")));
        }
        _ => {}
    }
    if exit == 2 {
        let missing: Vec<&str> = checked
            .iter()
            .filter(|c| !c.verdict.answered)
            .map(|c| c.name.as_str())
            .collect();
        return Err(Error::env(format!(
            "preflight: no server answered for {}: check the names and that the resolvers are reachable",
            missing.join(", ")
        )));
    }
    Ok(exit)
}
