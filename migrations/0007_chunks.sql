-- promgres schema, version 7: compressed per-series chunks.
--
-- promgres.samples (one row per sample) becomes the head: where a sample lives from its
-- commit until compaction folds it into its series' chunk for a two-hour window. A chunk is
-- one row per (series, window) holding a Prometheus XOR ("Gorilla") chunk, about 1-2 bytes
-- a sample instead of about 90 for a row and its primary-key entry. ARCHITECTURE.md
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
    -- A Prometheus XOR chunk: big-endian u16 sample count, then the bit stream.
    data       bytea            NOT NULL,
    -- The values of the chunk's NaN samples, bit-exact, in time order. SQL cannot build a
    -- NaN with a chosen payload (a stale marker) from bits; the SQL decoder takes them from
    -- here. NULL when the chunk holds no NaN.
    nan_values double precision[],
    PRIMARY KEY (series_id, start_time)
) PARTITION BY RANGE (start_time);
-- XOR chunks do not compress further; do not let TOAST try.
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
    IF to_regclass(format('promgres_partitions.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    SET LOCAL lock_timeout = '10s';
    EXECUTE format(
        'CREATE TABLE promgres_partitions.%I (LIKE promgres.%I INCLUDING DEFAULTS INCLUDING STORAGE, '
        'CHECK (%I >= %L AND %I < %L))',
        part, parent, key_column, lower_bound, key_column, upper_bound);
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

-- Decodes one chunk into its samples, in time order, bit-exact (NaN payloads from
-- nan_values). The same format as Prometheus's tsdb/chunkenc/xor.go; promgres's own reads
-- decode chunks in Rust, this is for plain SQL.
CREATE FUNCTION promgres.chunk_samples(data bytea, nan_values double precision[])
RETURNS TABLE (sample_time timestamptz, sample_value double precision)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    total integer;
    pos bigint := 16;
    ts bigint := 0;
    delta bigint := 0;
    dod bigint;
    vbits bigint := 0;
    lead_zeros integer := 0;
    trail_zeros integer := 0;
    sig integer;
    size integer;
    x bigint;
    b bigint;
    shift integer;
    nan_index integer := 0;
    i integer;
BEGIN
    IF data IS NULL OR octet_length(data) < 2 THEN
        RETURN;
    END IF;
    total := (get_byte(data, 0) << 8) | get_byte(data, 1);
    FOR i IN 0 .. total - 1 LOOP
        IF i < 2 THEN
            -- Varint (first time, zig-zag) or uvarint (first delta), byte by byte.
            x := 0;
            shift := 0;
            LOOP
                b := promgres.chunk_bits(data, pos, 8);
                pos := pos + 8;
                x := x | ((b & 127) << shift);
                shift := shift + 7;
                EXIT WHEN b < 128;
            END LOOP;
            IF i = 0 THEN
                ts := (x >> 1) # (-(x & 1));
                vbits := promgres.chunk_bits(data, pos, 64);
                pos := pos + 64;
            ELSE
                delta := x;
                ts := ts + delta;
            END IF;
        ELSE
            -- Delta of delta: 0, 10 + 14 bits, 110 + 17, 1110 + 20, 1111 + 64.
            size := 0;
            IF get_bit(data, ((pos & ~7::bigint) + 7 - (pos & 7))::integer) = 1 THEN
                IF promgres.chunk_bits(data, pos + 1, 1) = 0 THEN
                    size := 14; pos := pos + 2;
                ELSIF promgres.chunk_bits(data, pos + 2, 1) = 0 THEN
                    size := 17; pos := pos + 3;
                ELSIF promgres.chunk_bits(data, pos + 3, 1) = 0 THEN
                    size := 20; pos := pos + 4;
                ELSE
                    size := 64; pos := pos + 4;
                END IF;
            ELSE
                pos := pos + 1;
            END IF;
            IF size > 0 THEN
                dod := promgres.chunk_bits(data, pos, size);
                pos := pos + size;
                IF size < 64 AND dod > (1::bigint << (size - 1)) THEN
                    dod := dod - (1::bigint << size);
                END IF;
                delta := delta + dod;
            END IF;
            ts := ts + delta;
        END IF;
        IF i > 0 THEN
            -- XOR value: 0 = same; 10 = within the previous lead_zeros/trail_zeros window;
            -- 11 = 5 bits lead_zeros zeros, 6 bits significant length (0 means 64), the bits.
            IF get_bit(data, ((pos & ~7::bigint) + 7 - (pos & 7))::integer) = 1 THEN
                IF get_bit(data, (((pos + 1) & ~7::bigint) + 7 - ((pos + 1) & 7))::integer) = 1 THEN
                    lead_zeros := promgres.chunk_bits(data, pos + 2, 5)::integer;
                    sig := promgres.chunk_bits(data, pos + 7, 6)::integer;
                    IF sig = 0 THEN
                        sig := 64;
                    END IF;
                    trail_zeros := 64 - lead_zeros - sig;
                    pos := pos + 13;
                ELSE
                    sig := 64 - lead_zeros - trail_zeros;
                    pos := pos + 2;
                END IF;
                vbits := vbits # (promgres.chunk_bits(data, pos, sig) << trail_zeros);
                pos := pos + sig;
            ELSE
                pos := pos + 1;
            END IF;
        END IF;
        sample_time := timestamptz 'epoch' + ts * interval '1 millisecond';
        IF ((vbits >> 52) & 2047) = 2047 AND (vbits & 4503599627370495) <> 0 THEN
            nan_index := nan_index + 1;
            sample_value := coalesce(nan_values[nan_index], 'NaN'::float8);
        ELSE
            sample_value := promgres.float8_from_bits(vbits);
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
