//! `--watch-dns NAME`: resolve each name every interval through the system's resolver
//! configuration (hickory-resolver, no cache, so a change shows at once) and through each
//! `--dns-server` directly, and report each server's changes.

pub mod events;
pub mod query;
mod servers;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver, config::ResolverOpts, net::runtime::TokioRuntimeProvider,
    system_conf::parse_resolv_conf,
};

use crate::{
    error::{Error, Result},
    model::{
        analysis::dns::{Answer, AnswerChange, DnsWatch},
        resolvers::{Change, DnsVia, Reply},
    },
    sink::EventKind,
};

/// The resolver configuration: /etc/resolv.conf, or `TRACER_RESOLV_CONF` (used by the tests to
/// point at a DNS server of their own on loopback).
fn resolv_conf_path() -> String {
    std::env::var("TRACER_RESOLV_CONF").unwrap_or_else(|_| "/etc/resolv.conf".into())
}

/// The system's resolver (resolv.conf, its search and ndots), without a cache so each answer
/// and TTL is the resolver's; must be called inside the tokio runtime. `ctx` names the flag or
/// command in errors.
pub fn system_resolver(ctx: &str) -> Result<TokioResolver> {
    let path = resolv_conf_path();
    let data = std::fs::read(&path).map_err(|e| {
        Error::env(format!(
            "{ctx}: cannot read {path} ({e}): the resolver configuration is needed"
        ))
    })?;
    let (config, mut opts): (_, ResolverOpts) = parse_resolv_conf(data)
        .map_err(|e| Error::env(format!("{ctx}: cannot use {path} ({e}): fix the file")))?;
    opts.cache_size = 0;
    opts.timeout = Duration::from_millis(800);
    opts.attempts = 1;
    opts.preserve_intermediates = true;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| Error::env(format!("{ctx}: cannot build a resolver ({e})")))
}

/// What the system resolver's reply means for the name's answer (the header's line): its
/// addresses and TTL, or why there are none.
fn for_watch(reply: &Result<Reply, String>) -> Result<(BTreeSet<IpAddr>, u32), String> {
    match reply {
        Ok(Reply::Addrs { addrs, ttl, .. }) => Ok((addrs.clone(), *ttl)),
        Ok(neg) => Err(match neg.ttl() {
            Some(t) => format!("{} (negative ttl {t}s)", neg.kind().to_uppercase()),
            None => neg.kind().to_uppercase(),
        }),
        Err(e) => Err(e.clone()),
    }
}

/// The watch during a run: lookups every interval at the system resolver and each
/// `--dns-server`, each server's changes as events, the first change as the cutover, and
/// (without --old/--new) the new answers as the new side.
pub struct Watcher {
    servers: servers::Servers,
    pub watch: DnsWatch,
    /// The sets come from the answers (no --old/--new given).
    auto_sets: bool,
    pub sets: crate::model::cohort::Sets,
    /// What the last `dns_servers` event of each name showed.
    shown: Vec<serde_json::Value>,
}

impl Watcher {
    /// Ask every server once: the baseline. A name the system resolver cannot answer at all
    /// is an error naming the name and the fix; a negative answer is shown as such.
    pub async fn start(
        names: &[String],
        dns_servers: &[SocketAddr],
        auto_sets: bool,
        interval_ms: u64,
    ) -> Result<Self> {
        let system = system_resolver("--watch-dns")?;
        let mut servers =
            servers::Servers::new(system, dns_servers, names, interval_ms).map_err(Error::env)?;
        let mut watch = DnsWatch::new(names);
        for o in servers.ask().await {
            if o.row == 0 {
                if let Err(e) = &o.reply {
                    return Err(Error::usage(format!(
                        "--watch-dns {}: cannot resolve it ({e}): check the name and the resolver",
                        names[o.name]
                    )));
                }
                watch.observe(o.name, 0, for_watch(&o.reply));
            }
            servers.observe(o, 0);
        }
        Ok(Watcher {
            servers,
            watch,
            auto_sets,
            sets: Default::default(),
            shown: vec![serde_json::Value::Null; names.len()],
        })
    }

    /// Ask every server again (bounded by the resolver's timeout) and record what changed:
    /// each server's change (the first of any server is the cutover), servers gone stale, and
    /// the per-server view when it changed.
    pub async fn poll(&mut self, session: &mut crate::session::Session) -> Result<()> {
        let outcomes = self.servers.ask().await;
        let at = session.now_ms();
        for o in outcomes {
            let (name, row) = (o.name, o.row);
            if row == 0 {
                self.watch.observe(name, at, for_watch(&o.reply));
            }
            let Some(c) = self.servers.observe(o, at) else {
                continue;
            };
            let reply = &self.servers.names[name].rows[row].reply;
            let cnames = reply
                .as_ref()
                .map(|r| r.cnames().to_vec())
                .unwrap_or_default();
            let added = self.added(&c);
            let (change, via) = split(c, cnames);
            session.dns_change_via(change, via, added)?;
        }
        for (name, row) in self.servers.check_stale(at) {
            let n = &self.servers.names[name];
            let r = &n.rows[row];
            session.event(EventKind::DnsStale {
                name: n.name.clone(),
                server: r.server.clone(),
                answer: r.addrs.clone(),
                expected_ms: r.expected_ms,
                first_switch_ms: n.first_switch_ms,
            })?;
        }
        if self.servers.per_server() {
            for (i, n) in self.servers.names.iter().enumerate() {
                let shown = events::shown(n);
                if shown != self.shown[i] {
                    session.event(EventKind::DnsServers(Box::new(n.clone())))?;
                    self.shown[i] = shown;
                }
            }
        }
        session.set_dns(self.answers())
    }

    /// The answers for a view: the system resolver's, with every server's row when
    /// `--dns-server` was given.
    pub fn answers(&self) -> Vec<Answer> {
        let mut v = self.watch.answers.clone();
        if self.servers.per_server() {
            for (a, n) in v.iter_mut().zip(&self.servers.names) {
                a.servers = n.rows.clone();
            }
        }
        v
    }

    /// Without --old/--new a server's new answers join the new side.
    fn added(&mut self, c: &Change) -> Vec<crate::model::addr::Prefix> {
        use crate::model::addr::Prefix;
        if !self.auto_sets {
            return vec![];
        }
        let added: Vec<Prefix> = c
            .new
            .iter()
            .map(|a| Prefix::host(*a))
            .filter(|p| !self.sets.old.contains(p) && !self.sets.new.contains(p))
            .collect();
        self.sets.new.extend(added.iter().copied());
        added
    }
}

/// A server's change as the session records it: the answer change and where it was seen.
fn split(c: Change, cnames: Vec<String>) -> (AnswerChange, DnsVia) {
    let via = DnsVia {
        server: c.server,
        lag_ms: c.lag_ms,
        cnames,
    };
    let change = AnswerChange {
        name: c.name,
        old: c.old,
        new: c.new,
        ttl: c.ttl,
        at_ms: c.at_ms,
    };
    (change, via)
}
