//! The database seam: the [`Backend`] trait every database kind implements, the catalog it
//! reports, and the lossless [`Value`] rows come back as.
//!
//! Backends are the only code that knows a SQL dialect. Tools ask for "a sample of this table",
//! "the row with this key", "rows matching these keywords" or "run this guarded query", and the
//! backend builds its own SQL with bound parameters. Ad-hoc SQL reaches a backend only after
//! [`guard::check`] passed it; the backend then runs it inside its own safety net (a read-only
//! connection, a rolled-back transaction).

pub mod demo_data;
pub mod entra;
pub mod guard;
pub mod lift;
pub mod mssql;
pub mod sqlite;
pub mod tsql_dialect;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use compact_str::CompactString;
use serde::Serialize;

pub use guard::{AccessRules, SqlDialect};

/// A failure talking to the database. Messages are safe to show to a client: they never carry
/// secrets or connection strings.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The query ran longer than the configured timeout and was cancelled.
    #[error(
        "the query timed out after {0} s; narrow it (WHERE, fewer joins) or ask for fewer rows"
    )]
    Timeout(u64),
    /// The database could not be reached or a connection broke.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused the statement (syntax, unknown column, permission, …).
    #[error("{0}")]
    Sql(String),
    /// Anything else; details are logged, not returned.
    #[error("internal database error")]
    Internal(String),
}

impl DbError {
    /// Whether retrying later may succeed (the connection, not the query, was the problem).
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Unavailable(_) | DbError::Timeout(_))
    }
}

/// The most bytes one value keeps in a result (text as UTF-8, cut at a character boundary;
/// binary before base64). Longer values are cut, and the result says so
/// ([`RowSet::cut_values`]): one value must not fill a model's context or this process's memory.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The most bytes of one value the database is asked to send or make (SQL Server's `SET
/// TEXTSIZE`, SQLite's `SQLITE_LIMIT_LENGTH`): it bounds this process's memory per value
/// before the cut at [`MAX_VALUE_BYTES`].
pub const MAX_BUILT_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// `s` cut to at most [`MAX_VALUE_BYTES`] at a character boundary, and whether it was cut.
pub fn cut_text(s: &str) -> (&str, bool) {
    if s.len() <= MAX_VALUE_BYTES {
        return (s, false);
    }
    let mut end = MAX_VALUE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// `b` cut to at most [`MAX_VALUE_BYTES`], and whether it was cut.
pub fn cut_bytes(b: &[u8]) -> (&[u8], bool) {
    (
        &b[..b.len().min(MAX_VALUE_BYTES)],
        b.len() > MAX_VALUE_BYTES,
    )
}

/// One value of a result row, kept exact.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Exact decimal (DECIMAL, NUMERIC, MONEY) as its canonical text, never a float.
    Decimal(CompactString),
    /// Text, and also dates and times already in ISO 8601 form and UUIDs. Up to 24 bytes
    /// (most cells: names, cities, statuses, timestamps) live inline, without an allocation.
    Text(CompactString),
    /// Binary data; serialised as base64.
    Bytes(Vec<u8>),
}

impl Value {
    /// A text value.
    pub fn text(s: impl Into<CompactString>) -> Self {
        Value::Text(s.into())
    }

    /// An exact decimal value, from its canonical text.
    pub fn decimal(s: impl Into<CompactString>) -> Self {
        Value::Decimal(s.into())
    }

    /// The value as a JSON value: integers as numbers, decimals as strings, binary as base64.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or_else(|| J::String(f.to_string())),
            Value::Decimal(s) | Value::Text(s) => J::String(s.to_string()),
            Value::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    /// About how many bytes the value takes in a result's JSON: its text, or its base64.
    pub fn size(&self) -> usize {
        match self {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Int(_) | Value::Float(_) => 8,
            Value::Decimal(s) | Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len().div_ceil(3) * 4,
        }
    }

    /// Cuts a text or binary value so that [`Value::size`] is at most `max` (text at a
    /// character boundary; binary before base64).
    pub fn cut_to(&mut self, max: usize) {
        match self {
            Value::Text(s) | Value::Decimal(s) if s.len() > max => {
                let mut end = max;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
            }
            Value::Bytes(b) if b.len().div_ceil(3) * 4 > max => {
                b.truncate(max / 4 * 3);
                b.shrink_to_fit();
            }
            _ => {}
        }
    }

    /// A short human rendering for titles and snippets.
    pub fn display(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Decimal(s) | Value::Text(s) => s.to_string(),
            Value::Bytes(b) => format!("<{} bytes>", b.len()),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(f) => s.serialize_str(&f.to_string()),
            Value::Decimal(t) | Value::Text(t) => s.serialize_str(t),
            Value::Bytes(b) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
    }
}

/// The broad type of a column, enough to bind key parameters and pick searchable columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    Integer,
    Float,
    Decimal,
    Boolean,
    Text,
    Temporal,
    Binary,
    Other,
}

/// A column of a table.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    /// The type as the database declares it (`INTEGER`, `nvarchar(100)`, …).
    pub data_type: String,
    pub kind: ValueKind,
    pub nullable: bool,
    /// What the column holds, in words: SQL Server's `MS_Description`, or the operator's
    /// `column_descriptions` ([`crate::tools::scoped_catalog`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How sensitive the database says the column is: SQL Server's Data Discovery &
    /// Classification (`sys.sensitivity_classifications`), e.g. `Confidential - GDPR (Contact
    /// Info, rank High)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<String>,
    /// SQL Server's dynamic data masking, when the login reads the column masked: the masking
    /// function (`email()`, `partial(0,"XXX-XX-",4)`, `default()`), so that a model knows the
    /// values it reads are not the data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked: Option<String>,
    /// SQL Server's Always Encrypted: the encryption type (`deterministic`, `randomized`).
    /// This server holds no column master key, so the values arrive as ciphertext
    /// (`varbinary`): they cannot be read, searched, compared with a value or used as a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<String>,
}

impl ColumnInfo {
    /// A column as the database declares it, with nothing else known of it yet (no
    /// description, classification, masking or encryption).
    pub fn new(
        name: impl Into<String>,
        data_type: impl Into<String>,
        kind: ValueKind,
        nullable: bool,
    ) -> Self {
        Self {
            name: name.into(),
            data_type: data_type.into(),
            kind,
            nullable,
            description: None,
            sensitivity: None,
            masked: None,
            encrypted: None,
        }
    }
}

/// A foreign key from this table to another.
#[derive(Debug, Clone, Serialize)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub ref_schema: String,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
}

/// A table or view and everything the tools need to know about it. `Default` is a table with
/// no name, columns or keys, for building one field by field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    /// `table` or `view`.
    pub kind: &'static str,
    pub columns: Vec<ColumnInfo>,
    /// The primary key's columns in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    /// True when `primary_key` was inferred (e.g. an `Id` column) rather than declared.
    pub key_is_heuristic: bool,
    pub foreign_keys: Vec<ForeignKey>,
    /// Approximate row count when the database can tell cheaply.
    pub row_estimate: Option<i64>,
    /// The table's full-text index, when it has one (SQL Server); keyword search goes through
    /// it instead of `LIKE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_text: Option<FullTextIndex>,
    /// What the table holds, in words: SQL Server's `MS_Description`, or the operator's
    /// `table_descriptions` ([`crate::tools::scoped_catalog`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The table's CHECK constraints, as the database keeps their text (`quantity > 0`,
    /// `([Status]='O' OR [Status]='S')`): often the only place the allowed values of a code
    /// column are written down. At most [`MAX_CHECKS`], each cut by [`check_text`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// True when the table has a key that this scope cannot use because it includes a hidden
    /// column (`tools::scoped_catalog` then clears `primary_key` and sets this). Only such a
    /// table is sampled in the order of its visible columns, so that pages stay stable without
    /// following the hidden key; a table that simply has no key keeps the cheap unordered scan
    /// (sorting a large heap by every column would run into the query timeout). Never shown:
    /// it would say that a hidden column exists.
    #[serde(skip)]
    pub key_hidden: bool,
    /// SQL Server: the history table of a system-versioned (temporal) table, whose earlier
    /// row versions `FOR SYSTEM_TIME` reads. In a scope's catalog only when the scope may
    /// read it ([`crate::tools::history_readable`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryTable>,
}

/// Who a tool call reads for: the signed-in user (`None` without sign-in), the scope's path,
/// and the OAuth client the user signed in through (`None` without sign-in). Set for the
/// length of each call ([`for_asker`]); SQL Server hands it to the database's own rules as the
/// session context when `[[database]] session_context` is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asker {
    pub user: Option<Arc<str>>,
    pub scope: Arc<str>,
    /// The client id this server gave the OAuth client at registration: its own, so one
    /// client cannot pass for another (a client's name is whatever it registered).
    pub client: Option<Arc<str>>,
}

tokio::task_local! {
    static ASKER: Asker;
}

/// Runs `call` with `asker` as the one it reads for ([`asker`] inside it).
pub async fn for_asker<F: std::future::Future>(asker: Asker, call: F) -> F::Output {
    ASKER.scope(asker, call).await
}

/// Who the running tool call reads for; `None` outside one (catalog loads, health checks).
pub fn asker() -> Option<Asker> {
    ASKER.try_with(Clone::clone).ok()
}

/// A system-versioned table's history table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryTable {
    pub schema: String,
    pub name: String,
}

/// A full-text index: which columns it covers and the unique key its matches are reported by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullTextIndex {
    /// The single-column unique index the full-text index is keyed on (the `[KEY]` that
    /// `FREETEXTTABLE` returns, which need not be the primary key).
    pub key_column: String,
    /// The indexed columns, in column order.
    pub columns: Vec<String>,
}

impl TableInfo {
    /// `schema.name`, the table's id.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The column that best names a row (for titles): `name`, `title`, `subject`, `*_name`, …
    pub fn title_column(&self) -> Option<&ColumnInfo> {
        const EXACT: [&str; 6] = [
            "name",
            "title",
            "subject",
            "full_name",
            "display_name",
            "email",
        ];
        // `FullName`, `full_name` and `FULLNAME` are all `full_name`.
        fn same_ignoring_underscores(a: &str, b: &str) -> bool {
            fn fold(s: &str) -> impl Iterator<Item = u8> + '_ {
                s.bytes()
                    .filter(|&c| c != b'_')
                    .map(|c| c.to_ascii_lowercase())
            }
            fold(a).eq(fold(b))
        }
        for want in EXACT {
            if let Some(c) = self
                .columns
                .iter()
                .find(|c| c.encrypted.is_none() && same_ignoring_underscores(&c.name, want))
            {
                return Some(c);
            }
        }
        self.columns.iter().find(|c| {
            let n = c.name.as_bytes();
            let ends = |suffix: &[u8]| {
                n.len() >= suffix.len() && n[n.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            };
            c.kind == ValueKind::Text && c.encrypted.is_none() && (ends(b"name") || ends(b"title"))
        })
    }
}

/// Everything a database exposes, as its own catalog reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Catalog {
    /// Sorted by schema, then name.
    pub tables: Vec<TableInfo>,
    /// The database's default collation keeps `varchar` text as UTF-8 (SQL Server's `_UTF8`
    /// collations; SQLite, whose text is all UTF-8): a `'…'` literal then loses no character.
    #[serde(skip)]
    pub varchar_utf8: bool,
    /// SQL Server's synonyms (`CREATE SYNONYM dbo.Pay FOR dbo.Salaries`), sorted by schema,
    /// then name. Not tables: a query may name one, and reads its base table.
    #[serde(skip)]
    pub synonyms: Vec<Synonym>,
}

/// A synonym: another name for a table or view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub schema: String,
    pub name: String,
    /// The table or view of this database it stands for (`schema`, `name`); `None` when it
    /// stands for something in another database or on another server, or for something that
    /// is not there.
    pub base: Option<(String, String)>,
}

impl Synonym {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// The item of `items` (sorted by schema, then name) that `schema.name` names, as
/// [`Catalog::table`] says.
fn named<'a, T>(
    items: &'a [T],
    parts: impl Fn(&T) -> (&str, &str),
    schema: Option<&str>,
    name: &str,
) -> Option<&'a T> {
    let exact = |t: &&T| {
        let (s, n) = parts(t);
        n == name && schema.is_none_or(|wanted| s == wanted)
    };
    if let Some(t) = items.iter().find(exact) {
        return Some(t);
    }
    let mut folded = items.iter().filter(|t| {
        let (s, n) = parts(t);
        n.eq_ignore_ascii_case(name) && schema.is_none_or(|wanted| s.eq_ignore_ascii_case(wanted))
    });
    let first = folded.next()?;
    let (first_schema, first_name) = parts(first);
    // Without a schema, one spelling in several schemas is the first, as an exact name is.
    folded
        .all(|t| {
            let (s, n) = parts(t);
            n == first_name && (schema.is_none() || s == first_schema)
        })
        .then_some(first)
}

impl Catalog {
    /// Finds a table by `name` or `schema.name` as [`Catalog::table`] does; brackets and quotes
    /// around the parts are accepted (`[dbo].[Customers]`, `"main"."orders"`).
    pub fn find(&self, wanted: &str) -> Option<&TableInfo> {
        self.find_with(wanted, Self::table)
    }

    /// [`Catalog::find`], or the table the synonym named so stands for.
    pub fn find_or_base(&self, wanted: &str) -> Option<&TableInfo> {
        self.find_with(wanted, Self::table_or_base)
    }

    fn find_with<'a>(
        &'a self,
        wanted: &str,
        lookup: impl Fn(&'a Self, Option<&str>, &str) -> Option<&'a TableInfo>,
    ) -> Option<&'a TableInfo> {
        let parts: Vec<String> = split_qualified(wanted);
        match parts.as_slice() {
            [name] => lookup(self, None, name),
            [schema, name] => lookup(self, Some(schema), name),
            _ => None,
        }
    }

    /// The table `schema.name` (without a schema, the first in catalog order named so): the
    /// one spelled exactly so, or else the one equal up to ASCII case when that is the only
    /// spelling there is. A database with a case-sensitive collation may hold both `Users` and
    /// `users`, and an id or a name must reach the table it names, never whichever of the two
    /// comes first; a name in a third case (`USERS`) could mean either and finds none.
    pub fn table(&self, schema: Option<&str>, name: &str) -> Option<&TableInfo> {
        named(
            &self.tables,
            |t| (t.schema.as_str(), t.name.as_str()),
            schema,
            name,
        )
    }

    /// The synonym `schema.name`, found as [`Catalog::table`] finds a table.
    pub fn synonym(&self, schema: Option<&str>, name: &str) -> Option<&Synonym> {
        named(
            &self.synonyms,
            |s| (s.schema.as_str(), s.name.as_str()),
            schema,
            name,
        )
    }

    /// The table `schema.name`, or the one the synonym `schema.name` stands for.
    pub fn table_or_base(&self, schema: Option<&str>, name: &str) -> Option<&TableInfo> {
        self.table(schema, name).or_else(|| {
            let (schema, name) = self.synonym(schema, name)?.base.as_ref()?;
            self.table(Some(schema), name)
        })
    }

    /// Whether `schema.name` (as a foreign key names its target) is `t`: the same table
    /// [`Catalog::table`] finds, so that with `Users` and `users` both present a key on one is
    /// never listed as pointing at the other.
    pub fn names(&self, schema: &str, name: &str, t: &TableInfo) -> bool {
        // The cheap test first: most keys point elsewhere and need no lookup.
        schema.eq_ignore_ascii_case(&t.schema)
            && name.eq_ignore_ascii_case(&t.name)
            && self
                .table(Some(schema), name)
                .is_some_and(|found| std::ptr::eq(found, t))
    }
}

/// Splits `a.b` into parts, removing `[]`, `""` or backtick quoting from each part.
pub fn split_qualified(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '[' => {
                while let Some(c) = chars.next() {
                    if c == ']' {
                        if chars.peek() == Some(&']') {
                            chars.next();
                            cur.push(']');
                        } else {
                            break;
                        }
                    } else {
                        cur.push(c);
                    }
                }
            }
            '"' | '`' => {
                let q = c;
                while let Some(c) = chars.next() {
                    if c == q {
                        if chars.peek() == Some(&q) {
                            chars.next();
                            cur.push(q);
                        } else {
                            break;
                        }
                    } else {
                        cur.push(c);
                    }
                }
            }
            '.' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// A column of a result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResultColumn {
    pub name: String,
    /// Declared or decoded type name, when known.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
}

/// Rows of a result, at most the requested page.
#[derive(Debug, Clone, Default)]
pub struct RowSet {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<Vec<Value>>,
    /// More rows followed the page (the result was cut at the row cap or the byte cap).
    pub more: bool,
    /// The page ended at [`Page::max_bytes`] before its row limit.
    pub byte_capped: bool,
    /// The values that were cut, as (row, column) indices, in row order.
    pub cut_values: Vec<(usize, usize)>,
    /// The one row is the text of this many of the database's rows, joined (SQL Server's
    /// `FOR JSON` / `FOR XML` pieces): the next page starts after them.
    pub joined_rows: Option<usize>,
}

/// A page's rows as a backend collects them: each decoded row is offered to [`PageRows::push`],
/// which takes it while [`PageBytes`] lets it in and records which of its values were cut.
#[derive(Debug)]
pub struct PageRows {
    bytes: PageBytes,
    rows: Vec<Vec<Value>>,
    cut_values: Vec<(usize, usize)>,
    byte_capped: bool,
}

impl PageRows {
    pub fn new(page: &Page) -> PageRows {
        PageRows {
            bytes: PageBytes::new(page),
            rows: Vec::new(),
            cut_values: Vec::new(),
            byte_capped: false,
        }
    }

    /// The result's column names, in order (see [`PageBytes::columns`]).
    pub fn columns<'a>(&mut self, page: &Page, names: impl Iterator<Item = &'a str>) {
        self.bytes.columns(page, names);
    }

    /// Whether column `i` is hidden: the backend stores NULL instead of decoding it.
    pub fn hidden(&self, i: usize) -> bool {
        self.bytes.hidden(i)
    }

    /// Rows taken so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Takes `row`, whose values at `cut` were cut while decoding, unless the byte cap ends
    /// the page first: then the row is left out, the page is marked byte-capped, and this
    /// says false (the caller stops collecting and notes that more rows follow).
    pub fn push(&mut self, mut row: Vec<Value>, mut cut: Vec<usize>) -> bool {
        if !self.bytes.admit(&mut row, self.rows.len(), &mut cut) {
            self.byte_capped = true;
            return false;
        }
        let r = self.rows.len();
        self.cut_values.extend(cut.into_iter().map(|c| (r, c)));
        self.rows.push(row);
        true
    }

    /// The page as a [`RowSet`].
    pub fn finish(self, columns: Vec<ResultColumn>, more: bool) -> RowSet {
        RowSet {
            columns,
            rows: self.rows,
            more,
            byte_capped: self.byte_capped,
            cut_values: self.cut_values,
            joined_rows: None,
        }
    }
}

/// Counts a page's bytes as its rows are collected: a row is taken while the page stays
/// within [`Page::max_bytes`], and the first row always, its longest values cut to fit if it
/// alone would pass the cap, so every page makes progress and none is unbounded. A value
/// counts its text (or base64) and its column's name and punctuation, as a row object
/// repeats the name in every row; hidden columns ([`Page::hidden`]) do not count, since they
/// are dropped before anyone sees the page (and their size must not show in where it ends).
#[derive(Debug)]
pub struct PageBytes {
    used: usize,
    max: usize,
    /// Per column: what its name and punctuation add to each value, or `None` for a hidden
    /// column. Empty until [`PageBytes::columns`].
    cells: Vec<Option<usize>>,
}

/// Least a value of a first row keeps when the row is cut to fit a page (enough for any key
/// or name; a row of many long columns can pass the cap by this much per column).
const MIN_SHARE: usize = 64;

impl PageBytes {
    pub fn new(page: &Page) -> PageBytes {
        PageBytes {
            used: 0,
            max: page.max_bytes,
            cells: Vec::new(),
        }
    }

    /// The result's column names, in order.
    pub fn columns<'a>(&mut self, page: &Page, names: impl Iterator<Item = &'a str>) {
        self.cells = names
            .map(|n| (!page.hides(n)).then_some(n.len() + 6))
            .collect();
    }

    /// Whether `row` joins the page (`taken` rows are in it already), counting it if so. A
    /// first row that alone passes the cap is taken with its long values cut to share what
    /// the cap leaves (their indices go to `cut`), and ends the page.
    pub fn admit(&mut self, row: &mut [Value], taken: usize, cut: &mut Vec<usize>) -> bool {
        let used = self.used.saturating_add(self.size(row));
        if used <= self.max {
            self.used = used;
            return true;
        }
        if taken > 0 {
            return false;
        }
        // Cut to fit, it fills the page: the next row starts the next page.
        self.shrink(row, cut);
        self.used = self.max;
        true
    }

    /// Whether column `i` is hidden: its values are not even kept (the backends store NULL).
    pub fn hidden(&self, i: usize) -> bool {
        matches!(self.cells.get(i), Some(None))
    }

    /// What a value in column `i` adds besides itself, or `None` if the column is hidden.
    fn overhead(&self, i: usize) -> Option<usize> {
        match self.cells.get(i) {
            Some(cell) => *cell,
            None => Some(8),
        }
    }

    fn size(&self, row: &[Value]) -> usize {
        row.iter()
            .enumerate()
            .filter_map(|(i, v)| Some(self.overhead(i)? + v.size()))
            .sum()
    }

    fn shrink(&self, row: &mut [Value], cut: &mut Vec<usize>) {
        let long = |v: &Value| matches!(v, Value::Text(_) | Value::Decimal(_) | Value::Bytes(_));
        let mut fixed = 0usize;
        let mut longs = 0usize;
        for (i, v) in row.iter().enumerate() {
            if let Some(o) = self.overhead(i) {
                fixed += o;
                if long(v) {
                    longs += 1;
                } else {
                    fixed += v.size();
                }
            }
        }
        if longs == 0 {
            return;
        }
        let share = (self.max.saturating_sub(fixed) / longs).max(MIN_SHARE);
        for (i, v) in row.iter_mut().enumerate() {
            if self.overhead(i).is_some() && long(v) && v.size() > share {
                v.cut_to(share);
                if !cut.contains(&i) {
                    cut.push(i);
                }
            }
        }
    }
}

impl RowSet {
    /// Whether the value in row `row`, column `column` was cut.
    pub fn is_cut(&self, row: usize, column: usize) -> bool {
        self.cut_values.contains(&(row, column))
    }

    /// The names of the columns whose value in row `row` was cut.
    pub fn cut_in_row(&self, row: usize) -> Vec<String> {
        self.cut_values
            .iter()
            .filter(|(r, _)| *r == row)
            .filter_map(|(_, c)| self.columns.get(*c).map(|c| c.name.clone()))
            .collect()
    }

    /// The names of the columns some of whose values were cut, in column order.
    pub fn cut_columns(&self) -> Vec<&str> {
        let mut cols: Vec<usize> = self.cut_values.iter().map(|(_, c)| *c).collect();
        cols.sort_unstable();
        cols.dedup();
        cols.iter()
            .filter_map(|&c| self.columns.get(c).map(|c| c.name.as_str()))
            .collect()
    }

    /// Renames repeated column names (`name`, `name_2`, …) so rows can be JSON objects without
    /// one column overwriting another (`SELECT p.name, c.name …`, self-joins).
    pub fn dedupe_column_names(&mut self) {
        // Nearly every result has distinct ASCII names: settle that without allocating.
        let cols = &self.columns;
        if cols.len() <= 64
            && cols.iter().all(|c| c.name.is_ascii())
            && !cols.iter().enumerate().any(|(i, a)| {
                cols[..i]
                    .iter()
                    .any(|b| a.name.eq_ignore_ascii_case(&b.name))
            })
        {
            return;
        }
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        for i in 0..self.columns.len() {
            let base = self.columns[i].name.clone();
            if seen.insert(base.to_lowercase()) {
                continue;
            }
            let mut n = 2;
            let name = loop {
                let candidate = format!("{base}_{n}");
                let taken = seen.contains(&candidate.to_lowercase())
                    || self
                        .columns
                        .iter()
                        .any(|c| c.name.eq_ignore_ascii_case(&candidate));
                if !taken {
                    break candidate;
                }
                n += 1;
            };
            seen.insert(name.to_lowercase());
            self.columns[i].name = name;
        }
    }
}

/// Which slice of a result to return: skip `offset` rows, then return up to `limit` rows and
/// about `max_bytes` of values ([`PageBytes`]).
#[derive(Debug, Clone)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    pub max_bytes: usize,
    /// Result columns the caller will drop (a scope's hidden columns of the tables a query
    /// reads; compared ignoring case): read as NULL and not counted against `max_bytes`.
    pub hidden: Option<Arc<[String]>>,
    /// The query's own top-level `ORDER BY` fixes its row order and nothing else in it limits
    /// rows ([`crate::db::guard::CheckedQuery::pageable_in_sql`]), so a backend may skip
    /// `offset` rows in SQL (`OFFSET … FETCH`) instead of reading and dropping them.
    pub pageable_in_sql: bool,
    /// No step of the query can take long on its own
    /// ([`crate::db::guard::CheckedQuery::linear_steps`]; true of the backends' own
    /// statements), so a backend may start it on the async worker and move it elsewhere when
    /// it runs long (SQLite); otherwise it runs where it cannot hold up other requests.
    pub linear_steps: bool,
}

impl Page {
    /// Up to `limit` rows after `offset`, with no byte cap (the catalog, and tests).
    pub const fn rows(offset: usize, limit: usize) -> Page {
        Page {
            offset,
            limit,
            max_bytes: usize::MAX,
            hidden: None,
            pageable_in_sql: false,
            linear_steps: true,
        }
    }

    /// Up to `limit` rows after `offset` and about `max_bytes` of values.
    pub const fn bytes(offset: usize, limit: usize, max_bytes: usize) -> Page {
        Page {
            offset,
            limit,
            max_bytes,
            hidden: None,
            pageable_in_sql: false,
            linear_steps: true,
        }
    }

    /// Whether result column `name` is one the caller drops (under either spelling of
    /// [`unqualified`]).
    pub fn hides(&self, name: &str) -> bool {
        let bare = unqualified(name);
        self.hidden.as_ref().is_some_and(|h| {
            h.iter()
                .any(|n| n.eq_ignore_ascii_case(name) || n.eq_ignore_ascii_case(bare))
        })
    }
}

/// The column a result column's name may stand for besides itself: what follows its last dot.
/// A server may name the columns of a joined `*` after their table (`t1.salary`, as the TDS
/// test peer does), so a hidden column is matched under that spelling too. A real column whose
/// name holds a dot is then hidden as if it were the column after the dot, which errs on the
/// side of hiding. Found by `tests/it/guard_oracle.rs` (noninterference on SQL Server).
pub fn unqualified(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// A keyword search request against one table.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    pub table: &'a TableInfo,
    /// Columns to return.
    pub columns: &'a [String],
    /// Text columns to match against.
    pub text_columns: &'a [String],
    /// Lower-case keywords; a row matches when any column contains any keyword.
    pub keywords: &'a [String],
    pub limit: usize,
}

/// A database the tools can read. Implementations own their dialect, pool and safety net.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The SQL dialect ad-hoc queries are parsed and checked in.
    fn dialect(&self) -> SqlDialect;

    /// Short kind name for logs and `/health` (`sqlite`, `mssql`).
    fn kind(&self) -> &'static str;

    /// The catalog, from the database's own metadata (cached by the backend).
    async fn catalog(&self) -> Result<Arc<Catalog>, DbError>;

    /// The catalog again, after it did not know a name a caller gave (a table made since it
    /// was read): a backend that caches its catalog reads it anew now, unless it read it a
    /// moment ago (SQL Server: `db::mssql::CATALOG_RECHECK`), so that a name nobody has is
    /// not a reload per call. The default is [`Backend::catalog`].
    async fn catalog_after_miss(&self) -> Result<Arc<Catalog>, DbError> {
        self.catalog().await
    }

    /// Runs a query that [`guard::check`] accepted and returns the requested page.
    async fn query(&self, sql: &str, page: Page) -> Result<RowSet, DbError>;

    /// Runs a query whose literals were lifted ([`lift::lift`]) and which the guard accepted.
    /// Backends that bind parameters run the template (and may reuse its prepared statement);
    /// the default runs the original text.
    async fn query_lifted(&self, q: &lift::Lifted<'_>, page: Page) -> Result<RowSet, DbError> {
        self.query(q.original, page).await
    }

    /// Whether [`Backend::query_lifted`] runs the template rather than the original text. The
    /// guard checks what runs: the template here, else the original (the first of each
    /// template; see `tools::sql::accept`).
    fn runs_lifted_templates(&self) -> bool {
        false
    }

    /// Rows of a table in primary-key order (stable across pages). A table without a key is
    /// read in whatever order the database scans it, with no sort (SQLite scans a table in
    /// rowid or key order). A table whose key the scope hid ([`TableInfo::key_hidden`]) is
    /// ordered by the `columns` asked for that the database can sort cheaply enough, never by
    /// a column left out of them: those are the visible ones, and their order must not
    /// reveal the hidden key's.
    async fn sample(
        &self,
        table: &TableInfo,
        columns: &[String],
        page: Page,
    ) -> Result<RowSet, DbError>;

    /// Rows whose `key_columns` equal `key` (one text value per column, converted to the
    /// column's type by the backend), at most `page.limit` and `page.max_bytes` (`page.offset`
    /// is not used). With the primary key this is a point lookup; with a foreign key's columns
    /// it finds a row's children.
    async fn lookup(
        &self,
        table: &TableInfo,
        columns: &[String],
        key_columns: &[String],
        key: &[String],
        page: Page,
    ) -> Result<RowSet, DbError>;

    /// Rows of one table whose text columns contain the keywords, best matches first; the last
    /// column of each row is its match score.
    async fn search(&self, req: SearchRequest<'_>) -> Result<RowSet, DbError>;

    /// A cheap round trip proving the database answers.
    async fn ping(&self) -> Result<(), DbError>;

    /// Connection pool numbers for metrics; `None` for a backend without a pool.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    /// Whether the backend hands who asks ([`asker`]) to the database, so tool calls must
    /// say who that is ([`for_asker`]).
    fn reads_for_asker(&self) -> bool {
        false
    }
}

/// Connection pool numbers, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Most connections the pool opens (`pool_size`).
    pub max: u32,
    /// Connections open now.
    pub connections: u32,
    /// Of those, idle.
    pub idle: u32,
    /// Of those, running a query.
    pub in_use: u32,
    /// Connections opened since start.
    pub created: u64,
    /// Connections discarded as broken since start (timeouts, lost connections, abandoned
    /// streams).
    pub discarded: u64,
    /// Queries that had to wait for a free connection since start.
    pub waits: u64,
    /// Failed attempts to open a connection since start (the database down or refusing).
    pub connect_failures: u64,
    /// Connections the readiness check opened beside the pool since start (SQL Server: only
    /// while every pooled one is busy and none has had an answer lately; SQLite: every check,
    /// a file opened, no login).
    pub check_connections: u64,
    /// Requests left mid-way (timed out, abandoned mid-stream, or dropped by their caller) that
    /// the server acknowledged stopping since start (SQL Server's attention; SQLite: 0).
    pub cancels_acknowledged: u64,
    /// Of those cancels, the ones not acknowledged in time or that the connection could not
    /// carry (it was lost); the connection was closed either way.
    pub cancels_unacknowledged: u64,
}

/// Shared handle to a backend.
pub type DynBackend = Arc<dyn Backend>;

/// The most CHECK constraints a table's description lists.
pub const MAX_CHECKS: usize = 32;

/// A CHECK constraint's text as the tools show it: on one line, cut at 500 characters; `None`
/// when empty.
pub fn check_text(raw: &str) -> Option<String> {
    let one_line: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return None;
    }
    Some(match one_line.char_indices().nth(500) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    })
}

/// The most characters a table or column description keeps (a longer one is cut, with `…`):
/// descriptions go into every `describe_table`, and one must not fill a model's context.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// A description as the tools show it: trimmed, control characters other than line breaks
/// as spaces, cut at [`MAX_DESCRIPTION_CHARS`]; `None` when nothing is left.
pub fn description_text(raw: &str) -> Option<String> {
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    if clean.is_empty() {
        return None;
    }
    Some(match clean.char_indices().nth(MAX_DESCRIPTION_CHARS) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(schema: &str, name: &str) -> TableInfo {
        TableInfo {
            schema: schema.into(),
            name: name.into(),
            kind: "table",
            primary_key: vec!["id".into()],
            ..TableInfo::default()
        }
    }

    /// Built by hand: SQLite compares table names without case, so no SQLite file can hold
    /// both `Users` and `users`, which a SQL Server database with a case-sensitive collation
    /// can (and sorts `Users` first).
    #[test]
    fn a_name_finds_its_own_spelling_before_another_case_and_none_when_the_case_is_ambiguous() {
        let catalog = Catalog {
            varchar_utf8: false,
            synonyms: Vec::new(),
            tables: vec![
                table("dbo", "Users"),
                table("dbo", "orders"),
                table("dbo", "users"),
                table("sales", "orders"),
            ],
        };
        let found = |schema: Option<&str>, name: &str| {
            catalog.table(schema, name).map(TableInfo::qualified)
        };
        assert_eq!(found(Some("dbo"), "users").as_deref(), Some("dbo.users"));
        assert_eq!(found(Some("dbo"), "Users").as_deref(), Some("dbo.Users"));
        assert_eq!(found(None, "users").as_deref(), Some("dbo.users"));
        assert_eq!(
            catalog.find("[dbo].[users]").map(TableInfo::qualified),
            Some("dbo.users".into())
        );
        // A third spelling could mean either table: none is chosen.
        assert_eq!(found(Some("dbo"), "USERS"), None);
        assert_eq!(found(None, "USERS"), None);
        // With one spelling, any case still finds it, in any schema case too.
        assert_eq!(found(Some("DBO"), "ORDERS").as_deref(), Some("dbo.orders"));
        assert_eq!(found(None, "Orders").as_deref(), Some("dbo.orders"));
        assert_eq!(
            found(Some("sales"), "Orders").as_deref(),
            Some("sales.orders")
        );
        // A foreign key to `dbo.users` names `users`, never `Users`.
        let (upper, lower) = (&catalog.tables[0], &catalog.tables[2]);
        assert!(catalog.names("dbo", "users", lower));
        assert!(!catalog.names("dbo", "users", upper));
        assert!(catalog.names("DBO", "ORDERS", &catalog.tables[1]));
    }

    #[test]
    fn values_serialise_without_loss() {
        let row = vec![
            Value::Null,
            Value::Int(9_007_199_254_740_993),
            Value::Decimal("12.30".into()),
            Value::Bytes(vec![0, 1, 255]),
            Value::Text("2024-03-15T10:22:05Z".into()),
            Value::Float(f64::NAN),
        ];
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(
            json,
            r#"[null,9007199254740993,"12.30","AAH/","2024-03-15T10:22:05Z","NaN"]"#
        );
    }

    #[test]
    fn values_are_cut_at_a_character_boundary() {
        let s = "a".repeat(MAX_VALUE_BYTES - 1) + "é";
        assert_eq!(cut_text(&s), (&s[..MAX_VALUE_BYTES - 1], true));
        let s = "a".repeat(MAX_VALUE_BYTES);
        assert_eq!(cut_text(&s), (s.as_str(), false));
        let b = vec![1u8; MAX_VALUE_BYTES + 1];
        assert_eq!(cut_bytes(&b), (&b[..MAX_VALUE_BYTES], true));
        assert_eq!(cut_bytes(&b[..3]), (&b[..3], false));
    }

    #[test]
    fn a_page_takes_rows_while_they_fit_and_always_its_first() {
        let page = Page::bytes(0, 100, 100);
        let mut cut = Vec::new();
        // Names "a" and "bb": 7 and 8 bytes of overhead per value.
        let mut bytes = PageBytes::new(&page);
        bytes.columns(&page, ["a", "bb", "c"].into_iter());
        // (3 + 7) + (8 + 8) + (4 + 7) = 37 bytes a row: two fit in 100, three do not.
        let row = [Value::text("abc"), Value::Int(7), Value::Null];
        assert!(bytes.admit(&mut row.clone(), 0, &mut cut));
        assert!(bytes.admit(&mut row.clone(), 1, &mut cut));
        assert!(!bytes.admit(&mut row.clone(), 2, &mut cut));
        assert!(cut.is_empty());
        assert_eq!(Value::Bytes(vec![0; 4]).size(), 8, "base64");
        let mut unbounded = PageBytes::new(&Page::rows(0, 10));
        let big = [Value::text("x".repeat(500))];
        assert!((0..1000).all(|i| unbounded.admit(&mut big.clone(), i, &mut cut)));
        assert!(cut.is_empty());
    }

    #[test]
    fn a_first_row_past_the_cap_is_cut_to_fit() {
        let page = Page::bytes(0, 100, 4096);
        let mut bytes = PageBytes::new(&page);
        bytes.columns(&page, ["id", "t", "b", "u"].into_iter());
        let mut row = [
            Value::Int(1),
            Value::text("é".repeat(10_000)),
            Value::Bytes(vec![1; 10_000]),
            Value::text("short"),
        ];
        let mut cut = Vec::new();
        assert!(bytes.admit(&mut row, 0, &mut cut));
        assert_eq!(cut, [1, 2]);
        let size: usize = row.iter().map(Value::size).sum();
        assert!(size <= 4096, "{size}");
        assert!(matches!(&row[1], Value::Text(t) if t.len() > 1000 && t.chars().all(|c| c == 'é')));
        assert!(matches!(&row[2], Value::Bytes(b) if b.len() > 1000));
        assert_eq!(row[3], Value::text("short"));
        // Nothing more joins that page.
        assert!(!bytes.admit(&mut [Value::Int(2)], 1, &mut cut));
    }

    /// A server may name a joined `*`'s columns after their table (the TDS peer gives
    /// `t1.salary`); the hidden column is hidden under that spelling too.
    #[test]
    fn a_hidden_column_is_hidden_under_a_qualified_name() {
        let mut page = Page::bytes(0, 100, 100);
        page.hidden = Some(Arc::from(vec!["salary".to_string()]));
        for name in ["salary", "SALARY", "t1.salary", "dbo.employees.Salary"] {
            assert!(page.hides(name), "{name}");
        }
        for name in ["salary_2", "t1.salaryx", "salary.t1", "name"] {
            assert!(!page.hides(name), "{name}");
        }
        assert_eq!(unqualified("a.b.c"), "c");
        assert_eq!(unqualified("c"), "c");
        assert_eq!(unqualified("c."), "");
    }

    #[test]
    fn hidden_columns_do_not_count() {
        let mut page = Page::bytes(0, 100, 100);
        page.hidden = Some(Arc::from(vec!["secret".to_string()]));
        let mut bytes = PageBytes::new(&page);
        bytes.columns(&page, ["id", "SECRET"].into_iter());
        let mut cut = Vec::new();
        for taken in 0..5 {
            let mut row = [Value::Int(1), Value::text("x".repeat(1000))];
            assert!(bytes.admit(&mut row, taken, &mut cut), "row {taken}");
            assert_eq!(row[1].size(), 1000, "a hidden value is not cut either");
        }
        assert!(cut.is_empty());
    }

    #[test]
    fn repeated_column_names_get_suffixes() {
        let col = |n: &str| ResultColumn {
            name: n.into(),
            ..ResultColumn::default()
        };
        let mut rs = RowSet {
            columns: vec![col("name"), col("Name"), col("name_2"), col("id")],
            ..RowSet::default()
        };
        rs.dedupe_column_names();
        let names: Vec<&str> = rs.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["name", "Name_3", "name_2", "id"]);
    }

    #[test]
    fn qualified_names_split_with_any_quoting() {
        assert_eq!(split_qualified("[dbo].[Order]]s]"), vec!["dbo", "Order]s"]);
        assert_eq!(split_qualified("\"main\".orders"), vec!["main", "orders"]);
        assert_eq!(split_qualified("orders"), vec!["orders"]);
    }
}
