//! Request ids (`x-request-id`): unique within a process run and across runs, and cheap.
//!
//! A UUID v4 per request costs a `getrandom` system call; a process-wide counter behind a
//! random per-run prefix (`3f9a1c07-000001a4`) costs an atomic add. The id only has to tie
//! log lines and responses together, not be unguessable. A request that arrives with its own
//! `x-request-id` keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use rand::RngExt;
use tower_http::request_id::{MakeRequestId, RequestId};

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

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-{n:08x}", self.inner.prefix);
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_share_the_run_prefix() {
        let mut ids = RequestIds::new();
        let req = Request::new(());
        let a = ids.make_request_id(&req).expect("id");
        let b = ids.clone().make_request_id(&req).expect("id");
        let (a, b) = (
            a.header_value().to_str().expect("ascii").to_string(),
            b.header_value().to_str().expect("ascii").to_string(),
        );
        assert_ne!(a, b);
        assert_eq!(a[..9], b[..9]);
        assert_eq!(a.len(), 17);
        // Another run (another maker) starts from another prefix (1 in 2^32 to collide).
        let c = RequestIds::new().make_request_id(&req).expect("id");
        assert_ne!(c.header_value().to_str().expect("ascii")[..8], a[..8]);
    }
}
