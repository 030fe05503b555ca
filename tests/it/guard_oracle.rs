//! The read-only guard and the column masking, checked against oracles they share no code with,
//! over a few thousand queries from a small random grammar of SQLite SQL.
//!
//! The grammar writes reads of every shape the guard has rules for (`*` and `t.*`, joins of
//! every kind, derived tables, CTEs with and without column lists, set operations, correlated
//! sub-queries under `EXISTS`, `IN` and scalar positions, aggregates, window functions, ordinal
//! `ORDER BY`, `LIMIT`/`OFFSET`, `json_each`, catalogs) over three tables, one of them denied and
//! one with a denied column, and, for the first property, writes, DDL, pragmas, transaction
//! control, `ATTACH` and several statements at once, nested wherever SQLite allows.
//!
//! - **Read-only, by SQLite's own compiler.** Whatever `guard::check` accepts, SQLite compiles
//!   as read-only: `sqlite3_stmt_readonly` is true, and an authorizer on a read-write connection
//!   sees only reads, selects, recursion and function calls (none of the dangerous ones), and no
//!   read of the denied table. That connection has none of the server's other layers (the
//!   read-only open, `query_only`, the server's own authorizer), so this tests the guard alone.
//! - **Noninterference, through the real server.** Two servers serve two database files that
//!   differ only in what the scope hides: the denied column's values and the denied table's
//!   rows. Every query goes to both as an MCP `execute_sql` call over a socket, and the answers
//!   must be the same, row order and error texts included. A query whose answer depends on hidden
//!   data, by a channel the guard and the masking of `*` both miss, shows as a difference.
//!   Then every other tool is called on both the same way (`list_tables`, `describe_table`,
//!   every page of `get_table_sample`, `search` for commands, words and each hidden value of
//!   either database, `fetch` of every table and row id) and must answer the same too.
//!   The same again in T-SQL, through the SQL Server backend and two TDS peers (`pysqlbridge`).
//!   Its first run found a leak: the peer names a joined `*`'s columns `t1.salary`, which the
//!   masking, by name, let through; a name ending in `.salary` is now masked too
//!   ([`mssql_mcp::db::unqualified`]).
//!
//! Each property also requires that enough of the queries were accepted and answered, so a
//! grammar that drifted into writing only refused or failing SQL would fail the test rather
//! than pass it vacuously. The seed is fixed, so a failure names a query that reproduces
//! (`TEST_SEED=n` explores other queries; `ORACLE_TRACE=1 … -- --nocapture` prints each query
//! before it is sent, for a failure that
//! takes the process down, as the stack overflow fixed beside `guard::PARSER_RED_ZONE` did).
//!
//! The noninterference runs use the grammar `for_answers`: it names a hidden column or the
//! denied table outright, and nests a `*`, less often, because the guard refuses such queries by
//! their text alone, the same on both servers. That raised the answered queries from 500 to 770
//! (SQLite) and from 307 to 381 (T-SQL) of 3,000 each (session 25); most of the rest are the
//! peer's own errors (it runs less of T-SQL than SQL Server does) and the guard's refusals.
//! The trace of those refusals showed the guard refusing every nested `*`, every position and
//! every `DISTINCT *` in a query that read any table with hidden columns, even where the `*`
//! covered only tables without any (or there was no `*` for a position to reach). It now
//! judges each by what its `*` expands (`a_nested_star_is_judged_by_what_it_expands`,
//! `positions_and_distinct_are_judged_by_the_star_they_could_reach`): the runs answer 860 and
//! 401 queries, and the read-only run accepts 1,140 statements (916 before), seeds 0–5 all
//! holding. Then the T-SQL grammar learned what SQL Server and the peer refuse (a grouped
//! select naming other columns, an aggregate inside an aggregate, a window function inside an
//! expression, a condition starting with `(`): 590 T-SQL queries answered (seeds 0–7:
//! 580–618). Last, `customers` gained a visible `minutes`, named like the hidden column of
//! `visits`, for the guard's rule that judges `q.column` by the tables `q` names
//! (`a_qualified_column_is_judged_by_the_tables_its_qualifier_names`): 835 and 594 queries
//! answered, 1,092 statements accepted, seeds 0–7 holding. The T-SQL grammar does not name
//! `customers.minutes`: the peer's `INTERSECT` keeps apart rows that differ in columns it does
//! not return, so its answer to a correlated `t1.minutes` depended on hidden data where SQL
//! Server's would not (its first run showed that once). Then a tenth of the T-SQL queries
//! gained a trailing `OPTION (…)` of query hints, which the guard sets aside before parsing
//! and the peer ignores: 626 T-SQL queries answered.
//!
//! Seen to fail, each on its own (fixed seeds; SQLite and T-SQL answers; sessions 24 and 25):
//!
//! - the guard ignoring what its visitor refuses: 418 accepted writes such as
//!   `WITH w AS (…) UPDATE customers SET id = 0`, and 25 and 15 answers that read the hidden
//!   table or a catalog (session 24's grammar);
//! - `DISTINCT` over `*` allowed: 6 and 4 answers (`visits` rows that differ only in their
//!   hidden minutes stay apart). This leak was real until session 24;
//! - ordering or grouping by a column position into `*` allowed: 6 and 4 answers;
//! - a nested `*` over a table with hidden columns allowed: 4 answers on SQLite, none on
//!   T-SQL. A nested `*` leaks mostly through a rename by a column list, which the peer does
//!   not run, so the grammar writes none in T-SQL and that rule rests on the SQLite run (and
//!   unit tests);
//! - both masking layers off, the tool's `mask_columns` and the backend's nulling of hidden
//!   cells: 109 and 90 answers (either layer alone keeps every answer the same);
//! - qualified hidden columns let through once their qualifier is resolved: 2 and 5 answers;
//! - on T-SQL, the masking without the `t1.salary` fix: 2 answers (session 24, counted before
//!   `visits`);
//! - hidden columns left in both the scope's catalog and the tools' column lists: 12 answers
//!   of the other tools on each backend (samples, `sample` searches, row fetches; either layer
//!   alone holds; session 24, counted before `visits`; the other tools' calls do not use the
//!   grammar).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mssql_mcp::db::guard::{self, AccessRules, SqlDialect};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use serde_json::{Value, json};

use crate::common;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// The grammar
// ---------------------------------------------------------------------------------------------

/// The tables the grammar knows: `secrets` is denied, `employees.salary` and `visits.minutes`
/// are hidden. `visits` has no visible key: rows that differ only in their hidden minutes.
/// `customers.minutes` is visible: a column named like a hidden one of another table.
const TABLES: &[(&str, &[&str])] = &[
    ("customers", &["id", "name", "city", "minutes"]),
    ("employees", &["id", "name", "dept", "manager_id", "salary"]),
    ("secrets", &["id", "employee_id", "code"]),
    ("visits", &["employee_id", "day", "minutes"]),
];

const DENY_TABLES: &[&str] = &["secrets"];
const DENY_COLUMNS: &[&str] = &["employees.salary", "visits.minutes"];

fn rules() -> AccessRules {
    AccessRules {
        allow_tables: Vec::new(),
        deny_tables: DENY_TABLES.iter().map(|s| s.to_string()).collect(),
        deny_columns: DENY_COLUMNS.iter().map(|s| s.to_string()).collect(),
    }
}

/// Something a `FROM` clause brought into scope: its alias and the column names known to it
/// (empty when the grammar cannot know them, e.g. a CTE without a column list over `*`).
#[derive(Clone, Debug)]
struct Source {
    alias: String,
    columns: Vec<String>,
}

struct Grammar {
    rng: fastrand::Rng,
    /// Names handed out so far, so aliases never collide within a statement.
    names: u32,
    /// Expressions and conditions written so far in this statement; past `max_nodes` only
    /// leaves are written, which keeps every statement small.
    nodes: u32,
    /// Whether an aggregate or window function may be written here (a result column, not a
    /// condition), so that most of what the guard accepts also compiles.
    aggregates: bool,
    /// Write T-SQL (for SQL Server through the TDS peer) instead of SQLite's SQL.
    tsql: bool,
    /// Expressions and conditions per statement before only leaves are written.
    max_nodes: u32,
    /// T-SQL: the expression being written is a whole select item (the peer runs a window
    /// function only there).
    item_root: bool,
    /// For noninterference: name a hidden column or the denied table outright less often.
    /// Such a query is refused by its text alone, the same on both servers, so it adds little
    /// there; the read-only property wants them as they come.
    answers: bool,
}

impl Grammar {
    fn new(seed: u64) -> Grammar {
        Grammar {
            rng: fastrand::Rng::with_seed(seed),
            names: 0,
            nodes: 0,
            aggregates: false,
            tsql: false,
            max_nodes: 40,
            item_root: false,
            answers: false,
        }
    }

    /// Queries for the noninterference tests: more of them answered (see `answers`).
    fn for_answers(self) -> Grammar {
        Grammar {
            answers: true,
            ..self
        }
    }

    /// T-SQL differs where it would not parse or run otherwise: `TOP` for `LIMIT`, `WITH` and
    /// `ORDER BY` only on the outermost query, no `NATURAL JOIN`/`USING`, `+` for `||`, no
    /// comparison as a value, no aggregate inside an aggregate, a grouped select naming only
    /// its grouped column and aggregates, its own function names and catalogs, `dbo.` for
    /// `main.`; and for the peer, which runs less of T-SQL than SQL Server does, no CTE column
    /// lists, window functions only as whole select items, and smaller queries.
    fn tsql(seed: u64) -> Grammar {
        Grammar {
            tsql: true,
            max_nodes: 16,
            ..Grammar::new(seed)
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.usize(..xs.len())]
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    /// A statement for the read-only property: mostly queries, a third other statements.
    fn statement(&mut self) -> String {
        self.names = 0;
        self.nodes = 0;
        if self.chance(0.65) {
            let q = self.query(0, &[], &[], None);
            if self.chance(0.05) {
                let other = self.write();
                return format!("{q}; {other}");
            }
            return q;
        }
        self.write()
    }

    /// A query for the noninterference property.
    fn read(&mut self) -> String {
        self.names = 0;
        self.nodes = 0;
        self.query(0, &[], &[], None)
    }

    fn table(&mut self) -> (&'static str, &'static [&'static str]) {
        // The hidden table turns up less often: nearly everything naming it is refused.
        let i = if self.chance(if self.answers { 0.01 } else { 0.03 }) {
            2
        } else {
            [0, 1, 3][self.rng.usize(..3)]
        };
        TABLES[i]
    }

    /// The table under a nested `*` (a CTE's or derived table's body). Over a table with
    /// hidden columns that is refused by its text alone, so for answers it is mostly the one
    /// table without any.
    fn star_table(&mut self) -> (&'static str, &'static [&'static str]) {
        if self.answers && self.chance(0.7) {
            return TABLES[0];
        }
        self.table()
    }

    /// `width`: the number of result columns a set operation or a sub-query needs; then every
    /// result column is named `c0`, `c1`, ….
    fn query(
        &mut self,
        depth: u32,
        ctes: &[Source],
        outer: &[Source],
        width: Option<usize>,
    ) -> String {
        let mut sql = String::new();
        let mut ctes = ctes.to_vec();
        let with_allowed = if self.tsql { depth == 0 } else { depth < 2 };
        if with_allowed && self.chance(0.18) {
            let name = self.fresh("w");
            let n = self.rng.usize(1..=3);
            if self.tsql || self.chance(0.4) {
                // Without a column list, its columns are the body's `c0`, `c1`, … or, over a
                // `*`, whatever the table has.
                let body = if self.chance(if self.answers { 0.85 } else { 0.5 }) {
                    self.query(depth + 1, &ctes, &[], Some(n))
                } else {
                    let (t, _) = self.star_table();
                    format!("SELECT * FROM {t}")
                };
                let columns = if body.starts_with("SELECT * FROM") {
                    Vec::new()
                } else {
                    (0..n).map(|i| format!("c{i}")).collect()
                };
                let _ = write!(sql, "WITH {name} AS ({body}) ");
                ctes.push(Source {
                    alias: name,
                    columns,
                });
            } else {
                // A column list renames whatever the body returns, `*` included.
                let (body, n) = if self.chance(0.3) {
                    let (t, cols) = self.table();
                    (format!("SELECT * FROM {t}"), cols.len())
                } else {
                    (self.query(depth + 1, &ctes, &[], Some(n)), n)
                };
                let columns: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
                let _ = write!(sql, "WITH {name}({}) AS ({body}) ", columns.join(", "));
                ctes.push(Source {
                    alias: name,
                    columns,
                });
            }
        }
        let set_width = width.or_else(|| self.chance(0.15).then(|| self.rng.usize(1..=2)));
        let set_op = set_width.is_some() && self.chance(0.25);
        let order_allowed = depth == 0 || !self.tsql;
        let order = order_allowed && !set_op && self.chance(if depth == 0 { 0.5 } else { 0.2 });
        sql.push_str(&self.select_core(depth, &ctes, outer, set_width, order));
        if let Some(n) = set_width
            && set_op
        {
            let op = self.pick(&[" UNION ", " UNION ALL ", " EXCEPT ", " INTERSECT "]);
            sql.push_str(op);
            sql.push_str(&self.select_core(depth, &ctes, outer, Some(n), false));
            if order_allowed && self.chance(0.3) {
                sql.push_str(" ORDER BY 1");
            }
        }
        // Query hints, which the guard sets aside before parsing (the peer ignores them).
        if self.tsql && depth == 0 && self.chance(0.1) {
            let hints = self.pick(&["RECOMPILE", "MAXDOP 1, HASH JOIN", "FORCE ORDER, FAST 5"]);
            let _ = write!(sql, " OPTION ({hints})");
        }
        if !self.tsql && self.chance(0.25) {
            let _ = write!(sql, " LIMIT {}", self.rng.usize(0..4));
            if self.chance(0.4) {
                let _ = write!(sql, " OFFSET {}", self.rng.usize(0..3));
            }
        }
        sql
    }

    fn select_core(
        &mut self,
        depth: u32,
        ctes: &[Source],
        outer: &[Source],
        width: Option<usize>,
        order: bool,
    ) -> String {
        let (from, sources) = self.sources(depth, ctes);
        let mut scope = sources.clone();
        scope.extend_from_slice(outer);
        let mut sql = String::from("SELECT ");
        if self.chance(0.1) {
            sql.push_str("DISTINCT ");
        }
        if self.tsql && self.chance(0.2) {
            let _ = write!(sql, "TOP {} ", self.rng.usize(0..4));
        }
        let outer_aggregates = std::mem::replace(&mut self.aggregates, true);
        // T-SQL: SQL Server refuses a grouped select that names anything but its grouped
        // column and aggregates, so the grouping is chosen first and the items follow it.
        let grouped = (self.tsql && self.chance(0.15)).then(|| self.column(&sources));
        match (width, &grouped) {
            (_, Some(by)) => {
                let by = by.clone();
                let n = width.unwrap_or_else(|| self.rng.usize(1..=3));
                let cols: Vec<String> = (0..n)
                    .map(|i| {
                        let e = if self.chance(0.5) {
                            by.clone()
                        } else if self.chance(0.3) {
                            "count(*)".to_string()
                        } else {
                            let f = self.pick(&["count", "max", "min"]);
                            format!("{f}({})", self.column(&scope))
                        };
                        if width.is_some() {
                            format!("{e} AS c{i}")
                        } else {
                            e
                        }
                    })
                    .collect();
                sql.push_str(&cols.join(", "));
            }
            (Some(n), None) => {
                let cols: Vec<String> = (0..n)
                    .map(|i| {
                        self.item_root = self.tsql;
                        format!("{} AS c{i}", self.expr(depth, ctes, &scope))
                    })
                    .collect();
                sql.push_str(&cols.join(", "));
            }
            (None, None) if self.chance(0.35) => sql.push('*'),
            (None, None) if self.chance(0.15) => {
                let s = self.pick_source(&sources);
                let _ = write!(sql, "{}.*", s.alias);
            }
            (None, None) => {
                let n = self.rng.usize(1..=3);
                let cols: Vec<String> = (0..n)
                    .map(|_| {
                        self.item_root = self.tsql;
                        let e = self.expr(depth, ctes, &scope);
                        if self.chance(0.3) {
                            // Sometimes a name the masking looks for.
                            let alias = if self.chance(0.2) {
                                "salary".to_string()
                            } else {
                                self.fresh("a")
                            };
                            format!("{e} AS {alias}")
                        } else {
                            e
                        }
                    })
                    .collect();
                sql.push_str(&cols.join(", "));
            }
        }
        self.aggregates = false;
        let _ = write!(sql, " FROM {from}");
        if self.chance(0.5) {
            let _ = write!(sql, " WHERE {}", self.condition(depth, ctes, &scope));
        }
        if let Some(by) = &grouped {
            let _ = write!(sql, " GROUP BY {by}");
            if self.chance(0.5) {
                let _ = write!(sql, " HAVING count(*) > {}", self.rng.usize(0..2));
            }
        } else if !self.tsql && self.chance(0.15) {
            let by = if self.chance(0.2) {
                self.position()
            } else {
                self.column(&sources)
            };
            let _ = write!(sql, " GROUP BY {by}");
            if self.chance(0.5) {
                let _ = write!(sql, " HAVING {}", self.condition(depth, ctes, &scope));
            }
        }
        if let (true, Some(by)) = (order, &grouped) {
            let by = if self.chance(0.3) { "1" } else { by };
            let _ = write!(sql, " ORDER BY {by}");
        } else if order {
            if self.chance(0.3) {
                let n = self.position();
                let _ = write!(sql, " ORDER BY {n}");
            } else {
                let _ = write!(sql, " ORDER BY {}", self.column(&scope));
                if self.chance(0.5) {
                    let _ = write!(sql, ", {}", self.column(&scope));
                }
            }
            if self.chance(0.5) {
                sql.push_str(" DESC");
            }
        }
        self.aggregates = outer_aggregates;
        sql
    }

    /// A result column by position, as `ORDER BY` (and SQLite's `GROUP BY`) read it; it may
    /// point at a hidden column brought by `*` (`salary` is the fifth column of `employees`).
    /// SQLite also reads a position behind a unary `+`, in parentheses or before `COLLATE`.
    fn position(&mut self) -> String {
        let n = if self.chance(0.5) {
            5
        } else {
            self.rng.usize(1..=4)
        };
        if self.tsql {
            return n.to_string();
        }
        match self.rng.u32(..8) {
            0 => format!("+{n}"),
            1 => format!("({n})"),
            2 => format!("{n} COLLATE NOCASE"),
            _ => n.to_string(),
        }
    }

    fn pick_source(&mut self, sources: &[Source]) -> Source {
        sources[self.rng.usize(..sources.len())].clone()
    }

    /// A `FROM` clause and what it brings into scope.
    fn sources(&mut self, depth: u32, ctes: &[Source]) -> (String, Vec<Source>) {
        let (mut sql, first) = self.table_source(depth, ctes);
        let mut sources = vec![first];
        if self.chance(0.35) {
            let (item, next) = self.table_source(depth, ctes);
            let mut scope = sources.clone();
            scope.push(next.clone());
            match self.rng.u32(..6) {
                0 => {
                    let _ = write!(sql, ", {item}");
                }
                1 if !self.tsql => {
                    let _ = write!(sql, " NATURAL JOIN {item}");
                }
                2 if !self.tsql
                    && [&sources[0], &next]
                        .iter()
                        .all(|s| s.columns.iter().any(|c| c == "id")) =>
                {
                    let _ = write!(sql, " JOIN {item} USING (id)");
                }
                3 => {
                    let on = self.condition(depth, ctes, &scope);
                    let _ = write!(sql, " LEFT JOIN {item} ON {on}");
                }
                _ => {
                    let on = self.condition(depth, ctes, &scope);
                    let _ = write!(sql, " JOIN {item} ON {on}");
                }
            }
            sources.push(next);
        }
        (sql, sources)
    }

    fn table_source(&mut self, depth: u32, ctes: &[Source]) -> (String, Source) {
        let alias = self.fresh("t");
        let roll = self.rng.u32(..100);
        if roll < 15 && !ctes.is_empty() {
            let cte = self.pick_source(ctes);
            let sql = format!("{} AS {alias}", cte.alias);
            return (
                sql,
                Source {
                    alias,
                    columns: cte.columns,
                },
            );
        }
        if roll < 30 && depth < 2 {
            let n = self.rng.usize(1..=3);
            let body = self.query(depth + 1, ctes, &[], Some(n));
            return (
                format!("({body}) AS {alias}"),
                Source {
                    alias,
                    columns: (0..n).map(|i| format!("c{i}")).collect(),
                },
            );
        }
        if roll < 40 && depth < 2 && !(self.answers && self.chance(0.7)) {
            // A derived table over `*`: its columns are the table's.
            let (t, cols) = self.star_table();
            return (
                format!("(SELECT * FROM {t}) AS {alias}"),
                Source {
                    alias,
                    columns: cols.iter().map(|c| c.to_string()).collect(),
                },
            );
        }
        if roll < 43 && !self.tsql {
            return (
                format!("json_each('[1,2,3]') AS {alias}"),
                Source {
                    alias,
                    columns: vec!["key".into(), "value".into()],
                },
            );
        }
        if roll == 43 {
            let catalog = if self.tsql {
                self.pick(&["sys.objects", "INFORMATION_SCHEMA.TABLES", "sysobjects"])
            } else {
                self.pick(&[
                    "sqlite_master",
                    "sqlite_schema",
                    "pragma_table_info('employees')",
                ])
            };
            return (
                format!("{catalog} AS {alias}"),
                Source {
                    alias,
                    columns: vec!["name".into()],
                },
            );
        }
        let (t, cols) = self.table();
        let sql = if self.chance(0.1) {
            let schema = if self.tsql { "dbo" } else { "main" };
            format!("{schema}.{t} AS {alias}")
        } else {
            format!("{t} AS {alias}")
        };
        (
            sql,
            Source {
                alias,
                columns: cols.iter().map(|c| c.to_string()).collect(),
            },
        )
    }

    /// A column of something in scope, qualified or (sometimes) bare.
    fn column(&mut self, scope: &[Source]) -> String {
        let s = self.pick_source(scope);
        if s.columns.is_empty() {
            return format!("{}.id", s.alias);
        }
        // `customers.minutes` (a source with a `city`) is visible.
        let customers = s.columns.iter().any(|c| c == "city");
        let hidden = |c: &str| ["salary", "minutes"].contains(&c) && !customers;
        let mut c = s.columns[self.rng.usize(..s.columns.len())].clone();
        if hidden(&c) && self.chance(0.9) {
            // Naming the hidden column is refused outright; pick again, mostly.
            c = s.columns[self.rng.usize(..s.columns.len())].clone();
        }
        if self.answers && hidden(&c) && self.chance(0.8) {
            let visible: Vec<&String> = s.columns.iter().filter(|c| !hidden(c)).collect();
            c = visible[self.rng.usize(..visible.len())].clone();
        }
        if self.tsql && customers && c == "minutes" {
            // The peer's INTERSECT keeps apart rows that differ in columns it does not return
            // (SQL Server returns one), which would show a visible `minutes` of an outer row
            // as depending on hidden data. The qualified-name rule rests on the SQLite run.
            c = "city".to_string();
        }
        if self.chance(0.2) {
            c
        } else {
            format!("{}.{c}", s.alias)
        }
    }

    fn expr(&mut self, depth: u32, ctes: &[Source], scope: &[Source]) -> String {
        let root = std::mem::take(&mut self.item_root);
        let deeper = depth < 3;
        self.nodes += 1;
        let roll = if self.nodes > self.max_nodes {
            self.rng.u32(..43)
        } else {
            self.rng.u32(..100)
        };
        match roll {
            0..=34 => self.column(scope),
            35..=42 => self
                .pick(&["1", "0", "7", "'x'", "'Oslo'", "NULL", "2.5"])
                .to_string(),
            43..=52 => {
                let op = if self.tsql {
                    self.pick(&[" + ", " - ", " * "])
                } else {
                    self.pick(&[" + ", " - ", " * ", " || ", " = ", " < ", " > "])
                };
                let (a, b) = (self.expr(depth, ctes, scope), self.expr(depth, ctes, scope));
                format!("({a}{op}{b})")
            }
            53..=58 | 65..=67 | 84..=89 if !self.aggregates => {
                let f = if self.tsql {
                    self.pick(&["upper", "len", "abs", "lower", "ltrim"])
                } else {
                    self.pick(&["upper", "length", "abs", "hex", "typeof", "quote"])
                };
                let a = self.expr(depth, ctes, scope);
                format!("{f}({a})")
            }
            53..=64 if self.tsql => {
                let f = self.pick(&["upper", "len", "abs", "max", "min", "count", "sum", "avg"]);
                // No aggregate inside an aggregate.
                let scalar = ["upper", "len", "abs"].contains(&f);
                let keep = scalar && self.aggregates;
                let outer = std::mem::replace(&mut self.aggregates, keep);
                let a = self.expr(depth, ctes, scope);
                self.aggregates = outer;
                format!("{f}({a})")
            }
            53..=64 => {
                let f = self.pick(&[
                    "upper",
                    "length",
                    "abs",
                    "hex",
                    "typeof",
                    "quote",
                    "max",
                    "min",
                    "count",
                    "sum",
                    "total",
                    "group_concat",
                    "avg",
                ]);
                let a = self.expr(depth, ctes, scope);
                format!("{f}({a})")
            }
            65..=67 => "count(*)".into(),
            68..=71 => {
                let (a, b) = (self.expr(depth, ctes, scope), self.expr(depth, ctes, scope));
                format!("coalesce({a}, {b})")
            }
            72..=75 => {
                let c = self.condition(depth, ctes, scope);
                let (a, b) = (self.expr(depth, ctes, scope), self.expr(depth, ctes, scope));
                format!("CASE WHEN {c} THEN {a} ELSE {b} END")
            }
            76..=83 if deeper => {
                let q = self.query(depth + 1, ctes, scope, Some(1));
                format!("({q})")
            }
            84..=89 if self.tsql && !root => self.column(scope),
            84..=89 => {
                let f = self.pick(&["row_number()", "rank()", "count(*)", "sum(1)"]);
                let o = self.column(scope);
                if self.chance(0.5) {
                    let p = self.column(scope);
                    format!("{f} OVER (PARTITION BY {p} ORDER BY {o})")
                } else {
                    format!("{f} OVER (ORDER BY {o})")
                }
            }
            90 if !self.tsql && self.chance(0.3) => {
                let f = self.pick(&["load_extension('x')", "readfile('/etc/hostname')"]);
                f.to_string()
            }
            _ => {
                let a = self.expr(depth, ctes, scope);
                let ty = if self.tsql { "nvarchar(40)" } else { "TEXT" };
                format!("CAST({a} AS {ty})")
            }
        }
    }

    /// The left side of a condition. The peer reads a condition that starts with `(` as a
    /// nested condition, so in T-SQL a parenthesised expression goes inside `coalesce`.
    fn lhs(&mut self, depth: u32, ctes: &[Source], scope: &[Source]) -> String {
        let a = self.expr(depth, ctes, scope);
        if self.tsql && a.starts_with('(') {
            format!("coalesce({a}, NULL)")
        } else {
            a
        }
    }

    fn condition(&mut self, depth: u32, ctes: &[Source], scope: &[Source]) -> String {
        let deeper = depth < 3;
        self.nodes += 1;
        let roll = if self.nodes > self.max_nodes {
            self.rng.u32(..30)
        } else {
            self.rng.u32(..100)
        };
        match roll {
            0..=29 => {
                let op = self.pick(&[" = ", " < ", " > ", " <> ", " >= "]);
                let (a, b) = (self.lhs(depth, ctes, scope), self.expr(depth, ctes, scope));
                format!("{a}{op}{b}")
            }
            30..=44 if deeper => {
                let q = self.query(depth + 1, ctes, scope, None);
                let not = if self.chance(0.3) { "NOT " } else { "" };
                format!("{not}EXISTS ({q})")
            }
            45..=56 if deeper => {
                let a = self.lhs(depth, ctes, scope);
                let q = self.query(depth + 1, ctes, scope, Some(1));
                format!("{a} IN ({q})")
            }
            57..=84 => {
                let test = match roll {
                    57..=64 => "IN (1, 2, 'x')",
                    65..=72 => "LIKE '%a%'",
                    73..=78 => "IS NULL",
                    _ => "BETWEEN 2 AND 40000",
                };
                let a = self.lhs(depth, ctes, scope);
                format!("{a} {test}")
            }
            _ => {
                let join = self.pick(&[" AND ", " OR "]);
                let (a, b) = (
                    self.condition(depth, ctes, scope),
                    self.condition(depth, ctes, scope),
                );
                format!("({a}{join}{b})")
            }
        }
    }

    /// Something other than a query: writes, DDL, pragmas, transactions, attachments, writes
    /// hidden inside a query's shape.
    fn write(&mut self) -> String {
        let (t, cols) = self.table();
        let col = self.pick(cols);
        let q = |g: &mut Grammar| g.query(1, &[], &[], Some(1));
        match self.rng.u32(..30) {
            0 => format!("INSERT INTO {t} ({col}) VALUES (1)"),
            1 => format!("INSERT INTO {t} SELECT * FROM {t}"),
            2 => format!("INSERT INTO {t} ({col}) {}", q(self)),
            3 => format!("UPDATE {t} SET {col} = ({})", q(self)),
            4 => format!(
                "UPDATE {t} SET {col} = 1 WHERE id IN ({}) RETURNING *",
                q(self)
            ),
            5 => format!("DELETE FROM {t} WHERE id IN ({})", q(self)),
            6 => format!("DELETE FROM {t} RETURNING id"),
            7 => format!("REPLACE INTO {t} ({col}) VALUES (2)"),
            8 => format!("INSERT OR IGNORE INTO {t} ({col}) VALUES (3)"),
            9 => format!(
                "WITH w AS ({}) DELETE FROM {t} WHERE id IN (SELECT c0 FROM w)",
                q(self)
            ),
            10 => format!(
                "WITH w AS ({}) INSERT INTO {t} ({col}) SELECT c0 FROM w",
                q(self)
            ),
            11 => format!("WITH w AS ({}) UPDATE {t} SET {col} = 0", q(self)),
            12 => format!("CREATE TABLE z AS {}", q(self)),
            13 => format!("CREATE TEMP TABLE z AS {}", q(self)),
            14 => format!("CREATE VIEW v AS {}", q(self)),
            15 => format!("CREATE INDEX i ON {t} ({col})"),
            16 => format!("CREATE TRIGGER g AFTER INSERT ON {t} BEGIN DELETE FROM {t}; END"),
            17 => format!("DROP TABLE {t}"),
            18 => format!("ALTER TABLE {t} ADD COLUMN x INT"),
            19 => "ATTACH DATABASE ':memory:' AS other".into(),
            20 => self
                .pick(&[
                    "PRAGMA user_version = 7",
                    "PRAGMA query_only = 0",
                    "PRAGMA writable_schema = 1",
                    "PRAGMA table_info(employees)",
                ])
                .into(),
            21 => self.pick(&["VACUUM", "ANALYZE", "REINDEX"]).into(),
            22 => self
                .pick(&["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT s", "RELEASE s"])
                .into(),
            23 => format!("EXPLAIN {}", q(self)),
            24 => format!("SELECT * INTO z FROM {t}"),
            25 => format!("{}; DELETE FROM {t}", q(self)),
            26 => format!("SELECT * FROM {t} FOR UPDATE"),
            27 => format!("VALUES ((SELECT count(*) FROM {t}))"),
            28 => format!("SELECT {col} FROM {t} UNION SELECT {col} FROM {t} RETURNING *"),
            _ => format!("DELETE FROM {t} WHERE {col} IN ({})", q(self)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The databases
// ---------------------------------------------------------------------------------------------

/// The schema both files share, and their common rows.
const SCHEMA: &str = "
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, minutes INTEGER);
CREATE TABLE employees (id INTEGER PRIMARY KEY, name TEXT NOT NULL, dept TEXT,
                        manager_id INTEGER REFERENCES employees(id), salary INTEGER);
CREATE TABLE secrets (id INTEGER PRIMARY KEY, employee_id INTEGER REFERENCES employees(id),
                      code TEXT);
CREATE INDEX employees_dept ON employees (dept);
CREATE TABLE visits (employee_id INTEGER REFERENCES employees(id), day TEXT, minutes INTEGER);
";

/// Writes a database file whose hidden data comes from `seed`: the salaries, the number and
/// content of the secrets, and which pairs of visits (the same employee and day) also have
/// the same minutes. Everything visible is the same for every seed. No index covers
/// the hidden column: a scan of such an index would order rows by hidden values, which no rule
/// about names can see (see the README's "Hidden columns").
fn database(path: &Path, seed: u64) -> PathBuf {
    let _ = std::fs::remove_file(path);
    let conn = rusqlite::Connection::open(path).expect("create the oracle database");
    conn.execute_batch(SCHEMA).expect("schema");
    let cities = ["Oslo", "Lima", "Pune", "Oslo", "Kyiv", "Lima"];
    for i in 1..=12_i64 {
        let city = (i % 4 != 0).then(|| cities[i as usize % cities.len()]);
        conn.execute(
            "INSERT INTO customers (id, name, city, minutes) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![i, format!("customer {i}"), city, i * 7 % 30],
        )
        .expect("customer");
    }
    let mut hidden = fastrand::Rng::with_seed(seed);
    let depts = ["sales", "ops", "ops", "it", "sales"];
    for i in 1..=10_i64 {
        let manager = (i > 1).then_some((i - 1) / 3 + 1);
        let salary = (i != 4).then(|| hidden.i64(20_000..90_000));
        conn.execute(
            "INSERT INTO employees (id, name, dept, manager_id, salary) VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![i, format!("employee {i}"), depts[i as usize % 5], manager, salary],
        )
        .expect("employee");
    }
    for k in 0..6_i64 {
        let minutes = 10 * k;
        let second = if (seed >> k) & 1 == 1 {
            minutes
        } else {
            minutes + 5
        };
        for m in [minutes, second] {
            conn.execute(
                "INSERT INTO visits (employee_id, day, minutes) VALUES (?1, ?2, ?3)",
                rusqlite::params![k % 3 + 1, ["mon", "tue", "wed"][k as usize % 3], m],
            )
            .expect("visit");
        }
    }
    for i in 1..=hidden.i64(3..9) {
        conn.execute(
            "INSERT INTO secrets (id, employee_id, code) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                i,
                hidden.i64(1..=10),
                format!("code {}", hidden.u32(..1000))
            ],
        )
        .expect("secret");
    }
    path.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Read-only, by SQLite's compiler
// ---------------------------------------------------------------------------------------------

/// A read-write connection whose authorizer writes into `forbidden` every action of a
/// statement being prepared that is not a read, select, recursion or harmless function.
fn oracle_connection(forbidden: Arc<Mutex<Vec<String>>>) -> rusqlite::Connection {
    let mut conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
    conn.execute_batch(SCHEMA).expect("schema");
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let bad = match ctx.action {
            AuthAction::Select | AuthAction::Recursive => false,
            AuthAction::Read { table_name, .. } => {
                DENY_TABLES
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(table_name))
                    || table_name.to_ascii_lowercase().starts_with("sqlite_")
            }
            AuthAction::Function { function_name } => {
                let f = function_name.to_ascii_lowercase();
                guard::is_dangerous_function(&f) || f == "readfile" || f == "writefile"
            }
            _ => true,
        };
        if bad && let Ok(mut forbidden) = forbidden.lock() {
            forbidden.push(format!("{:?}", ctx.action));
        }
        Authorization::Allow
    }))
    .expect("authorizer");
    conn
}

#[test]
fn every_query_the_guard_accepts_sqlite_compiles_read_only() {
    const QUERIES: usize = 6_000;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let conn = oracle_connection(seen.clone());
    let rules = rules();
    let mut g = Grammar::new(seed(0x5eed_0001));
    let (mut accepted, mut compiled, mut refused_writes) = (0, 0, 0);
    let mut failures = Vec::new();
    for _ in 0..QUERIES {
        let sql = g.statement();
        let verdict = guard::check(&sql, SqlDialect::Sqlite, &rules);
        // The oracle's view, whatever the guard said: does SQLite take it for a write?
        if let Ok(mut s) = seen.lock() {
            s.clear();
        }
        let read_only = match conn.prepare(&sql) {
            Ok(stmt) => Some(stmt.readonly()),
            Err(_) => None,
        };
        let forbidden = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let writes = read_only == Some(false) || !forbidden.is_empty();
        match verdict {
            Ok(_) => {
                accepted += 1;
                if read_only.is_some() {
                    compiled += 1;
                }
                if writes {
                    failures.push(format!(
                        "{sql}\n    accepted, but SQLite compiles it as read-only={read_only:?}, \
                         authorizer saw {forbidden:?}"
                    ));
                }
            }
            Err(_) if writes => refused_writes += 1,
            Err(_) => {}
        }
    }
    assert_none(
        &failures,
        &format!("of {QUERIES} statements the guard accepted are not read-only to SQLite"),
    );
    eprintln!(
        "{QUERIES} statements: {accepted} accepted ({compiled} of them compiled by SQLite), \
         {refused_writes} writes refused"
    );
    // Not vacuous: the grammar must reach both sides of the guard.
    assert!(
        compiled >= QUERIES / 10,
        "only {compiled} of {QUERIES} statements were accepted and compiled ({accepted} accepted)"
    );
    assert!(
        refused_writes >= QUERIES / 10,
        "only {refused_writes} of {QUERIES} statements were writes SQLite compiled (and the guard refused)"
    );
}

// ---------------------------------------------------------------------------------------------
// Noninterference, through the real server
// ---------------------------------------------------------------------------------------------

/// The server's configuration over `database` (its `[[database]]` fields): no sign-in, limits
/// out of the way, and scope `/o` hiding `secrets` and `employees.salary`.
fn oracle_config(state: &Path, database: &str) -> String {
    format!(
        r#"
[server]
insecure_no_auth = true
state_dir = "{state}"

[limits]
per_ip_per_sec = 1000000
per_ip_burst = 1000000
client_per_min = 1000000
client_burst = 1000000

[[database]]
name = "oracle"
{database}

[[scope]]
path = "/o"
database = "oracle"
profile = "full"
max_rows = 1000
deny_tables = {deny_tables:?}
deny_columns = {deny_columns:?}
"#,
        state = toml_path(state),
        deny_tables = DENY_TABLES,
        deny_columns = DENY_COLUMNS,
    )
}

/// A path as a TOML basic string's contents.
fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "\\\\")
}

fn sqlite_config(db: &Path, state: &Path) -> String {
    oracle_config(
        state,
        &format!("kind = \"sqlite\"\npath = \"{}\"", toml_path(db)),
    )
}

/// A tool's answer from `server` with what may differ between two servers answering the
/// same call taken out: the paging cursor's opaque value (whether there is one stays), the
/// server's own address in record URLs, and the random tokens of cached result rows.
fn comparable(server: &Server, result: Value) -> Value {
    let mut text = result.to_string().replace(&server.base, "{base}");
    // A result row without a key is fetched by a random token (`sql:<24 hex digits>/n`).
    let mut at = 0;
    while let Some(i) = text[at..].find("sql:").map(|i| at + i + 4) {
        let token = text[i..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .count();
        if token == 24 {
            text.replace_range(i..i + 24, "{token}");
        }
        at = i;
    }
    let mut result: Value = serde_json::from_str(&text).expect("JSON again");
    if let Some(c) = result.pointer_mut("/structuredContent/next_cursor")
        && c.is_string()
    {
        *c = json!("(cursor)");
    }
    if let Some(content) = result.get_mut("content").and_then(Value::as_array_mut) {
        for item in content {
            if let Some(text) = item.get("text").and_then(Value::as_str)
                && let Some(at) = text.find("\"next_cursor\"")
            {
                let cut = text[..at].to_string();
                item["text"] = json!(cut);
            }
        }
    }
    result
}

/// Sends `n` queries of `g` to both servers as `execute_sql`; returns how many `a` answered,
/// with how many rows, and every query whose answers differ.
async fn compare_queries(
    a: &Server,
    b: &Server,
    g: &mut Grammar,
    n: usize,
) -> (usize, usize, Vec<String>) {
    let (mut answered, mut rows) = (0, 0);
    let mut differences = Vec::new();
    for _ in 0..n {
        let sql = g.read();
        if std::env::var_os("ORACLE_TRACE").is_some() {
            // For a failure that takes the process down with it (run with `--nocapture`).
            eprintln!("query: {sql}");
        }
        let args = json!({ "sql": sql });
        let (ra, rb) = tokio::join!(
            a.call_tool("/o", "execute_sql", args.clone()),
            b.call_tool("/o", "execute_sql", args)
        );
        if ra["isError"] == false {
            answered += 1;
            rows += ra["structuredContent"]["rows"]
                .as_array()
                .map_or(0, Vec::len);
        } else if std::env::var_os("ORACLE_TRACE").is_some() {
            eprintln!("error: {}", tool_text(&ra));
        }
        let (ca, cb) = (comparable(a, ra), comparable(b, rb));
        if ca != cb {
            differences.push(format!(
                "{sql}\n    a: {}\n    b: {}",
                tool_text(&ca),
                tool_text(&cb)
            ));
        }
    }
    (answered, rows, differences)
}

/// What is hidden in a database file, as words to search for: the salaries and the secrets'
/// codes.
fn hidden_words(path: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(path).expect("open");
    let mut stmt = c
        .prepare(
            "SELECT CAST(salary AS TEXT) FROM employees WHERE salary IS NOT NULL \
             UNION ALL SELECT code FROM secrets",
        )
        .expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Every other tool, on both servers: the catalog (`list_tables`, `describe_table`), samples
/// (every page, each server following its own cursor), `search` (its commands, words, and each
/// hidden value of either database), and `fetch` of every table and of every row id, the
/// hidden table's included. Returns how many calls `a` answered and every call whose answers
/// differ.
async fn compare_other_tools(
    a: &Server,
    b: &Server,
    schema: &str,
    hidden: &[String],
) -> (usize, Vec<String>) {
    let mut calls: Vec<(&str, Value)> = vec![("list_tables", json!({}))];
    for t in ["customers", "employees", "secrets", "visits"] {
        for name in [t.to_string(), format!("{schema}.{t}")] {
            calls.push(("describe_table", json!({ "table": name })));
            calls.push(("get_table_sample", json!({ "table": name, "limit": 4 })));
        }
        for q in [format!("describe {t}"), format!("sample {t} limit 20")] {
            calls.push(("search", json!({ "query": q })));
        }
        calls.push(("fetch", json!({ "id": format!("{schema}.{t}") })));
        for id in 0..=12 {
            calls.push(("fetch", json!({ "id": format!("{schema}.{t}/{id}") })));
        }
    }
    let words = [
        "list tables",
        "employee",
        "customer 3",
        "ops",
        "Oslo",
        "sales it",
        "code",
    ];
    for q in words
        .iter()
        .map(|w| w.to_string())
        .chain(hidden.iter().cloned())
    {
        calls.push(("search", json!({ "query": q })));
    }
    let (mut answered, mut differences) = (0, Vec::new());
    for (tool, args) in calls {
        let (mut args_a, mut args_b) = (args.clone(), args.clone());
        // Each server's own cursor to the next page, for as long as both return one.
        for _page in 0..8 {
            let (ra, rb) = tokio::join!(
                a.call_tool("/o", tool, args_a.clone()),
                b.call_tool("/o", tool, args_b.clone())
            );
            if ra["isError"] == false {
                answered += 1;
            }
            let next = |r: &Value| {
                r["structuredContent"]["next_cursor"]
                    .as_str()
                    .map(String::from)
            };
            let (na, nb) = (next(&ra), next(&rb));
            let (ca, cb) = (comparable(a, ra), comparable(b, rb));
            if ca != cb {
                differences.push(format!(
                    "{tool} {args_a}\n    a: {}\n    b: {}",
                    tool_text(&ca),
                    tool_text(&cb)
                ));
                break;
            }
            match (na, nb) {
                (Some(na), Some(nb)) => {
                    args_a["cursor"] = json!(na);
                    args_b["cursor"] = json!(nb);
                }
                _ => break,
            }
        }
    }
    (answered, differences)
}

#[tokio::test]
async fn hidden_data_never_changes_an_answer() {
    const QUERIES: usize = 3_000;
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("guard-oracle-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).expect("state dir a");
    std::fs::create_dir_all(dir.join("b")).expect("state dir b");
    let a_db = database(&dir.join("a.sqlite"), 11);
    let b_db = database(&dir.join("b.sqlite"), 29);
    // The two files must differ in what is hidden, or the test proves nothing.
    let hidden = |p: &Path| -> [i64; 3] {
        let c = rusqlite::Connection::open(p).expect("open");
        c.query_row(
            "SELECT (SELECT sum(salary * id) FROM employees), (SELECT count(*) FROM secrets), \
             (SELECT count(*) FROM (SELECT DISTINCT * FROM visits))",
            [],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]),
        )
        .expect("hidden data")
    };
    let (a_hidden, b_hidden) = (hidden(&a_db), hidden(&b_db));
    for i in 0..3 {
        assert_ne!(
            a_hidden[i], b_hidden[i],
            "hidden data {i} is the same in both"
        );
    }

    let a = Server::with_config(&sqlite_config(&a_db, &dir.join("a"))).await;
    let b = Server::with_config(&sqlite_config(&b_db, &dir.join("b"))).await;
    let mut g = Grammar::new(seed(0x5eed_0002)).for_answers();
    let (answered, rows, mut differences) = compare_queries(&a, &b, &mut g, QUERIES).await;
    eprintln!("{QUERIES} queries: {answered} answered, {rows} rows");
    let words = [hidden_words(&a_db), hidden_words(&b_db)].concat();
    let (calls, tools) = compare_other_tools(&a, &b, "main", &words).await;
    eprintln!("{calls} other tool calls answered");
    differences.extend(tools);
    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_none(&differences, "answers depend on hidden data");
    assert!(
        answered >= QUERIES / 6 && rows >= QUERIES,
        "only {answered} of {QUERIES} queries were answered ({rows} rows in all)"
    );
}

// ---------------------------------------------------------------------------------------------
// Noninterference on SQL Server: the same, through the TDS peer
// ---------------------------------------------------------------------------------------------

/// The oracle's tables as `pysqlbridge` serves them: one JSON file each, with the same rows as
/// [`database`] writes for `seed`, and the peer's `config.json`.
fn peer_fixture(dir: &Path, seed: u64) {
    let sqlite = dir.join("rows.sqlite");
    database(&sqlite, seed);
    let conn = rusqlite::Connection::open(&sqlite).expect("open the rows");
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    let mut tables = Vec::new();
    for (table, columns) in TABLES {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM {table} ORDER BY rowid",
                columns.join(", ")
            ))
            .expect("select the rows");
        let rows: Vec<Value> = stmt
            .query_map([], |r| {
                let mut o = serde_json::Map::new();
                for (i, c) in columns.iter().enumerate() {
                    let v = match r.get_ref(i)? {
                        rusqlite::types::ValueRef::Integer(n) => json!(n),
                        rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                        _ => Value::Null,
                    };
                    o.insert((*c).to_string(), v);
                }
                Ok(Value::Object(o))
            })
            .expect("read the rows")
            .collect::<Result<_, _>>()
            .expect("every row");
        let file = format!("data/{table}.json");
        std::fs::write(dir.join(&file), serde_json::to_vec(&rows).expect("json")).expect("write");
        tables.push(json!({"name": table, "json": file}));
    }
    common::write_peer_config(dir, Value::Array(tables));
}

fn mssql_config(dir: &Path, port: u16) -> String {
    let database = format!(
        r#"kind = "mssql"
host = "127.0.0.1"
port = {port}
database = "pysqlbridge"
user = "{login}"
password = {{ file = "{password}" }}
trust_server_certificate = true
connect_timeout_secs = 5
pool_size = 2"#,
        login = common::LOGIN,
        password = toml_path(&dir.join("password")),
    );
    oracle_config(&dir.join("state"), &database)
}

/// [`hidden_data_never_changes_an_answer`] in T-SQL, against two TDS peers whose tables differ
/// only in what the scope hides. The peer is not SQL Server: it runs much of T-SQL its own way
/// and fails some of it (errors compare like answers), but it is the real server's SQL Server
/// backend and the guard's T-SQL rules that are under test.
#[tokio::test]
async fn hidden_data_never_changes_an_answer_on_sql_server() {
    const QUERIES: usize = 3_000;
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut peers = Vec::new();
    let mut servers = Vec::new();
    for (dir, seed) in dirs.iter().zip([11, 29]) {
        peer_fixture(dir.path(), seed);
        let port = common::free_port();
        peers.push(common::PeerProcess(common::spawn_pysqlbridge_logging(
            dir.path(),
            port,
            false,
        )));
        servers.push(Server::with_config(&mssql_config(dir.path(), port)).await);
    }
    let (a, b) = (&servers[0], &servers[1]);
    let probe = json!({"sql": "SELECT count(*) AS n FROM customers"});
    let ok = a.call_tool("/o", "execute_sql", probe).await;
    assert_eq!(ok["isError"], false, "the peer answers: {}", tool_text(&ok));

    let mut g = Grammar::tsql(seed(0x5eed_0003)).for_answers();
    let (answered, rows, mut differences) = compare_queries(a, b, &mut g, QUERIES).await;
    eprintln!("{QUERIES} T-SQL queries: {answered} answered, {rows} rows");
    let words: Vec<String> = dirs
        .iter()
        .flat_map(|d| hidden_words(&d.path().join("rows.sqlite")))
        .collect();
    let (calls, tools) = compare_other_tools(a, b, "dbo", &words).await;
    eprintln!("{calls} other tool calls answered");
    differences.extend(tools);
    for s in servers {
        s.stop().await;
    }
    drop(peers);
    assert_none(&differences, "answers depend on hidden data");
    assert!(
        answered >= QUERIES / 6 && rows >= QUERIES / 3,
        "only {answered} of {QUERIES} queries were answered ({rows} rows in all)"
    );
}
