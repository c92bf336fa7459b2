//! A job's delivery record (a document of the job ledger, [`DocKind::Deliveries`]): the
//! delivery attempts of its webhooks and the endpoints that answered 410 Gone for it. It
//! expires with the job's record (`MEDIA_JOB_RETENTION` after its last attempt).
//!
//! Each attempt says whose endpoint it went to ([`Audience`]). `GET /v1/jobs/{id}` shows the
//! job's submitter only the attempts to the job's own `notify` URL ([`Deliveries::of_job`]):
//! the deployment's `MEDIA_WEBHOOK_URLS` often carry a credential in their path (chat and
//! automation hooks), and only operators see them (`media-worker deliveries`, the logs).
//!
//! Several deliveries of one job may finish at once (different events, different endpoints,
//! different workers), so the document is changed by compare-and-swap like a job status: a
//! lost race re-reads and applies its change again, and no attempt's record is lost. It is
//! never the job's status: nothing here changes the job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::event::EventType;
use crate::ledger::{DocKind, Ledger};

/// The most attempts kept per job: the latest ones.
const MAX_ATTEMPTS_KEPT: usize = 100;
const MAX_CONFLICTS: u32 = 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deliveries {
    /// Endpoints (as shown in `attempts`) that answered 410 Gone: they get nothing more
    /// about this job.
    #[serde(default)]
    pub stopped: Vec<String>,
    /// The latest delivery attempts, oldest first.
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
}

impl Deliveries {
    /// What the job's submitter may see: the attempts to the job's own endpoint, and whether
    /// that endpoint stopped. `job_url` is the job's `notify` URL, if it has one.
    pub fn of_job(&self, job_url: Option<&str>) -> Deliveries {
        let Some(label) = job_url.map(endpoint_label) else { return Deliveries::default() };
        Deliveries {
            stopped: self.stopped.iter().filter(|e| **e == label).cloned().collect(),
            attempts: self
                .attempts
                .iter()
                .filter(|a| a.audience == Audience::Job && a.endpoint == label)
                .cloned()
                .collect(),
        }
    }
}

/// Whose endpoint a delivery went to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The job's own `notify` URL, which its submitter gave.
    Job,
    /// One of the deployment's `MEDIA_WEBHOOK_URLS`: for operators only. Records that predate
    /// this field read as this, so nothing old is shown to a job's submitter.
    #[default]
    Deployment,
}

/// One webhook request and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    pub event_id: String,
    pub event_type: EventType,
    /// The endpoint, without its query string (which may hold a token).
    pub endpoint: String,
    /// Whose endpoint it is.
    #[serde(default)]
    pub audience: Audience,
    /// 1 for the first try of this event at this endpoint.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The HTTP status of the answer, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `delivered`, `retrying`, `failed` (no attempts left), `gone` (410: stopped), or
    /// `refused` (the address is not allowed).
    pub outcome: String,
    /// Why, when it did not succeed (`timeout`, `connection failed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt is due, for `retrying`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The endpoint as recorded: scheme, host, port and path.
pub fn endpoint_label(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "(invalid URL)".into(),
    }
}

pub async fn read(ledger: &dyn Ledger, job_id: &str) -> anyhow::Result<Deliveries> {
    match ledger.doc_get(DocKind::Deliveries, job_id).await? {
        Some(doc) => Ok(serde_json::from_slice(&doc.body).unwrap_or_default()),
        None => Ok(Deliveries::default()),
    }
}

/// Adds an attempt (and, for 410, stops its endpoint), by compare-and-swap; the record is kept
/// `keep` (the job's retention) after its last attempt.
pub async fn append(
    ledger: &dyn Ledger,
    job_id: &str,
    attempt: DeliveryAttempt,
    keep: std::time::Duration,
) -> anyhow::Result<()> {
    for conflicts in 0..MAX_CONFLICTS {
        let current = ledger.doc_get(DocKind::Deliveries, job_id).await?;
        let mut doc: Deliveries =
            current.as_ref().and_then(|c| serde_json::from_slice(&c.body).ok()).unwrap_or_default();
        // A redelivered queue message may record the same attempt twice: once is enough.
        if doc
            .attempts
            .iter()
            .any(|a| a.event_id == attempt.event_id && a.endpoint == attempt.endpoint && a.attempt == attempt.attempt)
        {
            return Ok(());
        }
        if attempt.outcome == "gone" && !doc.stopped.contains(&attempt.endpoint) {
            doc.stopped.push(attempt.endpoint.clone());
        }
        doc.attempts.push(attempt.clone());
        if doc.attempts.len() > MAX_ATTEMPTS_KEPT {
            let excess = doc.attempts.len() - MAX_ATTEMPTS_KEPT;
            doc.attempts.drain(..excess);
        }
        let bytes = serde_json::to_vec(&doc)?;
        let expires = Utc::now() + chrono::Duration::from_std(keep)?;
        let version = current.map(|c| c.version);
        if ledger.doc_put(DocKind::Deliveries, job_id, &bytes, version, Some(expires)).await? {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(conflicts) * 5)).await;
    }
    anyhow::bail!("job {job_id}: the delivery record kept changing ({MAX_CONFLICTS} lost races)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    #[test]
    fn labels_drop_the_query() {
        assert_eq!(endpoint_label("https://a.example/h?token=s3cret#x"), "https://a.example/h");
        assert_eq!(endpoint_label("http://127.0.0.1:9/x"), "http://127.0.0.1:9/x");
    }

    #[test]
    fn a_job_sees_only_its_own_endpoint() {
        let at = Utc::now();
        let attempt = |endpoint: &str, audience| DeliveryAttempt {
            event_id: "msg_1".into(),
            event_type: EventType::Completed,
            endpoint: endpoint.into(),
            audience,
            attempt: 1,
            at,
            status: Some(410),
            outcome: "gone".into(),
            error: None,
            next_attempt_at: None,
        };
        let operator = "https://hooks.example/services/T0/B0/s3cret";
        let mine = "https://app.example/hook";
        let doc = Deliveries {
            stopped: vec![operator.into(), mine.into()],
            attempts: vec![
                attempt(operator, Audience::Deployment),
                attempt(mine, Audience::Job),
                // The same address as an operator's: still the operator's attempt.
                attempt(mine, Audience::Deployment),
            ],
        };
        let shown = doc.of_job(Some("https://app.example/hook?token=t"));
        assert_eq!(shown.stopped, vec![mine.to_string()]);
        assert_eq!(shown.attempts, vec![attempt(mine, Audience::Job)]);
        assert_eq!(doc.of_job(None), Deliveries::default(), "no notify URL: nothing to show");
        let old: DeliveryAttempt = serde_json::from_value(serde_json::json!({
            "event_id": "m", "event_type": "job.completed", "endpoint": mine, "attempt": 1,
            "at": "2026-01-01T00:00:00Z", "outcome": "delivered"
        }))
        .unwrap();
        assert_eq!(old.audience, Audience::Deployment, "records without an audience are the operator's");
    }

    #[tokio::test]
    async fn concurrent_appends_are_all_kept_and_gone_stops() {
        let dir = tempfile::tempdir().unwrap();
        let storage: std::sync::Arc<dyn Ledger> =
            std::sync::Arc::new(crate::ledger::sqlite::SqliteLedger::open(&dir.path().join("ledger.db")).unwrap());
        let attempt = |n: u32, outcome: &str| DeliveryAttempt {
            event_id: format!("msg_{n}"),
            event_type: EventType::Queued,
            endpoint: "https://a.example/h".into(),
            audience: Audience::Deployment,
            attempt: 1,
            at: Utc::now(),
            status: Some(500),
            outcome: outcome.into(),
            error: None,
            next_attempt_at: None,
        };
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let storage = storage.clone();
                tokio::spawn(async move { append(storage.as_ref(), "job-1", attempt(n, "retrying"), DAY).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        append(storage.as_ref(), "job-1", attempt(3, "retrying"), DAY).await.unwrap();
        append(storage.as_ref(), "job-1", attempt(9, "gone"), DAY).await.unwrap();
        let doc = read(storage.as_ref(), "job-1").await.unwrap();
        assert_eq!(doc.attempts.len(), 9, "every attempt once");
        assert_eq!(doc.stopped, vec!["https://a.example/h".to_string()]);
    }
}
