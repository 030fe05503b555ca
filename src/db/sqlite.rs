//! The SQLite backend: the embedded demo database, and any SQLite file an operator points at.
//!
//! Safety net under the guard: every connection is opened with `SQLITE_OPEN_READ_ONLY`,
//! `PRAGMA query_only` is set, and an authorizer refuses anything but reads, selects and
//! harmless functions — so even a statement the guard wrongly passed cannot write, attach
//! another file or load an extension. Queries run on the blocking pool with a progress handler
//! that interrupts them at the configured timeout.
//!
//! Keyword search matches case-insensitively in every script, like SQL Server's default
//! collations: SQLite's `LIKE` folds ASCII letters only (`'Æ' LIKE 'æ'` is false), so each
//! connection gets [`FOLD_FUNCTION`], a Unicode lower-casing function, and search compares
//! `mcp_fold(column) LIKE <lower-cased keyword>`.
//!
//! Samples page with `LIMIT`/`OFFSET` in key order. A view or a table without a key has no
//! `ORDER BY` (SQLite scans it the same way for every page, with no sort); only a table whose
//! key the scope hid is sorted, by the visible columns (see [`order_columns`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use compact_str::CompactString;
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::lift::{Lifted, Param};
use super::{
    Backend, Catalog, ColumnInfo, DbError, ForeignKey, MAX_BUILT_VALUE_BYTES, MAX_CHECKS,
    MAX_VALUE_BYTES, Page, PageRows, ResultColumn, RowSet, SearchRequest, SqlDialect, TableInfo,
    Value, ValueKind, check_text, cut_bytes, cut_text,
};

/// A read-only SQLite database with a small pool of connections.
pub struct SqliteBackend {
    /// File being served.
    path: PathBuf,
    /// Opened with `immutable=1` (no locking, no change detection).
    immutable: bool,
    /// Idle connections; a connection is taken out for the length of one query.
    idle: Arc<Mutex<Vec<QueryConn>>>,
    /// Bounds concurrent queries to the pool size (and so the blocking threads used).
    permits: Arc<Semaphore>,
    /// Per-query time limit.
    timeout: Duration,
    /// `pool_size`, for metrics.
    pool_size: u32,
    /// Queries that found every connection busy and waited (for metrics).
    waits: AtomicU64,
    /// Connections opened, and attempts that failed (the file gone or unreadable), for metrics.
    opens: Arc<OpenCounts>,
    /// Loaded once at start: the file is opened read-only, so its schema cannot change under us
    /// through this process.
    catalog: Arc<Catalog>,
}

/// See [`SqliteBackend::opens`].
#[derive(Debug, Default)]
struct OpenCounts {
    opened: AtomicU64,
    failed: AtomicU64,
    /// By the readiness check ([`SqliteBackend::ping`]), beside the pool.
    checks: AtomicU64,
}

impl SqliteBackend {
    /// Opens `path` read-only and loads its catalog. `immutable` promises that nothing writes
    /// the file while it is served (see [`open_conn`]).
    pub async fn open(
        path: &Path,
        immutable: bool,
        pool_size: u32,
        timeout: Duration,
    ) -> Result<Self, DbError> {
        let p = path.to_path_buf();
        let catalog = tokio::task::spawn_blocking(move || {
            let conn = open_conn(&p, immutable)?;
            load_catalog(&conn)
        })
        .await
        .map_err(|e| DbError::Internal(e.to_string()))??;
        Ok(Self {
            path: path.to_path_buf(),
            immutable,
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(pool_size.max(1) as usize)),
            timeout,
            pool_size: pool_size.max(1),
            waits: AtomicU64::new(0),
            opens: Arc::default(),
            catalog: Arc::new(catalog),
        })
    }

    /// Runs `f` on a pooled connection with the query timeout armed.
    ///
    /// Most queries the tools send (point lookups, key-ordered samples) finish in tens of
    /// microseconds, less than a hand-off to the blocking pool costs. So `f` first runs right
    /// here on the async worker with a budget of [`INLINE_BUDGET`]; a query that needs longer
    /// is interrupted by SQLite's progress handler and run again on the blocking pool with the
    /// full timeout. Re-running is safe because every connection is read-only.
    ///
    /// The progress handler runs between steps of the query, so a single step that takes
    /// long (`instr` of two long values) cannot be interrupted: a query that may have such a
    /// step (`linear_steps` false, [`Page::linear_steps`]) goes to the blocking pool at once.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, DbError> + Send + Sync + 'static,
    {
        self.with_conn_where(true, f).await
    }

    async fn with_conn_where<T, F>(&self, linear_steps: bool, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, DbError> + Send + Sync + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| DbError::Unavailable("the database is shutting down".into()))?
            }
        };
        let timeout = self.timeout;
        let pooled = if linear_steps {
            self.idle.lock().ok().and_then(|mut v| v.pop())
        } else {
            None
        };
        if let Some(qc) = pooled {
            qc.budget.arm(INLINE_BUDGET);
            let result = f(&qc.conn);
            let over_budget = qc.budget.was_exceeded();
            if let Ok(mut v) = self.idle.lock() {
                v.push(qc);
            }
            if !over_budget {
                return result.map_err(|e| interrupted_is_timeout(e, timeout));
            }
        }
        let idle = self.idle.clone();
        let path = self.path.clone();
        let immutable = self.immutable;
        let opens = self.opens.clone();
        // Dropped before the query ends (the caller cancelled the request, or went away), it
        // interrupts the query, so the thread and its permit are not held to the timeout.
        let running = StopOnDrop::default();
        let slot = running.thread_side();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = idle.lock().ok().and_then(|mut v| v.pop());
            let qc = match pooled {
                Some(c) => c,
                None => match open_query_conn(&path, immutable) {
                    Ok(c) => {
                        opens.opened.fetch_add(1, Ordering::Relaxed);
                        c
                    }
                    Err(e) => {
                        opens.failed.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                },
            };
            qc.budget.arm(timeout);
            let result = if slot.start(&qc.budget) {
                let result = f(&qc.conn).map_err(|e| interrupted_is_timeout(e, timeout));
                slot.finish();
                result
            } else {
                Err(DbError::Unavailable("the request was cancelled".into()))
            };
            if let Ok(mut v) = idle.lock() {
                v.push(qc);
            }
            result
        });
        // A step the progress handler cannot interrupt may outlast the timeout: the caller
        // gets its answer at the timeout all the same, and the thread (holding its permit,
        // so the pool stays bounded) finishes the step alone.
        match tokio::time::timeout(timeout + TIMEOUT_GRACE, task).await {
            Ok(joined) => joined.map_err(|e| DbError::Internal(e.to_string()))?,
            Err(_) => Err(DbError::Timeout(timeout.as_secs())),
        }
    }
}

/// The query of one call on the blocking pool, as its caller holds it: dropped while the
/// query runs, it ends the query at its next progress check (a dropped future cannot stop a
/// thread otherwise). [`StopOnDrop::thread_side`] is what the thread holds.
#[derive(Default)]
struct StopOnDrop(Arc<std::sync::Mutex<Stop>>);

/// The thread's side of a [`StopOnDrop`].
struct StopSignal(Arc<std::sync::Mutex<Stop>>);

#[derive(Default)]
struct Stop {
    /// The caller is gone.
    stopped: bool,
    /// The budget of the connection running the query, while it runs.
    budget: Option<Arc<Budget>>,
}

fn lock_stop(stop: &std::sync::Mutex<Stop>) -> std::sync::MutexGuard<'_, Stop> {
    stop.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StopOnDrop {
    fn thread_side(&self) -> StopSignal {
        StopSignal(self.0.clone())
    }
}

impl StopSignal {
    /// The query starts on a connection of `budget`: false when the caller is already gone.
    fn start(&self, budget: &Arc<Budget>) -> bool {
        let mut s = lock_stop(&self.0);
        s.budget = Some(budget.clone());
        !s.stopped
    }

    /// The query ended: its connection goes back to the pool, out of the caller's reach.
    fn finish(&self) {
        lock_stop(&self.0).budget = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut s = lock_stop(&self.0);
        s.stopped = true;
        if let Some(budget) = s.budget.take() {
            budget.expire();
        }
    }
}

/// How long after the query timeout a caller stops waiting for a query that could not be
/// interrupted.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// How long a query may run inline on the async worker before it moves to the blocking pool.
const INLINE_BUDGET: Duration = Duration::from_millis(2);

fn interrupted_is_timeout(e: DbError, timeout: Duration) -> DbError {
    match e {
        DbError::Sql(m) if m.contains("interrupted") => DbError::Timeout(timeout.as_secs()),
        other => other,
    }
}

/// Opens `path` read-only. With `immutable`, through a `file:` URI with `immutable=1`: SQLite
/// then takes no file locks and never checks for a hot journal or a changed file, which saves
/// several system calls per query (the demo database is generated once and only read).
fn open_conn(path: &Path, immutable: bool) -> Result<Connection, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let opened = if immutable {
        Connection::open_with_flags(immutable_uri(path), flags)
    } else {
        Connection::open_with_flags(path, flags)
    };
    let conn =
        opened.map_err(|e| DbError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    // Query planner stability: a statement's plan never depends on the values bound to it.
    // Without it, a STAT4 build re-prepares a cached statement whenever a value bound against
    // an indexed column changes, which undoes the statement cache for exactly the lookups the
    // tools (and lifted ad-hoc queries) repeat. Defensive mode and an untrusted schema are
    // more of the read-only layers: no writes to the schema or shadow tables, and no
    // side-effecting functions called from views or triggers.
    for (setting, on) in [
        (DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true),
        (DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
        (DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
    ] {
        conn.set_db_config(setting, on)
            .map_err(|e| DbError::Unavailable(format!("{setting:?}: {e}")))?;
    }
    // Bounds what one query can make this process hold: a value (or row) larger fails with
    // SQLITE_TOOBIG, instead of `hex(zeroblob(1e9))` taking gigabytes before the cut.
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_BUILT_VALUE_BYTES as i32)
        .map_err(|e| DbError::Unavailable(format!("SQLITE_LIMIT_LENGTH: {e}")))?;
    // A LIKE or GLOB pattern costs its length times the text's in the worst case.
    conn.set_limit(
        Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH,
        MAX_LIKE_PATTERN_BYTES,
    )
    .map_err(|e| DbError::Unavailable(format!("SQLITE_LIMIT_LIKE_PATTERN_LENGTH: {e}")))?;
    // The length limit bounds each value, not a row of many: `SELECT zeroblob(16000000),
    // zeroblob(16000000), …` would make SQLite hold gigabytes. All of SQLite in this
    // process (every database and the OAuth store) may hold at most this much; past it a
    // query fails with "out of memory" instead of the process being killed.
    conn.pragma_update(None, "hard_heap_limit", SQLITE_HEAP_LIMIT_BYTES)
        .map_err(|e| DbError::Unavailable(format!("hard_heap_limit: {e}")))?;
    conn.set_prepared_statement_cache_capacity(64);
    register_fold(&conn).map_err(|e| DbError::Internal(e.to_string()))?;
    Ok(conn)
}

/// Longest `LIKE`/`GLOB` pattern a query may use (SQLite's default is 50,000 bytes).
const MAX_LIKE_PATTERN_BYTES: i32 = 1_000;

/// Most memory SQLite may hold in this process ([`open_conn`]).
pub const SQLITE_HEAP_LIMIT_BYTES: i64 = 512 << 20;

/// The name of the Unicode lower-casing SQL function registered on every connection.
pub const FOLD_FUNCTION: &str = "mcp_fold";

/// Registers [`FOLD_FUNCTION`]: text lower-cased with Unicode's rules, any other value (NULL,
/// numbers, blobs) unchanged, so `LIKE` sees exactly what it would have seen.
fn register_fold(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::Value as V;
    conn.create_scalar_function(
        FOLD_FUNCTION,
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Text(t) => V::Text(String::from_utf8_lossy(t).to_lowercase()),
                ValueRef::Null => V::Null,
                ValueRef::Integer(i) => V::Integer(i),
                ValueRef::Real(f) => V::Real(f),
                ValueRef::Blob(b) => V::Blob(b.to_vec()),
            })
        },
    )
}

/// `file:{path}?immutable=1`, with every byte of the path outside the URI-safe set
/// percent-encoded (SQLite decodes `%XX` in the path part).
fn immutable_uri(path: &Path) -> String {
    use std::fmt::Write;
    let raw = path.as_os_str().as_encoded_bytes();
    let mut uri = String::with_capacity(raw.len() + 24);
    uri.push_str("file:");
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(b as char);
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// A pooled query connection and the time budget its progress handler enforces.
struct QueryConn {
    conn: Connection,
    budget: Arc<Budget>,
}

/// The deadline of the statement a connection runs, read by the progress handler installed
/// once when the connection opens (installing and removing a handler per query cost more
/// than a point lookup's whole decoding).
struct Budget {
    /// What `deadline_us` counts from.
    epoch: Instant,
    /// Microseconds after `epoch` past which the running statement is interrupted.
    deadline_us: AtomicU64,
    /// Set when the handler interrupted a statement since the last [`Budget::arm`].
    exceeded: AtomicBool,
}

impl Budget {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            deadline_us: AtomicU64::new(u64::MAX),
            exceeded: AtomicBool::new(false),
        }
    }

    /// Gives the next statements on this connection `limit` from now.
    fn arm(&self, limit: Duration) {
        let deadline = (self.epoch.elapsed() + limit).as_micros();
        self.deadline_us.store(
            u64::try_from(deadline).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.exceeded.store(false, Ordering::Relaxed);
    }

    /// Interrupts the running statement at the handler's next check.
    fn expire(&self) {
        self.deadline_us.store(0, Ordering::Relaxed);
    }

    /// The progress handler: true (interrupt) once the deadline has passed.
    fn expired(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let over = now > self.deadline_us.load(Ordering::Relaxed);
        if over {
            self.exceeded.store(true, Ordering::Relaxed);
        }
        over
    }

    fn was_exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// How many SQLite virtual-machine steps pass between deadline checks (a few microseconds of
/// work; one clock read each).
const PROGRESS_STEPS: std::ffi::c_int = 1000;

/// A connection for ad-hoc queries: read-only, plus an authorizer as the last layer, and a
/// progress handler that interrupts whatever runs past the connection's [`Budget`].
fn open_query_conn(path: &Path, immutable: bool) -> Result<QueryConn, DbError> {
    let mut conn = open_conn(path, immutable)?;
    conn.authorizer(Some(authorize))
        .map_err(|e| DbError::Internal(e.to_string()))?;
    let budget = Arc::new(Budget::new());
    let handler = budget.clone();
    conn.progress_handler(PROGRESS_STEPS, Some(move || handler.expired()))
        .map_err(|e| DbError::Internal(e.to_string()))?;
    Ok(QueryConn { conn, budget })
}

/// SQLite's own check of every action a prepared statement will take.
fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::Select | AuthAction::Recursive => Authorization::Allow,
        AuthAction::Read { table_name, .. } => {
            let internal = table_name
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("sqlite_"));
            if internal {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        AuthAction::Function { function_name } => {
            let f = function_name.to_ascii_lowercase();
            const DENY: [&str; 5] = [
                "load_extension",
                "readfile",
                "writefile",
                "edit",
                "fts3_tokenizer",
            ];
            if DENY.contains(&f.as_str()) {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        _ => Authorization::Deny,
    }
}

fn sql_err(e: rusqlite::Error) -> DbError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            DbError::Sql("interrupted".into())
        }
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::AuthorizationForStatementDenied =>
        {
            DbError::Sql(format!(
                "not authorized: the statement needs more than read access{}",
                msg.map(|m| format!(" ({m})")).unwrap_or_default()
            ))
        }
        rusqlite::Error::SqliteFailure(f, Some(msg)) if f.code == rusqlite::ErrorCode::Unknown => {
            DbError::Sql(msg)
        }
        rusqlite::Error::SqliteFailure(f, msg) => match f.code {
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::NotADatabase
            | rusqlite::ErrorCode::DatabaseCorrupt => {
                DbError::Unavailable(msg.unwrap_or_else(|| f.to_string()))
            }
            rusqlite::ErrorCode::TooBig => DbError::Sql(format!(
                "a value or row larger than {} MiB cannot be read here; leave that column or \
                 expression out of the query",
                MAX_BUILT_VALUE_BYTES >> 20
            )),
            _ => DbError::Sql(msg.unwrap_or_else(|| f.to_string())),
        },
        other => DbError::Sql(other.to_string()),
    }
}

/// Quotes an identifier for SQLite.
fn ident(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_ident(&mut out, s);
    out
}

/// Appends `s` as a quoted identifier (`"` doubled inside).
fn push_ident(out: &mut String, s: &str) {
    out.push('"');
    if s.contains('"') {
        out.push_str(&s.replace('"', "\"\""));
    } else {
        out.push_str(s);
    }
    out.push('"');
}

fn kind_of(decl: &str) -> ValueKind {
    // This runs per result column of every query. Declared types are short: upper-cased once
    // into a buffer on the stack, each marker is then a plain byte comparison per position.
    let mut buf = [0u8; 64];
    match buf.get_mut(..decl.len()) {
        Some(upper) => {
            upper.copy_from_slice(decl.as_bytes());
            upper.make_ascii_uppercase();
            kind_by_markers(|m| upper.windows(m.len()).any(|w| w == m))
        }
        None => kind_by_markers(|m| {
            decl.as_bytes()
                .windows(m.len())
                .any(|w| w.eq_ignore_ascii_case(m))
        }),
    }
}

/// The kind for the first family whose marker `has` finds (markers in upper case).
fn kind_by_markers(has: impl Fn(&[u8]) -> bool) -> ValueKind {
    if has(b"BOOL") {
        ValueKind::Boolean
    } else if has(b"INT") {
        ValueKind::Integer
    } else if has(b"DEC") || has(b"NUMERIC") || has(b"MONEY") {
        ValueKind::Decimal
    } else if has(b"DATE") || has(b"TIME") {
        ValueKind::Temporal
    } else if has(b"CHAR") || has(b"CLOB") || has(b"TEXT") {
        ValueKind::Text
    } else if has(b"BLOB") || has(b"BINARY") {
        ValueKind::Binary
    } else if has(b"REAL") || has(b"FLOA") || has(b"DOUB") {
        ValueKind::Float
    } else {
        ValueKind::Other
    }
}

/// The CHECK constraints of a `CREATE TABLE` as SQLite keeps its text, column and table ones
/// alike, read with sqlparser (SQLite has no catalog of them); none if it does not parse.
fn checks_of(create_sql: &str) -> Vec<String> {
    use sqlparser::ast::{ColumnOption, Statement, TableConstraint};
    let Ok(statements) =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::SQLiteDialect {}, create_sql)
    else {
        return Vec::new();
    };
    let Some(Statement::CreateTable(table)) = statements.first() else {
        return Vec::new();
    };
    let column_checks = table
        .columns
        .iter()
        .flat_map(|c| &c.options)
        .filter_map(|o| match &o.option {
            ColumnOption::Check(c) => Some(c.expr.to_string()),
            _ => None,
        });
    let table_checks = table.constraints.iter().filter_map(|c| match c {
        TableConstraint::Check(c) => Some(c.expr.to_string()),
        _ => None,
    });
    column_checks
        .chain(table_checks)
        .filter_map(|c| check_text(&c))
        .take(MAX_CHECKS)
        .collect()
}

fn load_catalog(conn: &Connection) -> Result<Catalog, DbError> {
    let mut names: Vec<(String, String, Option<String>)> = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT name, type, sql FROM sqlite_schema WHERE type IN ('table','view') \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(sql_err)?;
        for r in rows {
            names.push(r.map_err(sql_err)?);
        }
    }
    let mut tables = Vec::with_capacity(names.len());
    for (name, kind, create_sql) in names {
        let mut columns = Vec::new();
        let mut pk: Vec<(i64, String)> = Vec::new();
        {
            let mut stmt = conn
                .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([&name], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(sql_err)?;
            for r in rows {
                let (col, decl, notnull, pk_pos) = r.map_err(sql_err)?;
                if pk_pos > 0 {
                    pk.push((pk_pos, col.clone()));
                }
                let kind = kind_of(&decl);
                columns.push(ColumnInfo::new(col, decl, kind, !notnull));
            }
        }
        pk.sort();
        let mut foreign_keys: Vec<ForeignKey> = Vec::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT id, seq, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) \
                     ORDER BY id, seq",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([&name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .map_err(sql_err)?;
            let mut last_id = None;
            for r in rows {
                let (id, ref_table, from, to) = r.map_err(sql_err)?;
                if last_id != Some(id) {
                    foreign_keys.push(ForeignKey {
                        columns: Vec::new(),
                        ref_schema: "main".into(),
                        ref_table,
                        ref_columns: Vec::new(),
                    });
                    last_id = Some(id);
                }
                if let Some(fk) = foreign_keys.last_mut() {
                    fk.columns.push(from);
                    if let Some(to) = to {
                        fk.ref_columns.push(to);
                    }
                }
            }
        }
        let row_estimate = conn
            .query_row(&format!("SELECT count(*) FROM {}", ident(&name)), [], |r| {
                r.get::<_, i64>(0)
            })
            .ok();
        let mut primary_key: Vec<String> = pk.into_iter().map(|(_, c)| c).collect();
        let mut key_is_heuristic = false;
        if primary_key.is_empty() {
            // Views and key-less tables: the rowid is not stable across VACUUM, so fall back
            // to an `id`-looking column and say so.
            if let Some(c) = columns.iter().find(|c| {
                let n = c.name.to_ascii_lowercase();
                n == "id" || n == format!("{}_id", name.to_ascii_lowercase())
            }) {
                primary_key.push(c.name.clone());
                key_is_heuristic = true;
            }
        }
        // Resolve foreign keys that omit the referenced columns (they mean the primary key).
        tables.push(TableInfo {
            schema: "main".into(),
            name,
            kind: if kind == "view" { "view" } else { "table" },
            columns,
            primary_key,
            key_is_heuristic,
            foreign_keys,
            row_estimate,
            // FTS5 tables are separate virtual tables, not indexes on this one.
            full_text: None,
            // SQLite keeps no comments on tables or columns.
            description: None,
            checks: create_sql.as_deref().map(checks_of).unwrap_or_default(),
            key_hidden: false,
            history: None,
        });
    }
    let pks: Vec<(String, Vec<String>)> = tables
        .iter()
        .map(|t| (t.name.clone(), t.primary_key.clone()))
        .collect();
    for t in &mut tables {
        for fk in &mut t.foreign_keys {
            if fk.ref_columns.is_empty()
                && let Some((_, pk)) = pks
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&fk.ref_table))
            {
                fk.ref_columns = pk.clone();
            }
        }
    }
    Ok(Catalog {
        tables,
        varchar_utf8: true,
        synonyms: Vec::new(),
    })
}

/// The scale `s` of a declared `DECIMAL(p,s)` / `NUMERIC(p,s)`.
fn decimal_scale(decl: &str) -> Option<usize> {
    let inner = decl.split_once('(')?.1.split_once(')')?.0;
    inner
        .split_once(',')?
        .1
        .trim()
        .parse()
        .ok()
        // SQL's largest scale; SQLite keeps any declaration, and a scale of billions would
        // pad every value with that many zeros.
        .filter(|s| *s <= MAX_DECIMAL_SCALE)
}

/// The largest decimal scale restored from a declared type (SQL Server's and most databases'
/// maximum precision).
const MAX_DECIMAL_SCALE: usize = 38;

/// Column decoding info: broad kind plus, for decimals, the declared scale. SQLite stores
/// `DECIMAL(10,2)` values as numbers (12.50 becomes 12.5), so the scale restores the text.
#[derive(Clone, Copy)]
struct ColType {
    kind: ValueKind,
    scale: Option<usize>,
}

/// Decodes one value, text and blobs cut at [`MAX_VALUE_BYTES`] (the flag says so).
fn decode(v: ValueRef<'_>, ty: ColType) -> (Value, bool) {
    match v {
        ValueRef::Text(t) => {
            // Cut the bytes before a character that would straddle the cap (not inside it:
            // lossy decoding would turn the split character into a U+FFFD of its own).
            // A character has at most three continuation bytes; past that the bytes are not
            // UTF-8 anyway and are cut where they are.
            let mut end = t.len().min(MAX_VALUE_BYTES);
            let mut back = 0;
            while end < t.len() && end > 0 && back < 3 && t[end] & 0xC0 == 0x80 {
                end -= 1;
                back += 1;
            }
            let mut cut = end < t.len();
            // Valid UTF-8 (the norm) is checked by the fast, vectorised path and copied once
            // (inline, without an allocation, up to 24 bytes).
            let s = match std::str::from_utf8(&t[..end]) {
                Ok(s) => CompactString::from(s),
                Err(_) => {
                    // Each invalid byte becomes a three-byte U+FFFD: cut again after.
                    let lossy = String::from_utf8_lossy(&t[..end]);
                    let (s, more) = cut_text(&lossy);
                    cut |= more;
                    CompactString::from(s)
                }
            };
            let v = match ty.kind {
                ValueKind::Decimal => Value::Decimal(s),
                _ => Value::Text(s),
            };
            (v, cut)
        }
        ValueRef::Blob(b) => {
            let (b, cut) = cut_bytes(b);
            (Value::Bytes(b.to_vec()), cut)
        }
        ValueRef::Null => (Value::Null, false),
        ValueRef::Integer(i) => (integer(i, ty), false),
        ValueRef::Real(f) => (real(f, ty), false),
    }
}

/// An integer as its column's kind wants it: a boolean, an exact decimal, or a number.
fn integer(i: i64, ty: ColType) -> Value {
    match ty.kind {
        ValueKind::Boolean => Value::Bool(i != 0),
        ValueKind::Decimal => {
            let mut t = CompactString::from(itoa::Buffer::new().format(i));
            if let Some(s) = ty.scale.filter(|s| *s > 0) {
                t.push('.');
                (0..s).for_each(|_| t.push('0'));
            }
            Value::Decimal(t)
        }
        _ => Value::Int(i),
    }
}

/// A real as its column's kind wants it: an exact decimal at the column's scale, or a number.
fn real(f: f64, ty: ColType) -> Value {
    match ty.kind {
        ValueKind::Decimal => Value::Decimal(match ty.scale {
            Some(s) => real_decimal(f, s),
            None => compact_str::format_compact!("{f}"),
        }),
        _ => Value::Float(f),
    }
}

/// `f` rounded to `scale` decimals, exactly as `format!("{f:.scale$}")` writes it.
///
/// Fast path: when the shortest text that reads back as `f` (ryu) has at most `scale`
/// decimals, padding it with zeros gives the same digits, provided `f` is small enough that
/// `f` and that text differ by less than half a unit in the last place kept: they differ by at
/// most half an ULP, under 2^-13 for |f| < 10^12, well below 0.5·10^-3. Otherwise (and for
/// exponents, NaN, infinities or more than 3 decimals) the exact formatter decides.
fn real_decimal(f: f64, scale: usize) -> CompactString {
    if (1..=3).contains(&scale) && f.is_finite() && f.abs() < 1e12 {
        let mut buf = ryu::Buffer::new();
        let short = buf.format_finite(f);
        if !short.contains(['e', 'E'])
            && let Some(dot) = short.find('.')
        {
            let decimals = short.len() - dot - 1;
            if decimals <= scale {
                let mut t = CompactString::from(short);
                (decimals..scale).for_each(|_| t.push('0'));
                return t;
            }
        }
    }
    compact_str::format_compact!("{f:.scale$}")
}

/// Prepares `sql` (through the statement cache: the backend's own SQL has bound parameters,
/// so its text repeats), binds `params`, skips `page.offset` rows and collects up to
/// `page.limit`.
fn run(
    conn: &Connection,
    sql: &str,
    params: &[rusqlite::types::Value],
    page: &Page,
) -> Result<RowSet, DbError> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_err)?;
    collect(&mut stmt, params, page)
}

/// Like [`run`] for ad-hoc SQL, whose text (literals included) rarely repeats: caching it
/// would only churn the cache and finalize an evicted statement on every call.
fn run_uncached(conn: &Connection, sql: &str, page: &Page) -> Result<RowSet, DbError> {
    let mut stmt = conn.prepare(sql).map_err(sql_err)?;
    collect(&mut stmt, &[], page)
}

fn collect(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[rusqlite::types::Value],
    page: &Page,
) -> Result<RowSet, DbError> {
    let columns: Vec<ResultColumn> = stmt
        .columns()
        .map(|c| ResultColumn {
            name: c.name().to_string(),
            data_type: c.decl_type().map(str::to_string),
        })
        .collect();
    let kinds: Vec<ColType> = columns
        .iter()
        .map(|c| match c.data_type.as_deref() {
            Some(d) => {
                let kind = kind_of(d);
                ColType {
                    kind,
                    scale: (kind == ValueKind::Decimal)
                        .then(|| decimal_scale(d))
                        .flatten(),
                }
            }
            None => ColType {
                kind: ValueKind::Other,
                scale: None,
            },
        })
        .collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(sql_err)?;
    let mut out = PageRows::new(page);
    out.columns(page, columns.iter().map(|c| c.name.as_str()));
    let mut seen = 0usize;
    let mut more = false;
    while let Some(row) = rows.next().map_err(sql_err)? {
        if seen < page.offset {
            seen += 1;
            continue;
        }
        if out.len() == page.limit {
            more = true;
            break;
        }
        let mut vals = Vec::with_capacity(kinds.len());
        // Which of this row's values were cut (empty, so no allocation, nearly always).
        let mut cut = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            if out.hidden(i) {
                vals.push(Value::Null);
                continue;
            }
            let (v, c) = decode(row.get_ref(i).map_err(sql_err)?, *kind);
            if c {
                cut.push(i);
            }
            vals.push(v);
        }
        if !out.push(vals, cut) {
            more = true;
            break;
        }
    }
    Ok(out.finish(columns, more))
}

/// The columns a sample, a lookup or a search orders its rows by, empty for no `ORDER BY`:
/// - the table's key when it has one in this scope;
/// - none for a table that simply has no key: SQLite then scans a table in rowid (or, for a
///   `WITHOUT ROWID` table, key) order, the same way for every page, without the sort that
///   `ORDER BY` every column would cost on a large table. Not `ORDER BY rowid` either: a view
///   has no rowid, nor has a `WITHOUT ROWID` table;
/// - for a table whose key the scope hid ([`TableInfo::key_hidden`]), every column the caller
///   selects (all of them visible, and SQLite orders values of any type), so that pages are
///   stable and their order tells nothing of the hidden key, which the scan order (or
///   `rowid`, an alias of an `INTEGER PRIMARY KEY`) would follow.
fn order_columns<'a>(table: &'a TableInfo, columns: &'a [String]) -> &'a [String] {
    if !table.primary_key.is_empty() {
        &table.primary_key
    } else if table.key_hidden {
        columns
    } else {
        &[]
    }
}

/// A page of `table`'s rows in [`order_columns`] order; `?1` is the row count, `?2` the
/// offset.
fn sample_sql(table: &TableInfo, columns: &[String]) -> String {
    let order = match order_columns(table, columns) {
        [] => String::new(),
        cols => format!(" ORDER BY {}", select_list(cols)),
    };
    format!(
        "SELECT {} FROM {}.{}{order} LIMIT ?1 OFFSET ?2",
        select_list(columns),
        ident(&table.schema),
        ident(&table.name),
    )
}

fn select_list(columns: &[String]) -> String {
    let mut out = String::with_capacity(columns.len() * 16);
    push_select_list(&mut out, columns);
    out
}

/// Appends `"a", "b", …`.
fn push_select_list(out: &mut String, columns: &[String]) {
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_ident(out, c);
    }
}

/// Escapes `%`, `_` and `\` so a keyword matches literally inside `LIKE … ESCAPE '\'`.
pub fn like_pattern(keyword: &str) -> String {
    let mut s = String::with_capacity(keyword.len() + 2);
    s.push('%');
    for c in keyword.chars() {
        if matches!(c, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

fn key_param(kind: ValueKind, raw: &str) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match kind {
        ValueKind::Integer | ValueKind::Boolean => match raw.parse::<i64>() {
            Ok(i) => V::Integer(i),
            Err(_) => V::Text(raw.to_string()),
        },
        ValueKind::Float => match raw.parse::<f64>() {
            Ok(f) => V::Real(f),
            Err(_) => V::Text(raw.to_string()),
        },
        // Bytes as row ids write them (`0x…`); other text equals no blob.
        ValueKind::Binary => match crate::tools::key_bytes(raw) {
            Some(b) => V::Blob(b),
            None => V::Text(raw.to_string()),
        },
        _ => V::Text(raw.to_string()),
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn dialect(&self) -> SqlDialect {
        SqlDialect::Sqlite
    }

    fn runs_lifted_templates(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, DbError> {
        Ok(self.catalog.clone())
    }

    async fn query(&self, sql: &str, page: Page) -> Result<RowSet, DbError> {
        let sql = sql.to_string();
        self.with_conn_where(page.linear_steps, move |c| run_uncached(c, &sql, &page))
            .await
    }

    /// A template with bound values goes through the statement cache: its text repeats while
    /// the values change. Nothing lifted: the text as sent, uncached like any ad-hoc query.
    async fn query_lifted(&self, q: &Lifted<'_>, page: Page) -> Result<RowSet, DbError> {
        if q.params.is_empty() {
            return self.query(q.original, page).await;
        }
        let sql = q.template.to_string();
        let params: Vec<rusqlite::types::Value> = q
            .params
            .iter()
            .map(|p| match p {
                Param::Int(i) => rusqlite::types::Value::Integer(*i),
                Param::Real(f) => rusqlite::types::Value::Real(*f),
                Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
            })
            .collect();
        let first = page.clone();
        let linear_steps = page.linear_steps;
        match self
            .with_conn_where(linear_steps, move |c| run(c, &sql, &params, &first))
            .await
        {
            // A statement that fails to prepare is reported with its text: here the template,
            // `?1` where the client wrote a literal, and offsets into it. Preparing the text
            // as sent gives the same error in the client's own words. Only such errors (their
            // message quotes the template) are retried, and preparing is cheap; errors while
            // running, timeouts and outages are not.
            Err(DbError::Sql(msg)) if msg.contains(q.template.as_ref()) => {
                self.query(q.original, page).await
            }
            other => other,
        }
    }

    async fn sample(
        &self,
        table: &TableInfo,
        columns: &[String],
        page: Page,
    ) -> Result<RowSet, DbError> {
        let sql = sample_sql(table, columns);
        let params = vec![
            rusqlite::types::Value::Integer(page.limit as i64 + 1),
            rusqlite::types::Value::Integer(page.offset as i64),
        ];
        let inner = Page { offset: 0, ..page };
        self.with_conn(move |c| run(c, &sql, &params, &inner)).await
    }

    async fn lookup(
        &self,
        table: &TableInfo,
        columns: &[String],
        key_columns: &[String],
        key: &[String],
        page: Page,
    ) -> Result<RowSet, DbError> {
        if key.len() != key_columns.len() || key.is_empty() {
            return Ok(RowSet::default());
        }
        let page = Page { offset: 0, ..page };
        // Built in one buffer: this runs for every `fetch` and every foreign-key neighbour.
        let mut sql = String::with_capacity(128 + columns.len() * 16);
        sql.push_str("SELECT ");
        push_select_list(&mut sql, columns);
        sql.push_str(" FROM ");
        push_ident(&mut sql, &table.schema);
        sql.push('.');
        push_ident(&mut sql, &table.name);
        sql.push_str(" WHERE ");
        let mut params = Vec::with_capacity(key.len());
        for (i, (col, raw)) in key_columns.iter().zip(key).enumerate() {
            let kind = table
                .column(col)
                .map(|c| c.kind)
                .unwrap_or(ValueKind::Other);
            if i > 0 {
                sql.push_str(" AND ");
            }
            push_ident(&mut sql, col);
            let _ = write!(sql, " = ?{}", i + 1);
            params.push(key_param(kind, raw));
        }
        let order = order_columns(table, columns);
        if !order.is_empty() {
            sql.push_str(" ORDER BY ");
            push_select_list(&mut sql, order);
        }
        let _ = write!(sql, " LIMIT {}", page.limit + 1);
        self.with_conn(move |c| run(c, &sql, &params, &page)).await
    }

    async fn search(&self, req: SearchRequest<'_>) -> Result<RowSet, DbError> {
        if req.keywords.is_empty() || req.text_columns.is_empty() {
            return Ok(RowSet::default());
        }
        let mut score = Vec::new();
        let mut any = Vec::new();
        for (k, _) in req.keywords.iter().enumerate() {
            for col in req.text_columns {
                let test = format!(
                    "{FOLD_FUNCTION}({}) LIKE ?{} ESCAPE '\\'",
                    ident(col),
                    k + 1
                );
                score.push(format!("(CASE WHEN {test} THEN 1 ELSE 0 END)"));
                any.push(test);
            }
        }
        let order = match order_columns(req.table, req.columns) {
            [] => String::new(),
            cols => format!(", {}", select_list(cols)),
        };
        let sql = format!(
            "SELECT {}, ({}) AS _score FROM {}.{} WHERE {} ORDER BY _score DESC{} LIMIT {}",
            select_list(req.columns),
            score.join(" + "),
            ident(&req.table.schema),
            ident(&req.table.name),
            any.join(" OR "),
            order,
            req.limit
        );
        let params: Vec<rusqlite::types::Value> = req
            .keywords
            .iter()
            .map(|k| rusqlite::types::Value::Text(like_pattern(&k.to_lowercase())))
            .collect();
        let limit = req.limit;
        self.with_conn(move |c| run(c, &sql, &params, &Page::rows(0, limit)))
            .await
    }

    /// Opens the file afresh and reads its header: a pooled connection would keep answering
    /// from a file that was deleted or replaced underneath it.
    async fn ping(&self) -> Result<(), DbError> {
        let path = self.path.clone();
        let timeout = self.timeout;
        let immutable = self.immutable;
        self.opens.checks.fetch_add(1, Ordering::Relaxed);
        let check = tokio::task::spawn_blocking(move || {
            let conn = open_conn(&path, immutable)?;
            conn.query_row("PRAGMA schema_version", [], |_| Ok(()))
                .map_err(|e| DbError::Unavailable(format!("{}: {e}", path.display())))
        });
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(DbError::Internal(e.to_string())),
            Err(_) => Err(DbError::Timeout(timeout.as_secs())),
        }
    }

    fn pool_stats(&self) -> Option<super::PoolStats> {
        let in_use = self
            .pool_size
            .saturating_sub(self.permits.available_permits() as u32);
        let idle = self.idle.lock().map(|v| v.len() as u32).unwrap_or(0);
        Some(super::PoolStats {
            max: self.pool_size,
            connections: idle + in_use,
            idle,
            in_use,
            created: self.opens.opened.load(Ordering::Relaxed),
            // A connection goes back to the pool whatever its query did.
            discarded: 0,
            waits: self.waits.load(Ordering::Relaxed),
            connect_failures: self.opens.failed.load(Ordering::Relaxed),
            check_connections: self.opens.checks.load(Ordering::Relaxed),
            // A query past its time is interrupted in-process; there is no server to tell.
            cancels_acknowledged: 0,
            cancels_unacknowledged: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_uris_encode_the_path() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/demo db/a?b#c%.sqlite")),
            "file:/var/lib/demo%20db/a%3Fb%23c%25.sqlite?immutable=1"
        );
    }

    /// A database at `path` made by `setup`, opened read-only and immutable.
    async fn immutable_over(path: &Path, setup: &str) -> SqliteBackend {
        let conn = Connection::open(path).expect("create");
        conn.execute_batch(setup).expect("fill");
        drop(conn);
        SqliteBackend::open(path, true, 1, Duration::from_secs(5))
            .await
            .expect("open")
    }

    /// Values past the cut are cut (text at a character boundary, blobs before base64) and
    /// their columns flagged; values past SQLite's length limit fail with a clear error before
    /// this process holds them.
    #[tokio::test]
    async fn long_values_are_cut_and_huge_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = immutable_over(&dir.path().join("t.sqlite"), "CREATE TABLE t (id INTEGER)").await;
        let rs = b
            .query(
                "SELECT replace(hex(zeroblob(40000)), '00', 'éx') AS t, zeroblob(70000) AS b, \
                 'short' AS s, 'a' || replace(hex(zeroblob(20000)), '00', '😀') AS e, \
                 CAST(x'ff' || zeroblob(65535) AS TEXT) AS bad, \
                 CAST(zeroblob(70000) AS BLOB) AS z, \
                 CAST(replace(hex(zeroblob(35000)), '00', x'80') AS TEXT) AS cont",
                Page::rows(0, 10),
            )
            .await
            .expect("query");
        assert_eq!(rs.cut_columns(), ["t", "b", "e", "bad", "z", "cont"]);
        let want = "éx".repeat(40_000);
        match &rs.rows[0][..] {
            [
                Value::Text(t),
                Value::Bytes(bytes),
                Value::Text(s),
                Value::Text(e),
                Value::Text(bad),
                Value::Bytes(_),
                Value::Text(cont),
            ] => {
                // Continuation bytes only: the cut backs off three at most, then reads the
                // rest lossily (and cuts again), never to nothing.
                assert!(!cont.is_empty() && cont.len() <= MAX_VALUE_BYTES);
                // 'a' and 16,383 emoji are 65,533 bytes; the next one would straddle the cut
                // (and must not come back as U+FFFD).
                assert_eq!(e.len(), MAX_VALUE_BYTES - 3);
                assert!(e.starts_with('a') && e[1..].chars().all(|c| c == '😀'));
                // Invalid UTF-8 reads lossily: exactly 65,536 bytes with one invalid byte
                // grow by two as U+FFFD, so they are cut again (and flagged).
                assert!(bad.starts_with('\u{FFFD}') && bad.len() <= MAX_VALUE_BYTES);
                assert_eq!(t.as_str(), cut_text(&want).0);
                // 21,845 × "éx" is 65,535 bytes; the next 'é' would straddle the cut.
                assert_eq!(t.len(), MAX_VALUE_BYTES - 1);
                assert_eq!(bytes.len(), MAX_VALUE_BYTES);
                assert_eq!(s.as_str(), "short");
            }
            other => panic!("{other:?}"),
        }
        let err = b
            .query(
                "SELECT length(hex(zeroblob(10000000))) AS n",
                Page::rows(0, 10),
            )
            .await
            .expect_err("too big");
        assert!(
            matches!(&err, DbError::Sql(m) if m.contains("16 MiB") && m.contains("leave that column")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn immutable_databases_open_and_answer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = immutable_over(
            &dir.path().join("odd name?.sqlite"),
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x');",
        )
        .await;
        let rs = b
            .query("SELECT v FROM t WHERE id = 1", Page::rows(0, 10))
            .await
            .expect("query");
        assert_eq!(rs.rows.len(), 1);
        b.ping().await.expect("ping");
        // The promise is kept by the backend too: nothing can write through it.
        let err = b
            .query("INSERT INTO t VALUES (2, 'y')", Page::rows(0, 10))
            .await
            .expect_err("read-only");
        assert!(matches!(err, DbError::Sql(_)), "{err:?}");
    }

    #[tokio::test]
    async fn lifted_templates_answer_exactly_like_their_originals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lift.sqlite");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, n NUMERIC, r REAL, s TEXT, b BLOB);
             INSERT INTO t VALUES (1, 5, 1.5, 'O''Brien', x'00');
             INSERT INTO t VALUES (2, '5', 2.5e3, 'ß5', NULL);
             INSERT INTO t VALUES (3, 7.25, -1, '5', 'text');",
        )
        .expect("fill");
        drop(conn);
        let b = SqliteBackend::open(&path, false, 2, Duration::from_secs(5))
            .await
            .expect("open");
        let page = Page::rows(0, 100);
        let mut lifted_any = 0;
        for sql in [
            "SELECT * FROM t WHERE id = 2",
            "SELECT * FROM t WHERE n = '5'",
            "SELECT * FROM t WHERE s = 5",
            "SELECT * FROM t WHERE s = '5'",
            "SELECT * FROM t WHERE r >= 2.5e3 OR r < -0.5",
            "SELECT * FROM t WHERE s LIKE 'o''b%'",
            "SELECT * FROM t WHERE n <> 7.25 AND id != 1",
            "SELECT id, s = 'ß5' AS hit FROM t WHERE b = 'text'",
            "SELECT * FROM t WHERE s > 'O' ORDER BY 1 DESC LIMIT 2",
        ] {
            let lifted = crate::db::lift::lift(sql, SqlDialect::Sqlite);
            lifted_any += usize::from(!lifted.params.is_empty());
            let want = b.query(sql, page.clone()).await.expect(sql);
            let got = b.query_lifted(&lifted, page.clone()).await.expect(sql);
            assert_eq!(
                serde_json::to_value(&got.rows).expect("json"),
                serde_json::to_value(&want.rows).expect("json"),
                "{sql} as {}",
                lifted.template
            );
            let names = |rs: &RowSet| {
                rs.columns
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(names(&got), names(&want), "{sql}");
        }
        assert_eq!(lifted_any, 9);
    }

    #[test]
    fn cached_lookups_are_not_re_prepared_when_their_values_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qpsg.sqlite");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE o (id INTEGER PRIMARY KEY, c INTEGER, s TEXT);
             CREATE INDEX o_c ON o (c);
             WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < 500)
             INSERT INTO o SELECT v, v % 7, 'x' FROM n;",
        )
        .expect("fill");
        drop(conn);
        let conn = open_query_conn(&path, false).expect("open").conn;
        assert!(
            conn.db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .expect("qpsg")
        );
        assert!(
            conn.db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE)
                .expect("defensive")
        );
        assert!(
            !conn
                .db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA)
                .expect("trusted")
        );
        let sql = "SELECT id FROM o WHERE c = ?1 ORDER BY id LIMIT 3";
        for c in 0..7 {
            let rs = run(
                &conn,
                sql,
                &[rusqlite::types::Value::Integer(c)],
                &Page::rows(0, 3),
            )
            .expect("lookup");
            assert_eq!(rs.rows.len(), 3);
        }
        let stmt = conn.prepare_cached(sql).expect("cached");
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(ident("orders"), "\"orders\"");
        assert_eq!(ident("we\"ird\"\""), "\"we\"\"ird\"\"\"\"\"");
        assert_eq!(
            select_list(&["a b".into(), "c\"".into(), "é".into()]),
            "\"a b\", \"c\"\"\", \"é\""
        );
        assert_eq!(select_list(&[]), "");
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn real_decimals_format_exactly_like_the_exact_formatter() {
        // Cents and mills as stored from decimal text, near-halves, the bound of the fast
        // path, and a deterministic spread of raw bit patterns.
        let mut values: Vec<f64> = vec![
            0.0,
            -0.0,
            0.005,
            0.015,
            1.005,
            2.675,
            1.115,
            0.125,
            -0.125,
            999_999_999_999.99,
            1e12,
            -1e12,
            1e-7,
            123_456.785,
            5e-324,
            1.7976931348623157e308,
            0.1,
            0.7,
            1e11,
        ];
        for cents in (-200_000i64..200_000).step_by(37) {
            values.push(cents as f64 / 100.0);
            values.push(cents as f64 / 1000.0);
            values.push(cents as f64 * 1_000_003.0 / 100.0);
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if f.is_finite() {
                values.push(f);
                values.push((f % 1e9 * 1000.0).round() / 1000.0);
            }
        }
        for f in values {
            for scale in 0..=4 {
                assert_eq!(
                    real_decimal(f, scale),
                    format!("{f:.scale$}"),
                    "{f:e} scale {scale}"
                );
            }
        }
    }

    #[test]
    fn decimals_keep_their_declared_scale() {
        let ty = ColType {
            kind: ValueKind::Decimal,
            scale: decimal_scale("DECIMAL(10,2)"),
        };
        assert_eq!(
            decode(ValueRef::Real(12.5), ty).0,
            Value::Decimal("12.50".into())
        );
        assert_eq!(
            decode(ValueRef::Integer(12), ty).0,
            Value::Decimal("12.00".into())
        );
        assert_eq!(
            decode(ValueRef::Real(0.1 + 0.2), ty).0,
            Value::Decimal("0.30".into())
        );
        assert_eq!(decimal_scale("NUMERIC(5)"), None);
        // A declared scale past SQL's largest is not restored (it would pad every value).
        assert_eq!(decimal_scale("NUMERIC(1,4000000000)"), None);
        assert_eq!(decimal_scale("NUMERIC(38,38)"), Some(38));
    }

    /// `parts` is a `WITHOUT ROWID` table whose key `code` the scope hides (in
    /// [`keyless_catalog`]), `part_names` a view and `notes` a rowid table, neither with a
    /// key.
    fn keyless_fixture(path: &Path) {
        let c = Connection::open(path).expect("create");
        c.execute_batch(
            "CREATE TABLE parts (code TEXT PRIMARY KEY, name TEXT, qty INTEGER) WITHOUT ROWID;
             INSERT INTO parts VALUES ('a', 'nut', 3), ('b', 'bolt', 1), ('c', 'nut', 1),
                                      ('d', 'gear', 2), ('e', 'bolt', 2);
             CREATE VIEW part_names AS SELECT name, qty FROM parts;
             CREATE TABLE notes (body TEXT, n INTEGER);
             INSERT INTO notes VALUES ('e', 5), ('d', 4), ('c', 3), ('b', 2), ('a', 1);",
        )
        .expect("fixture");
    }

    /// The backend on [`keyless_fixture`] in `dir`, and its catalog as [`keyless_catalog`].
    async fn keyless_backend(dir: &Path) -> (SqliteBackend, Catalog) {
        let path = dir.join("keyless.sqlite");
        keyless_fixture(&path);
        let b = SqliteBackend::open(&path, false, 1, Duration::from_secs(5))
            .await
            .expect("open");
        let catalog = keyless_catalog(&b).await;
        (b, catalog)
    }

    async fn keyless_catalog(b: &SqliteBackend) -> Catalog {
        let rules = crate::db::AccessRules {
            deny_columns: vec!["parts.code".into()],
            ..crate::db::AccessRules::default()
        };
        crate::tools::scoped_catalog(&rules, &b.catalog().await.expect("catalog"))
    }

    /// Two pages of `table`'s sample of `columns`, of three rows each.
    async fn two_pages(
        b: &SqliteBackend,
        table: &TableInfo,
        columns: &[String],
    ) -> Vec<Vec<Value>> {
        let mut rows = Vec::new();
        for offset in [0, 3] {
            let rs = b
                .sample(table, columns, Page::rows(offset, 3))
                .await
                .unwrap_or_else(|e| panic!("{} at {offset}: {e}", table.name));
            rows.extend(rs.rows);
        }
        rows
    }

    /// A scope that hides `code`, the key of a `WITHOUT ROWID` table: the table has no
    /// `rowid` to order by, and the hidden key must not order the rows either (a scan of the
    /// table follows it). Samples order by the visible columns, and two pages hold every row
    /// once.
    #[tokio::test]
    async fn a_table_whose_key_is_hidden_samples_in_visible_column_order_and_pages_stably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (b, catalog) = keyless_backend(dir.path()).await;
        let visible: Vec<String> = vec!["name".into(), "qty".into()];
        let table = catalog.find("parts").expect("parts");
        assert!(
            table.primary_key.is_empty() && table.key_hidden,
            "{table:?}"
        );
        let sql = sample_sql(table, &visible);
        assert!(
            sql.ends_with("ORDER BY \"name\", \"qty\" LIMIT ?1 OFFSET ?2"),
            "{sql}"
        );
        assert_eq!(
            two_pages(&b, table, &visible).await,
            vec![
                vec![Value::text("bolt"), Value::Int(1)],
                vec![Value::text("bolt"), Value::Int(2)],
                vec![Value::text("gear"), Value::Int(2)],
                vec![Value::text("nut"), Value::Int(1)],
                vec![Value::text("nut"), Value::Int(3)],
            ]
        );
    }

    /// Sorting a large table by every column for each page is slow: a view or a table that
    /// simply has no key is sampled, looked up and searched with no `ORDER BY` (SQLite scans
    /// it the same way for every page), and never `ORDER BY rowid`, which a view has not.
    #[tokio::test]
    async fn a_table_or_view_without_a_key_samples_unsorted_in_scan_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (b, catalog) = keyless_backend(dir.path()).await;
        let scanned = |rows: &[(&str, i64)]| -> Vec<Vec<Value>> {
            rows.iter()
                .map(|(t, n)| vec![Value::text(*t), Value::Int(*n)])
                .collect()
        };
        for (name, columns, rows) in [
            (
                "part_names",
                ["name", "qty"],
                scanned(&[
                    ("nut", 3),
                    ("bolt", 1),
                    ("nut", 1),
                    ("gear", 2),
                    ("bolt", 2),
                ]),
            ),
            (
                "notes",
                ["body", "n"],
                scanned(&[("e", 5), ("d", 4), ("c", 3), ("b", 2), ("a", 1)]),
            ),
        ] {
            let table = catalog.find(name).expect(name);
            assert!(
                table.primary_key.is_empty() && !table.key_hidden,
                "{table:?}"
            );
            let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
            let sql = sample_sql(table, &columns);
            assert!(!sql.contains("ORDER BY"), "{sql}");
            assert!(order_columns(table, &columns).is_empty(), "{name}");
            assert_eq!(two_pages(&b, table, &columns).await, rows, "{name}");
        }
    }

    /// Keyword search must find `Ærøskøbing` from `ærøskøbing` (the tools lower-case every
    /// keyword), as SQL Server's case-insensitive collations do; SQLite's `LIKE` alone folds
    /// only ASCII. Found by the backend-parameterised suite (`tests/backends.rs`).
    #[tokio::test]
    async fn keyword_search_folds_case_beyond_ascii() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fold.sqlite");
        {
            let c = Connection::open(&path).expect("create");
            c.execute_batch(
                "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, code TEXT);
                 INSERT INTO people VALUES (1, 'Zoë Ærøskøbing', 'A1'), (2, 'ÅSA ÖSTERGÅRD', NULL),
                                           (3, 'plain ascii', 42), (4, 'ΣΩΚΡΆΤΗΣ', x'00');",
            )
            .expect("fixture");
            let plain: bool = c
                .query_row("SELECT 'Æ' LIKE 'æ'", [], |r| r.get(0))
                .expect("like");
            assert!(
                !plain,
                "SQLite's LIKE folds only ASCII (the reason for mcp_fold)"
            );
        }
        let b = SqliteBackend::open(&path, false, 1, Duration::from_secs(5))
            .await
            .expect("open");
        let catalog = b.catalog().await.expect("catalog");
        let table = catalog.find("people").expect("people");
        let columns: Vec<String> = vec!["id".into(), "name".into()];
        let text: Vec<String> = vec!["name".into(), "code".into()];
        for (keyword, want) in [
            ("ærøskøbing", vec![1]),
            ("ÆRØSKØBING", vec![1]),
            ("zoë", vec![1]),
            ("östergård", vec![2]),
            ("σωκράτης", vec![4]),
            ("ascii", vec![3]),
            ("a1", vec![1]),
            ("42", vec![3]),
            ("nothing", vec![]),
        ] {
            let keywords = vec![keyword.to_string()];
            let rs = b
                .search(SearchRequest {
                    table,
                    columns: &columns,
                    text_columns: &text,
                    keywords: &keywords,
                    limit: 10,
                })
                .await
                .expect("search");
            let ids: Vec<i64> = rs
                .rows
                .iter()
                .map(|r| match r[0] {
                    Value::Int(i) => i,
                    ref other => panic!("id {other:?}"),
                })
                .collect();
            assert_eq!(ids, want, "{keyword}");
        }
    }

    #[test]
    fn declared_types_map_to_kinds() {
        assert_eq!(kind_of("DECIMAL(10,2)"), ValueKind::Decimal);
        assert_eq!(kind_of("BOOLEAN"), ValueKind::Boolean);
        assert_eq!(kind_of("VARCHAR(20)"), ValueKind::Text);
        assert_eq!(kind_of("DATETIME"), ValueKind::Temporal);
        assert_eq!(kind_of("BIGINT"), ValueKind::Integer);
    }

    #[test]
    fn declared_types_map_in_any_case_and_any_length() {
        for (name, kind) in [
            ("INTEGER", ValueKind::Integer),
            ("integer", ValueKind::Integer),
            ("Text", ValueKind::Text),
            ("real", ValueKind::Float),
            ("Real", ValueKind::Float),
            ("BLOB", ValueKind::Binary),
            ("blob", ValueKind::Binary),
        ] {
            assert_eq!(kind_of(name), kind, "{name}");
        }
        // Longer than the stack buffer: the same markers, found in place.
        let long = format!("national character varying{}", " ".repeat(60));
        assert_eq!(kind_of(&long), ValueKind::Text);
        assert_eq!(kind_of(&format!("{long} money")), ValueKind::Decimal);
        assert_eq!(kind_of("Unsigned Big Int"), ValueKind::Integer);
        assert_eq!(kind_of("double precision"), ValueKind::Float);
        assert_eq!(kind_of("geometry"), ValueKind::Other);
    }
}
