//! `--watch-dns NAME`: resolve each name every interval through the system's resolver
//! configuration (hickory-resolver, no cache, so a change shows at once) and report changes.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use hickory_resolver::{
    TokioResolver, config::ResolverOpts, net::runtime::TokioRuntimeProvider,
    system_conf::parse_resolv_conf,
};

use crate::Fatal;

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
    pub fn new() -> Result<Self, Fatal> {
        let path = resolv_conf_path();
        let data = std::fs::read(&path).map_err(|e| {
            format!("--watch-dns: cannot read {path} ({e}): the resolver configuration is needed")
        })?;
        let (config, mut opts): (_, ResolverOpts) = parse_resolv_conf(data)
            .map_err(|e| format!("--watch-dns: cannot use {path} ({e}): fix the file"))?;
        opts.cache_size = 0;
        opts.timeout = Duration::from_millis(800);
        opts.attempts = 1;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| format!("--watch-dns: cannot build a resolver ({e})"))?;
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
    pub async fn start(names: &[String], auto_sets: bool) -> Result<Self, Fatal> {
        let resolver = Resolver::new()?;
        let mut watch = crate::model::analysis::dns::DnsWatch::new(names);
        for (i, n) in names.iter().enumerate() {
            let r = resolver.lookup(n).await;
            if let Err(e) = &r {
                return Err(format!(
                    "--watch-dns {n}: cannot resolve it ({e}): check the name and the resolver"
                ));
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
    pub async fn poll(
        &mut self,
        session: &mut crate::session::Session,
        tracer: &mut crate::kernel::Tracer,
    ) -> Result<(), Fatal> {
        use crate::model::{addr::Prefix, cohort::Cohort};
        use serde_json::json;
        let answers = self.watch.answers.len();
        for i in 0..answers {
            let name = self.watch.answers[i].name.clone();
            let r = self.resolver.lookup(&name).await;
            let Some(c) = self.watch.observe(i, session.now_ms(), r) else {
                continue;
            };
            let long = self.watch.answers[i].long_ttl();
            let strs = |s: &BTreeSet<IpAddr>| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
            let mut fields = json!({"name": c.name, "old": strs(&c.old), "new": strs(&c.new),
                                    "ttl": c.ttl, "long_ttl": long});
            if long {
                fields["message"] = json!(format!(
                    "TTL {} s is above {} s: clients may keep the old answer that long",
                    c.ttl,
                    crate::model::analysis::dns::LONG_TTL_S
                ));
            }
            session.event_dated("dns_change", fields, c.at_ms)?;
            if self.auto_sets {
                let added: Vec<Prefix> = c
                    .new
                    .iter()
                    .map(|a| Prefix::host(*a))
                    .filter(|p| !self.sets.old.contains(p) && !self.sets.new.contains(p))
                    .collect();
                if !added.is_empty() {
                    crate::kernel::insert_prefixes(
                        &mut tracer.ebpf,
                        added.iter().map(|p| (*p, Cohort::New)),
                    )?;
                    self.sets.new.extend(added);
                    session.set_sets(self.sets.clone());
                }
            }
            if session.analysis.cutover.is_none() && session.info.cutover_at.is_none() {
                let fields = json!({"source": "dns", "name": c.name});
                session.event_dated("cutover", fields, c.at_ms)?;
            }
        }
        session.dns = self.watch.answers.clone();
        Ok(())
    }
}
