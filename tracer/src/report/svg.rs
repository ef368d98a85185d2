//! `--svg`: the new side's share (attempts and open) and connects/s over time, with the cutover,
//! the threshold crossings and the drain marked (plotters, SVG backend only).

use plotters::prelude::*;

use super::Recorded;
use crate::model::analysis::{Finding, drain::DrainChange, gap::Crossed};

pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 640;

const OLD: RGBColor = RGBColor(214, 96, 39);
const NEW: RGBColor = RGBColor(38, 110, 190);
const OPEN: RGBColor = RGBColor(60, 160, 90);
const MARK: RGBColor = RGBColor(120, 120, 120);

/// A vertical marker at `x` seconds with a label.
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
            color: RGBColor(200, 30, 30),
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
                label: format!("{} {}%", metric.name(), level),
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
                label: "drained".into(),
                color: RGBColor(0, 0, 0),
            }),
            _ => {}
        }
    }
    v
}

fn draw(rec: &Recorded, buf: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(buf, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(HEIGHT / 2);
    let end = rec
        .series
        .last()
        .map_or(1.0, |p| p.ms as f64 / 1000.0)
        .max(1.0);
    let marks = marks(rec);

    let mut share = ChartBuilder::on(&upper)
        .caption("new side's share", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..end, 0f64..100f64)?;
    share
        .configure_mesh()
        .y_desc("% on new")
        .x_desc("seconds since start")
        .draw()?;
    let pct = |p: Option<u32>| p.map(|v| v as f64 / 10.0);
    share
        .draw_series(LineSeries::new(
            rec.series
                .iter()
                .filter_map(|p| Some((p.ms as f64 / 1000.0, pct(p.share_attempts)?))),
            NEW.stroke_width(2),
        ))?
        .label("attempts")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], NEW.stroke_width(2)));
    share
        .draw_series(LineSeries::new(
            rec.series
                .iter()
                .filter_map(|p| Some((p.ms as f64 / 1000.0, pct(p.share_open)?))),
            OPEN.stroke_width(2),
        ))?
        .label("open connections")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], OPEN.stroke_width(2)));
    let level = rec.params.threshold as f64;
    share.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, level), (end, level)],
        MARK.mix(0.6),
    )))?;
    for (i, m) in marks.iter().enumerate() {
        share.draw_series(std::iter::once(PathElement::new(
            vec![(m.x, 0.0), (m.x, 100.0)],
            m.color.stroke_width(1),
        )))?;
        // Labels stagger down so neighbouring marks stay readable.
        let y = 95.0 - (i % 6) as f64 * 9.0;
        share.draw_series(std::iter::once(Text::new(
            m.label.clone(),
            (m.x, y),
            ("sans-serif", 11).into_font().color(&m.color),
        )))?;
    }
    share
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    let top = rec
        .series
        .iter()
        .map(|p| p.old_rate.max(p.new_rate))
        .fold(1.0, f64::max)
        * 1.1;
    let mut rate = ChartBuilder::on(&lower)
        .caption("connects per second", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    rate.configure_mesh()
        .y_desc("connects/s")
        .x_desc("seconds since start")
        .draw()?;
    for (name, color, pick) in [
        (
            "old",
            OLD,
            (|p: &super::Point| p.old_rate) as fn(&super::Point) -> f64,
        ),
        ("new", NEW, |p: &super::Point| p.new_rate),
    ] {
        rate.draw_series(LineSeries::new(
            rec.series.iter().map(|p| (p.ms as f64 / 1000.0, pick(p))),
            color.stroke_width(2),
        ))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    for m in &marks {
        rate.draw_series(std::iter::once(PathElement::new(
            vec![(m.x, 0.0), (m.x, top)],
            m.color.stroke_width(1),
        )))?;
    }
    rate.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
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
