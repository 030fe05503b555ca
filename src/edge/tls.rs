//! TLS for the listener, in one of three modes (`[tls] mode`):
//!
//! - `acme`: certificates from an ACME CA, over TLS-ALPN-01 on the TLS port or HTTP-01 on the
//!   plain-HTTP listener, cached, renewed and retried by [`super::acme`].
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
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::acme::{AcmeTlsAcceptor, Http01Responder, client_config};
use super::config::{TlsConfig, TlsMode};
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

    pub(super) fn ok(&self, f: impl FnOnce(&mut TlsReport)) {
        let mut r = self.lock();
        r.state = "ok";
        r.last_error = None;
        r.retry_at = None;
        f(&mut r);
    }

    pub(super) fn failed(&self, error: String) {
        self.failed_until(error, None);
    }

    /// A failure that is tried again `retry_in` from now (when given).
    pub(super) fn failed_until(&self, error: String, retry_in: Option<Duration>) {
        let now = now_unix();
        let mut r = self.lock();
        r.state = "error";
        r.errors += 1;
        r.last_error = Some(error);
        r.last_error_at = Some(now);
        r.retry_at = retry_in.map(|d| now.saturating_add(d.as_secs() as i64));
    }

    /// The retry is under way: no time is due any more (the failure stands until it ends).
    pub(super) fn retrying(&self) {
        self.lock().retry_at = None;
    }

    pub(super) fn set_not_after(&self, t: Option<i64>) {
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

pub(super) fn provider() -> Arc<CryptoProvider> {
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

pub(super) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    let signing = provider().key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signing))
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
        TlsMode::Acme => super::acme::prepare(tls, state_dir, status, cancel),
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

/// The SIGHUP stream, registered before serving starts so an early SIGHUP cannot kill the
/// process; `None` where there are no signals.
pub(super) fn hangups() -> Option<Hangup> {
    #[cfg(unix)]
    return tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP (never, without a stream, or once the stream has ended).
pub(super) async fn hangup(hup: &mut Option<Hangup>) {
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

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reloads the pair on SIGHUP and when either file's mtime changes. A bad pair is reported and
/// the previous certificate stays in use.
#[cfg(unix)]
pub(super) type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
pub(super) type Hangup = ();

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
        s.retrying();
        let r = s.report();
        assert_eq!((r.state, r.retry_at), ("error", None));
        s.ok(|r| r.issued += 1);
        let r = s.report();
        assert_eq!((r.state, r.last_error, r.retry_at), ("ok", None, None));
    }
}
