-- promgres schema, version 6: a hand-over time never in the future of the database clock.
--
-- T is the old leader's newest committed sample + 1 ms. A leader whose clock ran fast (or
-- that sent one sample stamped in the future) would push T ahead of real time, and the new
-- leader's samples before T would be dropped as another replica's moments: minutes of data
-- lost. T is now capped by the database clock at the hand-over. The old leader's samples
-- stamped after T stay stored; they are the only moments two replicas can both hold, and
-- only when one stamped its samples in the future.
CREATE OR REPLACE FUNCTION promgres.ha_change_leader(c text, expected_leader text, new_leader text,
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
    -- least() skips NULLs: a leader that committed nothing in its term keeps T = its lease
    -- start, not "now".
    t := greatest(l.lease_start,
                  least(coalesce(newest + interval '1 millisecond', l.lease_start),
                        date_trunc('milliseconds', clock_timestamp())));
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
