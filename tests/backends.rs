//! One MCP tool suite, run against both backends so they cannot drift apart.
//!
//! Every behaviour below is written once, as an `async fn` taking a [`Harness`]; the
//! `behaviours!` macro turns each into two tests, `sqlite::<name>` and `mssql::<name>`. A
//! harness starts the real server in-process (`app::build_state` + `app::run` on
//! `127.0.0.1:0`, configuration parsed from TOML) over either a SQLite file or `pysqlbridge`
//! (an independent TDS server from PyPI, see `tests/common`), both loaded with the same fixture
//! dataset generated here, and talks to it only through MCP: stateless `2026-07-28` requests
//! with `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and `_meta`.
//!
//! Where the backends legitimately differ, the difference is asserted, not skipped:
//!
//! - **Keys.** SQLite declares `Id` as the primary key (and the foreign keys of `Orders`); the
//!   peer exposes no key constraints, so the SQL Server backend falls back to its documented
//!   `Id` heuristic and says `key_is_heuristic: true`, and it has no foreign keys to report
//!   (no `foreign_keys`, `referenced_by` or related rows).
//! - **Declared types.** `describe` shows each database's own type names: SQLite's as
//!   declared in the fixture's `CREATE TABLE`, the peer's as it infers them from JSON values
//!   (`int`, `float`, `nvarchar(n)`).
//! - **Booleans.** The peer has no `bit` columns: it serves JSON `true`/`false` as
//!   `nvarchar(5)` text `"True"`/`"False"` (SQLite's `BOOLEAN` column gives JSON booleans).
//!   The `bit` decoding itself is unit-tested in `src/db/mssql.rs`.
//! - **Row counts.** The SQL Server backend estimates them from `sys.partitions`, which the
//!   peer lacks, so `rows` is `null` there (`?` in `list tables`); SQLite counts.
//! - **Schema.** Ids are `main.<Table>/…` on SQLite and `dbo.<Table>/…` on SQL Server.
//!
//! Everything else, values included (integers, floats, unicode text, NULLs), is the same.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

mod common;

// ---------------------------------------------------------------------------------------------
// The fixture dataset
// ---------------------------------------------------------------------------------------------

/// One fixture value.
#[derive(Clone, Debug)]
enum F {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Null,
}

impl F {
    fn json(&self) -> Value {
        match self {
            F::Int(i) => json!(i),
            F::Float(f) => json!(f),
            F::Text(s) => json!(s),
            F::Bool(b) => json!(b),
            F::Null => Value::Null,
        }
    }
}

fn text(s: impl Into<String>) -> F {
    F::Text(s.into())
}

/// A fixture table: columns with their SQLite declarations, rows, and (SQLite only)
/// foreign keys `(column, referenced table)`.
struct Table {
    name: &'static str,
    columns: Vec<(&'static str, &'static str)>,
    rows: Vec<Vec<F>>,
    foreign_keys: Vec<(&'static str, &'static str)>,
    /// Created `WITHOUT ROWID` on SQLite (the peer has no such thing): a table with no
    /// `rowid` to fall back on when its key is hidden.
    without_rowid: bool,
}

impl Table {
    fn row(&self, id: i64) -> &[F] {
        self.rows
            .iter()
            .find(|r| matches!(r[0], F::Int(i) if i == id))
            .unwrap_or_else(|| panic!("no {} row {id} in the fixture", self.name))
    }
}

const CUSTOMERS: i64 = 30;
const PRODUCTS: i64 = 12;
const ORDERS: i64 = 250;
/// The row cap of every scope in the harness configuration.
const MAX_ROWS: usize = 200;
/// A word in exactly one customer's notes (customer [`AUBERGINE_CUSTOMER`]).
const AUBERGINE_CUSTOMER: i64 = 7;
/// Customer 1's name: non-ASCII letters, upper and lower case.
const UNICODE_NAME: &str = "Zoë Ærøskøbing";
/// The customer whose notes are long (but under the peer's 4,000 character limit).
const LONG_NOTES_CUSTOMER: i64 = 4;
const CITIES: [&str; 5] = ["Zürich", "東京", "São Paulo", "Reykjavík", "Oslo"];

/// The hidden phone number of customer `i` (one keyword, so a search could find it).
fn phone(i: i64) -> String {
    format!("ph-{:04}", 7000 + i)
}

/// The dataset every backend is loaded with. `Id` first in every table.
fn dataset() -> Vec<Table> {
    let customers = Table {
        name: "Customers",
        columns: vec![
            ("Id", "INTEGER NOT NULL PRIMARY KEY"),
            ("Name", "NVARCHAR(100) NOT NULL"),
            ("Email", "NVARCHAR(100)"),
            ("Phone", "NVARCHAR(20) CHECK (Phone LIKE 'ph-%')"),
            ("City", "NVARCHAR(50)"),
            ("Notes", "NVARCHAR(4000)"),
            ("IsActive", "BOOLEAN"),
        ],
        rows: (1..=CUSTOMERS)
            .map(|i| {
                let name = match i {
                    1 => UNICODE_NAME.to_string(),
                    2 => "Café \"Olé\", Ltd".to_string(),
                    3 => "100% Natural_Foods".to_string(),
                    _ => format!("Customer {i:02}"),
                };
                let email = if i % 7 == 0 {
                    F::Null
                } else {
                    text(format!("c{i}@example.com"))
                };
                let notes = if i == AUBERGINE_CUSTOMER {
                    text("Asked about the aubergine subscription box.")
                } else if i == LONG_NOTES_CUSTOMER {
                    text("long note ".repeat(350))
                } else if i % 5 == 0 {
                    F::Null
                } else {
                    text(format!(
                        "prefers {} delivery",
                        if i % 2 == 0 { "morning" } else { "evening" }
                    ))
                };
                vec![
                    F::Int(i),
                    text(name),
                    email,
                    text(phone(i)),
                    text(CITIES[(i as usize) % CITIES.len()]),
                    notes,
                    F::Bool(i % 4 != 0),
                ]
            })
            .collect(),
        foreign_keys: vec![],
        without_rowid: false,
    };
    let product_names = [
        "Espresso Machine",
        "Coffee Grinder",
        "Tea Kettle",
        "Milk Frother",
        "Mocha Pot",
        "Pour-over Cone",
        "Cold Brew Jar",
        "Tamper",
        "Knock Box",
        "Scale",
        "Thermometer",
        "Descaler",
    ];
    let products = Table {
        name: "Products",
        columns: vec![
            ("Id", "INTEGER NOT NULL PRIMARY KEY"),
            ("Name", "NVARCHAR(100) NOT NULL"),
            ("Category", "NVARCHAR(50)"),
            ("Price", "FLOAT"),
            ("Description", "NVARCHAR(400)"),
        ],
        rows: (1..=PRODUCTS)
            .map(|i| {
                vec![
                    F::Int(i),
                    text(product_names[(i - 1) as usize]),
                    text(if i <= 6 { "kitchen" } else { "barista" }),
                    // Binary fractions, exact in both databases.
                    F::Float(i as f64 * 10.0 + 0.25),
                    if i == 5 {
                        F::Null
                    } else {
                        text(format!(
                            "A sturdy {} for daily use",
                            product_names[(i - 1) as usize].to_lowercase()
                        ))
                    },
                ]
            })
            .collect(),
        foreign_keys: vec![],
        without_rowid: false,
    };
    let orders = Table {
        name: "Orders",
        columns: vec![
            ("Id", "INTEGER NOT NULL PRIMARY KEY"),
            ("CustomerId", "INTEGER NOT NULL"),
            ("ProductId", "INTEGER NOT NULL"),
            ("Quantity", "INTEGER NOT NULL CHECK (Quantity > 0)"),
            (
                "Status",
                "NVARCHAR(20) CHECK (Status IN ('pending', 'shipped'))",
            ),
            ("OrderDate", "NVARCHAR(10)"),
        ],
        rows: (1..=ORDERS)
            .map(|i| {
                vec![
                    F::Int(i),
                    F::Int(i % CUSTOMERS + 1),
                    F::Int(i % PRODUCTS + 1),
                    F::Int(i % 4 + 1),
                    if i % 10 == 0 {
                        F::Null
                    } else {
                        text(if i % 3 == 0 { "pending" } else { "shipped" })
                    },
                    text(format!("2024-{:02}-{:02}", i % 12 + 1, i % 28 + 1)),
                ]
            })
            .collect(),
        foreign_keys: vec![("CustomerId", "Customers"), ("ProductId", "Products")],
        without_rowid: true,
    };
    let salaries = Table {
        name: "Salaries",
        columns: vec![
            ("Id", "INTEGER NOT NULL PRIMARY KEY"),
            ("Employee", "NVARCHAR(100) NOT NULL"),
            ("Amount", "FLOAT NOT NULL"),
        ],
        rows: (1..=5)
            .map(|i| {
                vec![
                    F::Int(i),
                    text(format!("Payrolled Person {i}")),
                    F::Float(80_000.0 + 1_000.0 * i as f64),
                ]
            })
            .collect(),
        foreign_keys: vec![],
        without_rowid: false,
    };
    vec![customers, products, orders, salaries]
}

fn fixture_table(name: &str) -> Table {
    dataset()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fixture table {name}"))
}

/// Writes the dataset into a new SQLite file at `path`.
fn write_sqlite(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("create sqlite file");
    for t in dataset() {
        let mut cols: Vec<String> = t
            .columns
            .iter()
            .map(|(c, decl)| format!("\"{c}\" {decl}"))
            .collect();
        for (c, parent) in &t.foreign_keys {
            cols.push(format!(
                "FOREIGN KEY (\"{c}\") REFERENCES \"{parent}\" (\"Id\")"
            ));
        }
        conn.execute_batch(&format!(
            "CREATE TABLE \"{}\" ({}){};",
            t.name,
            cols.join(", "),
            if t.without_rowid {
                " WITHOUT ROWID"
            } else {
                ""
            }
        ))
        .expect("create table");
        let placeholders = (1..=t.columns.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn
            .prepare(&format!(
                "INSERT INTO \"{}\" VALUES ({placeholders})",
                t.name
            ))
            .expect("prepare insert");
        for row in &t.rows {
            let values: Vec<rusqlite::types::Value> = row
                .iter()
                .map(|v| match v {
                    F::Int(i) => rusqlite::types::Value::Integer(*i),
                    F::Float(f) => rusqlite::types::Value::Real(*f),
                    F::Text(s) => rusqlite::types::Value::Text(s.clone()),
                    F::Bool(b) => rusqlite::types::Value::Integer(*b as i64),
                    F::Null => rusqlite::types::Value::Null,
                })
                .collect();
            stmt.execute(rusqlite::params_from_iter(values))
                .expect("insert");
        }
    }
}

/// Writes the dataset as one JSON file per table plus the peer's `config.json` into `dir`.
fn write_peer_fixture(dir: &Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir data");
    let mut tables = Vec::new();
    for t in dataset() {
        let rows: Vec<Value> = t
            .rows
            .iter()
            .map(|r| {
                let mut o = Map::new();
                for ((c, _), v) in t.columns.iter().zip(r) {
                    o.insert((*c).to_string(), v.json());
                }
                Value::Object(o)
            })
            .collect();
        let file = format!("data/{}.json", t.name.to_lowercase());
        std::fs::write(dir.join(&file), serde_json::to_vec(&rows).expect("json"))
            .expect("write table");
        tables.push(json!({"name": t.name, "json": file}));
    }
    common::write_peer_config(dir, Value::Array(tables));
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Mssql,
}

/// Scopes of the harness configuration:
/// - `/chatgpt`: profile `chatgpt`, `Salaries` denied, `Customers.Phone` hidden;
/// - `/claude`: profile `full`, the same rules;
/// - `/open`: profile `full`, nothing hidden (the control);
/// - `/keyless`: profile `full`, `Orders.Id` (the key) hidden, so `Orders` has no key;
/// - `/small`: profile `full`, a 4 KiB page, `Customers.Phone` hidden.
const SCOPES: &str = r#"
[[scope]]
path = "/chatgpt"
database = "db"
profile = "chatgpt"
max_rows = 200
deny_tables = ["Salaries"]
deny_columns = ["Customers.Phone"]

[[scope]]
path = "/claude"
database = "db"
profile = "full"
max_rows = 200
deny_tables = ["Salaries"]
deny_columns = ["Customers.Phone"]

[[scope]]
path = "/open"
database = "db"
profile = "full"
max_rows = 200

[[scope]]
path = "/keyless"
database = "db"
profile = "full"
max_rows = 200
deny_columns = ["Orders.Id"]

[[scope]]
path = "/small"
database = "db"
profile = "full"
max_rows = 200
max_result_bytes = 4096
deny_columns = ["Customers.Phone"]
"#;

/// The operator's descriptions, on both backends (SQLite keeps none, and the peer's
/// `sys.extended_properties` is empty, so these are all there is): one of a hidden column and
/// one of a denied table, which the scopes that hide them must never show.
const DESCRIPTIONS: &str = r#"table_descriptions = { "Orders" = "One row per order.", "dbo.Salaries" = "Pay of every employee (secret table)." }
column_descriptions = { "orders.status" = "shipped, pending or cancelled.", "Customers.Phone" = "Mobile number (secret column)." }
"#;

/// The peer is a Python process with an accept backlog of 5: SQL Server tests run one at a
/// time (SQLite tests run in parallel).
static PEER_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The real server over one backend with the fixture loaded; stopped on drop.
struct Harness {
    kind: Kind,
    base: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    // Dropped after the server (fields drop in order).
    _peer: Option<common::PeerProcess>,
    _dir: tempfile::TempDir,
    _serial: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// `[limits]` generous enough that no test meets the per-IP rate limit.
const LIMITS: &str = "[limits]\nper_ip_per_sec = 100000\nper_ip_burst = 100000\n";

impl Harness {
    async fn start(kind: Kind) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let (serial, peer, database) = match kind {
            Kind::Sqlite => {
                let path = dir.path().join("fixture.sqlite");
                write_sqlite(&path);
                let db = format!(
                    "[[database]]\nname = \"db\"\nkind = \"sqlite\"\npath = \"{}\"\npool_size = 4\n",
                    path.display()
                );
                (None, None, db)
            }
            Kind::Mssql => {
                let guard = PEER_SERIAL.lock().await;
                write_peer_fixture(dir.path());
                let port = common::free_port();
                let child = common::spawn_pysqlbridge(dir.path(), port);
                let db = format!(
                    r#"[[database]]
name = "db"
kind = "mssql"
host = "127.0.0.1"
port = {port}
database = "pysqlbridge"
user = "{login}"
password = {{ file = "{pw}" }}
trust_server_certificate = true
connect_timeout_secs = 5
pool_size = 4
"#,
                    login = common::LOGIN,
                    pw = dir.path().join("password").display()
                );
                (Some(guard), Some(common::PeerProcess(child)), db)
            }
        };
        let toml = format!(
            "[server]\ninsecure_no_auth = true\nstate_dir = \"{state}\"\n\n{LIMITS}\n{database}{DESCRIPTIONS}\n{SCOPES}",
            state = dir.path().join("state").display()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut config = mssql_mcp::config::Config::parse(&toml)
            .unwrap_or_else(|e| panic!("harness config is invalid: {e}\n{toml}"));
        config.server.listen = addr;
        config.server.public_url = Some(format!("http://{addr}"));
        let state = mssql_mcp::app::build_state(config, true)
            .await
            .unwrap_or_else(|e| panic!("build_state over {kind:?}: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = mssql_mcp::app::run(state, listener, shutdown).await {
                eprintln!("server stopped with an error: {e}");
            }
        });
        Harness {
            kind,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
            shutdown: Some(tx),
            task: Some(task),
            _peer: peer,
            _dir: dir,
            _serial: serial,
        }
    }

    /// The schema the backend reports: `main` (SQLite) or `dbo` (SQL Server).
    fn schema(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite => "main",
            Kind::Mssql => "dbo",
        }
    }

    /// A boolean as this backend serves it (the peer has no `bit`: `"True"`/`"False"`).
    fn boolean(&self, b: bool) -> Value {
        match self.kind {
            Kind::Sqlite => json!(b),
            Kind::Mssql => json!(if b { "True" } else { "False" }),
        }
    }

    /// A table's row count as the catalog reports it (the peer has no `sys.partitions`).
    fn row_count(&self, n: i64) -> Value {
        match self.kind {
            Kind::Sqlite => json!(n),
            Kind::Mssql => Value::Null,
        }
    }

    /// The fixture row as the tools should show it: every column except `hidden`, in order.
    fn expected_values(&self, table: &str, id: i64, hidden: &[&str]) -> Value {
        let t = fixture_table(table);
        let row = t.row(id);
        let mut o = Map::new();
        for ((c, _), v) in t.columns.iter().zip(row) {
            if !hidden.contains(c) {
                let v = match v {
                    F::Bool(b) => self.boolean(*b),
                    other => other.json(),
                };
                o.insert((*c).to_string(), v);
            }
        }
        Value::Object(o)
    }

    /// A table id, `schema.Table`.
    fn table_id(&self, table: &str) -> String {
        format!("{}.{table}", self.schema())
    }

    /// A row id, `schema.Table/key`.
    fn row_id(&self, table: &str, key: i64) -> String {
        format!("{}.{table}/{key}", self.schema())
    }

    /// Sends one stateless 2026-07-28 request to `scope` and returns the JSON-RPC response.
    async fn rpc(&self, scope: &str, method: &str, params: Value) -> Value {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let name = match method {
            "tools/call" | "prompts/get" => params["name"].as_str().map(str::to_string),
            "resources/read" => params["uri"].as_str().map(str::to_string),
            _ => None,
        };
        let body = json!({
            "jsonrpc": "2.0",
            "id": NEXT.fetch_add(1, Ordering::Relaxed),
            "method": method,
            "params": params,
        });
        let mut req = self
            .client
            .post(format!("{}{scope}/mcp", self.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .body(serde_json::to_vec(&body).expect("json"));
        if let Some(n) = &name {
            req = req.header("mcp-name", n.as_str());
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert_eq!(status, 200, "{method} on {scope}: {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} on {scope}: not JSON ({e}): {text}"));
        assert!(v.get("error").is_none(), "{method} on {scope}: {text}");
        v["result"].clone()
    }

    async fn call_tool(&self, scope: &str, tool: &str, args: Value) -> Value {
        self.rpc(
            scope,
            "tools/call",
            json!({"name": tool, "arguments": args}),
        )
        .await
    }

    /// A tool call that must succeed; its `structuredContent`.
    async fn ok(&self, scope: &str, tool: &str, args: Value) -> Value {
        let r = self.call_tool(scope, tool, args.clone()).await;
        assert_eq!(
            r["isError"],
            false,
            "[{:?}] {tool} {args} on {scope} failed: {}",
            self.kind,
            tool_text(&r)
        );
        r["structuredContent"].clone()
    }

    /// A tool call that must fail with `isError`; its message.
    async fn err(&self, scope: &str, tool: &str, args: Value) -> String {
        let r = self.call_tool(scope, tool, args.clone()).await;
        assert_eq!(
            r["isError"],
            true,
            "[{:?}] {tool} {args} on {scope} should have failed but returned {}",
            self.kind,
            tool_text(&r)
        );
        tool_text(&r).to_string()
    }

    /// `execute_sql` of `sql` on `scope`, which must succeed; its `structuredContent`.
    async fn sql_ok(&self, scope: &str, sql: &str) -> Value {
        self.ok(scope, "execute_sql", json!({ "sql": sql })).await
    }

    /// `execute_sql` of `sql` on `scope`, which must fail; its message.
    async fn sql_err(&self, scope: &str, sql: &str) -> String {
        self.err(scope, "execute_sql", json!({ "sql": sql })).await
    }

    async fn tool_names(&self, scope: &str) -> Vec<String> {
        let r = self.rpc(scope, "tools/list", json!({})).await;
        r["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    }
}

/// `field` of the column named `column` in a table description's `columns` (null when the
/// column or the field is absent).
fn column_field<'a>(desc: &'a Value, column: &str, field: &str) -> &'a Value {
    &named(desc, "columns", column)[field]
}

/// The element of the array `v[list]` whose `name` is `name` (a tool, a table, a column), or
/// null when there is none.
fn named<'a>(v: &'a Value, list: &str, name: &str) -> &'a Value {
    v[list]
        .as_array()
        .expect(list)
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or(&Value::Null)
}

fn tool_text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}

fn result_ids(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

fn rows(out: &Value) -> &Vec<Value> {
    out["rows"].as_array().expect("rows")
}

/// Whether a result carries a note containing `text`.
fn has_note(out: &Value, text: &str) -> bool {
    out["notes"].as_array().is_some_and(|n| {
        n.iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains(text)))
    })
}

// ---------------------------------------------------------------------------------------------
// Behaviours (each runs against both backends)
// ---------------------------------------------------------------------------------------------

/// `tools/list` per profile: `chatgpt` has exactly search and fetch, `full` the six tools.
async fn tools_list_per_profile(h: &Harness) {
    assert_eq!(h.tool_names("/chatgpt").await, ["search", "fetch"]);
    let full = [
        "search",
        "fetch",
        "list_tables",
        "describe_table",
        "get_table_sample",
        "execute_sql",
    ];
    assert_eq!(h.tool_names("/claude").await, full);
    assert_eq!(h.tool_names("/open").await, full);
}

/// The instructions and `execute_sql`'s description name the database's dialect, and what
/// they say holds: the row limit they name works, and the one they rule out fails.
async fn the_instructions_and_execute_sql_name_the_dialect(h: &Harness) {
    let discovered = h.rpc("/claude", "server/discover", json!({})).await;
    let instructions = discovered["instructions"].as_str().expect("instructions");
    let tools = h.rpc("/claude", "tools/list", json!({})).await;
    let sql =
        named(&tools, "tools", "execute_sql")["inputSchema"]["properties"]["sql"]["description"]
            .as_str()
            .expect("execute_sql's description");
    let (named, works, ruled_out) = match h.kind {
        Kind::Sqlite => (
            "SQLite",
            "SELECT Id FROM Customers ORDER BY Id LIMIT 2",
            "SELECT TOP 2 Id FROM Customers ORDER BY Id",
        ),
        Kind::Mssql => (
            "SQL Server",
            "SELECT TOP (2) Id FROM Customers ORDER BY Id",
            "SELECT Id FROM Customers ORDER BY Id LIMIT 2",
        ),
    };
    for text in [instructions, sql] {
        assert!(text.contains(named), "[{:?}] {text}", h.kind);
    }
    let out = h.sql_ok("/claude", works).await;
    assert_eq!(rows(&out).len(), 2, "{out}");
    let refused = h.sql_err("/claude", ruled_out).await;
    assert!(
        refused.contains(&format!("{named} has no")),
        "[{:?}] {refused}",
        h.kind
    );
}

/// A natural-language question finds the one row holding its word, first, and fetching it
/// shows the word.
async fn search_natural_language_finds_the_row_with_the_word(h: &Harness) {
    let found = h
        .ok(
            "/chatgpt",
            "search",
            json!({"query": "Who asked about an aubergine?"}),
        )
        .await;
    let ids = result_ids(&found);
    let want = h.row_id("Customers", AUBERGINE_CUSTOMER);
    assert_eq!(ids.first(), Some(&want), "{found}");
    let first = &found["results"][0];
    assert!(
        first["text"].as_str().unwrap_or("").contains("aubergine"),
        "snippet: {first}"
    );
    assert_eq!(
        first["url"].as_str().unwrap_or(""),
        format!("{}/chatgpt/records/{want}", h.base)
    );
    let doc = h.ok("/chatgpt", "fetch", json!({"id": want})).await;
    assert!(
        doc["text"].as_str().unwrap_or("").contains("aubergine"),
        "{doc}"
    );
}

/// Words with non-ASCII letters, in another case than stored, find their rows.
async fn search_matches_unicode_words_in_any_case(h: &Harness) {
    for (query, table, id) in [
        ("zoë", "Customers", 1),
        ("ærøskøbing", "Customers", 1),
        ("ÆRØSKØBING", "Customers", 1),
        ("東京", "Customers", 1),
        ("SÃO PAULO", "Customers", 2),
    ] {
        let found = h.ok("/chatgpt", "search", json!({"query": query})).await;
        let ids = result_ids(&found);
        assert!(
            ids.contains(&h.row_id(table, id)),
            "[{:?}] `{query}` did not find {table}/{id}: {found}",
            h.kind
        );
    }
}

/// `list tables` lists every visible table, nothing denied.
async fn search_list_tables(h: &Harness) {
    let found = h
        .ok("/chatgpt", "search", json!({"query": "list tables"}))
        .await;
    let ids = result_ids(&found);
    assert_eq!(
        ids,
        [
            h.table_id("Customers"),
            h.table_id("Orders"),
            h.table_id("Products")
        ],
        "{found}"
    );
    let customers = &found["results"][0]["text"];
    let text = customers.as_str().unwrap_or("");
    assert!(text.contains("Name") && text.contains("Notes"), "{text}");
    assert!(!text.contains("Phone"), "hidden column listed: {text}");
    let rows = match h.kind {
        Kind::Sqlite => CUSTOMERS.to_string(),
        Kind::Mssql => "?".into(),
    };
    assert!(text.starts_with(&format!("{rows} rows;")), "{text}");
}

/// `describe <table>` returns the table's description as one result.
async fn search_describe(h: &Harness) {
    let found = h
        .ok("/chatgpt", "search", json!({"query": "describe Orders"}))
        .await;
    assert_eq!(result_ids(&found), [h.table_id("Orders")], "{found}");
    let text = found["results"][0]["text"].as_str().unwrap_or("");
    for c in [
        "Id",
        "CustomerId",
        "ProductId",
        "Quantity",
        "Status",
        "OrderDate",
    ] {
        assert!(text.contains(&format!("- {c} ")), "{c} missing: {text}");
    }
    assert!(
        text.contains("- Id ") && text.contains("PRIMARY KEY"),
        "{text}"
    );
    // Foreign keys: declared in SQLite; the peer exposes none.
    match h.kind {
        Kind::Sqlite => assert!(
            text.contains(&format!("references {}", h.table_id("Customers"))),
            "{text}"
        ),
        Kind::Mssql => assert!(!text.contains("references"), "{text}"),
    }
}

/// `sample <table> limit N` returns the first N rows in key order, with row ids.
async fn search_sample_limit(h: &Harness) {
    let found = h
        .ok(
            "/chatgpt",
            "search",
            json!({"query": "sample Orders limit 3"}),
        )
        .await;
    assert_eq!(
        result_ids(&found),
        [
            h.row_id("Orders", 1),
            h.row_id("Orders", 2),
            h.row_id("Orders", 3)
        ],
        "{found}"
    );
    let text = found["results"][1]["text"].as_str().unwrap_or("");
    assert!(text.contains("CustomerId: 3"), "{text}");
}

/// `fetch` of a table id: its description, key, columns (hidden ones left out).
async fn fetch_table_id(h: &Harness) {
    let doc = h
        .ok("/chatgpt", "fetch", json!({"id": h.table_id("Customers")}))
        .await;
    assert_eq!(doc["id"], h.table_id("Customers"));
    assert_eq!(doc["metadata"]["kind"], "table");
    let schema = &doc["metadata"]["schema"];
    assert_eq!(schema["primary_key"], json!(["Id"]));
    assert_eq!(schema["rows"], h.row_count(CUSTOMERS));
    // The documented difference: the peer declares no keys, so SQL Server's key is the `Id`
    // fallback and says so.
    assert_eq!(
        schema["key_is_heuristic"],
        h.kind == Kind::Mssql,
        "{schema}"
    );
    let names: Vec<&str> = schema["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Id", "Name", "Email", "City", "Notes", "IsActive"],
        "Phone is hidden in /chatgpt"
    );
    // Declared types: each database's own names.
    let ty = |name: &str| -> String {
        column_field(schema, name, "type")
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    match h.kind {
        Kind::Sqlite => {
            assert_eq!(ty("Id"), "INTEGER");
            assert_eq!(ty("Name"), "NVARCHAR(100)");
            assert_eq!(ty("IsActive"), "BOOLEAN");
        }
        Kind::Mssql => {
            assert_eq!(ty("Id"), "int");
            assert!(ty("Name").starts_with("nvarchar("), "{}", ty("Name"));
            assert_eq!(ty("IsActive"), "nvarchar(5)", "the peer has no bit");
        }
    }
    assert!(!doc.to_string().contains("Phone"), "{doc}");
}

/// `fetch` of a row id: every visible value, the same on both backends.
async fn fetch_row_id_gives_the_same_values(h: &Harness) {
    for (table, id) in [
        ("Customers", 1),
        ("Customers", 2),
        ("Customers", AUBERGINE_CUSTOMER), // NULL e-mail
        ("Customers", LONG_NOTES_CUSTOMER),
        ("Customers", 20), // NULL notes, inactive
        ("Products", 3),
        ("Products", 5), // NULL description
        ("Orders", 30),  // NULL status
        ("Orders", 31),
    ] {
        let hidden: &[&str] = if table == "Customers" {
            &["Phone"]
        } else {
            &[]
        };
        let doc = h
            .ok("/chatgpt", "fetch", json!({"id": h.row_id(table, id)}))
            .await;
        let meta = &doc["metadata"];
        assert_eq!(meta["kind"], "row");
        assert_eq!(meta["table"], h.table_id(table));
        assert_eq!(meta["primary_key"], json!(["Id"]));
        assert_eq!(meta["key_is_heuristic"], h.kind == Kind::Mssql, "{meta}");
        assert_eq!(
            meta["values"],
            h.expected_values(table, id, hidden),
            "[{:?}] {table}/{id}",
            h.kind
        );
        assert_eq!(
            meta["values"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            h.expected_values(table, id, hidden)
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            "column order"
        );
    }
    // Related rows come from foreign keys: SQLite declares them, the peer has none.
    let order = h
        .ok("/chatgpt", "fetch", json!({"id": h.row_id("Orders", 31)}))
        .await;
    let related = order["metadata"]["related"].to_string();
    match h.kind {
        Kind::Sqlite => {
            assert!(
                related.contains(&h.row_id("Customers", 31 % CUSTOMERS + 1)),
                "{related}"
            );
            assert!(
                related.contains(&h.row_id("Products", 31 % PRODUCTS + 1)),
                "{related}"
            );
        }
        Kind::Mssql => assert_eq!(order["metadata"]["related"], json!([]), "{order}"),
    }
    // A key that does not exist.
    let msg = h
        .err(
            "/chatgpt",
            "fetch",
            json!({"id": h.row_id("Orders", 99_999)}),
        )
        .await;
    assert!(msg.contains("no row"), "{msg}");
}

/// `execute_sql` point lookup by key.
async fn execute_sql_point_lookup(h: &Harness) {
    let out = h
        .sql_ok(
            "/claude",
            "SELECT Id, Name, Email, City, IsActive FROM Customers WHERE Id = 1",
        )
        .await;
    assert_eq!(out["row_count"], 1);
    assert_eq!(out["truncated"], false);
    assert!(out.get("next_cursor").is_none(), "{out}");
    assert_eq!(
        out["columns"],
        json!(["Id", "Name", "Email", "City", "IsActive"])
    );
    assert_eq!(
        rows(&out)[0],
        json!({"Id": 1, "Name": UNICODE_NAME, "Email": "c1@example.com", "City": CITIES[1], "IsActive": h.boolean(true)})
    );
    let out = h
        .sql_ok(
            "/claude",
            "SELECT Id, Price FROM Products WHERE Name = 'Tea Kettle'",
        )
        .await;
    assert_eq!(rows(&out)[0], json!({"Id": 3, "Price": 30.25}));
    let out = h
        .sql_ok("/claude", "SELECT Id, Email FROM Customers WHERE Id = 14")
        .await;
    assert_eq!(rows(&out)[0], json!({"Id": 14, "Email": null}));
}

/// The scope's row cap cuts a large result with `truncated` and a cursor; paging with the
/// cursor returns every row once, in order.
async fn row_cap_and_cursor_paging(h: &Harness) {
    let q = "SELECT Id, Status FROM Orders ORDER BY Id";
    let out = h.sql_ok("/claude", q).await;
    assert_eq!(rows(&out).len(), MAX_ROWS, "cut at the scope's max_rows");
    assert_eq!(out["truncated"], true);
    assert!(out["next_cursor"].as_str().is_some_and(|c| !c.is_empty()));

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({"sql": q, "page_size": 100});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let out = h.ok("/claude", "execute_sql", args).await;
        sizes.push(rows(&out).len());
        assert_eq!(out["offset"], seen.len(), "{out}");
        seen.extend(rows(&out).iter().map(|r| r["Id"].as_i64().expect("Id")));
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
    assert_eq!(seen, (1..=ORDERS).collect::<Vec<_>>());

    // Table samples page in key order the same way.
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let mut args = json!({"table": "Customers", "limit": 12});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let out = h.ok("/claude", "get_table_sample", args).await;
        assert_eq!(out["table"], h.table_id("Customers"));
        keys.extend(rows(&out).iter().map(|r| r["Id"].as_i64().expect("Id")));
        cursor = out["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(keys, (1..=CUSTOMERS).collect::<Vec<_>>());
    assert!(cursor.is_none(), "30 rows in pages of 12 end on the third");
}

/// A table whose key is hidden has no key in the scope: its samples order by the visible
/// columns, so pages neither fail (`Orders` is `WITHOUT ROWID` on SQLite: no `rowid`) nor
/// repeat or skip rows, and the hidden key shows nowhere.
async fn sample_of_a_table_whose_key_is_hidden_pages_stably(h: &Harness) {
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..4 {
        let mut args = json!({"table": "Orders", "limit": 100});
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let out = h.ok("/keyless", "get_table_sample", args).await;
        assert!(!out.to_string().contains("\"Id\""), "{out}");
        seen.extend(rows(&out).iter().cloned());
        cursor = out["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert!(
        cursor.is_none(),
        "250 rows in pages of 100 end on the third"
    );
    let mut expected: Vec<String> = (1..=ORDERS)
        .map(|i| h.expected_values("Orders", i, &["Id"]).to_string())
        .collect();
    let mut got: Vec<String> = seen.iter().map(Value::to_string).collect();
    assert_eq!(got.len(), expected.len(), "{got:?}");
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "every row once");
}

/// A value longer than 64 KiB is cut to it at a character boundary and the result says which
/// column and why; a page stops at the scope's `max_result_bytes` (the first row always
/// comes) and its cursor carries on where it stopped, so every row still comes once.
async fn long_values_are_cut_and_pages_stop_at_the_byte_cap(h: &Harness) {
    const CUT: usize = 64 * 1024;
    // 40,000 × "😀a" (five bytes in UTF-8; a surrogate pair and a unit in UTF-16): 200,000
    // bytes, built by each database. 13,107 of them fill 65,535 bytes, and the next emoji
    // would straddle the cut.
    let long = match h.kind {
        Kind::Sqlite => "replace(hex(zeroblob(40000)), '00', '😀a')",
        Kind::Mssql => "REPLICATE(CAST(N'😀a' AS nvarchar(max)), 40000)",
    };
    let full = "😀a".repeat(40_000);
    let q = format!("SELECT Id, {long} AS Big FROM Orders WHERE Id <= 2 ORDER BY Id");
    let out = h.sql_ok("/claude", &q).await;
    assert_eq!(rows(&out).len(), 2, "{}", out["notes"]);
    for r in rows(&out) {
        let big = r["Big"].as_str().expect("Big is text");
        assert_eq!(big.len(), CUT - 1);
        assert!(full.starts_with(big), "not a prefix of the value");
    }
    assert_eq!(out["cut_columns"], json!(["Big"]));
    assert_eq!(out["truncated"], false);
    let notes = out["notes"].to_string();
    assert!(
        notes.contains("values of Big were cut: at most 65536 bytes"),
        "{notes}"
    );
    // Rows of an ad-hoc query without its key are cached for `fetch`, which says which of
    // that row's values were cut.
    let q = format!(
        "SELECT CASE WHEN Id = 1 THEN {long} ELSE 'short' END AS Big, Status FROM Orders \
         WHERE Id <= 2 ORDER BY Id"
    );
    let found = h.ok("/claude", "search", json!({ "query": q })).await;
    let ids = result_ids(&found);
    assert_eq!(ids.len(), 2, "{found}");
    assert!(ids.iter().all(|id| id.starts_with("sql:")), "{ids:?}");
    for (id, cut) in ids.iter().zip([json!(["Big"]), json!([])]) {
        let doc = h.ok("/claude", "fetch", json!({ "id": id })).await;
        assert_eq!(doc["metadata"]["cut_columns"], cut, "{id}");
        assert_eq!(
            doc["text"].as_str().unwrap_or("").contains("were cut"),
            cut != json!([]),
            "{id}"
        );
    }
    // The same through a masked column: `c.*` brings Customers.Phone (hidden in /claude)
    // before `Big`, so the cut value's column is renumbered when Phone is dropped. (The TDS
    // peer expands `c.*` in a join to `Id` alone, so there only SQLite renumbers.)
    let q = format!(
        "SELECT c.*, CASE WHEN o.Id = 1 THEN {long} ELSE 'short' END AS Big \
         FROM Customers c JOIN Orders o ON o.CustomerId = c.Id WHERE o.Id <= 2 ORDER BY o.Id"
    );
    let found = h.ok("/claude", "search", json!({ "query": q })).await;
    let ids = result_ids(&found);
    assert_eq!(ids.len(), 2, "{found}");
    for (id, cut) in ids.iter().zip([json!(["Big"]), json!([])]) {
        let doc = h.ok("/claude", "fetch", json!({ "id": id })).await;
        assert!(doc["metadata"]["values"].get("Phone").is_none(), "{doc}");
        assert_eq!(doc["metadata"]["cut_columns"], cut, "{id}");
    }
    // Values that fit are left alone, and say nothing.
    let out = h
        .sql_ok("/claude", "SELECT Id, Status FROM Orders WHERE Id = 1")
        .await;
    assert!(
        out.get("cut_columns").is_none() && out.get("notes").is_none(),
        "{out}"
    );

    // The byte cap: 4 KiB pages of (Id, Status) hold far fewer than the 200-row cap.
    let pages = page_through(h, "/small", "SELECT Id, Status FROM Orders ORDER BY Id").await;
    let seen: Vec<i64> = pages
        .iter()
        .flatten()
        .map(|r| r["Id"].as_i64().expect("Id"))
        .collect();
    assert_eq!(seen, (1..=ORDERS).collect::<Vec<_>>());
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert!(
        sizes.len() >= 2 && sizes.iter().all(|&n| n > 10 && n < MAX_ROWS),
        "{sizes:?}"
    );
    // A row larger than the cap still comes, one per page.
    let q = format!("SELECT Id, {long} AS Big FROM Orders WHERE Id <= 2 ORDER BY Id");
    let out = h.sql_ok("/small", &q).await;
    assert_eq!(rows(&out).len(), 1);
    assert_eq!(out["truncated"], true);
    // Cut further, to fit the 4 KiB page.
    let big = rows(&out)[0]["Big"].as_str().expect("Big");
    assert!(
        big.len() < 4096 && full.starts_with(big),
        "{} bytes",
        big.len()
    );
    assert_eq!(out["cut_columns"], json!(["Big"]));
    let c = out["next_cursor"].as_str().expect("cursor");
    let out = h
        .ok("/small", "execute_sql", json!({"sql": q, "cursor": c}))
        .await;
    assert_eq!(rows(&out)[0]["Id"], 2, "{}", out["notes"]);
    assert_eq!(out["truncated"], false);

    // A hidden column does not count: `SELECT *` (Phone masked) pages exactly like the
    // visible columns named, so where a page ends says nothing about the hidden values.
    let sizes = |pages: Vec<Vec<Value>>| -> Vec<usize> {
        assert!(pages.iter().flatten().all(|r| r.get("Phone").is_none()));
        pages.iter().map(Vec::len).collect()
    };
    let star = sizes(page_through(h, "/small", "SELECT * FROM Customers ORDER BY Id").await);
    let named = sizes(
        page_through(
            h,
            "/small",
            "SELECT Id, Name, Email, City, Notes, IsActive FROM Customers ORDER BY Id",
        )
        .await,
    );
    assert!(star.len() > 1, "{star:?}");
    assert_eq!(star, named);
}

/// Every page of `sql` in `scope`, following `next_cursor` (checking `offset`, `truncated`
/// and the byte-cap note on the way), as the rows of each page.
async fn page_through(h: &Harness, scope: &str, sql: &str) -> Vec<Vec<Value>> {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({ "sql": sql });
        if let Some(c) = &cursor {
            args["cursor"] = json!(c);
        }
        let out = h.ok(scope, "execute_sql", args).await;
        let before: usize = pages.iter().map(Vec::len).sum();
        assert_eq!(out["offset"], before, "{out}");
        pages.push(rows(&out).clone());
        match out["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(out["truncated"], true);
                let notes = out["notes"].to_string();
                assert!(notes.contains("max_result_bytes"), "{notes}");
                cursor = Some(c.to_string());
            }
            None => return pages,
        }
        assert!(pages.len() < 40, "paging does not end");
    }
}

/// Writes, procedure calls, several statements and `SELECT … INTO` are refused before they
/// reach either database, and nothing changes.
async fn refusal_corpus(h: &Harness) {
    let before = h
        .sql_ok("/claude", "SELECT COUNT(*) AS n FROM Customers")
        .await;
    assert_eq!(rows(&before)[0]["n"], CUSTOMERS);
    let mut let_through = Vec::new();
    for sql in [
        "INSERT INTO Customers (Id, Name) VALUES (999, 'Mallory')",
        "UPDATE Customers SET Name = 'Mallory'",
        "DELETE FROM Customers",
        "DELETE FROM Customers WHERE Id = 1",
        "DROP TABLE Customers",
        "CREATE TABLE x (a INT)",
        "ALTER TABLE Customers ADD x INT",
        "TRUNCATE TABLE Orders",
        "EXEC sp_tables",
        "EXECUTE('DELETE FROM Customers')",
        "SELECT 1; DELETE FROM Customers",
        "SELECT 1; SELECT 2",
        "SELECT * INTO Copy FROM Customers",
        "BEGIN TRANSACTION; DELETE FROM Customers; COMMIT",
        "MERGE INTO Customers AS t USING Orders AS s ON t.Id = s.Id WHEN MATCHED THEN DELETE;",
    ] {
        for (scope, tool, args) in [
            ("/claude", "execute_sql", json!({"sql": sql})),
            ("/chatgpt", "search", json!({"query": sql})),
        ] {
            let r = h.call_tool(scope, tool, args).await;
            if r["isError"] != true {
                let_through.push(format!("{tool}: {sql}\n    -> {}", tool_text(&r)));
            } else if tool == "execute_sql" && !tool_text(&r).starts_with("refused") {
                let_through.push(format!(
                    "{tool}: {sql}\n    -> refused by the database, not the guard: {}",
                    tool_text(&r)
                ));
            }
        }
    }
    assert!(
        let_through.is_empty(),
        "[{:?}] not refused:\n{}",
        h.kind,
        let_through.join("\n")
    );
    let after = h
        .sql_ok(
            "/claude",
            "SELECT COUNT(*) AS n, MIN(Name) AS first FROM Customers",
        )
        .await;
    assert_eq!(rows(&after)[0]["n"], CUSTOMERS);
}

/// A query on a table that does not exist says so and lists the visible tables (and not the
/// denied one).
async fn unknown_table_lists_visible_tables(h: &Harness) {
    let msg = h.sql_err("/claude", "SELECT * FROM Custmers").await;
    assert!(msg.contains("Custmers"), "{msg}");
    for t in ["Customers", "Orders", "Products"] {
        assert!(
            msg.contains(&h.table_id(t)),
            "[{:?}] {t} missing: {msg}",
            h.kind
        );
    }
    assert!(!msg.contains("Salaries"), "denied table listed: {msg}");
    let msg = h
        .err("/claude", "describe_table", json!({"table": "Ordes"}))
        .await;
    assert!(msg.contains(&h.table_id("Orders")), "{msg}");
    assert!(!msg.contains("Salaries"), "{msg}");
}

/// A query naming a column that is not there gets the database's error and the visible
/// columns of the tables it reads (not the hidden one, and not other tables').
async fn unknown_column_lists_the_columns_of_the_tables_read(h: &Harness) {
    let msg = h
        .sql_err(
            "/claude",
            "SELECT c.Nmae FROM Customers c JOIN Orders o ON o.CustomerId = c.Id",
        )
        .await;
    assert!(msg.contains("Nmae"), "{msg}");
    for name in [
        "Name",
        "Email",
        "City",
        "IsActive",
        "CustomerId",
        "Quantity",
        "Status",
    ] {
        assert!(msg.contains(name), "[{:?}] {name} missing: {msg}", h.kind);
    }
    assert!(
        msg.contains(&h.table_id("Customers")) && msg.contains(&h.table_id("Orders")),
        "{msg}"
    );
    assert!(!msg.contains("Phone"), "hidden column listed: {msg}");
    assert!(
        !msg.contains("Price"),
        "a column of a table not read: {msg}"
    );
}

/// On SQL Server a `'…'` string beyond Latin-1 is varchar in the database's code page, where
/// its characters may become `?`: the result says to write `N'…'`. Latin-1 text, `N'…'` and
/// SQLite (all text UTF-8) get no such note. (The peer keeps every string as Unicode, so the
/// quiet mismatch itself cannot be shown here.)
async fn a_wide_varchar_literal_gets_a_note_on_sql_server(h: &Harness) {
    let wide = h
        .sql_ok(
            "/claude",
            "SELECT Id FROM Customers WHERE City = '東京' OR Id = 1",
        )
        .await;
    let said = has_note(&wide, "N'…'");
    assert_eq!(said, h.kind == Kind::Mssql, "[{:?}] {wide}", h.kind);
    let mut quiet = vec!["SELECT Id FROM Customers WHERE City = 'Málaga' OR Id = 1"];
    if h.kind == Kind::Mssql {
        quiet.push("SELECT Id FROM Customers WHERE City = N'東京' OR Id = 1");
    }
    for sql in quiet {
        let out = h.sql_ok("/claude", sql).await;
        assert!(out.get("notes").is_none(), "[{:?}] {sql}: {out}", h.kind);
    }
}

/// A comparison with NULL by `=` matches no row on either backend, and the result (of
/// `execute_sql`, and of `search` given the query) says to write `IS NULL`; the same query
/// with `IS NULL` finds the rows and gets no such note.
async fn a_comparison_with_null_gets_a_note(h: &Harness) {
    let eq = h
        .sql_ok("/claude", "SELECT Id FROM Customers WHERE Email = NULL")
        .await;
    assert_eq!(rows(&eq).len(), 0, "{eq}");
    assert!(has_note(&eq, "IS NULL"), "[{:?}] {eq}", h.kind);
    // ChatGPT's only way to run SQL, `search`, says the same.
    let found = h
        .ok(
            "/chatgpt",
            "search",
            json!({"query": "SELECT Id FROM Customers WHERE Email = NULL"}),
        )
        .await;
    assert!(has_note(&found, "IS NULL"), "[{:?}] {found}", h.kind);
    let is = h
        .sql_ok("/claude", "SELECT Id FROM Customers WHERE Email IS NULL")
        .await;
    assert!(!rows(&is).is_empty(), "{is}");
    assert!(is.get("notes").is_none(), "[{:?}] {is}", h.kind);
}

/// SQL Server's (and the peer's) `AVG` of an integer column is an integer, cut toward zero:
/// the result says so, and the cut value is what it says. SQLite averages as a float and gets
/// no note; neither does an `AVG` that already comes back fractional.
async fn an_integer_avg_gets_a_note_on_sql_server(h: &Harness) {
    let noted = |out: &Value| has_note(out, "AVG(CAST(");
    let out = h
        .sql_ok(
            "/claude",
            "SELECT AVG(Quantity) AS q, AVG(Quantity * 1.0) AS exact FROM Orders",
        )
        .await;
    let row = &rows(&out)[0];
    let exact = row["exact"].as_f64().expect("exact");
    assert!(
        exact.fract() != 0.0,
        "the fixture's average is whole: {out}"
    );
    match h.kind {
        Kind::Mssql => {
            assert_eq!(row["q"], json!(exact.trunc() as i64), "{out}");
            assert!(noted(&out), "{out}");
        }
        Kind::Sqlite => {
            assert_eq!(row["q"].as_f64(), Some(exact), "{out}");
            assert!(!noted(&out), "{out}");
        }
    }
    let out = h
        .sql_ok("/claude", "SELECT AVG(Quantity * 1.0) AS exact FROM Orders")
        .await;
    assert!(!noted(&out), "[{:?}] {out}", h.kind);
}

/// `NOT IN` over a subquery that returns a NULL matches nothing, on both backends: the empty
/// result says why and what to write; the `NOT EXISTS` it suggests finds the rows, and a
/// `NOT IN` that finds rows gets no note.
async fn an_empty_not_in_over_a_subquery_gets_a_note(h: &Harness) {
    let noted = |out: &Value| has_note(out, "NOT EXISTS");
    // Customer 7 has no email, so the subquery returns a NULL.
    let out = h
        .sql_ok("/claude", "SELECT Id FROM Customers WHERE Email NOT IN (SELECT Email FROM Customers WHERE Id <= 7)")
        .await;
    assert!(rows(&out).is_empty(), "[{:?}] {out}", h.kind);
    assert!(noted(&out), "[{:?}] {out}", h.kind);
    let out = h
        .sql_ok(
            "/claude",
            "SELECT c.Id FROM Customers c WHERE c.Email IS NOT NULL AND NOT EXISTS \
                (SELECT 1 FROM Customers d WHERE d.Id <= 7 AND d.Email = c.Email)",
        )
        .await;
    assert!(!rows(&out).is_empty(), "[{:?}] {out}", h.kind);
    let out = h
        .sql_ok("/claude", "SELECT Id FROM Customers WHERE Email NOT IN (SELECT Email FROM Customers WHERE Id <= 6)")
        .await;
    assert!(!rows(&out).is_empty(), "[{:?}] {out}", h.kind);
    assert!(!noted(&out), "[{:?}] {out}", h.kind);
}

/// A hidden column (`deny_columns`) is masked from `SELECT *`, refused when named, and left
/// out of fetch, describe, samples and keyword search; `/open` shows it (the control).
async fn hidden_column_is_masked_and_refused(h: &Harness) {
    let secret = phone(3);
    let out = h
        .sql_ok("/claude", "SELECT * FROM Customers WHERE Id = 3")
        .await;
    assert_eq!(out["masked_columns"], json!(["Phone"]), "{out}");
    assert_eq!(
        out["columns"],
        json!(["Id", "Name", "Email", "City", "Notes", "IsActive"])
    );
    assert!(!out.to_string().contains(&secret), "{out}");
    for sql in [
        "SELECT Phone FROM Customers",
        "SELECT Id FROM Customers WHERE Phone = 'ph-7003'",
        "SELECT c.Phone AS p FROM Customers c",
        "SELECT Id FROM Customers ORDER BY Phone",
        "SELECT MAX(Phone) AS m FROM Customers",
    ] {
        let msg = h.sql_err("/claude", sql).await;
        assert!(msg.contains("hidden"), "{sql}: {msg}");
    }
    let doc = h
        .ok("/claude", "fetch", json!({"id": h.row_id("Customers", 3)}))
        .await;
    assert!(!doc.to_string().contains(&secret), "{doc}");
    assert!(doc["metadata"]["values"].get("Phone").is_none(), "{doc}");
    let desc = h
        .ok("/claude", "describe_table", json!({"table": "Customers"}))
        .await;
    assert!(!desc.to_string().contains("Phone"), "{desc}");
    let sample = h
        .ok(
            "/claude",
            "get_table_sample",
            json!({"table": "Customers", "limit": 5}),
        )
        .await;
    assert!(!sample.to_string().contains("Phone"), "{sample}");
    let found = h.ok("/claude", "search", json!({"query": secret})).await;
    assert!(
        !found.to_string().contains(&secret)
            && !result_ids(&found).contains(&h.row_id("Customers", 3)),
        "the hidden value was searched: {found}"
    );

    // The control: where nothing is hidden, the same value is found and shown.
    let found = h.ok("/open", "search", json!({"query": secret})).await;
    assert_eq!(
        result_ids(&found).first(),
        Some(&h.row_id("Customers", 3)),
        "{found}"
    );
    let out = h
        .sql_ok("/open", "SELECT Phone FROM Customers WHERE Id = 3")
        .await;
    assert_eq!(rows(&out)[0]["Phone"], secret);
}

/// A denied table is not listed, not fetchable, not describable, not queryable however the
/// query is written, and never a search result; `/open` sees it (the control).
async fn denied_table_is_invisible(h: &Harness) {
    let listed = h.ok("/claude", "list_tables", json!({})).await;
    let names: Vec<&str> = listed["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["Customers", "Orders", "Products"], "{listed}");
    for t in listed["tables"].as_array().expect("tables") {
        assert_eq!(t["primary_key"], json!(["Id"]), "{t}");
    }
    for (tool, args) in [
        ("fetch", json!({"id": h.table_id("Salaries")})),
        ("fetch", json!({"id": h.row_id("Salaries", 1)})),
        ("describe_table", json!({"table": "Salaries"})),
        ("get_table_sample", json!({"table": "Salaries"})),
        ("search", json!({"query": "describe Salaries"})),
        ("search", json!({"query": "sample Salaries"})),
        ("execute_sql", json!({"sql": "SELECT * FROM Salaries"})),
        (
            "execute_sql",
            json!({"sql": format!("SELECT * FROM {}", h.table_id("Salaries"))}),
        ),
        ("execute_sql", json!({"sql": "SELECT * FROM [Salaries]"})),
        (
            "execute_sql",
            json!({"sql": "SELECT Id FROM Customers WHERE Id IN (SELECT Id FROM Salaries)"}),
        ),
        (
            "execute_sql",
            json!({"sql": "WITH s AS (SELECT * FROM Salaries) SELECT COUNT(*) AS n FROM s"}),
        ),
        (
            "execute_sql",
            json!({"sql": "SELECT Id FROM Customers UNION SELECT Id FROM Salaries"}),
        ),
    ] {
        let msg = h.err("/claude", tool, args.clone()).await;
        assert!(
            !msg.contains("Payrolled") && !msg.contains("81000"),
            "{tool} {args} leaked: {msg}"
        );
    }
    let found = h
        .ok("/claude", "search", json!({"query": "payrolled person"}))
        .await;
    assert!(!found.to_string().contains("Salaries"), "{found}");
    assert!(!found.to_string().contains("Payrolled"), "{found}");

    // The control.
    let listed = h.ok("/open", "list_tables", json!({})).await;
    assert_eq!(
        listed["tables"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
    let found = h
        .ok("/open", "search", json!({"query": "payrolled person"}))
        .await;
    assert!(
        result_ids(&found).contains(&h.row_id("Salaries", 1)),
        "{found}"
    );
}

/// `list_tables` and `describe_table` of the full profile.
async fn list_and_describe_tools(h: &Harness) {
    let listed = h.ok("/claude", "list_tables", json!({})).await;
    let orders = named(&listed, "tables", "Orders");
    assert_eq!(orders["id"], h.table_id("Orders"));
    assert_eq!(orders["schema"], h.schema());
    assert_eq!(orders["kind"], "table");
    assert_eq!(orders["rows"], h.row_count(ORDERS));
    assert_eq!(orders["columns"], 6);
    for name in ["Orders", "[Orders]", "orders", &h.table_id("Orders")] {
        let d = h
            .ok("/claude", "describe_table", json!({"table": name}))
            .await;
        assert_eq!(d["id"], h.table_id("Orders"), "{name}");
    }
    let d = h
        .ok("/claude", "describe_table", json!({"table": "Orders"}))
        .await;
    assert_eq!(d["primary_key"], json!(["Id"]));
    assert_eq!(d["key_is_heuristic"], h.kind == Kind::Mssql);
    let nullable: Vec<(String, bool)> = d["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["nullable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let status_nullable = nullable.iter().find(|(n, _)| n == "Status").map(|x| x.1);
    assert_eq!(status_nullable, Some(true), "{nullable:?}");
    match h.kind {
        Kind::Sqlite => {
            let mut refs: Vec<&str> = d["foreign_keys"]
                .as_array()
                .expect("foreign_keys")
                .iter()
                .filter_map(|f| f["references"].as_str())
                .collect();
            refs.sort();
            assert_eq!(refs, ["main.Customers", "main.Products"]);
        }
        Kind::Mssql => assert_eq!(d["foreign_keys"], json!([]), "{d}"),
    }
    let ty = |name: &str| {
        column_field(&d, name, "type")
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    match h.kind {
        Kind::Sqlite => assert_eq!(ty("OrderDate"), "NVARCHAR(10)"),
        Kind::Mssql => assert!(
            ty("OrderDate").starts_with("nvarchar("),
            "{}",
            ty("OrderDate")
        ),
    }
}

/// The operator's descriptions reach `list_tables`, `describe_table` and `fetch`'s text; one of
/// a hidden column or a denied table never does (the `dbo.` one names SQL Server's schema, so
/// on SQLite it describes nothing: a name with a schema is matched with it).
async fn descriptions_are_shown_where_the_scope_sees_what_they_describe(h: &Harness) {
    let described = |d: &Value, column: &str| column_field(d, column, "description").clone();
    let d = h
        .ok("/claude", "describe_table", json!({"table": "Orders"}))
        .await;
    assert_eq!(d["description"], "One row per order.", "{d}");
    assert_eq!(described(&d, "Status"), "shipped, pending or cancelled.");
    assert_eq!(described(&d, "Id"), Value::Null, "no description, no key");
    let listed = h.ok("/claude", "list_tables", json!({})).await;
    let orders = named(&listed, "tables", "Orders");
    assert_eq!(orders["description"], "One row per order.");
    let doc = h
        .ok("/chatgpt", "fetch", json!({"id": h.table_id("Orders")}))
        .await;
    let text = doc["text"].as_str().expect("text");
    assert!(
        text.contains("One row per order.")
            && text.contains("- Status ")
            && text.contains(": shipped, pending or cancelled."),
        "{text}"
    );
    let found = h
        .ok("/chatgpt", "search", json!({"query": "list tables"}))
        .await;
    let orders = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["id"] == h.table_id("Orders"))
        .cloned()
        .expect("Orders listed");
    assert!(
        orders["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("One row per order. — ")),
        "{orders}"
    );

    // A keyword from a description finds the table it describes (no row says "cancelled").
    let found = h
        .ok("/chatgpt", "search", json!({"query": "cancelled"}))
        .await;
    assert_eq!(result_ids(&found), [h.table_id("Orders")], "{found}");
    // But not through a hidden column's description.
    let mobile = |scope: &'static str| async move {
        result_ids(&h.ok(scope, "search", json!({"query": "mobile"})).await)
    };
    assert_eq!(mobile("/chatgpt").await, Vec::<String>::new());
    assert_eq!(mobile("/open").await, [h.table_id("Customers")]);

    // Hidden where the scope hides them; shown where it does not.
    for scope in ["/claude", "/chatgpt"] {
        for (tool, args) in [
            ("list_tables", json!({})),
            ("describe_table", json!({"table": "Customers"})),
            ("search", json!({"query": "list tables"})),
            ("fetch", json!({"id": h.table_id("Customers")})),
        ] {
            if tool_allowed(scope, tool) {
                let out = h.call_tool(scope, tool, args).await.to_string();
                assert!(!out.contains("secret"), "{scope} {tool}: {out}");
            }
        }
    }
    let open = h
        .ok("/open", "describe_table", json!({"table": "Customers"}))
        .await;
    assert_eq!(described(&open, "Phone"), "Mobile number (secret column).");
    let salaries = h
        .ok("/open", "describe_table", json!({"table": "Salaries"}))
        .await;
    match h.kind {
        Kind::Mssql => assert_eq!(
            salaries["description"],
            "Pay of every employee (secret table)."
        ),
        Kind::Sqlite => assert_eq!(salaries["description"], Value::Null, "main, not dbo"),
    }
}

/// A table's CHECK constraints, often the only record of a code column's values, reach
/// `describe_table` and `fetch`'s text; one on a hidden column never does. The peer keeps no
/// constraints (SQL Server's `sys.check_constraints` is unit-tested on canned rows), so there
/// the tables have none: the difference is asserted.
async fn check_constraints_are_described_except_on_hidden_columns(h: &Harness) {
    let d = h
        .ok("/claude", "describe_table", json!({"table": "Orders"}))
        .await;
    let doc = h
        .ok("/chatgpt", "fetch", json!({"id": h.table_id("Orders")}))
        .await;
    let text = doc["text"].as_str().expect("text");
    let customers = |scope: &'static str| async move {
        h.ok(scope, "describe_table", json!({"table": "Customers"}))
            .await["checks"]
            .clone()
    };
    match h.kind {
        Kind::Sqlite => {
            assert_eq!(
                d["checks"],
                json!(["Quantity > 0", "Status IN ('pending', 'shipped')"]),
                "{d}"
            );
            assert!(
                text.contains("Check: Status IN ('pending', 'shipped')"),
                "{text}"
            );
            assert_eq!(customers("/open").await, json!(["Phone LIKE 'ph-%'"]));
        }
        Kind::Mssql => {
            assert_eq!(d["checks"], Value::Null, "{d}");
            assert!(!text.contains("Check:"), "{text}");
            assert_eq!(customers("/open").await, Value::Null);
        }
    }
    // Phone is hidden in /claude: its constraint is not shown.
    assert_eq!(customers("/claude").await, Value::Null);
}

/// The tools each harness scope's profile offers: `chatgpt` has only `search` and `fetch`.
fn tool_allowed(scope: &str, tool: &str) -> bool {
    scope != "/chatgpt" || matches!(tool, "search" | "fetch")
}

// ---------------------------------------------------------------------------------------------
// One test per (behaviour, backend)
// ---------------------------------------------------------------------------------------------

macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let h = super::Harness::start(super::Kind::Sqlite).await;
                    super::$name(&h).await;
                }
            )*
        }
        mod mssql {
            $(
                #[tokio::test]
                async fn $name() {
                    let h = super::Harness::start(super::Kind::Mssql).await;
                    super::$name(&h).await;
                }
            )*
        }
    };
}

behaviours!(
    tools_list_per_profile,
    descriptions_are_shown_where_the_scope_sees_what_they_describe,
    check_constraints_are_described_except_on_hidden_columns,
    the_instructions_and_execute_sql_name_the_dialect,
    search_natural_language_finds_the_row_with_the_word,
    search_matches_unicode_words_in_any_case,
    search_list_tables,
    search_describe,
    search_sample_limit,
    fetch_table_id,
    fetch_row_id_gives_the_same_values,
    execute_sql_point_lookup,
    row_cap_and_cursor_paging,
    sample_of_a_table_whose_key_is_hidden_pages_stably,
    long_values_are_cut_and_pages_stop_at_the_byte_cap,
    refusal_corpus,
    unknown_table_lists_visible_tables,
    unknown_column_lists_the_columns_of_the_tables_read,
    a_wide_varchar_literal_gets_a_note_on_sql_server,
    a_comparison_with_null_gets_a_note,
    an_integer_avg_gets_a_note_on_sql_server,
    an_empty_not_in_over_a_subquery_gets_a_note,
    hidden_column_is_masked_and_refused,
    denied_table_is_invisible,
    list_and_describe_tools,
);
