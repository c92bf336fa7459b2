//! The thin HTTP API (`media-api`): uploads, job submission, status, live progress, cancellation
//! and downloads, on either backend.
//!
//! It is stateless: everything lives in storage (job status, manifests) and on the ready queue,
//! exactly as for `media-worker submit`, so any number of instances can run behind a load
//! balancer. Job ids for idempotent submissions are derived from the caller and the key
//! instead of being remembered; the local backend's own upload and download URLs are signed
//! with a secret every instance shares, instead of being recorded.
//!
//! # Layout
//! - [`config`]: the API's settings table (`media-api --help`).
//! - [`routes`]: one file per resource; [`openapi`] gathers their annotations into
//!   `/openapi.json`.
//! - [`error`]: the one JSON error shape; [`auth`]: bearer tokens and signed URLs;
//!   [`tokens`]: the tenants' tokens file; [`cors`]: browser origins; [`idempotency`]: the
//!   `Idempotency-Key` of submissions; [`signed_parts`]: the running total of a multipart
//!   upload.
//!
//! # Request handling
//! Outermost first: tracing, CORS (when origins are configured), the JSON error shape; then
//! each group of routes has its own layers (see [`router`]): health checks take no token and
//! wait for no permit; calls need a token and share a concurrency limit and a timeout; event
//! streams, downloads and uploads run as long as they need under their own limits. JSON
//! bodies are limited to [`JSON_LIMIT`]; uploads stream to a temp file under their own limit.

pub mod auth;
pub mod config;
pub mod cors;
pub mod error;
pub mod idempotency;
pub mod model;
pub mod openapi;
pub mod routes;
pub mod signed_parts;
pub mod tokens;

use crate::jobs::JobStore;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::backend::{self, Backend};
use crate::config::{BackendKind, Config};
use auth::{Auth, UrlSigner};
use config::ApiConfig;
use error::{ApiError, json_errors};
use tokens::TokensFile;

/// Largest JSON body accepted.
pub const JSON_LIMIT: usize = 64 << 10;

/// Bytes of a key segment left as they are in the API's URLs.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub api: ApiConfig,
    pub backend: Backend,
    /// The only way the API changes a job's status.
    pub store: JobStore,
    pub auth: Auth,
    pub signer: UrlSigner,
    /// Base of the absolute URLs handed out, without a trailing `/`.
    pub public_url: String,
    /// `MEDIA_API_CONCURRENCY`: calls and downloads.
    pub requests: Arc<Semaphore>,
    /// `MEDIA_API_MAX_UPLOADS`: upload bodies being received.
    pub uploads: Arc<Semaphore>,
    /// One permit per open event stream.
    pub streams: Arc<Semaphore>,
    /// `/readyz`'s last answer, shared for a second.
    pub readiness: crate::health::Cached,
    /// Cancelled on shutdown: event streams end so the server can drain.
    pub shutdown: CancellationToken,
}

impl Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl ApiState {
    /// `bound` is the address actually listened on, the default base of the URLs handed out.
    pub fn new(config: Config, api: ApiConfig, backend: Backend, bound: SocketAddr) -> anyhow::Result<Self> {
        let signer = match (config.backend, api.signing_key.clone()) {
            (BackendKind::Local, configured) => UrlSigner::load_or_create(configured, &config.data_dir)
                .context("loading the key that signs the API's URLs")?,
            // S3 signs its own URLs; this key signs nothing, so it need not be shared.
            (BackendKind::Aws, configured) => UrlSigner::new(configured.unwrap_or_else(|| {
                format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()).into_bytes()
            })),
        };
        let public_url = api.public_url.clone().unwrap_or_else(|| format!("http://{bound}"));
        let tokens_file = match &api.tokens_file {
            Some(path) => Some(TokensFile::open(path).map_err(|m| anyhow::anyhow!("MEDIA_API_TOKENS_FILE: {m}"))?),
            None => None,
        };
        let store = crate::notify::job_store(&config, &backend);
        Ok(ApiState(Arc::new(Shared {
            auth: Auth::new(api.token_digests.clone(), tokens_file),
            requests: Arc::new(Semaphore::new(api.concurrency)),
            uploads: Arc::new(Semaphore::new(api.max_uploads)),
            streams: Arc::new(Semaphore::new(api.max_streams)),
            readiness: Default::default(),
            shutdown: CancellationToken::new(),
            signer,
            public_url,
            config,
            api,
            store,
            backend,
        })))
    }

    pub fn is_local(&self) -> bool {
        self.config.backend == BackendKind::Local
    }

    /// An absolute URL of this API for a key under `/v1/<resource>/`.
    pub fn key_url(&self, resource: &str, key: &str) -> String {
        let encoded: Vec<String> =
            key.split('/').map(|segment| utf8_percent_encode(segment, PATH_SEGMENT).to_string()).collect();
        format!("{}/v1/{resource}/{}", self.public_url, encoded.join("/"))
    }
}

/// Bounds the time of a request; on the routes that do not stream.
async fn time_limit(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let limit = state.api.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {limit:?}; try again"),
        )
        .into_response(),
    }
}

/// One of `MEDIA_API_MAX_UPLOADS` permits for the time an upload body is received; 429 when
/// all are taken, rather than a queue of slow bodies.
async fn upload_slot(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    match state.uploads.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            "too many uploads are being received; try again soon",
        )
        .into_response(),
    }
}

/// Every route, each group with its own authentication and limits, and the JSON error shape.
///
/// - Health, the API's description and the console's files: no token and no shared permit, so
///   they answer while uploads, downloads and event streams hold every other permit.
/// - Calls: a token, `MEDIA_API_REQUEST_TIMEOUT`, and `MEDIA_API_CONCURRENCY` permits shared
///   with downloads.
/// - Event streams: a token, no time limit; `MEDIA_API_MAX_STREAMS` bounds them (429).
/// - Downloads (local backend): a signature or a token; streamed for as long as they need.
/// - Upload bodies (local backend): the URL's signature is the permission; their own
///   `MEDIA_API_MAX_UPLOADS` permits, and the body is read under an idle timeout and a
///   minimum rate.
pub fn router(state: ApiState) -> Router {
    use routes::{console, events, files, health, jobs, multipart, presets, uploads};
    let requests = GlobalConcurrencyLimitLayer::with_semaphore(state.requests.clone());
    let public = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(health::openapi_json))
        .route("/", get(console::index))
        .route("/console/{*file}", get(console::asset))
        .route_layer(middleware::from_fn_with_state(state.clone(), time_limit));
    let calls = Router::new()
        .route("/v1/uploads", post(uploads::create))
        .route("/v1/uploads/{*key}", get(uploads::info))
        .route("/v1/multipart-uploads", post(multipart::create))
        .route("/v1/multipart-uploads/{upload_id}", get(multipart::list).delete(multipart::abort))
        .route("/v1/multipart-uploads/{upload_id}/parts/{part_number}", post(multipart::sign_part))
        .route(
            "/v1/multipart-uploads/{upload_id}/complete",
            post(multipart::complete).layer(DefaultBodyLimit::max(multipart::COMPLETE_LIMIT)),
        )
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/presets", get(presets::list))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .route_layer(requests.clone());
    let streams = Router::new()
        .route("/v1/jobs/{id}/events", get(events::events))
        .route("/v1/jobs/{id}/captions", post(jobs::add_captions))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    let downloads = Router::new()
        .route("/v1/files/{*key}", get(files::get))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::accept_token))
        .route_layer(requests);
    let upload_bodies = Router::new()
        .route("/v1/uploads/{*key}", put(uploads::put))
        .route("/v1/multipart-uploads/{upload_id}/parts/{part_number}", put(multipart::put_part))
        .route_layer(middleware::from_fn_with_state(state.clone(), upload_slot));
    let mut app = Router::new()
        .merge(public)
        .merge(calls)
        .merge(streams)
        .merge(downloads)
        .merge(upload_bodies)
        .fallback(error::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .layer(middleware::from_fn(json_errors));
    if let Some(cors) = cors::layer(&state.api.cors_origins) {
        app = app.layer(cors);
    }
    app.layer(TraceLayer::new_for_http()).with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// Serves `state` on `listener` until `shutdown` resolves; then event streams end, requests in
/// flight get the shutdown grace period, and the rest are dropped.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = state.api.shutdown_grace;
    let token = state.shutdown.clone();
    let app = router(state);
    let signal = token.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        signal.cancel();
    });
    let overdue = async {
        token.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.context("serving the API")?,
        () = overdue => tracing::warn!(grace = ?grace, "Requests were still running after the grace period; stopping anyway."),
    }
    tracing::info!("API stopped.");
    Ok(())
}

/// What `media-api` does: connect, listen, serve until SIGTERM/SIGINT.
pub async fn run(config: Config, api: ApiConfig) -> anyhow::Result<()> {
    let backend = backend::connect(&config).await?;
    let listener =
        TcpListener::bind(api.addr).await.with_context(|| format!("MEDIA_API_ADDR: cannot listen on {}", api.addr))?;
    let bound = listener.local_addr()?;
    if api.token_digests.is_empty() && api.tokens_file.is_none() {
        tracing::warn!(
            addr = %bound,
            "No MEDIA_API_TOKENS: EVERY REQUEST IS ACCEPTED WITHOUT AUTHENTICATION. Set tokens before exposing this API."
        );
    }
    let state = ApiState::new(config, api, backend, bound)?;
    tracing::info!(
        addr = %bound,
        backend = ?state.config.backend,
        public_url = %state.public_url,
        tokens = state.api.token_digests.len(),
        tokens_file = state.api.tokens_file.as_ref().map(|p| p.display().to_string()),
        cors_origins = state.api.cors_origins.len(),
        "API listening."
    );
    serve(listener, state, crate::telemetry::shutdown_signal()).await
}

/// How long the event stream waits between reads of a job's status.
pub const EVENTS_POLL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests;
