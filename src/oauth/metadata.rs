//! Discovery documents: RFC 9728 protected resource metadata for each MCP endpoint of a scope,
//! and RFC 8414 authorization server metadata for its issuer, at every path clients probe
//! (path-inserted and path-appended, the OIDC aliases, and the root for the default scope,
//! which ChatGPT asks first). Every document names the same issuer, `{public_url}{scope}`.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::bearer::Endpoint;
use super::{OAUTH_SCOPE, OAuthCtx};

/// The metadata routes of one scope (`is_default`: also answer at the root paths).
pub fn routes(ctx: OAuthCtx, is_default: bool) -> Router {
    let p = ctx.scope.path.clone();
    let mut r = Router::new()
        .route(
            &format!("/.well-known/oauth-protected-resource{p}/mcp"),
            get(resource_mcp),
        )
        .route(
            &format!("/.well-known/oauth-protected-resource{p}/sse"),
            get(resource_sse),
        )
        .route(
            &format!("/.well-known/oauth-protected-resource{p}"),
            get(resource_mcp),
        )
        .route(
            &format!("{p}/.well-known/oauth-protected-resource"),
            get(resource_mcp),
        )
        .route(
            &format!("{p}/.well-known/oauth-protected-resource/mcp"),
            get(resource_mcp),
        )
        .route(
            &format!("{p}/.well-known/oauth-protected-resource/sse"),
            get(resource_sse),
        )
        .route(
            &format!("/.well-known/oauth-authorization-server{p}"),
            get(server),
        )
        .route(
            &format!("{p}/.well-known/oauth-authorization-server"),
            get(server),
        )
        .route(
            &format!("/.well-known/openid-configuration{p}"),
            get(server),
        )
        .route(
            &format!("{p}/.well-known/openid-configuration"),
            get(server),
        );
    if is_default {
        r = r
            .route("/.well-known/oauth-authorization-server", get(server))
            .route("/.well-known/openid-configuration", get(server))
            .route("/.well-known/oauth-protected-resource", get(resource_mcp));
    }
    r.with_state(ctx).layer(super::cors())
}

/// RFC 9728 metadata for one MCP endpoint of the scope.
pub fn resource_document(ctx: &OAuthCtx, endpoint: Endpoint) -> Value {
    json!({
        "resource": endpoint.resource(&ctx.scope),
        "authorization_servers": [ctx.issuer()],
        "scopes_supported": [OAUTH_SCOPE],
        "bearer_methods_supported": ["header"],
        "resource_name": format!("mssql-mcp {} (database {})", ctx.scope.path, ctx.scope.database),
    })
}

/// RFC 8414 metadata of the scope's issuer: exactly what is implemented.
pub fn server_document(ctx: &OAuthCtx) -> Value {
    let base = ctx.issuer();
    json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "revocation_endpoint": format!("{base}/revoke"),
        "scopes_supported": [OAUTH_SCOPE],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "client_id_metadata_document_supported": ctx.config().client_metadata_documents,
        "authorization_response_iss_parameter_supported": true,
    })
}

async fn resource_mcp(State(ctx): State<OAuthCtx>) -> Response {
    axum::Json(resource_document(&ctx, Endpoint::Mcp)).into_response()
}

async fn resource_sse(State(ctx): State<OAuthCtx>) -> Response {
    axum::Json(resource_document(&ctx, Endpoint::Sse)).into_response()
}

async fn server(State(ctx): State<OAuthCtx>) -> Response {
    axum::Json(server_document(&ctx)).into_response()
}
