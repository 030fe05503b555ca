//! ACME mode (`[tls] mode = "acme"`): certificates from an ACME CA through rustls-acme, over
//! TLS-ALPN-01 on the TLS port itself (no port 80 needed) or HTTP-01 on the plain-HTTP
//! listener ([`http01_routes`]). Let's Encrypt *staging* unless `directory = "production"`;
//! any other directory URL (and `ca_file` to trust it) for private CAs.
//!
//! - The account key and certificates are cached in `<state_dir>/acme` ([`ObservedCache`]),
//!   so a restart serves the cached certificate without a new order.
//! - An ACME state does nothing unless polled: [`drive_acme`] polls it in an owned task; it
//!   orders, renews at 2/3 of the lifetime and hot-swaps the certificate for new handshakes
//!   (open connections keep theirs).
//! - When an order fails (the CA unreachable, a challenge the CA could not validate), the
//!   cached certificate keeps being served; the failure is logged and kept in
//!   [`TlsStatus`] (for `/health` and metrics, with the certificate's remaining lifetime; the
//!   error's text and the next retry's time only on the admin listener). The order is retried
//!   after `tls.retry_min_secs`, doubling up to `tls.retry_max_secs` (10 s to 1 h by
//!   default); SIGHUP retries at once. rustls-acme's own backoff doubles without a useful cap
//!   (to 2^16 s, 18 hours), so [`drive_acme`] drops a state whose order failed and starts a
//!   fresh one when its own wait is over.
//! - The served certificate and the challenge answers live in [`AcmeResolver`], which outlives
//!   the states, and [`AcmeTlsAcceptor`] sends the CA's TLS-ALPN-01 handshakes to it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
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
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{AcmeChallenge, TlsConfig};
use super::tls::{
    Hangup, Prepared, TlsError, TlsStatus, certified_key, hangup, hangups, pem_not_after, provider,
    server_config,
};

/// Sets ACME up for `tls` and spawns the task that drives it (stopped by `cancel`).
pub(super) fn prepare(
    tls: &TlsConfig,
    state_dir: &Path,
    status: Arc<TlsStatus>,
    cancel: CancellationToken,
) -> Result<(Prepared, Vec<JoinHandle<()>>), TlsError> {
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
    let states = {
        let (resolver, status, cache_dir) = (resolver.clone(), status.clone(), cache_dir.clone());
        move || {
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
                .cache(ObservedCache {
                    inner: DirCache::new(cache_dir.clone()),
                    dir: cache_dir.clone(),
                    status: status.clone(),
                    resolver: resolver.clone(),
                })
                .state()
        }
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

/// A client config that trusts only the CAs in `ca_file` (private ACME directories).
pub(super) fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
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
        if !first {
            status.retrying();
        }
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

impl ObservedCache {
    /// A certificate (rustls-acme's PEM) loaded from or stored in the cache: served, and its
    /// expiry noted.
    fn observe(&self, pem: &[u8]) {
        self.resolver.set_cert_pem(pem);
        self.status.set_not_after(pem_not_after(pem));
    }
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
            self.observe(p);
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
        self.observe(cert);
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
}
