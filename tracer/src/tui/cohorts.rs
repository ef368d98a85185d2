//! The cohorts table: per side, what is open, connects and failures per second with why they
//! failed, connect latency, and totals. Failures and latency are of the last interval, like the
//! rates beside them.

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    widgets::{Row, Table},
};

use super::{
    state::ViewState,
    view::{bold, cohort_style, pane_block, rate},
};
use crate::model::{
    cohort::Cohort,
    failures::{Reason, Reasons},
    latency::Percentiles,
};

/// Why connects failed: `refused` (one reason), `refused+` (the most frequent of several), or
/// with room for it every reason with its count: `refused 2 timeout 1`.
pub fn reasons(r: &Reasons, wide: bool) -> String {
    let mut named: Vec<(Reason, u64)> = Reason::ALL
        .iter()
        .map(|x| (*x, r.get(*x)))
        .filter(|(_, n)| *n > 0)
        .collect();
    named.sort_by_key(|x| std::cmp::Reverse(x.1));
    if wide {
        let all: Vec<String> = named
            .iter()
            .map(|(x, n)| format!("{} {n}", x.name()))
            .collect();
        return all.join(" ");
    }
    match named.as_slice() {
        [] => String::new(),
        [(x, _)] => x.name().into(),
        [(x, _), ..] => format!("{}+", x.name()),
    }
}

/// A latency in at most 5 columns: `66us`, `132us`, `1.1ms`, `66ms`, `1.07s`, `12s`.
fn short_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..9_950 => format!("{:.1}ms", us as f64 / 1e3),
        9_950..999_500 => format!("{}ms", (us + 500) / 1_000),
        999_500..9_995_000 => format!("{:.2}s", us as f64 / 1e6),
        _ => format!("{}s", (us + 500_000) / 1_000_000),
    }
}

/// `66us/132us/1.07s` (17 columns at most), or `-` without connects in the interval.
pub fn latency(p: &Percentiles) -> String {
    let f = |v: Option<u64>| v.map_or("-".into(), short_us);
    match p.count {
        0 => "-".into(),
        _ => format!("{}/{}/{}", f(p.p50), f(p.p90), f(p.p99)),
    }
}

pub fn render(f: &mut Frame, st: &ViewState, area: Rect) {
    let d = st.data();
    let secs = d.secs(st.info.interval_ms);
    let wide = area.width >= 120;
    let rows = Cohort::ALL.iter().map(|&c| {
        let (cur, prev) = (d.cur.cohort_out(c), d.prev.cohort_out(c));
        let dl = cur.delta(prev);
        let why = reasons(
            &d.cur.cohort_reasons(c).delta(d.prev.cohort_reasons(c)),
            wide,
        );
        let lat = d.cur.cohort_latency(c).delta(d.prev.cohort_latency(c));
        let mut cells = vec![
            c.name().to_string(),
            format!("{} {:+}", cur.open, dl.open),
            rate(dl.attempts as f64 / secs),
            rate(dl.established as f64 / secs),
            format!("{} {why}", rate(dl.failed as f64 / secs)),
            latency(&lat.established.percentiles()),
            format!("{} +{}", cur.attempts, dl.attempts),
        ];
        if wide {
            cells.push(format!("{} +{}", cur.established, dl.established));
        }
        cells.push(format!("{} +{}", cur.failed, dl.failed));
        Row::new(cells).style(cohort_style(c))
    });
    let mut head = vec![
        "",
        "open",
        "conn/s",
        "est/s",
        "fail/s why",
        "p50/p90/p99",
        "attempts",
    ];
    let mut widths = vec![
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(if wide { 30 } else { 12 }),
        Constraint::Length(17),
        Constraint::Fill(1),
    ];
    if wide {
        head.push("established");
        widths.push(Constraint::Fill(1));
    }
    head.push("failed");
    widths.push(Constraint::Fill(1));
    let title = "cohorts: now, per second and latency of the last interval, totals (+ last)";
    let t = Table::new(rows, widths)
        .header(Row::new(head).style(bold()))
        .block(pane_block(st, title.into(), None));
    f.render_widget(t, area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_most_frequent_first() {
        let r = Reasons([2, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(reasons(&r, true), "timeout 5 refused 2");
        assert_eq!(reasons(&r, false), "timeout+");
        assert_eq!(
            reasons(&Reasons([0, 0, 1, 0, 0, 0, 0, 0]), false),
            "unreachable"
        );
        assert_eq!(reasons(&Reasons::default(), false), "");
        let r = Reasons([0, 0, 0, 0, 0, 3, 1, 0]);
        assert_eq!(reasons(&r, true), "no_route 3 no_port 1");
    }

    #[test]
    fn latency_is_three_bounds_or_a_dash() {
        let p = Percentiles {
            count: 3,
            p50: Some(66),
            p90: Some(66),
            p99: Some(1_073_742),
        };
        assert_eq!(latency(&p), "66us/66us/1.07s");
        assert_eq!(latency(&Percentiles::default()), "-");
        let worst = Percentiles {
            count: 3,
            p50: Some(999),
            p90: Some(9_990),
            p99: Some(999_000),
        };
        assert_eq!(latency(&worst), "999us/10ms/999ms");
        for us in [
            0,
            999,
            1_000,
            9_949,
            9_950,
            99_999,
            999_499,
            999_500,
            9_994_999,
            9_995_000,
            123_456_789,
        ] {
            assert!(short_us(us).chars().count() <= 5, "{us}: {}", short_us(us));
        }
    }
}
