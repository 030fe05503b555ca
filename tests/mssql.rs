//! The SQL Server backend against a real TDS server: `pysqlbridge` (PyPI), an independent
//! server speaking SQL Server's wire protocol, started per test on a free loopback port with a
//! fixture dataset written by the test.
//!
//! The peer is located at `$PYSQLBRIDGE_PYTHON` or `.ci/venv/bin/python`; when neither exists
//! the tests fail with the command that installs it (they are never skipped silently).
//!
//! What the peer cannot do (declared keys, decimal/date/GUID types, `SET ROWCOUNT`, `WAITFOR`,
//! full-text search) is covered by unit tests in `src/db/mssql.rs` on canned values; Azure
//! SQL's redirect, which it never sends, by a stand-in gateway here ([`Redirector`]). Windows
//! logins, which it checks through Windows' own SSPI, run against it with an NTLM check of
//! ours in its place (`tests/common/ntlm_peer.py`, [`Peer::start_windows`]).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mssql_mcp::config::{MssqlAuthentication, MssqlConfig, MssqlEncrypt, SecretSource};
use mssql_mcp::db::entra::EntraLogin;
use mssql_mcp::db::lift::lift;
use mssql_mcp::db::mssql::{MssqlBackend, MssqlSettings};
use mssql_mcp::db::{
    Backend, DbError, Page, PoolStats, RowSet, SearchRequest, SqlDialect, TableInfo, Value,
};

mod common;
use common::{LOGIN, PASSWORD, free_port};

/// The peer is one Python process per test; running them one at a time keeps the shared
/// two-core machine (and the peer's accept backlog of 5) out of the results.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// CSV field quoting.
fn csv(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Number of rows in the `Events` table (large enough to exceed the drain budget).
const EVENTS: usize = 3_000;

/// Writes the fixture tables and the peer's configuration into `dir`.
fn write_fixture(dir: &Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir data");
    let cities = ["Zürich", "東京", "São Paulo", "Reykjavík", "Oslo"];
    let mut customers = String::from("CustomerId,Name,Email,City,Notes\n");
    for i in 1..=40 {
        let name = match i {
            1 => "Zoë Ærøskøbing".to_string(),
            2 => "Café \"Olé\", Ltd".to_string(),
            3 => "100% Natural_Foods".to_string(),
            4 => "Bracket [Shop]".to_string(),
            _ => format!("Customer {i:02}"),
        };
        let email = if i % 7 == 0 {
            String::new() // NULL
        } else {
            format!("c{i}@example.com")
        };
        let notes = if i == 5 {
            "x".repeat(3_900) // long, but under the peer's 4,000 character limit
        } else if i % 3 == 0 {
            String::new()
        } else {
            format!(
                "prefers {} delivery",
                if i % 2 == 0 { "morning" } else { "evening" }
            )
        };
        customers.push_str(&csv(&[
            i.to_string(),
            name,
            email,
            cities[i % cities.len()].to_string(),
            notes,
        ]));
        customers.push('\n');
    }
    std::fs::write(data.join("customers.csv"), customers).expect("write customers");

    let mut products = String::from("Id,Name,Category,Price\n");
    let names = [
        "Espresso Machine",
        "Coffee Grinder",
        "Tea Kettle",
        "Milk Frother",
        "Mocha Pot",
    ];
    for (i, n) in names.iter().enumerate() {
        products.push_str(&csv(&[
            (i + 1).to_string(),
            n.to_string(),
            if i < 3 { "kitchen" } else { "barista" }.to_string(),
            format!("{}.5", 10 * (i + 1)),
        ]));
        products.push('\n');
    }
    std::fs::write(data.join("products.csv"), products).expect("write products");

    let orders: Vec<serde_json::Value> = (1..=120)
        .map(|i| {
            serde_json::json!({
                "OrderId": i,
                "CustomerId": (i % 40) + 1,
                "ProductId": (i % 5) + 1,
                "Quantity": i % 4 + 1,
                "Status": if i % 10 == 0 { serde_json::Value::Null } else { serde_json::json!("shipped") },
                "OrderDate": format!("2024-{:02}-{:02}", i % 12 + 1, i % 28 + 1),
            })
        })
        .collect();
    std::fs::write(
        data.join("orders.json"),
        serde_json::to_vec(&orders).expect("json"),
    )
    .expect("write orders");

    let mut events = String::from("event_id,kind,payload\n");
    for i in 1..=EVENTS {
        events.push_str(&format!("{i},kind{},payload number {i}\n", i % 7));
    }
    std::fs::write(data.join("events.csv"), events).expect("write events");

    let mut tags = String::from("label,weight\n");
    for i in 1..=12 {
        tags.push_str(&format!("tag{i:02},{i}\n"));
    }
    std::fs::write(data.join("tags.csv"), tags).expect("write tags");

    common::write_peer_config(
        dir,
        serde_json::json!([
            {"name": "Tags", "csv": "data/tags.csv"},
            {"name": "Customers", "csv": "data/customers.csv"},
            {"name": "Products", "csv": "data/products.csv"},
            {"name": "Orders", "json": "data/orders.json"},
            {"name": "Events", "csv": "data/events.csv"},
        ]),
    );
    // With a trailing newline, as an editor or `systemd-creds` leaves it: the server trims it.
    let mut f = std::fs::File::create(dir.join("password")).expect("password file");
    writeln!(f, "{PASSWORD}").expect("write password");
}

/// A running pysqlbridge; killed on drop.
struct Peer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Also admits [`WINDOWS_ACCOUNT`] by NTLM ([`common::spawn_pysqlbridge_windows`]).
    windows: bool,
    /// How a Windows login's NTLM challenge is sent broken, if it is.
    malformed: Option<&'static str>,
    /// Knows `sp_set_session_context` ([`common::spawn_pysqlbridge_context`]).
    context: bool,
    /// Keeps SQL Server's rule for snapshot isolation, allowing it or not
    /// ([`common::spawn_pysqlbridge_isolation`]).
    snapshot: Option<bool>,
}

/// The Windows account a [`Peer::start_windows`] admits: its domain's names (NetBIOS and
/// DNS), the user and the password (a test secret, not a real one).
const WINDOWS_ACCOUNT: (&str, &str, &str) = ("CORP,corp.example.com", "svc_mcp", "W1ndows-Pa55!");

impl Peer {
    fn start() -> Peer {
        Peer::start_as(false, None)
    }

    /// A peer that also admits [`WINDOWS_ACCOUNT`].
    fn start_windows() -> Peer {
        Peer::start_as(true, None)
    }

    fn start_as(windows: bool, malformed: Option<&'static str>) -> Peer {
        Peer::launch(|p| {
            p.windows = windows;
            p.malformed = malformed;
        })
    }

    /// A peer that knows `sp_set_session_context` and logs each call.
    fn start_context() -> Peer {
        Peer::launch(|p| p.context = true)
    }

    /// A peer that keeps each connection's isolation level, logs the level of each read, and
    /// fails a read at `SNAPSHOT` unless `snapshot_allowed`.
    fn start_isolation(snapshot_allowed: bool) -> Peer {
        Peer::launch(|p| p.snapshot = Some(snapshot_allowed))
    }

    /// A plain peer on the fixture, made what `kind` makes it, started.
    fn launch(kind: impl FnOnce(&mut Peer)) -> Peer {
        let dir = tempfile::tempdir().expect("tempdir");
        write_fixture(dir.path());
        let mut peer = Peer {
            dir,
            port: free_port(),
            child: None,
            windows: false,
            malformed: None,
            context: false,
            snapshot: None,
        };
        kind(&mut peer);
        peer.spawn();
        peer
    }

    /// The lines of `file` in the peer's directory (none before it exists).
    fn log_lines(&self, file: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The isolation level each read ran at, in order (`LEVEL\tbatch`).
    fn isolation_log(&self) -> Vec<String> {
        self.log_lines("isolation.log")
    }

    /// What the session context was set to, in order (`key=value`).
    fn context_log(&self) -> Vec<String> {
        self.log_lines("session_context.log")
    }

    /// What each Windows login came to, as the peer's NTLM check wrote it.
    fn ntlm_log(&self) -> Vec<String> {
        self.log_lines("ntlm.log")
    }

    /// `[[database]]` with a connection string (from a file, with a newline after it as an
    /// editor leaves one) to this peer's database: the server, the database and
    /// `TrustServerCertificate`, then `login`.
    fn string_config(&self, login: &str) -> MssqlConfig {
        let file = self.dir.path().join("connection-string");
        std::fs::write(
            &file,
            format!(
                "Server=tcp:127.0.0.1,{};Database=pysqlbridge;TrustServerCertificate=true;{login}\n",
                self.port
            ),
        )
        .expect("write");
        MssqlConfig {
            connection_string: Some(SecretSource {
                file: Some(file),
                env: None,
            }),
            ..MssqlConfig::default()
        }
    }

    /// `[[database]]` for a Windows login as `user` with `password` (written to a file).
    fn windows_config(&self, user: &str, password: &str) -> MssqlConfig {
        let file = self.dir.path().join("windows-password");
        std::fs::write(&file, password).expect("write password");
        MssqlConfig {
            authentication: Some(MssqlAuthentication::Windows),
            user: Some(user.into()),
            password: Some(SecretSource {
                file: Some(file),
                env: None,
            }),
            ..self.config()
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the server on this peer's port and waits until it accepts connections.
    fn spawn(&mut self) {
        self.child = Some(if self.windows {
            common::spawn_pysqlbridge_windows(
                self.dir.path(),
                self.port,
                WINDOWS_ACCOUNT,
                self.malformed,
            )
        } else if self.context {
            common::spawn_pysqlbridge_context(self.dir.path(), self.port)
        } else if let Some(allowed) = self.snapshot {
            common::spawn_pysqlbridge_isolation(self.dir.path(), self.port, allowed)
        } else {
            common::spawn_pysqlbridge(self.dir.path(), self.port)
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts the server with its login's password changed to `password` (a rotation on
    /// the server's side; the old one no longer logs in): the SQL login's, or for a
    /// [`Peer::start_windows`] the Windows account's.
    fn restart_with_password(&mut self, password: &str) {
        self.kill();
        let (dir, port) = (self.dir.path(), self.port);
        self.child = Some(if self.windows {
            let (domain, user, _) = WINDOWS_ACCOUNT;
            common::spawn_pysqlbridge_windows(dir, port, (domain, user, password), None)
        } else {
            common::spawn_pysqlbridge_password(dir, port, password)
        });
    }

    fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// The `[[database]]` settings for this peer, as an operator would write them.
    fn config(&self) -> MssqlConfig {
        MssqlConfig {
            host: Some("127.0.0.1".into()),
            port: Some(self.port),
            database: Some("pysqlbridge".into()),
            user: Some(LOGIN.into()),
            password: Some(SecretSource {
                file: Some(self.password_file()),
                env: None,
            }),
            encrypt: Some(MssqlEncrypt::Required),
            trust_server_certificate: Some(true),
            connect_timeout_secs: Some(5),
            ..MssqlConfig::default()
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the running peer.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {sig} {pid}");
    }

    fn backend_with(&self, cfg: &MssqlConfig, pool: u32, query_timeout: Duration) -> MssqlBackend {
        cfg.validate("database[0]").expect("valid config");
        let settings =
            MssqlSettings::from_config(cfg, "database[0]", pool, query_timeout).expect("settings");
        MssqlBackend::new(settings)
    }

    fn backend(&self) -> MssqlBackend {
        self.backend_with(&self.config(), 4, Duration::from_secs(10))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Counts the fixture's orders (120) through `b`: what a test runs to show the backend still
/// answers after something went wrong (`what` says what went before).
async fn count_orders(b: &MssqlBackend, what: &str) {
    let rs = b
        .query("SELECT COUNT(*) AS n FROM Orders", page(0, 1))
        .await
        .expect(what);
    assert_eq!(rs.rows, vec![vec![Value::Int(120)]], "{what}");
}

/// `execute_sql` with `sql` alone, called in-process as a client's `tools/call` would be.
async fn execute_sql(
    scope: &mssql_mcp::state::Scope,
    sql: &str,
) -> Result<mssql_mcp::tools::ToolOutput, mssql_mcp::tools::ToolError> {
    mssql_mcp::tools::call(
        scope,
        "execute_sql",
        &serde_json::json!({ "sql": sql }),
        None,
    )
    .await
}

/// Captured log output.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Captures what `filter` lets through, on this thread, until the guard drops.
    fn capture(&self, filter: tracing_subscriber::EnvFilter) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        common::log_on_this_thread(subscriber)
    }

    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn page(offset: usize, limit: usize) -> Page {
    Page::rows(offset, limit)
}

fn col(rs: &RowSet, name: &str) -> usize {
    rs.columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("no column {name} in {:?}", rs.columns))
}

fn ints(rs: &RowSet, column: &str) -> Vec<i64> {
    let i = col(rs, column);
    rs.rows
        .iter()
        .map(|r| match &r[i] {
            Value::Int(n) => *n,
            other => panic!("{column} is not an integer: {other:?}"),
        })
        .collect()
}

async fn table(b: &MssqlBackend, name: &str) -> TableInfo {
    let cat = b.catalog().await.expect("catalog");
    cat.find(name)
        .unwrap_or_else(|| panic!("no table {name}"))
        .clone()
}

fn names(t: &TableInfo) -> Vec<String> {
    t.columns.iter().map(|c| c.name.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Logins and encryption
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_login_with_the_right_password_connects_and_reads() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend();
    b.ping().await.expect("ping");
    let rs = b
        .query("SELECT DB_NAME() AS db", page(0, 1))
        .await
        .expect("query");
    assert_eq!(rs.rows, vec![vec![Value::Text("pysqlbridge".into())]]);
    assert_eq!(b.kind(), "mssql");
}

#[tokio::test]
async fn a_wrong_password_fails_with_login_advice_and_never_shows_the_password() {
    let _s = serial().await;
    let peer = Peer::start();
    let wrong = "Wr0ng-Pa55word-XYZ";
    let file = peer.dir.path().join("wrong-password");
    std::fs::write(&file, wrong).expect("write");
    let mut cfg = peer.config();
    cfg.password = Some(SecretSource {
        file: Some(file),
        env: None,
    });
    let settings = MssqlSettings::from_config(&cfg, "database[0]", 2, Duration::from_secs(5))
        .expect("settings");
    let debug = format!("{settings:?} {cfg:?}");
    // Every log line, at every level, of this test's thread (the runtime is single-threaded,
    // so the pool's spawned connection attempts log here too).
    let logs = Logs::default();
    let _logging = logs.capture(tracing_subscriber::EnvFilter::new("trace"));
    let b = MssqlBackend::new(settings);
    let started = Instant::now();
    let err = b.ping().await.expect_err("wrong password must fail");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let logged = logs.text();
    assert!(
        logged.contains("Login failed"),
        "the failure is logged: {logged}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    assert!(text.contains("login failed"), "{text}");
    assert!(
        text.contains("database[0].user / database[0].password"),
        "{text}"
    );
    for shown in [
        text.as_str(),
        debug.as_str(),
        &format!("{err:?} {b:?}"),
        logged.as_str(),
    ] {
        assert!(!shown.contains(wrong), "password leaked: {shown}");
        assert!(!shown.contains(PASSWORD), "password leaked: {shown}");
    }
}

/// A Windows login, by NTLM, against the peer's own SSPI login exchange (LOGIN7's SSPI blob,
/// the server's SSPI token, the client's answer, then the login's answer), with the account
/// checked by `tests/common/ntlm_peer.py` in place of Windows: the NTLMv2 proof must match
/// the password the peer knows. Then the peer answers queries as for a SQL login.
#[tokio::test]
async fn a_windows_login_signs_in_by_ntlm_and_reads() {
    let _s = serial().await;
    let peer = Peer::start_windows();
    let (_, user, password) = WINDOWS_ACCOUNT;
    let accounts = [
        format!("CORP\\{user}"),
        format!("corp\\{}", user.to_uppercase()),
        format!("{user}@corp.example.com"),
    ];
    // Not `off`, which a Windows login refuses (NTLM's answer would cross in the clear), nor
    // `strict`, which the peer does not speak.
    for (account, mode) in accounts.iter().zip([
        MssqlEncrypt::Required,
        MssqlEncrypt::On,
        MssqlEncrypt::Required,
    ]) {
        let mut cfg = peer.windows_config(account, password);
        cfg.encrypt = Some(mode);
        cfg.validate("database[0]").expect("valid");
        assert!(
            cfg.describe().contains("Windows login"),
            "{}",
            cfg.describe()
        );
        let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
        let rs = b
            .query("SELECT COUNT(*) AS n FROM Orders", page(0, 1))
            .await
            .unwrap_or_else(|e| panic!("{account} {mode:?}: {e}"));
        assert_eq!(rs.rows, vec![vec![Value::Int(120)]], "{account} {mode:?}");
        assert!(!b.catalog().await.expect("catalog").tables.is_empty());
    }
    // Each login was proved to the peer, not let through.
    let log = peer.ntlm_log();
    assert!(
        log.iter().filter(|l| l.starts_with("ok ")).count() >= accounts.len(),
        "{log:?}"
    );
    assert!(
        log.iter()
            .all(|l| !l.starts_with("refused") && !l.starts_with("bad")),
        "{log:?}"
    );
    // The same login written as a connection string.
    let cfg = peer.string_config(&format!(
        "Integrated Security=SSPI;User Id=CORP\\{user};Password={password};Encrypt=true"
    ));
    cfg.validate("database[0]").expect("valid");
    let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
    count_orders(&b, "a Windows login from a connection string").await;
}

/// A wrong Windows password, or an account the server does not know, is refused by the
/// server (SQL Server's 18452) and reported with what to check, never with the password.
#[tokio::test]
async fn a_refused_windows_login_says_what_to_check_and_never_shows_the_password() {
    let _s = serial().await;
    let peer = Peer::start_windows();
    let (_, user, password) = WINDOWS_ACCOUNT;
    let wrong = "Wr0ng-W1ndows-XYZ";
    for (account, secret) in [
        (format!("CORP\\{user}"), wrong),
        ("CORP\\someone_else".to_string(), password),
        (format!("OTHERDOMAIN\\{user}"), password),
    ] {
        let cfg = peer.windows_config(&account, secret);
        let logs = Logs::default();
        let _logging = logs.capture(tracing_subscriber::EnvFilter::new("trace"));
        let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
        let err = b.ping().await.expect_err(&account);
        let text = err.to_string();
        assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
        assert!(text.contains("login failed"), "{text}");
        assert!(
            text.contains("untrusted domain"),
            "the server's words: {text}"
        );
        assert!(
            text.contains(&format!("CREATE LOGIN [{account}] FROM WINDOWS")),
            "{text}"
        );
        assert!(
            text.contains("database[0].user / database[0].password"),
            "{text}"
        );
        let shown = format!("{text} {err:?} {b:?} {cfg:?} {}", logs.text());
        assert!(!shown.contains(secret), "password leaked: {shown}");
    }
    let log = peer.ntlm_log();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("refused ")).count(),
        3,
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("ok ")), "{log:?}");
}

/// A server whose NTLM challenge is malformed (cut short, an offset or a length past its end,
/// not NTLM at all) fails the login with a clear error naming what to check; nothing panics,
/// and the password is not shown.
#[tokio::test]
async fn a_malformed_ntlm_challenge_fails_the_login_clearly() {
    let _s = serial().await;
    let (_, user, password) = WINDOWS_ACCOUNT;
    for how in ["truncated", "bad-offset", "bad-av-pair", "bad-signature"] {
        let peer = Peer::start_as(true, Some(how));
        let b = peer.backend_with(
            &peer.windows_config(&format!("CORP\\{user}"), password),
            1,
            Duration::from_secs(5),
        );
        let err = b.ping().await.expect_err(how);
        let text = err.to_string();
        assert!(matches!(err, DbError::Unavailable(_)), "{how}: {err:?}");
        assert!(
            text.contains("login failed — the Windows sign-in (NTLM) with 127.0.0.1:"),
            "{how}: {text}"
        );
        assert!(
            text.contains("database[0].user / database[0].password"),
            "{how}: {text}"
        );
        assert!(!text.contains(password), "{how}: {text}");
        assert!(
            peer.ntlm_log().is_empty(),
            "{how}: no answer reached the check"
        );
    }
}

/// Even under `RUST_LOG=trace` (and `sspi=trace` asked for by name), the binary's log filter
/// keeps sspi's NTLM messages out of the log: the answer to the server's challenge in them is
/// enough to guess the password offline. tiberius' own TRACE lines show that the level held.
#[tokio::test]
async fn a_windows_login_logged_at_trace_shows_no_ntlm_message() {
    let _s = serial().await;
    let peer = Peer::start_windows();
    let (_, user, password) = WINDOWS_ACCOUNT;
    let logs = Logs::default();
    let _logging = logs.capture(mssql_mcp::cli::log_filter(Some("trace,sspi=trace")));
    let b = peer.backend_with(
        &peer.windows_config(&format!("CORP\\{user}"), password),
        1,
        Duration::from_secs(5),
    );
    count_orders(&b, "a Windows login").await;
    let logged = logs.text();
    assert!(logged.contains("TRACE"), "trace is on: {logged}");
    assert!(
        logged.contains("tiberius"),
        "tiberius logs at trace: {logged}"
    );
    // "NTLMSSP\0", as sspi prints a buffer (hex), and the message type as its spans say it.
    for secret in [
        "4E544C4D53535000",
        "4e544c4d53535000",
        "NTLMSSP",
        "sspi::ntlm",
    ] {
        assert!(!logged.contains(secret), "{secret} logged: {logged}");
    }
    assert!(!logged.contains(password), "{logged}");
    assert!(peer.ntlm_log().iter().any(|l| l.starts_with("ok ")));
}

#[tokio::test]
async fn an_unknown_login_fails_the_same_way() {
    let _s = serial().await;
    let peer = Peer::start();
    let mut cfg = peer.config();
    cfg.user = Some("nobody".into());
    let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
    let err = b.catalog().await.expect_err("unknown login");
    assert!(err.to_string().contains("login failed"), "{err}");
}

#[tokio::test]
async fn every_encryption_mode_the_peer_supports_connects() {
    let _s = serial().await;
    let peer = Peer::start();
    for mode in [MssqlEncrypt::Off, MssqlEncrypt::On, MssqlEncrypt::Required] {
        let mut cfg = peer.config();
        cfg.encrypt = Some(mode);
        let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
        let rs = b
            .query("SELECT COUNT(*) AS n FROM Products", page(0, 1))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(rs.rows, vec![vec![Value::Int(5)]], "{mode:?}");
    }
}

#[tokio::test]
async fn the_peers_self_signed_certificate_is_refused_unless_trusted() {
    let _s = serial().await;
    let peer = Peer::start();
    let mut cfg = peer.config();
    cfg.trust_server_certificate = None;
    let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
    let err = b
        .ping()
        .await
        .expect_err("self-signed certificate must be refused");
    let text = err.to_string();
    assert!(text.contains("TLS"), "{text}");
    assert!(text.contains("ca_file"), "{text}");
    assert!(text.contains("database[0].encrypt"), "{text}");
}

/// The peer cannot do TDS 8.0; `strict` must fail quickly and point at the setting.
#[tokio::test]
async fn strict_encryption_against_a_server_without_tds8_fails_clearly() {
    let _s = serial().await;
    let peer = Peer::start();
    let mut cfg = peer.config();
    cfg.encrypt = Some(MssqlEncrypt::Strict);
    let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
    let started = Instant::now();
    let err = b
        .ping()
        .await
        .expect_err("strict must fail against the peer");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(err.to_string().contains("database[0].encrypt"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Azure SQL's redirect
// ---------------------------------------------------------------------------------------------

/// What no peer here can do: send the routing ENVCHANGE with which Azure SQL's gateway tells a
/// client to log in again on another host. pysqlbridge never sends one, so this is a stand-in
/// for the gateway's part of a login and nothing more: it answers the PRELOGIN with the
/// encryption the client asked for, does the TLS handshake inside PRELOGIN packets (TLS 1.2:
/// SQL Server offers 1.3 only with TDS 8.0's strict mode), reads the LOGIN7 over TLS and
/// answers with `[ENVCHANGE Routing][DONE]`, then closes. The answer goes over TLS when the
/// client asked for encryption (`encrypt = on/required`, what Azure SQL demands: the whole
/// session is encrypted) and in the clear when it did not (`off`: TLS for the login only).
/// Every login it sees is counted, and a client that speaks out of turn is written down
/// ([`Redirector::problems`]).
struct Redirector {
    port: u16,
    logins: Arc<std::sync::atomic::AtomicUsize>,
    problems: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Redirector {
    /// Listens on a free loopback port and sends every login to `to_port` on 127.0.0.1.
    async fn start(to_port: u16) -> Redirector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind redirector");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = stand_in_acceptor();
        let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let problems = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counted, noted) = (logins.clone(), problems.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counted, noted) = (acceptor.clone(), counted.clone(), noted.clone());
                tokio::spawn(async move {
                    // A client that gives up half-way is no failure of the stand-in's; one
                    // that sends what a client must not is.
                    if let Err(e) = redirect_one(tcp, acceptor, to_port, &counted).await
                        && e.kind() == std::io::ErrorKind::InvalidData
                    {
                        noted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(e.to_string());
                    }
                });
            }
        });
        Redirector {
            port,
            logins,
            problems,
            task,
        }
    }

    fn logins(&self) -> usize {
        self.logins.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What clients sent out of turn.
    fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// TDS packet types (MS-TDS 2.2.3.1.1) the stand-ins read and write.
const TDS_BATCH: u8 = 0x01;
const TDS_PRELOGIN: u8 = 0x12;
const TDS_LOGIN7: u8 = 0x10;
const TDS_REPLY: u8 = 0x04;
const TDS_ATTENTION: u8 = 0x06;

/// A self-signed TLS 1.2 server configuration for the stand-ins (SQL Server offers 1.3 only
/// with TDS 8.0's strict mode).
fn stand_in_acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// What a stand-in speaks TDS over once the client logged in: TLS, or the bare connection.
trait Session: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Session for T {}

/// A login as a stand-in took it ([`take_login`]).
struct TakenLogin {
    /// What the answer goes over: TLS when the client asked for the whole session to be
    /// encrypted (`encrypt = on/required`), the bare connection when it did not (`off`: TLS
    /// for the login only).
    session: Box<dyn Session>,
    /// The client's PRELOGIN payload.
    prelogin: Vec<u8>,
    /// The client's LOGIN7 payload.
    login7: Vec<u8>,
}

/// A server's side of a login up to the LOGIN7: answers the PRELOGIN with the encryption the
/// client asked for, does the TLS handshake inside PRELOGIN packets and reads the LOGIN7 over
/// TLS.
async fn take_login(
    mut tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
) -> std::io::Result<TakenLogin> {
    let (ty, asked) = read_tds_packet(&mut tcp).await?;
    expect_packet(ty, TDS_PRELOGIN, "a client starts with PRELOGIN")?;
    // ENCRYPT_ON (1) or ENCRYPT_REQ (3): the whole session; else the login only.
    let whole_session = matches!(prelogin_option(&asked, 0x01), Some([0x01 | 0x03, ..]));
    // VERSION (offset 11, 6 bytes) and ENCRYPTION (offset 17, 1 byte: ENCRYPT_ON or
    // ENCRYPT_OFF), then the terminator, then the data.
    let mut prelogin = vec![
        0x00, 0x00, 0x0B, 0x00, 0x06, 0x01, 0x00, 0x11, 0x00, 0x01, 0xFF, 0x10, 0x00, 0x07, 0xD0,
        0x00, 0x00,
    ];
    prelogin.push(u8::from(whole_session));
    write_tds_packet(&mut tcp, TDS_REPLY, &prelogin).await?;
    let mut tls = acceptor.accept(InPrelogin::new(tcp)).await?;
    // The handshake is done: from here TLS records travel bare, as the client expects.
    tls.get_mut().0.handshaking = false;
    let (ty, login7) = read_tds_packet(&mut tls).await?;
    expect_packet(ty, TDS_LOGIN7, "after the handshake comes LOGIN7")?;
    let session: Box<dyn Session> = if whole_session {
        Box::new(tls)
    } else {
        Box::new(tls.into_inner().0.tcp)
    };
    Ok(TakenLogin {
        session,
        prelogin: asked,
        login7,
    })
}

async fn redirect_one(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    to_port: u16,
    logins: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut session = take_login(tcp, acceptor).await?.session;
    logins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let reply = routing_reply(to_port);
    // The client closes once it has read the answer.
    write_tds_packet(&mut session, TDS_REPLY, &reply).await?;
    let _ = session.read_to_end(&mut Vec::new()).await;
    session.shutdown().await
}

/// A login's answer that sends the client to `to_port` on 127.0.0.1: `[ENVCHANGE Routing]
/// [DONE]`, as Azure SQL's gateway answers.
fn routing_reply(to_port: u16) -> Vec<u8> {
    let host: Vec<u16> = "127.0.0.1".encode_utf16().collect();
    let mut routing = vec![0x00]; // protocol: TCP
    routing.extend_from_slice(&to_port.to_le_bytes());
    routing.extend_from_slice(
        &u16::try_from(host.len())
            .expect("a short field")
            .to_le_bytes(),
    );
    host.iter()
        .for_each(|u| routing.extend_from_slice(&u.to_le_bytes()));
    let mut value = vec![20]; // ENVCHANGE type 20: routing
    value.extend_from_slice(
        &u16::try_from(routing.len())
            .expect("a short field")
            .to_le_bytes(),
    );
    value.extend_from_slice(&routing);
    value.extend_from_slice(&[0x00, 0x00]); // the old value: none
    let mut reply = vec![0xE3];
    reply.extend_from_slice(
        &u16::try_from(value.len())
            .expect("a short field")
            .to_le_bytes(),
    );
    reply.extend_from_slice(&value);
    reply.extend_from_slice(&done_token(0));
    reply
}

/// A DONE token (MS-TDS 2.2.7.6) with `status`: 0 for a final one, 0x20 (DONE_ATTN) to
/// acknowledge an attention. The current command and an 8-byte row count follow, all zero.
fn done_token(status: u16) -> Vec<u8> {
    let mut done = vec![0xFD];
    done.extend_from_slice(&status.to_le_bytes());
    done.extend_from_slice(&[0; 10]);
    done
}

/// `InvalidData` unless a packet of type `ty` is the `want` the stand-in expects.
fn expect_packet(ty: u8, want: u8, rule: &str) -> std::io::Result<()> {
    if ty == want {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{rule}: expected a packet of type 0x{want:02x}, got 0x{ty:02x}"),
    ))
}

/// The value of PRELOGIN option `token` in a PRELOGIN payload (MS-TDS 2.2.6.5: a list of
/// token, offset and length, ended by 0xFF, then the values).
fn prelogin_option(payload: &[u8], token: u8) -> Option<&[u8]> {
    let mut entry = payload;
    while let [t, o1, o2, l1, l2, rest @ ..] = entry {
        if *t == 0xFF {
            return None;
        }
        if *t == token {
            let at = usize::from(u16::from_be_bytes([*o1, *o2]));
            let len = usize::from(u16::from_be_bytes([*l1, *l2]));
            return payload.get(at..at + len);
        }
        entry = rest;
    }
    None
}

/// One whole TDS packet: its type and its payload.
async fn read_tds_packet<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 8];
    r.read_exact(&mut header).await?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut payload = vec![0; len.saturating_sub(8)];
    r.read_exact(&mut payload).await?;
    Ok((header[0], payload))
}

async fn write_tds_packet<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    ty: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(&tds_packet(ty, payload)).await?;
    w.flush().await
}

/// `payload` as one TDS packet, end of message.
fn tds_packet(ty: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len() + 8).expect("a small packet");
    let mut packet = vec![ty, 0x01];
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 1, 0]);
    packet.extend_from_slice(payload);
    packet
}

/// The server's side of TDS's TLS handshake: handshake bytes travel as the payload of PRELOGIN
/// packets both ways; afterwards TLS records travel bare.
struct InPrelogin {
    tcp: tokio::net::TcpStream,
    handshaking: bool,
    /// Payload bytes of the current incoming packet still to read.
    remaining: usize,
    header: [u8; 8],
    header_read: usize,
    /// Handshake bytes written, sent as one packet at the next flush.
    out: Vec<u8>,
    /// The packet being sent, and how much of it has gone.
    sending: Vec<u8>,
    sent: usize,
}

impl InPrelogin {
    fn new(tcp: tokio::net::TcpStream) -> InPrelogin {
        InPrelogin {
            tcp,
            handshaking: true,
            remaining: 0,
            header: [0; 8],
            header_read: 0,
            out: Vec::new(),
            sending: Vec::new(),
            sent: 0,
        }
    }
}

impl tokio::io::AsyncRead for InPrelogin {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let me = self.get_mut();
        if !me.handshaking {
            return std::pin::Pin::new(&mut me.tcp).poll_read(cx, buf);
        }
        while me.remaining == 0 {
            let mut header = tokio::io::ReadBuf::new(&mut me.header[me.header_read..]);
            match std::pin::Pin::new(&mut me.tcp).poll_read(cx, &mut header) {
                Poll::Ready(Ok(())) if header.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => me.header_read += header.filled().len(),
                other => return other,
            }
            if me.header_read == 8 {
                me.header_read = 0;
                me.remaining =
                    usize::from(u16::from_be_bytes([me.header[2], me.header[3]])).saturating_sub(8);
            }
        }
        let mut chunk = vec![0; me.remaining.min(buf.remaining())];
        let mut limited = tokio::io::ReadBuf::new(&mut chunk);
        match std::pin::Pin::new(&mut me.tcp).poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                me.remaining -= limited.filled().len();
                buf.put_slice(limited.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl tokio::io::AsyncWrite for InPrelogin {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        if !me.handshaking {
            return std::pin::Pin::new(&mut me.tcp).poll_write(cx, buf);
        }
        me.out.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let me = self.get_mut();
        if me.sending.is_empty() && !me.out.is_empty() {
            me.sending = tds_packet(TDS_PRELOGIN, &std::mem::take(&mut me.out));
            me.sent = 0;
        }
        while me.sent < me.sending.len() {
            match std::pin::Pin::new(&mut me.tcp).poll_write(cx, &me.sending[me.sent..]) {
                Poll::Ready(Ok(n)) => me.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        me.sending.clear();
        std::pin::Pin::new(&mut me.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A connection the gateway redirects logs in where it was sent, and stays usable: the pool's
/// connections each pass through the redirect once and then talk to the peer directly.
#[tokio::test]
async fn an_azure_style_redirect_is_followed_once() {
    let _s = serial().await;
    let peer = Peer::start();
    // Required (the default, and what Azure SQL demands): the redirect arrives over TLS;
    // off: in the clear after the login.
    for mode in [MssqlEncrypt::Required, MssqlEncrypt::Off] {
        let gateway = Redirector::start(peer.port).await;
        let mut cfg = peer.config();
        cfg.port = Some(gateway.port);
        cfg.encrypt = Some(mode);
        let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
        for _ in 0..3 {
            let rs = b
                .query("SELECT COUNT(*) AS n FROM Products", page(0, 1))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "through the redirect, {mode:?}: {e}; the gateway saw {:?}",
                        gateway.problems()
                    )
                });
            assert_eq!(rs.rows, vec![vec![Value::Int(5)]]);
        }
        assert_eq!(gateway.problems(), Vec::<String>::new(), "{mode:?}");
        let seen = gateway.logins();
        assert!(
            (1..=2).contains(&seen),
            "each pooled connection logs in at the gateway once, {mode:?}: {seen}"
        );
    }
}

/// A redirect to a host that never answers the TCP handshake is reported as out of reach, not
/// as a server that took the connection and stalled in the login: the gateway did accept, but
/// what counts is the host the connection was sent on to. The pool's own wait ends at the same
/// time, so the caller gets the plain timeout; the cause is in what the operator reads, the
/// log line of the failed attempt.
#[tokio::test]
async fn a_redirect_to_a_host_out_of_reach_is_reported_as_such() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect to it
    // waits (a host behind a firewall that drops packets, on loopback).
    let hole = tokio::net::TcpSocket::new_v4().expect("socket");
    hole.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let hole = hole.listen(1).expect("listen");
    let hole_addr = hole.local_addr().expect("addr");
    let mut queued = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(hole_addr),
        )
        .await
        {
            Ok(Ok(stream)) if queued.len() < 16 => queued.push(stream),
            Ok(Ok(_)) => panic!("the accept queue never filled"),
            Ok(Err(e)) => panic!("connect to the full listener: {e}"),
            Err(_) => break,
        }
    }
    let gateway = Redirector::start(hole_addr.port()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = MssqlConfig {
        encrypt: Some(MssqlEncrypt::Off),
        ..config_for_port(dir.path(), gateway.port, 1)
    };
    let settings = MssqlSettings::from_config(&cfg, "database[0]", 1, Duration::from_secs(5))
        .expect("settings");
    let b = MssqlBackend::new(settings);
    // The pool's tasks run on this single-threaded runtime, so they log here too.
    let logs = Logs::default();
    let logging = logs.capture(tracing_subscriber::EnvFilter::new("info"));
    let err = b
        .query("SELECT 1 AS n", page(0, 1))
        .await
        .expect_err("the redirect leads nowhere");
    assert!(err.to_string().contains("within 1 s"), "{err}");
    let waited = Instant::now();
    while !logs.text().contains("connection attempt failed") && waited.elapsed().as_secs() < 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(logging);
    let logged = logs.text();
    assert_eq!(gateway.logins(), 1, "the gateway was asked: {logged}");
    assert_eq!(gateway.problems(), Vec::<String>::new());
    let line = logged
        .lines()
        .find(|l| l.contains("connection attempt failed"))
        .unwrap_or_else(|| panic!("no failed attempt logged: {logged}"));
    assert!(
        line.contains(&format!(
            "could not connect to {hole_addr} (where 127.0.0.1:{} redirected) within 1 s",
            gateway.port
        )),
        "{line}"
    );
    assert!(!line.contains("accepted the connection"), "{line}");
    drop(queued);
}

/// A redirect to a host that redirects again is refused, naming both: following redirects
/// without end would let a misconfigured gateway keep the pool connecting forever.
#[tokio::test]
async fn a_second_redirect_is_refused_with_a_clear_error() {
    let _s = serial().await;
    let peer = Peer::start();
    let second = Redirector::start(peer.port).await;
    let first = Redirector::start(second.port).await;
    let mut cfg = peer.config();
    cfg.port = Some(first.port);
    cfg.encrypt = Some(MssqlEncrypt::Off);
    let b = peer.backend_with(&cfg, 1, Duration::from_secs(5));
    let err = b
        .query("SELECT COUNT(*) AS n FROM Products", page(0, 1))
        .await
        .expect_err("two redirects");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "127.0.0.1:{} (where 127.0.0.1:{} redirected) redirected the connection again, to 127.0.0.1:{}",
            second.port, first.port, peer.port
        )),
        "{text}"
    );
    assert!(
        first.logins() >= 1 && second.logins() >= 1,
        "both gateways were asked"
    );
    assert_eq!(
        (first.problems(), second.problems()),
        (Vec::new(), Vec::new())
    );
}

// ---------------------------------------------------------------------------------------------
// Cancelling a request left mid-way
// ---------------------------------------------------------------------------------------------

/// What no peer here can do: stop a request part-way when the client sends a TDS attention.
/// pysqlbridge answers one message at a time, so it sees an attention only after it has sent
/// the whole answer to the request before it, and then acknowledges it in a message of its
/// own; SQL Server stops the request and ends its answer with the acknowledging DONE. This
/// stand-in logs any client in (PRELOGIN, TLS, LOGIN7 as [`take_login`] takes them) and
/// answers every batch with a bare DONE, except a batch naming `Stall` (or what
/// [`Staller::stall_on`] says), which it leaves unanswered until an attention comes; that it
/// acknowledges as SQL Server does, or, while [`Staller::silent`] is set, not at all.
struct Staller {
    port: u16,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    /// Batches left unanswered.
    stalled: std::sync::atomic::AtomicUsize,
    /// Attention packets received.
    attentions: std::sync::atomic::AtomicUsize,
    /// Leave attentions unacknowledged.
    silent: std::sync::atomic::AtomicBool,
    /// What a batch that is left unanswered contains (`Stall` unless set).
    stall_on: std::sync::Mutex<Option<String>>,
    /// What clients sent out of turn.
    problems: std::sync::Mutex<Vec<String>>,
}

impl Staller {
    async fn start() -> Staller {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = stand_in_acceptor();
        let seen = Arc::new(Seen::default());
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    if let Err(e) = stall_one(tcp, acceptor, &seen).await
                        && e.kind() == std::io::ErrorKind::InvalidData
                    {
                        seen.problems
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(e.to_string());
                    }
                });
            }
        });
        Staller { port, seen, task }
    }

    fn count(&self, of: &std::sync::atomic::AtomicUsize) -> usize {
        of.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn attentions(&self) -> usize {
        self.count(&self.seen.attentions)
    }

    fn stalled(&self) -> usize {
        self.count(&self.seen.stalled)
    }

    fn silent(&self, silent: bool) {
        self.seen
            .silent
            .store(silent, std::sync::atomic::Ordering::SeqCst);
    }

    fn stall_on(&self, text: &str) {
        *self.seen.stall_on.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.to_string());
    }

    fn problems(&self) -> Vec<String> {
        self.seen
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A backend for the stand-in: one connection, a 1 s query timeout, and a 2 s connect
    /// timeout, which makes the cancel's wait 2 s (the lesser of it and `CANCEL_WAIT`).
    fn backend(&self, dir: &Path) -> MssqlBackend {
        let pw = dir.join("pw");
        std::fs::write(&pw, "any").expect("password file");
        let cfg = MssqlConfig {
            host: Some("127.0.0.1".into()),
            port: Some(self.port),
            database: Some("standin".into()),
            user: Some("reader".into()),
            password: Some(SecretSource {
                file: Some(pw),
                env: None,
            }),
            encrypt: Some(MssqlEncrypt::Required),
            trust_server_certificate: Some(true),
            connect_timeout_secs: Some(2),
            ..MssqlConfig::default()
        };
        cfg.validate("database[0]").expect("valid config");
        let settings = MssqlSettings::from_config(&cfg, "database[0]", 1, Duration::from_secs(1))
            .expect("settings");
        MssqlBackend::new(settings)
    }
}

impl Drop for Staller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn stall_one(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: &Seen,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let mut session = take_login(tcp, acceptor).await?.session;
    // A login is accepted by a DONE without an error.
    write_tds_packet(&mut session, TDS_REPLY, &done_token(0)).await?;
    loop {
        let (ty, payload) = match read_tds_packet(&mut session).await {
            Ok(packet) => packet,
            // The client closed the connection.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match ty {
            TDS_BATCH => {
                // ALL_HEADERS (its length first), then the text as UTF-16.
                let skip = payload
                    .get(..4)
                    .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
                    .unwrap_or(0);
                let units: Vec<u16> = payload
                    .get(skip..)
                    .unwrap_or_default()
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let marker = seen
                    .stall_on
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "Stall".to_string());
                if String::from_utf16_lossy(&units).contains(&marker) {
                    seen.stalled.fetch_add(1, SeqCst);
                } else {
                    write_tds_packet(&mut session, TDS_REPLY, &done_token(0)).await?;
                }
            }
            TDS_ATTENTION => {
                seen.attentions.fetch_add(1, SeqCst);
                if !seen.silent.load(SeqCst) {
                    write_tds_packet(&mut session, TDS_REPLY, &done_token(0x20)).await?;
                }
            }
            other => expect_packet(other, TDS_BATCH, "after the login come batches")?,
        }
    }
}

/// The backend's pool numbers once `done` holds of them, or as they are after `within`. A
/// connection left mid-request is discarded only after its cancel ends, a moment after the
/// call that left it returns.
async fn pool_when(
    b: &MssqlBackend,
    within: Duration,
    done: impl Fn(&PoolStats) -> bool,
) -> PoolStats {
    let deadline = Instant::now() + within;
    loop {
        let now = b.pool_stats();
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`pool_when`] one more connection than `before` was discarded; fails unless exactly one.
async fn one_more_discarded(b: &MssqlBackend, before: &PoolStats) -> PoolStats {
    let after = pool_when(b, Duration::from_secs(10), |s| {
        s.discarded > before.discarded
    })
    .await;
    assert_eq!(
        after.discarded,
        before.discarded + 1,
        "{before:?} -> {after:?}"
    );
    after
}

/// [`pool_when`] the cancel counts are `(acknowledged, unacknowledged)`; fails unless they
/// are by then.
async fn expect_cancels(b: &MssqlBackend, want: (u64, u64), within: Duration) -> PoolStats {
    let after = pool_when(b, within, |s| {
        (s.cancels_acknowledged, s.cancels_unacknowledged) == want
    })
    .await;
    assert_eq!(
        (after.cancels_acknowledged, after.cancels_unacknowledged),
        want,
        "{after:?}"
    );
    after
}

/// A request left mid-way, whether it timed out or its caller gave up on it, is cancelled
/// with a TDS attention before its connection is closed, so SQL Server stops work nobody will
/// read; the caller does not wait for the acknowledgement, and a server that never sends one
/// costs the cancel's wait and no more.
#[tokio::test]
async fn a_request_left_mid_way_is_cancelled_with_an_attention() {
    let server = Staller::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let b = server.backend(dir.path());
    b.ping().await.expect("ping");
    let stall = "SELECT 1 AS n FROM Stall";

    // Over the query timeout: the caller hears of it at once, the cancel follows.
    let started = Instant::now();
    let err = b.query(stall, page(0, 1)).await.expect_err("timed out");
    assert!(matches!(err, DbError::Timeout(1)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    expect_cancels(&b, (1, 0), Duration::from_secs(5)).await;
    assert_eq!((server.stalled(), server.attentions()), (1, 1));

    // A query answered in full sends none.
    b.query("SELECT 1 AS n", page(0, 1))
        .await
        .expect("an answered query");
    assert_eq!(server.attentions(), 1);

    // Dropped by its caller (a client gone, `notifications/cancelled`).
    let dropped =
        tokio::time::timeout(Duration::from_millis(300), b.query(stall, page(0, 1))).await;
    assert!(
        dropped.is_err(),
        "the call should still be waiting: {dropped:?}"
    );
    expect_cancels(&b, (2, 0), Duration::from_secs(5)).await;
    assert_eq!((server.stalled(), server.attentions()), (2, 2));

    // A server that never acknowledges: the cancel gives up after its wait (2 s here), and the
    // connection is closed all the same.
    server.silent(true);
    let started = Instant::now();
    b.query(stall, page(0, 1)).await.expect_err("timed out");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    let after = expect_cancels(&b, (2, 1), Duration::from_secs(6)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(5),
        "the query's 1 s and the cancel's 2 s: {waited:?}"
    );
    assert_eq!(server.attentions(), 3);
    // Every connection left mid-way was replaced.
    assert_eq!(after.discarded, 3, "{after:?}");
    b.query("SELECT 1 AS n", page(0, 1))
        .await
        .expect("the next query");

    // A catalog load past its time (twice the query timeout) is cancelled too.
    server.silent(false);
    server.stall_on("INFORMATION_SCHEMA.TABLES");
    let fresh = server.backend(dir.path());
    let err = fresh.catalog().await.expect_err("the catalog load stalls");
    assert!(err.to_string().contains("reading the catalog"), "{err}");
    expect_cancels(&fresh, (1, 0), Duration::from_secs(5)).await;
    assert_eq!(server.attentions(), 4);
    assert_eq!(server.problems(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Microsoft Entra logins. No Entra ID, instance metadata service or Entra-enabled SQL Server
// can run here, and pysqlbridge does not read LOGIN7's FEDAUTH extension, so both ends are
// stand-ins: [`TokenEndpoint`] answers token requests as IMDS and Entra's v2 endpoint do, and
// [`LoginStandIn`] reads the token out of the login and refuses it as SQL Server refuses an
// identity without a database user. What they show: the request each kind makes, the token
// reaching the login, when a token is reused, and the errors; not that a real server accepts it.
// ---------------------------------------------------------------------------------------------

/// One request a [`TokenEndpoint`] received.
#[derive(Debug, Clone)]
struct TokenRequest {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    metadata_header: Option<String>,
    form: Vec<(String, String)>,
}

/// A stand-in token endpoint on a free loopback port. It answers every request with
/// `status` and `body`, where `{n}` in the body becomes the request's number (1, 2, …), so each
/// answer carries a token of its own.
struct TokenEndpoint {
    port: u16,
    seen: Arc<std::sync::Mutex<Vec<TokenRequest>>>,
    answer: Arc<std::sync::Mutex<(u16, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenEndpoint {
    async fn start(status: u16, body: &str) -> TokenEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token endpoint");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = Arc::new(std::sync::Mutex::new((status, body.to_string())));
        let (noted, answering) = (seen.clone(), answer.clone());
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let (noted, answering) = (noted.clone(), answering.clone());
                async move {
                    let pairs = |s: &str| {
                        url::form_urlencoded::parse(s.as_bytes())
                            .into_owned()
                            .collect::<Vec<_>>()
                    };
                    let n = {
                        let mut seen = noted.lock().unwrap_or_else(|p| p.into_inner());
                        seen.push(TokenRequest {
                            method: method.to_string(),
                            path: uri.path().to_string(),
                            query: pairs(uri.query().unwrap_or("")),
                            metadata_header: headers
                                .get("metadata")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                            form: pairs(&body),
                        });
                        seen.len()
                    };
                    let (status, body) =
                        answering.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    (
                        axum::http::StatusCode::from_u16(status).expect("a status"),
                        [("content-type", "application/json")],
                        body.replace("{n}", &n.to_string()),
                    )
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenEndpoint {
            port,
            seen,
            answer,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<TokenRequest> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn answer(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = (status, body.to_string());
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pair<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// What a [`LoginStandIn`] read from one login.
#[derive(Debug, Clone)]
struct EntraLoginSeen {
    /// PRELOGIN's FEDAUTHREQUIRED option (0x06) was sent and set.
    fedauth_in_prelogin: bool,
    /// LOGIN7's user name (empty for a token login).
    user: String,
    /// The token in LOGIN7's FEDAUTH feature extension (security token library), if any.
    token: Option<String>,
}

/// What a [`LoginStandIn`] answers the n-th login (counted from 1) with.
#[derive(Clone, Copy, Debug)]
enum LoginAnswer {
    /// An ERROR token with this number and SQL Server's text for it, then DONE.
    Refuse(i32),
    /// Azure SQL's redirect to the peer on this port.
    Route(u16),
}

/// A stand-in for a SQL Server's side of a login (for what the peer cannot do: read LOGIN7's
/// FEDAUTH extension, or answer a login with Azure's "try again later"): takes the login as
/// [`take_login`] does, notes what it carried, and answers as `answer` says for its number.
struct LoginStandIn {
    port: u16,
    seen: Arc<std::sync::Mutex<Vec<EntraLoginSeen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoginStandIn {
    async fn start(answer: impl Fn(usize) -> LoginAnswer + Send + Sync + 'static) -> LoginStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = stand_in_acceptor();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let noted = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, noted, answer) = (acceptor.clone(), noted.clone(), answer.clone());
                tokio::spawn(async move {
                    let _ = answer_one(tcp, acceptor, &noted, &*answer).await;
                });
            }
        });
        LoginStandIn { port, seen, task }
    }

    /// A server that refuses every login as SQL Server refuses an Entra identity without a
    /// database user.
    async fn entra() -> LoginStandIn {
        LoginStandIn::start(|_| LoginAnswer::Refuse(18456)).await
    }

    fn logins(&self) -> Vec<EntraLoginSeen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for LoginStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer_one(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    seen: &std::sync::Mutex<Vec<EntraLoginSeen>>,
    answer: &(dyn Fn(usize) -> LoginAnswer + Send + Sync),
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let TakenLogin {
        mut session,
        prelogin,
        login7,
    } = take_login(tcp, acceptor).await?;
    let n = {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.push(EntraLoginSeen {
            fedauth_in_prelogin: matches!(prelogin_option(&prelogin, 0x06), Some([0x01, ..])),
            user: login7_string(&login7, 40).unwrap_or_default(),
            token: fedauth_token(&login7),
        });
        seen.len()
    };
    let reply = match answer(n) {
        LoginAnswer::Refuse(number) => {
            let message = match number {
                18456 => "Login failed for user '<token-identified principal>'.",
                40613 => {
                    "Database 'Sales' on server 'stand-in' is not currently available. Please retry the connection later."
                }
                _ => "Refused by the stand-in.",
            };
            let mut reply = error_token(number, message);
            reply.extend_from_slice(&[0xFD, 0x02, 0x00]); // DONE, status DONE_ERROR
            reply.extend_from_slice(&[0; 10]);
            reply
        }
        LoginAnswer::Route(port) => routing_reply(port),
    };
    write_tds_packet(&mut session, TDS_REPLY, &reply).await?;
    let _ = session.read_to_end(&mut Vec::new()).await;
    session.shutdown().await
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

fn utf16(b: &[u8]) -> Option<String> {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// The LOGIN7 string whose offset and length (in characters) stand at `field`.
fn login7_string(login7: &[u8], field: usize) -> Option<String> {
    let (at, chars) = (u16_at(login7, field)?, u16_at(login7, field + 2)?);
    utf16(login7.get(at..at + 2 * chars)?)
}

/// The token of LOGIN7's FEDAUTH feature extension: `ibExtension` (offset 56) points at a
/// DWORD holding where the features start; each is an id, a DWORD length and its data, and
/// 0xFF ends them. FEDAUTH's data is an options byte, a DWORD length and the UTF-16 token.
fn fedauth_token(login7: &[u8]) -> Option<String> {
    // fExtension, OptionFlags3's bit 4.
    if login7.get(27)? & 0x10 == 0 {
        return None;
    }
    let mut at = u32_at(login7, u16_at(login7, 56)?)?;
    loop {
        let id = *login7.get(at)?;
        if id == 0xFF {
            return None;
        }
        let len = u32_at(login7, at + 1)?;
        let data = login7.get(at + 5..at + 5 + len)?;
        if id == 0x02 {
            // bFedAuthLibrary (bits 1–7): 0x01, the security token.
            if data.first()? >> 1 != 0x01 {
                return None;
            }
            let token_len = u32_at(data, 1)?;
            return utf16(data.get(5..5 + token_len)?);
        }
        at += 5 + len;
    }
}

/// An ERROR token (MS-TDS 2.2.7.10) as SQL Server sends a failed login's: class 14, state 1.
fn error_token(number: i32, message: &str) -> Vec<u8> {
    let text = |s: &str, wide: bool| {
        let units: Vec<u16> = s.encode_utf16().collect();
        let mut out = Vec::new();
        if wide {
            out.extend_from_slice(&u16::try_from(units.len()).expect("short").to_le_bytes());
        } else {
            out.push(u8::try_from(units.len()).expect("short"));
        }
        units
            .iter()
            .for_each(|u| out.extend_from_slice(&u.to_le_bytes()));
        out
    };
    let mut body = number.to_le_bytes().to_vec();
    body.extend_from_slice(&[1, 14]);
    body.extend(text(message, true));
    body.extend(text("stand-in", false));
    body.extend(text("", false));
    body.extend_from_slice(&1u32.to_le_bytes());
    let mut token = vec![0xAA];
    token.extend_from_slice(&u16::try_from(body.len()).expect("short").to_le_bytes());
    token.extend(body);
    token
}

/// `[[database]]` settings for an Entra login to `port` on loopback.
fn entra_config(port: u16, auth: MssqlAuthentication) -> MssqlConfig {
    MssqlConfig {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        database: Some("Sales".into()),
        encrypt: Some(MssqlEncrypt::Required),
        trust_server_certificate: Some(true),
        connect_timeout_secs: Some(5),
        authentication: Some(auth),
        ..MssqlConfig::default()
    }
}

fn settings_of(cfg: &MssqlConfig) -> MssqlSettings {
    cfg.validate("database[0]").expect("valid config");
    MssqlSettings::from_config(cfg, "database[0]", 2, Duration::from_secs(5)).expect("settings")
}

const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const MI_CLIENT_ID: &str = "0b7e5f2a-1111-4c3d-9e8f-5a6b7c8d9e0f";

/// The managed identity's token goes to the server in LOGIN7's FEDAUTH extension, with no
/// user or password; a refused login says what to create in the database, and the refused
/// token is not offered again.
#[tokio::test]
async fn a_managed_identity_login_sends_its_token_and_a_refusal_says_what_to_grant() {
    let _s = serial().await;
    let imds = TokenEndpoint::start(
        200,
        r#"{"access_token":"stand-in-token-{n}","expires_in":"86399","token_type":"Bearer","resource":"https://database.windows.net/"}"#,
    )
    .await;
    let server = LoginStandIn::entra().await;
    let mut cfg = entra_config(server.port, MssqlAuthentication::EntraManagedIdentity);
    cfg.client_id = Some(MI_CLIENT_ID.into());
    cfg.managed_identity_endpoint = Some(imds.url(IMDS_PATH));
    let b = MssqlBackend::new(settings_of(&cfg));
    let mut errors = Vec::new();
    for _ in 0..2 {
        errors.push(
            b.ping()
                .await
                .expect_err("the stand-in refuses every login")
                .to_string(),
        );
    }
    for e in &errors {
        assert!(
            e.contains(&format!(
                "login failed — check that the managed identity {MI_CLIENT_ID} has a user in this database (CREATE USER [<its name>] FROM EXTERNAL PROVIDER)"
            )) && e.contains("database[0].authentication / database[0].client_id")
                && e.contains("<token-identified principal>"),
            "{e}"
        );
        assert!(
            !e.contains("stand-in-token"),
            "the token is never shown: {e}"
        );
    }
    let asked = imds.seen();
    assert!(!asked.is_empty());
    for r in &asked {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", IMDS_PATH));
        assert_eq!(
            r.metadata_header.as_deref(),
            Some("true"),
            "IMDS needs Metadata: true"
        );
        assert_eq!(pair(&r.query, "api-version"), Some("2018-02-01"));
        assert_eq!(
            pair(&r.query, "resource"),
            Some("https://database.windows.net/")
        );
        assert_eq!(pair(&r.query, "client_id"), Some(MI_CLIENT_ID));
    }
    let logins = server.logins();
    let issued: Vec<String> = (1..=asked.len())
        .map(|n| format!("stand-in-token-{n}"))
        .collect();
    for l in &logins {
        assert!(l.fedauth_in_prelogin, "PRELOGIN announces FEDAUTH: {l:?}");
        assert_eq!(l.user, "", "no user name with a token: {l:?}");
        let token = l.token.as_deref().expect("a FEDAUTH token in LOGIN7");
        assert!(
            issued.iter().any(|t| t == token),
            "{token} was issued: {issued:?}"
        );
    }
    // Each refused token is forgotten: the second ping's login carried a new one.
    let distinct: std::collections::BTreeSet<_> =
        logins.iter().filter_map(|l| l.token.clone()).collect();
    assert!(
        distinct.len() >= 2,
        "a refused token is not reused: {logins:?}"
    );
}

/// A fetched token is shared by every connection until shortly before it expires, however
/// many ask at once; then, or once forgotten, a new one is asked for.
#[tokio::test]
async fn a_token_is_asked_for_once_and_again_only_near_its_expiry() {
    let imds = TokenEndpoint::start(200, r#"{"access_token":"t{n}","expires_in":"3600"}"#).await;
    let mut cfg = entra_config(1433, MssqlAuthentication::EntraManagedIdentity);
    cfg.managed_identity_endpoint = Some(imds.url(IMDS_PATH));
    cfg.validate("database[0]").expect("valid");
    let login = Arc::new(
        EntraLogin::from_config(&cfg, "database[0]")
            .expect("config")
            .expect("an Entra login"),
    );
    let tokens = futures::future::join_all((0..8).map(|_| {
        let login = login.clone();
        async move { login.token().await.expect("token").expose().to_string() }
    }))
    .await;
    assert_eq!(
        tokens,
        vec!["t1".to_string(); 8],
        "eight at once, one request"
    );
    assert_eq!(login.token().await.expect("again").expose(), "t1");
    assert_eq!(imds.seen().len(), 1);
    assert!(
        imds.seen()[0].query.iter().all(|(k, _)| k != "client_id"),
        "no client_id: the system-assigned identity"
    );

    login.forget().await;
    assert_eq!(login.token().await.expect("after forget").expose(), "t2");

    // A two-second token is asked for again after one second (half its life).
    imds.answer(200, r#"{"access_token":"t{n}","expires_in":2}"#);
    login.forget().await;
    assert_eq!(login.token().await.expect("short").expose(), "t3");
    assert_eq!(login.token().await.expect("still fresh").expose(), "t3");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(login.token().await.expect("renewed").expose(), "t4");
    assert_eq!(imds.seen().len(), 4);

    // Lifetimes no clock can add, or none at all: kept (a day at most, ten minutes when
    // unknown), never a panic.
    for odd in [r#""18446744073709551615""#, "1e300", r#""soon""#, "-5"] {
        imds.answer(
            200,
            &format!(r#"{{"access_token":"t{{n}}","expires_in":{odd}}}"#),
        );
        login.forget().await;
        let first = login
            .token()
            .await
            .expect("odd lifetime")
            .expose()
            .to_string();
        assert_eq!(login.token().await.expect("kept").expose(), first, "{odd}");
    }
}

/// A service principal's secret is exchanged by the client credentials grant for a token
/// scoped to the resource. Entra refusing it fails the start at once, naming the keys and
/// quoting only Entra's error; an endpoint that is down does not (the database may come up
/// later), and a token answer without a token is reported without being shown.
#[tokio::test]
async fn a_service_principal_exchanges_its_secret_and_refusals_are_explained() {
    let _s = serial().await;
    let entra = TokenEndpoint::start(
        401,
        r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1","error_codes":[7000215]}"#,
    )
    .await;
    let server = LoginStandIn::entra().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "s3cr3t~value=&x\n").expect("write secret");
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let mut cfg = entra_config(server.port, MssqlAuthentication::EntraServicePrincipal);
    cfg.tenant_id = Some(tenant.into());
    cfg.client_id = Some("app-1234".into());
    cfg.client_secret = Some(SecretSource {
        file: Some(secret_file),
        env: None,
    });
    cfg.entra_authority = Some(entra.url("/"));

    let started = Instant::now();
    let e = MssqlBackend::open(settings_of(&cfg))
        .await
        .expect_err("a refused secret fails the start")
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "at once");
    assert_eq!(
        e,
        "the database is unavailable: Entra sign-in failed: Entra's token endpoint answered HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided.  Trace ID: 1 — check database[0].tenant_id / database[0].client_id / database[0].client_secret"
    );
    assert!(!e.contains("s3cr3t"));
    let asked = entra.seen();
    let r = asked.first().expect("a token request");
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", format!("/{tenant}/oauth2/v2.0/token").as_str())
    );
    assert_eq!(pair(&r.form, "grant_type"), Some("client_credentials"));
    assert_eq!(pair(&r.form, "client_id"), Some("app-1234"));
    assert_eq!(pair(&r.form, "client_secret"), Some("s3cr3t~value=&x"));
    assert_eq!(
        pair(&r.form, "scope"),
        Some("https://database.windows.net/.default")
    );
    assert!(server.logins().is_empty(), "no token, no login");

    // Down (503): not the configuration's fault, so the start goes on.
    entra.answer(503, "<html>busy</html>");
    let b = MssqlBackend::open(settings_of(&cfg)).await.expect("starts");
    let e = b.ping().await.expect_err("still no token").to_string();
    assert!(
        e.contains("cannot get an Entra token: Entra's token endpoint answered HTTP 503"),
        "{e}"
    );

    // A 200 without a token: its bytes are not shown (they could be a token under another name).
    entra.answer(200, r#"{"accessToken":"do-not-show"}"#);
    let e = b.ping().await.expect_err("no access_token").to_string();
    assert!(
        e.contains("without an access_token") && !e.contains("do-not-show"),
        "{e}"
    );

    // Granted: the token reaches the login.
    entra.answer(
        200,
        r#"{"token_type":"Bearer","expires_in":3599,"access_token":"sp-token-{n}"}"#,
    );
    let e = b
        .ping()
        .await
        .expect_err("the stand-in refuses")
        .to_string();
    assert!(
        e.contains("check that the Entra app app-1234 has a user in this database"),
        "{e}"
    );
    assert!(server.logins().iter().all(|l| {
        l.token
            .as_deref()
            .is_some_and(|t| t.starts_with("sp-token-"))
    }));
    assert!(!server.logins().is_empty());

    // A rotated secret is used without a restart: the refused token was forgotten, and the
    // next request reads the file again.
    std::fs::write(dir.path().join("secret"), "rotated-secret\n").expect("rotate");
    b.ping().await.expect_err("the stand-in refuses");
    let last = entra.seen().pop().expect("a request");
    assert_eq!(pair(&last.form, "client_secret"), Some("rotated-secret"));
}

/// Azure SQL answers a login with 40613 while a serverless database resumes (or during a
/// failover): the login is tried again after 1 s, then 2 s, and goes through once the
/// database is back (here: the stand-in sends the third login on to the peer).
#[tokio::test]
async fn a_login_refused_while_the_database_resumes_is_tried_again_until_it_is_back() {
    let _s = serial().await;
    let peer = Peer::start();
    let to = peer.port;
    let gateway = LoginStandIn::start(move |n| {
        if n <= 2 {
            LoginAnswer::Refuse(40613)
        } else {
            LoginAnswer::Route(to)
        }
    })
    .await;
    let mut cfg = peer.config();
    cfg.port = Some(gateway.port);
    cfg.connect_timeout_secs = Some(10);
    let b = peer.backend_with(&cfg, 1, Duration::from_secs(5));
    let started = Instant::now();
    let rs = b
        .query("SELECT COUNT(*) AS n FROM Products", page(0, 1))
        .await
        .expect("logged in once the database is back");
    assert_eq!(rs.rows, vec![vec![Value::Int(5)]]);
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "waited 1 s and 2 s: {:?}",
        started.elapsed()
    );
    assert!(gateway.logins().len() >= 3, "{:?}", gateway.logins());
}

/// A database that stays unavailable: the logins stop before the connect timeout, and the
/// caller gets Azure's own reason, not "did not complete the login in time". A refused
/// password is not tried again at all.
#[tokio::test]
async fn a_database_that_stays_unavailable_is_reported_as_such_within_the_connect_timeout() {
    let _s = serial().await;
    let gateway = LoginStandIn::start(|_| LoginAnswer::Refuse(40613)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("password"), PASSWORD).expect("write password");
    let cfg = MssqlConfig {
        host: Some("127.0.0.1".into()),
        port: Some(gateway.port),
        database: Some("Sales".into()),
        user: Some(LOGIN.into()),
        password: Some(SecretSource {
            file: Some(dir.path().join("password")),
            env: None,
        }),
        encrypt: Some(MssqlEncrypt::Required),
        trust_server_certificate: Some(true),
        connect_timeout_secs: Some(4),
        ..MssqlConfig::default()
    };
    let b = MssqlBackend::new(settings_of(&cfg));
    let started = Instant::now();
    let e = b.ping().await.expect_err("never available").to_string();
    let took = started.elapsed();
    assert!(
        e.contains("is busy or failing over (error 40613)")
            && e.contains("retry the connection later"),
        "{e}"
    );
    assert!(
        (Duration::from_millis(2900)..Duration::from_millis(4500)).contains(&took),
        "tried at 0, 1 and 3 s, and gave up before the 4 s timeout: {took:?}"
    );
    assert!(gateway.logins().len() >= 3, "{:?}", gateway.logins());

    let refusing = LoginStandIn::start(|_| LoginAnswer::Refuse(18456)).await;
    let mut cfg = cfg.clone();
    cfg.port = Some(refusing.port);
    let b = MssqlBackend::new(settings_of(&cfg));
    let started = Instant::now();
    let e = b.ping().await.expect_err("refused").to_string();
    assert!(e.contains("login failed"), "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no second try"
    );
}

/// A PEM of a new RSA key's self-signed certificate followed by that key (or, with
/// `other_key`, by another key), the certificate's DER, and the key's public half in PKCS#1
/// form, to check signatures with.
fn app_certificate(other_key: bool) -> (String, Vec<u8>, Vec<u8>) {
    use aws_lc_rs::encoding::AsDer;
    // aws-lc-rs makes the key: rcgen's ring backend cannot make RSA keys, only use them.
    let new_key = || {
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("an RSA key");
        let der = rsa.as_der().expect("PKCS#8").as_ref().to_vec();
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls::pki_types::PrivatePkcs8KeyDer::from(der),
            &rcgen::PKCS_RSA_SHA256,
        )
        .expect("rcgen key");
        (rsa, key)
    };
    let (rsa, key) = new_key();
    let cert = rcgen::CertificateParams::new(vec!["mssql-mcp-app".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let key_pem = if other_key {
        new_key().1.serialize_pem()
    } else {
        key.serialize_pem()
    };
    (
        format!("{}{key_pem}", cert.pem()),
        cert.der().to_vec(),
        aws_lc_rs::signature::KeyPair::public_key(&rsa)
            .as_ref()
            .to_vec(),
    )
}

/// With a certificate instead of a secret, the service principal sends a client assertion as
/// Microsoft documents it (PS256, `x5t#S256`, aud = the token endpoint, iss = sub = the app,
/// a few minutes of life), signed by the certificate's key; a PEM without the right key is
/// refused at start.
#[tokio::test]
async fn a_service_principal_signs_a_client_assertion_with_its_certificate() {
    use base64::Engine;
    use sha2::Digest;
    let _s = serial().await;
    let entra = TokenEndpoint::start(
        200,
        r#"{"access_token":"cert-token-{n}","expires_in":3599}"#,
    )
    .await;
    let server = LoginStandIn::entra().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (pem, cert_der, public_key) = app_certificate(false);
    std::fs::write(dir.path().join("app.pem"), &pem).expect("write pem");
    let tenant = "contoso.onmicrosoft.com";
    let mut cfg = entra_config(server.port, MssqlAuthentication::EntraServicePrincipal);
    cfg.tenant_id = Some(tenant.into());
    cfg.client_id = Some("app-5678".into());
    cfg.client_certificate = Some(SecretSource {
        file: Some(dir.path().join("app.pem")),
        env: None,
    });
    cfg.entra_authority = Some(entra.url(""));
    let b = MssqlBackend::new(settings_of(&cfg));
    let e = b
        .ping()
        .await
        .expect_err("the stand-in refuses")
        .to_string();
    assert!(e.contains("database[0].client_certificate"), "{e}");
    assert!(
        server.logins().iter().all(|l| l
            .token
            .as_deref()
            .is_some_and(|t| t.starts_with("cert-token-"))),
        "{:?}",
        server.logins()
    );

    let asked = entra.seen();
    let r = asked.first().expect("a token request");
    let token_url = entra.url(&format!("/{tenant}/oauth2/v2.0/token"));
    assert_eq!(pair(&r.form, "grant_type"), Some("client_credentials"));
    assert_eq!(pair(&r.form, "client_id"), Some("app-5678"));
    assert_eq!(pair(&r.form, "client_secret"), None);
    assert_eq!(
        pair(&r.form, "client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    let assertion = pair(&r.form, "client_assertion").expect("an assertion");
    let parts: Vec<&str> = assertion.split('.').collect();
    assert_eq!(parts.len(), 3, "{assertion}");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = |part: &str| -> serde_json::Value {
        serde_json::from_slice(&b64.decode(part).expect("base64url")).expect("JSON")
    };
    let (header, claims) = (json(parts[0]), json(parts[1]));
    assert_eq!(header["alg"], "PS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(
        header["x5t#S256"],
        b64.encode(sha2::Sha256::digest(&cert_der))
    );
    assert_eq!(claims["aud"], token_url);
    assert_eq!(claims["iss"], "app-5678");
    assert_eq!(claims["sub"], "app-5678");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (nbf, exp) = (
        claims["nbf"].as_u64().expect("nbf"),
        claims["exp"].as_u64().expect("exp"),
    );
    assert!(nbf <= now + 1 && exp > now && exp - nbf == 600, "{claims}");
    assert_eq!(claims["jti"].as_str().map(str::len), Some(32), "{claims}");
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = b64.decode(parts[2]).expect("signature");
    let verifier = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
        &public_key,
    );
    verifier
        .verify(signed.as_bytes(), &signature)
        .expect("signed by the certificate's key");
    assert!(
        verifier
            .verify(format!("{signed}x").as_bytes(), &signature)
            .is_err(),
        "the check can fail"
    );

    // A rotated certificate is used without a restart (the refused token was forgotten, and
    // the next request reads the PEM again).
    let (rotated, rotated_der, _) = app_certificate(false);
    std::fs::write(dir.path().join("app.pem"), &rotated).expect("rotate");
    b.ping().await.expect_err("the stand-in refuses");
    let last = entra.seen().pop().expect("a request");
    let assertion = pair(&last.form, "client_assertion").expect("an assertion");
    let header = json(assertion.split('.').next().expect("header"));
    assert_eq!(
        header["x5t#S256"],
        b64.encode(sha2::Sha256::digest(&rotated_der))
    );

    // A PEM whose key is another's, or that holds no key at all, is refused at start.
    let (mismatched, _, _) = app_certificate(true);
    for (written, says) in [
        (mismatched.as_str(), "is not the certificate's"),
        (
            pem.split("-----BEGIN PRIVATE KEY-----")
                .next()
                .unwrap_or(""),
            "holds no PEM private key",
        ),
    ] {
        std::fs::write(dir.path().join("app.pem"), written).expect("write pem");
        let err = MssqlSettings::from_config(&cfg, "database[0]", 2, Duration::from_secs(5))
            .expect_err(says);
        assert_eq!(err.key, "database[0].client_certificate", "{err}");
        assert!(err.problem.contains(says), "{err}");
        let key_line = written.lines().rev().nth(1).unwrap_or("");
        assert!(!err.to_string().contains(key_line), "{err}");
    }
}

/// Nothing listening where the managed identity endpoint should be (not an Azure VM): the
/// error says so and what to do.
#[tokio::test]
async fn no_managed_identity_endpoint_is_explained() {
    let port = free_port();
    let mut cfg = entra_config(1433, MssqlAuthentication::EntraManagedIdentity);
    cfg.managed_identity_endpoint = Some(format!("http://127.0.0.1:{port}{IMDS_PATH}"));
    let b = MssqlBackend::open(settings_of(&cfg))
        .await
        .expect("not fatal: it may come up");
    let e = b.ping().await.expect_err("no endpoint").to_string();
    assert!(
        e.contains(&format!(
            "cannot get an Entra token: the managed identity endpoint (http://127.0.0.1:{port}{IMDS_PATH}) did not answer: could not connect"
        )) && e.contains("must run on an Azure VM"),
        "{e}"
    );

    // One that takes the connection and never answers: named as the token endpoint, within
    // the connect timeout (3 s here), not as a SQL Server that did not answer.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            kept.push(tcp);
        }
    });
    let mut cfg = entra_config(1433, MssqlAuthentication::EntraManagedIdentity);
    cfg.connect_timeout_secs = Some(3);
    cfg.managed_identity_endpoint = Some(format!("http://127.0.0.1:{port}{IMDS_PATH}"));
    let b = MssqlBackend::new(settings_of(&cfg));
    let started = Instant::now();
    let e = b.ping().await.expect_err("no answer").to_string();
    assert!(
        e.contains("cannot get an Entra token: no answer within 2 s"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

#[tokio::test]
async fn a_connection_string_from_a_file_connects_read_only_by_default() {
    let _s = serial().await;
    let peer = Peer::start();
    let cfg = peer.string_config(&format!("User Id={LOGIN};Password={PASSWORD}"));
    cfg.validate("database[0]").expect("valid");
    assert_eq!(
        cfg.application_intent(),
        mssql_mcp::config::ApplicationIntent::ReadOnly
    );
    let settings = MssqlSettings::from_config(&cfg, "database[0]", 2, Duration::from_secs(5))
        .expect("settings");
    assert!(!format!("{settings:?}").contains(PASSWORD));
    let b = MssqlBackend::new(settings);
    let rs = b
        .query("SELECT COUNT(*) AS n FROM Orders", page(0, 1))
        .await
        .expect("query");
    assert_eq!(rs.rows, vec![vec![Value::Int(120)]]);
}

// ---------------------------------------------------------------------------------------------
// Catalog and the built statements
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_catalog_lists_tables_and_columns_with_fallback_keys() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend();
    let logs = Logs::default();
    let cat = {
        let _g = logs.capture(tracing_subscriber::EnvFilter::new("mssql_mcp=info"));
        b.catalog().await.expect("catalog")
    };
    // What the peer cannot serve is skipped, and said; its (empty) MS_Description
    // properties it can.
    let skipped = logs.text();
    assert!(skipped.contains("cannot read key constraints"), "{skipped}");
    assert!(!skipped.contains("cannot read descriptions"), "{skipped}");
    // The peer reports no UTF-8 collation (it has no DATABASEPROPERTYEX), so a '…' literal
    // beyond Latin-1 gets its note there (`tests/backends.rs`).
    assert!(!cat.varchar_utf8);
    assert!(
        cat.tables
            .iter()
            .all(|t| t.description.is_none() && t.columns.iter().all(|c| c.description.is_none()))
    );
    let listed: Vec<String> = cat.tables.iter().map(|t| t.qualified()).collect();
    assert_eq!(
        listed,
        [
            "dbo.Customers",
            "dbo.Events",
            "dbo.Orders",
            "dbo.Products",
            "dbo.Tags"
        ]
    );
    let customers = cat.find("[dbo].[Customers]").expect("customers");
    assert_eq!(customers.kind, "table");
    assert_eq!(
        names(customers),
        ["CustomerId", "Name", "Email", "City", "Notes"]
    );
    let id = customers.column("CustomerId").expect("id");
    assert_eq!(id.kind, mssql_mcp::db::ValueKind::Integer);
    assert_eq!(id.data_type, "int");
    let name = customers.column("name").expect("name");
    assert_eq!(name.kind, mssql_mcp::db::ValueKind::Text);
    assert!(
        name.data_type.starts_with("nvarchar("),
        "{}",
        name.data_type
    );
    // The peer declares no keys: every key below comes from the documented fallback.
    let keys: Vec<(String, Vec<String>, bool)> = cat
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.primary_key.clone(), t.key_is_heuristic))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("Customers".into(), vec!["CustomerId".into()], true),
            ("Events".into(), vec!["event_id".into()], true),
            ("Orders".into(), vec!["OrderId".into()], true),
            ("Products".into(), vec!["Id".into()], true),
            ("Tags".into(), vec![], false),
        ]
    );
    assert!(cat.tables.iter().all(|t| t.foreign_keys.is_empty()));
}

#[tokio::test]
async fn lookup_finds_a_row_through_the_fallback_key() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend();
    let customers = table(&b, "Customers").await;
    assert!(customers.key_is_heuristic);
    let cols = names(&customers);
    let rs = b
        .lookup(
            &customers,
            &cols,
            &customers.primary_key,
            &["2".into()],
            page(0, 1),
        )
        .await
        .expect("lookup");
    assert_eq!(rs.rows.len(), 1);
    assert!(!rs.more);
    assert_eq!(
        rs.rows[0][col(&rs, "Name")],
        Value::Text("Café \"Olé\", Ltd".into())
    );
    assert_eq!(
        rs.rows[0][col(&rs, "City")],
        Value::Text("São Paulo".into())
    );
    // A key that cannot be an integer finds nothing instead of failing to convert.
    let none = b
        .lookup(
            &customers,
            &cols,
            &customers.primary_key,
            &["abc".into()],
            page(0, 1),
        )
        .await
        .expect("lookup");
    assert!(none.rows.is_empty());
    // Children through a foreign-key-like column, capped with `more`.
    let orders = table(&b, "Orders").await;
    let rs = b
        .lookup(
            &orders,
            &names(&orders),
            &["CustomerId".into()],
            &["3".into()],
            page(0, 2),
        )
        .await
        .expect("children");
    assert_eq!(ints(&rs, "OrderId"), [2, 42]);
    assert!(rs.more);
    // NULLs come back as null.
    let rs = b
        .lookup(
            &orders,
            &names(&orders),
            &orders.primary_key,
            &["10".into()],
            page(0, 1),
        )
        .await
        .expect("order 10");
    assert_eq!(rs.rows[0][col(&rs, "Status")], Value::Null);
}

/// Keys of `varchar` and `real` columns are cast to the column's type in the lookup (see
/// `key_condition` in `src/db/mssql.rs`). The peer serves only `nvarchar` and `float`
/// columns, so here the catalog entry says `varchar(11)` and `real` for an `nvarchar` and a
/// `float` column: this shows the peer runs the statement, finds rows through it, and that a
/// value the cast would cut (`Customer 07x` into `varchar(11)`) finds nothing.
#[tokio::test]
async fn varchar_and_real_keys_are_cast_to_the_column_type_and_stay_exact() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend();
    let mut customers = table(&b, "Customers").await;
    for c in &mut customers.columns {
        if c.name == "Name" {
            c.data_type = "varchar(11)".into();
        }
    }
    let name = |rs: &RowSet| -> Vec<Value> {
        rs.rows.iter().map(|r| r[col(rs, "Name")].clone()).collect()
    };
    let lookup = |t: TableInfo, key_col: &'static str, key: &'static str| {
        let b = &b;
        async move {
            b.lookup(&t, &names(&t), &[key_col.into()], &[key.into()], page(0, 5))
                .await
                .unwrap_or_else(|e| panic!("{key_col} = {key}: {e}"))
        }
    };
    let rs = lookup(customers.clone(), "Name", "Customer 07").await;
    assert_eq!(name(&rs), [Value::Text("Customer 07".into())]);
    let rs = lookup(customers.clone(), "Name", "Customer 07x").await;
    assert!(rs.rows.is_empty(), "{:?}", rs.rows);
    customers.columns.iter_mut().for_each(|c| {
        if c.name == "Name" {
            c.data_type = "varchar(max)".into();
        }
    });
    let rs = lookup(customers, "Name", "Customer 12").await;
    assert_eq!(name(&rs), [Value::Text("Customer 12".into())]);
    let mut products = table(&b, "Products").await;
    for c in &mut products.columns {
        if c.name == "Price" {
            c.data_type = "real".into();
        }
    }
    let rs = lookup(products, "Price", "20.5").await;
    assert_eq!(ints(&rs, "Id"), [2]);
}

#[tokio::test]
async fn sample_pages_in_key_order() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend();
    let events = table(&b, "Events").await;
    let cols = vec!["event_id".to_string(), "kind".to_string()];
    let first = b.sample(&events, &cols, page(0, 10)).await.expect("page 1");
    assert_eq!(ints(&first, "event_id"), (1..=10).collect::<Vec<_>>());
    assert!(first.more);
    let second = b
        .sample(&events, &cols, page(10, 10))
        .await
        .expect("page 2");
    assert_eq!(ints(&second, "event_id"), (11..=20).collect::<Vec<_>>());
    let last = b
        .sample(&events, &cols, page(EVENTS - 5, 10))
        .await
        .expect("last page");
    assert_eq!(last.rows.len(), 5);
    assert!(!last.more);
    // A table without any key still pages (ORDER BY (SELECT NULL)).
    let tags = table(&b, "Tags").await;
    assert!(tags.primary_key.is_empty());
    let rs = b
        .sample(&tags, &names(&tags), page(10, 5))
        .await
        .expect("tags");
    assert_eq!(rs.rows.len(), 2);
    assert!(!rs.more);
}

#[tokio::test]
async fn search_matches_keywords_literally_and_scores_last() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend();
    let customers = table(&b, "Customers").await;
    let cols = vec!["CustomerId".to_string(), "Name".to_string()];
    let text = vec!["Name".to_string(), "Notes".to_string()];
    let search = |keywords: Vec<String>| {
        let customers = customers.clone();
        let cols = cols.clone();
        let text = text.clone();
        let b = &b;
        async move {
            b.search(SearchRequest {
                table: &customers,
                columns: &cols,
                text_columns: &text,
                keywords: &keywords,
                limit: 5,
            })
            .await
            .expect("search")
        }
    };
    // `%`, `_` and `[` are literal, not wildcards.
    let rs = search(vec!["100%".into()]).await;
    assert_eq!(ints(&rs, "CustomerId"), [3]);
    let rs = search(vec!["r_l".into()]).await; // `_` as a wildcard would match "Natural"
    assert!(rs.rows.is_empty(), "{:?}", rs.rows);
    let rs = search(vec!["[shop".into()]).await;
    assert_eq!(ints(&rs, "CustomerId"), [4]);
    // Unicode, case-insensitively (the peer's collation, like SQL Server's default).
    let rs = search(vec!["zoë".into()]).await;
    assert_eq!(ints(&rs, "CustomerId"), [1]);
    // More matching pairs rank first; the score is the last column.
    let rs = search(vec!["customer".into(), "morning".into()]).await;
    assert_eq!(rs.columns.last().map(|c| c.name.as_str()), Some("_score"));
    assert_eq!(rs.rows.len(), 5);
    let scores = ints(&rs, "_score");
    assert_eq!(scores[0], 2, "{scores:?}");
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
}

/// The peer has no full-text engine: `sys.fulltext_indexes` does not exist there, which the
/// catalog takes as "no full-text indexes" (without losing the connection), so every table is
/// searched with `LIKE`. Part of a word matches, which `FREETEXTTABLE` would not do. The
/// full-text statement itself is unit-tested in `src/db/mssql.rs`.
#[tokio::test]
async fn tables_without_a_full_text_index_are_searched_with_like() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    let cat = b.catalog().await.expect("catalog");
    assert!(cat.tables.iter().all(|t| t.full_text.is_none()));
    let stats = b.pool_stats();
    assert_eq!((stats.created, stats.discarded), (1, 0), "{stats:?}");
    let products = table(&b, "Products").await;
    let cols = names(&products);
    let text = vec!["Name".to_string(), "Category".to_string()];
    let keywords = vec!["rind".to_string(), "arist".to_string()];
    let rs = b
        .search(SearchRequest {
            table: &products,
            columns: &cols,
            text_columns: &text,
            keywords: &keywords,
            limit: 10,
        })
        .await
        .expect("search");
    // "Coffee Grinder" (kitchen) and the two barista products.
    let mut found = ints(&rs, "Id");
    found.sort_unstable();
    assert_eq!(found, [2, 4, 5]);
}

// ---------------------------------------------------------------------------------------------
// Ad-hoc queries, row caps and connection reuse
// ---------------------------------------------------------------------------------------------

/// The transaction rides in the same batch as the query and is rolled back at its end: the
/// query sees one open transaction, and so does the next one on the same connection.
#[tokio::test]
async fn every_adhoc_query_runs_in_its_own_rolled_back_transaction() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    for page_size in [5, 5, 7] {
        let rs = b
            .query("SELECT @@TRANCOUNT AS n", page(0, page_size))
            .await
            .expect("query");
        assert_eq!(rs.rows, vec![vec![Value::Int(1)]], "page size {page_size}");
    }
    // Also after a query that failed inside its transaction.
    b.query("SELECT * FROM Nope", page(0, 5))
        .await
        .expect_err("missing table");
    let rs = b
        .query("SELECT @@TRANCOUNT AS n", page(0, 5))
        .await
        .expect("query");
    assert_eq!(rs.rows, vec![vec![Value::Int(1)]]);
    let stats = b.pool_stats();
    assert_eq!((stats.created, stats.discarded), (1, 0), "{stats:?}");
}

/// An ad-hoc query leaves its small row cap on the connection; what runs next there lifts or
/// resets it. The peer ignores `SET ROWCOUNT`, so this shows that those statements run (the
/// prefixed ones through sp_executesql too) on one reused connection; that the cap would
/// otherwise cut them is unit-tested on the statement text.
#[tokio::test]
async fn a_small_adhoc_row_cap_does_not_cut_the_catalog_samples_lookups_or_searches() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    let small = page(0, 1);
    b.query("SELECT label FROM Tags", small.clone())
        .await
        .expect("query");
    // The first catalog load, on the connection the query left with ROWCOUNT 2.
    let cat = b.catalog().await.expect("catalog");
    assert_eq!(cat.tables.len(), 5);
    assert_eq!(cat.find("Customers").map(|t| t.columns.len()), Some(5));

    let events = table(&b, "Events").await;
    b.query("SELECT label FROM Tags", small.clone())
        .await
        .expect("query");
    let rs = b
        .sample(&events, &["event_id".to_string()], page(0, 10))
        .await
        .expect("sample");
    assert_eq!(ints(&rs, "event_id"), (1..=10).collect::<Vec<_>>());
    assert!(rs.more);

    let orders = table(&b, "Orders").await;
    b.query("SELECT label FROM Tags", small.clone())
        .await
        .expect("query");
    let rs = b
        .lookup(
            &orders,
            &names(&orders),
            &["CustomerId".into()],
            &["3".into()],
            page(0, 5),
        )
        .await
        .expect("children");
    assert_eq!(ints(&rs, "OrderId"), [2, 42, 82]);

    let customers = table(&b, "Customers").await;
    b.query("SELECT label FROM Tags", small.clone())
        .await
        .expect("query");
    let rs = b
        .search(SearchRequest {
            table: &customers,
            columns: &["CustomerId".to_string()],
            text_columns: &["Notes".to_string()],
            keywords: &["delivery".to_string()],
            limit: 8,
        })
        .await
        .expect("search");
    assert_eq!(rs.rows.len(), 8);
    let stats = b.pool_stats();
    assert_eq!((stats.created, stats.discarded), (1, 0), "{stats:?}");
}

#[tokio::test]
async fn an_adhoc_query_is_cut_at_the_page_and_reports_more() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend();
    let rs = b
        .query("SELECT event_id FROM Events ORDER BY event_id", page(0, 50))
        .await
        .expect("query");
    assert_eq!(ints(&rs, "event_id"), (1..=50).collect::<Vec<_>>());
    assert!(rs.more);
    let rs = b
        .query(
            "SELECT event_id FROM Events ORDER BY event_id",
            page(EVENTS - 10, 50),
        )
        .await
        .expect("query");
    assert_eq!(rs.rows.len(), 10);
    assert!(!rs.more);
    let rs = b
        .query(
            "WITH c AS (SELECT City, COUNT(*) AS n FROM Customers GROUP BY City) SELECT * FROM c ORDER BY n DESC; ",
            page(0, 2),
        )
        .await
        .expect("CTE with a trailing semicolon");
    assert_eq!(rs.rows.len(), 2);
    assert!(rs.more);
    // A trailing line comment cannot swallow the rollback that follows the query.
    let rs = b
        .query("SELECT COUNT(*) AS n FROM Orders -- how many?", page(0, 1))
        .await
        .expect("comment");
    assert_eq!(rs.rows, vec![vec![Value::Int(120)]]);
}

#[tokio::test]
async fn rows_past_the_cap_are_drained_and_the_connection_is_reused() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    b.ping().await.expect("ping");
    let before = b.pool_stats();
    // 120 rows, 6 kept: the other 114 are within the drain budget.
    for _ in 0..3 {
        let rs = b
            .query("SELECT * FROM Orders", page(0, 5))
            .await
            .expect("query");
        assert_eq!(rs.rows.len(), 5);
        assert!(rs.more);
    }
    let after = b.pool_stats();
    assert_eq!(after.discarded, before.discarded, "{before:?} -> {after:?}");
    assert_eq!(after.created, before.created, "{before:?} -> {after:?}");
}

/// Rows past the cap that carry more than `DRAIN_BYTES` (1 MiB) are not read to the end: the
/// connection is discarded, which is cheaper than reading megabytes to throw them away, and
/// the next query opens a fresh one. Under the budget the connection is kept.
#[tokio::test]
async fn a_drain_past_its_byte_budget_discards_its_connection() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    b.ping().await.expect("ping");
    let big = "SELECT OrderId, REPLICATE(CAST(N'x' AS nvarchar(max)), 100000) AS big FROM Orders";
    // Ten rows of 100,000 characters, two kept: 800 KB drained, within the budget.
    let before = b.pool_stats();
    let rs = b
        .query(&format!("{big} WHERE OrderId <= 10"), page(0, 2))
        .await
        .expect("query");
    assert_eq!(rs.rows.len(), 2);
    assert!(rs.more);
    let after = b.pool_stats();
    assert_eq!(after.discarded, before.discarded, "{before:?} -> {after:?}");
    // 120 such rows: the drain passes 1 MiB after a few and gives up on the connection.
    let rs = b.query(big, page(0, 2)).await.expect("query");
    assert_eq!(rs.rows.len(), 2);
    assert!(rs.more);
    one_more_discarded(&b, &before).await;
    count_orders(&b, "the next query").await;
    assert_eq!(b.pool_stats().created, before.created + 1);
}

/// `max_row_mib` counts each row as it arrives, and stops reading one that passes it: the
/// query fails saying what to select instead and its connection is replaced, while rows
/// under it read as before however large the whole result. The peer ignores `TEXTSIZE`, so
/// a long `nvarchar(max)` from it arrives whole, as an `xml` value does from SQL Server
/// (which the peer cannot send).
#[tokio::test]
async fn a_row_over_max_row_mib_fails_the_query_and_replaces_its_connection() {
    let _s = serial().await;
    let peer = Peer::start();
    let cfg = MssqlConfig {
        max_row_mib: Some(1),
        ..peer.config()
    };
    let b = peer.backend_with(&cfg, 1, Duration::from_secs(10));
    b.ping().await.expect("ping");
    let long = |chars: usize| format!("REPLICATE(CAST(N'x' AS nvarchar(max)), {chars})");
    let before = b.pool_stats();

    // 1.2 MB as UTF-16: over the limit.
    let err = b
        .query(&format!("SELECT {} AS big", long(600_000)), page(0, 5))
        .await
        .expect_err("a row over the limit");
    let msg = err.to_string();
    assert!(
        msg.contains("larger than the 1 MiB") && msg.contains("CONVERT(nvarchar(max), col)"),
        "{msg}"
    );
    let after = one_more_discarded(&b, &before).await;

    // Five rows of 600 KB each: 3 MB in all, every row under the limit.
    let rs = b
        .query(
            &format!(
                "SELECT OrderId, {} AS big FROM Orders WHERE OrderId <= 5",
                long(300_000)
            ),
            page(0, 10),
        )
        .await
        .expect("rows under the limit");
    assert_eq!(rs.rows.len(), 5);
    assert!(!rs.more);
    assert!(!rs.cut_values.is_empty(), "long values are cut and say so");
    assert_eq!(b.pool_stats().discarded, after.discarded);

    // Over the limit in a row past the page: the page stands, the connection goes.
    let rs = b
        .query(
            &format!(
                "SELECT OrderId, {} AS big FROM Orders WHERE OrderId <= 5 ORDER BY OrderId",
                long(0).replace(", 0)", ", CASE WHEN OrderId = 4 THEN 600000 ELSE 10 END)")
            ),
            page(0, 2),
        )
        .await
        .expect("the page before the large row");
    assert_eq!(ints(&rs, "OrderId"), vec![1, 2]);
    assert!(rs.more);
    one_more_discarded(&b, &after).await;

    count_orders(&b, "the next query, on a new connection").await;
}

/// tiberius reads every value of a row before handing it over, so a result's width bounds
/// what one row can make the server hold: past the column limit the query fails before its
/// first row, saying why, and the connection left mid-response is replaced.
#[tokio::test]
async fn a_result_wider_than_the_column_limit_fails_before_its_first_row() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    let columns = |n: usize| -> String {
        (0..n)
            .map(|i| format!("OrderId AS c{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let limit = mssql_mcp::db::mssql::MAX_RESULT_COLUMNS;
    let rs = b
        .query(
            &format!("SELECT {} FROM Orders", columns(limit)),
            page(0, 2),
        )
        .await
        .expect("at the limit");
    assert_eq!((rs.columns.len(), rs.rows.len()), (limit, 2));
    let before = b.pool_stats();
    let err = b
        .query(
            &format!("SELECT {} FROM Orders", columns(limit + 1)),
            page(0, 2),
        )
        .await
        .expect_err("past the limit");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{} columns", limit + 1)) && msg.contains("fewer"),
        "{msg}"
    );
    one_more_discarded(&b, &before).await;
    count_orders(&b, "the next query").await;
}

#[tokio::test]
async fn a_stream_abandoned_past_the_drain_budget_discards_its_connection() {
    let _s = serial().await;
    let peer = Peer::start();
    // One connection, so a desynchronised one would be reused by the next query.
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    b.ping().await.expect("ping");
    let before = b.pool_stats();
    // The peer ignores SET ROWCOUNT and sends all 3,000 rows; the client keeps 4 and gives up
    // after draining 1,000.
    let rs = b
        .query(
            "SELECT event_id, payload FROM Events ORDER BY event_id",
            page(0, 3),
        )
        .await
        .expect("query");
    assert_eq!(ints(&rs, "event_id"), [1, 2, 3]);
    assert!(rs.more);
    one_more_discarded(&b, &before).await;
    // The next query sees its own rows, not the rest of the previous stream.
    let rs = b
        .query("SELECT Name FROM Products WHERE Id = 4", page(0, 5))
        .await
        .expect("next query");
    assert_eq!(rs.rows, vec![vec![Value::Text("Milk Frother".into())]]);
}

#[tokio::test]
async fn a_query_future_dropped_mid_stream_does_not_desync_the_pool() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    b.ping().await.expect("ping");
    for wait in [1u64, 5, 20, 60] {
        // A large result, abandoned after `wait` ms by dropping the future (as a client
        // disconnect or an outer timeout would).
        let _ = tokio::time::timeout(
            Duration::from_millis(wait),
            b.query(
                "SELECT a.event_id, b.Name FROM Events a CROSS JOIN Products b",
                page(0, 10_000),
            ),
        )
        .await;
        let rs = b
            .query("SELECT Id, Name FROM Products ORDER BY Id", page(0, 10))
            .await
            .unwrap_or_else(|e| panic!("after dropping at {wait} ms: {e}"));
        assert_eq!(
            ints(&rs, "Id"),
            [1, 2, 3, 4, 5],
            "after dropping at {wait} ms"
        );
    }
}

/// Against a real TDS server that answers a request in full before it reads the attention
/// that followed it (the peer; see [`Staller`]): the cancel reads that whole answer, finds no
/// acknowledgement in it, and gives up cleanly; nothing hangs, and the pool goes on with a
/// new connection.
#[tokio::test]
async fn a_cancel_the_peer_answers_late_ends_cleanly() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(1));
    b.ping().await.expect("ping");
    let sql = "SELECT COUNT(*) AS n FROM Orders";
    let before = b.pool_stats();
    peer.signal("-STOP");
    let err = b.query(sql, page(0, 1)).await.expect_err("timed out");
    assert!(matches!(err, DbError::Timeout(1)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    peer.signal("-CONT");
    expect_cancels(&b, (0, 1), Duration::from_secs(10)).await;
    let rs = b.query(sql, page(0, 1)).await.expect("the next query");
    assert_eq!(rs.rows, vec![vec![Value::Int(120)]]);
    let after = b.pool_stats();
    assert_eq!(
        after.discarded,
        before.discarded + 1,
        "{before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn a_missing_table_error_keeps_the_connection_usable() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    b.ping().await.expect("ping");
    let before = b.pool_stats();
    let err = b
        .query("SELECT * FROM Nope", page(0, 5))
        .await
        .expect_err("missing table");
    let DbError::Sql(msg) = &err else {
        panic!("expected a SQL error, got {err:?}")
    };
    assert!(
        msg.to_ascii_lowercase().contains("invalid object name"),
        "{msg}"
    );
    assert!(msg.contains("208"), "{msg}");
    let rs = b
        .query("SELECT COUNT(*) AS n FROM Customers", page(0, 1))
        .await
        .expect("query after the error");
    assert_eq!(rs.rows, vec![vec![Value::Int(40)]]);
    let after = b.pool_stats();
    assert_eq!(after.discarded, before.discarded, "{before:?} -> {after:?}");
    assert_eq!(after.created, before.created, "{before:?} -> {after:?}");
}

/// Under the binary's default log filter, an error the server sends for a query is not logged
/// again by tiberius at ERROR (the tool call reports it and `mcp::dispatch` logs it with the
/// request id), while tiberius' warnings and our own lines still show.
#[tokio::test]
async fn a_query_error_is_not_logged_by_tiberius_under_the_default_filter() {
    let _s = serial().await;
    let peer = Peer::start();
    let logs = Logs::default();
    let _logging = logs.capture(mssql_mcp::cli::default_log_filter());
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(10));
    b.catalog().await.expect("catalog");
    let err = b
        .query("SELECT * FROM NoSuchTable", page(0, 5))
        .await
        .expect_err("missing table");
    assert!(matches!(err, DbError::Sql(_)), "{err:?}");
    // The catalog load reads views the peer lacks: our INFO line says so.
    let logged = logs.text();
    assert!(
        logged.contains("SQL Server catalog: cannot read key constraints"),
        "{logged}"
    );
    // tiberius' own warning, per connection, is kept (the peer's certificate is trusted).
    assert!(
        logged.contains("Trusting the server certificate"),
        "{logged}"
    );
    assert!(!logged.contains("NoSuchTable"), "{logged}");
    // At level ERROR (the peer's messages name its functions, ERROR_MESSAGE among them).
    assert!(!logged.contains(" ERROR "), "{logged}");
}

/// A correlated subquery over 200 × 3,000 rows: about three seconds of work for the peer.
const SLOW_QUERY: &str = "SELECT COUNT(*) AS n FROM Events a WHERE a.event_id <= 200 AND a.event_id > (SELECT COUNT(*) FROM Events b WHERE b.kind = a.kind AND b.event_id < a.event_id)";

#[tokio::test]
async fn a_query_over_its_time_limit_times_out_and_its_connection_is_discarded() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 2, Duration::from_secs(1));
    b.ping().await.expect("ping");
    let before = b.pool_stats();
    let started = Instant::now();
    // Seconds of work in Python and no rows until the end (the peer has no WAITFOR).
    let err = b
        .query(SLOW_QUERY, page(0, 1))
        .await
        .expect_err("must time out");
    assert!(matches!(err, DbError::Timeout(1)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1_900),
        "{:?}",
        started.elapsed()
    );
    one_more_discarded(&b, &before).await;
    // The pool carries on (a new connection; the peer finishes the abandoned count first).
    let rs = b
        .query("SELECT COUNT(*) AS n FROM Tags", page(0, 1))
        .await
        .expect("after the timeout");
    assert_eq!(rs.rows, vec![vec![Value::Int(12)]]);
}

/// A pool whose every connection is running a query still answers `ping` (what `/health`
/// asks) at once, instead of waiting for one to come free and reporting the database down
/// when none does in time: by a whole answer on a pooled connection within the last second,
/// or else on a connection of the check's own (a login, counted).
#[tokio::test]
async fn ping_answers_while_every_pooled_connection_is_busy() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = Arc::new(peer.backend_with(&peer.config(), 1, Duration::from_secs(30)));
    b.ping().await.expect("ping");
    let answered = Instant::now();
    // Twice the slow query's work (about 5 s here), so that it still holds the connection
    // well after `RECENT_ANSWER` on a faster host.
    let slower = SLOW_QUERY.replace("a.event_id <= 200", "a.event_id <= 400");
    assert_ne!(slower, SLOW_QUERY);
    let slow = {
        let b = b.clone();
        tokio::spawn(async move { b.query(&slower, page(0, 1)).await })
    };
    // The slow query has the pool's one connection by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.pool_stats().in_use, 1, "{:?}", b.pool_stats());
    // The first ping's answer is recent: no login for this one.
    b.ping().await.expect("ping while the pool is busy");
    assert_eq!(b.pool_stats().check_connections, 0, "{:?}", b.pool_stats());
    // A second on, the busy pool says nothing any more: the check logs in on its own.
    tokio::time::sleep(
        (mssql_mcp::db::mssql::RECENT_ANSWER + Duration::from_millis(200))
            .saturating_sub(answered.elapsed()),
    )
    .await;
    assert_eq!(b.pool_stats().in_use, 1, "{:?}", b.pool_stats());
    let started = Instant::now();
    b.ping()
        .await
        .expect("ping on a connection of its own while the pool is busy");
    let took = started.elapsed();
    assert_eq!(b.pool_stats().check_connections, 1, "{:?}", b.pool_stats());
    assert!(!slow.is_finished(), "the slow query ended first ({took:?})");
    slow.await.expect("task").expect("the slow query");
    eprintln!("the slow query took {:?}", answered.elapsed());
}

#[tokio::test]
async fn eight_concurrent_callers_share_a_pool_of_four() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = Arc::new(peer.backend_with(&peer.config(), 4, Duration::from_secs(20)));
    let customers = table(&b, "Customers").await;
    let mut tasks = Vec::new();
    for caller in 0..8i64 {
        let b = b.clone();
        let customers = customers.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25i64 {
                let id = (caller * 25 + i) % 40 + 1;
                let rs = b
                    .lookup(
                        &customers,
                        &["CustomerId".to_string(), "Email".to_string()],
                        &customers.primary_key,
                        &[id.to_string()],
                        page(0, 1),
                    )
                    .await
                    .expect("lookup");
                assert_eq!(ints(&rs, "CustomerId"), [id]);
                if i % 5 == 0 {
                    count_orders(&b, "count").await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    let stats = b.pool_stats();
    assert!(stats.connections <= 4, "{stats:?}");
    assert_eq!(stats.discarded, 0, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Outage
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_outage_fails_fast_and_the_pool_recovers_without_a_restart() {
    let _s = serial().await;
    let mut peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 4, Duration::from_secs(10));
    let products = table(&b, "Products").await;
    let cols = names(&products);
    b.sample(&products, &cols, page(0, 5))
        .await
        .expect("before");

    // From here on, what an operator reads (INFO and up; the pool's tasks run on this
    // single-threaded runtime, so they log here too).
    let logs = Logs::default();
    let logging = logs.capture(tracing_subscriber::EnvFilter::new("info"));
    peer.kill();
    for attempt in 0..3 {
        let started = Instant::now();
        let err = b
            .sample(&products, &cols, page(0, 5))
            .await
            .expect_err("the database is down");
        assert!(
            matches!(err, DbError::Unavailable(_)),
            "attempt {attempt}: {err:?}"
        );
        assert!(err.is_transient());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }
    let err = b.ping().await.expect_err("ping while down");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(b.pool_stats().connect_failures >= 1, "{:?}", b.pool_stats());

    peer.spawn(); // same port, same data
    let rs = b
        .sample(&products, &cols, page(0, 5))
        .await
        .expect("the first call after the restart succeeds");
    assert_eq!(ints(&rs, "Id"), [1, 2, 3, 4, 5]);
    b.ping().await.expect("ping after the restart");
    let rs = b
        .query("SELECT COUNT(*) AS n FROM Events", page(0, 1))
        .await
        .expect("query after the restart");
    assert_eq!(rs.rows, vec![vec![Value::Int(EVENTS as i64)]]);
    drop(logging);
    // The outage is logged once when it begins and once when it ends, not once per attempt.
    let logged = logs.text();
    let count = |what: &str| logged.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("SQL Server connection attempt failed"), 1, "{logged}");
    assert_eq!(count("SQL Server reachable again"), 1, "{logged}");
    assert_eq!(count("catalog reload failed"), 0, "{logged}");
}

/// Writes `text` to `file` as a secrets agent does: whole, into a new file renamed over the
/// old one, so that no reader sees half of it.
fn rotate(file: &Path, text: &str) {
    let new = file.with_extension("new");
    std::fs::write(&new, text).expect("write");
    std::fs::rename(&new, file).expect("rename");
}

/// Calls `count_orders` until it succeeds (within 20 s), the errors before it returned.
async fn orders_until_counted(b: &MssqlBackend, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut errors = Vec::new();
    loop {
        match b
            .query("SELECT COUNT(*) AS n FROM Orders", page(0, 1))
            .await
        {
            Ok(rs) => {
                assert_eq!(rs.rows, vec![vec![Value::Int(120)]], "{what}");
                return errors;
            }
            Err(e) if Instant::now() < deadline => {
                errors.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: still failing after 20 s: {e}; before: {errors:?}"),
        }
    }
}

/// Restarts `peer` with `password` (so that the pool's connections are new) and reads through
/// `b`, until `line` has been logged `times` times (at most five restarts). A connection the
/// pool began opening before the test changed a file may still log in with what it read
/// before; the next restart's connections read the file anew.
async fn restart_until_logged(
    peer: &mut Peer,
    b: &MssqlBackend,
    password: &str,
    logs: &Logs,
    (line, times): (&str, usize),
) {
    for _ in 0..5 {
        peer.restart_with_password(password);
        orders_until_counted(b, line).await;
        if logs.text().lines().filter(|l| l.contains(line)).count() >= times {
            return;
        }
    }
    panic!("`{line}` not logged {times} times: {}", logs.text());
}

/// The password rotated without a restart: SQL Server's login gets a new password (the peer,
/// restarted with it), then its file does; new connections log in with what the file says
/// now. A file that cannot be read (gone, or empty mid-write) leaves the last password in use.
#[tokio::test]
async fn a_password_rotated_in_its_file_is_used_by_new_connections_without_a_restart() {
    const ROTATED: &str = "R0tated-Pa55word-2";
    let _s = serial().await;
    let mut peer = Peer::start();
    let b = peer.backend();
    count_orders(&b, "with the first password").await;
    let logs = Logs::default();
    let logging = logs.capture(tracing_subscriber::EnvFilter::new("info"));

    // The server's side first: until the file says so, logins are refused as any wrong
    // password is, naming the keys to fix.
    peer.restart_with_password(ROTATED);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        match b.query("SELECT 1 AS one", page(0, 1)).await {
            Err(e) if e.to_string().contains("login failed") => break e.to_string(),
            other => {
                assert!(Instant::now() < deadline, "no refusal: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(
        refused.contains("database[0].user / database[0].password"),
        "{refused}"
    );
    rotate(&peer.password_file(), &format!("{ROTATED}\n"));
    orders_until_counted(&b, "with the rotated password").await;
    let logged = logs.text();
    let count = |what: &str| logged.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("database[0].password changed; new connections log in with it"),
        1,
        "{logged}"
    );

    // The file gone (or empty, as a writer that truncates first leaves it): the password
    // read before stays in use, and that is said once for the whole spell, with the key and
    // the path, and once more when the file can be read again.
    let unreadable = "cannot read the SQL Server login's secret again; new connections log in with the one read before";
    std::fs::remove_file(peer.password_file()).expect("remove");
    restart_until_logged(&mut peer, &b, ROTATED, &logs, (unreadable, 1)).await;
    std::fs::write(peer.password_file(), "").expect("write");
    peer.restart_with_password(ROTATED);
    orders_until_counted(&b, "with the file empty").await;
    rotate(&peer.password_file(), ROTATED);
    let again = "the SQL Server login's secret can be read again";
    restart_until_logged(&mut peer, &b, ROTATED, &logs, (again, 1)).await;
    drop(logging);
    let logged = logs.text();
    let count = |what: &str| logged.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count(unreadable), 1, "{logged}");
    assert!(logged.contains("database[0].password.file"), "{logged}");
    assert_eq!(count(again), 1, "{logged}");
    // The same content again is no change.
    assert_eq!(count("database[0].password changed"), 1, "{logged}");
    for shown in [logged.as_str(), refused.as_str(), &format!("{b:?}")] {
        assert!(!shown.contains(PASSWORD), "password shown: {shown}");
        assert!(!shown.contains(ROTATED), "password shown: {shown}");
    }
}

/// A Windows account's password changed by its domain: until its file is updated the
/// sign-in is refused, then new connections prove the new one by NTLM, without a restart.
#[tokio::test]
async fn a_windows_password_rotated_in_its_file_signs_in_anew() {
    const ROTATED: &str = "W1ndows-R0tated-90days!";
    let _s = serial().await;
    let mut peer = Peer::start_windows();
    let (_, user, password) = WINDOWS_ACCOUNT;
    let cfg = peer.windows_config(&format!("CORP\\{user}"), password);
    let file = cfg
        .password
        .as_ref()
        .and_then(|p| p.file.clone())
        .expect("a file");
    let b = peer.backend_with(&cfg, 2, Duration::from_secs(5));
    count_orders(&b, "with the first password").await;
    peer.restart_with_password(ROTATED);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match b.query("SELECT 1 AS one", page(0, 1)).await {
            Err(e) if e.to_string().contains("login failed") => {
                assert!(e.to_string().contains("CORP\\svc_mcp"), "{e}");
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "no refusal: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    rotate(&file, ROTATED);
    orders_until_counted(&b, "with the rotated password").await;
    // The peer refused the old password and proved the new one.
    let log = peer.ntlm_log();
    assert!(log.iter().any(|l| l.starts_with("refused")), "{log:?}");
    assert!(
        log.last()
            .is_some_and(|l| l.starts_with("ok CORP\\svc_mcp")),
        "{log:?}"
    );
}

/// A connection string in a file rotates the same way; one that names another server or
/// database is not followed (the catalog and every message name the first), and new
/// connections keep the last string that could be used, until a restart.
#[tokio::test]
async fn a_rotated_connection_string_logs_in_anew_but_never_moves_to_another_server() {
    const ROTATED: &str = "R0tated-Str1ng-Pa55";
    let _s = serial().await;
    let mut peer = Peer::start();
    let login = |password: &str| format!("User Id={LOGIN};Password={password}");
    let cfg = peer.string_config(&login(PASSWORD));
    let file = cfg
        .connection_string
        .as_ref()
        .and_then(|s| s.file.clone())
        .expect("a file");
    let b = peer.backend_with(&cfg, 2, Duration::from_secs(10));
    count_orders(&b, "with the first string").await;
    let logs = Logs::default();
    let logging = logs.capture(tracing_subscriber::EnvFilter::new("info"));
    let text = |port: u16, database: &str, password: &str| {
        format!(
            "Server=tcp:127.0.0.1,{port};Database={database};TrustServerCertificate=true;{}",
            login(password)
        )
    };

    rotate(&file, &text(peer.port, "pysqlbridge", ROTATED));
    peer.restart_with_password(ROTATED);
    orders_until_counted(&b, "with the rotated string").await;

    // Another server (a free port: nothing listens there), then another database: neither is
    // followed; the peer restarted makes every connection new, and they go where they went.
    let elsewhere = free_port();
    let moved = "database[0].connection_string changed to another server or database, which takes a restart";
    for (times, changed) in [
        (1, text(elsewhere, "pysqlbridge", ROTATED)),
        (2, text(peer.port, "master", ROTATED)),
    ] {
        rotate(&file, &changed);
        restart_until_logged(&mut peer, &b, ROTATED, &logs, (moved, times)).await;
    }
    // A string the server would refuse at start (here `Trusted_Connection`, which tiberius
    // does not read) is refused the same way, with the key and the fix, and not used.
    rotate(
        &file,
        &format!(
            "{};Trusted_Connection=yes",
            text(peer.port, "pysqlbridge", ROTATED)
        ),
    );
    let unusable = "database[0].connection_string changed but cannot be used; new connections keep logging in with the one read before";
    restart_until_logged(&mut peer, &b, ROTATED, &logs, (unusable, 1)).await;
    drop(logging);
    let logged = logs.text();
    let count = |what: &str| logged.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("database[0].connection_string changed; new connections log in with it"),
        1,
        "{logged}"
    );
    assert_eq!(count(moved), 2, "{logged}");
    assert!(logged.contains("Trusted_Connection"), "{logged}");
    assert!(!logged.contains(ROTATED), "{logged}");
    assert!(
        !logged.contains(&format!("Password={PASSWORD}")),
        "{logged}"
    );
}

// ---------------------------------------------------------------------------------------------
// Through the tools, from a configuration file
// ---------------------------------------------------------------------------------------------

fn tools_config(peer: &Peer) -> mssql_mcp::config::Config {
    tools_config_with(peer, "")
}

/// [`tools_config`] with `database_keys` added to its `[[database]]`.
fn tools_config_with(peer: &Peer, database_keys: &str) -> mssql_mcp::config::Config {
    mssql_mcp::config::Config::parse(&tools_config_text(peer, database_keys)).expect("config")
}

/// The first scope of a server built from [`tools_config_with`], and the state it lives in.
async fn tools_scope(
    peer: &Peer,
    database_keys: &str,
) -> (mssql_mcp::state::AppState, Arc<mssql_mcp::state::Scope>) {
    let state = mssql_mcp::app::build_state(tools_config_with(peer, database_keys), true)
        .await
        .expect("state");
    let scope = state.scopes()[0].clone();
    (state, scope)
}

/// The text of [`tools_config_with`].
fn tools_config_text(peer: &Peer, database_keys: &str) -> String {
    format!(
        r#"
[server]
insecure_no_auth = true

[[database]]
name = "sales"
kind = "mssql"
host = "127.0.0.1"
port = {port}
database = "pysqlbridge"
user = "{LOGIN}"
password = {{ file = "{pw}" }}
trust_server_certificate = true
connect_timeout_secs = 5
pool_size = 4
max_row_mib = 1
{database_keys}

[[scope]]
path = "/claude"
database = "sales"
profile = "full"
"#,
        port = peer.port,
        pw = peer.password_file().display()
    )
}

/// A table made since the catalog was read (it is kept for a minute) is found at once by
/// every tool that names it: a name the catalog does not know has it read anew. The peer
/// reads its tables when it starts, so the table is made by restarting it with one more.
#[tokio::test]
async fn a_table_made_since_the_catalog_was_read_is_found_at_once() {
    use mssql_mcp::tools;
    use serde_json::json;
    let _s = serial().await;
    let mut peer = Peer::start();
    // A scope with a rule, under which execute_sql refuses a name the catalog does not know.
    let text = tools_config_text(&peer, "") + "deny_tables = [\"dbo.Events\"]\n";
    // Each tool's own way to a miss is shown by a server of its own (one catalog each),
    // where it is the first to name the new table.
    let first_to_name = [
        (
            "describe_table",
            json!({"table": "Suppliers"}),
            "SupplierId",
        ),
        (
            "get_table_sample",
            json!({"table": "dbo.Suppliers"}),
            "Kettle & Co",
        ),
        (
            "execute_sql",
            json!({"sql": "SELECT Name FROM dbo.Suppliers WHERE SupplierId = 1"}),
            "Brew Parts AG",
        ),
        ("fetch", json!({"id": "dbo.Suppliers"}), "SupplierId"),
        ("fetch", json!({"id": "dbo.Suppliers/2"}), "Kettle & Co"),
        (
            "search",
            json!({"query": "describe Suppliers"}),
            "SupplierId",
        ),
    ];
    let mut servers = Vec::new();
    for _ in &first_to_name {
        let config = mssql_mcp::config::Config::parse(&text).expect("config");
        let state = mssql_mcp::app::build_state(config, true)
            .await
            .expect("state");
        let scope = state.scopes()[0].clone();
        let listed = tools::call(&scope, "list_tables", &json!({}), None)
            .await
            .expect("list_tables")
            .value()
            .to_string();
        assert!(!listed.contains("Suppliers"), "{listed}");
        servers.push((state, scope));
    }
    // One more, which only ever names a table its scope hides.
    let config = mssql_mcp::config::Config::parse(&text).expect("config");
    let quiet = mssql_mcp::app::build_state(config, true)
        .await
        .expect("state");
    let read_at = Instant::now();

    let dir = peer.dir.path();
    std::fs::write(
        dir.join("data/suppliers.csv"),
        "SupplierId,Name\n1,Brew Parts AG\n2,Kettle & Co\n",
    )
    .expect("write suppliers");
    let config_file = dir.join("config.json");
    let mut peer_config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_file).expect("read")).expect("json");
    peer_config["tables"]
        .as_array_mut()
        .expect("tables")
        .push(json!({"name": "Suppliers", "csv": "data/suppliers.csv"}));
    std::fs::write(&config_file, peer_config.to_string()).expect("write config");
    peer.kill();
    peer.spawn();
    // A catalog read in the last few seconds is not read again for a miss (so that a name
    // nobody has is not a reload per call); these are a minute from their reload.
    let recheck = mssql_mcp::db::mssql::CATALOG_RECHECK;
    tokio::time::sleep((read_at + recheck).saturating_duration_since(Instant::now())).await;

    let call = |scope: &Arc<mssql_mcp::state::Scope>, tool: &str, args: &serde_json::Value| {
        let scope = scope.clone();
        let (tool, args) = (tool.to_string(), args.clone());
        async move {
            tools::call(&scope, &tool, &args, None)
                .await
                .map(|out| out.value().to_string())
                .map_err(|e| e.to_string())
        }
    };
    for ((tool, args, expected), (_, scope)) in first_to_name.iter().zip(&servers) {
        let out = call(scope, tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool} {args} on the new table: {e}"));
        assert!(out.contains(expected), "{tool} {args}: {out}");
    }
    // The rules still hold, and a name nobody has is still refused, listing the new table.
    let scope = &servers[0].1;
    let hidden = call(
        scope,
        "execute_sql",
        &json!({"sql": "SELECT * FROM dbo.Events"}),
    )
    .await
    .expect_err("a hidden table");
    assert!(!hidden.contains("payload"), "{hidden}");
    let nowhere = call(scope, "describe_table", &json!({"table": "Nowhere"}))
        .await
        .expect_err("a name nobody has");
    assert!(
        nowhere.contains("Suppliers") && !nowhere.contains("Events"),
        "{nowhere}"
    );
    // A hidden table is a name the catalog knows: asking for it reads nothing anew.
    let catalog_reads = || {
        std::fs::read_to_string(peer.dir.path().join("server.log"))
            .unwrap_or_default()
            .matches("FROM INFORMATION_SCHEMA.TABLES")
            .count()
    };
    let before = catalog_reads();
    let hidden = call(
        &quiet.scopes()[0],
        "describe_table",
        &json!({"table": "dbo.Events"}),
    )
    .await
    .expect_err("hidden");
    assert!(
        hidden.contains("no table `dbo.Events` is visible here"),
        "{hidden}"
    );
    assert_eq!(catalog_reads(), before);
}

/// With `session_context = true` SQL Server is told who asks, before the statements of each
/// tool call: `mcp_user` (the signed-in user, NULL without one), `mcp_scope` and `mcp_client`
/// (the OAuth client id signed in through), set again only when they change on a connection.
/// The peer runs `sp_set_session_context` where SQL Server would
/// (`tests/common/context_peer.py` gives it the procedure) and logs each call.
#[tokio::test]
async fn the_session_context_says_who_asks_before_each_query() {
    use mssql_mcp::tools;
    use serde_json::json;
    let _s = serial().await;
    let peer = Peer::start_context();
    let (_state, scope) = tools_scope(&peer, "session_context = true").await;
    let count = json!({"sql": "SELECT COUNT(*) AS n FROM Orders"});
    let call = |tool: &'static str,
                args: serde_json::Value,
                (user, client): (Option<&'static str>, Option<&'static str>)| {
        let scope = scope.clone();
        async move {
            tools::call_through(&scope, tool, &args, user, client)
                .await
                .unwrap_or_else(|e| panic!("{tool} for {user:?}: {e}"))
                .value()
                .to_string()
        }
    };
    let alice = (Some("alice"), Some("c-chatgpt"));
    let out = call("execute_sql", count.clone(), alice).await;
    assert!(out.contains("120"), "{out}");
    assert_eq!(
        peer.context_log(),
        [
            "mcp_user=alice",
            "mcp_scope=/claude",
            "mcp_client=c-chatgpt"
        ]
    );
    // The same caller again on the same connection: nothing to set.
    call("execute_sql", count.clone(), alice).await;
    assert_eq!(peer.context_log().len(), 3, "{:?}", peer.context_log());
    // The same user through another client is another asker.
    call(
        "execute_sql",
        count.clone(),
        (Some("alice"), Some("c-claude")),
    )
    .await;
    // Another caller, through one of the server's own statements (sp_executesql), and a
    // name with a quote in it.
    let out = call(
        "get_table_sample",
        json!({"table": "Orders", "limit": 2}),
        (Some("bob"), Some("c-claude")),
    )
    .await;
    assert!(out.contains("rows"), "{out}");
    call(
        "execute_sql",
        count.clone(),
        (Some("o'brien"), Some("c-claude")),
    )
    .await;
    // Without sign-in: NULL, so no one's rows are read as someone else's.
    call("execute_sql", count.clone(), (None, None)).await;
    assert_eq!(
        peer.context_log()[3..],
        [
            "mcp_user=alice",
            "mcp_scope=/claude",
            "mcp_client=c-claude",
            "mcp_user=bob",
            "mcp_scope=/claude",
            "mcp_client=c-claude",
            "mcp_user=o'brien",
            "mcp_scope=/claude",
            "mcp_client=c-claude",
            "mcp_user=NULL",
            "mcp_scope=/claude",
            "mcp_client=NULL",
        ]
    );
    // Through the MCP dispatcher, the caller the transport made of an access token (its
    // user and the client id it was issued to) is who asks.
    let seen = peer.context_log().len();
    let caller = mssql_mcp::mcp::dispatch::Caller {
        user: Some("carol".into()),
        client_id: Some("c-registered".into()),
        ip: None,
    };
    let req = mssql_mcp::mcp::protocol::Request {
        id: json!(1),
        method: "tools/call".into(),
        params: json!({"name": "execute_sql", "arguments": count}),
    };
    mssql_mcp::mcp::dispatch::handle(
        &scope,
        mssql_mcp::mcp::protocol::Era::Legacy("2025-06-18"),
        &req,
        &caller,
    )
    .await
    .expect("tools/call");
    assert_eq!(
        peer.context_log()[seen..],
        [
            "mcp_user=carol",
            "mcp_scope=/claude",
            "mcp_client=c-registered"
        ]
    );
    // Off (the default), nothing is sent.
    let before = peer.context_log().len();
    let (_state, plain) = tools_scope(&peer, "").await;
    tools::call(&plain, "execute_sql", &count, Some("alice"))
        .await
        .expect("without session_context");
    assert_eq!(peer.context_log().len(), before);
}

/// A record page (`{scope}/records/{id}`, what a search result's `url` opens) reads for its
/// caller as a tool call does: served over HTTP by the whole application, its lookup sets
/// the session context to the page's caller (no sign-in here: NULL) in its scope.
#[tokio::test]
async fn a_record_page_tells_sql_server_who_asks() {
    use mssql_mcp::tools;
    use serde_json::json;
    let _s = serial().await;
    let peer = Peer::start_context();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = tools_config_with(&peer, "session_context = true");
    config.server.listen = addr;
    config.server.public_url = Some(format!("http://{addr}"));
    let state = mssql_mcp::app::build_state(config, true)
        .await
        .expect("state");
    let scope = state.scopes()[0].clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mssql_mcp::app::run(state, listener, async move {
        let _ = stopped.await;
    }));
    // A search by alice, for a result's url.
    let out = tools::call(&scope, "search", &json!({"query": "Zoë"}), Some("alice"))
        .await
        .expect("search");
    let url = out.value()["results"][0]["url"]
        .as_str()
        .expect("a result url")
        .to_string();
    assert!(
        url.starts_with(&format!("http://{addr}/claude/records/")),
        "{url}"
    );
    let seen = peer.context_log().len();
    let resp = reqwest::Client::new()
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .expect("record page");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("body");
    assert!(body.contains("Ærøskøbing"), "{body}");
    assert_eq!(
        peer.context_log()[seen..],
        ["mcp_user=NULL", "mcp_scope=/claude", "mcp_client=NULL"],
        "{:?}",
        peer.context_log()
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// `check-config --connect` tries `session_context = true` on the server: it passes where the
/// server has `sp_set_session_context`, and fails (exit 69) with what to change where not.
#[tokio::test]
async fn check_config_connect_tries_the_session_context() {
    let _s = serial().await;
    let check = |peer: &Peer| check_config_connect(peer, "session_context = true");
    let with = Peer::start_context();
    let (code, text) = check(&with);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "database `sales`: session_context: the server took mcp_user, mcp_scope and mcp_client"
        ),
        "{text}"
    );
    // Last: the probe runs after check-config's own reads (which say nobody asks: NULL).
    let log = with.context_log();
    assert!(
        log.ends_with(&[
            "mcp_user=check-config".into(),
            "mcp_scope=/check-config".into(),
            "mcp_client=check-config".into()
        ]),
        "{log:?}"
    );
    drop(with);
    let without = Peer::start();
    let (code, text) = check(&without);
    assert_eq!(code, Some(69), "{text}");
    assert!(
        text.contains("database `sales`: FAILED: session_context:")
            && text.contains("set session_context = false"),
        "{text}"
    );
}

/// `mssql-mcp check-config --connect` on [`tools_config_text`] with `database_keys`: its exit
/// code and what it printed.
fn check_config_connect(peer: &Peer, database_keys: &str) -> (Option<i32>, String) {
    let path = peer.dir.path().join("check.toml");
    std::fs::write(&path, tools_config_text(peer, database_keys)).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mssql-mcp"))
        .args(["check-config", "--connect", "--config"])
        .arg(&path)
        .output()
        .expect("run check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `session_context = true` against a server without `sp_set_session_context` (older than
/// SQL Server 2016; here the TDS peer as it comes) fails each call with what to change.
#[tokio::test]
async fn session_context_on_a_server_without_it_says_what_to_change() {
    use mssql_mcp::tools;
    use serde_json::json;
    let _s = serial().await;
    let peer = Peer::start();
    let (_state, scope) = tools_scope(&peer, "session_context = true").await;
    for (tool, args) in [
        (
            "execute_sql",
            json!({"sql": "SELECT COUNT(*) AS n FROM Orders"}),
        ),
        ("get_table_sample", json!({"table": "Orders", "limit": 2})),
    ] {
        let err = tools::call(&scope, tool, &args, Some("alice"))
            .await
            .expect_err(tool)
            .to_string();
        assert!(
            err.contains("has no sp_set_session_context")
                && err.contains("set session_context = false"),
            "{tool}: {err}"
        );
    }
}

#[tokio::test]
async fn the_tools_search_fetch_and_query_sql_server_from_a_config_file() {
    use mssql_mcp::tools;
    use serde_json::json;
    let _s = serial().await;
    let peer = Peer::start();
    let (_state, scope) = tools_scope(&peer, "").await;
    assert_eq!(scope.db.kind(), "mssql");

    let out = tools::call(&scope, "search", &json!({"query": "Zoë"}), None)
        .await
        .expect("search");
    let results = out.value()["results"].as_array().expect("results").clone();
    assert!(!results.is_empty(), "{}", out.value());
    let id = results[0]["id"].as_str().expect("id").to_string();

    let out = tools::call(&scope, "fetch", &json!({"id": id}), None)
        .await
        .expect("fetch through the fallback key");
    let fetched = out.value().to_string();
    assert!(fetched.contains("Ærøskøbing"), "{fetched}");
    assert!(fetched.contains("key_is_heuristic"), "{fetched}");

    let out = tools::call(
        &scope,
        "execute_sql",
        &json!({"sql": "SELECT Name, City FROM Customers ORDER BY CustomerId", "page_size": 3}),
        None,
    )
    .await
    .expect("execute_sql");
    let text = out.value().to_string();
    assert!(
        text.contains("Zoë Ærøskøbing") && text.contains("São Paulo"),
        "{text}"
    );

    let err = execute_sql(&scope, "SELECT * FROM Nope")
        .await
        .expect_err("missing table");
    let msg = err.to_string();
    assert!(msg.contains("Customers") && msg.contains("Orders"), "{msg}");

    // A row over the config file's `max_row_mib` (1 MiB) fails, saying what to select.
    let err = execute_sql(
        &scope,
        "SELECT REPLICATE(CAST(N'x' AS nvarchar(max)), 600000) AS big",
    )
    .await
    .expect_err("a row over the limit");
    let msg = err.to_string();
    assert!(
        msg.contains("larger than the 1 MiB") && msg.contains("CONVERT(nvarchar(max), col)"),
        "{msg}"
    );

    // The guard (MsSql dialect) stops what SQL Server would otherwise run, before any
    // statement reaches the server.
    for sql in [
        "EXEC sp_tables",
        "EXECUTE('DELETE FROM Customers')",
        "SELECT * INTO Copy FROM Customers",
        "SELECT 1; DELETE FROM Customers",
        "SELECT * FROM OPENROWSET('SQLNCLI', 'Server=x;', 'SELECT 1')",
        "WAITFOR DELAY '00:00:05'",
    ] {
        let err = execute_sql(&scope, sql).await.expect_err(sql);
        assert!(
            matches!(err, tools::ToolError::Refused(_)),
            "{sql}: {err:?}"
        );
    }
    // Every `FOR SYSTEM_TIME` form reads (the guard reads all five), and each is refused on
    // a table the catalog does not know as system-versioned (the peer has no temporal
    // tables), before anything reaches the server; no description offers a history.
    for form in [
        "AS OF '2024-01-01'",
        "ALL",
        "FROM '2024-01-01' TO '2024-02-01'",
        "BETWEEN '2024-01-01' AND '2024-02-01'",
        "CONTAINED IN ('2024-01-01', '2024-02-01')",
    ] {
        let sql = format!("SELECT Name FROM Customers FOR SYSTEM_TIME {form} AS c");
        let err = execute_sql(&scope, &sql).await.expect_err(&sql);
        assert!(
            matches!(&err, tools::ToolError::Refused(_))
                && err
                    .to_string()
                    .contains("`dbo.Customers` is not a system-versioned table"),
            "{sql}: {err:?}"
        );
    }
    let out = tools::call(
        &scope,
        "describe_table",
        &json!({"table": "Customers"}),
        None,
    )
    .await
    .expect("describe");
    assert!(out.value().get("history").is_none(), "{}", out.value());

    let out = tools::call(
        &scope,
        "get_table_sample",
        &json!({"table": "dbo.Products", "limit": 2}),
        None,
    )
    .await
    .expect("sample");
    assert!(
        out.value().to_string().contains("Espresso Machine"),
        "{}",
        out.value()
    );
}

/// Later pages of an ordered `execute_sql` query are skipped by the server (`OFFSET … FETCH`
/// appended), not sent and dropped; the pages are exactly the ones reading and dropping gives,
/// which a comment in the query still selects (the peer's log shows what arrived).
#[tokio::test]
async fn later_pages_of_an_ordered_query_are_skipped_by_the_server() {
    use mssql_mcp::tools;
    use serde_json::json;
    let _s = serial().await;
    let peer = Peer::start();
    let (_state, scope) = tools_scope(&peer, "").await;
    let page_through = |sql: &'static str| {
        let scope = scope.clone();
        async move {
            let mut ids = Vec::new();
            let mut args = json!({"sql": sql, "page_size": 400});
            for _ in 0..20 {
                let out = tools::call(&scope, "execute_sql", &args, None)
                    .await
                    .expect("execute_sql");
                let v = out.value();
                for row in v["rows"].as_array().expect("rows") {
                    ids.push(row["event_id"].as_i64().expect("event_id"));
                }
                match v["next_cursor"].as_str() {
                    Some(c) => args = json!({"sql": sql, "cursor": c}),
                    None => return ids,
                }
            }
            panic!("{sql}: more than 20 pages");
        }
    };
    let log = peer.dir.path().join("server.log");
    let expected: Vec<i64> = (1..=EVENTS as i64).rev().collect();

    let ids = page_through("SELECT event_id FROM Events WHERE event_id > 0 AND event_id < 1000000 ORDER BY event_id DESC;").await;
    assert_eq!(ids, expected);
    // The peer logs a batch of more than 120 characters in full on a line of its own (the
    // queries here are that long), a moment after it answers: wait for the batches that carry
    // `what` (their "query in full" lines) to number `n`. A page that leaves rows unread is
    // cancelled, and the peer may log an attention as its connection's last query again; every
    // page's batch differs (its OFFSET, or its SET ROWCOUNT), so each text counts once.
    let batches = |what: &str, n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let sent = std::fs::read_to_string(&log).expect("peer log");
            let mut found: Vec<String> = Vec::new();
            for text in sent
                .lines()
                .filter_map(|l| l.split_once("query in full: ").map(|(_, t)| t))
                .filter(|t| t.contains(what))
            {
                if !found.iter().any(|f| f == text) {
                    found.push(text.to_string());
                }
            }
            if found.len() >= n || std::time::Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let pages = EVENTS / 400 + 1;
    let sent = batches("ORDER BY event_id DESC\\n", pages);
    assert_eq!(sent.len(), pages, "{sent:#?}");
    for offset in (400..EVENTS).step_by(400) {
        let skip = format!("DESC\\nOFFSET {offset} ROWS FETCH NEXT 401 ROWS ONLY\\n");
        assert!(
            sent.iter().any(|l| l.contains(&skip)),
            "page at {offset} not skipped by the server: {sent:#?}"
        );
    }

    // With a comment, or a query hint (which `OFFSET` cannot follow), the same pages by
    // reading and dropping rows; the text is sent as written.
    for (sql, tail) in [
        (
            "SELECT event_id FROM Events WHERE event_id > 0 AND event_id < 1000000 ORDER BY event_id DESC -- all",
            "-- all",
        ),
        (
            "SELECT event_id FROM Events WHERE event_id > 0 AND event_id < 1000000 ORDER BY event_id DESC OPTION (RECOMPILE, MAXDOP 1)",
            "OPTION (RECOMPILE, MAXDOP 1)",
        ),
    ] {
        let ids = page_through(sql).await;
        assert_eq!(ids, expected, "{sql}");
        let sent = batches(tail, pages);
        assert_eq!(sent.len(), pages, "{sent:#?}");
        assert!(sent.iter().all(|l| !l.contains("OFFSET")), "{sent:#?}");
    }
}

/// `execute_sql` lifts literals (`db::lift`) so that queries of one shape share one guard
/// verdict; SQL Server still runs each text as sent. Each query here returns, through the tool,
/// exactly the rows the backend returns for the same text, whether its shape was seen before
/// or not; and the verdicts remembered are one per shape.
#[tokio::test]
async fn queries_of_one_shape_share_a_verdict_and_return_their_own_rows() {
    use mssql_mcp::tools;
    let _s = serial().await;
    let peer = Peer::start();
    let mut config = tools_config(&peer);
    config.scopes[0].deny_columns = vec!["dbo.Customers.Notes".into()];
    let state = mssql_mcp::app::build_state(config, true)
        .await
        .expect("state");
    let scope = state.scopes()[0].clone();
    let shapes = [
        [
            "SELECT CustomerId, Name, Email, City FROM Customers WHERE CustomerId = 3",
            "SELECT CustomerId, Name, Email, City FROM Customers WHERE CustomerId = 4",
            "SELECT CustomerId, Name, Email, City FROM Customers WHERE CustomerId = 99999",
        ],
        [
            "SELECT CustomerId, Name FROM Customers WHERE Name = N'Zoë Ærøskøbing' AND CustomerId > 0",
            "SELECT CustomerId, Name FROM Customers WHERE Name = N'Café \"Olé\", Ltd' AND CustomerId > 1",
            "SELECT CustomerId, Name FROM Customers WHERE Name = N'Customer 12' AND CustomerId > 11",
        ],
        [
            "SELECT TOP 5 OrderId, CustomerId FROM Orders WHERE OrderId > 100 ORDER BY OrderId",
            "SELECT TOP 5 OrderId, CustomerId FROM Orders WHERE OrderId > 7 ORDER BY OrderId",
            "SELECT TOP 5 OrderId, CustomerId FROM Orders WHERE OrderId > 118 ORDER BY OrderId",
        ],
    ];
    let mut found = 0;
    for shape in shapes {
        let template = lift(shape[0], SqlDialect::MsSql).template.into_owned();
        for sql in shape {
            assert_eq!(lift(sql, SqlDialect::MsSql).template, template, "{sql}");
            let out = execute_sql(&scope, sql).await.expect(sql);
            let want = scope.db.query(sql, page(0, 500)).await.expect(sql);
            let want: Vec<serde_json::Value> = want
                .rows
                .iter()
                .map(|r| serde_json::to_value(r).expect("json"))
                .collect();
            let got: Vec<serde_json::Value> = out.value()["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| {
                    serde_json::Value::Array(
                        r.as_object().expect("row").values().cloned().collect(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{sql}");
            found += got.len();
        }
    }
    assert_eq!(found, (1 + 1) + (1 + 1 + 1) + (5 + 5 + 2), "rows found");
    scope.accepted.run_pending_tasks();
    assert_eq!(scope.accepted.entry_count(), 3, "one verdict per shape");
    // A shape's remembered verdict is only for that shape: the hidden column is refused
    // whatever the literal, naming the query as sent.
    for sql in [
        "SELECT Notes FROM Customers WHERE CustomerId = 3",
        "SELECT Notes FROM Customers WHERE CustomerId = 4",
    ] {
        let err = execute_sql(&scope, sql).await.expect_err(sql);
        assert!(
            matches!(err, tools::ToolError::Refused(_)) && err.to_string().contains("Notes"),
            "{sql}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_database_that_is_down_at_start_does_not_stop_the_server() {
    let _s = serial().await;
    let mut peer = Peer::start();
    peer.kill();
    let state = mssql_mcp::app::build_state(tools_config(&peer), true)
        .await
        .expect("the server starts without its database");
    let scope = state.scopes()[0].clone();
    let err = scope.db.catalog().await.expect_err("down");
    assert!(err.is_transient(), "{err:?}");
    peer.spawn();
    let cat = scope
        .db
        .catalog()
        .await
        .expect("catalog once the database is up");
    assert_eq!(cat.tables.len(), 5);
}

#[tokio::test]
async fn a_wrong_password_stops_the_server_at_start() {
    let _s = serial().await;
    let peer = Peer::start();
    std::fs::write(peer.password_file(), "not-the-password").expect("write");
    let err = mssql_mcp::app::build_state(tools_config(&peer), true)
        .await
        .err()
        .expect("a refused login is fatal at start");
    let text = err.to_string();
    assert!(
        text.contains("login failed") && text.contains("database[0].user"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
}

/// A server that stops answering without closing anything (a host gone, a firewall dropping
/// packets; here the peer stopped with SIGSTOP, so the kernel keeps its connections open):
/// the first call fails after one idle check, not one check per idle connection, the idle
/// connections are given up, and the pool recovers when the server answers again.
#[tokio::test]
async fn a_server_that_stops_answering_fails_a_call_after_one_idle_check() {
    let _s = serial().await;
    let peer = Peer::start();
    let cfg = MssqlConfig {
        connect_timeout_secs: Some(2),
        ..peer.config()
    };
    let b = Arc::new(peer.backend_with(&cfg, 4, Duration::from_secs(10)));
    let products = table(&b, "Products").await;
    let cols = names(&products);
    // Four connections in the pool, all used once.
    let warm: Vec<_> = (0..4)
        .map(|_| {
            let (b, products, cols) = (b.clone(), products.clone(), cols.clone());
            tokio::spawn(async move { b.sample(&products, &cols, page(0, 5)).await })
        })
        .collect();
    for w in warm {
        w.await.expect("task").expect("sample");
    }
    assert!(b.pool_stats().connections >= 2, "{:?}", b.pool_stats());
    let signal = |sig: &str| peer.signal(sig);
    signal("-STOP");
    // Past the idle time after which a connection is checked before use.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = Instant::now();
    let err = b
        .sample(&products, &cols, page(0, 5))
        .await
        .expect_err("the server does not answer");
    let took = started.elapsed();
    signal("-CONT");
    assert!(matches!(err, DbError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("did not answer"), "{err}");
    // One check (at most the 2 s connect timeout), not one per idle connection.
    assert!(took < Duration::from_millis(3_500), "took {took:?}");
    // Answering again: the next call succeeds, on a fresh connection.
    let rs = b
        .sample(&products, &cols, page(0, 5))
        .await
        .expect("the first call after the server answers again");
    assert_eq!(ints(&rs, "Id"), [1, 2, 3, 4, 5]);
}

/// A catalog load that runs out of time says so, not that the model should narrow a query it
/// never wrote. The peer is stopped (SIGSTOP) right after a query, so the load gets a fresh
/// connection without an idle check and then waits for the catalog's answer.
#[tokio::test]
async fn a_catalog_load_that_runs_out_of_time_says_it_was_the_catalog() {
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 1, Duration::from_secs(1));
    b.query("SELECT 1 AS one", page(0, 1))
        .await
        .expect("warm the pool");
    let signal = |sig: &str| peer.signal(sig);
    signal("-STOP");
    let result = b.catalog().await;
    signal("-CONT");
    let err = result.expect_err("the server does not answer");
    let text = err.to_string();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        text.contains(&format!(
            "reading the catalog of {} took longer than 2 s",
            peer.addr()
        )),
        "{text}"
    );
    assert!(!text.contains("narrow it"), "{text}");
}

/// A server that accepts TCP connections and then says nothing (a hung host behind a load
/// balancer): every caller fails within about one connect timeout, together.
#[tokio::test]
async fn a_server_that_never_answers_costs_one_connect_timeout_not_one_per_caller() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = Arc::new(MssqlBackend::new(settings_for_port(dir.path(), port, 1)));
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..6 {
        let b = b.clone();
        calls.push(tokio::spawn(async move {
            if i % 2 == 0 {
                b.catalog().await.map(|_| ())
            } else {
                b.ping().await
            }
        }));
    }
    for c in calls {
        let err = c.await.expect("task").expect_err("nothing answers");
        assert!(err.is_transient(), "{err:?}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
}

/// Settings for a server at `127.0.0.1:port` that is not the peer (a silent listener), with
/// a connect timeout of `connect_secs`.
fn settings_for_port(dir: &Path, port: u16, connect_secs: u64) -> MssqlSettings {
    let cfg = config_for_port(dir, port, connect_secs);
    MssqlSettings::from_config(&cfg, "database[0]", 4, Duration::from_secs(5)).expect("settings")
}

/// The `[[database]]` settings of [`settings_for_port`].
fn config_for_port(dir: &Path, port: u16, connect_secs: u64) -> MssqlConfig {
    std::fs::write(dir.join("pw"), "x").expect("write");
    MssqlConfig {
        host: Some("127.0.0.1".into()),
        port: Some(port),
        database: Some("db".into()),
        user: Some("u".into()),
        password: Some(SecretSource {
            file: Some(dir.join("pw")),
            env: None,
        }),
        trust_server_certificate: Some(true),
        connect_timeout_secs: Some(connect_secs),
        ..MssqlConfig::default()
    }
}

/// A server that takes the TCP connection and then says nothing (hung, overloaded, or not a
/// SQL Server) is a database that is down, not a TLS misconfiguration: the start goes on, and
/// the error says the login stalled. tiberius' own handshake timeout says "prelogin, TLS
/// negotiation and login", which was once read as a TLS failure and stopped the start.
#[tokio::test]
async fn a_server_that_accepts_but_never_logs_in_does_not_stop_the_start() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts every connection and holds it open without a byte.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let b = MssqlBackend::open(settings_for_port(dir.path(), port, 1))
        .await
        .expect("a stalled login is no configuration error");
    let err = b.catalog().await.expect_err("nothing logs in");
    let text = err.to_string();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        text.contains(&format!(
            "127.0.0.1:{port} accepted the connection but did not complete the login within 1 s"
        )),
        "{text}"
    );
    assert!(!text.contains("TLS"), "{text}");
    holder.abort();
}

/// A pool timeout with no connection at all says the connection attempts took too long, not
/// what an earlier attempt said: here the port first refuses (that failure is stored), then a
/// silent listener takes it over, and the next call must not blame a refusal.
#[tokio::test]
async fn a_connect_that_times_out_is_not_blamed_on_an_earlier_failure() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let b = MssqlBackend::new(settings_for_port(dir.path(), port, 1));
    let err = b.ping().await.expect_err("nothing listens yet");
    assert!(err.to_string().contains("cannot reach"), "{err}");
    let silent = TcpListener::bind(("127.0.0.1", port)).expect("bind the same port");
    for attempt in 0..3 {
        let err = b.ping().await.expect_err("nothing answers");
        let text = err.to_string();
        assert!(err.is_transient(), "{err:?}");
        assert!(
            !text.contains("cannot reach") && !text.to_lowercase().contains("refused"),
            "attempt {attempt}: {text}"
        );
        assert!(text.contains("within 1 s"), "attempt {attempt}: {text}");
    }
    drop(silent);
}

/// Not a test: compares point lookups through the backend (pool, validation, decoding) with a
/// bare tiberius client sending the same statement on one connection. Run with
/// `cargo test --release --test mssql -- --ignored --nocapture lookup_overhead`.
#[tokio::test]
#[ignore = "measurement; run on demand"]
async fn lookup_overhead_against_a_bare_tiberius_client() {
    use tokio_util::compat::TokioAsyncWriteCompatExt;
    let _s = serial().await;
    let peer = Peer::start();
    let b = peer.backend_with(&peer.config(), 4, Duration::from_secs(10));
    let customers = table(&b, "Customers").await;
    let cols = names(&customers);
    const N: i64 = 1_000;

    let mut config = tiberius::Config::new();
    config.host("127.0.0.1");
    config.port(peer.port);
    config.database("pysqlbridge");
    config.authentication(tiberius::AuthMethod::sql_server(LOGIN, PASSWORD));
    config.trust_cert();
    let tcp = tokio::net::TcpStream::connect(peer.addr())
        .await
        .expect("tcp");
    let mut client = tiberius::Client::connect(config, tcp.compat_write())
        .await
        .expect("client");
    let sql = format!(
        "SELECT TOP (2) {} FROM [dbo].[Customers] WHERE [CustomerId] = @P1 ORDER BY [CustomerId]",
        cols.iter()
            .map(|c| format!("[{c}]"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bare_round = async |client: &mut tiberius::Client<_>| {
        let started = Instant::now();
        for i in 0..N {
            let mut q = tiberius::Query::new(sql.as_str());
            q.bind(i % 40 + 1);
            let rows = q
                .query(client)
                .await
                .expect("query")
                .into_first_result()
                .await
                .expect("rows");
            assert_eq!(rows.len(), 1);
        }
        started.elapsed()
    };
    let backend_round = async || {
        let started = Instant::now();
        for i in 0..N {
            let rs = b
                .lookup(
                    &customers,
                    &cols,
                    &customers.primary_key,
                    &[(i % 40 + 1).to_string()],
                    page(0, 1),
                )
                .await
                .expect("lookup");
            assert_eq!(rs.rows.len(), 1);
        }
        started.elapsed()
    };
    // Alternate, so neither side gets the warm-up.
    let mut bare = Duration::ZERO;
    let mut backend = Duration::ZERO;
    for _ in 0..3 {
        backend += backend_round().await;
        bare += bare_round(&mut client).await;
    }
    let n = 3 * N;
    println!(
        "{n} sequential lookups: bare tiberius {:.0}/s, backend {:.0}/s ({:.0}%)",
        n as f64 / bare.as_secs_f64(),
        n as f64 / backend.as_secs_f64(),
        100.0 * bare.as_secs_f64() / backend.as_secs_f64()
    );
}

/// `[[database]] isolation` is the level every read runs at: each new connection states it, so
/// the catalog, ad-hoc queries and the server's own statements (through `sp_executesql`) all
/// read at it. The peer keeps SQL Server's rule for snapshot isolation
/// (`tests/common/isolation_peer.py`): it logs the level of each read, and fails a read at
/// `SNAPSHOT` with error 3952 where the database does not allow it.
#[tokio::test]
async fn every_read_runs_at_the_configured_isolation_level() {
    use mssql_mcp::tools;
    use serde_json::json;
    let _s = serial().await;
    let reads = [
        (
            "execute_sql",
            json!({"sql": "SELECT COUNT(*) AS n FROM Orders"}),
        ),
        ("get_table_sample", json!({"table": "Orders", "limit": 2})),
        ("search", json!({"query": "Espresso"})),
    ];
    for (keys, snapshot_allowed, level) in [
        ("", false, "READ COMMITTED"),
        (
            "isolation = \"read_uncommitted\"",
            false,
            "READ UNCOMMITTED",
        ),
        ("isolation = \"snapshot\"", true, "SNAPSHOT"),
    ] {
        let peer = Peer::start_isolation(snapshot_allowed);
        let (_state, scope) = tools_scope(&peer, keys).await;
        for (tool, args) in &reads {
            tools::call(&scope, tool, args, None)
                .await
                .unwrap_or_else(|e| panic!("{keys}: {tool}: {e}"));
        }
        let log = peer.isolation_log();
        // The catalog's reads, then each tool's (sp_executesql's included).
        assert!(
            log.iter().any(|l| l.contains("INFORMATION_SCHEMA"))
                && log
                    .iter()
                    .any(|l| l.contains("sp_executesql") || l.contains("TOP"))
                && log.iter().any(|l| l.contains("COUNT(*) AS n FROM Orders")),
            "{keys}: {log:#?}"
        );
        assert!(
            log.iter().all(|l| l.starts_with(&format!("{level}\t"))),
            "{keys}: {log:#?}"
        );
    }
}

/// `isolation = "snapshot"` on a database that does not allow it is the operator's to fix:
/// the server refuses to start, and `check-config --connect` fails, each naming both fixes.
/// Where it is allowed, `check-config --connect` says so; at the default level it notes that
/// reads wait for writers.
#[tokio::test]
async fn snapshot_isolation_where_the_database_forbids_it_stops_the_server_with_the_fix() {
    let _s = serial().await;
    let check = check_config_connect;
    let forbidden = Peer::start_isolation(false);
    let err = mssql_mcp::app::build_state(
        tools_config_with(&forbidden, "isolation = \"snapshot\""),
        true,
    )
    .await
    .err()
    .expect("the server does not start")
    .to_string();
    assert!(
        err.contains("ALLOW_SNAPSHOT_ISOLATION ON")
            && err.contains("isolation = \"read_committed\""),
        "{err}"
    );
    let (code, text) = check(&forbidden, "isolation = \"snapshot\"");
    assert_eq!(code, Some(69), "{text}");
    assert!(
        text.contains("database `sales`: FAILED:") && text.contains("ALLOW_SNAPSHOT_ISOLATION ON"),
        "{text}"
    );
    let (code, text) = check(&forbidden, "");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("isolation read_committed; the database has ALLOW_SNAPSHOT_ISOLATION OFF, READ_COMMITTED_SNAPSHOT OFF")
            && text.contains("NOTE: reads take shared locks"),
        "{text}"
    );
    drop(forbidden);
    let allowed = Peer::start_isolation(true);
    let (code, text) = check(&allowed, "isolation = \"snapshot\"");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("isolation snapshot; the database has ALLOW_SNAPSHOT_ISOLATION ON")
            && !text.contains("NOTE: reads take"),
        "{text}"
    );
}
