//! Record pages in a browser: `{scope}/sign-in` and the cookie behind `{scope}/records/…`.
//!
//! Every search result carries a `url`, `{public_url}{scope}/records/{id}`, which ChatGPT shows
//! as a citation. The person who clicks it has a browser, not an OAuth client. With
//! authentication on, a browser asking for HTML without a viewer cookie is sent (303) to
//! `{scope}/sign-in?next=…`, signs in with an `[[oauth.users]]` name and password (the same
//! check and failed sign-in limits as the consent page), and is sent back with a cookie:
//!
//! - Its value is an access token of a grant to the pseudo-client [`VIEWER_CLIENT`], kept in
//!   the same store as every other token. So it survives restarts, expires after
//!   `oauth.access_token_ttl_secs`, is listed by `mssql-mcp tokens list`, ends with
//!   `tokens revoke --user`, and stops working when its user loses the scope in the config.
//! - It is `HttpOnly`, `SameSite=Lax` (a citation is a link from another site),
//!   `Path={scope}/records`, and `Secure` behind HTTPS.
//! - Its audience (the grant's resource) is `{public_url}{scope}/records`, which no OAuth client
//!   is ever granted: [`super::bearer::authenticate_at`] refuses it at the MCP endpoints, and
//!   [`viewer`] accepts no OAuth client's token from a cookie.
//!
//! Every record page has a sign-out button (POST `{scope}/records`), which revokes the grant.
//!
//! The sign-in form is protected against login CSRF by a double submit: a random value in
//! the form must equal a `SameSite=Strict` cookie set with the page. `next` must be a record
//! path of this scope, so the page cannot be used as an open redirect.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};

use super::authorize::check_sign_in;
use super::page::{cookie, html, layout, see_other, set_cookie};
use super::store::{Grant, Store, TokenKind, now_ms};
use super::{ClientIp, OAUTH_SCOPE, OAuthCtx, ct_eq, html_escape};
use crate::mcp::dispatch::Caller;
use crate::state::{AppState, Scope};

/// The client id of every record viewer grant. It contains a `:`, which no registered
/// client id can (those are random base64url), so no client can be it.
pub const VIEWER_CLIENT: &str = "mssql-mcp:record-viewer";
/// The viewer session cookie (an access token of a [`VIEWER_CLIENT`] grant).
const SESSION_COOKIE: &str = "mcp_view";
/// The sign-in form's double-submit cookie.
const FORM_COOKIE: &str = "mcp_signin";

pub fn routes(ctx: OAuthCtx) -> Router {
    let p = ctx.scope.path.clone();
    Router::new()
        .route(&format!("{p}/sign-in"), get(show).post(submit))
        // The cookie's own path, so the browser sends it.
        .route(&format!("{p}/records"), post(sign_out))
        .with_state(ctx)
}

/// The signed-in viewer behind a browser's cookie at `scope`, if it has a live one.
pub fn viewer(
    app: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    ip: std::net::IpAddr,
) -> Option<Caller> {
    let grant = viewer_grant(&app.oauth()?.store, scope, headers)?;
    super::bearer::user_may_use(app, &grant, scope).then(|| Caller {
        user: Some(grant.username.clone()),
        client_id: Some(VIEWER_CLIENT.to_string()),
        ip: Some(ip),
    })
}

/// The live viewer sign-in behind the browser's cookie at `scope`: an unexpired, unrevoked
/// grant whose audience is the scope's record pages (no OAuth client is ever granted that
/// resource, so no client's token passes for one).
fn viewer_grant(store: &Store, scope: &Scope, headers: &HeaderMap) -> Option<Arc<Grant>> {
    let token = cookie(headers, SESSION_COOKIE)?;
    store
        .check_access(&super::hash_token(&token), now_ms())
        .filter(|a| {
            a.grant.scope == scope.path
                && super::bearer::audience_path(&a.resource, scope) == Some("/records")
        })
        .map(|a| a.grant)
}

/// 303 to this scope's sign-in page, to come back to `next` (a path of the record asked for).
pub fn to_sign_in(scope: &Scope, next: &str) -> Response {
    let location = format!(
        "{}/sign-in?{}",
        scope.path,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish()
    );
    see_other(&location)
}

/// `next` if it is the path of a record page of this scope (an absolute path, never another
/// origin: no `//`, no backslash, no dot segment, visible ASCII only, as a `Location` header
/// must be). It is a path and nothing more, as [`to_sign_in`] writes it: a `?` or `#` would
/// end the path where a segment check on the whole text does not see it end, so that
/// `/records/..?x` would pass as a segment `..?x` and leave the record pages.
fn checked_next<'a>(ctx: &OAuthCtx, next: &'a str) -> Option<&'a str> {
    is_record_path(&format!("{}/records/", ctx.scope.path), next).then_some(next)
}

/// Whether `next` is a bare path under `prefix` that stays there when a browser follows it.
fn is_record_path(prefix: &str, next: &str) -> bool {
    // A browser ends the path at the first `?` or `#` (both refused as well: `next` is a bare
    // path); the dot segment check looks at the segments up to there.
    let path = next.split(['?', '#']).next().unwrap_or_default();
    next.len() <= 2048
        && next.starts_with(prefix)
        && next.len() > prefix.len()
        && !next.contains(['?', '#'])
        && !next.contains("//")
        && !next.contains('\\')
        && !path.split('/').any(is_dot_segment)
        && next.bytes().all(|b| b > b' ' && b < 0x7f)
}

/// Whether a path segment is `.` or `..` as a browser resolves it: the URL standard counts
/// `%2e` (any case) as a dot, so `/records/%2e%2e/%2E./mcp` leaves the record pages. Other
/// escapes stay: record ids write `.` and `/` inside a key as `%2E` and `%2F`, and a browser
/// neither splits a segment at `%2F` nor resolves `%5C`. The segment must already end where
/// the path does (before any `?` or `#`).
fn is_dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

#[derive(Debug, serde::Deserialize)]
struct ShowQuery {
    next: Option<String>,
}

async fn show(
    State(ctx): State<OAuthCtx>,
    q: Result<Query<ShowQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // A repeated `next` cannot be read as one: the page that says where `next` must lead.
    let Ok(Query(q)) = q else {
        return bad_next(&ctx);
    };
    let Some(next) = q.next.as_deref().and_then(|n| checked_next(&ctx, n)) else {
        return bad_next(&ctx);
    };
    let (csrf, new_cookie) = match cookie(&headers, FORM_COOKIE) {
        Some(c) => (c, false),
        None => (super::random_token(""), true),
    };
    let mut resp = html(StatusCode::OK, render_form(&ctx, next, &csrf, "", None));
    if new_cookie {
        set_form_cookie(&ctx, &mut resp, &csrf, ctx.config().login_page_ttl_secs);
    }
    resp
}

/// The viewer sign-in form as posted. `Debug` leaves the password out.
#[derive(serde::Deserialize)]
struct ViewerSignIn {
    csrf: Option<String>,
    next: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for ViewerSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerSignIn")
            .field("next", &self.next)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

async fn submit(
    State(ctx): State<OAuthCtx>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<ViewerSignIn>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(r) => {
            return message(
                &ctx,
                r.status(),
                &format!(
                    "The form could not be read ({}). Open the record link again.",
                    r.body_text()
                ),
            );
        }
    };
    let Some(next) = form.next.as_deref().and_then(|n| checked_next(&ctx, n)) else {
        return bad_next(&ctx);
    };
    let csrf_ok = cookie(&headers, FORM_COOKIE)
        .is_some_and(|c| ct_eq(&c, form.csrf.as_deref().unwrap_or("")));
    if !csrf_ok {
        // Most often the page outlived its cookie. Nothing was checked: show a fresh form
        // (with a new cookie) rather than a dead end.
        tracing::warn!(%ip, scope = %ctx.scope.path, "oauth: record viewer sign-in form failed the CSRF check");
        let csrf = super::random_token("");
        let mut resp = html(
            StatusCode::FORBIDDEN,
            render_form(
                &ctx,
                next,
                &csrf,
                form.username.as_deref().unwrap_or(""),
                Some("This form expired or did not come from this browser's page. Sign in again."),
            ),
        );
        set_form_cookie(&ctx, &mut resp, &csrf, ctx.config().login_page_ttl_secs);
        return resp;
    }
    let csrf = form.csrf.unwrap_or_default();
    let username = form.username.unwrap_or_default();
    let password = form.password.unwrap_or_default();
    let user = match check_sign_in(&ctx, ip, &username, password, VIEWER_CLIENT).await {
        Ok(user) => user,
        Err(refused) => {
            return refused.respond(render_form(
                &ctx,
                next,
                &csrf,
                &username,
                Some(&refused.message),
            ));
        }
    };
    let now = now_ms();
    let ttl_secs = ctx.config().access_token_ttl_secs;
    let token = super::random_token("");
    let hash = super::hash_token(&token);
    let grant = Grant {
        grant_id: super::random_token("g_"),
        client_id: VIEWER_CLIENT.to_string(),
        username: user.username.clone(),
        scope: ctx.scope.path.clone(),
        // The audience: this scope's record pages ([`viewer_grant`]).
        resource: format!("{}/records", ctx.scope.public_base),
        oauth_scope: OAUTH_SCOPE.to_string(),
        redirect_uri: String::new(),
        code_challenge: String::new(),
        created_at: now,
        last_used_at: AtomicI64::new(now),
        credential: std::sync::OnceLock::from(super::credential_of(&user.password_hash)),
    };
    let expires = now + ttl_secs as i64 * 1000;
    if let Err(e) = super::blocking(&ctx.oauth.store, move |s| {
        s.create_grant(grant, TokenKind::Access, &hash, expires)
    })
    .await
    {
        return message(
            &ctx,
            e.status,
            &format!("The sign-in could not be saved: {}", e.description),
        );
    }
    tracing::info!(%ip, username = %user.username, scope = %ctx.scope.path, "oauth: signed in to view records");
    audit(&ctx, "sign_in", ip, &user.username);

    let mut resp = see_other(next);
    set_session_cookie(&ctx, &mut resp, &token, ttl_secs);
    set_form_cookie(&ctx, &mut resp, "", 0);
    resp
}

/// POST `{scope}/records` (the button on every record page): ends this browser's viewer
/// sign-in (its grant is revoked) and deletes the cookie.
async fn sign_out(
    State(ctx): State<OAuthCtx>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    if let Some(g) = viewer_grant(&ctx.oauth.store, &ctx.scope, &headers) {
        let ids = vec![g.grant_id.clone()];
        if let Err(e) = super::blocking(&ctx.oauth.store, move |s| s.revoke_grants(&ids)).await {
            return message(
                &ctx,
                e.status,
                &format!("The sign-out could not be saved: {}", e.description),
            );
        }
        tracing::info!(%ip, username = %g.username, scope = %ctx.scope.path, "oauth: signed out of the record pages");
        audit(&ctx, "sign_out", ip, &g.username);
    }
    let main = format!(
        "<h1>Signed out</h1><p>This browser no longer opens the records of {} until someone signs in again.</p>",
        html_escape(&ctx.scope.path)
    );
    let mut resp = html(StatusCode::OK, layout("Signed out", &main));
    set_session_cookie(&ctx, &mut resp, "", 0);
    resp
}

/// An audit record of a viewer sign-in or sign-out of `username`.
fn audit(ctx: &OAuthCtx, event: &'static str, ip: std::net::IpAddr, username: &str) {
    let mut r = ctx.record(event, "viewer", ip);
    r.user = Some(username.to_string());
    r.client_id = Some(VIEWER_CLIENT.to_string());
    ctx.audit(r);
}

/// The viewer cookie (`SameSite=Lax`: a citation is a link from another site).
fn set_session_cookie(ctx: &OAuthCtx, resp: &mut Response, value: &str, max_age_secs: u64) {
    set_cookie(
        &ctx.app,
        resp,
        SESSION_COOKIE,
        value,
        &format!("{}/records", ctx.scope.path),
        max_age_secs,
        "Lax",
    );
}

fn set_form_cookie(ctx: &OAuthCtx, resp: &mut Response, value: &str, max_age_secs: u64) {
    set_cookie(
        &ctx.app,
        resp,
        FORM_COOKIE,
        value,
        &format!("{}/sign-in", ctx.scope.path),
        max_age_secs,
        "Strict",
    );
}

fn bad_next(ctx: &OAuthCtx) -> Response {
    message(
        ctx,
        StatusCode::BAD_REQUEST,
        &format!(
            "This sign-in page only leads back to a record of {} (`next` must be a path under {}/records/). Open the record link again.",
            ctx.scope.path, ctx.scope.path
        ),
    )
}

fn message(ctx: &OAuthCtx, status: StatusCode, text: &str) -> Response {
    let main = format!(
        "<h1>Sign-in cannot continue</h1><p class=\"error\">{}</p><p class=\"muted\">{} · {}</p>",
        html_escape(text),
        html_escape(&ctx.scope.path),
        html_escape(ctx.issuer())
    );
    html(status, layout("Sign-in cannot continue", &main))
}

fn render_form(
    ctx: &OAuthCtx,
    next: &str,
    csrf: &str,
    username: &str,
    error: Option<&str>,
) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let main = format!(
        r#"<h1>Sign in to view this record</h1>
{error}
<dl>
<dt>Scope</dt><dd>{scope}</dd>
<dt>Database</dt><dd>{database}</dd>
<dt>Record</dt><dd>{record}</dd>
</dl>
<form method="post" action="{action}">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="next" value="{next}">
<label for="username">Username</label>
<input type="text" id="username" name="username" value="{username}" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<div class="buttons">
<button type="submit" class="approve">Sign in</button>
</div>
</form>
<p class="note">Read-only. The sign-in lasts {minutes} minutes on this browser.</p>"#,
        scope = html_escape(&ctx.scope.path),
        database = html_escape(&ctx.scope.database),
        record = html_escape(
            next.strip_prefix(&format!("{}/records/", ctx.scope.path))
                .unwrap_or(next)
        ),
        action = html_escape(&format!("{}/sign-in", ctx.scope.path)),
        csrf = html_escape(csrf),
        next = html_escape(next),
        username = html_escape(username),
        minutes = ctx.config().access_token_ttl_secs.div_ceil(60),
    );
    layout("Sign in", &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_bare_record_path_without_dot_segments_whatever_follows_them() {
        let ok = |next: &str| is_record_path("/chatgpt/records/", next);
        assert!(ok("/chatgpt/records/main.orders/2"));
        assert!(ok("/chatgpt/records/main.orders/a%2Eb"));
        assert!(ok("/chatgpt/records/main.orders/%2e%2e."));
        for bad in [
            "/chatgpt/records/..",
            "/chatgpt/records/..?x",
            "/chatgpt/records/..#x",
            "/chatgpt/records/%2e%2e?x",
            "/chatgpt/records/x/.?",
            "/chatgpt/records/x/%2E#",
            "/chatgpt/records/x/..?/y",
            "/chatgpt/records/main.orders/2?x=1",
            "/chatgpt/records/",
            "/chatgpt/recordsx/1",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }

    /// Every `next` the check lets through is, as a browser resolves it (the WHATWG URL
    /// standard, as the `url` crate implements it), exactly that path on this origin, under
    /// the scope's record pages: no other origin, no dot segment, no query or fragment. Over
    /// random texts built from the pieces redirect tricks are made of. Fixed seed
    /// (`TEST_SEED=n` explores others).
    #[test]
    fn every_next_it_accepts_stays_on_the_record_pages_as_a_browser_resolves_it() {
        const PIECES: &[&str] = &[
            "/",
            "//",
            ".",
            "..",
            "%2e",
            "%2E",
            "%2e%2e",
            ".%2e",
            "%2e.",
            "%2f",
            "%2F",
            "%5c",
            "\\",
            "?",
            "#",
            "@",
            ":",
            "evil.example",
            "a",
            "main.orders",
            "7",
            "%00",
            "\t",
            "\n",
            " ",
            "%20",
            "\u{3002}",
            "\u{ff0e}",
            "%252e",
            "%",
            ";",
            "..;",
            "/./",
            "/../",
            "%2e%2e%2f",
            "\u{0}",
            "\u{7f}",
            "https:",
            "~",
            "%u002e",
            "&",
            "=",
        ];
        let prefix = "/chatgpt/records/";
        let base = url::Url::parse("https://h.example/chatgpt/sign-in?next=x").expect("base");
        let seed = std::env::var("TEST_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let mut rng = fastrand::Rng::with_seed(0x6e65_7874 + seed);
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut next = String::new();
            match rng.u32(..10) {
                0 => {}
                1 => next.push_str("/chatgpt/records"),
                2 => next.push_str("/claude/records/"),
                _ => next.push_str(prefix),
            }
            for _ in 0..rng.usize(1..=6) {
                next.push_str(PIECES[rng.usize(..PIECES.len())]);
            }
            if !is_record_path(prefix, &next) {
                continue;
            }
            accepted += 1;
            let resolved = base.join(&next);
            let stays = resolved.as_ref().is_ok_and(|u| {
                u.scheme() == "https"
                    && u.host_str() == Some("h.example")
                    && u.port().is_none()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.path() == next
            });
            assert!(stays, "{next:?} was accepted, and resolves to {resolved:?}");
        }
        // Enough of them were accepted for the property to mean something.
        assert!(accepted > 10_000, "{accepted}");
    }
}
