//! MCP sessions of the 2025 revisions (Streamable HTTP) and of the older HTTP+SSE transport.
//!
//! A session is created by `initialize` (or by opening a legacy `/sse` stream), named by an
//! unguessable id, bound to the scope that created it, and ended by `DELETE`, by its SSE
//! stream closing, or by idling past `server.session_idle_secs`. An ended id answers 404. The
//! 2026-07-28 revision has no sessions and never touches this store.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::RngExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// One live session.
pub struct Session {
    pub id: String,
    /// Path of the scope that created it; a session is never valid in another scope.
    pub scope: String,
    /// Negotiated protocol version (set by `initialize`; legacy SSE sessions get it later).
    pub version: OnceLock<&'static str>,
    /// Milliseconds since the store's epoch when the session was last used.
    last_seen: AtomicU64,
    /// Its streams open now ([`Session::stream_opened`]); a session with one is in use.
    streams: AtomicUsize,
    /// Its requests running now, by id, so that `notifications/cancelled` can stop one
    /// ([`Session::track`]). The number tells one request from a later one that reused its id.
    /// A list under a lock: a session runs a few requests at once, and an empty `Vec` costs
    /// nothing to make (a map per session would allocate for each of thousands of sessions).
    running: std::sync::Mutex<Vec<RunningEntry>>,
    /// Legacy HTTP+SSE transport: where responses to POSTed messages go.
    pub outbox: Option<Outbox>,
    /// Cancelled when the session ends, closing its GET streams.
    pub closed: CancellationToken,
    /// Who opened it (signed-in user and OAuth client), when authentication is on; nobody
    /// else may use it (see `oauth::bearer::may_use`).
    pub owner: OnceLock<String>,
    /// Whose quota it counts against ([`holder_of`]).
    holder: String,
}

impl Session {
    /// Counts a stream of the session as open until the guard drops. A client holding a
    /// stream open is using its session even when it POSTs nothing: the reaper does not end
    /// it, and its idle time starts when its last stream closes.
    pub fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// Registers request `id` as running until the returned guard drops; its token is
    /// cancelled if the client sends `notifications/cancelled` for it meanwhile.
    pub fn track(self: &Arc<Self>, id: &serde_json::Value) -> Running {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.running_list().push((id.clone(), seq, token.clone()));
        Running {
            session: self.clone(),
            seq,
            token,
        }
    }

    /// A `notifications/cancelled` for request `id`: stops it if it is still running (2025-03-26
    /// on, "Cancellation"). An unknown or finished id is ignored, as the revisions ask.
    pub fn cancel(&self, id: &serde_json::Value) {
        for (running, _, token) in self.running_list().iter() {
            if running == id {
                token.cancel();
            }
        }
    }

    fn running_list(&self) -> std::sync::MutexGuard<'_, Vec<RunningEntry>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running request of a session: its id, the number that tells it from a later request
/// reusing the id, and the token `notifications/cancelled` cancels.
type RunningEntry = (serde_json::Value, u64, CancellationToken);

/// A request of a session while it runs ([`Session::track`]).
pub struct Running {
    session: Arc<Session>,
    seq: u64,
    /// Cancelled when the client cancels the request.
    pub token: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.session
            .running_list()
            .retain(|(_, seq, _)| *seq != self.seq);
    }
}

/// One open stream of a session ([`Session::stream_opened`]).
pub struct OpenStream(Arc<Session>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes of replies a legacy SSE session may have waiting for its stream to take them. A client
/// that stops reading holds at most this much (plus the socket's buffers), not 64 replies of
/// any size; its next reply then waits, and after 10 s ends the session.
pub const OUTBOX_BYTES: usize = 1 << 20;

/// A legacy session's queue of replies, bounded in count and in bytes.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<(String, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
    budget: usize,
}

/// The stream side of an [`Outbox`]: each reply comes with the bytes it holds, given back
/// when the reply is taken off the queue to become an event on the stream.
pub type OutboxReceiver = mpsc::Receiver<(String, OwnedSemaphorePermit)>;

impl Outbox {
    /// A queue of up to `count` replies and `budget` bytes.
    pub fn new(count: usize, budget: usize) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(count.max(1));
        let budget = budget.clamp(1, Semaphore::MAX_PERMITS);
        let outbox = Outbox {
            tx,
            bytes: Arc::new(Semaphore::new(budget)),
            budget,
        };
        (outbox, rx)
    }

    /// Queues `reply`, waiting while the queue is full (a reply larger than the budget waits
    /// for the whole budget); `Err` once the stream is gone.
    pub async fn send(&self, reply: String) -> Result<(), ()> {
        let need = u32::try_from(reply.len().clamp(1, self.budget)).unwrap_or(u32::MAX);
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(need)
            .await
            .map_err(|_| ())?;
        self.tx.send((reply, permit)).await.map_err(|_| ())
    }
}

/// The quota key of a caller's sessions: the signed-in user, or without authentication the
/// client's address (an IPv6 client by its /64).
pub fn holder_of(caller: &crate::mcp::dispatch::Caller) -> String {
    match (&caller.user, caller.ip) {
        (Some(user), _) => format!("user:{user}"),
        (None, Some(ip)) => format!("ip:{}", crate::edge::client_ip::limit_key(ip)),
        (None, None) => "anonymous".to_string(),
    }
}

/// All live sessions. Each holder (a user, or an address without authentication) may keep a
/// sixteenth of the cap (at least 64): past that its own least recently used session ends, so
/// one caller flooding `initialize` cannot push everyone else's sessions out.
pub struct SessionStore {
    map: DashMap<String, Arc<Session>>,
    /// Live sessions per holder.
    held: DashMap<String, usize>,
    idle: Duration,
    max: usize,
    per_holder: usize,
    epoch: Instant,
}

fn new_id() -> String {
    let mut rng = rand::rng();
    let a: u128 = rng.random();
    let b: u128 = rng.random();
    format!("{a:032x}{b:032x}")
}

impl SessionStore {
    pub fn new(idle: Duration, max: usize) -> Self {
        let max = max.max(1);
        Self {
            map: DashMap::new(),
            held: DashMap::new(),
            idle,
            max,
            per_holder: (max / 16).max(64).min(max),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Creates a session in `scope` for `holder`. A holder at its quota ends its own least
    /// recently used session; otherwise, beyond the cap, the least recently used one ends.
    pub fn create(
        &self,
        scope: &str,
        holder: &str,
        version: Option<&'static str>,
        outbox: Option<Outbox>,
    ) -> Arc<Session> {
        let at_quota = self.held.get(holder).is_some_and(|n| *n >= self.per_holder);
        if at_quota || self.map.len() >= self.max {
            let oldest = self
                .map
                .iter()
                .filter(|e| !at_quota || e.value().holder == holder)
                .min_by_key(|e| e.value().last_seen.load(Ordering::Relaxed))
                .map(|e| e.key().clone());
            if let Some(id) = oldest {
                self.remove(&id);
            }
        }
        let v = OnceLock::new();
        if let Some(version) = version {
            let _ = v.set(version);
        }
        let session = Arc::new(Session {
            id: new_id(),
            scope: scope.to_string(),
            version: v,
            last_seen: AtomicU64::new(self.now_ms()),
            streams: AtomicUsize::new(0),
            running: std::sync::Mutex::new(Vec::new()),
            outbox,
            closed: CancellationToken::new(),
            owner: OnceLock::new(),
            holder: holder.to_string(),
        });
        *self.held.entry(holder.to_string()).or_insert(0) += 1;
        self.map.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session `id` of `scope`, marked as used.
    pub fn get(&self, scope: &str, id: &str) -> Option<Arc<Session>> {
        let s = self.map.get(id)?.value().clone();
        if s.scope != scope {
            return None;
        }
        s.last_seen.store(self.now_ms(), Ordering::Relaxed);
        Some(s)
    }

    /// Ends a session; false when it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        match self.map.remove(id) {
            Some((_, s)) => {
                s.closed.cancel();
                self.held.remove_if_mut(&s.holder, |_, n| {
                    *n = n.saturating_sub(1);
                    *n == 0
                });
                true
            }
            None => false,
        }
    }

    /// Ends sessions idle for longer than the limit; returns how many. A session with an
    /// open stream is in use: it counts as seen now.
    pub fn reap(&self) -> usize {
        let limit = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let stale: Vec<String> = self
            .map
            .iter()
            .filter(|e| {
                let s = e.value();
                if s.streams.load(Ordering::Relaxed) > 0 {
                    s.last_seen.store(now, Ordering::Relaxed);
                    return false;
                }
                now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) > limit
            })
            .map(|e| e.key().clone())
            .collect();
        for id in &stale {
            self.remove(id);
        }
        stale.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Ends every session (shutdown), closing their streams.
    pub fn close_all(&self) {
        let ids: Vec<String> = self.map.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            self.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_request_is_the_running_one_with_that_id() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let s = store.create("/x", "h", None, None);
        let first = s.track(&serde_json::json!(7));
        s.cancel(&serde_json::json!("7"));
        assert!(
            !first.token.is_cancelled(),
            "the string \"7\" is another id"
        );
        s.cancel(&serde_json::json!(7));
        assert!(first.token.is_cancelled());
        // A later request reusing the id is not cancelled when the first one's guard drops.
        let second = s.track(&serde_json::json!(7));
        drop(first);
        assert_eq!(s.running_list().len(), 1);
        s.cancel(&serde_json::json!(7));
        assert!(second.token.is_cancelled());
        drop(second);
        assert!(s.running_list().is_empty());
    }

    #[test]
    fn a_session_with_an_open_stream_is_not_idle() {
        let store = SessionStore::new(Duration::from_millis(20), 10);
        let streaming = store.create("/x", "h", None, None);
        let quiet = store.create("/x", "h", None, None);
        let stream = streaming.stream_opened();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(store.reap(), 1, "only the quiet one ends");
        assert!(store.get("/x", &quiet.id).is_none());
        assert!(!streaming.closed.is_cancelled());
        // Its idle time starts when the stream closes.
        drop(stream);
        assert_eq!(store.reap(), 0);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(store.reap(), 1);
        assert!(streaming.closed.is_cancelled());
    }

    #[test]
    fn ids_are_long_visible_ascii_and_distinct() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let a = store.create("/x", "h", None, None);
        let b = store.create("/x", "h", None, None);
        assert_eq!(a.id.len(), 64);
        assert!(a.id.bytes().all(|c| (0x21..=0x7e).contains(&c)));
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn a_session_is_invisible_from_another_scope() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let s = store.create("/chatgpt", "h", None, None);
        assert!(store.get("/claude", &s.id).is_none());
        assert!(store.get("/chatgpt", &s.id).is_some());
    }

    #[test]
    fn the_cap_ends_the_least_recently_used_session() {
        let store = SessionStore::new(Duration::from_secs(60), 2);
        let a = store.create("/x", "h", None, None);
        let b = store.create("/x", "h", None, None);
        std::thread::sleep(Duration::from_millis(5));
        store.get("/x", &a.id);
        let _c = store.create("/x", "h", None, None);
        assert_eq!(store.len(), 2);
        assert!(store.get("/x", &b.id).is_none());
        assert!(b.closed.is_cancelled());
    }

    /// One holder flooding `initialize` ends only its own sessions (review finding: it used to
    /// end everyone's, in every scope).
    #[test]
    fn a_holder_at_its_quota_ends_its_own_sessions_not_others() {
        let store = SessionStore::new(Duration::from_secs(60), 16 * 64);
        let victim = store.create("/claude", "ip:192.0.2.1", None, None);
        let first = store.create("/chatgpt", "ip:198.51.100.9", None, None);
        for _ in 0..5000 {
            store.create("/chatgpt", "ip:198.51.100.9", None, None);
        }
        assert!(
            store.get("/claude", &victim.id).is_some(),
            "another holder's session lives"
        );
        assert!(first.closed.is_cancelled(), "the flooder's oldest ended");
        assert_eq!(store.len(), 64 + 1);
        assert_eq!(store.held.get("ip:198.51.100.9").map(|n| *n), Some(64));
        store.remove(&victim.id);
        assert!(store.held.get("ip:192.0.2.1").is_none());
    }

    /// A stream that is not read holds at most the byte budget of replies: the next one waits.
    #[tokio::test]
    async fn an_unread_outbox_holds_at_most_its_byte_budget() {
        let (outbox, mut rx) = Outbox::new(64, 1000);
        let reply = "x".repeat(400);
        outbox.send(reply.clone()).await.expect("first");
        outbox.send(reply.clone()).await.expect("second");
        let third = tokio::time::timeout(Duration::from_millis(200), outbox.send(reply.clone()));
        assert!(third.await.is_err(), "1,200 bytes do not fit in 1,000");
        // Reading one gives its bytes back.
        drop(rx.recv().await);
        outbox.send(reply.clone()).await.expect("after a read");
        // A reply larger than the whole budget still goes, alone.
        drop(rx.recv().await);
        drop(rx.recv().await);
        outbox.send("y".repeat(5000)).await.expect("a large reply");
        drop(rx);
        assert!(outbox.send(reply).await.is_err(), "the stream is gone");
    }

    #[test]
    fn idle_sessions_are_reaped() {
        let store = SessionStore::new(Duration::from_millis(1), 10);
        let s = store.create("/x", "h", None, None);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(store.reap(), 1);
        assert!(store.get("/x", &s.id).is_none());
    }
}
