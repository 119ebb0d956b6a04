//! Wiring: migrates the schema, starts the writer pool, the maintenance thread and the HTTP
//! handler threads, and stops them in order (stop accepting, drain the queue, commit, exit).
//! `main` and the integration tests both start promgres through [`Server::start`].

use crate::advisory::{AdvisoryElection, PgLockSession};
use crate::clock::DbClock;
use crate::config::Config;
use crate::engine;
use crate::ha::Election;
use crate::http::{self, HealthCheck, HttpState};
use crate::metrics::Metrics;
use crate::pg_session::{self, SessionBounds};
use crate::queue::{Acks, FencedGroup, Queue};
use crate::store::{self, StoreError};
use crate::writer::{self, Shared, WriterPool};
use postgres::Client;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the maintenance thread makes sure partitions exist ahead of need.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// A connection outside the writer pool, opened on first use and re-opened after it was lost:
/// the control connection (health checks, partitions ahead of need, the watchdog) and the
/// maintenance connection (retention).
pub struct Control {
    label: &'static str,
    config: crate::pg_tls::DbConfig,
    client: Mutex<Option<Client>>,
    metrics: Arc<Metrics>,
}

impl Control {
    fn new(
        db: &crate::pg_tls::DbConfig,
        kind: pg_session::Kind,
        label: &'static str,
        metrics: Arc<Metrics>,
        bounds: &SessionBounds,
    ) -> Self {
        Control {
            label,
            config: pg_session::config(db, kind, bounds),
            client: Mutex::new(None),
            metrics,
        }
    }

    /// Runs `f` on the connection, (re)connecting first when needed. A connection found dead
    /// by `f` (the database restarted since its last use, and only the next statement could
    /// tell) is replaced and `f` runs once more, so a caller such as /healthz sees the
    /// database as it is now, not the corpse of the last session.
    fn with_client<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> store::Result<T>,
    ) -> store::Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let mut attempt = 0;
        loop {
            attempt += 1;
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                *guard = None;
                let client = store::connect(&self.config);
                self.metrics
                    .db_connected
                    .set(&[self.label], if client.is_ok() { 1.0 } else { 0.0 });
                *guard = Some(client?);
            }
            let Some(client) = guard.as_mut() else {
                return Err(StoreError::internal("no connection"));
            };
            let result = f(client);
            match &result {
                Err(e) if e.connection_lost => {
                    *guard = None;
                    self.metrics.db_connected.set(&[self.label], 0.0);
                    if attempt < 2 {
                        continue;
                    }
                }
                _ => {}
            }
            return result;
        }
    }
}

impl HealthCheck for Control {
    fn check(&self) -> Result<(), String> {
        let version = self
            .with_client(store::schema_version)
            .map_err(|e| e.to_string())?;
        match version {
            // A newer schema means a newer promgres migrated during a rolling upgrade;
            // migrations keep the views and tables older versions use, so stay healthy.
            Some(v) if v >= store::SCHEMA_VERSION => Ok(()),
            Some(v) => Err(format!(
                "schema version {v}, this promgres needs {}",
                store::SCHEMA_VERSION
            )),
            None => Err("schema not migrated".to_string()),
        }
    }
}

/// A running promgres.
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    http_threads: Vec<JoinHandle<()>>,
    http_server: Option<Arc<tiny_http::Server>>,
    queue: Option<Queue>,
    writers: Option<WriterPool>,
    maintenance: Option<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
    election: Option<JoinHandle<()>>,
    retention: Option<Duration>,
    maintenance_db: Arc<Control>,
    db_clock: Arc<DbClock>,
    shared: Option<Arc<Shared>>,
    pub metrics: Arc<Metrics>,
    access: Arc<crate::auth::WebAccess>,
}

/// Applies migrations on a fresh connection with the default session bounds.
pub fn migrate(db: &impl crate::pg_tls::ToDbConfig) -> store::Result<usize> {
    migrate_with(db, &SessionBounds::default())
}

/// Applies migrations on a fresh connection (`promgres migrate`, and start-up).
pub fn migrate_with(
    db: &impl crate::pg_tls::ToDbConfig,
    bounds: &SessionBounds,
) -> store::Result<usize> {
    let mut client = store::connect(&pg_session::config(db, pg_session::Kind::Migrate, bounds))?;
    store::migrate(&mut client)
}

impl Server {
    /// Migrates, then starts serving. Fails when the database cannot be reached at start:
    /// better a clear start-up error than a server that answers 503 forever.
    pub fn start(config: &Config) -> Result<Server, String> {
        // Before the database: a wrong certificate or user file is a start-up error, not a
        // server that refuses every sender.
        let access = Arc::new(crate::auth::WebAccess::load(config.web.clone())?);
        migrate_with(&config.db, &config.sessions)
            .map_err(|e| format!("cannot migrate the database: {e}"))?;
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared::new(metrics.clone(), config.series_cache_max));
        let control = Arc::new(Control::new(
            &config.db,
            pg_session::Kind::Control,
            "control",
            metrics.clone(),
            &config.sessions,
        ));
        // Partitions ahead of need and retention get a connection of their own: attaching or
        // detaching a partition can wait on locks for many seconds, and health checks and the
        // stalled-session watchdog (the control connection) must not wait behind that.
        let maintenance_db = Arc::new(Control::new(
            &config.db,
            pg_session::Kind::Maintenance,
            "maintenance",
            metrics.clone(),
            &config.sessions,
        ));
        let db_clock = Arc::new(DbClock::new(config.clock.0.clone()));
        let _ = shared.db_clock.set(db_clock.clone());
        control
            .with_client(|c| read_database_clock(c, &db_clock))
            .map_err(|e| format!("cannot read the database clock: {e}"))?;
        if db_clock.offset_ms().abs() > 1_000 {
            log::warn!(
                "this host's clock is {} ms behind the database's; sample times are judged by the database's",
                db_clock.offset_ms()
            );
        }
        control
            .with_client(|c| writer::prepare_partitions(c, &shared, db_clock.now().ms))
            .map_err(|e| format!("cannot create partitions: {e}"))?;
        let generation = control
            .with_client(store::series_generation)
            .map_err(|e| format!("cannot read the series generation: {e}"))?;
        shared.series.advance(-1, generation, None);

        let acks = if config.async_acks {
            Acks::Asynchronous
        } else {
            Acks::AfterCommit
        };
        let (queue, jobs) = Queue::new(
            config.queue_capacity,
            config.db_writers,
            acks,
            metrics.clone(),
        );
        let writers = WriterPool::start(&config.db, jobs, shared.clone(), &config.sessions)
            .map_err(|e| format!("cannot start writers: {e}"))?;

        let stopping = Arc::new(AtomicBool::new(false));
        let ha = config.ha.clone().map(|ha_config| {
            Arc::new(Election::new(
                ha_config,
                Box::new(store::PgLeaseStore::new(&config.db, &config.sessions)),
                config.clock.0.clone(),
                metrics.clone(),
            ))
        });
        let mut election = match &ha {
            Some(election) => {
                let (election, queue, stopping) =
                    (election.clone(), queue.clone(), stopping.clone());
                let (reroute, rerouted) = crossbeam_channel::unbounded();
                let _ = shared.reroute.set(reroute);
                Some(
                    std::thread::Builder::new()
                        .name("promgres-election".into())
                        .spawn(move || election_loop(&election, &queue, &rerouted, &stopping))
                        .map_err(|e| format!("cannot start the election thread: {e}"))?,
                )
            }
            None => None,
        };
        let advisory = config.advisory.map(|a| {
            log::warn!(
                "advisory-lock leader election is deprecated: use --high-availability with cluster/__replica__ external labels"
            );
            Arc::new(AdvisoryElection::new(
                a,
                Box::new(PgLockSession::new(&config.db, &config.sessions)),
                config.clock.0.clone(),
                metrics.clone(),
            ))
        });
        let advisory_thread = match &advisory {
            Some(election) => {
                let (election, stopping) = (election.clone(), stopping.clone());
                let keep_alive = config.sessions.watch_interval();
                Some(
                    std::thread::Builder::new()
                        .name("promgres-advisory".into())
                        .spawn(move || advisory_loop(&election, keep_alive, &stopping))
                        .map_err(|e| format!("cannot start the election thread: {e}"))?,
                )
            }
            None => None,
        };
        let maintenance = {
            let (db, shared, stopping) = (maintenance_db.clone(), shared.clone(), stopping.clone());
            let retention = config.retention;
            let clock = db_clock.clone();
            let compaction = config
                .compaction
                .then(|| CompactionSchedule::starting_after(config.compaction_delay));
            std::thread::Builder::new()
                .name("promgres-maintenance".into())
                .spawn(move || {
                    maintenance_loop(&db, &shared, &clock, retention, compaction, &stopping)
                })
                .map_err(|e| format!("cannot start maintenance thread: {e}"))?
        };
        let watchdog = {
            let (control, stopping) = (control.clone(), stopping.clone());
            let bounds = config.sessions;
            let (metrics, clock) = (metrics.clone(), db_clock.clone());
            std::thread::Builder::new()
                .name("promgres-watchdog".into())
                .spawn(move || watchdog_loop(&control, &bounds, &clock, &metrics, &stopping))
                .map_err(|e| format!("cannot start the watchdog thread: {e}"))?
        };

        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let http_server = Arc::new(
            match access.tls_source() {
                Some(tls) => tiny_http::Server::from_listener_with_tls(
                    listener,
                    tls,
                    http::connection_limits(config),
                ),
                None => tiny_http::Server::from_listener_with_limits(
                    listener,
                    None,
                    http::connection_limits(config),
                ),
            }
            .map_err(|e| format!("cannot serve on {}: {e}", config.listen))?,
        );
        metrics.watch_listener(http_server.stats());
        let addr = http_server
            .server_addr()
            .to_ip()
            .ok_or_else(|| "listener has no IP address".to_string())?;
        let (read_queue, read_jobs) = http::read_queue(config.read_connections);
        let state = Arc::new(HttpState {
            ingest: crate::ingest::Ingest {
                queue: queue.clone(),
                metrics: metrics.clone(),
                write_timeout: config.write_timeout,
                ha: ha.clone(),
                advisory,
            },
            metrics: metrics.clone(),
            health: control.clone(),
            limits: crate::decode::Limits::new(
                config.max_request_bytes,
                i64::try_from(config.max_sample_age.as_millis()).unwrap_or(i64::MAX),
            ),
            body_deadline: config.http_read_timeout,
            decode_slots: http::decode_slots(),
            ha,
            reads: crate::read::ReadPool::new(
                &config.db,
                config.read_connections,
                &config.sessions,
            ),
            read_sample_limit: config.read_sample_limit,
            read_timeout: config.sessions.read,
            read_queue,
            stopping: stopping.clone(),
            db_clock: db_clock.clone(),
            access: access.clone(),
        });
        let mut http_threads = Vec::with_capacity(config.http_threads + config.read_connections);
        for n in 0..config.read_connections {
            let (jobs, state) = (read_jobs.clone(), state.clone());
            http_threads.push(
                std::thread::Builder::new()
                    .name(format!("promgres-read-{n}"))
                    .spawn(move || http::read_worker(&jobs, &state))
                    .map_err(|e| format!("cannot start read workers: {e}"))?,
            );
        }
        for n in 0..config.http_threads {
            let (server, state) = (http_server.clone(), state.clone());
            http_threads.push(
                std::thread::Builder::new()
                    .name(format!("promgres-http-{n}"))
                    .stack_size(256 * 1024)
                    .spawn(move || http::serve(&server, &state))
                    .map_err(|e| format!("cannot start HTTP threads: {e}"))?,
            );
        }
        log::info!(
            "promgres listening on {}://{addr} ({} writers, acks {}{})",
            if access.tls_source().is_some() {
                "https"
            } else {
                "http"
            },
            config.db_writers,
            if config.async_acks {
                "asynchronous"
            } else {
                "after commit"
            },
            if access.current().enabled() {
                ", credentials required"
            } else {
                ""
            }
        );
        Ok(Server {
            addr,
            stopping,
            http_threads,
            http_server: Some(http_server),
            queue: Some(queue),
            writers: Some(writers),
            maintenance: Some(maintenance),
            watchdog: Some(watchdog),
            election: election.take().or(advisory_thread),
            retention: config.retention,
            maintenance_db,
            db_clock,
            shared: Some(shared),
            metrics,
            access,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the web configuration, tokens and certificates again (SIGHUP); on an error the
    /// settings in force stay.
    pub fn reload_access(&self) -> Result<(), String> {
        self.access.reload()
    }

    /// Runs the retention pass now (it also runs at start-up and every 10 minutes).
    pub fn apply_retention_now(&self) {
        if let (Some(retention), Some(shared)) = (self.retention, &self.shared) {
            apply_retention(
                &self.maintenance_db,
                shared,
                retention,
                self.db_clock.now().ms,
            );
        }
    }

    /// Stops accepting requests, lets in-flight ones finish, drains the queue into PostgreSQL
    /// and stops the writers. Returns false when `deadline` passed before the writers were done.
    pub fn shutdown(mut self, deadline: Duration) -> bool {
        let started = Instant::now();
        self.stopping.store(true, Ordering::Relaxed);
        let handlers = std::mem::take(&mut self.http_threads);
        let handlers_done = join_within(deadline, move || {
            for t in handlers {
                let _ = t.join();
            }
        });
        if !handlers_done {
            log::warn!("HTTP handlers still busy at the shutdown deadline");
        }
        // The handlers and the election thread are gone; dropping the last queue sender lets
        // writers drain and stop.
        if let Some(e) = self.election.take() {
            if !join_within(deadline.saturating_sub(started.elapsed()), move || {
                let _ = e.join();
            }) {
                log::warn!("the election thread is still busy at the shutdown deadline");
            }
        }
        self.queue = None;
        // Closes the listening socket.
        self.http_server = None;
        let writers = self.writers.take();
        let drained = join_within(deadline.saturating_sub(started.elapsed()), move || {
            if let Some(w) = writers {
                w.join();
            }
        });
        for t in [self.maintenance.take(), self.watchdog.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
        handlers_done && drained
    }
}

/// The single election thread: one [`Election::tick`] per `--ha-election-interval`, storing
/// what a failover releases from the standby buffer, and routing again the fenced groups the
/// writers hand back from jobs nobody waits for.
fn election_loop(
    election: &Election,
    queue: &Queue,
    rerouted: &crossbeam_channel::Receiver<FencedGroup>,
    stopping: &AtomicBool,
) {
    let interval =
        Duration::from_millis(u64::try_from(election.config().interval_ms).unwrap_or(10_000));
    let mut last = Instant::now();
    // Fenced-out groups not yet routed again (the lease could not be read): kept and retried,
    // since they were acknowledged.
    let mut waiting: Vec<FencedGroup> = Vec::new();
    let mut retry_at = Instant::now();
    while !stopping.load(Ordering::Relaxed) {
        if let Ok(group) = rerouted.recv_timeout(Duration::from_millis(50).min(interval)) {
            waiting.push(group);
            waiting.extend(rerouted.try_iter());
        }
        if Instant::now() >= retry_at && !reroute(election, queue, &mut waiting) {
            retry_at = Instant::now() + Duration::from_secs(1);
        }
        if last.elapsed() < interval {
            continue;
        }
        last = Instant::now();
        match election.tick() {
            Ok(flushes) => {
                if let Err(e) = queue.submit_flush(flushes) {
                    log::warn!("cannot queue buffered HA samples: {e:?}");
                }
            }
            Err(e) => log::warn!("HA election round failed: {e}"),
        }
    }
    // Shutting down: the writers still run until the queue is dropped after this thread.
    waiting.extend(rerouted.try_iter());
    if !reroute(election, queue, &mut waiting) || !waiting.is_empty() {
        let samples: usize = waiting
            .iter()
            .flat_map(|g| g.series.iter())
            .map(|s| s.points())
            .sum();
        log::error!("shutting down with {samples} acknowledged HA samples not routed again");
    }
}

/// Routes `waiting` fenced-out groups again and queues what that yields; on a lease error
/// keeps the rest in `waiting` and returns false.
fn reroute(election: &Election, queue: &Queue, waiting: &mut Vec<FencedGroup>) -> bool {
    let mut groups = std::mem::take(waiting).into_iter();
    while let Some(group) = groups.next() {
        match election.reroute_fenced_out(group.clone()) {
            Ok(routed) => {
                let queued = queue
                    .submit_unanswered(routed.plain, routed.fenced)
                    .and_then(|()| queue.submit_flush(routed.flushes));
                if let Err(e) = queued {
                    log::warn!("cannot queue re-routed HA samples: {e:?}");
                }
            }
            Err(e) => {
                log::warn!("cannot route fenced-out HA samples again, retrying in 1 s: {e}");
                waiting.push(group);
                waiting.extend(groups);
                return false;
            }
        }
    }
    true
}

/// The legacy election thread: one [`AdvisoryElection::tick`] per interval, and a ping of the
/// lock session every `keep_alive` in between, so PostgreSQL's idle_session_timeout (the bound
/// that frees a frozen holder's lock) never ends a live one.
fn advisory_loop(election: &AdvisoryElection, keep_alive: Duration, stopping: &AtomicBool) {
    let interval =
        Duration::from_millis(u64::try_from(election.config().interval_ms).unwrap_or(10_000));
    let (mut last, mut pinged): (Option<Instant>, Instant) = (None, Instant::now());
    while !stopping.load(Ordering::Relaxed) {
        if last.is_none_or(|l| l.elapsed() >= interval) {
            last = Some(Instant::now());
            pinged = Instant::now();
            election.tick();
        } else if pinged.elapsed() >= keep_alive {
            pinged = Instant::now();
            election.keep_alive();
        }
        std::thread::sleep(Duration::from_millis(50).min(interval));
    }
}

/// Runs `f` on a thread and waits at most `limit` for it; false when it is still running.
fn join_within(limit: Duration, f: impl FnOnce() + Send + 'static) -> bool {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        f();
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(limit).is_ok()
}

/// Reads the database clock into `clock`.
fn read_database_clock(client: &mut Client, clock: &DbClock) -> store::Result<()> {
    let before = clock.local().now_ms();
    let db = store::database_clock_ms(client)?;
    clock.observe(before, db, clock.local().now_ms());
    Ok(())
}

/// Every `SessionBounds::watch_interval`: ends promgres sessions (of any instance) stalled
/// mid-statement past `--db-stall-timeout`, which PostgreSQL itself never times out, and reads
/// the database clock.
fn watchdog_loop(
    control: &Control,
    bounds: &SessionBounds,
    clock: &DbClock,
    metrics: &Metrics,
    stopping: &AtomicBool,
) {
    let interval = bounds.watch_interval();
    let mut last: Option<Instant> = None;
    while !stopping.load(Ordering::Relaxed) {
        if last.is_some_and(|l| l.elapsed() < interval) {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        last = Some(Instant::now());
        match control.with_client(|c| store::end_stalled_sessions(c, bounds)) {
            Ok(ended) => {
                for s in &ended {
                    log::warn!(
                        "ended a stalled promgres session: pid {} ({}), waiting for its client ({}) for {} ms",
                        s.pid,
                        s.application_name,
                        s.wait_event,
                        s.stalled_ms
                    );
                }
                metrics.db_sessions_ended.add(ended.len() as u64);
            }
            Err(e) => log::warn!("watchdog: cannot check for stalled sessions: {e}"),
        }
        if let Err(e) = control.with_client(|c| read_database_clock(c, clock)) {
            log::debug!("watchdog: cannot read the database clock: {e}");
        }
    }
}

/// Every 10 minutes, on the maintenance connection: partitions a week ahead, then retention.
fn maintenance_loop(
    db: &Control,
    shared: &Shared,
    clock: &DbClock,
    retention: Option<Duration>,
    mut compaction: Option<CompactionSchedule>,
    stopping: &AtomicBool,
) {
    // Retention runs at start-up too; partitions were just created by Server::start.
    let mut last: Option<Instant> = None;
    while !stopping.load(Ordering::Relaxed) {
        if let Some(compaction) = compaction.as_mut() {
            compaction.run_if_due(db, shared, clock, stopping);
        }
        if last.is_some_and(|l| l.elapsed() < MAINTENANCE_INTERVAL) {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        if last.is_some() {
            if let Err(e) =
                db.with_client(|c| writer::prepare_partitions(c, shared, clock.now().ms))
            {
                log::warn!("maintenance: cannot create partitions ahead: {e}");
            }
        }
        last = Some(Instant::now());
        if let Some(retention) = retention {
            apply_retention(db, shared, retention, clock.now().ms);
        }
    }
}

/// `promgres compact`: migrates, then runs one compaction pass up to the cutoff of the
/// database clock, printing progress (done/total, rate, time left) every few seconds. Safe
/// beside running instances: each range is claimed with a try-lock.
pub fn compact_now(
    db: &impl crate::pg_tls::ToDbConfig,
    bounds: &SessionBounds,
) -> store::Result<()> {
    migrate_with(db, bounds)?;
    let mut client = store::connect(&pg_session::config(
        db,
        pg_session::Kind::Maintenance,
        bounds,
    ))?;
    let cutoff = engine::cutoff_ms(store::database_clock_ms(&mut client)?);
    let started = Instant::now();
    let mut last = Instant::now();
    let stats = engine::compact(&mut client, cutoff, engine::Scope::AllDays, &mut |stats| {
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            println!(
                "compact: {}",
                engine::compact::progress_line(stats, started.elapsed())
            );
        }
        true
    })?;
    println!(
        "compact: done: {}",
        engine::compact::progress_line(&stats, started.elapsed())
    );
    for name in engine::compact::reclaim_head(&mut client)? {
        println!("compact: reclaimed emptied head partition {name}");
    }
    let h = engine::histograms::compact(&mut client, cutoff, &mut || true)?;
    println!(
        "compact: folded {} histograms into {} chunks",
        h.histograms, h.chunks
    );
    Ok(())
}

/// How often a compaction sweep runs when the cutoff has not moved: it folds late samples,
/// visiting only the days writers marked, so it is cheap.
const COMPACTION_SWEEP_INTERVAL: Duration = Duration::from_secs(300);
/// How often the maintenance thread asks whether a pass is due.
const COMPACTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// When compaction runs: as soon as the cutoff (a slice start, by the database clock)
/// moved, and every five minutes besides, for late samples.
struct CompactionSchedule {
    not_before: Instant,
    checked: Option<Instant>,
    last_pass: Option<Instant>,
    last_cutoff: Option<i64>,
}

impl CompactionSchedule {
    fn starting_after(delay: Duration) -> Self {
        CompactionSchedule {
            not_before: Instant::now() + delay,
            checked: None,
            last_pass: None,
            last_cutoff: None,
        }
    }

    fn run_if_due(
        &mut self,
        db: &Control,
        shared: &Shared,
        clock: &DbClock,
        stopping: &AtomicBool,
    ) {
        if Instant::now() < self.not_before
            || self
                .checked
                .is_some_and(|c| c.elapsed() < COMPACTION_CHECK_INTERVAL)
        {
            return;
        }
        self.checked = Some(Instant::now());
        // The cutoff comes from the database's clock itself, not this host's estimate of it:
        // writers check samples against chunks below the cutoff their own estimate gives
        // plus a margin, and a compactor whose host clock ran ahead must not outrun that.
        let db_now = match db.with_client(store::database_clock_ms) {
            Ok(ms) => ms,
            Err(e) => {
                log::warn!("compaction: cannot read the database clock: {e}");
                return;
            }
        };
        let cutoff = engine::cutoff_ms(db_now);
        let moved = self.last_cutoff.is_none_or(|c| c < cutoff);
        let swept = self
            .last_pass
            .is_some_and(|p| p.elapsed() < COMPACTION_SWEEP_INTERVAL);
        if !moved && swept {
            return;
        }
        let started = Instant::now();
        let metrics = &shared.metrics;
        let mut last_log = Instant::now();
        // Returns false at shutdown, which ends the pass after the range in hand (a pass
        // over an upgraded database can take hours; SIGTERM must not wait for it).
        let mut report = |stats: &engine::CompactionStats| {
            if stopping.load(Ordering::Relaxed) {
                return false;
            }
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = Instant::now();
                log::info!(
                    "compaction: {}",
                    engine::compact::progress_line(stats, started.elapsed())
                );
            }
            true
        };
        // A cutoff that moved a slice (or the first pass) visits every head day; sweeps in between only
        // the days writers marked with late samples.
        let scope = if moved {
            engine::Scope::AllDays
        } else {
            engine::Scope::Pending
        };
        match db.with_client(|c| engine::compact(c, cutoff, scope, &mut report)) {
            Ok(stats) => {
                metrics.compaction_samples.add(stats.samples);
                metrics.compaction_chunks.add(stats.chunks);
                metrics.compaction_passes.add(1);
                metrics.compaction_errors.add(stats.ranges_failed);
                metrics
                    .compaction_pass_seconds
                    .set(started.elapsed().as_secs() as i64);
                metrics
                    .compaction_behind_seconds
                    .set((clock.now().ms - cutoff) / 1000);
                if stats.samples > 0 {
                    match db.with_client(engine::compact::reclaim_head) {
                        Ok(r) if !r.is_empty() => {
                            log::info!(
                                "compaction: reclaimed emptied head partitions {}",
                                r.join(", ")
                            )
                        }
                        Ok(_) => {}
                        Err(e) => log::warn!("compaction: cannot reclaim head partitions: {e}"),
                    }
                    log::info!(
                        "compaction: folded {} samples into {} chunks ({} rewritten, {} duplicates dropped) in {:.1?}",
                        stats.samples, stats.chunks, stats.rewritten, stats.duplicates, started.elapsed()
                    );
                }
                self.last_cutoff = Some(cutoff);
                self.last_pass = Some(Instant::now());
            }
            Err(e) => {
                metrics.compaction_errors.add(1);
                log::warn!("compaction: pass failed (it is repeated; nothing is lost): {e}");
            }
        }
        let mut keep_going = || !stopping.load(Ordering::Relaxed);
        match db.with_client(|c| engine::histograms::compact(c, cutoff, &mut keep_going)) {
            Ok(h) => {
                metrics.histograms_compacted.add(h.histograms as u64);
                metrics.compaction_errors.add(h.failed as u64);
                if h.histograms > 0 {
                    log::info!(
                        "compaction: folded {} histograms into {} chunks",
                        h.histograms,
                        h.chunks
                    );
                }
            }
            Err(e) => {
                metrics.compaction_errors.add(1);
                log::warn!(
                    "compaction: histogram pass failed (it is repeated; nothing is lost): {e}"
                );
            }
        }
    }
}

/// Drops the partitions older than `retention` and forgets them in the writers' cache.
pub fn apply_retention(control: &Control, shared: &Shared, retention: Duration, now_ms: i64) {
    let keep_from_ms = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let keep_from_day = i32::try_from(keep_from_ms.div_euclid(86_400_000)).unwrap_or(i32::MIN);
    match control.with_client(|c| store::drop_partitions_before(c, keep_from_day)) {
        Ok(dropped) if dropped.is_empty() => {}
        Ok(dropped) => {
            log::info!("retention: dropped partitions {}", dropped.join(", "));
            shared
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|day| *day >= keep_from_day);
        }
        Err(e) => log::warn!("retention: cannot drop old partitions: {e}"),
    }
    let older_than_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    match control.with_client(|c| store::remove_empty_series(c, older_than_ms)) {
        Ok(0) => {}
        Ok(n) => log::info!("retention: removed {n} series with no samples left"),
        Err(e) => log::warn!("retention: cannot remove empty series: {e}"),
    }
}
