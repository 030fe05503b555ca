//! MCP over HTTP: the Streamable HTTP endpoint `{scope}/mcp` (2025-03-26, 2025-06-18,
//! 2025-11-25 and 2026-07-28 from one endpoint), the older HTTP+SSE transport at `{scope}/sse`, and the
//! record pages search results link to.
//!
//! Transports turn HTTP into JSON-RPC messages and back; [`dispatch`] and the tools never see
//! HTTP. The request's authority (`Host`, or HTTP/2's `:authority`) and `Origin` are checked
//! here for every MCP route (DNS-rebinding protection), against the public URL's host and port
//! as clients may write them (`PublicOrigin`) or a loopback host.

pub mod batch;
pub mod dispatch;
pub mod protocol;
pub mod records;
pub mod session;
pub mod sse;
pub mod streamable;

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::{Either, Ready, ready};
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
    /// The live session `sid` of this scope and transport (a legacy HTTP+SSE session has an
    /// outbox, a Streamable HTTP one none; neither is valid on the other's endpoints), if
    /// `caller` may use it (sessions are bound to the user and client that opened them).
    pub fn session_for(
        &self,
        caller: &dispatch::Caller,
        sid: &str,
        legacy_sse: bool,
    ) -> Option<Arc<session::Session>> {
        self.app
            .sessions()
            .get(&self.scope.path, sid)
            .filter(|s| s.outbox.is_some() == legacy_sse)
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
            .route(&format!("{p}/records/{{*id}}"), get(records::record))
            // No id: the same answer as a bad one (a page for a browser, JSON for a program).
            .route(&format!("{p}/records/"), get(records::record))
            .with_state(ctx);
        router = router.merge(scoped);
    }
    // The Host and Origin check comes first, so a preflight from a foreign origin is a 403 too.
    router.layer(HostOriginLayer {
        app: app.clone(),
        cors: Arc::new(cors(app)),
    })
}

/// CORS for browser-based MCP clients: the origins [`origin_allowed`] admits (the public
/// URL's, loopback ones and `server.allowed_origins`) may call the MCP endpoints with a
/// bearer token (no cookies) and read the session id and the `WWW-Authenticate` challenge.
/// Without authentication, loopback origins are left out: any page a local program serves
/// could otherwise read the database through the browser; there, only the public URL's
/// origin and `server.allowed_origins` get answers. Only requests with an `Origin` go
/// through it ([`HostOrigin`]): server-side clients such as ChatGPT's send none.
fn cors(app: &AppState) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let app = app.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            let Ok(o) = origin.to_str() else {
                return false;
            };
            let o = o.to_ascii_lowercase();
            if app.no_auth() {
                public_or_listed_origin(&app, &o)
            } else {
                origin_allowed(&app, &o)
            }
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("mcp-method"),
            HeaderName::from_static("mcp-name"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            header::WWW_AUTHENTICATE,
        ])
        .max_age(std::time::Duration::from_secs(3600))
}

/// A JSON-RPC error as an HTTP response (with the error's own status).
pub fn rpc_error_response(id: Option<&Value>, err: &RpcError) -> Response {
    json_body(err.status, protocol::error_response(id, err))
}

/// An already serialised JSON body.
pub fn json_body(status: StatusCode, body: crate::json::Json) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into_bytes(),
    )
        .into_response()
}

/// Refuses requests addressed to another host (see [`request_authority`]) or whose `Origin` is
/// not allowed (403), in front of every MCP route.
///
/// A service of its own rather than `from_fn`: the check needs nothing from the route's
/// answer, so the future is the route's own or a ready refusal, with no box and no clone of the
/// route per request.
#[derive(Clone)]
struct HostOriginLayer {
    app: AppState,
    /// CORS for the requests that carry an `Origin` ([`cors`]).
    cors: Arc<tower_http::cors::CorsLayer>,
}

impl<S: Clone> tower::Layer<S> for HostOriginLayer {
    type Service = HostOrigin<S>;
    fn layer(&self, inner: S) -> HostOrigin<S> {
        // `CorsLayer::layer` checks its rules (and panics on a contradiction): once here, at
        // start, rather than first on a browser's request.
        let _ = tower::Layer::layer(&*self.cors, ());
        HostOrigin {
            inner,
            cors: self.cors.clone(),
            app: self.app.clone(),
        }
    }
}

/// See [`HostOriginLayer`].
///
/// axum clones a route's service for every request, so this holds the CORS layer behind an
/// `Arc` and puts a request behind CORS only when it has an `Origin`. Holding a `Cors`
/// service (a second clone of the route and a copy of the layer's header lists) cost every
/// request about 5,000 instructions to clone and drop (`benches/instructions.sh`).
#[derive(Clone)]
struct HostOrigin<S> {
    inner: S,
    cors: Arc<tower_http::cors::CorsLayer>,
    app: AppState,
}

type CorsFuture<F> = tower_http::cors::ResponseFuture<F>;

impl<S> tower::Service<Request> for HostOrigin<S>
where
    S: tower::Service<Request, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        Either<Ready<Result<Response, S::Error>>, Either<S::Future, CorsFuture<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match host_and_origin_ok(&self.app, request_authority(&req), req.headers()) {
            Ok(()) if req.headers().contains_key(header::ORIGIN) => {
                // The route is ready (above), and so is a clone of it: an axum route always is.
                let mut cors = tower::Layer::layer(&*self.cors, self.inner.clone());
                Either::Right(Either::Right(cors.call(req)))
            }
            Ok(()) => Either::Right(Either::Left(self.inner.call(req))),
            Err(msg) => {
                let err = RpcError::refused(StatusCode::FORBIDDEN, msg);
                Either::Left(ready(Ok(rpc_error_response(None, &err))))
            }
        }
    }
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
    let public_url = app.public_url();
    // Validated at load; a URL that does not parse matches nothing but loopback.
    let public = PublicOrigin::parse(&public_url);
    if let Some(host) = authority {
        let served = public.as_ref().is_some_and(|p| p.is_authority(host));
        if !(served || is_loopback_authority(&host.to_ascii_lowercase())) {
            return Err(format!(
                "Forbidden: Host `{}` is not served here",
                crate::tools::truncate(&host.to_ascii_lowercase(), 100)
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        if !origin_allowed(app, &origin) {
            return Err(format!(
                "Forbidden: Origin `{}` is not allowed (add it to server.allowed_origins)",
                crate::tools::truncate(&origin, 100)
            ));
        }
    }
    Ok(())
}

/// Whether a browser page of `origin` (lower case) may call the MCP endpoints: the public
/// URL's origin, an http(s) loopback origin, or one of `server.allowed_origins`.
fn origin_allowed(app: &AppState, origin: &str) -> bool {
    public_or_listed_origin(app, origin)
        || origin.split_once("://").is_some_and(|(scheme, auth)| {
            matches!(scheme, "http" | "https") && is_loopback_authority(auth)
        })
}

/// Whether `origin` is the public URL's origin or one of `server.allowed_origins`.
fn public_or_listed_origin(app: &AppState, origin: &str) -> bool {
    let public_url = app.public_url();
    PublicOrigin::parse(&public_url).is_some_and(|p| p.is_origin(origin))
        || app
            .config()
            .server
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
}

/// The public URL's scheme, host and port, compared the way clients may write them: the host
/// case-insensitively (DNS names are), and an explicit default port for the scheme (`:443` for
/// https, `:80` for http) the same as none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PublicOrigin<'a> {
    /// `http` or `https`.
    scheme: &'a str,
    /// As configured (a bracketed IPv6 literal keeps its brackets).
    host: &'a str,
    /// The explicit port, or the scheme's default.
    port: u16,
}

impl<'a> PublicOrigin<'a> {
    /// `scheme://host[:port]`; `None` for another scheme or a malformed authority.
    fn parse(url: &'a str) -> Option<Self> {
        let (scheme, authority) = url.split_once("://")?;
        let default = default_port(scheme)?;
        let (host, port) = split_authority(authority.trim_end_matches('/'))?;
        Some(Self {
            scheme,
            host,
            port: port.unwrap_or(default),
        })
    }

    /// Whether a request's authority (`Host`, `:authority`) names this host and port. A DNS
    /// name may end in the root's dot (`mcp.example.com.` is the same name, written fully
    /// qualified), on either side.
    fn is_authority(&self, authority: &str) -> bool {
        split_authority(authority).is_some_and(|(host, port)| {
            without_root_dot(host).eq_ignore_ascii_case(without_root_dot(self.host))
                && port.or_else(|| default_port(self.scheme)) == Some(self.port)
        })
    }

    /// Whether an `Origin` (`scheme://host[:port]`) is this origin.
    fn is_origin(&self, origin: &str) -> bool {
        origin.split_once("://").is_some_and(|(scheme, authority)| {
            scheme.eq_ignore_ascii_case(self.scheme) && self.is_authority(authority)
        })
    }
}

/// `name.` as `name` (one trailing dot; a lone `.` stays).
fn without_root_dot(host: &str) -> &str {
    host.strip_suffix('.')
        .filter(|h| !h.is_empty())
        .unwrap_or(host)
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

/// `host`, `host:port` or `[v6]:port` as (host, port). An empty port (`host:`) is no port
/// (RFC 3986 §6.2.3); `None` for user info, a port that is not decimal digits or out of range,
/// or an empty host.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        let (host, rest) = authority.split_at(end);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_authority(auth: &str) -> bool {
    let host = if let Some(rest) = auth.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h).unwrap_or(rest)
    } else {
        auth.rsplit_once(':').map(|(h, _)| h).unwrap_or(auth)
    };
    // `localhost.` is the same name written fully qualified (RFC 6761 §6.3 keeps it loopback).
    without_root_dot(host) == "localhost"
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
            "localhost.",
            "localhost.:8008",
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
            "localhost..",
            ".",
            "10.0.0.1:80",
            "[::2]:80",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }

    #[test]
    fn an_explicit_default_port_and_any_case_name_the_public_host() {
        let https = PublicOrigin::parse("https://mcp.example.com").expect("parses");
        for ok in [
            "mcp.example.com",
            "MCP.Example.COM",
            "mcp.example.com:443",
            "mcp.example.com:0443",
            "mcp.example.com:",
            "mcp.example.com.",
            "MCP.example.com.:443",
        ] {
            assert!(https.is_authority(ok), "{ok}");
        }
        let dotted = PublicOrigin::parse("https://mcp.example.com.").expect("parses");
        assert!(dotted.is_authority("mcp.example.com"));
        assert!(dotted.is_authority("mcp.example.com."));
        for bad in [
            "mcp.example.com:80",
            "mcp.example.com:8443",
            "mcp.example.com:+443",
            "mcp.example.com:443:443",
            "mcp.example.com:99999",
            "mcp.example.com.evil.example",
            "mcp.example.com..",
            ".",
            "evil.example.com:443",
            "user@mcp.example.com",
            ":443",
            "",
        ] {
            assert!(!https.is_authority(bad), "{bad}");
        }
        let http = PublicOrigin::parse("http://MCP.example.com").expect("parses");
        assert!(http.is_authority("mcp.example.com:80"));
        assert!(http.is_authority("mcp.example.com"));
        assert!(!http.is_authority("mcp.example.com:443"));
    }

    #[test]
    fn a_non_default_public_port_must_be_named() {
        let p = PublicOrigin::parse("https://mcp.example.com:8443").expect("parses");
        assert!(p.is_authority("mcp.example.com:8443"));
        assert!(p.is_authority("Mcp.Example.Com:8443"));
        assert!(!p.is_authority("mcp.example.com"));
        assert!(!p.is_authority("mcp.example.com:443"));
        // An explicit default port in the public URL is the same as none.
        let explicit = PublicOrigin::parse("https://mcp.example.com:443").expect("parses");
        assert!(explicit.is_authority("mcp.example.com"));
    }

    #[test]
    fn ipv6_public_hosts_compare_with_their_brackets() {
        let p = PublicOrigin::parse("https://[2001:db8::1]").expect("parses");
        assert!(p.is_authority("[2001:DB8::1]"));
        assert!(p.is_authority("[2001:db8::1]:443"));
        assert!(!p.is_authority("[2001:db8::1]:80"));
        assert!(!p.is_authority("[2001:db8::1]x"));
        assert!(!p.is_authority("2001:db8::1"));
    }

    #[test]
    fn origins_match_by_scheme_host_and_effective_port() {
        let p = PublicOrigin::parse("https://mcp.example.com").expect("parses");
        assert!(p.is_origin("https://mcp.example.com"));
        assert!(p.is_origin("HTTPS://MCP.example.com:443"));
        assert!(!p.is_origin("http://mcp.example.com"));
        assert!(!p.is_origin("http://mcp.example.com:443"));
        assert!(!p.is_origin("https://mcp.example.com:8443"));
        assert!(!p.is_origin("mcp.example.com"));
    }
}
