//! The head: samples as rows of `promgres.samples`, written by the insert transaction that
//! makes them durable. The primary key (series_id, time) decides exactly-once among head
//! rows; [`crate::engine::chunks::drop_compacted_duplicates`] decides it against chunks. The
//! fences (HA lease, advisory tenure) are checked inside the same transaction.

use super::{HeadRows, Inserted, SampleRow, PG_EPOCH_MS};
use crate::db_error::{Result, StoreError};
use crate::fence::{Fence, LockFence};
use crate::store::{check_lock, SERIES_REMOVAL_LOCK_KEY};
use postgres::error::SqlState;
use postgres::Client;
use std::io::Write;

/// Encodes rows in PostgreSQL's binary COPY format: three int64-sized fields per row, the
/// float's bits copied as they are, so NaN payloads such as stale markers survive.
pub fn encode_copy(rows: &[SampleRow]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(19 + rows.len() * 38 + 2);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    for r in rows {
        buf.extend_from_slice(&3i16.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&r.series_id.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        // Timestamps are validated to lie between 1970 and now + 10 min, so this cannot overflow.
        let micros = (r.timestamp_ms - PG_EPOCH_MS) * 1000;
        buf.extend_from_slice(&micros.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&r.value.to_bits().to_be_bytes());
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

/// How an insert went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertPath {
    /// Straight binary COPY into the samples table.
    Copy,
    /// The COPY met an existing (series, time) (a re-sent batch): re-done through a staging
    /// table and INSERT ... ON CONFLICT DO NOTHING, which keeps the first value stored.
    Deduplicated,
}

/// Whether an error means a sample's day has no partition (e.g. dropped meanwhile).
pub fn is_missing_partition(e: &StoreError) -> bool {
    e.is(&SqlState::CHECK_VIOLATION) && e.message.contains("no partition")
}

/// What the checks inside an insert transaction found: per advisory-lock fence whether its
/// tenure still holds, per HA fence whether its replica still leads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdicts {
    pub locks: Vec<bool>,
    pub fences: Vec<bool>,
    /// The series generation at commit; when it moved past the one the ids were resolved
    /// under, series were removed meanwhile (none of those used here).
    pub generation: i64,
}

/// The series ids a transaction writes under, and the series generation they were resolved
/// under.
#[derive(Debug, Clone, Copy)]
pub struct SeriesIds<'a> {
    pub generation: i64,
    pub ids: &'a [i64],
}

/// Inserts samples in one transaction and returns the verdicts of its fences and what it
/// stored. `build` gets the verdicts and returns the rows to store (those of jobs whose lock
/// holds, and of HA fences that held).
///
/// The fast path is a plain binary COPY, which PostgreSQL runs at about twice the speed of an
/// ON CONFLICT insert; re-sent batches are rare, so only a transaction that hits the primary
/// key pays for the slow path. Fences are checked with the lease rows locked FOR SHARE until
/// commit, so a hand-over (which locks them FOR UPDATE) happens wholly before or after.
/// Rows whose window may be compacted already (`late_before_ms`: older than the compaction
/// cutoff could be at the database's clock) are checked against chunks before commit.
pub fn insert_samples<'a>(
    client: &mut Client,
    series: SeriesIds,
    locks: &[LockFence],
    fences: &[Fence],
    late_before_ms: i64,
    build: &dyn Fn(&Verdicts) -> HeadRows<'a>,
) -> Result<(InsertPath, Verdicts, Inserted)> {
    match insert_attempt(client, series, locks, fences, late_before_ms, build, false) {
        Ok((verdicts, inserted)) => Ok((InsertPath::Copy, verdicts, inserted)),
        Err(e) if e.is(&SqlState::UNIQUE_VIOLATION) => {
            let (verdicts, inserted) =
                insert_attempt(client, series, locks, fences, late_before_ms, build, true)?;
            Ok((InsertPath::Deduplicated, verdicts, inserted))
        }
        Err(e) => Err(e),
    }
}

fn insert_attempt<'a>(
    client: &mut Client,
    series: SeriesIds,
    locks: &[LockFence],
    fences: &[Fence],
    late_before_ms: i64,
    build: &dyn Fn(&Verdicts) -> HeadRows<'a>,
    deduplicate: bool,
) -> Result<(Verdicts, Inserted)> {
    let mut tx = client.transaction()?;
    // The series ids were resolved under `series.generation`; series removed since (the
    // removal holds this lock exclusively while it deletes) must not be among them.
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&SERIES_REMOVAL_LOCK_KEY],
    )?;
    let current: i64 = tx
        .query_one("SELECT generation FROM promgres.series_generation", &[])?
        .try_get(0)?;
    if current != series.generation {
        let row = tx.query_one(
            "SELECT count(*) = $2::int8 - $1::int8, coalesce(bool_or(series_ids && $3::int8[]), false)
               FROM promgres.series_removals WHERE generation > $1 AND generation <= $2",
            &[&series.generation, &current, &series.ids],
        )?;
        let (complete, hit): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
        if !complete || hit {
            return Err(StoreError::generation_moved(current));
        }
    }
    let mut verdicts = Verdicts {
        generation: current,
        ..Verdicts::default()
    };
    for lock in locks {
        verdicts.locks.push(check_lock(&mut tx, *lock)?);
    }
    let (held, terms) = check_fences(&mut tx, fences)?;
    verdicts.fences = held;
    let HeadRows {
        samples: rows,
        histograms,
        exemplars,
    } = build(&verdicts);
    let data = encode_copy(&rows);
    let mut inserted = Inserted {
        stored: rows.len(),
        ..Inserted::default()
    };
    if rows.is_empty() {
        // A request of histograms or exemplars only.
    } else if deduplicate {
        tx.batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS promgres_staging
                 (series_id bigint, time timestamptz, value double precision)
                 ON COMMIT DELETE ROWS",
        )?;
        copy_in(
            &mut tx,
            "COPY promgres_staging (series_id, time, value) FROM STDIN (FORMAT binary)",
            &data,
        )?;
        // Classify what the key already holds before inserting: same bits (a resend) or
        // other bits (a conflict; the first value stays). float8send compares bits, so
        // NaN payloads and -0.0 count as what they are.
        let row = tx.query_one(
            "SELECT count(*) FILTER (WHERE float8send(s.value) = float8send(p.value)),
                    count(*) FILTER (WHERE float8send(s.value) <> float8send(p.value))
               FROM promgres_staging s
               JOIN promgres.samples p ON p.series_id = s.series_id AND p.time = s.time",
            &[],
        )?;
        let (identical, conflicting): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        let added = tx.execute(
            "INSERT INTO promgres.samples (series_id, time, value)
             SELECT series_id, time, value FROM promgres_staging
             ON CONFLICT DO NOTHING",
            &[],
        )?;
        inserted.stored = usize::try_from(added).unwrap_or(usize::MAX);
        inserted.identical = usize::try_from(identical).unwrap_or(0);
        inserted.conflicting = usize::try_from(conflicting).unwrap_or(0);
    } else {
        copy_in(
            &mut tx,
            "COPY promgres.samples (series_id, time, value) FROM STDIN (FORMAT binary)",
            &data,
        )?;
    }
    let late: Vec<&SampleRow> = rows
        .iter()
        .filter(|r| r.timestamp_ms < late_before_ms)
        .collect();
    if !late.is_empty() {
        // Mark the days for the compaction sweep. DO NOTHING: once a day is marked, later
        // writers pass without taking its row lock, so a Prometheus catching up on hours of
        // backlog does not serialise its writers here.
        let mut days: Vec<i32> = late
            .iter()
            .map(|r| i32::try_from(r.timestamp_ms.div_euclid(86_400_000)).unwrap_or(i32::MIN))
            .collect();
        days.sort_unstable();
        days.dedup();
        tx.execute(
            "INSERT INTO promgres.compaction_pending (day) SELECT unnest($1::int4[])
             ON CONFLICT (day) DO NOTHING",
            &[&days],
        )?;
        let found = crate::engine::chunks::drop_compacted_duplicates(&mut tx, &late)?;
        inserted.stored = inserted
            .stored
            .saturating_sub(found.identical + found.conflicting);
        inserted.identical += found.identical;
        inserted.conflicting += found.conflicting;
    }
    inserted.histograms = super::histograms::insert(&mut tx, &histograms, late_before_ms)?;
    inserted.exemplars = super::exemplars::insert(&mut tx, &exemplars)?;
    record_progress(&mut tx, fences, &verdicts.fences, &terms)?;
    tx.commit()?;
    Ok((verdicts, inserted))
}

fn copy_in(tx: &mut postgres::Transaction, copy: &str, data: &[u8]) -> Result<()> {
    let mut writer = tx.copy_in(copy)?;
    writer.write_all(data)?;
    writer.finish()?;
    Ok(())
}

/// Locks the fences' lease rows FOR SHARE and says which fences hold; also returns each
/// cluster's lease term.
fn check_fences(
    tx: &mut postgres::Transaction,
    fences: &[Fence],
) -> Result<(Vec<bool>, std::collections::HashMap<String, i64>)> {
    if fences.is_empty() {
        return Ok((Vec::new(), Default::default()));
    }
    let mut clusters: Vec<&str> = fences.iter().map(|f| f.cluster).collect();
    clusters.sort_unstable();
    clusters.dedup();
    let rows = tx.query(
        "SELECT cluster, leader, (extract(epoch FROM lease_start) * 1000)::bigint, term
           FROM promgres.ha_leases WHERE cluster = ANY($1) ORDER BY cluster FOR SHARE",
        &[&clusters],
    )?;
    let mut leases = std::collections::HashMap::new();
    let mut terms = std::collections::HashMap::new();
    for row in rows {
        let cluster: String = row.try_get(0)?;
        let leader: String = row.try_get(1)?;
        let start: i64 = row.try_get(2)?;
        let term: i64 = row.try_get(3)?;
        terms.insert(cluster.clone(), term);
        leases.insert(cluster, (leader, start));
    }
    let held = fences
        .iter()
        .map(|f| {
            leases
                .get(f.cluster)
                .is_some_and(|(leader, start)| leader == f.replica && f.min_ms >= *start)
        })
        .collect();
    Ok((held, terms))
}

/// Notes, for each cluster whose fence held, the newest sample committed for its leader and
/// that it wrote now; a hand-over reads these to pick T and to measure the leader's silence.
fn record_progress(
    tx: &mut postgres::Transaction,
    fences: &[Fence],
    held: &[bool],
    terms: &std::collections::HashMap<String, i64>,
) -> Result<()> {
    let mut newest: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (f, ok) in fences.iter().zip(held) {
        if *ok {
            let e = newest.entry(f.cluster).or_insert(f.max_ms);
            *e = (*e).max(f.max_ms);
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let clusters: Vec<&str> = newest.keys().copied().collect();
    let maxes: Vec<i64> = newest.values().copied().collect();
    let term_list: Vec<i64> = clusters
        .iter()
        .map(|c| terms.get(*c).copied().unwrap_or(0))
        .collect();
    tx.execute(
        "INSERT INTO promgres.ha_progress (cluster, writer_pid, term, max_time, last_write_at)
         SELECT c, pg_backend_pid(), t, timestamptz 'epoch' + m * interval '1 millisecond', clock_timestamp()
           FROM unnest($1::text[], $2::int8[], $3::int8[]) AS x(c, t, m)
         ON CONFLICT (cluster, writer_pid) DO UPDATE
            SET max_time = CASE WHEN promgres.ha_progress.term = EXCLUDED.term
                                THEN greatest(promgres.ha_progress.max_time, EXCLUDED.max_time)
                                ELSE EXCLUDED.max_time END,
                term = EXCLUDED.term,
                last_write_at = clock_timestamp()",
        &[&clusters, &term_list, &maxes],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_encoding_keeps_nan_payload_and_converts_epoch() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let buf = encode_copy(&[SampleRow {
            series_id: 7,
            timestamp_ms: PG_EPOCH_MS + 1,
            value: stale,
        }]);
        assert_eq!(&buf[..11], b"PGCOPY\n\xff\r\n\0");
        let row = &buf[19..];
        assert_eq!(&row[0..2], &3i16.to_be_bytes());
        assert_eq!(&row[6..14], &7i64.to_be_bytes());
        assert_eq!(&row[18..26], &1000i64.to_be_bytes());
        assert_eq!(&row[30..38], &0x7ff0_0000_0000_0002u64.to_be_bytes());
        assert_eq!(&buf[buf.len() - 2..], &(-1i16).to_be_bytes());
    }
}
