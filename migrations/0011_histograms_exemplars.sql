-- promgres schema, version 11: native histograms and exemplars.
--
-- Native histograms follow the float path of the storage engine: a committed histogram is a
-- head row (promgres.histogram_head, primary key (series_id, time): exactly-once among head
-- rows), and compaction folds head rows older than the cutoff into one chunk per (series,
-- two-hour window) (promgres.histogram_chunks). Both hold the same encoding
-- (src/engine/histogram_codec.rs, decoded in SQL by promgres.histogram_samples from
-- migration 10): integers as varints, deltas against the previous sample in a chunk; every
-- float (sums, float counts, thresholds) in `floats`, bit-exact.
--
-- Neither table is partitioned: a native histogram replaces the dozens of series of a
-- classic histogram, so there are far fewer rows than float samples, and retention deletes
-- rows by time (src/store.rs) instead of dropping days.
--
-- Exemplars are rows of promgres.exemplars, linked to their series. Each carries its own
-- labels (a trace id, usually: random bytes that do not compress), so a row per exemplar is
-- their compact form; Prometheus itself keeps them in a bounded in-memory buffer.

CREATE TABLE promgres.histogram_head (
    series_id bigint           NOT NULL,
    time      timestamptz      NOT NULL,
    data      bytea            NOT NULL,
    floats    double precision[] NOT NULL,
    PRIMARY KEY (series_id, time)
);

CREATE TABLE promgres.histogram_chunks (
    series_id  bigint           NOT NULL,
    -- Start of the chunk's two-hour window (aligned to the Unix epoch, as for floats).
    start_time timestamptz      NOT NULL,
    -- Its newest histogram: reads skip chunks that end before their range.
    end_time   timestamptz      NOT NULL,
    samples    integer          NOT NULL,
    data       bytea            NOT NULL,
    floats     double precision[] NOT NULL,
    PRIMARY KEY (series_id, start_time)
);
-- Rewritten every compaction slice while the window is open: vacuum early so pages are reused.
ALTER TABLE promgres.histogram_chunks SET (autovacuum_vacuum_scale_factor = 0.05);

CREATE TABLE promgres.exemplars (
    series_id bigint           NOT NULL,
    time      timestamptz      NOT NULL,
    value     double precision NOT NULL,
    -- The exemplar's own labels ({} when it has none), not its series'.
    labels    jsonb            NOT NULL,
    PRIMARY KEY (series_id, time, labels)
);
CREATE INDEX exemplars_time ON promgres.exemplars (time);
CREATE INDEX histogram_head_time ON promgres.histogram_head (time);
CREATE INDEX histogram_chunks_start ON promgres.histogram_chunks (start_time);

-- Every histogram, wherever it lives: a (series, time) is in the head or in a chunk, never
-- both (the insert transaction drops a late head row whose chunk holds its time; compaction
-- deletes the head rows it folded in the same transaction).
CREATE VIEW promgres.all_histograms AS
    SELECT c.series_id, d.*
      FROM promgres.histogram_chunks c
     CROSS JOIN LATERAL promgres.histogram_samples(c.data, c.floats) d
    UNION ALL
    SELECT h.series_id, d.*
      FROM promgres.histogram_head h
     CROSS JOIN LATERAL promgres.histogram_samples(h.data, h.floats) d;

CREATE VIEW public.prom_histograms AS
    SELECT series_id, sample_time AS "time", is_float, count, sum, schema, zero_threshold,
           zero_count, negative_spans, negative_buckets, positive_spans, positive_buckets,
           reset_hint, custom_values
      FROM promgres.all_histograms;

CREATE VIEW public.prom_histogram_buckets AS
    SELECT h.series_id, h.time, b.lower, b.upper, b.count
      FROM public.prom_histograms h
     CROSS JOIN LATERAL promgres.histogram_buckets(h.schema, h.zero_threshold, h.zero_count,
           h.negative_spans, h.negative_buckets, h.positive_spans, h.positive_buckets,
           h.custom_values) b;

CREATE VIEW public.prom_exemplars AS
    SELECT series_id, time, value, labels AS exemplar_labels FROM promgres.exemplars;
