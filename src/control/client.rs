//! The client side of the control socket, for `anomalyd health` and `anomalyd ctl`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no answer on {} within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("{}: not an HTTP answer", path.display())]
    BadAnswer { path: PathBuf },
}

/// Sends one request and returns the status code and body.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    tokio::time::timeout(timeout, exchange(socket, method, path))
        .await
        .map_err(|_| ClientError::Timeout {
            path: socket.to_owned(),
            timeout,
        })?
}

async fn exchange(socket: &Path, method: &str, path: &str) -> Result<(u16, String), ClientError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let io = |source| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.map_err(io)?;
    let text = String::from_utf8_lossy(&answer);
    let bad = || ClientError::BadAnswer {
        path: socket.to_owned(),
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}
