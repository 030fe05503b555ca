//! The local-only admin endpoint, and the `mssql-mcp tokens …` commands that use it.
//!
//! Incident response without a restart: list registered clients and live grants (who, which
//! client, which scope, when, last used) and revoke one client, one user's grants, or all of
//! them; the running server honours it at once (its in-memory index is updated with the file).
//!
//! The endpoint listens on a loopback address only (`[admin] listen`, checked when the config
//! is loaded, and every peer is checked again), and each request must carry the random token
//! the server writes to `{state_dir}/admin.token` (mode 0600) at start, so only someone who
//! can read the state directory can use it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;

use super::store::now_ms;
use crate::state::AppState;

/// File (in the state directory) holding the admin token of the running server.
pub const TOKEN_FILE: &str = "admin.token";

pub fn write_token_file(dir: &Path, token: &str) -> std::io::Result<()> {
    let path = dir.join(TOKEN_FILE);
    let tmp = dir.join(format!("{TOKEN_FILE}.tmp"));
    // Made 0600 by `open` itself, never readable by others for a moment under a loose umask;
    // a left-over temporary file (which could have any mode) is removed first.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    std::io::Write::write_all(&mut opts.open(&tmp)?, token.as_bytes())?;
    std::fs::rename(tmp, path)
}

/// What `tokens revoke` targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Client(String),
    User(String),
    All,
}

/// One admin route: its method (as listed), path and handler.
type Route = (&'static str, &'static str, MethodRouter<AppState>);

/// The routes behind the token check.
fn guarded_routes() -> [Route; 5] {
    [
        ("GET", "/admin/clients", get(clients)),
        ("GET", "/admin/grants", get(grants)),
        ("POST", "/admin/revoke", post(revoke)),
        ("GET", "/admin/cache", get(cache_stats)),
        ("POST", "/admin/cache/clear", post(cache_clear)),
    ]
}

/// The routes outside it: `/metrics` (the listener is loopback-only, and Prometheus cannot
/// read a token that changes at every start) and the health checks.
fn open_routes() -> [Route; 3] {
    [
        ("GET", "/metrics", get(metrics)),
        ("GET", "/health", get(health)),
        ("GET", "/health/ready", get(ready)),
    ]
}

/// The admin routes, as the 404 and 405 answers list them: made from the same tables as the
/// router, so the list cannot name a route that is gone or leave out one that was added.
static ROUTES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let guarded = guarded_routes();
    let open = open_routes();
    guarded
        .iter()
        .chain(open.iter())
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect::<Vec<_>>()
        .join(", ")
});

/// The admin router (no state besides the app). Every refusal is JSON in the OAuth endpoints'
/// shape (`error`, `error_description`), which `mssql-mcp tokens …` and `cache …` print.
pub fn router(app: AppState) -> Router {
    let guarded = guarded_routes()
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler)| {
            r.route(path, handler)
        })
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(app.clone(), guard));
    open_routes()
        .into_iter()
        .fold(guarded, |r, (_, path, handler)| r.route(path, handler))
        .with_state(app)
}

/// An admin refusal: `{"error": code, "error_description": text}`.
fn refusal(status: StatusCode, code: &str, description: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": description.into()})),
    )
        .into_response()
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no admin route {method} {}; the routes are {}",
            uri.path(),
            *ROUTES
        ),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    refusal(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {method}; the routes are {}",
            uri.path(),
            *ROUTES
        ),
    )
}

/// A body or query the extractor refused (not JSON, wrong shape, wrong content type).
fn rejected(status: StatusCode, text: String) -> Response {
    refusal(status, "invalid_request", text)
}

/// Without OAuth there are no clients or grants to list or revoke.
fn oauth_off() -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        "oauth_off",
        "this server runs without OAuth (server.insecure_no_auth = true), so it has no clients or grants",
    )
}

async fn metrics(State(app): State<AppState>) -> Response {
    crate::ops::metrics_response(&app)
}

/// `/health` with the details the public one leaves out (the last TLS error).
async fn health(State(app): State<AppState>) -> Response {
    axum::Json(crate::ops::health_body(&app, true)).into_response()
}

async fn ready(State(app): State<AppState>) -> Response {
    let report = crate::ops::readiness(&app).await;
    let status = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

/// Which scope a cache command is about (all when absent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheTarget {
    pub scope: Option<String>,
}

#[allow(clippy::result_large_err)]
fn selected<'a>(
    app: &'a AppState,
    scope: &Option<String>,
) -> Result<Vec<&'a std::sync::Arc<crate::state::Scope>>, Response> {
    let all = app.scopes();
    let picked: Vec<_> = all
        .iter()
        .filter(|s| {
            scope
                .as_deref()
                .is_none_or(|want| s.path.eq_ignore_ascii_case(want))
        })
        .collect();
    if picked.is_empty() {
        let known: Vec<&str> = all.iter().map(|s| s.path.as_str()).collect();
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "unknown_scope",
            format!(
                "no scope {:?}; the scopes are {}",
                scope.as_deref().unwrap_or_default(),
                known.join(", ")
            ),
        ));
    }
    Ok(picked)
}

async fn cache_stats(
    State(app): State<AppState>,
    target: Result<axum::extract::Query<CacheTarget>, QueryRejection>,
) -> Response {
    let target = match target {
        Ok(axum::extract::Query(t)) => t,
        Err(r) => return rejected(r.status(), r.body_text()),
    };
    let scopes = match selected(&app, &target.scope) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let list: Vec<_> = scopes
        .iter()
        .map(|s| json!({"scope": s.path, "stats": s.cache.stats()}))
        .collect();
    axum::Json(json!({"scopes": list})).into_response()
}

async fn cache_clear(
    State(app): State<AppState>,
    target: Result<axum::Json<CacheTarget>, JsonRejection>,
) -> Response {
    let target = match target {
        Ok(axum::Json(t)) => t,
        Err(r) => return rejected(r.status(), r.body_text()),
    };
    let scopes = match selected(&app, &target.scope) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut cleared = Vec::new();
    for s in scopes {
        let before = s.cache.stats().entries;
        s.cache.clear();
        tracing::warn!(scope = %s.path, entries = before, "admin: cache cleared");
        cleared.push(json!({"scope": s.path, "entries": before}));
    }
    axum::Json(json!({"cleared": cleared})).into_response()
}

/// Serves the admin endpoint on `listener` (a loopback address) until `shutdown`.
pub async fn serve(
    app: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // With OAuth on, the token file was written when the store opened; without, here.
    if app.oauth().is_none() {
        let dir = &app.config().server.state_dir;
        crate::ops::private_dir(dir)?;
        write_token_file(dir, app.admin_token())?;
    }
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn guard(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let peer_ok = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    let token_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| super::ct_eq(t, app.admin_token()));
    if !(peer_ok && token_ok) {
        tracing::warn!(peer_ok, "admin: request refused");
        return refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the admin endpoint needs `Authorization: Bearer` with the token in {{state_dir}}/{TOKEN_FILE} of the running server, from a loopback address"
            ),
        );
    }
    next.run(req).await
}

fn iso(ms: i64) -> String {
    // Seconds since the epoch as UTC `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, no date crate).
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn clients(State(app): State<AppState>) -> Response {
    let Some(o) = app.oauth() else {
        return oauth_off();
    };
    let mut list: Vec<_> = o
        .store
        .clients()
        .into_iter()
        .map(|c| {
            json!({
                "client_id": c.client_id,
                "name": c.name,
                "scope": c.scope,
                "auth_method": c.auth_method,
                "metadata_document": c.metadata_document,
                "redirect_uris": c.redirect_uris,
                "created_at": iso(c.created_at),
                "last_used_at": iso(c.last_used_at.load(Ordering::Relaxed)),
            })
        })
        .collect();
    list.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
    axum::Json(json!({"clients": list})).into_response()
}

async fn grants(State(app): State<AppState>) -> Response {
    let Some(o) = app.oauth() else {
        return oauth_off();
    };
    let now = now_ms();
    let mut list: Vec<_> = o
        .store
        .grants()
        .into_iter()
        .map(|g| {
            let (access, refresh) = o.store.live_tokens(&g.grant_id, now);
            let client_name = o
                .store
                .client(&g.scope, &g.client_id)
                .map(|c| c.name.clone());
            json!({
                "grant_id": g.grant_id,
                "user": g.username,
                "client_id": g.client_id,
                "client_name": client_name,
                "scope": g.scope,
                "resource": g.resource,
                "approved_at": iso(g.created_at),
                "last_used_at": iso(g.last_used_at.load(Ordering::Relaxed)),
                "live_access_tokens": access,
                "live_refresh_tokens": refresh,
            })
        })
        .collect();
    list.sort_by(|a, b| a["approved_at"].as_str().cmp(&b["approved_at"].as_str()));
    axum::Json(json!({"grants": list})).into_response()
}

async fn revoke(
    State(app): State<AppState>,
    target: Result<axum::Json<Target>, JsonRejection>,
) -> Response {
    let target = match target {
        Ok(axum::Json(t)) => t,
        Err(r) => return rejected(r.status(), r.body_text()),
    };
    let Some(o) = app.oauth() else {
        return oauth_off();
    };
    let t = target.clone();
    let result = super::blocking(&o.store, move |s| match &t {
        Target::Client(id) => s.revoke_client(id),
        Target::User(name) => s.revoke_user(name),
        Target::All => s.revoke_all(),
    })
    .await;
    match result {
        Ok(n) => {
            tracing::warn!(?target, grants = n, "admin: grants revoked");
            let mut r = crate::ops::audit::Record::new("oauth", "ok");
            r.event = Some("admin_revoke");
            match &target {
                Target::Client(id) => r.client_id = Some(id.clone()),
                Target::User(u) => r.user = Some(u.clone()),
                Target::All => r = r.with_query("all"),
            }
            r.rows = Some(n);
            app.ops().audit.record(r);
            axum::Json(json!({"revoked_grants": n})).into_response()
        }
        Err(e) => e.into_response(),
    }
}

// ----- the CLI side -----

/// Errors of `mssql-mcp tokens …`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot read {path}: {source} (is the server running with this config, and may you read its state directory?)"
    )]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot reach the admin endpoint at {addr}: {source} (is the server running?)")]
    Unreachable {
        addr: SocketAddr,
        source: reqwest::Error,
    },
    /// A refusal, with the reason the endpoint gave (its `error_description`).
    #[error("the admin endpoint at {addr} answered {status}: {reason}")]
    Status {
        addr: SocketAddr,
        status: StatusCode,
        reason: String,
    },
}

/// The reason in an admin refusal's body: its `error_description`, else its `error`, else
/// the start of the text.
fn reason_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match (v["error_description"].as_str(), v["error"].as_str()) {
        (Some(d), _) => d.to_string(),
        (None, Some(e)) => e.to_string(),
        (None, None) if body.trim().is_empty() => "no reason given".to_string(),
        (None, None) => body.chars().take(300).collect(),
    }
}

/// Reads the running server's admin token from its state directory.
pub fn read_token(state_dir: &Path) -> Result<String, AdminError> {
    let path = state_dir.join(TOKEN_FILE);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|source| AdminError::TokenFile {
            path: path.display().to_string(),
            source,
        })
}

/// Calls the admin endpoint: GET `path`, or POST `body` to it.
pub async fn call(
    addr: SocketAddr,
    token: &str,
    path: &str,
    body: Option<&Target>,
) -> Result<serde_json::Value, AdminError> {
    call_with(addr, token, path, body).await
}

/// [`call`] with any JSON body.
pub async fn call_with<B: Serialize + ?Sized>(
    addr: SocketAddr,
    token: &str,
    path: &str,
    body: Option<&B>,
) -> Result<serde_json::Value, AdminError> {
    // Never through a proxy from the environment: the admin token goes over plain HTTP to
    // this host's own listener.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|source| AdminError::Unreachable { addr, source })?;
    let url = format!("http://{addr}{path}");
    let req = match body {
        Some(b) => client.post(&url).json(b),
        None => client.get(&url),
    };
    let resp = req
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|source| AdminError::Unreachable { addr, source })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(AdminError::Status {
            addr,
            status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            reason: reason_of(&body),
        });
    }
    resp.json()
        .await
        .map_err(|source| AdminError::Unreachable { addr, source })
}

/// Human-readable listing of clients and grants.
pub fn format_listing(clients: &serde_json::Value, grants: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut out = String::from("CLIENTS\n");
    for c in clients["clients"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {:<24} scope {}  auth {}  created {}  last used {}\n",
            s(&c["client_id"]),
            s(&c["name"]),
            s(&c["scope"]),
            s(&c["auth_method"]),
            s(&c["created_at"]),
            s(&c["last_used_at"]),
        ));
    }
    out.push_str("GRANTS\n");
    for g in grants["grants"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  user {}  client {} ({})  scope {}  approved {}  last used {}  live tokens {}+{}\n",
            s(&g["grant_id"]),
            s(&g["user"]),
            s(&g["client_id"]),
            s(&g["client_name"]),
            s(&g["scope"]),
            s(&g["approved_at"]),
            s(&g["last_used_at"]),
            g["live_access_tokens"],
            g["live_refresh_tokens"],
        ));
    }
    out
}

/// Human-readable `cache stats`.
pub fn format_cache_stats(v: &serde_json::Value) -> String {
    let mut out = String::new();
    for s in v["scopes"].as_array().into_iter().flatten() {
        let st = &s["stats"];
        let ratio = st["hit_ratio"]
            .as_f64()
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        let oldest = st["oldest_entry_age_secs"]
            .as_u64()
            .map(|a| format!("{a} s ago"))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{}: {} entries (max {}, ttl {} s), {} cursors, hits {}, misses {}, hit ratio {ratio}, oldest entry {oldest}, memory ~{} KiB (max {} KiB)\n",
            s["scope"].as_str().unwrap_or("?"),
            st["entries"],
            st["max_entries"],
            st["ttl_secs"],
            st["cursors"],
            st["hits"],
            st["misses"],
            st["memory_bytes"].as_u64().unwrap_or(0).div_ceil(1024),
            st["max_bytes"].as_u64().unwrap_or(0).div_ceil(1024),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_refusal_is_shown_with_its_reason() {
        let r = reason_of(r#"{"error":"unknown_scope","error_description":"no scope \"/x\""}"#);
        assert_eq!(r, r#"no scope "/x""#);
        assert_eq!(reason_of(r#"{"error":"forbidden"}"#), "forbidden");
        assert_eq!(reason_of(""), "no reason given");
        // Not JSON (another program on the port): its start, bounded.
        assert_eq!(reason_of(&"y".repeat(1000)).len(), 300);
    }

    /// The token file is private from its first byte, even where a temporary file left by
    /// a crash had a loose mode.
    #[cfg(unix)]
    #[test]
    fn the_token_file_is_private_even_over_a_stale_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join(format!("{TOKEN_FILE}.tmp"));
        std::fs::write(&stale, "old").expect("stale");
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_token_file(dir.path(), "mcp_admin_x").expect("write");
        let path = dir.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("mcp_admin_x")
        );
        assert!(!stale.exists());
    }
}
