//! Compaction: folds head rows older than the cutoff into their windows' chunks, one
//! transaction per range of series ids and day, shared by every instance through a try-lock
//! per range.
//!
//! Each transaction (REPEATABLE READ) reads the head rows of its range and slice, merges them
//! with the chunks they belong to (the open window's chunk, or a late sample's), writes the
//! chunks, and deletes exactly the rows it read (the same snapshot). A crash or an error at
//! any point rolls all of it back, so the work is repeated, never lost or doubled; rows
//! committed after the snapshot stay in the head for the next pass. Ingest never waits for it:
//! writers insert new keys, which the compactor's deletes do not touch.

use super::chunks::{self, Chunk};
use super::{window_of, GRACE_MS, SLICE_MS, WINDOW_MS};
use crate::db_error::{Result, StoreError};
use postgres::{Client, IsolationLevel};
use std::collections::BTreeMap;

/// Series ids per compaction transaction: at 15 s scrapes a two-hour window of 500 series is
/// 240,000 samples, a few MiB in memory.
pub const SERIES_PER_TX: i64 = 500;

/// First key of the per-range try-locks (the second is the range number).
const COMPACTION_LOCK: i32 = 0x636f_6d70; // "comp"

const DAY_MS: i64 = 86_400_000;

/// The instant compaction folds up to, for a database clock reading: [`GRACE_MS`] before it,
/// rounded down to a [`SLICE_MS`] step.
pub fn cutoff_ms(db_now_ms: i64) -> i64 {
    db_now_ms.saturating_sub(GRACE_MS).div_euclid(SLICE_MS) * SLICE_MS
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Head rows folded into chunks (and deleted from the head).
    pub samples: u64,
    /// Chunks written; `rewritten` of them replaced a chunk (late samples merged in).
    pub chunks: u64,
    pub rewritten: u64,
    /// Head rows whose time their chunk held already (dropped; the chunk's value stays).
    pub duplicates: u64,
    /// Range transactions done, and skipped because another instance held them.
    pub ranges_done: u64,
    pub ranges_skipped: u64,
    /// Range transactions that failed (left for the next pass).
    pub ranges_failed: u64,
    /// Chunks of closed windows moved from `open_chunks` to the daily partitions by
    /// [`promote_closed`].
    pub promoted: u64,
    /// Ranges (grid cells x days) in this pass, and how many are behind us: progress.
    pub ranges_total: u64,
    pub ranges_visited: u64,
}

/// Milliseconds since the epoch, rounded down (so a time before 1970 lands in the window
/// and day that hold it).
pub(crate) fn ms_of(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let partial = i64::from(d.subsec_nanos() % 1_000_000 != 0);
            -i64::try_from(d.as_millis()).unwrap_or(i64::MAX) - partial
        }
    }
}

/// Head partition days that may hold rows older than `cutoff`, oldest first.
fn head_days(client: &mut Client, cutoff: i64) -> Result<Vec<i32>> {
    let rows = client.query(
        "SELECT (to_date(substr(c.relname, 9), 'YYYYMMDD') - DATE '1970-01-01')::int4
           FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'promgres.samples'::regclass
            AND c.relname ~ '^samples_[0-9]{8}$'
            AND NOT i.inhdetachpending
          ORDER BY 1",
        &[],
    )?;
    let mut days = Vec::new();
    for row in rows {
        let day: i32 = row.try_get(0)?;
        if i64::from(day) * DAY_MS < cutoff {
            days.push(day);
        }
    }
    Ok(days)
}

/// Which head days a pass visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every head partition older than the cutoff (a cheap check skips empty ones): at start,
    /// when the cutoff moves a slice, and for `promgres compact`.
    AllDays,
    /// Only the days writers marked in `promgres.compaction_pending` because they stored
    /// samples there that may be older than the cutoff (late samples): the half-hourly sweep,
    /// which thus never reads head partitions for nothing.
    Pending,
}

/// One compaction pass over the head rows older than `cutoff` (normally [`cutoff_ms`] of
/// the database clock; a later cutoff is only safe on an idle database, as writers check for
/// compacted duplicates only below the normal cutoff) in the days `scope` names. `progress`
/// is called after each range; when it returns false the pass stops there (shutdown): what
/// is committed stays, the rest waits for the next pass.
pub fn compact(
    client: &mut Client,
    cutoff: i64,
    scope: Scope,
    progress: &mut dyn FnMut(&CompactionStats) -> bool,
) -> Result<CompactionStats> {
    compact_bounded(client, cutoff, scope, MAX_ROWS_PER_TX, progress)
}

/// [`compact`] with another bound on the head rows one transaction reads.
pub fn compact_bounded(
    client: &mut Client,
    cutoff: i64,
    scope: Scope,
    max_rows: u64,
    progress: &mut dyn FnMut(&CompactionStats) -> bool,
) -> Result<CompactionStats> {
    let mut stats = CompactionStats::default();
    let days: Vec<i32> = match scope {
        Scope::AllDays => head_days(client, cutoff)?,
        Scope::Pending => client
            .query(
                "SELECT day FROM promgres.compaction_pending
                  WHERE day::int8 * 86400000 < $1 ORDER BY day",
                &[&cutoff],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?,
    };
    let mut slices = Vec::new();
    for day in days {
        // The mark goes first, in its own transaction: a late sample committed after this
        // marks the day again, one committed before is read by the range transactions below.
        // (A writer that finds the day still marked takes no lock on the mark, so its rows
        // may commit after both: they stay in the head, visible, until the next full pass.)
        client.execute(
            "DELETE FROM promgres.compaction_pending WHERE day = $1",
            &[&day],
        )?;
        let from = i64::from(day) * DAY_MS;
        let to = (from + DAY_MS).min(cutoff);
        // Skip days with nothing left to fold (the common case for all but the newest).
        let any: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM promgres.samples
                   WHERE time >= timestamptz 'epoch' + $1::int8 * interval '1 millisecond'
                     AND time < timestamptz 'epoch' + $2::int8 * interval '1 millisecond')",
                &[&from, &to],
            )?
            .try_get(0)?;
        if any {
            slices.push((day, from, to));
        }
    }
    if slices.is_empty() {
        promote_closed(client, cutoff, &mut stats)?;
        return Ok(stats);
    }
    // Ranges are cells of a fixed grid of SERIES_PER_TX ids (every instance cuts the same
    // cells, whatever ids retention removed), and only cells holding a series are visited.
    let cells: i64 = client
        .query_one(
            "SELECT count(DISTINCT id / $1) FROM promgres.series",
            &[&SERIES_PER_TX],
        )?
        .try_get(0)?;
    stats.ranges_total = u64::try_from(cells).unwrap_or(0) * slices.len() as u64;
    for (day, from, to) in slices {
        // The day's chunk partition first, once, in its own short transaction: creating it
        // takes the partition-creation lock, which writers creating head partitions also take.
        ensure_chunk_partitions_for(client, from)?;
        let mut cell = next_cell(client, i64::MIN)?;
        while let Some(k) = cell {
            let first = k * SERIES_PER_TX;
            let key = LockKey { day, cell: k };
            let span = Span { from, to, cutoff };
            match compact_span(
                client,
                key,
                first,
                first + SERIES_PER_TX,
                span,
                max_rows,
                &mut stats,
            ) {
                Ok(()) => {}
                Err(e) if e.connection_lost => return Err(e),
                Err(e) => {
                    // One range's failure (a serialization failure against another
                    // instance, a chunk that does not decode) must not stop the rest: it
                    // is left for the next pass, and the day is marked for the next sweep.
                    stats.ranges_failed += 1;
                    log::warn!(
                        "compaction: series ids {first}..{} of day {day} left for the next pass: {e}",
                        first + SERIES_PER_TX
                    );
                    client.execute(
                        "INSERT INTO promgres.compaction_pending (day) VALUES ($1)
                         ON CONFLICT (day) DO NOTHING",
                        &[&day],
                    )?;
                }
            }
            stats.ranges_visited += 1;
            if !progress(&stats) {
                return Ok(stats);
            }
            cell = next_cell(client, first + SERIES_PER_TX)?;
        }
    }
    promote_closed(client, cutoff, &mut stats)?;
    Ok(stats)
}

/// The grid cell of the first series id at or after `from_id`.
fn next_cell(client: &mut Client, from_id: i64) -> Result<Option<i64>> {
    let id: Option<i64> = client
        .query_one(
            "SELECT min(id) FROM promgres.series WHERE id >= $1",
            &[&from_id],
        )?
        .try_get(0)?;
    Ok(id.map(|id| id.div_euclid(SERIES_PER_TX)))
}

/// The try-lock a range is claimed with: one per (head day, grid cell), the same for a
/// range's split halves, so instances never work on overlapping ids of one day at once.
#[derive(Debug, Clone, Copy)]
struct LockKey {
    day: i32,
    cell: i64,
}

/// Head rows one compaction transaction reads at most (about 16 bytes each in memory, and
/// the encoding time a transaction sits idle): a range holding more (dense series, or a day
/// of an upgraded database) is split in halves, down to one series.
const MAX_ROWS_PER_TX: u64 = 1_000_000;

/// Compacts series ids `[first, end)`, splitting the range while it holds too many rows.
#[allow(clippy::too_many_arguments)]
fn compact_span(
    client: &mut Client,
    key: LockKey,
    first: i64,
    end: i64,
    span: Span,
    max_rows: u64,
    stats: &mut CompactionStats,
) -> Result<()> {
    let limit = if end - first > 1 { max_rows } else { u64::MAX };
    if compact_range(client, key, first, end, span, limit, stats)? == Range::TooBig {
        let mid = first + (end - first) / 2;
        compact_span(client, key, first, mid, span, max_rows, stats)?;
        compact_span(client, key, mid, end, span, max_rows, stats)?;
    }
    Ok(())
}

/// The head rows a range transaction folds, `[from, to)` (a day cut at the cutoff), and the
/// pass's cutoff, which the chunks it leaves in `open_chunks` are marked with.
#[derive(Debug, Clone, Copy)]
struct Span {
    from: i64,
    to: i64,
    cutoff: i64,
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    Done,
    /// More than the row limit: rolled back, nothing done.
    TooBig,
}

/// Makes sure the chunk partition of the day holding `ms` exists.
pub fn ensure_chunk_partitions_for(client: &mut Client, ms: i64) -> Result<()> {
    let d = i32::try_from(ms.div_euclid(DAY_MS))
        .map_err(|_| StoreError::internal("day out of range"))?;
    client.execute(
        "SELECT promgres.ensure_chunk_partition(DATE '1970-01-01' + $1::int4)",
        &[&d],
    )?;
    Ok(())
}

/// Folds the head rows of series ids `[first, end)` with times in `[from, to)` into chunks,
/// in one transaction; skipped when another instance holds the range.
fn compact_range(
    client: &mut Client,
    key: LockKey,
    first: i64,
    end: i64,
    span: Span,
    limit: u64,
    stats: &mut CompactionStats,
) -> Result<Range> {
    match with_range_lock(client, key, |c| {
        compact_locked(c, first, end, span, limit, stats)
    })? {
        Some(outcome) => Ok(outcome),
        None => {
            stats.ranges_skipped += 1;
            Ok(Range::Done)
        }
    }
}

/// Runs `work` holding the range's session try-lock; None when another session holds it.
/// A session lock taken before the transaction starts, so the transaction's snapshot is taken
/// while holding it and sees everything the previous holder committed.
fn with_range_lock<T>(
    client: &mut Client,
    key: LockKey,
    work: impl FnOnce(&mut Client) -> Result<T>,
) -> Result<Option<T>> {
    let (k1, k2) = (
        COMPACTION_LOCK.wrapping_add(key.day),
        i32::try_from(key.cell).unwrap_or(i32::MAX),
    );
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&k1, &k2])?
        .try_get(0)?;
    if !locked {
        return Ok(None);
    }
    let result = work(client);
    let unlock = client.execute("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2]);
    let outcome = result?;
    unlock?;
    Ok(Some(outcome))
}

/// Moves the chunks of windows that closed (all of them older than `cutoff`) from
/// `open_chunks` to the daily partitions, per (day, cell) under the range's lock: those
/// written by a pass with an earlier cutoff, so a chunk that this pass (or a sweep since the
/// last cutoff) rewrote waits until late samples for it stop.
fn promote_closed(client: &mut Client, cutoff: i64, stats: &mut CompactionStats) -> Result<()> {
    let last_closed_start = cutoff.saturating_sub(WINDOW_MS);
    let rows = client.query(
        "SELECT DISTINCT floor(extract(epoch FROM start_time) * 1000 / 86400000)::int4,
                series_id / $2
           FROM promgres.open_chunks
          WHERE start_time <= timestamptz 'epoch' + $1::int8 * interval '1 millisecond'
            AND written_cutoff < $3
          ORDER BY 1, 2",
        &[&last_closed_start, &SERIES_PER_TX, &cutoff],
    )?;
    let mut ensured = None;
    for row in rows {
        let (day, cell): (i32, i64) = (row.try_get(0)?, row.try_get(1)?);
        let day_start = i64::from(day) * DAY_MS;
        if ensured != Some(day) {
            ensure_chunk_partitions_for(client, day_start)?;
            ensured = Some(day);
        }
        let first = cell * SERIES_PER_TX;
        let moved = with_range_lock(client, LockKey { day, cell }, |c| {
            Ok(c.execute(
                "WITH moved AS (
                     DELETE FROM promgres.open_chunks
                      WHERE series_id >= $1 AND series_id < $2
                        AND start_time >= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
                        AND start_time < timestamptz 'epoch' + $4::int8 * interval '1 millisecond'
                        AND start_time <= timestamptz 'epoch' + $5::int8 * interval '1 millisecond'
                        AND written_cutoff < $6
                     RETURNING series_id, start_time, end_time, samples, data, nan_values)
                 INSERT INTO promgres.chunks (series_id, start_time, end_time, samples, data, nan_values)
                 SELECT * FROM moved",
                &[
                    &first,
                    &(first + SERIES_PER_TX),
                    &day_start,
                    &(day_start + DAY_MS),
                    &last_closed_start,
                    &cutoff,
                ],
            )?)
        })?;
        match moved {
            Some(n) => stats.promoted += n,
            None => stats.ranges_skipped += 1,
        }
    }
    Ok(())
}

/// [`compact_range`]'s transaction, run holding the range's lock.
fn compact_locked(
    client: &mut Client,
    first: i64,
    end: i64,
    span: Span,
    limit: u64,
    stats: &mut CompactionStats,
) -> Result<Range> {
    use postgres::fallible_iterator::FallibleIterator;
    let (from, to) = (span.from, span.to);
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()?;
    // One row past the limit says "too big" without the server sending the rest.
    let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let params: [&(dyn postgres::types::ToSql + Sync); 5] = [&first, &end, &from, &to, &fetch];
    let mut rows = tx.query_raw(
        "SELECT series_id, time, value FROM promgres.samples
          WHERE series_id >= $1 AND series_id < $2
            AND time >= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
            AND time < timestamptz 'epoch' + $4::int8 * interval '1 millisecond'
          ORDER BY series_id, time
          LIMIT $5",
        params,
    )?;
    let mut groups: BTreeMap<(i64, i64), Vec<(i64, f64)>> = BTreeMap::new();
    let mut read = 0u64;
    while let Some(row) = rows.next()? {
        let series_id: i64 = row.try_get(0)?;
        let ms = ms_of(row.try_get(1)?);
        groups
            .entry((series_id, window_of(ms)))
            .or_default()
            .push((ms, row.try_get(2)?));
        read += 1;
        if read > limit {
            // Dropping the transaction rolls it back; the caller splits the range.
            return Ok(Range::TooBig);
        }
    }
    drop(rows);
    if read == 0 {
        tx.commit()?;
        stats.ranges_done += 1;
        return Ok(Range::Done);
    }
    let keys: Vec<(i64, i64)> = groups.keys().copied().collect();
    let existing = chunks::fetch(&mut tx, &keys)?;
    let mut duplicates = 0u64;
    let mut rewritten = Vec::new();
    for old in existing {
        if let Some(head) = groups.get_mut(&(old.series_id, old.window_ms)) {
            let (merged, dups) = merge(&old.samples, head);
            duplicates += dups;
            *head = merged;
            rewritten.push((old.series_id, old.window_ms));
        }
    }
    if !rewritten.is_empty() {
        let series: Vec<i64> = rewritten.iter().map(|k| k.0).collect();
        let windows: Vec<i64> = rewritten.iter().map(|k| k.1).collect();
        for table in ["promgres.chunks", "promgres.open_chunks"] {
            tx.execute(
                &format!(
                    "DELETE FROM {table} c USING unnest($1::int8[], $2::int8[]) AS k(s, w)
                      WHERE c.series_id = k.s
                        AND c.start_time = timestamptz 'epoch' + k.w * interval '1 millisecond'"
                ),
                &[&series, &windows],
            )?;
        }
    }
    // A window is closed once all of it lies below the cutoff (`to` is the cutoff or the
    // end of the day, and windows never cross days). The first chunk of a closed window is
    // final and goes to the daily partitions (an upgrade's or a one-shot pass's history). Any
    // other version (an open window's, or a closed window's rewritten by late samples) goes
    // to open_chunks, where further versions replace it, until a pass with a later cutoff
    // finds its window closed and it untouched ([`promote_closed`]).
    let rewritten_keys: std::collections::HashSet<(i64, i64)> = rewritten.iter().copied().collect();
    let (closed, open): (Vec<Chunk>, Vec<Chunk>) = groups
        .into_iter()
        .map(|((series_id, window_ms), samples)| Chunk {
            series_id,
            window_ms,
            samples,
        })
        .partition(|c| {
            c.window_ms.saturating_add(WINDOW_MS) <= to
                && !rewritten_keys.contains(&(c.series_id, c.window_ms))
        });
    for (table, written, mark) in [
        ("promgres.chunks", &closed, None),
        ("promgres.open_chunks", &open, Some(span.cutoff)),
    ] {
        if written.is_empty() {
            continue;
        }
        let data = chunks::encode_copy(written, mark);
        let columns = if mark.is_some() {
            "series_id, start_time, end_time, samples, data, nan_values, written_cutoff"
        } else {
            "series_id, start_time, end_time, samples, data, nan_values"
        };
        let mut writer = tx.copy_in(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))?;
        std::io::Write::write_all(&mut writer, &data)?;
        writer.finish()?;
    }
    let deleted = tx.execute(
        "DELETE FROM promgres.samples
          WHERE series_id >= $1 AND series_id < $2
            AND time >= timestamptz 'epoch' + $3::int8 * interval '1 millisecond'
            AND time < timestamptz 'epoch' + $4::int8 * interval '1 millisecond'",
        &[&first, &end, &from, &to],
    )?;
    if deleted != read {
        // Same snapshot, same predicate: anything else means the rows moved under us.
        return Err(StoreError::internal(format!(
            "compaction read {read} head rows but would delete {deleted}; rolled back"
        )));
    }
    tx.commit()?;
    stats.samples += read - duplicates;
    stats.duplicates += duplicates;
    stats.chunks += (closed.len() + open.len()) as u64;
    stats.rewritten += rewritten.len() as u64;
    stats.ranges_done += 1;
    Ok(Range::Done)
}

/// Gives back the space of head partitions compaction emptied: VACUUM truncates their
/// heap, but a B-tree keeps its size, so an emptied partition's primary-key index is rebuilt
/// (REINDEX CONCURRENTLY: writers go on; a late sample arriving meanwhile is indexed as
/// usual). Outside any transaction. Returns the partitions it reclaimed.
pub fn reclaim_head(client: &mut Client) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'promgres.samples'::regclass
            AND c.relname ~ '^samples_[0-9]{8}$'
            AND NOT i.inhdetachpending
            AND pg_indexes_size(c.oid) > 1048576
          ORDER BY 1",
        &[],
    )?;
    let mut reclaimed = Vec::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        // Names come from pg_class and match samples_[0-9]{8}: safe to quote.
        let table = format!("promgres_partitions.\"{name}\"");
        let empty: bool = client
            .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"), &[])?
            .try_get(0)?;
        if !empty {
            continue;
        }
        client.batch_execute(&format!("VACUUM {table}"))?;
        client.batch_execute(&format!("REINDEX TABLE CONCURRENTLY {table}"))?;
        reclaimed.push(name);
    }
    Ok(reclaimed)
}

/// One line of progress: ranges done of total, samples folded, rate, time left.
pub fn progress_line(stats: &CompactionStats, elapsed: std::time::Duration) -> String {
    let done = stats.ranges_visited;
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = stats.samples as f64 / secs;
    let left = if done == 0 {
        "unknown".to_string()
    } else {
        let per_range = secs / done as f64;
        format!(
            "{:.0} s",
            per_range * stats.ranges_total.saturating_sub(done) as f64
        )
    };
    format!(
        "{done}/{} ranges, {} samples into {} chunks, {rate:.0} samples/s, time left {left}{}",
        stats.ranges_total,
        stats.samples,
        stats.chunks,
        if stats.ranges_failed > 0 {
            format!(", {} ranges left for the next pass", stats.ranges_failed)
        } else {
            String::new()
        }
    )
}

/// Merges a chunk's samples with head samples (both time-ordered); on an equal time the
/// chunk's sample stays (it was stored first). Returns the merge and how many head samples
/// it dropped.
pub fn merge(chunk: &[(i64, f64)], head: &[(i64, f64)]) -> (Vec<(i64, f64)>, u64) {
    let mut out = Vec::with_capacity(chunk.len() + head.len());
    let (mut i, mut j, mut dropped) = (0, 0, 0u64);
    while i < chunk.len() || j < head.len() {
        match (chunk.get(i), head.get(j)) {
            (Some(c), Some(h)) if c.0 == h.0 => {
                out.push(*c);
                i += 1;
                j += 1;
                dropped += 1;
            }
            (Some(c), Some(h)) if c.0 < h.0 => {
                out.push(*c);
                i += 1;
            }
            (Some(_), Some(h)) | (None, Some(h)) => {
                out.push(*h);
                j += 1;
            }
            (Some(c), None) => {
                out.push(*c);
                i += 1;
            }
            (None, None) => break,
        }
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_chunk_value_on_equal_times() {
        let chunk = [(10, 1.0), (30, 3.0)];
        let head = [(5, 0.5), (10, 9.0), (20, 2.0), (40, 4.0)];
        let (m, dropped) = merge(&chunk, &head);
        assert_eq!(
            m,
            vec![(5, 0.5), (10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]
        );
        assert_eq!(dropped, 1);
    }

    #[test]
    fn cutoff_is_a_slice_start_at_least_the_grace_behind() {
        let w = super::super::WINDOW_MS;
        assert_eq!(cutoff_ms(10 * w + GRACE_MS), 10 * w);
        assert_eq!(cutoff_ms(10 * w + GRACE_MS - 1), 10 * w - SLICE_MS);
        assert_eq!(cutoff_ms(10 * w + GRACE_MS + SLICE_MS), 10 * w + SLICE_MS);
        assert_eq!(cutoff_ms(GRACE_MS - 1), -SLICE_MS);
    }
}
