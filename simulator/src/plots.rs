//! SVG plots of a report, policies side by side: savings and buffer over time, and the
//! CDFs of startup time and live delay.

use crate::report::Report;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Colours of the policies' lines, in the report's (sorted) order.
const COLOURS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

struct Chart<'a> {
    file: &'a str,
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Writes the four plots into `dir`; returns their paths.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let series = |f: &dyn Fn(&crate::metrics::PolicyReport) -> Vec<(f64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
        report.policies.iter().map(|(n, p)| (n.clone(), f(p))).collect()
    };
    let charts = [
        Chart {
            file: "savings.svg",
            title: "Savings over time",
            x_label: "time (s)",
            y_label: "savings (interval)",
            lines: series(&|p| zip_some(&p.series.t_s, &p.series.savings)),
        },
        Chart {
            file: "buffer.svg",
            title: "Buffer ahead of the playhead (mean over sampled viewers)",
            x_label: "time (s)",
            y_label: "buffer (s)",
            lines: series(&|p| zip_some(&p.series.t_s, &p.series.buffer_s)),
        },
        Chart {
            file: "startup-cdf.svg",
            title: "Startup time CDF",
            x_label: "startup (s)",
            y_label: "share of viewers",
            lines: series(&|p| p.startup_cdf.iter().map(|[x, y]| (*x, *y)).collect()),
        },
        Chart {
            file: "live-delay-cdf.svg",
            title: "Live delay CDF",
            x_label: "live delay (s)",
            y_label: "share of segments",
            lines: series(&|p| p.live_delay_cdf.iter().map(|[x, y]| (*x, *y)).collect()),
        },
    ];
    let mut paths = Vec::new();
    for c in charts {
        let path = dir.join(c.file);
        draw(&c, &path).map_err(|e| format!("plotting {}: {e}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

fn zip_some(xs: &[f64], ys: &[Option<f64>]) -> Vec<(f64, f64)> {
    xs.iter().zip(ys).filter_map(|(x, y)| y.map(|y| (*x, y))).collect()
}

fn draw(c: &Chart, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let points = c.lines.iter().flat_map(|(_, l)| l.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    y0 = y0.min(0.0);
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1 * 1.05)?;
    chart.configure_mesh().x_desc(c.x_label).y_desc(c.y_label).draw()?;
    for (i, (name, line)) in c.lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(line.iter().copied(), colour.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
