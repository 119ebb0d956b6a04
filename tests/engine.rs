//! The storage engine: compaction folds head rows of closed windows into chunks, and every
//! promise holds across it: bit-exact values (NaN payloads, -0.0) in SQL and in reads, one
//! sample per (series, time) however resends, late samples and compaction interleave, the
//! first value wins and conflicts are counted, a compaction killed mid-way loses nothing,
//! and a database written before chunks existed stays readable and compacts.

mod common;

use common::*;
use promgres::engine;
use promgres::proto::WriteRequest;
use std::time::Duration;

const STALE: u64 = 0x7ff0_0000_0000_0002;
const MIN: i64 = 60_000;

fn db_now(c: &mut postgres::Client) -> i64 {
    promgres::store::database_clock_ms(c).expect("db clock")
}

fn compact(c: &mut postgres::Client) -> engine::CompactionStats {
    let cutoff = engine::cutoff_ms(db_now(c));
    engine::compact(c, cutoff, engine::Scope::AllDays, &mut |_| true).expect("compaction pass")
}

/// Every sample SQL shows: (series id, ms, bits), ordered.
fn sql_samples(c: &mut postgres::Client) -> Vec<(i64, i64, u64)> {
    c.query(
        "SELECT series_id, (extract(epoch FROM time) * 1000)::int8, value
           FROM prom_samples ORDER BY 1, 2",
        &[],
    )
    .expect("prom_samples")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get::<_, f64>(2).to_bits()))
    .collect()
}

/// Every sample the engine's reader returns for all series over all time.
fn read_samples(c: &mut postgres::Client) -> Vec<(i64, i64, u64)> {
    let ids: Vec<i64> = c
        .query("SELECT id FROM promgres.series ORDER BY id", &[])
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    let complete = engine::stream_samples(c, &ids, 0, 4_000_000_000_000, usize::MAX, |s, t, v| {
        out.push((s, t, v.to_bits()))
    })
    .expect("read");
    assert!(complete);
    out
}

/// A migrated database holding `series` series (named `metric`) and no sample yet, its head
/// partitions ready around `t`, five and a half hours ago (two closed windows): head rows
/// written straight into it are what a stopped instance or an earlier release left.
fn head_only_db(tag: &str, metric: &str, series: i32) -> (TestDb, postgres::Client, i64) {
    let db = TestDb::new(tag);
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();
    let t = db_now(&mut c) - 330 * MIN;
    let day = t.div_euclid(86_400_000) as i32;
    promgres::store::ensure_partitions(&mut c, &[day - 1, day, day + 1]).expect("partitions");
    c.execute(
        "INSERT INTO promgres.series (metric, labels, labels_hash)
         SELECT $1, jsonb_build_object('__name__', $1::text, 'n', g), int8send(g)
           FROM generate_series(1, $2) g",
        &[&metric, &series],
    )
    .expect("series");
    (db, c, t)
}

/// For tests that count what their own compaction passes do: no pass of the server's may
/// run in between (the default starts one 30 s after start).
fn no_background_compaction(config: &mut promgres::config::Config) {
    config.compaction = false;
}

fn head_rows(c: &mut postgres::Client) -> i64 {
    count(c, "SELECT count(*) FROM promgres.samples")
}

fn no_time_twice(samples: &[(i64, i64, u64)]) {
    for w in samples.windows(2) {
        assert!(
            (w[0].0, w[0].1) < (w[1].0, w[1].1),
            "a (series, time) shown twice or out of order: {w:?}"
        );
    }
}

/// Two series over about 2.5 hours ending 3 hours ago (so two windows are closed), with the
/// values a store must not bend: stale markers, -0.0, infinities, subnormals.
fn history(start: i64) -> WriteRequest {
    let special = [
        f64::from_bits(STALE),
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::from_bits(1),
        f64::MIN_POSITIVE,
        f64::MAX,
        0.1 + 0.2,
    ];
    let a: Vec<(i64, f64)> = (0..600)
        .map(|k| (start + k * 15_000, k as f64 * 1.5))
        .collect();
    let b: Vec<(i64, f64)> = (0..600)
        .map(|k| {
            let v = special[(k % special.len() as i64) as usize];
            (start + k * 15_000 + 7, v)
        })
        .collect();
    write_request(vec![
        series(&[("__name__", "engine_counter"), ("job", "a")], &a),
        series(&[("__name__", "engine_special"), ("job", "b")], &b),
    ])
}

#[test]
fn compaction_keeps_every_sample_bit_exact_in_sql_and_reads() {
    let run = Running::start_with("engine_exact", no_background_compaction);
    let mut c = run.db.client();
    let start = db_now(&mut c) - 330 * MIN;
    let reply = run.write(&history(start));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let before = sql_samples(&mut c);
    assert_eq!(before.len(), 1200);
    assert_eq!(read_samples(&mut c), before);

    let stats = compact(&mut c);
    assert!(stats.chunks >= 2, "{stats:?}");
    assert_eq!(
        head_rows(&mut c),
        1200 - stats.samples as i64,
        "{stats:?}: folded rows left the head"
    );
    assert!(
        count(&mut c, "SELECT count(*) FROM promgres.chunks") >= 2,
        "chunks written"
    );
    let after = sql_samples(&mut c);
    assert_eq!(after, before, "SQL decodes chunks bit-exact");
    assert_eq!(
        read_samples(&mut c),
        before,
        "reads decode chunks bit-exact"
    );
    no_time_twice(&after);
    // The metric views read chunks too, and the range function agrees with the view.
    let in_view = count(&mut c, "SELECT count(*) FROM prom_metric.engine_special");
    assert_eq!(in_view, 600);
    let stale_in_sql = count(
        &mut c,
        "SELECT count(*) FROM prom_metric.engine_special
          WHERE float8send(value) = '\\x7ff0000000000002'::bytea",
    );
    assert_eq!(stale_in_sql, 75, "stale markers keep their payload in SQL");
    let neg_zero = count(
        &mut c,
        "SELECT count(*) FROM prom_metric.engine_special WHERE float8send(value) = float8send('-0'::float8)",
    );
    assert_eq!(neg_zero, 75, "-0.0 stays -0.0");
    let between = count(
        &mut c,
        &format!(
            "SELECT count(*) FROM prom_samples_between(
                 timestamptz 'epoch' + {} * interval '1 ms', timestamptz 'epoch' + {} * interval '1 ms')",
            start + 100 * 15_000,
            start + 499 * 15_000
        ),
    );
    assert_eq!(
        between,
        2 * 400 - 1,
        "range function: both series, bounds inclusive"
    );
    // A second pass finds nothing new.
    let again = compact(&mut c);
    assert_eq!((again.samples, again.chunks), (0, 0), "{again:?}");
}

#[test]
fn resends_late_samples_and_conflicts_after_compaction_are_stored_once() {
    let run = Running::start_with("engine_once", no_background_compaction);
    let mut c = run.db.client();
    let start = db_now(&mut c) - 330 * MIN;
    let request = history(start);
    assert_eq!(run.write(&request).status, 204);
    let folded = compact(&mut c);
    let before = sql_samples(&mut c);

    // The same request again (a retry after a lost 2xx): nothing new anywhere.
    let reply = run.write(&request);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(sql_samples(&mut c), before, "a resend changes nothing");
    assert_eq!(head_rows(&mut c), 1200 - folded.samples as i64);
    let metrics = get(run.addr, "/metrics").body;
    let identical = metric_value(
        &metrics,
        "promgres_samples_duplicate_total{kind=\"identical\"}",
    );
    assert_eq!(identical, 1200.0, "resends counted apart");
    let stored = metric_value(&metrics, "promgres_samples_stored_total");
    assert_eq!(stored, 1200.0, "resends are not counted as stored");

    // Another value for a compacted time: the first stays, the conflict is counted.
    let t = start + 10 * 15_000;
    let conflict = write_request(vec![series(
        &[("__name__", "engine_counter"), ("job", "a")],
        &[(t, 12345.0)],
    )]);
    assert_eq!(run.write(&conflict).status, 204);
    assert_eq!(sql_samples(&mut c), before, "first value wins");
    let metrics = get(run.addr, "/metrics").body;
    assert_eq!(
        metric_value(
            &metrics,
            "promgres_samples_duplicate_total{kind=\"conflicting\"}"
        ),
        1.0
    );

    // A late sample between two compacted ones: stored, in order, and folded next pass.
    let late = write_request(vec![series(
        &[("__name__", "engine_counter"), ("job", "a")],
        &[(t + 5_000, -7.25)],
    )]);
    assert_eq!(run.write(&late).status, 204);
    let with_late = sql_samples(&mut c);
    assert_eq!(with_late.len(), 1201);
    no_time_twice(&with_late);
    let merged = compact(&mut c);
    assert_eq!(
        merged.rewritten, 1,
        "{merged:?}: the late sample rewrote its chunk"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM promgres.open_chunks"),
        1,
        "a closed window's rewritten chunk waits in open_chunks until late samples stop"
    );
    assert_eq!(sql_samples(&mut c), with_late);
    assert_eq!(read_samples(&mut c), with_late);
}

#[test]
fn compaction_racing_resends_and_a_killed_pass_never_lose_or_double() {
    let run = Running::start_with("engine_race", no_background_compaction);
    let mut c = run.db.client();
    let start = db_now(&mut c) - 330 * MIN;
    let request = history(start);
    assert_eq!(run.write(&request).status, 204);
    let expected = sql_samples(&mut c);
    let uri = run.db.uri();

    // A pass killed mid-way (its backend terminated) rolls back: nothing lost or doubled.
    let mut victim = postgres::Client::connect(&uri, postgres::NoTls).expect("connect");
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let killer = std::thread::spawn({
        let uri = uri.clone();
        move || {
            let mut k = postgres::Client::connect(&uri, postgres::NoTls).expect("connect");
            std::thread::sleep(Duration::from_millis(5));
            k.execute("SELECT pg_terminate_backend($1)", &[&pid])
                .expect("terminate");
        }
    });
    let cutoff = engine::cutoff_ms(db_now(&mut c));
    let _ = engine::compact(&mut victim, cutoff, engine::Scope::AllDays, &mut |_| true);
    killer.join().expect("killer");
    let after_kill = sql_samples(&mut c);
    assert_eq!(
        after_kill, expected,
        "a killed pass loses and doubles nothing"
    );

    // Resends of the whole history race compaction passes on another connection.
    let compactor = std::thread::spawn({
        let uri = uri.clone();
        move || {
            let mut k = postgres::Client::connect(&uri, postgres::NoTls).expect("connect");
            for _ in 0..20 {
                let now = promgres::store::database_clock_ms(&mut k).expect("clock");
                // Serialization failures against a racing writer are expected: retried.
                let _ = engine::compact(
                    &mut k,
                    engine::cutoff_ms(now),
                    engine::Scope::AllDays,
                    &mut |_| true,
                );
            }
        }
    });
    for _ in 0..20 {
        let reply = run.write(&request);
        assert_eq!(reply.status, 204, "{}", reply.body);
        let seen = sql_samples(&mut c);
        assert_eq!(
            seen, expected,
            "no (series, time) visible twice, none missing"
        );
    }
    compactor.join().expect("compactor");
    compact(&mut c);
    assert_eq!(sql_samples(&mut c), expected);
    assert_eq!(read_samples(&mut c), expected);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM promgres.samples WHERE time < now() - interval '3 hours'"
        ),
        0,
        "everything closed is folded"
    );
}

#[test]
fn a_database_written_before_chunks_stays_readable_and_compacts() {
    let db = TestDb::new("engine_upgrade");
    let mut c = db.client();
    // The schema as the previous release left it (migrations 1-6), with its rows.
    for (v, file) in [
        (1, "0001_init"),
        (2, "0002_ha"),
        (3, "0003_series_generation"),
        (4, "0004_advisory_tenure"),
        (5, "0005_series_removals"),
        (6, "0006_handover_not_in_future"),
    ] {
        let sql = std::fs::read_to_string(format!(
            "{}/migrations/{file}.sql",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("migration file");
        c.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS promgres;
             CREATE TABLE IF NOT EXISTS promgres.schema_migrations (
                 version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .expect("migrations table");
        c.batch_execute(&sql).expect("old migration");
        c.execute(
            "INSERT INTO promgres.schema_migrations (version, name) VALUES ($1, $2)",
            &[&v, &file],
        )
        .expect("record");
    }
    let now = db_now(&mut c);
    let day = (now - 330 * MIN).div_euclid(86_400_000) as i32;
    promgres::store::ensure_partitions(&mut c, &[day - 1, day, day + 1]).expect("partitions");
    c.batch_execute(
        "INSERT INTO promgres.series (metric, labels, labels_hash)
             VALUES ('old_metric', '{\"__name__\": \"old_metric\"}', '\\x01');
         SELECT promgres.ensure_metric_view('old_metric');",
    )
    .expect("series");
    c.execute(
        "INSERT INTO promgres.samples
         SELECT s.id, date_trunc('milliseconds', now()) - interval '330 minutes' + k * interval '15 seconds', k
           FROM promgres.series s, generate_series(0, 599) k",
        &[],
    )
    .expect("old rows");
    let before = sql_samples(&mut c);
    assert_eq!(before.len(), 600);

    promgres::server::migrate(&db.config()).expect("migrate to chunks");
    assert_eq!(
        sql_samples(&mut c),
        before,
        "readable right after the upgrade"
    );
    let stats = compact(&mut c);
    assert!(stats.samples > 0, "{stats:?}");
    assert_eq!(sql_samples(&mut c), before, "readable after compaction");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM prom_metric.old_metric"),
        600
    );
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn sql_and_rust_decoders_agree_on_every_kind_of_value() {
    let run = Running::start_with("engine_kinds", no_background_compaction);
    let mut c = run.db.client();
    let start = db_now(&mut c) - 330 * MIN;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    type Kind = Box<dyn Fn(u64, i64) -> f64>;
    let kinds: Vec<(&str, Kind)> = vec![
        (
            "cents",
            Box::new(|r, k| (1_000_000 + k * 37 + (r % 50) as i64) as f64 / 100.0),
        ),
        (
            "integers",
            Box::new(|r, _| (r % 1_000_000) as f64 - 500_000.0),
        ),
        (
            "huge",
            Box::new(|r, k| ((r % 9000) as f64 + 1.0) * 1e30 + k as f64 * 1e27),
        ),
        ("tiny", Box::new(|r, _| ((r % 9000) as f64 + 1.0) * 1e-25)),
        (
            "random_bits",
            Box::new(|r, _| f64::from_bits(r & !(0x7ff << 52) | (0x3ff << 52))),
        ),
        ("thirds", Box::new(|r, _| (r % 1000) as f64 / 3.0)),
        ("constant", Box::new(|_, _| 42.5)),
    ];
    let timeseries = kinds
        .iter()
        .map(|(name, f)| {
            let samples: Vec<(i64, f64)> = (0..400)
                .map(|k| (start + k * 15_000 + (next() % 4) as i64, f(next(), k)))
                .collect();
            series(&[("__name__", "engine_kinds"), ("kind", name)], &samples)
        })
        .collect();
    assert_eq!(run.write(&write_request(timeseries)).status, 204);
    let before = sql_samples(&mut c);
    assert_eq!(before.len(), 400 * 7);
    compact(&mut c);
    assert_eq!(head_rows(&mut c), 0);
    assert_eq!(
        sql_samples(&mut c),
        before,
        "the PL/pgSQL decoder is bit-exact"
    );
    assert_eq!(
        read_samples(&mut c),
        before,
        "the Rust decoder is bit-exact"
    );
}

#[test]
fn every_instance_compacts_in_the_background_at_start_and_shares_the_work() {
    // Head rows as a stopped instance (or an earlier release) left them, written here so
    // that no instance compacts them before the two below start.
    let (db, mut c, t) = head_only_db("engine_background", "bg", 2);
    c.execute(
        "INSERT INTO promgres.samples
         SELECT s.id, timestamptz 'epoch' + ($1::int8 + k * 15000) * interval '1 ms', k * 0.5
           FROM promgres.series s, generate_series(0, 599) k",
        &[&t],
    )
    .expect("rows");
    let before = sql_samples(&mut c);
    assert_eq!(head_rows(&mut c), 1200);
    // An instance started with --no-compaction comes first and never takes a range.
    let mut config = promgres::config::Config::for_database(db.config());
    config.compaction_delay = Duration::ZERO;
    config.compaction = false;
    let bystander = promgres::server::Server::start(&config).expect("start");
    // Two instances start on the database: their maintenance threads compact at start,
    // each range once.
    let servers: Vec<_> = (0..2)
        .map(|_| {
            let mut config = promgres::config::Config::for_database(db.config());
            config.compaction_delay = Duration::ZERO;
            promgres::server::Server::start(&config).expect("start")
        })
        .collect();
    let folded = wait_for(Duration::from_secs(30), || {
        (head_rows(&mut c) == 0).then_some(())
    });
    assert!(folded.is_some(), "head rows left: {}", head_rows(&mut c));
    assert_eq!(sql_samples(&mut c), before);
    let total = || -> f64 {
        servers
            .iter()
            .map(|s| {
                let text = get(s.addr(), "/metrics").body;
                metric_value(&text, "promgres_compaction_samples_total")
            })
            .sum()
    };
    // The metric is added when a pass ends, a moment after its last commit.
    let counted = wait_for(Duration::from_secs(10), || {
        (total() >= 1200.0).then_some(())
    });
    assert!(counted.is_some(), "counted {}", total());
    assert_eq!(
        total(),
        1200.0,
        "the instances folded every sample once between them"
    );
    let text = get(bystander.addr(), "/metrics").body;
    assert_eq!(
        metric_value(&text, "promgres_compaction_passes_total"),
        0.0,
        "--no-compaction: no pass"
    );
    assert!(bystander.shutdown(Duration::from_secs(10)));
    for s in servers {
        assert!(s.shutdown(Duration::from_secs(10)));
    }
}

#[test]
fn partitions_created_by_many_sessions_at_once_never_collide() {
    let db = TestDb::new("engine_partitions");
    promgres::server::migrate(&db.config()).expect("migrate");
    let today = (now_ms() / 86_400_000) as i32;
    for round in 0..3 {
        let days: Vec<i32> = (0..30).map(|d| today - 100 * (round + 1) + d).collect();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (uri, days) = (db.uri(), days.clone());
                std::thread::spawn(move || {
                    let mut c = postgres::Client::connect(&uri, postgres::NoTls).expect("connect");
                    promgres::store::ensure_partitions(&mut c, &days)
                        .and_then(|_| {
                            for d in &days {
                                c.execute(
                                    "SELECT promgres.ensure_chunk_partition(DATE '1970-01-01' + $1::int4)",
                                    &[d],
                                )?;
                            }
                            Ok(())
                        })
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("no collision");
        }
    }
    let mut c = db.client();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'promgres.chunks'::regclass"
        ),
        90
    );
}

#[test]
fn sweeps_visit_only_the_days_late_samples_marked() {
    let run = Running::start_with("engine_sweep", no_background_compaction);
    let mut c = run.db.client();
    let start = db_now(&mut c) - 330 * MIN;
    assert_eq!(run.write(&history(start)).status, 204);
    compact(&mut c);
    let cutoff = engine::cutoff_ms(db_now(&mut c));
    let pending =
        |c: &mut postgres::Client| count(c, "SELECT count(*) FROM promgres.compaction_pending");
    assert_eq!(pending(&mut c), 0, "a full pass clears the marks");
    let idle =
        engine::compact(&mut c, cutoff, engine::Scope::Pending, &mut |_| true).expect("sweep");
    assert_eq!(
        idle.ranges_total, 0,
        "{idle:?}: nothing marked, nothing read"
    );

    let late = write_request(vec![series(
        &[("__name__", "engine_counter"), ("job", "a")],
        &[(start + 20 * 15_000 + 1, 99.5)],
    )]);
    assert_eq!(run.write(&late).status, 204);
    assert_eq!(pending(&mut c), 1, "the late sample's day is marked");
    let with_late = sql_samples(&mut c);
    let swept =
        engine::compact(&mut c, cutoff, engine::Scope::Pending, &mut |_| true).expect("sweep");
    assert_eq!((swept.samples, swept.rewritten), (1, 1), "{swept:?}");
    assert_eq!(pending(&mut c), 0);
    assert_eq!(head_rows(&mut c), 0);
    assert_eq!(sql_samples(&mut c), with_late);
}

#[test]
fn a_range_with_too_many_rows_is_split_down_to_one_series() {
    let run = Running::start_with("engine_split", no_background_compaction);
    let mut c = run.db.client();
    let start = db_now(&mut c) - 330 * MIN;
    assert_eq!(run.write(&history(start)).status, 204);
    let before = sql_samples(&mut c);
    let cutoff = engine::cutoff_ms(db_now(&mut c));
    // 600 rows per series, at most 100 per transaction: every range splits to single series,
    // which are done whole.
    let stats =
        engine::compact::compact_bounded(&mut c, cutoff, engine::Scope::AllDays, 100, &mut |_| {
            true
        })
        .expect("compaction");
    assert_eq!(stats.samples, 1200, "{stats:?}");
    assert_eq!(head_rows(&mut c), 0);
    assert_eq!(sql_samples(&mut c), before);
    assert_eq!(read_samples(&mut c), before);
}

#[test]
fn a_range_that_fails_is_left_for_the_next_pass_and_the_rest_is_done() {
    // 700 series: ids fall into two grid cells of 500.
    let (_db, mut c, t) = head_only_db("engine_failing_range", "m", 700);
    // At a window start: the ten rows (135 s) then never straddle a UTC midnight, which
    // would split them over two days' ranges.
    let t = engine::window_of(t);
    let (lo, hi): (i64, i64) = {
        let r = c
            .query_one("SELECT min(id), max(id) FROM promgres.series", &[])
            .expect("ids");
        (r.get(0), r.get(1))
    };
    c.execute(
        "INSERT INTO promgres.samples
         SELECT s, timestamptz 'epoch' + ($1::int8 + k * 15000) * interval '1 ms', k
           FROM unnest(ARRAY[$2::int8, $3::int8]) s, generate_series(0, 9) k",
        &[&t, &lo, &hi],
    )
    .expect("rows");
    // A chunk that does not decode where the first series' rows must merge.
    promgres::engine::compact::ensure_chunk_partitions_for(&mut c, t).expect("chunk partition");
    c.execute(
        "INSERT INTO promgres.chunks VALUES
             ($1, timestamptz 'epoch' + $2::int8 * interval '1 ms', now(), 3, '\\xff'::bytea, NULL)",
        &[&lo, &engine::window_of(t)],
    )
    .expect("corrupt chunk");
    let stats = compact(&mut c);
    assert_eq!(stats.ranges_failed, 1, "{stats:?}");
    assert_eq!(stats.samples, 10, "{stats:?}: the other cell was folded");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM promgres.compaction_pending"),
        1,
        "the day is marked for the next sweep"
    );
    assert_eq!(
        head_rows(&mut c),
        10,
        "the failed range's rows stay in the head"
    );
}

#[test]
fn the_open_window_is_compacted_slice_by_slice_and_a_sender_catching_up_appends() {
    let run = Running::start_with("engine_open", no_background_compaction);
    let mut c = run.db.client();
    let now = db_now(&mut c);
    // One cutoff for every pass: a 10-minute mark passing mid-test must not move it.
    let cutoff = engine::cutoff_ms(now);
    let compact = |c: &mut postgres::Client| {
        engine::compact(c, cutoff, engine::Scope::AllDays, &mut |_| true).expect("pass")
    };
    let start = now - 50 * MIN;
    let name = [("__name__", "engine_recent"), ("job", "a")];
    let samples: Vec<(i64, f64)> = (0..200)
        .map(|k| (start + k * 15_000, (k * 3) as f64 / 4.0))
        .filter(|s| s.0 <= now)
        .collect();
    // The sender first gets 20 minutes out, then stalls (its Prometheus is behind).
    let split = samples.partition_point(|s| s.0 < start + 20 * MIN);
    let (early, rest) = samples.split_at(split);
    assert_eq!(
        run.write(&write_request(vec![series(&name, early)])).status,
        204
    );
    let first = compact(&mut c);
    assert_eq!(
        first.samples as usize,
        early.len(),
        "{first:?}: everything older than the cutoff left the head, though its window is open"
    );
    assert!(
        cutoff > start + 20 * MIN,
        "the test's times precede the cutoff"
    );
    assert_eq!(head_rows(&mut c), 0);

    // It catches up: the part older than the cutoff is late, lands after the chunk's end
    // (no duplicate, counted as stored), and the next pass appends it to the same chunk.
    let reply = run.write(&write_request(vec![series(&name, rest)]));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let all = sql_samples(&mut c);
    assert_eq!(all.len(), samples.len());
    no_time_twice(&all);
    let metrics = get(run.addr, "/metrics").body;
    assert_eq!(
        metric_value(&metrics, "promgres_samples_stored_total"),
        samples.len() as f64
    );
    let second = compact(&mut c);
    let older = rest.iter().filter(|s| s.0 < cutoff).count();
    assert_eq!(second.samples as usize, older, "{second:?}");
    let same_window = engine::window_of(early[early.len() - 1].0) == engine::window_of(rest[0].0);
    assert_eq!(second.rewritten, u64::from(same_window), "{second:?}");
    assert_eq!(
        head_rows(&mut c),
        (rest.len() - older) as i64,
        "the head keeps only the last minutes"
    );
    assert_eq!(sql_samples(&mut c), all);
    assert_eq!(read_samples(&mut c), all);

    // Resends of everything and a conflict on a compacted time change nothing and are
    // counted apart.
    let reply = run.write(&write_request(vec![series(&name, &samples)]));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let conflict = [(samples[3].0, 1e9)];
    assert_eq!(
        run.write(&write_request(vec![series(&name, &conflict)]))
            .status,
        204
    );
    assert_eq!(sql_samples(&mut c), all, "first value wins, nothing twice");
    let metrics = get(run.addr, "/metrics").body;
    assert_eq!(
        metric_value(
            &metrics,
            "promgres_samples_duplicate_total{kind=\"identical\"}"
        ),
        samples.len() as f64
    );
    assert_eq!(
        metric_value(
            &metrics,
            "promgres_samples_duplicate_total{kind=\"conflicting\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "promgres_samples_stored_total"),
        samples.len() as f64
    );
    let third = compact(&mut c);
    assert_eq!(third.samples, 0, "{third:?}: resends left nothing to fold");
    assert_eq!(read_samples(&mut c), all);

    // The chunks of windows still open live in open_chunks (so do closed windows' chunks
    // rewritten under the current cutoff); the daily partitions hold only closed windows.
    let open_windows: std::collections::BTreeSet<i64> = all
        .iter()
        .map(|s| engine::window_of(s.1))
        .filter(|&w| folded_any(&all, cutoff, w) && w + engine::WINDOW_MS > cutoff)
        .collect();
    assert!(
        count(&mut c, "SELECT count(*) FROM promgres.open_chunks") >= open_windows.len() as i64
    );
    assert_eq!(
        count(
            &mut c,
            &format!(
                "SELECT count(*) FROM promgres.chunks
                  WHERE start_time > timestamptz 'epoch' + {} * interval '1 ms'",
                cutoff - engine::WINDOW_MS
            )
        ),
        0,
        "no open window in the daily partitions"
    );
    // Later cutoffs are safe here: nothing writes any more.
    let last = all[all.len() - 1].1;
    let closing = engine::window_of(last) + engine::WINDOW_MS;
    // The chunks this pass rewrites: those whose window still has head rows. (A window
    // with head rows and no chunk yet, as within minutes after an even UTC hour, gets its
    // first chunk, which goes straight to the daily partitions.)
    let rewrites = count(
        &mut c,
        "SELECT count(*) FROM (SELECT series_id, start_time FROM promgres.open_chunks
                              UNION ALL SELECT series_id, start_time FROM promgres.chunks) x
          WHERE EXISTS (SELECT 1 FROM promgres.samples s
                         WHERE s.series_id = x.series_id AND s.time >= x.start_time
                           AND s.time < x.start_time + interval '2 hours')",
    );
    let folded = engine::compact(&mut c, closing, engine::Scope::AllDays, &mut |_| true)
        .expect("pass past the window");
    assert_eq!(head_rows(&mut c), 0, "{folded:?}");
    // Rewrites wait in open_chunks for a pass with a later cutoff; everything else there
    // (older cutoffs) moved to the daily partitions.
    let waiting = count(&mut c, "SELECT count(*) FROM promgres.open_chunks");
    assert_eq!(waiting, rewrites, "{folded:?}");
    let idle =
        engine::compact(&mut c, closing, engine::Scope::AllDays, &mut |_| true).expect("idle pass");
    assert_eq!(idle.promoted, 0, "{idle:?}: same cutoff, nothing moves");
    let later = engine::compact(
        &mut c,
        closing + engine::SLICE_MS,
        engine::Scope::AllDays,
        &mut |_| true,
    )
    .expect("later pass");
    assert_eq!(later.promoted, waiting as u64, "{later:?}");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM promgres.open_chunks"),
        0
    );
    assert_eq!(sql_samples(&mut c), all);
    assert_eq!(read_samples(&mut c), all);
}

/// Whether any of `samples` in window `w` lies below `cutoff` (was folded).
fn folded_any(samples: &[(i64, i64, u64)], cutoff: i64, w: i64) -> bool {
    samples
        .iter()
        .any(|s| engine::window_of(s.1) == w && s.1 < cutoff)
}

#[test]
fn a_window_folded_slice_by_slice_is_written_to_the_daily_partitions_once() {
    let (db, mut c, t) = head_only_db("engine_slices", "engine_sliced", 1000);
    let start = engine::window_of(t) - engine::WINDOW_MS;
    c.execute(
        "INSERT INTO promgres.samples
         SELECT s.id, timestamptz 'epoch' + ($1::int8 + k * 15000 + s.id % 3) * interval '1 ms',
                (k * 37 + s.id % 11)::float8 / 4
           FROM promgres.series s, generate_series(0, 479) k",
        &[&start],
    )
    .expect("head rows");
    let expected = sql_samples(&mut c);
    // Twelve passes, a slice each, as the maintenance thread makes while the window is open.
    let mut promoted = 0;
    for k in 1..=12 {
        let stats = engine::compact(
            &mut c,
            start + k * engine::SLICE_MS,
            engine::Scope::AllDays,
            &mut |_| true,
        )
        .expect("pass");
        promoted += stats.promoted;
        let open = count(&mut c, "SELECT count(*) FROM promgres.open_chunks");
        assert_eq!(open, 1000, "after slice {k}: {stats:?}");
    }
    assert_eq!(promoted, 0, "nothing closed before the last slice's pass");
    // The next cutoff finds the window closed and its chunks untouched: they move, once.
    let next = engine::compact(
        &mut c,
        start + engine::WINDOW_MS + engine::SLICE_MS,
        engine::Scope::AllDays,
        &mut |_| true,
    )
    .expect("pass");
    assert_eq!((next.samples, next.promoted), (0, 1000), "{next:?}");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM promgres.open_chunks"),
        0
    );
    assert_eq!(sql_samples(&mut c), expected);
    c.batch_execute("VACUUM promgres.chunks, promgres.open_chunks")
        .expect("vacuum");
    let (on_disk, live): (i64, i64) = {
        let row = c
            .query_one(
                "SELECT (SELECT sum(pg_relation_size(i.inhrelid))::int8 FROM pg_inherits i
                          WHERE i.inhparent = 'promgres.chunks'::regclass),
                        (SELECT sum(pg_column_size(c.*))::int8 FROM promgres.chunks c)",
                &[],
            )
            .expect("sizes");
        (row.get(0), row.get(1))
    };
    // Rewritten in place, each slice's old versions stayed in the day's partition: 7.5x the
    // live rows when measured. Written once, the heap is the live rows and page overhead.
    assert!(
        on_disk < live * 3 / 2,
        "chunk partitions {on_disk} bytes for {live} bytes of chunks"
    );
    drop(db);
}
