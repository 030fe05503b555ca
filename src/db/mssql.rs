//! The SQL Server backend: tiberius 0.13 over TDS, a bb8 pool, T-SQL built only here.
//!
//! # Connections and the pool
//!
//! Connections come from a [`bb8`] pool with a small manager of our own ([`Manager`]) rather
//! than `bb8-tiberius`: its 0.16 release pins tiberius **0.12** (and rustls 0.21), whose types do
//! not mix with the tiberius 0.13 this crate uses, so taking it would mean either two tiberius
//! versions in one binary or giving up 0.13's fixes (poisoned connections after a dropped
//! write, bounded handshakes, safer decoders). The manager is a few dozen lines and lets us own
//! the things that matter here:
//!
//! - **Gradual opening.** At most [`CONNECT_CONCURRENCY`] connection attempts run at once and
//!   the pool keeps one idle connection (`min_idle`); the rest are opened on demand.
//! - **Broken until proven otherwise.** Every operation sets the connection's `broken` flag
//!   before it touches the wire and clears it only when the response was read to its end (or
//!   the server answered with an ordinary, non-fatal error). A query that timed out, was cancelled by a
//!   dropped future, hit an I/O or protocol error, or was abandoned mid-stream leaves the flag
//!   set, and bb8 (through [`bb8::ManageConnection::has_broken`]) discards the connection
//!   instead of reusing it. Before it goes, a task of its own sends SQL Server a TDS attention
//!   and waits up to [`CANCEL_WAIT`] for the acknowledgement ([`Checkout`]): closing the socket
//!   rolls the session's transaction back, but a query that sends nothing while it works (a
//!   large aggregate) could otherwise run on for nobody until it next writes. The caller does
//!   not wait for it, and the connection is discarded whatever the answer (tiberius finds the
//!   acknowledgement only in the answer it interrupts, and a connection cut off mid-token
//!   cannot be trusted after it).
//! - **Cheap health checks.** A connection idle for more than [`VALIDATE_AFTER_IDLE`] is
//!   checked with `SELECT 1` before use (like HikariCP's bypass window); a busy pool pays
//!   nothing.
//! - **Fast failure in an outage.** A failed connection attempt is published to every caller
//!   waiting for a connection, which then fails at once with [`DbError::Unavailable`] and the
//!   real cause (refused, login failed, TLS) instead of waiting for the pool timeout. Nothing
//!   needs restarting when the server returns: the next call opens a fresh connection.
//! - **Azure SQL redirects** (`Error::Routing`) are followed once per connection attempt;
//!   errors after one name the host it sent the connection to, and the configured server.
//!
//! # Read-only layers
//!
//! SQL Server has no read-only transaction mode, so this backend is one layer of several: the
//! guard (`db::guard`, MsSql dialect) admits one query and nothing that executes, writes or
//! reaches other servers; the login should have read rights only (README); the connection
//! declares `ApplicationIntent=ReadOnly`; every new connection runs [`session_setup`] once
//!
//! ```sql
//! SET NOCOUNT ON; SET XACT_ABORT ON; SET LOCK_TIMEOUT <ms>;
//! SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SET ROWCOUNT 0; SET TEXTSIZE 131088;
//! ```
//!
//! (the level is `[[database]] isolation`'s, `READ COMMITTED` by default; session settings that
//! nothing a client sends can change: the guard refuses `SET`); and an
//! ad-hoc query runs as
//!
//! ```sql
//! [SET ROWCOUNT <offset+limit+1>;] BEGIN TRANSACTION;
//! <query>
//! ;ROLLBACK TRANSACTION;
//! ```
//!
//! The row cap is tracked per connection ([`MssqlConn::rowcount`]) and sent only when it
//! changes, so the usual batch is three statements; our own statements lift a cap that could
//! cut them, and catalog loads reset it. The query goes in as the client wrote it: its lifted
//! template ([`super::lift`]) only keys the guard's remembered verdict, because bound through
//! `sp_executesql` the same queries cost the TDS test peer 1.6–1.8× the CPU
//! (`benches/README.md`). If the batch fails part-way, `XACT_ABORT` has already
//! rolled a run-time error's transaction back on the server, and `IF @@TRANCOUNT > 0 ROLLBACK;
//! SET ROWCOUNT 0` runs before the connection is reused; if it cannot, the connection is
//! discarded (closing a session rolls its transaction back). The row cap holds twice: `SET
//! ROWCOUNT` on the server, and the client stops collecting at `offset + limit + 1` rows
//! whatever the server sends. Rows beyond the cap (or the page's byte cap) are drained, up to
//! [`DRAIN_ROWS`] rows and [`DRAIN_BYTES`] of values, so the connection can be reused; past
//! that it is discarded. Ad-hoc queries page by skipping `offset` rows client-side (an
//! arbitrary query has no `ORDER BY` to hang `OFFSET` on), so later pages of a large result
//! cost the server and the wire the rows before them again.
//!
//! Tools never send SQL for `sample`, `lookup` and `search`: they are built here with bracket
//! quoting (`]` doubled) and bound parameters for every value that came from outside (keys,
//! `LIKE` patterns with `%`, `_`, `[` and `\` escaped). Row counts (`TOP (n)`, `OFFSET n ROWS
//! FETCH NEXT m ROWS ONLY`) are our own integers and are written inline, because some TDS
//! servers (the test peer among them) refuse parameters there. Keyword matching follows the
//! column's collation: case-insensitive on SQL Server's default collations. Samples page in
//! key order; a table without a key pages in scan order (`ORDER BY (SELECT NULL)`, no sort,
//! so a large heap answers at once), and only a table whose key the scope hid is sorted, by
//! up to 16 of its visible columns that are not large objects (see [`order_by`]).
//!
//! # Full-text search
//!
//! A table with an enabled full-text index (`sys.fulltext_indexes`, its columns from
//! `sys.fulltext_index_columns`, its key from the index's `unique_index_id`) is searched
//! through it: `FREETEXTTABLE` over the indexed columns the request may search, the keywords
//! as one bound free-text parameter, joined to the table on the index's key, in `RANK` order
//! (see [`full_text_search_sql`]). Text columns outside the index are not searched on such a
//! table (the index is the operator's statement of what is searchable, and the point of it is
//! not to scan). Tables without one, or whose index covers none of the visible text columns,
//! use `LIKE`; so does a table whose full-text query fails with a SQL error (an index dropped
//! since the catalog was read, an offline full-text catalog).
//!
//! # Types
//!
//! Values are decoded from tiberius' `ColumnData` directly (no chrono/decimal features):
//! integers and `bit` as numbers and booleans; `decimal`/`numeric` as exact decimal strings
//! with their scale; `money`/`smallmoney` as decimal strings with four places (tiberius hands
//! money over as `f64`, exact below ±2^39 / 10^4, about ±549.7 billion: see [`money_text`];
//! `sample`/`lookup`/`search` cast money columns, and money in `sql_variant` columns, to
//! `decimal(19,4)` so they are exact at any size); `float`/`real` as numbers; all
//! character types and `xml` as text; `date`, `time`, `datetime`, `datetime2`,
//! `smalldatetime` as ISO 8601 text without a zone and `datetimeoffset` with its offset;
//! `uniqueidentifier` in SQL Server's canonical upper-case form (what SSMS and
//! `CONVERT(char(36), …)` show); binary types as bytes (base64 in JSON);
//! `sql_variant` as its base type; NULL as null.
//!
//! **Long values.** Text, `xml` and binary values longer than [`MAX_VALUE_BYTES`] are cut to
//! it (text at a character boundary) and recorded ([`RowSet::cut_values`]); the
//! tools say so. The server sends at most [`TEXTSIZE_BYTES`] (128 KiB) of one `varchar(max)`,
//! `nvarchar(max)`, `varbinary(max)`, `text`, `ntext` or `image` value (`SET TEXTSIZE`), a
//! result has at most [`MAX_RESULT_COLUMNS`] columns (tiberius reads a whole row before
//! handing it over, so together they bound a row at 128 MiB), and a page stops at its byte
//! cap ([`Page::max_bytes`]). `TEXTSIZE` does not apply to `xml`, and a `varchar(max)` value
//! longer than 128 KiB in a UTF-8 or double-byte collation can be cut by the server inside a
//! character, which tiberius refuses to decode. The server's own statements (samples,
//! lookups, search) therefore select `varchar(max)`, `text` and `xml` columns as
//! `nvarchar(max)`: `TEXTSIZE` bounds it, and its cut falls between UTF-16 units and decodes
//! lossily. In an ad-hoc query a `varchar(max)` value cut inside a character fails the query
//! with an error that says to select part of it or cast it. An `xml` value, which `TEXTSIZE`
//! does not cut, tiberius reads whole and decodes to a `String` before [`decode`] sees it;
//! what bounds it is the row budget ([`RowBudget`], `max_row_mib`, 16 MiB by default): the
//! transport counts what each row takes on the wire and refuses to read past the limit, so
//! the query fails ([`row_too_large`] says to select the value as `nvarchar(max)`) and the
//! connection, left inside the row, is discarded. Past a page that is already whole, such a
//! row ends the page instead. Rows past a page are otherwise read the same way while they
//! are drained ([`DRAIN_BYTES`] stops the drain only after the row that passes it), and so
//! are hidden columns, which are masked after the row is read.
//!
//! # Catalog
//!
//! Tables, views and columns come from `INFORMATION_SCHEMA`; primary keys (or, failing that,
//! the first unique constraint), foreign keys and row estimates from `sys.key_constraints`,
//! `sys.index_columns`, `sys.foreign_keys`, `sys.foreign_key_columns` and `sys.partitions`;
//! full-text indexes as *Full-text search* says. A server without those views (or a login
//! without metadata rights) gets "no keys" (and no full-text indexes), not an error.
//! **Fallback key:** a table with no declared key uses a column named `Id`, `<Table>Id` or
//! `<Table>_Id` (case-insensitive, also with the table name made singular: `Customers` →
//! `CustomerId`), and says so with `key_is_heuristic = true`. The catalog is cached for
//! [`CATALOG_TTL`] and reloaded lazily by one caller while the others keep the previous one
//! (or wait and share the outcome); if a reload fails the previous one is served.
//!
//! # Not covered
//!
//! Full-text search has unit tests on its SQL and on canned catalog rows only (the test peer
//! has no full-text engine); the peer ignores `SET TEXTSIZE` (the cut at [`MAX_VALUE_BYTES`]
//! is tested on it, the server's own limit is not). The Azure redirect is tested against a
//! stand-in gateway written in `tests/mssql.rs` (the peer never sends one), which does the login
//! only as far as the routing token.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bb8::{ErrorSink, ManageConnection, Pool, PooledConnection, RunError};
use futures::TryStreamExt;
use tiberius::error::Error as TdsError;
use tiberius::{
    AuthMethod, Client, ColumnData, ColumnType, EncryptionLevel, Query, QueryItem, QueryStream,
    SqlBrowser,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::entra::EntraLogin;
use super::{
    Asker, Backend, Catalog, ColumnInfo, DbError, ForeignKey, FullTextIndex, HistoryTable,
    MAX_CHECKS, MAX_VALUE_BYTES, Page, PageRows, ResultColumn, RowSet, SearchRequest, SqlDialect,
    Synonym, TableInfo, Value, ValueKind, check_text, cut_bytes, cut_text, description_text,
};
use crate::config::{
    ApplicationIntent, ConfigError, MssqlAuthentication, MssqlConfig, MssqlEncrypt, MssqlIsolation,
    Secret, SecretSource,
};
use crate::ops::{FailureReport, FailureRun};

/// Errors Azure SQL refuses a login with while the database resumes from auto-pause, fails
/// over, or is at a resource limit: they pass by themselves, so the login is tried again
/// ([`Manager`]'s `connect`), as Microsoft's drivers do.
pub const TRANSIENT_LOGIN_ERRORS: [u32; 9] =
    [40613, 40197, 40501, 49918, 49919, 49920, 10928, 10929, 4221];
/// The first wait before such a login is tried again; it doubles up to [`LOGIN_RETRY_MAX`],
/// as long as the connect timeout leaves room.
const LOGIN_RETRY_FIRST: Duration = Duration::from_secs(1);
const LOGIN_RETRY_MAX: Duration = Duration::from_secs(5);
/// Most connection attempts in flight at once (SQL Server logins are not free, and small
/// servers have short accept backlogs).
pub const CONNECT_CONCURRENCY: usize = 2;
/// How long the check of an idle connection may take (at most the connect timeout): a
/// server that cannot answer `SELECT 1` this fast is reported down by `/health` too.
pub const IDLE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a cancel waits for the server's acknowledgement (at most the connect timeout).
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// A connection idle longer than this is checked with `SELECT 1` before it is handed out.
pub const VALIDATE_AFTER_IDLE: Duration = Duration::from_millis(500);
/// While every pooled connection is busy, a whole answer on one of them this recent is what
/// the readiness check goes by instead of a login of its own: under load the check costs the
/// server nothing, and a server that stopped answering is still found within a second.
pub const RECENT_ANSWER: Duration = Duration::from_secs(1);
/// Rows read and thrown away after the row (or byte) cap before giving up on reusing the
/// connection.
pub const DRAIN_ROWS: usize = 1_000;
/// Bytes of values read and thrown away after the cap before giving up on the connection:
/// past it, opening a new connection is cheaper than reading on.
pub const DRAIN_BYTES: usize = 1024 * 1024;
/// How long a loaded catalog is served before it is reloaded on the next request.
pub const CATALOG_TTL: Duration = Duration::from_secs(60);
/// How long a failed reload leaves the previous catalog in place before the next try.
pub const CATALOG_RETRY: Duration = Duration::from_secs(10);
/// A catalog at least this old is read anew when it does not know a name a caller gave
/// ([`Backend::catalog_after_miss`]): a table made a moment ago is found at once, and a name
/// that is nowhere costs at most one reload this often.
pub const CATALOG_RECHECK: Duration = Duration::from_secs(5);
/// Connections kept idle and ready.
const MIN_IDLE: u32 = 1;

/// Everything needed to open SQL Server connections, with the secrets already loaded.
#[derive(Clone)]
pub struct MssqlSettings {
    /// tiberius' configuration (holds the password; never printed).
    config: tiberius::Config,
    /// The password or connection string file, read again for each new connection.
    rotation: Option<Arc<Rotation>>,
    /// `host:port` or `host\instance`, for messages (no secrets).
    target: String,
    /// Where to fix a failed login, e.g. `database[0].user / password`.
    login_hint: String,
    /// What to check after a failed login, e.g. "the user and password".
    login_check: String,
    /// Where Entra tokens come from, when the login uses one (see [`entra`]).
    entra: Option<Arc<EntraLogin>>,
    /// Where to fix a TLS failure.
    tls_hint: String,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// Longest a query may take.
    pub query_timeout: Duration,
    /// Most connections.
    pub pool_size: u32,
    /// Most bytes one row may take as the server sends it ([`RowBudget`]).
    pub max_row_bytes: usize,
    /// Set the session context (who asks) before each query ([`context_statements`]).
    pub session_context: bool,
    /// The isolation level queries read at ([`session_setup`]).
    pub isolation: MssqlIsolation,
}

impl fmt::Debug for MssqlSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MssqlSettings")
            .field("target", &self.target)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .field("pool_size", &self.pool_size)
            .field("max_row_bytes", &self.max_row_bytes)
            .finish_non_exhaustive()
    }
}

impl MssqlSettings {
    /// Resolves `cfg` (the `[[database]]` at config key `key`, e.g. `database[0]`): loads the
    /// password or connection string from its file or environment variable and builds the
    /// tiberius configuration. Errors name the key and never contain the secret.
    pub fn from_config(
        cfg: &MssqlConfig,
        key: &str,
        pool_size: u32,
        query_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let connect_timeout = Duration::from_secs(cfg.connect_timeout_secs());
        let resolved = resolve(cfg, key, None)?;
        // An Entra login's token is fetched for each connection ([`Manager::open`]); what the
        // connection string says of a user and password is not used then.
        let entra = EntraLogin::from_config(cfg, key)?.map(Arc::new);
        let (login_hint, login_check) = match &entra {
            Some(e) => (
                e.keys(),
                format!(
                    "that {} has a user in this database (CREATE USER [<its name>] FROM EXTERNAL PROVIDER) and that the server has a Microsoft Entra admin",
                    e.describe()
                ),
            ),
            None => (
                resolved.login_hint.clone(),
                password_login_check(resolved.windows_account.as_deref()),
            ),
        };
        let rotation = match &entra {
            None => Rotation::watch(cfg, key, &resolved, &login_check).map(Arc::new),
            Some(_) => None,
        };
        let Resolved {
            config,
            target,
            tls_hint,
            ..
        } = resolved;
        Ok(Self {
            config,
            rotation,
            target,
            login_hint,
            login_check,
            entra,
            tls_hint,
            connect_timeout,
            query_timeout,
            pool_size,
            max_row_bytes: cfg.max_row_mib() as usize * 1024 * 1024,
            session_context: cfg.session_context(),
            isolation: cfg.isolation(),
        })
    }

    fn context(&self) -> ErrorContext {
        ErrorContext {
            target: self.target.clone(),
            login_hint: self.login_hint.clone(),
            login_check: self.login_check.clone(),
            tls_hint: self.tls_hint.clone(),
        }
    }
}

/// tiberius' configuration for `cfg` (the `[[database]]` at config key `key`), with its
/// password or connection string read from its file or environment variable now, and what
/// error messages say of it. Errors name the key and never contain the secret.
/// `read`, when given, is the secret as [`Rotation`] just read it.
fn resolve(cfg: &MssqlConfig, key: &str, read: Option<Secret>) -> Result<Resolved, ConfigError> {
    // The secret read now: the connection string, or a password login's password.
    let mut secret = None;
    let (mut config, target, login_hint, tls_hint, windows_account) = match &cfg.connection_string {
        Some(src) => {
            let cs = match read {
                Some(cs) => cs,
                None => src.load(&format!("{key}.connection_string"))?,
            };
            // tiberius' parse errors can quote the offending pair, which may be the
            // password: say what is wrong without repeating the string.
            let config = tiberius::Config::from_ado_string(cs.expose()).map_err(|_| {
                ConfigError::new(
                    format!("{key}.connection_string"),
                    format!(
                        "the connection string from {} is not a valid ADO.NET connection string",
                        src.describe()
                    ),
                    "write it as Server=tcp:host,1433;Database=…;User Id=…;Password=…;Encrypt=true (quote values containing ';' with {…})",
                )
            })?;
            if cfg.authentication.is_none()
                && let Some(asked) = ado_value(cs.expose(), "authentication")
            {
                refuse_string_authentication(&asked, &format!("{key}.connection_string"))?;
            }
            let account = check_string_windows_login(cs.expose(), cfg.authentication, key)?;
            let target = config.get_addr();
            let hint = format!("{key}.connection_string");
            secret = Some(cs);
            (config, target, hint.clone(), hint, account)
        }
        None => {
            let (Some(host), Some(database)) = (&cfg.host, &cfg.database) else {
                return Err(ConfigError::new(
                    format!("{key}.host"),
                    "host and database are both needed",
                    "add the missing keys, or use connection_string",
                ));
            };
            let mut config = tiberius::Config::new();
            config.host(host);
            if let Some(port) = cfg.port() {
                config.port(port);
            }
            if let Some(instance) = &cfg.instance {
                config.instance_name(instance);
            }
            config.database(database);
            if cfg.authentication().uses_password() {
                let (Some(user), Some(pw)) = (&cfg.user, &cfg.password) else {
                    return Err(ConfigError::new(
                        format!("{key}.user"),
                        "a SQL or Windows login needs user and password",
                        "add them, or set authentication to an Entra kind",
                    ));
                };
                let password = match read {
                    Some(pw) => pw,
                    None => pw.load(&format!("{key}.password"))?,
                };
                config.authentication(match cfg.authentication() {
                    // tiberius splits `DOMAIN\user` into the domain and the user, and
                    // sspi splits `user@dns.domain` the same way (the DNS name as the
                    // domain, which domain controllers accept).
                    MssqlAuthentication::Windows => AuthMethod::windows(user, password.expose()),
                    _ => AuthMethod::sql_server(user, password.expose()),
                });
                secret = Some(password);
            }
            config.encryption(match cfg.encrypt() {
                MssqlEncrypt::Off => EncryptionLevel::Off,
                MssqlEncrypt::On => EncryptionLevel::On,
                MssqlEncrypt::Required => EncryptionLevel::Required,
                MssqlEncrypt::Strict => EncryptionLevel::Strict,
            });
            // validate() refused trust_server_certificate together with ca_file, which
            // tiberius would panic on.
            if cfg.trust_server_certificate() {
                config.trust_cert();
            } else if let Some(ca) = &cfg.ca_file {
                config.trust_cert_ca(ca.display());
            }
            let target = match &cfg.instance {
                Some(i) => format!("{host}\\{i}"),
                None => format!("{host}:{}", cfg.port().unwrap_or(1433)),
            };
            (
                config,
                target,
                format!("{key}.user / {key}.password"),
                format!("{key}.encrypt / {key}.trust_server_certificate / {key}.ca_file"),
                cfg.user
                    .clone()
                    .filter(|_| cfg.authentication() == MssqlAuthentication::Windows),
            )
        }
    };
    // The TOML keys win over the connection string: read-only intent is a safety layer
    // and stays on unless the operator turns it off here.
    config.readonly(cfg.application_intent() == ApplicationIntent::ReadOnly);
    config.application_name(cfg.application_name());
    // Every address at once: with one at a time, an address that drops the connection
    // attempt (the offline subnet of an availability group listener) holds the whole
    // connect timeout before the next is tried. A connection string keeps ADO.NET's
    // default (off) unless the key says otherwise.
    match (cfg.multi_subnet_failover, &cfg.connection_string) {
        (Some(on), _) => config.multi_subnet_failover(on),
        (None, None) => config.multi_subnet_failover(true),
        (None, Some(_)) => {}
    }
    // No handshake timer in tiberius either: the whole connection attempt (TCP, prelogin,
    // TLS, login, session setup) runs inside one tokio timeout of the connect timeout
    // ([`Manager`]'s `connect`), which knows whether the server took the TCP connection. A
    // second timer of the same length would only race it, and tiberius' message for its
    // own ("… prelogin, TLS negotiation and login …") reads like a TLS failure.
    config.handshake_timeout(None);
    // No per-round-trip timer in tiberius: every round trip already runs inside a tokio
    // timeout of ours (query, catalog, ping, idle check, connect), and an operation cut off
    // leaves its connection `broken`, so it is discarded. tiberius' timer (30 s by default)
    // would add nothing but a `futures-timer` registration, and a wake of that crate's
    // timer thread, every time a read waits for the server: about a tenth of this
    // process's CPU per query on the TDS benchmark.
    config.command_timeout(None);
    // An `nvarchar` value with a lone UTF-16 surrogate (legacy UCS-2 data, or a value the
    // server cut at `TEXTSIZE` inside a pair) reads with U+FFFD in its place instead of
    // failing the whole query and discarding its connection.
    config.lossy_utf16_decoding(true);
    Ok(Resolved {
        config,
        target,
        login_hint,
        tls_hint,
        windows_account,
        secret,
    })
}

/// What [`resolve`] makes of a `[[database]]`.
struct Resolved {
    config: tiberius::Config,
    /// `host:port` or `host\instance` (no secrets).
    target: String,
    /// The keys to fix after a failed login.
    login_hint: String,
    /// The keys to fix after a TLS failure.
    tls_hint: String,
    /// The Windows account that logs in, for a Windows login.
    windows_account: Option<String>,
    /// The connection string, or the password of a password login, as read.
    secret: Option<Secret>,
}

/// The database a connection string names, as tiberius reads it (lowercase).
fn string_database(cs: &str) -> Option<String> {
    ["database", "initial catalog", "databasename"]
        .into_iter()
        .find_map(|k| ado_value(cs, k))
        .map(|d| d.trim().to_lowercase())
}

/// A password login's password, or the connection string that holds it, kept in a file: read
/// again before each new connection, so that a password rotated by an operator or a secrets
/// agent (which writes the file, then changes the login's password on SQL Server, or the other
/// way round) needs no restart. New connections log in with what the file says; connections
/// already open keep their sessions, as SQL Server keeps them when a password changes. An
/// environment variable cannot change under a running process, so it is read once.
///
/// What a changed file may not change: the server and the database (the catalog, the
/// metrics and every message name them); that takes a restart, and until then new connections
/// keep the last login read that could be used.
struct Rotation {
    /// The `[[database]]` to resolve again when the file changes, and its key.
    cfg: MssqlConfig,
    key: String,
    /// The secret's own key (`database[0].password`) and file.
    secret_key: String,
    source: SecretSource,
    /// What must stay the same: the target, and a connection string's database.
    target: String,
    database: Option<String>,
    /// Held while the file is read and what it says is taken, so that reads are taken in
    /// the order they were made.
    state: tokio::sync::Mutex<RotationState>,
}

struct RotationState {
    /// The file's content when it was last read.
    seen: Secret,
    /// What new connections use: built from the last content that could be used.
    config: tiberius::Config,
    /// What a refused login is told to check (it names a Windows account).
    login_check: String,
    /// The last read failed (logged once, until a read succeeds).
    unreadable: bool,
}

impl Rotation {
    /// A rotation for `cfg` when its login's secret comes from a file (not for an Entra
    /// login: its token, secret or certificate is read for each connection already).
    fn watch(cfg: &MssqlConfig, key: &str, resolved: &Resolved, login_check: &str) -> Option<Self> {
        let (source, secret_key) = match (&cfg.connection_string, &cfg.password) {
            (Some(cs), _) => (cs, format!("{key}.connection_string")),
            (None, Some(pw)) if cfg.authentication().uses_password() => {
                (pw, format!("{key}.password"))
            }
            _ => return None,
        };
        source.file.as_ref()?;
        let seen = resolved.secret.clone()?;
        Some(Self {
            cfg: cfg.clone(),
            key: key.to_string(),
            database: cfg
                .connection_string
                .as_ref()
                .and_then(|_| string_database(seen.expose())),
            secret_key,
            source: source.clone(),
            target: resolved.target.clone(),
            state: tokio::sync::Mutex::new(RotationState {
                seen,
                config: resolved.config.clone(),
                login_check: login_check.to_string(),
                unreadable: false,
            }),
        })
    }

    /// The configuration for a new connection, and what a refused login is told to check:
    /// the file read again, and resolved again if it changed.
    async fn current(&self) -> (tiberius::Config, String) {
        let mut state = self.state.lock().await;
        let (source, key) = (self.source.clone(), self.secret_key.clone());
        // A file read, off the async workers (a network file system can be slow).
        let read = tokio::task::spawn_blocking(move || source.load(&key))
            .await
            .unwrap_or_else(|e| {
                Err(ConfigError::new(
                    format!("{}.file", self.secret_key),
                    format!("the read was cut short: {e}"),
                    "check the file",
                ))
            });
        match read {
            Err(e) => {
                if !std::mem::replace(&mut state.unreadable, true) {
                    tracing::warn!(error = %e, "cannot read the SQL Server login's secret again; new connections log in with the one read before");
                }
            }
            Ok(now) => {
                if std::mem::take(&mut state.unreadable) {
                    tracing::info!(key = %self.secret_key, "the SQL Server login's secret can be read again");
                }
                if now.expose() != state.seen.expose() {
                    self.take(&mut state, now);
                }
            }
        }
        (state.config.clone(), state.login_check.clone())
    }

    /// Resolves the changed secret `now` and, if it can be used, makes it what new
    /// connections log in with. Said in the log either way (never the secret).
    fn take(&self, state: &mut RotationState, now: Secret) {
        let database = self
            .cfg
            .connection_string
            .as_ref()
            .and_then(|_| string_database(now.expose()));
        state.seen = now.clone();
        let key = &self.secret_key;
        let keep = "new connections keep logging in with the one read before";
        match resolve(&self.cfg, &self.key, Some(now)) {
            Err(e) => {
                tracing::warn!(error = %e, "{key} changed but cannot be used; {keep}");
            }
            Ok(fresh) if fresh.target != self.target || database != self.database => {
                tracing::warn!(
                    key = %key,
                    target = %fresh.target,
                    was = %self.target,
                    "{key} changed to another server or database, which takes a restart; {keep}"
                );
            }
            Ok(fresh) => {
                state.login_check = password_login_check(fresh.windows_account.as_deref());
                state.config = fresh.config;
                tracing::info!(key = %key, target = %fresh.target, "{key} changed; new connections log in with it");
            }
        }
    }
}

/// What to check after a refused login with a password (not an Entra token).
fn password_login_check(windows_account: Option<&str>) -> String {
    match windows_account {
        Some(account) => format!(
            "the Windows account {account} and its password, that its domain lets it sign in by NTLM, and that SQL Server has a login for it (CREATE LOGIN [{account}] FROM WINDOWS) with a user in this database"
        ),
        None => "the user and password".to_string(),
    }
}

/// What error messages need to point at the right thing.
#[derive(Debug, Clone)]
struct ErrorContext {
    target: String,
    login_hint: String,
    login_check: String,
    tls_hint: String,
}

type Transport = Compat<Metered<TcpStream>>;

/// How many bytes a connection may still read before the row it is reading is given up on:
/// `[[database]] max_row_mib`, counted on the wire (TLS records included).
///
/// tiberius reads every value of a row before it hands the row over, and SQL Server's
/// `TEXTSIZE` bounds every long type but `xml`; without a count, one `xml` value (up to 2 GiB
/// on the wire, and a `String` of up to 3 GiB made from it) is what a single query could make
/// this process hold. The count starts again with every request written and every row (or
/// other item) tiberius hands over; a read past it fails, which ends the query with
/// [`row_too_large`] and discards the connection. (Its cancel, a request written, may read on
/// to the acknowledgement, within the same limit.)
struct RowBudget {
    limit: usize,
    left: AtomicUsize,
    /// A read was refused since the count last started.
    refused: AtomicBool,
}

impl RowBudget {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            left: AtomicUsize::new(limit),
            refused: AtomicBool::new(false),
        }
    }

    /// Starts the count again. One task uses a connection at a time, so relaxed is enough.
    fn restart(&self) {
        self.left.store(self.limit, Ordering::Relaxed);
        self.refused.store(false, Ordering::Relaxed);
    }

    fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// The limit as configured, in MiB.
    fn limit_mib(&self) -> usize {
        self.limit / (1024 * 1024)
    }
}

/// The TCP stream under tiberius, counting what it reads against a [`RowBudget`].
struct Metered<S> {
    inner: S,
    budget: Arc<RowBudget>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.budget.left.load(Ordering::Relaxed);
        if left == 0 {
            self.budget.refused.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::other(format!(
                "a row passed the {} MiB limit (max_row_mib)",
                self.budget.limit_mib()
            ))));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let read = buf.filled().len() - before;
        self.budget
            .left
            .store(left.saturating_sub(read), Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

/// Writing is what starts a request (or a cancellation), and so a new count.
impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.budget.restart();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.budget.restart();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A pooled SQL Server connection.
pub struct MssqlConn {
    client: Client<Transport>,
    /// What the connection may still read of the row in hand ([`RowBudget`]).
    budget: Arc<RowBudget>,
    /// Set before every use, cleared only when the response was read cleanly; a set flag makes
    /// the pool discard the connection (see the module docs).
    broken: bool,
    /// When the connection last finished an operation; long-idle connections are checked.
    last_used: Instant,
    /// The `SET ROWCOUNT` in effect on the session: `Some(0)` after connecting, the row cap of
    /// the last ad-hoc query after one ran to its end, `None` while a batch that changes it is
    /// in flight (a connection left that way is discarded, see [`execute`]). Ad-hoc batches
    /// set it only when it differs, and our own statements lift it when it could cut them.
    rowcount: Option<u32>,
    /// With `[[database]] session_context`: whom the session context says asks, once a
    /// statement that set it ran to its end (`None`: not set, or not known to be).
    context: Option<Asker>,
    /// `[[database]] session_context` is on.
    session_context: bool,
}

/// The value of `key` (compared without case or spaces) in an ADO.NET connection string:
/// pairs split at `;`, values bare or quoted with `"`, `'` (a doubled quote stands for itself)
/// or `{…}`. Only for keys tiberius does not read, so that they are not silently ignored.
fn ado_value(cs: &str, key: &str) -> Option<String> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = squash(key);
    let mut rest = cs;
    loop {
        let (k, after) = rest.split_once('=')?;
        let k = k.rsplit(';').next().unwrap_or(k);
        let after = after.trim_start();
        let (value, next) = match after.chars().next() {
            Some(q @ ('"' | '\'' | '{')) => {
                let close = if q == '{' { '}' } else { q };
                let mut value = String::new();
                let mut chars = after[1..].char_indices().peekable();
                let mut end = after.len();
                while let Some((i, c)) = chars.next() {
                    if c == close {
                        if chars.peek().is_some_and(|(_, n)| *n == close) {
                            chars.next();
                            value.push(c);
                            continue;
                        }
                        end = 1 + i + c.len_utf8();
                        break;
                    }
                    value.push(c);
                }
                let next = after[end..].split_once(';').map_or("", |(_, n)| n);
                (value, next)
            }
            _ => match after.split_once(';') {
                Some((v, n)) => (v.trim().to_string(), n),
                None => (after.trim().to_string(), ""),
            },
        };
        if squash(k) == wanted {
            return Some(value);
        }
        rest = next;
    }
}

/// A connection string's `Authentication=` that the TOML keys must say instead: tiberius reads
/// only a user and password from the string, so an Entra method written there would end in a
/// baffling login failure. `SqlPassword` is what the string does anyway.
fn refuse_string_authentication(asked: &str, key: &str) -> Result<(), ConfigError> {
    let method: String = asked
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    let fix = match method.as_str() {
        "sqlpassword" | "" => return Ok(()),
        "activedirectorymanagedidentity" | "activedirectorymsi" | "activedirectorydefault" => {
            "add authentication = \"entra_managed_identity\" next to connection_string (with client_id = \"…\" for a user-assigned identity), and remove Authentication from the string"
        }
        "activedirectoryserviceprincipal" => {
            "add authentication = \"entra_service_principal\" with tenant_id, client_id and client_secret next to connection_string, and remove Authentication (and the secret) from the string"
        }
        _ => {
            "use a SQL login (User Id and Password in the string), or one of authentication = \"entra_managed_identity\", \"entra_service_principal\" or \"entra_access_token\" next to connection_string"
        }
    };
    Err(ConfigError::new(
        key,
        format!(
            "the connection string asks for Authentication={}, which mssql-mcp does not read from the string",
            asked.trim()
        ),
        fix,
    ))
}

/// A connection string's Windows login: `Integrated Security=SSPI` (or `true`) with
/// `User Id=DOMAIN\user` and `Password`, which tiberius makes an NTLM login. Returns the
/// account when the string asks for one. Refused, with what to write instead:
/// `Integrated Security` without an account (tiberius would sign in as no one: no Kerberos
/// ticket is used), `Trusted_Connection` (tiberius does not read it), a Windows account as a
/// SQL login's `User Id`, and `authentication` in the TOML saying otherwise.
fn check_string_windows_login(
    cs: &str,
    configured: Option<MssqlAuthentication>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    let key = format!("{key}.connection_string");
    let yes = |name: &str| {
        ado_value(cs, name).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "sspi" | "true" | "yes"
            )
        })
    };
    let windows_login =
        "Integrated Security=SSPI;User Id=CORP\\svc_mcp;Password=… (a Windows login, by NTLM)";
    if yes("trusted_connection") {
        return Err(ConfigError::new(
            key,
            "the connection string asks for Trusted_Connection, which mssql-mcp does not read",
            format!("write {windows_login} instead"),
        ));
    }
    // The keys tiberius reads the user from.
    let account = ["uid", "username", "user", "user id"]
        .into_iter()
        .find_map(|k| ado_value(cs, k));
    if !yes("integrated security") {
        if configured == Some(MssqlAuthentication::Windows) {
            return Err(ConfigError::new(
                key,
                "authentication = \"windows\", but the connection string does not ask for Integrated Security",
                format!("write {windows_login}, or remove authentication"),
            ));
        }
        if let Some(user) = account.filter(|u| u.contains('\\')) {
            return Err(ConfigError::new(
                key,
                format!(
                    "User Id `{user}` is a Windows account (SQL logins cannot contain `\\`), but the string asks for a SQL login"
                ),
                format!("write {windows_login}"),
            ));
        }
        return Ok(None);
    }
    if let Some(other) = configured.filter(|a| *a != MssqlAuthentication::Windows) {
        return Err(ConfigError::new(
            key,
            format!(
                "the connection string asks for Integrated Security (a Windows login), but authentication = \"{}\"",
                other.as_str()
            ),
            "remove Integrated Security from the string, or remove authentication",
        ));
    }
    let has_password = ["password", "pwd"]
        .into_iter()
        .any(|k| ado_value(cs, k).is_some());
    let Some(account) = account.filter(|_| has_password) else {
        return Err(ConfigError::new(
            key,
            "Integrated Security needs the Windows account and its password in the string: mssql-mcp signs in by NTLM, not with a Kerberos ticket or keytab",
            format!("write {windows_login}"),
        ));
    };
    if let Some(problem) = crate::config::windows_account_problem(&account) {
        return Err(ConfigError::new(
            key,
            format!("the Windows account `{account}` {problem}"),
            format!("write {windows_login}"),
        ));
    }
    // tiberius reads these as "the login packet only" and "not at all".
    if ado_value(cs, "encrypt").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "no" | "0" | "danger_plaintext"
        )
    }) {
        let mut err = crate::config::windows_in_the_clear(&key);
        err.fix = "write Encrypt=true in the string (with TrustServerCertificate=true on a trusted network if the server's certificate is its own self-signed one)".into();
        return Err(err);
    }
    Ok(Some(account))
}

/// Opens connections for bb8.
pub struct Manager {
    settings: MssqlSettings,
    ctx: ErrorContext,
    /// Limits concurrent connection attempts (gradual opening).
    gate: Semaphore,
    /// Hears of connections made, to end a logged outage (see [`OutageLog`]).
    outage: Arc<OutageLog>,
    /// The latest failed attempt, cleared when one succeeds (see [`MssqlBackend::acquire`]).
    connect_errors: Arc<watch::Sender<Option<ConnectFailure>>>,
}

/// A failed connection attempt and when it failed.
type ConnectFailure = (Instant, DbError);

/// How far one connection attempt got, for [`ManageConnection::connect`] to name when its
/// timeout ends the attempt.
#[derive(Default)]
struct Attempt {
    /// Set once a TCP connection to the current hop stands, so that a timeout can tell a
    /// server that is out of reach from one that took the connection and then stalled in the
    /// handshake.
    accepted: AtomicBool,
    /// After an Azure SQL redirect, the context naming where the connection was sent.
    redirected: std::sync::Mutex<Option<ErrorContext>>,
    /// Set when the server refused the login with an error that passes by itself
    /// ([`TRANSIENT_LOGIN_ERRORS`]): the login is worth trying again.
    transient: AtomicBool,
}

impl Attempt {
    fn has_redirected(&self) -> bool {
        self.redirected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The context errors of the current hop are reported in: the configured server's, or
    /// after a redirect the one it redirected to.
    fn ctx(&self, configured: &ErrorContext) -> ErrorContext {
        self.redirected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| configured.clone())
    }
}

impl Manager {
    /// Opens one connection, noting in `attempt` how far it got (see [`Attempt`]).
    async fn open(&self, attempt: &Attempt) -> Result<MssqlConn, DbError> {
        // With the password in a file, what it says now ([`Rotation`]).
        let (mut config, configured) = match &self.settings.rotation {
            Some(rotation) => {
                let (config, login_check) = rotation.current().await;
                let ctx = ErrorContext {
                    login_check,
                    ..self.ctx.clone()
                };
                (config, ctx)
            }
            None => (self.settings.config.clone(), self.ctx.clone()),
        };
        // Errors name the host that failed: the configured one, or where it redirected.
        let ctx = || attempt.ctx(&configured);
        if let Some(entra) = &self.settings.entra {
            // Within the connect timeout's own timer, so that a token endpoint that does not
            // answer is named as such rather than as a server that did not.
            let limit = self
                .settings
                .connect_timeout
                .saturating_sub(Duration::from_secs(1))
                .max(Duration::from_secs(1));
            let token = tokio::time::timeout(limit, entra.token())
                .await
                .map_err(|_| {
                    DbError::Unavailable(format!(
                        "cannot get an Entra token: no answer within {} s",
                        limit.as_secs()
                    ))
                })??;
            config.authentication(AuthMethod::aad_token(token.expose()));
        }
        loop {
            // Per hop: after a redirect, the new target has not accepted anything yet.
            attempt.accepted.store(false, Ordering::Relaxed);
            let tcp = TcpStream::connect_named(&config)
                .await
                .map_err(|e| reach_error(&e, &ctx()))?;
            attempt.accepted.store(true, Ordering::Relaxed);
            // Requests are small writes that wait for an answer: Nagle's algorithm would only
            // hold them back (tiberius' own examples set this too).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY could not be set on a SQL Server connection");
            }
            let budget = Arc::new(RowBudget::new(self.settings.max_row_bytes));
            let tcp = Metered {
                inner: tcp,
                budget: budget.clone(),
            };
            match Client::connect(config.clone(), tcp.compat_write()).await {
                Ok(client) => {
                    let mut conn = MssqlConn {
                        client,
                        budget,
                        broken: true,
                        last_used: Instant::now(),
                        rowcount: None,
                        context: None,
                        session_context: self.settings.session_context,
                    };
                    // A plain batch (not sp_executesql), so the SETs last for the session.
                    let stream = conn
                        .client
                        .simple_query(session_setup(
                            self.settings.query_timeout,
                            self.settings.isolation,
                        ))
                        .await
                        .map_err(|e| connect_error(&e, &ctx()))?;
                    stream
                        .into_results()
                        .await
                        .map_err(|e| connect_error(&e, &ctx()))?;
                    conn.broken = false;
                    conn.rowcount = Some(0);
                    return Ok(conn);
                }
                // Followed from the configured server only.
                Err(TdsError::Routing { host, port }) if !attempt.has_redirected() => {
                    let to = format!("{host}:{port}");
                    tracing::info!(from = %self.ctx.target, to = %to, "SQL Server redirected the connection");
                    let hop = ErrorContext {
                        target: format!("{to} (where {} redirected)", self.ctx.target),
                        ..configured.clone()
                    };
                    *attempt.redirected.lock().unwrap_or_else(|p| p.into_inner()) = Some(hop);
                    config.host(&host);
                    config.port(port);
                }
                Err(e) => {
                    if let TdsError::Server(t) = &e {
                        if TRANSIENT_LOGIN_ERRORS.contains(&t.code()) {
                            attempt.transient.store(true, Ordering::Relaxed);
                        }
                        // A refused token is not offered again: the next attempt asks for a
                        // new one.
                        if let (18456, Some(entra)) = (t.code(), &self.settings.entra) {
                            entra.forget().await;
                        }
                    }
                    return Err(connect_error(&e, &ctx()));
                }
            }
        }
    }
}

impl ManageConnection for Manager {
    /// Boxed: a tiberius client is a few kilobytes, and the pool moves its connections by
    /// value on every checkout and return (about 3,700 instructions of copying per query,
    /// `benches/instructions.sh`).
    type Connection = Box<MssqlConn>;
    type Error = DbError;

    async fn connect(&self) -> Result<Box<MssqlConn>, DbError> {
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| DbError::Unavailable("the backend is shutting down".into()))?;
        let limit = self.settings.connect_timeout;
        let attempt = Attempt::default();
        let deadline = Instant::now() + limit;
        // What Microsoft's drivers do when Azure SQL answers a login with "not available
        // now" (a serverless database resuming, a failover, a resource limit): wait and log
        // in again, while the connect timeout allows. Nothing else is tried again here: a
        // server out of reach fails at once, and the next call tries anew.
        let tries = async {
            let mut wait = LOGIN_RETRY_FIRST;
            loop {
                attempt.transient.store(false, Ordering::Relaxed);
                *attempt.redirected.lock().unwrap_or_else(|p| p.into_inner()) = None;
                match self.open(&attempt).await {
                    Err(e)
                        if attempt.transient.load(Ordering::Relaxed)
                            && Instant::now() + wait < deadline =>
                    {
                        tracing::info!(target = %self.ctx.target, error = %e, wait_ms = wait.as_millis() as u64, "SQL Server asked to log in again later; waiting");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(LOGIN_RETRY_MAX);
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(limit, tries).await {
            Ok(Ok(conn)) => {
                self.outage.connected(&self.ctx.target);
                // A failure from before this success says nothing about the server any more.
                // Cleared without waking anyone: waiters wake only for failures.
                self.connect_errors.send_if_modified(|latest| {
                    *latest = None;
                    false
                });
                Ok(Box::new(conn))
            }
            Ok(Err(e)) => Err(e),
            Err(_) if attempt.accepted.load(Ordering::Relaxed) => {
                Err(login_stalled(&attempt.ctx(&self.ctx), limit.as_secs()))
            }
            Err(_) => Err(DbError::Unavailable(format!(
                "could not connect to {} within {} s",
                attempt.ctx(&self.ctx).target,
                limit.as_secs()
            ))),
        }
    }

    async fn is_valid(&self, conn: &mut Box<MssqlConn>) -> Result<(), DbError> {
        select_one(conn, &self.ctx).await
    }

    fn has_broken(&self, conn: &mut Box<MssqlConn>) -> bool {
        conn.broken
    }
}

/// `SELECT 1` on a connection, read to the end.
async fn select_one(conn: &mut MssqlConn, ctx: &ErrorContext) -> Result<(), DbError> {
    conn.broken = true;
    let stream = conn
        .client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| query_error(&e, ctx))?;
    stream
        .into_results()
        .await
        .map_err(|e| query_error(&e, ctx))?;
    conn.broken = false;
    conn.last_used = Instant::now();
    Ok(())
}

/// Receives connection failures from bb8, logs them (see [`OutageLog`]) and tells waiting
/// callers (see [`MssqlBackend::acquire`]).
#[derive(Clone)]
struct ConnectErrors {
    latest: Arc<watch::Sender<Option<ConnectFailure>>>,
    outage: Arc<OutageLog>,
}

impl fmt::Debug for ConnectErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectErrors")
    }
}

impl ErrorSink<DbError> for ConnectErrors {
    fn sink(&self, error: DbError) {
        self.outage.failed(&error);
        self.latest.send_replace(Some((Instant::now(), error)));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<DbError>> {
        Box::new(self.clone())
    }
}

/// How often a run of failed connection attempts is logged again while it lasts.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs a run of failed connection attempts as one event rather than one line per attempt
/// (during an outage every tool call, and the pool's own top-ups, try to connect): the first
/// failure at WARN, a WARN a minute at most while it lasts (with the count), and the first
/// connection after it at INFO (see [`FailureRun`]). The attempts between are logged at DEBUG.
/// Each failed call is still logged by `mcp::dispatch`, with its request id.
#[derive(Debug, Default)]
struct OutageLog {
    run: std::sync::Mutex<FailureRun>,
    /// Every failed attempt since start (`mssql_mcp_db_connect_failures_total`).
    total: AtomicU64,
}

impl OutageLog {
    fn run(&self) -> std::sync::MutexGuard<'_, FailureRun> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self, error: &DbError) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let report = self.run().failed(Instant::now(), OUTAGE_LOG_EVERY);
        match report {
            FailureReport::First => {
                tracing::warn!(error = %error, "SQL Server connection attempt failed")
            }
            FailureReport::Ongoing { failures, secs } => tracing::warn!(
                error = %error,
                failed_attempts = failures,
                for_secs = secs,
                "SQL Server connection attempts still failing"
            ),
            FailureReport::Quiet => {
                tracing::debug!(error = %error, "SQL Server connection attempt failed")
            }
        }
    }

    fn connected(&self, target: &str) {
        let ended = self.run().ended();
        if let Some((failures, took)) = ended {
            tracing::info!(
                target = %target,
                failed_attempts = failures,
                after_secs = took.as_secs(),
                "SQL Server reachable again"
            );
        }
    }
}

pub use super::PoolStats;

/// A SQL Server (or Azure SQL) database.
pub struct MssqlBackend {
    pool: Pool<Manager>,
    /// Failed connection attempts, logged and counted.
    outage: Arc<OutageLog>,
    /// The latest failed connection attempt since the last one that succeeded; waiting
    /// callers subscribe to hear of the next.
    connect_errors: Arc<watch::Sender<Option<ConnectFailure>>>,
    ctx: ErrorContext,
    query_timeout: Duration,
    connect_timeout: Duration,
    pool_size: u32,
    /// `[[database]] session_context`: queries tell SQL Server who asks.
    session_context: bool,
    /// The loaded catalog and the last failed load.
    catalog: std::sync::Mutex<CatalogCache>,
    /// Held while the catalog loads, so concurrent callers share one load.
    catalog_load: tokio::sync::Mutex<()>,
    /// When a check of an idle connection last went unanswered: connections idle since before
    /// then are given up without a check of their own (see [`MssqlBackend::acquire`]).
    unanswered_check: std::sync::Mutex<Option<Instant>>,
    /// Opens a connection of its own for [`Backend::ping`] while every pooled one is busy
    /// and none had an answer lately.
    pinger: Manager,
    /// Connections `pinger` opened.
    pings_opened: AtomicU64,
    /// When a pooled connection last read a whole answer from the server, in milliseconds
    /// after `born` (0: never): what [`Backend::ping`] goes by while the pool is busy.
    answered_ms: AtomicU64,
    born: Instant,
    /// What became of the cancels sent for queries left mid-request ([`Checkout`]).
    cancels: Arc<CancelCounts>,
}

/// Cancels sent for queries left mid-request, by how they ended.
#[derive(Debug, Default)]
struct CancelCounts {
    /// The server acknowledged the attention: it stopped the request.
    acknowledged: AtomicU64,
    /// No acknowledgement within [`CANCEL_WAIT`], or the connection could not carry one (lost,
    /// or cut off half-way through writing a request).
    unacknowledged: AtomicU64,
}

/// A connection checked out for one query. Left mid-request (timed out, abandoned
/// mid-stream, or dropped with its caller's future), it is handed to a task of its own that
/// sends SQL Server a TDS attention, so the server stops the work instead of running it to its
/// end for nobody, and waits up to [`CANCEL_WAIT`] for the acknowledgement. The connection is
/// discarded either way (it is `broken`), which closes the session and rolls back its
/// transaction.
struct Checkout {
    /// `Some` until dropped.
    conn: Option<PooledConnection<'static, Manager>>,
    cancels: Arc<CancelCounts>,
    wait: Duration,
}

impl Checkout {
    fn conn(&mut self) -> Result<&mut MssqlConn, DbError> {
        self.conn.as_deref_mut().map(|c| &mut **c).ok_or_else(|| {
            DbError::Internal("a checked-out connection was used after its return".into())
        })
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !conn.broken {
            return;
        }
        // Without a runtime (shutting down) the connection just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(cancel(conn, self.wait, self.cancels.clone()));
        }
    }
}

/// Tells the server to stop the request in flight on `conn` and waits for it to say so;
/// then drops the connection, which the pool discards.
async fn cancel(
    mut conn: PooledConnection<'static, Manager>,
    wait: Duration,
    counts: Arc<CancelCounts>,
) {
    let outcome = tokio::time::timeout(wait, conn.client.cancel_query()).await;
    let counter = match outcome {
        Ok(Ok(())) => &counts.acknowledged,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a SQL Server request could not be cancelled; its connection is closed");
            &counts.unacknowledged
        }
        Err(_) => {
            tracing::debug!(
                "SQL Server did not acknowledge a cancel in time; the connection is closed"
            );
            &counts.unacknowledged
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// See [`MssqlBackend::catalog`].
#[derive(Default)]
struct CatalogCache {
    /// The latest catalog and when it was loaded.
    loaded: Option<(Instant, Arc<Catalog>)>,
    /// The latest failed load, shared with the callers that waited for it.
    failed: Option<(Instant, DbError)>,
}

impl fmt::Debug for MssqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MssqlBackend")
            .field("target", &self.ctx.target)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl MssqlBackend {
    /// Builds the pool (without waiting for a connection: the database may come up later).
    /// Must be called inside a tokio runtime.
    pub fn new(settings: MssqlSettings) -> Self {
        let ctx = settings.context();
        let (tx, _) = watch::channel(None);
        let connect_errors = Arc::new(tx);
        let outage = Arc::new(OutageLog::default());
        let pool_size = settings.pool_size.max(1);
        let opener = |attempts| Manager {
            ctx: ctx.clone(),
            gate: Semaphore::new(attempts),
            settings: settings.clone(),
            outage: outage.clone(),
            connect_errors: connect_errors.clone(),
        };
        let manager = opener(CONNECT_CONCURRENCY);
        let pinger = opener(1);
        let pool = Pool::builder()
            .max_size(pool_size)
            .min_idle(Some(MIN_IDLE.min(pool_size)))
            .connection_timeout(settings.connect_timeout)
            // Report a failed attempt at once (callers fail fast); the next call tries again.
            .retry_connection(false)
            // Checked in `acquire` only after an idle spell, not on every checkout.
            .test_on_check_out(false)
            // The most recently used connection first: under light load one warm connection
            // serves every query (no idle-spell checks, warm caches on both ends) and the
            // others age out through the idle timeout, instead of every connection taking its
            // turn and each turn being the one that finds it idle.
            .queue_strategy(bb8::QueueStrategy::Lifo)
            .idle_timeout(Some(Duration::from_secs(300)))
            .max_lifetime(Some(Duration::from_secs(1800)))
            .error_sink(Box::new(ConnectErrors {
                latest: connect_errors.clone(),
                outage: outage.clone(),
            }))
            .build_unchecked(manager);
        Self {
            pool,
            outage,
            connect_errors,
            ctx,
            query_timeout: settings.query_timeout,
            connect_timeout: settings.connect_timeout,
            pool_size,
            session_context: settings.session_context,
            catalog: std::sync::Mutex::new(CatalogCache::default()),
            catalog_load: tokio::sync::Mutex::new(()),
            unanswered_check: std::sync::Mutex::new(None),
            pinger,
            pings_opened: AtomicU64::new(0),
            answered_ms: AtomicU64::new(0),
            cancels: Arc::default(),
            born: Instant::now(),
        }
    }

    /// Notes that `conn` read a whole answer from the server just now (a result or a SQL
    /// error alike: the server answered), if it did.
    fn note_answer(&self, conn: &MssqlConn) {
        if !conn.broken {
            let ms = conn
                .last_used
                .saturating_duration_since(self.born)
                .as_millis();
            // The latest of concurrent answers, whichever stores last.
            self.answered_ms.fetch_max(
                u64::try_from(ms).unwrap_or(u64::MAX).max(1),
                Ordering::Relaxed,
            );
        }
    }

    /// Whether a pooled connection read a whole answer within `window`.
    fn answered_within(&self, window: Duration) -> bool {
        match self.answered_ms.load(Ordering::Relaxed) {
            0 => false,
            ms => {
                self.born
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms))
                    <= window
            }
        }
    }

    /// Builds the backend and tries to load the catalog once. A database that is down is not
    /// fatal (the pool recovers when it returns); a refused login or TLS failure is.
    pub async fn open(settings: MssqlSettings) -> Result<Self, DbError> {
        let backend = Self::new(settings);
        match backend.catalog().await {
            Ok(c) => {
                tracing::info!(target = %backend.ctx.target, tables = c.tables.len(), "SQL Server catalog loaded");
            }
            Err(e) if is_config_problem(&e) => return Err(e),
            Err(e) => {
                tracing::warn!(target = %backend.ctx.target, error = %e, "SQL Server not reachable at start; will retry on demand");
            }
        }
        Ok(backend)
    }

    /// Where this backend connects (no secrets), for logs.
    pub fn target(&self) -> &str {
        &self.ctx.target
    }

    /// Pool counters, for health reporting, metrics and tests.
    pub fn pool_stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            max: self.pool_size,
            connections: state.connections,
            idle: state.idle_connections,
            in_use: state.connections.saturating_sub(state.idle_connections),
            created: state.statistics.connections_created,
            discarded: state.statistics.connections_closed_broken,
            waits: state.statistics.get_waited + state.statistics.get_timed_out,
            connect_failures: self.outage.total.load(Ordering::Relaxed),
            check_connections: self.pings_opened.load(Ordering::Relaxed),
            cancels_acknowledged: self.cancels.acknowledged.load(Ordering::Relaxed),
            cancels_unacknowledged: self.cancels.unacknowledged.load(Ordering::Relaxed),
        }
    }

    /// A healthy connection: waits for the pool (bounded by the connect timeout), fails at once
    /// when a connection attempt fails meanwhile, and checks connections that sat idle.
    ///
    /// A check that goes unanswered ([`IDLE_CHECK_TIMEOUT`]) means the server or the network
    /// stopped answering without closing anything (a host gone, a firewall dropping packets):
    /// the call fails then, instead of checking the next idle connection, and the next one,
    /// each for as long; and every connection idle since before it is given up without a
    /// round trip of its own.
    async fn acquire(&self) -> Result<PooledConnection<'static, Manager>, DbError> {
        let asked = Instant::now();
        let mut failures = self.connect_errors.subscribe();
        // Each stale connection found costs one try; a fresh one follows at the latest after
        // the whole pool was checked.
        for _ in 0..=self.pool_size {
            let got = tokio::select! {
                // Owned, so that a query left mid-request can be cancelled by a task of its
                // own ([`Checkout`]).
                got = self.pool.get_owned() => got,
                changed = failures.changed() => {
                    let err = match changed {
                        Ok(()) => failures.borrow_and_update().clone().map(|(_, e)| e),
                        Err(_) => None,
                    };
                    return Err(err.unwrap_or_else(|| DbError::Unavailable(format!("cannot connect to {}", self.ctx.target))));
                }
            };
            let mut conn = match got {
                Ok(c) => c,
                Err(RunError::User(e)) => return Err(e),
                Err(RunError::TimedOut) => {
                    let state = self.pool.state();
                    if state.connections > 0 {
                        return Err(DbError::Unavailable(format!(
                            "no connection to {} became free within {} s ({} in use); try again shortly",
                            self.ctx.target,
                            self.connect_timeout.as_secs(),
                            state.connections
                        )));
                    }
                    // No connection at all: the attempts made for this call did not finish in
                    // time. A failure is named only if it came while this call waited (an
                    // older one may describe an outage that has changed since).
                    let recent = self
                        .connect_errors
                        .borrow()
                        .as_ref()
                        .filter(|(at, _)| *at >= asked)
                        .map(|(_, e)| e.clone());
                    return Err(recent.unwrap_or_else(|| {
                        DbError::Unavailable(format!(
                            "could not connect to {} within {} s",
                            self.ctx.target,
                            self.connect_timeout.as_secs()
                        ))
                    }));
                }
            };
            if conn.last_used.elapsed() <= VALIDATE_AFTER_IDLE {
                return Ok(conn);
            }
            let unanswered = *self
                .unanswered_check
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if unanswered.is_some_and(|at| conn.last_used < at) {
                conn.broken = true;
                continue;
            }
            let check = self.connect_timeout.min(IDLE_CHECK_TIMEOUT);
            match tokio::time::timeout(check, select_one(&mut conn, &self.ctx)).await {
                Ok(Ok(())) => return Ok(conn),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "discarding a stale SQL Server connection");
                    conn.broken = true;
                }
                Err(_) => {
                    conn.broken = true;
                    *self
                        .unanswered_check
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    tracing::warn!(target = %self.ctx.target, "a pooled connection did not answer its check; giving up the idle ones");
                    return Err(DbError::Unavailable(format!(
                        "{} did not answer within {} s; it may be down or unreachable",
                        self.ctx.target,
                        check.as_secs()
                    )));
                }
            }
        }
        Err(DbError::Unavailable(format!(
            "every pooled connection to {} failed its check",
            self.ctx.target
        )))
    }

    fn catalog_cache(&self) -> std::sync::MutexGuard<'_, CatalogCache> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The catalog if one younger than `fresh` is cached, else loaded. One load at a time:
    /// while it runs, others serve the previous catalog if there is one (unless `wait`: a
    /// caller that needs a catalog newer than the one it has waits for the load), or wait and
    /// share the load's outcome (so a server that does not answer costs one connect timeout,
    /// not one per caller).
    async fn catalog_within(&self, fresh: Duration, wait: bool) -> Result<Arc<Catalog>, DbError> {
        let asked = Instant::now();
        if let Some(answer) = self.cached_catalog(asked, fresh) {
            return answer;
        }
        let _loading = match self.catalog_load.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if !wait && let Some((_, c)) = self.catalog_cache().loaded.clone() {
                    return Ok(c);
                }
                self.catalog_load.lock().await
            }
        };
        if let Some(answer) = self.cached_catalog(asked, fresh) {
            return answer;
        }
        let result = self.load_catalog().await;
        let mut cache = self.catalog_cache();
        let now = Instant::now();
        match result {
            Ok(c) => {
                let c = Arc::new(c);
                cache.loaded = Some((now, c.clone()));
                cache.failed = None;
                Ok(c)
            }
            Err(e) => {
                cache.failed = Some((now, e.clone()));
                match &cache.loaded {
                    Some((_, old)) => {
                        // A database that is down is reported by the connection log (see
                        // `OutageLog`); anything else (a permission taken away) is news.
                        if e.is_transient() {
                            tracing::debug!(error = %e, "SQL Server catalog reload failed; serving the previous one");
                        } else {
                            tracing::warn!(error = %e, "SQL Server catalog reload failed; serving the previous one");
                        }
                        Ok(old.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// What the cache can answer without loading: a catalog younger than `fresh` or loaded
    /// after `asked`, or the outcome of a load that failed after `asked` (the previous
    /// catalog if there is one, else the error).
    fn cached_catalog(
        &self,
        asked: Instant,
        fresh: Duration,
    ) -> Option<Result<Arc<Catalog>, DbError>> {
        let cache = self.catalog_cache();
        if let Some((at, c)) = &cache.loaded
            && (at.elapsed() < fresh || *at >= asked)
        {
            return Some(Ok(c.clone()));
        }
        // A load that failed answers the callers that were waiting for it; and while a
        // previous catalog exists, it is served for [`CATALOG_RETRY`] after a failed reload
        // instead of every call during an outage trying (and failing) to reload first.
        if let Some((at, e)) = &cache.failed
            && (*at >= asked || (cache.loaded.is_some() && at.elapsed() < CATALOG_RETRY))
        {
            return Some(match &cache.loaded {
                Some((_, c)) => Ok(c.clone()),
                None => Err(e.clone()),
            });
        }
        None
    }

    /// Runs `stmt` on a pooled connection within the query timeout.
    async fn run(&self, stmt: Statement) -> Result<RowSet, DbError> {
        let mut checkout = self.check_out().await?;
        let conn = checkout.conn()?;
        let result =
            tokio::time::timeout(self.query_timeout, execute(conn, &stmt, &self.ctx)).await;
        conn.last_used = Instant::now();
        self.note_answer(conn);
        match result {
            Ok(r) => r,
            // The future was dropped mid-operation: the flag is still set, so the checkout
            // cancels the request and the pool drops the connection (and with it the
            // server-side session and its transaction).
            Err(_) => Err(DbError::Timeout(self.query_timeout.as_secs())),
        }
    }

    /// A healthy connection ([`Self::acquire`]) that cancels a request left mid-way.
    async fn check_out(&self) -> Result<Checkout, DbError> {
        Ok(Checkout {
            conn: Some(self.acquire().await?),
            cancels: self.cancels.clone(),
            wait: self.connect_timeout.min(CANCEL_WAIT),
        })
    }

    async fn load_catalog(&self) -> Result<Catalog, DbError> {
        let mut checkout = self.check_out().await?;
        let conn = checkout.conn()?;
        // Catalog queries on big databases can be slow; give them twice the query budget.
        let limit = self.query_timeout * 2;
        match tokio::time::timeout(limit, read_catalog(conn, &self.ctx)).await {
            Ok(r) => {
                conn.last_used = Instant::now();
                r
            }
            // Not `DbError::Timeout`: its message tells the model to narrow a query it did
            // not write.
            Err(_) => Err(DbError::Unavailable(format!(
                "reading the catalog of {} took longer than {} s; the server may be \
                 overloaded or its metadata locked; try again shortly",
                self.ctx.target,
                limit.as_secs()
            ))),
        }
    }
}

/// True for failures an operator must fix (as opposed to a database that is down): the
/// messages [`connect_error`] and [`server_error`] start with. By their start, not anywhere
/// in them: a host named `SQLTLS01` in "cannot reach SQLTLS01:1433" is a database that is
/// down.
fn is_config_problem(e: &DbError) -> bool {
    match e {
        DbError::Unavailable(m) => [
            "login failed",
            "Entra sign-in failed",
            "TLS with",
            "TLS error with",
            "cannot open database",
            "snapshot isolation is not allowed",
        ]
        .iter()
        .any(|start| m.starts_with(start)),
        _ => false,
    }
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
enum Param {
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Guid(tiberius::Uuid),
    Bytes(Vec<u8>),
}

/// One round trip: a parameterised statement of ours, or a guarded ad-hoc query.
#[derive(Debug, Clone)]
struct Statement {
    /// Our statement, or the guarded query alone (the batch around it is built in [`execute`],
    /// where the connection's `SET ROWCOUNT` is known).
    sql: String,
    params: Vec<Param>,
    page: Page,
    /// Run as the ad-hoc batch (transaction, row cap, rollback) instead of via sp_executesql.
    adhoc: bool,
}

/// Runs one statement; see the module docs for when the connection stays usable.
async fn execute(
    conn: &mut MssqlConn,
    stmt: &Statement,
    ctx: &ErrorContext,
) -> Result<RowSet, DbError> {
    conn.broken = true;
    let cap = row_cap(&stmt.page);
    // Who asks, for the database's own rules, unless the session says so already. Unknown
    // until the statement that sets it has run to its end.
    let context = conn
        .session_context
        .then(|| crate::db::asker().unwrap_or_default())
        .filter(|asker| conn.context.as_ref() != Some(asker));
    let prefix = context.as_ref().map(context_statements);
    if context.is_some() {
        conn.context = None;
    }
    let outcome = if stmt.adhoc {
        let batch = adhoc_batch(&stmt.sql, cap, conn.rowcount);
        let batch = match &prefix {
            Some(p) => format!("{p}{batch}"),
            None => batch,
        };
        conn.rowcount = None;
        match conn.client.simple_query(batch).await {
            Ok(stream) => read_page(stream, &stmt.page, &conn.budget).await,
            Err(e) => Err(e.into()),
        }
    } else {
        let text = own_statement(&stmt.sql, cap, conn.rowcount);
        let mut q = Query::new(match &prefix {
            Some(p) => Cow::Owned(format!("{p}{text}")),
            None => text,
        });
        for p in &stmt.params {
            match p {
                Param::I64(i) => q.bind(*i),
                Param::F64(f) => q.bind(*f),
                Param::Bool(b) => q.bind(*b),
                Param::Str(s) => q.bind(s.as_str()),
                Param::Guid(g) => q.bind(*g),
                Param::Bytes(b) => q.bind(b.as_slice()),
            }
        }
        match q.query(&mut conn.client).await {
            Ok(stream) => read_page(stream, &stmt.page, &conn.budget).await,
            Err(e) => Err(e.into()),
        }
    };
    let outcome = outcome.map(|(mut rs, drained)| {
        if stmt.adhoc {
            join_for_json_rows(&mut rs);
        }
        (rs, drained)
    });
    match outcome {
        Ok((rs, Drained::Complete)) => {
            if stmt.adhoc {
                conn.rowcount = Some(cap);
            }
            if context.is_some() {
                conn.context = context;
            }
            conn.broken = false;
            Ok(rs)
        }
        // More than DRAIN_ROWS rows past the cap: the rows are good, the connection is not.
        Ok((rs, Drained::Abandoned)) => Ok(rs),
        // The stream was left mid-response: the connection goes.
        Err(ReadError::TooWide(n)) => Err(DbError::Sql(format!(
            "the result has {n} columns, more than the {MAX_RESULT_COLUMNS} a query may return; \
             select fewer columns"
        ))),
        // The connection stopped reading inside a row: it goes.
        Err(ReadError::Tds(_)) if conn.budget.refused() => {
            Err(row_too_large(conn.budget.limit_mib(), stmt.adhoc))
        }
        Err(ReadError::Tds(e)) if is_fatal(&e) => Err(query_error(&e, ctx)),
        Err(ReadError::Tds(e)) => {
            if stmt.adhoc {
                // The batch stopped somewhere; make sure no transaction survives it and the
                // row cap is known again.
                if rollback(conn).await.is_ok() {
                    conn.rowcount = Some(0);
                    conn.broken = false;
                }
            } else {
                // tiberius drains the rest of this response before the next request.
                conn.broken = false;
            }
            Err(query_error(&e, ctx))
        }
    }
}

/// The names SQL Server gives the one column of a `FOR JSON` / `FOR XML` result.
const FOR_JSON_COLUMNS: [&str; 2] = [
    "JSON_F52E2B61-18A1-11d1-B105-00805F49916B",
    "XML_F52E2B61-18A1-11d1-B105-00805F49916B",
];

/// SQL Server sends the text of a `FOR JSON` or `FOR XML` query (without `TYPE`) split over
/// rows of about 2,033 characters, for the client to join, as SSMS and ADO.NET's readers do.
/// Joined here into one row, so a model gets one JSON (or XML) text rather than pieces cut
/// at arbitrary characters. A page cut at the row or byte cap holds the text so far, and the
/// next page continues it.
fn join_for_json_rows(rs: &mut RowSet) {
    let is_for_json = matches!(rs.columns.as_slice(),
        [c] if FOR_JSON_COLUMNS.iter().any(|n| c.name.eq_ignore_ascii_case(n)));
    if !is_for_json || rs.rows.len() < 2 {
        return;
    }
    let mut text = String::new();
    for row in &rs.rows {
        if let Some(Value::Text(t)) = row.first() {
            text.push_str(t);
        }
    }
    let cut = !rs.cut_values.is_empty();
    rs.joined_rows = Some(rs.rows.len());
    rs.rows = vec![vec![Value::text(text)]];
    rs.cut_values = if cut { vec![(0, 0)] } else { Vec::new() };
}

async fn rollback(conn: &mut MssqlConn) -> Result<(), TdsError> {
    conn.client
        .simple_query("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION; SET ROWCOUNT 0;")
        .await?
        .into_results()
        .await?;
    Ok(())
}

/// Most columns a result may have: every value of a row is read before the row is handed
/// over, so columns × `TEXTSIZE` bounds what one row makes this process hold (128 MiB).
pub const MAX_RESULT_COLUMNS: usize = 1_024;

/// Why reading a response stopped early.
#[derive(Debug)]
enum ReadError {
    Tds(TdsError),
    /// More result columns than [`MAX_RESULT_COLUMNS`]; the stream was abandoned before
    /// its first row.
    TooWide(usize),
}

impl From<TdsError> for ReadError {
    fn from(e: TdsError) -> Self {
        ReadError::Tds(e)
    }
}

/// Whether a stream was read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    Complete,
    Abandoned,
}

/// Reads the first result set of a response: skips `page.offset` rows, keeps `page.limit`,
/// notes whether one more followed, then drains what is left (at most [`DRAIN_ROWS`] rows).
async fn read_page(
    mut stream: QueryStream<'_>,
    page: &Page,
    budget: &RowBudget,
) -> Result<(RowSet, Drained), ReadError> {
    let mut columns: Option<(usize, Vec<(String, ColumnType)>)> = None;
    let mut rows = PageRows::new(page);
    let mut seen = 0usize;
    let mut more = false;
    let mut extra = 0usize;
    let mut extra_bytes = 0usize;
    let mut drained = Drained::Complete;
    // Whether a result after the first has begun.
    let mut past_first = false;
    loop {
        let item = match stream.try_next().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            // A row over the limit after the page was whole: the page stands, the connection
            // does not.
            Err(_) if budget.refused() && (more || past_first) => {
                drained = Drained::Abandoned;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        // The next row has the whole limit to itself.
        budget.restart();
        match item {
            QueryItem::Metadata(meta) => {
                if meta.columns().len() > MAX_RESULT_COLUMNS {
                    return Err(ReadError::TooWide(meta.columns().len()));
                }
                past_first |= columns.is_some();
                if columns.is_none() {
                    let cols: Vec<(String, ColumnType)> = meta
                        .columns()
                        .iter()
                        .map(|c| (c.name().to_string(), c.column_type()))
                        .collect();
                    rows.columns(page, cols.iter().map(|(n, _)| n.as_str()));
                    columns = Some((meta.result_index(), cols));
                }
            }
            QueryItem::Row(row) => {
                let first = columns
                    .as_ref()
                    .is_some_and(|(idx, _)| *idx == row.result_index());
                if !first || more {
                    extra += 1;
                    extra_bytes += row.cells().map(|(_, d)| data_size(d)).sum::<usize>();
                    if extra > DRAIN_ROWS || extra_bytes > DRAIN_BYTES {
                        drained = Drained::Abandoned;
                        break;
                    }
                    continue;
                }
                seen += 1;
                if seen <= page.offset {
                    continue;
                }
                if rows.len() >= page.limit {
                    more = true;
                    continue;
                }
                let types = columns.as_ref().map(|(_, c)| c.as_slice()).unwrap_or(&[]);
                let mut values = Vec::with_capacity(types.len());
                // Which of this row's values were cut (empty, so no allocation, nearly always).
                let mut cut = Vec::new();
                for (i, data) in row.into_iter().enumerate() {
                    if rows.hidden(i) {
                        values.push(Value::Null);
                        continue;
                    }
                    let ty = types.get(i).map(|(_, t)| *t).unwrap_or(ColumnType::Null);
                    let (v, c) = decode(data, ty);
                    if c {
                        cut.push(i);
                    }
                    values.push(v);
                }
                if !rows.push(values, cut) {
                    // The rest is drained like rows past the row cap.
                    more = true;
                }
            }
        }
    }
    let columns = columns
        .map(|(_, cols)| {
            cols.into_iter()
                .map(|(name, ty)| ResultColumn {
                    name,
                    data_type: Some(type_name(ty).to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((rows.finish(columns, more), drained))
}

/// Every row of a statement of ours (catalog queries), read to the end.
async fn fetch_all(conn: &mut MssqlConn, sql: &str) -> Result<Vec<Vec<Value>>, TdsError> {
    conn.broken = true;
    let page = Page::rows(0, usize::MAX - 1);
    let result = match conn.client.simple_query(sql).await {
        Ok(stream) => read_page(stream, &page, &conn.budget).await,
        Err(e) => Err(e.into()),
    };
    let result = result.map_err(|e| match e {
        ReadError::Tds(e) => e,
        ReadError::TooWide(n) => TdsError::Protocol(format!("{n} columns").into()),
    });
    match result {
        Ok((rs, _)) => {
            conn.broken = false;
            Ok(rs.rows)
        }
        Err(e) => {
            if !is_fatal(&e) {
                conn.broken = false;
            }
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Whether an error leaves the connection unusable: anything but an ordinary server error.
fn is_fatal(e: &TdsError) -> bool {
    match e {
        TdsError::Server(t) => t.class() >= 20,
        _ => true,
    }
}

/// A row over the [`RowBudget`]: for an ad-hoc query, what to select instead; for one of our
/// own statements (which read every long value cut at `TEXTSIZE`, so only a row of more than
/// a hundred long columns gets here), what the operator can change.
fn row_too_large(limit_mib: usize, adhoc: bool) -> DbError {
    if !adhoc {
        return DbError::Sql(format!(
            "a row of this table is larger than the {} MiB a row may take as SQL Server sends \
             it (max_row_mib), with every long value already cut at {} KiB; the operator can \
             raise max_row_mib or hide columns of the table (deny_columns)",
            limit_mib,
            TEXTSIZE_BYTES / 1024
        ));
    }
    DbError::Sql(format!(
        "a row of the result is larger than the {} MiB a row may take as SQL Server sends it \
         (max_row_mib); select fewer columns, or part of a long value: an xml value arrives \
         whole, so select CONVERT(nvarchar(max), col) instead, which the server cuts at {} KiB",
        limit_mib,
        TEXTSIZE_BYTES / 1024
    ))
}

/// A server that took the TCP connection but did not finish the handshake (prelogin, TLS,
/// login, session setup) within the connect timeout: overloaded, hung, or not SQL Server.
/// Transient, not a configuration problem: the next attempt may well succeed.
fn login_stalled(ctx: &ErrorContext, secs: u64) -> DbError {
    DbError::Unavailable(format!(
        "{} accepted the connection but did not complete the login within {secs} s; it may be \
         overloaded or hung (or not a SQL Server)",
        ctx.target
    ))
}

/// Whether an I/O error's message is one rustls (through tokio-rustls) makes: the handshake
/// failures that are not certificate rejections (those come as [`TdsError::Tls`]) surface as
/// I/O errors carrying rustls' own text. Matched by how the message starts, not by "tls"
/// anywhere in it: tiberius' handshake-timeout message mentions "TLS negotiation".
fn is_rustls_message(message: &str) -> bool {
    [
        "tls handshake eof",
        "received corrupt message",
        "received unexpected message",
        "received unexpected handshake message",
        "received fatal alert",
        "peer is incompatible",
        "peer misbehaved",
        "peer sent no certificates",
        "invalid peer certificate",
        "cannot decrypt peer's message",
        "peer sent excess record size",
    ]
    .iter()
    .any(|start| message.starts_with(start))
}

/// Maps a failure while opening the TCP connection (before any TDS): nothing answered there.
fn reach_error(e: &TdsError, ctx: &ErrorContext) -> DbError {
    match e {
        TdsError::Io { message, .. } => {
            DbError::Unavailable(format!("cannot reach {}: {message}", ctx.target))
        }
        other => connect_error(other, ctx),
    }
}

/// Maps a failure while opening a connection.
fn connect_error(e: &TdsError, ctx: &ErrorContext) -> DbError {
    match e {
        // A handshake that timed out is a server that stalled, whatever stage it stalled in.
        TdsError::Io {
            kind: std::io::ErrorKind::TimedOut,
            ..
        } => DbError::Unavailable(format!(
            "{} accepted the connection but did not complete the login in time; it may be \
             overloaded or hung (or not a SQL Server)",
            ctx.target
        )),
        // A TLS handshake the server broke off (e.g. `strict` against a server without
        // TDS 8.0) surfaces as I/O with rustls' message.
        TdsError::Io { message, .. } if is_rustls_message(message) => {
            DbError::Unavailable(format!(
                "TLS with {} failed: {message} — check {} (`strict` needs SQL Server 2022 or Azure SQL)",
                ctx.target, ctx.tls_hint
            ))
        }
        TdsError::Io { message, .. } => {
            DbError::Unavailable(format!("cannot reach {}: {message}", ctx.target))
        }
        TdsError::Tls(m) => DbError::Unavailable(format!(
            "TLS with {} failed: {} — trust the server's CA with ca_file, or set trust_server_certificate = true on a trusted network (check {})",
            ctx.target,
            first_sentence(m),
            ctx.tls_hint
        )),
        TdsError::Server(t) => server_error(t.code(), t.class(), t.message(), ctx),
        // NTLM could not make its answer (before the server judged it). sspi's messages name
        // no secret.
        TdsError::SspiRs(m) => DbError::Unavailable(format!(
            "login failed — the Windows sign-in (NTLM) with {} could not go on: {m} (check {})",
            ctx.target, ctx.login_hint
        )),
        // Only a redirected connection gets here: the first redirect is followed.
        TdsError::Routing { host, port } => DbError::Unavailable(format!(
            "{} redirected the connection again, to {host}:{port}; only one redirect is followed",
            ctx.target
        )),
        other => DbError::Unavailable(format!("cannot connect to {}: {other}", ctx.target)),
    }
}

/// The first sentence of a library message (tiberius' TLS errors go on to suggest its own API).
fn first_sentence(m: &str) -> &str {
    m.split(". ").next().unwrap_or(m).trim_end_matches('.')
}

/// Maps a failure while running a statement.
fn query_error(e: &TdsError, ctx: &ErrorContext) -> DbError {
    match e {
        TdsError::Server(t) => server_error(t.code(), t.class(), t.message(), ctx),
        TdsError::Io { message, .. } => DbError::Unavailable(format!(
            "the connection to {} was lost: {message}",
            ctx.target
        )),
        TdsError::Tls(m) => DbError::Unavailable(format!("TLS error with {}: {m}", ctx.target)),
        TdsError::Encoding(m) => encoding_error(m),
        other => {
            tracing::warn!(error = %other, "SQL Server protocol or decoding error; connection discarded");
            DbError::Internal(other.to_string())
        }
    }
}

/// A `char`/`varchar`/`text` value (or a `sql_variant` holding one) that tiberius could not
/// decode: its collation's code page is one tiberius does not know, or the bytes are not
/// valid in it (data stored under another code page, or a `varchar(max)` value the server
/// cut at `TEXTSIZE` inside a character). Read as `nvarchar`, the server converts it.
fn encoding_error(m: &str) -> DbError {
    if m.contains("encoding:") {
        return DbError::Sql(format!(
            "a text value could not be decoded ({m}): its column's collation uses a code page \
             this server cannot read; select it as CAST(col AS nvarchar(max))"
        ));
    }
    DbError::Sql(format!(
        "a text value could not be decoded ({m}): a char, varchar or text value holds bytes \
         that are not valid in its column's code page, or a varchar(max) value longer than {} \
         KiB in a UTF-8 or double-byte collation was cut by the server inside a character; \
         select it as CAST(col AS nvarchar(max)) (and a long one in part, with \
         SUBSTRING(col, 1, 60000))",
        TEXTSIZE_BYTES / 1024
    ))
}

/// Maps a SQL Server error number to a message a model (and an operator) can act on.
fn server_error(code: u32, class: u8, message: &str, ctx: &ErrorContext) -> DbError {
    match code {
        18456 | 18452 | 18470 | 18486 | 18487 | 18488 => DbError::Unavailable(format!(
            "login failed — check {} ({}); server said: {message}",
            ctx.login_check, ctx.login_hint
        )),
        4060 => DbError::Unavailable(format!(
            "cannot open database — check the database name and the login's access ({}); server said: {message}",
            ctx.login_hint
        )),
        // SQL Server says just "Invalid object name 'x'."; whatever a server or proxy adds
        // after that first sentence can name tables this scope hides (pysqlbridge appends
        // every table it serves), and the tools append the visible ones themselves.
        208 => DbError::Sql(format!(
            "{} (SQL Server error 208)",
            first_sentence(message)
        )),
        229 | 230 | 262 | 297 | 300 | 916 => DbError::Sql(format!(
            "permission denied: {message} (SQL Server error {code}) — the database login may not read this; query another table or ask the operator to GRANT SELECT"
        )),
        1222 => DbError::Sql(format!(
            "lock timeout: the rows are locked by another transaction (SQL Server error 1222); try again shortly or read fewer rows: {message}"
        )),
        // `session_context = true` on a server older than SQL Server 2016.
        2812 if message.contains("sp_set_session_context") => DbError::Unavailable(format!(
            "{} has no sp_set_session_context (SQL Server 2016 and later, and Azure SQL, have it), which session_context = true needs: set session_context = false in its [[database]] (SQL Server error 2812)",
            ctx.target
        )),
        // `isolation = "snapshot"` on a database that does not allow it.
        3952 => DbError::Unavailable(format!(
            "snapshot isolation is not allowed in the database on {}, and isolation = \"snapshot\" needs it: run ALTER DATABASE <its name> SET ALLOW_SNAPSHOT_ISOLATION ON there, or set isolation = \"read_committed\" in its [[database]] (SQL Server error 3952: {message})",
            ctx.target
        )),
        // An Always Encrypted column compared with a value (`WHERE Ssn = '…'`, `LIKE`): the
        // value would have to be encrypted with the column's key, which this server lacks.
        206 | 402 | 33299
            if message.contains("encrypted with") || message.contains("encryption_type") =>
        {
            DbError::Sql(format!(
                "a column the query compares with a value is Always Encrypted, and this server holds no key to encrypt the value with: filter on other columns (SQL Server error {code}: {message})"
            ))
        }
        // A snapshot read of a table altered since the query's snapshot began.
        3961 => DbError::Sql(format!(
            "a table the query reads was altered while it ran (snapshot isolation, SQL Server error 3961); run it again: {message}"
        )),
        // Azure SQL and failover states that pass by themselves.
        c if TRANSIENT_LOGIN_ERRORS.contains(&c) => DbError::Unavailable(format!(
            "{} is busy or failing over (error {code}): {message}",
            ctx.target
        )),
        _ if class >= 20 => DbError::Unavailable(format!(
            "{} ended the session (error {code}, severity {class}): {message}",
            ctx.target
        )),
        _ => DbError::Sql(format!("{message} (SQL Server error {code})")),
    }
}

// ---------------------------------------------------------------------------------------------
// T-SQL
// ---------------------------------------------------------------------------------------------

/// Quotes an identifier in brackets, doubling `]`.
pub fn ident(s: &str) -> String {
    format!("[{}]", s.replace(']', "]]"))
}

/// `[schema].[table]`.
fn table_ref(t: &TableInfo) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

/// A `LIKE … ESCAPE '\'` pattern matching `keyword` literally anywhere: `%`, `_`, `[` and `\`
/// are escaped.
pub fn like_pattern(keyword: &str) -> String {
    let mut s = String::with_capacity(keyword.len() + 4);
    s.push('%');
    for c in keyword.chars() {
        if matches!(c, '%' | '_' | '[' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

/// The select list; money columns (and money held in `sql_variant` columns) are cast to
/// `decimal(19,4)` so they arrive exact, and
/// `varchar(max)`, `text` and `xml` columns are read as `nvarchar(max)` so `TEXTSIZE` bounds
/// them. `q` is the table's alias with its dot (`t.`), or empty.
fn select_list(table: &TableInfo, columns: &[String], q: &str) -> Result<String, DbError> {
    if columns.is_empty() {
        return Err(DbError::Sql("no visible columns to select".into()));
    }
    Ok(columns
        .iter()
        .map(|c| {
            let t = table
                .column(c)
                .map(|ci| ci.data_type.to_ascii_lowercase())
                .unwrap_or_default();
            if t == "money" || t == "smallmoney" {
                format!("CAST({q}{} AS decimal(19,4)) AS {}", ident(c), ident(c))
            } else if t == "sql_variant" {
                // tiberius hands a variant's money over as f64 (indistinguishable from a
                // float), so money in a variant is sent as an exact decimal variant instead.
                let v = format!("{q}{}", ident(c));
                format!(
                    "CASE WHEN SQL_VARIANT_PROPERTY({v}, 'BaseType') IN ('money', 'smallmoney') \
                     THEN CAST(CAST({v} AS decimal(19,4)) AS sql_variant) ELSE {v} END AS {}",
                    ident(c)
                )
            } else if t == "varchar(max)" || t == "text" || t == "xml" {
                // The server cuts a long value at TEXTSIZE, in bytes, which in a UTF-8 or
                // double-byte collation can fall inside a character that could then not be
                // decoded; as nvarchar it is cut between UTF-16 units, which decode lossily.
                // TEXTSIZE does not apply to xml at all: as xml a value would arrive whole,
                // up to 2 GB, before the cut at MAX_VALUE_BYTES.
                format!("CONVERT(nvarchar(max), {q}{}) AS {}", ident(c), ident(c))
            } else {
                format!("{q}{}", ident(c))
            }
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// At most this many columns order a table whose key the scope hid ([`order_by`]): enough to
/// make pages stable in practice, and a bound on the sort's width.
const MAX_SORT_COLUMNS: usize = 16;

/// What a statement of ours orders its rows by (`q` as in [`select_list`]), `None` for no
/// order:
/// - the table's key when it has one in this scope;
/// - nothing for a table that simply has no key (a heap, a view): `ORDER BY` every column
///   of a large heap would sort all of it for each page and run into the query timeout, so
///   samples keep `ORDER BY (SELECT NULL)` and lookups and searches add no tie-break;
/// - for a table whose key the scope hid ([`TableInfo::key_hidden`]), the first
///   [`MAX_SORT_COLUMNS`] columns of `columns` (the visible ones the statement selects) that
///   SQL Server can sort ([`orderable`]) and that are not large objects ([`large_object`]),
///   so that pages are stable and their order tells nothing of the hidden key.
fn order_by(table: &TableInfo, columns: &[String], q: &str) -> Option<String> {
    let order: Vec<String> = if !table.primary_key.is_empty() {
        table
            .primary_key
            .iter()
            .map(|c| format!("{q}{}", ident(c)))
            .collect()
    } else if table.key_hidden {
        columns
            .iter()
            .filter(|c| {
                table
                    .column(c)
                    .is_some_and(|c| orderable(&c.data_type) && !large_object(&c.data_type))
            })
            .take(MAX_SORT_COLUMNS)
            .map(|c| format!("{q}{}", ident(c)))
            .collect()
    } else {
        Vec::new()
    };
    (!order.is_empty()).then(|| order.join(", "))
}

/// Whether a sortable column declared `data_type` holds values of up to 2 GB: `varchar(max)`,
/// `nvarchar(max)`, `varbinary(max)` (`text`, `ntext`, `image` and `xml` are not
/// [`orderable`] at all). Sorting by one spills whole values to `tempdb`.
fn large_object(data_type: &str) -> bool {
    data_type.trim().to_ascii_lowercase().ends_with("(max)")
}

/// Whether SQL Server can sort a column declared `data_type` (as [`declared_type`] writes it).
/// A list of the types that can, rather than of those that cannot: `text`, `ntext`, `image`,
/// `xml`, `geography` and `geometry` cannot be compared at all, and user (CLR) types,
/// `hierarchyid` and `sql_variant` are left out too, as types whose order is their own.
fn orderable(data_type: &str) -> bool {
    let base = data_type.split('(').next().unwrap_or_default().trim();
    [
        "bit",
        "tinyint",
        "smallint",
        "int",
        "bigint",
        "decimal",
        "numeric",
        "money",
        "smallmoney",
        "float",
        "real",
        "char",
        "varchar",
        "nchar",
        "nvarchar",
        "sysname",
        "date",
        "time",
        "datetime",
        "datetime2",
        "smalldatetime",
        "datetimeoffset",
        "binary",
        "varbinary",
        "uniqueidentifier",
        "timestamp",
        "rowversion",
    ]
    .iter()
    .any(|t| t.eq_ignore_ascii_case(base))
}

/// `OFFSET`/`FETCH` take our own integers inline: some TDS servers (the test peer) refuse
/// parameters there, and integers we computed cannot inject anything. `OFFSET` needs an
/// `ORDER BY`; when [`order_by`] gives none it is `(SELECT NULL)`, which costs no sort: the
/// server reads the rows in its scan order and promises none, so pages may repeat or skip
/// rows (a plain scan of an unchanged table keeps its order in practice).
fn sample_sql(table: &TableInfo, columns: &[String], page: &Page) -> Result<String, DbError> {
    Ok(format!(
        "SELECT {} FROM {} ORDER BY {} OFFSET {} ROWS FETCH NEXT {} ROWS ONLY",
        select_list(table, columns, "")?,
        table_ref(table),
        order_by(table, columns, "").unwrap_or_else(|| "(SELECT NULL)".to_string()),
        page.offset.min(i64::MAX as usize),
        page.limit.saturating_add(1).min(i64::MAX as usize)
    ))
}

/// `key` is the values bound (only whether each is ASCII matters: see [`key_condition`]).
fn lookup_sql(
    table: &TableInfo,
    columns: &[String],
    key_columns: &[String],
    key: &[String],
    limit: usize,
) -> Result<String, DbError> {
    let cond: Vec<String> = key_columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ascii = key.get(i).is_none_or(|v| v.is_ascii());
            key_condition(c, table.column(c), i + 1, ascii)
        })
        .collect();
    let order = order_by(table, columns, "")
        .map(|o| format!(" ORDER BY {o}"))
        .unwrap_or_default();
    Ok(format!(
        "SELECT TOP ({}) {} FROM {} WHERE {}{order}",
        limit.saturating_add(1),
        select_list(table, columns, "")?,
        table_ref(table),
        cond.join(" AND ")
    ))
}

/// Key column `column` (declared as `info` says) equal to the key value bound as `@P{n}`
/// ([`typed_key`] binds it):
///
/// - `char`/`varchar`: the value travels as `nvarchar` (tiberius binds text so), and against
///   a non-Unicode column that makes SQL Server convert the *column* (`CONVERT_IMPLICIT`),
///   which under SQL_* collations turns the index seek into a scan. So the parameter is cast
///   to the column's type instead, and, since that cast turns characters outside the code
///   page into `?` (or cuts a value longer than the column), the cast value must read back
///   as the parameter itself: `[c] = CAST(@P1 AS varchar(10)) AND CAST(CAST(@P1 AS
///   varchar(10)) AS nvarchar(max)) = @P1`. The second test touches no column, so it costs
///   no scan. The cast converts in the database's default collation, whose code page may
///   not be the column's: every code page SQL Server has keeps ASCII as it is, so the cast
///   is used only for an ASCII value (`ascii`); any other value is compared as `nvarchar`
///   (`[c] = @P1`), which is exact in the column's own collation, at the cost of a scan
///   under SQL_* collations.
/// - `real`: ids write a `real` as its shortest `f32` text, bound as `float` it would equal
///   no `real` value but an exact binary fraction, so it is cast to `real`.
/// - `hierarchyid`: ids write it as its bytes (`0x…`, bound as `varbinary`), cast back.
fn key_condition(column: &str, info: Option<&ColumnInfo>, n: usize, ascii: bool) -> String {
    let c = ident(column);
    let declared = info.map(|i| i.data_type.to_ascii_lowercase());
    let declared = declared.as_deref().unwrap_or_default();
    let (base, size) = match declared.split_once('(') {
        Some((base, rest)) => (base.trim(), rest.trim_end_matches(')').trim()),
        None => (declared.trim(), ""),
    };
    match base {
        "char" | "varchar" if ascii => {
            // A declared size is digits or `max` (see `declared_type`); anything else, or no
            // size, is read as `max` rather than a cast that could cut the value.
            let size = if !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) {
                size
            } else {
                "max"
            };
            format!(
                "{c} = CAST(@P{n} AS varchar({size})) \
                 AND CAST(CAST(@P{n} AS varchar({size})) AS nvarchar(max)) = @P{n}"
            )
        }
        "real" => format!("{c} = CAST(@P{n} AS real)"),
        "hierarchyid" => format!("{c} = CAST(@P{n} AS hierarchyid)"),
        _ => format!("{c} = @P{n}"),
    }
}

/// A text column as `LIKE` can take it (`xml` cannot be matched directly); `q` as in
/// [`select_list`].
fn like_operand(table: &TableInfo, column: &str, q: &str) -> String {
    let is_xml = table
        .column(column)
        .is_some_and(|c| c.data_type.eq_ignore_ascii_case("xml"));
    if is_xml {
        format!("CONVERT(nvarchar(max), {q}{})", ident(column))
    } else {
        format!("{q}{}", ident(column))
    }
}

/// `<col> LIKE @Pn ESCAPE '\'` for each keyword and text column, keyword `k` (from 0) bound as
/// `@P{first + k}`.
fn like_tests(req: &SearchRequest<'_>, q: &str, first: usize) -> Vec<String> {
    let mut tests = Vec::with_capacity(req.keywords.len() * req.text_columns.len());
    for k in 0..req.keywords.len() {
        for col in req.text_columns {
            tests.push(format!(
                "{} LIKE @P{} ESCAPE '\\'",
                like_operand(req.table, col, q),
                k + first
            ));
        }
    }
    tests
}

/// Each test as 1 or 0, for summing into a score.
fn score_of(tests: &[String]) -> Vec<String> {
    tests
        .iter()
        .map(|t| format!("CASE WHEN {t} THEN 1 ELSE 0 END"))
        .collect()
}

/// Keyword search without a full-text index: each keyword is a bound, escaped `LIKE` pattern
/// (`@P1`, `@P2`, …) tried on each text column; the score counts the pairs that match.
fn search_sql(req: &SearchRequest<'_>) -> Result<String, DbError> {
    let tests = like_tests(req, "", 1);
    let tiebreak = order_by(req.table, req.columns, "")
        .map(|o| format!(", {o}"))
        .unwrap_or_default();
    Ok(format!(
        "SELECT TOP ({}) {}, ({}) AS [_score] FROM {} WHERE {} ORDER BY [_score] DESC{tiebreak}",
        req.limit,
        select_list(req.table, req.columns, "")?,
        score_of(&tests).join(" + "),
        table_ref(req.table),
        tests.join(" OR ")
    ))
}

/// How one table is searched for keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SearchPlan<'a> {
    /// Bound `LIKE` patterns on every text column ([`search_sql`]).
    Like,
    /// `FREETEXTTABLE` over the table's full-text index ([`full_text_search_sql`]).
    FullText {
        /// The index's key column, joined on `[KEY]`.
        key: &'a str,
        /// The indexed columns this search may read: indexed *and* among the request's text
        /// columns, so a column the scope hides is never searched.
        columns: Vec<&'a str>,
        /// The free text, bound as `@P1`.
        text: String,
    },
}

/// Full-text search when the table has a full-text index over at least one of the text
/// columns the request may search; `LIKE` otherwise.
fn search_plan<'a>(req: &SearchRequest<'a>) -> SearchPlan<'a> {
    let Some(ft) = &req.table.full_text else {
        return SearchPlan::Like;
    };
    let columns: Vec<&str> = ft
        .columns
        .iter()
        .filter(|c| req.text_columns.contains(c))
        .map(String::as_str)
        .collect();
    let text = free_text(req.keywords);
    if columns.is_empty() || text.is_empty() {
        return SearchPlan::Like;
    }
    SearchPlan::FullText {
        key: &ft.key_column,
        columns,
        text,
    }
}

/// The keywords as `FREETEXTTABLE`'s free text: words separated by spaces. Double quotes are
/// dropped (text wholly inside them would turn into one exact phrase); nothing else in free
/// text is syntax, and it travels as a bound parameter.
fn free_text(keywords: &[String]) -> String {
    keywords
        .iter()
        .map(|k| k.replace('"', " "))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keyword search through a full-text index:
///
/// ```sql
/// SELECT TOP (n) t.[…], (1 + <LIKE matches>) AS [_score]
/// FROM [s].[t] AS t
/// JOIN FREETEXTTABLE([s].[t], ([c1], [c2]), @P1, n) AS ft ON t.[key] = ft.[KEY]
/// ORDER BY ft.[RANK] DESC, t.[pk]
/// ```
///
/// `FREETEXTTABLE` finds the best `n` rows by the index (word forms, the thesaurus, no table
/// scan); they come in its `RANK` order. Their score is on the same scale as [`search_sql`]'s,
/// so hits from tables with and without an index merge sensibly: one for being found, plus
/// the keyword/column pairs that match literally (`@P2`, … as `LIKE` patterns), counted on
/// those `n` rows only.
fn full_text_search_sql(
    req: &SearchRequest<'_>,
    key: &str,
    columns: &[&str],
) -> Result<String, DbError> {
    let mut score = vec!["1".to_string()];
    score.extend(score_of(&like_tests(req, "t.", 2)));
    let tiebreak = order_by(req.table, req.columns, "t.")
        .map(|o| format!(", {o}"))
        .unwrap_or_default();
    let table = table_ref(req.table);
    Ok(format!(
        "SELECT TOP ({n}) {}, ({}) AS [_score] FROM {table} AS t \
         JOIN FREETEXTTABLE({table}, ({}), @P1, {n}) AS ft ON t.{} = ft.[KEY] \
         ORDER BY ft.[RANK] DESC{tiebreak}",
        select_list(req.table, req.columns, "t.")?,
        score.join(" + "),
        columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        ident(key),
        n = req.limit,
    ))
}

/// `SET LOCK_TIMEOUT` value: most of the query budget, so a blocked read reports a lock
/// timeout (and keeps its connection) before the client-side timeout discards it.
fn lock_timeout_ms(query_timeout: Duration) -> u64 {
    let ms = query_timeout.as_millis() as u64;
    (ms * 3 / 4).max(100)
}

/// Run once on every new connection, as a plain batch so the settings last for the session.
/// Nothing a client sends can change them later: the guard refuses `SET`, and our own
/// statements set only `ROWCOUNT`.
///
/// - `NOCOUNT ON`: no row-count messages the client would only skip.
/// - `XACT_ABORT ON`: a run-time error ends the batch *and rolls its transaction back* on the
///   server, before our own recovery (`IF @@TRANCOUNT > 0 ROLLBACK`) even runs.
/// - `LOCK_TIMEOUT`: see [`lock_timeout_ms`].
/// - the isolation level (`[[database]] isolation`), stated so every query reads at it whatever
///   the login's or driver's default: `READ COMMITTED` (SQL Server's default; a query's own
///   `NOLOCK` hint, which the guard admits, still reads uncommitted rows and takes no locks),
///   `SNAPSHOT` (each query, inside its own transaction, reads row versions as of its start)
///   or `READ UNCOMMITTED`.
/// - `ROWCOUNT 0`: the state [`MssqlConn::rowcount`] starts from.
/// - `TEXTSIZE`: the server sends at most [`TEXTSIZE_BYTES`] of a `(max)`, `text`, `ntext` or
///   `image` value (not `xml`: see the module docs), so one value cannot make this process
///   hold gigabytes before its cut at [`MAX_VALUE_BYTES`].
///
/// Public so that `examples/tds_bench.rs` sends the peer exactly what the server sends.
pub fn session_setup(query_timeout: Duration, isolation: MssqlIsolation) -> String {
    format!(
        "SET NOCOUNT ON; SET XACT_ABORT ON; SET LOCK_TIMEOUT {}; \
         SET TRANSACTION ISOLATION LEVEL {}; SET ROWCOUNT 0; SET TEXTSIZE {};",
        lock_timeout_ms(query_timeout),
        isolation.sql(),
        TEXTSIZE_BYTES
    )
}

/// What the server sends of one long value: twice [`MAX_VALUE_BYTES`] and a little, so that
/// a value the server cut is longer than the cut here whatever its encoding (an `nvarchar`
/// of ASCII takes two bytes a character on the wire and one in UTF-8) and is reported cut.
pub const TEXTSIZE_BYTES: usize = 2 * MAX_VALUE_BYTES + 16;

// A value the server cut at `TEXTSIZE` holds at least `TEXTSIZE_BYTES / 2` characters
// (UTF-16 units), at least one UTF-8 byte each: more than the cut here, so it is reported.
const _: () = assert!(TEXTSIZE_BYTES / 2 > MAX_VALUE_BYTES);

/// The server-side row cap for a page: `offset + limit + 1` rows (the extra one tells whether
/// more follow), at most `i32::MAX` (what `SET ROWCOUNT` takes).
fn row_cap(page: &Page) -> u32 {
    page.offset
        .saturating_add(page.limit)
        .saturating_add(1)
        .min(i32::MAX as usize) as u32
}

/// The ad-hoc batch: the query inside a transaction that is always rolled back, under the
/// server-side row cap `cap`. `SET ROWCOUNT` is sent only when the session's value (see
/// [`MssqlConn::rowcount`]) differs, and left in place afterwards: with one scope the cap is
/// the same for every first page, so the usual batch is three statements. The query goes on
/// lines of its own so that a trailing `--` comment cannot swallow the rollback.
///
/// Public so that `examples/tds_bench.rs` sends the peer exactly what the server sends.
pub fn adhoc_batch(sql: &str, cap: u32, session_rowcount: Option<u32>) -> String {
    const BEGIN: &str = "BEGIN TRANSACTION;\n";
    const END: &str = "\n;ROLLBACK TRANSACTION;";
    let body = statement_body(sql);
    // Pushed piece by piece into one allocation of the right size: `format!` cost this every
    // query about a thousand instructions more.
    let mut batch = String::with_capacity(32 + BEGIN.len() + body.len() + END.len());
    if session_rowcount != Some(cap) {
        batch.push_str("SET ROWCOUNT ");
        batch.push_str(itoa::Buffer::new().format(cap));
        batch.push_str("; ");
    }
    batch.push_str(BEGIN);
    batch.push_str(body);
    batch.push_str(END);
    batch
}

/// The statements that tell SQL Server who asks (`[[database]] session_context`):
/// `mcp_user`, the signed-in user, `mcp_scope`, the scope's path, and `mcp_client`, the
/// OAuth client id the user signed in through, in the session context
/// (`SESSION_CONTEXT(N'mcp_user')`), each an `N'…'` literal with its quotes doubled, or `NULL`
/// (no sign-in, or outside a tool call). Not read-only: the next caller on the connection
/// sets them again, and a query cannot (the guard refuses `EXEC`).
fn context_statements(asker: &Asker) -> String {
    let literal = |v: &str| {
        if v.is_empty() {
            "NULL".to_string()
        } else {
            format!("N'{}'", v.replace('\'', "''"))
        }
    };
    format!(
        "EXEC sp_set_session_context N'mcp_user', {}; EXEC sp_set_session_context N'mcp_scope', {}; EXEC sp_set_session_context N'mcp_client', {};\n",
        literal(asker.user.as_deref().unwrap_or("")),
        literal(&asker.scope),
        literal(asker.client.as_deref().unwrap_or(""))
    )
}

/// A statement's text without the whitespace and terminating semicolons around it.
fn statement_body(sql: &str) -> &str {
    sql.trim_start()
        .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// A later page of an ad-hoc query that may be paged in SQL ([`Page::pageable_in_sql`]): the
/// query with `OFFSET … FETCH` appended, so the server skips the earlier rows instead of
/// sending them to be dropped here, and fetches one row past the page to tell whether more
/// follow. Left to the reader (`None`) for a first page, and for a query with a comment,
/// where the end of the text may not be the end of its `ORDER BY`.
fn offset_fetch(sql: &str, page: &Page) -> Option<String> {
    if page.offset == 0 || !page.pageable_in_sql || sql.contains("--") || sql.contains("/*") {
        return None;
    }
    let body = statement_body(sql);
    Some(format!(
        "{body}\nOFFSET {} ROWS FETCH NEXT {} ROWS ONLY",
        page.offset,
        page.limit.saturating_add(1)
    ))
}

/// One of our statements (run through sp_executesql), which may return up to `needed` rows.
/// When the row cap an ad-hoc query left on the session could cut it, the statement lifts the
/// cap first; a `SET` inside sp_executesql lasts only for that call (SQL Server restores it
/// when the call returns), so the session keeps the value [`MssqlConn::rowcount`] records.
fn own_statement(sql: &str, needed: u32, session_rowcount: Option<u32>) -> Cow<'_, str> {
    match session_rowcount {
        Some(n) if n == 0 || n >= needed => Cow::Borrowed(sql),
        _ => Cow::Owned(format!("SET ROWCOUNT 0; {sql}")),
    }
}

/// A key value typed for its column. `None` when it cannot equal any value of the column
/// (`abc` for an integer key), so the lookup finds nothing instead of failing to convert.
fn key_param(kind: ValueKind, raw: &str) -> Option<Param> {
    let t = raw.trim();
    match kind {
        ValueKind::Integer => t.parse::<i64>().ok().map(Param::I64),
        // NaN and the infinities are no value of a float column (the server refuses them as
        // parameters), and `1e999` parses as infinity.
        ValueKind::Float => t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Param::F64),
        ValueKind::Boolean => match t.to_ascii_lowercase().as_str() {
            "1" | "true" => Some(Param::Bool(true)),
            "0" | "false" => Some(Param::Bool(false)),
            _ => None,
        },
        // Decimals travel as text and are converted by the server (the column's type has the
        // higher precedence), which keeps them exact; text that is no plain decimal number
        // (`abc`, `inf`, `1e5`, which the server's conversion to numeric refuses) cannot match.
        ValueKind::Decimal => is_decimal_literal(t).then(|| Param::Str(t.to_string())),
        // Bytes as row ids write them (`0x…`); anything else equals no binary value.
        ValueKind::Binary => crate::tools::key_bytes(t).map(Param::Bytes),
        // Dates too (the server's conversion is the authority on date formats).
        _ => Some(Param::Str(raw.to_string())),
    }
}

/// `[+-]digits[.digits]` or `[+-].digits`: what SQL Server converts to `decimal` / `numeric`.
fn is_decimal_literal(t: &str) -> bool {
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !(whole.is_empty() && fraction.is_empty()) && digits(whole) && digits(fraction)
}

/// A key value for a column of declared type `data_type`: GUIDs are checked and bound as
/// `uniqueidentifier`, `hierarchyid` values as bytes; everything else as [`key_param`] says.
/// [`key_condition`] casts some of them to the column's type.
fn typed_key(column: Option<&ColumnInfo>, raw: &str) -> Option<Param> {
    match column {
        Some(c) if c.data_type.eq_ignore_ascii_case("uniqueidentifier") => {
            tiberius::Uuid::parse_str(raw.trim()).ok().map(Param::Guid)
        }
        // Read as its bytes (a CLR type arrives as binary), cast back by `key_condition`.
        Some(c) if c.data_type.eq_ignore_ascii_case("hierarchyid") => {
            crate::tools::key_bytes(raw).map(Param::Bytes)
        }
        // Cast to `real` by `key_condition`: a number past `real`'s range would make the cast
        // overflow (an error) where it can only equal nothing.
        Some(c) if c.data_type.eq_ignore_ascii_case("real") => {
            key_param(c.kind, raw).filter(|p| match p {
                Param::F64(f) => (*f as f32).is_finite(),
                _ => true,
            })
        }
        Some(c) => key_param(c.kind, raw),
        None => key_param(ValueKind::Other, raw),
    }
}

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

const TABLES_SQL: &str = "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM INFORMATION_SCHEMA.TABLES \
     ORDER BY TABLE_SCHEMA, TABLE_NAME";
const COLUMNS_SQL: &str = "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, IS_NULLABLE, \
     CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION \
     FROM INFORMATION_SCHEMA.COLUMNS ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION";
/// Primary keys, then unique constraints, in key order.
const KEYS_SQL: &str = "SELECT s.name, t.name, kc.type, kc.name, c.name, ic.key_ordinal \
     FROM sys.key_constraints kc \
     JOIN sys.tables t ON t.object_id = kc.parent_object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     JOIN sys.index_columns ic ON ic.object_id = kc.parent_object_id AND ic.index_id = kc.unique_index_id \
     JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id \
     WHERE kc.type IN ('PK', 'UQ') \
     ORDER BY s.name, t.name, kc.type, kc.name, ic.key_ordinal";
const FOREIGN_KEYS_SQL: &str = "SELECT fk.name, s.name, t.name, pc.name, rs.name, rt.name, rc.name \
     FROM sys.foreign_keys fk \
     JOIN sys.foreign_key_columns fkc ON fkc.constraint_object_id = fk.object_id \
     JOIN sys.tables t ON t.object_id = fk.parent_object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     JOIN sys.columns pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id \
     JOIN sys.tables rt ON rt.object_id = fk.referenced_object_id \
     JOIN sys.schemas rs ON rs.schema_id = rt.schema_id \
     JOIN sys.columns rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id \
     ORDER BY s.name, t.name, fk.name, fkc.constraint_column_id";
/// Enabled full-text indexes: the table, the index's key column, and each indexed column.
/// Indexed views can carry one too, hence `sys.objects`.
const FULL_TEXT_SQL: &str = "SELECT s.name, o.name, kc.name, c.name \
     FROM sys.fulltext_indexes fi \
     JOIN sys.objects o ON o.object_id = fi.object_id \
     JOIN sys.schemas s ON s.schema_id = o.schema_id \
     JOIN sys.index_columns kic ON kic.object_id = fi.object_id AND kic.index_id = fi.unique_index_id \
          AND kic.is_included_column = 0 \
     JOIN sys.columns kc ON kc.object_id = kic.object_id AND kc.column_id = kic.column_id \
     JOIN sys.fulltext_index_columns fic ON fic.object_id = fi.object_id \
     JOIN sys.columns c ON c.object_id = fic.object_id AND c.column_id = fic.column_id \
     WHERE fi.is_enabled = 1 \
     ORDER BY s.name, o.name, fic.column_id";
/// `MS_Description` extended properties of tables and views (`minor_id` 0) and of their
/// columns: what SSMS's designer, dbt's `persist_docs` and documentation tools write. And, in
/// the same pass, the sensitivity labels SSMS kept as column properties before SQL Server 2019
/// (`sys_sensitivity_label_name`, `sys_information_type_name`).
const DESCRIPTIONS_SQL: &str = "SELECT s.name, o.name, ep.minor_id, c.name, CAST(ep.value AS nvarchar(4000)), ep.name \
     FROM sys.extended_properties ep \
     JOIN sys.objects o ON o.object_id = ep.major_id \
     JOIN sys.schemas s ON s.schema_id = o.schema_id \
     LEFT JOIN sys.columns c ON c.object_id = ep.major_id AND c.column_id = ep.minor_id \
     WHERE ep.class = 1 AND o.type IN ('U', 'V') \
     AND ep.name IN ('MS_Description', 'sys_sensitivity_label_name', 'sys_information_type_name')";
/// The extended properties SSMS kept a column's classification in before SQL Server 2019.
const LEGACY_LABEL: &str = "sys_sensitivity_label_name";
const LEGACY_INFORMATION_TYPE: &str = "sys_information_type_name";
/// Columns classified with SQL Server's Data Discovery & Classification (SQL Server 2019 and
/// Azure SQL): the label, the information type and the rank (`High`, `Critical`, …), any of
/// which may be NULL.
const CLASSIFICATIONS_SQL: &str = "SELECT s.name, o.name, c.name, CAST(sc.label AS nvarchar(128)), \
     CAST(sc.information_type AS nvarchar(128)), CAST(sc.rank_desc AS nvarchar(60)) \
     FROM sys.sensitivity_classifications sc \
     JOIN sys.objects o ON o.object_id = sc.major_id \
     JOIN sys.schemas s ON s.schema_id = o.schema_id \
     JOIN sys.columns c ON c.object_id = sc.major_id AND c.column_id = sc.minor_id \
     WHERE sc.class = 1 AND o.type IN ('U', 'V')";
/// Columns under dynamic data masking (SQL Server 2016+, Azure SQL) and their masking
/// functions, with whether this login may read them unmasked (`UNMASK`, which `db_owner` and
/// `CONTROL` imply): then it reads the data, and no column is masked for it.
const MASKED_SQL: &str = "SELECT s.name, t.name, c.name, c.masking_function, \
     CAST(HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'UNMASK') AS int) \
     FROM sys.masked_columns c \
     JOIN sys.tables t ON t.object_id = c.object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     WHERE c.is_masked = 1";
/// Masked columns this login may read unmasked by a column-level grant (SQL Server 2022's
/// granular `UNMASK`, on a column, table or schema), which the database-level check of
/// [`MASKED_SQL`] does not see. A server without granular `UNMASK` fails this query, and the
/// columns stay described as masked (over-warning, never under).
const UNMASKED_SQL: &str = "SELECT s.name, t.name, c.name \
     FROM sys.masked_columns c \
     JOIN sys.tables t ON t.object_id = c.object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     WHERE c.is_masked = 1 AND HAS_PERMS_BY_NAME(QUOTENAME(s.name) + '.' + QUOTENAME(t.name), \
     'OBJECT', 'UNMASK', c.name, 'COLUMN') = 1";
/// Columns under Always Encrypted (SQL Server 2016+, Azure SQL) and their encryption type
/// (`DETERMINISTIC`, `RANDOMIZED`), in tables and in views that read them.
const ENCRYPTED_SQL: &str = "SELECT s.name, o.name, c.name, c.encryption_type_desc \
     FROM sys.columns c \
     JOIN sys.objects o ON o.object_id = c.object_id \
     JOIN sys.schemas s ON s.schema_id = o.schema_id \
     WHERE c.encryption_type IS NOT NULL AND o.type IN ('U', 'V')";
/// System-versioned (temporal) tables and their history tables (SQL Server 2016+, Azure SQL).
const TEMPORAL_SQL: &str = "SELECT s.name, t.name, hs.name, h.name \
     FROM sys.tables t \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     JOIN sys.tables h ON h.object_id = t.history_table_id \
     JOIN sys.schemas hs ON hs.schema_id = h.schema_id \
     WHERE t.temporal_type = 2";
/// Synonyms, and the table or view of this database each stands for: schema and name of the
/// base object, NULL for one in another database or on another server (a three- or four-part
/// `base_object_name`), whose rules this catalog cannot judge, or one that is not there.
const SYNONYMS_SQL: &str = "SELECT s.name, sy.name, bs.name, b.name \
     FROM sys.synonyms sy \
     JOIN sys.schemas s ON s.schema_id = sy.schema_id \
     LEFT JOIN sys.objects b ON b.object_id = CASE WHEN PARSENAME(sy.base_object_name, 4) IS NULL \
     AND (PARSENAME(sy.base_object_name, 3) IS NULL \
     OR PARSENAME(sy.base_object_name, 3) = DB_NAME()) \
     THEN OBJECT_ID(sy.base_object_name) END \
     LEFT JOIN sys.schemas bs ON bs.schema_id = b.schema_id";
/// Enabled CHECK constraints of tables, as SQL Server keeps their text (`([Qty]>(0))`).
const CHECKS_SQL: &str = "SELECT s.name, t.name, cc.definition \
     FROM sys.check_constraints cc \
     JOIN sys.tables t ON t.object_id = cc.parent_object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     WHERE cc.is_disabled = 0 \
     ORDER BY s.name, t.name, cc.name";
/// The database's default collation, which `'…'` literals take.
const COLLATION_SQL: &str =
    "SELECT CONVERT(nvarchar(128), DATABASEPROPERTYEX(DB_NAME(), 'Collation'))";
const ROW_ESTIMATES_SQL: &str = "SELECT s.name, t.name, SUM(p.rows) \
     FROM sys.partitions p \
     JOIN sys.tables t ON t.object_id = p.object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     WHERE p.index_id IN (0, 1) GROUP BY s.name, t.name";

/// Rows of an optional catalog query: a server error (view missing, no permission) means
/// "nothing known"; a broken connection is still an error.
async fn optional_rows(
    conn: &mut MssqlConn,
    sql: &str,
    what: &str,
    ctx: &ErrorContext,
) -> Result<Vec<Vec<Value>>, DbError> {
    match fetch_all(conn, sql).await {
        Ok(rows) => Ok(rows),
        Err(e) if !is_fatal(&e) => {
            tracing::info!(error = %e, "SQL Server catalog: cannot read {what}");
            Ok(Vec::new())
        }
        Err(e) => Err(query_error(&e, ctx)),
    }
}

async fn read_catalog(conn: &mut MssqlConn, ctx: &ErrorContext) -> Result<Catalog, DbError> {
    // An ad-hoc query's row cap would cut the catalog short (catalog loads are rare, so the
    // extra round trip does not matter).
    if conn.rowcount != Some(0) {
        fetch_all(conn, "SET ROWCOUNT 0")
            .await
            .map_err(|e| query_error(&e, ctx))?;
        conn.rowcount = Some(0);
    }
    let tables = fetch_all(conn, TABLES_SQL)
        .await
        .map_err(|e| query_error(&e, ctx))?;
    let columns = fetch_all(conn, COLUMNS_SQL)
        .await
        .map_err(|e| query_error(&e, ctx))?;
    let keys = optional_rows(
        conn,
        KEYS_SQL,
        "key constraints (ids fall back to unique-looking columns, marked heuristic)",
        ctx,
    )
    .await?;
    let fks = optional_rows(
        conn,
        FOREIGN_KEYS_SQL,
        "foreign keys (fetch lists no related records)",
        ctx,
    )
    .await?;
    let estimates = optional_rows(
        conn,
        ROW_ESTIMATES_SQL,
        "row estimates (tables are listed without sizes)",
        ctx,
    )
    .await?;
    let full_text = optional_rows(
        conn,
        FULL_TEXT_SQL,
        "full-text indexes (search uses LIKE)",
        ctx,
    )
    .await?;
    let descriptions = optional_rows(
        conn,
        DESCRIPTIONS_SQL,
        "descriptions (MS_Description; tables and columns are described without them)",
        ctx,
    )
    .await?;
    let collation = optional_rows(
        conn,
        COLLATION_SQL,
        "the database's collation (a '…' literal beyond Latin-1 gets a note even if it is UTF-8)",
        ctx,
    )
    .await?;
    let checks = optional_rows(
        conn,
        CHECKS_SQL,
        "check constraints (tables are described without them)",
        ctx,
    )
    .await?;
    let classifications = optional_rows(
        conn,
        CLASSIFICATIONS_SQL,
        "sensitivity classifications (columns are described without them)",
        ctx,
    )
    .await?;
    let temporal = optional_rows(
        conn,
        TEMPORAL_SQL,
        "system-versioned tables (FOR SYSTEM_TIME is refused)",
        ctx,
    )
    .await?;
    let masked = optional_rows(
        conn,
        MASKED_SQL,
        "masked columns (columns are described without their masking)",
        ctx,
    )
    .await?;
    // Only where some column is read masked: a login with database-level UNMASK reads them all.
    let unmasked = if masked.iter().any(|r| int(r.get(4)) != Some(1)) {
        optional_rows(
            conn,
            UNMASKED_SQL,
            "column-level UNMASK grants (masked columns are described as masked)",
            ctx,
        )
        .await?
    } else {
        Vec::new()
    };
    let encrypted = optional_rows(
        conn,
        ENCRYPTED_SQL,
        "Always Encrypted columns (their ciphertext is described as text, and searching them fails)",
        ctx,
    )
    .await?;
    let synonyms = optional_rows(
        conn,
        SYNONYMS_SQL,
        "synonyms (under access rules a query naming one is refused)",
        ctx,
    )
    .await?;
    let mut catalog = build_catalog(CatalogRows {
        tables: &tables,
        columns: &columns,
        keys: &keys,
        fks: &fks,
        estimates: &estimates,
        full_text: &full_text,
        descriptions: &descriptions,
        checks: &checks,
        classifications: &classifications,
        temporal: &temporal,
        masked: &masked,
        unmasked: &unmasked,
        encrypted: &encrypted,
        synonyms: &synonyms,
    });
    catalog.varchar_utf8 = collation
        .first()
        .and_then(|r| r.first())
        .is_some_and(|c| is_utf8_collation(&text(Some(c))));
    Ok(catalog)
}

/// A classification as one line: the label, then the information type and the rank in
/// brackets (`Confidential - GDPR (Contact Info, rank High)`); `None` when all are empty.
fn sensitivity_text(label: &str, information_type: &str, rank: &str) -> Option<String> {
    let (label, information_type, rank) = (label.trim(), information_type.trim(), rank.trim());
    let rank = match rank {
        "" | "NONE" => String::new(),
        r => format!("rank {}", title_case(r)),
    };
    let details: Vec<&str> = [information_type, rank.as_str()]
        .into_iter()
        .filter(|d| !d.is_empty())
        .collect();
    let head = if label.is_empty() {
        "classified"
    } else {
        label
    };
    if label.is_empty() && details.is_empty() {
        return None;
    }
    Some(if details.is_empty() {
        head.to_string()
    } else {
        format!("{head} ({})", details.join(", "))
    })
}

/// `HIGH` as `High`.
fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect()
    })
}

/// SQL Server 2019's UTF-8 collations end in `_UTF8` (e.g. `Latin1_General_100_CI_AS_SC_UTF8`).
fn is_utf8_collation(name: &str) -> bool {
    name.len() >= 5
        && name
            .get(name.len() - 5..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case("_utf8"))
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::Text(s)) | Some(Value::Decimal(s)) => s.to_string(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.display(),
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::Int(i)) => Some(*i),
        Some(Value::Float(f)) if f.fract() == 0.0 => Some(*f as i64),
        Some(Value::Decimal(s)) | Some(Value::Text(s)) => s.split('.').next()?.parse().ok(),
        _ => None,
    }
}

/// The rows of each catalog query, as [`read_catalog`] reads them.
#[derive(Default, Clone, Copy)]
struct CatalogRows<'a> {
    tables: &'a [Vec<Value>],
    columns: &'a [Vec<Value>],
    keys: &'a [Vec<Value>],
    fks: &'a [Vec<Value>],
    estimates: &'a [Vec<Value>],
    full_text: &'a [Vec<Value>],
    descriptions: &'a [Vec<Value>],
    checks: &'a [Vec<Value>],
    classifications: &'a [Vec<Value>],
    temporal: &'a [Vec<Value>],
    masked: &'a [Vec<Value>],
    unmasked: &'a [Vec<Value>],
    encrypted: &'a [Vec<Value>],
    synonyms: &'a [Vec<Value>],
}

/// Assembles the catalog from the rows of the catalog queries (a pure function, so canned
/// rows can test what the TDS peer cannot serve: keys and foreign keys).
fn build_catalog(rows: CatalogRows<'_>) -> Catalog {
    let CatalogRows {
        tables,
        columns,
        keys,
        fks,
        estimates,
        full_text,
        descriptions,
        checks,
        classifications,
        temporal,
        masked,
        unmasked,
        encrypted,
        synonyms,
    } = rows;
    let mut out: Vec<TableInfo> = tables
        .iter()
        .map(|r| TableInfo {
            schema: text(r.first()),
            name: text(r.get(1)),
            kind: if text(r.get(2)).eq_ignore_ascii_case("VIEW") {
                "view"
            } else {
                "table"
            },
            ..TableInfo::default()
        })
        .collect();
    // Every catalog view spells a name the same way, so exact lookups suffice (and keep
    // `Orders` and `orders` apart on a case-sensitive server). Large databases have hundreds
    // of thousands of columns: an index, not a scan per row.
    let index: std::collections::HashMap<(String, String), usize> = out
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.schema.clone(), t.name.clone()), i))
        .collect();
    let find = |schema: &str, name: &str| -> Option<usize> {
        index.get(&(schema.to_string(), name.to_string())).copied()
    };
    for r in columns {
        let Some(i) = find(&text(r.first()), &text(r.get(1))) else {
            continue;
        };
        let base = text(r.get(3)).to_ascii_lowercase();
        out[i].columns.push(ColumnInfo::new(
            text(r.get(2)),
            declared_type(
                &base,
                int(r.get(5)),
                int(r.get(6)),
                int(r.get(7)),
                int(r.get(8)),
            ),
            kind_of(&base),
            !text(r.get(4)).eq_ignore_ascii_case("NO"),
        ));
    }
    for r in checks {
        if let Some(i) = find(&text(r.first()), &text(r.get(1)))
            && let Some(check) = check_text(&text(r.get(2)))
            && out[i].checks.len() < MAX_CHECKS
        {
            out[i].checks.push(check);
        }
    }
    // Classifications kept the pre-2019 way, as (label, information type) per column: used
    // where sys.sensitivity_classifications says nothing of the column.
    let mut legacy: std::collections::BTreeMap<(usize, String), (String, String)> =
        Default::default();
    // Descriptions: the table's at minor_id 0, else its column's.
    for r in descriptions {
        let Some(i) = find(&text(r.first()), &text(r.get(1))) else {
            continue;
        };
        let property = text(r.get(5));
        if property == LEGACY_LABEL || property == LEGACY_INFORMATION_TYPE {
            let entry = legacy.entry((i, text(r.get(3)))).or_default();
            if property == LEGACY_LABEL {
                entry.0 = text(r.get(4));
            } else {
                entry.1 = text(r.get(4));
            }
            continue;
        }
        let Some(description) = description_text(&text(r.get(4))) else {
            continue;
        };
        if int(r.get(2)) == Some(0) {
            out[i].description = Some(description);
            continue;
        }
        let column = text(r.get(3));
        if let Some(c) = out[i].columns.iter_mut().find(|c| c.name == column) {
            c.description = Some(description);
        }
    }
    for r in classifications {
        let Some(i) = find(&text(r.first()), &text(r.get(1))) else {
            continue;
        };
        let column = text(r.get(2));
        if let Some(c) = out[i].columns.iter_mut().find(|c| c.name == column) {
            c.sensitivity = sensitivity_text(&text(r.get(3)), &text(r.get(4)), &text(r.get(5)));
        }
    }
    for ((i, column), (label, information_type)) in legacy {
        if let Some(c) = out[i]
            .columns
            .iter_mut()
            .find(|c| c.name == column && c.sensitivity.is_none())
        {
            c.sensitivity = sensitivity_text(&label, &information_type, "");
        }
    }
    for r in masked {
        // Read unmasked by this login (database-wide, or by a grant on the column, its table
        // or schema): nothing to say.
        let granted = |u: &Vec<Value>| (0..3).all(|k| text(u.get(k)) == text(r.get(k)));
        if int(r.get(4)) == Some(1) || unmasked.iter().any(granted) {
            continue;
        }
        let Some(i) = find(&text(r.first()), &text(r.get(1))) else {
            continue;
        };
        let column = text(r.get(2));
        if let Some(c) = out[i].columns.iter_mut().find(|c| c.name == column) {
            let function = text(r.get(3));
            c.masked = Some(if function.trim().is_empty() {
                "default()".to_string()
            } else {
                function.trim().to_string()
            });
        }
    }
    // Always Encrypted: what arrives is ciphertext, so the column is read as bytes (never a
    // text to search or a row's title).
    for r in encrypted {
        if let Some(i) = find(&text(r.first()), &text(r.get(1)))
            && let Some(c) = out[i].columns.iter_mut().find(|c| c.name == text(r.get(2)))
        {
            c.kind = ValueKind::Binary;
            c.encrypted = Some(text(r.get(3)).trim().to_ascii_lowercase());
        }
    }
    for r in temporal {
        if let Some(i) = find(&text(r.first()), &text(r.get(1))) {
            out[i].history = Some(HistoryTable {
                schema: text(r.get(2)),
                name: text(r.get(3)),
            });
        }
    }
    // Keys: the primary key if there is one, else the first unique constraint.
    let mut chosen: Vec<Option<(String, String)>> = vec![None; out.len()];
    for r in keys {
        let Some(i) = find(&text(r.first()), &text(r.get(1))) else {
            continue;
        };
        let kind = text(r.get(2)).trim().to_ascii_uppercase();
        let name = text(r.get(3));
        let column = text(r.get(4));
        match &chosen[i] {
            None => {
                chosen[i] = Some((kind, name));
                out[i].primary_key = vec![column];
            }
            Some((k, n)) if *k == kind && *n == name => out[i].primary_key.push(column),
            Some((k, _)) if k == "UQ" && kind == "PK" => {
                chosen[i] = Some((kind, name));
                out[i].primary_key = vec![column];
            }
            Some(_) => {}
        }
    }
    let mut last_fk: Option<(usize, String)> = None;
    for r in fks {
        let Some(i) = find(&text(r.get(1)), &text(r.get(2))) else {
            continue;
        };
        let name = text(r.first());
        let (from, ref_schema, ref_table, to) = (
            text(r.get(3)),
            text(r.get(4)),
            text(r.get(5)),
            text(r.get(6)),
        );
        let continues = last_fk.as_ref() == Some(&(i, name.clone()));
        if continues && let Some(fk) = out[i].foreign_keys.last_mut() {
            fk.columns.push(from);
            fk.ref_columns.push(to);
            continue;
        }
        out[i].foreign_keys.push(ForeignKey {
            columns: vec![from],
            ref_schema,
            ref_table,
            ref_columns: vec![to],
        });
        last_fk = Some((i, name));
    }
    for r in estimates {
        if let Some(i) = find(&text(r.first()), &text(r.get(1))) {
            out[i].row_estimate = int(r.get(2));
        }
    }
    for r in full_text {
        let Some(i) = find(&text(r.first()), &text(r.get(1))) else {
            continue;
        };
        let (key_column, column) = (text(r.get(2)), text(r.get(3)));
        if key_column.is_empty() || column.is_empty() {
            continue;
        }
        out[i]
            .full_text
            .get_or_insert_with(|| FullTextIndex {
                key_column,
                columns: Vec::new(),
            })
            .columns
            .push(column);
    }
    for t in &mut out {
        if t.primary_key.is_empty()
            && let Some(c) = heuristic_key(&t.name, &t.columns)
        {
            t.primary_key = vec![c];
            t.key_is_heuristic = true;
        }
    }
    drop_encrypted_keys(&mut out);
    out.sort_by(|a, b| {
        (a.schema.to_lowercase(), a.name.to_lowercase())
            .cmp(&(b.schema.to_lowercase(), b.name.to_lowercase()))
    });
    let mut synonyms: Vec<Synonym> = synonyms
        .iter()
        .map(|r| {
            let (base_schema, base_name) = (text(r.get(2)), text(r.get(3)));
            Synonym {
                schema: text(r.first()),
                name: text(r.get(1)),
                base: (!base_schema.is_empty() && !base_name.is_empty())
                    .then_some((base_schema, base_name)),
            }
        })
        .collect();
    synonyms.sort_by(|a, b| {
        (a.schema.to_lowercase(), a.name.to_lowercase())
            .cmp(&(b.schema.to_lowercase(), b.name.to_lowercase()))
    });
    Catalog {
        tables: out,
        varchar_utf8: false,
        synonyms,
    }
}

/// Keys and foreign keys through Always Encrypted columns are dropped: looking a row up by
/// one compares the column with a value, which takes the column master key this server does
/// not hold. Such a table has no row ids (its rows get `sql:` ids), and no related records
/// are followed through such a foreign key.
fn drop_encrypted_keys(tables: &mut [TableInfo]) {
    let encrypted: std::collections::HashSet<(String, String, String)> = tables
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .filter(|c| c.encrypted.is_some())
                .map(|c| (t.schema.clone(), t.name.clone(), c.name.clone()))
        })
        .collect();
    if encrypted.is_empty() {
        return;
    }
    let is_encrypted = |schema: &str, table: &str, column: &str| {
        encrypted.contains(&(schema.to_string(), table.to_string(), column.to_string()))
    };
    for t in tables.iter_mut() {
        if t.primary_key
            .iter()
            .any(|k| is_encrypted(&t.schema, &t.name, k))
        {
            t.primary_key.clear();
            t.key_is_heuristic = false;
        }
        let (schema, name) = (t.schema.clone(), t.name.clone());
        t.foreign_keys.retain(|fk| {
            !fk.columns.iter().any(|c| is_encrypted(&schema, &name, c))
                && !fk
                    .ref_columns
                    .iter()
                    .any(|c| is_encrypted(&fk.ref_schema, &fk.ref_table, c))
        });
    }
}

/// The documented fallback key for a table without a declared one: a column named `Id`,
/// `<Table>Id` or `<Table>_Id`, trying the table name and its singular, case-insensitively.
fn heuristic_key(table: &str, columns: &[ColumnInfo]) -> Option<String> {
    let mut names = vec![table.to_lowercase()];
    if let Some(s) = singular(table) {
        names.push(s.to_lowercase());
    }
    let mut wanted = vec!["id".to_string()];
    for n in &names {
        wanted.push(format!("{n}id"));
        wanted.push(format!("{n}_id"));
    }
    wanted.iter().find_map(|w| {
        columns
            .iter()
            .find(|c| c.name.to_lowercase() == *w)
            .map(|c| c.name.clone())
    })
}

/// English singular of a plural table name (`Categories` → `Category`, `Boxes` → `Box`,
/// `Orders` → `Order`), or `None` when it does not look plural.
fn singular(name: &str) -> Option<String> {
    // ASCII lower-casing keeps byte offsets equal, so the suffix can be cut from `name`.
    let lower = name.to_ascii_lowercase();
    let cut = |n: usize| {
        name.get(..name.len().checked_sub(n)?)
            .filter(|s| !s.is_empty())
    };
    if lower.ends_with("ies") {
        return cut(3).map(|stem| format!("{stem}y"));
    }
    if ["sses", "xes", "zes", "ches", "shes"]
        .iter()
        .any(|suffix| lower.ends_with(suffix))
    {
        return cut(2).map(str::to_string);
    }
    if lower.ends_with('s') && !lower.ends_with("ss") {
        return cut(1).map(str::to_string);
    }
    None
}

/// Broad kind of a SQL Server type name (as `INFORMATION_SCHEMA.COLUMNS.DATA_TYPE` spells it).
fn kind_of(data_type: &str) -> ValueKind {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "int" | "bigint" => ValueKind::Integer,
        "bit" => ValueKind::Boolean,
        "decimal" | "numeric" | "money" | "smallmoney" => ValueKind::Decimal,
        "float" | "real" => ValueKind::Float,
        "char" | "varchar" | "nchar" | "nvarchar" | "text" | "ntext" | "xml" | "sysname" => {
            ValueKind::Text
        }
        "date" | "time" | "datetime" | "datetime2" | "smalldatetime" | "datetimeoffset" => {
            ValueKind::Temporal
        }
        "binary" | "varbinary" | "image" | "timestamp" | "rowversion" => ValueKind::Binary,
        // uniqueidentifier, sql_variant, hierarchyid, geography, geometry, user types.
        _ => ValueKind::Other,
    }
}

/// The declared type as SQL Server writes it: `nvarchar(100)`, `varchar(max)`,
/// `decimal(10,2)`, `datetime2(7)`.
fn declared_type(
    base: &str,
    max_len: Option<i64>,
    precision: Option<i64>,
    scale: Option<i64>,
    dt_precision: Option<i64>,
) -> String {
    match base {
        "char" | "varchar" | "nchar" | "nvarchar" | "binary" | "varbinary" => match max_len {
            Some(-1) => format!("{base}(max)"),
            Some(n) => format!("{base}({n})"),
            None => base.to_string(),
        },
        "decimal" | "numeric" => match (precision, scale) {
            (Some(p), Some(s)) => format!("{base}({p},{s})"),
            _ => base.to_string(),
        },
        "datetime2" | "time" | "datetimeoffset" => match dt_precision {
            Some(p) => format!("{base}({p})"),
            None => base.to_string(),
        },
        _ => base.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// Type name of a result column (tiberius reports the wire type, not lengths).
fn type_name(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Null => "null",
        ColumnType::Bit | ColumnType::Bitn => "bit",
        ColumnType::Int1 => "tinyint",
        ColumnType::Int2 => "smallint",
        ColumnType::Int4 | ColumnType::Intn => "int",
        ColumnType::Int8 => "bigint",
        ColumnType::Datetime4 => "smalldatetime",
        ColumnType::Float4 => "real",
        ColumnType::Float8 | ColumnType::Floatn => "float",
        ColumnType::Money => "money",
        ColumnType::Money4 => "smallmoney",
        ColumnType::Datetime | ColumnType::Datetimen => "datetime",
        ColumnType::Guid => "uniqueidentifier",
        ColumnType::Decimaln => "decimal",
        ColumnType::Numericn => "numeric",
        ColumnType::Daten => "date",
        ColumnType::Timen => "time",
        ColumnType::Datetime2 => "datetime2",
        ColumnType::DatetimeOffsetn => "datetimeoffset",
        ColumnType::BigVarBin => "varbinary",
        ColumnType::BigVarChar => "varchar",
        ColumnType::BigBinary => "binary",
        ColumnType::BigChar => "char",
        ColumnType::NVarchar => "nvarchar",
        ColumnType::NChar => "nchar",
        ColumnType::Xml => "xml",
        ColumnType::Udt => "udt",
        ColumnType::Text => "text",
        ColumnType::Image => "image",
        ColumnType::NText => "ntext",
        ColumnType::SSVariant => "sql_variant",
    }
}

/// About how many bytes a value took on the wire (for the drain's budget).
fn data_size(d: &ColumnData<'_>) -> usize {
    match d {
        ColumnData::String(Some(s)) => s.len(),
        ColumnData::Binary(Some(b)) => b.len(),
        ColumnData::Xml(Some(x)) => x.as_ref().as_ref().len(),
        _ => 8,
    }
}

/// A text value cut at [`MAX_VALUE_BYTES`], and whether it was.
fn text_value(v: Option<Cow<'_, str>>) -> (Value, bool) {
    match v {
        None => (Value::Null, false),
        Some(s) if s.len() <= MAX_VALUE_BYTES => (Value::text(s.into_owned()), false),
        Some(s) => (Value::text(cut_text(&s).0), true),
    }
}

/// Decodes one value; the flag says a text or binary value was cut at [`MAX_VALUE_BYTES`].
fn decode(data: ColumnData<'static>, column: ColumnType) -> (Value, bool) {
    let v = match data {
        ColumnData::U8(v) => v.map(|i| Value::Int(i64::from(i))),
        ColumnData::I16(v) => v.map(|i| Value::Int(i64::from(i))),
        ColumnData::I32(v) => v.map(|i| Value::Int(i64::from(i))),
        ColumnData::I64(v) => v.map(Value::Int),
        // `real` as the shortest decimal that reads back as the same f32 (0.1, not 0.10000000149).
        ColumnData::F32(v) => {
            v.map(|f| Value::Float(f.to_string().parse().unwrap_or(f64::from(f))))
        }
        ColumnData::F64(v) => v.map(|f| match column {
            ColumnType::Money | ColumnType::Money4 => Value::decimal(money_text(f)),
            _ => Value::Float(f),
        }),
        ColumnData::Bit(v) => v.map(Value::Bool),
        ColumnData::String(v) => return text_value(v),
        ColumnData::Guid(v) => v.map(|g| Value::text(g.to_string().to_ascii_uppercase())),
        ColumnData::Binary(v) => {
            return match v {
                None => (Value::Null, false),
                Some(b) => {
                    let cut = b.len() > MAX_VALUE_BYTES;
                    let bytes = match b {
                        Cow::Borrowed(b) => cut_bytes(b).0.to_vec(),
                        Cow::Owned(mut b) => {
                            b.truncate(MAX_VALUE_BYTES);
                            // Give back the rest of a value of up to `TEXTSIZE`.
                            b.shrink_to_fit();
                            b
                        }
                    };
                    (Value::Bytes(bytes), cut)
                }
            };
        }
        ColumnData::Numeric(v) => v.map(|n| Value::decimal(decimal_text(n.value(), n.scale()))),
        ColumnData::Xml(v) => {
            return text_value(v.map(|x| Cow::Owned(x.into_owned().into_string())));
        }
        ColumnData::DateTime(v) => {
            v.map(|d| Value::text(datetime_text(d.days(), d.seconds_fragments())))
        }
        ColumnData::SmallDateTime(v) => {
            v.map(|d| Value::text(smalldatetime_text(d.days(), d.seconds_fragments())))
        }
        ColumnData::Time(v) => v.map(|t| Value::text(time_text(t.increments(), t.scale()))),
        ColumnData::Date(v) => {
            v.map(|d| Value::text(date_text(i64::from(d.days()) - DAYS_0001_TO_1970)))
        }
        ColumnData::DateTime2(v) => v.map(|d| {
            Value::text(datetime2_text(
                i64::from(d.date().days()),
                d.time().increments(),
                d.time().scale(),
            ))
        }),
        ColumnData::DateTimeOffset(v) => v.map(|d| {
            Value::text(datetimeoffset_text(
                i64::from(d.datetime2().date().days()),
                d.datetime2().time().increments(),
                d.datetime2().time().scale(),
                d.offset(),
            ))
        }),
    };
    (v.unwrap_or(Value::Null), false)
}

/// Days from 0001-01-01 (the `date`/`datetime2` epoch) to 1970-01-01.
const DAYS_0001_TO_1970: i64 = 719_162;
/// Days from 1900-01-01 (the `datetime`/`smalldatetime` epoch) to 1970-01-01.
const DAYS_1900_TO_1970: i64 = 25_567;

/// `value / 10^scale` written exactly, keeping trailing zeros (`1230, 2` → `12.30`).
fn decimal_text(value: i128, scale: u8) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Money as four-place decimal text. tiberius gives the scaled integer `s` as
/// `s as f64 / 10^4`. Below ±2^39 (about ±549 billion) the f64 spacing is finer than 0.0001,
/// so exactly one integer gives back `f` that way; `f * 10^4` rounded lands within one of
/// it (the two roundings can add up to more than a half: 376920091028.4025 gives …4026), so
/// the neighbours are tried too. Past that bound several amounts share one f64 and the
/// nearest is shown (the tools' own statements cast money to `decimal(19,4)`, exact at any
/// size; only ad-hoc queries read money this way).
fn money_text(f: f64) -> String {
    let r = (f * 10_000.0).round() as i128;
    let exact = [r, r - 1, r + 1]
        .into_iter()
        .find(|&c| c as f64 / 10_000.0 == f)
        .unwrap_or(r);
    decimal_text(exact, 4)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), as `YYYY-MM-DD`.
fn date_text(days_since_1970: i64) -> String {
    let z = days_since_1970 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `HH:MM:SS[.fraction]` from `increments` of 10^-scale seconds since midnight.
fn time_text(increments: u64, scale: u8) -> String {
    let per_sec = 10u64.pow(u32::from(scale.min(9)));
    let secs = increments / per_sec;
    let frac = increments % per_sec;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if scale == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!(
            "{h:02}:{m:02}:{s:02}.{frac:0width$}",
            width = scale as usize
        )
    }
}

fn datetime2_text(days_since_0001: i64, increments: u64, scale: u8) -> String {
    format!(
        "{}T{}",
        date_text(days_since_0001 - DAYS_0001_TO_1970),
        time_text(increments, scale)
    )
}

/// `datetimeoffset` arrives as UTC plus an offset in minutes; shown as local time with offset.
fn datetimeoffset_text(
    days_since_0001: i64,
    increments: u64,
    scale: u8,
    offset_min: i16,
) -> String {
    let per_sec = 10i128.pow(u32::from(scale.min(9)));
    let per_day = 86_400 * per_sec;
    let total = i128::from(days_since_0001) * per_day
        + i128::from(increments)
        + i128::from(offset_min) * 60 * per_sec;
    let days = total.div_euclid(per_day) as i64;
    let incr = total.rem_euclid(per_day) as u64;
    let sign = if offset_min < 0 { '-' } else { '+' };
    let abs = offset_min.unsigned_abs();
    format!(
        "{}{sign}{:02}:{:02}",
        datetime2_text(days, incr, scale),
        abs / 60,
        abs % 60
    )
}

/// `datetime`: days since 1900-01-01 and 1/300 s ticks, shown to the millisecond as SQL Server
/// rounds them (.000, .003, .007).
fn datetime_text(days_since_1900: i32, ticks: u32) -> String {
    let ms = (u64::from(ticks) * 10 + 1) / 3;
    format!(
        "{}T{}",
        date_text(i64::from(days_since_1900) - DAYS_1900_TO_1970),
        time_text(ms, 3)
    )
}

/// `smalldatetime`: days since 1900-01-01 and minutes since midnight.
fn smalldatetime_text(days_since_1900: u16, minutes: u16) -> String {
    format!(
        "{}T{:02}:{:02}:00",
        date_text(i64::from(days_since_1900) - DAYS_1900_TO_1970),
        minutes / 60,
        minutes % 60
    )
}

// ---------------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Backend for MssqlBackend {
    fn dialect(&self) -> SqlDialect {
        SqlDialect::MsSql
    }

    fn kind(&self) -> &'static str {
        "mssql"
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, DbError> {
        self.catalog_within(CATALOG_TTL, false).await
    }

    async fn catalog_after_miss(&self) -> Result<Arc<Catalog>, DbError> {
        self.catalog_within(CATALOG_RECHECK, true).await
    }

    async fn query(&self, sql: &str, page: Page) -> Result<RowSet, DbError> {
        let (sql, page) = match offset_fetch(sql, &page) {
            Some(paged) => (paged, Page { offset: 0, ..page }),
            None => (sql.to_string(), page),
        };
        self.run(Statement {
            sql,
            params: Vec::new(),
            page,
            adhoc: true,
        })
        .await
    }

    async fn sample(
        &self,
        table: &TableInfo,
        columns: &[String],
        page: Page,
    ) -> Result<RowSet, DbError> {
        self.run(Statement {
            sql: sample_sql(table, columns, &page)?,
            params: Vec::new(),
            page: Page { offset: 0, ..page },
            adhoc: false,
        })
        .await
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
        let limit = page.limit;
        let mut params = Vec::with_capacity(key.len());
        for (col, raw) in key_columns.iter().zip(key) {
            match typed_key(table.column(col), raw) {
                Some(p) => params.push(p),
                None => return Ok(RowSet::default()),
            }
        }
        self.run(Statement {
            sql: lookup_sql(table, columns, key_columns, key, limit)?,
            params,
            page: Page { offset: 0, ..page },
            adhoc: false,
        })
        .await
    }

    async fn search(&self, req: SearchRequest<'_>) -> Result<RowSet, DbError> {
        if req.keywords.is_empty() || req.text_columns.is_empty() || req.limit == 0 {
            return Ok(RowSet::default());
        }
        let page = Page::rows(0, req.limit);
        let patterns = || req.keywords.iter().map(|k| Param::Str(like_pattern(k)));
        if let SearchPlan::FullText { key, columns, text } = search_plan(&req) {
            let stmt = Statement {
                sql: full_text_search_sql(&req, key, &columns)?,
                params: std::iter::once(Param::Str(text))
                    .chain(patterns())
                    .collect(),
                page: page.clone(),
                adhoc: false,
            };
            match self.run(stmt).await {
                Ok(rs) => return Ok(rs),
                // The index was dropped or disabled since the catalog was read, its catalog is
                // offline, the login may not use it, …: LIKE still finds the rows.
                Err(DbError::Sql(e)) => {
                    tracing::warn!(table = %req.table.qualified(), error = %e, "full-text search failed; searching with LIKE instead");
                }
                Err(e) => return Err(e),
            }
        }
        self.run(Statement {
            sql: search_sql(&req)?,
            params: patterns().collect(),
            page,
            adhoc: false,
        })
        .await
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        Some(MssqlBackend::pool_stats(self))
    }

    fn reads_for_asker(&self) -> bool {
        self.session_context
    }

    async fn ping(&self) -> Result<(), DbError> {
        // Every pooled connection running a query: waiting for one would say nothing about
        // the server (and time out `/health` on a busy pool). A whole answer on one of them
        // within the last [`RECENT_ANSWER`] says the server is up; without one, ask on a
        // connection of the check's own (a login), closed after.
        let state = self.pool.state();
        if state.idle_connections == 0 && state.connections >= self.pool_size {
            if self.answered_within(RECENT_ANSWER) {
                return Ok(());
            }
            let mut conn = ManageConnection::connect(&self.pinger).await?;
            self.pings_opened.fetch_add(1, Ordering::Relaxed);
            let checked =
                tokio::time::timeout(self.query_timeout, select_one(&mut conn, &self.ctx)).await;
            return checked.unwrap_or(Err(DbError::Timeout(self.query_timeout.as_secs())));
        }
        let mut conn = self.acquire().await?;
        let checked =
            tokio::time::timeout(self.query_timeout, select_one(&mut conn, &self.ctx)).await;
        self.note_answer(&conn);
        checked.unwrap_or(Err(DbError::Timeout(self.query_timeout.as_secs())))
    }
}

#[cfg(test)]
mod tests {
    //! Canned values and catalogs for what the TDS test peer (pysqlbridge) cannot produce: it
    //! has no decimal, money, date, datetime2, datetimeoffset or uniqueidentifier columns
    //! (they come back as float, nvarchar or datetime), declares no keys, ignores
    //! `SET ROWCOUNT`, and its error numbers cover only a few cases. Each test says which.

    use std::borrow::Cow;

    use tiberius::numeric::Numeric;
    use tiberius::time::{Date, DateTime, DateTime2, DateTimeOffset, SmallDateTime, Time};
    use tiberius::xml::XmlData;
    use tiberius::{ColumnData, ColumnType, Uuid};

    use super::*;
    use crate::db::MAX_DESCRIPTION_CHARS;

    fn dec(data: ColumnData<'static>, ty: ColumnType) -> Value {
        decode(data, ty).0
    }

    /// The peer has no table with a row that large (its catalog views fail on long values), so
    /// the message for the server's own statements is checked here; the ad-hoc one is checked
    /// against the peer.
    #[test]
    fn a_row_over_the_limit_in_our_own_statement_points_the_operator_at_the_settings() {
        let own = row_too_large(16, false).to_string();
        assert!(own.contains("16 MiB") && own.contains("128 KiB"), "{own}");
        assert!(
            own.contains("max_row_mib") && own.contains("deny_columns"),
            "{own}"
        );
        assert!(
            !own.contains("select"),
            "no advice a model cannot follow: {own}"
        );
        let adhoc = row_too_large(16, true).to_string();
        assert!(adhoc.contains("CONVERT(nvarchar(max), col)"), "{adhoc}");
    }

    /// The row budget's own rules, on an in-memory stream: the peer test
    /// (`a_row_over_max_row_mib…` in tests/mssql.rs) cannot show that a request written starts
    /// the count again, because a refused read discards its connection.
    #[tokio::test]
    async fn the_row_budget_refuses_a_read_past_it_until_a_request_or_row_starts_it_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (near, mut far) = tokio::io::duplex(1024);
        let budget = Arc::new(RowBudget::new(10));
        let mut conn = Metered {
            inner: near,
            budget: budget.clone(),
        };
        let mut buf = [0u8; 64];
        far.write_all(&[1; 16]).await.expect("write");
        // A read that passes the limit is handed over whole; the next one is refused.
        assert_eq!(conn.read(&mut buf).await.expect("first read"), 16);
        far.write_all(&[2; 4]).await.expect("write");
        let err = conn.read(&mut buf).await.expect_err("past the limit");
        assert!(err.to_string().contains("max_row_mib"), "{err}");
        assert!(budget.refused());
        // A request written starts the count again.
        conn.write_all(b"next request").await.expect("request");
        assert!(!budget.refused());
        assert_eq!(conn.read(&mut buf).await.expect("after a request"), 4);
        // Under the limit reads go on; a row handed over starts the count too.
        far.write_all(&[3; 6]).await.expect("write");
        assert_eq!(conn.read(&mut buf).await.expect("under the limit"), 6);
        far.write_all(&[4; 2]).await.expect("write");
        conn.read(&mut buf)
            .await
            .expect_err("10 read since the request");
        budget.restart();
        assert_eq!(conn.read(&mut buf).await.expect("after a row"), 2);
        let mut echo = [0u8; 12];
        far.read_exact(&mut echo)
            .await
            .expect("the request arrived");
        assert_eq!(&echo, b"next request");
    }

    /// 2024-03-15 as days since 0001-01-01 (the `date`/`datetime2` epoch).
    const MAR_15_2024: u32 = 19_797 + 719_162;
    /// 10:22:05 in seconds.
    const T_10_22_05: u64 = 10 * 3600 + 22 * 60 + 5;

    /// The peer sends decimals as float; SQL Server sends exact scaled integers.
    #[test]
    fn decimals_keep_every_digit_and_their_scale() {
        let cases = [
            ((1230, 2), "12.30"),
            ((-5, 3), "-0.005"),
            ((0, 2), "0.00"),
            ((42, 0), "42"),
            (
                (99_999_999_999_999_999_999_999_999_999_999_999_999, 10),
                "9999999999999999999999999999.9999999999",
            ),
        ];
        for ((value, scale), want) in cases {
            let v = dec(
                ColumnData::Numeric(Some(Numeric::new_with_scale(value, scale))),
                ColumnType::Decimaln,
            );
            assert_eq!(v, Value::Decimal(want.into()), "{value} scale {scale}");
        }
    }

    /// The peer has no money type; tiberius hands money over as f64.
    #[test]
    fn money_is_an_exact_four_place_decimal() {
        let cases = [
            (12.3, ColumnType::Money, "12.3000"),
            (-0.0001, ColumnType::Money, "-0.0001"),
            (123456789.1234, ColumnType::Money, "123456789.1234"),
            (214748.3647, ColumnType::Money4, "214748.3647"),
        ];
        for (f, ty, want) in cases {
            assert_eq!(
                dec(ColumnData::F64(Some(f)), ty),
                Value::Decimal(want.into())
            );
        }
        // A plain float column stays a float.
        assert_eq!(
            dec(ColumnData::F64(Some(12.3)), ColumnType::Float8),
            Value::Float(12.3)
        );
        // `real` keeps its own shortest form.
        assert_eq!(
            dec(ColumnData::F32(Some(0.1)), ColumnType::Float4),
            Value::Float(0.1)
        );
    }

    /// The peer sends dates as datetime or text; SQL Server sends `date` as a day count.
    #[test]
    fn dates_are_iso_8601() {
        let cases = [
            (0, "0001-01-01"),
            (MAR_15_2024, "2024-03-15"),
            (719_162, "1970-01-01"),
            (3_652_058, "9999-12-31"),
            (719_162 + 11_016, "2000-02-29"),
        ];
        for (days, want) in cases {
            assert_eq!(
                dec(ColumnData::Date(Some(Date::new(days))), ColumnType::Daten),
                Value::Text(want.into())
            );
        }
    }

    /// `time(n)` and `datetime2(n)` keep exactly n fractional digits; the peer has neither.
    #[test]
    fn times_and_datetime2_keep_their_precision() {
        let t7 = Time::new(T_10_22_05 * 10_000_000 + 1_234_567, 7);
        assert_eq!(
            dec(ColumnData::Time(Some(t7)), ColumnType::Timen),
            Value::Text("10:22:05.1234567".into())
        );
        assert_eq!(
            dec(
                ColumnData::Time(Some(Time::new(T_10_22_05, 0))),
                ColumnType::Timen
            ),
            Value::Text("10:22:05".into())
        );
        let dt2 = DateTime2::new(Date::new(MAR_15_2024), Time::new(T_10_22_05 * 1000 + 50, 3));
        assert_eq!(
            dec(ColumnData::DateTime2(Some(dt2)), ColumnType::Datetime2),
            Value::Text("2024-03-15T10:22:05.050".into())
        );
    }

    /// `datetimeoffset` arrives as UTC plus minutes; shown in local time with the offset, also
    /// across midnight. The peer has no such type.
    #[test]
    fn datetimeoffset_shows_local_time_and_offset() {
        let utc = DateTime2::new(
            Date::new(MAR_15_2024),
            Time::new((23 * 3600 + 30 * 60) * 1000, 3),
        );
        assert_eq!(
            dec(
                ColumnData::DateTimeOffset(Some(DateTimeOffset::new(utc, 120))),
                ColumnType::DatetimeOffsetn
            ),
            Value::Text("2024-03-16T01:30:00.000+02:00".into())
        );
        let utc = DateTime2::new(Date::new(MAR_15_2024), Time::new(2 * 3600, 0));
        assert_eq!(
            dec(
                ColumnData::DateTimeOffset(Some(DateTimeOffset::new(utc, -330))),
                ColumnType::DatetimeOffsetn
            ),
            Value::Text("2024-03-14T20:30:00-05:30".into())
        );
    }

    /// `datetime` ticks are 1/300 s and round like SQL Server (.000/.003/.007); the peer's
    /// datetime values are whole seconds, `smalldatetime` it lacks.
    #[test]
    fn datetime_and_smalldatetime_round_like_sql_server() {
        let days = 19_797 + 25_567; // 2024-03-15 since 1900-01-01
        let ticks = (T_10_22_05 * 300) as u32;
        for (extra, want) in [(0, ".000"), (1, ".003"), (2, ".007")] {
            assert_eq!(
                dec(
                    ColumnData::DateTime(Some(DateTime::new(days, ticks + extra))),
                    ColumnType::Datetimen
                ),
                Value::text(format!("2024-03-15T10:22:05{want}"))
            );
        }
        assert_eq!(
            dec(
                ColumnData::DateTime(Some(DateTime::new(-1, 0))),
                ColumnType::Datetime
            ),
            Value::Text("1899-12-31T00:00:00.000".into())
        );
        assert_eq!(
            dec(
                ColumnData::SmallDateTime(Some(SmallDateTime::new(days as u16, 622))),
                ColumnType::Datetime4
            ),
            Value::Text("2024-03-15T10:22:00".into())
        );
    }

    /// The peer sends GUIDs as nvarchar; SQL Server sends 16 mixed-endian bytes.
    #[test]
    fn uniqueidentifiers_are_canonical_upper_case() {
        let g = Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").expect("uuid");
        assert_eq!(
            dec(ColumnData::Guid(Some(g)), ColumnType::Guid),
            Value::Text("6F9619FF-8B86-D011-B42D-00C04FC964FF".into())
        );
    }

    /// The peer's CSV/JSON sources have no binary or xml columns.
    #[test]
    fn long_values_are_cut_and_marked_and_xml_is_text() {
        let big = vec![7u8; MAX_VALUE_BYTES + 10];
        let (v, cut) = decode(
            ColumnData::Binary(Some(Cow::Owned(big))),
            ColumnType::BigVarBin,
        );
        assert!(cut);
        assert!(matches!(v, Value::Bytes(ref b) if b.len() == MAX_VALUE_BYTES));
        let (v, cut) = decode(
            ColumnData::Binary(Some(Cow::Owned(vec![0, 1, 255]))),
            ColumnType::BigBinary,
        );
        assert!(!cut);
        assert_eq!(v, Value::Bytes(vec![0, 1, 255]));
        // Text and xml are cut too, at a character boundary.
        let long = "é".repeat(MAX_VALUE_BYTES);
        for data in [
            ColumnData::String(Some(Cow::Owned(long.clone()))),
            ColumnData::Xml(Some(Cow::Owned(XmlData::new(long.clone())))),
        ] {
            let (v, cut) = decode(data, ColumnType::NVarchar);
            assert!(cut);
            assert_eq!(v, Value::Text(long[..MAX_VALUE_BYTES].into()));
        }
        let (_, cut) = decode(
            ColumnData::String(Some(Cow::Owned(long[..MAX_VALUE_BYTES].to_string()))),
            ColumnType::NVarchar,
        );
        assert!(!cut, "a value of exactly the cap is whole");
        assert_eq!(
            dec(
                ColumnData::Xml(Some(Cow::Owned(XmlData::new("<a>1</a>")))),
                ColumnType::Xml
            ),
            Value::Text("<a>1</a>".into())
        );
    }

    #[test]
    fn integers_bits_nulls_and_variants_decode_as_themselves() {
        assert_eq!(
            dec(ColumnData::U8(Some(255)), ColumnType::Int1),
            Value::Int(255)
        );
        assert_eq!(
            dec(ColumnData::I16(Some(-2)), ColumnType::Int2),
            Value::Int(-2)
        );
        assert_eq!(
            dec(ColumnData::I64(Some(i64::MAX)), ColumnType::Int8),
            Value::Int(i64::MAX)
        );
        assert_eq!(
            dec(ColumnData::Bit(Some(true)), ColumnType::Bitn),
            Value::Bool(true)
        );
        assert_eq!(dec(ColumnData::I32(None), ColumnType::Intn), Value::Null);
        assert_eq!(
            dec(ColumnData::Numeric(None), ColumnType::Decimaln),
            Value::Null
        );
        assert_eq!(
            dec(
                ColumnData::DateTimeOffset(None),
                ColumnType::DatetimeOffsetn
            ),
            Value::Null
        );
        // A sql_variant arrives as its base type's value.
        assert_eq!(
            dec(ColumnData::I32(Some(5)), ColumnType::SSVariant),
            Value::Int(5)
        );
        assert_eq!(
            dec(ColumnData::String(None), ColumnType::SSVariant),
            Value::Null
        );
    }

    fn canned_table(name: &str, columns: &[(&str, &str)], pk: &[&str]) -> TableInfo {
        TableInfo {
            schema: "dbo".into(),
            name: name.into(),
            kind: "table",
            columns: columns
                .iter()
                .map(|(n, t)| ColumnInfo::new(*n, *t, kind_of(t), true))
                .collect(),
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            ..TableInfo::default()
        }
    }

    /// The LIKE search and the full-text search (keyed on `At`) of table `t` for the keyword
    /// `a` in its text column `text`.
    fn searches_of(t: &TableInfo, cols: &[String], text: &str) -> (String, String) {
        let keywords = strings(&["a"]);
        let text_columns = strings(&[text]);
        let req = SearchRequest {
            table: t,
            columns: cols,
            text_columns: &text_columns,
            keywords: &keywords,
            limit: 10,
        };
        let like = search_sql(&req).expect("sql");
        let full_text = full_text_search_sql(&req, "At", &[text]).expect("sql");
        (like, full_text)
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn identifiers_are_bracketed_with_closing_brackets_doubled() {
        assert_eq!(ident("Orders"), "[Orders]");
        assert_eq!(ident("Order]s"), "[Order]]s]");
        assert_eq!(ident("a]]; DROP TABLE x --"), "[a]]]]; DROP TABLE x --]");
        assert_eq!(ident("名前 with space"), "[名前 with space]");
    }

    #[test]
    fn like_patterns_escape_every_wildcard() {
        assert_eq!(like_pattern("50%_off"), "%50\\%\\_off%");
        assert_eq!(like_pattern("[abc]\\"), "%\\[abc]\\\\%");
        assert_eq!(like_pattern("zoë"), "%zoë%");
    }

    #[test]
    fn sample_orders_by_the_key_and_pages_with_offset_fetch() {
        let t = canned_table("Odd]Name", &[("Id", "int"), ("Total", "money")], &["Id"]);
        let sql = sample_sql(&t, &strings(&["Id", "Total"]), &Page::rows(20, 10)).expect("sql");
        assert_eq!(
            sql,
            "SELECT [Id], CAST([Total] AS decimal(19,4)) AS [Total] FROM [dbo].[Odd]]Name] \
             ORDER BY [Id] OFFSET 20 ROWS FETCH NEXT 11 ROWS ONLY"
        );
        let keyless = canned_table("Log", &[("Line", "nvarchar")], &[]);
        assert!(sample_sql(&keyless, &[], &Page::rows(0, 5)).is_err());
        // Long varchar and text come back as nvarchar: the server's cut at TEXTSIZE then
        // falls between UTF-16 units, never inside a UTF-8 or double-byte character.
        let notes = canned_table(
            "Notes",
            &[
                ("Id", "int"),
                ("Body", "varchar(max)"),
                ("Old", "text"),
                ("Short", "varchar(50)"),
            ],
            &["Id"],
        );
        let sql = sample_sql(
            &notes,
            &strings(&["Id", "Body", "Old", "Short"]),
            &Page::rows(0, 5),
        )
        .expect("sql");
        assert!(
            sql.starts_with(
                "SELECT [Id], CONVERT(nvarchar(max), [Body]) AS [Body], \
                 CONVERT(nvarchar(max), [Old]) AS [Old], [Short] FROM"
            ),
            "{sql}"
        );
    }

    /// A key that includes a hidden column is dropped from the scope's catalog
    /// (`tools::scoped_catalog`). Ordering by `(SELECT NULL)` then made `OFFSET` pages
    /// unstable (rows repeated or skipped), so the statements order by the visible columns
    /// SQL Server can sort (less large objects such as `varchar(max)`), and never by the
    /// hidden one.
    #[test]
    fn a_table_whose_key_is_hidden_is_ordered_by_its_sortable_visible_columns() {
        let mut raw = canned_table(
            "Events",
            &[
                ("Code", "nvarchar(20)"),
                ("At", "datetime2(7)"),
                ("Body", "xml"),
                ("Old", "text"),
                ("Place", "geography"),
                ("Tag", "varchar(max)"),
                ("Amount", "money"),
            ],
            &["Code", "At"],
        );
        raw.full_text = Some(FullTextIndex {
            key_column: "At".into(),
            columns: vec!["Tag".into()],
        });
        let rules = crate::db::AccessRules {
            deny_columns: vec!["Events.Code".into()],
            ..crate::db::AccessRules::default()
        };
        let catalog = crate::tools::scoped_catalog(
            &rules,
            &Catalog {
                tables: vec![raw],
                varchar_utf8: false,
                synonyms: Vec::new(),
            },
        );
        let t = catalog.find("Events").expect("Events");
        assert!(t.primary_key.is_empty(), "{t:?}");
        let cols = strings(&["At", "Body", "Old", "Place", "Tag", "Amount"]);
        let order = "[At], [Amount]";
        let sql = sample_sql(t, &cols, &Page::rows(10, 10)).expect("sql");
        assert!(
            sql.ends_with(&format!(
                "ORDER BY {order} OFFSET 10 ROWS FETCH NEXT 11 ROWS ONLY"
            )),
            "{sql}"
        );
        let sql = lookup_sql(t, &cols, &strings(&["At"]), &[], 5).expect("sql");
        assert!(sql.ends_with(&format!(" ORDER BY {order}")), "{sql}");
        let (like, full_text) = searches_of(t, &cols, "Tag");
        assert!(like.ends_with(&format!("DESC, {order}")), "{like}");
        assert!(
            full_text.ends_with("DESC, t.[At], t.[Amount]"),
            "{full_text}"
        );
        for sql in [
            sample_sql(t, &cols, &Page::rows(0, 5)).expect("sql"),
            lookup_sql(t, &cols, &strings(&["At"]), &[], 5).expect("sql"),
            like,
        ] {
            assert!(!sql.contains("Code"), "the hidden column: {sql}");
        }
        // Nothing sortable is visible: `OFFSET` still needs an `ORDER BY`; lookups and
        // searches do without one.
        let unsortable = strings(&["Body", "Old", "Place"]);
        let sql = sample_sql(t, &unsortable, &Page::rows(0, 5)).expect("sql");
        assert!(
            sql.ends_with("ORDER BY (SELECT NULL) OFFSET 0 ROWS FETCH NEXT 6 ROWS ONLY"),
            "{sql}"
        );
        let sql = lookup_sql(t, &unsortable, &strings(&["At"]), &[], 5).expect("sql");
        assert!(!sql.contains("ORDER BY"), "{sql}");
    }

    /// A heap of 50 million rows has no key: sorting it by every column for each page (as a
    /// hidden key's table is) ran into the query timeout where `(SELECT NULL)` answers at
    /// once. A table without a key is read in scan order, and lookups and searches of it add
    /// no tie-break.
    #[test]
    fn a_table_without_a_key_is_read_unsorted() {
        let mut raw = canned_table(
            "Log",
            &[
                ("At", "datetime2(7)"),
                ("Line", "nvarchar(max)"),
                ("Level", "int"),
            ],
            &[],
        );
        raw.full_text = Some(FullTextIndex {
            key_column: "At".into(),
            columns: vec!["Line".into()],
        });
        let cols = strings(&["At", "Line", "Level"]);
        // Through the scope's catalog too: hiding a column that is not in a key leaves the
        // table as key-less as it was, not "key hidden".
        let rules = crate::db::AccessRules {
            deny_columns: vec!["Log.Level".into()],
            ..crate::db::AccessRules::default()
        };
        let scoped = crate::tools::scoped_catalog(
            &rules,
            &Catalog {
                tables: vec![raw.clone()],
                varchar_utf8: false,
                synonyms: Vec::new(),
            },
        );
        let t_scoped = scoped.find("Log").expect("Log");
        assert!(!t_scoped.key_hidden, "{t_scoped:?}");
        for (t, cols) in [(&raw, cols.clone()), (t_scoped, strings(&["At", "Line"]))] {
            let sql = sample_sql(t, &cols, &Page::rows(20, 10)).expect("sql");
            assert!(
                sql.ends_with("ORDER BY (SELECT NULL) OFFSET 20 ROWS FETCH NEXT 11 ROWS ONLY"),
                "{sql}"
            );
            let sql = lookup_sql(t, &cols, &strings(&["At"]), &[], 5).expect("sql");
            assert!(!sql.contains("ORDER BY"), "{sql}");
            let (like, full_text) = searches_of(t, &cols, "Line");
            assert!(like.ends_with("ORDER BY [_score] DESC"), "{like}");
            assert!(
                full_text.ends_with("ORDER BY ft.[RANK] DESC"),
                "{full_text}"
            );
        }
    }

    /// Sorting by an `nvarchar(max)` or `varbinary(max)` column spills whole values to
    /// `tempdb`: a table whose key is hidden is ordered by its other visible columns, and by
    /// at most 16 of them.
    #[test]
    fn a_table_whose_key_is_hidden_is_not_sorted_by_large_objects_or_too_many_columns() {
        let mut columns: Vec<(String, String)> = vec![
            ("Id".into(), "int".into()),
            ("Note".into(), "nvarchar(max)".into()),
            ("Blob".into(), "varbinary(max)".into()),
            ("Name".into(), "nvarchar(50)".into()),
        ];
        columns.extend((1..=20).map(|i| (format!("C{i}"), "int".to_string())));
        let spec: Vec<(&str, &str)> = columns
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let raw = canned_table("Wide", &spec, &["Id"]);
        let rules = crate::db::AccessRules {
            deny_columns: vec!["Wide.Id".into()],
            ..crate::db::AccessRules::default()
        };
        let catalog = crate::tools::scoped_catalog(
            &rules,
            &Catalog {
                tables: vec![raw],
                varchar_utf8: false,
                synonyms: Vec::new(),
            },
        );
        let t = catalog.find("Wide").expect("Wide");
        assert!(t.primary_key.is_empty() && t.key_hidden, "{t:?}");
        let visible: Vec<String> = columns[1..].iter().map(|(n, _)| n.clone()).collect();
        let expected: Vec<String> = std::iter::once("[Name]".to_string())
            .chain((1..=15).map(|i| format!("[C{i}]")))
            .collect();
        let sql = sample_sql(t, &visible, &Page::rows(0, 5)).expect("sql");
        assert!(
            sql.ends_with(&format!(
                "ORDER BY {} OFFSET 0 ROWS FETCH NEXT 6 ROWS ONLY",
                expected.join(", ")
            )),
            "{sql}"
        );
        let lobs = strings(&["Note", "Blob"]);
        let sql = sample_sql(t, &lobs, &Page::rows(0, 5)).expect("sql");
        assert!(
            sql.ends_with("ORDER BY (SELECT NULL) OFFSET 0 ROWS FETCH NEXT 6 ROWS ONLY"),
            "{sql}"
        );
    }

    /// SQL Server does not apply `SET TEXTSIZE` to `xml`, so the server's own statements
    /// read an `xml` column as `nvarchar(max)`, which it bounds; what arrives of a long one
    /// is still reported cut. Tested on the SQL text: the test peer has no `xml` columns and
    /// ignores `TEXTSIZE`.
    #[test]
    fn xml_columns_are_read_as_nvarchar_so_textsize_bounds_them() {
        let t = canned_table(
            "Docs",
            &[("Id", "int"), ("Doc", "xml"), ("Title", "nvarchar(50)")],
            &["Id"],
        );
        let cols = strings(&["Id", "Doc", "Title"]);
        let list = "[Id], CONVERT(nvarchar(max), [Doc]) AS [Doc], [Title] FROM";
        let sql = sample_sql(&t, &cols, &Page::rows(0, 5)).expect("sql");
        assert!(sql.starts_with(&format!("SELECT {list}")), "{sql}");
        let sql = lookup_sql(&t, &cols, &strings(&["Id"]), &[], 1).expect("sql");
        assert!(sql.starts_with(&format!("SELECT TOP (2) {list}")), "{sql}");
        let keywords = strings(&["a"]);
        let text = strings(&["Title"]);
        let req = SearchRequest {
            table: &t,
            columns: &cols,
            text_columns: &text,
            keywords: &keywords,
            limit: 10,
        };
        let sql = search_sql(&req).expect("sql");
        assert!(
            sql.contains("[Id], CONVERT(nvarchar(max), [Doc]) AS [Doc], [Title], ("),
            "{sql}"
        );
        let sql = full_text_search_sql(&req, "Id", &["Title"]).expect("sql");
        assert!(
            sql.contains("t.[Id], CONVERT(nvarchar(max), t.[Doc]) AS [Doc], t.[Title], ("),
            "{sql}"
        );
        // The shortest value the server cuts at TEXTSIZE (ASCII: two bytes a character on
        // the wire, one in UTF-8) is longer than the cut here, so it is reported cut.
        let (v, cut) = decode(
            ColumnData::String(Some(Cow::Owned("<".repeat(TEXTSIZE_BYTES / 2)))),
            ColumnType::NVarchar,
        );
        assert!(cut);
        assert_eq!(v.size(), MAX_VALUE_BYTES);
    }

    /// Fatal at start only by how our own messages begin: a host whose name says TLS is still
    /// only a database that is down.
    #[test]
    fn only_login_tls_and_database_name_failures_stop_the_start() {
        assert!(!is_config_problem(&DbError::Unavailable(
            "cannot reach SQLTLS01:1433: connection refused".into()
        )));
        assert!(is_config_problem(&DbError::Unavailable(
            "TLS with db:1433 failed: handshake".into()
        )));
    }

    #[test]
    fn lookups_bind_one_parameter_per_key_column() {
        let t = canned_table(
            "OrderLines",
            &[
                ("OrderId", "int"),
                ("Line", "smallint"),
                ("Sku", "nvarchar"),
            ],
            &["OrderId", "Line"],
        );
        let sql = lookup_sql(
            &t,
            &strings(&["Sku"]),
            &strings(&["OrderId", "Line"]),
            &[],
            1,
        )
        .expect("sql");
        assert_eq!(
            sql,
            "SELECT TOP (2) [Sku] FROM [dbo].[OrderLines] WHERE [OrderId] = @P1 AND [Line] = @P2 \
             ORDER BY [OrderId], [Line]"
        );
        assert_eq!(key_param(ValueKind::Integer, " 42 "), Some(Param::I64(42)));
        // Binary keys as row ids write them; anything else (the old `<3 bytes>`) finds nothing.
        assert_eq!(
            key_param(ValueKind::Binary, "0x00ff10"),
            Some(Param::Bytes(vec![0, 255, 16]))
        );
        assert_eq!(key_param(ValueKind::Binary, "<3 bytes>"), None);
        assert_eq!(key_param(ValueKind::Binary, "0x0"), None);
        assert_eq!(key_param(ValueKind::Binary, "0x+A+B"), None);
        assert_eq!(key_param(ValueKind::Integer, "abc"), None);
        assert_eq!(
            key_param(ValueKind::Boolean, "true"),
            Some(Param::Bool(true))
        );
        assert_eq!(key_param(ValueKind::Float, "1.5"), Some(Param::F64(1.5)));
        // Decimals go as text, so the server converts them exactly.
        assert_eq!(
            key_param(ValueKind::Decimal, "12.30"),
            Some(Param::Str("12.30".into()))
        );
        assert_eq!(key_param(ValueKind::Decimal, "twelve"), None);
        // Numbers the server cannot take as a key value find nothing rather than fail.
        for odd in ["NaN", "inf", "-infinity", "1e999"] {
            assert_eq!(key_param(ValueKind::Float, odd), None, "{odd}");
        }
        for odd in ["inf", "NaN", "1e5", ".", "-", "1.2.3", "+"] {
            assert_eq!(key_param(ValueKind::Decimal, odd), None, "{odd}");
        }
        for plain in ["-12", "+0.5", ".5", "7.", "00012.3400"] {
            assert!(key_param(ValueKind::Decimal, plain).is_some(), "{plain}");
        }
        // GUIDs are checked and bound as uniqueidentifier (the peer has no such columns).
        let guid = ColumnInfo::new("RowGuid", "uniqueidentifier", ValueKind::Other, false);
        assert!(matches!(
            typed_key(Some(&guid), "6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            Some(Param::Guid(_))
        ));
        assert_eq!(typed_key(Some(&guid), "not-a-guid"), None);
    }

    /// Text keys of `char`/`varchar` columns are cast to the column's type (no conversion of
    /// the column, so an index seek) and must read back as themselves; `real` keys are cast
    /// to `real`, `hierarchyid` keys travel as bytes. The peer serves only `nvarchar` and
    /// `float` columns and shows no plans, so the statement is checked here;
    /// `tests/mssql.rs` runs it against the peer with the column declared `varchar`.
    #[test]
    fn non_unicode_real_and_hierarchyid_keys_are_cast_to_the_column_type() {
        let t = canned_table(
            "Codes",
            &[
                ("Code", "varchar(10)"),
                ("Cc", "char(3)"),
                ("Long", "varchar(max)"),
                ("Weight", "real"),
                ("Node", "hierarchyid"),
                ("Name", "nvarchar(50)"),
            ],
            &["Code", "Cc", "Long", "Weight", "Node", "Name"],
        );
        let sql = lookup_sql(
            &t,
            &strings(&["Name"]),
            &strings(&["Code", "Cc", "Long", "Weight", "Node", "Name"]),
            &strings(&["A-1", "USD", "x", "0.1", "0x5ac0", "n"]),
            1,
        )
        .expect("sql");
        let cond = sql
            .split(" WHERE ")
            .nth(1)
            .and_then(|w| w.split(" ORDER BY ").next())
            .expect("where");
        assert_eq!(
            cond,
            "[Code] = CAST(@P1 AS varchar(10)) \
             AND CAST(CAST(@P1 AS varchar(10)) AS nvarchar(max)) = @P1 \
             AND [Cc] = CAST(@P2 AS varchar(3)) \
             AND CAST(CAST(@P2 AS varchar(3)) AS nvarchar(max)) = @P2 \
             AND [Long] = CAST(@P3 AS varchar(max)) \
             AND CAST(CAST(@P3 AS varchar(max)) AS nvarchar(max)) = @P3 \
             AND [Weight] = CAST(@P4 AS real) \
             AND [Node] = CAST(@P5 AS hierarchyid) \
             AND [Name] = @P6"
        );
        // A value outside ASCII may not survive the cast in the database's code page (the
        // column's collation can have another): compared as nvarchar, exact in any.
        let sql = lookup_sql(
            &t,
            &strings(&["Name"]),
            &strings(&["Code", "Cc"]),
            &strings(&["Москва", "USD"]),
            1,
        )
        .expect("sql");
        assert!(
            sql.contains("WHERE [Code] = @P1 AND [Cc] = CAST(@P2 AS varchar(3))"),
            "{sql}"
        );
        let node = t.column("Node");
        assert_eq!(
            typed_key(node, "0x5ac0"),
            Some(Param::Bytes(vec![0x5a, 0xc0]))
        );
        assert_eq!(typed_key(node, "/1/3/"), None);
        assert_eq!(typed_key(t.column("Weight"), "0.1"), Some(Param::F64(0.1)));
        // Past `real`'s range: no value of the column, and no overflow error from the cast.
        assert_eq!(typed_key(t.column("Weight"), "1e39"), None);
        assert_eq!(
            typed_key(t.column("Weight"), "-3.4e38"),
            Some(Param::F64(-3.4e38))
        );
    }

    /// tiberius decodes money inside a `sql_variant` as a plain f64; the statements of ours
    /// send such money as a decimal variant instead. The peer has no `sql_variant` columns.
    #[test]
    fn money_in_a_variant_column_is_read_as_an_exact_decimal() {
        let t = canned_table("Props", &[("Id", "int"), ("Val", "sql_variant")], &["Id"]);
        let sql = sample_sql(&t, &strings(&["Id", "Val"]), &Page::rows(0, 5)).expect("sql");
        assert_eq!(
            sql,
            "SELECT [Id], CASE WHEN SQL_VARIANT_PROPERTY([Val], 'BaseType') IN ('money', \
             'smallmoney') THEN CAST(CAST([Val] AS decimal(19,4)) AS sql_variant) ELSE [Val] \
             END AS [Val] FROM [dbo].[Props] ORDER BY [Id] OFFSET 0 ROWS FETCH NEXT 6 ROWS ONLY"
        );
    }

    #[test]
    fn search_scores_each_keyword_and_column_pair_with_bound_patterns() {
        let t = canned_table(
            "Docs",
            &[("Id", "int"), ("Title", "nvarchar"), ("Body", "xml")],
            &["Id"],
        );
        let cols = strings(&["Id", "Title"]);
        let text = strings(&["Title", "Body"]);
        let keywords = strings(&["a", "b"]);
        let sql = search_sql(&SearchRequest {
            table: &t,
            columns: &cols,
            text_columns: &text,
            keywords: &keywords,
            limit: 10,
        })
        .expect("sql");
        assert!(sql.starts_with("SELECT TOP (10) [Id], [Title], (CASE WHEN [Title] LIKE @P1 ESCAPE '\\' THEN 1 ELSE 0 END + "), "{sql}");
        assert!(
            sql.contains("CONVERT(nvarchar(max), [Body]) LIKE @P2 ESCAPE '\\'"),
            "{sql}"
        );
        assert_eq!(sql.matches("CASE WHEN").count(), 4);
        assert!(sql.ends_with("ORDER BY [_score] DESC, [Id]"), "{sql}");
    }

    /// A table with a full-text index over `Title` and `Body` (keyed on `DocKey`, not the
    /// primary key), as the catalog reports it from SQL Server.
    fn indexed_docs() -> TableInfo {
        let mut t = canned_table(
            "Docs",
            &[
                ("Id", "int"),
                ("DocKey", "int"),
                ("Title", "nvarchar"),
                ("Body", "nvarchar"),
                ("Author", "nvarchar"),
                ("Secret", "nvarchar"),
            ],
            &["Id"],
        );
        t.full_text = Some(FullTextIndex {
            key_column: "DocKey".into(),
            columns: strings(&["Title", "Body", "Secret"]),
        });
        t
    }

    /// The peer has no full-text engine (no `sys.fulltext_indexes`, `FULLTEXTSERVICEPROPERTY`
    /// says 0, no `FREETEXTTABLE`), so the full-text statement is checked on its text.
    #[test]
    fn full_text_search_uses_freetexttable_joined_on_the_index_key_in_rank_order() {
        let t = indexed_docs();
        let cols = strings(&["Id", "Title", "Author"]);
        // `Secret` is indexed but hidden in this scope: not among the text columns.
        let text = strings(&["Title", "Body", "Author"]);
        let keywords = strings(&["refund", "damag"]);
        let req = SearchRequest {
            table: &t,
            columns: &cols,
            text_columns: &text,
            keywords: &keywords,
            limit: 10,
        };
        let plan = search_plan(&req);
        assert_eq!(
            plan,
            SearchPlan::FullText {
                key: "DocKey",
                columns: vec!["Title", "Body"],
                text: "refund damag".into(),
            }
        );
        let SearchPlan::FullText { key, columns, .. } = plan else {
            unreachable!()
        };
        let sql = full_text_search_sql(&req, key, &columns).expect("sql");
        assert!(
            sql.starts_with(
                "SELECT TOP (10) t.[Id], t.[Title], t.[Author], (1 + CASE WHEN t.[Title] LIKE @P2 ESCAPE '\\' THEN 1 ELSE 0 END + "
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                " FROM [dbo].[Docs] AS t JOIN FREETEXTTABLE([dbo].[Docs], ([Title], [Body]), @P1, 10) AS ft \
                 ON t.[DocKey] = ft.[KEY] ORDER BY ft.[RANK] DESC, t.[Id]"
            ),
            "{sql}"
        );
        assert!(sql.ends_with("ORDER BY ft.[RANK] DESC, t.[Id]"), "{sql}");
        // Each keyword (@P2, @P3) against each text column, on the rows the index found.
        assert_eq!(sql.matches("CASE WHEN").count(), 6, "{sql}");
        assert!(sql.contains("t.[Author] LIKE @P3 ESCAPE"), "{sql}");
        // The hidden column is neither searched nor scored; keywords never appear inline.
        assert!(!sql.contains("Secret"), "{sql}");
        assert!(!sql.contains("refund"), "{sql}");
    }

    /// What the peer exercises (it never reports a full-text index), and the edge cases.
    #[test]
    fn tables_without_a_usable_full_text_index_are_searched_with_like() {
        let cols = strings(&["Id", "Title"]);
        let keywords = strings(&["refund"]);
        // No index at all.
        let plain = canned_table("Docs", &[("Id", "int"), ("Title", "nvarchar")], &["Id"]);
        let text = strings(&["Title"]);
        let req = SearchRequest {
            table: &plain,
            columns: &cols,
            text_columns: &text,
            keywords: &keywords,
            limit: 5,
        };
        assert_eq!(search_plan(&req), SearchPlan::Like);
        // An index over columns the scope hides only.
        let t = indexed_docs();
        let text = strings(&["Author"]);
        let req = SearchRequest {
            table: &t,
            columns: &cols,
            text_columns: &text,
            keywords: &keywords,
            limit: 5,
        };
        assert_eq!(search_plan(&req), SearchPlan::Like);
        // Keywords that leave no free text.
        let text = strings(&["Title"]);
        let quotes = strings(&["\"\""]);
        let req = SearchRequest {
            table: &t,
            columns: &cols,
            text_columns: &text,
            keywords: &quotes,
            limit: 5,
        };
        assert_eq!(search_plan(&req), SearchPlan::Like);
    }

    #[test]
    fn free_text_is_the_keywords_without_double_quotes() {
        assert_eq!(
            free_text(&strings(&["say", "\"hello\"", "o'brien", "a@b.com"])),
            "say hello o'brien a@b.com"
        );
        assert_eq!(free_text(&strings(&["\"", " "])), "");
    }

    /// The peer fails `FOR JSON` and `FOR XML` queries (and so never splits their text over
    /// rows, as SQL Server does): the joining is tested on canned rows.
    #[test]
    fn for_json_text_split_over_rows_is_joined_into_one() {
        let pieces = [
            "[{\"Id\":1,\"Name\":\"Å",
            "se\"},{\"Id\":2,",
            "\"Name\":null}]",
        ];
        let rowset = |name: &str, rows: Vec<Vec<Value>>| RowSet {
            columns: vec![ResultColumn {
                name: name.into(),
                data_type: Some("nvarchar".into()),
            }],
            rows,
            more: false,
            byte_capped: false,
            cut_values: Vec::new(),
            joined_rows: None,
        };
        let split: Vec<Vec<Value>> = pieces.iter().map(|p| vec![Value::text(*p)]).collect();
        for name in [
            "JSON_F52E2B61-18A1-11d1-B105-00805F49916B",
            "XML_F52E2B61-18A1-11d1-B105-00805F49916B",
            "json_f52e2b61-18a1-11d1-b105-00805f49916b",
        ] {
            let mut rs = rowset(name, split.clone());
            rs.more = true;
            join_for_json_rows(&mut rs);
            assert_eq!(rs.rows, vec![vec![Value::text(pieces.concat())]], "{name}");
            let Value::Text(joined) = &rs.rows[0][0] else {
                panic!("{name}: {:?}", rs.rows)
            };
            assert!(rs.more, "a cut page stays cut");
            assert_eq!(
                rs.joined_rows,
                Some(3),
                "the next page starts after the pieces"
            );
            let parsed: serde_json::Value =
                serde_json::from_str(joined).expect("the joined text is JSON");
            assert_eq!(parsed[0]["Name"], "Åse");
        }
        // Any other one-column result keeps its rows.
        let mut rs = rowset("Name", split.clone());
        join_for_json_rows(&mut rs);
        assert_eq!(rs.rows, split);
        assert_eq!(rs.joined_rows, None);
        // A piece cut by the server's text limit marks the joined value cut.
        let mut rs = rowset("JSON_F52E2B61-18A1-11d1-B105-00805F49916B", split.clone());
        rs.cut_values = vec![(2, 0)];
        join_for_json_rows(&mut rs);
        assert_eq!(rs.cut_values, [(0, 0)]);
    }

    /// The peer has no sys.fulltext_indexes: the catalog side is tested on canned rows.
    #[test]
    fn full_text_indexes_come_from_the_catalog_with_their_key_and_columns() {
        let tables = [
            row(&[Some("dbo"), Some("Tickets"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Customers"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("TicketView"), Some("VIEW")]),
        ];
        let c = |t: &str, name: &str, ty: &str| column_row("dbo", t, name, ty, false);
        let columns = [
            c("Tickets", "TicketId", "int"),
            c("Tickets", "Subject", "nvarchar"),
            c("Tickets", "Body", "nvarchar"),
            c("Customers", "Id", "int"),
            c("Customers", "Name", "nvarchar"),
            c("TicketView", "Id", "int"),
            c("TicketView", "Body", "nvarchar"),
        ];
        let ft = |t: &str, key: &str, col: &str| row(&[Some("dbo"), Some(t), Some(key), Some(col)]);
        let full_text = [
            ft("Tickets", "TicketId", "Subject"),
            ft("Tickets", "TicketId", "Body"),
            // An indexed view carries its own index.
            ft("TicketView", "Id", "Body"),
            // Rows for objects the catalog does not list are ignored.
            ft("Gone", "Id", "Text"),
        ];
        let cat = build_catalog(CatalogRows {
            tables: &tables,
            columns: &columns,
            full_text: &full_text,
            ..CatalogRows::default()
        });
        assert_eq!(
            cat.find("Tickets").and_then(|t| t.full_text.clone()),
            Some(FullTextIndex {
                key_column: "TicketId".into(),
                columns: strings(&["Subject", "Body"]),
            })
        );
        assert_eq!(
            cat.find("TicketView")
                .and_then(|t| t.full_text.as_ref())
                .map(|f| f.columns.clone()),
            Some(strings(&["Body"]))
        );
        assert_eq!(
            cat.find("Customers").map(|t| t.full_text.is_some()),
            Some(false)
        );
    }

    /// The peer accepts and ignores SET ROWCOUNT, so the batch text is checked here.
    #[test]
    fn adhoc_queries_run_inside_a_rolled_back_transaction_and_set_the_cap_only_when_it_changes() {
        let page = Page::rows(10, 5);
        assert_eq!(row_cap(&page), 16);
        // A fresh connection (ROWCOUNT 0), or one whose cap differs: the cap is set.
        for session in [Some(0), Some(501), None] {
            assert_eq!(
                adhoc_batch("SELECT * FROM t -- note;\n ;; ", 16, session),
                "SET ROWCOUNT 16; BEGIN TRANSACTION;\n\
                 SELECT * FROM t -- note\n\
                 ;ROLLBACK TRANSACTION;",
                "{session:?}"
            );
        }
        // The same cap as the last query on this connection: three statements.
        assert_eq!(
            adhoc_batch("SELECT 1", 16, Some(16)),
            "BEGIN TRANSACTION;\nSELECT 1\n;ROLLBACK TRANSACTION;"
        );
        let huge = Page::rows(usize::MAX, 5);
        assert_eq!(row_cap(&huge), i32::MAX as u32);
    }

    #[test]
    fn later_pages_of_an_ordered_query_are_skipped_by_the_server() {
        let ordered = |offset, limit| Page {
            pageable_in_sql: true,
            ..Page::rows(offset, limit)
        };
        assert_eq!(
            offset_fetch(" SELECT a FROM t ORDER BY a ; ;\n", &ordered(20, 10)).as_deref(),
            Some("SELECT a FROM t ORDER BY a\nOFFSET 20 ROWS FETCH NEXT 11 ROWS ONLY")
        );
        // The first page, a query the guard did not find pageable, or one with a comment
        // (whose end may not be the ORDER BY's): the reader skips rows as before.
        assert_eq!(
            offset_fetch("SELECT a FROM t ORDER BY a", &ordered(0, 10)),
            None
        );
        assert_eq!(
            offset_fetch("SELECT a FROM t ORDER BY a", &Page::rows(20, 10)),
            None
        );
        for sql in [
            "SELECT a FROM t ORDER BY a -- last",
            "SELECT a FROM t /* x */ ORDER BY a",
            "SELECT '--' AS a FROM t ORDER BY a",
        ] {
            assert_eq!(offset_fetch(sql, &ordered(20, 10)), None, "{sql}");
        }
    }

    /// The peer ignores SET ROWCOUNT, so whether a cap left by an ad-hoc query could cut one
    /// of our own statements is checked on the text.
    #[test]
    fn own_statements_lift_a_session_row_cap_that_could_cut_them() {
        let sql = "SELECT TOP (11) [a] FROM [t]";
        // No cap, or one large enough: the statement as it is.
        for session in [Some(0), Some(11), Some(501)] {
            assert_eq!(own_statement(sql, 11, session), sql, "{session:?}");
        }
        // A smaller cap (or an unknown one) is lifted for this call only.
        for session in [Some(6), None] {
            assert_eq!(
                own_statement(sql, 11, session),
                format!("SET ROWCOUNT 0; {sql}"),
                "{session:?}"
            );
        }
    }

    #[test]
    fn connection_settings_are_made_once_per_session() {
        let committed = MssqlIsolation::ReadCommitted;
        assert_eq!(
            session_setup(Duration::from_secs(30), committed),
            "SET NOCOUNT ON; SET XACT_ABORT ON; SET LOCK_TIMEOUT 22500; \
             SET TRANSACTION ISOLATION LEVEL READ COMMITTED; SET ROWCOUNT 0; \
             SET TEXTSIZE 131088;"
        );
        assert!(
            session_setup(Duration::from_millis(10), committed).contains("SET LOCK_TIMEOUT 100;")
        );
        for (isolation, level) in [
            (MssqlIsolation::Snapshot, "SNAPSHOT"),
            (MssqlIsolation::ReadUncommitted, "READ UNCOMMITTED"),
        ] {
            let setup = session_setup(Duration::from_secs(30), isolation);
            assert!(
                setup.contains(&format!("; SET TRANSACTION ISOLATION LEVEL {level}; ")),
                "{setup}"
            );
        }
    }

    /// A row of `COLUMNS_SQL` for a column without length, precision or scale.
    fn column_row(schema: &str, table: &str, name: &str, ty: &str, nullable: bool) -> Vec<Value> {
        let nullable = if nullable { "YES" } else { "NO" };
        row(&[
            Some(schema),
            Some(table),
            Some(name),
            Some(ty),
            Some(nullable),
            None,
            None,
            None,
            None,
        ])
    }

    fn row(values: &[Option<&str>]) -> Vec<Value> {
        values
            .iter()
            .map(|v| match v {
                Some(s) => match s.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::text(*s),
                },
                None => Value::Null,
            })
            .collect()
    }

    fn canned_catalog(keys: &[Vec<Value>], fks: &[Vec<Value>]) -> Catalog {
        canned_catalog_with(keys, fks, &[], &[])
    }

    fn canned_catalog_with(
        keys: &[Vec<Value>],
        fks: &[Vec<Value>],
        descriptions: &[Vec<Value>],
        checks: &[Vec<Value>],
    ) -> Catalog {
        let tables = [
            row(&[Some("dbo"), Some("Customers"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("OrderLines"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Categories"), Some("BASE TABLE")]),
            row(&[Some("sales"), Some("Boxes"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Report"), Some("VIEW")]),
        ];
        let c = |t: &str, s: &str, name: &str, ty: &str| column_row(s, t, name, ty, true);
        let columns = [
            c("Customers", "dbo", "CustomerID", "int"),
            c("Customers", "dbo", "Email", "nvarchar"),
            c("OrderLines", "dbo", "OrderId", "int"),
            c("OrderLines", "dbo", "Line", "int"),
            c("OrderLines", "dbo", "CustomerId", "int"),
            c("OrderLines", "dbo", "Price", "decimal"),
            c("Categories", "dbo", "category_id", "int"),
            c("Boxes", "sales", "BoxId", "bigint"),
            c("Report", "dbo", "Id", "int"),
        ];
        build_catalog(CatalogRows {
            tables: &tables,
            columns: &columns,
            keys,
            fks,
            descriptions,
            checks,
            ..CatalogRows::default()
        })
    }

    /// The peer has no sys.check_constraints: T-SQL constraint texts are canned. One that
    /// names a hidden column, however quoted, is dropped with it; a name inside a string is
    /// not a name.
    #[test]
    fn check_constraints_are_listed_and_dropped_with_the_hidden_columns_they_name() {
        let checks = [
            row(&[Some("dbo"), Some("OrderLines"), Some("([Price]>=(0))")]),
            row(&[
                Some("dbo"),
                Some("OrderLines"),
                Some("([Line]>(0) AND [Line]<(1000))"),
            ]),
            row(&[
                Some("dbo"),
                Some("OrderLines"),
                Some("([CustomerId]<>'Price')"),
            ]),
            row(&[
                Some("dbo"),
                Some("Customers"),
                Some("([email]   like\n'%@%')"),
            ]),
            row(&[Some("dbo"), Some("Nowhere"), Some("([x]=(1))")]),
            row(&[Some("dbo"), Some("Customers"), Some("   ")]),
        ];
        let raw = canned_catalog_with(&[], &[], &[], &checks);
        let of = |c: &Catalog, t: &str| c.find(t).map(|t| t.checks.clone()).expect(t);
        assert_eq!(
            of(&raw, "OrderLines"),
            strings(&[
                "([Price]>=(0))",
                "([Line]>(0) AND [Line]<(1000))",
                "([CustomerId]<>'Price')"
            ])
        );
        assert_eq!(of(&raw, "Customers"), strings(&["([email] like '%@%')"]));
        let rules = crate::db::AccessRules {
            deny_columns: strings(&["OrderLines.price", "Customers.Email"]),
            ..crate::db::AccessRules::default()
        };
        let scoped = crate::tools::scoped_catalog(&rules, &raw);
        assert_eq!(
            of(&scoped, "OrderLines"),
            strings(&["([Line]>(0) AND [Line]<(1000))", "([CustomerId]<>'Price')"])
        );
        assert_eq!(of(&scoped, "Customers"), Vec::<String>::new());
        assert_eq!(
            crate::tools::sql_identifiers("([a]]b]>\"c\"\"d\" AND `e` = 'it''s [x]' OR f_1#>@g)"),
            strings(&["a]b", "c\"d", "AND", "e", "OR", "f_1#", "@g"])
        );
    }

    /// The peer has no sys.sensitivity_classifications: its rows are canned. A classified
    /// column shows its label, information type and rank; a hidden one is gone from the scope
    /// with its label, and so from what the operator is told the scope shows.
    /// Masked columns (dynamic data masking, `sys.masked_columns`; the TDS peer has none, so
    /// canned rows) carry their masking function, `default()` when it is not given; a login
    /// that may read them unmasked (`UNMASK`) sees the data, so nothing is said then.
    #[test]
    fn masked_columns_carry_their_function_unless_the_login_reads_them_unmasked() {
        let tables = [row(&[Some("dbo"), Some("Customers"), Some("BASE TABLE")])];
        let c = |name: &str| column_row("dbo", "Customers", name, "nvarchar", true);
        let columns = [c("Email"), c("Phone"), c("City")];
        let mask = |column: &str, function: Option<&str>, unmask: &str| {
            row(&[
                Some("dbo"),
                Some("Customers"),
                Some(column),
                function,
                Some(unmask),
            ])
        };
        let masked_with = |masked: &[Vec<Value>], unmasked: &[Vec<Value>]| {
            let raw = build_catalog(CatalogRows {
                tables: &tables,
                columns: &columns,
                masked,
                unmasked,
                ..CatalogRows::default()
            });
            let t = raw.find("dbo.Customers").expect("table").clone();
            t.columns
                .iter()
                .map(|c| c.masked.clone())
                .collect::<Vec<_>>()
        };
        let masked_of = |masked: &[Vec<Value>]| masked_with(masked, &[]);
        let rows = [
            mask("Email", Some("email()"), "0"),
            mask("Phone", None, "0"),
            row(&[
                Some("dbo"),
                Some("Nowhere"),
                Some("x"),
                Some("default()"),
                Some("0"),
            ]),
        ];
        assert_eq!(
            masked_of(&rows),
            [
                Some("email()".to_string()),
                Some("default()".to_string()),
                None
            ]
        );
        let unmasked = [mask("Email", Some("email()"), "1")];
        assert_eq!(masked_of(&unmasked), [None, None, None]);
        // A column-level grant (SQL Server 2022's granular UNMASK) unmasks that column only.
        let granted = [row(&[Some("dbo"), Some("Customers"), Some("Phone")])];
        assert_eq!(
            masked_with(&rows, &granted),
            [Some("email()".to_string()), None, None]
        );
    }

    /// Always Encrypted columns (SQL Server 2016+; the TDS peer has none, so canned rows)
    /// arrive as ciphertext: read as bytes, never text to search or a title, and no key or
    /// foreign key runs through one (a lookup would compare it with a value).
    #[test]
    fn always_encrypted_columns_are_bytes_and_carry_no_keys() {
        let tables = [
            row(&[Some("dbo"), Some("Patients"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Cards"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Payments"), Some("BASE TABLE")]),
        ];
        let c = |t: &str, name: &str, ty: &str| column_row("dbo", t, name, ty, false);
        let columns = [
            c("Patients", "PatientId", "int"),
            c("Patients", "Name", "nvarchar"),
            c("Patients", "Ssn", "char"),
            c("Cards", "CardNumber", "varchar"),
            c("Cards", "Holder", "nvarchar"),
            c("Payments", "PaymentId", "int"),
            c("Payments", "CardNumber", "varchar"),
        ];
        let key = |t: &str, col: &str| {
            row(&[
                Some("dbo"),
                Some(t),
                Some("PK"),
                Some("PK_x"),
                Some(col),
                Some("1"),
            ])
        };
        let keys = [
            key("Patients", "PatientId"),
            key("Cards", "CardNumber"),
            key("Payments", "PaymentId"),
        ];
        let fks = [row(&[
            Some("FK_card"),
            Some("dbo"),
            Some("Payments"),
            Some("CardNumber"),
            Some("dbo"),
            Some("Cards"),
            Some("CardNumber"),
        ])];
        let encrypted = [
            row(&[
                Some("dbo"),
                Some("Patients"),
                Some("Ssn"),
                Some("DETERMINISTIC"),
            ]),
            row(&[
                Some("dbo"),
                Some("Cards"),
                Some("CardNumber"),
                Some("RANDOMIZED"),
            ]),
        ];
        let build = |encrypted: &[Vec<Value>]| {
            build_catalog(CatalogRows {
                tables: &tables,
                columns: &columns,
                keys: &keys,
                fks: &fks,
                encrypted,
                ..CatalogRows::default()
            })
        };
        let raw = build(&encrypted);
        let patients = raw.find("dbo.Patients").expect("Patients");
        let ssn = patients.column("Ssn").expect("Ssn");
        assert_eq!(ssn.kind, ValueKind::Binary);
        assert_eq!(ssn.encrypted.as_deref(), Some("deterministic"));
        assert_eq!(patients.column("Name").expect("Name").kind, ValueKind::Text);
        assert_eq!(patients.primary_key, ["PatientId"]);
        let cards = raw.find("dbo.Cards").expect("Cards");
        assert!(cards.primary_key.is_empty(), "{cards:?}");
        assert!(!cards.key_is_heuristic);
        let payments = raw.find("dbo.Payments").expect("Payments");
        assert!(payments.foreign_keys.is_empty(), "{payments:?}");
        assert_eq!(payments.primary_key, ["PaymentId"]);
        // The same rows without encryption keep every key (the rows above are well formed).
        let plain = build(&[]);
        assert_eq!(
            plain.find("dbo.Cards").expect("Cards").primary_key,
            ["CardNumber"]
        );
        assert_eq!(
            plain
                .find("dbo.Payments")
                .expect("Payments")
                .foreign_keys
                .len(),
            1
        );
    }

    /// A system-versioned table learns its history table from `sys.tables` (SQL Server
    /// 2016+; the TDS peer has no temporal tables, so canned rows); the history is a table of
    /// the catalog like any other.
    #[test]
    fn a_temporal_table_knows_its_history_table() {
        let tables = [
            row(&[Some("dbo"), Some("Employees"), Some("BASE TABLE")]),
            row(&[Some("hist"), Some("EmployeesHistory"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Plain"), Some("BASE TABLE")]),
        ];
        let temporal = [
            row(&[
                Some("dbo"),
                Some("Employees"),
                Some("hist"),
                Some("EmployeesHistory"),
            ]),
            row(&[Some("dbo"), Some("Gone"), Some("hist"), Some("GoneHistory")]),
        ];
        let raw = build_catalog(CatalogRows {
            tables: &tables,
            temporal: &temporal,
            ..CatalogRows::default()
        });
        let history = |t: &str| raw.find(t).and_then(|t| t.history.clone());
        assert_eq!(
            history("dbo.Employees"),
            Some(HistoryTable {
                schema: "hist".into(),
                name: "EmployeesHistory".into()
            })
        );
        assert_eq!(history("dbo.Plain"), None);
        assert_eq!(history("hist.EmployeesHistory"), None);
        assert_eq!(raw.tables.len(), 3);
    }

    /// Synonyms come from `sys.synonyms` with their base resolved in this database (the TDS
    /// peer serves `sys.synonyms` empty, so canned rows): a name finds its synonym as a name
    /// finds a table, and `table_or_base` reaches the base; a synonym for another database
    /// (NULL base) reaches nothing.
    #[test]
    fn synonyms_lead_to_their_base_in_this_database() {
        let tables = [
            row(&[Some("hr"), Some("Salaries"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Pay"), Some("VIEW")]),
        ];
        let synonyms = [
            row(&[Some("dbo"), Some("Wages"), Some("hr"), Some("Salaries")]),
            row(&[Some("dbo"), Some("Remote"), None, None]),
            row(&[Some("sales"), Some("Pay"), Some("hr"), Some("Salaries")]),
        ];
        let raw = build_catalog(CatalogRows {
            tables: &tables,
            synonyms: &synonyms,
            ..CatalogRows::default()
        });
        let base = |schema: Option<&str>, name: &str| {
            raw.table_or_base(schema, name).map(|t| t.qualified())
        };
        assert_eq!(base(Some("dbo"), "Wages").as_deref(), Some("hr.Salaries"));
        assert_eq!(base(Some("DBO"), "wages").as_deref(), Some("hr.Salaries"));
        assert_eq!(base(None, "Wages").as_deref(), Some("hr.Salaries"));
        assert_eq!(base(Some("dbo"), "Remote"), None);
        assert!(raw.synonym(Some("dbo"), "Remote").is_some());
        // A table is found before a synonym of the same name in another schema.
        assert_eq!(base(None, "Pay").as_deref(), Some("dbo.Pay"));
        assert_eq!(base(Some("sales"), "Pay").as_deref(), Some("hr.Salaries"));
        assert_eq!(base(Some("dbo"), "Nowhere"), None);
        assert_eq!(raw.tables.len(), 2);
        let names: Vec<String> = raw.synonyms.iter().map(|s| s.qualified()).collect();
        assert_eq!(names, ["dbo.Remote", "dbo.Wages", "sales.Pay"]);
    }

    #[test]
    fn sensitivity_classifications_describe_their_columns_and_leave_with_hidden_ones() {
        let tables = [
            row(&[Some("dbo"), Some("Customers"), Some("BASE TABLE")]),
            row(&[Some("dbo"), Some("Orders"), Some("BASE TABLE")]),
        ];
        let c = |t: &str, name: &str| column_row("dbo", t, name, "nvarchar", true);
        let columns = [
            c("Customers", "Email"),
            c("Customers", "Phone"),
            c("Customers", "City"),
            c("Orders", "CardNumber"),
            c("Orders", "Total"),
        ];
        let classifications = [
            row(&[
                Some("dbo"),
                Some("Customers"),
                Some("Email"),
                Some("Confidential - GDPR"),
                Some("Contact Info"),
                Some("HIGH"),
            ]),
            row(&[
                Some("dbo"),
                Some("Customers"),
                Some("Phone"),
                Some("Confidential"),
                None,
                Some("NONE"),
            ]),
            row(&[
                Some("dbo"),
                Some("Orders"),
                Some("CardNumber"),
                None,
                Some("Credit Card"),
                Some("CRITICAL"),
            ]),
            row(&[Some("dbo"), Some("Orders"), Some("Total"), None, None, None]),
            row(&[
                Some("dbo"),
                Some("Nowhere"),
                Some("x"),
                Some("Public"),
                None,
                None,
            ]),
        ];
        // Before SQL Server 2019 SSMS kept labels as column properties, read with the
        // descriptions; the 2019 view wins where both speak of a column.
        let legacy = |column: &str, property: &str, value: &str| {
            let table = if column == "Email" {
                "Customers"
            } else {
                "Orders"
            };
            row(&[
                Some("dbo"),
                Some(table),
                Some("3"),
                Some(column),
                Some(value),
                Some(property),
            ])
        };
        let descriptions = [
            legacy("Total", "sys_sensitivity_label_name", "Confidential"),
            legacy("Total", "sys_information_type_name", "Financial"),
            legacy("Total", "MS_Description", "The order's total."),
            legacy("Email", "sys_sensitivity_label_name", "General"),
        ];
        let raw = build_catalog(CatalogRows {
            tables: &tables,
            columns: &columns,
            classifications: &classifications,
            descriptions: &descriptions,
            ..CatalogRows::default()
        });
        let of = |c: &Catalog, t: &str, col: &str| {
            c.find(t)
                .and_then(|t| t.columns.iter().find(|c| c.name == col))
                .and_then(|c| c.sensitivity.clone())
        };
        assert_eq!(
            of(&raw, "Customers", "Email").as_deref(),
            Some("Confidential - GDPR (Contact Info, rank High)")
        );
        assert_eq!(
            of(&raw, "Customers", "Phone").as_deref(),
            Some("Confidential")
        );
        assert_eq!(
            of(&raw, "Orders", "CardNumber").as_deref(),
            Some("classified (Credit Card, rank Critical)")
        );
        assert_eq!(
            of(&raw, "Orders", "Total").as_deref(),
            Some("Confidential (Financial)")
        );
        let total = raw
            .find("Orders")
            .and_then(|t| t.columns.iter().find(|c| c.name == "Total"))
            .and_then(|c| c.description.clone());
        assert_eq!(total.as_deref(), Some("The order's total."));
        assert_eq!(of(&raw, "Customers", "City"), None);
        let rules = crate::db::AccessRules {
            deny_columns: strings(&["Customers.Email"]),
            ..crate::db::AccessRules::default()
        };
        let scoped = crate::tools::scoped_catalog(&rules, &raw);
        assert_eq!(
            crate::tools::classified_columns(&scoped),
            strings(&[
                "dbo.Customers.Phone: Confidential",
                "dbo.Orders.CardNumber: classified (Credit Card, rank Critical)",
                "dbo.Orders.Total: Confidential (Financial)"
            ])
        );
        assert_eq!(crate::tools::classified_columns(&raw).len(), 4);
    }

    /// The peer has no DATABASEPROPERTYEX: the collation's name is checked on its own.
    #[test]
    fn only_utf8_collations_keep_varchar_literals_whole() {
        for utf8 in [
            "Latin1_General_100_CI_AS_SC_UTF8",
            "latin1_general_100_bin2_utf8",
        ] {
            assert!(is_utf8_collation(utf8), "{utf8}");
        }
        for not in [
            "SQL_Latin1_General_CP1_CI_AS",
            "Greek_CI_AS",
            "UTF8",
            "",
            "é_utf8x",
        ] {
            assert!(!is_utf8_collation(not), "{not}");
        }
    }

    /// The peer's sys.extended_properties has no rows: MS_Description is only testable on
    /// canned rows (schema, table, minor_id, column, value).
    #[test]
    fn ms_description_properties_describe_tables_views_and_columns() {
        let long = "x".repeat(MAX_DESCRIPTION_CHARS + 50);
        let descriptions = [
            row(&[
                Some("dbo"),
                Some("Customers"),
                Some("0"),
                None,
                Some(" People who buy.\r\n"),
            ]),
            row(&[
                Some("dbo"),
                Some("Customers"),
                Some("2"),
                Some("Email"),
                Some("Work address"),
            ]),
            row(&[
                Some("dbo"),
                Some("Report"),
                Some("0"),
                None,
                Some("Monthly totals (a view)"),
            ]),
            row(&[
                Some("sales"),
                Some("Boxes"),
                Some("1"),
                Some("BoxId"),
                Some(long.as_str()),
            ]),
            // A column dropped since (no name), an empty value, a table not in the catalog.
            row(&[
                Some("dbo"),
                Some("OrderLines"),
                Some("9"),
                None,
                Some("gone"),
            ]),
            row(&[
                Some("dbo"),
                Some("OrderLines"),
                Some("1"),
                Some("OrderId"),
                Some("  "),
            ]),
            row(&[
                Some("dbo"),
                Some("Nowhere"),
                Some("0"),
                None,
                Some("no such table"),
            ]),
        ];
        let cat = canned_catalog_with(&[], &[], &descriptions, &[]);
        let t = |n: &str| cat.tables.iter().find(|t| t.name == n).expect(n);
        assert_eq!(
            t("Customers").description.as_deref(),
            Some("People who buy.")
        );
        assert_eq!(
            t("Customers")
                .column("Email")
                .and_then(|c| c.description.as_deref()),
            Some("Work address")
        );
        assert_eq!(
            t("Customers")
                .column("CustomerID")
                .and_then(|c| c.description.clone()),
            None
        );
        assert_eq!(
            t("Report").description.as_deref(),
            Some("Monthly totals (a view)")
        );
        let cut = t("Boxes")
            .column("BoxId")
            .and_then(|c| c.description.clone())
            .expect("cut");
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(
            t("OrderLines").description,
            None,
            "a nameless column is not the table"
        );
        assert!(
            t("OrderLines")
                .columns
                .iter()
                .all(|c| c.description.is_none())
        );
    }

    /// The peer has no sys.key_constraints: declared keys are only testable on canned rows.
    #[test]
    fn declared_composite_keys_and_foreign_keys_come_from_sys_views() {
        let keys = [
            row(&[
                Some("dbo"),
                Some("OrderLines"),
                Some("PK"),
                Some("PK_OL"),
                Some("OrderId"),
                Some("1"),
            ]),
            row(&[
                Some("dbo"),
                Some("OrderLines"),
                Some("PK"),
                Some("PK_OL"),
                Some("Line"),
                Some("2"),
            ]),
            row(&[
                Some("dbo"),
                Some("Customers"),
                Some("UQ"),
                Some("UQ_Email"),
                Some("Email"),
                Some("1"),
            ]),
        ];
        let fks = [row(&[
            Some("FK_OL_C"),
            Some("dbo"),
            Some("OrderLines"),
            Some("CustomerId"),
            Some("dbo"),
            Some("Customers"),
            Some("CustomerID"),
        ])];
        let cat = canned_catalog(&keys, &fks);
        let ol = cat.find("OrderLines").expect("table");
        assert_eq!(ol.primary_key, ["OrderId", "Line"]);
        assert!(!ol.key_is_heuristic);
        assert_eq!(ol.foreign_keys.len(), 1);
        assert_eq!(ol.foreign_keys[0].columns, ["CustomerId"]);
        assert_eq!(ol.foreign_keys[0].ref_table, "Customers");
        assert_eq!(ol.foreign_keys[0].ref_columns, ["CustomerID"]);
        assert_eq!(ol.column("Price").map(|c| c.kind), Some(ValueKind::Decimal));
        // No primary key but a unique constraint: the constraint is the key, not a guess.
        let customers = cat.find("Customers").expect("table");
        assert_eq!(customers.primary_key, ["Email"]);
        assert!(!customers.key_is_heuristic);
    }

    /// What runs against the peer, and against servers that hide sys.* from the login.
    #[test]
    fn tables_without_declared_keys_fall_back_to_id_columns_and_say_so() {
        let cat = canned_catalog(&[], &[]);
        let key = |name: &str| {
            let t = cat.find(name).expect("table");
            (t.primary_key.clone(), t.key_is_heuristic)
        };
        assert_eq!(key("Customers"), (strings(&["CustomerID"]), true));
        assert_eq!(key("Categories"), (strings(&["category_id"]), true));
        assert_eq!(key("sales.Boxes"), (strings(&["BoxId"]), true));
        assert_eq!(key("Report"), (strings(&["Id"]), true));
        // OrderLines has no column named after itself.
        assert_eq!(key("OrderLines"), (Vec::new(), false));
        assert_eq!(cat.find("Report").map(|t| t.kind), Some("view"));
        let order: Vec<String> = cat.tables.iter().map(|t| t.qualified()).collect();
        assert_eq!(
            order,
            [
                "dbo.Categories",
                "dbo.Customers",
                "dbo.OrderLines",
                "dbo.Report",
                "sales.Boxes"
            ]
        );
    }

    #[test]
    fn plural_table_names_are_made_singular() {
        assert_eq!(singular("Customers").as_deref(), Some("Customer"));
        assert_eq!(singular("Categories").as_deref(), Some("Category"));
        assert_eq!(singular("Boxes").as_deref(), Some("Box"));
        assert_eq!(singular("Addresses").as_deref(), Some("Address"));
        // Naive, but harmless: it only makes the fallback also look for a `StatuId` column.
        assert_eq!(singular("Status"), Some("Statu".into()));
        assert_eq!(singular("Class"), None);
        assert_eq!(singular("s"), None);
        assert_eq!(singular("Person"), None);
    }

    #[test]
    fn declared_types_are_written_as_sql_server_does() {
        assert_eq!(
            declared_type("nvarchar", Some(-1), None, None, None),
            "nvarchar(max)"
        );
        assert_eq!(
            declared_type("varchar", Some(50), None, None, None),
            "varchar(50)"
        );
        assert_eq!(
            declared_type("decimal", None, Some(10), Some(2), None),
            "decimal(10,2)"
        );
        assert_eq!(
            declared_type("datetime2", None, None, None, Some(7)),
            "datetime2(7)"
        );
        assert_eq!(declared_type("int", None, Some(10), Some(0), None), "int");
        assert_eq!(kind_of("uniqueidentifier"), ValueKind::Other);
        assert_eq!(kind_of("datetimeoffset"), ValueKind::Temporal);
        assert_eq!(kind_of("smallmoney"), ValueKind::Decimal);
        assert_eq!(kind_of("xml"), ValueKind::Text);
    }

    fn ctx() -> ErrorContext {
        ErrorContext {
            target: "sql.example.com:1433".into(),
            login_hint: "database[0].user / database[0].password".into(),
            login_check: "the user and password".into(),
            tls_hint: "database[0].encrypt / trust_server_certificate / ca_file".into(),
        }
    }

    /// The peer raises 18456, 208 and a few others; permission, lock and Azure errors it
    /// cannot, so the mapping is checked by number.
    #[test]
    fn sql_server_error_numbers_become_actionable_errors() {
        let c = ctx();
        let e = server_error(18456, 14, "Login failed for user 'x'.", &c);
        assert!(
            matches!(&e, DbError::Unavailable(m) if m.contains("login failed") && m.contains("database[0].user / database[0].password")),
            "{e:?}"
        );
        assert!(is_config_problem(&e));
        let e = server_error(208, 16, "Invalid object name 'dbo.Nope'.", &c);
        assert!(
            matches!(&e, DbError::Sql(m) if m == "Invalid object name 'dbo.Nope' (SQL Server error 208)"),
            "{e:?}"
        );
        let e = server_error(
            229,
            14,
            "The SELECT permission was denied on the object 'Salaries'.",
            &c,
        );
        assert!(
            matches!(&e, DbError::Sql(m) if m.starts_with("permission denied") && m.contains("GRANT SELECT")),
            "{e:?}"
        );
        let e = server_error(1222, 16, "Lock request time out period exceeded.", &c);
        assert!(
            matches!(&e, DbError::Sql(m) if m.starts_with("lock timeout")),
            "{e:?}"
        );
        let e = server_error(40613, 17, "Database is not currently available.", &c);
        assert!(e.is_transient(), "{e:?}");
        let e = server_error(
            596,
            21,
            "Cannot continue the execution because the session is in the kill state.",
            &c,
        );
        assert!(e.is_transient(), "{e:?}");
        let e = server_error(207, 16, "Invalid column name 'x'.", &c);
        assert!(
            matches!(&e, DbError::Sql(m) if m == "Invalid column name 'x'. (SQL Server error 207)"),
            "{e:?}"
        );
        // `isolation = "snapshot"` where the database does not allow it: the operator's to
        // fix (the server refuses to start on it), with both ways to.
        let e = server_error(
            3952,
            16,
            "Snapshot isolation transaction failed accessing database 'Sales' because snapshot \
             isolation is not allowed in this database. Use ALTER DATABASE to allow snapshot \
             isolation.",
            &c,
        );
        assert!(
            matches!(&e, DbError::Unavailable(m) if m.contains("ALLOW_SNAPSHOT_ISOLATION ON")
                && m.contains("isolation = \"read_committed\"") && m.contains("sql.example.com")),
            "{e:?}"
        );
        assert!(is_config_problem(&e));
        let e = server_error(
            3961,
            16,
            "Snapshot isolation transaction failed in database 'Sales' because the object \
             accessed by the statement has been modified by a DDL statement in another \
             concurrent transaction since the start of this transaction.",
            &c,
        );
        assert!(
            matches!(&e, DbError::Sql(m) if m.contains("run it again")),
            "{e:?}"
        );
        let e = server_error(
            206,
            16,
            "Operand type clash: varchar(11) is incompatible with varchar(11) encrypted with \
             (encryption_type = 'DETERMINISTIC', encryption_algorithm_name = \
             'AEAD_AES_256_CBC_HMAC_SHA_256', column_encryption_key_name = 'CEK1', \
             column_encryption_key_database_name = 'Clinic')",
            &c,
        );
        assert!(
            matches!(&e, DbError::Sql(m) if m.contains("Always Encrypted") && m.contains("filter on other columns")),
            "{e:?}"
        );
        // The same number for another clash is SQL Server's own message.
        let e = server_error(
            206,
            16,
            "Operand type clash: int is incompatible with date",
            &c,
        );
        assert!(
            matches!(&e, DbError::Sql(m) if m.starts_with("Operand type clash: int")),
            "{e:?}"
        );
        assert!(!is_config_problem(&DbError::Unavailable(
            "cannot reach x: refused".into()
        )));
    }

    /// A missing-table message keeps only SQL Server's own first sentence: pysqlbridge goes on
    /// with "This server has: …" and lists every table, denied ones included, which the tool
    /// error would have shown the model (found by `tests/backends.rs`).
    #[test]
    fn a_missing_table_error_names_only_the_missing_object() {
        let c = ctx();
        let e = server_error(
            208,
            16,
            "invalid object name 'Custmers'. This server has: Customers, Orders, Salaries",
            &c,
        );
        let text = e.to_string();
        assert!(text.contains("invalid object name 'Custmers'"), "{text}");
        assert!(text.contains("208"), "{text}");
        assert!(
            !text.contains("Salaries") && !text.contains("This server"),
            "{text}"
        );
    }

    #[test]
    fn connection_failures_are_transient_and_name_the_server() {
        let c = ctx();
        let io = TdsError::Io {
            kind: std::io::ErrorKind::ConnectionRefused,
            message: "Connection refused (os error 111)".into(),
        };
        let e = connect_error(&io, &c);
        assert!(e.is_transient());
        assert!(e.to_string().contains("sql.example.com:1433"), "{e}");
        let e = query_error(&io, &c);
        assert!(e.to_string().contains("was lost"), "{e}");
        assert!(is_fatal(&io));
        let tls = TdsError::Tls("the certificate was rejected: UnknownIssuer. To connect anyway use Config::trust_cert()".into());
        let e = connect_error(&tls, &c);
        let text = e.to_string();
        assert!(
            text.contains("UnknownIssuer") && !text.contains("Config::"),
            "{text}"
        );
        assert!(is_config_problem(&e));
    }

    /// tiberius refuses a `varchar` value whose bytes are not valid in its code page, and one
    /// in a collation whose code page it does not know; the peer serves only `nvarchar`
    /// columns, so neither can come from it. The message names the actual causes rather
    /// than only the `varchar(max)` cut.
    #[test]
    fn undecodable_text_is_explained_by_its_code_page() {
        let c = ctx();
        let e = query_error(&TdsError::Encoding("invalid sequence".into()), &c);
        let text = e.to_string();
        assert!(matches!(e, DbError::Sql(_)), "{e:?}");
        assert!(
            text.contains("not valid in its column's code page")
                && text.contains("CAST(col AS nvarchar(max))"),
            "{text}"
        );
        let e = query_error(
            &TdsError::Encoding("encoding: unspported encoding (LCID: 0x0401, sort ID: 0)".into()),
            &c,
        );
        let text = e.to_string();
        assert!(
            text.contains("code page this server cannot read") && !text.contains("KiB"),
            "{text}"
        );
    }

    /// tiberius' handshake-timeout message mentions "TLS negotiation"; a timed-out handshake
    /// is a server that stalled (transient), not a TLS configuration problem. rustls' own
    /// handshake failures still read as TLS. (The peer always completes its handshakes; the
    /// stall itself is tested in `tests/mssql.rs` against a silent listener.)
    #[test]
    fn a_timed_out_handshake_is_a_stall_and_rustls_failures_are_tls() {
        let c = ctx();
        let timed_out = TdsError::Io {
            kind: std::io::ErrorKind::TimedOut,
            message: "the connection handshake (prelogin, TLS negotiation and login) did not \
                      complete within 5s; the server accepted the TCP connection"
                .into(),
        };
        let e = connect_error(&timed_out, &c);
        assert!(!is_config_problem(&e), "{e}");
        assert!(e.is_transient());
        assert!(
            e.to_string()
                .contains("accepted the connection but did not complete the login"),
            "{e}"
        );
        for rustls in [
            "tls handshake eof",
            "received corrupt message of type InvalidContentType",
            "received fatal alert: HandshakeFailure",
        ] {
            let io = TdsError::Io {
                kind: std::io::ErrorKind::InvalidData,
                message: rustls.into(),
            };
            let e = connect_error(&io, &c);
            assert!(is_config_problem(&e), "{rustls}: {e}");
        }
        // Not every message that mentions TLS comes from rustls.
        let io = TdsError::Io {
            kind: std::io::ErrorKind::ConnectionReset,
            message: "connection reset while waiting for the TLS prelogin reply".into(),
        };
        assert!(!is_config_problem(&connect_error(&io, &c)));
    }

    /// tiberius hands money over as `scaled as f64 / 1e4`; rounding `f * 1e4` alone is off by
    /// one for some amounts this large (the peer has no money type).
    #[test]
    fn large_money_amounts_stay_exact() {
        for (scaled, want) in [
            (3_769_200_910_284_025_i64, "376920091028.4025"),
            (-3_769_200_910_284_025_i64, "-376920091028.4025"),
            (5_497_558_138_879_999_i64, "549755813887.9999"),
            (1, "0.0001"),
        ] {
            let f = scaled as f64 / 1e4;
            assert_eq!(
                dec(ColumnData::F64(Some(f)), ColumnType::Money),
                Value::Decimal(want.into()),
                "{scaled}"
            );
        }
        // Every amount in a band just under the bound reads back as itself.
        let top = (1_i64 << 39) * 10_000 - 1;
        for scaled in (top - 200_000..=top).step_by(7) {
            let f = scaled as f64 / 1e4;
            assert_eq!(
                money_text(f),
                decimal_text(i128::from(scaled), 4),
                "{scaled}"
            );
        }
    }

    /// After a failed reload the previous catalog is served for `CATALOG_RETRY` without
    /// another attempt. The server here accepts connections and never answers, so an attempt
    /// would cost the whole connect timeout (2 s). No TDS peer can be told to go silent on
    /// cue, hence a bare listener.
    #[tokio::test]
    async fn a_failed_reload_serves_the_previous_catalog_without_retrying_at_once() {
        let (_silent, _dir, b) = backend_on_a_silent_server();
        let old = Arc::new(build_catalog(CatalogRows::default()));
        let long_ago = Instant::now() - CATALOG_TTL - Duration::from_secs(1);
        let unavailable = || DbError::Unavailable("down".into());
        // Past its TTL, with a reload that failed a moment ago: served at once.
        {
            let mut cache = b.catalog_cache();
            cache.loaded = Some((long_ago, old.clone()));
            cache.failed = Some((Instant::now() - Duration::from_secs(1), unavailable()));
        }
        let started = Instant::now();
        let got = b.catalog().await.expect("the previous catalog");
        assert!(Arc::ptr_eq(&got, &old));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Once the failure is older than CATALOG_RETRY, the next call tries again (and pays
        // the connect timeout before falling back to the previous catalog).
        b.catalog_cache().failed = Some((long_ago, unavailable()));
        let started = Instant::now();
        let got = b
            .catalog()
            .await
            .expect("the previous catalog, after a try");
        assert!(Arc::ptr_eq(&got, &old));
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    /// A backend whose server accepts connections and never answers (a connection attempt
    /// costs the connect timeout, 2 s), with the listener and the password's directory that
    /// must outlive it.
    fn backend_on_a_silent_server() -> (std::net::TcpListener, tempfile::TempDir, MssqlBackend) {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw").expect("write");
        let cfg = MssqlConfig {
            host: Some("127.0.0.1".into()),
            port: Some(port),
            database: Some("Sales".into()),
            user: Some("reader".into()),
            password: Some(crate::config::SecretSource {
                file: Some(file),
                env: None,
            }),
            connect_timeout_secs: Some(2),
            ..MssqlConfig::default()
        };
        let settings = MssqlSettings::from_config(&cfg, "database[0]", 1, Duration::from_secs(5))
            .expect("settings");
        (silent, dir, MssqlBackend::new(settings))
    }

    /// A name the catalog does not know has it read anew, unless it was read within
    /// `CATALOG_RECHECK`: a name nobody has is not a reload per call. Whether a load was
    /// tried shows as time: the server here never answers (the peer test
    /// `a_table_made_since_the_catalog_was_read_is_found_at_once` shows a real reload).
    #[tokio::test]
    async fn a_miss_reloads_the_catalog_unless_it_was_read_a_moment_ago() {
        let (_silent, _dir, b) = backend_on_a_silent_server();
        let old = Arc::new(build_catalog(CatalogRows::default()));
        let quick = Duration::from_secs(1);
        // Read a moment ago: served at once, to a miss as to anyone.
        b.catalog_cache().loaded = Some((Instant::now(), old.clone()));
        let started = Instant::now();
        let got = b.catalog_after_miss().await.expect("catalog");
        assert!(Arc::ptr_eq(&got, &old));
        assert!(started.elapsed() < quick, "{:?}", started.elapsed());
        // Older than CATALOG_RECHECK, within CATALOG_TTL: served at once to anyone else ...
        let read_at = Instant::now() - CATALOG_RECHECK - Duration::from_secs(1);
        b.catalog_cache().loaded = Some((read_at, old.clone()));
        let started = Instant::now();
        let got = b.catalog().await.expect("catalog");
        assert!(Arc::ptr_eq(&got, &old));
        assert!(started.elapsed() < quick, "{:?}", started.elapsed());
        // ... and read anew after a miss (which fails here and serves the previous one).
        let started = Instant::now();
        let got = b.catalog_after_miss().await.expect("the previous catalog");
        assert!(Arc::ptr_eq(&got, &old));
        assert!(started.elapsed() >= quick, "{:?}", started.elapsed());
        // That failure holds the next miss off for CATALOG_RETRY.
        let started = Instant::now();
        b.catalog_after_miss().await.expect("the previous catalog");
        assert!(started.elapsed() < quick, "{:?}", started.elapsed());
    }

    /// On by default with `host`; a connection string's own `MultiSubnetFailover` otherwise
    /// (ADO.NET's default, off); the key wins over both. What tiberius then does, connecting
    /// to each address at once, would need a host name with several addresses, which a test
    /// cannot make here (names resolve through `/etc/hosts`, and `localhost` has one).
    #[test]
    fn multi_subnet_failover_is_on_with_host_and_the_strings_own_with_a_string() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw").expect("write");
        let host = |key: Option<bool>| MssqlConfig {
            host: Some("listener.example.com".into()),
            database: Some("Sales".into()),
            user: Some("reader".into()),
            password: Some(crate::config::SecretSource {
                file: Some(file.clone()),
                env: None,
            }),
            multi_subnet_failover: key,
            ..MssqlConfig::default()
        };
        let cs = dir.path().join("cs");
        let string = |text: &str, key: Option<bool>| {
            std::fs::write(
                &cs,
                format!("Server=tcp:listener,1433;User Id=u;Password=p;{text}"),
            )
            .expect("write");
            MssqlConfig {
                connection_string: Some(crate::config::SecretSource {
                    file: Some(cs.clone()),
                    env: None,
                }),
                multi_subnet_failover: key,
                ..MssqlConfig::default()
            }
        };
        let on = |cfg: MssqlConfig| {
            MssqlSettings::from_config(&cfg, "database[0]", 4, Duration::from_secs(30))
                .expect("settings")
                .config
                .get_multi_subnet_failover()
        };
        assert!(on(host(None)));
        assert!(!on(host(Some(false))));
        assert!(!on(string("", None)));
        assert!(on(string("MultiSubnetFailover=True", None)));
        assert!(on(string("", Some(true))));
        assert!(!on(string("MultiSubnetFailover=True", Some(false))));
    }

    #[test]
    fn settings_never_show_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "Sup3r-Secret\n").expect("write");
        let cfg = MssqlConfig {
            host: Some("db".into()),
            database: Some("Sales".into()),
            user: Some("reader".into()),
            password: Some(crate::config::SecretSource {
                file: Some(file),
                env: None,
            }),
            ..MssqlConfig::default()
        };
        let s = MssqlSettings::from_config(&cfg, "database[0]", 4, Duration::from_secs(30))
            .expect("settings");
        let shown = format!("{s:?} {cfg:?} {}", cfg.describe());
        assert!(!shown.contains("Sup3r-Secret"), "{shown}");
        assert_eq!(s.target, "db:1433");
        assert!(cfg.describe().contains("password from file"));
        let missing = MssqlConfig {
            password: Some(crate::config::SecretSource {
                file: None,
                env: Some("MSSQL_MCP_SURELY_UNSET_PASSWORD".into()),
            }),
            ..cfg
        };
        let err = MssqlSettings::from_config(&missing, "database[3]", 4, Duration::from_secs(30))
            .expect_err("unset variable");
        assert_eq!(err.key, "database[3].password.env");
    }

    /// Only a file can change under a running server, so only a password or connection
    /// string from a file is read again for new connections ([`Rotation`]).
    #[test]
    fn a_login_secret_is_watched_only_when_it_is_in_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "Sup3r-Secret\n").expect("write");
        let from_file = Some(crate::config::SecretSource {
            file: Some(file.clone()),
            env: None,
        });
        let cfg = MssqlConfig {
            host: Some("db".into()),
            database: Some("Sales".into()),
            user: Some("reader".into()),
            password: from_file.clone(),
            ..MssqlConfig::default()
        };
        let watched = |cfg: &MssqlConfig| {
            MssqlSettings::from_config(cfg, "database[0]", 4, Duration::from_secs(30))
                .expect("settings")
                .rotation
                .map(|r| (r.secret_key.clone(), r.target.clone(), r.database.clone()))
        };
        assert_eq!(
            watched(&cfg),
            Some(("database[0].password".into(), "db:1433".into(), None))
        );
        // A variable cannot change under a running process: not watched.
        let env_cfg = MssqlConfig {
            password: Some(crate::config::SecretSource {
                file: None,
                env: Some("MSSQL_PASSWORD".into()),
            }),
            ..cfg.clone()
        };
        let resolved = resolve(&cfg, "database[0]", None).expect("resolved");
        assert!(Rotation::watch(&env_cfg, "database[0]", &resolved, "").is_none());
        std::fs::write(
            &file,
            "Server=tcp:db.example.com,1433;Initial Catalog=Sales;User Id=r;Password=x",
        )
        .expect("write");
        let string = MssqlConfig {
            connection_string: from_file.clone(),
            ..MssqlConfig::default()
        };
        assert_eq!(
            watched(&string),
            Some((
                "database[0].connection_string".into(),
                "db.example.com:1433".into(),
                Some("sales".into())
            ))
        );
        // An Entra login reads its token, secret or certificate for each connection already.
        let entra = MssqlConfig {
            connection_string: from_file,
            authentication: Some(MssqlAuthentication::EntraManagedIdentity),
            ..MssqlConfig::default()
        };
        assert_eq!(watched(&entra), None);
        assert_eq!(
            string_database("Server=x;DATABASE = Sales ;Password=p").as_deref(),
            Some("sales")
        );
        assert_eq!(
            string_database("Server=x;DatabaseName={Q;1}").as_deref(),
            Some("q;1")
        );
        assert_eq!(string_database("Server=x"), None);
    }

    #[test]
    fn a_bad_connection_string_is_refused_without_repeating_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cs");
        std::fs::write(&file, "Server=tcp:db,1433;Password='unterminated-S3cret;").expect("write");
        let cfg = MssqlConfig {
            connection_string: Some(crate::config::SecretSource {
                file: Some(file),
                env: None,
            }),
            ..MssqlConfig::default()
        };
        let err = MssqlSettings::from_config(&cfg, "database[0]", 4, Duration::from_secs(30))
            .expect_err("bad string");
        assert_eq!(err.key, "database[0].connection_string");
        assert!(!err.to_string().contains("S3cret"), "{err}");
    }

    #[test]
    fn ado_values_are_found_however_they_are_quoted() {
        let cs = "Server=tcp:x,1433; Password='a;b=''c'' ';Application Name={x;}}y};authentication = \"Active Directory Default\";Encrypt=True";
        assert_eq!(
            ado_value(cs, "Authentication").as_deref(),
            Some("Active Directory Default")
        );
        assert_eq!(ado_value(cs, "password").as_deref(), Some("a;b='c' "));
        assert_eq!(ado_value(cs, "ApplicationName").as_deref(), Some("x;}y"));
        assert_eq!(ado_value(cs, "encrypt").as_deref(), Some("True"));
        assert_eq!(ado_value(cs, "Database"), None);
        assert_eq!(ado_value("", "x"), None);
        assert_eq!(
            ado_value("a='unterminated", "a").as_deref(),
            Some("unterminated")
        );
    }

    /// The Azure portal's passwordless ADO.NET string says `Authentication="Active Directory
    /// Default"`; tiberius would ignore it and log in with no user at all.
    #[test]
    fn an_entra_method_in_the_connection_string_is_refused_with_the_keys_to_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cs");
        let cfg = |auth: Option<crate::config::MssqlAuthentication>| MssqlConfig {
            connection_string: Some(crate::config::SecretSource {
                file: Some(file.clone()),
                env: None,
            }),
            authentication: auth,
            ..MssqlConfig::default()
        };
        for (method, fix) in [
            ("\"Active Directory Default\"", "entra_managed_identity"),
            ("ActiveDirectoryMSI", "entra_managed_identity"),
            (
                "Active Directory Service Principal",
                "entra_service_principal",
            ),
            ("ActiveDirectoryInteractive", "a SQL login"),
        ] {
            std::fs::write(
                &file,
                format!("Server=tcp:x.database.windows.net,1433;Initial Catalog=db;Encrypt=True;Authentication={method};"),
            )
            .expect("write");
            let err =
                MssqlSettings::from_config(&cfg(None), "database[0]", 4, Duration::from_secs(30))
                    .expect_err(method);
            assert_eq!(err.key, "database[0].connection_string");
            assert!(err.fix.contains(fix), "{method}: {err}");
            // Said in the TOML: the string's method is not read.
            let token = dir.path().join("token");
            std::fs::write(&token, "opaque").expect("write token");
            let mut entra = cfg(Some(crate::config::MssqlAuthentication::EntraAccessToken));
            entra.access_token = Some(crate::config::SecretSource {
                file: Some(token),
                env: None,
            });
            MssqlSettings::from_config(&entra, "database[0]", 4, Duration::from_secs(30))
                .expect("the TOML's authentication wins");
        }
        std::fs::write(
            &file,
            "Server=tcp:x,1433;User Id=u;Password=p;Authentication=SqlPassword",
        )
        .expect("write");
        MssqlSettings::from_config(&cfg(None), "database[0]", 4, Duration::from_secs(30))
            .expect("SqlPassword is what the string does anyway");
    }

    /// `Integrated Security=SSPI` with an account and password is an NTLM login (what the
    /// string says, or `authentication = "windows"`); every other way of asking for Windows
    /// in the string is refused with the string to write, and never quotes the password.
    #[test]
    fn a_windows_login_in_the_connection_string_needs_the_account_and_its_password() {
        use crate::config::MssqlAuthentication::{self, EntraAccessToken, SqlPassword, Windows};
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cs");
        let settings = |string: &str, auth: Option<MssqlAuthentication>| {
            std::fs::write(&file, format!("Server=tcp:db,1433;Database=Sales;{string}"))
                .expect("write");
            let cfg = MssqlConfig {
                connection_string: Some(crate::config::SecretSource {
                    file: Some(file.clone()),
                    env: None,
                }),
                authentication: auth,
                ..MssqlConfig::default()
            };
            MssqlSettings::from_config(&cfg, "database[0]", 4, Duration::from_secs(30))
        };
        for (string, auth) in [
            (
                "Integrated Security=SSPI;User Id=CORP\\svc;Password=S3cret",
                None,
            ),
            (
                "IntegratedSecurity=true;UID=svc@corp.example.com;PWD=S3cret",
                None,
            ),
            (
                "Integrated Security=SSPI;User Id=CORP\\svc;Password=S3cret",
                Some(Windows),
            ),
        ] {
            let s = settings(string, auth).unwrap_or_else(|e| panic!("{string}: {e}"));
            assert!(
                s.login_check.contains("CREATE LOGIN [") && s.login_check.contains("FROM WINDOWS"),
                "{}",
                s.login_check
            );
            assert!(!s.login_check.contains("S3cret"), "{}", s.login_check);
        }
        for (string, auth, says) in [
            ("Trusted_Connection=yes", None, "Trusted_Connection"),
            ("Integrated Security=SSPI", None, "Kerberos"),
            (
                "Integrated Security=SSPI;User Id=CORP\\svc",
                None,
                "Kerberos",
            ),
            (
                "Integrated Security=SSPI;User Id=svc;Password=S3cret",
                None,
                "no domain",
            ),
            (
                "Integrated Security=SSPI;User Id=CORP\\svc;Password=S3cret;Encrypt=False",
                None,
                "in the clear",
            ),
            (
                "Integrated Security=SSPI;User Id=CORP\\svc;Password=S3cret;Encrypt=DANGER_PLAINTEXT",
                None,
                "in the clear",
            ),
            ("User Id=CORP\\svc;Password=S3cret", None, "Windows account"),
            (
                "User Id=reader;Password=S3cret",
                Some(Windows),
                "does not ask",
            ),
            (
                "Integrated Security=SSPI;User Id=CORP\\svc;Password=S3cret",
                Some(SqlPassword),
                "sql_password",
            ),
            (
                "Integrated Security=SSPI;User Id=CORP\\svc;Password=S3cret",
                Some(EntraAccessToken),
                "entra_access_token",
            ),
        ] {
            let err = settings(string, auth).expect_err(string);
            assert_eq!(err.key, "database[0].connection_string", "{string}: {err}");
            assert!(err.to_string().contains(says), "{string}: {err}");
            assert!(!err.to_string().contains("S3cret"), "{string}: {err}");
        }
        // A SQL login is still just that.
        let s = settings("User Id=reader;Password=S3cret", None).expect("sql login");
        assert_eq!(s.login_check, "the user and password");
    }
}
