//! `StoreError`, the one error type of the database boundary: every module that talks to
//! PostgreSQL returns it, and `http::ApiError` maps it to a status (5xx, or 400 for data
//! PostgreSQL itself refused). Kept apart from `store` so the stages that only report
//! database errors (HA, the advisory election, the engine) need not depend on `store`.

use postgres::error::SqlState;
use std::fmt;

/// Why a database call failed. All of these are promgres's side (a 5xx), never the client's.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// The connection is gone; the caller must reconnect before trying again.
    pub connection_lost: bool,
    pub sqlstate: Option<String>,
    pub message: String,
}

impl StoreError {
    /// An error of promgres's own making (not from PostgreSQL).
    pub fn internal(message: impl Into<String>) -> Self {
        StoreError {
            connection_lost: false,
            sqlstate: None,
            message: message.into(),
        }
    }

    pub(crate) fn is(&self, state: &SqlState) -> bool {
        self.sqlstate.as_deref() == Some(state.code())
    }

    /// The advisory lock this instance stored under is no longer held by its session.
    pub fn lock_lost(key: i64) -> Self {
        StoreError {
            connection_lost: false,
            sqlstate: Some(LOCK_LOST.to_string()),
            message: format!(
                "advisory lock {key} is no longer held by this instance's lock session"
            ),
        }
    }

    /// Series were removed since the writer resolved its ids: the new generation is in the
    /// message's place, see [`StoreError::moved_generation`].
    pub(crate) fn generation_moved(generation: i64) -> Self {
        StoreError {
            connection_lost: false,
            sqlstate: Some(GENERATION_MOVED.to_string()),
            message: generation.to_string(),
        }
    }

    /// The new series generation, when this error says series were removed.
    pub fn moved_generation(&self) -> Option<i64> {
        (self.sqlstate.as_deref() == Some(GENERATION_MOVED))
            .then(|| self.message.parse().ok())
            .flatten()
    }

    pub fn is_lock_lost(&self) -> bool {
        self.sqlstate.as_deref() == Some(LOCK_LOST)
    }

    /// PostgreSQL refused the data itself (class 22 data exception, class 54 limit exceeded):
    /// retrying the same request cannot succeed.
    pub fn is_data_error(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some(code) if code.starts_with("22") || code.starts_with("54"))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "database error {code}: {}", self.message),
            None => write!(f, "database error: {}", self.message),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        let sqlstate = e.code().map(|c| c.code().to_string());
        // Errors without a SQLSTATE come from the socket or protocol, not from a statement.
        let connection_lost = e.is_closed() || sqlstate.is_none();
        let message = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        StoreError {
            connection_lost,
            sqlstate,
            message,
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError {
            connection_lost: true,
            sqlstate: None,
            message: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A SQLSTATE-like code of promgres's own for a lost advisory lock (class PL is unused by
/// PostgreSQL).
const LOCK_LOST: &str = "PL001";
/// ... and for a series generation that moved past series a transaction uses (they were
/// removed; the caches must forget them).
const GENERATION_MOVED: &str = "PL002";
