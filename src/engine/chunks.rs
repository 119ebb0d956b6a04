//! Chunks: one row per (series, two-hour window), holding the series' samples of that window
//! compacted so far, encoded by [`super::codec`]: in `promgres.chunks` (daily partitions,
//! written once) when the window has closed, in `promgres.open_chunks` while it is open. This module encodes
//! them for COPY, fetches and decodes them, and keeps a late head sample from repeating a
//! time its chunk holds.

use super::{window_of, Inserted, SampleRow, PG_EPOCH_MS};
use crate::db_error::{Result, StoreError};

/// A decoded chunk row.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub series_id: i64,
    pub window_ms: i64,
    /// Time-ordered, one sample per time.
    pub samples: Vec<(i64, f64)>,
}

/// Decodes chunk bytes from the database; a corrupt chunk is a database-side error.
pub fn decode(data: &[u8]) -> Result<Vec<(i64, f64)>> {
    super::codec::decode(data).map_err(|e| StoreError::internal(e.to_string()))
}

/// Appends one field of a binary COPY row (or array element): its length, then its bytes.
fn put_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// A one-dimensional float8 array in PostgreSQL's binary form (ndim, has-nulls, element type
/// 701, length, lower bound, then each element), the floats' bits copied as they are.
fn float8_array(values: &[f64]) -> Vec<u8> {
    let mut array = Vec::with_capacity(20 + values.len() * 12);
    array.extend_from_slice(&1i32.to_be_bytes());
    array.extend_from_slice(&0i32.to_be_bytes());
    array.extend_from_slice(&701i32.to_be_bytes());
    array.extend_from_slice(&(values.len() as i32).to_be_bytes());
    array.extend_from_slice(&1i32.to_be_bytes());
    for v in values {
        put_field(&mut array, &v.to_bits().to_be_bytes());
    }
    array
}

fn pg_micros(ms: i64) -> [u8; 8] {
    ms.saturating_sub(PG_EPOCH_MS)
        .saturating_mul(1000)
        .to_be_bytes()
}

/// Binary COPY data for `promgres.chunks (series_id, start_time, end_time, samples, data,
/// nan_values)`, and with `written_cutoff` for `promgres.open_chunks (..., written_cutoff)`.
/// The NaN values go to a float8[] too, bit-exact, for the SQL decoder.
pub fn encode_copy(chunks: &[Chunk], written_cutoff: Option<i64>) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for c in chunks {
        let end = c.samples.last().map_or(c.window_ms, |s| s.0);
        let fields: i16 = if written_cutoff.is_some() { 7 } else { 6 };
        buf.extend_from_slice(&fields.to_be_bytes());
        put_field(&mut buf, &c.series_id.to_be_bytes());
        put_field(&mut buf, &pg_micros(c.window_ms));
        put_field(&mut buf, &pg_micros(end));
        put_field(&mut buf, &(c.samples.len() as i32).to_be_bytes());
        put_field(&mut buf, &super::codec::encode(&c.samples));
        let nans: Vec<f64> = c
            .samples
            .iter()
            .map(|s| s.1)
            .filter(|v| v.is_nan())
            .collect();
        if nans.is_empty() {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
        } else {
            put_field(&mut buf, &float8_array(&nans));
        }
        if let Some(cutoff) = written_cutoff {
            put_field(&mut buf, &cutoff.to_be_bytes());
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

/// The chunks of the given (series, window start) keys that exist.
pub fn fetch(tx: &mut postgres::Transaction, keys: &[(i64, i64)]) -> Result<Vec<Chunk>> {
    // A chunk's last sample lies in its window, so "reaching the window's start" is every
    // chunk of the key.
    let keys: Vec<(i64, i64, i64)> = keys.iter().map(|&(s, w)| (s, w, w)).collect();
    fetch_reaching(tx, &keys)
}

/// The chunks of the given (series, window start, time) keys whose last sample is at or
/// after the time: only those can hold it. A sender catching up after an outage sends times
/// past the end of the chunk compaction made meanwhile, so its inserts read no chunk data.
fn fetch_reaching(tx: &mut postgres::Transaction, keys: &[(i64, i64, i64)]) -> Result<Vec<Chunk>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let series: Vec<i64> = keys.iter().map(|k| k.0).collect();
    let windows: Vec<i64> = keys.iter().map(|k| k.1).collect();
    let times: Vec<i64> = keys.iter().map(|k| k.2).collect();
    let rows = tx.query(
        "SELECT c.series_id, k.w, c.data
           FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS k(s, w, t)
           JOIN promgres.chunks c
             ON c.series_id = k.s AND c.start_time = timestamptz 'epoch' + k.w * interval '1 millisecond'
            AND c.end_time >= timestamptz 'epoch' + k.t * interval '1 millisecond'
         UNION ALL
         SELECT c.series_id, k.w, c.data
           FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS k(s, w, t)
           JOIN promgres.open_chunks c
             ON c.series_id = k.s AND c.start_time = timestamptz 'epoch' + k.w * interval '1 millisecond'
            AND c.end_time >= timestamptz 'epoch' + k.t * interval '1 millisecond'",
        &[&series, &windows, &times],
    )?;
    decoded(rows)
}

fn decoded(rows: Vec<postgres::Row>) -> Result<Vec<Chunk>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let data: &[u8] = row.try_get(2)?;
        out.push(Chunk {
            series_id: row.try_get(0)?,
            window_ms: row.try_get(1)?,
            samples: decode(data)?,
        });
    }
    Ok(out)
}

/// Inside an insert transaction, after the rows were inserted into the head: removes from
/// the head each of `late` (rows old enough that compaction may have folded their window)
/// whose chunk holds its time already; the chunk's value was first and stays. Runs after the
/// insert so a compaction that committed meanwhile (the insert waited for its delete of the
/// same key) is seen. Returns how many were identical resends and how many conflicts.
pub fn drop_compacted_duplicates(
    tx: &mut postgres::Transaction,
    late: &[&SampleRow],
) -> Result<Inserted> {
    // Per (series, window) the earliest late time: sorted, the first of each key.
    let mut keys: Vec<(i64, i64, i64)> = late
        .iter()
        .map(|r| (r.series_id, window_of(r.timestamp_ms), r.timestamp_ms))
        .collect();
    keys.sort_unstable();
    keys.dedup_by_key(|k| (k.0, k.1));
    let chunks = fetch_reaching(tx, &keys)?;
    let mut found = Inserted::default();
    if chunks.is_empty() {
        return Ok(found);
    }
    let by_key: std::collections::HashMap<(i64, i64), &Chunk> = chunks
        .iter()
        .map(|c| ((c.series_id, c.window_ms), c))
        .collect();
    let (mut dup_series, mut dup_times) = (Vec::new(), Vec::new());
    for r in late {
        let Some(chunk) = by_key.get(&(r.series_id, window_of(r.timestamp_ms))) else {
            continue;
        };
        if let Ok(i) = chunk.samples.binary_search_by_key(&r.timestamp_ms, |s| s.0) {
            if chunk.samples[i].1.to_bits() == r.value.to_bits() {
                found.identical += 1;
            } else {
                found.conflicting += 1;
            }
            dup_series.push(r.series_id);
            dup_times.push(r.timestamp_ms);
        }
    }
    if !dup_series.is_empty() {
        tx.execute(
            "DELETE FROM promgres.samples p
               USING unnest($1::int8[], $2::int8[]) AS d(s, t)
              WHERE p.series_id = d.s AND p.time = timestamptz 'epoch' + d.t * interval '1 millisecond'",
            &[&dup_series, &dup_times],
        )?;
    }
    Ok(found)
}
