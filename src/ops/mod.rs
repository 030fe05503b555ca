//! Operations: what an operator running the binary on a VM lives with.
//!
//! - `/health`: liveness (the process answers), always 200 while it runs, with the TLS state;
//!   the last ACME or reload error's text only on the admin listener.
//! - `/health/ready`: readiness, 200 or 503 with each check's status: every scope's database
//!   answers (checked at most every [`READY_CACHE`], so probes cannot hammer it), the
//!   certificate is valid and not near expiry (when TLS is on), the state directory is
//!   writable. Each check's detail (an error naming a host and port or a path) is given only on
//!   the admin listener; the public one says `ok` or `fail`.
//! - `/metrics`: Prometheus text format ([`metrics`]), on the main listener only for
//!   `[metrics] allow` addresses (loopback by default), and always on the admin listener.
//! - [`audit`]: the audit log of tool calls and OAuth decisions.
//! - [`metered`]: database timing; [`config`]: `[metrics]`, `[audit]`, `[log]`.

pub mod audit;
pub mod config;
pub mod metered;
pub mod metrics;
pub mod request_id;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::edge::allowlist::IpSet;
use crate::edge::client_ip::ClientIp;
use crate::state::AppState;

/// How long one readiness result is reused.
pub const READY_CACHE: Duration = Duration::from_secs(3);

/// A certificate expiring sooner than this makes the server not ready (ACME renews at two
/// thirds of the lifetime, so a healthy one never gets this close).
pub const CERT_MIN_VALIDITY_SECS: i64 = 7 * 86_400;

/// Longest a database check may take before it counts as down.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Metrics, audit and the readiness cache of one server.
pub struct Ops {
    pub metrics: metrics::Metrics,
    pub audit: audit::Audit,
    /// Taken by `app::run`, which owns the writer task.
    audit_rx: Mutex<Option<mpsc::Receiver<audit::Record>>>,
    /// `[metrics] allow`.
    metrics_allow: IpSet,
    /// The last readiness report and when it was made; the async lock makes concurrent probes
    /// wait for one check instead of starting their own.
    ready: tokio::sync::Mutex<Option<(Instant, ReadyReport)>>,
}

impl Ops {
    pub fn new(config: &crate::config::Config) -> Self {
        let metrics = metrics::Metrics::new();
        let (audit, rx) = audit::Audit::new(&config.audit, metrics.audit_dropped.clone());
        Self {
            metrics,
            audit,
            audit_rx: Mutex::new(rx),
            // Validated at load; a failure here can only mean "nobody".
            metrics_allow: IpSet::parse(&config.metrics.allow).unwrap_or_else(|_| {
                IpSet::parse(&["255.255.255.255/32".into()]).unwrap_or_default()
            }),
            ready: tokio::sync::Mutex::new(None),
        }
    }

    /// The audit receiver, once (for the writer task).
    pub fn take_audit_rx(&self) -> Option<mpsc::Receiver<audit::Record>> {
        self.audit_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// `/health`, `/health/ready` and `/metrics` on the main listener.
pub fn routes(app: &AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(public_metrics))
        .with_state(app.clone())
}

/// Liveness on the main listener: [`health_body`] without details.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(health_body(&state, false))
}

/// Liveness, plus the certificate's state when TLS is on: an ACME failure shows here as
/// `"state": "error"` (the server keeps serving the previous certificate) with the seconds the
/// certificate has left. The failure's text (which may carry the CA's account and order URLs
/// and internal detail), its time and when a failed ACME order is retried only with
/// `details`: on the admin listener, as with the readiness details.
pub fn health_body(app: &AppState, details: bool) -> serde_json::Value {
    let mut body = serde_json::json!({"status": "ok"});
    let edge = app.edge().report();
    if edge.tls.mode != "off" {
        body["tls"] = serde_json::json!({
            "mode": edge.tls.mode,
            "state": edge.tls.state,
            "cert_expires_in_secs": edge.cert_expires_in_secs,
        });
        if details {
            body["tls"]["last_error"] = serde_json::json!(edge.tls.last_error);
            body["tls"]["last_error_at"] = serde_json::json!(edge.tls.last_error_at);
            body["tls"]["retry_at"] = serde_json::json!(edge.tls.retry_at);
        }
    }
    body
}

/// One check of the readiness report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `ok`, `fail` or `skipped`.
    pub status: &'static str,
    /// What was found: a database error (which may name a host and port or a file path), the
    /// state directory's path, an ACME error. Only on the admin listener (see
    /// [`ReadyReport::public`]); empty, and left out, on the public one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The readiness report.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyReport {
    /// `ok` or `fail`.
    pub status: &'static str,
    pub checks: BTreeMap<String, Check>,
}

impl ReadyReport {
    /// The report for the public listener, which anyone the allowlists admit can read: the
    /// overall status and each check's, without details (those name hosts, ports, paths and
    /// errors). The admin listener's `/health/ready` has them.
    pub fn public(mut self) -> Self {
        for c in self.checks.values_mut() {
            c.detail.clear();
        }
        self
    }
}

fn ok(detail: impl Into<String>) -> Check {
    Check {
        status: "ok",
        detail: detail.into(),
    }
}

fn fail(detail: impl Into<String>) -> Check {
    Check {
        status: "fail",
        detail: detail.into(),
    }
}

/// Runs every readiness check (or reuses a report younger than [`READY_CACHE`]).
pub async fn readiness(app: &AppState) -> ReadyReport {
    let mut cached = app.ops().ready.lock().await;
    if let Some((at, r)) = cached.as_ref()
        && at.elapsed() < READY_CACHE
    {
        return r.clone();
    }
    let report = check_all(app).await;
    *cached = Some((Instant::now(), report.clone()));
    report
}

async fn check_all(app: &AppState) -> ReadyReport {
    let mut checks = BTreeMap::new();
    // Each database once, however many scopes serve it, all at the same time.
    let mut dbs: Vec<(String, crate::db::DynBackend)> = Vec::new();
    for s in app.scopes() {
        if !dbs.iter().any(|(n, _)| *n == s.database) {
            dbs.push((s.database.clone(), s.db.clone()));
        }
    }
    let pings = futures::future::join_all(dbs.iter().map(|(_, db)| async move {
        let started = Instant::now();
        match tokio::time::timeout(DB_CHECK_TIMEOUT, db.ping()).await {
            Ok(Ok(())) => ok(format!(
                "{} answered in {} ms",
                db.kind(),
                started.elapsed().as_millis()
            )),
            Ok(Err(e)) => fail(e.to_string()),
            Err(_) => fail(format!("no answer within {} s", DB_CHECK_TIMEOUT.as_secs())),
        }
    }))
    .await;
    for ((name, _), check) in dbs.iter().zip(pings) {
        checks.insert(format!("database:{name}"), check);
    }
    checks.insert("tls".into(), tls_check(app));
    let dir = app.config().server.state_dir.clone();
    let store = tokio::task::spawn_blocking(move || state_dir_writable(&dir))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    checks.insert(
        "state_dir".into(),
        match store {
            Ok(()) => ok("writable"),
            Err(e) => fail(e),
        },
    );
    let status = if checks.values().any(|c| c.status == "fail") {
        "fail"
    } else {
        "ok"
    };
    ReadyReport { status, checks }
}

fn tls_check(app: &AppState) -> Check {
    let r = app.edge().tls.report();
    if r.mode == "off" {
        return Check {
            status: "skipped",
            detail: "TLS is off".into(),
        };
    }
    match r.expires_in_secs() {
        None => fail(format!(
            "{}: no certificate yet{}",
            r.mode,
            r.last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )),
        Some(s) if s <= 0 => fail(format!("{}: the certificate has expired", r.mode)),
        Some(s) if s < CERT_MIN_VALIDITY_SECS => fail(format!(
            "{}: the certificate expires in {} h{}",
            r.mode,
            s / 3600,
            r.last_error
                .as_deref()
                .map(|e| format!(" and renewal fails: {e}"))
                .unwrap_or_default()
        )),
        Some(s) => ok(format!(
            "{}: certificate valid for {} more days",
            r.mode,
            s / 86_400
        )),
    }
}

/// Creates and removes a probe file in the state directory.
fn state_dir_writable(dir: &std::path::Path) -> Result<(), String> {
    let probe = dir.join(".ready-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// `/health/ready` on the main listener: statuses only ([`ReadyReport::public`]).
async fn ready(State(app): State<AppState>) -> Response {
    let report = readiness(&app).await.public();
    let status = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = (status, axum::Json(report)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The text exposition of `app`'s metrics.
pub fn metrics_response(app: &AppState) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        app.ops().metrics.render(app),
    )
        .into_response()
}

/// `/metrics` on the public listener: only for `[metrics] allow`.
async fn public_metrics(State(app): State<AppState>, req: Request) -> Response {
    let ip = ClientIp::of(&req);
    if !app.ops().metrics_allow.contains(ip) {
        tracing::warn!(%ip, "metrics: refused (not in [metrics] allow)");
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({
                "error": "forbidden",
                "reason": "metrics are not served to this address"
            })),
        )
            .into_response();
    }
    metrics_response(&app)
}

/// Creates `dir` and its missing parents, readable by the owner only (0700 on Unix): the state
/// directory holds the token store, the admin token and the audit log.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// A run of failures reported as one episode rather than one log line per failure: the first
/// failure, then at most one reminder per `every` while the run lasts, then its end. Callers
/// count every failure in their metrics and log what [`FailureRun::failed`] and
/// [`FailureRun::ended`] say to log. Used by the audit writer and the SQL Server pool.
#[derive(Debug, Default)]
pub struct FailureRun {
    /// When the run began; `None` while things work.
    since: Option<Instant>,
    /// Failures in the run.
    failures: u64,
    /// When the run was last reported.
    reported: Option<Instant>,
}

/// What [`FailureRun::failed`] says to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReport {
    /// The first failure of a run.
    First,
    /// A reminder: `failures` so far, for `secs` seconds.
    Ongoing { failures: u64, secs: u64 },
    /// Nothing (reported recently).
    Quiet,
}

impl FailureReport {
    /// The failures so far to log with this report, or `None` when it says to stay quiet.
    pub fn to_log(self) -> Option<u64> {
        match self {
            FailureReport::First => Some(1),
            FailureReport::Ongoing { failures, .. } => Some(failures),
            FailureReport::Quiet => None,
        }
    }
}

impl FailureRun {
    /// Counts a failure at `now`; says whether and how to report it.
    pub fn failed(&mut self, now: Instant, every: Duration) -> FailureReport {
        self.failures += 1;
        let since = *self.since.get_or_insert(now);
        match self.reported {
            None => {
                self.reported = Some(now);
                FailureReport::First
            }
            Some(t) if now.duration_since(t) >= every => {
                self.reported = Some(now);
                FailureReport::Ongoing {
                    failures: self.failures,
                    secs: now.duration_since(since).as_secs(),
                }
            }
            Some(_) => FailureReport::Quiet,
        }
    }

    /// A success: ends the run, if one was going on, returning its failures and length.
    pub fn ended(&mut self) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        self.reported = None;
        Some((std::mem::take(&mut self.failures), since.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_run_reports_its_start_a_reminder_a_minute_and_its_end() {
        let every = Duration::from_secs(60);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut run = FailureRun::default();
        assert_eq!(run.ended(), None, "no run, nothing ended");
        assert_eq!(run.failed(at(0), every), FailureReport::First);
        assert_eq!(run.failed(at(10), every), FailureReport::Quiet);
        assert_eq!(run.failed(at(59), every), FailureReport::Quiet);
        assert_eq!(
            run.failed(at(61), every),
            FailureReport::Ongoing {
                failures: 4,
                secs: 61
            }
        );
        assert_eq!(run.failed(at(100), every), FailureReport::Quiet);
        assert_eq!(run.ended().map(|(n, _)| n), Some(5));
        // A new run starts over.
        assert_eq!(run.failed(at(200), every), FailureReport::First);
        assert_eq!(run.ended().map(|(n, _)| n), Some(1));
    }
}
