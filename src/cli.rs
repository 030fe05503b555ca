//! The command line: `demo`, `serve`, `check-config`.
//!
//! Every command loads and validates its whole configuration before binding a port; a bad
//! configuration prints one message naming the key and the fix and exits with 64 (`EX_USAGE`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, DatabaseKind, ToolProfile};

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
    },
    /// List the IP allowlist presets (`chatgpt`, `anthropic`) and their ranges.
    IpPresets,
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
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
    init_tracing();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::IpPresets => {
            print!("{}", crate::edge::allowlist::describe_presets());
            ExitCode::SUCCESS
        }
        command => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(EX_UNAVAILABLE);
                }
            };
            runtime.block_on(async move {
                match command {
                    Command::Demo { listen, data_dir } => demo(listen, data_dir).await,
                    Command::Serve { config } => serve(&config).await,
                    Command::CheckConfig { .. } | Command::IpPresets => ExitCode::SUCCESS,
                }
            })
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EX_USAGE)
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    println!("{} is valid.", path.display());
    println!(
        "Listening on {}; public URL {}",
        config.server.listen,
        config.public_url()
    );
    if config.server.insecure_no_auth {
        println!("WARNING: server.insecure_no_auth = true: MCP endpoints need no token.");
    }
    crate::edge::config::describe(&config);
    for db in &config.databases {
        match &db.kind {
            DatabaseKind::Sqlite { path } => {
                println!("database `{}`: sqlite {}", db.name, path.display())
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
        println!(
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

async fn demo(listen: SocketAddr, data_dir: Option<PathBuf>) -> ExitCode {
    let dir = data_dir.unwrap_or_else(crate::demo::default_data_dir);
    let started = std::time::Instant::now();
    let db_path = match tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || crate::demo::ensure_database(&dir)
    })
    .await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            eprintln!("error: {e}\n  fix: pass a writable directory with --data-dir");
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {listen}: {e}\n  fix: pass another address with --listen"
            );
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let bound = listener.local_addr().unwrap_or(listen);
    let mut config = crate::demo::config(bound, &db_path, &dir);
    config.server.public_url = Some(format!("http://{bound}"));
    let state = match crate::app::build_state(config, true).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let base = state.public_url();
    eprintln!();
    eprintln!("  !!! DEMO MODE: AUTHENTICATION IS OFF !!!");
    eprintln!("  Anyone who can reach {bound} can query this database.");
    eprintln!("  For a real deployment use `mssql-mcp serve --config <file>`.");
    eprintln!();
    eprintln!(
        "  demo database: {} (ready in {:.1?})",
        db_path.display(),
        started.elapsed()
    );
    eprintln!(
        "  ChatGPT scope (search, fetch):  {base}/chatgpt/mcp   (legacy SSE: {base}/chatgpt/sse)"
    );
    eprintln!(
        "  Claude scope (all tools):       {base}/claude/mcp    (legacy SSE: {base}/claude/sse)"
    );
    eprintln!(
        "  try: npx @modelcontextprotocol/inspector --cli {base}/claude/mcp --transport http --method tools/list"
    );
    eprintln!();
    tracing::warn!(listen = %bound, "demo mode: authentication is OFF");
    match crate::app::run(state, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

async fn serve(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    if !config.server.insecure_no_auth {
        return config_error(&ConfigError::new(
            "server.insecure_no_auth",
            "OAuth sign-in is not available in this build, and `serve` never runs without authentication",
            "set `insecure_no_auth = true` under [server] only on a trusted network, or use `demo` to try the server",
        ));
    }
    let listener = match TcpListener::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}: {e}\n  fix: change server.listen or free the port",
                config.server.listen
            );
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    tracing::warn!("server.insecure_no_auth = true: MCP endpoints accept requests without a token");
    let state = match crate::app::build_state(config, true).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, public_url = %state.public_url(), "listening");
    }
    match crate::app::run(state, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}
