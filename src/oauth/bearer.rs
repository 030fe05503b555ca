//! The token check at the start of every MCP handler.
//!
//! Only the `Authorization: Bearer` header is read (never the query string). A token is
//! accepted at an endpoint only if it was issued for it (its audience, RFC 8707, the resource
//! the token request named, else the one `/authorize` granted: `/mcp` for Streamable HTTP,
//! `/sse` for the legacy transport and its `/messages`, or the scope's base URL, which is
//! what a client that names no resource gets and means both), is unexpired and
//! unrevoked, and the person who approved it is still configured and may still grant the
//! scope. A record viewer's sign-in is another audience. Everything else is a 401 whose
//! `WWW-Authenticate` points at the endpoint's RFC 9728 metadata, so a client can discover how
//! to get a token; a malformed `Authorization` header is a 400 `invalid_request`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::OAUTH_SCOPE;
use crate::mcp::dispatch::Caller;
use crate::mcp::session::Session;
use crate::state::{AppState, Scope};

/// Which MCP endpoint of a scope a request came to (each has its own resource metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Streamable HTTP, `{scope}/mcp`.
    Mcp,
    /// Legacy HTTP+SSE, `{scope}/sse` and `{scope}/messages`.
    Sse,
    /// `{scope}/records/…` (the records `fetch` cites) for programs: any MCP token of the
    /// scope, since a client reads them with whichever transport it uses. Its 401 points at
    /// `/mcp`'s metadata.
    Records,
}

impl Endpoint {
    fn suffix(self) -> &'static str {
        match self {
            Endpoint::Mcp | Endpoint::Records => "/mcp",
            Endpoint::Sse => "/sse",
        }
    }

    /// Whether a grant for `resource` may be used here.
    fn admits(self, resource: &str, scope: &Scope) -> bool {
        match (self, audience_path(resource, scope)) {
            // The scope's base URL: both transports.
            (_, Some("")) => true,
            (Endpoint::Mcp, Some(p)) => p == "/mcp",
            (Endpoint::Sse, Some(p)) => p == "/sse",
            (Endpoint::Records, Some(p)) => p == "/mcp" || p == "/sse",
            (_, None) => false,
        }
    }

    /// The RFC 8707 resource identifier: the endpoint's exact URL.
    pub fn resource(self, scope: &Scope) -> String {
        format!("{}{}", scope.public_base, self.suffix())
    }

    /// Where its RFC 9728 metadata lives.
    pub fn metadata_url(self, app: &AppState, scope: &Scope) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource{}{}",
            app.public_url(),
            scope.path,
            self.suffix()
        )
    }
}

/// [`authenticate_at`] for a caller whose address does not matter (`0.0.0.0` in records).
#[allow(clippy::result_large_err)]
pub fn authenticate(
    app: &AppState,
    scope: &Scope,
    endpoint: Endpoint,
    headers: &HeaderMap,
) -> Result<Caller, Response> {
    let unknown = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    authenticate_at(app, scope, endpoint, headers, unknown)
}

/// Who is calling (from `ip`, the client IP the edge decided), or the 401/400 response to
/// send instead. With authentication off (`demo`, `insecure_no_auth`) everyone is an anonymous
/// caller.
#[allow(clippy::result_large_err)]
pub fn authenticate_at(
    app: &AppState,
    scope: &Scope,
    endpoint: Endpoint,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
) -> Result<Caller, Response> {
    if app.no_auth() {
        return Ok(Caller::default().from_ip(ip));
    }
    let challenge =
        |error: Option<(&str, &str)>| unauthorized(&endpoint.metadata_url(app, scope), error);
    let Some(oauth) = app.oauth() else {
        // Authentication is on but the authorization server is missing: fail closed.
        return Err(challenge(Some((
            "invalid_token",
            "no authorization server is running",
        ))));
    };
    // No credentials: a bare challenge. Credentials that cannot be a bearer token (two
    // headers, an empty or oversized token, bytes outside ASCII): 400 invalid_request
    // (RFC 6750 §3.1). Another scheme (Basic, …) is no bearer token at all: a bare challenge.
    let malformed = |what: &str| {
        let mut r = challenge(Some(("invalid_request", what)));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(challenge(None)),
        (Some(_), Some(_)) => return Err(malformed("more than one Authorization header")),
        (Some(v), None) => v,
    };
    let Ok(value) = value.to_str() else {
        return Err(malformed("the Authorization header is not ASCII"));
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(challenge(None));
    }
    let token = token.trim();
    if token.is_empty() || token.len() > 512 {
        return Err(malformed("the bearer token is empty or too long"));
    }
    let now = super::store::now_ms();
    let Some(access) = oauth.store.check_access(&super::hash_token(token), now) else {
        // A token was presented and refused: an OAuth decision worth a record (requests
        // without any token, every client's first probe, are not).
        let mut r = crate::ops::audit::Record::oauth("bearer", &scope.path, "refused");
        r.client_ip = Some(ip);
        r.error = Some("unknown, expired or revoked access token".into());
        app.ops().audit.record(r);
        return Err(challenge(Some((
            "invalid_token",
            "the access token is unknown, expired or revoked",
        ))));
    };
    let grant = &access.grant;
    if grant.scope != scope.path || !endpoint.admits(&access.resource, scope) {
        tracing::warn!(scope = %scope.path, token_scope = %grant.scope, token_resource = %access.resource, client_id = %grant.client_id, "oauth: token presented outside its audience");
        return Err(challenge(Some((
            "invalid_token",
            "the access token was issued for another resource",
        ))));
    }
    if !user_may_use(app, grant, scope) {
        return Err(challenge(Some((
            "invalid_token",
            "the person who approved this token may no longer use this scope, or has a new password",
        ))));
    }
    Ok(Caller {
        user: Some(grant.username.clone()),
        client_id: Some(grant.client_id.clone()),
        ip: Some(ip),
    })
}

/// Whether `resource` (a grant's audience) is one of `scope`'s MCP endpoints (`/mcp`, `/sse`)
/// or its base URL (both), the only resources an OAuth client is granted
/// ([`super::authorize::accepted_resource`]). Anything else (a record viewer's sign-in, or an
/// endpoint under an earlier `public_url`) is another audience.
pub fn is_mcp_resource(resource: &str, scope: &Scope) -> bool {
    // What the records take: any MCP audience of the scope.
    Endpoint::Records.admits(resource, scope)
}

/// The path of `resource` (a grant's audience) under `scope`'s public base (`/mcp`, `/sse`,
/// `/records`), or `None` for a resource outside it (another scope, an earlier `public_url`).
pub fn audience_path<'a>(resource: &'a str, scope: &Scope) -> Option<&'a str> {
    resource.strip_prefix(scope.public_base.as_str())
}

/// Whether the user `grant` was made for is still configured, with the password it was made
/// under, and may use `scope` (checked on every use of a token, so taking a scope away from
/// someone in the config, or changing their password, ends their tokens).
pub fn user_may_use(app: &AppState, grant: &super::store::Grant, scope: &Scope) -> bool {
    let Some(oauth) = app.oauth() else {
        return false;
    };
    let current = oauth.credentials.get(&grant.username);
    current.is_some_and(|c| grant.credential.get() == Some(c))
        && app
            .config()
            .oauth
            .users
            .iter()
            .any(|u| u.username == grant.username && u.may_grant(&scope.path))
}

/// Who a session belongs to: the signed-in user and the client, or nobody (authentication off).
fn session_owner(caller: &Caller) -> Option<String> {
    let user = caller.user.as_deref()?;
    Some(format!(
        "{user}\u{0}{}",
        caller.client_id.as_deref().unwrap_or("")
    ))
}

/// Records who opened a session (MCP sessions are never authentication: each request still
/// carries its token, and the token's user and client must match the session's).
pub fn bind_session(caller: &Caller, session: &Session) {
    if let Some(owner) = session_owner(caller) {
        let _ = session.owner.set(owner);
    }
}

/// Whether `caller` may use `session`; a session of someone else is treated as unknown.
pub fn may_use(caller: &Caller, session: &Session) -> bool {
    match session.owner.get() {
        None => true,
        Some(owner) => session_owner(caller).is_some_and(|c| super::ct_eq(&c, owner)),
    }
}

/// The 401 with `WWW-Authenticate: Bearer resource_metadata="…", scope="…"[, error=…]`.
pub fn unauthorized(metadata_url: &str, error: Option<(&str, &str)>) -> Response {
    let mut challenge =
        format!("Bearer resource_metadata=\"{metadata_url}\", scope=\"{OAUTH_SCOPE}\"");
    let body = match error {
        Some((code, description)) => {
            challenge.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
            serde_json::json!({"error": code, "error_description": description})
        }
        None => serde_json::json!({
            "error": "unauthorized",
            "error_description": "this endpoint needs an OAuth access token (Authorization: Bearer …)",
        }),
    };
    let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_names_the_metadata_and_scope() {
        let r = unauthorized("https://x/.well-known/oauth-protected-resource/c/mcp", None);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let h = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap_or("");
        assert_eq!(
            h,
            "Bearer resource_metadata=\"https://x/.well-known/oauth-protected-resource/c/mcp\", scope=\"mcp\""
        );
        let r = unauthorized("m", Some(("invalid_token", "expired")));
        let h = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap_or("");
        assert!(
            h.ends_with(", error=\"invalid_token\", error_description=\"expired\""),
            "{h}"
        );
    }
}
