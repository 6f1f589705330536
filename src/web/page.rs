//! The HTML pages, rendered on the server so that they work with JavaScript off (the table,
//! its filter form and the charts); a small script ([`LIVE_JS`]) only refreshes the live part
//! every `[web] refresh_s` seconds (a `<meta http-equiv=refresh>` does it without scripts).
//!
//! - `/`: the daemon's totals, anomalies per minute per detector over the last hour or day,
//!   and the latest anomalies, filterable by detector, key and time range (a GET form).
//! - `/anomaly/{topic}/{partition}/{offset}`: one anomaly: record, score, decision, model or
//!   rules, explanation.
//! - `/series?detector=&key=&field=`: one numeric field of one key over time, anomalies marked.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::api::{self, Failure, Pairs};
use super::data::{self, View};
use super::params::{self, MAX_LIMIT};
use super::svg::{self, Line, Mark};
use crate::sinks::store::StoredRow;
use crate::sinks::store::row::format_ms;

/// The stylesheet, embedded.
pub const STYLE_CSS: &str = include_str!("assets/style.css");
/// The refresh script, embedded.
pub const LIVE_JS: &str = include_str!("assets/live.js");

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
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

/// A query string from `pairs`, empty values left out.
fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

fn layout(title: &str, refresh_s: u32, form: &str, live: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · anomalyd</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
         <script src=\"/assets/live.js\" defer></script>\
         <noscript><meta http-equiv=\"refresh\" content=\"{refresh_s}\"></noscript></head>\
         <body data-refresh=\"{refresh_s}\"><header><h1><a href=\"/\">anomalyd</a></h1>\
         <nav><a href=\"/\">Anomalies</a> <a href=\"/series\">Series</a> \
         <a href=\"/api/overview\">API</a></nav></header>\
         <main>{form}<div id=\"live\">{live}</div></main></body></html>\n",
        title = esc(title)
    )
}

/// An error as a page, with its status.
fn failure_page(f: Failure) -> Response {
    let body = layout(
        "Error",
        3600,
        "",
        &format!(
            "<p class=\"error\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p>",
            esc(&f.reason)
        ),
    );
    (f.status, Html(body)).into_response()
}

fn select(name: &str, options: &[String], chosen: Option<&str>, all: &str) -> String {
    let mut s = format!("<select name=\"{name}\" id=\"{name}\"><option value=\"\">{all}</option>");
    for o in options {
        let sel = if Some(o.as_str()) == chosen {
            " selected"
        } else {
            ""
        };
        let _ = write!(s, "<option{sel}>{}</option>", esc(o));
    }
    s.push_str("</select>");
    s
}

fn input(name: &str, label: &str, value: Option<&str>, hint: &str) -> String {
    format!(
        "<label>{label} <input name=\"{name}\" id=\"{name}\" value=\"{}\" placeholder=\"{}\"></label>",
        esc(value.unwrap_or("")),
        esc(hint)
    )
}

fn why(r: &StoredRow) -> String {
    if r.rules.is_empty() {
        format!("{} {}", r.model_kind, r.model_id)
    } else {
        r.rules.replace(',', ", ")
    }
}

fn detail_href(r: &StoredRow) -> String {
    // Kafka topic names are [a-zA-Z0-9._-]: nothing to encode.
    format!("/anomaly/{}/{}/{}", r.topic, r.partition, r.offset)
}

/// `/`: totals, the overview chart and the latest anomalies.
pub async fn index(State(view): State<Arc<View>>, q: Pairs) -> Response {
    index_page(&view, q).await.unwrap_or_else(failure_page)
}

async fn index_page(view: &Arc<View>, q: Pairs) -> Result<Response, Failure> {
    let p = api::params(q, &["detector", "key", "since", "until", "limit", "window"])?;
    let (window, length) = params::window(&p)?;
    let filter = api::anomaly_filter(view, &p).await?;
    let known = view.detectors().await?;
    let now = p.now_ms();
    let start = (now - length).div_euclid(60_000) * 60_000;
    let counts = data::counts(view, known.clone(), None, start, None, 60_000).await?;
    let limit = filter.limit;
    let table_filter = filter.clone();
    let rows = view.read(move |s| s.select(&table_filter)).await?;

    let form = format!(
        "<form method=\"get\" action=\"/\" id=\"filter\" class=\"filter\">{}{}{}{}{}\
         <input type=\"hidden\" name=\"window\" value=\"{window}\"><button>Filter</button> \
         <a href=\"/\">Clear</a></form>",
        format_args!(
            "<label>Detector {}</label>",
            select("detector", &known, p.get("detector"), "all")
        ),
        input("key", "Key", p.get("key"), "any"),
        input(
            "since",
            "Since",
            p.get("since"),
            "1h, or 2026-03-01T10:00:00Z"
        ),
        input("until", "Until", p.get("until"), "now"),
        input(
            "limit",
            "Rows",
            p.get("limit"),
            &format!("100 (at most {MAX_LIMIT})")
        ),
    );

    let mut live = String::new();
    match view.totals() {
        Some(t) => {
            let _ = write!(
                live,
                "<p class=\"totals\" id=\"totals\" title=\"{}\">Records scored <b>{}</b> · \
                 anomalies <b>{}</b> · dead letters <b>{}</b> <small>since the daemon started</small></p>",
                esc(t.source),
                t.records_scored,
                t.anomalies,
                t.dead_letters
            );
        }
        None => live.push_str(
            "<p class=\"totals\" id=\"totals\">The daemon's counters are shown when the view \
             runs inside it.</p>",
        ),
    }

    // Anomalies per minute per detector, zeros drawn, marks on the minutes with any.
    let minutes = ((now - start) / 60_000 + 1) as usize;
    let lines: Vec<Line> = counts
        .iter()
        .map(|c| {
            let mut path: Vec<(i64, f64)> = (0..minutes)
                .map(|i| (start + i as i64 * 60_000, 0.0))
                .collect();
            for k in &c.counts {
                let i = ((k.start_ms - start) / 60_000) as usize;
                if let Some(slot) = path.get_mut(i) {
                    slot.1 = k.count as f64;
                }
            }
            Line {
                name: c.detector.clone(),
                path,
                marks: c
                    .counts
                    .iter()
                    .map(|k| Mark {
                        t: k.start_ms,
                        v: k.count as f64,
                        anomaly: true,
                        title: format!("{}: {} at {}", c.detector, k.count, k.start),
                        href: Some(format!(
                            "/?{}",
                            query(&[
                                ("detector", &c.detector),
                                ("since", &k.start),
                                ("until", &format_ms(k.start_ms + 60_000)),
                                ("window", window),
                            ])
                        )),
                    })
                    .collect(),
            }
        })
        .collect();
    let total: u64 = counts.iter().map(|c| c.anomalies).sum();
    let other = if window == "1h" { "1d" } else { "1h" };
    let _ = write!(
        live,
        "<section><h2>Anomalies per minute, last {}</h2><p class=\"switch\">\
         <b>{total}</b> anomalies · <a href=\"/?{}\">last {}</a></p>{}<ul class=\"legend\">",
        if window == "1h" { "hour" } else { "day" },
        query(&[("window", other)]),
        if other == "1h" { "hour" } else { "day" },
        svg::chart(
            "overview",
            "anomalies per minute per detector",
            &lines,
            start,
            now
        )
    );
    for (i, c) in counts.iter().enumerate() {
        let _ = write!(
            live,
            "<li class=\"c{}\"><a href=\"/?{}\">{}</a> <b>{}</b></li>",
            i % 6,
            query(&[("detector", &c.detector), ("window", window)]),
            esc(&c.detector),
            c.anomalies
        );
    }
    live.push_str("</ul></section>");

    let _ = write!(
        live,
        "<section><h2>Latest anomalies</h2><p class=\"caption\" id=\"shown\" data-rows=\"{n}\">\
         {n} shown, newest first (at most {limit}); since {}{}.</p>\
         <table id=\"anomalies\"><thead><tr><th>Event time</th><th>Detector</th><th>Key</th>\
         <th>Score</th><th>Decision</th><th>Rules or model</th></tr></thead><tbody>",
        format_ms(filter.since_ms.unwrap_or(0)),
        filter
            .until_ms
            .map(|u| format!(", until {}", format_ms(u)))
            .unwrap_or_default(),
        n = rows.len(),
    );
    for r in &rows {
        let _ = write!(
            live,
            "<tr class=\"anomaly\" data-id=\"{}/{}/{}\"><td><a href=\"{}\">{}</a></td><td>{}</td>\
             <td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
            esc(&r.topic),
            r.partition,
            r.offset,
            esc(&detail_href(r)),
            format_ms(r.event_time_ms),
            esc(&r.detector),
            esc(r.key.as_deref().unwrap_or("")),
            r.score,
            r.decision,
            esc(&why(r))
        );
    }
    live.push_str("</tbody></table></section>");
    Ok(Html(layout("Anomalies", view.refresh_s, &form, &live)).into_response())
}

/// `/anomaly/{topic}/{partition}/{offset}`: one anomaly.
pub async fn anomaly(
    State(view): State<Arc<View>>,
    Path((topic, partition, offset)): Path<(String, String, String)>,
    q: Pairs,
) -> Response {
    anomaly_page(&view, &topic, &partition, &offset, q)
        .await
        .unwrap_or_else(failure_page)
}

async fn anomaly_page(
    view: &Arc<View>,
    topic: &str,
    partition: &str,
    offset: &str,
    q: Pairs,
) -> Result<Response, Failure> {
    api::params(q, &[])?;
    let (topic, partition, offset) = api::place(topic, partition, offset)?;
    let r = view
        .read(move |s| s.row(&topic, partition, offset))
        .await?
        .ok_or_else(|| Failure {
            status: StatusCode::NOT_FOUND,
            reason: "no such anomaly in the store".into(),
        })?;
    let record: Value = serde_json::from_str(&r.record).unwrap_or(Value::Null);
    let explanation = record
        .get("anomalyd")
        .and_then(|a| a.get("explanation"))
        .map(|e| serde_json::to_string_pretty(e).unwrap_or_default())
        .unwrap_or_else(|| "none".into());
    let pretty = serde_json::to_string_pretty(&record).unwrap_or_else(|_| r.record.clone());
    // A link to the series of each numeric field of the source record (at the top of an
    // inline record, under `record` of a wrapped one).
    let source = match record.get("record") {
        Some(inner @ Value::Object(_)) => inner,
        _ => &record,
    };
    let mut series = String::new();
    if let (Some(key), Value::Object(fields)) = (&r.key, source) {
        for (name, value) in fields {
            if name != "anomalyd" && value.is_number() {
                let href = format!(
                    "/series?{}",
                    query(&[("detector", &r.detector), ("key", key), ("field", name)])
                );
                let _ = write!(series, " <a href=\"{}\">{}</a>", esc(&href), esc(name));
            }
        }
    }
    let series = if series.is_empty() {
        String::new()
    } else {
        format!("<p id=\"fields\">This key over time:{series}</p>")
    };
    let mut live = String::new();
    let _ = write!(
        live,
        "<section id=\"detail\"><h2>Anomaly {}/{}/{}</h2><dl>\
         <dt>Event time</dt><dd>{} ({})</dd><dt>Detected at</dt><dd>{}</dd>\
         <dt>Detector</dt><dd>{}</dd><dt>Key</dt><dd>{}</dd>\
         <dt>Score</dt><dd id=\"score\">{}</dd><dt>Decision</dt><dd id=\"decision\">{}</dd>\
         <dt>{}</dt><dd id=\"why\">{}</dd></dl>\
         {}\
         <h3>Explanation</h3><pre id=\"explanation\">{}</pre>\
         <h3>Record</h3><pre id=\"record\">{}</pre></section>",
        esc(&r.topic),
        r.partition,
        r.offset,
        format_ms(r.event_time_ms),
        esc(&r.event_time_source),
        format_ms(r.detected_at_ms),
        esc(&r.detector),
        esc(r.key.as_deref().unwrap_or("(none)")),
        r.score,
        r.decision,
        if r.rules.is_empty() { "Model" } else { "Rules" },
        esc(&why(&r)),
        series,
        esc(&explanation),
        esc(&pretty),
    );
    Ok(Html(layout("Anomaly", 3600, "", &live)).into_response())
}

/// `/series`: the form, and with detector, key and field the chart.
pub async fn series(State(view): State<Arc<View>>, q: Pairs) -> Response {
    series_page(&view, q).await.unwrap_or_else(failure_page)
}

async fn series_page(view: &Arc<View>, q: Pairs) -> Result<Response, Failure> {
    let p = api::params(q, &["detector", "key", "field", "since", "until", "limit"])?;
    let known = view.detectors().await?;
    let form = format!(
        "<form method=\"get\" action=\"/series\" id=\"filter\" class=\"filter\">\
         <label>Detector {}</label>{}{}{}{}<button>Draw</button></form>",
        select("detector", &known, p.get("detector"), "choose"),
        input("key", "Key", p.get("key"), "e.g. s-17"),
        input("field", "Field", p.get("field"), "e.g. temperature"),
        input("since", "Since", p.get("since"), "1h"),
        input("until", "Until", p.get("until"), "now"),
    );
    let mut live = String::new();
    if p.get("detector").is_none() || p.get("key").is_none() || p.get("field").is_none() {
        live.push_str(
            "<p>Choose a detector, a key and a numeric field of its records. The store holds \
             every reading of a detector only when its <code>scored_topic</code> is in \
             <code>[store] topics</code>; otherwise only the anomalies are drawn.</p>",
        );
        return Ok(Html(layout("Series", view.refresh_s, &form, &live)).into_response());
    }
    let s = api::series_query(view, &p).await?;
    let (since, until) = (s.since, s.until.unwrap_or(p.now_ms()));
    let (title, field) = (
        format!("{} {} {}", s.detector, s.key, s.field),
        s.field.clone(),
    );
    let series = data::series(view, s.detector, s.key, s.field, s.since, s.until, s.limit).await?;
    let anomalies = series.points.iter().filter(|p| p.anomaly).count();
    let line = Line {
        name: field.clone(),
        path: series.points.iter().map(|p| (p.time_ms, p.value)).collect(),
        marks: series
            .points
            .iter()
            .map(|p| Mark {
                t: p.time_ms,
                v: p.value,
                anomaly: p.anomaly,
                title: format!("{} = {} at {}", field, p.value, p.time),
                href: p.anomaly.then(|| format!("/anomaly/{}", p.id)),
            })
            .collect(),
    };
    let _ = write!(
        live,
        "<section><h2>{}</h2><p class=\"caption\" id=\"shown\" data-rows=\"{}\">{} points, \
         {anomalies} anomalies (marked){}.</p>{}</section>",
        esc(&title),
        series.points.len(),
        series.points.len(),
        if series.skipped > 0 {
            format!("; {} rows without a number at this field", series.skipped)
        } else {
            String::new()
        },
        svg::chart("series", &title, &[line], since, until)
    );
    Ok(Html(layout("Series", view.refresh_s, &form, &live)).into_response())
}

/// `/assets/style.css`.
pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

/// `/assets/live.js`.
pub async fn live_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        LIVE_JS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_queries_encoded() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(
            query(&[
                ("since", "2026-03-01T10:00:00+01:00"),
                ("key", ""),
                ("d", "a b")
            ]),
            "since=2026-03-01T10%3A00%3A00%2B01%3A00&d=a+b"
        );
    }
}
