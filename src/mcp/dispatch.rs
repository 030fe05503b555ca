//! JSON-RPC method dispatch: one function from a parsed request to a result or an error.
//! Transports (Streamable HTTP, legacy SSE) call it; it never sees HTTP.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::protocol::{
    Era, LATEST_LEGACY_VERSION, META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, META_SERVER_INFO,
    MODERN_VERSION, Request, RpcError, SSE_SESSION_VERSIONS, STREAMABLE_SESSION_VERSIONS,
    SUPPORTED_VERSIONS, Shapes, success_response,
};
use crate::db::TableInfo;
use crate::db::guard::SqlDialect;
use crate::json::Json;
use crate::ops::metrics::ToolStatus;
use crate::state::Scope;
use crate::tools::{self, ToolError, visible_tables};

/// How long a 2026-07-28 client may cache list results.
const LIST_TTL_MS: u64 = 60_000;

/// The `instructions` of `initialize` and `server/discover`: what the server is for, and the
/// SQL dialect its queries are written in, so a model writes `TOP` for SQL Server and `LIMIT`
/// for SQLite from its first query.
fn instructions(dialect: SqlDialect) -> &'static str {
    // One text: only the database and its dialect differ.
    macro_rules! text {
        ($database:literal, $dialect:literal) => {
            concat!(
                "This server gives read-only access to a ",
                $database,
                " database. Use `search` with plain words to find rows (or `list tables`, \
                 `describe <table>`, `sample <table>`, or a SELECT query), then `fetch` an id \
                 for the full record and its related records. ",
                $dialect,
                " Results are capped; nothing you run can change data."
            )
        };
    }
    match dialect {
        SqlDialect::MsSql => text!(
            "Microsoft SQL Server",
            "Queries are T-SQL: `SELECT TOP (n)` or `ORDER BY … OFFSET … FETCH`, never `LIMIT`; \
             `[brackets]` around names."
        ),
        SqlDialect::Sqlite => text!(
            "SQLite",
            "Queries are SQLite SQL: `LIMIT n`, never `TOP`; `\"double quotes\"` around names."
        ),
    }
}

/// Who is calling, for logs and the audit record.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Signed-in user, when authentication is on.
    pub user: Option<String>,
    /// OAuth client id, when authentication is on.
    pub client_id: Option<String>,
    /// The client IP the edge decided (absent only for requests that never passed it).
    pub ip: Option<std::net::IpAddr>,
}

impl Caller {
    /// The same caller, seen from `ip`.
    pub fn from_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }
}

fn server_info(shapes: Shapes) -> Value {
    let mut info =
        json!({"name": "mssql-mcp", "title": "mssql-mcp", "version": env!("CARGO_PKG_VERSION")});
    shapes.fit_title(&mut info);
    info
}

/// What the server offers in `era`. The stateless 2026-07-28 revision has no
/// `resources/subscribe` (`subscriptions/listen` replaces it, which this server does not
/// offer: a read-only schema never changes while it is served) and no `logging/setLevel`.
fn capabilities(era: Era) -> Value {
    match era {
        Era::Modern => json!({
            "tools": {"listChanged": false},
            "resources": {"subscribe": false, "listChanged": false},
            "prompts": {"listChanged": false},
        }),
        _ => json!({
            "tools": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": false},
            "prompts": {"listChanged": false},
            "logging": {},
        }),
    }
}

/// Checks the per-request `_meta` a 2026-07-28 request must carry.
pub fn check_modern_meta(req: &Request) -> Result<(), RpcError> {
    let meta = req.meta().ok_or_else(|| {
        RpcError::invalid_params(format!(
            "params._meta is required in protocol {MODERN_VERSION} (with `{META_PROTOCOL_VERSION}` and `{META_CLIENT_CAPABILITIES}`)"
        ))
        .with_status(axum::http::StatusCode::BAD_REQUEST)
    })?;
    for key in [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES] {
        if !meta.contains_key(key) {
            return Err(
                RpcError::invalid_params(format!("params._meta is missing `{key}`"))
                    .with_status(axum::http::StatusCode::BAD_REQUEST),
            );
        }
    }
    Ok(())
}

/// [`handle`] for a request of `session` (when it has one), unless its client cancels it
/// first with `notifications/cancelled`: `None` then. The request's future is dropped, so a
/// tool call still running is cancelled (its query with it) and audited as cancelled.
pub async fn handle_cancellable(
    scope: &Scope,
    era: Era,
    req: &Request,
    caller: &Caller,
    session: Option<&std::sync::Arc<crate::mcp::session::Session>>,
) -> Option<Result<Json, RpcError>> {
    let Some(session) = session else {
        return Some(handle(scope, era, req, caller).await);
    };
    let running = session.track(&req.id);
    tokio::select! {
        biased;
        result = handle(scope, era, req, caller) => Some(result),
        () = running.token.cancelled() => None,
    }
}

/// A notification of a session's client: `notifications/cancelled` stops the request it
/// names ([`crate::mcp::session::Session::cancel`]); the others need nothing from us.
pub fn notified(session: &crate::mcp::session::Session, method: &str, params: &Value) {
    if method == "notifications/cancelled"
        && let Some(id) = params.get("requestId")
    {
        session.cancel(id);
    }
}

/// Handles one request in `scope` and returns its serialised JSON-RPC response (a success;
/// failures are the `Err` the transport turns into an error response). Results take the
/// shapes of `era`'s revision ([`Shapes`]). For `initialize` the transport passes the version
/// [`negotiated_version`] picks, which the result names, and creates the session with it.
pub async fn handle(
    scope: &Scope,
    era: Era,
    req: &Request,
    caller: &Caller,
) -> Result<Json, RpcError> {
    if req.method == "tools/call" {
        return call_tool(scope, era, &req.id, &req.params, caller).await;
    }
    let modern = era == Era::Modern;
    let mut result = match req.method.as_str() {
        "initialize" => initialize(&req.params, era, scope.db.dialect())?,
        "ping" if !modern => json!({}),
        "server/discover" => json!({
            "supportedVersions": SUPPORTED_VERSIONS,
            "capabilities": capabilities(era),
            "instructions": instructions(scope.db.dialect()),
            "serverInfo": server_info(era.shapes()),
        }),
        "tools/list" => json!({
            "tools": tools::definitions(scope.profile(), era.shapes(), scope.db.dialect())
        }),
        "resources/list" => resources_list(scope, era.shapes()).await?,
        "resources/templates/list" => json!({"resourceTemplates": []}),
        "resources/read" => resources_read(scope, era, &req.params).await?,
        "resources/subscribe" | "resources/unsubscribe" if !modern => {
            // Schemas of a read-only database do not change while we serve it, so a
            // subscription never fires; we accept it for known resources.
            let uri = str_param(&req.params, "uri")?;
            find_resource(scope, era, uri).await?;
            json!({})
        }
        "prompts/list" => json!({"prompts": [explore_prompt(era.shapes())]}),
        "prompts/get" => prompts_get(&req.params)?,
        "logging/setLevel" if !modern => {
            let level = str_param(&req.params, "level")?;
            const LEVELS: [&str; 8] = [
                "debug",
                "info",
                "notice",
                "warning",
                "error",
                "critical",
                "alert",
                "emergency",
            ];
            if !LEVELS.contains(&level) {
                return Err(RpcError::invalid_params(format!(
                    "unknown log level `{level}`; use one of {}",
                    LEVELS.join(", ")
                )));
            }
            json!({})
        }
        other => {
            let err = RpcError::method_not_found(other);
            return Err(if modern {
                err.with_status(axum::http::StatusCode::NOT_FOUND)
            } else {
                err
            });
        }
    };
    if modern && let Value::Object(m) = &mut result {
        m.insert("resultType".into(), json!("complete"));
        if req.method == "server/discover" {
            m.remove("serverInfo");
        }
        let meta = m.entry("_meta").or_insert_with(|| json!({}));
        if let Value::Object(meta) = meta {
            meta.insert(META_SERVER_INFO.into(), server_info(Shapes::Current));
        }
        if matches!(
            req.method.as_str(),
            "server/discover"
                | "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read"
        ) {
            m.insert("ttlMs".into(), json!(LIST_TTL_MS));
            m.insert("cacheScope".into(), json!("public"));
        }
    }
    success_response(&req.id, &result)
}

/// The transport an `initialize` came on, which decides the revisions it may settle on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP (`{scope}/mcp`): [`STREAMABLE_SESSION_VERSIONS`].
    StreamableHttp,
    /// The legacy HTTP+SSE transport (`{scope}/sse`, `{scope}/messages`):
    /// [`SSE_SESSION_VERSIONS`], which add 2024-11-05, the revision whose transport it is.
    LegacySse,
}

/// The version `initialize` settles on for these params (see [`negotiate`]).
pub fn negotiated_version(params: &Value, transport: Transport) -> &'static str {
    negotiate(
        params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(""),
        transport,
    )
}

/// Picks the version for `initialize`: the client's if we serve it on `transport` (and it is
/// a session revision), else our latest session revision, which the spec lets the client
/// refuse by disconnecting.
pub fn negotiate(requested: &str, transport: Transport) -> &'static str {
    let offered: &[&'static str] = match transport {
        Transport::StreamableHttp => &STREAMABLE_SESSION_VERSIONS,
        Transport::LegacySse => &SSE_SESSION_VERSIONS,
    };
    offered
        .iter()
        .copied()
        .find(|v| *v == requested)
        .unwrap_or(LATEST_LEGACY_VERSION)
}

/// The `initialize` result for a session of `era`, the version [`negotiate`] picked (the
/// capabilities are the same in every session revision: all of them have tools, resources
/// with subscriptions, prompts and logging).
fn initialize(params: &Value, era: Era, dialect: SqlDialect) -> Result<Value, RpcError> {
    str_param(params, "protocolVersion")?;
    Ok(json!({
        "protocolVersion": era.version(),
        "capabilities": capabilities(era),
        "serverInfo": server_info(era.shapes()),
        "instructions": instructions(dialect),
    }))
}

fn str_param<'a>(params: &'a Value, key: &str) -> Result<&'a str, RpcError> {
    match params.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RpcError::invalid_params(format!(
            "`params.{key}` must be a string"
        ))),
        None => Err(RpcError::invalid_params(format!(
            "`params.{key}` is required"
        ))),
    }
}

/// `_meta` every 2026-07-28 result carries (built once).
fn modern_meta() -> &'static Value {
    static META: OnceLock<Value> = OnceLock::new();
    META.get_or_init(|| json!({ META_SERVER_INFO: server_info(Shapes::Current) }))
}

/// What follows `isError` in a successful `tools/call` result of this era (built once).
fn tool_result_tail(era: Era) -> &'static Json {
    static MODERN: OnceLock<Json> = OnceLock::new();
    static LEGACY: OnceLock<Json> = OnceLock::new();
    let cell = match era {
        Era::Modern => &MODERN,
        Era::Legacy(_) => &LEGACY,
    };
    // The members are built inside: only the first call of each era pays for them.
    cell.get_or_init(|| {
        let members = match era {
            Era::Modern => json!({"resultType": "complete", "_meta": modern_meta()}),
            Era::Legacy(_) => json!({}),
        };
        // Our own constant object: encoding cannot fail, and an empty tail is still valid.
        Json::encode(&members)
            .map(|j| Json::object_members(&j))
            .unwrap_or_else(|_| Json::no_members())
    })
}

/// A failed `tools/call` result (the message as text, no structured content).
#[derive(Serialize)]
struct CallToolError<'a> {
    content: [TextContent<'a>; 1],
    #[serde(rename = "isError")]
    is_error: bool,
    #[serde(rename = "resultType", skip_serializing_if = "Option::is_none")]
    result_type: Option<&'static str>,
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<&'static Value>,
}

#[derive(Serialize)]
struct TextContent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

async fn call_tool(
    scope: &Scope,
    era: Era,
    id: &Value,
    params: &Value,
    caller: &Caller,
) -> Result<Json, RpcError> {
    let args = params.get("arguments").unwrap_or(&Value::Null);
    let name = match str_param(params, "name") {
        Ok(name) => name,
        Err(e) => {
            // Audited too: who sent a call the server could not even name.
            audit_unrun_call(scope, params, caller, ToolStatus::Invalid, &e.message);
            return Err(e);
        }
    };
    let pending = PendingCall::new(scope, name, args, caller);
    let outcome = tools::call_through(
        scope,
        name,
        args,
        caller.user.as_deref(),
        caller.client_id.as_deref(),
    )
    .await;
    let elapsed = pending.finish(outcome.as_ref().map(|out| out.rows));
    let modern = era == Era::Modern;
    match outcome {
        Ok(out) => {
            tracing::debug!(scope = %scope.path, tool = name, rows = out.rows, ms = elapsed.as_millis() as u64, user = caller.user.as_deref().unwrap_or("-"), "tool call ok");
            Ok(Json::tool_response(
                id,
                &out.json,
                out.escaped.as_deref(),
                era.shapes().structured(),
                tool_result_tail(era),
            ))
        }
        Err(ToolError::UnknownTool(t)) => Err(RpcError::invalid_params(format!(
            "Unknown tool: `{t}`; this endpoint offers: {}",
            tools::tool_names(scope.profile()).join(", ")
        ))),
        Err(e) => {
            if let ToolError::Db(db) = &e {
                tracing::warn!(scope = %scope.path, tool = name, error = %db, "tool call failed in the database");
            } else {
                tracing::debug!(scope = %scope.path, tool = name, error = %e, "tool call refused");
            }
            success_response(
                id,
                &CallToolError {
                    content: [TextContent {
                        kind: "text",
                        text: &e.to_string(),
                    }],
                    is_error: true,
                    result_type: modern.then_some("complete"),
                    meta: modern.then(modern_meta),
                },
            )
        }
    }
}

/// A tool call under way, counted and audited exactly once: by [`PendingCall::finish`] with
/// its outcome, or, when the call's future is dropped first (the client went away, the
/// request timed out, the server shut down), as `cancelled` when it is dropped. Otherwise a
/// query a client abandoned, which may still be running in the database, would leave no
/// trace.
pub(crate) struct PendingCall<'a> {
    scope: &'a Scope,
    name: &'a str,
    args: &'a Value,
    caller: &'a Caller,
    started: Instant,
    done: bool,
}

impl<'a> PendingCall<'a> {
    pub(crate) fn new(
        scope: &'a Scope,
        name: &'a str,
        args: &'a Value,
        caller: &'a Caller,
    ) -> Self {
        PendingCall {
            scope,
            name,
            args,
            caller,
            started: Instant::now(),
            done: false,
        }
    }

    /// Records the outcome (the rows returned, or the error) and says how long it took.
    pub(crate) fn finish(mut self, outcome: Result<usize, &ToolError>) -> std::time::Duration {
        self.done = true;
        let status = match outcome {
            Ok(_) => ToolStatus::Ok,
            Err(
                ToolError::UnknownTool(_) | ToolError::InvalidArguments(_) | ToolError::NotFound(_),
            ) => ToolStatus::Invalid,
            Err(ToolError::Refused(_)) => ToolStatus::Refused,
            Err(ToolError::Db(_)) => ToolStatus::Error,
        };
        let elapsed = self.started.elapsed();
        let error = outcome.err().map(ToString::to_string);
        let rows = outcome.ok();
        record_call(
            self.scope,
            self.name,
            self.args,
            self.caller,
            status,
            rows,
            error,
            elapsed,
        );
        elapsed
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if !self.done {
            record_call(
                self.scope,
                self.name,
                self.args,
                self.caller,
                ToolStatus::Cancelled,
                None,
                Some("the call was cancelled before it finished (the client cancelled it or went away, or the request timed out)".into()),
                self.started.elapsed(),
            );
        }
    }
}

/// Audits a `tools/call` that was answered without running (rate limited, or a batch out of
/// time before it started), so that the audit log shows who asked for what even then;
/// `req` of another method is not a tool call and is not recorded.
pub(crate) fn audit_unrun(
    scope: &Scope,
    req: &crate::mcp::protocol::Request,
    caller: &Caller,
    status: ToolStatus,
    why: &str,
) {
    if req.method == "tools/call" {
        audit_unrun_call(scope, &req.params, caller, status, why);
    }
}

/// Audits the tool call with `params` that did not run, and why (its name as given, or none).
fn audit_unrun_call(scope: &Scope, params: &Value, caller: &Caller, status: ToolStatus, why: &str) {
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let args = params.get("arguments").unwrap_or(&Value::Null);
    audit_unrun_tool(scope, name, args, caller, status, why);
}

/// Audits a call of tool `name` with `args` that did not run, and why.
fn audit_unrun_tool(
    scope: &Scope,
    name: &str,
    args: &Value,
    caller: &Caller,
    status: ToolStatus,
    why: &str,
) {
    let zero = std::time::Duration::ZERO;
    record_call(
        scope,
        name,
        args,
        caller,
        status,
        None,
        Some(why.into()),
        zero,
    );
}

/// Why a call the client's rate limit refused did not run, in its audit record.
const RATE_LIMITED: &str = "rate limited: too many tool calls from this client";

/// [`audit_unrun`] for a call the client's rate limit refused.
pub(crate) fn audit_rate_limited(
    scope: &Scope,
    req: &crate::mcp::protocol::Request,
    caller: &Caller,
) {
    audit_unrun(scope, req, caller, ToolStatus::Refused, RATE_LIMITED);
}

/// [`audit_rate_limited`] for a call of `name` made without `tools/call`: a record page, which
/// is a `fetch`.
pub(crate) fn audit_rate_limited_tool(scope: &Scope, name: &str, args: &Value, caller: &Caller) {
    audit_unrun_tool(scope, name, args, caller, ToolStatus::Refused, RATE_LIMITED);
}

/// Counts the call and writes its audit record (queued; never waits).
#[allow(clippy::too_many_arguments)]
fn record_call(
    scope: &Scope,
    name: &str,
    args: &Value,
    caller: &Caller,
    status: ToolStatus,
    rows: Option<usize>,
    error: Option<String>,
    elapsed: std::time::Duration,
) {
    if let Some(m) = scope.tool_metrics(name) {
        m.observe(status, elapsed.as_secs_f64());
    }
    if !scope.audit.enabled() {
        return;
    }
    let mut r = crate::ops::audit::Record::new("tool_call", status.as_str());
    r.scope = Some(scope.path.clone());
    r.user = caller.user.clone();
    r.client_id = caller.client_id.clone();
    r.client_ip = caller.ip;
    r.tool = Some(crate::tools::truncate(name, 64));
    r.duration_ms = Some((elapsed.as_secs_f64() * 1e6).round() / 1e3);
    r.rows = rows;
    r.error = error;
    if !args.is_null() {
        r = r.with_query(args.to_string());
    }
    scope.audit.record(r);
}

fn resource_uri(scope: &Scope, t: &TableInfo) -> String {
    format!(
        "db://{}/{}",
        scope.path.trim_start_matches('/'),
        t.qualified()
    )
}

async fn resources_list(scope: &Scope, shapes: Shapes) -> Result<Value, RpcError> {
    let catalog = scope.catalog().await.map_err(db_rpc)?;
    let resources: Vec<Value> = visible_tables(scope, &catalog)
        .into_iter()
        .map(|t| {
            let mut r = json!({
                "uri": resource_uri(scope, t),
                "name": t.qualified(),
                "title": format!("{} {}", t.kind, t.qualified()),
                "description": format!(
                    "{}Schema of {} ({} rows): columns, keys, relationships",
                    t.description.as_deref().map(|d| format!("{d} ")).unwrap_or_default(),
                    t.qualified(),
                    t.row_estimate.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
                ),
                "mimeType": "application/json",
            });
            shapes.fit_title(&mut r);
            r
        })
        .collect();
    Ok(json!({ "resources": resources }))
}

fn db_rpc(e: crate::db::DbError) -> RpcError {
    RpcError::internal(e.to_string())
}

async fn find_resource(scope: &Scope, era: Era, uri: &str) -> Result<Value, RpcError> {
    let catalog = scope.catalog().await.map_err(db_rpc)?;
    let found = visible_tables(scope, &catalog)
        .into_iter()
        .find(|t| resource_uri(scope, t) == uri);
    match found {
        Some(t) => Ok(tools::sql::describe(scope, &catalog, t)),
        None => {
            // 2025 revisions use -32002 for a missing resource; 2026-07-28 uses -32602.
            let code = if era == Era::Modern { -32602 } else { -32002 };
            Err(RpcError::new(code, format!("Resource not found: {uri}"))
                .with_data(json!({"uri": uri})))
        }
    }
}

async fn resources_read(scope: &Scope, era: Era, params: &Value) -> Result<Value, RpcError> {
    let uri = str_param(params, "uri")?;
    let desc = find_resource(scope, era, uri).await?;
    let text =
        serde_json::to_string_pretty(&desc).map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(json!({"contents": [{"uri": uri, "mimeType": "application/json", "text": text}]}))
}

fn explore_prompt(shapes: Shapes) -> Value {
    let mut p = json!({
        "name": "explore_database",
        "title": "Explore the database",
        "description": "A starting plan for exploring this database about a topic.",
        "arguments": [{"name": "topic", "description": "What you want to learn about (optional).", "required": false}]
    });
    shapes.fit_title(&mut p);
    p
}

fn prompts_get(params: &Value) -> Result<Value, RpcError> {
    let name = str_param(params, "name")?;
    if name != "explore_database" {
        return Err(RpcError::invalid_params(format!(
            "Unknown prompt: `{name}`; available: explore_database"
        )));
    }
    let topic = params
        .get("arguments")
        .and_then(|a| a.get("topic"))
        .and_then(Value::as_str)
        .unwrap_or("anything interesting");
    let mut args = Map::new();
    args.insert("topic".into(), json!(topic));
    Ok(json!({
        "description": "Explore the database",
        "messages": [{
            "role": "user",
            "content": {"type": "text", "text": format!(
                "Explore this database about: {topic}. First call `search` with `list tables`, \
                 then `describe` the relevant tables, then search with plain words and `fetch` \
                 the most relevant ids. Cite the ids you used.")}
        }]
    }))
}
