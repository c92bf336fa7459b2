//! Readiness: whether the object store, the ready queue and the job ledger answer. Shared by
//! the API's `/readyz` and the worker's, so a load balancer or ECS health check asks both the
//! same way.
//!
//! `/readyz` takes no token, so anyone who reaches it can call it as often as they like: its
//! answer is shared for [`FRESH_FOR`] ([`Readiness::cached`]), and calls made while a check is
//! in flight wait for that one, so the dependencies see at most one check a second whatever
//! the rate of calls.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::keys::KeyLayout;
use crate::ledger::Ledger;
use crate::queue::Queue;
use crate::storage::ObjectStore;

/// What readiness asks.
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    pub storage: &'a dyn ObjectStore,
    pub ready: &'a dyn Queue,
    pub ledger: &'a dyn Ledger,
    pub layout: &'a KeyLayout,
}

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
    /// `ok` or `unavailable`: the job ledger (DynamoDB, or the local SQLite file).
    pub ledger: String,
}

/// How long one check's answer is shared.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// The last answer and when it was made; the lock is held while a check runs.
#[derive(Default)]
pub struct Cached(tokio::sync::Mutex<Option<(Instant, Readiness)>>);

impl Readiness {
    /// The answer of a check at most [`FRESH_FOR`] old, or of a new one (one at a time).
    pub async fn cached(cache: &Cached, deps: Deps<'_>) -> Readiness {
        let mut last = cache.0.lock().await;
        if let Some((at, readiness)) = last.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return readiness.clone();
        }
        let readiness = check(deps).await;
        *last = Some((Instant::now(), readiness.clone()));
        readiness
    }
}

/// Whether `call` answers within [`CHECK_TIMEOUT`]; a failure is logged as `what`'s.
async fn answers<T, E: std::fmt::Display>(what: &str, call: impl Future<Output = Result<T, E>>) -> bool {
    match tokio::time::timeout(CHECK_TIMEOUT, call).await {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            tracing::warn!(dependency = what, error = %err, "Readiness: a dependency is unavailable.");
            false
        }
        Err(_) => {
            tracing::warn!(dependency = what, timeout = ?CHECK_TIMEOUT, "Readiness: a dependency did not answer in time.");
            false
        }
    }
}

/// HEADs a key that need not exist (a missing object is a fine answer), reads the ready
/// queue's counts and pings the ledger, all at once.
pub async fn check(deps: Deps<'_>) -> Readiness {
    let probe_key = format!("{}readiness-probe", deps.layout.output_prefix());
    let (storage_ok, queue_ok, ledger_ok) = tokio::join!(
        answers("storage", deps.storage.head(&probe_key)),
        answers(deps.ready.name(), async { deps.ready.counts().await.map_err(|e| format!("{e:#}")) }),
        answers(deps.ledger.name(), deps.ledger.ping()),
    );
    let word = |ok: bool| if ok { "ok" } else { "unavailable" }.to_string();
    Readiness {
        ready: storage_ok && queue_ok && ledger_ok,
        storage: word(storage_ok),
        queue: word(queue_ok),
        ledger: word(ledger_ok),
    }
}
