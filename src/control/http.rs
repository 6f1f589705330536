//! Just enough HTTP/1.1 for a control socket: read one request head, answer, close.
//!
//! A full HTTP stack would be most of this binary's dependencies for five endpoints; requests
//! here are tiny, local and one per connection (`Connection: close`).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted; anything bigger is not one of ours.
const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: &impl serde::Serialize) -> Self {
        let mut body = serde_json::to_string_pretty(body).expect("status documents serialise");
        body.push('\n');
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Reads a request head. `Ok(None)` when the peer closed without sending one.
pub async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "incomplete request",
                ))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not HTTP/1.x"));
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
    }))
}

pub async fn write_response(
    stream: &mut (impl AsyncWrite + Unpin),
    r: &Response,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(r.body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_curl_style_requests() {
        let raw = b"GET /ready?x=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";
        let req = read_request(&mut &raw[..]).await.unwrap().unwrap();
        assert_eq!(
            req,
            Request {
                method: "GET".into(),
                path: "/ready".into()
            }
        );
    }

    #[tokio::test]
    async fn rejects_garbage_and_accepts_silence() {
        assert!(read_request(&mut &b"hello\r\n\r\n"[..]).await.is_err());
        assert!(
            read_request(&mut &b"GET / SPDY/3\r\n\r\n"[..])
                .await
                .is_err()
        );
        assert!(read_request(&mut &b"GET / HTTP/1.1\r\n"[..]).await.is_err());
        assert_eq!(read_request(&mut &b""[..]).await.unwrap(), None);
        let huge = vec![b'a'; MAX_HEAD * 2];
        assert!(read_request(&mut &huge[..]).await.is_err());
    }

    #[tokio::test]
    async fn writes_a_complete_response() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(503, "not ready\n"))
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(text.contains("Content-Length: 10\r\n"));
        assert!(text.ends_with("\r\n\r\nnot ready\n"));
    }
}
