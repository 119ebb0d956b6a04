//! The hand-off between HTTP handlers and writers: a bounded channel of [`Job`]s, each
//! carrying a validated batch and, unless acks are asynchronous, a one-shot reply channel
//! on which the writer reports the commit.

use crate::decode::WriteBatch;
use crate::metrics::Metrics;
use crate::store::StoreError;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::sync::Arc;

/// What a writer reports for a job: Ok once its samples are committed.
pub type Outcome = Result<(), StoreError>;

pub struct Job {
    pub batch: WriteBatch,
    pub reply: Option<Sender<Outcome>>,
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
        wait_for_commit: bool,
    ) -> Result<Option<Receiver<Outcome>>, SubmitError> {
        let (reply, outcome) = if wait_for_commit {
            let (tx, rx) = bounded(1);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let result = match self.tx.try_send(Job { batch, reply }) {
            Ok(()) => Ok(outcome),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        };
        self.metrics.queue_depth.set(self.tx.len() as i64);
        result
    }
}
