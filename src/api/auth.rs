//! Who is calling, and URLs that carry their own permission.
//!
//! - Bearer tokens: the process holds SHA-256 digests of `MEDIA_API_TOKENS` and compares the
//!   digest of the presented token with each, in constant time. A caller is known by the digest
//!   of its token ([`Caller::id`]), which scopes idempotency keys; no token is stored or logged.
//! - Signed URLs (local backend): the API's own upload and download URLs carry an expiry and an
//!   HMAC-SHA256 of method, key, expiry and (for uploads) content type, like S3's presigned
//!   URLs. Any instance with the same secret verifies them, so the API stays stateless.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::ApiError;
use super::tokens::TokensFile;
use crate::domain::tenant::Scope;

/// The caller of a request, as far as the API needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Hex SHA-256 of the token, or `anonymous` when the API runs without tokens.
    pub id: String,
    /// The keys and jobs it may see: the shared scope for `MEDIA_API_TOKENS` (and anonymous
    /// callers), its tenant's folders for a token of the tokens file.
    pub scope: Scope,
}

pub struct Auth {
    /// `MEDIA_API_TOKENS`: the shared scope.
    digests: Vec<[u8; 32]>,
    /// `MEDIA_API_TOKENS_FILE`: one tenant per token.
    file: Option<TokensFile>,
}

impl Auth {
    pub fn new(digests: Vec<[u8; 32]>, file: Option<TokensFile>) -> Self {
        Self { digests, file }
    }

    /// Without tokens every request is anonymous (the configuration check allowed it).
    pub fn is_anonymous(&self) -> bool {
        self.digests.is_empty() && self.file.is_none()
    }

    /// The caller a request's `Authorization: Bearer` header identifies.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.is_anonymous() {
            return Ok(Caller { id: "anonymous".into(), scope: Scope::Shared });
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <token>`"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let id = hex::encode(digest);
        // Every digest is compared, so the time taken says nothing about which one matched.
        let matched = self.digests.iter().fold(subtle::Choice::from(0), |acc, known| acc | known.ct_eq(&digest));
        if bool::from(matched) {
            return Ok(Caller { id, scope: Scope::Shared });
        }
        match self.file.as_ref().and_then(|file| file.find(&digest)) {
            Some(entry) if entry.expires_at.is_some_and(|at| at <= chrono::Utc::now()) => {
                Err(ApiError::unauthorized("the token has expired"))
            }
            Some(entry) => Ok(Caller { id, scope: Scope::Tenant(entry.tenant) }),
            None => Err(ApiError::unauthorized("the token is not valid")),
        }
    }
}

/// Middleware of the routes that need a token: rejects other requests with 401 and hands the
/// [`Caller`] to the handler as an extension.
pub async fn require_token(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = state.auth.caller(request.headers())?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Middleware of the routes whose URLs carry their own permission (a signature): a valid
/// token still makes its [`Caller`] known to the handler; anything else is the handler's to
/// judge.
pub async fn accept_token(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    if let Ok(caller) = state.auth.caller(request.headers()) {
        request.extensions_mut().insert(caller);
    }
    next.run(request).await
}

type HmacSha256 = Hmac<Sha256>;

/// Name of the file keeping the local backend's signing secret, in the data folder.
const KEY_FILE: &str = "api-signing.key";

/// Signs and checks the API's own URLs.
pub struct UrlSigner {
    secret: Vec<u8>,
}

/// What a signature covers.
#[derive(Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    pub key: &'a str,
    /// Unix seconds.
    pub expires: u64,
    /// Uploads only: the content type the client must send.
    pub content_type: Option<&'a str>,
    /// Multipart parts: the exact length of the body.
    pub length: Option<u64>,
}

impl UrlSigner {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    /// The secret from `MEDIA_API_SIGNING_KEY`, else the one kept in the data folder (made on
    /// first use, readable by the owner only), so every instance on the machine agrees.
    pub fn load_or_create(configured: Option<Vec<u8>>, data_dir: &Path) -> anyhow::Result<Self> {
        if let Some(secret) = configured {
            return Ok(Self::new(secret));
        }
        let path = data_dir.join(KEY_FILE);
        std::fs::create_dir_all(data_dir)?;
        let fresh = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                std::io::Write::write_all(&mut file, fresh.as_bytes())?;
                file.sync_all()?;
                tracing::info!(path = %path.display(), "Created the key signing the API's upload and download URLs.");
                Ok(Self::new(fresh.into_bytes()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another instance may be writing it this very moment: wait for a whole key.
                for _ in 0..50 {
                    let secret = std::fs::read(&path)?;
                    if secret.len() >= 32 {
                        return Ok(Self::new(secret));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                anyhow::bail!("{} holds no usable key; delete it to make a new one", path.display())
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
        }
    }

    fn mac(&self, what: &Signed<'_>) -> Result<HmacSha256, ApiError> {
        // HMAC takes keys of any length; the error exists for other MACs.
        let mut mac = HmacSha256::new_from_slice(&self.secret)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("signing key: {e}")))?;
        let content_type = what.content_type.unwrap_or("");
        for part in [what.method, what.key, &what.expires.to_string(), content_type] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        // Only when set, so the URLs signed before lengths existed stay valid.
        if let Some(length) = what.length {
            mac.update(length.to_string().as_bytes());
            mac.update(&[0]);
        }
        Ok(mac)
    }

    pub fn sign(&self, what: &Signed<'_>) -> Result<String, ApiError> {
        Ok(hex::encode(self.mac(what)?.finalize().into_bytes()))
    }

    /// Accepts an unexpired signature of exactly `what` (compared in constant time).
    pub fn verify(&self, what: &Signed<'_>, signature: &str) -> Result<(), ApiError> {
        if what.expires < unix_now() {
            return Err(ApiError::forbidden("url_expired", "this URL has expired; ask the API for a new one"));
        }
        let bytes =
            hex::decode(signature).map_err(|_| ApiError::forbidden("bad_signature", "the signature is malformed"))?;
        self.mac(what)?
            .verify_slice(&bytes)
            .map_err(|_| ApiError::forbidden("bad_signature", "the signature does not match this request"))
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn auth() -> Auth {
        let digests =
            vec![Sha256::digest(b"token-one-0123456789").into(), Sha256::digest(b"token-two-0123456789").into()];
        Auth::new(digests, None)
    }

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn tokens_identify_callers_by_digest() {
        let one = auth().caller(&bearer("Bearer token-one-0123456789")).unwrap();
        let two = auth().caller(&bearer("Bearer token-two-0123456789")).unwrap();
        assert_ne!(one, two);
        assert_eq!(one.id, hex::encode(Sha256::digest(b"token-one-0123456789")));
        assert!(!one.id.contains("token"));
        for bad in ["Bearer nope", "token-one-0123456789", "Basic dG9rZW4=", "Bearer "] {
            assert!(auth().caller(&bearer(bad)).is_err(), "{bad}");
        }
        assert!(auth().caller(&HeaderMap::new()).is_err());
        assert_eq!(one.scope, Scope::Shared);
        assert_eq!(Auth::new(Vec::new(), None).caller(&HeaderMap::new()).unwrap().id, "anonymous");
    }

    #[test]
    fn file_tokens_name_their_tenant_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let hash = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
        let text = format!(
            "[[token]]\nsha256 = \"{}\"\ntenant = \"acme\"\n[[token]]\nsha256 = \"{}\"\ntenant = \"acme\"\nexpires_at = 2020-01-01T00:00:00Z\n",
            hash("acme-token-0123456789"),
            hash("old-token-0123456789")
        );
        std::fs::write(&path, text).unwrap();
        let digests = vec![Sha256::digest(b"token-one-0123456789").into()];
        let auth = Auth::new(digests, Some(TokensFile::open(&path).unwrap()));
        let acme = auth.caller(&bearer("Bearer acme-token-0123456789")).unwrap();
        assert_eq!(acme.scope, Scope::Tenant("acme".into()));
        assert_eq!(auth.caller(&bearer("Bearer token-one-0123456789")).unwrap().scope, Scope::Shared);
        let expired = auth.caller(&bearer("Bearer old-token-0123456789")).unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
        assert!(auth.caller(&HeaderMap::new()).is_err());
    }

    #[test]
    fn signatures_bind_every_part_and_expire() {
        let signer = UrlSigner::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let expires = unix_now() + 60;
        let what =
            Signed { method: "PUT", key: "uploads/a/b.mp4", expires, content_type: Some("video/mp4"), length: None };
        let signature = signer.sign(&what).unwrap();
        assert!(signer.verify(&what, &signature).is_ok());
        let others = [
            Signed { method: "GET", ..what },
            Signed { key: "uploads/a/c.mp4", ..what },
            Signed { expires: expires + 1, ..what },
            Signed { content_type: Some("text/html"), ..what },
            Signed { length: Some(10), ..what },
        ];
        for other in others {
            assert!(signer.verify(&other, &signature).is_err());
        }
        assert!(signer.verify(&what, "zz").is_err());
        assert!(UrlSigner::new(b"another key, another signature!!".to_vec()).verify(&what, &signature).is_err());
        let past = Signed { expires: unix_now() - 1, ..what };
        let err = signer.verify(&past, &signer.sign(&past).unwrap()).unwrap_err();
        assert!(err.to_string().contains("expired"));
    }

    #[test]
    fn the_local_key_is_made_once_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let first = UrlSigner::load_or_create(None, dir.path()).unwrap();
        let second = UrlSigner::load_or_create(None, dir.path()).unwrap();
        assert_eq!(first.secret, second.secret);
        assert!(first.secret.len() >= 32);
        let configured = UrlSigner::load_or_create(Some(b"x".repeat(32)), dir.path()).unwrap();
        assert_eq!(configured.secret, b"x".repeat(32));
    }
}
