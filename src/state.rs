//! Shared state: the scopes this process serves and the stores every request may touch.
//!
//! [`AppState`] is a cheap clone (an `Arc`). Scopes are values inside it, not globals: two
//! scopes share nothing but the process, so a cache entry or session of one is never visible
//! in another.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, ScopeConfig, ToolProfile};
use crate::db::{AccessRules, DynBackend};
use crate::mcp::session::SessionStore;
use crate::tools::cache::ScopeCache;

/// One served path prefix and everything it needs.
pub struct Scope {
    /// Path prefix, e.g. `/chatgpt`.
    pub path: String,
    /// Its configuration as loaded.
    pub config: ScopeConfig,
    /// Table and column rules, built once from `config`.
    pub rules: AccessRules,
    /// Name of the database it serves (for logs and health).
    pub database: String,
    /// The database.
    pub db: DynBackend,
    /// `public_url + path`: every URL handed out for this scope starts with it.
    pub public_base: String,
    /// Ad-hoc result rows and paging cursors of this scope.
    pub cache: ScopeCache,
}

impl Scope {
    pub fn new(config: ScopeConfig, db: DynBackend, public_url: &str) -> Self {
        Self {
            path: config.path.clone(),
            rules: config.access_rules(),
            database: config.database.clone(),
            db,
            public_base: format!("{}{}", public_url.trim_end_matches('/'), config.path),
            cache: ScopeCache::new(
                Duration::from_secs(config.cache_ttl_secs),
                config.cache_entries,
            ),
            config,
        }
    }

    pub fn profile(&self) -> ToolProfile {
        self.config.profile
    }
}

/// Most SSE streams open at once; more get 503 instead of exhausting file descriptors.
const MAX_STREAMS: usize = 2048;

/// Everything shared by request handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    scopes: Vec<Arc<Scope>>,
    sessions: SessionStore,
    /// Authentication is off (demo, or `insecure_no_auth`).
    no_auth: bool,
    /// Bounds open SSE streams (GET `/mcp` and legacy `/sse`) across all clients.
    streams: Arc<Semaphore>,
    /// The OAuth authorization server (absent when authentication is off); set once by
    /// `app::build_state`.
    oauth: std::sync::OnceLock<Arc<crate::oauth::OAuth>>,
    /// The edge: client IP, allowlists, rate limits, stream caps, TLS status.
    edge: Arc<crate::edge::EdgeState>,
}

impl AppState {
    pub fn new(config: Config, scopes: Vec<Arc<Scope>>, no_auth: bool) -> Self {
        let sessions = SessionStore::new(
            Duration::from_secs(config.server.session_idle_secs),
            config.server.max_sessions,
        );
        Self {
            inner: Arc::new(Inner {
                scopes,
                sessions,
                no_auth,
                streams: Arc::new(Semaphore::new(MAX_STREAMS)),
                oauth: std::sync::OnceLock::new(),
                edge: Arc::new(crate::edge::EdgeState::new(&config)),
                config,
            }),
        }
    }

    /// A slot for one more long-lived SSE stream, if any is free.
    pub fn try_open_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.inner.streams.clone().try_acquire_owned().ok()
    }

    /// The edge's shared state; the MCP layer calls `edge().check_client(id)` per tool call.
    pub fn edge(&self) -> &Arc<crate::edge::EdgeState> {
        &self.inner.edge
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn scopes(&self) -> &[Arc<Scope>] {
        &self.inner.scopes
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.inner.sessions
    }

    pub fn no_auth(&self) -> bool {
        self.inner.no_auth
    }

    /// The OAuth authorization server, when authentication is on.
    pub fn oauth(&self) -> Option<&Arc<crate::oauth::OAuth>> {
        self.inner.oauth.get()
    }

    /// Installs the OAuth authorization server (once; later calls are ignored).
    pub fn set_oauth(&self, oauth: Arc<crate::oauth::OAuth>) {
        let _ = self.inner.oauth.set(oauth);
    }

    /// The public base URL (no trailing slash).
    pub fn public_url(&self) -> String {
        self.inner.config.public_url()
    }
}
