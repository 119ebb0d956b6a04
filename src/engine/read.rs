//! Reading samples back: chunks and head rows of the asked series and time range, merged
//! into one time-ordered stream per series.

use super::chunks;
use super::WINDOW_MS;
use crate::db_error::Result;

/// Calls `on_row(series id, ms, value)` for each sample of the given series in
/// `[start_ms, end_ms]`, ordered by series then time; the value's bits are as stored.
/// Chunks are decoded here, in Rust; only chunks overlapping the range are read. Stops once
/// more than `max_rows` samples were produced and returns `Ok(false)`: the rest is never
/// buffered, but is still in flight on the connection, so the caller must not reuse it.
pub fn stream_samples(
    client: &mut postgres::Client,
    series_ids: &[i64],
    start_ms: i64,
    end_ms: i64,
    max_rows: usize,
    mut on_row: impl FnMut(i64, i64, f64),
) -> Result<bool> {
    use postgres::fallible_iterator::FallibleIterator;
    let window_floor = start_ms.saturating_sub(WINDOW_MS);
    let params: [&(dyn postgres::types::ToSql + Sync); 4] =
        [&series_ids, &start_ms, &end_ms, &window_floor];
    // Ordered by series only: PostgreSQL 15 sorts the rows of `series_id = ANY(...)` either
    // way, and one key sorts about a third faster than (series, time). Within a series the
    // samples are sorted here; on an equal time (which the engine never stores, but a reader
    // must not show twice) the chunk's sample (src 0) is the one kept.
    let mut rows = client.query_raw(
        "SELECT series_id, 0 AS src, start_time AS t, data, NULL::float8 AS value
           FROM promgres.chunks
          WHERE series_id = ANY($1)
            AND start_time > timestamptz 'epoch' + $4::int8 * interval '1 millisecond'
            AND start_time <= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
            AND end_time >= timestamptz 'epoch' + $2::int8 * interval '1 millisecond'
         UNION ALL
         SELECT series_id, 0, start_time, data, NULL::float8
           FROM promgres.open_chunks
          WHERE series_id = ANY($1)
            AND start_time <= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
            AND end_time >= timestamptz 'epoch' + $2::int8 * interval '1 millisecond'
         UNION ALL
         SELECT series_id, 1, time, NULL::bytea, value
           FROM promgres.samples
          WHERE series_id = ANY($1)
            AND time >= timestamptz 'epoch' + $2::int8 * interval '1 millisecond'
            AND time <= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
          ORDER BY 1",
        params,
    )?;
    let mut produced = 0usize;
    let mut current: Option<i64> = None;
    let mut samples: Vec<(i64, i32, f64)> = Vec::new();
    let mut flush =
        |series: i64, samples: &mut Vec<(i64, i32, f64)>, produced: &mut usize| -> bool {
            samples.sort_by_key(|s| (s.0, s.1));
            samples.dedup_by_key(|s| s.0);
            for &(t, _, v) in samples.iter() {
                *produced += 1;
                if *produced > max_rows {
                    return false;
                }
                on_row(series, t, v);
            }
            samples.clear();
            true
        };
    while let Some(row) = rows.next()? {
        let series: i64 = row.try_get(0)?;
        if current.is_some_and(|c| c != series) {
            if let Some(c) = current {
                if !flush(c, &mut samples, &mut produced) {
                    return Ok(false);
                }
            }
        }
        current = Some(series);
        let src: i32 = row.try_get(1)?;
        if src == 0 {
            let data: &[u8] = row.try_get(3)?;
            samples.extend(
                chunks::decode(data)?
                    .into_iter()
                    .filter(|s| s.0 >= start_ms && s.0 <= end_ms)
                    .map(|(t, v)| (t, 0, v)),
            );
        } else {
            let ms = super::compact::ms_of(row.try_get(2)?);
            samples.push((ms, 1, row.try_get(4)?));
        }
        if produced + samples.len() > max_rows.saturating_add(1) {
            return Ok(false);
        }
    }
    if let Some(c) = current {
        if !flush(c, &mut samples, &mut produced) {
            return Ok(false);
        }
    }
    Ok(true)
}
