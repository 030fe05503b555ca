//! mssql-mcp: a Microsoft SQL Server (and SQLite) database behind an MCP server for ChatGPT
//! and Claude, in one binary.
//!
//! # Layout
//!
//! One request, top to bottom: [`app`] (router, serve, drain) → [`mcp`] (Host/Origin check,
//! Streamable HTTP or legacy SSE transport, JSON-RPC dispatch) → [`tools`] (search, fetch, SQL
//! tools) → [`db::guard`] (read-only allowlist, table/column rules) → [`db`] backend (SQLite
//! now; dialect SQL, pool, safety net) → rows as lossless JSON values.
//!
//! - [`cli`]: the command line (`demo`, `serve`, `check-config`, `tokens`, `cache`).
//! - [`config`]: strict TOML configuration, validated before any port is bound.
//! - [`demo`]: the no-setup demo: generates the embedded database and its two-scope config.
//! - [`json`]: JSON text we wrote ourselves; tool results and responses assembled from it.
//! - [`edge`]: TLS (ACME/files/off), client IP, allowlists, rate limits, timeouts, headers, and the
//!   two tower services that run them on every request (`edge::stack`).
//! - [`state`]: [`state::AppState`] and the per-scope [`state::Scope`].
//! - [`stdout`]: the CLI's output, for which a closed pipe is a normal end, never a panic.
//! - [`app`]: builds backends and scopes, the router, and runs the server.
//! - [`mcp`]: protocol revisions, sessions, transports, dispatch, record pages.
//! - [`oauth`]: the OAuth 2.1 authorization server (discovery, registration, sign-in page,
//!   tokens, revocation, the bearer check in front of every MCP handler, the record viewer's
//!   browser sign-in, admin endpoint).
//! - [`ops`]: `/health`, `/health/ready`, Prometheus `/metrics`, the audit log.
//! - [`tools`]: tool definitions and implementations, record ids, result cache.
//! - [`db`]: the `Backend` trait, catalog and values; `guard`, `sqlite`, `demo_data`.

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod edge;
pub mod json;
pub mod mcp;
pub mod oauth;
pub mod ops;
pub mod state;
pub mod stdout;
pub mod tools;
