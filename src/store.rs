//! The statements promgres sends to PostgreSQL about everything but samples (those are the
//! engine's): connecting, schema migrations, series resolution and removal, partitions,
//! retention, metadata, HA leases, the advisory lock and the stalled-session watchdog.
//!
//! Functions here take a `postgres::Client` and plain values; they hold no state, so the
//! writer pool decides when to call them and how to cache what they return.

use crate::fence::LockFence;
use postgres::Client;

/// Migrations in order; `version` is the position, starting at 1.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_ha", include_str!("../migrations/0002_ha.sql")),
    (
        "0003_series_generation",
        include_str!("../migrations/0003_series_generation.sql"),
    ),
    (
        "0004_advisory_tenure",
        include_str!("../migrations/0004_advisory_tenure.sql"),
    ),
    (
        "0005_series_removals",
        include_str!("../migrations/0005_series_removals.sql"),
    ),
    (
        "0006_handover_not_in_future",
        include_str!("../migrations/0006_handover_not_in_future.sql"),
    ),
    ("0007_chunks", include_str!("../migrations/0007_chunks.sql")),
    (
        "0008_faster_sql_decoder",
        include_str!("../migrations/0008_faster_sql_decoder.sql"),
    ),
    (
        "0009_open_chunks",
        include_str!("../migrations/0009_open_chunks.sql"),
    ),
    (
        "0010_histogram_codec",
        include_str!("../migrations/0010_histogram_codec.sql"),
    ),
    (
        "0011_histograms_exemplars",
        include_str!("../migrations/0011_histograms_exemplars.sql"),
    ),
];

/// The schema version this binary needs.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Session-level advisory lock key that serialises migrations across instances.
const MIGRATION_LOCK_KEY: i64 = 0x7072_6f6d_6772_6573; // "promgres"

pub use crate::db_error::{Result, StoreError};

/// Advisory lock key guarding series removal: writers hold it shared while they insert, the
/// cleanup exclusively while it deletes.
pub(crate) const SERIES_REMOVAL_LOCK_KEY: i64 = 0x7072_6f6d_7365_7269; // "promseri"

/// Opens a session (its settings from `pg_session::config`), with TLS as the URI asked.
pub fn connect(config: &crate::pg_tls::DbConfig) -> Result<Client> {
    config.connect()
}

/// Applies every migration newer than the database's version, under a session advisory lock
/// so two instances starting together apply each migration once. Returns how many it applied.
pub fn migrate(client: &mut Client) -> Result<usize> {
    // "schema already exists" notices are expected on every start; keep them out of the log.
    client.batch_execute("SET client_min_messages = warning")?;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])?;
    let result = apply_migrations(client);
    // Unlock even when a migration failed, so a retry or another instance can proceed.
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]);
    let applied = result?;
    unlock?;
    Ok(applied)
}

fn apply_migrations(client: &mut Client) -> Result<usize> {
    // Only on a fresh database: CREATE SCHEMA checks the CREATE privilege on the database
    // even with IF NOT EXISTS, and the run-time role need not have it (docs/operations.md,
    // "Grants").
    let fresh: bool = client
        .query_one(
            "SELECT to_regclass('promgres.schema_migrations') IS NULL",
            &[],
        )?
        .try_get(0)?;
    if fresh {
        client.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS promgres;
             CREATE TABLE IF NOT EXISTS promgres.schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
    }
    let current = schema_version(client)?.unwrap_or(0);
    let mut applied = 0;
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= current {
            continue;
        }
        let mut tx = client.transaction()?;
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO promgres.schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, name],
        )?;
        tx.commit()?;
        log::info!("applied migration {version} ({name})");
        applied += 1;
    }
    Ok(applied)
}

/// The applied schema version, or None when promgres has never migrated this database.
pub fn schema_version(client: &mut Client) -> Result<Option<i32>> {
    let row = client.query_one(
        "SELECT CASE WHEN to_regclass('promgres.schema_migrations') IS NULL THEN NULL
                     ELSE (SELECT max(version) FROM promgres.schema_migrations) END",
        &[],
    )?;
    Ok(row.get::<_, Option<i32>>(0))
}

/// Upserts metric metadata in one statement. `rows` must hold each metric at most once.
pub fn upsert_metadata(client: &mut Client, rows: &[crate::decode::Metadata]) -> Result<()> {
    let metrics: Vec<&str> = rows.iter().map(|m| m.metric.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|m| m.metric_type).collect();
    let helps: Vec<&str> = rows.iter().map(|m| m.help.as_str()).collect();
    let units: Vec<&str> = rows.iter().map(|m| m.unit.as_str()).collect();
    client.execute(
        "INSERT INTO promgres.metadata (metric, type, help, unit)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) ORDER BY 1
         ON CONFLICT (metric) DO UPDATE
            SET type = EXCLUDED.type, help = EXCLUDED.help, unit = EXCLUDED.unit, updated_at = now()
          WHERE (promgres.metadata.type, promgres.metadata.help, promgres.metadata.unit)
                IS DISTINCT FROM (EXCLUDED.type, EXCLUDED.help, EXCLUDED.unit)",
        &[&metrics, &types, &helps, &units],
    )?;
    Ok(())
}

/// Creates the prom_metric view of each metric that has none yet. In chunks, each its own
/// transaction: every view created holds a lock until commit, and thousands at once (a large
/// Prometheus connecting for the first time) would exhaust the server's lock table.
pub fn ensure_metric_views(client: &mut Client, metrics: &[&str]) -> Result<()> {
    for chunk in metrics.chunks(200) {
        client.execute(
            "SELECT promgres.ensure_metric_view(m) FROM unnest($1::text[]) AS m ORDER BY m",
            &[&chunk],
        )?;
    }
    Ok(())
}

/// Creates the daily partitions for the given days (days since 1970-01-01, UTC).
pub fn ensure_partitions(client: &mut Client, days: &[i32]) -> Result<()> {
    client.execute(
        "SELECT promgres.ensure_partition(DATE '1970-01-01' + d) FROM unnest($1::int4[]) AS d ORDER BY d",
        &[&days],
    )?;
    Ok(())
}

/// Returns the id of each series (`metrics[i]`, `labels_json[i]`), creating missing ones,
/// in one round trip. Safe when another instance creates the same series concurrently: a row
/// it committed after our snapshot shows up as a NULL id, and the statement is re-run.
pub fn resolve_series(
    client: &mut Client,
    metrics: &[&str],
    labels_json: &[&str],
) -> Result<(Vec<i64>, u64)> {
    const STATEMENT: &str = "
        WITH input AS (
            SELECT t.ord, t.metric, t.labels::jsonb AS labels
              FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(metric, labels, ord)
        ), hashed AS (
            SELECT ord, metric, labels, sha256(convert_to(labels::text, 'UTF8')) AS h FROM input
        ), created AS (
            INSERT INTO promgres.series (metric, labels, labels_hash)
            SELECT metric, labels, h FROM hashed ORDER BY h
            ON CONFLICT (labels_hash) DO NOTHING
            RETURNING id, labels_hash
        )
        SELECT hashed.ord, COALESCE(created.id, existing.id), created.id IS NOT NULL
          FROM hashed
          LEFT JOIN created ON created.labels_hash = hashed.h
          LEFT JOIN promgres.series existing ON existing.labels_hash = hashed.h
         ORDER BY hashed.ord";
    let mut ids = vec![None; metrics.len()];
    let mut created_total = 0u64;
    for _attempt in 0..5 {
        let pending: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let m: Vec<&str> = pending.iter().map(|&i| metrics[i]).collect();
        let l: Vec<&str> = pending.iter().map(|&i| labels_json[i]).collect();
        for row in client.query(STATEMENT, &[&m, &l])? {
            let ord: i64 = row.try_get(0)?;
            let id: Option<i64> = row.try_get(1)?;
            let created: bool = row.try_get(2)?;
            let slot = usize::try_from(ord - 1)
                .ok()
                .and_then(|k| pending.get(k))
                .ok_or_else(|| {
                    StoreError::internal(format!(
                        "series resolution returned unknown ordinal {ord}"
                    ))
                })?;
            if created {
                created_total += 1;
            }
            ids[*slot] = id;
        }
    }
    let resolved: Option<Vec<i64>> = ids.into_iter().collect();
    let resolved = resolved
        .ok_or_else(|| StoreError::internal("series ids still unresolved after 5 attempts"))?;
    Ok((resolved, created_total))
}

/// The advisory-lock fence (legacy election): `lock.tenure` must still be the lock's current
/// tenure, and the session that won it (its pid and backend start, so a reused pid cannot pass)
/// must still hold advisory lock `lock.key`. The transaction first takes the key's companion
/// lock (the two-int4 form of the same number, a separate lock) shared, until commit; a new
/// holder bumps the tenure while holding the companion exclusively, so it waits for every
/// transaction that passed this check under the old tenure.
pub(crate) fn check_lock(tx: &mut postgres::Transaction, lock: LockFence) -> Result<bool> {
    let (hi, lo) = lock_halves(lock.key);
    tx.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", &[&hi, &lo])?;
    Ok(tx
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM promgres.advisory_tenure t
                   JOIN pg_stat_activity a ON a.pid = t.holder_pid AND a.backend_start = t.holder_start
                   JOIN pg_locks l ON l.pid = t.holder_pid
                  WHERE t.lock_id = $1 AND t.tenure = $2
                    AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                    AND l.classid::int8 = ($1::int8 >> 32) & 4294967295
                    AND l.objid::int8 = $1::int8 & 4294967295)",
            &[&lock.key, &lock.tenure],
        )?
        .try_get(0)?)
}

/// The two int4 halves of an advisory-lock key (for the companion lock).
fn lock_halves(key: i64) -> (i32, i32) {
    ((key >> 32) as i32, key as i32)
}

/// Tries the advisory lock on this session; on success returns the tenure it now holds. A
/// session that already holds the key keeps its tenure and does not take the key a second
/// time (a stacked hold would survive one unlock). After winning, the companion lock is taken
/// exclusively, which waits for every in-flight transaction of the previous holder, and the
/// tenure is bumped under it. If that fails (the wait timed out), the key is given back: a
/// lock held without a tenure would block every other instance and store nothing.
pub fn try_advisory_lock(client: &mut Client, key: i64) -> Result<Option<i64>> {
    let row = client.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                           AND objsubid = 1
                           AND classid::int8 = ($1::int8 >> 32) & 4294967295
                           AND objid::int8 = $1::int8 & 4294967295),
                (SELECT tenure FROM promgres.advisory_tenure
                  WHERE lock_id = $1 AND holder_pid = pg_backend_pid())",
        &[&key],
    )?;
    let (held, tenure): (bool, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
    if let (true, Some(tenure)) = (held, tenure) {
        return Ok(Some(tenure));
    }
    if !held {
        let won: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .try_get(0)?;
        if !won {
            return Ok(None);
        }
    }
    match begin_tenure(client, key) {
        Ok(tenure) => Ok(Some(tenure)),
        Err(e) => {
            // Give the key back; if the session is gone, so is the lock.
            let _ = client.execute("SELECT pg_advisory_unlock_all()", &[]);
            Err(e)
        }
    }
}

fn begin_tenure(client: &mut Client, key: i64) -> Result<i64> {
    let (hi, lo) = lock_halves(key);
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&hi, &lo])?;
    let tenure: i64 = tx
        .query_one(
            "INSERT INTO promgres.advisory_tenure AS t (lock_id, tenure, holder_pid, holder_start)
             SELECT $1, 1, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
             ON CONFLICT (lock_id) DO UPDATE
                SET tenure = t.tenure + 1, holder_pid = EXCLUDED.holder_pid,
                    holder_start = EXCLUDED.holder_start, since = now()
             RETURNING tenure",
            &[&key],
        )?
        .try_get(0)?;
    tx.commit()?;
    Ok(tenure)
}

/// Gives up every session-level advisory lock of this session (the election's session holds
/// only its key), however many times it was taken.
pub fn advisory_unlock(client: &mut Client) -> Result<()> {
    client.execute("SELECT pg_advisory_unlock_all()", &[])?;
    Ok(())
}

/// Leases in PostgreSQL, on a connection of their own (outside the writer pool).
pub struct PgLeaseStore {
    config: crate::pg_tls::DbConfig,
    client: Option<Client>,
}

const LEASE_COLUMNS: &str = "cluster, leader, term,
    (extract(epoch FROM lease_start) * 1000)::bigint,
    (extract(epoch FROM leader_since) * 1000)::bigint,
    previous_leader";

fn lease_from_row(row: &postgres::Row) -> Result<crate::ha::Lease> {
    Ok(crate::ha::Lease {
        cluster: row.try_get(0)?,
        leader: row.try_get(1)?,
        term: row.try_get(2)?,
        start_ms: row.try_get(3)?,
        leader_since_ms: row.try_get(4)?,
        previous_leader: row.try_get(5)?,
    })
}

impl PgLeaseStore {
    pub fn new(
        db: &impl crate::pg_tls::ToDbConfig,
        bounds: &crate::pg_session::SessionBounds,
    ) -> Self {
        let config = crate::pg_session::config(db, crate::pg_session::Kind::Ha, bounds);
        PgLeaseStore {
            config,
            client: None,
        }
    }

    fn with_client<T>(&mut self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.config)?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::internal("no connection"));
        };
        let result = f(client);
        if result.as_ref().is_err_and(|e| e.connection_lost) {
            self.client = None;
        }
        result
    }
}

impl crate::ha::LeaseStore for PgLeaseStore {
    fn get_or_create(&mut self, cluster: &str, replica: &str) -> Result<crate::ha::Lease> {
        self.with_client(|c| {
            let row = c.query_one(
                &format!("SELECT {LEASE_COLUMNS} FROM promgres.ha_get_or_create($1, $2)"),
                &[&cluster, &replica],
            )?;
            lease_from_row(&row)
        })
    }

    fn fetch(&mut self, cluster: &str) -> Result<Option<crate::ha::LeaseState>> {
        self.with_client(|c| {
            let row = c.query_opt(
                &format!(
                    "SELECT {LEASE_COLUMNS},
                            (extract(epoch FROM promgres.ha_leader_silence(cluster)) * 1000)::bigint,
                            (SELECT CASE WHEN max(p.max_time) IS NULL THEN NULL
                                    ELSE (extract(epoch FROM least(max(p.max_time) + interval '1 millisecond',
                                                                   clock_timestamp())) * 1000)::bigint END
                               FROM promgres.ha_progress p
                              WHERE p.cluster = l.cluster AND p.term = l.term)
                       FROM promgres.ha_leases l WHERE cluster = $1"
                ),
                &[&cluster],
            )?;
            match row {
                Some(row) => Ok(Some(crate::ha::LeaseState {
                    lease: lease_from_row(&row)?,
                    silence_ms: row.try_get(6)?,
                    superseded_before_ms: row.try_get(7)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn change_leader(
        &mut self,
        cluster: &str,
        expected: &str,
        new: &str,
        min_silence_ms: Option<i64>,
        reason: &str,
    ) -> Result<crate::ha::Lease> {
        self.with_client(|c| {
            let row = c.query_one(
                &format!(
                    "SELECT {LEASE_COLUMNS} FROM promgres.ha_change_leader(
                        $1, $2, $3, $4::int8 * interval '1 millisecond', $5)"
                ),
                &[&cluster, &expected, &new, &min_silence_ms, &reason],
            )?;
            lease_from_row(&row)
        })
    }

    fn past_leases(&mut self, cluster: &str, replica: &str) -> Result<Vec<(i64, i64)>> {
        self.with_client(|c| {
            let rows = c.query(
                "SELECT (extract(epoch FROM lease_start) * 1000)::bigint,
                        (extract(epoch FROM lease_end) * 1000)::bigint
                   FROM promgres.ha_lease_history
                  WHERE cluster = $1 AND leader = $2 AND lease_end IS NOT NULL
                  ORDER BY lease_start",
                &[&cluster, &replica],
            )?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }
}

/// A session ended by [`end_stalled_sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledSession {
    pub pid: i32,
    pub application_name: String,
    pub wait_event: String,
    pub stalled_ms: i64,
}

/// Ends the promgres sessions of this database (any instance's) that have been inside a
/// statement waiting for their client past the bound: for input (`ClientRead`: a COPY stalled
/// mid-stream, a pipeline cut between messages) longer than the stall timeout, for output
/// (`ClientWrite`: a reader that stopped reading) longer than the read deadline plus the stall
/// timeout. PostgreSQL's own timeouts do not fire while a statement waits on its client, so
/// without this a frozen promgres would hold its locks until its TCP connection died, which
/// for a stopped process (its kernel still acknowledges) is never.
///
/// Also ended: maintenance sessions idle outside a transaction past the stall timeout while
/// holding an advisory lock. Compaction and retention hold their session try-locks only
/// around one transaction, so such a session belongs to a promgres frozen between its lock
/// and its transaction, and would otherwise keep every instance off that range (or off
/// retention) for as long as it stays frozen.
pub fn end_stalled_sessions(
    client: &mut Client,
    bounds: &crate::pg_session::SessionBounds,
) -> Result<Vec<StalledSession>> {
    let stall_ms = i64::try_from(bounds.stall.as_millis()).unwrap_or(i64::MAX);
    let write_ms = i64::try_from((bounds.read + bounds.stall).as_millis()).unwrap_or(i64::MAX);
    let rows = client.query(
        "SELECT pid, application_name,
                CASE WHEN state = 'idle' THEN 'idle holding an advisory lock'
                     ELSE coalesce(wait_event, '') END,
                (extract(epoch FROM clock_timestamp() - state_change) * 1000)::int8,
                pg_terminate_backend(pid)
           FROM pg_stat_activity
          WHERE datname = current_database()
            AND pid <> pg_backend_pid()
            AND application_name LIKE 'promgres-%'
            AND ((state = 'active'
                  AND ((wait_event = 'ClientRead'
                        AND state_change < clock_timestamp() - $1::int8 * interval '1 millisecond')
                    OR (wait_event = 'ClientWrite'
                        AND state_change < clock_timestamp() - $2::int8 * interval '1 millisecond')))
              OR (state = 'idle'
                  AND application_name LIKE 'promgres-maintenance %'
                  AND state_change < clock_timestamp() - $1::int8 * interval '1 millisecond'
                  AND EXISTS (SELECT 1 FROM pg_locks l
                               WHERE l.pid = pg_stat_activity.pid AND l.locktype = 'advisory')))",
        &[&stall_ms, &write_ms],
    )?;
    rows.iter()
        .map(|r| {
            Ok(StalledSession {
                pid: r.try_get(0)?,
                application_name: r.try_get(1)?,
                wait_event: r.try_get(2)?,
                stalled_ms: r.try_get(3)?,
            })
        })
        .collect()
}

/// Key of the advisory lock that lets one instance at a time apply retention.
const RETENTION_LOCK_KEY: i64 = 0x7072_6f6d_7265_7465; // "promrete"

/// Drops the sample partitions whose whole day lies before `keep_from_day` (days since
/// 1970-01-01 UTC) and returns their names. Each is first detached CONCURRENTLY, which takes
/// only a SHARE UPDATE EXCLUSIVE lock on promgres.samples, so ingest and reads go on; then the
/// detached table is dropped. One instance at a time (a session advisory lock); others skip.
pub fn drop_partitions_before(client: &mut Client, keep_from_day: i32) -> Result<Vec<String>> {
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RETENTION_LOCK_KEY])?
        .try_get(0)?;
    if !locked {
        return Ok(Vec::new());
    }
    let result = drop_old(client, keep_from_day);
    let unlock = client.execute("SELECT pg_advisory_unlock($1)", &[&RETENTION_LOCK_KEY]);
    let dropped = result?;
    unlock?;
    Ok(dropped)
}

fn drop_old(client: &mut Client, keep_from_day: i32) -> Result<Vec<String>> {
    let mut dropped = drop_old_of(client, "samples", keep_from_day)?;
    dropped.extend(drop_old_of(client, "chunks", keep_from_day)?);
    let rows = delete_old_rows(client, keep_from_day)?;
    if rows > 0 {
        log::info!("retention: deleted {rows} histogram and exemplar rows");
    }
    Ok(dropped)
}

/// Histograms and exemplars are not partitioned (far fewer rows than float samples): their
/// rows before `keep_from_day` are deleted, 10,000 per statement so no statement runs long
/// or holds many row locks. A histogram chunk goes with its window's start, as float chunks
/// go with their partition's day.
fn delete_old_rows(client: &mut Client, keep_from_day: i32) -> Result<u64> {
    let mut deleted = 0;
    for (table, column, key) in [
        ("histogram_head", "time", "series_id, time"),
        ("histogram_chunks", "start_time", "series_id, start_time"),
        ("exemplars", "time", "series_id, time, labels"),
    ] {
        // Names are promgres's own, never user input. By primary key, not ctid: a chunk
        // compaction rewrote meanwhile keeps its key.
        let sql = format!(
            "DELETE FROM promgres.{table} WHERE ({key}) IN (
                 SELECT {key} FROM promgres.{table}
                  WHERE {column} < timestamptz 'epoch' + $1::int4 * interval '1 day'
                  LIMIT 10000)"
        );
        loop {
            let n = client.execute(&sql, &[&keep_from_day])?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Drops the day partitions of promgres.<table> (named <table>_YYYYMMDD) before
/// `keep_from_day`. `table` is one of promgres's own names, never user input.
fn drop_old_of(client: &mut Client, table: &str, keep_from_day: i32) -> Result<Vec<String>> {
    // Detached-but-pending partitions (an interrupted earlier run) are still listed by
    // pg_inherits and finished first.
    let rows = client.query(
        "SELECT c.relname,
                (to_date(substr(c.relname, length($1) + 2), 'YYYYMMDD') - DATE '1970-01-01')::int4,
                i.inhdetachpending
           FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE i.inhparent = ('promgres.' || $1)::regclass
            AND n.nspname = 'promgres_partitions'
            AND c.relname ~ ('^' || $1 || '_[0-9]{8}$')
          ORDER BY 2",
        &[&table],
    )?;
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let day: i32 = row.try_get(1)?;
        let pending: bool = row.try_get(2)?;
        if day >= keep_from_day {
            break;
        }
        // Names come from pg_class and match <table>_[0-9]{8}: safe to quote as identifiers.
        let detach = if pending {
            format!("ALTER TABLE promgres.{table} DETACH PARTITION promgres_partitions.\"{name}\" FINALIZE")
        } else {
            format!("ALTER TABLE promgres.{table} DETACH PARTITION promgres_partitions.\"{name}\" CONCURRENTLY")
        };
        client.batch_execute(&detach)?;
        client.batch_execute(&format!("DROP TABLE promgres_partitions.\"{name}\""))?;
        dropped.push(name);
    }
    Ok(dropped)
}

/// Sets this session's `statement_timeout` (a read's time left).
pub fn set_statement_timeout(client: &mut Client, timeout: std::time::Duration) -> Result<()> {
    client.batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis()))?;
    Ok(())
}

/// The database server's clock (`clock_timestamp()`), in ms since the Unix epoch.
pub fn database_clock_ms(client: &mut Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8",
            &[],
        )?
        .try_get(0)?)
}

/// The current series generation (see migrations/0003_series_generation.sql).
pub fn series_generation(client: &mut Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT generation FROM promgres.series_generation", &[])?
        .try_get(0)?)
}

/// Series one removal transaction deletes at most: it holds the removal lock exclusively, so
/// every writer of every instance waits for it; a thousand keep that wait to milliseconds.
pub const REMOVAL_BATCH: usize = 1000;

/// Removes series that have had no sample for `older_than` and have none left (their
/// partitions were dropped), and returns how many. Candidates are found without locks; then,
/// [`REMOVAL_BATCH`] at a time, each batch is re-checked and deleted in a short transaction
/// under the exclusive removal lock (taken with a 2 s lock_timeout, so it never sits long in
/// the lock queue where writers would line up behind it), which bumps the series generation
/// and records the ids it removed, so every instance evicts just those ids from its cache.
pub fn remove_empty_series(client: &mut Client, older_than_ms: i64) -> Result<u64> {
    let candidates: Vec<i64> = client
        .query(
            "SELECT s.id FROM promgres.series s
              WHERE s.created_at < now() - $1::int8 * interval '1 millisecond'
                AND NOT EXISTS (SELECT 1 FROM promgres.samples p WHERE p.series_id = s.id)
                AND NOT EXISTS (SELECT 1 FROM promgres.chunks c WHERE c.series_id = s.id)
                AND NOT EXISTS (SELECT 1 FROM promgres.open_chunks c WHERE c.series_id = s.id)
                AND NOT EXISTS (SELECT 1 FROM promgres.histogram_head h WHERE h.series_id = s.id)
                AND NOT EXISTS (SELECT 1 FROM promgres.histogram_chunks h WHERE h.series_id = s.id)
                AND NOT EXISTS (SELECT 1 FROM promgres.exemplars e WHERE e.series_id = s.id)
              ORDER BY s.id
              LIMIT 100000",
            &[&older_than_ms],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    client.execute(
        "DELETE FROM promgres.series_removals WHERE removed_at < now() - interval '1 day'",
        &[],
    )?;
    let mut removed = 0u64;
    for batch in candidates.chunks(REMOVAL_BATCH) {
        let mut tx = client.transaction()?;
        tx.batch_execute("SET LOCAL lock_timeout = '2s'")?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&SERIES_REMOVAL_LOCK_KEY],
        )?;
        let ids: Vec<i64> = tx
            .query(
                "DELETE FROM promgres.series s
                  WHERE s.id = ANY($1)
                    AND NOT EXISTS (SELECT 1 FROM promgres.samples p WHERE p.series_id = s.id)
                    AND NOT EXISTS (SELECT 1 FROM promgres.chunks c WHERE c.series_id = s.id)
                    AND NOT EXISTS (SELECT 1 FROM promgres.open_chunks c WHERE c.series_id = s.id)
                    AND NOT EXISTS (SELECT 1 FROM promgres.histogram_head h WHERE h.series_id = s.id)
                    AND NOT EXISTS (SELECT 1 FROM promgres.histogram_chunks h WHERE h.series_id = s.id)
                    AND NOT EXISTS (SELECT 1 FROM promgres.exemplars e WHERE e.series_id = s.id)
                 RETURNING s.id",
                &[&batch],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        if !ids.is_empty() {
            tx.execute(
                "WITH bumped AS (
                     UPDATE promgres.series_generation SET generation = generation + 1
                     RETURNING generation)
                 INSERT INTO promgres.series_removals (generation, series_ids)
                 SELECT generation, $1 FROM bumped",
                &[&ids],
            )?;
        }
        tx.commit()?;
        removed += ids.len() as u64;
    }
    Ok(removed)
}

/// The series ids removed after `generation` up to `current`, or None when the records no
/// longer reach back that far (pruned after a day): the caller then forgets every cached id.
pub fn removed_since(
    client: &mut Client,
    generation: i64,
    current: i64,
) -> Result<Option<Vec<i64>>> {
    let rows = client.query(
        "SELECT generation, series_ids FROM promgres.series_removals
          WHERE generation > $1 AND generation <= $2 ORDER BY generation",
        &[&generation, &current],
    )?;
    let mut expected = generation + 1;
    let mut ids = Vec::new();
    for row in rows {
        let g: i64 = row.try_get(0)?;
        if g != expected {
            return Ok(None);
        }
        expected += 1;
        ids.extend(row.try_get::<_, Vec<i64>>(1)?);
    }
    Ok((expected == current + 1).then_some(ids))
}

/// A label matcher of a remote-read query, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    Equal(String, String),
    NotEqual(String, String),
    /// The pattern as the client sent it; anchored here.
    Regex(String, String),
    NotRegex(String, String),
}

/// A series selected by a read: its id and its labels sorted by name.
pub type SelectedSeries = (i64, Vec<(String, String)>);

/// The series whose labels satisfy every matcher, with Prometheus semantics: a regex must
/// match the whole value, and a matcher that matches the empty string also matches a series
/// without the label. Matcher names and values are bound as parameters, never spliced into
/// the SQL text. Invalid regexes come back as class-22 errors (the client's fault).
pub fn select_series(client: &mut Client, matchers: &[Matcher]) -> Result<Vec<SelectedSeries>> {
    let mut conditions = Vec::with_capacity(matchers.len());
    let mut params: Vec<String> = Vec::new();
    let mut bind = |v: &str| {
        params.push(v.to_string());
        format!("${}::text", params.len())
    };
    for m in matchers {
        let condition = match m {
            Matcher::Equal(n, v) if n == "__name__" => format!("s.metric = {}", bind(v)),
            Matcher::Equal(n, v) if v.is_empty() => format!("NOT (s.labels ? {})", bind(n)),
            Matcher::Equal(n, v) => {
                let (n, v) = (bind(n), bind(v));
                format!("s.labels @> jsonb_build_object({n}, {v})")
            }
            Matcher::NotEqual(n, v) if v.is_empty() => format!("s.labels ? {}", bind(n)),
            Matcher::NotEqual(n, v) => {
                let (n, v) = (bind(n), bind(v));
                format!("(s.labels ->> {n}) IS DISTINCT FROM {v}")
            }
            Matcher::Regex(n, re) | Matcher::NotRegex(n, re) => {
                let op = if matches!(m, Matcher::Regex(..)) {
                    "~"
                } else {
                    "!~"
                };
                let anchored = format!("^(?:{re})$");
                if n == "__name__" {
                    format!("s.metric {op} {}", bind(&anchored))
                } else {
                    let (n, re) = (bind(n), bind(&anchored));
                    format!("coalesce(s.labels ->> {n}, '') {op} {re}")
                }
            }
        };
        conditions.push(condition);
    }
    let filter = if conditions.is_empty() {
        String::from("true")
    } else {
        conditions.join(" AND ")
    };
    let sql = format!(
        "SELECT s.id, k.names, k.vals
           FROM promgres.series s
          CROSS JOIN LATERAL (SELECT array_agg(key ORDER BY key) AS names,
                                     array_agg(value ORDER BY key) AS vals
                                FROM jsonb_each_text(s.labels)) k
          WHERE {filter}"
    );
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect();
    let rows = client.query(sql.as_str(), &refs)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.try_get(0)?;
        let names: Vec<String> = row.try_get(1)?;
        let vals: Vec<String> = row.try_get(2)?;
        out.push((id, names.into_iter().zip(vals).collect()));
    }
    Ok(out)
}
