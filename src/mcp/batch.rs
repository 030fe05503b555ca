//! JSON-RPC batches: an array of messages in one POST, which protocol 2025-03-26 has and no
//! later revision does. Taken on a session that settled on 2025-03-26, on either transport
//! (`streamable::post` and `sse::message`, which check the session first).
//!
//! A batch holds 1 to [`MAX_BATCH`] messages, and `initialize` may not be one of them (the
//! 2025-03-26 lifecycle). Its requests are answered in order, one after another (a batch takes
//! no more of the pool at once than a single request), and each message is checked on its own,
//! as JSON-RPC 2.0 asks: one that is not a valid message gets an error with `id: null` in its
//! place and the others still run; each `tools/call` counts against the client's rate limit
//! (over it: that call's error, and the others still run).
//!
//! The whole POST has the request timeout (`limits.request_timeout_secs`), so the batch stops
//! short of it: a request still running when its share is spent is cancelled (and audited as
//! such), and it and the requests after it are answered with [`NOT_ANSWERED`], so that the
//! client learns which ran instead of getting a 503 for all of them.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::ScopeCtx;
use super::dispatch::{self, Caller};
use super::protocol::{self, Era, Incoming, RpcError};
use crate::json::Json;

/// Most messages one batch may hold.
pub const MAX_BATCH: usize = 32;

/// The error code of a request the batch had no time left for (the code the official SDKs
/// use for a request that timed out).
pub const NOT_ANSWERED: i64 = -32001;

/// Whether a POST body is a batch (a JSON array) rather than one message.
pub fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// The messages of a batch body: a parse error (-32700) for a body that is not JSON, an
/// invalid request (-32600) for an empty batch or one over [`MAX_BATCH`].
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
    Ok(messages)
}

/// The answers to `messages`, in order: one per request and per invalid message, none for
/// notifications and responses (so an empty list means "202").
pub async fn answer(ctx: &ScopeCtx, caller: &Caller, era: Era, messages: Vec<Value>) -> Vec<Json> {
    let budget = ctx.app.edge().request_timeout;
    let deadline = Instant::now() + budget.saturating_sub(margin(budget));
    let mut answers = Vec::with_capacity(messages.len());
    let mut out_of_time = false;
    for message in messages {
        if message.is_array() {
            let err = RpcError::invalid_request("Invalid Request: a batch may not hold a batch");
            answers.push(protocol::error_response(None, &err));
            continue;
        }
        let req = match protocol::parse_value(message) {
            Ok(Incoming::Request(req)) => req,
            Ok(Incoming::Notification { .. } | Incoming::Response) => continue,
            Err(e) => {
                answers.push(protocol::error_response(None, &e));
                continue;
            }
        };
        if req.method == "initialize" {
            let err = RpcError::invalid_request(
                "Invalid Request: initialize must not be part of a JSON-RPC batch",
            );
            answers.push(protocol::error_response(Some(&req.id), &err));
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if out_of_time || left.is_zero() {
            out_of_time = true;
            answers.push(not_answered(&req.id, budget));
            continue;
        }
        if let Some((err, _secs)) =
            crate::edge::rate_limit::tool_call_refusal(&ctx.app, caller, &req)
        {
            answers.push(protocol::error_response(Some(&req.id), &err));
            continue;
        }
        let handled = tokio::time::timeout(left, dispatch::handle(&ctx.scope, era, &req, caller));
        answers.push(match handled.await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => protocol::error_response(Some(&req.id), &e),
            Err(_elapsed) => {
                out_of_time = true;
                not_answered(&req.id, budget)
            }
        });
    }
    answers
}

/// What the batch keeps back from the request timeout to write its answers: a tenth, at most
/// a second.
fn margin(budget: Duration) -> Duration {
    (budget / 10).min(Duration::from_secs(1))
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
    fn the_margin_is_a_tenth_of_the_budget_at_most_a_second() {
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(1));
    }
}
