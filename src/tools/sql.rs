//! The SQL-shaped tools of the `full` profile: `list_tables`, `describe_table`,
//! `get_table_sample`, `execute_sql`, and the table description `fetch` shares.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::cache::{Cursor, CursorTarget, TakenCursor};
use super::ids::RecordId;
use super::{
    RowObjects, ThroughSynonym, ToolError, ToolOutput, history_readable, resolve_table, table_list,
    through_synonym, visible_columns, visible_tables,
};
use crate::db::guard::{self, GuardError, TableRef};
use crate::db::lift::{self, Lifted};
use crate::db::{AccessRules, Catalog, DbError, Page, ResultColumn, RowSet, TableInfo};
use crate::json::Dual;
use crate::state::Scope;

/// Default page of `get_table_sample`.
const DEFAULT_SAMPLE: usize = 10;

pub async fn list_tables(scope: &Scope) -> Result<ToolOutput, ToolError> {
    let catalog = scope.catalog().await?;
    let tables: Vec<Value> = visible_tables(scope, &catalog)
        .into_iter()
        .map(|t| {
            let mut entry = json!({
                "id": t.qualified(),
                "schema": t.schema,
                "name": t.name,
                "kind": t.kind,
                "rows": t.row_estimate,
                "columns": visible_columns(scope, t).len(),
                "primary_key": t.primary_key,
            });
            if let Some(d) = &t.description {
                entry["description"] = json!(d);
            }
            // Its earlier rows can be read (describe_table says how).
            if t.history.is_some() {
                entry["system_versioned"] = json!(true);
            }
            entry
        })
        .collect();
    ToolOutput::new(&json!({ "tables": tables }), tables.len())
}

pub async fn describe_table(scope: &Scope, name: &str) -> Result<ToolOutput, ToolError> {
    let catalog = scope
        .catalog_for(|c| c.find_or_base(name).is_some())
        .await?;
    let table = resolve_table(scope, &catalog, name)?;
    ToolOutput::new(&describe(scope, &catalog, table), 1)
}

/// A table's description as JSON: columns, keys, relationships (only visible ones).
pub fn describe(scope: &Scope, catalog: &Catalog, table: &TableInfo) -> Value {
    let visible = visible_columns(scope, table);
    let columns: Vec<Value> = table
        .columns
        .iter()
        .filter(|c| visible.contains(&c.name))
        .map(|c| {
            let mut column = json!({
                "name": c.name,
                "type": c.data_type,
                "nullable": c.nullable,
                "primary_key": table.primary_key.contains(&c.name),
            });
            if let Some(d) = &c.description {
                column["description"] = json!(d);
            }
            if let Some(s) = &c.sensitivity {
                column["sensitivity"] = json!(s);
            }
            if let Some(m) = &c.masked {
                column["masked"] = json!(m);
            }
            if let Some(e) = &c.encrypted {
                column["encrypted"] = json!(e);
            }
            column
        })
        .collect();
    let foreign_keys: Vec<Value> = table
        .foreign_keys
        .iter()
        .filter(|fk| {
            scope
                .rules
                .table_visible(Some(&fk.ref_schema), &fk.ref_table)
        })
        .map(|fk| {
            json!({
                "columns": fk.columns,
                "references": RecordId::table(&fk.ref_schema, &fk.ref_table),
                "ref_columns": fk.ref_columns,
            })
        })
        .collect();
    let referenced_by: Vec<Value> = visible_tables(scope, catalog)
        .into_iter()
        .flat_map(|other| {
            other
                .foreign_keys
                .iter()
                .filter(|fk| catalog.names(&fk.ref_schema, &fk.ref_table, table))
                .map(move |fk| json!({"table": other.qualified(), "columns": fk.columns}))
        })
        .collect();
    let mut desc = json!({
        "id": table.qualified(),
        "schema": table.schema,
        "name": table.name,
        "kind": table.kind,
        "rows": table.row_estimate,
        "primary_key": table.primary_key,
        "key_is_heuristic": table.key_is_heuristic,
        "columns": columns,
        "foreign_keys": foreign_keys,
        "referenced_by": referenced_by,
    });
    if let Some(d) = &table.description {
        desc["description"] = json!(d);
    }
    if !table.checks.is_empty() {
        desc["checks"] = json!(table.checks);
    }
    if let Some(h) = &table.history {
        desc["history"] = json!(history_text(&h.schema, &h.name));
    }
    desc
}

/// What a system-versioned table's description says of its history, so that a model asking
/// about the past finds how to read it.
fn history_text(schema: &str, name: &str) -> String {
    format!(
        "system-versioned: earlier versions of its rows are kept in {schema}.{name} and read by \
         adding FOR SYSTEM_TIME AS OF <time> (or FROM <start> TO <end>, BETWEEN <start> AND \
         <end>, CONTAINED IN (<start>, <end>), ALL) after the table's name; times are UTC"
    )
}

/// The same description as readable text (for `fetch`'s `text`).
pub(crate) fn describe_text(desc: &Value) -> String {
    let mut s = format!(
        "{} {} ({} rows)\n",
        desc["kind"].as_str().unwrap_or("table"),
        desc["id"].as_str().unwrap_or(""),
        desc["rows"]
    );
    if let Some(d) = desc["description"].as_str() {
        s.push_str(d);
        s.push('\n');
    }
    s.push_str("Columns:\n");
    for c in desc["columns"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "- {} {}{}{}{}{}{}{}\n",
            c["name"].as_str().unwrap_or(""),
            c["type"].as_str().unwrap_or(""),
            if c["nullable"] == true {
                " NULL"
            } else {
                " NOT NULL"
            },
            if c["primary_key"] == true {
                " PRIMARY KEY"
            } else {
                ""
            },
            c["description"]
                .as_str()
                .map(|d| format!(": {d}"))
                .unwrap_or_default(),
            c["sensitivity"]
                .as_str()
                .map(|s| format!(" [sensitivity: {s}]"))
                .unwrap_or_default(),
            c["masked"]
                .as_str()
                .map(|m| format!(" [masked by the database: {m}; its values are not the data]"))
                .unwrap_or_default(),
            c["encrypted"]
                .as_str()
                .map(|e| format!(
                    " [Always Encrypted ({e}): its values are ciphertext here, and it cannot be searched or compared with a value]"
                ))
                .unwrap_or_default()
        ));
    }
    for check in desc["checks"].as_array().into_iter().flatten() {
        s.push_str(&format!("Check: {}\n", check.as_str().unwrap_or("")));
    }
    if let Some(h) = desc["history"].as_str() {
        s.push_str(&format!("History: {h}\n"));
    }
    for fk in desc["foreign_keys"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "Foreign key ({}) references {} ({})\n",
            join(&fk["columns"]),
            fk["references"].as_str().unwrap_or(""),
            join(&fk["ref_columns"])
        ));
    }
    for r in desc["referenced_by"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "Referenced by {} ({})\n",
            r["table"].as_str().unwrap_or(""),
            join(&r["columns"])
        ));
    }
    s
}

fn join(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The paged result shared by `get_table_sample` and `execute_sql`. It is written by
/// [`Paged::write`]; the derived `Serialize` is the reference its test compares against.
#[derive(Serialize)]
struct Paged<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    columns: Vec<&'a str>,
    rows: RowObjects<'a>,
    row_count: usize,
    offset: usize,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    masked_columns: &'a [String],
    /// Columns some of whose values were cut at [`crate::db::MAX_VALUE_BYTES`].
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    cut_columns: Vec<&'a str>,
    /// Why the page is less than it might seem, for the model: values cut, a byte cap reached.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: Vec<String>,
}

/// What a page says besides its rows: the table sampled, the columns masked, and notes on
/// the query.
#[derive(Default)]
struct PageFacts<'a> {
    table: Option<String>,
    masked_columns: &'a [String],
    notes: [Option<&'static str>; 4],
}

/// Builds the paged result, storing a cursor when more rows follow. `target` is made only
/// then: a cursor of `execute_sql` holds a SHA-256 of the text, which most calls never need.
fn paged(
    scope: &Scope,
    rs: &RowSet,
    page: &Page,
    target: impl FnOnce() -> CursorTarget,
    facts: PageFacts<'_>,
    owner: Option<&str>,
) -> Result<ToolOutput, ToolError> {
    let PageFacts {
        table,
        masked_columns,
        notes: query_notes,
    } = facts;
    let next_cursor = rs.more.then(|| {
        scope.cache.put_cursor(Cursor {
            target: target(),
            offset: page.offset + rs.joined_rows.unwrap_or(rs.rows.len()),
            page_size: page.limit,
            owner: owner.map(str::to_string),
        })
    });
    let cut_columns = rs.cut_columns();
    let mut notes: Vec<String> = query_notes
        .iter()
        .flatten()
        .map(|n| n.to_string())
        .collect();
    if !cut_columns.is_empty() {
        notes.push(super::cut_note(&cut_columns));
    }
    if rs.joined_rows.is_some() && rs.more {
        notes.push(
            "this page holds the first part of the FOR JSON / FOR XML text, which SQL Server \
             sends in pieces; pass next_cursor for the rest, which continues it"
                .to_string(),
        );
    } else if rs.byte_capped {
        notes.push(format!(
            "this page stopped after {} rows at the scope's limit of {} bytes \
             (max_result_bytes); pass next_cursor for the next rows, or select fewer or \
             shorter columns",
            rs.rows.len(),
            page.max_bytes
        ));
    }
    let out = Paged {
        table,
        columns: rs.columns.iter().map(|c| c.name.as_str()).collect(),
        rows: RowObjects {
            columns: &rs.columns,
            rows: &rs.rows,
        },
        row_count: rs.rows.len(),
        offset: page.offset,
        truncated: rs.more,
        next_cursor,
        masked_columns,
        cut_columns,
        notes,
    };
    // About 32 bytes a cell (name, quotes, value) sizes the buffers once for typical rows.
    let cells = rs.rows.len() * rs.columns.len();
    ToolOutput::dual(rs.rows.len(), 256 + cells * 32, |d| out.write(d))
}

impl Paged<'_> {
    /// Writes the result (field for field what `Serialize` would) as JSON and escaped text.
    fn write(&self, d: &mut Dual) -> Result<(), serde_json::Error> {
        d.syntax(b"{");
        if let Some(t) = &self.table {
            d.key("table");
            d.string(t);
            d.syntax(b",");
        }
        d.key("columns");
        string_array(d, self.columns.iter().copied());
        d.syntax(b",");
        d.key("rows");
        self.rows.write(d)?;
        d.syntax(b",");
        d.key("row_count");
        d.int(self.row_count);
        d.syntax(b",");
        d.key("offset");
        d.int(self.offset);
        d.syntax(b",");
        d.key("truncated");
        d.syntax(if self.truncated { b"true" } else { b"false" });
        if let Some(c) = &self.next_cursor {
            d.syntax(b",");
            d.key("next_cursor");
            d.string(c);
        }
        if !self.masked_columns.is_empty() {
            d.syntax(b",");
            d.key("masked_columns");
            string_array(d, self.masked_columns.iter().map(String::as_str));
        }
        if !self.cut_columns.is_empty() {
            d.syntax(b",");
            d.key("cut_columns");
            string_array(d, self.cut_columns.iter().copied());
        }
        if !self.notes.is_empty() {
            d.syntax(b",");
            d.key("notes");
            string_array(d, self.notes.iter().map(String::as_str));
        }
        d.syntax(b"}");
        Ok(())
    }
}

fn string_array<'a>(d: &mut Dual, items: impl Iterator<Item = &'a str>) {
    d.syntax(b"[");
    for (i, s) in items.enumerate() {
        if i > 0 {
            d.syntax(b",");
        }
        d.string(s);
    }
    d.syntax(b"]");
}

/// Resolves the page to run: from a cursor (which must belong to `target`, made only when a
/// cursor is given) or from scratch. A cursor comes back taken: the caller spends it once the
/// page is answered, and it returns to the cache if the page fails.
fn page_for<'s>(
    scope: &'s Scope,
    target: impl FnOnce() -> CursorTarget,
    size: Option<usize>,
    default: usize,
    cursor: Option<&str>,
    owner: Option<&str>,
) -> Result<(Page, Option<TakenCursor<'s>>), ToolError> {
    let cap = scope.config.max_rows;
    match cursor {
        Some(id) => {
            let taken = match scope.cache.take_cursor(id, &target(), owner) {
                Some(Ok(c)) => c,
                Some(Err(())) => {
                    return Err(ToolError::InvalidArguments(
                        "`cursor` belongs to a different query; pass it with the same arguments as the page it came from".into(),
                    ));
                }
                None => {
                    return Err(ToolError::InvalidArguments(
                        "`cursor` is unknown or expired; run the call again without a cursor"
                            .into(),
                    ));
                }
            };
            let c = taken.cursor();
            let page = Page::bytes(
                c.offset,
                size.unwrap_or(c.page_size).min(cap),
                scope.config.max_result_bytes,
            );
            Ok((page, Some(taken)))
        }
        None => Ok((
            Page::bytes(
                0,
                size.unwrap_or(default).min(cap),
                scope.config.max_result_bytes,
            ),
            None,
        )),
    }
}

/// The answered page's cursor is used up; a failed page's goes back (see [`page_for`]).
fn spend_on_success(
    out: Result<ToolOutput, ToolError>,
    taken: Option<TakenCursor<'_>>,
) -> Result<ToolOutput, ToolError> {
    if out.is_ok() {
        taken.into_iter().for_each(TakenCursor::spend);
    }
    out
}

pub async fn get_table_sample(
    scope: &Scope,
    name: &str,
    limit: Option<usize>,
    cursor: Option<&str>,
    owner: Option<&str>,
) -> Result<ToolOutput, ToolError> {
    let catalog = scope
        .catalog_for(|c| c.find_or_base(name).is_some())
        .await?;
    let table = resolve_table(scope, &catalog, name)?;
    let target = || CursorTarget::Table(table.qualified());
    let (page, taken) = page_for(scope, target, limit, DEFAULT_SAMPLE, cursor, owner)?;
    let columns = visible_columns(scope, table);
    let out = match scope.db.sample(table, &columns, page.clone()).await {
        Ok(rs) => {
            let facts = PageFacts {
                table: Some(table.qualified()),
                ..PageFacts::default()
            };
            paged(scope, &rs, &page, target, facts, owner)
        }
        Err(e) => Err(e.into()),
    };
    spend_on_success(out, taken)
}

/// An ad-hoc query's rows, with what the guard learned of it and what was done to them.
pub(crate) struct Ran {
    pub rs: RowSet,
    pub checked: Arc<guard::CheckedQuery>,
    /// The result columns dropped as hidden.
    pub masked: Vec<String>,
    /// A result column that takes an `AVG` came back as an integer: SQL Server's `AVG` of an
    /// integer column, truncated.
    pub integer_avg: bool,
    /// The database keeps `varchar` text as UTF-8 ([`Catalog::varchar_utf8`]).
    pub varchar_utf8: bool,
}

impl Ran {
    /// Notes on mistakes in the query that give a quietly wrong answer, for the page of rows
    /// that starts at `offset`.
    pub(crate) fn notes(&self, offset: usize) -> [Option<&'static str>; 4] {
        let checked = &self.checked;
        [
            (checked.wide_varchar_literal && !self.varchar_utf8).then_some(WIDE_VARCHAR_LITERAL),
            checked.null_comparison.then_some(NULL_COMPARISON),
            self.integer_avg.then_some(INTEGER_AVG),
            (checked.not_in_subquery && self.rs.rows.is_empty() && offset == 0)
                .then_some(NOT_IN_SUBQUERY),
        ]
    }
}

/// Checks and runs ad-hoc SQL, dropping hidden columns; shared by `execute_sql` and `search`.
pub(crate) async fn run_sql(scope: &Scope, sql: &str, mut page: Page) -> Result<Ran, ToolError> {
    let (lifted, checked) = accept(scope, sql)?;
    // The whole catalog, not the scope's: hidden columns must be found to be masked.
    let mut catalog = scope.db.catalog().await?;
    let known = |c: &Catalog| {
        checked
            .tables
            .iter()
            .all(|t| c.table_or_base(t.schema.as_deref(), &t.name).is_some())
    };
    if scope.rules.restricts() && !known(&catalog) {
        catalog = scope.db.catalog_after_miss().await?;
    }
    let read = resolve(&catalog, &checked.tables);
    if scope.rules.restricts() {
        for t in &checked.tables {
            name_may_be_read(scope, &catalog, t)?;
        }
    }
    for t in &checked.system_time {
        history_may_be_read(&scope.rules, &catalog, t)?;
    }
    page.hidden = hidden_columns(scope, &read);
    page.pageable_in_sql = checked.pageable_in_sql;
    page.linear_steps = checked.linear_steps;
    let mut rs = match scope.db.query_lifted(&lifted, page).await {
        Ok(rs) => rs,
        Err(DbError::Sql(msg)) if looks_like_missing_table(&msg) => {
            // It may have gone since the catalog was read: list the tables there are now.
            let now = scope
                .db
                .catalog_after_miss()
                .await
                .unwrap_or_else(|_| catalog.clone());
            return Err(ToolError::NotFound(format!(
                "{msg}; visible tables: {}",
                table_list(scope, &now)
            )));
        }
        Err(DbError::Sql(msg)) if looks_like_missing_column(&msg) => {
            let columns = column_list(scope, &read);
            return Err(if columns.is_empty() {
                DbError::Sql(msg)
            } else {
                DbError::Sql(format!("{msg}; the columns you may read: {columns}"))
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    // Before masking, while positions are the select list's.
    let integer_avg = checked.avg_items.iter().any(|&i| {
        rs.columns
            .get(i)
            .and_then(|c| c.data_type.as_deref())
            .is_some_and(|t| matches!(t, "int" | "bigint" | "smallint" | "tinyint"))
    });
    let masked = mask_columns(scope, &read, &mut rs);
    rs.dedupe_column_names();
    Ok(Ran {
        rs,
        checked,
        masked,
        integer_avg,
        varchar_utf8: catalog.varchar_utf8,
    })
}

/// Lifts `sql`'s literals and has the guard check it once per template and scope.
///
/// The verdict is remembered under the template, the query's shape with its lifted literals
/// erased, and every query of that shape shares it: lifting never changes a verdict (the guard
/// tests check every query they judge against its template), so queries that differ only in
/// lifted literals get the same one. On a miss the guard checks what will run:
///
/// - a backend that runs templates ([`crate::db::Backend::runs_lifted_templates`], SQLite):
///   the template; one the guard refuses is dropped and the original text is checked (and,
///   if accepted, run) as written, so refusals always quote what the client sent;
/// - otherwise (SQL Server, which runs the text as sent: see `db::mssql`): the original, so
///   every remembered verdict is one the guard gave a query that ran.
///
/// Only acceptances are remembered.
fn accept<'a>(
    scope: &Scope,
    sql: &'a str,
) -> Result<(Lifted<'a>, Arc<guard::CheckedQuery>), ToolError> {
    let dialect = scope.db.dialect();
    let lifted = lift::lift(sql, dialect);
    if let Some(checked) = scope.accepted.get(lifted.template.as_ref()) {
        return Ok((lifted, checked));
    }
    let checked = if lifted.params.is_empty() || !scope.db.runs_lifted_templates() {
        guard::check(sql, dialect, &scope.rules)?
    } else {
        match guard::check(&lifted.template, dialect, &scope.rules) {
            Ok(checked) => checked,
            Err(_) => {
                let checked = guard::check(sql, dialect, &scope.rules)?;
                return Ok((Lifted::verbatim(sql), Arc::new(checked)));
            }
        }
    };
    let checked = Arc::new(checked);
    scope
        .accepted
        .insert(lifted.template.to_string(), checked.clone());
    Ok((lifted, checked))
}

fn looks_like_missing_table(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("no such table") || m.contains("invalid object name")
}

fn looks_like_missing_column(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("no such column") || m.contains("invalid column name")
}

/// Most columns named per table, and most characters in all, in [`column_list`].
const LISTED_COLUMNS: usize = 60;
const LISTED_CHARS: usize = 3_000;

/// The visible columns of the tables a query reads (`orders: id, total; customers: …`), for a
/// model that named a column that is not there; empty when the catalog knows none of them.
fn column_list(scope: &Scope, read: &[Result<&TableInfo, &TableRef>]) -> String {
    let mut out = String::new();
    for info in read.iter().filter_map(|r| r.ok()) {
        let columns = super::visible_columns(scope, info);
        if out.len() > LISTED_CHARS {
            out.push_str("; …");
            break;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&info.qualified());
        out.push_str(": ");
        out.push_str(
            &columns
                .iter()
                .take(LISTED_COLUMNS)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        );
        if columns.len() > LISTED_COLUMNS {
            let _ = write!(
                out,
                ", … ({} in all; describe_table lists them)",
                columns.len()
            );
        }
    }
    out
}

/// `FOR SYSTEM_TIME` on `t` reads its history table: refused unless the scope may read that
/// too ([`history_readable`]). Also refused on a view or a table the catalog does not know as
/// system-versioned: what the view (or a table made since the catalog was read) reads
/// cannot be checked, and on any other table SQL Server refuses it anyway.
fn history_may_be_read(
    rules: &AccessRules,
    catalog: &Catalog,
    t: &TableRef,
) -> Result<(), ToolError> {
    let Some(table) = catalog.table(t.schema.as_deref(), &t.name) else {
        return Err(GuardError::Forbidden(format!(
            "FOR SYSTEM_TIME reads only a system-versioned table this scope can see, and \
             `{t}` is none"
        ))
        .into());
    };
    if table.history.is_none() {
        return Err(GuardError::Forbidden(format!(
            "`{}` is not a system-versioned table, so it has no earlier versions for FOR \
             SYSTEM_TIME to read{}",
            table.qualified(),
            if table.kind == "view" {
                " (on a view, the tables behind it cannot be checked: name them instead)"
            } else {
                ""
            }
        ))
        .into());
    }
    if !history_readable(rules, catalog, table) {
        return Err(GuardError::TableDenied(format!(
            "the history of `{}` is not accessible in this scope, and FOR SYSTEM_TIME reads \
             it; query the table as it is now, without FOR SYSTEM_TIME",
            table.qualified()
        ))
        .into());
    }
    Ok(())
}

/// The tables a query reads, as the catalog knows them, or as written where it does not. The
/// parts are looked up as they are: a name holding a dot or a bracket (`[odd.name]`) is one
/// name, not a text to split again.
fn resolve<'a>(
    catalog: &'a Catalog,
    tables: &'a [TableRef],
) -> Vec<Result<&'a TableInfo, &'a TableRef>> {
    tables
        .iter()
        .map(|t| catalog.table_or_base(t.schema.as_deref(), &t.name).ok_or(t))
        .collect()
}

/// Under access rules, whether a query may name `t`. The rules are judged by the names a
/// query writes (the guard did), so a name must be one they can judge: a table or view the
/// catalog knows, or a synonym whose reading no rule could touch ([`ThroughSynonym`]; one
/// whose base has column rules is sent to the base's own name, where they apply). Anything
/// else (a synonym for another database or for a hidden table, a name nobody has) is refused
/// with the visible tables, never naming a hidden one.
fn name_may_be_read(scope: &Scope, catalog: &Catalog, t: &TableRef) -> Result<(), ToolError> {
    let schema = t.schema.as_deref();
    if catalog.table(schema, &t.name).is_some() {
        return Ok(());
    }
    let through = catalog
        .synonym(schema, &t.name)
        .map(|s| through_synonym(&scope.rules, catalog, s));
    match through {
        Some(ThroughSynonym::Followed) => return Ok(()),
        Some(ThroughSynonym::ByBaseName(base)) => {
            return Err(ToolError::NotFound(format!(
                "`{t}` is a synonym for `{base}`; in this scope, name `{base}` itself",
                base = base.qualified()
            )));
        }
        Some(ThroughSynonym::Refused) | None => {}
    }
    Err(ToolError::NotFound(format!(
        "`{t}` is not a table or view of this database that this scope knows (a synonym is \
         followed only to a table of this database that the scope shows); visible tables: {}",
        table_list(scope, catalog)
    )))
}

/// The hidden columns of the tables a query reads (what [`mask_columns`] will drop, as far
/// as the catalog knows them), so that they do not count against the page's byte cap.
fn hidden_columns(scope: &Scope, read: &[Result<&TableInfo, &TableRef>]) -> Option<Arc<[String]>> {
    if scope.rules.deny_columns.is_empty() {
        return None;
    }
    let hidden: Vec<String> = read
        .iter()
        .flatten()
        .flat_map(|info| {
            info.columns
                .iter()
                .filter(|c| {
                    scope
                        .rules
                        .column_denied(Some(&info.schema), &info.name, &c.name)
                })
                .map(|c| c.name.clone())
        })
        .collect();
    (!hidden.is_empty()).then(|| hidden.into())
}

/// Removes result columns whose name is a hidden column of a referenced table. The guard
/// already refused queries naming hidden columns; this catches `SELECT *`.
fn mask_columns(
    scope: &Scope,
    read: &[Result<&TableInfo, &TableRef>],
    rs: &mut RowSet,
) -> Vec<String> {
    if scope.rules.deny_columns.is_empty() {
        return Vec::new();
    }
    // A result name stands for its column, or for the column after its last dot.
    let denied = |c: &str| {
        [c, crate::db::unqualified(c)].iter().any(|c| {
            read.iter().any(|t| match t {
                Ok(info) => scope.rules.column_denied(Some(&info.schema), &info.name, c),
                Err(t) => scope.rules.column_denied(t.schema.as_deref(), &t.name, c),
            })
        })
    };
    let hidden: Vec<usize> = rs
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| denied(&c.name))
        .map(|(i, _)| i)
        .collect();
    if hidden.is_empty() {
        return Vec::new();
    }
    let names = hidden.iter().map(|&i| rs.columns[i].name.clone()).collect();
    let keep = |i: usize| !hidden.contains(&i);
    rs.columns = std::mem::take(&mut rs.columns)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, c)| c)
        .collect::<Vec<ResultColumn>>();
    for row in &mut rs.rows {
        *row = std::mem::take(row)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, v)| v)
            .collect();
    }
    // Cut values keep pointing at their (now renumbered) columns.
    rs.cut_values.retain(|(_, c)| keep(*c));
    for (_, c) in &mut rs.cut_values {
        *c -= hidden.iter().filter(|&&h| h < *c).count();
    }
    names
}

/// The note on a SQL Server result whose query has a `'…'` string beyond Latin-1.
const WIDE_VARCHAR_LITERAL: &str = "a '…' string in this query holds characters beyond \
    Latin-1; SQL Server reads it as varchar in the database's code page, where they may turn \
    into '?' and match nothing; write N'…' to compare with nvarchar text";

/// The note on an empty first page of a query with `NOT IN (SELECT …)`.
const NOT_IN_SUBQUERY: &str = "no rows: if the NOT IN subquery returns a NULL, NOT IN matches \
    no row at all; write NOT EXISTS (SELECT 1 FROM … WHERE …), or add WHERE col IS NOT NULL \
    to the subquery";

/// The note on a result where an `AVG` came back as an integer.
const INTEGER_AVG: &str = "an AVG in this query came back as an integer: SQL Server averages \
    an integer column as an integer, cut toward zero; write AVG(CAST(col AS decimal(18, 4))) \
    (or AVG(col * 1.0)) for the fractional average";

/// The note on a result whose query compares with `NULL` by `=`, `<>`, `<`, ….
const NULL_COMPARISON: &str = "this query compares with NULL by =, <> or <, which is never \
    true, so that condition matches no row; write IS NULL or IS NOT NULL";

pub async fn execute_sql(
    scope: &Scope,
    sql: &str,
    page_size: Option<usize>,
    cursor: Option<&str>,
    owner: Option<&str>,
) -> Result<ToolOutput, ToolError> {
    if sql.trim().is_empty() {
        return Err(ToolError::InvalidArguments("`sql` is empty".into()));
    }
    let target = || CursorTarget::sql(sql);
    let max = scope.config.max_rows;
    let (page, taken) = page_for(scope, target, page_size, max, cursor, owner)?;
    let out = match run_sql(scope, sql, page.clone()).await {
        Ok(ran) => {
            let facts = PageFacts {
                table: None,
                masked_columns: &ran.masked,
                notes: ran.notes(page.offset),
            };
            paged(scope, &ran.rs, &page, target, facts, owner)
        }
        Err(e) => Err(e),
    };
    spend_on_success(out, taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::HistoryTable;
    use crate::db::Value as DbValue;

    fn table(schema: &str, name: &str, columns: &[&str], history: Option<&str>) -> TableInfo {
        TableInfo {
            history: history.map(|h| HistoryTable {
                schema: schema.into(),
                name: h.into(),
            }),
            ..crate::tools::testing::table_info(schema, name, columns)
        }
    }

    /// `check-config` names the synonyms a scope with rules cannot query by name, and why;
    /// one whose own name the rules hide is not named (it is meant to be hidden), and a scope
    /// without rules has none (the database decides).
    #[test]
    fn the_synonyms_a_scope_cannot_query_through_are_named_with_what_to_do() {
        let synonym = |name: &str, base: Option<(&str, &str)>| crate::db::Synonym {
            schema: "dbo".into(),
            name: name.into(),
            base: base.map(|(s, n)| (s.to_string(), n.to_string())),
        };
        let raw = Catalog {
            tables: vec![
                table("dbo", "Customers", &["Id", "City"], None),
                table("hr", "Salaries", &["Id", "Amount"], None),
            ],
            varchar_utf8: false,
            synonyms: vec![
                synonym("Clients", Some(("dbo", "Customers"))),
                synonym("Hidden", Some(("hr", "Salaries"))),
                synonym("Pay", Some(("hr", "Salaries"))),
                synonym("Remote", None),
            ],
        };
        let rules = |tables: &[&str], columns: &[&str]| AccessRules {
            allow_tables: Vec::new(),
            deny_tables: tables.iter().map(|t| t.to_string()).collect(),
            deny_columns: columns.iter().map(|c| c.to_string()).collect(),
        };
        let elsewhere = "(its base is hidden, or in another database or on another server)";
        let cases: [(AccessRules, Vec<String>); 4] = [
            (rules(&[], &[]), vec![]),
            (
                rules(&["dbo.Orders"], &[]),
                vec![format!("dbo.Remote {elsewhere}")],
            ),
            (
                rules(&[], &["hr.Salaries.Amount"]),
                vec![
                    "dbo.Hidden (column rules apply to its base: name hr.Salaries itself)".into(),
                    "dbo.Pay (column rules apply to its base: name hr.Salaries itself)".into(),
                    format!("dbo.Remote {elsewhere}"),
                ],
            ),
            (
                rules(&["hr.Salaries", "dbo.Hidden"], &[]),
                vec![
                    format!("dbo.Pay {elsewhere}"),
                    format!("dbo.Remote {elsewhere}"),
                ],
            ),
        ];
        for (rules, expected) in cases {
            assert_eq!(
                crate::tools::synonyms_not_followed(&rules, &raw),
                expected,
                "{rules:?}"
            );
        }
    }

    /// `FOR SYSTEM_TIME` reads a temporal table's history, so the scope must be able to read
    /// that too: its table visible, and no column hidden there that the table shows. A view,
    /// a table that is not system-versioned and one the catalog does not know are refused,
    /// as what they read cannot be checked. Descriptions say how to read the history only
    /// where it may be read.
    #[test]
    fn for_system_time_needs_a_history_the_scope_may_read() {
        let raw = Catalog {
            tables: vec![
                table(
                    "dbo",
                    "Employees",
                    &["Id", "Name", "Salary"],
                    Some("EmployeesHistory"),
                ),
                table("dbo", "EmployeesHistory", &["Id", "Name", "Salary"], None),
                table("dbo", "Plain", &["Id"], None),
                TableInfo {
                    kind: "view",
                    ..table("dbo", "Staff", &["Id", "Name"], None)
                },
            ],
            varchar_utf8: false,
            synonyms: Vec::new(),
        };
        let rules = |deny_tables: &[&str], deny_columns: &[&str]| AccessRules {
            allow_tables: Vec::new(),
            deny_tables: deny_tables.iter().map(|s| s.to_string()).collect(),
            deny_columns: deny_columns.iter().map(|s| s.to_string()).collect(),
        };
        let read = |r: &AccessRules, name: &str| {
            history_may_be_read(
                r,
                &raw,
                &TableRef {
                    schema: None,
                    name: name.into(),
                },
            )
            .map_err(|e| e.to_string())
        };
        let described = |r: &AccessRules| {
            crate::tools::scoped_catalog(r, &raw)
                .find("dbo.Employees")
                .and_then(|t| t.history.clone())
        };
        // Everything visible, or the same column hidden in both.
        for r in [
            rules(&[], &[]),
            rules(&[], &["Employees*.Salary"]),
            rules(
                &[],
                &["dbo.Employees.Salary", "dbo.EmployeesHistory.Salary"],
            ),
            rules(&["Plain"], &[]),
        ] {
            assert_eq!(read(&r, "employees"), Ok(()), "{r:?}");
            assert!(described(&r).is_some(), "{r:?}");
        }
        // The history hidden, or a column hidden only there.
        for r in [
            rules(&["dbo.EmployeesHistory"], &[]),
            rules(&["*History"], &[]),
            rules(&[], &["EmployeesHistory.Salary"]),
        ] {
            let e = read(&r, "Employees").expect_err("refused");
            assert!(
                e.contains("history of `dbo.Employees` is not accessible in this scope"),
                "{r:?}: {e}"
            );
            assert!(described(&r).is_none(), "{r:?}");
        }
        let r = rules(&[], &[]);
        let e = read(&r, "Plain").expect_err("not versioned");
        assert!(
            e.contains("`dbo.Plain` is not a system-versioned table"),
            "{e}"
        );
        let e = read(&r, "Staff").expect_err("a view");
        assert!(e.contains("on a view"), "{e}");
        let e = read(&r, "Since").expect_err("unknown");
        assert!(e.contains("`Since` is none"), "{e}");
    }

    fn col(name: &str) -> ResultColumn {
        ResultColumn {
            name: name.into(),
            ..ResultColumn::default()
        }
    }

    /// `Paged::write` must produce byte for byte what serde produces for the same value, and
    /// its escaped half must be exactly that JSON escaped.
    fn same_as_serde(p: &Paged<'_>) {
        let mut d = Dual::with_capacity(0);
        p.write(&mut d).unwrap();
        let (raw, escaped) = d.finish();
        let want = serde_json::to_vec(p).unwrap();
        assert_eq!(
            String::from_utf8_lossy(raw.as_bytes()),
            String::from_utf8_lossy(&want)
        );
        let mut again = Vec::new();
        crate::json::escape_into(&mut again, &want);
        assert_eq!(escaped, again);
    }

    #[test]
    fn written_pages_match_serde_for_every_value_kind() {
        let columns = vec![col("id"), col("name \"quoted\""), col("x"), col("ünï")];
        let rows = [
            vec![
                DbValue::Int(i64::MIN),
                DbValue::Text("O'Brien \"Bob\" \\ tab\t nl\n \u{1} é 😀".into()),
                DbValue::Float(1.5),
                DbValue::Decimal("-0.10".into()),
            ],
            vec![
                DbValue::Null,
                DbValue::Bool(true),
                DbValue::Float(f64::NAN),
                DbValue::Bytes(vec![0, 255, 34, 92]),
            ],
            vec![
                DbValue::Bool(false),
                DbValue::Text("".into()),
                DbValue::Float(-1e300),
                DbValue::Float(f64::INFINITY),
            ],
        ];
        let masked = ["secret".to_string(), "pa\"ss".to_string()];
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        for (table, cursor, masked, rows) in [
            (None, None, &[][..], &rows[..]),
            (
                Some("main.t\"x".to_string()),
                Some("c-1".to_string()),
                &masked[..],
                &rows[..],
            ),
            (Some("t".to_string()), None, &[][..], &rows[..0]),
        ] {
            same_as_serde(&Paged {
                table,
                columns: names.clone(),
                rows: RowObjects {
                    columns: &columns,
                    rows,
                },
                row_count: rows.len(),
                offset: 7,
                truncated: cursor.is_some(),
                next_cursor: cursor,
                masked_columns: masked,
                cut_columns: if masked.is_empty() {
                    Vec::new()
                } else {
                    vec!["x", "ünï \"q\""]
                },
                notes: masked.iter().map(|m| format!("note {m}")).collect(),
            });
        }
    }

    /// Under access rules a query may name only what the catalog knows: a name it does not
    /// know (a SQL Server synonym; here a table made after the catalog was read, holding the
    /// hidden table's rows) cannot be judged by rules written for other names, so it is
    /// refused with the visible tables. A scope without rules leaves it to the database.
    #[tokio::test]
    async fn under_access_rules_a_name_the_catalog_does_not_know_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pay.sqlite");
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, city TEXT);
             CREATE TABLE salaries (id INTEGER PRIMARY KEY, amount INTEGER);
             CREATE TABLE \"odd.name\" (id INTEGER PRIMARY KEY, x TEXT);
             INSERT INTO \"odd.name\" VALUES (1, 'dotted');
             INSERT INTO salaries VALUES (1, 250000);",
        )
        .expect("fixture");
        let hidden = tempfile::tempdir().expect("tempdir");
        let restricted = crate::tools::testing::sqlite_scope_with(
            hidden.path(),
            &path,
            Default::default(),
            "deny_tables = [\"salaries\"]",
        )
        .await;
        let open = tempfile::tempdir().expect("tempdir");
        let unrestricted =
            crate::tools::testing::sqlite_scope_with(open.path(), &path, Default::default(), "")
                .await;
        db.execute_batch("CREATE TABLE pay AS SELECT * FROM salaries")
            .expect("a name no rule mentions");
        let err = execute_sql(&restricted, "SELECT amount FROM pay", None, None, None)
            .await
            .expect_err("unknown to the catalog");
        let msg = err.to_string();
        assert!(matches!(err, ToolError::NotFound(_)), "{err:?}");
        assert!(
            msg.contains("`pay` is not a table or view of this database that this scope knows")
                && msg.contains("visible tables: main.customers")
                && !msg.contains("salaries"),
            "{msg}"
        );
        // What the catalog knows still runs, a name with a dot in it included (one name, not
        // a schema and a table), and without rules the database decides.
        execute_sql(&restricted, "SELECT city FROM customers", None, None, None)
            .await
            .expect("a known table");
        let out = execute_sql(&restricted, "SELECT x FROM \"odd.name\"", None, None, None)
            .await
            .expect("a known table with a dot in its name");
        assert!(out.json.into_string().contains("dotted"));
        let out = execute_sql(&unrestricted, "SELECT amount FROM pay", None, None, None)
            .await
            .expect("no rules");
        assert!(out.json.into_string().contains("250000"));
    }

    /// Under access rules a synonym is followed where the scope shows its base in full; a
    /// base with column rules sends the query to the base's own name (where they apply), and
    /// a hidden base or one in another database is refused without being named. SQLite has
    /// no synonyms and the TDS peer serves `sys.synonyms` empty, so the catalog says which
    /// names are synonyms (`testing::Extras`) and views made after the catalog was read
    /// stand in for them in the database: a name the catalog does not know as a table,
    /// reading the base's rows.
    #[tokio::test]
    async fn under_access_rules_a_synonym_is_followed_only_to_a_base_shown_in_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pay.sqlite");
        let db = rusqlite::Connection::open(&path).expect("open");
        db.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, city TEXT);
             CREATE TABLE salaries (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT);
             CREATE TABLE orders (id INTEGER PRIMARY KEY);
             INSERT INTO customers VALUES (1, 'Oslo');
             INSERT INTO salaries VALUES (1, 250000, 'annual');",
        )
        .expect("fixture");
        let extras = crate::tools::testing::Extras {
            synonyms: &[
                ("pay", Some("salaries")),
                ("clients", Some("customers")),
                ("remote", None),
            ],
            ..Default::default()
        };
        let mut scopes = Vec::new();
        for keys in [
            "deny_tables = [\"orders\"]",
            "deny_columns = [\"salaries.amount\"]",
            "deny_tables = [\"salaries\"]",
            "",
        ] {
            let state = tempfile::tempdir().expect("tempdir");
            let scope =
                crate::tools::testing::sqlite_scope_with(state.path(), &path, extras, keys).await;
            scopes.push((state, scope));
        }
        db.execute_batch(
            "CREATE VIEW pay AS SELECT * FROM salaries;
             CREATE VIEW clients AS SELECT * FROM customers;
             CREATE VIEW remote AS SELECT * FROM salaries;",
        )
        .expect("the synonyms' stand-ins");
        let run = |i: usize, sql: &'static str| {
            let scope = &scopes[i].1;
            async move {
                execute_sql(scope, sql, None, None, None)
                    .await
                    .map(|out| out.json.into_string())
            }
        };
        let unknown = "is not a table or view of this database that this scope knows";

        // No rule touches salaries: its synonym reads it.
        let out = run(0, "SELECT amount FROM pay").await.expect("followed");
        assert!(out.contains("250000"), "{out}");
        // One for another database cannot be judged.
        let err = run(0, "SELECT * FROM remote").await.expect_err("elsewhere");
        assert!(matches!(err, ToolError::NotFound(_)), "{err:?}");
        assert!(err.to_string().contains(unknown), "{err}");

        // A column rule for salaries: the synonym is sent to salaries' own name, where the
        // rule applies.
        let err = run(1, "SELECT note FROM pay")
            .await
            .expect_err("not followed");
        assert!(
            err.to_string().contains(
                "`pay` is a synonym for `main.salaries`; in this scope, name `main.salaries` itself"
            ),
            "{err}"
        );
        let out = run(1, "SELECT note FROM salaries").await.expect("the base");
        assert!(out.contains("annual"), "{out}");
        run(1, "SELECT amount FROM salaries")
            .await
            .expect_err("the hidden column, by the base's name");
        let out = run(1, "SELECT city FROM clients")
            .await
            .expect("no rule for it");
        assert!(out.contains("Oslo"), "{out}");

        // salaries hidden: the synonym is unknown, and salaries is not named.
        let err = run(2, "SELECT amount FROM pay")
            .await
            .expect_err("hidden base");
        let msg = err.to_string();
        assert!(msg.contains(unknown) && !msg.contains("salaries"), "{msg}");
        run(2, "SELECT city FROM clients")
            .await
            .expect("a visible base");

        // Without rules the database decides.
        let out = run(3, "SELECT amount FROM remote").await.expect("no rules");
        assert!(out.contains("250000"), "{out}");

        // Describing or sampling by a synonym's name reaches its base as the scope sees it
        // (our own statements name the base): with its column rules applied, never a hidden
        // base, never one elsewhere.
        let describe = |i: usize, name: &'static str| {
            let scope = &scopes[i].1;
            async move {
                describe_table(scope, name)
                    .await
                    .map(|out| out.json.into_string())
            }
        };
        let out = describe(3, "pay").await.expect("no rules");
        assert!(
            out.contains("\"id\":\"main.salaries\"") && out.contains("amount"),
            "{out}"
        );
        let out = describe(1, "main.pay").await.expect("a column rule");
        assert!(
            out.contains("\"id\":\"main.salaries\"") && !out.contains("amount"),
            "{out}"
        );
        let sample = get_table_sample(&scopes[1].1, "pay", None, None, None)
            .await
            .expect("sample")
            .json
            .into_string();
        assert!(
            sample.contains("annual") && !sample.contains("250000"),
            "{sample}"
        );
        let err = describe(2, "pay").await.expect_err("hidden base");
        assert!(!err.to_string().contains("salaries"), "{err}");
        describe(0, "remote").await.expect_err("elsewhere");
    }

    /// An Always Encrypted column (its values are ciphertext to this server) is described as
    /// such, never searched (`LIKE` on it is an error on SQL Server), never a row's title,
    /// and a fetched row says its value is ciphertext. The mark comes from the test wrapper
    /// (`testing::Extras`; SQLite and the TDS peer have no Always Encrypted); without it the
    /// same search finds the row, which shows the search reads that column otherwise.
    #[tokio::test]
    async fn an_always_encrypted_column_is_described_and_never_searched_or_a_title() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clinic.sqlite");
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch(
                "CREATE TABLE patients (id INTEGER PRIMARY KEY, full_name TEXT, ssn TEXT, notes TEXT);
                 INSERT INTO patients VALUES (1, 'Ada Lovelace', '123-45-6789', 'prefers mornings');",
            )
            .expect("fixture");
        let extras = crate::tools::testing::Extras {
            encrypted: &[
                ("patients", "full_name", "randomized"),
                ("patients", "ssn", "deterministic"),
            ],
            ..Default::default()
        };
        let marked = tempfile::tempdir().expect("tempdir");
        let scope =
            crate::tools::testing::sqlite_scope_with(marked.path(), &path, extras, "").await;
        let unmarked = tempfile::tempdir().expect("tempdir");
        let plain = crate::tools::testing::sqlite_scope_with(
            unmarked.path(),
            &path,
            Default::default(),
            "",
        )
        .await;
        async fn found(scope: &Scope, q: &str) -> String {
            crate::tools::search::search(scope, q, None)
                .await
                .expect("search")
                .json
                .into_string()
        }
        assert!(found(&plain, "Lovelace").await.contains("main.patients/1"));
        let out = found(&scope, "Lovelace").await;
        assert!(!out.contains("main.patients/1"), "{out}");
        let out = found(&scope, "mornings").await;
        assert!(out.contains("main.patients/1"), "{out}");
        // The title is not the ciphertext column's value.
        assert!(!out.contains("Ada Lovelace"), "{out}");

        let described: Value = serde_json::from_str(
            &describe_table(&scope, "patients")
                .await
                .expect("describe")
                .json
                .into_string(),
        )
        .expect("json");
        let ssn = described["columns"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "ssn"))
            .cloned();
        assert_eq!(
            ssn.map(|c| c["encrypted"].clone()),
            Some(json!("deterministic"))
        );
        let table = crate::tools::fetch::fetch(&scope, "main.patients", None)
            .await
            .expect("fetch the table")
            .json
            .into_string();
        assert!(
            table.contains(
                "- ssn TEXT NULL [Always Encrypted (deterministic): its values are ciphertext here"
            ),
            "{table}"
        );
        let row = crate::tools::fetch::fetch(&scope, "main.patients/1", None)
            .await
            .expect("fetch the row")
            .json
            .into_string();
        assert!(
            row.contains("(full_name, ssn are Always Encrypted: the values above are ciphertext)"),
            "{row}"
        );
        // What check-config --connect names per scope: what the scope shows of them.
        async fn shown(scope: &Scope) -> Vec<String> {
            crate::tools::encrypted_columns(&scope.catalog().await.expect("catalog"))
        }
        assert_eq!(
            shown(&scope).await,
            [
                "main.patients.full_name: randomized",
                "main.patients.ssn: deterministic"
            ]
        );
        let hiding = tempfile::tempdir().expect("tempdir");
        let hidden = crate::tools::testing::sqlite_scope_with(
            hiding.path(),
            &path,
            extras,
            "deny_columns = [\"patients.ssn\"]",
        )
        .await;
        assert_eq!(
            shown(&hidden).await,
            ["main.patients.full_name: randomized"]
        );
        assert!(shown(&plain).await.is_empty());
    }

    /// A system-versioned table is flagged in `list_tables` and its description says how to
    /// read its history, unless the scope hides the history (then neither says a word of it).
    #[tokio::test]
    async fn a_system_versioned_table_says_so_where_its_history_may_be_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("staff.sqlite");
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch(
                "CREATE TABLE staff (id INTEGER PRIMARY KEY, name TEXT, salary INTEGER);
                 CREATE TABLE staff_history (id INTEGER, name TEXT, salary INTEGER);
                 CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
            )
            .expect("fixture");
        for (keys, shown) in [
            ("", true),
            ("deny_columns = [\"staff*.salary\"]", true),
            ("deny_tables = [\"staff_history\"]", false),
            ("deny_columns = [\"staff_history.salary\"]", false),
        ] {
            let state = tempfile::tempdir().expect("tempdir");
            let extras = crate::tools::testing::Extras {
                histories: &[("staff", "staff_history")],
                ..Default::default()
            };
            let scope =
                crate::tools::testing::sqlite_scope_with(state.path(), &path, extras, keys).await;
            let listed: Value =
                serde_json::from_str(&list_tables(&scope).await.expect("list").json.into_string())
                    .expect("json");
            let flag = |name: &str| {
                listed["tables"]
                    .as_array()
                    .and_then(|ts| ts.iter().find(|t| t["name"] == name))
                    .map(|t| t.get("system_versioned").cloned())
            };
            assert_eq!(flag("staff"), Some(shown.then(|| json!(true))), "{keys}");
            assert_eq!(flag("notes"), Some(None), "{keys}");
            let described = describe_table(&scope, "staff")
                .await
                .expect("describe")
                .json
                .into_string();
            assert_eq!(
                described.contains("earlier versions of its rows are kept in main.staff_history"),
                shown,
                "{keys}: {described}"
            );
            let fetched = crate::tools::fetch::fetch(&scope, "main.staff", None)
                .await
                .expect("fetch")
                .json
                .into_string();
            assert_eq!(
                fetched.contains("History: system-versioned"),
                shown,
                "{keys}"
            );
        }
    }

    /// A column the database classifies as sensitive shows its label in `describe_table` and
    /// in `fetch`'s text (so the model knows what it holds); the scope tells the operator, once,
    /// which labelled columns it shows; a hidden column leaves with its label.
    #[tokio::test]
    async fn sensitivity_labels_and_masks_show_where_the_column_does_and_are_logged_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("people.sqlite");
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute_batch(
                "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, phone TEXT, city TEXT);
                 INSERT INTO customers VALUES (1, 'a@example.com', '555', 'Oslo');",
            )
            .expect("fixture");
        let (logs, _logging) = crate::tools::testing::capture_logs();
        let extras = crate::tools::testing::Extras {
            labels: &[
                (
                    "customers",
                    "email",
                    "Confidential - GDPR (Contact Info, rank High)",
                ),
                ("customers", "phone", "Confidential"),
            ],
            masks: &[("customers", "city", "partial(1,\"XXX\",0)")],
            ..Default::default()
        };
        let scope = crate::tools::testing::sqlite_scope_with(
            dir.path(),
            &path,
            extras,
            "deny_columns = [\"customers.phone\"]",
        )
        .await;
        let described = describe_table(&scope, "customers")
            .await
            .expect("describe")
            .json
            .into_string();
        let described: Value = serde_json::from_str(&described).expect("json");
        let column = |name: &str| {
            described["columns"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                .cloned()
        };
        assert_eq!(
            column("email").map(|c| c["sensitivity"].clone()),
            Some(json!("Confidential - GDPR (Contact Info, rank High)"))
        );
        assert_eq!(
            column("city").map(|c| c.get("sensitivity").is_none()),
            Some(true)
        );
        assert_eq!(column("phone"), None, "hidden");
        let fetched = crate::tools::fetch::fetch(&scope, "main.customers", None)
            .await
            .expect("fetch")
            .json
            .into_string();
        assert!(
            fetched.contains(
                "- email TEXT NULL [sensitivity: Confidential - GDPR (Contact Info, rank High)]"
            ),
            "{fetched}"
        );
        assert!(!fetched.contains("phone"), "{fetched}");
        // Told once, naming what the scope shows and not what it hides.
        describe_table(&scope, "customers").await.expect("again");
        let logged = logs.text();
        assert_eq!(
            logged.matches("classifies as sensitive").count(),
            1,
            "{logged}"
        );
        assert!(
            logged.contains("main.customers.email: Confidential - GDPR"),
            "{logged}"
        );
        assert!(!logged.contains("phone"), "{logged}");
        // A column the database masks says so, with its masking function, and the scope is
        // told once that a WHERE can still test it.
        assert_eq!(
            column("city").map(|c| c["masked"].clone()),
            Some(json!("partial(1,\"XXX\",0)"))
        );
        assert_eq!(
            column("email").map(|c| c.get("masked").is_none()),
            Some(true)
        );
        assert!(
            fetched.contains(
                r#"- city TEXT NULL [masked by the database: partial(1,\"XXX\",0); its values are not the data]"#
            ),
            "{fetched}"
        );
        assert_eq!(
            logged.matches("columns the database masks").count(),
            1,
            "{logged}"
        );
        assert!(
            logged.contains("main.customers.city: partial(1,\"XXX\",0)"),
            "{logged}"
        );
    }
}
