//! Streamable HTTP at `{scope}/mcp`, four revisions on one endpoint:
//!
//! - a POSTed `initialize` starts a 2025 session (`Mcp-Session-Id` in the response), on
//!   2025-03-26, 2025-06-18 or 2025-11-25 as the client asks (else 2025-11-25); a 2025-03-26
//!   session's results take that revision's shapes, and it may POST JSON-RPC batches
//!   ([`super::batch`]);
//! - a request carrying 2026-07-28 `_meta` (or that version header) is served statelessly
//!   after its `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers are checked against
//!   the body (400 / -32020 on any mismatch);
//! - any other request belongs to a 2025 session: 400 without the session header, 404 for an
//!   unknown or ended one.
//!
//! Responses are JSON unless the client accepts only `text/event-stream`. GET opens a
//! server-to-client stream for a 2025 session (priming event on 2025-11-25); DELETE ends it.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};

use super::protocol::{
    self, Era, Incoming, META_PROTOCOL_VERSION, MODERN_VERSION, Request, RpcError,
    SUPPORTED_VERSIONS, UNSUPPORTED_PROTOCOL_VERSION,
};
use super::{ScopeCtx, json_body, rpc_error_response, sse_headers};
use super::{batch, dispatch};
use crate::edge::client_ip::ClientIp as EdgeClient;
use crate::json::Json;
use crate::oauth::ClientIp;
use crate::oauth::bearer::{Endpoint, authenticate_at, bind_session};

pub const SESSION_HEADER: &str = "mcp-session-id";
pub const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

/// A request's headers and its body (within the body limit, as axum's `Bytes` reads it). The
/// headers are taken, where axum's `HeaderMap` extractor clones them and drops the original
/// (about 1,700 instructions a request).
pub struct HeadersAndBody(HeaderMap, Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for HeadersAndBody {
    type Rejection = axum::extract::rejection::BytesRejection;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let headers = std::mem::take(&mut parts.headers);
        let req = axum::extract::Request::from_parts(parts, body);
        let body = <Bytes as axum::extract::FromRequest<S>>::from_request(req, state).await?;
        Ok(HeadersAndBody(headers, body))
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `Accept` names one of `wanted` (media ranges, compared without case), counting
/// every `Accept` line and skipping ranges given `q=0` (RFC 9110 §12.5.1).
fn accepts(headers: &HeaderMap, wanted: &[&str]) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .split_once('=')
                    .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && is_zero(v.trim()))
            });
            !refused && wanted.iter().any(|w| media.eq_ignore_ascii_case(w))
        })
}

/// A quality value of zero (`0`, `0.`, `0.000`).
fn is_zero(q: &str) -> bool {
    q.strip_prefix('0').is_some_and(|rest| {
        rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|d| d.bytes().all(|b| b == b'0'))
    })
}

const STREAM_RANGES: [&str; 3] = ["text/event-stream", "text/*", "*/*"];
const JSON_RANGES: [&str; 3] = ["application/json", "application/*", "*/*"];

/// Whether a `GET {scope}/mcp` with these headers asks for the server-to-client stream: its
/// `Accept` takes `text/event-stream`. The one test for both this handler and the edge's
/// stream caps (`edge::limits::opens_stream`), so that no `Accept` value opens a stream the
/// caps did not count.
pub fn get_accepts_stream(headers: &HeaderMap) -> bool {
    accepts(headers, &STREAM_RANGES)
}

/// What the client accepts for a response to a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reply {
    Json,
    Sse,
}

fn reply_kind(headers: &HeaderMap) -> Result<Reply, RpcError> {
    if !headers.contains_key(header::ACCEPT) || accepts(headers, &JSON_RANGES) {
        Ok(Reply::Json)
    } else if accepts(headers, &STREAM_RANGES) {
        Ok(Reply::Sse)
    } else {
        Err(RpcError::refused(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: the client must accept application/json and text/event-stream",
        ))
    }
}

fn reply(kind: Reply, body: Json, status: StatusCode) -> Response {
    match kind {
        Reply::Json => json_body(status, body),
        Reply::Sse => events(status, vec![body]),
    }
}

/// `messages` as an event stream, one `message` event each (the SDKs parse an event as one
/// JSON-RPC message).
fn events(status: StatusCode, messages: Vec<Json>) -> Response {
    let events = messages
        .into_iter()
        .map(|m| Ok::<_, Infallible>(Event::default().event("message").data(m.into_string())));
    let mut resp = (status, Sse::new(futures::stream::iter(events))).into_response();
    sse_headers(&mut resp);
    resp
}

/// A 2025 session's `MCP-Protocol-Version`, on every request, notification, response, GET and
/// DELETE of the session (`negotiated`), and on a notification or response sent without one
/// (`None`): any revision a client may legitimately send is accepted (the official SDKs send
/// older ones too), and the session keeps behaving as `negotiated`; an unknown value, or one
/// that is not text, is a 400 (2025-06-18, "Protocol Version Header").
fn check_session_header(headers: &HeaderMap, negotiated: Option<&str>) -> Result<(), RpcError> {
    let Some(value) = headers.get(VERSION_HEADER) else {
        return Ok(());
    };
    let v = value.to_str().unwrap_or("(not text)");
    if protocol::KNOWN_SESSION_VERSIONS.contains(&v) {
        return Ok(());
    }
    let uses = match negotiated {
        Some(n) => format!("this session uses {n}"),
        None => format!("supported: {}", protocol::KNOWN_SESSION_VERSIONS.join(", ")),
    };
    Err(RpcError::refused(
        StatusCode::BAD_REQUEST,
        format!(
            "Bad Request: unsupported MCP-Protocol-Version `{}`; {uses}",
            crate::tools::truncate(v, 40)
        ),
    ))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), RpcError> {
    match header_str(headers, header::CONTENT_TYPE.as_str()) {
        Some(ct) if !ct.to_ascii_lowercase().starts_with("application/json") => {
            Err(RpcError::refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Unsupported Media Type `{}`: POST a JSON-RPC message as application/json",
                    crate::tools::truncate(ct, 80)
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Decodes a header value that may use the `=?base64?…?=` form of 2026-07-28.
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_string()),
    }
}

/// Whether a message is one of 2026-07-28: it carries that revision's `_meta` protocol
/// version, or names the revision in its header.
fn is_modern(headers: &HeaderMap, params: &Value) -> bool {
    meta_version(params).is_some() || header_str(headers, VERSION_HEADER) == Some(MODERN_VERSION)
}

/// `params._meta`'s protocol version, when it has one (a non-string reads as "").
fn meta_version(params: &Value) -> Option<&str> {
    params
        .get("_meta")
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .map(|v| v.as_str().unwrap_or(""))
}

fn version_header_required(headers: &HeaderMap) -> Result<&str, RpcError> {
    header_str(headers, VERSION_HEADER).ok_or_else(|| {
        RpcError::header_mismatch("Header mismatch: MCP-Protocol-Version header is required")
    })
}

/// The header checks of 2026-07-28 for a notification: every POST names the revision in
/// `MCP-Protocol-Version` (matching `_meta` where the notification has it) and its method in
/// `Mcp-Method`.
fn check_modern_notification(
    headers: &HeaderMap,
    method: &str,
    params: &Value,
) -> Result<(), RpcError> {
    let header_version = version_header_required(headers)?;
    let meta = meta_version(params);
    if let Some(meta) = meta
        && meta != header_version
    {
        return Err(RpcError::header_mismatch(format!(
            "Header mismatch: MCP-Protocol-Version header value '{}' does not match body value '{}'",
            crate::tools::truncate(header_version, 40),
            crate::tools::truncate(meta, 40)
        )));
    }
    if header_version != MODERN_VERSION {
        return Err(RpcError::new(
            UNSUPPORTED_PROTOCOL_VERSION,
            format!(
                "Unsupported protocol version `{}`",
                crate::tools::truncate(header_version, 40)
            ),
        )
        .with_data(json!({"supported": SUPPORTED_VERSIONS})));
    }
    check_method_headers(headers, method, params)
}

/// The header checks of 2026-07-28 (Streamable HTTP, "Server Validation").
fn check_modern_headers(headers: &HeaderMap, req: &Request) -> Result<(), RpcError> {
    let header_version = version_header_required(headers)?;
    dispatch::check_modern_meta(req)?;
    let meta_version = meta_version(&req.params).unwrap_or("");
    if protocol::supported_version(meta_version).is_none() || meta_version != MODERN_VERSION {
        return Err(RpcError::new(
            UNSUPPORTED_PROTOCOL_VERSION,
            format!("Unsupported protocol version `{meta_version}`"),
        )
        .with_data(json!({"supported": SUPPORTED_VERSIONS, "requested": meta_version})));
    }
    if header_version != meta_version {
        return Err(RpcError::header_mismatch(format!(
            "Header mismatch: MCP-Protocol-Version header value '{header_version}' does not match body value '{meta_version}'"
        )));
    }
    check_method_headers(headers, &req.method, &req.params)
}

/// 2026-07-28's `Mcp-Method` (every message) and `Mcp-Name` (the methods that name a tool,
/// prompt or resource) against the body.
fn check_method_headers(headers: &HeaderMap, method: &str, params: &Value) -> Result<(), RpcError> {
    match header_str(headers, METHOD_HEADER) {
        None => {
            return Err(RpcError::header_mismatch(
                "Header mismatch: Mcp-Method header is required",
            ));
        }
        Some(m) if m != method => {
            return Err(RpcError::header_mismatch(format!(
                "Header mismatch: Mcp-Method header value '{}' does not match body value '{}'",
                crate::tools::truncate(m, 100),
                crate::tools::truncate(method, 100)
            )));
        }
        Some(_) => {}
    }
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(key) = name_key {
        let body = params.get(key).and_then(Value::as_str).unwrap_or("");
        let raw = header_str(headers, NAME_HEADER).ok_or_else(|| {
            RpcError::header_mismatch("Header mismatch: Mcp-Name header is required")
        })?;
        let decoded = decode_header_value(raw).ok_or_else(|| {
            RpcError::header_mismatch("Header mismatch: Mcp-Name header is not valid base64 UTF-8")
        })?;
        if decoded != body {
            return Err(RpcError::header_mismatch(format!(
                "Header mismatch: Mcp-Name header value '{}' does not match body value '{}'",
                crate::tools::truncate(&decoded, 100),
                crate::tools::truncate(body, 100)
            )));
        }
    }
    Ok(())
}

/// POST `{scope}/mcp`
pub async fn post(
    State(ctx): State<ScopeCtx>,
    ClientIp(ip): ClientIp,
    edge_client: Option<Extension<EdgeClient>>,
    HeadersAndBody(headers, body): HeadersAndBody,
) -> Response {
    let caller = match authenticate_at(&ctx.app, &ctx.scope, Endpoint::Mcp, &headers, ip) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    if let Err(e) = check_content_type(&headers) {
        return rpc_error_response(None, &e);
    }
    if batch::is_batch(&body) {
        let budget = batch::Budget::new(&ctx, edge_client);
        return post_batch(&ctx, &caller, &headers, &body, &budget).await;
    }
    let msg = match protocol::parse(&body) {
        Ok(m) => m,
        Err(e) => return rpc_error_response(None, &e),
    };
    let req = match msg {
        Incoming::Request(r) => r,
        Incoming::Notification { method, params } if is_modern(&headers, &params) => {
            return match check_modern_notification(&headers, &method, &params) {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(e) => rpc_error_response(None, &e),
            };
        }
        other => {
            // A 2025 session's notification or response must name a live session; one without
            // a session header is accepted. Either way its version header must be one a
            // client could send.
            let session = match header_str(&headers, SESSION_HEADER) {
                Some(sid) => match ctx.session_for(&caller, sid, false) {
                    Some(s) => Some(s),
                    None => return session_not_found(None),
                },
                None => None,
            };
            let negotiated = session.as_deref().map(revision);
            if let Err(e) = check_session_header(&headers, negotiated) {
                return rpc_error_response(None, &e);
            }
            if let (Some(session), Incoming::Notification { method, params }) = (&session, &other) {
                dispatch::notified(session, method, params);
            }
            return StatusCode::ACCEPTED.into_response();
        }
    };
    if let Some(limited) = crate::edge::rate_limit::limit_tool_call(&ctx.app, &caller, &req) {
        dispatch::audit_rate_limited(&ctx.scope, &req, &caller);
        return limited;
    }
    let kind = match reply_kind(&headers) {
        Ok(k) => k,
        Err(e) => return rpc_error_response(Some(&req.id), &e),
    };

    if req.method == "initialize" {
        let version =
            dispatch::negotiated_version(&req.params, dispatch::Transport::StreamableHttp);
        let result = match dispatch::handle(&ctx.scope, Era::Legacy(version), &req, &caller).await {
            Ok(r) => r,
            Err(e) => return rpc_error_response(Some(&req.id), &e),
        };
        let session = ctx.app.sessions().create(
            &ctx.scope.path,
            &crate::mcp::session::holder_of(&caller),
            Some(version),
            None,
        );
        bind_session(&caller, &session);
        let mut resp = reply(kind, result, StatusCode::OK);
        if let Ok(v) = HeaderValue::from_str(&session.id) {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        return resp;
    }

    let mut session = None;
    let era = if is_modern(&headers, &req.params) {
        if let Err(e) = check_modern_headers(&headers, &req) {
            return rpc_error_response(Some(&req.id), &e);
        }
        Era::Modern
    } else {
        let Some(sid) = header_str(&headers, SESSION_HEADER) else {
            let err = RpcError::refused(
                StatusCode::BAD_REQUEST,
                "Bad Request: Mcp-Session-Id header is required; send initialize first (or use protocol 2026-07-28 with per-request _meta)",
            );
            return rpc_error_response(Some(&req.id), &err);
        };
        let Some(live) = ctx.session_for(&caller, sid, false) else {
            return session_not_found(Some(&req.id));
        };
        let negotiated = revision(&live);
        if let Err(e) = check_session_header(&headers, Some(negotiated)) {
            return rpc_error_response(Some(&req.id), &e);
        }
        session = Some(live);
        Era::Legacy(negotiated)
    };

    let handled =
        dispatch::handle_cancellable(&ctx.scope, era, &req, &caller, session.as_ref()).await;
    let Some(handled) = handled else {
        return cancelled(&headers, &req.id);
    };
    match handled {
        Ok(result) => reply(kind, result, StatusCode::OK),
        // An error with a status of its own (a 404 for an unknown method of 2026-07-28) is
        // JSON, as every refusal is: a client reads a 4xx body as JSON.
        Err(e) if e.status != StatusCode::OK => rpc_error_response(Some(&req.id), &e),
        Err(e) => reply(kind, protocol::error_response(Some(&req.id), &e), e.status),
    }
}

/// A JSON-RPC batch ([`super::batch`]), taken on a session that settled on 2025-03-26;
/// anything else gets a 400 saying to send one message per POST. The answers go back in one
/// JSON array (202 when there are none), or, to a client that accepts only event streams, as
/// one event each.
async fn post_batch(
    ctx: &ScopeCtx,
    caller: &dispatch::Caller,
    headers: &HeaderMap,
    body: &[u8],
    budget: &batch::Budget,
) -> Response {
    // A body that is no batch at all is refused first, whatever the session (JSON-RPC 2.0:
    // a parse error is one response object).
    let messages = match batch::messages(body) {
        Ok(m) => m,
        Err(e) => return rpc_error_response(None, &e),
    };
    let Some(sid) = header_str(headers, SESSION_HEADER) else {
        return rpc_error_response(None, &batch::refusal(None));
    };
    let Some(session) = ctx.session_for(caller, sid, false) else {
        return session_not_found(None);
    };
    let negotiated = revision(&session);
    let era = match batch::era(Some(negotiated)) {
        Ok(era) => era,
        Err(e) => return rpc_error_response(None, &e),
    };
    let checked =
        check_session_header(headers, Some(negotiated)).and_then(|()| reply_kind(headers));
    let kind = match checked {
        Ok(k) => k,
        Err(e) => return rpc_error_response(None, &e),
    };
    let answered = batch::answer(ctx, caller, era, messages, budget, Some(&session)).await;
    match (answered.status(), kind) {
        (None, _) => StatusCode::ACCEPTED.into_response(),
        (Some(StatusCode::OK), Reply::Sse) => events(StatusCode::OK, answered.answers),
        (Some(status), _) => json_body(status, Json::array(answered.answers)),
    }
}

/// The revision a Streamable HTTP session settled on (`initialize` sets it as it creates one).
fn revision(session: &crate::mcp::session::Session) -> &'static str {
    session
        .version
        .get()
        .copied()
        .unwrap_or(protocol::LATEST_LEGACY_VERSION)
}

/// The answer to a request its client cancelled: none (the revisions ask the receiver not to
/// respond), so an event stream that ends without an event to a client that takes event
/// streams at all; one that takes only JSON gets an error it will not look for, as a POST
/// must be answered.
fn cancelled(headers: &HeaderMap, id: &Value) -> Response {
    if get_accepts_stream(headers) {
        return events(StatusCode::OK, Vec::new());
    }
    let err = RpcError::new(
        protocol::REQUEST_CANCELLED,
        "Request cancelled: the client sent notifications/cancelled for it",
    );
    json_body(StatusCode::OK, protocol::error_response(Some(id), &err))
}

/// The 404 for an unknown or ended session, answering request `id` when there is one.
fn session_not_found(id: Option<&Value>) -> Response {
    let err = RpcError::session_not_found(
        "Not Found: the session has ended or never existed; send initialize to start a new one",
    );
    rpc_error_response(id, &err)
}

/// GET `{scope}/mcp`: the server-to-client stream of a 2025 session.
pub async fn get(
    State(ctx): State<ScopeCtx>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate_at(&ctx.app, &ctx.scope, Endpoint::Mcp, &headers, ip) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let accepts_sse = get_accepts_stream(&headers);
    let Some(sid) = header_str(&headers, SESSION_HEADER) else {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, POST, DELETE")],
            "GET needs an Mcp-Session-Id (2025 revisions); 2026-07-28 clients use POST only\n",
        )
            .into_response();
    };
    if !accepts_sse {
        let err = RpcError::refused(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: GET must accept text/event-stream",
        );
        return rpc_error_response(None, &err);
    }
    let Some(session) = ctx.session_for(&caller, sid, false) else {
        return session_not_found(None);
    };
    let negotiated = session.version.get().copied();
    if let Err(e) = check_session_header(
        &headers,
        Some(negotiated.unwrap_or(protocol::LATEST_LEGACY_VERSION)),
    ) {
        return rpc_error_response(None, &e);
    }
    let Some(permit) = ctx.app.try_open_stream() else {
        let err = RpcError::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many open streams; try again later",
        );
        return rpc_error_response(None, &err);
    };
    let closed = session.closed.clone();
    let open = session.stream_opened();
    // Nothing is pushed on this stream (the server sends no requests or notifications of
    // its own); it stays open until the session ends or the server shuts down.
    let stream = futures::stream::pending::<Result<Event, Infallible>>()
        .take_until(async move { closed.cancelled().await })
        .map(move |e| {
            let _held = (&permit, &open);
            e
        });
    let resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    // 2025-11-25 starts the stream with an event of an id and an empty `data` field, which a
    // client keeps as the point to resume from. axum writes no `data` line for empty data,
    // and an event without one is never dispatched (WHATWG event stream parsing), so the
    // priming event is written here as bytes.
    let mut resp = if negotiated == Some("2025-11-25") {
        let (parts, body) = resp.into_parts();
        let priming = format!("id: {}\nretry: 3000\ndata: \n\n", priming_event_id());
        let first = futures::stream::once(async move { Ok(Bytes::from(priming)) });
        Response::from_parts(
            parts,
            axum::body::Body::from_stream(first.chain(body.into_data_stream())),
        )
    } else {
        resp
    };
    sse_headers(&mut resp);
    resp
}

/// A fresh id for a GET stream's priming event: event ids must be unique across all the
/// streams of a session (2025-11-25, "Resumability"), and a session may open several streams,
/// one after another or at once. Unique in the process, which outlives every session.
fn priming_event_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("p{n}")
}

/// DELETE `{scope}/mcp`: ends a 2025 session.
pub async fn delete(
    State(ctx): State<ScopeCtx>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate_at(&ctx.app, &ctx.scope, Endpoint::Mcp, &headers, ip) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let Some(sid) = header_str(&headers, SESSION_HEADER) else {
        let err = RpcError::refused(
            StatusCode::BAD_REQUEST,
            "Bad Request: Mcp-Session-Id header is required",
        );
        return rpc_error_response(None, &err);
    };
    let Some(negotiated) = ctx.session_for(&caller, sid, false).map(|s| revision(&s)) else {
        return session_not_found(None);
    };
    if let Err(e) = check_session_header(&headers, Some(negotiated)) {
        return rpc_error_response(None, &e);
    }
    if ctx.app.sessions().remove(sid) {
        StatusCode::OK.into_response()
    } else {
        session_not_found(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_header_values_are_decoded() {
        assert_eq!(
            decode_header_value("=?base64?w6lsw6g=?=").as_deref(),
            Some("élè")
        );
        assert_eq!(decode_header_value("search").as_deref(), Some("search"));
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }
}
