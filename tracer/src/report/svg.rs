//! `--svg`: a postmortem picture of the move. A title (host, sets, date), then three panels on
//! one wall-clock (UTC) axis: the new side's share, connects/s per side, and the old side's
//! open connections (the drain). Old is always the same orange, new the same blue; the cutover,
//! crossings and drain are numbered lines whose labels sit in a legend beside the data, never
//! on it (plotters, SVG backend only).

use std::time::{Duration, SystemTime};

use plotters::prelude::*;

use super::Recorded;
use crate::model::analysis::{Finding, drain::DrainChange, gap::Crossed};

pub const WIDTH: u32 = 1100;
pub const HEIGHT: u32 = 820;
/// The legend column on the right, outside the data.
const LEGEND: u32 = 250;
const TITLE: u32 = 56;

const OLD: RGBColor = RGBColor(214, 96, 39);
const NEW: RGBColor = RGBColor(38, 110, 190);
const MARK: RGBColor = RGBColor(110, 110, 110);
const CUTOVER: RGBColor = RGBColor(200, 30, 30);
const GRID: RGBColor = RGBColor(238, 238, 238);
const GRID_BOLD: RGBColor = RGBColor(222, 222, 222);

/// A vertical marker at `x` seconds, numbered in the legend.
struct Mark {
    x: f64,
    label: String,
    color: RGBColor,
}

fn marks(rec: &Recorded) -> Vec<Mark> {
    let mut v = vec![];
    if let Some(c) = &rec.state.cutover {
        v.push(Mark {
            x: c.at_ms as f64 / 1000.0,
            label: format!("cutover ({})", c.source),
            color: CUTOVER,
        });
    }
    for (_, f) in &rec.findings {
        match f {
            Finding::Threshold {
                metric,
                level,
                change: Crossed::Reached(c),
                ..
            } => v.push(Mark {
                x: c.reached_ms as f64 / 1000.0,
                label: format!("{} {}% reached", metric.name(), level),
                color: MARK,
            }),
            Finding::Threshold {
                metric,
                level,
                change: Crossed::Lost(c),
                ..
            } => v.push(Mark {
                x: c.lost_ms.unwrap_or(0) as f64 / 1000.0,
                label: format!("{} {}% lost", metric.name(), level),
                color: MARK,
            }),
            Finding::Drain(DrainChange::Drained { since_ms, .. }) => v.push(Mark {
                x: *since_ms as f64 / 1000.0,
                label: "old side drained".into(),
                color: RGBColor(0, 0, 0),
            }),
            _ => {}
        }
    }
    v.sort_by(|a, b| a.x.total_cmp(&b.x));
    v
}

fn started(rec: &Recorded) -> Option<SystemTime> {
    rec.meta["started_at"]
        .as_str()
        .and_then(crate::ndjson::parse_rfc3339)
}

/// An x position (seconds since start) as the axis shows it: `14:23:05`, or `+65s` without a
/// start time.
fn x_label(start: Option<SystemTime>, secs: f64) -> String {
    match start {
        Some(t) => crate::ndjson::clock(t + Duration::from_secs_f64(secs.max(0.0))),
        None => format!("+{secs:.0}s"),
    }
}

fn list(v: &serde_json::Value) -> String {
    let items: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw(rec: &Recorded, buf: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(buf, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(TITLE);
    let (charts, legend) = body.split_horizontally(WIDTH - LEGEND);
    let start = started(rec);
    let date = rec.meta["started_at"].as_str().unwrap_or("?");
    title.draw(&Text::new(
        format!(
            "tracer: move on {} from {}",
            rec.meta["host"].as_str().unwrap_or("?"),
            date.get(..10).unwrap_or(date)
        ),
        (14, 8),
        ("sans-serif", 20).into_font().style(FontStyle::Bold),
    ))?;
    title.draw(&Text::new(
        format!(
            "old: {}   new: {}   times in UTC",
            list(&rec.meta["old"]),
            if rec.new_side.is_empty() {
                "-".into()
            } else {
                rec.new_side.join(", ")
            }
        ),
        (14, 34),
        ("sans-serif", 13),
    ))?;

    let end = rec
        .series
        .last()
        .map_or(1.0, |p| p.ms as f64 / 1000.0)
        .max(1.0);
    let marks = marks(rec);
    let panels = charts.split_evenly((3, 1));
    let xs = |p: &super::Point| p.ms as f64 / 1000.0;
    let fmt = move |x: &f64| x_label(start, *x);

    // Share on the new side: one colour (new), attempts solid, open connections dashed.
    let mut share = chart(&panels[0], "share on the new side (%)", end, 100.0, &fmt)?;
    let pct = |p: Option<u32>| p.map(|v| v as f64 / 10.0);
    share.draw_series(LineSeries::new(
        rec.series
            .iter()
            .filter_map(|p| Some((xs(p), pct(p.share_attempts)?))),
        NEW.stroke_width(2),
    ))?;
    share.draw_series(DashedLineSeries::new(
        rec.series
            .iter()
            .filter_map(|p| Some((xs(p), pct(p.share_open)?))),
        6,
        4,
        NEW.stroke_width(2),
    ))?;
    let level = rec.params.threshold as f64;
    share.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, level), (end, level)],
        MARK.mix(0.5),
    )))?;
    marks_on(&mut share, &marks, 100.0, true)?;

    let top = rec
        .series
        .iter()
        .map(|p| p.old_rate.max(p.new_rate))
        .fold(1.0, f64::max)
        * 1.1;
    let mut rate = chart(&panels[1], "connects per second", end, top, &fmt)?;
    for (color, pick) in [
        (
            OLD,
            (|p: &super::Point| p.old_rate) as fn(&super::Point) -> f64,
        ),
        (NEW, |p: &super::Point| p.new_rate),
    ] {
        rate.draw_series(LineSeries::new(
            rec.series.iter().map(|p| (xs(p), pick(p))),
            color.stroke_width(2),
        ))?;
    }
    marks_on(&mut rate, &marks, top, false)?;

    let open_top = rec.series.iter().map(|p| p.old_open).max().unwrap_or(0) as f64 * 1.1 + 1.0;
    let mut open = chart(
        &panels[2],
        "old side: open connections (drain)",
        end,
        open_top,
        &fmt,
    )?;
    open.draw_series(AreaSeries::new(
        rec.series.iter().map(|p| (xs(p), p.old_open as f64)),
        0.0,
        OLD.mix(0.25),
    ))?;
    open.draw_series(LineSeries::new(
        rec.series.iter().map(|p| (xs(p), p.old_open as f64)),
        OLD.stroke_width(2),
    ))?;
    marks_on(&mut open, &marks, open_top, false)?;

    draw_legend(&legend, &marks, start)?;
    root.present()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    end: f64,
    top: f64,
    fmt: &dyn Fn(&f64) -> String,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(26)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    c.configure_mesh()
        .light_line_style(GRID)
        .bold_line_style(GRID_BOLD)
        .x_labels(8)
        .x_label_formatter(fmt)
        .draw()?;
    Ok(c)
}

/// The marks as thin vertical lines; the share panel numbers them at its top edge, above the
/// data, and the legend names each number.
fn marks_on(
    c: &mut Chart,
    marks: &[Mark],
    top: f64,
    numbered: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    for (i, m) in marks.iter().enumerate() {
        c.draw_series(std::iter::once(PathElement::new(
            vec![(m.x, 0.0), (m.x, top)],
            m.color.mix(0.7).stroke_width(1),
        )))?;
        if numbered {
            c.draw_series(std::iter::once(
                EmptyElement::at((m.x, top))
                    + Text::new(
                        format!("{}", i + 1),
                        (3, 2 + (i % 3) as i32 * 11),
                        ("sans-serif", 11).into_font().color(&m.color),
                    ),
            ))?;
        }
    }
    Ok(())
}

fn draw_legend(
    area: &Area,
    marks: &[Mark],
    start: Option<SystemTime>,
) -> Result<(), Box<dyn std::error::Error>> {
    let font = ("sans-serif", 13);
    let mut y = 24;
    let mut line = |text: String,
                    color: RGBColor,
                    style: Option<ShapeStyle>|
     -> Result<(), Box<dyn std::error::Error>> {
        if let Some(s) = style {
            area.draw(&PathElement::new(vec![(8, y + 7), (34, y + 7)], s))?;
        }
        area.draw(&Text::new(text, (40, y), font.into_font().color(&color)))?;
        y += 20;
        Ok(())
    };
    line("new side".into(), BLACK, Some(NEW.stroke_width(2)))?;
    line("old side".into(), BLACK, Some(OLD.stroke_width(2)))?;
    line("- - share by open conns".into(), BLACK, None)?;
    line("grey: --threshold".into(), MARK, None)?;
    line(String::new(), MARK, None)?;
    for (i, m) in marks.iter().enumerate() {
        line(
            format!("{} {} {}", i + 1, x_label(start, m.x), m.label),
            m.color,
            None,
        )?;
    }
    Ok(())
}

/// The picture as SVG text.
pub fn render(rec: &Recorded) -> String {
    let mut buf = String::new();
    if let Err(e) = draw(rec, &mut buf) {
        // Drawing into a string cannot fail for I/O; say what went wrong instead of a panic.
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\"><text x=\"10\" y=\"20\">cannot draw: {e}</text></svg>"
        );
    }
    buf
}
