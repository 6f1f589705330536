//! A local HTTP server that answers as Slack documents: `chat.postMessage` (`{"ok": true}`,
//! `{"ok": false, "error": ...}`, 429 with `Retry-After`, 5xx) and incoming webhooks (`ok`,
//! 4xx), slow or silent when told to. It records every request with its arrival time.
//!
//! Like Slack, it can refuse a message whose blocks hold more text together than a budget
//! ([`FakeSlack::limit_blocks_text`]): `msg_blocks_too_long` on the Web API, HTTP 400
//! `invalid_blocks` on a webhook.
//!
//! Plain HTTP/1.1 over tokio, one request per connection (`Connection: close`), so that what
//! the notifier sends is exactly what is recorded.

#![allow(dead_code)] // each test uses its own part

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `{"ok": true}` on the Web API, `ok` on a webhook.
    Ok,
    /// HTTP 200 `{"ok": false, "error": ...}`.
    SlackError(&'static str),
    /// HTTP 429 with `Retry-After` in seconds.
    RateLimited(u64),
    /// Any status with a plain body (5xx, or a webhook's 4xx such as `404 no_service`).
    Status(u16, &'static str),
    /// No answer for this long, then the connection is closed.
    Hang(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
    /// The server answered that it accepted the message.
    pub accepted: bool,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    requests: Vec<Request>,
    /// Refuse messages whose blocks' text passes this many characters.
    blocks_text_max: Option<usize>,
}

#[derive(Clone)]
pub struct FakeSlack {
    port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSlack {
    /// Starts the server on a free loopback port; it answers `Ok` unless told otherwise.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let server = Self {
            port,
            inner: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { s.serve(conn).await });
            }
        });
        server
    }

    /// The Web API base URL, as `slack.api_base`.
    pub fn api_base(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    /// An incoming-webhook URL whose path is the secret part, as Slack's are.
    pub fn webhook_url(&self, secret: &str) -> String {
        format!("http://127.0.0.1:{}/services/T000/B000/{secret}", self.port)
    }

    /// The next requests get these answers, in order; then the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// The answer once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = Some(reply);
    }

    /// From now on, refuses (before any scripted reply) every message whose blocks hold more
    /// than `max` characters of text together, as Slack does at about 12,000-13,000.
    pub fn limit_blocks_text(&self, max: usize) {
        self.lock().blocks_text_max = Some(max);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    pub fn accepted(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.accepted).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn serve(&self, mut conn: TcpStream) {
        let Some((path, headers, body)) = read_request(&mut conn).await else {
            return;
        };
        let at = Instant::now();
        let webhook = path.starts_with("/services/");
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reply = {
            let mut inner = self.lock();
            match inner.blocks_text_max {
                Some(max) if blocks_text(&parsed["blocks"]) > max => {
                    if webhook {
                        Reply::Status(400, "invalid_blocks")
                    } else {
                        Reply::SlackError("msg_blocks_too_long")
                    }
                }
                _ => inner
                    .script
                    .pop_front()
                    .or_else(|| inner.default.clone())
                    .unwrap_or(Reply::Ok),
            }
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let index = {
            let mut inner = self.lock();
            inner.requests.push(Request {
                at,
                path: path.clone(),
                authorization: header("authorization"),
                content_type: header("content-type"),
                body: parsed,
                accepted: false,
            });
            inner.requests.len() - 1
        };
        let (status, extra, body) = match reply {
            Reply::Ok if webhook => (200, String::new(), "ok".to_owned()),
            Reply::Ok => (
                200,
                String::new(),
                r#"{"ok":true,"channel":"C0","ts":"1.000001"}"#.to_owned(),
            ),
            Reply::SlackError(e) => (
                200,
                String::new(),
                format!(r#"{{"ok":false,"error":"{e}"}}"#),
            ),
            Reply::RateLimited(secs) => (
                429,
                format!("Retry-After: {secs}\r\n"),
                r#"{"ok":false,"error":"ratelimited"}"#.to_owned(),
            ),
            Reply::Status(code, text) => (code, String::new(), text.to_owned()),
            Reply::Hang(d) => {
                tokio::time::sleep(d).await;
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            reason(status),
            if body.starts_with('{') {
                "application/json; charset=utf-8"
            } else {
                "text/plain"
            },
            body.len(),
        );
        let written = conn.write_all(response.as_bytes()).await.is_ok();
        let _ = conn.shutdown().await;
        let accepted = written && status == 200 && (webhook || body.contains(r#""ok":true"#));
        self.lock().requests[index].accepted = accepted;
    }
}

/// The characters of every `text` string in `blocks`, however deep.
pub fn blocks_text(blocks: &Value) -> usize {
    match blocks {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if k == "text" => s.chars().count(),
                other => blocks_text(other),
            })
            .sum(),
        Value::Array(items) => items.iter().map(blocks_text).sum(),
        _ => 0,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// Reads one request: its path, headers and body (by `Content-Length`).
async fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((path, headers, body))
}
