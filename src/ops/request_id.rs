//! Request ids (`x-request-id`): unique within a process run and across runs, and cheap.
//!
//! A UUID v4 per request costs a `getrandom` system call; a process-wide counter behind a
//! random per-run prefix (`3f9a1c07-000001a4`) costs an atomic add. The id only has to tie
//! log lines and responses together, not be unguessable. A request that arrives with its own
//! `x-request-id` keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderValue;
use rand::RngExt;

/// Hands out `{run prefix}-{counter}` ids.
#[derive(Clone)]
pub struct RequestIds {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                prefix: rand::rng().random(),
                next: AtomicU64::new(1),
            }),
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    /// The next id: the run prefix as 8 hex digits, `-`, the counter as at least 8.
    pub fn next(&self) -> HeaderValue {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 25];
        let mut len = push_hex(&mut buf, 0, u64::from(self.inner.prefix), 8);
        buf[len] = b'-';
        len = push_hex(&mut buf, len + 1, n, 8);
        HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("-"))
    }
}

/// Writes `v` in lower-case hex at `buf[at..]`, at least `min` digits, and returns the end.
fn push_hex(buf: &mut [u8; 25], at: usize, v: u64, min: usize) -> usize {
    let digits = (16 - v.leading_zeros() as usize / 4).max(min);
    for i in 0..digits {
        let nibble = (v >> (4 * (digits - 1 - i))) & 0xf;
        buf[at + i] = b"0123456789abcdef"[nibble as usize];
    }
    at + digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_share_the_run_prefix() {
        let ids = RequestIds::new();
        let a = ids.next().to_str().expect("ascii").to_string();
        let b = ids.clone().next().to_str().expect("ascii").to_string();
        assert_ne!(a, b);
        assert_eq!(a[..9], b[..9]);
        assert_eq!(a.len(), 17);
        // The digits are written as `format!` would write them, past 8 digits too.
        for n in [0u64, 1, 0xabc, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            let mut buf = [0u8; 25];
            let end = push_hex(&mut buf, 0, n, 8);
            assert_eq!(
                std::str::from_utf8(&buf[..end]),
                Ok(format!("{n:08x}").as_str())
            );
        }
        // Another run (another maker) starts from another prefix (1 in 2^32 to collide).
        let c = RequestIds::new().next();
        assert_ne!(c.to_str().expect("ascii")[..8], a[..8]);
    }
}
