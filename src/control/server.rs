//! Serving the control socket: binding it safely, then one short-lived task per connection.
//!
//! The server knows the daemon only through the [`Control`] trait (the daemon implements it),
//! so this module does not depend on `daemon`, which depends on it.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::http::{self, Request, Response};
use super::status::{ReloadReport, Status};
use crate::supervisor::TaskStatus;

/// What the control socket asks of the daemon.
pub trait Control: Send + Sync + 'static {
    /// Why the daemon cannot do its job right now; empty when it can (`/ready`).
    fn not_ready(&self) -> Vec<String>;
    /// The `/status` document (also rendered as `/metrics`).
    fn status(&self) -> Status;
    /// Reloads every detector's model file (`POST /reload`).
    fn reload(&self) -> impl Future<Output = ReloadReport> + Send;
    /// Refreshes lag and liveness facts from the broker; called every [`LAG_REFRESH`].
    fn refresh_lag(&self) -> impl Future<Output = ()> + Send;
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("control socket {}: another anomalyd answers there", path.display())]
    InUse { path: PathBuf },
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How often the lag shown by `/status` and `/metrics` is refreshed from the broker.
pub const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Binds `path` with mode 0660. A socket file left by a dead process is replaced; one that
/// still answers is left alone (two daemons must not share a socket).
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// Answers requests until `shutdown`. Beats `status` every second so a hung server is seen.
pub async fn serve<D: Control>(
    listener: Arc<UnixListener>,
    daemon: Arc<D>,
    status: Arc<TaskStatus>,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lag_tick = tokio::time::interval(LAG_REFRESH);
    let mut refreshing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => status.heartbeat(),
            _ = lag_tick.tick() => {
                // One refresh at a time: a slow broker must not pile them up.
                if refreshing.as_ref().is_none_or(|h| h.is_finished()) {
                    let daemon = Arc::clone(&daemon);
                    refreshing = Some(tokio::spawn(async move { daemon.refresh_lag().await }));
                }
            }
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    let daemon = Arc::clone(&daemon);
                    tokio::spawn(async move { handle(stream, daemon.as_ref()).await });
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            },
        }
    }
}

async fn handle<D: Control>(mut stream: UnixStream, daemon: &D) {
    let req = match tokio::time::timeout(Duration::from_secs(5), http::read_request(&mut stream))
        .await
    {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            let _ = http::write_response(&mut stream, &Response::text(400, format!("{e}\n"))).await;
            return;
        }
        Err(_) => return,
    };
    let resp = route(&req, daemon).await;
    tracing::debug!(
        method = req.method,
        path = req.path,
        status = resp.status,
        "control request"
    );
    if let Err(e) = http::write_response(&mut stream, &resp).await {
        tracing::debug!(error = %e, "control socket write failed");
    }
}

async fn route<D: Control>(req: &Request, daemon: &D) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/live") => Response::text(200, "live\n"),
        ("GET", "/ready") => {
            let reasons = daemon.not_ready();
            if reasons.is_empty() {
                Response::text(200, "ready\n")
            } else {
                Response::text(503, format!("not ready: {}\n", reasons.join("; ")))
            }
        }
        ("GET", "/status") => Response::json(200, &daemon.status()),
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: super::prometheus::render(&daemon.status()),
        },
        ("POST", "/reload") => {
            let report = daemon.reload().await;
            let ok = report.all_ok();
            Response::json(
                if ok { 200 } else { 422 },
                &serde_json::json!({"reloaded": ok, "detectors": report.detectors}),
            )
        }
        (_, "/live" | "/ready" | "/status" | "/metrics" | "/reload") => {
            Response::text(405, "method not allowed\n")
        }
        _ => Response::text(
            404,
            "not found: try /live, /ready, /status, /metrics, POST /reload\n",
        ),
    }
}
