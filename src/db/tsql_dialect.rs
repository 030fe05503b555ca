//! The dialect the guard parses T-SQL with: sqlparser's `MsSqlDialect`, with three things
//! T-SQL has that it lacks.
//!
//! - `GROUP BY ROLLUP (…)`, `CUBE (…)` and `GROUPING SETS (…)` as grouping constructs
//!   (`MsSqlDialect` reads `ROLLUP(a)` as a function call and cannot read `GROUPING SETS`);
//! - `GROUP BY a, b WITH ROLLUP` and `WITH CUBE`, the older forms;
//! - `FOR` and `OPTION` never as a select item's alias. Both are reserved in T-SQL, so
//!   `(SELECT c.name, c.city FOR JSON PATH)`, a subquery with no `FROM` that builds a nested
//!   JSON object, reads as `FOR JSON` where `MsSqlDialect` takes `FOR` for the alias of
//!   `c.city` and fails at `JSON`.
//!
//! Everything else is `MsSqlDialect`'s: each method it defines is forwarded (sqlparser's own
//! way of adjusting a dialect, see its `parse_with_wrapped_dialect` test), and [`dialect`]
//! answers `MsSqlDialect`'s type, so the parser's `dialect_of!(… is MsSqlDialect)` checks hold
//! as before. A unit test parses T-SQL with both and requires the same tree wherever none of
//! the three is involved, so a method sqlparser adds to `MsSqlDialect` and this does not
//! forward shows up when sqlparser is upgraded.
//!
//! [`dialect`]: Dialect::dialect

use std::any::TypeId;

use sqlparser::ast::{GranteesType, Statement};
use sqlparser::dialect::{Dialect, MsSqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};

/// See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct TsqlDialect(MsSqlDialect);

impl Dialect for TsqlDialect {
    fn dialect(&self) -> TypeId {
        self.0.dialect()
    }

    // What T-SQL has and `MsSqlDialect` lacks.

    fn supports_group_by_expr(&self) -> bool {
        true
    }

    fn supports_group_by_with_modifier(&self) -> bool {
        true
    }

    fn is_select_item_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        !matches!(kw, Keyword::FOR | Keyword::OPTION)
            && self.0.is_select_item_alias(explicit, kw, parser)
    }

    // Forwarded: every method `MsSqlDialect` defines (sqlparser 0.64).

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.0.identifier_quote_style(identifier)
    }

    fn convert_type_before_value(&self) -> bool {
        self.0.convert_type_before_value()
    }

    fn supports_outer_join_operator(&self) -> bool {
        self.0.supports_outer_join_operator()
    }

    fn supports_dollar_as_money_prefix(&self) -> bool {
        self.0.supports_dollar_as_money_prefix()
    }

    fn supports_create_proc_syntax(&self) -> bool {
        self.0.supports_create_proc_syntax()
    }

    fn supports_connect_by(&self) -> bool {
        self.0.supports_connect_by()
    }

    fn supports_eq_alias_assignment(&self) -> bool {
        self.0.supports_eq_alias_assignment()
    }

    fn supports_try_convert(&self) -> bool {
        self.0.supports_try_convert()
    }

    fn supports_boolean_literals(&self) -> bool {
        self.0.supports_boolean_literals()
    }

    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        self.0.supports_named_fn_args_with_colon_operator()
    }

    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        self.0.supports_named_fn_args_with_expr_name()
    }

    fn supports_named_fn_args_with_rarrow_operator(&self) -> bool {
        self.0.supports_named_fn_args_with_rarrow_operator()
    }

    fn supports_start_transaction_modifier(&self) -> bool {
        self.0.supports_start_transaction_modifier()
    }

    fn supports_end_transaction_modifier(&self) -> bool {
        self.0.supports_end_transaction_modifier()
    }

    fn supports_set_stmt_without_operator(&self) -> bool {
        self.0.supports_set_stmt_without_operator()
    }

    fn supports_table_versioning(&self) -> bool {
        self.0.supports_table_versioning()
    }

    fn supports_nested_comments(&self) -> bool {
        self.0.supports_nested_comments()
    }

    fn supports_object_name_double_dot_notation(&self) -> bool {
        self.0.supports_object_name_double_dot_notation()
    }

    fn get_reserved_grantees_types(&self) -> &[GranteesType] {
        self.0.get_reserved_grantees_types()
    }

    fn is_table_factor(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        self.0.is_table_factor(kw, parser)
    }

    fn is_table_factor_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        self.0.is_table_factor_alias(explicit, kw, parser)
    }

    fn parse_statement(&self, parser: &mut Parser) -> Option<Result<Statement, ParserError>> {
        self.0.parse_statement(parser)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.0.get_next_precedence(parser)
    }
}

#[cfg(test)]
mod tests {
    use sqlparser::parser::Parser;

    use super::*;

    fn parse(d: &dyn Dialect, sql: &str) -> Result<Vec<Statement>, String> {
        Parser::parse_sql(d, sql).map_err(|e| e.to_string())
    }

    /// Wherever the three additions are not involved, the tree (or the error) is
    /// `MsSqlDialect`'s.
    #[test]
    fn it_reads_t_sql_as_mssql_dialect_does_elsewhere() {
        let corpus = [
            "SELECT TOP (10) c.name, COUNT(o.id) AS n FROM dbo.customers AS c WITH (NOLOCK) \
             LEFT JOIN orders o ON o.cid = c.id WHERE c.city = N'Oslo' AND o.total > $1.50 \
             GROUP BY c.name HAVING COUNT(*) > 1 ORDER BY n DESC",
            "WITH r AS (SELECT 1 AS i UNION ALL SELECT i + 1 FROM r WHERE i < 10) SELECT i FROM r",
            "SELECT [a b], \"c\", @@VERSION, @x, #t.a FROM [dbo].[t]] x] AS [y]",
            "SELECT CONVERT(varchar(10), d, 120), TRY_CONVERT(int, s), CAST(x AS decimal(10, 2)) \
             FROM t",
            "SELECT a FROM t ORDER BY a OFFSET 5 ROWS FETCH NEXT 5 ROWS ONLY",
            "SELECT a FROM t FOR SYSTEM_TIME AS OF '2024-01-01'",
            "SELECT a FROM t FOR JSON PATH, ROOT('x')",
            "SELECT a FROM t FOR XML AUTO",
            "SELECT a FROM t FOR BROWSE",
            "SELECT c.name, x.value FROM customers c CROSS APPLY STRING_SPLIT(c.tags, ',') x \
             OUTER APPLY (SELECT TOP 1 o.id FROM orders o) y",
            "SELECT * FROM (SELECT region, q, amount FROM sales) s PIVOT (SUM(amount) FOR q IN \
             ([Q1], [Q2])) p",
            "SELECT j.[key] FROM t CROSS APPLY OPENJSON(t.doc) WITH (k int '$.k') j",
            "SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) rn, x = 1 FROM t",
            "SELECT a FROM t WHERE a LIKE 'x[%]%' ESCAPE '!' AND b IN (SELECT b FROM u)",
            "SELECT IIF(a > 1, 'x', 'y'), STRING_AGG(a, ',') WITHIN GROUP (ORDER BY a) FROM t",
            "SELECT a /* one /* nested */ comment */ FROM t -- and a line",
            "SELECT DISTINCT TOP 5 PERCENT WITH TIES a FROM t ORDER BY a",
            "SELECT a FROM t UNION ALL SELECT b FROM u EXCEPT SELECT c FROM v",
            "SELECT a FROM srv.db.dbo.t",
            "SELECT a FROM db..t",
            "SELECT a, b FROM t GROUP BY a, b",
            "SELECT a FROM t x",
            "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a)",
            "SELECT CASE WHEN a IS NULL THEN 0 ELSE a END FROM t",
            "SELECT NEXT VALUE FOR dbo.seq",
            "SELECT a FROM t INNER HASH JOIN u ON u.a = t.a",
            "SELECT a FROM t OPTION (RECOMPILE)",
            "SELECT a, b c, d AS e FROM t",
            "EXEC sp_who",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1 WHERE b = 2",
            "DELETE FROM t",
            "DECLARE @x int = 1",
            "SET NOCOUNT ON",
            "BEGIN TRANSACTION",
            "IF 1 = 1 SELECT 1 ELSE SELECT 2",
            "SELECT a INTO #t FROM t",
            "SELECT a FROM t; SELECT b FROM u",
            "WAITFOR DELAY '00:00:05'",
            "CREATE TABLE t (a int)",
        ];
        for sql in corpus {
            assert_eq!(
                parse(&TsqlDialect::default(), sql),
                parse(&MsSqlDialect {}, sql),
                "{sql}"
            );
        }
    }

    #[test]
    fn it_reads_what_t_sql_has_and_mssql_dialect_does_not() {
        for sql in [
            "SELECT a, b, SUM(c) FROM t GROUP BY ROLLUP (a, b)",
            "SELECT a, b, SUM(c) FROM t GROUP BY CUBE (a, b)",
            "SELECT a, b, SUM(c) FROM t GROUP BY GROUPING SETS ((a, b), (a), ())",
            "SELECT a, SUM(c) FROM t GROUP BY a WITH ROLLUP",
            "SELECT a, SUM(c) FROM t GROUP BY a WITH CUBE",
            "SELECT (SELECT c.name, c.city FOR JSON PATH, WITHOUT_ARRAY_WRAPPER) FROM customers c",
            "SELECT (SELECT c.name FOR XML PATH('c')) FROM customers c",
            "SELECT GETDATE() FOR JSON PATH",
        ] {
            assert!(
                parse(&TsqlDialect::default(), sql).is_ok(),
                "{sql}: {:?}",
                parse(&TsqlDialect::default(), sql)
            );
        }
        // What MsSqlDialect made of `ROLLUP (a)`, a call, becomes the grouping construct.
        let sql = "SELECT a, SUM(c) FROM t GROUP BY ROLLUP (a)";
        assert_ne!(
            parse(&TsqlDialect::default(), sql),
            parse(&MsSqlDialect {}, sql)
        );
        // An explicit `AS FOR` is no alias either (T-SQL reserves the word).
        assert!(parse(&TsqlDialect::default(), "SELECT a AS FOR FROM t").is_err());
    }
}
