//! Security headers on every response, as the seed guide's NGINX added them: HSTS (when the
//! server is reached over https), `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`,
//! plus `Referrer-Policy: no-referrer`. A handler that sets one of them itself (e.g. a page with
//! its own policy) keeps its value.
//!
//! The seed guide also sent `X-XSS-Protection: 1; mode=block`; browsers removed that filter and
//! the header can itself open cross-site leaks, so this sends `0` (the current OWASP advice).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::EdgeState;

/// The fixed headers (HSTS is added separately, when it applies).
pub const FIXED: [(HeaderName, &str); 4] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_XSS_PROTECTION, "0"),
];

/// The `Strict-Transport-Security` value, or `None` when HSTS does not apply (plain HTTP
/// public URL with TLS off, or `hsts_max_age_secs = 0`).
pub fn hsts_value(config: &crate::config::Config) -> Option<HeaderValue> {
    let https = config.tls.mode != super::config::TlsMode::Off
        || config.public_url().starts_with("https://");
    if !https || config.tls.hsts_max_age_secs == 0 {
        return None;
    }
    HeaderValue::from_str(&format!(
        "max-age={}; includeSubDomains",
        config.tls.hsts_max_age_secs
    ))
    .ok()
}

/// Middleware: adds the security headers to the response unless already present.
pub async fn add(State(edge): State<Arc<EdgeState>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in FIXED.iter() {
        if !h.contains_key(name) {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
    }
    if let Some(v) = &edge.hsts
        && !h.contains_key(header::STRICT_TRANSPORT_SECURITY)
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
    }
    resp
}
