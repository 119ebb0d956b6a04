//! promgres at run time as a role that is neither superuser nor database owner, with the
//! grants docs/operations.md ("Grants") lists: migrations with CREATE on the database and on
//! schema public, which are then taken back; at run time writes (new metrics, new day
//! partitions), HA leases, compaction, head reclaim, retention dropping whole partitions,
//! remote read; and a reader role that may only SELECT the documented views.

mod common;

use common::*;
use promgres::proto::{LabelMatcher, Query, ReadRequest, ReadResponse, TimeSeries};
use prost::Message;
use std::time::Duration;

/// A SAMPLES remote read; the series it returns.
fn read_samples(addr: std::net::SocketAddr, req: &ReadRequest) -> Vec<TimeSeries> {
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let headers = [
        ("Content-Encoding", "snappy"),
        ("Content-Type", "application/x-protobuf"),
        ("X-Prometheus-Remote-Read-Version", "0.1.0"),
    ];
    let r = exchange(addr, "POST", "/read", &headers, &body, None).expect("read");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&r.body)
        .expect("snappy answer");
    let resp = ReadResponse::decode(raw.as_slice()).expect("ReadResponse");
    resp.results
        .into_iter()
        .flat_map(|q| q.timeseries)
        .collect()
}

/// Roles of one test, dropped after its database.
struct Roles {
    names: Vec<String>,
}

impl Drop for Roles {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_uri(), postgres::NoTls) {
            for n in &self.names {
                let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {n}"));
            }
        }
    }
}

fn as_role(db: &TestDb, role: &str) -> postgres::Config {
    let mut c = db.admin_config();
    c.user(role);
    c
}

#[test]
fn promgres_runs_as_a_role_that_is_neither_superuser_nor_database_owner() {
    let tag = format!("{}_{}", std::process::id(), now_ms() % 100_000);
    let (app, reader) = (
        format!("promgres_app_{tag}"),
        format!("promgres_reader_{tag}"),
    );
    let _roles = Roles {
        names: vec![app.clone(), reader.clone()],
    };
    let db = TestDb::new("leastpriv");
    let mut admin = db.admin_client();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {app} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
             CREATE ROLE {reader} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
             -- for `promgres migrate` only:
             GRANT CONNECT, CREATE ON DATABASE {db} TO {app};
             GRANT CREATE ON SCHEMA public TO {app};
             GRANT CONNECT ON DATABASE {db} TO {reader};",
            db = db.name
        ))
        .expect("roles");
    let app_db = as_role(&db, &app);
    promgres::server::migrate(&app_db).expect("migrations as the app role");
    // Run time: what only migrations need is taken back.
    admin
        .batch_execute(&format!(
            "REVOKE CREATE ON DATABASE {db} FROM {app};
             REVOKE CREATE ON SCHEMA public FROM {app};
             GRANT USAGE ON SCHEMA promgres, prom_metric TO {reader};
             GRANT SELECT ON prom_series, prom_samples, prom_metadata, prom_ha_leases,
                             prom_ha_lease_history TO {reader};
             GRANT SELECT ON promgres.samples, promgres.chunks, promgres.open_chunks TO {reader};
             ALTER DEFAULT PRIVILEGES FOR ROLE {app} IN SCHEMA prom_metric
                 GRANT SELECT ON TABLES TO {reader};",
            db = db.name
        ))
        .expect("run-time grants");
    let (superuser, owner): (bool, String) = {
        let mut c = app_db.connect(postgres::NoTls).expect("connect as app");
        let row = c
            .query_one(
                "SELECT r.rolsuper, pg_get_userbyid(d.datdba)::text
                   FROM pg_roles r, pg_database d
                  WHERE r.rolname = current_user AND d.datname = current_database()",
                &[],
            )
            .expect("who");
        (row.get(0), row.get(1))
    };
    assert!(!superuser);
    assert_ne!(owner, app, "the app role must not own the database");

    let mut config = promgres::config::Config::for_database(app_db.clone());
    config.retention = Some(Duration::from_secs(3 * 86_400));
    config.max_sample_age = Duration::from_secs(10 * 86_400);
    config.compaction_delay = Duration::from_secs(3600);
    config.ha = Some(promgres::ha::HaConfig {
        cluster_label: "cluster".into(),
        replica_label: "__replica__".into(),
        failover_timeout_ms: 30_000,
        interval_ms: 10_000,
        buffer_bytes: 1 << 20,
    });
    let server = promgres::server::Server::start(&config).expect("starts as the app role");
    let addr = server.addr();
    let day = 86_400_000;
    let now = now_ms();
    // A new metric (its view is created), samples of today, of 2 days ago (kept) and of 5
    // days ago (a new day partition; later dropped by retention), under HA labels.
    let ha = |m: &str, t: i64, v: f64| {
        series(
            &[
                ("__name__", m),
                ("cluster", "c1"),
                ("__replica__", "r1"),
                ("job", "lp"),
            ],
            &[(t, v)],
        )
    };
    for (t, v) in [
        (now - 5 * day, 5.0),
        (now - 2 * day, 2.0),
        (now - 60_000, 1.0),
    ] {
        let reply = post_write(addr, &encode(&write_request(vec![ha("lp_metric", t, v)])));
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    assert_eq!(
        count(&mut admin, "SELECT count(*) FROM prom_metric.lp_metric"),
        3
    );
    let leader: String = admin
        .query_one(
            "SELECT leader FROM prom_ha_leases WHERE cluster = 'c1'",
            &[],
        )
        .expect("lease")
        .get(0);
    assert_eq!(leader, "r1");

    // Compaction (chunk partitions, open chunks, head reclaim) as the app role.
    promgres::server::compact_now(&app_db, &Default::default()).expect("compaction as app");
    assert!(count(&mut admin, "SELECT count(*) FROM promgres.chunks") >= 2);
    // Retention drops the 5-day-old partitions (DETACH CONCURRENTLY, DROP TABLE).
    server.apply_retention_now();
    let left = wait_for(Duration::from_secs(20), || {
        let n = count(&mut admin, "SELECT count(*) FROM prom_metric.lp_metric");
        (n == 2).then_some(n)
    });
    assert_eq!(left, Some(2), "the old day is dropped, the rest kept");

    // Remote read as the app role.
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: now - 3 * day,
            end_timestamp_ms: now + 60_000,
            matchers: vec![LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: "lp_metric".into(),
            }],
        }],
        accepted_response_types: vec![],
    };
    let reply = read_samples(addr, &req);
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].samples.len(), 2);

    // The reader may read the documented views and nothing else.
    let mut r = as_role(&db, &reader)
        .connect(postgres::NoTls)
        .expect("reader");
    let n: i64 = r
        .query_one("SELECT count(*) FROM prom_metric.lp_metric", &[])
        .expect("reader reads a metric view")
        .get(0);
    assert_eq!(n, 2);
    let n: i64 = r
        .query_one(
            "SELECT count(*) FROM prom_samples_between(now() - interval '3 days', now())",
            &[],
        )
        .expect("reader reads prom_samples_between")
        .get(0);
    assert_eq!(n, 2);
    assert!(r.batch_execute("DELETE FROM promgres.samples").is_err());
    assert!(r
        .batch_execute("INSERT INTO promgres.series_generation VALUES (1)")
        .is_err());
    assert!(server.shutdown(Duration::from_secs(10)));
}
