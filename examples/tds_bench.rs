//! Throughput through the server against a TDS peer, beside a plain tiberius client issuing
//! the same SQL on the same peer in the same run; the plain client sending what the server
//! sends for that SQL (the read-only batch), which tells the peer's share of the difference
//! from our process's share; and that batch behind a bare HTTP server, the floor of any HTTP
//! front on this machine.
//!
//! ```sh
//! cargo run --release --example tds_bench -- [--secs 5] [--warmup 1] [--rounds 2] [--conc 1,4,32]
//! ```
//!
//! Starts `pysqlbridge` (found like the tests find it: `$PYSQLBRIDGE_PYTHON` or
//! `.ci/venv/bin/python`) on a free loopback port with a generated dataset, and the real server
//! in this process (`app::build_state` + `app::run` on `127.0.0.1:0`, `pool_size = 4`). Then,
//! for each workload and each concurrency (`--conc`, by default 1, 4 and 32: the issue's
//! workloads are W1 at 1 and 32 connections and W2 at 32, and 4 is the pool's size), it runs
//! four arms for `--secs` seconds each (after `--warmup` seconds of the same load), rotating
//! which goes first over `--rounds` rounds, and prints a markdown table: the ratios of the
//! totals, the median (and range) of the per-round ratios, each pairing runs of the same
//! round, and from four rounds on a 95% bootstrap interval over the rounds. `--secs` and
//! `--warmup` take fractions: on a host whose speed drifts, many short rounds (`--secs 0.5
//! --warmup 0.1 --rounds 60`) spread the drift over every arm.
//!
//! - **W1**: point lookup by key, `SELECT Id, Name, Email, City FROM Customers WHERE Id = N`.
//! - **W2**: a 100-row result, `SELECT TOP 100 Id, CustomerId, ProductId, Quantity, Status,
//!   OrderDate FROM Orders WHERE Id > N ORDER BY Id`.
//!
//! Server side: a stateless 2026-07-28 MCP `tools/call` of `execute_sql` over HTTP/1.1
//! keep-alive (one connection per worker; the client is `loadgen`'s minimal HTTP/1.1
//! connection, [`RawHttp`], so the load generator costs as little as wrk would; `--client
//! reqwest` uses reqwest), so each request pays HTTP, JSON-RPC, the SQL guard,
//! the pool, the read-only batch around the query (`BEGIN TRANSACTION; … ROLLBACK`),
//! value decoding and the JSON result. Plain side: `tiberius::Client::simple_query` with the
//! same SQL text on one connection per worker, rows collected, nothing else. Plain + read-only
//! batch: connections of their own, set up once with the server's session settings and row
//! cap (`mssql::session_setup`, `SET ROWCOUNT`), each query sent as the server sends it
//! (`mssql::adhoc_batch`: `BEGIN TRANSACTION; <sql> ;ROLLBACK TRANSACTION;`). Bare HTTP hop
//! ([`start_hop`]): the same load generator posting the SQL to a hyper HTTP/1.1 server with
//! no routing, middleware, JSON, guard, audit or metrics, which runs the batch on one of four
//! connections set up like the server's and answers with the row count. Server minus batch is
//! what our process adds; hop minus batch is what any HTTP front adds; batch minus plain is
//! what the required transaction wrapper costs the peer. Every response is checked (status,
//! no JSON-RPC error, no `isError`, the row count); any failure stops the run.
//!
//! The peer is the bottleneck on purpose: the question is whether the server adds one. Its
//! accept backlog is 5, so connections are opened one at a time and the pool is small.
//!
//! `--pin` puts the peer on CPU 0 and this process (server, plain client, load generator) on
//! CPU 1 with `taskset`, as if the database ran on a host of its own; without it the two share
//! both CPUs with each other and with whatever else the machine runs. The runtime has tokio's
//! default number of worker threads, as the binary does (one per CPU it may use: one under
//! `--pin`); `--workers N` sets it.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The allocator the `mssql-mcp` binary runs with (`src/main.rs`), so the server side is
/// measured as it is deployed; the plain client allocates little either way.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "loadgen.rs"]
#[allow(dead_code)]
mod loadgen;

const CUSTOMERS: i64 = 500;
const ORDERS: i64 = 1_000;
const POOL: u32 = 4;
/// The server's row cap for a first page with the default `max_rows` (500): `offset + limit + 1`.
const ROW_CAP: u32 = 501;
/// The server's default query timeout, which sets the session's `LOCK_TIMEOUT`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    W1,
    W2,
}

impl Workload {
    /// The statement for the `i`-th request of worker `w` (the same sequence on both sides).
    fn sql(self, w: usize, i: u64) -> String {
        let mix = (w as u64).wrapping_mul(7_919) ^ i.wrapping_mul(104_729);
        match self {
            Workload::W1 => format!(
                "SELECT Id, Name, Email, City FROM Customers WHERE Id = {}",
                mix % CUSTOMERS as u64 + 1
            ),
            Workload::W2 => format!(
                "SELECT TOP 100 Id, CustomerId, ProductId, Quantity, Status, OrderDate FROM Orders WHERE Id > {} ORDER BY Id",
                mix % (ORDERS as u64 - 100)
            ),
        }
    }

    fn rows(self) -> usize {
        match self {
            Workload::W1 => 1,
            Workload::W2 => 100,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Workload::W1 => "W1 point lookup",
            Workload::W2 => "W2 100 rows",
        }
    }
}

/// The four arms; the discriminant indexes per-arm arrays.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    /// The bare statement on a plain tiberius connection.
    Plain = 0,
    /// The plain client sending what the server sends the peer for one `execute_sql` (see
    /// [`batch_client`] and [`run_plain`]).
    Batch = 1,
    /// The same batch behind the thinnest HTTP server we could write (see [`start_hop`]): what
    /// any HTTP front costs before it does anything of its own.
    Hop = 2,
    /// `execute_sql` through the server.
    Server = 3,
}

impl Side {
    /// The arms in the order round `round` runs them: rotated, so that no arm always runs
    /// first (or last) after a change of workload.
    fn order(round: u32) -> [Side; 4] {
        let mut arms = [Side::Plain, Side::Server, Side::Batch, Side::Hop];
        arms.rotate_left(round as usize % 4);
        arms
    }
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// What one measured run achieved.
#[derive(Default, Clone)]
struct Tally {
    requests: u64,
    elapsed: Duration,
    /// Latencies in microseconds.
    latencies: Vec<u32>,
    /// CPU time of the peer and of this process (server or plain client, plus the load
    /// generator) during the measured runs.
    peer_cpu: Duration,
    own_cpu: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.peer_cpu += other.peer_cpu;
        self.own_cpu += other.own_cpu;
    }

    /// CPU microseconds per request.
    fn per_request(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / (self.requests.max(1) as f64)
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }
}

type Tds = tiberius::Client<Compat<TcpStream>>;

struct Args {
    /// Seconds per measured run and per warm-up (`--secs 0.5`): short runs over many rounds
    /// interleave the arms finely, so a drift in the host's speed lands on all of them.
    secs: Duration,
    warmup: Duration,
    rounds: u32,
    /// Peer on CPU 0, this process on CPU 1 (see [`pin`]).
    pin: bool,
    /// Only this workload / concurrency / arm (`--only w1x1:server`), for profiling one of
    /// them; the ratios involving the arms left out are then meaningless.
    only: Option<String>,
    /// The server arm's HTTP client: `raw` (default), a minimal HTTP/1.1 keep-alive client
    /// over a `TcpStream`, or `reqwest`.
    raw_client: bool,
    /// Busy-wait this long after each response on the plain + batch arm (`--batch-delay-us`):
    /// models a client that adds this much latency, without the wake-ups of a real hop.
    batch_delay: Duration,
    /// Concurrencies to run (`--conc 1,4,32`): the issue's workloads are W1 at 1 and 32
    /// connections and W2 at 32; 4 is the server's pool size.
    conc: Vec<usize>,
    /// Runtime worker threads (`--workers N`). 0, the default, is tokio's default, one per CPU
    /// this process may run on, which is what the `mssql-mcp` binary starts with: one under
    /// `--pin`, as the binary would have under `taskset -c 1`. Session 9 and earlier ran two.
    workers: usize,
    /// The peer's full log (`--peer-log on|off`, on by default): a line per query, and the
    /// whole batch when it is longer than 120 characters, written to a file after each answer.
    peer_log: bool,
}

fn args() -> Args {
    let mut a = Args {
        secs: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        rounds: 2,
        pin: false,
        only: None,
        raw_client: true,
        batch_delay: Duration::ZERO,
        conc: vec![1, 4, 32],
        workers: 0,
        peer_log: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let num = |it: &mut std::iter::Skip<std::env::Args>| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        let seconds = |it: &mut std::iter::Skip<std::env::Args>| -> Duration {
            it.next()
                .and_then(|v| v.parse::<f64>().ok())
                .and_then(|v| Duration::try_from_secs_f64(v).ok())
                .unwrap_or_else(|| panic!("{flag} needs a number of seconds"))
        };
        match flag.as_str() {
            "--secs" => a.secs = seconds(&mut it).max(Duration::from_millis(100)),
            "--warmup" => a.warmup = seconds(&mut it),
            "--rounds" => a.rounds = num(&mut it).max(1) as u32,
            "--pin" => a.pin = true,
            "--batch-delay-us" => a.batch_delay = Duration::from_micros(num(&mut it)),
            "--workers" => a.workers = num(&mut it) as usize,
            "--conc" => {
                a.conc = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|c| match c.trim().parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => panic!("--conc takes a list like 1,4,32, not {c:?}"),
                    })
                    .collect()
            }
            "--peer-log" => {
                a.peer_log = match it.next().as_deref() {
                    Some("on") => true,
                    Some("off") => false,
                    other => panic!("--peer-log on|off, not {other:?}"),
                }
            }
            "--only" => a.only = it.next().map(|v| v.to_ascii_lowercase()),
            "--client" => {
                a.raw_client = match it.next().as_deref() {
                    Some("raw") => true,
                    Some("reqwest") => false,
                    other => panic!("--client raw|reqwest, not {other:?}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "tds_bench [--secs S] [--warmup S] [--rounds N] [--pin] [--only w1x1:server] [--client raw|reqwest] [--batch-delay-us N] [--conc 1,4,32] [--workers N] [--peer-log on|off]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}; try --help"),
        }
    }
    a
}

/// Customers and Orders as JSON files plus the peer's `config.json`.
fn write_fixture(dir: &std::path::Path) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let cities = ["Zürich", "東京", "São Paulo", "Reykjavík", "Oslo"];
    let customers: Vec<Value> = (1..=CUSTOMERS)
        .map(|i| {
            let mut o = Map::new();
            o.insert("Id".into(), json!(i));
            o.insert("Name".into(), json!(format!("Customer {i:04}")));
            o.insert(
                "Email".into(),
                if i % 7 == 0 {
                    Value::Null
                } else {
                    json!(format!("c{i}@example.com"))
                },
            );
            o.insert("City".into(), json!(cities[i as usize % cities.len()]));
            o.insert(
                "Notes".into(),
                json!(format!("customer since {} ", 2000 + i % 25)),
            );
            Value::Object(o)
        })
        .collect();
    let orders: Vec<Value> = (1..=ORDERS)
        .map(|i| {
            let mut o = Map::new();
            o.insert("Id".into(), json!(i));
            o.insert("CustomerId".into(), json!(i % CUSTOMERS + 1));
            o.insert("ProductId".into(), json!(i % 12 + 1));
            o.insert("Quantity".into(), json!(i % 4 + 1));
            o.insert(
                "Status".into(),
                if i % 10 == 0 {
                    Value::Null
                } else {
                    json!("shipped")
                },
            );
            o.insert(
                "OrderDate".into(),
                json!(format!("2024-{:02}-{:02}", i % 12 + 1, i % 28 + 1)),
            );
            Value::Object(o)
        })
        .collect();
    std::fs::write(
        data.join("customers.json"),
        serde_json::to_vec(&customers).expect("json"),
    )
    .expect("write");
    std::fs::write(
        data.join("orders.json"),
        serde_json::to_vec(&orders).expect("json"),
    )
    .expect("write");
    common::write_peer_config(
        dir,
        json!([
            {"name": "Customers", "json": "data/customers.json"},
            {"name": "Orders", "json": "data/orders.json"},
        ]),
    );
}

/// A plain tiberius connection. `timer`: keep tiberius' per-round-trip timer (its default, 30
/// s); the server turns it off (`MssqlSettings` in `src/db/mssql.rs`), and so does the bare hop.
async fn plain_client(port: u16, timer: bool) -> Tds {
    let mut config = tiberius::Config::new();
    config.host("127.0.0.1");
    config.port(port);
    config.database("pysqlbridge");
    config.authentication(tiberius::AuthMethod::sql_server(
        common::LOGIN,
        common::PASSWORD,
    ));
    // The server's defaults: encryption required, the peer's self-signed certificate trusted,
    // read-only intent.
    config.encryption(tiberius::EncryptionLevel::Required);
    config.trust_cert();
    config.readonly(true);
    if !timer {
        config.command_timeout(None);
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
    tcp.set_nodelay(true).expect("nodelay");
    tiberius::Client::connect(config, tcp.compat_write())
        .await
        .expect("plain tiberius client")
}

/// A plain connection in the state the server's pooled connections are in: its session
/// settings made once, and the row cap of a first page set (the server sends `SET ROWCOUNT`
/// only when a connection's cap changes, so once per connection in this benchmark).
async fn batch_client(port: u16, timer: bool) -> Tds {
    let mut client = plain_client(port, timer).await;
    for setup in [
        mssql_mcp::db::mssql::session_setup(
            QUERY_TIMEOUT,
            mssql_mcp::config::MssqlIsolation::ReadCommitted,
        ),
        format!("SET ROWCOUNT {ROW_CAP};"),
    ] {
        client
            .simple_query(setup)
            .await
            .expect("session setup")
            .into_results()
            .await
            .expect("session setup results");
    }
    client
}

/// The number of rows in `sql`'s first result set on a plain connection; panics on an error.
async fn row_count(client: &mut Tds, sql: &str) -> usize {
    client
        .simple_query(sql)
        .await
        .expect("plain query")
        .into_first_result()
        .await
        .expect("plain rows")
        .len()
}

/// The JSON-RPC body of one `execute_sql` call, written directly: the generator shares the
/// server's CPU under `--pin`, and building a `serde_json::Value` per request cost it about
/// 11,000 instructions (`benches/instructions.sh`), which the plain arms do not pay.
/// [`check_call_body`] holds it to what `json!` makes, at every start.
fn call_body(id: u64, sql: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(256 + sql.len());
    body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    body.extend_from_slice(id.to_string().as_bytes());
    body.extend_from_slice(
        br#","method":"tools/call","params":{"name":"execute_sql","arguments":{"sql":"#,
    );
    serde_json::to_writer(&mut body, sql).expect("a string serialises");
    body.extend_from_slice(
        br#"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
    );
    body
}

/// Panics unless [`call_body`] writes the message `json!` would (quotes and escapes in the SQL
/// included).
fn check_call_body() {
    let sql = "SELECT N'a\"b\\c\u{e9}\n' AS x";
    let want = json!({
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": "execute_sql",
            "arguments": {"sql": sql},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    });
    let got: Value = serde_json::from_slice(&call_body(7, sql)).expect("call_body writes JSON");
    assert_eq!(got, want, "call_body");
}

/// Panics unless `text` is a good `execute_sql` result of `rows` rows.
fn check_result(status: u16, text: &[u8], sql: &str, rows: usize) {
    let text = std::str::from_utf8(text).expect("utf-8");
    let want = format!("\"row_count\":{rows},");
    if status != 200
        || !text.contains("\"result\":")
        || text.contains("\"isError\":true")
        || !text.contains(&want)
    {
        panic!("bad server response ({status}) to {sql}: {text}");
    }
}

/// The server arm's HTTP/1.1 keep-alive client: `loadgen`'s connection (one `write_all` per
/// request, the response read to its end into a reused buffer, no timers or pools). It is the
/// load generator, not the thing measured, so it does as little as an HTTP client can (like
/// wrk); `--client reqwest` measures with reqwest instead.
struct RawHttp {
    conn: loadgen::Conn,
    head: Vec<u8>,
}

impl RawHttp {
    async fn connect(addr: std::net::SocketAddr, path: &str) -> RawHttp {
        let conn = loadgen::Conn::open(addr).await.expect("connect");
        RawHttp {
            conn,
            head: loadgen::request_head(path, &addr.to_string(), "execute_sql"),
        }
    }

    /// POSTs `body`; returns the status and the response body.
    async fn post(&mut self, body: &[u8]) -> (u16, &[u8]) {
        match self.conn.exchange(&self.head, body).await {
            Ok((status, _, _)) => (status, self.conn.body()),
            Err(e) => panic!("server arm: {e}"),
        }
    }
}

/// One MCP `tools/call` of `execute_sql`; panics on anything but a good result.
async fn server_call(http: &reqwest::Client, url: &str, id: u64, sql: &str, rows: usize) {
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "execute_sql")
        .body(call_body(id, sql))
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let text = resp.bytes().await.expect("body");
    check_result(status, &text, sql, rows);
}

async fn run_server(
    http: &reqwest::Client,
    url: &Arc<String>,
    raw: Option<std::net::SocketAddr>,
    workload: Workload,
    conc: usize,
    secs: Duration,
    id_base: u64,
) -> Tally {
    let deadline = Instant::now() + secs;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let http = http.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut i = 0u64;
            let mut conn = match raw {
                Some(addr) => Some(RawHttp::connect(addr, "/bench/mcp").await),
                None => None,
            };
            while Instant::now() < deadline {
                let sql = workload.sql(w, i);
                let id = id_base + (w as u64) * 1_000_000_000 + i;
                let s = Instant::now();
                match conn.as_mut() {
                    Some(c) => {
                        let (status, body) = c.post(&call_body(id, &sql)).await;
                        check_result(status, body, &sql, workload.rows());
                    }
                    None => server_call(&http, &url, id, &sql, workload.rows()).await,
                }
                t.latencies.push(s.elapsed().as_micros() as u32);
                t.requests += 1;
                i += 1;
            }
            t
        }));
    }
    gather(tasks, started, "server worker").await
}

/// The workers' tallies as one, over the time since `started`.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Tally>>, started: Instant, what: &str) -> Tally {
    let mut total = Tally::default();
    for task in tasks {
        total.add(task.await.unwrap_or_else(|e| panic!("{what}: {e}")));
    }
    total.elapsed = started.elapsed();
    total
}

/// The bare hop's connections: as many as the server's pool, handed out one caller at a time.
struct HopPool {
    permits: tokio::sync::Semaphore,
    conns: std::sync::Mutex<Vec<Tds>>,
}

/// Starts the thinnest HTTP front of the read-only batch we could write, on `127.0.0.1:0`: a
/// bare hyper HTTP/1.1 server whose handler takes the request body as the SQL, sends it as
/// the server would (`mssql::adhoc_batch`) on a connection set up like the server's pooled
/// ones, and answers with the row count as text. No routing, middleware, JSON, guard, audit or
/// metrics: what is left is HTTP over loopback, one more task hop and the TDS round trip, which
/// every HTTP front pays. The server arm's distance from this arm is what our own code costs.
async fn start_hop(conns: Vec<Tds>) -> std::net::SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the bare hop");
    let addr = listener.local_addr().expect("addr");
    let pool = Arc::new(HopPool {
        permits: tokio::sync::Semaphore::new(conns.len()),
        conns: std::sync::Mutex::new(conns),
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let pool = pool.clone();
            tokio::spawn(async move {
                let call = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let pool = pool.clone();
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let sql = String::from_utf8_lossy(&body);
                        let batch = mssql_mcp::db::mssql::adhoc_batch(&sql, ROW_CAP, Some(ROW_CAP));
                        let _permit = pool.permits.acquire().await.expect("never closed");
                        let mut conn = pool
                            .conns
                            .lock()
                            .expect("hop pool")
                            .pop()
                            .expect("a connection per permit");
                        let rows = row_count(&mut conn, &batch).await;
                        pool.conns.lock().expect("hop pool").push(conn);
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                            rows.to_string(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), call)
                    .await;
            });
        }
    });
    addr
}

/// The load of the server arm, sent to the bare hop: the SQL as the body, the row count back.
async fn run_hop(
    addr: std::net::SocketAddr,
    workload: Workload,
    conc: usize,
    secs: Duration,
) -> Tally {
    let deadline = Instant::now() + secs;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut i = 0u64;
            let mut conn = RawHttp::connect(addr, "/hop").await;
            let want = workload.rows().to_string();
            while Instant::now() < deadline {
                let sql = workload.sql(w, i);
                let s = Instant::now();
                let (status, body) = conn.post(sql.as_bytes()).await;
                assert!(
                    status == 200 && body == want.as_bytes(),
                    "bare hop answered {status} {:?} to {sql}",
                    String::from_utf8_lossy(body)
                );
                t.latencies.push(s.elapsed().as_micros() as u32);
                t.requests += 1;
                i += 1;
            }
            t
        }));
    }
    gather(tasks, started, "hop worker").await
}

async fn run_plain(
    clients: &mut Vec<Tds>,
    workload: Workload,
    conc: usize,
    secs: Duration,
    batch: bool,
    delay: Duration,
) -> Tally {
    let deadline = Instant::now() + secs;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let mut client = clients.pop().expect("a plain client per worker");
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let sql = workload.sql(w, i);
                let sql = if batch {
                    mssql_mcp::db::mssql::adhoc_batch(&sql, ROW_CAP, Some(ROW_CAP))
                } else {
                    sql
                };
                let s = Instant::now();
                assert_eq!(row_count(&mut client, &sql).await, workload.rows(), "{sql}");
                t.latencies.push(s.elapsed().as_micros() as u32);
                t.requests += 1;
                i += 1;
                let waited = Instant::now();
                while waited.elapsed() < delay {
                    std::hint::spin_loop();
                }
            }
            (client, t)
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let (client, t) = task.await.expect("plain worker");
        clients.push(client);
        total.add(t);
    }
    total.elapsed = started.elapsed();
    total
}

/// Pins every thread of process `pid` to `cpu` with taskset(1) (util-linux), which threads
/// created afterwards inherit.
fn pin(pid: &str, cpu: u32) {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), pid])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("--pin needs taskset (util-linux)");
    assert!(status.success(), "taskset could not pin {pid} to CPU {cpu}");
}

fn main() {
    let a = args();
    check_call_body();
    if a.pin {
        // Before the runtime starts, so every worker thread inherits CPU 1 (and tokio's default
        // worker count, which follows the CPUs this process may use, is one, as it would be
        // for the binary under `taskset -c 1`).
        pin(&std::process::id().to_string(), 1);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if a.workers > 0 {
        rt.worker_threads(a.workers);
    }
    let rt = rt.enable_all().build().expect("runtime");
    rt.block_on(bench(a));
}

async fn bench(a: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_fixture(dir.path());
    let port = common::free_port();
    let peer = common::PeerProcess(common::spawn_pysqlbridge_logging(
        dir.path(),
        port,
        a.peer_log,
    ));
    let peer_pid = peer.0.id().to_string();
    if a.pin {
        pin(&peer_pid, 0);
    }

    let toml = format!(
        r#"
[server]
insecure_no_auth = true
state_dir = "{state}"

[limits]
per_ip_per_sec = 1000000
per_ip_burst = 1000000

[[database]]
name = "peer"
kind = "mssql"
host = "127.0.0.1"
port = {port}
database = "pysqlbridge"
user = "{login}"
password = {{ file = "{pw}" }}
trust_server_certificate = true
pool_size = {POOL}

[[scope]]
path = "/bench"
database = "peer"
profile = "full"
"#,
        state = dir.path().join("state").display(),
        login = common::LOGIN,
        pw = dir.path().join("password").display(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = mssql_mcp::config::Config::parse(&toml).expect("config");
    config.server.listen = addr;
    config.server.public_url = Some(format!("http://{addr}"));
    let state = mssql_mcp::app::build_state(config, true)
        .await
        .expect("build_state");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = mssql_mcp::app::run(state, listener, async move {
            let _ = stopped.await;
        })
        .await;
    });
    let url = Arc::new(format!("http://{addr}/bench/mcp"));
    let http = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(16)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");

    // Plain connections, opened one at a time (the peer's backlog is 5): one per worker of the
    // largest concurrency for each plain arm, and the bare hop's pool, the server's size.
    let most = a.conc.iter().copied().max().unwrap_or(1);
    let mut clients = Vec::new();
    let mut batch_clients = Vec::new();
    let mut hop_clients = Vec::new();
    for i in 0..most.max(POOL as usize) {
        if i < most {
            clients.push(plain_client(port, true).await);
            batch_clients.push(batch_client(port, true).await);
        }
        if i < POOL as usize {
            hop_clients.push(batch_client(port, false).await);
        }
    }
    // Every statement once through both sides before measuring: they must agree.
    for workload in [Workload::W1, Workload::W2] {
        let sql = workload.sql(0, 0);
        server_call(&http, &url, 1, &sql, workload.rows()).await;
        assert_eq!(
            row_count(&mut clients[0], &sql).await,
            workload.rows(),
            "{sql}"
        );
        let batch = mssql_mcp::db::mssql::adhoc_batch(&sql, ROW_CAP, Some(ROW_CAP));
        assert_eq!(
            row_count(&mut batch_clients[0], &batch).await,
            workload.rows(),
            "{batch}"
        );
    }

    let hop = start_hop(hop_clients).await;

    let mut results = Vec::new();
    let mut next_id = 10u64;
    for workload in [Workload::W1, Workload::W2] {
        for &conc in &a.conc {
            let mut totals: [Tally; 4] = Default::default();
            // Each round's rates: the arms of a round run back to back, so a burst of load
            // from elsewhere on the machine skews one round rather than the whole comparison.
            let mut rounds: Vec<[f64; 4]> = Vec::new();
            for round in 0..a.rounds {
                let mut rates = [0.0; 4];
                for side in Side::order(round) {
                    if a.only.as_ref().is_some_and(|only| {
                        let label = format!("{workload:?}x{conc}:{side:?}").to_ascii_lowercase();
                        !label.starts_with(only.as_str())
                    }) {
                        continue;
                    }
                    next_id += 1;
                    let id_base = next_id * 10_000_000_000;
                    for (secs, measured) in [(a.warmup, false), (a.secs, true)] {
                        if secs.is_zero() {
                            continue;
                        }
                        let (peer0, own0) = (cpu_time(&peer_pid), cpu_time("self"));
                        let mut t = match side {
                            Side::Plain => {
                                run_plain(&mut clients, workload, conc, secs, false, Duration::ZERO)
                                    .await
                            }
                            Side::Batch => {
                                run_plain(
                                    &mut batch_clients,
                                    workload,
                                    conc,
                                    secs,
                                    true,
                                    a.batch_delay,
                                )
                                .await
                            }
                            Side::Hop => run_hop(hop, workload, conc, secs).await,
                            Side::Server => {
                                run_server(
                                    &http,
                                    &url,
                                    a.raw_client.then_some(addr),
                                    workload,
                                    conc,
                                    secs,
                                    id_base + measured as u64,
                                )
                                .await
                            }
                        };
                        if !measured {
                            continue;
                        }
                        t.peer_cpu = cpu_time(&peer_pid).saturating_sub(peer0);
                        t.own_cpu = cpu_time("self").saturating_sub(own0);
                        rates[side as usize] = t.rate();
                        totals[side as usize].add(t);
                    }
                }
                rounds.push(rates);
            }
            if totals.iter().all(|t| t.rate() <= 0.0) {
                // Left out by `--only`.
                continue;
            }
            eprintln!(
                "{} x{conc}: plain {:.0}/s, plain + batch {:.0}/s, bare hop {:.0}/s, server {:.0}/s",
                workload.label(),
                totals[0].rate(),
                totals[1].rate(),
                totals[2].rate(),
                totals[3].rate(),
            );
            results.push((workload, conc, totals, rounds));
        }
    }

    // A 95% interval for the ratio of the mean rates, by resampling whole rounds (a
    // percentile bootstrap, 2,000 draws, fixed seed so a report can be reproduced from its
    // rounds). The rounds are the unit because the host's speed drifts between them; within
    // one round the arms run back to back.
    fn interval(rounds: &[[f64; 4]], n: usize, d: usize) -> (f64, f64) {
        if rounds.len() < 4 {
            return (f64::NAN, f64::NAN);
        }
        let mut rng = fastrand::Rng::with_seed(0x6d73_7371_6c6d_6370);
        let mut draws: Vec<f64> = (0..2000)
            .map(|_| {
                let (mut num, mut den) = (0.0, 0.0);
                for _ in 0..rounds.len() {
                    let r = &rounds[rng.usize(..rounds.len())];
                    num += r[n];
                    den += r[d];
                }
                num / den.max(1e-9)
            })
            .collect();
        draws.sort_by(f64::total_cmp);
        (100.0 * draws[50], 100.0 * draws[1949])
    }

    // `num` / `den` as a percentage: the ratio of the totals, then the median and range of
    // the per-round ratios, and with four rounds or more the bootstrap interval.
    fn ratio(totals: &[Tally; 4], rounds: &[[f64; 4]], num: Side, den: Side) -> String {
        let (n, d) = (num as usize, den as usize);
        // An arm left out by `--only` has no rate to compare.
        if totals[n].rate() <= 0.0 || totals[d].rate() <= 0.0 {
            return "–".to_string();
        }
        let mut each: Vec<f64> = rounds.iter().map(|r| r[n] / r[d].max(1e-9)).collect();
        each.sort_by(f64::total_cmp);
        let pct = |i: usize| 100.0 * each.get(i).copied().unwrap_or(0.0);
        let (lo, hi) = interval(rounds, n, d);
        let ci = if lo.is_nan() {
            String::new()
        } else {
            format!(" [95% {lo:.0}–{hi:.0}%]")
        };
        format!(
            "{:.0}% ({:.0}%, {:.0}–{:.0}%){ci}",
            100.0 * totals[n].rate() / totals[d].rate().max(1e-9),
            pct(each.len() / 2),
            pct(0),
            pct(each.len().saturating_sub(1))
        )
    }
    println!();
    println!(
        "Throughput (req/s) of the four arms, and ratios as the ratio of the totals (median of the per-round ratios, range) [95% bootstrap interval over rounds]:"
    );
    println!();
    println!(
        "| workload | concurrency | plain tiberius | plain + read-only batch | bare HTTP hop | through the server | server / plain | server / (plain + batch) | bare hop / plain | server / bare hop | (plain + batch) / plain |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (workload, conc, totals, rounds) in &results {
        println!(
            "| {} | {conc} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
            workload.label(),
            totals[0].rate(),
            totals[1].rate(),
            totals[2].rate(),
            totals[3].rate(),
            ratio(totals, rounds, Side::Server, Side::Plain),
            ratio(totals, rounds, Side::Server, Side::Batch),
            ratio(totals, rounds, Side::Hop, Side::Plain),
            ratio(totals, rounds, Side::Server, Side::Hop),
            ratio(totals, rounds, Side::Batch, Side::Plain),
        );
    }
    println!();
    println!(
        "Latency (ms) and CPU per request (µs) of the peer and of this process (client, hop or server, plus the load generator); each cell plain / batch / hop / server:"
    );
    println!();
    println!("| workload | concurrency | p50 | p99 | peer CPU/req | this process CPU/req |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (workload, conc, totals, _) in &results {
        let mut t = totals.clone();
        let cells = |f: &mut dyn FnMut(&mut Tally) -> f64, t: &mut [Tally; 4], digits: usize| {
            t.iter_mut()
                .map(|x| format!("{:.*}", digits, f(x)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {} | {conc} | {} | {} | {} | {} |",
            workload.label(),
            cells(&mut |x| x.percentile(0.5), &mut t, 2),
            cells(&mut |x| x.percentile(0.99), &mut t, 2),
            cells(&mut |x| x.per_request(x.peer_cpu), &mut t, 0),
            cells(&mut |x| x.per_request(x.own_cpu), &mut t, 0),
        );
    }
    println!(
        "\n{} s per measured run after {} s of warm-up, {} round(s) rotating which arm goes first; {} runtime worker thread(s); server pool_size = {POOL}, bare hop {POOL} connections; {} plain and {} plain + batch connections.",
        a.secs.as_secs_f64(),
        a.warmup.as_secs_f64(),
        a.rounds,
        tokio::runtime::Handle::current().metrics().num_workers(),
        clients.len(),
        batch_clients.len()
    );
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
