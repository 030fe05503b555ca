//! Hidden data: `/chatgpt` never shows `employees.salary`, and a scope with `deny_tables`
//! neither shows nor queries the denied table, however the query is written.

use serde_json::{Value, json};

use crate::support::*;

fn locked_config() -> String {
    config_toml(
        "",
        r#"
[[scope]]
path = "/locked"
database = "demo"
profile = "full"
deny_tables = ["employees"]
deny_columns = ["customers.email"]
"#,
    )
}

fn mentions_salary(v: &Value) -> bool {
    v.to_string().to_lowercase().contains("salary")
}

/// A salary as the demo database stores it, e.g. `310000.00`, to look for in output.
fn some_salary() -> String {
    let cents = db_count(
        "SELECT CAST(round(salary * 100) AS INTEGER) FROM employees WHERE employee_id = 1",
    );
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[tokio::test]
async fn a_query_naming_salary_is_refused_on_chatgpt() {
    let srv = Server::demo().await;
    let mut answered = Vec::new();
    for q in [
        "SELECT salary FROM employees",
        "SELECT employee_id, salary * 1 AS pay FROM employees",
        "SELECT e.salary FROM employees e",
        "SELECT (SELECT max(salary) FROM employees) AS m",
        "SELECT avg(salary) AS a FROM employees",
        "SELECT employee_id FROM employees ORDER BY salary DESC LIMIT 1",
        "SELECT employee_id FROM employees WHERE salary > 100000",
        "WITH s AS (SELECT salary AS x FROM employees) SELECT x FROM s",
    ] {
        let result = srv
            .call_tool("/chatgpt", "search", json!({"query": q}))
            .await;
        if result["isError"] != true {
            answered.push(format!("{q}\n    -> {}", tool_text(&result)));
        }
    }
    assert!(answered.is_empty(), "not refused:\n{}", answered.join("\n"));
}

#[tokio::test]
async fn select_star_on_chatgpt_masks_salary() {
    let srv = Server::demo().await;
    let result = srv
        .call_tool(
            "/chatgpt",
            "search",
            json!({"query": "SELECT * FROM employees ORDER BY employee_id LIMIT 3"}),
        )
        .await;
    assert_eq!(result["isError"], false, "{}", tool_text(&result));
    assert!(!mentions_salary(&result), "{result}");
    assert!(!result.to_string().contains(&some_salary()), "{result}");
    let first = result["structuredContent"]["results"][0]["id"]
        .as_str()
        .expect("a result")
        .to_string();
    let doc = srv.tool_ok("/chatgpt", "fetch", json!({"id": first})).await;
    assert!(!mentions_salary(&doc), "{doc}");
}

#[tokio::test]
async fn an_aggregate_over_select_star_of_employees_masks_salary_in_cached_rows() {
    let srv = Server::demo().await;
    let result = srv
        .call_tool(
            "/chatgpt",
            "search",
            json!({"query": "SELECT * FROM employees e JOIN regions r ON r.region_id = e.region_id LIMIT 2"}),
        )
        .await;
    assert_eq!(result["isError"], false, "{}", tool_text(&result));
    assert!(!mentions_salary(&result), "{result}");
    let id = result["structuredContent"]["results"][0]["id"]
        .as_str()
        .expect("a result")
        .to_string();
    let doc = srv.tool_ok("/chatgpt", "fetch", json!({"id": id})).await;
    assert!(!mentions_salary(&doc), "{doc}");
}

#[tokio::test]
async fn fetching_an_employee_on_chatgpt_never_shows_salary() {
    let srv = Server::demo().await;
    let doc = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.employees/1"}))
        .await;
    assert!(doc["metadata"]["values"]["employee_id"] == 1, "{doc}");
    assert!(!mentions_salary(&doc), "{doc}");
    assert!(!doc.to_string().contains(&some_salary()), "{doc}");
}

#[tokio::test]
async fn the_employees_schema_on_chatgpt_has_no_salary_column() {
    let srv = Server::demo().await;
    let doc = srv
        .tool_ok("/chatgpt", "fetch", json!({"id": "main.employees"}))
        .await;
    assert!(!mentions_salary(&doc), "{doc}");
    let listed = srv
        .tool_ok("/chatgpt", "search", json!({"query": "describe employees"}))
        .await;
    assert!(!mentions_salary(&listed), "{listed}");
    let all = srv
        .tool_ok("/chatgpt", "search", json!({"query": "list tables"}))
        .await;
    assert!(!mentions_salary(&all), "{all}");
    let sample = srv
        .tool_ok(
            "/chatgpt",
            "search",
            json!({"query": "sample employees limit 3"}),
        )
        .await;
    assert!(!mentions_salary(&sample), "{sample}");
}

#[tokio::test]
async fn the_employees_resource_on_chatgpt_has_no_salary() {
    let srv = Server::demo().await;
    let result = srv
        .modern("/chatgpt")
        .result(
            "resources/read",
            json!({"uri": "db://chatgpt/main.employees"}),
        )
        .await;
    assert!(!mentions_salary(&result), "{result}");
}

#[tokio::test]
async fn claude_does_see_salary() {
    let srv = Server::demo().await;
    let doc = srv
        .tool_ok("/claude", "fetch", json!({"id": "main.employees/1"}))
        .await;
    assert_eq!(doc["metadata"]["values"]["salary"], some_salary());
}

#[tokio::test]
async fn a_denied_table_cannot_be_queried_however_the_query_is_written() {
    let srv = Server::with_config(&locked_config()).await;
    let mut answered = Vec::new();
    for q in [
        "SELECT * FROM employees",
        "SELECT * FROM main.employees",
        "SELECT * FROM \"Employees\"",
        "SELECT * FROM [employees]",
        "SELECT count(*) FROM customers WHERE account_manager_id IN (SELECT employee_id FROM employees)",
        "SELECT c.customer_id, e.email FROM customers c JOIN employees e ON e.employee_id = c.account_manager_id",
        "WITH e AS (SELECT * FROM employees) SELECT count(*) FROM e",
        "SELECT customer_id FROM customers UNION SELECT employee_id FROM employees",
        "SELECT (SELECT email FROM employees LIMIT 1) AS leak",
        "SELECT EXISTS (SELECT 1 FROM employees WHERE salary > 0) AS x",
        "SELECT * FROM/**/employees",
        "SELECT * FROM temp.employees",
        "SELECT count(*) FROM customers WHERE account_manager_id IN employees",
        "WITH employees AS (SELECT 1 AS a) SELECT * FROM main.employees",
        "SELECT * FROM json_each((SELECT json_group_array(email) FROM employees))",
        "SELECT * FROM customers NATURAL JOIN employees",
    ] {
        let result = srv
            .call_tool("/locked", "execute_sql", json!({"sql": q}))
            .await;
        if result["isError"] != true {
            answered.push(format!("{q}\n    -> {}", tool_text(&result)));
        }
    }
    assert!(answered.is_empty(), "not refused:\n{}", answered.join("\n"));
}

#[tokio::test]
async fn a_denied_table_is_not_listed() {
    let srv = Server::with_config(&locked_config()).await;
    let out = srv.tool_ok("/locked", "list_tables", json!({})).await;
    let names = out.to_string();
    assert!(!names.contains("employees"), "{names}");
    assert_eq!(out["tables"].as_array().map(Vec::len), Some(9));
    let found = srv
        .tool_ok("/locked", "search", json!({"query": "list tables"}))
        .await;
    assert!(!found.to_string().contains("main.employees"), "{found}");
    let resources = srv
        .modern("/locked")
        .result("resources/list", json!({}))
        .await;
    assert!(!resources.to_string().contains("employees"), "{resources}");
}

#[tokio::test]
async fn a_denied_table_cannot_be_fetched_described_or_sampled() {
    let srv = Server::with_config(&locked_config()).await;
    let email_domain = "harborline.example";
    for (tool, args) in [
        ("fetch", json!({"id": "main.employees"})),
        ("fetch", json!({"id": "main.employees/1"})),
        ("describe_table", json!({"table": "employees"})),
        ("get_table_sample", json!({"table": "employees"})),
        ("search", json!({"query": "describe employees"})),
        ("search", json!({"query": "sample employees"})),
    ] {
        let msg = srv.tool_err("/locked", tool, args.clone()).await;
        assert!(!msg.contains(email_domain), "{tool} {args} leaked: {msg}");
    }
    let r = srv.get("/locked/records/main.employees/1", &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn a_keyword_search_never_returns_rows_of_a_denied_table() {
    let srv = Server::with_config(&locked_config()).await;
    // Every employee's e-mail is at the company's domain; no other table's text has it
    // except where customers mention staff, so the employee rows would dominate.
    let found = srv
        .tool_ok(
            "/locked",
            "search",
            json!({"query": "harborline.example employees"}),
        )
        .await;
    assert!(!found.to_string().contains("main.employees"), "{found}");
}

#[tokio::test]
async fn related_records_never_point_into_a_denied_table() {
    let srv = Server::with_config(&locked_config()).await;
    let managed =
        db_count("SELECT min(customer_id) FROM customers WHERE account_manager_id IS NOT NULL");
    let doc = srv
        .tool_ok(
            "/locked",
            "fetch",
            json!({"id": format!("main.customers/{managed}")}),
        )
        .await;
    assert!(
        !doc["metadata"]["related"].to_string().contains("employees"),
        "{doc}"
    );
    let desc = srv
        .tool_ok("/locked", "describe_table", json!({"table": "customers"}))
        .await;
    assert!(
        !desc["foreign_keys"].to_string().contains("employees"),
        "{desc}"
    );
}

#[tokio::test]
async fn the_denied_tables_resource_is_not_found() {
    let srv = Server::with_config(&locked_config()).await;
    let c = Legacy::connect(&srv, "/locked", V1125).await;
    let r = c
        .request(
            "resources/read",
            json!({"uri": "db://locked/main.employees"}),
        )
        .await;
    assert_eq!(r.error_code(), Some(-32002), "{}", r.text);
}

#[tokio::test]

async fn ordering_by_the_position_of_a_hidden_column_is_refused() {
    let srv = Server::demo().await;
    let salary_position =
        db_count("SELECT cid + 1 FROM pragma_table_info('employees') WHERE name = 'salary'");
    for q in [
        format!("SELECT * FROM employees ORDER BY {salary_position} DESC LIMIT 3"),
        format!("SELECT * FROM employees GROUP BY {salary_position} LIMIT 3"),
    ] {
        let result = srv
            .call_tool("/chatgpt", "search", json!({"query": q}))
            .await;
        assert_eq!(
            result["isError"],
            true,
            "{q}\n    -> {}",
            tool_text(&result)
        );
    }
}

#[tokio::test]
async fn a_keyword_search_never_matches_a_hidden_column() {
    let srv = Server::with_config(&locked_config()).await;
    let email: String = inspect_db()
        .query_row(
            "SELECT email FROM customers WHERE customer_id = 42",
            [],
            |r| r.get(0),
        )
        .expect("customer 42");
    // Where the column is visible, the e-mail finds its customer…
    let open = Server::demo().await;
    let control = open
        .tool_ok("/claude", "search", json!({"query": email}))
        .await;
    assert!(
        control.to_string().contains("main.customers/42\""),
        "{control}"
    );
    // …where it is hidden, it does not.
    let found = srv
        .tool_ok("/locked", "search", json!({"query": email}))
        .await;
    assert!(
        !found.to_string().contains("main.customers/42\""),
        "{found}"
    );
    let doc = srv
        .tool_ok("/locked", "fetch", json!({"id": "main.customers/42"}))
        .await;
    assert!(!doc.to_string().contains(&email), "{doc}");
}

#[tokio::test]
async fn a_harmless_cte_that_shadows_a_denied_table_name_runs() {
    let srv = Server::with_config(&locked_config()).await;
    let out = srv
        .tool_ok(
            "/locked",
            "execute_sql",
            json!({"sql": "WITH employees AS (SELECT 1 AS a) SELECT a FROM employees"}),
        )
        .await;
    assert_eq!(out["rows"][0]["a"], 1);
}

/// A scope that hides a foreign-key column (`orders.customer_id`) and part of a composite
/// primary key (`order_lines.line_no`).
fn keys_config() -> String {
    config_toml(
        "",
        r#"
[[scope]]
path = "/keys"
database = "demo"
profile = "full"
deny_columns = ["orders.customer_id", "order_lines.line_no"]
"#,
    )
}

/// A hidden column's name appears in no key or relationship, and its values in no id: a
/// primary key that includes one is not a key here (its rows get `sql:` ids, and `fetch` by
/// key cannot test guesses of the hidden value), and a foreign key through one is no link.
#[tokio::test]
async fn hidden_key_and_foreign_key_columns_appear_in_no_schema_id_or_link() {
    let srv = Server::with_config(&keys_config()).await;
    let lines = srv
        .tool_ok("/keys", "describe_table", json!({"table": "order_lines"}))
        .await;
    assert!(!lines.to_string().contains("line_no"), "{lines}");
    let orders = srv
        .tool_ok("/keys", "describe_table", json!({"table": "orders"}))
        .await;
    assert!(!orders.to_string().contains("customer_id"), "{orders}");
    let customers = srv
        .tool_ok("/keys", "describe_table", json!({"table": "customers"}))
        .await;
    assert!(
        !customers["referenced_by"]
            .to_string()
            .contains("main.orders"),
        "{customers}"
    );
    for (tool, args) in [
        ("list_tables", json!({})),
        ("search", json!({"query": "describe order_lines"})),
        ("fetch", json!({"id": "main.order_lines"})),
        (
            "get_table_sample",
            json!({"table": "order_lines", "limit": 3}),
        ),
    ] {
        let out = srv.tool_ok("/keys", tool, args.clone()).await;
        assert!(!out.to_string().contains("line_no"), "{tool} {args}: {out}");
    }
    let c = Legacy::connect(&srv, "/keys", V1125).await;
    let r = c
        .request(
            "resources/read",
            json!({"uri": "db://keys/main.order_lines"}),
        )
        .await;
    assert!(
        r.text.contains("order_lines") && !r.text.contains("line_no"),
        "{}",
        r.text
    );

    // No oracle: an existing and a missing line get the same answer, which names no column.
    let line = db_count("SELECT min(line_no) FROM order_lines WHERE order_id = 1042");
    let real = srv
        .tool_err(
            "/keys",
            "fetch",
            json!({"id": format!("main.order_lines/1042,{line}")}),
        )
        .await;
    let guess = srv
        .tool_err("/keys", "fetch", json!({"id": "main.order_lines/1042,999"}))
        .await;
    assert_eq!(
        real.replace(&line.to_string(), "N"),
        guess.replace("999", "N")
    );
    assert!(!real.contains("line_no"), "{real}");
    let page = srv
        .get(&format!("/keys/records/main.order_lines/1042,{line}"), &[])
        .await;
    assert_eq!(page.status, 404, "{}", page.text);

    // Rows of such a table are cited by `sql:` ids; an order links to no customer.
    let found = srv
        .tool_ok(
            "/keys",
            "search",
            json!({"query": "SELECT * FROM order_lines WHERE order_id = 1042"}),
        )
        .await;
    let ids: Vec<&str> = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| id.starts_with("sql:")),
        "{found}"
    );
    let order = srv
        .tool_ok("/keys", "fetch", json!({"id": "main.orders/1042"}))
        .await;
    assert!(!order.to_string().contains("customer"), "{order}");
}

/// A table whose key includes a hidden column has no key in the scope, and its samples must
/// not follow the hidden key's order either: `order_lines` is a rowid table whose rows were
/// inserted in `(order_id, line_no)` order, so ordering by `rowid` would list each order's
/// lines by the hidden `line_no`. They come ordered by the visible columns, and the pages of
/// a sample join up to the sample in one page.
#[tokio::test]
async fn a_sample_of_a_table_whose_key_is_hidden_follows_only_visible_values() {
    let srv = Server::with_config(&keys_config()).await;
    let sample = |limit: u64, cursor: Option<String>| {
        let mut args = json!({"table": "order_lines", "limit": limit});
        if let Some(c) = cursor {
            args["cursor"] = json!(c);
        }
        let srv = &srv;
        async move { srv.tool_ok("/keys", "get_table_sample", args).await }
    };
    let rows = |out: &Value| out["rows"].as_array().expect("rows").clone();
    let whole = rows(&sample(60, None).await);
    assert_eq!(whole.len(), 60);
    let keys: Vec<(i64, i64)> = whole
        .iter()
        .map(|r| {
            (
                r["order_id"].as_i64().expect("order_id"),
                r["product_id"].as_i64().expect("product_id"),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "ordered by the visible columns");
    let first = sample(30, None).await;
    let cursor = first["next_cursor"].as_str().map(str::to_string);
    assert!(cursor.is_some(), "{first}");
    let mut paged = rows(&first);
    paged.extend(rows(&sample(30, cursor).await));
    assert_eq!(paged, whole);
    assert!(!Value::Array(whole).to_string().contains("line_no"));
}

/// `c.customer_id` is customers' own (visible) column beside a hidden `orders.customer_id`:
/// the guard lets it through, the result column named `customer_id` is still masked (masking
/// goes by name), and under another name its values come back. `o.customer_id` is refused.
#[tokio::test]
async fn a_visible_column_named_like_a_hidden_one_passes_when_qualified() {
    let srv = Server::with_config(&keys_config()).await;
    let join = "FROM customers c JOIN orders o ON o.order_id = c.customer_id \
                ORDER BY c.customer_id LIMIT 3";
    let sql = |q: &str| json!({"sql": q});
    let named = srv
        .call_tool(
            "/keys",
            "execute_sql",
            sql(&format!("SELECT c.customer_id, c.last_name {join}")),
        )
        .await;
    assert_eq!(named["isError"], false, "{named}");
    let shown: Value = serde_json::from_str(tool_text(&named)).expect("JSON rows");
    assert_eq!(shown["masked_columns"], json!(["customer_id"]), "{shown}");
    assert_eq!(shown["columns"], json!(["last_name"]), "{shown}");
    let renamed = srv
        .tool_ok(
            "/keys",
            "execute_sql",
            sql(&format!("SELECT c.customer_id AS cid, c.last_name {join}")),
        )
        .await;
    assert_eq!(renamed["rows"][0]["cid"], 1, "{renamed}");
    let refused = srv
        .call_tool(
            "/keys",
            "execute_sql",
            sql(&format!("SELECT o.customer_id AS cid {join}")),
        )
        .await;
    assert_eq!(refused["isError"], true, "{refused}");
    assert!(
        tool_text(&refused).contains("column `customer_id` of table `orders` is hidden"),
        "{refused}"
    );
}
