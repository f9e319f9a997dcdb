//! The latency-by-percentile chart written by `--plot FILE.svg`: one line
//! per run, latency in ms on a log y axis against the percentile on the
//! classic HdrHistogram x axis, `1/(1-p)` on a log scale, so that 90%,
//! 99%, 99.9%… are evenly spaced and the tail gets the room it deserves.
//!
//! The current run is drawn from its [`Report`]; earlier runs from the
//! JSON files their `--json` wrote (`--plot-add RUN.json`), which carry the
//! same percentile rows (`latency_curve`). The SVG is written by hand: a
//! few dozen elements need no plotting library.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::report::{CurvePoint, Latency, Report};

/// One line of the chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// Percentile rows, by rising quantile.
    pub points: Vec<CurvePoint>,
    /// The run's exact percentiles, for the legend.
    pub latency: Latency,
}

impl Curve {
    /// The curve of a run that just finished, labelled `name: scenario`.
    pub fn from_report(name: &str, report: &Report) -> Self {
        Curve {
            label: format!("{name}: {}", report.scenario),
            points: report.latency_curve.clone(),
            latency: report.latency_us.clone(),
        }
    }

    /// The curve of an earlier run, from the file its `--json` wrote,
    /// labelled with the file's name and the run's scenario.
    pub fn from_json_file(path: &Path) -> anyhow::Result<Self> {
        /// The part of a `--json` report the chart needs.
        #[derive(Deserialize)]
        struct SavedRun {
            scenario: String,
            latency_us: Latency,
            latency_curve: Vec<CurvePoint>,
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let run: SavedRun = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a `feed-sim load --json` report with a latency_curve; \
                 write one with this version's --json",
                path.display()
            )
        })?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        );
        Ok(Curve {
            label: format!("{name}: {}", run.scenario),
            points: run.latency_curve,
            latency: run.latency_us,
        })
    }
}

/// Line colours, one per run (Tableau 10).
const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const WIDTH: f64 = 960.0;
/// Height of everything above the legend: title, plot, x axis.
const HEIGHT: f64 = 580.0;
/// Height of one legend row below the chart.
const LEGEND_ROW: f64 = 20.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 56.0;
const TOP: f64 = 78.0;
const BOTTOM: f64 = 58.0;

/// Smallest latency drawn, ms: the log axis cannot show 0.
const FLOOR_MS: f64 = 0.001;

/// The x position of quantile `q` before scaling: `log10(1/(1-q))`.
fn x_of_quantile(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// The SVG chart of `curves` under `title` and `subtitle`.
pub fn svg(title: &str, subtitle: &str, curves: &[Curve]) -> String {
    // Rows at 100% have no place on a 1/(1-p) axis: the row before them
    // already shows the maximum's bucket, as in HdrHistogram's plotter.
    let drawn = |c: &Curve| -> Vec<(f64, f64)> {
        c.points
            .iter()
            .filter(|p| p.quantile < 1.0)
            .map(|p| {
                (
                    x_of_quantile(p.quantile),
                    (p.latency_us as f64 / 1000.0).max(FLOOR_MS).log10(),
                )
            })
            .collect()
    };
    let lines: Vec<Vec<(f64, f64)>> = curves.iter().map(drawn).collect();
    let all = || lines.iter().flatten();
    // x from 0% to the decade past the deepest percentile (at least 99.9%).
    let deepest = all().map(|&(x, _)| x).fold(3.0_f64, f64::max);
    // 0.9999 lands a hair above 4: that still belongs to 99.99%.
    let x_max = (deepest - 1e-9).ceil().min(7.0);
    let (lo, hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| {
        (lo.min(y), hi.max(y))
    });
    let (y_min, mut y_max) = if lo.is_finite() {
        (lo.floor(), hi.ceil())
    } else {
        (0.0, 1.0)
    };
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x.clamp(0.0, x_max) / x_max * plot_w;
    let py = |y: f64| TOP + plot_h - (y - y_min) / (y_max - y_min) * plot_h;

    // The legend goes below the chart, one row per run, so it never
    // hides a line.
    let height = HEIGHT + curves.len() as f64 * LEGEND_ROW + 12.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif">"##
    );
    let _ = writeln!(
        out,
        r##"<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="30" text-anchor="middle" font-size="20" font-weight="bold" fill="#222">{}</text>"##,
        WIDTH / 2.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{}" y="54" text-anchor="middle" font-size="13" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        escape(subtitle)
    );

    // Horizontal grid: decades solid with labels, 2× and 5× dashed (and
    // labelled too when the axis spans few decades).
    let few_decades = y_max - y_min <= 3.0;
    let mut decade = y_min;
    while decade <= y_max {
        for (mult, major) in [(1.0, true), (2.0, false), (5.0, false)] {
            let y = decade + f64::log10(mult);
            if y > y_max + 1e-9 {
                continue;
            }
            let yy = py(y);
            let (stroke, dash) = if major {
                ("#c8c8c8", "")
            } else {
                ("#e6e6e6", r#" stroke-dasharray="4 3""#)
            };
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{stroke}"{dash}/>"##,
                LEFT + plot_w
            );
            if major || few_decades {
                let _ = writeln!(
                    out,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12" fill="{}">{}</text>"##,
                    LEFT - 8.0,
                    yy + 4.0,
                    if major { "#333" } else { "#888" },
                    ms_label(10f64.powf(y))
                );
            }
        }
        decade += 1.0;
    }

    // Vertical grid at 50%, 90%, 99%, … up to the axis's end.
    let mut ticks = vec![(x_of_quantile(0.5), "50%".to_string())];
    for nines in 1..=(x_max as i32) {
        let q = 1.0 - 10f64.powi(-nines);
        ticks.push((f64::from(nines), percent_label(q)));
    }
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#c8c8c8"/>"##,
        TOP + plot_h
    );
    for (x, label) in &ticks {
        let xx = px(*x);
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#c8c8c8"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            out,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="middle" font-size="12" fill="#333">{label}</text>"##,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );

    // Axis titles.
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13" fill="#333">percentile (log scale of 1/(1−p))</text>"##,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 40.0
    );
    let _ = writeln!(
        out,
        r##"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle" font-size="13" fill="#333">latency, ms (log scale)</text>"##,
        TOP + plot_h / 2.0
    );

    // The lines.
    for (i, points) in lines.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.2" stroke-linejoin="round"/>"##,
            path.join(" "),
            COLOURS[i % COLOURS.len()]
        );
    }

    // The legend.
    let legend: Vec<String> = curves
        .iter()
        .map(|c| {
            let l = &c.latency;
            if l.count == 0 {
                return format!("{} (no latency recorded)", c.label);
            }
            let ms = |us: u64| ms_label(us as f64 / 1000.0);
            format!(
                "{} (p50 {}, p99 {}, max {} ms)",
                c.label,
                ms(l.p50),
                ms(l.p99),
                ms(l.max)
            )
        })
        .collect();
    for (i, label) in legend.iter().enumerate() {
        let y = HEIGHT + 8.0 + i as f64 * LEGEND_ROW;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="3"/>"##,
            y - 4.0,
            LEFT + 24.0,
            y - 4.0,
            COLOURS[i % COLOURS.len()]
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{y:.1}" font-size="12.5" fill="#222">{}</text>"##,
            LEFT + 32.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A latency in ms with as many decimals as it needs (0.05, 2, 12.5, 300).
fn ms_label(ms: f64) -> String {
    let text = if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `0.999` as `99.9%`.
fn percent_label(q: f64) -> String {
    let text = format!("{:.6}", q * 100.0);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Text made safe for SVG character data.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(label: &str, points: &[(f64, u64)]) -> Curve {
        let at = |q: f64| {
            points
                .iter()
                .find(|p| p.0 >= q)
                .map_or(0, |&(_, latency_us)| latency_us)
        };
        Curve {
            label: label.to_string(),
            points: points
                .iter()
                .map(|&(quantile, latency_us)| CurvePoint {
                    quantile,
                    latency_us,
                })
                .collect(),
            latency: Latency {
                count: points.len() as u64,
                p50: at(0.5),
                p99: at(0.99),
                max: at(1.0),
                ..Latency::default()
            },
        }
    }

    #[test]
    fn labels_read_naturally() {
        assert_eq!(ms_label(0.05), "0.05");
        assert_eq!(ms_label(2.0), "2");
        assert_eq!(ms_label(12.5), "12.5");
        assert_eq!(ms_label(300.0), "300");
        assert_eq!(percent_label(0.9), "90%");
        assert_eq!(percent_label(0.999), "99.9%");
        assert_eq!(percent_label(0.99999), "99.999%");
        assert_eq!(escape("a <b> & \"c\""), "a &lt;b&gt; &amp; &quot;c&quot;");
    }

    #[test]
    fn draws_one_line_and_one_legend_entry_per_run() {
        let a = curve(
            "a: 10 clients",
            &[
                (0.0, 500),
                (0.5, 1_000),
                (0.99, 5_000),
                (0.9999, 9_000),
                (1.0, 9_500),
            ],
        );
        let b = curve("b: <20> clients", &[(0.0, 800), (0.5, 2_000), (1.0, 3_000)]);
        let svg = svg("Latency by percentile", "two runs", &[a.clone(), b]);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("a: 10 clients (p50 1, p99 5, max 9.5 ms)"));
        assert!(svg.contains("b: &lt;20&gt; clients"));
        // x axis to 99.99% (the deepest row), labelled from 50%.
        for label in [">50%<", ">90%<", ">99%<", ">99.9%<", ">99.99%<"] {
            assert!(svg.contains(label), "{label}");
        }
        assert!(!svg.contains(">99.999%<"));
        // y axis from 0.1 ms to 10 ms.
        assert!(svg.contains(">0.1<") && svg.contains(">10<"));
        // The 100% rows are not drawn: a's line has four points.
        let first_line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(first_line.matches(',').count(), 4);
    }

    #[test]
    fn an_empty_run_still_makes_a_chart() {
        let svg = svg("t", "s", &[curve("none", &[])]);
        assert!(svg.contains("none (no latency recorded)"));
        assert!(svg.ends_with("</svg>\n"));
    }
}
