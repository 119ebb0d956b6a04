//! Native histograms in the engine: head rows (`promgres.histogram_head`, written by the
//! insert transaction), their compaction into one chunk per (series, two-hour window)
//! (`promgres.histogram_chunks`), and reading both back, merged. Head rows and chunks hold
//! the same encoding ([`super::histogram_codec`]): a head row is a one-histogram chunk.
//!
//! The float path's invariants hold here too: a (series, time) is in the head or in a
//! chunk, never both, and the first value stored wins. Among head rows the primary key
//! decides (`INSERT ... ON CONFLICT DO NOTHING`); against chunks the insert transaction drops
//! a late row whose chunk already holds its time, after its insert, as for floats.

use super::histogram_codec::{self, EncodedHistograms};
use super::{window_of, WINDOW_MS};
use crate::db_error::{Result, StoreError};
use crate::decode::Histogram;
use std::collections::BTreeMap;

/// A histogram on its way into the head.
#[derive(Debug, Clone, Copy)]
pub struct HistogramRow<'a> {
    pub series_id: i64,
    pub histogram: &'a Histogram,
}

/// What an insert stored: new histograms, and those whose (series, time) was stored already
/// (a resend; the first value stays).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramsInserted {
    pub stored: usize,
    pub repeated: usize,
}

/// Session-level try-lock key for histogram compaction: one instance at a time folds them.
const COMPACTION_LOCK_KEY: i64 = 0x7072_6f6d_6869_7374; // "promhist"

/// Head rows one compaction transaction folds at most: a transaction's memory and time stay
/// bounded however large the backlog (a day of an upgraded sender's histograms).
const COMPACTION_BATCH_ROWS: i64 = 20_000;

/// Inside the insert transaction: stores `rows` (sorted by (series, time), each key once) in
/// the head, keeping what a key holds already, then drops the rows older than
/// `late_before_ms` whose chunk holds their time (the chunk's value was first).
pub fn insert(
    tx: &mut postgres::Transaction,
    rows: &[HistogramRow],
    late_before_ms: i64,
) -> Result<HistogramsInserted> {
    if rows.is_empty() {
        return Ok(HistogramsInserted::default());
    }
    // One statement, arrays as parameters (sent in binary, so the floats keep their bits):
    // each row's floats are a slice of one flat array, as a float8[] per row cannot be a
    // parameter of unnest.
    let mut series = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut data = Vec::with_capacity(rows.len());
    let mut offsets = Vec::with_capacity(rows.len());
    let mut lengths = Vec::with_capacity(rows.len());
    let mut floats: Vec<f64> = Vec::new();
    for r in rows {
        let encoded = histogram_codec::encode(std::slice::from_ref(r.histogram));
        series.push(r.series_id);
        times.push(r.histogram.timestamp);
        offsets.push(i32::try_from(floats.len()).unwrap_or(i32::MAX));
        lengths.push(i32::try_from(encoded.floats.len()).unwrap_or(i32::MAX));
        floats.extend(encoded.floats);
        data.push(encoded.data);
    }
    // In key order, like float rows: two writers holding the same keys lock them in the same
    // order and cannot deadlock.
    let added = tx.execute(
        "INSERT INTO promgres.histogram_head (series_id, time, data, floats)
         SELECT s, timestamptz 'epoch' + t * interval '1 millisecond', d, ($6::float8[])[o + 1 : o + n]
           FROM unnest($1::int8[], $2::int8[], $3::bytea[], $4::int4[], $5::int4[]) AS x(s, t, d, o, n)
          ORDER BY s, t
         ON CONFLICT DO NOTHING",
        &[&series, &times, &data, &offsets, &lengths, &floats],
    )?;
    let mut stored = usize::try_from(added).unwrap_or(usize::MAX);
    let (late_series, late_times): (Vec<i64>, Vec<i64>) = rows
        .iter()
        .filter(|r| r.histogram.timestamp < late_before_ms)
        .map(|r| (r.series_id, r.histogram.timestamp))
        .unzip();
    if !late_series.is_empty() {
        // Rare (a sender catching up past the compaction cutoff), so decoding the chunk in
        // SQL is fine here.
        let dropped = tx.execute(
            "DELETE FROM promgres.histogram_head h
               USING unnest($1::int8[], $2::int8[]) AS k(s, t), promgres.histogram_chunks c
              WHERE h.series_id = k.s
                AND h.time = timestamptz 'epoch' + k.t * interval '1 millisecond'
                AND c.series_id = k.s
                AND c.start_time = timestamptz 'epoch' + (k.t - mod(k.t, $3::int8)) * interval '1 millisecond'
                AND c.end_time >= h.time
                AND EXISTS (SELECT 1 FROM promgres.histogram_samples(c.data, c.floats) d
                             WHERE d.sample_time = h.time)",
            &[&late_series, &late_times, &WINDOW_MS],
        )?;
        stored = stored.saturating_sub(usize::try_from(dropped).unwrap_or(0));
    }
    Ok(HistogramsInserted {
        stored,
        repeated: rows.len().saturating_sub(stored),
    })
}

fn decode(data: &[u8], floats: &[f64]) -> Result<Vec<Histogram>> {
    histogram_codec::decode(data, floats).map_err(|e| StoreError::internal(e.to_string()))
}

/// Merges `chunk` (time-ordered) and `head` into one time-ordered list, each time once: the
/// chunk's histogram wins an equal time (it was stored first).
fn merge(chunk: Vec<Histogram>, head: Vec<Histogram>) -> Vec<Histogram> {
    let mut all: Vec<(u8, Histogram)> = chunk
        .into_iter()
        .map(|h| (0, h))
        .chain(head.into_iter().map(|h| (1, h)))
        .collect();
    all.sort_by_key(|(src, h)| (h.timestamp, *src));
    all.dedup_by_key(|(_, h)| h.timestamp);
    all.into_iter().map(|(_, h)| h).collect()
}

/// What a histogram compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramCompaction {
    /// Head rows folded into chunks.
    pub histograms: usize,
    /// Chunks written (new or rewritten).
    pub chunks: usize,
    /// Batches that failed and were left for the next pass.
    pub failed: usize,
}

/// Folds head histograms older than `cutoff_ms` into their chunks, [`COMPACTION_BATCH_ROWS`]
/// head rows per transaction in key order (a series' rows may span two transactions: each
/// merges what it read into the chunk). One instance at a time: a pass that finds another
/// instance's transaction holding the lock stops (the other one is doing the work). Each
/// transaction reads its head rows and their chunks, rewrites the chunks, and deletes exactly
/// the head rows it read (by key: a late row committed meanwhile stays for the next pass),
/// then commits: a crash before commit leaves everything as it was. A batch that fails is
/// logged and counted and the pass goes on after it (its rows wait for the next pass), so one
/// bad row cannot stop compaction. `keep_going` is asked before each batch (shutdown).
pub fn compact(
    client: &mut postgres::Client,
    cutoff_ms: i64,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<HistogramCompaction> {
    let mut stats = HistogramCompaction::default();
    // Series ids are positive: every row sorts after (MIN, epoch).
    let mut after: (i64, i64) = (i64::MIN, 0);
    while keep_going() {
        match compact_batch(client, cutoff_ms, after) {
            Ok(Batch::Done) => break,
            Ok(Batch::Locked) => break,
            Ok(Batch::Folded { last, rows, chunks }) => {
                after = last;
                stats.histograms += rows;
                stats.chunks += chunks;
            }
            Err((e, Some(last))) => {
                log::warn!(
                    "compaction: histograms after series {} at {} ms left for the next pass: {e}",
                    after.0,
                    after.1
                );
                stats.failed += 1;
                after = last;
            }
            Err((e, None)) => return Err(e),
        }
    }
    Ok(stats)
}

/// What one compaction transaction did.
enum Batch {
    /// No head row below the cutoff after the start key.
    Done,
    /// Another instance is compacting.
    Locked,
    /// Folded `rows` head rows into `chunks` chunks; `last` is the last key read.
    Folded {
        last: (i64, i64),
        rows: usize,
        chunks: usize,
    },
}

/// One compaction transaction over the head rows after key `after`. On failure, the error
/// and, when the rows were read, the last key read (so the pass can go on after them).
fn compact_batch(
    client: &mut postgres::Client,
    cutoff_ms: i64,
    after: (i64, i64),
) -> std::result::Result<Batch, (StoreError, Option<(i64, i64)>)> {
    let mut tx = client.transaction().map_err(|e| (e.into(), None))?;
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&COMPACTION_LOCK_KEY],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| (e.into(), None))?;
    if !locked {
        return Ok(Batch::Locked);
    }
    let rows = tx
        .query(
            "SELECT series_id, (extract(epoch FROM time) * 1000)::int8, data, floats
               FROM promgres.histogram_head
              WHERE (series_id, time) > ($1, timestamptz 'epoch' + $2::int8 * interval '1 millisecond')
                AND time < timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
              ORDER BY series_id, time
              LIMIT $4",
            &[&after.0, &after.1, &cutoff_ms, &COMPACTION_BATCH_ROWS],
        )
        .map_err(|e| (e.into(), None))?;
    let Some(last_row) = rows.last() else {
        return Ok(Batch::Done);
    };
    let last: (i64, i64) = match (last_row.try_get(0), last_row.try_get(1)) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => return Err((e.into(), None)),
    };
    fold(&mut tx, &rows)
        .and_then(|chunks| {
            tx.commit()?;
            Ok(Batch::Folded {
                last,
                rows: rows.len(),
                chunks,
            })
        })
        .map_err(|e| (e, Some(last)))
}

/// Inside a compaction transaction: merges `rows` (head rows, key order) into their chunks
/// and deletes them from the head; returns the chunks written.
fn fold(tx: &mut postgres::Transaction, rows: &[postgres::Row]) -> Result<usize> {
    let mut head: BTreeMap<(i64, i64), Vec<Histogram>> = BTreeMap::new();
    let (mut keys_series, mut keys_times) = (Vec::new(), Vec::new());
    for row in rows {
        let series_id: i64 = row.try_get(0)?;
        let ms: i64 = row.try_get(1)?;
        let data: &[u8] = row.try_get(2)?;
        let floats: Vec<f64> = row.try_get(3)?;
        keys_series.push(series_id);
        keys_times.push(ms);
        head.entry((series_id, window_of(ms)))
            .or_default()
            .extend(decode(data, &floats)?);
    }
    let (w_series, w_starts): (Vec<i64>, Vec<i64>) = head.keys().copied().unzip();
    let existing = tx.query(
        "SELECT c.series_id, k.w, c.data, c.floats
           FROM unnest($1::int8[], $2::int8[]) AS k(s, w)
           JOIN promgres.histogram_chunks c
             ON c.series_id = k.s
            AND c.start_time = timestamptz 'epoch' + k.w * interval '1 millisecond'",
        &[&w_series, &w_starts],
    )?;
    let mut chunks: BTreeMap<(i64, i64), Vec<Histogram>> = BTreeMap::new();
    for row in &existing {
        let data: &[u8] = row.try_get(2)?;
        let floats: Vec<f64> = row.try_get(3)?;
        chunks.insert((row.try_get(0)?, row.try_get(1)?), decode(data, &floats)?);
    }
    let mut written = 0;
    for (key, fresh) in head {
        let merged = merge(chunks.remove(&key).unwrap_or_default(), fresh);
        let Some(last) = merged.last() else {
            continue;
        };
        let end_ms = last.timestamp;
        let count = i32::try_from(merged.len()).unwrap_or(i32::MAX);
        let EncodedHistograms { data, floats } = histogram_codec::encode(&merged);
        tx.execute(
            "INSERT INTO promgres.histogram_chunks (series_id, start_time, end_time, samples, data, floats)
             VALUES ($1, timestamptz 'epoch' + $2::int8 * interval '1 millisecond',
                     timestamptz 'epoch' + $3::int8 * interval '1 millisecond', $4, $5, $6)
             ON CONFLICT (series_id, start_time) DO UPDATE
                SET end_time = EXCLUDED.end_time, samples = EXCLUDED.samples,
                    data = EXCLUDED.data, floats = EXCLUDED.floats",
            &[&key.0, &key.1, &end_ms, &count, &data, &floats],
        )?;
        written += 1;
    }
    let deleted = tx.execute(
        "DELETE FROM promgres.histogram_head h
           USING unnest($1::int8[], $2::int8[]) AS k(s, t)
          WHERE h.series_id = k.s AND h.time = timestamptz 'epoch' + k.t * interval '1 millisecond'",
        &[&keys_series, &keys_times],
    )?;
    if deleted != keys_series.len() as u64 {
        // Only this pass deletes head rows below the cutoff, under the lock; anything else
        // means the rows moved under us: roll back and leave them for the next pass.
        return Err(StoreError::internal(format!(
            "histogram compaction read {} head rows but deleted {deleted}; rolled back",
            keys_series.len()
        )));
    }
    Ok(written)
}

/// The histograms of `series_ids` in `[start_ms, end_ms]`, per series in time order, each
/// time once (a chunk's first). Rows are counted as they arrive: `None` as soon as more than
/// `max_rows` histograms were found, the rest never buffered but still in flight on the
/// connection, so the caller must not reuse it.
pub fn read(
    client: &mut postgres::Client,
    series_ids: &[i64],
    start_ms: i64,
    end_ms: i64,
    max_rows: usize,
) -> Result<Option<BTreeMap<i64, Vec<Histogram>>>> {
    use postgres::fallible_iterator::FallibleIterator;
    let window_floor = start_ms.saturating_sub(WINDOW_MS);
    let params: [&(dyn postgres::types::ToSql + Sync); 4] =
        [&series_ids, &start_ms, &end_ms, &window_floor];
    let mut rows = client.query_raw(
        "SELECT series_id, 0 AS src, data, floats FROM promgres.histogram_chunks
          WHERE series_id = ANY($1)
            AND start_time > timestamptz 'epoch' + $4::int8 * interval '1 millisecond'
            AND start_time <= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
            AND end_time >= timestamptz 'epoch' + $2::int8 * interval '1 millisecond'
         UNION ALL
         SELECT series_id, 1, data, floats FROM promgres.histogram_head
          WHERE series_id = ANY($1)
            AND time >= timestamptz 'epoch' + $2::int8 * interval '1 millisecond'
            AND time <= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'",
        params,
    )?;
    // Per series: (time, source, histogram); sorted and de-duplicated at the end.
    let mut found: BTreeMap<i64, Vec<(i64, u8, Histogram)>> = BTreeMap::new();
    let mut count = 0usize;
    while let Some(row) = rows.next()? {
        let series_id: i64 = row.try_get(0)?;
        let src: i32 = row.try_get(1)?;
        let data: &[u8] = row.try_get(2)?;
        let floats: Vec<f64> = row.try_get(3)?;
        let part = found.entry(series_id).or_default();
        for h in decode(data, &floats)? {
            if h.timestamp >= start_ms && h.timestamp <= end_ms {
                count += 1;
                part.push((h.timestamp, u8::from(src != 0), h));
            }
        }
        // A chunk and a head row never hold the same time, so the count is exact; one
        // over the limit is enough to refuse.
        if count > max_rows {
            return Ok(None);
        }
    }
    let mut out = BTreeMap::new();
    for (id, mut part) in found {
        part.sort_by_key(|(t, src, _)| (*t, *src));
        part.dedup_by_key(|(t, _, _)| *t);
        out.insert(id, part.into_iter().map(|(_, _, h)| h).collect());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram told apart by its sum.
    fn h(t: i64, sum: u64) -> Histogram {
        Histogram {
            sum: sum as f64,
            ..crate::decode::tests::int_histogram(t)
        }
    }

    #[test]
    fn merge_keeps_the_chunks_histogram_on_an_equal_time() {
        let merged = merge(vec![h(1, 1), h(3, 3)], vec![h(2, 20), h(3, 30), h(4, 40)]);
        let got: Vec<(i64, f64)> = merged.iter().map(|x| (x.timestamp, x.sum)).collect();
        assert_eq!(got, [(1, 1.0), (2, 20.0), (3, 3.0), (4, 40.0)]);
    }
}
