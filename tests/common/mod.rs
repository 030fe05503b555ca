//! Shared by the integration tests that need the TDS peer (`tests/mssql.rs`,
//! `tests/backends.rs`): finding `pysqlbridge`, free loopback ports, and starting the peer
//! on a directory that holds its `config.json`. `tests/ops.rs`, `tests/edge.rs` and
//! `tests/oauth.rs` take their ports from here too, and tests that read their own logs set
//! their subscriber here ([`log_on_this_thread`]).
//!
//! The peer is never skipped: when it is not installed the test fails with the command that
//! installs it (in CI, `.ci/run` installs it first; locally, the same command does).

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The SQL login every fixture configures, and its password (a test secret, not a real one).
pub const LOGIN: &str = "mcp_reader";
pub const PASSWORD: &str = "s3cret-Pa55word!";
/// The variable the peer's `config.json` reads the password from (`${…}`).
pub const PASSWORD_ENV: &str = "PYSQLBRIDGE_TEST_PASSWORD";

/// The command that installs the peer, for failure messages.
pub const INSTALL_HINT: &str =
    "python3 -m venv .ci/venv && .ci/venv/bin/pip install pysqlbridge==2.1.3";

/// The Python that has `pysqlbridge`: `$PYSQLBRIDGE_PYTHON` or `.ci/venv/bin/python`.
/// Panics with the install command when neither exists (also, and especially, under `CI`).
pub fn python() -> PathBuf {
    let in_ci = std::env::var_os("CI").is_some();
    if let Some(p) = std::env::var_os("PYSQLBRIDGE_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "PYSQLBRIDGE_PYTHON={} does not exist{}",
            p.display(),
            if in_ci { " (CI)" } else { "" }
        );
        return p;
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python");
    assert!(
        p.exists(),
        "the TDS test peer is not installed{}. Install it with:\n  {INSTALL_HINT}\n\
         (or point PYSQLBRIDGE_PYTHON at a python that has it)",
        if in_ci {
            " on this CI machine (.ci/run installs it)"
        } else {
            ""
        }
    );
    p
}

/// A loopback port that is free now, taken from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768–60999 by default). A port from `bind(0)` comes from
/// that range, so until the server under test binds it, any outgoing connection of a test
/// running beside this one may take it as its source port; below the range only an explicit
/// bind can. Successive calls in one process return different ports.
pub fn free_port() -> u16 {
    const FLOOR: u16 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static TOP: OnceLock<u16> = OnceLock::new();
    let top = *TOP.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768)
            .max(FLOOR + 1_000)
    });
    let span = u32::from(top - FLOOR);
    let start = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..1_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // 7,919 is prime, so successive calls walk the whole span before repeating.
        let offset = start.wrapping_add(n.wrapping_mul(7_919)) % span;
        let port = FLOOR + u16::try_from(offset).expect("below the span, a u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FLOOR}..{top}");
}

/// Writes the peer's `dir/config.json`, serving `tables` (each a JSON object such as
/// `{"name": "Orders", "json": "data/orders.json"}`, paths relative to `dir`) to the test login,
/// and that login's password to `dir/password` (for the server's `password = { file = … }`).
pub fn write_peer_config(dir: &Path, tables: serde_json::Value) {
    let config = serde_json::json!({
        "tables": tables,
        "logins": [{"user": LOGIN, "password": format!("${{{PASSWORD_ENV}}}")}],
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).expect("json"),
    )
    .expect("write the peer's config.json");
    std::fs::write(dir.join("password"), PASSWORD).expect("write the password file");
}

/// A peer process, killed and reaped when dropped (on every exit path, a panic included).
pub struct PeerProcess(pub Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pysqlbridge` on `127.0.0.1:port` with `dir/config.json` (paths in it relative to
/// `dir`), logging to `dir/server.log`, and waits until it accepts connections.
pub fn spawn_pysqlbridge(dir: &Path, port: u16) -> Child {
    spawn_pysqlbridge_logging(dir, port, true)
}

/// [`spawn_pysqlbridge`], with the peer's full log to `dir/server.log` only when `full_log`.
/// Without it the peer logs at its default level to a stderr that goes nowhere.
pub fn spawn_pysqlbridge_logging(dir: &Path, port: u16, full_log: bool) -> Child {
    spawn_peer(
        dir,
        port,
        full_log,
        &["-m".as_ref(), "pysqlbridge".as_ref()],
        None,
    )
}

/// [`spawn_pysqlbridge`] with the test login's password changed to `password` (the peer reads
/// its logins when it starts): a password rotated on the server.
pub fn spawn_pysqlbridge_password(dir: &Path, port: u16, password: &str) -> Child {
    spawn_peer(
        dir,
        port,
        true,
        &["-m".as_ref(), "pysqlbridge".as_ref()],
        Some((PASSWORD_ENV, password)),
    )
}

/// [`spawn_pysqlbridge`] with SQL Server's `sp_set_session_context`, which pysqlbridge lacks
/// (`tests/common/context_peer.py`, which says what it adds); each call is appended to
/// `dir/session_context.log` as `key=value`.
pub fn spawn_pysqlbridge_context(dir: &Path, port: u16) -> Child {
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/context_peer.py");
    spawn_peer(dir, port, true, &[launcher.as_ref(), "--".as_ref()], None)
}

/// [`spawn_pysqlbridge`] with SQL Server's rule for snapshot isolation
/// (`tests/common/isolation_peer.py`, which says what it adds): a read at `SNAPSHOT` fails with
/// error 3952 unless `snapshot_allowed` (then `sys.databases` says it is allowed). Each batch
/// that reads is appended to `dir/isolation.log` as `<LEVEL>\t<batch>`.
pub fn spawn_pysqlbridge_isolation(dir: &Path, port: u16, snapshot_allowed: bool) -> Child {
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/isolation_peer.py");
    let allowed = if snapshot_allowed { "on" } else { "off" };
    spawn_peer(
        dir,
        port,
        true,
        &[launcher.as_ref(), "--".as_ref()],
        Some(("ISOLATION_PEER_SNAPSHOT", allowed)),
    )
}

/// [`spawn_pysqlbridge`] that also admits one Windows account, `domain\user` with `password`,
/// by NTLM (`tests/common/ntlm_peer.py`, which says what it adds to the peer and why). What
/// each Windows login came to is appended to `dir/ntlm.log`. With `malformed`, the NTLM
/// challenge is sent broken that way (the launcher's `NTLM_PEER_CHALLENGE`).
pub fn spawn_pysqlbridge_windows(
    dir: &Path,
    port: u16,
    (domain, user, password): (&str, &str, &str),
    malformed: Option<&str>,
) -> Child {
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/ntlm_peer.py");
    let args: [&std::ffi::OsStr; 5] = [
        launcher.as_ref(),
        domain.as_ref(),
        user.as_ref(),
        password.as_ref(),
        "--".as_ref(),
    ];
    spawn_peer(
        dir,
        port,
        true,
        &args,
        malformed.map(|m| ("NTLM_PEER_CHALLENGE", m)),
    )
}

/// Runs `python <program…> --host 127.0.0.1 --port <port> --config dir/config.json` in `dir`
/// (with `env` set) and waits until it accepts connections.
fn spawn_peer(
    dir: &Path,
    port: u16,
    full_log: bool,
    program: &[&std::ffi::OsStr],
    env: Option<(&str, &str)>,
) -> Child {
    let log = dir.join("server.log");
    let mut command = Command::new(python());
    command
        .args(program)
        .args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--config")
        .arg(dir.join("config.json"));
    if full_log {
        command.arg("--log").arg(&log);
    }
    let mut child = command
        .current_dir(dir)
        .env(PASSWORD_ENV, PASSWORD)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pysqlbridge");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pysqlbridge exited with {status}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pysqlbridge did not listen on {addr} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sets `subscriber` as this thread's until the guard drops, for a test that reads what the
/// code under test logs.
///
/// Were it the only subscriber in the process, tracing-core would take it for the global one:
/// a log statement first reached on another test's thread (no subscriber there) would be
/// marked "never enabled" for good, and vanish from this thread's log too. A second, silent
/// subscriber that lives as long as the process makes tracing ask every subscriber, so each
/// thread's own decides.
pub fn log_on_this_thread<S>(subscriber: S) -> tracing::subscriber::DefaultGuard
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    static SILENT: OnceLock<tracing::Dispatch> = OnceLock::new();
    SILENT.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::new()));
    tracing::subscriber::set_default(subscriber)
}

/// Fails with the first of `found` (a randomised test's failing cases, each shown up to 600
/// characters), after how many there are and `what` they show.
pub fn assert_none(found: &[String], what: &str) {
    assert!(
        found.is_empty(),
        "{} {what}:\n{}",
        found.len(),
        found
            .iter()
            .take(8)
            .map(|f| f.chars().take(4000).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A randomised test's fixed seed, or that plus `TEST_SEED` to explore other cases locally
/// (a failure names its case either way).
pub fn seed(fixed: u64) -> u64 {
    let extra = std::env::var("TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    fixed.wrapping_add(extra)
}
