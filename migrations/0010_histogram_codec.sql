-- The SQL twin of src/engine/histogram_codec.rs: decodes one series' native histograms of a
-- window from `(data bytea, floats float8[])`, bit-exact (every float is taken from `floats`
-- as stored, never rebuilt from bits: NaN payloads such as the stale marker and -0.0 come out
-- as they went in; integer counts are uint64 shown as float8 with the same rounding as Rust's
-- `u64 as f64`). The format is in the Rust module's doc comment; change both together.
--
-- On corrupt input it raises 'corrupt histogram chunk: ...' when a read runs past the end of
-- `data` or `floats` (or a varint past 10 bytes, or a span past integer range, or a "same
-- layout" flag without a layout before it); it checks nothing more, so other corruption
-- returns wrong rows or raises PostgreSQL's own errors (e.g. bigint out of range). Bytes or
-- floats after the last sample are ignored.
--
-- The varint read is written out at each of its 19 uses on purpose: decoding all varints into
-- an array first and walking that (one copy of the loop) was measured 35 % slower (43 k vs
-- 66 k histograms/s in tests/histogram_codec.rs), and a PL/pgSQL function call per varint
-- costs far more, as migration 8 found for floats. Change the 19 together.
CREATE OR REPLACE FUNCTION promgres.histogram_samples(data bytea, floats double precision[])
RETURNS TABLE (sample_time timestamptz, is_float boolean, count double precision, sum double precision,
  schema integer, zero_threshold double precision, zero_count double precision,
  negative_spans integer[], negative_buckets double precision[],
  positive_spans integer[], positive_buckets double precision[],
  reset_hint text, custom_values double precision[])
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    dlen integer;
    pos integer := 1;
    fi integer;
    flast integer;
    total bigint;
    i integer;
    k integer;
    b integer;
    sh integer;
    z bigint;
    d bigint;
    v bigint;
    ts bigint := 0;
    gap bigint := 0;
    flags bigint;
    same_layout boolean;
    prev_float boolean;
    n bigint;
    n_negative bigint := 0;
    n_positive bigint := 0;
    int_count bigint;
    int_zero bigint;
    int_negative bigint[];
    int_positive bigint[];
    i64_min constant bigint := -9223372036854775807 - 1;
    i64_max constant bigint := 9223372036854775807;
    two64 constant numeric := 18446744073709551616;
    hints constant text[] := '{unknown,yes,no,gauge}';
    epoch constant timestamptz := timestamptz 'epoch';
    ms constant interval := interval '1 millisecond';
    cut constant text := 'corrupt histogram chunk: cut short';
BEGIN
    IF data IS NULL THEN
        RETURN;
    END IF;
    dlen := octet_length(data);
    -- Detoast once (a variable holding a TOAST pointer fetches the value on every access),
    -- with ten zero bytes after the end: a varint begun inside `data` ends within them, so
    -- get_byte never fails and the check after each sample reports the cut.
    data := data || '\x00000000000000000000'::bytea;
    fi := coalesce(array_lower(floats, 1), 1);
    flast := coalesce(array_upper(floats, 1), 0);
    IF dlen < 2 OR get_byte(data, 0) <> 1 THEN
        RAISE EXCEPTION 'corrupt histogram chunk: not version 1';
    END IF;
    IF pos >= dlen THEN
        RAISE EXCEPTION '%', cut;
    END IF;
    b := get_byte(data, pos);
    pos := pos + 1;
    IF b < 128 THEN
        z := b;
    ELSE
        z := b & 127;
        sh := 7;
        LOOP
            b := get_byte(data, pos);
            pos := pos + 1;
            z := z | ((b & 127)::bigint << sh);
            EXIT WHEN b < 128;
            sh := sh + 7;
            IF sh > 63 THEN
                RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
            END IF;
        END LOOP;
    END IF;
    total := z;
    -- A sample takes at least two bytes.
    IF total > dlen THEN
        RAISE EXCEPTION 'corrupt histogram chunk: % samples in % bytes', total, dlen;
    END IF;
    FOR i IN 1 .. total LOOP
        -- Time: the first, then the gap, then each gap's change.
        IF pos >= dlen THEN
            RAISE EXCEPTION '%', cut;
        END IF;
        b := get_byte(data, pos);
        pos := pos + 1;
        IF b < 128 THEN
            z := b;
        ELSE
            z := b & 127;
            sh := 7;
            LOOP
                b := get_byte(data, pos);
                pos := pos + 1;
                z := z | ((b & 127)::bigint << sh);
                EXIT WHEN b < 128;
                sh := sh + 7;
                IF sh > 63 THEN
                    RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                END IF;
            END LOOP;
        END IF;
        d := ((z >> 1) & i64_max) # -(z & 1);
        IF i = 1 THEN
            ts := d;
        ELSE
            IF i = 2 THEN
                gap := d;
            ELSE
                gap := gap + d;
            END IF;
            ts := ts + gap;
        END IF;
        sample_time := epoch + ts * ms;
        IF pos >= dlen THEN
            RAISE EXCEPTION '%', cut;
        END IF;
        b := get_byte(data, pos);
        pos := pos + 1;
        IF b < 128 THEN
            z := b;
        ELSE
            z := b & 127;
            sh := 7;
            LOOP
                b := get_byte(data, pos);
                pos := pos + 1;
                z := z | ((b & 127)::bigint << sh);
                EXIT WHEN b < 128;
                sh := sh + 7;
                IF sh > 63 THEN
                    RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                END IF;
            END LOOP;
        END IF;
        flags := z;
        is_float := (flags & 1) = 1;
        reset_hint := hints[((flags >> 1) & 3) + 1];
        same_layout := (flags & 8) <> 0;
        IF same_layout AND (i = 1 OR is_float <> prev_float) THEN
            RAISE EXCEPTION 'corrupt histogram chunk: "same layout" without one before';
        END IF;
        IF NOT same_layout THEN
            IF pos >= dlen THEN
                RAISE EXCEPTION '%', cut;
            END IF;
            b := get_byte(data, pos);
            pos := pos + 1;
            IF b < 128 THEN
                z := b;
            ELSE
                z := b & 127;
                sh := 7;
                LOOP
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    z := z | ((b & 127)::bigint << sh);
                    EXIT WHEN b < 128;
                    sh := sh + 7;
                    IF sh > 63 THEN
                        RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                    END IF;
                END LOOP;
            END IF;
            d := ((z >> 1) & i64_max) # -(z & 1);
            IF d < -2147483648 OR d > 2147483647 THEN
                RAISE EXCEPTION 'corrupt histogram chunk: schema out of range';
            END IF;
            schema := d;
            negative_spans := '{}';
            n_negative := 0;
            IF pos >= dlen THEN
                RAISE EXCEPTION '%', cut;
            END IF;
            b := get_byte(data, pos);
            pos := pos + 1;
            IF b < 128 THEN
                z := b;
            ELSE
                z := b & 127;
                sh := 7;
                LOOP
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    z := z | ((b & 127)::bigint << sh);
                    EXIT WHEN b < 128;
                    sh := sh + 7;
                    IF sh > 63 THEN
                        RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                    END IF;
                END LOOP;
            END IF;
            n := z;
            FOR k IN 1 .. n LOOP
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                d := ((z >> 1) & i64_max) # -(z & 1);
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                IF d < -2147483648 OR d > 2147483647 OR z < 0 OR z > 2147483647 THEN
                    RAISE EXCEPTION 'corrupt histogram chunk: span out of range';
                END IF;
                negative_spans := negative_spans || d::integer || z::integer;
                n_negative := n_negative + z;
            END LOOP;
            positive_spans := '{}';
            n_positive := 0;
            IF pos >= dlen THEN
                RAISE EXCEPTION '%', cut;
            END IF;
            b := get_byte(data, pos);
            pos := pos + 1;
            IF b < 128 THEN
                z := b;
            ELSE
                z := b & 127;
                sh := 7;
                LOOP
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    z := z | ((b & 127)::bigint << sh);
                    EXIT WHEN b < 128;
                    sh := sh + 7;
                    IF sh > 63 THEN
                        RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                    END IF;
                END LOOP;
            END IF;
            n := z;
            FOR k IN 1 .. n LOOP
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                d := ((z >> 1) & i64_max) # -(z & 1);
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                IF d < -2147483648 OR d > 2147483647 OR z < 0 OR z > 2147483647 THEN
                    RAISE EXCEPTION 'corrupt histogram chunk: span out of range';
                END IF;
                positive_spans := positive_spans || d::integer || z::integer;
                n_positive := n_positive + z;
            END LOOP;
            -- The zero threshold, then the custom bounds.
            IF pos >= dlen THEN
                RAISE EXCEPTION '%', cut;
            END IF;
            b := get_byte(data, pos);
            pos := pos + 1;
            IF b < 128 THEN
                z := b;
            ELSE
                z := b & 127;
                sh := 7;
                LOOP
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    z := z | ((b & 127)::bigint << sh);
                    EXIT WHEN b < 128;
                    sh := sh + 7;
                    IF sh > 63 THEN
                        RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                    END IF;
                END LOOP;
            END IF;
            n := z;
            IF n < 0 OR fi + n > flast THEN
                RAISE EXCEPTION '%', cut;
            END IF;
            zero_threshold := floats[fi];
            custom_values := floats[fi + 1 : fi + n];
            fi := fi + 1 + n;
        END IF;
        IF (flags & 16) = 0 THEN
            IF fi > flast THEN
                RAISE EXCEPTION '%', cut;
            END IF;
            sum := floats[fi];
            fi := fi + 1;
        ELSIF i = 1 THEN
            RAISE EXCEPTION 'corrupt histogram chunk: "same sum" on the first sample';
        END IF;
        IF is_float THEN
            IF fi + 1 + n_negative + n_positive > flast THEN
                RAISE EXCEPTION '%', cut;
            END IF;
            count := floats[fi];
            zero_count := floats[fi + 1];
            negative_buckets := floats[fi + 2 : fi + 1 + n_negative];
            positive_buckets := floats[fi + 2 + n_negative : fi + 1 + n_negative + n_positive];
            fi := fi + 2 + n_negative + n_positive;
        ELSE
            -- Integer counts: uint64 in bigint's bits; with the same layout each is the
            -- wrapping sum of the previous one and a zigzag difference.
            IF same_layout THEN
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                d := ((z >> 1) & i64_max) # -(z & 1);
                v := int_count;
                IF (d > 0 AND v > i64_max - d) OR (d < 0 AND v < i64_min - d) THEN
                    IF d > 0 THEN
                        int_count := (v + i64_min) + (d + i64_min);
                    ELSE
                        int_count := (v - i64_min) + (d - i64_min);
                    END IF;
                ELSE
                    int_count := v + d;
                END IF;
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                d := ((z >> 1) & i64_max) # -(z & 1);
                v := int_zero;
                IF (d > 0 AND v > i64_max - d) OR (d < 0 AND v < i64_min - d) THEN
                    IF d > 0 THEN
                        int_zero := (v + i64_min) + (d + i64_min);
                    ELSE
                        int_zero := (v - i64_min) + (d - i64_min);
                    END IF;
                ELSE
                    int_zero := v + d;
                END IF;
                FOR k IN 1 .. n_negative LOOP
                    IF pos >= dlen THEN
                        RAISE EXCEPTION '%', cut;
                    END IF;
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    IF b < 128 THEN
                        z := b;
                    ELSE
                        z := b & 127;
                        sh := 7;
                        LOOP
                            b := get_byte(data, pos);
                            pos := pos + 1;
                            z := z | ((b & 127)::bigint << sh);
                            EXIT WHEN b < 128;
                            sh := sh + 7;
                            IF sh > 63 THEN
                                RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                            END IF;
                        END LOOP;
                    END IF;
                    d := ((z >> 1) & i64_max) # -(z & 1);
                    v := int_negative[k];
                    IF (d > 0 AND v > i64_max - d) OR (d < 0 AND v < i64_min - d) THEN
                        IF d > 0 THEN
                            int_negative[k] := (v + i64_min) + (d + i64_min);
                        ELSE
                            int_negative[k] := (v - i64_min) + (d - i64_min);
                        END IF;
                    ELSE
                        int_negative[k] := v + d;
                    END IF;
                END LOOP;
                FOR k IN 1 .. n_positive LOOP
                    IF pos >= dlen THEN
                        RAISE EXCEPTION '%', cut;
                    END IF;
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    IF b < 128 THEN
                        z := b;
                    ELSE
                        z := b & 127;
                        sh := 7;
                        LOOP
                            b := get_byte(data, pos);
                            pos := pos + 1;
                            z := z | ((b & 127)::bigint << sh);
                            EXIT WHEN b < 128;
                            sh := sh + 7;
                            IF sh > 63 THEN
                                RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                            END IF;
                        END LOOP;
                    END IF;
                    d := ((z >> 1) & i64_max) # -(z & 1);
                    v := int_positive[k];
                    IF (d > 0 AND v > i64_max - d) OR (d < 0 AND v < i64_min - d) THEN
                        IF d > 0 THEN
                            int_positive[k] := (v + i64_min) + (d + i64_min);
                        ELSE
                            int_positive[k] := (v - i64_min) + (d - i64_min);
                        END IF;
                    ELSE
                        int_positive[k] := v + d;
                    END IF;
                END LOOP;
            ELSE
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                int_count := z;
                IF pos >= dlen THEN
                    RAISE EXCEPTION '%', cut;
                END IF;
                b := get_byte(data, pos);
                pos := pos + 1;
                IF b < 128 THEN
                    z := b;
                ELSE
                    z := b & 127;
                    sh := 7;
                    LOOP
                        b := get_byte(data, pos);
                        pos := pos + 1;
                        z := z | ((b & 127)::bigint << sh);
                        EXIT WHEN b < 128;
                        sh := sh + 7;
                        IF sh > 63 THEN
                            RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                        END IF;
                    END LOOP;
                END IF;
                int_zero := z;
                int_negative := '{}';
                FOR k IN 1 .. n_negative LOOP
                    IF pos >= dlen THEN
                        RAISE EXCEPTION '%', cut;
                    END IF;
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    IF b < 128 THEN
                        z := b;
                    ELSE
                        z := b & 127;
                        sh := 7;
                        LOOP
                            b := get_byte(data, pos);
                            pos := pos + 1;
                            z := z | ((b & 127)::bigint << sh);
                            EXIT WHEN b < 128;
                            sh := sh + 7;
                            IF sh > 63 THEN
                                RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                            END IF;
                        END LOOP;
                    END IF;
                    int_negative[k] := z;
                END LOOP;
                int_positive := '{}';
                FOR k IN 1 .. n_positive LOOP
                    IF pos >= dlen THEN
                        RAISE EXCEPTION '%', cut;
                    END IF;
                    b := get_byte(data, pos);
                    pos := pos + 1;
                    IF b < 128 THEN
                        z := b;
                    ELSE
                        z := b & 127;
                        sh := 7;
                        LOOP
                            b := get_byte(data, pos);
                            pos := pos + 1;
                            z := z | ((b & 127)::bigint << sh);
                            EXIT WHEN b < 128;
                            sh := sh + 7;
                            IF sh > 63 THEN
                                RAISE EXCEPTION 'corrupt histogram chunk: varint over 10 bytes';
                            END IF;
                        END LOOP;
                    END IF;
                    int_positive[k] := z;
                END LOOP;
            END IF;
            -- bigint to float8 rounds as Rust's u64 as f64 does; counts of 2^63 and more
            -- (negative here) go through numeric, whose conversion also rounds correctly.
            count := CASE WHEN int_count >= 0 THEN int_count::float8 ELSE (int_count + two64)::float8 END;
            zero_count := CASE WHEN int_zero >= 0 THEN int_zero::float8 ELSE (int_zero + two64)::float8 END;
            negative_buckets := int_negative::float8[];
            IF 0 > ANY (int_negative) THEN
                negative_buckets := ARRAY(SELECT CASE WHEN x >= 0 THEN x::float8 ELSE (x + two64)::float8 END
                                            FROM unnest(int_negative) x);
            END IF;
            positive_buckets := int_positive::float8[];
            IF 0 > ANY (int_positive) THEN
                positive_buckets := ARRAY(SELECT CASE WHEN x >= 0 THEN x::float8 ELSE (x + two64)::float8 END
                                            FROM unnest(int_positive) x);
            END IF;
        END IF;
        IF pos > dlen THEN
            RAISE EXCEPTION '%', cut;
        END IF;
        prev_float := is_float;
        RETURN NEXT;
    END LOOP;
END
$$;


-- x * 2^e as Go's math.Ldexp rounds it, for the x in [0.5, 1] bucket bounds use, except that
-- 2^1024 (one past the largest float) is the largest float: Prometheus's upper bound of the
-- last bucket before the one of +-Inf observations. Exact powers of two and one rounding,
-- without ever producing an underflow or overflow error.
CREATE OR REPLACE FUNCTION promgres.histogram_ldexp(x double precision, e bigint)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN (e = 1024 AND x = 1) OR (e = 1025 AND x = 0.5) THEN 1.7976931348623157e308::float8
    WHEN e > 1024 OR (e = 1024 AND x >= 1) THEN 'Infinity'::float8
    -- e - 1, not 1023: a constant would be folded at plan time, overflowing for x = 1.
    WHEN e = 1024 THEN (x * 2) * 2::float8 ^ (e - 1)::float8
    WHEN e >= -1021 THEN x * 2::float8 ^ e::float8
    WHEN e < -1074 OR (e = -1074 AND x = 0.5) THEN 0::float8
    -- Subnormal: x * 2^-1000 is exact, so the product rounds once.
    ELSE (x * 2::float8 ^ (-1000)::float8) * 2::float8 ^ (e + 1000)::float8
END
$$;

-- The upper bound of bucket `idx` (the lower bound of bucket idx + 1) in `schema`, as
-- Prometheus's getBound computes it (model/histogram/generic.go): custom bounds for schema
-- -53 (-Inf below the first, +Inf from the last on), 2^(idx * 2^-schema) for -4..0, and for
-- 1..8 a fraction from its table of 2^(k/2^schema)/2 times a power of two, so bounds equal
-- Prometheus's to the bit. NULL for other schemas.
CREATE OR REPLACE FUNCTION promgres.histogram_bound(idx bigint, schema integer, custom_values double precision[])
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT CASE
    WHEN schema = -53 THEN
        CASE WHEN idx < 0 THEN '-Infinity'::float8
             WHEN idx >= coalesce(cardinality(custom_values), 0) THEN 'Infinity'::float8
             ELSE custom_values[array_lower(custom_values, 1) + idx::integer]
        END
    WHEN schema BETWEEN -4 AND 0 THEN promgres.histogram_ldexp(1, idx << -schema)
    WHEN schema BETWEEN 1 AND 8 THEN promgres.histogram_ldexp(
        ('{
        0.5,0.5,0.7071067811865475,0.5,0.5946035575013605,0.7071067811865475,0.8408964152537144,0.5,
        0.5452538663326288,0.5946035575013605,0.6484197773255048,0.7071067811865475,0.7711054127039704,
        0.8408964152537144,0.9170040432046711,0.5,0.5221368912137069,0.5452538663326288,
        0.5693943173783458,0.5946035575013605,0.620928906036742,0.6484197773255048,0.6771277734684463,
        0.7071067811865475,0.7384130729697496,0.7711054127039704,0.805245165974627,0.8408964152537144,
        0.8781260801866495,0.9170040432046711,0.9576032806985735,0.5,0.5109485743270583,
        0.5221368912137069,0.5335702003384117,0.5452538663326288,0.5571933712979462,0.5693943173783458,
        0.5818624293887887,0.5946035575013605,0.6076236799902344,0.620928906036742,0.6345254785958666,
        0.6484197773255048,0.6626183215798706,0.6771277734684463,0.6919549409819159,0.7071067811865475,
        0.7225904034885232,0.7384130729697496,0.7545822137967112,0.7711054127039704,0.7879904225539431,
        0.805245165974627,0.8228777390769823,0.8408964152537144,0.8593096490612387,0.8781260801866495,
        0.8973545375015533,0.9170040432046711,0.9370838170551498,0.9576032806985735,0.9785720620876999,
        0.5,0.5054446430258502,0.5109485743270583,0.5165124395106142,0.5221368912137069,
        0.5278225891802786,0.5335702003384117,0.5393803988785598,0.5452538663326288,0.5511912916539204,
        0.5571933712979462,0.5632608093041209,0.5693943173783458,0.5755946149764913,0.5818624293887887,
        0.5881984958251406,0.5946035575013605,0.6010783657263515,0.6076236799902344,0.6142402680534349,
        0.620928906036742,0.6276903785123455,0.6345254785958666,0.6414350080393891,0.6484197773255048,
        0.6554806057623822,0.6626183215798706,0.6698337620266515,0.6771277734684463,0.6845012114872953,
        0.6919549409819159,0.6994898362691555,0.7071067811865475,0.7148066691959849,0.7225904034885232,
        0.7304588970903234,0.7384130729697496,0.7464538641456323,0.7545822137967112,0.762799075372269,
        0.7711054127039704,0.7795022001189185,0.7879904225539431,0.7965710756711334,0.805245165974627,
        0.8140137109286738,0.8228777390769823,0.8318382901633681,0.8408964152537144,0.8500531768592616,
        0.8593096490612387,0.8686669176368529,0.8781260801866495,0.8876882462632604,0.8973545375015533,
        0.9071260877501991,0.9170040432046711,0.9269895625416926,0.9370838170551498,0.9472879907934827,
        0.9576032806985735,0.9680308967461471,0.9785720620876999,0.9892280131939752,0.5,
        0.5027149505564014,0.5054446430258502,0.5081891574554764,0.5109485743270583,0.5137229745593818,
        0.5165124395106142,0.5193170509806894,0.5221368912137069,0.5249720429003435,0.5278225891802786,
        0.5306886136446309,0.5335702003384117,0.5364674337629877,0.5393803988785598,0.5423091811066545,
        0.5452538663326288,0.5482145409081883,0.5511912916539204,0.5541842058618393,0.5571933712979462,
        0.5602188762048033,0.5632608093041209,0.5663192597993595,0.5693943173783458,0.572486072215902,
        0.5755946149764913,0.5787200368168754,0.5818624293887887,0.585021884841625,0.5881984958251406,
        0.5913923554921704,0.5946035575013605,0.5978321960199137,0.6010783657263515,0.6043421618132907,
        0.6076236799902344,0.6109230164863786,0.6142402680534349,0.6175755319684665,0.620928906036742,
        0.6243004885946023,0.6276903785123455,0.6310986751971253,0.6345254785958666,0.637970889198196,
        0.6414350080393891,0.6449179367033329,0.6484197773255048,0.6519406325959679,0.6554806057623822,
        0.659039800633032,0.6626183215798706,0.6662162735415805,0.6698337620266515,0.6734708931164728,
        0.6771277734684463,0.6808045103191123,0.6845012114872953,0.688217985377265,0.6919549409819159,
        0.6957121878859629,0.6994898362691555,0.7032879969095076,0.7071067811865475,0.7109463010845827,
        0.7148066691959849,0.718687998724491,0.7225904034885232,0.7265139979245261,0.7304588970903234,
        0.7344252166684908,0.7384130729697496,0.7424225829363761,0.7464538641456323,0.7505070348132126,
        0.7545822137967112,0.7586795205991071,0.762799075372269,0.7669409989204777,0.7711054127039704,
        0.7752924388424999,0.7795022001189185,0.7837348199827764,0.7879904225539431,0.7922691326262467,
        0.7965710756711334,0.8008963778413465,0.805245165974627,0.8096175675974316,0.8140137109286738,
        0.8184337248834821,0.8228777390769823,0.8273458838280969,0.8318382901633681,0.8363550898207981,
        0.8408964152537144,0.8454623996346523,0.8500531768592616,0.8546688815502312,0.8593096490612387,
        0.8639756154809185,0.8686669176368529,0.8733836930995842,0.8781260801866495,0.8828942179666361,
        0.8876882462632604,0.8925083056594671,0.8973545375015533,0.9022270839033115,0.9071260877501991,
        0.9120516927035263,0.9170040432046711,0.9219832844793128,0.9269895625416926,0.9320230241988943,
        0.9370838170551498,0.9421720895161669,0.9472879907934827,0.9524316709088368,0.9576032806985735,
        0.9628029718180622,0.9680308967461471,0.9732872087896164,0.9785720620876999,0.9838856116165875,
        0.9892280131939752,0.9945994234836328,0.5,0.5013556375251013,0.5027149505564014,
        0.5040779490592088,0.5054446430258502,0.5068150424757447,0.5081891574554764,0.509566998038869,
        0.5109485743270583,0.5123338964485679,0.5137229745593818,0.5151158188430205,0.5165124395106142,
        0.5179128468009786,0.5193170509806894,0.520725062344158,0.5221368912137069,0.5235525479396449,
        0.5249720429003435,0.526395386502313,0.5278225891802786,0.5292536613972564,0.5306886136446309,
        0.5321274564422321,0.5335702003384117,0.5350168559101208,0.5364674337629877,0.5379219445313954,
        0.5393803988785598,0.5408428074966075,0.5423091811066545,0.5437795304588847,0.5452538663326288,
        0.5467321995364429,0.5482145409081883,0.549700901315111,0.5511912916539204,0.5526857228508706,
        0.5541842058618393,0.5556867516724088,0.5571933712979462,0.5587040757836845,0.5602188762048033,
        0.5617377836665098,0.5632608093041209,0.564787964283144,0.5663192597993595,0.5678547070789026,
        0.5693943173783458,0.5709381019847808,0.572486072215902,0.5740382394200894,0.5755946149764913,
        0.5771552102951081,0.5787200368168754,0.5802891060137493,0.5818624293887887,0.5834400184762408,
        0.585021884841625,0.5866080400818185,0.5881984958251406,0.5897932637314379,0.5913923554921704,
        0.5929957828304968,0.5946035575013605,0.5962156912915756,0.5978321960199137,0.5994530835371903,
        0.6010783657263515,0.6027080545025619,0.6043421618132907,0.6059806996384005,0.6076236799902344,
        0.6092711149137041,0.6109230164863786,0.6125793968185725,0.6142402680534349,0.6159056423670379,
        0.6175755319684665,0.6192499490999082,0.620928906036742,0.622612415087629,0.6243004885946023,
        0.6259931389331581,0.6276903785123455,0.6293922197748583,0.6310986751971253,0.6328097572894031,
        0.6345254785958666,0.6362458516947014,0.637970889198196,0.6397006037528346,0.6414350080393891,
        0.6431741147730128,0.6449179367033329,0.6466664866145447,0.6484197773255048,0.6501778216898253,
        0.6519406325959679,0.6537082229673385,0.6554806057623822,0.6572577939746774,0.659039800633032,
        0.6608266388015788,0.6626183215798706,0.6644148621029772,0.6662162735415805,0.6680225691020727,
        0.6698337620266515,0.6716498655934177,0.6734708931164728,0.6752968579460171,0.6771277734684463,
        0.6789636531064505,0.6808045103191123,0.6826503586020058,0.6845012114872953,0.6863570825438342,
        0.688217985377265,0.690083933630119,0.6919549409819159,0.6938310211492645,0.6957121878859629,
        0.6975984549830999,0.6994898362691555,0.7013863456101023,0.7032879969095076,0.7051948041086352,
        0.7071067811865475,0.7090239421602076,0.7109463010845827,0.7128738720527471,0.7148066691959849,
        0.7167447066838943,0.718687998724491,0.7206365595643126,0.7225904034885232,0.7245495448210174,
        0.7265139979245261,0.7284837772007218,0.7304588970903234,0.7324393720732029,0.7344252166684908,
        0.7364164454346837,0.7384130729697496,0.7404151139112358,0.7424225829363761,0.7444354947621984,
        0.7464538641456323,0.7484777058836176,0.7505070348132126,0.7525418658117031,0.7545822137967112,
        0.7566280937263048,0.7586795205991071,0.7607365094544071,0.762799075372269,0.7648672334736434,
        0.7669409989204777,0.7690203869158282,0.7711054127039704,0.7731960915705107,0.7752924388424999,
        0.7773944698885442,0.7795022001189185,0.7816156449856788,0.7837348199827764,0.7858597406461707,
        0.7879904225539431,0.7901268813264122,0.7922691326262467,0.7944171921585818,0.7965710756711334,
        0.7987307989543135,0.8008963778413465,0.8030678282083853,0.805245165974627,0.8074284071024302,
        0.8096175675974316,0.8118126635086642,0.8140137109286738,0.8162207259936375,0.8184337248834821,
        0.820652723822003,0.8228777390769823,0.8251087869603088,0.8273458838280969,0.8295890460808079,
        0.8318382901633681,0.8340936325652911,0.8363550898207981,0.8386226785089391,0.8408964152537144,
        0.8431763167241966,0.8454623996346523,0.8477546807446661,0.8500531768592616,0.8523579048290255,
        0.8546688815502312,0.8569861239649629,0.8593096490612387,0.8616394738731368,0.8639756154809185,
        0.8663180910111553,0.8686669176368529,0.871022112577578,0.8733836930995842,0.8757516765159389,
        0.8781260801866495,0.8805069215187917,0.8828942179666361,0.8852879870317771,0.8876882462632604,
        0.890095013257712,0.8925083056594671,0.8949281411607002,0.8973545375015533,0.8997875124702672,
        0.9022270839033115,0.9046732696855155,0.9071260877501991,0.909585556079304,0.9120516927035263,
        0.9145245157024483,0.9170040432046711,0.9194902933879467,0.9219832844793128,0.9244830347552253,
        0.9269895625416926,0.92950288621441,0.9320230241988943,0.9345499949706191,0.9370838170551498,
        0.93962450902828,0.9421720895161669,0.9447265771954693,0.9472879907934827,0.9498563490882775,
        0.9524316709088368,0.9550139751351947,0.9576032806985735,0.9601996065815236,0.9628029718180622,
        0.9654133954938133,0.9680308967461471,0.9706554947643201,0.9732872087896164,0.9759260581154889,
        0.9785720620876999,0.9812252401044634,0.9838856116165875,0.9865531961276168,0.9892280131939752,
        0.9919100824251095,0.9945994234836328,0.9972960560854698
        }'::float8[])[(1 << schema) + (idx & ((1 << schema) - 1))::integer],
        (idx >> schema) + 1)
END
$$;

-- Every bucket of a histogram as promgres.histogram_samples returns it (1-based arrays), with
-- its bounds as Prometheus's API gives them: negative buckets (most negative first), the zero
-- bucket [-zero_threshold, zero_threshold] when its count is above zero, positive buckets;
-- bucket `idx` of a span is (bound(idx - 1), bound(idx)], mirrored for negative ones, and a
-- bound inside the zero bucket is moved to its edge. Unlike the API it keeps buckets whose
-- count is zero: every bucket the spans describe is a row.
CREATE OR REPLACE FUNCTION promgres.histogram_buckets(schema integer, zero_threshold double precision,
  zero_count double precision, negative_spans integer[], negative_buckets double precision[],
  positive_spans integer[], positive_buckets double precision[], custom_values double precision[])
RETURNS TABLE (lower double precision, upper double precision, count double precision)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    idx bigint := 0;
    j integer;
    k integer;
    n integer := 0;
    indexes bigint[] := '{}';
    -- Go's comparisons are false for NaN; PostgreSQL orders NaN above every number.
    clamp boolean := zero_threshold > 0 AND zero_threshold <> 'NaN';
BEGIN
    FOR j IN 1 .. coalesce(cardinality(negative_spans), 0) / 2 LOOP
        idx := idx + negative_spans[2 * j - 1];
        FOR k IN 1 .. negative_spans[2 * j] LOOP
            n := n + 1;
            indexes[n] := idx;
            idx := idx + 1;
        END LOOP;
    END LOOP;
    FOR k IN REVERSE n .. 1 LOOP
        lower := -promgres.histogram_bound(indexes[k], schema, custom_values);
        upper := -promgres.histogram_bound(indexes[k] - 1, schema, custom_values);
        IF clamp AND upper < 0 AND upper > -zero_threshold THEN
            upper := -zero_threshold;
        ELSIF clamp AND lower > 0 AND lower < zero_threshold THEN
            lower := zero_threshold;
        END IF;
        count := negative_buckets[k];
        RETURN NEXT;
    END LOOP;
    IF zero_count > 0 AND zero_count <> 'NaN' THEN
        lower := -zero_threshold;
        upper := zero_threshold;
        count := zero_count;
        RETURN NEXT;
    END IF;
    idx := 0;
    n := 0;
    FOR j IN 1 .. coalesce(cardinality(positive_spans), 0) / 2 LOOP
        idx := idx + positive_spans[2 * j - 1];
        FOR k IN 1 .. positive_spans[2 * j] LOOP
            n := n + 1;
            upper := promgres.histogram_bound(idx, schema, custom_values);
            lower := promgres.histogram_bound(idx - 1, schema, custom_values);
            IF clamp AND lower > 0 AND lower < zero_threshold THEN
                lower := zero_threshold;
            ELSIF clamp AND upper < 0 AND upper > -zero_threshold THEN
                upper := -zero_threshold;
            END IF;
            count := positive_buckets[n];
            RETURN NEXT;
            idx := idx + 1;
        END LOOP;
    END LOOP;
END
$$;
