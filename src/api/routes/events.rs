//! Following a job: Server-Sent Events of its status as it changes.
//!
//! A stream lives as long as its job runs, far beyond any token check at its start: the
//! caller is asked again every [`RECHECK_CALLER`], and a token revoked (removed from the
//! tokens file) or expired meanwhile ends the stream with an `unauthorized` event.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;

use super::jobs::stored_status;
use super::view::job_view;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ApiPath, ApiResult, ErrorResponse};
use crate::api::model::JobEvent;
use crate::api::{ApiState, EVENTS_POLL};
use crate::domain::status::{JobState, JobStatus};

/// How often an open stream asks again who its caller is.
pub const RECHECK_CALLER: Duration = Duration::from_secs(5);

/// Server-Sent Events: the job as each change of state, stage, progress or attempt happens,
/// ending after the terminal state.
///
/// Each event is `event: status` with the job (as `GET /v1/jobs/{id}` returns it) as `data`;
/// comments keep the connection alive. The stream also ends when the instance shuts down:
/// reconnect, and the current state comes first.
#[utoipa::path(get, operation_id = "job_events", path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "Job id", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    responses(
        (status = 200, description = "A stream of `status` events, each carrying a JobView as JSON", content_type = "text/event-stream", body = JobEvent),
        (status = 400, description = "Not a job id", body = ErrorResponse),
        (status = 401, description = "Missing or wrong token", body = ErrorResponse),
        (status = 404, description = "No such job", body = ErrorResponse),
        (status = 429, description = "Too many streams open on this instance", body = ErrorResponse),
    ))]
pub async fn events(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let first = stored_status(&state, &caller, &id).await?;
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            "too many event streams are open; try again soon",
        )
    })?;
    let follow = Follow {
        state,
        job_id: id,
        first: Some(first),
        last: None,
        done: false,
        sequence: 0,
        caller,
        authorization: headers.get(header::AUTHORIZATION).cloned(),
        checked: Instant::now(),
        _permit: permit,
    };
    Ok(Sse::new(event_stream(follow)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// What an event stream remembers between reads.
struct Follow {
    state: ApiState,
    job_id: String,
    /// Read by the handler (which answered 404 without one); sent first.
    first: Option<JobStatus>,
    last: Option<Fingerprint>,
    done: bool,
    sequence: u64,
    /// Who opened the stream, and with what: asked again every [`RECHECK_CALLER`], so a
    /// revoked or expired token ends the stream.
    caller: Caller,
    authorization: Option<HeaderValue>,
    checked: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    /// Whether the token that opened the stream still names the same caller.
    fn still_allowed(&self) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(value) = &self.authorization {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        self.state.auth.caller(&headers).is_ok_and(|now| now == self.caller)
    }
}

/// The parts of a status whose change is worth an event (not heartbeats).
#[derive(PartialEq)]
struct Fingerprint {
    state: JobState,
    stage: crate::domain::status::Stage,
    progress_tenths: i64,
    attempt: u32,
    error: Option<String>,
    manifest_key: Option<String>,
}

impl Fingerprint {
    fn of(status: &JobStatus) -> Self {
        Fingerprint {
            state: status.state,
            stage: status.stage,
            progress_tenths: (status.progress * 10.0).round() as i64,
            attempt: status.attempt,
            error: status.error.as_ref().map(|e| e.code.clone()),
            manifest_key: status.manifest_key.clone(),
        }
    }
}

fn event_stream(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(follow, |mut follow| async move {
        if follow.done {
            return None;
        }
        loop {
            let status = match follow.first.take() {
                Some(status) => status,
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(EVENTS_POLL) => {}
                        () = follow.state.shutdown.cancelled() => return None,
                    }
                    if follow.checked.elapsed() >= RECHECK_CALLER {
                        follow.checked = Instant::now();
                        if !follow.still_allowed() {
                            tracing::info!(job_id = %follow.job_id, "An event stream's token is no longer valid; closing it.");
                            follow.done = true;
                            let event = Event::default().event("unauthorized").data("the token is no longer valid");
                            return Some((Ok(event), follow));
                        }
                    }
                    match follow.state.store.read(&follow.job_id).await {
                        Ok(Some(status)) => status,
                        Ok(None) => {
                            // Status documents are never deleted by the system; say so and end.
                            follow.done = true;
                            let event =
                                Event::default().event("gone").data(format!("job {} no longer exists", follow.job_id));
                            return Some((Ok(event), follow));
                        }
                        Err(err) => {
                            tracing::warn!(job_id = %follow.job_id, error = %err, "Reading a followed job failed; retrying.");
                            continue;
                        }
                    }
                }
            };
            let fingerprint = Fingerprint::of(&status);
            if follow.last.as_ref() == Some(&fingerprint) {
                continue;
            }
            let terminal = status.state.is_terminal();
            let view = match job_view(&follow.state, status).await {
                Ok(view) => view,
                Err(err) => {
                    tracing::warn!(job_id = %follow.job_id, error = %err, "Describing a followed job failed; retrying.");
                    continue;
                }
            };
            follow.last = Some(fingerprint);
            follow.done = terminal;
            follow.sequence += 1;
            let event = match Event::default().event("status").id(follow.sequence.to_string()).json_data(&view) {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(job_id = %follow.job_id, error = %err, "Encoding an event failed.");
                    continue;
                }
            };
            return Some((Ok(event), follow));
        }
    })
}
