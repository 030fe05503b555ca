//! The OAuth 2.1 authorization server in front of the MCP endpoints.
//!
//! Each scope (`/chatgpt`, `/claude`, …) is its own protected resource and its own issuer,
//! `{public_url}{scope}`, with endpoints under it:
//!
//! | path | what | module |
//! |---|---|---|
//! | `/.well-known/oauth-protected-resource{scope}/mcp` (and `/sse`) | RFC 9728 resource metadata | [`metadata`] |
//! | `/.well-known/oauth-authorization-server{scope}` (+ aliases, + root for the default scope) | RFC 8414 metadata | [`metadata`] |
//! | `{scope}/register` | RFC 7591 dynamic client registration | [`register`] |
//! | `{scope}/authorize` | sign-in and consent page, PKCE S256, RFC 9207 `iss` | [`authorize`] |
//! | `{scope}/token` | `authorization_code` and `refresh_token` grants | [`token`] |
//! | `{scope}/revoke` | RFC 7009 revocation | [`revoke`] |
//! | `{scope}/sign-in` | a person's browser sign-in to open record pages (citations) | [`viewer`] |
//!
//! HTTPS `client_id`s (client ID metadata documents) are fetched by [`client_metadata`]. The
//! MCP handlers call [`bearer::authenticate`] first thing; [`store`] keeps clients, grants and
//! tokens in SQLite with an in-memory index; [`admin`] is the loopback-only endpoint behind
//! `mssql-mcp tokens …`.

pub mod admin;
pub mod authorize;
pub mod bearer;
pub mod client_metadata;
pub mod error;
pub mod metadata;
pub mod page;
pub mod password;
pub mod register;
pub mod revoke;
pub mod store;
pub mod token;
pub mod viewer;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use dashmap::DashMap;
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::state::{AppState, Scope};
use store::{Store, StoreError};

/// The one OAuth scope value this server grants: access to the scope's MCP tools.
pub const OAUTH_SCOPE: &str = "mcp";

/// The authorization server's state, shared by all scopes.
pub struct OAuth {
    /// Clients, grants and tokens (persistent).
    pub store: Arc<Store>,
    /// Authorization requests waiting for someone to sign in (memory only: a restart means
    /// reloading the page).
    pub pending: DashMap<String, authorize::Pending>,
    /// Failed sign-ins and registrations per key, for rate limiting.
    pub limits: Limits,
    /// Fetches and caches client ID metadata documents.
    pub metadata_docs: client_metadata::Fetcher,
    /// Bounds the password checks running at once (each holds 19 MiB).
    pub password_checks: password::Gate,
    /// Random secret the admin CLI must present (written to `{state_dir}/admin.token`).
    pub admin_token: String,
    /// Each configured user's [`credential_of`], made once (checked on every token use).
    pub credentials: std::collections::HashMap<String, String>,
}

impl OAuth {
    /// Opens the store in `server.state_dir` and writes the admin token file beside it.
    pub fn open(config: &Config) -> Result<OAuth, StoreError> {
        let dir = &config.server.state_dir;
        let store = Store::open(dir)?;
        let credentials: std::collections::HashMap<String, String> = config
            .oauth
            .users
            .iter()
            .map(|u| (u.username.clone(), credential_of(&u.password_hash)))
            .collect();
        let adopted = store.adopt_credentials(|name| credentials.get(name).cloned())?;
        if adopted > 0 {
            tracing::info!(
                grants = adopted,
                "oauth: grants tied to their users' current passwords"
            );
        }
        let admin_token = random_token("");
        admin::write_token_file(dir, &admin_token).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(OAuth {
            store: Arc::new(store),
            pending: DashMap::new(),
            limits: Limits::default(),
            metadata_docs: client_metadata::Fetcher::new(),
            password_checks: password::Gate::default(),
            admin_token,
            credentials,
        })
    }
}

/// State of the OAuth handlers of one scope.
#[derive(Clone)]
pub struct OAuthCtx {
    pub app: AppState,
    pub oauth: Arc<OAuth>,
    pub scope: Arc<Scope>,
}

impl OAuthCtx {
    /// `{public_url}{scope}`: the issuer, and the base of this scope's endpoints.
    pub fn issuer(&self) -> &str {
        &self.scope.public_base
    }
    pub fn config(&self) -> &crate::config::OAuthConfig {
        &self.app.config().oauth
    }

    /// An audit record of an OAuth decision at this scope (queued; never waits).
    pub fn audit(&self, r: crate::ops::audit::Record) {
        self.app.ops().audit.record(r);
    }

    /// A fresh OAuth audit record of `event` at this scope, from `ip`.
    pub fn record(
        &self,
        event: &'static str,
        outcome: &'static str,
        ip: IpAddr,
    ) -> crate::ops::audit::Record {
        let mut r = crate::ops::audit::Record::oauth(event, &self.scope.path, outcome);
        r.client_ip = Some(ip);
        r
    }

    pub fn metrics(&self) -> &crate::ops::metrics::Metrics {
        &self.app.ops().metrics
    }

    /// The client cap a new client must fit under: `max_clients`, displacing clients younger
    /// than a sign-in page's lifetime (whose users may still approve them) last.
    pub fn client_cap(&self) -> store::ClientCap {
        let cfg = self.config();
        store::ClientCap {
            max: cfg.max_clients,
            young_ms: cfg.login_page_ttl_secs as i64 * 1000,
        }
    }
}

/// The OAuth routes (metadata, register, authorize, token, revoke) of every scope; empty when
/// authentication is off.
pub fn routes(app: &AppState) -> Router {
    let Some(oauth) = app.oauth() else {
        return Router::new();
    };
    let mut router = Router::new();
    let default = app.config().default_scope_path();
    for scope in app.scopes() {
        let ctx = OAuthCtx {
            app: app.clone(),
            oauth: oauth.clone(),
            scope: scope.clone(),
        };
        let is_default = default.is_some_and(|d| d.eq_ignore_ascii_case(&scope.path));
        router = router
            .merge(metadata::routes(ctx.clone(), is_default))
            .merge(register::routes(ctx.clone()))
            .merge(authorize::routes(ctx.clone()))
            .merge(viewer::routes(ctx.clone()))
            .merge(token::routes(ctx.clone()))
            .merge(revoke::routes(ctx));
    }
    router
}

/// The periodic cleanup of expired codes, tokens, grants, clients, sign-in pages and rate
/// limit windows. Owned: dropping the guard stops it and writes the last-used times once more.
pub struct CleanupTask {
    handle: Option<tokio::task::JoinHandle<()>>,
    oauth: Option<Arc<OAuth>>,
    unused_client_ttl_ms: i64,
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        if let Some(o) = &self.oauth
            && let Err(e) = o.store.cleanup(store::now_ms(), self.unused_client_ttl_ms)
        {
            tracing::error!(error = %e, "oauth: final cleanup failed");
        }
    }
}

/// Starts the cleanup task (every 60 s) if OAuth is on.
pub fn spawn_cleanup(app: &AppState) -> CleanupTask {
    let unused_client_ttl_ms = app.config().oauth.unused_client_ttl_secs as i64 * 1000;
    let Some(oauth) = app.oauth().cloned() else {
        return CleanupTask {
            handle: None,
            oauth: None,
            unused_client_ttl_ms,
        };
    };
    let o = oauth.clone();
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = store::now_ms();
            o.pending.retain(|_, p| p.expires_at > now);
            o.limits.prune(now);
            let s = o.store.clone();
            match tokio::task::spawn_blocking(move || s.cleanup(now, unused_client_ttl_ms)).await {
                Ok(Ok(n)) if n > 0 => {
                    tracing::debug!(removed = n, "oauth: expired entries removed")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "oauth: cleanup failed"),
                Err(e) => tracing::error!(error = %e, "oauth: cleanup task failed"),
            }
        }
    });
    CleanupTask {
        handle: Some(handle),
        oauth: Some(oauth),
        unused_client_ttl_ms,
    }
}

/// Runs a store operation off the async threads (SQLite writes wait for fsync).
pub async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, error::OAuthError> {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => r.map_err(error::OAuthError::from),
        Err(e) => Err(error::OAuthError::server_error(e)),
    }
}

/// A new unguessable value: `prefix` + 256 random bits, base64url.
pub fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// SHA-256 of a token, hex: how tokens are stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Constant-time string comparison (secrets, CSRF tokens, PKCE).
pub fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The client's IP address as the edge decided it (trusted proxies honoured), else the TCP
/// peer (requests that bypassed the edge middleware, in tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<crate::edge::client_ip::ClientIp>() {
            return Ok(ClientIp(c.ip));
        }
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// What a grant keeps of its user's credential: a digest of their password hash (never the
/// hash itself), so that a new password, or a new person given the name, ends the grants made
/// under the old one.
pub fn credential_of(password_hash: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(password_hash.as_bytes())[..16])
}

/// Fixed-window counters (failed sign-ins, registrations, sign-in pages) keyed by IP,
/// network or username, each with its own window length.
///
/// A key reads `purpose:…`, and each kind of count has a table of its own, bounded in keys: a
/// flood of one kind (registrations from a block of addresses) cannot fill the table another
/// kind (sign-ins) needs. Keys of networks (`register-net:`, `login-net:`, `login-names:`,
/// `authorize:`) share a table that the fallbacks of [`Limits::hit_or`] count in: it fills
/// only with as many networks as an attacker holds.
pub struct Limits {
    tables: [LimitTable; 6],
    /// Most keys one table holds.
    capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::with_capacity(MAX_LIMIT_KEYS)
    }
}

#[derive(Default)]
struct LimitTable {
    windows: DashMap<String, Window>,
    /// When expired windows were last dropped to make room (milliseconds).
    made_room_at: std::sync::atomic::AtomicI64,
}

/// One key's count, and when and for how long its window runs (milliseconds).
#[derive(Debug, Clone, Copy)]
struct Window {
    count: u32,
    start: i64,
    length: i64,
}

impl Window {
    fn live(&self, now: i64) -> bool {
        self.start + self.length > now
    }
}

/// Most keys one table tracks at once (bounds memory under a flood of addresses or names).
const MAX_LIMIT_KEYS: usize = 100_000;
/// How often a full table is searched for expired windows to drop, at most (milliseconds).
const MAKE_ROOM_EVERY_MS: i64 = 1_000;

impl Limits {
    /// Tables of at most `capacity` keys each.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tables: Default::default(),
            capacity: capacity.max(1),
        }
    }

    /// The table of `key`'s kind.
    fn table(&self, key: &str) -> &LimitTable {
        let i = match key.split(':').next().unwrap_or("") {
            "register-net" | "login-net" | "login-names" | "authorize" => 0,
            "register" => 1,
            "login-ip" => 2,
            "login-name" => 3,
            "login-user" => 4,
            _ => 5,
        };
        &self.tables[i]
    }

    /// Events counted for `key` in its current window.
    pub fn count(&self, key: &str, now: i64) -> u32 {
        match self.table(key).windows.get(key) {
            Some(w) if w.live(now) => w.count,
            _ => 0,
        }
    }

    /// Counts one event for `key` in a window of `window_ms`; returns the count in the current
    /// window. A new key when its table is full, even after dropping the windows that ended,
    /// counts as over every limit (`u32::MAX`): under a flood of keys the limits fail closed,
    /// rather than stop counting and let guesses through. [`Limits::hit_or`] falls back to a
    /// coarser key instead.
    pub fn hit(&self, key: &str, window_ms: i64, now: i64) -> u32 {
        self.hit_if_room(key, window_ms, now).unwrap_or(u32::MAX)
    }

    /// Counts one event for `key`, or, when its table has no room for it, for `coarse` (an
    /// address's network for the address): a flood of new addresses is then held to their
    /// networks' counts instead of turning away everyone new. Returns the count and the key
    /// that was counted.
    pub fn hit_or<'k>(
        &self,
        key: &'k str,
        coarse: &'k str,
        window_ms: i64,
        now: i64,
    ) -> (u32, &'k str) {
        match self.hit_if_room(key, window_ms, now) {
            Some(n) => (n, key),
            None => (self.hit(coarse, window_ms, now), coarse),
        }
    }

    /// [`Limits::hit`], or `None` (nothing counted) for a new key its table has no room for.
    pub fn hit_if_room(&self, key: &str, window_ms: i64, now: i64) -> Option<u32> {
        let table = self.table(key);
        if let Some(mut w) = table.windows.get_mut(key) {
            if !w.live(now) {
                *w = Window {
                    count: 0,
                    start: now,
                    length: window_ms,
                };
            }
            w.count = w.count.saturating_add(1);
            return Some(w.count);
        }
        if table.windows.len() >= self.capacity && !self.make_room(table, now) {
            return None;
        }
        let mut w = table.windows.entry(key.to_string()).or_insert(Window {
            count: 0,
            start: now,
            length: window_ms,
        });
        w.count = w.count.saturating_add(1);
        Some(w.count)
    }

    /// Drops the windows of `table` that ended, at most once per [`MAKE_ROOM_EVERY_MS`] (a
    /// full table of live windows is not searched on every hit); whether there is room now.
    fn make_room(&self, table: &LimitTable, now: i64) -> bool {
        use std::sync::atomic::Ordering;
        let last = table.made_room_at.load(Ordering::Relaxed);
        if now - last >= MAKE_ROOM_EVERY_MS
            && table
                .made_room_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            table.windows.retain(|_, w| w.live(now));
            if table.windows.len() >= self.capacity {
                tracing::warn!(
                    keys = self.capacity,
                    "oauth: a sign-in or registration limit tracks as many keys as it may; new addresses count by their network, new names are refused until windows end"
                );
            }
        }
        table.windows.len() < self.capacity
    }

    /// Keys tracked now, over all tables.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tables.iter().map(|t| t.windows.len()).sum()
    }

    /// Takes back one event of `key`'s current window (an attempt counted up front that
    /// turned out not to be a failure). A key back at zero is dropped: attempts that were
    /// turned away before any work (a busy password check) leave no key behind to fill the
    /// table with.
    pub fn undo(&self, key: &str, now: i64) {
        let table = &self.table(key).windows;
        table.remove_if_mut(key, |_, w| {
            if w.live(now) {
                w.count = w.count.saturating_sub(1);
            }
            w.count == 0
        });
    }

    pub fn clear(&self, key: &str) {
        self.table(key).windows.remove(key);
    }

    /// Drops the windows that ended.
    fn prune(&self, now: i64) {
        for t in &self.tables {
            t.windows.retain(|_, w| w.live(now));
        }
    }
}

/// Text a stranger typed (a username), made safe for one field of a log line: control
/// characters (a newline would start a forged line in the human log format), invisible
/// direction marks and the backslash itself are written as escapes such as `\n` and
/// `\u{202e}`, so what was typed can still be read and nothing passes for something else.
pub fn log_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
        if c == '\\' || c.is_control() || invisible {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// HTML-escapes text for the server-rendered pages.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// CORS for endpoints browser-based clients call (metadata, registration, token, revoke):
/// any origin, no cookies.
pub fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            axum::http::HeaderName::from_static("mcp-protocol-version"),
        ])
        .max_age(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undone_event_leaves_the_window_as_it_was() {
        let l = Limits::with_capacity(100);
        assert_eq!((l.hit("k", 1000, 0), l.hit("k", 1000, 10)), (1, 2));
        l.undo("k", 20);
        assert_eq!(l.count("k", 20), 1);
        // Past the window there is nothing to take back, and a new window starts at one.
        l.undo("k", 1500);
        assert_eq!(l.hit("k", 1000, 1500), 1);
        l.undo("absent", 0);
        assert_eq!(l.count("absent", 0), 0);
    }

    #[test]
    fn tokens_are_long_random_and_hash_to_hex() {
        let a = random_token("mcp_at_");
        let b = random_token("mcp_at_");
        assert_ne!(a, b);
        assert_eq!(a.len(), "mcp_at_".len() + 43);
        assert_eq!(hash_token(&a).len(), 64);
    }

    /// A full table makes room by dropping only windows that ended, each by its own length
    /// (an hour-long count outlives a flood of minute-long ones), and a new key it has no room
    /// for is over every limit, or counts by its network's key with `hit_or` (networks have a
    /// table of their own). Each kind of key has its own table: a flood of registrations
    /// leaves sign-ins alone.
    #[test]
    fn a_full_limit_table_keeps_live_windows_and_refuses_new_keys() {
        let l = Limits::with_capacity(1000);
        assert_eq!(l.hit("register:long", 3_600_000, 0), 1);
        for i in 1..1000 {
            l.hit(&format!("register:{i}"), 60_000, 0);
        }
        // Full of live windows: a new key is refused, known ones still count.
        assert_eq!(l.hit("register:newcomer", 60_000, 10), u32::MAX);
        assert_eq!(l.hit("register:1", 60_000, 10), 2);
        assert_eq!(l.hit_if_room("register:newcomer", 60_000, 10), None);
        // ... or counted by its network.
        let (n, counted) = l.hit_or("register:new2", "register-net:x", 60_000, 10);
        assert_eq!((n, counted), (1, "register-net:x"));
        // Other kinds of key have tables of their own.
        assert_eq!(l.hit("login-ip:1.2.3.4", 60_000, 10), 1);
        assert_eq!(l.hit("login-user:n@1.2.3.0", 60_000, 10), 1);
        assert_eq!(l.hit("authorize:1.2.3.0", 60_000, 10), 1);
        // The short windows end; the long one lives on, and there is room again.
        assert_eq!(l.hit("register:newcomer", 60_000, 120_000), 1);
        assert_eq!(l.count("register:long", 120_000), 1);
        assert_eq!(l.hit("register:long", 3_600_000, 120_000), 2);
    }

    #[test]
    fn a_new_key_with_no_room_counts_by_its_coarser_key() {
        let l = Limits::with_capacity(10);
        for i in 0..9 {
            l.hit(&format!("login-ip:{i}"), 60_000, 0);
        }
        assert_eq!(
            l.hit_or("login-ip:a", "login-net:n", 60_000, 0),
            (1, "login-ip:a")
        );
        // Full now: new addresses count by their network.
        assert_eq!(
            l.hit_or("login-ip:b", "login-net:n", 60_000, 1),
            (1, "login-net:n")
        );
        assert_eq!(
            l.hit_or("login-ip:c", "login-net:n", 60_000, 1),
            (2, "login-net:n")
        );
        assert_eq!(
            l.hit_or("login-ip:a", "login-net:n", 60_000, 1),
            (2, "login-ip:a")
        );
        assert_eq!(l.len(), 11);
    }

    #[test]
    fn limits_count_within_a_window_and_reset_after() {
        let l = Limits::with_capacity(100);
        assert_eq!(l.hit("ip:1", 1000, 0), 1);
        assert_eq!(l.hit("ip:1", 1000, 10), 2);
        assert_eq!(l.count("ip:1", 999), 2);
        assert_eq!(l.count("ip:1", 1000), 0);
        assert_eq!(l.hit("ip:1", 1000, 1000), 1);
    }

    #[test]
    fn typed_text_cannot_break_a_log_line() {
        assert_eq!(log_safe("alice"), "alice");
        assert_eq!(log_safe("Zoë Ångström"), "Zoë Ångström");
        assert_eq!(
            log_safe("x\n2025-01-01T00:00:00Z  INFO fake\r\u{1b}[2J"),
            "x\\n2025-01-01T00:00:00Z  INFO fake\\r\\u{1b}[2J"
        );
        assert_eq!(log_safe("a\\nb\u{202e}"), "a\\\\nb\\u{202e}");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
