//! JSON text this process wrote itself, and the few ways responses are put together from it.
//!
//! A tool result is serialised once and then goes into the JSON-RPC response twice: escaped, as
//! the text content, and verbatim, as `structuredContent`. [`Json`] keeps the bytes (compact
//! UTF-8 JSON: only `serde_json`, [`Dual`] or the builders here make one), so
//! [`Json::tool_response`] assembles the whole response by copying slices into one buffer sized
//! up front, instead of re-serialising through `RawValue` and growing a fresh buffer at each
//! layer. Row results are written with [`Dual`], which produces the escaped form in the same
//! pass; anything else is escaped by [`escape_into`] when the response is assembled.

use std::fmt;

use serde::Serialize;

/// JSON text produced by this process: valid, compact, UTF-8.
pub struct Json(Vec<u8>);

impl Json {
    /// Serialises `value` (compact).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Self::encode_sized(value, 128)
    }

    /// Serialises `value` into a buffer that starts at `capacity` bytes, so a large result is
    /// written without regrowing (and copying) its buffer again and again.
    pub fn encode_sized<T: Serialize + ?Sized>(
        value: &T,
        capacity: usize,
    ) -> Result<Self, serde_json::Error> {
        let mut buf = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut buf, value)?;
        Ok(Self(buf))
    }

    /// A JSON-RPC response to `id` whose result is a `tools/call` result with `structured` as
    /// its text content too, as the MCP spec asks of tools that return structured content:
    /// `{"jsonrpc":"2.0","id":…,"result":{"content":[{"type":"text","text":"<structured, escaped>"}],"structuredContent":<structured>,"isError":false<tail>}}`,
    /// written into one buffer sized up front.
    ///
    /// `escaped` is `structured` already escaped (from [`Dual`]); without it, it is escaped
    /// here. Without `with_structured` (a session of a revision before 2025-06-18, which has
    /// no `structuredContent`) the JSON is the text content alone. `tail` is appended inside
    /// the result verbatim (e.g. `,"resultType":"complete"`); it must be empty or start with
    /// `,` and hold complete members.
    pub fn tool_response(
        id: &serde_json::Value,
        structured: &Json,
        escaped: Option<&[u8]>,
        with_structured: bool,
        tail: &Json,
    ) -> Self {
        const HEAD: &[u8] = br#","result":{"content":[{"type":"text","text":""#;
        const MID: &[u8] = br#""}],"structuredContent":"#;
        const TEXT_ONLY: &[u8] = br#""}]"#;
        const END: &[u8] = br#","isError":false"#;
        let n = if with_structured {
            structured.0.len()
        } else {
            0
        };
        // Escaping adds one byte per `"` or `\`; a quarter extra covers typical row data.
        let text = escaped.map_or(structured.0.len() * 5 / 4, <[u8]>::len);
        let mut buf = Vec::with_capacity(
            64 + HEAD.len() + text + MID.len() + n + END.len() + tail.0.len() + 2,
        );
        push_envelope_head(&mut buf, id);
        buf.extend_from_slice(HEAD);
        match escaped {
            Some(e) => buf.extend_from_slice(e),
            None => escape_into(&mut buf, &structured.0),
        }
        if with_structured {
            buf.extend_from_slice(MID);
            buf.extend_from_slice(&structured.0);
        } else {
            buf.extend_from_slice(TEXT_ONLY);
        }
        buf.extend_from_slice(END);
        buf.extend_from_slice(&tail.0);
        buf.extend_from_slice(b"}}");
        Self(buf)
    }

    /// The members of a JSON object without its braces, for [`Json::tool_response`]'s `tail`:
    /// `{"a":1}` becomes `,"a":1`; `{}` (or anything not an object) becomes empty.
    pub fn object_members(object: &Json) -> Self {
        match object.0.as_slice() {
            [b'{', inner @ .., b'}'] if !inner.is_empty() => {
                let mut buf = Vec::with_capacity(inner.len() + 1);
                buf.push(b',');
                buf.extend_from_slice(inner);
                Self(buf)
            }
            _ => Self(Vec::new()),
        }
    }

    /// An empty `tail` for [`Json::tool_response`].
    pub fn no_members() -> Self {
        Self(Vec::new())
    }

    /// The text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, for a response body.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The text as a `String` (our own output is UTF-8; a bad byte, which cannot happen,
    /// would be replaced rather than panic).
    pub fn into_string(self) -> String {
        String::from_utf8(self.0)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// A JSON array of `items`, in order (a JSON-RPC batch response).
    pub fn array(items: Vec<Json>) -> Self {
        let len = items.iter().map(|j| j.0.len() + 1).sum::<usize>() + 1;
        let mut buf = Vec::with_capacity(len);
        buf.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(&item.0);
        }
        buf.push(b']');
        Self(buf)
    }

    /// The text parsed back into a value (for callers off the hot path).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.0).unwrap_or(serde_json::Value::Null)
    }

    /// The response for the one failure of our own: a response we could not encode.
    pub fn internal_error_response() -> Self {
        Self(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error encoding the response"}}"#
                .to_vec(),
        )
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// `{"jsonrpc":"2.0","id":<id>`.
fn push_envelope_head(buf: &mut Vec<u8>, id: &serde_json::Value) {
    buf.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    // A JSON-RPC id is a string, a number or null; writing a `Value` into a Vec cannot fail.
    let mark = buf.len();
    if serde_json::to_writer(&mut *buf, id).is_err() {
        buf.truncate(mark);
        buf.extend_from_slice(b"null");
    }
}

/// A result written once into two buffers: the JSON itself, and the same JSON escaped as the
/// contents of a JSON string, ready to be the text content of a tool result. Writing both
/// while serialising skips a second pass over the whole result, which for row data (a `"`
/// every seven bytes) costs as much as serialising it.
///
/// The caller writes well-formed JSON through these methods (tests compare the output with
/// serde's for the same value); [`Dual::finish`] returns it as [`Json`].
pub struct Dual {
    raw: Vec<u8>,
    text: Vec<u8>,
}

impl Dual {
    /// Two buffers of about `capacity` bytes each.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            raw: Vec::with_capacity(capacity),
            text: Vec::with_capacity(capacity + capacity / 4),
        }
    }

    /// JSON syntax or a literal with no `"` or `\` in it (`{`, `],`, `true`, `null`): the
    /// same bytes in both forms.
    pub fn syntax(&mut self, s: &[u8]) {
        debug_assert!(!s.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20));
        self.raw.extend_from_slice(s);
        self.text.extend_from_slice(s);
    }

    /// A string, quoted and escaped.
    pub fn string(&mut self, s: &str) {
        let plain = !s.bytes().fold(false, |hit, b| {
            hit | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if plain {
            self.raw.push(b'"');
            self.raw.extend_from_slice(s.as_bytes());
            self.raw.push(b'"');
            self.text.extend_from_slice(b"\\\"");
            self.text.extend_from_slice(s.as_bytes());
            self.text.extend_from_slice(b"\\\"");
        } else if self.value(s).is_err() {
            // Writing a `&str` into a Vec cannot fail.
            self.syntax(b"null");
        }
    }

    /// An object key and its colon.
    pub fn key(&mut self, k: &str) {
        self.string(k);
        self.syntax(b":");
    }

    /// A piece written once and appended many times (an object key repeated on every row).
    pub fn piece(write: impl FnOnce(&mut Dual)) -> Piece {
        let mut d = Dual::with_capacity(32);
        write(&mut d);
        Piece(d)
    }

    /// Appends a [`Piece`].
    pub fn put(&mut self, p: &Piece) {
        self.raw.extend_from_slice(&p.0.raw);
        self.text.extend_from_slice(&p.0.text);
    }

    /// An integer.
    pub fn int(&mut self, i: impl itoa::Integer) {
        let mut buf = itoa::Buffer::new();
        self.syntax(buf.format(i).as_bytes());
    }

    /// Any other value, through serde.
    pub fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), serde_json::Error> {
        let start = self.raw.len();
        serde_json::to_writer(&mut self.raw, v).inspect_err(|_| self.raw.truncate(start))?;
        escape_into(&mut self.text, &self.raw[start..]);
        Ok(())
    }

    /// The JSON and its escaped form.
    pub fn finish(self) -> (Json, Vec<u8>) {
        (Json(self.raw), self.text)
    }
}

/// Something written with [`Dual`] once, to append again with [`Dual::put`].
pub struct Piece(Dual);

/// Appends `text` as the contents of a JSON string (without the quotes): `"` and `\` get a
/// backslash, control characters their short or `\u00XX` form. Everything else, including
/// multi-byte UTF-8, is copied as is.
///
/// Compact JSON from serde has a quote every few bytes, so this works a word at a time: eight
/// bytes with nothing to escape (the common case) are copied with one test.
pub fn escape_into(out: &mut Vec<u8>, text: &[u8]) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    let mut run = 0; // start of the bytes not yet copied
    while i + 8 <= text.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&text[i..i + 8]);
        let w = u64::from_le_bytes(w);
        // A byte is "special" if it is < 0x20, == '"' or == '\\'; the classic zero-byte test
        // (x - 0x01…) & !x & 0x80… finds each, and is exact for the lowest special byte,
        // which is the one we act on.
        let quote = w ^ (LO * u64::from(b'"'));
        let slash = w ^ (LO * u64::from(b'\\'));
        let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
        let control = w.wrapping_sub(LO * 0x20) & !w & HI;
        let hits = zero(quote) | zero(slash) | control;
        if hits == 0 {
            i += 8;
            continue;
        }
        let at = i + (hits.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&text[run..at]);
        push_escape(out, text[at]);
        i = at + 1;
        run = i;
    }
    while i < text.len() {
        let b = text[i];
        if b < 0x20 || b == b'"' || b == b'\\' {
            out.extend_from_slice(&text[run..i]);
            push_escape(out, b);
            run = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&text[run..]);
}

fn push_escape(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        escape_into(&mut out, s.as_bytes());
        String::from_utf8(out).unwrap()
    }

    /// The reference: serde_json's own string escaping, quotes stripped.
    fn reference(s: &str) -> String {
        let q = serde_json::to_string(s).unwrap();
        q[1..q.len() - 1].to_string()
    }

    #[test]
    fn escaping_round_trips_through_serde_for_every_special_byte_at_every_offset() {
        let specials: Vec<char> = (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', '/', 'é', '€', '😀', '\u{7f}'])
            .collect();
        for &c in &specials {
            for pad in 0..20 {
                let s = format!("{}{c}{}{c}", "a".repeat(pad), "b".repeat(pad % 9));
                let e = escaped(&s);
                let back: String = serde_json::from_str(&format!("\"{e}\"")).unwrap();
                assert_eq!(back, s, "char {:?} pad {pad}", c);
            }
        }
    }

    #[test]
    fn escaping_matches_serde_where_serde_has_a_short_form() {
        // serde writes \b \f \n \r \t and \u00XX for other controls: the same bytes as ours.
        let all: String = (0u8..0x80).map(char::from).collect::<String>() + "naïve \"q\" \\ end";
        assert_eq!(escaped(&all), reference(&all));
        for len in 0..40 {
            let s: String = "x\"".repeat(len);
            assert_eq!(escaped(&s), reference(&s));
        }
    }

    #[test]
    fn bytes_near_the_special_ones_are_not_escaped() {
        // 0x20 (space), '!' and '#', ']' and '[' sit next to the special bytes.
        let s = " !#[]^_`{|}~ 0123456789 !#[]";
        assert_eq!(escaped(s), s);
    }

    #[test]
    fn a_tool_result_carries_the_same_json_as_text_and_structured_content() {
        let structured = Json::encode(
            &json!({"rows":[{"name":"O'Brien \"Bob\"","note":"line\nbreak \\ é"}],"n":1}),
        )
        .unwrap();
        let tail = Json::object_members(&Json::encode(&json!({"resultType":"complete"})).unwrap());
        let out = Json::tool_response(&json!(3), &structured, None, true, &tail).to_value();
        assert_eq!(out["jsonrpc"], "2.0");
        assert_eq!(out["id"], 3);
        let out = &out["result"];
        let text = out["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            out["structuredContent"]
        );
        assert_eq!(out["content"][0]["type"], "text");
        assert_eq!(out["isError"], false);
        assert_eq!(out["resultType"], "complete");
        assert_eq!(out.as_object().unwrap().len(), 4);
    }

    #[test]
    fn dual_writes_the_same_json_twice_once_escaped() {
        let mut d = Dual::with_capacity(8);
        d.syntax(b"{");
        d.key("plain");
        d.string("Anna Berg");
        d.syntax(b",");
        d.key("odd \"key\"");
        d.string("tab\there \\ \"quoted\" \u{1}");
        d.syntax(b",");
        d.key("n");
        d.int(-42i64);
        d.syntax(b",");
        d.key("v");
        d.value(&json!([1.5, null, "x\"y"])).unwrap();
        d.syntax(b"}");
        let (raw, text) = d.finish();
        let want = json!({"plain":"Anna Berg","odd \"key\"":"tab\there \\ \"quoted\" \u{1}","n":-42,"v":[1.5,null,"x\"y"]});
        assert_eq!(raw.as_bytes(), serde_json::to_vec(&want).unwrap());
        let mut escaped = Vec::new();
        escape_into(&mut escaped, raw.as_bytes());
        assert_eq!(text, escaped);
        let out = Json::tool_response(&json!("id"), &raw, Some(&text), true, &Json::no_members())
            .to_value();
        let out = &out["result"];
        let text = out["content"][0]["text"].as_str().unwrap();
        assert_eq!(serde_json::from_str::<Value>(text).unwrap(), want);
        assert_eq!(out["structuredContent"], want);
    }

    #[test]
    fn a_tool_response_carries_any_id() {
        let structured = Json::encode(&json!({"ok":true})).unwrap();
        for id in [json!(7), json!("a\"b"), Value::Null] {
            let v =
                Json::tool_response(&id, &structured, None, true, &Json::no_members()).to_value();
            assert_eq!(v["id"], id);
            assert_eq!(v["result"]["structuredContent"], json!({"ok":true}));
        }
    }

    #[test]
    fn a_tool_result_without_structured_content_is_the_text_alone() {
        let structured = Json::encode(&json!({"rows":[{"name":"O'Brien \"Bob\""}]})).unwrap();
        for escaped in [
            None,
            Some(br#"{\"rows\":[{\"name\":\"O'Brien \\\"Bob\\\"\"}]}"#.as_slice()),
        ] {
            let out =
                Json::tool_response(&json!(1), &structured, escaped, false, &Json::no_members())
                    .to_value();
            let out = &out["result"];
            assert_eq!(
                out,
                &json!({"content":[{"type":"text","text":r#"{"rows":[{"name":"O'Brien \"Bob\""}]}"#}],"isError":false}),
                "{escaped:?}"
            );
        }
    }

    #[test]
    fn object_members_of_an_empty_object_are_empty() {
        assert!(
            Json::object_members(&Json::encode(&json!({})).unwrap())
                .as_bytes()
                .is_empty()
        );
        assert_eq!(
            Json::internal_error_response().to_value()["error"]["code"],
            crate::mcp::protocol::INTERNAL_ERROR
        );
        assert_eq!(
            Json::object_members(&Json::encode(&json!({"a":1})).unwrap()).as_bytes(),
            b",\"a\":1"
        );
    }
}
