//! Protocol 2026-07-28 on `{scope}/mcp`: stateless requests whose headers must agree with the
//! body, `server/discover`, and the result fields the revision adds.

use serde_json::{Value, json};

use crate::support::*;

/// A modern request body with `_meta`.
fn modern_body(method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = modern_meta();
    rpc(method, params)
}

fn search_call() -> Value {
    modern_body(
        "tools/call",
        json!({"name": "search", "arguments": {"query": "list tables"}}),
    )
}

#[tokio::test]
async fn a_request_without_meta_is_400_invalid_params() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
            ],
            &rpc("tools/list", json!({})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert!(r.error_message().contains("_meta"), "{}", r.text);
}

#[tokio::test]
async fn meta_without_client_capabilities_is_400_invalid_params() {
    let srv = Server::demo().await;
    let body = rpc(
        "tools/list",
        json!({"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}),
    );
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert!(
        r.error_message().contains("clientCapabilities"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn a_header_version_that_disagrees_with_the_body_is_400_header_mismatch() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", V1125),
                ("mcp-method", "tools/list"),
            ],
            &modern_body("tools/list", json!({})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
}

#[tokio::test]
async fn a_missing_version_header_is_400_header_mismatch() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("mcp-method", "tools/list")],
            &modern_body("tools/list", json!({})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
}

#[tokio::test]
async fn an_unsupported_modern_version_is_400_with_the_supported_ones() {
    let srv = Server::demo().await;
    let body = rpc(
        "tools/list",
        json!({"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2099-01-01",
            "io.modelcontextprotocol/clientCapabilities": {},
        }}),
    );
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", "2099-01-01"),
                ("mcp-method", "tools/list"),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let supported = r.json["error"]["data"]["supported"].to_string();
    assert!(supported.contains(MODERN), "{}", r.text);
}

#[tokio::test]
async fn a_missing_method_header_is_400_header_mismatch() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[("mcp-protocol-version", MODERN)],
            &modern_body("tools/list", json!({})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
    assert!(r.error_message().contains("Mcp-Method"), "{}", r.text);
}

#[tokio::test]
async fn a_method_header_naming_another_method_is_400_header_mismatch() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "prompts/list"),
            ],
            &modern_body("tools/list", json!({})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
}

#[tokio::test]
async fn a_missing_name_header_on_tools_call_is_400_header_mismatch() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
            ],
            &search_call(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
    assert!(r.error_message().contains("Mcp-Name"), "{}", r.text);
}

#[tokio::test]
async fn a_name_header_naming_another_tool_is_400_header_mismatch() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "fetch"),
            ],
            &search_call(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
}

#[tokio::test]
async fn a_name_header_on_resources_read_must_match_the_uri() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "resources/read"),
                ("mcp-name", "db://claude/main.customers"),
            ],
            &modern_body("resources/read", json!({"uri": "db://claude/main.orders"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
}

#[tokio::test]
async fn an_invalid_base64_name_header_is_400_header_mismatch() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?!!!?="),
            ],
            &search_call(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32020), "{}", r.text);
}

#[tokio::test]
async fn an_unknown_method_is_http_404_method_not_found() {
    let srv = Server::demo().await;
    let r = srv
        .modern("/claude")
        .request("tools/destroy", json!({}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32601), "{}", r.text);
}

#[tokio::test]
async fn ping_is_not_part_of_the_modern_revision() {
    let srv = Server::demo().await;
    let r = srv.modern("/claude").request("ping", json!({})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32601), "{}", r.text);
}

#[tokio::test]
async fn logging_set_level_is_not_part_of_the_modern_revision() {
    let srv = Server::demo().await;
    let r = srv
        .modern("/claude")
        .request("logging/setLevel", json!({"level": "info"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.error_code(), Some(-32601), "{}", r.text);
}

/// 2026-07-28 replaced `resources/subscribe` with `subscriptions/listen`; the server
/// offers neither there, and says so in its capabilities.
#[tokio::test]
async fn resource_subscriptions_are_not_part_of_the_modern_revision() {
    let srv = Server::demo().await;
    for method in [
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
    ] {
        let r = srv
            .modern("/claude")
            .request(method, json!({"uri": "db://claude/main.orders"}))
            .await;
        assert_eq!(r.status, 404, "{method}: {}", r.text);
        assert_eq!(r.error_code(), Some(-32601), "{method}: {}", r.text);
    }
    let caps = srv
        .modern("/claude")
        .result("server/discover", json!({}))
        .await["capabilities"]
        .clone();
    assert_eq!(caps["resources"]["subscribe"], false, "{caps}");
    assert!(caps.get("logging").is_none(), "{caps}");
}

#[tokio::test]
async fn server_discover_describes_the_server() {
    let srv = Server::demo().await;
    let result = srv
        .modern("/chatgpt")
        .result("server/discover", json!({}))
        .await;
    let versions: Vec<&str> = result["supportedVersions"]
        .as_array()
        .expect("supportedVersions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(versions, ["2025-03-26", V0618, V1125, MODERN]);
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert!(result["capabilities"]["resources"].is_object(), "{result}");
    assert_eq!(result["resultType"], "complete");
    assert!(result["ttlMs"].as_u64().is_some_and(|t| t > 0), "{result}");
    assert!(result["cacheScope"].is_string(), "{result}");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mssql-mcp"
    );
    assert!(
        result["instructions"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
}

#[tokio::test]
async fn a_modern_request_needs_no_session_and_gets_none() {
    let srv = Server::demo().await;
    let r = srv.modern("/claude").request("tools/list", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("mcp-session-id").is_none());
    let result = &r.json["result"];
    assert_eq!(result["tools"].as_array().map(Vec::len), Some(6));
    assert_eq!(result["resultType"], "complete");
    assert!(result["ttlMs"].is_u64(), "{result}");
    assert!(result["_meta"]["io.modelcontextprotocol/serverInfo"].is_object());
}

#[tokio::test]
async fn a_base64_name_header_is_accepted() {
    let srv = Server::demo().await;
    let r = srv
        .post_json(
            "/claude/mcp",
            &[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "=?base64?c2VhcmNo?="),
            ],
            &search_call(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["isError"], false, "{}", r.text);
    assert_eq!(r.json["result"]["resultType"], "complete");
}

#[tokio::test]
async fn a_tool_result_in_the_modern_revision_is_complete() {
    let srv = Server::demo().await;
    let result = srv
        .call_tool("/claude", "execute_sql", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(result["resultType"], "complete", "{result}");
    assert_eq!(result["structuredContent"]["rows"][0]["one"], 1);
}
