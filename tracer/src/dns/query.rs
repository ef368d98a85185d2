//! Asking one DNS server directly: A and AAAA of a name with the CNAME chain, negative answers
//! with the SOA's negative-cache TTL, and NS records. hickory-resolver does the protocol, with
//! no cache of its own so every answer (and TTL) is the server's.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{
        ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig,
        ResolverOpts,
    },
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::{
        op::ResponseCode,
        rr::{RData, RecordType},
    },
};

use crate::model::resolvers::Reply;

/// `ADDR`, `ADDR:PORT`, `[V6]:PORT` or a bare IPv6 address; port 53 when not given.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let bad = || {
        format!(
            "'{s}' is not an address: give ADDR or ADDR:PORT, e.g. 192.0.2.53 or [2001:db8::53]:5353"
        )
    };
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let a: SocketAddr = s.parse().map_err(|_| bad())?;
    if a.port() == 0 {
        return Err(format!(
            "'{s}': port 0 cannot be asked: give a port from 1 to 65535"
        ));
    }
    Ok(a)
}

/// How a server is shown: `ADDR:PORT`, `[V6]:PORT`.
pub fn server_name(a: SocketAddr) -> String {
    a.to_string()
}

/// A client that asks one server only (recursion desired, as a stub resolver would).
pub fn direct(server: SocketAddr) -> Result<TokioResolver, String> {
    let conn = |protocol| {
        let mut c = ConnectionConfig::new(protocol);
        c.port = server.port();
        c
    };
    let ns = NameServerConfig::new(
        server.ip(),
        true,
        vec![conn(ProtocolConfig::Udp), conn(ProtocolConfig::Tcp)],
    );
    let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
    build(config, ResolveHosts::Never)
}

/// A resolver with our options: no cache (each TTL is the server's), one short attempt.
pub fn build(config: ResolverConfig, hosts: ResolveHosts) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = Duration::from_millis(800);
    opts.attempts = 1;
    opts.use_hosts_file = hosts;
    opts.preserve_intermediates = true;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| format!("cannot build a resolver ({e})"))
}

/// One record type of `name`: a reply (addresses or negative) or the error that left none.
async fn one(r: &TokioResolver, name: &str, rt: RecordType) -> Result<Reply, String> {
    match r.lookup(name, rt).await {
        Ok(lookup) => {
            let mut addrs = BTreeSet::new();
            let mut cnames = vec![];
            let mut ttl: Option<u32> = None;
            for rec in lookup.answers() {
                match &rec.data {
                    RData::A(a) => addrs.insert(IpAddr::V4(a.0)),
                    RData::AAAA(a) => addrs.insert(IpAddr::V6(a.0)),
                    RData::CNAME(c) => {
                        cnames.push(c.0.to_string());
                        continue;
                    }
                    _ => continue,
                };
                ttl = Some(ttl.map_or(rec.ttl, |t| t.min(rec.ttl)));
            }
            Ok(match ttl {
                Some(ttl) => Reply::Addrs {
                    addrs: addrs.into_iter().map(crate::model::addr::fold).collect(),
                    cnames,
                    ttl,
                },
                None => Reply::Negative {
                    nxdomain: false,
                    cnames,
                    negative_ttl: None,
                },
            })
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => Ok(Reply::Negative {
            nxdomain: nr.response_code == ResponseCode::NXDomain,
            cnames: vec![],
            negative_ttl: nr
                .negative_ttl
                .or_else(|| nr.soa.as_ref().map(|s| s.ttl.min(s.data.minimum))),
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// A and AAAA of `name` from this resolver, merged (see `Reply::merge`). An error only when
/// both lookups failed.
pub async fn addresses(r: &TokioResolver, name: &str) -> Result<Reply, String> {
    let (a, aaaa) = tokio::join!(one(r, name, RecordType::A), one(r, name, RecordType::AAAA));
    match (a, aaaa) {
        (Ok(a), Ok(b)) => Ok(Reply::merge(a, b)),
        (Ok(r), Err(_)) | (Err(_), Ok(r)) => Ok(r),
        (Err(e), Err(_)) => Err(e),
    }
}

/// The name servers of the zone that holds `name`: the NS records of the closest enclosing
/// name that has them, as (zone, server host names).
pub async fn zone_servers(r: &TokioResolver, name: &str) -> Result<(String, Vec<String>), String> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    for i in 0..labels.len() {
        let zone = format!("{}.", labels[i..].join("."));
        match r.lookup(zone.as_str(), RecordType::NS).await {
            Ok(l) => {
                let hosts: Vec<String> = l
                    .answers()
                    .iter()
                    .filter_map(|rec| match &rec.data {
                        RData::NS(ns) => Some(ns.0.to_string()),
                        _ => None,
                    })
                    .collect();
                if !hosts.is_empty() {
                    return Ok((zone, hosts));
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => {}
            Err(e) => return Err(format!("NS lookup of {zone} failed: {e}")),
        }
    }
    Err(format!("no NS records found for {name} or a parent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_and_without_port() {
        assert_eq!(
            parse_server("192.0.2.53").unwrap().to_string(),
            "192.0.2.53:53"
        );
        assert_eq!(parse_server("192.0.2.53:5353").unwrap().port(), 5353);
        assert_eq!(
            parse_server("2001:db8::53").unwrap().to_string(),
            "[2001:db8::53]:53"
        );
        assert_eq!(parse_server("[2001:db8::53]:5353").unwrap().port(), 5353);
        let e = parse_server("dns.example").unwrap_err();
        assert!(e.contains("ADDR:PORT") && !e.contains('\n'), "{e}");
        assert!(parse_server("192.0.2.1:0").unwrap_err().contains("port 0"));
    }
}
