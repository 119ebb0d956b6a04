-- promgres schema, version 9: the chunks of windows still open live in a table of their own.
--
-- Compaction folds head rows every 10 minutes, so the chunk of a two-hour window that is
-- still open is rewritten about twelve times. Rewritten inside the daily partitions of
-- promgres.chunks, each old version left free space there that nothing later reuses once the
-- day is over (measured: a window folded in twelve slices took 7.5x the space of its live
-- chunks). Open windows' chunks therefore live here, a small table (about a window per
-- series) whose space autovacuum recycles, and move to promgres.chunks, written once, in the
-- first pass with a later cutoff that finds their window closed and them untouched. A closed
-- window's chunk that late samples rewrite (a Prometheus catching up) comes back here until
-- the late samples stop, so a catch-up costs its day's partition one old version, not one per
-- pass.
CREATE TABLE promgres.open_chunks (
    series_id  bigint           NOT NULL,
    start_time timestamptz      NOT NULL,
    end_time   timestamptz      NOT NULL,
    samples    integer          NOT NULL,
    data       bytea            NOT NULL,
    nan_values double precision[],
    -- The cutoff (ms since the epoch) of the compaction pass that wrote this version: a pass
    -- with a later cutoff moves it to promgres.chunks once its window has closed.
    written_cutoff bigint       NOT NULL,
    PRIMARY KEY (series_id, start_time)
);
ALTER TABLE promgres.open_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
-- Every row is replaced every 10 minutes: vacuum it early so its pages are reused.
ALTER TABLE promgres.open_chunks SET (autovacuum_vacuum_scale_factor = 0.05);

-- Every sample, wherever it lives: head rows, chunks of closed windows, chunks of open ones.
-- A (series, time) is in one of the three, never more (ARCHITECTURE.md, "Storage engine").
CREATE OR REPLACE VIEW promgres.all_samples AS
    SELECT series_id, time, value FROM promgres.samples
    UNION ALL
    SELECT c.series_id, d.sample_time, d.sample_value
      FROM promgres.chunks c CROSS JOIN LATERAL promgres.chunk_samples(c.data, c.nan_values) d
    UNION ALL
    SELECT c.series_id, d.sample_time, d.sample_value
      FROM promgres.open_chunks c CROSS JOIN LATERAL promgres.chunk_samples(c.data, c.nan_values) d;

CREATE OR REPLACE FUNCTION public.prom_samples_between(from_time timestamptz, to_time timestamptz)
RETURNS TABLE (series_id bigint, "time" timestamptz, value double precision)
LANGUAGE sql STABLE AS $$
    SELECT s.series_id, s.time, s.value FROM promgres.samples s
     WHERE s.time >= from_time AND s.time <= to_time
    UNION ALL
    SELECT c.series_id, d.sample_time, d.sample_value
      FROM promgres.chunks c CROSS JOIN LATERAL promgres.chunk_samples(c.data, c.nan_values) d
     WHERE c.end_time >= from_time
       AND c.start_time <= to_time
       AND c.start_time > from_time - interval '2 hours'
       AND d.sample_time >= from_time AND d.sample_time <= to_time
    UNION ALL
    SELECT c.series_id, d.sample_time, d.sample_value
      FROM promgres.open_chunks c CROSS JOIN LATERAL promgres.chunk_samples(c.data, c.nan_values) d
     WHERE c.end_time >= from_time
       AND c.start_time <= to_time
       AND d.sample_time >= from_time AND d.sample_time <= to_time
$$;
