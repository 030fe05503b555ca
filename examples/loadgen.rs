//! A lean HTTP/1.1 load generator for the MCP benchmark (`benches/run.sh`, the default there;
//! `--generator wrk` uses wrk and `benches/mcp.lua` instead).
//!
//! ```sh
//! cargo build --release --example loadgen
//! target/release/examples/loadgen http://127.0.0.1:8008/claude/mcp --workload w1 -c 32 -d 10
//! ```
//!
//! It sends the requests `benches/mcp.lua` sends (the same headers, in another order, and the
//! same body: a stateless MCP 2026-07-28 `tools/call`, a JSON-RPC id unique across connections,
//! a random key per request; compared by capturing one of each), and checks
//! every response the same way: a status other than 200, a body without `"result":` (a JSON-RPC
//! error) and a body containing `Error":true` (a tool error) each count as an error, as do
//! connect, read and write failures and requests slower than `--timeout`. At the end it prints
//! the line `benches/run.sh` parses:
//!
//! ```text
//! BENCH_RESULT requests=… duration_us=… bytes=… rps=… p50_us=… p99_us=… max_us=… non200=… no_result=… is_error=… socket_errors=…
//! ```
//!
//! Why it exists: the benchmark's targets count the load generator in (it shares the two cores
//! with the server under test), and wrk runs a Lua function for every request and hands every
//! response to Lua. Here each connection is one task on a single-threaded tokio runtime per
//! thread: the request is formatted into a reused buffer and written with one `write_all`, the
//! response is read into a reused buffer and its head parsed with `httparse` (`Content-Length`
//! or chunked bodies), the body is checked with `memchr`'s `memmem`, and latencies are kept
//! exactly (one `u32` of microseconds per request) for the percentiles. Every run stops by
//! itself after `--duration` seconds; a request still in flight then is abandoned, not counted.
//!
//! Loopback or any `http://host:port/path` URL; no TLS (the TLS benchmark is `benches/tls.sh`).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(about = "HTTP/1.1 load for the MCP benchmark (see benches/README.md)")]
struct Args {
    /// The MCP endpoint, e.g. `http://127.0.0.1:8008/claude/mcp`.
    url: String,
    /// Which request to send.
    #[arg(long, value_enum, default_value_t = Workload::W1)]
    workload: Workload,
    /// Open connections, each with one request in flight.
    #[arg(short = 'c', long, default_value_t = 32)]
    connections: usize,
    /// OS threads, each running a single-threaded runtime with its share of the connections.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10)]
    duration: u64,
    /// A request slower than this many seconds counts as an error (and its connection is
    /// reopened).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// The three workloads of `benches/README.md`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Workload {
    /// `execute_sql`: `SELECT * FROM customers WHERE customer_id = N`, N in 1..=5000.
    W1,
    /// `execute_sql`: 100 orders after a random order id (always 100 rows).
    W2,
    /// `fetch` of `main.customers/N`, N in 1..=5000.
    W3,
}

impl Workload {
    fn tool(self) -> &'static str {
        match self {
            Workload::W1 | Workload::W2 => "execute_sql",
            Workload::W3 => "fetch",
        }
    }

    /// Appends the JSON-RPC body of one request, exactly as `benches/mcp.lua` builds it.
    fn write_body(self, out: &mut Vec<u8>, id: u64, rng: &mut fastrand::Rng) {
        let tool = self.tool();
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":"#
        );
        let _ = match self {
            Workload::W1 => write!(
                out,
                r#"{{"sql":"SELECT * FROM customers WHERE customer_id = {}"}}"#,
                rng.u32(1..=5000)
            ),
            Workload::W2 => write!(
                out,
                r#"{{"sql":"SELECT * FROM orders WHERE order_id > {} ORDER BY order_id LIMIT 100"}}"#,
                rng.u32(0..=14900)
            ),
            Workload::W3 => write!(out, r#"{{"id":"main.customers/{}"}}"#, rng.u32(1..=5000)),
        };
        out.extend_from_slice(
            br#","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
        );
    }
}

/// What one connection (and, merged, the whole run) counted.
#[derive(Default)]
struct Stats {
    requests: u64,
    bytes: u64,
    latencies_us: Vec<u32>,
    non200: u64,
    no_result: u64,
    is_error: u64,
    socket_errors: u64,
    first_bad: Option<String>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.latencies_us.extend(other.latencies_us);
        self.non200 += other.non200;
        self.no_result += other.no_result;
        self.is_error += other.is_error;
        self.socket_errors += other.socket_errors;
        if self.first_bad.is_none() {
            self.first_bad = other.first_bad;
        }
    }

    fn bad(&mut self, what: impl FnOnce() -> String) {
        if self.first_bad.is_none() {
            self.first_bad = Some(what());
        }
    }
}

/// Where to send and what.
struct Target {
    addr: SocketAddr,
    /// The request head up to and including `Content-Length: `.
    head: Vec<u8>,
    workload: Workload,
    deadline: Instant,
    timeout: Duration,
}

/// A parsed response: status, head length, and where the body is.
enum Body {
    /// `Content-Length` bytes after the head.
    Length(usize),
    /// A chunked body, decoded into the connection's `chunked` buffer.
    Chunked,
}

/// One keep-alive HTTP/1.1 connection with its reused buffers (also the server arm's client in
/// `examples/tds_bench.rs`).
pub struct Conn {
    stream: TcpStream,
    req: Vec<u8>,
    buf: Vec<u8>,
    /// A chunked body, decoded.
    chunked: Vec<u8>,
    /// Where the last response's body is: in `buf` after a `Content-Length` head, in
    /// `chunked` after a chunked one.
    body: std::ops::Range<usize>,
    body_chunked: bool,
}

/// Why one exchange failed.
pub enum Failure {
    /// Connect, read or write failed, the peer closed, or the response was not HTTP.
    Socket(String),
    /// The run's deadline came first; not an error.
    Deadline,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Socket(e) => f.write_str(e),
            Failure::Deadline => f.write_str("the run ended"),
        }
    }
}

/// The head of a stateless MCP 2026-07-28 `tools/call` POST of `tool` to `path`, up to and
/// including `Content-Length: ` (the length and body follow per request).
pub fn request_head(path: &str, authority: &str, tool: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\nContent-Length: "
    )
    .into_bytes()
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            req: Vec::with_capacity(1024),
            buf: vec![0; 16 * 1024],
            chunked: Vec::new(),
            body: 0..0,
            body_chunked: false,
        })
    }

    /// The last response's body.
    pub fn body(&self) -> &[u8] {
        let from = if self.body_chunked {
            &self.chunked
        } else {
            &self.buf
        };
        &from[self.body.clone()]
    }

    /// Sends `body` and reads the whole response; returns the status, the bytes received and
    /// whether the server wants the connection closed.
    pub async fn exchange(
        &mut self,
        head: &[u8],
        body: &[u8],
    ) -> Result<(u16, usize, bool), Failure> {
        let sock = |e: std::io::Error| Failure::Socket(e.to_string());
        self.req.clear();
        self.req.extend_from_slice(head);
        let _ = write!(self.req, "{}\r\n\r\n", body.len());
        self.req.extend_from_slice(body);
        self.stream.write_all(&self.req).await.map_err(sock)?;

        let mut filled = 0;
        let (status, head_len, kind, close) = loop {
            filled += self.read_more(filled).await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[..filled]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut kind = None;
                    let mut close = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .ok_or_else(|| Failure::Socket("bad Content-Length".into()))?;
                            kind = Some(Body::Length(len));
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
                            && memmem::find(h.value, b"chunked").is_some()
                        {
                            kind = Some(Body::Chunked);
                        } else if h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                        {
                            close = true;
                        }
                    }
                    let kind = kind.ok_or_else(|| {
                        Failure::Socket("response has neither Content-Length nor chunked".into())
                    })?;
                    break (status, n, kind, close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(Failure::Socket(format!("bad response head: {e}"))),
            }
        };
        self.body_chunked = matches!(kind, Body::Chunked);
        match kind {
            Body::Length(len) => {
                while filled < head_len + len {
                    filled += self.read_more(filled).await?;
                }
                self.body = head_len..head_len + len;
                Ok((status, filled, close))
            }
            Body::Chunked => {
                self.chunked.clear();
                let mut pos = head_len;
                loop {
                    match httparse::parse_chunk_size(&self.buf[pos..filled]) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            let size = usize::try_from(size)
                                .map_err(|_| Failure::Socket("chunk too large".into()))?;
                            // the chunk, then its CRLF
                            while filled < pos + n + size + 2 {
                                filled += self.read_more(filled).await?;
                            }
                            if size == 0 {
                                // no trailers expected: the CRLF that ends the body
                                self.body = 0..self.chunked.len();
                                return Ok((status, filled, close));
                            }
                            self.chunked
                                .extend_from_slice(&self.buf[pos + n..pos + n + size]);
                            pos += n + size + 2;
                        }
                        Ok(httparse::Status::Partial) => {
                            filled += self.read_more(filled).await?;
                        }
                        Err(_) => return Err(Failure::Socket("bad chunk size".into())),
                    }
                }
            }
        }
    }

    /// Reads into `buf[filled..]`, growing it when full; a closed connection is a failure.
    async fn read_more(&mut self, filled: usize) -> Result<usize, Failure> {
        if filled == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        match self.stream.read(&mut self.buf[filled..]).await {
            Ok(0) => Err(Failure::Socket("the server closed the connection".into())),
            Ok(n) => Ok(n),
            Err(e) => Err(Failure::Socket(e.to_string())),
        }
    }
}

/// One connection's loop: request after request until the deadline, reconnecting after a
/// failure.
async fn connection(target: std::sync::Arc<Target>, index: u64) -> Stats {
    let mut stats = Stats {
        latencies_us: Vec::with_capacity(1 << 16),
        ..Stats::default()
    };
    let mut rng = fastrand::Rng::with_seed(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed());
    let mut body = Vec::with_capacity(512);
    let result_key = memmem::Finder::new(b"\"result\":");
    // See benches/mcp.lua: matches every `"isError":true`, never fewer.
    let tool_error = memmem::Finder::new(b"Error\":true");
    let mut seq: u64 = 0;
    let mut conn: Option<Conn> = None;
    while Instant::now() < target.deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(target.addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    stats.socket_errors += 1;
                    stats.bad(|| format!("connect {}: {e}", target.addr));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        seq += 1;
        body.clear();
        // unique across connections: the connection number in the high digits
        target
            .workload
            .write_body(&mut body, (index + 1) * 1_000_000_000 + seq, &mut rng);
        let start = Instant::now();
        let limit = (start + target.timeout).min(target.deadline + Duration::from_secs(1));
        let outcome =
            match tokio::time::timeout_at(limit.into(), c.exchange(&target.head, &body)).await {
                Ok(r) => r,
                Err(_) if limit < start + target.timeout => Err(Failure::Deadline),
                Err(_) => Err(Failure::Socket(format!(
                    "no response within {} s",
                    target.timeout.as_secs()
                ))),
            };
        let done = Instant::now();
        match outcome {
            Ok((status, bytes, close)) => {
                if done > target.deadline {
                    break;
                }
                stats.requests += 1;
                stats.bytes += bytes as u64;
                let us = done.duration_since(start).as_micros();
                stats
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
                let body = c.body();
                if status != 200 {
                    stats.non200 += 1;
                    stats.bad(|| format!("HTTP {status}: {}", snippet(body)));
                } else if result_key.find(body).is_none() {
                    stats.no_result += 1;
                    stats.bad(|| snippet(body));
                } else if tool_error.find(body).is_some() {
                    stats.is_error += 1;
                    stats.bad(|| snippet(body));
                }
                if close {
                    conn = None;
                }
            }
            Err(Failure::Deadline) => break,
            Err(Failure::Socket(e)) => {
                if done > target.deadline {
                    break;
                }
                stats.socket_errors += 1;
                stats.bad(|| e);
                conn = None;
            }
        }
    }
    stats
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).replace('\n', " ")
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7919)
}

/// Splits `http://host:port/path` into a socket address and the path.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e} (expected host:port)"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    Ok((addr, authority.to_owned(), path.to_owned()))
}

/// One load run.
pub struct Plan {
    pub url: String,
    pub workload: Workload,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub timeout: Duration,
}

/// What a run measured.
pub struct Summary {
    pub requests: u64,
    pub elapsed: Duration,
    pub bytes: u64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    pub non200: u64,
    pub no_result: u64,
    pub is_error: u64,
    pub socket_errors: u64,
    /// The first bad response or failure, shortened.
    pub first_bad: Option<String>,
}

impl Summary {
    pub fn errors(&self) -> u64 {
        self.non200 + self.no_result + self.is_error + self.socket_errors
    }
}

/// Runs `plan` on threads of its own and waits for it to end (after `plan.duration`).
pub fn run(plan: &Plan) -> Result<Summary, String> {
    if plan.connections == 0 || plan.threads == 0 || plan.duration.is_zero() {
        return Err("--connections, --threads and --duration must be at least 1".into());
    }
    let (addr, authority, path) = parse_url(&plan.url)?;
    let threads = plan.threads.min(plan.connections);
    let head = request_head(&path, &authority, plan.workload.tool());
    let started = Instant::now();
    let target = std::sync::Arc::new(Target {
        addr,
        head,
        workload: plan.workload,
        deadline: started + plan.duration,
        timeout: plan.timeout,
    });
    let mut handles = Vec::new();
    for t in 0..threads {
        // connections t, t + threads, t + 2 * threads, ...
        let mine: Vec<u64> = (t..plan.connections)
            .step_by(threads)
            .map(|i| i as u64)
            .collect();
        let target = target.clone();
        handles.push(std::thread::spawn(move || -> Result<Stats, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            rt.block_on(async move {
                let tasks: Vec<_> = mine
                    .into_iter()
                    .map(|i| tokio::spawn(connection(target.clone(), i)))
                    .collect();
                let mut all = Stats::default();
                for task in tasks {
                    all.merge(task.await.map_err(|e| format!("connection task: {e}"))?);
                }
                Ok(all)
            })
        }));
    }
    let mut all = Stats::default();
    for h in handles {
        all.merge(
            h.join()
                .map_err(|_| "a load thread panicked".to_string())??,
        );
    }
    let elapsed = started.elapsed().min(plan.duration);
    all.latencies_us.sort_unstable();
    let lat = &all.latencies_us;
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            return 0;
        }
        // nearest rank
        let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[rank.clamp(1, lat.len()) - 1]
    };
    Ok(Summary {
        requests: all.requests,
        elapsed,
        bytes: all.bytes,
        p50_us: pct(50.0),
        p99_us: pct(99.0),
        max_us: lat.last().copied().unwrap_or(0),
        non200: all.non200,
        no_result: all.no_result,
        is_error: all.is_error,
        socket_errors: all.socket_errors,
        first_bad: all.first_bad,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = Plan {
        url: args.url,
        workload: args.workload,
        connections: args.connections,
        threads: args.threads,
        duration: Duration::from_secs(args.duration),
        timeout: Duration::from_secs(args.timeout),
    };
    let s = match run(&plan) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "BENCH_RESULT requests={} duration_us={} bytes={} rps={:.1} p50_us={} p99_us={} max_us={} non200={} no_result={} is_error={} socket_errors={}",
        s.requests,
        s.elapsed.as_micros(),
        s.bytes,
        s.requests as f64 / s.elapsed.as_secs_f64(),
        s.p50_us,
        s.p99_us,
        s.max_us,
        s.non200,
        s.no_result,
        s.is_error,
        s.socket_errors
    );
    if let Some(bad) = s.first_bad {
        println!("BENCH_FIRST_BAD {bad}");
    }
    ExitCode::SUCCESS
}
