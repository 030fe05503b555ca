//! Literal lifting: ad-hoc SQL such as `SELECT * FROM customers WHERE customer_id = 42` becomes
//! the template `… WHERE customer_id = ?1` (SQLite) or `… = @P1` (SQL Server) plus the bound
//! value `42`.
//!
//! Clients send the same query shapes over and over with different values. Keyed by the
//! template, the guard's verdict ([`super::guard::check`]) is reused across those calls
//! instead of the text being parsed afresh (see `tools::sql::accept`). SQLite also runs the
//! template, so its prepared statement is reused too. SQL Server runs the text as sent: bound
//! through `sp_executesql`, the same queries cost the TDS test peer 50–80% more CPU each
//! (`benches/README.md`), so there the template is only the verdict's key.
//!
//! A literal is lifted only where a bound parameter means exactly the same thing:
//!
//! - it directly follows a comparison operator (`=`, `==`, `<>`, `!=`, `<`, `<=`, `>`, `>=`)
//!   or `LIKE`/`GLOB`;
//! - it sits in the top-level `WHERE`, `HAVING` or a join's `ON` condition (any nesting inside
//!   it). Never in a select list (SQLite names result columns after their expression text),
//!   `ORDER BY`/`GROUP BY` (a number there is a column position), `LIMIT`, `TOP`,
//!   `OFFSET`/`FETCH`, `OPTION (…)` hints, type arguments or anything else where a literal is
//!   syntax rather than a value;
//! - nothing follows it that would make a placeholder mean something else: not `(`, `.`,
//!   `::` or `[` (`@P1(1)` is a call where `5(1)` does not parse), nor, without a space
//!   between, anything but `)`, `,`, `;` or an operator (`@P1e5` and `@P1#` are other names
//!   where `N'x'e5` and `5#` do not parse; `'x'5` would make `?15`);
//! - its text is exactly what the tokenizer read (so the bound value is the literal's value),
//!   and the parameter has the literal's type:
//!   - **SQLite**: integers (as `INTEGER`), other numbers (as `REAL`) and single-quoted strings
//!     (as `TEXT`), which is what SQLite makes of those literals.
//!   - **SQL Server**: integers that fit in 32 bits (T-SQL reads them as `int`; an `int`
//!     parameter overflows where the literal would), numbers with an exponent (`float`), and
//!     `N'…'` strings (`nvarchar`). The template serves only as a verdict's key there, but it
//!     is kept to what a parameterised run would mean exactly. Plain `'…'` strings stay:
//!     they are `varchar` in the database's code page, and an `nvarchar` parameter would keep
//!     characters the code page would not, compare trailing blanks differently under `LIKE`,
//!     order differently under SQL collations and turn a seek on a `varchar` column into a
//!     scan (tiberius cannot bind `varchar`). Decimals (`1.5`, `numeric(2,1)`) and larger
//!     integers (`numeric(p,0)`) stay: a parameter would change the precision and scale of
//!     whatever they are computed with. `0x…` binary literals and `$…` money literals are
//!     never lifted, and neither is anything in a query that mentions a variable or parameter
//!     of its own (`@x`), which the template's `@P1`, `@P2`, … could collide with.
//!
//! Everything else stays as written. If the template cannot be tokenized, or nothing is
//! lifted, the template is the original text.
//!
//! Two readers feed these rules. Text made only of plain words, numbers, `'…'` strings,
//! whitespace and the common operators, which is what clients send nearly always, is read by a
//! small scanner of its own (`simple_tokens`); anything else (comments, other quoting,
//! prefixed literals, variables, operators run together, non-ASCII outside strings) goes
//! through sqlparser's tokenizer, which cost about 5% of a point lookup's server CPU by
//! itself. A test runs both readers on random text from both kinds of pieces and requires
//! the same template and values. Neither reader is a safety layer: the guard parses the
//! template, and the template is what runs.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::LazyLock;

use sqlparser::dialect::{Dialect, MsSqlDialect, SQLiteDialect};
use sqlparser::keywords::{ALL_KEYWORDS, ALL_KEYWORDS_INDEX, Keyword};
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
    /// The SQL with each lifted literal replaced by `?N` (SQLite) or `@PN` (SQL Server, the
    /// names tiberius would give bound parameters), N from 1; or the original text.
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
///
/// Text made only of plain words, numbers, `'…'` strings, whitespace and the common operators
/// (what clients send nearly always) is read by `simple_tokens`; anything else by sqlparser's
/// tokenizer. Both feed the same rules, and a test holds them to the same result.
pub fn lift(sql: &str, dialect: SqlDialect) -> Lifted<'_> {
    match simple_tokens(sql) {
        Some(tokens) => lift_tokens(sql, dialect, tokens, |r| Some(r.clone())),
        None => lift_tokenized(sql, dialect),
    }
}

/// [`lift`] through sqlparser's tokenizer, whatever the text.
fn lift_tokenized(sql: &str, dialect: SqlDialect) -> Lifted<'_> {
    let tokenizer_dialect: &dyn Dialect = match dialect {
        SqlDialect::Sqlite => &SQLiteDialect {},
        SqlDialect::MsSql => &MsSqlDialect {},
    };
    let Ok(tokens) = Tokenizer::new(tokenizer_dialect, sql)
        .with_unescape(true)
        .tokenize_with_location()
    else {
        return Lifted::verbatim(sql);
    };
    if dialect == SqlDialect::MsSql && tokens.iter().any(|t| names_a_variable(&t.token)) {
        return Lifted::verbatim(sql);
    }
    let lines = LineStarts::new(sql);
    lift_tokens(
        sql,
        dialect,
        tokens
            .iter()
            .map(|t| (Tok::of(&t.token), (t.span.start, t.span.end))),
        |(start, end)| lines.range(*start, *end, sql),
    )
}

/// The rules of the module docs over `tokens`, each with where it sits (`range` turns that into
/// a byte range of `sql`; it is asked only for literals).
fn lift_tokens<'s, 't, R>(
    sql: &'s str,
    dialect: SqlDialect,
    tokens: impl IntoIterator<Item = (Tok<'t>, R)>,
    range: impl Fn(&R) -> Option<std::ops::Range<usize>>,
) -> Lifted<'s> {
    let mut clause = Clause::Other;
    // Clauses switch only at the top level; a condition covers everything nested in it.
    let mut depth = 0usize;
    // Whether the previous token (whitespace aside) was one after which a literal is a value.
    let mut after_operator = false;
    // (byte range in `sql`, value)
    let mut lifted: Vec<(std::ops::Range<usize>, Param)> = Vec::new();
    // Whether the previous token was lifted, and whether whitespace (or a comment) followed.
    let mut just_lifted = false;
    let mut gap = false;
    for (token, at) in tokens {
        if token == Tok::Gap {
            gap = true;
            continue;
        }
        if std::mem::take(&mut just_lifted) && !may_follow_a_parameter(&token, gap) {
            lifted.pop();
        }
        gap = false;
        match &token {
            Tok::LParen => depth += 1,
            Tok::RParen => depth = depth.saturating_sub(1),
            // A condition has no top-level commas: this is a list (of tables, after `FROM a
            // JOIN b ON …, c`, say), not the condition any more.
            Tok::Comma if depth == 0 => clause = Clause::Other,
            Tok::Word(Kw::Condition) if depth == 0 => clause = Clause::Condition,
            Tok::Word(Kw::Clause) if depth == 0 => clause = Clause::Other,
            Tok::Number(_) | Tok::Quoted(_) | Tok::National(_)
                if clause == Clause::Condition && lifted.len() < MAX_PARAMS && after_operator =>
            {
                if let Some(r) = range(&at)
                    && let Some(param) = param_of(&token, &sql[r.clone()], dialect)
                {
                    lifted.push((r, param));
                    just_lifted = true;
                }
            }
            _ => {}
        }
        after_operator = binds_a_value(&token);
    }
    if lifted.is_empty() {
        return Lifted::verbatim(sql);
    }
    let mut template = String::with_capacity(sql.len() + 2 * lifted.len());
    let mut at = 0;
    let mut params = Vec::with_capacity(lifted.len());
    for (i, (range, param)) in lifted.into_iter().enumerate() {
        template.push_str(&sql[at..range.start]);
        let _ = match dialect {
            SqlDialect::Sqlite => write!(template, "?{}", i + 1),
            SqlDialect::MsSql => write!(template, "@P{}", i + 1),
        };
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

/// What the lifting rules need to know of a token.
#[derive(Debug, Clone, PartialEq)]
enum Tok<'t> {
    /// Whitespace or a comment.
    Gap,
    LParen,
    RParen,
    Comma,
    SemiColon,
    /// `.`, `::`, `[`: after a placeholder, they would make it part of a name or a call.
    Joins,
    /// `=`, `<>`, `!=`, `<`, `<=`, `>`, `>=`.
    Compare,
    /// `==` (SQLite).
    DoubleEq,
    /// `+`, `-`, `*`, `/`, `%`.
    Arithmetic,
    /// A word, by what it means to the rules.
    Word(Kw),
    /// A number literal, as written (no `L` suffix).
    Number(&'t str),
    /// `'…'`, its value.
    Quoted(Cow<'t, str>),
    /// `N'…'`, its value.
    National(Cow<'t, str>),
    /// Anything else.
    Other,
}

/// The keywords the rules act on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kw {
    /// `WHERE`, `HAVING`, `ON`: a condition starts.
    Condition,
    /// A keyword that starts anything else at the top level (`SELECT`, `FROM`, `ORDER`, …).
    Clause,
    /// `LIKE`, `GLOB`: a literal after it is a value.
    Like,
    /// Any other word.
    Plain,
}

impl Kw {
    fn of(k: Keyword) -> Self {
        match k {
            Keyword::WHERE | Keyword::HAVING | Keyword::ON => Kw::Condition,
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
            | Keyword::VALUES
            // T-SQL: hints, `FOR XML/JSON/BROWSE`, `FETCH NEXT n ROWS`, `TOP n`, table
            // hints: literals there are syntax.
            | Keyword::OPTION
            | Keyword::FOR
            | Keyword::FETCH
            | Keyword::TOP
            | Keyword::WITH => Kw::Clause,
            Keyword::LIKE | Keyword::GLOB => Kw::Like,
            _ => Kw::Plain,
        }
    }

    /// The same for a plain (unquoted ASCII) word, as sqlparser's tokenizer would classify
    /// it: the keywords the rules act on are taken once from sqlparser's own keyword table,
    /// so a word is compared with those few names only, and without an upper-cased copy.
    fn named(word: &str) -> Self {
        static ACTED_ON: LazyLock<Vec<(&str, Kw)>> = LazyLock::new(|| {
            ALL_KEYWORDS
                .iter()
                .zip(ALL_KEYWORDS_INDEX)
                .map(|(name, k)| (*name, Kw::of(*k)))
                .filter(|(_, kw)| *kw != Kw::Plain)
                .collect()
        });
        ACTED_ON
            .iter()
            .find(|(name, _)| word.eq_ignore_ascii_case(name))
            .map_or(Kw::Plain, |(_, kw)| *kw)
    }
}

impl<'t> Tok<'t> {
    fn of(token: &'t Token) -> Self {
        match token {
            Token::Whitespace(_) => Tok::Gap,
            Token::LParen => Tok::LParen,
            Token::RParen => Tok::RParen,
            Token::Comma => Tok::Comma,
            Token::SemiColon => Tok::SemiColon,
            Token::Period | Token::DoubleColon | Token::LBracket => Tok::Joins,
            Token::Eq | Token::Neq | Token::Lt | Token::Gt | Token::LtEq | Token::GtEq => {
                Tok::Compare
            }
            Token::DoubleEq => Tok::DoubleEq,
            Token::Plus | Token::Minus | Token::Mul | Token::Div | Token::Mod => Tok::Arithmetic,
            Token::Word(w) => Tok::Word(Kw::of(w.keyword)),
            Token::Number(n, false) => Tok::Number(n),
            Token::SingleQuotedString(s) => Tok::Quoted(Cow::Borrowed(s)),
            Token::NationalStringLiteral(s) => Tok::National(Cow::Borrowed(s)),
            _ => Tok::Other,
        }
    }
}

/// The tokens of `sql` with their byte ranges, when it is made only of ASCII words, plain
/// numbers (`42`, `1.5`), `'…'` strings (`''` for a quote, any text inside but a backslash),
/// whitespace, parentheses, commas, semicolons, periods and the operators `=`, `==`, `<>`,
/// `!=`, `<`, `<=`, `>`, `>=`, `+`, `-`, `*`, `/`, `%`. Anything else (comments, other quotes,
/// prefixes such as `N'…'`, exponents, `@`, `?`, `:`, `$`, `[`, non-ASCII outside strings,
/// operators run together) is `None`: sqlparser's tokenizer reads those.
fn simple_tokens(sql: &str) -> Option<Vec<(Tok<'_>, std::ops::Range<usize>)>> {
    let b = sql.as_bytes();
    let at = |i: usize| b.get(i).copied();
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let is_operator = |c: u8| b"=<>!+-*/%|&^~@#:?".contains(&c);
    let mut out: Vec<(Tok<'_>, std::ops::Range<usize>)> = Vec::with_capacity(b.len() / 4 + 1);
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        i += 1;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                while at(i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
                    i += 1;
                }
                Tok::Gap
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while at(i).is_some_and(is_word) {
                    i += 1;
                }
                // `N'…'`, `X'…'` and the like are literals of their own.
                if at(i) == Some(b'\'') {
                    return None;
                }
                Tok::Word(Kw::named(&sql[start..i]))
            }
            b'0'..=b'9' => {
                while at(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                if at(i) == Some(b'.') {
                    i += 1;
                    let fraction = i;
                    while at(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                    if i == fraction {
                        return None;
                    }
                }
                if at(i).is_some_and(|c| is_word(c) || c == b'.' || c == b'\'') {
                    return None;
                }
                Tok::Number(&sql[start..i])
            }
            b'\'' => {
                let mut doubled = false;
                loop {
                    match at(i)? {
                        b'\'' if at(i + 1) == Some(b'\'') => {
                            doubled = true;
                            i += 2;
                        }
                        b'\'' => {
                            i += 1;
                            break;
                        }
                        b'\\' => return None,
                        _ => i += 1,
                    }
                }
                if at(i).is_some_and(is_word) {
                    return None;
                }
                let inner = &sql[start + 1..i - 1];
                Tok::Quoted(if doubled {
                    Cow::Owned(inner.replace("''", "'"))
                } else {
                    Cow::Borrowed(inner)
                })
            }
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b',' => Tok::Comma,
            b';' => Tok::SemiColon,
            // Only a qualified name's period (`t.id`): elsewhere sqlparser reads a `.` by what
            // came before it (a number's start after an operator, say).
            b'.' if matches!(out.last(), Some((Tok::Word(_), r)) if r.end == start)
                && at(i).is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') =>
            {
                Tok::Joins
            }
            b'+' | b'-' | b'*' | b'/' | b'%' => Tok::Arithmetic,
            b'=' if at(i) == Some(b'=') => {
                i += 1;
                Tok::DoubleEq
            }
            b'=' => Tok::Compare,
            b'<' | b'>' | b'!' => {
                match (c, at(i)) {
                    (b'<', Some(b'=' | b'>')) | (b'>' | b'!', Some(b'=')) => i += 1,
                    (b'<' | b'>', _) => {}
                    _ => return None,
                }
                Tok::Compare
            }
            _ => return None,
        };
        // `--`, `/*`, `=>`, `->`, `<=>`, `||`, `-5` run together: sqlparser decides.
        if matches!(
            token,
            Tok::Compare | Tok::DoubleEq | Tok::Arithmetic | Tok::Joins
        ) && at(i).is_some_and(is_operator)
        {
            return None;
        }
        out.push((token, start..i));
    }
    Some(out)
}

/// Whether `token` (after whitespace or a comment if `gap`) may follow a lifted literal.
///
/// `5(1)` and `5 .c` do not parse, but `@P1(1)` is a call and `@P1 .c` a qualified name;
/// `N'x'e5` or `5#` do not either, but `@P1e5` and `@P1#` are other variables (and `'x'5`
/// would be `?15`). So a literal followed by one of those, or by anything but a closing
/// parenthesis, a comma, a semicolon or an operator without a space between, stays in the
/// text: the template cannot pass where the text would not.
fn may_follow_a_parameter(token: &Tok<'_>, gap: bool) -> bool {
    if matches!(token, Tok::LParen | Tok::Joins) {
        return false;
    }
    gap || matches!(
        token,
        Tok::RParen | Tok::Comma | Tok::SemiColon | Tok::Compare | Tok::Arithmetic
    )
}

/// Tokens after which a literal is an operand, never syntax.
fn binds_a_value(t: &Tok<'_>) -> bool {
    matches!(t, Tok::Compare | Tok::DoubleEq | Tok::Word(Kw::Like))
}

/// T-SQL tokens that name a variable or parameter (`@x`, `@@ROWCOUNT`, `?`, `$1`, `@ x`): a
/// query with one keeps its literals, so that no `@PN` of the template can mean something the
/// client wrote.
fn names_a_variable(t: &Token) -> bool {
    match t {
        Token::Word(w) => w.quote_style.is_none() && w.value.starts_with('@'),
        Token::Placeholder(_) | Token::AtSign | Token::AtAt => true,
        _ => false,
    }
}

/// The bound value of a literal whose source text is `text`, when binding it is exact.
fn param_of(token: &Tok<'_>, text: &str, dialect: SqlDialect) -> Option<Param> {
    match dialect {
        SqlDialect::Sqlite => sqlite_param(token, text),
        SqlDialect::MsSql => mssql_param(token, text),
    }
}

/// A T-SQL literal as a parameter of the same type (see the module docs for what stays).
fn mssql_param(token: &Tok<'_>, text: &str) -> Option<Param> {
    match token {
        // `int` (anything larger is `numeric(p, 0)` to SQL Server); only an exponent makes a
        // `float` literal (a plain decimal point is `numeric`).
        Tok::Number(n) if *n == text => number_param(
            n,
            |n| n.parse::<i32>().ok().map(i64::from),
            |b| b.iter().any(|c| matches!(c, b'e' | b'E')),
        ),
        // Exactly `N'…'` with `''` for each quote.
        Tok::National(s) => quoted_param(text.strip_prefix(['N', 'n'])?, s),
        _ => None,
    }
}

/// A SQLite literal as the value SQLite reads it as.
fn sqlite_param(token: &Tok<'_>, text: &str) -> Option<Param> {
    match token {
        // Too large for i64: SQLite reads it as a REAL; leave it in the text.
        Tok::Number(n) if *n == text => number_param(n, |n| n.parse().ok(), |_| true),
        // Exactly `'…'` with `''` for each quote: no other escapes to second-guess.
        Tok::Quoted(s) => quoted_param(text, s),
        _ => None,
    }
}

/// A number literal `n`: all digits is an integer if `int` reads it; a decimal or exponent
/// form (digits, `.`, `e`, sign) is a finite real where `real` allows it.
fn number_param(
    n: &str,
    int: impl Fn(&str) -> Option<i64>,
    real: impl Fn(&[u8]) -> bool,
) -> Option<Param> {
    let b = n.as_bytes();
    if b.iter().all(u8::is_ascii_digit) {
        int(n).map(Param::Int)
    } else if real(b)
        && b.iter().all(|c| c.is_ascii_digit() || b".eE+-".contains(c))
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

/// The string `s` if `quoted` is exactly `'…'` spelling it, with `''` for each quote.
fn quoted_param(quoted: &str, s: &str) -> Option<Param> {
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    (inner.replace("''", "'") == s && !s.contains('\0')).then(|| Param::Text(s.to_string()))
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
    fn untokenizable_text_is_left_alone() {
        let broken = "SELECT * FROM t WHERE s = 'unterminated";
        assert_eq!(lifted(broken), (broken.to_string(), vec![]));
        let broken = "SELECT * FROM t WHERE s = N'unterminated AND id = 1";
        assert_eq!(mssql(broken), (broken.to_string(), vec![]));
    }

    fn mssql(sql: &str) -> (String, Vec<Param>) {
        let l = lift(sql, SqlDialect::MsSql);
        (l.template.into_owned(), l.params)
    }

    #[test]
    fn sql_server_lookups_and_ranges_become_at_p_parameters() {
        assert_eq!(
            mssql("SELECT Id, Name FROM Customers WHERE Id = 42"),
            (
                "SELECT Id, Name FROM Customers WHERE Id = @P1".into(),
                vec![Param::Int(42)]
            )
        );
        assert_eq!(
            mssql("SELECT TOP 100 Id FROM [dbo].[Orders] WHERE [Id] > 10 ORDER BY Id"),
            (
                "SELECT TOP 100 Id FROM [dbo].[Orders] WHERE [Id] > @P1 ORDER BY Id".into(),
                vec![Param::Int(10)]
            )
        );
        assert_eq!(
            mssql(
                "select a from t join u on u.k = N'x' where n = N'O''Brien' and x <= 1.5E3 and y like n'東%' and z<>2147483647"
            ),
            (
                "select a from t join u on u.k = @P1 where n = @P2 and x <= @P3 and y like @P4 and z<>@P5".into(),
                vec![
                    Param::Text("x".into()),
                    Param::Text("O'Brien".into()),
                    Param::Real(1500.0),
                    Param::Text("東%".into()),
                    Param::Int(2_147_483_647),
                ]
            )
        );
    }

    #[test]
    fn sql_server_literals_whose_type_a_parameter_would_change_stay() {
        for sql in [
            // varchar: an nvarchar parameter would compare and convert differently
            "SELECT a FROM t WHERE name = 'abc'",
            "SELECT a FROM t WHERE name LIKE 'ab%'",
            // numeric(2,1) and numeric(10,0), not int or float
            "SELECT a FROM t WHERE x = 1.5",
            "SELECT a FROM t WHERE x = 2147483648",
            // varbinary and money
            "SELECT a FROM t WHERE x = 0x1F",
            "SELECT a FROM t WHERE x = $12.50",
            // not directly after an operator
            "SELECT a FROM t WHERE x = -5 OR y IN (1, 2) OR z BETWEEN 1 AND 2",
            "SELECT a FROM t WHERE d = CAST(N'2024-01-01' AS date)",
        ] {
            assert_eq!(mssql(sql), (sql.to_string(), vec![]), "{sql}");
        }
    }

    #[test]
    fn sql_server_row_counts_hints_and_select_lists_stay() {
        for sql in [
            "SELECT TOP 5 a FROM t",
            "SELECT TOP (5) a FROM t WHERE b IN (SELECT TOP 1 c FROM u)",
            "SELECT a FROM t WHERE b IN (SELECT TOP (1) c FROM u ORDER BY c OFFSET 5 ROWS FETCH NEXT 10 ROWS ONLY)",
            "SELECT a FROM t ORDER BY a OFFSET 5 ROWS FETCH NEXT 10 ROWS ONLY",
            "SELECT a = 1, b = N'x' FROM t",
            "SELECT a FROM t WHERE b > c OPTION (MAX_GRANT_PERCENT = 10)",
            "SELECT a FROM t JOIN u ON u.id = t.u, v WITH (SPATIAL_WINDOW_MAX_CELLS = 256)",
            "SELECT a FROM t WHERE b > c FOR XML PATH",
            // a parameter there would be a call or a qualified name
            "SELECT a FROM t WHERE b = 5(1)",
            "SELECT a FROM t WHERE b = 5 .c",
            "SELECT a FROM t WHERE b = N'x'(1)",
        ] {
            assert_eq!(mssql(sql), (sql.to_string(), vec![]), "{sql}");
        }
    }

    #[test]
    fn sql_server_queries_that_name_a_variable_keep_their_literals() {
        // The template's @P1 could otherwise be confused with the client's own.
        for sql in [
            "SELECT a FROM t WHERE x = @P1 AND y = 5",
            "SELECT a FROM t WHERE x = @x AND y = 5",
            "SELECT a FROM t WHERE x = @@SPID AND y = 5",
            "SELECT a FROM t WHERE y = 5 AND x = ?",
        ] {
            assert_eq!(mssql(sql), (sql.to_string(), vec![]), "{sql}");
        }
        // A bracketed name is a column, not a variable.
        assert_eq!(
            mssql("SELECT [@x] FROM t WHERE y = 5"),
            (
                "SELECT [@x] FROM t WHERE y = @P1".into(),
                vec![Param::Int(5)]
            )
        );
    }

    #[test]
    fn what_clients_send_takes_the_simple_reader() {
        for sql in [
            "SELECT * FROM customers WHERE customer_id = 42",
            "SELECT * FROM orders WHERE order_id > 10 ORDER BY order_id LIMIT 100",
            "select count(*) from t where a.b <> 'x' and c >= 1.5;",
            "SELECT TOP 100 Id, Name FROM Customers WHERE Id > 5 ORDER BY Id",
            "SELECT a FROM t WHERE n = 'ü, ''quoted'''",
        ] {
            assert!(simple_tokens(sql).is_some(), "{sql}");
        }
        for sql in [
            "SELECT 1 -- comment",
            "SELECT /* c */ 1",
            "SELECT * FROM t WHERE s = N'x'",
            "SELECT * FROM t WHERE x = 1e5",
            "SELECT * FROM t WHERE x = .5",
            "SELECT * FROM [t] WHERE x = 1",
            "SELECT * FROM t WHERE @x = 1",
            "SELECT \"a\" FROM t WHERE x = 1",
            "SELECT a FROM t WHERE x =-5",
            "SELECT a FROM t WHERE m = 'x\\y'",
            "SELECT a FROM t WHERE naïve = 1",
        ] {
            assert!(simple_tokens(sql).is_none(), "{sql}");
        }
    }

    /// The simple reader and sqlparser's tokenizer must lift exactly the same: random text
    /// from pieces of both kinds (and pieces that run together), in both dialects.
    #[test]
    fn the_simple_reader_lifts_what_the_tokenizer_lifts() {
        // Pieces the simple reader takes, then pieces it leaves to the tokenizer.
        const PIECES: &[&str] = &[
            "SELECT",
            "select",
            "FROM",
            "WHERE",
            "where",
            "HAVING",
            "ON",
            "JOIN",
            "GROUP",
            "BY",
            "ORDER",
            "LIMIT",
            "OFFSET",
            "UNION",
            "AND",
            "OR",
            "NOT",
            "IN",
            "BETWEEN",
            "LIKE",
            "like",
            "GLOB",
            "WITH",
            "AS",
            "TOP",
            "FETCH",
            "FOR",
            "OPTION",
            "t",
            "customers",
            "customer_id",
            "x1",
            "_a",
            "N",
            "X",
            "e",
            "0",
            "42",
            "007",
            "2147483647",
            "2147483648",
            "9223372036854775807",
            "99999999999999999999",
            "1.5",
            "0.25",
            "10.0",
            "'a'",
            "''",
            "'O''Brien'",
            "'ü'",
            "'DROP TABLE'",
            "'x'''",
            "=",
            "==",
            "<>",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "+",
            "-",
            "*",
            "/",
            "%",
            "(",
            ")",
            ",",
            ";",
            ".",
            // the rest
            "5.",
            ".5",
            "1e5",
            "1.5e3",
            "1_000",
            "'a\\b'",
            "N'x'",
            "X'00'",
            "'",
            "::",
            "--",
            "/*",
            "*/",
            "=>",
            "->",
            "<=>",
            "||",
            "!",
            "@",
            "@x",
            "?",
            ":a",
            "$1",
            "[a]",
            "\"a\"",
            "`a`",
            "#",
            "é",
            "\u{a0}",
        ];
        let simple_pieces = PIECES
            .iter()
            .position(|p| *p == "5.")
            .unwrap_or(PIECES.len());
        const GAPS: &[&str] = &[" ", " ", " ", "", "\n", "  ", "\t", "\r\n"];
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut simple, mut lifted_some) = (0, 0);
        for _ in 0..40_000 {
            let mut sql = String::new();
            // Half of the texts mostly from the simple pieces, half from all of them.
            let from = if next(2) == 0 {
                simple_pieces
            } else {
                PIECES.len()
            };
            for _ in 0..3 + next(22) {
                let n = if next(10) == 0 { PIECES.len() } else { from };
                sql.push_str(PIECES[next(n)]);
                sql.push_str(GAPS[next(GAPS.len())]);
            }
            // Half of them in the shape clients send, so conditions (and lifting) are common.
            if next(2) == 0 {
                sql = format!("SELECT a FROM t WHERE c = {sql}");
            }
            let is_simple = simple_tokens(&sql).is_some();
            simple += usize::from(is_simple);
            for dialect in [SqlDialect::Sqlite, SqlDialect::MsSql] {
                let fast = lift(&sql, dialect);
                let slow = lift_tokenized(&sql, dialect);
                assert_eq!(fast.template, slow.template, "{dialect:?}: {sql:?}");
                assert_eq!(fast.params, slow.params, "{dialect:?}: {sql:?}");
                if is_simple && !fast.params.is_empty() {
                    lifted_some += 1;
                }
            }
        }
        // The comparison means something only if the simple reader was exercised, with lifting.
        assert!(simple > 5_000, "only {simple} simple texts");
        assert!(
            lifted_some > 1_500,
            "only {lifted_some} simple texts lifted"
        );
    }
}
