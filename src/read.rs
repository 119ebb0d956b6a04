//! Prometheus remote read (`POST /read`): decoding `prometheus.ReadRequest`, turning its
//! matchers into [`store::Matcher`]s, and answering with SAMPLES (one snappy `ReadResponse`,
//! native histograms beside float samples) or, when the client lists it first,
//! STREAMED_XOR_CHUNKS (frames of XOR chunks, and histogram chunks for native histograms,
//! produced series batch by series batch so memory stays flat). Histograms count against
//! `--read-sample-limit` like samples.
//!
//! Reads use a small pool of connections of their own, so queries never take a writer's.

use crate::decode::{self, DecodeError, Histogram};
use crate::histogram_chunk;
use crate::proto::{
    self, ChunkedReadResponse, ChunkedSeries, Label, ReadRequest, Sample, TimeSeries,
};
use crate::store::{self, Matcher, SelectedSeries, StoreError};
use crate::xor;
use crossbeam_channel::{Receiver, Sender};
use postgres::Client;
use prost::Message;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Series whose samples one streamed round trip fetches.
const STREAM_BATCH_SERIES: usize = 64;
/// Data-time bounds PostgreSQL's timestamptz arithmetic handles (years 1 to 9999).
const MIN_MS: i64 = -62_135_596_800_000;
const MAX_MS: i64 = 253_402_300_799_999;

#[derive(Debug)]
pub enum ReadError {
    Decode(DecodeError),
    BadMatcher(String),
    SampleLimit(usize),
    Busy(Duration),
    /// The read ran past `--read-timeout`.
    Deadline(Duration),
    Store(StoreError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Decode(e) => write!(f, "{e}"),
            ReadError::BadMatcher(e) => write!(f, "invalid matcher: {e}"),
            ReadError::SampleLimit(n) => write!(
                f,
                "query would return more than {n} samples (--read-sample-limit); narrow the time range or the matchers"
            ),
            ReadError::Busy(d) if d.is_zero() => write!(
                f,
                "too many remote reads queued (--read-concurrent-limit); retry later"
            ),
            ReadError::Busy(d) => write!(
                f,
                "too many concurrent reads (--read-concurrent-limit); none finished within {d:?}"
            ),
            ReadError::Deadline(d) => write!(
                f,
                "read not finished within {d:?} (--read-timeout); narrow the time range or the matchers"
            ),
            ReadError::Store(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

/// One query, ready for SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub start_ms: i64,
    pub end_ms: i64,
    pub matchers: Vec<Matcher>,
}

/// Decodes a snappy `ReadRequest` within the size limit.
pub fn decode_request(body: &[u8], max_decoded_bytes: usize) -> Result<ReadRequest, ReadError> {
    let raw =
        decode::decompress_read_request(body, max_decoded_bytes).map_err(ReadError::Decode)?;
    ReadRequest::decode(raw.as_slice()).map_err(|e| {
        ReadError::Decode(DecodeError::BadProtobuf(format!(
            "not a valid prometheus.ReadRequest: {e}"
        )))
    })
}

/// Whether the client asked for streamed XOR chunks before SAMPLES.
pub fn wants_stream(request: &ReadRequest) -> bool {
    request.accepted_response_types.first() == Some(&proto::RESPONSE_STREAMED_XOR_CHUNKS)
}

/// The plan of each query. With `ignore_replica` (HA), equality matchers on the replica label
/// are dropped: the reading Prometheus adds its own `__replica__` external label, which
/// promgres removed at ingest and would otherwise match nothing.
pub fn plan(request: &ReadRequest, ignore_replica: Option<&str>) -> Result<Vec<Plan>, ReadError> {
    request
        .queries
        .iter()
        .map(|q| {
            let mut matchers = Vec::with_capacity(q.matchers.len());
            for m in &q.matchers {
                if m.r#type == 0 && Some(m.name.as_str()) == ignore_replica {
                    continue;
                }
                if !decode::valid_label_name(&m.name) {
                    return Err(ReadError::BadMatcher(format!("label name {:?}", m.name)));
                }
                let (n, v) = (m.name.clone(), m.value.clone());
                matchers.push(match m.r#type {
                    0 => Matcher::Equal(n, v),
                    1 => Matcher::NotEqual(n, v),
                    2 => Matcher::Regex(n, v),
                    3 => Matcher::NotRegex(n, v),
                    t => return Err(ReadError::BadMatcher(format!("unknown matcher type {t}"))),
                });
            }
            // A query without matchers would select every series.
            if matchers.is_empty() {
                return Err(ReadError::BadMatcher(
                    "a query needs at least one label matcher (besides the HA replica label)"
                        .into(),
                ));
            }
            Ok(Plan {
                start_ms: q.start_timestamp_ms.clamp(MIN_MS, MAX_MS),
                end_ms: q.end_timestamp_ms.clamp(MIN_MS, MAX_MS),
                matchers,
            })
        })
        .collect()
}

fn labels_of(pairs: Vec<(String, String)>) -> Vec<Label> {
    pairs
        .into_iter()
        .map(|(name, value)| Label { name, value })
        .collect()
}

/// Series in label order, as Prometheus merges them.
fn sorted(mut series: Vec<SelectedSeries>) -> Vec<SelectedSeries> {
    series.sort_by(|a, b| a.1.cmp(&b.1));
    series
}

/// When a read must be done by, and how long it may take in all.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    pub fn after(timeout: Duration, from: Instant) -> Self {
        Deadline {
            at: from + timeout,
            timeout,
        }
    }

    fn check(&self) -> Result<(), ReadError> {
        if Instant::now() > self.at {
            Err(ReadError::Deadline(self.timeout))
        } else {
            Ok(())
        }
    }

    /// Checks the deadline and gives the next statement on `client` only the time left, so
    /// one long statement cannot outrun the read's deadline.
    fn bound(&self, client: &mut Client) -> Result<(), ReadError> {
        self.check()?;
        let left = self.at.saturating_duration_since(Instant::now());
        store::set_statement_timeout(client, left.max(Duration::from_millis(1)))?;
        Ok(())
    }
}

/// The SAMPLES answer: a snappy `ReadResponse` with one result per query. The sample limit is
/// enforced as rows arrive; a read over it, or past its deadline, stops at once.
pub fn samples_response(
    pooled: &mut PooledClient,
    plans: &[Plan],
    sample_limit: usize,
    deadline: Deadline,
) -> Result<Vec<u8>, ReadError> {
    let mut results = Vec::with_capacity(plans.len());
    let mut total = 0usize;
    for plan in plans {
        let client = pooled.client()?;
        deadline.bound(client)?;
        let series = sorted(store::select_series(client, &plan.matchers)?);
        let ids: Vec<i64> = series.iter().map(|(id, _)| *id).collect();
        let mut by_id: std::collections::HashMap<i64, Vec<Sample>> =
            std::collections::HashMap::new();
        deadline.bound(client)?;
        let complete = crate::engine::stream_samples(
            client,
            &ids,
            plan.start_ms,
            plan.end_ms,
            sample_limit - total,
            |id, timestamp, value| {
                total += 1;
                by_id
                    .entry(id)
                    .or_default()
                    .push(Sample { value, timestamp });
            },
        )?;
        if !complete {
            pooled.discard();
            return Err(ReadError::SampleLimit(sample_limit));
        }
        deadline.bound(client)?;
        let Some(mut histograms) = crate::engine::histograms::read(
            client,
            &ids,
            plan.start_ms,
            plan.end_ms,
            sample_limit - total,
        )?
        else {
            pooled.discard();
            return Err(ReadError::SampleLimit(sample_limit));
        };
        total += histograms.values().map(Vec::len).sum::<usize>();
        let timeseries = series
            .into_iter()
            .filter_map(|(id, labels)| {
                let samples = by_id.remove(&id).unwrap_or_default();
                let histograms = histograms.remove(&id).unwrap_or_default();
                if samples.is_empty() && histograms.is_empty() {
                    return None;
                }
                Some(TimeSeries {
                    labels: labels_of(labels),
                    samples,
                    histograms: histograms.iter().map(proto::Histogram::from).collect(),
                    exemplars: Vec::new(),
                })
            })
            .collect();
        results.push(proto::QueryResult { timeseries });
    }
    let raw = proto::ReadResponse { results }.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|e| ReadError::Store(StoreError::internal(format!("snappy: {e}"))))
}

/// Connections for reads, and the gate that bounds concurrent reads.
pub struct ReadPool {
    config: crate::pg_tls::DbConfig,
    idle: Mutex<Vec<Client>>,
    slots: (Sender<()>, Receiver<()>),
}

/// A pooled connection; returned to the pool (with its read slot) when dropped.
pub struct PooledClient {
    client: Option<Client>,
    pool: Arc<ReadPool>,
}

impl PooledClient {
    pub fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::internal("connection already returned"))
    }

    /// Closes the connection instead of returning it to the pool: a query was abandoned
    /// mid-stream, and the server would go on sending its rows.
    pub fn discard(&mut self) {
        self.client = None;
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(c);
            }
        }
        let _ = self.pool.slots.0.send(());
    }
}

impl ReadPool {
    /// A pool of at most `connections` connections, which is also the number of concurrent
    /// reads; further reads wait for one.
    pub fn new(
        db: &impl crate::pg_tls::ToDbConfig,
        connections: usize,
        bounds: &crate::pg_session::SessionBounds,
    ) -> Arc<ReadPool> {
        let config = crate::pg_session::config(db, crate::pg_session::Kind::Read, bounds);
        let n = connections.max(1);
        let (tx, rx) = crossbeam_channel::bounded(n);
        for _ in 0..n {
            let _ = tx.send(());
        }
        Arc::new(ReadPool {
            config,
            idle: Mutex::new(Vec::new()),
            slots: (tx, rx),
        })
    }

    /// A connection, waiting up to `wait` for a free slot.
    pub fn get(self: &Arc<Self>, wait: Duration) -> Result<PooledClient, ReadError> {
        self.slots
            .1
            .recv_timeout(wait)
            .map_err(|_| ReadError::Busy(wait))?;
        // From here the slot is owned by the guard, which gives it back on drop.
        let mut guard = PooledClient {
            client: None,
            pool: self.clone(),
        };
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        guard.client = Some(match idle {
            Some(c) => c,
            None => store::connect(&self.config)?,
        });
        Ok(guard)
    }
}

/// A streamed STREAMED_XOR_CHUNKS response body, produced as the client reads it: one frame
/// per series, series fetched in batches.
pub struct ChunkStream {
    client: PooledClient,
    plans: Vec<Plan>,
    query: usize,
    pending: std::collections::VecDeque<SelectedSeries>,
    started_query: bool,
    buffer: Vec<u8>,
    offset: usize,
    sample_limit: usize,
    samples_sent: usize,
    deadline: Deadline,
    done: bool,
}

impl ChunkStream {
    pub fn new(
        client: PooledClient,
        plans: Vec<Plan>,
        sample_limit: usize,
        deadline: Deadline,
    ) -> Self {
        ChunkStream {
            client,
            plans,
            query: 0,
            pending: Default::default(),
            started_query: false,
            buffer: Vec::new(),
            offset: 0,
            sample_limit,
            samples_sent: 0,
            deadline,
            done: false,
        }
    }

    /// Fills `buffer` with the next frames; false at the end.
    fn refill(&mut self) -> Result<bool, ReadError> {
        loop {
            self.deadline.check()?;
            let Some(plan) = self.plans.get(self.query).cloned() else {
                return Ok(false);
            };
            if !self.started_query {
                self.deadline.bound(self.client.client()?)?;
                let series = sorted(store::select_series(self.client.client()?, &plan.matchers)?);
                self.pending = series.into();
                self.started_query = true;
            }
            if self.pending.is_empty() {
                self.query += 1;
                self.started_query = false;
                continue;
            }
            let batch: Vec<SelectedSeries> = (0..STREAM_BATCH_SERIES)
                .filter_map(|_| self.pending.pop_front())
                .collect();
            let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
            let mut by_id: std::collections::HashMap<i64, Vec<(i64, f64)>> = Default::default();
            let mut sent = self.samples_sent;
            self.deadline.bound(self.client.client()?)?;
            let complete = crate::engine::stream_samples(
                self.client.client()?,
                &ids,
                plan.start_ms,
                plan.end_ms,
                self.sample_limit - self.samples_sent,
                |id, ts, v| {
                    sent += 1;
                    by_id.entry(id).or_default().push((ts, v));
                },
            )?;
            self.samples_sent = sent;
            if !complete {
                self.client.discard();
                return Err(ReadError::SampleLimit(self.sample_limit));
            }
            self.deadline.bound(self.client.client()?)?;
            let Some(mut histograms) = crate::engine::histograms::read(
                self.client.client()?,
                &ids,
                plan.start_ms,
                plan.end_ms,
                self.sample_limit - self.samples_sent,
            )?
            else {
                self.client.discard();
                return Err(ReadError::SampleLimit(self.sample_limit));
            };
            self.samples_sent += histograms.values().map(Vec::len).sum::<usize>();
            for (id, labels) in batch {
                let samples = by_id.remove(&id).unwrap_or_default();
                let histograms = histograms.remove(&id).unwrap_or_default();
                if samples.is_empty() && histograms.is_empty() {
                    continue;
                }
                let chunks = series_chunks(&samples, &histograms)?;
                // Prometheus refuses frames over 50 MB; a long range of a dense histogram
                // series goes out in several frames of about 1 MiB, as Prometheus sends them.
                let labels = labels_of(labels);
                let mut frame_chunks = Vec::new();
                let mut frame_bytes = 0usize;
                let last = chunks.len().saturating_sub(1);
                for (i, chunk) in chunks.into_iter().enumerate() {
                    frame_bytes += chunk.data.len();
                    frame_chunks.push(chunk);
                    if frame_bytes >= FRAME_BYTES || i == last {
                        let message = ChunkedReadResponse {
                            chunked_series: vec![ChunkedSeries {
                                labels: labels.clone(),
                                chunks: std::mem::take(&mut frame_chunks),
                            }],
                            query_index: self.query as i64,
                        };
                        self.buffer
                            .extend_from_slice(&xor::frame(&message.encode_to_vec()));
                        frame_bytes = 0;
                    }
                }
            }
            if !self.buffer.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// A streamed frame holds about this much chunk data.
const FRAME_BYTES: usize = 1 << 20;

/// A series' chunks for a streamed answer, in time order and never overlapping (Prometheus's
/// chunked-series iterator requires it): float samples and histograms merged into one
/// timeline and cut into runs of one kind, each run into XOR or histogram chunks. A float at
/// a time a histogram also holds is left out: Prometheus's storage holds one value per time,
/// and such a float is a sender's stale marker for a histogram series.
fn series_chunks(
    samples: &[(i64, f64)],
    histograms: &[Histogram],
) -> Result<Vec<proto::Chunk>, ReadError> {
    let mut chunks = Vec::new();
    let (mut i, mut j) = (0usize, 0usize);
    while i < samples.len() || j < histograms.len() {
        let floats_first = match (samples.get(i), histograms.get(j)) {
            (Some(f), Some(h)) => f.0 < h.timestamp,
            (Some(_), None) => true,
            _ => false,
        };
        if floats_first {
            let start = i;
            while i < samples.len() && histograms.get(j).is_none_or(|h| samples[i].0 < h.timestamp)
            {
                i += 1;
            }
            chunks.extend(
                samples[start..i]
                    .chunks(xor::MAX_SAMPLES_PER_CHUNK)
                    .map(|c| proto::Chunk {
                        min_time_ms: c.first().map_or(0, |s| s.0),
                        max_time_ms: c.last().map_or(0, |s| s.0),
                        r#type: proto::CHUNK_XOR,
                        data: xor::encode_chunk(c),
                    }),
            );
        } else {
            let start = j;
            while j < histograms.len()
                && samples
                    .get(i)
                    .is_none_or(|f| histograms[j].timestamp <= f.0)
            {
                // A float at this histogram's time is dropped.
                while samples
                    .get(i)
                    .is_some_and(|f| f.0 == histograms[j].timestamp)
                {
                    i += 1;
                }
                j += 1;
            }
            let encoded = histogram_chunk::encode_chunks(&histograms[start..j]).map_err(|e| {
                ReadError::Store(StoreError::internal(format!(
                    "stored histograms cannot be chunked: {e}"
                )))
            })?;
            chunks.extend(encoded.into_iter().map(|c| proto::Chunk {
                min_time_ms: c.min_time_ms,
                max_time_ms: c.max_time_ms,
                r#type: c.encoding,
                data: c.data,
            }));
        }
    }
    Ok(chunks)
}

impl Read for ChunkStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.offset >= self.buffer.len() {
            if self.done {
                return Ok(0);
            }
            self.buffer.clear();
            self.offset = 0;
            match self.refill() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                }
                Err(e) => {
                    // The status line is long gone: end with a frame whose checksum cannot
                    // match, so the client fails loudly instead of taking a truncated answer
                    // as complete.
                    log::warn!("streamed read failed mid-response: {e}");
                    let mut bad = xor::frame(e.to_string().as_bytes());
                    let len_bytes = bad.len() - e.to_string().len() - 4;
                    bad[len_bytes] ^= 0xff;
                    self.buffer = bad;
                    self.done = true;
                }
            }
        }
        let n = out.len().min(self.buffer.len() - self.offset);
        out[..n].copy_from_slice(&self.buffer[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::int_histogram as h;

    #[test]
    fn a_series_of_both_kinds_streams_one_timeline_without_overlap() {
        // Floats at 1-3, histograms at 4-6, a float stale marker at 6 (a histogram's time)
        // and floats again at 7-8.
        let samples = [
            (1, 1.0),
            (2, 1.0),
            (3, 1.0),
            (6, f64::NAN),
            (7, 2.0),
            (8, 2.0),
        ];
        let histograms = [h(4), h(5), h(6)];
        let chunks = series_chunks(&samples, &histograms).expect("chunks");
        let spans: Vec<(i32, i64, i64)> = chunks
            .iter()
            .map(|c| (c.r#type, c.min_time_ms, c.max_time_ms))
            .collect();
        assert_eq!(spans, [(1, 1, 3), (2, 4, 6), (1, 7, 8)]);
        for pair in chunks.windows(2) {
            assert!(pair[0].max_time_ms < pair[1].min_time_ms, "{spans:?}");
        }
        assert_eq!(series_chunks(&[], &[]).expect("empty").len(), 0);
        let only = series_chunks(&samples[..3], &[]).expect("floats");
        assert_eq!(only.len(), 1);
    }
}
