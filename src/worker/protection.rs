//! ECS task scale-in protection: while this worker runs at least one job, its task asks the ECS
//! agent not to be chosen when the service scales in, so autoscaling never stops a transcode
//! half-way. The agent's endpoint is `PUT $ECS_AGENT_URI/task-protection/v1/state`; ECS sets
//! `ECS_AGENT_URI` in every task, so outside ECS (or without the variable) this does nothing.
//!
//! Jobs only say when they start and end ([`TaskProtection::job_started`] returns a guard). One
//! background task turns the resulting "busy or idle" into agent calls, one at a time, so an
//! enable and a disable can never overtake each other. While busy, the protection is renewed
//! before it expires (a worker kept busy back to back for longer than the expiry stays
//! protected). A failed call is logged and retried; it never fails a job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The variable ECS sets in each container of a task.
pub const AGENT_URI_VAR: &str = "ECS_AGENT_URI";
/// ECS accepts protection for at most 48 hours.
const MAX_EXPIRY_MINUTES: u64 = 2880;
/// Added to the job timeout, so a job that runs to its limit is still protected while it ends.
const EXPIRY_MARGIN_MINUTES: u64 = 10;
/// Each agent call gets this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A failed call is tried again after this long, while the wanted state still differs.
const RETRY_DELAY: Duration = Duration::from_secs(5);

/// The protection to ask for: the job timeout plus a margin, in whole minutes, within ECS's
/// limits.
pub fn expiry_minutes(job_timeout: Duration) -> u64 {
    (job_timeout.as_secs().div_ceil(60) + EXPIRY_MARGIN_MINUTES).clamp(1, MAX_EXPIRY_MINUTES)
}

/// Counts running jobs and keeps the agent told; a no-op when not on ECS.
#[derive(Clone, Default)]
pub struct TaskProtection {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    endpoint: Uri,
    expires_in_minutes: u64,
    running: Mutex<usize>,
    /// Whether the task should be protected: true while `running > 0`.
    wanted: watch::Sender<bool>,
    stop: CancellationToken,
    agent: Mutex<Option<JoinHandle<()>>>,
}

/// Held by a running job; its drop is the job's end.
pub struct RunningGuard {
    shared: Option<Arc<Shared>>,
}

impl TaskProtection {
    /// Protection through the agent at `ECS_AGENT_URI` when it is set, else none.
    pub fn from_env(job_timeout: Duration) -> Self {
        match std::env::var(AGENT_URI_VAR).ok().filter(|v| !v.trim().is_empty()) {
            None => Self::default(),
            Some(uri) => Self::new(&uri, expiry_minutes(job_timeout)),
        }
    }

    /// Protection through the agent at `agent_uri`; an unusable URI is logged and disables it.
    pub fn new(agent_uri: &str, expires_in_minutes: u64) -> Self {
        let endpoint = format!("{}/task-protection/v1/state", agent_uri.trim_end_matches('/'));
        let endpoint = match endpoint.parse::<Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => uri,
            _ => {
                tracing::warn!(
                    var = AGENT_URI_VAR,
                    value = agent_uri,
                    "Not an http:// URL; task scale-in protection is off."
                );
                return Self::default();
            }
        };
        let (wanted, _) = watch::channel(false);
        Self {
            shared: Some(Arc::new(Shared {
                endpoint,
                expires_in_minutes,
                running: Mutex::new(0),
                wanted,
                stop: CancellationToken::new(),
                agent: Mutex::new(None),
            })),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Starts talking to the agent (once; later calls do nothing). Needs a Tokio runtime.
    pub fn start(&self) {
        let Some(shared) = &self.shared else { return };
        let Ok(mut slot) = shared.agent.lock() else { return };
        if slot.is_none() {
            tracing::info!(
                endpoint = %shared.endpoint,
                expires_in_minutes = shared.expires_in_minutes,
                "Task scale-in protection is on while jobs run."
            );
            *slot = Some(tokio::spawn(agent_loop(shared.clone())));
        }
    }

    /// Records a job start; the returned guard records its end when dropped.
    pub fn job_started(&self) -> RunningGuard {
        if let Some(shared) = &self.shared {
            shared.adjust(true);
        }
        RunningGuard { shared: self.shared.clone() }
    }

    /// Stops the agent task, after releasing the protection if it is still held.
    pub async fn stop(&self) {
        let Some(shared) = &self.shared else { return };
        shared.stop.cancel();
        let handle = shared.agent.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle
            && tokio::time::timeout(CALL_TIMEOUT * 2, handle).await.is_err()
        {
            tracing::warn!("Releasing task scale-in protection took too long.");
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.adjust(false);
        }
    }
}

impl Shared {
    fn adjust(&self, started: bool) {
        let Ok(mut running) = self.running.lock() else { return };
        *running = if started { *running + 1 } else { running.saturating_sub(1) };
        let busy = *running > 0;
        self.wanted.send_if_modified(|wanted| std::mem::replace(wanted, busy) != busy);
    }
}

/// Applies the wanted state, renewing an enabled protection at half its expiry, until stopped;
/// then releases a held protection.
async fn agent_loop(shared: Arc<Shared>) {
    let mut wanted = shared.wanted.subscribe();
    let renew_after = Duration::from_secs(shared.expires_in_minutes * 60 / 2);
    // ECS starts tasks unprotected.
    let mut applied = false;
    let mut enabled_at: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        let want = *wanted.borrow_and_update();
        let renew_due = want && applied && enabled_at.is_some_and(|at| at.elapsed() >= renew_after);
        let retry_due = retry_at.is_none_or(|at| Instant::now() >= at);
        if (want != applied || renew_due) && retry_due {
            match set_protection(&shared, want).await {
                Ok(()) => {
                    applied = want;
                    enabled_at = want.then(Instant::now);
                    retry_at = None;
                }
                Err(err) => {
                    tracing::warn!(
                        protect = want,
                        error = format!("{err:#}"),
                        "Could not update task scale-in protection; will retry."
                    );
                    retry_at = Some(Instant::now() + RETRY_DELAY);
                }
            }
        }
        let wake_at = match (retry_at, enabled_at) {
            (Some(at), _) => Some(at),
            (None, Some(at)) if applied => Some(at + renew_after),
            _ => None,
        };
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    break;
                }
                // A change deserves an immediate try, even right after a failure.
                retry_at = None;
            }
            () = sleep => {}
            () = shared.stop.cancelled() => break,
        }
    }
    if applied && let Err(err) = set_protection(&shared, false).await {
        tracing::warn!(error = format!("{err:#}"), "Could not release task scale-in protection on shutdown.");
    }
}

async fn set_protection(shared: &Shared, protect: bool) -> anyhow::Result<()> {
    let body = if protect {
        serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": shared.expires_in_minutes})
    } else {
        serde_json::json!({"ProtectionEnabled": false})
    };
    let (status, answer) = tokio::time::timeout(CALL_TIMEOUT, put_json(&shared.endpoint, body.to_string()))
        .await
        .map_err(|_| anyhow::anyhow!("the ECS agent did not answer within {CALL_TIMEOUT:?}"))??;
    // The agent reports some failures with a 200 and a `failure` or `error` member.
    let failure = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("failure").or_else(|| v.get("error")).filter(|f| !f.is_null()).cloned());
    if !status.is_success() || failure.is_some() {
        anyhow::bail!(
            "the ECS agent answered {status}: {}",
            String::from_utf8_lossy(&answer).chars().take(500).collect::<String>()
        );
    }
    tracing::info!(protect, "Task scale-in protection updated.");
    Ok(())
}

/// One HTTP/1.1 PUT of a JSON body; returns the status and (at most 64 KiB of) the body.
async fn put_json(endpoint: &Uri, body: String) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let host = endpoint.host().unwrap_or_default();
    let port = endpoint.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let path = endpoint.path_and_query().map_or("/", |p| p.as_str());
    let authority = endpoint.authority().map(|a| a.as_str()).unwrap_or(host);
    let request = hyper::Request::put(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = http_body_util::Limited::new(response.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the agent's answer: {e}"))?
        .to_bytes();
    drop(sender);
    connection.abort();
    Ok((status, answer))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;

    /// What the fake agent received: method, path, JSON body.
    type Call = (String, String, serde_json::Value);

    /// A tiny HTTP server on 127.0.0.1 standing in for the ECS agent; answers each request
    /// with `status` and reports it.
    async fn fake_agent(status: u16) -> (String, mpsc::UnboundedReceiver<Call>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut buf = [0u8; 4096];
                    let (head, body) = loop {
                        let n = socket.read(&mut buf).await.unwrap();
                        assert!(n > 0, "connection closed before a full request");
                        data.extend_from_slice(&buf[..n]);
                        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&data[..end]).to_string();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if data.len() >= end + 4 + length {
                            break (head, data[end + 4..end + 4 + length].to_vec());
                        }
                    };
                    let mut words = head.split_whitespace();
                    let (method, path) = (words.next().unwrap().to_string(), words.next().unwrap().to_string());
                    tx.send((method, path, serde_json::from_slice(&body).unwrap())).unwrap();
                    let answer = r#"{"protection":{}}"#;
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    socket.write_all(response.as_bytes()).await.unwrap();
                });
            }
        });
        (format!("http://{addr}/api/task-1"), rx)
    }

    async fn next_call(rx: &mut mpsc::UnboundedReceiver<Call>) -> Call {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an agent call").expect("open")
    }

    async fn no_call(rx: &mut mpsc::UnboundedReceiver<Call>) {
        let extra = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(extra.is_err(), "unexpected agent call: {extra:?}");
    }

    #[test]
    fn expiry_is_the_job_timeout_plus_a_margin_within_ecs_limits() {
        assert_eq!(expiry_minutes(Duration::from_secs(7200)), 130);
        assert_eq!(expiry_minutes(Duration::from_secs(61)), 12);
        assert_eq!(expiry_minutes(Duration::from_secs(0)), 10);
        assert_eq!(expiry_minutes(Duration::from_secs(100 * 3600)), 2880);
    }

    #[tokio::test]
    async fn protects_from_idle_to_busy_and_releases_when_idle_again() {
        let (uri, mut calls) = fake_agent(200).await;
        let protection = TaskProtection::new(&uri, 130);
        protection.start();
        no_call(&mut calls).await;

        let first = protection.job_started();
        let (method, path, body) = next_call(&mut calls).await;
        assert_eq!((method.as_str(), path.as_str()), ("PUT", "/api/task-1/task-protection/v1/state"));
        assert_eq!(body, serde_json::json!({"ProtectionEnabled": true, "ExpiresInMinutes": 130}));

        // A second job while busy, and the first ending while the second runs: still busy.
        let second = protection.job_started();
        drop(first);
        no_call(&mut calls).await;

        drop(second);
        let (_, _, body) = next_call(&mut calls).await;
        assert_eq!(body, serde_json::json!({"ProtectionEnabled": false}));

        // Busy again, then stopping releases it.
        let third = protection.job_started();
        assert_eq!(next_call(&mut calls).await.2["ProtectionEnabled"], true);
        protection.stop().await;
        assert_eq!(next_call(&mut calls).await.2["ProtectionEnabled"], false);
        drop(third);
        no_call(&mut calls).await;
    }

    #[tokio::test]
    async fn agent_failures_are_retried_and_never_panic() {
        let (uri, mut calls) = fake_agent(500).await;
        let protection = TaskProtection::new(&uri, 30);
        protection.start();
        let guard = protection.job_started();
        assert_eq!(next_call(&mut calls).await.2["ProtectionEnabled"], true);
        // Going idle is applied at once, not after the retry delay; the state never was enabled.
        drop(guard);
        no_call(&mut calls).await;
        protection.stop().await;
    }

    #[tokio::test]
    async fn nothing_happens_without_an_agent() {
        let protection = TaskProtection::new("not a url", 30);
        assert!(!protection.is_enabled());
        protection.start();
        drop(protection.job_started());
        protection.stop().await;
        assert!(!TaskProtection::default().is_enabled());
    }
}
