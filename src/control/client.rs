//! The client side of the control socket, for `anomalyd health` and `anomalyd ctl`: one
//! request per connection over the Unix socket, spoken by hyper's HTTP/1.1 client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::UnixStream;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The request could not be sent or its answer read: the connection broke, or the peer
    /// does not speak HTTP/1.1.
    #[error("{}: {source}", path.display())]
    Http { path: PathBuf, source: hyper::Error },
    /// The method or path given cannot make an HTTP request (a bug of the caller).
    #[error("{}: cannot ask {method} {target}: {source}", path.display())]
    Request {
        path: PathBuf,
        method: String,
        target: String,
        source: hyper::http::Error,
    },
    #[error("no answer on {} within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },
}

/// Sends one request (`method` such as `GET`, `path` such as `/status`) with an empty body to
/// the control socket at `socket` and returns the status code and the body (invalid UTF-8
/// replaced), all within `timeout`.
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
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, "localhost")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| ClientError::Request {
            path: socket.to_owned(),
            method: method.to_owned(),
            target: path.to_owned(),
            source,
        })?;
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
    let http = |source| ClientError::Http {
        path: socket.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection is driven beside the request; it ends when the answer has been read
    // (`Connection: close`) or when the timeout drops this future.
    let answer = async {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (answer, _) = tokio::join!(answer, connection);
    answer.map_err(http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_that_is_not_http_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-http.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"hello, not HTTP\n").await.unwrap();
        });
        let err = request(&path, "GET", "/status", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Http { .. }), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = request(
            &dir.path().join("none.sock"),
            "GET",
            "/status",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot connect to "), "{err}");
    }

    #[tokio::test]
    async fn a_bad_method_is_refused_before_connecting() {
        let err = request(
            Path::new("/nonexistent/x.sock"),
            "GE T",
            "/status",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ClientError::Request { .. }), "{err}");
    }
}
