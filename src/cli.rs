//! The command line: `demo`, `serve`, `check-config`, `hash-password`, `tokens`, `cache`.
//!
//! Every command loads and validates its whole configuration before binding a port; a bad
//! configuration prints one message naming the key and the fix and exits with 64 (`EX_USAGE`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, DatabaseKind, SqliteConfig, ToolProfile};
use crate::stdout::{errln, out, outln};

/// Exit code for a bad configuration or command line (sysexits `EX_USAGE`).
pub const EX_USAGE: u8 = 64;
/// Exit code when a configured service (database, port) is unavailable (`EX_UNAVAILABLE`).
pub const EX_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "mssql-mcp",
    version,
    about = "A SQL Server database as an MCP server for ChatGPT and Claude"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the embedded demo database with no setup (authentication OFF; local use only).
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8008")]
        listen: SocketAddr,
        /// Where the demo database is created (default: $XDG_STATE_HOME/mssql-mcp or ~/.local/state/mssql-mcp).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Serve the databases and scopes of a configuration file.
    Serve {
        /// Path of the TOML configuration (see config.toml.example).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print what would be served where.
    CheckConfig {
        /// Path of the TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Also connect to every database and run a trivial query.
        #[arg(long)]
        connect: bool,
    },
    /// Hash a sign-in password for `[[oauth.users]]` (reads it from the terminal, or one line
    /// from stdin) and print the argon2id hash to paste as `password_hash`.
    HashPassword,
    /// List or revoke OAuth clients and grants of the running server (through its local admin
    /// endpoint; takes effect at once).
    Tokens {
        /// Path of the TOML configuration the server runs with.
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: TokensAction,
    },
    /// Generate the demo database into DIR and exit (`demo` runs this as a child process, so
    /// the memory generation takes is returned to the system before serving starts).
    #[command(hide = true)]
    GenerateDemo {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// List the IP allowlist presets (`chatgpt`, `anthropic`) and their ranges.
    IpPresets,
    /// Show or clear the result caches of the running server (through its local admin
    /// endpoint; clearing takes effect at once).
    Cache {
        /// Path of the TOML configuration the server runs with.
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: CacheAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Entries, hits, misses, hit ratio, oldest entry and estimated memory per scope.
    Stats {
        /// Only this scope (its path, e.g. `/chatgpt`).
        #[arg(long)]
        scope: Option<String>,
    },
    /// Drop every cached result and paging cursor.
    Clear {
        /// Only this scope (its path, e.g. `/chatgpt`).
        #[arg(long)]
        scope: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensAction {
    /// Registered clients and live grants: who approved which client for which scope, when,
    /// last use.
    List,
    /// Revoke grants (and every token issued under them).
    Revoke {
        /// Every grant of this client (the client is forgotten too).
        #[arg(long, conflicts_with_all = ["user", "all"])]
        client: Option<String>,
        /// Every grant this user approved.
        #[arg(long, conflicts_with_all = ["client", "all"])]
        user: Option<String>,
        /// Every grant of every client.
        #[arg(long, conflicts_with_all = ["client", "user"])]
        all: bool,
    },
}

/// Entry point used by `main.rs`: the command, then what [`crate::stdout::finish`] makes of
/// its exit code (a reader of standard output who went away is no failure; a full disk is).
pub fn main() -> ExitCode {
    crate::stdout::finish(run())
}

fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // `serve` logs in the format its config asks for; everything else as `[log]` defaults.
    let serve_config = match &cli.command {
        Command::Serve { config } => match Config::load(config) {
            Ok(c) => Some(c),
            Err(e) => return config_error(&e),
        },
        _ => None,
    };
    init_tracing(
        serve_config
            .as_ref()
            .map(|c| c.log.format)
            .unwrap_or_default(),
    );
    match cli.command {
        Command::CheckConfig { config, connect } if !connect => check_config(&config),
        Command::HashPassword => hash_password(),
        Command::IpPresets => {
            out!("{}", crate::edge::allowlist::describe_presets());
            ExitCode::SUCCESS
        }
        Command::GenerateDemo { data_dir } => match crate::demo::ensure_database(&data_dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("error: {e}\n  fix: pass a writable directory with --data-dir");
                ExitCode::from(EX_USAGE)
            }
        },
        command => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    errln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(EX_UNAVAILABLE);
                }
            };
            runtime.block_on(async move {
                match command {
                    Command::Demo { listen, data_dir } => demo(listen, data_dir).await,
                    Command::Serve { .. } => match serve_config {
                        Some(config) => serve(config).await,
                        None => ExitCode::from(EX_USAGE),
                    },
                    Command::Tokens { config, action } => tokens(&config, action).await,
                    Command::Cache { config, action } => cache(&config, action).await,
                    Command::CheckConfig { config, .. } => check_connect(&config).await,
                    Command::HashPassword | Command::IpPresets | Command::GenerateDemo { .. } => {
                        ExitCode::SUCCESS
                    }
                }
            })
        }
    }
}

/// What is logged when `RUST_LOG` is not set: `info`, except tiberius' line for every error
/// the SQL Server sends (`tiberius::tds::stream::token`, at ERROR). Those are answers to
/// queries, not faults of this server: the tool call that got one reports it to the client,
/// the audit records it, and `mcp::dispatch` logs it at WARN with the scope, the tool and the
/// request id. tiberius' copy had none of that, came at the wrong level, and repeated it.
pub fn default_log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::new("info,tiberius::tds::stream::token=off")
}

/// The filter the binary logs with: `rust_log` (`RUST_LOG`) when it is set and valid, else
/// [`default_log_filter`]; either way with `sspi` (the NTLM of Windows logins) at INFO at most,
/// whatever `RUST_LOG` says of it. At DEBUG and TRACE sspi prints the NTLM messages, and the
/// answer to the server's challenge in them is enough to guess the password offline.
pub fn log_filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    let filter = rust_log
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(default_log_filter);
    // A constant, not outside input.
    filter.add_directive("sspi=info".parse().expect("a valid directive"))
}

/// Logs to stderr: JSON lines (with the request span's fields, so every line of a request
/// carries its request id) when `[log] format` says so or under journald, else human lines
/// (coloured only on a terminal).
fn init_tracing(format: crate::ops::config::LogFormat) {
    use std::io::IsTerminal;
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format.json() {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

fn config_error(e: &ConfigError) -> ExitCode {
    errln!("{e}");
    ExitCode::from(EX_USAGE)
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    // What `serve` loads at start, so a missing file fails here rather than in a restart loop.
    if let Err(e) = crate::edge::tls::check_files(&config.tls) {
        return config_error(&e);
    }
    outln!("{} is valid.", path.display());
    outln!(
        "Listening on {}; public URL {}",
        config.server.listen,
        config.public_url()
    );
    for warning in crate::edge::config::warnings(&config) {
        outln!("WARNING: {warning}");
    }
    if config.server.insecure_no_auth {
        outln!("WARNING: server.insecure_no_auth = true: MCP endpoints need no token.");
    } else if let Err(e) = require_oauth_users(&config) {
        return config_error(&e);
    } else {
        outln!(
            "OAuth: {} user(s) may sign in; root discovery answers for {}; admin endpoint {}",
            config.oauth.users.len(),
            config.default_scope_path().unwrap_or("-"),
            config.admin.listen
        );
    }
    crate::edge::config::describe(&config);
    outln!(
        "Health: /health, /health/ready; metrics: /metrics for {} on the main listener, always on the admin listener {}",
        if config.metrics.allow.is_empty() {
            "nobody".to_string()
        } else {
            config.metrics.allow.join(", ")
        },
        config.admin.listen
    );
    match config.audit.output {
        crate::ops::config::AuditOutput::File => outln!(
            "Audit: {} (rotated at {} bytes, {} kept)",
            config
                .server
                .state_dir
                .join(crate::ops::audit::FILE)
                .display(),
            config.audit.max_bytes,
            config.audit.keep
        ),
        crate::ops::config::AuditOutput::Stderr => {
            outln!("Audit: standard error (the journal under systemd)")
        }
        crate::ops::config::AuditOutput::Off => outln!(
            "WARNING: [audit] output = \"off\": tool calls and OAuth decisions are not recorded"
        ),
    }
    for (i, db) in config.databases.iter().enumerate() {
        match &db.kind {
            DatabaseKind::Sqlite(SqliteConfig { path, immutable }) => {
                let note = if *immutable { " (immutable)" } else { "" };
                outln!("database `{}`: sqlite {}{note}", db.name, path.display())
            }
            DatabaseKind::Mssql(m) => {
                outln!("database `{}`: mssql {}", db.name, m.describe());
                // The secrets may only be readable by the service (systemd credentials), so an
                // unreadable one is a warning here, not an error.
                let sources = [
                    ("password", m.password.as_ref()),
                    ("connection_string", m.connection_string.as_ref()),
                ];
                for (name, src) in sources {
                    if let Some(src) = src
                        && let Err(e) = src.load(&format!("database[{i}].{name}"))
                    {
                        outln!("WARNING: {e}");
                    }
                }
            }
        }
    }
    for s in &config.scopes {
        let profile = match s.profile {
            ToolProfile::Chatgpt => "chatgpt (search, fetch)",
            ToolProfile::Full => {
                "full (search, fetch, list_tables, describe_table, get_table_sample, execute_sql)"
            }
        };
        outln!(
            "scope {}: {}{}/mcp and {}{}/sse → database `{}`, profile {profile}, max_rows {}",
            s.path,
            config.public_url(),
            s.path,
            config.public_url(),
            s.path,
            s.database,
            s.max_rows
        );
    }
    ExitCode::SUCCESS
}

/// What `serve` and `demo` set up for the process before building the server: see
/// [`raise_open_file_limit`] and [`survive_file_size_limit`].
fn process_limits(max_connections: u32) {
    survive_file_size_limit();
    raise_open_file_limit(max_connections);
}

/// Raises this process's open-file limit (the soft one, up to the hard one) to what
/// `limits.max_connections` needs; what it cannot reach lowers the connection cap instead
/// (`edge::connection_cap`), with a warning.
fn raise_open_file_limit(max_connections: u32) {
    #[cfg(unix)]
    if let Err(e) = rlimit::increase_nofile_limit(crate::edge::limits::fds_needed(max_connections))
    {
        tracing::debug!(error = %e, "could not raise the open-file limit");
    }
}

/// A write past the process's file size limit (systemd's `LimitFSIZE=`, `ulimit -f`) raises
/// SIGXFSZ, whose default action kills the process. Listened for (tokio keeps the handler for
/// the life of the process), it does nothing and the write fails with `EFBIG` instead, which
/// the audit writer handles as it does a full disk: it keeps the records and tries again.
fn survive_file_size_limit() {
    #[cfg(unix)]
    if let Err(e) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
    {
        tracing::warn!(error = %e, "cannot listen for SIGXFSZ: a file size limit would end the process");
    }
}

/// SIGHUP's default action kills the process, and `systemctl reload` (the unit's `ExecReload=`)
/// sends it. Listened for first thing in `serve` and `demo` (tokio keeps the handler for the
/// life of the process), it can no longer end the server in any mode or at any moment of the
/// start: `edge::tls::prepare` then reloads the certificate on it in `tls.mode = "files"` and
/// logs that there is nothing to reload in the other modes.
fn survive_hangup() {
    #[cfg(unix)]
    if let Err(e) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tracing::warn!(error = %e, "cannot listen for SIGHUP: `systemctl reload` would end the process");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining open requests");
}

/// Generates a missing demo database in a child process (`generate-demo`): the tens of
/// megabytes generation touches then leave with the child instead of staying in this
/// process's allocator. Anything that goes wrong here is left to the in-process generation
/// that follows, which reports it.
async fn generate_in_child(dir: &std::path::Path) {
    if crate::demo::database_is_current(dir) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let status = tokio::process::Command::new(exe)
        .arg("generate-demo")
        .arg("--data-dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    if let Err(e) = status {
        tracing::debug!(error = %e, "could not generate the demo database in a child process");
    }
}

async fn demo(listen: SocketAddr, data_dir: Option<PathBuf>) -> ExitCode {
    survive_hangup();
    let dir = data_dir.unwrap_or_else(crate::demo::default_data_dir);
    let started = std::time::Instant::now();
    generate_in_child(&dir).await;
    let db_path = match tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || crate::demo::ensure_database(&dir)
    })
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            errln!("error: {e}\n  fix: pass a writable directory with --data-dir");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            errln!(
                "error: cannot listen on {listen}: {e}\n  fix: pass another address with --listen"
            );
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let bound = listener.local_addr().unwrap_or(listen);
    let mut config = crate::demo::config(bound, &db_path, &dir);
    config.server.public_url = Some(format!("http://{bound}"));
    process_limits(config.limits.max_connections);
    let state = match crate::app::build_state(config, true).await {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let base = state.public_url();
    errln!();
    errln!("  !!! DEMO MODE: AUTHENTICATION IS OFF !!!");
    errln!("  Anyone who can reach {bound} can query this database.");
    errln!("  For a real deployment use `mssql-mcp serve --config <file>`.");
    errln!();
    errln!(
        "  demo database: {} (ready in {:.1?})",
        db_path.display(),
        started.elapsed()
    );
    errln!(
        "  ChatGPT scope (search, fetch):  {base}/chatgpt/mcp   (legacy SSE: {base}/chatgpt/sse)"
    );
    errln!(
        "  Claude scope (all tools):       {base}/claude/mcp    (legacy SSE: {base}/claude/sse)"
    );
    errln!(
        "  try: npx @modelcontextprotocol/inspector --cli {base}/claude/mcp --transport http --method tools/list"
    );
    errln!();
    tracing::warn!(listen = %bound, "demo mode: authentication is OFF");
    match crate::app::run(state, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    survive_hangup();
    let no_auth = config.server.insecure_no_auth;
    if !no_auth && let Err(e) = require_oauth_users(&config) {
        return config_error(&e);
    }
    let listener = match TcpListener::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            errln!(
                "error: cannot listen on {}: {e}\n  fix: change server.listen or free the port",
                config.server.listen
            );
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    if no_auth {
        tracing::warn!(
            "server.insecure_no_auth = true: MCP endpoints accept requests without a token"
        );
    }
    for warning in crate::edge::config::warnings(&config) {
        tracing::warn!("{warning}");
    }
    let admin_listener = match TcpListener::bind(config.admin.listen).await {
        Ok(l) => Some(l),
        Err(e) => {
            errln!(
                "error: cannot listen on {} (admin): {e}\n  fix: change admin.listen or free the port",
                config.admin.listen
            );
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    process_limits(config.limits.max_connections);
    let state = match crate::app::build_state(config, no_auth).await {
        Ok(s) => s,
        Err(crate::app::StartError::Config(e)) => return config_error(&e),
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, public_url = %state.public_url(), "listening");
    }
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(admin) = admin_listener {
        if let Ok(addr) = admin.local_addr() {
            tracing::info!(%addr, "admin endpoint listening (loopback only; /metrics, tokens, cache)");
        }
        let app = state.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = admin_stopped.await;
            };
            if let Err(e) = crate::oauth::admin::serve(app, admin, stopped).await {
                tracing::error!(error = %e, "admin endpoint failed");
            }
        });
    }
    let result = crate::app::run(state, listener, shutdown_signal()).await;
    let _ = stop_admin.send(());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A TLS file that cannot be used (see `edge::tls::file_error`).
        Err(crate::app::StartError::Config(e)) => config_error(&e),
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// `check-config --connect`: the checks of `check-config`, then one round trip to every
/// database (exit 69 if one does not answer).
async fn check_connect(path: &std::path::Path) -> ExitCode {
    let code = check_config(path);
    if code != ExitCode::SUCCESS {
        return code;
    }
    let Ok(config) = Config::load(path) else {
        return ExitCode::from(EX_USAGE);
    };
    let mut failed = false;
    for (i, db) in config.databases.iter().enumerate() {
        let timeout = std::time::Duration::from_secs(db.query_timeout_secs);
        let opened: Result<crate::db::DynBackend, String> = match &db.kind {
            DatabaseKind::Sqlite(SqliteConfig { path, immutable }) => {
                crate::db::sqlite::SqliteBackend::open(path, *immutable, 1, timeout)
                    .await
                    .map(|b| std::sync::Arc::new(b) as crate::db::DynBackend)
                    .map_err(|e| e.to_string())
            }
            DatabaseKind::Mssql(m) => {
                match crate::db::mssql::MssqlSettings::from_config(
                    m,
                    &format!("database[{i}]"),
                    1,
                    timeout,
                ) {
                    Ok(settings) => crate::db::mssql::MssqlBackend::open(settings)
                        .await
                        .map(|b| std::sync::Arc::new(b) as crate::db::DynBackend)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let started = std::time::Instant::now();
        let result = match opened {
            Ok(b) => b.ping().await.map(|()| b).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(b) => {
                outln!(
                    "database `{}`: answered in {} ms",
                    db.name,
                    started.elapsed().as_millis()
                );
                // Before the session context probe: outside a tool call, a query says
                // nobody asks.
                if let DatabaseKind::Mssql(m) = &db.kind {
                    isolation_report(b.as_ref(), &db.name, m.isolation()).await;
                }
                // `session_context = true` needs the server's sp_set_session_context (SQL
                // Server 2016+): one query as a tool call makes it, so a server without it
                // fails here rather than on every call.
                if b.reads_for_asker() {
                    let asker = crate::db::Asker {
                        user: Some("check-config".into()),
                        scope: "/check-config".into(),
                        client: Some("check-config".into()),
                    };
                    let probe = b.query("SELECT 1 AS ok", crate::db::Page::rows(0, 1));
                    match crate::db::for_asker(asker, probe).await {
                        Ok(_) => outln!(
                            "database `{}`: session_context: the server took mcp_user, mcp_scope and mcp_client",
                            db.name
                        ),
                        Err(e) => {
                            failed = true;
                            outln!("database `{}`: FAILED: session_context: {e}", db.name);
                        }
                    }
                }
                // What would otherwise only be a warning in the service's log: description
                // names that match nothing (a typo), and columns the database classifies as
                // sensitive that a scope shows.
                let descriptions = crate::tools::descriptions::Descriptions::new(
                    &db.table_descriptions,
                    &db.column_descriptions,
                );
                match b.catalog().await {
                    Ok(c) => {
                        let unmatched = descriptions.unmatched(&c);
                        if !unmatched.is_empty() {
                            outln!(
                                "database `{}`: WARNING: table_descriptions/column_descriptions name no table or column it has: {}",
                                db.name,
                                unmatched.join(", ")
                            );
                        }
                        for scope in config.scopes.iter().filter(|s| s.database == db.name) {
                            let scoped = crate::tools::scoped_catalog(&scope.access_rules(), &c);
                            // Each: what is named, the words before and after its count,
                            // and what to do.
                            let notes = [
                                (
                                    crate::tools::classified_columns(&scoped),
                                    "shows ",
                                    "column(s) the database classifies as sensitive",
                                    " (hide any it should not see with deny_columns)",
                                ),
                                (
                                    crate::tools::synonyms_not_followed(&scope.access_rules(), &c),
                                    "",
                                    "synonym(s) cannot be queried by their names under its access rules",
                                    "",
                                ),
                                (
                                    crate::tools::encrypted_columns(&scoped),
                                    "shows ",
                                    "Always Encrypted column(s)",
                                    " (this server holds no key: their values are ciphertext in results, and they cannot be searched or compared; hide them with deny_columns to keep the ciphertext out)",
                                ),
                                (
                                    crate::tools::masked_columns(&scoped),
                                    "shows ",
                                    "column(s) the database masks",
                                    " (a query can still test their values in WHERE; hide any that must not be inferred with deny_columns)",
                                ),
                            ];
                            for (items, before, what, advice) in notes {
                                if !items.is_empty() {
                                    outln!(
                                        "scope {}: NOTE: {before}{} {what}: {}{advice}",
                                        scope.path,
                                        items.len(),
                                        items.join("; ")
                                    );
                                }
                            }
                        }
                    }
                    Err(e) => outln!(
                        "database `{}`: WARNING: the catalog could not be read (descriptions and sensitivity labels are not checked): {e}",
                        db.name
                    ),
                }
            }
            Err(e) => {
                failed = true;
                outln!("database `{}`: FAILED: {e}", db.name);
            }
        }
    }
    if failed {
        ExitCode::from(EX_UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    }
}

/// What SQL Server does for readers beside writers, for `check-config --connect`: the level
/// queries read at, the database's row-versioning settings, and a note where reads will wait
/// for writers' locks. (A database that does not allow the `snapshot` asked for has already
/// failed: its catalog cannot be read.)
async fn isolation_report(
    b: &dyn crate::db::Backend,
    name: &str,
    isolation: crate::config::MssqlIsolation,
) {
    const SETTINGS: &str = "SELECT snapshot_isolation_state_desc, is_read_committed_snapshot_on \
         FROM sys.databases WHERE database_id = DB_ID()";
    let rs = match b.query(SETTINGS, crate::db::Page::rows(0, 1)).await {
        Ok(rs) => rs,
        Err(e) => {
            outln!("database `{name}`: cannot read its row-versioning settings: {e}");
            return;
        }
    };
    let Some(row) = rs.rows.first() else {
        outln!(
            "database `{name}`: cannot read its row-versioning settings: sys.databases shows the login no row for it"
        );
        return;
    };
    let snapshot = row
        .first()
        .map_or_else(|| "?".to_string(), crate::db::Value::display);
    let rcsi = matches!(
        row.get(1),
        Some(crate::db::Value::Bool(true) | crate::db::Value::Int(1))
    );
    outln!(
        "database `{name}`: isolation {}; the database has ALLOW_SNAPSHOT_ISOLATION {snapshot}, READ_COMMITTED_SNAPSHOT {}",
        isolation.as_str(),
        if rcsi { "ON" } else { "OFF" }
    );
    if isolation == crate::config::MssqlIsolation::ReadCommitted && !rcsi {
        outln!(
            "database `{name}`: NOTE: reads take shared locks and wait for writers' locks (up to the lock timeout); isolation = \"snapshot\" (after ALTER DATABASE … SET ALLOW_SNAPSHOT_ISOLATION ON) reads row versions instead, without waiting"
        );
    }
}

async fn cache(path: &std::path::Path, action: CacheAction) -> ExitCode {
    use crate::oauth::admin::{self, CacheTarget};
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let token = match admin::read_token(&config.server.state_dir) {
        Ok(t) => t,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let addr = config.admin.listen;
    let result = match action {
        CacheAction::Stats { scope } => {
            let path = match &scope {
                Some(s) => format!(
                    "/admin/cache?scope={}",
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                ),
                None => "/admin/cache".to_string(),
            };
            admin::call_with(addr, &token, &path, None::<&()>)
                .await
                .map(|v| out!("{}", admin::format_cache_stats(&v)))
        }
        CacheAction::Clear { scope } => admin::call_with(
            addr,
            &token,
            "/admin/cache/clear",
            Some(&CacheTarget { scope }),
        )
        .await
        .map(|v| {
            for c in v["cleared"].as_array().into_iter().flatten() {
                outln!(
                    "{}: cleared {} entries",
                    c["scope"].as_str().unwrap_or("?"),
                    c["entries"]
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

/// `serve` with authentication needs someone who can sign in.
fn require_oauth_users(config: &Config) -> Result<(), ConfigError> {
    if config.oauth.users.is_empty() {
        return Err(ConfigError::new(
            "oauth.users",
            "no [[oauth.users]] is configured, so nobody could sign in and approve a client",
            "add [[oauth.users]] with `username`, `password_hash` (from `mssql-mcp hash-password`) and `scopes`, or set server.insecure_no_auth = true on a trusted network",
        ));
    }
    Ok(())
}

/// Reads a password without echo from the terminal (twice), or one line from stdin.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let stty = |arg: &str| {
        let tty = std::fs::File::open("/dev/tty").ok()?;
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(tty)
            .status()
            .ok()
    };
    let ask = |prompt: &str| -> Result<String, String> {
        crate::stdout::write_err(format_args!("{prompt}"));
        let _ = std::io::stderr().flush();
        let hidden = stty("-echo").is_some_and(|s| s.success());
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        if hidden {
            stty("echo");
            errln!();
        }
        read.map_err(|e| format!("cannot read the terminal: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let first = ask("Password: ")?;
    let second = ask("Again: ")?;
    if first != second {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

fn hash_password() -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if password.chars().count() < 12 {
        errln!(
            "error: the password is shorter than 12 characters\n  fix: choose a longer one (a passphrase of several words is easiest)"
        );
        return ExitCode::from(EX_USAGE);
    }
    match crate::oauth::password::hash(&password) {
        Ok(h) => {
            outln!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: cannot hash: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

async fn tokens(path: &std::path::Path, action: TokensAction) -> ExitCode {
    use crate::oauth::admin::{self, Target};
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let token = match admin::read_token(&config.server.state_dir) {
        Ok(t) => t,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let addr = config.admin.listen;
    let result = match action {
        TokensAction::List => {
            match (
                admin::call(addr, &token, "/admin/clients", None).await,
                admin::call(addr, &token, "/admin/grants", None).await,
            ) {
                (Ok(c), Ok(g)) => {
                    out!("{}", admin::format_listing(&c, &g));
                    Ok(())
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        TokensAction::Revoke { client, user, all } => {
            let target = match (client, user, all) {
                (Some(c), None, false) => Target::Client(c),
                (None, Some(u), false) => Target::User(u),
                (None, None, true) => Target::All,
                _ => {
                    errln!(
                        "error: say what to revoke\n  fix: pass exactly one of --client ID, --user NAME or --all"
                    );
                    return ExitCode::from(EX_USAGE);
                }
            };
            admin::call(addr, &token, "/admin/revoke", Some(&target))
                .await
                .map(|v| outln!("revoked {} grant(s)", v["revoked_grants"]))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}
