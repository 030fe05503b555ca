//! Mutated requests: every malformed request to the MCP endpoint gets a clear error, never a
//! dropped connection, a 5xx or an internal error, and the server keeps serving.
//!
//! A corpus of valid 2026-07-28 requests (every tool with good arguments, the resource and
//! prompt methods, `ping`, a 2025 `initialize`, a notification, a batch) is mutated with a fixed
//! seed: JSON values replaced by values of other types (huge and negative numbers, long and
//! control-character strings, deep nesting), keys dropped or added, `jsonrpc` and `id` bent,
//! requests batched; headers dropped, wrong or inconsistent with the body; and some bodies then
//! cut or given bytes that are not UTF-8. Each goes to the real server over a socket. The
//! answer must be an HTTP status below 500 and, when it is JSON-RPC, a well-formed response
//! whose errors carry a code other than -32603 (internal error) and a message. Every 100
//! requests, and at the end, a valid call must still succeed. `TEST_SEED=n` explores other
//! mutations; `MUTATED_TRACE=1 … -- --nocapture` prints each answer.
//!
//! The same for 2025 clients on sessions, with the session header bent as well, and for the
//! 2024-11-05 HTTP+SSE transport, whose answers arrive on the stream.
//!
//! Seen to fail (session 24) with a panic planted where a request's non-integer `id` is
//! refused: 34 stateless requests and 13 SSE messages got no answer.
//!
//! Record pages too (`GET {scope}/records/{id}`, written by hand so that the path arrives as
//! mutated), for a browser and for a program. Its first run found that a browser opening
//! `{scope}/records/` (no id) got the JSON 404 of an unknown route instead of a page. Seen to
//! fail (session 25) with the error page's escaping removed: 3 pages showed spliced markup.

use serde_json::{Value, json};

use crate::support::*;

/// Valid requests: `(scope, method, params)`.
fn corpus() -> Vec<(&'static str, &'static str, Value)> {
    let call = |name: &str, args: Value| json!({"name": name, "arguments": args});
    vec![
        ("/claude", "tools/list", json!({})),
        ("/claude", "tools/call", call("list_tables", json!({}))),
        (
            "/claude",
            "tools/call",
            call("describe_table", json!({"table": "customers"})),
        ),
        (
            "/claude",
            "tools/call",
            call("get_table_sample", json!({"table": "orders", "limit": 2})),
        ),
        (
            "/claude",
            "tools/call",
            call(
                "execute_sql",
                json!({"sql": "SELECT customer_id, first_name FROM customers WHERE customer_id < 4", "page_size": 2}),
            ),
        ),
        (
            "/chatgpt",
            "tools/call",
            call("search", json!({"query": "late deliveries"})),
        ),
        (
            "/chatgpt",
            "tools/call",
            call("fetch", json!({"id": "main.customers/1"})),
        ),
        ("/claude", "resources/list", json!({})),
        (
            "/claude",
            "resources/read",
            json!({"uri": "db://claude/main.orders"}),
        ),
        ("/claude", "prompts/list", json!({})),
        (
            "/claude",
            "prompts/get",
            json!({"name": "explore_database", "arguments": {"topic": "late deliveries"}}),
        ),
        ("/claude", "ping", json!({})),
    ]
}

/// Values of every JSON type and several sizes, to put where something else belongs.
fn odd_value(rng: &mut fastrand::Rng) -> Value {
    // Only the value drawn is built (one is 70,000 characters long).
    match rng.usize(..18) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(1e308),
        7 => json!(0.5),
        8 => json!(""),
        9 => json!("x".repeat(70_000)),
        10 => json!("\u{0}\u{1b}[31m\u{202e}é😀"),
        11 => json!("../../etc/passwd"),
        12 => json!("SELECT 1; DROP TABLE customers"),
        13 => json!([]),
        14 => json!({}),
        15 => json!([1, "a", null]),
        16 => json!({"name": 5}),
        _ => (0..60).fold(json!(1), |v, _| json!([v])),
    }
}

/// Every path into `v` that names an object key or an array index.
fn paths(v: &Value, at: &mut Vec<Vec<PathPart>>, prefix: &mut Vec<PathPart>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                prefix.push(PathPart::Key(k.clone()));
                at.push(prefix.clone());
                paths(child, at, prefix);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(PathPart::Index(i));
                at.push(prefix.clone());
                paths(child, at, prefix);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathPart {
    Key(String),
    Index(usize),
}

fn node<'v>(v: &'v mut Value, path: &[PathPart]) -> Option<&'v mut Value> {
    let mut at = v;
    for p in path {
        at = match p {
            PathPart::Key(k) => at.get_mut(k.as_str())?,
            PathPart::Index(i) => at.get_mut(*i)?,
        };
    }
    Some(at)
}

/// One structural change to a request body.
fn mutate(rng: &mut fastrand::Rng, body: &mut Value) {
    let mut all = Vec::new();
    paths(body, &mut all, &mut Vec::new());
    // Half the time, inside a tool's or prompt's arguments, where most validation is.
    let in_arguments: Vec<_> = all
        .iter()
        .filter(|p| matches!(p.get(1), Some(PathPart::Key(k)) if k == "arguments"))
        .cloned()
        .collect();
    if !in_arguments.is_empty() && rng.bool() {
        all = in_arguments;
    }
    match rng.u32(..10) {
        0..=3 if !all.is_empty() => {
            let path = all[rng.usize(..all.len())].clone();
            if let Some(n) = node(body, &path) {
                *n = odd_value(rng);
            }
        }
        4..=5 if !all.is_empty() => {
            let path = all[rng.usize(..all.len())].clone();
            if let (Some(PathPart::Key(k)), parent) = (path.last(), &path[..path.len() - 1])
                && let Some(Value::Object(o)) = node(body, parent)
            {
                o.remove(k);
            }
        }
        6 => {
            let key = [
                "extra",
                "params",
                "id",
                "method",
                "_meta",
                "arguments",
                "cursor",
            ][rng.usize(..7)];
            let value = odd_value(rng);
            if let Some(o) = body.as_object_mut() {
                o.insert(key.to_string(), value);
            }
        }
        7 if body.is_object() => {
            body["jsonrpc"] = json!(["1.0", "2", "", "2.0 "][rng.usize(..4)]);
        }
        8 if body.is_object() => {
            body["id"] = odd_value(rng);
        }
        _ => {
            let one = body.clone();
            *body = json!([one.clone(), one]);
        }
    }
}

/// What the server made of mutated requests, and what it should not have done.
#[derive(Default)]
struct Tally {
    refused: usize,
    rpc_errors: usize,
    results: usize,
    failures: Vec<String>,
}

impl Tally {
    /// POSTs `bytes` to `path` and checks the answer: a status below 500, and every JSON-RPC
    /// message in it (a JSON body, or the `data` of each server-sent event) well-formed, with
    /// no internal error.
    async fn send(&mut self, srv: &Server, path: &str, headers: &[(&str, String)], bytes: Vec<u8>) {
        let sent = String::from_utf8_lossy(&bytes)
            .chars()
            .take(300)
            .collect::<String>();
        let mut req = srv.client.post(srv.url(path)).body(bytes);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.failures
                    .push(format!("{sent}\n    {headers:?}\n    no answer: {e}"));
                return;
            }
        };
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                self.failures.push(format!("{sent}\n    body cut off: {e}"));
                return;
            }
        };
        if std::env::var_os("MUTATED_TRACE").is_some() {
            eprintln!("{status} {}", text.chars().take(100).collect::<String>());
        }
        if status >= 500 {
            self.failures
                .push(format!("{sent}\n    {headers:?}\n    {status}: {text}"));
            return;
        }
        if status >= 400 {
            self.refused += 1;
        }
        let bodies: Vec<String> = if content_type.starts_with("application/json") {
            vec![text.clone()]
        } else if content_type.starts_with("text/event-stream") {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        for body in bodies {
            let answer: Value = match serde_json::from_str(&body) {
                Ok(v) => v,
                Err(e) => {
                    self.failures
                        .push(format!("{sent}\n    not JSON ({e}): {body}"));
                    continue;
                }
            };
            let responses = match &answer {
                Value::Array(a) => a.clone(),
                // An HTTP error before JSON-RPC (an edge or OAuth-style error object).
                Value::Object(o) if status >= 400 && !o.contains_key("jsonrpc") => continue,
                one => vec![one.clone()],
            };
            for r in responses {
                self.check_message(&sent, &r);
            }
        }
    }

    /// One JSON-RPC response: well-formed (a result or an error with a code and a message),
    /// and not an internal error.
    fn check_message(&mut self, sent: &str, r: &Value) {
        let well_formed = r["jsonrpc"] == "2.0"
            && (r.get("result").is_some()
                ^ (r["error"]["code"].is_i64() && r["error"]["message"].is_string()));
        if !well_formed {
            self.failures
                .push(format!("{sent}\n    not a JSON-RPC response: {r}"));
        } else if r["error"]["code"] == -32603 {
            self.failures
                .push(format!("{sent}\n    internal error: {r}"));
        } else if r.get("error").is_some() {
            self.rpc_errors += 1;
        } else {
            self.results += 1;
        }
    }

    fn assert_clean(&self, requests: usize) {
        let Tally {
            refused,
            rpc_errors,
            results,
            failures,
        } = self;
        eprintln!(
            "{requests} mutated requests: {refused} refused by HTTP status, {rpc_errors} \
             JSON-RPC errors, {results} results"
        );
        assert_none(
            failures,
            &format!("of {requests} mutated requests were not answered cleanly"),
        );
        // Not vacuous: the mutations reach every kind of answer.
        assert!(
            *refused >= requests / 20 && *rpc_errors >= requests / 20 && *results >= requests / 20,
            "refused {refused}, JSON-RPC errors {rpc_errors}, results {results}"
        );
    }
}

/// The demo server, with the per-address and per-client limits out of the way (every request
/// here comes from one address; the limits have tests of their own).
async fn unlimited_demo() -> Server {
    Server::demo_with(|c| {
        c.limits.per_ip_per_sec = 1_000_000;
        c.limits.per_ip_burst = 1_000_000;
        c.limits.client_per_min = 1_000_000;
        c.limits.client_burst = 1_000_000;
    })
    .await
}

#[tokio::test]
async fn mutated_requests_get_clear_errors_and_the_server_keeps_serving() {
    const REQUESTS: usize = 1_500;
    let srv = unlimited_demo().await;
    let corpus = corpus();
    let mut rng = fastrand::Rng::with_seed(seed(0x6d75_7461));
    let mut tally = Tally::default();
    for i in 0..REQUESTS {
        if i % 100 == 0 {
            let alive = srv.call_tool("/claude", "list_tables", json!({})).await;
            assert_eq!(alive["isError"], false, "after {i} requests: {alive}");
        }
        let (scope, method, params) = &corpus[rng.usize(..corpus.len())];
        let mut params = params.clone();
        params["_meta"] = modern_meta();
        let mut body = rpc(method, params.clone());
        for _ in 0..rng.usize(1..=3) {
            mutate(&mut rng, &mut body);
        }
        let mut bytes = serde_json::to_vec(&body).expect("json");
        match rng.u32(..10) {
            0 if !bytes.is_empty() => bytes.truncate(rng.usize(..bytes.len())),
            1 if !bytes.is_empty() => {
                let at = rng.usize(..bytes.len());
                bytes[at] = [0xff, 0xc3, 0x00, b'"', b'}'][rng.usize(..5)];
            }
            _ => {}
        }
        // Headers as a client sends them, then maybe dropped or bent.
        let name = mcp_name(method, &params).unwrap_or_default();
        let mut headers: Vec<(&str, String)> = vec![
            ("content-type", "application/json".into()),
            ("accept", "application/json, text/event-stream".into()),
            ("mcp-protocol-version", MODERN.into()),
            ("mcp-method", method.to_string()),
        ];
        if !name.is_empty() {
            headers.push(("mcp-name", name));
        }
        if rng.u32(..4) == 0 {
            let k = rng.usize(..headers.len());
            match rng.u32(..3) {
                0 => {
                    headers.remove(k);
                }
                1 => {
                    headers[k].1 = [
                        "",
                        "2024-01-01",
                        "text/plain",
                        "tools/call",
                        "x".repeat(5_000).as_str(),
                    ][rng.usize(..5)]
                    .to_string()
                }
                _ => headers[k].1.push_str(", nonsense"),
            }
        }
        tally
            .send(&srv, &format!("{scope}/mcp"), &headers, bytes)
            .await;
    }
    let alive = srv.call_tool("/claude", "list_tables", json!({})).await;
    assert_eq!(alive["isError"], false, "at the end: {alive}");
    tally.assert_clean(REQUESTS);
}

/// The same for 2025 clients, whose requests ride a session (`Mcp-Session-Id`): bodies as
/// above without `_meta`, `initialize` and notifications among them, and the session header
/// dropped, swapped for another session's, made up or cut short. Both sessions still work at
/// the end.
#[tokio::test]
async fn mutated_session_requests_get_clear_errors_and_sessions_keep_working() {
    const REQUESTS: usize = 800;
    let srv = unlimited_demo().await;
    let sessions = [
        Legacy::connect(&srv, "/claude", V0618).await,
        Legacy::connect(&srv, "/claude", V1125).await,
    ];
    let mut corpus: Vec<(&str, Value)> = corpus()
        .into_iter()
        .filter(|(scope, _, _)| *scope == "/claude")
        .map(|(_, method, params)| (method, params))
        .collect();
    corpus.push(("initialize", initialize(V1125)["params"].clone()));
    corpus.push(("notifications/initialized", json!({})));
    corpus.push((
        "notifications/cancelled",
        json!({"requestId": 1, "reason": "x"}),
    ));
    let mut rng = fastrand::Rng::with_seed(seed(0x7365_7373));
    let mut tally = Tally::default();
    for _ in 0..REQUESTS {
        let session = &sessions[rng.usize(..2)];
        let (method, params) = &corpus[rng.usize(..corpus.len())];
        let mut body = if method.starts_with("notifications/") {
            json!({"jsonrpc": "2.0", "method": method, "params": params})
        } else {
            rpc(method, params.clone())
        };
        for _ in 0..rng.usize(1..=3) {
            mutate(&mut rng, &mut body);
        }
        let mut headers: Vec<(&str, String)> = vec![
            ("content-type", "application/json".into()),
            ("accept", "application/json, text/event-stream".into()),
            ("mcp-session-id", session.session.clone()),
            ("mcp-protocol-version", session.version.clone()),
        ];
        match rng.u32(..6) {
            0 => headers.retain(|(k, _)| *k != "mcp-session-id"),
            1 => {
                let other = sessions[0].session == session.session;
                headers[2].1 = sessions[usize::from(other)].session.clone();
            }
            2 => headers[2].1 = mssql_mcp::oauth::random_token(""),
            3 => {
                let keep = rng.usize(..headers[2].1.len());
                headers[2].1.truncate(keep);
            }
            4 => {
                headers[3].1 =
                    [V0618, V1125, MODERN, "2024-11-05", "1999-01-01"][rng.usize(..5)].into()
            }
            _ => {}
        }
        let bytes = serde_json::to_vec(&body).expect("json");
        tally.send(&srv, "/claude/mcp", &headers, bytes).await;
    }
    for s in &sessions {
        let alive = s.call_tool("list_tables", json!({})).await;
        assert_eq!(
            alive["isError"], false,
            "session {} at the end: {alive}",
            s.version
        );
    }
    tally.assert_clean(REQUESTS);
}

/// Answers on the stream up to the one for `ping-{n}`, each checked as a JSON-RPC response.
async fn until_ping(events: &mut SseReader, n: u64, sent: &str, tally: &mut Tally) {
    loop {
        let Some(ev) = events.next_event(std::time::Duration::from_secs(10)).await else {
            tally
                .failures
                .push(format!("{sent}\n    the stream went quiet before ping {n}"));
            return;
        };
        if ev.event.as_deref() != Some("message") {
            continue;
        }
        let Ok(msg) = serde_json::from_str::<Value>(&ev.data) else {
            tally
                .failures
                .push(format!("{sent}\n    not JSON on the stream: {}", ev.data));
            continue;
        };
        if msg["id"] == json!(format!("ping-{n}")) {
            return;
        }
        let messages = match msg {
            Value::Array(a) => a,
            one => vec![one],
        };
        for m in &messages {
            tally.check_message(sent, m);
        }
    }
}

/// The 2024-11-05 HTTP+SSE transport: mutated messages POSTed to the stream's message URL.
/// Each POST must be answered (202, or a clear refusal), and whatever the stream then carries
/// up to the answer of a `ping` sent after it must be well-formed JSON-RPC with no internal
/// error. The stream stays open and the session keeps working throughout.
#[tokio::test]
async fn mutated_messages_on_the_sse_transport_get_clear_errors_on_the_stream() {
    const REQUESTS: usize = 400;
    let srv = unlimited_demo().await;
    let resp = open_stream(
        &srv.client,
        &srv.url("/claude/sse"),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = SseReader::new(resp);
    let endpoint = events
        .next_event(std::time::Duration::from_secs(5))
        .await
        .expect("an endpoint event")
        .data;
    let mut tally = Tally::default();
    let headers: Vec<(&str, String)> = vec![("content-type", "application/json".into())];
    let post = |v: &Value| serde_json::to_vec(v).expect("json");
    let ping = |n: u64| json!({"jsonrpc": "2.0", "id": format!("ping-{n}"), "method": "ping"});
    tally
        .send(&srv, &endpoint, &headers, post(&initialize(V0618)))
        .await;
    tally.send(&srv, &endpoint, &headers, post(&ping(0))).await;
    until_ping(&mut events, 0, "initialize", &mut tally).await;
    let corpus: Vec<(&str, Value)> = corpus()
        .into_iter()
        .filter(|(scope, _, _)| *scope == "/claude")
        .map(|(_, method, params)| (method, params))
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed(0x7373_6531));
    for n in 1..=REQUESTS as u64 {
        let (method, params) = &corpus[rng.usize(..corpus.len())];
        let mut body = rpc(method, params.clone());
        for _ in 0..rng.usize(1..=3) {
            mutate(&mut rng, &mut body);
        }
        let mut bytes = post(&body);
        if rng.u32(..8) == 0 && !bytes.is_empty() {
            bytes.truncate(rng.usize(..bytes.len()));
        }
        let sent = String::from_utf8_lossy(&bytes)
            .chars()
            .take(300)
            .collect::<String>();
        tally.send(&srv, &endpoint, &headers, bytes).await;
        tally.send(&srv, &endpoint, &headers, post(&ping(n))).await;
        until_ping(&mut events, n, &sent, &mut tally).await;
    }
    tally.assert_clean(REQUESTS);
}

/// One `GET` written by hand, so that the path reaches the server exactly as mutated (an HTTP
/// client would resolve its dot segments and escape its bytes): status, content type, body.
async fn raw_get(
    addr: std::net::SocketAddr,
    path: &[u8],
    accept: Option<&str>,
) -> Result<(u16, String, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path);
    req.extend_from_slice(format!(" HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n").as_bytes());
    if let Some(a) = accept {
        req.extend_from_slice(format!("Accept: {a}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&req).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), exchange)
        .await
        .map_err(|_| "no answer within 20 s".to_string())?
        .map_err(|e| format!("connection failed: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete answer: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let mut body = body.to_string();
    if header("transfer-encoding").as_deref() == Some("chunked") {
        let mut decoded = String::new();
        let mut rest = body.as_str();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| format!("chunk: {e}"))?;
            if n == 0 {
                break;
            }
            decoded.push_str(after.get(..n).ok_or("a chunk cut short")?);
            rest = after.get(n + 2..).unwrap_or_default();
        }
        body = decoded;
    }
    Ok((status, header("content-type").unwrap_or_default(), body))
}

/// Mutated record page requests (`GET {scope}/records/{id}`), from ids the server hands out:
/// pieces of percent-encoding, dot segments, markup and odd values spliced in, cut off or
/// repeated, for a browser and for a program. Every answer must come, under 500; a page is
/// HTML that never shows the spliced markup unescaped; a program gets JSON (the record, or an
/// `error`); and known records still load afterwards. Fixed seed (`TEST_SEED=n` explores
/// others). Seen to fail with the page's escaping of the id removed.
#[tokio::test]
async fn mutated_record_requests_get_clear_answers_and_never_reflect_markup() {
    const REQUESTS: usize = 1_200;
    const MARKUP: &str = "<mark7>\"'";
    let srv = unlimited_demo().await;
    // Ids as handed out: rows, tables and a cached query row.
    let hits = srv
        .call_tool("/chatgpt", "search", json!({"query": "customers"}))
        .await;
    let mut ids: Vec<String> = serde_json::from_str::<Value>(tool_text(&hits))
        .ok()
        .and_then(|v| v["results"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let query = srv
        .call_tool(
            "/chatgpt",
            "search",
            json!({"query": "SELECT city FROM customers"}),
        )
        .await;
    ids.extend(
        serde_json::from_str::<Value>(tool_text(&query))
            .ok()
            .and_then(|v| v["results"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string)),
    );
    assert!(ids.len() >= 4, "{hits}\n{query}");
    let pieces: Vec<String> = vec![
        "%00".into(),
        "%ff".into(),
        "%2F".into(),
        "%2e%2e".into(),
        "..".into(),
        "/".into(),
        "//".into(),
        "%".into(),
        "%zz".into(),
        "é".into(),
        " ".into(),
        "?x=1".into(),
        "#f".into(),
        "-1".into(),
        "99999999999999999999".into(),
        "1.5".into(),
        "'; DROP TABLE customers; --".into(),
        url::form_urlencoded::byte_serialize(MARKUP.as_bytes()).collect(),
        MARKUP.into(),
        "x".repeat(5_000),
    ];
    let mut rng = fastrand::Rng::with_seed(seed(0x7265_636f));
    let (mut pages, mut json_answers, mut found, mut http_refused) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for _ in 0..REQUESTS {
        let mut id = ids[rng.usize(..ids.len())].clone().into_bytes();
        // Now and then an id as it was handed out.
        for _ in 0..rng.usize(0..=3) {
            match rng.u32(..4) {
                0 if !id.is_empty() => id.truncate(rng.usize(..id.len())),
                1 => {
                    let again = id.clone();
                    id.extend_from_slice(b"/");
                    id.extend_from_slice(&again);
                }
                _ => {
                    let at = rng.usize(..=id.len());
                    let piece = pieces[rng.usize(..pieces.len())].as_bytes();
                    id.splice(at..at, piece.iter().copied());
                }
            }
        }
        let scope = ["/chatgpt", "/claude"][rng.usize(..2)];
        let mut path = format!("{scope}/records/").into_bytes();
        path.extend_from_slice(&id);
        let accept = [
            Some("text/html"),
            Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
            Some("application/json"),
            Some("*/*"),
            None,
        ][rng.usize(..5)];
        let shown: String = String::from_utf8_lossy(&path).chars().take(200).collect();
        let what = format!("{shown} ({accept:?})");
        // Bytes a request target should not hold (RFC 3986): the HTTP layer may refuse the
        // request line itself, with an empty 400 (hyper lets some through, such as UTF-8).
        let odd_target = path
            .iter()
            .any(|&b| !(b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)));
        let (status, content_type, body) = match raw_get(srv.addr, &path, accept).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                continue;
            }
        };
        let page = accept.is_some_and(|a| a.contains("text/html"));
        if status >= 500 {
            failures.push(format!("{what}: {status}: {body}"));
        } else if odd_target && status == 400 && content_type.is_empty() && body.is_empty() {
            http_refused += 1;
        } else if page {
            if !content_type.starts_with("text/html") {
                failures.push(format!("{what}: a page as {content_type:?}: {body}"));
            } else if body.contains("<mark7>") {
                failures.push(format!("{what}: markup shown unescaped: {body}"));
            } else {
                pages += 1;
            }
        } else {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status == 200 && v["id"].is_string() {
                found += 1;
                json_answers += 1;
            } else if status >= 400 && v["error"].as_str().is_some_and(|e| !e.is_empty()) {
                json_answers += 1;
            } else {
                failures.push(format!("{what}: {status} {content_type:?}: {body}"));
            }
        }
    }
    // Known records still load.
    for id in &ids {
        let (status, _, body) = raw_get(
            srv.addr,
            format!("/chatgpt/records/{id}").as_bytes(),
            Some("application/json"),
        )
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(status, 200, "{id}: {body}");
    }
    eprintln!(
        "{REQUESTS} mutated record requests: {pages} pages, {json_answers} JSON answers \
         ({found} records found), {http_refused} request lines refused by HTTP"
    );
    assert_none(
        &failures,
        &format!("of {REQUESTS} mutated record requests were not answered cleanly"),
    );
    assert!(
        pages >= REQUESTS / 5 && json_answers >= REQUESTS / 5 && found >= 10,
        "pages {pages}, JSON {json_answers}, found {found}"
    );
    srv.stop().await;
}
