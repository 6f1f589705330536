//! Posting alerts: `chat.postMessage` with a bot token, an incoming webhook, or the log.
//!
//! One [`Poster`] serves one channel and keeps Slack's pace: at most one message per
//! `min_interval` (Slack allows about one a second per channel). A 429 waits its `Retry-After`;
//! 5xx answers, timeouts and connection errors are retried with exponential backoff, for as long
//! as it takes (the offsets of an unsent alert are not committed, so nothing is lost while
//! waiting). Errors that retrying cannot fix (`invalid_auth`, `channel_not_found`,
//! `not_in_channel`, a webhook's 4xx, ...) are returned, so the task fails loudly and its
//! supervisor retries it with backoff. No error or log line ever holds the token or webhook URL.
//!
//! A refusal of one message's *content* ([`CONTENT_ERRORS`]: `msg_blocks_too_long`,
//! `invalid_blocks`, `msg_too_long`, ...) is different: sending the same bytes again cannot
//! succeed, and restarting rebuilds the same message. It is answered by a smaller message, half
//! the anomalies listed within half the budget, then by a text-only one (see [`Form`]). If Slack
//! refuses even that for its content, the alert is given up: logged as an error with its group,
//! counted in `alerts_refused`, and reported as [`Sent::Refused`] so the notifier moves on.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rand::RngExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::time::Instant;

use super::group::Alert;
use super::message;
use super::metrics::SlackMetrics;
use super::secret::{Secret, SecretError, SecretSource, TOKEN_ENV, WEBHOOK_ENV};
use crate::config::{SlackConfig, SlackMode};

/// First delay after a transient failure; doubles with each failure in a row.
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Waited on a 429 that names no `Retry-After`.
const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);
/// A longer `Retry-After` is capped: better to ask again than to go quiet for hours.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);
/// `ok: false` errors that Slack documents as temporary.
const TRANSIENT_ERRORS: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];
/// Errors (a bot's `error`, a webhook's 400 body) that refuse one message for its content, not
/// the sender: the blocks or the text are too long or not valid Block Kit. A webhook's
/// `invalid_payload` is not among them: it means the body could not be read at all (a content
/// type or a proxy), which a smaller message does not fix.
pub const CONTENT_ERRORS: &[&str] = &[
    "msg_blocks_too_long",
    "msg_too_long",
    "too_long",
    "invalid_blocks",
    "invalid_blocks_format",
];
/// How much of an unexpected answer an error quotes.
const BODY_QUOTE_MAX: usize = 200;
/// How much of a topic name or model id an error quotes.
const NAME_QUOTE_MAX: usize = 200;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("Slack refused the alert: {error}{}", hint(error))]
    Refused { error: String },
    #[error("Slack refused the message for its content: {error}")]
    Content { error: String },
    #[error("the Slack webhook refused the alert: HTTP {status}: {body}")]
    WebhookRefused { status: u16, body: String },
    #[error("unexpected answer from Slack: HTTP {status}: {body}")]
    Unexpected { status: u16, body: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("the Slack webhook URL is not an http:// or https:// URL")]
    WebhookUrl,
    #[error("cannot set up the HTTP client: {0}")]
    Http(String),
}

/// What to do about a refusal, for the errors people can fix.
fn hint(error: &str) -> &'static str {
    match error {
        "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
            " (check the bot token in SLACK_API_TOKEN or slack.token_file)"
        }
        "channel_not_found" => " (check slack.channel)",
        "not_in_channel" => " (invite the app to the channel: /invite @your-app)",
        "missing_scope" => " (the app needs the chat:write scope; reinstall it after adding it)",
        "is_archived" => " (the channel is archived)",
        _ => "",
    }
}

/// Where alerts go.
#[derive(Debug)]
pub enum Destination {
    Log,
    Bot {
        api_base: String,
        channel: String,
        token: Secret,
    },
    Webhook {
        url: Secret,
    },
}

impl Destination {
    /// The destination `slack` configures, with its secret read now (so a fixed token file is
    /// picked up on the next restart). `None` when alerts are off.
    pub fn from_config(slack: &SlackConfig) -> Result<Option<Self>, ClientError> {
        Ok(Some(match slack.mode {
            SlackMode::Off => return Ok(None),
            SlackMode::Log => Self::Log,
            SlackMode::Bot => Self::Bot {
                api_base: slack.api_base.trim_end_matches('/').to_owned(),
                channel: slack.channel.clone(),
                token: SecretSource {
                    what: "bot token",
                    key: "slack.token_file",
                    file: slack.token_file.as_deref(),
                    var: TOKEN_ENV,
                }
                .load()?,
            },
            SlackMode::Webhook => {
                let url = SecretSource {
                    what: "webhook URL",
                    key: "slack.webhook_url_file",
                    file: slack.webhook_url_file.as_deref(),
                    var: WEBHOOK_ENV,
                }
                .load()?;
                if !(url.expose().starts_with("https://") || url.expose().starts_with("http://")) {
                    return Err(ClientError::WebhookUrl);
                }
                Self::Webhook { url }
            }
        }))
    }

    /// Where alerts go, for logs: never the secret.
    pub fn describe(&self) -> String {
        match self {
            Self::Log => "the log".into(),
            Self::Bot { channel, .. } => format!("Slack channel {channel}"),
            Self::Webhook { .. } => "a Slack webhook".into(),
        }
    }
}

/// One try's result.
enum Outcome {
    Accepted,
    RateLimited(Duration),
    Transient(String),
    Permanent(ClientError),
}

/// The shapes one alert is tried in, in order, each only after Slack refused the one before
/// for its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Blocks within [`message::BLOCKS_BUDGET`].
    Full,
    /// Blocks listing half as many anomalies, within half the budget.
    Reduced,
    /// The top-level text alone ([`message::text_only`]).
    TextOnly,
}

/// How an alert ended. Either way its anomalies are done with and their offsets may be
/// committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Slack accepted the alert in this form (or, in `log` mode, it was logged).
    Accepted(Form),
    /// Slack refused every form for its content; the alert was logged and counted instead.
    Refused,
}

/// Sends alerts to one destination at Slack's pace, retrying what can be retried.
pub struct Poster<'m> {
    dest: Destination,
    http: reqwest::Client,
    min_interval: Duration,
    timeout: Duration,
    /// When the last request to Slack ended.
    last_post: Mutex<Option<Instant>>,
    metrics: &'m SlackMetrics,
}

impl<'m> Poster<'m> {
    pub fn new(
        dest: Destination,
        slack: &SlackConfig,
        metrics: &'m SlackMetrics,
    ) -> Result<Self, ClientError> {
        // reqwest is built without a TLS crypto provider (the default one needs cmake); ring is
        // installed as the process default. A provider installed earlier is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_secs(slack.request_timeout_s.max(1));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("anomalyd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Http(error_chain(e)))?;
        Ok(Self {
            dest,
            http,
            min_interval: Duration::from_millis(slack.min_interval_ms),
            timeout,
            last_post: Mutex::new(None),
            metrics,
        })
    }

    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// Sends `alert`, waiting and retrying until it is accepted, or fails for good. A refusal
    /// for content is answered with the next [`Form`]; when every form is refused for content,
    /// the alert is logged as an error, counted in `alerts_refused`, and `Ok(Sent::Refused)`
    /// is returned. Other permanent errors are returned.
    pub async fn send(&self, alert: &Alert) -> Result<Sent, ClientError> {
        let m = self.metrics;
        if matches!(self.dest, Destination::Log) {
            let text = message::plain(alert);
            tracing::warn!(target: "anomalyd::alert", detector = %alert.key.detector, topic = %alert.key.topic, model_id = %alert.key.model_id, count = alert.count, "{text}");
            self.accepted(alert, Form::Full);
            return Ok(Sent::Accepted(Form::Full));
        }
        let mut last_body: Option<Value> = None;
        let mut listed = usize::MAX;
        let mut refusals = Vec::new();
        for form in [Form::Full, Form::Reduced, Form::TextOnly] {
            let (body, now_listed) = self.body(alert, form, listed);
            if last_body.as_ref() == Some(&body) {
                // The same bytes would be refused the same way.
                continue;
            }
            listed = now_listed;
            match self.deliver(&body).await {
                Ok(()) => {
                    self.accepted(alert, form);
                    if form != Form::Full {
                        m.alerts_reduced.fetch_add(1, Relaxed);
                    }
                    return Ok(Sent::Accepted(form));
                }
                Err(ClientError::Content { error }) => {
                    tracing::warn!(to = %self.dest.describe(), detector = %alert.key.detector, topic = %alert.key.topic, model_id = %alert.key.model_id, count = alert.count, ?form, error = %error, "Slack refused the message for its content");
                    refusals.push(error);
                }
                Err(e) => return Err(e),
            }
            last_body = Some(body);
        }
        let why = format!(
            "Slack refused every form of the alert of {} anomalies from detector {} on {} (model {}) for its content ({}); it is not sent",
            alert.count,
            message::cut(&alert.key.detector, NAME_QUOTE_MAX),
            message::cut(&alert.key.topic, NAME_QUOTE_MAX),
            message::cut(&alert.key.model_id, NAME_QUOTE_MAX),
            refusals.join(", ")
        );
        tracing::error!(to = %self.dest.describe(), detector = %alert.key.detector, topic = %alert.key.topic, model_id = %alert.key.model_id, count = alert.count, "{why}");
        m.alerts_refused.fetch_add(1, Relaxed);
        m.set_error(why);
        Ok(Sent::Refused)
    }

    fn accepted(&self, alert: &Alert, form: Form) {
        let m = self.metrics;
        m.backoff_ms.store(0, Relaxed);
        m.failing.store(false, Relaxed);
        m.alerts_sent.fetch_add(1, Relaxed);
        m.anomalies_alerted.fetch_add(alert.count, Relaxed);
        tracing::info!(to = %self.dest.describe(), detector = %alert.key.detector, topic = %alert.key.topic, model_id = %alert.key.model_id, count = alert.count, ?form, "alert sent");
    }

    /// Posts `body`, waiting and retrying until it is accepted, or refused for good (for its
    /// content: [`ClientError::Content`]).
    async fn deliver(&self, body: &Value) -> Result<(), ClientError> {
        let m = self.metrics;
        let mut failures_in_a_row = 0u32;
        loop {
            self.pace().await;
            let outcome = self.attempt(body).await;
            *self.last_post.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            let wait = match outcome {
                Outcome::Accepted => return Ok(()),
                Outcome::RateLimited(wait) => {
                    m.rate_limited.fetch_add(1, Relaxed);
                    tracing::warn!(to = %self.dest.describe(), retry_in = ?wait, "Slack is rate limiting: waiting its Retry-After");
                    wait
                }
                Outcome::Transient(why) => {
                    m.failures.fetch_add(1, Relaxed);
                    failures_in_a_row += 1;
                    let wait = backoff(failures_in_a_row);
                    tracing::warn!(to = %self.dest.describe(), error = %why, retry_in = ?wait, "alert not sent; retrying");
                    m.set_error(why);
                    wait
                }
                Outcome::Permanent(e) => {
                    m.failures.fetch_add(1, Relaxed);
                    m.set_error(e.to_string());
                    return Err(e);
                }
            };
            m.retries.fetch_add(1, Relaxed);
            m.backoff_ms.store(wait.as_millis() as u64, Relaxed);
            tokio::time::sleep(wait).await;
            m.backoff_ms.store(0, Relaxed);
        }
    }

    /// The JSON body of `alert` in `form` for Slack, and how many anomalies it lists;
    /// `listed_before` is what the previous form listed. Not for `log` mode.
    fn body(&self, alert: &Alert, form: Form, listed_before: usize) -> (Value, usize) {
        let (text, blocks, listed) = match form {
            Form::Full | Form::Reduced => {
                let limits = match form {
                    Form::Full => message::Limits::default(),
                    _ => message::Limits {
                        budget: message::BLOCKS_BUDGET / 2,
                        max_listed: listed_before / 2,
                    },
                };
                let msg = message::build_within(alert, limits);
                (msg.text, Some(msg.blocks), msg.listed)
            }
            Form::TextOnly => (message::text_only(alert), None, 0),
        };
        let mut body = match &self.dest {
            Destination::Bot { channel, .. } => json!({
                "channel": channel,
                "text": text,
                "unfurl_links": false,
                "unfurl_media": false,
            }),
            _ => json!({"text": text}),
        };
        if let Some(blocks) = blocks {
            body["blocks"] = Value::Array(blocks);
        }
        (body, listed)
    }

    /// Waits until `min_interval` has passed since the last request ended. Counting from its
    /// end rather than its start keeps the spacing even as Slack sees it, whatever the network
    /// delays.
    async fn pace(&self) {
        let last = *self.last_post.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = last {
            tokio::time::sleep_until(last + self.min_interval).await;
        }
    }

    async fn attempt(&self, body: &Value) -> Outcome {
        let request = match &self.dest {
            Destination::Log => return Outcome::Accepted,
            Destination::Bot {
                api_base, token, ..
            } => self
                .http
                .post(format!("{api_base}/chat.postMessage"))
                // bearer_auth marks the header sensitive, so it is never printed either.
                .bearer_auth(token.expose()),
            Destination::Webhook { url } => self.http.post(url.expose()),
        };
        let response = match request.json(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::Transient(format!(
                    "no answer from Slack within {:?}",
                    self.timeout
                ));
            }
            Err(e) => {
                return Outcome::Transient(format!("cannot reach Slack: {}", error_chain(e)));
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) if e.is_timeout() => {
                return Outcome::Transient(format!(
                    "no answer from Slack within {:?}",
                    self.timeout
                ));
            }
            Err(e) => {
                return Outcome::Transient(format!(
                    "Slack's answer was cut off: {}",
                    error_chain(e)
                ));
            }
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Outcome::RateLimited(retry_after.unwrap_or(RETRY_AFTER_DEFAULT));
        }
        if status.is_server_error() {
            return Outcome::Transient(format!("Slack answered HTTP {}", status.as_u16()));
        }
        match &self.dest {
            Destination::Webhook { .. } if status.is_success() => Outcome::Accepted,
            Destination::Webhook { .. } => webhook_refusal(status, &text),
            _ => bot_outcome(status, &text, retry_after),
        }
    }
}

/// `chat.postMessage` answers 200 with `{"ok": true}` or `{"ok": false, "error": "..."}`.
fn bot_outcome(status: StatusCode, text: &str, retry_after: Option<Duration>) -> Outcome {
    let unexpected = || {
        Outcome::Permanent(ClientError::Unexpected {
            status: status.as_u16(),
            body: message::cut(text.trim(), BODY_QUOTE_MAX),
        })
    };
    if !status.is_success() {
        return unexpected();
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return unexpected();
    };
    if v["ok"] == Value::Bool(true) {
        return Outcome::Accepted;
    }
    match v["error"].as_str() {
        Some("ratelimited") => Outcome::RateLimited(retry_after.unwrap_or(RETRY_AFTER_DEFAULT)),
        Some(e) if TRANSIENT_ERRORS.contains(&e) => {
            Outcome::Transient(format!("Slack answered {e}"))
        }
        Some(e) if CONTENT_ERRORS.contains(&e) => Outcome::Permanent(ClientError::Content {
            error: e.to_owned(),
        }),
        Some(e) => Outcome::Permanent(ClientError::Refused {
            error: message::cut(e, BODY_QUOTE_MAX),
        }),
        None => unexpected(),
    }
}

/// A webhook's answer other than 2xx, 429 and 5xx: a content refusal when it is a 400 naming
/// one of [`CONTENT_ERRORS`] (as plain text, Slack's way, or as `{"error": ...}`).
fn webhook_refusal(status: StatusCode, text: &str) -> Outcome {
    let body = text.trim();
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    if status == StatusCode::BAD_REQUEST && CONTENT_ERRORS.contains(&error.as_str()) {
        return Outcome::Permanent(ClientError::Content { error });
    }
    Outcome::Permanent(ClientError::WebhookRefused {
        status: status.as_u16(),
        body: message::cut(body, BODY_QUOTE_MAX),
    })
}

/// `Retry-After` in seconds (Slack sends seconds, never a date).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}

/// Exponential from 500 ms to 60 s, with up to 25 % jitter.
fn backoff(failures_in_a_row: u32) -> Duration {
    let exp = failures_in_a_row.saturating_sub(1).min(16);
    let base = BACKOFF_INITIAL.saturating_mul(1 << exp).min(BACKOFF_MAX);
    base.mul_f64(1.0 - rand::rng().random_range(0.0..=0.25))
}

/// The error and its causes, without the URL (a webhook URL is a secret).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_answers_are_classified() {
        let ok = StatusCode::OK;
        assert!(matches!(
            bot_outcome(ok, r#"{"ok": true, "ts": "1"}"#, None),
            Outcome::Accepted
        ));
        for e in ["invalid_auth", "channel_not_found", "not_in_channel"] {
            let Outcome::Permanent(err) =
                bot_outcome(ok, &format!(r#"{{"ok":false,"error":"{e}"}}"#), None)
            else {
                panic!("{e} is permanent");
            };
            assert!(
                err.to_string()
                    .starts_with(&format!("Slack refused the alert: {e} (")),
                "{err}"
            );
        }
        assert!(matches!(
            bot_outcome(ok, r#"{"ok":false,"error":"internal_error"}"#, None),
            Outcome::Transient(_)
        ));
        assert!(matches!(
            bot_outcome(ok, r#"{"ok":false,"error":"ratelimited"}"#, Some(Duration::from_secs(7))),
            Outcome::RateLimited(d) if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            bot_outcome(StatusCode::NOT_FOUND, "<html>", None),
            Outcome::Permanent(ClientError::Unexpected { status: 404, .. })
        ));
    }

    #[test]
    fn refusals_for_content_are_told_apart() {
        let ok = StatusCode::OK;
        for e in ["msg_blocks_too_long", "invalid_blocks", "msg_too_long"] {
            let Outcome::Permanent(ClientError::Content { error }) =
                bot_outcome(ok, &format!(r#"{{"ok":false,"error":"{e}"}}"#), None)
            else {
                panic!("{e} refuses the content");
            };
            assert_eq!(error, e);
        }
        let bad = StatusCode::BAD_REQUEST;
        for body in [
            "invalid_blocks",
            "too_long\n",
            r#"{"error":"invalid_blocks_format"}"#,
        ] {
            assert!(
                matches!(
                    webhook_refusal(bad, body),
                    Outcome::Permanent(ClientError::Content { .. })
                ),
                "{body}"
            );
        }
        // Not the content's fault: a smaller message would not help.
        for (status, body) in [
            (bad, "invalid_payload"),
            (StatusCode::NOT_FOUND, "no_service"),
            (StatusCode::FORBIDDEN, "invalid_blocks"),
        ] {
            assert!(
                matches!(
                    webhook_refusal(status, body),
                    Outcome::Permanent(ClientError::WebhookRefused { .. })
                ),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "30".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert(reqwest::header::RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_MAX));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= BACKOFF_INITIAL && backoff(1) >= BACKOFF_INITIAL.mul_f64(0.75));
        assert!(backoff(3) >= Duration::from_millis(1500));
        assert!(backoff(30) <= BACKOFF_MAX && backoff(30) >= BACKOFF_MAX.mul_f64(0.75));
    }

    #[test]
    fn destinations_never_show_their_secret() {
        let d = Destination::Webhook {
            url: Secret::new("https://hooks.slack.com/services/T0/B0/SECRETXYZ"),
        };
        assert!(!format!("{d:?}").contains("SECRETXYZ"));
        assert!(!d.describe().contains("SECRETXYZ"));
        let d = Destination::Bot {
            api_base: "https://slack.com/api".into(),
            channel: "#a".into(),
            token: Secret::new("xoxb-SECRETXYZ"),
        };
        assert!(!format!("{d:?}").contains("SECRETXYZ"));
    }

    #[test]
    fn a_webhook_url_must_be_http() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hook");
        std::fs::write(&file, "hooks.slack.com/services/x").unwrap();
        let slack = SlackConfig {
            mode: SlackMode::Webhook,
            webhook_url_file: Some(file),
            ..SlackConfig::default()
        };
        let e = Destination::from_config(&slack).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the Slack webhook URL is not an http:// or https:// URL"
        );
    }
}
