//! The SQL-shaped tools of the `full` profile (`/claude`): `execute_sql`, `get_table_sample`,
//! `list_tables`, `describe_table`: lossless values, row caps, paging, argument errors and the
//! query timeout.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::support::*;

fn rows(structured: &Value) -> &Vec<Value> {
    structured["rows"].as_array().expect("rows array")
}

fn sql(q: &str) -> Value {
    json!({ "sql": q })
}

fn is_two_decimal_string(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let Some((whole, frac)) = s.split_once('.') else {
            return false;
        };
        !whole.is_empty()
            && whole
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
            && frac.len() == 2
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

#[tokio::test]
async fn sql_that_is_not_a_string_is_refused_naming_the_argument() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/claude", "execute_sql", json!({"sql": 5}))
        .await;
    assert!(msg.contains("`sql`"), "{msg}");
}

#[tokio::test]
async fn a_page_size_that_is_not_a_number_is_refused_naming_the_argument() {
    let srv = Server::demo().await;
    for bad in [json!("x"), json!(0), json!(-3), json!(1.5)] {
        let msg = srv
            .tool_err(
                "/claude",
                "execute_sql",
                json!({"sql": "SELECT 1", "page_size": bad}),
            )
            .await;
        assert!(msg.contains("`page_size`"), "{bad}: {msg}");
    }
}

#[tokio::test]
async fn an_unknown_argument_is_refused_naming_it() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT 1", "limit": 5}),
        )
        .await;
    assert!(msg.contains("`limit`"), "{msg}");
    assert!(msg.contains("page_size"), "{msg}");
}

#[tokio::test]
async fn a_missing_required_argument_is_refused_naming_it() {
    let srv = Server::demo().await;
    let msg = srv.tool_err("/claude", "execute_sql", json!({})).await;
    assert!(msg.contains("`sql`"), "{msg}");
    let msg = srv.tool_err("/claude", "describe_table", json!({})).await;
    assert!(msg.contains("`table`"), "{msg}");
}

#[tokio::test]
async fn arguments_that_are_not_an_object_are_refused() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/claude", "execute_sql", json!(["SELECT 1"]))
        .await;
    assert!(msg.contains("arguments"), "{msg}");
}

#[tokio::test]
async fn empty_sql_is_refused() {
    let srv = Server::demo().await;
    let msg = srv.tool_err("/claude", "execute_sql", sql("   ")).await;
    assert!(msg.contains("empty"), "{msg}");
}

#[tokio::test]
async fn an_unknown_tool_is_a_json_rpc_invalid_params_error() {
    let srv = Server::demo().await;
    let r = srv
        .modern("/claude")
        .request(
            "tools/call",
            json!({"name": "drop_database", "arguments": {}}),
        )
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert!(r.error_message().contains("drop_database"), "{}", r.text);
    assert!(r.error_message().contains("execute_sql"), "{}", r.text);
}

#[tokio::test]
async fn a_query_on_a_missing_table_lists_the_visible_tables() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/claude", "execute_sql", sql("SELECT * FROM custmers"))
        .await;
    assert!(msg.contains("custmers"), "{msg}");
    assert!(msg.contains("main.customers"), "{msg}");
}

#[tokio::test]
async fn an_error_quotes_the_query_as_sent_not_its_lifted_template() {
    // The literals are lifted into parameters before the query runs; an error must still
    // show the client its own text (and an offset into it), not `?1`.
    let srv = Server::demo().await;
    let msg = srv
        .tool_err(
            "/claude",
            "execute_sql",
            sql("SELECT customer_id, no_such_column FROM customers WHERE customer_id = 42"),
        )
        .await;
    assert!(msg.contains("no_such_column"), "{msg}");
    assert!(msg.contains("customer_id = 42"), "{msg}");
    assert!(!msg.contains("?1"), "{msg}");
}

#[tokio::test]
async fn describing_a_missing_table_lists_the_visible_tables() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/claude", "describe_table", json!({"table": "ordes"}))
        .await;
    assert!(msg.contains("main.orders"), "{msg}");
}

#[tokio::test]
async fn a_bogus_cursor_is_refused() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT order_id FROM orders ORDER BY order_id", "cursor": "not-a-cursor"}),
        )
        .await;
    assert!(msg.contains("cursor"), "{msg}");
}

#[tokio::test]
async fn a_cursor_passed_with_different_sql_is_refused() {
    let srv = Server::demo().await;
    let first = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT order_id FROM orders ORDER BY order_id", "page_size": 10}),
        )
        .await;
    let cursor = first["next_cursor"].as_str().expect("next_cursor");
    let msg = srv
        .tool_err(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT customer_id FROM customers ORDER BY customer_id", "cursor": cursor}),
        )
        .await;
    assert!(msg.contains("cursor"), "{msg}");
}

#[tokio::test]
async fn a_sample_cursor_is_refused_for_another_table() {
    let srv = Server::demo().await;
    let first = srv
        .tool_ok(
            "/claude",
            "get_table_sample",
            json!({"table": "orders", "limit": 5}),
        )
        .await;
    let cursor = first["next_cursor"].as_str().expect("next_cursor");
    let msg = srv
        .tool_err(
            "/claude",
            "get_table_sample",
            json!({"table": "customers", "cursor": cursor}),
        )
        .await;
    assert!(msg.contains("cursor"), "{msg}");
}

#[tokio::test]
async fn a_cursor_works_once() {
    let srv = Server::demo().await;
    let q = "SELECT order_id FROM orders ORDER BY order_id";
    let first = srv
        .tool_ok("/claude", "execute_sql", json!({"sql": q, "page_size": 10}))
        .await;
    let cursor = first["next_cursor"].as_str().expect("next_cursor");
    srv.tool_ok(
        "/claude",
        "execute_sql",
        json!({"sql": q, "cursor": cursor}),
    )
    .await;
    let msg = srv
        .tool_err(
            "/claude",
            "execute_sql",
            json!({"sql": q, "cursor": cursor}),
        )
        .await;
    assert!(msg.contains("cursor"), "{msg}");
}

#[tokio::test]
async fn a_query_that_runs_forever_times_out_and_the_server_keeps_answering() {
    let toml = config_toml(
        "query_timeout_secs = 1",
        "[[scope]]\npath = \"/t\"\ndatabase = \"demo\"\nprofile = \"full\"\n",
    );
    let srv = Server::with_config(&toml).await;
    let started = Instant::now();
    let msg = srv
        .tool_err(
            "/t",
            "execute_sql",
            sql("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"),
        )
        .await;
    let took = started.elapsed();
    assert!(msg.contains("timed out"), "{msg}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let after = srv
        .tool_ok("/t", "execute_sql", sql("SELECT 1 AS one"))
        .await;
    assert_eq!(rows(&after)[0]["one"], 1);
}

#[tokio::test]
async fn a_point_lookup_returns_the_row() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            sql("SELECT customer_id, email FROM customers WHERE customer_id = 42"),
        )
        .await;
    assert_eq!(out["row_count"], 1);
    assert_eq!(out["truncated"], false);
    assert_eq!(out["columns"], json!(["customer_id", "email"]));
    assert_eq!(rows(&out)[0]["customer_id"], 42);
    assert!(
        rows(&out)[0]["email"]
            .as_str()
            .is_some_and(|e| e.contains('@'))
    );
    assert!(out.get("next_cursor").is_none());
}

#[tokio::test]
async fn values_keep_their_types() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            sql("SELECT product_id, unit_price, weight_kg, is_discontinued, thumbnail FROM products WHERE product_id IN (1, 21) ORDER BY product_id"),
        )
        .await;
    let p1 = &rows(&out)[0];
    let p21 = &rows(&out)[1];
    assert!(p1["product_id"].is_i64(), "{p1}");
    assert_eq!(p1["unit_price"], "39.99");
    assert_eq!(p21["unit_price"], "9.00", "whole amounts keep two decimals");
    assert_eq!(p1["weight_kg"], 3.97);
    assert_eq!(p1["is_discontinued"], false);
    let png = base64::engine::general_purpose::STANDARD
        .decode(p1["thumbnail"].as_str().expect("thumbnail as base64"))
        .expect("valid base64");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[tokio::test]
async fn nulls_dates_and_booleans_are_json_null_iso_strings_and_booleans() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            sql("SELECT c.customer_id, c.company_name, c.credit_limit, c.is_vip, c.signup_date, o.order_date \
                 FROM customers c JOIN orders o ON o.customer_id = c.customer_id \
                 WHERE c.customer_id = 2 ORDER BY o.order_id LIMIT 1"),
        )
        .await;
    let row = &rows(&out)[0];
    assert_eq!(row["company_name"], Value::Null);
    assert_eq!(row["credit_limit"], Value::Null);
    assert!(row["is_vip"].is_boolean(), "{row}");
    assert_eq!(row["signup_date"], "2019-01-07");
    let ts = row["order_date"].as_str().expect("timestamp string");
    assert!(
        ts.len() == 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
        "{ts}"
    );
}

#[tokio::test]
async fn every_money_value_is_a_string_with_two_decimals() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            sql("SELECT unit_price, unit_cost FROM products ORDER BY product_id LIMIT 200"),
        )
        .await;
    for r in rows(&out) {
        assert!(is_two_decimal_string(&r["unit_price"]), "{r}");
        assert!(is_two_decimal_string(&r["unit_cost"]), "{r}");
    }
}

#[tokio::test]
async fn a_large_result_is_cut_at_the_row_cap_with_a_cursor() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            sql("SELECT order_id FROM orders ORDER BY order_id"),
        )
        .await;
    assert_eq!(rows(&out).len(), 200, "the demo's /claude cap is 200");
    assert_eq!(out["truncated"], true);
    assert!(out["next_cursor"].as_str().is_some_and(|c| !c.is_empty()));
}

#[tokio::test]
async fn a_page_size_above_the_cap_is_held_to_the_cap() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT order_id FROM orders ORDER BY order_id", "page_size": 100000}),
        )
        .await;
    assert_eq!(rows(&out).len(), 200);
}

#[tokio::test]
async fn paging_through_250_rows_gives_100_100_50_without_gaps_or_duplicates() {
    let srv = Server::demo().await;
    let q = "SELECT order_id FROM orders ORDER BY order_id LIMIT 250";
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({"sql": q, "page_size": 100});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let out = srv.tool_ok("/claude", "execute_sql", args).await;
        sizes.push(rows(&out).len());
        seen.extend(
            rows(&out)
                .iter()
                .map(|r| r["order_id"].as_i64().expect("id")),
        );
        match out["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(out["truncated"], true);
                cursor = Some(c.to_string());
            }
            None => {
                assert_eq!(out["truncated"], false);
                break;
            }
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(seen, (1..=250).collect::<Vec<i64>>());
}

#[tokio::test]
async fn table_samples_page_in_key_order_without_gaps_or_duplicates() {
    let srv = Server::demo().await;
    let mut keys: Vec<(i64, i64)> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let mut args = json!({"table": "order_lines", "limit": 40});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let out = srv.tool_ok("/claude", "get_table_sample", args).await;
        assert_eq!(rows(&out).len(), 40);
        assert_eq!(out["table"], "main.order_lines");
        keys.extend(rows(&out).iter().map(|r| {
            (
                r["order_id"].as_i64().expect("order_id"),
                r["line_no"].as_i64().expect("line_no"),
            )
        }));
        cursor = Some(
            out["next_cursor"]
                .as_str()
                .expect("next_cursor")
                .to_string(),
        );
    }
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), 120);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "pages follow the primary key");
    let expected = db_count(
        "SELECT count(*) FROM (SELECT 1 FROM order_lines ORDER BY order_id, line_no LIMIT 120)",
    );
    assert_eq!(expected, 120);
    let last = keys[119];
    let before_last = db_count(&format!(
        "SELECT count(*) FROM order_lines WHERE order_id < {0} OR (order_id = {0} AND line_no <= {1})",
        last.0, last.1
    ));
    assert_eq!(before_last, 120, "no row was skipped");
}

#[tokio::test]
async fn a_table_sample_defaults_to_ten_rows() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok("/claude", "get_table_sample", json!({"table": "customers"}))
        .await;
    assert_eq!(rows(&out).len(), 10);
    assert_eq!(rows(&out)[0]["customer_id"], 1);
}

#[tokio::test]
async fn list_tables_names_every_table_with_its_primary_key() {
    let srv = Server::demo().await;
    let out = srv.tool_ok("/claude", "list_tables", json!({})).await;
    let tables = out["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 10);
    let lines = tables
        .iter()
        .find(|t| t["id"] == "main.order_lines")
        .expect("order_lines");
    assert_eq!(lines["primary_key"], json!(["order_id", "line_no"]));
    let customers = tables
        .iter()
        .find(|t| t["id"] == "main.customers")
        .expect("customers");
    assert_eq!(customers["rows"], CUSTOMERS);
}

#[tokio::test]
async fn describe_table_gives_columns_keys_and_references() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok("/claude", "describe_table", json!({"table": "order_lines"}))
        .await;
    assert_eq!(out["id"], "main.order_lines");
    assert_eq!(out["primary_key"], json!(["order_id", "line_no"]));
    let refs: Vec<&str> = out["foreign_keys"]
        .as_array()
        .expect("foreign_keys")
        .iter()
        .filter_map(|f| f["references"].as_str())
        .collect();
    assert!(
        refs.contains(&"main.orders") && refs.contains(&"main.products"),
        "{refs:?}"
    );
    let order_id = out["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .find(|c| c["name"] == "order_id")
        .expect("order_id column");
    assert_eq!(order_id["nullable"], false);
    assert_eq!(order_id["primary_key"], true);
}

#[tokio::test]
async fn describe_table_accepts_quoted_and_qualified_names() {
    let srv = Server::demo().await;
    for name in ["main.orders", "\"main\".\"orders\"", "[orders]", "ORDERS"] {
        let out = srv
            .tool_ok("/claude", "describe_table", json!({"table": name}))
            .await;
        assert_eq!(out["id"], "main.orders", "{name}");
    }
}

#[tokio::test]

async fn a_result_with_two_columns_of_the_same_name_keeps_both_values() {
    let srv = Server::demo().await;
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            sql("SELECT p.name, c.name FROM products p JOIN categories c ON c.category_id = p.category_id WHERE p.product_id = 1"),
        )
        .await;
    assert_eq!(out["columns"], json!(["name", "name_2"]));
    let text = out["rows"].to_string();
    assert!(
        text.contains("Alpine Scrub Brush"),
        "product name lost: {out}"
    );
    assert!(
        text.contains("Cleaning Supplies"),
        "category name lost: {out}"
    );
}

#[tokio::test]
async fn a_slow_query_does_not_hold_up_other_requests() {
    let toml = config_toml(
        "query_timeout_secs = 2",
        "[[scope]]\npath = \"/t\"\ndatabase = \"demo\"\nprofile = \"full\"\n",
    );
    let srv = Server::with_config(&toml).await;
    let slow = srv.call_tool(
        "/t",
        "execute_sql",
        sql("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"),
    );
    let fast = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let out = srv
            .tool_ok(
                "/t",
                "execute_sql",
                sql("SELECT count(*) AS n FROM regions"),
            )
            .await;
        (out, started.elapsed())
    };
    let (slow, (fast, fast_took)) = tokio::join!(slow, fast);
    assert_eq!(slow["isError"], true);
    assert_eq!(rows(&fast)[0]["n"], 6);
    assert!(fast_took < Duration::from_secs(1), "took {fast_took:?}");
}

#[tokio::test]
async fn a_scope_with_a_small_row_cap_cuts_every_result_at_it() {
    let toml = config_toml(
        "",
        "[[scope]]\npath = \"/small\"\ndatabase = \"demo\"\nprofile = \"full\"\nmax_rows = 5\n",
    );
    let srv = Server::with_config(&toml).await;
    let out = srv
        .tool_ok(
            "/small",
            "execute_sql",
            sql("SELECT order_id FROM orders ORDER BY order_id"),
        )
        .await;
    assert_eq!(rows(&out).len(), 5);
    assert_eq!(out["truncated"], true);
    let sample = srv
        .tool_ok(
            "/small",
            "get_table_sample",
            json!({"table": "orders", "limit": 50}),
        )
        .await;
    assert_eq!(rows(&sample).len(), 5);
    let found = srv
        .tool_ok(
            "/small",
            "search",
            json!({"query": "sample orders limit 50"}),
        )
        .await;
    assert_eq!(found["results"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn many_concurrent_calls_are_all_answered() {
    let srv = Server::demo().await;
    let calls = (1..=40).map(|i| {
        let srv = &srv;
        async move {
            let out = srv
                .tool_ok(
                    "/claude",
                    "execute_sql",
                    sql(&format!(
                        "SELECT customer_id FROM customers WHERE customer_id = {i}"
                    )),
                )
                .await;
            rows(&out)[0]["customer_id"].as_i64()
        }
    });
    let got = futures::future::join_all(calls).await;
    assert_eq!(got, (1..=40).map(Some).collect::<Vec<_>>());
}
