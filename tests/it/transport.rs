//! Streamable HTTP at `{scope}/mcp` with the 2025 revisions (sessions), and the HTTP-level
//! error paths every revision shares: JSON-RPC envelope errors, content type, body size,
//! Host/Origin validation, response formats.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn tools_list() -> Value {
    rpc("tools/list", json!({}))
}

#[tokio::test]
async fn a_request_without_a_session_is_refused_with_400() {
    let srv = Server::demo().await;
    let list = tools_list();
    let r = srv.post_json("/claude/mcp", &[], &list).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // The official SDKs' code for a transport refusal of a well-formed request.
    assert_eq!(r.error_code(), Some(-32000), "{}", r.text);
    assert!(r.error_message().contains("Mcp-Session-Id"), "{}", r.text);
    assert_eq!(
        r.json["id"], list["id"],
        "the refusal answers it: {}",
        r.text
    );
}

#[tokio::test]
async fn a_request_with_an_unknown_session_is_404() {
    let srv = Server::demo().await;
    let bogus = "0".repeat(64);
    let list = tools_list();
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("mcp-session-id", &bogus), ("mcp-protocol-version", V1125)],
            &list,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    // The official SDKs' code for it, answering the request (its id was readable).
    assert_eq!(r.error_code(), Some(-32001), "{}", r.text);
    assert_eq!(r.json["id"], list["id"], "{}", r.text);
}

#[tokio::test]
async fn a_deleted_session_is_404_afterwards() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let d = srv
        .delete("/claude/mcp", &[("mcp-session-id", &c.session)])
        .await;
    assert!(d.status == 200 || d.status == 204, "DELETE: {}", d.status);
    let r = c.request("tools/list", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let again = srv
        .delete("/claude/mcp", &[("mcp-session-id", &c.session)])
        .await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn a_session_cannot_be_deleted_through_another_scope() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/chatgpt", V1125).await;
    let d = srv
        .delete("/claude/mcp", &[("mcp-session-id", &c.session)])
        .await;
    assert_eq!(d.status, 404, "{}", d.text);
    assert_eq!(c.request("ping", json!({})).await.status, 200);
}

#[tokio::test]
async fn delete_without_a_session_header_is_400() {
    let srv = Server::demo().await;
    let d = srv.delete("/claude/mcp", &[]).await;
    assert_eq!(d.status, 400, "{}", d.text);
}

#[tokio::test]
async fn a_session_of_chatgpt_is_not_valid_on_claude() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/chatgpt", V1125).await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-session-id", &c.session),
                ("mcp-protocol-version", V1125),
            ],
            &tools_list(),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    // …while it still works where it was made.
    let ok = c.request("tools/list", json!({})).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[tokio::test]
async fn an_unsupported_protocol_version_header_is_400() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-session-id", &c.session),
                ("mcp-protocol-version", "1999-01-01"),
            ],
            &tools_list(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("1999-01-01"), "{}", r.text);
}

#[tokio::test]
async fn an_older_known_version_header_is_accepted_on_a_session() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    for v in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let r = srv
            .post_json(
                "/claude/mcp",
                &[("mcp-session-id", &c.session), ("mcp-protocol-version", v)],
                &tools_list(),
            )
            .await;
        assert_eq!(r.status, 200, "{v}: {}", r.text);
    }
}

#[tokio::test]
async fn a_notification_for_an_unknown_session_is_404() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("mcp-session-id", "nope"), ("mcp-protocol-version", V1125)],
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn get_without_a_session_is_405() {
    let srv = Server::demo().await;
    let r = srv
        .get("/claude/mcp", &[("accept", "text/event-stream")])
        .await;
    assert_eq!(r.status, 405, "{}", r.text);
}

#[tokio::test]
async fn get_with_an_unknown_session_is_404() {
    let srv = Server::demo().await;
    let r = srv
        .get(
            "/claude/mcp",
            &[("accept", "text/event-stream"), ("mcp-session-id", "nope")],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn malformed_json_is_a_400_parse_error_with_a_null_id() {
    let srv = Server::demo().await;
    let r = srv
        .post_raw(
            "/claude/mcp",
            &[("content-type", "application/json")],
            b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\":".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32700), "{}", r.text);
    assert_eq!(r.json["id"], Value::Null);
}

/// JSON-RPC 2.0: an invalid request whose id can be read is answered under that id, so the
/// client can match the error to its request; only an unreadable id is answered as `null`.
#[tokio::test]
async fn an_invalid_request_with_a_readable_id_is_answered_under_it() {
    let srv = Server::demo().await;
    for (body, id) in [
        (
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": [1]}),
            json!(5),
        ),
        (
            json!({"jsonrpc": "2.0", "id": "q", "method": 12}),
            json!("q"),
        ),
        (
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            Value::Null,
        ),
    ] {
        let r = srv.post_json("/claude/mcp", &[], &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32600), "{body}: {}", r.text);
        assert_eq!(r.json["id"], id, "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn a_batch_is_an_invalid_request() {
    let srv = Server::demo().await;
    let r = srv
        .post_json("/claude/mcp", &[], &json!([initialize(V1125)]))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32600), "{}", r.text);
    assert!(r.error_message().contains("batch"), "{}", r.text);
}

#[tokio::test]
async fn params_that_are_not_an_object_are_an_invalid_request() {
    let srv = Server::demo().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": [V1125]});
    let r = srv.post_json("/claude/mcp", &[], &body).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32600), "{}", r.text);
    assert!(r.error_message().contains("params"), "{}", r.text);
}

#[tokio::test]
async fn a_message_without_jsonrpc_2_0_is_an_invalid_request() {
    let srv = Server::demo().await;
    let body = json!({"id": 1, "method": "ping"});
    let r = srv.post_json("/claude/mcp", &[], &body).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32600), "{}", r.text);
}

#[tokio::test]
async fn a_non_json_content_type_is_415() {
    let srv = Server::demo().await;
    let body = serde_json::to_vec(&initialize(V1125)).unwrap();
    let r = srv
        .post_raw(
            "/claude/mcp",
            &[
                ("content-type", "text/plain"),
                ("accept", "application/json"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let srv = Server::demo().await;
    let filler = "x".repeat(1024 * 1024 + 10);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": filler}});
    let r = srv.post_json("/claude/mcp", &[], &body).await;
    assert_eq!(r.status, 413, "{}", &r.text[..r.text.len().min(200)]);
}

#[tokio::test]
async fn a_foreign_origin_is_403() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("origin", "http://evil.example.com")],
            &initialize(V1125),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.header("mcp-session-id").is_none());
}

#[tokio::test]
async fn a_foreign_host_is_403() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("host", "evil.example.com")],
            &initialize(V1125),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test]
async fn the_public_host_written_fully_qualified_is_served() {
    let srv = Server::demo_with(|c| {
        c.server.public_url = Some("https://mcp.example.com".into());
    })
    .await;
    for (host, status) in [
        ("mcp.example.com.", 200),
        ("MCP.example.com.:443", 200),
        ("mcp.example.com..", 403),
        ("mcp.example.com.evil.example.", 403),
        // Loopback names are served whatever the public URL; `localhost.` is one of them.
        ("localhost.", 200),
        ("localhost..", 403),
    ] {
        let r = srv
            .post_json("/claude/mcp", &[("host", host)], &initialize(V1125))
            .await;
        assert_eq!(r.status, status, "Host {host}: {}", r.text);
    }
}

#[tokio::test]
async fn a_foreign_origin_cannot_open_the_legacy_sse_stream() {
    let srv = Server::demo().await;
    let resp = open_stream(
        &srv.client,
        &srv.url("/claude/sse"),
        &[
            ("accept", "text/event-stream"),
            ("origin", "https://evil.example.com"),
        ],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 403);
}

#[tokio::test]
async fn localhost_host_and_origin_are_accepted() {
    let srv = Server::demo().await;
    let host = format!("localhost:{}", srv.addr.port());
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("host", &host), ("origin", "http://localhost:6274")],
            &initialize(V1125),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let own_origin = srv.base.clone();
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("origin", &own_origin)],
            &initialize(V1125),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn initialize_keeps_2025_06_18() {
    let srv = Server::demo().await;
    let r = srv.post_json("/claude/mcp", &[], &initialize(V0618)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let result = &r.json["result"];
    assert_eq!(result["protocolVersion"], V0618);
    assert_eq!(result["serverInfo"]["name"], "mssql-mcp");
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert!(result["capabilities"]["resources"].is_object(), "{result}");
}

#[tokio::test]
async fn initialize_keeps_2025_11_25() {
    let srv = Server::demo().await;
    let r = srv.post_json("/claude/mcp", &[], &initialize(V1125)).await;
    assert_eq!(r.json["result"]["protocolVersion"], V1125, "{}", r.text);
}

#[tokio::test]
async fn initialize_with_an_unknown_version_offers_2025_11_25() {
    let srv = Server::demo().await;
    for asked in ["2024-01-01", "2099-12-31", "banana"] {
        let r = srv.post_json("/claude/mcp", &[], &initialize(asked)).await;
        assert_eq!(r.status, 200, "{asked}: {}", r.text);
        assert_eq!(r.json["result"]["protocolVersion"], V1125, "{asked}");
    }
}

#[tokio::test]
async fn initialize_without_a_protocol_version_is_invalid_params() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[],
            &rpc("initialize", json!({"capabilities": {}})),
        )
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
}

#[tokio::test]
async fn session_ids_are_long_visible_ascii_and_distinct() {
    let srv = Server::demo().await;
    let a = Legacy::connect(&srv, "/claude", V1125).await.session;
    let b = Legacy::connect(&srv, "/claude", V1125).await.session;
    assert_ne!(a, b);
    for id in [&a, &b] {
        assert!(id.len() >= 32, "{id} is too short to be unguessable");
        assert!(id.bytes().all(|c| (0x21..=0x7e).contains(&c)), "{id}");
    }
}

#[tokio::test]
async fn ping_returns_an_empty_result() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/chatgpt", V0618).await;
    assert_eq!(c.result("ping", json!({})).await, json!({}));
}

#[tokio::test]
async fn an_unknown_method_in_a_session_is_method_not_found() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = c.request("tools/destroy", json!({})).await;
    assert_eq!(r.error_code(), Some(-32601), "{}", r.text);
    assert!(r.error_message().contains("tools/destroy"), "{}", r.text);
}

#[tokio::test]
async fn notifications_are_accepted_with_202() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = c
        .notify("notifications/cancelled", json!({"requestId": 7}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.text, "", "a 202 has no body");
}

#[tokio::test]
async fn a_posted_response_is_accepted_with_202() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-session-id", &c.session),
                ("mcp-protocol-version", V1125),
            ],
            &json!({"jsonrpc": "2.0", "id": 99, "result": {}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.text, "");
}

#[tokio::test]
async fn a_modern_notification_is_accepted_with_202() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "notifications/cancelled"),
            ],
            &json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
                "requestId": 1, "_meta": modern_meta()}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

/// `GET /claude/mcp`, the server-to-client stream of session `sid`, naming `version`.
async fn session_stream(srv: &Server, sid: &str, version: &str) -> reqwest::Response {
    open_stream(
        &srv.client,
        &srv.url("/claude/mcp"),
        &[
            ("accept", "text/event-stream"),
            ("mcp-session-id", sid),
            ("mcp-protocol-version", version),
        ],
    )
    .await
}

#[tokio::test]
async fn the_get_stream_of_2025_11_25_starts_with_a_priming_event() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let resp = session_stream(&srv, &c.session, V1125).await;
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut events = SseReader::new(resp);
    let first = events
        .next_event(Duration::from_secs(5))
        .await
        .expect("a priming event");
    let primed = first.id.clone().expect("a priming event has an id");
    assert!(!primed.is_empty(), "{first:?}");
    assert_eq!(first.data, "", "{first:?}");
    assert!(first.has_data, "an empty data field, not none: {first:?}");
    assert!(
        first
            .retry
            .as_deref()
            .is_some_and(|r| r.parse::<u64>().is_ok()),
        "a priming event carries a retry delay: {first:?}"
    );
    // Event ids are unique across all the streams of a session (2025-11-25, resumability):
    // a second stream of the same session is primed with another id.
    let again = session_stream(&srv, &c.session, V1125).await;
    assert_eq!(again.status().as_u16(), 200);
    let second = SseReader::new(again)
        .next_event(Duration::from_secs(5))
        .await
        .expect("a priming event on the second stream");
    let second_id = second.id.expect("a priming event has an id");
    assert_ne!(
        second_id, primed,
        "two streams of one session share an event id"
    );
}

/// 2025-06-18: an unsupported `MCP-Protocol-Version` is a 400 on every request of a session,
/// not only on JSON-RPC requests: notifications, responses, the GET stream and DELETE too; and
/// the session survives the refused DELETE.
#[tokio::test]
async fn an_unknown_version_header_is_a_400_on_every_kind_of_session_request() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let bad = [
        ("mcp-session-id", c.session.as_str()),
        ("mcp-protocol-version", "1999-01-01"),
    ];
    let notification = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 1}});
    let response = json!({"jsonrpc": "2.0", "id": 99, "result": {}});
    for body in [&notification, &response] {
        let r = srv.post_json("/claude/mcp", &bad, body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32000), "{body}: {}", r.text);
        assert!(r.error_message().contains("1999-01-01"), "{}", r.text);
    }
    let get = session_stream(&srv, &c.session, "1999-01-01").await;
    assert_eq!(get.status().as_u16(), 400);
    let delete = srv
        .client
        .delete(srv.url("/claude/mcp"))
        .header("mcp-session-id", &c.session)
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(delete.status().as_u16(), 400);
    // Still live: the same notification with the session's own revision is accepted.
    let good = [
        ("mcp-session-id", c.session.as_str()),
        ("mcp-protocol-version", V1125),
    ];
    let r = srv.post_json("/claude/mcp", &good, &notification).await;
    assert_eq!(r.status, 202, "{}", r.text);
}

/// 2026-07-28: every POST, notifications included, names the revision in
/// `MCP-Protocol-Version` (matching `_meta`) and its method in `Mcp-Method`.
#[tokio::test]
async fn a_modern_notification_with_missing_or_mismatched_headers_is_a_400() {
    let srv = Server::demo().await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
        "requestId": 1, "_meta": modern_meta()}});
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("mcp-method", "notifications/cancelled")],
            "MCP-Protocol-Version header is required",
        ),
        (
            &[("mcp-protocol-version", MODERN)],
            "Mcp-Method header is required",
        ),
        (
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "notifications/progress"),
            ],
            "Mcp-Method header value",
        ),
        (
            &[
                ("mcp-protocol-version", V1125),
                ("mcp-method", "notifications/cancelled"),
            ],
            "does not match body value",
        ),
    ];
    for (headers, says) in cases {
        let r = srv.post_json("/claude/mcp", headers, &note).await;
        assert_eq!(r.status, 400, "{headers:?}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32020), "{headers:?}: {}", r.text);
        assert!(r.error_message().contains(says), "{headers:?}: {}", r.text);
    }
}

#[tokio::test]
async fn the_get_stream_of_2025_06_18_has_no_priming_event() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0618).await;
    let resp = open_stream(
        &srv.client,
        &srv.url("/claude/mcp"),
        &[
            ("accept", "text/event-stream"),
            ("mcp-session-id", &c.session),
            ("mcp-protocol-version", V0618),
        ],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = SseReader::new(resp);
    assert_eq!(events.next_event(Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn deleting_a_session_closes_its_get_stream() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let resp = open_stream(
        &srv.client,
        &srv.url("/claude/mcp"),
        &[
            ("accept", "text/event-stream"),
            ("mcp-session-id", &c.session),
        ],
    )
    .await;
    let mut events = SseReader::new(resp);
    events
        .next_event(Duration::from_secs(5))
        .await
        .expect("priming");
    srv.delete("/claude/mcp", &[("mcp-session-id", &c.session)])
        .await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        events.next_event(Duration::from_secs(5)).await
    })
    .await;
    assert_eq!(end, Ok(None), "the stream should end with the session");
}

#[tokio::test]
async fn a_client_accepting_only_event_streams_gets_the_result_as_an_event() {
    let srv = Server::demo().await;
    let body = initialize(V1125);
    let resp = srv
        .client
        .post(srv.url("/claude/mcp"))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("mcp-session-id").is_some());
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut events = SseReader::new(resp);
    let ev = events
        .next_event(Duration::from_secs(5))
        .await
        .expect("one event");
    let msg: Value = serde_json::from_str(&ev.data).expect("JSON data");
    assert_eq!(msg["id"], body["id"]);
    assert_eq!(msg["result"]["protocolVersion"], V1125);
}

#[tokio::test]
async fn a_client_accepting_neither_json_nor_event_streams_is_406() {
    let srv = Server::demo().await;
    let r = srv
        .post_raw(
            "/claude/mcp",
            &[
                ("content-type", "application/json"),
                ("accept", "text/html"),
            ],
            serde_json::to_vec(&initialize(V1125)).unwrap(),
        )
        .await;
    assert_eq!(r.status, 406, "{}", r.text);
}

#[tokio::test]
async fn the_health_endpoint_answers() {
    let srv = Server::demo().await;
    let r = srv.get("/health", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["status"], "ok");
}

#[tokio::test]
async fn the_server_stops_when_asked() {
    let srv = Server::demo().await;
    let url = srv.url("/health");
    srv.stop().await;
    let after = client().get(url).send().await;
    assert!(after.is_err(), "the port should be closed after shutdown");
}

#[tokio::test]
async fn an_id_that_is_null_or_fractional_is_an_invalid_request() {
    let srv = Server::demo().await;
    for id in [Value::Null, json!(1.5), json!({"a": 1})] {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {"protocolVersion": V1125}});
        let r = srv.post_json("/claude/mcp", &[], &body).await;
        assert_eq!(r.status, 400, "{id}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32600), "{id}: {}", r.text);
    }
}

#[tokio::test]
async fn an_unknown_scope_is_404() {
    let srv = Server::demo().await;
    let r = srv.post_json("/nope/mcp", &[], &initialize(V1125)).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn string_ids_are_echoed() {
    let srv = Server::demo().await;
    let mut body = initialize(V1125);
    body["id"] = json!("req-é-1");
    let r = srv.post_json("/claude/mcp", &[], &body).await;
    assert_eq!(r.json["id"], "req-é-1", "{}", r.text);
}

#[tokio::test]
async fn beyond_max_sessions_the_least_recently_used_session_ends() {
    let srv = Server::demo_with(|c| c.server.max_sessions = 2).await;
    let a = Legacy::connect(&srv, "/claude", V1125).await;
    let b = Legacy::connect(&srv, "/claude", V1125).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    b.result("ping", json!({})).await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    assert_eq!(a.request("ping", json!({})).await.status, 404);
    assert_eq!(b.request("ping", json!({})).await.status, 200);
    assert_eq!(c.request("ping", json!({})).await.status, 200);
}

#[tokio::test]
async fn shutdown_ends_open_streams_promptly() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let mut mcp_stream = SseReader::new(
        open_stream(
            &srv.client,
            &srv.url("/claude/mcp"),
            &[
                ("accept", "text/event-stream"),
                ("mcp-session-id", &c.session),
            ],
        )
        .await,
    );
    mcp_stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("priming");
    let mut sse_stream = SseReader::new(
        open_stream(
            &srv.client,
            &srv.url("/claude/sse"),
            &[("accept", "text/event-stream")],
        )
        .await,
    );
    sse_stream
        .next_event(Duration::from_secs(5))
        .await
        .expect("endpoint");
    let started = std::time::Instant::now();
    srv.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert_eq!(mcp_stream.next_event(Duration::from_secs(2)).await, None);
    assert_eq!(sse_stream.next_event(Duration::from_secs(2)).await, None);
}

const V0326: &str = "2025-03-26";

/// A 2025-03-26 client on Streamable HTTP (which that revision introduced; the official SDKs
/// up to 1.12 speak only it and disconnect when offered a newer one) gets 2025-03-26, and
/// results without what that revision lacks: `title`, `outputSchema`, `structuredContent`.
#[tokio::test]
async fn initialize_keeps_2025_03_26_and_results_take_its_shapes() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0326).await;
    assert_eq!(c.version, V0326);
    let tools = c.result("tools/list", json!({})).await;
    let tools = tools["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 6, "{tools:?}");
    for t in tools {
        assert!(t.get("title").is_none(), "{t}");
        assert!(t.get("outputSchema").is_none(), "{t}");
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
    }
    let result = c
        .call_tool(
            "execute_sql",
            json!({"sql": "SELECT count(*) AS n FROM customers"}),
        )
        .await;
    assert!(result.get("structuredContent").is_none(), "{result}");
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().expect("text"))
        .expect("JSON text");
    assert_eq!(text["rows"][0]["n"], CUSTOMERS, "{result}");
}

/// Posts `body` on `c`'s session, as its client would.
async fn post_on(c: &Legacy<'_>, body: &Value) -> Resp {
    c.srv
        .post_json(&c.path(), &[("mcp-session-id", &c.session)], body)
        .await
}

/// 2025-03-26 allows JSON-RPC batches: the requests are answered in order in one array,
/// notifications get nothing, and a message that is wrong gets its own error in its place
/// without stopping the others (JSON-RPC 2.0 batch semantics).
#[tokio::test]
async fn a_2025_03_26_session_takes_a_batch_and_answers_each_request_in_order() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0326).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "x"}},
        {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "execute_sql",
            "arguments": {"sql": "SELECT count(*) AS n FROM orders"}}},
        {"jsonrpc": "1.0", "id": 8, "method": "ping"},
        {"jsonrpc": "2.0", "id": {"not": "an id"}, "method": "ping"},
        {"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {"protocolVersion": V0326,
            "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "execute_sql",
            "arguments": {"sql": "DELETE FROM orders"}}},
        {"jsonrpc": "2.0", "id": 11, "method": "no/such/method"}
    ]);
    let r = post_on(&c, &batch).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let answers = r.json.as_array().expect("an array of responses");
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(
        ids,
        [
            &json!("a"),
            &json!(7),
            &json!(8),
            &Value::Null,
            &json!(9),
            &json!(10),
            &json!(11)
        ],
        "{}",
        r.text
    );
    assert_eq!(
        answers[0]["result"]["tools"].as_array().map(Vec::len),
        Some(6)
    );
    let counted: Value = serde_json::from_str(
        answers[1]["result"]["content"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("JSON text");
    assert!(
        counted["rows"][0]["n"].as_i64().is_some_and(|n| n > 0),
        "{counted}"
    );
    // An invalid message is answered under its id when the id is readable, `null` otherwise.
    assert_eq!(answers[2]["error"]["code"], -32600, "{}", r.text);
    assert_eq!(answers[3]["error"]["code"], -32600, "{}", r.text);
    assert_eq!(answers[4]["error"]["code"], -32600, "{}", r.text);
    assert!(
        answers[4]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("initialize must not be part of a JSON-RPC batch")),
        "{}",
        r.text
    );
    assert_eq!(answers[5]["result"]["isError"], true, "{}", r.text);
    assert_eq!(answers[6]["error"]["code"], -32601, "{}", r.text);
    // The session is still the one it was: a single request after the batch works.
    assert_eq!(c.result("ping", json!({})).await, json!({}));
}

/// A batch of notifications only, or of responses only, has nothing to answer: 202. Mixing
/// the two is not a batch 2025-03-26 allows: 400.
#[tokio::test]
async fn a_batch_of_notifications_or_of_responses_is_202_and_a_mix_is_refused() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0326).await;
    for batch in [
        json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}]),
        json!([{"jsonrpc": "2.0", "id": 5, "result": {}}, {"jsonrpc": "2.0", "id": 6,
            "error": {"code": -1, "message": "no"}}]),
    ] {
        let r = post_on(&c, &batch).await;
        assert_eq!(r.status, 202, "{batch}: {}", r.text);
        assert!(r.text.is_empty(), "{}", r.text);
    }
    let mixed = json!([
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
        {"jsonrpc": "2.0", "id": 5, "result": {}}
    ]);
    let r = post_on(&c, &mixed).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("responses only"), "{}", r.text);
}

/// A client that accepts only event streams gets each answer as an event of its own.
#[tokio::test]
async fn a_batch_answered_as_an_event_stream_has_one_event_per_answer() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0326).await;
    let body = json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                      {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]);
    let r = srv
        .post_raw(
            &c.path(),
            &[
                ("mcp-session-id", &c.session),
                ("content-type", "application/json"),
                ("accept", "text/event-stream"),
            ],
            serde_json::to_vec(&body).expect("JSON"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let data: Vec<Value> = r
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).expect("JSON event"))
        .collect();
    assert_eq!(data.len(), 2, "{}", r.text);
    assert_eq!(data[0]["id"], 1);
    assert_eq!(data[1]["id"], 2);
    assert!(data[1]["result"]["tools"].is_array(), "{}", r.text);
}

#[tokio::test]
async fn an_empty_or_oversized_batch_is_refused_and_runs_nothing() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0326).await;
    let r = post_on(&c, &json!([])).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32600), "{}", r.text);
    assert!(r.error_message().contains("empty"), "{}", r.text);

    // 33 tool calls: refused as a whole, so none of them runs (none is counted).
    let big: Vec<Value> = (0..33)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
            "name": "execute_sql", "arguments": {"sql": "SELECT 1 AS one"}}})
        })
        .collect();
    let r = post_on(&c, &Value::Array(big)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("at most 32"), "{}", r.text);
    let metrics = srv.get("/metrics", &[]).await.text;
    assert!(
        metrics.contains(
            r#"mssql_mcp_tool_calls_total{scope="/claude",status="ok",tool="execute_sql"} 0"#
        ),
        "a refused batch ran a tool call:\n{metrics}"
    );
    let r = srv
        .post_raw(
            &c.path(),
            &[("mcp-session-id", &c.session)],
            b"[{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"ping\"},".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32700), "{}", r.text);
    // What the single-message path answers 406, a batch does too.
    let r = srv
        .post_raw(
            &c.path(),
            &[("mcp-session-id", &c.session), ("accept", "text/html")],
            b"[{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"ping\"}]".to_vec(),
        )
        .await;
    assert_eq!(r.status, 406, "{}", r.text);
}

/// Later revisions removed batches: a session of one of them is told so, with its revision.
#[tokio::test]
async fn a_batch_on_a_later_session_is_refused_naming_its_revision() {
    let srv = Server::demo().await;
    for v in [V0618, V1125] {
        let c = Legacy::connect(&srv, "/claude", v).await;
        let r = post_on(&c, &json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])).await;
        assert_eq!(r.status, 400, "{v}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32600), "{v}: {}", r.text);
        assert!(
            r.error_message().contains("2025-03-26 only") && r.error_message().contains(v),
            "{v}: {}",
            r.text
        );
    }
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("mcp-session-id", "no-such-session")],
            &json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

/// A batch with no request but with invalid members cannot be accepted: 400, and the body is
/// the members' errors (JSON-RPC 2.0 §6; MCP 2025-03-26, input of notifications or responses
/// only that the server cannot accept). With a request in it, it is answered as before.
#[tokio::test]
async fn a_batch_with_no_request_and_invalid_members_is_a_400_with_their_errors() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0326).await;
    for batch in [
        json!([1, 2]),
        json!([{"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}, 5]),
        json!([{"jsonrpc": "2.0", "id": 1, "result": {}}, {"foo": "boo"}]),
    ] {
        let r = post_on(&c, &batch).await;
        assert_eq!(r.status, 400, "{batch}: {}", r.text);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let errors = r.json.as_array().expect("an array of errors");
        assert!(!errors.is_empty(), "{batch}: {}", r.text);
        for e in errors {
            assert_eq!(e["error"]["code"], -32600, "{batch}: {}", r.text);
            assert_eq!(e["id"], Value::Null, "{batch}: {}", r.text);
        }
    }
    // An invalid request whose id is readable is one the client waits for: 200, its error
    // under its id.
    let r = post_on(
        &c,
        &json!([{"jsonrpc": "1.0", "id": 5, "method": "ping"}, 7]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json[0]["id"], 5, "{}", r.text);
}

/// A body that is not JSON is a parse error (-32700) first, whatever the session or its
/// revision: JSON-RPC answers it with one response object.
#[tokio::test]
async fn a_batch_that_is_not_json_is_a_parse_error_on_any_session() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    for headers in [
        vec![("content-type", "application/json")],
        vec![
            ("content-type", "application/json"),
            ("mcp-session-id", c.session.as_str()),
        ],
    ] {
        let r = srv
            .post_raw(
                "/claude/mcp",
                &headers,
                b"[{\"jsonrpc\":\"2.0\",\"method\"".to_vec(),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.error_code(), Some(-32700), "{}", r.text);
        assert_eq!(r.json["id"], Value::Null, "{}", r.text);
    }
}

/// `MCP-Protocol-Version` is checked on a notification without a session too, and a value
/// that is not text is unsupported, not absent (2025-06-18: an invalid or unsupported value
/// is a 400).
#[tokio::test]
async fn an_unsupported_or_unreadable_version_header_is_a_400_with_or_without_a_session() {
    let srv = Server::demo().await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("mcp-protocol-version", "1999-01-01")],
            &note,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.error_message().contains("1999-01-01"), "{}", r.text);
    let ok = srv
        .post_json("/claude/mcp", &[("mcp-protocol-version", V0618)], &note)
        .await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let not_text = reqwest::header::HeaderValue::from_bytes(b"2025-06-18\xff").expect("value");
    let r = srv
        .client
        .post(srv.url("/claude/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &c.session)
        .header("mcp-protocol-version", not_text)
        .body(serde_json::to_vec(&tools_list()).expect("json"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status().as_u16(), 400);
}

/// `Accept` is read as RFC 9110 has it: media types without case, `text/*`, every `Accept`
/// line, and a range given `q=0` refused.
#[tokio::test]
async fn the_get_stream_reads_accept_as_http_does() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0618).await;
    let open = |accept: Vec<&'static str>| {
        let mut req = srv
            .client
            .get(srv.url("/claude/mcp"))
            .header("mcp-session-id", &c.session)
            .header("mcp-protocol-version", V0618);
        for a in accept {
            req = req.header("accept", a);
        }
        async move { req.send().await.expect("GET").status().as_u16() }
    };
    assert_eq!(open(vec!["Text/Event-Stream"]).await, 200);
    assert_eq!(open(vec!["text/*"]).await, 200);
    assert_eq!(
        open(vec!["application/json", "text/event-stream"]).await,
        200
    );
    assert_eq!(
        open(vec!["text/event-stream;q=0, application/json"]).await,
        406
    );
    assert_eq!(open(vec!["application/json"]).await, 406);
}

/// A GET without a session is a 405 that lists every method the endpoint serves.
#[tokio::test]
async fn a_405_lists_the_methods_of_the_endpoint() {
    let srv = Server::demo().await;
    let r = srv
        .get("/claude/mcp", &[("accept", "text/event-stream")])
        .await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.header("allow"), Some("GET, POST, DELETE"));
}

/// An error with an HTTP status of its own goes back as JSON even to a client that accepts
/// only event streams: a client reads a 4xx body as JSON.
#[tokio::test]
async fn a_4xx_error_is_json_even_for_an_event_stream_client() {
    let srv = Server::demo().await;
    let mut params = json!({});
    params["_meta"] = modern_meta();
    let r = srv
        .post_raw(
            "/claude/mcp",
            &[
                ("content-type", "application/json"),
                ("accept", "text/event-stream"),
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "nope/nope"),
            ],
            serde_json::to_vec(&rpc("nope/nope", params)).expect("json"),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.error_code(), Some(-32601), "{}", r.text);
}

/// `notifications/cancelled` stops the request it names: a query that would run to its 20 s
/// timeout ends at once, the POST is answered (a client that takes only JSON must get
/// something: -32800, which it no longer waits for; one that takes event streams gets a stream
/// with no answer), and the call is counted as cancelled. The session goes on.
#[tokio::test]
async fn a_cancelled_request_stops_and_its_post_ends() {
    let toml = config_toml(
        "query_timeout_secs = 20",
        "[[scope]]\npath = \"/t\"\ndatabase = \"demo\"\nprofile = \"full\"\n",
    );
    let srv = Server::with_config(&toml).await;
    let c = Legacy::connect(&srv, "/t", V1125).await;
    let forever =
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r";
    let call = rpc(
        "tools/call",
        json!({"name": "execute_sql", "arguments": {"sql": forever}}),
    );
    let id = call["id"].clone();
    let started = Instant::now();
    let json_only = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("mcp-session-id", c.session.as_str()),
        ("mcp-protocol-version", V1125),
    ];
    let body = serde_json::to_vec(&call).expect("json");
    let slow = srv.post_raw("/t/mcp", &json_only, body);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.notify(
            "notifications/cancelled",
            json!({"requestId": id, "reason": "the user stopped it"}),
        )
        .await
    };
    let (r, n) = tokio::join!(slow, cancel);
    let took = started.elapsed();
    assert_eq!(n.status, 202, "{}", n.text);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32800), "{}", r.text);
    assert_eq!(r.json["id"], id, "{}", r.text);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let metrics = srv.get("/metrics", &[]).await.text;
    assert!(
        metrics.contains(
            r#"mssql_mcp_tool_calls_total{scope="/t",status="cancelled",tool="execute_sql"} 1"#
        ),
        "{metrics}"
    );
    // The query itself stopped: its connection is back in the pool well before its timeout.
    let idle_again = async {
        loop {
            let m = srv.get("/metrics", &[]).await.text;
            if m.contains(r#"mssql_mcp_db_pool_connections_in_use{database="demo"} 0"#) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let stopped = tokio::time::timeout(Duration::from_secs(5), idle_again).await;
    assert!(
        stopped.is_ok(),
        "the cancelled query still holds its connection"
    );
    // A client that takes event streams gets a stream that ends with no answer.
    let call = rpc(
        "tools/call",
        json!({"name": "execute_sql", "arguments": {"sql": forever}}),
    );
    let id = call["id"].clone();
    let stream_only = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-session-id", c.session.as_str()),
        ("mcp-protocol-version", V1125),
    ];
    let slow = srv.post_raw(
        "/t/mcp",
        &stream_only,
        serde_json::to_vec(&call).expect("json"),
    );
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.notify("notifications/cancelled", json!({"requestId": id}))
            .await
    };
    let (r, _) = tokio::join!(slow, cancel);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("data:"), "no answer: {}", r.text);
    assert_eq!(c.result("ping", json!({})).await, json!({}));
}

/// CORS: a request without `Origin` (ChatGPT's and Claude's servers) gets no CORS headers at
/// all; without authentication a loopback page gets no CORS answer (any local program's page
/// could otherwise read the database through the browser), while an origin the operator
/// listed in `server.allowed_origins` does.
#[tokio::test]
async fn cors_answers_only_browsers_of_origins_that_may_read() {
    let toml = config_toml(
        "",
        "[[scope]]\npath = \"/t\"\ndatabase = \"demo\"\nprofile = \"full\"\n",
    )
    .replace(
        "[server]\n",
        "[server]\nallowed_origins = [\"https://app.example.com\"]\n",
    );
    let srv = Server::with_config(&toml).await;
    let plain = srv.post_json("/t/mcp", &[], &initialize(V1125)).await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    for h in [
        "vary",
        "access-control-allow-origin",
        "access-control-expose-headers",
    ] {
        assert!(
            plain.header(h).is_none(),
            "{h} without Origin: {:?}",
            plain.headers
        );
    }
    let preflight = |origin: &'static str| {
        srv.client
            .request(reqwest::Method::OPTIONS, srv.url("/t/mcp"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,mcp-protocol-version",
            )
            .send()
    };
    let local = preflight("http://localhost:5173").await.expect("preflight");
    assert!(
        local.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        local.headers()
    );
    let listed = preflight("https://app.example.com")
        .await
        .expect("preflight");
    assert_eq!(
        listed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
}
