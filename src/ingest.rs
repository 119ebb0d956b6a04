//! The write path's one entry point after decoding: [`Ingest::write`] takes a decoded batch
//! and returns once its samples are committed (or, with asynchronous acks, queued). It runs
//! whichever election is on: the legacy advisory lock (a follower stores nothing), or HA
//! (route by lease, hand a new leader's buffered samples to the writers, commit, route again
//! what a lease change fenced out between routing and commit). HTTP only maps the outcome to
//! a status; every HA or storage change stays here and below.

use crate::advisory::AdvisoryElection;
use crate::db_error::StoreError;
use crate::decode::WriteBatch;
use crate::fence::LockFence;
use crate::ha::{Election, HaError, HandOverError, Lease};
use crate::metrics::Metrics;
use crate::queue::{FencedGroup, Queue, SubmitError};
use crossbeam_channel::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

/// What became of an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Every sample is committed (or queued, with asynchronous acks).
    Stored,
    /// Committed, except samples HA kept back: another replica's moments, or a standby's
    /// samples buffered for a hand-over. Not an error: the sender must not retry them.
    PartlyKeptBack,
    /// Legacy election: this instance is not the lock holder; its peer stores this data.
    Follower,
}

/// Why a batch was not stored: all of them ours, never the sender's (a 5xx), except a
/// database error that is about the data itself.
#[derive(Debug)]
pub enum IngestError {
    QueueFull,
    ShuttingDown,
    Database(StoreError),
    CommitTimeout(Duration),
    Ha(HaError),
}

pub struct Ingest {
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    /// `--write-timeout`: the longest a request waits for its commit.
    pub write_timeout: Duration,
    pub ha: Option<Arc<Election>>,
    pub advisory: Option<Arc<AdvisoryElection>>,
}

impl Ingest {
    /// Stores a decoded batch of `samples` samples.
    pub fn write(&self, batch: WriteBatch, samples: usize) -> Result<Accepted, IngestError> {
        if let Some(advisory) = &self.advisory {
            let Some(lock) = advisory.on_write() else {
                self.metrics
                    .samples_rejected
                    .add(&["advisory_follower"], samples as u64);
                return Ok(Accepted::Follower);
            };
            return match self.commit(batch, Vec::new(), Some(lock), samples) {
                Err(IngestError::Database(e)) if e.is_lock_lost() => {
                    advisory.on_fence_failed(lock);
                    Err(IngestError::Database(e))
                }
                other => other.map(|_| Accepted::Stored),
            };
        }
        let Some(ha) = &self.ha else {
            self.commit(batch, Vec::new(), None, samples)?;
            return Ok(Accepted::Stored);
        };
        let routed = ha.route(batch).map_err(IngestError::Ha)?;
        self.flush(routed.flushes);
        let mut not_stored = routed.not_stored;
        let fenced_out = self.commit(routed.plain, routed.fenced, None, samples)?;
        // The lease moved between routing and commit: route those series again with the
        // lease re-read, once; what is refused a second time is counted as not stored.
        for group in fenced_out {
            let rerouted = ha.reroute_fenced_out(group).map_err(IngestError::Ha)?;
            self.flush(rerouted.flushes);
            not_stored += rerouted.not_stored;
            for lost in self.commit(rerouted.plain, rerouted.fenced, None, samples)? {
                not_stored += lost.series.iter().map(|s| s.points()).sum::<usize>();
            }
        }
        Ok(if not_stored > 0 {
            Accepted::PartlyKeptBack
        } else {
            Accepted::Stored
        })
    }

    /// Operator hand-over: `replica` leads `cluster` from now on, and its buffered samples go
    /// to the writers. Without HA there is no cluster to hand over.
    pub fn hand_over(&self, cluster: &str, replica: &str) -> Result<Lease, HandOverError> {
        let ha = self.ha.as_ref().ok_or(HandOverError::UnknownCluster)?;
        let (lease, flushes) = ha.hand_over(cluster, replica)?;
        self.flush(flushes);
        Ok(lease)
    }

    /// Hands a new leader's buffered samples to the writers.
    fn flush(&self, groups: Vec<FencedGroup>) {
        if let Err(e) = self.queue.submit_flush(groups) {
            log::warn!("cannot queue buffered HA samples: {e:?}");
        }
    }

    /// Queues a batch and, unless acks are asynchronous, waits for its commit. Returns the
    /// fenced groups the writer refused (the replica lost the lease before commit).
    fn commit(
        &self,
        batch: WriteBatch,
        fenced: Vec<FencedGroup>,
        lock: Option<LockFence>,
        samples: usize,
    ) -> Result<Vec<FencedGroup>, IngestError> {
        if batch.series.is_empty() && batch.metadata.is_empty() && fenced.is_empty() {
            return Ok(Vec::new());
        }
        let waiter = match self.queue.submit(batch, fenced, lock) {
            Ok(w) => w,
            Err(SubmitError::Full) => {
                self.metrics
                    .samples_rejected
                    .add(&["queue_full"], samples as u64);
                return Err(IngestError::QueueFull);
            }
            Err(SubmitError::Closed) => return Err(IngestError::ShuttingDown),
        };
        let Some(outcome) = waiter else {
            return Ok(Vec::new());
        };
        match outcome.recv_timeout(self.write_timeout) {
            Ok(Ok(committed)) => Ok(committed.fenced_out),
            Ok(Err(e)) => {
                self.metrics
                    .samples_rejected
                    .add(&["database_error"], samples as u64);
                Err(IngestError::Database(e))
            }
            Err(RecvTimeoutError::Timeout) => Err(IngestError::CommitTimeout(self.write_timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(IngestError::ShuttingDown),
        }
    }
}
