//! The edge's configuration: `[tls]`, `[access]` and `[limits]`, plus the validation of
//! `server.trusted_proxies` and `scope.allow_ips`. Strict serde types (unknown keys are refused),
//! defaults in one place, every key documented in `config.toml.example`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::allowlist::{self, IpSet};
use crate::config::ConfigError;

/// How the listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Certificates from an ACME CA (Let's Encrypt by default) via TLS-ALPN-01 on the TLS port.
    Acme,
    /// Certificate chain and key from PEM files, reloaded on SIGHUP or when the files change.
    Files,
    /// Plain HTTP, for running behind another TLS-terminating proxy.
    #[default]
    Off,
}

/// How the ACME CA checks that this server answers for the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01: a special certificate on the TLS port itself; needs nothing but that port.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// HTTP-01: a token at `/.well-known/acme-challenge/…` on the plain-HTTP listener
    /// (`http_redirect_listen`), which the CA fetches from port 80. For when the TLS port is
    /// behind something that cannot pass TLS-ALPN-01 through (a TCP load balancer terminating
    /// or inspecting TLS, a port forward from 443 that the CA cannot reach, …).
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeChallenge {
    /// The name the CA and the configuration use.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `acme`, `files` or `off`.
    pub mode: TlsMode,
    /// ACME: the names to get a certificate for (all must resolve to this server).
    pub domains: Vec<String>,
    /// ACME: contact addresses for the account (`ops@example.com` or `mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// ACME: `staging` (the default, untrusted certificates, generous limits), `production`
    /// (Let's Encrypt's real CA), or the `https://` URL of any other ACME directory.
    pub directory: String,
    /// ACME: a PEM bundle of CA certificates to trust for the directory's HTTPS (private ACME
    /// servers). When unset the public web roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// ACME: where the account key and certificates are cached (default `<state_dir>/acme`).
    pub cache_dir: Option<PathBuf>,
    /// ACME: `tls-alpn-01` (default, on the TLS port) or `http-01` (on `http_redirect_listen`,
    /// which must then be set).
    pub challenge: AcmeChallenge,
    /// ACME: seconds to wait before retrying after the first failed order; the wait doubles
    /// with each further failure, up to `retry_max_secs`. SIGHUP retries at once.
    pub retry_min_secs: u64,
    /// ACME: the longest wait between retries of a failed order.
    pub retry_max_secs: u64,
    /// Files: the certificate chain (leaf first), PEM.
    pub cert: Option<PathBuf>,
    /// Files: the private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: Option<PathBuf>,
    /// Files: how often (seconds) to check the files for changes; 0 = only on SIGHUP.
    pub reload_poll_secs: u64,
    /// Optional plain-HTTP listener (usually `0.0.0.0:80`) that redirects to `public_url` and,
    /// with `challenge = "http-01"`, answers the CA's challenge requests.
    pub http_redirect_listen: Option<SocketAddr>,
    /// `Strict-Transport-Security` max-age in seconds (sent when TLS is on or the public URL is
    /// https); 0 disables the header.
    pub hsts_max_age_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::Off,
            domains: Vec::new(),
            contact: Vec::new(),
            directory: "staging".into(),
            ca_file: None,
            cache_dir: None,
            challenge: AcmeChallenge::TlsAlpn01,
            retry_min_secs: 10,
            retry_max_secs: 3600,
            cert: None,
            key: None,
            reload_poll_secs: 30,
            http_redirect_listen: None,
            hsts_max_age_secs: 31_536_000,
        }
    }
}

/// Let's Encrypt's directories.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl TlsConfig {
    /// The ACME directory URL `directory` stands for.
    pub fn directory_url(&self) -> &str {
        match self.directory.as_str() {
            "staging" => LETS_ENCRYPT_STAGING,
            "production" => LETS_ENCRYPT_PRODUCTION,
            url => url,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.mode {
            TlsMode::Acme => {
                if self.domains.is_empty() {
                    return Err(ConfigError::new(
                        "tls.domains",
                        "mode = \"acme\" needs at least one domain",
                        "list the public names, e.g. domains = [\"mcp.example.com\"]",
                    ));
                }
                for d in &self.domains {
                    let ok = !d.is_empty()
                        && d.len() <= 253
                        && d.split('.').all(|l| {
                            !l.is_empty()
                                && l.len() <= 63
                                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        });
                    if !ok {
                        return Err(ConfigError::new(
                            "tls.domains",
                            format!("`{d}` is not a DNS name"),
                            "use plain names such as \"mcp.example.com\" (no scheme, port or wildcard)",
                        ));
                    }
                }
                let d = self.directory.as_str();
                if !(d == "staging" || d == "production" || d.starts_with("https://")) {
                    return Err(ConfigError::new(
                        "tls.directory",
                        format!("`{d}` is neither staging, production nor an https:// URL"),
                        "use \"staging\" while testing, \"production\" for trusted certificates, or your ACME server's https:// directory URL",
                    ));
                }
                for c in &self.contact {
                    if c.trim().is_empty() || !c.contains('@') && !c.starts_with("mailto:") {
                        return Err(ConfigError::new(
                            "tls.contact",
                            format!("`{c}` is not an email address"),
                            "write e.g. contact = [\"ops@example.com\"]",
                        ));
                    }
                }
                if self.retry_min_secs == 0
                    || self.retry_max_secs < self.retry_min_secs
                    || self.retry_max_secs > 86_400
                {
                    return Err(ConfigError::new(
                        "tls.retry_min_secs/tls.retry_max_secs",
                        format!(
                            "the first retry wait must be at least 1 s and the longest between it and 86400 s (a day; a longer one could let a renewal slip), but they are {} and {}",
                            self.retry_min_secs, self.retry_max_secs
                        ),
                        {
                            let d = TlsConfig::default();
                            format!(
                                "remove both for the defaults ({} s doubling up to {} s), or set e.g. retry_min_secs = {} and retry_max_secs = {}",
                                d.retry_min_secs,
                                d.retry_max_secs,
                                d.retry_min_secs,
                                d.retry_max_secs
                            )
                        },
                    ));
                }
                if self.challenge == AcmeChallenge::Http01 && self.http_redirect_listen.is_none() {
                    return Err(ConfigError::new(
                        "tls.challenge/tls.http_redirect_listen",
                        "challenge = \"http-01\" is answered on the plain-HTTP listener, but `http_redirect_listen` is not set",
                        "set http_redirect_listen = \"0.0.0.0:80\" (and open port 80), or remove `challenge` to use TLS-ALPN-01 on the TLS port",
                    ));
                }
            }
            TlsMode::Files => {
                if self.cert.is_none() || self.key.is_none() {
                    return Err(ConfigError::new(
                        "tls.cert/tls.key",
                        "mode = \"files\" needs both `cert` and `key`",
                        "point them at the PEM chain and key, e.g. /etc/mssql-mcp/fullchain.pem and privkey.pem",
                    ));
                }
            }
            TlsMode::Off => {}
        }
        if self.mode != TlsMode::Acme && self.challenge != AcmeChallenge::TlsAlpn01 {
            return Err(ConfigError::new(
                "tls.challenge",
                format!(
                    "applies to mode = \"acme\" only, but mode is \"{}\"",
                    if self.mode == TlsMode::Files {
                        "files"
                    } else {
                        "off"
                    }
                ),
                "remove `challenge`, or set mode = \"acme\"",
            ));
        }
        Ok(())
    }
}

/// `[access]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Client addresses allowed anywhere on this server: CIDRs (`203.0.113.0/24`,
    /// `2001:db8::/32`, single addresses) and preset names (`chatgpt`, `anthropic`; list them
    /// with `mssql-mcp ip-presets`). Empty = every address.
    pub allow: Vec<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per second each client IP may sustain (all paths).
    pub per_ip_per_sec: u32,
    /// Requests a client IP may send in a burst above the sustained rate.
    pub per_ip_burst: u32,
    /// Requests per minute each client IP may send to OAuth endpoints (`/register`,
    /// `/authorize`, `/token`, `/sign-in` under any scope): password and code guessing.
    pub oauth_per_min: u32,
    /// Burst for the OAuth bucket.
    pub oauth_burst: u32,
    /// Tool calls per minute each OAuth client (or user) may make; a record page is a `fetch`.
    pub client_per_min: u32,
    /// Burst for the per-client bucket.
    pub client_burst: u32,
    /// Connections open at once across all clients and listeners; one more is closed at
    /// accept. Keep it under the process's file descriptor limit (the unit's `LimitNOFILE`).
    pub max_connections: u32,
    /// Connections one client IP may hold open (peers in `server.trusted_proxies` are held
    /// only to `max_connections`).
    pub max_connections_per_ip: u32,
    /// Long-lived SSE streams one client IP may hold open.
    pub sse_per_ip: u32,
    /// Long-lived SSE streams open at once across all clients.
    pub sse_total: u32,
    /// Seconds a client may take to send a complete request head (and a TLS handshake); on
    /// HTTP/1.1 this also bounds the wait for the next request on a kept-alive connection.
    pub header_read_timeout_secs: u64,
    /// A connection with no bytes in either direction and no request in progress for this many
    /// seconds is closed. Longer than the SSE keep-alive interval (15 s).
    pub idle_timeout_secs: u64,
    /// Longest time to produce a response's head (SSE streams are exempt once started).
    pub request_timeout_secs: u64,
    /// Largest request head read, in bytes; a longer one is answered 431. On HTTP/1.1 the
    /// request line and headers as sent (hyper's own default is about 400 KB); on HTTP/2 the
    /// decoded header list as RFC 9113 counts it (each field's name and value plus 32), sent to
    /// clients as `SETTINGS_MAX_HEADER_LIST_SIZE` (hyper's own HTTP/2 default is 16 KiB); a list
    /// that reaches it is answered 431, and a header block far beyond it (four times, or in too
    /// many frames) ends the connection. Bounds the
    /// memory each request may hold before it is even routed.
    pub max_header_bytes: usize,
    /// Requests one HTTP/2 connection may have in progress at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`); a client that opens more has them refused by the
    /// protocol. RFC 9113 asks for at least 100; hyper's own default is 200.
    pub max_streams_per_connection: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_ip_per_sec: 50,
            per_ip_burst: 200,
            oauth_per_min: 300,
            oauth_burst: 60,
            client_per_min: 600,
            client_burst: 60,
            max_connections: 16_384,
            max_connections_per_ip: 512,
            sse_per_ip: 16,
            sse_total: 2048,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 120,
            request_timeout_secs: 60,
            max_header_bytes: 64 * 1024,
            max_streams_per_connection: 100,
        }
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 10] = [
            ("max_connections", self.max_connections.into()),
            ("max_connections_per_ip", self.max_connections_per_ip.into()),
            ("per_ip_per_sec", self.per_ip_per_sec.into()),
            ("per_ip_burst", self.per_ip_burst.into()),
            ("oauth_per_min", self.oauth_per_min.into()),
            ("oauth_burst", self.oauth_burst.into()),
            ("client_per_min", self.client_per_min.into()),
            ("client_burst", self.client_burst.into()),
            ("sse_per_ip", self.sse_per_ip.into()),
            ("sse_total", self.sse_total.into()),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::new(
                    format!("limits.{key}"),
                    "must be at least 1",
                    "remove the key for its default (see config.toml.example)",
                ));
            }
        }
        if self.per_ip_per_sec > 1_000_000_000 {
            return Err(ConfigError::new(
                "limits.per_ip_per_sec",
                "is out of range",
                "use at most 1000000000",
            ));
        }
        if !(1..=300).contains(&self.header_read_timeout_secs) {
            return Err(ConfigError::new(
                "limits.header_read_timeout_secs",
                format!("{} is out of range", self.header_read_timeout_secs),
                "use 1 to 300 seconds (default 10)",
            ));
        }
        if !(20..=86_400).contains(&self.idle_timeout_secs) {
            return Err(ConfigError::new(
                "limits.idle_timeout_secs",
                format!("{} is out of range", self.idle_timeout_secs),
                "use 20 to 86400 seconds (default 120; above the 15 s SSE keep-alive)",
            ));
        }
        if !(1..=3600).contains(&self.request_timeout_secs) {
            return Err(ConfigError::new(
                "limits.request_timeout_secs",
                format!("{} is out of range", self.request_timeout_secs),
                "use 1 to 3600 seconds (default 60)",
            ));
        }
        // hyper refuses (panics on) a read buffer under 8 KiB.
        if !(8192..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(ConfigError::new(
                "limits.max_header_bytes",
                format!("{} is out of range", self.max_header_bytes),
                "use 8192 to 1048576 bytes (default 65536)",
            ));
        }
        if !(1..=10_000).contains(&self.max_streams_per_connection) {
            return Err(ConfigError::new(
                "limits.max_streams_per_connection",
                format!("{} is out of range", self.max_streams_per_connection),
                "use 1 to 10000 (default 100; RFC 9113 asks for at least 100)",
            ));
        }
        Ok(())
    }
}

/// Parses an allowlist (CIDRs and preset names) and names `key` in the error.
pub fn parse_allow(key: &str, entries: &[String]) -> Result<IpSet, ConfigError> {
    IpSet::parse(entries).map_err(|bad| {
        ConfigError::new(
            key,
            format!("`{bad}` is neither a CIDR, an IP address nor a preset"),
            format!(
                "write CIDRs such as \"203.0.113.0/24\" or \"2001:db8::/32\", or one of the presets: {}",
                allowlist::preset_names().join(", ")
            ),
        )
    })
}

/// The public URL when `server.public_url` is not set: `https://<first ACME domain>` (with the
/// port unless it is 443), `https://<listen>` with TLS files, `http://<listen>` without TLS.
pub fn default_public_url(config: &crate::config::Config) -> String {
    let listen = config.server.listen;
    match (config.tls.mode, config.tls.domains.first()) {
        (TlsMode::Acme, Some(d)) if listen.port() == 443 => format!("https://{d}"),
        (TlsMode::Acme, Some(d)) => format!("https://{d}:{}", listen.port()),
        (TlsMode::Off, _) => format!("http://{listen}"),
        _ => format!("https://{listen}"),
    }
}

/// Checks the edge keys of a whole configuration.
pub fn validate(config: &crate::config::Config) -> Result<(), ConfigError> {
    config.tls.validate()?;
    if config.tls.mode != TlsMode::Off
        && config
            .server
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("http://"))
    {
        return Err(ConfigError::new(
            "server.public_url",
            "TLS is on, but the public URL starts with http://",
            "write the https:// URL clients reach (e.g. \"https://mcp.example.com\")",
        ));
    }
    // Without a public URL the server names itself after its listen address (see
    // `default_public_url`): a wildcard one (0.0.0.0, ::) is no host a client can reach, and
    // every request's Host would be refused against it.
    // (Without authentication it is only a warning: requests to a loopback Host are always
    // taken, so a container published on 127.0.0.1 still works.)
    let listen = config.server.listen;
    if wildcard_without_public_url(config) && !config.server.insecure_no_auth {
        return Err(ConfigError::new(
            "server.public_url",
            format!("is not set, and server.listen ({listen}) names no host clients can reach"),
            "set server.public_url to the URL clients use, e.g. \"https://mcp.example.com\": \
             requests must be addressed to it, and every URL the server hands out starts with it",
        ));
    }
    // ACME gets a certificate for tls.domains only: a public URL on another host would be
    // served a certificate for the wrong name.
    if config.tls.mode == TlsMode::Acme
        && let Some(url) = config.server.public_url.as_deref()
        && let Ok(parsed) = url::Url::parse(url)
        && let Some(host) = parsed.host_str()
        && !config.tls.domains.iter().any(|d| {
            d.trim_end_matches('.')
                .eq_ignore_ascii_case(host.trim_end_matches('.'))
        })
    {
        return Err(ConfigError::new(
            "server.public_url",
            format!(
                "its host `{host}` is not among tls.domains ({}), so clients would get a \
                 certificate for another name",
                config.tls.domains.join(", ")
            ),
            "add the host to tls.domains, or make public_url use one of them",
        ));
    }
    if same_socket(config.server.listen, config.admin.listen) {
        return Err(ConfigError::new(
            "admin.listen",
            format!(
                "{} is the same port as server.listen ({}): the second listener could not bind",
                config.admin.listen, config.server.listen
            ),
            "give admin.listen a port of its own (default 127.0.0.1:8009)",
        ));
    }
    config.limits.validate()?;
    parse_allow("access.allow", &config.access.allow)?;
    let trusted = parse_allow("server.trusted_proxies", &config.server.trusted_proxies)?;
    if config
        .server
        .trusted_proxies
        .iter()
        .any(|e| allowlist::preset(e).is_some())
    {
        return Err(ConfigError::new(
            "server.trusted_proxies",
            "presets are client ranges, not proxies",
            "list the addresses of your own reverse proxies as CIDRs",
        ));
    }
    drop(trusted);
    // A /0 would believe every peer's X-Forwarded-For: any client could name any address and
    // pass the allowlists and the per-IP limits.
    if let Some(all) = config.server.trusted_proxies.iter().find(|e| {
        e.trim()
            .parse::<ipnet::IpNet>()
            .is_ok_and(|n| n.prefix_len() == 0)
    }) {
        return Err(ConfigError::new(
            "server.trusted_proxies",
            format!(
                "`{all}` trusts every peer, so any client could set its own address with X-Forwarded-For"
            ),
            "list only the addresses of your own reverse proxies (e.g. \"127.0.0.1\" or \"10.0.0.5/32\")",
        ));
    }
    for (i, s) in config.scopes.iter().enumerate() {
        parse_allow(&format!("scope[{i}].allow_ips"), &s.allow_ips)?;
    }
    if let Some(plain) = config.tls.http_redirect_listen {
        for (key, other) in [
            ("server.listen", config.server.listen),
            ("admin.listen", config.admin.listen),
        ] {
            if same_socket(plain, other) {
                return Err(ConfigError::new(
                    "tls.http_redirect_listen",
                    format!(
                        "{plain} is the same port as {key} ({other}): the second listener could not bind"
                    ),
                    format!(
                        "give tls.http_redirect_listen and {key} different ports (the plain-HTTP listener is usually \"0.0.0.0:80\")"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether listeners on `a` and `b` would want the same socket: one port (not 0, which picks
/// a free one), and the same address or a wildcard one.
fn same_socket(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// No `public_url`, and a wildcard listen address for the server to name itself after.
fn wildcard_without_public_url(config: &crate::config::Config) -> bool {
    config.server.public_url.is_none()
        && config.tls.mode != TlsMode::Acme
        && config.server.listen.ip().is_unspecified()
}

/// Settings that are valid but probably not what the operator meant, as one line each, for
/// `check-config` and the log at start.
pub fn warnings(config: &crate::config::Config) -> Vec<String> {
    let mut out = Vec::new();
    if wildcard_without_public_url(config) {
        out.push(format!(
            "server.public_url is not set and server.listen ({}) names no host: only requests \
             addressed to a loopback host are taken; set server.public_url to the URL clients use",
            config.server.listen
        ));
    }
    let https_url = config
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    if config.tls.mode == TlsMode::Off && https_url && config.server.trusted_proxies.is_empty() {
        out.push(
            "tls.mode = \"off\" with an https public_url means a TLS proxy in front, but \
             server.trusted_proxies is empty: every client will appear as the proxy's address \
             (one rate-limit bucket and one sign-in lockout for everyone, the proxy's address in \
             the audit log, and /metrics open to all if the proxy is on this machine); list the \
             proxy's address in server.trusted_proxies"
                .to_string(),
        );
    }
    out
}

/// Prints the edge part of `check-config`: TLS, allowlists (with the presets they use), limits.
pub fn describe(config: &crate::config::Config) {
    let tls = &config.tls;
    match tls.mode {
        TlsMode::Acme => crate::stdout::outln!(
            "TLS: ACME ({}) for {} from {}; a failed order retried after {} s, doubling up to {} s (SIGHUP: at once){}",
            match tls.challenge {
                AcmeChallenge::TlsAlpn01 => "TLS-ALPN-01 on the TLS port".to_string(),
                AcmeChallenge::Http01 => format!(
                    "HTTP-01 on {}",
                    tls.http_redirect_listen
                        .map(|a| a.to_string())
                        .unwrap_or_default()
                ),
            },
            tls.domains.join(", "),
            tls.directory_url(),
            tls.retry_min_secs,
            tls.retry_max_secs,
            if tls.directory == "staging" {
                " (staging: certificates are NOT trusted by browsers; set directory = \"production\" once this works)"
            } else {
                ""
            }
        ),
        TlsMode::Files => crate::stdout::outln!(
            "TLS: files {} + {} (reloaded on SIGHUP{})",
            tls.cert
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            tls.key
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if tls.reload_poll_secs > 0 {
                format!(" and checked every {} s", tls.reload_poll_secs)
            } else {
                String::new()
            }
        ),
        TlsMode::Off => crate::stdout::outln!("TLS: off (plain HTTP; put a TLS proxy in front)"),
    }
    if let Some(r) = tls.http_redirect_listen {
        crate::stdout::outln!("HTTP redirect listener on {r}");
        if tls.mode == TlsMode::Acme && tls.challenge == AcmeChallenge::Http01 && r.port() != 80 {
            crate::stdout::outln!(
                "  note: CAs fetch HTTP-01 tokens from port 80; {r} works only if port 80 is forwarded to it"
            );
        }
    }
    let lists: Vec<(String, &Vec<String>)> =
        std::iter::once(("access.allow".to_string(), &config.access.allow))
            .chain(
                config
                    .scopes
                    .iter()
                    .map(|s| (format!("scope {}", s.path), &s.allow_ips)),
            )
            .collect();
    let mut presets_used = Vec::new();
    for (name, entries) in lists {
        if entries.is_empty() {
            continue;
        }
        crate::stdout::outln!("allowlist {name}: {}", entries.join(", "));
        for e in entries {
            if let Some(p) = allowlist::preset(e)
                && !presets_used.contains(&p.name)
            {
                presets_used.push(p.name);
            }
        }
    }
    if config.access.allow.is_empty() {
        crate::stdout::outln!("allowlist access.allow: everyone");
    }
    for name in presets_used {
        if let Some(p) = allowlist::preset(name) {
            crate::stdout::outln!(
                "  preset {} (as of {}; changes over time): {}",
                p.name,
                p.as_of,
                p.cidrs.join(", ")
            );
        }
    }
    if !config.server.trusted_proxies.is_empty() {
        crate::stdout::outln!(
            "trusted proxies: {}",
            config.server.trusted_proxies.join(", ")
        );
    }
    let l = &config.limits;
    crate::stdout::outln!(
        "limits: {}/s burst {} per IP; OAuth {}/min burst {}; tool calls {}/min burst {} per client and user; connections {} per IP, {} total; SSE {} per IP, {} total; header {} s and {} bytes, {} HTTP/2 streams per connection, idle {} s, request {} s",
        l.per_ip_per_sec,
        l.per_ip_burst,
        l.oauth_per_min,
        l.oauth_burst,
        l.client_per_min,
        l.client_burst,
        l.max_connections_per_ip,
        l.max_connections,
        l.sse_per_ip,
        l.sse_total,
        l.header_read_timeout_secs,
        l.max_header_bytes,
        l.max_streams_per_connection,
        l.idle_timeout_secs,
        l.request_timeout_secs
    );
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
[[database]]
name = "main"
kind = "sqlite"
path = "/tmp/x.db"

[[scope]]
path = "/chatgpt"
database = "main"
"#;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("{BASE}\n{extra}"))
    }

    #[test]
    fn acme_needs_domains_and_defaults_to_staging() {
        let err = parse("[tls]\nmode = \"acme\"\n").unwrap_err();
        assert_eq!(err.key, "tls.domains");
        let c = parse("[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\n").expect("valid");
        assert_eq!(c.tls.directory_url(), super::LETS_ENCRYPT_STAGING);
        let c = parse(
            "[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\ndirectory = \"production\"\n",
        )
        .expect("valid");
        assert_eq!(c.tls.directory_url(), super::LETS_ENCRYPT_PRODUCTION);
        let err = parse(
            "[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\ndirectory = \"http://x\"\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "tls.directory");
    }

    #[test]
    fn acme_retry_waits_are_bounded() {
        const ACME: &str = "[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\n";
        let c = parse(ACME).expect("valid");
        assert_eq!((c.tls.retry_min_secs, c.tls.retry_max_secs), (10, 3600));
        for bad in [
            "retry_min_secs = 0",
            "retry_min_secs = 60\nretry_max_secs = 30",
            "retry_max_secs = 86401",
        ] {
            let err = parse(&format!("{ACME}{bad}\n")).unwrap_err();
            assert_eq!(err.key, "tls.retry_min_secs/tls.retry_max_secs", "{bad}");
        }
        let c = parse(&format!("{ACME}retry_min_secs = 1\nretry_max_secs = 1\n")).expect("valid");
        assert_eq!((c.tls.retry_min_secs, c.tls.retry_max_secs), (1, 1));
    }

    #[test]
    fn the_request_head_limit_is_bounded_where_hyper_can_take_it() {
        assert_eq!(parse("").expect("valid").limits.max_header_bytes, 65536);
        for bad in ["100", "8191", "2000000"] {
            let err = parse(&format!("[limits]\nmax_header_bytes = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "limits.max_header_bytes", "{bad}");
            assert!(err.fix.contains("8192"), "{err}");
        }
        assert!(parse("[limits]\nmax_header_bytes = 8192\n").is_ok());
        assert_eq!(
            parse("").expect("valid").limits.max_streams_per_connection,
            100
        );
        for bad in [0, 10_001] {
            let err =
                parse(&format!("[limits]\nmax_streams_per_connection = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "limits.max_streams_per_connection", "{bad}");
        }
    }

    #[test]
    fn with_tls_the_public_url_is_https() {
        let c = parse(
            "[server]\nlisten = \"0.0.0.0:443\"\n[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\n",
        )
        .expect("valid");
        assert_eq!(c.public_url(), "https://mcp.example.com");
        let err = parse(
            "[server]\npublic_url = \"http://mcp.example.com\"\n[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "server.public_url");
    }

    /// Configurations `check-config` used to call valid that could not serve anyone.
    #[test]
    fn the_public_url_must_name_a_reachable_host_and_the_certificate_s() {
        // A wildcard listen address is no host for clients to reach (OAuth hands out URLs
        // built on it); without authentication it is a warning.
        for listen in ["0.0.0.0:8008", "[::]:8443"] {
            let err = parse(&format!("[server]\nlisten = \"{listen}\"\n")).unwrap_err();
            assert_eq!(err.key, "server.public_url", "{listen}");
            let c = parse(&format!(
                "[server]\nlisten = \"{listen}\"\ninsecure_no_auth = true\n"
            ))
            .expect("valid without authentication");
            assert!(super::warnings(&c)[0].contains("server.public_url"));
        }
        parse(
            "[server]\nlisten = \"0.0.0.0:8008\"\npublic_url = \"http://mcp.example.com:8008\"\n",
        )
        .expect("with a public URL");
        // ACME's certificate covers tls.domains only.
        let acme = "[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\n";
        let err = parse(&format!(
            "[server]\npublic_url = \"https://other.example.com\"\n{acme}"
        ))
        .unwrap_err();
        assert_eq!(err.key, "server.public_url");
        assert!(err.problem.contains("other.example.com"), "{err}");
        parse(&format!(
            "[server]\npublic_url = \"https://MCP.example.com\"\n{acme}"
        ))
        .expect("the same host in another case");
        // The admin listener cannot share the main listener's port.
        let err =
            parse("[server]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"\n")
                .unwrap_err();
        assert_eq!(err.key, "admin.listen");
    }

    #[test]
    fn a_tls_proxy_that_is_not_trusted_is_warned_about() {
        let behind = "[server]\npublic_url = \"https://mcp.example.com\"\n[tls]\nmode = \"off\"\n";
        let c = parse(behind).expect("valid");
        assert_eq!(super::warnings(&c).len(), 1);
        assert!(super::warnings(&c)[0].contains("server.trusted_proxies"));
        let c = parse(&behind.replace("[tls]", "trusted_proxies = [\"127.0.0.1\"]\n[tls]"))
            .expect("valid");
        assert!(super::warnings(&c).is_empty());
    }

    #[test]
    fn http01_needs_the_plain_http_listener_and_names_both_keys() {
        let acme = "[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\n";
        let c = parse(acme).expect("valid");
        assert_eq!(
            c.tls.challenge,
            super::AcmeChallenge::TlsAlpn01,
            "the default"
        );
        let err = parse(&format!("{acme}challenge = \"http-01\"\n")).unwrap_err();
        assert_eq!(err.key, "tls.challenge/tls.http_redirect_listen");
        assert!(
            err.fix.contains("http_redirect_listen = \"0.0.0.0:80\""),
            "{err}"
        );
        let c = parse(&format!(
            "{acme}challenge = \"http-01\"\nhttp_redirect_listen = \"0.0.0.0:80\"\n"
        ))
        .expect("valid");
        assert_eq!(c.tls.challenge, super::AcmeChallenge::Http01);
        assert!(parse(&format!("{acme}challenge = \"dns-01\"\n")).is_err());
        let err = parse(
            "[tls]\nmode = \"off\"\nchallenge = \"http-01\"\nhttp_redirect_listen = \"0.0.0.0:80\"\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "tls.challenge");
    }

    #[test]
    fn files_mode_needs_both_paths() {
        let err = parse("[tls]\nmode = \"files\"\ncert = \"/c.pem\"\n").unwrap_err();
        assert_eq!(err.key, "tls.cert/tls.key");
    }

    #[test]
    fn a_bad_allowlist_entry_names_its_key_and_the_presets() {
        let err = parse("[access]\nallow = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(err.key, "access.allow");
        assert!(err.fix.contains("chatgpt"), "{err}");
        let err = Config::parse(&format!("{BASE}allow_ips = [\"nope\"]\n")).unwrap_err();
        assert_eq!(err.key, "scope[0].allow_ips");
    }

    #[test]
    fn presets_are_not_proxies() {
        let err = Config::parse(&format!(
            "[server]\ntrusted_proxies = [\"chatgpt\"]\n{BASE}"
        ))
        .unwrap_err();
        assert_eq!(err.key, "server.trusted_proxies");
    }

    #[test]
    fn proxies_trusting_every_address_are_refused() {
        for all in ["0.0.0.0/0", "::/0"] {
            let err = Config::parse(&format!(
                "[server]\ntrusted_proxies = [\"127.0.0.1\", \"{all}\"]\n{BASE}"
            ))
            .unwrap_err();
            assert_eq!(err.key, "server.trusted_proxies", "{all}");
            assert!(err.problem.contains(all), "{err}");
        }
        assert!(
            Config::parse(&format!(
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n{BASE}"
            ))
            .is_ok()
        );
    }

    #[test]
    fn the_http_listener_may_not_share_a_port_with_another_listener() {
        for (plain, admin) in [
            ("127.0.0.1:9090", "127.0.0.1:9090"),
            ("0.0.0.0:9090", "127.0.0.1:9090"),
        ] {
            let err = Config::parse(&format!(
                "[tls]\nhttp_redirect_listen = \"{plain}\"\n[admin]\nlisten = \"{admin}\"\n{BASE}"
            ))
            .unwrap_err();
            assert_eq!(err.key, "tls.http_redirect_listen", "{plain}");
            assert!(err.problem.contains("admin.listen"), "{err}");
        }
        assert!(
            Config::parse(&format!(
                "[tls]\nhttp_redirect_listen = \"0.0.0.0:80\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n{BASE}"
            ))
            .is_ok()
        );
    }

    #[test]
    fn limits_are_range_checked_and_unknown_keys_refused() {
        assert_eq!(
            parse("[limits]\nper_ip_burst = 0\n").unwrap_err().key,
            "limits.per_ip_burst"
        );
        assert_eq!(
            parse("[limits]\nidle_timeout_secs = 5\n").unwrap_err().key,
            "limits.idle_timeout_secs"
        );
        assert!(parse("[limits]\nper_ip_rps = 5\n").is_err());
        assert!(parse("[tls]\nmodee = \"off\"\n").is_err());
    }
}
