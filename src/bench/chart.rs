//! chart.svg: the round trips, the throughput and the connection rates as horizontal bars, one
//! colour per transport, each bar the median with a line across the runs' range.
//!
//! plotters' SVG backend writes text as `<text>` elements that the browser renders, so drawing
//! needs no font files (the `ttf` feature stays off and plotters estimates text widths).
//!
//! The book shows the SVG at its natural width in a column about 750 px wide, so the chart is
//! drawn that wide and its text is sized for it: plotters writes a font's size divided by 1.24,
//! so the sizes below (17 and 20) come out as 13.7 px and 16.1 px in the SVG.

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Figure, Table, number};

/// The book's content column: the SVG's natural width, so nothing is scaled down.
const WIDTH: u32 = 750;
/// Pixels per bar, and for a panel's caption and axis.
const BAR_HEIGHT: u32 = 24;
const PANEL_EXTRA: u32 = 96;
/// Room for the bars' labels, left of the axis.
const LABEL_WIDTH: u32 = 290;
/// Font sizes as plotters counts them (÷ 1.24 in the SVG): ≥ 13 px for every label.
const TEXT: u32 = 17;
const CAPTION: u32 = 20;
/// Pixels between a whisker's end and the median written right of it.
const GAP: i32 = 6;

/// One bar: its label, the figure it shows, and its transport's colour.
struct Bar<'a> {
    label: String,
    figure: &'a Figure,
    color: RGBColor,
}

struct Panel<'a> {
    title: &'static str,
    unit: &'static str,
    bars: Vec<Bar<'a>>,
}

/// The chart as SVG text.
pub fn svg(tables: &[Table]) -> anyhow::Result<String> {
    let mut throughput = bars(tables, "bulk", |row| Some(row.to_owned()));
    throughput.extend(bars(tables, "file", |row| Some(format!("file, {row}"))));
    let panels = [
        Panel {
            title: "Round trip: median (shorter is faster)",
            unit: "µs",
            bars: bars(tables, "round_trip", |row| row.strip_suffix(", median").map(str::to_owned)),
        },
        Panel { title: "Bulk: 64 KiB writes (longer is faster)", unit: "GB/s", bars: throughput },
        Panel {
            title: "Connections: connect, line, reply, close (longer is faster)",
            unit: "connections/s",
            bars: bars(tables, "connections", |row| Some(row.to_owned())),
        },
    ];
    let heights: Vec<u32> =
        panels.iter().map(|panel| panel.bars.len() as u32 * BAR_HEIGHT + PANEL_EXTRA).collect();
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, heights.iter().sum())).into_drawing_area();
        root.fill(&WHITE).context("draw the chart")?;
        let breaks: Vec<u32> = heights
            .iter()
            .scan(0, |top, height| {
                *top += height;
                Some(*top)
            })
            .collect();
        let areas = root.split_by_breakpoints([0u32; 0], &breaks[..breaks.len() - 1]);
        for (area, panel) in areas.iter().zip(&panels) {
            draw(area, panel)
                .with_context(|| format!("draw the chart's panel {:?}", panel.title))?;
        }
        root.present().context("draw the chart")?;
    }
    Ok(svg)
}

/// A bar for every figure of table `id` whose row `label` accepts, labelled `row · column`.
fn bars<'a>(tables: &'a [Table], id: &str, label: impl Fn(&str) -> Option<String>) -> Vec<Bar<'a>> {
    let Some(table) = tables.iter().find(|table| table.id == id) else { return Vec::new() };
    let mut bars = Vec::new();
    for row in &table.rows {
        let Some(row_label) = label(&row.label) else { continue };
        for (column, figure) in table.columns.iter().zip(&row.figures) {
            let Some(figure) = figure else { continue };
            let label = if table.columns.len() == 1 {
                row_label.clone()
            } else {
                format!("{row_label} · {}", column.title)
            };
            bars.push(Bar { label, figure, color: color(&column.id) });
        }
    }
    bars
}

/// One colour per transport, the same in every panel.
fn color(column: &str) -> RGBColor {
    match column {
        "unix" => RGBColor(31, 119, 180),
        "tcp" => RGBColor(255, 127, 14),
        "pipe" => RGBColor(44, 160, 44),
        _ => RGBColor(127, 127, 127),
    }
}

/// One panel: bars from the top down in the tables' order, the runs' range as a line across
/// each bar's end, and the median written right of that line, clear of it.
fn draw(area: &DrawingArea<SVGBackend, Shift>, panel: &Panel) -> anyhow::Result<()> {
    let bars = &panel.bars;
    let n = bars.len();
    if n == 0 {
        return Ok(()); // a table that is not there (yet): nothing to draw
    }
    // The first bar at the top: plotters counts upwards.
    let slot = |i: usize| n - 1 - i;
    let longest = bars.iter().map(|bar| bar.figure.max).fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", CAPTION))
        .margin(8)
        .x_label_area_size(44)
        .y_label_area_size(LABEL_WIDTH)
        .build_cartesian_2d(0.0..longest * 1.25, (0..n).into_segmented())?;
    let label = |value: &SegmentValue<usize>| match value {
        SegmentValue::CenterOf(i) if *i < n => bars[slot(*i)].label.clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .label_style(("sans-serif", TEXT))
        .axis_desc_style(("sans-serif", TEXT))
        .x_labels(5)
        .y_labels(n)
        .y_label_formatter(&label)
        .x_label_formatter(&|x| axis_number(*x))
        .x_desc(panel.unit)
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, bar)| {
        let (bottom, top) = (SegmentValue::Exact(slot(i)), SegmentValue::Exact(slot(i) + 1));
        let mut rectangle =
            Rectangle::new([(0.0, bottom), (bar.figure.median, top)], bar.color.filled());
        rectangle.set_margin(3, 3, 0, 0);
        rectangle
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, bar)| {
        let y = SegmentValue::CenterOf(slot(i));
        PathElement::new(vec![(bar.figure.min, y.clone()), (bar.figure.max, y)], BLACK)
    }))?;
    let beside =
        TextStyle::from(("sans-serif", TEXT).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    chart.draw_series(bars.iter().enumerate().map(|(i, bar)| {
        // Anchored at the whisker's end, the text moved GAP pixels further right.
        let at = (bar.figure.max, SegmentValue::CenterOf(slot(i)));
        EmptyElement::at(at) + Text::new(number(bar.figure.median), (GAP, 0), beside.clone())
    }))?;
    Ok(())
}

/// An axis value without trailing zeros: `0`, `2.5`, `10000`.
fn axis_number(x: f64) -> String {
    let text = format!("{x:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
