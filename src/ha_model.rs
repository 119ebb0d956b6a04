//! Not used by the server: an in-memory model of the lease functions of
//! migrations/0002_ha.sql and 0006 (`ha_get_or_create`, the lease view, `ha_change_leader`,
//! the lease history) behind the [`LeaseStore`] trait, with injectable failures, so the
//! election can be driven as pure logic with a manual clock: by `ha_tests` and by the HA
//! fuzz target (fuzz/src/lib.rs). One model for both, so a change to the SQL has one place
//! to follow it here.

use crate::clock::Clock;
use crate::db_error::StoreError;
use crate::ha::{Lease, LeaseState, LeaseStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// A lease as the history keeps it: (cluster, term, leader, start, end).
pub type HistoryRow = (String, i64, String, i64, Option<i64>);

/// The tables the model stands for, and what a simulated writer stored.
#[derive(Default)]
pub struct ModelDb {
    pub leases: HashMap<String, Lease>,
    pub history: Vec<HistoryRow>,
    /// (cluster, writer) -> (term, newest committed sample, last commit): what the writers'
    /// commits record for the lease view's silence and supersession.
    pub progress: HashMap<(String, usize), (i64, i64, i64)>,
    /// (cluster, series labels json, time) -> the replica whose sample a simulated writer
    /// stored there.
    pub stored: BTreeMap<(String, String, i64), String>,
}

/// A handle on a shared [`ModelDb`]: clone it for each simulated instance.
#[derive(Clone)]
pub struct ModelStore {
    pub db: Arc<Mutex<ModelDb>>,
    pub clock: Arc<dyn Clock>,
    /// Store calls still to fail, like database hiccups.
    pub failures: Arc<AtomicU32>,
    /// Makes the next `get_or_create` fail.
    pub fail_next_create: Arc<AtomicBool>,
}

impl ModelStore {
    pub fn new(clock: Arc<dyn Clock>) -> ModelStore {
        ModelStore {
            db: Arc::default(),
            clock,
            failures: Arc::default(),
            fail_next_create: Arc::default(),
        }
    }

    /// The shared tables (a panic elsewhere does not make them unreadable).
    pub fn db(&self) -> MutexGuard<'_, ModelDb> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hiccup(&self) -> Result<(), StoreError> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match failing {
            Ok(_) => Err(StoreError::internal("injected failure")),
            Err(_) => Ok(()),
        }
    }
}

impl LeaseStore for ModelStore {
    fn get_or_create(&mut self, cluster: &str, replica: &str) -> Result<Lease, StoreError> {
        if self.fail_next_create.swap(false, Ordering::SeqCst) {
            return Err(StoreError::internal("injected failure"));
        }
        self.hiccup()?;
        let now = self.clock.now_ms();
        let mut db = self.db();
        if !db.leases.contains_key(cluster) {
            let lease = Lease {
                cluster: cluster.into(),
                leader: replica.into(),
                term: 1,
                start_ms: 0,
                leader_since_ms: now,
                previous_leader: None,
            };
            db.leases.insert(cluster.into(), lease);
            db.history
                .push((cluster.into(), 1, replica.into(), 0, None));
        }
        db.leases
            .get(cluster)
            .cloned()
            .ok_or_else(|| StoreError::internal("lease vanished"))
    }

    fn fetch(&mut self, cluster: &str) -> Result<Option<LeaseState>, StoreError> {
        self.hiccup()?;
        let now = self.clock.now_ms();
        let db = self.db();
        Ok(db.leases.get(cluster).map(|l| {
            let of_term = || {
                db.progress
                    .iter()
                    .filter(|((c, _), (t, _, _))| c == cluster && *t == l.term)
            };
            let last = of_term().map(|(_, (_, _, w))| *w).max();
            let newest = of_term().map(|(_, (_, m, _))| *m).max();
            LeaseState {
                lease: l.clone(),
                silence_ms: now - last.unwrap_or(l.leader_since_ms).max(l.leader_since_ms),
                superseded_before_ms: newest.map(|m| (m + 1).min(now)),
            }
        }))
    }

    fn change_leader(
        &mut self,
        cluster: &str,
        expected: &str,
        new: &str,
        min_silence_ms: Option<i64>,
        _reason: &str,
    ) -> Result<Lease, StoreError> {
        self.hiccup()?;
        let now = self.clock.now_ms();
        let mut db = self.db();
        let Some(l) = db.leases.get(cluster).cloned() else {
            return Err(StoreError::internal("no such cluster"));
        };
        if l.leader != expected || l.leader == new {
            return Ok(l);
        }
        let mine = db
            .progress
            .iter()
            .filter(|((c, _), (t, _, _))| c == cluster && *t == l.term);
        let newest = mine.clone().map(|(_, (_, m, _))| *m).max();
        let last = mine
            .map(|(_, (_, _, w))| *w)
            .max()
            .unwrap_or(l.leader_since_ms)
            .max(l.leader_since_ms);
        if min_silence_ms.is_some_and(|s| last > now - s) {
            return Ok(l);
        }
        // The new lease starts after the newest sample committed under the old one
        // (ha_change_leader's hand-over time T), never before the old lease's start.
        let t = newest.map_or(l.start_ms, |n| (n + 1).max(l.start_ms));
        for h in db
            .history
            .iter_mut()
            .filter(|h| h.0 == cluster && h.1 == l.term)
        {
            h.4 = Some(t);
        }
        db.history
            .push((cluster.into(), l.term + 1, new.into(), t, None));
        let lease = Lease {
            cluster: cluster.into(),
            leader: new.into(),
            term: l.term + 1,
            start_ms: t,
            leader_since_ms: now,
            previous_leader: Some(l.leader.clone()),
        };
        db.leases.insert(cluster.into(), lease.clone());
        db.progress.retain(|(c, _), _| c != cluster);
        Ok(lease)
    }

    fn past_leases(&mut self, cluster: &str, replica: &str) -> Result<Vec<(i64, i64)>, StoreError> {
        self.hiccup()?;
        let db = self.db();
        Ok(db
            .history
            .iter()
            .filter(|h| h.0 == cluster && h.2 == replica)
            .filter_map(|h| h.4.map(|end| (h.3, end)))
            .collect())
    }
}
