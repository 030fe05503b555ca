//! `{scope}/authorize`: the sign-in and consent page.
//!
//! GET checks the request and shows a plain HTML page (no JavaScript): which client asks, for
//! which scope and database, where the browser will be sent back; the person signs in with a
//! `[[oauth.users]]` name and password and approves or denies. POST handles the form.
//!
//! Order of checks (RFC 6749 §4.1.2.1): while the client or the redirect URI is in doubt,
//! errors are shown on the page and never redirected (that would be an open redirect); once
//! both are known-good, errors go back to the client with `state` and `iss`.
//!
//! The form is bound to a pending request kept server-side: a random request id, a CSRF
//! token in the form, and a cookie set with the page (SameSite=Strict, HttpOnly) whose hash
//! the request remembers; all are compared in constant time. Failed sign-ins are counted per
//! client IP and per username, logged, and locked out beyond the configured limits.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;

use super::bearer::Endpoint;
use super::client_metadata;
use super::page::{html, layout, see_other};
use super::store::{Client, Grant, TokenKind, now_ms};
use super::{ClientIp, OAUTH_SCOPE, OAuthCtx, ct_eq, html_escape};
use crate::config::ToolProfile;

pub fn routes(ctx: OAuthCtx) -> Router {
    let p = ctx.scope.path.clone();
    Router::new()
        .route(&format!("{p}/authorize"), get(show).post(submit))
        .with_state(ctx)
}

/// Most authorization requests waiting for a sign-in at once. Beyond it the oldest are dropped
/// (their pages say they expired), so filling it locks nobody out.
const MAX_PENDING: usize = 10_000;
/// How many of the oldest requests go at once when the cap is reached (one sort per batch).
const EVICT_BATCH: usize = MAX_PENDING / 100;
/// Most sign-in pages one network (an IPv4 /24, an IPv6 /48) may open per
/// `login_page_ttl_secs`: a few addresses cannot churn through the pending requests, while an
/// office behind one NAT has plenty.
const PAGES_PER_NETWORK: u32 = 200;
/// A username is locked everywhere after this many times `failed_logins_per_user` failed
/// sign-ins from all networks together (one network locks it for itself at the limit).
const USER_LOCK_NETWORKS: u32 = 10;
/// The cookie binding a sign-in form to the browser that loaded it (one per page:
/// [`cookie_name`]).
const COOKIE: &str = "mcp_authz";

/// An authorization request waiting for someone to sign in.
#[derive(Debug, Clone)]
pub struct Pending {
    pub scope: String,
    pub client_id: String,
    pub client_name: String,
    pub metadata_document: bool,
    /// Where the answer goes: the request's `redirect_uri`, or the client's only one.
    pub redirect_uri: String,
    /// Whether the request named `redirect_uri` (the token request must then repeat it).
    pub redirect_uri_named: bool,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    /// The form must echo it.
    pub csrf: String,
    /// SHA-256 of the browser cookie set with the page.
    pub browser: String,
    pub expires_at: i64,
}

/// What went wrong, and where the answer goes.
enum Failure {
    /// Shown on the page: the client or redirect URI cannot be trusted.
    Page(StatusCode, String),
    /// Sent back to the client's redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

async fn show(
    State(ctx): State<OAuthCtx>,
    ClientIp(ip): ClientIp,
    RawQuery(query): RawQuery,
) -> Response {
    match prepare(&ctx, ip, query.as_deref().unwrap_or("")).await {
        Ok(mut pending) => {
            let window = ctx.config().login_page_ttl_secs as i64 * 1000;
            if ctx
                .oauth
                .limits
                .hit(&format!("authorize:{}", network(ip)), window, now_ms())
                > PAGES_PER_NETWORK
            {
                tracing::warn!(%ip, "oauth: too many sign-in pages opened from one network");
                return page_error(
                    &ctx,
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many sign-ins were started from this network. Try again later.",
                );
            }
            if ctx.oauth.pending.len() >= MAX_PENDING {
                make_room(&ctx.oauth.pending, now_ms());
            }
            // A cookie of its own per page: the cookie is SameSite=Strict, so a browser
            // arriving from chatgpt.com or claude.ai sends none, and one shared name would let
            // each new page's cookie replace the last, failing every page opened before it.
            let cookie = super::random_token("");
            pending.browser = super::hash_token(&cookie);
            let request_id = super::random_token("");
            let body = render_form(&ctx, &request_id, &pending, "", None);
            let name = cookie_name(&request_id);
            ctx.oauth.pending.insert(request_id, pending);
            let mut resp = html(StatusCode::OK, body);
            set_cookie(
                &ctx,
                &mut resp,
                &name,
                &cookie,
                ctx.config().login_page_ttl_secs,
            );
            resp
        }
        Err(f) => failure(&ctx, f),
    }
}

/// Whether the redirect URI of a request is the registered one: exactly, or, for a loopback
/// IP literal over http, with any port (RFC 8252 §7.3, OAuth 2.1 "Loopback Interface
/// Redirection": a native client listens on a port it gets at run time, which a client ID
/// metadata document cannot list). The code is then bound to the URI as requested.
fn same_redirect(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(a), Ok(b)) = (url::Url::parse(registered), url::Url::parse(requested)) else {
        return false;
    };
    let loopback_ip = |u: &url::Url| match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    a.scheme() == "http"
        && b.scheme() == "http"
        && loopback_ip(&a)
        && a.host() == b.host()
        && a.path() == b.path()
        && a.query() == b.query()
        && a.fragment().is_none()
        && b.fragment().is_none()
        && a.username().is_empty()
        && b.username().is_empty()
        && a.password().is_none()
        && b.password().is_none()
}

/// The network sign-in pages are counted under: an IPv4 address's /24, an IPv6 address's /48
/// (what one site or subscriber usually holds).
fn network(ip: std::net::IpAddr) -> std::net::IpAddr {
    crate::edge::client_ip::network(ip, 24, 48)
}

/// Drops expired requests and, if that is not enough, the oldest ones, leaving room for a
/// batch of new ones.
fn make_room(pending: &dashmap::DashMap<String, Pending>, now: i64) {
    pending.retain(|_, p| p.expires_at > now);
    let excess = pending.len().saturating_sub(MAX_PENDING - EVICT_BATCH);
    if excess == 0 {
        return;
    }
    // Every page lives as long, so the soonest to expire is the oldest.
    let mut by_age: Vec<(i64, String)> = pending
        .iter()
        .map(|p| (p.expires_at, p.key().clone()))
        .collect();
    by_age.sort_unstable();
    for (_, id) in by_age.into_iter().take(excess) {
        pending.remove(&id);
    }
    tracing::warn!(
        dropped = excess,
        "oauth: too many sign-ins in progress; the oldest sign-in pages were dropped"
    );
}

/// Validates an authorization request into a pending one (without the browser binding).
async fn prepare(ctx: &OAuthCtx, ip: std::net::IpAddr, query: &str) -> Result<Pending, Failure> {
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                format!(
                    "The parameter `{}` appears more than once.",
                    crate::tools::truncate(&k, 40)
                ),
            ));
        }
    }
    let Some(client_id) = params.get("client_id").filter(|c| !c.is_empty()) else {
        return Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            "The request names no client (client_id is missing).".into(),
        ));
    };
    let client = resolve_client(ctx, ip, client_id).await?;
    let redirect_uri = match params.get("redirect_uri") {
        Some(r) if client.redirect_uris.iter().any(|u| same_redirect(u, r)) => r.clone(),
        Some(_) => {
            return Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                "The redirect URI does not match any URI the client registered, so the sign-in cannot continue.".into(),
            ));
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                "The request has no redirect_uri and the client registered several.".into(),
            ));
        }
    };
    // Registered under the rules of its time: a host the operator has since removed from
    // `allowed_redirect_hosts` (one found to have an open redirect) gets no more codes.
    if let Err(e) =
        super::register::check_redirect_uri(&redirect_uri, &ctx.scope.config.redirect_hosts())
    {
        return Err(Failure::Page(
            StatusCode::BAD_REQUEST,
            format!("The client's redirect URI is no longer allowed here: {e}."),
        ));
    }
    let state = params.get("state").cloned();
    let back = |error: &'static str, description: &str| Failure::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description: description.to_string(),
    };
    if params.get("response_type").map(String::as_str) != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "response_type must be `code`",
        ));
    }
    let Some(challenge) = params.get("code_challenge") else {
        return Err(back(
            "invalid_request",
            "code_challenge is required (PKCE with S256)",
        ));
    };
    if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Err(back(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not accepted)",
        ));
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(back(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)",
        ));
    }
    let resource = match params.get("resource") {
        // No resource named: the scope's MCP server as a whole (both transports).
        None => ctx.scope.public_base.clone(),
        Some(r) => match accepted_resource(ctx, r) {
            Some(r) => r,
            None => {
                return Err(back(
                    "invalid_target",
                    "resource is not an MCP endpoint of this scope",
                ));
            }
        },
    };
    Ok(Pending {
        scope: ctx.scope.path.clone(),
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        metadata_document: client.metadata_document,
        redirect_uri_named: params.contains_key("redirect_uri"),
        redirect_uri,
        state,
        code_challenge: challenge.clone(),
        resource,
        csrf: super::random_token(""),
        browser: String::new(),
        expires_at: now_ms() + ctx.config().login_page_ttl_secs as i64 * 1000,
    })
}

/// The resource values a client may ask for at this scope: its `/mcp` or `/sse` endpoint,
/// whose tokens work there only, or the scope's base URL, whose tokens work at both. Returns
/// the canonical value to record.
pub fn accepted_resource(ctx: &OAuthCtx, resource: &str) -> Option<String> {
    let mcp = Endpoint::Mcp.resource(&ctx.scope);
    let sse = Endpoint::Sse.resource(&ctx.scope);
    let r = resource.trim_end_matches('/');
    (r == mcp || r == sse || r == ctx.scope.public_base).then(|| r.to_string())
}

/// The client behind `client_id` at this scope: a registration, or a metadata document. A
/// first fetch of a document adds a client, so it costs `ip`'s address one of its
/// registrations, counted before fetching; fetching again a document already known at this
/// scope (past [`client_metadata::CACHE_MS`]) adds none and costs none. A document that
/// failed within the last minute is answered from memory, without a fetch.
async fn resolve_client(
    ctx: &OAuthCtx,
    ip: std::net::IpAddr,
    client_id: &str,
) -> Result<std::sync::Arc<Client>, Failure> {
    let refused = |m: String| Failure::Page(StatusCode::BAD_REQUEST, m);
    let unknown = refused("This client is not registered here (or was removed). Connect again from the app so it can register.".to_string());
    let now = now_ms();
    let known = ctx.oauth.store.client(&ctx.scope.path, client_id);
    if let Some(c) = &known
        && (!c.metadata_document || c.created_at + client_metadata::CACHE_MS > now)
    {
        return Ok(c.clone());
    }
    if !client_metadata::is_document_url(client_id) || !ctx.config().client_metadata_documents {
        return Err(unknown);
    }
    let unusable = |e: String| {
        refused(format!(
            "The client's metadata document could not be used: {e}"
        ))
    };
    let docs = &ctx.oauth.metadata_docs;
    client_metadata::check_document_url(client_id).map_err(unusable)?;
    if let Some(e) = docs.recent_failure(client_id, &ctx.scope.path, now) {
        return Err(unusable(e));
    }
    // Past here `known` is a document whose cached copy is stale: refreshing it is no
    // registration.
    if known.is_none() && super::register::over_registration_limit(ctx, ip, now) {
        let client_id = super::log_safe(client_id);
        tracing::warn!(%ip, %client_id, "oauth: metadata document not fetched: registration rate limit reached");
        return Err(Failure::Page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many clients were registered from this address. Try again later.".into(),
        ));
    }
    let rules = ctx.scope.config.redirect_hosts();
    let client = docs
        .fetch(client_id, &ctx.scope.path, &rules)
        .await
        .map_err(unusable)?;
    tracing::info!(scope = %ctx.scope.path, %client_id, "oauth: client metadata document fetched");
    let cap = ctx.client_cap();
    super::blocking(&ctx.oauth.store, move |s| s.save_client(client, &cap, now))
        .await
        .map_err(|e| refused(format!("The client could not be saved: {}", e.description)))
}

/// The sign-in form as posted. `Debug` leaves the password out.
#[derive(serde::Deserialize)]
pub struct SignIn {
    request_id: Option<String>,
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
    action: Option<String>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("request_id", &self.request_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

async fn submit(
    State(ctx): State<OAuthCtx>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        // A repeated field, or not a form at all: a page that says so, not the extractor's
        // plain text.
        Err(r) => {
            return page_error(
                &ctx,
                r.status(),
                &format!(
                    "The form could not be read ({}). Start again from your app.",
                    r.body_text()
                ),
            );
        }
    };
    let now = now_ms();
    let request_id = form.request_id.unwrap_or_default();
    let Some(pending) = ctx
        .oauth
        .pending
        .get(&request_id)
        .map(|p| p.clone())
        .filter(|p| p.scope == ctx.scope.path && p.expires_at > now)
    else {
        return page_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "This sign-in page has expired or was already used. Start again from your app.",
        );
    };
    let csrf_ok = ct_eq(form.csrf.as_deref().unwrap_or(""), &pending.csrf);
    let browser_ok = cookie_value(&headers, &request_id)
        .is_some_and(|c| ct_eq(&super::hash_token(&c), &pending.browser));
    if !(csrf_ok && browser_ok) {
        tracing::warn!(%ip, scope = %ctx.scope.path, csrf_ok, browser_ok, "oauth: sign-in form failed the CSRF check");
        return page_error(
            &ctx,
            StatusCode::FORBIDDEN,
            "The form could not be verified (it must be sent from the page this browser loaded). Start again from your app.",
        );
    }
    if form.action.as_deref() == Some("deny") {
        ctx.oauth.pending.remove(&request_id);
        tracing::info!(scope = %ctx.scope.path, client_id = %pending.client_id, "oauth: authorization denied on the consent page");
        let mut r = ctx.record("authorize", "denied", ip);
        r.client_id = Some(pending.client_id.clone());
        ctx.audit(r);
        let resp = redirect(
            &ctx,
            &pending.redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied access"),
            ],
            pending.state.as_deref(),
        );
        return forget_page(&ctx, resp, &request_id);
    }
    let username = form.username.unwrap_or_default();
    let password = form.password.unwrap_or_default();
    let user = match check_sign_in(&ctx, ip, &username, password, &pending.client_id).await {
        Ok(user) => user,
        Err(refused) => {
            return refused.respond(render_form(
                &ctx,
                &request_id,
                &pending,
                &username,
                Some(&refused.message),
            ));
        }
    };
    let cfg = ctx.config();
    // Single use: a second submission of the same page finds nothing.
    if ctx.oauth.pending.remove(&request_id).is_none() {
        return page_error(
            &ctx,
            StatusCode::BAD_REQUEST,
            "This sign-in page was already used. Start again from your app.",
        );
    }
    let code = super::random_token("mcp_code_");
    let code_hash = super::hash_token(&code);
    let grant = Grant {
        grant_id: super::random_token("g_"),
        client_id: pending.client_id.clone(),
        username: user.username.clone(),
        scope: ctx.scope.path.clone(),
        resource: pending.resource.clone(),
        oauth_scope: OAUTH_SCOPE.to_string(),
        // What the token request must repeat: nothing when the request named no URI.
        redirect_uri: if pending.redirect_uri_named {
            pending.redirect_uri.clone()
        } else {
            String::new()
        },
        code_challenge: pending.code_challenge.clone(),
        created_at: now,
        last_used_at: AtomicI64::new(now),
        credential: std::sync::OnceLock::from(super::credential_of(&user.password_hash)),
    };
    let expires = now + cfg.code_ttl_secs as i64 * 1000;
    if let Err(e) = super::blocking(&ctx.oauth.store, move |s| {
        s.create_grant(grant, TokenKind::Code, &code_hash, expires)
    })
    .await
    {
        if e.error == "invalid_client" {
            // Removed while its user was signing in: a code for it could never be redeemed,
            // and its redirect URI is no longer vouched for, so the answer stays on the page.
            tracing::warn!(%ip, username = %user.username, scope = %ctx.scope.path, client_id = %pending.client_id, "oauth: approval for a client that is no longer registered; no code issued");
            let mut r = ctx.record("authorize", "refused", ip);
            r.user = Some(user.username.clone());
            r.client_id = Some(pending.client_id.clone());
            r.error = Some("the client is no longer registered".into());
            ctx.audit(r);
            return page_error(
                &ctx,
                StatusCode::BAD_REQUEST,
                "This app's registration was removed before the sign-in finished, so no access was granted. Go back to the app and connect again.",
            );
        }
        return page_error(
            &ctx,
            e.status,
            &format!("The approval could not be saved: {}", e.description),
        );
    }
    tracing::info!(%ip, username = %user.username, scope = %ctx.scope.path, client_id = %pending.client_id, client_name = %pending.client_name, "oauth: access approved");
    let mut r = ctx
        .record("authorize", "approved", ip)
        .with_query(format!("client_name={}", pending.client_name));
    r.user = Some(user.username.clone());
    r.client_id = Some(pending.client_id.clone());
    ctx.audit(r);
    let resp = redirect(
        &ctx,
        &pending.redirect_uri,
        &[("code", &code)],
        pending.state.as_deref(),
    );
    forget_page(&ctx, resp, &request_id)
}

/// `resp` with the page's cookie removed from the browser: the page is answered, and each
/// page leaving its cookie behind would pile them up (one per page opened).
fn forget_page(ctx: &OAuthCtx, mut resp: Response, request_id: &str) -> Response {
    set_cookie(ctx, &mut resp, &cookie_name(request_id), "", 0);
    resp
}

/// Why a sign-in was refused: the status and the message to show on the form.
pub(super) struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Refused {
    /// The form page `body` (showing the message) with the status; a busy answer (503) says
    /// when to try again.
    pub fn respond(&self, body: String) -> Response {
        let mut resp = html(self.status, body);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        resp
    }
}

/// Checks a username and password typed on a page of this scope against `[[oauth.users]]`,
/// within the failed sign-in limits (per client IP and per username), and that the person may
/// use this scope. Failures are counted, logged, measured and audited (`client_id`: for
/// whom the sign-in was).
pub(super) async fn check_sign_in(
    ctx: &OAuthCtx,
    ip: std::net::IpAddr,
    username: &str,
    password: String,
    client_id: &str,
) -> Result<crate::config::OAuthUser, Refused> {
    let now = now_ms();
    let cfg = ctx.config();
    let window = cfg.failed_login_window_secs as i64 * 1000;
    let ip_key = format!("login-ip:{}", crate::edge::client_ip::limit_key(ip));
    let typed = crate::tools::truncate(username, 64);
    // A configured user's name is logged and audited as typed (unable to forge a log line);
    // any other text is not written down at all: it is often a password typed into the
    // username box.
    let shown = if cfg.users.iter().any(|u| u.username == username) {
        typed.clone()
    } else {
        format!("(no such user, {} characters)", username.chars().count())
    };
    let logged = super::log_safe(&shown);
    // Per name from one network (an IPv4 /24, an IPv6 /48): someone guessing from their
    // network locks the name there only, not for its owner elsewhere; and per name from all
    // networks together, at USER_LOCK_NETWORKS times the limit, against guessing spread over
    // many networks. Every name typed is counted alike, configured or not (a lock that only
    // real names reach would tell which names exist), under a digest of the name (a typed
    // password is not kept). Under a flood that fills a table, a new address counts by its
    // network, a new name by all names from its network, and the all-networks count of a
    // new name waits for room: nobody new is turned away for what others sent.
    let name = super::hash_token(&typed.to_lowercase());
    let name = &name[..32];
    let net = network(ip);
    let net_key = format!("login-net:{net}");
    let user_key = format!("login-user:{name}@{net}");
    let names_key = format!("login-names:{net}");
    let all_key = format!("login-name:{name}");
    let refused = |outcome: &'static str, event: &'static str, error: &str| {
        let mut r = ctx.record(event, outcome, ip);
        r.user = Some(shown.clone());
        r.client_id = Some(client_id.to_string());
        r.error = Some(error.into());
        ctx.audit(r);
    };
    // The attempt counts as a failure before the password is checked (argon2 takes tens of
    // milliseconds), so attempts sent in parallel cannot all pass this check while the first
    // ones are still hashing; a success gives its count back.
    let all_limit = cfg
        .failed_logins_per_user
        .saturating_mul(USER_LOCK_NETWORKS);
    let limits = &ctx.oauth.limits;
    // The keys counted, to give back what turns out not to be a failure.
    let mut counted: Vec<&str> = Vec::with_capacity(3);
    let (n, key) = limits.hit_or(&ip_key, &net_key, window, now);
    counted.push(key);
    let mut over = n > cfg.failed_logins_per_ip;
    if !over {
        let (n, key) = limits.hit_or(&user_key, &names_key, window, now);
        counted.push(key);
        over = n > cfg.failed_logins_per_user;
    }
    if !over && let Some(n) = limits.hit_if_room(&all_key, window, now) {
        counted.push(&all_key);
        over = n > all_limit;
    }
    if over {
        tracing::warn!(%ip, username = %logged, scope = %ctx.scope.path, "oauth: sign-in refused: too many failed attempts");
        ctx.metrics().sign_in_failure(&ctx.scope.path);
        refused("limited", "sign_in", "too many failed sign-ins");
        return Err(Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "Too many failed sign-ins. Wait {} minutes and try again.",
                cfg.failed_login_window_secs.div_ceil(60)
            ),
        });
    }
    let user = cfg.users.iter().find(|u| u.username == username).cloned();
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    // An unknown name is checked against a dummy hash as costly as the costliest user's.
    let like = hash
        .is_none()
        .then(|| super::password::costliest(cfg.users.iter().map(|u| u.password_hash.as_str())))
        .flatten()
        .map(str::to_string);
    let checked = ctx.oauth.password_checks.verify(password, hash, like);
    let Some(verified) = checked.await else {
        // Nothing was checked, so the attempt is not a failure: its counts are given back.
        for key in &counted {
            limits.undo(key, now);
        }
        tracing::warn!(%ip, username = %logged, scope = %ctx.scope.path, "oauth: sign-in turned away: too many password checks running");
        return Err(Refused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "The server is busy checking other sign-ins. Try again in a moment.".into(),
        });
    };
    let Some(user) = user.filter(|_| verified) else {
        let n = limits.count(&user_key, now);
        tracing::warn!(%ip, username = %logged, scope = %ctx.scope.path, client_id, failures = n, "oauth: failed sign-in");
        ctx.metrics().sign_in_failure(&ctx.scope.path);
        refused("failed", "sign_in", "wrong username or password");
        return Err(Refused {
            status: StatusCode::UNAUTHORIZED,
            message: "Wrong username or password.".into(),
        });
    };
    // The right password: the name's failures from this network are forgiven, and the
    // attempt itself was no failure.
    limits.clear(&user_key);
    for key in counted.iter().filter(|k| **k != user_key) {
        limits.undo(key, now);
    }
    if !user.may_grant(&ctx.scope.path) {
        tracing::warn!(%ip, username = %user.username, scope = %ctx.scope.path, "oauth: user may not grant this scope");
        refused("refused", "authorize", "the user may not grant this scope");
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "{} may not grant access to {}. Sign in as someone who may.",
                user.username, ctx.scope.path
            ),
        });
    }
    Ok(user)
}

fn failure(ctx: &OAuthCtx, f: Failure) -> Response {
    match f {
        Failure::Page(status, msg) => page_error(ctx, status, &msg),
        Failure::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            tracing::info!(scope = %ctx.scope.path, error, %description, "oauth: authorization request refused");
            redirect(
                ctx,
                &redirect_uri,
                &[("error", error), ("error_description", &description)],
                state.as_deref(),
            )
        }
    }
}

/// 303 to the client's redirect URI with `params`, `state` and `iss` (RFC 9207).
fn redirect(
    ctx: &OAuthCtx,
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return page_error(
            ctx,
            StatusCode::BAD_REQUEST,
            "The redirect URI is not valid.",
        );
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", ctx.issuer());
    }
    see_other(url.as_str())
}

/// The name of the cookie binding the page of `request_id` to its browser: the request's
/// own, so pages opened side by side (two tabs, two clients) each keep theirs.
fn cookie_name(request_id: &str) -> String {
    format!("{COOKIE}_{}", &super::hash_token(request_id)[..16])
}

fn cookie_value(headers: &HeaderMap, request_id: &str) -> Option<String> {
    super::page::cookie(headers, &cookie_name(request_id))
}

/// A sign-in page's cookie, on the scope's `/authorize` path, for `max_age_secs` (0 removes it).
fn set_cookie(ctx: &OAuthCtx, resp: &mut Response, name: &str, value: &str, max_age_secs: u64) {
    super::page::set_cookie(
        &ctx.app,
        resp,
        name,
        value,
        &format!("{}/authorize", ctx.scope.path),
        max_age_secs,
        "Strict",
    );
}

fn page_error(ctx: &OAuthCtx, status: StatusCode, message: &str) -> Response {
    let body = layout(
        "Sign-in cannot continue",
        &format!(
            "<h1>Sign-in cannot continue</h1><p class=\"error\">{}</p><p class=\"muted\">{} · {}</p>",
            html_escape(message),
            html_escape(&ctx.scope.path),
            html_escape(ctx.issuer())
        ),
    );
    html(status, body)
}

fn render_form(
    ctx: &OAuthCtx,
    request_id: &str,
    p: &Pending,
    username: &str,
    error: Option<&str>,
) -> String {
    let back_to = url::Url::parse(&p.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let tools = match ctx.scope.profile() {
        ToolProfile::Chatgpt => "search, fetch",
        ToolProfile::Full => "search, fetch, list tables, describe, sample, SQL queries",
    };
    let origin = if p.metadata_document {
        "the one in its metadata document"
    } else {
        "the one the client gave itself when it registered"
    };
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let main = format!(
        r#"<h1>Allow {client} to read {database}?</h1>
{error}
<dl>
<dt>Client</dt><dd>{client}</dd>
<dt>Scope</dt><dd>{scope}</dd>
<dt>Database</dt><dd>{database}</dd>
<dt>Tools</dt><dd>{tools} (read-only)</dd>
<dt>Returns to</dt><dd>{back_to}</dd>
</dl>
<p class="note">The client name is {origin}. Approve only if you started this connection.</p>
<form method="post" action="{action}">
<input type="hidden" name="request_id" value="{request_id}">
<input type="hidden" name="csrf" value="{csrf}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{username}" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<div class="buttons">
<button type="submit" class="approve" name="action" value="approve">Sign in and allow</button>
<button type="submit" class="deny" name="action" value="deny" formnovalidate>Deny</button>
</div>
</form>"#,
        client = html_escape(&p.client_name),
        database = html_escape(&ctx.scope.database),
        scope = html_escape(&ctx.scope.path),
        tools = tools,
        back_to = html_escape(&back_to),
        origin = origin,
        action = html_escape(&format!("{}/authorize", ctx.scope.path)),
        request_id = html_escape(request_id),
        csrf = html_escape(&p.csrf),
        username = html_escape(username),
        error = error,
    );
    layout("Sign in", &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_ip_redirect_matches_on_any_port_and_nothing_else_does() {
        let same = same_redirect;
        assert!(same("https://chatgpt.com/cb", "https://chatgpt.com/cb"));
        assert!(same(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:49152/callback"
        ));
        assert!(same(
            "http://127.0.0.1:8080/callback",
            "http://127.0.0.1:49152/callback"
        ));
        assert!(same("http://[::1]/cb?x=1", "http://[::1]:5000/cb?x=1"));
        for (registered, requested) in [
            ("https://chatgpt.com/cb", "https://chatgpt.com:8443/cb"),
            ("http://localhost/cb", "http://localhost:5000/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:5000/cb2"),
            ("http://127.0.0.1/cb", "http://127.0.0.2:5000/cb"),
            ("http://127.0.0.1/cb", "https://127.0.0.1:5000/cb"),
            ("http://127.0.0.1/cb?a", "http://127.0.0.1:5000/cb?b"),
            ("http://127.0.0.1/cb", "http://u@127.0.0.1:5000/cb"),
            ("http://127.0.0.1/cb", "http://127.0.0.1:5000/cb#f"),
        ] {
            assert!(!same(registered, requested), "{registered} vs {requested}");
        }
    }

    #[test]
    fn pages_are_counted_per_ipv4_slash_24_and_ipv6_slash_48() {
        let net = |s: &str| network(s.parse().expect("ip")).to_string();
        assert_eq!(net("203.0.113.7"), "203.0.113.0");
        assert_eq!(net("::ffff:203.0.113.7"), "203.0.113.0");
        assert_eq!(net("2001:db8:1:2:3::9"), "2001:db8:1::");
        assert_ne!(net("2001:db8:1::1"), net("2001:db8:2::1"));
    }

    #[test]
    fn a_full_list_of_pending_sign_ins_drops_its_oldest() {
        let pending = dashmap::DashMap::new();
        let page = |expires_at| Pending {
            scope: "/chatgpt".into(),
            client_id: "c".into(),
            client_name: "c".into(),
            metadata_document: false,
            redirect_uri: "https://chatgpt.com/cb".into(),
            redirect_uri_named: true,
            state: None,
            code_challenge: String::new(),
            resource: String::new(),
            csrf: String::new(),
            browser: String::new(),
            expires_at,
        };
        for i in 0..MAX_PENDING {
            pending.insert(format!("r{i}"), page(1_000 + i as i64));
        }
        make_room(&pending, 0);
        assert_eq!(pending.len(), MAX_PENDING - EVICT_BATCH);
        assert!(
            !pending.contains_key("r0") && !pending.contains_key(&format!("r{}", EVICT_BATCH - 1))
        );
        assert!(pending.contains_key(&format!("r{EVICT_BATCH}")));
        // Expired ones go first, and then nothing else has to.
        make_room(&pending, 1_000 + 2 * EVICT_BATCH as i64 - 1);
        assert_eq!(pending.len(), MAX_PENDING - 2 * EVICT_BATCH);
    }
}
