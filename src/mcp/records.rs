//! `GET {scope}/records/{id}`: the record behind every search result's `url`.
//!
//! The same record `fetch` returns, for two kinds of caller:
//!
//! - a program (any `Accept` without `text/html`, or an `Authorization` header) gets the
//!   `fetch` result as JSON and authenticates like the MCP endpoint, with a bearer token;
//! - a browser (`Accept: text/html`, no `Authorization`) gets an HTML page. With
//!   authentication on it needs a record viewer cookie; without one it is sent to the scope's
//!   sign-in page and back ([`crate::oauth::viewer`]).
//!
//! Either way the lookup is audited like a `fetch` tool call, with who asked, and counts
//! against the caller's per-client tool-call limit like one (429 with `Retry-After` past it).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::dispatch::{self, Caller};
use super::{ScopeCtx, json_body};
use crate::edge::rate_limit;
use crate::oauth::ClientIp;
use crate::oauth::bearer::{Endpoint, authenticate_at};
use crate::oauth::html_escape;
use crate::oauth::page::{html, layout, layout_wide};
use crate::oauth::viewer;
use crate::state::Scope;
use crate::tools::search::record_url;
use crate::tools::{ToolError, fetch};

pub async fn record(
    State(ctx): State<ScopeCtx>,
    ClientIp(ip): ClientIp,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let page = wants_page(&headers);
    let caller = if page && !ctx.app.no_auth() {
        match viewer::viewer(&ctx.app, &ctx.scope, &headers, ip) {
            Some(c) => c,
            None => return viewer::to_sign_in(&ctx.scope, uri.path()),
        }
    } else {
        match authenticate_at(&ctx.app, &ctx.scope, Endpoint::Records, &headers, ip) {
            Ok(c) => c,
            Err(resp) => return resp,
        }
    };
    // The raw path keeps the id's own percent-encoding intact.
    let prefix = format!("{}/records/", ctx.scope.path);
    let Some(id) = uri.path().strip_prefix(&prefix) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let args = json!({"id": id, "via": "records"});
    // A page is a `fetch`, and costs what a `fetch` tool call does.
    if let Some(wait) = rate_limit::charge_tool_call(&ctx.app, &caller) {
        dispatch::audit_rate_limited_tool(&ctx.scope, "fetch", &args, &caller);
        let message = rate_limit::tool_calls_limited(wait);
        let mut resp = refusal(&ctx.scope, page, StatusCode::TOO_MANY_REQUESTS, &message);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait.secs()));
        return resp;
    }
    let pending = dispatch::PendingCall::new(&ctx.scope, "fetch", &args, &caller);
    // The JSON is written only for a program: a page is rendered from the document.
    let user = caller.user.as_deref();
    let outcome = crate::tools::asking(
        &ctx.scope,
        user,
        None,
        fetch::document(&ctx.scope, id, user),
    )
    .await
    .and_then(|doc| {
        let json = (!page).then(|| fetch::output(&doc)).transpose()?;
        Ok((doc, json))
    });
    pending.finish(outcome.as_ref().map(|_| 1));
    match outcome {
        Ok((_, Some(out))) => json_body(StatusCode::OK, out.json),
        Ok((doc, None)) => html(
            StatusCode::OK,
            render(&ctx.scope, &Value::Object(doc), &caller),
        ),
        Err(e) => {
            let status = match e {
                ToolError::NotFound(_) | ToolError::InvalidArguments(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            refusal(&ctx.scope, page, status, &e.to_string())
        }
    }
}

/// A record not shown, and why: a page for a browser, JSON for a program.
fn refusal(scope: &Scope, page: bool, status: StatusCode, message: &str) -> Response {
    if page {
        error_page(scope, status, message)
    } else {
        (status, axum::Json(json!({"error": message}))).into_response()
    }
}

/// A browser asking for a page: `Accept` names `text/html` and no bearer token is sent.
fn wants_page(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::AUTHORIZATION)
        && headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

fn error_page(scope: &Scope, status: StatusCode, message: &str) -> Response {
    let main = format!(
        "<h1>No record to show</h1><p class=\"error\">{}</p><p class=\"muted\">{} · {}</p>",
        html_escape(message),
        html_escape(&scope.path),
        html_escape(&scope.database)
    );
    html(status, layout("No record", &main))
}

/// The page of a `fetch` result: its title, its values (or a table's description) and links
/// to its related records.
fn render(scope: &Scope, doc: &Value, caller: &Caller) -> String {
    let title = doc["title"].as_str().unwrap_or("Record");
    let meta = &doc["metadata"];
    let mut main = format!("<h1>{}</h1>\n", html_escape(title));
    let what = match meta["kind"].as_str() {
        Some("row") => meta["table"].as_str().unwrap_or("").to_string(),
        Some("query_row") => "a row of a query result".to_string(),
        Some(kind) => kind.to_string(),
        None => String::new(),
    };
    main.push_str(&format!(
        "<p class=\"muted\">{} · id <code>{}</code></p>\n",
        html_escape(&what),
        html_escape(doc["id"].as_str().unwrap_or(""))
    ));
    match &meta["values"] {
        Value::Object(values) => {
            main.push_str("<dl>\n");
            for (k, v) in values {
                let (class, text) = match v {
                    Value::Null => (" class=\"null\"", "NULL".to_string()),
                    Value::String(s) => ("", s.clone()),
                    other => ("", other.to_string()),
                };
                main.push_str(&format!(
                    "<dt>{}</dt><dd{class}>{}</dd>\n",
                    html_escape(k),
                    html_escape(&text)
                ));
            }
            main.push_str("</dl>\n");
            if let Some(cut) = meta["cut_columns"].as_array().filter(|c| !c.is_empty()) {
                let names: Vec<&str> = cut.iter().filter_map(Value::as_str).collect();
                main.push_str(&format!(
                    "<p class=\"muted\">{}.</p>\n",
                    html_escape(&crate::tools::cut_note(&names))
                ));
            }
        }
        _ => main.push_str(&format!(
            "<pre>{}</pre>\n",
            html_escape(doc["text"].as_str().unwrap_or(""))
        )),
    }
    if let Some(sql) = meta["sql"].as_str() {
        main.push_str(&format!(
            "<h2>From the query</h2>\n<pre>{}</pre>\n",
            html_escape(sql)
        ));
    }
    if let Some(related) = meta["related"].as_array().filter(|r| !r.is_empty()) {
        main.push_str("<h2>Related records</h2>\n<ul>\n");
        for r in related {
            let ids: Vec<&str> = match (&r["id"], &r["ids"]) {
                (Value::String(id), _) => vec![id.as_str()],
                (_, Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let links: Vec<String> = ids
                .iter()
                .map(|id| {
                    format!(
                        "<a href=\"{}\">{}</a>",
                        html_escape(&record_url(scope, id)),
                        html_escape(id)
                    )
                })
                .collect();
            let more = if r["more"].as_bool() == Some(true) {
                " …"
            } else {
                ""
            };
            main.push_str(&format!(
                "<li>{}: {}{more}</li>\n",
                html_escape(r["relation"].as_str().unwrap_or("")),
                links.join(", ")
            ));
        }
        main.push_str("</ul>\n");
    }
    let who = caller
        .user
        .as_deref()
        .map(|u| format!(" · signed in as {}", html_escape(u)))
        .unwrap_or_default();
    main.push_str(&format!(
        "<p class=\"note\">Read-only view of {} ({}){who}</p>\n",
        html_escape(&scope.database),
        html_escape(&scope.path)
    ));
    if caller.client_id.as_deref() == Some(viewer::VIEWER_CLIENT) {
        main.push_str(&format!(
            "<form method=\"post\" action=\"{}/records\"><button type=\"submit\" class=\"deny\" id=\"sign-out\">Sign out</button></form>\n",
            html_escape(&scope.path)
        ));
    }
    layout_wide(title, &main)
}
