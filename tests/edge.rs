//! The edge over real sockets: TLS (files and ACME against Pebble), ALPN, reloads, security
//! headers, SSE vs the request timeout, client IP and allowlists from loopback source
//! addresses, rate limits, slow-loris, body limits, idle timeouts and graceful shutdown.
//!
//! Every server here is the real one (`app::run`) on a loopback port, or the real binary where
//! a process limit is the subject; every load loop is bounded in count and time.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mssql_mcp::app;
use mssql_mcp::config::Config;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Load tests (flood, slow-loris) take this so they do not measure each other.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Tests that start Pebble take this: it and the ports it validates on are fixed.
static PEBBLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A tiny SQLite database with one table.
fn tiny_db(dir: &Path) -> PathBuf {
    let path = dir.join("t.sqlite");
    let conn = rusqlite::Connection::open(&path).expect("create db");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT OR IGNORE INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');",
    )
    .expect("fill db");
    path
}

/// A validated configuration with `/chatgpt` and `/claude` over the tiny database, plus
/// `extra` TOML (sections or `[server]` keys given via `server_extra`).
fn config(dir: &Path, server_extra: &str, extra: &str) -> Config {
    let db = tiny_db(dir);
    let text = format!(
        r#"
[server]
insecure_no_auth = true
state_dir = {state:?}
shutdown_grace_secs = 3
{server_extra}

[[database]]
name = "main"
kind = "sqlite"
path = {db:?}

[[scope]]
path = "/chatgpt"
database = "main"
profile = "chatgpt"
{chatgpt_extra}

[[scope]]
path = "/claude"
database = "main"
profile = "full"

{extra}
"#,
        state = dir.display().to_string(),
        db = db.display().to_string(),
        chatgpt_extra = "",
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), app::StartError>>,
    state: mssql_mcp::state::AppState,
}

impl Server {
    async fn start(config: Config) -> Server {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), config).await
    }

    async fn start_on(bind: SocketAddr, config: Config) -> Server {
        let listener = TcpListener::bind(bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = app::build_state(config, true).await.expect("state");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
            state,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://localhost:{}{path}", self.addr.port())
    }

    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
        started.elapsed()
    }
}

/// A plain-HTTP client whose sockets come from `local` (e.g. 127.0.0.2).
fn http_client(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn root_store(cas: &[CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in cas {
        roots.add(c.clone()).expect("CA");
    }
    roots
}

/// An https client trusting only `ca`, resolving `localhost` to `addr`.
fn https_client(ca: &CertificateDer<'static>, addr: SocketAddr) -> reqwest::Client {
    https_client_from(ca, addr, None, false)
}

/// [`https_client`] with its sockets from `local`, and HTTP/1.1 only when `h1_only`.
fn https_client_from(
    ca: &CertificateDer<'static>,
    addr: SocketAddr,
    local: Option<IpAddr>,
    h1_only: bool,
) -> reqwest::Client {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(root_store(std::slice::from_ref(ca)))
        .with_no_client_auth();
    tls.alpn_protocols = if h1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", addr)
        .local_address(local)
        .no_proxy()
        .timeout(Duration::from_secs(10));
    let builder = if h1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().expect("client")
}

/// A test CA and a `localhost` leaf it signed.
struct TestPki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    fn new(name: &str) -> TestPki {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA");
        TestPki {
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (chain PEM, key PEM, leaf DER) for `localhost` and 127.0.0.1.
    fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// Connects with TLS; returns the stream, the server's leaf certificate, ALPN and version.
async fn tls_connect(
    addr: SocketAddr,
    cas: &[CertificateDer<'static>],
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        Vec<u8>,
        Option<Vec<u8>>,
        rustls::ProtocolVersion,
    ),
    Box<dyn std::error::Error + Send + Sync>,
> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_root_certificates(root_store(cas))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    let version = conn.protocol_version().ok_or("no version")?;
    Ok((tls, leaf, alpn, version))
}

/// An HTTP/1.1 connection over `io`; returns a sender (the connection runs in a task).
async fn h1<I>(io: I) -> hyper::client::conn::http1::SendRequest<String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    sender
}

async fn h1_get(sender: &mut hyper::client::conn::http1::SendRequest<String>, path: &str) -> u16 {
    sender.ready().await.expect("connection ready");
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(String::new())
        .expect("request");
    sender
        .send_request(req)
        .await
        .expect("response")
        .status()
        .as_u16()
}

async fn h1_get_json(
    sender: &mut hyper::client::conn::http1::SendRequest<String>,
    path: &str,
) -> serde_json::Value {
    use http_body_util::BodyExt;
    sender.ready().await.expect("connection ready");
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(String::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("JSON body")
}

fn write_pair(dir: &Path, chain: &str, key: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join("fullchain.pem");
    let keyp = dir.join("privkey.pem");
    std::fs::write(&cert, chain).expect("write cert");
    std::fs::write(&keyp, key).expect("write key");
    (cert, keyp)
}

fn files_tls(cert: &Path, key: &Path, poll: u64) -> String {
    format!(
        "[tls]\nmode = \"files\"\ncert = {:?}\nkey = {:?}\nreload_poll_secs = {poll}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

#[tokio::test]
async fn files_mode_negotiates_h2_and_http1_over_tls_1_2_and_1_3() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::new("files CA");
    let (chain, key, _) = pki.leaf("first");
    let (cert, keyp) = write_pair(dir.path(), &chain, &key);
    let server = Server::start(config(dir.path(), "", &files_tls(&cert, &keyp, 0))).await;
    let cas = [pki.ca_der.clone()];
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];

    let (_, _, alpn, version) = tls_connect(server.addr, &cas, &[b"h2", b"http/1.1"], all).await?;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    let (_, _, alpn, _) = tls_connect(server.addr, &cas, &[b"http/1.1"], all).await?;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (tls, _, _, version) = tls_connect(
        server.addr,
        &cas,
        &[b"http/1.1"],
        &[&rustls::version::TLS12],
    )
    .await?;
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    let mut sender = h1(tls).await;
    assert_eq!(h1_get(&mut sender, "/health").await, 200);

    // And through an ordinary client, HTTP/2 end to end.
    let client = https_client(&pki.ca_der, server.addr);
    let resp = client.get(server.url("https", "/health")).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn replaced_certificate_files_reach_new_connections_while_open_ones_keep_working()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::new("reload CA");
    let (chain1, key1, leaf1) = pki.leaf("first");
    let (cert, keyp) = write_pair(dir.path(), &chain1, &key1);
    // Poll every second: the file-change path.
    let server = Server::start(config(dir.path(), "", &files_tls(&cert, &keyp, 1))).await;
    let cas = [pki.ca_der.clone()];
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];

    let (tls, seen, _, _) = tls_connect(server.addr, &cas, &[b"http/1.1"], all).await?;
    assert_eq!(seen, leaf1);
    let mut open = h1(tls).await;
    assert_eq!(h1_get(&mut open, "/health").await, 200);

    let (chain2, key2, leaf2) = pki.leaf("second");
    // mtime resolution can be a second: make sure the change is visible.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write_pair(dir.path(), &chain2, &key2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, seen, _, _) = tls_connect(server.addr, &cas, &[b"http/1.1"], all).await?;
        if seen == leaf2 {
            break;
        }
        assert!(Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection opened before the reload still works, on the old certificate.
    assert_eq!(h1_get(&mut open, "/health").await, 200);
    assert_eq!(h1_get(&mut open, "/health").await, 200);

    // SIGHUP reloads too (here: back to a third certificate).
    let (chain3, key3, leaf3) = pki.leaf("third");
    write_pair(dir.path(), &chain3, &key3);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()?;
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, seen, _, _) = tls_connect(server.addr, &cas, &[b"http/1.1"], all).await?;
        if seen == leaf3 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h1_get(&mut open, "/health").await, 200);
    let report = server.state.edge().report();
    assert_eq!(report.tls.state, "ok");
    assert!(report.tls.loaded >= 3, "{report:?}");
    assert!(report.cert_expires_in_secs.is_some_and(|s| s > 0));
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn every_response_carries_hsts_and_the_security_headers() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::new("headers CA");
    let (chain, key, _) = pki.leaf("h");
    let (cert, keyp) = write_pair(dir.path(), &chain, &key);
    let server = Server::start(config(
        dir.path(),
        "",
        &format!(
            "{}\n[access]\nallow = [\"127.0.0.1\"]\n",
            files_tls(&cert, &keyp, 0)
        ),
    ))
    .await;
    let client = https_client(&pki.ca_der, server.addr);
    // 200, 404, 403 (from 127.0.0.1 via the public client vs. allowlist is checked below).
    for (path, want) in [("/health", 200), ("/nope", 404)] {
        let resp = client.get(server.url("https", path)).send().await?;
        assert_eq!(resp.status(), want, "{path}");
        let h = resp.headers();
        assert_eq!(
            h.get("strict-transport-security")
                .map(|v| v.to_str().unwrap_or("")),
            Some("max-age=31536000; includeSubDomains"),
            "{path}"
        );
        assert_eq!(
            h.get("x-frame-options").map(|v| v.as_bytes()),
            Some(&b"DENY"[..])
        );
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..])
        );
        assert!(h.get("referrer-policy").is_some());
        assert!(h.get("x-request-id").is_some(), "request id propagated");
    }
    server.stop().await;

    // A refusal (403 from the allowlist) carries them too.
    let dir = tempfile::tempdir()?;
    let (cert, keyp) = write_pair(dir.path(), &chain, &key);
    let server = Server::start(config(
        dir.path(),
        "",
        &format!(
            "{}\n[access]\nallow = [\"127.0.0.9\"]\n",
            files_tls(&cert, &keyp, 0)
        ),
    ))
    .await;
    let client = https_client(&pki.ca_der, server.addr);
    let resp = client.get(server.url("https", "/health")).send().await?;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("strict-transport-security").is_some());
    assert!(resp.headers().get("x-frame-options").is_some());
    server.stop().await;
    Ok(())
}

/// Reads SSE bytes until `needle` shows up or `within` passes.
async fn read_until(
    resp: &mut reqwest::Response,
    buf: &mut String,
    needle: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while !buf.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => buf.push_str(&String::from_utf8_lossy(&bytes)),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn an_sse_stream_arrives_unbuffered_and_outlives_the_request_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\nrequest_timeout_secs = 1\n",
    ))
    .await;
    let client = http_client(None);
    let mut stream = client
        .get(server.url("http", "/claude/sse"))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    assert!(
        read_until(
            &mut stream,
            &mut buf,
            "event: endpoint",
            Duration::from_secs(1)
        )
        .await,
        "the first event arrives at once: {buf:?}"
    );
    let endpoint = buf
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .ok_or("no endpoint data")?
        .trim()
        .to_string();
    // Past the 1 s request timeout, the stream still carries responses.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let posted = client
        .post(server.url("http", &endpoint))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#)
        .send()
        .await?;
    assert_eq!(posted.status(), 202);
    assert!(
        read_until(&mut stream, &mut buf, "\"id\":7", Duration::from_secs(3)).await,
        "the stream is still open after the request timeout: {buf:?}"
    );
    server.stop().await;
    Ok(())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test]
async fn the_allowlist_admits_listed_loopback_addresses_and_refuses_others() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[access]\nallow = [\"127.0.0.2/32\", \"::1/128\"]\n",
    ))
    .await;
    let url = server.url("http", "/health");
    let two = http_client(Some(ip("127.0.0.2")));
    let three = http_client(Some(ip("127.0.0.3")));
    assert_eq!(two.get(&url).send().await?.status(), 200);
    let refused = three.get(&url).send().await?;
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["reason"], "client address not allowed");
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = three
        .get(&url)
        .header("x-forwarded-for", "127.0.0.2")
        .send()
        .await?;
    assert_eq!(spoofed.status(), 403);
    // IPv6: ::1 is listed.
    let v6 = http_client(Some(ip("::1")));
    let v6_url = format!("http://[::1]:{}/health", server.addr.port());
    // The server listens on 127.0.0.1 only; start a second one on [::1] for the v6 check.
    drop(v6_url);
    server.stop().await;

    let dir = tempfile::tempdir()?;
    let server = Server::start_on(
        "[::1]:0".parse()?,
        config(dir.path(), "", "[access]\nallow = [\"::1/128\"]\n"),
    )
    .await;
    let v6_url = format!("http://[::1]:{}/health", server.addr.port());
    assert_eq!(v6.get(&v6_url).send().await?.status(), 200);
    server.stop().await;
    let dir = tempfile::tempdir()?;
    let server = Server::start_on(
        "[::1]:0".parse()?,
        config(dir.path(), "", "[access]\nallow = [\"2001:db8::/32\"]\n"),
    )
    .await;
    let v6_url = format!("http://[::1]:{}/health", server.addr.port());
    assert_eq!(v6.get(&v6_url).send().await?.status(), 403);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn scope_allowlists_and_trusted_proxies_decide_per_scope() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path(), "trusted_proxies = [\"127.0.0.4\"]", "");
    cfg.scopes[0].allow_ips = vec!["127.0.0.2".into()];
    cfg.validate()?;
    let server = Server::start(cfg).await;
    let mcp = |s: &Server, scope: &str| s.url("http", &format!("{scope}/mcp"));
    let two = http_client(Some(ip("127.0.0.2")));
    let three = http_client(Some(ip("127.0.0.3")));
    let proxy = http_client(Some(ip("127.0.0.4")));
    // GET /mcp without an SSE Accept is 405/406 from the route: anything but 403 means "let in".
    assert_ne!(
        two.get(mcp(&server, "/chatgpt")).send().await?.status(),
        403
    );
    let r = three.get(mcp(&server, "/chatgpt")).send().await?;
    assert_eq!(r.status(), 403);
    assert_ne!(
        three.get(mcp(&server, "/claude")).send().await?.status(),
        403
    );
    // The well-known form of the scope is covered too.
    let r = three
        .get(server.url("http", "/.well-known/oauth-protected-resource/chatgpt/mcp"))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    // Through the trusted proxy, the forwarded address counts.
    let r = proxy
        .get(mcp(&server, "/chatgpt"))
        .header("x-forwarded-for", "203.0.113.5, 127.0.0.2")
        .send()
        .await?;
    assert_ne!(r.status(), 403);
    let r = proxy
        .get(mcp(&server, "/chatgpt"))
        .header("x-forwarded-for", "127.0.0.2, 203.0.113.5")
        .send()
        .await?;
    assert_eq!(
        r.status(),
        403,
        "the right-most untrusted hop is the client"
    );
    assert!(server.state.edge().report().denied >= 3);
    server.stop().await;
    Ok(())
}

async fn timed_get(client: &reqwest::Client, url: &str) -> (u16, Duration, Option<String>) {
    let started = Instant::now();
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = r.bytes().await;
            (status, started.elapsed(), retry)
        }
        Err(_) => (0, started.elapsed(), None),
    }
}

fn p95(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 95 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_gets_429_while_another_keeps_its_latency() -> TestResult {
    let _load = LOAD.lock().await;
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\nper_ip_per_sec = 50\nper_ip_burst = 50\n",
    ))
    .await;
    let url = server.url("http", "/health");
    let calm = http_client(Some(ip("127.0.0.3")));
    // Baseline latency of the calm client.
    let mut base = Vec::new();
    for _ in 0..20 {
        let (s, d, _) = timed_get(&calm, &url).await;
        assert_eq!(s, 200);
        base.push(d);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base_p95 = p95(base);

    // The flood: 16 workers from 127.0.0.2, at most 3000 requests or 4 seconds.
    let flooder = http_client(Some(ip("127.0.0.2")));
    let stop_at = Instant::now() + Duration::from_secs(4);
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (c, u, sent) = (flooder.clone(), url.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            let (mut limited, mut retry_after_seen) = (0usize, false);
            while Instant::now() < stop_at
                && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3000
            {
                let (s, _, retry) = timed_get(&c, &u).await;
                if s == 429 {
                    limited += 1;
                    retry_after_seen |=
                        retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|n| n >= 1));
                }
            }
            (limited, retry_after_seen)
        }));
    }
    // Meanwhile the calm client, at 10 requests per second (well inside its own bucket).
    let mut during = Vec::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..25 {
        let (s, d, _) = timed_get(&calm, &url).await;
        assert_eq!(s, 200, "the calm address is never limited");
        during.push(d);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut limited, mut retry_seen) = (0, false);
    for w in workers {
        let (l, r) = w.await?;
        limited += l;
        retry_seen |= r;
    }
    let during_p95 = p95(during);
    eprintln!(
        "flood: {} sent, {limited} limited; calm p95 before {base_p95:?}, during {during_p95:?}",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(limited > 100, "the flood was limited ({limited})");
    assert!(retry_seen, "429 carries Retry-After");
    assert!(
        during_p95 < Duration::from_millis(300).max(base_p95 * 10),
        "calm p95 {during_p95:?} vs baseline {base_p95:?}"
    );
    assert!(server.state.edge().report().limited_ip >= limited as u64);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn oauth_endpoints_have_the_stricter_bucket() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\noauth_per_min = 6\noauth_burst = 3\n",
    ))
    .await;
    let c = http_client(Some(ip("127.0.0.5")));
    for _ in 0..3 {
        let (s, _, _) = timed_get(&c, &server.url("http", "/chatgpt/token")).await;
        assert_ne!(s, 429);
    }
    let (s, _, retry) = timed_get(&c, &server.url("http", "/claude/authorize")).await;
    assert_eq!(
        s, 429,
        "the OAuth bucket is shared by all OAuth endpoints of an address"
    );
    assert!(retry.is_some());
    // The same address is not limited elsewhere.
    let (s, _, _) = timed_get(&c, &server.url("http", "/health")).await;
    assert_eq!(s, 200);
    assert_eq!(server.state.edge().report().limited_oauth, 1);
    server.stop().await;
    Ok(())
}

/// A client that waits the `Retry-After` it was given is admitted: the wait is rounded up, not
/// down (one OAuth request per 1.5 s: a refusal right after one must say 2, not 1).
#[tokio::test]
async fn a_client_that_obeys_retry_after_is_admitted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\noauth_per_min = 40\noauth_burst = 1\n",
    ))
    .await;
    let c = http_client(Some(ip("127.0.0.6")));
    let url = server.url("http", "/chatgpt/token");
    let (s, _, _) = timed_get(&c, &url).await;
    assert_ne!(s, 429);
    let (s, _, retry) = timed_get(&c, &url).await;
    assert_eq!(s, 429);
    let secs: u64 = retry.and_then(|r| r.parse().ok()).ok_or("Retry-After")?;
    assert_eq!(secs, 2, "1.5 s rounded up");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (s, _, _) = timed_get(&c, &url).await;
    assert_ne!(s, 429, "admitted after waiting Retry-After");
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_connections_do_not_block_a_normal_request_and_are_cut() -> TestResult {
    let _load = LOAD.lock().await;
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\nheader_read_timeout_secs = 3\n",
    ))
    .await;
    let addr = server.addr;
    // 200 connections that send a request head one byte per second.
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return None;
            };
            let head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
            let opened = Instant::now();
            for b in head.iter() {
                if Instant::now() > stop_at || s.write_all(&[*b]).await.is_err() {
                    break;
                }
                let mut probe = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
                    _ => {}
                }
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = http_client(Some(ip("127.0.0.6")));
    let (s, d, _) = timed_get(&client, &server.url("http", "/health")).await;
    assert_eq!(s, 200);
    assert!(d < Duration::from_millis(500), "normal request took {d:?}");
    let mut cut = 0;
    for t in slow {
        if let Some(after) = t.await? {
            assert!(after < Duration::from_secs(5), "cut after {after:?}");
            cut += 1;
        }
    }
    assert!(
        cut >= 190,
        "slow connections closed by the header timeout: {cut}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_get_413() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(dir.path(), "max_body_bytes = 4096", "")).await;
    let client = http_client(None);
    let big = "x".repeat(10_000);
    let r = client
        .post(server.url("http", "/claude/mcp"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..10).map(|_| Ok("y".repeat(1000))).collect();
    let r = client
        .post(server.url("http", "/claude/mcp"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    server.stop().await;
    Ok(())
}

/// A request head over `limits.max_header_bytes` (twice it, to be certain; see below) is
/// refused with 431 before it is routed; one under it is served, and a body far larger than
/// the head limit still streams past it.
#[tokio::test]
async fn oversized_request_heads_get_431() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\nmax_header_bytes = 16384\n",
    ))
    .await;
    let client = http_client(None);
    let get = |padding: usize| {
        client
            .get(server.url("http", "/health"))
            .header("x-padding", "p".repeat(padding))
            .send()
    };
    assert_eq!(get(8_000).await?.status(), 200);
    // hyper stops reading once its buffer reaches the limit without a complete head; the
    // read that crosses it may bring up to one more buffer's worth, so the refusal is
    // certain from twice the limit.
    assert_eq!(get(40_000).await?.status(), 431);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "b".repeat(100_000)
    );
    let r = client
        .post(server.url("http", "/claude/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await?;
    assert_ne!(r.status(), 431);
    assert_ne!(r.status(), 413);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\nheader_read_timeout_secs = 2\nidle_timeout_secs = 20\n",
    ))
    .await;
    // HTTP/1.1: an idle kept-alive connection is closed by the header read timeout.
    let mut s = TcpStream::connect(server.addr).await?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got += n,
            Ok(Err(_)) => break,
            Err(_) => panic!("HTTP/1.1 connection still open after 8 s"),
        }
    }
    assert!(got > 0);
    let h1_closed = started.elapsed();
    assert!(h1_closed >= Duration::from_millis(1500) && h1_closed < Duration::from_secs(5));

    // HTTP/2 (prior knowledge): one request, then silence; the idle timeout closes it.
    let tcp = TcpStream::connect(server.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("http://localhost/health").body(String::new())?;
    assert_eq!(sender.send_request(req).await?.status(), 200);
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(30), conn).await?;
    let h2_closed = started.elapsed();
    assert!(
        h2_closed >= Duration::from_secs(18) && h2_closed < Duration::from_secs(26),
        "HTTP/2 idle close after {h2_closed:?}"
    );
    server.stop().await;
    Ok(())
}

/// An idle HTTP/2 connection whose client answers pings (as hyper's does) is still closed by
/// the idle timeout: the server's keep-alive pings come only after it (35 s here, past the
/// 30 s they used to come at, whose ping and ACK counted as activity).
#[tokio::test]
async fn an_idle_http2_connection_answering_pings_is_closed_by_the_idle_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(dir.path(), "", "[limits]\nidle_timeout_secs = 35\n")).await;
    let tcp = TcpStream::connect(server.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("http://localhost/health").body(String::new())?;
    assert_eq!(sender.send_request(req).await?.status(), 200);
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(50), conn).await;
    let after = started.elapsed();
    assert!(
        closed.is_ok(),
        "HTTP/2 connection still open after {after:?}"
    );
    assert!(
        after >= Duration::from_secs(33),
        "HTTP/2 idle close after {after:?}"
    );
    server.stop().await;
    Ok(())
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2 and the like).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(ip(from), 0))?;
    sock.connect(to).await
}

/// Sends `GET /health` on a kept-alive HTTP/1.1 connection; the status, or `None` when the
/// server closed the connection without an answer.
async fn health_on(s: &mut TcpStream) -> Option<u16> {
    let _ = s
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("neither an answer nor a close within 5 s"),
        }
    }
    let head = String::from_utf8_lossy(&got);
    head.split(' ').nth(1).and_then(|c| c.parse().ok())
}

/// Over `limits.max_connections_per_ip` one address's next connection is closed at accept
/// while another address still gets in; over `limits.max_connections` every address is refused;
/// a connection that closes gives its place back.
#[tokio::test]
async fn connections_over_the_per_ip_and_total_caps_are_closed_at_accept() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\nmax_connections = 5\nmax_connections_per_ip = 3\n",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", server.addr).await?;
        assert_eq!(health_on(&mut s).await, Some(200));
        held.push(s);
    }
    let mut s = connect_from("127.0.0.1", server.addr).await?;
    assert_eq!(health_on(&mut s).await, None, "a fourth from one address");
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.2", server.addr).await?;
        assert_eq!(health_on(&mut s).await, Some(200), "another address");
        held.push(s);
    }
    let mut s = connect_from("127.0.0.3", server.addr).await?;
    assert_eq!(health_on(&mut s).await, None, "a sixth in all");
    let report = server.state.edge().report();
    assert_eq!(report.connections_open, 5);
    assert_eq!(report.connections_refused, 2);
    // The connections held are still served.
    for s in &mut held {
        assert_eq!(health_on(s).await, Some(200));
    }
    // Closing one frees its place (once the server has seen the close).
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect_from("127.0.0.3", server.addr).await?;
        if health_on(&mut s).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    Ok(())
}

/// Starts the `mssql-mcp` binary (after `wrapper`, e.g. `prlimit …  --`) serving the tiny
/// database at `/claude` without authentication, its log in `dir/server.log`; returns once it
/// answers `/health`. The port is picked by binding and releasing it; another test may grab it
/// in between, so a server that exits at once is retried on a fresh port. The admin listener
/// takes any free port: on its default, 8009, two of these binaries at once collide.
async fn spawn_binary(
    dir: &Path,
    db: &Path,
    wrapper: &[&str],
) -> Result<(tokio::process::Child, SocketAddr), Box<dyn std::error::Error + Send + Sync>> {
    spawn_binary_with(dir, db, wrapper, "").await
}

/// [`spawn_binary`] with `extra` TOML after the config's sections.
async fn spawn_binary_with(
    dir: &Path,
    db: &Path,
    wrapper: &[&str],
    extra: &str,
) -> Result<(tokio::process::Child, SocketAddr), Box<dyn std::error::Error + Send + Sync>> {
    let client = http_client(None);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = common::free_port();
        let cfg = dir.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ninsecure_no_auth = true\nstate_dir = {:?}\nshutdown_grace_secs = 3\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[database]]\nname = \"main\"\nkind = \"sqlite\"\npath = {:?}\n\n[[scope]]\npath = \"/claude\"\ndatabase = \"main\"\n\n{extra}\n",
                dir.display().to_string(),
                db.display().to_string()
            ),
        )?;
        let bin = env!("CARGO_BIN_EXE_mssql-mcp");
        let (program, before) = match wrapper.split_first() {
            Some((first, rest)) => (*first, rest),
            None => (bin, &[][..]),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(before);
        if !wrapper.is_empty() {
            cmd.arg(bin);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(std::fs::File::create(dir.join("server.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if client
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .is_ok()
            {
                return Ok((child, addr));
            }
            if child.try_wait()?.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill().await;
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        assert!(attempt < 3, "server did not start: {log}");
    }
}

/// Under an open-file limit too small for `limits.max_connections` (300 descriptors, a hard
/// limit the binary cannot raise), the binary lowers its connection cap to fit and says so,
/// then refuses connections past it instead of failing to accept them. A process limit, so
/// the real binary under `prlimit` (util-linux).
#[tokio::test]
async fn the_connection_cap_is_fitted_under_the_open_file_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = tiny_db(dir.path());
    let (mut child, to) =
        spawn_binary(dir.path(), &db, &["prlimit", "--nofile=300:300", "--"]).await?;
    // 300 descriptors, half of them kept for the server's own: 150 connections.
    let mut held = Vec::new();
    let refused = loop {
        let mut s = connect_from("127.0.0.1", to).await?;
        match health_on(&mut s).await {
            Some(200) => held.push(s),
            Some(other) => panic!("status {other}"),
            None => break held.len(),
        }
        assert!(held.len() <= 150, "more than the fitted cap accepted");
    };
    assert!((140..=150).contains(&refused), "refused after {refused}");
    // The ones held still work, and a closed one frees a place.
    for s in held.iter_mut().take(3) {
        assert_eq!(health_on(s).await, Some(200));
    }
    held.truncate(refused - 5);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect_from("127.0.0.1", to).await?;
        if health_on(&mut s).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill().await;
    let log = std::fs::read_to_string(dir.path().join("server.log"))?;
    assert!(
        log.contains("limits.max_connections is lowered") && log.contains("150"),
        "{log}"
    );
    assert!(
        log.contains("connection refused: a connection cap is reached"),
        "{log}"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_open_streams_within_the_grace_period() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = tiny_db(dir.path());
    let (mut child, addr) = spawn_binary(dir.path(), &db, &[]).await?;
    let base = format!("http://{addr}");
    let client = http_client(None);
    let mut stream = client
        .get(format!("{base}/claude/sse"))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let mut buf = String::new();
    assert!(read_until(&mut stream, &mut buf, "endpoint", Duration::from_secs(2)).await);
    let pid = child.id().ok_or("no pid")?;
    let started = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(4),
        "drained in {took:?} (grace 3 s)"
    );
    // The stream ended rather than hanging.
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the SSE stream was closed by the drain");
    Ok(())
}

/// `systemctl reload` sends SIGHUP; with `tls.mode = "off"` there is nothing to reload, and
/// the server says so and keeps serving instead of dying of the signal.
#[tokio::test]
async fn sighup_in_tls_off_mode_is_logged_and_the_server_keeps_serving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = tiny_db(dir.path());
    let (mut child, addr) = spawn_binary(dir.path(), &db, &[]).await?;
    let pid = child.id().ok_or("no pid")?;
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    let log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log().contains("SIGHUP: nothing to reload in tls.mode=off") {
        assert!(
            child.try_wait()?.is_none(),
            "the server ended on SIGHUP:\n{}",
            log()
        );
        assert!(
            Instant::now() < deadline,
            "no SIGHUP line logged:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = http_client(None)
        .get(format!("http://{addr}/health"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert!(child.try_wait()?.is_none(), "still running");
    let _ = child.kill().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ACME against Pebble. Its validation authority connects to ports named in its config, where
// the server under test must listen; each test picks free ones (`PebblePorts::free`) and
// these tests take the PEBBLE lock, so one Pebble runs at a time.
// ---------------------------------------------------------------------------------------

/// Loopback ports of one ACME test, free when picked.
#[derive(Clone, Copy)]
struct PebblePorts {
    /// Pebble's ACME directory.
    dir: u16,
    /// Pebble's management interface (the roots of what it issued).
    mgmt: u16,
    /// Where Pebble validates TLS-ALPN-01 (`"tlsPort"`): the server's https listener.
    tls: u16,
    /// Where Pebble sends HTTP-01 requests (`"httpPort"`): the server's plain-HTTP listener.
    http: u16,
}

impl PebblePorts {
    fn free() -> Self {
        // Held together while picking, so the four differ.
        let listeners: Vec<std::net::TcpListener> = (0..4)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect();
        let port = |i: usize| listeners[i].local_addr().expect("local addr").port();
        Self {
            dir: port(0),
            mgmt: port(1),
            tls: port(2),
            http: port(3),
        }
    }

    fn tls_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.tls).into()
    }
}

struct Pebble {
    child: tokio::process::Child,
    ca: TestPki,
    ports: PebblePorts,
}

impl Pebble {
    async fn start(dir: &Path, ports: PebblePorts, validity_secs: Option<u64>) -> Pebble {
        Self::start_as(dir, ports, validity_secs, Self::identity(dir)).await
    }

    /// Writes Pebble's HTTPS certificate and key into `dir`, and the CA that `acme_tls` has the
    /// server trust: for a server that starts before Pebble does.
    fn identity(dir: &Path) -> TestPki {
        let ca = TestPki::new("pebble https CA");
        let (chain, key, _) = ca.leaf("pebble");
        std::fs::write(dir.join("pebble-cert.pem"), chain).expect("write");
        std::fs::write(dir.join("pebble-key.pem"), key).expect("write");
        std::fs::write(dir.join("pebble-ca.pem"), &ca.ca_pem).expect("write");
        ca
    }

    /// Starts Pebble with the [`Pebble::identity`] written in `dir`.
    async fn start_as(
        dir: &Path,
        ports: PebblePorts,
        validity_secs: Option<u64>,
        ca: TestPki,
    ) -> Pebble {
        let validity = validity_secs
            .map(|v| format!(",\"certificateValidityPeriod\": {v}"))
            .unwrap_or_default();
        let cfg = format!(
            r#"{{"pebble":{{"listenAddress":"127.0.0.1:{}","managementListenAddress":"127.0.0.1:{}","certificate":{:?},"privateKey":{:?},"httpPort":{},"tlsPort":{},"ocspResponderURL":"","externalAccountBindingRequired":false{validity}}}}}"#,
            ports.dir,
            ports.mgmt,
            dir.join("pebble-cert.pem").display().to_string(),
            dir.join("pebble-key.pem").display().to_string(),
            ports.http,
            ports.tls,
        );
        std::fs::write(dir.join("pebble.json"), cfg).expect("write");
        let child = tokio::process::Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(std::fs::File::create(dir.join("pebble.log")).expect("pebble log"))
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pebble (apt-get install pebble)");
        let p = Pebble { child, ca, ports };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", ports.dir)).await.is_err() {
            assert!(Instant::now() < deadline, "pebble did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    /// The root issued certificates chain to (new on every pebble start).
    async fn root(&self) -> CertificateDer<'static> {
        let client = https_client(
            &self.ca.ca_der,
            SocketAddr::from(([127, 0, 0, 1], self.ports.mgmt)),
        );
        let pem = client
            .get(format!("https://localhost:{}/roots/0", self.ports.mgmt))
            .send()
            .await
            .expect("roots")
            .bytes()
            .await
            .expect("root pem");
        CertificateDer::from_pem_slice(&pem).expect("root parses")
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// An ACME test whose server starts before Pebble does: it holds the Pebble lock and free
/// ports, and Pebble's identity is written in `dir` (so `acme_tls` can trust it), but Pebble
/// is not running until [`PebbleLater::start`].
struct PebbleLater {
    _lock: tokio::sync::MutexGuard<'static, ()>,
    ports: PebblePorts,
    dir: tempfile::TempDir,
    ca: Option<TestPki>,
}

impl PebbleLater {
    async fn new() -> PebbleLater {
        let lock = PEBBLE.lock().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Some(Pebble::identity(dir.path()));
        PebbleLater {
            _lock: lock,
            ports: PebblePorts::free(),
            dir,
            ca,
        }
    }

    /// Starts Pebble (once).
    async fn start(&mut self) -> Pebble {
        let ca = self.ca.take().expect("Pebble starts once");
        Pebble::start_as(self.dir.path(), self.ports, None, ca).await
    }
}

use rustls::pki_types::pem::PemObject;

fn acme_config(dir: &Path, ports: PebblePorts, pebble_dir: &Path, cache: &Path) -> Config {
    config(dir, "", &acme_tls(ports, pebble_dir, cache, ""))
}

/// `[tls]` for ACME against Pebble, plus `extra` keys in that table.
fn acme_tls(ports: PebblePorts, pebble_dir: &Path, cache: &Path, extra: &str) -> String {
    format!(
        "[tls]\nmode = \"acme\"\ndomains = [\"localhost\"]\ncontact = [\"ops@example.com\"]\ndirectory = \"https://127.0.0.1:{}/dir\"\nca_file = {:?}\ncache_dir = {:?}\n{extra}",
        ports.dir,
        pebble_dir.join("pebble-ca.pem").display().to_string(),
        cache.display().to_string()
    )
}

fn pebble_missing() -> bool {
    let missing = std::process::Command::new("pebble")
        .arg("-version")
        .output()
        .is_err();
    if missing {
        eprintln!("SKIPPED: pebble is not installed (apt-get install -y pebble)");
    }
    missing
}

async fn wait_for<F: Fn(&mssql_mcp::edge::EdgeReport) -> bool>(
    server: &Server,
    within: Duration,
    what: &str,
    f: F,
) -> mssql_mcp::edge::EdgeReport {
    let deadline = Instant::now() + within;
    loop {
        let r = server.state.edge().report();
        if f(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET /health over a fresh TLS connection trusting only `root`; returns the leaf served.
async fn fresh_get(addr: SocketAddr, root: &CertificateDer<'static>) -> Result<Vec<u8>, String> {
    let (tls, leaf, _, _) = tls_connect(
        addr,
        std::slice::from_ref(root),
        &[b"http/1.1"],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut sender = h1(tls).await;
    match h1_get(&mut sender, "/health").await {
        200 => Ok(leaf),
        s => Err(format!("status {s}")),
    }
}

#[tokio::test]
async fn acme_against_pebble_issues_caches_renews_and_survives_an_outage() -> TestResult {
    if pebble_missing() {
        return Ok(());
    }
    let _pebble = PEBBLE.lock().await;
    let ports = PebblePorts::free();
    let addr = ports.tls_addr();

    // 1. Real TLS-ALPN-01 issuance; a client trusting only Pebble's root gets a valid chain.
    let pebble_dir = tempfile::tempdir()?;
    let pebble = Pebble::start(pebble_dir.path(), ports, None).await;
    let root = pebble.root().await;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("acme-cache");
    let server = Server::start_on(
        addr,
        acme_config(dir.path(), ports, pebble_dir.path(), &cache),
    )
    .await;
    let r = wait_for(&server, Duration::from_secs(30), "issuance", |r| {
        r.tls.issued >= 1
    })
    .await;
    assert_eq!(r.tls.state, "ok");
    let issued_leaf = fresh_get(addr, &root).await?;
    let client = https_client(&root, addr);
    let health: serde_json::Value = client
        .get(server.url("https", "/health"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(health["tls"]["state"], "ok", "{health}");
    assert!(
        health["tls"]["cert_expires_in_secs"]
            .as_i64()
            .is_some_and(|s| s > 0)
    );
    server.stop().await;
    // The cache holds the certificate's private key and the account key: the directory is
    // the service's alone and so is every file in it, whatever this process's umask is.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&cache)?, 0o700, "{}", cache.display());
        let mut files = 0;
        for entry in std::fs::read_dir(&cache)? {
            let path = entry?.path();
            assert_eq!(mode(&path)?, 0o600, "{}", path.display());
            files += 1;
        }
        assert!(files >= 2, "a certificate and an account in the cache");
    }

    // 2. A restart serves the cached certificate without a new order.
    let started = Instant::now();
    let server = Server::start_on(
        addr,
        acme_config(dir.path(), ports, pebble_dir.path(), &cache),
    )
    .await;
    let r = wait_for(&server, Duration::from_secs(5), "cached certificate", |r| {
        r.tls.loaded >= 1
    })
    .await;
    eprintln!("cached certificate served after {:?}", started.elapsed());
    assert_eq!(r.tls.issued, 0, "no new order");
    assert_eq!(fresh_get(addr, &root).await?, issued_leaf);
    server.stop().await;
    pebble.stop().await;

    // 3. 30-second certificates renew and swap while a client keeps making requests.
    let pebble_dir = tempfile::tempdir()?;
    let pebble = Pebble::start(pebble_dir.path(), ports, Some(30)).await;
    let root = pebble.root().await;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("acme-cache");
    let server = Server::start_on(
        addr,
        acme_config(dir.path(), ports, pebble_dir.path(), &cache),
    )
    .await;
    wait_for(
        &server,
        Duration::from_secs(30),
        "first 30 s certificate",
        |r| r.tls.issued >= 1,
    )
    .await;
    let keep_alive = https_client(&root, addr);
    let mut leaves = std::collections::HashSet::new();
    let (mut ok, mut errors) = (0, Vec::new());
    let until = Instant::now() + Duration::from_secs(45);
    while Instant::now() < until {
        match fresh_get(addr, &root).await {
            Ok(leaf) => {
                leaves.insert(leaf);
                ok += 1;
            }
            Err(e) => errors.push(e),
        }
        match keep_alive.get(server.url("https", "/health")).send().await {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => errors.push(format!("keep-alive status {}", r.status())),
            Err(e) => errors.push(format!("keep-alive: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = server.state.edge().report();
    eprintln!(
        "renewal: {ok} ok, {} errors, {} distinct certificates, report {r:?}",
        errors.len(),
        leaves.len()
    );
    assert!(errors.is_empty(), "errors during renewal: {errors:?}");
    assert!(leaves.len() >= 2, "the certificate was renewed and swapped");
    assert!(r.tls.issued >= 2);

    // 4. Pebble stops: the server keeps serving and reports the failure.
    pebble.stop().await;
    let r = wait_for(&server, Duration::from_secs(30), "the ACME failure", |r| {
        r.tls.state == "error"
    })
    .await;
    assert!(r.tls.last_error.is_some());
    assert!(r.cert_expires_in_secs.is_some());
    eprintln!("after the outage: {r:?}");
    match fresh_get(addr, &root).await {
        Ok(_) => {}
        // The last 30 s certificate may just have run out; the server still answered TLS.
        Err(e) => assert!(e.contains("expired") || e.contains("Expired"), "{e}"),
    }
    let mut plain_tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    plain_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(plain_tls))
        .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
        .await?;
    let mut sender = h1(tls).await;
    let health = h1_get_json(&mut sender, "/health").await;
    assert_eq!(health["status"], "ok", "still serving");
    assert_eq!(health["tls"]["state"], "error", "{health}");
    assert!(
        health["tls"].get("last_error").is_none(),
        "the error's text is for the admin listener only: {health}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn acme_http01_is_answered_on_the_http_listener_which_redirects_everything_else() -> TestResult
{
    if pebble_missing() {
        return Ok(());
    }
    let _pebble = PEBBLE.lock().await;
    let ports = PebblePorts::free();
    let addr = ports.tls_addr();
    let pebble_dir = tempfile::tempdir()?;
    let pebble = Pebble::start(pebble_dir.path(), ports, None).await;
    let root = pebble.root().await;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("acme-cache");
    // Pebble fetches http://localhost:{ports.http}/.well-known/acme-challenge/{token}, from
    // 127.0.0.1, an address the allowlist does not admit.
    let tls = acme_tls(
        ports,
        pebble_dir.path(),
        &cache,
        &format!(
            "challenge = \"http-01\"\nhttp_redirect_listen = \"127.0.0.1:{}\"\n\n[access]\nallow = [\"127.0.0.2\"]\n",
            ports.http
        ),
    );
    let public = format!("https://localhost:{}", ports.tls);
    let server = Server::start_on(
        addr,
        config(dir.path(), &format!("public_url = {public:?}"), &tls),
    )
    .await;
    let r = wait_for(&server, Duration::from_secs(30), "HTTP-01 issuance", |r| {
        r.tls.issued >= 1 || r.tls.state == "error"
    })
    .await;
    assert_eq!(r.tls.state, "ok", "{r:?}");
    // Pebble's own account of it: it fetched the token over HTTP from the port-80 listener.
    let log = std::fs::read_to_string(pebble_dir.path().join("pebble.log"))?;
    assert!(
        log.contains(&format!(
            "validate w/ HTTP: http://localhost:{}/.well-known/acme-challenge/",
            ports.http
        )) && log.contains("set VALID"),
        "{log}"
    );
    assert!(!log.contains("w/ TLS-ALPN"), "{log}");

    // A client trusting only Pebble's root gets a valid chain, over HTTP/1.1 and HTTP/2, from
    // the allowed address; Pebble's address is refused there.
    let allowed = Some(ip("127.0.0.2"));
    for (h1_only, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let resp = https_client_from(&root, addr, allowed, h1_only)
            .get(server.url("https", "/health"))
            .send()
            .await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), version);
    }
    assert_eq!(
        fresh_get(addr, &root).await,
        Err("status 403".to_string()),
        "127.0.0.1 is not allowed"
    );

    // Port 80 (here ports.http) still redirects everything that is not a challenge.
    let plain = no_redirects(allowed);
    let http = format!("http://127.0.0.1:{}", ports.http);
    let resp = plain.get(format!("{http}/chatgpt/mcp?x=1")).send().await?;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some(format!("{public}/chatgpt/mcp?x=1").as_str())
    );
    assert!(
        resp.headers().get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );
    // A token that is not in progress is not found, not redirected, whoever asks.
    let resp = no_redirects(None)
        .get(format!("{http}/.well-known/acme-challenge/not-a-token"))
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    server.stop().await;
    pebble.stop().await;
    Ok(())
}

/// rustls-acme on its own doubles its wait after every failed order, to 2^16 s (18 hours), so a
/// CA or DNS fixed after a few failures went unnoticed for minutes to hours. Here the CA is down
/// for the first five orders (failing at the directory); with `retry_max_secs = 2` the next
/// order comes at most 2 s after it is back, where rustls-acme's own wait would be 32 s by
/// then. The order comes from a fresh ACME state, so this also shows the listeners answer
/// that state's challenge, TLS-ALPN-01 on the TLS port and HTTP-01 on the plain one, and
/// serve the certificate it got.
#[tokio::test]
async fn a_failed_acme_order_is_retried_within_the_capped_wait() -> TestResult {
    if pebble_missing() {
        return Ok(());
    }
    for http01 in [false, true] {
        capped_retry(http01).await?;
    }
    Ok(())
}

async fn capped_retry(http01: bool) -> TestResult {
    let mut later = PebbleLater::new().await;
    let (ports, addr) = (later.ports, later.ports.tls_addr());
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("acme-cache");
    let mut extra = "retry_min_secs = 1\nretry_max_secs = 2\n".to_string();
    let mut server_extra = String::new();
    if http01 {
        extra += &format!(
            "challenge = \"http-01\"\nhttp_redirect_listen = \"127.0.0.1:{}\"\n",
            ports.http
        );
        server_extra = format!("public_url = \"https://localhost:{}\"", ports.tls);
    }
    let tls = acme_tls(ports, later.dir.path(), &cache, &extra);
    let server = Server::start_on(addr, config(dir.path(), &server_extra, &tls)).await;
    let r = wait_for(
        &server,
        Duration::from_secs(30),
        "five failed orders, waiting for the next",
        |r| r.tls.errors >= 5 && r.tls.retry_at.is_some(),
    )
    .await;
    assert_eq!(r.tls.state, "error", "{r:?}");
    let retry_at = r.tls.retry_at.ok_or("no retry time while failing")?;
    let failed_at = r.tls.last_error_at.ok_or("no failure time")?;
    assert!((1..=2).contains(&(retry_at - failed_at)), "{r:?}");

    let pebble = later.start().await;
    let back = Instant::now();
    let r = wait_for(
        &server,
        Duration::from_secs(15),
        "issuance once the CA is back",
        |r| r.tls.issued >= 1,
    )
    .await;
    eprintln!(
        "http01 {http01}: issued {:?} after the CA came back",
        back.elapsed()
    );
    assert_eq!((r.tls.state, r.tls.retry_at), ("ok", None), "{r:?}");
    let root = pebble.root().await;
    fresh_get(addr, &root).await?;
    let log = std::fs::read_to_string(later.dir.path().join("pebble.log"))?;
    assert!(log.contains("set VALID"), "{log}");
    // Pebble logs its HTTP-01 requests (not its TLS-ALPN-01 handshakes).
    assert_eq!(log.contains("validate w/ HTTP"), http01, "{log}");
    server.stop().await;
    pebble.stop().await;
    Ok(())
}

/// An operator who has fixed what made the order fail (DNS, a firewall, the CA's address) runs
/// `systemctl reload`: SIGHUP orders again at once instead of after the wait (here 10 minutes).
/// A signal to the process, so the real binary.
#[tokio::test]
async fn sighup_retries_a_failed_acme_order_at_once() -> TestResult {
    if pebble_missing() {
        return Ok(());
    }
    let mut later = PebbleLater::new().await;
    let (ports, addr) = (later.ports, later.ports.tls_addr());
    let dir = tempfile::tempdir()?;
    let db = tiny_db(dir.path());
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"{addr}\"\ninsecure_no_auth = true\nstate_dir = {:?}\nshutdown_grace_secs = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[database]]\nname = \"main\"\nkind = \"sqlite\"\npath = {:?}\n\n[[scope]]\npath = \"/claude\"\ndatabase = \"main\"\n\n{}",
            dir.path().display().to_string(),
            db.display().to_string(),
            acme_tls(
                ports,
                later.dir.path(),
                &dir.path().join("acme-cache"),
                "retry_min_secs = 600\nretry_max_secs = 600\n"
            )
        ),
    )?;
    // `check-config` shows the schedule.
    let checked = tokio::process::Command::new(env!("CARGO_BIN_EXE_mssql-mcp"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .await?;
    let shown = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success()
            && shown.contains("a failed order retried after 600 s, doubling up to 600 s"),
        "{shown}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mssql-mcp"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(std::fs::File::create(dir.path().join("server.log"))?)
        .kill_on_drop(true)
        .spawn()?;
    let log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let wait_log = |what: &'static str, within: Duration| {
        let deadline = Instant::now() + within;
        async move {
            while !log().contains(what) {
                assert!(
                    Instant::now() < deadline,
                    "no `{what}` in the log:\n{}",
                    log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Pebble is not running yet: the first order fails at the directory.
    wait_log("ACME order failed", Duration::from_secs(20)).await;
    assert!(log().contains("retry_in_secs=600"), "{}", log());
    let pebble = later.start().await;
    let root = pebble.root().await;
    // Nothing orders by itself now: still no certificate a second later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        fresh_get(addr, &root).await.is_err(),
        "issued before SIGHUP"
    );

    let pid = child.id().ok_or("no pid")?;
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()?;
    wait_log(
        "SIGHUP: retrying the failed ACME order now",
        Duration::from_secs(10),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match fresh_get(addr, &root).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no certificate after SIGHUP: {e}\n{}",
                log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        log().contains("ACME: new certificate deployed"),
        "{}",
        log()
    );
    assert!(child.try_wait()?.is_none(), "still running");
    let _ = child.kill().await;
    pebble.stop().await;
    Ok(())
}

/// Accepts any server certificate (only to show the server still answers after an outage).
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn the_http_listener_only_redirects_to_the_public_url() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = common::free_port();
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        &format!("[tls]\nhttp_redirect_listen = \"127.0.0.1:{port}\"\n"),
    ))
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let url = format!("http://127.0.0.1:{port}/chatgpt/mcp?x=1");
    let deadline = Instant::now() + Duration::from_secs(5);
    let resp = loop {
        match client.get(&url).header("host", "evil.example").send().await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "redirect listener not up: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://mcp.example.com/chatgpt/mcp?x=1"),
        "built from public_url, never from Host"
    );
    // Without challenge = "http-01" the challenge path is redirected like any other, and a
    // forwarded scheme changes nothing here.
    let resp = client
        .get(format!(
            "http://127.0.0.1:{port}/.well-known/acme-challenge/abc"
        ))
        .header("x-forwarded-proto", "https")
        .send()
        .await?;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://mcp.example.com/.well-known/acme-challenge/abc")
    );
    // Both redirects are counted, apart from the main listener's requests.
    let metrics = client
        .get(server.url("http", "/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(
            r#"mssql_mcp_http_requests_total{method="GET",route="plain-http",status="308"} 2"#
        ),
        "{metrics}"
    );
    server.stop().await;
    Ok(())
}

/// A client that does not follow redirects, its sockets from `local`.
fn no_redirects(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(local)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Waits until the plain-HTTP listener on `port` answers (it starts after the main listener).
async fn plain_listener_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "HTTP listener on {port} not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `[tls]` with only the plain-HTTP listener on `port` (TLS off).
fn plain_listener(port: u16, limits: &str) -> String {
    format!("[tls]\nhttp_redirect_listen = \"127.0.0.1:{port}\"\n\n[limits]\n{limits}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_on_the_http_listener_does_not_block_a_redirect_and_is_cut() -> TestResult {
    let _load = LOAD.lock().await;
    let dir = tempfile::tempdir()?;
    let port = common::free_port();
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        &plain_listener(port, "header_read_timeout_secs = 3"),
    ))
    .await;
    plain_listener_up(port).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // 200 connections that send a request head one byte per second.
    let stop_at = Instant::now() + Duration::from_secs(6);
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return None;
            };
            let head =
                b"GET /chatgpt/mcp HTTP/1.1\r\nHost: mcp.example.com\r\nX-Slow: aaaaaaaaaaaaaaaa";
            let opened = Instant::now();
            for b in head.iter() {
                if Instant::now() > stop_at || s.write_all(&[*b]).await.is_err() {
                    break;
                }
                let mut probe = [0u8; 64];
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
                    _ => {}
                }
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = no_redirects(Some(ip("127.0.0.6")));
    let started = Instant::now();
    let resp = client
        .get(format!("http://127.0.0.1:{port}/chatgpt/mcp"))
        .send()
        .await?;
    let took = started.elapsed();
    assert_eq!(resp.status(), 308);
    assert!(took < Duration::from_millis(500), "redirect took {took:?}");
    let mut cut = 0;
    for t in slow {
        if let Some(after) = t.await? {
            assert!(after < Duration::from_secs(5), "cut after {after:?}");
            cut += 1;
        }
    }
    assert!(
        cut >= 190,
        "slow connections closed by the header timeout: {cut}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_flood_on_the_http_listener_gets_429_while_another_address_is_redirected() -> TestResult {
    let dir = tempfile::tempdir()?;
    let port = common::free_port();
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        &plain_listener(port, "per_ip_per_sec = 1\nper_ip_burst = 5"),
    ))
    .await;
    plain_listener_up(port).await;
    let url = format!("http://127.0.0.1:{port}/claude/mcp");
    let flooder = no_redirects(Some(ip("127.0.0.2")));
    let (mut redirected, mut limited, mut main_limited) = (0u64, 0u64, false);
    let started = Instant::now();
    for _ in 0..30 {
        let resp = flooder.get(&url).send().await?;
        match resp.status().as_u16() {
            308 => redirected += 1,
            429 => {
                limited += 1;
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                assert!(retry.is_some_and(|s| s >= 1), "429 carries Retry-After");
                assert_eq!(
                    resp.headers()
                        .get("x-content-type-options")
                        .and_then(|v| v.to_str().ok()),
                    Some("nosniff")
                );
                if limited == 1 {
                    // One budget per address across both listeners: the bucket just ran dry,
                    // so the main listener refuses this address too.
                    let main = flooder.get(server.url("http", "/health")).send().await?;
                    main_limited = main.status() == 429;
                }
            }
            s => panic!("unexpected status {s}"),
        }
    }
    // The burst of 5, plus one refill per second the loop took.
    let refills = started.elapsed().as_secs() + 1;
    assert!(
        (5..=5 + refills).contains(&redirected),
        "redirected {redirected} in {:?}",
        started.elapsed()
    );
    assert!(limited >= 25 - refills, "the rest was limited: {limited}");
    assert!(main_limited, "the main listener shares the per-IP bucket");
    let calm = no_redirects(Some(ip("127.0.0.3")));
    let resp = calm.get(&url).send().await?;
    assert_eq!(resp.status(), 308, "another address keeps its bucket");
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://mcp.example.com/claude/mcp")
    );
    assert!(resp.headers().get("strict-transport-security").is_none());
    assert!(server.state.edge().report().limited_ip > limited);
    server.stop().await;
    Ok(())
}

/// What rustls-acme's directory cache holds for `domains` at `directory`: a PKCS#8 key and a
/// chain signed by `ca`, valid from 2000 to the start of the year after next, so it is served
/// at once and already past the two thirds of its life at which a renewal is ordered. Written
/// under the name the cache looks for (SHA-256 of the domains, each followed by a NUL, and
/// the directory URL; base64url).
fn cache_due_certificate(cache: &Path, ca: &TestPki, domains: &[&str], directory: &str) {
    use base64::Engine;
    use sha2::Digest;
    let year = 1970
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / 31_556_952;
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(domains.iter().map(|d| d.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(i32::try_from(year + 2).expect("year"), 1, 1);
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
    let mut name = sha2::Sha256::new();
    for d in domains {
        name.update(d.as_bytes());
        name.update([0]);
    }
    name.update(directory.as_bytes());
    let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name.finalize());
    std::fs::create_dir_all(cache).expect("cache dir");
    std::fs::write(
        cache.join(format!("cached_cert_{name}")),
        format!("{}{}", key.serialize_pem(), cert.pem()),
    )
    .expect("write cached certificate");
}

/// The text of an ACME failure may carry the CA's account and order URLs and internal detail:
/// the public `/health` says only that TLS is in error; the admin listener's says why.
#[tokio::test]
async fn an_acme_error_is_shown_on_the_admin_listener_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("acme-cache");
    // Nothing listens on port 1: every order fails while connecting to the directory.
    let directory = "https://127.0.0.1:1/dir";
    let ca = TestPki::new("acme cache CA");
    cache_due_certificate(&cache, &ca, &["localhost"], directory);
    let tls = format!(
        "[tls]\nmode = \"acme\"\ndomains = [\"localhost\"]\ndirectory = {directory:?}\ncache_dir = {:?}\n",
        cache.display().to_string()
    );
    let server = Server::start(config(dir.path(), "", &tls)).await;
    let r = wait_for(&server, Duration::from_secs(30), "the ACME failure", |r| {
        r.tls.state == "error" && r.tls.loaded >= 1
    })
    .await;
    let error = r.tls.last_error.clone().ok_or("no error kept")?;
    assert!(!error.is_empty());

    let client = https_client(&ca.ca_der, server.addr);
    let resp = client.get(server.url("https", "/health")).send().await?;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await?;
    let health: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(health["status"], "ok", "{body}");
    assert_eq!(health["tls"]["mode"], "acme", "{body}");
    assert_eq!(health["tls"]["state"], "error", "{body}");
    assert!(
        health["tls"]["cert_expires_in_secs"]
            .as_i64()
            .is_some_and(|s| s > 0),
        "{body}"
    );
    assert!(
        !body.contains(&error)
            && !body.contains("last_error")
            && !body.contains("retry_at")
            && !body.contains(directory),
        "no error text on the public listener: {body}"
    );

    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let admin_addr = admin.local_addr()?;
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    let admin_task = tokio::spawn(mssql_mcp::oauth::admin::serve(
        server.state.clone(),
        admin,
        async move {
            let _ = admin_stopped.await;
        },
    ));
    let admin_health: serde_json::Value = http_client(None)
        .get(format!("http://{admin_addr}/health"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(admin_health["tls"]["state"], "error", "{admin_health}");
    let shown = admin_health["tls"]["last_error"]
        .as_str()
        .ok_or("no last_error on the admin listener")?;
    // The error kept may be a later retry's by now: the same failure, maybe other words.
    assert!(!shown.is_empty(), "{admin_health}");
    assert!(
        admin_health["tls"]["last_error_at"].is_i64(),
        "{admin_health}"
    );
    // The failed order is retried after the default first wait, 10 s.
    assert!(
        admin_health["tls"]["retry_at"]
            .as_i64()
            .zip(admin_health["tls"]["last_error_at"].as_i64())
            .is_some_and(|(retry, failed)| retry - failed == 10),
        "{admin_health}"
    );
    let _ = stop_admin.send(());
    let _ = admin_task.await;
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn on_the_http_listener_the_allowlist_guards_the_redirect_but_not_the_acme_challenge()
-> TestResult {
    let dir = tempfile::tempdir()?;
    let port = common::free_port();
    // ACME with HTTP-01 against a directory nobody serves: orders fail (and are retried), but
    // the challenge route is there, answering 404 for tokens not in progress.
    let tls = format!(
        "[tls]\nmode = \"acme\"\ndomains = [\"mcp.example.com\"]\ndirectory = \"https://127.0.0.1:1/dir\"\nchallenge = \"http-01\"\nhttp_redirect_listen = \"127.0.0.1:{port}\"\n\n[access]\nallow = [\"127.0.0.2\"]\n"
    );
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        &tls,
    ))
    .await;
    plain_listener_up(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let allowed = no_redirects(Some(ip("127.0.0.2")));
    let other = no_redirects(Some(ip("127.0.0.3")));

    let resp = other
        .get(format!("{base}/.well-known/acme-challenge/some-token"))
        .send()
        .await?;
    assert_eq!(resp.status(), 404, "answered by the challenge responder");
    assert_eq!(resp.text().await?, "no such ACME challenge in progress\n");

    let resp = other.get(format!("{base}/chatgpt/mcp")).send().await?;
    assert_eq!(resp.status(), 403, "the redirect is refused");
    assert!(resp.headers().get("location").is_none());
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["reason"], "client address not allowed");
    // Paths next to the challenge route are redirects, so refused too.
    for path in [
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/a/b",
    ] {
        let resp = other.get(format!("{base}{path}")).send().await?;
        assert_eq!(resp.status(), 403, "{path}");
    }

    let resp = allowed.get(format!("{base}/chatgpt/mcp")).send().await?;
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://mcp.example.com/chatgpt/mcp")
    );
    assert!(server.state.edge().report().denied >= 3);
    server.stop().await;

    // Without HTTP-01 the challenge path is an ordinary redirect, and the allowlist applies.
    let dir = tempfile::tempdir()?;
    let port = common::free_port();
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        &format!(
            "[tls]\nhttp_redirect_listen = \"127.0.0.1:{port}\"\n\n[access]\nallow = [\"127.0.0.2\"]\n"
        ),
    ))
    .await;
    plain_listener_up(port).await;
    let resp = other
        .get(format!(
            "http://127.0.0.1:{port}/.well-known/acme-challenge/some-token"
        ))
        .send()
        .await?;
    assert_eq!(resp.status(), 403);
    server.stop().await;
    Ok(())
}

/// One HTTP/2 (prior knowledge, no TLS) GET to `addr` with the request target `uri`, whose
/// authority hyper sends as `:authority` (and no `Host` header).
async fn h2_get(
    addr: SocketAddr,
    uri: &str,
) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(uri).body(String::new())?;
    Ok(sender.send_request(req).await?.status().as_u16())
}

/// HTTP/2 gets the same request head limit as HTTP/1.1 (431 past `limits.max_header_bytes`,
/// counted over the decoded header list) and tells clients how many requests one connection
/// may have in progress (`limits.max_streams_per_connection`), read here off the SETTINGS
/// frame the server sent, through the h2 crate's client.
#[tokio::test]
async fn http2_heads_and_streams_in_progress_are_bounded() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "",
        "[limits]\nmax_header_bytes = 16384\nmax_streams_per_connection = 7\n",
    ))
    .await;
    let tcp = TcpStream::connect(server.addr).await?;
    let (client, mut conn) = h2::client::handshake(tcp).await?;
    let mut client = client.ready().await?;
    let uri = format!("http://localhost:{}/health", server.addr.port());
    let mut get = |padding: usize| -> Result<h2::client::ResponseFuture, h2::Error> {
        let req = hyper::Request::get(&uri)
            .header("x-padding", "p".repeat(padding))
            .body(())
            .map_err(|_| h2::Error::from(h2::Reason::INTERNAL_ERROR))?;
        Ok(client.send_request(req, true)?.0)
    };
    let (small, large) = (get(8_000)?, get(20_000)?);
    let statuses = tokio::select! {
        r = async { Ok::<_, h2::Error>((small.await?.status(), large.await?.status())) } => r?,
        r = &mut conn => panic!("the connection ended first: {r:?}"),
    };
    assert_eq!(statuses.0, 200);
    assert_eq!(statuses.1, 431);
    // Settings arrive before any response, so they are in force by now.
    assert_eq!(conn.max_concurrent_send_streams(), 7);
    server.stop().await;

    // The defaults: 100 streams, and a 64 KiB head limit rather than h2's own 16 KiB.
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(dir.path(), "", "")).await;
    let tcp = TcpStream::connect(server.addr).await?;
    let (client, mut conn) = h2::client::handshake(tcp).await?;
    let mut client = client.ready().await?;
    let req = hyper::Request::get(format!("http://localhost:{}/health", server.addr.port()))
        .header("x-padding", "p".repeat(40_000))
        .body(())?;
    let (resp, _) = client.send_request(req, true)?;
    let status = tokio::select! {
        r = resp => r?.status(),
        r = &mut conn => panic!("the connection ended first: {r:?}"),
    };
    assert_eq!(status, 200);
    assert_eq!(conn.max_concurrent_send_streams(), 100);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn http2_requests_are_checked_by_their_authority() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        "",
    ))
    .await;
    let record = "/claude/records/main.items/1";
    let port = server.addr.port();
    for (authority, want) in [
        ("evil.example.com", 403),
        ("mcp.example.com.evil.example", 403),
        ("mcp.example.com", 200),
        (&*format!("localhost:{port}"), 200),
        (&*format!("127.0.0.1:{port}"), 200),
    ] {
        let status = h2_get(server.addr, &format!("http://{authority}{record}")).await?;
        assert_eq!(status, want, ":authority {authority}");
    }
    // An ordinary client speaking HTTP/2 to a name that resolves here (DNS rebinding).
    let rebound = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("evil.example.com", server.addr)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = rebound
        .get(format!("http://evil.example.com:{port}{record}"))
        .send()
        .await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 403);
    let resp = rebound
        .get(format!("http://localhost:{port}{record}"))
        .send()
        .await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_explicit_default_port_and_any_case_in_the_authority_name_the_public_host() -> TestResult
{
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        "",
    ))
    .await;
    let record = "/claude/records/main.items/1";
    let client = http_client(None);
    for (host, want) in [
        ("mcp.example.com:443", 200),
        ("MCP.Example.COM:443", 200),
        ("MCP.EXAMPLE.COM", 200),
        ("mcp.example.com:80", 403),
        ("mcp.example.com:8443", 403),
    ] {
        // HTTP/1.1: the Host header.
        let resp = client
            .get(server.url("http", record))
            .header("host", host)
            .send()
            .await?;
        assert_eq!(resp.status(), want, "Host {host}");
        // HTTP/2: the :authority pseudo-header.
        let status = h2_get(server.addr, &format!("http://{host}{record}")).await?;
        assert_eq!(status, want, ":authority {host}");
    }
    // The same for a browser's Origin.
    let resp = client
        .get(server.url("http", record))
        .header("origin", "https://MCP.example.com:443")
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(server.url("http", record))
        .header("origin", "http://mcp.example.com:443")
        .send()
        .await?;
    assert_eq!(resp.status(), 403, "another scheme is another origin");
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn behind_a_proxy_hsts_follows_forwarded_proto_from_trusted_proxies_only() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"\ntrusted_proxies = [\"127.0.0.4\"]",
        "",
    ))
    .await;
    let url = server.url("http", "/health");
    let proxy = http_client(Some(ip("127.0.0.4")));
    let direct = http_client(Some(ip("127.0.0.3")));
    async fn hsts(c: &reqwest::Client, url: &str, proto: Option<&str>) -> bool {
        let mut req = c.get(url);
        if let Some(p) = proto {
            req = req.header("x-forwarded-proto", p);
        }
        let resp = req.send().await.expect("response");
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("x-frame-options").is_some());
        resp.headers().get("strict-transport-security").is_some()
    }
    assert!(
        hsts(&proxy, &url, Some("https")).await,
        "trusted proxy, https"
    );
    assert!(
        !hsts(&proxy, &url, Some("http")).await,
        "trusted proxy, http"
    );
    assert!(
        hsts(&proxy, &url, None).await,
        "a trusted proxy that does not say: public_url decides"
    );
    assert!(
        !hsts(&direct, &url, Some("https")).await,
        "an untrusted peer's X-Forwarded-Proto is ignored; it came in plain HTTP"
    );
    assert!(!hsts(&direct, &url, None).await);
    server.stop().await;

    // Without trusted proxies nothing forwarded is believed and public_url decides.
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(
        dir.path(),
        "public_url = \"https://mcp.example.com\"",
        "",
    ))
    .await;
    let url = server.url("http", "/health");
    assert!(hsts(&direct, &url, Some("http")).await);
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn sse_streams_are_capped_per_address_and_freed_when_closed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(dir.path(), "", "[limits]\nsse_per_ip = 2\n")).await;
    let url = server.url("http", "/claude/sse");
    let a = http_client(Some(ip("127.0.0.7")));
    let b = http_client(Some(ip("127.0.0.8")));
    let open = |c: &reqwest::Client| c.get(&url).timeout(Duration::from_secs(30)).send();
    let s1 = open(&a).await?;
    let s2 = open(&a).await?;
    assert_eq!((s1.status().as_u16(), s2.status().as_u16()), (200, 200));
    let third = open(&a).await?;
    assert_eq!(third.status(), 429);
    assert!(third.headers().get("retry-after").is_some());
    assert_eq!(
        open(&b).await?.status(),
        200,
        "other addresses are not affected"
    );
    drop(s1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = open(&a).await?;
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s2);
    server.stop().await;
    Ok(())
}

/// A 2025-revision MCP session at `/claude/mcp` (authentication off): its `Mcp-Session-Id`.
async fn mcp_session(
    client: &reqwest::Client,
    base: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "edge-test", "version": "1"}}});
    let resp = client
        .post(format!("{base}/claude/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Mcp-Session-Id")?
        .to_string();
    Ok(sid)
}

/// `GET /mcp` with `Accept: */*` opens a stream as `text/event-stream` does, so it takes a
/// place under `limits.sse_per_ip` the same way and is refused past it.
#[tokio::test]
async fn mcp_get_streams_accepting_anything_are_capped_like_event_streams() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = Server::start(config(dir.path(), "", "[limits]\nsse_per_ip = 2\n")).await;
    let base = format!("http://127.0.0.1:{}", server.addr.port());
    let c = http_client(Some(ip("127.0.0.9")));
    for accept in ["*/*", "text/event-stream"] {
        let mut open = Vec::new();
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let sid = mcp_session(&c, &base).await?;
            let resp = c
                .get(format!("{base}/claude/mcp"))
                .header("accept", accept)
                .header("mcp-session-id", sid)
                .header("mcp-protocol-version", "2025-06-18")
                .timeout(Duration::from_secs(30))
                .send()
                .await?;
            statuses.push(resp.status().as_u16());
            open.push(resp);
        }
        assert_eq!(statuses, [200, 200, 429], "Accept: {accept}");
        drop(open);
        // The places come back once the server sees the streams close.
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.state.edge().report().streams_open > 0 {
            assert!(Instant::now() < deadline, "streams never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    server.stop().await;
    Ok(())
}

/// A scanner's flood of requests from an address the allowlist refuses: every one is refused
/// and counted, but the log gets the first of the episode, not a line each.
#[tokio::test]
async fn a_flood_of_allowlist_refusals_is_counted_in_full_but_logged_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = tiny_db(dir.path());
    let (mut child, addr) =
        spawn_binary_with(dir.path(), &db, &[], "[access]\nallow = [\"127.0.0.2\"]\n").await?;
    let refused = http_client(None);
    let admitted = http_client(Some(ip("127.0.0.2")));
    for _ in 0..200 {
        let r = refused.get(format!("http://{addr}/health")).send().await?;
        assert_eq!(r.status(), 403);
    }
    let metrics = admitted
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let denied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mssql_mcp_ip_denied_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no mssql_mcp_ip_denied_total in:\n{metrics}"))?;
    // `spawn_binary` polled `/health` from the refused address too until the server answered.
    assert!(denied >= 200, "{denied} refusals counted");
    let _ = child.kill().await;
    let log = std::fs::read_to_string(dir.path().join("server.log"))?;
    let lines = log
        .lines()
        .filter(|l| l.contains("denied by IP allowlist"))
        .count();
    assert_eq!(lines, 1, "one line for the episode:\n{log}");
    Ok(())
}

/// An ACME cache the service cannot write stops `serve` at once as a config error naming
/// `tls.cache_dir`: without it every start would order a new certificate.
#[tokio::test]
async fn an_acme_cache_dir_that_cannot_be_written_stops_serve_as_a_config_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = tiny_db(dir.path());
    let cfg = dir.path().join("config.toml");
    // Under a regular file, so not even root can make it.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"")?;
    let cache = blocker.join("acme");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ninsecure_no_auth = true\nstate_dir = {state:?}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[tls]\nmode = \"acme\"\ndomains = [\"localhost\"]\ncontact = [\"ops@example.com\"]\ndirectory = \"https://127.0.0.1:9/dir\"\ncache_dir = {cache:?}\n\n[[database]]\nname = \"main\"\nkind = \"sqlite\"\npath = {db:?}\n\n[[scope]]\npath = \"/claude\"\ndatabase = \"main\"\n",
            state = dir.path().display().to_string(),
            cache = cache.display().to_string(),
            db = db.display().to_string(),
        ),
    )?;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mssql-mcp"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("tls.cache_dir") && stderr.contains("cannot write there"),
        "{stderr}"
    );
    Ok(())
}

/// A TLS certificate file that is missing is the configuration's fault: `check-config` says so
/// and `serve` exits with 64 (not restarted by systemd) naming `tls.cert`, not with 69.
#[tokio::test]
async fn a_missing_tls_file_is_a_config_error_for_check_config_and_serve() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = tiny_db(dir.path());
    let cfg = dir.path().join("config.toml");
    let missing = dir.path().join("nope.pem");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ninsecure_no_auth = true\nstate_dir = {state:?}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[tls]\nmode = \"files\"\ncert = {missing:?}\nkey = {missing:?}\n\n[[database]]\nname = \"main\"\nkind = \"sqlite\"\npath = {db:?}\n\n[[scope]]\npath = \"/claude\"\ndatabase = \"main\"\n",
            state = dir.path().display().to_string(),
            missing = missing.display().to_string(),
            db = db.display().to_string(),
        ),
    )?;
    let bin = env!("CARGO_BIN_EXE_mssql-mcp");
    for command in ["check-config", "serve"] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(bin)
                .args([command, "--config"])
                .arg(&cfg)
                .kill_on_drop(true)
                .output(),
        )
        .await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{command}: {stderr}");
        assert!(
            stderr.contains("tls.cert") && stderr.contains("nope.pem"),
            "{command}: {stderr}"
        );
    }
    Ok(())
}
