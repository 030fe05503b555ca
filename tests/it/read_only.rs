//! Read-only by construction: a corpus of write and escape attempts that must all be refused,
//! with the database file unchanged afterwards, and harmless queries that merely mention
//! dangerous words and must run.

use serde_json::{Value, json};

use crate::support::*;

/// What the server must never change: object count, row counts, one row's value, version.
fn fingerprint() -> Vec<i64> {
    vec![
        db_count("SELECT count(*) FROM sqlite_schema"),
        db_count("SELECT count(*) FROM customers"),
        db_count("SELECT count(*) FROM regions"),
        db_count("SELECT count(*) FROM orders"),
        db_count("SELECT length(first_name) FROM customers WHERE customer_id = 1"),
        db_count("SELECT count(*) FROM pragma_table_info('customers')"),
        db_count("PRAGMA user_version"),
    ]
}

/// Write and escape attempts; `{tmp}` is a path that must not come to exist.
const ATTEMPTS: &[&str] = &[
    "INSERT INTO regions (region_id, name, code) VALUES (99, 'Atlantis', 'ATL')",
    "INSERT INTO regions SELECT region_id + 100, name || 'x', code || 'x' FROM regions",
    "UPDATE customers SET first_name = 'Mallory'",
    "DELETE FROM customers",
    "DELETE FROM customers WHERE customer_id = 1 RETURNING *",
    "DROP TABLE customers",
    "CREATE TABLE x (a INT)",
    "CREATE TEMP TABLE x AS SELECT * FROM customers",
    "CREATE VIEW v AS SELECT 1",
    "ALTER TABLE customers ADD COLUMN x INT",
    "SELECT 1; DROP TABLE customers",
    "SELECT 1; SELECT 2",
    "ATTACH DATABASE '{tmp}' AS x",
    "DETACH DATABASE main",
    "PRAGMA writable_schema=1",
    "PRAGMA query_only=0",
    "SELECT load_extension('x')",
    "SELECT readfile('/etc/passwd')",
    "SELECT writefile('{tmp}', 'x')",
    "WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d",
    "SELECT * FROM sqlite_master",
    "SELECT * FROM sqlite_schema",
    "SELECT * INTO x FROM customers",
    "REPLACE INTO regions (region_id, name, code) VALUES (1, 'x', 'x')",
    "INSERT OR REPLACE INTO regions (region_id, name, code) VALUES (1, 'x', 'x')",
    "VACUUM",
    "VACUUM INTO '{tmp}'",
    "ANALYZE",
    "REINDEX",
    "BEGIN; DELETE FROM customers; COMMIT",
    "SAVEPOINT s",
];

fn tmp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("mssql-mcp-it-escape-{tag}-{}", std::process::id()))
}

#[tokio::test]
async fn every_write_or_escape_attempt_through_execute_sql_is_refused() {
    let srv = Server::demo().await;
    let before = fingerprint();
    let tmp = tmp_path("sql");
    let mut let_through = Vec::new();
    for attempt in ATTEMPTS {
        let q = attempt.replace("{tmp}", &tmp.display().to_string());
        let result = srv
            .call_tool("/claude", "execute_sql", json!({"sql": q}))
            .await;
        if result["isError"] != true {
            let_through.push(format!("{q}\n    -> {}", tool_text(&result)));
        }
    }
    assert_eq!(fingerprint(), before, "the database changed");
    assert!(!tmp.exists(), "{} was created", tmp.display());
    assert!(
        let_through.is_empty(),
        "not refused:\n{}",
        let_through.join("\n")
    );
}

#[tokio::test]
async fn write_attempts_are_refused_by_the_guard_before_reaching_the_database() {
    let srv = Server::demo().await;
    let mut unexplained = Vec::new();
    for q in [
        "DELETE FROM customers",
        "DROP TABLE customers",
        "SELECT 1; DROP TABLE customers",
        "SELECT * INTO x FROM customers",
    ] {
        let msg = srv
            .tool_err("/claude", "execute_sql", json!({"sql": q}))
            .await;
        if !msg.starts_with("refused") {
            unexplained.push(format!("{q} -> {msg}"));
        }
    }
    assert!(
        unexplained.is_empty(),
        "refused by the database, not the guard:\n{}",
        unexplained.join("\n")
    );
}

#[tokio::test]
async fn every_write_or_escape_attempt_through_search_is_refused_or_only_searched_as_words() {
    let srv = Server::demo().await;
    let before = fingerprint();
    let tmp = tmp_path("search");
    let mut ran = Vec::new();
    for attempt in ATTEMPTS {
        let q = attempt.replace("{tmp}", &tmp.display().to_string());
        let result = srv
            .call_tool("/chatgpt", "search", json!({"query": q}))
            .await;
        if result["isError"] == true {
            continue;
        }
        // Not refused: then it must have been treated as keywords, so no result comes from
        // running it (ad-hoc SQL results carry `sql:` ids).
        let from_sql = result["structuredContent"]["results"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["id"].as_str().is_some_and(|id| id.starts_with("sql:")));
        if from_sql {
            ran.push(format!("{q}\n    -> {}", tool_text(&result)));
        }
    }
    assert_eq!(fingerprint(), before, "the database changed");
    assert!(!tmp.exists(), "{} was created", tmp.display());
    assert!(ran.is_empty(), "ran as SQL:\n{}", ran.join("\n"));
}

#[tokio::test]
async fn harmless_queries_that_mention_dangerous_words_run() {
    let srv = Server::demo().await;
    let cases: &[(&str, &str, Value)] = &[
        (
            "SELECT customer_id AS updated_at FROM customers WHERE customer_id = 1",
            "updated_at",
            json!(1),
        ),
        ("SELECT 1 AS deleted", "deleted", json!(1)),
        (
            "SELECT 'DROP TABLE customers' AS s",
            "s",
            json!("DROP TABLE customers"),
        ),
        (
            "SELECT 'x''; DELETE FROM customers; --' AS s",
            "s",
            json!("x'; DELETE FROM customers; --"),
        ),
        (
            "SELECT /* DELETE FROM customers */ count(*) AS n FROM customers",
            "n",
            json!(CUSTOMERS),
        ),
        (
            "SELECT count(*) AS n FROM customers -- DELETE FROM customers",
            "n",
            json!(CUSTOMERS),
        ),
        ("SELECT replace('a-b', '-', '+') AS r", "r", json!("a+b")),
        (
            "WITH recent AS (SELECT order_id FROM orders ORDER BY order_id DESC LIMIT 5) SELECT count(*) AS n FROM recent",
            "n",
            json!(5),
        ),
        (
            "SELECT count(*) AS n FROM (SELECT customer_id FROM customers UNION SELECT customer_id FROM orders)",
            "n",
            json!(CUSTOMERS),
        ),
        (
            "SELECT count(*) AS n FROM support_tickets WHERE description LIKE '%insert%' OR subject = 'update'",
            "n",
            json!(db_count(
                "SELECT count(*) FROM support_tickets WHERE description LIKE '%insert%' OR subject = 'update'"
            )),
        ),
    ];
    let mut failed = Vec::new();
    for (q, col, want) in cases {
        let result = srv
            .call_tool("/claude", "execute_sql", json!({"sql": q}))
            .await;
        let got = &result["structuredContent"]["rows"][0][col];
        if result["isError"] != false || got != want {
            failed.push(format!("{q}\n    -> {}", tool_text(&result)));
        }
    }
    assert!(
        failed.is_empty(),
        "did not run as expected:\n{}",
        failed.join("\n")
    );
}
