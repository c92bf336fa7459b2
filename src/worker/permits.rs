//! What a job, a segment and an ffmpeg run hold while they run, each given back on drop: the
//! job permit (one per job in flight), the transcode slot (one per ffmpeg), the count of
//! segments in hand, and the mark of an attempt running here.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use super::{Inner, JobError};

/// The job permit a run holds; a coordinator gives it back once its segments are offered, so
/// the worker can take segments (its own job's among them) with it.
pub(super) struct JobPermit(Mutex<Option<OwnedSemaphorePermit>>);

impl JobPermit {
    pub(super) fn new(permit: OwnedSemaphorePermit) -> Self {
        Self(Mutex::new(Some(permit)))
    }

    pub(super) fn release(&self) {
        if let Ok(mut slot) = self.0.lock() {
            slot.take();
        }
    }
}

impl Inner {
    /// One of the `MEDIA_CONCURRENCY` slots for an ffmpeg run: held while it runs.
    pub(super) async fn transcode_slot(&self) -> Result<TranscodeSlot, JobError> {
        let permit = self
            .transcode_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| JobError::retryable(ErrorCode::Internal, "the transcode slots were closed"))?;
        Ok(self.slot(permit))
    }

    /// A transcode slot if one is free now.
    pub(super) fn try_transcode_slot(&self) -> Option<TranscodeSlot> {
        self.transcode_slots.clone().try_acquire_owned().ok().map(|permit| self.slot(permit))
    }

    fn slot(&self, permit: tokio::sync::OwnedSemaphorePermit) -> TranscodeSlot {
        TranscodeSlot { _permit: permit, freed: self.slot_freed.clone() }
    }

    /// Counts a segment taken from the ready queue until the guard is dropped.
    pub(super) fn segment_in_hand(&self) -> SegmentInHand {
        self.segments_in_hand.fetch_add(1, Ordering::Relaxed);
        SegmentInHand { count: self.segments_in_hand.clone(), slot_freed: self.slot_freed.clone() }
    }

    pub(super) fn is_running_here(&self, job_id: &str, attempt: u32) -> bool {
        self.running_here.lock().is_ok_and(|set| set.contains(&(job_id.to_string(), attempt)))
    }

    /// Records an attempt as running here until the returned guard is dropped.
    pub(super) fn mark_running(self: &Arc<Self>, job_id: &str, attempt: u32) -> RunningGuard {
        let key = (job_id.to_string(), attempt);
        if let Ok(mut set) = self.running_here.lock() {
            set.insert(key.clone());
        }
        RunningGuard { inner: self.clone(), key }
    }
}

/// Removes an attempt from [`Inner::running_here`] when the attempt ends, however it ends.
pub(super) struct RunningGuard {
    inner: Arc<Inner>,
    key: (String, u32),
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.inner.running_here.lock() {
            set.remove(&self.key);
        }
    }
}

/// A transcode slot; giving it back wakes an intake loop that waits for one.
pub(super) struct TranscodeSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    freed: Arc<tokio::sync::Notify>,
}

impl Drop for TranscodeSlot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// A segment the worker holds, counted while it lives.
pub(super) struct SegmentInHand {
    count: Arc<std::sync::atomic::AtomicUsize>,
    slot_freed: Arc<tokio::sync::Notify>,
}

impl Drop for SegmentInHand {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        // The intake may wait for a slot only because this segment was in hand.
        self.slot_freed.notify_one();
    }
}
use crate::domain::error_code::ErrorCode;
