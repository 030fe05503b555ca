//! `search`: one entry point that understands what ChatGPT Deep Research actually sends
//! (natural-language questions) as well as the seed guide's commands and plain SQL.
//!
//! Natural language is split into keywords and matched against the visible text columns of
//! every visible table with bound parameters (the backend builds the SQL: `LIKE` patterns, or
//! a full-text index where a SQL Server table has one), concurrently, each search bounded in
//! rows and by the query timeout; hits are ranked by how many keyword/column pairs matched.

use serde_json::{Value, json};

use super::cache::CachedRow;
use super::ids::RecordId;
use super::sql::{describe, describe_text, run_sql};
use super::{
    ToolError, ToolOutput, resolve_table, row_id, row_object, row_title, searchable_columns,
    truncate, visible_columns, visible_tables,
};
use crate::db::guard::GuardError;
use crate::db::{DbError, Page, SearchRequest, TableInfo};
use crate::state::Scope;

/// Most results one search returns.
const MAX_RESULTS: usize = 20;
/// Rows asked of each table in a keyword search.
const PER_TABLE: usize = 10;
/// Most keywords used from one query.
const MAX_KEYWORDS: usize = 8;

/// One search result, in the shape ChatGPT expects (`text` is the snippet).
struct Hit {
    id: String,
    title: String,
    text: String,
    score: i64,
}

/// `owner` is the signed-in user asking: rows that get cached `sql:` ids are theirs alone
/// ([`super::cache::ScopeCache::get_row`]).
pub async fn search(
    scope: &Scope,
    query: &str,
    owner: Option<&str>,
) -> Result<ToolOutput, ToolError> {
    let q = query.trim();
    if q.is_empty() {
        return Err(ToolError::InvalidArguments(
            "`query` is empty; try words to look for, `list tables`, or a SELECT query".into(),
        ));
    }
    let lower = q.to_lowercase();
    // Why the results may be fewer than they seem (tables a keyword search had to skip).
    let mut notes = Vec::new();
    let hits = if matches!(lower.as_str(), "list tables" | "show tables" | "tables") {
        list(scope).await?
    } else if let Some(rest) = strip_command(q, "describe") {
        describe_hit(scope, rest).await?
    } else if let Some(rest) = strip_command(q, "sample") {
        sample(scope, rest, owner).await?
    } else if let Some(hits) = maybe_sql(scope, q, owner, &mut notes).await? {
        hits
    } else {
        keywords_search(scope, q, &mut notes).await?
    };
    let n = hits.len();
    let results: Vec<Value> = hits
        .into_iter()
        .map(|h| {
            json!({
                "url": record_url(scope, &h.id),
                "id": h.id,
                "title": h.title,
                "text": h.text,
            })
        })
        .collect();
    let mut out = json!({ "results": results });
    if !notes.is_empty() {
        out["notes"] = json!(notes);
    }
    ToolOutput::new(&out, n)
}

/// `{public base}{scope}/records/{id}`: where a person (or ChatGPT's citation) can open it.
pub(crate) fn record_url(scope: &Scope, id: &str) -> String {
    format!("{}/records/{}", scope.public_base, id)
}

fn strip_command<'a>(q: &'a str, cmd: &str) -> Option<&'a str> {
    let (head, rest) = q.split_once(char::is_whitespace)?;
    if head.eq_ignore_ascii_case(cmd) && !rest.trim().is_empty() {
        Some(rest.trim())
    } else {
        None
    }
}

async fn list(scope: &Scope) -> Result<Vec<Hit>, ToolError> {
    let catalog = scope.catalog().await?;
    Ok(visible_tables(scope, &catalog)
        .into_iter()
        .map(|t| table_hit(scope, t, 0))
        .collect())
}

fn table_hit(scope: &Scope, t: &TableInfo, score: i64) -> Hit {
    let cols = visible_columns(scope, t);
    Hit {
        id: t.qualified(),
        title: format!("{} {}", capitalise(t.kind), t.qualified()),
        text: truncate(
            &format!(
                "{}{} rows; columns: {}",
                t.description
                    .as_deref()
                    .map(|d| format!("{d} — "))
                    .unwrap_or_default(),
                t.row_estimate
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into()),
                cols.join(", ")
            ),
            300,
        ),
        score,
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

async fn describe_hit(scope: &Scope, name: &str) -> Result<Vec<Hit>, ToolError> {
    let catalog = scope
        .catalog_for(|c| c.find_or_base(name).is_some())
        .await?;
    let table = resolve_table(scope, &catalog, name)?;
    let desc = describe(scope, &catalog, table);
    Ok(vec![Hit {
        id: table.qualified(),
        title: format!("{} {}", capitalise(table.kind), table.qualified()),
        text: truncate(&describe_text(&desc), 1000),
        score: 0,
    }])
}

/// `sample <table> [limit N]`
async fn sample(scope: &Scope, rest: &str, owner: Option<&str>) -> Result<Vec<Hit>, ToolError> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (name, limit) = match words.as_slice() {
        [name] => (*name, 10),
        [name, kw, n] if kw.eq_ignore_ascii_case("limit") => (
            *name,
            n.parse::<usize>().map_err(|_| {
                ToolError::InvalidArguments(format!("`limit {n}`: expected a positive number"))
            })?,
        ),
        _ => {
            return Err(ToolError::InvalidArguments(
                "expected `sample <table>` or `sample <table> limit N`".into(),
            ));
        }
    };
    let catalog = scope
        .catalog_for(|c| c.find_or_base(name).is_some())
        .await?;
    let table = resolve_table(scope, &catalog, name)?;
    let columns = visible_columns(scope, table);
    let page = Page::bytes(
        0,
        limit.clamp(1, scope.config.max_rows.min(MAX_RESULTS * 5)),
        scope.config.max_result_bytes,
    );
    let rs = scope.db.sample(table, &columns, page).await?;
    Ok(rows_to_hits(scope, Some(table), &rs, "sample", owner))
}

/// Turns rows into hits: row ids when the table and key are known, cached ids otherwise.
fn rows_to_hits(
    scope: &Scope,
    table: Option<&TableInfo>,
    rs: &crate::db::RowSet,
    sql: &str,
    owner: Option<&str>,
) -> Vec<Hit> {
    let mut uncached: Vec<(usize, CachedRow)> = Vec::new();
    let mut hits = Vec::with_capacity(rs.rows.len());
    for (i, row) in rs.rows.iter().enumerate() {
        let values = row_object(&rs.columns, row);
        let text = truncate(
            &values
                .iter()
                .map(|(k, v)| format!("{k}: {}", plain(v)))
                .collect::<Vec<_>>()
                .join("; "),
            300,
        );
        let id =
            table.and_then(|t| row_id(t, &rs.columns, row, |c| rs.is_cut(i, c)).map(|id| (t, id)));
        let (id, title) = match id {
            Some((t, id)) => (id, row_title(t, &rs.columns, row)),
            None => {
                let title = values
                    .values()
                    .take(2)
                    .map(plain)
                    .collect::<Vec<_>>()
                    .join(" · ");
                uncached.push((
                    hits.len(),
                    CachedRow {
                        title: title.clone(),
                        values,
                        sql: sql.into(),
                        cut_columns: rs.cut_in_row(i),
                    },
                ));
                (
                    String::new(),
                    if title.is_empty() {
                        format!("Row {}", i + 1)
                    } else {
                        title
                    },
                )
            }
        };
        hits.push(Hit {
            id,
            title,
            text,
            score: 0,
        });
    }
    if !uncached.is_empty() {
        let (positions, rows): (Vec<usize>, Vec<CachedRow>) = uncached.into_iter().unzip();
        let token = scope.cache.put_rows(rows, owner);
        for (n, pos) in positions.into_iter().enumerate() {
            hits[pos].id = RecordId::cached(&token, n);
        }
    }
    hits
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".into(),
        other => other.to_string(),
    }
}

/// Runs `q` as SQL when it is SQL; `Ok(None)` when it is not (so it is searched as words).
async fn maybe_sql(
    scope: &Scope,
    q: &str,
    owner: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Option<Vec<Hit>>, ToolError> {
    const STATEMENT_WORDS: [&str; 22] = [
        "select", "with", "insert", "update", "delete", "drop", "create", "alter", "exec",
        "execute", "merge", "truncate", "grant", "revoke", "declare", "waitfor", "attach",
        "pragma", "begin", "use", "replace", "vacuum",
    ];
    let first = q
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !STATEMENT_WORDS.contains(&first.as_str()) {
        return Ok(None);
    }
    let page = Page::bytes(
        0,
        scope.config.max_rows.min(MAX_RESULTS * 5),
        scope.config.max_result_bytes,
    );
    match run_sql(scope, q, page).await {
        Ok(ran) => {
            notes.extend(ran.notes(0).iter().flatten().map(|n| n.to_string()));
            let super::sql::Ran { rs, checked, .. } = ran;
            let catalog = scope.catalog().await?;
            // Rows get real ids when the query reads one table directly and selects its
            // whole key unchanged; a computed or renamed column that takes a key column's
            // name would make an id (and a citation) of another row.
            let table = match (checked.tables.as_slice(), &checked.plain_columns) {
                ([t], Some(plain)) => catalog
                    .table(t.schema.as_deref(), &t.name)
                    .filter(|t| t.primary_key.iter().all(|k| plain.is_plain(k))),
                _ => None,
            };
            Ok(Some(rows_to_hits(scope, table, &rs, q, owner)))
        }
        // Words like "update on shipping delays" are not SQL: search them as words.
        Err(ToolError::Refused(GuardError::Parse(_))) if first != "select" && first != "with" => {
            Ok(None)
        }
        // "Select customers in Germany with refunds" is a question too; a SELECT that does
        // not parse is searched as words, and the note says why, in case it was meant as SQL.
        Err(ToolError::Refused(GuardError::Parse(e))) => {
            notes.push(format!(
                "the query was searched as words: as SQL it does not parse ({e})"
            ));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Longest keyword searched for, in characters.
const MAX_KEYWORD_CHARS: usize = 64;

/// Lower-case keywords of a natural-language query, stopwords removed.
pub(crate) fn keywords(q: &str) -> Vec<String> {
    const STOP: [&str; 64] = [
        "a", "an", "the", "and", "or", "of", "in", "on", "for", "to", "with", "by", "at", "from",
        "is", "are", "was", "were", "be", "been", "what", "which", "who", "whom", "where", "when",
        "how", "why", "all", "any", "some", "me", "my", "our", "we", "you", "your", "show", "find",
        "list", "get", "give", "tell", "about", "that", "this", "these", "those", "it", "its",
        "do", "does", "did", "there", "their", "them", "than", "then", "into", "as", "please",
        "can", "could", "have",
    ];
    let mut out: Vec<String> = Vec::new();
    for w in
        q.split(|c: char| !(c.is_alphanumeric() || c == '@' || c == '.' || c == '-' || c == '_'))
    {
        let w = w
            .trim_matches(|c: char| c == '.' || c == '-' || c == '_')
            .to_lowercase();
        if w.chars().count() < 2 || STOP.contains(&w.as_str()) {
            continue;
        }
        // Keywords match as substrings, so a light stem finds "refund" for "refunds" and
        // "ship" for "shipping". A longer word than any real one matches by its beginning:
        // a pattern costs its length times each text's, and patterns are bounded (SQLite:
        // 1,000 bytes).
        let w: String = stem(&w).chars().take(MAX_KEYWORD_CHARS).collect();
        if out.contains(&w) {
            continue;
        }
        out.push(w);
        if out.len() == MAX_KEYWORDS {
            break;
        }
    }
    out
}

/// Strips a common English inflection from a plain word (not from emails, codes or numbers).
fn stem(w: &str) -> String {
    if !w.chars().all(|c| c.is_alphabetic()) {
        return w.to_string();
    }
    let strip = |suffix: &str, min_left: usize| -> Option<String> {
        let rest = w.strip_suffix(suffix)?;
        (rest.chars().count() >= min_left).then(|| rest.to_string())
    };
    if let Some(r) = strip("ies", 3) {
        return format!("{r}y");
    }
    for (suffix, min_left) in [("ing", 4), ("ed", 4), ("es", 4)] {
        if let Some(mut r) = strip(suffix, min_left) {
            // "shipping" → "shipp" → "ship"; but "billing" keeps "bill".
            let b = r.as_bytes();
            let n = b.len();
            if suffix != "es" && n >= 2 && b[n - 1] == b[n - 2] && !b"aeioulsz".contains(&b[n - 1])
            {
                r.pop();
            }
            return r;
        }
    }
    if w.chars().count() > 3 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") {
        return w[..w.len() - 1].to_string();
    }
    w.to_string()
}

async fn keywords_search(
    scope: &Scope,
    q: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<Hit>, ToolError> {
    let words = keywords(q);
    if words.is_empty() {
        return Err(ToolError::InvalidArguments(format!(
            "`{}` has no words to search for; use more specific words, `list tables`, or a SELECT query",
            truncate(q, 80)
        )));
    }
    let catalog = scope.catalog().await?;
    let tables = visible_tables(scope, &catalog);
    let mut hits: Vec<Hit> = Vec::new();
    // A keyword naming a table (singular or plural) puts the table itself among the results;
    // one in its description or a visible column's, a little lower.
    let same = |a: &str, b: &str| a == b || format!("{a}s") == b || format!("{b}s") == a;
    for t in &tables {
        let name = t.name.to_lowercase();
        if words.iter().any(|w| same(&name, w)) {
            hits.push(table_hit(scope, t, 100));
            continue;
        }
        let described = t
            .description
            .iter()
            .chain(t.columns.iter().filter_map(|c| c.description.as_ref()))
            .flat_map(|d| d.split(|c: char| !c.is_alphanumeric()))
            .filter(|d| !d.is_empty())
            .any(|d| {
                // Stemmed as the keywords are.
                let d = stem(&d.to_lowercase());
                words.iter().any(|w| same(&d, w))
            });
        if described {
            hits.push(table_hit(scope, t, 50));
        }
    }
    let plans: Vec<(&TableInfo, Vec<String>, Vec<String>)> = tables
        .iter()
        .map(|t| (*t, visible_columns(scope, t), searchable_columns(scope, t)))
        .filter(|(_, _, text)| !text.is_empty())
        .collect();
    // Made up front (the futures do nothing until polled): a lazy iterator's closure would
    // make the handler's future not `Send` for every lifetime.
    let searches: Vec<_> = plans
        .iter()
        .map(|(t, cols, text)| {
            scope.db.search(SearchRequest {
                table: t,
                columns: cols,
                text_columns: text,
                keywords: &words,
                limit: PER_TABLE,
            })
        })
        .collect();
    // At most half the pool at once (the tables are many, the connections few): the others'
    // calls still find a connection, and no table's query waits so long for one that it fails.
    let at_once = super::at_once(scope);
    // Tagged with their table's place, so a table answered out of turn is kept when the time
    // runs out; made into a `Vec` first for the same reason as `searches`.
    let tagged: Vec<_> = searches
        .into_iter()
        .enumerate()
        .map(|(i, search)| async move { (i, search.await) })
        .collect();
    let mut running = futures::StreamExt::buffer_unordered(futures::stream::iter(tagged), at_once);
    let mut results: Vec<Option<Result<crate::db::RowSet, DbError>>> =
        std::iter::repeat_with(|| None).take(plans.len()).collect();
    // The whole search has one budget (`Scope::search_budget`): the tables still running or
    // waiting when it runs out are left out with a note, and the others are answered, rather
    // than the request timing out with nothing.
    let deadline = tokio::time::Instant::now() + scope.search_budget;
    while let Ok(Some((i, result))) =
        tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut running)).await
    {
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(result);
        }
    }
    // Cancels what is still running (each such connection is discarded, see `db::mssql`).
    drop(running);
    let budget_secs = scope.search_budget.as_secs().max(1);
    let mut failed = None;
    let mut answered = 0usize;
    for ((table, _, text_cols), result) in plans.iter().zip(results) {
        // One table whose query fails (a value too large to read, a column the login may not
        // read) or runs out of time (a large table without a full-text index) does not sink
        // the others; a database that is down does.
        let rs = match result {
            Some(Ok(rs)) => rs,
            None => {
                notes.push(format!(
                    "{} was not searched: the search ran out of its {budget_secs} s before this \
                     table's scan finished (full-text indexes on the slow tables' text columns, \
                     or fewer words, make this fast)",
                    table.qualified()
                ));
                failed.get_or_insert(DbError::Timeout(budget_secs));
                continue;
            }
            Some(Err(e @ (DbError::Sql(_) | DbError::Timeout(_)))) => {
                tracing::warn!(table = %table.qualified(), error = %e, "search: a table's query failed; searching the others");
                notes.push(match e {
                    DbError::Timeout(secs) => format!(
                        "{} was not searched: its keyword scan took longer than {secs} s (a \
                         full-text index on its text columns makes this fast)",
                        table.qualified()
                    ),
                    _ => format!("{} was not searched: {e}", table.qualified()),
                });
                failed.get_or_insert(e);
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
        };
        answered += 1;
        let score_col = rs.columns.len().saturating_sub(1);
        for (r, row) in rs.rows.iter().enumerate() {
            let score = match row.get(score_col) {
                Some(crate::db::Value::Int(s)) => *s,
                _ => 0,
            };
            let cols = &rs.columns[..score_col];
            let values = &row[..score_col];
            let Some(id) = row_id(table, cols, values, |c| rs.is_cut(r, c)) else {
                continue;
            };
            hits.push(Hit {
                id,
                title: row_title(table, cols, values),
                text: snippet(cols, values, text_cols, &words),
                score,
            });
        }
    }
    // Every table failed: say why rather than "nothing found".
    if let Some(e) = failed
        && answered == 0
    {
        return Err(e.into());
    }
    // Stable sort keeps table order among equal scores.
    hits.sort_by_key(|h| std::cmp::Reverse(h.score));
    hits.truncate(MAX_RESULTS);
    Ok(hits)
}

/// About 200 characters around the first keyword in the text column with the most keyword
/// hits (longer text wins ties, so a description beats a subject line).
fn snippet(
    cols: &[crate::db::ResultColumn],
    values: &[crate::db::Value],
    text_cols: &[String],
    words: &[String],
) -> String {
    let mut best: Option<(usize, usize, &str, &str, usize)> = None;
    for (c, v) in cols.iter().zip(values) {
        if !text_cols.contains(&c.name) {
            continue;
        }
        let crate::db::Value::Text(s) = v else {
            continue;
        };
        let lower = s.to_lowercase();
        let hits = words.iter().filter(|w| lower.contains(w.as_str())).count();
        if hits == 0 {
            continue;
        }
        let Some(pos) = words.iter().filter_map(|w| lower.find(w.as_str())).min() else {
            continue;
        };
        let better = match best {
            None => true,
            Some((h, len, ..)) => hits > h || (hits == h && s.len() > len),
        };
        if better {
            // `pos` indexes the lower-cased text; count chars so slicing stays on boundaries.
            best = Some((
                hits,
                s.len(),
                c.name.as_str(),
                s.as_str(),
                lower[..pos].chars().count(),
            ));
        }
    }
    if let Some((_, _, name, s, char_pos)) = best {
        let start = char_pos.saturating_sub(60);
        let piece: String = s.chars().skip(start).take(200).collect();
        let prefix = if start > 0 { "…" } else { "" };
        let suffix = if s.chars().count() > start + 200 {
            "…"
        } else {
            ""
        };
        return format!("{name}: {prefix}{piece}{suffix}");
    }
    cols.iter()
        .zip(values)
        .take(4)
        .map(|(c, v)| format!("{}: {}", c.name, v.display()))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::slow_sqlite_scope;

    #[test]
    fn keywords_drop_stopwords_and_duplicates() {
        assert_eq!(
            keywords("What are the refund requests for damaged items? Refund!"),
            vec!["refund", "request", "damag", "item"]
        );
    }

    #[test]
    fn keywords_are_lightly_stemmed() {
        assert_eq!(
            keywords("who handles refunds for shipping delays and batteries"),
            vec!["handl", "refund", "ship", "delay", "battery"]
        );
        assert_eq!(
            keywords("status bus glass billing"),
            vec!["status", "bus", "glass", "bill"]
        );
    }

    #[test]
    fn keywords_keep_emails_and_unicode() {
        assert_eq!(
            keywords("anna.berg@example.com Zürich"),
            vec!["anna.berg@example.com", "zürich"]
        );
    }

    #[tokio::test]
    async fn a_search_out_of_time_answers_what_it_found_and_names_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("two.sqlite");
        {
            let conn = rusqlite::Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE quick_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
                 CREATE TABLE slow_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
                 INSERT INTO quick_notes VALUES (1, 'the apricot harvest'), (2, 'pears');
                 INSERT INTO slow_notes VALUES (1, 'apricot jam');",
            )
            .expect("fixture");
        }
        let budget = std::time::Duration::from_millis(300);
        let delay = std::time::Duration::from_secs(20);
        let scope = slow_sqlite_scope(dir.path(), &path, &["slow_notes"], delay, budget).await;

        let started = std::time::Instant::now();
        let out = search(&scope, "apricot", None).await.expect("search");
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
        let text = out.json.into_string();
        assert!(text.contains("the apricot harvest"), "{text}");
        assert!(!text.contains("apricot jam"), "{text}");
        assert!(
            text.contains("main.slow_notes was not searched: the search ran out of its 1 s"),
            "{text}"
        );

        // Every table out of time: a timeout error, not an empty success.
        let both_slow = slow_sqlite_scope(
            dir.path(),
            &path,
            &["quick_notes", "slow_notes"],
            delay,
            budget,
        )
        .await;
        let err = search(&both_slow, "apricot", None)
            .await
            .expect_err("all out of time");
        assert!(err.to_string().contains("1 s"), "{err}");
    }

    #[test]
    fn commands_need_an_argument() {
        assert_eq!(strip_command("describe orders", "describe"), Some("orders"));
        assert_eq!(strip_command("describe", "describe"), None);
        assert_eq!(strip_command("describes x", "describe"), None);
    }
}
