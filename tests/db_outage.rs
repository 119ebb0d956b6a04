//! PostgreSQL stops in the middle of a run: promgres answers 503 (never 4xx, never a false
//! 2xx) while it is down, recovers by itself when it is back, and every acknowledged sample
//! is stored. Uses a private PostgreSQL server (scripts/pg-scratch.sh) so stopping it
//! disturbs no other test.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[test]
fn database_stopped_mid_run_gives_503_then_recovers_without_restart() {
    let pg = ScratchPg::new("outage");
    let db = TestDb::on(&pg.admin_uri(), "outage");
    let mut config = promgres::config::Config::for_database(db.config());
    config.write_timeout = Duration::from_secs(10);
    let server = promgres::server::Server::start(&config).expect("start");
    let addr = server.addr();

    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<(i64, u16)>> = Mutex::new(Vec::new());
    let base = now_ms() - 3_600_000;
    std::thread::scope(|s| {
        for client in 0..2i64 {
            let (stop, results) = (&stop, &results);
            s.spawn(move || {
                let mut n = 0i64;
                // Bounded: at most 2,000 requests per client.
                while !stop.load(Ordering::Relaxed) && n < 2000 {
                    let ts = base + (n * 2 + client) * 1000;
                    let status = match request(
                        addr,
                        "POST",
                        "/write",
                        WRITE_HEADERS,
                        &encode(&node_like(50, ts, 1.0, "irq")),
                    ) {
                        Ok(r) => {
                            assert!(
                                r.status == 204 || r.status == 503,
                                "unexpected {}: {}",
                                r.status,
                                r.body
                            );
                            if r.status == 503 {
                                assert!(r.header("Retry-After").is_some());
                            }
                            r.status
                        }
                        Err(e) => panic!("promgres must keep answering: {e}"),
                    };
                    results.lock().expect("results").push((ts, status));
                    n += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let acked = || {
            results
                .lock()
                .expect("r")
                .iter()
                .filter(|(_, st)| *st == 204)
                .count()
        };
        assert!(
            wait_for(Duration::from_secs(20), || (acked() >= 10).then_some(())).is_some(),
            "writes succeed before the outage"
        );

        pg.stop();
        let outage_started = Instant::now();
        let refused = || {
            results
                .lock()
                .expect("r")
                .iter()
                .filter(|(_, st)| *st == 503)
                .count()
        };
        assert!(
            wait_for(Duration::from_secs(20), || (refused() >= 5).then_some(())).is_some(),
            "writes get 503 while the database is down"
        );
        assert_eq!(
            get(addr, "/healthz").status,
            503,
            "unhealthy while the database is down"
        );
        let during = acked();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(acked(), during, "no 2xx while the database is down");

        pg.start();
        log_line(&format!("database down for {:?}", outage_started.elapsed()));
        let recovered = wait_for(Duration::from_secs(30), || {
            (acked() >= during + 10).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        assert!(
            recovered.is_some(),
            "writes succeed again once the database is back, without restarting promgres"
        );
    });
    assert_eq!(get(addr, "/healthz").status, 200);

    let results = results.into_inner().expect("results");
    let mut c = db.client();
    for (ts, status) in &results {
        let stored = count(
            &mut c,
            &format!("SELECT count(*) FROM prom_samples WHERE time = to_timestamp({ts} / 1000.0)"),
        );
        if *status == 204 {
            assert_eq!(stored, 50, "acknowledged samples at {ts} must be stored");
        }
    }
    assert!(server.shutdown(Duration::from_secs(10)));
}

fn log_line(s: &str) {
    eprintln!("{s}");
}

#[test]
fn async_acks_survive_an_outage_by_retrying() {
    let pg = ScratchPg::new("outage_async");
    let db = TestDb::on(&pg.admin_uri(), "outage_async");
    let mut config = promgres::config::Config::for_database(db.config());
    config.async_acks = true;
    config.queue_capacity = 1000;
    let server = promgres::server::Server::start(&config).expect("start");
    let addr = server.addr();
    let t = now_ms() - 60_000;
    pg.stop();
    // Acknowledged at once although the database is down: they must not be lost.
    for r in 0..20 {
        let reply = post_write(addr, &encode(&node_like(50, t + r * 1000, 1.0, "guest")));
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    std::thread::sleep(Duration::from_millis(500));
    pg.start();
    let mut c = db.client();
    let stored = wait_for(Duration::from_secs(30), || {
        let n = count(&mut c, "SELECT count(*) FROM prom_samples");
        (n == 1000).then_some(n)
    });
    assert_eq!(
        stored,
        Some(1000),
        "every acknowledged sample stored once the database is back"
    );
    assert!(server.shutdown(Duration::from_secs(10)));
}

#[test]
fn healthz_tells_the_truth_at_once_after_a_database_restart() {
    let pg = ScratchPg::new("outage_health");
    let db = TestDb::on(&pg.admin_uri(), "outage_health");
    let mut config = promgres::config::Config::for_database(db.config());
    // The watchdog, which also uses the control connection, then looks only every 5 s.
    config.sessions.stall = Duration::from_secs(60);
    let server = promgres::server::Server::start(&config).expect("start");
    let addr = server.addr();
    for round in 0..2 {
        assert_eq!(get(addr, "/healthz").status, 200, "round {round}: before");
        // No check while it is down: the control session is not replaced until it is used.
        pg.stop();
        pg.start();
        // The control session died with the server; the first check must not report its
        // corpse ("connection closed") but reconnect and answer for the database as it is.
        let r = get(addr, "/healthz");
        assert_eq!(
            r.status, 200,
            "round {round}: first check after the restart: {}",
            r.body
        );
    }
    assert!(server.shutdown(Duration::from_secs(10)));
}
