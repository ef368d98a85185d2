//! Rendering: one frame from a `ViewState`, nothing else (no maps, no clock), so every screen is
//! a pure function of the state and is tested with `TestBackend` snapshots.
//!
//! Colours are plain ANSI red (old) and green (new), readable on dark and light terminals; the
//! meaning is always also in the text ("old", "new", markers), never in the colour alone.

use std::time::Duration;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{Axis, Block, Borders, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table},
};

use super::{
    cohorts, header,
    state::{Pane, Sort, ViewState},
};
use crate::model::{cohort::Cohort, share::Share};

pub fn cohort_style(c: Cohort) -> Style {
    match c {
        Cohort::Old => Style::new().fg(Color::Red),
        Cohort::New => Style::new().fg(Color::Green),
        Cohort::Other => Style::new(),
    }
}

pub fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// `HH:MM:SS`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Short age: `now`, `12s`, `3m`, `2h`.
fn ago(d: Duration) -> String {
    match d.as_secs() {
        0 => "now".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

pub fn rate(r: f64) -> String {
    if r == 0.0 {
        "0".into()
    } else if r < 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

pub fn interval(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

pub fn pane_block(st: &ViewState, title: String, pane: Option<Pane>) -> Block<'static> {
    let focused = pane.is_some_and(|p| p == st.focus);
    let title = if focused {
        Span::styled(
            format!("▶ {title} "),
            bold().add_modifier(Modifier::REVERSED),
        )
    } else {
        Span::styled(format!("─ {title} "), bold())
    };
    Block::new().borders(Borders::TOP).title(title)
}

/// The whole screen.
pub fn render(f: &mut Frame, st: &ViewState) {
    let area = f.area();
    let extra = area.height.saturating_sub(24);
    let grow = extra * 2 / 5;
    let [header, cohorts, mid, tables, log, footer] = Layout::vertical([
        Constraint::Length(header::height(st)),
        Constraint::Length(5),
        Constraint::Length(5 + grow),
        Constraint::Length(6 + grow),
        // The log gets what is left: at small sizes the header's drain line, the share and
        // the tables win over it.
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    header::render(f, st, header);
    cohorts::render(f, st, cohorts);
    let side = if area.width >= 120 {
        Constraint::Length(48)
    } else {
        Constraint::Percentage(45)
    };
    let [share, chart] = Layout::horizontal([side, Constraint::Fill(1)])
        .spacing(1)
        .areas(mid);
    render_share(f, st, share);
    render_chart(f, st, chart);
    let split = if area.width >= 120 { 58 } else { 62 };
    let [dest, strag] = Layout::horizontal([Constraint::Percentage(split), Constraint::Fill(1)])
        .spacing(1)
        .areas(tables);
    render_destinations(f, st, dest);
    render_stragglers(f, st, strag);
    render_log(f, st, log);
    render_footer(f, st, footer);
    if st.help {
        render_help(f, area);
    }
}

/// `██████░░░░  62% 5/8`: the bar, then the percentage with the counts behind it.
fn gauge(s: Option<Share>, width: u16, none: &str) -> Line<'static> {
    let Some(s) = s else {
        return Line::raw(format!("  {none}"));
    };
    let label = format!(" {:>3}% {}/{}", s.percent(), s.new, s.total());
    let bar = (width as usize)
        .saturating_sub(label.chars().count() + 2)
        .max(4);
    let filled = ((s.ratio() * bar as f64).round() as usize).min(bar);
    Line::from(vec![
        Span::raw("  "),
        Span::styled("█".repeat(filled), cohort_style(Cohort::New)),
        Span::raw("░".repeat(bar - filled)),
        Span::styled(label, bold()),
    ])
}

fn render_share(f: &mut Frame, st: &ViewState, area: Rect) {
    let d = st.data();
    let w = area.width;
    let lines = vec![
        Line::raw(format!(
            "by connects, last {:.1}s",
            d.secs(st.info.interval_ms)
        )),
        gauge(st.share_attempts(), w, "no connects to old or new"),
        Line::raw("by open connections"),
        gauge(st.share_open(), w, "no open connections to old or new"),
    ];
    let block = pane_block(st, "share on new".into(), None);
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_chart(f: &mut Frame, st: &ViewState, area: Rect) {
    let d = st.data();
    let block = pane_block(st, "connects/s since start, share on new".into(), None);
    if d.history.is_empty() {
        let p = Paragraph::new("  waiting for the first sample").block(block);
        f.render_widget(p, area);
        return;
    }
    let x1 = d.history.last().map_or(1.0, |p| p.t).max(1.0);
    let peak = d.history.iter().flat_map(|p| p.rate).fold(0.0f64, f64::max);
    let ymax = (peak * 1.1).ceil().max(1.0);
    let series = |c: Cohort| -> Vec<(f64, f64)> {
        d.history
            .iter()
            .map(|p| (p.t, p.rate[c as usize]))
            .collect()
    };
    let (old, new, other) = (
        series(Cohort::Old),
        series(Cohort::New),
        series(Cohort::Other),
    );
    let share: Vec<(f64, f64)> = d
        .history
        .iter()
        .filter_map(|p| p.share.map(|s| (p.t, s * ymax)))
        .collect();
    let cut: Vec<(f64, f64)> = st.cutover.map_or(vec![], |c| vec![(c, 0.0), (c, ymax)]);
    let line = |name: &'static str, m: Marker, style: Style, data| {
        Dataset::default()
            .name(name)
            .marker(m)
            .graph_type(GraphType::Line)
            .style(style)
            .data(data)
    };
    let mut sets = vec![
        line("old •", Marker::Dot, cohort_style(Cohort::Old), &old),
        line("new", Marker::Braille, cohort_style(Cohort::New), &new),
        line("other", Marker::Braille, Style::new(), &other),
        line(
            "share (top=100%)",
            Marker::Braille,
            Style::new().fg(Color::Magenta),
            &share,
        ),
    ];
    if !cut.is_empty() {
        sets.push(line("cutover", Marker::Block, bold(), &cut));
    }
    let chart = Chart::new(sets)
        .block(block)
        .x_axis(
            Axis::default()
                .bounds([0.0, x1])
                .labels(["0s".to_string(), clock(Duration::from_secs_f64(x1))]),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, ymax])
                // No "0" at the bottom: beside the share gauges it read as part of their counts.
                .labels([String::new(), format!("{ymax:.0}/s")]),
        )
        .hidden_legend_constraints((Constraint::Ratio(1, 1), Constraint::Ratio(3, 4)));
    f.render_widget(chart, area);
}

fn render_destinations(f: &mut Frame, st: &ViewState, area: Rect) {
    let rows = st.destinations();
    let n = rows.len();
    let head = |s: Sort, text: &'static str| {
        if st.sort == s {
            format!("{text}▼")
        } else {
            text.to_string()
        }
    };
    let header = Row::new(vec![
        head(Sort::Addr, "address"),
        "side".to_string(),
        head(Sort::Open, "open"),
        head(Sort::Rate, "conn/s"),
        head(Sort::Failed, "failed"),
        head(Sort::LastSeen, "seen"),
    ])
    .style(bold());
    let skip = visible_skip(st.scroll[Pane::Destinations as usize], rows.len(), area);
    let body = rows.into_iter().skip(skip).map(|r| {
        Row::new(vec![
            r.addr.to_string(),
            r.cohort.name().to_string(),
            r.open.to_string(),
            rate(r.rate),
            r.failed.to_string(),
            ago(r.ago),
        ])
        .style(cohort_style(r.cohort))
    });
    let filter = if st.filter.is_empty() {
        String::new()
    } else {
        format!(", filter {}", st.filter)
    };
    // The sort first: a long filter must not push it out of the title.
    let title = format!("destinations ({n}), sort {}{filter}", st.sort.label());
    // The address keeps at least an IPv4 address's 15 columns at 80x24.
    let widths = [
        Constraint::Min(15),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(4),
    ];
    let t = Table::new(body, widths).header(header).block(pane_block(
        st,
        title,
        Some(Pane::Destinations),
    ));
    f.render_widget(t, area);
}

/// Rows to skip so a scrolled table still fills its pane: never past its last row, even when
/// rows went away since the user scrolled.
fn visible_skip(scroll: usize, rows: usize, area: Rect) -> usize {
    // The block's top border and the header row.
    let shown = (area.height as usize).saturating_sub(2).max(1);
    scroll.min(rows.saturating_sub(shown))
}

fn render_stragglers(f: &mut Frame, st: &ViewState, area: Rect) {
    let rows = st.stragglers();
    let block = pane_block(
        st,
        format!("stragglers on old ({})", rows.len()),
        Some(Pane::Stragglers),
    );
    if rows.is_empty() {
        let p = Paragraph::new("  none: no process holds or opens old connections")
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(block);
        f.render_widget(p, area);
        return;
    }
    // The analysis adds, per process: did it ever reach the new side, and (with room) its
    // last and first old contact and its unit.
    // A process name keeps 12 columns; on a narrow pane conn/s gives way to it.
    let wide = area.width >= 60;
    let rate_col = area.width >= 38;
    // The network namespace, where known (container hosts: which tenant it is).
    let netns = &st.data().cur.netns;
    let ns_col = wide && rows.iter().any(|s| netns.contains_key(&s.pid));
    let mut head = vec!["pid", "comm", "open"];
    if rate_col {
        head.push("conn/s");
    }
    head.push("why");
    if wide {
        head.extend(["new", "last old", "first old", "unit"]);
    }
    let cut = st
        .data()
        .analysis
        .as_ref()
        .is_some_and(|a| a.cutover.is_some());
    if ns_col {
        head.push("netns");
    }
    let header = Row::new(head).style(bold());
    let skip = visible_skip(st.scroll[Pane::Stragglers as usize], rows.len(), area);
    let started = st.info.started_at;
    let body = rows.into_iter().skip(skip).map(|s| {
        let h = s.history.as_ref();
        let new = h.map_or("", |h| if h.reached_new { "yes" } else { "NO" });
        let t = |v: Option<u64>| {
            v.map_or("-".into(), |ms| {
                crate::ndjson::clock(started + Duration::from_millis(ms))
            })
        };
        let mut cells = vec![s.pid.to_string(), s.comm.clone(), s.open.to_string()];
        if rate_col {
            cells.push(rate(s.rate));
        }
        cells.push(h.map_or(
            "-".into(),
            |h| {
                if wide { h.why(cut) } else { h.why_short(cut) }
            },
        ));
        if wide {
            cells.extend([
                new.to_string(),
                t(h.and_then(|h| h.last_old_ms)),
                t(h.and_then(|h| h.first_old_ms)),
                h.and_then(|h| h.unit.clone()).unwrap_or_default(),
            ]);
        }
        if ns_col {
            cells.push(netns.get(&s.pid).map(u64::to_string).unwrap_or_default());
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Min(12),
        Constraint::Length(4),
    ];
    if rate_col {
        widths.push(Constraint::Length(6));
    }
    widths.push(Constraint::Length(if wide { 22 } else { 9 }));
    if wide {
        widths.extend([
            Constraint::Length(3),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Fill(1),
        ]);
    }
    if ns_col {
        widths.push(Constraint::Length(10));
    }
    f.render_widget(Table::new(body, widths).header(header).block(block), area);
}

fn render_log(f: &mut Frame, st: &ViewState, area: Rect) {
    let lines: Vec<Line> = st
        .log
        .iter()
        .rev()
        .skip(st.scroll[Pane::Log as usize])
        .map(|l| {
            // Wall-clock (UTC) times: what a postmortem quotes. A sentence too long for the
            // pane ends at a word.
            super::fit::words(
                Line::from(vec![
                    Span::raw(crate::ndjson::clock(l.at)),
                    Span::styled(format!(" {:<15}", l.kind), bold()),
                    Span::raw(l.text.clone()),
                ]),
                area.width as usize,
            )
        })
        .collect();
    let block = pane_block(st, "events, newest first".into(), Some(Pane::Log));
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_footer(f: &mut Frame, st: &ViewState, area: Rect) {
    let line = match &st.editing {
        Some(text) => Line::from(vec![
            Span::styled("filter: ", bold()),
            Span::raw(format!("{text}█")),
            Span::raw("  Enter apply, Esc cancel; text or CIDR"),
        ]),
        None => Line::raw(
            "q quit  p pause  s sort  / filter  Tab pane  ↑↓ PgUp PgDn  c cutover  ? help",
        ),
    };
    f.render_widget(Paragraph::new(line), area);
}

const HELP: &[(&str, &str)] = &[
    ("q  Esc  Ctrl-C", "quit (the summary goes to --json)"),
    ("p", "pause or resume the display (counting goes on)"),
    ("s", "cycle the sort of destinations"),
    ("/", "filter destinations: text or CIDR, Enter applies"),
    ("Tab  Shift-Tab", "move between panes (▶ marks the focus)"),
    ("↑ ↓  PgUp PgDn  Home", "scroll the focused pane"),
    ("c", "mark the cutover now (log, chart and NDJSON)"),
    ("?", "show or hide this help"),
];

fn render_help(f: &mut Frame, area: Rect) {
    let w = 72.min(area.width);
    let h = (HELP.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let mut lines = vec![Line::raw("")];
    lines.extend(HELP.iter().map(|(k, what)| {
        Line::from(vec![
            Span::styled(format!(" {k:<21}"), bold()),
            Span::raw(*what),
        ])
    }));
    let block = Block::bordered().title(Span::styled(" keys (? or Esc closes) ", bold()));
    f.render_widget(Clear, popup);
    f.render_widget(Paragraph::new(lines).block(block), popup);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::{fixtures, state::ViewState};
    use crossterm::event::{KeyCode, KeyEvent};
    use ratatui::{Terminal, backend::TestBackend};

    fn screen(st: &ViewState, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(f, st)).unwrap();
        t.backend().to_string()
    }

    #[test]
    fn narrow_header_drops_whole_items_and_shows_the_metrics_address() {
        let mut st = fixtures::mid_failover();
        st.info.kernel = "6.18.44-fc-v66-with-a-long-local-suffix".into();
        st.info.metrics_addr = Some("127.0.0.1:40123".parse().unwrap());
        let s = screen(&st, 80, 24);
        let top = s.lines().next().unwrap();
        assert!(top.contains("metrics 127.0.0.1:40123"), "{top}");
        // The kernel release is shown whole or not at all.
        assert!(
            !top.contains("kernel") || top.contains(&st.info.kernel),
            "{top}"
        );
        let wide = screen(&st, 200, 30);
        assert!(wide.lines().next().unwrap().contains(&st.info.kernel));
    }

    #[test]
    fn the_header_says_what_the_filters_keep() {
        let mut st = fixtures::mid_failover();
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        st.info.filters.netns = Some(crate::kernel::filter::Netns {
            arg: "a".into(),
            path: "/run/netns/a".into(),
            inode: 4026532401,
            file: std::sync::Arc::new(file),
        });
        let s = screen(&st, 160, 24);
        let top = s.lines().next().unwrap();
        assert!(
            top.contains("only netns 4026532401 (/run/netns/a)"),
            "{top}"
        );
    }

    #[test]
    fn small_terminals_keep_the_drain_and_share_over_the_log() {
        let s = screen(&fixtures::mid_failover(), 80, 18);
        assert!(s.contains("old not drained"), "{s}");
        assert!(s.contains("share on new"), "{s}");
    }

    #[test]
    fn a_scrolled_table_never_shows_past_its_last_row() {
        let mut st = fixtures::mid_failover();
        st.scroll[Pane::Stragglers as usize] = 99;
        let s = screen(&st, 120, 30);
        assert!(
            s.contains("curl"),
            "the last straggler is still in view:\n{s}"
        );
    }

    #[test]
    fn empty_start() {
        insta::assert_snapshot!(screen(&fixtures::empty(), 80, 24));
    }

    #[test]
    fn mid_failover_80x24() {
        insta::assert_snapshot!(screen(&fixtures::mid_failover(), 80, 24));
    }

    #[test]
    fn mid_failover_wide() {
        insta::assert_snapshot!(screen(&fixtures::mid_failover(), 160, 48));
    }

    #[test]
    fn fully_on_new() {
        insta::assert_snapshot!(screen(&fixtures::fully_new(), 100, 30));
    }

    #[test]
    fn paused_with_a_filter() {
        let mut st = fixtures::mid_failover();
        for c in "/old".chars() {
            st.key(KeyEvent::from(KeyCode::Char(c)));
        }
        st.key(KeyEvent::from(KeyCode::Enter));
        st.key(KeyEvent::from(KeyCode::Char('p')));
        st.key(KeyEvent::from(KeyCode::Char('s')));
        insta::assert_snapshot!(screen(&st, 100, 30));
    }

    #[test]
    fn help_overlay() {
        let mut st = fixtures::mid_failover();
        st.key(KeyEvent::from(KeyCode::Char('?')));
        insta::assert_snapshot!(screen(&st, 80, 24));
    }

    #[test]
    fn typing_a_filter_shows_it_in_the_footer() {
        let mut st = fixtures::mid_failover();
        for c in "/127.20".chars() {
            st.key(KeyEvent::from(KeyCode::Char(c)));
        }
        let s = screen(&st, 80, 24);
        assert!(s.contains("filter: 127.20█"), "{s}");
    }

    #[test]
    fn tiny_terminal_does_not_panic() {
        for (w, h) in [(1, 1), (20, 5), (40, 10)] {
            screen(&fixtures::mid_failover(), w, h);
            let mut st = fixtures::mid_failover();
            st.help = true;
            screen(&st, w, h);
        }
    }
}
