//! A [`Backend`] wrapper timing every database round trip into
//! `mssql_mcp_db_query_duration_seconds{database, operation}`, so the backends themselves stay
//! free of metrics code.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::Histogram;

use super::metrics::DbMetrics;
use crate::db::lift::Lifted;
use crate::db::{
    Backend, Catalog, DbError, DynBackend, Page, PoolStats, RowSet, SearchRequest, SqlDialect,
    TableInfo,
};

/// `inner`, timed.
pub struct Metered {
    inner: DynBackend,
    metrics: DbMetrics,
}

impl Metered {
    pub fn wrap(inner: DynBackend, metrics: DbMetrics) -> DynBackend {
        Arc::new(Self { inner, metrics })
    }
}

async fn timed<T>(h: &Histogram, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    h.observe(started.elapsed().as_secs_f64());
    out
}

#[async_trait]
impl Backend for Metered {
    fn dialect(&self) -> SqlDialect {
        self.inner.dialect()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn catalog(&self) -> Result<Arc<Catalog>, DbError> {
        timed(&self.metrics.catalog, self.inner.catalog()).await
    }

    async fn catalog_after_miss(&self) -> Result<Arc<Catalog>, DbError> {
        timed(&self.metrics.catalog, self.inner.catalog_after_miss()).await
    }

    async fn query(&self, sql: &str, page: Page) -> Result<RowSet, DbError> {
        timed(&self.metrics.query, self.inner.query(sql, page)).await
    }

    async fn query_lifted(&self, q: &Lifted<'_>, page: Page) -> Result<RowSet, DbError> {
        timed(&self.metrics.query, self.inner.query_lifted(q, page)).await
    }

    async fn sample(
        &self,
        table: &TableInfo,
        columns: &[String],
        page: Page,
    ) -> Result<RowSet, DbError> {
        timed(
            &self.metrics.sample,
            self.inner.sample(table, columns, page),
        )
        .await
    }

    async fn lookup(
        &self,
        table: &TableInfo,
        columns: &[String],
        key_columns: &[String],
        key: &[String],
        page: Page,
    ) -> Result<RowSet, DbError> {
        timed(
            &self.metrics.lookup,
            self.inner.lookup(table, columns, key_columns, key, page),
        )
        .await
    }

    async fn search(&self, req: SearchRequest<'_>) -> Result<RowSet, DbError> {
        timed(&self.metrics.search, self.inner.search(req)).await
    }

    async fn ping(&self) -> Result<(), DbError> {
        timed(&self.metrics.ping, self.inner.ping()).await
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        self.inner.pool_stats()
    }

    fn runs_lifted_templates(&self) -> bool {
        self.inner.runs_lifted_templates()
    }

    fn reads_for_asker(&self) -> bool {
        self.inner.reads_for_asker()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What the tools ask a backend of its nature goes through the wrapper: SQLite runs the
    /// lifted template (so the guard checks the template), and SQL Server with
    /// `session_context` hands who asks on (the trait's defaults answer no to both).
    #[tokio::test]
    async fn the_wrapper_answers_for_its_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.sqlite");
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .expect("fixture");
        let sqlite =
            crate::db::sqlite::SqliteBackend::open(&path, false, 1, Duration::from_secs(5))
                .await
                .expect("sqlite");
        let metrics = super::super::metrics::Metrics::new();
        let wrapped = Metered::wrap(Arc::new(sqlite), metrics.db("d"));
        assert!(wrapped.runs_lifted_templates());
        assert!(!wrapped.reads_for_asker());
        // No server is reached: the pool opens connections only when asked for one.
        let password = dir.path().join("pw");
        std::fs::write(&password, "x").expect("write");
        let cfg = crate::config::MssqlConfig {
            host: Some("127.0.0.1".into()),
            database: Some("d".into()),
            user: Some("u".into()),
            password: Some(crate::config::SecretSource {
                file: Some(password),
                env: None,
            }),
            session_context: Some(true),
            ..Default::default()
        };
        let settings = crate::db::mssql::MssqlSettings::from_config(
            &cfg,
            "database[0]",
            1,
            Duration::from_secs(5),
        )
        .expect("settings");
        let mssql = crate::db::mssql::MssqlBackend::new(settings);
        let wrapped = Metered::wrap(Arc::new(mssql), metrics.db("e"));
        assert!(wrapped.reads_for_asker());
        assert!(!wrapped.runs_lifted_templates());
    }
}
