//! Draws the chart of `bench/run`: one horizontal bar per piece of work,
//! nodeway's figure divided by the better peer's, with that work's target
//! marked, so a reader sees at a glance which targets are met.
//!
//!   bench-chart RATIOS.tsv OUT.png FONT.ttf
//!
//! Each line of RATIOS.tsv is `label<TAB>ratio<TAB>target`; bench/report.py
//! writes it from the benchmark figures.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// One bar: a piece of work, how nodeway did against the better peer, and
/// the ratio the per-request issue asks for.
struct Bar {
    label: String,
    ratio: f64,
    target: f64,
}

fn read_bars(path: &str) -> Result<Vec<Bar>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            let fields: Vec<&str> = line.split('\t').collect();
            let number = |i: usize| -> Result<f64, String> {
                let field = fields
                    .get(i)
                    .ok_or(format!("{path}:{}: needs 3 fields", n + 1))?;
                field
                    .trim()
                    .parse()
                    .map_err(|e| format!("{path}:{}: {field:?}: {e}", n + 1))
            };
            Ok(Bar {
                label: fields[0].to_string(),
                ratio: number(1)?,
                target: number(2)?,
            })
        })
        .collect()
}

fn draw(bars: &[Bar], out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rows = bars.len();
    let height = 120 + 46 * rows as u32;
    let root = BitMapBackend::new(out, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let widest = bars
        .iter()
        .map(|b| b.ratio.max(b.target))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "nodeway / the better peer (same run, same core); | = target",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(330)
        // The discrete range is inclusive of its end once segmented, hence `rows - 1`.
        .build_cartesian_2d(0.0..widest * 1.15, (0..rows - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_desc("ratio (higher is better for nodeway)")
        .y_labels(rows)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(row) => bars
                .get(rows - 1 - row)
                .map_or(String::new(), |b| b.label.clone()),
            _ => String::new(),
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    // The first bar is drawn at the top.
    for (i, bar) in bars.iter().rev().enumerate() {
        let colour = if bar.ratio >= bar.target {
            RGBColor(46, 160, 67)
        } else {
            RGBColor(214, 96, 48)
        };
        let mut rect = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (bar.ratio, SegmentValue::Exact(i + 1)),
            ],
            colour.filled(),
        );
        rect.set_margin(7, 7, 0, 0);
        chart.draw_series(std::iter::once(rect))?;
        let target_mark = [
            (bar.target, SegmentValue::Exact(i)),
            (bar.target, SegmentValue::Exact(i + 1)),
        ];
        chart.draw_series(std::iter::once(PathElement::new(
            target_mark,
            BLACK.stroke_width(3),
        )))?;
        let label = format!(" {:.2}×", bar.ratio);
        chart.draw_series(std::iter::once(Text::new(
            label,
            (bar.ratio, SegmentValue::CenterOf(i)),
            ("sans-serif", 15).into_font(),
        )))?;
    }
    let one = [
        (1.0, SegmentValue::Exact(0)),
        (1.0, SegmentValue::Exact(rows)),
    ];
    chart.draw_series(std::iter::once(PathElement::new(
        one,
        BLACK.mix(0.3).stroke_width(1),
    )))?;
    root.present()?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, ratios, out, font] = &args[..] else {
        eprintln!("usage: bench-chart RATIOS.tsv OUT.png FONT.ttf");
        std::process::exit(2);
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let font_bytes: &'static [u8] = Box::leak(std::fs::read(font)?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, font_bytes)
            .map_err(|_| format!("{font}: not a font"))?;
        draw(&read_bars(ratios)?, out)
    };
    if let Err(e) = run() {
        eprintln!("bench-chart: {e}");
        std::process::exit(1);
    }
}
