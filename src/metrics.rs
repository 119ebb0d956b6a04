//! The server's own metrics and their Prometheus text exposition (`GET /metrics`).
//!
//! A deliberately small registry: counters and gauges are atomics, labelled families are
//! maps behind a mutex (touched once per request, not per sample), histograms have fixed
//! buckets. Every stage records into the one [`Metrics`] value it is handed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters keyed by label values, in a fixed label-name order.
pub struct CounterVec {
    label_names: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub fn new(label_names: &'static [&'static str]) -> Self {
        CounterVec {
            label_names,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn add(&self, label_values: &[&str], n: u64) {
        debug_assert_eq!(label_values.len(), self.label_names.len());
        let key: Vec<String> = label_values.iter().map(|v| v.to_string()).collect();
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *values.entry(key).or_insert(0) += n;
    }

    pub fn get(&self, label_values: &[&str]) -> u64 {
        let key: Vec<String> = label_values.iter().map(|v| v.to_string()).collect();
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(&key).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str) {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (key, v) in values.iter() {
            let _ = writeln!(out, "{name}{} {v}", label_text(self.label_names, key));
        }
    }
}

/// Gauges keyed by label values.
pub struct GaugeVec {
    label_names: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl GaugeVec {
    pub fn new(label_names: &'static [&'static str]) -> Self {
        GaugeVec {
            label_names,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set(&self, label_values: &[&str], v: f64) {
        let key: Vec<String> = label_values.iter().map(|v| v.to_string()).collect();
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.insert(key, v);
    }

    fn render(&self, out: &mut String, name: &str) {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (key, v) in values.iter() {
            let _ = writeln!(out, "{name}{} {v}", label_text(self.label_names, key));
        }
    }

    /// The current value for these label values, if set.
    pub fn render_value(&self, label_values: &[&str]) -> Option<f64> {
        let key: Vec<String> = label_values.iter().map(|v| v.to_string()).collect();
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(&key).copied()
    }
}

/// Latency buckets in seconds, from 1 ms to 30 s.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram with fixed buckets.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in BUCKETS.iter().enumerate() {
            let n = self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

fn label_text(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{n}=\"{escaped}\"");
    }
    s.push('}');
    s
}

/// Every metric promgres exports.
pub struct Metrics {
    pub http_requests: CounterVec,
    pub http_write_duration: Histogram,
    pub samples_received: Counter,
    pub samples_stored: Counter,
    pub histograms_received: Counter,
    pub histograms_stored: Counter,
    pub exemplars_received: Counter,
    pub exemplars_stored: Counter,
    pub histograms_compacted: Counter,
    pub samples_rejected: CounterVec,
    pub samples_duplicate: CounterVec,
    pub compaction_samples: Counter,
    pub compaction_chunks: Counter,
    pub compaction_passes: Counter,
    pub compaction_errors: Counter,
    pub compaction_pass_seconds: Gauge,
    pub compaction_behind_seconds: Gauge,
    pub metadata_stored: Counter,
    pub commit_duration: Histogram,
    pub queue_depth: Gauge,
    pub queue_capacity: Gauge,
    pub writer_errors: CounterVec,
    pub series_cache_size: Gauge,
    pub series_cache_bytes: Gauge,
    pub series_cache_hits: Counter,
    pub series_cache_misses: Counter,
    pub series_created: Counter,
    pub db_connected: GaugeVec,
    pub duplicate_fallbacks: Counter,
    pub db_sessions_ended: Counter,
    pub ha_leader_info: GaugeVec,
    pub ha_leader_changes: CounterVec,
    pub ha_samples_accepted: CounterVec,
    pub ha_samples_dropped: CounterVec,
    pub ha_samples_unpaired: CounterVec,
    pub ha_buffer_bytes: Gauge,
    pub ha_last_failover_gap: GaugeVec,
    pub advisory_leader: Gauge,
    pub advisory_acquisitions: Counter,
    pub advisory_losses: Counter,
    pub advisory_resignations: Counter,
    pub advisory_prometheus_silence_ms: Gauge,
    /// The HTTP listener's own counts, read when rendering.
    listener: std::sync::OnceLock<std::sync::Arc<tiny_http::ListenerStats>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: CounterVec::new(&["path", "code"]),
            http_write_duration: Histogram::default(),
            samples_received: Counter::default(),
            samples_stored: Counter::default(),
            histograms_received: Counter::default(),
            histograms_stored: Counter::default(),
            exemplars_received: Counter::default(),
            exemplars_stored: Counter::default(),
            histograms_compacted: Counter::default(),
            samples_rejected: CounterVec::new(&["reason"]),
            samples_duplicate: CounterVec::new(&["kind"]),
            compaction_samples: Counter::default(),
            compaction_chunks: Counter::default(),
            compaction_passes: Counter::default(),
            compaction_errors: Counter::default(),
            compaction_pass_seconds: Gauge::default(),
            compaction_behind_seconds: Gauge::default(),
            metadata_stored: Counter::default(),
            commit_duration: Histogram::default(),
            queue_depth: Gauge::default(),
            queue_capacity: Gauge::default(),
            writer_errors: CounterVec::new(&["kind"]),
            series_cache_size: Gauge::default(),
            series_cache_bytes: Gauge::default(),
            series_cache_hits: Counter::default(),
            series_cache_misses: Counter::default(),
            series_created: Counter::default(),
            db_connected: GaugeVec::new(&["connection"]),
            duplicate_fallbacks: Counter::default(),
            db_sessions_ended: Counter::default(),
            ha_leader_info: GaugeVec::new(&["cluster", "replica"]),
            ha_leader_changes: CounterVec::new(&["cluster"]),
            ha_samples_accepted: CounterVec::new(&["cluster", "replica", "kind"]),
            ha_samples_dropped: CounterVec::new(&["cluster", "replica", "reason"]),
            ha_samples_unpaired: CounterVec::new(&["missing"]),
            ha_buffer_bytes: Gauge::default(),
            ha_last_failover_gap: GaugeVec::new(&["cluster"]),
            advisory_leader: Gauge::default(),
            advisory_acquisitions: Counter::default(),
            advisory_losses: Counter::default(),
            advisory_resignations: Counter::default(),
            advisory_prometheus_silence_ms: Gauge::default(),
            listener: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Exports the listener's counts (accepted, refused and failed connections) from now on.
    pub fn watch_listener(&self, stats: std::sync::Arc<tiny_http::ListenerStats>) {
        let _ = self.listener.set(stats);
    }

    fn render_listener(&self, out: &mut String) {
        let Some(stats) = self.listener.get() else {
            return;
        };
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed).to_string();
        for (name, kind, help, value) in [
            (
                "promgres_http_connections_open",
                "gauge",
                "HTTP connections open now.",
                stats.open.load(Ordering::Relaxed).to_string(),
            ),
            (
                "promgres_http_connections_accepted_total",
                "counter",
                "HTTP connections accepted (refused ones included).",
                load(&stats.accepted),
            ),
            (
                "promgres_http_connections_refused_total",
                "counter",
                "HTTP connections answered 503 and closed because --http-max-connections were open.",
                load(&stats.refused),
            ),
            (
                "promgres_http_accept_errors_total",
                "counter",
                "Failed accepts (e.g. out of file descriptors), each survived after a short pause.",
                load(&stats.accept_errors),
            ),
            (
                "promgres_http_request_heads_too_large_total",
                "counter",
                "Requests answered 431: a header line over 8 KiB, a head over 64 KiB or 100 fields.",
                load(&stats.heads_too_large),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }

    /// The Prometheus text format (version 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };

        head(
            &mut out,
            "promgres_http_requests_total",
            "counter",
            "HTTP requests by path and status code.",
        );
        self.http_requests
            .render(&mut out, "promgres_http_requests_total");
        head(
            &mut out,
            "promgres_write_request_duration_seconds",
            "histogram",
            "Time from receiving a write request to answering it.",
        );
        self.http_write_duration
            .render(&mut out, "promgres_write_request_duration_seconds", "");
        scalar(
            &mut out,
            "promgres_samples_received_total",
            "counter",
            "Samples in decoded write requests.",
            self.samples_received.get().to_string(),
        );
        scalar(
            &mut out,
            "promgres_samples_stored_total",
            "counter",
            "Samples committed to PostgreSQL that were new (resends and conflicts not counted).",
            self.samples_stored.get().to_string(),
        );
        for (name, help, counter) in [
            (
                "promgres_histograms_received_total",
                "Native histograms in decoded write requests.",
                &self.histograms_received,
            ),
            (
                "promgres_histograms_stored_total",
                "Native histograms committed to PostgreSQL that were new.",
                &self.histograms_stored,
            ),
            (
                "promgres_exemplars_received_total",
                "Exemplars in decoded write requests.",
                &self.exemplars_received,
            ),
            (
                "promgres_exemplars_stored_total",
                "Exemplars committed to PostgreSQL that were new.",
                &self.exemplars_stored,
            ),
            (
                "promgres_histograms_compacted_total",
                "Head histograms folded into chunks by compaction.",
                &self.histograms_compacted,
            ),
        ] {
            scalar(&mut out, name, "counter", help, counter.get().to_string());
        }
        head(
            &mut out,
            "promgres_samples_duplicate_total",
            "counter",
            "Samples whose (series, time) was stored already: kind=identical (a resend, same bits) or kind=conflicting (other bits; the first value stays).",
        );
        self.samples_duplicate
            .render(&mut out, "promgres_samples_duplicate_total");
        for (name, help, value) in [
            (
                "promgres_compaction_samples_total",
                "Head samples this instance folded into chunks.",
                self.compaction_samples.get(),
            ),
            (
                "promgres_compaction_chunks_total",
                "Chunks this instance wrote.",
                self.compaction_chunks.get(),
            ),
            (
                "promgres_compaction_passes_total",
                "Compaction passes this instance finished.",
                self.compaction_passes.get(),
            ),
            (
                "promgres_compaction_errors_total",
                "Compaction passes, and ranges within passes, that failed (rolled back; repeated next time).",
                self.compaction_errors.get(),
            ),
        ] {
            scalar(&mut out, name, "counter", help, value.to_string());
        }
        scalar(
            &mut out,
            "promgres_compaction_last_pass_seconds",
            "gauge",
            "How long this instance's last compaction pass took.",
            self.compaction_pass_seconds.get().to_string(),
        );
        scalar(
            &mut out,
            "promgres_compaction_behind_seconds",
            "gauge",
            "Database time minus the cutoff of the last finished pass: how old the oldest sample still in the head rows can be (grace + window when compaction keeps up).",
            self.compaction_behind_seconds.get().to_string(),
        );
        head(
            &mut out,
            "promgres_samples_rejected_total",
            "counter",
            "Samples refused, by reason.",
        );
        self.samples_rejected
            .render(&mut out, "promgres_samples_rejected_total");
        scalar(
            &mut out,
            "promgres_metadata_stored_total",
            "counter",
            "Metric metadata entries upserted.",
            self.metadata_stored.get().to_string(),
        );
        head(
            &mut out,
            "promgres_db_commit_duration_seconds",
            "histogram",
            "Duration of one writer transaction (COPY and commit).",
        );
        self.commit_duration
            .render(&mut out, "promgres_db_commit_duration_seconds", "");
        scalar(
            &mut out,
            "promgres_queue_depth",
            "gauge",
            "Write batches waiting for a writer (in the fullest writer's queue with --async-acks).",
            self.queue_depth.get().to_string(),
        );
        scalar(
            &mut out,
            "promgres_queue_capacity",
            "gauge",
            "Capacity of the write queue (--queue-capacity; of each writer's queue with --async-acks).",
            self.queue_capacity.get().to_string(),
        );
        head(
            &mut out,
            "promgres_writer_errors_total",
            "counter",
            "Writer failures, by kind.",
        );
        self.writer_errors
            .render(&mut out, "promgres_writer_errors_total");
        scalar(
            &mut out,
            "promgres_series_cache_size",
            "gauge",
            "Series ids held in the in-memory cache.",
            self.series_cache_size.get().to_string(),
        );
        scalar(
            &mut out,
            "promgres_series_cache_bytes",
            "gauge",
            "Memory the series cache's table holds.",
            self.series_cache_bytes.get().to_string(),
        );
        let hits = self.series_cache_hits.get();
        let misses = self.series_cache_misses.get();
        scalar(
            &mut out,
            "promgres_series_cache_hits_total",
            "counter",
            "Series id look-ups answered by the cache.",
            hits.to_string(),
        );
        scalar(
            &mut out,
            "promgres_series_cache_misses_total",
            "counter",
            "Series id look-ups that went to PostgreSQL.",
            misses.to_string(),
        );
        let ratio = if hits + misses == 0 {
            1.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        scalar(
            &mut out,
            "promgres_series_cache_hit_ratio",
            "gauge",
            "hits / (hits + misses) since start.",
            ratio.to_string(),
        );
        scalar(
            &mut out,
            "promgres_series_created_total",
            "counter",
            "Series rows this instance created.",
            self.series_created.get().to_string(),
        );
        head(
            &mut out,
            "promgres_db_connected",
            "gauge",
            "1 when the connection is open, per connection.",
        );
        self.db_connected.render(&mut out, "promgres_db_connected");
        scalar(
            &mut out,
            "promgres_duplicate_fallbacks_total",
            "counter",
            "Transactions re-done through the ON CONFLICT path because they held re-sent samples.",
            self.duplicate_fallbacks.get().to_string(),
        );
        scalar(
            &mut out,
            "promgres_db_stalled_sessions_ended_total",
            "counter",
            "promgres sessions (of any instance) this instance ended because they waited for their client mid-statement past --db-stall-timeout.",
            self.db_sessions_ended.get().to_string(),
        );
        self.render_listener(&mut out);
        self.render_ha(&mut out);
        self.render_advisory(&mut out);
        out
    }

    fn render_advisory(&self, out: &mut String) {
        let mut scalar = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        scalar(
            "promgres_advisory_lock_leader",
            "gauge",
            "1 while this instance holds the advisory lock (legacy election) and stores data.",
            self.advisory_leader.get().to_string(),
        );
        scalar(
            "promgres_advisory_lock_acquisitions_total",
            "counter",
            "Times this instance took the advisory lock.",
            self.advisory_acquisitions.get().to_string(),
        );
        scalar("promgres_advisory_lock_losses_total", "counter", "Times the lock was lost with its session (database restart, network cut, terminated backend).", self.advisory_losses.get().to_string());
        scalar(
            "promgres_advisory_lock_resignations_total",
            "counter",
            "Times this instance gave the lock up because its Prometheus went silent.",
            self.advisory_resignations.get().to_string(),
        );
        scalar("promgres_advisory_lock_prometheus_silence_seconds", "gauge", "Seconds since the paired Prometheus last sent a write request, as of the last election tick.", (self.advisory_prometheus_silence_ms.get() as f64 / 1000.0).to_string());
    }

    fn render_ha(&self, out: &mut String) {
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            out,
            "promgres_ha_cluster_leader_info",
            "gauge",
            "1 for the replica this instance believes leads the cluster, 0 for former leaders.",
        );
        self.ha_leader_info
            .render(out, "promgres_ha_cluster_leader_info");
        head(
            out,
            "promgres_ha_leader_changes_total",
            "counter",
            "Leader changes seen by this instance.",
        );
        self.ha_leader_changes
            .render(out, "promgres_ha_leader_changes_total");
        head(out, "promgres_ha_samples_accepted_total", "counter", "HA samples accepted for storage, by kind: leader, backfill (a past lease of the replica), failover_buffer (standby samples stored at a failover).");
        self.ha_samples_accepted
            .render(out, "promgres_ha_samples_accepted_total");
        head(
            out,
            "promgres_ha_samples_dropped_total",
            "counter",
            "HA samples not stored, by reason: not_leader, outside_lease, buffer_overflow.",
        );
        self.ha_samples_dropped
            .render(out, "promgres_ha_samples_dropped_total");
        head(
            out,
            "promgres_ha_unpaired_samples_total",
            "counter",
            "Samples of series with one HA label but not the other (missing: cluster or replica), stored as ordinary data.",
        );
        self.ha_samples_unpaired
            .render(out, "promgres_ha_unpaired_samples_total");
        head(
            out,
            "promgres_ha_standby_buffer_bytes",
            "gauge",
            "Bytes held in the standby buffer.",
        );
        let _ = writeln!(
            out,
            "promgres_ha_standby_buffer_bytes {}",
            self.ha_buffer_bytes.get()
        );
        head(out, "promgres_ha_last_failover_gap_seconds", "gauge", "Data-time gap between the old leader's last and the new leader's first stored sample at the last failover.");
        self.ha_last_failover_gap
            .render(out, "promgres_ha_last_failover_gap_seconds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_and_histograms() {
        let m = Metrics::default();
        m.http_requests.add(&["/write", "204"], 2);
        m.samples_rejected.add(&["bad\"reason"], 1);
        m.commit_duration.observe(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("promgres_http_requests_total{path=\"/write\",code=\"204\"} 2"));
        assert!(text.contains("promgres_samples_rejected_total{reason=\"bad\\\"reason\"} 1"));
        assert!(text.contains("promgres_db_commit_duration_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("promgres_db_commit_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("promgres_db_commit_duration_seconds_count 1"));
    }
}
