//! MCP over HTTP: the Streamable HTTP endpoint `{scope}/mcp` (2025-06-18, 2025-11-25 and
//! 2026-07-28 from one endpoint), the older HTTP+SSE transport at `{scope}/sse`, and the
//! record pages search results link to.
//!
//! Transports turn HTTP into JSON-RPC messages and back; [`dispatch`] and the tools never see
//! HTTP. The request's authority (`Host`, or HTTP/2's `:authority`) and `Origin` are checked
//! here for every MCP route (DNS-rebinding protection).

pub mod dispatch;
pub mod protocol;
pub mod session;
pub mod sse;
pub mod streamable;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::state::{AppState, Scope};
use protocol::RpcError;

/// Handler state: the app and the scope the route belongs to.
#[derive(Clone)]
pub struct ScopeCtx {
    pub app: AppState,
    pub scope: Arc<Scope>,
}

impl ScopeCtx {
    /// The live session `sid` of this scope, if `caller` may use it (sessions are bound to the
    /// user and client that opened them).
    pub fn session_for(
        &self,
        caller: &dispatch::Caller,
        sid: &str,
    ) -> Option<Arc<session::Session>> {
        self.app
            .sessions()
            .get(&self.scope.path, sid)
            .filter(|s| crate::oauth::bearer::may_use(caller, s))
    }
}

/// The MCP routes of every scope.
pub fn routes(app: &AppState) -> Router {
    let mut router = Router::new();
    for scope in app.scopes() {
        let ctx = ScopeCtx {
            app: app.clone(),
            scope: scope.clone(),
        };
        let p = &scope.path;
        let scoped = Router::new()
            .route(
                &format!("{p}/mcp"),
                post(streamable::post)
                    .get(streamable::get)
                    .delete(streamable::delete),
            )
            .route(&format!("{p}/sse"), get(sse::open).post(sse::plain_post))
            .route(&format!("{p}/messages"), post(sse::message))
            .route(&format!("{p}/records/{{*id}}"), get(sse::record))
            .with_state(ctx);
        router = router.merge(scoped);
    }
    router.layer(middleware::from_fn_with_state(
        app.clone(),
        check_host_and_origin,
    ))
}

/// A JSON-RPC error as an HTTP response (with the error's own status).
pub fn rpc_error_response(id: Option<&Value>, err: &RpcError) -> Response {
    json_body(err.status, protocol::error_response(id, err))
}

/// An already serialised JSON body.
pub fn json_body(status: StatusCode, body: Box<serde_json::value::RawValue>) -> Response {
    let text: Box<str> = body.into();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        String::from(text),
    )
        .into_response()
}

/// Refuses requests addressed to another host (see [`request_authority`]) or whose `Origin` is
/// not allowed (403).
async fn check_host_and_origin(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(msg) = host_and_origin_ok(&app, request_authority(&req), req.headers()) {
        let err = RpcError::invalid_request(msg).with_status(StatusCode::FORBIDDEN);
        return rpc_error_response(None, &err);
    }
    next.run(req).await
}

/// The host (and port) a request is addressed to: the request target's authority when it has
/// one (HTTP/2's `:authority`, which replaces `Host`; an HTTP/1.1 absolute-form target, which
/// takes precedence over `Host`), else the `Host` header (`""` when it is not visible ASCII,
/// so it matches nothing).
pub fn request_authority<B>(req: &axum::http::Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("")),
    }
}

fn host_and_origin_ok(
    app: &AppState,
    authority: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), String> {
    let public = app.public_url();
    let public_host = public
        .split_once("://")
        .map(|(_, h)| h)
        .unwrap_or(&public)
        .to_ascii_lowercase();
    if let Some(host) = authority {
        let host = host.to_ascii_lowercase();
        if !(host == public_host || is_loopback_authority(&host)) {
            return Err(format!(
                "Forbidden: Host `{}` is not served here",
                crate::tools::truncate(&host, 100)
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        let allowed = origin == public.to_ascii_lowercase()
            || origin.split_once("://").is_some_and(|(scheme, auth)| {
                matches!(scheme, "http" | "https") && is_loopback_authority(auth)
            })
            || app
                .config()
                .server
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(&origin));
        if !allowed {
            return Err(format!(
                "Forbidden: Origin `{}` is not allowed (add it to server.allowed_origins)",
                crate::tools::truncate(&origin, 100)
            ));
        }
    }
    Ok(())
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_authority(auth: &str) -> bool {
    let host = if let Some(rest) = auth.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h).unwrap_or(rest)
    } else {
        auth.rsplit_once(':').map(|(h, _)| h).unwrap_or(auth)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Standard headers for an SSE response that must reach the client unbuffered.
pub fn sse_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_comes_from_the_target_before_the_host_header() {
        let h2 = axum::http::Request::get("https://evil.example.com/claude/mcp")
            .header(header::HOST, "localhost")
            .body(())
            .unwrap();
        assert_eq!(request_authority(&h2), Some("evil.example.com"));
        let h1 = axum::http::Request::get("/claude/mcp")
            .header(header::HOST, "mcp.example.com:8443")
            .body(())
            .unwrap();
        assert_eq!(request_authority(&h1), Some("mcp.example.com:8443"));
        let neither = axum::http::Request::get("/claude/mcp").body(()).unwrap();
        assert_eq!(request_authority(&neither), None);
        let binary = axum::http::Request::get("/claude/mcp")
            .header(header::HOST, HeaderValue::from_bytes(b"\xffx").unwrap())
            .body(())
            .unwrap();
        assert_eq!(request_authority(&binary), Some(""), "matches nothing");
    }

    #[test]
    fn loopback_authorities_are_recognised() {
        for ok in [
            "localhost",
            "localhost:8008",
            "127.0.0.1:1",
            "127.0.0.2",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "localhost.evil.com",
            "10.0.0.1:80",
            "[::2]:80",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }
}
