//! `{scope}/revoke` (RFC 7009): a client revokes one of its tokens. Revoking a refresh token
//! ends the whole grant (every token issued under it); revoking an access token ends that
//! token. Unknown tokens, and tokens of other clients, get the same 200 so nothing is learnt.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::OAuthCtx;
use super::error::{OAuthError, no_store};
use super::store::TokenKind;

pub fn routes(ctx: OAuthCtx) -> Router {
    let p = ctx.scope.path.clone();
    Router::new()
        .route(&format!("{p}/revoke"), post(revoke))
        .with_state(ctx)
        .layer(super::cors())
}

async fn revoke(
    State(ctx): State<OAuthCtx>,
    super::ClientIp(ip): super::ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match revoke_inner(&ctx, ip, &headers, &body).await {
        Ok(()) => {
            let mut resp = axum::http::StatusCode::OK.into_response();
            no_store(&mut resp);
            resp
        }
        Err(e) => {
            let mut r = ctx.record("revoke", "refused", ip);
            r.error = Some(format!("{}: {}", e.error, e.description));
            ctx.audit(r);
            e.into_response()
        }
    }
}

async fn revoke_inner(
    ctx: &OAuthCtx,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), OAuthError> {
    let params = super::token::parse_form(headers, body)?;
    let client = super::token::authenticate_client(ctx, headers, &params)?;
    let Some(token) = params.get("token") else {
        return Err(OAuthError::invalid_request("token is required"));
    };
    let hash = super::hash_token(token);
    let store = &ctx.oauth.store;
    let found = [TokenKind::Refresh, TokenKind::Access]
        .into_iter()
        .find_map(|k| store.lookup(&hash, k).map(|(_, g)| (k, g)));
    let Some((kind, grant)) = found else {
        return Ok(());
    };
    if grant.client_id != client.client_id {
        return Ok(());
    }
    let grant_id = grant.grant_id.clone();
    match kind {
        TokenKind::Refresh => {
            super::blocking(store, move |s| s.revoke_grants(&[grant_id])).await?;
        }
        _ => {
            super::blocking(store, move |s| s.revoke_token(&hash)).await?;
        }
    }
    tracing::info!(scope = %ctx.scope.path, client_id = %client.client_id, username = %grant.username, kind = ?kind, "oauth: token revoked by its client");
    let mut r = ctx.record("revoke", "ok", ip);
    r.user = Some(grant.username.clone());
    r.client_id = Some(client.client_id.clone());
    ctx.audit(r);
    Ok(())
}
