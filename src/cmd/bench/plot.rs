//! The sweep as a PNG: p50 and p99 latency against concurrency, one line per (R, W) setting.
//!
//! Drawn with `plotters`' bitmap backend; text uses a TTF bundled in the binary (DejaVu Sans
//! Mono, see `assets/fonts/`), registered through `ab_glyph`, so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use dynakv_bench::{Measurement, OpFigures};

/// The bundled font.
static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSansMono.ttf");

/// Chart size in pixels: small enough to commit, large enough to read.
const SIZE: (u32, u32) = (1100, 460);

/// Picks one percentile from an operation's figures.
type Percentile = fn(&OpFigures) -> f64;

/// Draws `points` to `path`.
pub fn draw(path: &Path, points: &[Measurement]) -> anyhow::Result<()> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the bundled font does not parse");
        }
    });
    anyhow::ensure!(!points.is_empty(), "nothing to plot");
    let mut levels: Vec<usize> = points.iter().map(|p| p.concurrency).collect();
    levels.sort_unstable();
    levels.dedup();
    let mut quorums: Vec<(usize, usize)> = points.iter().map(|p| (p.r, p.w)).collect();
    quorums.sort_unstable();
    quorums.dedup();

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let first = &points[0];
    let title = format!(
        "dynakv workload {}: latency by quorum and concurrency (N={}, {}-byte values, {} keys)",
        first.workload.name(),
        first.n,
        first.value_size,
        first.keys
    );
    let root = root.titled(&title, ("sans-serif", 18))?;
    let panels = root.split_evenly((1, 2));
    let percentiles: [(&str, Percentile); 2] = [("p50", |f| f.p50_us), ("p99", |f| f.p99_us)];
    for (panel, (name, pick)) in panels.iter().zip(percentiles) {
        let values = points.iter().map(|p| pick(p.all())).filter(|v| *v > 0.0);
        let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if hi > 0.0 { (lo / 1.5, hi * 1.5) } else { (1.0, 10.0) };
        let last = (levels.len() - 1).max(1) as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{name} latency (all operations)"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                -0.2..last + 0.2,
                (lo..hi).log_scale().with_key_points(ticks(lo, hi)),
            )?;
        chart
            .configure_mesh()
            .x_desc("concurrency")
            .y_desc("microseconds (log)")
            .x_labels(levels.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                match levels.get(i as usize) {
                    Some(c) if (x - i).abs() < 0.01 => c.to_string(),
                    _ => String::new(),
                }
            })
            .light_line_style(WHITE)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, &(r, w)) in quorums.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let series: Vec<(f64, f64)> = levels
                .iter()
                .enumerate()
                .filter_map(|(x, &c)| {
                    let point = points.iter().find(|p| (p.r, p.w, p.concurrency) == (r, w, c))?;
                    Some((x as f64, pick(point.all())))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                .label(format!("R={r} W={w}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(series.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Tick values 1, 2 and 5 times each power of ten between `lo` and `hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.max(1e-3).log10().floor());
    while decade <= hi {
        for step in [1.0, 2.0, 5.0] {
            let tick = step * decade;
            if (lo..=hi).contains(&tick) {
                ticks.push(tick);
            }
        }
        decade *= 10.0;
    }
    ticks
}
