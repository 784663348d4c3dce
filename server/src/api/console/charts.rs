//! Charts as inline SVG, drawn on the server (no chart library, no script): presentation
//! attributes only, so the strict Content-Security-Policy holds.

use std::fmt::Write;

/// Escapes text for HTML and SVG content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const BAR_HEIGHT: u64 = 22;
const LABEL_WIDTH: u64 = 150;
const BAR_WIDTH: u64 = 300;

/// A horizontal bar chart of `(label, count)`, titled `title` for assistive technology.
pub fn bars(title: &str, rows: &[(String, u64)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let height = (rows.len() as u64).max(1) * BAR_HEIGHT + 4;
    let width = LABEL_WIDTH + BAR_WIDTH + 70;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {width} {height}\" \
         aria-label=\"{t}\"><title>{t}</title>",
        t = escape(title)
    );
    if rows.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"4\" y=\"16\" class=\"muted\">nothing yet</text>"
        );
    }
    for (i, (label, n)) in rows.iter().enumerate() {
        let y = i as u64 * BAR_HEIGHT + 2;
        let w = (n.saturating_mul(BAR_WIDTH) / max).max(u64::from(*n > 0));
        let _ = write!(
            svg,
            "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{l}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{w}\" height=\"{bh}\" class=\"bar\"/>\
             <text x=\"{nx}\" y=\"{ty}\">{n}</text>",
            lx = LABEL_WIDTH - 6,
            ty = y + 14,
            l = escape(label),
            bh = BAR_HEIGHT - 6,
            nx = LABEL_WIDTH + w + 6,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One line of a [`lines`] chart: its name, its CSS class and its points `(time, value)`,
/// in time order.
pub struct Series {
    /// Legend text.
    pub name: &'static str,
    /// Class giving its colour in the stylesheet.
    pub class: &'static str,
    /// Points.
    pub points: Vec<(u64, u64)>,
}

const PLOT_W: u64 = 480;
const PLOT_H: u64 = 160;

/// Cumulative counts over time as step lines, with a legend.
pub fn lines(title: &str, series: &[Series]) -> String {
    let t0 = series
        .iter()
        .flat_map(|s| s.points.first())
        .map(|p| p.0)
        .min()
        .unwrap_or(0);
    let t1 = series
        .iter()
        .flat_map(|s| s.points.last())
        .map(|p| p.0)
        .max()
        .unwrap_or(0)
        .max(t0.saturating_add(1));
    let vmax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |t: u64| 40 + t.saturating_sub(t0).saturating_mul(PLOT_W) / (t1 - t0);
    let y = |v: u64| 10 + PLOT_H - v.saturating_mul(PLOT_H) / vmax;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {w} {h}\" aria-label=\"{t}\">\
         <title>{t}</title>\
         <line x1=\"40\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" class=\"axis\"/>\
         <line x1=\"40\" y1=\"10\" x2=\"40\" y2=\"{b}\" class=\"axis\"/>\
         <text x=\"34\" y=\"16\" text-anchor=\"end\">{vmax}</text>\
         <text x=\"34\" y=\"{b}\" text-anchor=\"end\">0</text>",
        w = PLOT_W + 60,
        h = PLOT_H + 60,
        t = escape(title),
        b = 10 + PLOT_H,
        r = 40 + PLOT_W,
    );
    for (i, s) in series.iter().enumerate() {
        let mut d = String::new();
        let mut last = 0;
        let _ = write!(d, "M{} {}", x(t0), y(0));
        for &(t, v) in &s.points {
            let _ = write!(d, " H{} V{}", x(t), y(v));
            last = v;
        }
        let _ = write!(d, " H{}", x(t1));
        let _ = write!(
            svg,
            "<path d=\"{d}\" class=\"line {c}\" fill=\"none\"/>\
             <rect x=\"{lx}\" y=\"{ly}\" width=\"10\" height=\"10\" class=\"key {c}\"/>\
             <text x=\"{tx}\" y=\"{ty}\">{n} ({last})</text>",
            c = s.class,
            lx = 40 + i as u64 * 160,
            ly = PLOT_H + 30,
            tx = 54 + i as u64 * 160,
            ty = PLOT_H + 39,
            n = escape(s.name),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let svg = bars("t", &[("<script>".to_owned(), 3)]);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
    }

    #[test]
    fn lines_end_at_their_last_value() {
        let svg = lines(
            "t",
            &[Series {
                name: "confirmed",
                class: "ok",
                points: vec![(10, 1), (20, 2)],
            }],
        );
        assert!(svg.contains("confirmed (2)"));
    }
}
