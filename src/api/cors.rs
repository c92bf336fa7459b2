//! CORS for browser apps on the origins of `MEDIA_API_CORS_ORIGINS`, and no other.
//!
//! Callers authenticate with a bearer token, never a cookie, so credentials are not allowed
//! and every origin is named: there is no wildcard. Preflights are answered before routing, so
//! they need no token.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::idempotency::{IDEMPOTENCY_KEY, REPLAYED};

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The layer for these origins; `None` (no CORS headers at all) when there are none.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static(IDEMPOTENCY_KEY)])
            .expose_headers([header::ETAG, header::LOCATION, HeaderName::from_static(REPLAYED)])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}
