//! PostgreSQL failover: promgres on a multi-host `--db-uri` with
//! `target_session_attrs=read-write`, the primary stopped, its streaming replica promoted.
//! Writes get 503 while there is no primary, then promgres finds the new primary by itself,
//! and every acknowledged sample is on it.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn promgres_follows_a_promoted_replica() {
    let primary = ScratchPg::new("failover_primary");
    let db = TestDb::on(&primary.admin_uri(), "failover");
    promgres::server::migrate(&db.config()).expect("migrate");
    let replica = ScratchPg::replica_of(&primary, "failover_replica");
    let uri = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write&connect_timeout=3",
        primary.port, replica.port, db.name
    );
    let mut config = promgres::config::Config::for_database(uri.parse().expect("multi-host uri"));
    config.write_timeout = Duration::from_secs(10);
    let server = promgres::server::Server::start(&config).expect("start");
    let addr = server.addr();
    let t = now_ms() - 600_000;
    let mut acknowledged = Vec::new();
    for k in 0..5 {
        let r = post_write(addr, &encode(&node_like(20, t + k * 1000, 1.0, "idle")));
        assert_eq!(r.status, 204, "{}", r.body);
        acknowledged.push(t + k * 1000);
    }
    primary.stop();
    // No primary: the replica is read-only, so writes are refused for retry.
    let r = post_write(addr, &encode(&node_like(20, t + 10_000, 1.0, "idle")));
    assert_eq!(r.status, 503, "{}", r.body);
    replica.promote();
    let mut k = 20;
    let recovered = wait_for(Duration::from_secs(30), || {
        k += 1;
        let r = post_write(addr, &encode(&node_like(20, t + k * 1000, 1.0, "idle")));
        (r.status == 204).then(|| acknowledged.push(t + k * 1000))
    });
    assert!(
        recovered.is_some(),
        "writes succeed on the promoted replica without restarting promgres"
    );
    let mut c = postgres::Client::connect(
        &format!(
            "postgresql://postgres@127.0.0.1:{}/{}",
            replica.port, db.name
        ),
        postgres::NoTls,
    )
    .expect("connect to the new primary");
    for ts in &acknowledged {
        let n = count(
            &mut c,
            &format!("SELECT count(*) FROM prom_samples WHERE time = to_timestamp({ts} / 1000.0)"),
        );
        assert_eq!(n, 20, "acknowledged samples at {ts} are on the new primary");
    }
    assert!(server.shutdown(Duration::from_secs(10)));
}
