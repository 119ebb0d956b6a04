//! High availability against real PostgreSQL and real HTTP: two promgres instances on one
//! database, replicas' requests spread over both, the leader stopping mid-run; the SQL fence
//! under a concurrent hand-over; operator hand-over; database errors during the election.

mod common;

use common::*;
use promgres::config::Config;
use promgres::ha::HaConfig;
use promgres::proto::WriteRequest;
use promgres::server::Server;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const INTERVAL_MS: i64 = 500;

fn ha_config(db: &TestDb) -> Config {
    let mut c = Config::for_database(db.config());
    c.ha = Some(HaConfig {
        cluster_label: "cluster".into(),
        replica_label: "__replica__".into(),
        failover_timeout_ms: 3_000,
        interval_ms: 500,
        buffer_bytes: 64 << 20,
    });
    c
}

/// One scrape of `n` targets by a replica of `cluster`.
fn scrape(cluster: &str, replica: &str, n: usize, ts: i64) -> WriteRequest {
    write_request(
        (0..n)
            .map(|i| {
                series(
                    &[
                        ("__name__", "target_up"),
                        ("target", &format!("t{i}")),
                        ("cluster", cluster),
                        ("__replica__", replica),
                    ],
                    &[(ts, i as f64)],
                )
            })
            .collect(),
    )
}

/// Stored timestamps per series of a cluster.
fn stored_by_series(c: &mut postgres::Client, cluster: &str) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in c
        .query(
            "SELECT s.labels::text, (extract(epoch FROM p.time) * 1000)::bigint
               FROM prom_samples p JOIN prom_series s USING (series_id)
              WHERE s.labels->>'cluster' = $1 ORDER BY 1, 2",
            &[&cluster],
        )
        .expect("query")
    {
        out.entry(row.get(0)).or_default().push(row.get(1));
    }
    out
}

fn lease(c: &mut postgres::Client, cluster: &str) -> (String, i64) {
    let row = c
        .query_one(
            "SELECT leader, (extract(epoch FROM lease_start) * 1000)::bigint FROM prom_ha_leases WHERE cluster = $1",
            &[&cluster],
        )
        .expect("lease");
    (row.get(0), row.get(1))
}

#[test]
fn two_instances_one_copy_of_each_moment_and_failover_without_gap() {
    let db = TestDb::new("ha_two");
    let first = Server::start(&ha_config(&db)).expect("first instance");
    let second = Server::start(&ha_config(&db)).expect("second instance");
    let addrs: [SocketAddr; 2] = [first.addr(), second.addr()];
    let targets = 50;
    // Replica a scrapes at the interval, b 200 ms later; both send each scrape to an
    // instance picked by a cheap pseudo-random sequence.
    let mut pick = 0x9e37_79b9_u64;
    let mut next_instance = || {
        pick ^= pick << 13;
        pick ^= pick >> 7;
        pick ^= pick << 17;
        addrs[(pick % 2) as usize]
    };
    let mut statuses: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    let start = now_ms();
    let mut a_last = 0;
    let run_until = Instant::now() + Duration::from_secs(16);
    let mut tick = 0i64;
    while Instant::now() < run_until {
        let ts = start + tick * INTERVAL_MS;
        // a, the first writer and leader, stops after 5 s.
        if tick * INTERVAL_MS < 5_000 {
            let r = post_write(next_instance(), &encode(&scrape("c", "a", targets, ts)));
            *statuses.entry(("a", r.status)).or_default() += 1;
            a_last = ts;
        }
        let r = post_write(
            next_instance(),
            &encode(&scrape("c", "b", targets, ts + 200)),
        );
        *statuses.entry(("b", r.status)).or_default() += 1;
        tick += 1;
        let wake = start + tick * INTERVAL_MS;
        std::thread::sleep(Duration::from_millis(
            u64::try_from(wake - now_ms()).unwrap_or(0),
        ));
    }
    eprintln!("statuses: {statuses:?}");
    assert!(
        statuses.keys().all(|(_, s)| *s == 204 || *s == 202),
        "{statuses:?}"
    );
    assert!(
        statuses.contains_key(&("b", 202)),
        "the standby was answered 202"
    );

    let mut c = db.client();
    let (leader, t) = lease(&mut c, "c");
    assert_eq!(leader, "b");
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_series WHERE labels ? '__replica__'"
        ),
        0
    );
    let stored = stored_by_series(&mut c, "c");
    assert_eq!(stored.len(), targets, "one series per target");
    let mut worst_gap = 0;
    for (series, times) in &stored {
        // a's moments are on the interval grid, b's 200 ms after: each stored moment has
        // exactly one owner, a before T and b from T on.
        for ts in times {
            let from_a = (ts - start) % INTERVAL_MS == 0;
            assert_eq!(from_a, *ts < t, "{series}: sample at {ts} vs T={t}");
        }
        worst_gap = worst_gap.max(times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0));
        assert!(
            times.contains(&a_last) || a_last >= t,
            "{series}: a's last sample stored"
        );
    }
    eprintln!(
        "failover: T = a's last sample + {} ms, largest gap {worst_gap} ms",
        t - a_last
    );
    assert!(
        worst_gap <= 2 * INTERVAL_MS,
        "gap {worst_gap} ms is more than two scrape intervals"
    );

    // Both instances report the same leader.
    for addr in addrs {
        let body = get(addr, "/api/v1/ha/clusters").body;
        assert!(body.contains("\"leader\":\"b\""), "{addr}: {body}");
    }
    let metrics = get(first.addr(), "/metrics").body + &get(second.addr(), "/metrics").body;
    assert!(
        metrics.contains("promgres_ha_cluster_leader_info{cluster=\"c\",replica=\"b\"} 1"),
        "{metrics}"
    );
    let history = count(
        &mut c,
        "SELECT count(*) FROM prom_ha_lease_history WHERE cluster = 'c'",
    );
    assert_eq!(history, 2);
    assert!(first.shutdown(Duration::from_secs(10)));
    assert!(second.shutdown(Duration::from_secs(10)));
}

#[test]
fn a_hand_over_waits_for_an_uncommitted_leader_write_and_starts_after_it() {
    let db = TestDb::new("ha_fence");
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();
    c.query("SELECT * FROM promgres.ha_get_or_create('c', 'a')", &[])
        .expect("lease");
    // A writer transaction of leader a: fence row FOR SHARE, progress at 1,000,000 ms.
    let mut writer = db.client();
    let mut tx = writer.transaction().expect("begin");
    let row = tx
        .query_one(
            "SELECT leader FROM promgres.ha_leases WHERE cluster = 'c' FOR SHARE",
            &[],
        )
        .expect("fence");
    assert_eq!(row.get::<_, String>(0), "a");
    tx.execute(
        "INSERT INTO promgres.ha_progress VALUES ('c', pg_backend_pid(), 1, timestamptz 'epoch' + interval '1000 seconds', now())",
        &[],
    )
    .expect("progress");
    let config = db.config();
    let handover = std::thread::spawn(move || {
        let mut other = config.connect(postgres::NoTls).expect("connect");
        let started = Instant::now();
        let row = other
            .query_one(
                "SELECT leader, (extract(epoch FROM lease_start) * 1000)::bigint FROM promgres.ha_change_leader('c', 'a', 'b', NULL, 'test')",
                &[],
            )
            .expect("change");
        (
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            started.elapsed(),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !handover.is_finished(),
        "the hand-over waits for the writer's commit"
    );
    tx.commit().expect("commit");
    let (leader, t, waited) = handover.join().expect("thread");
    assert_eq!(leader, "b");
    assert_eq!(
        t, 1_000_001,
        "T is the committed write's newest sample + 1 ms"
    );
    assert!(waited >= Duration::from_millis(400));
    // The old leader's fence now fails: its next transaction sees b.
    let leader: String = c
        .query_one(
            "SELECT leader FROM promgres.ha_leases WHERE cluster = 'c' FOR SHARE",
            &[],
        )
        .expect("fence")
        .get(0);
    assert_eq!(leader, "b");
    let history = c
        .query("SELECT leader, (extract(epoch FROM lease_start) * 1000)::bigint, (extract(epoch FROM lease_end) * 1000)::bigint FROM prom_ha_lease_history ORDER BY term", &[])
        .expect("history");
    let history: Vec<(String, i64, Option<i64>)> = history
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        history,
        vec![
            ("a".into(), 0, Some(1_000_001)),
            ("b".into(), 1_000_001, None)
        ]
    );
}

#[test]
fn operator_hand_over_and_its_errors() {
    let db = TestDb::new("ha_operator");
    let server = Server::start(&ha_config(&db)).expect("start");
    let addr = server.addr();
    let t = now_ms() - 10_000;
    assert_eq!(
        post_write(addr, &encode(&scrape("prod", "p0", 5, t))).status,
        204
    );
    assert_eq!(
        post_write(addr, &encode(&scrape("prod", "p1", 5, t + 100))).status,
        202
    );
    let post = |path: &str| request(addr, "POST", path, &[], b"").expect("post");
    assert_eq!(
        post("/api/v1/ha/clusters/prod/leader").status,
        400,
        "replica missing"
    );
    assert_eq!(
        post("/api/v1/ha/clusters/nope/leader?replica=p1").status,
        404
    );
    let r = post("/api/v1/ha/clusters/prod/leader?replica=ghost");
    assert_eq!(r.status, 409, "{}", r.body);
    let r = post("/api/v1/ha/clusters/prod/leader?replica=p1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"leader\":\"p1\""), "{}", r.body);
    assert!(
        r.body.contains(&format!("\"handover_time_ms\":{}", t + 1)),
        "{}",
        r.body
    );
    // p1's buffered sample at t + 100 is stored, p0 is now refused.
    assert_eq!(
        post_write(addr, &encode(&scrape("prod", "p0", 5, t + 1000))).status,
        202
    );
    assert_eq!(
        post_write(addr, &encode(&scrape("prod", "p1", 5, t + 1100))).status,
        204
    );
    let mut c = db.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&mut c, "SELECT count(*) FROM prom_samples") < 15 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let times: Vec<i64> = c
        .query("SELECT DISTINCT (extract(epoch FROM time) * 1000)::bigint FROM prom_samples ORDER BY 1", &[])
        .expect("times")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(times, vec![t, t + 100, t + 1100]);
    assert!(server.shutdown(Duration::from_secs(10)));
}

#[test]
fn a_database_error_in_the_election_is_503_never_4xx() {
    let db = TestDb::new("ha_dberror");
    let server = Server::start(&ha_config(&db)).expect("start");
    let addr = server.addr();
    let mut c = db.client();
    c.batch_execute("ALTER TABLE promgres.ha_leases RENAME TO ha_leases_away")
        .expect("rename");
    let r = post_write(addr, &encode(&scrape("new", "n0", 3, now_ms())));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("Retry-After").is_some());
    assert!(r.body.contains("HA lease"), "{}", r.body);
    c.batch_execute("ALTER TABLE promgres.ha_leases_away RENAME TO ha_leases")
        .expect("rename back");
    let r = post_write(addr, &encode(&scrape("new", "n0", 3, now_ms())));
    assert_eq!(r.status, 204, "{}", r.body);
    // Metadata-only requests never touch the election.
    c.batch_execute("ALTER TABLE promgres.ha_leases RENAME TO ha_leases_away")
        .expect("rename");
    let mut meta = write_request(vec![]);
    meta.metadata = vec![metadata("m", 2, "help", "")];
    assert_eq!(post_write(addr, &encode(&meta)).status, 204);
    c.batch_execute("ALTER TABLE promgres.ha_leases_away RENAME TO ha_leases")
        .expect("rename back");
    assert!(server.shutdown(Duration::from_secs(10)));
}

#[test]
fn a_series_with_one_ha_label_is_ordinary_data() {
    let db = TestDb::new("ha_unpaired");
    let server = Server::start(&ha_config(&db)).expect("start");
    let t = now_ms() - 10_000;
    let req = write_request(vec![
        series(
            &[("__name__", "only_cluster"), ("cluster", "c")],
            &[(t, 1.0)],
        ),
        series(
            &[("__name__", "only_replica"), ("__replica__", "r1")],
            &[(t, 2.0), (t + 1, 3.0)],
        ),
        series(&[("__name__", "plain")], &[(t, 4.0)]),
    ]);
    let r = post_write(server.addr(), &encode(&req));
    assert_eq!(r.status, 204, "{}", r.body);
    let mut c = db.client();
    let mut stored: Vec<String> = c
        .query(
            "SELECT s.labels::text FROM prom_samples p JOIN prom_series s USING (series_id)",
            &[],
        )
        .expect("stored")
        .iter()
        .map(|r| r.get(0))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        vec![
            r#"{"__name__": "only_replica", "__replica__": "r1"}"#,
            r#"{"__name__": "only_replica", "__replica__": "r1"}"#,
            r#"{"__name__": "plain"}"#,
            r#"{"cluster": "c", "__name__": "only_cluster"}"#,
        ],
        "stored as they came, the lone replica label included"
    );
    let metrics = get(server.addr(), "/metrics").body;
    assert!(
        metrics.contains("promgres_ha_unpaired_samples_total{missing=\"replica\"} 1")
            && metrics.contains("promgres_ha_unpaired_samples_total{missing=\"cluster\"} 2"),
        "{metrics}"
    );
    assert!(server.shutdown(Duration::from_secs(10)));
}

#[test]
fn a_leader_that_committed_nothing_hands_over_at_its_lease_start_not_now() {
    use promgres::ha::LeaseStore;
    let db = TestDb::new("ha_nothing");
    promgres::server::migrate(&db.config()).expect("migrate");
    let mut c = db.client();
    let mut leases = promgres::store::PgLeaseStore::new(
        &db.config(),
        &promgres::pg_session::SessionBounds::default(),
    );
    leases.get_or_create("c", "a").expect("lease");
    let state = leases.fetch("c").expect("fetch").expect("lease");
    assert_eq!(
        state.superseded_before_ms, None,
        "nothing committed: no standby sample is superseded"
    );
    // a, then b, hand over without either committing a sample: T stays at the first lease's
    // start instead of jumping to now (which would drop everything before now).
    for (from, to) in [("a", "b"), ("b", "a")] {
        let t: i64 = c
            .query_one(
                "SELECT (extract(epoch FROM lease_start) * 1000)::bigint
                   FROM promgres.ha_change_leader('c', $1, $2, NULL, 'test')",
                &[&from, &to],
            )
            .expect("change")
            .get(0);
        assert_eq!(t, 0, "{from} -> {to}");
    }
}
