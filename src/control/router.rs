//! The control socket's routes as an axum [`Router`]: `GET /live`, `GET /ready`, `GET /status`,
//! `GET /metrics` and `POST /reload`, answered from a [`Control`].
//!
//! The router knows nothing of the socket it is served on ([`super::server`] binds and serves
//! it), so another listener can serve the same routes or reuse a handler: each handler is public
//! and takes the daemon as axum state (`State<Arc<D>>`). An unknown path is 404 with the list of
//! paths; a known path with another method is 405 with an `Allow` header. `GET` routes answer
//! `HEAD` too (the same status and headers, no body), as axum does.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::server::Control;

/// The `Content-Type` of `/metrics`: Prometheus text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every route of the control socket over `daemon`, with the 404 and 405 answers.
pub fn router<D: Control>(daemon: Arc<D>) -> Router {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready::<D>))
        .route("/status", get(status::<D>))
        .route("/metrics", get(metrics::<D>))
        .route("/reload", post(reload::<D>))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(daemon)
}

/// Every request at debug level: method, path and the status answered.
async fn log_request(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    tracing::debug!(
        method = %method,
        path,
        status = response.status().as_u16(),
        "control request"
    );
    response
}

/// `GET /live`: 200 `live` while the process answers at all.
pub async fn live() -> &'static str {
    "live\n"
}

/// `GET /ready`: 200 `ready`, or 503 `not ready: ` with every reason, `; `-separated.
pub async fn ready<D: Control>(State(daemon): State<Arc<D>>) -> Response {
    let reasons = daemon.not_ready();
    if reasons.is_empty() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
            .into_response()
    }
}

/// `GET /status`: the [`Status`](super::status::Status) document as pretty JSON.
pub async fn status<D: Control>(State(daemon): State<Arc<D>>) -> Response {
    json(StatusCode::OK, &daemon.status())
}

/// `GET /metrics`: the status in the Prometheus text format.
pub async fn metrics<D: Control>(State(daemon): State<Arc<D>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        super::prometheus::render(&daemon.status()),
    )
        .into_response()
}

/// `POST /reload`: reloads every detector's model; 200 when every file was accepted, 422 when
/// any was refused, with `{"reloaded", "detectors"}` either way.
pub async fn reload<D: Control>(State(daemon): State<Arc<D>>) -> Response {
    let report = daemon.reload().await;
    let ok = report.all_ok();
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        },
        &serde_json::json!({"reloaded": ok, "detectors": report.detectors}),
    )
}

async fn method_not_allowed() -> (StatusCode, &'static str) {
    (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: try /live, /ready, /status, /metrics, POST /reload\n",
    )
}

/// `body` as pretty JSON with a final newline (easy to read from `curl`), `application/json`;
/// a document that cannot be serialised is a 500 saying why.
fn json(code: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_string_pretty(body) {
        Ok(mut text) => {
            text.push('\n');
            (code, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise the answer: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::Method;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::control::status::{DetectorReload, ReloadReport, Status};

    /// A daemon stand-in: its readiness reasons and whether a reload is accepted are set by the
    /// test; it counts reloads and lag refreshes.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub not_ready: Mutex<Vec<String>>,
        pub refuse_reload: bool,
        pub reloads: std::sync::atomic::AtomicU64,
        pub refreshes: std::sync::atomic::AtomicU64,
    }

    impl Control for Fake {
        fn not_ready(&self) -> Vec<String> {
            self.not_ready.lock().unwrap().clone()
        }

        fn status(&self) -> Status {
            let not_ready = self.not_ready();
            Status {
                version: env!("CARGO_PKG_VERSION"),
                uptime_s: 7,
                ready: not_ready.is_empty(),
                not_ready,
                degraded: false,
                warnings: Vec::new(),
                tasks: Vec::new(),
                lag: 3,
                detectors: Vec::new(),
                stages: Vec::new(),
                counters: crate::metrics::Metrics::default().snapshot(),
                slack: None,
                store: None,
            }
        }

        async fn reload(&self) -> ReloadReport {
            self.reloads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ReloadReport {
                detectors: vec![DetectorReload {
                    detector: "transactions".into(),
                    path: "models/seed.iforest".into(),
                    model: None,
                    error: self.refuse_reload.then(|| "not a model".into()),
                }],
            }
        }

        async fn refresh_lag(&self) {
            self.refreshes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    struct Answer {
        status: StatusCode,
        content_type: Option<String>,
        allow: Option<String>,
        body: String,
    }

    async fn ask(fake: Fake, method: Method, path: &str) -> (Answer, Arc<Fake>) {
        let fake = Arc::new(fake);
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = router(Arc::clone(&fake)).oneshot(request).await.unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let (status, content_type, allow) = (
            response.status(),
            header(header::CONTENT_TYPE),
            header(header::ALLOW),
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        (
            Answer {
                status,
                content_type,
                allow,
                body,
            },
            fake,
        )
    }

    const TEXT: &str = "text/plain; charset=utf-8";

    #[tokio::test]
    async fn live_and_ready_answer_in_plain_text() {
        let (a, _) = ask(Fake::default(), Method::GET, "/live").await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "live\n"));
        assert_eq!(a.content_type.as_deref(), Some(TEXT));

        let (a, _) = ask(Fake::default(), Method::GET, "/ready?verbose=1").await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ready\n"));

        let fake = Fake::default();
        *fake.not_ready.lock().unwrap() = vec!["broker unreachable".into(), "no group".into()];
        let (a, _) = ask(fake, Method::GET, "/ready").await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.body, "not ready: broker unreachable; no group\n");
        assert_eq!(a.content_type.as_deref(), Some(TEXT));
    }

    #[tokio::test]
    async fn status_is_pretty_json_and_metrics_prometheus_text() {
        let (a, _) = ask(Fake::default(), Method::GET, "/status").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        assert!(a.body.starts_with("{\n  \""), "{}", a.body);
        assert!(a.body.ends_with("}\n"), "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(
            (v["uptime_s"].as_u64(), v["lag"].as_i64()),
            (Some(7), Some(3))
        );

        let (a, _) = ask(Fake::default(), Method::GET, "/metrics").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type.as_deref(), Some(METRICS_CONTENT_TYPE));
        assert!(a.body.contains("anomalyd_ready 1\n"), "{}", a.body);
    }

    #[tokio::test]
    async fn reload_is_post_only_and_says_whether_every_file_was_accepted() {
        let (a, fake) = ask(Fake::default(), Method::POST, "/reload").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type.as_deref(), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["reloaded"], true);
        assert_eq!(v["detectors"][0]["detector"], "transactions");
        assert_eq!(fake.reloads.load(std::sync::atomic::Ordering::Relaxed), 1);

        let refusing = Fake {
            refuse_reload: true,
            ..Fake::default()
        };
        let (a, _) = ask(refusing, Method::POST, "/reload").await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["reloaded"], false);
        assert_eq!(v["detectors"][0]["error"], "not a model");

        let (a, fake) = ask(Fake::default(), Method::GET, "/reload").await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(a.allow.as_deref(), Some("POST"));
        assert_eq!(a.body, "method not allowed\n");
        assert_eq!(
            fake.reloads.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "a GET never reloads"
        );
    }

    #[tokio::test]
    async fn a_wrong_method_is_405_with_allow_and_an_unknown_path_404() {
        for path in ["/live", "/ready", "/status", "/metrics"] {
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let (a, _) = ask(Fake::default(), method.clone(), path).await;
                assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(a.allow.as_deref(), Some("GET,HEAD"), "{method} {path}");
                assert_eq!(a.content_type.as_deref(), Some(TEXT));
            }
        }
        for path in ["/", "/nope", "/status/", "/live/x"] {
            let (a, _) = ask(Fake::default(), Method::GET, path).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                a.body,
                "not found: try /live, /ready, /status, /metrics, POST /reload\n"
            );
            assert_eq!(a.allow, None);
        }
    }

    #[tokio::test]
    async fn head_answers_like_get_without_a_body() {
        let (a, _) = ask(Fake::default(), Method::HEAD, "/live").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "");
    }
}
