//! Record ids: stable, parseable names for what `search` returns and `fetch` accepts.
//!
//! - a table: `schema.table` (e.g. `main.customers`, `dbo.Customers`);
//! - a row: `schema.table/key` where `key` is the primary key's values joined by `,`
//!   (e.g. `main.order_lines/1001,3`);
//! - a row of an ad-hoc query result: `sql:<token>/<n>`, resolved from the result cache.
//!
//! Each part is percent-encoded for `%`, `.`, `/`, `,`, `?`, `#`, `\` (which browsers turn into
//! `/` in a URL) and anything outside printable ASCII, so any table name or key value
//! round-trips, in a record URL too.
//!
//! A one-value key whose segment would be empty, `%2E` or `%2E%2E` gets a trailing `,`. Browsers
//! read `%2E` as a dot, so `main.t/%2E%2E` in a record URL would step out of the table, and an
//! empty key would not parse at all. The padded id has one value more than the table's key
//! columns, and the last is empty; `fetch`, which knows the key's width, drops it
//! ([`unpad_key`]). No id written before meant anything else: its value count was wrong.

use std::fmt::Write;

/// A parsed id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordId {
    Table {
        schema: String,
        table: String,
    },
    Row {
        schema: String,
        table: String,
        key: Vec<String>,
    },
    Cached {
        token: String,
        index: usize,
    },
}

const CACHED_PREFIX: &str = "sql:";

fn encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'.' | b'/' | b',' | b'?' | b'#' | b'\\') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RecordId {
    /// Id of a table.
    pub fn table(schema: &str, table: &str) -> String {
        let mut s = String::with_capacity(schema.len() + table.len() + 1);
        encode_into(&mut s, schema);
        s.push('.');
        encode_into(&mut s, table);
        s
    }

    /// Id of a row by its primary key values (already rendered as text).
    pub fn row<'a>(schema: &str, table: &str, key: impl IntoIterator<Item = &'a str>) -> String {
        let mut s = Self::table(schema, table);
        s.push('/');
        let start = s.len();
        for (i, k) in key.into_iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            encode_into(&mut s, k);
        }
        if matches!(&s[start..], "" | "%2E" | "%2E%2E") {
            s.push(',');
        }
        s
    }

    /// Id of row `index` of a cached ad-hoc result.
    pub fn cached(token: &str, index: usize) -> String {
        format!("{CACHED_PREFIX}{token}/{index}")
    }

    /// Parses an id; `None` when it has none of the three shapes.
    pub fn parse(id: &str) -> Option<RecordId> {
        let id = id.trim();
        if let Some(rest) = id.strip_prefix(CACHED_PREFIX) {
            let (token, index) = rest.split_once('/')?;
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            return Some(RecordId::Cached {
                token: token.to_string(),
                index: index.parse().ok()?,
            });
        }
        let (name, key) = match id.split_once('/') {
            Some((n, k)) => (n, Some(k)),
            None => (id, None),
        };
        let (schema, table) = name.split_once('.')?;
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return None;
        }
        let schema = decode(schema)?;
        let table = decode(table)?;
        match key {
            None => Some(RecordId::Table { schema, table }),
            Some("") => None,
            Some(k) => {
                let key = k.split(',').map(decode).collect::<Option<Vec<_>>>()?;
                Some(RecordId::Row { schema, table, key })
            }
        }
    }
}

/// A row id's key values for a table whose key has `width` columns: the padding `,` that
/// [`RecordId::row`] adds after an empty or dot-only value is dropped.
pub fn unpad_key(width: usize, key: &[String]) -> &[String] {
    match key.split_last() {
        Some((last, rest)) if last.is_empty() && rest.len() == width => rest,
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_round_trip_with_awkward_values() {
        let id = RecordId::row("dbo", "Order.Details", ["a/b,c", "50%", "é x"]);
        assert_eq!(
            RecordId::parse(&id),
            Some(RecordId::Row {
                schema: "dbo".into(),
                table: "Order.Details".into(),
                key: vec!["a/b,c".into(), "50%".into(), "é x".into()]
            })
        );
    }

    #[test]
    fn simple_ids_stay_readable() {
        assert_eq!(
            RecordId::row("main", "order_lines", ["1001", "3"]),
            "main.order_lines/1001,3"
        );
        assert_eq!(RecordId::table("dbo", "Customers"), "dbo.Customers");
    }

    #[test]
    fn empty_and_dot_only_keys_are_padded_and_round_trip() {
        for (value, id) in [
            ("", "main.t/,"),
            (".", "main.t/%2E,"),
            ("..", "main.t/%2E%2E,"),
        ] {
            assert_eq!(RecordId::row("main", "t", [value]), id);
            let Some(RecordId::Row { key, .. }) = RecordId::parse(id) else {
                panic!("{id} does not parse");
            };
            assert_eq!(unpad_key(1, &key), [value.to_string()], "{id}");
        }
        // Neither a longer run of dots nor a composite key is a dot segment: no padding.
        assert_eq!(RecordId::row("main", "t", ["..."]), "main.t/%2E%2E%2E");
        assert_eq!(RecordId::row("main", "t", ["", ""]), "main.t/,");
        assert_eq!(RecordId::row("main", "t", [".", ".."]), "main.t/%2E,%2E%2E");
        // A two-column key whose last value is empty keeps it.
        let two = ["a".to_string(), String::new()];
        assert_eq!(unpad_key(2, &two), two);
        assert_eq!(unpad_key(1, &two), ["a".to_string()]);
    }

    #[test]
    fn cached_ids_parse() {
        assert_eq!(
            RecordId::parse("sql:ab12/7"),
            Some(RecordId::Cached {
                token: "ab12".into(),
                index: 7
            })
        );
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "customers",
            "main.",
            ".x",
            "main.t/",
            "sql:/1",
            "sql:x/y",
            "main.t/%zz",
            "a.b.c",
        ] {
            assert_eq!(RecordId::parse(bad), None, "{bad}");
        }
    }
}
