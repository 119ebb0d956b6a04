//! promgres: long-term storage for Prometheus in PostgreSQL.
//!
//! Data flows one way: `http` (transport) -> `decode` (remote-write parsing and validation)
//! -> `ingest` (the write path's entry point: HA routing, commit wait) -> `queue` -> `writer`
//! (pool of PostgreSQL writers) -> `engine` (head rows, compaction into chunks, reads; every
//! statement about samples) with `store` (series, leases, partitions, migrations). `server`
//! wires the stages together; ARCHITECTURE.md has the map and the invariants.

pub mod advisory;
pub mod auth;
pub mod clock;
pub mod config;
pub mod db_error;
pub mod decode;
pub mod decode_v2;
pub mod engine;
pub mod fence;
pub mod ha;
/// Test support, not used by the server: the HA lease functions as an in-memory model for
/// the election's tests and the HA fuzz target.
#[doc(hidden)]
pub mod ha_model;
pub mod ha_page;
pub mod histogram_chunk;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod pg_session;
pub mod pg_tls;
pub mod proto;
pub mod queue;
pub mod read;
pub mod series_cache;
pub mod server;
pub mod standby;
pub mod store;
pub mod sys;
pub mod tls;
pub mod web_config;
pub mod writer;
pub mod xor;

/// The version and the git commit it was built from.
pub fn version() -> String {
    format!(
        "promgres {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        option_env!("PROMGRES_GIT_COMMIT").unwrap_or("unknown")
    )
}
