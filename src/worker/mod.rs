//! The worker: takes jobs from the ready queue whenever it has room for one, moves each to the
//! in-processing ledger, runs it, and sweeps the ledger for jobs of dead workers.
//!
//! Two limits shape the work: `MEDIA_CONCURRENCY` transcode slots (ffmpeg processes at once)
//! and, beyond them, `MEDIA_PREFETCH` more jobs in flight, which download, probe and upload
//! while the others transcode, so the CPUs never wait on storage. The intake loop waits for a
//! free job permit and then long-polls, so a message is taken as soon as it arrives and a permit
//! freed by a finished job is refilled at once; the cron schedule wakes the loop after a failed
//! receive and drives the reaper.
//!
//! The steps are public ([`Worker::poll_once`], [`Worker::reap_once`]) so tests can drive the
//! worker one step at a time; [`Worker::run`] runs the intake loop and the schedules, handles
//! shutdown, and serves health and metrics ([`metrics`]) and ECS scale-in protection
//! ([`protection`]) while it runs.

mod batch;
mod captions;
mod cmaf;
mod commit;
mod dead_letters;
mod error;
mod execute;
mod hls;
mod import;
mod intake;
mod loudness;
mod metrics;
mod per_title;
mod permits;
pub mod protection;
mod qc;
mod quality;
mod reaper;
mod recaption;
mod run;
mod scratch;
mod segment;
mod settle;
mod source;
mod split;
mod transcode;
mod watermark;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::JobError;
pub use protection::TaskProtection;
pub use reaper::ReapOutcome;

use crate::backend::Backend;
use crate::config::Config;
use crate::jobs::JobStore;
use crate::queue::{MAX_WAIT, Queues};
use crate::storage::ObjectStore;

/// How often the ledger is swept of records past their retention (the local engine; DynamoDB's
/// TTL needs nothing).
const LEDGER_SWEEP: Duration = Duration::from_secs(60);

/// How [`Worker::run`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Until SIGTERM/SIGINT (the `shutdown` future).
    Daemon,
    /// Until the ready queue and the ledger are empty and no job is running, or `shutdown`.
    Drain,
}

/// Counters of what this worker did, for logs and the drain summary.
#[derive(Debug, Default)]
pub struct Counters {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub skipped: AtomicU64,
    /// Receive calls on the ready queue (long polls included): the cost of being idle.
    pub receives: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Attempts this worker started (won the start transition for and ran).
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
}

/// What an attempt's source and commit steps read: the settings and the object store, nothing
/// of the worker's loops, permits or queues, so those steps cannot reach past their part.
pub(crate) struct StepCx<'a> {
    pub config: &'a Config,
    pub storage: &'a dyn ObjectStore,
}

pub(crate) struct Inner {
    config: Config,
    storage: Arc<dyn ObjectStore>,
    /// The only way the worker changes a job's status.
    store: JobStore,
    queues: Queues,
    /// Deliveries of a ready message before the worker dead-letters it with a reason: the
    /// configured value, lowered to the ready queue's own redrive limit (read at start; SQS
    /// still delivers that receive and moves the message only at the next), so SQS never moves
    /// a message silently while a worker can say why.
    max_receives: std::sync::atomic::AtomicU32,
    /// Milliseconds since `started` at which the poll loop last finished a cycle: `/readyz`
    /// fails when this is too old (a receive or a status read that stopped answering).
    last_poll_ms: AtomicU64,
    started: std::time::Instant,
    /// When the dead-letter queue was last swept, in milliseconds since `started`.
    last_dead_letter_sweep_ms: AtomicU64,
    /// When the ledger was last swept of expired records, in milliseconds since `started`.
    last_ledger_sweep_ms: AtomicU64,
    /// One permit per job in flight (`concurrency + prefetch`); taken before a message is
    /// received, held until the job ends.
    permits: Arc<Semaphore>,
    /// One slot per ffmpeg allowed to run at once (`concurrency`); held only while transcoding.
    transcode_slots: Arc<Semaphore>,
    /// Told whenever a transcode slot is given back.
    slot_freed: Arc<tokio::sync::Notify>,
    /// Segments this worker has taken and not settled. While it holds any, it takes no
    /// message ahead of its free transcode slots (see [`batch`]).
    segments_in_hand: Arc<std::sync::atomic::AtomicUsize>,
    /// Woken by the poll schedule: the intake loop waits for it after a failed receive.
    wake: tokio::sync::Notify,
    /// Every running job, so shutdown can wait for them.
    jobs: TaskTracker,
    /// Cancelled first on shutdown: no more receiving.
    stop_receiving: CancellationToken,
    /// Cancelled when the grace period is over: running jobs stop and are requeued.
    stop_jobs: CancellationToken,
    /// Attempts running in this process, by (job id, attempt): the reaper never takes these for
    /// dead, even when a slow store delayed their heartbeat.
    running_here: std::sync::Mutex<std::collections::HashSet<(String, u32)>>,
    /// A poll still running when the next tick fires makes that tick do nothing.
    polling: tokio::sync::Mutex<()>,
    reaping: tokio::sync::Mutex<()>,
    counters: Counters,
    /// ECS scale-in protection while jobs run (a no-op outside ECS).
    protection: TaskProtection,
    /// Delivers webhooks from the notifications queue, in its own task, when configured.
    notifications: Option<Arc<crate::notify::deliver::Dispatcher>>,
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl Worker {
    pub fn new(config: Config, backend: Backend) -> Self {
        let permits = Arc::new(Semaphore::new(config.concurrency + config.prefetch));
        let transcode_slots = Arc::new(Semaphore::new(config.concurrency));
        let protection = TaskProtection::from_env(config.job_timeout);
        let max_receives = std::sync::atomic::AtomicU32::new(config.max_receives);
        let store = crate::notify::job_store(&config, &backend);
        let notifications = crate::notify::deliver::Dispatcher::for_worker(&config, &backend);
        Worker {
            inner: Arc::new(Inner {
                config,
                store,
                storage: backend.storage,
                queues: backend.queues,
                last_ledger_sweep_ms: AtomicU64::new(0),
                transcode_slots,
                slot_freed: Arc::default(),
                segments_in_hand: Arc::default(),
                wake: tokio::sync::Notify::new(),
                max_receives,
                last_poll_ms: AtomicU64::new(0),
                started: std::time::Instant::now(),
                last_dead_letter_sweep_ms: AtomicU64::new(0),
                permits,
                jobs: TaskTracker::new(),
                stop_receiving: CancellationToken::new(),
                stop_jobs: CancellationToken::new(),
                running_here: std::sync::Mutex::new(std::collections::HashSet::new()),
                polling: tokio::sync::Mutex::new(()),
                reaping: tokio::sync::Mutex::new(()),
                counters: Counters::default(),
                protection,
                notifications,
            }),
        }
    }

    pub fn summary(&self) -> Summary {
        let c = &self.inner.counters;
        Summary {
            started: c.started.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
        }
    }

    /// Jobs running in this process.
    pub fn running(&self) -> usize {
        self.inner.jobs.len()
    }

    /// Receives while permits are free and messages keep coming, starting a job per message.
    /// Returns how many messages were received. The first receive long-polls; later ones only
    /// take what is already waiting, so a backlog drains without waiting for the next tick.
    pub async fn poll_once(&self) -> anyhow::Result<usize> {
        let Ok(_guard) = self.inner.polling.try_lock() else { return Ok(0) };
        let result = self.poll_cycle().await;
        if result.is_ok() {
            self.inner.mark_poll_cycle();
        }
        result
    }

    async fn poll_cycle(&self) -> anyhow::Result<usize> {
        let inner = &self.inner;
        let mut received_total = 0;
        let mut wait = MAX_WAIT;
        loop {
            if inner.stop_receiving.is_cancelled() {
                break;
            }
            let free = batch::receive_limit(
                inner.permits.available_permits(),
                inner.transcode_slots.available_permits(),
                inner.segments_in_hand.load(Ordering::Relaxed),
            );
            if free == 0 {
                break;
            }
            let Ok(mut permits) = inner.permits.clone().try_acquire_many_owned(free as u32) else { break };
            let receive = inner.queues.ready.receive(free, wait, inner.config.visibility_timeout);
            inner.counters.receives.fetch_add(1, Ordering::Relaxed);
            let messages = tokio::select! {
                received = receive => received?,
                () = inner.stop_receiving.cancelled() => break,
            };
            if messages.is_empty() {
                break;
            }
            received_total += messages.len();
            for message in messages {
                let Some(permit) = permits.split(1) else { break };
                intake::handle(&self.inner, message, permit).await;
            }
            drop(permits);
            wait = Duration::ZERO;
        }
        Ok(received_total)
    }

    /// Takes work for as long as the worker runs: waits until a job permit is free, then polls
    /// (long-polling while the queue is empty). A permit freed by a finished job starts the
    /// next receive at once; a failed receive waits for the next poll tick.
    async fn intake_loop(&self) {
        let inner = &self.inner;
        loop {
            let permit = tokio::select! {
                permit = inner.permits.clone().acquire_owned() => permit,
                () = inner.stop_receiving.cancelled() => return,
            };
            // Only a signal that there is room: the cycle takes the permits it uses itself.
            drop(permit);
            let result = {
                let _guard = inner.polling.lock().await;
                self.poll_cycle().await
            };
            match result {
                Ok(_) => {
                    inner.mark_poll_cycle();
                    if batch::waits_for_slot(
                        inner.transcode_slots.available_permits(),
                        inner.segments_in_hand.load(Ordering::Relaxed),
                    ) {
                        // Permits to spare, but a segment in hand: wait for a slot to free.
                        tokio::select! {
                            () = inner.slot_freed.notified() => {}
                            () = inner.stop_receiving.cancelled() => return,
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "Polling the ready queue failed.");
                    tokio::select! {
                        () = inner.wake.notified() => {}
                        () = inner.stop_receiving.cancelled() => return,
                    }
                }
            }
        }
    }

    /// One sweep of the in-processing ledger; and, when `MEDIA_DEAD_LETTER_SWEEP` has passed
    /// since the last one, of the dead-letter queue.
    pub async fn reap_once(&self) -> anyhow::Result<ReapOutcome> {
        let Ok(_guard) = self.inner.reaping.try_lock() else { return Ok(ReapOutcome::default()) };
        let outcome = reaper::sweep(&self.inner).await?;
        let inner = &self.inner;
        let now = inner.elapsed_ms();
        let last = inner.last_dead_letter_sweep_ms.load(Ordering::Relaxed);
        let every = u64::try_from(inner.config.dead_letter_sweep.as_millis()).unwrap_or(u64::MAX);
        if last == 0 || now.saturating_sub(last) >= every {
            inner.last_dead_letter_sweep_ms.store(now.max(1), Ordering::Relaxed);
            if let Err(err) = dead_letters::sweep(inner).await {
                tracing::warn!(error = format!("{err:#}"), "Sweeping the dead-letter queue failed.");
            }
        }
        let last = inner.last_ledger_sweep_ms.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= u64::try_from(LEDGER_SWEEP.as_millis()).unwrap_or(u64::MAX) {
            inner.last_ledger_sweep_ms.store(now.max(1), Ordering::Relaxed);
            match inner.store.ledger().sweep(chrono::Utc::now()).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "Removed job records past their retention."),
                Err(err) => tracing::warn!(error = %err, "Sweeping the job ledger failed."),
            }
        }
        Ok(outcome)
    }

    /// Whether the poll loop finished a cycle within `MEDIA_POLL_STALL_TIMEOUT` (a worker that
    /// has not started polling yet counts as live).
    pub fn poll_loop_is_live(&self) -> bool {
        let inner = &self.inner;
        let last = inner.last_poll_ms.load(Ordering::Relaxed);
        let stall = u64::try_from(inner.config.poll_stall_timeout.as_millis()).unwrap_or(u64::MAX);
        inner.elapsed_ms().saturating_sub(last) < stall
    }

    /// Whether the ready queue and the ledger are empty and nothing runs here.
    pub async fn is_idle(&self) -> anyhow::Result<bool> {
        if self.running() > 0 {
            return Ok(false);
        }
        let ready = self.inner.queues.ready.counts().await?;
        if ready.total() > 0 {
            return Ok(false);
        }
        if let Some(notifications) = &self.inner.notifications
            && (!notifications.is_idle().await? || self.inner.store.ledger().outbox_len().await? > 0)
        {
            return Ok(false);
        }
        Ok(self.inner.queues.processing.counts().await?.total() == 0)
    }
}

impl Inner {
    /// The narrow context of an attempt's source and commit steps.
    fn step_cx(&self) -> StepCx<'_> {
        StepCx { config: &self.config, storage: self.storage.as_ref() }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark_poll_cycle(&self) {
        self.last_poll_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Lowers the receive limit below the ready queue's redrive limit, if it has one.
    async fn resolve_max_receives(&self) {
        match self.queues.ready.redrive_max_receives().await {
            Ok(Some(redrive)) if redrive <= self.config.max_receives => {
                // On the redrive limit's own receive SQS still delivers; the next one moves it.
                let limit = redrive.max(2);
                self.max_receives.store(limit, Ordering::Relaxed);
                tracing::info!(
                    max_receives = limit,
                    redrive,
                    "Dead-lettering before the ready queue's redrive policy."
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = format!("{err:#}"), "Could not read the ready queue's redrive policy."),
        }
    }

    /// A split job's task that ran on this worker from `started_at` until now.
    fn task_timing(&self, task: &str, started_at: chrono::DateTime<chrono::Utc>) -> crate::domain::status::TaskTiming {
        crate::domain::status::TaskTiming {
            task: task.to_string(),
            worker: self.config.worker_id.clone(),
            started_at,
            finished_at: chrono::Utc::now(),
        }
    }

    fn max_receives(&self) -> u32 {
        self.max_receives.load(Ordering::Relaxed)
    }
}
