//! The soak: what months in production bring, in minutes. Two clusters, each an HA pair of
//! real Prometheus 2.42 replicas scraping every second, two promgres instances with
//! `--high-availability` on a private PostgreSQL. Along the way: a leader replica is killed
//! and restarted after more than a minute, a promgres is restarted, PostgreSQL is restarted,
//! every replica is stopped for longer than every timeout. At the end every sample a replica's
//! own TSDB holds for the periods it led is stored, and nothing else (so no moment is stored
//! from two replicas), both instances accept new connections, and their RSS stayed under the
//! bound docs/operations.md gives.
//!
//! `make test` runs a short version (about 3 minutes, short timeouts); `make soak` the long
//! one (about 15 minutes, production timeouts), `PROMGRES_SOAK=full`.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RSS bound per promgres instance (docs/operations.md).
const RSS_BOUND_MIB: u64 = 256;

struct Plan {
    /// promgres flags beyond the defaults.
    flags: Vec<&'static str>,
    /// Warm-up before the first event.
    warm: Duration,
    /// A killed leader replica stays dead this long.
    dead: Duration,
    /// Every replica is stopped this long: longer than every timeout.
    quiet: Duration,
    /// Normal running between events.
    settle: Duration,
    /// Rounds of the whole sequence (the second on the other cluster).
    rounds: usize,
}

fn plan() -> Plan {
    if std::env::var("PROMGRES_SOAK").is_ok_and(|v| v == "full") {
        // Production timeouts: failover 30 s, ticks 10 s, HTTP read 60 s, stall 15 s.
        Plan {
            flags: vec![],
            warm: Duration::from_secs(30),
            dead: Duration::from_secs(75),
            quiet: Duration::from_secs(75),
            settle: Duration::from_secs(40),
            rounds: 2,
        }
    } else {
        Plan {
            flags: vec![
                "--ha-failover-timeout",
                "5s",
                "--ha-election-interval",
                "1s",
                "--http-read-timeout",
                "8s",
                "--db-stall-timeout",
                "4s",
            ],
            warm: Duration::from_secs(12),
            dead: Duration::from_secs(20),
            quiet: Duration::from_secs(12),
            settle: Duration::from_secs(10),
            rounds: 1,
        }
    }
}

fn log(started: Instant, what: &str) {
    eprintln!("[soak {:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// (leader, start ms, end ms) of every lease of `cluster`, in order.
fn history(c: &mut postgres::Client, cluster: &str) -> Vec<(String, i64, i64)> {
    c.query(
        "SELECT leader, (extract(epoch FROM lease_start) * 1000)::bigint,
                coalesce((extract(epoch FROM lease_end) * 1000)::bigint, 9223372036854775807)
           FROM prom_ha_lease_history WHERE cluster = $1 ORDER BY term",
        &[&cluster],
    )
    .expect("history")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn leader(c: &mut postgres::Client, cluster: &str) -> Option<String> {
    c.query_opt(
        "SELECT leader FROM prom_ha_leases WHERE cluster = $1",
        &[&cluster],
    )
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// Stored (ms, value bits) of `metric` scraped from the target in `cluster`, up to `cutoff`.
fn stored(
    c: &mut postgres::Client,
    cluster: &str,
    metric: &str,
    cutoff: i64,
) -> BTreeSet<(i64, u64)> {
    c.query(
        "SELECT (extract(epoch FROM p.time) * 1000)::bigint, p.value
           FROM prom_samples p JOIN prom_series s USING (series_id)
          WHERE s.metric = $1 AND s.labels->>'cluster' = $2 AND s.labels->>'job' = 'target'
            AND p.time <= timestamptz 'epoch' + $3::int8 * interval '1 ms'",
        &[&metric, &cluster, &cutoff],
    )
    .expect("stored")
    .iter()
    .map(|r| (r.get(0), r.get::<_, f64>(1).to_bits()))
    .collect()
}

#[test]
fn soak_with_real_prometheus_pairs_restarts_and_quiet_spells() {
    let plan = plan();
    let started = Instant::now();
    let pg = ScratchPg::new("soak");
    let db = TestDb::on(&pg.admin_uri(), "soak");
    let mut flags = vec!["--high-availability", "--log-level", "warn"];
    flags.extend(plan.flags.iter().copied());
    let mut promgres = [
        Process::start(&db.uri(), &flags),
        Process::start(&db.uri(), &flags),
    ];
    let target = Prometheus::start("soak-target", "global:\n  scrape_interval: 1m\n");
    // east-0 and west-1 write to promgres 0, east-1 and west-0 to promgres 1.
    let mut replicas: BTreeMap<String, (String, Prometheus)> = BTreeMap::new();
    for (cluster, names) in [
        ("east", ["east-0", "east-1"]),
        ("west", ["west-0", "west-1"]),
    ] {
        for name in names {
            let instance = usize::from(name == "east-1" || name == "west-0");
            let p = Prometheus::start(
                name,
                &replica_config(promgres[instance].addr, target.port, cluster, name),
            );
            replicas.insert(name.to_string(), (cluster.to_string(), p));
        }
    }
    let soak_start = now_ms();
    log(
        started,
        "4 replicas, 2 promgres, private PostgreSQL started",
    );

    // Peak RSS of each promgres, sampled every second.
    let peaks: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let pids: Arc<[AtomicU64; 2]> = Arc::new([
        AtomicU64::new(u64::from(promgres[0].pid())),
        AtomicU64::new(u64::from(promgres[1].pid())),
    ]);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, pids, sampling) = (peaks.clone(), pids.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                for i in 0..2 {
                    let pid = pids[i].load(Ordering::Relaxed);
                    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .ok()
                        .and_then(|s| {
                            s.lines()
                                .find_map(|l| l.strip_prefix("VmRSS:"))
                                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                        })
                        .unwrap_or(0);
                    peaks[i].fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let mut c = db.client();
    let warm = wait_for(Duration::from_secs(60), || {
        let ok = ["east", "west"]
            .iter()
            .all(|cl| stored(&mut c, cl, "up", now_ms() + 86_400_000).len() >= 5);
        ok.then_some(())
    });
    assert!(warm.is_some(), "no data within 60 s");
    std::thread::sleep(plan.warm);

    for round in 0..plan.rounds {
        let cluster = ["east", "west"][round % 2];
        // A leader replica dies (SIGKILL) and comes back more than a minute later.
        let victim = leader(&mut c, cluster).expect("a leader");
        replicas.get_mut(&victim).expect("replica").1.kill();
        log(
            started,
            &format!("killed {victim}, the leader of {cluster}"),
        );
        let dead_since = Instant::now();
        let failed_over = wait_for(plan.dead, || {
            leader(&mut c, cluster).filter(|l| *l != victim)
        });
        log(
            started,
            &format!("{cluster} failed over to {failed_over:?}"),
        );
        assert!(failed_over.is_some(), "{cluster} fails over");
        std::thread::sleep(plan.dead.saturating_sub(dead_since.elapsed()));
        replicas.get_mut(&victim).expect("replica").1.restart();
        log(started, &format!("restarted {victim}"));
        std::thread::sleep(plan.settle);

        // A promgres restarts.
        let which = round % 2;
        promgres[which].signal("TERM");
        let _ = promgres[which].child.wait();
        promgres[which].restart();
        pids[which].store(u64::from(promgres[which].pid()), Ordering::Relaxed);
        log(started, &format!("restarted promgres {which}"));
        std::thread::sleep(plan.settle);

        // PostgreSQL restarts.
        pg.stop();
        std::thread::sleep(Duration::from_secs(2));
        pg.start();
        c = db.client();
        log(started, "restarted PostgreSQL");
        std::thread::sleep(plan.settle);

        // Every replica stops, longer than every timeout.
        for (_, p) in replicas.values() {
            p.signal("STOP");
        }
        log(started, "all replicas stopped");
        std::thread::sleep(plan.quiet);
        for (_, p) in replicas.values() {
            p.signal("CONT");
        }
        log(started, "all replicas resumed");
        // A quiet spell longer than every timeout: new connections are still served.
        for p in &promgres {
            let r = request(p.addr, "GET", "/healthz", &[], b"")
                .expect("a new connection after the quiet spell is served");
            assert_eq!(r.status, 200, "{}", r.body);
        }
        std::thread::sleep(plan.settle);
    }

    // Let the last samples land, then compare up to a cutoff.
    let cutoff = now_ms() - 5_000;
    std::thread::sleep(Duration::from_secs(5));
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();

    let mut report = Vec::new();
    for cluster in ["east", "west"] {
        let periods = history(&mut c, cluster);
        let owner = |t: i64| {
            periods
                .iter()
                .find(|(_, a, b)| t >= *a && t < *b)
                .map(|(l, _, _)| l.clone())
        };
        for metric in ["up", "scrape_samples_scraped"] {
            let mut expected: BTreeSet<(i64, u64)> = BTreeSet::new();
            for (name, (cl, p)) in &replicas {
                if cl != cluster {
                    continue;
                }
                for (_, samples) in p.read_raw(
                    &[("__name__", metric), ("job", "target")],
                    soak_start - 60_000,
                    cutoff,
                ) {
                    expected.extend(
                        samples
                            .into_iter()
                            .filter(|(t, _)| owner(*t).as_deref() == Some(name.as_str())),
                    );
                }
            }
            let actual = stored(&mut c, cluster, metric, cutoff);
            let missing: Vec<_> = expected.difference(&actual).take(10).collect();
            let extra: Vec<_> = actual.difference(&expected).take(10).collect();
            report.push(format!(
                "{cluster}/{metric}: {} expected, {} stored, {} missing, {} not the owner's",
                expected.len(),
                actual.len(),
                expected.difference(&actual).count(),
                actual.difference(&expected).count()
            ));
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{cluster}/{metric}: missing {missing:?}, not the owner's {extra:?}; periods {periods:?}"
            );
        }
        report.push(format!("{cluster}: leases {periods:?}"));
    }
    for p in &promgres {
        let r = request(p.addr, "GET", "/healthz", &[], b"").expect("served at the end");
        assert_eq!(r.status, 200);
    }
    let peaks: Vec<u64> = peaks
        .iter()
        .map(|p| p.load(Ordering::Relaxed) / 1024)
        .collect();
    report.push(format!(
        "peak RSS {peaks:?} MiB (bound {RSS_BOUND_MIB} MiB)"
    ));
    log(started, &report.join("\n"));
    assert!(
        peaks.iter().all(|p| *p <= RSS_BOUND_MIB),
        "RSS {peaks:?} MiB over {RSS_BOUND_MIB} MiB"
    );
}
