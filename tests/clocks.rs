//! Skewed clocks. A replica whose clock runs fast must not cost the next leader minutes of
//! data at a failover, and promgres's own clock being off must not turn valid samples into a
//! 4xx (which Prometheus drops for good): sample times are judged by the database clock.

mod common;

use common::*;
use promgres::clock::Clock;
use promgres::config::{Config, LocalClock};
use promgres::ha::HaConfig;
use promgres::server::Server;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The host clock moved by `skew_ms`.
struct Skewed(i64);

impl Clock for Skewed {
    fn now_ms(&self) -> i64 {
        promgres::clock::now_ms() + self.0
    }
}

fn post_series(addr: std::net::SocketAddr, labels: &[(&str, &str)], ts: i64) -> Reply {
    post_write(
        addr,
        &encode(&write_request(vec![series(labels, &[(ts, 1.0)])])),
    )
}

#[test]
fn promgres_judges_sample_times_by_the_database_clock_not_its_own() {
    for (skew, what) in [
        (-20 * 60_000, "20 minutes slow"),
        (40 * 86_400_000, "40 days fast"),
    ] {
        let run = Running::start_with("skewed", |c: &mut Config| {
            c.clock = LocalClock(Arc::new(Skewed(skew)));
        });
        let now = now_ms();
        let r = post_series(run.addr, &[("__name__", "skew_ok")], now);
        assert_eq!(
            r.status, 204,
            "promgres's clock {what}: a sample stamped now is valid: {}",
            r.body
        );
        // Out of range by the database clock: the sender's fault, 400.
        let r = post_series(run.addr, &[("__name__", "skew_future")], now + 15 * 60_000);
        assert_eq!(r.status, 400, "{what}: 15 minutes ahead: {}", r.body);
        let r = post_series(run.addr, &[("__name__", "skew_old")], now - 31 * 86_400_000);
        assert_eq!(
            r.status, 400,
            "{what}: older than --max-sample-age: {}",
            r.body
        );
    }
}

#[test]
fn a_leader_stamping_samples_minutes_ahead_does_not_cost_the_next_leader_its_data() {
    let db = TestDb::new("fast_leader");
    let mut config = Config::for_database(db.config());
    config.ha = Some(HaConfig {
        cluster_label: "cluster".into(),
        replica_label: "__replica__".into(),
        failover_timeout_ms: 2_000,
        interval_ms: 500,
        buffer_bytes: 16 << 20,
    });
    let server = Server::start(&config).expect("start");
    let addr = server.addr();
    let ahead = 5 * 60_000;
    let scrape = |replica: &str, ts: i64| {
        post_series(
            addr,
            &[
                ("__name__", "fast"),
                ("cluster", "c"),
                ("__replica__", replica),
            ],
            ts,
        )
    };
    // Replica a leads with a clock 5 minutes fast; b is on time.
    let started = Instant::now();
    let mut last_a = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let now = now_ms();
        last_a = now + ahead;
        assert_eq!(scrape("a", last_a).status, 204);
        assert_eq!(scrape("b", now + 50).status, 202);
        std::thread::sleep(Duration::from_millis(250));
    }
    // a dies; b keeps scraping.
    let mut c = db.client();
    let handed = wait_for(Duration::from_secs(10), || {
        let _ = scrape("b", now_ms() + 50);
        std::thread::sleep(Duration::from_millis(250));
        c.query_opt(
            "SELECT (extract(epoch FROM lease_start) * 1000)::bigint,
                    (extract(epoch FROM leader_since) * 1000)::bigint
               FROM prom_ha_leases WHERE cluster = 'c' AND leader = 'b'",
            &[],
        )
        .expect("lease")
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
    });
    let (t, handed_at) = handed.expect("b takes over");
    eprintln!(
        "a's newest sample {} ms ahead of the hand-over; T = hand-over time {} ms",
        last_a - handed_at,
        t - handed_at
    );
    // leader_since is the hand-over transaction's start; T is capped by the clock when its
    // statement ran (it may have waited for a writer's commit).
    assert!(
        t <= handed_at + 2_000,
        "T ({t}) must not lie in the future of the database clock at the hand-over ({handed_at})"
    );
    // b's samples from the hand-over on are stored, not dropped for five minutes.
    let mut stored_b = 0;
    for _ in 0..8 {
        let ts = now_ms() + 50;
        let r = scrape("b", ts);
        assert_eq!(
            r.status, 204,
            "b leads and its samples are stored: {}",
            r.body
        );
        stored_b += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let after = count(
        &mut c,
        &format!(
            "SELECT count(*) FROM prom_samples p JOIN prom_series s USING (series_id)
              WHERE s.metric = 'fast' AND p.time > to_timestamp({handed_at} / 1000.0)
                AND p.time < now() + interval '1 minute'"
        ),
    );
    assert!(
        after >= stored_b,
        "{after} of b's samples after the hand-over stored"
    );
    assert!(server.shutdown(Duration::from_secs(10)));
}
