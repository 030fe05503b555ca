//! Persistent OAuth state: registered clients, grants (one per approval) and the codes and
//! tokens issued under them.
//!
//! SQLite in the state directory is the record (WAL, `synchronous = FULL`: a write is on disk
//! before the request that caused it is answered); DashMaps in front of it answer every read,
//! so checking a bearer token never touches the disk. Every state change runs in one SQLite
//! transaction under the connection mutex and updates the maps only after it committed, so a
//! crash mid-write loses nothing already acknowledged and single-use checks (codes, refresh
//! tokens) cannot race.
//!
//! Tokens are stored as SHA-256 hashes: they are 256-bit random values, so a fast hash is
//! enough, and a copy of the file hands out no usable token.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use rusqlite::{Connection, OptionalExtension, params};

/// Store failures: the database file could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("OAuth state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("OAuth state directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("the client limit is reached")]
    TooManyClients,
    /// An approval for a client that is no longer registered (evicted, forgotten or revoked
    /// while its user was on the sign-in page): no code is minted for it.
    #[error("the client is no longer registered")]
    ClientGone,
}

/// The client cap, and which clients a new one displaces last to stay under it.
#[derive(Debug, Default)]
pub struct ClientCap {
    /// Most clients kept, all scopes (`oauth.max_clients`).
    pub max: usize,
    /// Clients saved less than this long ago (ms) make room only when no older client without
    /// a live grant is left: their user may be on the sign-in page still
    /// (`oauth.login_page_ttl_secs`), and they hold no grant before approving.
    pub young_ms: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A registered OAuth client.
#[derive(Debug)]
pub struct Client {
    /// The id the client sends (random, or its metadata document URL).
    pub client_id: String,
    /// The scope path it registered at; it can get tokens for that scope only.
    pub scope: String,
    /// Display name shown on the consent page (as the client claims it).
    pub name: String,
    /// Registered redirect URIs; `/authorize` matches them exactly.
    pub redirect_uris: Vec<String>,
    /// SHA-256 of the client secret, for confidential clients.
    pub secret_hash: Option<String>,
    /// `none`, `client_secret_post` or `client_secret_basic`.
    pub auth_method: String,
    /// Known through a client ID metadata document rather than registration.
    pub metadata_document: bool,
    pub created_at: i64,
    /// Last registration, approval or token request: unused clients are forgotten, and the
    /// client cap displaces the least recently used first. Opening a sign-in page does not
    /// count: anyone may do it, so it must not keep a client alive.
    pub last_used_at: AtomicI64,
}

impl Client {
    /// The store's key. A registered id belongs to one scope; a metadata document URL may be
    /// a client of several scopes, so it is kept once per scope.
    pub fn store_key(&self) -> String {
        if self.metadata_document {
            doc_key(&self.scope, &self.client_id)
        } else {
            self.client_id.clone()
        }
    }
}

/// `"{scope} {url}"`: no registered id or accepted URL contains a space.
fn doc_key(scope: &str, url: &str) -> String {
    format!("{scope} {url}")
}

/// One approval: a user let a client into a scope. Codes and tokens hang off it, and
/// revoking it ends them all.
#[derive(Debug)]
pub struct Grant {
    pub grant_id: String,
    pub client_id: String,
    /// The person who signed in and approved.
    pub username: String,
    /// Scope path, e.g. `/chatgpt`: tokens are refused at any other scope.
    pub scope: String,
    /// The RFC 8707 resource the client asked for (an MCP endpoint URL of the scope).
    pub resource: String,
    /// OAuth scope string granted.
    pub oauth_scope: String,
    /// The redirect URI the authorization request named, which the token request must repeat
    /// (RFC 6749 §4.1.3, kept by OAuth 2.1); empty when it named none and the client's only
    /// registered URI was used.
    pub redirect_uri: String,
    /// PKCE S256 challenge of the authorization request.
    pub code_challenge: String,
    pub created_at: i64,
    /// Last time one of its tokens was used (kept in memory, flushed by the cleanup task).
    pub last_used_at: AtomicI64,
    /// The credential of the user it was granted under ([`super::credential_of`] of their
    /// password hash): a new password ends every grant made under the old one. Unset for a
    /// grant from before this was kept, until [`Store::adopt_credentials`] sets it at start.
    pub credential: std::sync::OnceLock<String>,
}

/// What a stored token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Code,
    Access,
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Code => "code",
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "code" => Some(TokenKind::Code),
            "access" => Some(TokenKind::Access),
            "refresh" => Some(TokenKind::Refresh),
            _ => None,
        }
    }
}

/// A code or token, by the hash of its value.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub kind: TokenKind,
    pub grant_id: String,
    pub expires_at: i64,
    /// Codes and refresh tokens are single use; a used one is kept until it expires so a
    /// second use is recognised as theft.
    pub used: bool,
    /// The audience of an access token bound to less than its grant's resource (a token
    /// request named one endpoint of a grant for the scope's base URL, RFC 8707 §2.2);
    /// `None`: the grant's.
    pub resource: Option<String>,
}

/// A live access token: the grant behind it and the audience it is bound to.
#[derive(Debug, Clone)]
pub struct Access {
    pub grant: Arc<Grant>,
    /// The RFC 8707 resource the token may be used at: its own, else its grant's.
    pub resource: String,
}

/// A freshly minted token pair (plain values, returned once). `Debug` leaves them out.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_in: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("access_expires_in", &self.access_expires_in)
            .finish_non_exhaustive()
    }
}

/// Why a single-use value could not be redeemed.
#[derive(Debug, PartialEq, Eq)]
pub enum RedeemError {
    /// Unknown (never issued, revoked, or cleaned up).
    Unknown,
    /// Expired.
    Expired,
    /// Already used: the grant behind it was revoked.
    Reused,
}

/// Clients, grants and tokens: SQLite behind an in-memory index.
pub struct Store {
    conn: Mutex<Connection>,
    clients: DashMap<String, Arc<Client>>,
    grants: DashMap<String, Arc<Grant>>,
    tokens: DashMap<String, TokenRecord>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, scope TEXT NOT NULL, name TEXT NOT NULL,
    redirect_uris TEXT NOT NULL, secret_hash TEXT, auth_method TEXT NOT NULL,
    metadata_document INTEGER NOT NULL, created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    grant_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, username TEXT NOT NULL,
    scope TEXT NOT NULL, resource TEXT NOT NULL, oauth_scope TEXT NOT NULL,
    redirect_uri TEXT NOT NULL, code_challenge TEXT NOT NULL,
    created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL, credential TEXT);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY, kind TEXT NOT NULL, grant_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0, resource TEXT);
CREATE INDEX IF NOT EXISTS tokens_by_grant ON tokens(grant_id);
";

impl Store {
    /// Opens (or creates) `oauth.sqlite` in `dir` and loads everything into memory.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        crate::ops::private_dir(dir).map_err(|source| StoreError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        Self::open_file(&dir.join("oauth.sqlite"))
    }

    fn open_file(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        // First, so that another process starting at the same time makes this one wait.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Under the write lock from the start (IMMEDIATE): two processes opening an old file
        // at once (overlapping restarts) would otherwise both see the column missing, and the
        // second would fail to add it.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        // A file written before access tokens could be bound to less than their grant.
        let has_resource = tx
            .prepare("SELECT 1 FROM pragma_table_info('tokens') WHERE name = 'resource'")?
            .exists([])?;
        if !has_resource {
            tx.execute_batch("ALTER TABLE tokens ADD COLUMN resource TEXT")?;
        }
        // A file written before grants were tied to their user's credential.
        let has_credential = tx
            .prepare("SELECT 1 FROM pragma_table_info('grants') WHERE name = 'credential'")?
            .exists([])?;
        if !has_credential {
            tx.execute_batch("ALTER TABLE grants ADD COLUMN credential TEXT")?;
        }
        tx.commit()?;
        let store = Store {
            conn: Mutex::new(conn),
            clients: DashMap::new(),
            grants: DashMap::new(),
            tokens: DashMap::new(),
        };
        store.load()?;
        Ok(store)
    }

    /// Ties each grant from before grants kept their user's credential to the credential
    /// `credential_of(username)` gives now (`None` for a name no longer configured, whose
    /// grants stay unset and are refused), so that a later password change ends them too.
    pub fn adopt_credentials(
        &self,
        credential_of: impl Fn(&str) -> Option<String>,
    ) -> Result<usize, StoreError> {
        let mut adopted = Vec::new();
        for g in self.grants.iter() {
            if g.credential.get().is_none()
                && let Some(c) = credential_of(&g.username)
            {
                adopted.push((g.grant_id.clone(), c));
            }
        }
        if adopted.is_empty() {
            return Ok(0);
        }
        let mut conn = self.db();
        let tx = conn.transaction()?;
        for (id, c) in &adopted {
            tx.execute(
                "UPDATE grants SET credential = ?1 WHERE grant_id = ?2 AND credential IS NULL",
                params![c, id],
            )?;
        }
        tx.commit()?;
        for (id, c) in adopted.iter() {
            if let Some(g) = self.grants.get(id) {
                let _ = g.credential.set(c.clone());
            }
        }
        Ok(adopted.len())
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied change: every change is
        // one SQLite transaction, so the connection is still consistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load(&self) -> Result<(), StoreError> {
        let conn = self.db();
        let mut stmt = conn.prepare(
            "SELECT client_id, scope, name, redirect_uris, secret_hash, auth_method, metadata_document, created_at, last_used_at FROM clients",
        )?;
        let rows = stmt.query_map([], |r| {
            let uris: String = r.get(3)?;
            let key: String = r.get(0)?;
            let scope: String = r.get(1)?;
            // The key column holds `"{scope} {url}"` for metadata-document clients.
            let client_id = key
                .strip_prefix(&format!("{scope} "))
                .map(str::to_string)
                .unwrap_or(key);
            Ok(Client {
                client_id,
                scope,
                name: r.get(2)?,
                redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
                secret_hash: r.get(4)?,
                auth_method: r.get(5)?,
                metadata_document: r.get::<_, i64>(6)? != 0,
                created_at: r.get(7)?,
                last_used_at: AtomicI64::new(r.get(8)?),
            })
        })?;
        for c in rows {
            let c = c?;
            self.clients.insert(c.store_key(), Arc::new(c));
        }
        let mut stmt = conn.prepare(
            "SELECT grant_id, client_id, username, scope, resource, oauth_scope, redirect_uri, code_challenge, created_at, last_used_at, credential FROM grants",
        )?;
        let rows = stmt.query_map([], |r| {
            let credential = std::sync::OnceLock::new();
            if let Some(c) = r.get::<_, Option<String>>(10)? {
                let _ = credential.set(c);
            }
            Ok(Grant {
                grant_id: r.get(0)?,
                client_id: r.get(1)?,
                username: r.get(2)?,
                scope: r.get(3)?,
                resource: r.get(4)?,
                oauth_scope: r.get(5)?,
                redirect_uri: r.get(6)?,
                code_challenge: r.get(7)?,
                created_at: r.get(8)?,
                last_used_at: AtomicI64::new(r.get(9)?),
                credential,
            })
        })?;
        for g in rows {
            let g = g?;
            self.grants.insert(g.grant_id.clone(), Arc::new(g));
        }
        let mut stmt =
            conn.prepare("SELECT hash, kind, grant_id, expires_at, used, resource FROM tokens")?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(1)?;
            Ok((
                r.get::<_, String>(0)?,
                kind,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)? != 0,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (hash, kind, grant_id, expires_at, used, resource) = row?;
            let Some(kind) = TokenKind::parse(&kind) else {
                continue;
            };
            self.tokens.insert(
                hash,
                TokenRecord {
                    kind,
                    grant_id,
                    expires_at,
                    used,
                    resource,
                },
            );
        }
        Ok(())
    }

    // ----- clients -----

    /// The client `client_id` of `scope` (registered there, or its metadata document).
    pub fn client(&self, scope: &str, client_id: &str) -> Option<Arc<Client>> {
        if let Some(c) = self.clients.get(client_id)
            && c.scope == scope
            && !c.metadata_document
        {
            return Some(c.clone());
        }
        self.clients
            .get(&doc_key(scope, client_id))
            .map(|c| c.clone())
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn clients(&self) -> Vec<Arc<Client>> {
        self.clients.iter().map(|c| c.value().clone()).collect()
    }

    /// Saves a client (a registration, or a fetched metadata document, which replaces the
    /// earlier copy). A new one beyond `cap.max` takes the place of a client without a live
    /// grant (an unexpired code or token), which is deleted in the same transaction, so it
    /// stays gone after a restart: the least recently used of those saved at least
    /// `cap.young_ms` ago, or when none is left, the oldest of the younger ones (whose user may
    /// still be signing in, with no grant yet). Only when every client holds a live grant is
    /// the new one refused ([`StoreError::TooManyClients`]), so no one can lock registration
    /// out without signing in.
    pub fn save_client(
        &self,
        client: Client,
        cap: &ClientCap,
        now: i64,
    ) -> Result<Arc<Client>, StoreError> {
        let mut conn = self.db();
        let key = client.store_key();
        // Under the connection lock, so no grant or token changes while the room is chosen.
        let evicted = if self.clients.contains_key(&key) {
            Vec::new()
        } else {
            self.room_for_one(cap, now)?
        };
        let tx = conn.transaction()?;
        for old in &evicted {
            tx.execute("DELETE FROM clients WHERE client_id = ?1", params![old])?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO clients (client_id, scope, name, redirect_uris, secret_hash, auth_method, metadata_document, created_at, last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                key,
                client.scope,
                client.name,
                serde_json::to_string(&client.redirect_uris).unwrap_or_else(|_| "[]".into()),
                client.secret_hash,
                client.auth_method,
                client.metadata_document as i64,
                client.created_at,
                client.last_used_at.load(Ordering::Relaxed),
            ],
        )?;
        tx.commit()?;
        for old in &evicted {
            self.clients.remove(old);
        }
        if !evicted.is_empty() {
            tracing::info!(
                forgotten = ?evicted,
                "oauth: the client limit is reached; clients without a live grant were forgotten to make room"
            );
        }
        let client = Arc::new(client);
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    /// The keys of the clients to forget so that one more fits under `cap.max`, in the order
    /// of [`Store::save_client`] (an in-memory scan, done only at the limit). Refuses only when
    /// too few clients are without a live grant.
    fn room_for_one(&self, cap: &ClientCap, now: i64) -> Result<Vec<String>, StoreError> {
        let need = (self.clients.len() + 1).saturating_sub(cap.max);
        if need == 0 {
            return Ok(Vec::new());
        }
        let holding = self.clients_holding(&self.live_grants(now));
        // Sorted by (young, then by age if young, else by last use): older clients make room
        // first, least recently used first; the young ones only after them, oldest first.
        // Nothing is spared beyond that: sparing a client that anyone can create (a
        // registration) or keep (a sign-in page) would let anyone fill the cap for good.
        let mut idle: Vec<((bool, i64), String)> = self
            .clients
            .iter()
            .filter(|c| !holding.contains(&(c.scope.clone(), c.client_id.clone())))
            .map(|c| {
                let order = if now < c.created_at.saturating_add(cap.young_ms) {
                    (true, c.created_at)
                } else {
                    (false, c.last_used_at.load(Ordering::Relaxed))
                };
                (order, c.key().clone())
            })
            .collect();
        if idle.len() < need {
            return Err(StoreError::TooManyClients);
        }
        if idle.len() > need {
            idle.select_nth_unstable(need - 1);
            idle.truncate(need);
        }
        Ok(idle.into_iter().map(|(_, key)| key).collect())
    }

    /// Ids of the live grants: those with a code or token that has not expired (a used one
    /// counts too: it is kept until then so that its replay is caught).
    fn live_grants(&self, now: i64) -> HashSet<String> {
        self.tokens
            .iter()
            .filter(|t| t.expires_at > now)
            .map(|t| t.grant_id.clone())
            .collect()
    }

    /// `(scope, client_id)` of the clients holding one of the `live` grants.
    fn clients_holding(&self, live: &HashSet<String>) -> HashSet<(String, String)> {
        self.grants
            .iter()
            .filter(|g| live.contains(&g.grant_id))
            .map(|g| (g.scope.clone(), g.client_id.clone()))
            .collect()
    }

    // ----- grants and codes -----

    /// Records an approval and its first value (by hash) in one transaction: an authorization
    /// code (the OAuth flow) or an access token (a record viewer's browser sign-in, whose
    /// pseudo-client is never registered). A code is minted only for a client that is still
    /// registered, checked under the lock every client removal takes: otherwise
    /// [`StoreError::ClientGone`], and nothing is written.
    pub fn create_grant(
        &self,
        grant: Grant,
        kind: TokenKind,
        code_hash: &str,
        code_expires_at: i64,
    ) -> Result<Arc<Grant>, StoreError> {
        let mut conn = self.db();
        let client = self.client(&grant.scope, &grant.client_id);
        if kind == TokenKind::Code && client.is_none() {
            return Err(StoreError::ClientGone);
        }
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO grants (grant_id, client_id, username, scope, resource, oauth_scope, redirect_uri, code_challenge, created_at, last_used_at, credential) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                grant.grant_id,
                grant.client_id,
                grant.username,
                grant.scope,
                grant.resource,
                grant.oauth_scope,
                grant.redirect_uri,
                grant.code_challenge,
                grant.created_at,
                grant.last_used_at.load(Ordering::Relaxed),
                grant.credential.get(),
            ],
        )?;
        insert_token(&tx, code_hash, kind, &grant.grant_id, code_expires_at, None)?;
        if let Some(c) = &client {
            tx.execute(
                "UPDATE clients SET last_used_at = ?2 WHERE client_id = ?1",
                params![c.store_key(), grant.created_at],
            )?;
        }
        tx.commit()?;
        let grant = Arc::new(grant);
        self.grants.insert(grant.grant_id.clone(), grant.clone());
        self.tokens.insert(
            code_hash.to_string(),
            TokenRecord {
                kind,
                grant_id: grant.grant_id.clone(),
                expires_at: code_expires_at,
                used: false,
                resource: None,
            },
        );
        if let Some(c) = client {
            c.last_used_at.store(grant.created_at, Ordering::Relaxed);
        }
        Ok(grant)
    }

    pub fn grant(&self, grant_id: &str) -> Option<Arc<Grant>> {
        self.grants.get(grant_id).map(|g| g.clone())
    }

    pub fn grants(&self) -> Vec<Arc<Grant>> {
        self.grants.iter().map(|g| g.value().clone()).collect()
    }

    /// A code or token of `kind` with its grant, if it exists (used or not, expired or not).
    pub fn lookup(&self, hash: &str, kind: TokenKind) -> Option<(TokenRecord, Arc<Grant>)> {
        let rec = self.tokens.get(hash)?.clone();
        if rec.kind != kind {
            return None;
        }
        let grant = self.grant(&rec.grant_id)?;
        Some((rec, grant))
    }

    /// Redeems a single-use code or refresh token (`hash`) for a new access and refresh
    /// token. A second use revokes the whole grant. The access token is bound to `audience`
    /// when the token request named a resource narrower than the grant's (`None`: the
    /// grant's); the refresh token always carries the whole grant.
    pub fn redeem(
        &self,
        hash: &str,
        kind: TokenKind,
        now: i64,
        access_ttl_ms: i64,
        refresh_ttl_ms: i64,
        audience: Option<&str>,
    ) -> Result<Result<(Issued, Arc<Grant>), RedeemError>, StoreError> {
        let mut conn = self.db();
        let Some(rec) = self.tokens.get(hash).map(|r| r.clone()) else {
            return Ok(Err(RedeemError::Unknown));
        };
        let Some(grant) = self.grant(&rec.grant_id) else {
            return Ok(Err(RedeemError::Unknown));
        };
        if rec.kind != kind {
            return Ok(Err(RedeemError::Unknown));
        }
        if rec.used {
            drop(conn);
            self.revoke_grants(std::slice::from_ref(&grant.grant_id))?;
            return Ok(Err(RedeemError::Reused));
        }
        if rec.expires_at <= now {
            return Ok(Err(RedeemError::Expired));
        }
        let access = super::random_token("mcp_at_");
        let refresh = super::random_token("mcp_rt_");
        let (access_hash, refresh_hash) = (super::hash_token(&access), super::hash_token(&refresh));
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE tokens SET used = 1 WHERE hash = ?1 AND used = 0",
            params![hash],
        )?;
        if changed != 1 {
            return Ok(Err(RedeemError::Unknown));
        }
        insert_token(
            &tx,
            &access_hash,
            TokenKind::Access,
            &grant.grant_id,
            now + access_ttl_ms,
            audience,
        )?;
        insert_token(
            &tx,
            &refresh_hash,
            TokenKind::Refresh,
            &grant.grant_id,
            now + refresh_ttl_ms,
            None,
        )?;
        tx.execute(
            "UPDATE grants SET last_used_at = ?2 WHERE grant_id = ?1",
            params![grant.grant_id, now],
        )?;
        tx.commit()?;
        if let Some(mut r) = self.tokens.get_mut(hash) {
            r.used = true;
        }
        for (h, k, ttl, resource) in [
            (
                access_hash,
                TokenKind::Access,
                access_ttl_ms,
                audience.map(str::to_string),
            ),
            (refresh_hash, TokenKind::Refresh, refresh_ttl_ms, None),
        ] {
            self.tokens.insert(
                h,
                TokenRecord {
                    kind: k,
                    grant_id: grant.grant_id.clone(),
                    expires_at: now + ttl,
                    used: false,
                    resource,
                },
            );
        }
        grant.last_used_at.store(now, Ordering::Relaxed);
        if let Some(c) = self.client(&grant.scope, &grant.client_id) {
            c.last_used_at.store(now, Ordering::Relaxed);
        }
        Ok(Ok((
            Issued {
                access_token: access,
                refresh_token: refresh,
                access_expires_in: access_ttl_ms / 1000,
            },
            grant,
        )))
    }

    /// The grant and audience behind a live access token (the bearer check; memory only).
    pub fn check_access(&self, hash: &str, now: i64) -> Option<Access> {
        let rec = self.tokens.get(hash)?;
        if rec.kind != TokenKind::Access || rec.expires_at <= now {
            return None;
        }
        let grant = self.grant(&rec.grant_id)?;
        grant.last_used_at.store(now, Ordering::Relaxed);
        let resource = rec
            .resource
            .clone()
            .unwrap_or_else(|| grant.resource.clone());
        Some(Access { grant, resource })
    }

    // ----- revocation -----

    /// Revokes one access token.
    pub fn revoke_token(&self, hash: &str) -> Result<(), StoreError> {
        let conn = self.db();
        conn.execute("DELETE FROM tokens WHERE hash = ?1", params![hash])?;
        self.tokens.remove(hash);
        Ok(())
    }

    /// Ids of the grants `keep` selects.
    fn grant_ids(&self, keep: impl Fn(&Grant) -> bool) -> Vec<String> {
        self.grants
            .iter()
            .filter(|g| keep(g.value()))
            .map(|g| g.grant_id.clone())
            .collect()
    }

    /// Revokes grants and every code and token issued under them. Returns how many existed.
    pub fn revoke_grants(&self, ids: &[String]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.db();
        let tx = conn.transaction()?;
        let mut n = 0;
        for id in ids {
            tx.execute("DELETE FROM tokens WHERE grant_id = ?1", params![id])?;
            n += tx.execute("DELETE FROM grants WHERE grant_id = ?1", params![id])?;
        }
        tx.commit()?;
        for id in ids {
            self.grants.remove(id);
        }
        let set: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        self.tokens
            .retain(|_, r| !set.contains(r.grant_id.as_str()));
        Ok(n)
    }

    /// Revokes every grant of a client (in every scope) and forgets the client. Returns the
    /// grants revoked.
    pub fn revoke_client(&self, client_id: &str) -> Result<usize, StoreError> {
        // The client goes first: an approval finishing meanwhile then finds it gone
        // ([`Store::create_grant`]) or made its grant already, which is revoked below.
        {
            let conn = self.db();
            let keys: Vec<String> = self
                .clients
                .iter()
                .filter(|c| c.client_id == client_id)
                .map(|c| c.store_key())
                .collect();
            for key in keys {
                conn.execute("DELETE FROM clients WHERE client_id = ?1", params![key])?;
                self.clients.remove(&key);
            }
        }
        self.revoke_grants(&self.grant_ids(|g| g.client_id == client_id))
    }

    /// Revokes every grant a user approved.
    pub fn revoke_user(&self, username: &str) -> Result<usize, StoreError> {
        self.revoke_grants(&self.grant_ids(|g| g.username == username))
    }

    /// Revokes every grant.
    pub fn revoke_all(&self) -> Result<usize, StoreError> {
        self.revoke_grants(&self.grant_ids(|_| true))
    }

    // ----- housekeeping -----

    /// Deletes expired codes and tokens, grants with nothing left, and clients unused for
    /// `unused_client_ttl_ms` with no grant; writes `last_used_at` values kept in memory.
    /// Returns how many rows went.
    pub fn cleanup(&self, now: i64, unused_client_ttl_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.db();
        let live_grants = self.live_grants(now);
        let dead_grants: Vec<String> = self
            .grants
            .iter()
            .filter(|g| !live_grants.contains(&g.grant_id))
            .map(|g| g.grant_id.clone())
            .collect();
        let clients_with_grants = self.clients_holding(&live_grants);
        let dead_clients: Vec<String> = self
            .clients
            .iter()
            .filter(|c| {
                !clients_with_grants.contains(&(c.scope.clone(), c.client_id.clone()))
                    && c.last_used_at.load(Ordering::Relaxed) + unused_client_ttl_ms <= now
            })
            .map(|c| c.store_key())
            .collect();
        // A used code outlives its minute while its grant lives: presented again later, it
        // still revokes the grant (RFC 6749 §4.1.2), instead of reading as merely unknown.
        // One per grant, so this keeps little.
        let kept = |t: &TokenRecord| {
            t.expires_at > now
                || (t.kind == TokenKind::Code && t.used && live_grants.contains(&t.grant_id))
        };
        let doomed: Vec<(String, TokenKind)> = self
            .tokens
            .iter()
            .filter(|t| !kept(t.value()))
            .map(|t| (t.key().clone(), t.kind))
            .collect();
        let tx = conn.transaction()?;
        // Every expired row but the codes in one statement (rows the index never held, of a
        // kind this version does not know, included); the codes one by one, since those of
        // live grants stay.
        let mut n = tx.execute(
            "DELETE FROM tokens WHERE expires_at <= ?1 AND kind <> ?2",
            params![now, TokenKind::Code.as_str()],
        )?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM tokens WHERE hash = ?1")?;
            for (hash, _) in doomed.iter().filter(|(_, k)| *k == TokenKind::Code) {
                n += delete.execute(params![hash])?;
            }
        }
        for id in &dead_grants {
            n += tx.execute("DELETE FROM grants WHERE grant_id = ?1", params![id])?;
        }
        for id in &dead_clients {
            n += tx.execute("DELETE FROM clients WHERE client_id = ?1", params![id])?;
        }
        for g in self.grants.iter() {
            tx.execute(
                "UPDATE grants SET last_used_at = ?2 WHERE grant_id = ?1 AND last_used_at < ?2",
                params![g.grant_id, g.last_used_at.load(Ordering::Relaxed)],
            )?;
        }
        for c in self.clients.iter() {
            tx.execute(
                "UPDATE clients SET last_used_at = ?2 WHERE client_id = ?1 AND last_used_at < ?2",
                params![c.store_key(), c.last_used_at.load(Ordering::Relaxed)],
            )?;
        }
        tx.commit()?;
        for (hash, _) in &doomed {
            self.tokens.remove(hash);
        }
        for id in &dead_grants {
            self.grants.remove(id);
        }
        for id in &dead_clients {
            self.clients.remove(id);
        }
        Ok(n)
    }

    /// Live (unexpired) access and refresh tokens of a grant, for the admin listing.
    pub fn live_tokens(&self, grant_id: &str, now: i64) -> (usize, usize) {
        let mut access = 0;
        let mut refresh = 0;
        for t in self.tokens.iter() {
            if t.grant_id == grant_id && t.expires_at > now && !t.used {
                match t.kind {
                    TokenKind::Access => access += 1,
                    TokenKind::Refresh => refresh += 1,
                    TokenKind::Code => {}
                }
            }
        }
        (access, refresh)
    }

    /// Registered clients and live access tokens, for metrics (a scan of the in-memory index,
    /// done once per scrape).
    pub fn counts(&self, now: i64) -> (usize, usize) {
        let access = self
            .tokens
            .iter()
            .filter(|t| t.kind == TokenKind::Access && t.expires_at > now && !t.used)
            .count();
        (self.clients.len(), access)
    }

    /// Whether the row for `hash` is on disk (tests use it to check write-through).
    pub fn persisted(&self, hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT 1 FROM tokens WHERE hash = ?1",
                params![hash],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

fn insert_token(
    tx: &rusqlite::Transaction<'_>,
    hash: &str,
    kind: TokenKind,
    grant_id: &str,
    expires_at: i64,
    resource: Option<&str>,
) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT INTO tokens (hash, kind, grant_id, expires_at, used, resource) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
        params![hash, kind.as_str(), grant_id, expires_at, resource],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(max: usize) -> ClientCap {
        ClientCap {
            max,
            ..ClientCap::default()
        }
    }

    /// A store in `dir` with the client `c1` of `/chatgpt` registered (codes are minted for
    /// registered clients only).
    fn open_with_c1(dir: &Path) -> Store {
        let store = Store::open(dir).expect("open");
        let c1 = Client {
            client_id: "c1".into(),
            scope: "/chatgpt".into(),
            name: "c1".into(),
            redirect_uris: vec!["https://chatgpt.com/cb".into()],
            secret_hash: None,
            auth_method: "none".into(),
            metadata_document: false,
            created_at: 0,
            last_used_at: AtomicI64::new(0),
        };
        store.save_client(c1, &cap(10), 0).expect("save c1");
        store
    }

    fn grant(id: &str, user: &str, client: &str) -> Grant {
        Grant {
            grant_id: id.into(),
            client_id: client.into(),
            username: user.into(),
            scope: "/chatgpt".into(),
            resource: "http://x/chatgpt/mcp".into(),
            oauth_scope: "mcp".into(),
            redirect_uri: "https://chatgpt.com/cb".into(),
            code_challenge: "c".into(),
            created_at: now_ms(),
            last_used_at: AtomicI64::new(now_ms()),
            credential: std::sync::OnceLock::new(),
        }
    }

    /// Grant `g1` to alice through client `c1` with the code `codehash`, redeemed once.
    fn redeemed_code(store: &Store, now: i64, access_ttl: i64, refresh_ttl: i64) -> Issued {
        store
            .create_grant(
                grant("g1", "alice", "c1"),
                TokenKind::Code,
                "codehash",
                now + 60_000,
            )
            .expect("grant");
        let (issued, _) = store
            .redeem(
                "codehash",
                TokenKind::Code,
                now,
                access_ttl,
                refresh_ttl,
                None,
            )
            .expect("db")
            .expect("first use");
        issued
    }

    #[test]
    fn a_code_redeems_once_and_a_second_use_revokes_what_it_issued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_c1(dir.path());
        let now = now_ms();
        let issued = redeemed_code(&store, now, 3_600_000, 86_400_000);
        let access = super::super::hash_token(&issued.access_token);
        assert!(store.check_access(&access, now).is_some());
        // A `{:?}` of the pair, in a log line or an error, shows no token.
        let shown = format!("{issued:?}");
        assert!(
            !shown.contains(&issued.access_token) && !shown.contains(&issued.refresh_token),
            "{shown}"
        );
        let again = store
            .redeem(
                "codehash",
                TokenKind::Code,
                now,
                3_600_000,
                86_400_000,
                None,
            )
            .expect("db");
        assert_eq!(again.err(), Some(RedeemError::Reused));
        assert!(store.check_access(&access, now).is_none());
        assert!(!store.persisted(&access).expect("db"));
    }

    #[test]
    fn a_code_replayed_after_its_minute_still_revokes_its_grant_even_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_c1(dir.path());
        let now = now_ms();
        let issued = redeemed_code(&store, now, 3_600_000, 86_400_000);
        let access = super::super::hash_token(&issued.access_token);
        // Two minutes on, the code has expired and cleanup has run, here and after a restart.
        let later = now + 120_000;
        store.cleanup(later, 1000).expect("cleanup");
        assert!(store.persisted("codehash").expect("db"));
        drop(store);
        let store = open_with_c1(dir.path());
        store.cleanup(later, 1000).expect("cleanup");
        assert!(store.check_access(&access, later).is_some());
        let replay = store
            .redeem(
                "codehash",
                TokenKind::Code,
                later,
                3_600_000,
                86_400_000,
                None,
            )
            .expect("db");
        assert_eq!(replay.err(), Some(RedeemError::Reused));
        assert!(store.check_access(&access, later).is_none());
        assert!(store.grant("g1").is_none());
    }

    #[test]
    fn a_used_code_goes_with_its_grant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_c1(dir.path());
        let now = now_ms();
        redeemed_code(&store, now, 1000, 2000);
        // A row the index never held (a kind this version does not know) goes too.
        rusqlite::Connection::open(dir.path().join("oauth.sqlite"))
            .and_then(|c| {
                c.execute(
                    "INSERT INTO tokens (hash, kind, grant_id, expires_at, used) VALUES ('odd', 'mystery', 'g1', ?1, 0)",
                    params![now],
                )
            })
            .expect("a row of an unknown kind");
        // Every token of the grant has expired: the used code is not kept for ever.
        store.cleanup(now + 120_000, 1000).expect("cleanup");
        assert!(!store.persisted("codehash").expect("db"));
        assert!(!store.persisted("odd").expect("db"));
        assert!(store.grant("g1").is_none());
    }

    #[test]
    fn an_expired_code_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_c1(dir.path());
        let now = now_ms();
        store
            .create_grant(
                grant("g1", "alice", "c1"),
                TokenKind::Code,
                "codehash",
                now - 1,
            )
            .expect("grant");
        let r = store
            .redeem("codehash", TokenKind::Code, now, 1000, 1000, None)
            .expect("db");
        assert_eq!(r.err(), Some(RedeemError::Expired));
    }

    #[test]
    fn everything_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = now_ms();
        let access = {
            let store = open_with_c1(dir.path());
            store
                .create_grant(
                    grant("g1", "alice", "c1"),
                    TokenKind::Code,
                    "codehash",
                    now + 60_000,
                )
                .expect("grant");
            let (issued, _) = store
                .redeem(
                    "codehash",
                    TokenKind::Code,
                    now,
                    3_600_000,
                    86_400_000,
                    None,
                )
                .expect("db")
                .expect("redeem");
            super::super::hash_token(&issued.access_token)
        };
        let store = Store::open(dir.path()).expect("reopen");
        let a = store.check_access(&access, now).expect("still valid");
        assert_eq!(a.grant.username, "alice");
        // The used code is remembered too, so a replay after a restart is still caught.
        let r = store
            .redeem("codehash", TokenKind::Code, now, 1, 1, None)
            .expect("db");
        assert_eq!(r.err(), Some(RedeemError::Reused));
    }

    #[test]
    fn revoking_a_user_ends_only_their_grants() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_c1(dir.path());
        let now = now_ms();
        store
            .create_grant(
                grant("g1", "alice", "c1"),
                TokenKind::Code,
                "h1",
                now + 60_000,
            )
            .expect("grant");
        store
            .create_grant(
                grant("g2", "bob", "c1"),
                TokenKind::Code,
                "h2",
                now + 60_000,
            )
            .expect("grant");
        assert_eq!(store.revoke_user("alice").expect("db"), 1);
        assert!(store.grant("g1").is_none());
        assert!(store.grant("g2").is_some());
    }

    #[test]
    fn cleanup_forgets_clients_unused_for_long_but_keeps_those_with_live_grants() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let now = now_ms();
        let client = |id: &str| Client {
            client_id: id.into(),
            scope: "/chatgpt".into(),
            name: "x".into(),
            redirect_uris: vec!["https://chatgpt.com/cb".into()],
            secret_hash: None,
            auth_method: "none".into(),
            metadata_document: false,
            created_at: now - 10_000,
            last_used_at: AtomicI64::new(now - 10_000),
        };
        store
            .save_client(client("idle"), &cap(10), now)
            .expect("save");
        store
            .save_client(client("busy"), &cap(10), now)
            .expect("save");
        store
            .create_grant(
                grant("g1", "alice", "busy"),
                TokenKind::Code,
                "h1",
                now + 60_000,
            )
            .expect("grant");
        store
            .client("/chatgpt", "busy")
            .expect("busy")
            .last_used_at
            .store(now - 10_000, Ordering::Relaxed);
        store.cleanup(now, 5_000).expect("cleanup");
        assert!(store.client("/chatgpt", "idle").is_none());
        assert!(store.client("/chatgpt", "busy").is_some());
        let reopened = Store::open(dir.path()).expect("reopen");
        assert!(reopened.client("/chatgpt", "idle").is_none());
    }

    #[test]
    fn one_metadata_document_can_be_a_client_of_two_scopes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = "https://app.example/client.json";
        let doc = |scope: &str| Client {
            client_id: url.into(),
            scope: scope.into(),
            name: scope.into(),
            redirect_uris: vec![],
            secret_hash: None,
            auth_method: "none".into(),
            metadata_document: true,
            created_at: 0,
            last_used_at: AtomicI64::new(0),
        };
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .save_client(doc("/chatgpt"), &cap(10), 0)
                .expect("save");
            store
                .save_client(doc("/claude"), &cap(10), 0)
                .expect("save");
        }
        let store = Store::open(dir.path()).expect("reopen");
        for scope in ["/chatgpt", "/claude"] {
            let c = store.client(scope, url).expect("client");
            assert_eq!((c.client_id.as_str(), c.scope.as_str()), (url, scope));
        }
        assert!(store.client("/other", url).is_none());
        store.revoke_client(url).expect("revoke");
        assert!(store.client("/chatgpt", url).is_none() && store.client("/claude", url).is_none());
        assert!(
            Store::open(dir.path())
                .expect("reopen")
                .client("/claude", url)
                .is_none()
        );
    }

    #[test]
    fn at_the_client_cap_the_least_recently_used_client_without_a_live_grant_makes_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let now = now_ms();
        let c = |id: &str| Client {
            client_id: id.into(),
            scope: "/chatgpt".into(),
            name: "x".into(),
            redirect_uris: vec![],
            secret_hash: None,
            auth_method: "none".into(),
            metadata_document: false,
            created_at: now,
            last_used_at: AtomicI64::new(now),
        };
        let grant_until = |g: &str, client: &str, expires_at: i64| {
            store
                .create_grant(grant(g, "alice", client), TokenKind::Code, g, expires_at)
                .expect("grant")
        };
        let used_at = |id: &str, at: i64| {
            if let Some(c) = store.client("/chatgpt", id) {
                c.last_used_at.store(at, Ordering::Relaxed);
            }
        };
        for id in ["held", "expired", "idle"] {
            store.save_client(c(id), &cap(3), now).expect("save");
        }
        grant_until("g1", "held", now + 60_000);
        grant_until("g2", "expired", now - 1);
        used_at("held", now - 3000);
        used_at("expired", now - 2000);
        used_at("idle", now - 1000);
        // `held` is the least recently used, but its grant is live; `expired`'s is not.
        store
            .save_client(c("new"), &cap(3), now)
            .expect("room made");
        assert!(store.client("/chatgpt", "expired").is_none());
        assert!(store.client("/chatgpt", "held").is_some());
        store
            .save_client(c("new"), &cap(3), now)
            .expect("an update needs no room");
        assert_eq!(store.client_count(), 3);
        grant_until("g3", "idle", now + 60_000);
        grant_until("g4", "new", now + 60_000);
        assert!(matches!(
            store.save_client(c("refused"), &cap(3), now),
            Err(StoreError::TooManyClients)
        ));
        let reopened = Store::open(dir.path()).expect("reopen");
        assert!(reopened.client("/chatgpt", "expired").is_none());
        assert_eq!(reopened.client_count(), 3);
    }

    #[test]
    fn at_the_client_cap_young_clients_make_room_last_and_only_live_grants_are_spared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let now = now_ms();
        let c = |id: &str, created_at: i64| Client {
            client_id: id.into(),
            scope: "/chatgpt".into(),
            name: "x".into(),
            redirect_uris: vec![],
            secret_hash: None,
            auth_method: "none".into(),
            metadata_document: false,
            created_at,
            last_used_at: AtomicI64::new(created_at),
        };
        let cap = ClientCap {
            max: 3,
            young_ms: 600_000,
        };
        let save = |id: &str, created_at: i64| store.save_client(c(id, created_at), &cap, now);
        let hold = |g: &str, client: &str| {
            store
                .create_grant(grant(g, "alice", client), TokenKind::Code, g, now + 60_000)
                .expect("grant")
        };
        let kept = |id: &str| store.client("/chatgpt", id).is_some();
        save("old", now - 3_600_000).expect("save");
        save("y1", now - 2000).expect("save");
        save("y2", now - 1000).expect("save");
        // Used after every young one registered, and still the first to make room.
        if let Some(old) = store.client("/chatgpt", "old") {
            old.last_used_at.store(now, Ordering::Relaxed);
        }
        save("y3", now - 500).expect("room made");
        assert!(!kept("old") && kept("y1"));
        // Only young clients are left: the oldest makes room, rather than a refusal.
        save("y4", now).expect("room made");
        assert!(!kept("y1") && kept("y2") && kept("y3") && kept("y4"));
        // Grants are what is spared; the one client without a live grant makes room.
        hold("g3", "y3");
        hold("g4", "y4");
        save("y5", now).expect("room made");
        assert!(!kept("y2") && kept("y3") && kept("y4") && kept("y5"));
        hold("g5", "y5");
        assert!(matches!(save("y6", now), Err(StoreError::TooManyClients)));
        assert_eq!(store.client_count(), 3);
    }

    #[test]
    fn no_code_is_minted_for_a_client_that_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let now = now_ms();
        let r = store.create_grant(
            grant("g1", "alice", "gone"),
            TokenKind::Code,
            "h1",
            now + 60_000,
        );
        assert!(matches!(r, Err(StoreError::ClientGone)));
        assert!(store.grant("g1").is_none() && !store.persisted("h1").expect("db"));
    }

    #[test]
    fn an_access_token_bound_narrower_than_its_grant_stays_so_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = now_ms();
        let narrow = "http://x/chatgpt/sse";
        let (access, refresh) = {
            let store = open_with_c1(dir.path());
            let mut g = grant("g1", "alice", "c1");
            g.resource = "http://x/chatgpt".into();
            store
                .create_grant(g, TokenKind::Code, "codehash", now + 60_000)
                .expect("grant");
            let (issued, _) = store
                .redeem(
                    "codehash",
                    TokenKind::Code,
                    now,
                    60_000,
                    60_000,
                    Some(narrow),
                )
                .expect("db")
                .expect("redeem");
            (
                super::super::hash_token(&issued.access_token),
                super::super::hash_token(&issued.refresh_token),
            )
        };
        let store = Store::open(dir.path()).expect("reopen");
        let a = store.check_access(&access, now).expect("live");
        assert_eq!(a.resource, narrow);
        assert_eq!(a.grant.resource, "http://x/chatgpt");
        let (rec, _) = store.lookup(&refresh, TokenKind::Refresh).expect("refresh");
        assert_eq!(
            rec.resource, None,
            "the refresh token carries the whole grant"
        );
    }

    #[test]
    fn a_state_file_from_before_token_audiences_opens_and_keeps_its_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = now_ms();
        {
            let conn = Connection::open(dir.path().join("oauth.sqlite")).expect("create");
            conn.execute_batch(&SCHEMA.replace(", resource TEXT);", ");"))
                .expect("old schema");
            conn.execute(
                "INSERT INTO tokens (hash, kind, grant_id, expires_at, used) VALUES ('h', 'access', 'g1', ?1, 0)",
                params![now + 60_000],
            )
            .expect("old token");
        }
        let store = Store::open(dir.path()).expect("migrated");
        let rec = store.tokens.get("h").map(|r| r.clone()).expect("kept");
        assert_eq!((rec.kind, rec.resource), (TokenKind::Access, None));
        let has_column = store
            .db()
            .prepare("SELECT 1 FROM pragma_table_info('tokens') WHERE name = 'resource'")
            .and_then(|mut q| q.exists([]))
            .expect("pragma");
        assert!(has_column);
        drop(store);
        Store::open(dir.path()).expect("opens again once migrated");
    }

    /// Grants from before grants kept their user's credential: the column is added, and at
    /// start each grant of a configured user is tied to that user's credential of now (once,
    /// kept across restarts); a grant of a name no longer configured stays untied.
    #[test]
    fn grants_from_before_credentials_are_tied_to_their_users_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let conn = Connection::open(dir.path().join("oauth.sqlite")).expect("create");
            conn.execute_batch(&SCHEMA.replace(", credential TEXT);", ");"))
                .expect("old schema");
            for (id, user) in [("g1", "alice"), ("g2", "gone")] {
                conn.execute(
                    "INSERT INTO grants (grant_id, client_id, username, scope, resource, oauth_scope, redirect_uri, code_challenge, created_at, last_used_at) VALUES (?1, 'c1', ?2, '/chatgpt', 'r', 'mcp', '', '', 0, 0)",
                    params![id, user],
                )
                .expect("old grant");
            }
        }
        let of = |name: &str| (name == "alice").then(|| "alice-now".to_string());
        let store = Store::open(dir.path()).expect("migrated");
        assert_eq!(store.adopt_credentials(of).expect("adopt"), 1);
        let credential =
            |s: &Store, id: &str| s.grants.get(id).and_then(|g| g.credential.get().cloned());
        assert_eq!(credential(&store, "g1").as_deref(), Some("alice-now"));
        assert_eq!(credential(&store, "g2"), None);
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(credential(&store, "g1").as_deref(), Some("alice-now"));
        assert_eq!(store.adopt_credentials(of).expect("adopt"), 0, "once");
    }

    /// Overlapping restarts: several processes opening the same old file at once must all
    /// start, whichever of them adds the column.
    #[test]
    fn a_state_file_from_before_token_audiences_opened_by_many_at_once_migrates_once() {
        const OPENERS: usize = 8;
        for round in 0..10 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("oauth.sqlite");
            {
                let conn = Connection::open(&path).expect("create");
                conn.pragma_update(None, "journal_mode", "WAL")
                    .expect("wal");
                conn.execute_batch(&SCHEMA.replace(", resource TEXT);", ");"))
                    .expect("old schema");
            }
            let start = std::sync::Barrier::new(OPENERS);
            let results: Vec<Result<Store, StoreError>> = std::thread::scope(|scope| {
                let openers: Vec<_> = (0..OPENERS)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            Store::open_file(&path)
                        })
                    })
                    .collect();
                openers
                    .into_iter()
                    .map(|t| t.join().expect("no panic"))
                    .collect()
            });
            for r in results {
                if let Err(e) = r {
                    panic!("round {round}: an opener failed: {e}");
                }
            }
            let columns: i64 = Connection::open(&path)
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM pragma_table_info('tokens') WHERE name = 'resource'",
                        [],
                        |r| r.get(0),
                    )
                })
                .expect("pragma");
            assert_eq!(columns, 1);
        }
    }

    #[test]
    fn cleanup_drops_expired_tokens_and_empty_grants() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_with_c1(dir.path());
        let now = now_ms();
        store
            .create_grant(grant("g1", "alice", "c1"), TokenKind::Code, "h1", now - 1)
            .expect("grant");
        store
            .create_grant(
                grant("g2", "bob", "c1"),
                TokenKind::Code,
                "h2",
                now + 60_000,
            )
            .expect("grant");
        store.cleanup(now, 1000).expect("cleanup");
        assert!(store.grant("g1").is_none());
        assert!(store.grant("g2").is_some());
        assert!(!store.persisted("h1").expect("db"));
    }
}
