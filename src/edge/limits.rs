//! Limits that keep one client from starving the others:
//!
//! - [`EdgeAcceptor`] wraps every accepted connection: the connection caps ([`ConnCaps`]:
//!   open connections per client IP and overall, so one client cannot take every file
//!   descriptor), a bounded TLS handshake, and an idle timeout that closes a connection with no
//!   bytes in either direction and no request in progress (HTTP/2 and HTTP/1 alike; hyper's
//!   header read timeout covers slow request heads);
//! - [`admit`], one middleware for three limits: concurrent long-lived SSE streams per client
//!   IP and overall, the request body size, and a bound on producing a response head, never
//!   applied to SSE streams (their bodies are not timed at all, only their head).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::EdgeState;
use super::client_ip::ClientIp;
use super::refusal;

/// Activity of one connection, shared by its IO wrapper and its service wrapper.
#[derive(Debug)]
pub struct Activity {
    /// When the connection was accepted (base of `last_ms`).
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last_ms: AtomicU64,
    /// Requests whose response head is not produced yet.
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A connection's IO with an idle timeout: when nothing moved for `idle` and no request is in
/// progress, reads end (EOF), so hyper closes the connection.
pub struct IdleIo<I> {
    inner: I,
    activity: Arc<Activity>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// The connection's place under the connection caps, given back when the IO is dropped.
    _slot: Option<ConnSlot>,
}

impl<I> IdleIo<I> {
    fn new(inner: I, activity: Arc<Activity>, idle: Duration, slot: Option<ConnSlot>) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(idle)),
            activity,
            idle,
            _slot: slot,
        }
    }

    /// `Ready` when the connection has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = if self.activity.in_flight.load(Ordering::Relaxed) > 0 {
                Instant::now() + self.idle
            } else {
                self.activity.last() + self.idle
            };
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.activity.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_idle(cx) {
                Poll::Ready(()) => {
                    tracing::debug!("closing idle connection");
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The per-connection service, counting requests in progress for the idle timeout.
#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    activity: Arc<Activity>,
}

struct InFlightGuard(Arc<Activity>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl<S, R> tower::Service<R> for InFlight<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlightGuard(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

/// Places counted per client address (an IPv6 client by its /64) and in total, each given back
/// when its [`Place`] is dropped: the one mechanism under the connection caps and the SSE
/// stream caps.
pub struct Caps {
    total_max: usize,
    per_ip_max: usize,
    state: Mutex<CapsState>,
}

#[derive(Default)]
struct CapsState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which cap refused a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Total,
    PerIp,
}

/// A place under [`Caps`]; given back when dropped.
pub struct Place {
    caps: Arc<Caps>,
    /// `None` for a place counted only in the total.
    ip: Option<IpAddr>,
}

impl Caps {
    pub fn new(total_max: u32, per_ip_max: u32) -> Arc<Self> {
        Arc::new(Self {
            total_max: total_max as usize,
            per_ip_max: per_ip_max as usize,
            state: Mutex::new(CapsState::default()),
        })
    }

    /// Places taken right now.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// A place for `ip` (`None`: counted only in the total), or the cap that is reached.
    pub fn take(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Place, Over> {
        let ip = ip.map(super::client_ip::limit_key);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.total >= self.total_max {
            return Err(Over::Total);
        }
        if let Some(ip) = ip {
            let n = state.per_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip_max {
                return Err(Over::PerIp);
            }
            *n += 1;
        }
        state.total += 1;
        Ok(Place {
            caps: self.clone(),
            ip,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.caps.state.lock().unwrap_or_else(|p| p.into_inner());
        state.total = state.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = state.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_ip.remove(&ip);
            }
        }
    }
}

/// Open connections per client IP and overall (`limits.max_connections_per_ip`,
/// `limits.max_connections`), counted from accept to close across every listener. A connection
/// over either cap is closed at once, before TLS or HTTP: it has cost one accept and nothing
/// else. Peers listed in `server.trusted_proxies` carry many clients and are held only to the
/// overall cap.
pub struct ConnCaps {
    caps: Arc<Caps>,
    exempt: super::allowlist::IpSet,
    /// Refusals logged as one episode, not one line per connection.
    refusing: Mutex<crate::ops::FailureRun>,
    refused: Arc<super::Counters>,
}

/// How often a run of refused connections is logged.
const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(60);

/// File descriptors kept for everything but client connections (listeners, database and
/// SQLite connections, the OAuth store, the audit file, ACME), up to half the limit.
const RESERVED_FDS: u64 = 256;

/// The open-file limit `max_connections` client connections need, with the server's own.
pub fn fds_needed(max_connections: u32) -> u64 {
    u64::from(max_connections) + RESERVED_FDS
}

/// The connection cap that fits an open-file limit of `soft`: `max_connections`, or fewer when
/// the limit cannot hold them beside the server's own descriptors. Past the cap a connection is
/// refused (counted, logged); past the descriptor limit it could not even be accepted, and
/// axum-server retries a failed accept silently every 50 ms.
pub fn fitted_connection_cap(max_connections: u32, soft: u64) -> u32 {
    let room = soft.saturating_sub(RESERVED_FDS.min(soft / 2)).max(1);
    room.min(u64::from(max_connections)) as u32
}

/// One open connection under the caps.
pub type ConnSlot = Place;

impl ConnCaps {
    pub fn new(
        total_max: u32,
        per_ip_max: u32,
        exempt: super::allowlist::IpSet,
        refused: Arc<super::Counters>,
    ) -> Self {
        Self {
            caps: Caps::new(total_max, per_ip_max),
            exempt,
            refusing: Mutex::new(crate::ops::FailureRun::default()),
            refused,
        }
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.caps.open()
    }

    /// A place for a connection from `peer`, or `None` when a cap is reached (counted and
    /// logged).
    pub fn take(&self, peer: IpAddr) -> Option<ConnSlot> {
        let taken = self
            .caps
            .take((!self.exempt.contains(peer)).then_some(peer));
        let mut refusing = self.refusing.lock().unwrap_or_else(|p| p.into_inner());
        let over = match taken {
            Ok(slot) => {
                if let Some((refused, lasted)) = refusing.ended() {
                    tracing::info!(
                        refused,
                        secs = lasted.as_secs(),
                        "connections accepted again after refusals at a connection cap"
                    );
                }
                return Some(slot);
            }
            Err(over) => over,
        };
        self.refused.connections_refused.inc();
        let failures = refusing
            .failed(std::time::Instant::now(), REFUSALS_LOG_EVERY)
            .to_log()?;
        drop(refusing);
        let key = match over {
            Over::Total => "limits.max_connections",
            Over::PerIp => "limits.max_connections_per_ip",
        };
        tracing::warn!(
            cap = key,
            client_ip = %peer,
            open = self.open(),
            refused = failures,
            "connection refused: a connection cap is reached (raise {key} if this is expected load)"
        );
        None
    }
}

/// Wraps an inner acceptor (none, rustls files, or ACME): the connection caps, TCP_NODELAY, the
/// idle timeout, and a deadline on whatever the inner acceptor does before HTTP starts (the TLS
/// handshake).
#[derive(Clone)]
pub struct EdgeAcceptor<A> {
    inner: A,
    caps: Arc<ConnCaps>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
}

impl<A> EdgeAcceptor<A> {
    pub fn new(
        inner: A,
        caps: Arc<ConnCaps>,
        handshake_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            caps,
            handshake_timeout,
            idle_timeout,
        }
    }
}

impl<A, S> Accept<TcpStream, S> for EdgeAcceptor<A>
where
    A: Accept<IdleIo<TcpStream>, InFlight<S>>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(A::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let slot = match stream.peer_addr() {
            Ok(peer) => match self.caps.take(peer.ip()) {
                Some(slot) => slot,
                // Dropping the stream closes the connection.
                None => {
                    return Box::pin(std::future::ready(Err(io::Error::other(
                        "connection cap reached",
                    ))));
                }
            },
            // The peer is already gone.
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = IdleIo::new(stream, activity.clone(), self.idle_timeout, Some(slot));
        let service = InFlight {
            inner: service,
            activity,
        };
        let fut = self.inner.accept(io, service);
        let deadline = self.handshake_timeout;
        Box::pin(async move {
            match tokio::time::timeout(deadline, fut).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "handshake took too long",
                )),
            }
        })
    }
}

/// Held while an SSE stream is open; gives its places back when the response body is dropped.
pub type StreamSlot = Place;

/// `GET …/sse`, or `GET …/mcp` whose `Accept` the handler takes as asking for a stream
/// ([`crate::mcp::streamable::get_accepts_stream`]: `text/event-stream` or `*/*`): a stream
/// that stays open.
pub fn opens_stream(req: &Request) -> bool {
    if req.method() != Method::GET {
        return false;
    }
    // Exactly `{scope}/sse` or `{scope}/mcp` (a scope path is one segment): a record page
    // whose id ends so (`{scope}/records/main.t/sse`, a row keyed `sse`) is an ordinary
    // request, with the request timeout.
    let mut segments = req.uri().path().trim_start_matches('/').split('/');
    let (Some(_scope), Some(last), None) = (segments.next(), segments.next(), segments.next())
    else {
        return false;
    };
    match last {
        "sse" => true,
        "mcp" => crate::mcp::streamable::get_accepts_stream(req.headers()),
        _ => false,
    }
}

/// The innermost of the edge's checks ([`super::stack::Admit`]) and the request timeout
/// ([`super::stack::Deadline`]), per request, in this order:
///
/// 1. the SSE stream caps: a request that opens a long-lived stream takes a slot per client IP
///    (429 when the address has too many) and one overall (503), held until its response body
///    is dropped;
/// 2. the body limit: 413 at once when `Content-Length` declares more than
///    `server.max_body_bytes`, otherwise as soon as the streamed body crosses it (handlers read
///    bodies through axum extractors, which answer 413 for a length-limit error);
/// 3. the request timeout: 503 ([`timed_out`]) when a response head takes longer than
///    `limits.request_timeout_secs`. Streams are not timed: their head comes at once and their
///    body may last for hours. This check sits inside the router, around each route, so a
///    request that times out is still counted under its route template (`ops::metrics`);
///    requests no route matches are answered at once.
///
/// This function makes checks 1 and 2 before the request moves on: the request to pass on
/// (its body limited) and the stream slot it took, or the refusal (boxed: refusals are rare
/// and a `Response` is large). [`answer`] ties the slot to the response.
pub fn admit(
    edge: &Arc<EdgeState>,
    req: Request,
) -> Result<(Request, Option<StreamSlot>), Box<Response>> {
    let slot = if opens_stream(&req) {
        match take_stream_slot(edge, ClientIp::of(&req)) {
            Ok(slot) => Some(slot),
            Err(status) => return Err(Box::new(too_many_streams(edge, status))),
        }
    } else {
        None
    };
    match limit_body(edge, req) {
        Ok(req) => Ok((req, slot)),
        Err(max) => Err(Box::new(too_large(max))),
    }
}

/// The response to a request [`admit`] let through, from `served` (the rest of the stack):
/// a stream's response with a body that holds `slot`, anything else as it comes.
pub async fn answer<F>(slot: Option<StreamSlot>, served: F) -> Response
where
    F: Future<Output = Response>,
{
    match slot {
        Some(slot) => hold_until_body_ends(served.await, slot),
        None => served.await,
    }
}

/// The answer to a request whose response head did not come within
/// `limits.request_timeout_secs` (check 3 of [`admit`]), counted.
pub fn timed_out(edge: &EdgeState) -> Response {
    edge.counters.timed_out.inc();
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "the request took too long",
    )
}

/// Middleware for the plain-HTTP listener: the body limit of [`admit`] alone (nothing there
/// opens a stream, and every handler answers at once from memory).
pub async fn body_limit(State(edge): State<Arc<EdgeState>>, req: Request, next: Next) -> Response {
    match limit_body(&edge, req) {
        Ok(req) => next.run(req).await,
        Err(max) => too_large(max),
    }
}

/// A stream slot for `ip`, or the status that refuses it: 503 when the server has no slot
/// left, 429 when the address has too many streams open.
fn take_stream_slot(edge: &EdgeState, ip: IpAddr) -> Result<StreamSlot, StatusCode> {
    edge.streams.take(Some(ip)).map_err(|over| match over {
        Over::Total => StatusCode::SERVICE_UNAVAILABLE,
        Over::PerIp => StatusCode::TOO_MANY_REQUESTS,
    })
}

fn too_many_streams(edge: &EdgeState, status: StatusCode) -> Response {
    edge.counters.streams_refused.inc();
    let reason = if status == StatusCode::TOO_MANY_REQUESTS {
        "too many open streams from this address"
    } else {
        "server stream limit reached"
    };
    let mut resp = refusal(status, "too_many_streams", reason);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    resp
}

/// The request with its body limited to `server.max_body_bytes`, or that limit when the
/// request's `Content-Length` already says more.
fn limit_body(edge: &EdgeState, req: Request) -> Result<Request, usize> {
    let max = edge.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(max);
    }
    Ok(req.map(|b| Body::new(http_body_util::Limited::new(b, max))))
}

fn too_large(max: usize) -> Response {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("request bodies are limited to {max} bytes"),
    )
}

/// `resp` with a body that keeps `slot` until it is dropped (the stream ended).
fn hold_until_body_ends(resp: Response, slot: StreamSlot) -> Response {
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        Body::new(SlotBody {
            inner: body,
            _slot: slot,
        }),
    )
}

/// A response body that holds a [`StreamSlot`] until it is dropped (the stream ended).
struct SlotBody {
    inner: Body,
    _slot: StreamSlot,
}

impl http_body::Body for SlotBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_connection_cap_fits_the_open_file_limit() {
        assert_eq!(fitted_connection_cap(16_384, 65_536), 16_384);
        assert_eq!(fitted_connection_cap(16_384, fds_needed(16_384)), 16_384);
        assert_eq!(fitted_connection_cap(16_384, 1024), 768);
        assert_eq!(fitted_connection_cap(16_384, 300), 150);
        assert_eq!(fitted_connection_cap(100, 300), 100);
        assert_eq!(fitted_connection_cap(16_384, 1), 1);
        assert_eq!(fitted_connection_cap(16_384, u64::MAX), 16_384);
    }

    /// Addresses no loopback test can come from: a trusted proxy is held only to the overall
    /// cap (tests/edge.rs covers the caps over real sockets).
    #[test]
    fn a_trusted_proxy_is_held_only_to_the_overall_cap() {
        let proxy = super::super::allowlist::IpSet::parse(&["10.0.0.1".into()]).expect("set");
        let counters = Arc::new(super::super::Counters::default());
        let caps = Arc::new(ConnCaps::new(3, 1, proxy, counters.clone()));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let a = caps.take(ip("192.0.2.1")).expect("first from an address");
        assert!(caps.take(ip("192.0.2.1")).is_none(), "per-IP cap");
        let p1 = caps.take(ip("10.0.0.1")).expect("proxy");
        let _p2 = caps
            .take(ip("10.0.0.1"))
            .expect("proxy, past the per-IP cap");
        assert!(caps.take(ip("198.51.100.7")).is_none(), "overall cap");
        assert_eq!((caps.open(), counters.connections_refused.get()), (3, 2));
        drop(p1);
        drop(a);
        assert!(caps.take(ip("198.51.100.7")).is_some());
        assert!(
            caps.take(ip("192.0.2.1")).is_some(),
            "its place was given back"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_reads_eof_after_the_idle_timeout() {
        let (a, mut b) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        let mut io = IdleIo::new(a, activity, Duration::from_millis(300), None);
        b.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        let started = Instant::now();
        assert_eq!(io.read(&mut buf).await.unwrap(), 0, "EOF once idle");
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_request_in_progress_keeps_the_connection_open() {
        let (a, _b) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut io = IdleIo::new(a, activity.clone(), Duration::from_millis(200), None);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_millis(700), io.read(&mut buf)).await;
        assert!(r.is_err(), "still open while a request runs");
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        let r = tokio::time::timeout(Duration::from_secs(2), io.read(&mut buf)).await;
        assert_eq!(r.expect("closes once idle").unwrap(), 0);
    }

    #[test]
    fn only_get_streams_are_long_lived() {
        let req = |m: Method, p: &str, accept: &str| {
            Request::builder()
                .method(m)
                .uri(p)
                .header(header::ACCEPT, accept)
                .body(Body::empty())
                .unwrap()
        };
        assert!(opens_stream(&req(Method::GET, "/claude/sse", "*/*")));
        assert!(opens_stream(&req(
            Method::GET,
            "/claude/mcp",
            "text/event-stream"
        )));
        assert!(!opens_stream(&req(
            Method::POST,
            "/claude/mcp",
            "application/json, text/event-stream"
        )));
        assert!(!opens_stream(&req(Method::GET, "/health", "*/*")));
        // A record whose key is `sse` or `mcp` is a page, timed like any request.
        assert!(!opens_stream(&req(
            Method::GET,
            "/claude/records/main.t/sse",
            "*/*"
        )));
        assert!(!opens_stream(&req(
            Method::GET,
            "/claude/records/main.t/mcp",
            "*/*"
        )));
        // A scope may be called `records`: its streams are streams.
        assert!(opens_stream(&req(Method::GET, "/records/sse", "*/*")));
    }
}
