//! The one outward error type of the OAuth endpoints: RFC 6749 §5.2 JSON
//! (`{"error": …, "error_description": …}`), never cached. Details that could help an
//! attacker or leak internals are logged, not sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The `Retry-After` of a 503 (the client cap is full of clients holding live grants: room
/// comes back when one's last code or token expires or is revoked).
pub const RETRY_AFTER_SECS: u32 = 60;

/// An OAuth error response.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: StatusCode,
    /// RFC 6749 / 7591 / 8707 error code.
    pub error: &'static str,
    /// Human-readable text for the client's developer.
    pub description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    /// 401: unknown client or wrong secret. Claude registers again when it sees this. Sent
    /// with `WWW-Authenticate: Basic` whatever way the client authenticated: RFC 6749 §5.2
    /// requires it when the client used HTTP Basic, and RFC 9110 §15.5.2 on every 401 (it
    /// names the scheme this endpoint takes in a header, `client_secret_basic`).
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }
    pub fn unsupported_token_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_token_type", d)
    }
    pub fn invalid_target(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", d)
    }
    pub fn invalid_redirect_uri(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_redirect_uri", d)
    }
    pub fn invalid_client_metadata(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_client_metadata", d)
    }
    pub fn too_many_requests(d: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", d)
    }
    /// 503, sent with `Retry-After` ([`RETRY_AFTER_SECS`]).
    pub fn temporarily_unavailable(d: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            d,
        )
    }
    /// 500 with a generic text; `detail` goes to the log only.
    pub fn server_error(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "oauth: internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; see the server log",
        )
    }
}

impl From<super::store::StoreError> for OAuthError {
    fn from(e: super::store::StoreError) -> Self {
        match e {
            super::store::StoreError::TooManyClients => OAuthError::temporarily_unavailable(
                "the server holds as many clients as it may; try again later",
            ),
            super::store::StoreError::ClientGone => {
                OAuthError::invalid_client("the client is no longer registered; register again")
            }
            other => OAuthError::server_error(other),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "error_description": self.description});
        let mut resp = (self.status, axum::Json(body)).into_response();
        no_store(&mut resp);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mssql-mcp\""),
            );
        }
        resp
    }
}

/// Token responses and errors must not be cached (RFC 6749 §5.1).
pub fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
