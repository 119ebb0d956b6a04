-- promgres schema, version 1.
-- Internal tables live in schema "promgres"; users query the views in "public" and
-- "prom_metric" (documented in docs/sql.md), so the tables can change behind them.

CREATE SCHEMA IF NOT EXISTS promgres;
CREATE SCHEMA IF NOT EXISTS promgres_partitions;
CREATE SCHEMA IF NOT EXISTS prom_metric;

-- One row per distinct label set. labels holds every label, __name__ included.
-- Uniqueness is on a hash of the canonical jsonb text: a B-tree over the jsonb itself would
-- refuse label sets larger than a third of a page.
CREATE TABLE promgres.series (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    metric      text        NOT NULL,
    labels      jsonb       NOT NULL,
    labels_hash bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_metric_idx ON promgres.series (metric);
CREATE INDEX series_labels_idx ON promgres.series USING gin (labels jsonb_path_ops);

-- Samples, range-partitioned by day (UTC) so retention drops whole partitions.
-- The primary key makes a re-sent batch impossible to store twice.
CREATE TABLE promgres.samples (
    series_id bigint           NOT NULL,
    time      timestamptz      NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (series_id, time)
) PARTITION BY RANGE (time);

-- Metrics seen so far, with the name of their view in schema prom_metric.
CREATE TABLE promgres.metrics (
    name       text PRIMARY KEY,
    view_name  text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Latest metadata Prometheus sent for each metric family.
CREATE TABLE promgres.metadata (
    metric     text PRIMARY KEY,
    type       text NOT NULL,
    help       text NOT NULL,
    unit       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Creates the partition holding day `day` (UTC) unless it exists. Safe when several
-- instances call it at once: the advisory lock serialises creators. The partition is created
-- as a plain table and then attached: ATTACH takes only a SHARE UPDATE EXCLUSIVE lock on
-- promgres.samples, so neither ingest nor long-running reads block it or are blocked by it
-- (CREATE TABLE ... PARTITION OF would need ACCESS EXCLUSIVE).
CREATE FUNCTION promgres.ensure_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'samples_' || to_char(day, 'YYYYMMDD');
    lower_bound text := to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00';
    upper_bound text := to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
    IF to_regclass(format('promgres_partitions.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('promgres.ensure_partition'));
    IF to_regclass(format('promgres_partitions.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    SET LOCAL lock_timeout = '10s';
    EXECUTE format(
        'CREATE TABLE promgres_partitions.%I (LIKE promgres.samples INCLUDING DEFAULTS, '
        'CHECK (time >= %L AND time < %L))',
        part, lower_bound, upper_bound);
    EXECUTE format(
        'ALTER TABLE promgres.samples ATTACH PARTITION promgres_partitions.%I FOR VALUES FROM (%L) TO (%L)',
        part, lower_bound, upper_bound);
    RETURN true;
END
$$;

-- Creates the view prom_metric."<metric>" the first time a metric is seen and returns its
-- name. Names are quoted with %I/%L, so a metric name cannot inject SQL. A name longer than
-- PostgreSQL's 63-byte identifier limit gets a shortened name with a hash suffix, recorded
-- in promgres.metrics, instead of being silently truncated onto another metric's view.
CREATE FUNCTION promgres.ensure_metric_view(metric_name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    vname text;
BEGIN
    SELECT view_name INTO vname FROM promgres.metrics WHERE name = metric_name;
    IF FOUND THEN
        RETURN vname;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('promgres.ensure_metric_view'));
    SELECT view_name INTO vname FROM promgres.metrics WHERE name = metric_name;
    IF FOUND THEN
        RETURN vname;
    END IF;
    vname := metric_name;
    IF octet_length(vname) > 63
       OR EXISTS (SELECT 1 FROM promgres.metrics WHERE view_name = vname) THEN
        vname := left(metric_name, 40);
        WHILE octet_length(vname) > 40 LOOP
            vname := left(vname, length(vname) - 1);
        END LOOP;
        vname := vname || '_' || left(md5(metric_name), 16);
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_metric.%I AS '
        'SELECT s.time, s.value, s.series_id, ser.labels '
        'FROM promgres.samples s JOIN promgres.series ser ON ser.id = s.series_id '
        'WHERE ser.metric = %L',
        vname, metric_name);
    INSERT INTO promgres.metrics (name, view_name) VALUES (metric_name, vname);
    RETURN vname;
END
$$;

-- The documented SQL surface (docs/sql.md).
CREATE VIEW public.prom_series AS
    SELECT id AS series_id, metric, labels FROM promgres.series;
CREATE VIEW public.prom_samples AS
    SELECT series_id, time, value FROM promgres.samples;
CREATE VIEW public.prom_metadata AS
    SELECT metric, type, help, unit, updated_at FROM promgres.metadata;
