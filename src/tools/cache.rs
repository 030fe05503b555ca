//! Per-scope caches: rows of ad-hoc query results (so `fetch` can resolve ids of rows that have
//! no primary key) and paging cursors. Both expire (moka) and are bounded in entries; the rows
//! also in bytes, and a cursor holds a digest of its query rather than the text, so a busy
//! client cannot grow server memory without bound. One signed-in user holds at most half of
//! either cache ([`Shares`]), so a busy user cannot push everyone else's out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::policy::EvictionPolicy;
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
    /// Columns whose value in this row was cut ([`crate::db::RowSet::cut_in_row`]).
    pub cut_columns: Vec<String>,
}

/// What a paging cursor continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorTarget {
    /// `execute_sql` of this exact text (its SHA-256: the caller sends the text again).
    Sql([u8; 32]),
    /// `get_table_sample` of this table id.
    Table(String),
}

impl CursorTarget {
    pub fn sql(text: &str) -> CursorTarget {
        use sha2::Digest;
        CursorTarget::Sql(sha2::Sha256::digest(text.as_bytes()).into())
    }
}

/// Server-side state behind an opaque cursor.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub target: CursorTarget,
    pub offset: usize,
    pub page_size: usize,
    /// The signed-in user it was given to: only they page on with it. `None` without
    /// authentication.
    pub owner: Option<String>,
}

/// A cursor taken out of the cache while its page runs. Out of the cache, so that a second
/// call with the same cursor meanwhile is refused and one cursor never answers two pages.
/// [`TakenCursor::spend`] once the page is answered; dropped unspent (the page's query
/// failed or timed out, or the call was cancelled) it is put back under its id, so that the
/// client can ask for that page again instead of starting over from the first.
pub struct TakenCursor<'a> {
    cache: &'a ScopeCache,
    id: String,
    cursor: Cursor,
    spent: bool,
}

impl TakenCursor<'_> {
    /// Where the page starts and how many rows it holds.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// The page was answered: the cursor is used up.
    pub fn spend(mut self) {
        self.spent = true;
    }
}

impl Drop for TakenCursor<'_> {
    fn drop(&mut self) {
        if !self.spent {
            let id = std::mem::take(&mut self.id);
            self.cache.cursors.insert(id, self.cursor.clone());
        }
    }
}

/// The rows of one result and what `cache stats` reports about them.
struct CachedResult {
    rows: Vec<CachedRow>,
    /// The signed-in user whose query made it: only they read it back. `None` without
    /// authentication.
    owner: Option<String>,
    /// When it was stored (Unix milliseconds).
    stored_at: i64,
    /// Rough size in memory (the text of titles, values and SQL).
    bytes: usize,
}

/// Numbers for `/metrics` (cheap: no walk over the entries).
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheCounts {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
}

/// What `mssql-mcp cache stats` shows for one scope.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStats {
    /// Cached results (each the rows of one search or query).
    pub entries: u64,
    /// Open paging cursors.
    pub cursors: u64,
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses), when there was any lookup.
    pub hit_ratio: Option<f64>,
    /// Age of the oldest cached result, in seconds.
    pub oldest_entry_age_secs: Option<u64>,
    /// Estimated memory of the cached rows, in bytes.
    pub memory_bytes: u64,
    /// Seconds a result stays cached.
    pub ttl_secs: u64,
    /// Most results kept.
    pub max_entries: u64,
    /// About how many bytes of results are kept at most.
    pub max_bytes: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn estimate(rows: &[CachedRow]) -> usize {
    rows.iter()
        .map(|r| {
            64 + r.title.len()
                + r.values
                    .iter()
                    .map(|(k, v)| 48 + k.len() + v.to_string().len())
                    .sum::<usize>()
        })
        .sum::<usize>()
        + rows.first().map(|r| r.sql.len()).unwrap_or(0)
}

/// What each signed-in user holds of one cache, in the order stored: at most `max_weight`
/// and `max_entries`. Past either, the user's own oldest entries go, whatever their use since
/// (moka's LRU order is not visible from outside). A token whose entry already expired or was
/// evicted still counts until it is the oldest, so a user is held to less than the share,
/// never more. Without authentication there is no owner and no share.
struct Shares {
    max_weight: u64,
    max_entries: usize,
    held: Mutex<HashMap<String, Held>>,
}

#[derive(Default)]
struct Held {
    tokens: VecDeque<(String, u64)>,
    weight: u64,
}

impl Shares {
    fn new(max_weight: u64, max_entries: u64) -> Self {
        Self {
            max_weight,
            max_entries: usize::try_from(max_entries).unwrap_or(usize::MAX).max(1),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `token` (weighing `weight`) as `owner`'s, and returns the tokens of theirs that
    /// must go to keep them within the share (never the one just stored).
    fn add(&self, owner: &str, token: &str, weight: u64) -> Vec<String> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let h = match held.get_mut(owner) {
            Some(h) => h,
            None => held.entry(owner.to_string()).or_default(),
        };
        h.tokens.push_back((token.to_string(), weight));
        h.weight += weight;
        let mut evict = Vec::new();
        while h.tokens.len() > 1
            && (h.weight > self.max_weight || h.tokens.len() > self.max_entries)
        {
            if let Some((t, w)) = h.tokens.pop_front() {
                h.weight -= w;
                evict.push(t);
            }
        }
        evict
    }

    fn clear(&self) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// The caches of one scope.
pub struct ScopeCache {
    rows: Cache<String, Arc<CachedResult>>,
    row_shares: Shares,
    /// Each result weighs its size, and at least this (an even share of the bytes per entry).
    min_weight: u64,
    ttl: Duration,
    max_entries: u64,
    max_bytes: u64,
    cursors: Cache<String, Cursor>,
    cursor_shares: Shares,
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
    /// Results live `ttl`; at most `max_entries` of them and about `max_bytes` in all are kept
    /// (the least used go first). A result larger than `max_bytes` is not kept.
    pub fn new(ttl: Duration, max_entries: u64, max_bytes: u64) -> Self {
        // One capacity bounds both: each result weighs its size, and at least an even share
        // of the bytes per entry, so no more than `max_entries` fit either.
        let share = (max_bytes / max_entries.max(1)).max(1);
        // Least recently used first: moka's default policy (TinyLFU) admits a new entry only
        // if it was asked for more often than what it would push out, and a result is stored
        // before anyone asks for it, so a full cache would turn every new result away.
        Self {
            rows: Cache::builder()
                .eviction_policy(EvictionPolicy::lru())
                .time_to_live(ttl)
                .weigher(move |_: &String, r: &Arc<CachedResult>| {
                    u32::try_from((r.bytes as u64).max(share)).unwrap_or(u32::MAX)
                })
                .max_capacity(max_bytes)
                .build(),
            cursors: Cache::builder()
                .eviction_policy(EvictionPolicy::lru())
                .time_to_idle(Duration::from_secs(600))
                .max_capacity(max_entries)
                .build(),
            row_shares: Shares::new(max_bytes / 2, max_entries / 2),
            cursor_shares: Shares::new(u64::MAX, max_entries / 2),
            min_weight: share,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            ttl,
            max_entries,
            max_bytes,
        }
    }

    /// Stores the rows of one result of `owner`'s under a new token; past the owner's share
    /// of the cache, their oldest results go.
    pub fn put_rows(&self, rows: Vec<CachedRow>, owner: Option<&str>) -> String {
        let t = token();
        let bytes = estimate(&rows);
        if let Some(owner) = owner {
            let weight = (bytes as u64).max(self.min_weight);
            for old in self.row_shares.add(owner, &t, weight) {
                self.rows.invalidate(&old);
            }
        }
        self.rows.insert(
            t.clone(),
            Arc::new(CachedResult {
                rows,
                owner: owner.map(str::to_string),
                stored_at: now_ms(),
                bytes,
            }),
        );
        t
    }

    /// Row `index` of the result stored under `token`, if `owner` is whose it is. Another
    /// user of the scope holding the id (a record URL in a shared chat) finds nothing, as if
    /// it had expired: the query and its rows were that user's.
    pub fn get_row(&self, token: &str, index: usize, owner: Option<&str>) -> Option<CachedRow> {
        let found = self
            .rows
            .get(token)
            .filter(|r| r.owner.is_none() || r.owner.as_deref() == owner)
            .and_then(|r| r.rows.get(index).cloned());
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Stores a cursor and returns its opaque id; past its owner's share of the cursors,
    /// their oldest go.
    pub fn put_cursor(&self, cursor: Cursor) -> String {
        let t = token();
        if let Some(owner) = &cursor.owner {
            for old in self.cursor_shares.add(owner, &t, 1) {
                self.cursors.invalidate(&old);
            }
        }
        self.cursors.insert(t.clone(), cursor);
        t
    }

    /// Takes `owner`'s cursor of `target` for the page it continues (single use: the page
    /// answered carries a fresh one). Another user's cursor is not found. A cursor of another
    /// target is left in place and reported as `Err`, so a mistaken call does not cost the
    /// caller its cursor; nor does a page that fails ([`TakenCursor`]).
    pub fn take_cursor(
        &self,
        id: &str,
        target: &CursorTarget,
        owner: Option<&str>,
    ) -> Option<Result<TakenCursor<'_>, ()>> {
        let found = self
            .cursors
            .get(id)
            .filter(|c| c.owner.is_none() || c.owner.as_deref() == owner)?;
        if &found.target != target {
            return Some(Err(()));
        }
        // Removed only if still there: two calls racing with one cursor get one page.
        let cursor = self.cursors.remove(id)?;
        Some(Ok(TakenCursor {
            cache: self,
            id: id.to_string(),
            cursor,
            spent: false,
        }))
    }

    /// Entries, hits and misses, for metrics (moka's count may lag by a few inserts).
    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            entries: self.rows.entry_count(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The full picture for `mssql-mcp cache stats` (walks every entry).
    pub fn stats(&self) -> CacheStats {
        self.rows.run_pending_tasks();
        self.cursors.run_pending_tasks();
        let now = now_ms();
        let mut oldest: Option<i64> = None;
        let mut bytes = 0u64;
        for (_, r) in self.rows.iter() {
            oldest = Some(oldest.map_or(r.stored_at, |o| o.min(r.stored_at)));
            bytes += r.bytes as u64;
        }
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        CacheStats {
            entries: self.rows.entry_count(),
            cursors: self.cursors.entry_count(),
            hits,
            misses,
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            oldest_entry_age_secs: oldest.map(|t| ((now - t).max(0) / 1000) as u64),
            memory_bytes: bytes,
            ttl_secs: self.ttl.as_secs(),
            max_entries: self.max_entries,
            max_bytes: self.max_bytes,
        }
    }

    /// Drops every cached result and cursor; lookups miss from the next call on.
    pub fn clear(&self) {
        self.rows.invalidate_all();
        self.cursors.invalidate_all();
        self.row_shares.clear();
        self.cursor_shares.clear();
        self.rows.run_pending_tasks();
        self.cursors.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_single_use_and_survive_a_call_for_another_query() {
        let c = ScopeCache::new(Duration::from_secs(60), 10, 1 << 20);
        let target = CursorTarget::sql("SELECT 1");
        let id = c.put_cursor(Cursor {
            target: target.clone(),
            offset: 10,
            page_size: 10,
            owner: None,
        });
        let other = CursorTarget::sql("SELECT 2");
        assert!(matches!(c.take_cursor(&id, &other, None), Some(Err(()))));
        let Some(Ok(taken)) = c.take_cursor(&id, &target, None) else {
            panic!("the cursor of its own query is taken");
        };
        assert!(
            c.take_cursor(&id, &target, None).is_none(),
            "not twice at once"
        );
        taken.spend();
        assert!(c.take_cursor(&id, &target, None).is_none(), "spent");
    }

    #[test]
    fn a_cursor_whose_page_failed_is_back_in_the_cache() {
        let c = ScopeCache::new(Duration::from_secs(60), 10, 1 << 20);
        let target = CursorTarget::sql("SELECT 1");
        let id = c.put_cursor(Cursor {
            target: target.clone(),
            offset: 10,
            page_size: 10,
            owner: None,
        });
        drop(c.take_cursor(&id, &target, None));
        let Some(Ok(again)) = c.take_cursor(&id, &target, None) else {
            panic!("an unspent cursor is put back");
        };
        assert_eq!(again.cursor().offset, 10);
    }

    fn row_of(bytes: usize) -> CachedRow {
        CachedRow {
            title: "x".repeat(bytes),
            values: Map::new(),
            sql: Arc::from("SELECT 1"),
            cut_columns: Vec::new(),
        }
    }

    #[test]
    fn the_row_cache_is_bounded_in_bytes() {
        let c = ScopeCache::new(Duration::from_secs(60), 10_000, 1 << 20);
        // 100 results of 100 KiB: about ten fit in 1 MiB.
        for _ in 0..100 {
            c.put_rows(vec![row_of(100 << 10)], None);
        }
        let s = c.stats();
        assert!(s.memory_bytes <= 1 << 20, "{s:?}");
        assert!((5..=10).contains(&s.entries), "{s:?}");
        // The newest results are the ones kept: a full cache makes room for them.
        let newest = c.put_rows(vec![row_of(100 << 10)], None);
        c.rows.run_pending_tasks();
        assert!(c.get_row(&newest, 0, None).is_some(), "{:?}", c.stats());
        // A result larger than the whole budget is not kept.
        let t = c.put_rows(vec![row_of(2 << 20)], None);
        c.rows.run_pending_tasks();
        assert!(c.get_row(&t, 0, None).is_none());
        // Small results are bounded by the entry count as before.
        let c = ScopeCache::new(Duration::from_secs(60), 5, 1 << 20);
        for _ in 0..50 {
            c.put_rows(vec![row_of(10)], None);
        }
        assert!(c.stats().entries <= 5);
    }

    #[test]
    fn stats_report_age_size_and_hit_ratio_and_clear_empties_at_once() {
        let c = ScopeCache::new(Duration::from_secs(60), 10, 1 << 20);
        let row = CachedRow {
            title: "Alice".into(),
            values: serde_json::json!({"id": 1, "name": "Alice"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            sql: Arc::from("SELECT 1"),
            cut_columns: Vec::new(),
        };
        let t = c.put_rows(vec![row], None);
        assert!(c.get_row(&t, 0, None).is_some());
        assert!(c.get_row(&t, 5, None).is_none());
        let s = c.stats();
        assert_eq!((s.entries, s.hits, s.misses), (1, 1, 1));
        assert_eq!(s.hit_ratio, Some(0.5));
        assert_eq!(s.oldest_entry_age_secs, Some(0));
        assert!(s.memory_bytes > 0);
        // A signed-in user's result is theirs: not another user's, not an anonymous reader's.
        let mine = c.put_rows(vec![row_of(10)], Some("alice"));
        assert!(c.get_row(&mine, 0, Some("alice")).is_some());
        assert!(c.get_row(&mine, 0, Some("bob")).is_none());
        assert!(c.get_row(&mine, 0, None).is_none());
        c.clear();
        assert_eq!(c.stats().entries, 0);
        assert!(c.get_row(&t, 0, None).is_none());
    }

    /// One signed-in user holds at most half of the results and half of the cursors; past
    /// it their own oldest go, and what other users stored stays.
    #[test]
    fn a_busy_user_cannot_push_another_users_entries_out() {
        let c = ScopeCache::new(Duration::from_secs(60), 10, 1 << 20);
        let bob_row = c.put_rows(vec![row_of(10)], Some("bob"));
        let bob_cursor = c.put_cursor(Cursor {
            target: CursorTarget::sql("SELECT 1"),
            offset: 5,
            page_size: 5,
            owner: Some("bob".into()),
        });
        let mut alice_rows = Vec::new();
        let mut alice_cursors = Vec::new();
        for _ in 0..50 {
            alice_rows.push(c.put_rows(vec![row_of(10)], Some("alice")));
            alice_cursors.push(c.put_cursor(Cursor {
                target: CursorTarget::sql("SELECT 2"),
                offset: 5,
                page_size: 5,
                owner: Some("alice".into()),
            }));
        }
        c.rows.run_pending_tasks();
        c.cursors.run_pending_tasks();
        assert!(
            c.get_row(&bob_row, 0, Some("bob")).is_some(),
            "{:?}",
            c.stats()
        );
        let sql1 = CursorTarget::sql("SELECT 1");
        assert!(
            matches!(c.take_cursor(&bob_cursor, &sql1, Some("bob")), Some(Ok(_))),
            "bob's cursor stays"
        );
        // Alice keeps her newest five of each, and only those.
        let kept = |ids: &[String], found: &dyn Fn(&str) -> bool| {
            ids.iter().map(|t| found(t)).collect::<Vec<_>>()
        };
        let rows = kept(&alice_rows, &|t| c.get_row(t, 0, Some("alice")).is_some());
        assert_eq!(rows.iter().filter(|&&k| k).count(), 5, "{rows:?}");
        assert!(rows[45..].iter().all(|&k| k), "{rows:?}");
        let sql2 = CursorTarget::sql("SELECT 2");
        let cursors = kept(&alice_cursors, &|t| {
            matches!(c.take_cursor(t, &sql2, Some("alice")), Some(Ok(_)))
        });
        assert!(cursors[45..].iter().all(|&k| k), "{cursors:?}");
        assert_eq!(cursors.iter().filter(|&&k| k).count(), 5, "{cursors:?}");
        // A cursor is its owner's: another user does not find it.
        let last = alice_cursors.last().map(String::as_str).unwrap_or("");
        assert!(c.take_cursor(last, &sql2, Some("bob")).is_none());
        // Without authentication nobody owns anything, and there are no shares.
        let c = ScopeCache::new(Duration::from_secs(60), 10, 1 << 20);
        let anon: Vec<_> = (0..8).map(|_| c.put_rows(vec![row_of(10)], None)).collect();
        c.rows.run_pending_tasks();
        assert!(anon.iter().all(|t| c.get_row(t, 0, None).is_some()));
    }

    #[test]
    fn tokens_are_unguessable_looking() {
        let a = token();
        assert_eq!(a.len(), 24);
        assert_ne!(a, token());
    }
}
