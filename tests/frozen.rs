//! A promgres frozen (SIGSTOP) in the middle of its insert transactions, as a host that hangs
//! or a VM that is paused: its sessions hold lease rows, sample keys and advisory locks, and
//! its kernel still acknowledges TCP, so neither keepalives nor PostgreSQL's statement timeout
//! end them. The other instance must keep storing and take over within the documented bound
//! (failover timeout + one tick + --db-stall-timeout + the watchdog's interval), and nothing
//! acknowledged may be lost.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STALL: &str = "3s";
const STALL_MS: u64 = 3_000;
/// The watchdog checks every stall/3, at least every second.
const WATCH_MS: u64 = 1_000;
const INTERVAL_MS: i64 = 250;
const TARGETS: usize = 400;

/// One request on a fresh connection with short timeouts, as a sender behind a load balancer
/// sees it: a frozen promgres is a timeout, not a hang. None when nothing came back.
fn post(addr: SocketAddr, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut head = format!(
        "POST /write HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in WRITE_HEADERS {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

/// A scrape of `TARGETS` series at `ts`, labelled for `metric` and, with HA, a replica.
fn scrape(metric: &str, ha: Option<(&str, &str)>, ts: i64) -> Vec<u8> {
    let req = write_request(
        (0..TARGETS)
            .map(|i| {
                let target = format!("t{i}");
                let mut labels = vec![("__name__", metric), ("target", target.as_str())];
                if let Some((cluster, replica)) = ha {
                    labels.push(("cluster", cluster));
                    labels.push(("__replica__", replica));
                }
                series(&labels, &[(ts, i as f64)])
            })
            .collect(),
    );
    encode(&req)
}

/// A sender scraping every 250 ms at `offset` ms past the grid, posting each scrape to the
/// first of `targets` that answers 2xx (a load balancer retrying elsewhere), as Prometheus
/// retries 5xx and timeouts. Records (ts, final status).
struct Sender {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(i64, u16)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sender {
    fn start(
        targets: Vec<SocketAddr>,
        metric: &'static str,
        ha: Option<(&'static str, &'static str)>,
        offset: i64,
    ) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            let mut pick = 0x2545_f491_u64 ^ offset as u64;
            // Bounded: at most 400 scrapes (100 s).
            for _ in 0..400 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let ts = now_ms() / INTERVAL_MS * INTERVAL_MS + offset;
                let body = scrape(metric, ha, ts);
                pick ^= pick << 13;
                pick ^= pick >> 7;
                pick ^= pick << 17;
                let first = (pick % targets.len() as u64) as usize;
                let mut status = 0;
                for k in 0..targets.len() {
                    let addr = targets[(first + k) % targets.len()];
                    if let Some(st) = post(addr, &body) {
                        status = st;
                        if (200..300).contains(&st) {
                            break;
                        }
                    }
                }
                a.lock().expect("answers").push((ts, status));
                let next = ts - offset + INTERVAL_MS;
                std::thread::sleep(Duration::from_millis(
                    u64::try_from(next - now_ms()).unwrap_or(0),
                ));
            }
        });
        Sender {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> Vec<(i64, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.answers.lock().expect("answers").clone()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop();
    }
}

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

/// Stored sample times of `metric`, with how many targets each has.
fn stored(c: &mut postgres::Client, metric: &str) -> BTreeMap<i64, i64> {
    c.query(
        "SELECT (extract(epoch FROM p.time) * 1000)::bigint, count(*)
           FROM prom_samples p JOIN prom_series s USING (series_id)
          WHERE s.metric = $1 GROUP BY 1 ORDER BY 1",
        &[&metric],
    )
    .expect("stored")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn assert_acknowledged_stored(answers: &[(i64, u16)], stored: &BTreeMap<i64, i64>) {
    for (ts, status) in answers {
        if *status == 204 {
            assert_eq!(
                stored.get(ts),
                Some(&(TARGETS as i64)),
                "acknowledged scrape at {ts} must be stored whole"
            );
        }
    }
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
    let mut a = Sender::start(addrs.clone(), "fz", Some(("c", "a")), 0);
    let mut c = db.client();
    assert!(
        wait_for(Duration::from_secs(10), || leader(&mut c)
            .filter(|l| l == "a"))
        .is_some(),
        "a leads"
    );
    let mut b = Sender::start(addrs, "fz", Some(("c", "b")), 100);
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
    let all = stored(&mut c, "fz");
    assert_acknowledged_stored(&a_answers, &all);
    assert_acknowledged_stored(&b_answers, &all);
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
        Sender::start(vec![p[0].addr], "lk", None, 0),
        Sender::start(vec![p[1].addr], "lk", None, 100),
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
    let answers: Vec<Vec<(i64, u16)>> = senders.iter_mut().map(Sender::stop).collect();
    let all = stored(&mut c, "lk");
    for a in &answers {
        assert_acknowledged_stored(a, &all);
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
