//! The MCP tools: their definitions (per profile) and the code behind them.
//!
//! Tools never see HTTP or JSON-RPC: they take a [`Scope`] and JSON arguments and return a
//! [`ToolOutput`] (structured JSON, also sent as the text content) or a [`ToolError`] that
//! tells the model what went wrong and how to fix its call. Tools never build dialect SQL;
//! they ask the scope's backend.

pub mod cache;
pub mod descriptions;
pub mod fetch;
pub mod ids;
pub mod search;
pub mod sql;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt::Write as _;
use std::sync::OnceLock;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value, json};

use crate::config::ToolProfile;
use crate::db::guard::{GuardError, SqlDialect};
use crate::db::{
    AccessRules, Catalog, DbError, ResultColumn, Synonym, TableInfo, Value as DbValue, ValueKind,
};
use crate::json::{Dual, Json};
use crate::mcp::protocol::Shapes;
use crate::state::Scope;

/// What a successful tool call returns.
#[derive(Debug)]
pub struct ToolOutput {
    /// The result as JSON text, serialised once: it is sent as the text content and, without
    /// parsing it again, as `structuredContent`.
    pub json: Json,
    /// `json` already escaped for the text content, when it was written with [`Dual`].
    pub escaped: Option<Vec<u8>>,
    /// Rows returned, for the audit record.
    pub rows: usize,
}

impl ToolOutput {
    /// Serialises a result.
    pub(crate) fn new<T: Serialize + ?Sized>(value: &T, rows: usize) -> Result<Self, ToolError> {
        Self::sized(value, rows, 256)
    }

    /// Serialises a result expected to take about `capacity` bytes.
    pub(crate) fn sized<T: Serialize + ?Sized>(
        value: &T,
        rows: usize,
        capacity: usize,
    ) -> Result<Self, ToolError> {
        let json = Json::encode_sized(value, capacity).map_err(encoding_failed)?;
        Ok(Self {
            json,
            escaped: None,
            rows,
        })
    }

    /// A result written by `write` with [`Dual`] into buffers of about `capacity` bytes.
    pub(crate) fn dual(
        rows: usize,
        capacity: usize,
        write: impl FnOnce(&mut Dual) -> Result<(), serde_json::Error>,
    ) -> Result<Self, ToolError> {
        let mut d = Dual::with_capacity(capacity);
        write(&mut d).map_err(encoding_failed)?;
        let (json, escaped) = d.finish();
        Ok(Self {
            json,
            escaped: Some(escaped),
            rows,
        })
    }

    /// The result parsed back into a JSON value (for callers outside the hot path).
    pub fn value(&self) -> Value {
        self.json.to_value()
    }
}

fn encoding_failed(e: serde_json::Error) -> ToolError {
    ToolError::Db(DbError::Internal(format!("encoding a result: {e}")))
}

/// Why a tool call failed. All but [`ToolError::UnknownTool`] become a result with
/// `isError: true`, so the model can read the message and correct itself.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("Unknown tool: {0}")]
    UnknownTool(String),
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    #[error("{0}")]
    NotFound(String),
    #[error("refused: {0}")]
    Refused(#[from] GuardError),
    #[error("{0}")]
    Db(#[from] DbError),
}

/// Names of the tools a profile offers, in listing order.
pub fn tool_names(profile: ToolProfile) -> &'static [&'static str] {
    match profile {
        ToolProfile::Chatgpt => &["search", "fetch"],
        ToolProfile::Full => &[
            "search",
            "fetch",
            "list_tables",
            "describe_table",
            "get_table_sample",
            "execute_sql",
        ],
    }
}

/// The `tools` array of `tools/list` for a profile, in the shapes of a session's revision,
/// for a database of `dialect` (built once each): a revision without `title`,
/// `outputSchema` or tool `annotations` gets definitions without them, and `execute_sql`
/// names the dialect its query is written in.
pub fn definitions(profile: ToolProfile, shapes: Shapes, dialect: SqlDialect) -> &'static Value {
    static CELLS: [[[OnceLock<Value>; 2]; 3]; 2] =
        [const { [const { [const { OnceLock::new() }; 2] }; 3] }; 2];
    let row = match profile {
        ToolProfile::Chatgpt => 0,
        ToolProfile::Full => 1,
    };
    let column = match shapes {
        Shapes::Current => 0,
        Shapes::V2025_03_26 => 1,
        Shapes::V2024_11_05 => 2,
    };
    let plane = match dialect {
        SqlDialect::Sqlite => 0,
        SqlDialect::MsSql => 1,
    };
    CELLS[row][column][plane].get_or_init(|| {
        Value::Array(
            tool_names(profile)
                .iter()
                .map(|name| {
                    let mut d = definition(name, dialect);
                    shapes.fit_tool(&mut d);
                    d
                })
                .collect(),
        )
    })
}

fn read_only() -> Value {
    json!({"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false})
}

fn definition(name: &str, dialect: SqlDialect) -> Value {
    match name {
        "search" => json!({
            "name": "search",
            "title": "Search the database",
            "description": "Search the database and get back records you can open with `fetch`.\n\
                Accepts:\n\
                - plain words or a question (e.g. `refund requests for damaged items`): finds rows whose text columns contain the words, best matches first;\n\
                - `list tables`: every table you may read, with row counts;\n\
                - `describe <table>`: a table's columns, keys and relationships;\n\
                - `sample <table> [limit N]`: the first rows of a table;\n\
                - a single read-only SQL query (`SELECT …` or `WITH …`).\n\
                Each result has an `id`; pass it to `fetch` for the full record and its related records.",
            "inputSchema": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "Words to look for, a command (`list tables`, `describe <table>`, `sample <table> limit 5`) or a SELECT query."}},
                "required": ["query"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {"results": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"}, "title": {"type": "string"},
                        "url": {"type": "string"}, "text": {"type": "string"}
                    },
                    "required": ["id", "title", "url"]
                }},
                "notes": {"type": "array", "items": {"type": "string"}}},
                "required": ["results"]
            },
            "annotations": read_only()
        }),
        "fetch" => json!({
            "name": "fetch",
            "title": "Fetch a record",
            "description": "Fetch the full record for an `id` returned by `search`: a table id (e.g. `main.customers`) gives its schema and relationships; a row id (e.g. `main.orders/1042`) gives every column of the row plus the ids of related rows (its foreign-key parents and children), which you can fetch in turn.",
            "inputSchema": {
                "type": "object",
                "properties": {"id": {"type": "string", "description": "An id from search results."}},
                "required": ["id"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "title": {"type": "string"},
                    "text": {"type": "string"}, "url": {"type": "string"},
                    "metadata": {"type": "object"}
                },
                "required": ["id", "title", "text", "url"]
            },
            "annotations": read_only()
        }),
        "list_tables" => json!({
            "name": "list_tables",
            "title": "List tables",
            "description": "List the tables and views you may read, with row counts, primary keys and column counts. Start here, then use describe_table.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "annotations": read_only()
        }),
        "describe_table" => json!({
            "name": "describe_table",
            "title": "Describe a table",
            "description": "Columns (type, nullability), primary key, foreign keys and the tables that reference this one.",
            "inputSchema": {
                "type": "object",
                "properties": {"table": {"type": "string", "description": "Table name, optionally schema-qualified (e.g. `orders` or `dbo.Orders`)."}},
                "required": ["table"],
                "additionalProperties": false
            },
            "annotations": read_only()
        }),
        "get_table_sample" => json!({
            "name": "get_table_sample",
            "title": "Sample rows",
            "description": "Rows of a table in primary-key order. Results are capped; when `next_cursor` is returned, call again with it to get the next page.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "table": {"type": "string", "description": "Table name, optionally schema-qualified."},
                    "limit": {"type": "integer", "minimum": 1, "description": "Rows per page (default 10, at most the server's row cap)."},
                    "cursor": {"type": "string", "description": "`next_cursor` from the previous page."}
                },
                "required": ["table"],
                "additionalProperties": false
            },
            "annotations": read_only()
        }),
        "execute_sql" => json!({
            "name": "execute_sql",
            "title": "Run a read-only SQL query",
            "description": "Run one read-only SQL query (SELECT or WITH … SELECT) and get rows back. Writes, DDL, procedure calls and multiple statements are refused. Results are capped at the server's row cap; when `next_cursor` is returned, call again with the same `sql` and that cursor for the next page (add ORDER BY for a stable order).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "sql": {"type": "string", "description": match dialect {
                        SqlDialect::MsSql => "One SELECT query in T-SQL (Microsoft SQL Server): `SELECT TOP (n)` or `ORDER BY … OFFSET m ROWS FETCH NEXT n ROWS ONLY`, never `LIMIT`; `[brackets]` around names; it may end with `OPTION (…)` query hints such as `MAXRECURSION n`.",
                        SqlDialect::Sqlite => "One SELECT query in SQLite's SQL: `LIMIT n OFFSET m`, never `TOP`; `\"double quotes\"` around names.",
                    }},
                    "page_size": {"type": "integer", "minimum": 1, "description": "Rows per page (default and maximum: the server's row cap)."},
                    "cursor": {"type": "string", "description": "`next_cursor` from the previous page of the same query."}
                },
                "required": ["sql"],
                "additionalProperties": false
            },
            "annotations": read_only()
        }),
        _ => Value::Null,
    }
}

/// Runs tool `name` with `args` in `scope` for `owner`, the signed-in user (`None` without
/// authentication): the ad-hoc rows a call caches are theirs alone.
pub async fn call(
    scope: &Scope,
    name: &str,
    args: &Value,
    owner: Option<&str>,
) -> Result<ToolOutput, ToolError> {
    call_through(scope, name, args, owner, None).await
}

/// [`call`] for `owner` signed in through the OAuth client `client` (its client id), which the
/// database is told with who asks ([`asking`]).
pub async fn call_through(
    scope: &Scope,
    name: &str,
    args: &Value,
    owner: Option<&str>,
    client: Option<&str>,
) -> Result<ToolOutput, ToolError> {
    if !tool_names(scope.profile()).contains(&name) {
        return Err(ToolError::UnknownTool(name.to_string()));
    }
    let args = match args {
        Value::Object(m) => m,
        Value::Null => &Map::new(),
        _ => {
            return Err(ToolError::InvalidArguments(
                "`arguments` must be an object".into(),
            ));
        }
    };
    check_known_args(name, args)?;
    asking(scope, owner, client, async {
        match name {
            "search" => search::search(scope, str_arg(args, "query")?, owner).await,
            "fetch" => fetch::fetch(scope, str_arg(args, "id")?, owner).await,
            "list_tables" => sql::list_tables(scope).await,
            "describe_table" => sql::describe_table(scope, str_arg(args, "table")?).await,
            "get_table_sample" => {
                sql::get_table_sample(
                    scope,
                    str_arg(args, "table")?,
                    opt_usize_arg(args, "limit")?,
                    opt_str_arg(args, "cursor")?,
                    owner,
                )
                .await
            }
            "execute_sql" => {
                sql::execute_sql(
                    scope,
                    str_arg(args, "sql")?,
                    opt_usize_arg(args, "page_size")?,
                    opt_str_arg(args, "cursor")?,
                    owner,
                )
                .await
            }
            other => Err(ToolError::UnknownTool(other.to_string())),
        }
    })
    .await
}

/// Runs `call`, a tool's work in `scope` for `owner` (signed in through the OAuth client
/// `client`), saying who asks ([`crate::db::asker`]) when the scope's database hands that to
/// the database's own rules.
pub async fn asking<F: std::future::Future>(
    scope: &Scope,
    owner: Option<&str>,
    client: Option<&str>,
    call: F,
) -> F::Output {
    if !scope.db.reads_for_asker() {
        return call.await;
    }
    let asker = crate::db::Asker {
        user: owner.map(std::sync::Arc::from),
        scope: std::sync::Arc::from(scope.path.as_str()),
        client: client.map(std::sync::Arc::from),
    };
    crate::db::for_asker(asker, call).await
}

fn check_known_args(name: &str, args: &Map<String, Value>) -> Result<(), ToolError> {
    let Some((_, known)) = known_args().iter().find(|(tool, _)| tool == name) else {
        return Ok(());
    };
    for key in args.keys() {
        if !known.iter().any(|k| k == key) {
            return Err(ToolError::InvalidArguments(format!(
                "unknown argument `{key}` for {name}; it takes: {}",
                if known.is_empty() {
                    "no arguments".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// Each tool's argument names, in its schema's order, read once from the definitions (every
/// tool is in the full profile). A list compared in place, where looking each tool and
/// argument up in the definitions' JSON maps cost every call about 2,000 instructions of
/// hashing.
fn known_args() -> &'static [(String, Vec<String>)] {
    static KNOWN: OnceLock<Vec<(String, Vec<String>)>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        definitions(ToolProfile::Full, Shapes::Current, SqlDialect::Sqlite)
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let name = d["name"].as_str()?.to_string();
                let props = d["inputSchema"]["properties"].as_object()?;
                Some((name, props.keys().cloned().collect()))
            })
            .collect()
    })
}

fn str_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, ToolError> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ToolError::InvalidArguments(format!(
            "`{key}` must be a string, got {}",
            type_name(other)
        ))),
        None => Err(ToolError::InvalidArguments(format!(
            "missing required argument `{key}`"
        ))),
    }
}

fn opt_str_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ToolError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ToolError::InvalidArguments(format!(
            "`{key}` must be a string, got {}",
            type_name(other)
        ))),
    }
}

fn opt_usize_arg(args: &Map<String, Value>, key: &str) -> Result<Option<usize>, ToolError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= 1 => Ok(Some(usize::try_from(v).unwrap_or(usize::MAX))),
            _ => Err(ToolError::InvalidArguments(format!(
                "`{key}` must be a positive integer, got {n}"
            ))),
        },
        Some(other) => Err(ToolError::InvalidArguments(format!(
            "`{key}` must be a positive integer, got {}",
            type_name(other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---- helpers shared by the tools ----

/// Tables of the catalog visible in this scope.
pub(crate) fn visible_tables<'c>(scope: &Scope, catalog: &'c Catalog) -> Vec<&'c TableInfo> {
    catalog
        .tables
        .iter()
        .filter(|t| scope.rules.table_visible(Some(&t.schema), &t.name))
        .collect()
}

/// The names a piece of SQL text mentions: bare words, and `[…]`, `"…"` or `` `…` `` quoted
/// ones (quotes removed, doubled closing quotes undone); `'…'` strings are skipped. Keywords
/// come out too, which only makes a caller that looks for a name more careful.
pub(crate) fn sql_identifiers(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let close = match c {
            '\'' => {
                // A string: to its closing quote ('' inside is a quote).
                while let Some(n) = chars.next() {
                    if n == '\'' && chars.next_if_eq(&'\'').is_none() {
                        break;
                    }
                }
                continue;
            }
            '[' => ']',
            '"' => '"',
            '`' => '`',
            c if c.is_alphabetic() || c == '_' || c == '@' || c == '#' => {
                let mut word = String::from(c);
                while let Some(n) =
                    chars.next_if(|n| n.is_alphanumeric() || matches!(n, '_' | '@' | '#' | '$'))
                {
                    word.push(n);
                }
                out.push(word);
                continue;
            }
            _ => continue,
        };
        let mut name = String::new();
        while let Some(n) = chars.next() {
            if n == close {
                if chars.next_if_eq(&close).is_some() {
                    name.push(close);
                    continue;
                }
                break;
            }
            name.push(n);
        }
        out.push(name);
    }
    out
}

/// The columns of `catalog` the database masks for this login (dynamic data masking), as
/// `schema.table.column: function`: on a scope's catalog, what that scope shows of them.
pub fn masked_columns(catalog: &Catalog) -> Vec<String> {
    column_notes(catalog, |c| c.masked.as_ref())
}

/// The columns of `catalog` the database classifies as sensitive, as `schema.table.column:
/// label`: on a scope's catalog, what that scope shows of them, for the operator to hide with
/// `deny_columns` or to let be.
pub fn classified_columns(catalog: &Catalog) -> Vec<String> {
    column_notes(catalog, |c| c.sensitivity.as_ref())
}

/// The Always Encrypted columns of `catalog`, as `schema.table.column: encryption type`: on a
/// scope's catalog, the ciphertext that scope's results carry.
pub fn encrypted_columns(catalog: &Catalog) -> Vec<String> {
    column_notes(catalog, |c| c.encrypted.as_ref())
}

/// `schema.table.column: note` for each column of `catalog` that `note` says something of.
fn column_notes(
    catalog: &Catalog,
    note: impl Fn(&crate::db::ColumnInfo) -> Option<&String> + Copy,
) -> Vec<String> {
    catalog
        .tables
        .iter()
        .flat_map(|t| {
            t.columns.iter().filter_map(move |c| {
                note(c).map(|n| format!("{}.{}.{}: {n}", t.schema, t.name, c.name))
            })
        })
        .collect()
}

/// What a scope with `rules` may see of `raw`: its visible tables, and of each only the
/// visible columns. A primary key that includes a hidden column is dropped (the table's rows
/// then get `sql:` ids, as rows of a table without a key do): an id would carry the hidden
/// value, and `fetch` by key would test guesses of it. So is a foreign key that includes a
/// hidden column on either side or points at a hidden table (a row's related ids would
/// reveal its value), and a full-text index keyed on a hidden column. A table whose key was
/// dropped is marked [`TableInfo::key_hidden`], so that its samples are ordered by visible
/// columns rather than scanned in the hidden key's order.
pub fn scoped_catalog(rules: &AccessRules, raw: &Catalog) -> Catalog {
    let visible_table = |schema: &str, name: &str| rules.table_visible(Some(schema), name);
    let hidden =
        |schema: &str, table: &str, column: &str| rules.column_denied(Some(schema), table, column);
    let mut tables: Vec<TableInfo> = raw
        .tables
        .iter()
        .filter(|t| visible_table(&t.schema, &t.name))
        .map(|t| {
            let mut t = t.clone();
            if !rules.has_denied_columns(Some(&t.schema), &t.name)
                && t.foreign_keys
                    .iter()
                    .all(|fk| !rules.has_denied_columns(Some(&fk.ref_schema), &fk.ref_table))
            {
                t.foreign_keys
                    .retain(|fk| visible_table(&fk.ref_schema, &fk.ref_table));
                return t;
            }
            let (schema, name) = (t.schema.clone(), t.name.clone());
            let own_hidden = |c: &String| hidden(&schema, &name, c);
            t.columns.retain(|c| !own_hidden(&c.name));
            if t.primary_key.iter().any(own_hidden) {
                t.primary_key.clear();
                t.key_is_heuristic = false;
                t.key_hidden = true;
            }
            t.foreign_keys.retain(|fk| {
                visible_table(&fk.ref_schema, &fk.ref_table)
                    && !fk.columns.iter().any(own_hidden)
                    && !fk
                        .ref_columns
                        .iter()
                        .any(|c| hidden(&fk.ref_schema, &fk.ref_table, c))
            });
            if let Some(ft) = &mut t.full_text {
                ft.columns.retain(|c| !own_hidden(c));
                if own_hidden(&ft.key_column) || ft.columns.is_empty() {
                    t.full_text = None;
                }
            }
            // A constraint on a hidden column would say it exists and what it may hold.
            t.checks
                .retain(|c| !sql_identifiers(c).iter().any(&own_hidden));
            t
        })
        .collect();
    for t in &mut tables {
        if t.history.is_some() && !history_readable(rules, raw, t) {
            t.history = None;
        }
    }
    // A synonym leads to its base as the scope sees it (its rules applied by the base's
    // name), so one whose own name and base are visible is kept.
    let synonyms = raw
        .synonyms
        .iter()
        .filter(|s| {
            rules.table_visible(Some(&s.schema), &s.name)
                && s.base.as_ref().is_some_and(|(schema, name)| {
                    tables
                        .iter()
                        .any(|t| t.schema == *schema && t.name == *name)
                })
        })
        .cloned()
        .collect();
    Catalog {
        tables,
        varchar_utf8: raw.varchar_utf8,
        synonyms,
    }
}

/// Where a query that names `synonym` may read in a scope with access rules. The rules are
/// judged by the names a query writes, and a synonym reads its base under a name no rule
/// mentions: it is followed only when no rule could touch what it reads.
#[derive(Debug)]
pub enum ThroughSynonym<'c> {
    /// Its base is visible and no column rule names it: the synonym reads it.
    Followed,
    /// Its base is visible but column rules may apply: the query must name the base itself.
    ByBaseName(&'c TableInfo),
    /// Its base is hidden, or not a table or view of this database: refused.
    Refused,
}

/// How `rules` treat a query that names `synonym` ([`ThroughSynonym`]); `raw` is the whole
/// catalog.
pub fn through_synonym<'c>(
    rules: &AccessRules,
    raw: &'c Catalog,
    synonym: &Synonym,
) -> ThroughSynonym<'c> {
    let Some(base) = synonym
        .base
        .as_ref()
        .and_then(|(schema, name)| raw.table(Some(schema), name))
    else {
        return ThroughSynonym::Refused;
    };
    if !rules.table_visible(Some(&base.schema), &base.name) {
        ThroughSynonym::Refused
    } else if rules.has_denied_columns(Some(&base.schema), &base.name) {
        ThroughSynonym::ByBaseName(base)
    } else {
        ThroughSynonym::Followed
    }
}

/// The synonyms a scope with `rules` shows by name but cannot query through, each with what to
/// do instead (`dbo.Pay (name dbo.Salaries itself)`), for `check-config`; empty for a scope
/// without rules, where the database decides.
pub fn synonyms_not_followed(rules: &AccessRules, raw: &Catalog) -> Vec<String> {
    if !rules.restricts() {
        return Vec::new();
    }
    raw.synonyms
        .iter()
        .filter(|s| rules.table_visible(Some(&s.schema), &s.name))
        .filter_map(|s| match through_synonym(rules, raw, s) {
            ThroughSynonym::Followed => None,
            ThroughSynonym::ByBaseName(base) => Some(format!(
                "{} (column rules apply to its base: name {} itself)",
                s.qualified(),
                base.qualified()
            )),
            ThroughSynonym::Refused => Some(format!(
                "{} (its base is hidden, or in another database or on another server)",
                s.qualified()
            )),
        })
        .collect()
}

/// Whether a scope with `rules` may read `table`'s history (what `FOR SYSTEM_TIME` reads, by
/// SQL Server's own rule a `SELECT` on the history table as well): `table` is system-versioned,
/// its history table is visible, and hides no column the table itself shows (the earlier
/// versions of a column come out under the table's name for it). `raw` is the whole catalog.
pub fn history_readable(rules: &AccessRules, raw: &Catalog, table: &TableInfo) -> bool {
    let Some(h) = &table.history else {
        return false;
    };
    if !rules.table_visible(Some(&h.schema), &h.name) {
        return false;
    }
    let shown = |c: &str| !rules.column_denied(Some(&table.schema), &table.name, c);
    match raw.table(Some(&h.schema), &h.name) {
        Some(history) => !history
            .columns
            .iter()
            .any(|c| shown(&c.name) && rules.column_denied(Some(&h.schema), &h.name, &c.name)),
        // Its columns unknown: readable only if no column rule could apply to it.
        None => !rules.has_denied_columns(Some(&h.schema), &h.name),
    }
}

/// Columns of `table` not hidden in this scope, in table order.
pub(crate) fn visible_columns(scope: &Scope, table: &TableInfo) -> Vec<String> {
    table
        .columns
        .iter()
        .filter(|c| {
            !scope
                .rules
                .column_denied(Some(&table.schema), &table.name, &c.name)
        })
        .map(|c| c.name.clone())
        .collect()
}

/// Resolves a table name the caller gave; the error lists what is visible.
pub(crate) fn resolve_table<'c>(
    scope: &Scope,
    catalog: &'c Catalog,
    name: &str,
) -> Result<&'c TableInfo, ToolError> {
    match catalog.find_or_base(name) {
        Some(t) if scope.rules.table_visible(Some(&t.schema), &t.name) => Ok(t),
        _ => Err(ToolError::NotFound(format!(
            "no table `{}` is visible here; visible tables: {}",
            name.trim(),
            table_list(scope, catalog)
        ))),
    }
}

/// Comma-separated visible table names, for error messages.
pub(crate) fn table_list(scope: &Scope, catalog: &Catalog) -> String {
    let names: Vec<String> = visible_tables(scope, catalog)
        .iter()
        .map(|t| t.qualified())
        .collect();
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

/// Turns a row into a JSON object keyed by column name.
pub(crate) fn row_object(columns: &[ResultColumn], row: &[DbValue]) -> Map<String, Value> {
    let mut m = Map::with_capacity(columns.len());
    for (c, v) in columns.iter().zip(row) {
        m.insert(c.name.clone(), v.to_json());
    }
    m
}

/// Rows as JSON objects keyed by column name, serialised straight from the row set (no
/// intermediate maps: this is the hot path of `execute_sql` and `get_table_sample`).
pub(crate) struct RowObjects<'a> {
    pub columns: &'a [ResultColumn],
    pub rows: &'a [Vec<DbValue>],
}

impl Serialize for RowObjects<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.rows.iter().map(|row| RowObject {
            columns: self.columns,
            row,
        }))
    }
}

struct RowObject<'a> {
    columns: &'a [ResultColumn],
    row: &'a [DbValue],
}

impl Serialize for RowObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.columns.len()))?;
        for (c, v) in self.columns.iter().zip(self.row) {
            m.serialize_entry(&c.name, v)?;
        }
        m.end()
    }
}

impl RowObjects<'_> {
    /// Writes the rows as [`RowObjects`]' `Serialize` does, into both forms at once.
    pub(crate) fn write(&self, d: &mut Dual) -> Result<(), serde_json::Error> {
        // `"name":` in both forms, once per column rather than once per cell.
        let keys: Vec<_> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Dual::piece(|k| {
                    if i > 0 {
                        k.syntax(b",");
                    }
                    k.key(&c.name);
                })
            })
            .collect();
        d.syntax(b"[");
        for (r, row) in self.rows.iter().enumerate() {
            d.syntax(if r == 0 { b"{" } else { b",{" });
            for (key, v) in keys.iter().zip(row) {
                d.put(key);
                write_cell(d, v)?;
            }
            d.syntax(b"}");
        }
        d.syntax(b"]");
        Ok(())
    }
}

/// One cell, as [`DbValue`]'s `Serialize` writes it.
fn write_cell(d: &mut Dual, v: &DbValue) -> Result<(), serde_json::Error> {
    match v {
        DbValue::Null => d.syntax(b"null"),
        DbValue::Bool(b) => d.syntax(if *b { b"true" } else { b"false" }),
        DbValue::Int(i) => d.int(*i),
        DbValue::Decimal(t) | DbValue::Text(t) => d.string(t),
        DbValue::Float(_) | DbValue::Bytes(_) => d.value(v)?,
    }
    Ok(())
}

/// A key value as it is written in a row id: bytes as `0x` and upper-case hex (the form
/// T-SQL writes a binary literal in, which the backends' lookups read back), everything else
/// as displayed. `None` for NULL, which no key equals.
pub(crate) fn key_text(v: &DbValue) -> Option<String> {
    match v {
        DbValue::Null => None,
        DbValue::Bytes(b) => {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("0x");
            for byte in b {
                let _ = write!(s, "{byte:02X}");
            }
            Some(s)
        }
        v => Some(v.display()),
    }
}

/// Bytes written as [`key_text`] writes them (`0x` and hex digits, either case); `None`
/// for anything else, which then matches no binary key.
pub(crate) fn key_bytes(t: &str) -> Option<Vec<u8>> {
    let t = t.trim();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
    // Hex digits only: `from_str_radix` alone would take a `+` too.
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Queries run at once by a backend without pool numbers.
const DEFAULT_QUERIES_AT_ONCE: usize = 4;

/// How many queries one tool call runs at once (the tables of a keyword search, the child
/// lookups of a fetch): at most half the pool, so other calls still find a connection and
/// none of these waits so long for one that it fails.
pub(crate) fn at_once(scope: &Scope) -> usize {
    scope
        .db
        .pool_stats()
        .map_or(DEFAULT_QUERIES_AT_ONCE, |p| (p.max as usize / 2).max(1))
}

/// The id of a row of `table` if the selected columns include its whole primary key, read
/// whole: `was_cut(i)` says whether the row's value in column `i` was cut (to fit the page,
/// or at [`crate::db::MAX_VALUE_BYTES`]), and a cut key value would name another row or
/// none, so such a row gets no row id (callers treat it as a row without a key).
pub(crate) fn row_id(
    table: &TableInfo,
    columns: &[ResultColumn],
    row: &[DbValue],
    was_cut: impl Fn(usize) -> bool,
) -> Option<String> {
    if table.primary_key.is_empty() {
        return None;
    }
    let mut key = Vec::with_capacity(table.primary_key.len());
    for pk in &table.primary_key {
        let i = columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(pk))?;
        if was_cut(i) {
            return None;
        }
        key.push(key_text(row.get(i)?)?);
    }
    Some(ids::RecordId::row(
        &table.schema,
        &table.name,
        key.iter().map(String::as_str),
    ))
}

/// A human title for a row: `first_name last_name`, else its name-like column, then the
/// table and key (`Anna Berg (customers 42)`).
pub(crate) fn row_title(table: &TableInfo, columns: &[ResultColumn], row: &[DbValue]) -> String {
    let value_of = |name: &str| -> Option<String> {
        // Ciphertext (Always Encrypted) names nothing.
        if table.column(name).is_some_and(|c| c.encrypted.is_some()) {
            return None;
        }
        let i = columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))?;
        let v = row.get(i)?.display();
        (!v.is_empty()).then_some(v)
    };
    let key: Vec<String> = table
        .primary_key
        .iter()
        .filter_map(|pk| value_of(pk))
        .collect();
    let label = format!("{} {}", table.name, key.join("/"));
    let label = label.trim();
    let person = match (value_of("first_name"), value_of("last_name")) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        _ => None,
    };
    match person.or_else(|| table.title_column().and_then(|tc| value_of(&tc.name))) {
        Some(t) => format!("{} ({label})", truncate(&t, 120)),
        None => label.to_string(),
    }
}

/// Text columns of a table that may be searched in this scope.
pub(crate) fn searchable_columns(scope: &Scope, table: &TableInfo) -> Vec<String> {
    table
        .columns
        .iter()
        // Ciphertext (Always Encrypted) cannot be searched: `LIKE` on it is an error.
        .filter(|c| c.kind == ValueKind::Text && c.encrypted.is_none())
        .filter(|c| {
            !scope
                .rules
                .column_denied(Some(&table.schema), &table.name, &c.name)
        })
        .map(|c| c.name.clone())
        .collect()
}

/// Cuts `s` to at most `max` characters on a char boundary, marking the cut.
/// What a result says when some of its values were cut (paged results, `fetch`, record pages).
pub(crate) fn cut_note(columns: &[impl AsRef<str>]) -> String {
    let names: Vec<&str> = columns.iter().map(AsRef::as_ref).collect();
    format!(
        "values of {} were cut: at most {} bytes each, less when a row alone passes the \
         scope's max_result_bytes; select part of them (SUBSTRING) to read further",
        names.join(", "),
        crate::db::MAX_VALUE_BYTES
    )
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}
