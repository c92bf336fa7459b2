//! Sources named by URL (`input.url` in `POST /v1/jobs`): a worker, never the API, fetches them
//! through the SSRF guard of [`crate::outbound`] into the job's imports folder, so the source is
//! kept like any upload, then the job goes on as for an upload.
//!
//! Failures are typed: `fetch_failed` may succeed later and is retried (5xx, 408, 429, timeouts,
//! a silent server, resets); `fetch_refused` cannot (4xx, a refused address or redirect, more
//! than [`MAX_REDIRECTS`](crate::outbound::MAX_REDIRECTS) redirects, a body above
//! `MEDIA_MAX_SOURCE_SIZE`). A refusal's public detail says which, without internals.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use super::{JobError, StepCx};
use crate::domain::error_code::ErrorCode;
use crate::domain::job::{ImportSource, JobSpec};
use crate::domain::status::Stage;
use crate::jobs::Attempt;
use crate::outbound::{SafeClient, SendError};
use crate::storage::ObjectInfo;

/// Stored when the server names no usable content type.
const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

/// Fetches the job's source into `path` and stores it at the job's source key. `None` when an
/// earlier attempt stored it already: it is then read from storage like any source.
pub(super) async fn fetch_source(
    cx: &StepCx<'_>,
    job: &JobSpec,
    import: &ImportSource,
    tracker: &Attempt,
    path: &Path,
) -> Result<Option<ObjectInfo>, JobError> {
    if cx.storage.head(&job.source_key).await?.is_some() {
        return Ok(None);
    }
    tracker.stage(Stage::Importing).await?;
    let settings = cx.config.import;
    let client = settings
        .guard()
        .client(settings.limits())
        .map_err(|e| JobError::retryable(ErrorCode::FetchFailed, format!("building the HTTP client: {e:#}")))?;
    // One deadline for the whole fetch, redirects included (reqwest's applies per request).
    let fetch = fetch_to_file(&client, &import.url, path, cx.config.limits.max_size, settings.idle_timeout);
    let fetched = match tokio::time::timeout(settings.total_timeout, fetch).await {
        Ok(fetched) => fetched,
        Err(_) => Err(failed("the fetch exceeded MEDIA_IMPORT_TIMEOUT".into())),
    };
    let content_type = fetched.map_err(|err| {
        tracing::warn!(url = %without_query(&import.url), error = %err, "The source URL could not be imported.");
        err
    })?;
    let object = cx.storage.put_file(&job.source_key, path, &content_type).await?;
    tracing::info!(url = %without_query(&import.url), key = %job.source_key, size = object.size, "Source imported.");
    Ok(Some(object))
}

/// Streams the answer to `url` into `path`, refusing more than `cap` bytes and a server silent
/// for `idle`; returns the content type to store it with.
async fn fetch_to_file(
    client: &SafeClient,
    url: &str,
    path: &Path,
    cap: u64,
    idle: Duration,
) -> Result<String, JobError> {
    let (_, mut response) = client.get(url).await.map_err(send_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(status));
    }
    let announced = response.content_length();
    if announced.is_some_and(|len| len > cap) {
        return Err(too_large(cap));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
        .filter(|v| v.len() <= 255 && v.split_once('/').is_some_and(|(t, s)| !t.is_empty() && !s.is_empty()))
        .unwrap_or_else(|| FALLBACK_CONTENT_TYPE.to_string());

    let file = tokio::fs::File::create(path).await.map_err(|e| JobError::scratch("creating the import file", &e))?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut received = 0u64;
    loop {
        let chunk = match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => return Err(failed(format!("the server sent nothing for {idle:?}"))),
            Ok(Err(err)) if err.is_timeout() => return Err(failed("the fetch exceeded MEDIA_IMPORT_TIMEOUT".into())),
            Ok(Err(err)) => return Err(failed(format!("the body broke off after {received} bytes: {err}"))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > cap {
            return Err(too_large(cap));
        }
        file.write_all(&chunk).await.map_err(|e| JobError::scratch("writing the import file", &e))?;
    }
    file.flush().await.map_err(|e| JobError::scratch("writing the import file", &e))?;
    if announced.is_some_and(|len| len != received) {
        return Err(failed(format!("the body ended after {received} of {} bytes", announced.unwrap_or_default())));
    }
    Ok(content_type)
}

fn failed(message: String) -> JobError {
    JobError::retryable(ErrorCode::FetchFailed, message)
}

fn refused(detail: impl Into<String>) -> JobError {
    let detail = detail.into();
    JobError::permanent_naming(ErrorCode::FetchRefused, detail.clone(), detail)
}

/// A refused address: the kind goes to the log, the public detail does not name it.
fn refused_address(refusal: &crate::outbound::Refusal) -> JobError {
    JobError::permanent_naming(ErrorCode::FetchRefused, refusal.public(), refusal.to_string())
}

fn too_large(cap: u64) -> JobError {
    refused(format!("the file is larger than {cap} bytes, the most this deployment accepts"))
}

/// 5xx and the client errors that mean "later" are retried; any other answer is final.
fn status_error(status: StatusCode) -> JobError {
    let later = status.is_server_error()
        || matches!(status, StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS);
    if later {
        failed(format!("the server answered {status}"))
    } else {
        refused(format!("the server answered {status}"))
    }
}

fn send_error(err: SendError) -> JobError {
    match err {
        SendError::Refused(refusal) => refused_address(&refusal),
        SendError::Redirects => refused(err.to_string()),
        SendError::Timeout => failed("the server did not answer in time".into()),
        SendError::Connect => failed("the connection failed".into()),
        SendError::Other => failed("the request failed".into()),
    }
}

/// A URL for the log: its query may hold a signature.
fn without_query(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_retry_or_refusal() {
        let table = [
            (StatusCode::NOT_FOUND, "fetch_refused"),
            (StatusCode::FORBIDDEN, "fetch_refused"),
            (StatusCode::GONE, "fetch_refused"),
            (StatusCode::NOT_MODIFIED, "fetch_refused"),
            (StatusCode::REQUEST_TIMEOUT, "fetch_failed"),
            (StatusCode::TOO_MANY_REQUESTS, "fetch_failed"),
            (StatusCode::INTERNAL_SERVER_ERROR, "fetch_failed"),
            (StatusCode::BAD_GATEWAY, "fetch_failed"),
            (StatusCode::SERVICE_UNAVAILABLE, "fetch_failed"),
        ];
        for (status, code) in table {
            let info = status_error(status).info();
            assert_eq!(info.code, code, "{status}");
            assert_eq!(info.retryable, code == "fetch_failed", "{status}");
        }
        let info = status_error(StatusCode::NOT_FOUND).info();
        assert_eq!(info.message, "the source URL was refused: the server answered 404 Not Found");
    }

    #[test]
    fn logged_urls_lose_their_query() {
        assert_eq!(without_query("https://cdn.example/a/b.mp4?X-Amz-Signature=abc#t=1"), "https://cdn.example/a/b.mp4");
        assert_eq!(without_query("nonsense"), "(not a URL)");
    }
}
