//! The fixed pool of writer threads. Each owns one PostgreSQL connection, takes jobs off the
//! queue, merges what is waiting into one transaction, stores it and reports the outcome to
//! every waiting handler.
//!
//! Per merged transaction: upsert metadata, resolve series ids (cache, then one batched
//! statement for all misses), make sure the days' partitions exist, then binary COPY the
//! samples and commit. Only after the commit is any job answered Ok.

use crate::decode::{LabelSet, Metadata, SeriesSamples};
use crate::engine::exemplars::ExemplarRow;
use crate::engine::head::{self, InsertPath};
use crate::engine::histograms::HistogramRow;
use crate::engine::{HeadRows, SampleRow};
use crate::fence::LockFence;
use crate::metrics::Metrics;
use crate::pg_session::{self, SessionBounds};
use crate::queue::{Committed, FencedGroup, Job, Outcome};
use crate::series_cache::{SeriesCache, SeriesKey};
use crate::store::{self, StoreError};
use crossbeam_channel::Receiver;
use postgres::Client;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A writer stops merging queued jobs into its transaction past this many samples, so one
/// transaction stays short and its COPY buffer a few MiB.
pub const MERGE_SAMPLE_LIMIT: usize = 50_000;

/// State shared by the writers of one instance.
pub struct Shared {
    pub series: SeriesCache,
    /// Metrics whose prom_metric view is known to exist.
    pub metric_views: Mutex<HashSet<String>>,
    /// Days (since 1970-01-01 UTC) whose partition is known to exist.
    pub partitions: Mutex<HashSet<i32>>,
    /// Metadata this instance wrote in the last [`METADATA_REWRITE_AFTER`], per metric, and
    /// when: remote write 2.0 repeats every series' metadata in every request, and a
    /// transaction skips the upsert of what it wrote lately as it is (so what another
    /// instance wrote meanwhile is overwritten within a minute, as 1.0 senders' once-a-minute
    /// metadata does). Cleared when it grows past [`METADATA_CACHE_MAX`].
    pub metadata_written: Mutex<HashMap<String, (Metadata, Instant)>>,
    pub metrics: Arc<Metrics>,
    /// With HA: where fenced groups of jobs nobody waits for (asynchronous acks, a new
    /// leader's buffered samples) go when their replica lost the lease before commit, to be
    /// routed again with the new lease instead of dropped.
    pub reroute: std::sync::OnceLock<crossbeam_channel::Sender<FencedGroup>>,
    /// The database clock, which says which samples are old enough that compaction may
    /// have folded their window (unset: every sample is checked against chunks).
    pub db_clock: std::sync::OnceLock<Arc<crate::clock::DbClock>>,
}

/// Metrics whose last written metadata a writer pool remembers at most.
const METADATA_CACHE_MAX: usize = 100_000;
/// Unchanged metadata is written again after this long.
const METADATA_REWRITE_AFTER: Duration = Duration::from_secs(60);

impl Shared {
    pub fn new(metrics: Arc<Metrics>, series_cache_max: usize) -> Self {
        Shared {
            series: SeriesCache::new(series_cache_max),
            metric_views: Mutex::new(HashSet::new()),
            partitions: Mutex::new(HashSet::new()),
            metadata_written: Mutex::new(HashMap::new()),
            metrics,
            reroute: std::sync::OnceLock::new(),
            db_clock: std::sync::OnceLock::new(),
        }
    }
}

pub struct WriterPool {
    handles: Vec<JoinHandle<()>>,
}

impl WriterPool {
    /// Starts one writer per receiver of `jobs` (the queue's ends, one per writer). They run
    /// until every sender is dropped and their queue is drained.
    pub fn start(
        db: &impl crate::pg_tls::ToDbConfig,
        jobs: Vec<Receiver<Job>>,
        shared: Arc<Shared>,
        bounds: &SessionBounds,
    ) -> std::io::Result<WriterPool> {
        // The distinct channels, for the queue-depth gauge.
        let mut channels: Vec<Receiver<Job>> = Vec::new();
        for rx in &jobs {
            if !channels.iter().any(|c| c.same_channel(rx)) {
                channels.push(rx.clone());
            }
        }
        let mut handles = Vec::with_capacity(jobs.len());
        for (n, jobs) in jobs.into_iter().enumerate() {
            let config = pg_session::config(db, pg_session::Kind::Writer(n), bounds);
            let writer = Writer {
                name: format!("writer-{n}"),
                config,
                client: None,
                shared: shared.clone(),
                retry: Vec::new(),
                backoff: MIN_BACKOFF,
                channels: channels.clone(),
            };
            handles.push(
                std::thread::Builder::new()
                    .name(format!("promgres-writer-{n}"))
                    .spawn(move || writer.run(jobs))?,
            );
        }
        Ok(WriterPool { handles })
    }

    /// Waits for the writers to drain the queue and stop.
    pub fn join(self) {
        for h in self.handles {
            if h.join().is_err() {
                log::error!("a writer thread panicked");
            }
        }
    }
}

/// How often one write is redone because series were removed meanwhile, before it fails
/// (503) and the sender retries.
const GENERATION_RETRIES: usize = 20;

/// Pauses between attempts to store asynchronously acknowledged jobs that failed.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Writer {
    name: String,
    config: crate::pg_tls::DbConfig,
    client: Option<Client>,
    shared: Arc<Shared>,
    /// Jobs already acknowledged (`--async-acks`) whose write failed: nobody else will retry
    /// them, so the writer does, until they are stored.
    retry: Vec<Job>,
    backoff: Duration,
    /// Every writer's queue (one shared, or one each), for the depth gauge.
    channels: Vec<Receiver<Job>>,
}

impl Writer {
    fn run(mut self, jobs: Receiver<Job>) {
        self.set_connected(false);
        let mut closed = false;
        loop {
            let first = if self.retry.is_empty() {
                jobs.recv().ok()
            } else if closed {
                std::thread::sleep(self.backoff);
                None
            } else {
                match jobs.recv_timeout(self.backoff) {
                    Ok(job) => Some(job),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        closed = true;
                        None
                    }
                }
            };
            if first.is_none() && self.retry.is_empty() {
                break;
            }
            let mut merged = std::mem::take(&mut self.retry);
            merged.extend(first);
            let mut samples: usize = merged.iter().map(Job::sample_count).sum();
            while samples < MERGE_SAMPLE_LIMIT {
                match jobs.try_recv() {
                    Ok(job) => {
                        samples += job.sample_count();
                        merged.push(job);
                    }
                    Err(_) => break,
                }
            }
            let depth = self.channels.iter().map(Receiver::len).max().unwrap_or(0);
            self.shared.metrics.queue_depth.set(depth as i64);
            self.process(merged);
        }
        log::debug!("{} stopped: queue closed and drained", self.name);
    }

    /// Writes the merged jobs and answers each. When PostgreSQL refuses the data of a merged
    /// transaction, one job is at fault, so each job is retried alone and the others still land.
    /// (Other failures, such as timeouts, would only repeat per job.)
    fn process(&mut self, merged: Vec<Job>) {
        match self.write(&merged) {
            Err(e) if e.is_data_error() && merged.len() > 1 => {
                log::info!(
                    "{}: retrying {} merged jobs one by one after: {e}",
                    self.name,
                    merged.len()
                );
                // Once an acknowledged job waits for a retry, the jobs after it wait too: one of
                // them may carry a later value for the same (series, time), and the first
                // acknowledged value must win.
                let mut held_back: Option<StoreError> = None;
                for job in merged {
                    if let Some(e) = &held_back {
                        match job.reply {
                            None => self.retry.push(job),
                            Some(_) => self.finish(job, Err(e.clone())),
                        }
                        continue;
                    }
                    let outcome = self
                        .write(std::slice::from_ref(&job))
                        .and_then(|mut c| c.pop().unwrap_or_else(|| Ok(Vec::new())));
                    let waiting = self.retry.len();
                    let error = outcome.as_ref().err().cloned();
                    self.finish(job, outcome);
                    if self.retry.len() > waiting {
                        held_back = error;
                    }
                }
            }
            Err(e) => {
                for job in merged {
                    self.finish(job, Err(e.clone()));
                }
            }
            Ok(committed) => {
                for (job, c) in merged.into_iter().zip(committed) {
                    self.finish(job, c);
                }
            }
        }
        if self.retry.is_empty() {
            self.backoff = MIN_BACKOFF;
        } else {
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Answers a job; `outcome` carries the indices of its fenced-out groups.
    fn finish(&mut self, mut job: Job, outcome: Result<Vec<usize>, StoreError>) {
        let outcome: Outcome = outcome.map(|fenced_out| Committed {
            fenced_out: take_indices(&mut job.fenced, &fenced_out),
        });
        match (&job.reply, outcome) {
            // The handler may have timed out and gone; the outcome then only matters to the
            // metrics.
            (Some(reply), outcome) => {
                let _ = reply.send(outcome);
            }
            (None, Ok(committed)) => {
                // Answered already, and their replica lost the lease before commit: route them
                // again under the new lease (some may lie in the replica's past lease).
                for group in committed.fenced_out {
                    let group = match self.shared.reroute.get() {
                        Some(reroute) => match reroute.send(group) {
                            Ok(()) => continue,
                            Err(e) => e.into_inner(),
                        },
                        None => group,
                    };
                    let lost: usize = group.series.iter().map(|s| s.points()).sum();
                    self.shared
                        .metrics
                        .samples_rejected
                        .add(&["ha_fenced_out"], lost as u64);
                }
            }
            (None, Err(e)) if e.is_lock_lost() => {
                // Acknowledged before commit (--async-acks) by a leader that lost its lock:
                // it is a follower now, and a follower's data is not stored.
                let samples = job.sample_count() as u64;
                self.shared
                    .metrics
                    .samples_rejected
                    .add(&["advisory_lock_lost"], samples);
            }
            (None, Err(e)) if e.is_data_error() => {
                let samples = job.sample_count() as u64;
                self.shared
                    .metrics
                    .samples_rejected
                    .add(&["async_refused_by_database"], samples);
                log::error!(
                    "{}: dropping {samples} acknowledged samples PostgreSQL refuses: {e}",
                    self.name
                );
            }
            (None, Err(_)) => self.retry.push(job),
        }
    }

    fn set_connected(&self, up: bool) {
        self.shared
            .metrics
            .db_connected
            .set(&[&self.name], if up { 1.0 } else { 0.0 });
    }

    /// Writes the jobs in one transaction; on success returns each job's result.
    fn write(&mut self, jobs: &[Job]) -> Result<Vec<JobResult>, StoreError> {
        let metrics = self.shared.metrics.clone();
        if self.client.is_none() {
            match store::connect(&self.config) {
                Ok(c) => {
                    log::info!("{}: connected to PostgreSQL", self.name);
                    self.client = Some(c);
                    self.set_connected(true);
                }
                Err(e) => {
                    metrics.writer_errors.add(&["connect"], 1);
                    log::warn!("{}: cannot connect to PostgreSQL: {e}", self.name);
                    return Err(e);
                }
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::internal("no connection"));
        };
        let started = Instant::now();
        let mut result = write_jobs(client, &self.shared, jobs);
        // Series this transaction used were removed since they were resolved: forget the
        // removed ids and redo it (a removal pass commits batch after batch, so maybe again).
        let mut retries = 0;
        while let Some(current) = result.as_ref().err().and_then(StoreError::moved_generation) {
            retries += 1;
            if retries > GENERATION_RETRIES {
                break;
            }
            catch_up(client, &self.shared, current);
            result = write_jobs(client, &self.shared, jobs);
        }
        if let Ok(written) = &result {
            // Committed while series it did not use were removed: forget those too.
            catch_up(client, &self.shared, written.generation);
        }
        match &result {
            Ok(written) => {
                metrics.commit_duration.observe(started.elapsed());
                metrics.samples_stored.add(written.stored as u64);
            }
            Err(e) => {
                let kind = if e.connection_lost {
                    "connection"
                } else {
                    "statement"
                };
                metrics.writer_errors.add(&[kind], 1);
                log::warn!("{}: write failed: {e}", self.name);
                if e.connection_lost || client.is_closed() {
                    self.client = None;
                    self.set_connected(false);
                }
            }
        }
        result.map(|written| written.results)
    }
}

/// Brings the instance's series cache to generation `current`: evicts the ids removed since
/// the generation it is at, or everything when the removal records no longer reach back.
fn catch_up(client: &mut Client, shared: &Shared, current: i64) {
    // Another writer may move the cache meanwhile; then look again from where it is.
    for _ in 0..GENERATION_RETRIES {
        let known = shared.series.generation();
        if known >= current {
            return;
        }
        let removed = if known < 0 {
            None
        } else {
            store::removed_since(client, known, current).ok().flatten()
        };
        if shared.series.advance(known, current, removed.as_deref()) {
            return;
        }
    }
}

/// What one job of a committed transaction got: the indices of its fenced groups that were
/// refused (their replica no longer led), or, when the advisory lock it was accepted under is
/// no longer held in its tenure, an error of its own while the other jobs commit.
type JobResult = Result<Vec<usize>, StoreError>;

/// A transaction's rows, kept per job and per fenced group so that verdicts found inside the
/// transaction can leave some out.
struct Rows<'a> {
    /// Each job's unconditional rows.
    plain: Vec<HeadRows<'a>>,
    /// (job, group index within the job, rows) of every fenced group.
    groups: Vec<(usize, usize, HeadRows<'a>)>,
    /// Index into the transaction's distinct lock fences, per job.
    lock_of: Vec<Option<usize>>,
}

/// Appends `from` to `to`.
fn extend_rows<'a>(to: &mut HeadRows<'a>, from: &HeadRows<'a>) {
    to.samples.extend_from_slice(&from.samples);
    to.histograms.extend_from_slice(&from.histograms);
    to.exemplars.extend_from_slice(&from.exemplars);
}

/// The (min, max) timestamp of a group's rows of every kind.
fn time_bounds(rows: &HeadRows) -> (i64, i64) {
    rows.samples
        .iter()
        .map(|r| r.timestamp_ms)
        .chain(rows.histograms.iter().map(|r| r.histogram.timestamp))
        .chain(rows.exemplars.iter().map(|r| r.exemplar.timestamp))
        .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)))
}

impl<'a> Rows<'a> {
    fn job_holds(&self, job: usize, verdicts: &head::Verdicts) -> bool {
        self.lock_of[job].is_none_or(|l| verdicts.locks.get(l).copied().unwrap_or(false))
    }

    /// The rows to store under `verdicts`, in key order, each (series, time) once: the first
    /// in job order wins. Jobs are merged in the order they were acknowledged (retried ones
    /// first), so a value re-sent for a timestamp after the first one's 2xx never replaces it,
    /// with asynchronous acks as with synchronous ones. In key order, index pages are touched
    /// in sequence, and two writers holding overlapping rows (a re-send racing its original)
    /// lock them in the same order, so cannot deadlock.
    fn chosen(&self, verdicts: &head::Verdicts) -> HeadRows<'a> {
        let mut rows = HeadRows::default();
        for (j, plain) in self.plain.iter().enumerate() {
            if !self.job_holds(j, verdicts) {
                continue;
            }
            extend_rows(&mut rows, plain);
            for (k, (_, _, group)) in self.groups.iter().enumerate().filter(|(_, g)| g.0 == j) {
                if verdicts.fences.get(k).copied().unwrap_or(false) {
                    extend_rows(&mut rows, group);
                }
            }
        }
        // Stable: equal keys keep job order, and dedup keeps the first.
        rows.samples.sort_by_key(|r| (r.series_id, r.timestamp_ms));
        rows.samples.dedup_by_key(|r| (r.series_id, r.timestamp_ms));
        rows.histograms
            .sort_by_key(|r| (r.series_id, r.histogram.timestamp));
        rows.histograms
            .dedup_by_key(|r| (r.series_id, r.histogram.timestamp));
        rows.exemplars.sort_by(|a, b| {
            (a.series_id, a.exemplar.timestamp)
                .cmp(&(b.series_id, b.exemplar.timestamp))
                .then_with(|| a.exemplar.labels.cmp(&b.exemplar.labels))
        });
        rows.exemplars.dedup_by(|a, b| {
            (a.series_id, a.exemplar.timestamp, &a.exemplar.labels)
                == (b.series_id, b.exemplar.timestamp, &b.exemplar.labels)
        });
        rows
    }
}

/// What a committed transaction did.
struct Written {
    /// Samples committed.
    stored: usize,
    results: Vec<JobResult>,
    /// The series generation at commit.
    generation: i64,
}

/// Stores the jobs' metadata and samples in one transaction.
fn write_jobs<'j>(
    client: &mut Client,
    shared: &Shared,
    jobs: &'j [Job],
) -> Result<Written, StoreError> {
    let metadata = new_metadata(shared, latest_metadata(jobs));
    if !metadata.is_empty() {
        store::upsert_metadata(client, &metadata)?;
        shared.metrics.metadata_stored.add(metadata.len() as u64);
        let mut written = shared
            .metadata_written
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if written.len() + metadata.len() > METADATA_CACHE_MAX {
            written.clear();
        }
        let now = Instant::now();
        written.extend(metadata.into_iter().map(|m| (m.metric.clone(), (m, now))));
    }

    // Every job's unconditional series, then its fenced groups' series, resolved in one batch.
    let all: Vec<&SeriesSamples> = jobs
        .iter()
        .flat_map(|job| {
            job.batch
                .series
                .iter()
                .chain(job.fenced.iter().flat_map(|g| g.series.iter()))
        })
        .collect();
    if all.is_empty() {
        return Ok(Written {
            stored: 0,
            results: jobs.iter().map(|_| Ok(Vec::new())).collect(),
            generation: shared.series.generation(),
        });
    }
    // Read before resolving: ids resolved from here on are valid in this generation or later.
    let generation = shared.series.generation();
    let resolved = resolve_ids(client, shared, &all, generation)?;
    let series = head::SeriesIds {
        generation,
        ids: &resolved,
    };
    let mut ids = resolved.iter().copied();
    let mut days = HashSet::new();
    let mut to_rows = |series: &'j [SeriesSamples]| -> HeadRows<'j> {
        let mut rows = HeadRows::default();
        for (s, series_id) in series.iter().zip(ids.by_ref()) {
            for sample in &s.samples {
                days.insert(day_of(sample.timestamp));
                rows.samples.push(SampleRow {
                    series_id,
                    timestamp_ms: sample.timestamp,
                    value: sample.value,
                });
            }
            rows.histograms
                .extend(s.histograms.iter().map(|histogram| HistogramRow {
                    series_id,
                    histogram,
                }));
            rows.exemplars
                .extend(s.exemplars.iter().map(|exemplar| ExemplarRow {
                    series_id,
                    exemplar,
                }));
        }
        rows
    };
    // In advisory-lock mode each job carries the lock tenure it was accepted under; each
    // distinct one is checked once, and a job whose tenure is over fails alone.
    let mut locks: Vec<LockFence> = Vec::new();
    let mut rows = Rows {
        plain: Vec::with_capacity(jobs.len()),
        groups: Vec::new(),
        lock_of: Vec::with_capacity(jobs.len()),
    };
    for (j, job) in jobs.iter().enumerate() {
        rows.plain.push(to_rows(&job.batch.series));
        for (g, group) in job.fenced.iter().enumerate() {
            rows.groups.push((j, g, to_rows(&group.series)));
        }
        rows.lock_of.push(job.lock.map(|lock| {
            locks.iter().position(|l| *l == lock).unwrap_or_else(|| {
                locks.push(lock);
                locks.len() - 1
            })
        }));
    }
    let fences: Vec<crate::fence::Fence> = rows
        .groups
        .iter()
        .map(|(j, g, group_rows)| {
            let group = &jobs[*j].fenced[*g];
            let (min_ms, max_ms) = time_bounds(group_rows);
            crate::fence::Fence {
                cluster: &group.cluster,
                replica: &group.replica,
                min_ms,
                max_ms,
            }
        })
        .collect();
    ensure_partitions(client, shared, &days)?;
    // The rows of the last build are the ones committed.
    let build = |verdicts: &head::Verdicts| rows.chosen(verdicts);
    let late_before = crate::engine::late_before_ms(shared.db_clock.get().map(|c| c.now()));
    let insert = |client: &mut Client| {
        head::insert_samples(client, series, &locks, &fences, late_before, &build)
    };
    let (path, verdicts, inserted) = match insert(client) {
        Err(e) if head::is_missing_partition(&e) => {
            // A partition we believed in is gone (dropped by retention or by hand): forget
            // what we knew and try once more.
            shared
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            ensure_partitions(client, shared, &days)?;
            insert(client)?
        }
        other => other?,
    };
    if path == InsertPath::Deduplicated {
        shared.metrics.duplicate_fallbacks.add(1);
    }
    let stored = inserted.stored;
    shared
        .metrics
        .histograms_stored
        .add(inserted.histograms.stored as u64);
    shared
        .metrics
        .exemplars_stored
        .add(inserted.exemplars as u64);
    if inserted.identical > 0 {
        shared
            .metrics
            .samples_duplicate
            .add(&["identical"], inserted.identical as u64);
    }
    if inserted.conflicting > 0 {
        shared
            .metrics
            .samples_duplicate
            .add(&["conflicting"], inserted.conflicting as u64);
        log::info!(
            "{} samples repeated a stored (series, time) with another value; the first value stays",
            inserted.conflicting
        );
    }
    let mut results: Vec<JobResult> = jobs.iter().map(|_| Ok(Vec::new())).collect();
    for (k, (j, g, _)) in rows.groups.iter().enumerate() {
        if !verdicts.fences.get(k).copied().unwrap_or(false) {
            if let Some(Ok(refused)) = results.get_mut(*j) {
                refused.push(*g);
            }
        }
    }
    for (j, job) in jobs.iter().enumerate() {
        if let (Some(lock), false) = (job.lock, rows.job_holds(j, &verdicts)) {
            results[j] = Err(StoreError::lock_lost(lock.key));
        }
    }
    Ok(Written {
        stored,
        results,
        generation: verdicts.generation,
    })
}

/// Moves the elements at `indices` out of `items`.
fn take_indices<T>(items: &mut Vec<T>, indices: &[usize]) -> Vec<T> {
    if indices.is_empty() {
        return Vec::new();
    }
    let mut taken = Vec::with_capacity(indices.len());
    let mut kept = Vec::with_capacity(items.len());
    for (i, item) in items.drain(..).enumerate() {
        if indices.contains(&i) {
            taken.push(item);
        } else {
            kept.push(item);
        }
    }
    *items = kept;
    taken
}

/// The metadata of all jobs, one entry per metric (the latest wins), as the upsert needs.
fn latest_metadata(jobs: &[Job]) -> Vec<Metadata> {
    let mut by_metric: HashMap<&str, &Metadata> = HashMap::new();
    for m in jobs.iter().flat_map(|j| j.batch.metadata.iter()) {
        by_metric.insert(m.metric.as_str(), m);
    }
    by_metric.into_values().cloned().collect()
}

/// The entries of `metadata` this instance has not written as they are in the last
/// [`METADATA_REWRITE_AFTER`].
fn new_metadata(shared: &Shared, metadata: Vec<Metadata>) -> Vec<Metadata> {
    let written = shared
        .metadata_written
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    metadata
        .into_iter()
        .filter(|m| {
            !written
                .get(&m.metric)
                .is_some_and(|(w, at)| w == m && at.elapsed() < METADATA_REWRITE_AFTER)
        })
        .collect()
}

fn day_of(timestamp_ms: i64) -> i32 {
    // Timestamps are validated to lie after 1970 and before now + 10 min: the day fits.
    i32::try_from(timestamp_ms.div_euclid(86_400_000)).unwrap_or(i32::MAX)
}

/// Series ids for `series`, in order: cached ones from memory, the rest from PostgreSQL in one
/// batched statement (creating missing series and their metrics' views).
fn resolve_ids(
    client: &mut Client,
    shared: &Shared,
    series: &[&SeriesSamples],
    generation: i64,
) -> Result<Vec<i64>, StoreError> {
    let keys: Vec<SeriesKey> = series
        .iter()
        .map(|s| shared.series.key(&s.labels))
        .collect();
    let mut ids = shared.series.get_many(&keys);
    // Each missed label set once, however often the jobs repeat it.
    let mut misses: HashMap<SeriesKey, &LabelSet> = HashMap::new();
    for ((id, key), s) in ids.iter().zip(&keys).zip(series) {
        if id.is_none() {
            misses.entry(*key).or_insert(&s.labels);
        }
    }
    let metrics = &shared.metrics;
    let missed = ids.iter().filter(|id| id.is_none()).count();
    metrics.series_cache_hits.add((ids.len() - missed) as u64);
    metrics.series_cache_misses.add(missed as u64);
    if !misses.is_empty() {
        let miss_list: Vec<(SeriesKey, &LabelSet)> = misses.into_iter().collect();
        ensure_metric_views(client, shared, miss_list.iter().map(|(_, l)| l.metric()))?;
        let metric_names: Vec<&str> = miss_list.iter().map(|(_, l)| l.metric()).collect();
        let json: Vec<String> = miss_list.iter().map(|(_, l)| l.to_json()).collect();
        let json_refs: Vec<&str> = json.iter().map(String::as_str).collect();
        let (resolved, created) = store::resolve_series(client, &metric_names, &json_refs)?;
        metrics.series_created.add(created);
        let found: HashMap<SeriesKey, i64> =
            miss_list.iter().map(|(k, _)| *k).zip(resolved).collect();
        let entries: Vec<(SeriesKey, i64)> = found.iter().map(|(k, v)| (*k, *v)).collect();
        if shared.series.insert_many(&entries, generation) {
            log::info!("series cache reached --series-cache-max and started over");
        }
        metrics.series_cache_size.set(shared.series.len() as i64);
        metrics
            .series_cache_bytes
            .set(shared.series.heap_bytes() as i64);
        for (id, key) in ids.iter_mut().zip(&keys) {
            if id.is_none() {
                *id = found.get(key).copied();
            }
        }
    }
    ids.into_iter()
        .map(|id| id.ok_or_else(|| StoreError::internal("a series id was not resolved")))
        .collect()
}

fn ensure_metric_views<'a>(
    client: &mut Client,
    shared: &Shared,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), StoreError> {
    let unknown: Vec<&str> = {
        let known = shared
            .metric_views
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut set: Vec<&str> = names.filter(|n| !known.contains(*n)).collect();
        set.sort_unstable();
        set.dedup();
        set
    };
    if unknown.is_empty() {
        return Ok(());
    }
    store::ensure_metric_views(client, &unknown)?;
    let mut known = shared
        .metric_views
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    known.extend(unknown.iter().map(|s| s.to_string()));
    Ok(())
}

fn ensure_partitions(
    client: &mut Client,
    shared: &Shared,
    days: &HashSet<i32>,
) -> Result<(), StoreError> {
    let missing: Vec<i32> = {
        let known = shared.partitions.lock().unwrap_or_else(|p| p.into_inner());
        days.iter()
            .copied()
            .filter(|d| !known.contains(d))
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    store::ensure_partitions(client, &missing)?;
    shared
        .partitions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(missing);
    Ok(())
}

/// Days to create partitions for ahead of need: yesterday to a week ahead of `now_ms`, so a
/// database or maintenance hiccup of days still finds today's partition in place.
pub fn days_ahead(now_ms: i64) -> Vec<i32> {
    let today = day_of(now_ms);
    (today - 1..=today + 7).collect()
}

/// Creates the partitions around now; called at start-up and by the maintenance loop.
pub fn prepare_partitions(
    client: &mut Client,
    shared: &Shared,
    now_ms: i64,
) -> Result<(), StoreError> {
    let days: HashSet<i32> = days_ahead(now_ms).into_iter().collect();
    ensure_partitions(client, shared, &days)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(metric: &str, help: &str) -> Metadata {
        Metadata {
            metric: metric.into(),
            metric_type: "counter",
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn metadata_written_lately_as_it_is_is_not_written_again() {
        let shared = Shared::new(Arc::new(Metrics::default()), 16);
        let first = vec![meta("a_total", "A."), meta("b_total", "B.")];
        assert_eq!(new_metadata(&shared, first.clone()), first);
        let now = Instant::now();
        shared
            .metadata_written
            .lock()
            .unwrap()
            .extend(first.iter().map(|m| (m.metric.clone(), (m.clone(), now))));
        // The same again: nothing to write. A changed help text: written.
        let again = vec![meta("a_total", "A."), meta("b_total", "B, now counted.")];
        assert_eq!(
            new_metadata(&shared, again),
            vec![meta("b_total", "B, now counted.")]
        );
    }
}
