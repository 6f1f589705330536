//! The web view: a small site and a JSON API served by the daemon on an optional TCP listener
//! (`[web] listen`, off by default), reading the anomaly store.
//!
//! Charts are **server-drawn SVG** ([`svg`]): no JavaScript chart library is vendored, the
//! page and its charts work with scripts off, and the assets (one stylesheet, one small
//! refresh script) are embedded in the binary with `include_str!`. The HTTP stack is axum.
//!
//! Safe by default: loopback unless configured; another address needs `token_file`
//! ([`token`]); every parameter is checked ([`params`]) and reaches SQL only as a bound
//! parameter; answers carry `Cache-Control: no-store` (data) and a strict
//! `Content-Security-Policy`.
//!
//! - [`config`]: `[web]`, what the user writes.
//! - [`token`]: the bearer token and its check.
//! - [`params`]: the query parameters, checked.
//! - [`data`]: the store read on blocking threads, and the API's shapes.
//! - [`api`]: `/api/...`, JSON.
//! - [`page`]: the HTML pages; [`svg`]: their charts.
//!
//! [`run`] is the supervised task's entry point; [`router`] builds the routes (tests serve it
//! on their own listener).

pub mod api;
pub mod config;
pub mod data;
pub mod page;
pub mod params;
pub mod svg;
pub mod token;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

pub use config::WebConfig;
pub use data::View;
pub use token::Token;

#[derive(Debug, Error)]
pub enum WebError {
    #[error("web view {addr}: cannot listen: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("web view: {0}")]
    Serve(std::io::Error),
    #[error("web.token_file: {0}")]
    Token(String),
}

/// What every answer carries: no caching of data (the API, the pages), no sniffing, and a
/// policy that allows only the view's own assets.
async fn headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// Every route of the view over `view`; with `token`, each request needs it.
pub fn router(view: Arc<View>, token: Option<Token>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/anomaly/{topic}/{partition}/{offset}", get(page::anomaly))
        .route("/series", get(page::series))
        .route("/assets/style.css", get(page::style))
        .route("/assets/live.js", get(page::live_js))
        .route("/api/detectors", get(api::detectors))
        .route("/api/overview", get(api::overview))
        .route("/api/anomalies", get(api::anomalies))
        .route(
            "/api/anomalies/{topic}/{partition}/{offset}",
            get(api::anomaly),
        )
        .route("/api/counts", get(api::counts))
        .route("/api/series", get(api::series))
        .with_state(view)
        .layer(axum::middleware::from_fn_with_state(token, token::require))
        .layer(axum::middleware::map_response(headers))
}

/// Binds the view's listener (at start, so that an address in use stops the daemon at once
/// rather than failing in a loop).
pub fn bind(addr: &str) -> Result<std::net::TcpListener, WebError> {
    let bind = |source| WebError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    Ok(listener)
}

/// Serves `router` on (a clone of) `listener` until `shutdown`, then lets the requests in
/// flight finish; `heartbeat` is called about once a second.
pub async fn run(
    listener: &std::net::TcpListener,
    router: Router,
    heartbeat: impl Fn(),
    shutdown: CancellationToken,
) -> Result<(), WebError> {
    let listener = listener
        .try_clone()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(WebError::Serve)?;
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .into_future();
    tokio::pin!(server);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            done = &mut server => return done.map_err(WebError::Serve),
            _ = tick.tick() => heartbeat(),
        }
    }
}

/// The token of `config`, read from its file (checked at load by [`WebConfig::problems`]).
pub fn load_token(config: &WebConfig) -> Result<Option<Token>, WebError> {
    config
        .token_file
        .as_deref()
        .map(|p| {
            config::read_token(p)
                .map(Token::new)
                .map_err(WebError::Token)
        })
        .transpose()
}
