//! The election as pure logic: several [`Election`]s (promgres instances) share an in-memory
//! lease store that mimics the SQL functions of migrations/0002_ha.sql, and a manual clock.
//! A simulated writer applies the same fence the real one checks inside its transaction.

use super::*;
use crate::decode::{validate, Limits};
use crate::proto;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};

const TIMEOUT: i64 = 30_000;
const TICK: i64 = 10_000;
const SCRAPE: i64 = 1_000;

struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The lease store: the model of the SQL lease functions (shared with the HA fuzz target).
use crate::ha_model::ModelStore as FakeStore;

/// One sample of an HA replica's series.
fn ha_series(name: &str, cluster: &str, replica: &str, timestamp: i64) -> proto::TimeSeries {
    let label = |n: &str, v: &str| proto::Label {
        name: n.into(),
        value: v.into(),
    };
    proto::TimeSeries {
        labels: vec![
            label("__name__", name),
            label("__replica__", replica),
            label("cluster", cluster),
        ],
        samples: vec![proto::Sample {
            value: 1.0,
            timestamp,
        }],
        ..Default::default()
    }
}

/// Several promgres instances on one fake database.
struct Sim {
    clock: Arc<ManualClock>,
    store: FakeStore,
    instances: Vec<Election>,
    metrics: Arc<Metrics>,
}

impl Sim {
    fn new(instances: usize, buffer_bytes: usize) -> Sim {
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000_000)));
        let store = FakeStore::new(clock.clone());
        let metrics = Arc::new(Metrics::default());
        let config = HaConfig {
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            failover_timeout_ms: TIMEOUT,
            interval_ms: TICK,
            buffer_bytes,
        };
        let instances = (0..instances)
            .map(|_| {
                Election::new(
                    config.clone(),
                    Box::new(store.clone()),
                    clock.clone(),
                    metrics.clone(),
                )
            })
            .collect();
        Sim {
            clock,
            store,
            instances,
            metrics,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn advance(&self, ms: i64) {
        self.clock.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// The writer: stores plain series, and fenced groups whose fence holds; returns the
    /// groups fenced out. Writer id = instance, as each instance has its own sessions.
    fn commit(
        &self,
        writer: usize,
        plain: &WriteBatch,
        fenced: Vec<FencedGroup>,
    ) -> Vec<FencedGroup> {
        let now = self.now();
        let mut db = self.store.db();
        for s in &plain.series {
            let cluster = s.labels.get("cluster").unwrap_or("").to_string();
            for x in &s.samples {
                let key = (cluster.clone(), s.labels.to_json(), x.timestamp);
                assert!(
                    !db.stored.contains_key(&key),
                    "backfill stored {key:?} twice"
                );
                db.stored.insert(key, "backfill".into());
            }
        }
        let mut out = Vec::new();
        for g in fenced {
            let Some((lo, hi)) = sample_bounds(&g.series) else {
                continue;
            };
            let lease = db.leases[&g.cluster].clone();
            if lease.leader != g.replica || lo < lease.start_ms {
                out.push(g);
                continue;
            }
            for s in &g.series {
                for x in &s.samples {
                    let key = (g.cluster.clone(), s.labels.to_json(), x.timestamp);
                    // The primary key would ignore an exact re-send; two replicas' samples
                    // at one moment must never both arrive here.
                    db.stored.entry(key).or_insert_with(|| g.replica.clone());
                }
            }
            let p = db
                .progress
                .entry((g.cluster.clone(), writer))
                .or_insert((lease.term, hi, now));
            if p.0 != lease.term {
                *p = (lease.term, hi, now);
            }
            p.1 = p.1.max(hi);
            p.2 = now;
        }
        out
    }

    /// A replica's scrape of `series` targets at `ts`, sent to `instance`; returns whether
    /// every sample was stored (the 204/202 distinction).
    fn send(&self, instance: usize, cluster: &str, replica: &str, ts: i64) -> bool {
        self.send_series(instance, cluster, replica, &[("up", ts)])
    }

    fn send_series(
        &self,
        instance: usize,
        cluster: &str,
        replica: &str,
        samples: &[(&str, i64)],
    ) -> bool {
        let request = proto::WriteRequest {
            timeseries: samples
                .iter()
                .map(|(name, ts)| ha_series(name, cluster, replica, *ts))
                .collect(),
            metadata: vec![],
        };
        let batch = validate(request, Limits::new(1 << 20, i64::MAX), self.now()).expect("valid");
        let election = &self.instances[instance];
        let routed = election.route(batch).expect("route");
        self.commit(instance, &WriteBatch::default(), routed.flushes);
        let mut all_stored = routed.not_stored == 0;
        for g in self.commit(instance, &routed.plain, routed.fenced) {
            let again = election.reroute_fenced_out(g).expect("reroute");
            self.commit(instance, &WriteBatch::default(), again.flushes);
            all_stored &= again.not_stored == 0;
            all_stored &= self.commit(instance, &again.plain, again.fenced).is_empty();
        }
        all_stored
    }

    fn tick(&self, instance: usize) {
        let flushes = self.instances[instance].tick().expect("tick");
        self.commit(instance, &WriteBatch::default(), flushes);
    }

    fn leader(&self, cluster: &str) -> String {
        self.store.db().leases[cluster].leader.clone()
    }

    /// Stored timestamps of one series, with the replica each came from.
    fn stored(&self, cluster: &str, metric: &str) -> Vec<(i64, String)> {
        let db = self.store.db();
        db.stored
            .iter()
            .filter(|((c, labels, _), _)| {
                c == cluster && labels.contains(&format!("\"__name__\":\"{metric}\""))
            })
            .map(|((_, _, ts), r)| (*ts, r.clone()))
            .collect()
    }

    /// Runs `seconds` of scraping: each listed replica sends one sample per second, with its
    /// own scrape offset, to instance `(second + k) % instances`; one tick per 10 s.
    fn run(&self, seconds: i64, replicas: &[(&str, i64)]) {
        for _ in 0..seconds {
            let base = self.now();
            for (k, (replica, offset)) in replicas.iter().enumerate() {
                let instance = (base / SCRAPE) as usize % self.instances.len() + k;
                self.send(instance % self.instances.len(), "c", replica, base + offset);
            }
            self.advance(SCRAPE);
            if self.now() % TICK < SCRAPE {
                for i in 0..self.instances.len() {
                    self.tick(i);
                }
            }
        }
    }
}

fn max_gap(samples: &[(i64, String)]) -> i64 {
    samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(0)
}

#[test]
fn first_writer_wins_and_keeps_the_lease() {
    let sim = Sim::new(1, 1 << 20);
    assert!(sim.send(0, "c", "a", sim.now()), "first writer stores");
    assert!(
        !sim.send(0, "c", "b", sim.now() + 300),
        "standby is answered 202"
    );
    sim.run(120, &[("a", 0), ("b", 300)]);
    assert_eq!(sim.leader("c"), "a");
    let stored = sim.stored("c", "up");
    assert!(
        stored.iter().all(|(_, r)| r == "a"),
        "only the leader's samples: {stored:?}"
    );
    assert_eq!(
        stored.len(),
        120,
        "one sample per second (the first send and the first scrape share a timestamp)"
    );
}

#[test]
fn failover_after_the_timeout_with_a_gap_of_at_most_one_scrape() {
    let sim = Sim::new(1, 1 << 20);
    sim.run(60, &[("a", 0), ("b", 400)]);
    let died = sim.now();
    // a dies; b keeps sending. The tick after 30 s of silence hands over.
    sim.run(45, &[("b", 400)]);
    assert_eq!(sim.leader("c"), "b");
    let stored = sim.stored("c", "up");
    assert!(
        max_gap(&stored) <= SCRAPE,
        "gap {} ms: {stored:?}",
        max_gap(&stored)
    );
    let times: BTreeSet<i64> = stored.iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), stored.len());
    // a's samples end before T, b's start at or after T, b's buffered ones included.
    let t = sim.store.db().leases["c"].start_ms;
    assert!(stored.iter().all(|(ts, r)| (r == "a") == (*ts < t)));
    assert!(
        stored
            .iter()
            .any(|(ts, r)| r == "b" && *ts < died + TIMEOUT),
        "buffered standby samples were stored"
    );
    assert!(sim
        .metrics
        .render()
        .contains("promgres_ha_leader_changes_total{cluster=\"c\"} 1"));
    let gap = sim.metrics.ha_last_failover_gap.render_value(&["c"]);
    assert!(
        gap.is_some_and(|g| g > 0.0 && g <= 1.0),
        "gap metric {gap:?}"
    );
}

#[test]
fn the_old_leader_comes_back_as_follower_and_backfills_its_own_past() {
    let sim = Sim::new(1, 1 << 20);
    sim.run(20, &[("a", 0), ("b", 400)]);
    let cut = sim.now();
    // a's network is cut: its samples from here on are not delivered.
    sim.run(50, &[("b", 400)]);
    assert_eq!(sim.leader("c"), "b");
    let t = sim.store.db().leases["c"].start_ms;
    // a returns and replays what it scraped meanwhile: what lies in its own past lease
    // (before T) is stored, the rest is not.
    for ts in (cut..cut + 50_000).step_by(SCRAPE as usize) {
        sim.send(0, "c", "a", ts);
    }
    sim.run(30, &[("a", 0), ("b", 400)]);
    assert_eq!(sim.leader("c"), "b", "the returning leader stays follower");
    let stored = sim.stored("c", "up");
    for (ts, r) in &stored {
        if *ts >= t {
            assert_eq!(r, "b", "after T only b: {ts}");
        }
    }
    let times: BTreeSet<i64> = stored.iter().map(|(t, _)| *t).collect();
    assert_eq!(times.len(), stored.len(), "no moment twice");
}

#[test]
fn both_silent_then_one_returns() {
    for returning in ["a", "b"] {
        let sim = Sim::new(1, 1 << 20);
        sim.run(20, &[("a", 0), ("b", 400)]);
        sim.run(120, &[]);
        assert_eq!(sim.leader("c"), "a", "no candidate, no change");
        let back = sim.now();
        sim.run(45, &[(returning, 400)]);
        assert_eq!(sim.leader("c"), returning);
        let after: Vec<_> = sim
            .stored("c", "up")
            .into_iter()
            .filter(|(t, _)| *t >= back)
            .collect();
        assert_eq!(
            after.len(),
            45,
            "{returning}: every sample since the return stored: {after:?}"
        );
    }
}

#[test]
fn a_standbys_last_samples_before_a_quiet_spell_are_kept_for_the_hand_over_after_it() {
    let sim = Sim::new(1, 1 << 20);
    sim.run(20, &[("a", 0), ("b", 400)]);
    let (a_last, b_last) = {
        let stored = sim.stored("c", "up");
        let a = stored.iter().map(|(t, _)| *t).max().expect("a stored");
        (a, a + 400)
    };
    // Every replica is silent for two minutes (four failover timeouts), then b is back first.
    sim.run(120, &[]);
    sim.run(45, &[("b", 400)]);
    assert_eq!(sim.leader("c"), "b");
    let stored = sim.stored("c", "up");
    assert!(
        stored.iter().any(|(t, r)| *t == b_last && r == "b"),
        "b's sample at {b_last}, after a's last at {a_last} and before the quiet spell, is b's to store: {stored:?}"
    );
    // Meanwhile samples the leader has overtaken are not kept: with both sending, the buffer
    // holds about a tick's worth of b's samples, not the whole window.
    let sim = Sim::new(1, 1 << 20);
    sim.run(60, &[("a", 0), ("b", 400)]);
    let state = sim.instances[0].state_json();
    let held: usize = state
        .split("\"b\":{")
        .nth(1)
        .and_then(|b| b.split("\"buffered_samples\":").nth(1))
        .and_then(|n| n.split('}').next())
        .and_then(|n| n.parse().ok())
        .expect("b's buffered samples");
    assert!(held <= 11, "{held} samples held: {state}");
}

#[test]
fn the_freshest_replica_is_chosen_not_a_lagging_one() {
    let sim = Sim::new(1, 1 << 20);
    sim.run(20, &[("a", 0), ("fresh", 300), ("stale", -600_000)]);
    sim.run(45, &[("fresh", 300), ("stale", -600_000)]);
    assert_eq!(sim.leader("c"), "fresh");
}

#[test]
fn clock_skew_between_replicas_never_stores_a_moment_twice() {
    let sim = Sim::new(1, 1 << 20);
    // b's clock runs 2.5 s behind a's.
    sim.run(30, &[("a", 0), ("b", -2_500)]);
    sim.run(45, &[("b", -2_500)]);
    assert_eq!(sim.leader("c"), "b");
    let stored = sim.stored("c", "up");
    let t = sim.store.db().leases["c"].start_ms;
    assert!(stored.iter().all(|(ts, r)| (r == "a") == (*ts < t)));
    assert!(
        max_gap(&stored) <= SCRAPE + 2_500,
        "gap {}",
        max_gap(&stored)
    );
}

#[test]
fn buffer_overflow_widens_the_gap_and_is_counted() {
    // Room for a handful of entries only.
    let sim = Sim::new(1, 2_000);
    sim.run(30, &[("a", 0), ("b", 400)]);
    sim.run(45, &[("b", 400)]);
    assert_eq!(sim.leader("c"), "b");
    let stored = sim.stored("c", "up");
    assert!(
        max_gap(&stored) > 10 * SCRAPE,
        "with no buffer the gap is the detection time: {}",
        max_gap(&stored)
    );
    let text = sim.metrics.render();
    assert!(text.contains("reason=\"buffer_overflow\""), "{text}");
}

#[test]
fn two_instances_racing_agree_on_one_leader() {
    let sim = Sim::new(2, 1 << 20);
    // a reaches both instances; b only instance 0, c only instance 1.
    for _ in 0..20 {
        let now = sim.now();
        sim.send(0, "c", "a", now);
        sim.send(1, "c", "a", now + 1);
        sim.send(0, "c", "b", now + 300);
        sim.send(1, "c", "cc", now + 600);
        sim.advance(SCRAPE);
    }
    for _ in 0..45 {
        let now = sim.now();
        sim.send(0, "c", "b", now + 300);
        sim.send(1, "c", "cc", now + 600);
        sim.advance(SCRAPE);
        if now % TICK < SCRAPE {
            // Both instances decide in the same round, each with its own candidate.
            sim.tick(0);
            sim.tick(1);
        }
    }
    let leader = sim.leader("c");
    assert!(leader == "b" || leader == "cc", "{leader}");
    sim.tick(0);
    sim.tick(1);
    assert_eq!(sim.instances[0].leader_of("c"), Some(leader.clone()));
    assert_eq!(sim.instances[1].leader_of("c"), Some(leader.clone()));
    let stored = sim.stored("c", "up");
    let t = sim.store.db().leases["c"].start_ms;
    assert!(
        stored
            .iter()
            .all(|(ts, r)| if *ts < t { r == "a" } else { *r == leader }),
        "{stored:?}"
    );
}

#[test]
fn a_stale_view_never_loses_the_new_leaders_data() {
    let sim = Sim::new(2, 1 << 20);
    sim.run(20, &[("a", 0), ("b", 400)]);
    // a dies; only instance 0 ticks, so instance 1 keeps its old view of the lease.
    for _ in 0..45 {
        let now = sim.now();
        sim.send(0, "c", "b", now + 400);
        sim.advance(SCRAPE);
        if now % TICK < SCRAPE {
            sim.tick(0);
        }
    }
    assert_eq!(sim.leader("c"), "b");
    assert_eq!(
        sim.instances[1].leader_of("c"),
        Some("a".into()),
        "instance 1 has not heard"
    );
    // b's next request lands on instance 1: it re-reads the lease instead of dropping.
    let now = sim.now();
    assert!(
        sim.send(1, "c", "b", now + 400),
        "stored through the stale instance"
    );
    assert_eq!(sim.instances[1].leader_of("c"), Some("b".into()));
}

#[test]
fn series_without_ha_labels_or_with_one_of_them_are_ordinary_data() {
    let sim = Sim::new(1, 1 << 20);
    let batch = validate(
        proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: vec![
                    proto::Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    proto::Label {
                        name: "cluster".into(),
                        value: "c".into(),
                    },
                ],
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: sim.now(),
                }],
                ..Default::default()
            }],
            metadata: vec![],
        },
        Limits::new(1 << 20, i64::MAX),
        sim.now(),
    )
    .expect("valid");
    let routed = sim.instances[0].route(batch).expect("half labelled");
    assert_eq!(routed.plain.series.len(), 1, "stored as it is");
    assert!(routed.fenced.is_empty() && routed.not_stored == 0);
    assert_eq!(sim.metrics.ha_samples_unpaired.get(&["replica"]), 1);
    let plain = validate(
        proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                labels: vec![proto::Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![proto::Sample {
                    value: 1.0,
                    timestamp: sim.now(),
                }],
                ..Default::default()
            }],
            metadata: vec![],
        },
        Limits::new(1 << 20, i64::MAX),
        sim.now(),
    )
    .expect("valid");
    let routed = sim.instances[0].route(plain).expect("plain");
    assert_eq!(routed.plain.series.len(), 1);
    assert!(routed.fenced.is_empty());
}

#[test]
fn a_request_mixing_clusters_and_replicas_is_routed_per_series() {
    let sim = Sim::new(1, 1 << 20);
    let now = sim.now();
    sim.send(0, "x", "x0", now);
    sim.send(0, "y", "y1", now);
    // One request carrying both clusters' replicas: each series goes its own way.
    let request = proto::WriteRequest {
        timeseries: [("x", "x0"), ("x", "x1"), ("y", "y0"), ("y", "y1")]
            .iter()
            .map(|(c, r)| ha_series("up", c, r, now + 1))
            .collect(),
        metadata: vec![],
    };
    let batch = validate(request, Limits::new(1 << 20, i64::MAX), now).expect("valid");
    let routed = sim.instances[0].route(batch).expect("route");
    let leaders: BTreeSet<(String, String)> = routed
        .fenced
        .iter()
        .map(|g| (g.cluster.clone(), g.replica.clone()))
        .collect();
    assert_eq!(
        leaders,
        [
            ("x".to_string(), "x0".to_string()),
            ("y".to_string(), "y1".to_string())
        ]
        .into()
    );
    assert_eq!(routed.not_stored, 2);
    assert!(routed
        .fenced
        .iter()
        .flat_map(|g| &g.series)
        .all(|s| s.labels.get("__replica__").is_none()));
}

#[test]
fn buffered_samples_survive_a_failed_request_that_learned_of_the_failover() {
    let sim = Sim::new(2, 1 << 20);
    sim.run(20, &[("a", 0), ("b", 400)]);
    // a dies; b's scrapes alternate between the instances, only instance 0 ticks. Stop right
    // after the tick that hands over: instance 1 still holds its half of b's samples in its
    // buffer and has not heard.
    for k in 0..60 {
        let now = sim.now();
        sim.send(k % 2, "c", "b", now + 400);
        sim.advance(SCRAPE);
        if now % TICK < SCRAPE {
            sim.tick(0);
            if sim.leader("c") == "b" {
                break;
            }
        }
    }
    assert_eq!(sim.leader("c"), "b");
    assert_eq!(sim.instances[1].leader_of("c"), Some("a".into()));
    sim.advance(2 * SCRAPE);
    let before = sim.stored("c", "up").len();
    // Instance 1 learns of the change while routing a request that then fails (a new
    // cluster's lease cannot be created): the buffered samples it took must not be lost.
    sim.store.fail_next_create.store(true, Ordering::SeqCst);
    let now = sim.now();
    let request = proto::WriteRequest {
        timeseries: [("c", "b"), ("zz", "z0")]
            .iter()
            .map(|(c, r)| ha_series("up", c, r, now + 400))
            .collect(),
        metadata: vec![],
    };
    let batch = validate(request, Limits::new(1 << 20, i64::MAX), now).expect("valid");
    assert!(
        sim.instances[1].route(batch).is_err(),
        "the injected failure surfaces (503)"
    );
    assert_eq!(
        sim.stored("c", "up").len(),
        before,
        "nothing stored by the failed request"
    );
    // The next election round of instance 1 hands the buffered samples out.
    sim.tick(1);
    let after = sim.stored("c", "up").len();
    assert!(
        after > before,
        "buffered samples stored late, not lost: {before} -> {after}"
    );
}
