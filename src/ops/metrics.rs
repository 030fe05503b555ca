//! Prometheus metrics: one [`Registry`] per [`crate::state::AppState`] (not the crate's global
//! one, so test servers in one process never share numbers), exposed at `/metrics` in the text
//! format.
//!
//! Labels are bounded: route templates (axum's `MatchedPath`, never raw paths), scope paths and
//! database names from the config, tool names, status codes and fixed outcome words. Counters
//! on the request path are resolved once where the label set is known in advance (per scope and
//! tool, per database and operation); numbers other parts already keep (edge refusals, pool
//! state, cache sizes, TLS state) are copied into the registry at scrape time instead of being
//! counted twice. The standard `process_*` metrics (CPU seconds, resident memory, open and
//! maximum file descriptors, threads, start time) come from prometheus' process collector,
//! which reads `/proc/self` at scrape time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::state::AppState;

/// Latency buckets (seconds) for HTTP requests, tool calls and queries: 1 ms to 60 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
];

/// The route label of requests no route answered (refused by the edge first, or 404).
pub const UNMATCHED: &str = "unmatched";
/// The `route` label of requests on the plain-HTTP listener outside the ACME challenge route:
/// the redirect to https (and the edge's refusals in front of it).
pub const PLAIN_HTTP: &str = "plain-http";

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    tool_calls: IntCounterVec,
    tool_duration: HistogramVec,
    db_duration: HistogramVec,
    registrations: IntCounterVec,
    token_exchanges: IntCounterVec,
    sign_in_failures: IntCounterVec,
    /// Audit records dropped because the writer fell behind.
    pub audit_dropped: IntCounter,
    /// Audit records that could not be written (disk full, permissions).
    pub audit_write_errors: IntCounter,
    // Copied in at scrape time:
    active_tokens: IntGauge,
    registered_clients: IntGauge,
    sessions: IntGauge,
    cache_entries: IntGaugeVec,
    cache_hits: IntCounterVec,
    cache_misses: IntCounterVec,
    pool_max: IntGaugeVec,
    pool_open: IntGaugeVec,
    pool_in_use: IntGaugeVec,
    pool_waits: IntCounterVec,
    pool_opened: IntCounterVec,
    pool_discarded: IntCounterVec,
    connect_failures: IntCounterVec,
    check_connections: IntCounterVec,
    cancels: IntCounterVec,
    rate_limited: IntCounterVec,
    ip_denied: IntCounter,
    streams_open: IntGauge,
    streams_refused: IntCounter,
    timed_out: IntCounter,
    connections_open: IntGauge,
    connections_refused: IntCounter,
    cert_expiry: GaugeVec,
    acme_errors: IntCounter,
    /// Serialises scrapes, so two at once never copy the same increment twice.
    scrape: Mutex<()>,
}

/// The tool-call counters and histogram of one scope and tool, resolved once.
#[derive(Clone)]
pub struct ToolMetrics {
    ok: IntCounter,
    invalid: IntCounter,
    refused: IntCounter,
    error: IntCounter,
    cancelled: IntCounter,
    duration: Histogram,
}

/// How a tool call ended, for its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolStatus {
    Ok,
    /// Bad arguments or an id that does not exist.
    Invalid,
    /// The SQL guard or a table rule said no.
    Refused,
    /// The database failed.
    Error,
    /// The call was given up before it finished: its client went away, or the request ran
    /// past its time limit.
    Cancelled,
}

impl ToolStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolStatus::Ok => "ok",
            ToolStatus::Invalid => "invalid",
            ToolStatus::Refused => "refused",
            ToolStatus::Error => "error",
            ToolStatus::Cancelled => "cancelled",
        }
    }
}

impl ToolMetrics {
    pub fn observe(&self, status: ToolStatus, secs: f64) {
        match status {
            ToolStatus::Ok => self.ok.inc(),
            ToolStatus::Invalid => self.invalid.inc(),
            ToolStatus::Refused => self.refused.inc(),
            ToolStatus::Error => self.error.inc(),
            ToolStatus::Cancelled => self.cancelled.inc(),
        }
        self.duration.observe(secs);
    }
}

/// The query-duration histograms of one database, one per backend operation.
#[derive(Clone)]
pub struct DbMetrics {
    pub catalog: Histogram,
    pub query: Histogram,
    pub sample: Histogram,
    pub lookup: Histogram,
    pub search: Histogram,
    pub ping: Histogram,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(r, Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(r, Box::new(g.clone()));
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    register(r, Box::new(h.clone()));
    h
}

fn register(r: &Registry, c: Box<dyn prometheus::core::Collector>) {
    // Names are constants of this file and each is registered once per registry.
    if let Err(e) = r.register(c) {
        tracing::error!(error = %e, "metric registration failed");
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        register(
            &r,
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        );
        let plain_counter =
            |name: &str, help: &str| counter(&r, name, help, &[]).with_label_values::<&str>(&[]);
        let plain_gauge =
            |name: &str, help: &str| gauge(&r, name, help, &[]).with_label_values::<&str>(&[]);
        let build = gauge(
            &r,
            "mssql_mcp_build_info",
            "Always 1; the labels name the running build.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Labelled by TLS mode so the series is absent (not 0) until a certificate is served.
        let cert_expiry = GaugeVec::new(
            Opts::new(
                "mssql_mcp_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the served certificate (Unix seconds); absent without one.",
            ),
            &["mode"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        Self {
            http_requests: counter(
                &r,
                "mssql_mcp_http_requests_total",
                "HTTP requests by route template, method and status code.",
                &["route", "method", "status"],
            ),
            http_duration: histogram(
                &r,
                "mssql_mcp_http_request_duration_seconds",
                "Time to the response head, by route template.",
                &["route"],
            ),
            tool_calls: counter(
                &r,
                "mssql_mcp_tool_calls_total",
                "Tool executions by scope, tool and status (ok, invalid, refused, error, cancelled).",
                &["scope", "tool", "status"],
            ),
            tool_duration: histogram(
                &r,
                "mssql_mcp_tool_duration_seconds",
                "Tool execution time by scope and tool.",
                &["scope", "tool"],
            ),
            db_duration: histogram(
                &r,
                "mssql_mcp_db_query_duration_seconds",
                "Database round trips by database and operation.",
                &["database", "operation"],
            ),
            registrations: counter(
                &r,
                "mssql_mcp_oauth_registrations_total",
                "Dynamic client registrations by scope and outcome.",
                &["scope", "outcome"],
            ),
            token_exchanges: counter(
                &r,
                "mssql_mcp_oauth_token_requests_total",
                "Token endpoint requests by scope, grant type and outcome.",
                &["scope", "grant_type", "outcome"],
            ),
            sign_in_failures: counter(
                &r,
                "mssql_mcp_oauth_sign_in_failures_total",
                "Failed sign-ins on the consent page by scope.",
                &["scope"],
            ),
            audit_dropped: plain_counter(
                "mssql_mcp_audit_dropped_total",
                "Audit records dropped because the writer fell behind.",
            ),
            audit_write_errors: plain_counter(
                "mssql_mcp_audit_write_errors_total",
                "Audit records that could not be written.",
            ),
            active_tokens: plain_gauge(
                "mssql_mcp_oauth_active_tokens",
                "Unexpired, unrevoked access tokens.",
            ),
            registered_clients: plain_gauge("mssql_mcp_oauth_clients", "Registered OAuth clients."),
            sessions: plain_gauge("mssql_mcp_mcp_sessions", "Live MCP sessions."),
            cache_entries: gauge(
                &r,
                "mssql_mcp_cache_entries",
                "Cached results by scope.",
                &["scope"],
            ),
            cache_hits: counter(
                &r,
                "mssql_mcp_cache_hits_total",
                "fetch lookups answered from the result cache, by scope.",
                &["scope"],
            ),
            cache_misses: counter(
                &r,
                "mssql_mcp_cache_misses_total",
                "fetch lookups the result cache could not answer, by scope.",
                &["scope"],
            ),
            pool_max: gauge(
                &r,
                "mssql_mcp_db_pool_max_connections",
                "Configured pool size by database.",
                &["database"],
            ),
            pool_open: gauge(
                &r,
                "mssql_mcp_db_pool_connections",
                "Open connections by database.",
                &["database"],
            ),
            pool_in_use: gauge(
                &r,
                "mssql_mcp_db_pool_connections_in_use",
                "Connections running a query, by database.",
                &["database"],
            ),
            pool_waits: counter(
                &r,
                "mssql_mcp_db_pool_waits_total",
                "Queries that had to wait for a free connection, by database.",
                &["database"],
            ),
            pool_opened: counter(
                &r,
                "mssql_mcp_db_pool_connections_opened_total",
                "Connections opened, by database.",
                &["database"],
            ),
            pool_discarded: counter(
                &r,
                "mssql_mcp_db_pool_connections_discarded_total",
                "Connections discarded as broken (timed out, lost, abandoned mid-stream), by database.",
                &["database"],
            ),
            connect_failures: counter(
                &r,
                "mssql_mcp_db_connect_failures_total",
                "Failed attempts to open a connection (the database down or refusing), by database.",
                &["database"],
            ),
            check_connections: counter(
                &r,
                "mssql_mcp_db_check_connections_total",
                "Connections the readiness check opened beside the pool, by database (SQL Server: while every pooled connection was busy and none had an answer in the last second).",
                &["database"],
            ),
            cancels: counter(
                &r,
                "mssql_mcp_db_cancels_total",
                "Requests left mid-way (timed out, abandoned mid-stream, or dropped by their caller) that the server was told to stop, by database and outcome (acknowledged, unacknowledged).",
                &["database", "outcome"],
            ),
            rate_limited: counter(
                &r,
                "mssql_mcp_rate_limited_total",
                "Requests refused by a rate limit, by bucket (ip, oauth, client).",
                &["bucket"],
            ),
            ip_denied: plain_counter(
                "mssql_mcp_ip_denied_total",
                "Requests refused by an IP allowlist.",
            ),
            streams_open: plain_gauge("mssql_mcp_sse_streams", "Open SSE streams."),
            connections_open: plain_gauge(
                "mssql_mcp_connections",
                "Open client connections (all listeners).",
            ),
            connections_refused: plain_counter(
                "mssql_mcp_connections_refused_total",
                "Client connections closed at accept by limits.max_connections or limits.max_connections_per_ip.",
            ),
            streams_refused: plain_counter(
                "mssql_mcp_sse_streams_refused_total",
                "SSE streams refused by the stream caps.",
            ),
            timed_out: plain_counter(
                "mssql_mcp_http_timeouts_total",
                "Requests that hit the request timeout.",
            ),
            acme_errors: plain_counter(
                "mssql_mcp_tls_errors_total",
                "Failed certificate orders, renewals or reloads.",
            ),
            cert_expiry: {
                register(&r, Box::new(cert_expiry.clone()));
                cert_expiry
            },
            registry: r,
            scrape: Mutex::new(()),
        }
    }

    /// The handles of one scope's tool (`tool` from the profile's list, or `unknown`).
    pub fn tool(&self, scope: &str, tool: &str) -> ToolMetrics {
        let c = |status: ToolStatus| {
            self.tool_calls
                .with_label_values(&[scope, tool, status.as_str()])
        };
        ToolMetrics {
            ok: c(ToolStatus::Ok),
            invalid: c(ToolStatus::Invalid),
            refused: c(ToolStatus::Refused),
            error: c(ToolStatus::Error),
            cancelled: c(ToolStatus::Cancelled),
            duration: self.tool_duration.with_label_values(&[scope, tool]),
        }
    }

    /// The query histograms of one database.
    pub fn db(&self, database: &str) -> DbMetrics {
        let h = |op: &str| self.db_duration.with_label_values(&[database, op]);
        DbMetrics {
            catalog: h("catalog"),
            query: h("query"),
            sample: h("sample"),
            lookup: h("lookup"),
            search: h("search"),
            ping: h("ping"),
        }
    }

    /// A registration attempt (`ok`, `invalid`, `limited`, `full`).
    pub fn registration(&self, scope: &str, outcome: &'static str) {
        self.registrations
            .with_label_values(&[scope, outcome])
            .inc();
    }

    /// A token request (`authorization_code`/`refresh_token`/`other`, `ok` or the error code).
    pub fn token_exchange(&self, scope: &str, grant_type: &str, outcome: &str) {
        let grant = match grant_type {
            "authorization_code" | "refresh_token" => grant_type,
            _ => "other",
        };
        let outcome = match outcome {
            "ok"
            | "invalid_request"
            | "invalid_client"
            | "invalid_grant"
            | "unauthorized_client"
            | "unsupported_grant_type"
            | "invalid_scope"
            | "invalid_target"
            | "server_error"
            | "temporarily_unavailable" => outcome,
            _ => "other",
        };
        self.token_exchanges
            .with_label_values(&[scope, grant, outcome])
            .inc();
    }

    pub fn sign_in_failure(&self, scope: &str) {
        self.sign_in_failures.with_label_values(&[scope]).inc();
    }

    /// Copies the numbers other parts keep into the registry, then renders the text format.
    pub fn render(&self, app: &AppState) -> String {
        {
            let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
            self.collect(app);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn collect(&self, app: &AppState) {
        fn sync(c: &IntCounter, total: u64) {
            let have = c.get();
            if total > have {
                c.inc_by(total - have);
            }
        }
        let edge = app.edge().report();
        sync(
            &self.rate_limited.with_label_values(&["ip"]),
            edge.limited_ip,
        );
        sync(
            &self.rate_limited.with_label_values(&["oauth"]),
            edge.limited_oauth,
        );
        sync(
            &self.rate_limited.with_label_values(&["client"]),
            edge.limited_client,
        );
        sync(&self.ip_denied, edge.denied);
        sync(&self.streams_refused, edge.streams_refused);
        sync(&self.timed_out, edge.timed_out);
        self.streams_open.set(edge.streams_open as i64);
        sync(&self.connections_refused, edge.connections_refused);
        self.connections_open.set(edge.connections_open as i64);
        sync(&self.acme_errors, edge.tls.errors);
        if let Some(t) = edge.tls.not_after {
            self.cert_expiry
                .with_label_values(&[edge.tls.mode])
                .set(t as f64);
        }
        self.sessions.set(app.sessions().len() as i64);
        if let Some(o) = app.oauth() {
            let (clients, tokens) = o.store.counts(crate::oauth::store::now_ms());
            self.registered_clients.set(clients as i64);
            self.active_tokens.set(tokens as i64);
        }
        let mut seen = Vec::new();
        for s in app.scopes() {
            let stats = s.cache.counts();
            self.cache_entries
                .with_label_values(&[&s.path])
                .set(stats.entries as i64);
            sync(&self.cache_hits.with_label_values(&[&s.path]), stats.hits);
            sync(
                &self.cache_misses.with_label_values(&[&s.path]),
                stats.misses,
            );
            if seen.contains(&&s.database) {
                continue;
            }
            seen.push(&s.database);
            if let Some(p) = s.db.pool_stats() {
                let db = [s.database.as_str()];
                self.pool_max.with_label_values(&db).set(p.max as i64);
                self.pool_open
                    .with_label_values(&db)
                    .set(p.connections as i64);
                self.pool_in_use.with_label_values(&db).set(p.in_use as i64);
                sync(&self.pool_waits.with_label_values(&db), p.waits);
                sync(&self.pool_opened.with_label_values(&db), p.created);
                sync(&self.pool_discarded.with_label_values(&db), p.discarded);
                sync(
                    &self.connect_failures.with_label_values(&db),
                    p.connect_failures,
                );
                sync(
                    &self.check_connections.with_label_values(&db),
                    p.check_connections,
                );
                for (outcome, n) in [
                    ("acknowledged", p.cancels_acknowledged),
                    ("unacknowledged", p.cancels_unacknowledged),
                ] {
                    sync(&self.cancels.with_label_values(&[&s.database, outcome]), n);
                }
            }
        }
    }

    /// Counts one HTTP request.
    fn http(&self, route: &str, method: &str, status: &str, secs: f64) {
        self.http_requests
            .with_label_values(&[route, method, status])
            .inc();
        self.http_duration.with_label_values(&[route]).observe(secs);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The matched route template, carried from inside the router to [`Tracking`] on the response.
#[derive(Clone)]
struct Route(MatchedPath);

/// Route layer ([`MarkRoute`]): copies the route template into the response for
/// [`Tracking`]. A service of its own rather than `from_fn`, which would box its future and
/// a clone of the route on every request.
#[derive(Clone, Copy, Default)]
pub struct MarkRouteLayer;

impl<S> tower::Layer<S> for MarkRouteLayer {
    type Service = MarkRoute<S>;
    fn layer(&self, inner: S) -> MarkRoute<S> {
        MarkRoute { inner }
    }
}

/// See [`MarkRouteLayer`].
#[derive(Clone)]
pub struct MarkRoute<S> {
    inner: S,
}

impl<S> tower::Service<Request> for MarkRoute<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Marked<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned().map(Route);
        Marked {
            inner: self.inner.call(req),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`MarkRoute`]'s future: the route's, with the template added to its response.
    pub struct Marked<F> {
        #[pin]
        inner: F,
        route: Option<Route>,
    }
}

impl<F, E> std::future::Future for Marked<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(route) = this.route.take() {
            resp.extensions_mut().insert(route);
        }
        std::task::Poll::Ready(Ok(resp))
    }
}

/// One request being counted: by route template, method and status, with the time to the
/// response head. Started by the outermost edge middleware, so requests the edge refuses
/// before routing are counted too.
pub struct Tracking {
    started: Instant,
    method: &'static str,
}

impl Tracking {
    pub fn start(req: &Request) -> Self {
        let method = match *req.method() {
            axum::http::Method::GET => "GET",
            axum::http::Method::POST => "POST",
            axum::http::Method::DELETE => "DELETE",
            axum::http::Method::OPTIONS => "OPTIONS",
            axum::http::Method::HEAD => "HEAD",
            axum::http::Method::PUT => "PUT",
            axum::http::Method::PATCH => "PATCH",
            _ => "other",
        };
        Self {
            started: Instant::now(),
            method,
        }
    }

    /// Records `resp` under its route template ([`MarkRoute`]), or `unmatched` when no route
    /// matched.
    /// Returns the time it recorded, for the request's log line.
    pub fn finish(self, app: &AppState, resp: &Response, unmatched: &'static str) -> Duration {
        let route = resp
            .extensions()
            .get::<Route>()
            .map(|r| r.0.as_str())
            .unwrap_or(unmatched);
        let took = self.started.elapsed();
        app.ops().metrics.http(
            route,
            self.method,
            resp.status().as_str(),
            took.as_secs_f64(),
        );
        took
    }
}
