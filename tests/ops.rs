//! Operations, end to end: health and readiness, Prometheus metrics (checked by `promtool` and
//! scraped by a real Prometheus), the audit log, cache management through the CLI, JSON logs,
//! systemd readiness notification and the systemd unit.
//!
//! Servers run on `127.0.0.1:0` in this process (or the real binary as a child process where
//! the test is about the process: logs, signals, systemd). Peers that come from Debian packages
//! (`promtool`/`prometheus` from `prometheus`, `systemd-analyze` from `systemd`) are required
//! under `CI`; elsewhere a missing one skips its test with a note.

mod common;

use common::free_port;
use std::ffi::OsStr;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mssql_mcp::app;
use mssql_mcp::config::Config;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_mssql-mcp");

/// Whether `cmd` is installed; under `CI` its absence fails the test with the install hint.
fn peer(cmd: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("`{cmd}` is missing: apt-get install -y {package} (listed in .ci/run)");
        }
        eprintln!("skipped: `{cmd}` is not installed (apt-get install -y {package})");
    }
    found
}

/// A small SQLite database with one table.
fn make_db(dir: &Path) -> PathBuf {
    let path = dir.join("crm.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("create db");
    conn.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT);
         INSERT INTO customers (name, city) VALUES ('Alice Martin', 'Lyon'), ('Bob Stone', 'Oslo'),
           ('Carla Diaz', 'Lima');",
    )
    .expect("fill db");
    path
}

/// A config serving `db` at `/chatgpt` and `/claude`, with `extra` TOML appended.
fn config_text(dir: &Path, db: &Path, server_extra: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
insecure_no_auth = true
state_dir = {state:?}
shutdown_grace_secs = 2
{server_extra}

[[database]]
name = "main"
kind = "sqlite"
path = {db:?}

[[scope]]
path = "/chatgpt"
database = "main"
profile = "chatgpt"

[[scope]]
path = "/claude"
database = "main"
profile = "full"

{extra}
"#,
        state = dir.display().to_string(),
        db = db.display().to_string(),
    )
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), app::StartError>>,
    state: mssql_mcp::state::AppState,
}

impl Server {
    async fn start(config: Config, no_auth: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = app::build_state(config, no_auth).await.expect("state");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Stops the server and waits for it (and so for the audit writer's last flush).
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
    }

    /// `tools/call` over the seed-guide style `POST {scope}/sse` (plain JSON in and out).
    async fn tool(&self, scope: &str, name: &str, args: Value) -> Value {
        tool_at(&self.url(&format!("{scope}/sse")), name, args).await
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = client().get(self.url(path)).send().await.expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

async fn start_plain(extra: &str) -> (tempfile::TempDir, PathBuf, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let config = Config::parse(&config_text(dir.path(), &db, "", extra)).expect("config");
    let server = Server::start(config, true).await;
    (dir, db, server)
}

/// A query SQLite works at until its time limit stops it (a count to 10^12).
const SLOW_SQL: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000000) SELECT count(*) AS n FROM c";

/// A server on a fresh database in `dir` whose requests time out after 1 s and whose queries
/// after 3 s.
async fn start_timing_out(dir: &Path) -> Server {
    let db = make_db(dir);
    let text = config_text(dir, &db, "", "[limits]\nrequest_timeout_secs = 1\n").replace(
        "kind = \"sqlite\"",
        "kind = \"sqlite\"\nquery_timeout_secs = 3",
    );
    Server::start(Config::parse(&text).expect("config"), true).await
}

fn audit_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

#[tokio::test]
async fn liveness_answers_and_readiness_reports_every_check() {
    let (_dir, _db, srv) = start_plain("").await;
    let resp = client().get(srv.url("/health")).send().await.expect("GET");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().contains_key("x-request-id"),
        "every response carries its request id"
    );
    let (status, body) = srv.get("/health/ready").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["checks"]["database:main"]["status"], "ok", "{v}");
    assert_eq!(v["checks"]["tls"]["status"], "skipped");
    assert_eq!(v["checks"]["state_dir"]["status"], "ok");
    srv.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_when_the_database_file_goes_away() {
    let (_dir, db, srv) = start_plain("").await;
    assert_eq!(srv.get("/health/ready").await.0, 200);
    std::fs::remove_file(&db).expect("remove db");
    // The last result is reused for a few seconds, so probes cannot hammer the database.
    assert_eq!(srv.get("/health/ready").await.0, 200);
    tokio::time::sleep(mssql_mcp::ops::READY_CACHE + Duration::from_millis(200)).await;
    let (status, body) = srv.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["checks"]["database:main"]["status"], "fail", "{v}");
    assert_eq!(srv.get("/health").await.0, 200, "liveness is unaffected");
    srv.stop().await;
}

/// A database whose every connection is busy running queries answers: readiness stays 200
/// instead of reporting it down because the check found no free connection. SQLite's check
/// always opens a connection of its own, so this holds by design there; SQL Server's, which
/// goes by a recent answer on the busy pool or else logs in beside it, is tested in
/// `tests/mssql.rs` (`ping_answers_while_every_pooled_connection_is_busy`).
#[tokio::test]
async fn readiness_reports_a_busy_pool_as_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let text = config_text(dir.path(), &db, "", "").replace(
        "kind = \"sqlite\"",
        "kind = \"sqlite\"\npool_size = 1\nquery_timeout_secs = 9",
    );
    let srv = Server::start(Config::parse(&text).expect("config"), true).await;
    let slow = SLOW_SQL;
    let query = srv.tool("/claude", "execute_sql", json!({ "sql": slow }));
    let probe = async {
        // The slow query has the pool's one connection by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        srv.get("/health/ready").await
    };
    let (_, (status, body)) = tokio::join!(query, probe);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["checks"]["database:main"]["status"], "ok", "{v}");
    srv.stop().await;
}

/// The public listener's readiness report says which check failed, not why (the database
/// error names the file); the admin listener's says why.
#[tokio::test]
async fn readiness_details_are_shown_on_the_admin_listener_only() {
    let (dir, db, srv) = start_plain("").await;
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin_addr = admin.local_addr().expect("admin addr");
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin_task = tokio::spawn(mssql_mcp::oauth::admin::serve(
        srv.state.clone(),
        admin,
        async move {
            let _ = admin_stopped.await;
        },
    ));
    std::fs::remove_file(&db).expect("remove db");
    let (status, body) = srv.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["status"], "fail", "{v}");
    assert_eq!(v["checks"]["database:main"]["status"], "fail", "{v}");
    assert_eq!(v["checks"]["state_dir"]["status"], "ok", "{v}");
    let dir_text = dir.path().display().to_string();
    assert!(
        !body.contains("detail") && !body.contains(&dir_text),
        "no detail on the public listener: {body}"
    );
    let resp = client()
        .get(format!("http://{admin_addr}/health/ready"))
        .send()
        .await
        .expect("admin GET");
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.expect("admin JSON");
    assert!(
        v["checks"]["database:main"]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "the admin listener gives the detail: {v}"
    );
    assert_eq!(v["checks"]["state_dir"]["detail"], "writable", "{v}");
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    srv.stop().await;
}

#[tokio::test]
async fn readiness_fails_for_a_sql_server_that_does_not_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    std::fs::write(dir.path().join("pw"), "x").expect("password file");
    let closed = free_port();
    let extra = format!(
        "[[database]]\nname = \"sales\"\nkind = \"mssql\"\nhost = \"127.0.0.1\"\nport = {closed}\ndatabase = \"Sales\"\nuser = \"reader\"\npassword = {{ file = {:?} }}\nencrypt = \"off\"\nconnect_timeout_secs = 2\n\n[[scope]]\npath = \"/sales\"\ndatabase = \"sales\"\n",
        dir.path().join("pw").display().to_string()
    );
    let config = Config::parse(&config_text(dir.path(), &db, "", &extra)).expect("config");
    let srv = Server::start(config, true).await;
    let (status, body) = srv.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["checks"]["database:sales"]["status"], "fail", "{v}");
    assert_eq!(v["checks"]["database:main"]["status"], "ok", "{v}");
    assert!(!body.contains("\"x\""), "no password in the report");
    // The failed attempts are counted for alerting; the SQLite side opens a pooled
    // connection for its first query.
    srv.tool(
        "/claude",
        "execute_sql",
        json!({"sql": "SELECT name FROM customers WHERE id = 1"}),
    )
    .await;
    let (_, metrics) = srv.get("/metrics").await;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert!(value("mssql_mcp_db_connect_failures_total{database=\"sales\"}") >= 1.0);
    assert_eq!(
        value("mssql_mcp_db_connect_failures_total{database=\"main\"}"),
        0.0
    );
    assert!(value("mssql_mcp_db_pool_connections_opened_total{database=\"main\"}") >= 1.0);
    assert_eq!(
        value("mssql_mcp_db_pool_connections_opened_total{database=\"sales\"}"),
        0.0
    );
    srv.stop().await;
}

#[tokio::test]
async fn metrics_count_tool_calls_requests_and_queries() {
    let (_dir, _db, srv) = start_plain("").await;
    let ok = srv
        .tool(
            "/claude",
            "execute_sql",
            json!({"sql": "SELECT name FROM customers"}),
        )
        .await;
    assert_eq!(ok["result"]["isError"], false, "{ok}");
    let refused = srv
        .tool(
            "/claude",
            "execute_sql",
            json!({"sql": "DELETE FROM customers"}),
        )
        .await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    srv.tool("/chatgpt", "search", json!({"query": "Alice"}))
        .await;
    let (status, text) = srv.get("/metrics").await;
    assert_eq!(status, 200);
    for want in [
        r#"mssql_mcp_tool_calls_total{scope="/claude",status="ok",tool="execute_sql"} 1"#,
        r#"mssql_mcp_tool_calls_total{scope="/claude",status="refused",tool="execute_sql"} 1"#,
        r#"mssql_mcp_tool_calls_total{scope="/chatgpt",status="ok",tool="search"} 1"#,
        r#"mssql_mcp_tool_duration_seconds_count{scope="/claude",tool="execute_sql"} 2"#,
        r#"mssql_mcp_http_requests_total{method="POST",route="/claude/sse",status="200"} 2"#,
        r#"mssql_mcp_http_request_duration_seconds_bucket{route="/claude/sse",le="+Inf"} 2"#,
        r#"mssql_mcp_db_query_duration_seconds_count{database="main",operation="query"} 1"#,
        r#"mssql_mcp_db_pool_max_connections{database="main"} 8"#,
        r#"mssql_mcp_cache_entries{scope="/claude"}"#,
        r#"mssql_mcp_build_info{version=""#,
        "mssql_mcp_ip_denied_total 0",
        "mssql_mcp_sse_streams 0",
        "mssql_mcp_connections_refused_total 0",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    // Process numbers, read from /proc at scrape time; the scrape's own connection is open.
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
    };
    assert!(value("mssql_mcp_connections") >= 1.0);
    let (open, max) = (value("process_open_fds"), value("process_max_fds"));
    assert!(open > 0.0 && open < max, "{open} of {max}");
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_start_time_seconds") > 1.7e9);
    // No raw paths: a 404 counts under one label, whatever was asked for.
    srv.get("/no/such/page-12345").await;
    let (_, text) = srv.get("/metrics").await;
    assert!(!text.contains("page-12345"));
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    srv.stop().await;
}

/// A tool call that outlasts `limits.request_timeout_secs` is answered 503 and counted under
/// its route, not as `unmatched` (the timeout once sat outside the router, which knows the
/// route).
#[tokio::test]
async fn a_request_that_times_out_is_counted_under_its_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The query runs until SQLite's progress handler stops it at 3 s, past the 1 s request
    // timeout (and no longer: the call's future is dropped at 1 s, the query is not).
    let srv = start_timing_out(dir.path()).await;
    let slow = SLOW_SQL;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "execute_sql", "arguments": {"sql": slow}}});
    let started = Instant::now();
    let resp = client()
        .post(srv.url("/claude/sse"))
        .json(&body)
        .send()
        .await
        .expect("tool call");
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "answered at the request timeout, not the query's: {:?}",
        started.elapsed()
    );
    let (status, text) = srv.get("/metrics").await;
    assert_eq!(status, 200);
    for want in [
        r#"mssql_mcp_http_requests_total{method="POST",route="/claude/sse",status="503"} 1"#,
        r#"mssql_mcp_http_request_duration_seconds_count{route="/claude/sse"} 1"#,
        r#"mssql_mcp_tool_calls_total{scope="/claude",status="cancelled",tool="execute_sql"} 1"#,
        "mssql_mcp_http_timeouts_total 1",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
    assert!(
        !text.contains(r#"route="unmatched""#),
        "nothing here is unmatched:\n{text}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    if !peer("promtool", "prometheus") {
        return;
    }
    let (_dir, _db, srv) = start_plain("").await;
    srv.tool("/claude", "list_tables", json!({})).await;
    let (_, text) = srv.get("/metrics").await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_public_side_refuses_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    // The test client plays a reverse proxy forwarding an internet client.
    let text = config_text(dir.path(), &db, "trusted_proxies = [\"127.0.0.1\"]", "");
    let srv = Server::start(Config::parse(&text).expect("config"), true).await;
    let public = client()
        .get(srv.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .expect("GET");
    assert_eq!(public.status(), 403);
    let body = public.text().await.unwrap_or_default();
    assert!(!body.contains("mssql_mcp_"), "{body}");
    assert_eq!(srv.get("/metrics").await.0, 200, "loopback may read them");
    srv.stop().await;
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_server() {
    if !peer("prometheus", "prometheus") {
        return;
    }
    let (dir, _db, srv) = start_plain("").await;
    srv.tool("/claude", "list_tables", json!({})).await;
    let prom_port = free_port();
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mssql-mcp\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            srv.addr.port()
        ),
    )
    .expect("prometheus.yml");
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let query = format!(
        "http://127.0.0.1:{prom_port}/api/v1/query?query=mssql_mcp_tool_calls_total%7Btool%3D%22list_tables%22%2Cstatus%3D%22ok%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    let mut found = None;
    while Instant::now() < deadline {
        if let Ok(r) = client().get(&query).send().await
            && let Ok(v) = r.json::<Value>().await
        {
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                found = Some(value.to_string());
                break;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = prom.kill();
    let _ = prom.wait();
    assert_eq!(
        found.as_deref(),
        Some("1"),
        "Prometheus never returned the metric; last answer: {last}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn tool_calls_are_audited_with_caller_query_rows_and_outcome() {
    let (dir, _db, srv) = start_plain("").await;
    srv.tool(
        "/claude",
        "execute_sql",
        json!({"sql": "SELECT id, name FROM customers WHERE city = 'Lyon'"}),
    )
    .await;
    srv.tool(
        "/claude",
        "execute_sql",
        json!({"sql": "DROP TABLE customers"}),
    )
    .await;
    // A record page (a search result's `url`) reads the database too.
    let page = client()
        .get(srv.url("/claude/records/main.customers/2"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("record page");
    assert_eq!(page.status(), 200);
    srv.stop().await;
    let lines = audit_lines(dir.path());
    let calls: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "tool_call").collect();
    assert_eq!(calls.len(), 3, "{lines:?}");
    assert_eq!(calls[2]["tool"], "fetch");
    assert_eq!(calls[2]["outcome"], "ok");
    assert_eq!(calls[2]["rows"], 1);
    assert!(
        calls[2]["query"]
            .as_str()
            .is_some_and(|q| q.contains("main.customers/2") && q.contains("records")),
        "{}",
        calls[2]
    );
    let ok = calls[0];
    assert_eq!(ok["scope"], "/claude");
    assert_eq!(ok["tool"], "execute_sql");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["rows"], 1);
    assert_eq!(ok["outcome"], "ok");
    assert!(
        ok["query"]
            .as_str()
            .is_some_and(|q| q.contains("city = 'Lyon'"))
    );
    assert!(ok["duration_ms"].is_number());
    assert!(ok["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    let refused = calls[1];
    assert_eq!(refused["outcome"], "refused");
    assert!(refused["error"].is_string());
}

/// A call whose client goes away before the answer is still counted and audited, as
/// `cancelled` with its query: the query may well still be running in the database.
#[tokio::test]
async fn a_call_abandoned_by_its_client_is_audited_as_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let text = config_text(dir.path(), &db, "", "").replace(
        "kind = \"sqlite\"",
        "kind = \"sqlite\"\nquery_timeout_secs = 3",
    );
    let srv = Server::start(Config::parse(&text).expect("config"), true).await;
    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) \
                SELECT count(*) AS n FROM c";
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "execute_sql", "arguments": {"sql": slow}}});
    let gave_up = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client")
        .post(srv.url("/claude/sse"))
        .json(&body)
        .send()
        .await;
    assert!(gave_up.is_err(), "the slow query answered within 0.5 s");
    // The server notices the closed connection and drops the call.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cancelled = loop {
        let (_, metrics) = srv.get("/metrics").await;
        let counted = metrics.lines().any(|l| {
            l.starts_with("mssql_mcp_tool_calls_total")
                && l.contains("tool=\"execute_sql\"")
                && l.contains("status=\"cancelled\"")
                && l.ends_with(" 1")
        });
        if counted {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(cancelled, "no cancelled call counted");
    srv.stop().await;
    let lines = audit_lines(dir.path());
    let call = lines
        .iter()
        .find(|l| l["kind"] == "tool_call")
        .unwrap_or_else(|| panic!("no tool call audited: {lines:?}"));
    assert_eq!(call["outcome"], "cancelled", "{call}");
    assert_eq!(call["tool"], "execute_sql");
    assert!(
        call["query"]
            .as_str()
            .is_some_and(|q| q.contains("RECURSIVE")),
        "{call}"
    );
}

/// A tool call still running when the shutdown starts is answered during the drain, and
/// audited: the audit writer stops only once the drain is over.
#[tokio::test]
async fn a_tool_call_answered_during_the_shutdown_drain_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let text = config_text(dir.path(), &db, "", "")
        .replace("shutdown_grace_secs = 2", "shutdown_grace_secs = 30");
    let mut srv = Server::start(Config::parse(&text).expect("config"), true).await;
    // About a second or two of SQLite work, counted in one row.
    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                WHERE x < 1000000) SELECT count(*) AS n FROM c";
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "execute_sql", "arguments": {"sql": slow}}});
    let call = client().post(srv.url("/claude/sse")).json(&body).send();
    let call = tokio::spawn(async move {
        let resp = call.await.expect("tool call");
        let status = resp.status().as_u16();
        (
            status,
            resp.text().await.unwrap_or_default(),
            Instant::now(),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stop_sent = Instant::now();
    if let Some(tx) = srv.stop.take() {
        let _ = tx.send(());
    }
    let (status, text, answered) = call.await.expect("the call's task");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("1000000"), "the query's answer: {text}");
    assert!(
        answered > stop_sent,
        "the call must still be running when the shutdown starts (it took too little time)"
    );
    tokio::time::timeout(Duration::from_secs(30), &mut srv.task)
        .await
        .expect("the server stops after the drain")
        .expect("server task")
        .expect("server result");
    let lines = audit_lines(dir.path());
    let call = lines
        .iter()
        .find(|l| l["kind"] == "tool_call" && l["tool"] == "execute_sql")
        .unwrap_or_else(|| panic!("no record of the call answered during the drain: {lines:?}"));
    assert_eq!(call["outcome"], "ok", "{call}");
    assert_eq!(call["rows"], 1, "{call}");
}

/// A config with authentication on and `extra` before one user, alice (every scope); her
/// password and its hash.
fn with_alice(dir: &Path, db: &Path, extra: &str) -> (String, &'static str, String) {
    let password = "correct horse battery staple";
    let hash = mssql_mcp::oauth::password::hash(password).expect("hash");
    let text = config_text(
        dir,
        db,
        "",
        &format!(
            "{extra}[[oauth.users]]\nusername = \"alice\"\npassword_hash = \"{hash}\"\nscopes = [\"*\"]\n"
        ),
    )
    .replace("insecure_no_auth = true", "insecure_no_auth = false");
    (text, password, hash)
}

#[tokio::test]
async fn oauth_decisions_are_audited_without_tokens_secrets_or_passwords() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let (text, password, hash) = with_alice(dir.path(), &db, "");
    let srv = Server::start(Config::parse(&text).expect("config"), false).await;
    // A registration (confidential client: the response carries a secret).
    let reg: Value = client()
        .post(srv.url("/chatgpt/register"))
        .json(
            &json!({"client_name": "Audit Test", "redirect_uris": ["https://chatgpt.com/cb"],
            "token_endpoint_auth_method": "client_secret_post"}),
        )
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("register JSON");
    let client_id = reg["client_id"].as_str().expect("client_id").to_string();
    let secret = reg["client_secret"].as_str().unwrap_or("").to_string();
    // A token request with a made-up code: refused.
    let code = "mcp_code_AUDITSECRETCODE0123456789";
    let verifier = "VERIFIERSECRET0123456789012345678901234567890";
    let resp = client()
        .post(srv.url("/chatgpt/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", &client_id),
            ("client_secret", &secret),
            ("code_verifier", verifier),
            ("redirect_uri", "https://chatgpt.com/cb"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), 400);
    // A made-up bearer token at the MCP endpoint: refused.
    let bearer = "mcp_at_AUDITSECRETBEARER0123456789";
    let resp = client()
        .post(srv.url("/chatgpt/mcp"))
        .bearer_auth(bearer)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .expect("mcp");
    assert_eq!(resp.status(), 401);
    // A person signing in to open a record page (a citation), then signing out.
    let next = "/chatgpt/records/main.customers/1";
    let (view, csrf) = viewer_sign_in(&srv, next, "alice", password).await;
    let record = client()
        .get(srv.url(next))
        .header("accept", "text/html")
        .header("cookie", &view)
        .send()
        .await
        .expect("record page");
    assert_eq!(record.status(), 200);
    let out = client()
        .post(srv.url("/chatgpt/records"))
        .header("cookie", &view)
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 200);
    let metrics = srv.get("/metrics").await.1;
    srv.stop().await;

    let raw = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit file");
    let lines = audit_lines(dir.path());
    let event = |e: &str| {
        lines
            .iter()
            .find(|l| l["kind"] == "oauth" && l["event"] == e)
            .unwrap_or_else(|| panic!("no `{e}` record in {raw}"))
    };
    let r = event("register");
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["client_id"], client_id.as_str());
    assert_eq!(r["client_ip"], "127.0.0.1");
    let t = event("token");
    assert_eq!(t["outcome"], "refused");
    assert_eq!(t["client_id"], client_id.as_str());
    assert!(
        t["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid_grant"))
    );
    assert_eq!(event("bearer")["outcome"], "refused");
    assert_eq!(event("bearer")["client_ip"], "127.0.0.1");
    let viewer = event("sign_in");
    assert_eq!(viewer["outcome"], "viewer");
    assert_eq!(viewer["user"], "alice");
    assert_eq!(viewer["client_id"], "mssql-mcp:record-viewer");
    assert_eq!(event("sign_out")["user"], "alice");
    let page_view = lines
        .iter()
        .find(|l| l["kind"] == "tool_call" && l["tool"] == "fetch")
        .unwrap_or_else(|| panic!("no record page view in {raw}"));
    assert_eq!(page_view["user"], "alice");
    assert_eq!(page_view["client_id"], "mssql-mcp:record-viewer");
    let view_token = view.trim_start_matches("mcp_view=");
    for secret_value in [
        code,
        verifier,
        bearer,
        password,
        hash.as_str(),
        view_token,
        &csrf,
    ] {
        assert!(!raw.contains(secret_value), "audit leaks `{secret_value}`");
    }
    if !secret.is_empty() {
        assert!(!raw.contains(&secret), "audit leaks the client secret");
    }
    assert!(
        metrics.contains(r#"mssql_mcp_oauth_registrations_total{outcome="ok",scope="/chatgpt"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"mssql_mcp_oauth_token_requests_total{grant_type="authorization_code",outcome="invalid_grant",scope="/chatgpt"} 1"#), "{metrics}");
    assert!(
        metrics.contains("mssql_mcp_oauth_active_tokens 0"),
        "{metrics}"
    );
}

/// Signs `user` in on `/chatgpt`'s record viewer sign-in page, for the record page `next`:
/// the viewer cookie (`mcp_view=…`) and the form's CSRF token.
async fn viewer_sign_in(srv: &Server, next: &str, user: &str, password: &str) -> (String, String) {
    let page = client()
        .get(srv.url(&format!(
            "/chatgpt/sign-in?next={}",
            next.replace('/', "%2F")
        )))
        .send()
        .await
        .expect("sign-in page");
    assert_eq!(page.status(), 200);
    let form_cookie = page.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    let body = page.text().await.expect("page");
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).expect("csrf field") + marker.len();
    let csrf = body[start..start + 43].to_string();
    let signed_in = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(srv.url("/chatgpt/sign-in"))
        .header("cookie", &form_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("next", next),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 303);
    let view = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mcp_view="))
        .and_then(|v| v.split(';').next())
        .expect("viewer cookie")
        .to_string();
    (view, csrf)
}

/// A record page is a `fetch`, and costs what a `fetch` tool call does: it draws on the
/// caller's per-client tool-call bucket (shared with its `tools/call`s), and past it gets 429
/// with `Retry-After`, as JSON for a program and as a page for a browser (whose sign-in has a
/// bucket per person), and an audit record saying it was refused.
#[tokio::test]
async fn record_pages_count_against_the_per_client_tool_call_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let (text, password, _) = with_alice(
        dir.path(),
        &db,
        "[limits]\nclient_per_min = 1\nclient_burst = 2\n\n",
    );
    let srv = Server::start(Config::parse(&text).expect("config"), false).await;
    // A program's access token, written into the store as the token endpoint would write it
    // (the whole OAuth flow is tested in tests/oauth.rs).
    let token = mssql_mcp::oauth::random_token("mcp_at_");
    {
        use mssql_mcp::oauth::store::{Grant, TokenKind, now_ms};
        let scope = srv
            .state
            .scopes()
            .iter()
            .find(|s| s.path == "/chatgpt")
            .expect("scope");
        let now = now_ms();
        let grant = Grant {
            grant_id: mssql_mcp::oauth::random_token("g_"),
            client_id: "mcp_client_reader".into(),
            username: "alice".into(),
            scope: "/chatgpt".into(),
            resource: scope.public_base.clone(),
            oauth_scope: mssql_mcp::oauth::OAUTH_SCOPE.into(),
            redirect_uri: String::new(),
            code_challenge: String::new(),
            created_at: now,
            last_used_at: std::sync::atomic::AtomicI64::new(now),
            credential: std::sync::OnceLock::from({
                let config = srv.state.config();
                let alice = config.oauth.users.iter().find(|u| u.username == "alice");
                mssql_mcp::oauth::credential_of(&alice.expect("alice").password_hash)
            }),
        };
        srv.state
            .oauth()
            .expect("oauth")
            .store
            .create_grant(
                grant,
                TokenKind::Access,
                &mssql_mcp::oauth::hash_token(&token),
                now + 600_000,
            )
            .expect("grant");
    }
    let record = "/chatgpt/records/main.customers/1";
    let read = || client().get(srv.url(record)).bearer_auth(&token).send();
    assert_eq!(read().await.expect("record").status(), 200);
    let call = client()
        .post(srv.url("/chatgpt/sse"))
        .bearer_auth(&token)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "fetch", "arguments": {"id": "main.customers/2"}}}))
        .send()
        .await
        .expect("tool call");
    assert_eq!(call.status(), 200);
    // The burst of two is spent: the next page is refused, and says when to come back.
    let limited = read().await.expect("record");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = limited.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Rate limited: too many tool calls")),
        "{body}"
    );

    // A person's browser has a bucket of its own, and is told on a page.
    let (view, _) = viewer_sign_in(&srv, record, "alice", password).await;
    let browse = || {
        client()
            .get(srv.url(record))
            .header("accept", "text/html")
            .header("cookie", &view)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(browse().await.expect("page").status(), 200);
    }
    let limited = browse().await.expect("page");
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert!(
        limited.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html"))
    );
    let page = limited.text().await.expect("page");
    assert!(page.contains("Rate limited: too many tool calls"), "{page}");
    srv.stop().await;

    let lines = audit_lines(dir.path());
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "tool_call" && l["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{lines:?}");
    for (r, client_id) in refused
        .iter()
        .zip(["mcp_client_reader", "mssql-mcp:record-viewer"])
    {
        assert_eq!(r["tool"], "fetch", "{r}");
        assert_eq!(r["client_id"], client_id, "{r}");
        assert_eq!(r["user"], "alice", "{r}");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("rate limited")),
            "{r}"
        );
        assert!(
            r["query"]
                .as_str()
                .is_some_and(|q| q.contains("main.customers/1")),
            "{r}"
        );
    }
}

#[tokio::test]
async fn the_audit_file_rotates_by_size() {
    let (dir, _db, srv) = start_plain("[audit]\nmax_bytes = 4096\nkeep = 2\n").await;
    let filler = "x".repeat(300);
    for i in 0..40 {
        srv.tool(
            "/claude",
            "execute_sql",
            json!({"sql": format!("SELECT {i} AS n, '{filler}' AS pad")}),
        )
        .await;
    }
    srv.stop().await;
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len());
    assert!(size("audit.jsonl").is_ok_and(|s| s <= 4096));
    assert!(size("audit.jsonl.1").is_ok_and(|s| s <= 4096 && s > 2048));
    assert!(size("audit.jsonl.2").is_ok());
    assert!(
        size("audit.jsonl.3").is_err(),
        "only `keep` rotated files stay"
    );
}

/// Without authentication nothing else makes the state directory (there is no token store),
/// and the audit log must not depend on it existing: the server makes it, private.
#[tokio::test]
async fn a_missing_state_directory_is_made_for_the_audit_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let state = dir.path().join("var").join("lib").join("mssql-mcp");
    let config = Config::parse(&config_text(&state, &db, "", "")).expect("config");
    let srv = Server::start(config, true).await;
    srv.tool(
        "/claude",
        "execute_sql",
        json!({"sql": "SELECT name FROM customers WHERE id = 2"}),
    )
    .await;
    srv.stop().await;
    let lines = audit_lines(&state);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["tool"], "execute_sql");
    assert_eq!(lines[0]["outcome"], "ok");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o700));
    }
}

/// A state directory that cannot be made stops `serve` at once, with the key and the fix,
/// instead of a server that loses every audit record.
#[tokio::test]
async fn a_state_directory_that_cannot_be_made_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"a file").expect("blocker");
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        config_text(&blocker.join("state"), &db, "", ""),
    )
    .expect("config");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("serve stops within 30 s")
    .expect("run the binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("server.state_dir"), "{err}");
    assert!(err.contains("not-a-dir"), "{err}");
    assert!(err.contains("fix:"), "{err}");
}

/// A write cut short (on a full disk; here by the process's file size limit, which makes a real
/// `write` stop part-way and the next fail with EFBIG) leaves no torn line and repeats no
/// record: the audit file is cut back to its last whole line and the records are kept; once the
/// limit is lifted each is written exactly once. The server survives SIGXFSZ meanwhile.
#[tokio::test]
async fn an_audit_write_cut_short_leaves_whole_lines_and_loses_nothing() {
    if !peer("prlimit", "util-linux") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (config_path, port) = binary_config(dir.path(), "");
    // The soft limit only: raising it again needs no privilege.
    let mut child = serve_under(
        "prlimit",
        &["--fsize=3000:unlimited".as_ref()],
        &config_path,
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .expect("start the binary under prlimit");
    let pid = child.id().expect("pid");
    let log = Log::of(&mut child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let queries: Vec<String> = (0..30).map(|i| format!("SELECT {i} AS n")).collect();
    for q in &queries {
        execute_sql(&base, q).await;
    }
    log.wait_for("audit: cannot write records").await;
    // Cut at the limit: whole lines only, fewer than were recorded.
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).expect("audit file");
    assert!(text.len() <= 3000 && text.ends_with('\n'), "{text}");
    let kept = audit_lines(dir.path()).len();
    assert!(kept > 0 && kept < queries.len(), "{kept} lines");

    let lifted = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--fsize=unlimited:unlimited"])
        .status()
        .expect("run prlimit");
    assert!(lifted.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let written = loop {
        let calls: Vec<String> = audit_lines(dir.path())
            .iter()
            .filter(|l| l["tool"] == "execute_sql")
            .map(|l| l["query"].as_str().unwrap_or_default().to_string())
            .collect();
        if calls.len() >= queries.len() || Instant::now() > deadline {
            break calls;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let want: Vec<String> = queries
        .iter()
        .map(|q| json!({ "sql": q }).to_string())
        .collect();
    assert_eq!(written, want, "each record once, in order");
    assert!(log.has("audit: writing records again"), "{}", log.text());
    let health = client().get(format!("{base}/health")).send().await;
    assert!(
        health.is_ok_and(|r| r.status() == 200),
        "the server lives on"
    );
    terminate(pid);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
}

/// Written audit records are flushed to the disk (`fdatasync` on the audit file) within a
/// second of the last write by default, while the server runs (not only at shutdown or before
/// a rotation), the state directory too once the file was made or rotated, and neither with
/// `[audit] sync = false`: the real binary under `strace`, which names the file each call was
/// given (`-y`) and when (`-ttt`).
#[tokio::test]
async fn audit_batches_reach_the_disk_unless_told_otherwise() {
    if !peer("strace", "strace") {
        return;
    }
    // Small files, so the run rotates and the directory has new names to flush too.
    for (extra, want_sync) in [
        ("[audit]\nmax_bytes = 4096\n", true),
        ("[audit]\nmax_bytes = 4096\nsync = false\n", false),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config_path, port) = binary_config(dir.path(), extra);
        let trace = dir.path().join("strace.out");
        let args = [
            "-f",
            "-y",
            "-ttt",
            "-e",
            "trace=write,fdatasync,fsync",
            "-o",
        ]
        .map(OsStr::new);
        let args = [&args[..], &[trace.as_os_str()]].concat();
        let mut child = serve_under("strace", &args, &config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the binary under strace");
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&base).await;
        let server = Reaper(child_of(&child));
        let pad = "x".repeat(300);
        for i in 0..30 {
            execute_sql(&base, &format!("SELECT {i} AS n, '{pad}' AS pad")).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.path().join("audit.jsonl.1").exists() || audit_lines(dir.path()).is_empty() {
            assert!(Instant::now() < deadline, "audit records not written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The flush follows within a second; then stop the server (strace's child; a signal
        // to strace would leave it running), and strace ends with it.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let stopped_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        terminate(server.0);
        let ended = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        assert!(ended.is_ok(), "strace and the server still running");
        let calls = std::fs::read_to_string(&trace).expect("strace output");
        // `PID SECONDS.MICROS write(FD</path/audit.jsonl>, ...) = N`,
        // `... fdatasync(FD</path/audit.jsonl>) = 0`, and `fsync(FD</path>) = 0` for the
        // directory (strace names it as the kernel does, symbolic links resolved).
        let state = std::fs::canonicalize(dir.path()).expect("state dir");
        let file = format!("<{}>", state.join("audit.jsonl").display());
        let times = |call: &str, fd: &str| -> Vec<f64> {
            calls
                .lines()
                .filter(|l| l.contains(&format!(" {call}(")) && l.contains(fd))
                .filter(|l| !l.ends_with("= -1") && !l.contains("= -1 "))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
                .collect()
        };
        let last_write = times("write", &format!("{file},"))
            .into_iter()
            .fold(0.0, f64::max);
        assert!(last_write > 0.0, "no write to {file} seen:\n{calls}");
        let file_synced = times("fdatasync", &format!("{file})"));
        let dir_synced = times("fsync", &format!("<{}>)", state.display()));
        if want_sync {
            assert!(
                file_synced
                    .iter()
                    .any(|&t| last_write < t && t < stopped_at),
                "no fdatasync of the audit file after its last write, before shutdown:\n{calls}"
            );
            assert!(
                !dir_synced.is_empty(),
                "no fsync of the state directory:\n{calls}"
            );
        } else {
            assert!(
                file_synced.is_empty(),
                "the audit file was synced:\n{calls}"
            );
            assert!(
                dir_synced.is_empty(),
                "the state directory was synced:\n{calls}"
            );
        }
    }
}

/// A flush that fails (`fdatasync` of the audit file answering EIO, injected by `strace` into
/// the real system call: no disk here fails on demand) is counted in
/// `mssql_mcp_audit_write_errors_total`, logged once with the risk it carries, and tried again a
/// second later until one succeeds, which is logged too; the records are neither lost nor
/// written twice, and the server keeps answering meanwhile.
#[tokio::test]
async fn a_failed_audit_flush_is_counted_logged_and_tried_again() {
    if !peer("strace", "strace") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (config_path, port) = binary_config(dir.path(), "");
    // `-P`: only the audit file's system calls are traced, so only its flushes fail (the
    // first three; the server retries each a second after the last).
    let file = std::fs::canonicalize(dir.path())
        .expect("state dir")
        .join("audit.jsonl");
    let trace = dir.path().join("strace.out");
    let args = [
        OsStr::new("-f"),
        OsStr::new("-y"),
        OsStr::new("-P"),
        file.as_os_str(),
        OsStr::new("-e"),
        OsStr::new("trace=fdatasync"),
        OsStr::new("-e"),
        OsStr::new("inject=fdatasync:error=EIO:when=1..3"),
        OsStr::new("-o"),
        trace.as_os_str(),
    ];
    let mut child = serve_under("strace", &args, &config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary under strace");
    let log = Log::of(&mut child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let server = Reaper(child_of(&child));
    let queries: Vec<String> = (0..10).map(|i| format!("SELECT {i} AS n")).collect();
    for q in &queries {
        execute_sql(&base, q).await;
    }
    log.wait_for("audit: cannot flush records to the disk")
        .await;
    // Failures a second apart, then the flush that works. strace counts injections per
    // thread and a flush may run on any blocking thread, so how many flushes fail, and in
    // how many runs, varies; every run of failures is logged once and ends in a retry that
    // works.
    log.wait_for("audit: flushing records to the disk again")
        .await;
    let text = log.text();
    assert_eq!(
        text.matches("audit: cannot flush records").count(),
        text.matches("flushing records to the disk again").count(),
        "one failure logged per run of failures (then one a minute):\n{text}"
    );
    assert!(text.contains("may not survive a power loss"), "{text}");
    let recovered = text
        .lines()
        .find(|l| l.contains("flushing records to the disk again"))
        .unwrap_or_default();
    let failed: u32 = recovered
        .split("failed_flushes=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failure count: {recovered}"));
    assert!(failed >= 1, "{recovered}");
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mssql_mcp_audit_write_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no write error counter:\n{metrics}"));
    assert!(
        errors >= f64::from(failed),
        "each failed flush counted: {errors}"
    );
    let written: Vec<String> = audit_lines(dir.path())
        .iter()
        .filter(|l| l["tool"] == "execute_sql")
        .map(|l| l["query"].as_str().unwrap_or_default().to_string())
        .collect();
    let want: Vec<String> = queries
        .iter()
        .map(|q| json!({ "sql": q }).to_string())
        .collect();
    assert_eq!(written, want, "each record once, in order");
    terminate(server.0);
    let ended = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    assert!(ended.is_ok(), "strace and the server still running");
    // The trace shows the real calls: every counted failure an injected one, and a flush
    // that worked after the first of them.
    let calls = std::fs::read_to_string(&trace).expect("strace output");
    let flushes: Vec<&str> = calls.lines().filter(|l| l.contains("fdatasync(")).collect();
    let injected = flushes.iter().filter(|l| l.contains("INJECTED")).count();
    assert!(injected as f64 >= errors, "{errors} counted:\n{calls}");
    let first = flushes
        .iter()
        .position(|l| l.contains("INJECTED"))
        .unwrap_or_else(|| panic!("no injected failure:\n{calls}"));
    assert!(
        flushes[first..].iter().any(|l| l.ends_with("= 0")),
        "{calls}"
    );
}

// Multi-threaded: the CLI runs as a blocking child process while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stats_and_clear_work_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("admin bind");
    let admin_addr = admin.local_addr().expect("admin addr");
    let text = config_text(
        dir.path(),
        &db,
        "",
        &format!("[admin]\nlisten = \"{admin_addr}\"\n"),
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).expect("config file");
    let srv = Server::start(Config::parse(&text).expect("config"), true).await;
    let (stop_admin, stopped) = oneshot::channel::<()>();
    let admin_task = tokio::spawn(mssql_mcp::oauth::admin::serve(
        srv.state.clone(),
        admin,
        async move {
            let _ = stopped.await;
        },
    ));
    // A query search whose rows have no key is cached, so `fetch` can resolve its ids.
    let hits = srv
        .tool(
            "/chatgpt",
            "search",
            json!({"query": "SELECT city FROM customers"}),
        )
        .await;
    assert_eq!(hits["result"]["isError"], false, "{hits}");
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("cache")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .expect("run the CLI");
        assert!(
            out.status.success(),
            "cache {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stats = cli(&["stats", "--scope", "/chatgpt"]);
    assert!(stats.starts_with("/chatgpt: 1 entries"), "{stats}");
    assert!(stats.contains("oldest entry 0 s ago"), "{stats}");
    assert!(stats.contains("memory ~1 KiB"), "{stats}");
    let all = cli(&["stats"]);
    assert!(all.contains("/claude: 0 entries"), "{all}");
    let cleared = cli(&["clear", "--scope", "/chatgpt"]);
    assert!(cleared.contains("/chatgpt: cleared 1 entries"), "{cleared}");
    let after = cli(&["stats", "--scope", "/chatgpt"]);
    assert!(after.starts_with("/chatgpt: 0 entries"), "{after}");
    // A refusal reaches the operator with the endpoint's reason, not only its status.
    let refused = |command: &str, args: &[&str]| {
        let out = Command::new(BIN)
            .arg(command)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .expect("run the CLI");
        assert_eq!(out.status.code(), Some(69), "{command} {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for action in ["stats", "clear"] {
        let e = refused("cache", &[action, "--scope", "/nope"]);
        assert!(
            e.contains("404 Not Found: no scope \"/nope\"; the scopes are /chatgpt, /claude"),
            "{e}"
        );
    }
    let e = refused("tokens", &["list"]);
    assert!(e.contains("runs without OAuth"), "{e}");
    let e = refused("tokens", &["revoke", "--all"]);
    assert!(e.contains("runs without OAuth"), "{e}");
    // The admin listener serves metrics too, without the admin token.
    let m = client()
        .get(format!("http://{admin_addr}/metrics"))
        .send()
        .await
        .expect("admin metrics");
    assert_eq!(m.status(), 200);
    // Everything else there needs the token.
    let refused = client()
        .get(format!("http://{admin_addr}/admin/cache"))
        .send()
        .await
        .expect("admin cache");
    assert_eq!(refused.status(), 403);
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    srv.stop().await;
}

#[test]
fn check_config_connect_reports_each_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config_text(dir.path(), &db, "", "")).expect("config");
    let run = || {
        Command::new(BIN)
            .args(["check-config", "--connect", "--config"])
            .arg(&config_path)
            .output()
            .expect("run check-config")
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("database `main`: answered in"), "{text}");
    assert!(!text.contains("descriptions name"), "{text}");
    // Descriptions naming what the database does not have are pointed out, and do not fail.
    let described = config_text(dir.path(), &db, "", "").replace(
        "kind = \"sqlite\"\n",
        "kind = \"sqlite\"\ntable_descriptions = { \"customers\" = \"People\", \"custmers\" = \"typo\" }\ncolumn_descriptions = { \"customers.city\" = \"Where\", \"customers.town\" = \"no such column\" }\n",
    );
    std::fs::write(&config_path, described).expect("config");
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("database `main`: WARNING: table_descriptions/column_descriptions name no table or column it has: custmers, customers.town"),
        "{text}"
    );
    std::fs::remove_file(&db).expect("remove db");
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(69), "{text}");
    assert!(text.contains("database `main`: FAILED"), "{text}");
}

/// Runs the binary with `args`, its standard output a pipe whose reading end is already closed
/// (what `| head -1` leaves once `head` has its line): the exit code and standard error.
fn run_into_closed_pipe(args: &[&OsStr]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_output_into_a_closed_pipe_ends_quietly_with_the_status_it_would_have_had() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config_text(dir.path(), &db, "", "")).expect("config");
    let config = config_path.as_os_str();
    let cases: [(&[&OsStr], i32); 2] = [
        (&["check-config".as_ref(), "--config".as_ref(), config], 0),
        (&["ip-presets".as_ref()], 0),
    ];
    for (args, want) in cases {
        let (code, stderr) = run_into_closed_pipe(args);
        assert_eq!(code, Some(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: nothing to report: {stderr}");
    }
    // A failure is still one: the database is gone, so `--connect` exits 69 as it would into
    // a terminal.
    std::fs::remove_file(&db).expect("remove db");
    let args: [&OsStr; 4] = [
        "check-config".as_ref(),
        "--connect".as_ref(),
        "--config".as_ref(),
        config,
    ];
    let (code, stderr) = run_into_closed_pipe(&args);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cli_output_onto_a_full_disk_is_an_io_error_not_a_panic() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let out = Command::new(BIN)
        .arg("ip-presets")
        .stdin(Stdio::null())
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output"),
        "{stderr}"
    );
}

/// A config file in `dir` for the binary, with a fresh database, `extra` appended and loopback
/// ports of its own (the admin listener's too, so binaries started side by side do not meet on
/// its default port); the path and the public port.
fn binary_config(dir: &Path, extra: &str) -> (PathBuf, u16) {
    let db = make_db(dir);
    let port = free_port();
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{}\"\n\n{extra}", free_port());
    let text =
        config_text(dir, &db, "", &admin).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("config file");
    (path, port)
}

/// `BIN serve --config <config>` run by `tool` (prlimit, strace) with `args` before `--`.
fn serve_under(tool: &str, args: &[&OsStr], config: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(tool);
    c.args(args)
        .arg("--")
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(config);
    c
}

/// Waits up to a minute for the binary at `base` to answer `/health`.
async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client().get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "no answer within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `execute_sql` call through the binary at `base` (authentication off).
async fn execute_sql(base: &str, sql: &str) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "execute_sql", "arguments": {"sql": sql}}});
    let resp = client()
        .post(format!("{base}/claude/sse"))
        .json(&body)
        .send()
        .await
        .expect("tool call");
    assert_eq!(resp.status(), 200);
}

/// The pid of the one process `parent` (strace) started: the server.
fn child_of(parent: &tokio::process::Child) -> u32 {
    let parent = parent.id().expect("pid").to_string();
    let out = Command::new("pgrep")
        .args(["-P", &parent])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    pid.parse()
        .unwrap_or_else(|_| panic!("the server's pid: {pid:?}"))
}

/// A grandchild's pid (the server under strace), killed on drop: a failed test kills strace
/// (`kill_on_drop`), which would leave the server it traced running.
struct Reaper(u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process's stderr (the server's log), collected as it comes.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<String>>);

impl Log {
    fn of(child: &mut tokio::process::Child) -> Log {
        let log = Log::default();
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(mut s) = sink.0.lock() {
                    s.push_str(&l);
                    s.push('\n');
                }
            }
        });
        log
    }

    fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn has(&self, what: &str) -> bool {
        self.text().contains(what)
    }

    /// Waits up to 10 s for a line containing `what`.
    async fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has(what) {
            assert!(
                Instant::now() < deadline,
                "no {what:?} logged within 10 s:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends SIGTERM to a child process.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn the_binary_logs_json_with_request_ids_and_notifies_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = make_db(dir.path());
    let port = free_port();
    let admin_port = free_port();
    let text = config_text(
        dir.path(),
        &db,
        "",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n[log]\nformat = \"json\"\n"),
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).expect("config file");
    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    let child = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_LOG", "info,mssql_mcp::request=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    let mut buf = vec![0u8; 512];
    let n = match tokio::time::timeout(Duration::from_secs(30), notify.recv(&mut buf)).await {
        Ok(r) => r.expect("recv"),
        Err(_) => {
            // The binary's log says why (once in a CI run: a port taken between free_port and
            // the bind, or a start that stalled).
            let mut child = child;
            let _ = child.start_kill();
            let out = child.wait_with_output().await.expect("output");
            panic!(
                "no READY within 30 s; the binary's log:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let resp = client()
        .get(format!("http://127.0.0.1:{port}/health"))
        .header("x-request-id", "ops-test-request-42")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("ops-test-request-42")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(child.id().expect("pid"));
    let n = tokio::time::timeout(Duration::from_secs(10), notify.recv(&mut buf))
        .await
        .expect("STOPPING within 10 s")
        .expect("recv");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exit")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut request_lines = 0;
    for line in stderr.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["span"]["request_id"] == "ops-test-request-42" {
            request_lines += 1;
        }
    }
    assert!(
        request_lines >= 2,
        "the request's log lines carry its id:\n{stderr}"
    );
}

/// The unit with `ExecStart` pointing at the built binary, in a temporary directory.
fn unit_copy(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/mssql-mcp.service"
    ))
    .expect("read the unit");
    assert!(unit.contains("Type=notify"));
    let path = dir.join("mssql-mcp.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/mssql-mcp", BIN)).expect("write unit");
    path
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !peer("systemd-analyze", "systemd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_copy(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify:\n{text}");
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("mssql-mcp.service"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze verify:\n{text}");
    // The exposure score, for the record (lower is better; below 2 is "OK").
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no score");
    eprintln!("systemd-analyze security: {score}");
    let value: f64 = score
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    assert!(value < 2.5, "the unit's exposure grew: {score}");
}

/// `demo` generates a missing database in a child process (`generate-demo`) so the serving
/// process does not keep the generation's memory, then serves it.
#[tokio::test]
async fn the_demo_generates_a_missing_database_and_serves_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh");
    let port = free_port();
    // Its stderr goes to a file, so a failure shows why (a full disk, say) instead of a timeout.
    let log_path = dir.path().join("demo.stderr");
    let log = std::fs::File::create(&log_path).expect("stderr file");
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start demo");
    let stderr = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // A debug build generates the database several times slower than a release build, and
    // other tests run beside this one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let health = format!("http://127.0.0.1:{port}/health");
    while client()
        .get(&health)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the demo exited ({status}) before serving:\n{}", stderr());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not start within 180 s:\n{}",
            stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(data.join("demo.sqlite").is_file());
    // (What the child saves is measured by benches/run.sh, a release build: idle RSS 14.9 MB
    // against 20.5 MB when the serving process generated the file itself. A debug build's
    // footprint is too different to assert on here.)
    child.kill().await.expect("kill");

    // The hidden command on its own: idempotent, and a clear error for a directory it cannot
    // create.
    let again = Command::new(BIN)
        .args(["generate-demo", "--data-dir"])
        .arg(&data)
        .output()
        .expect("generate-demo");
    assert!(again.status.success());
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "not a directory").expect("write");
    let out = Command::new(BIN)
        .args(["generate-demo", "--data-dir"])
        .arg(blocked.join("sub"))
        .output()
        .expect("generate-demo");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fix: pass a writable directory"));
}

/// `tools/call` of `execute_sql` on the binary at `base`, returning the JSON-RPC response.
async fn sql_call(base: &str, sql: &str) -> Value {
    tool_at(
        &format!("{base}/claude/sse"),
        "execute_sql",
        json!({"sql": sql}),
    )
    .await
}

/// `tools/call` POSTed to `url` (a scope's `/sse`: plain JSON in and out).
async fn tool_at(url: &str, name: &str, args: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": name, "arguments": args}});
    client()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("tool call")
        .json()
        .await
        .expect("tool call JSON")
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `BIN serve --config <config>` listening on `port`, once it answers `/health`: the child,
/// its pid and its base URL.
async fn serve_healthy(config: &Path, port: u16) -> (tokio::process::Child, u32, String) {
    let child = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    let pid = child.id().expect("pid");
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    (child, pid, base)
}

/// Work inside one step of a SQLite query cannot be interrupted (`instr` of two long texts
/// takes their product): such a query runs off the async workers, so everything else keeps
/// answering, and its caller gets the timeout at the timeout. And a row of many huge values
/// fails with "out of memory" at SQLite's heap limit instead of taking gigabytes.
#[tokio::test]
async fn a_query_stuck_in_one_step_or_building_a_huge_row_holds_up_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = binary_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "kind = \"sqlite\"",
            "kind = \"sqlite\"\nquery_timeout_secs = 1",
        ),
    )
    .expect("config");
    let (mut child, pid, base) = serve_healthy(&config, port).await;

    // Seconds of `instr` in one step (tens of seconds in a debug build, which the test stops
    // with the process); two at once, as many as a runtime has workers.
    let slow = "SELECT instr(printf('%.*c', 800000, 'a'), printf('%.*c', 400000, 'a') || 'b') AS k";
    let started = Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { sql_call(&base, slow).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let (status, _) = {
        let r = client()
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("health");
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "/health took {:?} while the queries ran",
        asked.elapsed()
    );
    for call in calls {
        let out = call.await.expect("call task");
        let text = out.to_string();
        assert_eq!(out["result"]["isError"], true, "{text}");
        assert!(text.contains("time"), "{text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the callers waited {:?} for a 1 s timeout",
        started.elapsed()
    );

    terminate(pid);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;

    // The huge row on a server with the default timeout, so that on a busy machine it meets
    // the memory limit rather than the time limit.
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, port) = binary_config(dir.path(), "");
    let (mut child, pid, base) = serve_healthy(&config, port).await;
    let columns: Vec<String> = (0..60)
        .map(|i| format!("zeroblob(16000000) AS c{i}"))
        .collect();
    let out = sql_call(&base, &format!("SELECT {}", columns.join(", "))).await;
    let text = out.to_string();
    assert_eq!(out["result"]["isError"], true, "{text}");
    assert!(text.contains("memory"), "{text}");
    let peak = peak_rss_kib(pid);
    assert!(peak < 800 << 10, "peak RSS {peak} KiB");
    let out = sql_call(&base, "SELECT count(*) AS n FROM customers").await;
    assert_eq!(out["result"]["isError"], false, "{out}");

    terminate(pid);
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
}

/// A JSON-RPC batch (2025-03-26) has the request timeout as a whole: it stops short of it and
/// answers every request, those that ran with their results and the rest with an error
/// saying they were not answered, instead of a 503 that hides what ran.
#[tokio::test]
async fn a_batch_that_outlasts_the_request_timeout_answers_what_ran() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_timing_out(dir.path()).await;
    let sid = session_0326(&srv).await;
    let slow = SLOW_SQL;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "execute_sql", "arguments": {"sql": slow}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    ]);
    let started = Instant::now();
    let resp = client()
        .post(srv.url("/claude/mcp"))
        .header("mcp-session-id", &sid)
        .json(&batch)
        .send()
        .await
        .expect("batch");
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "answered at the request timeout, not the query's: {:?}",
        started.elapsed()
    );
    let answers: Value = resp.json().await.expect("JSON");
    assert_eq!(answers[0]["id"], 1, "{answers}");
    assert_eq!(answers[0]["result"], json!({}), "{answers}");
    for (i, id) in [(1, 2), (2, 3)] {
        assert_eq!(answers[i]["id"], id, "{answers}");
        assert_eq!(answers[i]["error"]["code"], -32001, "{answers}");
        assert!(
            answers[i]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("send it again on its own")),
            "{answers}"
        );
    }
    let (_, metrics) = srv.get("/metrics").await;
    for want in [
        r#"mssql_mcp_tool_calls_total{scope="/claude",status="cancelled",tool="execute_sql"} 1"#,
        "mssql_mcp_http_timeouts_total 0",
    ] {
        assert!(metrics.contains(want), "missing `{want}` in:\n{metrics}");
    }
    srv.stop().await;
}

/// Each request of a JSON-RPC batch past the first costs a token of the address's per-IP
/// bucket, as it would sent on its own: a batch is not a way around the limit.
#[tokio::test]
async fn each_request_of_a_batch_counts_against_the_per_ip_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (srv, sid) = limited_0326(dir.path(), 4).await;
    // Four tokens: initialize takes one, the batch's POST one (for its first request), its
    // second and third requests one each; the fourth and fifth find the bucket empty.
    let batch: Vec<Value> = (1..=5)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
        .collect();
    let answers = post_batch(&srv, &sid, &json!(batch)).await;
    for i in [0, 1, 2] {
        assert_eq!(answers[i]["result"], json!({}), "{answers}");
    }
    for i in [3, 4] {
        assert!(
            answers[i]["error"]["message"].as_str().is_some_and(|m| m
                .starts_with("Rate limited: too many requests from this address")),
            "{answers}"
        );
    }
    srv.stop().await;
}

/// A tool call answered without running still leaves an audit record saying who asked for
/// what: one refused by a rate limit (here the per-IP bucket, in a batch), and one whose tool
/// the server could not even name.
#[tokio::test]
async fn tool_calls_refused_before_they_run_are_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (srv, sid) = limited_0326(dir.path(), 3).await;
    // Three tokens: initialize one, the POST one (its first message), the second message
    // one; the third message, a tool call, finds the bucket empty.
    let call = |id: i64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "execute_sql", "arguments": {"sql": format!("SELECT {id} AS n")}}})
    };
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"arguments": {}}},
        call(2),
        call(3)
    ]);
    let answers = post_batch(&srv, &sid, &json!(batch)).await;
    assert_eq!(answers[0]["error"]["code"], -32602, "{answers}");
    assert_eq!(answers[1]["result"]["isError"], false, "{answers}");
    assert_eq!(answers[2]["error"]["code"], -32000, "{answers}");
    srv.stop().await;
    let lines = audit_lines(dir.path());
    let calls: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "tool_call").collect();
    assert_eq!(calls.len(), 3, "{lines:?}");
    assert_eq!(calls[0]["outcome"], "invalid", "{}", calls[0]);
    assert!(
        calls[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("params.name")),
        "{}",
        calls[0]
    );
    assert_eq!(calls[1]["outcome"], "ok", "{}", calls[1]);
    assert_eq!(calls[2]["outcome"], "refused", "{}", calls[2]);
    assert_eq!(calls[2]["tool"], "execute_sql", "{}", calls[2]);
    assert!(
        calls[2]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("rate limited")),
        "{}",
        calls[2]
    );
    assert!(
        calls[2]["query"]
            .as_str()
            .is_some_and(|q| q.contains("SELECT 3")),
        "{}",
        calls[2]
    );
}

/// A server whose per-IP bucket holds `burst` tokens (one more each second), with a 2025-03-26
/// session open on it (which took one of them).
async fn limited_0326(dir: &Path, burst: u32) -> (Server, String) {
    let db = make_db(dir);
    let limits = format!("[limits]\nper_ip_per_sec = 1\nper_ip_burst = {burst}\n");
    let text = config_text(dir, &db, "", &limits);
    let srv = Server::start(Config::parse(&text).expect("config"), true).await;
    let sid = session_0326(&srv).await;
    (srv, sid)
}

/// POSTs the JSON-RPC batch `batch` on session `sid`: its answers (a 200 is expected).
async fn post_batch(srv: &Server, sid: &str, batch: &Value) -> Value {
    let resp = client()
        .post(srv.url("/claude/mcp"))
        .header("mcp-session-id", sid)
        .json(batch)
        .send()
        .await
        .expect("batch");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("JSON")
}

/// Starts a 2025-03-26 session on `/claude/mcp` (the revision with JSON-RPC batches); its id.
async fn session_0326(srv: &Server) -> String {
    let init = client()
        .post(srv.url("/claude/mcp"))
        .json(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .expect("initialize");
    assert_eq!(init.status(), 200);
    init.headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("session id")
        .to_string()
}

/// A batch's time counts from when the request arrived, not from when its body was read: a
/// body that takes half the request timeout to arrive still gets its answers (the slow call
/// cut short and marked not answered) instead of the edge's 503.
#[tokio::test]
async fn a_batch_whose_body_arrives_slowly_still_answers_before_the_request_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_timing_out(dir.path()).await;
    let sid = session_0326(&srv).await;
    let slow = SLOW_SQL;
    let body = serde_json::to_vec(&json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "execute_sql", "arguments": {"sql": slow}}}
    ]))
    .expect("JSON");
    let mut conn = tokio::net::TcpStream::connect(srv.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /claude/mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-session-id: {sid}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        srv.addr,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    // Half the request timeout before the body: the batch then has 250 ms left, less than
    // the 750 ms it would think it had if it counted from reading the body.
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.write_all(&body).await.expect("body");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut response))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json = response.split("\r\n\r\n").nth(1).unwrap_or("");
    let answers: Value = serde_json::from_str(json).expect("a JSON array");
    assert_eq!(answers[0]["result"], json!({}), "{answers}");
    assert_eq!(answers[1]["error"]["code"], -32001, "{answers}");
    srv.stop().await;
}
