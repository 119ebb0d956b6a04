//! A promgres frozen (SIGSTOP) in the middle of its insert transactions, as a host that hangs
//! or a VM that is paused: its sessions hold lease rows, sample keys and advisory locks, and
//! its kernel still acknowledges TCP, so neither keepalives nor PostgreSQL's statement timeout
//! end them. The other instance must keep storing and take over within the documented bound
//! (failover timeout + one tick + --db-stall-timeout + the watchdog's interval), and nothing
//! acknowledged may be lost.

mod common;

use common::*;
use std::time::{Duration, Instant};

const STALL: &str = "3s";
const STALL_MS: u64 = 3_000;
/// The watchdog checks every stall/3, at least every second.
const WATCH_MS: u64 = 1_000;
const INTERVAL_MS: i64 = SCRAPE_GRID_MS;
const TARGETS: usize = 400;

/// Stops `p` while one of its writers is inside a transaction: tries until pg_stat_activity
/// shows one (bounded), resuming it in between. The first tries wait for the worst case, a
/// statement waiting for its client (PostgreSQL never times that out); later ones take any
/// open transaction. Returns what the frozen writer was doing.
fn freeze_mid_transaction(p: &Process, c: &mut postgres::Client) -> String {
    let pattern = format!("promgres-writer-% %:{}", p.pid());
    for attempt in 0..400u64 {
        p.signal("STOP");
        let states = if attempt < 100 {
            vec!["active"]
        } else {
            vec!["active", "idle in transaction"]
        };
        let busy: Option<String> = c
            .query_opt(
                "SELECT state || ' ' || coalesce(wait_event, '') || ': ' || left(query, 40)
                   FROM pg_stat_activity
                  WHERE application_name LIKE $1 AND xact_start IS NOT NULL
                    AND state = ANY($2)
                  LIMIT 1",
                &[&pattern, &states],
            )
            .expect("pg_stat_activity")
            .map(|r| r.get(0));
        if let Some(what) = busy {
            eprintln!("froze promgres {} on attempt {attempt}: {what}", p.pid());
            return what;
        }
        p.signal("CONT");
        std::thread::sleep(Duration::from_millis(7 + attempt * 13 % 40));
    }
    panic!("promgres {} was never caught inside a transaction", p.pid());
}

fn leader(c: &mut postgres::Client) -> Option<String> {
    c.query_opt("SELECT leader FROM prom_ha_leases WHERE cluster = 'c'", &[])
        .expect("lease")
        .map(|r| r.get(0))
}

#[test]
fn ha_fails_over_past_an_instance_frozen_mid_transaction() {
    let db = TestDb::new("frozen_ha");
    let args = [
        "--high-availability",
        "--ha-failover-timeout",
        "3s",
        "--ha-election-interval",
        "500ms",
        "--db-stall-timeout",
        STALL,
        "--log-level",
        "warn",
    ];
    let p = [
        Process::start(&db_uri(&db), &args),
        Process::start(&db_uri(&db), &args),
    ];
    let addrs = vec![p[0].addr, p[1].addr];
    let mut a = Scraper::start(addrs.clone(), "fz", Some(("c", "a")), 0, TARGETS);
    let mut c = db.client();
    assert!(
        wait_for(Duration::from_secs(10), || leader(&mut c)
            .filter(|l| l == "a"))
        .is_some(),
        "a leads"
    );
    let mut b = Scraper::start(addrs, "fz", Some(("c", "b")), 100, TARGETS);
    std::thread::sleep(Duration::from_secs(3));

    // The leader's Prometheus goes away as promgres 0 freezes mid-transaction.
    let what = freeze_mid_transaction(&p[0], &mut c);
    let frozen = Instant::now();
    let a_answers = a.stop();
    let took_over = wait_for(Duration::from_secs(20), || {
        leader(&mut c).filter(|l| l == "b")
    });
    let after = frozen.elapsed();
    let bound = Duration::from_millis(3_000 + 500 + STALL_MS + WATCH_MS + 2_000);
    eprintln!("frozen in {what:?}; b took over {after:?} later (bound {bound:?})");
    assert!(
        took_over.is_some(),
        "b takes over while promgres 0 is frozen"
    );
    assert!(after <= bound, "took {after:?}, bound {bound:?}");
    // Storing goes on through the live instance.
    std::thread::sleep(Duration::from_secs(2));
    let b_answers = b.stop();
    p[0].signal("CONT");
    let all = stored_by_time(&mut c, "fz");
    assert_acknowledged_stored(&a_answers, &all, TARGETS);
    assert_acknowledged_stored(&b_answers, &all, TARGETS);
    let t: i64 = c
        .query_one(
            "SELECT (extract(epoch FROM lease_start) * 1000)::bigint FROM prom_ha_leases",
            &[],
        )
        .expect("T")
        .get(0);
    // One owner per moment: a's grid before T, b's (100 ms later) from T on.
    for ts in all.keys() {
        let from_a = ts.rem_euclid(INTERVAL_MS) == 0;
        assert_eq!(from_a, *ts < t, "sample at {ts}, T = {t}");
    }
    assert!(
        all.keys().any(|ts| *ts > t + 1_000),
        "b's data is stored after the hand-over"
    );
    let ended: f64 = p
        .iter()
        .filter_map(|x| x.metric("promgres_db_stalled_sessions_ended_total"))
        .sum();
    eprintln!("stalled sessions ended by the watchdogs: {ended}");
    // The thawed instance recovers: new connections, healthy, writes land.
    assert!(wait_for(Duration::from_secs(10), || {
        request(p[0].addr, "GET", "/healthz", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    })
    .is_some());
}

#[test]
fn a_frozen_advisory_lock_holder_loses_the_lock_within_the_bound() {
    let db = TestDb::new("frozen_lock");
    let args = [
        "--leader-election-pg-advisory-lock-id",
        "77",
        "--leader-election-pg-advisory-lock-prometheus-timeout",
        "2s",
        "--leader-election-interval",
        "1s",
        "--db-stall-timeout",
        STALL,
        "--log-level",
        "warn",
    ];
    let p = [
        Process::start(&db_uri(&db), &args),
        Process::start(&db_uri(&db), &args),
    ];
    // Each promgres is paired with its own Prometheus.
    let mut senders = [
        Scraper::start(vec![p[0].addr], "lk", None, 0, TARGETS),
        Scraper::start(vec![p[1].addr], "lk", None, 100, TARGETS),
    ];
    std::thread::sleep(Duration::from_secs(3));
    let mut c = db.client();
    let holder = |c: &mut postgres::Client| -> Option<String> {
        c.query_opt(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE l.locktype = 'advisory' AND l.objid = 77 AND l.objsubid = 1 AND l.granted",
            &[],
        )
        .expect("holder")
        .map(|r| r.get(0))
    };
    let first = holder(&mut c).expect("someone holds the lock");
    let leader = usize::from(first.ends_with(&format!(":{}", p[1].pid())));
    let other = 1 - leader;
    let what = freeze_mid_transaction(&p[leader], &mut c);
    let frozen = Instant::now();
    let took_over = wait_for(Duration::from_secs(20), || {
        holder(&mut c).filter(|h| h.ends_with(&format!(":{}", p[other].pid())))
    });
    let after = frozen.elapsed();
    // PostgreSQL ends the frozen lock session (idle_session_timeout = stall); the watchdog
    // ends its writer stalled mid-statement; the follower tries every second.
    let bound = Duration::from_millis(STALL_MS + WATCH_MS + 1_000 + 2_000);
    eprintln!("frozen in {what:?}; the follower took the lock {after:?} later (bound {bound:?})");
    assert!(took_over.is_some(), "the follower takes the lock");
    assert!(after <= bound, "took {after:?}, bound {bound:?}");
    std::thread::sleep(Duration::from_secs(2));
    p[leader].signal("CONT");
    std::thread::sleep(Duration::from_secs(2));
    let answers: Vec<Vec<(i64, u16)>> = senders.iter_mut().map(Scraper::stop).collect();
    let all = stored_by_time(&mut c, "lk");
    for a in &answers {
        assert_acknowledged_stored(a, &all, TARGETS);
    }
    // The senders' samples never interleave: one switch, from the frozen holder's to the
    // follower's, and the thawed instance stored nothing after it.
    let mut eras: Vec<i64> = Vec::new();
    for ts in all.keys() {
        let who = ts.rem_euclid(INTERVAL_MS);
        if eras.last() != Some(&who) {
            eras.push(who);
        }
    }
    assert_eq!(eras.len(), 2, "eras {eras:?}");
}

#[test]
fn a_copy_stalled_mid_stream_is_ended_by_the_watchdog() {
    let run = Running::start_with("stalled_copy", |c| {
        c.sessions.stall = Duration::from_secs(2);
    });
    // A session named like a promgres writer holds a sample key and stalls inside a COPY, as
    // a promgres frozen mid-stream does: PostgreSQL's statement_timeout does not fire while
    // the COPY waits for its client.
    let mut config = run.db.config();
    config.application_name("promgres-writer-9 frozen-host:1");
    config.options("-c statement_timeout=1000");
    let mut stalled = config.connect(postgres::NoTls).expect("connect");
    let ts = now_ms() - 60_000;
    assert_eq!(
        post_write(run.addr, &encode(&node_like(1, ts - 1, 1.0, "stall"))).status,
        204
    );
    let mut tx = stalled.transaction().expect("begin");
    tx.execute(
        "INSERT INTO promgres.samples
         SELECT series_id, timestamptz 'epoch' + $1::int8 * interval '1 ms', 42 FROM prom_series",
        &[&ts],
    )
    .expect("hold the key");
    let pid: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let copy = tx
        .copy_in("COPY promgres.metrics (name, view_name) FROM STDIN")
        .expect("copy");
    let stalled_at = Instant::now();
    // promgres writes the same key: it waits for the stalled session until the watchdog
    // ends it, then stores its own value.
    let r = post_write(run.addr, &encode(&node_like(1, ts, 7.0, "stall")));
    let waited = stalled_at.elapsed();
    assert_eq!(r.status, 204, "{}", r.body);
    eprintln!("the write waited {waited:?} for the stalled COPY (stall timeout 2 s)");
    assert!(
        waited >= Duration::from_millis(1_500) && waited <= Duration::from_secs(2 + 1 + 2),
        "waited {waited:?}"
    );
    let mut c = run.db.client();
    let alive = count(
        &mut c,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
    );
    assert_eq!(alive, 0, "the stalled session is gone");
    let value: f64 = c
        .query_one(
            "SELECT value FROM prom_samples WHERE time = timestamptz 'epoch' + $1::int8 * interval '1 ms'",
            &[&ts],
        )
        .expect("stored")
        .get(0);
    assert_eq!(value, 7.0, "the stalled session's row was never committed");
    assert_eq!(
        run.server().metrics.db_sessions_ended.get(),
        1,
        "counted in promgres_db_stalled_sessions_ended_total"
    );
    drop(copy);
}

#[test]
fn a_maintenance_session_frozen_holding_a_compaction_lock_is_ended_by_the_watchdog() {
    let run = Running::start_with("stalled_lock", |c| {
        c.sessions.stall = Duration::from_secs(2);
    });
    // A session named like a promgres maintenance connection takes a compaction range's
    // session lock and then sits idle, as a promgres stopped between its lock and its
    // transaction does: nothing in PostgreSQL ends an idle session that holds no transaction.
    let mut config = run.db.config();
    config.application_name("promgres-maintenance frozen-host:1");
    let mut frozen = config.connect(postgres::NoTls).expect("connect");
    frozen
        .execute("SELECT pg_advisory_lock(1668246896 + 20000, 7)", &[])
        .expect("lock");
    let pid: i32 = frozen
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    // An idle maintenance session without a lock is left alone.
    let mut idle_config = run.db.config();
    idle_config.application_name("promgres-maintenance idle-host:2");
    let mut idle = idle_config.connect(postgres::NoTls).expect("connect");
    let frozen_at = Instant::now();
    let mut c = run.db.client();
    let ended = wait_for(Duration::from_secs(15), || {
        let alive = count(
            &mut c,
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
        );
        (alive == 0).then_some(())
    });
    assert!(ended.is_some(), "the frozen lock holder is still there");
    let waited = frozen_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1_500),
        "ended after {waited:?}"
    );
    let free: bool = c
        .query_one("SELECT pg_try_advisory_lock(1668246896 + 20000, 7)", &[])
        .expect("try lock")
        .get(0);
    assert!(free, "the range's lock is free again");
    idle.execute("SELECT 1", &[])
        .expect("an idle maintenance session holding no lock is not ended");
}
