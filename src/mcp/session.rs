//! MCP sessions of the 2025 revisions (Streamable HTTP) and of the older HTTP+SSE transport.
//!
//! A session is created by `initialize` (or by opening a legacy `/sse` stream), named by an
//! unguessable id, bound to the scope that created it, and ended by `DELETE`, by its SSE
//! stream closing, or by idling past `server.session_idle_secs`. An ended id answers 404. The
//! 2026-07-28 revision has no sessions and never touches this store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::RngExt;
use tokio::sync::mpsc;
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
    /// Legacy HTTP+SSE transport: where responses to POSTed messages go.
    pub outbox: Option<mpsc::Sender<String>>,
    /// Cancelled when the session ends, closing its GET streams.
    pub closed: CancellationToken,
    /// Who opened it (signed-in user and OAuth client), when authentication is on; nobody
    /// else may use it (see `oauth::bearer::may_use`).
    pub owner: OnceLock<String>,
}

/// All live sessions.
pub struct SessionStore {
    map: DashMap<String, Arc<Session>>,
    idle: Duration,
    max: usize,
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
        Self {
            map: DashMap::new(),
            idle,
            max: max.max(1),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Creates a session in `scope`; beyond the cap the least recently used one is ended.
    pub fn create(
        &self,
        scope: &str,
        version: Option<&'static str>,
        outbox: Option<mpsc::Sender<String>>,
    ) -> Arc<Session> {
        if self.map.len() >= self.max {
            let oldest = self
                .map
                .iter()
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
            outbox,
            closed: CancellationToken::new(),
            owner: OnceLock::new(),
        });
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
                true
            }
            None => false,
        }
    }

    /// Ends sessions idle for longer than the limit; returns how many.
    pub fn reap(&self) -> usize {
        let limit = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let stale: Vec<String> = self
            .map
            .iter()
            .filter(|e| now.saturating_sub(e.value().last_seen.load(Ordering::Relaxed)) > limit)
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
    fn ids_are_long_visible_ascii_and_distinct() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let a = store.create("/x", None, None);
        let b = store.create("/x", None, None);
        assert_eq!(a.id.len(), 64);
        assert!(a.id.bytes().all(|c| (0x21..=0x7e).contains(&c)));
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn a_session_is_invisible_from_another_scope() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let s = store.create("/chatgpt", None, None);
        assert!(store.get("/claude", &s.id).is_none());
        assert!(store.get("/chatgpt", &s.id).is_some());
    }

    #[test]
    fn the_cap_ends_the_least_recently_used_session() {
        let store = SessionStore::new(Duration::from_secs(60), 2);
        let a = store.create("/x", None, None);
        let b = store.create("/x", None, None);
        std::thread::sleep(Duration::from_millis(5));
        store.get("/x", &a.id);
        let _c = store.create("/x", None, None);
        assert_eq!(store.len(), 2);
        assert!(store.get("/x", &b.id).is_none());
        assert!(b.closed.is_cancelled());
    }

    #[test]
    fn idle_sessions_are_reaped() {
        let store = SessionStore::new(Duration::from_millis(1), 10);
        let s = store.create("/x", None, None);
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(store.reap(), 1);
        assert!(store.get("/x", &s.id).is_none());
    }
}
