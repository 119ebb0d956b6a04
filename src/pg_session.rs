//! The PostgreSQL sessions promgres opens, and the bounds each one carries, in one place.
//!
//! A promgres whose host vanishes, whose process is frozen or killed mid-transaction, must not
//! hold lease rows, sample keys or advisory locks for long, and a database host that vanishes
//! must be noticed. Every session therefore gets, from [`config`]:
//!
//! - TCP keepalives and `tcp_user_timeout` on both ends (client options and server GUCs), so a
//!   dead peer is found within about 25 s of silence (10 s idle + 3 probes 5 s apart) and
//!   unacknowledged data is given up after 30 s;
//! - `idle_in_transaction_session_timeout` = the stall timeout: PostgreSQL ends a session that
//!   sits inside a transaction waiting for promgres;
//! - a `statement_timeout` and a `lock_timeout` fitting its work;
//! - sessions that hold session-level locks while idle (the advisory-lock session, the
//!   migration session) an `idle_session_timeout` = the stall timeout; promgres pings them
//!   more often than that.
//!
//! PostgreSQL does not bound one case: a statement that waits for more input from its client
//! (a COPY stalled mid-stream, a pipeline cut between messages) ignores `statement_timeout`
//! until data arrives. Every running promgres ends such sessions of other instances after the
//! stall timeout (`store::end_stalled_sessions`, run by the server's watchdog thread), so the
//! bound holds as long as one instance is alive.

use std::time::Duration;

/// The bounds common to all sessions, from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionBounds {
    /// `--db-stall-timeout`: the longest a session may wait for promgres inside a transaction.
    pub stall: Duration,
    /// `--read-timeout`: the longest one remote read may take.
    pub read: Duration,
}

impl Default for SessionBounds {
    fn default() -> Self {
        SessionBounds {
            stall: Duration::from_secs(15),
            read: Duration::from_secs(120),
        }
    }
}

impl SessionBounds {
    /// How often the watchdog looks for stalled sessions: the stall timeout plus this is the
    /// documented bound.
    pub fn watch_interval(&self) -> Duration {
        (self.stall / 3).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }
}

/// What a session is for; each kind has its own timeouts and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A writer of the pool (its number).
    Writer(usize),
    /// Health checks, partitions ahead of need, the stalled-session watchdog.
    Control,
    /// Retention: detaching and dropping partitions, removing empty series.
    Maintenance,
    /// HA leases.
    Ha,
    /// The legacy election's advisory lock.
    Lock,
    /// Remote read.
    Read,
    /// Schema migrations at start-up.
    Migrate,
}

const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const TCP_KEEPALIVE_COUNT: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The session name shown in `pg_stat_activity.application_name`: the kind, then the host and
/// process, so an operator (and the watchdog's log) can tell instances apart.
pub fn application_name(kind: Kind) -> String {
    let role = match kind {
        Kind::Writer(n) => format!("writer-{n}"),
        Kind::Control => "control".into(),
        Kind::Maintenance => "maintenance".into(),
        Kind::Ha => "ha".into(),
        Kind::Lock => "advisory-lock".into(),
        Kind::Read => "read".into(),
        Kind::Migrate => "migrate".into(),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut name = format!("promgres-{role} {host}:{}", std::process::id());
    // PostgreSQL keeps 63 bytes; cut on a character boundary.
    while name.len() > 63 {
        name.pop();
    }
    name
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The connection settings of a session of `kind` on database `db` (its TLS settings kept).
pub fn config(
    db: &impl crate::pg_tls::ToDbConfig,
    kind: Kind,
    bounds: &SessionBounds,
) -> crate::pg_tls::DbConfig {
    let mut config = db.to_db_config();
    config.application_name(&application_name(kind));
    config
        .keepalives(true)
        .keepalives_idle(TCP_KEEPALIVE_IDLE)
        .keepalives_interval(TCP_KEEPALIVE_INTERVAL)
        .keepalives_retries(TCP_KEEPALIVE_COUNT)
        .tcp_user_timeout(TCP_USER_TIMEOUT);
    // (statement_timeout, lock_timeout) in ms; 0 is none.
    let (statement, lock) = match kind {
        // A writer stuck behind a lock or a runaway statement gives up and answers 503
        // instead of holding its share of the pipeline; lock waits outlast the watchdog's
        // bound, so a frozen peer's locks are gone before a writer gives up on them.
        Kind::Writer(_) => (60_000, 30_000),
        Kind::Control => (30_000, 10_000),
        // DETACH ... CONCURRENTLY waits for every transaction that may see the partition.
        Kind::Maintenance => (600_000, 60_000),
        Kind::Ha => (10_000, 5_000),
        Kind::Lock => (10_000, 5_000),
        Kind::Read => (ms(bounds.read), 10_000),
        // Data migrations may be long; another instance's migration lock is waited for (a
        // frozen holder loses it to idle_session_timeout).
        Kind::Migrate => (0, 0),
    };
    let stall = ms(bounds.stall);
    let mut options = format!(
        "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
         -c tcp_user_timeout={} -c statement_timeout={statement} -c lock_timeout={lock} \
         -c idle_in_transaction_session_timeout={stall}",
        TCP_KEEPALIVE_IDLE.as_secs(),
        TCP_KEEPALIVE_INTERVAL.as_secs(),
        TCP_KEEPALIVE_COUNT,
        ms(TCP_USER_TIMEOUT),
    );
    match kind {
        Kind::Lock | Kind::Migrate => {
            options.push_str(&format!(" -c idle_session_timeout={stall}"));
        }
        Kind::Read => options.push_str(" -c default_transaction_read_only=on"),
        _ => {}
    }
    // Keep what the operator put in the URI's options; ours come last and win.
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {options}"),
        _ => options,
    };
    config.options(&options);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_is_bounded_and_named() {
        let mut db: crate::pg_tls::DbConfig =
            "postgresql://u@h/d?options=-c%20work_mem%3D64MB&sslmode=require"
                .parse()
                .expect("uri");
        db.dbname("d");
        let bounds = SessionBounds::default();
        for kind in [
            Kind::Writer(3),
            Kind::Control,
            Kind::Maintenance,
            Kind::Ha,
            Kind::Lock,
            Kind::Read,
            Kind::Migrate,
        ] {
            let c = config(&db, kind, &bounds);
            let o = c.get_options().expect("options");
            assert!(o.starts_with("-c work_mem=64MB "), "{o}");
            for setting in [
                "tcp_keepalives_idle=10",
                "tcp_user_timeout=30000",
                "idle_in_transaction_session_timeout=15000",
                "statement_timeout=",
                "lock_timeout=",
            ] {
                assert!(o.contains(setting), "{kind:?}: {o}");
            }
            assert_eq!(
                o.contains("idle_session_timeout=15000"),
                matches!(kind, Kind::Lock | Kind::Migrate)
            );
            assert_eq!(c.get_keepalives_idle(), Duration::from_secs(10));
            let name = c.get_application_name().expect("name");
            assert!(name.starts_with("promgres-") && name.len() <= 63, "{name}");
        }
        assert!(config(&db, Kind::Writer(3), &bounds)
            .get_application_name()
            .is_some_and(|n| n.starts_with("promgres-writer-3 ")));
        assert_eq!(bounds.watch_interval(), Duration::from_secs(5));
        // The session keeps the database's TLS settings.
        assert_eq!(
            config(&db, Kind::Read, &bounds).verify(),
            Some(crate::pg_tls::Verify::Nothing)
        );
    }
}
