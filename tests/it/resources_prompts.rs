//! Resources (one per visible table, its schema as JSON text), prompts, and logging.

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn reading_an_unknown_resource_is_32002_in_a_session() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = c
        .request("resources/read", json!({"uri": "db://claude/main.nope"}))
        .await;
    assert_eq!(r.error_code(), Some(-32002), "{}", r.text);
    assert_eq!(r.json["error"]["data"]["uri"], "db://claude/main.nope");
}

#[tokio::test]
async fn reading_an_unknown_resource_is_32602_in_the_modern_revision() {
    let srv = Server::demo().await;
    let r = srv
        .modern("/claude")
        .request("resources/read", json!({"uri": "db://claude/main.nope"}))
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
}

#[tokio::test]
async fn a_resource_of_another_scope_is_not_found() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = c
        .request("resources/read", json!({"uri": "db://chatgpt/main.orders"}))
        .await;
    assert_eq!(r.error_code(), Some(-32002), "{}", r.text);
}

#[tokio::test]
async fn reading_without_a_uri_is_invalid_params() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = c.request("resources/read", json!({})).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
}

#[tokio::test]
async fn an_unknown_prompt_is_invalid_params() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let r = c.request("prompts/get", json!({"name": "nope"})).await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
}

#[tokio::test]
async fn an_unknown_log_level_is_invalid_params() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0618).await;
    let r = c
        .request("logging/setLevel", json!({"level": "loud"}))
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
}

#[tokio::test]
async fn every_visible_table_is_a_resource() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let result = c.result("resources/list", json!({})).await;
    let resources = result["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 10);
    let orders = resources
        .iter()
        .find(|r| r["uri"] == "db://claude/main.orders")
        .expect("orders resource");
    assert_eq!(orders["mimeType"], "application/json");
    assert_eq!(orders["name"], "main.orders");
    // The demo's own description of the table comes first.
    assert!(
        orders["description"]
            .as_str()
            .is_some_and(|d| d.starts_with(
                "One row per customer order; its lines are in order_lines. Schema of main.orders"
            )),
        "{orders}"
    );
}

#[tokio::test]
async fn reading_a_resource_returns_the_schema_as_json_text() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let result = c
        .result("resources/read", json!({"uri": "db://claude/main.orders"}))
        .await;
    let content = &result["contents"][0];
    assert_eq!(content["uri"], "db://claude/main.orders");
    assert_eq!(content["mimeType"], "application/json");
    let schema: Value =
        serde_json::from_str(content["text"].as_str().expect("text")).expect("JSON text");
    assert_eq!(schema["id"], "main.orders");
    assert_eq!(schema["primary_key"], json!(["order_id"]));
}

#[tokio::test]
async fn resources_work_in_the_modern_revision() {
    let srv = Server::demo().await;
    let m = srv.modern("/chatgpt");
    let list = m.result("resources/list", json!({})).await;
    let uri = list["resources"][0]["uri"]
        .as_str()
        .expect("uri")
        .to_string();
    let read = m.result("resources/read", json!({"uri": uri})).await;
    assert_eq!(read["contents"][0]["uri"], uri.as_str());
    assert_eq!(read["resultType"], "complete");
}

#[tokio::test]
async fn resource_templates_are_an_empty_list() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let result = c.result("resources/templates/list", json!({})).await;
    assert_eq!(result["resourceTemplates"], json!([]));
}

#[tokio::test]
async fn subscribing_to_a_table_resource_is_accepted() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let result = c
        .result(
            "resources/subscribe",
            json!({"uri": "db://claude/main.orders"}),
        )
        .await;
    assert_eq!(result, json!({}));
}

#[tokio::test]
async fn prompts_list_offers_the_exploration_prompt() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/chatgpt", V0618).await;
    let result = c.result("prompts/list", json!({})).await;
    assert_eq!(result["prompts"][0]["name"], "explore_database");
}

#[tokio::test]
async fn prompts_get_fills_in_the_topic() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V1125).await;
    let result = c
        .result(
            "prompts/get",
            json!({"name": "explore_database", "arguments": {"topic": "late deliveries"}}),
        )
        .await;
    let text = result["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or("");
    assert!(text.contains("late deliveries"), "{result}");
    assert_eq!(result["messages"][0]["role"], "user");
}

#[tokio::test]
async fn prompts_get_works_in_the_modern_revision() {
    let srv = Server::demo().await;
    let result = srv
        .modern("/claude")
        .result("prompts/get", json!({"name": "explore_database"}))
        .await;
    assert!(
        result["messages"][0]["content"]["text"].is_string(),
        "{result}"
    );
}

#[tokio::test]
async fn logging_set_level_is_accepted_in_a_session() {
    let srv = Server::demo().await;
    let c = Legacy::connect(&srv, "/claude", V0618).await;
    assert_eq!(
        c.result("logging/setLevel", json!({"level": "warning"}))
            .await,
        json!({})
    );
}
