//! Small line charts as server-rendered SVG: the last hour of a few
//! series, drawn from [`crate::history`] with no script and nothing
//! fetched (the page's CSP allows neither).

use maud::{html, Markup};

use crate::history::{Points, SPAN};

const WIDTH: f64 = 300.0;
const HEIGHT: f64 = 80.0;

/// A chart titled `title` of `series` (label, points) over the hour up to
/// `now`, values in `unit`.
pub(crate) fn chart(title: &str, unit: &str, series: &[(String, Points)], now: f64) -> Markup {
    let top = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, v)| *v))
        .fold(0.0_f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let x = |t: f64| ((t - (now - SPAN)) / SPAN * WIDTH).clamp(0.0, WIDTH);
    let y = |v: f64| HEIGHT - (v / top * HEIGHT).clamp(0.0, HEIGHT);
    let has_data = series.iter().any(|(_, points)| !points.is_empty());
    html! {
        figure.chart data-chart=(title) {
            figcaption {
                (title)
                @for (i, (label, points)) in series.iter().enumerate() {
                    @if let Some((_, last)) = points.last() {
                        " " span class={ "key s" (i % 6) } { @if series.len() > 1 { (label) " " } (format_value(*last)) " " (unit) }
                    }
                }
            }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT) role="img" aria-label=(title) {
                line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
                @for (i, (_, points)) in series.iter().enumerate() {
                    @if !points.is_empty() {
                        polyline class={ "s" (i % 6) } fill="none" points=(points_text(points, &x, &y)) {}
                    }
                }
                text.scale x="2" y="10" { (format_value(top / 1.1)) " " (unit) }
            }
            @if !has_data { p.muted { "no data yet: it is read every few seconds" } }
        }
    }
}

fn points_text(points: &Points, x: &impl Fn(f64) -> f64, y: &impl Fn(f64) -> f64) -> String {
    let mut text = String::new();
    for (t, v) in points {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("{:.1},{:.1}", x(*t), y(*v)));
    }
    // One point alone is drawn as a short flat line, so that it shows.
    if points.len() == 1 {
        let (t, v) = points[0];
        text.push_str(&format!(" {:.1},{:.1}", (x(t) - 3.0).max(0.0), y(v)));
    }
    text
}

/// A value with the digits that matter: `0.42`, `3.1`, `120`.
fn format_value(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_each_series_and_says_its_last_value() {
        let now = 10_000.0;
        let series = vec![(
            "requests".to_string(),
            vec![(now - 3600.0, 0.0), (now, 12.5)],
        )];
        let svg = chart("Requests", "/s", &series, now).into_string();
        assert!(svg.contains(r#"points="0.0,80.0 300.0,7.3""#), "{svg}");
        assert!(svg.contains("12.5 /s"), "{svg}");
        let empty = chart("Errors", "/s", &[("errors".to_string(), Vec::new())], now).into_string();
        assert!(
            empty.contains("no data yet") && !empty.contains("polyline"),
            "{empty}"
        );
    }
}
