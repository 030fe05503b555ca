//! The older HTTP+SSE transport (protocol 2024-11-05), still used by some clients:
//! `GET {scope}/sse` opens a stream whose first event, `endpoint`, names the URL to POST
//! messages to (`{scope}/messages?session_id=…`); responses come back on the stream. As in the
//! seed guide, a plain JSON-RPC `POST {scope}/sse` is also answered directly with JSON.
//!
//! Being the transport of 2024-11-05 (and of 2025-03-26's backwards compatibility),
//! `initialize` here settles on either of those when the client asks for it
//! ([`dispatch::Transport::LegacySse`]), and the session's results then take that revision's
//! shapes (`protocol::Shapes`: no `title`, `outputSchema` or `structuredContent`, and tool
//! `annotations` only from 2025-03-26). A plain POST has no session to remember the revision
//! by: its results take the shapes of the revision its `MCP-Protocol-Version` header names
//! (any session revision), or of 2025-03-26 without one (the default the 2025 revisions give a
//! missing header; 2024-11-05 and 2025-03-26 clients send none). A 2025-03-26 session may
//! POST JSON-RPC batches to its message URL ([`super::batch`]); the answers travel as one
//! event each.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::batch;
use super::dispatch::{self, Transport};
use super::json_body;
use super::protocol::{self, Era, Incoming, RpcError, UNNAMED_VERSION};
use super::session::{Outbox, Session};
use super::streamable::VERSION_HEADER;
use super::{ScopeCtx, rpc_error_response, sse_headers};
use crate::edge::client_ip::ClientIp as EdgeClient;
use crate::json::Json;
use crate::oauth::ClientIp;
use crate::oauth::bearer::{Endpoint, authenticate_at, bind_session};
use crate::state::AppState;
use serde_json::Value;

/// Removes the session when its stream is dropped (client gone or server shutting down).
struct EndSessionOnDrop {
    app: AppState,
    id: String,
}

impl Drop for EndSessionOnDrop {
    fn drop(&mut self) {
        self.app.sessions().remove(&self.id);
    }
}

/// GET `{scope}/sse`
pub async fn open(
    State(ctx): State<ScopeCtx>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate_at(&ctx.app, &ctx.scope, Endpoint::Sse, &headers, ip) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let Some(permit) = ctx.app.try_open_stream() else {
        let err = protocol::RpcError::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many open streams; try again later",
        );
        return rpc_error_response(None, &err);
    };
    let (tx, rx) = crate::mcp::session::Outbox::new(64, crate::mcp::session::OUTBOX_BYTES);
    let holder = crate::mcp::session::holder_of(&caller);
    let session = ctx
        .app
        .sessions()
        .create(&ctx.scope.path, &holder, None, Some(tx));
    bind_session(&caller, &session);
    let endpoint = format!("{}/messages?session_id={}", ctx.scope.path, session.id);
    let guard = EndSessionOnDrop {
        app: ctx.app.clone(),
        id: session.id.clone(),
    };
    let closed = session.closed.clone();
    let open = session.stream_opened();
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("endpoint").data(endpoint))
    });
    // Each reply's bytes go back to the outbox's budget once it has become an event.
    let messages = ReceiverStream::new(rx)
        .map(|(json, _bytes)| Ok(Event::default().event("message").data(json)));
    let stream = first
        .chain(messages)
        .take_until(async move { closed.cancelled().await })
        .map(move |e| {
            let _held = (&guard, &permit, &open);
            e
        });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    sse_headers(&mut resp);
    resp
}

/// POST `{scope}/messages?session_id=…`: a message for a legacy SSE session. 202; the response
/// travels on the session's stream.
pub async fn message(
    State(ctx): State<ScopeCtx>,
    ClientIp(ip): ClientIp,
    Query(q): Query<HashMap<String, String>>,
    edge_client: Option<Extension<EdgeClient>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authenticate_at(&ctx.app, &ctx.scope, Endpoint::Sse, &headers, ip) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let sid = q.get("session_id").or_else(|| q.get("sessionId"));
    let Some(session) = sid.and_then(|id| ctx.session_for(&caller, id, true)) else {
        let err = protocol::RpcError::session_not_found(
            "Not Found: unknown or ended session; open GET /sse again",
        );
        return rpc_error_response(None, &err);
    };
    let Some(outbox) = session.outbox.clone() else {
        let err = protocol::RpcError::refused(
            StatusCode::BAD_REQUEST,
            "Bad Request: this session belongs to the Streamable HTTP endpoint; POST to /mcp",
        );
        return rpc_error_response(None, &err);
    };
    if batch::is_batch(&body) {
        let era = match batch::era(session.version.get().copied()) {
            Ok(era) => era,
            Err(e) => return rpc_error_response(None, &e),
        };
        let messages = match batch::messages(&body) {
            Ok(m) => m,
            Err(e) => return rpc_error_response(None, &e),
        };
        let budget = batch::Budget::new(&ctx, edge_client);
        let answered = batch::answer(&ctx, &caller, era, messages, &budget, Some(&session)).await;
        // No request and some invalid members: the POST itself is refused, with their errors.
        if answered.status() == Some(StatusCode::BAD_REQUEST) {
            return json_body(StatusCode::BAD_REQUEST, Json::array(answered.answers));
        }
        // One event per answer (an event holds one JSON-RPC message in the SDKs' parsers),
        // each put on the stream within what is left of the request's time.
        for answer in answered.answers {
            let wait = budget.left() + Duration::from_millis(100);
            if let Some(refused) = deliver(&ctx, &session, &outbox, answer, None, wait).await {
                return refused;
            }
        }
        return (StatusCode::ACCEPTED, "Accepted").into_response();
    }
    let req = match protocol::parse(&body) {
        Ok(Incoming::Request(r)) => r,
        Ok(Incoming::Notification { method, params }) => {
            dispatch::notified(&session, &method, &params);
            return StatusCode::ACCEPTED.into_response();
        }
        Ok(Incoming::Response) => return StatusCode::ACCEPTED.into_response(),
        Err(e) => return rpc_error_response(None, &e),
    };
    if let Some(limited) = crate::edge::rate_limit::limit_tool_call(&ctx.app, &caller, &req) {
        dispatch::audit_rate_limited(&ctx.scope, &req, &caller);
        return limited;
    }
    let settled = session.version.get().copied();
    // A second `initialize` cannot change what the session settled on. Before one (a client
    // that reconnected to a fresh session), the session has the shapes of the revisions that
    // used this transport.
    let version = match settled {
        None if req.method == "initialize" => {
            dispatch::negotiated_version(&req.params, Transport::LegacySse)
        }
        settled => settled.unwrap_or(UNNAMED_VERSION),
    };
    let era = Era::Legacy(version);
    let handled = dispatch::handle_cancellable(&ctx.scope, era, &req, &caller, Some(&session));
    // A request its client cancelled gets no answer on the stream.
    let Some(handled) = handled.await else {
        return (StatusCode::ACCEPTED, "Accepted").into_response();
    };
    let reply = match handled {
        Ok(result) => {
            if req.method == "initialize" {
                let _ = session.version.set(version);
            }
            result
        }
        Err(e) => protocol::error_response(Some(&req.id), &e),
    };
    let wait = Duration::from_secs(10);
    match deliver(&ctx, &session, &outbox, reply, Some(&req.id), wait).await {
        Some(refused) => refused,
        None => (StatusCode::ACCEPTED, "Accepted").into_response(),
    }
}

/// Puts `reply` on the session's stream within `wait`: `None` when it is there, else the 404
/// to answer (and the session ends), when the client has stopped reading its stream, rather
/// than stalling the server.
async fn deliver(
    ctx: &ScopeCtx,
    session: &Session,
    outbox: &Outbox,
    reply: Json,
    id: Option<&Value>,
    wait: Duration,
) -> Option<Response> {
    match tokio::time::timeout(wait, outbox.send(reply.into_string())).await {
        Ok(Ok(())) => None,
        _ => {
            ctx.app.sessions().remove(&session.id);
            let err = RpcError::session_not_found(
                "Not Found: the session's stream is closed; open GET /sse again",
            );
            Some(rpc_error_response(id, &err))
        }
    }
}

/// POST `{scope}/sse`: one JSON-RPC request answered with JSON, no session (seed-guide style).
pub async fn plain_post(
    State(ctx): State<ScopeCtx>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authenticate_at(&ctx.app, &ctx.scope, Endpoint::Sse, &headers, ip) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let req = match protocol::parse(&body) {
        Ok(Incoming::Request(r)) => r,
        Ok(_) => return StatusCode::ACCEPTED.into_response(),
        Err(e) => return rpc_error_response(None, &e),
    };
    if let Some(limited) = crate::edge::rate_limit::limit_tool_call(&ctx.app, &caller, &req) {
        dispatch::audit_rate_limited(&ctx.scope, &req, &caller);
        return limited;
    }
    let version = if req.method == "initialize" {
        dispatch::negotiated_version(&req.params, Transport::LegacySse)
    } else {
        headers
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(protocol::known_session_version)
            .unwrap_or(UNNAMED_VERSION)
    };
    match dispatch::handle(&ctx.scope, Era::Legacy(version), &req, &caller).await {
        Ok(result) => json_body(StatusCode::OK, result),
        Err(e) => json_body(e.status, protocol::error_response(Some(&req.id), &e)),
    }
}
