//! Liveness, readiness and the API's own description.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::ApiState;
use crate::api::model::Health;
use crate::health::Readiness;

/// The process is up (nothing else is checked: restarts cure nothing else).
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Storage, the ready queue and the job ledger answer; 503 otherwise, so a load balancer stops sending traffic.
/// The answer is at most a second old (one check a second, however often this is called).
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Storage or the queue is unavailable", body = Readiness),
    ))]
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let deps = crate::health::Deps {
        storage: state.backend.storage.as_ref(),
        ready: state.backend.queues.ready.as_ref(),
        ledger: state.backend.ledger.as_ref(),
        layout: &state.config.layout,
    };
    let ready = Readiness::cached(&state.readiness, deps).await;
    let code = if ready.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(ready)).into_response()
}

/// This document, generated from the code.
#[utoipa::path(get, operation_id = "openapi", path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    static DOCUMENT: LazyLock<String> = LazyLock::new(crate::api::openapi::document_json);
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}
