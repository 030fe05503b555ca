//! The `demo` command's setup: the embedded demo database and a two-scope configuration, so a
//! newcomer sees the server work with no setup at all.
//!
//! The database is generated deterministically on first start into the data directory (and
//! again when the generator's version changes), written to a temporary file and renamed into
//! place so an interrupted start never leaves a half-written database behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{
    Config, DatabaseConfig, DatabaseKind, ScopeConfig, ServerConfig, SqliteConfig, ToolProfile,
};
use crate::db::demo_data;

/// Where the demo keeps its database when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("mssql-mcp");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/mssql-mcp");
    }
    std::env::temp_dir().join("mssql-mcp")
}

/// Makes sure `dir/demo.sqlite` exists and is current; returns its path.
pub fn ensure_database(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let path = dir.join("demo.sqlite");
    if is_current(&path) {
        return Ok(path);
    }
    let tmp = dir.join(format!("demo.sqlite.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> Result<(), String> {
        let mut conn = rusqlite::Connection::open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        demo_data::generate(&mut conn).map_err(|e| format!("generating demo data: {e}"))?;
        conn.close()
            .map_err(|(_, e)| format!("closing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("cannot move {} into place: {e}", tmp.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// Whether `dir` already holds a current demo database (nothing to generate).
pub fn database_is_current(dir: &Path) -> bool {
    is_current(&dir.join("demo.sqlite"))
}

fn is_current(path: &Path) -> bool {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map(|v| v == demo_data::DEMO_VERSION)
        .unwrap_or(false)
}

/// The demo's configuration: `/chatgpt` (search + fetch, salaries hidden) and `/claude`
/// (every tool) over the same database.
pub fn config(listen: SocketAddr, db_path: &Path, data_dir: &Path) -> Config {
    let scope = |path: &str, profile, deny_columns: Vec<String>| ScopeConfig {
        path: path.into(),
        database: "demo".into(),
        profile,
        max_rows: 200,
        max_result_bytes: crate::config::DEFAULT_MAX_RESULT_BYTES,
        cache_ttl_secs: 3600,
        cache_entries: 10_000,
        cache_max_bytes: crate::config::DEFAULT_CACHE_MAX_BYTES,
        allow_tables: Vec::new(),
        deny_tables: Vec::new(),
        deny_columns,
        allowed_redirect_hosts: None,
        allow_ips: Vec::new(),
    };
    Config {
        server: ServerConfig {
            listen,
            public_url: None,
            state_dir: data_dir.to_path_buf(),
            insecure_no_auth: true,
            ..ServerConfig::default()
        },
        databases: vec![DatabaseConfig {
            name: "demo".into(),
            kind: DatabaseKind::Sqlite(SqliteConfig {
                path: db_path.to_path_buf(),
                // Generated once, then only read: no locking needed.
                immutable: true,
            }),
            query_timeout_secs: 10,
            pool_size: 8,
            // What an operator would write for a database that has no comments of its own
            // (SQLite keeps none): the tools show them to the model.
            table_descriptions: [
                (
                    "orders",
                    "One row per customer order; its lines are in order_lines.",
                ),
                (
                    "order_lines",
                    "The products of each order, one row per product (key: order_id, line_no).",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            column_descriptions: [
                (
                    "orders.status",
                    "pending, processing, shipped, delivered, cancelled or returned.",
                ),
                (
                    "orders.total_amount",
                    "What the customer paid: the sum of the order's line_total plus shipping_cost.",
                ),
                (
                    "order_lines.line_total",
                    "quantity × unit_price less discount_percent, rounded to the cent.",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }],
        scopes: vec![
            scope(
                "/chatgpt",
                ToolProfile::Chatgpt,
                vec!["employees.salary".into()],
            ),
            scope("/claude", ToolProfile::Full, Vec::new()),
        ],
        oauth: Default::default(),
        admin: Default::default(),
        tls: Default::default(),
        access: Default::default(),
        // The demo serves one local user (and benchmarks): no throttling in the way.
        limits: crate::edge::config::LimitsConfig {
            per_ip_per_sec: 1_000_000,
            per_ip_burst: 1_000_000,
            oauth_per_min: 1_000_000,
            oauth_burst: 1_000_000,
            sse_per_ip: 2048,
            // Fits a shell's usual 1,024 open files with the server's own reserve, so the demo
            // never has to lower its cap (and warn) on a machine whose limit cannot be raised.
            max_connections: 768,
            max_connections_per_ip: 768,
            ..Default::default()
        },
        metrics: Default::default(),
        // The demo's audit goes to its data directory like a real deployment's.
        audit: Default::default(),
        log: Default::default(),
    }
}
