//! Charts drawn on the server as inline SVG: no JavaScript and no chart library, so the
//! page shows them with scripts off and the browser has nothing to fetch. A chart is lines
//! over time (one per detector, or one series) with marks on chosen points; each mark is a
//! `<circle class="point">` (with `anomaly` added for an anomaly), linking to its detail
//! when it has one, and the `<svg>` says how many marks it holds in `data-points`.

use std::fmt::Write;

use super::page::esc;
use crate::sinks::store::row::format_ms;

const W: f64 = 900.0;
const H: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// A marked point.
#[derive(Debug, Clone)]
pub struct Mark {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    pub v: f64,
    pub anomaly: bool,
    /// The tooltip.
    pub title: String,
    /// Where clicking it goes.
    pub href: Option<String>,
}

/// One line: its path and its marks.
#[derive(Debug, Clone, Default)]
pub struct Line {
    pub name: String,
    /// `(time_ms, value)`, oldest first.
    pub path: Vec<(i64, f64)>,
    pub marks: Vec<Mark>,
}

/// The chart of `lines` over `[x0, x1)` (milliseconds since the epoch); `id` is the `<svg>`'s
/// id, `label` its accessible name.
pub fn chart(id: &str, label: &str, lines: &[Line], x0: i64, x1: i64) -> String {
    let x1 = x1.max(x0 + 1);
    let values = lines.iter().flat_map(|l| {
        l.path
            .iter()
            .map(|p| p.1)
            .chain(l.marks.iter().map(|m| m.v))
    });
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    lo = lo.min(0.0).min(hi);
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let x = |t: i64| LEFT + (t - x0) as f64 / (x1 - x0) as f64 * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let marks: usize = lines.iter().map(|l| l.marks.len()).sum();
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id=\"{}\" class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\" \
         data-points=\"{marks}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(id),
        esc(label)
    );
    // Axes, three value ticks, and the times of both ends and the middle.
    let _ = write!(
        s,
        "<g class=\"axis\"><line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\"/>",
        b = H - BOTTOM,
        r = W - RIGHT
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            y(v) + 4.0,
            number(v)
        );
    }
    for (t, anchor) in [(x0, "start"), (x0 + (x1 - x0) / 2, "middle"), (x1, "end")] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            H - 8.0,
            &format_ms(t)[..16].replace('T', " ")
        );
    }
    s.push_str("</g>");
    for (i, line) in lines.iter().enumerate() {
        let _ = write!(
            s,
            "<g class=\"line c{}\" data-name=\"{}\">",
            i % 6,
            esc(&line.name)
        );
        if line.path.len() > 1 {
            s.push_str("<polyline points=\"");
            for (t, v) in &line.path {
                let _ = write!(s, "{:.1},{:.1} ", x(*t), y(*v));
            }
            s.push_str("\"/>");
        }
        for m in &line.marks {
            let class = if m.anomaly { "point anomaly" } else { "point" };
            let circle = format!(
                "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\"><title>{}</title></circle>",
                x(m.t),
                y(m.v),
                if m.anomaly { 4 } else { 2 },
                esc(&m.title)
            );
            match &m.href {
                Some(h) => {
                    let _ = write!(s, "<a href=\"{}\">{circle}</a>", esc(h));
                }
                None => s.push_str(&circle),
            }
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

/// A value for an axis: whole numbers as such, else three significant digits.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_counted_escaped_and_linked() {
        let line = Line {
            name: "a<b".into(),
            path: vec![(0, 0.0), (60_000, 2.0), (120_000, 0.0)],
            marks: vec![Mark {
                t: 60_000,
                v: 2.0,
                anomaly: true,
                title: "2 \"anomalies\"".into(),
                href: Some("/anomaly/t/0/1?x=1&y=2".into()),
            }],
        };
        let svg = chart("c", "counts", &[line], 0, 180_000);
        assert!(svg.contains("data-points=\"1\""), "{svg}");
        assert_eq!(svg.matches("<circle class=\"point anomaly\"").count(), 1);
        assert!(svg.contains("data-name=\"a&lt;b\""), "{svg}");
        assert!(svg.contains("href=\"/anomaly/t/0/1?x=1&amp;y=2\""), "{svg}");
        assert!(svg.contains("<polyline points=\"56.0,212.0 "), "{svg}");
        // Nothing to draw is still a chart.
        let empty = chart("e", "none", &[], 0, 0);
        assert!(empty.contains("data-points=\"0\""));
        assert_eq!(number(2.0), "2");
        assert_eq!(number(0.125), "0.125");
    }
}
