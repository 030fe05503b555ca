//! TLS for the listener, in one of three modes (`[tls] mode`):
//!
//! - `acme`: certificates from an ACME CA with rustls-acme over TLS-ALPN-01 on the TLS port
//!   itself (no port 80 needed), or over HTTP-01 (`challenge = "http-01"`): then the plain-HTTP
//!   listener ([`http01_routes`]) answers `/.well-known/acme-challenge/{token}` from the ACME
//!   state ([`Http01Responder`]). Let's Encrypt *staging* unless `directory = "production"`;
//!   any other directory URL (and `ca_file` to trust it) for private CAs. The account key and
//!   certificates are cached in `<state_dir>/acme`, so a restart serves the cached certificate
//!   without a new order. The ACME state does nothing unless polled: [`Prepared`] carries the
//!   owned task that polls it, which orders, renews at 2/3 of the lifetime and hot-swaps the
//!   certificate for new handshakes (open connections keep theirs). When an order fails (the
//!   CA unreachable, a challenge the CA could not validate) the cached certificate keeps being
//!   served, the failure is logged and kept in [`TlsStatus`] (for `/health` and metrics, with
//!   the certificate's remaining lifetime in seconds; the error's text and the next retry's
//!   time only on the admin listener), and the order is retried after `tls.retry_min_secs`,
//!   doubling up to `tls.retry_max_secs` (10 s to 1 h by default); SIGHUP retries at once.
//!   rustls-acme's own backoff doubles without a useful cap (to 2^16 s, 18 hours), so
//!   [`drive_acme`] drops a state whose order failed and starts a fresh one when its own wait
//!   is over. The served certificate and the challenge answers live in [`AcmeResolver`], which
//!   outlives the states, and [`AcmeTlsAcceptor`] sends the CA's TLS-ALPN-01 handshakes to it.
//! - `files`: a PEM chain and key, reloaded on SIGHUP and when the files change (polled);
//!   a bad new pair is reported and the old certificate stays in use.
//! - `off`: plain HTTP behind another proxy.
//!
//! The optional plain-HTTP listener (`http_redirect_listen`) redirects everything else to the
//! public URL ([`redirect_routes`]); `app::run` serves it with the same connection handling and
//! a smaller middleware stack than the main listener (`app::plain_router`).
//!
//! Every mode offers TLS 1.2 and 1.3 only (rustls has nothing older) with ALPN `h2` and
//! `http/1.1`, and the aws-lc-rs crypto provider chosen explicitly.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_acme::acme::ACME_TLS_ALPN_NAME;
use rustls_acme::caches::DirCache;
use rustls_acme::{
    AccountCache, AcmeConfig, AcmeState, CertCache, EventError, EventOk, ResolvesServerCertAcme,
    UseChallenge, is_tls_alpn_challenge,
};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{AcmeChallenge, TlsConfig, TlsMode};
use crate::config::ConfigError;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}: no certificate found in the PEM file")]
    NoCertificate(PathBuf),
    #[error("{0}: no private key found in the PEM file")]
    NoKey(PathBuf),
    #[error("{path}: unusable key: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the key does not belong to the certificate: {0}")]
    Mismatch(rustls::Error),
    #[error("{path}: {problem}")]
    CaFile { path: PathBuf, problem: String },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: cannot write there: {source}")]
    CacheDir { path: PathBuf, source: io::Error },
}

/// Makes the ACME cache directory (0700) and proves it writable with a file of our own, so a
/// cache that cannot keep the certificate stops the start instead of ordering a new
/// certificate on every start.
fn writable_cache_dir(dir: &Path) -> Result<(), TlsError> {
    let fail = |source| TlsError::CacheDir {
        path: dir.to_path_buf(),
        source,
    };
    crate::ops::private_dir(dir).map_err(fail)?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    tighten(dir);
    Ok(())
}

/// The cache holds the certificate's private key and the ACME account key: the directory is
/// made 0700 and every file in it 0600, whatever the umask made them (Docker's is 022).
fn tighten(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode: u32| {
            if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
                tracing::warn!(path = %p.display(), error = %e, "ACME cache: cannot restrict permissions");
            }
        };
        set(dir, 0o700);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    set(&entry.path(), 0o600);
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What the TLS side is doing, for logs, `/health` and metrics.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TlsReport {
    /// `acme`, `files` or `off`.
    pub mode: &'static str,
    /// `ok`, `pending` (no certificate yet), `error` (last attempt failed; still serving the
    /// previous certificate if there is one) or `off`.
    pub state: &'static str,
    /// The last failure, kept until the next success.
    pub last_error: Option<String>,
    /// When it happened (Unix seconds).
    pub last_error_at: Option<i64>,
    /// ACME: when the failed order is tried again (Unix seconds; SIGHUP tries at once).
    pub retry_at: Option<i64>,
    /// The served certificate's `notAfter` (Unix seconds).
    pub not_after: Option<i64>,
    /// Certificates newly issued by the ACME CA since start.
    pub issued: u64,
    /// Certificates loaded from the cache (ACME) or from the files (including reloads).
    pub loaded: u64,
    /// Failed orders, renewals and reloads since start (for metrics).
    pub errors: u64,
}

impl TlsReport {
    /// Seconds until the served certificate expires (negative once expired).
    pub fn expires_in_secs(&self) -> Option<i64> {
        self.not_after.map(|t| t - now_unix())
    }
}

/// Shared, updated by the TLS tasks, read by health and metrics.
#[derive(Debug)]
pub struct TlsStatus {
    report: Mutex<TlsReport>,
}

impl TlsStatus {
    pub fn new(mode: TlsMode) -> Self {
        let (mode, state) = match mode {
            TlsMode::Acme => ("acme", "pending"),
            TlsMode::Files => ("files", "pending"),
            TlsMode::Off => ("off", "off"),
        };
        Self {
            report: Mutex::new(TlsReport {
                mode,
                state,
                last_error: None,
                last_error_at: None,
                retry_at: None,
                not_after: None,
                issued: 0,
                loaded: 0,
                errors: 0,
            }),
        }
    }

    /// A copy of the current report.
    pub fn report(&self) -> TlsReport {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TlsReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ok(&self, f: impl FnOnce(&mut TlsReport)) {
        let mut r = self.lock();
        r.state = "ok";
        r.last_error = None;
        r.retry_at = None;
        f(&mut r);
    }

    fn failed(&self, error: String) {
        self.failed_until(error, None);
    }

    /// A failure that is tried again `retry_in` from now (when given).
    fn failed_until(&self, error: String, retry_in: Option<Duration>) {
        let now = now_unix();
        let mut r = self.lock();
        r.state = "error";
        r.errors += 1;
        r.last_error = Some(error);
        r.last_error_at = Some(now);
        r.retry_at = retry_in.map(|d| now.saturating_add(d.as_secs() as i64));
    }

    fn set_not_after(&self, t: Option<i64>) {
        if t.is_some() {
            self.lock().not_after = t;
        }
    }
}

/// The first certificate's `notAfter` in a PEM buffer (Unix seconds).
pub fn pem_not_after(pem: &[u8]) -> Option<i64> {
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let Ok(block) = block else { return None };
        if block.label == "CERTIFICATE" {
            return der_not_after(&block.contents);
        }
    }
    None
}

fn der_not_after(der: &[u8]) -> Option<i64> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c.validity().not_after.timestamp())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server settings every mode shares: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Loads a PEM chain and key; returns the certified key and the leaf's `notAfter`.
pub fn load_pair(cert: &Path, key: &Path) -> Result<(CertifiedKey, Option<i64>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key.to_path_buf()))?;
    let not_after = der_not_after(&chain[0]);
    let certified = certified_key(chain, key_der).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    certified.keys_match().map_err(TlsError::Mismatch)?;
    Ok((certified, not_after))
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    let signing = provider().key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// ACME mode's certificate and challenge answers, kept across the ACME states [`drive_acme`]
/// starts one after another: the certificate is the one the cache last loaded or stored
/// ([`ObservedCache`]); TLS-ALPN-01 handshakes and HTTP-01 tokens are answered from the current
/// state's resolver, which is where that state's order puts its challenge.
#[derive(Debug)]
pub struct AcmeResolver {
    cert: RwLock<Option<Arc<CertifiedKey>>>,
    /// The current state's resolver (none before the first state starts).
    challenges: RwLock<Option<Arc<ResolvesServerCertAcme>>>,
}

impl AcmeResolver {
    fn new() -> Self {
        Self {
            cert: RwLock::new(None),
            challenges: RwLock::new(None),
        }
    }

    fn challenges(&self) -> Option<Arc<ResolvesServerCertAcme>> {
        self.challenges
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_challenges(&self, state: Arc<ResolvesServerCertAcme>) {
        *self.challenges.write().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }

    /// Serves the certificate in rustls-acme's cache format (the key, then the chain, PEM);
    /// one it cannot read is left to rustls-acme to report.
    fn set_cert_pem(&self, pem: &[u8]) {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .collect();
        let Ok(key) = PrivateKeyDer::from_pem_slice(pem) else {
            return;
        };
        if chain.is_empty() {
            return;
        }
        if let Ok(certified) = certified_key(chain, key) {
            *self.cert.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(certified));
        }
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if is_tls_alpn_challenge(&hello) {
            self.challenges()?.resolve(hello)
        } else {
            self.cert.read().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }
}

/// ACME mode's TLS acceptor: a handshake offering only the `acme-tls/1` protocol is the CA's
/// TLS-ALPN-01 validation, completed with the challenge certificate and then closed; every
/// other handshake gets the listener's settings. (rustls-acme's own acceptor would answer
/// challenges from the first ACME state only.)
#[derive(Clone)]
pub struct AcmeTlsAcceptor {
    main: Arc<ServerConfig>,
    challenge: Arc<ServerConfig>,
}

impl AcmeTlsAcceptor {
    fn new(resolver: Arc<AcmeResolver>) -> Result<Self, TlsError> {
        let main = server_config(resolver.clone())?;
        let mut challenge = server_config(resolver)?;
        challenge.alpn_protocols = vec![ACME_TLS_ALPN_NAME.to_vec()];
        Ok(Self {
            main: Arc::new(main),
            challenge: Arc::new(challenge),
        })
    }
}

impl<I, S> axum_server::accept::Accept<I, S> for AcmeTlsAcceptor
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = tokio_rustls::server::TlsStream<I>;
    type Service = S;
    type Future = futures::future::BoxFuture<'static, io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let (main, challenge) = (self.main.clone(), self.challenge.clone());
        Box::pin(async move {
            let start =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                    .await?;
            if is_tls_alpn_challenge(&start.client_hello()) {
                start.into_stream(challenge).await?;
                tracing::info!("ACME: answered a TLS-ALPN-01 validation handshake");
                return Err(io::Error::other("TLS-ALPN-01 validation handshake"));
            }
            Ok((start.into_stream(main).await?, service))
        })
    }
}

/// Serves whatever pair was loaded last (files mode).
#[derive(Debug)]
pub struct FilesResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for FilesResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl FilesResolver {
    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }
}

/// How the listener accepts connections, plus the owned tasks that keep TLS current.
pub enum Prepared {
    /// Plain HTTP.
    Off,
    /// Files mode: the rustls settings (their resolver reloads in place).
    Files(RustlsConfig),
    /// ACME mode: the acceptor (which answers TLS-ALPN-01 challenges itself), and with
    /// HTTP-01 what the plain-HTTP listener answers the CA with.
    Acme {
        acceptor: AcmeTlsAcceptor,
        http01: Option<Http01Responder>,
    },
}

impl Prepared {
    /// The HTTP-01 responder, when ACME runs with `challenge = "http-01"`.
    pub fn http01(&self) -> Option<Http01Responder> {
        match self {
            Prepared::Acme { http01, .. } => http01.clone(),
            _ => None,
        }
    }
}

/// Answers the CA's HTTP-01 requests from the current ACME state: rustls-acme sets the token
/// and key authorization of the one authorization in progress (it authorizes domains one at a
/// time) and clears them once the CA has validated it.
#[derive(Clone)]
pub struct Http01Responder(Arc<AcmeResolver>);

impl Http01Responder {
    /// The key authorization for `token`, if that is the challenge in progress.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        self.0.challenges()?.get_http_01_key_auth(token)
    }
}

/// A TLS failure at start that a configured file caused (`tls.cert`, `tls.key`,
/// `tls.ca_file`: missing, unreadable, not PEM, or a key that is not the certificate's;
/// `tls.cache_dir`: not writable), as a
/// configuration error naming the key and the fix: restarting cannot help, so `serve` exits
/// with 64 rather than 69 (which systemd restarts). `Err` hands back any other failure.
pub fn file_error(tls: &TlsConfig, e: TlsError) -> Result<ConfigError, TlsError> {
    let is = |p: &Path, c: &Option<PathBuf>| c.as_deref() == Some(p);
    let key = match &e {
        TlsError::Read { path, .. } if is(path, &tls.ca_file) => "tls.ca_file",
        TlsError::CaFile { .. } => "tls.ca_file",
        TlsError::Read { path, .. } if is(path, &tls.key) => "tls.key",
        TlsError::Read { path, .. } if is(path, &tls.cert) => "tls.cert",
        TlsError::NoCertificate(_) => "tls.cert",
        TlsError::NoKey(_) | TlsError::Key { .. } => "tls.key",
        TlsError::Mismatch(_) => "tls.cert/tls.key",
        // Unset, the cache is `<state_dir>/acme`: the key to fix is the state directory's.
        TlsError::CacheDir { .. } if tls.cache_dir.is_none() => "server.state_dir",
        TlsError::CacheDir { .. } => "tls.cache_dir",
        TlsError::Read { .. } | TlsError::Rustls(_) => return Err(e),
    };
    let fix = if key == "tls.ca_file" {
        "point tls.ca_file at a readable PEM file with your ACME server's CA certificate"
    } else if key == "tls.cache_dir" || key == "server.state_dir" {
        "point it at a directory the service's user can write (under systemd, inside its \
         StateDirectory: ProtectSystem=strict makes the rest read-only); without a cache for \
         the certificate (tls.cache_dir, by default <state_dir>/acme) every start orders a new \
         one and soon hits the CA's rate limits"
    } else {
        "point tls.cert at the PEM certificate chain and tls.key at its private key, both \
         readable by the service's user (e.g. /etc/mssql-mcp/fullchain.pem and privkey.pem; \
         under the unit's DynamicUser, through a group: chgrp ssl-cert privkey.pem, chmod 0640, \
         and SupplementaryGroups=ssl-cert in a drop-in)"
    };
    Ok(ConfigError::new(key, e.to_string(), fix))
}

/// `check-config`: loads the files TLS will need at start (the certificate and key in
/// `files` mode, `tls.ca_file` in `acme` mode), so a missing or unusable one is reported
/// before the service starts.
pub fn check_files(tls: &TlsConfig) -> Result<(), ConfigError> {
    let loaded = match (tls.mode, &tls.cert, &tls.key, &tls.ca_file) {
        (TlsMode::Files, Some(cert), Some(key), _) => load_pair(cert, key).map(|_| ()),
        (TlsMode::Acme, _, _, Some(ca)) => client_config(ca).map(|_| ()),
        _ => Ok(()),
    };
    match loaded {
        Ok(()) => Ok(()),
        Err(e) => Err(file_error(tls, e).unwrap_or_else(|e| {
            ConfigError::new("tls", e.to_string(), "check the [tls] settings")
        })),
    }
}

/// Sets TLS up for `config` and spawns the tasks it needs (stopped by `cancel`).
pub async fn prepare(
    tls: &TlsConfig,
    state_dir: &Path,
    status: Arc<TlsStatus>,
    cancel: CancellationToken,
) -> Result<(Prepared, Vec<JoinHandle<()>>), TlsError> {
    match tls.mode {
        TlsMode::Off => Ok((Prepared::Off, nothing_to_reload(cancel))),
        TlsMode::Files => {
            let (cert, key) = match (&tls.cert, &tls.key) {
                (Some(c), Some(k)) => (c.clone(), k.clone()),
                // Validation refuses files mode without both paths.
                _ => return Err(TlsError::NoCertificate(PathBuf::from("tls.cert"))),
            };
            let (pair, not_after) = load_pair(&cert, &key)?;
            status.ok(|r| {
                r.loaded += 1;
                r.not_after = not_after;
            });
            tracing::info!(cert = %cert.display(), not_after, "TLS certificate loaded");
            let resolver = Arc::new(FilesResolver {
                current: RwLock::new(Arc::new(pair)),
            });
            let config = server_config(resolver.clone())?;
            let task = tokio::spawn(watch_files(
                hangups(),
                resolver,
                cert,
                key,
                Duration::from_secs(tls.reload_poll_secs),
                status,
                cancel,
            ));
            Ok((
                Prepared::Files(RustlsConfig::from_config(Arc::new(config))),
                vec![task],
            ))
        }
        TlsMode::Acme => {
            let cache_dir = tls
                .cache_dir
                .clone()
                .unwrap_or_else(|| state_dir.join("acme"));
            let contact: Vec<String> = tls
                .contact
                .iter()
                .map(|c| {
                    if c.starts_with("mailto:") {
                        c.clone()
                    } else {
                        format!("mailto:{c}")
                    }
                })
                .collect();
            writable_cache_dir(&cache_dir)?;
            let ca = match &tls.ca_file {
                Some(ca) => Some(client_config(ca)?),
                None => None,
            };
            let resolver = Arc::new(AcmeResolver::new());
            let acceptor = AcmeTlsAcceptor::new(resolver.clone())?;
            let http01 =
                (tls.challenge == AcmeChallenge::Http01).then(|| Http01Responder(resolver.clone()));
            let (domains, directory, challenge) = (
                tls.domains.clone(),
                tls.directory_url().to_string(),
                tls.challenge,
            );
            let cache = {
                let (resolver, status, cache_dir) =
                    (resolver.clone(), status.clone(), cache_dir.clone());
                move || ObservedCache {
                    inner: DirCache::new(cache_dir.clone()),
                    dir: cache_dir.clone(),
                    status: status.clone(),
                    resolver: resolver.clone(),
                }
            };
            let states = move || {
                let base = match &ca {
                    Some(ca) => AcmeConfig::new_with_client_config(&domains, ca.clone()),
                    None => AcmeConfig::new(&domains),
                };
                base.contact(contact.iter())
                    .directory(&directory)
                    .challenge_type(match challenge {
                        AcmeChallenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
                        AcmeChallenge::Http01 => UseChallenge::Http01,
                    })
                    .cache(cache())
                    .state()
            };
            tracing::info!(
                domains = ?tls.domains,
                directory = tls.directory_url(),
                cache = %cache_dir.display(),
                challenge = tls.challenge.as_str(),
                "ACME enabled"
            );
            let retry = Retry {
                min: Duration::from_secs(tls.retry_min_secs),
                max: Duration::from_secs(tls.retry_max_secs),
            };
            let task = tokio::spawn(drive_acme(
                Box::new(states),
                resolver,
                retry,
                status,
                hangups(),
                cancel,
            ));
            Ok((Prepared::Acme { acceptor, http01 }, vec![task]))
        }
    }
}

/// With `tls.mode = "off"` SIGHUP has nothing to reload: a task that says so in the log for
/// each one, so that `systemctl reload` is seen to do nothing. The process already survives
/// SIGHUP (`cli` listens for it before anything else); this only makes it visible. Stopped by
/// `cancel`.
fn nothing_to_reload(cancel: CancellationToken) -> Vec<JoinHandle<()>> {
    let mut hup = hangups();
    if hup.is_none() {
        return Vec::new();
    }
    vec![tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = hangup(&mut hup) => tracing::info!("SIGHUP: nothing to reload in tls.mode=off"),
            }
        }
    })]
}

/// A client config that trusts only the CAs in `ca_file` (private ACME directories).
fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let pem = std::fs::read(ca_file).map_err(|source| TlsError::Read {
        path: ca_file.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        roots.add(der).map_err(|e| TlsError::CaFile {
            path: ca_file.to_path_buf(),
            problem: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::CaFile {
            path: ca_file.to_path_buf(),
            problem: "no CA certificate found".into(),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// When a failed ACME order is tried again: `min` after the first failure, doubling with each
/// further one, at most `max`.
#[derive(Debug, Clone, Copy)]
struct Retry {
    min: Duration,
    max: Duration,
}

impl Retry {
    /// The wait after `failures` (at least 1) failed orders in a row.
    fn wait(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.min.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Makes a fresh ACME state (the same settings each time).
type States = Box<dyn Fn() -> AcmeState<io::Error, io::Error> + Send>;

/// The SIGHUP stream, registered before serving starts so an early SIGHUP cannot kill the
/// process; `None` where there are no signals.
fn hangups() -> Option<Hangup> {
    #[cfg(unix)]
    return tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP (never, without a stream, or once the stream has ended).
async fn hangup(hup: &mut Option<Hangup>) {
    #[cfg(unix)]
    if let Some(s) = hup.as_mut() {
        if s.recv().await.is_some() {
            return;
        }
        *hup = None;
    }
    let _ = hup;
    std::future::pending::<()>().await
}

/// Polls an ACME state until cancelled: nothing is ordered or renewed otherwise. When an order
/// fails, the state (and its own backoff) is dropped; after `retry`'s wait, or at once on
/// SIGHUP, a fresh state loads the cache again and orders.
async fn drive_acme(
    states: States,
    resolver: Arc<AcmeResolver>,
    retry: Retry,
    status: Arc<TlsStatus>,
    mut hup: Option<Hangup>,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    let mut first = true;
    loop {
        let mut state = states();
        resolver.set_challenges(state.resolver());
        let failure = loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                () = hangup(&mut hup) => {
                    tracing::info!("SIGHUP: nothing to reload in tls.mode=acme (the certificate renews by itself; SIGHUP retries a failed order at once)");
                    continue;
                }
                e = state.next() => e,
            };
            match event {
                // A later state loads the certificate already served; the failure stands.
                Some(Ok(EventOk::DeployedCachedCert)) if !first => {}
                Some(Ok(EventOk::DeployedCachedCert)) => {
                    status.ok(|r| r.loaded += 1);
                    tracing::info!(expires_in_secs = ?status.report().expires_in_secs(), "ACME: serving the cached certificate");
                }
                Some(Ok(EventOk::DeployedNewCert)) => {
                    failures = 0;
                    status.ok(|r| r.issued += 1);
                    tracing::info!("ACME: new certificate deployed");
                }
                Some(Ok(ok)) => tracing::debug!(event = ?ok, "ACME"),
                // The state would retry these after its own wait, or at once (an unreadable
                // new certificate): retried here instead.
                Some(Err(err @ (EventError::Order(_) | EventError::NewCertParse(_)))) => {
                    break err.to_string();
                }
                // Cache trouble: the state carries on (and orders, without a cached
                // certificate or account).
                Some(Err(err)) => {
                    let msg = err.to_string();
                    tracing::error!(error = %msg, "ACME cache");
                    status.failed(msg);
                }
                None => return,
            }
        };
        drop(state);
        first = false;
        failures = failures.saturating_add(1);
        let wait = retry.wait(failures);
        let report = status.report();
        tracing::error!(
            error = %failure,
            failures,
            retry_in_secs = wait.as_secs(),
            serving_cached = report.not_after.is_some(),
            expires_in_secs = ?report.expires_in_secs(),
            "ACME order failed; retrying after the wait (or at once on SIGHUP)"
        );
        status.failed_until(failure, Some(wait));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = hangup(&mut hup) => {
                tracing::info!("SIGHUP: retrying the failed ACME order now");
                failures = 0;
            }
        }
    }
}

/// rustls-acme's directory cache, noting the certificate's expiry as it passes through and
/// handing the certificate to the listener's [`AcmeResolver`].
struct ObservedCache {
    inner: DirCache<PathBuf>,
    /// The directory `inner` writes to, to restrict what it wrote ([`tighten`]).
    dir: PathBuf,
    status: Arc<TlsStatus>,
    resolver: Arc<AcmeResolver>,
}

#[async_trait::async_trait]
impl CertCache for ObservedCache {
    type EC = io::Error;
    async fn load_cert(
        &self,
        domains: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        let pem = self.inner.load_cert(domains, directory_url).await?;
        if let Some(p) = &pem {
            self.resolver.set_cert_pem(p);
            self.status.set_not_after(pem_not_after(p));
        }
        Ok(pem)
    }
    async fn store_cert(
        &self,
        domains: &[String],
        directory_url: &str,
        cert: &[u8],
    ) -> Result<(), io::Error> {
        // Served whether or not the cache can keep it.
        self.resolver.set_cert_pem(cert);
        self.status.set_not_after(pem_not_after(cert));
        self.inner.store_cert(domains, directory_url, cert).await?;
        tighten(&self.dir);
        Ok(())
    }
}

#[async_trait::async_trait]
impl AccountCache for ObservedCache {
    type EA = io::Error;
    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, io::Error> {
        self.inner.load_account(contact, directory_url).await
    }
    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), io::Error> {
        self.inner
            .store_account(contact, directory_url, account)
            .await?;
        tighten(&self.dir);
        Ok(())
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reloads the pair on SIGHUP and when either file's mtime changes. A bad pair is reported and
/// the previous certificate stays in use.
#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

async fn watch_files(
    mut hup: Option<Hangup>,
    resolver: Arc<FilesResolver>,
    cert: PathBuf,
    key: PathBuf,
    poll: Duration,
    status: Arc<TlsStatus>,
    cancel: CancellationToken,
) {
    let mut seen = (modified(&cert), modified(&key));
    let mut tick = tokio::time::interval(if poll.is_zero() {
        Duration::from_secs(3600)
    } else {
        poll
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reason = tokio::select! {
            () = cancel.cancelled() => return,
            () = hangup(&mut hup) => "SIGHUP",
            _ = tick.tick() => {
                let now = (modified(&cert), modified(&key));
                if poll.is_zero() || now == seen {
                    continue;
                }
                "files changed"
            }
        };
        seen = (modified(&cert), modified(&key));
        match load_pair(&cert, &key) {
            Ok((pair, not_after)) => {
                resolver.set(pair);
                status.ok(|r| {
                    r.loaded += 1;
                    r.not_after = not_after;
                });
                tracing::info!(reason, not_after, "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(reason, error = %e, "TLS reload failed; still serving the previous certificate");
                status.failed(e.to_string());
            }
        }
    }
}

/// The plain-HTTP listener's redirect: every request is redirected (308) to the same path and
/// query under the public URL; the target is built from configuration, never from `Host`.
/// `app::plain_router` puts it behind the allowlist and the edge's other layers.
pub fn redirect_routes(public_url: String) -> axum::Router {
    use axum::http::{HeaderValue, StatusCode, Uri, header};
    use axum::response::IntoResponse;
    axum::Router::new().fallback(move |uri: Uri| {
        let target = format!(
            "{}{}",
            public_url,
            uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        );
        async move {
            match HeaderValue::from_str(&target) {
                Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            }
        }
    })
}

/// The path prefix of HTTP-01 challenge requests (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// With `challenge = "http-01"`, `/.well-known/acme-challenge/{token}` on the plain-HTTP
/// listener: the key authorization for the challenge in progress, or 404 for any other token
/// (a redirect to https would make the CA fail the challenge on the TLS port, which is not
/// ready for it).
pub fn http01_routes(responder: Http01Responder) -> axum::Router {
    use axum::extract::Path;
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    axum::Router::new().route(
        &format!("{ACME_CHALLENGE_PREFIX}{{token}}"),
        axum::routing::get(move |Path(token): Path<String>| async move {
            match responder.key_authorization(&token) {
                Some(key_auth) => {
                    tracing::info!("ACME: answered the HTTP-01 challenge");
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/octet-stream"),
                        )],
                        key_auth,
                    )
                        .into_response()
                }
                None => {
                    tracing::debug!("ACME: HTTP-01 request for a token not in progress");
                    (
                        StatusCode::NOT_FOUND,
                        "no such ACME challenge in progress\n",
                    )
                        .into_response()
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_bundle_yields_its_first_certificate_expiry() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        let bundle = format!("{}{}", key.serialize_pem(), cert.pem());
        let t = pem_not_after(bundle.as_bytes()).expect("found");
        assert_eq!(t, 1_925_078_400);
    }

    #[test]
    fn acme_retries_double_from_the_first_wait_up_to_the_longest() {
        let retry = Retry {
            min: Duration::from_secs(10),
            max: Duration::from_secs(3600),
        };
        let waits: Vec<u64> = (1..=10).map(|n| retry.wait(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]);
        // However many failures, no overflow and no wait past the longest.
        for n in [0, 31, 32, 64, u32::MAX] {
            assert!(retry.wait(n) <= retry.max, "{n}");
        }
        let huge = Retry {
            min: Duration::from_secs(86_400),
            max: Duration::from_secs(86_400),
        };
        assert_eq!(huge.wait(u32::MAX), Duration::from_secs(86_400));
    }

    #[test]
    fn status_keeps_the_last_error_until_the_next_success() {
        let s = TlsStatus::new(TlsMode::Acme);
        assert_eq!(s.report().state, "pending");
        s.failed_until("connection refused".into(), Some(Duration::from_secs(10)));
        let r = s.report();
        assert_eq!(r.state, "error");
        assert!(r.last_error.is_some());
        assert_eq!(
            r.retry_at.zip(r.last_error_at).map(|(a, b)| a - b),
            Some(10)
        );
        s.ok(|r| r.issued += 1);
        let r = s.report();
        assert_eq!((r.state, r.last_error, r.retry_at), ("ok", None, None));
    }
}
