//! The storage engine: where a sample lives from its commit on, and the only code that
//! reads samples back or moves them.
//!
//! A committed sample first lives in the head (`promgres.samples`, a row per sample, the
//! primary key deciding exactly-once). Compaction folds head rows older than the cutoff
//! (the database clock minus [`GRACE_MS`], in steps of [`SLICE_MS`]) into one chunk per
//! (series, two-hour window) (encoded by [`codec`], about 1-2 bytes a sample), deleting the
//! rows in the same transaction, so the head holds only the last 10-20 minutes. An open
//! window's chunk lives in `promgres.open_chunks`, rewritten with each slice; a closed one in
//! `promgres.chunks`, written once. A (series, time) is
//! therefore in the head or in a chunk, never both: the insert transaction removes the rare
//! late sample whose chunk already holds its time ([`drop_compacted_duplicates`]). Reads merge
//! chunks and head rows ([`read`]).
//! ARCHITECTURE.md ("Storage engine") has the crash points and the invariants.

pub mod chunks;
pub mod codec;
pub mod compact;
pub mod exemplars;
pub mod head;
pub mod histogram_codec;
pub mod histograms;
pub mod read;
pub use compact::{compact, cutoff_ms, CompactionStats, Scope};
pub use read::stream_samples;

/// A sample on its way into the engine: its series id, time and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRow {
    pub series_id: i64,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// What one insert transaction writes: float samples, histograms and exemplars, each sorted
/// by key with each key once.
#[derive(Debug, Clone, Default)]
pub struct HeadRows<'a> {
    pub samples: Vec<SampleRow>,
    pub histograms: Vec<histograms::HistogramRow<'a>>,
    pub exemplars: Vec<exemplars::ExemplarRow<'a>>,
}

/// What an insert transaction stored, by the time it committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Samples new to the database.
    pub stored: usize,
    /// Samples whose (series, time) was stored already with the same bits (a resend).
    pub identical: usize,
    /// Samples whose (series, time) was stored already with other bits: the first value
    /// stays, this one is dropped and counted.
    pub conflicting: usize,
    /// Histograms new to the database, and those stored already (resends).
    pub histograms: histograms::HistogramsInserted,
    /// Exemplars new to the database.
    pub exemplars: usize,
}

/// Chunks cover aligned windows of this length (like Prometheus's two-hour blocks): at a
/// 15 s scrape interval a chunk holds 480 samples, so the row and index cost of a chunk is
/// a fraction of a byte per sample.
pub const WINDOW_MS: i64 = 2 * 3600 * 1000;

/// Head rows are compacted once they are this old (by the database clock): senders a few
/// minutes behind still land in the head, not in a chunk rewrite.
pub const GRACE_MS: i64 = 10 * 60 * 1000;

/// The cutoff moves in steps of this length, so a pass runs every ten minutes and a window's
/// chunk is rewritten about twelve times before it closes: the head (a row and an index entry
/// per sample) stays a few minutes long, and recent reads find most of their samples in chunks.
pub const SLICE_MS: i64 = 10 * 60 * 1000;

/// Milliseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 UTC).
pub(crate) const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The start of the window holding `ms`.
pub fn window_of(ms: i64) -> i64 {
    ms.div_euclid(WINDOW_MS) * WINDOW_MS
}

/// How far the database clock estimate may be off before a writer could miss a compacted
/// window (the estimate is re-read every few seconds).
const LATE_MARGIN_MS: i64 = 5 * 60 * 1000;

/// Samples older than this may belong to a compacted window, so an insert checks them
/// against chunks: the compaction cutoff a little after the database clock's estimate, or
/// every sample when there is no trusted estimate.
pub fn late_before_ms(db_now: Option<crate::clock::DbNow>) -> i64 {
    match db_now {
        Some(now) if now.trusted => cutoff_ms(now.ms.saturating_add(LATE_MARGIN_MS)),
        _ => i64::MAX,
    }
}
