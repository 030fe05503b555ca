//! Read-only SQL guard: decides from the parsed AST whether an ad-hoc SQL text is exactly one
//! read-only query that touches only tables and columns the scope's [`AccessRules`] allow.
//!
//! This is an allowlist, not a keyword blocklist: the text is tokenized and parsed with the
//! backend's dialect (`sqlparser`; for SQL Server, [`TsqlDialect`], its MsSql dialect with what
//! T-SQL has and it lacks), the single statement must be a `Statement::Query`, and the
//! whole query tree is walked with `sqlparser`'s visitor, so every sub-query (CTEs, derived
//! tables, `WHERE`/`SELECT`/`HAVING`/`ON` sub-queries, set operations, `VALUES`, function
//! arguments, ...) is inspected. What is refused:
//!
//! * anything but one query: parse errors, empty input, several statements, and every other
//!   statement kind (INSERT, UPDATE, DELETE, MERGE, CREATE, DROP, ALTER, TRUNCATE, EXEC, DECLARE,
//!   SET, USE, GRANT, ATTACH, PRAGMA, BEGIN, COMMIT, WAITFOR, ...);
//! * `SELECT ... INTO` at any level, DML nested in a query or CTE (`WITH d AS (DELETE ...)`),
//!   locking clauses (`FOR UPDATE`/`FOR SHARE`), `FOR BROWSE`, locking table hints
//!   (`WITH (UPDLOCK)`, `HOLDLOCK`, `TABLOCKX`, ... — only a small allowlist of hints passes);
//! * table sources other than tables, derived tables, parenthesised joins and PIVOT/UNPIVOT:
//!   table-valued functions (`OPENROWSET`, `OPENQUERY`, `fn_x()`, `UNNEST`,
//!   `pragma_table_info(...)`, `x IN f(...)`), except SQLite's `json_each` / `json_tree` and
//!   SQL Server's `STRING_SPLIT`, `GENERATE_SERIES` and `OPENJSON`, which read only their
//!   arguments;
//! * on SQL Server, query hints other than a trailing `OPTION (…)` of the hints in
//!   [`TSQL_QUERY_HINTS`] (sqlparser cannot parse `OPTION`, so the clause is checked on the
//!   tokens and set aside before parsing; the server runs the text as sent);
//! * dangerous functions anywhere (see [`is_dangerous_function`]);
//! * names outside the scope's database: MsSql three- and four-part names (cross-database and
//!   linked servers), `#temp` tables (tempdb); SQLite schemas other than `main`;
//! * system catalogs (`sqlite_*`, `pragma_*`, `sys.*`, `INFORMATION_SCHEMA.*`, `sysobjects`, ...)
//!   and SQL Server's metadata functions that read them by name or id (`OBJECT_ID`,
//!   `COL_NAME`, ...): catalog access goes through the `list_tables` / `describe_table` tools;
//! * tables not visible under the rules, and explicit references to denied columns.
//!
//! Denied columns are refused when the query names them. A `q.column` whose qualifier names
//! tables, aliases or CTEs in the `FROM` clauses in scope (at every level, taking all of
//! them) is checked against those tables; a bare name, a longer name or a qualifier the guard
//! cannot resolve is checked against every referenced table, which errs on the side of
//! refusing. A `*` cannot be refused that way; the caller masks result columns by name (see
//! `tools::sql::mask_columns`). Because masking by name only works when result names are the
//! table's own column names, a `*` / `t.*` anywhere but the projection of a plain top-level
//! `SELECT` (or directly under `EXISTS`) is refused when what it expands has denied columns (a
//! nested `*` could be renamed by a derived-table column list, a CTE column list, a set
//! operation or `FOR JSON`), and so is one whose expansion the guard cannot tell; `f(*)` other
//! than `COUNT(*)` counts as nested. Positions (`ORDER BY 3`) and `DISTINCT *` are judged by
//! the `*` they could reach. `NATURAL JOIN` is refused when any referenced table has denied
//! columns, and the names in `USING (…)` are checked against every referenced table.
//!
//! CTE names are excluded from table checks only where the database would resolve them to the
//! CTE: unqualified names, in scope (SQLite: every CTE of a `WITH` is visible in all its
//! bodies; SQL Server: a CTE sees itself and earlier CTEs, and a reference that matches a CTE
//! only case-insensitively is checked as a table too, in case the collation is case-sensitive).
//!
//! Names are matched against the rules so that a collation can only make the guard stricter
//! (see [`AccessRules`]): a name that folds to a denied name as some SQL Server collation may
//! fold it (trailing spaces ignored, full-width letters, the letters `ſ`, `ı` and `İ` and
//! ligatures such as `ﬁ` folded to ASCII; [`fold_name`]) is refused, while an allowed name
//! admits only names that differ from it in ASCII case (and, on SQL Server, trailing spaces).
//! Other look-alike letters and accent-insensitive collations are not emulated, so deny rules
//! on such databases should be backed by server permissions.
//!
//! Unqualified table names are taken to be in the dialect's default schema (`main` for SQLite,
//! `dbo` for SQL Server) when matched against dotted patterns. A login whose default schema is
//! not `dbo` should therefore be restricted with undotted patterns or schema-qualified queries.
//!
//! Size limits: input above [`MAX_SQL_BYTES`], more than [`MAX_OPERATOR_TOKENS`]
//! operator/keyword tokens (left-nested chains like `1+1+1...` or `UNION ... UNION` are built
//! without recursion by the parser but dropped recursively), or parser recursion beyond
//! [`PARSER_RECURSION_LIMIT`] give [`GuardError::TooComplex`]; the parser and the visitor are
//! stack-protected by `sqlparser`'s `recursive-protection` feature, which goes on in a new stack
//! segment when less than [`PARSER_RED_ZONE`] is left. `check` never panics.
//!
//! The guard is one layer: backends still run queries on read-only connections / logins.
//! User-defined functions, views and synonyms are treated as whatever they look like (a
//! function call, a table); what they do inside is the database permissions' business.
//!
//! Requires `sqlparser` with the `visitor` feature.

use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, ForClause, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, InTarget, Join, JoinConstraint, JoinOperator, LimitClause, ObjectName,
    ObjectNamePart, OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, Statement, TableAlias, TableFactor, UnaryOperator, Value, Visit, Visitor,
    WildcardAdditionalOptions,
};
use sqlparser::dialect::{Dialect, SQLiteDialect};

use super::tsql_dialect::TsqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer, Whitespace, Word};

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 256 * 1024;
/// Most operator and keyword tokens accepted; bounds the depth of left-nested expression and
/// set-operation chains, which the parser builds iteratively but which drop recursively.
pub const MAX_OPERATOR_TOKENS: usize = 10_000;
/// `sqlparser` recursion limit (nesting of parentheses, sub-queries, function calls, ...).
pub const PARSER_RECURSION_LIMIT: usize = 100;
/// Stack the parser must have left before it goes a level deeper. Below it, `sqlparser`'s
/// recursion protection (the `recursive` crate, over `stacker`) goes on in a new stack segment.
/// That crate's default, 128 KiB, is less than the parser can take between two of its
/// checkpoints in a debug build: 132 KiB from a table factor into a table function's
/// arguments, measured in gdb on a 1 KB query the noninterference test generated, whose
/// parse overflowed the thread's stack and aborted the process. A release build passed the
/// same test with the default (`cargo test --release --lib a_deep_query`, session 24); the
/// wider margin is for debug builds and frames that grow, and costs nothing until a query is
/// that deep.
pub const PARSER_RED_ZONE: usize = 512 * 1024;
/// Most table references (`FROM a, b JOIN c`, counted wherever they appear) accepted: each is
/// checked against every CTE in scope, so together with [`MAX_CTES`] this bounds the work.
pub const MAX_TABLE_REFERENCES: usize = 10_000;
/// Most CTE definitions accepted in one query.
pub const MAX_CTES: usize = 200;

/// SQL dialect of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlDialect {
    Sqlite,
    MsSql,
}

impl SqlDialect {
    /// Schema that unqualified table names are assumed to live in.
    pub fn default_schema(self) -> &'static str {
        match self {
            SqlDialect::Sqlite => "main",
            SqlDialect::MsSql => "dbo",
        }
    }
}

/// Table and column access rules of one scope. `*` matches any run of characters; a pattern
/// with a dot is matched against `schema.table` (e.g. `dbo.*`, `main.orders`), a pattern
/// without a dot against the bare table name. Empty `allow_tables` means all tables allowed.
/// Deny wins over allow.
///
/// Matching only ever errs towards hiding. A `deny_tables` or `deny_columns` pattern matches
/// a name in any case, and also when both fold to the same name ([`fold_name`]: full-width
/// forms, letters whose capital is ASCII such as `ſ` and `ı`, the dotted capital `İ`,
/// trailing spaces), in case the database's collation compares them so. An `allow_tables` pattern matches only a name
/// that differs from it in the case of ASCII letters at most ([`allow_match`]), which every
/// collation and SQLite take for the same name: `items` does not admit a table named `ıtems`
/// or `Ｉtems`, which some collations take for another table.
///
/// When the schema is unknown (`None`), the schema part of dotted patterns is not compared.
/// Identifiers that themselves contain a dot cannot be expressed in patterns. Invalid rules
/// (see [`AccessRules::validate`]) fail closed: no table is visible and every column is denied.
#[derive(Clone, Debug, Default)]
pub struct AccessRules {
    pub allow_tables: Vec<String>,
    pub deny_tables: Vec<String>,
    /// patterns `table.column` or `schema.table.column`, `*` allowed in each part
    pub deny_columns: Vec<String>,
}

impl AccessRules {
    /// Whether `schema.table` may be queried.
    pub fn table_visible(&self, schema: Option<&str>, table: &str) -> bool {
        if self.validate().is_err() {
            return false;
        }
        if self
            .deny_tables
            .iter()
            .any(|p| table_pattern_matches(p, schema, table, deny_match))
        {
            return false;
        }
        self.allow_tables.is_empty()
            || self
                .allow_tables
                .iter()
                .any(|p| table_pattern_matches(p, schema, table, allow_match))
    }

    /// Whether `column` of `schema.table` is hidden.
    pub fn column_denied(&self, schema: Option<&str>, table: &str, column: &str) -> bool {
        if self.validate().is_err() {
            return true;
        }
        self.deny_columns.iter().any(|p| {
            column_pattern_table_part(p, schema, table).is_some_and(|col| deny_match(col, column))
        })
    }

    /// Whether the rules hide anything at all (an allow list, or a deny rule).
    pub fn restricts(&self) -> bool {
        !self.allow_tables.is_empty()
            || !self.deny_tables.is_empty()
            || !self.deny_columns.is_empty()
    }

    /// Whether some `deny_columns` pattern applies to `schema.table` (it may hide a column).
    pub fn has_denied_columns(&self, schema: Option<&str>, table: &str) -> bool {
        if self.validate().is_err() {
            return true;
        }
        self.deny_columns
            .iter()
            .any(|p| column_pattern_table_part(p, schema, table).is_some())
    }

    /// Config validation: returns an error message naming the bad pattern.
    pub fn validate(&self) -> Result<(), String> {
        let lists: [(&[String], &str, usize, usize, &str); 3] = [
            (
                &self.allow_tables,
                "allow_tables",
                1,
                2,
                "`table` or `schema.table`",
            ),
            (
                &self.deny_tables,
                "deny_tables",
                1,
                2,
                "`table` or `schema.table`",
            ),
            (
                &self.deny_columns,
                "deny_columns",
                2,
                3,
                "`table.column` or `schema.table.column`",
            ),
        ];
        for (patterns, key, min, max, form) in lists {
            for p in patterns {
                if p.trim().is_empty() {
                    return Err(format!("{key}: empty pattern {p:?}"));
                }
                if p.trim() != p {
                    return Err(format!(
                        "{key}: pattern {p:?} has leading or trailing whitespace"
                    ));
                }
                if p.chars().any(char::is_control) {
                    return Err(format!("{key}: pattern {p:?} contains a control character"));
                }
                let parts: Vec<&str> = p.split('.').collect();
                if parts.len() < min || parts.len() > max {
                    return Err(format!("{key}: pattern {p:?} must have the form {form}"));
                }
                if parts.iter().any(|part| part.is_empty()) {
                    return Err(format!(
                        "{key}: pattern {p:?} has an empty part (expected {form})"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A table referenced by a query: unquoted identifiers, normalised as SQL Server compares
/// names (full-width letters folded, trailing spaces dropped; as written on SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

impl fmt::Display for TableRef {
    /// `schema.name`, or `name` without a schema, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What [`check`] learned about an accepted query.
#[derive(Debug, Clone)]
pub struct CheckedQuery {
    /// Tables referenced anywhere, deduplicated case-insensitively; CTE names excluded.
    pub tables: Vec<TableRef>,
    /// The top-level query has an `ORDER BY`.
    pub has_order_by: bool,
    /// The top-level query is one `SELECT` (a `WITH` allowed) whose `ORDER BY` is its last
    /// clause and which has no `TOP`, `OFFSET`, `FETCH` or `FOR`: appending `OFFSET … FETCH`
    /// skips exactly the rows that reading and dropping them would ([`crate::db::Page`]).
    pub pageable_in_sql: bool,
    /// No step of the query can take long on its own: it calls only functions whose cost is
    /// at most linear in their arguments ([`LINEAR_FUNCTIONS`]) and matches no patterns
    /// (`LIKE`, `GLOB`, `REGEXP`, ...), whose cost can be the product of two long values.
    /// Between steps a query can always be interrupted; within one it cannot.
    pub linear_steps: bool,
    /// Which result columns are the read table's own column of that name, when the query
    /// is one `SELECT` from one table (no join, no derived table); `None` otherwise.
    pub plain_columns: Option<PlainColumns>,
    /// T-SQL only: a plain `'…'` string holds a character beyond Latin-1. SQL Server reads
    /// such a literal as `varchar` in the database's code page, where the character may become
    /// `?` and a comparison quietly match nothing; `N'…'` keeps it.
    pub wide_varchar_literal: bool,
    /// A comparison with `NULL` by `=`, `<>`, `<`, … somewhere in the query: never true, so
    /// it quietly matches nothing (`IS NULL` is meant).
    pub null_comparison: bool,
    /// A `NOT IN (SELECT …)` somewhere in the query: once its subquery returns a `NULL`, it
    /// is never true, and the query quietly matches nothing (`NOT EXISTS` is meant).
    pub not_in_subquery: bool,
    /// Positions of the top-level select items that take an `AVG`, when the query is one
    /// `SELECT` without `*` (so positions are result columns). SQL Server's `AVG` of an
    /// integer is an integer, truncated: such a result column typed as an integer is that.
    pub avg_items: Vec<usize>,
    /// T-SQL only: the tables read `FOR SYSTEM_TIME` (a system-versioned table's earlier
    /// rows, which SQL Server reads from its history table), as in `tables`.
    pub system_time: Vec<TableRef>,
}

/// The result columns of a one-table `SELECT` that carry the table's column of the same
/// name unchanged (`id`, `o.id`, `o.id AS id`, `*`), so a row id built from them names the
/// row the values came from. Names compare ignoring case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlainColumns {
    /// A `*` or `t.*` brings every column of the table.
    pub all: bool,
    /// Result names given by a plain column reference (lower case).
    pub plain: Vec<String>,
    /// Result names given by anything else: an expression, or another column renamed.
    pub other: Vec<String>,
}

impl PlainColumns {
    /// Whether result column `name` is the table's column `name`, and nothing else is
    /// named so.
    pub fn is_plain(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        (self.all || self.plain.contains(&name)) && !self.other.contains(&name)
    }
}

/// Why a query was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GuardError {
    #[error("could not parse the SQL: {0}")]
    Parse(String),
    #[error("no SQL statement given")]
    Empty,
    #[error("exactly one statement is allowed, found {0}")]
    MultipleStatements(usize),
    #[error("only read-only SELECT queries are allowed, not {0} statements")]
    NotAQuery(String),
    #[error("SELECT ... INTO creates a table and is not allowed")]
    SelectInto,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    TableDenied(String),
    #[error("{0}")]
    ColumnDenied(String),
    #[error(
        "the query is too large or too deeply nested (at most {MAX_SQL_BYTES} bytes, \
         {MAX_OPERATOR_TOKENS} operators, {PARSER_RECURSION_LIMIT} nesting levels, \
         {MAX_TABLE_REFERENCES} table references and {MAX_CTES} CTEs)"
    )]
    TooComplex,
    #[error("the access rules are invalid: {0}")]
    InvalidRules(String),
}

/// Checks that `sql` is exactly one read-only query and that it touches only visible
/// tables/columns.
pub fn check(
    sql: &str,
    dialect: SqlDialect,
    rules: &AccessRules,
) -> Result<CheckedQuery, GuardError> {
    rules.validate().map_err(GuardError::InvalidRules)?;
    if sql.len() > MAX_SQL_BYTES {
        return Err(GuardError::TooComplex);
    }
    static RED_ZONE: std::sync::Once = std::sync::Once::new();
    RED_ZONE.call_once(|| recursive::set_minimum_stack_size(PARSER_RED_ZONE));
    let (mssql, sqlite) = (TsqlDialect::default(), SQLiteDialect {});
    let d: &dyn Dialect = match dialect {
        SqlDialect::MsSql => &mssql,
        SqlDialect::Sqlite => &sqlite,
    };
    let tokens = Tokenizer::new(d, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|e| GuardError::Parse(e.to_string()))?;
    if tokens.iter().filter(|t| may_nest(&t.token)).count() > MAX_OPERATOR_TOKENS {
        return Err(GuardError::TooComplex);
    }
    let kind = statement_kind(&tokens);
    let tsql = (dialect == SqlDialect::MsSql).then(|| scan_tsql(sql, &tokens));
    let mut tokens = tokens;
    let query_hints = dialect == SqlDialect::MsSql && split_query_hints(&mut tokens)?;
    if dialect == SqlDialect::MsSql {
        read_system_time_forms(&mut tokens);
    }
    let indexed_by = dialect == SqlDialect::Sqlite
        && tokens.iter().any(|t| {
            matches!(&t.token, Token::Word(w)
                if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("indexed"))
        });
    let statements = Parser::new(d)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| match e {
            ParserError::RecursionLimitExceeded => GuardError::TooComplex,
            // A statement of another kind that sqlparser cannot read (`PRAGMA table_info(t)`,
            // `DBCC CHECKDB`) is refused as what it is, not as a syntax error.
            _ if TSQL_STATEMENT_KEYWORDS.contains(&kind.as_str())
                || OTHER_STATEMENT_KEYWORDS.contains(&kind.as_str()) =>
            {
                GuardError::NotAQuery(kind.clone())
            }
            other => {
                let message = parser_message(&other);
                match (dialect == SqlDialect::MsSql)
                    .then(|| tsql_parse_advice(sql))
                    .flatten()
                {
                    Some(advice) => GuardError::Parse(format!("{message}; {advice}")),
                    None => GuardError::Parse(message),
                }
            }
        })?;
    let statement = match statements.as_slice() {
        [] => return Err(GuardError::Empty),
        [one] => one,
        more => return Err(GuardError::MultipleStatements(more.len())),
    };
    let Statement::Query(query) = statement else {
        return Err(GuardError::NotAQuery(kind));
    };
    let mut checker = Checker::new(dialect, rules, query);
    if let ControlFlow::Break(e) = query.visit(&mut checker) {
        return Err(e);
    }
    let wide_varchar_literal = tsql.as_ref().is_some_and(|t| t.wide_varchar_literal);
    if let Some(tsql) = tsql {
        if let Some(msg) = tsql.refused {
            return Err(GuardError::Forbidden(msg));
        }
        if let Some(msg) = tsql.invisible
            && !(rules.deny_tables.is_empty() && rules.deny_columns.is_empty())
        {
            return Err(GuardError::Forbidden(msg));
        }
        checker.column_hazard = checker.column_hazard.or(tsql.column_hazard);
    }
    if indexed_by {
        checker.column_hazard = checker.column_hazard.or(Some(
            "`INDEXED BY`, whose row order can follow a hidden column,".into(),
        ));
    }
    let mut checked = checker.finish(query)?;
    // `OFFSET … FETCH` cannot follow the hints.
    checked.pageable_in_sql &= !query_hints;
    checked.wide_varchar_literal = wide_varchar_literal;
    Ok(checked)
}

/// Functions whose cost is at most linear in their arguments (the rest, such as `instr`,
/// `replace`, `printf` or the JSON functions, may take the product of two long arguments, or
/// build a long value; see [`CheckedQuery::linear_steps`]). Compared in lower case.
const LINEAR_FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "count",
    "count_big",
    "max",
    "min",
    "sum",
    "total",
    "coalesce",
    "ifnull",
    "isnull",
    "iif",
    "nullif",
    "length",
    "len",
    "octet_length",
    "lower",
    "upper",
    "round",
    "typeof",
    "substr",
    "substring",
    "left",
    "right",
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "hex",
    "quote",
    "unicode",
    "char",
    "likely",
    "unlikely",
    "likelihood",
    "sign",
    "ceil",
    "ceiling",
    "floor",
    "trunc",
    "mod",
    "pow",
    "power",
    "sqrt",
    "exp",
    "ln",
    "log",
    "log10",
    "log2",
    "pi",
    "concat",
    "concat_ws",
    "group_concat",
    "string_agg",
    "row_number",
    "rank",
    "dense_rank",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "percent_rank",
    "cume_dist",
    "trim",
    "ltrim",
    "rtrim",
    "getdate",
    "sysdatetime",
    "datepart",
    "datediff",
    "dateadd",
    "year",
    "month",
    "day",
    "convert",
    "try_convert",
    "try_cast",
];

/// Operators whose cost is at most linear in their operands (comparison, arithmetic,
/// logic, concatenation); pattern matches and the rest are not.
fn is_linear_operator(op: &sqlparser::ast::BinaryOperator) -> bool {
    use sqlparser::ast::BinaryOperator as B;
    matches!(
        op,
        B::Plus
            | B::Minus
            | B::Multiply
            | B::Divide
            | B::Modulo
            | B::StringConcat
            | B::Gt
            | B::Lt
            | B::GtEq
            | B::LtEq
            | B::Eq
            | B::NotEq
            | B::Spaceship
            | B::And
            | B::Or
            | B::Xor
            | B::BitwiseOr
            | B::BitwiseAnd
            | B::BitwiseXor
            | B::PGBitwiseShiftLeft
            | B::PGBitwiseShiftRight
    )
}

/// SQLite functions refused anywhere (file and extension access).
const SQLITE_DANGEROUS_FUNCTIONS: &[&str] = &[
    "load_extension",
    "readfile",
    "writefile",
    "edit",
    "fts3_tokenizer",
];

/// SQL Server functions refused anywhere, besides every `xp_*` and `sp_*` name: remote and
/// file access, audit/trace/transaction-log readers, password hash checks, database probing.
const MSSQL_DANGEROUS_FUNCTIONS: &[&str] = &[
    "openquery",
    "openrowset",
    "opendatasource",
    "openxml",
    "fn_get_audit_file",
    "fn_xe_file_target_read_file",
    "fn_trace_gettable",
    "fn_trace_getinfo",
    "fn_trace_geteventinfo",
    "fn_trace_getfilterinfo",
    "fn_dblog",
    "fn_dump_dblog",
    "fn_full_dblog",
    "fn_virtualfilestats",
    "fn_get_sql",
    "fn_servershareddrives",
    "fn_virtualservernodes",
    "pwdcompare",
    "pwdencrypt",
    "loginproperty",
    "certprivatekey",
    "has_dbaccess",
];

/// SQL Server metadata functions that read the catalog by object name or id: the existence,
/// columns and definitions of objects the scope hides (`COL_NAME(OBJECT_ID('secrets'), 1)`,
/// `OBJECT_DEFINITION(…)`) would leak through them, as through `sys.*` (refused too). Schema
/// questions go to `list_tables` and `describe_table`, which show only what the scope shows.
const MSSQL_CATALOG_FUNCTIONS: &[&str] = &[
    "object_id",
    "object_name",
    "object_schema_name",
    "object_definition",
    "objectproperty",
    "objectpropertyex",
    "col_name",
    "col_length",
    "columnproperty",
    "index_col",
    "indexproperty",
    "indexkey_property",
    "stats_date",
    "has_perms_by_name",
    "permissions",
    "ident_current",
    "ident_seed",
    "ident_incr",
    "schema_id",
    "schema_name",
];

/// Whether a function (last part of its name) is refused anywhere in a query. Both dialects'
/// lists apply to both dialects.
pub fn is_dangerous_function(name: &str) -> bool {
    let n = name.to_lowercase();
    n.starts_with("xp_")
        || n.starts_with("sp_")
        || SQLITE_DANGEROUS_FUNCTIONS.contains(&n.as_str())
        || MSSQL_DANGEROUS_FUNCTIONS.contains(&n.as_str())
}

/// SQL Server table hints that do not take locks beyond a plain read.
const ALLOWED_TABLE_HINTS: &[&str] = &[
    "nolock",
    "readuncommitted",
    "readcommitted",
    "readcommittedlock",
    "readpast",
    "nowait",
    "noexpand",
    "forceseek",
    "forcescan",
    "index",
];

/// SQL Server system databases: a three-part name into one is a catalog access.
const MSSQL_SYSTEM_DATABASES: &[&str] =
    &["master", "msdb", "model", "tempdb", "mssqlsystemresource"];

/// SQL Server compatibility views, resolvable without the `sys.` prefix.
const MSSQL_COMPAT_VIEWS: &[&str] = &[
    "sysaltfiles",
    "syscacheobjects",
    "syscharsets",
    "syscolumns",
    "syscomments",
    "sysconfigures",
    "sysconstraints",
    "syscurconfigs",
    "sysdatabases",
    "sysdepends",
    "sysdevices",
    "sysfilegroups",
    "sysfiles",
    "sysforeignkeys",
    "sysfulltextcatalogs",
    "sysindexes",
    "sysindexkeys",
    "syslanguages",
    "syslockinfo",
    "syslogins",
    "sysmembers",
    "sysmessages",
    "sysobjects",
    "sysoledbusers",
    "sysopentapes",
    "sysperfinfo",
    "syspermissions",
    "sysprocesses",
    "sysprotects",
    "sysreferences",
    "sysremotelogins",
    "sysservers",
    "systypes",
    "sysusers",
    "sysxlogins",
];

/// SQLite eponymous virtual tables that expose internals or the file system.
const SQLITE_INTERNAL_TABLES: &[&str] = &["dbstat", "fsdir", "zipfile"];

/// SQLite table-valued functions allowed in `FROM`.
const SQLITE_ALLOWED_TABLE_FUNCTIONS: &[&str] = &["json_each", "json_tree"];

/// SQL Server's built-in rowset functions allowed in `FROM` and `APPLY` when called by their
/// bare name (a schema-qualified name is a user's function): they read only their arguments,
/// which are checked like any expression. `OPENJSON` (its own table factor) is allowed too.
const MSSQL_ALLOWED_TABLE_FUNCTIONS: &[&str] = &["string_split", "generate_series"];

fn catalog_message(display: &str) -> String {
    format!(
        "`{display}` is a system catalog object and cannot be queried; use the list_tables and \
         describe_table tools to explore the schema"
    )
}

/// Tokens that can add a level to a left-nested chain: operators and keywords. Literals,
/// plain identifiers, commas and parentheses cannot.
fn may_nest(token: &Token) -> bool {
    match token {
        Token::Word(w) => w.quote_style.is_none() && w.keyword != Keyword::NoKeyword,
        Token::EOF
        | Token::Whitespace(_)
        | Token::Comma
        | Token::LParen
        | Token::RParen
        | Token::SemiColon
        | Token::Number(..)
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::NationalStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => false,
        _ => true,
    }
}

/// The statement kind for messages: its first word, upper-cased.
fn statement_kind(tokens: &[TokenWithSpan]) -> String {
    tokens
        .iter()
        .find(|t| !matches!(t.token, Token::Whitespace(_)))
        .map(|t| match &t.token {
            Token::Word(w) => w.value.to_uppercase(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

/// T-SQL reserved keywords that begin a statement of their own and have no place inside one
/// query. T-SQL needs no `;` between statements, and sqlparser accepts most of these as
/// aliases, so `SELECT a FROM t SHUTDOWN` parses as one query where SQL Server runs two.
/// Being reserved, none of them can be an unquoted name on SQL Server either. `MERGE` and
/// `USE` are left out: they also occur in query and join hints (`OPTION (MERGE JOIN)`,
/// `USE HINT`), and neither is a statement without more words after it, which sqlparser would
/// not take as part of the query.
const TSQL_STATEMENT_KEYWORDS: &[&str] = &[
    "ALTER",
    "BACKUP",
    "BEGIN",
    "BREAK",
    "BULK",
    "CHECKPOINT",
    "CLOSE",
    "COMMIT",
    "CONTINUE",
    "CREATE",
    "DBCC",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DENY",
    "DISK",
    "DROP",
    "DUMP",
    "EXEC",
    "EXECUTE",
    "EXIT",
    "GOTO",
    "GRANT",
    "IF",
    "INSERT",
    "KILL",
    "LINENO",
    "LOAD",
    "OPEN",
    "PRINT",
    "PROC",
    "PROCEDURE",
    "RAISERROR",
    "READTEXT",
    "RECONFIGURE",
    "RESTORE",
    "RETURN",
    "REVERT",
    "REVOKE",
    "ROLLBACK",
    "SAVE",
    "SET",
    "SETUSER",
    "SHUTDOWN",
    "TRAN",
    "TRANSACTION",
    "TRUNCATE",
    "UPDATE",
    "UPDATETEXT",
    "WAITFOR",
    "WHILE",
    "WRITETEXT",
];

/// First words of statements that are not queries, besides [`TSQL_STATEMENT_KEYWORDS`]
/// (SQLite's, and other dialects' a model may write by habit): a text starting with one that
/// sqlparser cannot parse is refused as not a query.
const OTHER_STATEMENT_KEYWORDS: &[&str] = &[
    "ABORT",
    "ANALYZE",
    "ATTACH",
    "CALL",
    "COPY",
    "DETACH",
    "EXPLAIN",
    "GO",
    "LOCK",
    "MERGE",
    "PRAGMA",
    "REINDEX",
    "RELEASE",
    "RENAME",
    "REPLACE",
    "SAVEPOINT",
    "SHOW",
    "START",
    "UNLOCK",
    "UPSERT",
    "USE",
    "VACUUM",
];

/// Table hints T-SQL still takes without `WITH` after a table (`FROM t HOLDLOCK`), which
/// sqlparser reads as an alias; locking hints are refused (see `ALLOWED_TABLE_HINTS`).
const TSQL_BARE_LOCK_HINTS: &[&str] = &[
    "HOLDLOCK",
    "UPDLOCK",
    "XLOCK",
    "TABLOCK",
    "TABLOCKX",
    "PAGLOCK",
    "ROWLOCK",
    "SERIALIZABLE",
    "REPEATABLEREAD",
];

/// XML data type methods: their XQuery text can read any column of the query by name
/// (`sql:column("salary")`), out of the guard's sight.
const TSQL_XML_METHODS: &[&str] = &["value", "query", "exist", "nodes", "modify"];

/// What the tokens of a T-SQL text show that its AST does not: a statement keyword (refused),
/// `X'..'` (not T-SQL, which reads it as column `X` aliased `'..'`; refused), and ways to read
/// a column without naming it, refused later only where a hidden column could be read: XML
/// methods, `$IDENTITY`-style pseudo-columns and index hints (whose row order can reveal a
/// hidden column).
struct TsqlTokens {
    refused: Option<String>,
    column_hazard: Option<String>,
    /// A name with a character a collation may ignore ([`is_invisible`]): refused where deny
    /// rules could be dodged with it, allowed elsewhere (Persian names hold U+200C).
    invisible: Option<String>,
    /// See [`CheckedQuery::wide_varchar_literal`].
    wide_varchar_literal: bool,
}

fn scan_tsql(sql: &str, tokens: &[TokenWithSpan]) -> TsqlTokens {
    // The character a token starts with (sqlparser reads both `0x41` and `X'41'` as one kind
    // of token). Locations are (line, column) in characters; the text is indexed once, on
    // the first hex literal, so that many of them cost no more than one each.
    let mut indexed: Option<(Vec<char>, Vec<usize>)> = None;
    let mut first_char = |t: &TokenWithSpan| {
        let (chars, line_starts) = indexed.get_or_insert_with(|| {
            let chars: Vec<char> = sql.chars().collect();
            let mut starts = vec![0];
            starts.extend(
                chars
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == '\n')
                    .map(|(i, _)| i + 1),
            );
            (chars, starts)
        });
        let at = t.span.start;
        let line = line_starts.get((at.line as usize).checked_sub(1)?)?;
        chars
            .get(line + (at.column as usize).checked_sub(1)?)
            .copied()
    };
    let mut out = TsqlTokens {
        refused: None,
        column_hazard: None,
        invisible: None,
        wide_varchar_literal: false,
    };
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    // sqlparser ends a `--` comment at a line feed only; text after a lone carriage return
    // inside one is out of its sight, whatever SQL Server makes of it.
    let hidden_line = tokens.iter().any(|t| {
        matches!(&t.token, Token::Whitespace(Whitespace::SingleLineComment { comment, .. })
            if comment.trim_end_matches(['\r', '\n']).contains('\r'))
    });
    if hidden_line {
        out.refused = Some("a `--` comment with a carriage return inside it is not allowed".into());
    }
    for (i, t) in significant.iter().enumerate() {
        if let Token::Word(w) = &t.token {
            if out.invisible.is_none()
                && let Some(c) = w.value.chars().find(|c| is_invisible(*c))
            {
                out.invisible = Some(format!(
                    "the name `{}` has an invisible character (U+{:04X}) in it, which SQL Server \
                     may ignore when it compares names; write the name without it",
                    w.value.escape_default(),
                    c as u32
                ));
            }
            let method = i > 0
                && matches!(significant[i - 1].token, Token::Period)
                && significant
                    .get(i + 1)
                    .is_some_and(|n| matches!(n.token, Token::LParen))
                && TSQL_XML_METHODS.contains(&w.value.to_lowercase().as_str());
            if method && out.column_hazard.is_none() {
                out.column_hazard = Some(format!(
                    "the XML method `.{}()`, whose XQuery can read columns by name (sql:column),",
                    w.value
                ));
            }
            // `FORCESEEK(ix(cols))` names an index without the word INDEX.
            if w.value.eq_ignore_ascii_case("forceseek")
                && significant
                    .get(i + 1)
                    .is_some_and(|n| matches!(n.token, Token::LParen))
                && out.column_hazard.is_none()
            {
                out.column_hazard = Some(
                    "a FORCESEEK index hint, whose row order can follow a hidden column,".into(),
                );
            }
        }
        match &t.token {
            Token::Word(w) if w.quote_style.is_none() => {
                let upper = w.value.to_uppercase();
                if out.refused.is_none() && TSQL_BARE_LOCK_HINTS.contains(&upper.as_str()) {
                    out.refused = Some(format!(
                        "`{}` is a locking hint, not allowed (write [{}] if it is a name)",
                        w.value, w.value
                    ));
                }
                if out.refused.is_none() && TSQL_STATEMENT_KEYWORDS.contains(&upper.as_str()) {
                    out.refused = Some(format!(
                        "`{}` is a T-SQL statement keyword, not allowed inside a query (write [{}] if it is a name)",
                        w.value, w.value
                    ));
                }
                if (upper == "IDENTITYCOL" || upper == "ROWGUIDCOL") && out.column_hazard.is_none()
                {
                    out.column_hazard = Some(format!(
                        "`{}`, which reads the identity or row GUID column without naming it,",
                        w.value
                    ));
                }
                if upper == "INDEX" && out.column_hazard.is_none() {
                    out.column_hazard =
                        Some("an index hint, whose row order can follow a hidden column,".into());
                }
            }
            Token::SingleQuotedString(text) if text.chars().any(|c| u32::from(c) > 0xFF) => {
                out.wide_varchar_literal = true;
            }
            Token::HexStringLiteral(_)
                if out.refused.is_none() && matches!(first_char(t), Some('x' | 'X')) =>
            {
                out.refused = Some(
                    "`X'..'` is not a T-SQL literal (SQL Server reads it as column X); write 0x.. for binary"
                        .into(),
                );
            }
            Token::Placeholder(p)
                if p.starts_with('$')
                    && p[1..].starts_with(|c: char| c.is_alphabetic() || c == '_')
                    && out.column_hazard.is_none() =>
            {
                out.column_hazard = Some(format!(
                    "the pseudo-column `{p}`, which reads a column without naming it,"
                ));
            }
            _ => {}
        }
    }
    out
}

/// What to write instead, when a T-SQL text the parser could not read uses a construct
/// SQL Server knows and the guard's parser does not. Read again from the text: this runs only
/// after a parse error.
fn tsql_parse_advice(sql: &str) -> Option<String> {
    let tokens = Tokenizer::new(&TsqlDialect::default(), sql)
        .tokenize()
        .ok()?;
    let words: Vec<String> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_uppercase(),
            _ => String::new(),
        })
        .collect();
    let has = |seq: &[&str]| words.windows(seq.len()).any(|w| w.iter().eq(seq.iter()));
    if has(&["NEXT", "VALUE", "FOR"]) {
        return Some(
            "`NEXT VALUE FOR` is not allowed: it takes a value from a sequence, which changes \
             the sequence even when the transaction is rolled back"
                .into(),
        );
    }
    if let Some(hint) = ["HASH", "MERGE", "LOOP", "REMOTE"]
        .into_iter()
        .find(|h| has(&[h, "JOIN"]) && !has(&["OPTION"]))
    {
        return Some(format!(
            "join hints such as `INNER {hint} JOIN` are not supported; write `INNER JOIN` (or \
             `LEFT JOIN`, ...), and end the query with `OPTION ({hint} JOIN)` if you need the hint"
        ));
    }
    None
}

/// Query hints a T-SQL query may end with (`OPTION (MAXRECURSION 1000)`), word by word;
/// [`HINT_NUMBER`] stands for a whole number. They choose how the server runs the query, never what it reads,
/// and none takes a lock or names an index. The rest (`TABLE HINT`, `USE PLAN`,
/// `OPTIMIZE FOR (@x …)`, `QUERYTRACEON`, …) are refused by name.
const HINT_NUMBER: &str = "n";
const TSQL_QUERY_HINTS: &[&[&str]] = &[
    &["RECOMPILE"],
    &["MAXRECURSION", "n"],
    &["MAXDOP", "n"],
    &["FAST", "n"],
    &["OPTIMIZE", "FOR", "UNKNOWN"],
    &["FORCE", "ORDER"],
    &["KEEP", "PLAN"],
    &["KEEPFIXED", "PLAN"],
    &["ROBUST", "PLAN"],
    &["EXPAND", "VIEWS"],
    &["HASH", "GROUP"],
    &["ORDER", "GROUP"],
    &["CONCAT", "UNION"],
    &["HASH", "UNION"],
    &["MERGE", "UNION"],
    &["LOOP", "JOIN"],
    &["MERGE", "JOIN"],
    &["HASH", "JOIN"],
];

/// Splits a trailing `OPTION (…)` clause of query hints off a T-SQL text's tokens, which
/// sqlparser cannot parse: `Ok(true)` when there was one and every hint in it is one of
/// [`TSQL_QUERY_HINTS`] (its tokens are then removed, so the parser sees the query alone; the
/// server still runs the text as sent), `Ok(false)` when there was none, and an error naming
/// the first hint that is not allowed, or an `OPTION` anywhere but at the end (a reserved word
/// in T-SQL, it cannot be a name there).
fn split_query_hints(tokens: &mut Vec<TokenWithSpan>) -> Result<bool, GuardError> {
    let found = trailing_query_hints(tokens)?;
    if let Some((from, to)) = found {
        tokens.drain(from..=to);
    }
    let misplaced = tokens.iter().any(|t| {
        matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::OPTION)
    });
    if misplaced {
        return Err(GuardError::Forbidden(
            "`OPTION (...)` query hints must come once, at the very end of the query (after \
             `ORDER BY` and `FOR`)"
                .into(),
        ));
    }
    Ok(found.is_some())
}

/// T-SQL's `FOR SYSTEM_TIME` forms other than `AS OF <time>`, the only one sqlparser reads:
/// `ALL`, `FROM <start> TO <end>`, `BETWEEN <start> AND <end>` and `CONTAINED IN (<start>,
/// <end>)`. Each becomes, in the tokens the guard parses (SQL Server runs the text as sent),
/// an `AS OF` whose expression holds the same times (`<start> AND <end>`, `(<start>, <end>)`,
/// `NULL` for `ALL`): the table is then read as a versioned one (its history's visibility is
/// checked where the catalog is known), and every expression of the clause is checked as any
/// expression is. Only keywords are replaced, and nothing is dropped: what does not read as
/// one of the forms is left for the parser to refuse.
fn read_system_time_forms(tokens: &mut Vec<TokenWithSpan>) {
    fn is(t: &Token, keyword: &str) -> bool {
        matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
    }
    fn next(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
        (from..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
    }
    fn word(keyword: Keyword, text: &str, span: Span) -> TokenWithSpan {
        TokenWithSpan {
            token: Token::Word(Word {
                value: text.to_string(),
                quote_style: None,
                keyword,
            }),
            span,
        }
    }
    let mut i = 0;
    while i < tokens.len() {
        let Some(j) = next(tokens, i + 1)
            .filter(|&j| is(&tokens[i].token, "for") && is(&tokens[j].token, "system_time"))
        else {
            i += 1;
            continue;
        };
        let Some(k) = next(tokens, j + 1) else {
            break;
        };
        let span = tokens[k].span;
        let space = TokenWithSpan {
            token: Token::Whitespace(Whitespace::Space),
            span,
        };
        let mut as_of = vec![
            word(Keyword::AS, "AS", span),
            space.clone(),
            word(Keyword::OF, "OF", span),
            space,
        ];
        let form = &tokens[k].token;
        if is(form, "all") {
            as_of.push(word(Keyword::NULL, "NULL", span));
            tokens.splice(k..=k, as_of);
        } else if is(form, "between") {
            tokens.splice(k..=k, as_of);
        } else if is(form, "from") {
            // Its `TO`: the first outside parentheses.
            let mut depth = 0usize;
            for t in &mut tokens[k + 1..] {
                match &t.token {
                    Token::LParen => depth += 1,
                    Token::RParen if depth == 0 => break,
                    Token::RParen => depth -= 1,
                    w if depth == 0 && is(w, "to") => {
                        *t = word(Keyword::AND, "AND", t.span);
                        break;
                    }
                    _ => {}
                }
            }
            tokens.splice(k..=k, as_of);
        } else if is(form, "contained")
            && let Some(l) = next(tokens, k + 1).filter(|&l| is(&tokens[l].token, "in"))
        {
            tokens.splice(k..=l, as_of);
        }
        i = j + 1;
    }
}

/// The token range of a trailing `OPTION (…)` clause whose hints are all allowed.
fn trailing_query_hints(tokens: &[TokenWithSpan]) -> Result<Option<(usize, usize)>, GuardError> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let mut end = significant.len();
    if end > 0 && matches!(tokens[significant[end - 1]].token, Token::SemiColon) {
        end -= 1;
    }
    let Some(close) = end.checked_sub(1) else {
        return Ok(None);
    };
    if !matches!(tokens[significant[close]].token, Token::RParen) {
        return Ok(None);
    }
    // The clause's `(`: the one that matches the last `)`.
    let mut depth = 0usize;
    let mut open = None;
    for k in (0..close).rev() {
        match tokens[significant[k]].token {
            Token::RParen => depth += 1,
            Token::LParen if depth == 0 => {
                open = Some(k);
                break;
            }
            Token::LParen => depth -= 1,
            _ => {}
        }
    }
    let Some(open) = open else {
        return Ok(None);
    };
    let is_option = open.checked_sub(1).is_some_and(|k| {
        matches!(&tokens[significant[k]].token, Token::Word(w)
            if w.quote_style.is_none() && w.keyword == Keyword::OPTION)
    });
    // Something must come before it, and not end a statement.
    let after_query = open
        .checked_sub(2)
        .is_some_and(|k| !matches!(tokens[significant[k]].token, Token::SemiColon));
    if !is_option || !after_query {
        return Ok(None);
    }
    // The hints, split at the commas outside any parentheses of their own.
    let mut hints: Vec<Vec<usize>> = vec![Vec::new()];
    let mut depth = 0usize;
    for &i in &significant[open + 1..close] {
        match tokens[i].token {
            Token::Comma if depth == 0 => {
                hints.push(Vec::new());
                continue;
            }
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if let Some(hint) = hints.last_mut() {
            hint.push(i);
        }
    }
    for hint in &hints {
        let allowed = TSQL_QUERY_HINTS.iter().any(|pattern| {
            pattern.len() == hint.len()
                && pattern
                    .iter()
                    .zip(hint)
                    .all(|(&want, &i)| match &tokens[i].token {
                        Token::Number(n, false) if want == HINT_NUMBER => {
                            n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit())
                        }
                        Token::Word(w) if want != HINT_NUMBER => {
                            w.quote_style.is_none() && w.value.eq_ignore_ascii_case(want)
                        }
                        _ => false,
                    })
        });
        if !allowed {
            let text: Vec<String> = hint.iter().map(|&i| tokens[i].token.to_string()).collect();
            if text.is_empty() {
                return Err(GuardError::Forbidden(
                    "`OPTION (...)` names no hint between its commas".into(),
                ));
            }
            let allowed: Vec<String> = TSQL_QUERY_HINTS.iter().map(|h| h.join(" ")).collect();
            return Err(GuardError::Forbidden(format!(
                "the query hint `{}` is not allowed; the hints allowed in OPTION (...) are {}",
                text.join(" "),
                allowed.join(", ")
            )));
        }
    }
    Ok(Some((significant[open - 1], significant[close])))
}

/// See [`CheckedQuery::pageable_in_sql`]. A `TOP` conflicts with `OFFSET` on SQL Server, and
/// the clauses after `ORDER BY` (`OFFSET`, `FETCH`, `FOR XML`, locking, settings) would end up
/// on the wrong side of it; a set operation's arms are left alone for the same reason.
fn pageable_in_sql(q: &Query) -> bool {
    let ordered = q.order_by.as_ref().is_some_and(|o| {
        matches!(o.kind, OrderByKind::Expressions(ref e) if !e.is_empty())
            && o.interpolate.is_none()
    });
    let plain_select =
        matches!(q.body.as_ref(), SetExpr::Select(s) if s.top.is_none() && s.into.is_none());
    ordered
        && plain_select
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.for_clause.is_none()
        && q.locks.is_empty()
        && q.settings.is_none()
        && q.format_clause.is_none()
        && q.pipe_operators.is_empty()
}

/// See [`CheckedQuery::avg_items`].
fn avg_items(q: &Query) -> Vec<usize> {
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in select.projection.iter().enumerate() {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return Vec::new(),
        };
        let takes_avg = sqlparser::ast::visit_expressions(expr, |e| match e {
            Expr::Function(f)
                if f.name
                    .0
                    .last()
                    .and_then(ObjectNamePart::as_ident)
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("avg")) =>
            {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        });
        if takes_avg.is_break() {
            out.push(i);
        }
    }
    out
}

/// See [`CheckedQuery::plain_columns`].
fn plain_columns(q: &Query) -> Option<PlainColumns> {
    // The one table might be a CTE that renames another table's columns.
    if q.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    match select.from.as_slice() {
        [one] if one.joins.is_empty() && matches!(one.relation, TableFactor::Table { .. }) => {}
        _ => return None,
    }
    let last_part = |e: &Expr| match e {
        Expr::Identifier(i) => Some(i.value.to_lowercase()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_lowercase()),
        _ => None,
    };
    let mut out = PlainColumns::default();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => out.all = true,
            // An unnamed expression is named by the database after its text, never a bare
            // column name; nothing to record for it.
            SelectItem::UnnamedExpr(e) => {
                if let Some(name) = last_part(e) {
                    out.plain.push(name);
                }
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let name = alias.value.to_lowercase();
                if last_part(expr).as_deref() == Some(name.as_str()) {
                    out.plain.push(name);
                } else {
                    out.other.push(name);
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

fn parser_message(e: &ParserError) -> String {
    match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => "recursion limit exceeded".to_string(),
    }
}

fn addr<T>(x: &T) -> usize {
    x as *const T as usize
}

/// A name as a case-insensitive SQL Server collation may compare it, beyond case: trailing
/// spaces dropped (SQL Server always ignores them), full-width forms as ASCII (default
/// collations are width-insensitive), a letter whose capital is ASCII (`ſ` → `S`,
/// `ı` → `I`, `ﬁ` → `FI`) as that ASCII, lower-cased, and `İ` (dotted capital I, which a
/// Turkish collation pairs with `i`) as `i`, in case a collation compares them so. Letters
/// whose small letter is ASCII (`K`, the Kelvin sign) or another letter's (`Å`, the
/// Ångström sign) need no folding here: the rules compare names in Unicode lower case.
/// Accent-insensitive collations are not emulated. The guard only ever hides more for it
/// ([`deny_match`]); it never admits a name for it ([`allow_match`]).
pub fn fold_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{FF01}'..='\u{FF5E}' => {
                out.push(char::from_u32(c as u32 - 0xFEE0).unwrap_or(c));
            }
            '\u{3000}' => out.push(' '),
            // Its capital is itself and its small letter `i` with a combining dot, so neither
            // the arm below nor lower-casing brings it to `i`.
            '\u{130}' => out.push('i'),
            c if !c.is_ascii() && c.to_uppercase().all(|u| u.is_ascii()) => {
                out.extend(c.to_uppercase().map(|u| u.to_ascii_lowercase()));
            }
            c => out.push(c),
        }
    }
    out.truncate(out.trim_end_matches(' ').len());
    out
}

/// `*` matches any run of characters; case-insensitive; iterative (no backtracking blow-up).
fn glob_match(pattern: &str, text: &str) -> bool {
    glob_chars(&pattern.to_lowercase(), &text.to_lowercase())
}

/// Whether a name matches a `deny_*` pattern part: in any case ([`glob_match`]), or once
/// folded ([`fold_name`]) as some collations compare names. Errs towards a match.
fn deny_match(pattern: &str, text: &str) -> bool {
    if glob_match(pattern, text) {
        return true;
    }
    let text = fold_name(text);
    glob_match(pattern, &text) || glob_match(&fold_name(pattern), &text)
}

/// Whether a name matches an `allow_tables` pattern part: ASCII letters in any case, every
/// other character exactly as written. Errs towards no match: a letter that only some
/// collations equate with another (`ı` and `i`, `ſ` and `s`, `K` (Kelvin) and `k`, `é`
/// and `É` on SQLite) does not admit a table the operator did not name.
fn allow_match(pattern: &str, text: &str) -> bool {
    glob_chars(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

/// [`glob_match`] on names already brought to one case.
fn glob_chars(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// Whether a table pattern matches `schema.table`, each part compared by `matches`
/// ([`allow_match`] or [`deny_match`]).
fn table_pattern_matches(
    pattern: &str,
    schema: Option<&str>,
    table: &str,
    matches: fn(&str, &str) -> bool,
) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    match parts.as_slice() {
        [t] => matches(t, table),
        [s, t] => schema.is_none_or(|sc| matches(s, sc)) && matches(t, table),
        _ => false,
    }
}

/// The column part of a `deny_columns` pattern if its table (and schema) parts match
/// ([`deny_match`]).
fn column_pattern_table_part<'p>(
    pattern: &'p str,
    schema: Option<&str>,
    table: &str,
) -> Option<&'p str> {
    let parts: Vec<&'p str> = pattern.split('.').collect();
    match parts.as_slice() {
        [t, c] if deny_match(t, table) => Some(c),
        [s, t, c] if schema.is_none_or(|sc| deny_match(s, sc)) && deny_match(t, table) => Some(c),
        _ => None,
    }
}

/// A relation's `(schema, table)` as written ([`Checker::written_table`]).
type WrittenTable = (Option<String>, String);

/// A relation's name as messages show it: `schema.table`, or `table`.
fn shown((schema, table): &WrittenTable) -> String {
    match schema {
        Some(s) => format!("{s}.{table}"),
        None => table.clone(),
    }
}

/// A relation of a `FROM` clause, as a qualifier may name it: the names it answers to (its
/// alias, and a table's own name), the tables it stands for by name (none for a derived
/// table, whose projection is checked where it stands), and whether the guard cannot tell
/// (a `PIVOT`, a function, …).
struct FromRelation {
    names: Vec<String>,
    tables: Vec<WrittenTable>,
    unknown: bool,
}

/// See [`Checker::nested_wildcards`]: what the `*` is, and the relations it expands by name
/// (`None`: the guard cannot tell, so it counts as expanding every table the query reads).
struct NestedStar {
    what: String,
    expands: Option<Vec<WrittenTable>>,
}

/// CTE names of one `WITH`, with the address of each CTE's query.
struct CteScope {
    names: Vec<(String, usize)>,
    /// Each name as SQL Server compares it under a case- and width-insensitive collation
    /// ([`Checker::collated`]), worked out once.
    collated: Vec<String>,
    /// How many of `names` are in scope right now (SQL Server: no forward references).
    visible: usize,
}

/// See [`Checker::three_part_calls`].
struct ThreePartCall {
    /// The first part, as [`Checker::relation_names`] holds names.
    first: String,
    /// The whole name as written.
    name: String,
    /// Its last two parts as written.
    column_method: String,
}

struct Checker<'a> {
    dialect: SqlDialect,
    rules: &'a AccessRules,
    /// SQL Server: the parts before the last of dotted names (`location` in `location.Lat`,
    /// `location.STAsText()`). A part that names no table, alias or CTE of the query is a
    /// column whose CLR property or method is read, so [`Checker::finish`] checks it as one.
    qualifiers: Vec<String>,
    /// SQL Server: functions called by three-part names (`a.b.f()`), with their first part,
    /// refused at [`Checker::finish`] with the reason that fits: a method called through a
    /// table's alias (`s.location.STDistance(…)`), or a function in another database.
    three_part_calls: Vec<ThreePartCall>,
    /// Lower-cased names of every table, alias and CTE the query mentions.
    relation_names: HashSet<String>,
    root: usize,
    /// The root query is a plain SELECT whose result names are the source column names.
    root_names_columns: bool,
    /// The top-level query ends with `FOR XML`/`FOR JSON`/`FOR BROWSE`.
    root_for_clause: bool,
    query_stack: Vec<usize>,
    scopes: Vec<CteScope>,
    /// Queries directly under `EXISTS`: their projection is never returned.
    exists_queries: HashSet<usize>,
    /// Expressions whose identifiers are not column references (table hints).
    quiet_exprs: HashSet<usize>,
    quiet_depth: usize,
    /// Object names visited as relations that are not tables (allowed table functions).
    not_tables: HashSet<usize>,
    tables: Vec<TableRef>,
    /// Object names of tables read `FOR SYSTEM_TIME`, and those tables.
    versioned_names: HashSet<usize>,
    system_time: Vec<TableRef>,
    /// `(schema, table)` of each entry of `tables` as written (less trailing spaces on SQL
    /// Server), as matched against the rules.
    normalised_tables: Vec<(Option<String>, String)>,
    /// Folded `(schema, table)` keys of `tables`, for deduplication.
    seen_tables: HashSet<(String, String)>,
    idents: Vec<String>,
    /// `q.column` references whose qualifier names only relations the guard could resolve:
    /// the column as written, and the tables (by name) it could belong to. They are checked
    /// against those tables alone; any other reference goes to `idents`.
    qualified_refs: Vec<(String, Vec<WrittenTable>)>,
    /// The `FROM` relations of each `SELECT` being visited, outermost first; a query's scopes
    /// stay until the query ends, so its `ORDER BY` still sees them.
    from_scopes: Vec<Vec<FromRelation>>,
    /// `from_scopes.len()` when each query being visited began.
    from_marks: Vec<usize>,
    /// Each `*` whose result columns could be renamed (in a subquery, CTE or set operation,
    /// inside an expression or a function's arguments, SQLite's `IN t`), with what it expands.
    nested_wildcards: Vec<NestedStar>,
    /// Something that can read a column without naming it (an XML method, a pseudo-column
    /// such as `$IDENTITY` or SQLite's `rowid`, an index hint): refused when a referenced
    /// table has hidden columns.
    column_hazard: Option<String>,
    natural_join: bool,
    /// `SELECT DISTINCT *` at the top, with what its `*`s expand: rows that differ only in a
    /// hidden column stay apart, so how many come back tells whether their hidden values are
    /// equal.
    distinct_wildcards: Vec<NestedStar>,
    /// `ORDER BY 3` / `GROUP BY 3` over a projection with a `*`, with what the `*`s expand:
    /// a position can name a hidden column without spelling it. (Over a projection without
    /// one, a position names an expression whose columns are checked by name.)
    positional: Vec<NestedStar>,
    /// Table references and CTE definitions seen ([`MAX_TABLE_REFERENCES`], [`MAX_CTES`]).
    relations: usize,
    ctes: usize,
    /// Something one step of which may take long ([`CheckedQuery::linear_steps`]).
    slow_step: Option<String>,
    /// A comparison with `NULL` by `=`, `<>`, `<`, …, which is never true.
    null_comparison: bool,
    /// A `NOT IN (SELECT …)`, which matches nothing once the subquery returns a `NULL`.
    not_in_subquery: bool,
}

/// A number used as a column position: bare, or as SQLite still reads it, behind unary `+`,
/// parentheses, `COLLATE`, or `likely()` / `unlikely()` / `likelihood()` (SQLite's
/// `resolveOrderGroupBy` looks through all of these).
fn is_position(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        }
        | Expr::Nested(expr)
        | Expr::Collate { expr, .. } => is_position(expr),
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            matches!(name.as_str(), "likely" | "unlikely" | "likelihood")
                && matches!(&f.args, FunctionArguments::List(l)
                    if l.args.first().is_some_and(|a| matches!(a,
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if is_position(e))))
        }
        _ => false,
    }
}

/// A character a collation may give no weight when it compares names: the Unicode
/// default-ignorable code points (soft hyphen, zero-width and bidirectional marks, variation
/// selectors, tags, …) and control characters. `[sec\u{AD}rets]` could then name `secrets`
/// while matching no rule.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}'..='\u{1160}' | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

type Flow = ControlFlow<GuardError>;

/// A bare `NULL` literal (parenthesised or not).
fn is_null(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => matches!(v.value, Value::Null),
        Expr::Nested(inner) => is_null(inner),
        _ => false,
    }
}

fn forbid(msg: impl Into<String>) -> Flow {
    ControlFlow::Break(GuardError::Forbidden(msg.into()))
}

impl<'a> Checker<'a> {
    fn new(dialect: SqlDialect, rules: &'a AccessRules, root: &Query) -> Self {
        Checker {
            dialect,
            rules,
            qualifiers: Vec::new(),
            three_part_calls: Vec::new(),
            relation_names: HashSet::new(),
            root: addr(root),
            root_names_columns: matches!(*root.body, SetExpr::Select(_))
                && root.for_clause.is_none(),
            root_for_clause: root.for_clause.is_some(),
            query_stack: Vec::new(),
            scopes: Vec::new(),
            exists_queries: HashSet::new(),
            quiet_exprs: HashSet::new(),
            quiet_depth: 0,
            not_tables: HashSet::new(),
            tables: Vec::new(),
            versioned_names: HashSet::new(),
            system_time: Vec::new(),
            normalised_tables: Vec::new(),
            seen_tables: HashSet::new(),
            idents: Vec::new(),
            qualified_refs: Vec::new(),
            from_scopes: Vec::new(),
            from_marks: Vec::new(),
            nested_wildcards: Vec::new(),
            column_hazard: None,
            natural_join: false,
            distinct_wildcards: Vec::new(),
            positional: Vec::new(),
            relations: 0,
            ctes: 0,
            slow_step: None,
            null_comparison: false,
            not_in_subquery: false,
        }
    }

    /// `s` as SQL Server compares names under its usual case- and width-insensitive
    /// collations.
    fn collated(&self, s: &str) -> String {
        self.norm(s).to_lowercase()
    }

    fn fold(&self, s: &str) -> String {
        match self.dialect {
            SqlDialect::Sqlite => s.to_ascii_lowercase(),
            SqlDialect::MsSql => s.to_lowercase(),
        }
    }

    /// Normalises an identifier the way some collation may compare names, beyond case
    /// ([`fold_name`] on SQL Server; as written on SQLite). Used to find what a name could
    /// mean (system catalogs, CTEs, dangerous functions, the catalog entry whose hidden
    /// columns to mask), never to admit a table: the rules match [`Checker::plain`] names and
    /// fold on their own, towards hiding only.
    fn norm(&self, s: &str) -> String {
        match self.dialect {
            SqlDialect::Sqlite => s.to_string(),
            SqlDialect::MsSql => fold_name(s),
        }
    }

    /// An identifier as every collation of the server compares it, beyond case: SQL Server
    /// always ignores trailing spaces; SQLite compares names as written.
    fn plain<'s>(&self, s: &'s str) -> &'s str {
        match self.dialect {
            SqlDialect::Sqlite => s,
            SqlDialect::MsSql => s.trim_end_matches(' '),
        }
    }

    fn effective_schema<'s>(&self, schema: Option<&'s str>) -> &'s str {
        schema.unwrap_or(self.dialect.default_schema())
    }

    /// A nested `*` whose expansion the guard cannot tell: refused when any table the query
    /// reads has hidden columns.
    fn note_nested_wildcard(&mut self, what: &str) {
        self.note_nested_star(what, None);
    }

    fn note_nested_star(&mut self, what: &str, expands: Option<Vec<WrittenTable>>) {
        // One `*` of unknown expansion decides as much as any number of them.
        if expands.is_none() && self.nested_wildcards.iter().any(|n| n.expands.is_none()) {
            return;
        }
        self.nested_wildcards.push(NestedStar {
            what: what.to_string(),
            expands,
        });
    }

    /// A relation's name as the rules see it ([`Checker::check_relation`]): `(schema, table)`
    /// as written, less trailing spaces; `None` for a name of another shape.
    fn written_table(&self, name: &ObjectName) -> Option<WrittenTable> {
        let parts: Vec<&str> = name
            .0
            .iter()
            .map(|p| p.as_ident().map(|i| self.plain(&i.value)))
            .collect::<Option<_>>()?;
        match parts.as_slice() {
            [t] => Some((None, t.to_string())),
            [s, t] => Some((Some(s.to_string()), t.to_string())),
            _ => None,
        }
    }

    /// Whether `qualifier` (the `t` of `t.*`, its last part) could name a relation called
    /// `name`: compared as loosely as any collation would, so that a doubt expands more.
    fn could_name(&self, qualifier: &str, name: &str) -> bool {
        qualifier.eq_ignore_ascii_case(name) || self.collated(qualifier) == self.collated(name)
    }

    /// What a `*` over `relations` (one `SELECT`'s `FROM`) expands: all of them, or with a
    /// qualifier the ones it could name. Base tables (and CTEs and views, named the same way)
    /// are listed by name; a derived table adds nothing, as its own projection is checked
    /// where it stands (a hidden column is refused by name there, and a `*` there is a nested
    /// `*` of its own). `None` when the guard cannot tell: a relation it cannot see into, or a
    /// qualifier that names none of them.
    fn star_expansion(
        &self,
        relations: &[FromRelation],
        qualifier: Option<&str>,
    ) -> Option<Vec<WrittenTable>> {
        if relations.iter().any(|r| r.unknown) {
            return None;
        }
        let mut out = Vec::new();
        let mut found = qualifier.is_none();
        for r in relations {
            if qualifier.is_none_or(|q| r.names.iter().any(|n| self.could_name(q, n))) {
                found = true;
                out.extend(r.tables.iter().cloned());
            }
        }
        found.then_some(out)
    }

    /// The relations of `select`'s `FROM`, as [`Checker::from_scopes`] keeps them.
    fn relations_of(&self, select: &Select) -> Vec<FromRelation> {
        let mut out = Vec::new();
        for from in &select.from {
            for factor in
                std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation))
            {
                self.relation_of(factor, &mut out);
            }
        }
        out
    }

    fn relation_of(&self, factor: &TableFactor, out: &mut Vec<FromRelation>) {
        let alias_of = |a: &Option<TableAlias>| a.as_ref().map(|a| a.name.value.clone());
        match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let own = name
                    .0
                    .last()
                    .and_then(ObjectNamePart::as_ident)
                    .map(|i| i.value.clone());
                let names = alias_of(alias).into_iter().chain(own).collect();
                let table = if args.is_some() {
                    Some(None)
                } else {
                    self.written_table(name).map(Some)
                };
                let unknown = table.is_none();
                out.push(FromRelation {
                    names,
                    tables: table.flatten().into_iter().collect(),
                    unknown,
                });
            }
            // Their columns are their own: a derived table's are checked where it stands,
            // and OPENJSON's come from its argument, checked like any expression.
            TableFactor::Derived { alias, .. } | TableFactor::OpenJsonTable { alias, .. } => out
                .push(FromRelation {
                    names: alias_of(alias).into_iter().collect(),
                    tables: Vec::new(),
                    unknown: false,
                }),
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                let mut inner = Vec::new();
                for factor in std::iter::once(&table_with_joins.relation)
                    .chain(table_with_joins.joins.iter().map(|j| &j.relation))
                {
                    self.relation_of(factor, &mut inner);
                }
                // An alias names the whole nested join: every table in it.
                if let Some(a) = alias_of(alias) {
                    out.push(FromRelation {
                        names: vec![a],
                        tables: inner.iter().flat_map(|r| r.tables.clone()).collect(),
                        unknown: inner.iter().any(|r| r.unknown),
                    });
                }
                out.extend(inner);
            }
            _ => {
                let alias = match factor {
                    TableFactor::Pivot { alias, .. } | TableFactor::Unpivot { alias, .. } => {
                        alias_of(alias)
                    }
                    _ => None,
                };
                out.push(FromRelation {
                    names: alias.into_iter().collect(),
                    tables: Vec::new(),
                    unknown: true,
                });
            }
        }
    }

    /// The tables a qualifier could name in the `FROM` clauses in scope (all of them, at every
    /// level, so that a doubt counts more), or `None` when it names none or one the guard
    /// cannot tell.
    fn resolve_qualifier(&self, qualifier: &str) -> Option<Vec<WrittenTable>> {
        let mut tables = Vec::new();
        let mut found = false;
        for relation in self.from_scopes.iter().flatten() {
            if relation.names.iter().any(|n| self.could_name(qualifier, n)) {
                if relation.unknown {
                    return None;
                }
                found = true;
                tables.extend(relation.tables.iter().cloned());
            }
        }
        found.then_some(tables)
    }

    /// What one `*` item of a projection over `relations` expands (`None`: no telling).
    fn item_expansion(
        &self,
        relations: &[FromRelation],
        item: &SelectItem,
    ) -> Option<Vec<WrittenTable>> {
        match item {
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(q), _) => {
                q.0.last()
                    .and_then(ObjectNamePart::as_ident)
                    .and_then(|q| self.star_expansion(relations, Some(&q.value)))
            }
            SelectItem::QualifiedWildcard(..) => None,
            _ => self.star_expansion(relations, None),
        }
    }

    /// What all the `*`s of `select`'s projection (over `relations`, its `FROM`) expand
    /// together; `None` when it has none.
    fn projection_stars(
        &self,
        select: &Select,
        relations: &[FromRelation],
    ) -> Option<Option<Vec<WrittenTable>>> {
        let mut stars = select.projection.iter().filter(|i| {
            matches!(
                i,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        });
        let first = stars.next()?;
        let mut all = self.item_expansion(relations, first);
        for item in stars {
            all = match (all, self.item_expansion(relations, item)) {
                (Some(mut a), Some(e)) => {
                    a.extend(e);
                    Some(a)
                }
                _ => None,
            };
        }
        Some(all)
    }

    /// Notes a position in `body`'s `ORDER BY` or in a `SELECT`'s `GROUP BY`.
    fn note_position(&mut self, what: &'static str, body: &SetExpr) {
        let expands = match body {
            SetExpr::Select(select) => {
                match self.projection_stars(select, &self.relations_of(select)) {
                    None => return,
                    Some(expands) => expands,
                }
            }
            // Result columns of a set operation or a parenthesised query: no telling here.
            _ => None,
        };
        self.positional.push(NestedStar {
            what: what.to_string(),
            expands,
        });
    }

    /// The table that makes `star` a leak, given the tables the query reads whose columns
    /// the rules hide (`applicable`): for a known expansion, a relation it names that the
    /// rules hide columns of (a CTE or view named like such a table counts too); for an
    /// unknown one, any such table the query reads. The flag says which.
    fn star_hit(
        &self,
        star: &NestedStar,
        applicable: &[(String, String)],
    ) -> Option<(bool, String)> {
        let Some(expands) = &star.expands else {
            return applicable.first().map(|(_, t)| (false, t.clone()));
        };
        expands
            .iter()
            .find(|t| self.hides(t, None))
            .map(|t| (true, shown(t)))
    }

    /// Whether the rules hide `column` (any column, for `None`) of the relation named `t`.
    fn hides(&self, (schema, table): &WrittenTable, column: Option<&str>) -> bool {
        let effective = self.effective_schema(schema.as_deref());
        self.rules.deny_columns.iter().any(|p| {
            column_pattern_table_part(p, Some(effective), table)
                .is_some_and(|c| column.is_none_or(|column| deny_match(c, column)))
        })
    }

    fn note_ident(&mut self, ident: &Ident) {
        // T-SQL: an unquoted name starting with `@` is a variable or parameter (a column
        // named so must be bracketed), never a column; among them the `@P1`, `@P2`, … of a
        // lifted template (`db::lift`), whose verdict must be its original's.
        if self.dialect == SqlDialect::MsSql
            && ident.quote_style.is_none()
            && ident.value.starts_with('@')
        {
            return;
        }
        if self.quiet_depth == 0 {
            // As written (less trailing spaces): `deny_match` folds it against the rules.
            let n = self.plain(&ident.value).to_string();
            self.idents.push(n);
        }
    }

    /// See [`Checker::qualifiers`]. SQLite has no CLR types: there a qualifier is always a
    /// table, alias or schema.
    fn note_qualifiers(&mut self, parts: &[Ident]) {
        if self.dialect == SqlDialect::MsSql && self.quiet_depth == 0 {
            let names: Vec<String> = parts
                .iter()
                .map(|p| self.plain(&p.value).to_string())
                .collect();
            self.qualifiers.extend(names);
        }
    }

    /// Whether an unqualified name (as written) refers to a CTE in scope: `Some(true)`
    /// certainly, `Some(false)` only under some collations (SQL Server: the names differ in
    /// case or width, or in trailing spaces), so the name is checked as a table too.
    fn cte_match(&self, name: &str) -> Option<bool> {
        let mut found = None;
        let collated = (self.dialect == SqlDialect::MsSql).then(|| self.collated(name));
        for scope in self.scopes.iter().rev() {
            for (i, (cte, _)) in scope.names.iter().take(scope.visible).enumerate() {
                match self.dialect {
                    SqlDialect::Sqlite if cte.eq_ignore_ascii_case(name) => return Some(true),
                    SqlDialect::MsSql if cte == name => return Some(true),
                    SqlDialect::MsSql if collated.as_ref() == scope.collated.get(i) => {
                        found = Some(false)
                    }
                    _ => {}
                }
            }
        }
        found
    }

    fn check_wildcard_options(&self, o: &WildcardAdditionalOptions) -> Flow {
        if o.opt_ilike.is_some()
            || o.opt_exclude.is_some()
            || o.opt_except.is_some()
            || o.opt_replace.is_some()
            || o.opt_rename.is_some()
            || o.opt_alias.is_some()
        {
            return forbid(
                "wildcard modifiers (EXCLUDE, EXCEPT, REPLACE, RENAME, ILIKE) are not supported",
            );
        }
        ControlFlow::Continue(())
    }

    fn collect_using(&mut self, joins: &[Join]) {
        for join in joins {
            let constraint = match &join.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c)
                | JoinOperator::StraightJoin(c)
                | JoinOperator::AsOf { constraint: c, .. } => c,
                _ => continue,
            };
            if matches!(constraint, JoinConstraint::Natural) {
                self.natural_join = true;
            }
            if let JoinConstraint::Using(names) | JoinConstraint::UsingAlias(names, _) = constraint
            {
                for name in names {
                    for part in &name.0 {
                        if let ObjectNamePart::Identifier(ident) = part {
                            self.note_ident(ident);
                        }
                    }
                }
            }
        }
    }

    fn check_function(&mut self, f: &Function) -> Flow {
        let parts = &f.name.0;
        let Some(last) = parts.last().and_then(ObjectNamePart::as_ident) else {
            return forbid(format!("function name `{}` is not supported", f.name));
        };
        if self.dialect == SqlDialect::MsSql && parts.len() >= 4 {
            return forbid(format!(
                "`{}`: calling functions in another database or server is not allowed",
                f.name
            ));
        }
        if self.dialect == SqlDialect::MsSql && parts.len() == 3 {
            // Whether the first part is a table of the query is known once it is all read.
            let first = parts[0]
                .as_ident()
                .map(|i| self.plain(&i.value).to_lowercase())
                .unwrap_or_default();
            self.three_part_calls.push(ThreePartCall {
                first,
                name: f.name.to_string(),
                column_method: format!("{}.{}", parts[1], parts[2]),
            });
        }
        let name = self.norm(&last.value);
        if is_dangerous_function(&name) {
            return forbid(format!("function `{}` is not allowed", f.name));
        }
        // `location.STAsText()`: a method of the column `location` (a CLR type), when
        // `location` is no schema; see [`Checker::qualifiers`].
        let before: Vec<Ident> = parts[..parts.len() - 1]
            .iter()
            .filter_map(|p| p.as_ident().cloned())
            .collect();
        self.note_qualifiers(&before);
        // SQLite's full-text helpers read a table's columns by number.
        if self.dialect == SqlDialect::Sqlite
            && matches!(
                name.to_ascii_lowercase().as_str(),
                "snippet" | "highlight" | "bm25" | "matchinfo" | "offsets" | "fts5_get_locale"
            )
            && self.column_hazard.is_none()
        {
            self.column_hazard = Some(format!(
                "the full-text function `{}()`, which reads columns by number,",
                f.name
            ));
        }
        if MSSQL_CATALOG_FUNCTIONS.contains(&name.to_lowercase().as_str()) {
            return forbid(format!(
                "function `{}` reads the database catalog, which is not allowed; use the \
                 list_tables and describe_table tools to explore the schema",
                f.name
            ));
        }
        let lower = last.value.to_lowercase();
        let args = match &f.args {
            FunctionArguments::List(list) => list.args.len(),
            _ => 0,
        };
        let linear = LINEAR_FUNCTIONS.contains(&lower.as_str())
            // With a second argument, trim compares every character with every one to trim.
            && !(matches!(lower.as_str(), "trim" | "ltrim" | "rtrim") && args > 1);
        if !linear && self.slow_step.is_none() {
            self.slow_step = Some(format!("{}()", f.name));
        }
        if let FunctionArguments::List(list) = &f.args
            && lower != "count"
            && lower != "count_big"
        {
            for arg in &list.args {
                let arg = match arg {
                    FunctionArg::Named { arg, .. }
                    | FunctionArg::ExprNamed { arg, .. }
                    | FunctionArg::Unnamed(arg) => arg,
                };
                if !matches!(arg, FunctionArgExpr::Expr(_)) {
                    self.note_nested_wildcard(&format!("`*` in `{}(...)`", f.name));
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn check_hint(&mut self, hint: &Expr) -> Flow {
        let name = match hint {
            Expr::Identifier(i) => Some(&i.value),
            Expr::Function(f) if f.name.0.len() == 1 => f
                .name
                .0
                .first()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| &i.value),
            _ => None,
        };
        match name {
            Some(n) if ALLOWED_TABLE_HINTS.contains(&n.to_lowercase().as_str()) => {
                self.quiet_exprs.insert(addr(hint));
                ControlFlow::Continue(())
            }
            _ => forbid(format!(
                "table hint `{hint}` is not allowed (only NOLOCK, READUNCOMMITTED, READCOMMITTED, \
                 READPAST, NOWAIT, NOEXPAND, INDEX(...), FORCESEEK, FORCESCAN; locking hints \
                 are refused)"
            )),
        }
    }

    /// Checks a name used as a table (in FROM or SQLite's `x IN table`).
    fn check_relation(&mut self, name: &ObjectName) -> Flow {
        self.relations += 1;
        if self.relations > MAX_TABLE_REFERENCES {
            return ControlFlow::Break(GuardError::TooComplex);
        }
        let mut written: Vec<&str> = Vec::with_capacity(name.0.len());
        for part in &name.0 {
            match part {
                ObjectNamePart::Identifier(i) => written.push(&i.value),
                ObjectNamePart::Function(_) => {
                    return forbid(format!("computed table name `{name}` is not allowed"));
                }
            }
        }
        let parts: Vec<String> = written.iter().map(|p| self.norm(p)).collect();
        let display = written.join(".");
        let (schema, table): (Option<&str>, &str) = match (self.dialect, parts.as_slice()) {
            (_, [t]) => (None, t),
            (SqlDialect::Sqlite, [s, t]) => {
                if !s.eq_ignore_ascii_case("main") {
                    return forbid(format!(
                        "`{display}`: only tables of the main database can be queried (temp and \
                         attached databases are not allowed)"
                    ));
                }
                (Some(s), t)
            }
            (SqlDialect::MsSql, [s, t]) => (Some(s), t),
            (SqlDialect::MsSql, [.., db, _, _]) => {
                if MSSQL_SYSTEM_DATABASES.contains(&db.to_lowercase().as_str()) {
                    return ControlFlow::Break(GuardError::TableDenied(catalog_message(&display)));
                }
                return forbid(format!(
                    "`{display}`: three- and four-part names (other databases, linked servers) \
                     are not allowed"
                ));
            }
            _ => return forbid(format!("`{display}`: unsupported table name")),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return forbid(format!("`{display}`: empty name part"));
        }
        if schema.is_none()
            && let Some(raw) = written.last()
            && self.cte_match(raw) == Some(true)
        {
            return ControlFlow::Continue(());
        }
        let t = self.fold(table);
        match self.dialect {
            SqlDialect::Sqlite => {
                if t.starts_with("sqlite_")
                    || t.starts_with("pragma_")
                    || SQLITE_INTERNAL_TABLES.contains(&t.as_str())
                {
                    return ControlFlow::Break(GuardError::TableDenied(catalog_message(&display)));
                }
            }
            SqlDialect::MsSql => {
                if table.starts_with('#') {
                    return forbid(format!(
                        "`{display}`: temporary tables (tempdb) are not allowed"
                    ));
                }
                let s = schema.map(|s| s.to_lowercase());
                if matches!(s.as_deref(), Some("sys" | "information_schema"))
                    || MSSQL_COMPAT_VIEWS.contains(&t.as_str())
                {
                    return ControlFlow::Break(GuardError::TableDenied(catalog_message(&display)));
                }
            }
        }
        // The rules see the name as written (less trailing spaces) and fold it themselves,
        // towards hiding only: `ıtems` is refused where `items` is denied, and not admitted
        // where `items` is allowed.
        let (plain_schema, plain_table) = match written.as_slice() {
            [s, t] => (Some(self.plain(s)), self.plain(t)),
            _ => (
                None,
                self.plain(written.last().copied().unwrap_or_default()),
            ),
        };
        if !self
            .rules
            .table_visible(Some(self.effective_schema(plain_schema)), plain_table)
        {
            return ControlFlow::Break(GuardError::TableDenied(format!(
                "table `{display}` is not accessible in this scope; use list_tables to see the \
                 tables you can query"
            )));
        }
        if self.versioned_names.contains(&addr(name)) {
            self.system_time.push(TableRef {
                schema: schema.map(str::to_string),
                name: table.to_string(),
            });
        }
        let key = (self.fold(schema.unwrap_or("")), t);
        if self.seen_tables.insert(key) {
            self.normalised_tables
                .push((plain_schema.map(str::to_string), plain_table.to_string()));
            // Normalised as the server compares names (full-width letters, trailing spaces),
            // so that the catalog finds the table the server will read: masking its hidden
            // columns depends on it.
            self.tables.push(TableRef {
                schema: schema.map(str::to_string),
                name: table.to_string(),
            });
        }
        ControlFlow::Continue(())
    }

    /// Column rules, once every table is known.
    fn finish(mut self, root: &Query) -> Result<CheckedQuery, GuardError> {
        if let Some(call) = self.three_part_calls.first() {
            // SQL Server could read `a.b.f()` either way; neither is let through.
            let name = &call.name;
            return Err(GuardError::Forbidden(
                if self.relation_names.contains(&call.first) {
                    format!(
                        "`{name}`: a method called through the table's name or alias is not \
                         supported; call it on the column alone (`{}(…)`)",
                        call.column_method
                    )
                } else {
                    format!(
                        "`{name}`: calling functions in another database or server is not allowed"
                    )
                },
            ));
        }
        // deny_columns patterns that apply to some referenced table: (column part, table).
        let mut applicable: Vec<(String, String)> = Vec::new();
        for t in &self.normalised_tables {
            let effective = self.effective_schema(t.0.as_deref());
            for p in &self.rules.deny_columns {
                if let Some(col) = column_pattern_table_part(p, Some(effective), &t.1)
                    && !applicable.iter().any(|(c, _)| c == col)
                {
                    applicable.push((col.to_string(), shown(t)));
                }
            }
        }
        if !applicable.is_empty() {
            let columns: Vec<String> = self
                .qualifiers
                .iter()
                .filter(|q| !self.relation_names.contains(&q.to_lowercase()))
                .cloned()
                .collect();
            self.idents.extend(columns);
            let mut seen: HashSet<String> = HashSet::new();
            for ident in &self.idents {
                let key = ident.to_lowercase();
                if !seen.insert(key) {
                    continue;
                }
                if let Some((_, table)) = applicable.iter().find(|(c, _)| deny_match(c, ident)) {
                    return Err(GuardError::ColumnDenied(format!(
                        "column `{ident}` of table `{table}` is hidden in this scope; remove it \
                         from the query"
                    )));
                }
            }
            for (column, tables) in &self.qualified_refs {
                if let Some(t) = tables.iter().find(|t| self.hides(t, Some(column))) {
                    let table = shown(t);
                    return Err(GuardError::ColumnDenied(format!(
                        "column `{column}` of table `{table}` is hidden in this scope; remove it \
                         from the query"
                    )));
                }
            }
            for p in &self.positional {
                if let Some((_, table)) = self.star_hit(p, &applicable) {
                    return Err(GuardError::ColumnDenied(format!(
                        "{} by column position over a `*` could use hidden columns of `{table}`; \
                         name the columns instead",
                        p.what
                    )));
                }
            }
            for d in &self.distinct_wildcards {
                if let Some((_, table)) = self.star_hit(d, &applicable) {
                    return Err(GuardError::ColumnDenied(format!(
                        "DISTINCT over `*` compares the hidden columns of `{table}` too (rows \
                         that differ only there stay apart); list the columns you need"
                    )));
                }
            }
            if let (true, Some((_, table))) = (self.natural_join, applicable.first()) {
                return Err(GuardError::ColumnDenied(format!(
                    "NATURAL JOIN could join on hidden columns of `{table}`; use JOIN ... ON with \
                     the columns you mean"
                )));
            }
            // `rowid` reads the INTEGER PRIMARY KEY, whichever table's it is: qualified too.
            let rowid = (self.dialect == SqlDialect::Sqlite)
                .then(|| {
                    let qualified = self.qualified_refs.iter().map(|(c, _)| c);
                    self.idents.iter().chain(qualified).find(|i| {
                        ["rowid", "oid", "_rowid_"].contains(&i.to_ascii_lowercase().as_str())
                    })
                })
                .flatten()
                .map(|i| format!("`{i}`, which reads the INTEGER PRIMARY KEY column,"));
            if let (Some(what), Some((_, table))) = (
                self.column_hazard.as_ref().or(rowid.as_ref()),
                applicable.first(),
            ) {
                return Err(GuardError::ColumnDenied(format!(
                    "{what} could read hidden columns of `{table}`; leave it out of the query"
                )));
            }
            for star in &self.nested_wildcards {
                match self.star_hit(star, &applicable) {
                    None => {}
                    Some((false, table)) => {
                        return Err(GuardError::ColumnDenied(format!(
                            "{} is not allowed in a query that reads `{table}`, which has \
                             hidden columns (a nested `*` could carry them out under other \
                             names); list the columns you need",
                            star.what
                        )));
                    }
                    Some((true, table)) => {
                        return Err(GuardError::ColumnDenied(format!(
                            "{} over `{table}`, which has hidden columns, is not allowed (a nested \
                         `*` could carry them out under other names); a `*` over it may stand \
                         only in the select list of the outermost SELECT, so list the columns \
                         you need",
                            star.what
                        )));
                    }
                }
            }
        }
        Ok(CheckedQuery {
            tables: self.tables,
            has_order_by: root.order_by.is_some(),
            pageable_in_sql: pageable_in_sql(root),
            plain_columns: plain_columns(root),
            linear_steps: self.slow_step.is_none(),
            wide_varchar_literal: false,
            null_comparison: self.null_comparison,
            not_in_subquery: self.not_in_subquery,
            avg_items: avg_items(root),
            system_time: self.system_time,
        })
    }
}

impl Visitor for Checker<'_> {
    type Break = GuardError;

    fn pre_visit_statement(&mut self, _statement: &Statement) -> Flow {
        forbid(
            "a statement nested inside the query is not allowed (data-modifying statements, \
             including in CTEs, are refused)",
        )
    }

    fn pre_visit_query(&mut self, query: &Query) -> Flow {
        let ptr = addr(query);
        // SQL Server: a CTE sees itself and the CTEs before it.
        if self.dialect == SqlDialect::MsSql
            && let Some(top) = self.scopes.last_mut()
            && let Some(k) = top.names.iter().position(|(_, p)| *p == ptr)
        {
            top.visible = k + 1;
        }
        self.query_stack.push(ptr);
        self.from_marks.push(self.from_scopes.len());
        if let Some(OrderByKind::Expressions(items)) = query.order_by.as_ref().map(|o| &o.kind)
            && items.iter().any(|i| is_position(&i.expr))
        {
            self.note_position("ORDER BY", &query.body);
        }
        if !query.locks.is_empty() {
            return forbid("locking clauses (FOR UPDATE / FOR SHARE) are not allowed");
        }
        if matches!(query.for_clause, Some(ForClause::Browse)) {
            return forbid("FOR BROWSE is not allowed");
        }
        if query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            return forbid("SETTINGS, FORMAT and pipe operators are not supported");
        }
        // The other dialect's row limits, which sqlparser reads in both: the database would
        // refuse them with a bare syntax error.
        match self.dialect {
            SqlDialect::MsSql
                if matches!(
                    query.limit_clause,
                    Some(LimitClause::LimitOffset { limit: Some(_), .. })
                        | Some(LimitClause::OffsetCommaLimit { .. })
                ) =>
            {
                return forbid(
                    "SQL Server has no LIMIT; write `SELECT TOP (n) …`, or `ORDER BY … OFFSET m \
                     ROWS FETCH NEXT n ROWS ONLY`",
                );
            }
            SqlDialect::Sqlite if query.fetch.is_some() => {
                return forbid("SQLite has no FETCH; write `LIMIT n OFFSET m`");
            }
            _ => {}
        }
        // The set-operation spine of the body, iteratively: DML bodies and `TABLE t`.
        let mut pending: Vec<&SetExpr> = vec![&query.body];
        while let Some(body) = pending.pop() {
            match body {
                SetExpr::SetOperation { left, right, .. } => {
                    pending.push(left);
                    pending.push(right);
                }
                SetExpr::Insert(_)
                | SetExpr::Update(_)
                | SetExpr::Delete(_)
                | SetExpr::Merge(_) => {
                    return forbid(
                        "data-modifying statements inside a query or CTE are not allowed",
                    );
                }
                SetExpr::Table(_) => return forbid("TABLE <name> queries are not supported"),
                SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => {}
            }
        }
        let names: Vec<(String, usize)> = query
            .with
            .as_ref()
            .map(|w| {
                w.cte_tables
                    .iter()
                    .map(|c| (c.alias.name.value.clone(), addr(&*c.query)))
                    .collect()
            })
            .unwrap_or_default();
        self.relation_names
            .extend(names.iter().map(|(n, _)| n.to_lowercase()));
        self.ctes += names.len();
        if self.ctes > MAX_CTES {
            return ControlFlow::Break(GuardError::TooComplex);
        }
        let visible = match self.dialect {
            // SQLite: every CTE of a WITH is visible in all of its bodies.
            SqlDialect::Sqlite => names.len(),
            SqlDialect::MsSql => 0,
        };
        let collated = match self.dialect {
            SqlDialect::Sqlite => Vec::new(),
            SqlDialect::MsSql => names.iter().map(|(n, _)| self.collated(n)).collect(),
        };
        self.scopes.push(CteScope {
            names,
            collated,
            visible,
        });
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> Flow {
        self.scopes.pop();
        self.query_stack.pop();
        let mark = self.from_marks.pop().unwrap_or(0);
        self.from_scopes.truncate(mark);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> Flow {
        if select.into.is_some() {
            return ControlFlow::Break(GuardError::SelectInto);
        }
        if self.dialect == SqlDialect::Sqlite && select.top.is_some() {
            return forbid("SQLite has no TOP; write `LIMIT n` at the end of the query");
        }
        let relations = self.relations_of(select);
        let enclosing = self.query_stack.last().copied().unwrap_or(0);
        let names_are_columns = (enclosing == self.root && self.root_names_columns)
            || self.exists_queries.contains(&enclosing);
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(o) | SelectItem::QualifiedWildcard(_, o) => {
                    self.check_wildcard_options(o)?;
                    if !names_are_columns {
                        let expands = self.item_expansion(&relations, item);
                        let what = if enclosing == self.root && self.root_for_clause {
                            "a `*` in a `FOR XML`/`FOR JSON` result (which names each column \
                             inside the text, out of masking's reach)"
                        } else {
                            "a `*` in a subquery, CTE or set operation"
                        };
                        self.note_nested_star(what, expands);
                    } else if select.distinct.is_some() && !self.exists_queries.contains(&enclosing)
                    {
                        let expands = self.item_expansion(&relations, item);
                        self.distinct_wildcards.push(NestedStar {
                            what: "DISTINCT".into(),
                            expands,
                        });
                    }
                }
                SelectItem::UnnamedExpr(_)
                | SelectItem::ExprWithAlias { .. }
                | SelectItem::ExprWithAliases { .. } => {}
            }
        }
        if let GroupByExpr::Expressions(exprs, _) = &select.group_by
            && exprs.iter().any(is_position)
            && let Some(expands) = self.projection_stars(select, &relations)
        {
            self.positional.push(NestedStar {
                what: "GROUP BY".into(),
                expands,
            });
        }
        for from in &select.from {
            self.collect_using(&from.joins);
        }
        // In scope for what is visited under this SELECT, and until its query ends.
        self.from_scopes.push(relations);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> Flow {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                ..
            } => {
                if version.is_some() {
                    self.versioned_names.insert(addr(name));
                }
                if let Some(ObjectNamePart::Identifier(last)) = name.0.last() {
                    self.relation_names.insert(last.value.to_lowercase());
                }
                if let Some(a) = alias {
                    self.relation_names.insert(a.name.value.to_lowercase());
                }
                if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                    return forbid(format!(
                        "column alias lists on table `{name}` are not supported"
                    ));
                }
                for hint in with_hints {
                    self.check_hint(hint)?;
                }
                if let Some(args) = args {
                    let single = match name.0.as_slice() {
                        [ObjectNamePart::Identifier(i)] => Some(i.value.to_lowercase()),
                        _ => None,
                    };
                    let allowed = match self.dialect {
                        SqlDialect::Sqlite => SQLITE_ALLOWED_TABLE_FUNCTIONS,
                        SqlDialect::MsSql => MSSQL_ALLOWED_TABLE_FUNCTIONS,
                    };
                    let allowed_function = single.as_deref().is_some_and(|n| allowed.contains(&n));
                    if allowed_function && args.settings.is_none() {
                        self.not_tables.insert(addr(name));
                        return ControlFlow::Continue(());
                    }
                    // SQL Server legacy hint syntax: `FROM t (NOLOCK)`.
                    let legacy_hints = self.dialect == SqlDialect::MsSql
                        && !args.args.is_empty()
                        && args.settings.is_none()
                        && args.args.iter().all(|a| {
                            matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(i)))
                                if ALLOWED_TABLE_HINTS.contains(&i.value.to_lowercase().as_str()))
                        });
                    // Refused, though harmless on a table: on a function, SQL Server reads
                    // the same text as a call whose arguments are columns in scope.
                    if legacy_hints {
                        return forbid(format!(
                            "`{name} (...)` is the old table-hint form, which SQL Server can also \
                             read as a function call; write `{name} WITH (...)`"
                        ));
                    }
                    let last = name
                        .0
                        .last()
                        .and_then(ObjectNamePart::as_ident)
                        .map(|i| i.value.as_str())
                        .unwrap_or("");
                    if is_dangerous_function(&self.norm(last)) {
                        return forbid(format!("`{name}` is not allowed"));
                    }
                    return forbid(format!(
                        "table-valued function `{name}(...)` is not allowed in FROM; query tables \
                         and views only"
                    ));
                }
                ControlFlow::Continue(())
            }
            TableFactor::Derived { alias, .. }
            | TableFactor::Pivot { alias, .. }
            | TableFactor::Unpivot { alias, .. } => {
                if let Some(a) = alias {
                    self.relation_names.insert(a.name.value.to_lowercase());
                }
                ControlFlow::Continue(())
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                self.collect_using(&table_with_joins.joins);
                ControlFlow::Continue(())
            }
            TableFactor::Function { name, .. } => forbid(format!(
                "table function `{name}(...)` is not allowed in FROM"
            )),
            TableFactor::TableFunction { .. } => forbid("TABLE(...) functions are not allowed"),
            TableFactor::UNNEST { .. } => forbid("UNNEST is not allowed"),
            TableFactor::JsonTable { .. } => forbid("JSON_TABLE is not allowed"),
            // It reads only its argument, checked like any expression; the names of its
            // `WITH` columns are the query's own, masked like any result name.
            TableFactor::OpenJsonTable { alias, .. } => {
                if let Some(a) = alias {
                    self.relation_names.insert(a.name.value.to_lowercase());
                }
                ControlFlow::Continue(())
            }
            TableFactor::XmlTable { .. } => forbid("XMLTABLE is not allowed"),
            TableFactor::MatchRecognize { .. } => forbid("MATCH_RECOGNIZE is not supported"),
            TableFactor::UnpivotExpr { .. } => forbid("this UNPIVOT form is not supported"),
            TableFactor::SemanticView { .. } => forbid("SEMANTIC_VIEW is not supported"),
        }
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> Flow {
        if self.not_tables.contains(&addr(relation)) {
            return ControlFlow::Continue(());
        }
        self.check_relation(relation)
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> Flow {
        if self.quiet_exprs.contains(&addr(expr)) {
            self.quiet_depth += 1;
        }
        match expr {
            Expr::Identifier(i) => self.note_ident(i),
            Expr::CompoundIdentifier(parts) => {
                if let Some((last, before)) = parts.split_last() {
                    // `q.column` with a qualifier the guard can resolve is checked against
                    // the tables it names; anything else as if it could be any table's.
                    let resolved = match before {
                        [q] if self.quiet_depth == 0 => self.resolve_qualifier(&q.value),
                        _ => None,
                    };
                    match resolved {
                        Some(tables) => {
                            let column = self.plain(&last.value).to_string();
                            self.qualified_refs.push((column, tables));
                        }
                        None => self.note_ident(last),
                    }
                    self.note_qualifiers(before);
                }
            }
            Expr::Function(f) => self.check_function(f)?,
            // Only a plain SELECT's projection is never returned: under a set operation
            // (`EXISTS (SELECT * … INTERSECT SELECT …)`) every column is compared.
            Expr::Exists { subquery, .. } if matches!(*subquery.body, SetExpr::Select(_)) => {
                self.exists_queries.insert(addr(&**subquery));
            }
            Expr::In {
                target, negated, ..
            } => match target {
                InTarget::Table {
                    args: Some(_),
                    name,
                } => {
                    return forbid(format!(
                        "table-valued function `{name}(...)` is not allowed"
                    ));
                }
                InTarget::Unnest(_) => return forbid("UNNEST is not allowed"),
                // SQLite reads `x IN t` as `x IN (SELECT * FROM t)`: every column of `t`.
                InTarget::Table { args: None, name } => {
                    let expands = self.written_table(name).map(|t| vec![t]);
                    self.note_nested_star(
                        &format!("`IN {name}`, which compares every column,"),
                        expands,
                    );
                }
                InTarget::Subquery(_) => self.not_in_subquery |= *negated,
                InTarget::List(_) => {}
            },
            Expr::Wildcard(_) | Expr::QualifiedWildcard(..) => {
                self.note_nested_wildcard("a `*` inside an expression");
            }
            Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::SimilarTo { .. }
            | Expr::RLike { .. }
                if self.slow_step.is_none() =>
            {
                self.slow_step = Some("a pattern match".into());
            }
            // `docs MATCH 'body: x'` names its columns inside a string, out of sight.
            // And, like every other non-linear operator, it is a step that may run long.
            Expr::BinaryOp {
                op: BinaryOperator::Match,
                ..
            } => {
                self.column_hazard.get_or_insert_with(|| {
                    "a full-text MATCH, whose query text can name any column of the table,".into()
                });
                self.slow_step
                    .get_or_insert_with(|| "the operator MATCH".into());
            }
            Expr::BinaryOp { op, .. } if !is_linear_operator(op) && self.slow_step.is_none() => {
                self.slow_step = Some(format!("the operator {op}"));
            }
            // Searching one text in another, or trimming a set of characters: the product of
            // the two lengths.
            Expr::Position { .. } if self.slow_step.is_none() => {
                self.slow_step = Some("POSITION".into());
            }
            Expr::Trim {
                trim_what,
                trim_characters,
                ..
            } if (trim_what.is_some() || trim_characters.is_some()) && self.slow_step.is_none() => {
                self.slow_step = Some("TRIM of given characters".into());
            }
            Expr::BinaryOp {
                left,
                op:
                    BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq,
                right,
            } if is_null(left) || is_null(right) => self.null_comparison = true,
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &Expr) -> Flow {
        if self.quiet_exprs.contains(&addr(expr)) {
            self.quiet_depth = self.quiet_depth.saturating_sub(1);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use SqlDialect::{MsSql, Sqlite};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn rules(allow: &[&str], deny: &[&str], columns: &[&str]) -> AccessRules {
        AccessRules {
            allow_tables: strings(allow),
            deny_tables: strings(deny),
            deny_columns: strings(columns),
        }
    }

    /// Every query these tests check is also checked as its lifted template
    /// ([`crate::db::lift`]): the template must get the same verdict and see the same tables,
    /// since the tools check only the template when it passes.
    #[track_caller]
    fn lifted_agrees(
        d: SqlDialect,
        r: &AccessRules,
        sql: &str,
        original: &Result<CheckedQuery, GuardError>,
    ) {
        let lifted = crate::db::lift::lift(sql, d);
        if lifted.params.is_empty() {
            return;
        }
        let template = check(&lifted.template, d, r);
        match (original, &template) {
            (Ok(a), Ok(b)) => assert_eq!(
                (
                    &a.tables,
                    a.has_order_by,
                    a.pageable_in_sql,
                    &a.plain_columns
                ),
                (
                    &b.tables,
                    b.has_order_by,
                    b.pageable_in_sql,
                    &b.plain_columns
                ),
                "{sql:?} lifted to {:?}",
                lifted.template
            ),
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{sql:?} gives {original:?} but its template {:?} gives {template:?}",
                lifted.template
            ),
        }
    }

    #[test]
    fn lifting_never_changes_a_verdict() {
        let r = rules(&[], &["secrets"], &["employees.salary"]);
        let corpus = [
            "SELECT * FROM customers WHERE customer_id = 42",
            "SELECT name FROM employees WHERE salary = 5",
            "SELECT name FROM employees WHERE name = 'salary' AND id > 3",
            "SELECT name FROM employees WHERE id = 1 ORDER BY 1",
            "SELECT * FROM employees WHERE id = 1 ORDER BY 2",
            "SELECT * FROM secrets WHERE id = 1",
            "SELECT a FROM t WHERE b = 'x' UNION SELECT salary FROM employees WHERE id = 2",
            "SELECT a FROM t WHERE b = 1; DROP TABLE t",
            "SELECT a FROM t WHERE b = 1; SELECT 2",
            "SELECT a FROM t WHERE b IN (SELECT c FROM secrets WHERE d = 4)",
            "SELECT a FROM t WHERE b = (SELECT load_extension('x') WHERE 1 = 1)",
            "SELECT a FROM t JOIN employees e ON e.id = t.e AND e.salary > 1000",
            "SELECT a FROM t WHERE b LIKE 'x%' AND c GLOB 'y*' AND d <> 'z' AND e != 2.5",
            "SELECT count(*) FROM t GROUP BY a HAVING count(*) > 3",
            "SELECT a FROM t WHERE b = 'it''s' LIMIT 10 OFFSET 5",
            "SELECT a FROM t WHERE x = 1 INTO y",
        ];
        for sql in corpus {
            let verdict = check(sql, Sqlite, &r);
            lifted_agrees(Sqlite, &r, sql, &verdict);
        }
        // The corpus does exercise lifting.
        assert!(
            corpus
                .iter()
                .filter(|s| !crate::db::lift::lift(s, Sqlite).params.is_empty())
                .count()
                >= 12
        );
    }

    #[test]
    fn lifting_never_changes_a_verdict_on_sql_server() {
        // `dbo.hidden.*` hides every column of `hidden`: a template's `@P1` must not count as
        // one of them.
        let r = rules(&[], &["secrets"], &["employees.salary", "dbo.hidden.*"]);
        let corpus = [
            "SELECT Id, Name FROM Customers WHERE Id = 42",
            "SELECT TOP 100 Id FROM Orders WHERE Id > 10 ORDER BY Id",
            "SELECT name FROM employees WHERE salary = 5",
            "SELECT name FROM employees WHERE name = N'salary' AND id > 3",
            "SELECT * FROM employees WHERE id = 1 ORDER BY 2",
            "SELECT * FROM secrets WHERE id = 1",
            "SELECT COUNT(*) FROM hidden WHERE 1 = 1",
            "SELECT COUNT(*) FROM hidden WHERE secret = 1",
            "SELECT a FROM t WHERE b = N'x' UNION SELECT salary FROM employees WHERE id = 2",
            "SELECT a FROM t WHERE b = 1; DROP TABLE t",
            "SELECT a FROM t WHERE b = 1; EXEC sp_who",
            "SELECT a FROM t WHERE b IN (SELECT c FROM secrets WHERE d = 4)",
            "SELECT a FROM t WHERE b = (SELECT TOP 1 c FROM u WHERE d = 4)",
            "SELECT a FROM t JOIN employees e ON e.id = t.e AND e.salary > 1000",
            "SELECT a FROM t WHERE b LIKE N'x%' AND d <> N'z' AND e != 2.5E0",
            "SELECT count(*) FROM t GROUP BY a HAVING count(*) > 3",
            "SELECT a INTO x FROM t WHERE b = 1",
            "SELECT a FROM t WITH (NOLOCK) WHERE b = 1",
            "SELECT a FROM t WITH (UPDLOCK) WHERE b = 1",
            "SELECT a FROM other.dbo.t WHERE b = 1",
            "SELECT a FROM #tmp WHERE b = 1",
            "SELECT a FROM t WHERE b = 1 AND EXISTS (SELECT 1 FROM sys.objects WHERE id = 2)",
            "SELECT a FROM t WHERE b = 1 AND c = (SELECT x FROM OPENQUERY(srv, 'select 1'))",
            "SELECT a FROM t WHERE b = 1 AND xp_cmdshell(N'dir') = 0",
            "SELECT a FROM t WHERE b = 1 FOR JSON PATH",
            // A literal that a parameter would turn into a call or a qualified name.
            "SELECT a FROM t WHERE b = 5(1)",
            "SELECT a FROM t WHERE b = 5 .c",
            "SELECT a FROM t WHERE b = N'x'(1)",
        ];
        for sql in corpus {
            let verdict = check(sql, MsSql, &r);
            lifted_agrees(MsSql, &r, sql, &verdict);
        }
        assert!(check("SELECT COUNT(*) FROM hidden WHERE 1 = 1", MsSql, &r).is_ok());
        // The corpus does exercise lifting.
        assert!(
            corpus
                .iter()
                .filter(|s| !crate::db::lift::lift(s, MsSql).params.is_empty())
                .count()
                >= 20
        );
    }

    #[test]
    fn lifting_agrees_whatever_follows_the_literal() {
        // Each lifted literal with each thing that could follow it: the template must never
        // get a verdict its original does not.
        let r = rules(&[], &["secrets"], &["dbo.hidden.*", "main.hidden.*"]);
        let follows = [
            "",
            "(1)",
            " (1)",
            " .c",
            ".c",
            " x",
            " AS x",
            "[1]",
            "::int",
            " COLLATE Latin1_General_BIN",
            " + 1",
            " IS NULL",
            " AND c = 2",
            " OR c LIKE N'y'",
            ")",
            " ORDER BY 1",
            " BETWEEN 1 AND 2",
            " IN (1)",
            " ESCAPE N'!'",
            "'x'",
            "N'x'",
            " 1",
            "e5",
            " $",
            " @x",
            ";",
            "; DROP TABLE t",
            " UNION SELECT c FROM secrets",
            " FOR XML PATH",
            " OPTION (MAXDOP 1)",
            " -- c",
            "/* c */",
            "'",
            "N",
            "..c",
            " .. c",
            "@",
            "#",
            "[x]",
            " [x]",
            "\"x\"",
            "e",
            "E+5",
            "$1",
            "?",
            ":x",
            ".5",
            "0x1",
            " x'00'",
            "--c",
            "/**/(1)",
            "/**/.c",
            " (SELECT 1)",
            " - 1",
            "-1",
            " WITH (NOLOCK)",
            " JOIN secrets s ON 1 = 1",
            ", secrets",
        ];
        for (d, literals) in [
            (MsSql, ["5", "N'x'", "1.5E3", "0"]),
            (Sqlite, ["5", "'x'", "1.5", "0"]),
        ] {
            for table in ["t", "hidden"] {
                for op in ["=", "<>", ">", "LIKE", "!="] {
                    for lit in literals {
                        for tail in follows {
                            let sql =
                                format!("SELECT COUNT(*) FROM {table} WHERE b {op} {lit}{tail}");
                            let verdict = check(&sql, d, &r);
                            lifted_agrees(d, &r, &sql, &verdict);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sql_server_variables_are_not_columns() {
        // A variable never names a hidden column (the server would refuse it as undeclared);
        // a bracketed `[@x]` is a column and is checked as one.
        let r = rules(&[], &[], &["t.*"]);
        passes_with(MsSql, &r, "SELECT COUNT(*) FROM t WHERE @x = 1");
        refused_with(MsSql, &r, "SELECT COUNT(*) FROM t WHERE [@x] = 1");
    }

    #[track_caller]
    fn passes_with(d: SqlDialect, r: &AccessRules, sql: &str) -> CheckedQuery {
        let verdict = check(sql, d, r);
        lifted_agrees(d, r, sql, &verdict);
        match verdict {
            Ok(q) => q,
            Err(e) => panic!("expected {sql:?} to pass on {d:?}, got {e:?}"),
        }
    }

    #[track_caller]
    fn passes(d: SqlDialect, sql: &str) -> CheckedQuery {
        passes_with(d, &AccessRules::default(), sql)
    }

    #[track_caller]
    fn refused_with(d: SqlDialect, r: &AccessRules, sql: &str) -> GuardError {
        let verdict = check(sql, d, r);
        lifted_agrees(d, r, sql, &verdict);
        match verdict {
            Ok(q) => panic!("expected {sql:?} to be refused on {d:?}, it passed: {q:?}"),
            Err(e) => e,
        }
    }

    #[track_caller]
    fn refused(d: SqlDialect, sql: &str) -> GuardError {
        refused_with(d, &AccessRules::default(), sql)
    }

    #[track_caller]
    fn assert_forbidden(d: SqlDialect, sql: &str) {
        let e = refused(d, sql);
        assert!(
            matches!(e, GuardError::Forbidden(_)),
            "{sql:?} on {d:?}: {e:?}"
        );
    }

    /// Refused as forbidden, with a message that says `text`.
    #[track_caller]
    fn assert_forbidden_saying(d: SqlDialect, sql: &str, text: &str) {
        match refused(d, sql) {
            GuardError::Forbidden(m) => assert!(m.contains(text), "{sql}: {m}"),
            e => panic!("{sql}: {e:?}"),
        }
    }

    #[track_caller]
    fn assert_not_a_query(d: SqlDialect, sql: &str, kind: &str) {
        assert_eq!(
            refused(d, sql),
            GuardError::NotAQuery(kind.to_string()),
            "{sql:?}"
        );
    }

    #[track_caller]
    fn assert_table_denied(d: SqlDialect, r: &AccessRules, sql: &str) -> String {
        match refused_with(d, r, sql) {
            GuardError::TableDenied(m) => m,
            e => panic!("{sql:?} on {d:?}: expected TableDenied, got {e:?}"),
        }
    }

    #[track_caller]
    fn assert_column_denied(d: SqlDialect, r: &AccessRules, sql: &str) -> String {
        match refused_with(d, r, sql) {
            GuardError::ColumnDenied(m) => m,
            e => panic!("{sql:?} on {d:?}: expected ColumnDenied, got {e:?}"),
        }
    }

    fn names(q: &CheckedQuery) -> Vec<String> {
        q.tables.iter().map(TableRef::to_string).collect()
    }

    fn both() -> [SqlDialect; 2] {
        [Sqlite, MsSql]
    }

    fn secret_rules() -> AccessRules {
        rules(&[], &["secret", "hr.*"], &["people.ssn", "*.password_hash"])
    }

    // ---- found by an adversarial review (session 11) ----

    fn salary_rules() -> AccessRules {
        rules(&[], &["secrets"], &["employees.salary", "employees.id"])
    }

    #[test]
    fn a_set_operation_under_exists_cannot_compare_hidden_columns() {
        let r = salary_rules();
        for d in both() {
            for sql in [
                "SELECT e.name FROM employees e WHERE EXISTS (SELECT * FROM employees x \
                 WHERE x.name = e.name INTERSECT SELECT e.name, 52000)",
                "SELECT e.name FROM employees e WHERE EXISTS (SELECT * FROM employees x \
                 EXCEPT SELECT e.name, 52000)",
            ] {
                assert_column_denied(d, &r, sql);
            }
            // A plain SELECT under EXISTS still may use `*`: its projection is never returned.
            passes_with(
                d,
                &r,
                "SELECT name FROM employees e WHERE EXISTS (SELECT * FROM employees x \
                 WHERE x.name = e.name)",
            );
        }
    }

    #[test]
    fn tsql_statement_keywords_after_a_query_are_refused() {
        for sql in [
            "SELECT a FROM t SHUTDOWN",
            "SELECT a SHUTDOWN",
            "SELECT a FROM (SELECT 1 AS a) COMMIT",
            "SELECT a FROM t UNION SELECT b FROM u COMMIT",
            "SELECT a FROM t CHECKPOINT",
            "SELECT a FROM t RECONFIGURE",
            "SELECT a FROM t ROLLBACK",
            "SELECT a FROM t REVERT",
            "SELECT a FROM t KILL",
        ] {
            let e = refused(MsSql, sql);
            assert!(
                matches!(&e, GuardError::Forbidden(m) if m.contains("statement keyword")),
                "{sql}: {e:?}"
            );
        }
        // Bracketed, such a word is a name; in a string or a comment it is text.
        passes(MsSql, "SELECT [commit] FROM t AS [shutdown]");
        passes(MsSql, "SELECT 'SHUTDOWN' AS s -- COMMIT");
    }

    #[test]
    fn xml_methods_cannot_read_hidden_columns() {
        let r = salary_rules();
        for sql in [
            "SELECT CAST(N'' AS xml).value(N'sql:column(\"salary\")', N'int') AS s FROM employees",
            "SELECT name FROM employees WHERE CAST(N'' AS xml).exist(N'sql:column(\"salary\")[. > 6]') = 1",
            "SELECT name FROM employees e CROSS APPLY (SELECT CAST(N'' AS xml) AS x) c \
             WHERE x.value(N'sql:column(\"e.salary\")', N'int') > 1",
        ] {
            let m = assert_column_denied(MsSql, &r, sql);
            assert!(m.contains("XML method"), "{m}");
        }
        // Without hidden columns an XML method is an ordinary expression.
        passes(
            MsSql,
            "SELECT CAST(N'<a>1</a>' AS xml).value(N'(/a)[1]', N'int') AS v FROM t",
        );
    }

    #[test]
    fn letters_whose_capitals_are_ascii_name_the_hidden_column_too() {
        let r = salary_rules();
        // Long s (capital S) and dotless i (capital I), and the fi ligature (capital FI): a
        // case-insensitive collation may compare them as the ASCII letters.
        for sql in [
            "SELECT \u{17F}alary AS s FROM employees",
            "SELECT [\u{17F}ALARY] FROM employees",
        ] {
            assert_column_denied(MsSql, &r, sql);
        }
        let iban = rules(&[], &[], &["employees.iban", "employees.profile"]);
        for sql in [
            "SELECT \u{131}ban FROM employees",
            "SELECT e.[pro\u{FB01}le] FROM employees e",
        ] {
            assert_column_denied(MsSql, &iban, sql);
        }
        // A name is still a name: ordinary non-ASCII letters pass.
        passes_with(MsSql, &r, "SELECT name AS n\u{e4}me FROM employees");
    }

    #[test]
    fn many_ctes_or_table_references_are_too_complex_and_cheap_to_refuse() {
        for d in both() {
            let ctes: Vec<String> = (0..=MAX_CTES)
                .map(|i| format!("a{i} AS (SELECT 1 AS x)"))
                .collect();
            let sql = format!("WITH {} SELECT x FROM a0", ctes.join(", "));
            assert_eq!(refused(d, &sql), GuardError::TooComplex);
            let refs = vec!["t"; MAX_TABLE_REFERENCES + 1].join(", ");
            let sql = format!("SELECT 1 AS x FROM {refs}");
            assert_eq!(refused(d, &sql), GuardError::TooComplex);
            // At the limits it passes.
            let ctes: Vec<String> = (0..MAX_CTES)
                .map(|i| format!("a{i} AS (SELECT 1 AS x)"))
                .collect();
            let refs = vec!["a0"; MAX_TABLE_REFERENCES - MAX_CTES].join(", ");
            passes(
                d,
                &format!("WITH {} SELECT 1 AS x FROM {refs}", ctes.join(", ")),
            );
        }
        // Many hex literals on one line: each is looked up in the text in constant time (it
        // was a scan from the start per literal: seconds for a query of this size).
        let sql = format!("SELECT {}", vec!["0x1"; 60_000].join(","));
        let started = std::time::Instant::now();
        let _ = check(&sql, MsSql, &AccessRules::default());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn pseudo_columns_cannot_read_hidden_columns() {
        let r = salary_rules();
        for sql in [
            "SELECT $IDENTITY AS n FROM employees",
            "SELECT $ROWGUID AS g FROM employees",
            "SELECT $node_id AS g FROM employees",
            "SELECT IDENTITYCOL AS n FROM employees",
            "SELECT e.ROWGUIDCOL AS g FROM employees e",
        ] {
            assert_column_denied(MsSql, &r, sql);
        }
        passes(MsSql, "SELECT $IDENTITY AS n FROM t");
        passes(MsSql, "SELECT IDENTITYCOL AS n FROM t");
        passes_with(MsSql, &r, "SELECT name FROM employees WHERE 1 = 1");
        for sql in [
            "SELECT rowid AS r FROM employees",
            "SELECT name FROM employees ORDER BY _rowid_",
            "SELECT oid FROM employees",
        ] {
            assert_column_denied(Sqlite, &r, sql);
        }
        passes(Sqlite, "SELECT rowid FROM t");
    }

    #[test]
    fn index_hints_are_refused_on_tables_with_hidden_columns() {
        let r = salary_rules();
        assert_column_denied(
            MsSql,
            &r,
            "SELECT name FROM employees WITH (INDEX(idx_salary))",
        );
        assert_column_denied(
            Sqlite,
            &r,
            "SELECT name FROM employees INDEXED BY idx_salary",
        );
        passes(MsSql, "SELECT name FROM t WITH (INDEX(ix))");
        passes(Sqlite, "SELECT name FROM t INDEXED BY ix");
    }

    #[test]
    fn bare_lock_hints_and_hidden_comment_lines_are_refused_on_sql_server() {
        assert_forbidden(MsSql, "SELECT a FROM t HOLDLOCK");
        assert_forbidden(MsSql, "SELECT a FROM t UPDLOCK");
        assert_forbidden(MsSql, "SELECT 1 AS a -- x\rSELECT 2");
        // Windows line ends are ordinary.
        passes(MsSql, "SELECT 1 AS a -- note\r\nFROM t");
        passes(MsSql, "SELECT [holdlock] FROM t");
    }

    #[test]
    fn a_hex_string_is_refused_on_sql_server() {
        // T-SQL reads `X'41'` as column X aliased '41'.
        assert_forbidden(MsSql, "SELECT X'41' FROM employees");
        passes(MsSql, "SELECT 0x41 AS b");
    }

    #[test]
    fn a_cte_named_like_a_table_only_after_folding_width_is_checked_as_the_table() {
        let r = salary_rules();
        // On a width-sensitive collation `secrets` is the table, not the CTE.
        assert_table_denied(
            MsSql,
            &r,
            "WITH \u{ff53}\u{ff45}\u{ff43}\u{ff52}\u{ff45}\u{ff54}\u{ff53} AS (SELECT 1 AS a) \
             SELECT * FROM secrets",
        );
        passes_with(MsSql, &r, "WITH s AS (SELECT 1 AS a) SELECT * FROM s");
    }

    // ---- accepted queries ----

    #[test]
    fn ordering_by_position_is_refused_when_a_table_has_hidden_columns() {
        let r = secret_rules();
        for sql in [
            "SELECT * FROM people ORDER BY 3 DESC",
            "SELECT * FROM people GROUP BY 1",
            "SELECT name FROM (SELECT * FROM people ORDER BY 2) p",
            "SELECT name FROM people UNION SELECT name FROM orders ORDER BY 1",
        ] {
            for d in both() {
                assert!(
                    matches!(refused_with(d, &r, sql), GuardError::ColumnDenied(_)),
                    "{sql}"
                );
            }
        }
    }

    /// `q.column` is checked against the tables `q` could name in the `FROM` clauses in scope,
    /// not against every table the query reads: `c.id` passes beside a hidden `employees.id`.
    /// A qualifier that names nothing the guard can resolve, and a bare name, are checked
    /// against every table read, as before.
    #[test]
    fn a_qualified_column_is_judged_by_the_tables_its_qualifier_names() {
        let r = salary_rules();
        for d in both() {
            for sql in [
                "SELECT c.id, e.name FROM customers c JOIN employees e ON e.name = c.name",
                "SELECT customers.id FROM customers JOIN employees e ON e.name = customers.name",
                // The outer `e` is customers; the inner one, employees, is read by name only.
                "SELECT e.id FROM customers e WHERE EXISTS (SELECT 1 FROM employees e \
                 WHERE e.name = 'x')",
            ] {
                passes_with(d, &r, sql);
            }
            for sql in [
                "SELECT e.id FROM customers c JOIN employees e ON e.name = c.name",
                "SELECT id FROM customers c JOIN employees e ON e.name = c.name",
                "SELECT employees.id FROM employees e",
                "SELECT z.id FROM customers c JOIN employees e ON e.name = c.name",
                // An inner `e` that shadows an outer one: both count.
                "SELECT e.name FROM customers e WHERE e.id IN (SELECT e.id FROM employees e)",
                // A correlated reference to the outer query's table.
                "SELECT name FROM employees e WHERE EXISTS (SELECT 1 FROM customers c \
                 WHERE c.name = e.name AND e.salary > 10)",
            ] {
                let m = assert_column_denied(d, &r, sql);
                assert!(m.contains("of table `employees`"), "{sql}: {m}");
            }
        }
        // A query's ORDER BY belongs to its own SELECT, even where an outer one reuses the
        // alias for another table.
        assert_column_denied(
            MsSql,
            &r,
            "SELECT (SELECT TOP 1 e.name FROM employees e ORDER BY e.salary) AS top_paid \
             FROM customers e",
        );
        assert_column_denied(
            Sqlite,
            &r,
            "SELECT (SELECT e.name FROM employees e ORDER BY e.salary DESC LIMIT 1) AS top_paid \
             FROM customers e",
        );
        // SQLite's `rowid` reads the INTEGER PRIMARY KEY (here the hidden `employees.id`),
        // qualified or not.
        for sql in [
            "SELECT e.rowid FROM employees e",
            "SELECT c.name FROM customers c JOIN employees e ON e.name = c.name ORDER BY e._rowid_",
        ] {
            let m = assert_column_denied(Sqlite, &r, sql);
            assert!(m.contains("INTEGER PRIMARY KEY"), "{sql}: {m}");
        }
        // As the server compares names: case, and width on SQL Server.
        assert_column_denied(
            MsSql,
            &r,
            "SELECT E.id FROM customers c JOIN employees e ON e.name = c.name",
        );
        assert_column_denied(
            MsSql,
            &r,
            "SELECT \u{ff25}.id FROM customers c JOIN employees e ON e.name = c.name",
        );
    }

    /// A position over a projection without a `*` names one of its expressions, whose columns
    /// are checked by name; over a `*`, it is judged by what the `*` expands, as a nested `*`
    /// is. So is `DISTINCT *`. Found with `a_nested_star_is_judged_by_what_it_expands`.
    #[test]
    fn positions_and_distinct_are_judged_by_the_star_they_could_reach() {
        let r = salary_rules();
        for d in both() {
            for sql in [
                "SELECT name, dept FROM employees ORDER BY 2 DESC",
                "SELECT c.*, e.name FROM customers c JOIN employees e ON e.name = c.name ORDER BY 3",
                "SELECT DISTINCT c.*, e.name FROM customers c JOIN employees e ON e.name = c.name",
            ] {
                passes_with(d, &r, sql);
            }
            for sql in [
                "SELECT c.*, e.* FROM customers c JOIN employees e ON e.name = c.name ORDER BY 3",
                "SELECT * FROM customers c JOIN employees e ON e.name = c.name ORDER BY 3",
                "SELECT DISTINCT e.*, c.name FROM customers c JOIN employees e ON e.name = c.name",
                // Under EXISTS the `*` passes, but a grouping by position would still read it.
                "SELECT name FROM customers WHERE EXISTS (SELECT * FROM employees GROUP BY 4 \
                 HAVING count(*) > 1)",
            ] {
                let m = assert_column_denied(d, &r, sql);
                assert!(m.contains("`employees`"), "{sql}: {m}");
            }
        }
        passes_with(Sqlite, &r, "SELECT name FROM employees GROUP BY 1");
    }

    #[test]
    fn ordering_by_position_passes_without_hidden_columns() {
        passes(SqlDialect::Sqlite, "SELECT a, b FROM t ORDER BY 2 DESC");
    }

    #[test]
    fn a_simple_select_passes_and_reports_its_table() {
        for d in both() {
            let q = passes(d, "SELECT id, name FROM customers WHERE id = 1");
            assert_eq!(names(&q), ["customers"]);
            assert!(!q.has_order_by);
        }
    }

    #[test]
    fn joins_pass_and_report_every_table() {
        for d in both() {
            let q = passes(
                d,
                "SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id \
                 LEFT JOIN items i ON i.order_id = o.id",
            );
            assert_eq!(names(&q), ["customers", "orders", "items"]);
        }
    }

    #[test]
    fn a_cte_passes_and_its_name_is_not_reported_as_a_table() {
        for d in both() {
            let q = passes(
                d,
                "WITH big AS (SELECT * FROM orders WHERE total > 100) \
                 SELECT customer_id, count(*) FROM big GROUP BY customer_id",
            );
            assert_eq!(names(&q), ["orders"]);
        }
    }

    #[test]
    fn a_cte_selecting_a_constant_references_no_table() {
        for d in both() {
            let q = passes(d, "WITH x AS (SELECT 1) SELECT * FROM x");
            assert!(q.tables.is_empty());
        }
    }

    #[test]
    fn window_functions_pass() {
        for d in both() {
            passes(
                d,
                "SELECT id, row_number() OVER (PARTITION BY customer_id ORDER BY total DESC) AS rn, \
                 SUM(total) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM orders",
            );
        }
    }

    #[test]
    fn group_by_and_having_pass() {
        for d in both() {
            passes(
                d,
                "SELECT customer_id, SUM(total) AS s FROM orders GROUP BY customer_id \
                 HAVING SUM(total) > 10",
            );
        }
    }

    #[test]
    fn union_passes_and_reports_both_branches() {
        for d in both() {
            let q = passes(
                d,
                "SELECT id FROM a UNION SELECT id FROM b EXCEPT SELECT id FROM c",
            );
            assert_eq!(names(&q), ["a", "b", "c"]);
        }
    }

    #[test]
    fn subqueries_in_where_select_and_from_pass() {
        for d in both() {
            let q = passes(
                d,
                "SELECT o.id, (SELECT MAX(total) FROM orders) AS m FROM (SELECT * FROM orders) o \
                 WHERE o.customer_id IN (SELECT id FROM customers WHERE country = 'DE') \
                 AND EXISTS (SELECT 1 FROM items WHERE items.order_id = o.id)",
            );
            assert_eq!(names(&q), ["orders", "customers", "items"]);
        }
    }

    #[test]
    fn column_names_that_look_like_keywords_pass() {
        for d in both() {
            passes(d, "SELECT updated_at, deleted FROM t");
        }
    }

    #[test]
    fn dangerous_words_inside_string_literals_pass() {
        for d in both() {
            passes(d, "SELECT 'DROP TABLE x' AS s");
            passes(d, "SELECT * FROM t WHERE note = 'DELETE FROM y; --'");
        }
    }

    #[test]
    fn dangerous_words_inside_comments_pass() {
        for d in both() {
            passes(d, "-- DELETE FROM t;\nSELECT 1 /* DROP TABLE x; */ AS one");
        }
    }

    #[test]
    fn mssql_top_passes() {
        let q = passes(MsSql, "SELECT TOP 10 * FROM dbo.Customers");
        assert_eq!(
            q.tables,
            [TableRef {
                schema: Some("dbo".into()),
                name: "Customers".into()
            }]
        );
    }

    #[test]
    fn mssql_bracket_quoting_is_reported_unquoted() {
        let q = passes(
            MsSql,
            "SELECT [Order ID], [Unit Price] FROM [dbo].[Order Details]",
        );
        assert_eq!(
            q.tables,
            [TableRef {
                schema: Some("dbo".into()),
                name: "Order Details".into()
            }]
        );
    }

    #[test]
    fn mssql_offset_fetch_passes_and_has_order_by() {
        let q = passes(
            MsSql,
            "SELECT id FROM dbo.orders ORDER BY id OFFSET 10 ROWS FETCH NEXT 5 ROWS ONLY",
        );
        assert!(q.has_order_by);
    }

    #[test]
    fn only_an_ordered_plain_select_with_nothing_after_its_order_by_pages_in_sql() {
        for sql in [
            "SELECT id FROM dbo.orders ORDER BY id",
            "SELECT DISTINCT city FROM customers WHERE id > 3 ORDER BY city DESC;",
            "WITH c AS (SELECT TOP 5 id FROM t ORDER BY id) SELECT id FROM c ORDER BY id",
            "SELECT id, (SELECT TOP 1 x FROM u) AS y FROM t ORDER BY 1",
        ] {
            assert!(passes(MsSql, sql).pageable_in_sql, "{sql}");
        }
        for sql in [
            "SELECT id FROM t",
            "SELECT TOP 10 id FROM t ORDER BY id",
            "SELECT TOP (10) PERCENT id FROM t ORDER BY id",
            "SELECT id FROM t ORDER BY id OFFSET 10 ROWS",
            "SELECT id FROM t ORDER BY id OFFSET 10 ROWS FETCH NEXT 5 ROWS ONLY",
            "SELECT id FROM t ORDER BY id FOR JSON PATH",
            "SELECT id FROM t ORDER BY id FOR XML AUTO",
            "SELECT id FROM a UNION SELECT id FROM b ORDER BY 1",
            "SELECT * FROM (SELECT TOP 3 id FROM t ORDER BY id) s",
            // `OFFSET … FETCH` would land after the hint.
            "SELECT id FROM t ORDER BY id OPTION (MAXDOP 1)",
        ] {
            assert!(!passes(MsSql, sql).pageable_in_sql, "{sql}");
        }
        assert!(!passes(Sqlite, "SELECT id FROM t ORDER BY id LIMIT 5").pageable_in_sql);
    }

    #[test]
    fn only_linear_functions_and_operators_make_linear_steps() {
        for d in both() {
            for sql in [
                "SELECT id, lower(name) AS n, count(*) AS c FROM t WHERE a = 1 AND b > 2 GROUP BY id, name",
                "SELECT substr(name, 1, 3) || trim(city) AS x FROM t ORDER BY 1",
                "SELECT coalesce(a, 0) + abs(b) * 2 AS s FROM t",
            ] {
                assert!(passes(d, sql).linear_steps, "{sql}");
            }
            for sql in [
                "SELECT instr(a, b) AS i FROM t",
                "SELECT replace(a, 'x', b) AS r FROM t",
                "SELECT printf('%.*c', 1000000, 'a') AS p",
                "SELECT id FROM t WHERE name LIKE '%a%b%'",
                "SELECT id FROM t WHERE lower(name) NOT LIKE b",
            ] {
                assert!(!passes(d, sql).linear_steps, "{sql}");
            }
        }
        for sql in [
            "SELECT id FROM t WHERE name GLOB '*a*'",
            "SELECT trim(a, b) AS r FROM t",
            "SELECT ltrim(a, 'xy') AS r FROM t",
        ] {
            assert!(!passes(Sqlite, sql).linear_steps, "{sql}");
        }
    }

    #[test]
    fn plain_columns_are_the_tables_own_columns_unchanged() {
        for d in both() {
            let p = passes(d, "SELECT o.order_id, status AS status, total + 1 AS total, customer_id AS order_ref FROM orders o WHERE order_id = 5")
                .plain_columns
                .expect("one table");
            assert!(p.is_plain("ORDER_ID") && p.is_plain("status"), "{p:?}");
            assert!(
                !p.is_plain("total") && !p.is_plain("order_ref") && !p.is_plain("customer_id"),
                "{p:?}"
            );
            // A renamed column or an expression takes the key's name: not the key.
            for sql in [
                "SELECT customer_id AS order_id, status FROM orders",
                "SELECT order_id + 1 AS order_id FROM orders",
                "SELECT 7 AS order_id, COUNT(*) AS n FROM orders",
                "SELECT *, 7 AS order_id FROM orders",
            ] {
                let p = passes(d, sql).plain_columns.expect("one table");
                assert!(!p.is_plain("order_id"), "{sql}: {p:?}");
            }
            let p = passes(d, "SELECT o.* FROM orders o")
                .plain_columns
                .expect("one table");
            assert!(p.is_plain("order_id"));
            // Not one table read directly: no plain columns at all.
            for sql in [
                "SELECT order_id FROM (SELECT customer_id AS order_id FROM orders) s",
                "SELECT b.order_id FROM orders a JOIN orders b ON b.order_id = a.order_id + 1",
                "SELECT order_id FROM orders UNION SELECT customer_id FROM orders",
                "SELECT order_id FROM orders, customers",
                "WITH x AS (SELECT customer_id AS order_id FROM orders) SELECT order_id FROM x",
            ] {
                assert_eq!(passes(d, sql).plain_columns, None, "{sql}");
            }
        }
    }

    #[test]
    fn an_order_by_in_a_subquery_is_not_a_top_level_order_by() {
        let q = passes(
            Sqlite,
            "SELECT * FROM (SELECT id FROM t ORDER BY id LIMIT 3) s",
        );
        assert!(!q.has_order_by);
        let q = passes(Sqlite, "SELECT id FROM a UNION SELECT id FROM b ORDER BY 1");
        assert!(q.has_order_by);
    }

    #[test]
    fn a_trailing_semicolon_passes() {
        for d in both() {
            passes(d, "SELECT 1;");
            passes(d, "SELECT * FROM t ; -- done");
        }
    }

    #[test]
    fn tables_are_deduplicated_case_insensitively() {
        let q = passes(
            Sqlite,
            "SELECT * FROM Orders o JOIN orders p ON o.id = p.parent_id",
        );
        assert_eq!(names(&q), ["Orders"]);
    }

    #[test]
    fn ordinary_functions_pass() {
        passes(
            MsSql,
            "SELECT COUNT(*), SUM(x), LOWER(n), COALESCE(a, b), DATEADD(day, 1, d), \
             CONVERT(varchar(10), d, 120), ISNULL(a, 0), LEN(n) FROM t",
        );
        passes(
            Sqlite,
            "SELECT count(*), sum(x), lower(n), coalesce(a, b), date('now'), \
             strftime('%Y', d), sqlite_compileoption_get(0) FROM t",
        );
    }

    #[test]
    fn mssql_for_json_and_for_xml_pass() {
        passes(MsSql, "SELECT id, name FROM dbo.t FOR JSON AUTO");
        passes(MsSql, "SELECT id, name FROM dbo.t FOR XML PATH('row')");
    }

    #[test]
    fn mssql_non_locking_table_hints_pass() {
        passes(MsSql, "SELECT * FROM dbo.t WITH (NOLOCK)");
        passes(MsSql, "SELECT * FROM dbo.t WITH (NOLOCK, INDEX(ix_t))");
    }

    /// The old hint form `t (NOLOCK)` is also how a call of a function with column arguments
    /// reads: `fn_my_permissions(nolock, nowait)` would list a hidden table's columns.
    #[test]
    fn mssql_old_hint_form_is_refused_with_the_new_form_as_the_fix() {
        let e = refused(MsSql, "SELECT * FROM dbo.t (NOLOCK)");
        assert!(e.to_string().contains("write `dbo.t WITH (...)`"), "{e}");
        refused(
            MsSql,
            "SELECT p.* FROM (SELECT N'dbo.secrets' AS nolock, N'OBJECT' AS nowait) d \
             CROSS APPLY fn_my_permissions(nolock, nowait) p",
        );
    }

    /// Found by a review (session 17): ways to reach a hidden column without naming it where
    /// the guard looked.
    #[test]
    fn hidden_columns_stay_hidden_behind_in_table_methods_positions_and_invisible_characters() {
        let r = rules(&[], &["secrets"], &["employees.salary", "stores.location"]);
        // SQLite: `x IN t` compares every column of t.
        let e = refused_with(
            Sqlite,
            &r,
            "SELECT e.id FROM employees e WHERE (e.id, e.name, 1) IN employees",
        );
        assert!(e.to_string().contains("IN employees"), "{e}");
        passes_with(
            Sqlite,
            &r,
            "SELECT id FROM employees WHERE id IN (SELECT id FROM employees)",
        );
        // Positions behind `+`, parentheses, COLLATE and likely().
        for order in ["+3", "(3)", "3 COLLATE BINARY", "likely(3)"] {
            refused_with(
                Sqlite,
                &r,
                &format!("SELECT * FROM employees ORDER BY {order}"),
            );
        }
        refused_with(Sqlite, &r, "SELECT * FROM employees GROUP BY +2");
        // Over named columns a position names one of them (or is out of range).
        passes_with(Sqlite, &r, "SELECT dept FROM employees GROUP BY +1");
        passes_with(
            Sqlite,
            &r,
            "SELECT * FROM employees ORDER BY name COLLATE NOCASE",
        );
        // SQLite full-text: MATCH and the helpers read columns by number or inside a string.
        // MATCH is a step that may run long, like any non-linear operator.
        assert!(!passes(Sqlite, "SELECT * FROM docs WHERE docs MATCH 'x'").linear_steps);
        for sql in [
            "SELECT name FROM employees WHERE employees MATCH 'salary: 9*'",
            "SELECT name, snippet(employees, 3, '', '', '', 8) FROM employees",
        ] {
            let e = refused_with(Sqlite, &r, sql);
            assert!(e.to_string().contains("full-text"), "{sql}: {e}");
        }
        // T-SQL: a CLR column's methods and properties.
        for sql in [
            "SELECT location.STAsText() AS a FROM stores",
            "SELECT location.Lat AS b FROM stores",
            "SELECT id FROM stores WHERE location.STDistance(NULL) > 0",
        ] {
            let e = refused_with(MsSql, &r, sql);
            assert!(e.to_string().contains("location"), "{sql}: {e}");
        }
        passes_with(MsSql, &r, "SELECT s.id, s.name FROM stores s");
        // A qualifier that names a table, alias or CTE is no column, hidden name or not.
        passes_with(
            MsSql,
            &r,
            "SELECT salary.amount FROM employees e JOIN salary ON salary.emp_id = e.id",
        );
        let notes = rules(&[], &[], &["*.notes"]);
        passes_with(Sqlite, &notes, "SELECT notes.id FROM notes");
        passes_with(MsSql, &notes, "SELECT notes.id FROM dbo.notes");
        passes_with(
            MsSql,
            &notes,
            "SELECT notes.id FROM (SELECT id FROM dbo.t) AS notes",
        );
        // T-SQL: an invisible character a collation ignores.
        for sql in [
            "SELECT * FROM [secr\u{AD}ets]",
            "SELECT [sal\u{200B}ary] FROM employees",
            "SELECT name FROM [sys\u{AD}].[columns]",
            "SELECT \"na\u{FEFF}me\" FROM employees",
        ] {
            let e = refused_with(MsSql, &r, sql);
            assert!(e.to_string().contains("invisible character"), "{sql}: {e}");
        }
        passes_with(MsSql, &r, "SELECT [Zürich-東京] FROM employees");
        // Without deny rules there is nothing to dodge: a Persian name keeps its U+200C.
        passes(MsSql, "SELECT [نام\u{200C}خانوادگی] FROM people");
        // T-SQL: XML methods in brackets, and FORCESEEK's index.
        for sql in [
            "SELECT CAST(N'' AS xml).[value](N'sql:column(\"salary\")', N'int') AS s FROM employees",
            "SELECT name FROM employees WITH (FORCESEEK(ix_dept_salary(dept))) WHERE dept = N'x'",
        ] {
            refused_with(MsSql, &r, sql);
        }
        passes_with(
            MsSql,
            &r,
            "SELECT name FROM employees WITH (FORCESEEK) WHERE dept = N'x'",
        );
    }

    #[test]
    fn mssql_cross_apply_with_a_subquery_passes() {
        let q = passes(
            MsSql,
            "SELECT a.id, c.n FROM a CROSS APPLY (SELECT COUNT(*) AS n FROM b WHERE b.a_id = a.id) c",
        );
        assert_eq!(names(&q), ["a", "b"]);
    }

    #[test]
    fn mssql_pivot_passes() {
        passes(
            MsSql,
            "SELECT * FROM (SELECT region, quarter, amount FROM dbo.sales) s \
             PIVOT (SUM(amount) FOR quarter IN ([Q1], [Q2])) p",
        );
    }

    #[test]
    fn sqlite_json_each_passes_and_is_not_a_table() {
        let q = passes(
            Sqlite,
            "SELECT t.id, j.value FROM t, json_each(t.tags) AS j",
        );
        assert_eq!(names(&q), ["t"]);
    }

    #[test]
    fn sqlite_main_schema_passes() {
        let q = passes(Sqlite, "SELECT * FROM main.orders");
        assert_eq!(
            q.tables,
            [TableRef {
                schema: Some("main".into()),
                name: "orders".into()
            }]
        );
    }

    #[test]
    fn a_recursive_cte_passes_under_an_allow_list_without_its_name() {
        let r = rules(&["nodes"], &[], &[]);
        for d in both() {
            let sql = match d {
                Sqlite => {
                    "WITH RECURSIVE tree(id) AS (SELECT id FROM nodes WHERE parent IS NULL \
                           UNION ALL SELECT n.id FROM nodes n JOIN tree ON n.parent = tree.id) \
                           SELECT id FROM tree"
                }
                MsSql => {
                    "WITH tree(id) AS (SELECT id FROM nodes WHERE parent IS NULL \
                          UNION ALL SELECT n.id FROM nodes n JOIN tree ON n.parent = tree.id) \
                          SELECT id FROM tree"
                }
            };
            let q = passes_with(d, &r, sql);
            assert_eq!(names(&q), ["nodes"]);
        }
    }

    #[test]
    fn sqlite_ctes_may_reference_later_ctes() {
        let r = rules(&["t"], &[], &[]);
        passes_with(
            Sqlite,
            &r,
            "WITH a AS (SELECT x FROM b), b AS (SELECT x FROM t) SELECT x FROM a",
        );
    }

    #[test]
    fn a_long_but_bounded_expression_chain_passes_without_overflowing() {
        let sql = format!("SELECT 1{}", "+1".repeat(9_000));
        passes(Sqlite, &sql);
    }

    #[test]
    fn thousands_of_tables_and_columns_are_checked_quickly() {
        let tables: Vec<String> = (0..5_000).map(|i| format!("t{i}")).collect();
        let columns: Vec<String> = (0..5_000).map(|i| format!("c{i}")).collect();
        let sql = format!("SELECT {} FROM {}", columns.join(", "), tables.join(", "));
        let start = std::time::Instant::now();
        let q = passes_with(Sqlite, &secret_rules(), &sql);
        assert_eq!(q.tables.len(), 5_000);
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn a_long_in_list_passes() {
        let list: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        passes(
            MsSql,
            &format!("SELECT * FROM t WHERE id IN ({})", list.join(", ")),
        );
    }

    #[test]
    fn a_top_level_star_over_a_table_with_hidden_columns_passes() {
        // The caller masks hidden result columns by name.
        passes_with(Sqlite, &secret_rules(), "SELECT * FROM people");
        passes_with(
            Sqlite,
            &secret_rules(),
            "SELECT p.* FROM people p ORDER BY p.id",
        );
    }

    /// Rows that differ only in a hidden column stay apart under `DISTINCT *`, so the number
    /// of rows would tell whether their hidden values are equal. Found by reasoning about what
    /// `tests/it/guard_oracle.rs` could not see while its tables' visible columns were unique;
    /// its `visits` table, added for it, shows the leak on both backends with this rule off.
    #[test]
    fn distinct_over_a_star_with_hidden_columns_is_refused() {
        let r = salary_rules();
        for d in both() {
            for sql in [
                "SELECT DISTINCT * FROM employees",
                "SELECT DISTINCT e.* FROM employees e",
                "SELECT DISTINCT c.*, e.* FROM customers c JOIN employees e ON e.name = c.name",
            ] {
                assert_column_denied(d, &r, sql);
            }
            // Listing the visible columns, a table without hidden columns, or a projection
            // that is thrown away pass.
            passes_with(d, &r, "SELECT DISTINCT e.name, e.dept FROM employees e");
            passes_with(d, &r, "SELECT DISTINCT * FROM customers");
            passes_with(
                d,
                &r,
                "SELECT name FROM customers c WHERE EXISTS (SELECT DISTINCT * FROM employees e \
                 WHERE e.name = c.name)",
            );
        }
        passes_with(MsSql, &r, "SELECT DISTINCT TOP 3 * FROM customers");
        assert_column_denied(MsSql, &r, "SELECT DISTINCT TOP 3 * FROM employees");
    }

    #[test]
    fn a_star_under_exists_passes_even_with_hidden_columns() {
        passes_with(
            Sqlite,
            &secret_rules(),
            "SELECT id FROM orders o WHERE EXISTS (SELECT * FROM people p WHERE p.id = o.person_id)",
        );
    }

    #[test]
    fn visible_columns_of_a_table_with_hidden_columns_pass() {
        passes_with(MsSql, &secret_rules(), "SELECT p.id, p.name FROM people p");
    }

    // ---- statements that are not queries ----

    #[test]
    fn insert_update_delete_are_refused_as_not_a_query() {
        for d in both() {
            assert_not_a_query(d, "INSERT INTO t VALUES (1)", "INSERT");
            assert_not_a_query(d, "UPDATE t SET a = 1", "UPDATE");
            assert_not_a_query(d, "DELETE FROM t", "DELETE");
        }
    }

    #[test]
    fn ddl_is_refused_as_not_a_query() {
        for d in both() {
            assert_not_a_query(d, "DROP TABLE t", "DROP");
            assert_not_a_query(d, "CREATE TABLE x (a int)", "CREATE");
            assert_not_a_query(d, "ALTER TABLE t ADD c int", "ALTER");
        }
        assert_not_a_query(MsSql, "TRUNCATE TABLE t", "TRUNCATE");
    }

    #[test]
    fn merge_is_refused_as_not_a_query() {
        assert_not_a_query(
            MsSql,
            "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE;",
            "MERGE",
        );
    }

    #[test]
    fn exec_forms_are_refused_as_not_a_query() {
        assert_not_a_query(MsSql, "EXEC('DELETE FROM t')", "EXEC");
        assert_not_a_query(MsSql, "EXECUTE sp_executesql N'SELECT 1'", "EXECUTE");
        assert_not_a_query(MsSql, "exec xp_cmdshell 'dir'", "EXEC");
    }

    #[test]
    fn waitfor_is_refused_as_not_a_query() {
        assert_not_a_query(MsSql, "WAITFOR DELAY '00:00:05'", "WAITFOR");
    }

    #[test]
    fn session_and_transaction_statements_are_refused_as_not_a_query() {
        assert_not_a_query(MsSql, "BEGIN TRAN", "BEGIN");
        assert_not_a_query(MsSql, "SET ROWCOUNT 0", "SET");
        assert_not_a_query(MsSql, "DECLARE @x int", "DECLARE");
        assert_not_a_query(MsSql, "USE master", "USE");
        assert_not_a_query(MsSql, "GRANT SELECT ON t TO someone", "GRANT");
        assert_not_a_query(Sqlite, "BEGIN", "BEGIN");
        assert_not_a_query(Sqlite, "COMMIT", "COMMIT");
    }

    #[test]
    fn sqlite_attach_and_pragma_are_refused_as_not_a_query() {
        assert_not_a_query(Sqlite, "ATTACH DATABASE 'x.db' AS y", "ATTACH");
        assert_not_a_query(Sqlite, "PRAGMA writable_schema=1", "PRAGMA");
    }

    #[test]
    fn statements_sqlparser_cannot_parse_are_refused_as_what_they_are() {
        // These have no sqlparser 0.64 AST (or this form has none): the refusal names the
        // statement kind, not a syntax error.
        for (d, sql, kind) in [
            (MsSql, "BULK INSERT t FROM 'c:\\x.csv'", "BULK"),
            (MsSql, "DBCC CHECKDB", "DBCC"),
            (MsSql, "SHUTDOWN", "SHUTDOWN"),
            (MsSql, "EXEC", "EXEC"),
            (Sqlite, "VACUUM INTO 'x.db'", "VACUUM"),
            (Sqlite, "PRAGMA table_info(orders)", "PRAGMA"),
            (Sqlite, "pragma writable_schema = on", "PRAGMA"),
            (MsSql, "UPDATE t SET a = = 1", "UPDATE"),
        ] {
            assert_eq!(refused(d, sql), GuardError::NotAQuery(kind.into()), "{sql}");
        }
        // A text that starts like no statement stays a syntax error.
        assert!(matches!(
            refused(MsSql, "SELEC a FROM t"),
            GuardError::Parse(_)
        ));
    }

    #[test]
    fn a_second_statement_is_refused() {
        for d in both() {
            assert_eq!(
                refused(d, "SELECT 1; DROP TABLE t"),
                GuardError::MultipleStatements(2)
            );
        }
    }

    #[test]
    fn empty_input_is_refused() {
        for d in both() {
            assert_eq!(refused(d, ""), GuardError::Empty);
            assert_eq!(refused(d, "   \n\t"), GuardError::Empty);
            assert_eq!(refused(d, ";"), GuardError::Empty);
        }
    }

    #[test]
    fn input_that_is_only_a_comment_is_refused() {
        for d in both() {
            assert_eq!(refused(d, "-- SELECT 1"), GuardError::Empty);
            assert_eq!(refused(d, "/* SELECT 1 */"), GuardError::Empty);
        }
    }

    #[test]
    fn garbage_is_refused_as_a_parse_error() {
        for d in both() {
            assert!(matches!(refused(d, "SELEC 1"), GuardError::Parse(_)));
            assert!(matches!(
                refused(d, "SELECT 'unterminated"),
                GuardError::Parse(_)
            ));
        }
    }

    // ---- constructs refused inside queries ----

    /// `NEXT VALUE FOR` advances a sequence, and a rollback does not undo that: a write that
    /// the per-query transaction cannot take back. The parser does not read it today, so it
    /// is refused as a parse error; if a `sqlparser` upgrade learns it, this test fails and
    /// the guard must refuse it by name.
    #[test]
    fn next_value_for_a_sequence_is_refused() {
        for sql in [
            "SELECT NEXT VALUE FOR dbo.seq",
            "SELECT a, NEXT VALUE FOR s OVER (ORDER BY a) FROM t",
            "SELECT a FROM t WHERE a > (SELECT NEXT VALUE FOR s)",
        ] {
            refused(MsSql, sql);
        }
    }

    #[test]
    fn select_into_is_refused() {
        for d in both() {
            assert_eq!(
                refused(d, "SELECT * INTO new_t FROM t"),
                GuardError::SelectInto
            );
        }
    }

    #[test]
    fn select_into_inside_a_union_branch_is_refused() {
        assert_eq!(
            refused(MsSql, "SELECT a FROM t UNION SELECT a INTO x FROM u"),
            GuardError::SelectInto
        );
    }

    #[test]
    fn a_dml_cte_is_refused() {
        assert_forbidden(
            Sqlite,
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        );
        assert_forbidden(
            MsSql,
            "WITH d AS (DELETE FROM t OUTPUT deleted.*) SELECT * FROM d",
        );
    }

    #[test]
    fn for_update_is_refused() {
        for d in both() {
            assert_forbidden(d, "SELECT * FROM t FOR UPDATE");
        }
    }

    #[test]
    fn mssql_locking_hints_are_refused() {
        for hint in [
            "UPDLOCK",
            "XLOCK",
            "HOLDLOCK",
            "TABLOCKX",
            "TABLOCK",
            "SERIALIZABLE",
        ] {
            assert_forbidden(MsSql, &format!("SELECT * FROM dbo.t WITH ({hint})"));
        }
        assert_forbidden(
            MsSql,
            "SELECT * FROM a WITH (NOLOCK) JOIN b WITH (HOLDLOCK) ON 1 = 1",
        );
    }

    #[test]
    fn mssql_for_browse_is_refused() {
        assert_forbidden(MsSql, "SELECT a FROM t FOR BROWSE");
    }

    #[test]
    fn openrowset_and_openquery_are_refused() {
        assert_forbidden(
            MsSql,
            "SELECT * FROM OPENROWSET('SQLNCLI', 'Server=x;', 'SELECT 1')",
        );
        assert_forbidden(MsSql, "SELECT * FROM OPENQUERY(srv, 'select 1')");
        assert_forbidden(MsSql, "SELECT * FROM OPENXML(@h, '/root')");
    }

    #[test]
    fn sql_servers_rowset_functions_pass_and_read_only_their_arguments() {
        let r = rules(&[], &[], &["customers.email"]);
        for sql in [
            "SELECT c.name, s.value FROM customers c CROSS APPLY STRING_SPLIT(c.name, ' ') s",
            "SELECT value, ordinal FROM string_split(N'a,b', N',', 1)",
            "SELECT value FROM GENERATE_SERIES(1, 10)",
            "SELECT c.name, j.[key], j.value FROM customers c CROSS APPLY OPENJSON(c.tags) j",
            "SELECT j.city FROM customers c \
             CROSS APPLY OPENJSON(c.address, '$.home') WITH (city nvarchar(50) '$.city') j",
            // `x.*` expands the function's own columns, nothing of `customers`.
            "SELECT * FROM (SELECT x.* FROM customers c CROSS APPLY STRING_SPLIT(c.name, ' ') x) t",
            "SELECT * FROM (SELECT j.* FROM customers c CROSS APPLY OPENJSON(c.tags) j) t",
        ] {
            let q = passes_with(MsSql, &r, sql);
            assert!(
                names(&q).iter().all(|n| n == "customers"),
                "{sql}: {:?}",
                names(&q)
            );
        }
        // Their arguments are checked like any expression.
        for sql in [
            "SELECT x.value FROM customers c CROSS APPLY STRING_SPLIT(c.email, '@') x",
            "SELECT x.value FROM customers c CROSS APPLY STRING_SPLIT(email, '@') x",
            "SELECT j.value FROM customers c CROSS APPLY OPENJSON(c.email) j",
        ] {
            assert_column_denied(MsSql, &r, sql);
        }
        let e = refused_with(
            MsSql,
            &r,
            "SELECT j.* FROM customers c CROSS APPLY OPENJSON((SELECT c.* FOR JSON PATH)) j",
        );
        assert!(matches!(e, GuardError::ColumnDenied(_)), "{e:?}");
        // A schema-qualified name is a user's function; SQLite has none of them.
        assert_forbidden(MsSql, "SELECT value FROM dbo.STRING_SPLIT('a,b', ',')");
        assert_forbidden(Sqlite, "SELECT value FROM string_split('a,b', ',')");
        assert_forbidden(Sqlite, "SELECT value FROM generate_series(1, 10)");
    }

    /// A system-versioned table's history is read by `FOR SYSTEM_TIME` in each of T-SQL's
    /// five forms; the guard reads all of them (sqlparser alone only `AS OF`), notes the table
    /// as read by it, and checks every expression in the clause as any other.
    #[test]
    fn every_for_system_time_form_passes_and_its_times_are_checked() {
        let r = rules(&[], &["secrets"], &["customers.email"]);
        let system_time = |q: &CheckedQuery| -> Vec<String> {
            q.system_time.iter().map(|t| t.name.clone()).collect()
        };
        for sql in [
            "SELECT name FROM customers FOR SYSTEM_TIME AS OF '2024-01-01'",
            "SELECT name FROM customers FOR SYSTEM_TIME ALL",
            "SELECT name FROM customers FOR SYSTEM_TIME ALL AS c WHERE c.id = 1",
            "SELECT name FROM dbo.customers for system_time all c ORDER BY name",
            "SELECT name FROM customers FOR SYSTEM_TIME BETWEEN '2024-01-01' AND '2024-02-01'",
            "SELECT name FROM customers FOR SYSTEM_TIME FROM '2024-01-01' TO '2024-02-01' x",
            "SELECT name FROM customers FOR SYSTEM_TIME FROM DATEADD(day, -7, SYSDATETIME()) \
             TO SYSDATETIME()",
            "SELECT name FROM customers FOR SYSTEM_TIME CONTAINED IN ('2024-01-01', '2024-02-01')",
            "SELECT name FROM customers FOR SYSTEM_TIME\n  BETWEEN @from AND @to",
        ] {
            let q = passes_with(MsSql, &r, sql);
            assert!(names(&q).iter().all(|n| n.ends_with("customers")), "{sql}");
            assert_eq!(system_time(&q), ["customers"], "{sql}");
        }
        // Only the table read so; the other of a join is read as it is now.
        let q = passes_with(
            MsSql,
            &r,
            "SELECT c.name, o.id FROM customers FOR SYSTEM_TIME ALL AS c \
             JOIN orders o ON o.customer_id = c.id",
        );
        assert_eq!(system_time(&q), ["customers"]);
        assert!(system_time(&passes_with(MsSql, &r, "SELECT name FROM customers")).is_empty());
        // The times are expressions like any other.
        for sql in [
            "SELECT name FROM customers FOR SYSTEM_TIME AS OF (SELECT MAX(email) FROM customers)",
            "SELECT name FROM customers FOR SYSTEM_TIME BETWEEN '2024-01-01' AND \
             (SELECT MAX(email) FROM customers)",
            "SELECT name FROM customers FOR SYSTEM_TIME FROM (SELECT MIN(email) FROM customers) \
             TO '2024-02-01'",
            "SELECT name FROM customers FOR SYSTEM_TIME CONTAINED IN ('2024-01-01', \
             (SELECT MAX(email) FROM customers))",
        ] {
            assert_column_denied(MsSql, &r, sql);
        }
        assert_table_denied(
            MsSql,
            &r,
            "SELECT name FROM customers FOR SYSTEM_TIME FROM '2024-01-01' TO \
             (SELECT MAX(at) FROM secrets)",
        );
        // What is not one of the forms stays a syntax error; a quoted name is a name.
        for sql in [
            "SELECT name FROM customers FOR SYSTEM_TIME SOMETIMES",
            "SELECT name FROM customers FOR SYSTEM_TIME CONTAINED ('2024-01-01', '2024-02-01')",
            "SELECT name FROM customers FOR SYSTEM_TIME",
            "SELECT name FROM customers FOR [SYSTEM_TIME] ALL",
            "SELECT name FROM customers FOR SYSTEM_TIME ALL; DELETE FROM customers",
        ] {
            assert!(check(sql, MsSql, &r).is_err(), "{sql}");
        }
        assert!(matches!(
            check(
                "SELECT name FROM customers FOR SYSTEM_TIME ALL; DELETE FROM customers",
                MsSql,
                &r
            ),
            Err(GuardError::MultipleStatements(2))
        ));
        // SQLite has no system-versioned tables.
        assert!(check("SELECT name FROM customers FOR SYSTEM_TIME ALL", Sqlite, &r).is_err());
    }

    #[test]
    fn query_hints_may_end_a_tsql_query_and_only_the_allowed_ones() {
        for sql in [
            "WITH n AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
             SELECT i FROM n OPTION (MAXRECURSION 1000)",
            "SELECT a FROM t OPTION (RECOMPILE, MAXDOP 1);",
            "SELECT a FROM t WHERE a = 5 option (recompile) -- why not",
            "SELECT t.a FROM t JOIN u ON u.a = t.a OPTION (HASH JOIN, FORCE ORDER, FAST 10)",
            "SELECT a, COUNT(*) FROM t GROUP BY a OPTION (ORDER GROUP, OPTIMIZE FOR UNKNOWN)",
            "SELECT a FROM t FOR JSON PATH OPTION (KEEPFIXED PLAN)",
            // A quoted name is a name.
            "SELECT [option] FROM t [OPTION]",
        ] {
            passes(MsSql, sql);
        }
        // `OFFSET … FETCH` cannot be appended after them.
        assert!(passes(MsSql, "SELECT a FROM t ORDER BY a").pageable_in_sql);
        assert!(!passes(MsSql, "SELECT a FROM t ORDER BY a OPTION (RECOMPILE)").pageable_in_sql);
        for (sql, named) in [
            (
                "SELECT a FROM t OPTION (TABLE HINT(t, INDEX(ix)))",
                "TABLE HINT",
            ),
            ("SELECT a FROM t OPTION (USE PLAN N'<x/>')", "USE PLAN"),
            (
                "SELECT a FROM t OPTION (OPTIMIZE FOR (@x = 1))",
                "OPTIMIZE FOR (",
            ),
            (
                "SELECT a FROM t OPTION (RECOMPILE, QUERYTRACEON 3604)",
                "QUERYTRACEON",
            ),
            (
                "SELECT a FROM t OPTION (MAXRECURSION 99999999999)",
                "MAXRECURSION",
            ),
            ("SELECT a FROM t OPTION (MAXRECURSION -1)", "MAXRECURSION"),
            ("SELECT a FROM t OPTION (LOOP)", "LOOP"),
            ("SELECT a FROM t OPTION (MAXDOP n)", "MAXDOP n"),
            ("SELECT a FROM t OPTION (MAXDOP [1])", "MAXDOP"),
            ("SELECT a FROM t OPTION ()", "no hint"),
            ("SELECT a FROM t OPTION (RECOMPILE,)", "no hint"),
            // Anywhere but at the very end of the one query.
            (
                "SELECT a FROM t OPTION (RECOMPILE) ORDER BY a",
                "at the very end",
            ),
            (
                "SELECT (SELECT a FROM t OPTION (RECOMPILE))",
                "at the very end",
            ),
            ("SELECT a FROM t; OPTION (RECOMPILE)", "at the very end"),
            ("OPTION (RECOMPILE)", "at the very end"),
            (
                "SELECT a FROM t OPTION (RECOMPILE); DELETE FROM t",
                "at the very end",
            ),
            (
                "SELECT a FROM t OPTION (RECOMPILE) OPTION (MAXDOP 1)",
                "at the very end",
            ),
        ] {
            assert_forbidden_saying(MsSql, sql, named);
        }
        assert!(matches!(
            refused(MsSql, "SELECT a FROM t OPTION (RECOMPILE); SELECT b FROM u"),
            GuardError::Forbidden(_) | GuardError::MultipleStatements(2)
        ));
        // T-SQL only.
        refused(Sqlite, "SELECT a FROM t OPTION (RECOMPILE)");
    }

    #[test]
    fn tsql_groupings_and_json_subqueries_without_from_pass_and_are_checked() {
        let r = rules(&[], &[], &["employees.salary", "customers.email"]);
        for sql in [
            "SELECT dept, title, COUNT(*) FROM employees GROUP BY ROLLUP (dept, title)",
            "SELECT dept, title, COUNT(*) FROM employees GROUP BY CUBE (dept, title)",
            "SELECT dept, title, COUNT(*) FROM employees \
             GROUP BY GROUPING SETS ((dept, title), (dept), ())",
            "SELECT dept, COUNT(*) FROM employees GROUP BY dept WITH ROLLUP",
            "SELECT GROUPING(dept), dept, COUNT(*) FROM employees GROUP BY dept WITH CUBE",
            "SELECT c.id, (SELECT c.name, c.city FOR JSON PATH, WITHOUT_ARRAY_WRAPPER) AS j \
             FROM customers c",
            "SELECT (SELECT c.name FOR XML PATH('c')) FROM customers c",
        ] {
            passes_with(MsSql, &r, sql);
        }
        for sql in [
            "SELECT dept, COUNT(*) FROM employees GROUP BY ROLLUP (dept, salary)",
            "SELECT dept, COUNT(*) FROM employees GROUP BY GROUPING SETS ((dept), (salary))",
            "SELECT dept, COUNT(*) FROM employees GROUP BY CUBE (salary)",
            "SELECT salary, COUNT(*) FROM employees GROUP BY salary WITH ROLLUP",
            "SELECT (SELECT c.name, c.email FOR JSON PATH) FROM customers c",
        ] {
            assert_column_denied(MsSql, &r, sql);
        }
        assert!(matches!(
            refused_with(
                MsSql,
                &r,
                "SELECT (SELECT c.* FOR JSON PATH) FROM customers c"
            ),
            GuardError::ColumnDenied(_)
        ));
    }

    #[test]
    fn a_tsql_varchar_literal_beyond_latin_1_is_noted() {
        for (d, sql, wide) in [
            (MsSql, "SELECT a FROM t WHERE city = '東京'", true),
            (
                MsSql,
                "SELECT a FROM t WHERE a IN (SELECT b FROM u WHERE c LIKE '%Ж%')",
                true,
            ),
            (MsSql, "SELECT a FROM t WHERE city = N'東京'", false),
            (
                MsSql,
                "SELECT a FROM t WHERE city = 'Málaga' -- '東京'",
                false,
            ),
            (MsSql, "SELECT [東京] FROM t", false),
            (Sqlite, "SELECT a FROM t WHERE city = '東京'", false),
        ] {
            assert_eq!(passes(d, sql).wide_varchar_literal, wide, "{sql}");
        }
    }

    #[test]
    fn a_comparison_with_null_is_noted() {
        for d in both() {
            for (sql, noted) in [
                ("SELECT a FROM t WHERE b = NULL", true),
                ("SELECT a FROM t WHERE NULL <> b", true),
                ("SELECT a FROM t WHERE b > (NULL)", true),
                (
                    "SELECT a FROM t WHERE a IN (SELECT a FROM u WHERE c = NULL)",
                    true,
                ),
                ("SELECT a FROM t WHERE b IS NULL OR c IS NOT NULL", false),
                ("SELECT a FROM t WHERE b = 'NULL'", false),
                ("SELECT COALESCE(b, NULL) FROM t WHERE b = 1", false),
            ] {
                assert_eq!(passes(d, sql).null_comparison, noted, "{d:?} {sql}");
            }
        }
    }

    #[test]
    fn not_in_over_a_subquery_is_noted() {
        for d in both() {
            for (sql, noted) in [
                ("SELECT a FROM t WHERE a NOT IN (SELECT b FROM u)", true),
                (
                    "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.c NOT IN (SELECT d FROM v))",
                    true,
                ),
                ("SELECT a FROM t WHERE a IN (SELECT b FROM u)", false),
                ("SELECT a FROM t WHERE a NOT IN (1, 2)", false),
                (
                    "SELECT a FROM t WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.b = t.a)",
                    false,
                ),
            ] {
                assert_eq!(passes(d, sql).not_in_subquery, noted, "{d:?} {sql}");
            }
        }
    }

    #[test]
    fn select_items_that_take_an_avg_are_found_by_position() {
        for (sql, items) in [
            ("SELECT dept, AVG(qty) FROM t GROUP BY dept", vec![1]),
            (
                "SELECT ROUND(AVG(qty), 2) AS a, avg(x) b, COUNT(*) FROM t",
                vec![0, 1],
            ),
            ("SELECT (SELECT AVG(qty) FROM u) AS a FROM t", vec![0]),
            ("SELECT *, AVG(qty) FROM t GROUP BY a", vec![]),
            ("SELECT SUM(qty) FROM t", vec![]),
            ("SELECT AVG(qty) FROM t UNION SELECT 1", vec![]),
        ] {
            assert_eq!(passes(MsSql, sql).avg_items, items, "{sql}");
        }
    }

    #[test]
    fn the_other_dialects_row_limits_are_refused_with_what_to_write() {
        for (d, sql, advice) in [
            (MsSql, "SELECT a FROM t LIMIT 10", "TOP (n)"),
            (
                MsSql,
                "SELECT a FROM t ORDER BY a LIMIT 10 OFFSET 5",
                "FETCH NEXT",
            ),
            (
                MsSql,
                "SELECT a FROM (SELECT a FROM t LIMIT 3) s",
                "TOP (n)",
            ),
            (Sqlite, "SELECT TOP 10 a FROM t", "LIMIT n"),
            (
                Sqlite,
                "SELECT a FROM t WHERE a IN (SELECT TOP (1) a FROM u)",
                "LIMIT n",
            ),
            (
                Sqlite,
                "SELECT a FROM t ORDER BY a OFFSET 5 ROWS FETCH NEXT 5 ROWS ONLY",
                "LIMIT n OFFSET m",
            ),
        ] {
            assert_forbidden_saying(d, sql, advice);
        }
        // Each dialect's own forms pass.
        passes(MsSql, "SELECT TOP (10) a FROM t");
        passes(MsSql, "SELECT a FROM t ORDER BY a OFFSET 5 ROWS");
        passes(
            MsSql,
            "SELECT a FROM t ORDER BY a OFFSET 5 ROWS FETCH NEXT 5 ROWS ONLY",
        );
        passes(Sqlite, "SELECT a FROM t LIMIT 10 OFFSET 5");
        passes(Sqlite, "SELECT a FROM t LIMIT 5, 10");
    }

    #[test]
    fn tsql_the_parser_cannot_read_gets_advice_on_what_to_write() {
        for (sql, advice) in [
            ("SELECT NEXT VALUE FOR dbo.seq", "sequence"),
            (
                "SELECT t.a FROM t INNER HASH JOIN u ON u.a = t.a",
                "OPTION (HASH JOIN)",
            ),
            (
                "SELECT t.a FROM t LEFT OUTER MERGE JOIN u ON u.a = t.a",
                "OPTION (MERGE JOIN)",
            ),
        ] {
            match refused(MsSql, sql) {
                GuardError::Parse(m) => assert!(m.contains(advice), "{sql}: {m}"),
                e => panic!("{sql}: {e:?}"),
            }
        }
        // What it advises parses.
        passes(
            MsSql,
            "SELECT t.a FROM t INNER JOIN u ON u.a = t.a OPTION (HASH JOIN)",
        );
    }

    #[test]
    fn opendatasource_is_refused_as_a_parse_error() {
        // sqlparser 0.64 cannot parse `OPENDATASOURCE(...).db.dbo.t`.
        let e = refused(
            MsSql,
            "SELECT * FROM OPENDATASOURCE('SQLNCLI', 'Data Source=x').db.dbo.t",
        );
        assert!(matches!(e, GuardError::Parse(_)), "{e:?}");
    }

    #[test]
    fn table_valued_functions_are_refused() {
        assert_forbidden(MsSql, "SELECT * FROM fn_helpcollations()");
        assert_forbidden(
            MsSql,
            "SELECT * FROM sys.fn_get_audit_file('x', default, default)",
        );
        assert_forbidden(MsSql, "SELECT * FROM a CROSS APPLY dbo.f(a.x) c");
        assert_forbidden(Sqlite, "SELECT * FROM pragma_table_info('t')");
        assert_forbidden(Sqlite, "SELECT * FROM generate_series(1, 10)");
        assert_forbidden(Sqlite, "SELECT 1 WHERE 1 IN json_each('[1]')");
    }

    #[test]
    fn dangerous_scalar_functions_are_refused() {
        assert_forbidden(Sqlite, "SELECT load_extension('x')");
        assert_forbidden(Sqlite, "SELECT writefile('/tmp/x', 'data')");
        assert_forbidden(Sqlite, "SELECT readfile('/etc/passwd')");
        assert_forbidden(Sqlite, "SELECT fts3_tokenizer('simple')");
        assert_forbidden(Sqlite, "SELECT id FROM t WHERE name = (SELECT edit('x'))");
        assert_forbidden(MsSql, "SELECT dbo.xp_cmdshell('dir')");
        assert_forbidden(MsSql, "SELECT * FROM t WHERE 1 = sp_foo()");
        assert_forbidden(MsSql, "SELECT PWDCOMPARE('x', password_hash) FROM logins");
        assert_forbidden(MsSql, "SELECT LOGINPROPERTY('sa', 'PasswordHash')");
    }

    #[test]
    fn mssql_catalog_functions_are_refused_with_a_pointer_to_the_catalog_tools() {
        for sql in [
            "SELECT OBJECT_DEFINITION(OBJECT_ID('dbo.secrets'))",
            "SELECT COL_NAME(OBJECT_ID(N'secrets'), 1)",
            "SELECT id FROM t WHERE OBJECT_ID('secrets') IS NOT NULL",
            "SELECT [object_name](1)",
            "SELECT COLUMNPROPERTY(1, 'salary', 'Precision')",
            "SELECT sys.objectpropertyex(1, 'IsTable')",
            "SELECT HAS_PERMS_BY_NAME('secrets', 'OBJECT', 'SELECT')",
            "SELECT (SELECT SCHEMA_ID('hr')) AS s",
            "SELECT IDENT_CURRENT('secrets')",
            "SELECT [OBJECT_ID ]('secrets')",
            "SELECT ＯＢＪＥＣＴ_ＩＤ('secrets')",
        ] {
            assert_forbidden_saying(MsSql, sql, "describe_table");
        }
        // Not the same names as columns or aliases.
        let r = AccessRules::default();
        // A two-part name the server resolves to `dbo.Orders` (width-insensitive collations,
        // trailing spaces ignored) is reported that way, so the catalog finds it and its
        // hidden columns are masked.
        for sql in [
            "SELECT * FROM dbo.[Ｏｒｄｅｒｓ]",
            "SELECT * FROM [dbo ].[Orders ]",
        ] {
            let q = check(sql, MsSql, &r).expect(sql);
            assert_eq!(
                q.tables,
                [TableRef {
                    schema: Some("dbo".into()),
                    name: "Orders".into()
                }],
                "{sql}"
            );
        }
        assert!(check("SELECT object_id FROM t", MsSql, &r).is_ok());
        assert!(check("SELECT DB_NAME(), SUSER_SNAME(), @@VERSION", MsSql, &r).is_ok());
    }

    #[test]
    fn a_dangerous_function_in_a_cte_is_refused() {
        assert_forbidden(
            Sqlite,
            "WITH x AS (SELECT load_extension('evil') AS v) SELECT v FROM x",
        );
    }

    #[test]
    fn mssql_three_part_calls_are_refused_with_the_reason_that_fits() {
        let through_alias = |sql: &str, column_method: &str| {
            let e = refused(MsSql, sql).to_string();
            assert!(
                e.contains("through the table's name or alias")
                    && e.contains(&format!("`{column_method}(…)`")),
                "{sql}: {e}"
            );
        };
        through_alias(
            "SELECT s.id FROM stores s WHERE s.location.STDistance(NULL) > 0",
            "location.STDistance",
        );
        through_alias(
            "SELECT stores.location.STAsText() AS a FROM stores",
            "location.STAsText",
        );
        through_alias(
            "SELECT [S].[location].[STAsText]() AS a FROM dbo.stores AS s",
            "[location].[STAsText]",
        );
        for sql in [
            "SELECT otherdb.dbo.f(1)",
            "SELECT t.id FROM dbo.t AS t WHERE otherdb.dbo.f(t.id) = 1",
            "SELECT s.id FROM stores s WHERE srv.otherdb.dbo.f(1) = 1",
        ] {
            let e = refused(MsSql, sql).to_string();
            assert!(e.contains("another database"), "{sql}: {e}");
        }
    }

    #[test]
    fn mssql_cross_database_names_are_refused() {
        assert_forbidden(MsSql, "SELECT * FROM otherdb.dbo.t");
        assert_forbidden(MsSql, "SELECT * FROM [otherdb].[dbo].[t]");
        assert_forbidden(MsSql, "SELECT * FROM srv.otherdb.dbo.t");
        assert_forbidden(MsSql, "SELECT * FROM otherdb..t");
        assert_forbidden(MsSql, "SELECT otherdb.dbo.f(1)");
    }

    #[test]
    fn mssql_system_databases_are_refused_as_catalog_access() {
        let r = AccessRules::default();
        assert_table_denied(MsSql, &r, "SELECT * FROM master..sysobjects");
        assert_table_denied(MsSql, &r, "SELECT * FROM msdb.dbo.backupset");
    }

    #[test]
    fn mssql_temp_tables_are_refused() {
        assert_forbidden(MsSql, "SELECT * FROM #tmp");
        assert_forbidden(MsSql, "SELECT * FROM ##global");
    }

    #[test]
    fn sqlite_schemas_other_than_main_are_refused() {
        assert_forbidden(Sqlite, "SELECT * FROM temp.t");
        assert_forbidden(Sqlite, "SELECT * FROM other.t");
    }

    #[test]
    fn sqlite_internal_tables_are_refused_with_a_pointer_to_the_catalog_tools() {
        let r = AccessRules::default();
        for sql in [
            "SELECT * FROM sqlite_master",
            "SELECT * FROM sqlite_schema",
            "SELECT * FROM main.sqlite_temp_master",
            "SELECT * FROM sqlite_sequence",
            "SELECT * FROM sqlite_stat1",
            "SELECT * FROM pragma_database_list",
            "SELECT * FROM dbstat",
            "SELECT 1 WHERE 'x' IN sqlite_master",
        ] {
            let m = assert_table_denied(Sqlite, &r, sql);
            assert!(m.contains("list_tables"), "{m}");
        }
    }

    #[test]
    fn mssql_catalog_views_are_refused_with_a_pointer_to_the_catalog_tools() {
        let r = AccessRules::default();
        for sql in [
            "SELECT * FROM sys.objects",
            "SELECT * FROM [sys].[tables]",
            "SELECT * FROM INFORMATION_SCHEMA.TABLES",
            "SELECT * FROM information_schema.columns",
            "SELECT * FROM sysobjects",
            "SELECT * FROM dbo.syscolumns",
            "SELECT * FROM t WHERE id IN (SELECT object_id FROM sys.columns)",
        ] {
            let m = assert_table_denied(MsSql, &r, sql);
            assert!(m.contains("describe_table"), "{m}");
        }
    }

    #[test]
    fn an_unsupported_table_factor_is_refused() {
        assert_forbidden(MsSql, "SELECT * FROM t AS x(a, b)");
    }

    #[test]
    fn deep_parentheses_are_refused_as_too_complex_without_crashing() {
        for d in both() {
            let sql = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
            assert_eq!(refused(d, &sql), GuardError::TooComplex);
        }
    }

    #[test]
    fn deeply_nested_subqueries_are_refused_as_too_complex() {
        let sql = format!(
            "SELECT a FROM {}t{}",
            "(SELECT a FROM ".repeat(500),
            ") x".repeat(500)
        );
        assert_eq!(refused(MsSql, &sql), GuardError::TooComplex);
    }

    #[test]
    fn a_huge_operator_chain_is_refused_as_too_complex_without_crashing() {
        let sql = format!("SELECT 1{}", "+1".repeat(100_000));
        assert_eq!(refused(Sqlite, &sql), GuardError::TooComplex);
        let sql = format!("SELECT 1{}", " UNION SELECT 1".repeat(20_000));
        assert_eq!(refused(MsSql, &sql), GuardError::TooComplex);
    }

    #[test]
    fn oversized_input_is_refused_as_too_complex() {
        let sql = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        assert_eq!(refused(Sqlite, &sql), GuardError::TooComplex);
    }

    // ---- table rules ----

    #[test]
    fn a_denied_table_is_refused() {
        for d in both() {
            let m = assert_table_denied(d, &secret_rules(), "SELECT * FROM secret");
            assert!(m.contains("secret"), "{m}");
        }
    }

    #[test]
    fn a_denied_table_is_refused_in_a_subquery() {
        for d in both() {
            assert_table_denied(
                d,
                &secret_rules(),
                "SELECT * FROM t WHERE id IN (SELECT t_id FROM Secret)",
            );
            assert_table_denied(
                d,
                &secret_rules(),
                "SELECT (SELECT COUNT(*) FROM secret) AS n FROM t",
            );
        }
    }

    #[test]
    fn a_denied_table_is_refused_in_a_cte() {
        for d in both() {
            assert_table_denied(
                d,
                &secret_rules(),
                "WITH s AS (SELECT * FROM secret) SELECT COUNT(*) FROM s",
            );
        }
    }

    #[test]
    fn a_denied_table_is_refused_in_a_union_branch() {
        for d in both() {
            assert_table_denied(
                d,
                &secret_rules(),
                "SELECT id FROM t UNION ALL SELECT id FROM secret",
            );
        }
    }

    #[test]
    fn a_denied_table_is_refused_in_a_join_condition_subquery() {
        assert_table_denied(
            MsSql,
            &secret_rules(),
            "SELECT * FROM a JOIN b ON b.id = (SELECT MAX(id) FROM secret)",
        );
    }

    #[test]
    fn a_denied_table_is_refused_behind_sqlite_in_table_syntax() {
        assert_table_denied(Sqlite, &secret_rules(), "SELECT 1 WHERE 'x' IN secret");
    }

    #[test]
    fn a_schema_pattern_denies_every_table_of_that_schema() {
        assert_table_denied(MsSql, &secret_rules(), "SELECT * FROM hr.salaries");
        passes_with(MsSql, &secret_rules(), "SELECT * FROM dbo.salaries");
    }

    #[test]
    fn a_table_outside_the_allow_list_is_refused() {
        let r = rules(&["orders", "dbo.customers"], &[], &[]);
        passes_with(
            MsSql,
            &r,
            "SELECT * FROM orders o JOIN customers c ON c.id = o.cid",
        );
        assert_table_denied(MsSql, &r, "SELECT * FROM orders JOIN invoices ON 1 = 1");
        assert_table_denied(MsSql, &r, "SELECT * FROM sales.customers");
    }

    #[test]
    fn function_names_and_qualified_stars_are_not_checked_as_tables() {
        let r = rules(&["orders"], &[], &[]);
        for d in both() {
            passes_with(
                d,
                &r,
                "SELECT o.*, COUNT(*) OVER (), LOWER(o.note), CAST(o.x AS INT) FROM orders o",
            );
        }
    }

    #[test]
    fn unqualified_names_are_matched_in_the_default_schema() {
        let r = rules(&["dbo.*"], &[], &[]);
        passes_with(MsSql, &r, "SELECT * FROM customers");
        let r = rules(&["main.orders"], &[], &[]);
        passes_with(Sqlite, &r, "SELECT * FROM orders");
    }

    #[test]
    fn a_cte_named_like_a_denied_table_does_not_shield_a_qualified_reference() {
        assert_table_denied(
            Sqlite,
            &secret_rules(),
            "WITH secret AS (SELECT 1 AS x) SELECT * FROM main.secret",
        );
    }

    #[test]
    fn a_cte_name_is_not_in_scope_outside_its_query() {
        assert_table_denied(
            Sqlite,
            &secret_rules(),
            "SELECT * FROM (WITH secret AS (SELECT 1 AS x) SELECT x FROM secret) s \
             JOIN secret ON 1 = 1",
        );
    }

    #[test]
    fn mssql_ctes_cannot_see_later_ctes_so_such_names_are_checked_as_tables() {
        assert_table_denied(
            MsSql,
            &secret_rules(),
            "WITH a AS (SELECT x FROM secret), secret AS (SELECT 1 AS x) SELECT x FROM a",
        );
    }

    #[test]
    fn mssql_a_cte_reference_in_another_case_is_also_checked_as_a_table() {
        // Under a case-sensitive collation `secret` would be the real table.
        assert_table_denied(
            MsSql,
            &secret_rules(),
            "WITH Secret AS (SELECT 1 AS x) SELECT x FROM secret",
        );
        passes_with(
            MsSql,
            &secret_rules(),
            "WITH Secret AS (SELECT 1 AS x) SELECT x FROM Secret",
        );
    }

    // ---- column rules ----

    #[test]
    fn a_denied_column_is_refused() {
        for d in both() {
            let m = assert_column_denied(d, &secret_rules(), "SELECT id, ssn FROM people");
            assert!(m.contains("ssn") && m.contains("people"), "{m}");
        }
    }

    #[test]
    fn a_denied_column_is_refused_when_qualified_quoted_or_filtered_on() {
        let r = secret_rules();
        assert_column_denied(MsSql, &r, "SELECT p.[SSN] FROM dbo.people p");
        assert_column_denied(Sqlite, &r, "SELECT \"ssn\" FROM people");
        assert_column_denied(Sqlite, &r, "SELECT id FROM people WHERE ssn LIKE '1%'");
        assert_column_denied(Sqlite, &r, "SELECT id FROM people ORDER BY ssn");
        assert_column_denied(
            Sqlite,
            &r,
            "SELECT a.id FROM people a JOIN people b USING (ssn)",
        );
    }

    #[test]
    fn a_denied_column_is_refused_inside_a_subquery_or_cte() {
        let r = secret_rules();
        assert_column_denied(
            Sqlite,
            &r,
            "WITH x AS (SELECT ssn AS s FROM people) SELECT s FROM x",
        );
        assert_column_denied(
            MsSql,
            &r,
            "SELECT id FROM orders WHERE EXISTS (SELECT 1 FROM people WHERE people.ssn = orders.ref)",
        );
    }

    #[test]
    fn a_wildcard_column_pattern_applies_to_every_table() {
        assert_column_denied(
            MsSql,
            &secret_rules(),
            "SELECT login, password_hash FROM dbo.users",
        );
    }

    #[test]
    fn a_star_that_could_be_renamed_is_refused_when_a_table_has_hidden_columns() {
        let r = secret_rules();
        assert_column_denied(
            Sqlite,
            &r,
            "SELECT c FROM (SELECT * FROM people) AS p(a, b, c)",
        );
        assert_column_denied(
            Sqlite,
            &r,
            "WITH p(a, b, c) AS (SELECT * FROM people) SELECT c FROM p",
        );
        assert_column_denied(Sqlite, &r, "SELECT 1, 2, 3 UNION ALL SELECT * FROM people");
        assert_column_denied(MsSql, &r, "SELECT * FROM dbo.people FOR JSON AUTO");
        assert_column_denied(MsSql, &r, "SELECT CHECKSUM(*) FROM people");
    }

    /// A nested `*` is refused for what it expands, not for every table the query reads:
    /// over a table without hidden columns it passes beside one with them. Found by
    /// `tests/it/guard_oracle.rs` (session 25), where the old statement-wide rule refused
    /// `WITH w AS (SELECT * FROM customers) … FROM visits …` and named `visits`.
    #[test]
    fn a_nested_star_is_judged_by_what_it_expands() {
        let r = salary_rules();
        for d in both() {
            for sql in [
                "WITH c AS (SELECT * FROM customers) SELECT c.name, e.name FROM c \
                 JOIN employees e ON e.name = c.name",
                "SELECT d.name FROM (SELECT * FROM customers) d JOIN employees e ON e.name = d.name",
                "SELECT * FROM (SELECT c.* FROM customers c JOIN employees e ON e.name = c.name) d",
                "SELECT id, name, city FROM customers UNION ALL SELECT * FROM customers",
                "SELECT * FROM customers UNION ALL SELECT name, dept, name FROM employees",
                // A derived table's own projection is checked where it stands.
                "SELECT * FROM (SELECT * FROM (SELECT name, dept FROM employees) x) y",
            ] {
                passes_with(d, &r, sql);
            }
            for (sql, table) in [
                (
                    "SELECT * FROM (SELECT e.* FROM customers c JOIN employees e ON e.name = c.name) d",
                    "employees",
                ),
                (
                    "SELECT * FROM (SELECT * FROM customers c JOIN employees e ON e.name = c.name) d",
                    "employees",
                ),
                (
                    "SELECT name, city, name FROM customers UNION SELECT * FROM employees",
                    "employees",
                ),
                // A qualifier that could name the table, though it is aliased.
                (
                    "SELECT * FROM (SELECT employees.* FROM employees e) x",
                    "employees",
                ),
                // Inside a nested join.
                (
                    "SELECT * FROM (SELECT * FROM (customers c JOIN employees e ON e.name = c.name)) x",
                    "employees",
                ),
            ] {
                let m = assert_column_denied(d, &r, sql);
                assert!(m.contains(&format!("over `{table}`")), "{sql}: {m}");
            }
            // A qualifier that names nothing in its FROM: no telling, so refused.
            let m = assert_column_denied(
                d,
                &r,
                "SELECT * FROM (SELECT z.* FROM customers c JOIN employees e ON e.name = c.name) d",
            );
            assert!(m.contains("in a query that reads `employees`"), "{m}");
        }
        // As the server compares names: case and, on SQL Server, width.
        assert_column_denied(
            MsSql,
            &r,
            "SELECT * FROM (SELECT E.* FROM customers c JOIN Employees e ON e.name = c.name) d",
        );
        assert_column_denied(
            MsSql,
            &r,
            "SELECT * FROM (SELECT \u{ff25}.* FROM customers c JOIN employees e ON e.name = c.name) d",
        );
        assert_column_denied(MsSql, &r, "SELECT * FROM (SELECT * FROM dbo.employees) d");
        // A CTE named like the table counts as the table when the table is read too; alone,
        // the query reads no table with hidden columns.
        for (d, schema) in [(Sqlite, "main"), (MsSql, "dbo")] {
            let cte = "WITH employees AS (SELECT name FROM customers) SELECT * FROM \
                       (SELECT * FROM employees) x";
            passes_with(d, &r, cte);
            assert_column_denied(
                d,
                &r,
                &format!("{cte} JOIN {schema}.employees m ON m.name = x.name"),
            );
        }
        assert_column_denied(Sqlite, &r, "SELECT * FROM (SELECT * FROM main.employees) d");
        // SQLite's `x IN t` compares every column of `t`.
        passes_with(
            Sqlite,
            &r,
            "SELECT name FROM employees WHERE name IN customers",
        );
        let m = assert_column_denied(
            Sqlite,
            &r,
            "SELECT name FROM customers WHERE name IN employees",
        );
        assert!(m.contains("`IN employees`"), "{m}");
    }

    #[test]
    fn a_nested_star_passes_when_no_table_has_hidden_columns() {
        let r = rules(&[], &[], &["people.ssn"]);
        passes_with(
            Sqlite,
            &r,
            "SELECT c FROM (SELECT * FROM orders) AS o(a, b, c)",
        );
    }

    #[test]
    fn a_natural_join_is_refused_when_a_table_has_hidden_columns() {
        assert_column_denied(
            Sqlite,
            &secret_rules(),
            "SELECT id FROM people NATURAL JOIN (SELECT '123-45-6789' AS ssn)",
        );
        let r = rules(&[], &[], &["people.ssn"]);
        passes_with(Sqlite, &r, "SELECT * FROM orders NATURAL JOIN items");
    }

    #[test]
    fn mssql_names_with_trailing_spaces_or_full_width_letters_are_matched_like_the_server() {
        let r = secret_rules();
        assert_table_denied(MsSql, &r, "SELECT * FROM [secret ]");
        assert_table_denied(
            MsSql,
            &r,
            "SELECT * FROM \u{FF53}\u{FF45}\u{FF43}\u{FF52}\u{FF45}\u{FF54}",
        );
        assert_table_denied(
            MsSql,
            &AccessRules::default(),
            "SELECT * FROM [sys ].[objects]",
        );
        assert_column_denied(MsSql, &r, "SELECT [ssn  ] FROM people");
    }

    /// Folding a name (`ı` → `i`, `ſ` → `s`, full width, trailing spaces) may only refuse
    /// more: an allowed name admits a table only if it differs from it in ASCII case, so a
    /// table literally named `ıtems` (another table under collations that tell `ı` from `i`)
    /// is not admitted because `items` is allowed.
    #[test]
    fn an_allowed_name_admits_only_names_equal_to_it_up_to_ascii_case() {
        let r = rules(&["items", "dbo.keys"], &[], &[]);
        assert!(r.table_visible(Some("dbo"), "ITEMS"));
        assert!(r.table_visible(Some("DBO"), "Keys"));
        for lookalike in [
            "\u{131}tems",  // dotless ı
            "\u{130}TEMS",  // İ
            "\u{FF49}tems", // full-width ｉ
            "item\u{17F}",  // long ſ
            "\u{212A}eys",  // Kelvin sign, whose lower case is `k`
        ] {
            assert!(!r.table_visible(Some("dbo"), lookalike), "{lookalike}");
        }
        for d in both() {
            passes_with(d, &r, "SELECT * FROM ITEMS");
            for sql in [
                "SELECT * FROM \u{131}tems",
                "SELECT * FROM [item\u{17F}]",
                "SELECT * FROM \"item\u{17F}\"",
            ] {
                if d == Sqlite && sql.contains('[') {
                    continue;
                }
                assert_table_denied(d, &r, sql);
            }
        }
        passes_with(MsSql, &r, "SELECT * FROM [items  ]");
        assert_table_denied(
            MsSql,
            &r,
            "SELECT * FROM \u{FF49}\u{FF54}\u{FF45}\u{FF4D}\u{FF53}",
        );
        assert_table_denied(MsSql, &r, "SELECT * FROM dbo.[\u{212A}eys]");
    }

    /// The other direction: a name that folds to a denied name is refused, whichever of the
    /// two is written with the letter that folds, in queries and in the rules the tools
    /// apply to catalog names.
    #[test]
    fn a_name_that_folds_to_a_denied_name_is_refused() {
        let r = rules(&[], &["secret"], &["people.ssn"]);
        assert!(!r.table_visible(Some("dbo"), "\u{17F}ecret"));
        assert!(!r.table_visible(Some("dbo"), "SECRET "));
        assert!(r.column_denied(Some("dbo"), "people", "\u{17F}sn"));
        assert!(r.column_denied(Some("dbo"), "people", "\u{FF53}sn"));
        for d in both() {
            assert_table_denied(d, &r, "SELECT * FROM \"\u{17F}ecret\"");
            assert_column_denied(d, &r, "SELECT \"\u{17F}sn\" FROM people");
        }
        // The rule written with the letter that folds.
        let r = rules(&[], &["\u{17F}ecret"], &["people.\u{17F}sn"]);
        assert!(!r.table_visible(Some("dbo"), "secret"));
        assert!(!r.table_visible(Some("dbo"), "\u{17F}ecret"));
        assert!(r.column_denied(Some("dbo"), "people", "SSN"));
        for d in both() {
            assert_table_denied(d, &r, "SELECT * FROM secret");
            assert_table_denied(d, &r, "SELECT * FROM \"\u{17F}ecret\"");
            assert_column_denied(d, &r, "SELECT \"\u{17F}sn\" FROM people");
            assert_column_denied(d, &r, "SELECT ssn FROM people");
        }
        // A table whose name folds to one with hidden columns has them hidden too.
        let r = rules(&[], &[], &["secret.pay"]);
        assert!(r.has_denied_columns(Some("dbo"), "\u{17F}ecret"));
        assert_column_denied(MsSql, &r, "SELECT pay FROM [\u{17F}ecret]");
    }

    /// `İ` (U+0130) is its own capital and lower-cases to `i` plus a combining dot, so it
    /// escaped both the case-insensitive match and the folding; under a Turkish_CI collation
    /// `[İTEMS]` is the table `items`.
    #[test]
    fn a_dotted_capital_i_is_refused_where_i_is_denied() {
        let r = rules(&[], &["items"], &["people.ssn"]);
        assert_eq!(fold_name("\u{130}TEMS"), "iTEMS");
        assert!(!r.table_visible(Some("dbo"), "\u{130}TEMS"));
        assert!(!r.table_visible(Some("dbo"), "\u{130}tems"));
        for d in both() {
            assert_table_denied(d, &r, "SELECT * FROM \"\u{130}TEMS\"");
        }
        assert_table_denied(MsSql, &r, "SELECT * FROM [\u{130}TEMS]");
        // The rule written with it.
        let r = rules(&[], &["\u{130}tems"], &["people.ss\u{130}d"]);
        assert!(!r.table_visible(Some("dbo"), "items"));
        assert!(!r.table_visible(Some("dbo"), "ITEMS"));
        assert!(r.column_denied(Some("dbo"), "people", "SSID"));
        for d in both() {
            assert_table_denied(d, &r, "SELECT * FROM items");
            assert_column_denied(d, &r, "SELECT ssid FROM people");
        }
        // Still no name is admitted for it.
        let r = rules(&["items"], &[], &[]);
        assert!(!r.table_visible(Some("dbo"), "\u{130}tems"));
    }

    /// The other letters some collation may take for an ASCII one are caught already: `ı`
    /// and `ſ` fold to `i` and `s` ([`fold_name`]), the Kelvin sign lower-cases to `k` and
    /// the Ångström sign to `å`.
    #[test]
    fn dotless_i_long_s_kelvin_and_angstrom_signs_are_refused_where_their_letter_is_denied() {
        let r = rules(&[], &["items", "sums", "kits", "\u{E5}sa"], &["people.key"]);
        for name in [
            "\u{131}tems",
            "ITEM\u{17F}",
            "\u{17F}UMS",
            "\u{212A}its",
            "\u{212B}SA",
            "\u{C5}sa",
        ] {
            assert!(!r.table_visible(Some("dbo"), name), "{name}");
            for d in both() {
                assert_table_denied(d, &r, &format!("SELECT * FROM \"{name}\""));
            }
        }
        assert!(r.column_denied(Some("dbo"), "people", "\u{212A}EY"));
        for d in both() {
            assert_column_denied(d, &r, "SELECT \"\u{212A}ey\" FROM people");
        }
    }

    // ---- rules API ----

    #[test]
    fn table_patterns_match_case_insensitively_with_stars() {
        let r = rules(&["dbo.*", "Ord*"], &["dbo.tmp_*"], &[]);
        assert!(r.table_visible(Some("DBO"), "Customers"));
        assert!(r.table_visible(Some("sales"), "orders"));
        assert!(!r.table_visible(Some("sales"), "customers"));
        assert!(!r.table_visible(Some("dbo"), "TMP_x"));
        assert!(!r.table_visible(Some("other"), "tmp_x"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let r = rules(&["*"], &["secret"], &[]);
        assert!(!r.table_visible(Some("dbo"), "SECRET"));
        assert!(r.table_visible(Some("dbo"), "public"));
    }

    #[test]
    fn an_unknown_schema_compares_only_the_table_part_of_dotted_patterns() {
        let r = rules(&[], &["hr.salaries"], &[]);
        assert!(!r.table_visible(None, "salaries"));
        assert!(r.table_visible(Some("dbo"), "salaries"));
    }

    #[test]
    fn column_patterns_match_two_and_three_parts() {
        let r = rules(&[], &[], &["people.ssn", "hr.*.salary", "*.pw_*"]);
        assert!(r.column_denied(Some("dbo"), "People", "SSN"));
        assert!(r.column_denied(Some("hr"), "staff", "salary"));
        assert!(!r.column_denied(Some("dbo"), "staff", "salary"));
        assert!(r.column_denied(None, "staff", "salary"));
        assert!(r.column_denied(Some("x"), "users", "pw_hash"));
        assert!(!r.column_denied(Some("x"), "users", "name"));
        assert!(r.has_denied_columns(Some("dbo"), "people"));
        // `*.pw_*` may hide a column of any table.
        assert!(r.has_denied_columns(Some("dbo"), "orders"));
        let r = rules(&[], &[], &["people.ssn"]);
        assert!(!r.has_denied_columns(Some("dbo"), "orders"));
    }

    #[test]
    fn glob_matching_handles_stars_anywhere() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("a*b*c", "abcbc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("*_log", "audit_LOG"));
        assert!(!glob_match("log", "logs"));
        assert!(glob_match("**a**", "bab"));
    }

    #[test]
    fn validate_names_the_bad_pattern() {
        assert!(secret_rules().validate().is_ok());
        for (r, bad) in [
            (rules(&["a.b.c"], &[], &[]), "a.b.c"),
            (rules(&[], &[""], &[]), "\"\""),
            (rules(&[], &["dbo."], &[]), "dbo."),
            (rules(&[], &[], &["ssn"]), "ssn"),
            (rules(&[], &[], &["a.b.c.d"]), "a.b.c.d"),
            (rules(&[" orders"], &[], &[]), " orders"),
        ] {
            let e = r.validate().expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn invalid_rules_fail_closed() {
        let r = rules(&[], &["a.b.c"], &["oops"]);
        assert!(!r.table_visible(Some("dbo"), "anything"));
        assert!(r.column_denied(Some("dbo"), "t", "c"));
        assert!(matches!(
            refused_with(Sqlite, &r, "SELECT 1"),
            GuardError::InvalidRules(_)
        ));
    }

    #[test]
    fn dangerous_function_list_keeps_ordinary_functions() {
        for f in [
            "count",
            "SUM",
            "lower",
            "coalesce",
            "dateadd",
            "convert",
            "fn_my_udf",
        ] {
            assert!(!is_dangerous_function(f), "{f}");
        }
        for f in [
            "xp_cmdshell",
            "SP_OACREATE",
            "load_extension",
            "OpenRowSet",
            "fn_dblog",
        ] {
            assert!(is_dangerous_function(f), "{f}");
        }
    }

    #[test]
    fn error_messages_are_user_facing() {
        assert_eq!(
            GuardError::NotAQuery("DELETE".into()).to_string(),
            "only read-only SELECT queries are allowed, not DELETE statements"
        );
        assert_eq!(
            GuardError::MultipleStatements(2).to_string(),
            "exactly one statement is allowed, found 2"
        );
    }

    /// The query on whose parse a debug build overflowed its stack (found by
    /// `tests/it/guard_oracle.rs`), checked on threads of many stack sizes. Wherever the
    /// parser's checkpoints fall against the end of the stack, it must go on in a segment of its
    /// own before it runs out; with `recursive`'s default red zone, one of these threads
    /// overflows in a debug build and the test binary aborts (a release build passes anyway).
    #[test]
    fn a_deep_query_never_overflows_the_stack() {
        const SQL: &str = "SELECT 2.5, name FROM employees AS t1 JOIN (SELECT t4.id AS c0, t3.dept AS c1 FROM \
             employees AS t3 JOIN employees AS t4 ON CASE WHEN EXISTS (SELECT t4.name, 2.5 FROM \
             json_each('[1,2,3]') AS t5, employees AS t6 GROUP BY t5.value HAVING CASE WHEN \
             CAST(manager_id AS TEXT) IN (1, 2, 'x') THEN 2.5 ELSE CAST(CASE WHEN t6.dept LIKE \
             '%a%' THEN t6.name ELSE (t3.id || coalesce(coalesce(coalesce(typeof(CASE WHEN \
             coalesce(t5.key, (CAST(t5.value AS TEXT) * coalesce(salary, (SELECT \
             ((typeof(row_number() OVER (ORDER BY t4.dept)) * t3.manager_id) < t5.key) AS c0 FROM \
             json_each('[1,2,3]') AS t7 WHERE t5.value BETWEEN 2 AND 40000 EXCEPT SELECT t5.value \
             AS c0 FROM customers AS t8 WHERE t4.id <> t4.id GROUP BY t8.city HAVING t5.value > \
             7)))) IN (SELECT t4.manager_id AS c0 FROM customers AS t9 WHERE dept = t4.salary ORDER \
             BY t6.manager_id) THEN t4.id ELSE t3.name END), t3.manager_id), t5.value), t6.dept)) \
             END AS TEXT) END IN (1, 2, 'x')) THEN t4.name ELSE t3.dept END BETWEEN 2 AND 40000 \
             LIMIT 2 OFFSET 2) AS t2 USING (id) WHERE t1.manager_id < t2.c1 LIMIT 0";
        for kib in (192..=1024).step_by(8) {
            let verdicts = std::thread::Builder::new()
                .stack_size(kib * 1024)
                .spawn(|| both().map(|d| check(SQL, d, &AccessRules::default()).is_ok()))
                .expect("spawn a thread")
                .join()
                .expect("the check returns");
            // SQLite accepts it; T-SQL has no `json_each`.
            assert_eq!(verdicts, [true, false], "stack of {kib} KiB");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let fragments = [
            "SELECT",
            " * ",
            "FROM",
            " t",
            "(",
            ")",
            "[",
            "]",
            "'",
            "\"",
            ";",
            "--",
            "/*",
            "*/",
            " WITH x AS ",
            " UNION ",
            " WHERE ",
            " IN ",
            "1",
            ",",
            ".",
            "..",
            "@x",
            "#t",
            "N'",
            " JOIN ",
            " ON ",
            "=",
            " EXISTS ",
            "é",
            "\u{0}",
            "ÿ",
            "\\",
            " INTO ",
            " FOR ",
            " OPENROWSET",
            " sqlite_master",
            " sys.",
            " CASE WHEN ",
            " END",
            " OVER (",
            "$1",
            "?",
            ":x",
            " TOP ",
            " (NOLOCK)",
            " WITH (",
            " AS ",
            " VALUES ",
            " ORDER BY ",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let r = secret_rules();
        for _ in 0..3_000 {
            let mut sql = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                sql.push_str(fragments[(seed % fragments.len() as u64) as usize]);
            }
            for d in both() {
                let _ = check(&sql, d, &r);
            }
        }
    }
}
