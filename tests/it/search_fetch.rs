//! The `chatgpt` profile: exactly `search` and `fetch`, in the shapes ChatGPT requires, and the
//! ids that connect them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn results(structured: &Value) -> &Vec<Value> {
    structured["results"].as_array().expect("results array")
}

fn ids(structured: &Value) -> Vec<String> {
    results(structured)
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

/// Asserts the ChatGPT shape: JSON text content equal to `structuredContent`.
fn assert_text_matches_structured(result: &Value) {
    let text = tool_text(result);
    let parsed: Value = serde_json::from_str(text).expect("text content is JSON");
    assert_eq!(parsed, result["structuredContent"]);
    assert_eq!(result["content"][0]["type"], "text");
}

fn cached_ttl_config() -> String {
    config_toml(
        "",
        r#"
[[scope]]
path = "/chatgpt"
database = "demo"
profile = "chatgpt"
cache_ttl_secs = 1
"#,
    )
}

#[tokio::test]
async fn an_unknown_tool_is_invalid_params_naming_the_offered_tools() {
    let srv = Server::demo().await;
    let r = srv
        .modern("/chatgpt")
        .request(
            "tools/call",
            json!({"name": "execute_sql", "arguments": {"sql": "SELECT 1"}}),
        )
        .await;
    assert_eq!(r.error_code(), Some(-32602), "{}", r.text);
    assert!(r.error_message().contains("search"), "{}", r.text);
    assert!(r.error_message().contains("fetch"), "{}", r.text);
}

#[tokio::test]
async fn a_malformed_id_is_refused_with_an_explanation() {
    let srv = Server::demo().await;
    for bad in [
        "",
        "customers",
        "main.",
        "sql:x/y",
        "main.orders/%zz",
        "a.b.c",
    ] {
        let msg = srv.tool_err("/chatgpt", "fetch", json!({"id": bad})).await;
        assert!(msg.contains("not an id"), "{bad}: {msg}");
    }
}

#[tokio::test]
async fn an_unknown_row_is_not_found() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/chatgpt", "fetch", json!({"id": "main.orders/999999999"}))
        .await;
    assert!(msg.contains("no row"), "{msg}");
    let msg = srv
        .tool_err("/chatgpt", "fetch", json!({"id": "main.orders/abc"}))
        .await;
    assert!(msg.contains("no row"), "{msg}");
}

#[tokio::test]
async fn an_unknown_table_is_not_found() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/chatgpt", "fetch", json!({"id": "main.nope"}))
        .await;
    assert!(msg.contains("main.nope"), "{msg}");
}

#[tokio::test]
async fn a_row_id_with_too_few_key_values_names_the_key() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/chatgpt", "fetch", json!({"id": "main.order_lines/3"}))
        .await;
    assert!(msg.contains("order_id") && msg.contains("line_no"), "{msg}");
}

#[tokio::test]
async fn an_expired_sql_id_says_so() {
    let srv = Server::with_config(&cached_ttl_config()).await;
    let found = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT status, count(*) AS n FROM orders GROUP BY status"}),
        )
        .await;
    let id = ids(&found)[0].clone();
    assert!(id.starts_with("sql:"), "{id}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let msg = srv.tool_err("/chatgpt", "fetch", json!({"id": id})).await;
    assert!(msg.contains("expired"), "{msg}");
}

#[tokio::test]
async fn a_made_up_sql_id_is_not_found() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err(
            "/chatgpt",
            "fetch",
            json!({"id": "sql:abcdef0123456789abcdef01/0"}),
        )
        .await;
    assert!(msg.contains("expired"), "{msg}");
}

#[tokio::test]
async fn an_empty_search_is_refused_with_a_hint() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/chatgpt", "search", json!({"query": "  "}))
        .await;
    assert!(msg.contains("list tables"), "{msg}");
}

#[tokio::test]
async fn a_search_of_only_stopwords_is_refused_with_a_hint() {
    let srv = Server::demo().await;
    let msg = srv
        .tool_err("/chatgpt", "search", json!({"query": "what is the"}))
        .await;
    assert!(msg.contains("words"), "{msg}");
}

#[tokio::test]
async fn the_chatgpt_profile_lists_exactly_search_and_fetch() {
    let srv = Server::demo().await;
    let result = srv.modern("/chatgpt").result("tools/list", json!({})).await;
    let tools = result["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["search", "fetch"]);
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        assert_eq!(t["annotations"]["readOnlyHint"], true, "{t}");
        assert!(
            t["description"].as_str().is_some_and(|d| d.len() > 40),
            "{t}"
        );
    }
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["query"]));
    assert_eq!(tools[1]["inputSchema"]["required"], json!(["id"]));
}

#[tokio::test]
async fn the_full_profile_lists_six_read_only_tools() {
    let srv = Server::demo().await;
    let result = srv.modern("/claude").result("tools/list", json!({})).await;
    let tools = result["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "search",
            "fetch",
            "list_tables",
            "describe_table",
            "get_table_sample",
            "execute_sql"
        ]
    );
    assert!(
        tools
            .iter()
            .all(|t| t["annotations"]["readOnlyHint"] == true)
    );
}

#[tokio::test]
async fn a_natural_language_search_finds_support_tickets_with_the_words() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok("/chatgpt", "search", json!({"query": "refund damaged"}))
        .await;
    let tickets: Vec<String> = ids(&found)
        .into_iter()
        .filter(|id| id.starts_with("main.support_tickets/"))
        .collect();
    assert!(!tickets.is_empty(), "{found}");
    for id in tickets.iter().take(3) {
        let doc = srv.tool_ok("/chatgpt", "fetch", json!({"id": id})).await;
        let text = doc["text"].as_str().unwrap_or("").to_lowercase();
        assert!(
            text.contains("refund") || text.contains("damaged"),
            "{id}: {text}"
        );
    }
}

#[tokio::test]
async fn a_question_finds_login_tickets() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "Which customers could not login to their account?"}),
        )
        .await;
    assert!(!results(&found).is_empty(), "{found}");
    let snippets = results(&found)
        .iter()
        .map(|r| r["text"].as_str().unwrap_or("").to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(snippets.contains("log"), "{snippets}");
}

#[tokio::test]
async fn every_search_result_has_an_id_a_title_and_its_record_url() {
    let srv = Server::demo().await;
    for query in [
        "refund damaged",
        "list tables",
        "describe orders",
        "sample products limit 3",
        "SELECT customer_id, first_name FROM customers LIMIT 5",
        "SELECT status, count(*) AS n FROM orders GROUP BY status",
    ] {
        let result = srv
            .call_tool("/chatgpt", "search", json!({"query": query}))
            .await;
        assert_eq!(result["isError"], false, "{query}: {}", tool_text(&result));
        assert_text_matches_structured(&result);
        let found = &result["structuredContent"];
        assert!(!results(found).is_empty(), "{query}");
        for r in results(found) {
            let id = r["id"].as_str().unwrap_or("");
            assert!(!id.is_empty(), "{query}: {r}");
            assert!(
                r["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{query}: {r}"
            );
            assert!(
                r["text"].as_str().is_some_and(|t| !t.is_empty()),
                "{query}: {r}"
            );
            assert_eq!(
                r["url"].as_str().unwrap_or(""),
                format!("{}/chatgpt/records/{id}", srv.base),
                "{query}"
            );
        }
    }
}

#[tokio::test]
async fn fetch_returns_json_text_matching_its_structured_content() {
    let srv = Server::demo().await;
    for id in ["main.orders", "main.orders/3", "main.order_lines/3,2"] {
        let result = srv.call_tool("/chatgpt", "fetch", json!({"id": id})).await;
        assert_eq!(result["isError"], false, "{id}: {}", tool_text(&result));
        assert_text_matches_structured(&result);
        let doc = &result["structuredContent"];
        assert_eq!(doc["id"], id);
        assert_eq!(
            doc["url"].as_str().unwrap_or(""),
            format!("{}/chatgpt/records/{id}", srv.base)
        );
        assert!(
            doc["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{doc}"
        );
        assert!(doc["text"].as_str().is_some_and(|t| !t.is_empty()), "{doc}");
    }
}

#[tokio::test]
async fn list_tables_returns_every_table_as_a_result() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok("/chatgpt", "search", json!({"query": "list tables"}))
        .await;
    let mut got = ids(&found);
    got.sort();
    assert_eq!(
        got,
        [
            "main.categories",
            "main.customers",
            "main.employees",
            "main.order_lines",
            "main.orders",
            "main.products",
            "main.regions",
            "main.suppliers",
            "main.support_tickets",
            "main.warehouses",
        ]
    );
}

#[tokio::test]
async fn describe_returns_the_table_with_its_columns() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok("/chatgpt", "search", json!({"query": "describe orders"}))
        .await;
    assert_eq!(ids(&found), ["main.orders"]);
    let text = results(&found)[0]["text"].as_str().unwrap_or("");
    assert!(
        text.contains("order_id") && text.contains("customer_id"),
        "{text}"
    );
    assert!(text.contains("main.customers"), "{text}");
}

#[tokio::test]
async fn sample_with_a_limit_returns_that_many_rows_with_row_ids() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "sample products limit 3"}),
        )
        .await;
    assert_eq!(
        ids(&found),
        ["main.products/1", "main.products/2", "main.products/3"]
    );
}

#[tokio::test]
async fn a_select_of_one_table_gives_row_ids() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT customer_id, first_name, last_name FROM customers WHERE customer_id <= 3 ORDER BY customer_id"}),
        )
        .await;
    assert_eq!(
        ids(&found),
        ["main.customers/1", "main.customers/2", "main.customers/3"]
    );
}

#[tokio::test]
async fn an_aggregate_gives_sql_ids_that_fetch_resolves() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT c.country, count(*) AS orders FROM orders o JOIN customers c ON c.customer_id = o.customer_id GROUP BY c.country ORDER BY orders DESC"}),
        )
        .await;
    let all = ids(&found);
    assert!(!all.is_empty());
    assert!(all.iter().all(|id| id.starts_with("sql:")), "{all:?}");
    let doc = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": all[0]}))
        .await;
    let values = &doc["metadata"]["values"];
    assert!(values["country"].is_string(), "{doc}");
    assert!(values["orders"].as_i64().is_some_and(|n| n > 0), "{doc}");
    assert!(
        doc["text"].as_str().unwrap_or("").contains("country"),
        "{doc}"
    );
}

#[tokio::test]
async fn fetch_of_a_table_gives_its_schema_and_relationships() {
    let srv = Server::demo().await;
    let doc = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.orders"}))
        .await;
    let schema = &doc["metadata"]["schema"];
    assert_eq!(schema["primary_key"], json!(["order_id"]));
    let columns: Vec<&str> = schema["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(columns.contains(&"order_date"), "{columns:?}");
    let fks = schema["foreign_keys"].to_string();
    assert!(fks.contains("main.customers"), "{fks}");
    let referenced = schema["referenced_by"].to_string();
    assert!(referenced.contains("main.order_lines"), "{referenced}");
    assert!(doc["text"].as_str().unwrap_or("").contains("PRIMARY KEY"));
}

#[tokio::test]
async fn fetch_of_an_order_links_its_customer_and_its_lines() {
    let srv = Server::demo().await;
    let doc = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.orders/3"}))
        .await;
    let values = &doc["metadata"]["values"];
    assert_eq!(values["order_id"], 3);
    let customer = values["customer_id"].as_i64().expect("customer_id");
    let related = doc["metadata"]["related"].to_string();
    assert!(
        related.contains(&format!("\"main.customers/{customer}\"")),
        "{related}"
    );
    for line in [
        "main.order_lines/3,1",
        "main.order_lines/3,2",
        "main.order_lines/3,3",
    ] {
        assert!(related.contains(line), "{line} missing from {related}");
    }
    // The related ids are fetchable in turn.
    let cust = srv
        .tool_ok(
            "/chatgpt",
            "fetch",
            json!({"id": format!("main.customers/{customer}")}),
        )
        .await;
    assert_eq!(cust["metadata"]["values"]["customer_id"], customer);
}

#[tokio::test]
async fn fetch_of_a_composite_key_row_returns_that_line() {
    let srv = Server::demo().await;
    let doc = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.order_lines/3,2"}))
        .await;
    let values = &doc["metadata"]["values"];
    assert_eq!(values["order_id"], 3);
    assert_eq!(values["line_no"], 2);
    assert_eq!(
        doc["metadata"]["primary_key"],
        json!(["order_id", "line_no"])
    );
    let related = doc["metadata"]["related"].to_string();
    assert!(related.contains("\"main.orders/3\""), "{related}");
    assert!(related.contains("main.products/"), "{related}");
}

#[tokio::test]
async fn the_record_url_serves_the_same_document_as_fetch() {
    let srv = Server::demo().await;
    for id in ["main.order_lines/3,2", "main.customers/42", "main.orders"] {
        let doc = srv.tool_ok("/chatgpt", "fetch", json!({"id": id})).await;
        let url = doc["url"].as_str().expect("url").to_string();
        let page = srv.client.get(&url).send().await.expect("GET record");
        assert_eq!(page.status().as_u16(), 200, "{url}");
        let body: Value = page.json().await.expect("JSON");
        assert_eq!(body, doc, "{url}");
    }
}

#[tokio::test]
async fn a_browser_opening_a_record_url_gets_a_page_of_the_same_record() {
    let srv = Server::demo().await;
    let html = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    let id = "main.order_lines/3,2";
    let doc = srv.tool_ok("/chatgpt", "fetch", json!({"id": id})).await;
    let r = srv.get(&format!("/chatgpt/records/{id}"), &html).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    let title = doc["title"].as_str().expect("title");
    assert!(r.text.contains(&format!("<h1>{title}</h1>")), "{}", r.text);
    // Every visible value, and a link to every related record.
    for (k, v) in doc["metadata"]["values"].as_object().expect("values") {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Null => "NULL".into(),
            other => other.to_string(),
        };
        assert!(r.text.contains(&format!("<dt>{k}</dt>")), "{k}: {}", r.text);
        assert!(r.text.contains(&v), "{k} = {v}: {}", r.text);
    }
    assert!(
        r.text.contains(&format!(
            "href=\"{}/chatgpt/records/main.orders/3\"",
            srv.base
        )),
        "{}",
        r.text
    );
    // A table's page is its description; an unknown row a 404 page.
    let r = srv.get("/chatgpt/records/main.orders", &html).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("<pre>") && r.text.contains("order_id"),
        "{}",
        r.text
    );
    let r = srv
        .get("/chatgpt/records/main.orders/999999999", &html)
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.text.contains("<h1>No record to show</h1>"), "{}", r.text);
    // A row of an ad-hoc query (a cached id) shows its values and the query.
    let sql = "SELECT status, count(*) AS n FROM orders GROUP BY status";
    let found = srv
        .tool_ok("/chatgpt", "search", json!({ "query": sql }))
        .await;
    let id = ids(&found)[0].clone();
    assert!(id.starts_with("sql:"), "{id}");
    let r = srv.get(&format!("/chatgpt/records/{id}"), &html).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("<dt>status</dt>") && r.text.contains("<dt>n</dt>"),
        "{}",
        r.text
    );
    assert!(r.text.contains(&format!("<pre>{sql}</pre>")), "{}", r.text);
}

#[tokio::test]
async fn the_record_url_of_an_unknown_row_is_404() {
    let srv = Server::demo().await;
    let r = srv.get("/chatgpt/records/main.orders/999999999", &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(r.json["error"].is_string(), "{}", r.text);
}

#[tokio::test]
async fn an_sql_id_of_one_scope_is_not_fetchable_in_another() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok(
            "/claude",
            "search",
            json!({"query": "SELECT status, count(*) AS n FROM orders GROUP BY status"}),
        )
        .await;
    let id = ids(&found)[0].clone();
    srv.tool_ok("/claude", "fetch", json!({"id": id})).await;
    srv.tool_err("/chatgpt", "fetch", json!({"id": id})).await;
}

#[tokio::test]

async fn a_self_join_result_describes_the_row_its_id_names() {
    let srv = Server::demo().await;
    let found = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT e.employee_id, e.first_name, m.employee_id, m.first_name FROM employees e JOIN employees m ON m.employee_id = e.manager_id WHERE e.employee_id = 2"}),
        )
        .await;
    let hit = &results(&found)[0];
    let text = hit["text"].as_str().unwrap_or("");
    let id = hit["id"].as_str().unwrap_or("");
    if id == "main.employees/2" {
        assert!(text.contains("employee_id: 2"), "{hit}");
    }
    assert!(text.contains("Nadia") && text.contains("Layla"), "{hit}");
}

/// A SQLite file `{name}.sqlite` in `dir` made by `schema` (tables and rows).
fn sqlite_file(dir: &std::path::Path, name: &str, schema: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.sqlite"));
    let conn = rusqlite::Connection::open(&path).expect("create");
    conn.execute_batch(schema).expect("schema");
    path
}

/// A server without authentication on the SQLite file `db`, with a `/chatgpt` scope (search and
/// fetch) and a `/claude` one (every tool); its state in `state`.
fn sqlite_file_config(state: &std::path::Path, db: &std::path::Path) -> String {
    format!(
        r#"
[server]
insecure_no_auth = true
state_dir = "{state}"

[[database]]
name = "file"
kind = "sqlite"
path = "{db}"

[[scope]]
path = "/chatgpt"
database = "file"
profile = "chatgpt"

[[scope]]
path = "/claude"
database = "file"
profile = "full"
"#,
        state = state.display(),
        db = db.display()
    )
}

/// A value SQLite will not hand over (over 16 MiB) fails its own query with a clear error and
/// does not sink a keyword search: the other tables are still searched.
#[tokio::test]
async fn a_table_too_large_to_read_does_not_sink_a_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("create");
    conn.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         CREATE TABLE animals (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO animals VALUES (1, 'zebra crossing');",
    )
    .expect("schema");
    let huge = format!("zebra {}", "x".repeat(17 * 1024 * 1024));
    conn.execute("INSERT INTO notes VALUES (1, ?1)", [&huge])
        .expect("huge row");
    drop(conn);
    let srv = Server::with_config(&sqlite_file_config(dir.path(), &path)).await;
    let found = srv
        .tool_ok("/chatgpt", "search", json!({"query": "zebra"}))
        .await;
    assert_eq!(ids(&found), ["main.animals/1"], "{found}");
    // And says which table it could not search, and why.
    let notes = found["notes"].to_string();
    assert!(
        notes.contains("main.notes was not searched") && notes.contains("16 MiB"),
        "{notes}"
    );
    let err = srv
        .tool_err(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT body FROM notes"}),
        )
        .await;
    assert!(
        err.contains("16 MiB") && err.contains("leave that column"),
        "{err}"
    );
    // The table's other columns still read.
    let out = srv
        .tool_ok(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT id FROM notes"}),
        )
        .await;
    assert_eq!(out["rows"][0]["id"], 1, "{out}");
    srv.stop().await;
}

/// A fetch reads the row and then a few rows of the tables that point at it; a child table
/// whose lookup fails (here a value SQLite will not hand over) is left out with a note, and
/// the row still comes back.
#[tokio::test]
async fn a_child_table_that_cannot_be_read_does_not_sink_a_fetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kids.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("create");
    conn.execute_batch(
        "CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE pets (id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners(id),
                            name TEXT);
         INSERT INTO owners VALUES (1, 'Ada');",
    )
    .expect("schema");
    let huge = "x".repeat(17 * 1024 * 1024);
    conn.execute("INSERT INTO pets VALUES (1, 1, ?1)", [&huge])
        .expect("huge row");
    drop(conn);
    let srv = Server::with_config(&sqlite_file_config(dir.path(), &path)).await;
    let row = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.owners/1"}))
        .await;
    let text = row["text"].as_str().unwrap_or_default();
    assert!(text.contains("Ada"), "{row}");
    assert!(
        text.contains("main.pets.owner_id → this") && text.contains("not read"),
        "{row}"
    );
    srv.stop().await;
}

/// A page whose query fails (here at a value SQLite will not hand over) keeps its cursor:
/// once the value is readable again, the same cursor gives that page, without starting over
/// from the first. It still answers one page only.
#[tokio::test]
async fn a_cursor_whose_page_failed_still_gives_that_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pages.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("create");
    conn.execute_batch(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO notes VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e');",
    )
    .expect("schema");
    // Row 4 is read by the second page of two rows (and looked past by neither the first).
    let huge = "x".repeat(17 * 1024 * 1024);
    conn.execute("UPDATE notes SET body = ?1 WHERE id = 4", [&huge])
        .expect("huge row");
    let srv = Server::with_config(&sqlite_file_config(dir.path(), &path)).await;
    let q = "SELECT id, body FROM notes ORDER BY id";
    let first_sql = srv
        .tool_ok("/claude", "execute_sql", json!({"sql": q, "page_size": 2}))
        .await;
    let first_sample = srv
        .tool_ok(
            "/claude",
            "get_table_sample",
            json!({"table": "notes", "limit": 2}),
        )
        .await;
    let calls = [
        ("execute_sql", json!({"sql": q}), &first_sql),
        ("get_table_sample", json!({"table": "notes"}), &first_sample),
    ];
    let with_cursor = |args: &Value, first: &Value| {
        let mut args = args.clone();
        args["cursor"] = first["next_cursor"].clone();
        args
    };
    for (tool, args, first) in &calls {
        assert!(first["next_cursor"].is_string(), "{tool}: {first}");
        let err = srv
            .tool_err("/claude", tool, with_cursor(args, first))
            .await;
        assert!(err.contains("16 MiB"), "{tool}: {err}");
    }
    conn.execute("UPDATE notes SET body = 'd' WHERE id = 4", [])
        .expect("shrink");
    for (tool, args, first) in &calls {
        let second = srv.tool_ok("/claude", tool, with_cursor(args, first)).await;
        let ids: Vec<i64> = second["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["id"].as_i64())
            .collect();
        assert_eq!(ids, [3, 4], "{tool}: {second}");
        let again = srv
            .tool_err("/claude", tool, with_cursor(args, first))
            .await;
        assert!(again.contains("unknown or expired"), "{tool}: {again}");
    }
    srv.stop().await;
}

/// A row id names the row its values came from: only a key selected unchanged from the one
/// table read makes one. A computed or renamed column that takes the key's name, or a
/// derived table, gets `sql:` ids instead of a citation of some other order.
#[tokio::test]
async fn sql_search_mints_row_ids_only_from_the_key_selected_unchanged() {
    let srv = Server::demo().await;
    let ids_of = |v: &serde_json::Value| -> Vec<String> {
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect()
    };
    let plain = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT o.order_id, status AS status FROM orders o WHERE order_id = 1042"}),
        )
        .await;
    assert_eq!(ids_of(&plain), ["main.orders/1042"], "{plain}");
    for q in [
        "SELECT order_id + 1 AS order_id, status FROM orders WHERE order_id = 1042",
        "SELECT customer_id AS order_id, total_amount FROM orders WHERE order_id = 1042",
        "SELECT 7 AS order_id, count(*) AS n FROM orders",
        "SELECT order_id FROM (SELECT customer_id AS order_id FROM orders WHERE order_id = 1042) s",
    ] {
        let out = srv.tool_ok("/chatgpt", "search", json!({"query": q})).await;
        let ids = ids_of(&out);
        assert!(
            !ids.is_empty() && ids.iter().all(|id| id.starts_with("sql:")),
            "{q}: {out}"
        );
    }
}

/// A question that starts like SQL but is not ("Select customers in …") is searched as words,
/// with a note saying it did not parse as SQL; a real SELECT still runs as SQL, and a
/// forbidden one is still refused.
#[tokio::test]
async fn a_question_starting_with_select_or_with_is_searched_as_words() {
    let srv = Server::demo().await;
    for q in [
        "select customers in Germany with refunds",
        "With refunds over 100 dollars",
    ] {
        let out = srv.tool_ok("/chatgpt", "search", json!({"query": q})).await;
        assert!(
            out["results"].as_array().is_some_and(|r| !r.is_empty()),
            "{q}: {out}"
        );
        assert!(
            out["notes"][0]
                .as_str()
                .is_some_and(|n| n.contains("searched as words")),
            "{q}: {out}"
        );
    }
    let sql = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT order_id FROM orders WHERE order_id = 1042"}),
        )
        .await;
    assert_eq!(sql["results"][0]["id"], "main.orders/1042", "{sql}");
    assert!(sql.get("notes").is_none(), "{sql}");
    let msg = srv
        .tool_err(
            "/chatgpt",
            "search",
            json!({"query": "SELECT * INTO copy FROM orders"}),
        )
        .await;
    assert!(msg.contains("INTO"), "{msg}");
}

/// Rows keyed by bytes get ids of their own (`0x` and hex, as T-SQL writes a binary literal)
/// that fetch reads back, and a child found through a binary foreign key links back to its
/// parent; a key with a backslash is written `%5C`, which browsers keep as it is (a raw `\`
/// in a record URL would be turned into `/`).
#[tokio::test]
async fn binary_and_backslash_keys_make_ids_that_fetch_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sqlite_file(
        dir.path(),
        "keys",
        "CREATE TABLE devices (serial BLOB PRIMARY KEY, label TEXT);
         CREATE TABLE readings (id INTEGER PRIMARY KEY, device BLOB REFERENCES devices(serial),
                                note TEXT);
         CREATE TABLE accounts (login TEXT PRIMARY KEY, name TEXT);
         INSERT INTO devices VALUES (x'00FF10', 'pump walrus'), (x'0A0B', 'valve walrus');
         INSERT INTO readings VALUES (1, x'0A0B', 'walrus reading');
         INSERT INTO accounts VALUES ('CORP\\alice', 'Alice walrus');",
    );
    let srv = Server::with_config(&sqlite_file_config(dir.path(), &path)).await;
    let found = srv
        .tool_ok("/chatgpt", "search", json!({"query": "walrus"}))
        .await;
    let mut got = ids(&found);
    got.sort();
    assert_eq!(
        got,
        [
            "main.accounts/CORP%5Calice",
            "main.devices/0x00FF10",
            "main.devices/0x0A0B",
            "main.readings/1"
        ],
        "{found}"
    );
    let pump = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.devices/0x00FF10"}))
        .await;
    assert!(
        pump["text"].as_str().unwrap_or("").contains("pump walrus"),
        "{pump}"
    );
    // Lower-case hex is the same key; text that is no hex finds nothing.
    let valve = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.devices/0x0a0b"}))
        .await;
    assert!(valve.to_string().contains("valve walrus"), "{valve}");
    assert!(
        valve.to_string().contains("main.readings/1"),
        "the child through the binary foreign key: {valve}"
    );
    let err = srv
        .tool_err(
            "/chatgpt",
            "fetch",
            json!({"id": "main.devices/%3C3%20bytes%3E"}),
        )
        .await;
    assert!(err.contains("no row"), "{err}");
    let reading = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.readings/1"}))
        .await;
    assert!(
        reading.to_string().contains("main.devices/0x0A0B"),
        "the parent's id: {reading}"
    );
    let alice = srv
        .tool_ok(
            "/chatgpt",
            "fetch",
            json!({"id": "main.accounts/CORP%5Calice"}),
        )
        .await;
    assert!(alice.to_string().contains("Alice walrus"), "{alice}");
    srv.stop().await;
}

/// Keys that are empty or only dots get ids whose record URLs survive a browser: `%2E` is a
/// dot to a WHATWG URL parser (reqwest's `url` crate is one), so `…/main.accounts/%2E%2E`
/// would resolve to `…/records/main.accounts` and an empty key would not parse. The padded
/// ids (`%2E%2E,`) fetch the row, by id and by URL.
#[tokio::test]
async fn empty_and_dot_only_keys_make_ids_and_urls_that_find_their_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = sqlite_file(
        dir.path(),
        "keys",
        "CREATE TABLE accounts (login TEXT PRIMARY KEY, name TEXT);
         INSERT INTO accounts VALUES ('', 'Empty walrus'), ('.', 'Dot walrus'),
                                     ('..', 'Dots walrus'), ('...', 'Three walrus');",
    );
    let srv = Server::with_config(&sqlite_file_config(dir.path(), &path)).await;
    let found = srv
        .tool_ok("/chatgpt", "search", json!({"query": "walrus"}))
        .await;
    let mut got = ids(&found);
    got.sort();
    assert_eq!(
        got,
        [
            "main.accounts/%2E%2E%2E",
            "main.accounts/%2E%2E,",
            "main.accounts/%2E,",
            "main.accounts/,"
        ],
        "{found}"
    );
    for hit in results(&found) {
        let id = hit["id"].as_str().unwrap_or("");
        let doc = srv.tool_ok("/chatgpt", "fetch", json!({"id": id})).await;
        assert_eq!(doc["title"], hit["title"], "{id}: {doc}");
        let url = hit["url"].as_str().unwrap_or("");
        let page = srv.client.get(url).send().await.expect("GET record");
        assert_eq!(page.status().as_u16(), 200, "{url}");
        let body: Value = page.json().await.expect("JSON");
        assert_eq!(body, doc, "{url}");
    }
    srv.stop().await;
}

/// A row too large for the page has its long values cut to fit, its key among them when the
/// key is long text: a row id made from the cut key would name no row (or another one), so
/// such a row gets a cached `sql:` id, which `fetch` resolves to the row as it was read.
#[tokio::test]
async fn a_row_whose_key_was_cut_to_fit_the_page_gets_no_row_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("long_keys.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("create");
    conn.execute_batch("CREATE TABLE docs (slug TEXT PRIMARY KEY, body TEXT);")
        .expect("schema");
    let slug = format!("zebra-{}", "k".repeat(6_000));
    conn.execute(
        "INSERT INTO docs VALUES (?1, ?2)",
        [&slug, &format!("zebra {}", "b".repeat(6_000))],
    )
    .expect("row");
    drop(conn);
    let config = sqlite_file_config(dir.path(), &path).replace(
        "profile = \"chatgpt\"",
        "profile = \"chatgpt\"\nmax_result_bytes = 4096",
    );
    let srv = Server::with_config(&config).await;
    let found = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT slug, body FROM docs"}),
        )
        .await;
    let got = ids(&found);
    assert_eq!(got.len(), 1, "{found}");
    assert!(
        got[0].starts_with("sql:"),
        "a row id from a cut key: {}",
        got[0].chars().take(80).collect::<String>()
    );
    // Every id a search gives is one fetch finds (a keyword search reads without the page's
    // byte cap, so its row id is made from the whole key).
    let by_word = srv
        .tool_ok("/chatgpt", "search", json!({"query": "zebra"}))
        .await;
    for id in got.iter().chain(&ids(&by_word)) {
        let row = srv.tool_ok("/chatgpt", "fetch", json!({"id": id})).await;
        let text = row["text"].as_str().unwrap_or_default();
        assert!(text.contains("zebra-kkk"), "{id}");
    }
    srv.stop().await;
}
