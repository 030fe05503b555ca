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
    // Without `MCP-Protocol-Version` the shapes are 2025-03-26's: the JSON is the text content.
    let doc: Value = serde_json::from_str(
        r.json["result"]["content"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("JSON text");
    assert_eq!(doc["metadata"]["values"]["customer_id"], 1, "{}", r.text);
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

/// The members each object may have in a revision's schema
/// (`schema/<revision>/schema.json` of modelcontextprotocol/modelcontextprotocol): 2024-11-05
/// and 2025-03-26 differ only in `Tool.annotations`.
struct Schema {
    version: &'static str,
    initialize_result: &'static [&'static str],
    implementation: &'static [&'static str],
    tool: &'static [&'static str],
    call_tool_result: &'static [&'static str],
    text_content: &'static [&'static str],
    resource: &'static [&'static str],
    prompt: &'static [&'static str],
}

const V20241105: Schema = Schema {
    version: "2024-11-05",
    initialize_result: &[
        "_meta",
        "capabilities",
        "instructions",
        "protocolVersion",
        "serverInfo",
    ],
    implementation: &["name", "version"],
    tool: &["description", "inputSchema", "name"],
    call_tool_result: &["_meta", "content", "isError"],
    text_content: &["annotations", "text", "type"],
    resource: &[
        "annotations",
        "description",
        "mimeType",
        "name",
        "size",
        "uri",
    ],
    prompt: &["arguments", "description", "name"],
};

const V20250326: Schema = Schema {
    version: "2025-03-26",
    tool: &["annotations", "description", "inputSchema", "name"],
    ..V20241105
};

/// Asserts that `v` is an object with only members `allowed` names.
fn only_members(what: &str, v: &Value, allowed: &[&str]) {
    let members = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"));
    for key in members.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{what} has `{key}`, which its revision does not: {v}"
        );
    }
}

/// A client of the HTTP+SSE transport that speaks only `schema.version`: `initialize` settles
/// on its revision, and everything it then gets is valid in that revision.
async fn an_older_client_gets_its_revision_on_the_legacy_stream(schema: &Schema) {
    let v = schema.version;
    let srv = Server::demo().await;
    let mut s = open(&srv, "/claude").await;
    let init = s.round_trip(&srv, &initialize(v)).await;
    assert_eq!(init["result"]["protocolVersion"], v, "{init}");
    only_members(
        "InitializeResult",
        &init["result"],
        schema.initialize_result,
    );
    only_members(
        "serverInfo",
        &init["result"]["serverInfo"],
        schema.implementation,
    );
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    let n = srv
        .post_json(
            &s.endpoint,
            &[],
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    assert_eq!(n.status, 202);

    let listed = s.round_trip(&srv, &rpc("tools/list", json!({}))).await;
    let tools = listed["result"]["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 6, "{listed}");
    for t in tools {
        only_members("Tool", t, schema.tool);
    }
    let annotated = tools
        .iter()
        .all(|t| t["annotations"]["readOnlyHint"] == true);
    assert_eq!(annotated, schema.tool.contains(&"annotations"), "{listed}");

    let call = rpc(
        "tools/call",
        json!({"name": "execute_sql", "arguments": {"sql": "SELECT count(*) AS n FROM customers"}}),
    );
    let reply = s.round_trip(&srv, &call).await;
    let result = &reply["result"];
    only_members("CallToolResult", result, schema.call_tool_result);
    assert_eq!(result["isError"], false, "{reply}");
    let content = result["content"].as_array().expect("content");
    assert_eq!(content.len(), 1, "{reply}");
    only_members("TextContent", &content[0], schema.text_content);
    assert_eq!(content[0]["type"], "text");
    let rows: Value =
        serde_json::from_str(content[0]["text"].as_str().expect("text")).expect("JSON text");
    assert_eq!(rows["rows"][0]["n"], CUSTOMERS, "{reply}");

    let refused = s
        .round_trip(
            &srv,
            &rpc(
                "tools/call",
                json!({"name": "execute_sql", "arguments": {"sql": "DELETE FROM customers"}}),
            ),
        )
        .await;
    only_members(
        "CallToolResult",
        &refused["result"],
        schema.call_tool_result,
    );
    assert_eq!(refused["result"]["isError"], true, "{refused}");

    let resources = s.round_trip(&srv, &rpc("resources/list", json!({}))).await;
    let resources = resources["result"]["resources"]
        .as_array()
        .expect("resources");
    assert!(!resources.is_empty());
    for r in resources {
        only_members("Resource", r, schema.resource);
    }
    let prompts = s.round_trip(&srv, &rpc("prompts/list", json!({}))).await;
    for p in prompts["result"]["prompts"].as_array().expect("prompts") {
        only_members("Prompt", p, schema.prompt);
    }
}

#[tokio::test]
async fn a_2024_11_05_client_gets_2024_11_05_and_results_of_that_revision() {
    an_older_client_gets_its_revision_on_the_legacy_stream(&V20241105).await;
}

#[tokio::test]
async fn a_2025_03_26_client_gets_2025_03_26_and_results_of_that_revision() {
    an_older_client_gets_its_revision_on_the_legacy_stream(&V20250326).await;
}

/// `search` then `fetch`, as ChatGPT's older connectors do over `/sse`, on a 2024-11-05
/// session: the results are the JSON text alone.
#[tokio::test]
async fn search_then_fetch_work_for_a_2024_11_05_client() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/chatgpt").await;
    let init = s.round_trip(&srv, &initialize("2024-11-05")).await;
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05", "{init}");
    let text_of = |reply: &Value| -> Value {
        only_members(
            "CallToolResult",
            &reply["result"],
            V20241105.call_tool_result,
        );
        serde_json::from_str(
            reply["result"]["content"][0]["text"]
                .as_str()
                .expect("text content"),
        )
        .expect("JSON text")
    };
    let found = s
        .round_trip(
            &srv,
            &rpc(
                "tools/call",
                json!({"name": "search", "arguments": {"query": "invoice"}}),
            ),
        )
        .await;
    let id = text_of(&found)["results"][0]["id"]
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
    assert_eq!(text_of(&fetched)["id"], id.as_str(), "{fetched}");
}

/// Streamable HTTP keeps its own revisions: a client asking it for 2024-11-05 (which had no
/// Streamable HTTP) is offered the latest session revision, as before.
#[tokio::test]
async fn the_streamable_endpoint_still_offers_its_latest_session_revision_for_2024_11_05() {
    let srv = Server::demo().await;
    let r = srv
        .post_json("/claude/mcp", &[], &initialize("2024-11-05"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["protocolVersion"], V1125, "{}", r.text);
    assert_eq!(r.json["result"]["serverInfo"]["title"], "mssql-mcp");
}

/// A plain POST to `/sse` has no session: `initialize` answers the client's revision, and each
/// request's results take the shapes of the revision its `MCP-Protocol-Version` names.
#[tokio::test]
async fn a_plain_post_to_sse_takes_the_shapes_of_its_version_header() {
    let srv = Server::demo().await;
    let r = srv
        .post_json("/claude/sse", &[], &initialize("2024-11-05"))
        .await;
    assert_eq!(
        r.json["result"]["protocolVersion"], "2024-11-05",
        "{}",
        r.text
    );
    let call = rpc(
        "tools/call",
        json!({"name": "execute_sql", "arguments": {"sql": "SELECT 1 AS one"}}),
    );
    let old = srv
        .post_json(
            "/claude/sse",
            &[("mcp-protocol-version", "2024-11-05")],
            &call,
        )
        .await;
    assert_eq!(old.status, 200, "{}", old.text);
    only_members(
        "CallToolResult",
        &old.json["result"],
        V20241105.call_tool_result,
    );
    let current = srv
        .post_json(
            "/claude/sse",
            &[("mcp-protocol-version", "2025-11-25")],
            &call,
        )
        .await;
    assert_eq!(
        current.json["result"]["structuredContent"]["rows"][0]["one"], 1,
        "{}",
        current.text
    );
    // No header: 2025-03-26, the default of a missing header (older clients send none).
    let bare = srv.post_json("/claude/sse", &[], &call).await;
    assert_eq!(bare.status, 200, "{}", bare.text);
    only_members(
        "CallToolResult",
        &bare.json["result"],
        V20250326.call_tool_result,
    );
    let listed = srv
        .post_json("/claude/sse", &[], &rpc("tools/list", json!({})))
        .await;
    for t in listed.json["result"]["tools"].as_array().expect("tools") {
        only_members("Tool", t, V20250326.tool);
    }
}

/// A request on a legacy session before `initialize` (a client whose stream reconnected to a
/// fresh session) gets the shapes of the revisions that used this transport, not the newest's.
#[tokio::test]
async fn a_legacy_session_before_initialize_gets_2025_03_26_shapes() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/claude").await;
    let listed = s.round_trip(&srv, &rpc("tools/list", json!({}))).await;
    let tools = listed["result"]["tools"].as_array().expect("tools");
    assert!(!tools.is_empty(), "{listed}");
    for t in tools {
        only_members("Tool", t, V20250326.tool);
    }
}

/// 2025-03-26 has JSON-RPC batches whatever the transport: on a 2025-03-26 session of the
/// HTTP+SSE transport a batch POSTed to the message URL is accepted (202) and its answers
/// travel on the stream in order, one event each (the SDKs parse an event as one message).
#[tokio::test]
async fn a_2025_03_26_session_on_the_legacy_stream_takes_a_batch() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/claude").await;
    let init = s.round_trip(&srv, &initialize("2025-03-26")).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-03-26", "{init}");
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute_sql",
            "arguments": {"sql": "SELECT count(*) AS n FROM customers"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        [{"jsonrpc": "2.0", "id": 9, "method": "ping"}],
        {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    ]);
    let r = srv.post_json(&s.endpoint, &[], &batch).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let ev = s
            .events
            .next_event(Duration::from_secs(10))
            .await
            .expect("an answer on the stream");
        assert_eq!(ev.event.as_deref(), Some("message"), "{ev:?}");
        let answer: Value = serde_json::from_str(&ev.data).expect("JSON");
        assert!(answer.is_object(), "one message per event: {answer}");
        answers.push(answer);
    }
    assert_eq!(answers[0]["id"], 1);
    let rows: Value = serde_json::from_str(
        answers[0]["result"]["content"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("JSON text");
    assert_eq!(rows["rows"][0]["n"], CUSTOMERS);
    assert_eq!(answers[1]["id"], Value::Null);
    assert!(
        answers[1]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("a batch may not hold a batch")),
        "{answers:?}"
    );
    assert_eq!(answers[2]["id"], 2);
    assert_eq!(answers[2]["result"], json!({}));
    // No request and an invalid member: the POST is refused with the errors, nothing goes
    // on the stream, and the session goes on.
    let bad = json!([{"jsonrpc": "2.0", "method": "notifications/initialized"}, 5]);
    let r = srv.post_json(&s.endpoint, &[], &bad).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.json[0]["error"]["code"], -32600, "{}", r.text);
    let pong = s.round_trip(&srv, &rpc("ping", json!({}))).await;
    assert_eq!(pong["result"], json!({}), "{pong}");
}

/// 2024-11-05 has no batches, and a session that has not settled on a revision has none yet.
#[tokio::test]
async fn a_batch_on_a_2024_11_05_or_unsettled_legacy_session_is_refused() {
    let srv = Server::demo().await;
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]);
    let s = open(&srv, "/claude").await;
    let r = srv.post_json(&s.endpoint, &[], &batch).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.error_message().contains("send initialize first"),
        "{}",
        r.text
    );
    let mut s = open(&srv, "/claude").await;
    s.round_trip(&srv, &initialize("2024-11-05")).await;
    let r = srv.post_json(&s.endpoint, &[], &batch).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.error_message().contains("2025-03-26 only") && r.error_message().contains("2024-11-05"),
        "{}",
        r.text
    );
}

/// On the legacy transport too, `notifications/cancelled` stops the request it names: its
/// POST ends at once and no answer goes on the stream; the next request's answer is the next
/// event.
#[tokio::test]
async fn a_cancelled_request_gets_no_answer_on_the_stream() {
    let srv = Server::demo().await;
    let mut s = open(&srv, "/claude").await;
    s.round_trip(&srv, &initialize("2024-11-05")).await;
    let forever =
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r";
    let call = rpc(
        "tools/call",
        json!({"name": "execute_sql", "arguments": {"sql": forever}}),
    );
    let started = std::time::Instant::now();
    let slow = srv.post_json(&s.endpoint, &[], &call);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": call["id"]}});
        srv.post_json(&s.endpoint, &[], &note).await
    };
    let (r, n) = tokio::join!(slow, cancel);
    assert_eq!((r.status, n.status), (202, 202), "{} {}", r.text, n.text);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pong = s.round_trip(&srv, &rpc("ping", json!({}))).await;
    assert_eq!(pong["result"], json!({}), "{pong}");
}
