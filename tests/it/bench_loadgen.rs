//! The benchmark's load generator (`examples/loadgen.rs`, the default of `benches/run.sh`)
//! against the real demo server: a clean run counts no errors, and each kind of bad answer is
//! counted where it belongs, so a benchmark of failures cannot pass for a fast one.

use std::time::Duration;

use crate::support::*;

#[path = "../../examples/loadgen.rs"]
#[allow(dead_code)]
mod loadgen;

use loadgen::{Plan, Summary, Workload};

async fn load(url: String, workload: Workload) -> Summary {
    let plan = Plan {
        url,
        workload,
        connections: 4,
        threads: 2,
        duration: Duration::from_millis(700),
        timeout: Duration::from_secs(5),
    };
    tokio::task::spawn_blocking(move || loadgen::run(&plan))
        .await
        .expect("load thread")
        .expect("load run")
}

#[tokio::test]
async fn tool_errors_json_rpc_errors_and_bad_statuses_are_each_counted() {
    let srv = Server::with_config(&config_toml(
        "",
        r#"
[limits]
per_ip_per_sec = 1000000
per_ip_burst = 1000000

[[scope]]
path = "/locked"
database = "demo"
profile = "full"
deny_tables = ["customers"]
"#,
    ))
    .await;
    // execute_sql on a denied table: a tool result with isError
    let denied = load(srv.url("/locked/mcp"), Workload::W1).await;
    assert!(denied.requests > 0);
    assert_eq!(denied.is_error, denied.requests, "{:?}", denied.first_bad);
    assert_eq!(denied.errors(), denied.requests);
    assert!(
        denied
            .first_bad
            .as_deref()
            .is_some_and(|b| b.contains("isError"))
    );

    // the chatgpt profile has no execute_sql: a JSON-RPC error, no "result"
    let srv = Server::demo().await;
    let unknown = load(srv.url("/chatgpt/mcp"), Workload::W1).await;
    assert!(unknown.requests > 0);
    assert_eq!(unknown.no_result, unknown.requests);
    assert_eq!(unknown.errors(), unknown.requests);

    let missing = load(srv.url("/nowhere/mcp"), Workload::W3).await;
    assert!(missing.requests > 0);
    assert_eq!(missing.non200, missing.requests);
    assert!(
        missing
            .first_bad
            .as_deref()
            .is_some_and(|b| b.starts_with("HTTP 404"))
    );
    srv.stop().await;

    // nobody listening: connect failures, no requests
    let gone = load(format!("http://{}/claude/mcp", free_addr()), Workload::W1).await;
    assert_eq!(gone.requests, 0);
    assert!(gone.socket_errors > 0);
}

#[tokio::test]
async fn a_clean_run_of_every_workload_counts_no_errors_and_orders_its_percentiles() {
    let srv = Server::demo().await;
    for workload in [Workload::W1, Workload::W2, Workload::W3] {
        let s = load(srv.url("/claude/mcp"), workload).await;
        assert!(s.requests > 10, "{workload:?}: {} requests", s.requests);
        assert_eq!(s.errors(), 0, "{workload:?}: {:?}", s.first_bad);
        assert!(s.p50_us > 0 && s.p50_us <= s.p99_us && s.p99_us <= s.max_us);
        // W2 answers are about 80 KB: the whole body was read every time
        let per = s.bytes / s.requests;
        match workload {
            Workload::W2 => assert!(per > 60_000, "{per} bytes per W2 response"),
            _ => assert!(per > 1_000 && per < 10_000, "{per} bytes per response"),
        }
    }
}

/// An address nothing listens on: bound, then released.
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}
