//! `{scope}/token`: the `authorization_code` grant (PKCE S256, single-use codes that expire
//! within a minute; a reused code revokes everything issued with it) and the
//! `refresh_token` grant (rotation: each refresh token works once, and a reused one revokes
//! the grant, since one of the two users of it is a thief). Client authentication:
//! `none` for public clients, `client_secret_basic` or `client_secret_post` for confidential
//! ones. Errors are RFC 6749 JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::{OAuthError, no_store};
use super::store::{Client, RedeemError, TokenKind, now_ms};
use super::{OAuthCtx, ct_eq};

pub fn routes(ctx: OAuthCtx) -> Router {
    let p = ctx.scope.path.clone();
    Router::new()
        .route(&format!("{p}/token"), post(token))
        .with_state(ctx)
        .layer(super::cors())
}

async fn token(
    State(ctx): State<OAuthCtx>,
    super::ClientIp(ip): super::ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_inner(&ctx, ip, &headers, &body).await {
        Ok(r) => r,
        Err(e) => {
            // Only the grant type and the client id are read back for the record: never the
            // code, refresh token, verifier or secret.
            let mut grant_type = String::new();
            let mut client_id = None;
            for (k, v) in url::form_urlencoded::parse(&body) {
                match k.as_ref() {
                    "grant_type" => grant_type = crate::tools::truncate(&v, 40),
                    "client_id" => client_id = Some(crate::tools::truncate(&v, 200)),
                    _ => {}
                }
            }
            ctx.metrics()
                .token_exchange(&ctx.scope.path, &grant_type, e.error);
            let mut r = ctx
                .record("token", "refused", ip)
                .with_query(format!("grant_type={grant_type}"));
            r.client_id = client_id;
            r.error = Some(format!("{}: {}", e.error, e.description));
            ctx.audit(r);
            e.into_response()
        }
    }
}

/// Parses an `application/x-www-form-urlencoded` body; a repeated parameter is an error.
pub fn parse_form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter `{}` appears more than once",
                crate::tools::truncate(&k, 40)
            )));
        }
    }
    Ok(params)
}

/// Authenticates the client of a token or revocation request (RFC 6749 §2.3).
pub fn authenticate_client(
    ctx: &OAuthCtx,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Arc<Client>, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            let v = v.to_str().unwrap_or("");
            match v.split_once(' ') {
                Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => {
                    Some(parse_basic(creds.trim()).ok_or_else(|| {
                        OAuthError::invalid_client("malformed HTTP Basic credentials")
                    })?)
                }
                _ => None,
            }
        }
        None => None,
    };
    let (client_id, secret) = match basic {
        Some((id, secret)) => {
            if params.get("client_id").is_some_and(|c| *c != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the HTTP Basic credentials",
                ));
            }
            if params.contains_key("client_secret") {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not two",
                ));
            }
            (id, Some(secret))
        }
        None => match params.get("client_id") {
            Some(id) => (id.clone(), params.get("client_secret").cloned()),
            None => {
                return Err(OAuthError::invalid_client(
                    "client authentication is required (client_id)",
                ));
            }
        },
    };
    let Some(client) = ctx.oauth.store.client(&ctx.scope.path, &client_id) else {
        return Err(OAuthError::invalid_client("unknown client; register again"));
    };
    match (&client.secret_hash, secret) {
        (None, None) => Ok(client),
        (None, Some(_)) => Err(OAuthError::invalid_client(
            "this client is public and has no secret",
        )),
        (Some(_), None) => Err(OAuthError::invalid_client(
            "this client must authenticate with its secret",
        )),
        (Some(hash), Some(secret)) => {
            if ct_eq(&super::hash_token(&secret), hash) {
                Ok(client)
            } else {
                tracing::warn!(client_id = %client.client_id, "oauth: wrong client secret");
                Err(OAuthError::invalid_client("client authentication failed"))
            }
        }
    }
}

/// `base64(urlencode(id) ":" urlencode(secret))`
fn parse_basic(creds: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(creds)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.to_string())
    };
    Some((dec(id)?, dec(secret)?))
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

async fn token_inner(
    ctx: &OAuthCtx,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let params = parse_form(headers, body)?;
    let client = authenticate_client(ctx, headers, &params)?;
    let grant_type = params.get("grant_type").map(String::as_str).unwrap_or("");
    let ((hash, audience), kind) = match grant_type {
        "authorization_code" => (check_code(ctx, &client, &params)?, TokenKind::Code),
        "refresh_token" => (check_refresh(ctx, &client, &params)?, TokenKind::Refresh),
        "" => return Err(OAuthError::invalid_request("grant_type is required")),
        other => {
            return Err(OAuthError::unsupported_grant_type(format!(
                "grant_type `{}` is not supported (authorization_code, refresh_token)",
                crate::tools::truncate(other, 40)
            )));
        }
    };
    let cfg = ctx.config();
    let access_ttl = cfg.access_token_ttl_secs as i64 * 1000;
    let refresh_ttl = cfg.refresh_token_ttl_secs as i64 * 1000;
    let now = now_ms();
    let h = hash.clone();
    let outcome = super::blocking(&ctx.oauth.store, move |s| {
        s.redeem(&h, kind, now, access_ttl, refresh_ttl, audience.as_deref())
    })
    .await?;
    match outcome {
        Ok((issued, grant)) => {
            tracing::info!(scope = %ctx.scope.path, client_id = %client.client_id, username = %grant.username, grant = grant_type, "oauth: tokens issued");
            ctx.metrics()
                .token_exchange(&ctx.scope.path, grant_type, "ok");
            let mut r = ctx
                .record("token", "ok", ip)
                .with_query(format!("grant_type={grant_type}"));
            r.user = Some(grant.username.clone());
            r.client_id = Some(client.client_id.clone());
            ctx.audit(r);
            let body = serde_json::json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.access_expires_in,
                "refresh_token": issued.refresh_token,
                "scope": grant.oauth_scope,
            });
            let mut resp = axum::Json(body).into_response();
            no_store(&mut resp);
            Ok(resp)
        }
        Err(RedeemError::Reused) => {
            tracing::warn!(scope = %ctx.scope.path, client_id = %client.client_id, grant = grant_type, "oauth: a used code or refresh token was presented again; its grant is revoked");
            Err(OAuthError::invalid_grant(match kind {
                TokenKind::Code => {
                    "the authorization code was already used; the tokens issued with it are revoked"
                }
                _ => "the refresh token was already used; the grant is revoked",
            }))
        }
        Err(RedeemError::Expired) => Err(OAuthError::invalid_grant(match kind {
            TokenKind::Code => "the authorization code has expired",
            _ => "the refresh token has expired",
        })),
        Err(RedeemError::Unknown) => Err(OAuthError::invalid_grant(
            "the code or refresh token is unknown or revoked",
        )),
    }
}

/// A code or refresh token's hash to redeem, and the audience to bind the new access token to
/// when the request named one narrower than the grant's ([`check_resource`]).
type Redeemable = (String, Option<String>);

/// Checks an authorization code request.
fn check_code(
    ctx: &OAuthCtx,
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<Redeemable, OAuthError> {
    let Some(code) = params.get("code") else {
        return Err(OAuthError::invalid_request("code is required"));
    };
    let Some(verifier) = params.get("code_verifier") else {
        return Err(OAuthError::invalid_request(
            "code_verifier is required (PKCE)",
        ));
    };
    let hash = super::hash_token(code);
    let Some((rec, grant)) = ctx.oauth.store.lookup(&hash, TokenKind::Code) else {
        return Err(OAuthError::invalid_grant(
            "the authorization code is unknown or revoked",
        ));
    };
    if grant.client_id != client.client_id || grant.scope != ctx.scope.path {
        return Err(OAuthError::invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if rec.used {
        // Redeeming a used code revokes its grant; let `redeem` do it and report it.
        return Ok((hash, None));
    }
    check_redirect_uri(client, &grant.redirect_uri, params.get("redirect_uri"))?;
    if !valid_verifier(verifier) || !ct_eq(&s256(verifier), &grant.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "the code_verifier does not match the code_challenge",
        ));
    }
    let audience = check_resource(ctx, params, &grant.resource)?;
    check_user(ctx, &grant)?;
    Ok((hash, audience))
}

/// Checks a refresh request.
fn check_refresh(
    ctx: &OAuthCtx,
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<Redeemable, OAuthError> {
    let Some(token) = params.get("refresh_token") else {
        return Err(OAuthError::invalid_request("refresh_token is required"));
    };
    let hash = super::hash_token(token);
    let Some((rec, grant)) = ctx.oauth.store.lookup(&hash, TokenKind::Refresh) else {
        return Err(OAuthError::invalid_grant(
            "the refresh token is unknown, expired or revoked",
        ));
    };
    if grant.client_id != client.client_id || grant.scope != ctx.scope.path {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if rec.used {
        return Ok((hash, None));
    }
    let audience = check_resource(ctx, params, &grant.resource)?;
    check_user(ctx, &grant)?;
    Ok((hash, audience))
}

/// The token request's `redirect_uri` against the grant's (RFC 6749 §4.1.3, kept by OAuth
/// 2.1): required, and identical, when the authorization request named one (`granted` is not
/// empty); otherwise optional, and then one of the client's registered URIs (the one the
/// authorization used, as a client that named none has exactly one).
fn check_redirect_uri(
    client: &Client,
    granted: &str,
    given: Option<&String>,
) -> Result<(), OAuthError> {
    match given {
        None if granted.is_empty() => Ok(()),
        None => Err(OAuthError::invalid_request(
            "redirect_uri is required: the authorization request named one",
        )),
        Some(r) if granted.is_empty() && client.redirect_uris.iter().any(|u| u == r) => Ok(()),
        Some(r) if *r == granted => Ok(()),
        Some(_) => Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request",
        )),
    }
}

/// The grant's resource must still be an MCP endpoint of this scope (the audience its tokens
/// are checked against, [`super::bearer::is_mcp_resource`]: not if `public_url` changed since),
/// and a `resource` in the token request must lie within it (RFC 8707 §2.2), in any spelling
/// `/authorize` accepts ([`super::authorize::accepted_resource`]): the granted resource itself,
/// or, for a grant of the scope's base URL (what a client that named no resource at
/// `/authorize` gets), one of the scope's endpoints, `/mcp` or `/sse`. Returns the audience to
/// bind the new access token to when it is narrower than the grant's.
fn check_resource(
    ctx: &OAuthCtx,
    params: &HashMap<String, String>,
    granted: &str,
) -> Result<Option<String>, OAuthError> {
    if !super::bearer::is_mcp_resource(granted, &ctx.scope) {
        return Err(OAuthError::invalid_grant(
            "the grant is for another resource (the server's public URL changed since); authorize again",
        ));
    }
    let Some(asked) = params.get("resource") else {
        return Ok(None);
    };
    let whole_scope = super::bearer::audience_path(granted, &ctx.scope) == Some("");
    match super::authorize::accepted_resource(ctx, asked) {
        Some(r) if r == granted => Ok(None),
        Some(r) if whole_scope => Ok(Some(r)),
        _ => Err(OAuthError::invalid_target(
            "resource is not within the one authorized",
        )),
    }
}

/// The approving person must still be configured, with the password they approved under,
/// and allowed the scope.
fn check_user(ctx: &OAuthCtx, grant: &super::store::Grant) -> Result<(), OAuthError> {
    if super::bearer::user_may_use(&ctx.app, grant, &ctx.scope) {
        Ok(())
    } else {
        Err(OAuthError::invalid_grant(
            "the person who approved this grant may no longer use this scope, or has a new password",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_the_rfc_7636_example() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_must_be_43_to_128_unreserved_characters() {
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let creds = base64::engine::general_purpose::STANDARD.encode("my%20id:s%3Acret");
        assert_eq!(
            parse_basic(&creds),
            Some(("my id".to_string(), "s:cret".to_string()))
        );
        assert_eq!(parse_basic("!!"), None);
    }
}
