//! RFC 7591 dynamic client registration at `{scope}/register`, and the redirect URI rules
//! every client (registered or described by a metadata document) must meet.
//!
//! A redirect URI must be `https` (or `http` on a loopback host, for local tools), carry no
//! fragment and no userinfo, and its host (and path prefix, if the rule has one) must be one
//! of the scope's `allowed_redirect_hosts`, compared exactly — `chatgpt.com.evil.com` and
//! `https://chatgpt.com@evil.com/` are refused. At `/authorize` the URI must then equal a
//! registered one exactly.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::AtomicI64;

use super::error::OAuthError;
use super::store::{Client, now_ms};
use super::{ClientIp, OAUTH_SCOPE, OAuthCtx};

pub fn routes(ctx: OAuthCtx) -> Router {
    let p = ctx.scope.path.clone();
    Router::new()
        .route(&format!("{p}/register"), post(register))
        .with_state(ctx)
        .layer(super::cors())
}

/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
/// Longest accepted redirect URI.
const MAX_URI_LEN: usize = 2000;

/// The registration request fields this server reads; other RFC 7591 metadata (logo, URIs,
/// contacts, software id) is accepted and ignored.
#[derive(Debug, Deserialize)]
struct RegistrationRequest {
    redirect_uris: Option<Vec<String>>,
    client_name: Option<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
}

async fn register(State(ctx): State<OAuthCtx>, ClientIp(ip): ClientIp, body: Bytes) -> Response {
    match register_inner(&ctx, ip, &body).await {
        Ok(r) => r,
        Err(e) => {
            let outcome = if e.status == axum::http::StatusCode::TOO_MANY_REQUESTS {
                "limited"
            } else {
                "refused"
            };
            ctx.metrics().registration(&ctx.scope.path, outcome);
            let mut r = ctx.record("register", outcome, ip);
            r.error = Some(format!("{}: {}", e.error, e.description));
            ctx.audit(r);
            e.into_response()
        }
    }
}

async fn register_inner(
    ctx: &OAuthCtx,
    ip: std::net::IpAddr,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let now = now_ms();
    if over_registration_limit(ctx, ip, now) {
        tracing::warn!(%ip, "oauth: registration rate limit reached");
        return Err(OAuthError::too_many_requests(
            "too many registrations from this address; try again later",
        ));
    }
    let req: RegistrationRequest = serde_json::from_slice(body).map_err(|e| {
        OAuthError::invalid_client_metadata(format!(
            "the body must be a JSON object of client metadata: {e}"
        ))
    })?;
    let uris = req.redirect_uris.unwrap_or_default();
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::invalid_redirect_uri(format!(
            "redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"
        )));
    }
    let rules = ctx.scope.config.redirect_hosts();
    for uri in &uris {
        check_redirect_uri(uri, &rules).map_err(OAuthError::invalid_redirect_uri)?;
    }
    let method = req
        .token_endpoint_auth_method
        .unwrap_or_else(|| "client_secret_basic".to_string());
    if !matches!(
        method.as_str(),
        "none" | "client_secret_post" | "client_secret_basic"
    ) {
        return Err(OAuthError::invalid_client_metadata(format!(
            "token_endpoint_auth_method `{}` is not supported (none, client_secret_post, client_secret_basic)",
            crate::tools::truncate(&method, 40)
        )));
    }
    let grant_types = req
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if let Some(g) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(OAuthError::invalid_client_metadata(format!(
            "grant type `{}` is not supported (authorization_code, refresh_token)",
            crate::tools::truncate(g, 40)
        )));
    }
    if let Some(r) = req
        .response_types
        .as_ref()
        .and_then(|rs| rs.iter().find(|r| r.as_str() != "code"))
    {
        return Err(OAuthError::invalid_client_metadata(format!(
            "response type `{}` is not supported (code)",
            crate::tools::truncate(r, 40)
        )));
    }
    let name = clean_name(req.client_name.as_deref());
    let client_id = super::random_token("mcp_client_");
    let secret = (method != "none").then(|| super::random_token("mcp_secret_"));
    let client = Client {
        client_id: client_id.clone(),
        scope: ctx.scope.path.clone(),
        name: name.clone(),
        redirect_uris: uris.clone(),
        secret_hash: secret.as_deref().map(super::hash_token),
        auth_method: method.clone(),
        metadata_document: false,
        created_at: now,
        last_used_at: AtomicI64::new(now),
    };
    let cap = ctx.client_cap();
    super::blocking(&ctx.oauth.store, move |s| s.save_client(client, &cap, now)).await?;
    tracing::info!(scope = %ctx.scope.path, %client_id, client_name = %name, %ip, auth = %method, "oauth: client registered");
    ctx.metrics().registration(&ctx.scope.path, "ok");
    let mut r = ctx
        .record("register", "ok", ip)
        .with_query(format!("client_name={name}"));
    r.client_id = Some(client_id.clone());
    ctx.audit(r);
    let mut body = json!({
        "client_id": client_id,
        "client_id_issued_at": now / 1000,
        "client_name": name,
        "redirect_uris": uris,
        "grant_types": grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": method,
        "scope": OAUTH_SCOPE,
    });
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
        body["client_secret_expires_at"] = json!(0);
    }
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    super::error::no_store(&mut resp);
    Ok(resp)
}

/// How many times `registrations_per_hour_per_ip` one network (an IPv4 /24, an IPv6 /48)
/// may register in all: an office behind a few addresses is not held back, and someone with
/// a whole block of addresses cannot register without end (each registration can displace a
/// client that is still waiting for its user to sign in, at the client cap).
const REGISTRATION_NETWORK_FACTOR: u32 = 10;

/// Counts one registration from `ip`'s address and its network (a dynamic registration, or
/// a client ID metadata document about to be fetched for the first time at a scope: both add
/// a client) and says whether it is beyond `registrations_per_hour_per_ip` for the address
/// (an IPv6 /64), or [`REGISTRATION_NETWORK_FACTOR`] times that for the network.
pub(super) fn over_registration_limit(ctx: &OAuthCtx, ip: std::net::IpAddr, now: i64) -> bool {
    registration_over(
        &ctx.oauth.limits,
        ip,
        ctx.config().registrations_per_hour_per_ip,
        now,
    )
}

fn registration_over(limits: &super::Limits, ip: std::net::IpAddr, limit: u32, now: i64) -> bool {
    use crate::edge::client_ip::{limit_key, network};
    let address = format!("register:{}", limit_key(ip));
    let block = format!("register-net:{}", network(ip, 24, 48));
    let block_limit = limit.saturating_mul(REGISTRATION_NETWORK_FACTOR);
    // A network past its limit is refused before anything is counted, so a block of
    // addresses cannot fill the table with keys of addresses it will never be let through.
    if limits.count(&block, now) >= block_limit {
        return true;
    }
    // An address past its own limit is refused without counting against its network, so one
    // address hammering the endpoint cannot use up the network's registrations for everyone.
    // With no room for a new address, it counts by its network alone.
    let (n, counted) = limits.hit_or(&address, &block, 3_600_000, now);
    if counted == block {
        return n > block_limit;
    }
    if n > limit {
        return true;
    }
    limits.hit(&block, 3_600_000, now) > block_limit
}

/// A display name without control characters, at most 100 characters.
pub fn clean_name(name: Option<&str>) -> String {
    let n: String = name
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let n = n.trim();
    if n.is_empty() {
        "Unnamed client".to_string()
    } else {
        n.to_string()
    }
}

/// Whether `uri` may be registered under the host rules (`host` or `host/path-prefix`).
pub fn check_redirect_uri(uri: &str, rules: &[String]) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err("redirect URI is too long".into());
    }
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err("redirect URI contains whitespace, control characters or backslashes".into());
    }
    let url = url::Url::parse(uri)
        .map_err(|e| format!("redirect URI `{}` is not a URL: {e}", short(uri)))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(format!(
            "redirect URI `{}` must not have a fragment",
            short(uri)
        ));
    }
    if !url.username().is_empty() || url.password().is_some() || authority(uri).contains('@') {
        return Err(format!(
            "redirect URI `{}` must not contain user information",
            short(uri)
        ));
    }
    let Some(host) = url.host_str().map(|h| h.to_ascii_lowercase()) else {
        return Err(format!("redirect URI `{}` has no host", short(uri)));
    };
    let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "redirect URI `{}` must use https (plain http only on localhost/127.0.0.1/[::1])",
                short(uri)
            ));
        }
    }
    let path = url.path();
    let allowed = rules.iter().any(|rule| {
        let (rule_host, rule_path) = match rule.find('/') {
            Some(i) => rule.split_at(i),
            None => (rule.as_str(), ""),
        };
        rule_host == host
            && (rule_path.is_empty()
                || path == rule_path
                || path.starts_with(&format!("{}/", rule_path.trim_end_matches('/'))))
    });
    if !allowed {
        return Err(format!(
            "redirect URI host `{host}` is not allowed for this scope (allowed: {}); the operator can add it to allowed_redirect_hosts",
            rules.join(", ")
        ));
    }
    Ok(())
}

/// The raw authority part of a URI string (between `://` and the next `/`, `?` or `#`).
fn authority(uri: &str) -> &str {
    let rest = uri.split_once("://").map(|(_, r)| r).unwrap_or("");
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

fn short(s: &str) -> String {
    crate::tools::truncate(s, 200).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registrations from many addresses of one network: once the network is past its limit,
    /// new addresses are refused without being tracked, so a block of addresses cannot fill
    /// the table; and addresses of other networks still register.
    #[test]
    fn a_network_past_its_limit_adds_no_more_keys() {
        let limits = super::super::Limits::with_capacity(1000);
        let ip =
            |i: u16| std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, i, 0, 0, 0, 1));
        let limit = 2;
        let cap = (limit * REGISTRATION_NETWORK_FACTOR) as u16;
        for i in 0..cap {
            assert!(!registration_over(&limits, ip(i), limit, 0), "address {i}");
        }
        let tracked = limits.len();
        for i in cap..cap + 500 {
            assert!(registration_over(&limits, ip(i), limit, 0), "address {i}");
        }
        assert_eq!(limits.len(), tracked, "refused addresses are not tracked");
        let elsewhere =
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 1));
        assert!(!registration_over(&limits, elsewhere, limit, 0));
        // An address past its own limit does not count against its network.
        let limits = super::super::Limits::with_capacity(1000);
        for _ in 0..limit {
            assert!(!registration_over(&limits, ip(0), limit, 0));
        }
        for _ in 0..50 {
            assert!(registration_over(&limits, ip(0), limit, 0));
        }
        assert!(!registration_over(&limits, ip(1), limit, 0));
    }
    use crate::config::DEFAULT_REDIRECT_HOSTS;

    fn rules() -> Vec<String> {
        DEFAULT_REDIRECT_HOSTS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn chatgpt_claude_and_loopback_callbacks_are_accepted() {
        for ok in [
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "https://chatgpt.com/connector/oauth/abc123",
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.com/api/mcp/auth_callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost:8080/cb?x=1",
            "http://[::1]:9/cb",
            "https://CHATGPT.com/connector/oauth/x",
        ] {
            assert_eq!(check_redirect_uri(ok, &rules()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn look_alike_hosts_userinfo_fragments_and_schemes_are_refused() {
        for bad in [
            "https://chatgpt.com.evil.com/cb",
            "https://evil.com/chatgpt.com",
            "https://notchatgpt.com/cb",
            "https://www.chatgpt.com/cb",
            "https://chatgpt.com@evil.com/",
            "https://user:pw@chatgpt.com/cb",
            "https://chatgpt.com/cb#frag",
            "https://chatgpt.com./cb",
            "http://chatgpt.com/cb",
            "javascript://chatgpt.com/%0aalert(1)",
            "chatgpt.com/cb",
            "https://chatgpt.com\\@evil.com/",
            "https://chatgpt.com/ cb",
            "http://127.0.0.1.evil.com/cb",
            "http://10.0.0.1/cb",
            "",
        ] {
            assert!(check_redirect_uri(bad, &rules()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_path_prefix_rule_limits_the_path() {
        let rules = vec!["chatgpt.com/connector".to_string()];
        assert!(check_redirect_uri("https://chatgpt.com/connector/oauth/1", &rules).is_ok());
        assert!(check_redirect_uri("https://chatgpt.com/connector", &rules).is_ok());
        assert!(check_redirect_uri("https://chatgpt.com/connectorevil", &rules).is_err());
        assert!(check_redirect_uri("https://chatgpt.com/other", &rules).is_err());
        assert!(check_redirect_uri("https://chatgpt.com/connector/../other", &rules).is_err());
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name(Some("  ChatGPT\u{0007} ")), "ChatGPT");
        assert_eq!(clean_name(None), "Unnamed client");
    }
}
