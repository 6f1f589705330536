//! The JSON API under `/api/` (see docs/web.md): the same data as the page. Every answer is
//! JSON with `Cache-Control: no-store`; a bad parameter is 400 with `{"error": reason}`.
//!
//! - `GET /api/detectors`: the detectors that can be asked for.
//! - `GET /api/overview?window=1h|1d`: anomalies per minute per detector, and the daemon's
//!   totals.
//! - `GET /api/anomalies?detector=&key=&since=&until=&limit=`: the latest anomalies, newest
//!   first.
//! - `GET /api/anomalies/{topic}/{partition}/{offset}`: one anomaly with its record.
//! - `GET /api/counts?detector=&key=&since=&until=&by=`: anomalies per interval per detector.
//! - `GET /api/series?detector=&key=&field=&since=&until=&limit=`: one numeric field of one
//!   key over time, anomalies marked.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::data::{self, ApiRow, DataError, View, now_ms};
use super::params::{self, MAX_LIMIT, MAX_POINTS, ParamError, Params};
use crate::sinks::store::query::OpenError;
use crate::sinks::store::row::format_ms;

/// The query string as decoded pairs, or why it could not be.
pub type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// An answer other than 200: its status and reason.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub reason: String,
}

impl From<ParamError> for Failure {
    fn from(e: ParamError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: e.to_string(),
        }
    }
}

impl From<DataError> for Failure {
    fn from(e: DataError) -> Self {
        let status = match e {
            DataError::Open(OpenError::Missing(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(error = %e, "web: reading the store failed");
        }
        Self {
            status,
            reason: e.to_string(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.reason }))).into_response()
    }
}

/// Checks the query string against `allowed`.
pub fn params(pairs: Pairs, allowed: &[&str]) -> Result<Params, Failure> {
    let Query(pairs) = pairs.map_err(|e| Failure {
        status: StatusCode::BAD_REQUEST,
        reason: format!("the query string: {}", e.body_text()),
    })?;
    Ok(Params::new(pairs, allowed, now_ms())?)
}

pub async fn detectors(State(view): State<Arc<View>>) -> Result<Response, Failure> {
    let detectors = view.detectors().await?;
    Ok(Json(json!({ "detectors": detectors })).into_response())
}

/// The overview's data: anomalies per minute per detector over the window, and the totals.
pub async fn overview_data(view: &Arc<View>, p: &Params) -> Result<serde_json::Value, Failure> {
    let (window, length) = params::window(p)?;
    let until = p.now_ms();
    let since = until - length;
    let detectors = view.detectors().await?;
    let counts = data::counts(view, detectors, None, since, None, 60_000).await?;
    Ok(json!({
        "window": window,
        "since": format_ms(since),
        "until": format_ms(until),
        "by": "1m",
        "anomalies": counts.iter().map(|c| c.anomalies).sum::<u64>(),
        "detectors": counts,
        "totals": view.totals(),
    }))
}

pub async fn overview(State(view): State<Arc<View>>, q: Pairs) -> Result<Response, Failure> {
    let p = params(q, &["window"])?;
    Ok(Json(overview_data(&view, &p).await?).into_response())
}

/// The checked filter of `/api/anomalies` and the page's table.
pub async fn anomaly_filter(
    view: &Arc<View>,
    p: &Params,
) -> Result<crate::sinks::store::Filter, Failure> {
    let known = view.detectors().await?;
    let detector = p.detector(&known)?;
    let key = p.text("key")?;
    let (since, until) = p.range(3_600_000)?;
    let limit = p.limit(100, MAX_LIMIT)?;
    Ok(data::anomaly_filter(detector, key, since, until, limit))
}

pub async fn anomalies(State(view): State<Arc<View>>, q: Pairs) -> Result<Response, Failure> {
    let p = params(q, &["detector", "key", "since", "until", "limit"])?;
    let filter = anomaly_filter(&view, &p).await?;
    let limit = filter.limit;
    let rows = view.read(move |s| s.select(&filter)).await?;
    let rows: Vec<ApiRow> = rows.into_iter().map(|r| ApiRow::new(r, false)).collect();
    Ok(Json(json!({ "limit": limit, "anomalies": rows })).into_response())
}

/// `(topic, partition, offset)` of a path, checked.
pub fn place(topic: &str, partition: &str, offset: &str) -> Result<(String, i32, i64), Failure> {
    let bad = |what: &str| Failure {
        status: StatusCode::BAD_REQUEST,
        reason: format!("{what}: expected /api/anomalies/<topic>/<partition>/<offset>"),
    };
    let partition = partition.parse::<i32>().map_err(|_| bad("partition"))?;
    let offset = offset.parse::<i64>().map_err(|_| bad("offset"))?;
    if topic.is_empty() || topic.len() > 249 {
        return Err(bad("topic"));
    }
    Ok((topic.to_owned(), partition, offset))
}

pub async fn anomaly(
    State(view): State<Arc<View>>,
    Path((topic, partition, offset)): Path<(String, String, String)>,
    q: Pairs,
) -> Result<Response, Failure> {
    params(q, &[])?;
    let (topic, partition, offset) = place(&topic, &partition, &offset)?;
    let row = view
        .read(move |s| s.row(&topic, partition, offset))
        .await?
        .ok_or_else(|| Failure {
            status: StatusCode::NOT_FOUND,
            reason: "no such anomaly in the store".into(),
        })?;
    Ok(Json(ApiRow::new(row, true)).into_response())
}

pub async fn counts(State(view): State<Arc<View>>, q: Pairs) -> Result<Response, Failure> {
    let p = params(q, &["detector", "key", "since", "until", "by"])?;
    let known = view.detectors().await?;
    let detectors = match p.detector(&known)? {
        Some(d) => vec![d],
        None => known,
    };
    let key = p.text("key")?;
    let (since, until) = p.range(3_600_000)?;
    let (by, ms) = params::interval(&p, "1m", since, until.unwrap_or(p.now_ms()))?;
    let counts = data::counts(&view, detectors, key, since, until, ms).await?;
    Ok(Json(json!({
        "by": by,
        "since": format_ms(since),
        "until": until.map(format_ms),
        "detectors": counts,
    }))
    .into_response())
}

/// The checked parameters of a series: detector, key, field, since, until, limit.
pub struct SeriesQuery {
    pub detector: String,
    pub key: String,
    pub field: String,
    pub since: i64,
    pub until: Option<i64>,
    pub limit: usize,
}

/// Reads a series' parameters; all of detector, key and field are required.
pub async fn series_query(view: &Arc<View>, p: &Params) -> Result<SeriesQuery, Failure> {
    let known = view.detectors().await?;
    let detector = p.detector(&known)?.ok_or(ParamError::Missing("detector"))?;
    let key = p.required("key")?;
    let field = p.required("field")?;
    let (since, until) = p.range(3_600_000)?;
    let limit = p.limit(MAX_POINTS, MAX_POINTS)?;
    Ok(SeriesQuery {
        detector,
        key,
        field,
        since,
        until,
        limit,
    })
}

pub async fn series(State(view): State<Arc<View>>, q: Pairs) -> Result<Response, Failure> {
    let p = params(q, &["detector", "key", "field", "since", "until", "limit"])?;
    let s = series_query(&view, &p).await?;
    let (detector, key, field) = (s.detector.clone(), s.key.clone(), s.field.clone());
    let series = data::series(&view, s.detector, s.key, s.field, s.since, s.until, s.limit).await?;
    Ok(Json(json!({
        "detector": detector,
        "key": key,
        "field": field,
        "points": series.points,
        "skipped": series.skipped,
    }))
    .into_response())
}
