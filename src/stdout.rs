//! What the command line prints on standard output, written so that a reader who goes away is
//! a normal end rather than a panic.
//!
//! `println!` panics when a write fails, and Rust ignores SIGPIPE, so
//! `mssql-mcp check-config … | head -1` used to end in "failed printing to stdout: Broken
//! pipe (os error 32)" and status 101. Every line the CLI prints goes through [`outln!`] and
//! [`out!`] instead:
//!
//! - a broken pipe (`EPIPE`) means nobody reads any more: this and every later write is
//!   dropped, quietly, and the command runs to its end and exits with the status it would have
//!   had (a `check-config` that found a problem still exits 64, `head` or not);
//! - any other failure (a full disk under `> file`) is reported once on standard error by
//!   [`finish`], and a command that would have succeeded exits with `EX_IOERR` (74) instead,
//!   so a script does not take a cut-off listing for a whole one.
//!
//! Standard error gets the same care from [`errln!`], which never panics (a log that cannot be
//! written has nowhere to be reported).

use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// `println!` for the CLI's output: see the module doc.
macro_rules! outln {
    () => {
        $crate::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the CLI's output: see the module doc.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    () => {
        $crate::stdout::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

/// Exit code when standard output could not be written (sysexits `EX_IOERR`).
pub const EX_IOERR: u8 = 74;

/// Set by the first broken pipe: nobody reads standard output any more.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// The first write failure other than a broken pipe, for [`finish`] to report.
static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Writes `args` to standard output (see the module doc for what a failure does).
pub fn write(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = std::io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        failed(e);
    }
}

fn failed(e: std::io::Error) {
    if e.kind() == ErrorKind::BrokenPipe {
        CLOSED.store(true, Ordering::Relaxed);
        return;
    }
    let mut first = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if first.is_none() {
        *first = Some(e.to_string());
    }
}

/// Flushes standard output and turns `code` into the process's exit code: unchanged, unless a
/// write failed for a reason other than a broken pipe while `code` said success.
pub fn finish(code: ExitCode) -> ExitCode {
    if !CLOSED.load(Ordering::Relaxed)
        && let Err(e) = std::io::stdout().lock().flush()
    {
        failed(e);
    }
    let first = FAILED.lock().unwrap_or_else(|p| p.into_inner()).take();
    match first {
        Some(e) => {
            errln!("error: cannot write to standard output: {e}");
            if code == ExitCode::SUCCESS {
                ExitCode::from(EX_IOERR)
            } else {
                code
            }
        }
        None => code,
    }
}

/// Writes `args` to standard error, ignoring a failure.
pub fn write_err(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}
