//! The API's own settings, read once at start-up, in one table ([`API_VARIABLES`]) that also
//! feeds `media-api --help` and mirrors `.env.example`. The backend, layout and presets come
//! from the worker's [`crate::config::Config`], so both binaries agree on them.
//!
//! Tokens are hashed as they are read: the process keeps their SHA-256 digests only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::table::{self, ConfigError, Env, Variable, parse_bool, parse_count, parse_size, parse_socket_addr};

/// Presigned S3 URLs cannot outlive a week; local URLs keep to the same limit.
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Uploads are held to `MEDIA_API_UPLOAD_MIN_RATE` once they have run this long (a slow start,
/// a TLS handshake, a congested first second are forgiven).
pub const UPLOAD_RATE_GRACE: Duration = Duration::from_secs(10);
/// Tokens shorter than this are refused: they would be guessable.
const MIN_TOKEN_CHARS: usize = 16;

pub const API_VARIABLES: &[Variable] = &[
    Variable { name: "MEDIA_API_ADDR", default: "127.0.0.1:8080", help: "address the API listens on" },
    Variable {
        name: "MEDIA_API_TOKENS",
        default: "",
        help: "comma-separated bearer tokens (16+ characters each); these, MEDIA_API_TOKENS_FILE or \
               MEDIA_API_ALLOW_ANONYMOUS=true is required",
    },
    Variable {
        name: "MEDIA_API_TOKENS_FILE",
        default: "",
        help: "TOML file of tenants' tokens (SHA-256 digests, tenant, optional expiry; see docs/api.md); \
               reloaded when it changes. Each tenant sees only its own uploads, jobs and outputs",
    },
    Variable {
        name: "MEDIA_API_CORS_ORIGINS",
        default: "",
        help: "comma-separated browser origins allowed to call the API (e.g. https://app.example.com); \
               empty: no CORS headers. No wildcard",
    },
    Variable {
        name: "MEDIA_API_ALLOW_ANONYMOUS",
        default: "false",
        help: "serve without tokens: every request is then anonymous and sees everything. Needed even on \
               loopback, where a reverse proxy on the same host would otherwise publish the whole API",
    },
    Variable {
        name: "MEDIA_API_PUBLIC_URL",
        default: "",
        help: "base of the upload and download URLs the API hands out on the local backend; \
               default: http://<MEDIA_API_ADDR>",
    },
    Variable {
        name: "MEDIA_PRESIGN_EXPIRY",
        default: "15m",
        help: "lifetime of upload and download URLs (at most 7 days)",
    },
    Variable {
        name: "MEDIA_API_MAX_UPLOAD",
        default: "5GiB",
        help: "largest upload accepted (local backend: streamed through the API; S3: at most 5 GiB in one PUT, \
               5 TiB in a multipart upload)",
    },
    Variable {
        name: "MEDIA_API_REQUEST_TIMEOUT",
        default: "30s",
        help: "time limit of a request (not of uploads, downloads and event streams)",
    },
    Variable {
        name: "MEDIA_API_CONCURRENCY",
        default: "256",
        help: "requests handled at once per instance; more wait their turn",
    },
    Variable {
        name: "MEDIA_API_MAX_UPLOADS",
        default: "32",
        help: "upload bodies received at once per instance (local backend); more get 429. \
               Health checks and other requests never wait behind them",
    },
    Variable {
        name: "MEDIA_API_UPLOAD_IDLE_TIMEOUT",
        default: "30s",
        help: "an upload body that sends nothing for this long is refused (408)",
    },
    Variable {
        name: "MEDIA_API_UPLOAD_MIN_RATE",
        default: "16KiB",
        help: "bytes per second an upload body must average after its first 10 seconds, or be refused (408)",
    },
    Variable {
        name: "MEDIA_API_MAX_STREAMS",
        default: "256",
        help: "event streams (GET /v1/jobs/{id}/events) open at once per instance; more get 429",
    },
    Variable {
        name: "MEDIA_API_SHUTDOWN_GRACE",
        default: "10s",
        help: "on SIGTERM, how long requests in flight may finish (event streams end at once)",
    },
    Variable {
        name: "MEDIA_API_SIGNING_KEY",
        default: "",
        help: "local backend: secret (32+ characters) signing the API's upload and download URLs; \
               default: a random key kept in MEDIA_DATA_DIR/api-signing.key",
    },
];

/// Settings of one `media-api` process. Not `Debug`: it holds the signing secret.
#[derive(Clone)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    /// SHA-256 of each token of `MEDIA_API_TOKENS` (the shared scope).
    pub token_digests: Vec<[u8; 32]>,
    /// Tenants' tokens, read (and re-read) by [`super::tokens::TokensFile`].
    pub tokens_file: Option<PathBuf>,
    /// Origins a browser may call the API from; empty means no CORS layer.
    pub cors_origins: Vec<String>,
    pub allow_anonymous: bool,
    /// Without a trailing `/`; `None` means `http://<the bound address>`.
    pub public_url: Option<String>,
    pub presign_expiry: Duration,
    pub max_upload: u64,
    pub request_timeout: Duration,
    pub concurrency: usize,
    pub max_streams: usize,
    /// Upload bodies received at once: their own permits, apart from other requests'.
    pub max_uploads: usize,
    /// Longest silence of an upload body.
    pub upload_idle_timeout: Duration,
    /// Bytes per second an upload body must average after [`UPLOAD_RATE_GRACE`].
    pub upload_min_rate: u64,
    pub shutdown_grace: Duration,
    pub signing_key: Option<Vec<u8>>,
}

impl ApiConfig {
    /// Reads the process environment (`.env` is loaded by [`crate::config::Config::from_env`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses settings from any lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env::new(&lookup, API_VARIABLES);
        let addr = env.parse_with("MEDIA_API_ADDR", parse_socket_addr)?;
        let Access { token_digests, allow_anonymous, tokens_file } = access(&env)?;
        let cors_origins = match env.get("MEDIA_API_CORS_ORIGINS") {
            None => Vec::new(),
            Some(raw) => parse_origins(&raw).map_err(|m| ConfigError::new("MEDIA_API_CORS_ORIGINS", m))?,
        };
        // Not even on loopback: a reverse proxy on the same host turns loopback into public.
        if token_digests.is_empty() && tokens_file.is_none() && !allow_anonymous {
            return Err(ConfigError::new(
                "MEDIA_API_TOKENS",
                "no tokens: set MEDIA_API_TOKENS or MEDIA_API_TOKENS_FILE, or MEDIA_API_ALLOW_ANONYMOUS=true \
                 to accept every request without one",
            ));
        }
        let public_url = match env.get("MEDIA_API_PUBLIC_URL") {
            None => None,
            Some(raw) => Some(parse_public_url(&raw).map_err(|m| ConfigError::new("MEDIA_API_PUBLIC_URL", m))?),
        };
        let duration = |name: &'static str| {
            env.parse_with(name, |raw| {
                humantime::parse_duration(raw).map_err(|e| format!("expected a duration such as 30s or 15m ({e})"))
            })
        };
        let positive = |name: &'static str| match duration(name)? {
            d if d.is_zero() => Err(ConfigError::new(name, "must be positive")),
            d => Ok(d),
        };
        let presign_expiry = duration("MEDIA_PRESIGN_EXPIRY")?;
        if presign_expiry < Duration::from_secs(1) || presign_expiry > MAX_PRESIGN_EXPIRY {
            return Err(ConfigError::new("MEDIA_PRESIGN_EXPIRY", "must be between 1s and 7 days"));
        }
        let max_upload = env.parse_with("MEDIA_API_MAX_UPLOAD", parse_size)?;
        let request_timeout = positive("MEDIA_API_REQUEST_TIMEOUT")?;
        let count = |name: &'static str| env.parse_with(name, |raw| parse_count(raw, 1..=100_000));
        Ok(ApiConfig {
            addr,
            token_digests,
            tokens_file,
            cors_origins,
            allow_anonymous,
            public_url,
            presign_expiry,
            max_upload,
            request_timeout,
            concurrency: count("MEDIA_API_CONCURRENCY")?,
            max_streams: count("MEDIA_API_MAX_STREAMS")?,
            max_uploads: count("MEDIA_API_MAX_UPLOADS")?,
            upload_idle_timeout: positive("MEDIA_API_UPLOAD_IDLE_TIMEOUT")?,
            upload_min_rate: env.parse_with("MEDIA_API_UPLOAD_MIN_RATE", parse_size)?,
            shutdown_grace: duration("MEDIA_API_SHUTDOWN_GRACE")?,
            signing_key: match env.get("MEDIA_API_SIGNING_KEY") {
                Some(key) if key.chars().count() < 32 => {
                    return Err(ConfigError::new("MEDIA_API_SIGNING_KEY", "must be at least 32 characters"));
                }
                other => other.map(String::into_bytes),
            },
        })
    }
}

/// Who may call: the shared tokens (as digests), anonymous callers, the tenants' tokens file.
struct Access {
    token_digests: Vec<[u8; 32]>,
    allow_anonymous: bool,
    tokens_file: Option<PathBuf>,
}

/// [`Access`] as configured; the tokens file is checked readable now.
fn access(env: &Env) -> Result<Access, ConfigError> {
    let tokens: Vec<String> = env
        .get("MEDIA_API_TOKENS")
        .map(|raw| raw.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if let Some(short) = tokens.iter().position(|t| t.chars().count() < MIN_TOKEN_CHARS) {
        return Err(ConfigError::new(
            "MEDIA_API_TOKENS",
            format!("token #{} is shorter than {MIN_TOKEN_CHARS} characters", short + 1),
        ));
    }
    let token_digests = tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect();
    let allow_anonymous = env.parse_with("MEDIA_API_ALLOW_ANONYMOUS", parse_bool)?;
    let tokens_file = env.get("MEDIA_API_TOKENS_FILE").map(PathBuf::from);
    if let Some(path) = &tokens_file {
        super::tokens::TokensFile::open(path).map_err(|m| ConfigError::new("MEDIA_API_TOKENS_FILE", m))?;
    }
    Ok(Access { token_digests, allow_anonymous, tokens_file })
}

/// A base URL without a trailing `/`, query or fragment.
fn parse_public_url(raw: &str) -> Result<String, String> {
    let url = raw.trim_end_matches('/').to_string();
    let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
    if !scheme_ok || url.contains(char::is_whitespace) || url.contains(['?', '#']) {
        return Err(format!("expected a base URL such as https://media.example.com, got `{raw}`"));
    }
    Ok(url)
}

/// Browser origins as a browser sends them: `scheme://host[:port]`, nothing else. A wildcard is
/// refused: the API's answers are per caller.
fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let parsed = url::Url::parse(origin)
            .map_err(|_| format!("`{origin}` is not an origin such as https://app.example.com"))?;
        let exact = parsed.origin().ascii_serialization();
        if !matches!(parsed.scheme(), "http" | "https") || exact != origin.trim_end_matches('/') {
            return Err(format!("`{origin}` is not an origin such as https://app.example.com (no path, no wildcard)"));
        }
        origins.push(exact);
    }
    Ok(origins)
}

/// The API's table as `--help` shows it, followed by the shared one.
pub fn variables_help() -> String {
    let mut out = String::from("API environment (also read from .env):\n");
    out.push_str(&table::help(API_VARIABLES));
    out.push('\n');
    out.push_str(&crate::config::variables_help().replacen("Environment", "Shared environment", 1));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const TOKENS: (&str, &str) = ("MEDIA_API_TOKENS", "a-token-of-the-tests-0123456789");

    /// The settings `pairs` give, with a token unless they name tokens or anonymous mode.
    fn config(pairs: &[(&str, &str)]) -> Result<ApiConfig, ConfigError> {
        let mut map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !pairs.iter().any(|(k, _)| k.starts_with("MEDIA_API_TOKENS") || *k == "MEDIA_API_ALLOW_ANONYMOUS") {
            map.insert(TOKENS.0.into(), TOKENS.1.into());
        }
        ApiConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.presign_expiry, Duration::from_secs(900));
        assert_eq!(cfg.max_upload, 5 << 30);
        assert_eq!(cfg.public_url, None);
    }

    #[test]
    fn any_address_needs_tokens_or_an_explicit_anonymous_mode() {
        for addr in ["127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080"] {
            let err = config(&[("MEDIA_API_ADDR", addr), ("MEDIA_API_TOKENS", "")]).err().unwrap();
            assert_eq!(err.var, "MEDIA_API_TOKENS", "{addr}");
            assert!(config(&[("MEDIA_API_ADDR", addr), ("MEDIA_API_ALLOW_ANONYMOUS", "true")]).is_ok());
            let refused = config(&[("MEDIA_API_ADDR", addr), ("MEDIA_API_ALLOW_ANONYMOUS", "false")]);
            assert!(refused.is_err(), "{addr}: anonymous mode is never the default");
        }
        let cfg = config(&[
            ("MEDIA_API_ADDR", "0.0.0.0:8080"),
            ("MEDIA_API_TOKENS", " first-token-0123456, second-token-abcdef ,"),
        ])
        .unwrap();
        assert_eq!(cfg.token_digests.len(), 2);
        let expected: [u8; 32] = Sha256::digest(b"first-token-0123456").into();
        assert_eq!(cfg.token_digests[0], expected, "tokens are kept as digests of their trimmed text");
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let cases = [
            ("MEDIA_API_ADDR", "localhost"),
            ("MEDIA_API_TOKENS", "short"),
            ("MEDIA_API_ALLOW_ANONYMOUS", "maybe"),
            ("MEDIA_API_PUBLIC_URL", "ftp://x"),
            ("MEDIA_PRESIGN_EXPIRY", "8days"),
            ("MEDIA_PRESIGN_EXPIRY", "0s"),
            ("MEDIA_API_MAX_UPLOAD", "lots"),
            ("MEDIA_API_REQUEST_TIMEOUT", "0s"),
            ("MEDIA_API_CONCURRENCY", "0"),
            ("MEDIA_API_MAX_STREAMS", "many"),
            ("MEDIA_API_SIGNING_KEY", "too-short"),
            ("MEDIA_API_TOKENS_FILE", "/nonexistent/tokens.toml"),
            ("MEDIA_API_CORS_ORIGINS", "*"),
            ("MEDIA_API_CORS_ORIGINS", "https://app.example.com/path"),
            ("MEDIA_API_CORS_ORIGINS", "app.example.com"),
            ("MEDIA_API_MAX_UPLOADS", "0"),
            ("MEDIA_API_UPLOAD_IDLE_TIMEOUT", "0s"),
            ("MEDIA_API_UPLOAD_MIN_RATE", "fast"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).err().unwrap_or_else(|| panic!("{var}={value} was accepted"));
            assert_eq!(err.var, var, "{value}");
        }
        let origins = config(&[("MEDIA_API_CORS_ORIGINS", "https://app.example.com, http://localhost:5173/")]).unwrap();
        assert_eq!(origins.cors_origins, ["https://app.example.com", "http://localhost:5173"]);
        assert_eq!(
            config(&[("MEDIA_API_PUBLIC_URL", "https://media.example.com/")]).unwrap().public_url.as_deref(),
            Some("https://media.example.com")
        );
    }

    #[test]
    fn every_variable_is_in_env_example_and_help() {
        let help = variables_help();
        crate::config::assert_documented(API_VARIABLES, &help);
        assert!(help.contains("MEDIA_BACKEND"), "the shared table is printed too");
    }
}
