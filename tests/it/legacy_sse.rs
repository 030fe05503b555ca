//! The older HTTP+SSE transport at `{scope}/sse`: an `endpoint` event, POSTs to the message URL
//! answered on the stream, and the seed guide's plain JSON-RPC POST to `{scope}/sse`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// An open legacy stream and the message URL its `endpoint` event named.
struct SseSession {
    events: SseReader,
    endpoint: String,
}

async fn open(srv: &Server, scope: &str) -> SseSession {
    let resp = open_stream(
        &srv.client,
        &srv.url(&format!("{scope}/sse")),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = SseReader::new(resp);
    let first = events
        .next_event(Duration::from_secs(5))
        .await
        .expect("an endpoint event");
    assert_eq!(first.event.as_deref(), Some("endpoint"), "{first:?}");
    SseSession {
        events,
        endpoint: first.data,
    }
}

impl SseSession {
    /// POSTs `msg` to the message URL (expects 202) and reads its response from the stream.
    async fn round_trip(&mut self, srv: &Server, msg: &Value) -> Value {
        let r = srv.post_json(&self.endpoint, &[], msg).await;
        assert_eq!(r.status, 202, "{}", r.text);
        let ev = self
            .events
            .next_event(Duration::from_secs(10))
            .await
            .expect("a response on the stream");
        assert_eq!(ev.event.as_deref(), Some("message"), "{ev:?}");
        let reply: Value = serde_json::from_str(&ev.data).expect("JSON message");
        assert_eq!(reply["id"], msg["id"], "{reply}");
        reply
    }
}

#[tokio::test]
async fn posting_to_messages_with_an_unknown_session_is_404() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/messages?session_id=doesnotexist",
            &[],
            &initialize(V0618),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn posting_to_messages_without_a_session_is_404() {
    let srv = Server::demo().await;
    let r = srv
        .post_json("/claude/messages", &[], &initialize(V0618))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn a_legacy_session_is_not_valid_in_another_scope() {
    let srv = Server::demo().await;
    let s = open(&srv, "/claude").await;
    let other = s.endpoint.replacen("/claude/", "/chatgpt/", 1);
    let r = srv.post_json(&other, &[], &initialize(V0618)).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn a_streamable_http_session_cannot_post_to_the_legacy_message_url() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = srv
        .post_json(
            &format!("/claude/messages?session_id={}", c.session),
            &[],
            &rpc("tools/list", json!({})),
        )
        .await;
    assert!(
        r.status == 400 || r.status == 404,
        "{}: {}",
        r.status,
        r.text
    );
}

#[tokio::test]
async fn malformed_json_to_the_message_url_is_a_parse_error() {
    let srv = Server::demo().await;
    let s = open(&srv, "/claude").await;
    let r = srv
        .post_raw(
            &s.endpoint,
            &[("content-type", "application/json")],
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32700), "{}", r.text);
}

#[tokio::test]
async fn closing_the_stream_ends_its_session() {
    let srv = Server::demo().await;
    let s = open(&srv, "/claude").await;
    let endpoint = s.endpoint.clone();
    drop(s);
    let mut status = 0;
    for _ in 0..20 {
        status = srv
            .post_json(&endpoint, &[], &rpc("ping", json!({})))
            .await
            .status;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 404, "the session outlived its stream");
}

#[tokio::test]
async fn the_stream_opens_with_an_endpoint_event_naming_the_message_url() {
    let srv = Server::demo().await;
    let s = open(&srv, "/claude").await;
    assert!(
        s.endpoint.starts_with("/claude/messages?session_id="),
        "{}",
        s.endpoint
    );
    let id = s.endpoint.rsplit('=').next().unwrap_or("");
    assert!(id.len() >= 32, "{id}");
}

#[tokio::test]
async fn initialize_and_tools_call_are_answered_on_the_stream() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/claude").await;
    let init = s.round_trip(&srv, &initialize(V0618)).await;
    assert_eq!(init["result"]["protocolVersion"], V0618, "{init}");
    let n = srv
        .post_json(
            &s.endpoint,
            &[],
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    assert_eq!(n.status, 202);
    let call = rpc(
        "tools/call",
        json!({"name": "execute_sql", "arguments": {"sql": "SELECT count(*) AS n FROM customers"}}),
    );
    let reply = s.round_trip(&srv, &call).await;
    assert_eq!(
        reply["result"]["structuredContent"]["rows"][0]["n"], CUSTOMERS,
        "{reply}"
    );
}

#[tokio::test]
async fn search_then_fetch_works_over_the_legacy_stream() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/chatgpt").await;
    s.round_trip(&srv, &initialize(V1125)).await;
    let found = s
        .round_trip(
            &srv,
            &rpc(
                "tools/call",
                json!({"name": "search", "arguments": {"query": "invoice"}}),
            ),
        )
        .await;
    let id = found["result"]["structuredContent"]["results"][0]["id"]
        .as_str()
        .expect("a result")
        .to_string();
    let fetched = s
        .round_trip(
            &srv,
            &rpc(
                "tools/call",
                json!({"name": "fetch", "arguments": {"id": id}}),
            ),
        )
        .await;
    assert_eq!(fetched["result"]["structuredContent"]["id"], id.as_str());
}

#[tokio::test]
async fn errors_travel_on_the_stream_too() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/claude").await;
    let reply = s.round_trip(&srv, &rpc("no/such/method", json!({}))).await;
    assert_eq!(reply["error"]["code"], -32601, "{reply}");
}

#[tokio::test]
async fn a_plain_json_rpc_post_to_sse_is_answered_with_json() {
    let srv = Server::demo().await;
    let r = srv
        .post_json("/claude/sse", &[], &rpc("tools/list", json!({})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let names: Vec<&str> = r.json["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"execute_sql"), "{names:?}");
}

#[tokio::test]
async fn a_plain_post_to_sse_can_call_a_tool() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/chatgpt/sse",
            &[],
            &rpc(
                "tools/call",
                json!({"name": "fetch", "arguments": {"id": "main.customers/1"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["result"]["structuredContent"]["metadata"]["values"]["customer_id"],
        1
    );
}

#[tokio::test]
async fn an_oversized_body_to_the_plain_sse_endpoint_is_413() {
    let srv = Server::demo().await;
    let filler = "x".repeat(1024 * 1024 + 10);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": filler}});
    let r = srv.post_json("/claude/sse", &[], &body).await;
    assert_eq!(r.status, 413);
}

/// A legacy HTTP+SSE session is valid only on its own endpoints: its id on the Streamable
/// HTTP endpoint is an unknown session there (POST, GET and DELETE), and the legacy stream
/// lives on.
#[tokio::test]
async fn a_legacy_session_id_is_unknown_on_the_streamable_endpoint() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/claude").await;
    let sid = s
        .endpoint
        .split("session_id=")
        .nth(1)
        .expect("session id in the endpoint")
        .to_string();
    let headers = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", V1125),
    ];
    let r = srv
        .post_json(
            "/claude/mcp",
            &headers,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = srv
        .get(
            "/claude/mcp",
            &[("accept", "text/event-stream"), headers[0], headers[1]],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = srv.delete("/claude/mcp", &headers).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let reply = s.round_trip(&srv, &initialize(V0618)).await;
    assert!(reply["result"]["serverInfo"].is_object(), "{reply}");
}
