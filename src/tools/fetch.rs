//! `fetch`: the full record behind an id from `search`.
//!
//! A table id returns its description; a row id is looked up by its real primary key and
//! returns every visible column plus the ids of its foreign-key neighbours (the parent rows it
//! points at and a few child rows pointing at it); an ad-hoc result id comes from the scope's
//! result cache.

use serde_json::{Map, Value, json};

use super::ids::RecordId;
use super::search::record_url;
use super::sql::{describe, describe_text};
use super::{
    ToolError, ToolOutput, cut_note, row_id, row_object, row_title, truncate, visible_columns,
    visible_tables,
};
use crate::db::{Catalog, DbError, Page, TableInfo};
use crate::state::Scope;

/// Child rows listed per referencing foreign key.
const CHILDREN_PER_FK: usize = 5;

/// `owner`: the signed-in user asking, who alone reads the cached `sql:` rows of their own
/// queries.
pub async fn fetch(scope: &Scope, id: &str, owner: Option<&str>) -> Result<ToolOutput, ToolError> {
    output(&document(scope, id, owner).await?)
}

/// A [`document`] as `fetch`'s tool output (one record).
pub fn output(doc: &Map<String, Value>) -> Result<ToolOutput, ToolError> {
    ToolOutput::sized(doc, 1, 2048)
}

/// The record behind `id`, as `fetch` returns it: `id`, `title`, `text`, `url`, `metadata`.
pub async fn document(
    scope: &Scope,
    id: &str,
    owner: Option<&str>,
) -> Result<Map<String, Value>, ToolError> {
    let parsed = RecordId::parse(id).ok_or_else(|| {
        ToolError::InvalidArguments(format!(
            "`{}` is not an id from search; ids look like `main.customers` (a table) or `main.customers/42` (a row)",
            truncate(id, 80)
        ))
    })?;
    let doc = match parsed {
        RecordId::Table { schema, table } => fetch_table(scope, &schema, &table).await?,
        RecordId::Row { schema, table, key } => fetch_row(scope, &schema, &table, &key).await?,
        RecordId::Cached { token, index } => {
            let row = scope.cache.get_row(&token, index, owner).ok_or_else(|| {
                ToolError::NotFound(format!(
                    "`{id}` has expired from the result cache (results are kept {} s); run the search again",
                    scope.config.cache_ttl_secs
                ))
            })?;
            let mut text = row
                .values
                .iter()
                .map(|(k, v)| format!("{k}: {}", render(v)))
                .collect::<Vec<_>>()
                .join("\n");
            if !row.cut_columns.is_empty() {
                text.push_str(&format!("\n({})", cut_note(&row.cut_columns)));
            }
            json!({
                "title": row.title,
                "text": text,
                "metadata": {
                    "kind": "query_row",
                    "sql": &*row.sql,
                    "values": row.values,
                    "cut_columns": row.cut_columns,
                },
            })
        }
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id.trim().to_string()));
    out.insert("title".into(), doc["title"].clone());
    out.insert("text".into(), doc["text"].clone());
    out.insert("url".into(), Value::String(record_url(scope, id.trim())));
    out.insert("metadata".into(), doc["metadata"].clone());
    Ok(out)
}

/// The visible table an id (or a foreign key) names, found as [`Catalog::table`] finds it:
/// the exact spelling first, so that `Users` and `users` each reach their own table.
fn find_visible<'c>(
    scope: &Scope,
    catalog: &'c Catalog,
    schema: &str,
    table: &str,
) -> Option<&'c TableInfo> {
    catalog
        .table(Some(schema), table)
        .filter(|t| scope.rules.table_visible(Some(&t.schema), &t.name))
}

async fn fetch_table(scope: &Scope, schema: &str, table: &str) -> Result<Value, ToolError> {
    let catalog = scope.catalog().await?;
    let t = find_visible(scope, &catalog, schema, table).ok_or_else(|| {
        ToolError::NotFound(format!("no table `{schema}.{table}` is visible here"))
    })?;
    let desc = describe(scope, &catalog, t);
    Ok(json!({
        "title": format!("Table {}", t.qualified()),
        "text": describe_text(&desc),
        "metadata": {"kind": t.kind, "schema": desc},
    }))
}

async fn fetch_row(
    scope: &Scope,
    schema: &str,
    table: &str,
    key: &[String],
) -> Result<Value, ToolError> {
    let catalog = scope.catalog().await?;
    let not_found = || {
        ToolError::NotFound(format!(
            "no row `{schema}.{table}/{}` exists here",
            key.join(",")
        ))
    };
    let t = find_visible(scope, &catalog, schema, table).ok_or_else(not_found)?;
    let key = super::ids::unpad_key(t.primary_key.len(), key);
    if t.primary_key.len() != key.len() {
        return Err(ToolError::InvalidArguments(format!(
            "{} has a {}-column key ({}), but the id gives {} value(s)",
            t.qualified(),
            t.primary_key.len(),
            t.primary_key.join(", "),
            key.len()
        )));
    }
    let columns = visible_columns(scope, t);
    let page = |limit| Page::bytes(0, limit, scope.config.max_result_bytes);
    let rs = scope
        .db
        .lookup(t, &columns, &t.primary_key, key, page(1))
        .await?;
    let row = rs.rows.first().ok_or_else(not_found)?;
    let values = row_object(&rs.columns, row);
    // A column's value as a key of another row's id or lookup (bytes as hex, as row ids
    // write them); `None` when it is NULL or not among the columns read.
    let key_of = |name: &str| -> Option<String> {
        let i = rs.columns.iter().position(|c| c.name == name)?;
        super::key_text(row.get(i)?)
    };
    let title = row_title(t, &rs.columns, row);
    let mut text = format!("{title}\n");
    for (k, v) in &values {
        text.push_str(&format!("{k}: {}\n", render(v)));
    }
    let cut = rs.cut_columns();
    if !cut.is_empty() {
        text.push_str(&format!("({})\n", cut_note(&cut)));
    }

    // Parents: rows this row points at through its foreign keys.
    let mut related = Vec::new();
    for fk in &t.foreign_keys {
        let Some(parent) = find_visible(scope, &catalog, &fk.ref_schema, &fk.ref_table) else {
            continue;
        };
        let vals: Option<Vec<String>> = fk.columns.iter().map(|c| key_of(c)).collect();
        // Only when the FK points at the parent's primary key is the id a row id.
        if let Some(vals) = vals
            && fk.ref_columns.len() == parent.primary_key.len()
            && fk
                .ref_columns
                .iter()
                .zip(&parent.primary_key)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
        {
            related.push(json!({
                "relation": format!("{} → {}", fk.columns.join(","), parent.qualified()),
                "id": RecordId::row(&parent.schema, &parent.name, vals.iter().map(String::as_str)),
            }));
        }
    }
    // Children: a few rows of tables that point at this one.
    for child in visible_tables(scope, &catalog) {
        for fk in child
            .foreign_keys
            .iter()
            .filter(|fk| catalog.names(&fk.ref_schema, &fk.ref_table, t))
        {
            let vals: Option<Vec<String>> = fk.ref_columns.iter().map(|c| key_of(c)).collect();
            let Some(vals) = vals else { continue };
            if fk.columns.iter().any(|c| {
                scope
                    .rules
                    .column_denied(Some(&child.schema), &child.name, c)
            }) {
                continue;
            }
            let mut cols = child.primary_key.clone();
            if let Some(tc) = child.title_column()
                && !cols.contains(&tc.name)
            {
                cols.push(tc.name.clone());
            }
            cols.retain(|c| {
                !scope
                    .rules
                    .column_denied(Some(&child.schema), &child.name, c)
            });
            if cols.is_empty() {
                continue;
            }
            let relation = format!("{}.{} → this", child.qualified(), fk.columns.join(","));
            let kids = match scope
                .db
                .lookup(child, &cols, &fk.columns, &vals, page(CHILDREN_PER_FK))
                .await
            {
                Ok(kids) => kids,
                // The row itself was read: a child table the login may not read, or whose
                // lookup ran out of time, is left out with a note instead of failing the
                // fetch; a database that is down still fails it.
                Err(e @ (DbError::Sql(_) | DbError::Timeout(_))) => {
                    tracing::warn!(table = %child.qualified(), error = %e, "fetch: a child lookup failed; leaving it out");
                    related.push(
                        json!({"relation": relation, "ids": [], "note": format!("not read: {e}")}),
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let ids: Vec<Value> = kids
                .rows
                .iter()
                .filter_map(|r| row_id(child, &kids.columns, r))
                .map(Value::String)
                .collect();
            if !ids.is_empty() {
                related.push(json!({
                    "relation": relation,
                    "ids": ids,
                    "more": kids.more,
                }));
            }
        }
    }
    if !related.is_empty() {
        text.push_str("Related:\n");
        for r in &related {
            let ids = match (&r["id"], &r["ids"], &r["note"]) {
                (_, _, Value::String(note)) => format!("({note})"),
                (Value::String(id), _, _) => id.clone(),
                (_, Value::Array(a), _) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            };
            text.push_str(&format!(
                "- {}: {ids}\n",
                r["relation"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(json!({
        "title": title,
        "text": text,
        "metadata": {
            "kind": "row",
            "table": t.qualified(),
            "primary_key": t.primary_key,
            "key_is_heuristic": t.key_is_heuristic,
            "values": values,
            "cut_columns": cut,
            "related": related,
        },
    }))
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}
