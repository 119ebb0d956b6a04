//! Remote write over real HTTP into a real PostgreSQL: what lands, what is refused, and
//! what happens under retries, concurrency and a full queue.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

#[test]
fn writes_land_exactly_in_sql() {
    let run = Running::start("exact");
    let t = now_ms() - 60_000;
    let odd_values = [
        f64::from_bits(STALE_NAN),
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        // (-0.0 cannot be sent: proto3 encoders, Prometheus' included, skip a double equal
        // to zero, so it arrives as +0.0.)
        0.0,
        f64::MIN_POSITIVE / 4.0, // subnormal
        1.0e300,
        -42.5,
    ];
    let samples: Vec<(i64, f64)> = odd_values
        .iter()
        .enumerate()
        .map(|(i, v)| (t + i as i64 * 1000, *v))
        .collect();
    let req = write_request(vec![
        series(
            &[("__name__", "up"), ("job", "node"), ("instance", "a:9100")],
            &samples,
        ),
        // Labels out of order, quotes, backslashes, newlines and non-ASCII in values.
        series(
            &[
                ("zeta", "z"),
                ("__name__", "weird_values"),
                ("q", "say \"hi\"\\n\nnew line é ✓"),
            ],
            &[(t, 1.5)],
        ),
    ]);
    let reply = run.write(&req);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(reply.body.is_empty());

    let mut c = run.db.client();
    let stored = stored_samples(&mut c);
    let mut want = Vec::new();
    for (ts, v) in &samples {
        want.push((
            r#"{"job": "node", "__name__": "up", "instance": "a:9100"}"#.to_string(),
            *ts,
            v.to_bits(),
        ));
    }
    want.push((
        r#"{"q": "say \"hi\"\\n\nnew line é ✓", "zeta": "z", "__name__": "weird_values"}"#
            .to_string(),
        t,
        1.5f64.to_bits(),
    ));
    want.sort();
    assert_eq!(stored, want);

    // One view per metric, safely quoted, returning that metric's rows only.
    let n: i64 = count(&mut c, r#"SELECT count(*) FROM prom_metric."up""#);
    assert_eq!(n, odd_values.len() as i64);
    // Metric names are validated before they reach SQL, and the view function quotes them
    // anyway: a name that would break naive SQL makes an oddly named view, nothing more.
    let hostile = "x\"; DROP TABLE promgres.samples; --";
    c.execute("SELECT promgres.ensure_metric_view($1)", &[&hostile])
        .expect("view");
    let n: i64 = count(
        &mut c,
        r#"SELECT count(*) FROM prom_metric."x""; DROP TABLE promgres.samples; --""#,
    );
    assert_eq!(n, 0);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM prom_samples"),
        want.len() as i64
    );
    let metric: String = c
        .query_one(r#"SELECT labels->>'q' FROM prom_metric.weird_values"#, &[])
        .expect("view")
        .get(0);
    assert_eq!(metric, "say \"hi\"\\n\nnew line é ✓");
}

#[test]
fn metadata_only_requests_are_stored() {
    let run = Running::start("meta");
    let mut req = write_request(vec![]);
    req.metadata = vec![
        metadata("http_requests_total", 1, "Requests served.", ""),
        metadata("node_memory_bytes", 2, "Memory.", "bytes"),
    ];
    assert_eq!(run.write(&req).status, 204);
    // Prometheus re-sends metadata every minute; a change replaces the old text.
    req.metadata[0].help = "Requests served, by code.".into();
    assert_eq!(run.write(&req).status, 204);
    let mut c = run.db.client();
    let rows = c
        .query(
            "SELECT metric, type, help, unit FROM prom_metadata ORDER BY metric",
            &[],
        )
        .expect("metadata");
    let got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "http_requests_total".into(),
                "counter".into(),
                "Requests served, by code.".into(),
                "".into()
            ),
            (
                "node_memory_bytes".into(),
                "gauge".into(),
                "Memory.".into(),
                "bytes".into()
            ),
        ]
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), 0);
}

#[test]
fn real_prometheus_requests_are_accepted() {
    // The captures are from 2023: allow samples that old.
    let run = Running::start_with("fixtures", |c| {
        c.max_sample_age = Duration::from_secs(100 * 365 * 86_400)
    });
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/prometheus-2.42"
    );
    // The captures are older than the future-timestamp check's window, so they are stored as
    // backfill into partitions created on demand.
    let mut total = 0;
    for name in [
        "write-01",
        "write-02",
        "write-03",
        "write-04",
        "write-05",
        "metadata-01",
    ] {
        let body = std::fs::read(format!("{dir}/{name}.bin")).expect("fixture");
        let headers: Vec<(String, String)> = {
            let text =
                std::fs::read_to_string(format!("{dir}/{name}.headers.json")).expect("headers");
            text.lines()
                .filter_map(|l| {
                    let l = l.trim().trim_end_matches(',');
                    let (k, v) = l.split_once("\": \"")?;
                    Some((
                        k.trim_start_matches('"').to_string(),
                        v.trim_end_matches('"').to_string(),
                    ))
                })
                .filter(|(k, _)| k != "Host" && k != "Content-Length")
                .collect()
        };
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let reply = request(run.addr, "POST", "/write", &refs, &body).expect("post");
        assert_eq!(reply.status, 204, "{name}: {}", reply.body);
        if name.starts_with("write") {
            total += 500;
        }
    }
    let mut c = run.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), total);
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_metadata"), 451);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_series WHERE labels->>'cluster' = 'demo'"
        ),
        count(&mut c, "SELECT count(*) FROM prom_series")
    );
}

#[test]
fn a_resent_request_is_stored_once() {
    let run = Running::start("resend");
    let t = now_ms() - 10_000;
    let first = node_like(300, t, 1.0, "user");
    assert_eq!(run.write(&first).status, 204);
    assert_eq!(
        run.write(&first).status,
        204,
        "retry of a committed batch succeeds"
    );
    // A retry merged with new samples: the old ones are skipped, the new ones stored, and
    // the first stored value wins for a repeated (series, time).
    let mut mixed = node_like(300, t, 999.0, "user");
    for s in &mut mixed.timeseries {
        let v = s.samples[0].value;
        s.samples.push(promgres::proto::Sample {
            timestamp: t + 15_000,
            value: v,
        });
    }
    assert_eq!(run.write(&mixed).status, 204);
    let mut c = run.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), 600);
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_series"), 300);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM prom_samples WHERE value >= 999"
        ),
        300,
        "only the new timestamps carry the new values"
    );
    let text = get(run.addr, "/metrics").body;
    assert!(
        text.contains("promgres_duplicate_fallbacks_total 2"),
        "{text}"
    );
}

#[test]
fn bad_input_gets_its_status_and_stores_nothing() {
    let run = Running::start("bad");
    let t = now_ms();
    let valid = encode(&write_request(vec![series(
        &[("__name__", "up")],
        &[(t, 1.0)],
    )]));
    let with = |labels: &[(&str, &str)], ts: i64| {
        encode(&write_request(vec![
            series(&[("__name__", "fine")], &[(t, 1.0)]),
            series(labels, &[(ts, 1.0)]),
        ]))
    };
    let protobuf_garbage = snap::raw::Encoder::new()
        .compress_vec(&[0x0a, 0xff, 0xff, 0xff])
        .expect("c");
    // (case, body, headers, expected status, expected text in the body)
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not snappy",
            b"plain text, not snappy".to_vec(),
            WRITE_HEADERS.to_vec(),
            400,
            "not Snappy",
        ),
        (
            "bad protobuf",
            protobuf_garbage,
            WRITE_HEADERS.to_vec(),
            400,
            "not a valid prometheus.WriteRequest",
        ),
        (
            "no __name__",
            with(&[("job", "x")], t),
            WRITE_HEADERS.to_vec(),
            400,
            "invalid series {job=\"x\"}: no __name__",
        ),
        (
            "duplicate label",
            with(&[("__name__", "m"), ("a", "1"), ("a", "2")], t),
            WRITE_HEADERS.to_vec(),
            400,
            "duplicate label name \"a\"",
        ),
        (
            "invalid label name",
            with(&[("__name__", "m"), ("bad-name", "1")], t),
            WRITE_HEADERS.to_vec(),
            400,
            "invalid label name \"bad-name\"",
        ),
        (
            "future timestamp",
            with(&[("__name__", "m"), ("job", "j")], t + 11 * 60_000),
            WRITE_HEADERS.to_vec(),
            400,
            "m{job=\"j\"}: sample timestamp",
        ),
        (
            "json body",
            valid.clone(),
            vec![
                ("Content-Type", "application/json"),
                ("Content-Encoding", "snappy"),
            ],
            415,
            "Content-Type",
        ),
        (
            "gzip",
            valid.clone(),
            vec![
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "gzip"),
            ],
            415,
            "Content-Encoding",
        ),
        (
            "a 1.0 body announced as 2.0",
            valid.clone(),
            vec![
                (
                    "Content-Type",
                    "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                ),
                ("Content-Encoding", "snappy"),
            ],
            400,
            "1.0 body sent as 2.0",
        ),
        (
            "an unknown message",
            valid.clone(),
            vec![
                (
                    "Content-Type",
                    "application/x-protobuf;proto=io.prometheus.write.v3.Request",
                ),
                ("Content-Encoding", "snappy"),
            ],
            415,
            "io.prometheus.write.v2.Request",
        ),
    ];
    for (name, body, headers, status, message) in cases {
        let reply = request(run.addr, "POST", "/write", &headers, &body).expect("post");
        assert_eq!(reply.status, status, "{name}: {}", reply.body);
        assert!(
            reply.body.contains(message),
            "{name}: body {:?} should contain {message:?}",
            reply.body
        );
    }
    let mut c = run.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_series"), 0);
    // Lenient about missing headers: a bare body is taken as snappy protobuf.
    let reply = request(run.addr, "POST", "/write", &[], &valid).expect("post");
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(get(run.addr, "/nope").status, 404);
    assert_eq!(get(run.addr, "/write").status, 405);
}

#[test]
fn oversized_requests_get_413_before_decoding() {
    let run = Running::start_with("size", |c| c.max_request_bytes = 4096);
    let big = node_like(200, now_ms(), 1.0, "idle"); // well over 4 KiB decoded
    let reply = run.write(&big);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(
        reply.body.contains("exceeds the limit of 4096 bytes"),
        "{}",
        reply.body
    );
    // A forged Snappy header declaring 1 GiB in a tiny body.
    let forged = [0x80, 0x80, 0x80, 0x80, 0x04, 0x00];
    let reply = post_write(run.addr, &forged);
    assert_eq!(reply.status, 413, "{}", reply.body);
    let small = node_like(2, now_ms(), 1.0, "idle");
    assert_eq!(run.write(&small).status, 204);
}

#[test]
fn concurrent_clients_every_acknowledged_sample_present_once() {
    let run = Running::start_with("concurrent", |c| c.db_writers = 3);
    let base = now_ms() - 3_600_000;
    let clients = 8;
    let requests_per_client = 25;
    let series_per_request = 100;
    let acked: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                let addr = run.addr;
                s.spawn(move || {
                    let mut acked = Vec::new();
                    for r in 0..requests_per_client {
                        // Every client writes the same series (shared creation races) at its
                        // own timestamps.
                        let ts = base + (r * clients + client) as i64 * 1000;
                        let reply = post_write(
                            addr,
                            &encode(&node_like(series_per_request, ts, r as f64, "system")),
                        );
                        assert_eq!(reply.status, 204, "{}", reply.body);
                        acked.push(ts);
                    }
                    acked
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let mut c = run.db.client();
    let total = (clients * requests_per_client * series_per_request) as i64;
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), total);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT (series_id, time)) FROM prom_samples"
        ),
        total
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM prom_series"),
        series_per_request as i64
    );
    let times: BTreeSet<i64> = c
        .query(
            "SELECT DISTINCT (extract(epoch FROM time) * 1000)::bigint FROM prom_samples",
            &[],
        )
        .expect("times")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: BTreeSet<i64> = acked.into_iter().flatten().collect();
    assert_eq!(times, want);
}

#[test]
fn full_queue_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    let run = Running::start_with("queue", |c| {
        c.db_writers = 1;
        c.queue_capacity = 1;
    });
    let t = now_ms() - 60_000;
    assert_eq!(run.write(&node_like(5, t, 1.0, "warm")).status, 204);
    // Hold the samples table so the single writer blocks inside its COPY.
    let mut locker = run.db.client();
    let mut tx = locker.transaction().expect("begin");
    tx.batch_execute("LOCK TABLE promgres.samples IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let replies: Vec<(i64, Reply)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let addr = run.addr;
                let ts = t + 1000 * (i + 1);
                let h = s.spawn(move || {
                    (
                        ts,
                        post_write(addr, &encode(&node_like(5, ts, 1.0, "warm"))),
                    )
                });
                // Stagger so the writer picks up the first and the queue fills behind it.
                std::thread::sleep(Duration::from_millis(150));
                h
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        tx.rollback().expect("unlock");
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let busy: Vec<&Reply> = replies
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.status == 503)
        .collect();
    assert!(
        !busy.is_empty(),
        "some requests must find the queue full: {replies:?}"
    );
    for r in &busy {
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert!(r.body.contains("queue is full"), "{}", r.body);
    }
    let mut c = run.db.client();
    for (ts, reply) in &replies {
        let stored = count(
            &mut c,
            &format!("SELECT count(*) FROM prom_samples WHERE time = to_timestamp({ts} / 1000.0)"),
        );
        match reply.status {
            204 => assert_eq!(stored, 5, "acknowledged samples at {ts} are stored"),
            503 => assert_eq!(stored, 0, "refused samples at {ts} are not stored"),
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    assert!(get(run.addr, "/metrics")
        .body
        .contains("promgres_samples_rejected_total{reason=\"queue_full\"}"));
}

#[test]
fn two_instances_on_one_database_agree_on_series() {
    let run = Running::start("two");
    let mut config = promgres::config::Config::for_database(run.db.config());
    config.db_writers = 2;
    let other = promgres::server::Server::start(&config).expect("second instance");
    let t = now_ms() - 120_000;
    std::thread::scope(|s| {
        for (k, addr) in [run.addr, other.addr()].into_iter().enumerate() {
            s.spawn(move || {
                for r in 0..10 {
                    let reply = post_write(
                        addr,
                        &encode(&node_like(
                            500,
                            t + (r * 2 + k as i64) * 1000,
                            1.0,
                            "iowait",
                        )),
                    );
                    assert_eq!(reply.status, 204, "{}", reply.body);
                }
            });
        }
    });
    let mut c = run.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_series"), 500);
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), 500 * 20);
    assert!(other.shutdown(Duration::from_secs(10)));
}

#[test]
fn migrations_are_safe_when_instances_start_together() {
    let db = TestDb::new("migrate");
    let config = db.config();
    let applied: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| promgres::server::migrate(&config).expect("migrate")))
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(
        applied.iter().sum::<usize>(),
        promgres::store::SCHEMA_VERSION as usize,
        "each migration applied once: {applied:?}"
    );
    let mut c = db.client();
    assert_eq!(
        count(
            &mut c,
            "SELECT max(version)::bigint FROM promgres.schema_migrations"
        ),
        promgres::store::SCHEMA_VERSION as i64
    );
}

#[test]
fn long_metric_names_get_distinct_views() {
    let run = Running::start("longname");
    let prefix = "a_metric_name_that_is_much_longer_than_postgres_sixty_three_byte_identifiers";
    let t = now_ms();
    let req = write_request(vec![
        series(&[("__name__", &format!("{prefix}_one"))], &[(t, 1.0)]),
        series(&[("__name__", &format!("{prefix}_two"))], &[(t, 2.0)]),
    ]);
    assert_eq!(run.write(&req).status, 204);
    let mut c = run.db.client();
    let views = c
        .query(
            "SELECT name, view_name FROM promgres.metrics ORDER BY name",
            &[],
        )
        .expect("metrics");
    assert_eq!(views.len(), 2);
    for row in views {
        let (name, view): (String, String) = (row.get(0), row.get(1));
        assert_ne!(name, view);
        let v: f64 = c
            .query_one(&format!("SELECT value FROM prom_metric.\"{view}\""), &[])
            .expect("view query")
            .get(0);
        assert_eq!(v, if name.ends_with("one") { 1.0 } else { 2.0 });
    }
}

#[test]
fn health_and_metrics_endpoints() {
    let run = Running::start("health");
    let reply = get(run.addr, "/healthz");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(run.write(&node_like(10, now_ms(), 1.0, "nice")).status, 204);
    assert_eq!(
        run.write(&node_like(10, now_ms() + 1, 1.0, "nice")).status,
        204
    );
    let text = get(run.addr, "/metrics").body;
    for want in [
        "promgres_http_requests_total{path=\"/write\",code=\"204\"} 2",
        "promgres_samples_received_total 20",
        "promgres_samples_stored_total 20",
        "promgres_series_cache_size 10",
        "promgres_series_cache_hits_total 10",
        "promgres_series_cache_misses_total 10",
        "promgres_write_request_duration_seconds_count 2",
        "promgres_db_commit_duration_seconds_count 2",
        "promgres_queue_depth 0",
        "promgres_db_connected{connection=\"control\"} 1",
    ] {
        assert!(text.contains(want), "/metrics lacks {want:?}:\n{text}");
    }
    // A schema older than the binary is unhealthy.
    run.db
        .client()
        .batch_execute("DELETE FROM promgres.schema_migrations")
        .expect("delete");
    let reply = get(run.addr, "/healthz");
    assert_eq!(reply.status, 503);
    assert!(reply.header("Retry-After").is_some());
}

#[test]
fn shutdown_drains_queued_batches() {
    let mut run = Running::start_with("drain", |c| {
        c.async_acks = true;
        c.db_writers = 1;
        c.queue_capacity = 1000;
    });
    let t = now_ms() - 60_000;
    for r in 0..50 {
        let reply = run.write(&node_like(100, t + r * 1000, 1.0, "steal"));
        assert_eq!(reply.status, 204);
    }
    let server = run.server.take().expect("server");
    assert!(server.shutdown(Duration::from_secs(30)), "drained in time");
    let mut c = run.db.client();
    assert_eq!(count(&mut c, "SELECT count(*) FROM prom_samples"), 5000);
}

#[test]
fn a_client_that_stops_sending_is_cut_off_and_others_are_served() {
    let run = Running::start_with("slow", |c| {
        c.http_read_timeout = Duration::from_secs(1);
        c.http_threads = 2;
    });
    use std::io::{Read, Write};
    // Two clients announce a body and send three bytes of it: without timeouts they would
    // hold both handler threads forever.
    let stalled: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(run.addr).expect("connect");
            s.write_all(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
                .expect("send");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let reply = get(run.addr, "/healthz");
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served after {:?}",
        started.elapsed()
    );
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "stalled client gets 400 or a closed connection: {text}"
        );
    }
}

#[test]
fn simultaneous_new_connections_are_all_served() {
    // Regression test for the tiny_http task-pool race patched in vendor/tiny_http: some of a
    // burst of new keep-alive connections (Prometheus opening its shards) got no answer until
    // another connection closed.
    use std::io::{Read, Write};
    let run = Running::start("burst");
    for round in 0..3 {
        let all_done = std::sync::Barrier::new(12);
        let answered: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..12)
                .map(|_| {
                    let addr = run.addr;
                    let all_done = &all_done;
                    s.spawn(move || {
                        let mut c = std::net::TcpStream::connect(addr).expect("connect");
                        c.set_read_timeout(Some(Duration::from_secs(3)))
                            .expect("timeout");
                        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                            .expect("send");
                        let mut buf = [0u8; 12];
                        let ok = c.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 200";
                        // Keep every connection open until all have had their chance: a
                        // stuck one must not be freed by another closing.
                        all_done.wait();
                        ok
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client"))
                .collect()
        });
        assert!(
            answered.iter().all(|a| *a),
            "round {round}: unanswered connections: {answered:?}"
        );
    }
}
