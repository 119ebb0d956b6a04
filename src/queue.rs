//! The hand-off between HTTP handlers and writers: a bounded channel of [`Job`]s, each
//! carrying a validated batch and, unless acks are asynchronous, a one-shot reply channel
//! on which the writer reports the commit.

use crate::decode::{SeriesSamples, WriteBatch};
use crate::metrics::Metrics;
use crate::store::StoreError;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::Arc;

/// What a writer reports for a job: Ok once its samples are committed.
pub type Outcome = Result<Committed, StoreError>;

/// A committed job. `fenced_out` hands back the job's fenced groups that were not stored
/// because their replica no longer held the lease at commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    pub fenced_out: Vec<FencedGroup>,
}

/// An HA leader's series (replica label removed), stored only if, inside the inserting
/// transaction, `replica` still leads `cluster` and the samples lie in its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct FencedGroup {
    pub cluster: String,
    pub replica: String,
    pub series: Vec<SeriesSamples>,
}

pub struct Job {
    /// Series stored unconditionally, and metadata.
    pub batch: WriteBatch,
    pub fenced: Vec<FencedGroup>,
    /// Legacy advisory-lock mode: store only while this lock is held.
    pub lock: Option<crate::advisory::LockFence>,
    pub reply: Option<Sender<Outcome>>,
}

impl Job {
    pub fn sample_count(&self) -> usize {
        self.batch.sample_count()
            + self
                .fenced
                .iter()
                .flat_map(|g| g.series.iter())
                .map(|s| s.samples.len())
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// Every slot is taken: the writers are behind.
    Full,
    /// The writers have stopped (shutting down).
    Closed,
}

#[derive(Clone)]
pub struct Queue {
    tx: Sender<Job>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// A queue of `capacity` jobs and the receiving end for the writers.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Queue, Receiver<Job>) {
        let (tx, rx) = bounded(capacity.max(1));
        metrics.queue_capacity.set(capacity as i64);
        (Queue { tx, metrics }, rx)
    }

    /// Enqueues without blocking. With `wait_for_commit` the returned receiver yields the
    /// writer's outcome; without it the caller answers at once (asynchronous acks).
    pub fn submit(
        &self,
        batch: WriteBatch,
        fenced: Vec<FencedGroup>,
        lock: Option<crate::advisory::LockFence>,
        wait_for_commit: bool,
    ) -> Result<Option<Receiver<Outcome>>, SubmitError> {
        let (reply, outcome) = if wait_for_commit {
            let (tx, rx) = bounded(1);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let result = match self.tx.try_send(Job {
            batch,
            fenced,
            lock,
            reply,
        }) {
            Ok(()) => Ok(outcome),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        };
        self.metrics.queue_depth.set(self.tx.len() as i64);
        result
    }

    /// Enqueues buffered HA samples of a new leader, waiting for room: they were already
    /// answered (202) when they arrived, so nobody would resend them.
    pub fn submit_flush(&self, groups: Vec<FencedGroup>) -> Result<(), SubmitError> {
        if groups.is_empty() {
            return Ok(());
        }
        let job = Job {
            batch: WriteBatch::default(),
            fenced: groups,
            lock: None,
            reply: None,
        };
        self.tx.send(job).map_err(|_| SubmitError::Closed)
    }
}
