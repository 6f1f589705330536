//! Serving the control socket: binding it safely, then HTTP/1.1 on hyper, one task per
//! connection, answered by the axum routes of [`super::router`].
//!
//! The server knows the daemon only through the [`Control`] trait (the daemon implements it),
//! so this module does not depend on `daemon`, which depends on it.
//!
//! Connections are served by hyper's HTTP/1.1 server rather than `axum::serve` for two settings
//! `axum::serve` does not expose: a [`HEAD_TIMEOUT`] for each request head (a client that
//! connects and says nothing, or idles on a kept-alive connection, is let go), and a bounded
//! [`DRAIN`] at shutdown, so that the daemon's stop never waits on a peer.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::router::router;
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

/// How long a connection may take to send a request head, counted from when it is accepted or
/// from its previous answer; past it the connection is closed without an answer.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head read (hyper's smallest allowed buffer); a bigger one is answered
/// 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a stop waits for requests in progress to be answered (a `POST /reload` reading its
/// files, or a request head half sent); connections still open after it are left behind, no
/// longer awaited. Short: the control socket must not slow a stop that has real work to drain.
pub const DRAIN: Duration = Duration::from_secs(1);

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

/// Answers requests until `shutdown`, then stops accepting, closes idle connections, lets
/// requests in progress finish for up to [`DRAIN`] and returns. Beats `status` every second so a
/// hung server is seen, and refreshes the daemon's lag every [`LAG_REFRESH`].
///
/// The listener is shared so that the supervisor can restart this task on the same socket.
pub async fn serve<D: Control>(
    listener: Arc<UnixListener>,
    daemon: Arc<D>,
    status: Arc<TaskStatus>,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let routes = router(Arc::clone(&daemon));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        // Requests here are a line and a few headers: a bigger head is not one of ours (431).
        .max_buf_size(MAX_HEAD);
    let connections = GracefulShutdown::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut lag_tick = tokio::time::interval(LAG_REFRESH);
    let mut refreshing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
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
                    let service = TowerToHyperService::new(routes.clone());
                    let conn = connections.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "control connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    // Out of file descriptors, say: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    if tokio::time::timeout(DRAIN, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain = ?DRAIN,
            "control socket: requests still in progress at stop, no longer awaited"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::control::client;
    use crate::control::router::tests::Fake;

    struct Running {
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), ControlError>>,
        daemon: Arc<Fake>,
    }

    async fn start(path: &Path, daemon: Fake) -> Running {
        let listener = Arc::new(bind(path).await.unwrap());
        let shutdown = CancellationToken::new();
        let daemon = Arc::new(daemon);
        let task = tokio::spawn(serve(
            listener,
            Arc::clone(&daemon),
            Arc::new(TaskStatus::new("control")),
            shutdown.clone(),
        ));
        Running {
            shutdown,
            task,
            daemon,
        }
    }

    impl Running {
        /// Cancels and returns how long `serve` took to return.
        async fn stop(self) -> Duration {
            let t = Instant::now();
            self.shutdown.cancel();
            tokio::time::timeout(DRAIN * 3, self.task)
                .await
                .expect("serve returns")
                .unwrap()
                .unwrap();
            t.elapsed()
        }
    }

    async fn get(path: &Path, method: &str, target: &str) -> (u16, String) {
        client::request(path, method, target, Duration::from_secs(5))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn binds_0660_refuses_a_live_socket_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(bind(&path).await, Err(ControlError::InUse { .. })));
        assert_eq!(get(&path, "GET", "/live").await, (200, "live\n".into()));
        running.stop().await;

        // The server is gone but its file is left: a stale socket, replaced.
        assert!(path.exists());
        let running = start(&path, Fake::default()).await;
        assert_eq!(get(&path, "GET", "/live").await, (200, "live\n".into()));
        running.stop().await;
    }

    #[tokio::test]
    async fn answers_over_the_socket_and_refreshes_lag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let fake = Fake::default();
        *fake.not_ready.lock().unwrap() = vec!["no partitions assigned yet".into()];
        let running = start(&path, fake).await;
        assert_eq!(
            get(&path, "GET", "/ready").await,
            (503, "not ready: no partitions assigned yet\n".into())
        );
        assert_eq!(get(&path, "GET", "/nope").await.0, 404);
        assert_eq!(get(&path, "POST", "/status").await.0, 405);
        let (code, body) = get(&path, "POST", "/reload").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            running
                .daemon
                .reloads
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(
            running
                .daemon
                .refreshes
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1,
            "the first lag refresh is at once"
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn a_request_head_that_is_not_http_gets_400() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(b"hello there\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        running.stop().await;
    }

    #[tokio::test]
    async fn a_request_head_over_the_limit_gets_431() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        let mut stream = UnixStream::connect(&path).await.unwrap();
        let head = format!(
            "GET /live HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD * 2)
        );
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        running.stop().await;
    }

    #[tokio::test]
    async fn a_kept_alive_connection_does_not_hold_up_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        // curl's way: HTTP/1.1 without `Connection: close`, the connection left open.
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\nlive\n"), "{head}");
        let took = running.stop().await;
        assert!(took < Duration::from_secs(1), "stop took {took:?}");
        assert_eq!(
            stream.read(&mut buf).await.unwrap(),
            0,
            "closed by the stop"
        );
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed_after_the_head_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let t = Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(HEAD_TIMEOUT * 2, stream.read_to_end(&mut answer))
            .await
            .expect("closed by the server")
            .unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= HEAD_TIMEOUT - Duration::from_millis(100),
            "{waited:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        running.stop().await;
    }

    #[tokio::test]
    async fn a_connection_that_has_sent_nothing_is_closed_at_the_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        let mut silent = UnixStream::connect(&path).await.unwrap();
        // Let the server accept it before the stop.
        assert_eq!(get(&path, "GET", "/live").await.0, 200);
        let took = running.stop().await;
        assert!(took < Duration::from_secs(1), "stop took {took:?}");
        let mut buf = [0u8; 64];
        assert_eq!(silent.read(&mut buf).await.unwrap(), 0, "closed, no answer");
    }

    #[tokio::test]
    async fn a_half_sent_request_holds_up_the_stop_no_longer_than_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        let mut half = UnixStream::connect(&path).await.unwrap();
        half.write_all(b"GET /live HTTP/1.1\r\n").await.unwrap();
        assert_eq!(get(&path, "GET", "/live").await.0, 200);
        let took = running.stop().await;
        assert!(took >= DRAIN - Duration::from_millis(100), "{took:?}");
        assert!(took < DRAIN + Duration::from_millis(500), "{took:?}");
    }

    #[tokio::test]
    async fn a_request_head_not_finished_within_the_timeout_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anomalyd.sock");
        let running = start(&path, Fake::default()).await;
        let mut slow = UnixStream::connect(&path).await.unwrap();
        slow.write_all(b"GET /live HTTP/1.1\r\n").await.unwrap();
        let t = Instant::now();
        let mut answer = Vec::new();
        tokio::time::timeout(HEAD_TIMEOUT * 2, slow.read_to_end(&mut answer))
            .await
            .expect("closed by the server")
            .unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= HEAD_TIMEOUT - Duration::from_millis(100),
            "{waited:?}"
        );
        assert!(
            !String::from_utf8_lossy(&answer).contains("200 OK"),
            "no answer to half a request"
        );
        // The server goes on answering others meanwhile and after.
        assert_eq!(get(&path, "GET", "/live").await.0, 200);
        running.stop().await;
    }
}
