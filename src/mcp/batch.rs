//! JSON-RPC batches: an array of messages in one POST, which protocol 2025-03-26 has and no
//! later revision does. Taken on a session that settled on 2025-03-26, on either transport
//! (`streamable::post` and `sse::message`, which check the session first).
//!
//! A batch holds 1 to [`MAX_BATCH`] messages, and `initialize` may not be one of them (the
//! 2025-03-26 lifecycle). Its requests are answered in order, one after another (a batch takes
//! no more of the pool at once than a single request, except that a SQLite query cut off at the
//! deadline runs on to its own timeout, as any cancelled query does), and each message is
//! checked on its own, as JSON-RPC 2.0 asks: one that is not a valid message gets an error in
//! its place (under its id when the id can be read, `id: null` otherwise) and the others
//! still run; each `tools/call` counts against the client's rate limit
//! (over it: that call's error, and the others still run).
//!
//! Every request past the first also costs a token of the address's per-IP bucket (the edge
//! layer charged the POST once), so a batch of 32 is not 32 requests for the price of one;
//! over it, that request's error.
//!
//! The whole POST has the request timeout (`limits.request_timeout_secs`), counted from the
//! request's arrival at the edge ([`Budget`]), so the batch stops short of it: a
//! request still running when the time is spent is cancelled (and audited as such), and it and
//! the requests after it are answered with [`NOT_ANSWERED`], so that the client learns which
//! ran instead of getting a 503 for all of them.

use std::time::{Duration, Instant};

use serde_json::Value;

use axum::extract::Extension;

use super::ScopeCtx;
use super::dispatch::{self, Caller};
use super::protocol::{self, Era, Incoming, RpcError};
use crate::edge::client_ip::ClientIp as EdgeClient;
use crate::json::Json;
use crate::ops::metrics::ToolStatus;

/// The one revision with batches.
pub const BATCH_VERSION: &str = "2025-03-26";

/// Most messages one batch may hold.
pub const MAX_BATCH: usize = 32;

/// The error code of a request the batch had no time left for (the code the official SDKs
/// use for a request that timed out).
pub const NOT_ANSWERED: i64 = -32001;

/// Whether a POST body is a batch (a JSON array) rather than one message.
pub fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// The era a batch runs in, for a session that `settled` on a revision (`None`: not yet), or
/// the 400 telling the client to send one message per POST.
pub fn era(settled: Option<&'static str>) -> Result<Era, RpcError> {
    match settled {
        Some(BATCH_VERSION) => Ok(Era::Legacy(BATCH_VERSION)),
        settled => Err(refusal(settled)),
    }
}

/// The 400 for a batch outside a 2025-03-26 session: of a session that settled on `settled`,
/// or (`None`) of one that has not sent `initialize` yet or of no session at all.
pub fn refusal(settled: Option<&str>) -> RpcError {
    let session = match settled {
        Some(v) => format!("this session uses {v}"),
        None => "send initialize first".to_string(),
    };
    RpcError::invalid_request(format!(
        "Invalid Request: JSON-RPC batches are part of protocol {BATCH_VERSION} only; \
         {session}, or send one message per POST"
    ))
}

/// The messages of a batch body, or the 400 that refuses it whole: a parse error (-32700)
/// for a body that is not JSON, an invalid request (-32600) for an empty batch, one over
/// [`MAX_BATCH`], or one that mixes responses with requests or notifications (2025-03-26: a
/// batch holds requests and/or notifications, or responses only).
pub fn messages(body: &[u8]) -> Result<Vec<Value>, RpcError> {
    let messages: Vec<Value> = serde_json::from_slice(body)
        .map_err(|e| RpcError::parse(format!("Parse error: body is not valid JSON ({e})")))?;
    if messages.is_empty() {
        return Err(RpcError::invalid_request(
            "Invalid Request: an empty JSON-RPC batch",
        ));
    }
    if messages.len() > MAX_BATCH {
        return Err(RpcError::invalid_request(format!(
            "Invalid Request: a JSON-RPC batch may hold at most {MAX_BATCH} messages (this one \
             has {}); send the rest in another POST",
            messages.len()
        )));
    }
    let sends = messages.iter().any(|m| m.get("method").is_some());
    let answers = messages.iter().any(|m| {
        m.get("method").is_none() && (m.get("result").is_some() || m.get("error").is_some())
    });
    if sends && answers {
        return Err(RpcError::invalid_request(
            "Invalid Request: a JSON-RPC batch holds requests and notifications, or responses \
             only; send the responses in a POST of their own",
        ));
    }
    Ok(messages)
}

/// The time a batch has: the request timeout from when the edge started timing the request,
/// less a margin to write the answers.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The request timeout.
    pub total: Duration,
    /// When the answers must be ready.
    pub deadline: Instant,
}

impl Budget {
    /// `client` is what the edge decided first thing for the request, with its arrival (now,
    /// for a request that did not pass the edge).
    pub fn new(ctx: &ScopeCtx, client: Option<Extension<EdgeClient>>) -> Self {
        let total = ctx.app.edge().request_timeout;
        let started = client.map_or_else(Instant::now, |Extension(c)| c.arrived);
        Self {
            total,
            deadline: started + total.saturating_sub(margin(total)),
        }
    }

    /// What is left of the budget now.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// What a batch gets back ([`answer`]).
pub struct Answers {
    /// One per request and per invalid message, in order; none for notifications and
    /// responses.
    pub answers: Vec<Json>,
    /// Whether a member was a request, valid or not, whose id the client waits on.
    pub requests: bool,
}

impl Answers {
    /// The HTTP status of the reply (MCP 2025-03-26, "Sending Messages to the Server"):
    /// `None` for 202 and no body (notifications and responses only); 200 when a request is
    /// answered; 400 when no member was a request and some were invalid, so the input could not
    /// be accepted (the body holds their errors, JSON-RPC 2.0 §6).
    pub fn status(&self) -> Option<axum::http::StatusCode> {
        use axum::http::StatusCode;
        match (self.answers.is_empty(), self.requests) {
            (true, _) => None,
            (false, true) => Some(StatusCode::OK),
            (false, false) => Some(StatusCode::BAD_REQUEST),
        }
    }
}

/// The answers to `messages` ([`Answers`]).
pub async fn answer(
    ctx: &ScopeCtx,
    caller: &Caller,
    era: Era,
    messages: Vec<Value>,
    budget: &Budget,
    session: Option<&std::sync::Arc<crate::mcp::session::Session>>,
) -> Answers {
    let mut answers = Vec::with_capacity(messages.len());
    let mut out_of_time = false;
    let mut requests = 0usize;
    let mut invalid_requests = false;
    for message in messages {
        if message.is_array() {
            let err = RpcError::invalid_request("Invalid Request: a batch may not hold a batch");
            answers.push(protocol::error_response(None, &err));
            continue;
        }
        let req = match protocol::parse_value(message) {
            Ok(Incoming::Request(req)) => req,
            Ok(Incoming::Notification { method, params }) => {
                if let Some(session) = session {
                    dispatch::notified(session, &method, &params);
                }
                continue;
            }
            Ok(Incoming::Response) => continue,
            Err(e) => {
                // An invalid request whose id could be read is answered under it.
                invalid_requests |= e.id.is_some();
                answers.push(protocol::error_response(None, &e));
                continue;
            }
        };
        requests += 1;
        if req.method == "initialize" {
            let err = RpcError::invalid_request(
                "Invalid Request: initialize must not be part of a JSON-RPC batch",
            );
            answers.push(protocol::error_response(Some(&req.id), &err));
            continue;
        }
        let left = budget.left();
        if out_of_time || left.is_zero() {
            out_of_time = true;
            let why = "not run: the batch reached the request time limit first";
            dispatch::audit_unrun(&ctx.scope, &req, caller, ToolStatus::Cancelled, why);
            answers.push(not_answered(&req.id, budget.total));
            continue;
        }
        if requests > 1
            && let Some(ip) = caller.ip
            && let Err(wait) = ctx.app.edge().check_ip(ip)
        {
            let err = RpcError::refused(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Rate limited: too many requests from this address; retry after {} s",
                    wait.secs()
                ),
            );
            let why = "rate limited: too many requests from this address";
            dispatch::audit_unrun(&ctx.scope, &req, caller, ToolStatus::Refused, why);
            answers.push(protocol::error_response(Some(&req.id), &err));
            continue;
        }
        if let Some((err, _secs)) =
            crate::edge::rate_limit::tool_call_refusal(&ctx.app, caller, &req)
        {
            dispatch::audit_rate_limited(&ctx.scope, &req, caller);
            answers.push(protocol::error_response(Some(&req.id), &err));
            continue;
        }
        let handled = dispatch::handle_cancellable(&ctx.scope, era, &req, caller, session);
        answers.push(match tokio::time::timeout(left, handled).await {
            // Cancelled by its client: no answer.
            Ok(None) => continue,
            Ok(Some(Ok(result))) => result,
            Ok(Some(Err(e))) => protocol::error_response(Some(&req.id), &e),
            Err(_elapsed) => {
                out_of_time = true;
                not_answered(&req.id, budget.total)
            }
        });
    }
    Answers {
        answers,
        requests: requests > 0 || invalid_requests,
    }
}

/// What the batch keeps back from the request timeout to write its answers: a quarter, at
/// most two seconds.
fn margin(budget: Duration) -> Duration {
    (budget / 4).min(Duration::from_secs(2))
}

fn not_answered(id: &Value, budget: Duration) -> Json {
    let err = RpcError::new(
        NOT_ANSWERED,
        format!(
            "Not answered: the batch reached the request time limit ({} s) before this request \
             finished; send it again on its own",
            budget.as_secs()
        ),
    );
    protocol::error_response(Some(id), &err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_an_array_after_any_whitespace() {
        assert!(is_batch(b" \n[{}]"));
        assert!(!is_batch(b" {\"a\": [1]}"));
        assert!(!is_batch(b""));
    }

    #[test]
    fn batch_bodies_are_checked_as_a_whole_first() {
        assert_eq!(messages(b"[1, 2").map_err(|e| e.code).err(), Some(-32700));
        assert_eq!(messages(b"[]").map_err(|e| e.code).err(), Some(-32600));
        let full = format!("[{}]", vec!["{}"; MAX_BATCH].join(","));
        assert_eq!(
            messages(full.as_bytes()).map(|m| m.len()).ok(),
            Some(MAX_BATCH)
        );
        let over = format!("[{}]", vec!["{}"; MAX_BATCH + 1].join(","));
        let err = messages(over.as_bytes()).err().map(|e| e.message);
        assert!(err.is_some_and(|m| m.contains("at most 32")));
    }

    #[test]
    fn a_batch_with_no_request_and_an_invalid_member_is_a_400() {
        use axum::http::StatusCode;
        let one = || vec![Json::no_members()];
        let status = |answers, requests| Answers { answers, requests }.status();
        assert_eq!(status(Vec::new(), false), None);
        assert_eq!(status(one(), true), Some(StatusCode::OK));
        assert_eq!(status(one(), false), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn the_margin_is_a_quarter_of_the_budget_at_most_two_seconds() {
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(2));
    }

    #[test]
    fn a_batch_may_not_mix_responses_with_requests_or_notifications() {
        let mixed =
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"result":{}}]"#;
        let err = messages(mixed).err();
        assert!(err.is_some_and(|e| e.code == -32600 && e.message.contains("responses only")));
        let notes = br#"[{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":2,"error":{}}]"#;
        assert!(messages(notes).is_err());
        let responses =
            br#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{}}]"#;
        assert_eq!(messages(responses).map(|m| m.len()).ok(), Some(2));
    }
}
