//! Putting it together: open the databases, build the scopes and the router, serve on an
//! already-bound listener until the shutdown future resolves, then drain.
//!
//! `run` takes a bound listener and a shutdown future (as in mini-redis) so tests start the
//! real server on `127.0.0.1:0` and stop it deterministically.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, DatabaseKind};
use crate::db::DynBackend;
use crate::db::mssql::{MssqlBackend, MssqlSettings};
use crate::db::sqlite::SqliteBackend;
use crate::state::{AppState, Scope};

/// Startup failures after the config was validated (a database that cannot be opened, …).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database `{name}`: {source}")]
    Database {
        name: String,
        source: crate::db::DbError,
    },
    /// A setting that can only be checked at start (a secret file or variable).
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    OAuth(#[from] crate::oauth::store::StoreError),
}

/// Opens every configured database and builds the scopes.
pub async fn build_state(config: Config, no_auth: bool) -> Result<AppState, StartError> {
    let mut backends: Vec<(String, DynBackend)> = Vec::new();
    for (i, db) in config.databases.iter().enumerate() {
        let timeout = Duration::from_secs(db.query_timeout_secs);
        let backend: DynBackend = match &db.kind {
            DatabaseKind::Sqlite { path } => Arc::new(
                SqliteBackend::open(path, db.pool_size, timeout)
                    .await
                    .map_err(|source| StartError::Database {
                        name: db.name.clone(),
                        source,
                    })?,
            ),
            DatabaseKind::Mssql(m) => {
                let settings = MssqlSettings::from_config(
                    m,
                    &format!("database[{i}]"),
                    db.pool_size,
                    timeout,
                )?;
                let backend =
                    MssqlBackend::open(settings)
                        .await
                        .map_err(|source| StartError::Database {
                            name: db.name.clone(),
                            source,
                        })?;
                tracing::info!(database = %db.name, target = %backend.target(), "SQL Server database configured");
                Arc::new(backend)
            }
        };
        backends.push((db.name.clone(), backend));
    }
    let public_url = config.public_url();
    let scopes = config
        .scopes
        .iter()
        .filter_map(|s| {
            let db = backends.iter().find(|(n, _)| *n == s.database)?.1.clone();
            Some(Arc::new(Scope::new(s.clone(), db, &public_url)))
        })
        .collect();
    let oauth = if no_auth {
        None
    } else {
        let c = config.clone();
        let opened = tokio::task::spawn_blocking(move || crate::oauth::OAuth::open(&c))
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
        Some(Arc::new(opened))
    };
    let state = AppState::new(config, scopes, no_auth);
    if let Some(o) = oauth {
        state.set_oauth(o);
    }
    Ok(state)
}

/// The whole HTTP application.
pub fn router(state: &AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .merge(crate::mcp::routes(state))
        .merge(crate::oauth::routes(state))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config().server.max_body_bytes))
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not found"})),
    )
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains open requests.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let app = router(&state);
    let sessions_state = state.clone();
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let n = sessions_state.sessions().reap();
            if n > 0 {
                tracing::debug!(ended = n, "idle MCP sessions ended");
            }
        }
    });
    let _oauth_cleanup = crate::oauth::spawn_cleanup(&state);
    let closing = state.clone();
    let grace = Duration::from_secs(state.config().server.shutdown_grace_secs);
    let stopping = tokio_util::sync::CancellationToken::new();
    let stopping_signal = stopping.clone();
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        stopping_signal.cancel();
        // End sessions so their SSE streams close and the drain can finish.
        closing.sessions().close_all();
    });
    let result = tokio::select! {
        r = serve => r.map_err(StartError::Io),
        () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
            Ok(())
        }
    };
    reaper.abort();
    result
}
