//! JSON-RPC 2.0 envelopes and the MCP protocol revisions this server speaks.
//!
//! Kept deliberately small: requests are parsed into [`Incoming`] with `params` left as a
//! `serde_json::Value`, and each method handler deserialises only the parameters it needs.
//! That keeps one parse per request on the hot path and lets the three revisions share code.

use crate::json::Json;
use axum::http::StatusCode;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

/// Revisions served from the same endpoint, oldest first (2024-11-05 is served on the legacy
/// HTTP+SSE endpoint only: [`SSE_SESSION_VERSIONS`]).
pub const SUPPORTED_VERSIONS: [&str; 4] =
    ["2025-03-26", "2025-06-18", "2025-11-25", MODERN_VERSION];
/// The newest revision that still uses `initialize` and sessions.
pub const LATEST_LEGACY_VERSION: &str = "2025-11-25";
/// What a client gets that has named no revision: no `MCP-Protocol-Version` header on a plain
/// POST, or a request on a legacy HTTP+SSE session before `initialize`. The clients that name
/// none are those of 2024-11-05 and 2025-03-26 (the header came with 2025-06-18), and the two
/// differ only in tool annotations, which a 2024-11-05 client ignores.
pub const UNNAMED_VERSION: &str = "2025-03-26";
/// The stateless revision: per-request `_meta`, `server/discover`, header checks.
pub const MODERN_VERSION: &str = "2026-07-28";

/// Revisions a client of a 2025 session may name in `MCP-Protocol-Version` (a missing header
/// means 2025-03-26; SDKs built for older revisions still send theirs).
pub const KNOWN_SESSION_VERSIONS: [&str; 4] = SSE_SESSION_VERSIONS;

/// Revisions `initialize` settles on at `{scope}/mcp` (Streamable HTTP, which 2025-03-26
/// introduced): a client asking for one of them gets it, and its results take that
/// revision's shapes ([`Shapes`]); a 2025-03-26 session also takes JSON-RPC batches, which
/// only that revision has (`mcp::batch`).
pub const STREAMABLE_SESSION_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// Revisions `initialize` settles on at the legacy HTTP+SSE endpoint (`mcp::sse`): those of
/// Streamable HTTP, and 2024-11-05, whose transport it is (a client that speaks only 2024-11-05
/// would disconnect when offered a newer one).
pub const SSE_SESSION_VERSIONS: [&str; 4] =
    ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// What a revision's results may carry, where the revisions we serve differ: every member we
/// send that an older revision's schema lacks is left out for a session of that revision, and
/// nothing else changes (tools, their arguments and the text of their results are the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shapes {
    /// 2024-11-05: no `title` (tools, resources, prompts, `serverInfo`), no tool
    /// `annotations`, no `outputSchema`, no `structuredContent` (a tool's JSON result is its
    /// text content alone).
    V2024_11_05,
    /// 2025-03-26: tool `annotations`; still no `title`, `outputSchema` or
    /// `structuredContent`.
    V2025_03_26,
    /// 2025-06-18 and later: everything.
    Current,
}

impl Shapes {
    /// `title` on tools, resources, prompts and `serverInfo` (2025-06-18).
    pub fn titles(self) -> bool {
        self == Shapes::Current
    }

    /// A tool's `outputSchema`, and `structuredContent` in its results (2025-06-18).
    pub fn structured(self) -> bool {
        self == Shapes::Current
    }

    /// A tool's `annotations` (2025-03-26).
    pub fn tool_annotations(self) -> bool {
        self != Shapes::V2024_11_05
    }

    /// Leaves `title` out of an object (a tool, resource, prompt or `serverInfo`) for a
    /// revision without it.
    pub fn fit_title(self, v: &mut Value) {
        if !self.titles()
            && let Value::Object(m) = v
        {
            m.shift_remove("title");
        }
    }

    /// Leaves out of a tool definition what the revision lacks: `title`, `outputSchema`,
    /// `annotations`.
    pub fn fit_tool(self, v: &mut Value) {
        self.fit_title(v);
        if let Value::Object(m) = v {
            if !self.structured() {
                m.shift_remove("outputSchema");
            }
            if !self.tool_annotations() {
                m.shift_remove("annotations");
            }
        }
    }
}

/// `_meta` key carrying the protocol version on every 2026-07-28 request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key carrying the client capabilities on every 2026-07-28 request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key carrying server info on 2026-07-28 results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// A well-formed message the transport refuses (rate limited, not acceptable, no session
/// header, too many streams, a forbidden origin): the code the official SDKs use for such
/// refusals; the HTTP status says which.
pub const SERVER_ERROR: i64 = -32000;
/// The session named by `Mcp-Session-Id` (or the legacy `session_id`) is unknown or ended:
/// the official SDKs' code, with a 404.
pub const SESSION_NOT_FOUND: i64 = -32001;
/// A request its client cancelled (`notifications/cancelled`), for a client that takes only
/// JSON and so must get some answer: the Language Server Protocol's code for it, which MCP's
/// cancellation came from.
pub const REQUEST_CANCELLED: i64 = -32800;
/// 2026-07-28: a required header is missing, malformed or disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the requested protocol version is not supported.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Which protocol era a request belongs to; decides session handling and result shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `initialize` and sessions, with the revision they settled on: 2025-06-18 or 2025-11-25
    /// (GET streams on Streamable HTTP), 2025-03-26 (Streamable HTTP or the legacy HTTP+SSE
    /// endpoint), or 2024-11-05 (the legacy HTTP+SSE endpoint only).
    Legacy(&'static str),
    /// 2026-07-28: stateless, every request self-describing.
    Modern,
}

impl Era {
    pub fn version(self) -> &'static str {
        match self {
            Era::Legacy(v) => v,
            Era::Modern => MODERN_VERSION,
        }
    }

    /// The result shapes of this era's revision.
    pub fn shapes(self) -> Shapes {
        match self {
            Era::Legacy("2024-11-05") => Shapes::V2024_11_05,
            Era::Legacy("2025-03-26") => Shapes::V2025_03_26,
            _ => Shapes::Current,
        }
    }
}

/// Maps a version string to the `'static` one we support, if any.
pub fn supported_version(v: &str) -> Option<&'static str> {
    SUPPORTED_VERSIONS.iter().copied().find(|s| *s == v)
}

/// Maps a version string to the `'static` session revision it names, if any
/// ([`KNOWN_SESSION_VERSIONS`]).
pub fn known_session_version(v: &str) -> Option<&'static str> {
    KNOWN_SESSION_VERSIONS.iter().copied().find(|s| *s == v)
}

/// A JSON-RPC error, with the HTTP status it travels with.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
    pub status: StatusCode,
    /// The id of the message this error answers, when that message was invalid but its id
    /// could still be read (JSON-RPC 2.0 answers with `id: null` only when it could not);
    /// boxed, as it is rare, to keep `Result<_, RpcError>` small.
    pub id: Option<Box<Value>>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        let status = match code {
            PARSE_ERROR | INVALID_REQUEST | HEADER_MISMATCH | UNSUPPORTED_PROTOCOL_VERSION => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::OK,
        };
        Self {
            code,
            message: message.into(),
            data: None,
            status,
            id: None,
        }
    }
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(PARSE_ERROR, message)
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, message)
    }
    /// The transport refuses a well-formed message, with `status` (see [`SERVER_ERROR`]).
    pub fn refused(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(SERVER_ERROR, message).with_status(status)
    }
    /// A 404 for an unknown or ended session (see [`SESSION_NOT_FOUND`]).
    pub fn session_not_found(message: impl Into<String>) -> Self {
        Self::new(SESSION_NOT_FOUND, message).with_status(StatusCode::NOT_FOUND)
    }
    pub fn header_mismatch(message: impl Into<String>) -> Self {
        Self::new(HEADER_MISMATCH, message)
    }
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
    /// This error answers the message whose id is `id`.
    fn answering(mut self, id: Option<Value>) -> Self {
        self.id = id.map(Box::new);
        self
    }

    /// The JSON-RPC error object.
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            e["data"] = d.clone();
        }
        e
    }
}

/// A request: has an id and expects a response.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: Value,
    pub method: String,
    pub params: Value,
}

impl Request {
    /// `params._meta`, when present.
    pub fn meta(&self) -> Option<&serde_json::Map<String, Value>> {
        self.params.get("_meta").and_then(Value::as_object)
    }
}

/// One message a client POSTed.
#[derive(Debug, Clone)]
pub enum Incoming {
    Request(Request),
    Notification {
        method: String,
        params: Value,
    },
    /// A response to a server-initiated request (this server sends none, so it is dropped).
    Response,
}

/// Parses one JSON-RPC message. Batches are refused: no supported revision allows them.
///
/// A well-formed object is read straight into its members (`Members`), without building a
/// map of the whole envelope; anything that does not read that way (not an object, broken
/// JSON, a member given twice) is parsed as a `Value` and judged by [`parse_value`], so every
/// error is the one it has always been.
pub fn parse(body: &[u8]) -> Result<Incoming, RpcError> {
    // Only an object: serde would also read a struct from an array of its members in order.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if object && let Ok(m) = serde_json::from_slice::<Members>(body) {
        return m.validate();
    }
    parse_via_value(body)
}

/// [`parse`] through a `Value` of the whole body: what decides every message the direct read
/// does not take.
fn parse_via_value(body: &[u8]) -> Result<Incoming, RpcError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::parse(format!("Parse error: body is not valid JSON ({e})")))?;
    parse_value(v)
}

/// Validates a parsed JSON value as one JSON-RPC message.
pub fn parse_value(v: Value) -> Result<Incoming, RpcError> {
    let Value::Object(mut obj) = v else {
        return Err(RpcError::invalid_request(if v.is_array() {
            "Invalid Request: JSON-RPC batches are not supported; send one message per POST"
        } else {
            "Invalid Request: expected a JSON-RPC object"
        }));
    };
    Members {
        jsonrpc: obj.remove("jsonrpc"),
        id: obj.remove("id"),
        method: obj.remove("method"),
        params: obj.remove("params"),
        result: obj.contains_key("result").then_some(IgnoredAny),
        error: obj.contains_key("error").then_some(IgnoredAny),
    }
    .validate()
}

/// The members of a JSON-RPC object this server reads, each `Some` when present (`null`
/// included); others are ignored.
#[derive(serde::Deserialize)]
struct Members {
    #[serde(default, deserialize_with = "present")]
    jsonrpc: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "present")]
    error: Option<IgnoredAny>,
}

/// A member that is there, whatever its value (`Option`'s own reading makes `null` absent).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl Members {
    fn validate(self) -> Result<Incoming, RpcError> {
        if let Some(id) = &self.id
            && !(id.is_string() || id.is_i64() || id.is_u64())
        {
            return Err(RpcError::invalid_request(
                "Invalid Request: `id` must be a string or an integer",
            ));
        }
        // From here on the id is readable, so an error answers it, if the message is a request
        // (it has `method`): a response's id is one of the server's own request ids, which a
        // client must not take as the id of one of its requests.
        let answers = self.method.as_ref().and(self.id.clone());
        let invalid = |message: &str| RpcError::invalid_request(message).answering(answers.clone());
        if self.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
            return Err(invalid("Invalid Request: `jsonrpc` must be \"2.0\""));
        }
        let method = match self.method {
            Some(Value::String(m)) => Some(m),
            Some(_) => return Err(invalid("Invalid Request: `method` must be a string")),
            None => None,
        };
        let params = match self.params {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(p @ Value::Object(_)) => p,
            Some(_) => return Err(invalid("Invalid Request: `params` must be an object")),
        };
        match (self.id, method) {
            (Some(id), Some(method)) => Ok(Incoming::Request(Request { id, method, params })),
            (None, Some(method)) => Ok(Incoming::Notification { method, params }),
            (Some(_), None) if self.result.is_some() || self.error.is_some() => {
                Ok(Incoming::Response)
            }
            _ => Err(RpcError::invalid_request(
                "Invalid Request: a message needs `method` (request or notification) or `result`/`error` (response)",
            )),
        }
    }
}

/// The success response to `id` carrying `result` (a tool result with structured content is
/// assembled by [`Json::tool_response`] instead).
pub fn success_response(id: &Value, result: &impl serde::Serialize) -> Result<Json, RpcError> {
    #[derive(serde::Serialize)]
    struct Envelope<'a, T> {
        jsonrpc: &'static str,
        id: &'a Value,
        result: &'a T,
    }
    Json::encode(&Envelope {
        jsonrpc: "2.0",
        id,
        result,
    })
    .map_err(|e| RpcError::internal(format!("could not encode the result: {e}")))
}

/// An error response to `id`, or else to the id `err` carries; `id: null` when neither
/// names one (the request's id could not be read).
pub fn error_response(id: Option<&Value>, err: &RpcError) -> Json {
    let id = id.or(err.id.as_deref());
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        jsonrpc: &'static str,
        id: Option<&'a Value>,
        error: Value,
    }
    // Our own envelope (string keys, finite numbers) cannot fail to encode; if it ever did,
    // the client still gets a well-formed internal error.
    Json::encode(&Envelope {
        jsonrpc: "2.0",
        id,
        error: err.to_json(),
    })
    .unwrap_or_else(|_| Json::internal_error_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON-RPC 2.0: the error answers the request's id whenever the id can be read; it is
    /// `null` only when it cannot.
    #[test]
    fn an_invalid_message_with_a_readable_id_is_answered_under_that_id() {
        let answered = |body: &[u8]| {
            let err = parse(body).unwrap_err();
            assert_eq!(err.code, INVALID_REQUEST, "{}", err.message);
            let reply: Value = serde_json::from_slice(&error_response(None, &err).into_bytes())
                .expect("an error response is JSON");
            reply["id"].clone()
        };
        assert_eq!(
            answered(br#"{"jsonrpc":"2.0","id":7,"method":"ping","params":[1]}"#),
            json!(7)
        );
        assert_eq!(
            answered(br#"{"jsonrpc":"1.0","id":"a","method":"ping"}"#),
            json!("a")
        );
        assert_eq!(
            answered(br#"{"jsonrpc":"2.0","id":8,"method":3}"#),
            json!(8)
        );
        // Without `method` the id may be one of the server's own (a response's): not echoed.
        assert_eq!(answered(br#"{"jsonrpc":"2.0","id":9}"#), Value::Null);
        assert_eq!(
            answered(br#"{"jsonrpc":"1.0","id":3,"result":{}}"#),
            Value::Null
        );
        // Unreadable ids stay null.
        assert_eq!(
            answered(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            Value::Null
        );
        assert_eq!(answered(br#"{"jsonrpc":"2.0","method":5}"#), Value::Null);
        // An id given to the response wins over the one the error carries.
        let err = parse(br#"{"jsonrpc":"2.0","id":7,"method":3}"#).unwrap_err();
        let reply: Value =
            serde_json::from_slice(&error_response(Some(&json!(1)), &err).into_bytes()).unwrap();
        assert_eq!(reply["id"], json!(1));
    }

    #[test]
    fn a_request_with_an_object_id_is_invalid() {
        let err = parse(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#).unwrap_err();
        assert_eq!(err.code, INVALID_REQUEST);
    }

    #[test]
    fn a_batch_is_refused_as_invalid_request() {
        let err = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(err.code, INVALID_REQUEST);
        assert!(err.message.contains("batch"));
    }

    #[test]
    fn broken_json_is_a_parse_error() {
        assert_eq!(parse(b"{\"jsonrpc\":").unwrap_err().code, PARSE_ERROR);
    }

    #[test]
    fn notifications_and_responses_are_told_apart() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Incoming::Notification { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            Ok(Incoming::Response)
        ));
    }

    /// The direct read of an object must judge every message exactly as the `Value` path does.
    #[test]
    fn the_direct_read_and_the_value_path_agree() {
        let cases: &[&str] = &[
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":-7,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","method":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":null}"#,
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":3}"#,
            r#"{"jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":null,"id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":{"deep":[1,2,3]}}"#,
            r#"  {"jsonrpc":"2.0","id":1,"method":"ping"}  "#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#"[]"#,
            r#""text""#,
            r#"42"#,
            r#"null"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping""#,
            r#""#,
        ];
        for case in cases {
            let direct = parse(case.as_bytes());
            let via_value = parse_via_value(case.as_bytes());
            assert_eq!(format!("{direct:?}"), format!("{via_value:?}"), "{case}");
        }
        // The direct read is what well-formed objects take; a repeated member is left to the
        // `Value` path (the last one wins there).
        assert!(serde_json::from_slice::<Members>(cases[0].as_bytes()).is_ok());
        let repeated = r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#;
        assert!(cases.contains(&repeated));
        assert!(serde_json::from_slice::<Members>(repeated.as_bytes()).is_err());
    }
}
