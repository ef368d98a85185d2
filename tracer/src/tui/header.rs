//! The header: run facts, the address sets and watched DNS names, then the failover analysis
//! (cutover, declaration gaps, drain) as two lines, so the verdicts are always in sight.

use std::time::{Duration, SystemTime};

use ratatui::{
    Frame,
    layout::Rect,
    style::Modifier,
    text::{Line, Span},
    widgets::Paragraph,
};

use super::{
    fit,
    state::ViewState,
    view::{bold, clock, cohort_style, interval},
};
use crate::model::{
    analysis::{GapState, State, dns::Answer, drain::Estimate},
    cohort::Cohort,
    spec::Spec,
};

/// Lines the header takes without `--dns-server`.
pub const HEIGHT: u16 = 4;

/// Lines the header takes: one more per name watched at several servers.
pub fn height(st: &ViewState) -> u16 {
    HEIGHT
        + st.data()
            .dns
            .iter()
            .filter(|a| !a.servers.is_empty())
            .count() as u16
}

fn sets(specs: &[Spec]) -> String {
    if specs.is_empty() {
        return "(none)".into();
    }
    let one = |s: &Spec| {
        let p: Vec<String> = s.prefixes.iter().map(|p| p.to_string()).collect();
        if s.resolved {
            let a: Vec<String> = s.prefixes.iter().map(|p| p.addr.to_string()).collect();
            format!("{} ({})", s.text, a.join(", "))
        } else {
            p.join(", ")
        }
    };
    specs.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// Wall-clock time (UTC) of a moment of the run: what a postmortem quotes.
fn at(started: SystemTime, ms: u64) -> String {
    crate::ndjson::clock(started + Duration::from_millis(ms))
}

/// Seconds, signed, one decimal below a minute: `+12.0s`, `-3.0s`, `+4m05s`.
fn signed(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let a = ms.unsigned_abs();
    if a < 60_000 {
        format!("{sign}{:.1}s", a as f64 / 1000.0)
    } else {
        format!("{sign}{}m{:02}s", a / 60_000, a / 1000 % 60)
    }
}

/// Whole seconds, then minutes, then hours: `60s`, `17m`, `3h`.
fn whole(ms: u64) -> String {
    match ms / 1000 {
        s if s < 1000 => format!("{s}s"),
        s if s < 3600 * 10 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// One gap: `95% +12.0s` (held, measured from the cutover), `95% …1m05s` (running since the
/// cutover), `95% ok 14:23:05` (held, no cutover), `95% lost`, `95% -`.
fn gap(g: &GapState, started: SystemTime) -> String {
    let v = match (g.holding, g.gap_ms, g.running_ms, g.lost) {
        (Some(_), Some(ms), _, _) => signed(ms),
        (Some(c), None, _, _) => format!("ok {}", at(started, c.reached_ms)),
        (None, _, Some(r), _) => format!("…{}", whole(r)),
        (None, _, None, Some(_)) => "lost".into(),
        (None, _, None, None) => "-".into(),
    };
    format!("{}% {v}", g.level)
}

/// `cutover 14:23:05 key · conn 95% +12.0s 99% …60s · open 95% …60s 99% …60s` (conn: the
/// share of connection attempts, as in the `conn/s` column).
pub fn analysis_line(st: &State, started: SystemTime) -> Line<'static> {
    let mut spans = vec![match &st.cutover {
        Some(c) => Span::styled(
            format!("cutover {} {}", at(started, c.at_ms), c.source),
            bold(),
        ),
        None => Span::raw("no cutover (c marks it)"),
    }];
    for metric in ["attempts", "open"] {
        let gaps: Vec<String> = st
            .gaps
            .iter()
            .filter(|g| g.metric.name() == metric)
            .map(|g| gap(g, started))
            .collect();
        let name = if metric == "attempts" { "conn" } else { metric };
        spans.push(Span::raw(format!(" · {name} {}", gaps.join(" "))));
    }
    Line::from(spans)
}

/// `old DRAINED since 14:26:05` or `old not drained: 12 open, 40 conn last min, busy 14:25:04
/// · quiet ~14:27:17`.
pub fn drain_line(st: &State, started: SystemTime) -> Line<'static> {
    let d = &st.drain;
    let old = Span::styled(
        "old ",
        cohort_style(Cohort::Old).add_modifier(Modifier::BOLD),
    );
    let rest = match d.drained_since {
        Some(since) => format!("DRAINED since {}", at(started, since)),
        // Quiet already, not yet for --quiet-for: say since when, not a forecast.
        None if let Estimate::QuietSince(ms) = d.estimate => format!(
            "quiet since {} ({} conn last min), drained at {} if it stays so",
            at(started, ms),
            d.attempts_last_minute,
            at(started, ms + d.quiet_for_ms)
        ),
        None => {
            let est = match &d.estimate {
                Estimate::At(ms) => format!("quiet ~{}", at(started, *ms)),
                Estimate::Pinned => {
                    format!("will not drain by itself: {}", d.pinned_text(st.now_ms))
                }
                Estimate::NotPossible(why) => format!("no estimate: {why}"),
                // Taken by the arm above.
                Estimate::QuietSince(_) => String::new(),
            };
            format!(
                "not drained: {} open, {} conn last min, busy {} · {est}",
                d.old_open,
                d.attempts_last_minute,
                at(started, d.last_busy_ms)
            )
        }
    };
    Line::from(vec![old, Span::raw(rest)])
}

/// `dns api.example 127.20.0.7 ttl 30s` per name; a TTL above 300 s is flagged.
fn dns_spans(dns: &[Answer]) -> Vec<Span<'static>> {
    let mut v = vec![];
    // Names watched at several servers have a line of their own (`resolvers::lines`).
    for (i, a) in dns.iter().filter(|a| a.servers.is_empty()).enumerate() {
        let addrs: Vec<String> = a.addrs.iter().map(|x| x.to_string()).collect();
        let answer = match (&a.error, addrs.is_empty()) {
            (Some(e), true) => format!("error: {e}"),
            (_, true) => "no answer yet".into(),
            (_, false) => addrs.join(","),
        };
        let sep = if i == 0 { "" } else { " · " };
        v.push(Span::raw(format!("{sep}dns {} {answer}", a.name)));
        if !addrs.is_empty() {
            let ttl = format!(" ttl {}s", a.ttl);
            v.push(if a.long_ttl() {
                Span::styled(
                    format!("{ttl} LONG"),
                    bold().add_modifier(Modifier::REVERSED),
                )
            } else {
                Span::raw(ttl)
            });
        }
    }
    v
}

pub fn render(f: &mut Frame, st: &ViewState, area: Rect) {
    let i = &st.info;
    let d = st.data();
    let w = area.width as usize;
    // Most important first: a narrow terminal drops the kernel release, never cuts a word.
    let mut top = vec![
        vec![
            Span::styled("tracer", bold()),
            Span::raw(format!(
                " {} every {}",
                clock(d.cur.elapsed),
                interval(i.interval_ms)
            )),
        ],
        vec![Span::raw(format!(
            " · since {} UTC",
            crate::ndjson::clock(i.started_at)
        ))],
    ];
    if let Some(f) = i.filters.describe() {
        top.push(vec![Span::styled(format!(" · only {f}"), bold())]);
    }
    if d.cur.lost_events > 0 {
        top.push(vec![Span::raw(format!(" · lost {}", d.cur.lost_events))]);
    }
    if d.cur.evicted.destinations > 0 {
        top.push(vec![Span::raw(format!(
            " · evicted {}",
            d.cur.evicted.destinations
        ))]);
    }
    if let Some(m) = i.metrics_addr {
        top.push(vec![Span::raw(format!(" · metrics {m}"))]);
    }
    top.push(vec![Span::raw(format!(" · {}", i.host))]);
    top.push(vec![Span::raw(format!(
        " · hooks {}+{}",
        i.hooks.connect.name(),
        i.hooks.state
    ))]);
    top.push(vec![Span::raw(format!(" · kernel {}", i.kernel))]);
    // Paused and filter state lead the second line so a narrow terminal never cuts them off.
    let mut second = vec![];
    if st.paused() {
        second.push(Span::styled(
            "PAUSED",
            bold().add_modifier(Modifier::REVERSED),
        ));
        second.push(Span::raw(" "));
    }
    if !st.filter.is_empty() {
        second.push(Span::styled(
            format!("[filter {}]", st.filter),
            bold().add_modifier(Modifier::REVERSED),
        ));
        second.push(Span::raw(" "));
    }
    // Watched names first: their answer and TTL are the news; the sets below them are stable.
    let dns = dns_spans(&d.dns);
    if !dns.is_empty() {
        second.extend(dns);
        second.push(Span::raw(" · "));
    }
    second.extend([
        Span::styled(
            "old: ",
            cohort_style(Cohort::Old).add_modifier(Modifier::BOLD),
        ),
        Span::raw(sets(&i.old)),
        Span::styled(
            "  new: ",
            cohort_style(Cohort::New).add_modifier(Modifier::BOLD),
        ),
        Span::raw(sets(&i.new)),
    ]);
    let mut lines = vec![fit::items(top, w), fit::words(Line::from(second), w)];
    lines.extend(
        super::resolvers::lines(&d.dns, d.cur.elapsed.as_millis() as u64)
            .into_iter()
            .map(|l| fit::words(l, w)),
    );
    match st.shown_analysis() {
        Some(a) => lines.extend([
            fit::words(analysis_line(a, i.started_at), w),
            fit::words(drain_line(a, i.started_at), w),
        ]),
        None => lines.push(Line::raw("analysis: waiting for the first sample")),
    }
    f.render_widget(Paragraph::new(lines), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_read_short() {
        assert_eq!(signed(12_000), "+12.0s");
        assert_eq!(signed(-3_000), "-3.0s");
        assert_eq!(signed(65_000), "+1m05s");
        assert_eq!(
            (whole(60_400), whole(1_200_000), whole(40_000_000)),
            ("60s".into(), "20m".into(), "11h".into())
        );
    }
}
