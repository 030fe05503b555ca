//! Literal lifting: ad-hoc SQL such as `SELECT * FROM customers WHERE customer_id = 42` becomes
//! the template `… WHERE customer_id = ?1` plus the bound value `42`.
//!
//! Clients send the same query shapes over and over with different values. Keyed by the
//! template, the guard's verdict ([`super::guard::check`]) and the database's prepared
//! statement are reused across those calls instead of being parsed and planned afresh.
//!
//! A literal is lifted only where a bound parameter means exactly the same thing:
//!
//! - it is a plain number or a single-quoted string whose text is exactly what the tokenizer
//!   read (so the bound value is the literal's value);
//! - it directly follows a comparison operator (`=`, `==`, `<>`, `!=`, `<`, `<=`, `>`, `>=`)
//!   or `LIKE`/`GLOB`;
//! - it sits in the top-level `WHERE`, `HAVING` or a join's `ON` condition (any nesting inside
//!   it). Never in a select list (SQLite names result columns after their expression text),
//!   `ORDER BY`/`GROUP BY` (a number there is a column position), `LIMIT`, type arguments or
//!   anything else where a literal is syntax rather than a value.
//!
//! Everything else stays as written. If the template cannot be tokenized, or nothing is
//! lifted, the template is the original text. Lifting is done for SQLite only; SQL Server
//! queries keep their literals (their verdict is still cached by the full text).

use std::borrow::Cow;
use std::fmt::Write;

use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::guard::SqlDialect;

/// Most literals lifted from one query (the rest stay in the text).
const MAX_PARAMS: usize = 32;

/// A value lifted out of the SQL text, bound in its place.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    Real(f64),
    Text(String),
}

/// Ad-hoc SQL with its lifted literals.
#[derive(Debug, Clone)]
pub struct Lifted<'a> {
    /// The SQL as the client sent it.
    pub original: &'a str,
    /// The SQL with each lifted literal replaced by `?N` (N from 1), or the original text.
    pub template: Cow<'a, str>,
    /// The lifted values, in placeholder order.
    pub params: Vec<Param>,
}

impl<'a> Lifted<'a> {
    /// `sql` unchanged: nothing lifted.
    pub fn verbatim(sql: &'a str) -> Self {
        Self {
            original: sql,
            template: Cow::Borrowed(sql),
            params: Vec::new(),
        }
    }
}

/// Where the scanner is in the top-level statement.
#[derive(Clone, Copy, PartialEq)]
enum Clause {
    /// A condition: `WHERE`, `HAVING`, `ON`.
    Condition,
    /// Anywhere else.
    Other,
}

/// Lifts the literals of `sql` that can be bound (see the module docs).
pub fn lift(sql: &str, dialect: SqlDialect) -> Lifted<'_> {
    if dialect != SqlDialect::Sqlite {
        return Lifted::verbatim(sql);
    }
    let Ok(tokens) = Tokenizer::new(&SQLiteDialect {}, sql)
        .with_unescape(true)
        .tokenize_with_location()
    else {
        return Lifted::verbatim(sql);
    };
    let lines = LineStarts::new(sql);
    let mut clause = Clause::Other;
    // Clauses switch only at the top level; a condition covers everything nested in it.
    let mut depth = 0usize;
    let mut previous: Option<&Token> = None;
    // (byte range in `sql`, value)
    let mut lifted: Vec<(std::ops::Range<usize>, Param)> = Vec::new();
    for t in &tokens {
        let token = &t.token;
        match token {
            Token::Whitespace(_) => continue,
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Word(w) if depth == 0 => match w.keyword {
                Keyword::WHERE | Keyword::HAVING | Keyword::ON => clause = Clause::Condition,
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::JOIN
                | Keyword::GROUP
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::WINDOW
                | Keyword::RETURNING
                | Keyword::VALUES => clause = Clause::Other,
                _ => {}
            },
            Token::Number(..) | Token::SingleQuotedString(_)
                if clause == Clause::Condition
                    && lifted.len() < MAX_PARAMS
                    && previous.is_some_and(binds_a_value) =>
            {
                if let Some(range) = lines.range(t.span.start, t.span.end, sql)
                    && let Some(param) = param_of(token, &sql[range.clone()])
                {
                    lifted.push((range, param));
                }
            }
            _ => {}
        }
        previous = Some(token);
    }
    if lifted.is_empty() {
        return Lifted::verbatim(sql);
    }
    let mut template = String::with_capacity(sql.len() + 2 * lifted.len());
    let mut at = 0;
    let mut params = Vec::with_capacity(lifted.len());
    for (i, (range, param)) in lifted.into_iter().enumerate() {
        template.push_str(&sql[at..range.start]);
        let _ = write!(template, "?{}", i + 1);
        at = range.end;
        params.push(param);
    }
    template.push_str(&sql[at..]);
    Lifted {
        original: sql,
        template: Cow::Owned(template),
        params,
    }
}

/// Tokens after which a literal is an operand, never syntax.
fn binds_a_value(t: &Token) -> bool {
    match t {
        Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq => true,
        Token::Word(w) => matches!(w.keyword, Keyword::LIKE | Keyword::GLOB),
        _ => false,
    }
}

/// The bound value of a literal whose source text is `text`, when binding it is exact.
fn param_of(token: &Token, text: &str) -> Option<Param> {
    match token {
        Token::Number(n, false) if n == text => {
            let b = n.as_bytes();
            if b.iter().all(u8::is_ascii_digit) {
                // Too large for i64: SQLite reads it as a REAL; leave it in the text.
                n.parse::<i64>().ok().map(Param::Int)
            } else if b.iter().all(|c| c.is_ascii_digit() || b".eE+-".contains(c))
                && b.first().is_some_and(|c| c.is_ascii_digit() || *c == b'.')
            {
                n.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Param::Real)
            } else {
                None
            }
        }
        Token::SingleQuotedString(s) => {
            // Exactly `'…'` with `''` for each quote: no other escapes to second-guess.
            let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
            (inner.replace("''", "'") == *s && !s.contains('\0')).then(|| Param::Text(s.clone()))
        }
        _ => None,
    }
}

/// Byte offsets of line starts, to turn the tokenizer's (line, column) into byte ranges.
struct LineStarts(Vec<usize>);

impl LineStarts {
    fn new(sql: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self(starts)
    }

    /// Byte offset of a 1-based (line, column in chars) location.
    fn offset(&self, at: Location, sql: &str) -> Option<usize> {
        let line_start = *self.0.get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        let rest = sql.get(line_start..)?;
        match rest.char_indices().nth(column) {
            Some((i, _)) => Some(line_start + i),
            // The end of a token at the very end of the text.
            None if rest.chars().count() == column => Some(sql.len()),
            None => None,
        }
    }

    fn range(&self, start: Location, end: Location, sql: &str) -> Option<std::ops::Range<usize>> {
        let (s, e) = (self.offset(start, sql)?, self.offset(end, sql)?);
        (s < e).then_some(s..e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifted(sql: &str) -> (String, Vec<Param>) {
        let l = lift(sql, SqlDialect::Sqlite);
        (l.template.into_owned(), l.params)
    }

    #[test]
    fn point_lookups_and_ranges_are_lifted() {
        assert_eq!(
            lifted("SELECT * FROM customers WHERE customer_id = 42"),
            (
                "SELECT * FROM customers WHERE customer_id = ?1".into(),
                vec![Param::Int(42)]
            )
        );
        assert_eq!(
            lifted("SELECT * FROM orders WHERE order_id > 10 ORDER BY order_id LIMIT 100"),
            (
                "SELECT * FROM orders WHERE order_id > ?1 ORDER BY order_id LIMIT 100".into(),
                vec![Param::Int(10)]
            )
        );
        assert_eq!(
            lifted("select a from t where x <= 1.5e3 and name like 'O''Brien%' and y <> 'é'"),
            (
                "select a from t where x <= ?1 and name like ?2 and y <> ?3".into(),
                vec![
                    Param::Real(1500.0),
                    Param::Text("O'Brien%".into()),
                    Param::Text("é".into())
                ]
            )
        );
    }

    #[test]
    fn multi_line_and_unicode_text_keeps_its_offsets() {
        let sql = "SELECT 'ü' AS x\nFROM t\n  WHERE naïve = 'ß'\n  AND id=7";
        assert_eq!(
            lifted(sql),
            (
                "SELECT 'ü' AS x\nFROM t\n  WHERE naïve = ?1\n  AND id=?2".into(),
                vec![Param::Text("ß".into()), Param::Int(7)]
            )
        );
    }

    #[test]
    fn literals_that_are_syntax_or_name_a_column_stay() {
        for sql in [
            // select lists name their columns after the expression text
            "SELECT 1 = 1, x = 'a' FROM t",
            "SELECT (SELECT count(*) FROM o WHERE o.c = 5) FROM t",
            // positions, limits, type arguments
            "SELECT a FROM t ORDER BY 1 LIMIT 5 OFFSET 2",
            "SELECT a FROM t GROUP BY 1 HAVING count(*) > x",
            "SELECT CAST(a AS DECIMAL(10, 2)) FROM t",
            // not directly after an operator
            "SELECT a FROM t WHERE x = -5 OR y IN (1, 2) OR z BETWEEN 1 AND 2",
            "SELECT a FROM t WHERE d = DATE '2020-01-01'",
            // too big for an integer: SQLite reads a REAL
            "SELECT a FROM t WHERE x = 99999999999999999999",
            // inside a CTE (its own select list) or after the condition ended
            "WITH c AS (SELECT a FROM t WHERE x = 1) SELECT * FROM c",
        ] {
            assert_eq!(lifted(sql), (sql.to_string(), vec![]), "{sql}");
        }
    }

    #[test]
    fn conditions_end_with_their_clause_or_parenthesis() {
        assert_eq!(
            lifted("SELECT a FROM t WHERE x = 1 UNION SELECT b = 2 FROM u WHERE y = 3"),
            (
                "SELECT a FROM t WHERE x = ?1 UNION SELECT b = 2 FROM u WHERE y = ?2".into(),
                vec![Param::Int(1), Param::Int(3)]
            )
        );
        assert_eq!(
            lifted("SELECT a FROM t JOIN u ON u.id = t.u AND u.k = 'x' WHERE t.id IN (SELECT id FROM v WHERE v.z = 4)"),
            (
                "SELECT a FROM t JOIN u ON u.id = t.u AND u.k = ?1 WHERE t.id IN (SELECT id FROM v WHERE v.z = ?2)".into(),
                vec![Param::Text("x".into()), Param::Int(4)]
            )
        );
    }

    #[test]
    fn sql_server_and_untokenizable_text_are_left_alone() {
        let sql = "SELECT * FROM t WHERE id = 1";
        assert_eq!(lift(sql, SqlDialect::MsSql).template, sql);
        let broken = "SELECT * FROM t WHERE s = 'unterminated";
        assert_eq!(lifted(broken), (broken.to_string(), vec![]));
    }
}
