//! High availability: de-duplication of Prometheus HA pairs (`--high-availability`).
//!
//! The HA stage sits between `decode` and `queue`. For each series it decides, by the
//! cluster and replica labels, whether it is ordinary data, the current leader's data (stored,
//! fenced at commit), a past leader's backfill (stored), standby data (kept in the standby
//! buffer, answered 202) or data outside any lease of its replica (dropped, answered 202).
//!
//! Leases are in data time and live in PostgreSQL (see migrations/0002_ha.sql), reached
//! through the [`LeaseStore`] trait so the logic here runs against an in-memory store with an
//! injected [`Clock`] in tests. [`Election::tick`] is called every `--ha-election-interval` by
//! the single election thread: when the leader has committed nothing for
//! `--ha-failover-timeout` (database clock), the most advanced replica that has been sending
//! takes over at T = the old leader's newest committed sample + 1 ms, and its buffered samples
//! from T on are stored, so the data gap is about one scrape interval.

use crate::clock::Clock;
use crate::db_error::StoreError;
use crate::decode::{push_json_string, SeriesSamples, WriteBatch};
use crate::metrics::Metrics;
use crate::queue::FencedGroup;
use crate::standby::{Evicted, StandbyBuffer};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// A non-leader's request re-reads its cluster's lease from PostgreSQL when the local copy is
/// older than this, so a stale view delays a legitimate leader's data by at most this long
/// (it is buffered meanwhile, not lost).
const REFRESH_MS: i64 = 1000;

/// A cluster's current lease, as stored in `promgres.ha_leases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub cluster: String,
    pub leader: String,
    pub term: i64,
    /// Data time (ms) from which the leader owns the cluster's samples.
    pub start_ms: i64,
    /// Database wall clock (ms) when the leader got the lease.
    pub leader_since_ms: i64,
    pub previous_leader: Option<String>,
}

/// A cluster's lease as the election reads it each tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub lease: Lease,
    /// How long (ms, database clock) the leader has committed nothing.
    pub silence_ms: i64,
    /// Standby samples older than this (data time, ms) can never be stored: a hand-over time
    /// is at least the earlier of the leader's newest committed sample + 1 ms and the database
    /// clock now. None while the leader has committed nothing in its term.
    pub superseded_before_ms: Option<i64>,
}

/// Where leases live: PostgreSQL in production (`store::PgLeaseStore`), memory in tests.
pub trait LeaseStore: Send {
    /// The cluster's lease, created with `replica` as leader if the cluster is new.
    fn get_or_create(&mut self, cluster: &str, replica: &str) -> Result<Lease, StoreError>;
    /// The cluster's lease as a tick sees it.
    fn fetch(&mut self, cluster: &str) -> Result<Option<LeaseState>, StoreError>;
    /// Compare-and-set hand-over; returns the lease as it is afterwards (changed or not).
    fn change_leader(
        &mut self,
        cluster: &str,
        expected: &str,
        new: &str,
        min_silence_ms: Option<i64>,
        reason: &str,
    ) -> Result<Lease, StoreError>;
    /// Closed leases `[start, end)` (ms) the replica held in the past.
    fn past_leases(&mut self, cluster: &str, replica: &str) -> Result<Vec<(i64, i64)>, StoreError>;
}

#[derive(Debug, Clone)]
pub struct HaConfig {
    pub cluster_label: String,
    pub replica_label: String,
    pub failover_timeout_ms: i64,
    pub interval_ms: i64,
    pub buffer_bytes: usize,
}

impl HaConfig {
    /// The longest a standby sample is kept after it arrived. Samples the leader has
    /// overtaken are dropped at every tick (`LeaseState::superseded_before_ms`); this only
    /// bounds those it never overtakes (a leader whose clock is far behind). It must outlast a
    /// quiet spell of every replica: a standby's last samples before it may be needed at a
    /// hand-over decided after it.
    fn buffer_window_ms(&self) -> i64 {
        (10 * self.failover_timeout_ms).max(self.failover_timeout_ms + 2 * self.interval_ms)
    }
}

/// Why the HA stage refused a request.
#[derive(Debug)]
pub enum HaError {
    /// The lease could not be read or changed (ours: retry).
    Store(StoreError),
}

impl std::fmt::Display for HaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaError::Store(e) => write!(f, "cannot check the HA lease: {e}"),
        }
    }
}

impl From<StoreError> for HaError {
    fn from(e: StoreError) -> Self {
        HaError::Store(e)
    }
}

/// What the HA stage made of a request.
#[derive(Debug, Default)]
pub struct Routed {
    /// Ordinary series, backfill into the replica's past leases, and metadata.
    pub plain: WriteBatch,
    /// The current leader's series, to be fenced at commit.
    pub fenced: Vec<FencedGroup>,
    /// Samples buffered as standby or dropped: the request is answered 202.
    pub not_stored: usize,
    /// Buffered samples of a replica that just became leader, to be stored now.
    pub flushes: Vec<FencedGroup>,
}

#[derive(Debug, Clone, Default)]
struct ReplicaSeen {
    last_write_ms: i64,
    max_time_ms: i64,
}

struct ClusterView {
    lease: Lease,
    refreshed_ms: i64,
    replicas: BTreeMap<String, ReplicaSeen>,
    /// Closed past leases per replica, valid while `lease.term` is unchanged.
    past: HashMap<String, Vec<(i64, i64)>>,
    /// Data-time gap (ms) of the last failover this instance saw filled.
    last_gap_ms: Option<i64>,
    /// A leader change was seen and the new leader's first stored sample not yet.
    gap_pending: bool,
}

struct Inner {
    store: Box<dyn LeaseStore>,
    views: HashMap<String, ClusterView>,
    buffer: StandbyBuffer,
    /// Buffered samples of a new leader, taken out of the buffer by a call that then failed:
    /// handed out by the next call, so they are stored late rather than lost.
    pending: Vec<FencedGroup>,
}

/// How samples reach the HA stage, and when (receiver clock, ms).
#[derive(Debug, Clone, Copy)]
enum Arrival {
    /// In a request the replica just sent.
    Sent(i64),
    /// Handed back by a writer: fenced out at commit, routed again.
    Rerouted(i64),
}

impl Arrival {
    fn at(self) -> i64 {
        match self {
            Arrival::Sent(t) | Arrival::Rerouted(t) => t,
        }
    }
}

/// The HA stage and the election it runs. Shared by the HTTP handlers and the election thread.
pub struct Election {
    config: HaConfig,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

fn sample_bounds(series: &[SeriesSamples]) -> Option<(i64, i64)> {
    let mut bounds: Option<(i64, i64)> = None;
    for t in series.iter().flat_map(|s| s.timestamps()) {
        bounds = Some(match bounds {
            None => (t, t),
            Some((lo, hi)) => (lo.min(t), hi.max(t)),
        });
    }
    bounds
}

/// Float samples, histograms and exemplars of `series`: what HA counts.
fn count_points(series: &[SeriesSamples]) -> usize {
    series.iter().map(SeriesSamples::points).sum()
}

impl Election {
    pub fn new(
        config: HaConfig,
        store: Box<dyn LeaseStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Election {
            inner: Mutex::new(Inner {
                store,
                views: HashMap::new(),
                buffer: StandbyBuffer::new(config.buffer_bytes),
                pending: Vec::new(),
            }),
            config,
            clock,
            metrics,
        }
    }

    pub fn config(&self) -> &HaConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sorts a request's series into ordinary, leader, backfill, standby and dropped.
    pub fn route(&self, batch: WriteBatch) -> Result<Routed, HaError> {
        let now = self.clock.now_ms();
        let mut routed = Routed {
            plain: WriteBatch {
                series: Vec::new(),
                metadata: batch.metadata,
            },
            ..Routed::default()
        };
        let mut groups: BTreeMap<(String, String), Vec<SeriesSamples>> = BTreeMap::new();
        for s in batch.series {
            let cluster = s.labels.get(&self.config.cluster_label);
            let replica = s.labels.get(&self.config.replica_label);
            match (cluster, replica) {
                (None, None) => routed.plain.series.push(s),
                (Some(c), Some(r)) => {
                    let key = (c.to_string(), r.to_string());
                    let labels = s.labels.without(&self.config.replica_label);
                    groups
                        .entry(key)
                        .or_default()
                        .push(SeriesSamples { labels, ..s });
                }
                // One HA label without the other: not an HA pair's series, so ordinary data,
                // stored as it is (as Mimir does), and counted.
                (Some(_), None) | (None, Some(_)) => {
                    let missing = if cluster.is_none() {
                        "cluster"
                    } else {
                        "replica"
                    };
                    self.metrics
                        .ha_samples_unpaired
                        .add(&[missing], s.points() as u64);
                    routed.plain.series.push(s);
                }
            }
        }
        let mut inner = self.lock();
        let mut result = Ok(());
        for ((cluster, replica), series) in groups {
            result = self.route_group(
                &mut inner,
                (&cluster, &replica),
                series,
                Arrival::Sent(now),
                &mut routed,
            );
            if result.is_err() {
                break;
            }
        }
        self.metrics
            .ha_buffer_bytes
            .set(inner.buffer.bytes() as i64);
        Self::settle(&mut inner, result, routed)
    }

    /// Hands out the flushes of a call, and those of earlier failed calls; when this call
    /// failed, keeps its flushes for the next one.
    fn settle(
        inner: &mut Inner,
        result: Result<(), HaError>,
        mut routed: Routed,
    ) -> Result<Routed, HaError> {
        match result {
            Ok(()) => {
                routed.flushes.append(&mut inner.pending);
                Ok(routed)
            }
            Err(e) => {
                inner.pending.append(&mut routed.flushes);
                Err(e)
            }
        }
    }

    /// Routes series whose fenced commit failed (the leader changed meanwhile) again, with the
    /// lease re-read from the database.
    pub fn reroute_fenced_out(&self, group: FencedGroup) -> Result<Routed, HaError> {
        let now = self.clock.now_ms();
        let mut routed = Routed::default();
        let mut inner = self.lock();
        if let Err(e) = self.refresh(&mut inner, &group.cluster, now, &mut routed.flushes) {
            return Self::settle(&mut inner, Err(e), routed);
        }
        let result = self.route_group(
            &mut inner,
            (&group.cluster, &group.replica),
            group.series,
            Arrival::Rerouted(now),
            &mut routed,
        );
        Self::settle(&mut inner, result, routed)
    }

    fn route_group(
        &self,
        inner: &mut Inner,
        (cluster, replica): (&str, &str),
        series: Vec<SeriesSamples>,
        arrival: Arrival,
        routed: &mut Routed,
    ) -> Result<(), HaError> {
        let now = arrival.at();
        let Some((_, max_ts)) = sample_bounds(&series) else {
            return Ok(());
        };
        if !inner.views.contains_key(cluster) {
            let lease = inner.store.get_or_create(cluster, replica)?;
            self.adopt(inner, lease, now, &mut routed.flushes);
        }
        let needs_refresh = inner
            .views
            .get(cluster)
            .is_some_and(|v| v.lease.leader != replica && now - v.refreshed_ms >= REFRESH_MS);
        if needs_refresh {
            // Re-check the database before treating this replica as a standby: another
            // instance may have made it leader.
            self.refresh(inner, cluster, now, &mut routed.flushes)?;
        }
        let Some(view) = inner.views.get_mut(cluster) else {
            return Ok(());
        };
        // Only a request from the replica shows it is sending: re-routed samples of a replica
        // that lost the lease (perhaps dead) must not make it a failover candidate.
        if let Arrival::Sent(_) = arrival {
            let seen = view.replicas.entry(replica.to_string()).or_default();
            seen.last_write_ms = now;
            seen.max_time_ms = seen.max_time_ms.max(max_ts);
        }
        let lease = view.lease.clone();
        let is_leader = lease.leader == replica;

        let needs_past = series
            .iter()
            .any(|s| s.timestamps().any(|t| t < lease.start_ms));
        let past = if needs_past {
            match view.past.get(replica) {
                Some(p) => p.clone(),
                None => {
                    let p = inner.store.past_leases(cluster, replica)?;
                    if let Some(v) = inner.views.get_mut(cluster) {
                        v.past.insert(replica.to_string(), p.clone());
                    }
                    p
                }
            }
        } else {
            Vec::new()
        };

        let (mut current, mut standby, mut backfill) = (Vec::new(), Vec::new(), Vec::new());
        let mut outside = 0usize;
        for mut s in series {
            let now_part = s.take_where(|t| t >= lease.start_ms);
            let past_part = s.take_where(|t| past.iter().any(|(a, b)| t >= *a && t < *b));
            outside += s.points();
            if !now_part.is_empty() {
                if is_leader {
                    current.push(now_part);
                } else {
                    standby.push(now_part);
                }
            }
            if !past_part.is_empty() {
                backfill.push(past_part);
            }
        }

        let m = &self.metrics;
        if outside > 0 {
            m.ha_samples_dropped
                .add(&[cluster, replica, "outside_lease"], outside as u64);
            routed.not_stored += outside;
        }
        if !backfill.is_empty() {
            m.ha_samples_accepted.add(
                &[cluster, replica, "backfill"],
                count_points(&backfill) as u64,
            );
            routed.plain.series.extend(backfill);
        }
        if !current.is_empty() {
            if let Some(view) = inner.views.get_mut(cluster) {
                if let (true, Some((first, _))) = (view.gap_pending, sample_bounds(&current)) {
                    // The old leader's last sample is at T - 1 ms.
                    let gap = first - (view.lease.start_ms - 1);
                    view.gap_pending = false;
                    view.last_gap_ms = Some(gap);
                    m.ha_last_failover_gap.set(&[cluster], gap as f64 / 1000.0);
                }
            }
            m.ha_samples_accepted
                .add(&[cluster, replica, "leader"], count_points(&current) as u64);
            routed.fenced.push(FencedGroup {
                cluster: cluster.to_string(),
                replica: replica.to_string(),
                series: current,
            });
        }
        if !standby.is_empty() {
            routed.not_stored += count_points(&standby);
            let evicted = inner.buffer.push(cluster, replica, now, standby);
            self.count_evicted(&evicted);
        }
        Ok(())
    }

    fn count_evicted(&self, evicted: &Evicted) {
        for (c, r, n) in &evicted.by_age {
            self.metrics
                .ha_samples_dropped
                .add(&[c, r, "not_leader"], *n as u64);
        }
        for (c, r, n) in &evicted.by_overflow {
            self.metrics
                .ha_samples_dropped
                .add(&[c, r, "buffer_overflow"], *n as u64);
        }
    }

    /// Re-reads one cluster's lease and adopts it.
    fn refresh(
        &self,
        inner: &mut Inner,
        cluster: &str,
        now: i64,
        flushes: &mut Vec<FencedGroup>,
    ) -> Result<(), HaError> {
        if let Some(state) = inner.store.fetch(cluster)? {
            self.adopt(inner, state.lease, now, flushes);
        }
        Ok(())
    }

    /// Takes a lease read from the database as the truth. When it names a new leader, the new
    /// leader's buffered samples from the hand-over time on are returned to be stored.
    fn adopt(&self, inner: &mut Inner, lease: Lease, now: i64, flushes: &mut Vec<FencedGroup>) {
        let cluster = lease.cluster.clone();
        let changed_from = match inner.views.get_mut(&cluster) {
            Some(view) => {
                view.refreshed_ms = now;
                if view.lease.term == lease.term {
                    view.lease = lease.clone();
                    return;
                }
                let old = std::mem::replace(&mut view.lease, lease.clone());
                view.past.clear();
                view.gap_pending = true;
                Some(old)
            }
            None => {
                inner.views.insert(
                    cluster.clone(),
                    ClusterView {
                        lease: lease.clone(),
                        refreshed_ms: now,
                        replicas: BTreeMap::new(),
                        past: HashMap::new(),
                        last_gap_ms: None,
                        gap_pending: false,
                    },
                );
                None
            }
        };
        let m = &self.metrics;
        if let Some(old) = &changed_from {
            log::info!(
                "HA cluster {:?}: leader changed from {:?} to {:?} at data time T={} ms (term {})",
                cluster,
                old.leader,
                lease.leader,
                lease.start_ms,
                lease.term
            );
            m.ha_leader_changes.add(&[&cluster], 1);
            m.ha_leader_info.set(&[&cluster, &old.leader], 0.0);
        }
        m.ha_leader_info.set(&[&cluster, &lease.leader], 1.0);
        let (series, discarded) = inner.buffer.take(&cluster, &lease.leader, lease.start_ms);
        if discarded > 0 {
            m.ha_samples_dropped
                .add(&[&cluster, &lease.leader, "not_leader"], discarded as u64);
        }
        if !series.is_empty() {
            let first = sample_bounds(&series).map(|(lo, _)| lo);
            if let (Some(view), Some(first), Some(_)) =
                (inner.views.get_mut(&cluster), first, &changed_from)
            {
                // The old leader's last sample is at T - 1 ms.
                let gap = first - (lease.start_ms - 1);
                view.last_gap_ms = Some(gap);
                view.gap_pending = false;
                m.ha_last_failover_gap.set(&[&cluster], gap as f64 / 1000.0);
            }
            m.ha_samples_accepted.add(
                &[&cluster, &lease.leader, "failover_buffer"],
                count_points(&series) as u64,
            );
            flushes.push(FencedGroup {
                cluster: cluster.clone(),
                replica: lease.leader.clone(),
                series,
            });
        }
        m.ha_buffer_bytes.set(inner.buffer.bytes() as i64);
    }

    /// One election round over every cluster this instance has seen: adopt leases changed
    /// elsewhere, hand over from leaders silent past the failover timeout, expire old standby
    /// samples. Returns buffered samples to store.
    pub fn tick(&self) -> Result<Vec<FencedGroup>, HaError> {
        let now = self.clock.now_ms();
        let mut flushes = Vec::new();
        let mut inner = self.lock();
        let clusters: Vec<String> = inner.views.keys().cloned().collect();
        let mut first_error = None;
        for cluster in clusters {
            if let Err(e) = self.tick_cluster(&mut inner, &cluster, now, &mut flushes) {
                log::warn!("HA election for cluster {cluster:?}: {e}");
                first_error.get_or_insert(e);
            }
        }
        let window = self.config.buffer_window_ms();
        let evicted = inner.buffer.evict_older_than(now - window);
        self.count_evicted(&evicted);
        self.metrics
            .ha_buffer_bytes
            .set(inner.buffer.bytes() as i64);
        flushes.append(&mut inner.pending);
        match first_error {
            Some(e) if flushes.is_empty() => Err(e),
            _ => Ok(flushes),
        }
    }

    fn tick_cluster(
        &self,
        inner: &mut Inner,
        cluster: &str,
        now: i64,
        flushes: &mut Vec<FencedGroup>,
    ) -> Result<(), HaError> {
        let Some(LeaseState {
            lease,
            silence_ms,
            superseded_before_ms,
        }) = inner.store.fetch(cluster)?
        else {
            return Ok(());
        };
        self.adopt(inner, lease.clone(), now, flushes);
        if let Some(before) = superseded_before_ms {
            let superseded = inner.buffer.evict_superseded(cluster, before);
            self.count_evicted(&superseded);
        }
        if silence_ms <= self.config.failover_timeout_ms {
            return Ok(());
        }
        let Some(view) = inner.views.get(cluster) else {
            return Ok(());
        };
        // The replica that has been sending (to this instance, within the timeout) and is
        // furthest ahead in data time.
        let candidate = view
            .replicas
            .iter()
            .filter(|(r, seen)| {
                **r != lease.leader && now - seen.last_write_ms <= self.config.failover_timeout_ms
            })
            .max_by_key(|(_, seen)| seen.max_time_ms)
            .map(|(r, _)| r.clone());
        let Some(candidate) = candidate else {
            return Ok(());
        };
        let new = inner.store.change_leader(
            cluster,
            &lease.leader,
            &candidate,
            Some(self.config.failover_timeout_ms),
            "failover: leader silent",
        )?;
        self.adopt(inner, new, now, flushes);
        Ok(())
    }

    /// Operator hand-over: gives `cluster`'s lease to `replica` at T = the current leader's
    /// newest committed sample + 1 ms. The replica must have been sending to this instance.
    pub fn hand_over(
        &self,
        cluster: &str,
        replica: &str,
    ) -> Result<(Lease, Vec<FencedGroup>), HandOverError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let mut flushes = Vec::new();
        let leader = {
            let view = inner
                .views
                .get(cluster)
                .ok_or(HandOverError::UnknownCluster)?;
            let active = view
                .replicas
                .get(replica)
                .is_some_and(|s| now - s.last_write_ms <= self.config.failover_timeout_ms);
            if !active {
                return Err(HandOverError::ReplicaNotSending);
            }
            view.lease.leader.clone()
        };
        let lease = inner
            .store
            .change_leader(cluster, &leader, replica, None, "operator hand-over")
            .map_err(HandOverError::Store)?;
        self.adopt(&mut inner, lease.clone(), now, &mut flushes);
        flushes.append(&mut inner.pending);
        Ok((lease, flushes))
    }

    /// The state of every cluster this instance has seen, as JSON for
    /// `GET /api/v1/ha/clusters`.
    pub fn state_json(&self) -> String {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let mut names: Vec<&String> = inner.views.keys().collect();
        names.sort();
        let mut out = String::from("{\"clusters\":[");
        for (i, name) in names.iter().enumerate() {
            let Some(v) = inner.views.get(*name) else {
                continue;
            };
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"cluster\":");
            push_json_string(&mut out, name);
            out.push_str(",\"leader\":");
            push_json_string(&mut out, &v.lease.leader);
            let _ = write!(
                out,
                ",\"term\":{},\"leader_since_ms\":{},\"handover_time_ms\":{},\"previous_leader\":",
                v.lease.term, v.lease.leader_since_ms, v.lease.start_ms
            );
            match &v.lease.previous_leader {
                Some(p) => push_json_string(&mut out, p),
                None => out.push_str("null"),
            }
            match v.last_gap_ms {
                Some(g) => {
                    let _ = write!(out, ",\"last_failover_gap_ms\":{g}");
                }
                None => out.push_str(",\"last_failover_gap_ms\":null"),
            }
            out.push_str(",\"replicas\":{");
            for (j, (r, seen)) in v.replicas.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                push_json_string(&mut out, r);
                let _ = write!(
                    out,
                    ":{{\"last_write_ms\":{},\"last_write_age_s\":{:.3},\"max_sample_time_ms\":{},\"buffered_samples\":{}}}",
                    seen.last_write_ms,
                    (now - seen.last_write_ms) as f64 / 1000.0,
                    seen.max_time_ms,
                    inner.buffer.held(name, r)
                );
            }
            out.push_str("}}");
        }
        out.push_str("]}");
        out
    }

    /// The leader this instance believes `cluster` has (for tests and the API).
    pub fn leader_of(&self, cluster: &str) -> Option<String> {
        self.lock()
            .views
            .get(cluster)
            .map(|v| v.lease.leader.clone())
    }

    /// What `state_json` shows, as data (for the `/ha` page): every cluster this instance has
    /// seen, sorted by name, its replicas sorted by name. Read-only.
    pub fn status(&self) -> HaStatus {
        let now_ms = self.clock.now_ms();
        let inner = self.lock();
        let mut clusters: Vec<ClusterStatus> = inner
            .views
            .iter()
            .map(|(name, v)| ClusterStatus {
                lease: v.lease.clone(),
                last_failover_gap_ms: v.last_gap_ms,
                replicas: v
                    .replicas
                    .iter()
                    .map(|(r, seen)| ReplicaStatus {
                        name: r.clone(),
                        last_write_ms: seen.last_write_ms,
                        max_sample_time_ms: seen.max_time_ms,
                        buffered_samples: inner.buffer.held(name, r),
                    })
                    .collect(),
            })
            .collect();
        clusters.sort_by(|a, b| a.lease.cluster.cmp(&b.lease.cluster));
        HaStatus { now_ms, clusters }
    }
}

/// A snapshot of the HA state of this instance ([`Election::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaStatus {
    /// This instance's clock (ms) when the snapshot was taken: the replicas' last writes are
    /// in it.
    pub now_ms: i64,
    pub clusters: Vec<ClusterStatus>,
}

/// One cluster as this instance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub lease: Lease,
    /// Data-time gap (ms) of the last failover this instance saw filled.
    pub last_failover_gap_ms: Option<i64>,
    pub replicas: Vec<ReplicaStatus>,
}

/// A replica that sent samples to this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub name: String,
    /// When its last request arrived (this instance's clock, ms).
    pub last_write_ms: i64,
    /// Its newest sample time (data time, ms).
    pub max_sample_time_ms: i64,
    /// Its samples held in this instance's standby buffer.
    pub buffered_samples: usize,
}

/// One lease, past or current, from `promgres.ha_lease_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub cluster: String,
    pub term: i64,
    pub leader: String,
    /// `[start_ms, end_ms)` in data time; `end_ms` is None while the lease is open.
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    /// Database wall clock (ms) when the lease began and ended.
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    /// Why it began: "first writer", "failover: leader silent", "operator hand-over".
    pub reason: String,
}

/// The newest `per_cluster` leases of every cluster, from `promgres.ha_lease_history`
/// (which keeps every lease), ordered by cluster, newest term first. Read-only: one SELECT,
/// fit for a read-only session (the `/ha` page runs it on a read pool connection, so a
/// page load never holds the election's lock while it waits for the database).
pub fn lease_history(
    client: &mut postgres::Client,
    per_cluster: i64,
) -> Result<Vec<LeaseRecord>, StoreError> {
    let rows = client.query(
        "SELECT cluster, term, leader,
                (extract(epoch FROM lease_start) * 1000)::bigint,
                (extract(epoch FROM lease_end) * 1000)::bigint,
                (extract(epoch FROM started_at) * 1000)::bigint,
                (extract(epoch FROM ended_at) * 1000)::bigint,
                reason
           FROM (SELECT h.*, row_number() OVER (PARTITION BY cluster ORDER BY term DESC) AS n
                   FROM promgres.ha_lease_history h) h
          WHERE n <= $1
          ORDER BY cluster, term DESC",
        &[&per_cluster],
    )?;
    rows.iter()
        .map(|r| {
            Ok(LeaseRecord {
                cluster: r.try_get(0)?,
                term: r.try_get(1)?,
                leader: r.try_get(2)?,
                start_ms: r.try_get(3)?,
                end_ms: r.try_get(4)?,
                started_at_ms: r.try_get(5)?,
                ended_at_ms: r.try_get(6)?,
                reason: r.try_get(7)?,
            })
        })
        .collect()
}

#[derive(Debug)]
pub enum HandOverError {
    UnknownCluster,
    ReplicaNotSending,
    Store(StoreError),
}

impl std::fmt::Display for HandOverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandOverError::UnknownCluster => write!(f, "this promgres has not seen that cluster"),
            HandOverError::ReplicaNotSending => write!(
                f,
                "that replica has not sent samples to this promgres within the failover timeout; hand the lease only to a replica that is sending"
            ),
            HandOverError::Store(e) => write!(f, "cannot change the lease: {e}"),
        }
    }
}

#[cfg(test)]
#[path = "ha_tests.rs"]
mod tests;
