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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::resolvers::NameRows;

    #[test]
    fn one_line_per_name_with_lag_negative_ttl_and_stale() {
        let servers: Vec<String> = ["system", "10.0.0.53:53"].map(String::from).to_vec();
        let mut n = NameRows::new("api.", &servers);
        let a = |s: &str, ttl| {
            Ok(Reply::Addrs {
                addrs: [s.parse().unwrap()].into(),
                cnames: vec!["web.".into()],
                ttl,
            })
        };
        n.observe(0, 0, a("10.0.0.1", 30));
        n.observe(1, 0, a("10.0.0.1", 30));
        n.observe(1, 2_000, a("10.0.0.2", 30));
        n.observe(0, 40_000, a("10.0.0.1", 30));
        n.check_stale(40_000, 1_000);
        let answer = Answer {
            name: "api.".into(),
            addrs: Default::default(),
            ttl: 0,
            at_ms: None,
            error: None,
            servers: n.rows.clone(),
        };
        let text: Vec<String> = lines(&[answer], 45_000)
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.to_string()).collect())
            .collect();
        assert_eq!(
            text,
            [
                "dns api.: system 10.0.0.1 via web. ttl 25s STALE · 10.0.0.53:53 10.0.0.2 via web. ttl 0s +0.0s"
            ]
        );
        let mut neg = NameRows::new("gone.", &servers);
        let nx = Reply::Negative {
            nxdomain: true,
            cnames: vec![],
            negative_ttl: Some(7),
        };
        neg.observe(0, 0, Ok(nx));
        neg.observe(1, 0, Err("timeout".into()));
        let answer = Answer {
            name: "gone.".into(),
            addrs: Default::default(),
            ttl: 0,
            at_ms: None,
            error: None,
            servers: neg.rows.clone(),
        };
        let l = &lines(&[answer], 1_000)[0];
        let t: String = l.spans.iter().map(|s| s.content.to_string()).collect();
        assert_eq!(
            t,
            "dns gone.: system NXDOMAIN neg ttl 6s · 10.0.0.53:53 no answer yet (no reply)"
        );
    }
}
