//! A line chart as SVG, written here (no plotting library, nothing fetched).

use std::fmt::Write as _;

/// Colours of the series, in turn.
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// A chart of `series` (name, points (x, y)) with `title` and axis labels; y from 0 to the
/// largest value (or 100 when `percent`).
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn plot(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)], percent: bool) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 420.0, 70.0, 200.0, 40.0, 50.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(0.0_f64, f64::max).max(1e-9);
    let y_max = if percent { 100.0 } else { points.map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9) * 1.1 };
    let x = |v: f64| left + v / x_max * pw;
    let y = |v: f64| top + ph - v / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ =
        write!(s, r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#, left + pw / 2.0, esc(title));
    // Grid and ticks: 5 steps on each axis.
    for i in 0..=5 {
        let (xv, yv) = (x_max * f64::from(i) / 5.0, y_max * f64::from(i) / 5.0);
        let _ = write!(
            s,
            r##"<line x1="{l}" x2="{r}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{tx}" y="{ty}" text-anchor="end">{yl}</text>"##,
            l = left,
            r = left + pw,
            yy = y(yv),
            tx = left - 6.0,
            ty = y(yv) + 4.0,
            yl = fmt_tick(yv),
        );
        let _ = write!(
            s,
            r#"<text x="{xx}" y="{ty}" text-anchor="middle">{xl}</text>"#,
            xx = x(xv),
            ty = top + ph + 18.0,
            xl = fmt_tick(xv),
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/><text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>"##,
        left + pw / 2.0,
        h - 12.0,
        esc(x_label),
        top + ph / 2.0,
        esc(y_label),
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#, path.join(" "));
        let ly = top + 14.0 + 18.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{a}" x2="{b}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{c}" y="{t}">{n}</text>"#,
            a = left + pw + 12.0,
            b = left + pw + 32.0,
            c = left + pw + 38.0,
            t = ly + 4.0,
            n = esc(name),
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
