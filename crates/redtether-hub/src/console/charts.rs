//! The device page's small resource charts: an inline SVG line per figure, drawn on the server
//! from `GET /api/devices/{id}/metrics` (no script, nothing for the CSP to allow). A gap in the
//! figures (the device offline, Node-RED stopped) breaks the line rather than bridging it.

use maud::{Markup, html};
use serde_json::Value;

const WIDTH: f64 = 240.0;
const HEIGHT: f64 = 48.0;

/// One chart: the figure's key in a sample, its title, and how to show a value.
struct Chart {
    key: &'static str,
    title: &'static str,
    scale: f64,
    unit: &'static str,
}

const CHARTS: [Chart; 4] = [
    Chart { key: "node_red_cpu_percent", title: "Node-RED CPU", scale: 1.0, unit: "%" },
    Chart { key: "node_red_rss_bytes", title: "Node-RED memory", scale: 1.0 / (1024.0 * 1024.0), unit: " MiB" },
    Chart { key: "event_loop_lag_ms", title: "Event-loop lag", scale: 1.0, unit: " ms" },
    Chart { key: "disk_free_bytes", title: "Free disk", scale: 1.0 / (1024.0 * 1024.0 * 1024.0), unit: " GiB" },
];

/// The SVG paths of a series of `(unix seconds, value)` over `[from, to]`: one `M…L…` run per
/// stretch without gaps, y from 0 (bottom) to the largest value (top). A lone point is a short
/// stroke (drawn as a dot with round caps), so a figure with one point still shows.
pub fn path(points: &[(u64, Option<f64>)], from: u64, to: u64) -> String {
    let max = points.iter().filter_map(|p| p.1).fold(0.0_f64, f64::max);
    let span = to.saturating_sub(from).max(1) as f64;
    let mut d = String::new();
    let mut drawing = false;
    let mut run = 0;
    let close_run = |d: &mut String, run: usize| {
        if run == 1 {
            d.push_str("h0.1 ");
        }
    };
    for &(at, value) in points {
        let Some(v) = value else {
            close_run(&mut d, run);
            (drawing, run) = (false, 0);
            continue;
        };
        run += 1;
        let x = (at.saturating_sub(from) as f64 / span * WIDTH).clamp(0.0, WIDTH);
        let y = if max > 0.0 { HEIGHT - v / max * (HEIGHT - 2.0) - 1.0 } else { HEIGHT - 1.0 };
        d.push_str(&format!("{}{x:.1},{y:.1} ", if drawing { "L" } else { "M" }));
        drawing = true;
    }
    close_run(&mut d, run);
    d.trim_end().to_string()
}

/// The charts of the samples `/api/devices/{id}/metrics` answered, over `[from, to]` — or from
/// the first sample on, when the device has reported for less than that (a chart of a device
/// that came online a minute ago is not a dot at its right edge).
pub fn charts(samples: &[Value], from: u64, to: u64) -> Markup {
    let at = |s: &Value| s["at"].as_str().and_then(super::device::unix);
    let from = samples.iter().filter_map(at).min().map_or(from, |first| first.max(from));
    html! {
        section.charts #resources aria-label="Resources" {
            @if samples.is_empty() {
                p.muted { "No resource figures yet: the device sends them with its status while it is online." }
            } @else {
                @for chart in &CHARTS {
                    @let series: Vec<(u64, Option<f64>)> = samples.iter().filter_map(|s| Some((at(s)?, s[chart.key].as_f64().map(|v| v * chart.scale)))).collect();
                    @let latest = series.iter().rev().find_map(|p| p.1);
                    figure.chart data-figure=(chart.key) {
                        figcaption {
                            (chart.title) ": "
                            strong { @match latest { Some(v) => { (format!("{v:.1}")) (chart.unit) }, None => "—" } }
                        }
                        svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT) role="img" aria-label=(chart.title) {
                            path d=(path(&series, from, to)) fill="none" stroke="currentColor" stroke-width="1.5" stroke-linecap="round" {}
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_scaled_to_the_box_and_gaps_break_the_line() {
        let points = [(0, Some(0.0)), (60, Some(10.0)), (120, None), (180, Some(5.0)), (240, Some(10.0))];
        let d = path(&points, 0, 240);
        assert_eq!(d, "M0.0,47.0 L60.0,1.0 M180.0,24.0 L240.0,1.0");
    }

    #[test]
    fn a_lone_point_is_a_dot_and_a_young_series_spans_the_box() {
        assert_eq!(path(&[(0, Some(1.0)), (60, None), (120, Some(1.0))], 0, 240), "M0.0,1.0 h0.1 M120.0,1.0 h0.1");
        // A device reporting for two minutes of a six-hour window: drawn over those minutes.
        let samples: Vec<Value> = [1_800_000_000u64, 1_800_000_060, 1_800_000_120]
            .iter()
            .map(|t| serde_json::json!({"at": redtether_proto::time::format_unix(*t), "node_red_cpu_percent": 5.0}))
            .collect();
        let html = charts(&samples, 1_800_000_120 - 6 * 3600, 1_800_000_120).into_string();
        assert!(html.contains("M0.0,1.0 L120.0,1.0 L240.0,1.0"), "{html}");
    }

    #[test]
    fn flat_zero_and_empty_series_draw_at_the_bottom_or_nothing() {
        assert_eq!(path(&[(0, Some(0.0)), (10, Some(0.0))], 0, 10), "M0.0,47.0 L240.0,47.0");
        assert_eq!(path(&[], 0, 10), "");
        assert_eq!(path(&[(5, None)], 0, 10), "");
    }

    #[test]
    fn device_sent_values_cannot_break_out_of_the_markup() {
        // Only numbers reach the SVG; a string where a number belongs is not drawn.
        let samples = [serde_json::json!({"at": "2027-01-15T08:00:00Z", "node_red_cpu_percent": "<script>"})];
        let html = charts(&samples, 1_800_000_000 - 60, 1_800_000_000).into_string();
        assert!(!html.contains("<script>"));
        assert!(html.contains("data-figure=\"node_red_cpu_percent\""));
    }
}
