//! Clocks. The receiver's wall clock behind a trait, so time-driven logic (elections, buffer
//! ages) is tested with a clock the test moves; and the database clock, by which promgres
//! judges sample times, so that a promgres host whose clock is off does not refuse valid
//! samples with a 4xx (which Prometheus drops for good).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A wall clock in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The host's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// The host's clock, in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// A reading of the database clock: its time now, and whether the estimate can be trusted
/// (read recently enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbNow {
    pub ms: i64,
    pub trusted: bool,
}

/// How long one reading of the database clock is trusted.
const FRESH_MS: i64 = 10 * 60_000;
/// Readings whose round trip took longer say too little about when the server read its clock.
const MAX_ROUND_TRIP_MS: i64 = 5_000;

/// The database clock, estimated as the local clock plus the offset last measured (the
/// server's `clock_timestamp()` against the middle of the round trip). Measured at start-up
/// and by the watchdog every few seconds.
pub struct DbClock {
    local: Arc<dyn Clock>,
    offset_ms: AtomicI64,
    /// Local time of the last reading; i64::MIN before the first.
    measured_ms: AtomicI64,
}

impl DbClock {
    pub fn new(local: Arc<dyn Clock>) -> Self {
        DbClock {
            local,
            offset_ms: AtomicI64::new(0),
            measured_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// The local clock this estimate is based on.
    pub fn local(&self) -> &Arc<dyn Clock> {
        &self.local
    }

    /// Records a reading: the database said `db_ms` between local `before_ms` and `after_ms`.
    pub fn observe(&self, before_ms: i64, db_ms: i64, after_ms: i64) {
        let round_trip = after_ms - before_ms;
        if !(0..=MAX_ROUND_TRIP_MS).contains(&round_trip) {
            return;
        }
        let offset = db_ms - (before_ms + round_trip / 2);
        self.offset_ms.store(offset, Ordering::Relaxed);
        self.measured_ms.store(after_ms, Ordering::Relaxed);
    }

    /// The database's time now. Untrusted (the local clock plus a stale or no offset) when the
    /// database has not been read for ten minutes.
    pub fn now(&self) -> DbNow {
        let local = self.local.now_ms();
        let measured = self.measured_ms.load(Ordering::Relaxed);
        DbNow {
            ms: local.saturating_add(self.offset_ms.load(Ordering::Relaxed)),
            trusted: measured != i64::MIN && local.saturating_sub(measured) <= FRESH_MS,
        }
    }

    /// Milliseconds the database clock is ahead of the local one, as last measured.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Manual(AtomicI64);
    impl Clock for Manual {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn the_database_clock_is_the_local_one_plus_the_measured_offset() {
        let local = Arc::new(Manual(AtomicI64::new(1_000_000)));
        let db = DbClock::new(local.clone());
        assert!(!db.now().trusted, "never read");
        // The database is 20 minutes ahead; the reading took 40 ms.
        db.observe(1_000_000, 1_000_020 + 1_200_000, 1_000_040);
        assert_eq!(
            db.now(),
            DbNow {
                ms: 2_200_000,
                trusted: true
            }
        );
        // A reading with a 10 s round trip is ignored.
        db.observe(1_000_000, 0, 1_010_000);
        assert_eq!(db.offset_ms(), 1_200_000);
        local.0.fetch_add(FRESH_MS + 100, Ordering::SeqCst);
        assert!(
            !db.now().trusted,
            "stale after ten minutes without a reading"
        );
    }
}
