//! Readiness: whether the object store and the ready queue answer. Shared by the API's
//! `/readyz` and the worker's, so a load balancer or ECS health check asks both the same way.
//!
//! `/readyz` takes no token, so anyone who reaches it can call it as often as they like: its
//! answer is shared for [`FRESH_FOR`] ([`Readiness::cached`]), and calls made while a check is
//! in flight wait for that one, so the store and the queue see at most one check a second
//! whatever the rate of calls.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::keys::status_key;
use crate::queue::Queue;
use crate::storage::Storage;

/// Each dependency gets this long; a store that takes longer is as good as down for a probe.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/readyz` answers. Details of failures go to the log, not to this unauthenticated
/// document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok` or `unavailable`.
    pub storage: String,
    /// `ok` or `unavailable`.
    pub queue: String,
}

/// How long one check's answer is shared.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last answer and when it was made; the lock is held while a check runs.
#[derive(Default)]
pub struct Cached(tokio::sync::Mutex<Option<(Instant, Readiness)>>);

impl Readiness {
    /// The answer of a check at most [`FRESH_FOR`] old, or of a new one (one at a time).
    pub async fn cached(cache: &Cached, storage: &dyn Storage, ready: &dyn Queue) -> Readiness {
        let mut last = cache.0.lock().await;
        if let Some((at, readiness)) = last.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return readiness.clone();
        }
        let readiness = check(storage, ready).await;
        *last = Some((Instant::now(), readiness.clone()));
        readiness
    }
}

/// HEADs a status key that need not exist (a missing object is a fine answer) and reads the
/// ready queue's counts, both at once.
pub async fn check(storage: &dyn Storage, ready: &dyn Queue) -> Readiness {
    let probe_key = status_key("readiness-probe");
    let (storage_ok, queue_ok) = tokio::join!(
        async {
            match tokio::time::timeout(CHECK_TIMEOUT, storage.head(&probe_key)).await {
                Ok(Ok(_)) => true,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "Readiness: storage is unavailable.");
                    false
                }
                Err(_) => {
                    tracing::warn!(timeout = ?CHECK_TIMEOUT, "Readiness: storage did not answer in time.");
                    false
                }
            }
        },
        async {
            match tokio::time::timeout(CHECK_TIMEOUT, ready.counts()).await {
                Ok(Ok(_)) => true,
                Ok(Err(err)) => {
                    tracing::warn!(
                        queue = ready.name(),
                        error = format!("{err:#}"),
                        "Readiness: the queue is unavailable."
                    );
                    false
                }
                Err(_) => {
                    tracing::warn!(queue = ready.name(), timeout = ?CHECK_TIMEOUT, "Readiness: the queue did not answer in time.");
                    false
                }
            }
        }
    );
    let word = |ok: bool| if ok { "ok" } else { "unavailable" }.to_string();
    Readiness { ready: storage_ok && queue_ok, storage: word(storage_ok), queue: word(queue_ok) }
}
