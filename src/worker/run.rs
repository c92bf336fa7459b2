//! Running the worker as a process: the endpoint, the schedules, the intake loop and the
//! background tasks started in order, and stopped in the reverse order on shutdown (or, in
//! drain mode, once there is nothing left to do).

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use super::{RunMode, Summary, Worker, metrics, scratch};

/// How long a stopping worker's relay may take to send its last events.
const SETTLE_EVENTS: Duration = Duration::from_secs(10);

/// A task the worker runs beside its jobs, and how to stop it.
struct Task {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
    /// How long it may take to end once told; `None`: as long as it takes.
    within: Option<Duration>,
}

impl Task {
    fn none() -> Self {
        Task { stop: CancellationToken::new(), handle: None, within: None }
    }

    async fn stop(self) {
        self.stop.cancel();
        let Some(handle) = self.handle else { return };
        match self.within {
            Some(within) => {
                let _ = tokio::time::timeout(within, handle).await;
            }
            None => {
                let _ = handle.await;
            }
        }
    }
}

/// The relay of job events and the webhook deliveries.
struct Background {
    relay: Task,
    notifications: Task,
}

impl Background {
    /// After the jobs: the relay sends their last events, then deliveries get what time is left.
    async fn stop(self) {
        self.relay.stop().await;
        self.notifications.stop().await;
    }
}

impl Worker {
    /// Runs the schedules until `shutdown` resolves (or, in drain mode, until idle), then stops
    /// receiving, lets running jobs finish within the grace period, and requeues the rest.
    pub async fn run(&self, mode: RunMode, shutdown: impl Future<Output = ()>) -> anyhow::Result<Summary> {
        let endpoint = self.serve_endpoint().await?;
        self.inner.protection.start();
        self.inner.resolve_max_receives().await;
        scratch::sweep_stale(&self.inner.config).await;
        scratch::check_capacity(&self.inner.config);
        let mut scheduler = self.schedule_poll().await?;
        let intake = tokio::spawn({
            let worker = self.clone();
            async move { worker.intake_loop().await }
        });
        let background = self.start_background();
        self.schedule_reaper(&scheduler).await?;
        scheduler.start().await.context("starting the scheduler")?;
        tracing::info!(
            worker = %self.inner.config.worker_id,
            host = %crate::config::host_name(),
            pid = std::process::id(),
            concurrency = self.inner.config.concurrency,
            mode = ?mode,
            "Worker started."
        );

        match mode {
            RunMode::Daemon => shutdown.await,
            RunMode::Drain => {
                tokio::select! {
                    () = shutdown => {},
                    result = self.wait_until_drained() => result?,
                }
            }
        }

        self.inner.stop_receiving.cancel();
        // The loop ends at once (its receive is cancelled); messages it held return to the queue.
        if let Err(err) = intake.await {
            tracing::warn!(error = %err, "The intake loop ended abnormally.");
        }
        if let Err(err) = scheduler.shutdown().await {
            tracing::warn!(error = %err, "The scheduler did not stop cleanly.");
        }
        self.stop_jobs().await;
        background.stop().await;
        self.inner.protection.stop().await;
        endpoint.stop().await;
        let summary = self.summary();
        tracing::info!(
            completed = summary.completed,
            failed = summary.failed,
            retried = summary.retried,
            dead_lettered = summary.dead_lettered,
            "Worker stopped."
        );
        Ok(summary)
    }

    /// Serves health and metrics when `MEDIA_METRICS_ADDR` is set. Bound before anything else
    /// starts: a taken port is a configuration error worth refusing to start for.
    async fn serve_endpoint(&self) -> anyhow::Result<Task> {
        let listener = match self.inner.config.metrics_addr {
            Some(addr) => tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("MEDIA_METRICS_ADDR: cannot listen on {addr}"))?,
            None => return Ok(Task::none()),
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "Serving /healthz, /readyz and /metrics.");
        }
        let stop = CancellationToken::new();
        let handle = tokio::spawn(metrics::serve(listener, self.clone(), stop.clone()));
        Ok(Task { stop, handle: Some(handle), within: Some(Duration::from_secs(5)) })
    }

    /// The scheduler, with the poll schedule waking the intake loop.
    async fn schedule_poll(&self) -> anyhow::Result<JobScheduler> {
        let scheduler = JobScheduler::new().await.context("starting the scheduler")?;
        let waker = self.clone();
        scheduler
            .add(
                Job::new_async(self.inner.config.poll_schedule.as_str(), move |_, _| {
                    let worker = waker.clone();
                    Box::pin(async move { worker.inner.wake.notify_one() })
                })
                .context("MEDIA_POLL_SCHEDULE is not a valid cron expression")?,
            )
            .await?;
        Ok(scheduler)
    }

    /// Adds the reaper's schedule.
    async fn schedule_reaper(&self, scheduler: &JobScheduler) -> anyhow::Result<()> {
        let reaper = self.clone();
        scheduler
            .add(
                Job::new_async(self.inner.config.reaper_schedule.as_str(), move |_, _| {
                    let worker = reaper.clone();
                    Box::pin(async move {
                        if let Err(err) = worker.reap_once().await {
                            tracing::warn!(error = format!("{err:#}"), "Sweeping the in-processing ledger failed.");
                        }
                    })
                })
                .context("MEDIA_REAPER_SCHEDULE is not a valid cron expression")?,
            )
            .await?;
        Ok(())
    }

    /// Starts the webhook deliveries and the relay of job events, when configured.
    fn start_background(&self) -> Background {
        let inner = &self.inner;
        let stop = CancellationToken::new();
        let notifications = inner.notifications.clone().map(|d| tokio::spawn(d.run(stop.clone())));
        let notifications = Task { stop, handle: notifications, within: None };
        let stop = CancellationToken::new();
        let relay = inner.queues.notifications.clone().filter(|_| inner.config.notify.enabled()).map(|queue| {
            let relay = crate::notify::relay::Relay::new(inner.store.clone(), inner.storage.clone(), queue);
            tokio::spawn(relay.run(stop.clone()))
        });
        let relay = Task { stop, handle: relay, within: Some(SETTLE_EVENTS) };
        Background { relay, notifications }
    }

    async fn wait_until_drained(&self) -> anyhow::Result<()> {
        // Queue counts are approximate (a message changing visibility between two counters can
        // be missed by both), so idleness must be seen several times in a row.
        const IDLE_CHECKS: u32 = 3;
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        let mut idle_checks = 0;
        loop {
            ticker.tick().await;
            if self.running() > 0 {
                idle_checks = 0;
                continue;
            }
            // Nothing runs here: sweep now rather than at the next reaper tick, so finished
            // entries leave the ledger and those of dead workers are recovered promptly. A queue
            // or store that does not answer just means "not idle yet": returning early would
            // leave running jobs behind.
            let idle = async {
                if self.inner.queues.ready.counts().await?.total() == 0 {
                    self.reap_once().await?;
                }
                self.is_idle().await
            };
            let idle = match idle.await {
                Ok(idle) => idle,
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "Checking for idleness failed; trying again.");
                    false
                }
            };
            if idle {
                idle_checks += 1;
                if idle_checks >= IDLE_CHECKS {
                    tracing::debug!("Drained: no messages waiting or in flight, no job running.");
                    return Ok(());
                }
            } else {
                idle_checks = 0;
            }
        }
    }

    /// Waits up to the grace period for running jobs, then stops and requeues the rest.
    async fn stop_jobs(&self) {
        let inner = &self.inner;
        inner.jobs.close();
        if inner.jobs.is_empty() {
            return;
        }
        tracing::info!(running = inner.jobs.len(), grace = ?inner.config.shutdown_grace, "Waiting for running jobs.");
        if tokio::time::timeout(inner.config.shutdown_grace, inner.jobs.wait()).await.is_err() {
            tracing::warn!(running = inner.jobs.len(), "Grace period over; stopping and requeueing running jobs.");
            inner.stop_jobs.cancel();
            // Requeueing is a couple of small writes per job; bound it anyway.
            let _ = tokio::time::timeout(Duration::from_secs(30), inner.jobs.wait()).await;
        }
    }
}
