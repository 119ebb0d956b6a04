//! `--async-acks`: answered when queued, so the writers must keep the promises a 2xx after
//! commit keeps by itself. The first acknowledged value of a timestamp wins, whichever writer
//! commits first; and HA samples whose replica lost the lease before their commit are routed
//! again (into the replica's past lease, say), not dropped.

mod common;

use common::*;
use promgres::config::Config;
use promgres::ha::HaConfig;
use promgres::server::Server;
use std::time::Duration;

fn values_of(c: &mut postgres::Client, ts: i64) -> (i64, i64) {
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE value = 1.0), count(*) FILTER (WHERE value = 2.0)
               FROM prom_samples WHERE time = timestamptz 'epoch' + $1::int8 * interval '1 ms'",
            &[&ts],
        )
        .expect("values");
    (row.get(0), row.get(1))
}

#[test]
fn the_first_acknowledged_value_wins_with_asynchronous_acks() {
    for writers in [1, 4] {
        let run = Running::start_with("async_first", |c: &mut Config| {
            c.async_acks = true;
            c.db_writers = writers;
            c.queue_capacity = 256;
        });
        let mut c = run.db.client();
        let mut second_won = 0;
        let t0 = now_ms() - 600_000;
        // The series exist; a request with only them is fast to store.
        assert_eq!(
            run.write(&node_like(5000, t0 - 1, 0.0, "async")).status,
            204
        );
        for round in 0..4 {
            let ts = t0 + round * 1000;
            // In odd rounds the first request also carries a series another session is
            // creating: the writer that takes it waits, and a later job must wait too.
            let mut holder = run.db.client();
            let mut hold = holder.transaction().expect("begin");
            let blocked = round % 2 == 1;
            let blocker = format!("blocker_{round}");
            if blocked {
                hold.execute(
                    "INSERT INTO promgres.series (metric, labels, labels_hash)
                     SELECT $1, l, sha256(convert_to(l::text, 'UTF8'))
                       FROM (SELECT jsonb_build_object('__name__', $1::text) AS l) x",
                    &[&blocker],
                )
                .expect("hold a series");
            }
            // 5,000 series, then the same timestamps again with another value, both acked.
            for (value, tag) in [(1.0, "first"), (2.0, "second")] {
                let mut req = node_like(5000, ts, value, "async");
                for s in &mut req.timeseries {
                    s.samples[0].value = value;
                }
                if blocked && value == 1.0 {
                    req.timeseries
                        .push(series(&[("__name__", &blocker)], &[(ts, value)]));
                }
                let r = run.write(&req);
                assert_eq!(r.status, 204, "{tag}: {}", r.body);
            }
            if blocked {
                std::thread::sleep(Duration::from_millis(500));
            }
            hold.rollback().expect("release");
            let stored = wait_for(Duration::from_secs(30), || {
                let (ones, twos) = values_of(&mut c, ts);
                (ones + twos == 5000 + i64::from(blocked)).then_some(twos)
            });
            second_won += stored.expect("all stored");
        }
        eprintln!(
            "{writers} writer(s): the second value stored for {second_won} of 20,000 series-timestamps"
        );
        assert_eq!(
            second_won, 0,
            "{writers} writer(s): a value sent after the first one's 2xx replaced it"
        );
    }
}

#[test]
fn fenced_out_samples_are_routed_again_with_asynchronous_acks() {
    let db = TestDb::new("async_reroute");
    let mut config = Config::for_database(db.config());
    config.async_acks = true;
    config.ha = Some(HaConfig {
        cluster_label: "cluster".into(),
        replica_label: "__replica__".into(),
        failover_timeout_ms: 60_000,
        interval_ms: 500,
        buffer_bytes: 16 << 20,
    });
    let server = Server::start(&config).expect("start");
    let addr = server.addr();
    let sample = |metric: &str, replica: &str, ts: i64| {
        let req = write_request(vec![series(
            &[
                ("__name__", metric),
                ("cluster", "c"),
                ("__replica__", replica),
            ],
            &[(ts, 1.0)],
        )]);
        post_write(addr, &encode(&req))
    };
    let mut c = db.client();
    let t0 = now_ms() - 60_000;
    // a leads and has committed a sample at t0 + 1000.
    assert_eq!(sample("x", "a", t0 + 1000).status, 204);
    let committed = wait_for(Duration::from_secs(10), || {
        (count(&mut c, "SELECT count(*) FROM prom_samples") == 1).then_some(())
    });
    assert!(committed.is_some());
    // a's next job, an older sample of a new series, is held before its fence: another
    // session is creating the same series and has not committed.
    let mut holder = db.client();
    let mut hold = holder.transaction().expect("begin");
    hold.execute(
        "INSERT INTO promgres.series (metric, labels, labels_hash)
         SELECT 'y', l, sha256(convert_to(l::text, 'UTF8'))
           FROM (SELECT '{\"__name__\": \"y\", \"cluster\": \"c\"}'::jsonb AS l) x",
        &[],
    )
    .expect("hold the series");
    assert_eq!(
        sample("y", "a", t0 + 500).status,
        204,
        "acknowledged when queued"
    );
    let blocked = wait_for(Duration::from_secs(10), || {
        (count(
            &mut c,
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name LIKE 'promgres-writer-%' AND wait_event_type = 'Lock'",
        ) == 1)
            .then_some(())
    });
    assert!(blocked.is_some(), "the writer waits for the series");
    // Meanwhile the lease moves to b at T = a's newest committed sample + 1 ms.
    assert_eq!(sample("x", "b", t0 + 1100).status, 202);
    let r = request(
        addr,
        "POST",
        "/api/v1/ha/clusters/c/leader?replica=b",
        &[],
        b"",
    )
    .expect("hand over");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains(&format!("\"handover_time_ms\":{}", t0 + 1001)),
        "{}",
        r.body
    );
    hold.rollback().expect("let the writer go");
    // The writer's fence fails (b leads); the sample lies in a's past lease, so it is stored.
    let stored = wait_for(Duration::from_secs(10), || {
        (count(
            &mut c,
            &format!(
                "SELECT count(*) FROM prom_samples p JOIN prom_series s USING (series_id)
                  WHERE s.metric = 'y' AND p.time = timestamptz 'epoch' + {} * interval '1 ms'",
                t0 + 500
            ),
        ) == 1)
            .then_some(())
    });
    let metrics = get(addr, "/metrics").body;
    assert!(
        stored.is_some(),
        "the acknowledged sample at t0 + 500 was dropped: {}",
        metrics
            .lines()
            .filter(|l| l.contains("rejected") || l.contains("ha_samples"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!metrics.contains("reason=\"ha_fenced_out\""), "{metrics}");
    assert!(server.shutdown(Duration::from_secs(10)));
}
