//! Shared by the tools' unit tests: a real SQLite backend with some tables made slow.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::db::{Catalog, DbError, DynBackend, Page, RowSet, SearchRequest, SqlDialect, TableInfo};
use crate::state::Scope;

/// What the catalog of a [`SlowTable`] says on top of SQLite's own.
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras {
    /// `(table, column, label)`: columns classified as sensitive.
    pub labels: &'static [(&'static str, &'static str, &'static str)],
    /// `(table, column, masking function)`: columns the database masks.
    pub masks: &'static [(&'static str, &'static str, &'static str)],
    /// `(table, history table)`: system-versioned tables.
    pub histories: &'static [(&'static str, &'static str)],
    /// `(synonym, base table)`: synonyms in the `main` schema (`None`: for something in
    /// another database).
    pub synonyms: &'static [(&'static str, Option<&'static str>)],
    /// `(table, column, encryption type)`: Always Encrypted columns (their kind is left as
    /// SQLite says, so that what the tools do rests on the mark alone).
    pub encrypted: &'static [(&'static str, &'static str, &'static str)],
}

/// A real SQLite database whose `search` and `lookup` on some tables are made slow, and whose
/// catalog can say columns are classified as sensitive, masked or Always Encrypted, tables
/// system-versioned and names synonyms. No peer can be made slow for one table and fast for
/// another on demand, and none keeps sensitivity classifications, masked or encrypted columns,
/// temporal tables or synonyms (SQLite has none of them; pysqlbridge lacks
/// `sys.sensitivity_classifications`, `sys.masked_columns`, `sys.tables.history_table_id` and
/// Always Encrypted, and serves `sys.synonyms` empty), so these are injected here; everything
/// else is the real backend.
pub(crate) struct SlowTable {
    pub inner: DynBackend,
    /// The tables (by name) that answer only after `delay`.
    pub slow: &'static [&'static str],
    pub delay: Duration,
    /// What the catalog says on top of SQLite's own.
    pub extras: Extras,
}

impl SlowTable {
    async fn wait_if_slow(&self, table: &TableInfo) {
        if self.slow.contains(&table.name.as_str()) {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait::async_trait]
impl crate::db::Backend for SlowTable {
    fn dialect(&self) -> SqlDialect {
        self.inner.dialect()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn catalog(&self) -> Result<Arc<Catalog>, DbError> {
        let catalog = self.inner.catalog().await?;
        let Extras {
            labels,
            masks,
            histories,
            synonyms,
            encrypted,
        } = self.extras;
        if labels.is_empty()
            && masks.is_empty()
            && histories.is_empty()
            && synonyms.is_empty()
            && encrypted.is_empty()
        {
            return Ok(catalog);
        }
        let mut labelled = (*catalog).clone();
        labelled.synonyms = synonyms
            .iter()
            .map(|(name, base)| crate::db::Synonym {
                schema: "main".into(),
                name: name.to_string(),
                base: base.map(|b| ("main".to_string(), b.to_string())),
            })
            .collect();
        for t in &mut labelled.tables {
            t.history = histories
                .iter()
                .find(|(table, _)| *table == t.name)
                .map(|(_, history)| crate::db::HistoryTable {
                    schema: t.schema.clone(),
                    name: history.to_string(),
                });
            for c in &mut t.columns {
                let of = |list: &[(&str, &str, &str)]| {
                    list.iter()
                        .find(|(table, column, _)| *table == t.name && *column == c.name)
                        .map(|(_, _, note)| note.to_string())
                };
                c.sensitivity = of(labels);
                c.masked = of(masks);
                c.encrypted = of(encrypted);
            }
        }
        Ok(Arc::new(labelled))
    }
    async fn query(&self, sql: &str, page: Page) -> Result<RowSet, DbError> {
        self.inner.query(sql, page).await
    }
    async fn sample(
        &self,
        table: &TableInfo,
        columns: &[String],
        page: Page,
    ) -> Result<RowSet, DbError> {
        self.inner.sample(table, columns, page).await
    }
    async fn lookup(
        &self,
        table: &TableInfo,
        columns: &[String],
        key_columns: &[String],
        key: &[String],
        page: Page,
    ) -> Result<RowSet, DbError> {
        self.wait_if_slow(table).await;
        self.inner
            .lookup(table, columns, key_columns, key, page)
            .await
    }
    async fn search(&self, req: SearchRequest<'_>) -> Result<RowSet, DbError> {
        self.wait_if_slow(req.table).await;
        self.inner.search(req).await
    }
    async fn ping(&self) -> Result<(), DbError> {
        self.inner.ping().await
    }
}

/// A scope (every tool, no authentication, state in `dir`) over the SQLite file `path`, whose
/// tables named in `slow` answer searches and lookups only after `delay`; keyword searches
/// and fetches get `budget`.
pub(crate) async fn slow_sqlite_scope(
    dir: &Path,
    path: &Path,
    slow: &'static [&'static str],
    delay: Duration,
    budget: Duration,
) -> Scope {
    sqlite_scope(dir, path, slow, delay, Extras::default(), "", budget).await
}

/// A scope (every tool, no authentication, state in `dir`, `scope_keys` added to its
/// `[[scope]]`) over the SQLite file `path`, whose catalog also says what `extras` says.
pub(crate) async fn sqlite_scope_with(
    dir: &Path,
    path: &Path,
    extras: Extras,
    scope_keys: &str,
) -> Scope {
    let budget = Duration::from_secs(30);
    sqlite_scope(dir, path, &[], Duration::ZERO, extras, scope_keys, budget).await
}

/// The scope of [`slow_sqlite_scope`] and [`sqlite_scope_with`].
async fn sqlite_scope(
    dir: &Path,
    path: &Path,
    slow: &'static [&'static str],
    delay: Duration,
    extras: Extras,
    scope_keys: &str,
    budget: Duration,
) -> Scope {
    let toml = format!(
        "[server]\ninsecure_no_auth = true\nstate_dir = \"{}\"\n[audit]\noutput = \"off\"\n\
         [[database]]\nname = \"d\"\nkind = \"sqlite\"\npath = \"{}\"\n\
         [[scope]]\npath = \"/t\"\ndatabase = \"d\"\n{scope_keys}\n",
        dir.display(),
        path.display()
    );
    let config = crate::config::Config::parse(&toml).expect("config");
    let ops = crate::ops::Ops::new(&config);
    let sqlite = crate::db::sqlite::SqliteBackend::open(path, false, 4, Duration::from_secs(30))
        .await
        .expect("sqlite");
    let db: DynBackend = Arc::new(SlowTable {
        inner: Arc::new(sqlite),
        slow,
        delay,
        extras,
    });
    Scope::new(
        config.scopes[0].clone(),
        db,
        "http://127.0.0.1",
        &ops,
        budget,
        Default::default(),
    )
}

/// A table `schema.name` with `int` columns named `columns`, nothing else known of it.
pub(crate) fn table_info(schema: &str, name: &str, columns: &[&str]) -> TableInfo {
    TableInfo {
        schema: schema.into(),
        name: name.into(),
        kind: "table",
        columns: columns
            .iter()
            .map(|c| crate::db::ColumnInfo::new(*c, "int", crate::db::ValueKind::Integer, true))
            .collect(),
        ..TableInfo::default()
    }
}

/// Everything logged on this thread while the guard of [`capture_logs`] lives.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs at every level on this thread, into [`Logs`], until the guard drops. A silent
/// dispatcher is made first: were this the only subscriber in the process, tracing-core would
/// take it for the global one, and a log statement first reached on another test's thread
/// would be marked "never enabled" for good (as `tests/common/mod.rs` explains).
pub(crate) fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    static SILENT: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SILENT.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::new()));
    let logs = Logs::default();
    let writer = logs.clone();
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    (logs, guard)
}
