-- promgres schema, version 2: leader election for Prometheus HA pairs (--high-availability).
--
-- Leases are in DATA time. The leader of a cluster owns every sample at or after lease_start
-- (inclusive) until a hand-over closes its lease at some T: samples before T belong to the old
-- leader, samples at or after T to the new one. Each moment of a cluster's data thus has
-- exactly one owner, recorded in ha_lease_history.

-- The current lease of each cluster.
CREATE TABLE promgres.ha_leases (
    cluster         text PRIMARY KEY,
    leader          text        NOT NULL,
    term            bigint      NOT NULL,
    lease_start     timestamptz NOT NULL,
    leader_since    timestamptz NOT NULL DEFAULT now(),
    previous_leader text
);

-- Every lease, past and current: [lease_start, lease_end), lease_end NULL while open.
CREATE TABLE promgres.ha_lease_history (
    cluster     text        NOT NULL,
    term        bigint      NOT NULL,
    leader      text        NOT NULL,
    lease_start timestamptz NOT NULL,
    lease_end   timestamptz,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    reason      text        NOT NULL,
    PRIMARY KEY (cluster, term)
);
CREATE INDEX ha_lease_history_leader_idx ON promgres.ha_lease_history (cluster, leader);

-- What each writer session committed for a cluster's current leader: the newest sample time
-- and when. Writers each update their own row (keyed by backend pid), so concurrent writers of
-- one cluster never wait for each other; a hand-over reads the maximum over all rows.
CREATE TABLE promgres.ha_progress (
    cluster       text        NOT NULL,
    writer_pid    integer     NOT NULL,
    term          bigint      NOT NULL,
    max_time      timestamptz NOT NULL,
    last_write_at timestamptz NOT NULL,
    PRIMARY KEY (cluster, writer_pid)
);

-- The lease of `cluster`, created with `replica` as leader when the cluster is new (the first
-- writer wins; its lease covers all earlier data time too).
CREATE FUNCTION promgres.ha_get_or_create(c text, replica text) RETURNS SETOF promgres.ha_leases
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO promgres.ha_leases (cluster, leader, term, lease_start)
    VALUES (c, replica, 1, 'epoch')
    ON CONFLICT (cluster) DO NOTHING;
    IF FOUND THEN
        INSERT INTO promgres.ha_lease_history (cluster, term, leader, lease_start, reason)
        VALUES (c, 1, replica, 'epoch', 'first writer');
    END IF;
    RETURN QUERY SELECT * FROM promgres.ha_leases WHERE cluster = c;
END
$$;

-- Wall-clock time since the current leader of `c` last committed samples (or since it became
-- leader, if it has not yet), measured on the database clock so all instances agree.
CREATE FUNCTION promgres.ha_leader_silence(c text) RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT now() - greatest(l.leader_since, max(p.last_write_at))
      FROM promgres.ha_leases l
      LEFT JOIN promgres.ha_progress p ON p.cluster = l.cluster AND p.term = l.term
     WHERE l.cluster = c
     GROUP BY l.leader_since
$$;

-- Hands the lease of `c` from `expected_leader` to `new_leader`, compare-and-set style: nothing
-- happens unless `expected_leader` still leads and (when `min_silence` is given) has committed
-- nothing for at least `min_silence`. The FOR UPDATE lock waits for every writer transaction
-- holding the lease FOR SHARE (the fence), so the hand-over time T is computed from everything
-- the old leader committed: T = its newest committed sample + 1 ms.
CREATE FUNCTION promgres.ha_change_leader(c text, expected_leader text, new_leader text,
                                          min_silence interval, why text)
RETURNS SETOF promgres.ha_leases
LANGUAGE plpgsql AS $$
DECLARE
    l promgres.ha_leases;
    newest timestamptz;
    last_write timestamptz;
    t timestamptz;
BEGIN
    SELECT * INTO l FROM promgres.ha_leases WHERE cluster = c FOR UPDATE;
    IF NOT FOUND OR l.leader <> expected_leader OR l.leader = new_leader THEN
        RETURN QUERY SELECT * FROM promgres.ha_leases WHERE cluster = c;
        RETURN;
    END IF;
    SELECT max(max_time), max(last_write_at) INTO newest, last_write
      FROM promgres.ha_progress WHERE cluster = c AND term = l.term;
    -- clock_timestamp(), not now(): this statement may have waited for writers' commits,
    -- whose progress rows record the time they wrote.
    IF min_silence IS NOT NULL
       AND greatest(l.leader_since, last_write) > clock_timestamp() - min_silence THEN
        RETURN QUERY SELECT * FROM promgres.ha_leases WHERE cluster = c;
        RETURN;
    END IF;
    t := greatest(l.lease_start, newest + interval '1 millisecond');
    UPDATE promgres.ha_lease_history SET lease_end = t, ended_at = now()
     WHERE cluster = c AND term = l.term;
    INSERT INTO promgres.ha_lease_history (cluster, term, leader, lease_start, reason)
    VALUES (c, l.term + 1, new_leader, t, why);
    UPDATE promgres.ha_leases
       SET leader = new_leader, term = l.term + 1, lease_start = t,
           leader_since = now(), previous_leader = l.leader
     WHERE cluster = c;
    DELETE FROM promgres.ha_progress WHERE cluster = c AND term <= l.term;
    RETURN QUERY SELECT * FROM promgres.ha_leases WHERE cluster = c;
END
$$;

-- The documented SQL surface (docs/sql.md).
CREATE VIEW public.prom_ha_leases AS
    SELECT cluster, leader, term, lease_start, leader_since, previous_leader
      FROM promgres.ha_leases;
CREATE VIEW public.prom_ha_lease_history AS
    SELECT cluster, term, leader, lease_start, lease_end, started_at, ended_at, reason
      FROM promgres.ha_lease_history;
