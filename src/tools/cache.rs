//! Per-scope caches: rows of ad-hoc query results (so `fetch` can resolve ids of rows that have
//! no primary key) and paging cursors. Both are size-bounded and expire by TTL (moka), so a
//! busy client cannot grow server memory without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use rand::RngExt;
use serde_json::{Map, Value};

/// One row of an ad-hoc result, as `fetch` returns it later.
#[derive(Debug, Clone)]
pub struct CachedRow {
    pub title: String,
    /// Column name → value, after masking.
    pub values: Map<String, Value>,
    /// The SQL that produced it, for provenance.
    pub sql: Arc<str>,
}

/// What a paging cursor continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorTarget {
    /// `execute_sql` of this exact text.
    Sql(String),
    /// `get_table_sample` of this table id.
    Table(String),
}

/// Server-side state behind an opaque cursor.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub target: CursorTarget,
    pub offset: usize,
    pub page_size: usize,
}

/// The caches of one scope.
pub struct ScopeCache {
    rows: Cache<String, Arc<Vec<CachedRow>>>,
    cursors: Cache<String, Cursor>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A random token for cache keys and cursors: 96 bits, alphanumeric.
pub fn token() -> String {
    let mut rng = rand::rng();
    let n: u128 = rng.random();
    format!("{:024x}", n & ((1u128 << 96) - 1))
}

impl ScopeCache {
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        Self {
            rows: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_entries)
                .build(),
            cursors: Cache::builder()
                .time_to_idle(Duration::from_secs(600))
                .max_capacity(max_entries)
                .build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Stores the rows of one result under a new token.
    pub fn put_rows(&self, rows: Vec<CachedRow>) -> String {
        let t = token();
        self.rows.insert(t.clone(), Arc::new(rows));
        t
    }

    /// Row `index` of the result stored under `token`.
    pub fn get_row(&self, token: &str, index: usize) -> Option<CachedRow> {
        let found = self
            .rows
            .get(token)
            .and_then(|rows| rows.get(index).cloned());
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Stores a cursor and returns its opaque id.
    pub fn put_cursor(&self, cursor: Cursor) -> String {
        let t = token();
        self.cursors.insert(t.clone(), cursor);
        t
    }

    /// Takes a cursor (single use: the next page gets a fresh one).
    pub fn take_cursor(&self, id: &str) -> Option<Cursor> {
        self.cursors.remove(id)
    }

    /// Entries, hits and misses, for metrics and `cache stats`.
    pub fn stats(&self) -> (u64, u64, u64) {
        self.rows.run_pending_tasks();
        (
            self.rows.entry_count(),
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Drops every cached result and cursor.
    pub fn clear(&self) {
        self.rows.invalidate_all();
        self.cursors.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_single_use() {
        let c = ScopeCache::new(Duration::from_secs(60), 10);
        let id = c.put_cursor(Cursor {
            target: CursorTarget::Sql("SELECT 1".into()),
            offset: 10,
            page_size: 10,
        });
        assert!(c.take_cursor(&id).is_some());
        assert!(c.take_cursor(&id).is_none());
    }

    #[test]
    fn the_row_cache_is_bounded() {
        let c = ScopeCache::new(Duration::from_secs(60), 5);
        for _ in 0..50 {
            c.put_rows(vec![]);
        }
        c.rows.run_pending_tasks();
        assert!(c.rows.entry_count() <= 5);
    }

    #[test]
    fn tokens_are_unguessable_looking() {
        let a = token();
        assert_eq!(a.len(), 24);
        assert_ne!(a, token());
    }
}
