//! Rate limits with tower_governor (GCRA buckets, lock-free per key):
//!
//! - every request, per client IP ([`per_ip_layer`]);
//! - OAuth endpoints (`/register`, `/authorize`, `/token`, `/sign-in` at the root or under any
//!   scope), a stricter bucket per client IP on top ([`OAuthBucketLayer`]): slows password and
//!   code guessing;
//! - tool calls (and record pages, each a `fetch`) per OAuth client or user, through
//!   [`charge_tool_call`], which the MCP layer calls once it knows who is calling.
//!
//! A limited request gets 429 with `Retry-After` (whole seconds, rounded up, so a client that
//! waits that long is admitted) and is counted.
//! Buckets are keyed by the [`ClientIp`] decided earlier, so one flooding address drains only
//! its own bucket. Idle keys are dropped by [`RateLimits::sweep`], run by an owned task.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use futures::future::Either;
use governor::middleware::NoOpMiddleware;
use tower::{Layer, Service};
use tower_governor::governor::{Governor, GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use super::Counters;
use super::client_ip::ClientIp;
use super::config::LimitsConfig;

/// Last path segments that are OAuth endpoints, at the root or under a scope.
pub const OAUTH_ENDPOINTS: [&str; 4] = ["register", "authorize", "token", "sign-in"];

/// Whether `path` is an OAuth endpoint: `/token` or `/{scope}/token` (and the others).
pub fn is_oauth_path(path: &str) -> bool {
    let mut segs = path.trim_end_matches('/').split('/').skip(1);
    let (first, second) = (segs.next(), segs.next());
    let last = match (first, second, segs.next()) {
        (Some(last), None, _) | (Some(_), Some(last), None) => last,
        _ => return false,
    };
    OAUTH_ENDPOINTS.contains(&last)
}

/// Keys requests by the [`ClientIp`] in their extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientIpKey;

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;
    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        Ok(super::client_ip::limit_key(ClientIp::of(req)))
    }
}

/// Key for the per-OAuth-client bucket; checked by id through [`RateLimits::check_client`],
/// never extracted from a request.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdKey;

impl KeyExtractor for ClientIdKey {
    type Key = String;
    fn extract<T>(&self, _req: &Request<T>) -> Result<String, GovernorError> {
        Err(GovernorError::UnableToExtractKey)
    }
}

type IpConfig = GovernorConfig<ClientIpKey, NoOpMiddleware>;
type ClientConfig = GovernorConfig<ClientIdKey, NoOpMiddleware>;

/// The three buckets.
pub struct RateLimits {
    per_ip: Arc<IpConfig>,
    oauth: Arc<IpConfig>,
    client: Arc<ClientConfig>,
    counters: Arc<Counters>,
}

/// A tool call refused by the per-client bucket: retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, at least 1.
    pub fn secs(&self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

fn period(per: Duration, count: u32) -> Duration {
    (per / count.max(1)).max(Duration::from_nanos(1))
}

/// A bucket refilling one request per `period`, holding at most `burst`.
fn bucket<K: KeyExtractor>(
    key: K,
    period: Duration,
    burst: u32,
) -> GovernorConfig<K, NoOpMiddleware> {
    let mut builder = GovernorConfigBuilder::default().key_extractor(key);
    builder.period(period).burst_size(burst.max(1));
    match builder.finish() {
        Some(config) => config,
        // `finish` refuses only a zero period or burst; `period` and `max(1)` rule both out.
        None => unreachable!("a non-zero period and burst make a valid quota"),
    }
}

impl RateLimits {
    pub fn new(limits: &LimitsConfig, counters: Arc<Counters>) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            per_ip: Arc::new(bucket(
                ClientIpKey,
                period(Duration::from_secs(1), limits.per_ip_per_sec),
                limits.per_ip_burst,
            )),
            oauth: Arc::new(bucket(
                ClientIpKey,
                period(minute, limits.oauth_per_min),
                limits.oauth_burst,
            )),
            client: Arc::new(bucket(
                ClientIdKey,
                period(minute, limits.client_per_min),
                limits.client_burst,
            )),
            counters,
        }
    }

    /// The per-OAuth-client (or per-user) bucket for tool calls. Call it with the client id once
    /// the bearer token is checked; on `Err`, answer 429 with `Retry-After: secs()`.
    pub fn check_client(&self, client_id: &str) -> Result<(), RetryAfter> {
        let verdict = self.client.limiter().check_key(&client_id.to_string());
        counted(verdict, &self.counters.limited_client)
    }

    /// The per-IP bucket, charged once more for a message past the first of a JSON-RPC batch
    /// (the layer charged the POST itself); on `Err`, the message is refused.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        // The layer's key: an IPv6 client by its /64, so changing the address within it does
        // not open a bucket of its own.
        counted(
            self.per_ip
                .limiter()
                .check_key(&super::client_ip::limit_key(ip)),
            &self.counters.limited_ip,
        )
    }

    /// The per-IP layer for the middleware stack.
    pub fn per_ip_layer(&self) -> GovernorLayer<ClientIpKey, NoOpMiddleware, Body> {
        let counters = self.counters.clone();
        GovernorLayer::new(self.per_ip.clone()).error_handler(move |e| {
            counters.limited_ip.inc();
            too_many(e)
        })
    }

    /// The OAuth-endpoint layer for the middleware stack.
    pub fn oauth_layer(&self) -> OAuthBucketLayer {
        OAuthBucketLayer {
            config: self.oauth.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Forgets keys whose buckets are full again (bounded memory under address churn).
    pub fn sweep(&self) {
        for l in [self.per_ip.limiter(), self.oauth.limiter()] {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.client.limiter().retain_recent();
        self.client.limiter().shrink_to_fit();
    }
}

/// The per-client bucket applied to one MCP request: `Some(429)` when `req` is a `tools/call`
/// and its OAuth client (or, without one, its user) has used up its bucket. Requests without
/// an authenticated caller (authentication off) are not counted.
pub fn limit_tool_call(
    app: &crate::state::AppState,
    caller: &crate::mcp::dispatch::Caller,
    req: &crate::mcp::protocol::Request,
) -> Option<Response<Body>> {
    let (err, secs) = tool_call_refusal(app, caller, req)?;
    let mut resp = crate::mcp::rpc_error_response(Some(&req.id), &err);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Some(resp)
}

/// [`limit_tool_call`]'s verdict as a JSON-RPC error (429) and the seconds to wait, for a
/// message of a JSON-RPC batch, which is answered in the batch's array.
pub fn tool_call_refusal(
    app: &crate::state::AppState,
    caller: &crate::mcp::dispatch::Caller,
    req: &crate::mcp::protocol::Request,
) -> Option<(crate::mcp::protocol::RpcError, u64)> {
    if req.method != "tools/call" {
        return None;
    }
    let wait = charge_tool_call(app, caller)?;
    let err = crate::mcp::protocol::RpcError::refused(
        StatusCode::TOO_MANY_REQUESTS,
        tool_calls_limited(wait),
    );
    Some((err, wait.secs()))
}

/// Charges one tool call of `caller` to its per-client bucket: `Some` wait when the bucket is
/// used up and the call must be refused. For every way of doing a tool's work: a `tools/call`
/// ([`tool_call_refusal`]) and a record page, which is a `fetch` (`mcp::records`), so that a
/// token cannot read records faster than it may call tools. Callers without an authenticated
/// user or client (authentication off) are not counted.
pub fn charge_tool_call(
    app: &crate::state::AppState,
    caller: &crate::mcp::dispatch::Caller,
) -> Option<RetryAfter> {
    // One bucket per client and person: every browser signed in to record pages shares the
    // viewer pseudo-client's id, and every user of an app that identifies itself by a client
    // ID metadata document shares that document's URL; keyed by the id alone, one person
    // would use up everyone's calls.
    let key = match (caller.client_id.as_deref(), caller.user.as_deref()) {
        (Some(id), Some(user)) => std::borrow::Cow::Owned(format!("{id}/{user}")),
        (Some(id), None) => std::borrow::Cow::Borrowed(id),
        (None, user) => std::borrow::Cow::Borrowed(user?),
    };
    app.edge().check_client(&key).err()
}

/// What a caller refused by [`charge_tool_call`] is told.
pub fn tool_calls_limited(wait: RetryAfter) -> String {
    format!(
        "Rate limited: too many tool calls from this client; retry after {} s",
        wait.secs()
    )
}

/// A bucket's verdict as [`RetryAfter`], with a refusal counted in `limited`.
fn counted(
    verdict: Result<(), governor::NotUntil<governor::clock::QuantaInstant>>,
    limited: &super::Counter,
) -> Result<(), RetryAfter> {
    verdict.map_err(|not_until| {
        limited.inc();
        let clock = governor::clock::DefaultClock::default();
        RetryAfter(not_until.wait_time_from(governor::clock::Clock::now(&clock)))
    })
}

/// 429 with `Retry-After` and a short JSON body.
pub fn too_many_after(secs: u64) -> Response<Body> {
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(serde_json::json!({
            "error": "rate_limited",
            "reason": "too many requests",
            "retry_after_secs": secs
        })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn too_many(e: GovernorError) -> Response<Body> {
    match e {
        // tower_governor truncates the wait to whole seconds, so the true wait is up to a second
        // longer than `wait_time`: one more second, so that a client that waits as told is
        // admitted (and is never told "0").
        GovernorError::TooManyRequests { wait_time, .. } => {
            too_many_after(wait_time.saturating_add(1))
        }
        other => {
            tracing::error!(error = %other, "rate limiter failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"error": "internal error"})),
            )
                .into_response()
        }
    }
}

/// Applies the OAuth bucket to OAuth endpoints only; other requests pass straight through.
#[derive(Clone)]
pub struct OAuthBucketLayer {
    config: Arc<IpConfig>,
    counters: Arc<Counters>,
}

impl<S: Clone> Layer<S> for OAuthBucketLayer {
    type Service = OAuthBucket<S>;
    fn layer(&self, inner: S) -> Self::Service {
        let counters = self.counters.clone();
        let limited = Governor::new(inner.clone(), &self.config).error_handler(move |e| {
            counters.limited_oauth.inc();
            too_many(e)
        });
        OAuthBucket {
            plain: inner,
            limited,
        }
    }
}

/// See [`OAuthBucketLayer`].
#[derive(Clone)]
pub struct OAuthBucket<S> {
    plain: S,
    limited: Governor<ClientIpKey, NoOpMiddleware, S, Body>,
}

impl<S> Service<Request<Body>> for OAuthBucket<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        <Governor<ClientIpKey, NoOpMiddleware, S, Body> as Service<Request<Body>>>::Future,
    >;

    /// Ready when both paths are: either may take the request.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.plain.poll_ready(cx))?;
        self.limited.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if is_oauth_path(req.uri().path()) {
            Either::Right(self.limited.call(req))
        } else {
            Either::Left(self.plain.call(req))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_paths_are_recognised_at_the_root_and_under_scopes() {
        for p in [
            "/token",
            "/register",
            "/chatgpt/authorize",
            "/claude/sign-in",
            "/chatgpt/token/",
        ] {
            assert!(is_oauth_path(p), "{p}");
        }
        for p in [
            "/chatgpt/mcp",
            "/health",
            "/a/b/token",
            "/tokens",
            "/",
            "",
            "//",
            "/a//token",
        ] {
            assert!(!is_oauth_path(p), "{p}");
        }
    }

    /// A batch's further messages draw on the same bucket the layer charged: an IPv6
    /// client's /64, whatever address in it each message comes from.
    #[test]
    fn batch_messages_draw_on_the_layers_bucket_for_the_whole_slash_64() {
        let config = crate::config::Config::parse(
            "[[database]]\nname = \"m\"\nkind = \"sqlite\"\npath = \"/tmp/x.db\"\n\n[[scope]]\npath = \"/c\"\ndatabase = \"m\"\n\n[limits]\nper_ip_per_sec = 1\nper_ip_burst = 2\n",
        )
        .expect("valid");
        let limits = RateLimits::new(&config.limits, Arc::new(Counters::default()));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(limits.check_ip(ip("2001:db8:1:2::1")).is_ok());
        assert!(limits.check_ip(ip("2001:db8:1:2::2")).is_ok());
        assert!(
            limits.check_ip(ip("2001:db8:1:2::3")).is_err(),
            "a third address of the /64 finds the bucket empty"
        );
        assert!(
            limits.check_ip(ip("2001:db8:1:3::1")).is_ok(),
            "another /64"
        );
    }

    #[test]
    fn tool_calls_are_limited_per_oauth_client_with_retry_after() {
        let config = crate::config::Config::parse(
            "[[database]]\nname = \"m\"\nkind = \"sqlite\"\npath = \"/tmp/x.db\"\n\n[[scope]]\npath = \"/c\"\ndatabase = \"m\"\n\n[limits]\nclient_per_min = 1\nclient_burst = 1\n",
        )
        .expect("valid");
        let ops = std::sync::Arc::new(crate::ops::Ops::new(&config));
        let app = crate::state::AppState::new(config, Vec::new(), false, ops);
        let caller = |id: &str| crate::mcp::dispatch::Caller {
            user: Some("ann".into()),
            client_id: Some(id.into()),
            ip: None,
        };
        let call = crate::mcp::protocol::Request {
            id: serde_json::json!(1),
            method: "tools/call".into(),
            params: serde_json::json!({}),
        };
        assert!(limit_tool_call(&app, &caller("a"), &call).is_none());
        let limited = limit_tool_call(&app, &caller("a"), &call).expect("second call limited");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limited.headers().contains_key(header::RETRY_AFTER));
        assert!(
            limit_tool_call(&app, &caller("b"), &call).is_none(),
            "per client"
        );
        // And per person: another user of the same client (a client ID metadata document is
        // one id for all its users) has a bucket of their own.
        let bob = crate::mcp::dispatch::Caller {
            user: Some("bob".into()),
            ..caller("a")
        };
        assert!(limit_tool_call(&app, &bob, &call).is_none(), "per person");
        let list = crate::mcp::protocol::Request {
            method: "tools/list".into(),
            ..call.clone()
        };
        assert!(
            limit_tool_call(&app, &caller("a"), &list).is_none(),
            "only tool calls"
        );
        let anonymous = crate::mcp::dispatch::Caller {
            user: None,
            client_id: None,
            ip: None,
        };
        assert!(limit_tool_call(&app, &anonymous, &call).is_none());
        // Record pages draw on the same buckets: client `b` has used its one call above.
        assert!(charge_tool_call(&app, &caller("b")).is_some());
        // A browser's record pages: one bucket per person, not one for every browser.
        let viewer = |user: &str| crate::mcp::dispatch::Caller {
            user: Some(user.into()),
            client_id: Some(crate::oauth::viewer::VIEWER_CLIENT.into()),
            ip: None,
        };
        assert!(charge_tool_call(&app, &viewer("ann")).is_none());
        assert!(charge_tool_call(&app, &viewer("ann")).is_some());
        assert!(charge_tool_call(&app, &viewer("bob")).is_none());
    }

    #[test]
    fn the_client_bucket_refuses_past_its_burst_with_a_wait() {
        let limits = LimitsConfig {
            client_per_min: 60,
            client_burst: 2,
            ..LimitsConfig::default()
        };
        let rl = RateLimits::new(&limits, Arc::new(Counters::default()));
        assert!(rl.check_client("a").is_ok());
        assert!(rl.check_client("a").is_ok());
        let err = rl.check_client("a").unwrap_err();
        assert!(err.secs() >= 1 && err.secs() <= 2, "{err:?}");
        assert!(
            rl.check_client("b").is_ok(),
            "other clients keep their bucket"
        );
    }
}
