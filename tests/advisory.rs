//! The legacy advisory-lock election with real promgres processes on real PostgreSQL: each
//! promgres is fed by its own sender (standing in for its paired Prometheus), both senders
//! scrape the same series at their own offsets, so every stored sample says who sent it.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GRID_MS: i64 = SCRAPE_GRID_MS;
const TARGETS: usize = 5;

/// promgres in the legacy advisory-lock mode: 2 s Prometheus timeout, 1 s ticks.
struct Promgres;

impl Promgres {
    fn start(db: &TestDb, lock_id: i64) -> Process {
        let lock_id = lock_id.to_string();
        Process::start(
            &db_uri(db),
            &[
                "--leader-election-pg-advisory-lock-id",
                &lock_id,
                "--leader-election-pg-advisory-lock-prometheus-timeout",
                "2s",
                "--leader-election-interval",
                "1s",
                "--db-writers",
                "1",
                "--db-connections-max",
                "5",
                "--log-level",
                "warn",
            ],
        )
    }
}

fn sender_of(ts: i64) -> i64 {
    ts.rem_euclid(GRID_MS)
}

/// The senders (offsets) in time order, one entry per run of the same sender.
fn eras(stored: &BTreeMap<i64, i64>) -> Vec<i64> {
    let mut eras: Vec<i64> = Vec::new();
    for ts in stored.keys() {
        if eras.last() != Some(&sender_of(*ts)) {
            eras.push(sender_of(*ts));
        }
    }
    eras
}

#[test]
fn exactly_one_stores_and_the_other_takes_over_when_the_leaders_prometheus_stops() {
    let db = TestDb::new("lock_takeover");
    let p = [Promgres::start(&db, 101), Promgres::start(&db, 101)];
    let mut senders = [
        Scraper::start(vec![p[0].addr], "lk", None, 0, TARGETS),
        Scraper::start(vec![p[1].addr], "lk", None, 100, TARGETS),
    ];
    std::thread::sleep(Duration::from_secs(4));
    let mut c = db.client();
    let before = stored_by_time(&mut c, "lk");
    assert_eq!(
        eras(&before).len(),
        1,
        "one instance stores: {:?}",
        eras(&before)
    );
    let leader = usize::from(eras(&before)[0] == 100);
    let other = 1 - leader;
    let leader_answers = senders[leader].stop();
    let stopped = Instant::now();
    let took_over = wait_for(Duration::from_secs(10), || {
        let s = stored_by_time(&mut c, "lk");
        (eras(&s).len() == 2).then_some(())
    });
    assert!(
        took_over.is_some(),
        "the other instance takes over within timeout + a tick"
    );
    eprintln!(
        "take-over {:?} after the leader's Prometheus stopped (timeout 2 s, tick 1 s)",
        stopped.elapsed()
    );
    assert!(stopped.elapsed() <= Duration::from_secs(2 + 1 + 2));
    std::thread::sleep(Duration::from_secs(1));
    let other_answers = senders[other].stop();
    let all = stored_by_time(&mut c, "lk");
    assert_eq!(eras(&all).len(), 2, "{:?}", eras(&all));
    assert_acknowledged_stored(&leader_answers, &all, TARGETS);
    assert_acknowledged_stored(&other_answers, &all, TARGETS);
    assert!(
        other_answers.iter().any(|(_, s)| *s == 202),
        "the follower answered 202 while it did not store"
    );
    let metrics = get(p[other].addr, "/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l == "promgres_advisory_lock_leader 1"),
        "{metrics}"
    );
    assert!(
        get(p[leader].addr, "/healthz").status == 200,
        "a follower stays healthy"
    );
}

#[test]
fn kill_9_of_the_leader_hands_the_lock_over_and_loses_nothing_acknowledged() {
    let db = TestDb::new("lock_kill");
    let mut p = [Promgres::start(&db, 202), Promgres::start(&db, 202)];
    let mut senders = [
        Scraper::start(vec![p[0].addr], "lk", None, 0, TARGETS),
        Scraper::start(vec![p[1].addr], "lk", None, 100, TARGETS),
    ];
    std::thread::sleep(Duration::from_secs(3));
    let mut c = db.client();
    let leader = usize::from(eras(&stored_by_time(&mut c, "lk"))[0] == 100);
    p[leader].kill();
    let killed = Instant::now();
    let took_over = wait_for(Duration::from_secs(10), || {
        (eras(&stored_by_time(&mut c, "lk")).len() == 2).then_some(())
    });
    assert!(
        took_over.is_some(),
        "PostgreSQL released the lock and the other instance took it"
    );
    eprintln!(
        "take-over {:?} after kill -9 of the leading promgres",
        killed.elapsed()
    );
    std::thread::sleep(Duration::from_millis(500));
    let dead_answers = senders[leader].stop();
    let live_answers = senders[1 - leader].stop();
    let all = stored_by_time(&mut c, "lk");
    assert_eq!(eras(&all).len(), 2);
    assert_acknowledged_stored(&dead_answers, &all, TARGETS);
    assert_acknowledged_stored(&live_answers, &all, TARGETS);
}

#[test]
fn a_terminated_lock_session_stops_writing_and_no_moment_is_stored_twice() {
    let db = TestDb::new("lock_terminate");
    let p = [Promgres::start(&db, 303), Promgres::start(&db, 303)];
    let mut senders = [
        Scraper::start(vec![p[0].addr], "lk", None, 0, TARGETS),
        Scraper::start(vec![p[1].addr], "lk", None, 100, TARGETS),
    ];
    std::thread::sleep(Duration::from_secs(3));
    let mut c = db.client();
    let terminated: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE application_name LIKE 'promgres-advisory-lock %' AND datname = current_database()
                AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 303 AND granted)",
            &[],
        )
        .expect("terminate")
        .get(0);
    assert_eq!(terminated, 1, "the leader's lock session");
    std::thread::sleep(Duration::from_secs(4));
    let answers: Vec<Vec<(i64, u16)>> = senders.iter_mut().map(Scraper::stop).collect();
    let all = stored_by_time(&mut c, "lk");
    // Whoever holds the lock after the termination, the senders' samples never interleave:
    // at most one switch, and no time stored from both.
    let e = eras(&all);
    assert!(e.len() <= 2, "eras {e:?}");
    for a in &answers {
        assert_acknowledged_stored(a, &all, TARGETS);
    }
    let statuses: BTreeMap<u16, usize> =
        answers
            .iter()
            .flatten()
            .fold(BTreeMap::new(), |mut m, (_, s)| {
                *m.entry(*s).or_default() += 1;
                m
            });
    assert!(
        statuses.keys().all(|s| [202, 204, 503].contains(s)),
        "{statuses:?}"
    );
    // The leader noticed it had lost the lock (fence or tick), rather than writing on.
    let losses: u64 = p
        .iter()
        .map(|x| {
            get(x.addr, "/metrics")
                .body
                .lines()
                .find_map(|l| l.strip_prefix("promgres_advisory_lock_losses_total "))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(losses >= 1, "the lock loss was detected");
    // Storing continued after the termination.
    let last = *all.keys().last().expect("samples");
    assert!(last > now_ms() - 2_000, "still storing at the end");
}

#[test]
fn two_groups_with_different_lock_ids_do_not_interfere() {
    let db = TestDb::new("lock_groups");
    let g1 = [Promgres::start(&db, 404), Promgres::start(&db, 404)];
    let g2 = [Promgres::start(&db, 505), Promgres::start(&db, 505)];
    let _senders = [
        Scraper::start(vec![g1[0].addr], "g_one", None, 0, TARGETS),
        Scraper::start(vec![g1[1].addr], "g_one", None, 100, TARGETS),
        Scraper::start(vec![g2[0].addr], "g_two", None, 0, TARGETS),
        Scraper::start(vec![g2[1].addr], "g_two", None, 100, TARGETS),
    ];
    std::thread::sleep(Duration::from_secs(4));
    let mut c = db.client();
    for metric in ["g_one", "g_two"] {
        let s = stored_by_time(&mut c, metric);
        assert!(s.len() >= 8, "{metric}: stored {} scrapes", s.len());
        assert_eq!(
            eras(&s).len(),
            1,
            "{metric}: exactly one instance of its group stores"
        );
    }
    let leaders: i64 = [&g1[0], &g1[1], &g2[0], &g2[1]]
        .iter()
        .map(|p| {
            i64::from(
                get(p.addr, "/metrics")
                    .body
                    .lines()
                    .any(|l| l == "promgres_advisory_lock_leader 1"),
            )
        })
        .sum();
    assert_eq!(leaders, 2, "one leader per group");
}

/// The lock session as promgres opens it (5 s lock_timeout) on a migrated test database.
fn lock_session(db: &TestDb) -> promgres::advisory::PgLockSession {
    promgres::server::migrate(&db.config()).expect("migrate");
    promgres::advisory::PgLockSession::new(
        &db.config(),
        &promgres::pg_session::SessionBounds::default(),
    )
}

/// Whether some other session can take advisory lock `key` now (and gives it back).
fn free(db: &TestDb, key: i64) -> bool {
    let mut c = db.client();
    let won: bool = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .expect("try")
        .get(0);
    if won {
        c.execute("SELECT pg_advisory_unlock($1)", &[&key])
            .expect("unlock");
    }
    won
}

#[test]
fn a_lock_whose_companion_wait_times_out_is_given_back() {
    use promgres::advisory::LockSession;
    let db = TestDb::new("lock_companion");
    let mut session = lock_session(&db);
    let key: i64 = 909;
    // An old holder's writer is inside a fenced transaction: it holds the companion shared.
    let mut writer = db.client();
    let mut tx = writer.transaction().expect("begin");
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared(($1::int8 >> 32)::int4, $1::int4)",
        &[&key],
    )
    .expect("companion");
    let started = Instant::now();
    let result = session.try_lock(key);
    assert!(
        result.is_err(),
        "the companion wait times out: {result:?} after {:?}",
        started.elapsed()
    );
    assert!(
        free(&db, key),
        "the key won before the companion timed out was given back"
    );
    tx.rollback().expect("rollback");
    assert_eq!(session.try_lock(key).expect("try"), Some(1), "first tenure");
}

#[test]
fn a_session_never_holds_the_key_twice() {
    use promgres::advisory::LockSession;
    let db = TestDb::new("lock_twice");
    let mut session = lock_session(&db);
    let key: i64 = 910;
    let first = session.try_lock(key).expect("try").expect("won");
    let again = session.try_lock(key).expect("try").expect("still held");
    assert_eq!(first, again, "the same tenure, not a second hold");
    assert!(!free(&db, key));
    session.unlock(key).expect("unlock");
    assert!(free(&db, key), "one unlock gives the lock up");
}

#[test]
fn a_stale_tenure_fails_alone_in_a_merged_transaction() {
    use promgres::advisory::{AdvisoryConfig, AdvisoryElection};
    use promgres::fence::LockFence;
    use promgres::metrics::Metrics;
    use promgres::queue::Queue;
    use promgres::writer::{Shared, WriterPool};
    let db = TestDb::new("lock_stale");
    let key: i64 = 911;
    let session = lock_session(&db);
    struct Manual(std::sync::atomic::AtomicI64);
    impl promgres::clock::Clock for Manual {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }
    let clock = Arc::new(Manual(std::sync::atomic::AtomicI64::new(1_000_000)));
    let metrics = Arc::new(Metrics::default());
    let election = AdvisoryElection::new(
        AdvisoryConfig {
            lock_id: key,
            prometheus_timeout_ms: 30_000,
            interval_ms: 10_000,
        },
        Box::new(session),
        clock.clone(),
        metrics.clone(),
    );
    let stale = election.on_write().expect("tenure 1");
    // Its Prometheus goes quiet: the instance resigns; it comes back and wins again.
    clock.0.fetch_add(40_000, Ordering::SeqCst);
    election.tick();
    assert!(!election.is_leader());
    clock.0.fetch_add(2_000, Ordering::SeqCst);
    let current: LockFence = election.on_write().expect("tenure 2");
    assert_eq!((stale.tenure, current.tenure), (1, 2));
    let (queue, jobs) = Queue::new(16, 1, promgres::queue::Acks::AfterCommit, metrics.clone());
    let shared = Arc::new(Shared::new(metrics.clone(), 1000));
    let writers = WriterPool::start(
        &db.config(),
        jobs,
        shared,
        &promgres::pg_session::SessionBounds::default(),
    )
    .expect("writer");
    let batch = |metric: &str| {
        let req = write_request(vec![series(&[("__name__", metric)], &[(now_ms(), 1.0)])]);
        promgres::decode::decode_write(
            &encode(&req),
            promgres::decode::Limits::new(1 << 20, 86_400_000),
            now_ms(),
        )
        .expect("decode")
    };
    // Hold the writer in its first transaction (the series-removal lock it takes shared), so
    // the next two jobs queue up and are merged into one transaction.
    let mut blocker = db.client();
    let mut hold = blocker.transaction().expect("begin");
    hold.execute("SELECT pg_advisory_xact_lock(8102661195471090281)", &[])
        .expect("removal lock");
    let first = queue
        .submit(batch("first"), Vec::new(), Some(current))
        .expect("queued")
        .expect("waiter");
    std::thread::sleep(Duration::from_millis(500));
    let old = queue
        .submit(batch("stale_job"), Vec::new(), Some(stale))
        .expect("queued")
        .expect("waiter");
    let new = queue
        .submit(batch("valid_job"), Vec::new(), Some(current))
        .expect("queued")
        .expect("waiter");
    hold.rollback().expect("release");
    let wait = Duration::from_secs(10);
    assert!(first.recv_timeout(wait).expect("answer").is_ok());
    let old = old.recv_timeout(wait).expect("answer");
    let new = new.recv_timeout(wait).expect("answer");
    assert!(
        old.as_ref().is_err_and(|e| e.is_lock_lost()),
        "the stale job fails: {old:?}"
    );
    assert!(new.is_ok(), "the valid job merged with it commits: {new:?}");
    // The handler of the stale job reports its fence failure: the leader stays leader.
    election.on_fence_failed(stale);
    assert!(
        election.is_leader(),
        "a stale job must not demote a valid leader"
    );
    drop(queue);
    writers.join();
    let mut c = db.client();
    let stored: Vec<String> = c
        .query("SELECT metric FROM prom_series ORDER BY 1", &[])
        .expect("series")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        stored.contains(&"valid_job".to_string()) && stored.contains(&"first".to_string()),
        "{stored:?}"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_samples p JOIN prom_series s USING (series_id) WHERE s.metric = 'stale_job'"
        ),
        0
    );
}
