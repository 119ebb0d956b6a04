//! Legacy leader election through a PostgreSQL advisory lock (deprecated; prefer
//! `--high-availability`). Each promgres is paired with one Prometheus; of a group of promgres
//! sharing `--leader-election-pg-advisory-lock-id`, only the lock holder stores data.
//!
//! The lock is held by a session of its own (outside the writer pool). The election thread
//! ticks every `--leader-election-interval` (10 s): a leader whose Prometheus has sent nothing
//! for longer than `--leader-election-pg-advisory-lock-prometheus-timeout` resigns; a follower
//! whose Prometheus is sending tries to take the lock. Every insert transaction re-checks, in
//! `pg_locks`, that the lock session still holds the lock (the fence), so an instance whose
//! session died (database restart, network cut, idle timeout) stops writing at once.

use crate::clock::Clock;
use crate::db_error::StoreError;
use crate::fence::LockFence;
use crate::metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvisoryConfig {
    pub lock_id: i64,
    pub prometheus_timeout_ms: i64,
    pub interval_ms: i64,
}

/// The session that holds the lock: PostgreSQL in production, a fake in tests.
pub trait LockSession: Send {
    /// Tries to take the lock; on success returns the tenure this session now holds (its
    /// current one if it held the lock already).
    fn try_lock(&mut self, key: i64) -> Result<Option<i64>, StoreError>;
    /// Gives the lock up, however often the session took it.
    fn unlock(&mut self, key: i64) -> Result<(), StoreError>;
    /// Whether the session (and so its lock) is still alive.
    fn alive(&mut self) -> bool;
    /// Keeps an open session from idling past PostgreSQL's `idle_session_timeout`, which
    /// otherwise ends it (the bound that frees the lock of a frozen holder).
    fn keep_alive(&mut self);
}

pub struct AdvisoryElection {
    config: AdvisoryConfig,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    session: Mutex<Box<dyn LockSession>>,
    leader: AtomicBool,
    tenure: AtomicI64,
    /// When the paired Prometheus last sent a write request (receiver clock, ms; 0 = never).
    last_write_ms: AtomicI64,
    /// When a follower last tried the lock from a request (ms).
    last_attempt_ms: AtomicI64,
}

/// A follower whose Prometheus is sending tries the lock from its requests at most this often,
/// so a lock given up between ticks is taken within a second, not a tick.
const ATTEMPT_EVERY_MS: i64 = 1000;

impl AdvisoryElection {
    pub fn new(
        config: AdvisoryConfig,
        session: Box<dyn LockSession>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.advisory_leader.set(0);
        AdvisoryElection {
            config,
            clock,
            metrics,
            session: Mutex::new(session),
            leader: AtomicBool::new(false),
            tenure: AtomicI64::new(0),
            last_write_ms: AtomicI64::new(0),
            last_attempt_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    pub fn config(&self) -> &AdvisoryConfig {
        &self.config
    }

    /// Notes that the paired Prometheus sent a request; returns the fence to store under, or
    /// None when this instance is a follower (the request is then answered 202, not stored).
    pub fn on_write(&self) -> Option<LockFence> {
        let now = self.clock.now_ms();
        self.last_write_ms.store(now, Ordering::SeqCst);
        if !self.is_leader()
            && now - self.last_attempt_ms.load(Ordering::SeqCst) >= ATTEMPT_EVERY_MS
        {
            self.last_attempt_ms.store(now, Ordering::SeqCst);
            let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            self.try_take(&mut **session);
        }
        self.fence()
    }

    /// Tries the lock (the caller holds the session); becomes leader on success.
    fn try_take(&self, session: &mut dyn LockSession) {
        if self.is_leader() {
            return;
        }
        let key = self.config.lock_id;
        match session.try_lock(key) {
            Ok(Some(tenure)) => {
                self.tenure.store(tenure, Ordering::SeqCst);
                self.leader.store(true, Ordering::SeqCst);
                self.metrics.advisory_acquisitions.add(1);
                self.metrics.advisory_leader.set(1);
                log::info!(
                    "advisory lock {key}: acquired (tenure {tenure}); this instance now stores data"
                );
            }
            Ok(None) => {}
            Err(e) => log::warn!("advisory lock {key}: cannot try the lock: {e}"),
        }
    }

    pub fn fence(&self) -> Option<LockFence> {
        if !self.leader.load(Ordering::SeqCst) {
            return None;
        }
        Some(LockFence {
            key: self.config.lock_id,
            tenure: self.tenure.load(Ordering::SeqCst),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// A writer found the lock gone at commit: stop writing at once (the next tick may take
    /// the lock again). A fence of an earlier tenure says nothing about the current one and
    /// is ignored: the current tenure's jobs are checked on their own.
    pub fn on_fence_failed(&self, fence: LockFence) {
        if self.tenure.load(Ordering::SeqCst) == fence.tenure
            && self.leader.swap(false, Ordering::SeqCst)
        {
            log::warn!(
                "advisory lock {} lost (its session is gone): now a follower",
                fence.key
            );
            self.metrics.advisory_losses.add(1);
            self.metrics.advisory_leader.set(0);
        }
    }

    fn silence_ms(&self, now: i64) -> Option<i64> {
        match self.last_write_ms.load(Ordering::SeqCst) {
            0 => None,
            last => Some(now - last),
        }
    }

    /// Pings the lock session so PostgreSQL does not end it as idle.
    pub fn keep_alive(&self) {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keep_alive();
    }

    /// One election round.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let silence = self.silence_ms(now);
        if let Some(s) = silence {
            self.metrics.advisory_prometheus_silence_ms.set(s);
        }
        let sending = silence.is_some_and(|s| s <= self.config.prometheus_timeout_ms);
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.config.lock_id;
        if self.leader.load(Ordering::SeqCst) {
            if !session.alive() {
                if self.leader.swap(false, Ordering::SeqCst) {
                    log::warn!("advisory lock {key}: lock session died; now a follower");
                    self.metrics.advisory_losses.add(1);
                    self.metrics.advisory_leader.set(0);
                }
            } else if !sending {
                // Resign first in memory, so no new request is stored, then in PostgreSQL.
                self.leader.store(false, Ordering::SeqCst);
                self.metrics.advisory_leader.set(0);
                self.metrics.advisory_resignations.add(1);
                log::info!("advisory lock {key}: paired Prometheus silent; resigning");
                if let Err(e) = session.unlock(key) {
                    log::warn!(
                        "advisory lock {key}: unlock failed ({e}); the lock goes with the session"
                    );
                }
            }
        }
        if sending {
            self.try_take(&mut **session);
        }
    }
}

/// The lock session in PostgreSQL.
pub struct PgLockSession {
    config: crate::pg_tls::DbConfig,
    client: Option<postgres::Client>,
}

impl PgLockSession {
    pub fn new(
        db: &impl crate::pg_tls::ToDbConfig,
        bounds: &crate::pg_session::SessionBounds,
    ) -> Self {
        let config = crate::pg_session::config(db, crate::pg_session::Kind::Lock, bounds);
        PgLockSession {
            config,
            client: None,
        }
    }
}

impl LockSession for PgLockSession {
    fn try_lock(&mut self, key: i64) -> Result<Option<i64>, StoreError> {
        // A session found dead (the server restarted or ended it) took its lock with it:
        // start a new one and try once more at once.
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                self.client = Some(crate::store::connect(&self.config)?);
            }
            let Some(client) = self.client.as_mut() else {
                return Err(StoreError::internal("no lock session"));
            };
            let result = crate::store::try_advisory_lock(client, key);
            if result.as_ref().is_err_and(|e| e.connection_lost) {
                self.client = None;
                if attempt < 2 {
                    continue;
                }
            }
            return result;
        }
    }

    fn unlock(&mut self, _key: i64) -> Result<(), StoreError> {
        match self.client.as_mut() {
            Some(client) => crate::store::advisory_unlock(client),
            None => Ok(()),
        }
    }

    fn keep_alive(&mut self) {
        if let Some(client) = self.client.as_mut() {
            if client.simple_query("SELECT 1").is_err() {
                self.client = None;
            }
        }
    }

    fn alive(&mut self) -> bool {
        let alive = self
            .client
            .as_mut()
            .is_some_and(|c| c.simple_query("SELECT 1").is_ok());
        if !alive {
            self.client = None;
        }
        alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ManualClock(AtomicI64);
    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// Sessions of several instances on one fake lock table.
    #[derive(Clone)]
    /// The lock table: the holding session's pid and its tenure; the last tenure given out.
    #[derive(Default)]
    struct Table {
        holder: Option<(i32, i64)>,
        tenures: i64,
    }

    #[derive(Clone)]
    struct FakeSession {
        table: Arc<Mutex<Table>>,
        pid: i32,
        dead: Arc<AtomicBool>,
    }

    impl LockSession for FakeSession {
        fn try_lock(&mut self, _key: i64) -> Result<Option<i64>, StoreError> {
            if self.dead.load(Ordering::SeqCst) {
                // Reconnect: a new session.
                self.dead.store(false, Ordering::SeqCst);
                self.pid += 1000;
            }
            let mut t = self.table.lock().unwrap();
            match t.holder {
                None => {
                    t.tenures += 1;
                    t.holder = Some((self.pid, t.tenures));
                    Ok(Some(t.tenures))
                }
                Some((p, tenure)) if p == self.pid => Ok(Some(tenure)),
                Some(_) => Ok(None),
            }
        }
        fn unlock(&mut self, _key: i64) -> Result<(), StoreError> {
            let mut t = self.table.lock().unwrap();
            if t.holder.is_some_and(|(p, _)| p == self.pid) {
                t.holder = None;
            }
            Ok(())
        }
        fn alive(&mut self) -> bool {
            !self.dead.load(Ordering::SeqCst)
        }
        fn keep_alive(&mut self) {}
    }

    /// Two instances, each with the flag that kills its session.
    type Instances = Vec<(AdvisoryElection, Arc<AtomicBool>)>;

    fn pair() -> (Arc<ManualClock>, Arc<Mutex<Table>>, Instances) {
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000_000)));
        let holder = Arc::new(Mutex::new(Table::default()));
        let config = AdvisoryConfig {
            lock_id: 42,
            prometheus_timeout_ms: 30_000,
            interval_ms: 10_000,
        };
        let instances = (1..=2)
            .map(|pid| {
                let dead = Arc::new(AtomicBool::new(false));
                let session = FakeSession {
                    table: holder.clone(),
                    pid,
                    dead: dead.clone(),
                };
                let e = AdvisoryElection::new(
                    config,
                    Box::new(session),
                    clock.clone(),
                    Arc::new(Metrics::default()),
                );
                (e, dead)
            })
            .collect();
        (clock, holder, instances)
    }

    #[test]
    fn one_leader_resigns_when_its_prometheus_goes_quiet_and_the_other_takes_over() {
        let (clock, holder, inst) = pair();
        let (a, b) = (&inst[0].0, &inst[1].0);
        assert!(
            a.on_write().is_some(),
            "the first to send takes the free lock at once"
        );
        assert_eq!(b.on_write(), None, "the other stays follower");
        a.tick();
        b.tick();
        assert!(a.is_leader() && !b.is_leader());
        assert_eq!(a.on_write(), Some(LockFence { key: 42, tenure: 1 }));
        // a's Prometheus stops; b's keeps sending.
        for _ in 0..4 {
            clock.0.fetch_add(10_000, Ordering::SeqCst);
            b.on_write();
            a.tick();
            b.tick();
        }
        assert!(!a.is_leader() && b.is_leader());
        assert_eq!(
            holder.lock().unwrap().holder,
            Some((2, 2)),
            "b holds tenure 2"
        );
        assert_eq!(a.metrics.advisory_resignations.get(), 1);
    }

    #[test]
    fn a_dead_lock_session_makes_the_leader_stop_at_once() {
        let (_clock, holder, inst) = pair();
        let (a, dead) = (&inst[0].0, &inst[0].1);
        let fence = a.on_write().expect("leader");
        // The session is terminated; PostgreSQL releases the lock.
        dead.store(true, Ordering::SeqCst);
        holder.lock().unwrap().holder = None;
        // A writer's fence fails before the next tick: the instance stops writing.
        a.on_fence_failed(fence);
        assert!(!a.is_leader());
        // The next tick takes the lock again on a new session, in a new tenure.
        a.tick();
        assert!(a.is_leader());
        assert_eq!(a.fence().map(|f| f.tenure), Some(fence.tenure + 1));
    }

    #[test]
    fn a_stale_fence_failing_does_not_demote_the_current_tenure() {
        let (clock, holder, inst) = pair();
        let a = &inst[0].0;
        let old = a.on_write().expect("leader, tenure 1");
        // a resigns (its Prometheus went quiet) and wins again: tenure 2.
        clock.0.fetch_add(40_000, Ordering::SeqCst);
        a.tick();
        assert!(!a.is_leader());
        clock.0.fetch_add(2_000, Ordering::SeqCst);
        let current = a.on_write().expect("leader again");
        assert_eq!((old.tenure, current.tenure), (1, 2));
        // A job of tenure 1 still queued fails its fence: that says nothing of tenure 2.
        a.on_fence_failed(old);
        assert!(a.is_leader(), "a stale job must not demote a valid leader");
        assert_eq!(a.metrics.advisory_losses.get(), 0);
        // The current tenure's own failure does.
        holder.lock().unwrap().holder = None;
        a.on_fence_failed(current);
        assert!(!a.is_leader());
    }
}
