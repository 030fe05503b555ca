//! The audit log: one JSON record per tool call and per OAuth decision (time, scope, user,
//! client id, client IP, tool or event, the query or id asked for, rows, duration, outcome,
//! error).
//!
//! Handlers hand records to [`Audit::record`], which never waits: records go through a
//! bounded channel to [`writer`], an owned task that appends them to `{state_dir}/audit.jsonl`
//! (rotated by size: `audit.jsonl.1` is the newest rotated file) or writes them to standard
//! error (the journal under systemd). When the writer falls behind, records are dropped and
//! counted in `mssql_mcp_audit_dropped_total` rather than slowing requests down.
//!
//! Records never carry tokens, codes, client secrets or passwords: the fields are built from
//! names and ids only, and the one free-text field with user input (`query`) holds tool
//! arguments, which carry no credentials.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{AuditConfig, AuditOutput};

/// The file name in the state directory.
pub const FILE: &str = "audit.jsonl";

/// Longest `query` kept in a record, in bytes (longer ones are cut and marked).
const MAX_QUERY: usize = 4096;

/// One audit record.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Record {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `tool_call` or `oauth`.
    pub kind: &'static str,
    /// For `oauth`: `register`, `authorize`, `sign_in`, `token`, `revoke`, `admin_revoke`,
    /// `bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'static str>,
    /// Scope path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// What was asked for: the tool's arguments (search words, SQL, record id, table), or for
    /// OAuth the grant type or client name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// `ok`, `invalid`, `refused`, `error`, `denied`, `approved`, `failed`, …
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// A record stamped now.
    pub fn new(kind: &'static str, outcome: &'static str) -> Self {
        Self {
            time: rfc3339_now(),
            kind,
            outcome,
            ..Self::default()
        }
    }

    /// An OAuth decision of `event` at `scope`.
    pub fn oauth(event: &'static str, scope: &str, outcome: &'static str) -> Self {
        Self {
            event: Some(event),
            scope: Some(scope.to_string()),
            ..Self::new("oauth", outcome)
        }
    }

    /// Sets `query`, cut to a bounded length on a character boundary.
    pub fn with_query(mut self, q: impl Into<String>) -> Self {
        let mut q: String = q.into();
        if q.len() > MAX_QUERY {
            let mut cut = MAX_QUERY;
            while !q.is_char_boundary(cut) {
                cut -= 1;
            }
            q.truncate(cut);
            q.push('…');
        }
        self.query = Some(q);
        self
    }
}

/// The sending side, cheap to clone; held by the app state.
#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<Record>>,
    dropped: IntCounter,
    /// Set once a record met a closed channel (the writer gone): logged once, since every
    /// later record is lost the same way.
    closed_logged: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Audit {
    /// A sink and the receiver its [`writer`] drains (`None` receiver when audit is off).
    pub fn new(
        config: &AuditConfig,
        dropped: IntCounter,
    ) -> (Self, Option<mpsc::Receiver<Record>>) {
        let closed_logged = std::sync::Arc::default();
        if config.output == AuditOutput::Off {
            let off = Self {
                tx: None,
                dropped,
                closed_logged,
            };
            return (off, None);
        }
        let (tx, rx) = mpsc::channel(config.queue);
        (
            Self {
                tx: Some(tx),
                dropped,
                closed_logged,
            },
            Some(rx),
        )
    }

    /// Whether records are kept at all (callers skip building them when not).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a record; never waits. A full queue drops it and counts the drop. So does a
    /// closed one (the writer has returned, which `app::run` lets happen only after serving
    /// ends), logged the first time: a record lost that way is a bug, not load.
    pub fn record(&self, r: Record) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(r) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.dropped.inc(),
            Err(mpsc::error::TrySendError::Closed(r)) => {
                self.dropped.inc();
                if !self
                    .closed_logged
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(
                        kind = r.kind,
                        event = r.event,
                        tool = r.tool.as_deref(),
                        "audit: a record came after the audit writer stopped and is lost \
                         (counted in mssql_mcp_audit_dropped_total; later ones are not logged)"
                    );
                }
            }
        }
    }
}

/// Where the writer puts records.
enum Sink {
    File(std::sync::Arc<std::sync::Mutex<RotatingFile>>),
    Stderr,
}

impl Sink {
    /// Writes `lines`; on failure hands back the error and the lines not written, to be tried
    /// again. Lines written before the failure are not handed back, so none is written twice.
    async fn write(&self, lines: Vec<String>) -> Result<(), (std::io::Error, Vec<String>)> {
        match self {
            Sink::File(f) => {
                let written = on_file(f, move |file| {
                    let written = file.write_lines(&lines);
                    written.map_err(|(e, done)| (e, lines.into_iter().skip(done).collect()))
                });
                match written.await {
                    Ok(written) => written,
                    // The blocking task panicked or was cancelled; its lines went with it.
                    Err(e) => Err((std::io::Error::other(e), Vec::new())),
                }
            }
            Sink::Stderr => {
                let mut err = std::io::stderr().lock();
                for (done, l) in lines.iter().enumerate() {
                    if let Err(e) = writeln!(err, "{l}") {
                        return Err((e, lines.into_iter().skip(done).collect()));
                    }
                }
                Ok(())
            }
        }
    }

    /// Flushes what was written to the disk (`audit.sync`); the journal's own business for
    /// stderr.
    async fn sync(&self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => on_file(f, RotatingFile::sync)
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Sink::Stderr => Ok(()),
        }
    }
}

/// Runs `op` on the file on the blocking pool: file writes and flushes are short but
/// blocking, so off the async workers.
async fn on_file<T: Send + 'static>(
    file: &std::sync::Arc<std::sync::Mutex<RotatingFile>>,
    op: impl FnOnce(&mut RotatingFile) -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || op(&mut file.lock().unwrap_or_else(|p| p.into_inner())))
        .await
}

/// Flushes `sink` to the disk; a failure is counted and logged (the first of a run, then one a
/// minute at most), and the end of a run of failures too. Whether it flushed.
async fn flushed(sink: &Sink, counters: &WriterCounters, failing: &mut super::FailureRun) -> bool {
    match sink.sync().await {
        Ok(()) => {
            if let Some((failures, _)) = failing.ended() {
                tracing::info!(
                    failed_flushes = failures,
                    "audit: flushing records to the disk again"
                );
            }
            true
        }
        Err(e) => {
            counters.write_errors.inc();
            if let Some(failed_flushes) = failing.failed(Instant::now(), LOG_EVERY).to_log() {
                tracing::error!(
                    error = %e,
                    failed_flushes,
                    "audit: cannot flush records to the disk; those written since the last \
                     flush may not survive a power loss (a later flush that succeeds cannot \
                     vouch for them)"
                );
            }
            false
        }
    }
}

/// Counts a run of failures and logs the first, then one a minute at most.
fn log_failure(failing: &mut super::FailureRun, e: &std::io::Error, waiting: usize, dir: &Path) {
    let Some(failed_writes) = failing.failed(Instant::now(), LOG_EVERY).to_log() else {
        return;
    };
    tracing::error!(
        error = %e,
        failed_writes,
        waiting,
        path = %dir.join(FILE).display(),
        "audit: cannot write records; keeping them to try again"
    );
}

/// The writer's counters (`mssql_mcp_audit_write_errors_total`,
/// `mssql_mcp_audit_dropped_total`).
#[derive(Clone)]
pub struct WriterCounters {
    pub write_errors: IntCounter,
    pub dropped: IntCounter,
}

/// Most records written at once.
const MAX_BATCH: usize = 1024;
/// How long the writer waits for more records after the first of a batch arrives.
const COALESCE: Duration = Duration::from_millis(20);
/// How long written records may wait for their flush to the disk (`audit.sync`): one
/// `fdatasync` a second however busy (plus one before each rotation), since one per batch (up
/// to fifty a second) measurably slowed a loaded server (`benches/README.md`, session 12).
const SYNC_WITHIN: Duration = Duration::from_secs(1);
/// How soon lines whose write failed are tried again when no new record comes first.
const RETRY: Duration = Duration::from_secs(1);
/// How often a write failure that goes on is logged (each one is counted).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The owned writer: drains `rx` until `stop`, then writes what is still queued and returns.
/// Records reach the file within [`COALESCE`] of being recorded, and the disk within
/// [`SYNC_WITHIN`] more when `audit.sync` is on (and at once on shutdown).
///
/// A failed write (a full disk, a state directory removed or made unwritable) keeps its lines
/// and tries them again with the next batch or after [`RETRY`], keeping at most the queue's
/// size (`audit.queue`) of them; older ones beyond that are dropped and counted. Each failure
/// is counted; the first of a run of failures is logged, then one line a minute at most, so a
/// broken disk does not flood the log fifty times a second.
pub async fn writer(
    mut rx: mpsc::Receiver<Record>,
    config: AuditConfig,
    state_dir: PathBuf,
    counters: WriterCounters,
    stop: CancellationToken,
) {
    let sink = match config.output {
        AuditOutput::File => Sink::File(std::sync::Arc::new(std::sync::Mutex::new(
            RotatingFile::new(state_dir.join(FILE), config.max_bytes, config.keep)
                .syncing(config.sync),
        ))),
        AuditOutput::Stderr => Sink::Stderr,
        AuditOutput::Off => return,
    };
    let keep = config.queue.max(MAX_BATCH);
    let mut batch = Vec::new();
    // Lines not yet written: this batch's, and any a failed write handed back.
    let mut pending: Vec<String> = Vec::new();
    let mut failing = super::FailureRun::default();
    let mut flush_failing = super::FailureRun::default();
    // When what was written last must be flushed to the disk.
    let mut sync_due: Option<tokio::time::Instant> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
    loop {
        let mut open = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n > 0,
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(RETRY), if !pending.is_empty() => true,
            _ = tokio::time::sleep_until(sync_due.unwrap_or_else(far)), if sync_due.is_some() => {
                sync_due = match flushed(&sink, &counters, &mut flush_failing).await {
                    true => None,
                    false => Some(tokio::time::Instant::now() + RETRY),
                };
                continue;
            }
        };
        if open && !batch.is_empty() && batch.len() < MAX_BATCH {
            // Let the records of the next few milliseconds join this write: under load that
            // turns one hand-off to the blocking pool per record into a few per second.
            tokio::select! {
                _ = tokio::time::sleep(COALESCE) => {}
                _ = stop.cancelled() => open = false,
            }
        }
        while batch.len() < MAX_BATCH || !open {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        pending.extend(
            batch
                .drain(..)
                .filter_map(|r| serde_json::to_string(&r).ok()),
        );
        if pending.len() > keep {
            let excess = pending.len() - keep;
            pending.drain(..excess);
            counters.dropped.inc_by(excess as u64);
        }
        if !pending.is_empty() {
            match sink.write(std::mem::take(&mut pending)).await {
                Ok(()) => {
                    if let Some((failures, _)) = failing.ended() {
                        tracing::info!(failed_writes = failures, "audit: writing records again");
                    }
                }
                Err((e, lines)) => {
                    counters.write_errors.inc();
                    pending = lines;
                    log_failure(&mut failing, &e, pending.len(), &state_dir);
                }
            }
            // Whatever was written (all of it, or the lines before a failure) gets its flush.
            if config.sync && sync_due.is_none() {
                sync_due = Some(tokio::time::Instant::now() + SYNC_WITHIN);
            }
        }
        if !open {
            if config.sync {
                flushed(&sink, &counters, &mut flush_failing).await;
            }
            if !pending.is_empty() {
                counters.dropped.inc_by(pending.len() as u64);
                tracing::error!(
                    lost = pending.len(),
                    "audit: records still unwritten at shutdown"
                );
            }
            return;
        }
    }
}

/// An append-only file rotated when it would pass `max_bytes`, whose lines are whole: a write
/// that fails part-way is cut back off the file, and a file found ending mid-line (a process
/// killed while writing, a cut that failed) gets a line break before the next record, so a
/// torn line never swallows the one after it.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<std::fs::File>,
    size: u64,
    /// The file does not end with a line break.
    torn: bool,
    /// Writes are flushed to the disk by [`RotatingFile::sync`] ([`AuditConfig::sync`]).
    sync: bool,
    /// Written since the last flush to the disk.
    unsynced: bool,
    /// The directory's entries changed (the file made, or rotated) since its last flush.
    dir_unsynced: bool,
    /// A flush before a rotation failed; [`RotatingFile::sync`] reports it.
    flush_failed: Option<std::io::Error>,
}

impl RotatingFile {
    pub fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self {
            path,
            max_bytes,
            keep,
            file: None,
            size: 0,
            torn: false,
            sync: false,
            unsynced: false,
            dir_unsynced: false,
            flush_failed: None,
        }
    }

    /// Flush writes to the disk when [`RotatingFile::sync`] is called, and before rotating.
    pub fn syncing(mut self, on: bool) -> Self {
        self.sync = on;
        self
    }

    fn open(&mut self) -> std::io::Result<&mut std::fs::File> {
        if self.file.is_none() {
            let mut opts = std::fs::OpenOptions::new();
            // Read too: to see whether the file ends mid-line.
            opts.create(true).append(true).read(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let f = match opts.open(&self.path) {
                // The state directory is missing (never made, or removed while running):
                // make it, private, and try once more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(dir) = self.path.parent() {
                        super::private_dir(dir)?;
                    }
                    opts.open(&self.path)?
                }
                other => other?,
            };
            self.size = f.metadata()?.len();
            self.torn = self.size > 0 && last_byte(&f, self.size)? != b'\n';
            // Perhaps just made: its name reaches the disk with the directory.
            self.dir_unsynced |= self.size == 0;
            self.file = Some(f);
        }
        match self.file.as_mut() {
            Some(f) => Ok(f),
            None => Err(std::io::Error::other("audit file not open")),
        }
    }

    /// Lets go of the open file when the path no longer names it: moved away or deleted by
    /// someone else (logrotate, an operator). The next write makes a new file at the path
    /// instead of following the old one, where records would go unseen or, once it is
    /// deleted, be lost. One `stat` per batch of records.
    fn reopen_if_moved(&mut self) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let Some(f) = &self.file else { return };
            let same = match (f.metadata(), std::fs::metadata(&self.path)) {
                (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
                _ => false,
            };
            if !same {
                tracing::info!(path = %self.path.display(), "audit: the file was moved or deleted; starting a new one");
                // What went into the old file reaches the disk before it is let go, as before
                // a rotation (with `[audit] sync`).
                if self.sync
                    && let Err(e) = f.sync_data()
                {
                    self.flush_failed = Some(e);
                }
                self.file = None;
                self.unsynced = false;
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        self.dir_unsynced = true;
        if self.keep == 0 {
            return std::fs::remove_file(&self.path);
        }
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(1))
    }

    /// Appends lines, rotating first whenever the next line would pass the limit.
    /// Lines that fit before the limit go out in one `write` each batch, not two per line.
    /// On failure, returns the error with how many of `lines` (from the first) were written;
    /// the rest are not on the file, not even in part.
    pub fn write_lines(&mut self, lines: &[String]) -> Result<(), (std::io::Error, usize)> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        // Lines written, and lines in `buf`.
        let (mut done, mut held) = (0, 0);
        self.reopen_if_moved();
        for line in lines {
            let len = line.len() as u64 + 1;
            self.open().map_err(|e| (e, done))?;
            if self.size + buf.len() as u64 > 0
                && self.size + buf.len() as u64 + len > self.max_bytes
            {
                self.flush_buf(&mut buf).map_err(|e| (e, done))?;
                done += std::mem::take(&mut held);
                // The file about to be renamed away goes to the disk first (a failure here is
                // reported by the next `sync`, and does not stop the rotation or the writes).
                if self.keep > 0
                    && let Err(e) = self.flush_to_disk()
                {
                    self.flush_failed = Some(e);
                }
                if self.size > 0 {
                    self.rotate().map_err(|e| (e, done))?;
                }
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            held += 1;
        }
        self.flush_buf(&mut buf).map_err(|e| (e, done))
    }

    /// Whether there are writes [`RotatingFile::sync`] would flush.
    fn unsynced(&self) -> bool {
        self.sync && self.unsynced
    }

    /// `fdatasync` of what was written since the last one (and `fsync` of the directory when
    /// the file was made or rotated since), when syncing. A failure is
    /// reported but the lines it covers stay written: they are in the file (a retry would
    /// write them twice), only perhaps not yet on the disk.
    pub fn sync(&mut self) -> std::io::Result<()> {
        let now = self.flush_to_disk();
        match self.flush_failed.take() {
            Some(e) => Err(e),
            None => now,
        }
    }

    fn flush_to_disk(&mut self) -> std::io::Result<()> {
        if !self.unsynced() {
            return Ok(());
        }
        let failed = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("fdatasync failed ({e}): records in the file may not be on the disk"),
            )
        };
        match &self.file {
            Some(f) => f.sync_data().map_err(failed)?,
            // Closed after a failed write: what was written before is still to flush.
            None => std::fs::File::open(&self.path)
                .and_then(|f| f.sync_data())
                .map_err(failed)?,
        }
        if self.dir_unsynced
            && let Some(dir) = self.path.parent()
        {
            // A new or renamed file's name is the directory's data.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(failed)?;
            self.dir_unsynced = false;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Writes `buf` whole or not at all: a write can fail part-way (a full disk, a file size
    /// limit), and then the file is cut back to where it began.
    fn flush_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.open()?;
        let before = self.size;
        if self.torn {
            buf.insert(0, b'\n');
        }
        let f = self.open()?;
        if let Err(e) = f.write_all(buf) {
            if f.set_len(before).is_err() {
                // Not cut: open again before the next write, to see how the file ends.
                self.file = None;
            }
            return Err(e);
        }
        self.size += buf.len() as u64;
        self.torn = false;
        self.unsynced = true;
        buf.clear();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The last byte of `f`, which is `size` bytes long.
fn last_byte(f: &std::fs::File, size: u64) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut b, size - 1)?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = f;
        f.seek(SeekFrom::Start(size - 1))?;
        f.read_exact(&mut b)?;
    }
    Ok(b[0])
}

/// Now as RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`).
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_millis() as i64)
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant), no date crate needed.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    if !(0..=9999).contains(&y) {
        // Outside what four digits hold; no clock this runs on says so, but stay correct.
        return format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms.rem_euclid(1000)
        );
    }
    // Written digit by digit: this runs for every audit record, and `format!` with seven
    // padded fields cost more than the rest of the record.
    let mut out = String::with_capacity(24);
    push_digits(&mut out, y, 4);
    for (sep, v) in [
        ('-', m),
        ('-', d),
        ('T', rem / 3600),
        (':', rem % 3600 / 60),
        (':', rem % 60),
    ] {
        out.push(sep);
        push_digits(&mut out, v, 2);
    }
    out.push('.');
    push_digits(&mut out, ms.rem_euclid(1000), 3);
    out.push('Z');
    out
}

/// Appends the last `width` decimal digits of `v` (not negative), zero-padded.
fn push_digits(out: &mut String, v: i64, width: u32) {
    for p in (0..width).rev() {
        out.push(char::from(b'0' + (v / 10_i64.pow(p) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Before the epoch, and past four-digit years: still RFC 3339's shape.
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        // Times spread over one day (about one an hour, every field moving) agree with `format!`.
        for ms in (1_764_115_200_000_i64..1_764_201_600_000).step_by(3_599_999) {
            let secs = ms / 1000;
            let rem = secs % 86_400;
            let want = format!(
                "2025-11-26T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                ms % 1000
            );
            assert_eq!(rfc3339(ms), want);
        }
    }

    #[test]
    fn a_file_rotates_before_it_passes_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f = RotatingFile::new(dir.path().join(FILE), 100, 2);
        let line = "x".repeat(39);
        for _ in 0..7 {
            f.write_lines(std::slice::from_ref(&line)).expect("write");
        }
        let len = |p: &str| std::fs::metadata(dir.path().join(p)).map(|m| m.len()).ok();
        assert_eq!(len(FILE), Some(40));
        assert_eq!(len("audit.jsonl.1"), Some(80));
        assert_eq!(len("audit.jsonl.2"), Some(80));
        assert_eq!(len("audit.jsonl.3"), None);
    }

    /// A file moved away (logrotate) or deleted by someone else is not written to any more:
    /// the next records start a new file at the path.
    #[test]
    fn a_file_moved_or_deleted_by_someone_else_is_started_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let mut f = RotatingFile::new(path.clone(), 1 << 20, 2);
        f.write_lines(&["{\"a\":1}".to_string()]).expect("write");
        let moved = dir.path().join("audit.jsonl-20261127");
        std::fs::rename(&path, &moved).expect("logrotate");
        f.write_lines(&["{\"b\":2}".to_string()]).expect("write");
        assert_eq!(
            std::fs::read_to_string(&moved).ok().as_deref(),
            Some("{\"a\":1}\n")
        );
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("{\"b\":2}\n")
        );
        std::fs::remove_file(&path).expect("an operator deletes it");
        f.write_lines(&["{\"c\":3}".to_string()]).expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("{\"c\":3}\n")
        );
        // Still private when made again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
    }

    /// A file left ending mid-line (the process was killed while writing) gets a line break
    /// before the next record, which then stands on a line of its own.
    #[test]
    fn a_file_ending_mid_line_gets_a_line_break_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").expect("torn file");
        let mut f = RotatingFile::new(path.clone(), 1 << 20, 2);
        f.write_lines(&["{\"c\":3}".to_string(), "{\"d\":4}".to_string()])
            .expect("write");
        f.write_lines(&["{\"e\":5}".to_string()]).expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("{\"a\":1}\n{\"b\":\n{\"c\":3}\n{\"d\":4}\n{\"e\":5}\n")
        );
    }

    #[test]
    fn a_missing_state_directory_is_made_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state").join("nested");
        let mut f = RotatingFile::new(state.join(FILE), 1 << 20, 2);
        f.write_lines(&["{}".to_string()]).expect("write");
        assert_eq!(
            std::fs::read_to_string(state.join(FILE)).ok().as_deref(),
            Some("{}\n")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&state).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o700));
        }
    }

    /// A writer whose state directory is blocked by a file, so that opening the audit file
    /// under it fails (ENOTDIR), until the test removes the file.
    struct Blocked {
        _dir: tempfile::TempDir,
        state: PathBuf,
        audit: Audit,
        counters: WriterCounters,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Blocked {
        fn start() -> Blocked {
            let dir = tempfile::tempdir().expect("tempdir");
            let state = dir.path().join("state");
            std::fs::write(&state, b"not a directory").expect("blocker");
            let config = AuditConfig::default();
            let (audit, rx) = Audit::new(&config, IntCounter::new("q", "q").expect("counter"));
            let Some(rx) = rx else {
                panic!("audit is on by default");
            };
            let counters = WriterCounters {
                write_errors: IntCounter::new("e", "e").expect("counter"),
                dropped: IntCounter::new("d", "d").expect("counter"),
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(writer(
                rx,
                config,
                state.clone(),
                counters.clone(),
                stop.clone(),
            ));
            Blocked {
                _dir: dir,
                state,
                audit,
                counters,
                stop,
                task,
            }
        }

        /// Records `outcome`, waits for the write to fail, then unblocks the directory.
        async fn fail_then_unblock(&self, outcome: &'static str) {
            self.audit.record(Record::new("tool_call", outcome));
            self.until("the write never failed", || {
                self.counters.write_errors.get() > 0
            })
            .await;
            std::fs::remove_file(&self.state).expect("remove blocker");
        }

        /// The audit file's text once `done` says it is complete.
        async fn file_when(&self, done: impl Fn(&str) -> bool) -> String {
            let file = self.state.join(FILE);
            let read = || std::fs::read_to_string(&file).unwrap_or_default();
            self.until("the kept lines were never written", || done(&read()))
                .await;
            read()
        }

        async fn until(&self, what: &str, cond: impl Fn() -> bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !cond() {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        async fn stop(self) {
            self.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        }
    }

    /// A write that fails keeps its lines: once the directory can be made they are written,
    /// with the records that came after, in order. The failure is counted, nothing dropped.
    #[tokio::test]
    async fn lines_a_failed_write_kept_are_written_later() {
        let w = Blocked::start();
        w.fail_then_unblock("first").await;
        w.audit.record(Record::new("tool_call", "second"));
        let text = w.file_when(|t| t.lines().count() >= 2).await;
        let outcomes: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["outcome"].as_str().map(str::to_string))
            .collect();
        assert_eq!(outcomes, ["first", "second"]);
        assert_eq!(w.counters.dropped.get(), 0);
        w.stop().await;
    }

    /// With nothing new arriving, kept lines are tried again on their own.
    #[tokio::test]
    async fn kept_lines_are_retried_without_new_records() {
        let w = Blocked::start();
        w.fail_then_unblock("only").await;
        let text = w.file_when(|t| t.contains("\"only\"")).await;
        assert_eq!(text.lines().count(), 1);
        w.stop().await;
    }

    #[test]
    fn long_queries_are_cut_on_a_character_boundary() {
        let r = Record::new("tool_call", "ok").with_query("é".repeat(5000));
        let q = r.query.unwrap_or_default();
        assert!(q.len() <= MAX_QUERY + '…'.len_utf8());
        assert!(q.ends_with('…'));
    }
}
