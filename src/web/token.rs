//! The bearer token (`[web] token_file`): every request must carry `Authorization: Bearer
//! <token>` when one is configured, else it gets 401. The comparison takes the same time
//! wherever the first difference is (`subtle`), and the token is never printed: its `Debug`
//! hides it, and no log line or error holds it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// A secret token.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(hidden)")
    }
}

impl Token {
    pub fn new(token: String) -> Self {
        Self(token.into())
    }

    /// Whether `header` (the `Authorization` value) is `Bearer <this token>`; constant time
    /// in the token's content (the length may show, as it does in any such comparison).
    pub fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let Some(given) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        else {
            return false;
        };
        bool::from(given.trim().as_bytes().ct_eq(self.0.as_bytes()))
    }
}

/// The middleware: passes a request with the token (or every request, without one); answers
/// 401 with `WWW-Authenticate: Bearer` otherwise.
pub async fn require(State(token): State<Option<Token>>, req: Request, next: Next) -> Response {
    match &token {
        Some(t) if !t.admits(req.headers().get(header::AUTHORIZATION)) => {
            tracing::debug!(
                path = req.uri().path(),
                "web: request without the token refused"
            );
            (
                StatusCode::UNAUTHORIZED,
                [
                    (header::WWW_AUTHENTICATE, "Bearer"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                axum::Json(serde_json::json!({
                    "error": "this view needs Authorization: Bearer <token> ([web] token_file)"
                })),
            )
                .into_response()
        }
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = Token::new("0123456789abcdef".into());
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(t.admits(Some(&h("Bearer 0123456789abcdef"))));
        assert!(!t.admits(None));
        assert!(!t.admits(Some(&h("Bearer 0123456789abcdeF"))));
        assert!(!t.admits(Some(&h("Bearer 0123456789abcde"))));
        assert!(!t.admits(Some(&h("Basic 0123456789abcdef"))));
        assert!(!t.admits(Some(&h("0123456789abcdef"))));
        assert_eq!(format!("{t:?}"), "Token(hidden)");
    }
}
