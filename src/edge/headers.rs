//! Security headers on every response, as the seed guide's NGINX added them: HSTS (when the
//! request reached the server over https, see [`Hsts`]), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff`, plus `Referrer-Policy: no-referrer`. A handler that sets
//! one of them itself (e.g. a page with its own policy) keeps its value.
//!
//! The seed guide also sent `X-XSS-Protection: 1; mode=block`; browsers removed that filter and
//! the header can itself open cross-site leaks, so this sends `0` (the current OWASP advice).

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::client_ip::ClientIp;
use super::config::TlsMode;

/// The fixed headers (HSTS is added separately, when it applies).
pub const FIXED: [(HeaderName, &str); 4] = [
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_XSS_PROTECTION, "0"),
];

/// When `Strict-Transport-Security` is sent. HSTS belongs on responses that travel over https
/// only (RFC 6797 §7.2), so per request:
///
/// - TLS terminates here (`tls.mode` acme or files): always;
/// - `tls.mode = "off"`, the peer is a trusted proxy that sent `X-Forwarded-Proto`: when it
///   says `https`;
/// - `tls.mode = "off"`, `server.trusted_proxies` is set but the peer is not one of them: never
///   (the request came around the proxies, in plain HTTP; its own `X-Forwarded-Proto` is
///   ignored);
/// - otherwise (no trusted proxies configured, or a trusted proxy that did not say): when
///   `public_url` is https, the only statement of how clients reach the server.
///
/// In every case `hsts_max_age_secs = 0` turns it off, and so does `tls.mode = "off"` with an
/// http `public_url`.
#[derive(Debug, Clone)]
pub struct Hsts {
    /// The header value; `None` when HSTS is off altogether.
    value: Option<HeaderValue>,
    /// TLS terminates on this listener: every request arrived over https.
    tls_here: bool,
    /// `server.trusted_proxies` is not empty: a direct request bypassed them.
    proxies_configured: bool,
}

impl Hsts {
    pub fn new(config: &crate::config::Config) -> Self {
        let tls_here = config.tls.mode != TlsMode::Off;
        let https = tls_here || config.public_url().starts_with("https://");
        let value = if !https || config.tls.hsts_max_age_secs == 0 {
            None
        } else {
            HeaderValue::from_str(&format!(
                "max-age={}; includeSubDomains",
                config.tls.hsts_max_age_secs
            ))
            .ok()
        };
        Self {
            value,
            tls_here,
            proxies_configured: !config.server.trusted_proxies.is_empty(),
        }
    }

    /// The header for a request from `client` (as [`super::client_ip`] decided it).
    pub fn for_request(&self, client: Option<&ClientIp>) -> Option<&HeaderValue> {
        let value = self.value.as_ref()?;
        if self.tls_here {
            return Some(value);
        }
        let over_https = match client {
            Some(c) if c.via_proxy => c.forwarded_https.unwrap_or(true),
            Some(_) => !self.proxies_configured,
            // Not through the edge middleware (never on a listener): fall back to public_url.
            None => true,
        };
        over_https.then_some(value)
    }
}

/// Adds the security headers to a response unless already present: the fixed ones, and
/// `hsts` (from [`Hsts::for_request`], decided before the request moved on).
pub fn apply(h: &mut HeaderMap, hsts: Option<HeaderValue>) {
    insert_fixed(h);
    if let Some(v) = hsts
        && !h.contains_key(header::STRICT_TRANSPORT_SECURITY)
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
}

fn insert_fixed(h: &mut HeaderMap) {
    for (name, value) in FIXED.iter() {
        if !h.contains_key(name) {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hsts(extra_server: &str, tls: &str) -> Hsts {
        let text = format!(
            "[server]\n{extra_server}\n[[database]]\nname = \"main\"\nkind = \"sqlite\"\npath = \"/tmp/x.db\"\n\n[[scope]]\npath = \"/chatgpt\"\ndatabase = \"main\"\n{tls}"
        );
        Hsts::new(&Config::parse(&text).expect("valid"))
    }

    fn client(via_proxy: bool, forwarded_https: Option<bool>) -> ClientIp {
        let ip = "10.0.0.5".parse().expect("ip");
        ClientIp {
            ip,
            peer: ip,
            via_proxy,
            forwarded_https,
            arrived: std::time::Instant::now(),
        }
    }

    #[test]
    fn with_tls_here_every_request_gets_hsts_whatever_a_proxy_says() {
        let h = hsts(
            "trusted_proxies = [\"10.0.0.0/8\"]",
            "[tls]\nmode = \"files\"\ncert = \"/c\"\nkey = \"/k\"\n",
        );
        assert!(h.for_request(Some(&client(true, Some(false)))).is_some());
        assert!(h.for_request(Some(&client(false, None))).is_some());
    }

    #[test]
    fn behind_trusted_proxies_hsts_follows_forwarded_proto() {
        let h = hsts(
            "public_url = \"https://mcp.example.com\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
            "",
        );
        assert!(h.for_request(Some(&client(true, Some(true)))).is_some());
        assert!(h.for_request(Some(&client(true, Some(false)))).is_none());
        assert!(
            h.for_request(Some(&client(true, None))).is_some(),
            "a proxy that does not say: public_url"
        );
        assert!(
            h.for_request(Some(&client(false, None))).is_none(),
            "around the proxies: plain HTTP"
        );
    }

    #[test]
    fn without_trusted_proxies_hsts_follows_the_public_url() {
        let https = hsts("public_url = \"https://mcp.example.com\"", "");
        assert!(https.for_request(Some(&client(false, None))).is_some());
        let http = hsts("public_url = \"http://mcp.example.com\"", "");
        assert!(http.for_request(Some(&client(false, None))).is_none());
        let http_behind_proxy = hsts(
            "public_url = \"http://mcp.example.com\"\ntrusted_proxies = [\"10.0.0.0/8\"]",
            "",
        );
        assert!(
            http_behind_proxy
                .for_request(Some(&client(true, Some(true))))
                .is_none(),
            "an http public URL turns HSTS off"
        );
        let off = hsts(
            "public_url = \"https://mcp.example.com\"",
            "[tls]\nhsts_max_age_secs = 0\n",
        );
        assert!(off.for_request(Some(&client(false, None))).is_none());
    }
}
