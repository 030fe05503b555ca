//! What the server-rendered pages share: the layout, the security headers, and cookies.
//!
//! The pages (sign-in and consent, the record viewer's sign-in, record pages) are plain HTML
//! with inline styles and no JavaScript, served with a CSP that allows nothing else, `no-store`,
//! and no framing.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The security headers every page carries.
pub fn page_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An HTML page with `status` and the page headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    page_headers(&mut resp);
    resp
}

/// 303 to `location`, with the page headers.
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    page_headers(&mut resp);
    resp
}

/// A narrow page (forms, messages) around `main`, which must already be escaped.
pub fn layout(title: &str, main: &str) -> String {
    document(title, "", main)
}

/// A wide page (records) around `main`, which must already be escaped.
pub fn layout_wide(title: &str, main: &str) -> String {
    document(title, " class=\"wide\"", main)
}

fn document(title: &str, main_attrs: &str, main: &str) -> String {
    let title = super::html_escape(title);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · mssql-mcp</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f5f7;color:#1d2330;margin:0}}
main{{max-width:28rem;margin:3rem auto;background:#fff;border:1px solid #dde1e7;border-radius:10px;padding:2rem 2.2rem}}
main.wide{{max-width:60rem}}
h1{{font-size:1.3rem;margin:0 0 1rem;overflow-wrap:anywhere}}
h2{{font-size:1.05rem;margin:1.6rem 0 .6rem}}
dl{{display:grid;grid-template-columns:auto 1fr;gap:.35rem 1rem;margin:0 0 1.2rem;font-size:.95rem}}
dt{{color:#5b6475}} dd{{margin:0;font-weight:600;overflow-wrap:anywhere;white-space:pre-wrap}}
dd.null{{color:#8a93a3;font-weight:400;font-style:italic}}
ul{{padding-left:1.2rem}} li{{margin:.2rem 0;overflow-wrap:anywhere}}
pre{{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f8fa;border:1px solid #e3e6eb;border-radius:6px;padding:.8rem}}
label{{display:block;font-size:.9rem;margin:.8rem 0 .3rem}}
input[type=text],input[type=password]{{width:100%;box-sizing:border-box;padding:.55rem .6rem;border:1px solid #b9c0cc;border-radius:6px;font-size:1rem}}
.buttons{{display:flex;gap:.8rem;margin-top:1.4rem}}
button{{flex:1;padding:.6rem;border-radius:6px;font-size:1rem;cursor:pointer;border:1px solid #1f4fd1}}
button.approve{{background:#1f4fd1;color:#fff}} button.deny{{background:#fff;color:#1f4fd1}}
.error{{background:#fdecec;color:#8a1c1c;border:1px solid #f3b9b9;border-radius:6px;padding:.6rem .8rem}}
.note,.muted{{color:#5b6475;font-size:.85rem}}
</style></head>
<body><main{main_attrs}>{main}</main></body></html>
"#
    )
}

/// The value of cookie `name`, if present exactly once-or-first and shaped like one of
/// [`super::random_token`]'s values without a prefix (43 base64url characters).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Appends `Set-Cookie: name=value` for `path`, HttpOnly, with `SameSite=same_site`, and
/// `Secure` when the public URL is HTTPS. `max_age_secs` 0 deletes the cookie.
pub fn set_cookie(
    app: &AppState,
    resp: &mut Response,
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: u64,
    same_site: &str,
) {
    let secure = if app.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite={same_site}{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}
