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
    ToolError, ToolOutput, at_once, cut_note, row_id, row_object, row_title, truncate,
    visible_columns, visible_tables,
};
use crate::db::{Catalog, DbError, ForeignKey, Page, RowSet, TableInfo};
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
    let catalog = scope
        .catalog_for(|c| c.table(Some(schema), table).is_some())
        .await?;
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
    let deadline = tokio::time::Instant::now() + scope.search_budget;
    let catalog = scope
        .catalog_for(|c| c.table(Some(schema), table).is_some())
        .await?;
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
    // write them); `None` when it is NULL, not among the columns read, or cut (a cut value
    // would name another row, or none).
    let key_of = |name: &str| -> Option<String> {
        let i = rs.columns.iter().position(|c| c.name == name)?;
        if rs.is_cut(0, i) {
            return None;
        }
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
    let encrypted: Vec<&str> = t
        .columns
        .iter()
        .filter(|c| c.encrypted.is_some() && columns.contains(&c.name))
        .map(|c| c.name.as_str())
        .collect();
    if !encrypted.is_empty() {
        text.push_str(&format!(
            "({} Always Encrypted: the values above are ciphertext)\n",
            match encrypted.as_slice() {
                [one] => format!("{one} is"),
                many => format!("{} are", many.join(", ")),
            }
        ));
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
    // Children: a few rows of tables that point at this one. Their lookups share one budget
    // (`Scope::search_budget`, counted from the start of this fetch) and run a few at once,
    // so that slow child tables cannot push the fetch past the request timeout after its row
    // was read: the ones still running when it ends are left out with a note.
    let mut children: Vec<(&TableInfo, &ForeignKey, Vec<String>, Vec<String>)> = Vec::new();
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
            children.push((child, fk, cols, vals));
        }
    }
    // Made into `Vec`s up front, as `search` does: a lazy iterator's closure would make this
    // future not `Send`.
    let lookups: Vec<_> = children
        .iter()
        .enumerate()
        .map(|(i, (child, fk, cols, vals))| {
            let lookup = scope
                .db
                .lookup(child, cols, &fk.columns, vals, page(CHILDREN_PER_FK));
            async move { (i, lookup.await) }
        })
        .collect();
    let mut running =
        futures::StreamExt::buffer_unordered(futures::stream::iter(lookups), at_once(scope));
    let mut results: Vec<Option<Result<RowSet, DbError>>> = std::iter::repeat_with(|| None)
        .take(children.len())
        .collect();
    while let Ok(Some((i, result))) =
        tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut running)).await
    {
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(result);
        }
    }
    // Cancels the lookups still running (each such connection is discarded, see `db::mssql`).
    drop(running);
    let budget_secs = scope.search_budget.as_secs().max(1);
    for ((child, fk, _, _), result) in children.iter().zip(results) {
        let relation = format!("{}.{} → this", child.qualified(), fk.columns.join(","));
        let kids = match result {
            Some(Ok(kids)) => kids,
            None => {
                related.push(json!({
                    "relation": relation,
                    "ids": [],
                    "note": format!(
                        "not read: the fetch ran out of its {budget_secs} s before this lookup finished"
                    ),
                }));
                continue;
            }
            // The row itself was read: a child table the login may not read, or whose
            // lookup ran out of time, is left out with a note instead of failing the
            // fetch; a database that is down still fails it.
            Some(Err(e @ (DbError::Sql(_) | DbError::Timeout(_)))) => {
                tracing::warn!(table = %child.qualified(), error = %e, "fetch: a child lookup failed; leaving it out");
                related.push(
                    json!({"relation": relation, "ids": [], "note": format!("not read: {e}")}),
                );
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let ids: Vec<Value> = kids
            .rows
            .iter()
            .enumerate()
            .filter_map(|(r, row)| row_id(child, &kids.columns, row, |c| kids.is_cut(r, c)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::slow_sqlite_scope;

    /// Two child tables whose lookups are slow (20 s each, injected over a real SQLite
    /// database): the fetch still answers within its budget with the row, the quick child's
    /// ids, and a note naming each child left out, instead of running past the request
    /// timeout one child after another.
    #[tokio::test]
    async fn slow_child_lookups_share_one_budget_and_are_left_out_with_a_note() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kids.sqlite");
        {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT);
                 CREATE TABLE pets (id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners(id), name TEXT);
                 CREATE TABLE cars (id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners(id), make TEXT);
                 CREATE TABLE homes (id INTEGER PRIMARY KEY, owner_id INTEGER REFERENCES owners(id), town TEXT);
                 INSERT INTO owners VALUES (1, 'Ada');
                 INSERT INTO pets VALUES (7, 1, 'Rex');
                 INSERT INTO cars VALUES (8, 1, 'Volvo');
                 INSERT INTO homes VALUES (9, 1, 'Oslo');",
            )
            .expect("fixture");
        }
        let scope = slow_sqlite_scope(
            dir.path(),
            &path,
            &["pets", "cars"],
            std::time::Duration::from_secs(20),
            std::time::Duration::from_millis(500),
        )
        .await;
        let started = std::time::Instant::now();
        let doc = document(&scope, "main.owners/1", None)
            .await
            .expect("the row is read");
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
        let text = doc["text"].as_str().unwrap_or_default();
        assert!(text.contains("Ada"), "{text}");
        assert!(text.contains("main.homes/9"), "{text}");
        for slow in ["main.pets.owner_id → this", "main.cars.owner_id → this"] {
            assert!(
                text.contains(&format!(
                    "- {slow}: (not read: the fetch ran out of its 1 s before this lookup finished)"
                )),
                "{slow}: {text}"
            );
        }
    }
}
