//! Request ids (`x-request-id`): unique within a process run and across runs, and cheap.
//!
//! A UUID v4 per request costs a `getrandom` system call; a process-wide counter behind a
//! random per-run prefix (`3f9a1c07-000001a4`) costs an atomic add. The id only has to tie
//! log lines and responses together, not be unguessable. A request that arrives with its own
//! `x-request-id` keeps it.

use std::io::Write;
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
    /// The next id: the run prefix as 8 hex digits, `-`, the counter as at least 8. Written
    /// into a buffer on the stack (at most 8 + 1 + 16 bytes), not a `String`.
    pub fn next(&self) -> HeaderValue {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 25];
        let len = {
            let mut rest = &mut buf[..];
            let _ = write!(rest, "{:08x}-{n:08x}", self.inner.prefix);
            25 - rest.len()
        };
        HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("-"))
    }
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
        // The id is what `format!` would write, past 8 counter digits too.
        for n in [0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            ids.inner.next.store(n, Ordering::Relaxed);
            let want = format!("{:08x}-{n:08x}", ids.inner.prefix);
            assert_eq!(ids.next().to_str().ok(), Some(want.as_str()));
        }
        // Another run (another maker) starts from another prefix (1 in 2^32 to collide).
        let c = RequestIds::new().next();
        assert_ne!(c.to_str().expect("ascii")[..8], a[..8]);
    }
}
