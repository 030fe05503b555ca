//! Client ID metadata documents: a `client_id` that is an HTTPS URL names a JSON document
//! describing the client (`client_id`, `client_name`, `redirect_uris`). It is fetched once
//! and kept for an hour as a client of the scope that asked.
//!
//! Fetching a URL chosen by a stranger is a server-side request forgery risk, so: HTTPS only,
//! no userinfo or fragment, every address the host resolves to must be public (no loopback,
//! private, link-local, …), the connection goes to exactly the checked addresses, redirects
//! are not followed, and the fetch is bounded in time (5 s) and size (64 KiB). A first fetch
//! at a scope costs the asking address one of its registrations (`/authorize` counts it before
//! fetching; refreshing a document already known there adds no client and costs none), and a
//! failed fetch is remembered for a minute, so asking again refetches nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;

use super::store::Client;

/// Largest accepted document.
const MAX_BYTES: usize = 64 * 1024;
/// How long a fetched document is trusted before it is fetched again.
pub const CACHE_MS: i64 = 3_600_000;
/// How long a failed fetch is remembered: the same document asked for again within it gets
/// the same answer without a new fetch.
pub const FAILURE_MEMORY_MS: i64 = 60_000;
/// Most failed fetches remembered at once; beyond it the one remembered longest is forgotten.
const MAX_FAILURES: usize = 1000;

/// Fetches metadata documents (the fetched clients are kept in the store).
pub struct Fetcher {
    /// Only for tests against a local HTTPS server: loopback addresses are allowed and this
    /// root is trusted. The server never sets it (no configuration reaches it).
    local_test_root: Option<reqwest::Certificate>,
    /// Fetches attempted (a host lookup or more): tests read it to see that an answer came
    /// without one.
    attempts: AtomicU64,
    /// Recently failed fetches by `"{scope} {url}"` (redirect URI rules differ per scope):
    /// until when each is remembered, and its error.
    failures: Mutex<HashMap<String, (i64, String)>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

/// The document fields this server reads.
#[derive(Debug, Deserialize)]
struct Document {
    client_id: String,
    client_name: Option<String>,
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: Option<String>,
}

impl Fetcher {
    pub fn new() -> Self {
        Self {
            local_test_root: None,
            attempts: AtomicU64::new(0),
            failures: Mutex::default(),
        }
    }

    /// A fetcher for tests against a local HTTPS server whose certificate chains to
    /// `root_pem`: it allows loopback addresses (nothing else private) and trusts that root.
    #[doc(hidden)]
    pub fn for_local_tests(root_pem: &[u8]) -> Result<Self, String> {
        let root = reqwest::Certificate::from_pem(root_pem).map_err(|e| e.to_string())?;
        Ok(Self {
            local_test_root: Some(root),
            attempts: AtomicU64::new(0),
            failures: Mutex::default(),
        })
    }

    /// How many fetches were attempted (a host lookup or more) since the server started.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// The error of a fetch of `url` for `scope` that failed less than
    /// [`FAILURE_MEMORY_MS`] before `now`, if any.
    pub fn recent_failure(&self, url: &str, scope: &str, now: i64) -> Option<String> {
        self.failures()
            .get(&failure_key(scope, url))
            .filter(|(until, _)| *until > now)
            .map(|(_, error)| error.clone())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, String)>> {
        // The map is only read and replaced entry by entry; a panic cannot leave it torn.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a failed fetch, within [`MAX_FAILURES`].
    fn remember_failure(&self, key: String, error: &str, now: i64) {
        let mut failures = self.failures();
        if failures.len() >= MAX_FAILURES && !failures.contains_key(&key) {
            failures.retain(|_, (until, _)| *until > now);
            if failures.len() >= MAX_FAILURES
                && let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(k, _)| k.clone())
            {
                failures.remove(&oldest);
            }
        }
        failures.insert(key, (now + FAILURE_MEMORY_MS, error.to_string()));
    }

    /// Fetches and validates the document at `url` for `scope`, with `rules` for its redirect
    /// URIs, and remembers a failure (see [`Fetcher::recent_failure`]); it always fetches, so
    /// callers ask that first. The error text is safe to show on the sign-in page.
    pub async fn fetch(&self, url: &str, scope: &str, rules: &[String]) -> Result<Client, String> {
        let parsed = check_document_url(url)?;
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let fetched = self.fetch_checked(&parsed, url, scope, rules).await;
        if let Err(e) = &fetched {
            self.remember_failure(failure_key(scope, url), e, super::store::now_ms());
        }
        fetched
    }

    async fn fetch_checked(
        &self,
        parsed: &url::Url,
        url: &str,
        scope: &str,
        rules: &[String],
    ) -> Result<Client, String> {
        let host = parsed.host_str().unwrap_or("").to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(a)) => a.collect(),
            _ => return Err(format!("cannot resolve `{host}`")),
        };
        if addrs.is_empty() {
            return Err(format!("`{host}` has no address"));
        }
        let loopback_ok = self.local_test_root.is_some();
        if let Some(a) = addrs
            .iter()
            .find(|a| !(is_public(a.ip()) || loopback_ok && a.ip().is_loopback()))
        {
            return Err(format!(
                "`{host}` resolves to a non-public address ({}); refused",
                a.ip()
            ));
        }
        let mut builder = reqwest::Client::builder();
        if let Some(root) = &self.local_test_root {
            builder = builder.tls_certs_only([root.clone()]);
        }
        let client = builder
            // Straight to the checked address: a proxy from the environment would resolve
            // the name again and defeat the pinning above.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .resolve_to_addrs(&host, &addrs)
            .user_agent(concat!("mssql-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let resp = client
            .get(parsed.as_str())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("cannot fetch the client metadata document: {e}"))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "the client metadata document answered {} (redirects are not followed)",
                resp.status()
            ));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > MAX_BYTES)
        {
            return Err("the client metadata document is too large".into());
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading the document failed: {e}"))?;
            if body.len() + chunk.len() > MAX_BYTES {
                return Err("the client metadata document is too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        parse_document(url, &body, scope, rules)
    }
}

/// The failure memory's key: `"{scope} {url}"` (no accepted URL contains a space).
fn failure_key(scope: &str, url: &str) -> String {
    format!("{scope} {url}")
}

/// Validates a fetched document and turns it into a (public) client of `scope`.
fn parse_document(url: &str, body: &[u8], scope: &str, rules: &[String]) -> Result<Client, String> {
    let doc: Document = serde_json::from_slice(body)
        .map_err(|e| format!("the client metadata document is not valid: {e}"))?;
    if doc.client_id != url {
        return Err("the document's client_id differs from its URL".into());
    }
    if doc.redirect_uris.is_empty() || doc.redirect_uris.len() > 10 {
        return Err("the document must list 1 to 10 redirect_uris".into());
    }
    for uri in &doc.redirect_uris {
        super::register::check_redirect_uri(uri, rules)?;
    }
    match doc.token_endpoint_auth_method.as_deref() {
        None | Some("none") => {}
        Some(other) => {
            return Err(format!(
                "token_endpoint_auth_method `{}` is not supported for metadata-document clients (use none)",
                crate::tools::truncate(other, 40)
            ));
        }
    }
    let now = super::store::now_ms();
    Ok(Client {
        client_id: doc.client_id,
        scope: scope.to_string(),
        name: super::register::clean_name(doc.client_name.as_deref()),
        redirect_uris: doc.redirect_uris,
        secret_hash: None,
        auth_method: "none".into(),
        metadata_document: true,
        created_at: now,
        last_used_at: AtomicI64::new(now),
    })
}

/// Whether `client_id` is a metadata document URL (rather than a registered id).
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// The URL rules of the client ID metadata document draft: https, a path, no fragment, no
/// userinfo, no dot segments.
pub fn check_document_url(url: &str) -> Result<url::Url, String> {
    if url.len() > 2000 {
        return Err("the client_id URL is too long".into());
    }
    // The id is stored, logged and listed as written: no control characters or spaces (a
    // newline or an escape sequence would forge log lines or reach an operator's terminal).
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("the client_id URL must not contain control characters or spaces".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("the client_id is not a URL: {e}"))?;
    // What the parser would write back, so that one client has one spelling (no case
    // variants of the host, no default port, no escapes the parser would change).
    if parsed.as_str() != url {
        return Err(format!(
            "the client_id URL must be written in its normal form ({})",
            parsed.as_str()
        ));
    }
    if parsed.scheme() != "https" {
        return Err("a URL client_id must use https".into());
    }
    if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a URL client_id must not have a fragment or user information".into());
    }
    if parsed.path() == "/" || parsed.path().is_empty() {
        return Err("a URL client_id must have a path".into());
    }
    if url.contains("/./") || url.contains("/../") {
        return Err("a URL client_id must not have dot segments".into());
    }
    if parsed.host_str().is_none() {
        return Err("a URL client_id needs a host".into());
    }
    if let Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) = parsed.host() {
        return Err("a URL client_id must name a host, not an IP address".into());
    }
    Ok(parsed)
}

/// Whether an address is on the public internet (not loopback, private, link-local, CGNAT,
/// documentation, multicast, …).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // IPv4-compatible (::/96, deprecated): an IPv4 address in disguise.
                || s[..6] == [0; 6]
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                // Site-local (fec0::/10, deprecated but still routed inside some networks).
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                // Teredo (2001::/32) and 6to4 (2002::/16) carry an IPv4 address inside, which
                // may be a private one.
                || (s[0] == 0x2001 && s[1] == 0)
                || s[0] == 0x2002
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<String> {
        vec!["chatgpt.com".into(), "127.0.0.1".into()]
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "::7f00:1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
        ] {
            let ip: IpAddr = bad.parse().expect("ip");
            assert!(!is_public(ip), "{bad}");
        }
        for ok in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            let ip: IpAddr = ok.parse().expect("ip");
            assert!(is_public(ip), "{ok}");
        }
    }

    #[test]
    fn document_urls_must_be_https_with_a_path_and_a_name() {
        assert!(check_document_url("https://app.example.com/oauth/client.json").is_ok());
        for bad in [
            "http://app.example.com/client.json",
            "https://app.example.com/",
            "https://app.example.com",
            "https://u:p@app.example.com/c.json",
            "https://app.example.com/c.json#x",
            "https://127.0.0.1/c.json",
            "https://[::1]/c.json",
            "https://app.example.com/a/../c.json",
            "https://app.example.com/c.json\n2026 forged log line",
            "https://app.example.com/c\u{1b}]52;c;x\u{7}.json",
            "https://App.Example.com/c.json",
            "https://app.example.com:443/c.json",
            "https://app.example.com/c .json",
        ] {
            assert!(check_document_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_document_url_resolving_to_loopback_is_never_fetched() {
        let f = Fetcher::new();
        let err = f
            .fetch("https://localhost/client.json", "/chatgpt", &rules())
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains("non-public"), "{err}");
    }

    #[test]
    fn a_failure_is_remembered_for_a_minute_per_scope_and_the_memory_is_bounded() {
        let f = Fetcher::new();
        let url = "https://app.example.com/c.json";
        f.remember_failure(failure_key("/chatgpt", url), "no", 0);
        assert_eq!(
            f.recent_failure(url, "/chatgpt", 59_999).as_deref(),
            Some("no")
        );
        assert_eq!(f.recent_failure(url, "/claude", 0), None);
        assert_eq!(f.recent_failure(url, "/chatgpt", FAILURE_MEMORY_MS), None);
        for n in 1..=MAX_FAILURES as i64 {
            f.remember_failure(failure_key("/chatgpt", &format!("{url}{n}")), "no", n);
        }
        assert_eq!(f.failures().len(), MAX_FAILURES);
        // The one remembered longest made room.
        assert_eq!(f.recent_failure(url, "/chatgpt", MAX_FAILURES as i64), None);
    }

    #[test]
    fn a_document_must_name_itself_and_allowed_redirects() {
        let url = "https://app.example.com/c.json";
        let good = br#"{"client_id":"https://app.example.com/c.json","client_name":"App","redirect_uris":["https://chatgpt.com/cb"]}"#;
        let c = parse_document(url, good, "/chatgpt", &rules()).expect("valid");
        assert_eq!(c.name, "App");
        assert!(c.metadata_document && c.secret_hash.is_none());
        let other_id = br#"{"client_id":"https://evil.example.com/c.json","redirect_uris":["https://chatgpt.com/cb"]}"#;
        assert!(parse_document(url, other_id, "/chatgpt", &rules()).is_err());
        let bad_redirect = br#"{"client_id":"https://app.example.com/c.json","redirect_uris":["https://evil.com/cb"]}"#;
        assert!(parse_document(url, bad_redirect, "/chatgpt", &rules()).is_err());
        let jwt = br#"{"client_id":"https://app.example.com/c.json","redirect_uris":["https://chatgpt.com/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#;
        assert!(parse_document(url, jwt, "/chatgpt", &rules()).is_err());
    }
}
