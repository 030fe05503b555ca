//! Putting it together: open the databases, build the scopes and the router, serve on an
//! already-bound listener until the shutdown future resolves, then drain.
//!
//! `run` takes a bound listener and a shutdown future (as in mini-redis) so tests start the
//! real server on `127.0.0.1:0` and stop it deterministically.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::config::{Config, ConfigError, DatabaseKind, SqliteConfig};
use crate::db::DynBackend;
use crate::db::mssql::{MssqlBackend, MssqlSettings};
use crate::db::sqlite::SqliteBackend;
use crate::edge::{self, config::LimitsConfig, limits::EdgeAcceptor, tls::Prepared};
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
    #[error("TLS: {0}")]
    Tls(#[from] crate::edge::tls::TlsError),
    #[error(
        "server.state_dir `{path}`: cannot create it: {source}\n  fix: create it for the user the \
         service runs as (mode 0700; the systemd unit's StateDirectory= does this), or point \
         server.state_dir at a writable directory"
    )]
    StateDir {
        path: String,
        source: std::io::Error,
    },
}

/// Opens every configured database and builds the scopes.
pub async fn build_state(config: Config, no_auth: bool) -> Result<AppState, StartError> {
    // The audit file lives there even when nothing else does (no OAuth store without
    // authentication): made now, so a directory that cannot be made stops the start instead
    // of every audit record failing later.
    if config.audit.output == crate::ops::config::AuditOutput::File {
        let dir = config.server.state_dir.clone();
        tokio::task::spawn_blocking(move || {
            crate::ops::private_dir(&dir).map_err(|source| StartError::StateDir {
                path: dir.display().to_string(),
                source,
            })
        })
        .await
        .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
    }
    let ops = Arc::new(crate::ops::Ops::new(&config));
    let mut backends: Vec<(String, DynBackend)> = Vec::new();
    for (i, db) in config.databases.iter().enumerate() {
        let timeout = Duration::from_secs(db.query_timeout_secs);
        let backend: DynBackend = match &db.kind {
            DatabaseKind::Sqlite(SqliteConfig { path, immutable }) => Arc::new(
                SqliteBackend::open(path, *immutable, db.pool_size, timeout)
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
        let backend = crate::ops::metered::Metered::wrap(backend, ops.metrics.db(&db.name));
        backends.push((db.name.clone(), backend));
    }
    let public_url = config.public_url();
    let request_timeout = Duration::from_secs(config.limits.request_timeout_secs);
    let scopes = config
        .scopes
        .iter()
        .filter_map(|s| {
            let db = backends.iter().find(|(n, _)| *n == s.database)?.1.clone();
            let db_config = config.databases.iter().find(|d| d.name == s.database);
            let query_timeout = db_config.map_or(request_timeout, |d| {
                Duration::from_secs(d.query_timeout_secs)
            });
            let descriptions = db_config
                .map(|d| {
                    crate::tools::descriptions::Descriptions::new(
                        &d.table_descriptions,
                        &d.column_descriptions,
                    )
                })
                .unwrap_or_default();
            let budget = query_timeout.min(request_timeout * 9 / 10);
            Some(Arc::new(Scope::new(
                s.clone(),
                db,
                &public_url,
                &ops,
                budget,
                descriptions,
            )))
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
    let state = AppState::new(config, scopes, no_auth, ops);
    if let Some(o) = oauth {
        state.set_oauth(o);
    }
    Ok(state)
}

/// The whole HTTP application: the routes inside the edge's middleware stack.
///
/// The stack wraps the router from outside rather than through `Router::layer`, which puts a
/// copy of it inside every route: axum clones the matched route's service for every request,
/// and that clone then held the whole stack (boxes, the rate limiters' handles, the state),
/// about 10,000 instructions a request to make and drop (`benches/instructions.sh`, session
/// 19). Outside, hyper clones the stack once per request, shallowly, and the router's clone
/// is a reference count. Every request passes the stack either way, unmatched paths included.
pub fn router<B>(
    state: &AppState,
) -> impl tower::Service<
    axum::http::Request<B>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let edge = state.edge().clone();
    let routes = Router::new()
        .merge(crate::ops::routes(state))
        .merge(crate::mcp::routes(state))
        .merge(crate::oauth::routes(state))
        // A bound on the time to a response head (never on an SSE stream's body), around each
        // route, so that `MarkRouteLayer` (added next, so wrapping it) puts the route template
        // on its 503.
        .route_layer(edge::stack::DeadlineLayer::new(edge.clone()))
        // Hands the matched route template out to `Front`'s count (set only inside the router),
        // on the timeout's 503 too.
        .route_layer(crate::ops::metrics::MarkRouteLayer)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config().server.max_body_bytes));
    // One stack, outermost first; each request passes these top to bottom.
    ServiceBuilder::new()
        .map_request(|req: axum::http::Request<B>| req.map(axum::body::Body::new))
        // The request id, the trace span, the request count, the client IP and the allowlist
        // on the way in; the security headers and the request id on the way out (see
        // `edge::stack::Front`). Refusals below are counted and get the headers too.
        .layer(edge::stack::FrontLayer::new(state.clone()))
        // Per-IP bucket, then the stricter bucket on OAuth endpoints.
        .layer(edge.rate_limits.per_ip_layer())
        .layer(edge.rate_limits.oauth_layer())
        // Innermost: SSE stream caps, and 413 for bodies over the limit before any handler
        // buffers them.
        .layer(edge::stack::AdmitLayer::new(edge))
        .service(routes)
}

/// The plain-HTTP listener (`tls.http_redirect_listen`): the redirect to the public URL and,
/// with `http01`, the ACME HTTP-01 challenge. It faces the same internet as the main listener,
/// so it gets the same connection handling (see [`run`]) and a smaller stack of the same
/// middleware, outermost first.
pub fn plain_router(state: &AppState, http01: Option<edge::acme::Http01Responder>) -> Router {
    let edge = state.edge().clone();
    let stack = ServiceBuilder::new()
        // As on the main listener: the request id, the trace span (`plain_http`), the count
        // (the challenge route by its template, the rest, redirects and refusals, as
        // `plain-http`), the client IP (trusted proxies included) and the fixed security
        // headers, on refusals too; never HSTS over plain HTTP.
        .layer(edge::stack::FrontLayer::plain_http(state.clone()))
        // The same per-IP bucket as the main listener: one address has one budget, whichever
        // port it uses. Before the allowlist here, because the allowlist wraps only the
        // redirect (below); the CA's requests are counted like anyone's.
        .layer(edge.rate_limits.per_ip_layer())
        // Nothing here reads a body; a declared oversized one is refused before anything else.
        .layer(from_fn_with_state(edge.clone(), edge::limits::body_limit));
    // No request timeout layer: every handler here answers at once from memory.
    //
    // The redirect tells a client where the server is, so only clients the allowlists admit
    // learn it (the same decision the https side makes for that path). The CA validates
    // HTTP-01 from addresses nobody publishes in advance, so the challenge route is merged
    // outside the allowlist.
    let redirect = edge::tls::redirect_routes(state.public_url())
        .layer(from_fn_with_state(edge, edge::allowlist::enforce));
    let routes = match http01 {
        Some(responder) => redirect.merge(
            edge::acme::http01_routes(responder).route_layer(crate::ops::metrics::MarkRouteLayer),
        ),
        None => redirect,
    };
    routes.layer(stack)
}

/// An axum-server on `listener` with the HTTP settings every listener shares: hyper's header
/// read timeout (slow request heads, and on HTTP/1.1 the wait for the next request on a
/// kept-alive connection), the request head limit on both protocols, HTTP/2's bound on
/// requests in progress per connection, and HTTP/2 keep-alive pings (after the idle timeout:
/// see [`http2_keep_alive_interval`]). Callers add an
/// [`EdgeAcceptor`] for the handshake deadline and the idle timeout.
fn edge_server(
    listener: TcpListener,
    handle: axum_server::Handle<SocketAddr>,
    limits: &LimitsConfig,
    tls: bool,
) -> std::io::Result<axum_server::Server<SocketAddr>> {
    let mut server = axum_server::from_tcp(listener.into_std()?)?.handle(handle);
    let http = server.http_builder();
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs))
        // The read buffer holds the request head; a head that does not fit is refused (431).
        // Bodies stream past it, so this limits only the head.
        .max_buf_size(limits.max_header_bytes);
    if tls {
        // Head and body in one buffer, so a small response is one TLS record, not two.
        http.http1().writev(false);
    }
    http.http2()
        .timer(TokioTimer::new())
        // The same head limit as HTTP/1.1 (h2 answers a head that reaches it 431), and a bound on
        // the requests one connection may have in progress.
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(http2_keep_alive_interval(limits))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok(server)
}

/// How long an HTTP/2 connection may go without a frame from the client before hyper pings it
/// (and closes it when the ACK does not come within 20 s): past `limits.idle_timeout_secs`.
/// hyper pings idle connections too, and the ping and its ACK are bytes both ways, which the
/// idle timeout ([`edge::limits::IdleIo`]) counts as activity: a ping sooner than the idle
/// timeout would keep an idle connection open for as long as the client answers pings. Later,
/// the idle timeout closes an idle connection first, and the ping is left to find dead peers
/// of busy connections (an SSE stream, on which the client sends nothing for hours).
pub fn http2_keep_alive_interval(limits: &LimitsConfig) -> Duration {
    Duration::from_secs(limits.idle_timeout_secs.saturating_add(30))
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not found"})),
    )
}

/// Serves `state` on `listener` (TLS as configured) until `shutdown` resolves, then drains
/// open requests for at most `server.shutdown_grace_secs`.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let app = router(&state);
    let config = state.config().clone();
    let limits = config.limits.clone();
    // Owned background work: stopped by `stopping` (or aborted) when serving ends.
    let stopping = CancellationToken::new();
    let mut tasks = Vec::new();
    let sessions_state = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            let n = sessions_state.sessions().reap();
            if n > 0 {
                tracing::debug!(ended = n, "idle MCP sessions ended");
            }
        }
    }));
    // Expired OAuth codes and tokens are swept by an owned task, stopped when this returns.
    let _oauth_cleanup = crate::oauth::spawn_cleanup(&state);
    let sweep_edge = state.edge().clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            sweep_edge.rate_limits.sweep();
        }
    }));
    // The audit writer has a signal of its own, fired only once serving (the drain included)
    // has returned: tool calls that finish during the drain are answered, so they are audited
    // too. It then writes what is still queued, so it is awaited, not aborted.
    let audit_stop = CancellationToken::new();
    let audit_writer = state.ops().take_audit_rx().map(|rx| {
        tokio::spawn(crate::ops::audit::writer(
            rx,
            config.audit.clone(),
            config.server.state_dir.clone(),
            crate::ops::audit::WriterCounters {
                write_errors: state.ops().metrics.audit_write_errors.clone(),
                dropped: state.ops().metrics.audit_dropped.clone(),
            },
            audit_stop.clone(),
        ))
    });
    // Bound before ACME starts, so an HTTP-01 challenge never finds the port closed.
    let redirect = match config.tls.http_redirect_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("tls.http_redirect_listen {addr}: {e}"))
            })?;
            Some((addr, listener))
        }
        None => None,
    };
    let (prepared, tls_tasks) = edge::tls::prepare(
        &config.tls,
        &config.server.state_dir,
        state.edge().tls.clone(),
        stopping.clone(),
    )
    .await
    // A certificate, key or CA file that cannot be used is the configuration's fault.
    .map_err(|e| match edge::tls::file_error(&config.tls, e) {
        Ok(config_error) => StartError::Config(config_error),
        Err(e) => StartError::Tls(e),
    })?;
    tasks.extend(tls_tasks);
    let handshake = Duration::from_secs(limits.header_read_timeout_secs);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    // One set of connection caps for every listener.
    let caps = state.edge().connections.clone();
    let plain_handle = axum_server::Handle::new();
    if let Some((addr, redirect)) = redirect {
        let http01 = prepared.http01();
        tracing::info!(%addr, http01 = http01.is_some(), "HTTP redirect listener");
        let make = plain_router(&state, http01).into_make_service_with_connect_info::<SocketAddr>();
        // The same connection handling as the main listener: header read timeout, idle
        // timeout, no TLS.
        let server = edge_server(redirect, plain_handle.clone(), &limits, false)?.acceptor(
            EdgeAcceptor::new(DefaultAcceptor, caps.clone(), handshake, idle),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.serve(make).await {
                tracing::error!(error = %e, "HTTP redirect listener failed");
            }
        }));
    }

    let handle = axum_server::Handle::new();
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let closing = state.clone();
    let signal_handle = handle.clone();
    let stop = stopping.clone();
    tasks.push(tokio::spawn(async move {
        shutdown.await;
        // systemd (Type=notify) shows the unit as deactivating while open requests drain.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        stop.cancel();
        // End sessions so their SSE streams close and the drain can finish.
        closing.sessions().close_all();
        plain_handle.graceful_shutdown(Some(grace));
        signal_handle.graceful_shutdown(Some(grace));
    }));

    let server = edge_server(
        listener,
        handle,
        &limits,
        config.tls.mode != edge::config::TlsMode::Off,
    )?;
    let make = axum::ServiceExt::into_make_service_with_connect_info::<SocketAddr>(app);
    // Every listener is bound and the state built: tell systemd (a no-op without
    // NOTIFY_SOCKET, i.e. outside a Type=notify unit).
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
    let served = match prepared {
        Prepared::Off => {
            server
                .acceptor(EdgeAcceptor::new(
                    DefaultAcceptor,
                    caps.clone(),
                    handshake,
                    idle,
                ))
                .serve(make)
                .await
        }
        Prepared::Files(rustls) => {
            let tls = RustlsAcceptor::new(rustls).handshake_timeout(handshake);
            server
                .acceptor(EdgeAcceptor::new(tls, caps.clone(), handshake, idle))
                .serve(make)
                .await
        }
        Prepared::Acme { acceptor: acme, .. } => {
            server
                .acceptor(EdgeAcceptor::new(acme, caps.clone(), handshake, idle))
                .serve(make)
                .await
        }
    };
    stopping.cancel();
    for t in tasks {
        t.abort();
    }
    // The drain is over: no request left to record anything.
    audit_stop.cancel();
    if let Some(w) = audit_writer
        && tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .is_err()
    {
        tracing::warn!("audit: the writer did not finish within 5 s");
    }
    served.map_err(StartError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_pings_come_only_after_the_idle_timeout() {
        for idle in [20, 120, 86_400] {
            let limits = LimitsConfig {
                idle_timeout_secs: idle,
                ..LimitsConfig::default()
            };
            assert!(
                http2_keep_alive_interval(&limits) > Duration::from_secs(idle),
                "idle timeout {idle} s"
            );
        }
    }
}
