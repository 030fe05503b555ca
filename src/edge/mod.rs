//! The edge: everything between the socket and the routes, so the binary can face the
//! internet on port 443 without NGINX or certbot.
//!
//! - [`tls`]: `acme`, `files` (reloadable PEM) or `off`; the optional plain-HTTP listener's
//!   redirects.
//! - [`acme`]: ACME mode (rustls-acme, TLS-ALPN-01 or HTTP-01): the cache, the retries, the
//!   resolver and acceptor that outlive rustls-acme's states, the HTTP-01 tokens.
//! - [`client_ip`]: the client IP and `X-Forwarded-Proto`, decided once per request (trusted
//!   proxies only).
//! - [`allowlist`]: CIDR allowlists, global and per scope, with named presets.
//! - [`rate_limit`]: per-IP, OAuth-endpoint and per-OAuth-client buckets (tower_governor).
//! - [`limits`]: handshake/idle timeouts per connection, SSE stream caps, request timeout.
//! - [`headers`]: HSTS (when the request arrived over https) and the other security headers on
//!   every response.
//! - [`config`]: `[tls]`, `[access]`, `[limits]` and their validation.
//!
//! - [`stack`]: the main listener's own middleware as two tower services, [`stack::Front`]
//!   and [`stack::Admit`], around the rate limits.
//!
//! `app.rs` stacks the middleware in one `ServiceBuilder` per listener (the plain-HTTP one gets
//! a smaller stack over the same connection handling); [`EdgeState`] is what they share. The
//! checks are plain functions ([`client_ip::decide_in`], [`allowlist::refusal`],
//! [`headers::apply`], [`limits::admit`]). On the main listener, the checks that need no
//! bucket run in two services around the rate limits, [`stack::Front`] outside and
//! [`stack::Admit`] inside, rather than in a layer each (see [`stack`] for what the layers
//! cost).

pub mod acme;
pub mod allowlist;
pub mod client_ip;
pub mod config;
pub mod headers;
pub mod limits;
pub mod rate_limit;
pub mod stack;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use allowlist::{Allowlists, IpSet};
use rate_limit::RateLimits;
use tls::TlsStatus;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the edge refused, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests refused by an IP allowlist (403).
    pub denied: Counter,
    /// Requests refused by the per-IP bucket (429).
    pub limited_ip: Counter,
    /// Requests refused by the OAuth-endpoint bucket (429).
    pub limited_oauth: Counter,
    /// Tool calls refused by the per-client bucket.
    pub limited_client: Counter,
    /// SSE streams refused by the per-IP or total cap.
    pub streams_refused: Counter,
    /// Requests that hit the request timeout (503).
    pub timed_out: Counter,
    /// Connections closed at accept by a connection cap.
    pub connections_refused: Counter,
}

/// A snapshot of the edge's numbers, for `/health` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    pub tls: tls::TlsReport,
    /// Seconds until the served certificate expires.
    pub cert_expires_in_secs: Option<i64>,
    pub denied: u64,
    pub limited_ip: u64,
    pub limited_oauth: u64,
    pub limited_client: u64,
    pub streams_open: usize,
    pub streams_refused: u64,
    pub timed_out: u64,
    pub connections_open: usize,
    pub connections_refused: u64,
}

/// Shared by the edge middleware and readable by health and metrics.
pub struct EdgeState {
    /// `server.trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: IpSet,
    /// `[access] allow` and each scope's `allow_ips`.
    pub allowlists: Allowlists,
    /// The three rate-limit buckets.
    pub rate_limits: RateLimits,
    /// Open SSE streams per IP and overall.
    pub streams: Arc<limits::Caps>,
    /// Open connections per IP and overall, shared by every listener's acceptor.
    pub connections: Arc<limits::ConnCaps>,
    /// `limits.request_timeout_secs`.
    pub request_timeout: Duration,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// When and what `Strict-Transport-Security` to send.
    pub hsts: headers::Hsts,
    /// Certificate state (ACME or files), updated by the TLS tasks.
    pub tls: Arc<TlsStatus>,
    /// Refusal counts.
    pub counters: Arc<Counters>,
    /// Allowlist refusals, logged as episodes.
    pub denials: allowlist::Denials,
}

impl EdgeState {
    /// Builds the edge from a validated configuration (entries that fail to parse, which
    /// validation rules out, are dropped rather than widening access: an empty list would
    /// allow everyone, so a list that fails keeps a never-matching entry).
    pub fn new(config: &Config) -> Self {
        let strict = |entries: &[String]| {
            IpSet::parse(entries).unwrap_or_else(|bad| {
                tracing::error!(entry = %bad, "unparsable allowlist entry; denying all");
                IpSet::parse(&["255.255.255.255/32".into()]).unwrap_or_default()
            })
        };
        let allowlists = Allowlists {
            global: strict(&config.access.allow),
            scopes: config
                .scopes
                .iter()
                .filter(|s| !s.allow_ips.is_empty())
                .map(|s| (s.path.clone(), strict(&s.allow_ips)))
                .collect(),
        };
        let counters = Arc::new(Counters::default());
        let trusted_proxies = IpSet::parse(&config.server.trusted_proxies).unwrap_or_default();
        Self {
            connections: Arc::new(limits::ConnCaps::new(
                connection_cap(config.limits.max_connections),
                config.limits.max_connections_per_ip,
                trusted_proxies.clone(),
                counters.clone(),
            )),
            trusted_proxies,
            allowlists,
            rate_limits: RateLimits::new(&config.limits, counters.clone()),
            streams: limits::Caps::new(config.limits.sse_total, config.limits.sse_per_ip),
            request_timeout: Duration::from_secs(config.limits.request_timeout_secs),
            max_body_bytes: config.server.max_body_bytes,
            hsts: headers::Hsts::new(config),
            tls: Arc::new(TlsStatus::new(config.tls.mode)),
            counters,
            denials: allowlist::Denials::default(),
        }
    }

    /// The per-OAuth-client bucket for tool calls; see [`RateLimits::check_client`].
    pub fn check_client(&self, client_id: &str) -> Result<(), rate_limit::RetryAfter> {
        self.rate_limits.check_client(client_id)
    }

    /// The per-IP bucket for a further message of a JSON-RPC batch; see
    /// [`RateLimits::check_ip`](rate_limit::RateLimits::check_ip).
    pub fn check_ip(&self, ip: std::net::IpAddr) -> Result<(), rate_limit::RetryAfter> {
        self.rate_limits.check_ip(ip)
    }

    /// Numbers for `/health` and `/metrics`.
    pub fn report(&self) -> EdgeReport {
        let tls = self.tls.report();
        EdgeReport {
            cert_expires_in_secs: tls.expires_in_secs(),
            tls,
            denied: self.counters.denied.get(),
            limited_ip: self.counters.limited_ip.get(),
            limited_oauth: self.counters.limited_oauth.get(),
            limited_client: self.counters.limited_client.get(),
            streams_open: self.streams.open(),
            streams_refused: self.counters.streams_refused.get(),
            timed_out: self.counters.timed_out.get(),
            connections_open: self.connections.open(),
            connections_refused: self.counters.connections_refused.get(),
        }
    }
}

/// `limits.max_connections`, fitted under this process's open-file limit (see
/// [`limits::fitted_connection_cap`]; `serve` and `demo` first raise the limit as far as the
/// hard limit allows), with a warning naming the key when it had to be lowered.
fn connection_cap(max_connections: u32) -> u32 {
    #[cfg(unix)]
    if let Ok((soft, _)) = rlimit::Resource::NOFILE.get() {
        let cap = limits::fitted_connection_cap(max_connections, soft);
        if cap < max_connections {
            tracing::warn!(
                configured = max_connections,
                cap,
                open_file_limit = soft,
                "limits.max_connections is lowered to fit the open-file limit; fix: raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) to {} or set limits.max_connections to {cap} or less",
                limits::fds_needed(max_connections)
            );
        }
        return cap;
    }
    max_connections
}

/// The edge's JSON refusal: `status` with `{"error": …, "reason": …}`.
pub(crate) fn refusal(status: StatusCode, error: &str, reason: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": error, "reason": reason})),
    )
        .into_response()
}
