//! The score-distribution picture: a histogram of scores with the decision threshold marked,
//! written as SVG (no system fonts or C libraries needed).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// Bars in the histogram.
const BINS: usize = 60;
const SIZE: (u32, u32) = (900, 500);
const NORMAL: RGBColor = RGBColor(70, 110, 180);
const ANOMALY: RGBColor = RGBColor(220, 60, 40);

/// Errors drawing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report {}: {reason}", path.display())]
    Draw { path: PathBuf, reason: String },
    #[error("report {}: no scores to draw", path.display())]
    Empty { path: PathBuf },
}

/// What to draw: `scores` are `score_samples` values (lower = more anomalous).
pub struct Histogram<'a> {
    pub title: &'a str,
    pub scores: &'a [f64],
    /// When present, labelled anomalies are drawn as a separate red series.
    pub labels: Option<&'a [bool]>,
    /// The model's offset: records scoring below it are flagged.
    pub threshold: f64,
}

/// Counts per bin for the scores whose label matches `class` (all when unlabelled).
fn bin_counts(h: &Histogram<'_>, low: f64, width: f64, class: Option<bool>) -> Vec<u64> {
    let mut counts = vec![0u64; BINS];
    for (i, &s) in h.scores.iter().enumerate() {
        if let (Some(class), Some(labels)) = (class, h.labels)
            && labels[i] != class
        {
            continue;
        }
        let bin = (((s - low) / width) as usize).min(BINS - 1);
        counts[bin] += 1;
    }
    counts
}

/// Draws `h` to an SVG file at `path`.
pub fn draw(path: &Path, h: &Histogram<'_>) -> Result<(), ReportError> {
    let fail = |e: &dyn std::fmt::Display| ReportError::Draw {
        path: path.into(),
        reason: e.to_string(),
    };
    if h.scores.is_empty() {
        return Err(ReportError::Empty { path: path.into() });
    }
    let (min, max) = h
        .scores
        .iter()
        .fold((h.threshold, h.threshold), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
    let pad = ((max - min) * 0.02).max(1e-3);
    let (low, high) = (min - pad, max + pad);
    let width = (high - low) / BINS as f64;

    let series: Vec<(&str, RGBColor, Vec<u64>)> = match h.labels {
        Some(_) => vec![
            (
                "labelled normal",
                NORMAL,
                bin_counts(h, low, width, Some(false)),
            ),
            (
                "labelled anomaly",
                ANOMALY,
                bin_counts(h, low, width, Some(true)),
            ),
        ],
        None => vec![("records", NORMAL, bin_counts(h, low, width, None))],
    };
    let top = series
        .iter()
        .flat_map(|(_, _, c)| c.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    // Anomalies are rare, so counts go on a log axis; bars start at 0.5 so a count of 1 shows.
    let mut chart = ChartBuilder::on(&root)
        .caption(h.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(low..high, (0.5..top * 2.0).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("score_samples (lower = more anomalous)")
        .y_desc("records (log scale)")
        .disable_x_mesh()
        .draw()
        .map_err(|e| fail(&e))?;
    for (name, colour, counts) in &series {
        let colour = *colour;
        chart
            .draw_series(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(bin, &count)| {
                        let x0 = low + bin as f64 * width;
                        Rectangle::new(
                            [(x0, 0.5), (x0 + width, count as f64)],
                            colour.mix(0.6).filled(),
                        )
                    }),
            )
            .map_err(|e| fail(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            [(h.threshold, 0.5), (h.threshold, top * 2.0)],
            BLACK.stroke_width(2),
        )))
        .map_err(|e| fail(&e))?
        .label(format!("threshold {:.4}", h.threshold))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_bars_threshold_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.svg");
        let scores: Vec<f64> = (0..500).map(|i| -0.4 - f64::from(i % 50) / 200.0).collect();
        let labels: Vec<bool> = (0..500).map(|i| i % 50 > 45).collect();
        let h = Histogram {
            title: "scores",
            scores: &scores,
            labels: Some(&labels),
            threshold: -0.6,
        };
        draw(&path, &h).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains("threshold -0.6000"));
        assert!(svg.contains("labelled anomaly"));
        assert!(svg.matches("<rect").count() > 20);
    }

    #[test]
    fn refuses_empty_scores() {
        let dir = tempfile::tempdir().unwrap();
        let h = Histogram {
            title: "t",
            scores: &[],
            labels: None,
            threshold: -0.5,
        };
        assert!(matches!(
            draw(&dir.path().join("r.svg"), &h),
            Err(ReportError::Empty { .. })
        ));
    }
}
