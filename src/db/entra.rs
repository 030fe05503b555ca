//! Microsoft Entra ID access tokens for SQL Server logins (`[[database]] authentication =
//! "entra_…"`): Azure SQL's recommended way in, and the only one where SQL logins are turned
//! off ("Microsoft Entra-only authentication").
//!
//! Three ways to come by a token:
//! - **`entra_managed_identity`**: the Azure VM's own identity, from the instance metadata
//!   service (IMDS). No secret on the machine at all.
//! - **`entra_service_principal`**: an app registration's client secret, or a client
//!   assertion signed with its certificate's key (PS256, `x5t#S256`, as Microsoft documents
//!   certificate credentials), exchanged at the tenant's token endpoint (OAuth 2.0 client
//!   credentials).
//! - **`entra_access_token`**: a token that something else obtains and keeps fresh in a file,
//!   read again for every new connection.
//!
//! A fetched token is kept and shared by every connection of the database until shortly before
//! it expires ([`REFRESH_MARGIN`]); concurrent connection attempts wait for one request. tiberius
//! sends it in LOGIN7's FEDAUTH feature extension. The token is a [`Secret`]: it never reaches a
//! log, an error or `/metrics`, and neither does a token endpoint's answer, of which only the
//! `error` and `error_description` fields are ever quoted.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;

use crate::config::{ConfigError, MssqlAuthentication, MssqlConfig, Secret, SecretSource};
use crate::db::DbError;

/// Where service principals ask for tokens, in Azure's public cloud.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The resource (audience) of a token for Azure SQL, in Azure's public cloud.
pub const DEFAULT_RESOURCE: &str = "https://database.windows.net/";
/// The Azure instance metadata service's token endpoint.
pub const DEFAULT_IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// A token is asked for again this long before it expires (or at half its life, if shorter):
/// a connection opened with it must still be able to log in.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The lifetime assumed for a token whose answer gives none.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(600);
/// The longest a token is kept, whatever its answer says (Entra's live at most a day).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The most bytes of a token endpoint's answer read (a token is 1–3 KB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest one token request may take (the connect timeout bounds it as well).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What an error quotes of a token endpoint's `error_description` at most.
const MAX_QUOTED_CHARS: usize = 300;

/// How one database's connections get their tokens.
pub struct EntraLogin {
    how: How,
    /// The config key of the database, e.g. `database[0]`.
    key: String,
    /// The resource (audience) the token must be for.
    resource: String,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

enum How {
    ManagedIdentity {
        url: url::Url,
    },
    ServicePrincipal {
        url: url::Url,
        client_id: String,
        credential: CredentialSource,
    },
    AccessToken(SecretSource),
}

/// Where a service principal's credential is read from: again for every token request (about
/// once an hour), so that a rotated secret or certificate is used without a restart.
enum CredentialSource {
    Secret(SecretSource),
    Certificate(SecretSource),
}

impl CredentialSource {
    /// The credential as it is now; `key` is the database's config key.
    fn load(&self, key: &str) -> Result<Credential, ConfigError> {
        match self {
            CredentialSource::Secret(s) => {
                Ok(Credential::Secret(s.load(&format!("{key}.client_secret"))?))
            }
            CredentialSource::Certificate(s) => {
                certificate(s, &format!("{key}.client_certificate"))
            }
        }
    }
}

/// What a service principal proves itself with.
enum Credential {
    Secret(Secret),
    /// The certificate's private key (RSA), and the certificate's SHA-256 thumbprint,
    /// base64url, for the assertion's `x5t#S256` header.
    Certificate {
        key: std::sync::Arc<dyn rustls::sign::SigningKey>,
        thumbprint: String,
    },
}

/// How long a client assertion is good for (Microsoft: "5–10 minutes at most").
const ASSERTION_LIFETIME_SECS: u64 = 600;

struct Cached {
    token: Secret,
    refresh_at: Instant,
}

impl fmt::Debug for EntraLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraLogin")
            .field("how", &self.describe())
            .finish_non_exhaustive()
    }
}

/// A token endpoint's answer: IMDS and Entra's v2 endpoint agree on these names (IMDS writes
/// `expires_in` as a string, Entra as a number).
#[derive(Deserialize)]
struct Answer {
    access_token: Option<Secret>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

impl EntraLogin {
    /// The token source of `cfg` (the `[[database]]` at `key`), or `None` for a SQL login.
    /// Loads the client secret, and reads the access token once to fail at start if it cannot
    /// be read. [`MssqlConfig::validate`] has checked the keys and URLs.
    pub fn from_config(cfg: &MssqlConfig, key: &str) -> Result<Option<Self>, ConfigError> {
        let resource = cfg
            .entra_resource
            .clone()
            .unwrap_or_else(|| DEFAULT_RESOURCE.into());
        let how = match cfg.authentication() {
            MssqlAuthentication::SqlPassword | MssqlAuthentication::Windows => return Ok(None),
            MssqlAuthentication::EntraManagedIdentity => {
                let endpoint = cfg
                    .managed_identity_endpoint
                    .as_deref()
                    .unwrap_or(DEFAULT_IMDS);
                let mut url = parse_url(&format!("{key}.managed_identity_endpoint"), endpoint)?;
                url.query_pairs_mut()
                    .append_pair("api-version", "2018-02-01")
                    .append_pair("resource", &resource);
                if let Some(id) = &cfg.client_id {
                    url.query_pairs_mut().append_pair("client_id", id);
                }
                How::ManagedIdentity { url }
            }
            MssqlAuthentication::EntraServicePrincipal => {
                let (Some(tenant), Some(client_id)) = (&cfg.tenant_id, &cfg.client_id) else {
                    return Err(ConfigError::new(
                        format!("{key}.tenant_id"),
                        "entra_service_principal needs tenant_id and client_id",
                        "add the missing keys",
                    ));
                };
                let credential = match (&cfg.client_certificate, &cfg.client_secret) {
                    (Some(pem), _) => CredentialSource::Certificate(pem.clone()),
                    (None, Some(secret)) => CredentialSource::Secret(secret.clone()),
                    (None, None) => {
                        return Err(ConfigError::new(
                            format!("{key}.client_secret"),
                            "entra_service_principal needs client_secret or client_certificate",
                            "add one of them",
                        ));
                    }
                };
                let authority = cfg
                    .entra_authority
                    .as_deref()
                    .unwrap_or(DEFAULT_AUTHORITY)
                    .trim_end_matches('/');
                let url = parse_url(
                    &format!("{key}.entra_authority"),
                    &format!("{authority}/{tenant}/oauth2/v2.0/token"),
                )?;
                // Read once now, so that one that cannot be read stops the start.
                credential.load(key)?;
                How::ServicePrincipal {
                    url,
                    client_id: client_id.clone(),
                    credential,
                }
            }
            MssqlAuthentication::EntraAccessToken => {
                let Some(source) = &cfg.access_token else {
                    return Err(ConfigError::new(
                        format!("{key}.access_token"),
                        "entra_access_token needs access_token",
                        "add access_token = { file = \"…\" }",
                    ));
                };
                source.load(&format!("{key}.access_token"))?;
                How::AccessToken(source.clone())
            }
        };
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("mssql-mcp/", env!("CARGO_PKG_VERSION")));
        if matches!(how, How::ManagedIdentity { .. }) {
            // The metadata service answers on the host itself, never through a proxy.
            http = http.no_proxy();
        }
        let http = http.build().map_err(|e| {
            ConfigError::new(
                format!("{key}.authentication"),
                format!("cannot build an HTTP client for Entra tokens: {e}"),
                "report this as a bug",
            )
        })?;
        Ok(Some(Self {
            how,
            key: key.to_string(),
            resource,
            http,
            cached: tokio::sync::Mutex::new(None),
        }))
    }

    /// Who logs in, for messages (no secrets).
    pub fn describe(&self) -> String {
        match &self.how {
            How::ManagedIdentity { url } => {
                match url.query_pairs().find(|(k, _)| k == "client_id") {
                    Some((_, id)) => format!("the managed identity {id}"),
                    None => "this machine's system-assigned managed identity".into(),
                }
            }
            How::ServicePrincipal { client_id, .. } => format!("the Entra app {client_id}"),
            How::AccessToken(source) => {
                format!(
                    "the identity of the access token from {}",
                    source.describe()
                )
            }
        }
    }

    /// The config keys that decide who logs in, for messages.
    pub fn keys(&self) -> String {
        let k = &self.key;
        match &self.how {
            How::ManagedIdentity { .. } => format!("{k}.authentication / {k}.client_id"),
            How::ServicePrincipal {
                credential: CredentialSource::Secret(_),
                ..
            } => format!("{k}.tenant_id / {k}.client_id / {k}.client_secret"),
            How::ServicePrincipal {
                credential: CredentialSource::Certificate(_),
                ..
            } => format!("{k}.tenant_id / {k}.client_id / {k}.client_certificate"),
            How::AccessToken(_) => format!("{k}.access_token"),
        }
    }

    /// A token to log in with: the kept one while it is fresh, else a new one.
    pub async fn token(&self) -> Result<Secret, DbError> {
        if let How::AccessToken(source) = &self.how {
            let token = source
                .load(&format!("{}.access_token", self.key))
                .map_err(|e| DbError::Unavailable(format!("Entra sign-in failed: {e}")))?;
            self.check_claims(&token, &source.describe())?;
            return Ok(token);
        }
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.request().await?;
        let early = REFRESH_MARGIN.min(lifetime / 2);
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(early),
        });
        Ok(token)
    }

    /// Forgets the kept token (after the server refused a login with it).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// One request to the token endpoint: the token and how long it lives.
    async fn request(&self) -> Result<(Secret, Duration), DbError> {
        let (request, from) = match &self.how {
            How::ManagedIdentity { url } => (
                self.http
                    .get(url.clone())
                    .header("Metadata", "true")
                    .header("accept", "application/json"),
                "the managed identity endpoint",
            ),
            How::ServicePrincipal {
                url,
                client_id,
                credential,
            } => {
                let scope = format!("{}/.default", self.resource.trim_end_matches('/'));
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", client_id)
                    .append_pair("scope", &scope);
                let credential = credential
                    .load(&self.key)
                    .map_err(|e| DbError::Unavailable(format!("Entra sign-in failed: {e}")))?;
                match &credential {
                    Credential::Secret(secret) => {
                        form.append_pair("client_secret", secret.expose());
                    }
                    Credential::Certificate { key, thumbprint } => {
                        let assertion = client_assertion(url, client_id, key.as_ref(), thumbprint)?;
                        form.append_pair(
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        )
                        .append_pair("client_assertion", &assertion);
                    }
                }
                (
                    self.http
                        .post(url.clone())
                        .header("accept", "application/json")
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form.finish()),
                    "Entra's token endpoint",
                )
            }
            How::AccessToken(_) => {
                return Err(DbError::Internal(
                    "an access token from a file is read, not requested".into(),
                ));
            }
        };
        let where_ = self.endpoint();
        let resp = request.send().await.map_err(|e| {
            let advice = match self.how {
                How::ManagedIdentity { .. } => {
                    " — mssql-mcp must run on an Azure VM (or Arc-enabled server) with a managed identity, or use another authentication"
                }
                _ => "",
            };
            DbError::Unavailable(format!(
                "cannot get an Entra token: {from} ({where_}) did not answer: {}{advice}",
                without_url(&e)
            ))
        })?;
        let status = resp.status();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(DbError::Unavailable(format!(
                "cannot get an Entra token: {from} answered HTTP {} with more than {MAX_ANSWER_BYTES} bytes",
                status.as_u16()
            )));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                DbError::Unavailable(format!(
                    "cannot get an Entra token: reading {from}'s answer failed: {}",
                    without_url(&e)
                ))
            })?;
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(DbError::Unavailable(format!(
                    "cannot get an Entra token: {from} answered HTTP {} with more than {MAX_ANSWER_BYTES} bytes",
                    status.as_u16()
                )));
            }
            body.extend_from_slice(&chunk);
        }
        // Never quoted: a 200 answer holds the token.
        let answer: Option<Answer> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let said = answer
                .as_ref()
                .map(|a| {
                    [a.error.as_deref(), a.error_description.as_deref()]
                        .into_iter()
                        .flatten()
                        .map(quoted)
                        .collect::<Vec<_>>()
                        .join(": ")
                })
                .filter(|s| !s.is_empty())
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            // A refusal (4xx) is the configuration's; anything else may pass by itself.
            let (start, fix) = if status.is_client_error() {
                ("Entra sign-in failed", format!(" — check {}", self.keys()))
            } else {
                ("cannot get an Entra token", String::new())
            };
            return Err(DbError::Unavailable(format!(
                "{start}: {from} answered HTTP {}{said}{fix}",
                status.as_u16()
            )));
        }
        let Some(Answer {
            access_token: Some(token),
            expires_in,
            ..
        }) = answer
        else {
            return Err(DbError::Unavailable(format!(
                "cannot get an Entra token: {from} answered HTTP {} without an access_token ({} bytes, not shown)",
                status.as_u16(),
                body.len()
            )));
        };
        let lifetime = expires_in
            .and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .map(Duration::from_secs)
            .unwrap_or(UNKNOWN_LIFETIME)
            .min(MAX_LIFETIME);
        Ok((token, lifetime))
    }

    /// The token endpoint, for messages: scheme, host and path (the query names only the
    /// resource and a client ID, but is left out to keep messages short).
    fn endpoint(&self) -> String {
        let url = match &self.how {
            How::ManagedIdentity { url } | How::ServicePrincipal { url, .. } => url,
            How::AccessToken(_) => return String::new(),
        };
        format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ) + url.path()
    }

    /// A token from a file is refused here, with what to do, when its claims say it cannot
    /// work: expired (which may pass, once whatever writes the file renews it), or for another
    /// resource (a configuration error). A token that is not a JWT is passed on as it is (the
    /// server decides).
    fn check_claims(&self, token: &Secret, from: &str) -> Result<(), DbError> {
        let Some(claims) = jwt_claims(token.expose()) else {
            return Ok(());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_u64)
            && exp <= now
        {
            return Err(DbError::Unavailable(format!(
                "cannot get an Entra token: the access token from {from} expired {} s ago — whatever writes it must renew it ({}.access_token)",
                now - exp,
                self.key
            )));
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.as_str()],
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => return Ok(()),
        };
        let want = self.resource.trim_end_matches('/');
        if !audiences.iter().any(|a| a.trim_end_matches('/') == want) {
            return Err(DbError::Unavailable(format!(
                "Entra sign-in failed: the access token from {from} is for {}, not for {} — ask for a token for that resource (e.g. az account get-access-token --resource {})",
                audiences
                    .iter()
                    .map(|a| quoted(a))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.resource,
                self.resource
            )));
        }
        Ok(())
    }
}

/// The credential of a PEM holding the app's certificate and its RSA private key (as `az ad sp
/// create-for-rbac --create-cert` writes it). Errors name the key and never quote the file.
fn certificate(source: &SecretSource, key: &str) -> Result<Credential, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use sha2::Digest;
    let pem = source.load(key)?;
    let bytes = pem.expose().as_bytes();
    let refuse = |problem: &str, fix: &str| {
        ConfigError::new(
            key,
            format!("{} {problem}", source.describe()),
            fix.to_string(),
        )
    };
    let fix = "write the certificate and its private key into one PEM file (-----BEGIN CERTIFICATE----- and -----BEGIN PRIVATE KEY-----), e.g. cat app.crt app.key";
    let Some(Ok(cert)) = CertificateDer::pem_slice_iter(bytes).next() else {
        return Err(refuse("holds no PEM certificate", fix));
    };
    let private = PrivateKeyDer::from_pem_slice(bytes)
        .map_err(|_| refuse("holds no PEM private key", fix))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&private)
        .map_err(|_| refuse("holds a private key that cannot sign", fix))?;
    if signing
        .choose_scheme(&[rustls::SignatureScheme::RSA_PSS_SHA256])
        .is_none()
    {
        return Err(refuse(
            "holds a key that is not RSA",
            "use the RSA certificate registered on the app (Entra signs in apps with RSA keys)",
        ));
    }
    // The key must be the certificate's, or Entra refuses every assertion.
    let cert_spki = x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.tbs_certificate.subject_pki.raw.to_vec())
        .map_err(|_| refuse("holds a certificate that does not parse", fix))?;
    if signing.public_key().map(|k| k.as_ref().to_vec()) != Some(cert_spki) {
        return Err(refuse(
            "holds a private key that is not the certificate's",
            "put the certificate together with its own private key",
        ));
    }
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(cert.as_ref()));
    Ok(Credential::Certificate {
        key: signing,
        thumbprint,
    })
}

/// A client assertion for the token endpoint `url` (Microsoft's certificate credentials): a
/// JWT signed with PS256 whose `x5t#S256` names the certificate, issued by and about the app,
/// for the endpoint, good for [`ASSERTION_LIFETIME_SECS`], with a random `jti`.
fn client_assertion(
    url: &url::Url,
    client_id: &str,
    key: &dyn rustls::sign::SigningKey,
    thumbprint: &str,
) -> Result<String, DbError> {
    use rand::RngExt;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let jti: [u8; 16] = rand::rng().random();
    let header = serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumbprint});
    let claims = serde_json::json!({
        "aud": url.as_str(),
        "iss": client_id,
        "sub": client_id,
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "iat": now,
        "nbf": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
    });
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key
        .choose_scheme(&[rustls::SignatureScheme::RSA_PSS_SHA256])
        .ok_or_else(|| DbError::Internal("the certificate's key cannot sign PS256".into()))?
        .sign(signed.as_bytes())
        .map_err(|e| DbError::Internal(format!("signing the client assertion failed: {e}")))?;
    Ok(format!("{signed}.{}", b64(&signature)))
}

fn parse_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
    url::Url::parse(value).map_err(|e| {
        ConfigError::new(
            key,
            format!("`{value}` is not a URL: {e}"),
            "remove it for the default",
        )
    })
}

/// reqwest's error without the URL it carries (already named by the caller), with its causes.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A token endpoint's text, cut to [`MAX_QUOTED_CHARS`], on one line.
fn quoted(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    match one_line.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line.to_string(),
    }
}

/// The claims of a JWT (its middle part), if `token` is one.
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.c2lnbmF0dXJl",
            enc(&serde_json::json!({"alg": "RS256", "typ": "JWT"})),
            enc(&claims)
        )
    }

    fn file_login(dir: &std::path::Path, token: &str) -> EntraLogin {
        let path = dir.join("token");
        std::fs::write(&path, format!("{token}\n")).expect("write token");
        let cfg = MssqlConfig {
            authentication: Some(MssqlAuthentication::EntraAccessToken),
            access_token: Some(SecretSource {
                file: Some(path),
                env: None,
            }),
            ..MssqlConfig::default()
        };
        EntraLogin::from_config(&cfg, "database[0]")
            .expect("config")
            .expect("an Entra login")
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    #[tokio::test]
    async fn a_token_file_is_read_for_every_connection_and_checked_before_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = jwt(serde_json::json!({"aud": DEFAULT_RESOURCE, "exp": now() + 3600}));
        let login = file_login(dir.path(), &fresh);
        assert_eq!(login.token().await.expect("fresh").expose(), fresh);

        // Renewed by whatever writes it: the next connection reads the new one.
        let renewed =
            jwt(serde_json::json!({"aud": "https://database.windows.net", "exp": now() + 7200}));
        std::fs::write(dir.path().join("token"), &renewed).expect("write");
        assert_eq!(login.token().await.expect("renewed").expose(), renewed);

        let expired = jwt(serde_json::json!({"aud": DEFAULT_RESOURCE, "exp": now() - 120}));
        std::fs::write(dir.path().join("token"), &expired).expect("write");
        let e = login.token().await.expect_err("expired").to_string();
        assert!(
            e.contains("expired") && e.contains("database[0].access_token"),
            "{e}"
        );
        assert!(!e.contains(&expired), "the token is never shown: {e}");

        let arm =
            jwt(serde_json::json!({"aud": "https://management.azure.com/", "exp": now() + 3600}));
        std::fs::write(dir.path().join("token"), &arm).expect("write");
        let e = login.token().await.expect_err("wrong audience").to_string();
        assert!(
            e.contains("https://management.azure.com/")
                && e.contains("--resource https://database.windows.net/"),
            "{e}"
        );

        // Not a JWT: the server decides.
        std::fs::write(dir.path().join("token"), "opaque-token").expect("write");
        assert_eq!(
            login.token().await.expect("opaque").expose(),
            "opaque-token"
        );

        std::fs::remove_file(dir.path().join("token")).expect("remove");
        let e = login.token().await.expect_err("gone").to_string();
        assert!(
            e.starts_with("the database is unavailable: Entra sign-in failed"),
            "{e}"
        );
        assert!(e.contains("database[0].access_token.file"), "{e}");
    }

    #[test]
    fn quoted_text_is_one_line_and_bounded() {
        assert_eq!(quoted(" a\nb\t"), "a b");
        let long = "x".repeat(MAX_QUOTED_CHARS + 10);
        assert_eq!(quoted(&long).chars().count(), MAX_QUOTED_CHARS + 1);
    }

    #[test]
    fn claims_are_read_only_from_three_part_tokens() {
        assert!(jwt_claims("a.b").is_none());
        assert!(jwt_claims("not a token").is_none());
        let t = jwt(serde_json::json!({"exp": 5}));
        assert_eq!(
            jwt_claims(&t).and_then(|c| c.get("exp").cloned()),
            Some(5.into())
        );
    }
}
