-- promgres schema, version 7: compressed per-series chunks.
--
-- promgres.samples (one row per sample) becomes the head: where a sample lives from its
-- commit until compaction folds it into its series' chunk for a two-hour window. A chunk is
-- one row per (series, window) holding its samples compressed (src/engine/codec.rs:
-- delta-of-delta times, decimal or XOR values), a few bits a sample instead of about 90
-- bytes for a row and its primary-key entry. ARCHITECTURE.md
-- ("Storage engine") has the design and its crash points.
--
-- A database written by an earlier release needs nothing else: its rows are head rows, and
-- compaction folds them into chunks in the background (or `promgres compact`, with progress).

CREATE TABLE promgres.chunks (
    series_id  bigint           NOT NULL,
    -- Start of the chunk's window (windows are two hours, aligned to the Unix epoch).
    start_time timestamptz      NOT NULL,
    -- Its newest sample: reads skip chunks that end before their range.
    end_time   timestamptz      NOT NULL,
    samples    integer          NOT NULL,
    -- The samples, encoded as src/engine/codec.rs says.
    data       bytea            NOT NULL,
    -- The values of the chunk's NaN samples, bit-exact, in time order. SQL cannot build a
    -- NaN with a chosen payload (a stale marker) from bits; the SQL decoder takes them from
    -- here. NULL when the chunk holds no NaN.
    nan_values double precision[],
    PRIMARY KEY (series_id, start_time)
) PARTITION BY RANGE (start_time);
-- Encoded chunks do not compress further; do not let TOAST try.
ALTER TABLE promgres.chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Creates the partition of `parent` (promgres.samples or promgres.chunks) holding day `day`
-- (UTC) unless it exists; the partition is named <prefix>_YYYYMMDD. Safe when several
-- instances call it at once (the advisory lock serialises creators). Created as a plain table
-- and then attached: ATTACH takes only a SHARE UPDATE EXCLUSIVE lock on the parent, so
-- neither ingest nor long reads block it or are blocked by it.
CREATE FUNCTION promgres.ensure_day_partition(parent text, prefix text, key_column text, day date)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := prefix || '_' || to_char(day, 'YYYYMMDD');
    lower_bound text := to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00';
    upper_bound text := to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
    IF to_regclass(format('promgres_partitions.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('promgres.ensure_partition'));
    -- Re-check in pg_class itself, not through to_regclass: its name lookup may answer from
    -- a cache entry (made by the check above) that taking an advisory lock does not refresh,
    -- and would miss a partition another session created while we waited.
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'promgres_partitions' AND c.relname = part) THEN
        RETURN false;
    END IF;
    SET LOCAL lock_timeout = '10s';
    BEGIN
        EXECUTE format(
            'CREATE TABLE promgres_partitions.%I (LIKE promgres.%I INCLUDING DEFAULTS INCLUDING STORAGE, '
            'CHECK (%I >= %L AND %I < %L))',
            part, parent, key_column, lower_bound, key_column, upper_bound);
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;
    END;
    EXECUTE format(
        'ALTER TABLE promgres.%I ATTACH PARTITION promgres_partitions.%I FOR VALUES FROM (%L) TO (%L)',
        parent, part, lower_bound, upper_bound);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION promgres.ensure_partition(day date) RETURNS boolean
LANGUAGE sql AS $$
    SELECT promgres.ensure_day_partition('samples', 'samples', 'time', day)
$$;

CREATE FUNCTION promgres.ensure_chunk_partition(day date) RETURNS boolean
LANGUAGE sql AS $$
    SELECT promgres.ensure_day_partition('chunks', 'chunks', 'start_time', day)
$$;

-- `n` bits (1..64) of `data` from bit `pos` on, most significant first, as the low bits of
-- a bigint (64 bits come back as their two's-complement bigint).
CREATE FUNCTION promgres.chunk_bits(data bytea, pos bigint, n integer) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    result bigint := 0;
    byte_value integer;
    avail integer;
    take integer;
BEGIN
    WHILE n > 0 LOOP
        byte_value := get_byte(data, (pos >> 3)::integer);
        avail := 8 - (pos & 7)::integer;
        take := least(avail, n);
        result := (result << take) | ((byte_value >> (avail - take)) & ((1 << take) - 1));
        pos := pos + take;
        n := n - take;
    END LOOP;
    RETURN result;
END
$$;

-- The float8 whose IEEE 754 bits are `b`, built exactly by arithmetic (powers of two), -0.0
-- and infinities included. NaN bits give the canonical NaN; callers that need a NaN's
-- payload take it from the chunk's nan_values.
CREATE FUNCTION promgres.float8_from_bits(b bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE
        WHEN ((b >> 52) & 2047) = 2047 AND (b & 4503599627370495) <> 0 THEN 'NaN'::float8
        WHEN ((b >> 52) & 2047) = 2047 THEN
            CASE WHEN b < 0 THEN '-Infinity'::float8 ELSE 'Infinity'::float8 END
        ELSE
            (CASE WHEN b < 0 THEN -1::float8 ELSE 1::float8 END) *
            (CASE WHEN ((b >> 52) & 2047) = 0
                  THEN (b & 4503599627370495)::float8 * (2::float8 ^ (-1074))
                  ELSE ((b & 4503599627370495) + 4503599627370496)::float8
                       * (2::float8 ^ (((b >> 52) & 2047) - 1075)::float8)
             END)
    END
$$;

-- A value of the chunk encoding's bucketed codes at bit `pos`: `0` is zero; otherwise a
-- prefix of ones (ended by a zero, none after the fourth) picks a width b1..b4 and that many
-- bits follow, two's complement. Returns the value and the position after it.
CREATE FUNCTION promgres.chunk_bucketed(data bytea, pos bigint, b1 integer, b2 integer,
                                        b3 integer, b4 integer, OUT v bigint, OUT next_pos bigint)
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    prefix integer := 0;
    n integer;
BEGIN
    LOOP
        EXIT WHEN prefix = 4;
        IF get_bit(data, ((pos & ~7::bigint) + 7 - (pos & 7))::integer) = 0 THEN
            pos := pos + 1;
            EXIT;
        END IF;
        pos := pos + 1;
        prefix := prefix + 1;
    END LOOP;
    IF prefix = 0 THEN
        v := 0;
        next_pos := pos;
        RETURN;
    END IF;
    n := (ARRAY[b1, b2, b3, b4])[prefix];
    v := promgres.chunk_bits(data, pos, n);
    IF n < 64 AND v >= (1::bigint << (n - 1)) THEN
        v := v - (1::bigint << n);
    END IF;
    next_pos := pos + n;
END
$$;

-- Decodes one chunk into its samples, in time order, bit-exact (NaN payloads from
-- nan_values). The format is src/engine/codec.rs's (its comment has the layout); promgres's
-- own reads decode in Rust, this is for plain SQL. Change both together.
CREATE FUNCTION promgres.chunk_samples(data bytea, nan_values double precision[])
RETURNS TABLE (sample_time timestamptz, sample_value double precision)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    pow10 double precision[] := '{1e0,1e1,1e2,1e3,1e4,1e5,1e6,1e7,1e8,1e9,1e10,1e11,1e12,1e13,1e14,1e15,1e16,1e17,1e18,1e19,1e20,1e21,1e22}';
    total integer;
    pos bigint := 33;
    is_decimal boolean;
    ts bigint;
    gap bigint;
    code bigint;
    e integer := 0;
    second_order boolean := false;
    m0 bigint := 0;
    step bigint := 1;
    reduced bigint := 0;
    delta bigint := 0;
    m bigint;
    vbits bigint := 0;
    lead_zeros integer := 0;
    trail_zeros integer := 0;
    len integer;
    nan_index integer := 0;
    i integer;
BEGIN
    IF data IS NULL OR octet_length(data) < 5 THEN
        RETURN;
    END IF;
    total := promgres.chunk_bits(data, 0, 32)::integer;
    is_decimal := promgres.chunk_bits(data, 32, 1) = 1;
    ts := promgres.chunk_bits(data, pos, 64);
    gap := promgres.chunk_bits(data, pos + 64, 64);
    pos := pos + 128;
    IF is_decimal THEN
        e := promgres.chunk_bits(data, pos, 11)::integer - 1024;
        second_order := promgres.chunk_bits(data, pos + 11, 1) = 1;
        m0 := promgres.chunk_bits(data, pos + 12, 64);
        step := promgres.chunk_bits(data, pos + 76, 64);
        pos := pos + 140;
    END IF;
    FOR i IN 0 .. total - 1 LOOP
        IF i > 0 THEN
            SELECT b.v, b.next_pos INTO code, pos FROM promgres.chunk_bucketed(data, pos, 4, 8, 16, 64) b;
            ts := ts + gap + code;
        END IF;
        sample_time := timestamptz 'epoch' + ts * interval '1 millisecond';
        IF is_decimal THEN
            IF i > 0 THEN
                SELECT b.v, b.next_pos INTO code, pos FROM promgres.chunk_bucketed(data, pos, 5, 10, 20, 64) b;
                IF second_order THEN
                    delta := delta + code;
                    reduced := reduced + delta;
                ELSE
                    reduced := reduced + code;
                END IF;
            END IF;
            m := m0 + step * reduced;
            -- The same operation as Rust's decimal_value: exact operands, one rounding.
            IF e >= 0 AND e <= 22 THEN
                sample_value := m::float8 * pow10[e + 1];
            ELSIF e < 0 AND e >= -22 THEN
                sample_value := m::float8 / pow10[-e + 1];
            ELSE
                sample_value := (m::text || 'e' || e)::float8;
            END IF;
        ELSE
            IF i = 0 THEN
                vbits := promgres.chunk_bits(data, pos, 64);
                pos := pos + 64;
            ELSIF get_bit(data, ((pos & ~7::bigint) + 7 - (pos & 7))::integer) = 0 THEN
                pos := pos + 1;
            ELSE
                IF get_bit(data, (((pos + 1) & ~7::bigint) + 7 - ((pos + 1) & 7))::integer) = 1 THEN
                    lead_zeros := promgres.chunk_bits(data, pos + 2, 5)::integer;
                    len := promgres.chunk_bits(data, pos + 7, 6)::integer;
                    IF len = 0 THEN
                        len := 64;
                    END IF;
                    trail_zeros := 64 - lead_zeros - len;
                    pos := pos + 13;
                ELSE
                    len := 64 - lead_zeros - trail_zeros;
                    pos := pos + 2;
                END IF;
                vbits := vbits # (promgres.chunk_bits(data, pos, len) << trail_zeros);
                pos := pos + len;
            END IF;
            IF ((vbits >> 52) & 2047) = 2047 AND (vbits & 4503599627370495) <> 0 THEN
                nan_index := nan_index + 1;
                sample_value := coalesce(nan_values[nan_index], 'NaN'::float8);
            ELSE
                sample_value := promgres.float8_from_bits(vbits);
            END IF;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Every sample, wherever it lives: head rows and decoded chunks. A (series, time) is in one
-- of the two, never both (ARCHITECTURE.md, "Storage engine").
CREATE VIEW promgres.all_samples AS
    SELECT series_id, time, value FROM promgres.samples
    UNION ALL
    SELECT c.series_id, d.sample_time, d.sample_value
      FROM promgres.chunks c CROSS JOIN LATERAL promgres.chunk_samples(c.data, c.nan_values) d;

CREATE OR REPLACE VIEW public.prom_samples AS
    SELECT series_id, time, value FROM promgres.all_samples;

-- Samples between two times, reading only the chunks that overlap them: the fast way to
-- ask SQL for a time range (the views decode every chunk they are asked about).
CREATE FUNCTION public.prom_samples_between(from_time timestamptz, to_time timestamptz)
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
$$;

-- Metric views read every sample, head and chunks.
CREATE OR REPLACE FUNCTION promgres.ensure_metric_view(metric_name text) RETURNS text
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
    PERFORM promgres.create_metric_view(vname, metric_name);
    INSERT INTO promgres.metrics (name, view_name) VALUES (metric_name, vname);
    RETURN vname;
END
$$;

CREATE FUNCTION promgres.create_metric_view(vname text, metric_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'CREATE OR REPLACE VIEW prom_metric.%I AS '
        'SELECT s.time, s.value, s.series_id, ser.labels '
        'FROM promgres.all_samples s JOIN promgres.series ser ON ser.id = s.series_id '
        'WHERE ser.metric = %L',
        vname, metric_name);
END
$$;

SELECT count(promgres.create_metric_view(view_name, name)) FROM promgres.metrics;

-- Days holding head rows that may be older than the compaction cutoff, marked by the insert
-- that stored them (late samples), so the half-hourly compaction sweep visits only those.
CREATE TABLE promgres.compaction_pending (
    day       integer     PRIMARY KEY,  -- days since 1970-01-01 (UTC)
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
