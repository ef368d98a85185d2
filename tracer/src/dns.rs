//! `--watch-dns NAME`: resolve each name every interval through the system's resolver
//! configuration (hickory-resolver, no cache, so a change shows at once) and report changes.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use hickory_resolver::{
    TokioResolver, config::ResolverOpts, net::runtime::TokioRuntimeProvider,
    system_conf::parse_resolv_conf,
};

use crate::error::{Error, Result};

/// The resolver configuration: /etc/resolv.conf, or `TRACER_RESOLV_CONF` (used by the tests to
/// point at a DNS server of their own on loopback).
fn resolv_conf_path() -> String {
    std::env::var("TRACER_RESOLV_CONF").unwrap_or_else(|_| "/etc/resolv.conf".into())
}

pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// Build from the system's configuration; must be called inside the tokio runtime.
    pub fn new() -> Result<Self> {
        let path = resolv_conf_path();
        let data = std::fs::read(&path).map_err(|e| {
            Error::env(format!(
                "--watch-dns: cannot read {path} ({e}): the resolver configuration is needed"
            ))
        })?;
        let (config, mut opts): (_, ResolverOpts) = parse_resolv_conf(data).map_err(|e| {
            Error::env(format!(
                "--watch-dns: cannot use {path} ({e}): fix the file"
            ))
        })?;
        opts.cache_size = 0;
        opts.timeout = Duration::from_millis(800);
        opts.attempts = 1;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| Error::env(format!("--watch-dns: cannot build a resolver ({e})")))?;
        Ok(Resolver { inner })
    }

    /// The address set of `name` and the smallest TTL among its answers.
    pub async fn lookup(&self, name: &str) -> Result<(BTreeSet<IpAddr>, u32), String> {
        let r = self
            .inner
            .lookup_ip(name)
            .await
            .map_err(|e| e.to_string())?;
        let addrs: BTreeSet<IpAddr> = r.iter().map(crate::model::addr::fold).collect();
        let ttl = r
            .as_lookup()
            .answers()
            .iter()
            .map(|rec| rec.ttl)
            .min()
            .unwrap_or(0);
        Ok((addrs, ttl))
    }
}

/// The watch during a run: lookups every interval, changes as events, the first change as the
/// cutover, and (without --old/--new) the new answers as the new side.
pub struct Watcher {
    resolver: Resolver,
    pub watch: crate::model::analysis::dns::DnsWatch,
    /// The sets come from the answers (no --old/--new given).
    auto_sets: bool,
    pub sets: crate::model::cohort::Sets,
}

impl Watcher {
    /// Resolve every name once: the baseline. Errors name the name and the fix.
    pub async fn start(names: &[String], auto_sets: bool) -> Result<Self> {
        let resolver = Resolver::new()?;
        let mut watch = crate::model::analysis::dns::DnsWatch::new(names);
        for (i, n) in names.iter().enumerate() {
            let r = resolver.lookup(n).await;
            if let Err(e) = &r {
                return Err(Error::usage(format!(
                    "--watch-dns {n}: cannot resolve it ({e}): check the name and the resolver"
                )));
            }
            watch.observe(i, 0, r);
        }
        Ok(Watcher {
            resolver,
            watch,
            auto_sets,
            sets: Default::default(),
        })
    }

    /// Look every name up again (bounded by the resolver's timeout) and record what changed.
    pub async fn poll(&mut self, session: &mut crate::session::Session) -> Result<()> {
        use crate::model::addr::Prefix;
        for i in 0..self.watch.answers.len() {
            let name = self.watch.answers[i].name.clone();
            let r = self.resolver.lookup(&name).await;
            let Some(c) = self.watch.observe(i, session.now_ms(), r) else {
                continue;
            };
            let mut added = vec![];
            if self.auto_sets {
                added = c
                    .new
                    .iter()
                    .map(|a| Prefix::host(*a))
                    .filter(|p| !self.sets.old.contains(p) && !self.sets.new.contains(p))
                    .collect();
                self.sets.new.extend(added.iter().copied());
            }
            session.dns_change(c, added)?;
        }
        session.set_dns(self.watch.answers.clone())
    }
}
