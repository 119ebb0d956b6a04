//! The hand-off between HTTP handlers and writers: bounded channels of [`Job`]s, each carrying
//! a validated batch and, unless acks are asynchronous, a one-shot reply channel on which the
//! writer reports the commit. With acks after commit all writers share one channel; with
//! asynchronous acks each writer has its own and a series always goes to the same one (see
//! [`Acks`]).

use crate::db_error::StoreError;
use crate::decode::{SeriesSamples, WriteBatch};
use crate::metrics::Metrics;
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
    pub lock: Option<crate::fence::LockFence>,
    pub reply: Option<Sender<Outcome>>,
}

impl Job {
    pub fn sample_count(&self) -> usize {
        self.batch.sample_count()
            + self
                .fenced
                .iter()
                .flat_map(|g| g.series.iter())
                .map(|s| s.points())
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

/// When a job is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// After its commit: one queue all writers take from, so any idle writer takes the next
    /// job.
    AfterCommit,
    /// When queued (`--async-acks`): one queue per writer, and every series always goes to
    /// the same writer, so samples of a series are committed in the order they were
    /// acknowledged and the first acknowledged value of a timestamp wins, as it does when
    /// acks wait for the commit.
    Asynchronous,
}

/// A job split by writer: the part for each writer's queue, if any.
type Parts = Vec<Option<Job>>;

#[derive(Clone)]
pub struct Queue {
    acks: Acks,
    /// One sender (after-commit acks) or one per writer (asynchronous acks).
    shards: Vec<Sender<Job>>,
    /// Held while a job is split over the shards, so its parts go in all or none.
    splitting: Arc<std::sync::Mutex<()>>,
    metrics: Arc<Metrics>,
}

/// The writer a series belongs to with asynchronous acks: a hash of its labels (replica label
/// already removed), the same on every call.
fn shard_of(labels: &crate::decode::LabelSet, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for (name, value) in labels.labels() {
        name.hash(&mut h);
        value.hash(&mut h);
    }
    (h.finish() % shards.max(1) as u64) as usize
}

impl Queue {
    /// A queue of `capacity` jobs in all, and the receiving end of each of `writers` writers.
    pub fn new(
        capacity: usize,
        writers: usize,
        acks: Acks,
        metrics: Arc<Metrics>,
    ) -> (Queue, Vec<Receiver<Job>>) {
        let writers = writers.max(1);
        let per_queue = match acks {
            Acks::AfterCommit => capacity.max(1),
            Acks::Asynchronous => (capacity / writers).max(4),
        };
        // Depth and capacity are those of one queue (the fullest, with one per writer): a
        // request is refused when the queue of one writer it needs is full.
        metrics.queue_capacity.set(per_queue as i64);
        let (shards, receivers) = match acks {
            Acks::AfterCommit => {
                let (tx, rx) = bounded(per_queue);
                (vec![tx], vec![rx; writers])
            }
            Acks::Asynchronous => (0..writers).map(|_| bounded(per_queue)).unzip(),
        };
        (
            Queue {
                acks,
                shards,
                splitting: Arc::new(std::sync::Mutex::new(())),
                metrics,
            },
            receivers,
        )
    }

    pub fn acks(&self) -> Acks {
        self.acks
    }

    fn depth(&self) -> usize {
        self.shards.iter().map(Sender::len).max().unwrap_or(0)
    }

    /// Enqueues without blocking. After-commit acks: the returned receiver yields the writer's
    /// outcome. Asynchronous acks: None; the caller answers at once.
    pub fn submit(
        &self,
        batch: WriteBatch,
        fenced: Vec<FencedGroup>,
        lock: Option<crate::fence::LockFence>,
    ) -> Result<Option<Receiver<Outcome>>, SubmitError> {
        let result = match self.acks {
            Acks::AfterCommit => {
                let (reply, outcome) = bounded(1);
                let job = Job {
                    batch,
                    fenced,
                    lock,
                    reply: Some(reply),
                };
                match self.shards[0].try_send(job) {
                    Ok(()) => Ok(Some(outcome)),
                    Err(TrySendError::Full(_)) => Err(SubmitError::Full),
                    Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
                }
            }
            Acks::Asynchronous => self.submit_split(batch, fenced, lock).map(|()| None),
        };
        self.metrics.queue_depth.set(self.depth() as i64);
        result
    }

    /// Splits a job by series over the writers' queues, all parts or none (asynchronous acks).
    fn submit_split(
        &self,
        batch: WriteBatch,
        fenced: Vec<FencedGroup>,
        lock: Option<crate::fence::LockFence>,
    ) -> Result<(), SubmitError> {
        self.send_parts(self.split(batch, fenced, lock))
            .map_err(|(e, _)| e)
    }

    /// Sends every part to its writer's queue, or none (handing them back) when one of those
    /// queues is full.
    fn send_parts(&self, parts: Parts) -> Result<(), (SubmitError, Parts)> {
        let _splitting = self.splitting.lock().unwrap_or_else(|p| p.into_inner());
        // Writers only take from the queues, and every sender holds this lock, so room seen
        // here is still there below.
        let full = parts.iter().enumerate().any(|(n, part)| {
            part.is_some()
                && self.shards[n]
                    .capacity()
                    .is_some_and(|c| self.shards[n].len() >= c)
        });
        if full {
            return Err((SubmitError::Full, parts));
        }
        for (n, part) in parts.into_iter().enumerate() {
            if let Some(job) = part {
                if self.shards[n].try_send(job).is_err() {
                    return Err((SubmitError::Closed, Vec::new()));
                }
            }
        }
        Ok(())
    }

    /// One job per writer that has series of this one (metadata goes to the first).
    fn split(
        &self,
        batch: WriteBatch,
        fenced: Vec<FencedGroup>,
        lock: Option<crate::fence::LockFence>,
    ) -> Parts {
        let n = self.shards.len();
        let mut parts: Vec<Option<Job>> = (0..n).map(|_| None).collect();
        let part = |parts: &mut Vec<Option<Job>>, k: usize| -> usize {
            parts[k].get_or_insert_with(|| Job {
                batch: WriteBatch::default(),
                fenced: Vec::new(),
                lock,
                reply: None,
            });
            k
        };
        if !batch.metadata.is_empty() {
            let k = part(&mut parts, 0);
            if let Some(job) = parts[k].as_mut() {
                job.batch.metadata = batch.metadata;
            }
        }
        for series in batch.series {
            let k = part(&mut parts, shard_of(&series.labels, n));
            if let Some(job) = parts[k].as_mut() {
                job.batch.series.push(series);
            }
        }
        for group in fenced {
            let mut by_shard: Vec<Vec<SeriesSamples>> = (0..n).map(|_| Vec::new()).collect();
            for series in group.series {
                by_shard[shard_of(&series.labels, n)].push(series);
            }
            for (k, series) in by_shard.into_iter().enumerate() {
                if series.is_empty() {
                    continue;
                }
                let k = part(&mut parts, k);
                if let Some(job) = parts[k].as_mut() {
                    job.fenced.push(FencedGroup {
                        cluster: group.cluster.clone(),
                        replica: group.replica.clone(),
                        series,
                    });
                }
            }
        }
        parts
    }

    /// Enqueues samples that were already answered (buffered HA samples of a new leader,
    /// re-routed ones), waiting for room: nobody would resend them.
    pub fn submit_unanswered(
        &self,
        batch: WriteBatch,
        groups: Vec<FencedGroup>,
    ) -> Result<(), SubmitError> {
        if batch.series.is_empty() && batch.metadata.is_empty() && groups.is_empty() {
            return Ok(());
        }
        let job = |batch, fenced| Job {
            batch,
            fenced,
            lock: None,
            reply: None,
        };
        match self.acks {
            Acks::AfterCommit => self.shards[0]
                .send(job(batch, groups))
                .map_err(|_| SubmitError::Closed),
            Acks::Asynchronous => {
                // Waits for room without holding the split lock, which every handler needs.
                let mut parts = self.split(batch, groups, None);
                loop {
                    match self.send_parts(parts) {
                        Ok(()) => return Ok(()),
                        Err((SubmitError::Full, back)) => parts = back,
                        Err((e, _)) => return Err(e),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }

    /// Enqueues buffered HA samples of a new leader; see [`Queue::submit_unanswered`].
    pub fn submit_flush(&self, groups: Vec<FencedGroup>) -> Result<(), SubmitError> {
        self.submit_unanswered(WriteBatch::default(), groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    fn series(name: &str) -> SeriesSamples {
        SeriesSamples {
            labels: crate::decode::LabelSet::from_sorted_for_tests(vec![proto::Label {
                name: "__name__".into(),
                value: name.into(),
            }]),
            samples: vec![proto::Sample {
                value: 1.0,
                timestamp: 1,
            }],
            ..SeriesSamples::default()
        }
    }

    #[test]
    fn asynchronous_acks_send_each_series_to_one_writer_every_time() {
        let metrics = Arc::new(Metrics::default());
        let (queue, receivers) = Queue::new(64, 4, Acks::Asynchronous, metrics);
        let names: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
        for _ in 0..2 {
            let batch = WriteBatch {
                series: names.iter().map(|n| series(n)).collect(),
                metadata: Vec::new(),
            };
            let group = FencedGroup {
                cluster: "c".into(),
                replica: "a".into(),
                series: names.iter().map(|n| series(&format!("ha_{n}"))).collect(),
            };
            assert!(queue
                .submit(batch, vec![group], None)
                .expect("queued")
                .is_none());
        }
        let mut home: std::collections::HashMap<String, usize> = Default::default();
        let mut writers_used = 0;
        for (w, rx) in receivers.iter().enumerate() {
            let jobs: Vec<Job> = rx.try_iter().collect();
            writers_used += usize::from(!jobs.is_empty());
            for job in jobs {
                let fenced = job.fenced.iter().flat_map(|g| g.series.iter());
                for s in job.batch.series.iter().chain(fenced) {
                    let name = s.labels.metric().to_string();
                    assert_eq!(*home.entry(name.clone()).or_insert(w), w, "{name}");
                }
            }
        }
        assert_eq!(home.len(), 80);
        assert!(writers_used > 1, "series spread over the writers");
    }

    #[test]
    fn a_job_split_over_writers_goes_in_whole_or_not_at_all() {
        let metrics = Arc::new(Metrics::default());
        let (queue, _receivers) = Queue::new(8, 2, Acks::Asynchronous, metrics);
        let batch = |n: usize| WriteBatch {
            series: (0..n).map(|i| series(&format!("s{i}"))).collect(),
            metadata: Vec::new(),
        };
        let mut accepted = 0;
        while queue.submit(batch(20), Vec::new(), None).is_ok() {
            accepted += 1;
            assert!(accepted <= 4, "each writer's queue holds 4");
        }
        assert_eq!(accepted, 4);
        let depth: Vec<usize> = queue.shards.iter().map(Sender::len).collect();
        assert_eq!(depth, vec![4, 4], "no half-queued job");
    }
}
