//! Shared state: the scopes this process serves and the stores every request may touch.
//!
//! [`AppState`] is a cheap clone (an `Arc`). Scopes are values inside it, not globals: two
//! scopes share nothing but the process, so a cache entry or session of one is never visible
//! in another.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, ScopeConfig, ToolProfile};
use crate::db::guard::CheckedQuery;
use crate::db::{AccessRules, Catalog, DbError, DynBackend};
use crate::mcp::session::SessionStore;
use crate::ops::Ops;
use crate::ops::metrics::{Metrics, ToolMetrics};
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
    /// Tool-call counters of this scope, one set per tool, resolved once (no label lookup per
    /// call); the last entry is for unknown tool names.
    pub tool_metrics: Vec<(&'static str, ToolMetrics)>,
    /// Where this scope's tool calls are recorded.
    pub audit: crate::ops::audit::Audit,
    /// How long one keyword search may take over all its tables: the database's query timeout,
    /// and at most nine tenths of the request timeout, so a search that runs out answers with
    /// what it found instead of the request timing out.
    pub search_budget: Duration,
    /// Queries (as lifted templates) the guard accepted under this scope's rules, so a query
    /// shape seen before is not parsed again. Only acceptances are kept.
    pub accepted: moka::sync::Cache<String, Arc<CheckedQuery>>,
    /// The database's catalog as last seen, and what this scope may see of it
    /// ([`crate::tools::scoped_catalog`]), worked out once per catalog load.
    scoped: std::sync::Mutex<Option<(Arc<Catalog>, Arc<Catalog>)>>,
    /// The operator's descriptions of the database's tables and columns.
    descriptions: crate::tools::descriptions::Descriptions,
    /// Whether the names of `descriptions` that match nothing were logged (once per process).
    unmatched_logged: std::sync::atomic::AtomicBool,
    /// Whether the columns the database classifies as sensitive that this scope shows were
    /// logged (once per process).
    classified_logged: std::sync::atomic::AtomicBool,
    /// The masked columns this scope shows have been logged.
    masked_logged: std::sync::atomic::AtomicBool,
}

/// Bytes of accepted query shapes remembered per scope (query text plus a little per table):
/// a few thousand typical queries, and a bound however long the queries are.
const ACCEPTED_BYTES: u64 = 1 << 20;

impl Scope {
    pub fn new(
        config: ScopeConfig,
        db: DynBackend,
        public_url: &str,
        ops: &Ops,
        search_budget: Duration,
        descriptions: crate::tools::descriptions::Descriptions,
    ) -> Self {
        let metrics: &Metrics = &ops.metrics;
        let tool_metrics = crate::tools::tool_names(config.profile)
            .iter()
            .chain(std::iter::once(&"unknown"))
            .map(|t| (*t, metrics.tool(&config.path, t)))
            .collect();
        Self {
            tool_metrics,
            search_budget,
            audit: ops.audit.clone(),
            accepted: moka::sync::Cache::builder()
                .weigher(|sql: &String, q: &Arc<CheckedQuery>| {
                    u32::try_from(sql.len() + 64 * (1 + q.tables.len())).unwrap_or(u32::MAX)
                })
                .max_capacity(ACCEPTED_BYTES)
                .build(),
            path: config.path.clone(),
            rules: config.access_rules(),
            database: config.database.clone(),
            db,
            public_base: format!("{}{}", public_url.trim_end_matches('/'), config.path),
            cache: ScopeCache::new(
                Duration::from_secs(config.cache_ttl_secs),
                config.cache_entries,
                config.cache_max_bytes,
            ),
            scoped: std::sync::Mutex::new(None),
            descriptions,
            unmatched_logged: std::sync::atomic::AtomicBool::new(false),
            classified_logged: std::sync::atomic::AtomicBool::new(false),
            masked_logged: std::sync::atomic::AtomicBool::new(false),
            config,
        }
    }

    /// The catalog as this scope may see it: no hidden table, and no hidden column anywhere,
    /// not even in a key or a relationship ([`crate::tools::scoped_catalog`]). Everything
    /// that describes tables or builds SQL of its own works from it; only ad-hoc SQL, which
    /// must find hidden columns to mask them, reads the database's whole catalog.
    pub async fn catalog(&self) -> Result<Arc<Catalog>, DbError> {
        let raw = self.db.catalog().await?;
        Ok(self.view_of(raw))
    }

    /// [`Scope::catalog`], read anew if the database's was not read a moment ago
    /// ([`crate::db::Backend::catalog_after_miss`]): for a name the scope's catalog does not
    /// know, which may be a table made since it was read.
    pub async fn catalog_after_miss(&self) -> Result<Arc<Catalog>, DbError> {
        let raw = self.db.catalog_after_miss().await?;
        Ok(self.view_of(raw))
    }

    /// [`Scope::catalog`], or, when `knows` says the database's catalog does not know what a
    /// caller named, [`Scope::catalog_after_miss`]. Asked of the whole catalog, not the
    /// scope's: a table the scope hides is known, and asking for it again and again reads
    /// nothing anew.
    pub async fn catalog_for(
        &self,
        knows: impl Fn(&Catalog) -> bool,
    ) -> Result<Arc<Catalog>, DbError> {
        let raw = self.db.catalog().await?;
        if knows(&raw) {
            return Ok(self.view_of(raw));
        }
        self.catalog_after_miss().await
    }

    /// The scope's view of the database's catalog `raw`, made once per catalog the database
    /// reads.
    fn view_of(&self, raw: Arc<Catalog>) -> Arc<Catalog> {
        let mut cached = self.scoped.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, scoped)) = cached.as_ref()
            && Arc::ptr_eq(seen, &raw)
        {
            return scoped.clone();
        }
        let mut scoped = crate::tools::scoped_catalog(&self.rules, &raw);
        // Each warning is given once per process, and looked for only until then: SQL
        // Server's catalog reloads every minute.
        if !self.descriptions.is_empty() {
            self.descriptions.apply(&mut scoped);
            once(
                &self.unmatched_logged,
                || self.descriptions.unmatched(&raw),
                |names| {
                    tracing::warn!(
                        database = %self.database,
                        names = %names.join(", "),
                        "table_descriptions/column_descriptions name tables or columns the database does not have"
                    );
                },
            );
        }
        // What the DBA marked sensitive and this scope still shows: the operator decides (a
        // deny_columns line), once told.
        once(
            &self.classified_logged,
            || crate::tools::classified_columns(&scoped),
            |columns| {
                tracing::warn!(
                    scope = %self.path,
                    columns = %columns.join("; "),
                    "this scope shows columns the database classifies as sensitive; hide those it should not see with deny_columns"
                );
            },
        );
        // Masking hides values from what a query returns, not from what its WHERE tests: a
        // column that must not be read has to be hidden here too.
        once(
            &self.masked_logged,
            || crate::tools::masked_columns(&scoped),
            |columns| {
                tracing::warn!(
                    scope = %self.path,
                    columns = %columns.join("; "),
                    "this scope shows columns the database masks (dynamic data masking); a query can still test their values in WHERE, so hide those that must not be inferred with deny_columns"
                );
            },
        );
        let scoped = Arc::new(scoped);
        *cached = Some((raw, scoped.clone()));
        scoped
    }

    pub fn profile(&self) -> ToolProfile {
        self.config.profile
    }

    /// The counters of `tool` (or of `unknown`).
    pub fn tool_metrics(&self, tool: &str) -> Option<&ToolMetrics> {
        self.tool_metrics
            .iter()
            .find(|(t, _)| *t == tool)
            .or_else(|| self.tool_metrics.last())
            .map(|(_, m)| m)
    }
}

/// Calls `tell` with what `find` finds, the first time it finds anything; `told` remembers
/// that it did, and `find` is not called again after.
fn once<T>(
    told: &std::sync::atomic::AtomicBool,
    find: impl FnOnce() -> Vec<T>,
    tell: impl FnOnce(&[T]),
) {
    use std::sync::atomic::Ordering::Relaxed;
    if told.load(Relaxed) {
        return;
    }
    let found = find();
    if !found.is_empty() && !told.swap(true, Relaxed) {
        tell(&found);
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
    /// Metrics, audit log and readiness.
    ops: Arc<Ops>,
    /// Secret the admin endpoint's callers must present (the OAuth server's when there is one,
    /// else a fresh one; written to `{state_dir}/admin.token` when the endpoint starts).
    admin_token: std::sync::OnceLock<String>,
}

impl AppState {
    pub fn new(config: Config, scopes: Vec<Arc<Scope>>, no_auth: bool, ops: Arc<Ops>) -> Self {
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
                ops,
                admin_token: std::sync::OnceLock::new(),
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

    /// Metrics, audit log and readiness.
    pub fn ops(&self) -> &Arc<Ops> {
        &self.inner.ops
    }

    /// The admin endpoint's secret: the OAuth server's, else one made on first use.
    pub fn admin_token(&self) -> &str {
        if let Some(o) = self.oauth() {
            return &o.admin_token;
        }
        self.inner
            .admin_token
            .get_or_init(|| crate::oauth::random_token(""))
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
