//! Configuration: strict serde types, defaults in one place, validation with messages that
//! name the key, the problem and the fix.
//!
//! The whole file is loaded and validated before any port is bound (see `app::run`); a bad
//! configuration is one [`ConfigError`] and exit code 64 (`EX_USAGE`). Every key is documented
//! in `config.toml.example`, which a test parses so the two cannot drift apart.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::db::guard::AccessRules;

/// A configuration problem: which key, what is wrong, how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("config error at `{key}`: {problem}\n  fix: {fix}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `scope[1].database`.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// What the operator should change.
    pub fix: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener, public URL, state directory and HTTP limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Named databases that scopes refer to.
    #[serde(default, rename = "database")]
    pub databases: Vec<DatabaseConfig>,
    /// Path prefixes (`/chatgpt`, `/claude`, …), each serving one database with one tool profile.
    #[serde(default, rename = "scope")]
    pub scopes: Vec<ScopeConfig>,
    /// The OAuth 2.1 authorization server: token lifetimes, limits and the people who may sign in.
    #[serde(default)]
    pub oauth: OAuthConfig,
    /// The local-only admin endpoint (`mssql-mcp tokens …` talks to it).
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[tls]`: ACME, PEM files or plain HTTP.
    #[serde(default)]
    pub tls: crate::edge::config::TlsConfig,
    /// `[access]`: the global IP allowlist.
    #[serde(default)]
    pub access: crate::edge::config::AccessConfig,
    /// `[limits]`: rate limits, stream caps and timeouts.
    #[serde(default)]
    pub limits: crate::edge::config::LimitsConfig,
    /// `[metrics]`: who may read `/metrics` on the main listener.
    #[serde(default)]
    pub metrics: crate::ops::config::MetricsConfig,
    /// `[audit]`: where the audit records of tool calls and OAuth decisions go.
    #[serde(default)]
    pub audit: crate::ops::config::AuditConfig,
    /// `[log]`: the format of the diagnostic log.
    #[serde(default)]
    pub log: crate::ops::config::LogConfig,
}

/// `[oauth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// The scope whose issuer answers at the root `/.well-known/oauth-authorization-server`
    /// (ChatGPT probes it). Default: the first `[[scope]]`.
    pub default_scope: Option<String>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds (each refresh issues a new one).
    pub refresh_token_ttl_secs: u64,
    /// Lifetime of an authorization code, in seconds (at most 60).
    pub code_ttl_secs: u64,
    /// How long the sign-in page of one authorization request stays valid, in seconds.
    pub login_page_ttl_secs: u64,
    /// Most registered clients kept (all scopes). At the limit a new client takes the place of
    /// one without a live grant: the least recently used of those registered at least
    /// `login_page_ttl_secs` ago, else the oldest younger one (its user may still be signing
    /// in). Only when every client holds a live grant is registration refused (503
    /// `temporarily_unavailable` with `Retry-After`).
    pub max_clients: usize,
    /// A client with no live grant and no activity for this many seconds is forgotten.
    pub unused_client_ttl_secs: u64,
    /// Dynamic client registrations accepted per client IP address per hour.
    pub registrations_per_hour_per_ip: u32,
    /// Failed sign-ins per username from one network (IPv4 /24, IPv6 /48) within
    /// `failed_login_window_secs` before the name is locked for that network (for all networks
    /// at ten times this, counted together).
    pub failed_logins_per_user: u32,
    /// Failed sign-ins per client IP address within `failed_login_window_secs` before it is locked.
    pub failed_logins_per_ip: u32,
    /// The window (and lock time) of the failed sign-in limits, in seconds.
    pub failed_login_window_secs: u64,
    /// Accept HTTPS URLs as `client_id` (client ID metadata documents), fetched from the web.
    pub client_metadata_documents: bool,
    /// The people who may sign in and approve clients.
    pub users: Vec<OAuthUser>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            default_scope: None,
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            code_ttl_secs: 60,
            login_page_ttl_secs: 600,
            max_clients: 1000,
            unused_client_ttl_secs: 7 * 24 * 3600,
            registrations_per_hour_per_ip: 30,
            failed_logins_per_user: 5,
            failed_logins_per_ip: 20,
            failed_login_window_secs: 900,
            client_metadata_documents: true,
            users: Vec::new(),
        }
    }
}

/// `[[oauth.users]]`: someone who may sign in on the consent page.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthUser {
    /// Name typed on the sign-in page; recorded on every token and in the audit.
    pub username: String,
    /// Argon2id PHC string made by `mssql-mcp hash-password`.
    pub password_hash: String,
    /// Scope paths this person may grant access to, e.g. `["/chatgpt"]`; `["*"]` for all.
    pub scopes: Vec<String>,
}

impl fmt::Debug for OAuthUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthUser")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl OAuthUser {
    /// Whether this person may grant access to `scope_path`.
    pub fn may_grant(&self, scope_path: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == "*" || s.eq_ignore_ascii_case(scope_path))
    }
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Loopback address of the admin endpoint (never reachable from other machines).
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8009)),
        }
    }
}

/// Redirect hosts allowed when a scope does not list its own: ChatGPT's and Claude's
/// callbacks, and loopback for local tools (plain `http` is accepted only for loopback).
pub const DEFAULT_REDIRECT_HOSTS: [&str; 6] = [
    "chatgpt.com",
    "claude.ai",
    "claude.com",
    "localhost",
    "127.0.0.1",
    "[::1]",
];

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind, e.g. `0.0.0.0:443` or `127.0.0.1:8008`.
    pub listen: SocketAddr,
    /// Public base URL clients use (no trailing slash); every URL the server hands out is built
    /// from it, never from the request's `Host` header.
    pub public_url: Option<String>,
    /// Where persistent state (tokens, ACME cache, audit log) lives.
    pub state_dir: PathBuf,
    /// Run `serve` without authentication. Only for trusted networks; logged loudly.
    pub insecure_no_auth: bool,
    /// Extra `Origin` values accepted on MCP endpoints besides the public URL's origin and
    /// loopback origins (browser-based clients).
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Idle MCP sessions are ended after this many seconds.
    pub session_idle_secs: u64,
    /// At most this many live MCP sessions (all scopes); the oldest idle one is ended beyond it.
    pub max_sessions: usize,
    /// On SIGTERM, open requests get this many seconds to finish before the process exits.
    pub shutdown_grace_secs: u64,
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed;
    /// from anyone else those headers are ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            public_url: None,
            state_dir: PathBuf::from("/var/lib/mssql-mcp"),
            insecure_no_auth: false,
            allowed_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            session_idle_secs: 3600,
            max_sessions: 10_000,
            shutdown_grace_secs: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[[database]]`. (Unknown keys are refused by [`DatabaseKind`], which receives every key
/// this struct does not consume: serde cannot combine `flatten` with `deny_unknown_fields`.)
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// Name scopes use to refer to this database.
    pub name: String,
    /// Which backend and its connection settings.
    #[serde(flatten)]
    pub kind: DatabaseKind,
    /// Longest a single query may run, in seconds.
    #[serde(default = "defaults::query_timeout_secs")]
    pub query_timeout_secs: u64,
    /// Connections kept for this database.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: u32,
    /// What tables hold, in words, by `table` or `schema.table`: shown by `list_tables`,
    /// `describe_table` and `fetch`, over SQL Server's own `MS_Description`.
    #[serde(default)]
    pub table_descriptions: std::collections::BTreeMap<String, String>,
    /// What columns hold, by `table.column` or `schema.table.column`.
    #[serde(default)]
    pub column_descriptions: std::collections::BTreeMap<String, String>,
}

/// The backend of a database.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DatabaseKind {
    /// A SQLite file, opened read-only.
    Sqlite(SqliteConfig),
    /// Microsoft SQL Server (or Azure SQL) over TDS.
    Mssql(Box<MssqlConfig>),
}

/// `[[database]]` with `kind = "sqlite"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Path to the database file.
    pub path: PathBuf,
    /// The file never changes while the server runs (no other process writes it): SQLite
    /// then skips file locking and change detection on every query (`immutable=1`).
    /// Default false. Wrong answers follow if the file does change, so leave it off for a
    /// database something else updates.
    #[serde(default)]
    pub immutable: bool,
}

/// `[[database]]` with `kind = "mssql"`: where the server is and how to log in.
///
/// Either the separate keys (`host`, `database`, `user`, `password`, …) or one
/// `connection_string`, never both. Fields are `Option`s so that [`Config::validate`] can tell
/// "not written" from "written with the default value" and refuse mixtures; the defaults live
/// in the accessor methods.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MssqlConfig {
    /// Server host name or address.
    pub host: Option<String>,
    /// TCP port (default 1433). Not together with `instance`.
    pub port: Option<u16>,
    /// Named instance, resolved through the SQL Server Browser (UDP 1434).
    pub instance: Option<String>,
    /// Database to open.
    pub database: Option<String>,
    /// SQL login (a read-only login; see the README), or for `authentication = "windows"` the
    /// Windows account, `DOMAIN\user` or `user@domain`.
    pub user: Option<String>,
    /// The login's password: `{ file = … }` or `{ env = … }`, never inline.
    pub password: Option<SecretSource>,
    /// TLS: `off` (login packet only), `on`, `required` (default) or `strict` (TDS 8.0).
    pub encrypt: Option<MssqlEncrypt>,
    /// Accept any server certificate (no chain or host name check). Default false.
    pub trust_server_certificate: Option<bool>,
    /// A CA certificate (PEM or DER) to trust in addition to the system store.
    pub ca_file: Option<PathBuf>,
    /// `read_only` (default) or `read_write`; sent as ApplicationIntent at login.
    pub application_intent: Option<ApplicationIntent>,
    /// Application name the server sees (sys.dm_exec_sessions, traces). Default `mssql-mcp`.
    pub application_name: Option<String>,
    /// Longest a connection attempt (TCP, TLS, login) may take, in seconds. Default 15.
    pub connect_timeout_secs: Option<u64>,
    /// Connect to every address the host name resolves to at once and keep the first that
    /// answers (SQL Server's `MultiSubnetFailover`), rather than one after another. An
    /// availability group listener or failover cluster across subnets needs it: its name
    /// resolves to an address in each subnet, and only the current primary's answers. Default
    /// true with `host`; with `connection_string`, what the string says unless set here.
    pub multi_subnet_failover: Option<bool>,
    /// Largest row a query may return, in MiB as SQL Server sends it. Default 16. Bounds what
    /// one row makes this process hold: tiberius reads a row whole, and `TEXTSIZE` does not
    /// cut `xml` values.
    pub max_row_mib: Option<u32>,
    /// Tell SQL Server who asks: before each query, `sp_set_session_context` sets `mcp_user`
    /// (the signed-in user; NULL without sign-in), `mcp_scope` (the scope's path) and
    /// `mcp_client` (the OAuth client id the user signed in through), which row-level
    /// security predicates and views read with `SESSION_CONTEXT(N'mcp_user')`.
    /// SQL Server 2016+ and Azure SQL. Default false.
    pub session_context: Option<bool>,
    /// The isolation level every query reads at: `read_committed` (default), `snapshot` (row
    /// versions: a query neither waits for writers nor holds them up, and sees the database as
    /// it was when it began; needs `ALLOW_SNAPSHOT_ISOLATION ON`), or `read_uncommitted` (no
    /// locks taken or waited for, and dirty reads).
    pub isolation: Option<MssqlIsolation>,
    /// An ADO.NET connection string instead of the keys above. It holds the password, so it is
    /// a secret source too: `{ file = … }` or `{ env = … }`.
    pub connection_string: Option<SecretSource>,
    /// How to log in: `sql_password` (default: `user` and `password`), `windows` (a Windows
    /// account's `user` and `password`, by NTLM), or with a Microsoft Entra ID token (Azure
    /// SQL): `entra_managed_identity`, `entra_service_principal` or `entra_access_token`. See
    /// [`crate::db::entra`].
    pub authentication: Option<MssqlAuthentication>,
    /// `entra_access_token`: the token, `{ file = … }` (read again for every new connection, so
    /// another process can keep it fresh) or `{ env = … }`.
    pub access_token: Option<SecretSource>,
    /// `entra_service_principal`: the directory (tenant) ID.
    pub tenant_id: Option<String>,
    /// `entra_service_principal`: the application (client) ID; `entra_managed_identity`: the
    /// client ID of a user-assigned identity (default: the system-assigned one).
    pub client_id: Option<String>,
    /// `entra_service_principal`: the client secret, `{ file = … }` or `{ env = … }`.
    pub client_secret: Option<SecretSource>,
    /// `entra_service_principal`, instead of `client_secret`: a PEM file (or variable) holding
    /// the app's certificate and its RSA private key, which signs a client assertion.
    pub client_certificate: Option<SecretSource>,
    /// `entra_service_principal`: where tokens are asked for (default
    /// `https://login.microsoftonline.com`; another for a national cloud).
    pub entra_authority: Option<String>,
    /// The Entra resource a token is for (default `https://database.windows.net/`; another for
    /// a national cloud).
    pub entra_resource: Option<String>,
    /// `entra_managed_identity`: the token endpoint (default the Azure instance metadata
    /// service, `http://169.254.169.254/metadata/identity/oauth2/token`).
    pub managed_identity_endpoint: Option<String>,
}

/// How a SQL Server login proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MssqlAuthentication {
    /// A SQL login: `user` and `password`.
    SqlPassword,
    /// A Windows (Active Directory or local) account: `user` as `DOMAIN\user` and its
    /// `password`, proved by NTLMv2 (tiberius' `sspi-rs`).
    Windows,
    /// The managed identity of the Azure VM (or a user-assigned one, `client_id`).
    EntraManagedIdentity,
    /// An app registration: `tenant_id`, `client_id`, `client_secret`.
    EntraServicePrincipal,
    /// A token another process obtains: `access_token`.
    EntraAccessToken,
}

impl MssqlAuthentication {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            MssqlAuthentication::SqlPassword => "sql_password",
            MssqlAuthentication::Windows => "windows",
            MssqlAuthentication::EntraManagedIdentity => "entra_managed_identity",
            MssqlAuthentication::EntraServicePrincipal => "entra_service_principal",
            MssqlAuthentication::EntraAccessToken => "entra_access_token",
        }
    }

    /// Whether `user` and `password` say who logs in (rather than an Entra token).
    pub fn uses_password(self) -> bool {
        matches!(
            self,
            MssqlAuthentication::SqlPassword | MssqlAuthentication::Windows
        )
    }
}

/// What is wrong with `user` as the account of a Windows login, if anything: NTLM needs its
/// domain (`CORP\svc_mcp`, or `svc_mcp@corp.example.com`; for an account local to the
/// server, the server's computer name).
pub fn windows_account_problem(user: &str) -> Option<&'static str> {
    let parts = match (user.split_once('\\'), user.split_once('@')) {
        (Some(parts), None) | (None, Some(parts)) => parts,
        (None, None) => return Some("names no domain"),
        (Some(_), Some(_)) => return Some("has both a `\\` and an `@`"),
    };
    let ok = |s: &str| !s.trim().is_empty() && !s.contains(['\\', '@']);
    if !ok(parts.0) || !ok(parts.1) {
        return Some("is not DOMAIN\\user or user@domain");
    }
    None
}

/// `encrypt = "off"` with a Windows login: only the LOGIN7 packet is encrypted then, and
/// NTLM's answer to the server's challenge follows it in the clear, where anyone on the path
/// can copy it and guess the password offline.
pub fn windows_in_the_clear(key: &str) -> ConfigError {
    ConfigError::new(
        key,
        "a Windows login cannot go unencrypted: with encryption off, NTLM's answer to the server's challenge crosses the network in the clear after the login packet, and the password can be guessed from it offline",
        "use encrypt = \"required\" (the default; with ca_file, or trust_server_certificate = true on a trusted network, if the server's certificate is its own self-signed one)",
    )
}

/// `max_row_mib` when not written: 128 values of `TEXTSIZE` (128 KiB) each.
pub const MAX_ROW_MIB_DEFAULT: u32 = 16;
/// The largest `max_row_mib`: tiberius cannot read a value over 2 GiB at all, and a row this
/// size already costs several times it in memory while it is decoded.
pub const MAX_ROW_MIB_MAX: u32 = 1024;

/// TLS mode of a SQL Server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MssqlEncrypt {
    /// Only the login packet is encrypted.
    Off,
    /// Encrypt if the server can.
    On,
    /// Encrypt everything; fail if the server cannot.
    Required,
    /// TDS 8.0: TLS before anything else (SQL Server 2022+, Azure SQL).
    Strict,
}

/// The isolation level queries read at (`[[database]] isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MssqlIsolation {
    /// SQL Server's default: committed rows only; a read waits for a writer's locks (up to the
    /// lock timeout) unless the database has `READ_COMMITTED_SNAPSHOT ON`.
    ReadCommitted,
    /// Each query reads the committed rows as of its start, from row versions.
    Snapshot,
    /// No shared locks: never waits, but may read rows a writer later rolls back, and miss or
    /// repeat rows that move while it scans.
    ReadUncommitted,
}

impl MssqlIsolation {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            MssqlIsolation::ReadCommitted => "read_committed",
            MssqlIsolation::Snapshot => "snapshot",
            MssqlIsolation::ReadUncommitted => "read_uncommitted",
        }
    }

    /// As `SET TRANSACTION ISOLATION LEVEL` takes it.
    pub fn sql(self) -> &'static str {
        match self {
            MssqlIsolation::ReadCommitted => "READ COMMITTED",
            MssqlIsolation::Snapshot => "SNAPSHOT",
            MssqlIsolation::ReadUncommitted => "READ UNCOMMITTED",
        }
    }
}

/// The ApplicationIntent sent at login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationIntent {
    /// Routes to a readable secondary where one exists; one of the read-only layers.
    ReadOnly,
    /// The primary replica.
    ReadWrite,
}

impl MssqlEncrypt {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            MssqlEncrypt::Off => "off",
            MssqlEncrypt::On => "on",
            MssqlEncrypt::Required => "required",
            MssqlEncrypt::Strict => "strict",
        }
    }
}

impl ApplicationIntent {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationIntent::ReadOnly => "read_only",
            ApplicationIntent::ReadWrite => "read_write",
        }
    }
}

impl MssqlConfig {
    /// Port to connect to: the configured one, or 1433 unless a named instance is used.
    pub fn port(&self) -> Option<u16> {
        match (self.port, &self.instance) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => Some(1433),
        }
    }
    pub fn encrypt(&self) -> MssqlEncrypt {
        self.encrypt.unwrap_or(MssqlEncrypt::Required)
    }
    pub fn trust_server_certificate(&self) -> bool {
        self.trust_server_certificate.unwrap_or(false)
    }
    pub fn application_intent(&self) -> ApplicationIntent {
        self.application_intent
            .unwrap_or(ApplicationIntent::ReadOnly)
    }
    pub fn application_name(&self) -> &str {
        self.application_name.as_deref().unwrap_or("mssql-mcp")
    }
    pub fn connect_timeout_secs(&self) -> u64 {
        self.connect_timeout_secs.unwrap_or(15)
    }
    pub fn max_row_mib(&self) -> u32 {
        self.max_row_mib.unwrap_or(MAX_ROW_MIB_DEFAULT)
    }
    pub fn session_context(&self) -> bool {
        self.session_context.unwrap_or(false)
    }
    pub fn isolation(&self) -> MssqlIsolation {
        self.isolation.unwrap_or(MssqlIsolation::ReadCommitted)
    }
    pub fn authentication(&self) -> MssqlAuthentication {
        self.authentication
            .unwrap_or(MssqlAuthentication::SqlPassword)
    }

    /// The keys of one authentication kind are not written for another, and each kind has
    /// what it needs.
    fn validate_authentication(&self, key: &str) -> Result<(), ConfigError> {
        use MssqlAuthentication::*;
        let auth = self.authentication();
        // Each Entra key and the kinds that read it.
        let keys: [(&str, bool, &[MssqlAuthentication]); 8] = [
            (
                "access_token",
                self.access_token.is_some(),
                &[EntraAccessToken],
            ),
            (
                "tenant_id",
                self.tenant_id.is_some(),
                &[EntraServicePrincipal],
            ),
            (
                "client_id",
                self.client_id.is_some(),
                &[EntraServicePrincipal, EntraManagedIdentity],
            ),
            (
                "client_secret",
                self.client_secret.is_some(),
                &[EntraServicePrincipal],
            ),
            (
                "client_certificate",
                self.client_certificate.is_some(),
                &[EntraServicePrincipal],
            ),
            (
                "entra_authority",
                self.entra_authority.is_some(),
                &[EntraServicePrincipal],
            ),
            (
                "entra_resource",
                self.entra_resource.is_some(),
                &[
                    EntraServicePrincipal,
                    EntraManagedIdentity,
                    EntraAccessToken,
                ],
            ),
            (
                "managed_identity_endpoint",
                self.managed_identity_endpoint.is_some(),
                &[EntraManagedIdentity],
            ),
        ];
        for (name, set, readers) in keys {
            if set && !readers.contains(&auth) {
                let kinds: Vec<String> = readers
                    .iter()
                    .map(|k| format!("\"{}\"", k.as_str()))
                    .collect();
                return Err(ConfigError::new(
                    format!("{key}.{name}"),
                    format!(
                        "`{name}` does not apply to authentication = \"{}\" (it is for Microsoft Entra: {})",
                        auth.as_str(),
                        kinds.join(", ")
                    ),
                    format!("remove it, or set authentication = {}", kinds.join(" or ")),
                ));
            }
        }
        match (auth, self.user.as_deref()) {
            (SqlPassword, Some(user)) if user.contains('\\') => {
                return Err(ConfigError::new(
                    format!("{key}.user"),
                    format!(
                        "`{user}` is a Windows account (SQL logins cannot contain `\\`), but authentication is \"sql_password\""
                    ),
                    "add authentication = \"windows\" to log in as that account (its password in `password`), or use a SQL login",
                ));
            }
            (Windows, Some(user)) => {
                if let Some(problem) = windows_account_problem(user) {
                    return Err(ConfigError::new(
                        format!("{key}.user"),
                        format!("the Windows account `{user}` {problem}"),
                        "write user = 'CORP\\svc_mcp' (a TOML literal string, or \"CORP\\\\svc_mcp\") or 'svc_mcp@corp.example.com'; for an account local to the server, its computer name: 'SQLHOST\\svc_mcp'",
                    ));
                }
                if self.encrypt == Some(MssqlEncrypt::Off) {
                    return Err(windows_in_the_clear(&format!("{key}.encrypt")));
                }
                return Ok(());
            }
            (SqlPassword | Windows, _) => return Ok(()),
            _ => {}
        }
        for (name, set) in [
            ("user", self.user.is_some()),
            ("password", self.password.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    format!("{key}.{name}"),
                    format!(
                        "`{name}` is for authentication = \"sql_password\" or \"windows\"; with \"{}\" the token says who logs in",
                        auth.as_str()
                    ),
                    "remove user and password",
                ));
            }
        }
        let needed: &[(&str, bool, &str)] = match auth {
            EntraAccessToken => &[(
                "access_token",
                self.access_token.is_some(),
                "access_token = { file = \"/run/mssql-mcp/sql-token\" } (kept fresh by whatever writes it)",
            )],
            EntraServicePrincipal => &[
                (
                    "tenant_id",
                    self.tenant_id.is_some(),
                    "tenant_id = \"<directory (tenant) ID>\"",
                ),
                (
                    "client_id",
                    self.client_id.is_some(),
                    "client_id = \"<application (client) ID>\"",
                ),
                (
                    "client_secret",
                    self.client_secret.is_some() || self.client_certificate.is_some(),
                    "client_secret = { file = \"$CREDENTIALS_DIRECTORY/sql-client-secret\" } or client_certificate = { file = \"$CREDENTIALS_DIRECTORY/sql-app.pem\" }",
                ),
            ],
            SqlPassword | Windows | EntraManagedIdentity => &[],
        };
        if let Some((name, _, example)) = needed.iter().find(|(_, set, _)| !set) {
            return Err(ConfigError::new(
                format!("{key}.{name}"),
                format!("authentication = \"{}\" needs `{name}`", auth.as_str()),
                format!("add {example}"),
            ));
        }
        if self.client_secret.is_some() && self.client_certificate.is_some() {
            return Err(ConfigError::new(
                format!("{key}.client_certificate"),
                "`client_secret` and `client_certificate` cannot both be set",
                "keep one: the certificate (safer) or the secret",
            ));
        }
        for (name, value) in [
            ("tenant_id", &self.tenant_id),
            ("client_id", &self.client_id),
        ] {
            if let Some(v) = value
                && (v.is_empty()
                    || v.len() > 128
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
            {
                return Err(ConfigError::new(
                    format!("{key}.{name}"),
                    "must be an ID as the Azure portal shows it (letters, digits, `-`, `.`)",
                    "copy it from the app registration's or the managed identity's overview page",
                ));
            }
        }
        for (name, value, plain_http) in [
            ("entra_authority", &self.entra_authority, false),
            ("entra_resource", &self.entra_resource, false),
            (
                "managed_identity_endpoint",
                &self.managed_identity_endpoint,
                true,
            ),
        ] {
            if let Some(v) = value {
                check_entra_url(&format!("{key}.{name}"), v, plain_http)?;
            }
        }
        Ok(())
    }

    /// Where the server is, for logs and `check-config` (no secrets): `host:port`,
    /// `host\instance`, or `connection string from env X`.
    pub fn describe(&self) -> String {
        let password = || {
            self.password
                .as_ref()
                .map(SecretSource::describe)
                .unwrap_or_else(|| "?".into())
        };
        let user = self.user.as_deref().unwrap_or("?");
        let login = match self.authentication() {
            MssqlAuthentication::SqlPassword => {
                format!("user {user}, password from {}", password())
            }
            MssqlAuthentication::Windows => {
                format!("Windows login {user} (NTLM), password from {}", password())
            }
            MssqlAuthentication::EntraManagedIdentity => match &self.client_id {
                Some(id) => format!("Entra managed identity {id}"),
                None => "Entra managed identity (system-assigned)".into(),
            },
            MssqlAuthentication::EntraServicePrincipal => format!(
                "Entra app {} in tenant {}, {}",
                self.client_id.as_deref().unwrap_or("?"),
                self.tenant_id.as_deref().unwrap_or("?"),
                match (&self.client_certificate, &self.client_secret) {
                    (Some(c), _) => format!("certificate from {}", c.describe()),
                    (None, Some(s)) => format!("secret from {}", s.describe()),
                    (None, None) => "secret from ?".into(),
                },
            ),
            MssqlAuthentication::EntraAccessToken => format!(
                "Entra access token from {}",
                self.access_token
                    .as_ref()
                    .map(SecretSource::describe)
                    .unwrap_or_else(|| "?".into()),
            ),
        };
        let isolation = match self.isolation() {
            MssqlIsolation::ReadCommitted => String::new(),
            other => format!(", isolation {}", other.as_str()),
        };
        if let Some(src) = &self.connection_string {
            let string = match self.authentication() {
                MssqlAuthentication::SqlPassword => {
                    format!("connection string from {}", src.describe())
                }
                MssqlAuthentication::Windows => {
                    format!(
                        "connection string from {}, Windows login (NTLM)",
                        src.describe()
                    )
                }
                _ => format!("connection string from {}, {login}", src.describe()),
            };
            return string + &isolation;
        }
        let host = self.host.as_deref().unwrap_or("?");
        let addr = match (&self.instance, self.port()) {
            (Some(i), _) => format!("{host}\\{i}"),
            (None, Some(p)) => format!("{host}:{p}"),
            (None, None) => host.to_string(),
        };
        format!(
            "{addr}, database {}, {login}, encrypt {}{}, application_intent {}{}",
            self.database.as_deref().unwrap_or("?"),
            self.encrypt().as_str(),
            if self.trust_server_certificate() {
                " (any certificate trusted)"
            } else {
                ""
            },
            self.application_intent().as_str(),
            isolation,
        )
    }

    /// Checks everything that does not need the secrets; `key` is e.g. `database[1]`.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        self.validate_authentication(key)?;
        let password_login = self.authentication().uses_password();
        let separate: Vec<&str> = [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("instance", self.instance.is_some()),
            ("database", self.database.is_some()),
            ("user", self.user.is_some()),
            ("password", self.password.is_some()),
            ("encrypt", self.encrypt.is_some()),
            (
                "trust_server_certificate",
                self.trust_server_certificate.is_some(),
            ),
            ("ca_file", self.ca_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if self.connection_string.is_some() {
            if !separate.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.connection_string"),
                    format!(
                        "cannot be combined with {} (the connection string already says where and how to connect)",
                        separate.join(", ")
                    ),
                    "keep either connection_string or the separate keys (host, port, instance, database, user, password, encrypt, trust_server_certificate, ca_file)",
                ));
            }
        } else {
            let required = [
                (
                    "host",
                    self.host.as_deref().is_some_and(|h| !h.trim().is_empty()),
                    "host = \"sql.example.com\"",
                ),
                (
                    "database",
                    self.database
                        .as_deref()
                        .is_some_and(|d| !d.trim().is_empty()),
                    "database = \"Sales\"",
                ),
                (
                    "user",
                    !password_login || self.user.as_deref().is_some_and(|u| !u.trim().is_empty()),
                    "user = \"mcp_reader\" (a login with read rights only)",
                ),
                (
                    "password",
                    !password_login || self.password.is_some(),
                    "password = { env = \"MSSQL_PASSWORD\" } or { file = \"/run/credentials/mssql-mcp.service/db-password\" }",
                ),
            ];
            for (name, present, example) in required {
                if !present {
                    let problem = if name == "host" && separate.is_empty() {
                        "an mssql database needs `host` (with `database`, `user` and `password`) or a `connection_string`".to_string()
                    } else {
                        format!("`{name}` is missing or empty")
                    };
                    return Err(ConfigError::new(
                        format!("{key}.{name}"),
                        problem,
                        format!("add {example}"),
                    ));
                }
            }
            if self.port.is_some() && self.instance.is_some() {
                return Err(ConfigError::new(
                    format!("{key}.instance"),
                    "`port` and `instance` cannot both be set (an instance is found through the SQL Server Browser, a port is connected to directly)",
                    "remove `instance` to connect to the port, or remove `port` to look the instance up",
                ));
            }
            if self.port == Some(0) {
                return Err(ConfigError::new(
                    format!("{key}.port"),
                    "0 is not a port",
                    "remove it for the default of 1433",
                ));
            }
            if self.trust_server_certificate() && self.ca_file.is_some() {
                return Err(ConfigError::new(
                    format!("{key}.trust_server_certificate"),
                    "`trust_server_certificate = true` skips certificate checks, so `ca_file` would be ignored",
                    "keep `ca_file` (safer) and remove `trust_server_certificate`, or the other way round",
                ));
            }
            if let Some(ca) = &self.ca_file
                && !ca.is_file()
            {
                return Err(ConfigError::new(
                    format!("{key}.ca_file"),
                    format!("{} is not a readable file", ca.display()),
                    "point it at the PEM or DER file of the CA that signed the server's certificate",
                ));
            }
        }
        let t = self.connect_timeout_secs();
        if t == 0 || t > 300 {
            return Err(ConfigError::new(
                format!("{key}.connect_timeout_secs"),
                format!("{t} is out of range"),
                "use 1 to 300 seconds (default 15)",
            ));
        }
        let m = self.max_row_mib();
        if m == 0 || m > MAX_ROW_MIB_MAX {
            return Err(ConfigError::new(
                format!("{key}.max_row_mib"),
                format!("{m} is out of range"),
                format!("use 1 to {MAX_ROW_MIB_MAX} MiB (default {MAX_ROW_MIB_DEFAULT})"),
            ));
        }
        let name = self.application_name();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(ConfigError::new(
                format!("{key}.application_name"),
                "must be 1 to 128 characters",
                "remove it for the default `mssql-mcp`",
            ));
        }
        Ok(())
    }
}

/// Which tools a scope offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolProfile {
    /// Exactly `search` and `fetch`, as ChatGPT connectors and Deep Research require.
    Chatgpt,
    /// `search`, `fetch`, `list_tables`, `describe_table`, `get_table_sample`, `execute_sql`.
    Full,
}

/// `[[scope]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// Path prefix, e.g. `/chatgpt`. One segment of letters, digits, `-` and `_`.
    pub path: String,
    /// Name of a `[[database]]`.
    pub database: String,
    /// Tool profile.
    #[serde(default = "defaults::profile")]
    pub profile: ToolProfile,
    /// Most rows any one tool call returns (larger results page with a cursor).
    #[serde(default = "defaults::max_rows")]
    pub max_rows: usize,
    /// About how many bytes of values one page of rows holds at most (a page that would pass
    /// it ends early, with a cursor for the rest; the first row always comes).
    #[serde(default = "defaults::max_result_bytes")]
    pub max_result_bytes: usize,
    /// How long search results stay fetchable from the cache, in seconds.
    #[serde(default = "defaults::cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// Most cached search results kept for this scope.
    #[serde(default = "defaults::cache_entries")]
    pub cache_entries: u64,
    /// About how many bytes of cached search results this scope keeps at most (the least
    /// used go first).
    #[serde(default = "defaults::cache_max_bytes")]
    pub cache_max_bytes: u64,
    /// Tables visible in this scope (patterns, `*` wildcard; empty = all).
    #[serde(default)]
    pub allow_tables: Vec<String>,
    /// Tables hidden in this scope (deny wins over allow).
    #[serde(default)]
    pub deny_tables: Vec<String>,
    /// Columns hidden in this scope: `table.column` or `schema.table.column`, `*` wildcards.
    #[serde(default)]
    pub deny_columns: Vec<String>,
    /// Hosts (optionally with a path prefix, `chatgpt.com/connector`) that OAuth clients may
    /// register redirect URIs on. Default: [`DEFAULT_REDIRECT_HOSTS`].
    #[serde(default)]
    pub allowed_redirect_hosts: Option<Vec<String>>,
    /// Client addresses allowed on this scope (CIDRs and presets such as `chatgpt`), on top
    /// of `[access] allow`. Empty = no extra restriction.
    #[serde(default)]
    pub allow_ips: Vec<String>,
}

impl ScopeConfig {
    /// The table and column rules as the guard takes them.
    pub fn access_rules(&self) -> AccessRules {
        AccessRules {
            allow_tables: self.allow_tables.clone(),
            deny_tables: self.deny_tables.clone(),
            deny_columns: self.deny_columns.clone(),
        }
    }

    /// The redirect host rules OAuth registration checks against.
    pub fn redirect_hosts(&self) -> Vec<String> {
        match &self.allowed_redirect_hosts {
            Some(list) => list.iter().map(|h| h.to_ascii_lowercase()).collect(),
            None => DEFAULT_REDIRECT_HOSTS
                .iter()
                .map(|h| h.to_string())
                .collect(),
        }
    }
}

mod defaults {
    use super::ToolProfile;
    pub fn query_timeout_secs() -> u64 {
        30
    }
    pub fn pool_size() -> u32 {
        8
    }
    pub fn profile() -> ToolProfile {
        ToolProfile::Full
    }
    pub fn max_rows() -> usize {
        500
    }
    pub fn max_result_bytes() -> usize {
        super::DEFAULT_MAX_RESULT_BYTES
    }
    pub fn cache_ttl_secs() -> u64 {
        3600
    }
    pub fn cache_entries() -> u64 {
        10_000
    }
    pub fn cache_max_bytes() -> u64 {
        super::DEFAULT_CACHE_MAX_BYTES
    }
}

/// Default `cache_max_bytes`: 64 MiB of cached search results per scope.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 << 20;

/// Range of `cache_max_bytes`: at least a few full pages, at most what a moka weight can
/// count (4 GiB).
pub const CACHE_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(u32::MAX as u64);

/// Range of `cache_ttl_secs`. 0 would expire every `sql:` id before `fetch` could read it,
/// and moka panics at startup on a time to live past about a thousand years. A cached row is
/// a search result quoted in one conversation, kept as it was read (later changes and
/// revoked access do not reach it), so a week covers a conversation taken up again days
/// later without serving stale copies for longer.
pub const CACHE_TTL_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=7 * 86_400;

/// Upper bound on `max_rows`: one tool result must stay a reasonable size for a model.
pub const MAX_ROWS_LIMIT: usize = 10_000;

/// Default `max_result_bytes`: 256 KiB of values and column names (the response repeats
/// them as structured content and as text), above a 500-row page of ordinary rows and below
/// what floods a model's context.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 256 * 1024;

/// The range of `max_result_bytes`.
pub const MAX_RESULT_BYTES_RANGE: std::ops::RangeInclusive<usize> = 4 * 1024..=64 * 1024 * 1024;

/// A secret value (password, key). Never printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is handed to the thing that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from: exactly one of a file (e.g. a systemd credential) or an
/// environment variable. Inline secrets are not accepted, so config files can be shared.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Read the secret from this file (trailing newline trimmed). `$CREDENTIALS_DIRECTORY` is
    /// expanded, for systemd `LoadCredential=`.
    pub file: Option<PathBuf>,
    /// Read the secret from this environment variable.
    pub env: Option<String>,
}

impl SecretSource {
    /// Where the secret comes from, for `check-config` and logs (never the secret itself).
    pub fn describe(&self) -> String {
        match (&self.file, &self.env) {
            (Some(path), None) => format!("file {}", path.display()),
            (None, Some(var)) => format!("env {var}"),
            _ => "(invalid: needs exactly one of file or env)".into(),
        }
    }

    /// Resolves the secret; `key` names the config key in errors.
    pub fn load(&self, key: &str) -> Result<Secret, ConfigError> {
        match (&self.file, &self.env) {
            (Some(path), None) => {
                let expanded = expand_credentials_dir(path);
                let text = std::fs::read_to_string(&expanded).map_err(|e| {
                    let unexpanded = expanded.to_string_lossy().contains(CREDENTIALS_VAR);
                    ConfigError::new(
                        format!("{key}.file"),
                        format!("cannot read {}: {e}", expanded.display()),
                        if unexpanded {
                            // Outside the unit (e.g. `sudo mssql-mcp check-config`), systemd
                            // has not set the variable.
                            "$CREDENTIALS_DIRECTORY is not set: systemd sets it for the service; \
                             elsewhere run with CREDENTIALS_DIRECTORY=<the directory LoadCredential= \
                             reads from>, e.g. CREDENTIALS_DIRECTORY=/etc/mssql-mcp"
                        } else {
                            "point it at a readable file (with systemd, LoadCredential= and \
                             $CREDENTIALS_DIRECTORY/name)"
                        },
                    )
                })?;
                let value = text.trim_end_matches(['\n', '\r']).to_string();
                if value.is_empty() {
                    return Err(ConfigError::new(
                        format!("{key}.file"),
                        format!("{} is empty", expanded.display()),
                        "write the secret into the file",
                    ));
                }
                Ok(Secret(value))
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                _ => Err(ConfigError::new(
                    format!("{key}.env"),
                    format!("environment variable {var} is not set or empty"),
                    format!("export {var}=… before starting, or use `file` instead"),
                )),
            },
            _ => Err(ConfigError::new(
                key,
                "needs exactly one of `file` or `env`",
                "write e.g. `{ file = \"/run/credentials/mssql-mcp.service/db-password\" }` or `{ env = \"DB_PASSWORD\" }`",
            )),
        }
    }
}

/// What a secret's `file` may start with: systemd's directory of the unit's credentials.
const CREDENTIALS_VAR: &str = "$CREDENTIALS_DIRECTORY";

fn expand_credentials_dir(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    match std::env::var("CREDENTIALS_DIRECTORY") {
        Ok(dir) if s.contains(CREDENTIALS_VAR) => PathBuf::from(s.replace(CREDENTIALS_VAR, &dir)),
        _ => path.to_path_buf(),
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "--config",
                format!("cannot read {}: {e}", path.display()),
                "pass the path of a readable TOML file (see config.toml.example)",
            )
        })?;
        Self::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // serde_path_to_error names the key a wrong value sits at (`database[0].pool_size`);
        // toml's span gives the line. Syntax errors have only the line.
        let line_of = |e: &toml::de::Error| {
            e.span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
        };
        let located = |e: &toml::de::Error, key: Option<String>, line: Option<usize>| {
            let problem = hide_string_values(e.message());
            let (key, problem) = match (key, line) {
                (Some(k), Some(l)) => (k, format!("{problem} (line {l})")),
                (Some(k), None) => (k, problem),
                (None, Some(l)) => (format!("line {l}"), problem),
                (None, None) => ("(file)".to_string(), problem),
            };
            let fix = if problem.contains("SecretSource") {
                "secrets are never written inline: use { file = \"/path/to/secret\" } or { env = \"VARIABLE\" }"
            } else {
                "check the key's spelling and type against config.toml.example"
            };
            ConfigError::new(key, problem, fix)
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let mut err = located(&e, None, line_of(&e));
            err.fix = "fix the TOML syntax there (see config.toml.example)".into();
            err
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let mut key = (path != ".").then_some(path);
            let mut line = line_of(e.inner());
            if let Some(at) = &key
                && let Some(field) = kind_field_at_fault(text, at)
            {
                // The line toml gave is the table's; the key's own line is below it.
                line = line
                    .and_then(|from| line_of_key(text, from, &field))
                    .or(line);
                key = Some(format!("{at}.{field}"));
            }
            located(e.inner(), key, line)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything serde cannot: references, ranges, URL shapes, patterns.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.server.public_url {
            validate_public_url(url)?;
        }
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                format!("{} is out of range", self.server.max_body_bytes),
                "use a value between 1024 and 67108864 (default 1048576)",
            ));
        }
        if self.server.max_sessions == 0 {
            return Err(ConfigError::new(
                "server.max_sessions",
                "must be at least 1",
                "remove it for the default of 10000",
            ));
        }
        // A session idle for less than a minute ends between a model's calls; a shutdown grace
        // past five minutes is more than any service manager waits (the shipped unit's
        // TimeoutStopSec is 30 s: keep the grace under it by the audit flush's 5 s).
        for (key, value, min, max, default) in [
            (
                "server.session_idle_secs",
                self.server.session_idle_secs,
                60,
                30 * 86_400,
                3600,
            ),
            (
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
                0,
                300,
                10,
            ),
        ] {
            check_range(key, value, min, max, default)?;
        }
        for (i, o) in self.server.allowed_origins.iter().enumerate() {
            if !is_origin(o) {
                return Err(ConfigError::new(
                    format!("server.allowed_origins[{i}]"),
                    format!(
                        "`{o}` is not an origin (a browser sends scheme://host[:port], no path)"
                    ),
                    "write it as the browser sends it, e.g. \"https://app.example.com\" (no trailing slash)",
                ));
            }
        }
        let mut names = HashSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            let key = format!("database[{i}]");
            if db.name.is_empty() || !names.insert(db.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("`{}` is empty or used twice", db.name),
                    "give every [[database]] a unique, non-empty name",
                ));
            }
            if db.query_timeout_secs == 0 || db.query_timeout_secs > 3600 {
                return Err(ConfigError::new(
                    format!("{key}.query_timeout_secs"),
                    format!("{} is out of range", db.query_timeout_secs),
                    "use 1 to 3600 seconds (default 30)",
                ));
            }
            if db.pool_size == 0 || db.pool_size > 256 {
                return Err(ConfigError::new(
                    format!("{key}.pool_size"),
                    format!("{} is out of range", db.pool_size),
                    "use 1 to 256 (default 8)",
                ));
            }
            if let DatabaseKind::Mssql(m) = &db.kind {
                m.validate(&key)?;
            }
            for (field, map, parts, form) in [
                (
                    "table_descriptions",
                    &db.table_descriptions,
                    1..=2,
                    "\"orders\" or \"dbo.orders\"",
                ),
                (
                    "column_descriptions",
                    &db.column_descriptions,
                    2..=3,
                    "\"orders.status\" or \"dbo.orders.status\"",
                ),
            ] {
                for (name, text) in map {
                    let split: Vec<&str> = name.split('.').collect();
                    if !parts.contains(&split.len())
                        || split
                            .iter()
                            .any(|p| p.is_empty() || p.trim() != *p || p.contains('*'))
                    {
                        return Err(ConfigError::new(
                            format!("{key}.{field}"),
                            format!("`{name}` is not a name of the form {form}"),
                            format!("write names like {form} (no patterns)"),
                        ));
                    }
                    if crate::db::description_text(text).is_none() {
                        return Err(ConfigError::new(
                            format!("{key}.{field}"),
                            format!("the description of `{name}` is empty"),
                            "write what it holds, or remove the entry",
                        ));
                    }
                }
            }
        }
        if self.scopes.is_empty() {
            return Err(ConfigError::new(
                "scope",
                "no [[scope]] is configured, so nothing would be served",
                "add a [[scope]] with `path` and `database` (see config.toml.example)",
            ));
        }
        let mut paths = HashSet::new();
        for (i, scope) in self.scopes.iter().enumerate() {
            let key = format!("scope[{i}]");
            validate_scope_path(&scope.path).map_err(|problem| {
                ConfigError::new(
                    format!("{key}.path"),
                    problem,
                    "use one path segment such as \"/chatgpt\" (letters, digits, '-', '_')",
                )
            })?;
            if !paths.insert(scope.path.to_ascii_lowercase()) {
                return Err(ConfigError::new(
                    format!("{key}.path"),
                    format!("`{}` is used by two scopes", scope.path),
                    "give every scope its own path",
                ));
            }
            if !names.contains(scope.database.as_str()) {
                return Err(ConfigError::new(
                    format!("{key}.database"),
                    format!("no [[database]] is named `{}`", scope.database),
                    format!(
                        "use one of: {}",
                        self.databases
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if scope.max_rows == 0 || scope.max_rows > MAX_ROWS_LIMIT {
                return Err(ConfigError::new(
                    format!("{key}.max_rows"),
                    format!("{} is out of range", scope.max_rows),
                    format!("use 1 to {MAX_ROWS_LIMIT} (default 500)"),
                ));
            }
            if !MAX_RESULT_BYTES_RANGE.contains(&scope.max_result_bytes) {
                return Err(ConfigError::new(
                    format!("{key}.max_result_bytes"),
                    format!("{} is out of range", scope.max_result_bytes),
                    format!(
                        "use {} to {} (default {DEFAULT_MAX_RESULT_BYTES})",
                        MAX_RESULT_BYTES_RANGE.start(),
                        MAX_RESULT_BYTES_RANGE.end()
                    ),
                ));
            }
            if !CACHE_TTL_SECS_RANGE.contains(&scope.cache_ttl_secs) {
                return Err(ConfigError::new(
                    format!("{key}.cache_ttl_secs"),
                    format!("{} is out of range", scope.cache_ttl_secs),
                    format!(
                        "use {} to {} seconds (default 3600)",
                        CACHE_TTL_SECS_RANGE.start(),
                        CACHE_TTL_SECS_RANGE.end()
                    ),
                ));
            }
            if scope.cache_entries == 0 {
                return Err(ConfigError::new(
                    format!("{key}.cache_entries"),
                    "must be at least 1",
                    "remove it for the default of 10000",
                ));
            }
            if !CACHE_MAX_BYTES_RANGE.contains(&scope.cache_max_bytes) {
                return Err(ConfigError::new(
                    format!("{key}.cache_max_bytes"),
                    format!("{} is out of range", scope.cache_max_bytes),
                    format!(
                        "use {} to {} (default {DEFAULT_CACHE_MAX_BYTES})",
                        CACHE_MAX_BYTES_RANGE.start(),
                        CACHE_MAX_BYTES_RANGE.end()
                    ),
                ));
            }
            // A cached result is about one page: a budget of a few pages at least, or
            // results would not be kept at all.
            if scope.cache_max_bytes < 4 * scope.max_result_bytes as u64 {
                return Err(ConfigError::new(
                    format!("{key}.cache_max_bytes"),
                    format!(
                        "{} is less than four pages of max_result_bytes ({})",
                        scope.cache_max_bytes, scope.max_result_bytes
                    ),
                    format!(
                        "raise it to at least {} or lower max_result_bytes",
                        4 * scope.max_result_bytes as u64
                    ),
                ));
            }
            scope.access_rules().validate().map_err(|problem| {
                ConfigError::new(
                    format!("{key}.allow_tables/deny_tables/deny_columns"),
                    problem,
                    "use patterns like \"orders\", \"dbo.*\" or \"employees.salary\"",
                )
            })?;
            for (j, h) in scope.redirect_hosts().iter().enumerate() {
                if !valid_redirect_host_rule(h) {
                    return Err(ConfigError::new(
                        format!("{key}.allowed_redirect_hosts[{j}]"),
                        format!("`{h}` is not a host name with an optional path"),
                        "write a host such as \"chatgpt.com\" or \"chatgpt.com/connector\" (no scheme)",
                    ));
                }
            }
        }
        self.validate_oauth()?;
        if !self.admin.listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "admin.listen",
                format!("{} is not a loopback address", self.admin.listen),
                "use 127.0.0.1:<port> or [::1]:<port>: the admin endpoint must stay on this machine",
            ));
        }
        crate::edge::config::validate(self)?;
        crate::ops::config::validate(self)?;
        Ok(())
    }

    fn validate_oauth(&self) -> Result<(), ConfigError> {
        let o = &self.oauth;
        if let Some(d) = &o.default_scope
            && !self.scopes.iter().any(|s| s.path.eq_ignore_ascii_case(d))
        {
            return Err(ConfigError::new(
                "oauth.default_scope",
                format!("no [[scope]] has path `{d}`"),
                "name one of the scopes' paths, e.g. \"/chatgpt\", or remove the key for the first scope",
            ));
        }
        let ranges: [(&str, u64, u64, u64, &str); 6] = [
            (
                "oauth.access_token_ttl_secs",
                o.access_token_ttl_secs,
                60,
                86_400,
                "3600",
            ),
            (
                "oauth.refresh_token_ttl_secs",
                o.refresh_token_ttl_secs,
                60,
                365 * 86_400,
                "2592000",
            ),
            ("oauth.code_ttl_secs", o.code_ttl_secs, 1, 60, "60"),
            (
                "oauth.login_page_ttl_secs",
                o.login_page_ttl_secs,
                30,
                86_400,
                "600",
            ),
            (
                "oauth.unused_client_ttl_secs",
                o.unused_client_ttl_secs,
                60,
                365 * 86_400,
                "604800",
            ),
            (
                "oauth.failed_login_window_secs",
                o.failed_login_window_secs,
                1,
                86_400,
                "900",
            ),
        ];
        for (key, value, min, max, default) in ranges {
            check_range(key, value, min, max, default)?;
        }
        for (name, zero) in [
            ("max_clients", o.max_clients == 0),
            (
                "registrations_per_hour_per_ip",
                o.registrations_per_hour_per_ip == 0,
            ),
            ("failed_logins_per_user", o.failed_logins_per_user == 0),
            ("failed_logins_per_ip", o.failed_logins_per_ip == 0),
        ] {
            if zero {
                return Err(ConfigError::new(
                    format!("oauth.{name}"),
                    "must be at least 1",
                    "remove the key for its default",
                ));
            }
        }
        let mut names = HashSet::new();
        for (i, u) in o.users.iter().enumerate() {
            let key = format!("oauth.users[{i}]");
            if u.username.is_empty()
                || u.username.len() > 64
                || u.username
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace())
                || !names.insert(u.username.as_str())
            {
                return Err(ConfigError::new(
                    format!("{key}.username"),
                    format!(
                        "`{}` is empty, too long, has spaces, or is used twice",
                        u.username
                    ),
                    "give every user a unique name of 1 to 64 visible characters",
                ));
            }
            if let Err(problem) = crate::oauth::password::check_hash(&u.password_hash) {
                return Err(ConfigError::new(
                    format!("{key}.password_hash"),
                    problem,
                    "paste the output of `mssql-mcp hash-password` (it reads the password from the terminal or stdin)",
                ));
            }
            if u.scopes.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.scopes"),
                    "is empty, so the user could sign in to nothing",
                    "list scope paths such as [\"/chatgpt\"], or [\"*\"] for every scope",
                ));
            }
            for (j, s) in u.scopes.iter().enumerate() {
                if s != "*" && !self.scopes.iter().any(|sc| sc.path.eq_ignore_ascii_case(s)) {
                    return Err(ConfigError::new(
                        format!("{key}.scopes[{j}]"),
                        format!("no [[scope]] has path `{s}`"),
                        "list scope paths such as \"/chatgpt\", or \"*\" for every scope",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The scope answering at the root discovery paths.
    pub fn default_scope_path(&self) -> Option<&str> {
        self.oauth
            .default_scope
            .as_deref()
            .or_else(|| self.scopes.first().map(|s| s.path.as_str()))
    }

    /// The public base URL, or one derived from the listen address for local use.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => crate::edge::config::default_public_url(self),
        }
    }
}

/// Which key of a `[[database]]` table's `kind`-specific keys a deserialization error is
/// about. `key` is where serde_path_to_error stopped (`database[0]`): serde buffers the
/// `kind`-tagged fields before they reach [`DatabaseKind`], so the path cannot go further.
/// This deserializes that table's own keys for its kind on their own to find the field.
fn kind_field_at_fault(text: &str, key: &str) -> Option<String> {
    let index: usize = key
        .strip_prefix("database[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let doc: toml::Table = toml::from_str(text).ok()?;
    let mut table = doc
        .get("database")?
        .as_array()?
        .get(index)?
        .as_table()?
        .clone();
    let kind = table.get("kind")?.as_str()?.to_string();
    for outer in [
        "kind",
        "name",
        "query_timeout_secs",
        "pool_size",
        "table_descriptions",
        "column_descriptions",
    ] {
        table.remove(outer);
    }
    let path = match kind.as_str() {
        "mssql" => serde_path_to_error::deserialize::<_, MssqlConfig>(table)
            .err()?
            .path()
            .to_string(),
        "sqlite" => serde_path_to_error::deserialize::<_, SqliteConfig>(table)
            .err()?
            .path()
            .to_string(),
        _ => return None,
    };
    Some(path).filter(|p| p != ".")
}

/// The first line at or after line `from` (1-based) that assigns `key`, 1-based.
fn line_of_key(text: &str, from: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(i, l)| {
            let rest = l.trim_start().strip_prefix(key)?;
            rest.trim_start().starts_with('=').then_some(i + 1)
        })
}

/// serde quotes a mistyped string value in full ("invalid type: string \"hunter2\", expected
/// …"); that value may be a password written inline, so it is left out.
fn hide_string_values(problem: &str) -> String {
    for prefix in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(start) = problem.find(prefix) {
            let rest = &problem[start + prefix.len()..];
            if let Some(end) = rest.find("\", expected") {
                return format!(
                    "{}{}(value not shown){}",
                    &problem[..start],
                    &prefix[..prefix.len() - 1],
                    &rest[end + 1..]
                );
            }
        }
    }
    problem.to_string()
}

/// An Entra URL: https (plain http only where `plain_http`, as the instance metadata service
/// speaks, or on a loopback host), with a host and no query or fragment.
fn check_entra_url(key: &str, value: &str, plain_http: bool) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(value).ok().filter(|u| {
        let loopback = matches!(u.host(), Some(url::Host::Domain("localhost")))
            || matches!(u.host(), Some(url::Host::Ipv4(a)) if a.is_loopback())
            || matches!(u.host(), Some(url::Host::Ipv6(a)) if a.is_loopback());
        let scheme_ok = u.scheme() == "https" || u.scheme() == "http" && (plain_http || loopback);
        scheme_ok
            && u.host().is_some()
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    });
    match parsed {
        Some(_) => Ok(()),
        None => Err(ConfigError::new(
            key,
            format!("`{value}` is not an https URL with a host (and no query)"),
            "remove it for the default (Azure's public cloud), or write the national cloud's URL",
        )),
    }
}

/// `value` of `key` within `min..=max`, else an error giving the range and the default.
fn check_range(
    key: &str,
    value: u64,
    min: u64,
    max: u64,
    default: impl std::fmt::Display,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::new(
        key,
        format!("{value} is out of range"),
        format!("use {min} to {max} (default {default})"),
    ))
}

/// `scheme://host[:port]` as a browser sends it in `Origin` (any scheme: apps send
/// `tauri://localhost`, `vscode-webview://…`), a host that parses, no path, query, user or
/// trailing slash.
fn is_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && url::Url::parse(o).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
}

fn validate_public_url(url: &str) -> Result<(), ConfigError> {
    let key = "server.public_url";
    let fix = "write the URL clients reach, e.g. \"https://mcp.example.com\" (no path, no trailing slash)";
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else {
        return Err(ConfigError::new(
            key,
            format!("`{url}` does not start with https:// or http://"),
            fix,
        ));
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(ConfigError::new(
            key,
            format!("`{url}` must be scheme and host (and port) only"),
            fix,
        ));
    }
    // The host and port are what every request's Host is checked against: one that does not
    // parse (a port like `80x`) would pass the checks above and then refuse every request.
    let parsed = url::Url::parse(url).map_err(|e| {
        ConfigError::new(
            key,
            format!("`{url}` is not a valid URL: {e}"),
            "write a host name or address and, if not the scheme's default, a port from 1 to \
             65535, e.g. \"https://mcp.example.com\" or \"http://127.0.0.1:8080\"",
        )
    })?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(key, format!("`{url}` has no host"), fix));
    }
    if parsed.port() == Some(0) {
        return Err(ConfigError::new(
            key,
            format!("`{url}` has port 0"),
            "write the port clients connect to (1 to 65535), or none for the scheme's default",
        ));
    }
    Ok(())
}

/// `host` or `host/path-prefix`; the host is a DNS name or a bracketed IPv6 literal, no port.
fn valid_redirect_host_rule(rule: &str) -> bool {
    let (host, path) = match rule.find('/') {
        Some(i) => rule.split_at(i),
        None => (rule, ""),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && !host.starts_with(['.', '-'])
            && !host.ends_with('.')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    host_ok && !path.contains(['?', '#', '@', ' ', '\\'])
}

fn validate_scope_path(path: &str) -> Result<(), String> {
    let Some(seg) = path.strip_prefix('/') else {
        return Err(format!("`{path}` does not start with '/'"));
    };
    if seg.is_empty() || seg.len() > 64 {
        return Err(format!(
            "`{path}` must have one segment of 1 to 64 characters"
        ));
    }
    if !seg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "`{path}` may only contain letters, digits, '-' and '_' after '/'"
        ));
    }
    const RESERVED: [&str; 5] = [".well-known", "health", "metrics", "admin", "oauth"];
    if RESERVED.contains(&seg) {
        return Err(format!("`{path}` is reserved by the server"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[database]]
name = "main"
kind = "sqlite"
path = "/tmp/x.db"

[[scope]]
path = "/chatgpt"
database = "main"
profile = "chatgpt"
"#;

    /// Each OAuth count that must be at least 1 is named on its own.
    #[test]
    fn a_zero_oauth_count_names_its_own_key() {
        for name in [
            "max_clients",
            "failed_logins_per_user",
            "failed_logins_per_ip",
        ] {
            let err = Config::parse(&format!("[oauth]\n{name} = 0\n{MINIMAL}")).unwrap_err();
            assert_eq!(err.key, format!("oauth.{name}"), "{err}");
        }
    }

    /// A credential path read outside the systemd unit (`sudo mssql-mcp check-config`) keeps
    /// its `$CREDENTIALS_DIRECTORY`; the error says how to set it rather than only "not found".
    #[test]
    fn an_unset_credentials_directory_is_named_in_the_fix() {
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
            // Run under a unit with credentials: the variable is set, so nothing to show.
            return;
        }
        let source = SecretSource {
            file: Some(PathBuf::from("$CREDENTIALS_DIRECTORY/db-password")),
            env: None,
        };
        let err = source.load("database[0].password").unwrap_err();
        assert_eq!(err.key, "database[0].password.file", "{err}");
        assert!(
            err.fix.contains("CREDENTIALS_DIRECTORY=/etc/mssql-mcp"),
            "{err}"
        );
        let plain = SecretSource {
            file: Some(PathBuf::from("/nonexistent/db-password")),
            env: None,
        };
        let err = plain.load("database[0].password").unwrap_err();
        assert!(!err.fix.contains("is not set"), "{err}");
    }

    #[test]
    fn a_minimal_config_parses_with_defaults() {
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.scopes[0].max_rows, 500);
        assert_eq!(c.scopes[0].profile, ToolProfile::Chatgpt);
        assert_eq!(c.databases[0].pool_size, 8);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_table_and_line() {
        let err = Config::parse(&format!("{MINIMAL}\nmax_rowz = 5\n")).unwrap_err();
        assert_eq!(err.key, "scope[0].max_rowz", "{err}");
        assert!(err.problem.contains("unknown field"), "{err}");
        assert!(err.problem.contains("(line "), "{err}");
    }

    /// `text` is refused at `key`, naming the line that starts with `line_start`, and the
    /// error does not show `value`.
    fn refused_at(text: &str, key: &str, line_start: &str, value: &str) {
        let line = text.lines().position(|l| l.starts_with(line_start));
        let err = Config::parse(text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        let want = format!("(line {})", line.map_or(0, |i| i + 1));
        assert!(err.problem.contains(&want), "{err}");
        assert!(!err.to_string().contains(value), "{err}");
    }

    /// A key of the table itself (`pool_size`) and one of its kind (`immutable`, which serde
    /// reaches through the `kind` tag) are both named with their own lines.
    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key_and_line_without_the_value() {
        for (key, value) in [("pool_size", "eight"), ("immutable", "yes")] {
            let text = MINIMAL.replace(
                "path = \"/tmp/x.db\"",
                &format!("path = \"/tmp/x.db\"\n{key} = \"{value}\""),
            );
            refused_at(&text, &format!("database[0].{key}"), key, value);
        }
        let err = Config::parse(&MINIMAL.replace(
            "profile = \"chatgpt\"",
            "profile = \"chatgpt\"\nmax_rows = -3",
        ))
        .unwrap_err();
        assert_eq!(err.key, "scope[0].max_rows", "{err}");
    }

    #[test]
    fn a_result_byte_cap_out_of_range_is_refused_with_the_range() {
        for bad in ["100", "0", "1000000000"] {
            let err = Config::parse(&MINIMAL.replace(
                "profile = \"chatgpt\"",
                &format!("profile = \"chatgpt\"\nmax_result_bytes = {bad}"),
            ))
            .unwrap_err();
            assert_eq!(err.key, "scope[0].max_result_bytes", "{err}");
            assert!(err.fix.contains("4096 to 67108864"), "{err}");
        }
        let c = Config::parse(&MINIMAL.replace(
            "profile = \"chatgpt\"",
            "profile = \"chatgpt\"\nmax_result_bytes = 4096",
        ))
        .expect("the lowest value is allowed");
        assert_eq!(c.scopes[0].max_result_bytes, 4096);
        let c = Config::parse(MINIMAL).expect("minimal");
        assert_eq!(c.scopes[0].max_result_bytes, DEFAULT_MAX_RESULT_BYTES);
    }

    #[test]
    fn a_cache_time_to_live_out_of_range_is_refused_with_the_range() {
        // 0 expires every id at once; the largest TOML integer made moka panic at startup.
        for bad in ["0", "604801", "9223372036854775807"] {
            let err = Config::parse(&MINIMAL.replace(
                "profile = \"chatgpt\"",
                &format!("profile = \"chatgpt\"\ncache_ttl_secs = {bad}"),
            ))
            .unwrap_err();
            assert_eq!(err.key, "scope[0].cache_ttl_secs", "{err}");
            assert!(err.fix.contains("1 to 604800 seconds"), "{err}");
        }
        for good in ["1", "604800"] {
            let c = Config::parse(&MINIMAL.replace(
                "profile = \"chatgpt\"",
                &format!("profile = \"chatgpt\"\ncache_ttl_secs = {good}"),
            ))
            .expect("the ends of the range are allowed");
            assert_eq!(c.scopes[0].cache_ttl_secs.to_string(), good);
        }
        let c = Config::parse(MINIMAL).expect("minimal");
        assert_eq!(c.scopes[0].cache_ttl_secs, 3600);
    }

    #[test]
    fn a_cache_byte_budget_out_of_range_is_refused_with_the_range() {
        for bad in ["1000", "0", "5000000000"] {
            let err = Config::parse(&MINIMAL.replace(
                "profile = \"chatgpt\"",
                &format!("profile = \"chatgpt\"\ncache_max_bytes = {bad}"),
            ))
            .unwrap_err();
            assert_eq!(err.key, "scope[0].cache_max_bytes", "{err}");
            assert!(err.fix.contains("1048576 to 4294967295"), "{err}");
        }
        let c = Config::parse(MINIMAL).expect("minimal");
        assert_eq!(c.scopes[0].cache_max_bytes, DEFAULT_CACHE_MAX_BYTES);
        let err = Config::parse(&MINIMAL.replace(
            "profile = \"chatgpt\"",
            "profile = \"chatgpt\"\nmax_result_bytes = 33554432",
        ))
        .unwrap_err();
        assert_eq!(err.key, "scope[0].cache_max_bytes", "{err}");
        assert!(err.fix.contains("134217728"), "{err}");
    }

    #[test]
    fn a_syntax_error_is_named_by_its_line() {
        let err = Config::parse("[server\nlisten = 1\n").unwrap_err();
        assert_eq!(err.key, "line 1", "{err}");
        assert!(err.fix.contains("syntax"), "{err}");
    }

    #[test]
    fn an_unknown_database_key_is_refused() {
        let err = Config::parse(
            &MINIMAL.replace("kind = \"sqlite\"", "kind = \"sqlite\"\npassword = \"x\""),
        )
        .unwrap_err();
        assert!(err.problem.contains("password"), "{err}");
    }

    #[test]
    fn a_scope_naming_a_missing_database_is_refused_with_the_choices() {
        let err = Config::parse(&MINIMAL.replace("database = \"main\"", "database = \"nope\""))
            .unwrap_err();
        assert_eq!(err.key, "scope[0].database");
        assert!(err.fix.contains("main"));
    }

    #[test]
    fn bad_scope_paths_are_refused() {
        for bad in ["chatgpt", "/", "/a/b", "/health", "/a b"] {
            let err =
                Config::parse(&MINIMAL.replace("\"/chatgpt\"", &format!("{bad:?}"))).unwrap_err();
            assert_eq!(err.key, "scope[0].path", "{bad}");
        }
    }

    #[test]
    fn a_public_url_with_a_malformed_port_or_no_host_is_refused() {
        for bad in [
            "http://mcp.example.com:80x",
            "https://mcp.example.com:99999",
            "https://mcp.example.com:0",
            "http://:8080",
        ] {
            let text = format!("[server]\npublic_url = \"{bad}\"\n{MINIMAL}");
            let err = Config::parse(&text).unwrap_err();
            assert_eq!(err.key, "server.public_url", "{bad}");
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        for good in [
            "http://127.0.0.1:8080",
            "https://[::1]:8443",
            "https://mcp.example.com",
        ] {
            let text = format!("[server]\npublic_url = \"{good}\"\n{MINIMAL}");
            assert!(Config::parse(&text).is_ok(), "{good}");
        }
    }

    #[test]
    fn presets_are_not_metrics_scrapers() {
        let text = format!("[metrics]\nallow = [\"127.0.0.1\", \"anthropic\"]\n{MINIMAL}");
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.key, "metrics.allow");
        assert!(err.problem.contains("anthropic"), "{err}");
    }

    #[test]
    fn a_public_url_with_a_path_is_refused() {
        let text = format!("[server]\npublic_url = \"https://x.example/sub\"\n{MINIMAL}");
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.key, "server.public_url");
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
    }

    #[test]
    fn a_secret_needs_exactly_one_source() {
        let src = SecretSource {
            file: None,
            env: None,
        };
        assert!(src.load("database[0].password").is_err());
        let src = SecretSource {
            file: None,
            env: Some("MSSQL_MCP_TEST_SURELY_UNSET".into()),
        };
        let err = src.load("database[0].password").unwrap_err();
        assert_eq!(err.key, "database[0].password.env");
    }

    fn with_database(db: &str) -> String {
        format!("{db}\n[[scope]]\npath = \"/claude\"\ndatabase = \"sql\"\n")
    }

    const MSSQL: &str = r#"
[[database]]
name = "sql"
kind = "mssql"
host = "sql.example.com"
database = "Sales"
user = "mcp_reader"
password = { env = "MSSQL_PASSWORD" }
"#;

    /// Inside `kind = "mssql"` serde buffers the keys, so its path stops at `database[0]`;
    /// the key and its own line are found anyway.
    #[test]
    fn a_wrong_sql_server_key_is_named_with_its_own_line() {
        let text = with_database(&MSSQL.replace("user = ", "port = \"1433x\"\nuser = "));
        refused_at(&text, "database[0].port", "port", "1433x");
        let err = Config::parse(&with_database(
            &MSSQL.replace("user = ", "hots = \"a\"\nuser = "),
        ))
        .unwrap_err();
        assert_eq!(err.key, "database[0].hots", "{err}");
        let err = Config::parse(&with_database(
            &MSSQL.replace("{ env = \"MSSQL_PASSWORD\" }", "\"hunter2\""),
        ))
        .unwrap_err();
        assert_eq!(err.key, "database[0].password", "{err}");
    }

    #[test]
    fn an_mssql_database_parses_with_defaults() {
        let c = Config::parse(&with_database(MSSQL)).expect("valid");
        let DatabaseKind::Mssql(m) = &c.databases[0].kind else {
            panic!("not mssql")
        };
        assert_eq!(m.port(), Some(1433));
        assert_eq!(m.encrypt(), MssqlEncrypt::Required);
        assert!(!m.trust_server_certificate());
        assert_eq!(m.application_intent(), ApplicationIntent::ReadOnly);
        assert_eq!(m.application_name(), "mssql-mcp");
        assert_eq!(m.connect_timeout_secs(), 15);
        assert_eq!(m.max_row_mib(), MAX_ROW_MIB_DEFAULT);
        assert_eq!(m.isolation(), MssqlIsolation::ReadCommitted);
        assert!(m.describe().contains("password from env MSSQL_PASSWORD"));
        assert!(!m.describe().contains("isolation"), "{}", m.describe());
    }

    #[test]
    fn an_mssql_database_takes_every_documented_key() {
        let text = MSSQL.replace(
            "user = ",
            "encrypt = \"strict\"\ntrust_server_certificate = true\napplication_intent = \"read_write\"\napplication_name = \"x\"\nconnect_timeout_secs = 5\nmax_row_mib = 64\nport = 14330\nisolation = \"snapshot\"\nuser = ",
        );
        let c = Config::parse(&with_database(&text)).expect("valid");
        let DatabaseKind::Mssql(m) = &c.databases[0].kind else {
            panic!("not mssql")
        };
        assert_eq!(m.max_row_mib(), 64);
        assert_eq!(m.isolation(), MssqlIsolation::Snapshot);
        assert!(
            m.describe().ends_with(", isolation snapshot"),
            "{}",
            m.describe()
        );
        // A level SQL Server has but a reader should not hold (its locks would hold writers
        // up until the query ends) is refused, naming the key.
        let err = Config::parse(&with_database(
            &text.replace("\"snapshot\"", "\"serializable\""),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("isolation"), "{err}");
        assert_eq!(m.encrypt(), MssqlEncrypt::Strict);
        assert_eq!(m.port(), Some(14330));
        assert_eq!(m.application_intent(), ApplicationIntent::ReadWrite);
    }

    #[test]
    fn a_row_limit_out_of_range_is_refused_with_the_range() {
        for bad in ["0", "1025"] {
            let text = MSSQL.replace("user = ", &format!("max_row_mib = {bad}\nuser = "));
            let err = Config::parse(&with_database(&text)).unwrap_err();
            assert_eq!(err.key, "database[0].max_row_mib", "{err}");
            assert!(err.problem.contains(bad), "{err}");
            assert!(err.fix.contains("1 to 1024 MiB (default 16)"), "{err}");
        }
    }

    #[test]
    fn an_mssql_database_without_a_host_or_connection_string_is_refused() {
        let err = Config::parse(&with_database(
            "[[database]]\nname = \"sql\"\nkind = \"mssql\"\n",
        ))
        .unwrap_err();
        assert_eq!(err.key, "database[0].host");
        assert!(err.problem.contains("connection_string"), "{err}");
    }

    #[test]
    fn an_mssql_database_without_a_password_is_refused_with_an_example() {
        let err = Config::parse(&with_database(
            &MSSQL.replace("password = { env = \"MSSQL_PASSWORD\" }", ""),
        ))
        .unwrap_err();
        assert_eq!(err.key, "database[0].password");
        assert!(err.fix.contains("env ="), "{err}");
    }

    #[test]
    fn an_inline_mssql_password_is_refused() {
        let err = Config::parse(&with_database(
            &MSSQL.replace("{ env = \"MSSQL_PASSWORD\" }", "\"hunter2\""),
        ))
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.fix.contains("env ="), "{err}");
    }

    #[test]
    fn a_connection_string_cannot_be_mixed_with_host_keys() {
        let text = format!("{MSSQL}connection_string = {{ env = \"MSSQL_CS\" }}\n");
        let err = Config::parse(&with_database(&text)).unwrap_err();
        assert_eq!(err.key, "database[0].connection_string");
        assert!(err.problem.contains("host"), "{err}");
    }

    #[test]
    fn a_connection_string_alone_is_accepted() {
        let text = "[[database]]\nname = \"sql\"\nkind = \"mssql\"\nconnection_string = { file = \"/run/cs\" }\napplication_name = \"bi\"\n";
        let c = Config::parse(&with_database(text)).expect("valid");
        let DatabaseKind::Mssql(m) = &c.databases[0].kind else {
            panic!("not mssql")
        };
        assert_eq!(m.describe(), "connection string from file /run/cs");
    }

    #[test]
    fn port_and_instance_together_are_refused() {
        let text = MSSQL.replace("user = ", "port = 1433\ninstance = \"SQLEXPRESS\"\nuser = ");
        let err = Config::parse(&with_database(&text)).unwrap_err();
        assert_eq!(err.key, "database[0].instance");
    }

    #[test]
    fn trusting_any_certificate_and_a_ca_file_are_refused_together() {
        let text = MSSQL.replace(
            "user = ",
            "trust_server_certificate = true\nca_file = \"/etc/ssl/certs/ca-certificates.crt\"\nuser = ",
        );
        let err = Config::parse(&with_database(&text)).unwrap_err();
        assert_eq!(err.key, "database[0].trust_server_certificate");
    }

    #[test]
    fn an_unknown_encrypt_mode_is_refused() {
        let text = MSSQL.replace("user = ", "encrypt = \"maybe\"\nuser = ");
        let err = Config::parse(&with_database(&text)).unwrap_err();
        assert!(err.problem.contains("maybe"), "{err}");
    }

    #[test]
    fn an_unknown_mssql_key_is_refused() {
        let text = MSSQL.replace("user = ", "passwd = \"x\"\nuser = ");
        let err = Config::parse(&with_database(&text)).unwrap_err();
        assert!(err.problem.contains("passwd"), "{err}");
    }

    /// An Entra login of each kind, with exactly its own keys.
    const ENTRA: &str = "[[database]]\nname = \"sql\"\nkind = \"mssql\"\nhost = \"x.database.windows.net\"\ndatabase = \"Sales\"\n";

    fn entra(keys: &str) -> Result<Config, ConfigError> {
        Config::parse(&with_database(&format!("{ENTRA}{keys}\n")))
    }

    #[test]
    fn each_entra_kind_takes_its_own_keys_and_describes_itself() {
        let cases = [
            (
                "authentication = \"entra_managed_identity\"",
                "Entra managed identity (system-assigned)",
            ),
            (
                "authentication = \"entra_managed_identity\"\nclient_id = \"0b7e5f2a-1111\"\nmanaged_identity_endpoint = \"http://169.254.169.254/metadata/identity/oauth2/token\"",
                "Entra managed identity 0b7e5f2a-1111",
            ),
            (
                "authentication = \"entra_service_principal\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"app\"\nclient_secret = { env = \"SQL_APP_SECRET\" }\nentra_authority = \"https://login.microsoftonline.us\"\nentra_resource = \"https://database.usgovcloudapi.net/\"",
                "Entra app app in tenant contoso.onmicrosoft.com, secret from env SQL_APP_SECRET",
            ),
            (
                "authentication = \"entra_access_token\"\naccess_token = { file = \"/run/sql-token\" }",
                "Entra access token from file /run/sql-token",
            ),
            (
                "authentication = \"entra_service_principal\"\ntenant_id = \"t\"\nclient_id = \"app\"\nclient_certificate = { file = \"/run/app.pem\" }",
                "Entra app app in tenant t, certificate from file /run/app.pem",
            ),
        ];
        for (keys, described) in cases {
            let c = entra(keys).unwrap_or_else(|e| panic!("{keys}: {e}"));
            let DatabaseKind::Mssql(m) = &c.databases[0].kind else {
                panic!("not mssql")
            };
            assert!(m.describe().contains(described), "{}", m.describe());
            assert!(!m.describe().contains("user"), "{}", m.describe());
        }
    }

    #[test]
    fn entra_keys_out_of_place_are_refused_naming_the_key_and_the_kind_they_belong_to() {
        let cases = [
            // A SQL login (the default) with Entra keys.
            (
                "user = \"u\"\npassword = { env = \"P\" }\nclient_id = \"app\"",
                "client_id",
                "Entra",
            ),
            (
                "user = \"u\"\npassword = { env = \"P\" }\ntenant_id = \"t\"",
                "tenant_id",
                "entra_service_principal",
            ),
            // An Entra login with a SQL login's keys.
            (
                "authentication = \"entra_managed_identity\"\nuser = \"u\"",
                "user",
                "sql_password",
            ),
            (
                "authentication = \"entra_managed_identity\"\npassword = { env = \"P\" }",
                "password",
                "sql_password",
            ),
            // Another Entra kind's keys.
            (
                "authentication = \"entra_managed_identity\"\nclient_secret = { env = \"S\" }",
                "client_secret",
                "entra_service_principal",
            ),
            (
                "authentication = \"entra_access_token\"\naccess_token = { env = \"T\" }\nmanaged_identity_endpoint = \"http://x\"",
                "managed_identity_endpoint",
                "entra_managed_identity",
            ),
            // Missing what the kind needs.
            (
                "authentication = \"entra_service_principal\"\ntenant_id = \"t\"\nclient_id = \"app\"",
                "client_secret",
                "needs",
            ),
            (
                "authentication = \"entra_access_token\"",
                "access_token",
                "needs",
            ),
            (
                "authentication = \"entra_access_token\"\naccess_token = { env = \"T\" }\nclient_id = \"app\"",
                "client_id",
                "entra_managed_identity",
            ),
            // Both credentials of an app.
            (
                "authentication = \"entra_service_principal\"\ntenant_id = \"t\"\nclient_id = \"app\"\nclient_secret = { env = \"S\" }\nclient_certificate = { file = \"/run/app.pem\" }",
                "client_certificate",
                "cannot both",
            ),
            (
                "authentication = \"entra_managed_identity\"\nclient_certificate = { file = \"/run/app.pem\" }",
                "client_certificate",
                "entra_service_principal",
            ),
            // Malformed values.
            (
                "authentication = \"entra_managed_identity\"\nclient_id = \"a&resource=x\"",
                "client_id",
                "ID",
            ),
            (
                "authentication = \"entra_service_principal\"\ntenant_id = \"t\"\nclient_id = \"app\"\nclient_secret = { env = \"S\" }\nentra_authority = \"http://login.example.com\"",
                "entra_authority",
                "https",
            ),
            (
                "authentication = \"entra_managed_identity\"\nentra_resource = \"https://database.windows.net/?x=1\"",
                "entra_resource",
                "https",
            ),
        ];
        for (keys, key, says) in cases {
            let err = entra(keys).expect_err(keys);
            assert_eq!(err.key, format!("database[0].{key}"), "{keys}: {err}");
            assert!(err.to_string().contains(says), "{keys}: {err}");
        }
        let err = entra("authentication = \"kerberos\"").expect_err("unknown kind");
        assert!(err.to_string().contains("entra_managed_identity"), "{err}");
    }

    #[test]
    fn a_windows_login_takes_a_domain_account_and_its_password() {
        for (user, described) in [
            (
                "'CORP\\svc_mcp'",
                "Windows login CORP\\svc_mcp (NTLM), password from env P",
            ),
            ("\"CORP\\\\svc_mcp\"", "Windows login CORP\\svc_mcp (NTLM)"),
            (
                "'svc_mcp@corp.example.com'",
                "Windows login svc_mcp@corp.example.com",
            ),
        ] {
            let keys = format!(
                "authentication = \"windows\"\nuser = {user}\npassword = {{ env = \"P\" }}"
            );
            let c = entra(&keys).unwrap_or_else(|e| panic!("{keys}: {e}"));
            let DatabaseKind::Mssql(m) = &c.databases[0].kind else {
                panic!("not mssql")
            };
            assert!(m.describe().contains(described), "{}", m.describe());
        }
        for (keys, key, says) in [
            // The account needs its domain, written once.
            ("user = 'svc_mcp'", "user", "names no domain"),
            ("user = 'CORP\\'", "user", "DOMAIN\\user"),
            ("user = '\\svc'", "user", "DOMAIN\\user"),
            ("user = 'A\\B\\c'", "user", "DOMAIN\\user"),
            ("user = 'CORP\\svc@x'", "user", "both"),
            ("user = '@corp'", "user", "DOMAIN\\user"),
            // Both keys are needed, and Entra's are not taken.
            (
                "user = 'CORP\\svc'\npassword = { env = \"P\" }\nclient_id = \"app\"",
                "client_id",
                "Entra",
            ),
        ] {
            let keys = format!("authentication = \"windows\"\n{keys}");
            let keys = if keys.contains("password") {
                keys
            } else {
                format!("{keys}\npassword = {{ env = \"P\" }}")
            };
            let err = entra(&keys).expect_err(&keys);
            assert_eq!(err.key, format!("database[0].{key}"), "{keys}: {err}");
            assert!(err.to_string().contains(says), "{keys}: {err}");
        }
        let err = entra(
            "authentication = \"windows\"\nuser = 'CORP\\svc'\npassword = { env = \"P\" }\nencrypt = \"off\"",
        )
        .expect_err("in the clear");
        assert_eq!(err.key, "database[0].encrypt", "{err}");
        assert!(err.to_string().contains("in the clear"), "{err}");
        entra("authentication = \"windows\"\nuser = 'CORP\\svc'\npassword = { env = \"P\" }\nencrypt = \"on\"")
            .expect("on encrypts the whole session when the server can");
        let err =
            entra("authentication = \"windows\"\nuser = 'CORP\\svc'").expect_err("no password");
        assert_eq!(err.key, "database[0].password", "{err}");
        // A Windows account as a SQL login is a mistake a SQL login cannot make.
        let err = entra("user = 'CORP\\svc'\npassword = { env = \"P\" }").expect_err("sql login");
        assert_eq!(err.key, "database[0].user", "{err}");
        assert!(
            err.to_string().contains("authentication = \"windows\""),
            "{err}"
        );
    }

    #[test]
    fn descriptions_take_exact_names_of_the_right_length_and_some_text() {
        let db = |extra: &str| Config::parse(&with_database(&format!("{MSSQL}{extra}\n")));
        let c = db("table_descriptions = { \"orders\" = \"Orders\", \"dbo.Lines\" = \"Lines\" }\ncolumn_descriptions = { \"orders.status\" = \"o/s/c\", \"dbo.orders.total\" = \"EUR\" }")
            .expect("valid");
        assert_eq!(c.databases[0].table_descriptions.len(), 2);
        assert_eq!(c.databases[0].column_descriptions["orders.status"], "o/s/c");
        for (extra, key, says) in [
            (
                "table_descriptions = { \"a.b.c\" = \"x\" }",
                "table_descriptions",
                "a.b.c",
            ),
            (
                "table_descriptions = { \"dbo.*\" = \"x\" }",
                "table_descriptions",
                "no patterns",
            ),
            (
                "table_descriptions = { \"orders\" = \" \" }",
                "table_descriptions",
                "empty",
            ),
            (
                "column_descriptions = { \"orders\" = \"x\" }",
                "column_descriptions",
                "orders.status",
            ),
            (
                "column_descriptions = { \"a..b\" = \"x\" }",
                "column_descriptions",
                "a..b",
            ),
            (
                "table_description = { \"orders\" = \"x\" }",
                "table_description",
                "table_description",
            ),
        ] {
            let err = db(extra).expect_err(extra);
            assert_eq!(err.key, format!("database[0].{key}"), "{extra}: {err}");
            assert!(err.to_string().contains(says), "{extra}: {err}");
        }
    }

    #[test]
    fn the_commented_mssql_example_is_valid_when_uncommented() {
        let text = include_str!("../config.toml.example");
        let start = text.find("# --- mssql example ---").expect("start marker");
        let end = text
            .find("# --- end of mssql example ---")
            .expect("end marker");
        let block: String = text[start..end]
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if !rest.starts_with("---") => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let uncommented = format!("{}{block}\n{}", &text[..start], &text[end..]);
        let c = Config::parse(&uncommented).expect("the mssql example must stay valid");
        let DatabaseKind::Mssql(m) = &c.databases[1].kind else {
            panic!("the example's second database is not mssql")
        };
        assert_eq!(m.host.as_deref(), Some("sql.example.com"));
        assert_eq!(m.encrypt(), MssqlEncrypt::Required);
    }

    const USER: &str = "\n[[oauth.users]]\nusername = \"alice\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$+N5YXLaYg+MnyUam/iw9ig$NMM2bTqRxvACvX5XaxTmB7BY+5JSYpR3T/vFHPNWSms\"\nscopes = [\"/chatgpt\"]\n";

    #[test]
    fn oauth_users_need_an_argon2id_hash_and_known_scopes() {
        let c = Config::parse(&format!("{MINIMAL}{USER}")).expect("valid");
        assert!(c.oauth.users[0].may_grant("/chatgpt"));
        assert!(!c.oauth.users[0].may_grant("/claude"));
        assert!(!format!("{:?}", c.oauth.users[0]).contains("argon2id"));
        let err = Config::parse(&format!(
            "{MINIMAL}{}",
            USER.replace("$argon2id$", "$argon2i$")
        ))
        .unwrap_err();
        assert_eq!(err.key, "oauth.users[0].password_hash");
        let err = Config::parse(&format!(
            "{MINIMAL}{}",
            USER.replace("[\"/chatgpt\"]", "[\"/nope\"]")
        ))
        .unwrap_err();
        assert_eq!(err.key, "oauth.users[0].scopes[0]");
        // Parsed, not only its prefix: a cut-off hash would fail every sign-in silently, and
        // one asking for 4 GiB would hold that much per sign-in.
        for bad in [
            "$argon2id$v=19$m=19456,t=2,p=1$+N5YXLaYg+MnyUam/iw9ig",
            "$argon2id$v=19$m=4194304,t=2,p=1$+N5YXLaYg+MnyUam/iw9ig$NMM2bTqRxvACvX5XaxTmB7BY+5JSYpR3T/vFHPNWSms",
            "$argon2id$garbage",
        ] {
            let err = Config::parse(&format!(
                "{MINIMAL}{}",
                USER.replace(
                    "$argon2id$v=19$m=19456,t=2,p=1$+N5YXLaYg+MnyUam/iw9ig$NMM2bTqRxvACvX5XaxTmB7BY+5JSYpR3T/vFHPNWSms",
                    bad
                )
            ))
            .unwrap_err();
            assert_eq!(err.key, "oauth.users[0].password_hash", "{bad}");
        }
        let real = crate::oauth::password::hash("a real passphrase").expect("hash");
        Config::parse(&format!(
            "{MINIMAL}{}",
            USER.replace(
                "$argon2id$v=19$m=19456,t=2,p=1$+N5YXLaYg+MnyUam/iw9ig$NMM2bTqRxvACvX5XaxTmB7BY+5JSYpR3T/vFHPNWSms",
                &real
            )
        ))
        .expect("what hash-password writes is accepted");
        let err = Config::parse(&format!(
            "{MINIMAL}{}",
            USER.replace("[\"/chatgpt\"]", "[]")
        ))
        .unwrap_err();
        assert_eq!(err.key, "oauth.users[0].scopes");
    }

    /// Values that used to pass the check and then misbehave at run time.
    #[test]
    fn server_and_oauth_values_that_cannot_work_are_refused() {
        for (text, key) in [
            (
                "[server]\nsession_idle_secs = 0\n",
                "server.session_idle_secs",
            ),
            (
                "[server]\nshutdown_grace_secs = 100000\n",
                "server.shutdown_grace_secs",
            ),
            (
                "[server]\nallowed_origins = [\"https://app.example.com/\"]\n",
                "server.allowed_origins[0]",
            ),
            (
                "[server]\nallowed_origins = [\"app.example.com\"]\n",
                "server.allowed_origins[0]",
            ),
            (
                "[oauth]\nregistrations_per_hour_per_ip = 0\n",
                "oauth.registrations_per_hour_per_ip",
            ),
        ] {
            let err = Config::parse(&format!("{text}{MINIMAL}")).unwrap_err();
            assert_eq!(err.key, key, "{text}");
        }
        let c = Config::parse(&format!(
            "[server]\nallowed_origins = [\"https://app.example.com\", \"http://10.0.0.7:3000\", \"tauri://localhost\"]\n{MINIMAL}"
        ))
        .expect("origins as browsers and apps send them");
        assert_eq!(c.server.allowed_origins.len(), 3);
    }

    #[test]
    fn oauth_ranges_default_scope_and_admin_address_are_checked() {
        let err = Config::parse(&format!("[oauth]\ncode_ttl_secs = 600\n{MINIMAL}")).unwrap_err();
        assert_eq!(err.key, "oauth.code_ttl_secs");
        let err =
            Config::parse(&format!("[oauth]\ndefault_scope = \"/x\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(err.key, "oauth.default_scope");
        let err =
            Config::parse(&format!("[admin]\nlisten = \"0.0.0.0:9090\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(err.key, "admin.listen");
        let c = Config::parse(MINIMAL).expect("valid");
        assert_eq!(c.default_scope_path(), Some("/chatgpt"));
        assert_eq!(c.oauth.access_token_ttl_secs, 3600);
    }

    #[test]
    fn redirect_host_rules_are_hosts_with_optional_paths() {
        for ok in ["chatgpt.com", "chatgpt.com/connector", "[::1]", "127.0.0.1"] {
            assert!(valid_redirect_host_rule(ok), "{ok}");
        }
        for bad in [
            "https://chatgpt.com",
            "chatgpt.com:443",
            "",
            "a b",
            "x.com?y",
            "user@x.com",
            "-x.com",
        ] {
            assert!(!valid_redirect_host_rule(bad), "{bad}");
        }
        let text = MINIMAL.replace(
            "profile = \"chatgpt\"",
            "profile = \"chatgpt\"\nallowed_redirect_hosts = [\"https://chatgpt.com\"]",
        );
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.key, "scope[0].allowed_redirect_hosts[0]");
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config.toml.example");
        Config::parse(text).expect("config.toml.example must stay valid");
    }

    /// Where a value sits in a TOML document, as [`ConfigError::key`] names it
    /// (`scope[1].max_rows`).
    fn leaves(v: &toml::Value, at: String, out: &mut Vec<(String, toml::Value)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, child) in t {
                    let key = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.push((key.clone(), child.clone()));
                    leaves(child, key, out);
                }
            }
            toml::Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let key = format!("{at}[{i}]");
                    out.push((key.clone(), child.clone()));
                    leaves(child, key, out);
                }
            }
            _ => {}
        }
    }

    fn node_mut<'v>(v: &'v mut toml::Value, key: &str) -> Option<&'v mut toml::Value> {
        let mut at = v;
        for part in key.split('.') {
            let (name, index) = match part.split_once('[') {
                Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            at = at.get_mut(name)?;
            if let Some(i) = index {
                at = at.get_mut(i)?;
            }
        }
        Some(at)
    }

    /// The example configuration (plus a SQL Server database) with one or two values replaced
    /// by values of other types or out of range, keys dropped or unknown keys added (1,500
    /// cases, fixed seed). Parsing never panics; every error names a key (or a line) and a fix;
    /// an integer or boolean replaced by a string is reported at exactly that key; and a
    /// canary put where a secret goes (a password source, a password hash) never appears in
    /// an error.
    #[test]
    fn a_mutated_example_config_gets_errors_naming_the_key_and_never_showing_values() {
        const CANARY: &str = "s3cret-CANARY-value";
        let text = include_str!("../config.toml.example");
        let mut example: toml::Value = toml::from_str(text).expect("the example parses");
        // A SQL Server database too, for its password source.
        let mssql: toml::Value = toml::from_str(
            r#"
name = "sales"
kind = "mssql"
host = "sql.example.internal"
database = "Sales"
user = "mcp_reader"
password = { file = "/run/credentials/mssql-mcp.service/sql-password" }
"#,
        )
        .expect("the SQL Server table parses");
        if let Some(toml::Value::Array(dbs)) = example.get_mut("database") {
            dbs.push(mssql);
        }
        assert!(Config::parse(&toml::to_string(&example).expect("toml")).is_ok());
        let secret = |key: &str| {
            ["password", "secret", "connection_string", "hash"]
                .iter()
                .any(|s| key.contains(s))
        };
        let mut all = Vec::new();
        leaves(&example, String::new(), &mut all);
        // `TEST_SEED=n` explores other mutations, as in `tests/it`.
        let extra = std::env::var("TEST_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let mut rng = fastrand::Rng::with_seed(0x636f_6e66 + extra.unwrap_or(0));
        let (mut refused, mut exact) = (0, 0);
        for _ in 0..1_500 {
            let mut doc = example.clone();
            let mut retyped: Option<String> = None;
            let changes = rng.usize(1..=2);
            for _ in 0..changes {
                let (key, original) = all[rng.usize(..all.len())].clone();
                let Some(slot) = node_mut(&mut doc, &key) else {
                    continue;
                };
                // A value standing for a secret where one belongs, a harmless string elsewhere
                // (an error may quote a scope path or a host name to help).
                let odd = if secret(&key) { CANARY } else { "not a secret" };
                match rng.u32(..5) {
                    0 | 1 => {
                        if matches!(original, toml::Value::Integer(_) | toml::Value::Boolean(_)) {
                            retyped = Some(key.clone());
                        }
                        *slot = toml::Value::String(odd.into());
                    }
                    2 => {
                        *slot = match rng.u32(..5) {
                            0 => toml::Value::Integer(-1),
                            1 => toml::Value::Integer(i64::MAX),
                            2 => toml::Value::Integer(0),
                            3 => toml::Value::Float(1e300),
                            _ => toml::Value::Array(vec![toml::Value::String(odd.into())]),
                        };
                    }
                    3 => {
                        if let Some((parent, last)) = key.rsplit_once('.')
                            && !last.contains('[')
                            && let Some(toml::Value::Table(t)) = node_mut(&mut doc, parent)
                        {
                            t.remove(last);
                        }
                    }
                    _ => {
                        if let toml::Value::Table(t) = slot {
                            t.insert("no_such_key".into(), toml::Value::String(odd.into()));
                        }
                    }
                }
            }
            let mutated = toml::to_string(&doc).expect("serialise");
            let Err(e) = Config::parse(&mutated) else {
                continue;
            };
            refused += 1;
            let shown = e.to_string();
            assert!(!shown.contains(CANARY), "a value shows in: {shown}");
            assert!(
                !e.key.is_empty()
                    && e.key != "(file)"
                    && !e.problem.is_empty()
                    && !e.fix.is_empty(),
                "{e:?}"
            );
            if let Some(key) = retyped {
                // Alone, a retyped value is the error, and named exactly; beside another
                // change, that one may be found first.
                if changes == 1 {
                    assert_eq!(e.key, key, "{e}");
                }
                exact += usize::from(e.key == key);
            }
        }
        // Not vacuous, and retyped keys are named exactly (most mutations that retype a value
        // fail at it; a second mutation in the same case may fail first).
        eprintln!("1500 mutated configs: {refused} refused, {exact} named the retyped key");
        assert!(
            refused >= 600,
            "only {refused} mutated configs were refused"
        );
        assert!(
            exact >= 100,
            "only {exact} retyped values were named exactly"
        );
    }
}
