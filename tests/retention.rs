//! Retention: with `--retention`, the maintenance thread drops whole daily partitions older
//! than the retention (detached concurrently, so ingest goes on), keeps the rest, and samples
//! older than the retention are refused at the door.

mod common;

use common::*;
use std::time::Duration;

fn partitions(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent IN ('promgres.samples'::regclass, 'promgres.chunks'::regclass)
          ORDER BY 1",
        &[],
    )
    .expect("partitions")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn old_partitions_are_dropped_and_recent_data_stays() {
    let db = TestDb::new("retention");
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();
    let today = now_ms().div_euclid(86_400_000) as i32;
    // Fake old data: partitions 10 and 5 days ago with a row each, and one for yesterday.
    promgres::store::ensure_partitions(&mut c, &[today - 10, today - 5, today - 1])
        .expect("partitions");
    // At noon of those days (by `today`, not the database's now(): a midnight between the
    // two readings would put a row in a day without a partition).
    for (d, v) in [(today - 10, 1.0f64), (today - 5, 2.0), (today - 1, 3.0)] {
        c.execute(
            "INSERT INTO promgres.samples VALUES
                 (-1, timestamptz 'epoch' + ($1::int8 * 86400000 + 43200000) * interval '1 ms', $2)",
            &[&i64::from(d), &v],
        )
        .expect("old rows");
    }
    // Chunk partitions of the same days go too.
    for d in [today - 10, today - 5, today - 1] {
        c.execute(
            "SELECT promgres.ensure_chunk_partition(DATE '1970-01-01' + $1::int4)",
            &[&d],
        )
        .expect("chunk partition");
    }
    let old: Vec<String> = [today - 10, today - 5]
        .iter()
        .flat_map(|d| {
            ["samples_", "chunks_"].map(|prefix| {
                c.query_one(
                    "SELECT $2::text || to_char(DATE '1970-01-01' + $1::int4, 'YYYYMMDD')",
                    &[d, &prefix],
                )
                .expect("name")
                .get(0)
            })
        })
        .collect();
    // A long-running read must not stop retention or ingest.
    let mut reader = db.client();
    let mut read_tx = reader.transaction().expect("begin");
    read_tx
        .query("SELECT count(*) FROM prom_samples", &[])
        .expect("read");

    let run = {
        let mut config = promgres::config::Config::for_database(db.config());
        config.retention = Some(Duration::from_secs(3 * 86_400));
        config.max_sample_age = Duration::from_secs(3 * 86_400);
        promgres::server::Server::start(&config).expect("start")
    };
    // Ingest goes on while the reader holds its snapshot.
    let t = now_ms() - 60_000;
    let reply = post_write(run.addr(), &encode(&node_like(10, t, 1.0, "user")));
    assert_eq!(reply.status, 204, "{}", reply.body);
    read_tx.rollback().expect("end read");

    let gone = wait_for(Duration::from_secs(30), || {
        let p = partitions(&mut c);
        old.iter().all(|o| !p.contains(o)).then_some(p)
    });
    let left =
        gone.unwrap_or_else(|| panic!("old partitions still there: {:?}", partitions(&mut c)));
    assert!(
        left.iter()
            .any(|p| p.ends_with(&chrono_free_day(today - 1))),
        "yesterday kept: {left:?}"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM promgres.samples WHERE series_id = -1 AND value = 3"
        ),
        1,
        "recent data kept"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM promgres.samples WHERE series_id = -1 AND value IN (1, 2)"
        ),
        0
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM promgres.samples WHERE series_id <> -1"
        ),
        10,
        "ingest went on"
    );
    // Samples older than the retention are refused, not written into a dropped day.
    let reply = post_write(
        run.addr(),
        &encode(&node_like(1, now_ms() - 4 * 86_400_000, 1.0, "user")),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(run.shutdown(Duration::from_secs(10)));
}

/// YYYYMMDD of a day number, via PostgreSQL-free arithmetic (civil from days).
fn chrono_free_day(days: i32) -> String {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

#[test]
fn series_left_without_samples_are_removed_and_come_back_cleanly() {
    let db = TestDb::new("series_gc");
    let mut config = promgres::config::Config::for_database(db.config());
    config.retention = Some(Duration::from_secs(3 * 86_400));
    config.max_sample_age = Duration::from_secs(3 * 86_400);
    let server = promgres::server::Server::start(&config).expect("start");
    let mut c = db.client();
    let t = now_ms() - 60_000;
    assert_eq!(
        post_write(server.addr(), &encode(&node_like(3, t, 1.0, "gc"))).status,
        204
    );
    // Make the three series look abandoned: old, and their samples gone with dropped days.
    c.batch_execute(
        "UPDATE promgres.series SET created_at = now() - interval '30 days';
         DELETE FROM promgres.samples;",
    )
    .expect("age the series");
    server.apply_retention_now();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM prom_series"),
        0,
        "removed"
    );
    assert_eq!(
        count(&mut c, "SELECT generation FROM promgres.series_generation"),
        1
    );
    // The instance still has their ids cached; a new sample must not be written under a
    // deleted id but re-create the series.
    assert_eq!(
        post_write(server.addr(), &encode(&node_like(3, t + 1000, 2.0, "gc"))).status,
        204
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_series"), 3);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM prom_samples p WHERE NOT EXISTS (SELECT 1 FROM prom_series s WHERE s.series_id = p.series_id)"),
        0,
        "no sample points at a deleted series"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_samples p JOIN prom_series s USING (series_id)"
        ),
        3
    );
    assert!(server.shutdown(Duration::from_secs(10)));
}

#[test]
fn removing_many_series_neither_stalls_writers_nor_empties_their_caches() {
    let db = TestDb::new("series_gc_many");
    let mut config = promgres::config::Config::for_database(db.config());
    config.retention = Some(Duration::from_secs(3 * 86_400));
    config.max_sample_age = Duration::from_secs(3 * 86_400);
    let server = promgres::server::Server::start(&config).expect("start");
    let addr = server.addr();
    let mut c = db.client();
    // 200 live series being written, and 30,000 abandoned ones with no sample left.
    let t0 = now_ms() - 600_000;
    assert_eq!(
        post_write(addr, &encode(&node_like(200, t0, 1.0, "live"))).status,
        204
    );
    c.batch_execute(
        "INSERT INTO promgres.series (metric, labels, labels_hash, created_at)
         SELECT 'gone', l, sha256(convert_to(l::text, 'UTF8')), now() - interval '30 days'
           FROM (SELECT jsonb_build_object('__name__', 'gone', 'i', i::text) AS l
                   FROM generate_series(1, 30000) i) x",
    )
    .expect("abandoned series");
    let misses = |m: &promgres::metrics::Metrics| m.series_cache_misses.get();
    let misses_before = misses(&server.metrics);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (latencies, removal) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut latencies = Vec::new();
            let mut n = 1;
            // Bounded: at most 3,000 requests.
            while !done.load(std::sync::atomic::Ordering::Relaxed) && n < 3000 {
                let started = std::time::Instant::now();
                let r = post_write(addr, &encode(&node_like(200, t0 + n * 100, 1.0, "live")));
                assert_eq!(r.status, 204, "{}", r.body);
                latencies.push(started.elapsed());
                n += 1;
            }
            latencies
        });
        std::thread::sleep(Duration::from_millis(200));
        let started = std::time::Instant::now();
        server.apply_retention_now();
        let removal = started.elapsed();
        std::thread::sleep(Duration::from_millis(200));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (writer.join().expect("writer"), removal)
    });
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_series WHERE metric = 'gone'"
        ),
        0,
        "all removed"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_series WHERE metric <> 'gone'"
        ),
        200,
        "live series kept"
    );
    // In batches of at most 1,000, each its own short transaction and generation.
    let batches = count(&mut c, "SELECT count(*) FROM promgres.series_removals");
    let largest = count(
        &mut c,
        "SELECT max(cardinality(series_ids))::int8 FROM promgres.series_removals",
    );
    assert!(
        batches >= 30 && largest <= 1000,
        "{batches} batches, largest {largest}"
    );
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "removal of 30,000 series took {removal:?} in {batches} batches; {} writes meanwhile, slowest {slowest:?}",
        latencies.len()
    );
    assert!(latencies.len() >= 5, "writes went on during the removal");
    // The live series stayed cached: the removal evicted only the ids it removed.
    let extra_misses = misses(&server.metrics) - misses_before;
    assert!(
        extra_misses < 200,
        "{extra_misses} cache misses: the writers' caches were emptied"
    );
    assert!(server.shutdown(Duration::from_secs(10)));
}
