//! With `--dns-server`: one header line per watched name with every server's answer, its
//! remaining TTL, its lag behind the first server that switched, and `STALE` for one still
//! answering old after its TTL for it ran out.

use ratatui::{
    style::Modifier,
    text::{Line, Span},
};

use super::view::bold;
use crate::model::{
    analysis::dns::Answer,
    resolvers::{Reply, Row},
};

/// `127.53.1.2:53 127.20.53.8 ttl 5s +6.2s`.
fn row_spans(r: &Row, first_switch_ms: Option<u64>, now_ms: u64) -> Vec<Span<'static>> {
    let answer = match &r.reply {
        Some(Reply::Addrs { addrs, cnames, .. }) => {
            let a: Vec<String> = addrs.iter().map(|x| x.to_string()).collect();
            let via = cnames
                .last()
                .map(|c| format!(" via {c}"))
                .unwrap_or_default();
            format!("{}{via}", a.join(","))
        }
        Some(neg) => neg.kind().to_uppercase(),
        None => "no answer yet".into(),
    };
    let ttl = match (r.remaining_ttl(now_ms), &r.reply) {
        (Some(t), Some(Reply::Negative { .. })) => format!(" neg ttl {t}s"),
        (Some(t), _) => format!(" ttl {t}s"),
        (None, _) => String::new(),
    };
    let mut v = vec![Span::raw(format!("{} {answer}{ttl}", r.server))];
    if let (Some(s), Some(f)) = (r.switched_ms, first_switch_ms) {
        v.push(Span::raw(format!(" +{:.1}s", (s - f) as f64 / 1000.0)));
    }
    if r.error.is_some() {
        v.push(Span::raw(" (no reply)"));
    }
    if r.stale {
        v.push(Span::styled(
            " STALE",
            bold().add_modifier(Modifier::REVERSED),
        ));
    }
    v
}

/// The per-server lines, one per name that has server rows.
pub fn lines(dns: &[Answer], now_ms: u64) -> Vec<Line<'static>> {
    dns.iter()
        .filter(|a| !a.servers.is_empty())
        .map(|a| {
            let first = a.servers.iter().filter_map(|r| r.switched_ms).min();
            let mut spans = vec![Span::styled(format!("dns {}: ", a.name), bold())];
            for (i, r) in a.servers.iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw(" · "));
                }
                spans.extend(row_spans(r, first, now_ms));
            }
            Line::from(spans)
        })
        .collect()
}
