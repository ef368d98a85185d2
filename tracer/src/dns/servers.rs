//! Asking every server about every watched name each interval, all at once (a server that does
//! not answer costs one timeout per interval, not one per name and server in a row).

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use tokio::task::JoinSet;

use crate::model::resolvers::{Change, NameRows, Reply};

/// The system resolver (row 0) and each `--dns-server` (rows 1..) for every watched name.
pub struct Servers {
    clients: Vec<TokioResolver>,
    pub names: Vec<NameRows>,
    /// Lookups come once an interval and TTLs are whole seconds: a server is stale only this
    /// long after its old answer should have run out.
    grace_ms: u64,
}

/// What one round of lookups found for one name and server.
pub struct Outcome {
    pub name: usize,
    pub row: usize,
    pub reply: Result<Reply, String>,
}

impl Servers {
    /// `system` is the resolv.conf resolver; `servers` are asked directly.
    pub fn new(
        system: TokioResolver,
        servers: &[SocketAddr],
        names: &[String],
        interval_ms: u64,
    ) -> Result<Servers, String> {
        let mut clients = vec![system];
        let mut labels = vec!["system".to_string()];
        for s in servers {
            clients.push(super::query::direct(*s).map_err(|e| format!("--dns-server {s}: {e}"))?);
            labels.push(super::query::server_name(*s));
        }
        Ok(Servers {
            clients,
            names: names.iter().map(|n| NameRows::new(n, &labels)).collect(),
            grace_ms: 1000 + interval_ms,
        })
    }

    /// `--dns-server` was given: the per-server rows are worth showing.
    pub fn per_server(&self) -> bool {
        self.clients.len() > 1
    }

    /// Ask every server about every name, concurrently; outcomes by name, then row.
    pub async fn ask(&self) -> Vec<Outcome> {
        let mut set = JoinSet::new();
        for (name, rows) in self.names.iter().enumerate() {
            for (row, client) in self.clients.iter().enumerate() {
                let (client, n) = (client.clone(), rows.name.clone());
                set.spawn(async move {
                    let reply = super::query::addresses(&client, &n).await;
                    Outcome { name, row, reply }
                });
            }
        }
        let mut out = Vec::with_capacity(set.len());
        while let Some(r) = set.join_next().await {
            // A lookup task cannot panic short of a bug in the resolver: then it is an error row.
            if let Ok(o) = r {
                out.push(o);
            }
        }
        out.sort_by_key(|o| (o.name, o.row));
        out
    }

    /// Record one outcome at `at_ms`; a change of that server's answer comes back.
    pub fn observe(&mut self, o: Outcome, at_ms: u64) -> Option<Change> {
        self.names[o.name].observe(o.row, at_ms, o.reply)
    }

    /// Flag the servers past their expected switch: (name, row) of those that became stale.
    pub fn check_stale(&mut self, now_ms: u64) -> Vec<(usize, usize)> {
        let grace = self.grace_ms;
        self.names
            .iter_mut()
            .enumerate()
            .flat_map(|(i, n)| {
                n.check_stale(now_ms, grace)
                    .into_iter()
                    .map(move |r| (i, r))
            })
            .collect()
    }
}
