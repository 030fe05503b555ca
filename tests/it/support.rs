//! The test harness: the real server on `127.0.0.1:0`, an HTTP client, and small MCP clients
//! for both protocol eras.
//!
//! The demo database is generated once per target directory (under `CARGO_TARGET_TMPDIR`,
//! reused while its generator version is current) and shared by every test; each test starts
//! its own server, so tests never share sessions or caches.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const MODERN: &str = "2026-07-28";
pub const V0618: &str = "2025-06-18";
pub const V1125: &str = "2025-11-25";

/// Row counts of the demo database, as documented in `db::demo_data`.
pub const CUSTOMERS: i64 = 5_000;

/// Where the shared demo database lives.
pub fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("it-demo")
}

/// The demo database file, generated on first use.
pub fn demo_db() -> &'static Path {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        mssql_mcp::demo::ensure_database(&demo_dir())
            .unwrap_or_else(|e| panic!("cannot build the demo database: {e}"))
    })
}

/// A TOML configuration serving the demo database, with `scopes` appended verbatim.
/// `{db}` in the text is replaced by the database path.
pub fn config_toml(database_extra: &str, scopes: &str) -> String {
    let db = demo_db().display().to_string();
    format!(
        r#"
[server]
insecure_no_auth = true
state_dir = "{state}"

[[database]]
name = "demo"
kind = "sqlite"
path = "{db}"
{database_extra}

{scopes}
"#,
        state = demo_dir().display(),
    )
}

fn unique_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A running server; dropping it shuts the server down.
pub struct Server {
    /// `http://127.0.0.1:PORT`, also the configured public URL.
    pub base: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP response with its body parsed as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// `error.code` of a JSON-RPC error response.
    pub fn error_code(&self) -> Option<i64> {
        self.json["error"]["code"].as_i64()
    }
    pub fn error_message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

impl Server {
    /// The demo configuration (`/chatgpt` and `/claude`), as `mssql-mcp demo` serves it.
    pub async fn demo() -> Server {
        let listener = bind().await;
        let addr = listener.local_addr().expect("local addr");
        let mut config = mssql_mcp::demo::config(addr, demo_db(), &demo_dir());
        config.server.public_url = Some(format!("http://{addr}"));
        Self::start(config, listener).await
    }

    /// The demo configuration, changed by `edit` before the server starts.
    pub async fn demo_with(edit: impl FnOnce(&mut mssql_mcp::config::Config)) -> Server {
        let listener = bind().await;
        let addr = listener.local_addr().expect("local addr");
        let mut config = mssql_mcp::demo::config(addr, demo_db(), &demo_dir());
        config.server.public_url = Some(format!("http://{addr}"));
        edit(&mut config);
        Self::start(config, listener).await
    }

    /// A server from TOML configuration text (see [`config_toml`]).
    pub async fn with_config(toml: &str) -> Server {
        let listener = bind().await;
        let addr = listener.local_addr().expect("local addr");
        let mut config = mssql_mcp::config::Config::parse(toml)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
        config.server.listen = addr;
        config.server.public_url = Some(format!("http://{addr}"));
        Self::start(config, listener).await
    }

    async fn start(config: mssql_mcp::config::Config, listener: tokio::net::TcpListener) -> Server {
        let addr = listener.local_addr().expect("local addr");
        let state = mssql_mcp::app::build_state(config, true)
            .await
            .expect("build_state");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = mssql_mcp::app::run(state, listener, shutdown).await {
                eprintln!("server stopped with an error: {e}");
            }
        });
        Server {
            base: format!("http://{addr}"),
            addr,
            client: client(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs raw bytes with the given headers (no headers are added).
    pub async fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let mut req = self.client.post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        into_resp(req.send().await.expect("POST")).await
    }

    /// POSTs `body` as JSON, accepting JSON and SSE as MCP clients do.
    pub async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let mut all: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        all.extend_from_slice(headers);
        self.post_raw(path, &all, serde_json::to_vec(body).expect("json"))
            .await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        into_resp(req.send().await.expect("GET")).await
    }

    pub async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.delete(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        into_resp(req.send().await.expect("DELETE")).await
    }

    /// A stateless 2026-07-28 client of `scope`.
    pub fn modern<'a>(&'a self, scope: &str) -> Modern<'a> {
        Modern {
            srv: self,
            scope: scope.to_string(),
        }
    }

    /// Calls a tool statelessly (2026-07-28) and returns the JSON-RPC `result`.
    pub async fn call_tool(&self, scope: &str, name: &str, args: Value) -> Value {
        self.modern(scope).call_tool(name, args).await
    }

    /// Calls a tool that must succeed and returns its `structuredContent`.
    pub async fn tool_ok(&self, scope: &str, name: &str, args: Value) -> Value {
        let result = self.call_tool(scope, name, args.clone()).await;
        assert_eq!(
            result["isError"],
            false,
            "{name} {args} failed: {}",
            tool_text(&result)
        );
        result["structuredContent"].clone()
    }

    /// Calls a tool that must fail with `isError` and returns its message.
    pub async fn tool_err(&self, scope: &str, name: &str, args: Value) -> String {
        let result = self.call_tool(scope, name, args.clone()).await;
        assert_eq!(
            result["isError"],
            true,
            "{name} {args} should have failed but returned {}",
            tool_text(&result)
        );
        tool_text(&result).to_string()
    }
}

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        json,
    }
}

/// The text of a tool result's first content item.
pub fn tool_text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}

pub use crate::common::{assert_none, seed};

/// A JSON-RPC request with a fresh id.
pub fn rpc(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": unique_id(), "method": method, "params": params})
}

/// `_meta` of a 2026-07-28 request.
pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// The value of `Mcp-Name` for a request, when the method has one.
pub fn mcp_name(method: &str, params: &Value) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params[key].as_str().map(str::to_string)
}

/// A 2026-07-28 client: every request carries its version in headers and `_meta`.
pub struct Modern<'a> {
    pub srv: &'a Server,
    pub scope: String,
}

impl Modern<'_> {
    /// Sends `method` with `params` (its `_meta` added) and the required headers.
    pub async fn request(&self, method: &str, params: Value) -> Resp {
        let mut params = params;
        if !params.is_object() {
            params = json!({});
        }
        params["_meta"] = modern_meta();
        let body = rpc(method, params.clone());
        let name = mcp_name(method, &params);
        let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
        if let Some(n) = &name {
            headers.push(("mcp-name", n.as_str()));
        }
        self.srv
            .post_json(&format!("{}/mcp", self.scope), &headers, &body)
            .await
    }

    /// A request that must succeed; returns its `result`.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let r = self.request(method, params).await;
        assert_eq!(r.status, 200, "{method}: {}", r.text);
        assert!(r.json.get("error").is_none(), "{method}: {}", r.text);
        r.json["result"].clone()
    }

    pub async fn call_tool(&self, name: &str, args: Value) -> Value {
        self.result("tools/call", json!({"name": name, "arguments": args}))
            .await
    }
}

/// A 2025 client with a session on the Streamable HTTP endpoint.
pub struct Legacy<'a> {
    pub srv: &'a Server,
    pub scope: String,
    pub session: String,
    pub version: String,
}

impl<'a> Legacy<'a> {
    /// `initialize` with `version`, then `notifications/initialized`.
    pub async fn connect(srv: &'a Server, scope: &str, version: &str) -> Legacy<'a> {
        let r = srv
            .post_json(&format!("{scope}/mcp"), &[], &initialize(version))
            .await;
        assert_eq!(r.status, 200, "initialize: {}", r.text);
        let session = r
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("initialize gave no Mcp-Session-Id: {:?}", r.headers))
            .to_string();
        let negotiated = r.json["result"]["protocolVersion"]
            .as_str()
            .expect("protocolVersion")
            .to_string();
        let c = Legacy {
            srv,
            scope: scope.to_string(),
            session,
            version: negotiated,
        };
        let n = c.notify("notifications/initialized", json!({})).await;
        assert_eq!(n.status, 202, "notifications/initialized: {}", n.text);
        c
    }

    pub fn path(&self) -> String {
        format!("{}/mcp", self.scope)
    }

    pub async fn request(&self, method: &str, params: Value) -> Resp {
        let body = rpc(method, params);
        self.srv
            .post_json(
                &self.path(),
                &[
                    ("mcp-session-id", &self.session),
                    ("mcp-protocol-version", &self.version),
                ],
                &body,
            )
            .await
    }

    pub async fn notify(&self, method: &str, params: Value) -> Resp {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.srv
            .post_json(
                &self.path(),
                &[
                    ("mcp-session-id", &self.session),
                    ("mcp-protocol-version", &self.version),
                ],
                &body,
            )
            .await
    }

    pub async fn result(&self, method: &str, params: Value) -> Value {
        let r = self.request(method, params).await;
        assert_eq!(r.status, 200, "{method}: {}", r.text);
        assert!(r.json.get("error").is_none(), "{method}: {}", r.text);
        r.json["result"].clone()
    }

    pub async fn call_tool(&self, name: &str, args: Value) -> Value {
        self.result("tools/call", json!({"name": name, "arguments": args}))
            .await
    }
}

/// An `initialize` request for `version`.
pub fn initialize(version: &str) -> Value {
    rpc(
        "initialize",
        json!({
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "mssql-mcp-tests", "version": "0"},
        }),
    )
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    /// The `retry` field (reconnection delay in milliseconds), when sent.
    pub retry: Option<String>,
    pub data: String,
    /// Whether any `data` line was present (an empty `data:` counts).
    pub has_data: bool,
}

/// Reads server-sent events from a streaming response body.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            stream: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event that is not a comment-only keep-alive, within `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<SseEvent> {
        tokio::time::timeout(wait, self.next_inner()).await.ok()?
    }

    async fn next_inner(&mut self) -> Option<SseEvent> {
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            if normalized.len() != self.buf.len() {
                self.buf = normalized;
            }
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf[..end].to_string();
                self.buf.drain(..end + 2);
                let mut ev = SseEvent::default();
                let mut data_lines = Vec::new();
                let mut any_field = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = match line.split_once(':') {
                        Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                        None => (line, ""),
                    };
                    any_field = true;
                    match field {
                        "event" => ev.event = Some(value.to_string()),
                        "id" => ev.id = Some(value.to_string()),
                        "retry" => ev.retry = Some(value.to_string()),
                        "data" => data_lines.push(value.to_string()),
                        _ => {}
                    }
                }
                if !any_field {
                    continue;
                }
                ev.has_data = !data_lines.is_empty();
                ev.data = data_lines.join("\n");
                return Some(ev);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }
}

/// Opens a GET request and returns the streaming response (status checked by the caller).
pub async fn open_stream(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    client.get(url).headers(h).send().await.expect("GET stream")
}

/// Opens the demo database read-only, to check what the server could not have changed.
pub fn inspect_db() -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(demo_db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open demo db")
}

/// A single-value query against the demo database file, outside the server.
pub fn db_count(sql: &str) -> i64 {
    inspect_db()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
