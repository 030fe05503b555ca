//! The main listener's own middleware, written as two tower services that sit around the
//! rate limits: [`Front`] outside them and [`Admit`] inside them (`app::router` stacks them),
//! and the request timeout, [`Deadline`], around each route inside the router. The plain-HTTP
//! listener has a [`Front`] too (`app::plain_router`).
//!
//! Until session 8 the same work was done by five layers: tower-http's request-id, propagate
//! and trace layers, and two `axum::middleware::from_fn` layers. Each of the five had a future
//! of its own. On every request, each `from_fn` layer also boxed a clone of the whole stack
//! below it. On W1 (a one-row `execute_sql`), a build with no middleware at all (a
//! measurement, not a configuration) spent about 15% less CPU per request. With these two
//! services instead of the five layers, the server spends about 7% less (`benches/README.md`,
//! session 8).
//!
//! Each service makes its checks and calls the service below it (which was polled ready) in
//! `call`, and returns one boxed future that only waits for the answer: no clone of the stack
//! below, no second future around it. The checks themselves stay plain functions in their own
//! modules:
//!
//! - [`super::client_ip::decide_in`];
//! - [`super::allowlist::refusal`];
//! - [`super::headers::apply`];
//! - [`super::limits::admit`], [`super::limits::answer`] and [`super::limits::timed_out`];
//! - `ops::metrics::Tracking`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::HeaderName;
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Instrument;

use super::EdgeState;
use crate::ops::metrics::{PLAIN_HTTP, Tracking, UNMATCHED};
use crate::ops::request_id::RequestIds;
use crate::state::AppState;

/// The future both services return: one box per request.
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The request id header, read from the request and copied to the response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The log target of the start and end of each request.
const REQUEST_LOG: &str = "mssql_mcp::request";

/// Which listener a [`Front`] serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The main listener: the `request` span, the allowlists, HSTS.
    Main,
    /// The plain-HTTP listener (redirects, HTTP-01): the `plain_http` span; requests no route
    /// matched are counted as `plain-http`; no allowlist here (it wraps the redirect route
    /// alone, so the CA reaches the challenge) and never HSTS over plain HTTP (browsers
    /// ignore it there, RFC 6797 §7.2).
    PlainHttp,
}

/// Builds [`Front`].
#[derive(Clone)]
pub struct FrontLayer {
    app: AppState,
    ids: RequestIds,
    listener: Listener,
}

impl FrontLayer {
    /// For the main listener.
    pub fn new(app: AppState) -> Self {
        Self {
            app,
            ids: RequestIds::new(),
            listener: Listener::Main,
        }
    }

    /// For the plain-HTTP listener (see [`Listener::PlainHttp`] for what differs).
    pub fn plain_http(app: AppState) -> Self {
        Self {
            listener: Listener::PlainHttp,
            ..Self::new(app)
        }
    }
}

impl<S> Layer<S> for FrontLayer {
    type Service = Front<S>;
    fn layer(&self, inner: S) -> Front<S> {
        Front {
            inner,
            app: self.app.clone(),
            ids: self.ids.clone(),
            listener: self.listener,
        }
    }
}

/// The outermost middleware on both listeners. It handles each request in this order:
///
/// 1. **Request id.** It keeps the request's `x-request-id` or gives it one
///    ([`RequestIds`]), and copies the id to the response unless the response already has
///    one.
/// 2. **Trace span.** It opens the `request` span (`method`, `path`, `request_id`) around
///    everything below, including refusals. Under the target `mssql_mcp::request`, it logs
///    the start and the end of each request at DEBUG, and responses with a 5xx status at ERROR
///    (as tower-http's `TraceLayer` did by default).
/// 3. **Metrics.** It starts counting the request for `http_requests_total` and the duration
///    histogram. Refusals below are counted too, by route template, method and status.
/// 4. **Client IP.** It decides the client IP once ([`super::client_ip`]); everything below
///    reads it from the request's extensions.
/// 5. **Allowlist.** It refuses (403) an address the allowlists do not admit
///    ([`super::allowlist`]) before that address costs anything else, not even a rate-limit
///    bucket entry. (Main listener only.)
/// 6. **Security headers.** On the way back, it adds them ([`super::headers`]) to every
///    response, refusals from any layer below included. HSTS is added when the request
///    arrived over https (main listener only).
#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    app: AppState,
    ids: RequestIds,
    listener: Listener,
}

impl<S> Service<Request> for Front<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> BoxFuture {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) => v.clone(),
            None => {
                let v = self.ids.next();
                req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
                v
            }
        };
        let (method, path) = (req.method(), req.uri().path());
        let request_id = id.to_str().unwrap_or("-");
        let main = self.listener == Listener::Main;
        let span = if main {
            tracing::info_span!("request", %method, path, request_id)
        } else {
            tracing::info_span!("plain_http", %method, path, request_id)
        };
        let tracking = Tracking::start(&req);
        // The checks, and the call to the service below (which was polled ready), happen now;
        // the future only waits for the answer.
        let (hsts, outcome) = {
            let _entered = span.enter();
            tracing::debug!(target: REQUEST_LOG, "started processing request");
            let edge = self.app.edge();
            super::client_ip::decide_in(edge, &mut req);
            let hsts = main
                .then(|| {
                    let client = req.extensions().get::<super::client_ip::ClientIp>();
                    edge.hsts.for_request(client).cloned()
                })
                .flatten();
            let refused = main
                .then(|| super::allowlist::refusal(edge, &req))
                .flatten();
            let outcome = match refused {
                Some(refused) => Err(refused),
                None => Ok(self.inner.call(req)),
            };
            (hsts, outcome)
        };
        let app = self.app.clone();
        let answered = async move {
            let mut resp = match outcome {
                Err(refused) => refused,
                Ok(served) => {
                    let Ok(resp) = served.await;
                    resp
                }
            };
            super::headers::apply(resp.headers_mut(), hsts);
            if !resp.headers().contains_key(&X_REQUEST_ID) {
                resp.headers_mut().insert(X_REQUEST_ID.clone(), id);
            }
            let took = tracking.finish(&app, &resp, if main { UNMATCHED } else { PLAIN_HTTP });
            let (status, latency_ms) = (resp.status().as_u16(), took.as_millis() as u64);
            if resp.status().is_server_error() {
                tracing::error!(target: REQUEST_LOG, status, latency_ms, "response failed");
            } else {
                tracing::debug!(target: REQUEST_LOG, status, latency_ms, "finished processing request");
            }
            Ok(resp)
        };
        Box::pin(answered.instrument(span))
    }
}

/// Builds [`Admit`].
#[derive(Clone)]
pub struct AdmitLayer {
    edge: Arc<EdgeState>,
}

impl AdmitLayer {
    pub fn new(edge: Arc<EdgeState>) -> Self {
        Self { edge }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            edge: self.edge.clone(),
        }
    }
}

/// The innermost middleware on the main listener: the stream caps and the body limit, as
/// [`super::limits::admit`] describes (the request timeout is [`Deadline`], inside the
/// router).
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    edge: Arc<EdgeState>,
}

impl<S> Service<Request> for Admit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> BoxFuture {
        let (req, slot) = match super::limits::admit(&self.edge, req) {
            Ok(admitted) => admitted,
            Err(refused) => return Box::pin(std::future::ready(Ok(*refused))),
        };
        let served = self.inner.call(req);
        Box::pin(async move {
            let served = async move {
                let Ok(resp) = served.await;
                resp
            };
            Ok(super::limits::answer(slot, served).await)
        })
    }
}

/// Builds [`Deadline`].
#[derive(Clone)]
pub struct DeadlineLayer {
    edge: Arc<EdgeState>,
}

impl DeadlineLayer {
    pub fn new(edge: Arc<EdgeState>) -> Self {
        Self { edge }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            edge: self.edge.clone(),
        }
    }
}

/// The request timeout (check 3 of [`super::limits::admit`]): a 503 when a response head
/// takes longer than `limits.request_timeout_secs`; streams are not timed.
///
/// A route layer, inside the router, rather than part of [`Admit`]: the route template is
/// only known once the router has matched, and `ops::metrics::MarkRoute` (around this) puts
/// it on the 503 too, so a request that times out is counted under its route (in [`Admit`],
/// outside the router, every timeout was counted as `unmatched`). No box: its future is
/// [`Timed`].
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    edge: Arc<EdgeState>,
}

impl<S> Service<Request> for Deadline<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Timed<S::Future> {
        if super::limits::opens_stream(&req) {
            return Timed::Unbounded {
                inner: self.inner.call(req),
            };
        }
        Timed::Bounded {
            inner: tokio::time::timeout(self.edge.request_timeout, self.inner.call(req)),
            edge: self.edge.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Deadline`]'s future: the route's, within the request timeout unless it opens a stream.
    #[project = TimedProj]
    pub enum Timed<F> {
        Bounded {
            #[pin]
            inner: tokio::time::Timeout<F>,
            edge: Arc<EdgeState>,
        },
        Unbounded {
            #[pin]
            inner: F,
        },
    }
}

impl<F> Future for Timed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TimedProj::Unbounded { inner } => inner.poll(cx),
            TimedProj::Bounded { inner, edge } => match std::task::ready!(inner.poll(cx)) {
                Ok(answered) => Poll::Ready(answered),
                Err(_elapsed) => Poll::Ready(Ok(super::limits::timed_out(edge))),
            },
        }
    }
}
